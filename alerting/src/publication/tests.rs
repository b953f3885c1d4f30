//! The publication's unit tests: one warning per hazard and area, coalesced updates, flapping held until it
//! settles, ends (all-clear or an operator's cancel), a restart's resync. Alerts come from a real [`AlertBook`].

use std::collections::BTreeMap;

use super::*;
use crate::alert::AlertBook;
use crate::types::{Certainty, Finding, LevelInfo, Publish, Trigger, Urgency};

const MIN: i64 = 60_000;
const T: i64 = 1_764_086_400_000;

fn level(index: usize, severity: Severity) -> LevelInfo {
    LevelInfo {
        index,
        name: format!("L{index}"),
        name_en: format!("L{index}"),
        severity,
        urgency: Urgency::Immediate,
        certainty: Certainty::Observed,
        condition: String::new(),
    }
}

fn finding(rule: &str, event: &str, sensor: &str, lvl: Option<(usize, Severity)>, value: f64) -> Finding {
    Finding {
        rule_id: rule.into(),
        event: event.into(),
        area_id: "zone1".into(),
        sensor_id: sensor.into(),
        level: lvl.map(|(i, s)| level(i, s)),
        value,
        observed_ms: T,
        publish: Publish::Public,
        approval_required: false,
        evidence: Vec::new(),
        values: BTreeMap::new(),
        trigger: Trigger::Tick,
    }
}

/// A book and a publication, fed the way `App::publish` feeds them.
struct Pair {
    book: AlertBook,
    publication: Publication,
    /// What the public got, in order.
    public: Vec<PublicWarning>,
    /// What operators got (every alert version), in order.
    operators: Vec<(Alert, PublicNote)>,
}

impl Pair {
    fn new(policy: UpdatePolicy) -> Self {
        Pair {
            book: AlertBook::new("dc"),
            publication: Publication::new(policy),
            public: Vec::new(),
            operators: Vec::new(),
        }
    }

    fn apply(&mut self, f: Finding, now: i64) {
        if let Some(a) = self.book.apply(f, Mode::Actual, now) {
            let out = self.publication.observe(&a, now);
            self.public.extend(out.warnings);
            self.operators.push((a, out.note));
        }
    }

    fn tick(&mut self, now: i64) {
        let out = self.publication.due(now);
        self.public.extend(out);
    }

    fn public_ids(&self) -> BTreeSet<String> {
        self.public.iter().map(|w| w.alert.id.clone()).collect()
    }
}

#[test]
fn three_rules_of_one_hazard_make_one_public_warning_at_the_highest_level() {
    let mut p = Pair::new(UpdatePolicy::default());
    p.apply(finding("debris-rain", "debris_flow", "RG1", Some((0, Severity::Moderate)), 250.0), T);
    p.apply(finding("wire-trip", "debris_flow", "WS1", Some((0, Severity::Severe)), 1.0), T + MIN);
    p.apply(finding("debris-flow", "debris_flow", "", Some((1, Severity::Extreme)), 1.0), T + 2 * MIN);
    // A landslide in the same place is another hazard: its own warning.
    p.apply(finding("landslide", "landslide", "", Some((0, Severity::Severe)), 1.0), T + 2 * MIN);
    assert_eq!(p.book.active().count(), 4, "operators keep every rule's alert");
    assert_eq!(p.operators.len(), 4);
    let debris: Vec<&PublicWarning> = p.public.iter().filter(|w| w.alert.event == "debris_flow").collect();
    assert_eq!(debris.iter().map(|w| w.alert.id.clone()).collect::<BTreeSet<_>>().len(), 1, "one debris-flow warning");
    // Raised with the rain, then each higher level at once (a level change is never held).
    assert_eq!(
        debris.iter().map(|w| (w.alert.version, w.alert.level.severity, w.reason)).collect::<Vec<_>>(),
        [
            (1, Severity::Moderate, Reason::Raised),
            (2, Severity::Severe, Reason::Level),
            (3, Severity::Extreme, Reason::Level)
        ]
    );
    let last = debris.last().unwrap();
    assert_eq!(last.alert.rule_id, "debris-flow");
    assert_eq!(
        last.contributors.iter().map(|c| c.rule.as_str()).collect::<Vec<_>>(),
        ["debris-flow", "wire-trip", "debris-rain"],
        "every contributor, highest first"
    );
    assert_eq!(last.alert.sensors.keys().collect::<Vec<_>>(), ["RG1", "WS1"]);
    assert_eq!(p.public_ids().len(), 2);
    // The warning ends only when its last contributor ends.
    p.apply(finding("debris-flow", "debris_flow", "", None, 0.0), T + 30 * MIN);
    p.apply(finding("wire-trip", "debris_flow", "WS1", None, 0.0), T + 31 * MIN);
    assert!(p.public.iter().filter(|w| w.alert.event == "debris_flow").all(|w| w.alert.state.is_active()));
    p.apply(finding("debris-rain", "debris_flow", "RG1", None, 0.0), T + 32 * MIN);
    let end = p.public.iter().rfind(|w| w.alert.event == "debris_flow").unwrap();
    assert_eq!((end.alert.state, end.alert.change, end.reason), (AlertState::Cleared, Change::Cleared, Reason::Ended));
    assert_eq!(
        end.alert.change.cap_msg_type(),
        encoders::cap::MsgType::Update,
        "a hazard that is over is an all-clear"
    );
    assert!(end.alert.change.is_all_clear());
}

