//! Moving a hazard's alert from one rule engine's book to another's (a cluster's rule workers, `docs/SCALING.md`):
//! the owner of a region exports every change of an alert as an [`AlertRecord`], and the region's next owner adopts
//! the latest record of each, so that it continues the alert (same id, next version) instead of raising a second one.
//! A record is what a journal transition carries — the alert after the change and its contributions — so adopting it
//! is the same "last record per alert wins" as [`AlertBook::open`]'s replay.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{AlertBook, Contribution, HazardKey, Suppressed};
use crate::alert::Alert;

/// An alert as its book knows it: enough for another book to continue it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub alert: Alert,
    /// What each contributor reports now (active alerts only): the next finding of a contributor is compared with
    /// this, so a level the old owner already announced is not announced again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub contributions: BTreeMap<String, Contribution>,
    /// A cancelled hazard still tracked silently: only a higher level raises it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<Suppressed>,
}

impl AlertBook {
    /// The record of alert `id`, if the book has it.
    pub fn record_of(&self, id: &str) -> Option<AlertRecord> {
        let alert = self.alerts.get(id)?.clone();
        let key = HazardKey { rule_id: alert.rule_id.clone(), area_id: alert.area_id.clone(), mode: alert.mode };
        let contributions = if alert.state.is_active() {
            self.contributions.get(id).cloned().unwrap_or_default()
        } else {
            BTreeMap::new()
        };
        let suppressed = if alert.state.is_active() { None } else { self.suppressed.get(&key).cloned() };
        Some(AlertRecord { alert, contributions, suppressed })
    }

    /// Takes over an alert another book raised. An older version than the one held is ignored (`false`). An active
    /// alert becomes its hazard's alert here; an ended one is kept as ended (with its suppression, if cancelled). Not
    /// journaled: the record's home is the replicated stream it came from, and the next transition of the alert is
    /// journaled here as a whole alert anyway.
    pub fn adopt(&mut self, record: AlertRecord) -> bool {
        let AlertRecord { alert, contributions, suppressed } = record;
        if self.alerts.get(&alert.id).is_some_and(|held| held.version >= alert.version) {
            return false;
        }
        self.install(alert, contributions, suppressed);
        true
    }

