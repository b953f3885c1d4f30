//! Scenario files (`config/scenarios/*.toml`): what each simulated sensor measures over scenario time, how its firmware
//! behaves, and what happens to its link. Parsing and validation only; turning a scenario into messages is `plan.rs`.
//!
//! Format (every key is documented in `config/scenarios/README.md`):
//! ```toml
//! [scenario]
//! name = "typhoon"
//! span = "24h"          # scenario time covered
//! compression = 1440.0  # scenario seconds per wall second: 24 h replayed in 60 s
//! seed = 2026
//!
//! [firmware]            # optional, every key has a default
//! heartbeat = "1h"
//!
//! [[track]]             # one metric of one device over time
//! device = "RG0001"
//! metric = "rain_mm"
//! mode = "rate"         # linear | step | rate
//! points = [["0h", 1.0], ["12h", 45.0]]
//!
//! [[route]]             # a mobile device's positions over time
//! device = "HZ0001"
//! points = [["0h", 23.70, 120.40], ["6h", 23.79, 120.20]]
//!
//! [[event]]             # link down and back, or a device dying
//! at = "16h"
//! device = "RV0001"
//! action = "offline"
//! until = "17h30m"
//! ```

use std::time::Duration;

use serde::Deserialize;

use crate::error::SimError;
use crate::fleet::{valid_device_id, Fleet};
use crate::timefmt::{format_duration, parse_duration};

/// Metric vocabulary of INTERFACE.md (plus `un_number`, the cargo of a hazmat truck).
pub const METRICS: &[&str] = &[
    "rain_mm",
    "water_level_m",
    "pm25_ugm3",
    "tilt_deg",
    "displacement_mm",
    "wire_intact",
    "soil_moisture_pct",
    "vibration_mm_s",
    "pga_gal",
    "speed_kmh",
    "flow_veh_h",
    "occupancy_pct",
    "flood_depth_cm",
    "battery_v",
    "un_number",
];

/// Metrics reported as an increment since the previous report, so their tracks give a rate per hour.
const INCREMENT_METRICS: &[&str] = &["rain_mm"];

/// How a track's points become a value at a report time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Straight lines between points; flat before the first and after the last.
    Linear,
    /// The value of the latest point at or before the report time (switches, counters, `wire_intact`).
    Step,
    /// Points are a rate per hour (linear between points); each report carries the integral since the previous report.
    Rate,
}

/// A point value: numbers for measurements, booleans for switches such as `wire_intact`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Number(f64),
    Bool(bool),
}

/// One metric of one device over scenario time.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub device: String,
    pub metric: String,
    pub mode: Mode,
    /// (scenario offset, value), strictly increasing in time.
    pub points: Vec<(Duration, Value)>,
    /// Uniform noise of ± this many units added to each reported number (drawn from the seed).
    pub noise: f64,
    /// Clamps applied after noise, so a noisy level never goes negative.
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// Positions of a mobile device over time; readings between points are interpolated.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub device: String,
    /// (scenario offset, lat, lon).
    pub points: Vec<(Duration, f64, f64)>,
}

/// What happens to a device at a moment of the scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// The cellular link is gone from `at` until `until`: the firmware keeps measuring and buffers.
    Offline { until: Duration },
    /// The device dies: the connection drops without DISCONNECT (the broker sends the last will) and nothing more is
    /// measured or sent.
    Silent,
}

/// A timed change to one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at: Duration,
    pub device: String,
    pub action: Action,
}

/// Firmware behaviour shared by every device of a scenario.
///
/// Intervals in scenario time (heartbeat) scale with compression; network timings (backoff, keep-alive, drain) are wall
/// time, because the broker and TCP do not run compressed.
#[derive(Debug, Clone, PartialEq)]
pub struct Firmware {
    /// Scenario time between status messages.
    pub heartbeat: Duration,
    /// Store-and-forward capacity in messages: when full, the oldest is dropped and counted.
    pub buffer: usize,
    /// Unacknowledged QoS 1 publishes allowed on the wire at once.
    pub max_inflight: u16,
    /// 0 or 1. QoS 0 messages count as acknowledged once written.
    pub qos: u8,
    /// Each device's clock is off by a fixed amount drawn from ± this (applied to payload `ts`).
    pub clock_skew: Duration,
    /// Chance that a reading is published twice, as flaky firmware does after a watchdog reset.
    pub duplicate_probability: f64,
    /// Range the starting battery voltage is drawn from.
    pub battery_v: (f64, f64),
    /// Battery drain per scenario hour.
    pub battery_drain_v_per_h: f64,
    /// First reconnect delay (wall time); doubles each failed attempt, with jitter.
    pub backoff_initial: Duration,
    /// Ceiling of the reconnect delay (wall time).
    pub backoff_max: Duration,
    /// MQTT keep-alive (wall time): how soon a dead link is noticed.
    pub keep_alive: Duration,
    /// How long, after the last planned message, to keep trying to deliver what is still buffered (wall time).
    pub drain_timeout: Duration,
}