#[test]
fn operators_only_and_held_alerts_reach_no_one_public() {
    let mut p = Pair::new(UpdatePolicy::default());
    let mut f = finding("debris-rain", "debris_flow", "RG1", Some((0, Severity::Moderate)), 250.0);
    f.publish = Publish::Operators;
    p.apply(f, T);
    assert!(p.public.is_empty());
    assert_eq!(p.operators[0].1.status, NoteStatus::NotPublic);
    // An operator approves it: now it is public, at once.
    let id = p.operators[0].0.id.clone();
    let a = p.book.approve(&id, "op", T + MIN).unwrap();
    p.public.extend(p.publication.observe(&a, T + MIN).warnings);
    assert_eq!(p.public.len(), 1);
    assert_eq!(p.public[0].reason, Reason::Raised);
}

#[test]
fn value_only_changes_go_out_at_most_once_per_interval_and_the_latest_always_does() {
    let mut p = Pair::new(UpdatePolicy::default());
    p.apply(finding("heavy-rain", "heavy_rain", "RG1", Some((0, Severity::Moderate)), 80.0), T);
    // Other gauges join at the same level every 30 s for 4 minutes: operators see each version, the public none.
    for i in 1..=8 {
        p.apply(
            finding("heavy-rain", "heavy_rain", &format!("RG{}", i + 1), Some((0, Severity::Moderate)), 80.0),
            T + i * 30_000,
        );
        p.tick(T + i * 30_000);
    }
    assert_eq!(p.operators.len(), 9);
    assert_eq!(p.public.len(), 1, "{:?}", p.public.iter().map(|w| w.alert.version).collect::<Vec<_>>());
    assert!(p.operators[1..].iter().all(|(_, n)| n.status == NoteStatus::Coalesced), "{:?}", p.operators[1].1);
    // The interval passes: the latest state goes out once, by the housekeeping tick (issue time).
    p.tick(T + 5 * MIN);
    assert_eq!(p.public.len(), 2);
    assert_eq!((p.public[1].alert.version, p.public[1].reason), (2, Reason::Interval));
    assert_eq!(p.public[1].alert.sensors.len(), 9);
    p.tick(T + 11 * MIN);
    assert_eq!(p.public.len(), 2, "nothing new, nothing sent");
    // A level change is never held.
    p.apply(finding("heavy-rain", "heavy_rain", "RG1", Some((1, Severity::Severe)), 130.0), T + 5 * MIN + 1000);
    assert_eq!(p.public.len(), 3);
    assert_eq!(p.public[2].reason, Reason::Level);
    assert_eq!(p.publication.counters.coalesced, 8);
}

