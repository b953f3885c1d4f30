//! Decoders for reading payloads: our native JSON and SenML JSON (RFC 8428), single or batched.
//!
//! Decoding is two-level on purpose. The payload as a whole must be UTF-8, well-formed JSON, within the size and
//! batch limits; if not, nothing in it can be trusted and it is refused whole. Inside a well-formed batch each element
//! is decoded on its own, so a gateway's batch with one broken reading set still delivers the others.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::RejectReason;

/// A payload-level or element-level refusal with the decoder's own words, kept for the dead-letter store.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}

/// One reading set as the device sent it, not yet checked against vocabulary or registry.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedSet {
    pub ts: Timestamp,
    pub values: Vec<DecodedValue>,
    /// `Some` when the set carried any position field; validation checks it is whole and in range.
    pub position: Option<(Option<f64>, Option<f64>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Timestamp {
    Millis(i64),
    Missing,
    Unreadable(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct DecodedValue {
    pub name: String,
    pub value: WireValue,
    pub unit: Option<String>,
}

/// A value as JSON carried it. Anything but a number or a boolean is kept as `Other` so that validation can name the
/// metric in its refusal.
#[derive(Debug, Clone, PartialEq)]
pub enum WireValue {
    Number(f64),
    Bool(bool),
    Other(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_payload_bytes: usize,
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_payload_bytes: 64 * 1024, max_batch: 1000 }
    }
}

/// Decodes a readings payload. `now_ms` resolves SenML relative times (RFC 8428 §4.5.3).
pub fn decode_readings(
    payload: &[u8],
    limits: Limits,
    now_ms: i64,
) -> Result<Vec<Result<DecodedSet, Rejection>>, Rejection> {
    let text = check_envelope(payload, limits)?;
    match first_byte(text) {
        Some(b'[') => {
            let elements: Vec<&RawValue> = serde_json::from_str(text).map_err(json_rejection)?;
            if elements.is_empty() {
                return Err(Rejection::new(RejectReason::Empty, "empty array"));
            }
            if elements.len() > limits.max_batch {
                return Err(Rejection::new(
                    RejectReason::BatchTooLarge,
                    format!("{} elements, limit {}", elements.len(), limits.max_batch),
                ));
            }
            if looks_native(elements[0]) {
                Ok(elements.into_iter().map(|raw| decode_native(raw.get())).collect())
            } else {
                // A pack of base records or of a position alone carries no reading: refuse it as empty rather than
                // letting the publish vanish without a refusal (fuzzing finding F1).
                let records = decode_senml_pack(&elements, now_ms);
                if records.is_empty() {
                    return Err(Rejection::new(RejectReason::Empty, "SenML pack holds no value records"));
                }
                Ok(records)
            }
        }
        Some(b'{') => {
            // Validate it is one JSON value before decoding, so that trailing garbage is "malformed", not "shape".
            let raw: &RawValue = serde_json::from_str(text).map_err(json_rejection)?;
            Ok(vec![decode_native(raw.get())])
        }
        Some(_) => {
            // Well-formed JSON that is neither object nor array (a bare number, string…) is the wrong shape.
            serde_json::from_str::<&RawValue>(text).map_err(json_rejection)?;
            Err(Rejection::new(RejectReason::WrongShape, "expected an object or an array"))
        }
        None => Err(Rejection::new(RejectReason::Empty, "empty payload")),
    }
}

pub(crate) fn check_envelope(payload: &[u8], limits: Limits) -> Result<&str, Rejection> {
    if payload.len() > limits.max_payload_bytes {
        return Err(Rejection::new(
            RejectReason::Oversized,
            format!("{} bytes, limit {}", payload.len(), limits.max_payload_bytes),
        ));
    }
    std::str::from_utf8(payload).map_err(|e| Rejection::new(RejectReason::InvalidUtf8, e.to_string()))
}

fn first_byte(text: &str) -> Option<u8> {
    text.bytes().find(|b| !b.is_ascii_whitespace())
}

fn json_rejection(e: serde_json::Error) -> Rejection {
    let reason = match e.classify() {
        serde_json::error::Category::Data => RejectReason::WrongShape,
        _ => RejectReason::MalformedJson,
    };
    Rejection::new(reason, e.to_string())
}

fn looks_native(first: &RawValue) -> bool {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        values: Option<&'a RawValue>,
    }
    serde_json::from_str::<Probe>(first.get()).map(|p| p.values.is_some()).unwrap_or(true)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TsWire {
    Int(i64),
    Float(f64),
    Text(String),
}

#[derive(Deserialize)]
struct NativeSet {
    ts: Option<TsWire>,
    values: serde_json::Map<String, Value>,
    lat: Option<f64>,
    lon: Option<f64>,
}

fn decode_native(text: &str) -> Result<DecodedSet, Rejection> {
    let set: NativeSet = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Rejection::new(RejectReason::WrongShape, e.to_string()),
        _ => Rejection::new(RejectReason::MalformedJson, e.to_string()),
    })?;
    if set.values.is_empty() {
        return Err(Rejection::new(RejectReason::Empty, "`values` is empty"));
    }
    let ts = match set.ts {
        None => Timestamp::Missing,
        Some(TsWire::Int(ms)) => Timestamp::Millis(ms),
        Some(TsWire::Float(f)) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => Timestamp::Millis(f as i64),
        Some(TsWire::Float(f)) => Timestamp::Unreadable(format!("ts {f} is not whole milliseconds")),
        Some(TsWire::Text(s)) => parse_rfc3339_ms(&s),
    };
    let values =
        set.values.into_iter().map(|(name, v)| DecodedValue { name, value: wire_value(&v), unit: None }).collect();
    let position = (set.lat.is_some() || set.lon.is_some()).then_some((set.lat, set.lon));
    Ok(DecodedSet { ts, values, position })
}

