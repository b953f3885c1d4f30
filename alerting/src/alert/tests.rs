//! The alert book's unit tests: lifecycle, approval gate, operator commands, issue and event time.

use super::*;

fn level(index: usize) -> LevelInfo {
    LevelInfo {
        index,
        name: format!("L{index}"),
        name_en: format!("L{index}"),
        severity: [Severity::Moderate, Severity::Severe, Severity::Extreme][index.min(2)],
        urgency: Urgency::Immediate,
        certainty: Certainty::Observed,
        condition: String::new(),
    }
}

pub(crate) fn finding(sensor: &str, lvl: Option<usize>, ts: i64) -> Finding {
    Finding {
        rule_id: "heavy-rain".into(),
        event: "heavy_rain".into(),
        area_id: "zone1".into(),
        sensor_id: sensor.into(),
        level: lvl.map(level),
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
fn one_alert_per_hazard_through_its_life() {
    let mut book = AlertBook::new("dc");
    let a = book.apply(finding("A", Some(0), 1), Mode::Actual, 1).unwrap();
    assert_eq!((a.state, a.change, a.version), (AlertState::Raised, Change::Raised, 1));
    // A second sensor agreeing updates, it does not duplicate.
    let b = book.apply(finding("B", Some(0), 2), Mode::Actual, 2).unwrap();
    assert_eq!((b.id.as_str(), b.state, b.change, b.version), (a.id.as_str(), AlertState::Updated, Change::Updated, 2));
    // Escalation.
    let c = book.apply(finding("B", Some(1), 3), Mode::Actual, 3).unwrap();
    assert_eq!((c.level.index, c.version, c.change), (1, 3, Change::Escalated));
    // Same again: nothing changes.
    assert!(book.apply(finding("B", Some(1), 4), Mode::Actual, 4).is_none());
    // One sensor clearing de-escalates to the other's level; the last one clears the alert.
    let d = book.apply(finding("B", None, 5), Mode::Actual, 5).unwrap();
    assert_eq!((d.level.index, d.change), (0, Change::DeEscalated));
    let e = book.apply(finding("A", None, 6), Mode::Actual, 6).unwrap();
    assert_eq!((e.state, e.change), (AlertState::Cleared, Change::Cleared));
    assert_eq!(book.active().count(), 0);
    // The next rise is a new alert.
    let f = book.apply(finding("A", Some(0), 7), Mode::Actual, 7).unwrap();
    assert_ne!(f.id, a.id);
}

#[test]
fn drills_never_merge_into_real_alerts() {
    let mut book = AlertBook::new("dc");
    let real = book.apply(finding("A", Some(0), 1), Mode::Actual, 1).unwrap();
    let drill = book.apply(finding("A", Some(0), 2), Mode::Exercise, 2).unwrap();
    assert_ne!(real.id, drill.id);
    assert!(drill.is_public() && !drill.is_public_real() && real.is_public_real());
}

#[test]
fn cancel_ends_an_active_alert_once_and_suppresses_until_worse_or_clear() {
    let mut book = AlertBook::new("dc");
    let a = book.apply(finding("A", Some(0), 1), Mode::Actual, 1).unwrap();
    let c = book.cancel_by(&a.id, "op1", Some("sensor under maintenance"), 2).unwrap();
    assert_eq!((c.state, c.cancelled_by.as_deref()), (AlertState::Cancelled, Some("op1")));
    assert!(matches!(book.cancel_by(&a.id, "op1", None, 3), Err(BookError::NotActive(_))));
    // The same hazard at the same level stays quiet; another sensor at the same level too.
    assert!(book.apply(finding("B", Some(0), 4), Mode::Actual, 4).is_none());
    // Worse than cancelled: a new alert carrying both sensors.
    let n = book.apply(finding("B", Some(1), 5), Mode::Actual, 5).unwrap();
    assert_ne!(n.id, a.id);
    assert_eq!(n.sensors.len(), 2);
    assert_eq!(n.change, Change::Raised);
}

#[test]
fn suppression_ends_when_every_sensor_clears() {
    let mut book = AlertBook::new("dc");
    let a = book.apply(finding("A", Some(1), 1), Mode::Actual, 1).unwrap();
    book.cancel(&a.id, 2).unwrap();
    assert!(book.apply(finding("A", None, 3), Mode::Actual, 3).is_none());
    let again = book.apply(finding("A", Some(0), 4), Mode::Actual, 4).unwrap();
    assert_eq!(again.change, Change::Raised);
}

#[test]
fn approval_gate_holds_public_release_but_not_operators() {
    let mut book = AlertBook::new("dc");
    let mut f = finding("A", Some(0), 1);
    f.approval_required = true;
    let a = book.apply(f, Mode::Actual, 1).unwrap();
    assert_eq!(a.public_release, PublicRelease::Pending);
    assert!(!a.is_public());
    let approved = book.approve(&a.id, "chief", 2).unwrap();
    assert_eq!(
        (approved.public_release, approved.change, approved.version),
        (PublicRelease::Approved, Change::Approved, 2)
    );
    assert!(approved.is_public());
    assert!(matches!(book.approve(&a.id, "chief", 3), Err(BookError::NothingToApprove(_))));
    // Escalating past the approved severity is held again.
    let mut g = finding("A", Some(1), 4);
    g.approval_required = true;
    let e = book.apply(g, Mode::Actual, 4).unwrap();
    assert_eq!(e.public_release, PublicRelease::Pending);
    // Clearing goes public because an earlier version did.
    let cleared = book.apply(finding("A", None, 5), Mode::Actual, 5).unwrap();
    assert!(cleared.is_public());
}

#[test]
fn operators_only_rules_are_withheld_until_approved() {
    let mut book = AlertBook::new("dc");
    let mut f = finding("A", Some(0), 1);
    f.publish = Publish::Operators;
    let a = book.apply(f, Mode::Actual, 1).unwrap();
    assert_eq!(a.public_release, PublicRelease::Withheld);
    let cleared = book.apply(finding("A", None, 2), Mode::Actual, 2).unwrap();
    assert!(!cleared.is_public(), "an alert the public never saw does not announce its end");
}

#[test]
fn comments_and_acknowledgements_are_versioned() {
    let mut book = AlertBook::new("dc");
    let a = book.apply(finding("A", Some(0), 1), Mode::Actual, 1).unwrap();
    let b = book.acknowledge_by(&a.id, "op1", 2).unwrap();
    assert_eq!((b.version, b.change, b.acknowledged_by.as_deref()), (2, Change::Acknowledged, Some("op1")));
    let c = book.comment(&a.id, "op2", "  road closed by police  ", 3).unwrap();
    assert_eq!(c.comments, vec![Comment { by: "op2".into(), at_ms: 3, text: "road closed by police".into() }]);
    assert!(matches!(book.comment(&a.id, "op2", "   ", 4), Err(BookError::BadComment(_))));
    assert!(matches!(book.comment("nope", "op2", "x", 4), Err(BookError::NotFound(_))));
}

fn report_ref(cluster: &str, reports: u32) -> ReportRef {
    ReportRef {
        cluster: cluster.into(),
        category: "flooding".into(),
        reports,
        reporters: reports,
        cell: "88283082a3fffff".into(),
        lat: 23.5,
        lon: 120.9,
        first_seen_ms: 1,
        last_seen_ms: 2,
        verified_ms: 3,
        summary: Some("water knee-deep on the main road".into()),
        photos: Vec::new(),
    }
}

fn report_raise(cluster: &str, approval_required: bool) -> ReportRaise {
    ReportRaise {
        rule_id: "citizen-report-flooding".into(),
        event: "reported_flooding".into(),
        area_id: "zone1".into(),
        level: level(1),
        approval_required,
        report: report_ref(cluster, 3),
        values: BTreeMap::new(),
    }
}

#[test]
fn an_alert_raised_from_reports_lives_the_same_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let (mut book, _) = AlertBook::open(dir.path(), "dc").unwrap();
    let a = book.raise_from_report(report_raise("rc-1", true), Mode::Actual, "op1", 10).unwrap();
    assert_eq!(
        (a.state, a.change, a.public_release, a.version),
        (AlertState::Raised, Change::Raised, PublicRelease::Pending, 1)
    );
    assert!(!a.is_public() && a.sensors.is_empty());
    assert_eq!(a.reports[0].cluster, "rc-1");
    // One alert per hazard: a second cluster of the same kind in the same area is attached, not raised.
    assert!(matches!(
        book.raise_from_report(report_raise("rc-2", true), Mode::Actual, "op1", 11),
        Err(BookError::HazardActive(id)) if id == a.id
    ));
    let b = book.attach_report(&a.id, report_ref("rc-2", 5), "op1", 12).unwrap();
    assert_eq!((b.version, b.change, b.reports.len()), (2, Change::ReportAttached, 2));
    // Attaching again refreshes the numbers without a duplicate.
    let c = book.attach_report(&a.id, report_ref("rc-2", 7), "op1", 13).unwrap();
    assert_eq!((c.reports.len(), c.reports[1].reports), (2, 7));
    let approved = book.approve(&a.id, "chief", 14).unwrap();
    assert!(approved.is_public());
    // The rules know nothing of it: a restart keeps it, and the engine is not asked to adopt anything.
    drop(book);
    let (mut book, restored) = AlertBook::open(dir.path(), "dc").unwrap();
    assert_eq!(restored.active, 1);
    assert_eq!(book.get(&a.id).unwrap(), &approved);
    assert!(book.contributions(Mode::Actual).is_empty());
    let cancelled = book.cancel_by(&a.id, "op1", None, 15).unwrap();
    assert_eq!(cancelled.state, AlertState::Cancelled);
    assert!(matches!(book.attach_report(&a.id, report_ref("rc-3", 1), "op1", 16), Err(BookError::NotActive(_))));
    // Nothing suppressed: the same hazard can be raised again at once.
    let again = book.raise_from_report(report_raise("rc-3", false), Mode::Actual, "op1", 17).unwrap();
    assert_ne!(again.id, a.id);
    assert!(again.is_public());
}

const HOUR: i64 = 3_600_000;

#[test]
fn issue_time_is_the_callers_and_event_time_the_findings() {
    let mut book = AlertBook::new("dc");
    let observed = 1_764_086_400_000;
    let issued = observed + 5 * 60_000;
    let a = book.apply(finding("A", Some(0), observed), Mode::Actual, issued).unwrap();
    assert_eq!((a.first_issued_ms, a.issued_ms, a.observed_ms), (issued, issued, observed));
    assert_eq!(a.id, format!("dc-{issued}-000001"), "ids carry issue time");
    assert!(a.stale.is_none() && a.is_public(), "five minutes old is fresh");
    // A later version from an earlier wall clock (NTP stepped back) does not run backwards.
    let b = book.apply(finding("A", Some(1), observed + 1), Mode::Actual, issued - 1000).unwrap();
    assert_eq!((b.issued_ms, b.first_issued_ms, b.observed_ms), (issued, issued, observed + 1));
}

#[test]
fn old_evidence_warns_operators_only_until_fresh_evidence_or_an_operator() {
    let mut book = AlertBook::new("dc");
    let now = 1_764_086_400_000 + 6 * HOUR;
    // Six hours of backlog: raised, issued now, held from the public with the reason; counted.
    let a = book.apply(finding("A", Some(0), now - 6 * HOUR), Mode::Actual, now).unwrap();
    let stale = a.stale.expect("held");
    assert_eq!((stale.observed_ms, stale.age_ms, stale.limit_ms), (now - 6 * HOUR, 6 * HOUR, DEFAULT_STALE_AFTER_MS));
    assert!(stale.reason().contains("6h 0m") && stale.reason().contains("15m"), "{}", stale.reason());
    assert_eq!(a.public_release, PublicRelease::NotRequired, "the rule is public; only the evidence is old");
    assert!(!a.is_public() && !a.released);
    assert_eq!(book.counters.stale_held, 1);
    // More backlog escalates it, still operators only.
    let b = book.apply(finding("A", Some(1), now - 5 * HOUR), Mode::Actual, now + 1).unwrap();
    assert!(b.stale.is_some() && !b.is_public());
    // Fresh evidence lifts the hold: public from this version on.
    let c = book.apply(finding("B", Some(1), now + 2), Mode::Actual, now + 2).unwrap();
    assert!(c.stale.is_none() && c.is_public() && c.released);
    // Old evidence changing a public alert is held on that version only; the end still goes out.
    let d = book.apply(finding("B", Some(0), now - HOUR), Mode::Actual, now + 3).unwrap();
    assert!(d.stale.is_some() && !d.is_public() && d.released);
    book.apply(finding("B", None, now - HOUR), Mode::Actual, now + 4).unwrap();
    let end = book.apply(finding("A", None, now - HOUR), Mode::Actual, now + 5).unwrap();
    assert!(end.state == AlertState::Cleared && end.stale.is_none() && end.is_public());
    assert_eq!(book.counters.stale_held, 3);

    // An alert only old evidence ever raised announces no end to a public that never saw it.
    let e = book.apply(finding("A", Some(0), now - 6 * HOUR), Mode::Actual, now + 10).unwrap();
    let cleared = book.apply(finding("A", None, now - 6 * HOUR + 1), Mode::Actual, now + 11).unwrap();
    assert!(!cleared.is_public(), "{e:?}");

    // An operator can vouch for it: approved, public, issued at the approval.
    let f = book.apply(finding("A", Some(0), now - 6 * HOUR), Mode::Actual, now + 20).unwrap();
    let approved = book.approve(&f.id, "chief", now + 30).unwrap();
    assert!(approved.stale.is_none() && approved.is_public());
    assert_eq!(approved.issued_ms, now + 30);
    // A limit from config: with a day, six hours is fresh.
    let mut lenient = AlertBook::new("dc");
    lenient.set_stale_after(24 * HOUR);
    assert!(lenient.apply(finding("A", Some(0), now - 6 * HOUR), Mode::Actual, now).unwrap().is_public());
}

#[test]
fn closed_alerts_beyond_retention_are_forgotten() {
    let mut book = AlertBook::new("dc");
    book.set_retain_closed(2);
    for i in 0..5 {
        book.apply(finding("A", Some(0), i * 10), Mode::Actual, i * 10).unwrap();
        book.apply(finding("A", None, i * 10 + 1), Mode::Actual, i * 10 + 1).unwrap();
    }
    assert_eq!(book.all().count(), 2);
}
