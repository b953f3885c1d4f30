//! Real-world-shaped CAP samples (`fixtures/*.xml`, modelled on what Taiwan's civil alert platform carries from
//! CWA, WRA and SWCB) are valid against the OASIS CAP 1.2 XSD, read, and land on the zones a person would expect.
//! The messages the other tests generate are checked against the XSD too, so those tests feed valid CAP.

use super::*;
use encoders::cap::{parse_alert, Status};

const FIXTURES: &[(&str, &str)] = &[
    ("cwa_heavy_rain.xml", include_str!("fixtures/cwa_heavy_rain.xml")),
    ("wra_river_high_water.xml", include_str!("fixtures/wra_river_high_water.xml")),
    ("swcb_debris_flow_yellow.xml", include_str!("fixtures/swcb_debris_flow_yellow.xml")),
    ("cwa_exercise_circle.xml", include_str!("fixtures/cwa_exercise_circle.xml")),
];

#[test]
fn fixtures_and_generated_messages_are_xsd_valid() {
    for (name, xml) in FIXTURES {
        if let Err(e) = xmllint(xml) {
            panic!("{name} fails the CAP 1.2 XSD:\n{e}");
        }
        if let Err(e) = parse_alert(xml.as_bytes()) {
            panic!("{name} does not read: {e}");
        }
    }
    let rain = Msg::rain("CWA-x-1", 0);
    let mut river = Msg::rain("WRA-x-1", 0);
    river.polygon = Some("23.80,120.60 23.80,120.70 23.84,120.70 23.84,120.60 23.80,120.60");
    river.circle = Some("23.52,120.928 1.5");
    let mut drill = Msg::debris("SWCB-x-1", 0, 60);
    drill.status = "Exercise";
    for m in
        [rain.clone(), rain.follow_up("CWA-x-2", "Update", 5), rain.follow_up("CWA-x-3", "Cancel", 9), river, drill]
    {
        if let Err(e) = xmllint(&m.xml()) {
            panic!("generated test message fails the XSD:\n{e}\n{}", m.xml());
        }
    }
}

/// Pushes one fixture a minute after its `sent` and returns the alert it raised.
async fn push_fixture(inbound: &Inbound, name: &str) -> ExternalAlert {
    let xml = FIXTURES.iter().find(|(n, _)| *n == name).map(|(_, x)| *x).expect("fixture");
    let sent_ms = parse_alert(xml.as_bytes()).expect("reads").sent.unix_timestamp() * 1000;
    let out = inbound.push(Some("fixtures"), &bearer("token-fixtures"), xml.as_bytes(), sent_ms + 60_000);
    let Ok(PushOutcome::Raised { id }) = out else { panic!("{name}: {out:?}") };
    inbound.active().into_iter().find(|a| a.id == id).expect("active")
}

#[tokio::test]
async fn fixtures_land_on_the_expected_zones() {
    let (inbound, _rx) = Inbound::start(push_config("fixtures", true), geo()).expect("starts");

    let rain = push_fixture(&inbound, "cwa_heavy_rain.xml").await;
    assert_eq!(rain.id, "ext:weather@cwa.gov.tw:CWA-Weather_extremely-heavy-rain_202611261740001");
    assert_eq!(
        rain.zone_ids,
        vec!["dfa-jiaxian-xiaolin", "dfa-namasia-minsheng", DONGPU, SHENMU, TONGFU, PH21, "township-jiaxian", XINYI],
        "Xinyi, Jiaxian and Namasia zones; not the county-tagged river reach of Nantou"
    );
    assert_eq!(rain.unresolved_geocodes, vec!["1001323"], "Sandimen is outside our zones, and shown as such");
    assert_eq!(rain.event_code.as_deref(), Some("rainfall"));
    assert_eq!(rain.sender_name.as_deref(), Some("中央氣象署"));
    assert_eq!(rain.headline_en.as_deref(), Some("Extremely Heavy Rain Advisory"));
    assert_eq!(rain.expires.as_deref(), Some("2026-11-27T05:40:00+08:00"));
    assert!(rain.public);

    let river = push_fixture(&inbound, "wra_river_high_water.xml").await;
    assert_eq!(river.zone_ids, vec![FWY3, ZHUOSHUI], "the polygon places it; the townships have no zones");
    assert_eq!(river.geometry["type"], "Polygon");
    assert_eq!(river.unresolved_geocodes, vec!["1000804", "1000805", "1000806"]);

    let debris = push_fixture(&inbound, "swcb_debris_flow_yellow.xml").await;
    assert_eq!(debris.zone_ids, vec![DONGPU, SHENMU, TONGFU, PH21, XINYI]);
    assert_eq!(debris.area_desc, vec!["南投縣信義鄉神木村", "南投縣信義鄉東埔村"]);
    assert_eq!(debris.severity, encoders::cap::Severity::Moderate);

    let drill = push_fixture(&inbound, "cwa_exercise_circle.xml").await;
    assert_eq!(drill.status, Status::Exercise);
    assert!(!drill.public, "an exercise is never public");
    assert!(drill.zone_ids.contains(&SHENMU.to_string()));
    assert_eq!(drill.sent, "2026-11-26T10:00:00-00:00", "the agency's own spelling is kept");

    // The composite-rule hook: the SWCB yellow alert covers Shenmu from its effective time, the exercise never
    // counts, and the rain alert does not count as a debris-flow warning.
    let coverage = inbound.coverage();
    let at = |s: &str| encoders::cap::parse_cap_time(s).expect("time").unix_timestamp() * 1000;
    let debris_flow = ExternalFilter::event_code("debrisFlow");
    assert!(coverage.zone_covered_by(SHENMU, &debris_flow, at("2026-11-26T19:30:00+08:00")));
    assert!(!coverage.zone_covered_by(SHENMU, &debris_flow, at("2026-11-26T18:59:59+08:00")));
    assert!(!coverage.zone_covered_by("dfa-jiaxian-xiaolin", &debris_flow, at("2026-11-26T19:30:00+08:00")));
    assert!(coverage.zone_covered_by(
        "dfa-jiaxian-xiaolin",
        &ExternalFilter::event_code("rainfall"),
        at("2026-11-26T19:30:00+08:00")
    ));
    assert!(!coverage.zone_covered_by(
        SHENMU,
        &ExternalFilter::event_code("earthquake"),
        at("2026-11-26T18:30:00+08:00")
    ));

    let json = serde_json::to_value(ExternalEvent::Raised(debris)).expect("serialises");
    assert_eq!((json["change"].as_str(), json["source"].as_str()), (Some("raised"), Some("fixtures")));
}
