//! The CAP rules on the active set, driven directly (no I/O): what each message does and which events it yields.

use super::*;
use crate::book::{Applied, Book, BookSettings, SourceMeta};
use encoders::cap::{parse_alert, Status};

const PUBLIC: SourceMeta<'static> = SourceMeta { name: "cwa", public: true, senders: &[], may_reference: &[] };

fn book() -> Book {
    Book::new(BookSettings { default_lifetime_ms: 3_600_000, remember_ms: 86_400_000, max_active: 3 })
}

fn take(book: &mut Book, m: &Msg, now_min: i64) -> Result<Applied, Rejection> {
    let cap = parse_alert(m.xml().as_bytes()).unwrap_or_else(|e| panic!("test message parses: {e}\n{}", m.xml()));
    book.receive(&cap, PUBLIC, &geo(), ms_at(now_min))
}

fn kinds(a: &Applied) -> Vec<(String, String, u32)> {
    a.events.iter().map(|e| (e.kind().to_string(), e.alert().id.clone(), e.alert().version)).collect()
}

const A: &str = "ext:weather@cwa.gov.tw:CWA-rain-1";

#[test]
fn alert_update_cancel_follow_references() {
    let mut b = book();
    let a1 = Msg::rain("CWA-rain-1", 0);
    let r = take(&mut b, &a1, 1).expect("alert taken");
    assert_eq!(r.outcome, PushOutcome::Raised { id: A.into() });
    assert_eq!(kinds(&r), vec![ev("raised", A, 1)]);
    let alert = &b.active()[0];
    // Provincial Highway 21's segment at Shenmu lies in the township too (a road zone, issue 28).
    assert_eq!(alert.zone_ids, vec![DONGPU, SHENMU, TONGFU, PH21, XINYI], "township geocode → every zone in it");
    assert_eq!(alert.event_code.as_deref(), Some("rainfall"));
    assert_eq!(alert.headline_zh.as_deref(), Some("豪雨特報"));
    assert_eq!(alert.headline_en.as_deref(), Some("Extremely heavy rain advisory"));
    assert!(alert.public);
    assert_eq!(alert.geometry["type"], "MultiPolygon", "no polygon given: the zones' shapes");

    // The same message again (a feed repeating itself, a sender retrying).
    let r = take(&mut b, &a1, 2).expect("duplicate is fine");
    assert_eq!(r.outcome, PushOutcome::Ignored { why: Ignored::Duplicate });
    assert!(r.events.is_empty());

    let mut a2 = a1.follow_up("CWA-rain-2", "Update", 30);
    a2.headline_zh = "豪雨特報（更新）".into();
    let r = take(&mut b, &a2, 31).expect("update taken");
    assert_eq!(r.outcome, PushOutcome::Updated { id: A.into() });
    assert_eq!(kinds(&r), vec![ev("updated", A, 2)]);
    assert_eq!(b.active()[0].identifier, "CWA-rain-2");
    assert_eq!(b.active()[0].headline_zh.as_deref(), Some("豪雨特報（更新）"));

    // A Cancel naming only the original still finds the chain (every key of a chain points to it).
    let c = a1.follow_up("CWA-rain-3", "Cancel", 60);
    let r = take(&mut b, &c, 61).expect("cancel taken");
    assert_eq!(r.outcome, PushOutcome::Cancelled { id: A.into() });
    assert_eq!(kinds(&r), vec![ev("cancelled", A, 2)]);
    assert!(b.active().is_empty());

    // A late Update of the cancelled warning does not revive it.
    let late = a2.follow_up("CWA-rain-4", "Update", 70);
    let r = take(&mut b, &late, 71).expect("valid");
    assert_eq!(r.outcome, PushOutcome::Ignored { why: Ignored::AfterCancel });
    let r = take(&mut b, &Msg::rain("CWA-other", 0).follow_up("CWA-x", "Cancel", 5), 72).expect("valid");
    assert_eq!(r.outcome, PushOutcome::Ignored { why: Ignored::CancelOfUnknown });
}

#[test]
fn out_of_order_update_first() {
    let mut b = book();
    let a1 = Msg::rain("CWA-rain-1", 0);
    let a2 = a1.follow_up("CWA-rain-2", "Update", 30);
    // The Update arrives first: raised under the original's id, so the id does not depend on arrival order.
    let r = take(&mut b, &a2, 31).expect("update of an unseen message");
    assert_eq!(kinds(&r), vec![ev("raised", A, 1)]);
    let r = take(&mut b, &a1, 32).expect("valid");
    assert_eq!(r.outcome, PushOutcome::Ignored { why: Ignored::Superseded });
    // An Update older than the current one is stale.
    let mut b = book();
    take(&mut b, &a1, 1).expect("alert");
    take(&mut b, &a2, 31).expect("update");
    let older = a1.follow_up("CWA-rain-1b", "Update", 10);
    let r = take(&mut b, &older, 32).expect("valid");
    assert_eq!(r.outcome, PushOutcome::Ignored { why: Ignored::Superseded });
    assert_eq!(b.active()[0].identifier, "CWA-rain-2");
}

