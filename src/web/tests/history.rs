//! The history query's `step` (issue 27): milliseconds as before, or a duration (`1h`, `15m`, `30s`, `1h30m`); the
//! same width either way gives the same buckets, and a step that is not one is a 400 naming `step` and what it got.

use axum::http::{Method, StatusCode};
use serde_json::Value;

use super::{TestApp, READ_TOKEN};

/// Twelve rain readings five minutes apart from `t0` (values 0…11), committed to the test app's store.
fn twelve_readings(test: &TestApp, t0: i64) {
    let store = test.app.readings.store.as_ref().expect("the test app has a data dir, so a store");
    let readings: Vec<ingest::Reading> = (0..12)
        .map(|i| ingest::Reading {
            sensor_id: "RG0002".into(),
            ts_ms: t0 + i * 300_000,
            metric: ingest::Metric::RainMm,
            value: i as f64,
            position: None,
        })
        .collect();
    assert!(store.append(&readings));
    store.flush().expect("readings committed");
}

/// The hour from `t0` in buckets of `step`, which must be answered 200.
async fn bucketed(test: &TestApp, t0: i64, step: &str) -> Value {
    let uri = format!("/api/v1/sensors/RG0002/readings?metric=rain_mm&from={t0}&to={}&step={step}", t0 + 3_600_000);
    let got = test.call(Method::GET, &uri, Some(READ_TOKEN), None).await;
    assert_eq!(got.status, StatusCode::OK, "{uri} → {}", String::from_utf8_lossy(&got.body));
    got.json()
}

#[tokio::test]
async fn step_takes_milliseconds_or_a_duration_with_units() {
    let test = TestApp::new();
    // On the hour, two hours ago: well inside the store's retention.
    let t0 = crate::clock::now_ms() / 3_600_000 * 3_600_000 - 2 * 3_600_000;
    twelve_readings(&test, t0);
    let by_ms = bucketed(&test, t0, "1800000").await;
    assert_eq!(by_ms["step"], 1_800_000);
    assert_eq!(by_ms["buckets"].as_array().map(Vec::len), Some(2), "{by_ms}");
    assert_eq!(by_ms["buckets"][0]["sum"], 15.0, "{by_ms}");
    for same in ["30m", "1800s", "30min", "1800000ms", "1800000%20"] {
        assert_eq!(bucketed(&test, t0, same).await, by_ms, "step={same}");
    }
    let hourly = bucketed(&test, t0, "1h").await;
    assert_eq!(hourly["step"], 3_600_000);
    assert_eq!((hourly["buckets"][0]["sum"].as_f64(), hourly["buckets"][0]["count"].as_u64()), (Some(66.0), Some(12)));
    let fifteen = bucketed(&test, t0, "15m").await;
    assert_eq!(fifteen["buckets"].as_array().map(Vec::len), Some(4), "{fifteen}");
    assert_eq!(bucketed(&test, t0, "1h30m").await["step"], 5_400_000);
    assert_eq!(bucketed(&test, t0, "1.5h").await["step"], 5_400_000);
    assert_eq!(bucketed(&test, t0, "30s").await["step"], 30_000);
}

#[tokio::test]
async fn a_step_that_is_not_a_width_is_a_400_naming_step() {
    let test = TestApp::new();
    for (step, needle) in [
        ("fortnight", "not a duration"),
        ("15x", "not a duration"),
        ("1h30", "not a duration"),
        ("1%20fortnight", "not a duration"),
        ("0s", "positive"),
        ("0", "positive"),
        ("-5", "positive"),
        ("1500us", "whole number of milliseconds"),
        ("", "not a duration"),
    ] {
        let uri = format!("/api/v1/sensors/RG0002/readings?metric=rain_mm&step={step}");
        let message =
            test.call(Method::GET, &uri, Some(READ_TOKEN), None).await.refusal(StatusCode::BAD_REQUEST, "bad_request");
        assert!(message.starts_with("`step`:"), "step={step} → {message}");
        assert!(message.contains(needle), "step={step} → {message}");
        assert!(message.contains("`1h`"), "the message shows what is accepted: {message}");
    }
    // Raw points (no step) still need nothing more.
    let raw = test.call(Method::GET, "/api/v1/sensors/RG0002/readings?metric=rain_mm", Some(READ_TOKEN), None).await;
    assert_eq!(raw.status, StatusCode::OK);
    assert!(raw.json()["points"].is_array());
}

/// Instants at the ends of i64 answer like any other (a 200 or a 400 naming the range), never a panic: the default
/// `from` (`to` − 24 h) used to overflow for a `to` near i64::MIN, which a debug build turned into a dropped
/// connection.
#[tokio::test]
async fn extreme_instants_are_answered_not_a_panic() {
    let test = TestApp::new();
    for query in [
        format!("to={}", i64::MIN),
        format!("to={}", i64::MIN + 1),
        format!("from={}&to={}", i64::MIN, i64::MAX),
        format!("from={}&to={}&step=1h", i64::MIN, i64::MAX),
        format!("to={}&step=1", i64::MAX),
    ] {
        let uri = format!("/api/v1/sensors/RG0002/readings?metric=rain_mm&{query}");
        let got = test.call(Method::GET, &uri, Some(READ_TOKEN), None).await;
        assert!(
            got.status == StatusCode::OK || got.status == StatusCode::BAD_REQUEST,
            "{query} → {} {}",
            got.status,
            String::from_utf8_lossy(&got.body)
        );
    }
}
