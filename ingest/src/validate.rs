//! Plausibility checks that turn a [`DecodedSet`] into [`Reading`]s.
//!
//! Set-level problems (timestamp, position) refuse the whole set; value-level problems refuse that value only.

use crate::payload::{DecodedSet, Rejection, Timestamp, WireValue};
use crate::reading::{Metric, Position, Reading, ValueKind};
use crate::registry::Sensor;
use crate::RejectReason;

#[derive(Debug, Clone, Copy)]
pub struct ValidationConfig {
    /// How far ahead of our clock a device's timestamp may be (device clocks drift; GPS-less loggers more so).
    pub max_future_ms: i64,
    /// How old a reading may be and still be accepted (store-and-forward gateways replay hours of backlog).
    pub max_age_ms: i64,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self { max_future_ms: 5 * 60 * 1000, max_age_ms: 7 * 24 * 3600 * 1000 }
    }
}

pub fn validate_set(
    sensor: &Sensor,
    set: DecodedSet,
    cfg: &ValidationConfig,
    now_ms: i64,
    accepted: &mut Vec<Reading>,
    rejected: &mut Vec<Rejection>,
) {
    let ts_ms = match set.ts {
        Timestamp::Millis(ms) => ms,
        // Simple loggers have no clock: a set without `ts` is stamped on arrival (documented in docs/PAYLOADS.md).
        Timestamp::Missing => now_ms,
        Timestamp::Unreadable(detail) => {
            rejected.push(Rejection::new(RejectReason::BadTimestamp, detail));
            return;
        }
    };
    if ts_ms > now_ms + cfg.max_future_ms {
        rejected.push(Rejection::new(
            RejectReason::FromFuture,
            format!("ts {ts_ms} is {} ms ahead", ts_ms.saturating_sub(now_ms)),
        ));
        return;
    }
    if ts_ms < now_ms - cfg.max_age_ms {
        rejected.push(Rejection::new(
            RejectReason::TooOld,
            format!("ts {ts_ms} is {} ms old", now_ms.saturating_sub(ts_ms)),
        ));
        return;
    }
    let position = match set.position {
        None if sensor.mobile => {
            rejected.push(Rejection::new(RejectReason::BadPosition, "mobile sensor sent no lat/lon"));
            return;
        }
        None => None,
        Some((Some(lat), Some(lon))) if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) => {
            Some(Position { lat, lon })
        }
        Some((lat, lon)) => {
            rejected.push(Rejection::new(RejectReason::BadPosition, format!("lat {lat:?} lon {lon:?}")));
            return;
        }
    };
    for value in set.values {
        let Some(metric) = Metric::from_name(&value.name) else {
            rejected.push(Rejection::new(RejectReason::UnknownMetric, format!("`{}`", truncate(&value.name))));
            continue;
        };
        if !sensor.metrics.contains(&metric) {
            rejected.push(Rejection::new(
                RejectReason::MetricNotForKind,
                format!("`{metric}` is not registered for {} ({:?})", sensor.id, sensor.kind),
            ));
            continue;
        }
        if let Some(unit) = &value.unit {
            if !metric.accepts_unit(unit) {
                rejected.push(Rejection::new(
                    RejectReason::UnitMismatch,
                    format!("`{metric}` in `{}`, expected `{}`", truncate(unit), metric.unit()),
                ));
                continue;
            }
        }
        let number = match (metric.value_kind(), value.value) {
            (ValueKind::Bool, WireValue::Bool(b)) => f64::from(u8::from(b)),
            (ValueKind::Number, WireValue::Number(n)) => n,
            (ValueKind::Integer, WireValue::Number(n)) if n.fract() == 0.0 => n,
            (_, other) => {
                rejected.push(Rejection::new(RejectReason::WrongType, format!("`{metric}` got {other:?}")));
                continue;
            }
        };
        if !number.is_finite() {
            rejected.push(Rejection::new(RejectReason::NotFinite, format!("`{metric}`")));
            continue;
        }
        let (lo, hi) = metric.plausible_range();
        if !(lo..=hi).contains(&number) {
            rejected.push(Rejection::new(
                RejectReason::OutOfRange,
                format!("`{metric}` = {number} outside {lo}..={hi} {}", metric.unit()),
            ));
            continue;
        }
        accepted.push(Reading { sensor_id: sensor.id.clone(), ts_ms, metric, value: number, position });
    }
}

/// Names from outside are echoed into logs and the dead-letter list: keep them short.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