impl Default for Firmware {
    fn default() -> Self {
        Firmware {
            heartbeat: Duration::from_secs(3600),
            buffer: 1000,
            max_inflight: 20,
            qos: 1,
            clock_skew: Duration::from_secs(2),
            duplicate_probability: 0.0,
            battery_v: (3.9, 4.15),
            battery_drain_v_per_h: 0.003,
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(5),
            keep_alive: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// A validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Where it was read from, for later errors (fleet checks).
    pub origin: String,
    pub name: String,
    pub description: String,
    /// Scenario time covered (from offset 0).
    pub span: Duration,
    /// Scenario seconds per wall second.
    pub compression: f64,
    /// Default seed; a run may override it.
    pub seed: u64,
    pub firmware: Firmware,
    pub tracks: Vec<Track>,
    pub routes: Vec<Route>,
    pub events: Vec<Event>,
}

// ---- raw file shapes (deny unknown keys: a typo must be an error naming it) ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    scenario: RawHeader,
    #[serde(default)]
    firmware: Option<RawFirmware>,
    #[serde(default)]
    track: Vec<RawTrack>,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    event: Vec<RawEvent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: String,
    #[serde(default)]
    description: String,
    span: toml::Value,
    compression: f64,
    #[serde(default)]
    seed: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFirmware {
    heartbeat: Option<toml::Value>,
    buffer: Option<i64>,
    max_inflight: Option<i64>,
    qos: Option<i64>,
    clock_skew: Option<toml::Value>,
    duplicate_probability: Option<f64>,
    battery_v: Option<[f64; 2]>,
    battery_drain_v_per_h: Option<f64>,
    backoff_initial: Option<toml::Value>,
    backoff_max: Option<toml::Value>,
    keep_alive: Option<toml::Value>,
    drain_timeout: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrack {
    device: String,
    metric: String,
    #[serde(default)]
    mode: Option<String>,
    points: Vec<toml::Value>,
    #[serde(default)]
    noise: f64,
    min: Option<f64>,
    max: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    device: String,
    points: Vec<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    at: toml::Value,
    device: String,
    action: String,
    until: Option<toml::Value>,
}

/// Validation context: file name plus the error constructor, so every check reads as one line.
struct Check<'a> {
    origin: &'a str,
}

impl Check<'_> {
    fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> SimError {
        SimError::invalid(self.origin, key, reason)
    }

    fn duration(&self, key: &str, v: &toml::Value) -> Result<Duration, SimError> {
        match v {
            toml::Value::String(s) => parse_duration(s).map_err(|r| self.err(key, r)),
            toml::Value::Integer(i) if *i >= 0 => Ok(Duration::from_secs(*i as u64)),
            toml::Value::Float(f) if *f >= 0.0 && f.is_finite() => Ok(Duration::from_secs_f64(*f)),
            other => {
                Err(self.err(key, format!("expected a duration such as \"90s\" or \"6h\", found {}", describe(other))))
            }
        }
    }

    fn offset(&self, key: &str, v: &toml::Value, span: Duration) -> Result<Duration, SimError> {
        let d = self.duration(key, v)?;
        if d > span {
            return Err(self.err(
                key,
                format!("time {} is after the end of the scenario ({})", format_duration(d), format_duration(span)),
            ));
        }
        Ok(d)
    }

    fn device(&self, key: &str, id: &str) -> Result<(), SimError> {
        if valid_device_id(id) {
            Ok(())
        } else {
            Err(self.err(key, format!("`{id}` is not a device id (1-32 ASCII letters and digits)")))
        }
    }

    fn number(&self, key: &str, v: &toml::Value) -> Result<f64, SimError> {
        match v {
            toml::Value::Integer(i) => Ok(*i as f64),
            toml::Value::Float(f) if f.is_finite() => Ok(*f),
            other => Err(self.err(key, format!("expected a number, found {}", describe(other)))),
        }
    }

    /// Point times must rise strictly: two values at one instant, or points out of order, are a mistake in the file.
    fn rising(&self, key: &str, prev: Option<Duration>, t: Duration) -> Result<(), SimError> {
        match prev {
            Some(p) if t <= p => Err(self.err(
                key,
                format!("time {} is not after the previous point's {}", format_duration(t), format_duration(p)),
            )),
            _ => Ok(()),
        }
    }
}

fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the string \"{s}\""),
        toml::Value::Integer(i) => format!("the integer {i}"),
        toml::Value::Float(f) => format!("the number {f}"),
        toml::Value::Boolean(b) => format!("the boolean {b}"),
        toml::Value::Datetime(d) => format!("the date-time {d}"),
        toml::Value::Array(a) => format!("an array of {} items", a.len()),
        toml::Value::Table(_) => "a table".to_string(),
    }
}

