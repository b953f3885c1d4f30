//! Rules reload and restart: `reload` swaps the rule set keeping windows and levels, and `adopt_levels` takes the
//! alert book's levels after a restart (the book's journal is newer than any engine snapshot).

use std::collections::{BTreeMap, BTreeSet};

use ingest::Metric;

use super::plan::{self, NONE};
use super::sensor_pass::RuleLists;
use super::state::{AreaSlot, ZoneSlot, AREA_MEMBER, NO_TS};
use super::{area_key, key_parts, remove_member, set_member, RuleEngine};
use crate::alert::AlertBook;
use crate::rules::{RuleKind, RuleSet};
use crate::types::{Finding, Mode, Publish, Trigger};

impl RuleEngine {
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
}
