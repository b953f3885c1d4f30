//! Devices reporting far faster than their registered interval: a token bucket per (device, metric) on the readings'
//! own timestamps.
//!
//! A sensor registered to report every `interval_s` may report up to `rate_factor` times as often, with bursts of
//! `burst` readings (a wire sensor reporting its trip right after its regular report, a gateway's retry). Beyond that
//! its readings are *throttled*: still stored (history, the operators' map, InfluxDB) — they are what the device
//! measured, and a sensor shaking itself apart is evidence an operator wants to see — but kept from the rule engine,
//! whose windows, rates and levels were set for the registered interval: a tilt meter publishing at 10 Hz must not
//! raise and clear a landslide alert a hundred times a minute. Operators see the sensor flagged; the refusals are
//! counted (`dc_ingest_readings_throttled_total{reason}`).
//!
//! Event time, not arrival time: a gateway flushing its store-and-forward buffer sends hours of readings in a
//! second, spaced at the interval, and none of them is too fast. A reading older than the newest one already seen
//! for its metric (a backlog arriving behind live readings, a duplicate) is not rate-checked: the engine's lateness
//! limit bounds how far back such readings reach.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::reading::Metric;

/// `[ingest]` `rate_factor` and `rate_burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleConfig {
    /// How many times faster than its registered interval a device may report, sustained. 0 turns throttling off.
    pub rate_factor: f64,
    /// Readings a device may send at once beyond that rate.
    pub burst: f64,
}

/// Default: ten times the registered rate, bursts of five.
pub const DEFAULT_RATE_FACTOR: f64 = 10.0;
pub const DEFAULT_BURST: f64 = 5.0;

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig { rate_factor: DEFAULT_RATE_FACTOR, burst: DEFAULT_BURST }
    }
}

/// Why a reading was throttled: the label of `dc_ingest_readings_throttled_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThrottleReason {
    /// Timestamps closer together than the registered interval allows, past the burst.
    FasterThanInterval,
}

impl ThrottleReason {
    pub const ALL: [ThrottleReason; 1] = [ThrottleReason::FasterThanInterval];

    pub fn as_label(self) -> &'static str {
        match self {
            ThrottleReason::FasterThanInterval => "faster_than_interval",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// Event time of the newest reading seen for the metric.
    newest_ms: i64,
}

/// The buckets of every (device, metric) seen.
#[derive(Debug, Default)]
pub struct Throttle {
    config: ThrottleConfig,
    buckets: HashMap<(String, Metric), Bucket>,
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Self {
        Throttle { config, buckets: HashMap::new() }
    }

    /// Whether a reading of `metric` from `device` at event time `ts_ms` may go to the rules (`None`), or why not.
    pub fn check(&mut self, device: &str, metric: Metric, interval_s: u32, ts_ms: i64) -> Option<ThrottleReason> {
        if self.config.rate_factor <= 0.0 || interval_s == 0 {
            return None;
        }
        let burst = self.config.burst.max(1.0);
        // Tokens per millisecond of event time.
        let rate = self.config.rate_factor / (f64::from(interval_s) * 1000.0);
        let bucket = match self.buckets.get_mut(&(device.to_string(), metric)) {
            Some(b) => b,
            None => {
                self.buckets.insert((device.to_string(), metric), Bucket { tokens: burst - 1.0, newest_ms: ts_ms });
                return None;
            }
        };
        if ts_ms <= bucket.newest_ms {
            // Not newer than what we have: a backlog, or the same reading sent again (a QoS 1 resend, a gateway
            // repeating itself), not a rate. The engine drops duplicates; they must not use up the device's budget.
            return None;
        }
        let elapsed = (ts_ms - bucket.newest_ms) as f64;
        bucket.newest_ms = ts_ms;
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            None
        } else {
            Some(ThrottleReason::FasterThanInterval)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_reading_sent_again_is_not_a_rate() {
        let mut t = Throttle::new(ThrottleConfig::default());
        for _ in 0..100 {
            assert_eq!(t.check("RG0001", Metric::RainMm, 600, 1_764_122_400_000), None);
        }
        // And the budget is intact for the next real reading.
        assert_eq!(t.check("RG0001", Metric::RainMm, 600, 1_764_122_400_000 + 600_000), None);
    }

    #[test]
    fn a_device_at_its_interval_is_never_throttled() {
        let mut t = Throttle::new(ThrottleConfig::default());
        for i in 0..100 {
            assert_eq!(t.check("TM0001", Metric::TiltDeg, 600, i * 600_000), None);
        }
    }

    #[test]
    fn a_device_far_faster_than_its_interval_is_throttled_after_the_burst() {
        let mut t = Throttle::new(ThrottleConfig::default());
        // 10 Hz from a tilt meter registered at 600 s: the burst passes, then one per 60 s (600 s / 10).
        let passed = (0..700).filter(|i| t.check("TM0001", Metric::TiltDeg, 600, i * 100).is_none()).count();
        assert_eq!(passed, 5 + 1, "burst of five, plus one token refilled in the 70 s of timestamps");
        // Another metric or device has its own bucket.
        assert_eq!(t.check("TM0002", Metric::TiltDeg, 600, 59_900), None);
    }

    #[test]
    fn a_trip_right_after_a_regular_report_passes() {
        let mut t = Throttle::new(ThrottleConfig::default());
        assert_eq!(t.check("WS0001", Metric::WireIntact, 600, 0), None);
        assert_eq!(t.check("WS0001", Metric::WireIntact, 600, 600_000), None);
        assert_eq!(t.check("WS0001", Metric::WireIntact, 600, 605_000), None);
    }

    #[test]
    fn a_backlog_spaced_at_the_interval_or_arriving_late_passes() {
        let mut t = Throttle::new(ThrottleConfig::default());
        assert_eq!(t.check("RG0001", Metric::RainMm, 600, 10 * 3_600_000), None);
        // Six hours of buffered readings, older than the live one: not a rate.
        for i in 0..36 {
            assert_eq!(t.check("RG0001", Metric::RainMm, 600, 4 * 3_600_000 + i * 600_000), None);
        }
    }

    #[test]
    fn factor_zero_turns_it_off() {
        let mut t = Throttle::new(ThrottleConfig { rate_factor: 0.0, burst: 1.0 });
        assert!((0..100).all(|i| t.check("TM0001", Metric::TiltDeg, 600, i).is_none()));
    }
}