#[test]
fn expiry_on_arrival_and_by_tick() {
    let mut b = book();
    let old = Msg::debris("SWCB-1", -120, -60);
    let r = take(&mut b, &old, 0).expect("valid");
    assert_eq!(r.outcome, PushOutcome::Ignored { why: Ignored::Expired });

    let d = Msg::debris("SWCB-2", 0, 30);
    take(&mut b, &d, 1).expect("taken");
    let mut no_expires = Msg::rain("CWA-rain-9", 0);
    no_expires.expires = None;
    take(&mut b, &no_expires, 1).expect("taken");
    assert!(b.tick(ms_at(29)).is_empty());
    let events = b.tick(ms_at(30));
    assert_eq!(events.len(), 1);
    assert!(matches!(&events[0], ExternalEvent::Expired { alert } if alert.identifier == "SWCB-2"));
    // Without `expires`, the configured default lifetime (1 h here) applies.
    let events = b.tick(ms_at(60));
    assert!(matches!(&events[..], [ExternalEvent::Expired { alert }] if alert.identifier == "CWA-rain-9"));
    assert_eq!(b.len(), 0);
    // An Update of an expired warning raises it again: the agency extended it.
    let mut extended = d.follow_up("SWCB-3", "Update", 40);
    extended.expires = Some(t(120));
    let r = take(&mut b, &extended, 61).expect("valid");
    assert_eq!(kinds(&r), vec![ev("raised", "ext:swcb@swcb.gov.tw:SWCB-2", 1)]);
}

#[test]
fn non_actual_is_never_public_and_never_a_rule_condition() {
    let mut b = book();
    for (id, status) in [("X-1", "Exercise"), ("X-2", "Test")] {
        let mut m = Msg::debris(id, 0, 120);
        m.status = status;
        take(&mut b, &m, 1).expect("taken");
    }
    // Real but not for the public: a rule may use it, citizens never receive it.
    let mut restricted = Msg::debris("X-3", 0, 120);
    restricted.event_code = "rainfall";
    restricted.scope = "Private";
    let xml = restricted.xml().replace("<scope>Private</scope>", "<scope>Private</scope><addresses>eoc</addresses>");
    let cap = parse_alert(xml.as_bytes()).expect("parses");
    b.receive(&cap, PUBLIC, &geo(), ms_at(1)).expect("taken");
    let active = b.active();
    assert_eq!(active.len(), 3);
    assert!(active.iter().all(|a| !a.public), "{active:#?}");
    assert!(active.iter().any(|a| a.status == Status::Exercise));
    let debris = ExternalFilter::event_code("debrisFlow");
    assert!(!b.zone_covered_by(SHENMU, &debris, ms_at(5)), "an exercise must not trip a real rule");
    let drill = ExternalFilter { statuses: vec![Status::Exercise], ..debris.clone() };
    assert!(b.zone_covered_by(SHENMU, &drill, ms_at(5)));
    assert!(b.zone_covered_by(SHENMU, &ExternalFilter::event_code("rainfall"), ms_at(5)));
}

#[test]
fn zone_covered_by_checks_zone_code_time_and_severity() {
    let mut b = book();
    take(&mut b, &Msg::debris("SWCB-1", 0, 120), 1).expect("taken");
    let debris = ExternalFilter::event_code("debrisFlow");
    assert!(b.zone_covered_by(SHENMU, &debris, ms_at(10)));
    assert!(!b.zone_covered_by("dfa-jiaxian-xiaolin", &debris, ms_at(10)), "other township");
    assert!(!b.zone_covered_by(SHENMU, &ExternalFilter::event_code("rainfall"), ms_at(10)));
    assert!(!b.zone_covered_by(SHENMU, &debris, ms_at(-1)), "before effective");
    assert!(!b.zone_covered_by(SHENMU, &debris, ms_at(120)), "at expires");
    let severe = ExternalFilter { min_severity: Some(encoders::cap::Severity::Severe), ..debris.clone() };
    assert!(!b.zone_covered_by(SHENMU, &severe, ms_at(10)), "yellow is Moderate");
    let moderate = ExternalFilter { min_severity: Some(encoders::cap::Severity::Moderate), ..debris.clone() };
    assert!(b.zone_covered_by(SHENMU, &moderate, ms_at(10)));
    let other_source = ExternalFilter { sources: vec!["wra".into()], ..debris };
    assert!(!b.zone_covered_by(SHENMU, &other_source, ms_at(10)));
}

