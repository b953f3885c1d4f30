//! From a scenario and a seed to the exact list of messages each device will publish, with the scenario offset at which
//! it is due. Pure: no clock, no network. Everything random (noise, clock skew, report phase, duplicates, battery, signal
//! strength) is drawn here from per-device generators seeded by `seed` and the device id, so the same seed gives the same
//! messages byte for byte, whatever the network does during the run.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value as Json};

use crate::error::SimError;
use crate::fleet::{Device, Fleet};
use crate::scenario::{cumulative, sample, Action, Mode, Scenario, Value};

/// Why a message exists; summaries and tests count them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A reading set on `sensors/{id}/readings`.
    Reading,
    /// A second copy of the previous reading, as buggy firmware sends.
    Duplicate,
    /// Heartbeat on `sensors/{id}/status`.
    Status,
}

/// One publish the firmware will make.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedMessage {
    /// Scenario offset at which the device produces it.
    pub at: Duration,
    pub device: String,
    pub topic: String,
    /// Native JSON payload of INTERFACE.md.
    pub payload: String,
    pub kind: MessageKind,
}

/// What a device does at a planned moment.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Publish(PlannedMessage),
    /// The link drops (abruptly: the broker sends the last will).
    LinkDown,
    /// The link is back.
    LinkUp,
    /// The device dies.
    Silent,
}

/// One device's script.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePlan {
    pub device: Device,
    /// Fixed clock error of this device, already applied to every `ts` it sends.
    pub skew_ms: i64,
    /// (scenario offset, step) in time order.
    pub steps: Vec<(Duration, Step)>,
}

/// The whole run's script.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub devices: Vec<DevicePlan>,
}

impl Plan {
    /// Every planned message of every device, ordered by scenario offset then device id.
    pub fn messages(&self) -> Vec<&PlannedMessage> {
        let mut all: Vec<&PlannedMessage> = self
            .devices
            .iter()
            .flat_map(|d| d.steps.iter())
            .filter_map(|(_, s)| if let Step::Publish(m) = s { Some(m) } else { None })
            .collect();
        all.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.device.cmp(&b.device)));
        all
    }

    /// Number of planned messages of a kind.
    pub fn count(&self, kind: MessageKind) -> usize {
        self.messages().iter().filter(|m| m.kind == kind).count()
    }
}

/// Stable 64-bit FNV-1a: mixes the device id into the seed. (std's hasher is not promised to stay the same across Rust
/// releases, and determinism across machines is the point.)
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Decimals a metric is reported with, like real loggers (a tipping bucket does not report micrometres).
fn decimals(metric: &str) -> i32 {
    match metric {
        "rain_mm" | "displacement_mm" | "soil_moisture_pct" | "occupancy_pct" | "pga_gal" | "pm25_ugm3" => 1,
        "water_level_m" | "battery_v" | "vibration_mm_s" => 2,
        "tilt_deg" => 4,
        "speed_kmh" | "flow_veh_h" | "flood_depth_cm" | "un_number" => 0,
        _ => 3,
    }
}

fn round(x: f64, d: i32) -> f64 {
    let f = 10f64.powi(d);
    let r = (x * f).round() / f;
    if r == 0.0 {
        0.0 // no "-0.0" in payloads
    } else {
        r
    }
}

/// JSON number; integers print without a fraction so `flow_veh_h` reads as 1800, not 1800.0.
fn num(x: f64, d: i32) -> Json {
    let r = round(x, d);
    if d == 0 && r.abs() < 9e15 {
        json!(r as i64)
    } else {
        json!(r)
    }
}

