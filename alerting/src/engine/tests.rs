//! The engine's unit tests: rule kinds one at a time on hand-made readings (scenarios over whole storms are in
//! `crate::tests`).

use std::path::Path;

use ingest::{Metric, SensorKind};

use super::*;

fn engine() -> RuleEngine {
    let rules = RuleSet::from_toml(include_str!("../../../config/rules.toml"), Path::new("rules.toml")).unwrap();
    RuleEngine::new(rules, 3_600_000)
}

fn gauge() -> Sensor {
    Sensor {
        id: "RG0001".into(),
        kind: SensorKind::RainGauge,
        lat: 23.5,
        lon: 120.9,
        interval_s: 600,
        agency: "CWA".into(),
        metrics: vec![Metric::RainMm],
        zone: None,
        mobile: false,
        retired: false,
    }
}

fn rain(ts_ms: i64, mm: f64) -> Reading {
    Reading { sensor_id: "RG0001".into(), ts_ms, metric: Metric::RainMm, value: mm, position: None }
}

const ZONE: [ZoneRef<'static>; 1] = [ZoneRef { id: "dfa", kind: ZoneKind::DebrisFlow }];
const MIN: i64 = 60_000;

fn heavy(out: &mut Vec<Finding>) -> Option<Finding> {
    let f = out.iter().rev().find(|f| f.rule_id == "heavy-rain").cloned();
    out.clear();
    f
}

#[test]
fn rain_rises_through_cwa_levels_and_clears_with_hysteresis() {
    let mut e = engine();
    let mut out = Vec::new();
    let t0 = 1_764_122_400_000;
    // 30 mm: nothing. 45 mm within the hour: 大雨 (≥40 mm/1 h).
    e.evaluate(&rain(t0, 30.0), &gauge(), &ZONE, &mut out);
    assert!(heavy(&mut out).is_none());
    e.evaluate(&rain(t0 + 10 * MIN, 15.0), &gauge(), &ZONE, &mut out);
    let f = heavy(&mut out).unwrap();
    assert_eq!(f.level.as_ref().unwrap().index, 0, "{f:?}");
    assert_eq!(f.values.get("rain_1h_mm").map(String::as_str), Some("45.0"));
    // 110 mm in 3 h: 豪雨 (≥100 mm/3 h).
    e.evaluate(&rain(t0 + 20 * MIN, 65.0), &gauge(), &ZONE, &mut out);
    assert_eq!(heavy(&mut out).unwrap().level.unwrap().index, 1);
    // A duplicate (same timestamp) is counted once.
    e.evaluate(&rain(t0 + 20 * MIN, 65.0), &gauge(), &ZONE, &mut out);
    assert!(out.is_empty());
    assert_eq!(e.counters.duplicates, 1);
    // 25 h later with no rain the windows are empty: cleared.
    e.evaluate(&rain(t0 + 25 * 60 * MIN, 0.0), &gauge(), &ZONE, &mut out);
    assert!(heavy(&mut out).unwrap().level.is_none());
}

#[test]
fn late_readings_are_placed_or_dropped() {
    let mut e = engine();
    let mut out = Vec::new();
    let t0 = 1_764_122_400_000;
    e.evaluate(&rain(t0, 30.0), &gauge(), &ZONE, &mut out);
    e.evaluate(&rain(t0 + 30 * MIN, 5.0), &gauge(), &ZONE, &mut out);
    // Late by 20 min, within the bound: it lands in its own bucket and makes the hour reach 40 mm.
    e.evaluate(&rain(t0 + 10 * MIN, 5.0), &gauge(), &ZONE, &mut out);
    assert_eq!(heavy(&mut out).unwrap().level.unwrap().index, 0);
    assert_eq!(e.counters.late_placed, 1);
    // Late by more than the bound (1 h): counted and dropped.
    e.evaluate(&rain(t0 + 30 * MIN + 2 * 3_600_000, 0.0), &gauge(), &ZONE, &mut out);
    e.evaluate(&rain(t0 + 20 * MIN, 50.0), &gauge(), &ZONE, &mut out);
    assert_eq!(e.counters.late_dropped, 1);
}

#[test]
fn readings_outside_scope_raise_nothing() {
    let mut e = engine();
    let mut out = Vec::new();
    e.evaluate(&rain(0, 300.0), &gauge(), &[], &mut out);
    assert!(out.is_empty());
}

#[test]
fn extreme_inputs_are_handled_without_panics() {
    let mut e = engine();
    let mut out = Vec::new();
    for ts in [i64::MIN, 0, i64::MAX, i64::MIN + 1, i64::MAX - 1] {
        e.evaluate(&rain(ts, 1.0), &gauge(), &ZONE, &mut out);
        let mut tilt = rain(ts, 0.5);
        tilt.metric = Metric::TiltDeg;
        let mut meter = gauge();
        meter.kind = SensorKind::TiltMeter;
        meter.id = "TM9".into();
        e.evaluate(&tilt, &meter, &ZONE, &mut out);
        e.tick(ts, &mut out);
    }
    for v in [f64::NAN, f64::INFINITY, -1.0, 1e300] {
        e.evaluate(&rain(5, v), &gauge(), &ZONE, &mut out);
    }
    assert!(matches!(e.post_forecast("dfa", -1.0, 0, &mut out), Err(ForecastError::BadValue(_))));
    assert!(matches!(e.post_forecast("nowhere", 1.0, 0, &mut out), Err(ForecastError::UnknownZone(_))));
    assert!(e.post_forecast("dfa", 1.0, i64::MIN, &mut out).is_ok());
    e.tick(i64::MAX, &mut out);
}

/// A partner agency's warning over `zones`, in force from `effective_ms` for six hours.
fn warning(
    source: &str,
    code: &str,
    zones: &[&str],
    status: encoders::cap::Status,
    effective_ms: i64,
) -> ExternalAlert {
    use encoders::cap::{Category, Certainty, MsgType, Scope, Severity, Urgency};
    ExternalAlert {
        id: format!("ext:{source}@example.tw:{code}"),
        version: 1,
        source: source.into(),
        identifier: code.into(),
        sender: format!("{source}@example.tw"),
        sent: String::new(),
        sent_ms: effective_ms,
        status,
        msg_type: MsgType::Alert,
        scope: Scope::Public,
        event: "土石流".into(),
        event_code: Some(code.into()),
        categories: vec![Category::Geo],
        severity: Severity::Moderate,
        urgency: Urgency::Expected,
        certainty: Certainty::Likely,
        sender_name: Some("水保署".into()),
        headline_zh: None,
        headline_en: None,
        description_zh: None,
        description_en: None,
        instruction_zh: None,
        instruction_en: None,
        web: None,
        area_desc: Vec::new(),
        effective_ms,
        expires: None,
        expires_ms: effective_ms + 6 * 3_600_000,
        zone_ids: zones.iter().map(|z| z.to_string()).collect(),
        geocodes: Vec::new(),
        unresolved_geocodes: Vec::new(),
        geometry: serde_json::Value::Null,
        public: true,
        received_ms: effective_ms,
    }
}

fn debris(out: &mut Vec<Finding>) -> Vec<Finding> {
    let found = out.iter().filter(|f| f.rule_id == "debris-flow").cloned().collect();
    out.clear();
    found
}

#[test]
fn the_slope_agencys_warning_gives_yellow_and_our_rain_confirms_red() {
    use encoders::cap::Status;
    let mut e = engine();
    e.install_zone("dfa", Some(ZoneKind::DebrisFlow), BTreeMap::from([("rain_1h_mm".to_string(), 60.0)]));
    let mut out = Vec::new();
    let t0 = 1_764_122_400_000;
    // An exercise, another agency, another event, or a warning not yet in force: nothing.
    let not_yet = [
        warning("swcb", "debrisFlow", &["dfa"], Status::Exercise, t0),
        warning("wra", "debrisFlow", &["dfa"], Status::Actual, t0),
        warning("swcb", "landslide", &["dfa"], Status::Actual, t0),
        warning("swcb", "debrisFlow", &["elsewhere"], Status::Actual, t0),
        warning("swcb", "debrisFlow", &["dfa"], Status::Actual, t0 + 3_600_000),
    ];
    e.set_external(not_yet.to_vec(), t0, &mut out);
    assert!(debris(&mut out).is_empty());
    // The slope agency's warning alone: yellow, with its texts and the source named.
    let swcb = warning("swcb", "debrisFlow", &["dfa"], Status::Actual, t0);
    e.set_external(vec![swcb.clone()], t0, &mut out);
    let f = debris(&mut out);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].level.as_ref().map(|l| l.index), Some(0));
    assert_eq!(f[0].trigger, Trigger::External);
    assert_eq!(f[0].values.get("external_source").map(String::as_str), Some("swcb"));
    assert_eq!(f[0].values.get(crate::rules::TEMPLATE_VALUE).map(String::as_str), Some("yellow"));
    // Told again, nothing changed: nothing to say.
    e.set_external(vec![swcb.clone()], t0 + 1000, &mut out);
    assert!(debris(&mut out).is_empty());
    // Our rain reaches the area's threshold as well: red.
    e.evaluate(&rain(t0 + 10 * MIN, 65.0), &gauge(), &ZONE, &mut out);
    let f = debris(&mut out);
    assert_eq!(f.last().and_then(|f| f.level.as_ref()).map(|l| l.index), Some(1), "{f:?}");
    assert_eq!(f.last().unwrap().values.get(crate::rules::TEMPLATE_VALUE).map(String::as_str), Some("red"));
    // A reload keeps both the windows and the warning: still red, nothing announced.
    let rules = RuleSet::from_toml(include_str!("../../../config/rules.toml"), Path::new("rules.toml")).unwrap();
    e.reload(rules, &mut out);
    assert!(debris(&mut out).is_empty(), "reload changed nothing");
    assert_eq!(e.area_level("debris-flow", "dfa"), Some(1));
    // The warning ends (cancelled or expired): back to yellow on our rain alone.
    e.set_external(Vec::new(), t0 + 20 * MIN, &mut out);
    let f = debris(&mut out);
    assert_eq!(f.last().and_then(|f| f.level.as_ref()).map(|l| l.index), Some(0), "{f:?}");
}

#[test]
fn a_warning_counts_once_it_is_in_force_and_until_it_expires() {
    use encoders::cap::Status;
    let mut e = engine();
    e.install_zone("dfa", Some(ZoneKind::DebrisFlow), BTreeMap::new());
    let mut out = Vec::new();
    let t0 = 1_764_122_400_000;
    let later = warning("swcb", "debrisFlow", &["dfa"], Status::Actual, t0 + 60_000);
    e.set_external(vec![later.clone()], t0, &mut out);
    assert!(debris(&mut out).is_empty());
    e.set_external(vec![later.clone()], t0 + 60_000, &mut out);
    assert_eq!(debris(&mut out).len(), 1);
    e.set_external(vec![later.clone()], later.expires_ms, &mut out);
    let f = debris(&mut out);
    assert!(f.len() == 1 && f[0].level.is_none(), "{f:?}");
}

#[test]
fn rain_gauge_state_fits_in_one_kib() {
    let mut e = engine();
    let mut out = Vec::new();
    for i in 0..200 {
        e.evaluate(&rain(i * 10 * MIN, 1.0), &gauge(), &ZONE, &mut out);
    }
    let bytes = e.state_bytes();
    assert!(bytes.max_per_sensor <= 1024, "{bytes:?}");
}
