//! The rule engine: readings, ticks and forecasts in; level changes ([`Finding`]s) out.
//!
//! Pure and deterministic: windows follow reading timestamps (event time), never the wall clock. The only other
//! clock is the caller's: the `now` it passes to [`RuleEngine::tick`] and the arrival time it passes with each
//! reading ([`RuleEngine::evaluate_arrived`]), which is what deadman rules run on — a sensor is silent when nothing
//! has *arrived* from it for a while, whatever its readings' timestamps say, so a replay or a gateway flushing a
//! backlog does not make live sensors look silent. The same inputs in the same order give the same findings, so
//! scenario replays are tests. Findings carry event time (`observed_ms`); issue time is the alert book's input.
//!
//! Layout:
//! - `engine.rs` (this file): [`RuleEngine`] — per-reading evaluation, `tick` (deadman, forecast expiry),
//!   `post_forecast`, `set_external` (partner agencies' warnings), zone-wide rules (correlation, composite) settled
//!   after every step, `reload`, adopting levels from the alert book after a restart.
//! - `engine/plan.rs`: the rule set compiled for evaluation (rules by metric, resolved conditions, series layout).
//! - `engine/windows.rs`: fixed-size series state — accumulation buckets, rate samples, duplicate filter.
//! - `engine/state.rs`: per-sensor, per-zone and per-area state, and its size accounting.
//! - `engine/snapshot.rs`: [`EngineSnapshot`] — the serialisable state, and restore under (possibly changed) rules.
//!
//! Late readings: a reading older than its series' newest by more than `max_lateness` is counted and dropped; an
//! earlier-but-in-bound one is placed where it belongs (its bucket, its place among rate samples), and levels are
//! re-evaluated as of the series' newest reading. A repeated timestamp (QoS 1 redelivery) is counted once.
//!
//! When things are decided: per-sensor rules on that sensor's readings; zone-wide rules (correlation, composite)
//! right after any input changes in the same step; geofence rules on the vehicle's next report (they read other
//! rules' zone state but are not re-run when it changes); deadman rules and forecast expiry on `tick`. A rate with too
//! little history (first 30 minutes, a gap) keeps the current level rather than clearing it: unknown is not safe.
//!
//! Restart: `restore` a snapshot (windows, levels), then `adopt_levels` from the alert book — its journal is newer
//! than any snapshot, so levels follow it and nothing already raised is raised again. Readings between the last
//! snapshot and a crash are missing from the windows (snapshot every minute or so: at 10 000 sensors taking one
//! costs the rules thread ~90 ms on a loaded 2-core machine; serialising and writing it can go to another thread).

mod plan;
mod snapshot;
mod state;
mod traffic;
mod windows;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use geo_index::ZoneKind;
use ingest::{Metric, Reading, Sensor};

use crate::alert::AlertBook;
use crate::rules::{Direction, Margin, RuleKind, RuleSet, TrafficClass};
use crate::types::{ExternalAlert, Finding, LevelInfo, Mode, Publish, Trigger};

pub use snapshot::{load_engine_snapshot, save_engine_snapshot, EngineSnapshot, RestoreReport};
pub use state::StateBytes;
pub use traffic::{hour_of_week, HourNormal, TrafficBaseline};
pub use windows::{Buckets, Dedup, Placement, RateRing};

use plan::{CLimit, CRule, Clause, Cmp, Cond, Plan, EXTERNAL, FORECAST, NONE};
use state::{AreaAgg, AreaSlot, Member, SensorSlot, Series, ZoneSlot, AREA_MEMBER, NO_TS};

/// A zone the reading's position falls in, as the caller's geo index found it.
#[derive(Debug, Clone, Copy)]
pub struct ZoneRef<'a> {
    pub id: &'a str,
    pub kind: ZoneKind,
}

/// Counters for `/metrics` (monotonic over the process; restored from snapshots).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EngineCounters {
    pub evaluated: u64,
    /// Older than the lateness bound behind the series' newest reading: dropped.
    pub late_dropped: u64,
    /// Late but within the bound: placed where they belong.
    pub late_placed: u64,
    /// Within the bound but older than every window (nothing to add them to).
    pub outside_windows: u64,
    pub duplicates: u64,
    /// Accumulation readings below zero (counted as zero) or too large for a bucket.
    pub clamped: u64,
    /// Conditions against a `zone.<name>` limit the zone does not define (the condition does not hold).
    pub missing_zone_thresholds: u64,
    pub findings: u64,
    pub forecasts: u64,
    pub forecasts_stale: u64,
}

/// Why a forecast was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForecastError {
    #[error("unknown zone `{0}`")]
    UnknownZone(String),
    #[error("forecast value {0} must be a finite number ≥ 0")]
    BadValue(f64),
}

type AreaMap = HashMap<u64, AreaAgg, ahash::RandomState>;

/// The external warning behind an `external` condition in a zone (its values go into the composite's finding).
#[derive(Debug, Clone, PartialEq)]
struct ExternalHit {
    id: String,
    source: String,
    sender_name: Option<String>,
}

fn area_key(rule: u16, zone: u32) -> u64 {
    (u64::from(rule) << 32) | u64::from(zone)
}

fn key_parts(key: u64) -> (u16, u32) {
    ((key >> 32) as u16, key as u32)
}

pub struct RuleEngine {
    plan: Plan,
    /// Interned sensors, in first-seen order (the iteration order of `tick`, so it is deterministic).
    sensors: Vec<SensorSlot>,
    sensor_index: HashMap<Box<str>, u32, ahash::RandomState>,
    zones: Vec<ZoneSlot>,
    zone_index: HashMap<Box<str>, u32, ahash::RandomState>,
    /// Per (rule, zone): who is at a level there. Read by correlation, composite, geofence and deadman conditions.
    areas: AreaMap,
    /// Per zone: the latest forecast posted and its time.
    forecasts: BTreeMap<u32, (f64, i64)>,
    /// Partner agencies' active warnings as last given to `set_external` (kept so a reload can re-match them), and
    /// the time they were matched at.
    external_alerts: Vec<ExternalAlert>,
    external_at_ms: i64,
    /// (index into `Plan::externals`, zone) → the warning that satisfies that `external` condition there.
    external_cover: BTreeMap<(u16, u32), ExternalHit>,
    /// Levels from the alert book not yet matched to engine state: (rule id, zone id, contributor) → level.
    adopted: HashMap<(String, String, String), u8>,
    /// (rule, zone) areas changed in the current step; zone-wide rules reading them are re-evaluated.
    touched: Vec<(u16, u32)>,
    max_lateness_ms: i64,
    /// The latest event time the engine has seen (readings, ticks, forecasts).
    clock_ms: i64,
    /// Event time of the input being evaluated (the reading, the tick, the forecast): the `observed_ms` of the
    /// zone-wide findings it settles, so a composite tipped by a backlogged reading says how old its evidence is.
    step_ms: i64,
    pub counters: EngineCounters,
    /// Vehicle detectors' recent readings and classes (`traffic` rules), and their learned normal speeds.
    traffic: traffic::TrafficBoard,
    /// Road segments (by zone index), kept whole: a detector's place along the centre line orders it on the road.
    roads: HashMap<u32, geo_index::Zone, ahash::RandomState>,
    /// Road segment → (zone, metres) of every zone within `MAX_NEAR_M` (itself at 0): what `within_m` conditions
    /// read. Distances are fixed by the zones, not the rules, so a reload keeps them.
    near: HashMap<u32, Vec<(u32, f64)>, ahash::RandomState>,
    /// Zone → the road segments listing it in `near`: whose `within_m` rules a change there re-evaluates.
    near_rev: HashMap<u32, Vec<u32>, ahash::RandomState>,
}

/// The farthest a `within_m` condition may reach (validated in `rules.rs`).
const MAX_NEAR_M: f64 = 50_000.0;

/// Which per-sensor rules an evaluation runs (named rather than passed as a slice: the slice would borrow the plan
/// while the engine is borrowed mutably).
#[derive(Clone, Copy)]
enum RuleLists {
    Metric(usize),
    Any,
    Both(usize),
}

/// What a per-sensor evaluation reads, gathered before the sensor's slots are borrowed mutably.
struct Inputs<'a> {
    sums: &'a [f64],
    windows: &'a [u32],
    latest: f64,
    rate: Option<f64>,
    silent: Option<f64>,
    speed: f32,
    now: i64,
    /// Traffic rules: the detector's class per road zone.
    traffic: &'a [(u32, TrafficClass)],
    /// Traffic rules: the detector's newest (speed, flow, occupancy).
    detector: Option<(f64, f64, f64)>,
}

