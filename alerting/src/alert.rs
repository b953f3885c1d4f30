//! Alerts and their lifecycle: exactly one alert per hazard, keyed by rule and area.
//!
//! The engine reports per-sensor level changes ([`Finding`]s); the [`AlertBook`] folds them into alerts. An alert's
//! level is the highest level among the sensors currently contributing to it, so a second sensor agreeing updates the
//! alert instead of raising another, and the alert clears only when its last sensor clears.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// CAP 1.2 `severity` (the spec's spelling is the serialised form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    Unknown,
    Minor,
    Moderate,
    Severe,
    Extreme,
}

/// CAP 1.2 `urgency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Urgency {
    Immediate,
    Expected,
    Future,
    Past,
    Unknown,
}

impl Urgency {
    pub fn immediate() -> Self {
        Urgency::Immediate
    }
}

/// CAP 1.2 `certainty`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Certainty {
    Observed,
    Likely,
    Possible,
    Unlikely,
    Unknown,
}

impl Certainty {
    pub fn observed() -> Self {
        Certainty::Observed
    }
}

/// Whether an alert is real. Only `Actual` may ever reach the public as real; drills run the same path as `Exercise`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Mode {
    #[default]
    Actual,
    Exercise,
    Test,
}

/// The `state` of websocket messages (`INTERFACE.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Raised,
    Updated,
    Cleared,
    Cancelled,
}

impl AlertState {
    pub fn is_active(self) -> bool {
        matches!(self, AlertState::Raised | AlertState::Updated)
    }
}

/// A per-sensor change of level reported by the rule engine. `level: None` means the sensor cleared.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub rule_id: String,
    pub event: String,
    pub area_id: String,
    pub sensor_id: String,
    pub level: Option<LevelInfo>,
    /// The measured quantity that decided (a window sum or the latest value), for texts and operators.
    pub value: f64,
    /// Event time of the reading that caused the change.
    pub ts_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelInfo {
    pub index: usize,
    pub name: String,
    pub name_en: String,
    pub severity: Severity,
    pub urgency: Urgency,
    pub certainty: Certainty,
    /// Which condition held, e.g. "24h ≥ 200".
    pub condition: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// Stable id, also the CAP `identifier`.
    pub id: String,
    /// Incremented on every change; clients use it to detect what they missed.
    pub version: u32,
    pub state: AlertState,
    pub mode: Mode,
    pub rule_id: String,
    pub event: String,
    pub area_id: String,
    pub level: LevelInfo,
    pub value: f64,
    pub raised_ms: i64,
    pub updated_ms: i64,
    /// Sensors currently at a level, with their level index.
    pub sensors: BTreeMap<String, usize>,
    pub acknowledged_by: Option<String>,
}

/// The alerts, active and recent, with the index that keeps one alert per hazard.
#[derive(Debug, Default)]
pub struct AlertBook {
    alerts: BTreeMap<String, Alert>,
    /// (rule id, area id) → id of the active alert for that hazard.
    active: HashMap<(String, String), String>,
    /// Per active alert: the level info each contributing sensor reported.
    contributions: HashMap<String, BTreeMap<String, LevelInfo>>,
    next_seq: u64,
    id_prefix: String,
}

impl AlertBook {
    pub fn new(id_prefix: impl Into<String>) -> Self {
        Self { id_prefix: id_prefix.into(), ..Self::default() }
    }

    /// Folds one finding in; returns the alert if it changed.
    pub fn apply(&mut self, f: Finding, mode: Mode) -> Option<Alert> {
        let key = (f.rule_id.clone(), f.area_id.clone());
        match (self.active.get(&key).cloned(), f.level) {
            (None, None) => None,
            (None, Some(level)) => {
                self.next_seq += 1;
                let id = format!("{}-{}-{:06}", self.id_prefix, f.ts_ms, self.next_seq);
                let alert = Alert {
                    id: id.clone(),
                    version: 1,
                    state: AlertState::Raised,
                    mode,
                    rule_id: f.rule_id,
                    event: f.event,
                    area_id: f.area_id,
                    level: level.clone(),
                    value: f.value,
                    raised_ms: f.ts_ms,
                    updated_ms: f.ts_ms,
                    sensors: BTreeMap::from([(f.sensor_id.clone(), level.index)]),
                    acknowledged_by: None,
                };
                self.contributions.insert(id.clone(), BTreeMap::from([(f.sensor_id, level)]));
                self.active.insert(key, id.clone());
                self.alerts.insert(id, alert.clone());
                Some(alert)
            }
            (Some(id), level) => {
                let contributions = self.contributions.entry(id.clone()).or_default();
                match level {
                    Some(level) => {
                        contributions.insert(f.sensor_id, level);
                    }
                    None => {
                        contributions.remove(&f.sensor_id);
                    }
                }
                let alert = self.alerts.get_mut(&id)?;
                let top = contributions.values().max_by_key(|l| l.index).cloned();
                let sensors: BTreeMap<String, usize> =
                    contributions.iter().map(|(s, l)| (s.clone(), l.index)).collect();
                match top {
                    None => {
                        alert.state = AlertState::Cleared;
                        self.active.remove(&key);
                        self.contributions.remove(&id);
                    }
                    Some(top) => {
                        if top.index == alert.level.index && sensors == alert.sensors {
                            return None;
                        }
                        alert.state = AlertState::Updated;
                        alert.level = top;
                    }
                }
                alert.sensors = sensors;
                alert.value = f.value;
                alert.version += 1;
                alert.updated_ms = f.ts_ms;
                Some(alert.clone())
            }
        }
    }

