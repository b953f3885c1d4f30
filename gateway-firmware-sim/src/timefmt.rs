//! Durations as people write them in scenario files: `90s`, `15m`, `6h`, `1h30m`, `1d`, `250ms`, or a bare number of
//! seconds. Scenario times are offsets from the scenario start, so one parser serves both.

use std::time::Duration;

/// Parse `1h30m`-style text. Returns a reason (not an error type) so the caller can attach file and key.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return secs_to_duration(secs).ok_or_else(|| format!("`{s}` is not a non-negative number of seconds"));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("`{s}` is not a duration (expected e.g. 90s, 15m, 6h, 1h30m, 1d)"));
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| format!("`{s}`: bad number `{}`", &rest[..num_len]))?;
        rest = rest[num_len..].trim_start();
        let unit_len = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "" => return Err(format!("`{s}`: number without a unit (use s, m, h or d)")),
            other => return Err(format!("`{s}`: unknown unit `{other}` (use ms, s, m, h or d)")),
        };
        total += value * factor;
        rest = rest[unit_len..].trim_start();
    }
    secs_to_duration(total).ok_or_else(|| format!("`{s}` is out of range"))
}

fn secs_to_duration(secs: f64) -> Option<Duration> {
    (0.0..1e12).contains(&secs).then(|| Duration::from_secs_f64(secs))
}

/// Short human form for summaries and errors: `1h30m`, `45s`, `250ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        if h == 0 && m == 0 && d.subsec_millis() != 0 {
            out.push_str(&format!("{:.1}s", d.as_secs_f64()));
        } else {
            out.push_str(&format!("{s}s"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
    }

    #[test]
    fn rejects_nonsense_with_reason() {
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit `x`"));
        assert!(parse_duration("h").unwrap_err().contains("not a duration"));
        assert!(parse_duration("-3").unwrap_err().contains("non-negative"));
        assert!(parse_duration("12").is_ok());
        assert!(parse_duration("3 4h").unwrap_err().contains("number without a unit"));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("2 hours").unwrap_err().contains("unknown unit `hours`"));
    }

    #[test]
    fn formats_short() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
    }
}
