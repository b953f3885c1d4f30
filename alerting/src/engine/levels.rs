//! Deciding a level, shared by both passes: the conditions of a compiled rule checked against what a sensor's
//! reading or a zone's state offers (`Ctx`), with hysteresis on the way down, and the values a finding carries
//! about the level it reached (condition text, zone thresholds).

use std::collections::BTreeMap;

use super::plan::{self, CLimit, CRule, Clause, Cmp, Cond, Plan, NONE};
use super::sensor_pass::Inputs;
use super::state::ZoneSlot;
use super::zone_pass::ExternalHit;
use super::{area_key, AreaMap, EngineCounters};
use crate::rules::Margin;
use crate::types::LevelInfo;

/// Everything a condition can look at.
pub(super) struct Ctx<'a> {
    pub(super) inputs: Option<&'a Inputs<'a>>,
    pub(super) rule: &'a CRule,
    pub(super) zone: &'a ZoneSlot,
    pub(super) zone_idx: u32,
    pub(super) areas: &'a AreaMap,
    pub(super) forecast: Option<f64>,
    /// Which `external` conditions hold where (zone-wide rules only; empty for per-sensor ones).
    pub(super) external: &'a BTreeMap<(u16, u32), ExternalHit>,
    /// How long the vehicle has been stopped inside this zone.
    pub(super) stopped_ms: Option<i64>,
    /// Zones within reach of this one, with their distance (road segments; empty elsewhere).
    pub(super) near: &'a [(u32, f64)],
}

pub(super) fn next_level(rule: &CRule, level: u8) -> Option<&plan::CLevel> {
    if level == NONE {
        None
    } else {
        rule.levels.get(level as usize)
    }
}

pub(super) struct Decision<'a> {
    pub(super) level: u8,
    /// The level that held on strict limits, with the text of the clause that made it hold (borrowed from the plan:
    /// this runs for every reading, and most readings change nothing).
    pub(super) raw: Option<(u8, &'a str)>,
    pub(super) value: f64,
}

/// The next level: the highest level met on strict limits, or the current one (or one below it) if it still holds
/// within the hysteresis margin — whichever is higher.
pub(super) fn decide<'a>(ctx: &Ctx<'a>, current: u8, counters: &mut EngineCounters) -> Decision<'a> {
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
pub(super) fn near_hit(ctx: &Ctx<'_>, rule: u16, level: u8, within_m: f64) -> Option<(u32, f64)> {
    // `near` is sorted nearest first (ties in zone order), so the first hit is the nearest and the walk stops at the
    // edge of `within_m` instead of visiting every zone within 50 km.
    ctx.near
        .iter()
        .take_while(|(_, d)| *d <= within_m)
        .find(|(z, _)| ctx.areas.get(&area_key(rule, *z)).is_some_and(|a| a.count_at_least(level) > 0))
        .copied()
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

pub(super) fn level_info(rule: &CRule, level: u8, decision: &Decision<'_>) -> Option<LevelInfo> {
    let l = next_level(rule, level)?;
    let mut info = l.info.clone();
    info.condition = match &decision.raw {
        Some((i, text)) if *i == level => text.to_string(),
        _ => l.any.first().or(l.all.first()).map(|c| format!("{} (held)", c.text)).unwrap_or_default(),
    };
    Some(info)
}

/// `threshold_<unit>` (e.g. `threshold_mm`) for zone limits the level uses, as the CAP debris-flow texts expect.
pub(super) fn add_zone_threshold_values(
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
