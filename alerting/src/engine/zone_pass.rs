//! The zone pass: zone-wide rules (correlation, composite) re-evaluated in the zones whose inputs changed in the
//! current step — another rule's level there, a forecast, a partner agency's warning, or (for `within_m` conditions)
//! a hazard in a zone within reach of a road segment — in dependency order (`settle`). Forecasts and partner
//! agencies' warnings come in here too.

use std::collections::{BTreeMap, BTreeSet};

use super::levels::{add_zone_threshold_values, decide, level_info, near_hit, next_level, Ctx};
use super::plan::{CLimit, CRule, Cond, Plan, EXTERNAL, FORECAST, NONE};
use super::state::{Member, AREA_MEMBER};
use super::{area_key, key_parts, remove_member, set_member, ForecastError, RuleEngine};
use crate::types::{ExternalAlert, Finding, Trigger};

/// The external warning behind an `external` condition in a zone (its values go into the composite's finding).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ExternalHit {
    pub(super) id: String,
    pub(super) source: String,
    pub(super) sender_name: Option<String>,
}

impl RuleEngine {
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
    pub(super) fn rematch_external(&mut self) -> bool {
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
    pub(super) fn settle(&mut self, trigger: Trigger, all: bool, out: &mut Vec<Finding>) {
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
        // By index: the loop calls `&mut self` methods, and cloning the order for every step was a heap allocation
        // per reading that changed a level.
        for i in 0..self.plan.derived_order.len() {
            let d = self.plan.derived_order[i];
            let reads = &self.plan.rules[d as usize].reads;
            let mut zones: Vec<u32> = if all {
                everywhere.clone()
            } else {
                self.touched.iter().filter(|(r, _)| reads.contains(r)).map(|(_, z)| *z).collect()
            };
            // `within_m` conditions: a change in a zone re-evaluates the road segments within this rule's reach of
            // it. `near_rev` lists every segment up to `MAX_NEAR_M` (50 km) away; a segment farther than the rule's
            // largest `within_m` cannot see the change (its conditions read only zones within that distance), and
            // re-evaluating the dozens of segments in 50 km of every rain or slope zone on each level change was
            // the largest cost of the traffic rules.
            let rule = &self.plan.rules[d as usize];
            if !all && !rule.near_reads.is_empty() {
                let (near_reads, reach) = (&rule.near_reads, rule.near_reach);
                let reached = self
                    .touched
                    .iter()
                    .filter(|(r, _)| near_reads.contains(r))
                    .flat_map(|(_, z)| self.near_rev.get(z).into_iter().flatten())
                    .filter(|(_, metres)| *metres <= reach)
                    .map(|(road, _)| *road);
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
        let mut announce = false;
        // The key is built only when the book left levels to adopt (two allocations per evaluation otherwise).
        let adopted = if self.adopted.is_empty() {
            None
        } else {
            self.adopted.remove(&(rule.id.clone(), zone.id.to_string(), String::new()))
        };
        if let Some(level) = adopted {
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
        let next = decision.level;
        if next == NONE && current == NONE && !announce {
            return;
        }
        // Evidence: the sensors behind the rules read here, transitively through zone-wide inputs.
        let mut evidence: BTreeSet<u32> = BTreeSet::new();
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
        for m in &inputs {
            if m.sensor == AREA_MEMBER {
                evidence.extend(m.evidence.iter().copied());
            } else {
                evidence.insert(m.sensor);
            }
        }
        let evidence: Vec<u32> = evidence.into_iter().collect();
        let old_evidence = self.areas.get(&key).and_then(|a| a.members.iter().find(|m| m.sensor == AREA_MEMBER));
        // Same level, same sensors behind it: nothing to tell. More sensors agreeing is an update of the alert.
        // Decided before the values are gathered: copying every member's values (dozens of rain gauges in a
        // debris-flow area, every detector of a road) only to drop them was most of this function's cost.
        if next == current && !announce && old_evidence.is_some_and(|m| m.evidence == evidence) {
            return;
        }
        let cause = near_cause(&ctx, next);
        // Later members (higher levels) win a key, as extending in order would; walking them backwards and keeping
        // the first copy of each key clones each key once instead of once per member.
        let mut values: BTreeMap<String, String> = BTreeMap::new();
        for m in inputs.iter().rev() {
            for (k, v) in &m.values {
                if !values.contains_key(k) {
                    values.insert(k.clone(), v.clone());
                }
            }
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
