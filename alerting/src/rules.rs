//! Rule declarations (`config/rules.toml`) and their validation.
//!
//! A rule grades what it watches into ordered levels (lowest danger first); the highest level met decides the alert's
//! severity. Eight kinds share one level/condition shape so that the file reads the same everywhere:
//!
//! | kind | watches | condition fields |
//! |---|---|---|
//! | `threshold` | the latest value of `metric` | `at_least` or `at_most` (+ rule `min_duration`, hysteresis) |
//! | `accumulation` | rolling sums of `metric` | `window` + `at_least` |
//! | `rate` | change of `metric` per hour over the rule's `window` | `at_least` (units per hour) |
//! | `trip` | a digital value (wire sensors) | `equals` (or `at_most`/`at_least`); fires at once |
//! | `correlation` | how many sensors of rule `source` agree in a zone | `sensors` (k) + `level` |
//! | `composite` | other rules' state in the same zone, posted forecasts, partner agencies' warnings | `rule` (+ `level`, `sensors`), `forecast` + `at_least`, `external` |
//! | `geofence` | where a mobile sensor is | `zone_kind`, `rule` (+ `level`), `speed_below` + `stopped_for` |
//! | `deadman` | how long a sensor has been silent (driven by `RuleEngine::tick`) | `missed` (+ `rule`, `level`) |
//! | `traffic` | a vehicle detector's class (`[traffic]`, [`traffic`]): slowed, blocked, device fault | `traffic` |
//!
//! A composite condition with `within_m` reads the other rule in any zone within that distance of the zone (0: the
//! zone itself) instead of the zone alone: "a road segment blocked within 3 km of an active landslide".
//!
//! A level holds when every condition of its `all` list holds and, if `any` is not empty, one of `any` does. A limit
//! (`at_least`, `at_most`) is a number or `"zone.<name>"`: the value of the zone's `thresholds` map in
//! `config/zones.geojson` (debris-flow rainfall thresholds differ per area). Errors name the file, the rule and the
//! field (`levels[1].any[0].window`).
//!
//! An `external` condition holds while an active warning of a partner agency (inbound CAP, the `inbound` crate) from
//! the named source covers the zone: `{ external = { source = "swcb", event_code = "debrisFlow" } }`. Which sources
//! exist and which per-level CAP texts (`template`) exist is known only beside the other config files, so
//! [`RuleSet::check_context`] checks those names once everything is loaded (at start and on every reload).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;

use geo_index::ZoneKind;
use ingest::{Metric, SensorKind};
use serde::{Deserialize, Deserializer, Serialize};

pub use crate::types::Publish;
use crate::types::{AlertingError, Certainty, ExternalFilter, Severity, Urgency};

pub mod traffic;
pub use traffic::{TrafficClass, TrafficSettings};

/// The alert value that carries a level's `template` (the per-level CAP texts) to dissemination.
pub const TEMPLATE_VALUE: &str = "cap_template";

/// At most this many levels per rule: level indices fit the engine's one-byte level slots.
pub const MAX_LEVELS: usize = 8;

/// At most this many buckets per accumulation series: 4 bytes each, so the rolling windows of one sensor stay below
/// 1 KiB together with the rest of its state (the engine's per-sensor memory budget).
pub const MAX_BUCKETS: u64 = 144;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// The latest value against each level's limit, held for `min_duration` before it counts, cleared with hysteresis.
    Threshold,
    /// Rolling sums of the metric over each condition's window (rain), from fixed event-time buckets.
    Accumulation,
    /// Change per hour over the rule's `window` (tilt °/h, extensometer mm/h).
    Rate,
    /// A digital event (a wire sensor's `wire_intact = false`): fires on the reading that shows it, no delay.
    Trip,
    /// k sensors of the `source` rule agreeing inside one zone: confirms or escalates what single sensors report.
    Correlation,
    /// AND/OR of other rules' state in a zone, and of forecasts posted for it.
    Composite,
    /// A mobile sensor (hazmat truck) inside a zone of a kind, or inside an area where another rule is active.
    Geofence,
    /// A sensor silent for more than `missed` × its expected interval. Evaluated by `RuleEngine::tick`.
    Deadman,
    /// A vehicle detector's class (blocked, slowed, device fault) from its readings and its segment's neighbours.
    Traffic,
}

impl RuleKind {
    /// Rules evaluated per sensor (their alerts list sensors); the others are evaluated per zone.
    pub fn is_per_sensor(self) -> bool {
        !matches!(self, RuleKind::Correlation | RuleKind::Composite)
    }

    fn needs_metric(self) -> bool {
        matches!(self, RuleKind::Threshold | RuleKind::Accumulation | RuleKind::Rate | RuleKind::Trip)
    }
}

/// Which way a rate counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The size of the change, up or down (tilt can go either way).
    #[default]
    Either,
    /// Only increases (extensometer opening).
    Rising,
    /// Only decreases.
    Falling,
}

