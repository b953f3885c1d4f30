//! The embedded store through its public API, on a real SQLite file in a temporary folder.

use ingest::{Metric, Reading};
use proptest::prelude::*;
use store::{Bucket, Point, ReadingStore, Samples, StoreConfig, StoreError};

const T0: i64 = 1_764_122_400_000; // 2025-11-26T10:00:00+08:00

fn reading(sensor: &str, metric: Metric, ts_ms: i64, value: f64) -> Reading {
    Reading { sensor_id: sensor.into(), ts_ms, metric, value, position: None }
}

fn points(store: &ReadingStore, sensor: &str, metric: Metric, from: i64, to: i64) -> Vec<Point> {
    match store.history(sensor, metric, from, to, None).expect("query").samples {
        Samples::Points(p) => p,
        Samples::Buckets(_) => panic!("asked for points"),
    }
}

#[test]
fn append_then_query_round_trips_per_series_in_a_half_open_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = ReadingStore::open(dir.path(), StoreConfig::default()).unwrap();
    let mut batch = Vec::new();
    for i in 0..100 {
        batch.push(reading("RG0001", Metric::RainMm, T0 + i * 60_000, i as f64 * 0.5));
        batch.push(reading("RG0001", Metric::BatteryV, T0 + i * 60_000, 12.0 + i as f64 / 100.0));
        batch.push(reading("RG0002", Metric::RainMm, T0 + i * 60_000, 100.0 + i as f64));
    }
    assert!(store.append(&batch[..150]));
    assert!(store.append(&batch[150..]));
    store.flush().unwrap();

    let got = points(&store, "RG0001", Metric::RainMm, T0 + 10 * 60_000, T0 + 20 * 60_000);
    let want: Vec<Point> = (10..20).map(|i| Point { ts_ms: T0 + i * 60_000, value: i as f64 * 0.5 }).collect();
    assert_eq!(got, want, "[from, to): the reading at `to` is not included");
    assert_eq!(points(&store, "RG0001", Metric::BatteryV, T0, T0 + 1).len(), 1);
    assert_eq!(points(&store, "RG0002", Metric::RainMm, T0, T0 + 100 * 60_000).len(), 100);
    assert!(points(&store, "RG0002", Metric::BatteryV, T0, T0 + 100 * 60_000).is_empty());
    assert!(points(&store, "NOSUCH", Metric::RainMm, T0, T0 + 100 * 60_000).is_empty());

    // A resent reading (same sensor, metric and time) replaces the first rather than duplicating it.
    store.append(&[reading("RG0001", Metric::RainMm, T0, 42.0)]);
    store.flush().unwrap();
    assert_eq!(points(&store, "RG0001", Metric::RainMm, T0, T0 + 1), vec![Point { ts_ms: T0, value: 42.0 }]);
    assert_eq!(store.stats().written, 301);
    assert_eq!(store.stats().dropped, 0);
}

#[test]
fn history_serialises_as_the_api_answers() {
    let dir = tempfile::tempdir().unwrap();
    let store = ReadingStore::open(dir.path(), StoreConfig::default()).unwrap();
    store.append(&[reading("RG0001", Metric::RainMm, T0, 1.5), reading("RG0001", Metric::RainMm, T0 + 1000, 2.5)]);
    store.flush().unwrap();
    let raw = serde_json::to_value(store.history("RG0001", Metric::RainMm, T0, T0 + 10_000, None).unwrap()).unwrap();
    assert_eq!(
        raw,
        serde_json::json!({"sensor_id":"RG0001","metric":"rain_mm","from":T0,"to":T0 + 10_000,
            "points":[{"ts":T0,"value":1.5},{"ts":T0 + 1000,"value":2.5}]})
    );
    let buckets =
        serde_json::to_value(store.history("RG0001", Metric::RainMm, T0, T0 + 10_000, Some(10_000)).unwrap()).unwrap();
    assert_eq!(
        buckets,
        serde_json::json!({"sensor_id":"RG0001","metric":"rain_mm","from":T0,"to":T0 + 10_000,"step":10_000,
            "buckets":[{"ts":T0,"min":1.5,"max":2.5,"mean":2.0,"sum":4.0,"count":2}]})
    );
}

