//! [`Ingest`]: raw MQTT publishes in, validated readings and device status out.
//!
//! It is synchronous and lock-light on purpose: it runs on the broker link's own thread, so decoding never competes
//! with the async workers that serve websockets.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::metrics::METRICS;
use crate::payload::{self, check_envelope, Limits, Rejection};
use crate::reading::Reading;
use crate::registry::SensorRegistry;
use crate::throttle::{Throttle, ThrottleConfig};
use crate::topic::{self, TopicKind};
use crate::validate::{validate_set, ValidationConfig};
use crate::RejectReason;

#[derive(Debug, Clone)]
pub struct RawMessage {
    pub topic: String,
    pub payload: Bytes,
}

#[derive(Debug, Clone, Copy)]
pub struct IngestConfig {
    pub limits: Limits,
    pub validation: ValidationConfig,
    /// How many refused payloads operators can list; the oldest go first.
    pub dead_letter_capacity: usize,
    /// Devices reporting far faster than their registered interval (`throttle.rs`).
    pub throttle: ThrottleConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            validation: ValidationConfig::default(),
            dead_letter_capacity: 1000,
            throttle: ThrottleConfig::default(),
        }
    }
}

/// A refused payload kept for operators, with the reason and the raw bytes (shortened, lossily decoded).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub received_ms: i64,
    pub topic: String,
    pub reason: &'static str,
    pub detail: String,
    pub payload: String,
    pub payload_bytes: usize,
}

/// A device's heartbeat or last will.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceStatus {
    pub device_id: String,
    pub online: bool,
    pub ts_ms: i64,
    pub battery_v: Option<f64>,
    pub rssi_dbm: Option<f64>,
}

/// What one publish produced.
#[derive(Debug, Default)]
pub struct Processed {
    /// Valid readings for storage and the rules.
    pub readings: Vec<Reading>,
    /// Valid readings from a device reporting far faster than its registered interval (`throttle.rs`): stored and
    /// shown, kept from the rules.
    pub throttled: Vec<Reading>,
    pub status: Option<DeviceStatus>,
    pub rejected: usize,
    /// A reading set had no time of its own and was stamped with the arrival: the publish's bytes do not say when
    /// it was measured (two identical untimed publishes are two readings; a timed publish sent again is one).
    pub stamped: bool,
}

pub struct Ingest {
    registry: Arc<RwLock<SensorRegistry>>,
    config: IngestConfig,
    dead_letters: Mutex<VecDeque<DeadLetter>>,
    /// Per (device, metric) token buckets on event time. Only the ingest link thread takes it.
    throttle: Mutex<Throttle>,
}

/// Raw payload bytes kept per dead letter: enough to see what went wrong, bounded so a flood cannot fill memory.
const DEAD_LETTER_PAYLOAD_BYTES: usize = 2048;

impl Ingest {
    pub fn new(registry: Arc<RwLock<SensorRegistry>>, config: IngestConfig) -> Self {
        LazyInit::touch();
        Self {
            registry,
            config,
            dead_letters: Mutex::new(VecDeque::new()),
            throttle: Mutex::new(Throttle::new(config.throttle)),
        }
    }

    pub fn registry(&self) -> &Arc<RwLock<SensorRegistry>> {
        &self.registry
    }

