//! The rule set compiled for evaluation: rules indexed by metric, conditions resolved to indices (windows, rules,
//! zone-threshold keys), zone-wide rules in dependency order, and the per-metric series layout (bucket ring length,
//! window lengths, rate history) that fixes each sensor's state size.

use std::collections::BTreeMap;

use geo_index::ZoneKind;
use ingest::{Metric, SensorKind};

use crate::rules::{duration_text, Condition, Direction, Limit, Margin, Rule, RuleKind, RuleSet};
use crate::types::{ExternalFilter, LevelInfo, Publish};

/// "No level" in one-byte level slots.
pub(crate) const NONE: u8 = u8::MAX;
/// Pseudo rule index in `touched`: a forecast for the zone changed.
pub(crate) const FORECAST: u16 = u16::MAX;
/// Pseudo rule index in `touched`: partner agencies' warnings over the zone changed.
pub(crate) const EXTERNAL: u16 = u16::MAX - 1;
/// At most this many distinct accumulation windows per metric (sums are computed into a fixed array).
pub(crate) const MAX_WINDOWS: usize = 8;

pub(crate) fn metric_index(m: Metric) -> usize {
    m as usize
}

pub(crate) fn sensor_kind_bit(k: SensorKind) -> u32 {
    1 << (k as u32)
}