#[test]
fn bad_queries_are_refused_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { max_points: 10, ..StoreConfig::default() };
    let store = ReadingStore::open(dir.path(), config).unwrap();
    let batch: Vec<Reading> = (0..11).map(|i| reading("RG0001", Metric::RainMm, T0 + i, 1.0)).collect();
    store.append(&batch);
    store.flush().unwrap();
    assert!(matches!(store.history("RG0001", Metric::RainMm, T0, T0, None), Err(StoreError::BadQuery(_))));
    assert!(matches!(store.history("RG0001", Metric::RainMm, T0, T0 + 5, Some(0)), Err(StoreError::BadQuery(_))));
    assert!(matches!(store.history("RG0001", Metric::RainMm, T0, T0 + 5, Some(-3)), Err(StoreError::BadQuery(_))));
    assert!(matches!(store.history("RG0001", Metric::RainMm, i64::MIN, i64::MAX, None), Err(StoreError::BadQuery(_))));
    assert!(matches!(
        store.history("RG0001", Metric::RainMm, T0, T0 + 100, None),
        Err(StoreError::TooManyPoints { limit: 10 })
    ));
    assert_eq!(points(&store, "RG0001", Metric::RainMm, T0, T0 + 10).len(), 10, "exactly at the limit is fine");
    assert!(matches!(
        store.history("RG0001", Metric::RainMm, T0, T0 + 100, Some(9)),
        Err(StoreError::TooManyPoints { .. })
    ));
    assert_eq!(store.history("RG0001", Metric::RainMm, T0, T0 + 100, Some(10)).unwrap().len(), 2);
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { queue_readings: 10, ..StoreConfig::default() };
    let store = ReadingStore::open(dir.path(), config).unwrap();
    let batch: Vec<Reading> = (0..11).map(|i| reading("RG0001", Metric::RainMm, T0 + i, 1.0)).collect();
    assert!(!store.append(&batch), "more than the queue holds");
    assert!(store.append(&batch[..10]));
    store.flush().unwrap();
    let stats = store.stats();
    assert_eq!((stats.written, stats.dropped, stats.queued), (10, 11, 0));
}

#[test]
fn non_finite_values_are_skipped_without_losing_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = ReadingStore::open(dir.path(), StoreConfig::default()).unwrap();
    store.append(&[reading("RG0001", Metric::RainMm, T0, f64::NAN), reading("RG0001", Metric::RainMm, T0 + 1, 3.0)]);
    store.flush().unwrap();
    assert_eq!(points(&store, "RG0001", Metric::RainMm, T0, T0 + 10), vec![Point { ts_ms: T0 + 1, value: 3.0 }]);
    assert_eq!(store.stats().dropped, 1);
}

#[test]
fn retention_deletes_what_is_older_than_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { retention_days: 7, ..StoreConfig::default() };
    let store = ReadingStore::open(dir.path(), config).unwrap();
    let day = 24 * 3600 * 1000;
    let now = T0 + 30 * day;
    let batch: Vec<Reading> = (0..=10)
        .flat_map(|d| {
            let ts = now - d * day;
            [reading("RG0001", Metric::RainMm, ts, d as f64), reading("TM0001", Metric::TiltDeg, ts, d as f64)]
        })
        .collect();
    store.append(&batch);
    store.flush().unwrap();
    // Days 8, 9 and 10 are older than now - 7 days; day 7 is exactly at the cutoff and stays.
    assert_eq!(store.enforce_retention(now).unwrap(), 6);
    let left = points(&store, "RG0001", Metric::RainMm, 0, i64::MAX / 2);
    assert_eq!(left.iter().map(|p| p.value as i64).collect::<Vec<_>>(), vec![7, 6, 5, 4, 3, 2, 1, 0]);
    assert_eq!(store.stats().retention_deleted, 6);

    // Retention never runs ahead of the newest reading: with the wall clock far in the future (an installation
    // that was stopped for a month, or a replay of an old scenario) the last window is kept.
    assert_eq!(store.enforce_retention(now + 365 * day).unwrap(), 0);
    assert_eq!(points(&store, "TM0001", Metric::TiltDeg, 0, i64::MAX / 2).len(), 8);
}

#[test]
fn a_restart_keeps_the_data_and_the_series_ids() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = ReadingStore::open(dir.path(), StoreConfig::default()).unwrap();
        store.append(&[reading("RG0001", Metric::RainMm, T0, 1.0), reading("WL0001", Metric::WaterLevelM, T0, 2.0)]);
        // No flush: shutting down must write what was queued.
        store.shutdown();
    }
    let store = ReadingStore::open(dir.path(), StoreConfig::default()).unwrap();
    assert!(store.path().ends_with("readings.sqlite"));
    store.append(&[reading("RG0001", Metric::RainMm, T0 + 1, 3.0), reading("RG0001", Metric::BatteryV, T0, 12.5)]);
    store.flush().unwrap();
    assert_eq!(
        points(&store, "RG0001", Metric::RainMm, T0, T0 + 10),
        vec![Point { ts_ms: T0, value: 1.0 }, Point { ts_ms: T0 + 1, value: 3.0 }]
    );
    assert_eq!(points(&store, "WL0001", Metric::WaterLevelM, T0, T0 + 10).len(), 1);
    assert_eq!(points(&store, "RG0001", Metric::BatteryV, T0, T0 + 10).len(), 1);
}