/// Which clock the payloads' `ts` follows (the device's skew is added either way).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stamp {
    /// Scenario time: `start_ts_ms` + offset. A 24 h scenario carries 24 h of timestamps however fast it plays, so a
    /// server's rule windows see the whole day — but a server also sees readings hours old arrive now (a backlog).
    Scenario { start_ts_ms: i64 },
    /// The wall clock when the device measures: `wall_start_ms` + offset / `compression`. What real devices do in a
    /// storm: the server sees live readings, issues what it raises now, and its deadman sees live sensors. Rule
    /// windows then see the scenario compressed (a day of rain within a minute of timestamps).
    WallClock { wall_start_ms: i64, compression: f64 },
}

impl Stamp {
    /// The `ts` (before skew) of what a device measures at scenario offset `t`.
    pub fn at(self, t: Duration) -> i64 {
        match self {
            Stamp::Scenario { start_ts_ms } => start_ts_ms + t.as_millis() as i64,
            Stamp::WallClock { wall_start_ms, compression } => {
                wall_start_ms + (t.as_secs_f64() * 1000.0 / compression.max(f64::MIN_POSITIVE)).round() as i64
            }
        }
    }
}

/// Build the script of every device the scenario names. `start_ts_ms` is the Unix time of scenario offset 0.
pub fn plan(fleet: &Fleet, scenario: &Scenario, seed: u64, start_ts_ms: i64) -> Result<Plan, SimError> {
    plan_stamped(fleet, scenario, seed, Stamp::Scenario { start_ts_ms })
}