impl Scenario {
    /// Parse and validate a scenario. `origin` (usually the file name) starts every error message.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, SimError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| SimError::from_toml(origin, text, e))?;
        let c = Check { origin };

        let h = raw.scenario;
        if h.name.trim().is_empty() {
            return Err(c.err("scenario.name", "must not be empty"));
        }
        let span = c.duration("scenario.span", &h.span)?;
        if span.is_zero() {
            return Err(c.err("scenario.span", "must be longer than zero"));
        }
        if !(h.compression.is_finite() && h.compression > 0.0) {
            return Err(c.err(
                "scenario.compression",
                format!("must be a positive number of scenario seconds per wall second, found {}", h.compression),
            ));
        }

        let firmware = Self::firmware(&c, raw.firmware.unwrap_or_default())?;

        let mut tracks = Vec::with_capacity(raw.track.len());
        for (i, t) in raw.track.into_iter().enumerate() {
            let key = |k: &str| format!("track[{i}].{k}");
            c.device(&key("device"), &t.device)?;
            if !METRICS.contains(&t.metric.as_str()) {
                return Err(c.err(
                    key("metric"),
                    format!("`{}` is not a metric (expected one of {})", t.metric, METRICS.join(", ")),
                ));
            }
            if tracks.iter().any(|o: &Track| o.device == t.device && o.metric == t.metric) {
                return Err(c.err(key("metric"), format!("{} already has a track for `{}`", t.device, t.metric)));
            }
            let is_bool = t.metric == "wire_intact";
            let increment = INCREMENT_METRICS.contains(&t.metric.as_str());
            let mode = match t.mode.as_deref() {
                None if is_bool => Mode::Step,
                None if increment => Mode::Rate,
                None => Mode::Linear,
                Some("linear") => Mode::Linear,
                Some("step") => Mode::Step,
                Some("rate") => Mode::Rate,
                Some(other) => {
                    return Err(c.err(key("mode"), format!("`{other}` is not a mode (expected linear, step or rate)")))
                }
            };
            if is_bool && mode != Mode::Step {
                return Err(c.err(key("mode"), "`wire_intact` is a switch: use mode = \"step\" with true/false points"));
            }
            if increment && mode != Mode::Rate {
                return Err(c.err(
                    key("mode"),
                    format!(
                        "`{}` is an increment since the previous report: use mode = \"rate\" with points per hour",
                        t.metric
                    ),
                ));
            }
            if !(t.noise.is_finite() && t.noise >= 0.0) {
                return Err(c.err(key("noise"), "must be zero or more"));
            }
            if let (Some(lo), Some(hi)) = (t.min, t.max) {
                if lo > hi {
                    return Err(c.err(key("min"), format!("min {lo} is above max {hi}")));
                }
            }
            if t.points.is_empty() {
                return Err(c.err(key("points"), "needs at least one [time, value] point"));
            }
            let mut points = Vec::with_capacity(t.points.len());
            for (j, p) in t.points.iter().enumerate() {
                let pk = format!("track[{i}].points[{j}]");
                let pair = match p {
                    toml::Value::Array(a) if a.len() == 2 => a,
                    other => return Err(c.err(pk, format!("expected [time, value], found {}", describe(other)))),
                };
                let at = c.offset(&pk, &pair[0], span)?;
                c.rising(&pk, points.last().map(|(t, _)| *t), at)?;
                let value = match (&pair[1], is_bool) {
                    (toml::Value::Boolean(b), true) => Value::Bool(*b),
                    (other, true) => {
                        return Err(c.err(pk, format!("`wire_intact` takes true or false, found {}", describe(other))))
                    }
                    (v, false) => {
                        let n = c.number(&pk, v)?;
                        if mode == Mode::Rate && n < 0.0 {
                            return Err(c.err(pk, format!("a rate cannot be negative ({n})")));
                        }
                        Value::Number(n)
                    }
                };
                points.push((at, value));
            }
            tracks.push(Track {
                device: t.device,
                metric: t.metric,
                mode,
                points,
                noise: t.noise,
                min: t.min.or(if mode == Mode::Rate { Some(0.0) } else { None }),
                max: t.max,
            });
        }

