//! The bad-input catalogue: malformed payloads, each with the specific reason it is refused for and proof that the
//! good data beside it survives — the good sets and values in the same payload, and the device's next payload.
//!
//! Every case goes through [`Ingest::process`], the pipeline's entry point, and is checked three ways: the reasons
//! returned (as dead letters), the `dc_ingest_readings_rejected_total{reason}` counters, and the readings accepted.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use ingest::{Ingest, IngestConfig, Metric, RawMessage, RejectReason, SensorRegistry};
use parking_lot::RwLock;
use RejectReason::*;

const NOW: i64 = 1_764_122_400_000;
const RAIN: &str = "sensors/RG0001/readings";
const TRUCK: &str = "sensors/HZ0001/readings";
const WIRE: &str = "sensors/WS0001/readings";

const SENSORS: &str = r#"
[[sensor]]
id = "RG0001"
kind = "rain_gauge"
lat = 23.5185
lon = 120.9280
interval_s = 600
agency = "SWCB"
metrics = ["rain_mm", "battery_v"]

[[sensor]]
id = "HZ0001"
kind = "hazmat_gps"
lat = 23.7
lon = 120.4
interval_s = 60
agency = "EPA"
metrics = ["speed_kmh", "un_number"]
mobile = true

[[sensor]]
id = "WS0001"
kind = "wire_sensor"
lat = 23.52
lon = 120.93
interval_s = 600
agency = "SWCB"
metrics = ["wire_intact", "battery_v"]

[[sensor]]
id = "OLD0001"
kind = "rain_gauge"
lat = 23.5
lon = 120.9
interval_s = 600
agency = "CWA"
metrics = ["rain_mm"]
retired = true
"#;

/// A good reading set for the rain gauge (12.5 mm), to put beside the bad ones.
const GOOD: &str = r#"{"ts":1764122400000,"values":{"rain_mm":12.5}}"#;

struct Case {
    name: &'static str,
    topic: &'static str,
    payload: Vec<u8>,
    /// The refusals, in order.
    reasons: Vec<RejectReason>,
    /// Readings that must still come out of the same payload.
    accepted: usize,
}

fn case(
    name: &'static str,
    topic: &'static str,
    payload: impl Into<Vec<u8>>,
    reasons: &[RejectReason],
    accepted: usize,
) -> Case {
    Case { name, topic, payload: payload.into(), reasons: reasons.to_vec(), accepted }
}

fn batch(parts: &[&str]) -> String {
    format!("[{}]", parts.join(","))
}