    /// Drops alert `id` from this book with what the book tracks for its hazard (contributions, a cancelled hazard's
    /// suppression): its region went to another book (a worker handing a county over or stopping), or the
    /// replicated stream removed it after its retention. The next owner continues it from its record; this book
    /// must neither change nor re-send it. Not journaled (the record's home is the stream). `false`: not held.
    pub fn forget(&mut self, id: &str) -> bool {
        let Some(alert) = self.alerts.remove(id) else { return false };
        let key = HazardKey { rule_id: alert.rule_id, area_id: alert.area_id, mode: alert.mode };
        let hazard_is_this_alert = match self.active.get(&key) {
            Some(active) if active == id => {
                self.active.remove(&key);
                true
            }
            Some(_) => false,
            None => true,
        };
        if hazard_is_this_alert {
            self.suppressed.remove(&key);
        }
        self.contributions.remove(id);
        self.closed.retain(|closed| closed != id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertState, Change};
    use crate::types::{LevelInfo, Publish, Severity, Trigger};

    fn finding(sensor: &str, level: Option<usize>, ts: i64) -> crate::Finding {
        crate::Finding {
            rule_id: "rain".into(),
            event: "Heavy rain".into(),
            area_id: "z1".into(),
            sensor_id: sensor.into(),
            level: level.map(|index| LevelInfo {
                index,
                name: format!("l{index}"),
                name_en: format!("l{index}"),
                severity: Severity::Moderate,
                urgency: crate::types::Urgency::Expected,
                certainty: crate::types::Certainty::Likely,
                condition: format!("> {index}"),
            }),
            value: 1.0,
            observed_ms: ts,
            publish: Publish::Public,
            approval_required: false,
            evidence: Vec::new(),
            values: BTreeMap::new(),
            trigger: Trigger::Reading,
        }
    }

    #[test]
    fn an_adopted_alert_continues_with_its_id_and_next_version() {
        let mode = crate::Mode::Actual;
        let mut old = AlertBook::new("old");
        let raised = old.apply(finding("s1", Some(0), 1_000), mode, 1_000).expect("raised");
        let mut new = AlertBook::new("new");
        assert!(new.adopt(old.record_of(&raised.id).unwrap()));
        // The same level again from the new owner's engine is no change; a second sensor updates the same alert.
        assert!(new.apply(finding("s1", Some(0), 2_000), mode, 2_000).is_none());
        let next = new.apply(finding("s2", Some(1), 3_000), mode, 3_000).expect("updated");
        assert_eq!((next.id.as_str(), next.version, next.change), (raised.id.as_str(), 2, Change::Escalated));
        // An older record does not roll the alert back; the end clears the same alert.
        assert!(!new.adopt(old.record_of(&raised.id).unwrap()));
        new.apply(finding("s2", None, 4_000), mode, 4_000).expect("s2 leaves");
        let end = new.apply(finding("s1", None, 5_000), mode, 5_000).expect("cleared");
        assert_eq!((end.id, end.state), (raised.id, AlertState::Cleared));
        assert_eq!(new.active().count(), 0);
    }

    #[test]
    fn a_forgotten_alert_is_neither_changed_nor_continued_by_the_book_that_gave_it_away() {
        let mode = crate::Mode::Actual;
        let mut old = AlertBook::new("old");
        let raised = old.apply(finding("s1", Some(0), 1_000), mode, 1_000).expect("raised");
        let record = old.record_of(&raised.id).unwrap();
        assert!(old.forget(&raised.id));
        assert!(!old.forget(&raised.id), "held once");
        assert!(old.get(&raised.id).is_none() && old.active().count() == 0);
        assert!(old.contributions(mode).is_empty(), "nothing left for the engine to adopt");
        // Given back later (the region returns), the record is adopted again as it stands.
        assert!(old.adopt(record));
        let next = old.apply(finding("s2", Some(1), 2_000), mode, 2_000).expect("updated");
        assert_eq!((next.id.as_str(), next.version), (raised.id.as_str(), 2));
        // A cancelled hazard's suppression goes with its alert.
        old.cancel(&raised.id, 2_500).expect("cancelled");
        assert!(old.forget(&raised.id));
        assert!(old.apply(finding("s1", Some(1), 3_000), mode, 3_000).is_some(), "no suppression left behind");
    }

    #[test]
    fn without_adoption_the_same_hazard_is_raised_twice() {
        // What adoption prevents: a fresh book raises the hazard again under a new id.
        let mode = crate::Mode::Actual;
        let mut old = AlertBook::new("old");
        let raised = old.apply(finding("s1", Some(0), 1_000), mode, 1_000).expect("raised");
        let mut fresh = AlertBook::new("new");
        let again = fresh.apply(finding("s1", Some(0), 2_000), mode, 2_000).expect("raised again");
        assert_ne!(again.id, raised.id);
    }

    #[test]
    fn a_cancelled_hazard_stays_quiet_with_its_new_owner() {
        let mode = crate::Mode::Actual;
        let mut old = AlertBook::new("old");
        let raised = old.apply(finding("s1", Some(1), 1_000), mode, 1_000).expect("raised");
        old.cancel(&raised.id, 1_500).expect("cancelled");
        let record = old.record_of(&raised.id).unwrap();
        assert!(record.suppressed.is_some());
        let mut new = AlertBook::new("new");
        assert!(new.adopt(record));
        assert!(new.apply(finding("s1", Some(1), 2_000), mode, 2_000).is_none(), "same level stays cancelled");
        assert!(new.apply(finding("s1", Some(2), 3_000), mode, 3_000).is_some(), "worse raises again");
    }
}