/// Everything a condition can look at.
struct Ctx<'a> {
    inputs: Option<&'a Inputs<'a>>,
    rule: &'a CRule,
    zone: &'a ZoneSlot,
    zone_idx: u32,
    areas: &'a AreaMap,
    forecast: Option<f64>,
    /// Which `external` conditions hold where (zone-wide rules only; empty for per-sensor ones).
    external: &'a BTreeMap<(u16, u32), ExternalHit>,
    /// How long the vehicle has been stopped inside this zone.
    stopped_ms: Option<i64>,
    /// Zones within reach of this one, with their distance (road segments; empty elsewhere).
    near: &'a [(u32, f64)],
}

impl RuleEngine {
    pub fn new(rules: RuleSet, max_lateness_ms: i64) -> Self {
        Self {
            plan: Plan::compile(rules),
            sensors: Vec::new(),
            sensor_index: HashMap::default(),
            zones: Vec::new(),
            zone_index: HashMap::default(),
            areas: AreaMap::default(),
            forecasts: BTreeMap::new(),
            external_alerts: Vec::new(),
            external_at_ms: NO_TS,
            external_cover: BTreeMap::new(),
            adopted: HashMap::new(),
            touched: Vec::new(),
            max_lateness_ms: max_lateness_ms.max(0),
            clock_ms: NO_TS,
            step_ms: NO_TS,
            counters: EngineCounters::default(),
            traffic: traffic::TrafficBoard::default(),
            roads: HashMap::default(),
            near: HashMap::default(),
            near_rev: HashMap::default(),
        }
    }

    /// Hands in the detectors' normal speeds per hour of the week (learnt by the caller from the readings store with
    /// [`TrafficBaseline::learn`], at start and then periodically). Without one, no detector is ever "slowed".
    pub fn set_traffic_baseline(&mut self, baseline: TrafficBaseline) {
        self.traffic.set_baseline(baseline);
    }

    /// How many detectors the current traffic baseline knows.
    pub fn traffic_baseline_detectors(&self) -> usize {
        self.traffic.baseline().detectors()
    }

    pub fn rules(&self) -> &RuleSet {
        &self.plan.set
    }