    pub fn process(&self, msg: &RawMessage, now_ms: i64) -> Processed {
        METRICS.payloads.inc();
        METRICS.bytes.inc_by(msg.payload.len() as u64);
        let mut out = Processed::default();
        let Some(parsed) = topic::parse(&msg.topic) else {
            self.refuse(msg, now_ms, Rejection::new(RejectReason::BadTopic, "unrecognised topic"), &mut out);
            return out;
        };
        let registry = self.registry.read();
        let sensor = match registry.get(parsed.device_id) {
            Some(s) if s.retired => {
                let r = Rejection::new(RejectReason::RetiredDevice, parsed.device_id.to_string());
                self.refuse(msg, now_ms, r, &mut out);
                return out;
            }
            Some(s) => s,
            None => {
                let r = Rejection::new(RejectReason::UnknownDevice, parsed.device_id.to_string());
                self.refuse(msg, now_ms, r, &mut out);
                return out;
            }
        };
        match parsed.kind {
            TopicKind::Status => match decode_status(&msg.payload, self.config.limits, parsed.device_id, now_ms) {
                Ok(status) => {
                    METRICS.status_messages.inc();
                    out.status = Some(status);
                }
                Err(r) => self.refuse(msg, now_ms, r, &mut out),
            },
            TopicKind::Readings => {
                let sets = match payload::decode_readings(&msg.payload, self.config.limits, now_ms) {
                    Ok(sets) => sets,
                    Err(r) => {
                        self.refuse(msg, now_ms, r, &mut out);
                        return out;
                    }
                };
                let mut rejections = Vec::new();
                for set in sets {
                    if matches!(&set, Ok(set) if set.ts == payload::Timestamp::Missing) {
                        out.stamped = true;
                    }
                    match set {
                        Ok(set) => validate_set(
                            sensor,
                            set,
                            &self.config.validation,
                            now_ms,
                            &mut out.readings,
                            &mut rejections,
                        ),
                        Err(r) => rejections.push(r),
                    }
                }
                for r in rejections {
                    self.refuse(msg, now_ms, r, &mut out);
                }
                if !out.readings.is_empty() {
                    let mut throttle = self.throttle.lock();
                    let (keep, throttled): (Vec<Reading>, Vec<Reading>) = out.readings.drain(..).partition(|r| {
                        match throttle.check(&sensor.id, r.metric, sensor.interval_s, r.ts_ms) {
                            None => true,
                            Some(reason) => {
                                METRICS.throttled.with_label_values(&[reason.as_label()]).inc();
                                false
                            }
                        }
                    });
                    if !throttled.is_empty() {
                        tracing::debug!(device = %sensor.id, throttled = throttled.len(), interval_s = sensor.interval_s, "readings faster than the registered interval kept from the rules");
                    }
                    out.readings = keep;
                    out.throttled = throttled;
                }
                METRICS.accepted.inc_by((out.readings.len() + out.throttled.len()) as u64);
                if let Some(newest) = out.readings.iter().chain(&out.throttled).map(|r| r.ts_ms).max() {
                    METRICS.lag_ms.set(now_ms - newest);
                }
            }
        }
        out
    }

    fn refuse(&self, msg: &RawMessage, now_ms: i64, rejection: Rejection, out: &mut Processed) {
        out.rejected += 1;
        METRICS.rejected.with_label_values(&[rejection.reason.as_label()]).inc();
        tracing::warn!(topic = %msg.topic, reason = rejection.reason.as_label(), detail = %rejection.detail, "reading refused");
        let kept = &msg.payload[..msg.payload.len().min(DEAD_LETTER_PAYLOAD_BYTES)];
        let letter = DeadLetter {
            received_ms: now_ms,
            topic: msg.topic.chars().take(256).collect(),
            reason: rejection.reason.as_label(),
            detail: rejection.detail,
            payload: String::from_utf8_lossy(kept).into_owned(),
            payload_bytes: msg.payload.len(),
        };
        let mut dead = self.dead_letters.lock();
        if dead.len() >= self.config.dead_letter_capacity {
            dead.pop_front();
        }
        dead.push_back(letter);
        METRICS.dead_letters.set(dead.len() as i64);
    }

    /// The most recent refused payloads, newest last.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters.lock().iter().cloned().collect()
    }
}

/// Forces metric registration at construction, so `/metrics` lists every counter (at zero) before traffic arrives.
struct LazyInit;
impl LazyInit {
    fn touch() {
        std::sync::LazyLock::force(&METRICS);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusWire {
    ts: Option<i64>,
    online: Option<bool>,
    battery_v: Option<f64>,
    rssi_dbm: Option<f64>,
}

fn decode_status(payload: &[u8], limits: Limits, device_id: &str, now_ms: i64) -> Result<DeviceStatus, Rejection> {
    let text = check_envelope(payload, limits)?;
    let wire: StatusWire = serde_json::from_str(text).map_err(|e| {
        let reason = match e.classify() {
            serde_json::error::Category::Data => RejectReason::WrongShape,
            _ => RejectReason::MalformedJson,
        };
        Rejection::new(reason, format!("status: {e}"))
    })?;
    if wire.battery_v.is_some_and(|v| !(0.0..=60.0).contains(&v))
        || wire.rssi_dbm.is_some_and(|v| !(-200.0..=0.0).contains(&v))
    {
        return Err(Rejection::new(RejectReason::OutOfRange, "status battery_v or rssi_dbm out of range"));
    }
    Ok(DeviceStatus {
        device_id: device_id.to_string(),
        online: wire.online.unwrap_or(true),
        ts_ms: wire.ts.unwrap_or(now_ms),
        battery_v: wire.battery_v,
        rssi_dbm: wire.rssi_dbm,
    })
}