#[test]
fn a_flapping_warning_is_held_until_it_settles_then_its_settled_state_goes_out_once() {
    let policy = UpdatePolicy::default();
    let mut p = Pair::new(policy);
    // A tilt meter raising and clearing a landslide alert every 10 s for 10 minutes: 60 alerts for operators.
    let mut now = T;
    for i in 0..60 {
        let on = i % 2 == 0;
        p.apply(finding("landslide", "landslide", "TM1", on.then_some((0, Severity::Severe)), 1.0), now);
        p.tick(now);
        now += 10_000;
    }
    assert_eq!(p.operators.len(), 60, "operators see every version");
    // The public heard the first changes, up to the threshold, then nothing.
    let before_hold = policy.flapping_changes;
    assert!(p.public.len() <= before_hold, "{} public versions", p.public.len());
    assert!(p.operators.iter().any(|(_, n)| n.status == NoteStatus::Flapping));
    assert!(p.operators.last().unwrap().1.reason.contains("flapping"), "{:?}", p.operators.last().unwrap().1);
    assert_eq!(p.publication.flapping(), 1);
    assert_eq!(p.publication.counters.flapping_started, 1);
    let held_at = p.public.len();
    // It stops (the last change left it off); the window drains; its settled state goes out once.
    let last = p.operators.last().unwrap().0.clone();
    assert!(!last.state.is_active());
    for _ in 0..70 {
        p.tick(now);
        now += 10_000;
    }
    assert_eq!(p.publication.flapping(), 0);
    assert_eq!(p.publication.counters.flapping_settled, 1);
    let settled: Vec<&PublicWarning> = p.public[held_at..].iter().collect();
    // Off at the end: the public warning (still on from the last version it heard) ends, once.
    assert!(settled.len() <= 1, "{settled:?}");
    if let Some(w) = settled.first() {
        assert_eq!((w.alert.state, w.reason), (AlertState::Cleared, Reason::Settled));
    }
    assert!(p.publication.active().next().is_none(), "nothing left on for the public");
}

#[test]
fn a_new_high_goes_out_while_flapping_and_flips_below_it_stay_held() {
    let mut p = Pair::new(UpdatePolicy::default());
    // Yellow ↔ orange every 10 s: flapping after the threshold.
    let mut now = T;
    for i in 0..20 {
        let lvl = if i % 2 == 0 { (0, Severity::Moderate) } else { (1, Severity::Severe) };
        p.apply(finding("debris", "debris_flow", "WS1", Some(lvl), 1.0), now);
        now += 10_000;
    }
    assert_eq!(p.publication.flapping(), 1);
    let held_at = p.public.len();
    // Red, above anything the public has: it goes out at once, flapping or not.
    p.apply(finding("debris", "debris_flow", "WS1", Some((2, Severity::Extreme)), 1.0), now);
    assert_eq!(p.public.len(), held_at + 1, "the new high went out");
    assert_eq!(p.public.last().unwrap().alert.level.index, 2);
    // Flips below it stay held.
    for i in 0..10 {
        now += 10_000;
        let lvl = if i % 2 == 0 { (1, Severity::Severe) } else { (2, Severity::Extreme) };
        p.apply(finding("debris", "debris_flow", "WS1", Some(lvl), 1.0), now);
    }
    assert_eq!(p.public.len(), held_at + 1, "flips at or below the new high are held");
}

#[test]
fn a_steady_hazard_is_not_flapping() {
    // Raised, three escalations, two de-escalations, cleared over hours: a typhoon, not a flapping sensor.
    let mut p = Pair::new(UpdatePolicy::default());
    for (i, lvl) in [Some(0), Some(1), Some(2), Some(3), Some(2), Some(1), None].into_iter().enumerate() {
        let sev = |l: usize| [Severity::Minor, Severity::Moderate, Severity::Severe, Severity::Extreme][l];
        p.apply(finding("heavy-rain", "heavy_rain", "RG1", lvl.map(|l| (l, sev(l))), 1.0), T + i as i64 * 90 * MIN);
    }
    assert_eq!(p.public.len(), 7);
    assert_eq!(p.publication.counters.flapping_started, 0);
}