#[test]
fn polygons_and_circles_place_and_draw() {
    let mut b = book();
    // A WRA-style polygon along the Zhuoshui middle reach, no geocode.
    let mut river = Msg::rain("WRA-1", 0);
    river.sender = "wra@wra.gov.tw".into();
    river.event_code = "highWater";
    river.geocodes = vec![];
    river.polygon = Some("23.80,120.60 23.80,120.70 23.84,120.70 23.84,120.60 23.80,120.60");
    take(&mut b, &river, 1).expect("taken");
    let a = &b.active()[0];
    assert_eq!(a.zone_ids, vec![FWY3, ZHUOSHUI], "zones the polygon overlaps");
    assert_eq!(a.geometry["type"], "Polygon");
    assert_eq!(a.geometry["coordinates"][0][0], serde_json::json!([120.6, 23.8]), "GeoJSON is lon,lat");

    // A circle around Shenmu with an unknown geocode beside it: placed by the circle, the code listed unresolved.
    let mut b = book();
    let mut quake = Msg::rain("CWA-eq-1", 0);
    quake.geocodes = vec!["6400038", "1001399"];
    quake.circle = Some("23.52,120.928 1.5");
    take(&mut b, &quake, 1).expect("taken");
    let a = &b.active()[0];
    assert!(a.zone_ids.contains(&SHENMU.to_string()), "{:?}", a.zone_ids);
    assert!(a.zone_ids.contains(&"dfa-namasia-minsheng".to_string()));
    assert_eq!(a.unresolved_geocodes, vec!["1001399"]);
    assert_eq!(a.geometry["coordinates"][0].as_array().map(Vec::len), Some(33), "32-gon, closed");
}

#[test]
fn unplaceable_messages_are_rejected_and_change_nothing() {
    let mut b = book();
    take(&mut b, &Msg::rain("CWA-ok", 0), 1).expect("taken");
    let before = b.active();
    let mut unknown = Msg::rain("CWA-unknown", 0);
    unknown.geocodes = vec!["1001399", "99999"];
    assert_eq!(
        take(&mut b, &unknown, 1).map(|a| a.outcome),
        Err(Rejection::UnknownGeocode { codes: vec!["1001399".into(), "99999".into()] })
    );
    let mut nowhere = Msg::rain("CWA-nowhere", 0);
    nowhere.geocodes = vec![];
    assert_eq!(take(&mut b, &nowhere, 1).map(|a| a.outcome), Err(Rejection::NoArea));
    // Rejected messages are not remembered: fixed and re-sent with the same key, they are taken.
    unknown.geocodes = vec!["1000812"];
    assert!(matches!(take(&mut b, &unknown, 2).map(|a| a.outcome), Ok(PushOutcome::Raised { .. })));
    assert_eq!(b.active().len(), before.len() + 1);
}

#[test]
fn only_the_issuer_changes_its_alert_and_capacity_is_bounded() {
    let mut b = book();
    let a1 = Msg::rain("CWA-rain-1", 0);
    take(&mut b, &a1, 1).expect("taken");
    let mut forged = a1.follow_up("EVIL-1", "Cancel", 5);
    forged.sender = "someone@else".into();
    // The reference names CWA's message, but the Cancel comes from another sender.
    forged.references = vec![(a1.identifier.clone(), a1.sent.clone())];
    let xml = forged.xml().replace("someone@else,CWA-rain-1", "weather@cwa.gov.tw,CWA-rain-1");
    let cap = parse_alert(xml.as_bytes()).expect("parses");
    assert!(matches!(b.receive(&cap, PUBLIC, &geo(), ms_at(6)), Err(Rejection::ForeignReference { .. })));
    assert_eq!(b.len(), 1);

    take(&mut b, &Msg::rain("CWA-rain-2", 0), 1).expect("taken");
    take(&mut b, &Msg::rain("CWA-rain-3", 0), 1).expect("taken");
    assert_eq!(take(&mut b, &Msg::rain("CWA-rain-4", 0), 1).map(|a| a.outcome), Err(Rejection::Capacity { max: 3 }));

    let only_swcb = SourceMeta { name: "swcb", public: true, senders: &[], may_reference: &[] };
    let senders = ["swcb@swcb.gov.tw".to_string()];
    let restricted = SourceMeta { senders: &senders, ..only_swcb };
    let cap = parse_alert(Msg::rain("CWA-rain-5", 0).xml().as_bytes()).expect("parses");
    assert_eq!(
        b.receive(&cap, restricted, &geo(), ms_at(1)).map(|a| a.outcome),
        Err(Rejection::SenderNotAllowed { sender: "weather@cwa.gov.tw".into() })
    );
}

#[test]
fn an_update_naming_two_alerts_merges_them() {
    let mut b = book();
    let a = Msg::rain("CWA-a", 0);
    let c = Msg::rain("CWA-c", 5);
    take(&mut b, &a, 6).expect("taken");
    take(&mut b, &c, 6).expect("taken");
    let mut merged = a.follow_up("CWA-ac", "Update", 10);
    merged.references.push((c.identifier.clone(), c.sent.clone()));
    let r = take(&mut b, &merged, 11).expect("taken");
    assert_eq!(
        kinds(&r),
        vec![ev("updated", A.replace("rain-1", "a").as_str(), 2), ev("cancelled", "ext:weather@cwa.gov.tw:CWA-c", 1)]
    );
    assert_eq!(b.len(), 1);
    // Either original's key now leads to the merged alert.
    let cancel = c.follow_up("CWA-end", "Cancel", 20);
    let r = take(&mut b, &cancel, 21).expect("taken");
    assert_eq!(kinds(&r), vec![ev("cancelled", "ext:weather@cwa.gov.tw:CWA-a", 2)]);
}
