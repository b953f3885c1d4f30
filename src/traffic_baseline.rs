//! Each vehicle detector's normal speed per 10-minute slot of the week, learned from the readings store at start
//! and then every hour, handed to the rule engine (`RuleEngine::set_traffic_baseline`). Without it no detector is ever
//! "slowed" (`alerting::engine::traffic`): a weekday rush hour is normal only for a detector that has seen it before.
//!
//! The learning itself is pure (`alerting::TrafficBaseline::learn`, median and MAD per slot of the week); this module
//! only reads the history: the store's long-term speed baseline (`store::embedded::baseline`, the mean speed per
//! detector and 10-minute slot, kept `[store] baseline_weeks` while raw readings are kept only `retention_days`) of
//! every registered, not retired, detector. The store tracks the same detectors (`ReadingStore::track_detectors`,
//! wired in `server.rs`), so an unregistered device id never gets a baseline.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use alerting::engine::TrafficBaseline;
use ingest::SensorKind;
use prometheus::{register_int_gauge, IntGauge};

use crate::app::App;

/// How often the baseline is learned again: the normal of an hour moves over weeks, not minutes.
const RELEARN_EVERY: Duration = Duration::from_secs(3600);
const WEEK_MS: i64 = 7 * 24 * 3_600_000;

pub static BASELINE_DETECTORS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "dc_traffic_baseline_detectors",
        "Vehicle detectors with a learned normal speed (the traffic rules' `slowed` needs one)"
    )
    .expect("metric registers")
});

/// Learns the baseline of `detectors` from the last `[store] baseline_weeks` of `store`'s speed baseline as of
/// `now_ms`. A detector whose query fails is left out (logged): it stays without a normal, never "slowed".
pub fn learn(store: &store::ReadingStore, detectors: &[String], now_ms: i64) -> TrafficBaseline {
    let from = now_ms - i64::from(store.config().baseline_weeks) * WEEK_MS;
    let mut slots: Vec<(&str, i64, f64)> = Vec::new();
    for id in detectors {
        match store.speed_baseline(id, from, now_ms) {
            Ok(points) => slots.extend(points.into_iter().map(|p| (id.as_str(), p.ts_ms, p.value))),
            Err(e) => tracing::warn!(detector = %id, error = %e, "traffic baseline: a detector's history left out"),
        }
    }
    TrafficBaseline::learn(slots)
}

/// The registered vehicle detectors that still report.
fn detectors(app: &App) -> Vec<String> {
    app.registry()
        .read()
        .iter()
        .filter(|s| s.kind == SensorKind::VehicleDetector && !s.retired)
        .map(|s| s.id.clone())
        .collect()
}

/// Learns at start and every [`RELEARN_EVERY`], off the async workers (a national deployment's detectors make
/// millions of slots). A `[store] baseline_weeks` shorter than `[traffic] baseline_min_weeks` is said at start: no
/// detector could ever be judged `slowed`.
pub async fn keep_learning(app: Arc<App>) {
    let Some(store) = app.readings.store.clone() else { return };
    let mut tick = tokio::time::interval(RELEARN_EVERY);
    let mut warned = false;
    loop {
        tick.tick().await;
        let ids = detectors(&app);
        if ids.is_empty() {
            continue;
        }
        let min_weeks = app.alerts.engine.lock().rules().traffic.baseline_min_weeks;
        let weeks = store.config().baseline_weeks;
        if !warned && weeks < min_weeks {
            warned = true;
            tracing::warn!(
                baseline_weeks = weeks,
                baseline_min_weeks = min_weeks,
                "the readings store keeps a shorter speed baseline than the traffic rules need: no detector will be \
                 judged `slowed` (raise [store] baseline_weeks to at least [traffic] baseline_min_weeks)"
            );
        }
        let store = Arc::clone(&store);
        let learned = tokio::task::spawn_blocking(move || learn(&store, &ids, crate::clock::now_ms())).await;
        match learned {
            Ok(baseline) => {
                let known = baseline.detectors();
                app.alerts.engine.lock().set_traffic_baseline(baseline);
                BASELINE_DETECTORS.set(known as i64);
                tracing::info!(detectors = known, "traffic baseline learned");
            }
            Err(e) => tracing::error!(error = %e, "traffic baseline: learning failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alerting::engine::hour_of_week;
    use ingest::Metric;

    /// Monday 2026-11-02 00:00 Taiwan time.
    const MONDAY: i64 = 1_793_548_800_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn weeks_of_history_past_raw_retention_become_each_detectors_normal_per_hour() {
        let dir = tempfile::tempdir().unwrap();
        // Raw readings are kept a week, as shipped; the speed baseline eight.
        let config = store::StoreConfig { retention_days: 7, ..store::StoreConfig::default() };
        let store = store::ReadingStore::open(dir.path(), config).unwrap();
        let detector = ingest::Sensor {
            id: "VD0101".into(),
            kind: SensorKind::VehicleDetector,
            lat: 23.52,
            lon: 120.93,
            interval_s: 60,
            agency: "THB".into(),
            metrics: vec![],
            zone: None,
            mobile: false,
            retired: false,
        };
        store.track_detectors([&detector]);
        let now = MONDAY + 4 * WEEK_MS;
        let mut readings = Vec::new();
        // Four weeks of weekday mornings: 30 km/h in the 8 o'clock rush hour, 70 at 3 a.m.; one crash morning at 5.
        for week in 0..4 {
            for day in 0..5 {
                let morning = MONDAY + week * WEEK_MS + day * 24 * HOUR;
                for minute in 0..60 {
                    let crash = week == 2 && day == 1;
                    let rush = if crash { 5.0 } else { 30.0 + (minute % 3) as f64 };
                    for (at, speed) in [(morning + 8 * HOUR, rush), (morning + 3 * HOUR, 70.0)] {
                        let ts_ms = at + minute * 60_000;
                        readings.push(ingest::Reading {
                            sensor_id: "VD0101".into(),
                            ts_ms,
                            metric: Metric::SpeedKmh,
                            value: speed,
                            position: None,
                        });
                    }
                }
            }
        }
        assert!(store.append(&readings));
        store.flush().unwrap();
        // Retention has taken every raw reading older than a week: three of the four weeks are gone from history.
        assert!(store.enforce_retention(now).unwrap() > 0);
        let raw = store.history("VD0101", Metric::SpeedKmh, MONDAY, MONDAY + WEEK_MS, None).unwrap();
        assert!(raw.is_empty(), "the first week's raw readings are gone");

        let baseline = learn(&store, &["VD0101".into(), "VD0999".into()], now);
        assert_eq!(baseline.detectors(), 1, "a detector without history has no normal");
        let rush = baseline.normal("VD0101", MONDAY + 8 * HOUR + 30 * 60_000, 3).expect("the rush hour's normal");
        assert_eq!(hour_of_week(MONDAY + 8 * HOUR), 8);
        assert!((30.0..=32.0).contains(&rush.median_kmh), "{rush:?}");
        assert_eq!(rush.weeks, 4, "every week counts, though raw retention kept one");
        let night = baseline.normal("VD0101", MONDAY + 3 * HOUR, 3).expect("the night's normal");
        assert_eq!(night.median_kmh, 70.0);
        assert!(baseline.normal("VD0101", MONDAY + 13 * HOUR, 1).is_none(), "no readings at 1 p.m.: unknown");
    }
}