#[test]
fn an_operator_cancel_ends_the_warning_with_a_cap_cancel() {
    let mut p = Pair::new(UpdatePolicy::default());
    p.apply(finding("landslide", "landslide", "", Some((0, Severity::Severe)), 1.0), T);
    let id = p.operators[0].0.id.clone();
    let c = p.book.cancel_by(&id, "op", Some("sent in error"), T + MIN).unwrap();
    let out = p.publication.observe(&c, T + MIN);
    assert_eq!(out.warnings.len(), 1, "an operator's action goes out at once");
    let w = &out.warnings[0];
    assert_eq!((w.alert.state, w.alert.change), (AlertState::Cancelled, Change::Cancelled));
    assert_eq!(w.alert.change.cap_msg_type(), encoders::cap::MsgType::Cancel);
}

#[test]
fn a_restart_continues_the_chain_and_catches_up_with_the_book() {
    let mut p = Pair::new(UpdatePolicy::default());
    p.apply(finding("landslide", "landslide", "", Some((0, Severity::Severe)), 1.0), T);
    let saved: Publication = serde_json::from_str(&serde_json::to_string(&p.publication).unwrap()).unwrap();
    // While "down": the book moved on (the alert cleared) without the publication hearing of it.
    let cleared = p.book.apply(finding("landslide", "landslide", "", None, 0.0), Mode::Actual, T + MIN).unwrap();
    assert!(!cleared.state.is_active());
    let mut restored = saved.with_policy(UpdatePolicy::default());
    let out = restored.resync(p.book.all(), T + 2 * MIN);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].alert.id.as_str(), out[0].alert.version), (p.public[0].alert.id.as_str(), 2), "same chain");
    assert_eq!(out[0].alert.state, AlertState::Cleared);
}

#[test]
fn a_new_owner_continues_the_warning_it_adopted_instead_of_opening_it_again() {
    let mut old = Pair::new(UpdatePolicy::default());
    old.apply(finding("rain", "heavy_rain", "RG1", Some((0, Severity::Moderate)), 50.0), T);
    old.apply(finding("rain", "heavy_rain", "RG1", Some((1, Severity::Severe)), 110.0), T + MIN);
    let last = old.public.last().unwrap().clone();
    assert_eq!(last.alert.version, 2);
    // The next owner: the alert adopted into its book, then the warning into its publication.
    let mut new = Pair::new(UpdatePolicy::default());
    for a in old.book.all() {
        assert!(new.book.adopt(old.book.record_of(&a.id).unwrap()));
    }
    assert!(new.publication.adopt(last.clone(), new.book.all()));
    assert!(!new.publication.adopt(last.clone(), new.book.all()), "adopted once");
    assert_eq!(new.publication.warning_of(&last.contributors[0].alert_id), Some(last.alert.id.as_str()));
    // The rain escalates at the new owner: the same warning, its next version.
    new.apply(finding("rain", "heavy_rain", "RG1", Some((2, Severity::Severe)), 360.0), T + 2 * MIN);
    let next = new.public.last().expect("a public version");
    assert_eq!((next.alert.id.as_str(), next.alert.version), (last.alert.id.as_str(), 3));
    assert_eq!(next.alert.change, Change::Escalated);
    // Without adoption the new owner would have opened it again at version 1 under the same id.
    let mut fresh = Pair::new(UpdatePolicy::default());
    for a in old.book.all() {
        fresh.book.adopt(old.book.record_of(&a.id).unwrap());
    }
    fresh.apply(finding("rain", "heavy_rain", "RG1", Some((2, Severity::Severe)), 360.0), T + 2 * MIN);
    assert_eq!(fresh.public.last().map(|w| (w.alert.id.as_str(), w.alert.version)), Some((last.alert.id.as_str(), 1)));
}