        let mut routes: Vec<Route> = Vec::with_capacity(raw.route.len());
        for (i, r) in raw.route.into_iter().enumerate() {
            c.device(&format!("route[{i}].device"), &r.device)?;
            if routes.iter().any(|o| o.device == r.device) {
                return Err(c.err(format!("route[{i}].device"), format!("{} already has a route", r.device)));
            }
            if r.points.is_empty() {
                return Err(c.err(format!("route[{i}].points"), "needs at least one [time, lat, lon] point"));
            }
            let mut points = Vec::with_capacity(r.points.len());
            for (j, p) in r.points.iter().enumerate() {
                let pk = format!("route[{i}].points[{j}]");
                let triple = match p {
                    toml::Value::Array(a) if a.len() == 3 => a,
                    other => return Err(c.err(pk, format!("expected [time, lat, lon], found {}", describe(other)))),
                };
                let at = c.offset(&pk, &triple[0], span)?;
                c.rising(&pk, points.last().map(|(t, _, _)| *t), at)?;
                let (lat, lon) = (c.number(&pk, &triple[1])?, c.number(&pk, &triple[2])?);
                if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                    return Err(c.err(pk, format!("position {lat},{lon} is not on Earth (lat first, then lon)")));
                }
                points.push((at, lat, lon));
            }
            routes.push(Route { device: r.device, points });
        }

        let mut events = Vec::with_capacity(raw.event.len());
        for (i, e) in raw.event.into_iter().enumerate() {
            let key = |k: &str| format!("event[{i}].{k}");
            c.device(&key("device"), &e.device)?;
            let at = c.offset(&key("at"), &e.at, span)?;
            let action = match (e.action.as_str(), &e.until) {
                ("offline", Some(u)) => {
                    let until = c.offset(&key("until"), u, span)?;
                    if until <= at {
                        return Err(c.err(
                            key("until"),
                            format!("{} is not after `at` ({})", format_duration(until), format_duration(at)),
                        ));
                    }
                    Action::Offline { until }
                }
                ("offline", None) => {
                    return Err(c.err(key("until"), "an offline event needs `until` (when the link comes back)"))
                }
                ("silent", None) => Action::Silent,
                ("silent", Some(_)) => {
                    return Err(c.err(key("until"), "a silent device never comes back: remove `until`"))
                }
                (other, _) => {
                    return Err(c.err(key("action"), format!("`{other}` is not an action (expected offline or silent)")))
                }
            };
            events.push(Event { at, device: e.device, action });
        }

        Ok(Scenario {
            origin: origin.to_string(),
            name: h.name,
            description: h.description,
            span,
            compression: h.compression,
            seed: h.seed,
            firmware,
            tracks,
            routes,
            events,
        })
    }

    fn firmware(c: &Check, f: RawFirmware) -> Result<Firmware, SimError> {
        let mut fw = Firmware::default();
        let dur = |key: &str, v: &Option<toml::Value>, into: &mut Duration| -> Result<(), SimError> {
            if let Some(v) = v {
                *into = c.duration(&format!("firmware.{key}"), v)?;
            }
            Ok(())
        };
        dur("heartbeat", &f.heartbeat, &mut fw.heartbeat)?;
        dur("clock_skew", &f.clock_skew, &mut fw.clock_skew)?;
        dur("backoff_initial", &f.backoff_initial, &mut fw.backoff_initial)?;
        dur("backoff_max", &f.backoff_max, &mut fw.backoff_max)?;
        dur("keep_alive", &f.keep_alive, &mut fw.keep_alive)?;
        dur("drain_timeout", &f.drain_timeout, &mut fw.drain_timeout)?;
        if fw.heartbeat.is_zero() {
            return Err(c.err("firmware.heartbeat", "must be longer than zero"));
        }
        if fw.backoff_initial.is_zero() || fw.backoff_max < fw.backoff_initial {
            return Err(c.err(
                "firmware.backoff_max",
                "backoff_initial must be above zero and backoff_max at least backoff_initial",
            ));
        }
        if fw.keep_alive < Duration::from_secs(1) {
            return Err(c.err("firmware.keep_alive", "must be at least 1s (MQTT keep-alive is in whole seconds)"));
        }
        if let Some(b) = f.buffer {
            if !(1..=10_000_000).contains(&b) {
                return Err(c.err("firmware.buffer", format!("must be between 1 and 10000000 messages, found {b}")));
            }
            fw.buffer = b as usize;
        }
        if let Some(m) = f.max_inflight {
            if !(1..=u16::MAX as i64).contains(&m) {
                return Err(c.err("firmware.max_inflight", format!("must be between 1 and 65535, found {m}")));
            }
            fw.max_inflight = m as u16;
        }
        if let Some(q) = f.qos {
            if !(0..=1).contains(&q) {
                return Err(c.err("firmware.qos", format!("must be 0 or 1, found {q}")));
            }
            fw.qos = q as u8;
        }
        if let Some(p) = f.duplicate_probability {
            if !(0.0..=1.0).contains(&p) {
                return Err(c.err("firmware.duplicate_probability", format!("must be between 0 and 1, found {p}")));
            }
            fw.duplicate_probability = p;
        }
        if let Some([lo, hi]) = f.battery_v {
            if !(0.0 < lo && lo <= hi && hi < 100.0) {
                return Err(c.err(
                    "firmware.battery_v",
                    format!("expected [low, high] volts with 0 < low <= high, found [{lo}, {hi}]"),
                ));
            }
            fw.battery_v = (lo, hi);
        }
        if let Some(d) = f.battery_drain_v_per_h {
            if !(d.is_finite() && d >= 0.0) {
                return Err(c.err("firmware.battery_drain_v_per_h", "must be zero or more"));
            }
            fw.battery_drain_v_per_h = d;
        }
        Ok(fw)
    }

    /// Wall time a run takes at the scenario's own compression (the demo sizes its wait with this).
    pub fn duration(&self) -> Duration {
        self.wall_duration(self.compression)
    }

    /// Wall time at another compression.
    pub fn wall_duration(&self, compression: f64) -> Duration {
        Duration::from_secs_f64(self.span.as_secs_f64() / compression)
    }

    /// Ids of the devices the scenario plays, sorted.
    pub fn device_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .tracks
            .iter()
            .map(|t| t.device.clone())
            .chain(self.routes.iter().map(|r| r.device.clone()))
            .chain(self.events.iter().map(|e| e.device.clone()))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Check the scenario against the devices that exist: every device is in the registry, every track's metric is one
    /// the sensor reports, routes belong to mobile units.
    pub fn check_fleet(&self, fleet: &Fleet) -> Result<(), SimError> {
        let c = Check { origin: &self.origin };
        let known = || fleet.devices().map(|d| d.id.as_str()).collect::<Vec<_>>().join(", ");
        for (i, t) in self.tracks.iter().enumerate() {
            let Some(d) = fleet.device(&t.device) else {
                return Err(c.err(
                    format!("track[{i}].device"),
                    format!("`{}` is not in the sensor registry (known: {})", t.device, known()),
                ));
            };
            if !d.metrics.is_empty() && !d.metrics.contains(&t.metric) {
                return Err(c.err(
                    format!("track[{i}].metric"),
                    format!(
                        "{} ({}) does not report `{}` (it reports {})",
                        d.id,
                        d.kind,
                        t.metric,
                        d.metrics.join(", ")
                    ),
                ));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let Some(d) = fleet.device(&r.device) else {
                return Err(c.err(
                    format!("route[{i}].device"),
                    format!("`{}` is not in the sensor registry (known: {})", r.device, known()),
                ));
            };
            if !d.mobile {
                return Err(c.err(
                    format!("route[{i}].device"),
                    format!("{} is a fixed {}; only mobile units have routes", d.id, d.kind),
                ));
            }
        }
        for (i, e) in self.events.iter().enumerate() {
            if fleet.device(&e.device).is_none() {
                return Err(c.err(
                    format!("event[{i}].device"),
                    format!("`{}` is not in the sensor registry (known: {})", e.device, known()),
                ));
            }
        }
        Ok(())
    }
}

