//! InfluxDB line protocol for readings.
//!
//! One line per reading: `<kind>,agency=<agency>,h3=<cell>,kind=<kind>,sensor_id=<id> <metric>=<value> <ts_ms>`.
//! The measurement is the sensor kind (`rain_gauge`), so a dashboard asks for "all rain gauges in this cell" with one
//! measurement and tag filters; tags are in key order, which is what InfluxDB's own writers do. A line per reading
//! (rather than merging a reading set into one line) keeps "points" and "lines" the same number, which the spool's
//! accounting relies on.

use h3o::{LatLng, Resolution};
use ingest::{Reading, Sensor};

/// The measurement for readings of a sensor the sink was never told about (added to the registry after start and
/// not passed to `set_sensor`): kept rather than dropped, and findable.
pub const UNREGISTERED: &str = "unregistered";

/// The per-sensor part of a line, built once per sensor so that formatting a reading is a few copies.
#[derive(Debug, Clone)]
pub struct SensorTags {
    /// `measurement,agency=…` (everything before the h3 tag).
    head: String,
    /// `,kind=…,sensor_id=…` (everything after it).
    tail: String,
    /// `head,h3=<cell of the registered position>tail ` — the whole prefix for a fixed sensor.
    prefix: String,
}

impl SensorTags {
    pub fn new(sensor: &Sensor, resolution: Resolution) -> Self {
        let kind = kind_name(sensor);
        let mut head = String::new();
        escape_measurement(&mut head, &kind);
        push_tag(&mut head, "agency", &sensor.agency);
        let mut tail = String::new();
        push_tag(&mut tail, "kind", &kind);
        push_tag(&mut tail, "sensor_id", &sensor.id);
        let cell = cell_of(sensor.lat, sensor.lon, resolution);
        SensorTags { prefix: prefix(&head, cell.as_deref(), &tail), head, tail }
    }

    pub fn unregistered(sensor_id: &str) -> Self {
        let head = UNREGISTERED.to_owned();
        let mut tail = String::new();
        push_tag(&mut tail, "sensor_id", sensor_id);
        SensorTags { prefix: prefix(&head, None, &tail), head, tail }
    }
}

fn prefix(head: &str, cell: Option<&str>, tail: &str) -> String {
    let mut p = String::with_capacity(head.len() + tail.len() + 24);
    p.push_str(head);
    if let Some(cell) = cell {
        p.push_str(",h3=");
        p.push_str(cell);
    }
    p.push_str(tail);
    p.push(' ');
    p
}

/// The snake_case name the registry file uses (`rain_gauge`), taken from serde so it cannot drift from it.
fn kind_name(sensor: &Sensor) -> String {
    match serde_json::to_value(sensor.kind) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{:?}", sensor.kind).to_lowercase(),
    }
}

fn cell_of(lat: f64, lon: f64, resolution: Resolution) -> Option<String> {
    LatLng::new(lat, lon).ok().map(|ll| ll.to_cell(resolution).to_string())
}

/// Appends one reading's line to `buf`. Returns false (and appends nothing) for a value line protocol cannot carry
/// (NaN, ±inf), which validated readings never have.
pub fn write_line(buf: &mut Vec<u8>, tags: &SensorTags, reading: &Reading, resolution: Resolution) -> bool {
    if !reading.value.is_finite() {
        return false;
    }
    match reading.position {
        // A mobile unit (hazmat truck) is tagged with the cell it reported from, not where it is registered.
        Some(pos) => {
            let cell = cell_of(pos.lat, pos.lon, resolution);
            buf.extend_from_slice(prefix(&tags.head, cell.as_deref(), &tags.tail).as_bytes());
        }
        None => buf.extend_from_slice(tags.prefix.as_bytes()),
    }
    buf.extend_from_slice(reading.metric.name().as_bytes());
    buf.push(b'=');
    // ryu prints the shortest text that reads back to the same f64 (so values survive the trip exactly), always with a
    // point or an exponent, so line protocol reads it as a float (integers would need an `i` suffix). Several times
    // faster than `Display`, which matters at 400k lines/s on a machine the server shares.
    buf.extend_from_slice(ryu::Buffer::new().format_finite(reading.value).as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(itoa::Buffer::new().format(reading.ts_ms).as_bytes());
    buf.push(b'\n');
    true
}

fn push_tag(out: &mut String, key: &str, value: &str) {
    // Line protocol has no empty tag values: such a tag is left out rather than making the whole line invalid.
    if value.is_empty() {
        return;
    }
    out.push(',');
    out.push_str(key);
    out.push('=');
    escape_tag_value(out, value);
}

fn escape_tag_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            ',' | '=' | ' ' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            // A newline would end the line; tags are labels, so it becomes a space (escaped).
            '\n' | '\r' | '\t' => out.push_str("\\ "),
            c => out.push(c),
        }
    }
}