fn wire_value(v: &Value) -> WireValue {
    match v {
        Value::Number(n) => n.as_f64().map(WireValue::Number).unwrap_or(WireValue::Other("number")),
        Value::Bool(b) => WireValue::Bool(*b),
        Value::Null => WireValue::Other("null"),
        Value::String(_) => WireValue::Other("string"),
        Value::Array(_) => WireValue::Other("array"),
        Value::Object(_) => WireValue::Other("object"),
    }
}

fn parse_rfc3339_ms(s: &str) -> Timestamp {
    match time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        Ok(t) => Timestamp::Millis((t.unix_timestamp_nanos() / 1_000_000) as i64),
        Err(e) => Timestamp::Unreadable(format!("ts `{s}`: {e}")),
    }
}

/// A SenML record (RFC 8428 §4): the fields we use; others (vs, vd, s, ut…) are tolerated.
#[derive(Deserialize)]
struct SenmlRecord {
    bn: Option<String>,
    bt: Option<f64>,
    bu: Option<String>,
    /// Base value (RFC 8428 §4.1), added to every later `v`; the one place a JSON payload can produce infinity.
    bv: Option<f64>,
    bver: Option<i64>,
    n: Option<String>,
    u: Option<String>,
    v: Option<f64>,
    vb: Option<bool>,
    vs: Option<String>,
    vd: Option<String>,
    t: Option<f64>,
}

/// Times below 2^28 s are relative to "now" (RFC 8428 §4.5.3).
const SENML_RELATIVE_LIMIT_S: f64 = 268_435_456.0;