fn catalogue() -> Vec<Case> {
    let deep = format!(r#"{{"ts":1764122400000,"values":{{"rain_mm":{}1{}}}}}"#, "[".repeat(200), "]".repeat(200));
    let mut oversized = GOOD.as_bytes().to_vec();
    oversized.resize(64 * 1024 + 1, b' ');
    let huge_batch = format!("[{}]", vec![GOOD; 1001].join(","));
    let huge_value_array =
        format!(r#"[{GOOD},{{"ts":1764122400000,"values":{{"rain_mm":[{}]}}}}]"#, vec!["1"; 10_000].join(","));
    let long_name = format!(r#"{{"ts":1764122400000,"values":{{"rain_mm":1,"{}":2}}}}"#, "x".repeat(10_000));
    let future = format!(r#"{{"ts":{},"values":{{"rain_mm":1}}}}"#, NOW + 3_600_000);
    let old = format!(r#"{{"ts":{},"values":{{"rain_mm":1}}}}"#, NOW - 30 * 86_400_000);
    vec![
        // --- the payload as a whole cannot be trusted: refused whole ---
        case("truncated JSON", RAIN, r#"{"ts": 1764122400000, "values": {"rain_mm": 12"#, &[MalformedJson], 0),
        case("truncated batch", RAIN, format!(r#"[{GOOD}, {{"val"#), &[MalformedJson], 0),
        case("trailing garbage", RAIN, format!("{GOOD} x"), &[MalformedJson], 0),
        case("single quotes", RAIN, "{'values': {'rain_mm': 1}}", &[MalformedJson], 0),
        case("NaN literal", RAIN, r#"{"values":{"rain_mm":NaN}}"#, &[MalformedJson], 0),
        case("number beyond f64", RAIN, r#"{"values":{"rain_mm":1e400}}"#, &[MalformedJson], 0),
        case("nesting 200 deep", RAIN, deep, &[MalformedJson], 0),
        case("invalid UTF-8", RAIN, b"{\"values\":{\"rain_mm\":\xff}}".to_vec(), &[InvalidUtf8], 0),
        case("UTF-16 with BOM", RAIN, b"\xff\xfe{\x00}\x00".to_vec(), &[InvalidUtf8], 0),
        case("oversized payload", RAIN, oversized, &[Oversized], 0),
        case("empty payload", RAIN, "", &[Empty], 0),
        case("whitespace only", RAIN, " \n\t ", &[Empty], 0),
        case("empty array", RAIN, "[]", &[Empty], 0),
        case("bare number", RAIN, "42", &[WrongShape], 0),
        case("bare string", RAIN, r#""rain""#, &[WrongShape], 0),
        case("1001 sets in a batch", RAIN, huge_batch, &[BatchTooLarge], 0),
        // --- topic and device ---
        case("unknown device", "sensors/NOSUCH9/readings", GOOD, &[UnknownDevice], 0),
        case("retired device", "sensors/OLD0001/readings", GOOD, &[RetiredDevice], 0),
        case("unknown topic leaf", "sensors/RG0001/firmware", GOOD, &[BadTopic], 0),
        case("device id with a dash", "sensors/RG-0001/readings", GOOD, &[BadTopic], 0),
        case("tenant mismatch", "/tenants/RG0002/sensors/RG0001/readings", GOOD, &[BadTopic], 0),
        // --- one set of a batch is bad: the other survives ---
        case("empty values", RAIN, batch(&[GOOD, r#"{"values":{}}"#]), &[Empty], 1),
        case("values is an array", RAIN, batch(&[GOOD, r#"{"values":[1,2]}"#]), &[WrongShape], 1),
        case("ts is a boolean", RAIN, batch(&[GOOD, r#"{"ts":true,"values":{"rain_mm":1}}"#]), &[WrongShape], 1),
        case(
            "lat is a string",
            RAIN,
            batch(&[GOOD, r#"{"values":{"rain_mm":1},"lat":"23.5","lon":120.9}"#]),
            &[WrongShape],
            1,
        ),
        case("unreadable ts", RAIN, batch(&[GOOD, r#"{"ts":"yesterday","values":{"rain_mm":1}}"#]), &[BadTimestamp], 1),
        case(
            "ts without offset",
            RAIN,
            batch(&[GOOD, r#"{"ts":"2025-11-26T10:00:00","values":{"rain_mm":1}}"#]),
            &[BadTimestamp],
            1,
        ),
        case(
            "fractional ms",
            RAIN,
            batch(&[GOOD, r#"{"ts":1764122400000.5,"values":{"rain_mm":1}}"#]),
            &[BadTimestamp],
            1,
        ),
        case(
            "ts beyond i64",
            RAIN,
            batch(&[GOOD, r#"{"ts":99999999999999999999,"values":{"rain_mm":1}}"#]),
            &[BadTimestamp],
            1,
        ),
        case("an hour in the future", RAIN, batch(&[GOOD, &future]), &[FromFuture], 1),
        case("30 days old", RAIN, batch(&[GOOD, &old]), &[TooOld], 1),
        // Fuzzing finding F5: the age in the refusal's message must not overflow.
        case(
            "ts at i64::MIN",
            RAIN,
            batch(&[GOOD, r#"{"ts":-9223372036854775808,"values":{"rain_mm":1}}"#]),
            &[TooOld],
            1,
        ),
        case("partial position", RAIN, batch(&[GOOD, r#"{"values":{"rain_mm":1},"lat":23.5}"#]), &[BadPosition], 1),
        case("latitude 91", RAIN, batch(&[GOOD, r#"{"values":{"rain_mm":1},"lat":91,"lon":120}"#]), &[BadPosition], 1),
        case(
            "mobile sensor without position",
            TRUCK,
            batch(&[r#"{"values":{"speed_kmh":60},"lat":23.7,"lon":120.4}"#, r#"{"values":{"speed_kmh":61}}"#]),
            &[BadPosition],
            1,
        ),
        case("a value array of 10 000", RAIN, huge_value_array, &[WrongType], 1),
        // --- one value of a set is bad: the others in the set survive ---
        case("unknown metric", RAIN, r#"{"values":{"rain_mm":1,"colour_index":3}}"#, &[UnknownMetric], 1),
        case("10 000-character metric name", RAIN, long_name, &[UnknownMetric], 1),
        case("metric of another kind", RAIN, r#"{"values":{"rain_mm":1,"tilt_deg":3}}"#, &[MetricNotForKind], 1),
        case("number as a string", RAIN, r#"{"values":{"rain_mm":"12","battery_v":3.7}}"#, &[WrongType], 1),
        case("null value", RAIN, r#"{"values":{"rain_mm":null,"battery_v":3.7}}"#, &[WrongType], 1),
        case("boolean for a number", RAIN, r#"{"values":{"rain_mm":true,"battery_v":3.7}}"#, &[WrongType], 1),
        case("object for a number", RAIN, r#"{"values":{"rain_mm":{"v":1},"battery_v":3.7}}"#, &[WrongType], 1),
        case("number for a boolean", WIRE, r#"{"values":{"wire_intact":1,"battery_v":3.7}}"#, &[WrongType], 1),
        case(
            "fractional UN number",
            TRUCK,
            r#"{"values":{"un_number":1203.5,"speed_kmh":50},"lat":23.7,"lon":120.4}"#,
            &[WrongType],
            1,
        ),
        case("negative rain", RAIN, r#"{"values":{"rain_mm":-5,"battery_v":3.7}}"#, &[OutOfRange], 1),
        case("1e300 mm of rain", RAIN, r#"{"values":{"rain_mm":1e300,"battery_v":3.7}}"#, &[OutOfRange], 1),
        case(
            "UN number 0",
            TRUCK,
            r#"{"values":{"un_number":0,"speed_kmh":50},"lat":23.7,"lon":120.4}"#,
            &[OutOfRange],
            1,
        ),
        // --- SenML ---
        case(
            "SenML infinity via base value",
            RAIN,
            r#"[{"n":"battery_v","v":3.7},{"bv":1.7e308,"n":"rain_mm","v":1.7e308}]"#,
            &[NotFinite],
            1,
        ),
        case(
            "SenML infinite time via base time",
            RAIN,
            r#"[{"n":"battery_v","v":3.7},{"bt":1e308,"n":"rain_mm","v":1,"t":1e308}]"#,
            &[BadTimestamp],
            1,
        ),
        case(
            "SenML wrong unit",
            RAIN,
            r#"[{"n":"rain_mm","u":"in","v":1},{"n":"battery_v","u":"V","v":3.7}]"#,
            &[UnitMismatch],
            1,
        ),
        case(
            "SenML two values in a record",
            RAIN,
            r#"[{"n":"rain_mm","v":1,"vb":true},{"n":"battery_v","v":3.7}]"#,
            &[WrongShape],
            1,
        ),
        case("SenML record without a value", RAIN, r#"[{"n":"battery_v","v":3.7},{"n":"rain_mm"}]"#, &[WrongShape], 1),
        case(
            "SenML version 99",
            RAIN,
            r#"[{"n":"battery_v","v":3.7},{"bver":99,"n":"rain_mm","v":1}]"#,
            &[WrongShape],
            1,
        ),
        case(
            "SenML string value",
            RAIN,
            r#"[{"n":"rain_mm","vs":"heavy"},{"n":"battery_v","v":3.7}]"#,
            &[WrongType],
            1,
        ),
        case("SenML record not an object", RAIN, r#"[{"n":"battery_v","v":3.7},17]"#, &[WrongShape], 1),
        // --- status and last will ---
        case("status with a string flag", "sensors/RG0001/status", r#"{"online":"yes"}"#, &[WrongShape], 0),
        case(
            "status with unknown field",
            "sensors/RG0001/status",
            r#"{"online":false,"mood":"sad"}"#,
            &[WrongShape],
            0,
        ),
        case("status battery of 900 V", "sensors/RG0001/status", r#"{"battery_v":900}"#, &[OutOfRange], 0),
        case("truncated status", "sensors/RG0001/status", r#"{"online": fal"#, &[MalformedJson], 0),
    ]
}

fn ingest() -> Ingest {
    let registry = SensorRegistry::from_toml(SENSORS, Path::new("sensors.toml")).expect("registry");
    Ingest::new(Arc::new(RwLock::new(registry)), IngestConfig::default())
}

fn message(topic: &str, payload: &[u8]) -> RawMessage {
    RawMessage { topic: topic.to_string(), payload: Bytes::copy_from_slice(payload) }
}

fn counter(reason: RejectReason) -> u64 {
    ingest::metrics::METRICS.rejected.with_label_values(&[reason.as_label()]).get()
}

/// The counters are process-wide and tests in a binary run in parallel: tests that refuse payloads take turns.
static COUNTERS: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

#[test]
fn every_malformed_input_is_refused_for_its_reason_and_the_good_data_survives() {
    let _turn = COUNTERS.lock();
    let ingest = ingest();
    let cases = catalogue();
    let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names are distinct");
    assert!(cases.len() >= 30, "the catalogue has {} cases", cases.len());

    let mut failures = Vec::new();
    for case in &cases {
        let before: Vec<u64> = RejectReason::ALL.iter().map(|r| counter(*r)).collect();
        let letters_before = ingest.dead_letters().len();
        let out = ingest.process(&message(case.topic, &case.payload), NOW);

        let letters = ingest.dead_letters();
        let reasons: Vec<&str> = letters[letters_before..].iter().map(|l| l.reason).collect();
        let expected: Vec<&str> = case.reasons.iter().map(|r| r.as_label()).collect();
        if reasons != expected {
            failures.push(format!("{}: refused for {reasons:?}, expected {expected:?}", case.name));
        }
        if out.rejected != case.reasons.len() {
            failures.push(format!("{}: {} refusals counted, expected {}", case.name, out.rejected, case.reasons.len()));
        }
        if out.readings.len() != case.accepted {
            failures.push(format!(
                "{}: {} readings accepted, expected {}",
                case.name,
                out.readings.len(),
                case.accepted
            ));
        }
        for (i, reason) in RejectReason::ALL.iter().enumerate() {
            let delta = counter(*reason) - before[i];
            let want = case.reasons.iter().filter(|r| *r == reason).count() as u64;
            if delta != want {
                failures.push(format!(
                    "{}: counter {} moved by {delta}, expected {want}",
                    case.name,
                    reason.as_label()
                ));
            }
        }
        // Every dead letter keeps the raw payload (bounded) for the operator.
        for letter in &letters[letters_before..] {
            if letter.payload_bytes != case.payload.len() || letter.payload.len() > 2048 * 3 {
                failures.push(format!("{}: dead letter payload not kept as sent", case.name));
            }
        }
        // The device's next good payload goes through: nothing is poisoned or stalled by what came before.
        if case.topic == RAIN {
            let next = ingest.process(&message(RAIN, GOOD.as_bytes()), NOW);
            if next.readings.len() != 1 || next.readings[0].metric != Metric::RainMm || next.readings[0].value != 12.5 {
                failures.push(format!("{}: the next good payload did not go through: {next:?}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{} problems:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn the_catalogue_covers_every_reason() {
    let covered: std::collections::HashSet<_> = catalogue().iter().flat_map(|c| c.reasons.clone()).collect();
    let missing: Vec<_> = RejectReason::ALL.iter().filter(|r| !covered.contains(r)).map(|r| r.as_label()).collect();
    assert!(missing.is_empty(), "reasons without a case: {missing:?}");
}

#[test]
fn dead_letters_stay_bounded_under_a_flood_of_garbage() {
    let _turn = COUNTERS.lock();
    let registry = SensorRegistry::from_toml(SENSORS, Path::new("sensors.toml")).unwrap();
    let ingest = Ingest::new(
        Arc::new(RwLock::new(registry)),
        IngestConfig { dead_letter_capacity: 50, ..IngestConfig::default() },
    );
    let big = vec![b'{'; 60 * 1024];
    for _ in 0..500 {
        ingest.process(&message(RAIN, &big), NOW);
    }
    let letters = ingest.dead_letters();
    assert_eq!(letters.len(), 50);
    assert!(letters.iter().all(|l| l.payload.len() <= 2048 && l.payload_bytes == big.len()));
    assert_eq!(ingest.process(&message(RAIN, GOOD.as_bytes()), NOW).readings.len(), 1);
}

/// Whether a publish was stamped on arrival is said by ingest, not guessed from a time equal to the arrival: the
/// cluster's front door puts the arrival into the publish id of stamped publishes only (a timed reading measured in
/// the millisecond it arrived would otherwise be stored twice when its QoS 1 resend arrives a millisecond later).
#[test]
fn only_a_publish_without_a_time_of_its_own_is_stamped() {
    let ingest = ingest();
    let timed = ingest.process(&message(RAIN, format!(r#"{{"ts":{NOW},"values":{{"rain_mm":1}}}}"#).as_bytes()), NOW);
    assert_eq!((timed.readings.len(), timed.stamped), (1, false), "a reading timed at the arrival is not stamped");
    let untimed = ingest.process(&message(RAIN, br#"{"values":{"rain_mm":1}}"#), NOW + 600_000);
    assert_eq!((untimed.readings.len(), untimed.stamped), (1, true));
    assert_eq!(untimed.readings[0].ts_ms, NOW + 600_000);
}