#[test]
fn readings_after_per_series_cutoffs_in_event_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = ReadingStore::open(dir.path(), StoreConfig::default()).unwrap();
    let mut batch = Vec::new();
    for i in 0..10 {
        batch.push(reading("RG0001", Metric::RainMm, T0 + i * 60_000, i as f64));
        batch.push(reading("RG0002", Metric::RainMm, T0 + i * 60_000 + 1, 10.0 + i as f64));
        batch.push(reading("RG0001", Metric::BatteryV, T0 + i * 60_000, 12.0));
    }
    store.append(&batch);
    store.flush().unwrap();
    // RG0001 rain after its 7th reading, RG0002 rain from the start, battery skipped.
    let after = |sensor: &str, metric: Metric| match (sensor, metric) {
        ("RG0001", Metric::RainMm) => Some(T0 + 6 * 60_000),
        ("RG0002", Metric::RainMm) => Some(i64::MIN),
        _ => None,
    };
    let got = store.readings_after(&after, 100).unwrap();
    let keys: Vec<(&str, i64)> = got.iter().map(|r| (r.sensor_id.as_str(), r.ts_ms)).collect();
    assert_eq!(keys.len(), 13, "{keys:?}");
    assert!(keys.windows(2).all(|w| w[0].1 <= w[1].1), "event-time order: {keys:?}");
    assert_eq!(keys.iter().filter(|(s, _)| *s == "RG0001").count(), 3);
    assert_eq!(keys[0], ("RG0002", T0 + 1));
    assert!(got.iter().all(|r| r.metric == Metric::RainMm && r.position.is_none()));
    // The limit keeps the oldest.
    let capped = store.readings_after(&after, 2).unwrap();
    assert_eq!(capped.iter().map(|r| r.ts_ms).collect::<Vec<_>>(), [T0 + 1, T0 + 60_000 + 1]);
}

#[test]
fn a_bad_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = ReadingStore::open(dir.path(), StoreConfig { retention_days: 0, ..StoreConfig::default() });
    assert!(matches!(e, Err(StoreError::Config(_))));
}

/// Buckets computed the slow, obvious way.
fn naive_buckets(data: &[(i64, f64)], from: i64, to: i64, step: i64) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    let mut sorted: Vec<(i64, f64)> = data.iter().copied().filter(|(ts, _)| *ts >= from && *ts < to).collect();
    sorted.sort_by_key(|(ts, _)| *ts);
    for (ts, v) in sorted {
        let start = from + (ts - from) / step * step;
        match out.last_mut() {
            Some(b) if b.ts_ms == start => {
                b.min = b.min.min(v);
                b.max = b.max.max(v);
                b.sum += v;
                b.count += 1;
                b.mean = b.sum / b.count as f64;
            }
            _ => out.push(Bucket { ts_ms: start, min: v, max: v, mean: v, sum: v, count: 1 }),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn buckets_match_a_naive_computation(
        offsets in proptest::collection::btree_set(0i64..100_000, 0..300),
        values in proptest::collection::vec(-1000.0f64..1000.0, 300),
        from_off in -5_000i64..50_000,
        span in 1i64..120_000,
        step in 1i64..20_000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = ReadingStore::open(dir.path(), StoreConfig::default()).unwrap();
        let data: Vec<(i64, f64)> = offsets.iter().zip(&values).map(|(o, v)| (T0 + o, *v)).collect();
        let batch: Vec<Reading> = data.iter().map(|(ts, v)| reading("RG0001", Metric::RainMm, *ts, *v)).collect();
        store.append(&batch);
        store.flush().unwrap();
        let (from, to) = (T0 + from_off, T0 + from_off + span);
        let got = match store.history("RG0001", Metric::RainMm, from, to, Some(step)) {
            Ok(h) => match h.samples { Samples::Buckets(b) => b, Samples::Points(_) => panic!("asked for buckets") },
            Err(StoreError::TooManyPoints { .. }) => return Ok(()),
            Err(e) => panic!("{e}"),
        };
        let want = naive_buckets(&data, from, to, step);
        prop_assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            prop_assert_eq!((g.ts_ms, g.count, g.min, g.max), (w.ts_ms, w.count, w.min, w.max));
            // Sums may be added in another order: equal up to rounding.
            prop_assert!((g.sum - w.sum).abs() <= 1e-9 * (1.0 + w.sum.abs()), "{:?} vs {:?}", g, w);
            prop_assert!((g.mean - w.mean).abs() <= 1e-9 * (1.0 + w.mean.abs()), "{:?} vs {:?}", g, w);
        }
    }
}

#[test]
fn handles_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<ReadingStore>();
    shared::<store::InfluxSink>();
}
