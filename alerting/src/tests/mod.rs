//! Cross-module tests of the rule engine and the alert book, on the project's real configuration (rules, zones,
//! sensors): scenario replays asserting exact alert sequences (`scenarios.rs`), restarts — journal replay, torn
//! lines, snapshots — and reloads (`restart.rs`), properties against naive recomputation (`properties.rs`), and the
//! shipped rules' levels against the shipped CAP templates (`templates.rs`).

mod properties;
mod public;
mod restart;
mod scenarios;
mod templates;
mod traffic;

use std::path::{Path, PathBuf};

use geo_index::{GeoIndex, LoadPolicy, Resolution};
use ingest::reading::Position;
use ingest::{Metric, Reading, Sensor, SensorKind, SensorRegistry};

use crate::alert::{Alert, AlertBook};
use crate::engine::{RuleEngine, ZoneRef};
use crate::rules::RuleSet;
use crate::types::{Finding, Mode};

pub(crate) const MIN: i64 = 60_000;
pub(crate) const HOUR: i64 = 3_600_000;
/// 2025-11-26 00:00 +08:00: scenario time zero.
pub(crate) const T0: i64 = 1_764_086_400_000;

pub(crate) fn default_rules() -> RuleSet {
    RuleSet::from_toml(include_str!("../../../config/rules.toml"), Path::new("config/rules.toml")).unwrap()
}

pub(crate) fn geo() -> GeoIndex {
    let mut geo = GeoIndex::new(Resolution::try_from(9u8).unwrap());
    geo.load_zones(include_str!("../../../config/zones.geojson"), LoadPolicy::StopOnFirst).unwrap();
    geo
}

pub(crate) fn registry() -> SensorRegistry {
    SensorRegistry::from_toml(include_str!("../../../config/sensors.toml"), Path::new("config/sensors.toml")).unwrap()
}

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dc-alerting-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The server's hot path in miniature: registry → geo index → engine → book, recording every alert change.
pub(crate) struct Harness {
    pub geo: GeoIndex,
    pub sensors: Vec<Sensor>,
    pub engine: RuleEngine,
    pub book: AlertBook,
    pub mode: Mode,
    pub changes: Vec<Alert>,
    pub findings: Vec<Finding>,
    /// The replay's wall clock: the latest step time so far (readings, ticks, forecasts arrive in time order and are
    /// decided at once), so issue time equals event time and replays stay deterministic.
    pub issue_ms: i64,
}

impl Harness {
    pub fn new() -> Self {
        Self::with(default_rules(), AlertBook::new("TW-DC"))
    }

    pub fn with(rules: RuleSet, book: AlertBook) -> Self {
        let geo = geo();
        let mut engine = RuleEngine::new(rules, HOUR);
        let warnings = engine.set_zones(geo.zones());
        // Only the river reaches and road segments lack rain thresholds, and no rain rule scopes them.
        assert!(warnings.is_empty(), "{warnings:?}");
        let sensors = registry().iter().cloned().collect();
        Harness {
            geo,
            sensors,
            engine,
            book,
            mode: Mode::Actual,
            changes: Vec::new(),
            findings: Vec::new(),
            issue_ms: 0,
        }
    }

    /// Adds a sensor that `config/sensors.toml` does not have (a second tilt meter, a second truck).
    pub fn add_sensor(&mut self, id: &str, kind: SensorKind, lat: f64, lon: f64, interval_s: u32) {
        self.sensors.push(Sensor {
            id: id.into(),
            kind,
            lat,
            lon,
            interval_s,
            agency: "test".into(),
            metrics: Vec::new(),
            zone: None,
            mobile: kind == SensorKind::HazmatGps,
            retired: false,
        });
    }

    pub fn sensor(&self, id: &str) -> Sensor {
        self.sensors.iter().find(|s| s.id == id).cloned().unwrap_or_else(|| panic!("no sensor {id}"))
    }

    pub fn read(&mut self, id: &str, ts: i64, metric: Metric, value: f64) -> Vec<Alert> {
        self.read_at(id, ts, metric, value, None)
    }

    /// A reading stamped `ts` that arrives at `arrived` (a backlog, a replay): windows follow `ts`, the deadman and
    /// issue time follow `arrived`.
    pub fn read_arrived(&mut self, id: &str, ts: i64, arrived: i64, metric: Metric, value: f64) -> Vec<Alert> {
        let sensor = self.sensor(id);
        let reading = Reading { sensor_id: id.into(), ts_ms: ts, metric, value, position: None };
        let zones: Vec<ZoneRef<'_>> = self
            .geo
            .zones_containing(sensor.lat, sensor.lon)
            .into_iter()
            .map(|z| ZoneRef { id: &z.id, kind: z.kind })
            .collect();
        let mut out = Vec::new();
        self.engine.evaluate_arrived(&reading, arrived, &sensor, &zones, &mut out);
        self.issue_ms = self.issue_ms.max(arrived);
        self.fold(out)
    }

    pub fn read_at(&mut self, id: &str, ts: i64, metric: Metric, value: f64, at: Option<(f64, f64)>) -> Vec<Alert> {
        let sensor = self.sensor(id);
        let reading = Reading {
            sensor_id: id.into(),
            ts_ms: ts,
            metric,
            value,
            position: at.map(|(lat, lon)| Position { lat, lon }),
        };
        let (lat, lon) = at.unwrap_or((sensor.lat, sensor.lon));
        let zones: Vec<ZoneRef<'_>> =
            self.geo.zones_containing(lat, lon).into_iter().map(|z| ZoneRef { id: &z.id, kind: z.kind }).collect();
        let mut out = Vec::new();
        self.engine.evaluate(&reading, &sensor, &zones, &mut out);
        self.issue_ms = self.issue_ms.max(ts);
        self.fold(out)
    }

    pub fn tick(&mut self, now: i64) -> Vec<Alert> {
        let mut out = Vec::new();
        self.engine.tick(now, &mut out);
        self.issue_ms = self.issue_ms.max(now);
        self.fold(out)
    }

    pub fn forecast(&mut self, zone: &str, value: f64, ts: i64) -> Vec<Alert> {
        let mut out = Vec::new();
        self.engine.post_forecast(zone, value, ts, &mut out).unwrap();
        self.issue_ms = self.issue_ms.max(ts);
        self.fold(out)
    }

    pub fn fold(&mut self, out: Vec<Finding>) -> Vec<Alert> {
        self.findings.extend(out.iter().cloned());
        let changed = self.book.apply_all(out, self.mode, self.issue_ms);
        self.changes.extend(changed.iter().cloned());
        changed
    }

    /// The alert changes of some rules as "hh:mm change rule@zone level vN" lines.
    pub fn log(&self, rules: &[&str]) -> Vec<String> {
        self.changes.iter().filter(|a| rules.contains(&a.rule_id.as_str())).map(line).collect()
    }
}

pub(crate) fn line(a: &Alert) -> String {
    let t = a.issued_ms - T0;
    let (h, m) = (t.div_euclid(HOUR), t.rem_euclid(HOUR) / MIN);
    format!("{h:02}:{m:02} {:?} {}@{} {} v{}", a.change, a.rule_id, a.area_id, a.level.name, a.version)
}