pub(crate) fn zone_kind_bit(k: ZoneKind) -> u32 {
    1 << (k as u32)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cmp {
    AtLeast,
    AtMost,
    Equals,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum CLimit {
    Value(f64),
    /// Index into `Plan::threshold_keys` (and each zone's resolved thresholds).
    Zone(u16),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cond {
    /// Accumulated sum over the series' window `w` (index into `SeriesPlan::windows`).
    Window {
        w: u8,
        cmp: Cmp,
        limit: CLimit,
    },
    Latest {
        cmp: Cmp,
        limit: CLimit,
    },
    Rate {
        cmp: Cmp,
        limit: CLimit,
    },
    /// At least `sensors` contributors of `rule` at level ≥ `level` in the same zone.
    Area {
        rule: u16,
        level: u8,
        sensors: u32,
    },
    Forecast {
        limit: CLimit,
    },
    /// A partner agency's warning passing `Plan::externals[idx]` covers the zone.
    External {
        idx: u16,
    },
    ZoneKind(ZoneKind),
    /// The vehicle has been below the rule's `speed_below` inside the zone for this long.
    Stopped {
        for_ms: i64,
    },
    /// Silent for more than this many expected intervals.
    Silent {
        missed: f64,
    },
    /// `rule` at level ≥ `level` in some zone within `within_m` metres of the zone (road segments).
    Near {
        rule: u16,
        level: u8,
        within_m: f64,
    },
    /// The vehicle detector is in this class on the zone.
    Traffic(crate::rules::TrafficClass),
}

/// One condition of the file; it may compile to several conditions that must all hold (geofence: zone AND stopped).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Clause {
    pub conds: Vec<Cond>,
    /// For operators: "24h ≥ 200", "2 sensors of tilt-rate ≥ level 1".
    pub text: String,
}

#[derive(Debug, Clone)]
pub(crate) struct CLevel {
    pub all: Vec<Clause>,
    pub any: Vec<Clause>,
    /// The finding's level info (its `condition` is filled when emitted).
    pub info: LevelInfo,
    pub values: BTreeMap<String, String>,
    pub approval: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct CRule {
    pub id: String,
    pub event: String,
    pub kind: RuleKind,
    pub metric: Option<Metric>,
    /// Bit set of sensor kinds; 0 = any.
    pub sensor_kinds: u32,
    pub sensors: Vec<String>,
    /// Bit set of zone kinds; 0 = any.
    pub zone_kinds: u32,
    pub zone_ids: Vec<String>,
    pub levels: Vec<CLevel>,
    pub min_duration: i64,
    pub margin: Margin,
    pub rate_window: i64,
    pub rate_min_span: i64,
    pub direction: Direction,
    pub speed_below: Option<f64>,
    pub publish: Publish,
    /// Rules (and `FORECAST`, `EXTERNAL`) whose zone state this rule reads.
    pub reads: Vec<u16>,
    /// The rules of `reads` read through `within_m` (in other zones within reach).
    pub near_reads: Vec<u16>,
    /// The largest `within_m` of the rule's conditions (0 without any): how far away a change can matter to it.
    pub near_reach: f64,
}

impl CRule {
    pub fn admits_sensor(&self, id: &str, kind: SensorKind) -> bool {
        (self.sensor_kinds == 0 || self.sensor_kinds & sensor_kind_bit(kind) != 0)
            && (self.sensors.is_empty() || self.sensors.iter().any(|s| s == id))
    }

    pub fn admits_zone(&self, id: &str, kind: Option<ZoneKind>) -> bool {
        let kind_ok = self.zone_kinds == 0 || kind.is_some_and(|k| self.zone_kinds & zone_kind_bit(k) != 0);
        kind_ok && (self.zone_ids.is_empty() || self.zone_ids.iter().any(|z| z == id))
    }

    /// [`CRule::admits_zone`] for an interned zone: `zone_ids` scopes are resolved once per zone (`scoped`, the
    /// sorted rule indices whose `zone_ids` name it) instead of string comparisons on every reading.
    #[inline]
    pub fn admits(&self, r: u16, kind: Option<ZoneKind>, scoped: &[u16]) -> bool {
        let kind_ok = self.zone_kinds == 0 || kind.is_some_and(|k| self.zone_kinds & zone_kind_bit(k) != 0);
        kind_ok && (self.zone_ids.is_empty() || scoped.binary_search(&r).is_ok())
    }
}

/// How a sensor's series of one metric is laid out.
#[derive(Debug, Clone, Default)]
pub(crate) struct SeriesPlan {
    /// Some per-sensor rule reads this metric: keep a series (latest value, duplicate filter).
    pub tracked: bool,
    /// Accumulation ring length in buckets (0: no accumulation rule on this metric).
    pub buckets: usize,
    /// Distinct window lengths in buckets, ascending.
    pub windows: Vec<u32>,
    /// Longest rate window in ms (0: no rate rule).
    pub rate_keep: i64,
    /// Rate thinning step.
    pub rate_step: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub set: RuleSet,
    pub rules: Vec<CRule>,
    /// Per metric: the per-sensor rules a reading of that metric evaluates.
    pub by_metric: Vec<Vec<u16>>,
    /// Geofence rules without a metric: evaluated on every reading of a sensor in scope.
    pub any_metric: Vec<u16>,
    pub deadman: Vec<u16>,
    /// Correlation and composite rules, each after the zone-wide rules it reads.
    pub derived_order: Vec<u16>,
    pub series: Vec<SeriesPlan>,
    pub bucket_ms: i64,
    /// Zone threshold names used by `"zone.<name>"` limits.
    pub threshold_keys: Vec<String>,
    pub forecast_valid_ms: i64,
    /// The distinct filters of `external` conditions; `Cond::External` indexes them.
    pub externals: Vec<ExternalFilter>,
    /// Traffic rules (evaluated on detectors' readings): the engine keeps detectors' reading sets only if any.
    pub traffic: Vec<u16>,
}

impl Plan {
    /// Compiles a validated rule set. Validation (`RuleSet::validate`) guarantees every reference resolves; the
    /// `expect`-free lookups below fall back to harmless values if it somehow did not.
    pub fn compile(set: RuleSet) -> Plan {
        let bucket_ms = set.engine.bucket as i64;
        let index: BTreeMap<&str, u16> = set.rules.iter().enumerate().map(|(i, r)| (r.id.as_str(), i as u16)).collect();
        let mut series = vec![SeriesPlan::default(); Metric::ALL.len()];
        let mut threshold_keys: Vec<String> = Vec::new();
        let mut externals: Vec<ExternalFilter> = Vec::new();

        // Series layout first: windows per metric.
        for rule in &set.rules {
            let Some(metric) = rule.metric else { continue };
            let sp = &mut series[metric_index(metric)];
            sp.tracked = true;
            match rule.kind {
                RuleKind::Accumulation => {
                    for c in conditions(rule) {
                        if let Some(w) = c.window {
                            let n = (w / set.engine.bucket) as u32;
                            if !sp.windows.contains(&n) {
                                sp.windows.push(n);
                            }
                        }
                    }
                }
                RuleKind::Rate => {
                    let window = rule.window.unwrap_or(3_600_000) as i64;
                    sp.rate_keep = sp.rate_keep.max(window);
                }
                _ => {}
            }
        }
        for sp in &mut series {
            sp.windows.sort_unstable();
            sp.windows.truncate(MAX_WINDOWS);
            sp.buckets = sp.windows.last().copied().unwrap_or(0) as usize;
            // About twelve samples per longest window: enough that the far end of a shorter window is close.
            sp.rate_step = (sp.rate_keep / 12).max(1);
        }

        let mut rules = Vec::with_capacity(set.rules.len());
        for rule in &set.rules {
            let mut reads: Vec<u16> = Vec::new();
            let mut levels = Vec::new();
            for (i, level) in rule.levels.iter().enumerate() {
                let mut compile_list = |list: &[Condition]| -> Vec<Clause> {
                    list.iter()
                        .map(|c| {
                            let mut out =
                                Compiled { keys: &mut threshold_keys, reads: &mut reads, externals: &mut externals };
                            compile_condition(rule, c, &series, &index, &mut out, bucket_ms)
                        })
                        .collect()
                };
                let all = compile_list(&level.all);
                let any = compile_list(&level.any);
                levels.push(CLevel {
                    all,
                    any,
                    info: LevelInfo {
                        index: i,
                        name: level.name.clone(),
                        name_en: level.name_en.clone(),
                        severity: level.severity,
                        urgency: level.urgency,
                        certainty: level.certainty,
                        condition: String::new(),
                    },
                    values: level_values(level),
                    approval: set.needs_approval(&rule.event, level.severity),
                });
            }
            reads.sort_unstable();
            reads.dedup();
            let mut near_reads: Vec<u16> = conditions(rule)
                .filter(|c| c.within_m.is_some())
                .filter_map(|c| c.rule.as_deref().and_then(|n| index.get(n).copied()))
                .collect();
            near_reads.sort_unstable();
            near_reads.dedup();
            let near_reach = conditions(rule).filter_map(|c| c.within_m).fold(0.0, f64::max);
            let window = rule.window.unwrap_or(3_600_000) as i64;
            let speed_below = conditions(rule).find_map(|c| c.speed_below);
            rules.push(CRule {
                id: rule.id.clone(),
                event: rule.event.clone(),
                kind: rule.kind,
                metric: rule.metric,
                sensor_kinds: rule.scope.sensor_kinds.iter().fold(0, |m, k| m | sensor_kind_bit(*k)),
                sensors: rule.scope.sensors.clone(),
                zone_kinds: rule.scope.zone_kinds.iter().fold(0, |m, k| m | zone_kind_bit(*k)),
                zone_ids: rule.scope.zone_ids.clone(),
                levels,
                min_duration: rule.min_duration.unwrap_or(0) as i64,
                margin: rule.margin(),
                rate_window: window,
                rate_min_span: rule.min_span.map(|s| s as i64).unwrap_or(window / 4),
                direction: rule.direction,
                speed_below,
                publish: rule.publish,
                reads,
                near_reads,
                near_reach,
            });
        }

        let mut by_metric = vec![Vec::new(); Metric::ALL.len()];
        let mut any_metric = Vec::new();
        let mut deadman = Vec::new();
        let traffic: Vec<u16> =
            rules.iter().enumerate().filter(|(_, r)| r.kind == RuleKind::Traffic).map(|(i, _)| i as u16).collect();
        for (i, r) in rules.iter().enumerate() {
            let i = i as u16;
            match (r.kind, r.metric) {
                (RuleKind::Deadman, _) => deadman.push(i),
                (RuleKind::Correlation | RuleKind::Composite, _) => {}
                (_, Some(m)) => by_metric[metric_index(m)].push(i),
                (_, None) => any_metric.push(i),
            }
        }
        let derived_order = topological(&rules);
        Plan {
            forecast_valid_ms: set.engine.forecast_valid_for as i64,
            set,
            rules,
            by_metric,
            any_metric,
            deadman,
            derived_order,
            series,
            bucket_ms,
            threshold_keys,
            externals,
            traffic,
        }
    }

    pub fn rule_index(&self, id: &str) -> Option<u16> {
        self.rules.iter().position(|r| r.id == id).map(|i| i as u16)
    }
}

/// A level's CAP values, with its template choice among them so that it travels with the alert to dissemination.
fn level_values(level: &crate::rules::Level) -> BTreeMap<String, String> {
    let mut values = level.values.clone();
    if let Some(t) = &level.template {
        values.insert(crate::rules::TEMPLATE_VALUE.to_string(), t.clone());
    }
    values
}

/// Where compiled conditions register what they need.
struct Compiled<'a> {
    keys: &'a mut Vec<String>,
    reads: &'a mut Vec<u16>,
    externals: &'a mut Vec<ExternalFilter>,
}

fn conditions(rule: &Rule) -> impl Iterator<Item = &Condition> {
    rule.levels.iter().flat_map(|l| l.any.iter().chain(l.all.iter()))
}

fn compile_limit(limit: &Limit, keys: &mut Vec<String>) -> CLimit {
    match limit {
        Limit::Value(v) => CLimit::Value(*v),
        Limit::Zone(key) => {
            let i = keys.iter().position(|k| k == key).unwrap_or_else(|| {
                keys.push(key.clone());
                keys.len() - 1
            });
            CLimit::Zone(i as u16)
        }
    }
}

fn cmp_of(c: &Condition, keys: &mut Vec<String>) -> (Cmp, CLimit) {
    if let Some(l) = &c.at_least {
        (Cmp::AtLeast, compile_limit(l, keys))
    } else if let Some(l) = &c.at_most {
        (Cmp::AtMost, compile_limit(l, keys))
    } else {
        (Cmp::Equals, CLimit::Value(c.equals.unwrap_or(0.0)))
    }
}

fn cmp_text(cmp: Cmp) -> &'static str {
    match cmp {
        Cmp::AtLeast => "≥",
        Cmp::AtMost => "≤",
        Cmp::Equals => "=",
    }
}

fn limit_text(c: &Condition) -> String {
    c.at_least
        .as_ref()
        .or(c.at_most.as_ref())
        .map(|l| l.to_string())
        .unwrap_or_else(|| c.equals.map(|v| v.to_string()).unwrap_or_default())
}

fn compile_condition(
    rule: &Rule,
    c: &Condition,
    series: &[SeriesPlan],
    index: &BTreeMap<&str, u16>,
    out: &mut Compiled<'_>,
    bucket_ms: i64,
) -> Clause {
    let (keys, reads, externals) = (&mut *out.keys, &mut *out.reads, &mut *out.externals);
    let mut conds = Vec::new();
    let mut text = Vec::new();
    let metric_name = rule.metric.map(|m| m.name()).unwrap_or("");
    match rule.kind {
        RuleKind::Threshold | RuleKind::Trip => {
            let (cmp, limit) = cmp_of(c, keys);
            conds.push(Cond::Latest { cmp, limit });
            text.push(format!("{metric_name} {} {}", cmp_text(cmp), limit_text(c)));
        }
        RuleKind::Accumulation => {
            let (cmp, limit) = cmp_of(c, keys);
            let n = (c.window.unwrap_or(0) as i64 / bucket_ms.max(1)) as u32;
            let sp = rule.metric.map(|m| &series[metric_index(m)]);
            let w = sp.and_then(|sp| sp.windows.iter().position(|&x| x == n)).unwrap_or(0) as u8;
            conds.push(Cond::Window { w, cmp, limit });
            text.push(format!("{} {} {}", duration_text::format(c.window.unwrap_or(0)), cmp_text(cmp), limit_text(c)));
        }
        RuleKind::Rate => {
            let (cmp, limit) = cmp_of(c, keys);
            conds.push(Cond::Rate { cmp, limit });
            text.push(format!("{metric_name} rate {} {}/h", cmp_text(cmp), limit_text(c)));
        }
        RuleKind::Traffic => {
            if let Some(class) = c.traffic {
                conds.push(Cond::Traffic(class));
                text.push(format!("detector {}", class.name()));
            }
        }
        RuleKind::Correlation | RuleKind::Composite | RuleKind::Geofence | RuleKind::Deadman => {
            if let Some(missed) = c.missed {
                conds.push(Cond::Silent { missed });
                text.push(format!("silent > {missed} intervals"));
            }
            if let Some(kind) = c.zone_kind {
                conds.push(Cond::ZoneKind(kind));
                text.push(format!(
                    "in a {} zone",
                    serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
                ));
            }
            let target =
                c.rule.as_ref().or(if rule.kind == RuleKind::Correlation { rule.source.as_ref() } else { None });
            if let Some(name) = target {
                if let Some(&r) = index.get(name.as_str()) {
                    let level = c.level.unwrap_or(0) as u8;
                    let sensors = c.sensors.unwrap_or(1);
                    reads.push(r);
                    if let Some(within_m) = c.within_m {
                        conds.push(Cond::Near { rule: r, level, within_m });
                        let lvl = if level > 0 { format!(" ≥ level {level}") } else { String::new() };
                        text.push(format!("{name} active{lvl} within {within_m:.0} m"));
                    } else {
                        conds.push(Cond::Area { rule: r, level, sensors });
                        let who = if sensors > 1 { format!("{sensors} sensors of ") } else { String::new() };
                        let lvl = if level > 0 { format!(" ≥ level {level}") } else { String::new() };
                        text.push(format!("{who}{name} active{lvl}"));
                    }
                }
            }
            if c.forecast == Some(true) {
                let limit = c.at_least.as_ref().map(|l| compile_limit(l, keys)).unwrap_or(CLimit::Value(f64::INFINITY));
                conds.push(Cond::Forecast { limit });
                reads.push(FORECAST);
                text.push(format!("forecast ≥ {}", limit_text(c)));
            }
            if let Some(external) = &c.external {
                let filter = external.filter();
                let idx = externals.iter().position(|f| *f == filter).unwrap_or_else(|| {
                    externals.push(filter);
                    externals.len() - 1
                });
                conds.push(Cond::External { idx: idx as u16 });
                reads.push(EXTERNAL);
                let what = external.event_code.as_deref().map(|c| format!(" {c}")).unwrap_or_default();
                text.push(format!("{}{what} warning covers the zone", external.source));
            }
            if c.speed_below.is_some() {
                let for_ms = c.stopped_for.unwrap_or(0) as i64;
                conds.push(Cond::Stopped { for_ms });
                text.push(format!(
                    "stopped (< {} km/h) for {}",
                    c.speed_below.unwrap_or(0.0),
                    duration_text::format(c.stopped_for.unwrap_or(0))
                ));
            }
        }
    }
    Clause { conds, text: text.join(" and ") }
}

/// Zone-wide rules in an order where every rule comes after the zone-wide rules it reads (validation rejects cycles).
fn topological(rules: &[CRule]) -> Vec<u16> {
    let mut order = Vec::new();
    let mut done = vec![false; rules.len()];
    fn visit(i: usize, rules: &[CRule], done: &mut [bool], order: &mut Vec<u16>, depth: usize) {
        if done[i] || depth > rules.len() {
            return;
        }
        done[i] = true;
        for &r in &rules[i].reads {
            if r != FORECAST && r != EXTERNAL && (r as usize) < rules.len() && !rules[r as usize].kind.is_per_sensor() {
                visit(r as usize, rules, done, order, depth + 1);
            }
        }
        order.push(i as u16);
    }
    for i in 0..rules.len() {
        if !rules[i].kind.is_per_sensor() {
            visit(i, rules, &mut done, &mut order, 0);
        }
    }
    order
}
