//! The rule engine: readings, ticks and forecasts in; level changes ([`Finding`]s) out.
//!
//! Pure and deterministic: windows follow reading timestamps (event time), never the wall clock. The only other
//! clock is the caller's: the `now` it passes to [`RuleEngine::tick`] and the arrival time it passes with each
//! reading ([`RuleEngine::evaluate_arrived`]), which is what deadman rules run on — a sensor is silent when nothing
//! has *arrived* from it for a while, whatever its readings' timestamps say, so a replay or a gateway flushing a
//! backlog does not make live sensors look silent. The same inputs in the same order give the same findings, so
//! scenario replays are tests. Findings carry event time (`observed_ms`); issue time is the alert book's input.
//!
//! Layout — where each part of an evaluation lives:
//! - `engine.rs` (this file): [`RuleEngine`] — its state, construction, the zones (`set_zones`: thresholds, road
//!   segments and what lies within reach of each), the area bookkeeping both passes share (who is at a level per
//!   (rule, zone)), and read-only queries (`area_level`, `window_sums`, `state_bytes`, `memory_ms`).
//! - `engine/sensor_pass.rs`: the sensor pass — `evaluate`/`evaluate_arrived` per reading (placement, lateness,
//!   duplicates, series, the sensor's per-sensor rules per zone), `watch`, and `tick` (deadman rules).
//! - `engine/traffic.rs`: beside the sensor pass, vehicle detectors' reading sets and classes per road segment
//!   (blocked, slowed, device fault) that `traffic` rules read, and the learned normal speeds.
//! - `engine/zone_pass.rs`: the zone pass — zone-wide rules (correlation, composite; `within_m` cause and effect)
//!   settled after every step in the zones it touched, `post_forecast`, `set_external` (partner agencies' warnings).
//! - `engine/levels.rs`: deciding a level from a compiled rule's conditions (hysteresis, zone limits), used by both
//!   passes, and the level's finding values.
//! - `engine/reload.rs`: `reload` (new rules, windows kept) and `adopt_levels` (the alert book's levels after a
//!   restart).
//! - `engine/plan.rs`: the rule set compiled for evaluation (rules by metric, resolved conditions, series layout).
//! - `engine/windows.rs`: fixed-size series state — accumulation buckets, rate samples, duplicate filter.
//! - `engine/state.rs`: per-sensor, per-zone and per-area state, and its size accounting.
//! - `engine/snapshot.rs`: [`EngineSnapshot`] — the serialisable state, and restore under (possibly changed) rules.
//! - `engine/tests.rs`: unit tests, one rule kind at a time.
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

mod levels;
mod plan;
mod reload;
mod sensor_pass;
mod snapshot;
mod state;
mod traffic;
mod windows;
mod zone_pass;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use geo_index::ZoneKind;
use ingest::Metric;

use crate::rules::RuleSet;
use crate::types::ExternalAlert;
#[cfg(test)]
use crate::types::{Finding, Trigger};
#[cfg(test)]
use ingest::{Reading, Sensor};

pub use snapshot::{load_engine_snapshot, save_engine_snapshot, EngineSnapshot, RestoreReport};
pub use state::StateBytes;
pub use traffic::{hour_of_week, slot_of_week, SlotNormal, TrafficBaseline};
pub use windows::{Buckets, Dedup, Placement, RateRing};

use plan::{CLimit, Cond, Plan};
use state::{AreaAgg, Member, SensorSlot, ZoneSlot, NO_TS};
use zone_pass::ExternalHit;

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
    /// Zone → the road segments listing it in `near`, with the distance: whose `within_m` rules a change there
    /// re-evaluates (those within the rule's reach).
    near_rev: HashMap<u32, Vec<(u32, f64)>, ahash::RandomState>,
}

/// The farthest a `within_m` condition may reach (validated in `rules.rs`).
const MAX_NEAR_M: f64 = 50_000.0;

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
            let mut list: Vec<(u32, f64)> = zones
                .iter()
                .enumerate()
                .filter_map(|(j, other)| {
                    let d = if i == j { Some(0.0) } else { road.within_m(other, MAX_NEAR_M) };
                    d.map(|d| (interned[j], d))
                })
                .collect();
            // Nearest first (a stable sort: equally near zones stay in zone order), so `within_m` conditions stop
            // at their reach.
            list.sort_by(|a, b| a.1.total_cmp(&b.1));
            for &(z, metres) in &list {
                let back = self.near_rev.entry(z).or_default();
                match back.iter_mut().find(|(road, _)| *road == r) {
                    Some(known) => known.1 = metres,
                    None => back.push((r, metres)),
                }
            }
            self.near.insert(r, list);
        }
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

#[cfg(test)]
mod tests;
