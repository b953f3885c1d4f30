//! Rule declarations (`config/rules.toml`) and their validation.
//!
//! A rule watches one metric of sensors in its scope and grades what it sees into ordered levels; the highest level met
//! decides the alert's severity. Errors name the rule and the field.

use std::path::Path;

use geo_index::ZoneKind;
use ingest::{Metric, SensorKind};
use serde::Deserialize;

use crate::alert::{Certainty, Severity, Urgency};
use crate::AlertingError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// The latest value against each level's threshold, held for `min_duration` before it counts.
    Threshold,
    /// Rolling sums of the metric over each level's window (rain).
    Accumulation,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Rolling window for accumulation rules, e.g. "1h", "3h", "24h".
    #[serde(default, with = "duration_text::option")]
    pub window: Option<u64>,
    /// The value at or above which the condition holds.
    pub at_least: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// Short name for operators, e.g. "豪雨 extremely heavy rain".
    pub name: String,
    pub name_en: String,
    /// Any condition met raises this level (CWA: 豪雨 = 200 mm in 24 h OR 100 mm in 3 h).
    pub any: Vec<Condition>,
    pub severity: Severity,
    #[serde(default = "Urgency::immediate")]
    pub urgency: Urgency,
    #[serde(default = "Certainty::observed")]
    pub certainty: Certainty,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Zone kinds whose zones give the alert its area (`debris_flow`, `township`, …). A sensor outside every zone of
    /// these kinds raises nothing under this rule.
    #[serde(default)]
    pub zone_kinds: Vec<ZoneKind>,
    /// Restrict to these sensor kinds (empty: any kind that measures the metric).
    #[serde(default)]
    pub sensor_kinds: Vec<SensorKind>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    pub kind: RuleKind,
    /// Event type, the key of CAP templates and the `event` of websocket messages (`heavy_rain`, `river_level`…).
    pub event: String,
    pub metric: Metric,
    #[serde(default)]
    pub scope: Scope,
    /// Levels in increasing order of danger.
    pub levels: Vec<Level>,
    /// A met level is only reported after it has held this long (threshold rules).
    #[serde(default, with = "duration_text::option")]
    pub min_duration: Option<u64>,
    /// Hysteresis: a raised alert clears only when every condition of the lowest level is below `at_least × (1 −
    /// clear_margin)`, so a value hovering at the threshold does not flap.
    #[serde(default = "default_margin")]
    pub clear_margin: f64,
}

fn default_margin() -> f64 {
    0.1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<Rule>,
}

#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

impl RuleSet {
    pub fn from_toml(text: &str, file: &Path) -> Result<Self, AlertingError> {
        let parsed: RulesFile =
            toml::from_str(text).map_err(|e| AlertingError::Config { file: file.into(), message: e.to_string() })?;
        let err = |rule: &str, message: String| AlertingError::Rule { file: file.into(), rule: rule.into(), message };
        let mut seen = std::collections::HashSet::new();
        for rule in &parsed.rule {
            if !seen.insert(rule.id.as_str()) {
                return Err(err(&rule.id, "duplicate rule id".into()));
            }
            if rule.levels.is_empty() {
                return Err(err(&rule.id, "`levels`: at least one level is required".into()));
            }
            if !(0.0..1.0).contains(&rule.clear_margin) {
                return Err(err(&rule.id, format!("`clear_margin` {} must be in 0..1", rule.clear_margin)));
            }
            for (i, level) in rule.levels.iter().enumerate() {
                if level.any.is_empty() {
                    return Err(err(&rule.id, format!("`levels[{i}].any`: at least one condition is required")));
                }
                for (j, c) in level.any.iter().enumerate() {
                    let at = format!("`levels[{i}].any[{j}]`");
                    match (rule.kind, c.window) {
                        (RuleKind::Accumulation, None) => {
                            return Err(err(&rule.id, format!("{at}.window is required for accumulation rules")))
                        }
                        (RuleKind::Accumulation, Some(w)) if w == 0 || w > MAX_WINDOW_MS => {
                            return Err(err(&rule.id, format!("{at}.window must be between 1 s and 48 h")))
                        }
                        (RuleKind::Threshold, Some(_)) => {
                            return Err(err(&rule.id, format!("{at}.window is only for accumulation rules")))
                        }
                        _ => {}
                    }
                    if !c.at_least.is_finite() {
                        return Err(err(&rule.id, format!("{at}.at_least must be a finite number")));
                    }
                }
            }
        }
        Ok(RuleSet { rules: parsed.rule })
    }
}

/// The longest window a rule may ask for; it bounds the state kept per sensor.
pub const MAX_WINDOW_MS: u64 = 48 * 3600 * 1000;

/// Durations written as text in config: "90s", "5m", "3h", "1d" → milliseconds.
pub mod duration_text {
    pub fn parse(text: &str) -> Result<u64, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let n: u64 = digits.parse().map_err(|_| format!("`{text}`: expected a number then s, m, h or d"))?;
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

    pub mod option {
        use serde::{Deserialize, Deserializer};

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
            let text: Option<String> = Option::deserialize(d)?;
            text.map(|t| super::parse(&t).map_err(serde::de::Error::custom)).transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_load() {
        let text = include_str!("../../config/rules.toml");
        let rules = RuleSet::from_toml(text, Path::new("config/rules.toml")).unwrap();
        assert!(rules.rules.iter().any(|r| r.id == "heavy-rain"));
    }

    #[test]
    fn errors_name_rule_and_field() {
        let text = r#"
[[rule]]
id = "r1"
kind = "accumulation"
event = "heavy_rain"
metric = "rain_mm"
[[rule.levels]]
name = "x"
name_en = "x"
severity = "Moderate"
any = [{ at_least = 80 }]
"#;
        let e = RuleSet::from_toml(text, Path::new("rules.toml")).unwrap_err().to_string();
        assert!(e.contains("rules.toml") && e.contains("r1") && e.contains("window"), "{e}");
        let typo = text.replace("metric =", "metrik =");
        let e = RuleSet::from_toml(&typo, Path::new("rules.toml")).unwrap_err().to_string();
        assert!(e.contains("metrik"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(duration_text::parse("24h"), Ok(86_400_000));
        assert_eq!(duration_text::parse("5m"), Ok(300_000));
        assert!(duration_text::parse("5 parsecs").is_err());
    }
}
