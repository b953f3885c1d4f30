//! Every CAP message dissemination makes validates against the OASIS CAP 1.2 XSD (`xmllint`); the feed is
//! well-formed Atom with public messages only; its ETag follows its content.

use super::tools::{xmllint, xsd};
use super::*;
use encoders::cap::parse_alert;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_validates_against_the_xsd() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(config(""), dir.path());
    let mut identifiers = Vec::new();
    let mut push = |id: Option<String>| identifiers.push(id.expect("message made"));

    // Alert → Update → Cancel, on every zone kind, in every mode.
    for (i, zone) in geo().zones().map(|z| z.id.clone()).enumerate() {
        let id = format!("Z{i}");
        let mode = [ViewMode::Actual, ViewMode::Exercise, ViewMode::Test][i % 3];
        push(d.alert_changed(&AlertView { mode, ..rain_view(&id, 1, &zone) }));
        push(d.alert_changed(&AlertView { mode, ..rain_view(&id, 2, &zone) }));
        push(d.alert_changed(&ended(AlertView { mode, ..rain_view(&id, 3, &zone) }, ViewState::Cleared)));
    }
    // Every event type of the shipped templates, with only the alert's value (missing placeholders filled).
    for (i, event) in templates().event_types().map(str::to_string).collect::<Vec<_>>().iter().enumerate() {
        let v = AlertView { event: event.clone(), values: Default::default(), ..view(&format!("E{i}"), 1) };
        push(d.alert_changed(&v));
    }
    // Held, re-raised after a cancel, texts that need escaping, a strange alert id.
    push(d.alert_changed(&AlertView { public_release: false, ..view("HELD", 1) }));
    push(d.alert_changed(&view("AGAIN", 1)));
    push(d.alert_changed(&ended(view("AGAIN", 2), ViewState::Cancelled)));
    push(d.alert_changed(&view("AGAIN", 3)));
    // Clusters of citizen reports behind an alert: one parameter each, published photos as resources.
    let report = |cluster: &str, photos: Vec<String>| alerting::alert::ReportRef {
        cluster: cluster.into(),
        category: "flooding".into(),
        reports: 5,
        reporters: 4,
        cell: "884f1a0a6dfffff".into(),
        lat: 23.518_51,
        lon: 120.928_02,
        first_seen_ms: 1_764_122_000_000,
        last_seen_ms: 1_764_122_300_000,
        verified_ms: 1_764_122_350_000,
        summary: Some("水深 <30 cm> & rising".into()),
        photos,
    };
    let with_reports = AlertView {
        event: "reported_flooding".into(),
        values: BTreeMap::from([("summary".to_string(), "水深 <30 cm> & rising".to_string())]),
        reports: vec![
            report("rc-1", vec![format!("{BASE_URL}/opendata/reports/photos/{}.jpg", "ab".repeat(32))]),
            report("rc-2", Vec::new()),
        ],
        ..view("REPORTS", 1)
    };
    let reports_id = d.alert_changed(&with_reports).expect("message made");
    push(Some(reports_id.clone()));
    // A public warning listing what contributed (one parameter each), and its end: an all-clear Update.
    let contributor = |rule: &str, severity: alerting::types::Severity| alerting::publication::Contributor {
        alert_id: format!("TW-DC-1-{rule}"),
        rule: rule.into(),
        level: "紅色;=警戒".into(),
        level_en: "red".into(),
        severity,
        value: 1.5,
        sensors: vec!["WS0001".into(), "RG0001".into()],
    };
    let grouped = AlertView {
        contributors: vec![
            contributor("debris-flow", alerting::types::Severity::Extreme),
            contributor("wire-trip", alerting::types::Severity::Severe),
        ],
        ..view("GROUPED", 1)
    };
    push(d.alert_changed(&grouped));
    push(d.alert_changed(&ended(AlertView { version: 2, ..grouped.clone() }, ViewState::Cleared)));

    let escapes = AlertView {
        values: [
            ("station@zh-TW", "玉峰橋 <A&B> \"站\""),
            ("station@en-US", "Bridge <A&B> 'x'"),
            ("warning_level", "1 & 2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        event: "river_level".into(),
        ..view("weird id/with spaces&amp", 1)
    };
    push(d.alert_changed(&escapes));

    let schema = xsd();
    assert!(identifiers.len() > 50, "{}", identifiers.len());
    for id in &identifiers {
        let xml = d.operator_cap_xml(id).expect("kept");
        if let Err(e) = xmllint(&xml, Some(schema)) {
            panic!("XSD rejects {id}:\n{e}\n{xml}");
        }
        assert!(!xml.contains("Z</"), "no Z times");
        let cap = parse_alert(xml.as_bytes()).unwrap_or_else(|e| panic!("{id} reads back: {e}"));
        assert!(cap.sent.offset().whole_hours() == 8);
    }

    // Conventions from the brief, on one message.
    let xml = d.cap_xml("Z0.2").unwrap();
    assert!(xml.contains("<msgType>Update</msgType>"));
    assert!(
        xml.contains("<references>alerts@disaster-cloud.example.tw,Z0.1,2025-11-26T10:01:00+08:00</references>"),
        "{xml}"
    );
    assert!(xml.contains("<language>zh-TW</language>") && xml.contains("<language>en-US</language>"));
    assert!(xml.contains("<valueName>profile:CAP-TWP:Event:1.0</valueName>"));
    assert!(xml.contains("<valueName>Taiwan_Geocode_103</valueName>"));
    assert!(xml.contains("<polygon>"));
    assert!(xml.contains("<web>https://alerts.example.tw/?alert=Z0</web>"));
    assert!(xml.contains("<sent>2025-11-26T10:02:00+08:00</sent>"));
    let again = d.cap_xml("AGAIN.3").unwrap();
    assert!(again.contains("<msgType>Alert</msgType>") && again.contains("AGAIN.2,"), "re-raised after cancel");
    let drill = d.cap_xml("Z1.1").unwrap();
    assert!(drill.contains("<status>Exercise</status>") && drill.contains("[演練]") && drill.contains("[Drill]"));
    let escaped = d.operator_cap_xml(identifiers.last().unwrap()).unwrap();
    assert!(escaped.contains("&lt;A&amp;B&gt;"));
    assert!(identifiers.last().unwrap().starts_with("weird_id_with_spaces_amp."));
    let reports = d.cap_xml(&reports_id).unwrap();
    assert!(reports.contains("<valueName>disaster-cloud:citizen_reports</valueName>"), "{reports}");
    assert!(
        reports.contains(
            "cluster=rc-1;category=flooding;reports=5;reporters=4;point=23.51851,120.92802;cell=884f1a0a6dfffff;\
             verified=2025-11-26T09:59:10+08:00"
        ),
        "{reports}"
    );
    assert!(reports.contains("cluster=rc-2;"), "{reports}");
    assert!(
        reports.contains("<mimeType>image/jpeg</mimeType>") && reports.contains("/opendata/reports/photos/abab"),
        "{reports}"
    );
    assert!(reports.contains("&lt;30 cm&gt; &amp; rising"), "the operator's summary in the texts, escaped: {reports}");
    let all_values = d.cap_xml("E0.1").unwrap();
    assert!(!all_values.contains('{'), "no unfilled placeholder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_lists_active_and_recent_public_messages_with_a_content_etag() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config("");
    cfg.feed.recent = 1;
    let d = start(cfg, dir.path());
    let empty = d.atom_feed();
    xmllint(&empty, None).expect("empty feed is XML");
    let e0 = d.feed_etag();
    assert!(e0.starts_with('"') && e0.ends_with('"'));

    d.alert_changed(&view("F1", 1));
    d.alert_changed(&view("F1", 2));
    d.alert_changed(&rain_view("F2", 1, "township-jiaxian"));
    d.alert_changed(&ended(rain_view("F2", 2, "township-jiaxian"), ViewState::Cleared));
    d.alert_changed(&rain_view("F3", 1, "township-xinyi"));
    d.alert_changed(&ended(rain_view("F3", 2, "township-xinyi"), ViewState::Cleared));
    d.alert_changed(&AlertView { public_release: false, ..view("F4", 1) });
    let feed = d.atom_feed();
    xmllint(&feed, None).expect("feed is XML");
    assert!(feed.contains("https://alerts.example.tw/cap/F1.2.xml"), "latest message of an active alert");
    assert!(!feed.contains("F1.1.xml"), "one entry per alert");
    assert!(feed.contains("F3.2.xml"), "the most recent ended alert");
    assert!(!feed.contains("F2."), "older ended alerts beyond `recent` drop out");
    assert!(!feed.contains("F4"), "held alerts are not public");
    assert!(feed.contains("application/cap+xml"));
    let e1 = d.feed_etag();
    assert_ne!(e0, e1);
    assert_eq!(d.feed_etag(), e1, "stable while nothing changes");
    // A held change does not touch the public feed.
    d.alert_changed(&AlertView { public_release: false, ..view("F4", 2) });
    assert_eq!(d.feed_etag(), e1);
    assert_eq!(d.atom_feed(), feed);
    drop(d);
    let d = start(config(""), dir.path());
    assert!(d.atom_feed().contains("F1.2.xml"), "the feed survives a restart");
}

/// A hazard that is over (the rules cleared it) ends with an Update saying AllClear, urgency Past, expiring within
/// the hour (Google Public Alerts' CAP guidance); only an operator's withdrawal is a Cancel (CAP 1.2: "cancels the
/// earlier message(s)"). A public warning's contributors are CAP parameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hazard_that_is_over_is_an_all_clear_update_and_a_withdrawal_a_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(config(""), dir.path());
    let contributor = alerting::publication::Contributor {
        alert_id: "TW-DC-1".into(),
        rule: "wire-trip".into(),
        level: "土石流鋼索斷線".into(),
        level_en: "wire broken".into(),
        severity: alerting::types::Severity::Severe,
        value: 0.0,
        sensors: vec!["WS0001".into()],
    };
    let raised = AlertView { contributors: vec![contributor], ..view("OVER", 1) };
    let first = d.alert_changed(&raised).unwrap();
    let xml = d.cap_xml(&first).unwrap();
    assert!(xml.contains("<valueName>disaster-cloud:contributor</valueName>"), "{xml}");
    assert!(
        xml.contains("rule=wire-trip;level=土石流鋼索斷線;level_en=wire broken;severity=Severe;value=0;sensors=WS0001")
    );
    let end = d.alert_changed(&ended(AlertView { version: 2, ..raised.clone() }, ViewState::Cleared)).unwrap();
    let alert = parse_alert(d.cap_xml(&end).unwrap().as_bytes()).unwrap();
    assert_eq!(alert.msg_type, encoders::cap::MsgType::Update);
    assert!(alert.infos.iter().all(|i| i.response_types == [encoders::cap::ResponseType::AllClear]));
    assert!(alert.infos.iter().all(|i| i.urgency == encoders::cap::Urgency::Past));
    let expires = alert.infos[0].expires.unwrap();
    assert!(expires > alert.sent && expires <= alert.sent + time::Duration::hours(1), "{expires} {}", alert.sent);
    assert!(d.atom_feed().contains("OVER.2.xml"), "the feed lists the all-clear");

    d.alert_changed(&view("WITHDRAWN", 1)).unwrap();
    let cancel = d.alert_changed(&ended(view("WITHDRAWN", 2), ViewState::Cancelled)).unwrap();
    assert_eq!(parse_alert(d.cap_xml(&cancel).unwrap().as_bytes()).unwrap().msg_type, encoders::cap::MsgType::Cancel);
    // After an all-clear, the same alert rising again opens a new chain (msgType Alert).
    let again = d.alert_changed(&AlertView { version: 3, ..raised }).unwrap();
    assert_eq!(parse_alert(d.cap_xml(&again).unwrap().as_bytes()).unwrap().msg_type, encoders::cap::MsgType::Alert);
}