/// A limit: a number, or the name of a zone threshold (`"zone.rain_24h_mm"`).
#[derive(Debug, Clone, PartialEq)]
pub enum Limit {
    Value(f64),
    /// Key of the zone's `thresholds` map; the condition does not hold in zones without it.
    Zone(String),
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Value(v) => write!(f, "{v}"),
            Limit::Zone(key) => write!(f, "zone.{key}"),
        }
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Limit;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or \"zone.<threshold name>\"")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Limit, E> {
                Ok(Limit::Value(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Limit, E> {
                Ok(Limit::Value(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Limit, E> {
                Ok(Limit::Value(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Limit, E> {
                match v.strip_prefix("zone.") {
                    Some(key) if !key.is_empty() => Ok(Limit::Zone(key.to_string())),
                    _ => Err(E::custom(format!("`{v}`: expected a number or \"zone.<threshold name>\""))),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One condition of a level. Which fields a kind accepts is checked on load (see the module table); a field that a
/// kind does not use is an error rather than silently ignored.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Accumulation: the rolling window ("1h", "3h", "24h"), a multiple of the engine's bucket.
    #[serde(default, with = "duration_text::option")]
    pub window: Option<u64>,
    /// The measured value must be at or above this.
    #[serde(default)]
    pub at_least: Option<Limit>,
    /// The measured value must be at or below this.
    #[serde(default)]
    pub at_most: Option<Limit>,
    /// Trip: the value that trips (0 = `false` for booleans).
    #[serde(default)]
    pub equals: Option<f64>,
    /// Another rule whose state in the same zone this condition reads.
    #[serde(default)]
    pub rule: Option<String>,
    /// With `rule`: that rule's level index must be at least this (default 0: any level).
    #[serde(default)]
    pub level: Option<usize>,
    /// With `rule` (or in a correlation): at least this many sensors must be at that level (default 1).
    #[serde(default)]
    pub sensors: Option<u32>,
    /// Composite: compare the forecast posted for the zone (`RuleEngine::post_forecast`) with `at_least`.
    #[serde(default)]
    pub forecast: Option<bool>,
    /// Geofence: the zone is of this kind (`restricted`).
    #[serde(default)]
    pub zone_kind: Option<ZoneKind>,
    /// Geofence: the vehicle's latest `speed_kmh` is below this …
    #[serde(default)]
    pub speed_below: Option<f64>,
    /// … and has been, inside the zone, for this long.
    #[serde(default, with = "duration_text::option")]
    pub stopped_for: Option<u64>,
    /// Deadman: silent for more than this many expected intervals (`interval_s` of the sensor registry).
    #[serde(default)]
    pub missed: Option<f64>,
    /// Composite: a partner agency's warning (inbound CAP) covers the zone.
    #[serde(default)]
    pub external: Option<ExternalCondition>,
    /// Traffic: the detector is in this class (`slowed`, `blocked`, `device_fault`).
    #[serde(default)]
    pub traffic: Option<TrafficClass>,
    /// Composite, with `rule`: that rule's state in any zone within this many metres of the zone (0: the zone).
    #[serde(default)]
    pub within_m: Option<f64>,
}

/// "An active warning from inbound source `source` covers this zone", optionally narrowed. Only Actual messages
/// count: an agency's exercise must not trip a real rule.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalCondition {
    /// A `[[feed]]` or `[[push]]` name of `config/inbound.toml`.
    pub source: String,
    /// Taiwan CAP profile event code (`debrisFlow`, `rainfall`, `highWater`, …); absent: any.
    #[serde(default)]
    pub event_code: Option<String>,
    /// CAP category (`Geo`, `Met`, …) of the warning's primary info; absent: any.
    #[serde(default)]
    pub category: Option<String>,
    /// At least this CAP severity (`Minor` < `Moderate` < `Severe` < `Extreme`); absent: any.
    #[serde(default)]
    pub min_severity: Option<String>,
}

impl ExternalCondition {
    /// The inbound filter this condition stands for (validated names; unknown ones would have failed the load).
    pub fn filter(&self) -> ExternalFilter {
        ExternalFilter {
            event_codes: self.event_code.iter().cloned().collect(),
            sources: vec![self.source.clone()],
            categories: self.category.as_deref().and_then(encoders::cap::Category::parse).into_iter().collect(),
            min_severity: self.min_severity.as_deref().and_then(encoders::cap::Severity::parse),
            ..ExternalFilter::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// Short name for operators and headlines, e.g. "豪雨".
    pub name: String,
    pub name_en: String,
    /// One of these must hold (CWA: 豪雨 = 200 mm in 24 h OR 100 mm in 3 h).
    #[serde(default)]
    pub any: Vec<Condition>,
    /// All of these must hold (debris-flow red: rain threshold AND ground movement).
    #[serde(default)]
    pub all: Vec<Condition>,
    pub severity: Severity,
    #[serde(default = "Urgency::immediate")]
    pub urgency: Urgency,
    #[serde(default = "Certainty::observed")]
    pub certainty: Certainty,
    /// Extra CAP template values for this level (e.g. `warning_level = "2"` for river_level texts).
    #[serde(default)]
    pub values: BTreeMap<String, String>,
    /// Which per-level texts of the event's CAP template this level uses (`[event.<event>.level.<template>]` in
    /// `config/cap_templates.toml`): debris-flow yellow and red read differently. Absent: the event's own texts.
    #[serde(default)]
    pub template: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Zone kinds whose zones give the alert its area (`debris_flow`, `township`, …); empty: every zone. A sensor
    /// outside every zone in scope raises nothing under the rule.
    #[serde(default)]
    pub zone_kinds: Vec<ZoneKind>,
    /// Only these zones (ids of `config/zones.geojson`); empty: no restriction.
    #[serde(default)]
    pub zone_ids: Vec<String>,
    /// Only these sensor kinds; empty: any kind.
    #[serde(default)]
    pub sensor_kinds: Vec<SensorKind>,
    /// Only these sensors; empty: any sensor.
    #[serde(default)]
    pub sensors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique; the alert key is (rule id, zone id), so renaming a rule starts new alerts.
    pub id: String,
    pub kind: RuleKind,
    /// Event type: the key of CAP templates and the `event` of websocket messages (`heavy_rain`, `river_level`…).
    pub event: String,
    /// What a reading must measure to be evaluated (threshold, accumulation, rate, trip; optional for geofence).
    #[serde(default)]
    pub metric: Option<Metric>,
    #[serde(default)]
    pub scope: Scope,
    /// Levels in increasing order of danger; severities may not decrease.
    pub levels: Vec<Level>,
    /// Threshold: a level counts only once a reading at least this long after the first one that met it still
    /// meets it (event time).
    #[serde(default, with = "duration_text::option")]
    pub min_duration: Option<u64>,
    /// Hysteresis as a fraction: a level holds until its measure falls below `limit × (1 − clear_margin)` (above
    /// `limit × (1 + clear_margin)` for `at_most`). Default 0.1 unless `clear_delta` is given.
    #[serde(default)]
    pub clear_margin: Option<f64>,
    /// Hysteresis in the metric's unit instead (river level: clears 0.3 m below the level).
    #[serde(default)]
    pub clear_delta: Option<f64>,
    /// Rate: the span the change is measured over (default 1 h).
    #[serde(default, with = "duration_text::option")]
    pub window: Option<u64>,
    /// Rate: the shortest span a rate is computed from, so that two readings seconds apart do not make a rate out of
    /// noise (default a quarter of `window`).
    #[serde(default, with = "duration_text::option")]
    pub min_span: Option<u64>,
    /// Rate: which way counts.
    #[serde(default)]
    pub direction: Direction,
    /// Correlation: the per-sensor rule whose sensors are counted.
    #[serde(default)]
    pub source: Option<String>,
    /// Who sees this rule's alerts.
    #[serde(default)]
    pub publish: Publish,
    /// For people reading the file and the operator UI.
    #[serde(default)]
    pub description: Option<String>,
}

impl Rule {
    /// The hysteresis as the engine applies it.
    pub fn margin(&self) -> Margin {
        match (self.clear_delta, self.clear_margin) {
            (Some(d), _) => Margin::Delta(d),
            (None, Some(m)) => Margin::Fraction(m),
            (None, None) => Margin::Fraction(0.1),
        }
    }

    /// Rules this rule reads (conditions' `rule` and a correlation's `source`).
    pub fn references(&self) -> impl Iterator<Item = &str> {
        let conditions = self.levels.iter().flat_map(|l| l.any.iter().chain(l.all.iter()));
        self.source.as_deref().into_iter().chain(conditions.filter_map(|c| c.rule.as_deref()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Margin {
    Fraction(f64),
    Delta(f64),
}

/// Engine-wide settings (`[engine]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    /// Width of the accumulation buckets. Windows are whole numbers of buckets; the longest window of a metric ÷
    /// bucket ≤ 160 (4 bytes a bucket keeps a sensor's windows within its 1 KiB budget). 10 min matches the CWA
    /// gauges' reporting step, so "1 h" means the last six 10-minute steps.
    #[serde(default = "default_bucket", with = "duration_text::required")]
    pub bucket: u64,
    /// How long a forecast posted for a zone counts before it lapses (checked by `tick`).
    #[serde(default = "default_forecast_valid", with = "duration_text::required")]
    pub forecast_valid_for: u64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self { bucket: default_bucket(), forecast_valid_for: default_forecast_valid() }
    }
}

fn default_bucket() -> u64 {
    600_000
}

fn default_forecast_valid() -> u64 {
    12 * 3_600_000
}

/// A class of alerts whose public release waits for an operator (`[[approval]]`). Operators see such alerts at once.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalClass {
    /// Event types of the class; empty: every event.
    #[serde(default)]
    pub events: Vec<String>,
    /// The class holds alerts at this severity or above.
    pub min_severity: Severity,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    engine: EngineSettings,
    #[serde(default)]
    approval: Vec<ApprovalClass>,
    #[serde(default)]
    rule: Vec<Rule>,
    #[serde(default)]
    traffic: TrafficSettings,
}

#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub engine: EngineSettings,
    pub approval: Vec<ApprovalClass>,
    /// `[traffic]`: how vehicle detectors are classified for `traffic` rules.
    pub traffic: TrafficSettings,
}

impl RuleSet {
    pub fn from_toml(text: &str, file: &Path) -> Result<Self, AlertingError> {
        let parsed: RulesFile =
            toml::from_str(text).map_err(|e| AlertingError::Config { file: file.into(), message: e.to_string() })?;
        let set =
            RuleSet { rules: parsed.rule, engine: parsed.engine, approval: parsed.approval, traffic: parsed.traffic };
        set.validate().map_err(|(rule, message)| AlertingError::Rule { file: file.into(), rule, message })?;
        Ok(set)
    }

    /// Whether alerts of `event` at `severity` wait for an operator's approval before public release.
    pub fn needs_approval(&self, event: &str, severity: Severity) -> bool {
        self.approval
            .iter()
            .any(|c| severity >= c.min_severity && (c.events.is_empty() || c.events.iter().any(|e| e == event)))
    }

    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// Checks everything the engine relies on; the error is (rule id, message naming the field).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let settings = &self.engine;
        if settings.bucket < 1000 || settings.bucket > 86_400_000 {
            return Err(("[engine]".into(), "`bucket` must be between 1 s and 1 d".into()));
        }
        if settings.forecast_valid_for == 0 {
            return Err(("[engine]".into(), "`forecast_valid_for` must be positive".into()));
        }
        self.traffic.validate().map_err(|m| ("[traffic]".to_string(), m))?;
        for (i, class) in self.approval.iter().enumerate() {
            if class.events.iter().any(|e| e.is_empty()) {
                return Err((format!("[[approval]] #{i}"), "`events`: names must not be empty".into()));
            }
        }
        let by_id: HashMap<&str, &Rule> = self.rules.iter().map(|r| (r.id.as_str(), r)).collect();
        let mut seen = HashSet::new();
        for rule in &self.rules {
            let fail = |message: String| Err((rule.id.clone(), message));
            if rule.id.is_empty()
                || rule.id.len() > 64
                || !rule.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return fail("`id` must be 1-64 ASCII letters, digits, '-' or '_'".into());
            }
            if !seen.insert(rule.id.as_str()) {
                return fail("duplicate rule id".into());
            }
            if rule.event.is_empty()
                || !rule.event.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return fail("`event` must be lower-case ASCII letters, digits or '_' (a CAP template key)".into());
            }
            validate_rule(rule, settings, &by_id).or_else(fail)?;
        }
        let mut windows: HashMap<Metric, HashSet<u64>> = HashMap::new();
        for rule in self.rules.iter().filter(|r| r.kind == RuleKind::Accumulation) {
            let Some(metric) = rule.metric else { continue };
            let set = windows.entry(metric).or_default();
            set.extend(rule.levels.iter().flat_map(|l| l.any.iter().chain(l.all.iter())).filter_map(|c| c.window));
            if set.len() > 8 {
                return Err((
                    rule.id.clone(),
                    format!("more than 8 distinct windows over `{metric}` across all rules"),
                ));
            }
        }
        check_cycles(&self.rules)
    }
}

fn validate_rule(rule: &Rule, settings: &EngineSettings, by_id: &HashMap<&str, &Rule>) -> Result<(), String> {
    use RuleKind::*;
    match (rule.kind.needs_metric(), rule.metric) {
        (true, None) => return Err(format!("`metric` is required for {} rules", kind_name(rule.kind))),
        (false, Some(_)) if rule.kind != Geofence => {
            return Err(format!("`metric` is not used by {} rules", kind_name(rule.kind)))
        }
        _ => {}
    }
    if rule.levels.is_empty() {
        return Err("`levels`: at least one level is required".into());
    }
    if rule.levels.len() > MAX_LEVELS {
        return Err(format!("`levels`: at most {MAX_LEVELS} levels"));
    }
    if rule.min_duration.is_some() && rule.kind != Threshold {
        return Err(format!(
            "`min_duration` is only for threshold rules ({} rules decide at once)",
            kind_name(rule.kind)
        ));
    }
    if let Some(m) = rule.clear_margin {
        if !(0.0..1.0).contains(&m) {
            return Err(format!("`clear_margin` {m} must be in 0..1"));
        }
        if rule.clear_delta.is_some() {
            return Err("give `clear_margin` or `clear_delta`, not both".into());
        }
    }
    if let Some(d) = rule.clear_delta {
        if !d.is_finite() || d < 0.0 {
            return Err(format!("`clear_delta` {d} must be a non-negative number"));
        }
    }
    if rule.kind != Rate && (rule.window.is_some() || rule.min_span.is_some() || rule.direction != Direction::Either) {
        return Err("`window`, `min_span` and `direction` are only for rate rules".into());
    }
    if rule.kind == Rate {
        let window = rule.window.unwrap_or(3_600_000);
        if window == 0 || window > 86_400_000 {
            return Err("`window` must be between 1 ms and 24 h".into());
        }
        if rule.min_span.is_some_and(|s| s == 0 || s > window) {
            return Err("`min_span` must be positive and at most `window`".into());
        }
    }
    match (rule.kind, &rule.source) {
        (Correlation, None) => return Err("`source` is required for correlation rules".into()),
        (Correlation, Some(source)) => match by_id.get(source.as_str()) {
            None => return Err(format!("`source`: no rule `{source}`")),
            Some(s) if !s.kind.is_per_sensor() => {
                return Err(format!("`source`: `{source}` is a {} rule; correlation counts sensors", kind_name(s.kind)))
            }
            Some(s) if s.id == rule.id => return Err("`source` names the rule itself".into()),
            _ => {}
        },
        (_, Some(_)) => return Err("`source` is only for correlation rules".into()),
        _ => {}
    }
    for name in &rule.scope.zone_ids {
        if name.is_empty() {
            return Err("`scope.zone_ids`: ids must not be empty".into());
        }
    }
    let mut speed_limit: Option<f64> = None;
    for (i, level) in rule.levels.iter().enumerate() {
        if level.any.is_empty() && level.all.is_empty() {
            return Err(format!("`levels[{i}]`: give at least one condition in `any` or `all`"));
        }
        if i > 0 && level.severity < rule.levels[i - 1].severity {
            return Err(format!(
                "`levels[{i}].severity` {:?} is below `levels[{}].severity` {:?}: levels go in increasing order of danger",
                level.severity,
                i - 1,
                rule.levels[i - 1].severity
            ));
        }
        if level.name.trim().is_empty() || level.name_en.trim().is_empty() {
            return Err(format!("`levels[{i}]`: `name` and `name_en` must not be empty"));
        }
        if let Some(key) = &level.template {
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
                return Err(format!("`levels[{i}].template` `{key}` must be lower-case ASCII letters, digits or '_'"));
            }
        }
        // A deadman level is about silence: `missed` in an `all` condition, or in every `any` condition.
        if rule.kind == Deadman
            && !level.all.iter().any(|c| c.missed.is_some())
            && (level.any.is_empty() || level.any.iter().any(|c| c.missed.is_none()))
        {
            return Err(format!("`levels[{i}]`: a deadman level needs `missed` in `all` or in every `any` condition"));
        }
        for (list, conditions) in [("any", &level.any), ("all", &level.all)] {
            for (j, c) in conditions.iter().enumerate() {
                let at = format!("`levels[{i}].{list}[{j}]");
                validate_condition(rule, c, settings, by_id, &at)?;
                if let Some(s) = c.speed_below {
                    if speed_limit.is_some_and(|p| p != s) {
                        return Err(format!(
                            "{at}.speed_below`: one stop speed per rule (the vehicle's stop is tracked once)"
                        ));
                    }
                    speed_limit = Some(s);
                }
            }
        }
    }
    Ok(())
}

fn kind_name(kind: RuleKind) -> &'static str {
    match kind {
        RuleKind::Threshold => "threshold",
        RuleKind::Accumulation => "accumulation",
        RuleKind::Rate => "rate",
        RuleKind::Trip => "trip",
        RuleKind::Correlation => "correlation",
        RuleKind::Composite => "composite",
        RuleKind::Geofence => "geofence",
        RuleKind::Deadman => "deadman",
        RuleKind::Traffic => "traffic",
    }
}

/// `at` is "`levels[i].any[j]" (opening back-quote included) so that messages read "`levels[0].any[1].window` …".
fn validate_condition(
    rule: &Rule,
    c: &Condition,
    settings: &EngineSettings,
    by_id: &HashMap<&str, &Rule>,
    at: &str,
) -> Result<(), String> {
    use RuleKind::*;
    let kind = rule.kind;
    // The fields each kind may use; anything else present is an error naming the field.
    let allowed: &[&str] = match kind {
        Threshold => &["at_least", "at_most"],
        Accumulation => &["window", "at_least"],
        Rate => &["at_least"],
        Trip => &["equals", "at_least", "at_most"],
        Correlation => &["sensors", "level", "rule"],
        Composite => &["rule", "level", "sensors", "forecast", "at_least", "external", "within_m"],
        Geofence => &["zone_kind", "rule", "level", "speed_below", "stopped_for"],
        Deadman => &["missed", "rule", "level"],
        Traffic => &["traffic"],
    };
    let present: [(&str, bool); 15] = [
        ("traffic", c.traffic.is_some()),
        ("within_m", c.within_m.is_some()),
        ("window", c.window.is_some()),
        ("at_least", c.at_least.is_some()),
        ("at_most", c.at_most.is_some()),
        ("equals", c.equals.is_some()),
        ("rule", c.rule.is_some()),
        ("level", c.level.is_some()),
        ("sensors", c.sensors.is_some()),
        ("forecast", c.forecast.is_some()),
        ("zone_kind", c.zone_kind.is_some()),
        ("speed_below", c.speed_below.is_some()),
        ("stopped_for", c.stopped_for.is_some()),
        ("missed", c.missed.is_some()),
        ("external", c.external.is_some()),
    ];
    for (name, is) in present {
        if is && !allowed.contains(&name) {
            return Err(format!("{at}.{name}` is not used by {} rules", kind_name(kind)));
        }
    }
    let check_limit = |name: &str, limit: &Option<Limit>| -> Result<(), String> {
        match limit {
            Some(Limit::Value(v)) if !v.is_finite() => Err(format!("{at}.{name}` must be a finite number")),
            _ => Ok(()),
        }
    };
    check_limit("at_least", &c.at_least)?;
    check_limit("at_most", &c.at_most)?;
    match kind {
        Threshold | Trip => {
            let n = [c.at_least.is_some(), c.at_most.is_some(), c.equals.is_some()].iter().filter(|b| **b).count();
            if n != 1 {
                let what = if kind == Trip { "`equals`, `at_least` or `at_most`" } else { "`at_least` or `at_most`" };
                return Err(format!("{at}`: give exactly one of {what}"));
            }
            if c.equals.is_some_and(|v| !v.is_finite()) {
                return Err(format!("{at}.equals` must be a finite number"));
            }
        }
        Accumulation => {
            let Some(w) = c.window else {
                return Err(format!("{at}.window` is required for accumulation rules"));
            };
            if c.at_least.is_none() {
                return Err(format!("{at}.at_least` is required"));
            }
            if w == 0 || w % settings.bucket != 0 {
                return Err(format!(
                    "{at}.window` {} must be a positive multiple of the engine bucket {}",
                    duration_text::format(w),
                    duration_text::format(settings.bucket)
                ));
            }
            if w / settings.bucket > MAX_BUCKETS {
                return Err(format!(
                    "{at}.window` {} needs {} buckets of {}; at most {MAX_BUCKETS} keep a sensor's state within 1 KiB \
                     (raise `[engine].bucket`)",
                    duration_text::format(w),
                    w / settings.bucket,
                    duration_text::format(settings.bucket)
                ));
            }
        }
        Rate => {
            if c.at_least.is_none() {
                return Err(format!("{at}.at_least` (units per hour) is required"));
            }
        }
        Correlation => {
            if c.sensors.is_none_or(|k| k == 0) {
                return Err(format!("{at}.sensors` (how many sensors must agree, ≥ 1) is required"));
            }
            if let Some(r) = &c.rule {
                if Some(r) != rule.source.as_ref() {
                    return Err(format!("{at}.rule` must be the `source` rule or absent"));
                }
            }
        }
        Composite => match (&c.rule, c.forecast, &c.external) {
            (Some(_), None, None) => {
                if c.at_least.is_some() {
                    return Err(format!("{at}.at_least` is for forecast conditions; use `level` with `rule`"));
                }
            }
            (None, Some(true), None) => {
                if c.at_least.is_none() {
                    return Err(format!("{at}.at_least` is required with `forecast`"));
                }
                if c.level.is_some() || c.sensors.is_some() {
                    return Err(format!("{at}`: `level` and `sensors` go with `rule`, not `forecast`"));
                }
            }
            (None, Some(false), None) => return Err(format!("{at}.forecast` = false means nothing; leave it out")),
            (None, None, Some(external)) => {
                if c.at_least.is_some() || c.level.is_some() || c.sensors.is_some() {
                    return Err(format!("{at}`: `at_least`, `level` and `sensors` do not go with `external`"));
                }
                validate_external(external, at)?;
            }
            _ => return Err(format!("{at}`: give one of `rule`, `forecast = true` or `external`")),
        },
        Geofence => {
            if c.zone_kind.is_none() && c.rule.is_none() {
                return Err(format!("{at}`: give `zone_kind` or `rule` (the area the vehicle must be in)"));
            }
            if c.stopped_for.is_some() && c.speed_below.is_none() {
                return Err(format!("{at}.stopped_for` needs `speed_below`"));
            }
            if c.speed_below.is_some_and(|s| !s.is_finite() || s <= 0.0) {
                return Err(format!("{at}.speed_below` must be a positive number (km/h)"));
            }
        }
        Traffic => match c.traffic {
            None => return Err(format!("{at}.traffic` (`slowed`, `blocked` or `device_fault`) is required")),
            Some(TrafficClass::Normal) => {
                return Err(format!("{at}.traffic` = \"normal\" is no level; a level clears when traffic is normal"))
            }
            Some(_) => {}
        },
        Deadman => {
            if c.missed.is_some_and(|m| !m.is_finite() || m <= 0.0) {
                return Err(format!("{at}.missed` must be a number of expected intervals > 0"));
            }
            if c.missed.is_none() && c.rule.is_none() {
                return Err(format!("{at}`: give `missed` (and optionally `rule`)"));
            }
        }
    }
    if let Some(d) = c.within_m {
        if c.rule.is_none() {
            return Err(format!("{at}.within_m` goes with `rule`"));
        }
        if !d.is_finite() || !(0.0..=50_000.0).contains(&d) {
            return Err(format!("{at}.within_m` {d} must be 0-50000 metres"));
        }
        if c.sensors.is_some_and(|k| k > 1) {
            return Err(format!("{at}`: `sensors` counts within one zone; it does not go with `within_m`"));
        }
    }
    if c.level.is_some() || c.sensors.is_some() {
        let target = c.rule.as_ref().or(rule.source.as_ref());
        if target.is_none() {
            return Err(format!("{at}`: `level` and `sensors` need `rule`"));
        }
    }
    if let Some(name) = c.rule.as_ref().or(if kind == Correlation { rule.source.as_ref() } else { None }) {
        let Some(target) = by_id.get(name.as_str()) else {
            return Err(format!("{at}.rule`: no rule `{name}`"));
        };
        if target.id == rule.id {
            return Err(format!("{at}.rule` names the rule itself"));
        }
        if let Some(level) = c.level {
            if level >= target.levels.len() {
                return Err(format!("{at}.level` {level}: rule `{name}` has {} levels", target.levels.len()));
            }
        }
        if c.sensors.is_some_and(|k| k > 1) && !target.kind.is_per_sensor() {
            return Err(format!("{at}.sensors`: `{name}` is a zone-wide rule; only per-sensor rules count sensors"));
        }
    }
    Ok(())
}

/// The fields of an `external` condition, each named in the error (`levels[0].any[2].external.source`).
fn validate_external(e: &ExternalCondition, at: &str) -> Result<(), String> {
    let source_ok = !e.source.is_empty()
        && e.source.len() <= 64
        && e.source.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !source_ok {
        return Err(format!(
            "{at}.external.source` `{}` must be an inbound source name (1-64 of a-z, 0-9, `-`, `_`)",
            e.source
        ));
    }
    if let Some(code) = &e.event_code {
        if code.is_empty() || code.len() > 64 || code.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
            return Err(format!("{at}.external.event_code` must be a CAP event code without spaces"));
        }
    }
    if let Some(category) = &e.category {
        if encoders::cap::Category::parse(category).is_none() {
            let all: Vec<&str> = encoders::cap::Category::ALL.iter().map(|c| c.as_str()).collect();
            return Err(format!("{at}.external.category` `{category}` is not a CAP category ({})", all.join(", ")));
        }
    }
    if let Some(severity) = &e.min_severity {
        match encoders::cap::Severity::parse(severity) {
            Some(s) if s != encoders::cap::Severity::Unknown => {}
            _ => {
                return Err(format!(
                    "{at}.external.min_severity` `{severity}` must be Minor, Moderate, Severe or Extreme"
                ))
            }
        }
    }
    Ok(())
}

/// Names a rule file may use that are defined in other files: checked by [`RuleSet::check_context`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RuleContext<'a> {
    /// Source names of `config/inbound.toml` (`[[feed]]` and `[[push]]`); empty when inbound CAP is off.
    pub inbound_sources: &'a [String],
    /// The CAP templates, when CAP messages are built (dissemination on); `None` skips the `template` check.
    pub templates: Option<&'a encoders::cap::Templates>,
}

impl RuleSet {
    /// Checks the names a rule borrows from other config files: every `external.source` is a configured inbound
    /// source, and every level `template` exists for the rule's event in the CAP templates. The error names the
    /// file, the rule and the field, like the load errors.
    pub fn check_context(&self, ctx: &RuleContext<'_>, file: &Path) -> Result<(), AlertingError> {
        let fail =
            |rule: &Rule, message: String| AlertingError::Rule { file: file.into(), rule: rule.id.clone(), message };
        for rule in &self.rules {
            for (i, level) in rule.levels.iter().enumerate() {
                for (list, conditions) in [("any", &level.any), ("all", &level.all)] {
                    for (j, c) in conditions.iter().enumerate() {
                        let Some(external) = &c.external else { continue };
                        if !ctx.inbound_sources.contains(&external.source) {
                            let known = if ctx.inbound_sources.is_empty() {
                                "inbound CAP is not configured (`files.inbound`)".to_string()
                            } else {
                                format!("the inbound sources are {}", ctx.inbound_sources.join(", "))
                            };
                            return Err(fail(
                                rule,
                                format!(
                                    "`levels[{i}].{list}[{j}].external.source`: no inbound source `{}`; {known}",
                                    external.source
                                ),
                            ));
                        }
                    }
                }
                if let (Some(key), Some(templates)) = (&level.template, ctx.templates) {
                    let found = templates.event(&rule.event).ok().is_some_and(|t| t.levels.contains_key(key));
                    if !found {
                        return Err(fail(
                            rule,
                            format!(
                                "`levels[{i}].template`: the CAP templates have no [event.{}.level.{key}]",
                                rule.event
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The inbound source names the rules' `external` conditions read.
    pub fn external_sources(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .flat_map(|r| r.levels.iter())
            .flat_map(|l| l.any.iter().chain(l.all.iter()))
            .filter_map(|c| c.external.as_ref().map(|e| e.source.as_str()))
    }
}

/// Composite and correlation rules read other rules' zone state; a cycle would have no evaluation order.
fn check_cycles(rules: &[Rule]) -> Result<(), (String, String)> {
    let index: HashMap<&str, usize> = rules.iter().enumerate().map(|(i, r)| (r.id.as_str(), i)).collect();
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut mark = vec![0u8; rules.len()];
    fn visit(
        i: usize,
        rules: &[Rule],
        index: &HashMap<&str, usize>,
        mark: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Result<(), (String, String)> {
        if mark[i] == 2 {
            return Ok(());
        }
        if mark[i] == 1 {
            let names: Vec<&str> = path.iter().map(|&p| rules[p].id.as_str()).collect();
            return Err((
                rules[i].id.clone(),
                format!("rules read each other in a cycle: {} → {}", names.join(" → "), rules[i].id),
            ));
        }
        mark[i] = 1;
        path.push(i);
        // Per-sensor rules that read zone state (geofence, deadman) read it as of their evaluation and feed nothing
        // back within the same step, so only zone-wide rules form evaluation edges.
        if !rules[i].kind.is_per_sensor() {
            for name in rules[i].references() {
                if let Some(&j) = index.get(name) {
                    visit(j, rules, index, mark, path)?;
                }
            }
        }
        path.pop();
        mark[i] = 2;
        Ok(())
    }
    for i in 0..rules.len() {
        visit(i, rules, &index, &mut mark, &mut Vec::new())?;
    }
    Ok(())
}

/// Durations written as text in config: "90s", "5m", "3h", "1d", "250ms" → milliseconds.
pub mod duration_text {
    pub fn parse(text: &str) -> Result<u64, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let n: u64 = digits.parse().map_err(|_| format!("`{text}`: expected a number then ms, s, m, h or d"))?;
        let scale = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(format!("`{text}`: unit must be ms, s, m, h or d")),
        };
        n.checked_mul(scale).ok_or_else(|| format!("`{text}` is too long"))
    }

    /// The shortest exact text for a duration ("24h", "90s").
    pub fn format(ms: u64) -> String {
        for (scale, unit) in [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s")] {
            if ms >= scale && ms.is_multiple_of(scale) {
                // Hours read better than days for rain windows ("24h").
                if unit == "d" && ms <= 2 * 86_400_000 {
                    continue;
                }
                return format!("{}{unit}", ms / scale);
            }
        }
        format!("{ms}ms")
    }

    pub mod option {
        use serde::{Deserialize, Deserializer};

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
            let text: Option<String> = Option::deserialize(d)?;
            text.map(|t| super::parse(&t).map_err(serde::de::Error::custom)).transpose()
        }
    }

    pub mod required {
        use serde::{Deserialize, Deserializer};

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
            let text = String::deserialize(d)?;
            super::parse(&text).map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<RuleSet, String> {
        RuleSet::from_toml(text, Path::new("rules.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn default_rules_load() {
        let text = include_str!("../../config/rules.toml");
        let rules = load(text).unwrap();
        for id in
            ["heavy-rain", "river-level", "tilt-rate", "wire-trip", "debris-flow", "hazmat-restricted", "sensor-silent"]
        {
            assert!(rules.get(id).is_some(), "{id}");
        }
        assert!(rules.needs_approval("debris_flow", Severity::Extreme));
        assert!(!rules.needs_approval("heavy_rain", Severity::Extreme));
    }

    const BASE: &str = r#"
[[rule]]
id = "r1"
kind = "accumulation"
event = "heavy_rain"
metric = "rain_mm"
[[rule.levels]]
name = "x"
name_en = "x"
severity = "Moderate"
any = [{ window = "1h", at_least = 80 }]
"#;

    #[test]
    fn errors_name_rule_and_field() {
        let e = load(&BASE.replace("window = \"1h\", ", "")).unwrap_err();
        assert!(e.contains("rules.toml") && e.contains("r1") && e.contains("levels[0].any[0].window"), "{e}");
        let e = load(&BASE.replace("metric =", "metrik =")).unwrap_err();
        assert!(e.contains("metrik"), "{e}");
        let e = load(&BASE.replace("\"1h\"", "\"7m\"")).unwrap_err();
        assert!(e.contains("multiple of the engine bucket 10m"), "{e}");
        let e = load(&BASE.replace("\"1h\"", "\"48h\"")).unwrap_err();
        assert!(e.contains("288 buckets") && e.contains("1 KiB"), "{e}");
        let e = load(&BASE.replace("at_least = 80", "at_least = 80, equals = 1")).unwrap_err();
        assert!(e.contains("levels[0].any[0].equals` is not used by accumulation rules"), "{e}");
        let e = load(&BASE.replace("at_least = 80", "at_least = \"80\"")).unwrap_err();
        assert!(e.contains("zone.<threshold name>"), "{e}");
        let e = load(&BASE.replace("kind = \"accumulation\"", "kind = \"threshold\"")).unwrap_err();
        assert!(e.contains("window` is not used by threshold"), "{e}");
        let e = load(&format!("{BASE}\n[[rule]]\nid = \"r1\"\nkind = \"trip\"\nevent = \"x\"\nmetric = \"wire_intact\"\n[[rule.levels]]\nname = \"a\"\nname_en = \"a\"\nseverity = \"Minor\"\nany = [{{ equals = 0 }}]\n")).unwrap_err();
        assert!(e.contains("duplicate rule id"), "{e}");
    }

    const TRAFFIC: &str = r#"
[[rule]]
id = "t1"
kind = "traffic"
event = "road_blocked"
scope = { sensor_kinds = ["vehicle_detector"] }
[[rule.levels]]
name = "x"
name_en = "x"
severity = "Moderate"
any = [{ traffic = "blocked" }]
"#;

    #[test]
    fn traffic_rules_and_settings_are_checked() {
        let set = load(TRAFFIC).unwrap();
        assert_eq!(set.rules[0].levels[0].any[0].traffic, Some(TrafficClass::Blocked));
        assert_eq!(set.traffic, TrafficSettings::default());
        let e = load(&TRAFFIC.replace("{ traffic = \"blocked\" }", "{ traffic = \"closed\" }")).unwrap_err();
        assert!(e.contains("closed"), "{e}");
        let e = load(&TRAFFIC.replace("{ traffic = \"blocked\" }", "{ traffic = \"normal\" }")).unwrap_err();
        assert!(e.contains("levels[0].any[0].traffic` = \"normal\""), "{e}");
        let e = load(&TRAFFIC.replace("{ traffic = \"blocked\" }", "{ at_least = 5 }")).unwrap_err();
        assert!(e.contains("levels[0].any[0].at_least` is not used by traffic rules"), "{e}");
        let e = load(&BASE.replace("at_least = 80", "at_least = 80, traffic = \"blocked\"")).unwrap_err();
        assert!(e.contains("levels[0].any[0].traffic` is not used by accumulation rules"), "{e}");
        // `[traffic]`: unknown keys and bad values name the key.
        let e = load(&format!("[traffic]\nblocked_for_s = 60\n{TRAFFIC}")).unwrap_err();
        assert!(e.contains("blocked_for_s"), "{e}");
        let e = load(&format!("[traffic]\nslowed_fraction = 1.5\n{TRAFFIC}")).unwrap_err();
        assert!(e.contains("[traffic]") && e.contains("slowed_fraction"), "{e}");
        let e = load(&format!("[traffic]\nrecovered_speed_kmh = 3\n{TRAFFIC}")).unwrap_err();
        assert!(e.contains("recovered_speed_kmh") && e.contains("hysteresis"), "{e}");
        let set = load(&format!("[traffic]\nblocked_for = \"2m\"\n{TRAFFIC}")).unwrap();
        assert_eq!(set.traffic.blocked_for, 120_000);
    }

    #[test]
    fn within_m_goes_with_rule_in_composites() {
        let composite = |cond: &str| {
            format!(
                "{TRAFFIC}\n[[rule]]\nid = \"c1\"\nkind = \"composite\"\nevent = \"road_blocked\"\n\
                 [[rule.levels]]\nname = \"y\"\nname_en = \"y\"\nseverity = \"Severe\"\nany = [{cond}]\n"
            )
        };
        let set = load(&composite("{ rule = \"t1\", within_m = 3000 }")).unwrap();
        assert_eq!(set.rules[1].levels[0].any[0].within_m, Some(3000.0));
        let e = load(&composite("{ forecast = true, at_least = 1, within_m = 3000 }")).unwrap_err();
        assert!(e.contains("within_m` goes with `rule`"), "{e}");
        let e = load(&composite("{ rule = \"t1\", within_m = -1 }")).unwrap_err();
        assert!(e.contains("within_m` -1 must be 0-50000 metres"), "{e}");
        let e = load(&composite("{ rule = \"t1\", within_m = 10, sensors = 2 }")).unwrap_err();
        assert!(e.contains("does not go with `within_m`"), "{e}");
        let e =
            load(&TRAFFIC.replace("{ traffic = \"blocked\" }", "{ traffic = \"blocked\", within_m = 5 }")).unwrap_err();
        assert!(e.contains("within_m` is not used by traffic rules"), "{e}");
    }

    #[test]
    fn zone_limits_parse() {
        let set = load(&BASE.replace("at_least = 80", "at_least = \"zone.rain_24h_mm\"")).unwrap();
        assert_eq!(set.rules[0].levels[0].any[0].at_least, Some(Limit::Zone("rain_24h_mm".into())));
    }

    #[test]
    fn references_and_cycles_are_checked() {
        let composite = |id: &str, reads: &str| {
            format!(
                "[[rule]]\nid = \"{id}\"\nkind = \"composite\"\nevent = \"debris_flow\"\n[[rule.levels]]\nname = \"a\"\nname_en = \"a\"\nseverity = \"Severe\"\nall = [{{ rule = \"{reads}\" }}]\n"
            )
        };
        let e = load(&format!("{BASE}{}", composite("c1", "nope"))).unwrap_err();
        assert!(e.contains("c1") && e.contains("levels[0].all[0].rule`: no rule `nope`"), "{e}");
        let e = load(&format!("{BASE}{}{}", composite("c1", "c2"), composite("c2", "c1"))).unwrap_err();
        assert!(e.contains("cycle"), "{e}");
        assert!(load(&format!("{BASE}{}", composite("c1", "r1"))).is_ok());
        let e = load(&format!("{BASE}{}", composite("c1", "r1").replace("rule = \"r1\"", "rule = \"r1\", level = 3")))
            .unwrap_err();
        assert!(e.contains("level` 3: rule `r1` has 1 levels"), "{e}");
    }

    fn composite_reading(condition: &str) -> String {
        format!(
            "{BASE}[[rule]]\nid = \"c1\"\nkind = \"composite\"\nevent = \"debris_flow\"\n[[rule.levels]]\nname = \"a\"\nname_en = \"a\"\nseverity = \"Severe\"\ntemplate = \"yellow\"\nany = [{condition}]\n"
        )
    }

    #[test]
    fn external_conditions_are_checked_field_by_field() {
        let good = load(&composite_reading(r#"{ external = { source = "swcb", event_code = "debrisFlow", category = "Geo", min_severity = "Moderate" } }"#)).unwrap();
        let c = &good.get("c1").unwrap().levels[0].any[0];
        let filter = c.external.as_ref().unwrap().filter();
        assert_eq!(filter.sources, ["swcb"]);
        assert_eq!(filter.event_codes, ["debrisFlow"]);
        assert_eq!(filter.categories, [encoders::cap::Category::Geo]);
        assert_eq!(filter.statuses, [encoders::cap::Status::Actual], "an agency's drill never trips a real rule");
        for (condition, needle) in [
            (r#"{ external = { source = "SWCB!" } }"#, "c1`: `levels[0].any[0].external.source` `SWCB!`"),
            (
                r#"{ external = { source = "swcb", category = "Weather" } }"#,
                "levels[0].any[0].external.category` `Weather`",
            ),
            (
                r#"{ external = { source = "swcb", min_severity = "Unknown" } }"#,
                "levels[0].any[0].external.min_severity`",
            ),
            (
                r#"{ external = { source = "swcb", event_code = "debris flow" } }"#,
                "levels[0].any[0].external.event_code`",
            ),
            (
                r#"{ external = { source = "swcb" }, rule = "r1" }"#,
                "give one of `rule`, `forecast = true` or `external`",
            ),
            (r#"{ external = { source = "swcb" }, level = 0 }"#, "do not go with `external`"),
            (r#"{ external = { sourse = "swcb" } }"#, "sourse"),
        ] {
            let e = load(&composite_reading(condition)).unwrap_err();
            assert!(e.contains(needle), "{condition}: {e}");
        }
        // Only composite rules read other sources.
        let e =
            load(&BASE.replace("at_least = 80 }", "at_least = 80, external = { source = \"swcb\" } }")).unwrap_err();
        assert!(e.contains("levels[0].any[0].external` is not used by accumulation rules"), "{e}");
        let e =
            load(&composite_reading(r#"{ rule = "r1" }"#).replace("template = \"yellow\"", "template = \"Yellow!\""))
                .unwrap_err();
        assert!(e.contains("levels[0].template` `Yellow!`"), "{e}");
    }

    #[test]
    fn names_from_other_files_are_checked_in_context() {
        let set = load(&composite_reading(r#"{ external = { source = "swcb" } }"#)).unwrap();
        let templates =
            encoders::cap::Templates::from_toml_str(include_str!("../../config/cap_templates.toml")).unwrap();
        let file = Path::new("rules.toml");
        let sources = ["swcb".to_string(), "wra".to_string()];
        let ok = RuleContext { inbound_sources: &sources, templates: Some(&templates) };
        set.check_context(&ok, file).unwrap();
        let e = set.check_context(&RuleContext { inbound_sources: &sources[1..], ..ok }, file).unwrap_err().to_string();
        assert!(
            e.contains("rules.toml: rule `c1`: `levels[0].any[0].external.source`: no inbound source `swcb`; the inbound sources are wra"),
            "{e}"
        );
        let e = set.check_context(&RuleContext { inbound_sources: &[], ..ok }, file).unwrap_err().to_string();
        assert!(e.contains("inbound CAP is not configured"), "{e}");
        let orange = load(&composite_reading(r#"{ rule = "r1" }"#).replace("\"yellow\"", "\"orange\"")).unwrap();
        let e = orange.check_context(&ok, file).unwrap_err().to_string();
        assert!(
            e.contains("rule `c1`: `levels[0].template`: the CAP templates have no [event.debris_flow.level.orange]"),
            "{e}"
        );
        // Without CAP messages (no dissemination) template names are not checked.
        orange.check_context(&RuleContext { templates: None, ..ok }, file).unwrap();
        assert_eq!(set.external_sources().collect::<Vec<_>>(), ["swcb"]);
    }

    #[test]
    fn levels_must_not_decrease_in_severity() {
        let text = format!("{BASE}[[rule.levels]]\nname = \"y\"\nname_en = \"y\"\nseverity = \"Minor\"\nany = [{{ window = \"3h\", at_least = 100 }}]\n");
        let e = load(&text).unwrap_err();
        assert!(e.contains("levels[1].severity"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(duration_text::parse("24h"), Ok(86_400_000));
        assert_eq!(duration_text::parse("5m"), Ok(300_000));
        assert!(duration_text::parse("5 parsecs").is_err());
        assert_eq!(duration_text::format(86_400_000), "24h");
        assert_eq!(duration_text::format(600_000), "10m");
        assert_eq!(duration_text::format(1500), "1500ms");
    }
}
