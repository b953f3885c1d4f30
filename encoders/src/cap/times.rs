//! CAP 1.2 date-times: `YYYY-MM-DDThh:mm:ss±hh:mm`, always with an offset, never `Z`, no fractions.
//!
//! The XSD pattern is `\d\d\d\d-\d\d-\d\dT\d\d:\d\d:\d\d[-,+]\d\d:\d\d`; the spec adds that UTC is written `-00:00`.
//! Consumers (Google Public Alerts, Taiwan's civil alert platform) reject `Z` and fractional seconds, so the writer
//! never produces them and the reader refuses them with an error that says which rule was broken.

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// Taiwan's offset (UTC+8, no daylight saving): the default for every time this module writes.
pub const TAIWAN_OFFSET: UtcOffset = time::macros::offset!(+8);

/// Why a CAP time could not be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// `Z` is valid ISO 8601 but not CAP: UTC must be written `-00:00`.
    #[error("`{0}` uses `Z`; CAP writes UTC as `-00:00`")]
    Zulu(String),
    /// Without an offset the instant is ambiguous, and CAP requires one.
    #[error("`{0}` has no UTC offset (CAP requires e.g. `+08:00`)")]
    NoOffset(String),
    /// The XSD pattern has no room for fractions of a second.
    #[error("`{0}` has fractional seconds, which CAP does not allow")]
    Fractional(String),
    /// Anything else that is not `YYYY-MM-DDThh:mm:ss±hh:mm` or not a real calendar time.
    #[error("`{0}` is not a CAP date-time (YYYY-MM-DDThh:mm:ss±hh:mm)")]
    Malformed(String),
    /// Four-digit years and offsets within ±14:00 in whole minutes are all the format can carry.
    #[error("time {0} cannot be written in CAP form (year 0000-9999, offset within ±14:00 in whole minutes)")]
    OutOfRange(String),
}

/// Writes `t` in CAP form. Sub-second precision is dropped (CAP has none); a zero offset is written `-00:00`.
pub fn format_cap_time(t: OffsetDateTime) -> Result<String, TimeError> {
    let offset = t.offset();
    let (oh, om, os) = offset.as_hms();
    if !(0..=9999).contains(&t.year()) || os != 0 || offset.whole_minutes().abs() > 14 * 60 {
        return Err(TimeError::OutOfRange(t.to_string()));
    }
    // CAP 1.2 §3.3.2: "the time zone ... if UTC, -00:00". Only a strictly positive offset gets `+`.
    let sign = if offset.is_positive() { '+' } else { '-' };
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        sign,
        oh.unsigned_abs(),
        om.unsigned_abs(),
    ))
}

/// Reads a CAP time. Leading and trailing whitespace is ignored (xs:dateTime collapses it); everything else is strict.
pub fn parse_cap_time(raw: &str) -> Result<OffsetDateTime, TimeError> {
    let s = raw.trim();
    let err = |f: fn(String) -> TimeError| f(s.to_string());
    if s.ends_with('Z') || s.ends_with('z') {
        return Err(err(TimeError::Zulu));
    }
    let b = s.as_bytes();
    // Name the common mistakes precisely before falling back to "malformed".
    if b.len() > 19 && b[19] == b'.' {
        return Err(err(TimeError::Fractional));
    }
    if b.len() == 19 && b.get(10) == Some(&b'T') {
        return Err(err(TimeError::NoOffset));
    }
    if b.len() != 25 {
        return Err(err(TimeError::Malformed));
    }
    let digits = |from: usize, len: usize| -> Option<u32> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(part.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')))
    };
    let punct_ok = b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && (b[19] == b'+' || b[19] == b'-')
        && b[22] == b':';
    let fields = (
        digits(0, 4),
        digits(5, 2),
        digits(8, 2),
        digits(11, 2),
        digits(14, 2),
        digits(17, 2),
        digits(20, 2),
        digits(23, 2),
    );
    let (Some(year), Some(month), Some(day), Some(hour), Some(min), Some(sec), Some(oh), Some(om)) = fields else {
        return Err(err(TimeError::Malformed));
    };
    if !punct_ok || oh * 60 + om > 14 * 60 || om > 59 {
        return Err(err(TimeError::Malformed));
    }
    let month =
        u8::try_from(month).ok().and_then(|m| Month::try_from(m).ok()).ok_or_else(|| err(TimeError::Malformed))?;
    // The digit counts above bound every field, so these narrowing casts cannot truncate.
    let date = Date::from_calendar_date(year as i32, month, day as u8).map_err(|_| err(TimeError::Malformed))?;
    let clock = Time::from_hms(hour as u8, min as u8, sec as u8).map_err(|_| err(TimeError::Malformed))?;
    let sign: i8 = if b[19] == b'-' { -1 } else { 1 };
    let offset = UtcOffset::from_hms(sign * oh as i8, sign * om as i8, 0).map_err(|_| err(TimeError::Malformed))?;
    Ok(PrimitiveDateTime::new(date, clock).assume_offset(offset))
}

/// Drops sub-second precision, so a value survives a write/read round trip unchanged.
pub fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn writes_taiwan_offset() {
        let t = datetime!(2026-11-26 18:00:05 +8);
        assert_eq!(format_cap_time(t).unwrap(), "2026-11-26T18:00:05+08:00");
    }

    #[test]
    fn utc_is_minus_zero_never_z() {
        let t = datetime!(2026-11-26 10:00:00 UTC);
        let s = format_cap_time(t).unwrap();
        assert_eq!(s, "2026-11-26T10:00:00-00:00");
        assert!(!s.contains('Z'));
    }

    #[test]
    fn negative_offsets_and_fractions() {
        let t = datetime!(2026-01-02 03:04:05.999 -05:30);
        assert_eq!(format_cap_time(t).unwrap(), "2026-01-02T03:04:05-05:30");
    }

    #[test]
    fn rejects_unwritable() {
        assert!(matches!(format_cap_time(datetime!(2026-01-01 00:00 +00:00:30)), Err(TimeError::OutOfRange(_))));
        assert!(matches!(format_cap_time(datetime!(2026-01-01 00:00 +15)), Err(TimeError::OutOfRange(_))));
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!(parse_cap_time("2026-11-26T18:00:00+08:00").unwrap(), datetime!(2026-11-26 18:00 +8));
        assert_eq!(parse_cap_time(" 2026-11-26T10:00:00-00:00\n").unwrap(), datetime!(2026-11-26 10:00 UTC));
        assert_eq!(parse_cap_time("2026-11-26T10:00:00+00:00").unwrap(), datetime!(2026-11-26 10:00 UTC));
        assert!(matches!(parse_cap_time("2026-11-26T10:00:00Z"), Err(TimeError::Zulu(_))));
        assert!(matches!(parse_cap_time("2026-11-26T10:00:00"), Err(TimeError::NoOffset(_))));
        assert!(matches!(parse_cap_time("2026-11-26T10:00:00.5+08:00"), Err(TimeError::Fractional(_))));
        for bad in [
            "2026-02-30T10:00:00+08:00",
            "2026-11-26T24:00:00+08:00",
            "2026-11-26 10:00:00+08:00",
            "2026-11-26T10:00:00+15:00",
            "2026-11-26T10:00:00,08:00",
            "26-11-26T10:00:00+08:00",
            "",
            "２０２６-11-26T10:00:00+08:00",
        ] {
            assert!(parse_cap_time(bad).is_err(), "{bad} accepted");
        }
    }
}
