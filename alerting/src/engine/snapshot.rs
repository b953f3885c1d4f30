//! [`EngineSnapshot`]: the engine's state in a serialisable form keyed by names (rule ids, zone ids, sensor ids,
//! metrics), not indices, so that it restores under a changed rule set — which is also how `reload` keeps windows.
//!
//! Buckets are stored sparsely with the bucket width they were taken with; restoring under another width re-buckets
//! them (exact when the new width is a multiple of the old one, else each old bucket lands in the new bucket holding
//! its start).

use std::collections::BTreeMap;
use std::path::Path;

use geo_index::ZoneKind;
use ingest::{Metric, SensorKind};
use serde::{Deserialize, Serialize};

use super::plan::{self, NONE};
use super::state::{AreaSlot, SensorSlot, Series, AREA_MEMBER, NO_TS};
use super::{area_key, key_parts, set_member, EngineCounters, RuleEngine};
use crate::journal::{self, JournalError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineSnapshot {
    pub format: u32,
    pub bucket_ms: i64,
    pub clock_ms: Option<i64>,
    pub zones: Vec<ZoneSnapshot>,
    pub sensors: Vec<SensorSnapshot>,
    /// Levels of zone-wide rules.
    pub derived: Vec<LevelSnapshot>,
    pub forecasts: Vec<ForecastSnapshot>,
    pub counters: EngineCounters,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneSnapshot {
    pub id: String,
    pub kind: Option<ZoneKind>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorSnapshot {
    pub id: String,
    pub kind: SensorKind,
    pub interval_ms: i64,
    pub last_seen_ms: Option<i64>,
    /// Arrival time of the newest reading (the deadman's clock); absent in snapshots from before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_arrived_ms: Option<i64>,
    pub watch_from_ms: Option<i64>,
    pub zones: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_kmh: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cargo: Option<u16>,
    pub series: Vec<SeriesSnapshot>,
    pub levels: Vec<SlotSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesSnapshot {
    pub metric: Metric,
    pub newest_ms: i64,
    pub latest: f64,
    /// Low 32 bits of recent timestamps (duplicate filter), oldest first.
    pub seen: Vec<u32>,
    /// Non-empty accumulation buckets: (bucket index at `bucket_ms`, hundredths).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<(i64, u32)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate: Vec<(i64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotSnapshot {
    pub rule: String,
    pub zone: String,
    pub level: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
    /// CAP values of the finding that set the level (zone-wide rules merge them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelSnapshot {
    pub rule: String,
    pub zone: String,
    pub level: u8,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastSnapshot {
    pub zone: String,
    pub value: f64,
    pub ts_ms: i64,
}

/// What a restore could not carry over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    pub sensors: usize,
    /// Levels of rules that no longer exist or no longer cover the sensor/zone.
    pub dropped_levels: usize,
    /// Series of metrics no rule reads any more.
    pub dropped_series: usize,
    /// Buckets older than the new ring.
    pub dropped_buckets: usize,
}

fn opt(ts: i64) -> Option<i64> {
    (ts != NO_TS).then_some(ts)
}

fn level_opt(l: u8) -> Option<u8> {
    (l != NONE).then_some(l)
}

/// Saves the engine's state to `engine.snapshot.json` in `dir` (call every minute or so and at shutdown; readings
/// since the last save are what a crash loses from the windows — levels are not lost, the alert journal has them).
/// Written atomically by the journal's file helpers; it lives here so the journal need not know the engine.
pub fn save_engine_snapshot(dir: &Path, snapshot: &EngineSnapshot) -> Result<(), JournalError> {
    journal::write_json_atomic(dir, journal::ENGINE_SNAPSHOT, snapshot)
}

/// Loads the engine's state saved by [`save_engine_snapshot`], if any.
pub fn load_engine_snapshot(dir: &Path) -> Result<Option<EngineSnapshot>, JournalError> {
    journal::read_json(&dir.join(journal::ENGINE_SNAPSHOT))
}

impl RuleEngine {
    /// The engine's state (windows, levels, forecasts, counters). Save it with [`save_engine_snapshot`].
    pub fn snapshot(&self) -> EngineSnapshot {
        let zone_id = |z: u32| self.zones[z as usize].id.to_string();
        let sensors = self
            .sensors
            .iter()
            .map(|s| SensorSnapshot {
                id: s.id.to_string(),
                kind: s.kind,
                interval_ms: s.interval_ms,
                last_seen_ms: opt(s.last_seen_ms),
                last_arrived_ms: opt(s.last_arrived_ms),
                watch_from_ms: opt(s.watch_from_ms),
                zones: s.zones.iter().map(|&z| zone_id(z)).collect(),
                speed_kmh: (!s.speed_kmh.is_nan()).then_some(s.speed_kmh),
                cargo: (s.cargo > 0).then_some(s.cargo),
                series: s
                    .series
                    .iter()
                    .map(|x| SeriesSnapshot {
                        metric: x.metric,
                        newest_ms: x.newest_ms,
                        latest: x.latest,
                        seen: x.dedup.entries(),
                        buckets: x.acc.as_ref().map(|b| b.entries()).unwrap_or_default(),
                        rate: x.rate.as_ref().map(|r| r.samples().to_vec()).unwrap_or_default(),
                    })
                    .collect(),
                levels: s
                    .slots
                    .iter()
                    .map(|slot| SlotSnapshot {
                        rule: self.plan.rules[slot.rule as usize].id.clone(),
                        zone: zone_id(slot.zone),
                        level: level_opt(slot.level),
                        pending: level_opt(slot.pending),
                        since_ms: opt(slot.since_ms),
                        values: self
                            .areas
                            .get(&area_key(slot.rule, slot.zone))
                            .and_then(|a| {
                                a.members
                                    .iter()
                                    .find(|m| self.sensors.get(m.sensor as usize).is_some_and(|x| x.id == s.id))
                            })
                            .map(|m| m.values.clone())
                            .unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect();
        let mut derived: Vec<LevelSnapshot> = self
            .areas
            .iter()
            .filter_map(|(&key, agg)| {
                let (r, z) = key_parts(key);
                agg.members.iter().find(|m| m.sensor == AREA_MEMBER).map(|m| LevelSnapshot {
                    rule: self.plan.rules[r as usize].id.clone(),
                    zone: zone_id(z),
                    level: m.level,
                    values: m.values.clone(),
                    evidence: m.evidence.iter().map(|&e| self.sensors[e as usize].id.to_string()).collect(),
                })
            })
            .collect();
        derived.sort_by(|a, b| (&a.rule, &a.zone).cmp(&(&b.rule, &b.zone)));
        EngineSnapshot {
            format: 1,
            bucket_ms: self.plan.bucket_ms,
            clock_ms: opt(self.clock_ms),
            zones: self.zones.iter().map(|z| ZoneSnapshot { id: z.id.to_string(), kind: z.kind }).collect(),
            sensors,
            derived,
            forecasts: self
                .forecasts
                .iter()
                .map(|(&z, &(value, ts_ms))| ForecastSnapshot { zone: zone_id(z), value, ts_ms })
                .collect(),
            counters: self.counters,
        }
    }

    /// Loads a snapshot into this engine (built with the current rules and zones), replacing its sensor state.
    /// `resumed_at_ms`: after a restart, the time the engine resumes — the deadman does not count the downtime
    /// against sensors (they could not reach us either). Follow with `adopt_levels` when an alert book is kept:
    /// the book's journal is newer than any snapshot.
    pub fn restore(&mut self, snapshot: EngineSnapshot, resumed_at_ms: Option<i64>) -> RestoreReport {
        let mut report = RestoreReport::default();
        for z in &snapshot.zones {
            self.zone_for(&z.id, z.kind);
        }
        let old_width = snapshot.bucket_ms.max(1);
        let width = self.plan.bucket_ms;
        for s in snapshot.sensors {
            let mut slot = SensorSlot::new(&s.id, s.kind, s.interval_ms);
            let mut values: Vec<((u16, u32), BTreeMap<String, String>)> = Vec::new();
            slot.last_seen_ms = s.last_seen_ms.unwrap_or(NO_TS);
            slot.last_arrived_ms = s.last_arrived_ms.unwrap_or(NO_TS);
            slot.watch_from_ms = s.watch_from_ms.unwrap_or(NO_TS);
            if let Some(t) = resumed_at_ms {
                slot.watch_from_ms = slot.watch_from_ms.max(t);
            }
            slot.zones = s.zones.iter().map(|z| self.zone_for(z, None)).collect();
            slot.speed_kmh = s.speed_kmh.unwrap_or(f32::NAN);
            slot.cargo = s.cargo.unwrap_or(0);
            for x in s.series {
                let sp = &self.plan.series[plan::metric_index(x.metric)];
                if !sp.tracked {
                    report.dropped_series += 1;
                    continue;
                }
                let mut series = Series::new(x.metric, sp);
                series.newest_ms = x.newest_ms;
                series.latest = x.latest;
                for t in x.seen {
                    series.dedup.insert(i64::from(t));
                }
                if let Some(acc) = &mut series.acc {
                    let mut buckets = x.buckets;
                    buckets.sort_unstable();
                    for (b, units) in buckets {
                        if acc.add(width, b.saturating_mul(old_width), units) == super::Placement::TooOld {
                            report.dropped_buckets += 1;
                        }
                    }
                    // The ring's head follows the newest reading even when its bucket was empty.
                    if series.newest_ms != NO_TS {
                        acc.add(width, series.newest_ms, 0);
                    }
                }
                if let Some(rate) = &mut series.rate {
                    for (t, v) in x.rate {
                        rate.push(t, v, sp.rate_step, sp.rate_keep);
                    }
                }
                slot.series.push(series);
            }
            for l in s.levels {
                let Some(r) = self.plan.rule_index(&l.rule) else {
                    report.dropped_levels += usize::from(l.level.is_some());
                    continue;
                };
                let rule = &self.plan.rules[r as usize];
                let Some(&z) = self.zone_index.get(l.zone.as_str()) else { continue };
                let zone = &self.zones[z as usize];
                if !rule.kind.is_per_sensor()
                    || !rule.admits_sensor(&slot.id, slot.kind)
                    || !rule.admits(r, zone.kind, &zone.scoped)
                {
                    report.dropped_levels += usize::from(l.level.is_some());
                    continue;
                }
                let mut a = AreaSlot::new(r, z, NONE);
                if let Some(level) = l.level {
                    // A rule that lost levels: keep the highest it still has and let the next evaluation decide.
                    a.level = level.min(rule.levels.len().saturating_sub(1) as u8);
                    if a.level != level {
                        slot.announce.push((r, z));
                    }
                }
                a.pending = l.pending.filter(|p| (*p as usize) < rule.levels.len()).unwrap_or(NONE);
                a.since_ms = l.since_ms.unwrap_or(NO_TS);
                if rule.kind == crate::rules::RuleKind::Deadman && a.level != NONE {
                    slot.deadman_raised = true;
                }
                slot.slots.push(a);
                if !l.values.is_empty() {
                    values.push(((r, z), l.values));
                }
            }
            slot.slots.sort_by_key(|x| (x.rule, x.zone));
            let index = match self.sensor_index.get(s.id.as_str()) {
                Some(&i) => {
                    self.sensors[i as usize] = slot;
                    i
                }
                None => {
                    let i = self.sensors.len() as u32;
                    self.sensors.push(slot);
                    self.sensor_index.insert(s.id.as_str().into(), i);
                    i
                }
            };
            let sensor = &self.sensors[index as usize];
            for a in &sensor.slots {
                if a.level != NONE {
                    let v =
                        values.iter().find(|(k, _)| *k == (a.rule, a.zone)).map(|(_, v)| v.clone()).unwrap_or_default();
                    set_member(&mut self.areas, area_key(a.rule, a.zone), index, a.level, v, Vec::new());
                }
            }
            report.sensors += 1;
        }
        for d in snapshot.derived {
            let Some(r) = self.plan.rule_index(&d.rule) else { continue };
            if self.plan.rules[r as usize].kind.is_per_sensor() {
                continue;
            }
            let level = d.level.min(self.plan.rules[r as usize].levels.len().saturating_sub(1) as u8);
            let z = self.zone_for(&d.zone, None);
            let evidence = d.evidence.iter().filter_map(|id| self.sensor_index.get(id.as_str()).copied()).collect();
            set_member(&mut self.areas, area_key(r, z), AREA_MEMBER, level, d.values, evidence);
        }
        for f in snapshot.forecasts {
            let z = self.zone_for(&f.zone, None);
            self.forecasts.insert(z, (f.value, f.ts_ms));
        }
        self.counters = snapshot.counters;
        if let Some(c) = snapshot.clock_ms {
            self.clock_ms = self.clock_ms.max(c);
        }
        report
    }
}