fn decode_senml_pack(elements: &[&RawValue], now_ms: i64) -> Vec<Result<DecodedSet, Rejection>> {
    let mut base_name = String::new();
    let mut base_time = 0.0_f64;
    let mut base_unit: Option<String> = None;
    let mut base_value = 0.0_f64;
    let mut records = Vec::with_capacity(elements.len());
    let (mut lat, mut lon) = (None, None);
    for raw in elements {
        let record: SenmlRecord = match serde_json::from_str(raw.get()) {
            Ok(r) => r,
            Err(e) => {
                records.push(Err(Rejection::new(RejectReason::WrongShape, format!("SenML record: {e}"))));
                continue;
            }
        };
        // Base fields apply to this record and every later one in the pack.
        if let Some(bn) = &record.bn {
            base_name.clone_from(bn);
        }
        if let Some(bt) = record.bt {
            base_time = bt;
        }
        if record.bu.is_some() {
            base_unit.clone_from(&record.bu);
        }
        if let Some(bv) = record.bv {
            base_value = bv;
        }
        if record.bver.is_some_and(|v| v > 10) {
            records.push(Err(Rejection::new(RejectReason::WrongShape, "unsupported SenML version")));
            continue;
        }
        let name = format!("{base_name}{}", record.n.as_deref().unwrap_or(""));
        // The metric is the last segment of the resolved name: `urn:dev:ow:RG0001:` + `rain_mm`.
        let metric = name.rsplit([':', '/']).next().unwrap_or("").to_string();
        let value = match (record.v, record.vb, &record.vs, &record.vd) {
            // The sum may overflow to infinity; validation refuses it as `not_finite`.
            (Some(v), None, None, None) => WireValue::Number(v + base_value),
            (None, Some(b), None, None) => WireValue::Bool(b),
            (None, None, Some(_), None) => WireValue::Other("string"),
            (None, None, None, Some(_)) => WireValue::Other("data"),
            (None, None, None, None)
                if record.bn.is_some() || record.bt.is_some() || record.bu.is_some() || record.bv.is_some() =>
            {
                continue; // A base-only record carries no reading.
            }
            (None, None, None, None) => {
                records.push(Err(Rejection::new(RejectReason::WrongShape, format!("record `{name}` has no value"))));
                continue;
            }
            _ => {
                records.push(Err(Rejection::new(
                    RejectReason::WrongShape,
                    format!("record `{name}` has more than one value field"),
                )));
                continue;
            }
        };
        let t = base_time + record.t.unwrap_or(0.0);
        let ts = if !t.is_finite() {
            Timestamp::Unreadable("time is not finite".into())
        } else if t.abs() < SENML_RELATIVE_LIMIT_S {
            Timestamp::Millis(now_ms + (t * 1000.0).round() as i64)
        } else {
            Timestamp::Millis((t * 1000.0).round() as i64)
        };
        if let WireValue::Number(v) = value {
            match metric.as_str() {
                "lat" => {
                    lat = Some(v);
                    continue;
                }
                "lon" => {
                    lon = Some(v);
                    continue;
                }
                _ => {}
            }
        }
        let unit = record.u.or_else(|| base_unit.clone());
        records.push(Ok(DecodedSet { ts, values: vec![DecodedValue { name: metric, value, unit }], position: None }));
    }
    if lat.is_some() || lon.is_some() {
        for set in records.iter_mut().flatten() {
            set.position = Some((lat, lon));
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_122_400_000;

    fn decode(payload: &str) -> Result<Vec<Result<DecodedSet, Rejection>>, Rejection> {
        decode_readings(payload.as_bytes(), Limits::default(), NOW)
    }

    #[test]
    fn native_single_set() {
        let sets = decode(r#"{"ts": 1764122400000, "values": {"rain_mm": 12.5}, "lat": 23.7, "lon": 120.9}"#).unwrap();
        let set = sets[0].as_ref().unwrap();
        assert_eq!(set.ts, Timestamp::Millis(1_764_122_400_000));
        assert_eq!(set.values[0].name, "rain_mm");
        assert_eq!(set.values[0].value, WireValue::Number(12.5));
        assert_eq!(set.position, Some((Some(23.7), Some(120.9))));
    }

    #[test]
    fn native_batch_keeps_good_elements() {
        let sets =
            decode(r#"[{"ts":1,"values":{"rain_mm":1}}, {"ts":2,"values":"oops"}, {"ts":3,"values":{"rain_mm":3}}]"#)
                .unwrap();
        assert!(sets[0].is_ok());
        assert_eq!(sets[1].as_ref().unwrap_err().reason, RejectReason::WrongShape);
        assert!(sets[2].is_ok());
    }

    #[test]
    fn rfc3339_timestamp_with_offset() {
        let sets = decode(r#"{"ts":"2025-11-26T10:00:00+08:00","values":{"rain_mm":1}}"#).unwrap();
        assert_eq!(sets[0].as_ref().unwrap().ts, Timestamp::Millis(1_764_122_400_000));
    }

    #[test]
    fn senml_pack_with_base_fields() {
        let sets = decode(
            r#"[{"bn":"urn:dev:ow:RG0001:","bt":1764122400,"n":"rain_mm","u":"mm","v":12.5},{"n":"battery_v","u":"V","v":3.7,"t":60}]"#,
        )
        .unwrap();
        let a = sets[0].as_ref().unwrap();
        let b = sets[1].as_ref().unwrap();
        assert_eq!(a.values[0].name, "rain_mm");
        assert_eq!(a.ts, Timestamp::Millis(1_764_122_400_000));
        assert_eq!(b.values[0].name, "battery_v");
        assert_eq!(b.ts, Timestamp::Millis(1_764_122_460_000));
    }

    #[test]
    fn senml_base_value_is_added_and_can_overflow() {
        let sets = decode(r#"[{"bv":10,"n":"rain_mm","v":2.5},{"bv":1.7e308,"n":"rain_mm","v":1.7e308}]"#).unwrap();
        assert_eq!(sets[0].as_ref().unwrap().values[0].value, WireValue::Number(12.5));
        assert_eq!(sets[1].as_ref().unwrap().values[0].value, WireValue::Number(f64::INFINITY));
    }

    #[test]
    fn senml_relative_time_is_relative_to_now() {
        let sets = decode(r#"[{"n":"rain_mm","v":1,"t":-60}]"#).unwrap();
        assert_eq!(sets[0].as_ref().unwrap().ts, Timestamp::Millis(NOW - 60_000));
    }

    #[test]
    fn senml_packs_without_readings_are_refused_as_empty() {
        for pack in [r#"[{"bn":"urn:dev:ow:RG0001:"}]"#, r#"[{"n":"lat","v":23.7},{"n":"lon","v":120.4}]"#] {
            assert_eq!(decode(pack).unwrap_err().reason, RejectReason::Empty, "{pack}");
        }
    }

    #[test]
    fn payload_level_refusals() {
        let limits = Limits { max_payload_bytes: 64, max_batch: 2 };
        let reason = |p: &[u8]| decode_readings(p, limits, NOW).unwrap_err().reason;
        assert_eq!(reason(&[b'{'; 65]), RejectReason::Oversized);
        assert_eq!(reason(b"{\"ts\":\xff}"), RejectReason::InvalidUtf8);
        assert_eq!(reason(b"{\"ts\":1,"), RejectReason::MalformedJson);
        assert_eq!(reason(b"[]"), RejectReason::Empty);
        assert_eq!(reason(b"   "), RejectReason::Empty);
        assert_eq!(reason(b"42"), RejectReason::WrongShape);
        assert_eq!(reason(b"[{\"values\":{}},{},{}]"), RejectReason::BatchTooLarge);
    }
}
