//! Encoders on the path from an alert to the public: CAP 1.2 (build from templates + write XML, and parse back as an
//! inbound message would be), cell broadcast pages (UCS-2 Chinese, GSM 7-bit English) and the SBc-AP
//! Write-Replace-Warning-Request for a county-sized list of 2,000 cells.
//!
//! `cargo bench -p encoders --bench encoders` (add `-- --warm-up-time 1 --measurement-time 5` for a quick run).

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use encoders::cap::{
    build_alert, parse_alert, write_alert, AreaInput, CapInput, Certainty, Localized, MsgType, Polygon, Severity,
    Status, Templates, Urgency,
};
use encoders::cell_broadcast::{
    drill, encode_broadcast, write_replace_warning_request, BroadcastMode, Ecgi, GeoScope, Language, Plmn, PwsClass,
    Schedule, SerialNumber, WarningArea,
};
use time::macros::datetime;

const TEMPLATES: &str = include_str!("../../config/cap_templates.toml");

fn input() -> CapInput {
    let values: BTreeMap<String, String> = [("rain_24h_mm", "356"), ("rain_1h_mm", "72.5"), ("threshold_mm", "300")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // A zone outline as geo-index writes it for CAP: a few dozen vertices.
    let ring: Vec<(f64, f64)> = (0..48)
        .map(|i| {
            let a = i as f64 / 48.0 * std::f64::consts::TAU;
            (23.52 + 0.03 * a.sin(), 120.93 + 0.03 * a.cos())
        })
        .collect();
    CapInput {
        identifier: "TW-DC-20261126-0001".into(),
        sender: "alerts@disaster-cloud.example.tw".into(),
        sent: datetime!(2026-11-26 10:00:00 UTC),
        status: Status::Actual,
        msg_type: MsgType::Alert,
        all_clear: false,
        references: vec![],
        note: None,
        event_type: "debris_flow".into(),
        level: Some("red".into()),
        urgency: Urgency::Immediate,
        severity: Severity::Severe,
        certainty: Certainty::Observed,
        effective: None,
        onset: None,
        expires: Some(datetime!(2026-11-26 22:00 +8)),
        areas: vec![AreaInput {
            desc: Localized::new("南投縣信義鄉神木村", "Shenmu Village, Xinyi Township, Nantou County"),
            polygons: vec![Polygon::from_ring(ring).expect("valid ring")],
            circles: vec![],
            geocodes: vec!["1000813".into()],
        }],
        web: Some("https://alerts.example.tw/alerts/TW-DC-20261126-0001".into()),
        incidents: None,
        values,
        parameters: vec![],
    }
}

fn cap(c: &mut Criterion) {
    let templates = Templates::from_toml_str(TEMPLATES).expect("shipped templates load");
    let input = input();
    let xml = write_alert(&build_alert(&input, &templates).expect("builds")).expect("writes");
    let mut group = c.benchmark_group("cap");
    group.throughput(Throughput::Elements(1));
    group.bench_function("build_and_write_zh_en", |b| {
        b.iter(|| write_alert(&build_alert(&input, &templates).expect("builds")).expect("writes"))
    });
    group.bench_function("parse", |b| b.iter(|| parse_alert(xml.as_bytes()).expect("parses")));
    group.finish();
}

fn cell_broadcast(c: &mut Criterion) {
    let zh = drill::broadcast_text(
        BroadcastMode::Actual,
        Language::Chinese,
        "國家級警報：南投縣信義鄉神木村雨量已達土石流警戒基準值，請立即撤離至避難處所。",
    );
    let en = drill::broadcast_text(
        BroadcastMode::Actual,
        Language::English,
        "Presidential Alert: debris-flow threshold reached at Shenmu Village, Xinyi, Nantou. Evacuate now.",
    );
    let serial = SerialNumber::new(GeoScope::Plmn, 23, 0).expect("serial");
    let plmn = Plmn::new("466", "92").expect("plmn");
    let county = WarningArea::Cells((0..2000u32).map(|i| Ecgi { plmn, cell_id: 0x0AB_0000 + i }).collect());
    let schedule = Schedule { repetition_period_s: 60, number_of_broadcasts: 0 };
    let mut group = c.benchmark_group("cell_broadcast");
    group.throughput(Throughput::Elements(1));
    group.bench_function("pages_ucs2_chinese", |b| {
        b.iter(|| encode_broadcast(PwsClass::Alert, Language::Chinese, serial, &zh).expect("encodes"))
    });
    group.bench_function("pages_gsm7_english", |b| {
        b.iter(|| encode_broadcast(PwsClass::Alert, Language::English, serial, &en).expect("encodes"))
    });
    let cb = encode_broadcast(PwsClass::Alert, Language::Chinese, serial, &zh).expect("encodes");
    group.bench_function("sbcap_write_replace_2000_cells", |b| {
        b.iter(|| write_replace_warning_request(&cb, &county, schedule).expect("encodes"))
    });
    group.finish();
}

criterion_group!(benches, cap, cell_broadcast);
criterion_main!(benches);
