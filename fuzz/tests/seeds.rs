//! Writes the seed inputs that are easier to make with our own encoders than by hand: CAP messages as the builder
//! writes them (the same inputs as `encoders/src/cap/tests/mod.rs`), cell-broadcast pages and LTE contents.
//! Ignored by default; regenerate with `cargo test --test seeds -- --ignored` (then re-minimise, see README.md).

use std::collections::BTreeMap;
use std::path::Path;

use encoders::cap::{
    build_alert, write_alert, AreaInput, CapInput, Certainty, Localized, MsgType, Polygon, Severity, Status, Templates,
    Urgency,
};
use encoders::cell_broadcast::{drill, encode_broadcast, BroadcastMode, GeoScope, Language, PwsClass, SerialNumber};
use time::macros::datetime;

fn corpus(target: &str) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    dir
}

/// Placeholder values every shipped template needs.
fn values() -> BTreeMap<String, String> {
    encoders::test_support::template_values()
}

#[test]
#[ignore = "writes seed files into corpus/"]
fn write_cap_seeds() {
    let templates = Templates::from_toml_str(include_str!("../../config/cap_templates.toml")).expect("templates");
    let dir = corpus("alerting_cap_parse");
    let base = CapInput {
        identifier: "TW-DC-20261126-0001".into(),
        sender: "alerts@disaster-cloud.example.tw".into(),
        sent: datetime!(2026-11-26 10:00:00 UTC),
        status: Status::Actual,
        msg_type: MsgType::Alert,
        all_clear: false,
        references: vec![],
        note: None,
        event_type: "debris_flow".into(),
        level: None,
        urgency: Urgency::Immediate,
        severity: Severity::Severe,
        certainty: Certainty::Observed,
        effective: None,
        onset: None,
        expires: Some(datetime!(2026-11-26 22:00 +8)),
        areas: vec![AreaInput {
            desc: Localized::new("南投縣信義鄉神木村", "Shenmu Village, Xinyi Township, Nantou County"),
            polygons: vec![Polygon::from_ring([(23.52, 120.88), (23.52, 120.95), (23.56, 120.95), (23.56, 120.88)])
                .expect("polygon")],
            circles: vec![],
            geocodes: vec!["1000812".into()],
        }],
        web: Some("https://alerts.example.tw/alerts/TW-DC-20261126-0001".into()),
        incidents: Some("TW-DC-20261126-0001".into()),
        values: values(),
        parameters: vec![],
    };
    let first = build_alert(&base, &templates).expect("build");
    let cases = [
        ("debris_flow", Status::Actual, MsgType::Alert),
        ("heavy_rain", Status::Exercise, MsgType::Update),
        ("hazmat_geofence", Status::Test, MsgType::Cancel),
    ];
    for (event, status, msg_type) in cases {
        let mut input = base.clone();
        input.event_type = event.into();
        input.status = status;
        input.msg_type = msg_type;
        if msg_type != MsgType::Alert {
            input.identifier = format!("{}-v2", base.identifier);
            input.references = vec![first.as_reference()];
        }
        let xml = write_alert(&build_alert(&input, &templates).expect("build")).expect("write");
        std::fs::write(dir.join(format!("{event}-{status}-{msg_type}.xml")), xml).expect("write seed");
    }
}

#[test]
#[ignore = "writes seed files into corpus/"]
fn write_cbs_seeds() {
    let dir = corpus("alerting_cbs_decode");
    let serial = SerialNumber::new(GeoScope::Plmn, 23, 1).expect("serial");
    let zh = drill::broadcast_text(
        BroadcastMode::Drill,
        Language::Chinese,
        "豪雨特報：南投縣信義鄉神木村土石流紅色警戒，請立即撤離。",
    );
    let en = "Debris flow RED alert: Shenmu Village, Xinyi Township. Evacuate now! [ref] {1} €5 @home ~".repeat(2);
    for (name, cb) in [
        ("zh", encode_broadcast(PwsClass::Alert, Language::Chinese, serial, &zh).expect("zh")),
        ("en", encode_broadcast(PwsClass::Presidential, Language::English, serial, &en).expect("en")),
    ] {
        let pages: Vec<u8> = cb.page_bytes().concat();
        std::fs::write(dir.join(format!("pages-{name}")), pages).expect("write");
        let mut lte = vec![cb.dcs];
        lte.extend(cb.warning_message_content());
        std::fs::write(dir.join(format!("lte-{name}")), lte).expect("write");
    }
}
