//! Each vehicle detector's normal speed per hour of the week, learned from the readings store at start and then
//! every hour, handed to the rule engine (`RuleEngine::set_traffic_baseline`). Without it no detector is ever
//! "slowed" (`alerting::engine::traffic`): a weekday rush hour is normal only for a detector that has seen it before.
//!
//! The learning itself is pure (`alerting::TrafficBaseline::learn`, median and MAD per hour of the week); this module
//! only reads the history: [`LEARN_WEEKS`] of `speed_kmh` per registered, not retired, detector, a week per query so
//! one answer stays under the store's point limit.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use alerting::engine::TrafficBaseline;
use ingest::{Metric, SensorKind};
use prometheus::{register_int_gauge, IntGauge};

use crate::app::App;

/// How much history the baseline learns from: eight weeks gives each hour of the week eight samples of days, enough
/// for a median that one bad day (a crash, a holiday) does not move.
pub const LEARN_WEEKS: i64 = 8;
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

/// Learns the baseline of `detectors` from `store` as of `now_ms`. A week whose query fails is left out (logged):
/// the baseline then rests on fewer weeks, and hours below `baseline_min_weeks` stay unknown, never "slowed".
pub fn learn(store: &store::ReadingStore, detectors: &[String], now_ms: i64) -> TrafficBaseline {
    let mut readings: Vec<(&str, i64, f64)> = Vec::new();
    for id in detectors {
        for week in 0..LEARN_WEEKS {
            let to = now_ms - week * WEEK_MS;
            match store.history(id, Metric::SpeedKmh, to - WEEK_MS, to, None) {
                Ok(history) => {
                    if let store::Samples::Points(points) = history.samples {
                        readings.extend(points.into_iter().map(|p| (id.as_str(), p.ts_ms, p.value)));
                    }
                }
                Err(e) => {
                    tracing::warn!(detector = %id, week, error = %e, "traffic baseline: a week of history left out")
                }
            }
        }
    }
    TrafficBaseline::learn(readings)
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
/// millions of rows). `retention_days` is the store's (`[store] retention_days`): the baseline can only learn what
/// the store still holds, so a retention shorter than `[traffic] baseline_min_weeks` is said at start.
pub async fn keep_learning(app: Arc<App>, retention_days: u32) {
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
        if !warned && i64::from(retention_days) < 7 * i64::from(min_weeks) {
            warned = true;
            tracing::warn!(
                retention_days,
                baseline_min_weeks = min_weeks,
                "the readings store keeps less history than the traffic baseline needs: no detector will be judged \
                 `slowed` (raise [store] retention_days to at least 7 × baseline_min_weeks)"
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

    /// Monday 2026-11-02 00:00 Taiwan time.
    const MONDAY: i64 = 1_793_548_800_000;
    const HOUR: i64 = 3_600_000;

    #[test]
    fn weeks_of_stored_history_become_each_detectors_normal_per_hour() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::ReadingStore::open(dir.path(), store::StoreConfig::default()).unwrap();
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

        let baseline = learn(&store, &["VD0101".into(), "VD0999".into()], now);
        assert_eq!(baseline.detectors(), 1, "a detector without history has no normal");
        let rush = baseline.normal("VD0101", MONDAY + 8 * HOUR + 30 * 60_000, 3).expect("the rush hour's normal");
        assert_eq!(hour_of_week(MONDAY + 8 * HOUR), 8);
        assert!((30.0..=32.0).contains(&rush.median_kmh), "{rush:?}");
        assert_eq!(rush.weeks, 4);
        let night = baseline.normal("VD0101", MONDAY + 3 * HOUR, 3).expect("the night's normal");
        assert_eq!(night.median_kmh, 70.0);
        assert!(baseline.normal("VD0101", MONDAY + 13 * HOUR, 1).is_none(), "no readings at 1 p.m.: unknown");
    }
}