/// Value of a linear or step track at `t` (clamped to the first/last point outside the points' range).
pub(crate) fn sample(points: &[(Duration, Value)], mode: Mode, t: Duration) -> Value {
    let idx = points.partition_point(|(pt, _)| *pt <= t);
    if idx == 0 {
        return points[0].1;
    }
    let (t0, v0) = points[idx - 1];
    if mode == Mode::Step || idx == points.len() {
        return v0;
    }
    let (t1, v1) = points[idx];
    match (v0, v1) {
        (Value::Number(a), Value::Number(b)) => {
            let f = (t - t0).as_secs_f64() / (t1 - t0).as_secs_f64();
            Value::Number(a + (b - a) * f)
        }
        _ => v0,
    }
}

/// Integral, in value·hours, of a piecewise-linear rate (per hour) from offset 0 to `t`; flat extension outside the
/// points (so rain before the first point falls at the first point's rate, and a negative `t` integrates backwards).
pub(crate) fn cumulative(points: &[(Duration, Value)], t_h: f64) -> f64 {
    let num = |v: Value| if let Value::Number(n) = v { n } else { 0.0 };
    let pts: Vec<(f64, f64)> = points.iter().map(|(t, v)| (t.as_secs_f64() / 3600.0, num(*v))).collect();
    let (first_t, first_v) = pts[0];
    // Area from 0 to first point (flat at first value), signed so that t < first_t works too.
    let mut area = 0.0;
    let upto = t_h.min(first_t);
    area += first_v * upto; // from 0 to min(t, first)
    if t_h <= first_t {
        return area;
    }
    for w in pts.windows(2) {
        let ((a, va), (b, vb)) = (w[0], w[1]);
        if t_h <= a {
            break;
        }
        let end = t_h.min(b);
        let v_end = va + (vb - va) * (end - a) / (b - a);
        area += (va + v_end) / 2.0 * (end - a);
        if t_h <= b {
            return area;
        }
    }
    let (last_t, last_v) = *pts.last().unwrap();
    if t_h > last_t {
        area += last_v * (t_h - last_t);
    }
    area
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(v: &[(u64, f64)]) -> Vec<(Duration, Value)> {
        v.iter().map(|(h, x)| (Duration::from_secs(h * 3600), Value::Number(*x))).collect()
    }

    #[test]
    fn linear_and_step_sampling() {
        let p = pts(&[(1, 0.0), (3, 10.0)]);
        let at = |h: f64| Duration::from_secs_f64(h * 3600.0);
        assert_eq!(sample(&p, Mode::Linear, at(0.0)), Value::Number(0.0));
        assert_eq!(sample(&p, Mode::Linear, at(2.0)), Value::Number(5.0));
        assert_eq!(sample(&p, Mode::Linear, at(9.0)), Value::Number(10.0));
        assert_eq!(sample(&p, Mode::Step, at(2.9)), Value::Number(0.0));
        assert_eq!(sample(&p, Mode::Step, at(3.0)), Value::Number(10.0));
    }

    #[test]
    fn rate_integral_is_exact_for_trapezoids() {
        let p = pts(&[(0, 0.0), (2, 10.0), (4, 10.0)]);
        assert!((cumulative(&p, 2.0) - 10.0).abs() < 1e-9);
        assert!((cumulative(&p, 4.0) - 30.0).abs() < 1e-9);
        assert!((cumulative(&p, 5.0) - 40.0).abs() < 1e-9, "flat after the last point");
        assert!((cumulative(&p, 1.0) - 2.5).abs() < 1e-9);
        let q = pts(&[(1, 6.0)]);
        assert!((cumulative(&q, 3.0) - 18.0).abs() < 1e-9);
        assert!((cumulative(&q, -0.5) + 3.0).abs() < 1e-9, "before the start, rain falls at the first rate");
    }
}