fn escape_measurement(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            ',' | ' ' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' | '\t' => out.push_str("\\ "),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest::reading::Position;
    use ingest::{Metric, SensorKind};

    fn sensor(agency: &str) -> Sensor {
        Sensor {
            id: "RG0001".into(),
            kind: SensorKind::RainGauge,
            lat: 23.7,
            lon: 120.9,
            interval_s: 600,
            agency: agency.into(),
            metrics: vec![Metric::RainMm],
            zone: None,
            mobile: false,
            retired: false,
        }
    }

    fn reading(value: f64, position: Option<Position>) -> Reading {
        Reading { sensor_id: "RG0001".into(), ts_ms: 1_764_122_400_000, metric: Metric::RainMm, value, position }
    }

    #[test]
    fn fixed_sensor_line() {
        let tags = SensorTags::new(&sensor("SWCB"), Resolution::Nine);
        let mut buf = Vec::new();
        assert!(write_line(&mut buf, &tags, &reading(12.5, None), Resolution::Nine));
        let line = String::from_utf8(buf).unwrap();
        let cell = LatLng::new(23.7, 120.9).unwrap().to_cell(Resolution::Nine).to_string();
        assert_eq!(
            line,
            format!("rain_gauge,agency=SWCB,h3={cell},kind=rain_gauge,sensor_id=RG0001 rain_mm=12.5 1764122400000\n")
        );
    }

    #[test]
    fn mobile_position_moves_the_cell_and_values_round_trip() {
        let tags = SensorTags::new(&sensor("SWCB"), Resolution::Nine);
        let mut buf = Vec::new();
        let v = 0.1 + 0.2;
        write_line(&mut buf, &tags, &reading(v, Some(Position { lat: 25.03, lon: 121.56 })), Resolution::Nine);
        let line = String::from_utf8(buf).unwrap();
        let cell = LatLng::new(25.03, 121.56).unwrap().to_cell(Resolution::Nine).to_string();
        assert!(line.contains(&format!(",h3={cell},")), "{line}");
        let field = line.split(' ').nth(1).unwrap();
        assert_eq!(field.strip_prefix("rain_mm=").unwrap().parse::<f64>().unwrap(), v);
    }

    #[test]
    fn escapes_and_omits() {
        let tags = SensorTags::new(&sensor("Water Resources, Agency=WRA"), Resolution::Nine);
        assert!(
            tags.prefix.starts_with("rain_gauge,agency=Water\\ Resources\\,\\ Agency\\=WRA,h3="),
            "{}",
            tags.prefix
        );
        let tags = SensorTags::new(&sensor(""), Resolution::Nine);
        assert!(tags.prefix.starts_with("rain_gauge,h3="), "{}", tags.prefix);
        let mut buf = Vec::new();
        assert!(!write_line(&mut buf, &tags, &reading(f64::NAN, None), Resolution::Nine));
        assert!(buf.is_empty());
        assert_eq!(SensorTags::unregistered("X1").prefix, "unregistered,sensor_id=X1 ");
    }
}