/// [`plan`] with the payloads' `ts` on the clock `stamp` says. Everything but `ts` is the same for the same seed.
pub fn plan_stamped(fleet: &Fleet, scenario: &Scenario, seed: u64, stamp: Stamp) -> Result<Plan, SimError> {
    scenario.check_fleet(fleet)?;
    let fw = &scenario.firmware;
    let mut devices = Vec::new();
    for id in scenario.device_ids() {
        let device = fleet.device(&id).expect("checked by check_fleet").clone();
        let mut rng = StdRng::seed_from_u64(seed ^ fnv1a(&id));

        // Fixed per-device draws first, in a fixed order, so adding a track does not change another device's skew.
        let skew_max = fw.clock_skew.as_millis() as i64;
        let skew_ms = if skew_max > 0 { rng.gen_range(-skew_max..=skew_max) } else { 0 };
        let interval = Duration::from_secs(device.interval_s);
        let phase = Duration::from_millis(rng.gen_range(0..interval.as_millis() as u64));
        let hb_phase = Duration::from_millis(rng.gen_range(0..fw.heartbeat.as_millis().max(1) as u64));
        let battery_start = if fw.battery_v.0 < fw.battery_v.1 {
            rng.gen_range(fw.battery_v.0..=fw.battery_v.1)
        } else {
            fw.battery_v.0
        };
        let rssi_base: f64 = rng.gen_range(-97.0..=-63.0);

        let tracks: Vec<_> = scenario.tracks.iter().filter(|t| t.device == id).collect();
        let route = scenario.routes.iter().find(|r| r.device == id);
        let silent_at =
            scenario.events.iter().filter(|e| e.device == id && e.action == Action::Silent).map(|e| e.at).min();
        let alive = |t: Duration| silent_at.is_none_or(|s| t < s);
        let battery = |t: Duration| battery_start - fw.battery_drain_v_per_h * t.as_secs_f64() / 3600.0;
        let ts = |t: Duration| stamp.at(t) + skew_ms;

        let mut steps: Vec<(Duration, u8, Step)> = Vec::new();
        let topic_readings = format!("sensors/{id}/readings");
        let topic_status = format!("sensors/{id}/status");

        // Readings: every device interval from its phase, only if the device measures something in this scenario.
        if !tracks.is_empty() || route.is_some() {
            let mut t = phase;
            while t <= scenario.span && alive(t) {
                let mut values = Map::new();
                for tr in &tracks {
                    let v = match tr.mode {
                        Mode::Rate => {
                            let b = t.as_secs_f64() / 3600.0;
                            let a = b - interval.as_secs_f64() / 3600.0;
                            Value::Number(cumulative(&tr.points, b) - cumulative(&tr.points, a))
                        }
                        mode => sample(&tr.points, mode, t),
                    };
                    let v = match v {
                        Value::Bool(b) => json!(b),
                        Value::Number(n) => {
                            let mut n = n;
                            if tr.noise > 0.0 {
                                n += rng.gen_range(-tr.noise..=tr.noise);
                            }
                            if let Some(lo) = tr.min {
                                n = n.max(lo);
                            }
                            if let Some(hi) = tr.max {
                                n = n.min(hi);
                            }
                            num(n, decimals(&tr.metric))
                        }
                    };
                    values.insert(tr.metric.clone(), v);
                }
                if device.metrics.iter().any(|m| m == "battery_v") && !values.contains_key("battery_v") {
                    values.insert("battery_v".into(), num(battery(t), 2));
                }
                let mut payload = Map::new();
                payload.insert("ts".into(), json!(ts(t)));
                payload.insert("values".into(), Json::Object(values));
                if device.mobile {
                    let (lat, lon) = route.map(|r| position(&r.points, t)).unwrap_or((device.lat, device.lon));
                    payload.insert("lat".into(), num(lat, 5));
                    payload.insert("lon".into(), num(lon, 5));
                }
                let payload = Json::Object(payload).to_string();
                let duplicate = fw.duplicate_probability > 0.0 && rng.gen_bool(fw.duplicate_probability);
                let msg = PlannedMessage {
                    at: t,
                    device: id.clone(),
                    topic: topic_readings.clone(),
                    payload,
                    kind: MessageKind::Reading,
                };
                if duplicate {
                    let dup = PlannedMessage { kind: MessageKind::Duplicate, ..msg.clone() };
                    steps.push((t, 2, Step::Publish(msg)));
                    steps.push((t, 3, Step::Publish(dup)));
                } else {
                    steps.push((t, 2, Step::Publish(msg)));
                }
                t += interval;
            }
        }

        // Heartbeats: battery and signal strength, so operators see a device is alive between sparse readings.
        let mut t = hb_phase;
        while t <= scenario.span && alive(t) {
            let rssi = (rssi_base + rng.gen_range(-3.0..=3.0)).round() as i64;
            let payload = json!({"ts": ts(t), "battery_v": round(battery(t), 2), "rssi_dbm": rssi}).to_string();
            steps.push((
                t,
                4,
                Step::Publish(PlannedMessage {
                    at: t,
                    device: id.clone(),
                    topic: topic_status.clone(),
                    payload,
                    kind: MessageKind::Status,
                }),
            ));
            t += fw.heartbeat;
        }

        for e in scenario.events.iter().filter(|e| e.device == id) {
            match e.action {
                Action::Offline { until } => {
                    steps.push((e.at, 0, Step::LinkDown));
                    steps.push((until, 1, Step::LinkUp));
                }
                Action::Silent => steps.push((e.at, 0, Step::Silent)),
            }
        }

        // Control steps sort before messages of the same instant: a reading due as the link drops is buffered.
        steps.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        let steps = steps.into_iter().map(|(t, _, s)| (t, s)).collect();
        devices.push(DevicePlan { device, skew_ms, steps });
    }
    Ok(Plan { devices })
}

/// Position along a route at `t`, linear between points (good enough over a few minutes of driving).
fn position(points: &[(Duration, f64, f64)], t: Duration) -> (f64, f64) {
    let idx = points.partition_point(|p| p.0 <= t);
    if idx == 0 {
        return (points[0].1, points[0].2);
    }
    if idx == points.len() {
        let p = points[idx - 1];
        return (p.1, p.2);
    }
    let (a, b) = (points[idx - 1], points[idx]);
    let f = (t - a.0).as_secs_f64() / (b.0 - a.0).as_secs_f64();
    (a.1 + (b.1 - a.1) * f, a.2 + (b.2 - a.2) * f)
}
