//! The rule engine: readings in, per-sensor level changes ([`Finding`]s) out.
//!
//! Pure and deterministic: windows follow reading timestamps (event time), never the wall clock, so a scenario
//! replayed twice gives the same findings. Readings later than `max_lateness` behind the newest one a sensor sent are
//! counted and dropped; earlier-but-in-bound ones are placed where they belong. Repeated timestamps (QoS 1 resends,
//! firmware duplicates) are counted once.

use std::collections::{HashMap, VecDeque};

use geo_index::ZoneKind;
use ingest::{Reading, Sensor};

use crate::alert::{Finding, LevelInfo};
use crate::rules::{Rule, RuleKind, RuleSet, MAX_WINDOW_MS};

/// A zone the reading's position falls in, as the caller's geo index found it.
#[derive(Debug, Clone, Copy)]
pub struct ZoneRef<'a> {
    pub id: &'a str,
    pub kind: ZoneKind,
}

#[derive(Debug, Default)]
struct SensorState {
    /// (event time, value), ascending by time, at most the longest window of the rule.
    samples: VecDeque<(i64, f64)>,
    newest_ms: i64,
    level: Option<usize>,
    /// Threshold rules: the level seen and since when, until it has held `min_duration`.
    pending: Option<(usize, i64)>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineCounters {
    pub evaluated: u64,
    pub late_dropped: u64,
    pub duplicates: u64,
}

pub struct RuleEngine {
    rules: RuleSet,
    /// Per rule index: sensor id → state.
    states: Vec<HashMap<String, SensorState>>,
    max_lateness_ms: i64,
    pub counters: EngineCounters,
}

impl RuleEngine {
    pub fn new(rules: RuleSet, max_lateness_ms: i64) -> Self {
        let states = rules.rules.iter().map(|_| HashMap::new()).collect();
        Self { rules, states, max_lateness_ms, counters: EngineCounters::default() }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Evaluates one reading of `sensor` standing in `zones`; appends level changes to `out`.
    pub fn evaluate(&mut self, reading: &Reading, sensor: &Sensor, zones: &[ZoneRef<'_>], out: &mut Vec<Finding>) {
        self.counters.evaluated += 1;
        for (index, rule) in self.rules.rules.iter().enumerate() {
            if rule.metric != reading.metric
                || (!rule.scope.sensor_kinds.is_empty() && !rule.scope.sensor_kinds.contains(&sensor.kind))
            {
                continue;
            }
            let areas: Vec<&str> = zones
                .iter()
                .filter(|z| rule.scope.zone_kinds.is_empty() || rule.scope.zone_kinds.contains(&z.kind))
                .map(|z| z.id)
                .collect();
            if areas.is_empty() {
                continue;
            }
            let state = self.states[index].entry(sensor.id.clone()).or_default();
            let Some((level, value)) = step(rule, state, reading, self.max_lateness_ms, &mut self.counters) else {
                continue;
            };
            for area in areas {
                out.push(Finding {
                    rule_id: rule.id.clone(),
                    event: rule.event.clone(),
                    area_id: area.to_string(),
                    sensor_id: sensor.id.clone(),
                    level: level.clone(),
                    value,
                    ts_ms: reading.ts_ms,
                });
            }
        }
    }
}

/// Advances one sensor's state under one rule; returns the new level if it changed.
fn step(
    rule: &Rule,
    state: &mut SensorState,
    reading: &Reading,
    max_lateness_ms: i64,
    counters: &mut EngineCounters,
) -> Option<(Option<LevelInfo>, f64)> {
    if !state.samples.is_empty() && reading.ts_ms < state.newest_ms - max_lateness_ms {
        counters.late_dropped += 1;
        tracing::debug!(sensor = %reading.sensor_id, ts = reading.ts_ms, "reading later than the lateness bound");
        return None;
    }
    let pos = state.samples.partition_point(|(t, _)| *t < reading.ts_ms);
    if state.samples.get(pos).is_some_and(|(t, _)| *t == reading.ts_ms) {
        counters.duplicates += 1;
        return None;
    }
    state.samples.insert(pos, (reading.ts_ms, reading.value));
    state.newest_ms = state.newest_ms.max(reading.ts_ms);
    let keep_ms = match rule.kind {
        RuleKind::Accumulation => longest_window(rule),
        RuleKind::Threshold => 0,
    };
    while state.samples.front().is_some_and(|(t, _)| *t <= state.newest_ms - keep_ms as i64 && state.samples.len() > 1) {
        state.samples.pop_front();
    }

    let measure = |window: Option<u64>| -> f64 {
        match (rule.kind, window) {
            (RuleKind::Accumulation, Some(w)) => {
                let from = state.newest_ms - w as i64;
                state.samples.iter().rev().take_while(|(t, _)| *t > from).map(|(_, v)| v).sum()
            }
            _ => state.samples.back().map(|(_, v)| *v).unwrap_or(0.0),
        }
    };

    // The highest level with any condition met, and what met it.
    let mut raw: Option<(usize, String, f64)> = None;
    for (i, level) in rule.levels.iter().enumerate() {
        for c in &level.any {
            let v = measure(c.window);
            if v >= c.at_least {
                raw = Some((i, describe(c.window, c.at_least), v));
                break;
            }
        }
    }
    // Hysteresis: the current level holds while any of its conditions stays above at_least × (1 − margin).
    let held = state.level.and_then(|current| {
        (0..=current).rev().find(|&i| {
            rule.levels[i].any.iter().any(|c| measure(c.window) >= c.at_least * (1.0 - rule.clear_margin))
        })
    });
    let mut next = match (raw.as_ref().map(|r| r.0), held) {
        (Some(r), Some(h)) => Some(r.max(h)),
        (r, h) => r.or(h),
    };

    // Threshold rules only rise once the level has held for `min_duration` of event time.
    if let (RuleKind::Threshold, Some(min), Some(n)) = (rule.kind, rule.min_duration, next) {
        if state.level.is_none_or(|cur| n > cur) {
            match state.pending {
                Some((p, since)) if p == n && reading.ts_ms - since >= min as i64 => state.pending = None,
                Some((p, _)) if p == n => next = state.level,
                _ => {
                    state.pending = Some((n, reading.ts_ms));
                    next = if min == 0 { Some(n) } else { state.level };
                }
            }
        }
    } else if rule.kind == RuleKind::Threshold {
        state.pending = None;
    }

    if next == state.level {
        return None;
    }
    state.level = next;
    let value = raw.as_ref().map(|r| r.2).unwrap_or_else(|| measure(rule.levels[0].any[0].window));
    let info = next.map(|i| {
        let level = &rule.levels[i];
        let condition = match &raw {
            Some((ri, text, _)) if *ri == i => text.clone(),
            _ => describe(level.any[0].window, level.any[0].at_least),
        };
        LevelInfo {
            index: i,
            name: level.name.clone(),
            name_en: level.name_en.clone(),
            severity: level.severity,
            urgency: level.urgency,
            certainty: level.certainty,
            condition,
        }
    });
    Some((info, value))
}

fn longest_window(rule: &Rule) -> u64 {
    rule.levels.iter().flat_map(|l| l.any.iter()).filter_map(|c| c.window).max().unwrap_or(0).min(MAX_WINDOW_MS)
}

fn describe(window: Option<u64>, at_least: f64) -> String {
    match window {
        Some(w) if w % 3_600_000 == 0 => format!("{}h ≥ {at_least}", w / 3_600_000),
        Some(w) => format!("{}m ≥ {at_least}", w / 60_000),
        None => format!("≥ {at_least}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use ingest::{Metric, SensorKind};

    use super::*;

    fn engine() -> RuleEngine {
        let rules = RuleSet::from_toml(include_str!("../../config/rules.toml"), Path::new("rules.toml")).unwrap();
        RuleEngine::new(rules, 3_600_000)
    }

    fn gauge() -> Sensor {
        Sensor {
            id: "RG0001".into(),
            kind: SensorKind::RainGauge,
            lat: 23.5,
            lon: 120.9,
            interval_s: 600,
            agency: "CWA".into(),
            metrics: vec![Metric::RainMm],
            zone: None,
            mobile: false,
            retired: false,
        }
    }

    fn rain(ts_ms: i64, mm: f64) -> Reading {
        Reading { sensor_id: "RG0001".into(), ts_ms, metric: Metric::RainMm, value: mm, position: None }
    }

    const ZONE: [ZoneRef<'static>; 1] = [ZoneRef { id: "dfa", kind: ZoneKind::DebrisFlow }];
    const MIN: i64 = 60_000;

    #[test]
    fn rain_rises_through_cwa_levels_and_clears_with_hysteresis() {
        let mut e = engine();
        let mut out = Vec::new();
        let t0 = 1_764_122_400_000;
        // 30 mm: nothing. 45 mm within the hour: 大雨 (≥40 mm/1 h).
        e.evaluate(&rain(t0, 30.0), &gauge(), &ZONE, &mut out);
        assert!(out.is_empty());
        e.evaluate(&rain(t0 + 10 * MIN, 15.0), &gauge(), &ZONE, &mut out);
        let f = out.pop().unwrap();
        assert_eq!(f.level.as_ref().unwrap().index, 0, "{f:?}");
        // 110 mm in 3 h: 豪雨 (≥100 mm/3 h).
        e.evaluate(&rain(t0 + 20 * MIN, 65.0), &gauge(), &ZONE, &mut out);
        assert_eq!(out.pop().unwrap().level.unwrap().index, 1);
        // A duplicate (same timestamp) is counted once.
        e.evaluate(&rain(t0 + 20 * MIN, 65.0), &gauge(), &ZONE, &mut out);
        assert!(out.is_empty());
        assert_eq!(e.counters.duplicates, 1);
        // 25 h later with no rain the windows are empty: cleared.
        e.evaluate(&rain(t0 + 25 * 60 * MIN, 0.0), &gauge(), &ZONE, &mut out);
        assert!(out.pop().unwrap().level.is_none());
    }

    #[test]
    fn readings_outside_scope_raise_nothing() {
        let mut e = engine();
        let mut out = Vec::new();
        e.evaluate(&rain(0, 300.0), &gauge(), &[], &mut out);
        assert!(out.is_empty());
    }
}
