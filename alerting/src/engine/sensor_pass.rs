//! The sensor pass: one reading (or a tick, for deadman rules) evaluated against the per-sensor rules of its sensor —
//! the sensor's place in its zones, lateness and duplicates, its series (buckets, rate samples), then each rule's
//! level per (rule, zone) slot, emitting a [`Finding`] when a level changes. Vehicle detectors' reading sets go to the
//! traffic board (`traffic.rs`) first, so traffic rules read the detector's class. Zone-wide rules follow in the zone
//! pass (`zone_pass.rs`), which every public entry here ends with (`settle`).

use std::collections::{BTreeMap, HashMap};

use geo_index::ZoneKind;
use ingest::{Metric, Reading, Sensor};

use super::levels::{add_zone_threshold_values, decide, level_info, next_level, Ctx};
use super::plan::{self, CRule, Plan, FORECAST, NONE};
use super::state::{AreaSlot, SensorSlot, Series, ZoneSlot, NO_TS};
use super::windows::{self, Placement};
use super::{area_key, remove_member, set_member, AreaMap, EngineCounters, RuleEngine, ZoneRef};
use crate::rules::{Direction, RuleKind, TrafficClass};
use crate::types::{Finding, Trigger};

/// Which per-sensor rules an evaluation runs (named rather than passed as a slice: the slice would borrow the plan
/// while the engine is borrowed mutably).
#[derive(Clone, Copy)]
pub(super) enum RuleLists {
    Metric(usize),
    Any,
    Both(usize),
}

/// What a per-sensor evaluation reads, gathered before the sensor's slots are borrowed mutably.
pub(super) struct Inputs<'a> {
    pub(super) sums: &'a [f64],
    pub(super) windows: &'a [u32],
    pub(super) latest: f64,
    pub(super) rate: Option<f64>,
    pub(super) silent: Option<f64>,
    pub(super) speed: f32,
    pub(super) now: i64,
    /// Traffic rules: the detector's class per road zone.
    pub(super) traffic: &'a [(u32, TrafficClass)],
    /// Traffic rules: the detector's newest (speed, flow, occupancy).
    pub(super) detector: Option<(f64, f64, f64)>,
}

impl RuleEngine {
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

    pub(super) fn sensor_for(&mut self, sensor: &Sensor) -> u32 {
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
    pub(super) fn place(&mut self, s: u32, zones: &[ZoneRef<'_>]) -> bool {
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
    pub(super) fn record(&mut self, s: u32, reading: &Reading) -> Option<usize> {
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
    pub(super) fn evaluate_sensor_rules(
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
    pub(super) fn evaluate_deadman(&mut self, s: u32, now: i64, trigger: Trigger, out: &mut Vec<Finding>) {
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
}

/// The index in `sensor.slots` of (rule, zone), created (with any level adopted from the book) if missing.
pub(super) fn slot_for(
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
pub(super) fn step_slot(
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