    /// Operator cancellation: the hazard's alert ends now, whatever the sensors say.
    pub fn cancel(&mut self, id: &str, at_ms: i64) -> Option<Alert> {
        let alert = self.alerts.get_mut(id)?;
        if !alert.state.is_active() {
            return None;
        }
        alert.state = AlertState::Cancelled;
        alert.version += 1;
        alert.updated_ms = at_ms;
        self.active.remove(&(alert.rule_id.clone(), alert.area_id.clone()));
        self.contributions.remove(id);
        Some(alert.clone())
    }

    pub fn acknowledge(&mut self, id: &str, by: &str) -> Option<Alert> {
        let alert = self.alerts.get_mut(id)?;
        alert.acknowledged_by = Some(by.to_string());
        Some(alert.clone())
    }

    pub fn get(&self, id: &str) -> Option<&Alert> {
        self.alerts.get(id)
    }

    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values().filter(|a| a.state.is_active())
    }

    pub fn all(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(index: usize) -> LevelInfo {
        LevelInfo {
            index,
            name: format!("L{index}"),
            name_en: format!("L{index}"),
            severity: Severity::Moderate,
            urgency: Urgency::Immediate,
            certainty: Certainty::Observed,
            condition: String::new(),
        }
    }

    fn finding(sensor: &str, lvl: Option<usize>, ts: i64) -> Finding {
        Finding {
            rule_id: "heavy-rain".into(),
            event: "heavy_rain".into(),
            area_id: "zone1".into(),
            sensor_id: sensor.into(),
            level: lvl.map(level),
            value: 1.0,
            ts_ms: ts,
        }
    }

    #[test]
    fn one_alert_per_hazard_through_its_life() {
        let mut book = AlertBook::new("dc");
        let a = book.apply(finding("A", Some(0), 1), Mode::Actual).unwrap();
        assert_eq!((a.state, a.version), (AlertState::Raised, 1));
        // A second sensor agreeing updates, it does not duplicate.
        let b = book.apply(finding("B", Some(0), 2), Mode::Actual).unwrap();
        assert_eq!((b.id.as_str(), b.state, b.version), (a.id.as_str(), AlertState::Updated, 2));
        // Escalation.
        let c = book.apply(finding("B", Some(1), 3), Mode::Actual).unwrap();
        assert_eq!((c.level.index, c.version), (1, 3));
        // Same again: nothing changes.
        assert!(book.apply(finding("B", Some(1), 4), Mode::Actual).is_none());
        // One sensor clearing de-escalates to the other's level; the last one clears the alert.
        assert_eq!(book.apply(finding("B", None, 5), Mode::Actual).unwrap().level.index, 0);
        let e = book.apply(finding("A", None, 6), Mode::Actual).unwrap();
        assert_eq!(e.state, AlertState::Cleared);
        assert_eq!(book.active().count(), 0);
        // The next rise is a new alert.
        let f = book.apply(finding("A", Some(0), 7), Mode::Actual).unwrap();
        assert_ne!(f.id, a.id);
    }

    #[test]
    fn cancel_ends_an_active_alert_once() {
        let mut book = AlertBook::new("dc");
        let a = book.apply(finding("A", Some(0), 1), Mode::Actual).unwrap();
        assert_eq!(book.cancel(&a.id, 2).unwrap().state, AlertState::Cancelled);
        assert!(book.cancel(&a.id, 3).is_none());
    }
}