    /// Tells the engine every zone (kind and `thresholds`), so that `"zone.<name>"` limits resolve and forecasts can
    /// be posted for zones no reading has touched yet. Returns warnings for the operator log: rules whose zone
    /// limits some zone in their scope lacks, scope `zone_ids` that name no zone.
    pub fn set_zones<'a>(&mut self, zones: impl IntoIterator<Item = &'a geo_index::Zone>) -> Vec<String> {
        let zones: Vec<&geo_index::Zone> = zones.into_iter().collect();
        let mut interned = Vec::with_capacity(zones.len());
        for z in &zones {
            interned.push(self.install_zone(&z.id, Some(z.kind), z.thresholds.clone()));
        }
        self.place_roads(&zones, &interned);
        let mut warnings = Vec::new();
        for rule in &self.plan.set.rules {
            for id in &rule.scope.zone_ids {
                if !self.zone_index.contains_key(id.as_str()) {
                    warnings.push(format!("rule `{}`: scope.zone_ids names no zone `{id}`", rule.id));
                }
            }
        }
        for (ri, rule) in self.plan.rules.iter().enumerate() {
            let keys: BTreeSet<u16> = rule
                .levels
                .iter()
                .flat_map(|l| l.all.iter().chain(l.any.iter()))
                .flat_map(|c| c.conds.iter())
                .filter_map(|c| match c {
                    Cond::Window { limit: CLimit::Zone(k), .. }
                    | Cond::Latest { limit: CLimit::Zone(k), .. }
                    | Cond::Rate { limit: CLimit::Zone(k), .. }
                    | Cond::Forecast { limit: CLimit::Zone(k) } => Some(*k),
                    _ => None,
                })
                .collect();
            for z in &self.zones {
                if !rule.admits_zone(&z.id, z.kind) {
                    continue;
                }
                // A zone may define only some of the thresholds a rule offers (`rain_24h_mm` but not `rain_1h_mm`);
                // it is worth a warning only when it defines none of them, so the rule can never fire there.
                let missing = |k: &u16| z.thresholds.get(*k as usize).is_none_or(|v| v.is_nan());
                if !keys.is_empty() && keys.iter().all(missing) {
                    let names: Vec<&str> =
                        keys.iter().map(|&k| self.plan.threshold_keys[k as usize].as_str()).collect();
                    warnings.push(format!(
                        "rule `{}`: zone `{}` has none of the thresholds {names:?}; the rule never fires there",
                        self.plan.rules[ri].id, z.id
                    ));
                }
            }
        }
        warnings
    }

    /// Keeps the road segments and what lies within reach of each (`within_m` conditions). Road segments are few
    /// beside the other zones; each is measured against every zone whose bounding box comes within reach.
    fn place_roads(&mut self, zones: &[&geo_index::Zone], interned: &[u32]) {
        for (i, road) in zones.iter().enumerate() {
            if road.kind != ZoneKind::RoadSegment {
                continue;
            }
            let r = interned[i];
            self.roads.insert(r, (*road).clone());
            let list: Vec<(u32, f64)> = zones
                .iter()
                .enumerate()
                .filter_map(|(j, other)| {
                    let d = if i == j { Some(0.0) } else { road.within_m(other, MAX_NEAR_M) };
                    d.map(|d| (interned[j], d))
                })
                .collect();
            for &(z, _) in &list {
                let back = self.near_rev.entry(z).or_default();
                if !back.contains(&r) {
                    back.push(r);
                }
            }
            self.near.insert(r, list);
        }
    }

    /// Puts a detector on the road segments it stands in, at its place along each.
    fn place_detector(&mut self, s: u32, sensor: &Sensor) {
        let zones: Vec<(u32, Option<f64>)> = self.sensors[s as usize]
            .zones
            .iter()
            .filter(|&&z| self.zones[z as usize].kind == Some(ZoneKind::RoadSegment))
            .map(|&z| (z, self.roads.get(&z).and_then(|road| road.position_along_m(sensor.lat, sensor.lon))))
            .collect();
        self.traffic.place(s, &zones);
    }

    fn install_zone(&mut self, id: &str, kind: Option<ZoneKind>, raw: BTreeMap<String, f64>) -> u32 {
        let thresholds = self.plan.threshold_keys.iter().map(|k| raw.get(k).copied().unwrap_or(f64::NAN)).collect();
        let scoped: Box<[u16]> = (0..self.plan.rules.len() as u16)
            .filter(|&r| self.plan.rules[r as usize].zone_ids.iter().any(|z| z == id))
            .collect();
        match self.zone_index.get(id) {
            Some(&i) => {
                let z = &mut self.zones[i as usize];
                if kind.is_some() {
                    z.kind = kind;
                }
                z.raw = raw;
                z.thresholds = thresholds;
                z.scoped = scoped;
                i
            }
            None => {
                let i = self.zones.len() as u32;
                self.zones.push(ZoneSlot { id: id.into(), kind, raw, thresholds, scoped });
                self.zone_index.insert(id.into(), i);
                i
            }
        }
    }

    fn zone_for(&mut self, id: &str, kind: Option<ZoneKind>) -> u32 {
        match self.zone_index.get(id) {
            Some(&i) => {
                if self.zones[i as usize].kind.is_none() {
                    self.zones[i as usize].kind = kind;
                }
                i
            }
            None => self.install_zone(id, kind, BTreeMap::new()),
        }
    }

    fn sensor_for(&mut self, sensor: &Sensor) -> u32 {
        let i = match self.sensor_index.get(sensor.id.as_str()) {
            Some(&i) => i,
            None => {
                let i = self.sensors.len() as u32;
                self.sensors.push(SensorSlot::new(&sensor.id, sensor.kind, i64::from(sensor.interval_s) * 1000));
                self.sensor_index.insert(sensor.id.as_str().into(), i);
                i
            }
        };
        // The registry may change a sensor (operators edit it); kind and interval follow.
        let slot = &mut self.sensors[i as usize];
        slot.kind = sensor.kind;
        slot.interval_ms = i64::from(sensor.interval_s.max(1)) * 1000;
        i
    }

    /// Points the sensor at `zones`; returns whether they changed.
    fn place(&mut self, s: u32, zones: &[ZoneRef<'_>]) -> bool {
        let slot = &self.sensors[s as usize];
        let same = slot.zones.len() == zones.len()
            && slot.zones.iter().zip(zones).all(|(&z, r)| *self.zones[z as usize].id == *r.id);
        if same {
            return false;
        }
        let interned: Vec<u32> = zones.iter().map(|r| self.zone_for(r.id, Some(r.kind))).collect();
        self.sensors[s as usize].zones = interned;
        true
    }

    /// Starts watching a sensor that has not reported yet, as if seen at `now_ms`: the deadman rule then notices
    /// if it never reports. Optional; sensors are also learnt from their first reading.
    pub fn watch(&mut self, sensor: &Sensor, zones: &[ZoneRef<'_>], now_ms: i64) {
        let s = self.sensor_for(sensor);
        self.place(s, zones);
        let slot = &mut self.sensors[s as usize];
        if slot.watch_from_ms == NO_TS || slot.watch_from_ms < now_ms {
            slot.watch_from_ms = slot.watch_from_ms.max(now_ms);
        }
    }

    /// Evaluates one reading of `sensor` standing in `zones` as if it arrived at its own timestamp (replays, the
    /// catch-up from the readings store, tests); appends level changes to `out`.
    pub fn evaluate(&mut self, reading: &Reading, sensor: &Sensor, zones: &[ZoneRef<'_>], out: &mut Vec<Finding>) {
        self.evaluate_arrived(reading, reading.ts_ms, sensor, zones, out);
    }

    /// Evaluates one reading that arrived at `arrived_ms` (the ingest clock, the same clock as `tick`'s `now`):
    /// windows and levels follow the reading's event time, the deadman follows arrival.
    pub fn evaluate_arrived(
        &mut self,
        reading: &Reading,
        arrived_ms: i64,
        sensor: &Sensor,
        zones: &[ZoneRef<'_>],
        out: &mut Vec<Finding>,
    ) {
        self.counters.evaluated += 1;
        let m = plan::metric_index(reading.metric);
        let has_rules = !self.plan.by_metric[m].is_empty() || !self.plan.any_metric.is_empty();
        if !has_rules && self.plan.deadman.is_empty() {
            return;
        }
        let s = self.sensor_for(sensor);
        let moved = self.place(s, zones);
        let ts = reading.ts_ms;
        self.clock_ms = self.clock_ms.max(ts);
        self.step_ms = ts;
        {
            let slot = &mut self.sensors[s as usize];
            slot.last_seen_ms = slot.last_seen_ms.max(ts);
            slot.last_arrived_ms = slot.last_arrived_ms.max(arrived_ms);
            match reading.metric {
                Metric::SpeedKmh if ts >= slot.speed_ts => {
                    slot.speed_kmh = reading.value as f32;
                    slot.speed_ts = ts;
                }
                Metric::UnNumber => slot.cargo = reading.value.clamp(0.0, 9999.0) as u16,
                _ => {}
            }
        }

        // Vehicle detectors: their reading sets and class, before the rules read it.
        if sensor.kind == ingest::SensorKind::VehicleDetector && !self.plan.traffic.is_empty() {
            if moved || !self.traffic.is_placed(s) {
                self.place_detector(s, sensor);
            }
            let settings = &self.plan.set.traffic;
            if self.traffic.record(s, reading.metric, ts, reading.value, settings) {
                self.traffic.classify(s, settings, &sensor.id);
            }
        }

        // The series: lateness, duplicates, windows.
        let mut series_idx = None;
        if self.plan.series[m].tracked {
            match self.record(s, reading) {
                Some(i) => series_idx = Some(i),
                None => return,
            }
        }

        if has_rules {
            self.evaluate_sensor_rules(s, series_idx, RuleLists::Both(m), moved, Trigger::Reading, out);
        }
        if self.sensors[s as usize].deadman_raised {
            // A report from a sensor the deadman flagged: it is alive again (as of its arrival).
            let now = self.sensors[s as usize].last_arrived_ms;
            self.evaluate_deadman(s, now, Trigger::Reading, out);
        }
        self.settle(Trigger::Reading, false, out);
    }

    /// Records a reading into its series; `None` if it was dropped (too late, duplicate).
    fn record(&mut self, s: u32, reading: &Reading) -> Option<usize> {
        let sp = &self.plan.series[plan::metric_index(reading.metric)];
        let width = self.plan.bucket_ms;
        let slot = &mut self.sensors[s as usize];
        let i = match slot.series.iter().position(|x| x.metric == reading.metric) {
            Some(i) => i,
            None => {
                // Exact capacity: a Vec's first push reserves four elements, which would waste ~400 bytes of the
                // sensor's 1 KiB.
                slot.series.reserve_exact(1);
                slot.series.push(Series::new(reading.metric, sp));
                slot.series.len() - 1
            }
        };
        let series = &mut slot.series[i];
        let ts = reading.ts_ms;
        if series.newest_ms != NO_TS {
            if ts < series.newest_ms.saturating_sub(self.max_lateness_ms) {
                self.counters.late_dropped += 1;
                tracing::debug!(sensor = %reading.sensor_id, ts, newest = series.newest_ms, "reading later than the lateness bound: dropped");
                return None;
            }
            if ts <= series.newest_ms && series.dedup.contains(ts) {
                self.counters.duplicates += 1;
                return None;
            }
        }
        series.dedup.insert(ts);
        if let Some(acc) = &mut series.acc {
            let (units, clamped) = windows::to_units(reading.value);
            if clamped {
                self.counters.clamped += 1;
            }
            if acc.add(width, ts, units) == Placement::TooOld {
                self.counters.outside_windows += 1;
            }
        }
        if let Some(rate) = &mut series.rate {
            rate.push(ts, reading.value, sp.rate_step, sp.rate_keep);
        }
        if series.newest_ms == NO_TS || ts > series.newest_ms {
            series.newest_ms = ts;
            series.latest = reading.value;
        } else {
            self.counters.late_placed += 1;
        }
        Some(i)
    }

    /// Evaluates `rules` for sensor `s` as of its series' newest reading (or, for rules without a series, the
    /// sensor's newest reading).
    fn evaluate_sensor_rules(
        &mut self,
        s: u32,
        series_idx: Option<usize>,
        lists: RuleLists,
        moved: bool,
        trigger: Trigger,
        out: &mut Vec<Finding>,
    ) {
        let Self { plan, sensors, zones, areas, adopted, touched, counters, traffic, .. } = self;
        let sensor = &mut sensors[s as usize];
        // Only detectors have a class; other sensors skip the look-up (this runs for every reading).
        let (classes, detector): (Vec<(u32, TrafficClass)>, _) = if sensor.kind == ingest::SensorKind::VehicleDetector {
            let warm = traffic.is_warm(s, &plan.set.traffic);
            let classes = sensor.zones.iter().filter_map(|&z| traffic.class_of(s, z).map(|c| (z, c)));
            (classes.filter(|_| warm).collect(), traffic.latest(s))
        } else {
            (Vec::new(), None)
        };
        let mut sums = [0f64; plan::MAX_WINDOWS];
        let mut windows: &[u32] = &[];
        let (mut latest, mut now) = (f64::NAN, sensor.last_seen_ms);
        if let Some(i) = series_idx {
            let series = &sensor.series[i];
            let sp = &plan.series[plan::metric_index(series.metric)];
            latest = series.latest;
            now = series.newest_ms;
            if let Some(acc) = &series.acc {
                // All windows of the metric in one pass over the ring, shared by every rule below.
                let mut raw = [0u64; plan::MAX_WINDOWS];
                acc.sums_into(&sp.windows, &mut raw);
                for (k, v) in raw.iter().enumerate().take(sp.windows.len()) {
                    sums[k] = *v as f64 / windows::SCALE;
                }
                windows = &sp.windows;
            }
        }
        let (by_metric, any): (&[u16], &[u16]) = match lists {
            RuleLists::Metric(m) => (&plan.by_metric[m], &[]),
            RuleLists::Any => (&[], &plan.any_metric),
            RuleLists::Both(m) => (&plan.by_metric[m], &plan.any_metric),
        };
        for &r in by_metric.iter().chain(any.iter()) {
            let rule = &plan.rules[r as usize];
            if !rule.admits_sensor(&sensor.id, sensor.kind) {
                continue;
            }
            let rate = match (series_idx, rule.kind) {
                (Some(i), RuleKind::Rate) => sensor.series[i]
                    .rate
                    .as_ref()
                    .and_then(|ring| ring.rate_per_hour(rule.rate_window, rule.rate_min_span))
                    .map(|v| match rule.direction {
                        Direction::Either => v.abs(),
                        Direction::Rising => v,
                        Direction::Falling => -v,
                    }),
                _ => None,
            };
            if rule.kind == RuleKind::Traffic && classes.is_empty() {
                continue;
            }
            let inputs = Inputs {
                sums: &sums,
                windows,
                latest,
                rate,
                silent: None,
                speed: sensor.speed_kmh,
                now: if rule.kind == RuleKind::Traffic { sensor.last_seen_ms } else { now },
                traffic: &classes,
                detector,
            };
            for zi in 0..sensor.zones.len() {
                let z = sensor.zones[zi];
                let zone = &zones[z as usize];
                if !rule.admits(r, zone.kind, &zone.scoped) {
                    continue;
                }
                let k = slot_for(sensor, r, z, plan, zones, adopted);
                step_slot(plan, r, sensor, k, &inputs, zone, z, areas, touched, counters, trigger, s, out);
            }
            if moved {
                clear_stale_slots(plan, r, sensor, zones, areas, touched, counters, trigger, s, now, out);
            }
        }
    }

    /// Deadman rules for sensor `s` as of `now` on the arrival clock.
    fn evaluate_deadman(&mut self, s: u32, now: i64, trigger: Trigger, out: &mut Vec<Finding>) {
        let Self { plan, sensors, zones, areas, adopted, touched, counters, .. } = self;
        let sensor = &mut sensors[s as usize];
        let seen = sensor.last_arrived_ms.max(sensor.watch_from_ms);
        if seen == NO_TS {
            return;
        }
        let silent = now.saturating_sub(seen).max(0) as f64 / sensor.interval_ms.max(1) as f64;
        let inputs = Inputs {
            sums: &[],
            windows: &[],
            latest: f64::NAN,
            rate: None,
            silent: Some(silent),
            speed: f32::NAN,
            now,
            traffic: &[],
            detector: None,
        };
        let mut raised = false;
        for &r in &plan.deadman {
            let rule = &plan.rules[r as usize];
            if !rule.admits_sensor(&sensor.id, sensor.kind) {
                continue;
            }
            for zi in 0..sensor.zones.len() {
                let z = sensor.zones[zi];
                let zone = &zones[z as usize];
                if !rule.admits(r, zone.kind, &zone.scoped) {
                    continue;
                }
                let k = slot_for(sensor, r, z, plan, zones, adopted);
                step_slot(plan, r, sensor, k, &inputs, zone, z, areas, touched, counters, trigger, s, out);
                raised |= sensor.slots[k].level != NONE;
            }
        }
        sensor.deadman_raised = raised;
    }

    /// Advances time without a reading: deadman rules (sensors silent for too long, escalated inside active hazard
    /// areas) and forecast expiry. Drive it from the caller's clock (every few seconds on the wall clock in the
    /// server; scenario time in replays).
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<Finding>) {
        self.clock_ms = self.clock_ms.max(now_ms);
        self.step_ms = now_ms;
        let valid = self.plan.forecast_valid_ms;
        let expired: Vec<u32> =
            self.forecasts.iter().filter(|(_, (_, ts))| now_ms.saturating_sub(*ts) >= valid).map(|(z, _)| *z).collect();
        for z in expired {
            self.forecasts.remove(&z);
            self.touched.push((FORECAST, z));
        }
        if !self.plan.deadman.is_empty() {
            for s in 0..self.sensors.len() as u32 {
                self.evaluate_deadman(s, now_ms, Trigger::Tick, out);
            }
        }
        self.settle(Trigger::Tick, false, out);
    }

    /// Posts a forecast value for a zone (SWCB: forecast rain against the area's debris-flow threshold), from an
    /// operator or an agency feed. A forecast older than the zone's current one is ignored; forecasts lapse after
    /// `[engine].forecast_valid_for`.
    pub fn post_forecast(
        &mut self,
        zone_id: &str,
        value: f64,
        ts_ms: i64,
        out: &mut Vec<Finding>,
    ) -> Result<(), ForecastError> {
        if !value.is_finite() || value < 0.0 {
            return Err(ForecastError::BadValue(value));
        }
        let Some(&z) = self.zone_index.get(zone_id) else {
            return Err(ForecastError::UnknownZone(zone_id.chars().take(80).collect()));
        };
        if self.forecasts.get(&z).is_some_and(|(_, t)| *t > ts_ms) {
            self.counters.forecasts_stale += 1;
            return Ok(());
        }
        self.counters.forecasts += 1;
        self.clock_ms = self.clock_ms.max(ts_ms);
        self.step_ms = ts_ms;
        self.forecasts.insert(z, (value, ts_ms));
        self.touched.push((FORECAST, z));
        self.settle(Trigger::Forecast, false, out);
        Ok(())
    }

    /// Tells the engine the partner agencies' warnings now active (inbound CAP: `Inbound::active()`), as of
    /// `now_ms`. Composite rules with `external` conditions are re-evaluated where coverage began or ended. Call it
    /// after every inbound change and now and then (a warning can become effective later than it arrives); a call
    /// that changes nothing costs one pass over the warnings.
    pub fn set_external(&mut self, alerts: Vec<ExternalAlert>, now_ms: i64, out: &mut Vec<Finding>) {
        self.external_alerts = alerts;
        self.external_at_ms = now_ms;
        if self.rematch_external() {
            self.clock_ms = self.clock_ms.max(now_ms);
            self.step_ms = now_ms;
            self.settle(Trigger::External, false, out);
        }
    }

    /// Matches the kept warnings against the plan's `external` filters; marks zones whose coverage changed.
    fn rematch_external(&mut self) -> bool {
        let now = self.external_at_ms;
        let mut cover: BTreeMap<(u16, u32), ExternalHit> = BTreeMap::new();
        for (idx, filter) in self.plan.externals.iter().enumerate() {
            for a in &self.external_alerts {
                if !(a.effective_ms <= now && now < a.expires_ms && filter.accepts(a)) {
                    continue;
                }
                for zone in &a.zone_ids {
                    let Some(&z) = self.zone_index.get(zone.as_str()) else { continue };
                    cover.entry((idx as u16, z)).or_insert_with(|| ExternalHit {
                        id: a.id.clone(),
                        source: a.source.clone(),
                        sender_name: a.sender_name.clone(),
                    });
                }
            }
        }
        let mut changed: BTreeSet<u32> = BTreeSet::new();
        for (key, hit) in &cover {
            if self.external_cover.get(key) != Some(hit) {
                changed.insert(key.1);
            }
        }
        for key in self.external_cover.keys() {
            if !cover.contains_key(key) {
                changed.insert(key.1);
            }
        }
        self.external_cover = cover;
        for &z in &changed {
            self.touched.push((EXTERNAL, z));
        }
        !changed.is_empty()
    }

    /// Re-evaluates zone-wide rules (correlation, composite) in the zones touched since the last settle, in
    /// dependency order, so each sees its inputs' final state. `all`: every zone with any state (after a reload).
    fn settle(&mut self, trigger: Trigger, all: bool, out: &mut Vec<Finding>) {
        if self.touched.is_empty() && !all {
            return;
        }
        let everywhere: Vec<u32> = if all {
            let mut zones: BTreeSet<u32> = self.areas.keys().map(|&k| key_parts(k).1).collect();
            zones.extend(self.forecasts.keys());
            zones.extend(self.external_cover.keys().map(|(_, z)| *z));
            zones.into_iter().collect()
        } else {
            Vec::new()
        };
        let order = self.plan.derived_order.clone();
        for d in order {
            let reads = &self.plan.rules[d as usize].reads;
            let mut zones: Vec<u32> = if all {
                everywhere.clone()
            } else {
                self.touched.iter().filter(|(r, _)| reads.contains(r)).map(|(_, z)| *z).collect()
            };
            // `within_m` conditions: a change in a zone re-evaluates the road segments within reach of it.
            if !all && !self.plan.rules[d as usize].near_reads.is_empty() {
                let near_reads = &self.plan.rules[d as usize].near_reads;
                let reached: Vec<u32> = self
                    .touched
                    .iter()
                    .filter(|(r, _)| near_reads.contains(r))
                    .flat_map(|(_, z)| self.near_rev.get(z).into_iter().flatten().copied())
                    .collect();
                zones.extend(reached);
            }
            zones.sort_unstable();
            zones.dedup();
            for z in zones {
                self.evaluate_derived(d, z, trigger, out);
            }
        }
        self.touched.clear();
    }

    fn evaluate_derived(&mut self, d: u16, z: u32, trigger: Trigger, out: &mut Vec<Finding>) {
        let rule = &self.plan.rules[d as usize];
        let zone = &self.zones[z as usize];
        if !rule.admits(d, zone.kind, &zone.scoped) {
            return;
        }
        let key = area_key(d, z);
        let mut current = self.areas.get(&key).and_then(|a| a.level_of(AREA_MEMBER)).unwrap_or(NONE);
        let adopted_key = (rule.id.clone(), zone.id.to_string(), String::new());
        let mut announce = false;
        if let Some(level) = self.adopted.remove(&adopted_key) {
            current = level;
            announce = true;
            set_member(&mut self.areas, key, AREA_MEMBER, level, BTreeMap::new(), Vec::new());
        }
        let ctx = Ctx {
            inputs: None,
            rule,
            zone,
            zone_idx: z,
            areas: &self.areas,
            forecast: self.forecasts.get(&z).map(|f| f.0),
            external: &self.external_cover,
            stopped_ms: None,
            near: self.near.get(&z).map_or(&[][..], Vec::as_slice),
        };
        let decision = decide(&ctx, current, &mut self.counters);
        let cause = near_cause(&ctx, decision.level);
        let next = decision.level;
        if next == NONE && current == NONE && !announce {
            return;
        }
        // Evidence: the sensors behind the rules read here, transitively through zone-wide inputs.
        let mut evidence: BTreeSet<u32> = BTreeSet::new();
        let mut values: BTreeMap<String, String> = BTreeMap::new();
        let mut inputs: Vec<&Member> = Vec::new();
        for &r in &rule.reads {
            if r == FORECAST || r == EXTERNAL {
                continue;
            }
            if let Some(agg) = self.areas.get(&area_key(r, z)) {
                inputs.extend(agg.members.iter());
            }
        }
        inputs.sort_by_key(|m| m.level);
        for m in inputs {
            if m.sensor == AREA_MEMBER {
                evidence.extend(m.evidence.iter().copied());
            } else {
                evidence.insert(m.sensor);
            }
            values.extend(m.values.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let (Some(f), Some(name)) = (ctx.forecast, forecast_key(rule, &self.plan)) {
            values.insert(format!("forecast_{name}"), format!("{f:.1}"));
        }
        if let Some(hit) = external_hit(rule, next, z, &self.external_cover) {
            values.insert("external_source".into(), hit.source.clone());
            values.insert("external_id".into(), hit.id.clone());
            if let Some(name) = &hit.sender_name {
                values.insert("external_sender".into(), name.clone());
            }
        }
        add_zone_threshold_values(rule, next, zone, &self.plan, &mut values);
        let info = level_info(rule, next, &decision);
        if let Some(level) = next_level(rule, next) {
            values.extend(level.values.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        // Cause and effect: the hazard within reach that made the level hold (the alert book turns it into the
        // causing alert's id, `caused_by`).
        if let Some((cr, cz, metres)) = cause {
            let cause_rule = &self.plan.rules[cr as usize];
            values.insert("caused_by_rule".into(), cause_rule.id.clone());
            values.insert("caused_by_event".into(), cause_rule.event.clone());
            values.insert("caused_by_area".into(), self.zones[cz as usize].id.to_string());
            values.insert("caused_by_distance_m".into(), format!("{metres:.0}"));
        }
        let evidence: Vec<u32> = evidence.into_iter().collect();
        let old_evidence = self.areas.get(&key).and_then(|a| a.members.iter().find(|m| m.sensor == AREA_MEMBER));
        // Same level, same sensors behind it: nothing to tell. More sensors agreeing is an update of the alert.
        if next == current && !announce && old_evidence.is_some_and(|m| m.evidence == evidence) {
            return;
        }
        let evidence_ids: Vec<String> = evidence.iter().map(|&s| self.sensors[s as usize].id.to_string()).collect();
        let finding = Finding {
            rule_id: rule.id.clone(),
            event: rule.event.clone(),
            area_id: zone.id.to_string(),
            sensor_id: String::new(),
            approval_required: next_level(rule, next).is_some_and(|l| l.approval),
            publish: rule.publish,
            level: info,
            value: decision.value,
            observed_ms: self.step_ms,
            evidence: evidence_ids,
            values: values.clone(),
            trigger,
        };
        if next == NONE {
            remove_member(&mut self.areas, key, AREA_MEMBER);
        } else {
            set_member(&mut self.areas, key, AREA_MEMBER, next, values, evidence);
        }
        self.counters.findings += 1;
        self.touched.push((d, z));
        out.push(finding);
    }

    /// Replaces the rules, keeping window state: series (buckets, rate samples) carry over by metric, levels by rule
    /// id; levels of removed rules (or ones no longer in scope) are cleared with findings, and every level is
    /// re-evaluated under the new rules as of each sensor's newest reading.
    pub fn reload(&mut self, rules: RuleSet, out: &mut Vec<Finding>) {
        let before = self.level_listing();
        let snapshot = self.snapshot();
        let zones: Vec<ZoneSlot> = std::mem::take(&mut self.zones);
        let counters = self.counters;
        let clock = self.clock_ms;
        let mut next = RuleEngine::new(rules, self.max_lateness_ms);
        for z in zones {
            next.install_zone(&z.id, z.kind, z.raw);
        }
        next.restore(snapshot, None);
        next.counters = counters;
        next.clock_ms = clock;
        next.step_ms = clock;
        next.external_alerts = std::mem::take(&mut self.external_alerts);
        next.external_at_ms = self.external_at_ms;
        next.rematch_external();
        next.touched.clear();
        // Road segments and distances belong to the zones (same order, same indices). Detectors' recent readings are
        // indexed by sensor: kept when the restored sensors are the same in the same order, else only the baseline
        // (the detectors are judged again once they have `blocked_for` of history, keeping their levels till then).
        next.roads = std::mem::take(&mut self.roads);
        next.near = std::mem::take(&mut self.near);
        next.near_rev = std::mem::take(&mut self.near_rev);
        let same_sensors = next.sensors.len() == self.sensors.len()
            && next.sensors.iter().zip(&self.sensors).all(|(a, b)| a.id == b.id);
        if same_sensors {
            next.traffic = std::mem::take(&mut self.traffic);
        } else {
            next.traffic.set_baseline(self.traffic.baseline().clone());
        }
        *self = next;
        let after: BTreeSet<(String, String, String)> =
            self.level_listing().into_iter().map(|(r, _, z, s)| (r, z, s)).collect();
        for (rule, event, zone, sensor) in before {
            if !after.contains(&(rule.clone(), zone.clone(), sensor.clone())) {
                self.counters.findings += 1;
                out.push(Finding {
                    rule_id: rule,
                    event,
                    area_id: zone,
                    sensor_id: sensor,
                    level: None,
                    value: 0.0,
                    observed_ms: self.clock_ms,
                    publish: Publish::Public,
                    approval_required: false,
                    evidence: Vec::new(),
                    values: BTreeMap::new(),
                    trigger: Trigger::Reload,
                });
            }
        }
        self.reevaluate_all(Trigger::Reload, out);
    }

    /// Re-evaluates every per-sensor rule of every sensor as of its newest reading, then every zone-wide rule.
    fn reevaluate_all(&mut self, trigger: Trigger, out: &mut Vec<Finding>) {
        for s in 0..self.sensors.len() as u32 {
            let metrics: Vec<(usize, Metric)> =
                self.sensors[s as usize].series.iter().enumerate().map(|(i, x)| (i, x.metric)).collect();
            for (i, metric) in metrics {
                self.evaluate_sensor_rules(
                    s,
                    Some(i),
                    RuleLists::Metric(plan::metric_index(metric)),
                    true,
                    trigger,
                    out,
                );
            }
            if !self.plan.any_metric.is_empty() && self.sensors[s as usize].last_seen_ms != NO_TS {
                self.evaluate_sensor_rules(s, None, RuleLists::Any, true, trigger, out);
            }
        }
        self.settle(trigger, true, out);
    }

    /// Every (rule id, event, zone id, contributor) at a level.
    fn level_listing(&self) -> Vec<(String, String, String, String)> {
        let mut list = Vec::new();
        for sensor in &self.sensors {
            for slot in &sensor.slots {
                if slot.level != NONE {
                    let rule = &self.plan.rules[slot.rule as usize];
                    list.push((
                        rule.id.clone(),
                        rule.event.clone(),
                        self.zones[slot.zone as usize].id.to_string(),
                        sensor.id.to_string(),
                    ));
                }
            }
        }
        for (&key, agg) in &self.areas {
            let (r, z) = key_parts(key);
            if agg.level_of(AREA_MEMBER).is_some() {
                let rule = &self.plan.rules[r as usize];
                list.push((rule.id.clone(), rule.event.clone(), self.zones[z as usize].id.to_string(), String::new()));
            }
        }
        list.sort();
        list
    }

    /// After a restart: the alert book's journal is newer than the engine snapshot, so the book's contributions are
    /// the truth about levels. Engine levels the book does not have are dropped, the book's levels are taken (now,
    /// or when the sensor is first seen), and contributions of rules that no longer exist are cleared through `out`
    /// (so their alerts clear). Call once after `restore` (or on a fresh engine) and before the first reading.
    pub fn adopt_levels(&mut self, book: &AlertBook, mode: Mode, out: &mut Vec<Finding>) {
        let contributions = book.contributions(mode);
        let wanted: BTreeSet<(String, String, String)> =
            contributions.iter().map(|(r, a, c, _)| (r.clone(), a.clone(), c.clone())).collect();
        // Drop engine levels the book does not back.
        for s in 0..self.sensors.len() {
            for k in 0..self.sensors[s].slots.len() {
                let slot = self.sensors[s].slots[k];
                if slot.level == NONE {
                    continue;
                }
                let id = (
                    self.plan.rules[slot.rule as usize].id.clone(),
                    self.zones[slot.zone as usize].id.to_string(),
                    self.sensors[s].id.to_string(),
                );
                if !wanted.contains(&id) {
                    self.sensors[s].slots[k].level = NONE;
                    self.sensors[s].slots[k].pending = NONE;
                    remove_member(&mut self.areas, area_key(slot.rule, slot.zone), s as u32);
                }
            }
        }
        let derived: Vec<u64> =
            self.areas.iter().filter(|(_, a)| a.level_of(AREA_MEMBER).is_some()).map(|(k, _)| *k).collect();
        for key in derived {
            let (r, z) = key_parts(key);
            let id = (self.plan.rules[r as usize].id.clone(), self.zones[z as usize].id.to_string(), String::new());
            if !wanted.contains(&id) {
                remove_member(&mut self.areas, key, AREA_MEMBER);
            }
        }
        // Take the book's levels.
        for (rule_id, area_id, contributor, level) in contributions {
            let rule = self.plan.rule_index(&rule_id);
            let valid = rule.is_some_and(|r| level < self.plan.rules[r as usize].levels.len());
            if !valid {
                out.push(Finding {
                    rule_id,
                    event: String::new(),
                    area_id,
                    sensor_id: contributor,
                    level: None,
                    value: 0.0,
                    observed_ms: self.clock_ms.max(0),
                    publish: Publish::Public,
                    approval_required: false,
                    evidence: Vec::new(),
                    values: BTreeMap::new(),
                    trigger: Trigger::Reload,
                });
                continue;
            }
            let Some(r) = rule else { continue };
            let level = level as u8;
            let zone = self.zone_index.get(area_id.as_str()).copied();
            let sensor = self.sensor_index.get(contributor.as_str()).copied();
            match (contributor.is_empty(), zone, sensor) {
                (true, Some(z), _) => {
                    set_member(&mut self.areas, area_key(r, z), AREA_MEMBER, level, BTreeMap::new(), Vec::new());
                }
                (false, Some(z), Some(s)) => {
                    let sensor = &mut self.sensors[s as usize];
                    match sensor.slots.iter().position(|x| x.rule == r && x.zone == z) {
                        Some(k) => {
                            sensor.slots[k].level = level;
                            sensor.slots[k].pending = NONE;
                        }
                        None => sensor.slots.push(AreaSlot::new(r, z, level)),
                    }
                    if self.plan.rules[r as usize].kind == RuleKind::Deadman {
                        sensor.deadman_raised = true;
                    }
                    set_member(&mut self.areas, area_key(r, z), s, level, BTreeMap::new(), Vec::new());
                }
                _ => {
                    self.adopted.insert((rule_id, area_id, contributor), level);
                }
            }
        }
        // Fill in the event of clear findings for unknown rules from the book itself.
        for f in out.iter_mut() {
            if f.event.is_empty() {
                if let Some(a) = book.active().find(|a| a.rule_id == f.rule_id && a.area_id == f.area_id) {
                    f.event = a.event.clone();
                }
            }
        }
    }

    /// The level index of a rule in a zone (the highest contributor's), for operators and tests.
    pub fn area_level(&self, rule_id: &str, zone_id: &str) -> Option<usize> {
        let r = self.plan.rule_index(rule_id)?;
        let z = *self.zone_index.get(zone_id)?;
        self.areas.get(&area_key(r, z)).and_then(AreaAgg::top).map(usize::from)
    }

    /// Bytes of state per sensor (and shared), for the 1 KiB budget.
    pub fn state_bytes(&self) -> StateBytes {
        state::measure(&self.sensors, self.areas.len(), self.zones.len())
    }

    /// A sensor's rolling sums of `metric` as the accumulation rules see them: (window ms, sum), shortest first.
    pub fn window_sums(&self, sensor_id: &str, metric: Metric) -> Vec<(u64, f64)> {
        let Some(&s) = self.sensor_index.get(sensor_id) else { return Vec::new() };
        let Some(series) = self.sensors[s as usize].series.iter().find(|x| x.metric == metric) else {
            return Vec::new();
        };
        let Some(acc) = &series.acc else { return Vec::new() };
        let sp = &self.plan.series[plan::metric_index(metric)];
        sp.windows
            .iter()
            .map(|&n| (n as u64 * self.plan.bucket_ms as u64, acc.sum(n as usize) as f64 / windows::SCALE))
            .collect()
    }

    /// How far back readings still shape the rules' state: the longest accumulation window or rate history, plus
    /// the lateness bound. A catch-up after a restart need not replay anything older.
    pub fn memory_ms(&self) -> i64 {
        let bucket = self.plan.bucket_ms;
        let longest = self
            .plan
            .series
            .iter()
            .map(|sp| (sp.buckets as i64).saturating_mul(bucket).max(sp.rate_keep))
            .chain(self.plan.rules.iter().map(|r| r.min_duration))
            .max()
            .unwrap_or(0);
        longest.saturating_add(self.max_lateness_ms)
    }

    pub fn sensor_count(&self) -> usize {
        self.sensors.len()
    }
}

/// The index in `sensor.slots` of (rule, zone), created (with any level adopted from the book) if missing.
fn slot_for(
    sensor: &mut SensorSlot,
    r: u16,
    z: u32,
    plan: &Plan,
    zones: &[ZoneSlot],
    adopted: &mut HashMap<(String, String, String), u8>,
) -> usize {
    if let Some(k) = sensor.slots.iter().position(|x| x.rule == r && x.zone == z) {
        return k;
    }
    let mut slot = AreaSlot::new(r, z, NONE);
    if !adopted.is_empty() {
        let key = (plan.rules[r as usize].id.clone(), zones[z as usize].id.to_string(), sensor.id.to_string());
        if let Some(level) = adopted.remove(&key) {
            slot.level = level;
            // The book has it but the areas do not yet: announce so both agree after the next evaluation.
            sensor.announce.push((r, z));
        }
    }
    sensor.slots.reserve_exact(1);
    sensor.slots.push(slot);
    sensor.slots.len() - 1
}

/// Evaluates one (rule, zone) slot of a sensor and emits a finding if its level changed.
#[allow(clippy::too_many_arguments)]
fn step_slot(
    plan: &Plan,
    r: u16,
    sensor: &mut SensorSlot,
    k: usize,
    inputs: &Inputs<'_>,
    zone: &ZoneSlot,
    z: u32,
    areas: &mut AreaMap,
    touched: &mut Vec<(u16, u32)>,
    counters: &mut EngineCounters,
    trigger: Trigger,
    s: u32,
    out: &mut Vec<Finding>,
) {
    let rule = &plan.rules[r as usize];
    let now = inputs.now;
    let mut slot = sensor.slots[k];
    // Geofence stops are tracked per zone: "stopped inside this flooded segment for 2 minutes".
    if let Some(limit) = rule.speed_below {
        if !inputs.speed.is_nan() {
            if f64::from(inputs.speed) < limit {
                if slot.since_ms == NO_TS {
                    slot.since_ms = now;
                }
            } else {
                slot.since_ms = NO_TS;
            }
        }
    }
    let stopped_ms = (rule.speed_below.is_some() && slot.since_ms != NO_TS).then(|| now.saturating_sub(slot.since_ms));
    let no_external = BTreeMap::new();
    let ctx = Ctx {
        inputs: Some(inputs),
        rule,
        zone,
        zone_idx: z,
        areas,
        forecast: None,
        external: &no_external,
        stopped_ms,
        near: &[],
    };
    let mut decision = decide(&ctx, slot.level, counters);
    if rule.kind == RuleKind::Rate && inputs.rate.is_none() {
        // Too little history for a rate (first readings, a gap): unknown is not "safe", so the level stays.
        decision.level = slot.level;
    }
    let mut next = decision.level;

    // Threshold rules rise only once the level has held for `min_duration` of event time.
    if rule.min_duration > 0 && rule.kind == RuleKind::Threshold {
        let rising = next != NONE && (slot.level == NONE || next > slot.level);
        if rising {
            if slot.pending == next && slot.since_ms != NO_TS {
                if now.saturating_sub(slot.since_ms) >= rule.min_duration {
                    slot.pending = NONE;
                    slot.since_ms = NO_TS;
                } else {
                    next = slot.level;
                }
            } else {
                slot.pending = next;
                slot.since_ms = now;
                next = slot.level;
            }
        } else {
            slot.pending = NONE;
            slot.since_ms = NO_TS;
        }
    }

    let announce = match sensor.announce.iter().position(|x| *x == (r, z)) {
        Some(p) => {
            sensor.announce.swap_remove(p);
            true
        }
        None => false,
    };
    let changed = next != slot.level || announce;
    let old = slot.level;
    slot.level = next;
    sensor.slots[k] = slot;
    if !changed {
        return;
    }
    if rule.kind == RuleKind::Deadman && next != NONE {
        sensor.deadman_raised = true;
    }
    let mut values = sensor_values(plan, rule, sensor, inputs, decision.value);
    add_zone_threshold_values(rule, next, zone, plan, &mut values);
    if let Some(level) = next_level(rule, next) {
        values.extend(level.values.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let info = level_info(rule, next, &decision);
    let value = decision.value;
    let key = area_key(r, z);
    if next == NONE {
        remove_member(areas, key, s);
    } else {
        set_member(areas, key, s, next, values.clone(), Vec::new());
    }
    if old != next {
        touched.push((r, z));
    }
    counters.findings += 1;
    out.push(Finding {
        rule_id: rule.id.clone(),
        event: rule.event.clone(),
        area_id: zone.id.to_string(),
        sensor_id: sensor.id.to_string(),
        level: info,
        value,
        observed_ms: now,
        publish: rule.publish,
        approval_required: next_level(rule, next).is_some_and(|l| l.approval),
        evidence: Vec::new(),
        values,
        trigger,
    });
}

/// A moving sensor left zones: its levels there end.
#[allow(clippy::too_many_arguments)]
fn clear_stale_slots(
    plan: &Plan,
    r: u16,
    sensor: &mut SensorSlot,
    zones: &[ZoneSlot],
    areas: &mut AreaMap,
    touched: &mut Vec<(u16, u32)>,
    counters: &mut EngineCounters,
    trigger: Trigger,
    s: u32,
    now: i64,
    out: &mut Vec<Finding>,
) {
    let rule = &plan.rules[r as usize];
    let mut k = 0;
    while k < sensor.slots.len() {
        let slot = sensor.slots[k];
        let zone = &zones[slot.zone as usize];
        let stale = slot.rule == r && (!sensor.zones.contains(&slot.zone) || !rule.admits(r, zone.kind, &zone.scoped));
        if !stale {
            k += 1;
            continue;
        }
        sensor.slots.swap_remove(k);
        if slot.level != NONE {
            remove_member(areas, area_key(r, slot.zone), s);
            touched.push((r, slot.zone));
            counters.findings += 1;
            out.push(Finding {
                rule_id: rule.id.clone(),
                event: rule.event.clone(),
                area_id: zone.id.to_string(),
                sensor_id: sensor.id.to_string(),
                level: None,
                value: 0.0,
                observed_ms: now,
                publish: rule.publish,
                approval_required: false,
                evidence: Vec::new(),
                values: BTreeMap::new(),
                trigger,
            });
        }
    }
    // Deterministic order after swap_remove.
    sensor.slots.sort_by_key(|x| (x.rule, x.zone));
}

fn set_member(
    areas: &mut AreaMap,
    key: u64,
    sensor: u32,
    level: u8,
    values: BTreeMap<String, String>,
    evidence: Vec<u32>,
) {
    let agg = areas.entry(key).or_default();
    match agg.members.iter_mut().find(|m| m.sensor == sensor) {
        Some(m) => {
            m.level = level;
            if !values.is_empty() {
                m.values = values;
            }
            m.evidence = evidence;
        }
        None => agg.members.push(Member { sensor, level, values, evidence }),
    }
}

fn remove_member(areas: &mut AreaMap, key: u64, sensor: u32) {
    if let Some(agg) = areas.get_mut(&key) {
        agg.members.retain(|m| m.sensor != sensor);
        if agg.members.is_empty() {
            areas.remove(&key);
        }
    }
}

fn next_level(rule: &CRule, level: u8) -> Option<&plan::CLevel> {
    if level == NONE {
        None
    } else {
        rule.levels.get(level as usize)
    }
}

struct Decision<'a> {
    level: u8,
    /// The level that held on strict limits, with the text of the clause that made it hold (borrowed from the plan:
    /// this runs for every reading, and most readings change nothing).
    raw: Option<(u8, &'a str)>,
    value: f64,
}

/// The next level: the highest level met on strict limits, or the current one (or one below it) if it still holds
/// within the hysteresis margin — whichever is higher.
fn decide<'a>(ctx: &Ctx<'a>, current: u8, counters: &mut EngineCounters) -> Decision<'a> {
    let rule = ctx.rule;
    let mut raw = None;
    let mut value = f64::NAN;
    for i in (0..rule.levels.len()).rev() {
        if let Some((text, v)) = level_holds(&rule.levels[i], ctx, false, counters) {
            raw = Some((i as u8, text));
            value = v;
            break;
        }
    }
    let mut level = raw.as_ref().map(|r| r.0).unwrap_or(NONE);
    if current != NONE && (level == NONE || level < current) {
        let top = (current as usize).min(rule.levels.len().saturating_sub(1));
        for i in (0..=top).rev() {
            if level != NONE && i as u8 <= level {
                break;
            }
            if let Some((_, v)) = level_holds(&rule.levels[i], ctx, true, counters) {
                level = i as u8;
                if value.is_nan() {
                    value = v;
                }
                break;
            }
        }
    }
    if value.is_nan() {
        value = first_measure(ctx).unwrap_or(0.0);
    }
    Decision { level, raw, value }
}

/// Whether a level holds; the text and measured value of the clause that decided.
fn level_holds<'a>(
    level: &'a plan::CLevel,
    ctx: &Ctx<'_>,
    relax: bool,
    counters: &mut EngineCounters,
) -> Option<(&'a str, f64)> {
    let mut decided: Option<(&str, f64)> = None;
    for clause in &level.all {
        let v = clause_holds(clause, ctx, relax, counters)?;
        decided.get_or_insert((&clause.text, v));
    }
    if !level.any.is_empty() {
        let mut found = None;
        for clause in &level.any {
            if let Some(v) = clause_holds(clause, ctx, relax, counters) {
                found = Some((clause.text.as_str(), v));
                break;
            }
        }
        // With both lists, the `all` clause is reported: its value is what operators look at (the rain, not the
        // tilt that confirmed it).
        let f = found?;
        decided.get_or_insert(f);
    }
    decided
}

/// Whether every condition of a clause holds; the first measured value (NaN if none measures).
fn clause_holds(clause: &Clause, ctx: &Ctx<'_>, relax: bool, counters: &mut EngineCounters) -> Option<f64> {
    let mut value = f64::NAN;
    for cond in &clause.conds {
        let (holds, v) = cond_holds(cond, ctx, relax, counters);
        if !holds {
            return None;
        }
        if value.is_nan() {
            if let Some(v) = v {
                value = v;
            }
        }
    }
    Some(value)
}

fn resolve(limit: CLimit, ctx: &Ctx<'_>, counters: &mut EngineCounters) -> Option<f64> {
    match limit {
        CLimit::Value(v) => Some(v),
        CLimit::Zone(k) => {
            let v = ctx.zone.thresholds.get(k as usize).copied().unwrap_or(f64::NAN);
            if v.is_nan() {
                counters.missing_zone_thresholds += 1;
                None
            } else {
                Some(v)
            }
        }
    }
}

fn compare(v: f64, cmp: Cmp, limit: f64, margin: Margin, relax: bool) -> bool {
    let slack = if relax {
        match margin {
            Margin::Fraction(f) => limit.abs() * f,
            Margin::Delta(d) => d,
        }
    } else {
        0.0
    };
    match cmp {
        Cmp::AtLeast => v >= limit - slack,
        Cmp::AtMost => v <= limit + slack,
        // Digital values: no hysteresis.
        Cmp::Equals => v == limit,
    }
}

fn cond_holds(cond: &Cond, ctx: &Ctx<'_>, relax: bool, counters: &mut EngineCounters) -> (bool, Option<f64>) {
    let margin = ctx.rule.margin;
    match *cond {
        Cond::Window { w, cmp, limit } => {
            let Some(inputs) = ctx.inputs else { return (false, None) };
            let Some(&v) = inputs.sums.get(w as usize).filter(|_| (w as usize) < inputs.windows.len()) else {
                return (false, None);
            };
            let holds = resolve(limit, ctx, counters).is_some_and(|l| compare(v, cmp, l, margin, relax));
            (holds, Some(v))
        }
        Cond::Latest { cmp, limit } => {
            let Some(v) = ctx.inputs.map(|i| i.latest).filter(|v| !v.is_nan()) else { return (false, None) };
            let holds = resolve(limit, ctx, counters).is_some_and(|l| compare(v, cmp, l, margin, relax));
            (holds, Some(v))
        }
        Cond::Rate { cmp, limit } => {
            let Some(v) = ctx.inputs.and_then(|i| i.rate) else { return (false, None) };
            let holds = resolve(limit, ctx, counters).is_some_and(|l| compare(v, cmp, l, margin, relax));
            (holds, Some(v))
        }
        Cond::Area { rule, level, sensors } => {
            let n = ctx.areas.get(&area_key(rule, ctx.zone_idx)).map(|a| a.count_at_least(level)).unwrap_or(0);
            (n >= sensors, None)
        }
        Cond::Near { rule, level, within_m } => match near_hit(ctx, rule, level, within_m) {
            Some((_, metres)) => (true, Some(metres)),
            None => (false, None),
        },
        Cond::Traffic(class) => {
            let holds = ctx.inputs.is_some_and(|i| i.traffic.iter().any(|&(z, c)| z == ctx.zone_idx && c == class));
            (holds, ctx.inputs.and_then(|i| i.detector).map(|d| d.0))
        }
        Cond::Forecast { limit } => {
            let Some(v) = ctx.forecast else { return (false, None) };
            let holds = resolve(limit, ctx, counters).is_some_and(|l| compare(v, Cmp::AtLeast, l, margin, relax));
            (holds, Some(v))
        }
        Cond::External { idx } => (ctx.external.contains_key(&(idx, ctx.zone_idx)), None),
        Cond::ZoneKind(kind) => (ctx.zone.kind == Some(kind), None),
        Cond::Stopped { for_ms } => (ctx.stopped_ms.is_some_and(|d| d >= for_ms), None),
        Cond::Silent { missed } => match ctx.inputs.and_then(|i| i.silent) {
            Some(v) => (v > missed, Some(v)),
            None => (false, None),
        },
    }
}

/// The nearest zone within `within_m` of the context's zone where `rule` is at `level` or above: (zone, metres).
fn near_hit(ctx: &Ctx<'_>, rule: u16, level: u8, within_m: f64) -> Option<(u32, f64)> {
    ctx.near
        .iter()
        .filter(|(_, d)| *d <= within_m)
        .filter(|(z, _)| ctx.areas.get(&area_key(rule, *z)).is_some_and(|a| a.count_at_least(level) > 0))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .copied()
}

/// Which hazard within reach made `level` hold: the first `within_m` condition of it that holds, as
/// (rule, zone, metres).
fn near_cause(ctx: &Ctx<'_>, level: u8) -> Option<(u16, u32, f64)> {
    let l = next_level(ctx.rule, level)?;
    l.all.iter().chain(l.any.iter()).flat_map(|c| c.conds.iter()).find_map(|c| match *c {
        Cond::Near { rule, level, within_m } => near_hit(ctx, rule, level, within_m).map(|(z, d)| (rule, z, d)),
        _ => None,
    })
}

/// The measured value of the rule's first condition, for findings that clear.
fn first_measure(ctx: &Ctx<'_>) -> Option<f64> {
    let level = ctx.rule.levels.first()?;
    let clause = level.any.first().or(level.all.first())?;
    let cond = clause.conds.first()?;
    match *cond {
        Cond::Window { w, .. } => ctx.inputs.and_then(|i| i.sums.get(w as usize).copied()),
        Cond::Latest { .. } => ctx.inputs.map(|i| i.latest).filter(|v| !v.is_nan()),
        Cond::Rate { .. } => ctx.inputs.and_then(|i| i.rate),
        Cond::Forecast { .. } => ctx.forecast,
        Cond::Silent { .. } => ctx.inputs.and_then(|i| i.silent),
        _ => None,
    }
}

fn level_info(rule: &CRule, level: u8, decision: &Decision<'_>) -> Option<LevelInfo> {
    let l = next_level(rule, level)?;
    let mut info = l.info.clone();
    info.condition = match &decision.raw {
        Some((i, text)) if *i == level => text.to_string(),
        _ => l.any.first().or(l.all.first()).map(|c| format!("{} (held)", c.text)).unwrap_or_default(),
    };
    Some(info)
}

/// The warning behind the first `external` condition of the rule's `level` that holds in zone `z`.
fn external_hit<'a>(
    rule: &CRule,
    level: u8,
    z: u32,
    cover: &'a BTreeMap<(u16, u32), ExternalHit>,
) -> Option<&'a ExternalHit> {
    let l = next_level(rule, level)?;
    l.all.iter().chain(l.any.iter()).flat_map(|c| c.conds.iter()).find_map(|c| match c {
        Cond::External { idx } => cover.get(&(*idx, z)),
        _ => None,
    })
}

/// Name of the zone threshold a rule's forecast conditions compare with (for the `forecast_<name>` value).
fn forecast_key(rule: &CRule, plan: &Plan) -> Option<String> {
    rule.levels.iter().flat_map(|l| l.all.iter().chain(l.any.iter())).flat_map(|c| c.conds.iter()).find_map(|c| match c
    {
        Cond::Forecast { limit: CLimit::Zone(k) } => plan.threshold_keys.get(*k as usize).cloned(),
        Cond::Forecast { .. } => Some("value".to_string()),
        _ => None,
    })
}

/// `threshold_<unit>` (e.g. `threshold_mm`) for zone limits the level uses, as the CAP debris-flow texts expect.
fn add_zone_threshold_values(
    rule: &CRule,
    level: u8,
    zone: &ZoneSlot,
    plan: &Plan,
    values: &mut BTreeMap<String, String>,
) {
    let Some(l) = next_level(rule, level) else { return };
    for c in l.all.iter().chain(l.any.iter()).flat_map(|c| c.conds.iter()) {
        let limit = match c {
            Cond::Window { limit, .. } | Cond::Latest { limit, .. } | Cond::Rate { limit, .. } => *limit,
            Cond::Forecast { limit } => *limit,
            _ => continue,
        };
        if let CLimit::Zone(k) = limit {
            let (Some(name), Some(v)) = (plan.threshold_keys.get(k as usize), zone.thresholds.get(k as usize)) else {
                continue;
            };
            if v.is_nan() {
                continue;
            }
            let unit = name.rsplit('_').next().unwrap_or(name);
            values.entry(format!("threshold_{unit}")).or_insert_with(|| format!("{v}"));
            values.entry(format!("threshold_{name}")).or_insert_with(|| format!("{v}"));
        }
    }
}

/// CAP template values for a per-sensor finding (see `config/cap_templates.toml` for what each event expects).
fn sensor_values(
    plan: &Plan,
    rule: &CRule,
    sensor: &SensorSlot,
    inputs: &Inputs<'_>,
    value: f64,
) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert("device_id".to_string(), sensor.id.to_string());
    v.insert("station".to_string(), sensor.id.to_string());
    let metric = rule.metric;
    let name = metric.map(|m| m.name()).unwrap_or("");
    let (stem, unit) = name.rsplit_once('_').unwrap_or((name, ""));
    match rule.kind {
        RuleKind::Accumulation => {
            for (i, &n) in inputs.windows.iter().enumerate() {
                let dur = crate::rules::duration_text::format(n as u64 * plan.bucket_ms as u64);
                if let Some(sum) = inputs.sums.get(i) {
                    v.insert(format!("{stem}_{dur}_{unit}"), format!("{sum:.1}"));
                }
            }
        }
        RuleKind::Threshold | RuleKind::Trip => {
            if !inputs.latest.is_nan() {
                v.insert(name.to_string(), format!("{:.2}", inputs.latest));
            }
            if metric == Some(Metric::WireIntact) {
                v.insert("measurement@zh-TW".into(), "鋼索感測器斷線".into());
                v.insert("measurement@en-US".into(), "wire sensor broken".into());
                v.insert("measurement".into(), "wire sensor broken".into());
            }
        }
        RuleKind::Rate => {
            let r = inputs.rate.unwrap_or(value);
            let (zh, en) = match metric {
                Some(Metric::TiltDeg) => (format!("傾斜速率 {r:.3} 度/小時"), format!("tilt rate {r:.3}°/h")),
                Some(Metric::DisplacementMm) => {
                    (format!("位移速率 {r:.1} 公釐/小時"), format!("displacement rate {r:.1} mm/h"))
                }
                _ => (format!("{name} 變化率 {r:.3}/小時"), format!("{name} rate {r:.3}/h")),
            };
            v.insert("measurement@zh-TW".into(), zh);
            v.insert("measurement".into(), en.clone());
            v.insert("measurement@en-US".into(), en);
            v.insert("rate_per_h".into(), format!("{r:.4}"));
        }
        RuleKind::Geofence => {
            v.insert("vehicle".into(), sensor.id.to_string());
            if sensor.cargo > 0 {
                v.insert("un_number".into(), format!("{:04}", sensor.cargo));
            }
            if !inputs.speed.is_nan() {
                v.insert("speed_kmh".into(), format!("{:.0}", inputs.speed));
            }
        }
        RuleKind::Deadman => {
            let minutes = inputs.silent.unwrap_or(0.0) * sensor.interval_ms as f64 / 60_000.0;
            v.insert("silent_min".into(), format!("{minutes:.0}"));
        }
        RuleKind::Traffic => {
            if let Some((speed, flow, occupancy)) = inputs.detector {
                v.insert("speed_kmh".into(), format!("{speed:.0}"));
                v.insert("flow_veh_h".into(), format!("{flow:.0}"));
                v.insert("occupancy_pct".into(), format!("{occupancy:.0}"));
                v.insert(
                    "measurement@zh-TW".into(),
                    format!("車速 {speed:.0} 公里/小時，佔有率 {occupancy:.0}%，流量 {flow:.0} 輛/小時"),
                );
                let en = format!("speed {speed:.0} km/h, occupancy {occupancy:.0} %, flow {flow:.0} veh/h");
                v.insert("measurement@en-US".into(), en.clone());
                v.insert("measurement".into(), en);
            }
            if let Some(&(_, class)) = inputs.traffic.first() {
                v.insert("traffic".into(), class.name().into());
            }
        }
        RuleKind::Correlation | RuleKind::Composite => {}
    }
    v
}

#[cfg(test)]
mod tests;
