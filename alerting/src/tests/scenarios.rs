//! Scenario replays on the demo configuration, asserting the exact alert sequence (time, change, rule@zone, level,
//! version). Times are scenario time (hh:mm after T0). Sensors report every 10 minutes unless said otherwise.

use ingest::{Metric, SensorKind};

use super::{line, Harness, HOUR, MIN, T0};
use crate::alert::{Alert, Change, PublicRelease};

const SHENMU: &str = "dfa-xinyi-shenmu";

/// Rain (mm per hour) at scenario hour `h` for the typhoon: outer bands, the core, then it moves away.
fn typhoon_rate(h: f64) -> f64 {
    match h {
        h if h < 8.0 => 5.0,
        h if h < 10.0 => 45.0,
        h if h < 16.0 => 60.0,
        h if h < 20.0 => 25.0,
        _ => 0.0,
    }
}

/// Typhoon rain at RG0001 through every CWA level, then 30 dry hours: the heavy-rain alert for the Shenmu
/// debris-flow area is raised once, escalates level by level, de-escalates with hysteresis and clears. The gauge
/// also crosses Shenmu's own debris-flow threshold (250 mm/24 h, 60 mm/1 h), which turns the debris-flow composite
/// yellow (observed rain, no ground evidence yet).
#[test]
fn typhoon_rain_through_every_cwa_level() {
    let mut h = Harness::new();
    for step in 1..=(50 * 6) {
        let ts = T0 + step * 10 * MIN;
        let hour = (step - 1) as f64 / 6.0;
        h.read("RG0001", ts, Metric::RainMm, typhoon_rate(hour) / 6.0);
    }
    let log = h.log(&["heavy-rain"]);
    let expected = [
        // 1 h: 6 × 7.5 = 45 mm ≥ 40 (and 24 h: 39.8 + 45 ≥ 80).
        "09:00 Raised heavy-rain@dfa-xinyi-shenmu 大雨 v1",
        // 3 h: 5 × 0.83 + 12 × 7.5 + 10 = 104.2 mm ≥ 100.
        "10:10 Escalated heavy-rain@dfa-xinyi-shenmu 豪雨 v2",
        // 24 h: 129.8 + 22 × 10 = 349.8 at 13:40, 359.8 at 13:50 ≥ 350 (5 mm/h is stored as 0.83 per report).
        "13:50 Escalated heavy-rain@dfa-xinyi-shenmu 大豪雨 v3",
        // 24 h: 489.8 + 3 × 4.17 ≥ 500.
        "16:30 Escalated heavy-rain@dfa-xinyi-shenmu 超大豪雨 v4",
        // The day-old rain leaves the window: 440.1 < 450 (500 less the 10% margin), still ≥ 350.
        "34:20 DeEscalated heavy-rain@dfa-xinyi-shenmu 大豪雨 v5",
        // 310.1 < 315.
        "36:30 DeEscalated heavy-rain@dfa-xinyi-shenmu 豪雨 v6",
        // 170.1 < 180 (3 h is empty).
        "38:50 DeEscalated heavy-rain@dfa-xinyi-shenmu 大雨 v7",
        // 70.9 < 72.
        "41:10 Cleared heavy-rain@dfa-xinyi-shenmu 大雨 v8",
    ];
    assert_eq!(log, expected, "\n{}", log.join("\n"));
    // Every transition is one alert.
    let ids: std::collections::BTreeSet<_> =
        h.changes.iter().filter(|a| a.rule_id == "heavy-rain").map(|a| a.id.clone()).collect();
    assert_eq!(ids.len(), 1);
    // The levels are justified by the CAP values the alert carries (24 h / 3 h / 1 h sums at the gauge).
    let raised = &h.changes.iter().find(|a| a.rule_id == "heavy-rain").unwrap();
    let sum = |k: &str| raised.values[k].parse::<f64>().unwrap();
    assert!(sum("rain_1h_mm") >= 40.0 || sum("rain_24h_mm") >= 80.0, "{:?}", raised.values);
    assert_eq!(raised.public_release, PublicRelease::NotRequired);

    let debris = h.log(&["debris-rain", "debris-flow"]);
    let expected = [
        // Shenmu's 1 h threshold (60 mm): six reports of 10 mm.
        "11:00 Raised debris-rain@dfa-xinyi-shenmu 雨量達土石流警戒基準值 v1",
        "11:00 Raised debris-flow@dfa-xinyi-shenmu 土石流黃色警戒 v1",
    ];
    assert_eq!(debris[..2], expected, "\n{}", debris.join("\n"));
    let yellow = h.changes.iter().find(|a| a.rule_id == "debris-flow").unwrap();
    assert_eq!(yellow.sensors.keys().collect::<Vec<_>>(), ["RG0001"]);
    assert_eq!(yellow.values.get("threshold_mm").map(String::as_str), Some("250"));
    // The gauge-level signal is for operators only; the composite is the public warning.
    let signal = h.changes.iter().find(|a| a.rule_id == "debris-rain").unwrap();
    assert_eq!(signal.public_release, PublicRelease::Withheld);
    assert_eq!(yellow.public_release, PublicRelease::NotRequired);
    assert_eq!(h.book.active().count(), 0, "everything cleared after 30 dry hours");
}

/// Slope failure at Shenmu: TM0001 tilt accelerates (0.02 °/h, then 0.15 °/h), EX0001 opens at 15 mm/h, the wire
/// at WS0001 breaks. Single sensors tell operators; the landslide composite goes public at once as "imminent"
/// (extensometer AND tilt warning) and holds until the ground settles.
#[test]
fn landslide_tilt_extensometer_and_wire() {
    let mut h = Harness::new();
    let mut tilt = 0.1;
    let mut opening = 0.0;
    for step in 1..=(22 * 6) {
        let ts = T0 + step * 10 * MIN;
        let hour = (step - 1) as f64 / 6.0;
        tilt += match hour {
            x if x < 12.0 => 0.001,
            x if x < 15.0 => 0.02,
            x if x < 17.0 => 0.15,
            _ => 0.0,
        } / 6.0;
        opening += match hour {
            x if x < 15.0 => 0.0,
            x if x < 16.0 => 5.0,
            x if x < 17.0 => 15.0,
            _ => 0.0,
        } / 6.0;
        h.read("TM0001", ts, Metric::TiltDeg, tilt);
        h.read("EX0001", ts, Metric::DisplacementMm, opening);
        h.read("WS0001", ts, Metric::WireIntact, if hour < 17.0 { 1.0 } else { 0.0 });
    }
    let log = h.log(&["tilt-rate", "extensometer-rate", "wire-trip", "landslide", "tilt-confirmed", "debris-flow"]);
    let expected = [
        // Over the last hour: 3 × 0.001/6 + 3 × 0.02/6 = 0.0105 °/h ≥ 0.01.
        "12:30 Raised tilt-rate@dfa-xinyi-shenmu 邊坡傾斜注意 v1",
        // 4 × 0.15/6 + 2 × 0.02/6 = 0.107 °/h ≥ 0.1.
        "15:40 Escalated tilt-rate@dfa-xinyi-shenmu 邊坡傾斜警戒 v2",
        // 3 × 5/6 + 3 × 15/6 = 10 mm/h.
        "16:30 Raised extensometer-rate@dfa-xinyi-shenmu 崩塌可能發生 v1",
        "16:30 Raised landslide@dfa-xinyi-shenmu 崩塌即將發生 v1",
        "17:10 Raised wire-trip@dfa-xinyi-shenmu 土石流鋼索斷線 v1",
        // One more sensor behind the same hazard: an update, not a second alert.
        "17:10 Updated landslide@dfa-xinyi-shenmu 崩塌即將發生 v2",
        // Tilt stopped at 17:00: 0.075 °/h < 0.08 (0.1 less the 20% margin), still ≥ 0.01.
        "17:30 DeEscalated tilt-rate@dfa-xinyi-shenmu 邊坡傾斜注意 v3",
        // 7.5 mm/h < 8.
        "17:30 Cleared extensometer-rate@dfa-xinyi-shenmu 崩塌可能發生 v2",
        // Neither level holds without the extensometer and the tilt warning.
        "17:30 Cleared landslide@dfa-xinyi-shenmu 崩塌即將發生 v3",
        "18:00 Cleared tilt-rate@dfa-xinyi-shenmu 邊坡傾斜注意 v4",
    ];
    assert_eq!(log, expected, "\n{}", log.join("\n"));
    let imminent = h.changes.iter().find(|a| a.rule_id == "landslide").unwrap();
    // Extreme landslides wait for an operator before the public channels carry them; operators see it at once.
    assert_eq!(imminent.public_release, PublicRelease::Pending);
    assert_eq!(imminent.sensors.keys().collect::<Vec<_>>(), ["EX0001", "TM0001"]);
    let tilt_alert = h.changes.iter().find(|a| a.rule_id == "tilt-rate").unwrap();
    assert!(tilt_alert.values["measurement@zh-TW"].starts_with("傾斜速率"), "{:?}", tilt_alert.values);
    // The broken wire stays broken: its alert stays until the wire is repaired (reads intact).
    assert_eq!(h.book.active().map(|a| a.rule_id.as_str()).collect::<Vec<_>>(), ["wire-trip"]);
    let repaired = h.read("WS0001", T0 + 23 * HOUR, Metric::WireIntact, 1.0);
    assert_eq!(
        repaired.iter().map(line).collect::<Vec<_>>(),
        ["23:00 Cleared wire-trip@dfa-xinyi-shenmu 土石流鋼索斷線 v2"]
    );
}

/// k of n: one tilt meter is a signal for operators; a second one agreeing in the same area confirms it (public).
#[test]
fn two_tilt_meters_agreeing_confirm_the_hazard() {
    let mut h = Harness::new();
    h.add_sensor("TM0002", SensorKind::TiltMeter, 23.5175, 120.9295, 600);
    for step in 1..=(5 * 6) {
        let ts = T0 + step * 10 * MIN;
        let hour = (step - 1) as f64 / 6.0;
        // TM0001 moves 0.03 °/h from the start; TM0002 only after 2 h.
        h.read("TM0001", ts, Metric::TiltDeg, 0.03 * hour);
        h.read("TM0002", ts, Metric::TiltDeg, if hour < 2.0 { 0.0 } else { 0.03 * (hour - 2.0) });
    }
    let log = h.log(&["tilt-rate", "tilt-confirmed"]);
    let expected = [
        // TM0001: 0.015° over 30 min (the shortest span counted).
        "00:40 Raised tilt-rate@dfa-xinyi-shenmu 邊坡傾斜注意 v1",
        // TM0002: 0.01° in the last hour.
        "02:30 Updated tilt-rate@dfa-xinyi-shenmu 邊坡傾斜注意 v2",
        "02:30 Raised tilt-confirmed@dfa-xinyi-shenmu 邊坡傾斜注意（多站確認） v1",
    ];
    assert_eq!(log, expected, "\n{}", log.join("\n"));
    let single = &h.changes[0];
    assert_eq!(single.public_release, PublicRelease::Withheld, "a single sensor does not warn the public");
    let confirmed = h.changes.iter().find(|a| a.rule_id == "tilt-confirmed").unwrap();
    assert_eq!(confirmed.public_release, PublicRelease::NotRequired);
    assert_eq!(confirmed.sensors.keys().collect::<Vec<_>>(), ["TM0001", "TM0002"]);
}

/// The Zhuoshui rises from 3.6 m through WRA levels 3 and 2 while the gauge's link drops for 90 minutes (its buffer
/// catches up late, in order), then falls: each level needs 5 minutes of event time, and clears 0.3 m below.
#[test]
fn river_rise_with_link_drop() {
    let mut h = Harness::new();
    let level = |hour: f64| -> f64 {
        let points = [(0.0, 3.6), (4.0, 4.8), (7.0, 6.3), (9.0, 6.6), (13.0, 4.4)];
        let i = points.iter().rposition(|p| p.0 <= hour).unwrap_or(0);
        let (a, b) = (points[i], points.get(i + 1).copied().unwrap_or(points[i]));
        if b.0 == a.0 {
            a.1
        } else {
            a.1 + (b.1 - a.1) * (hour - a.0) / (b.0 - a.0)
        }
    };
    let mut buffered = Vec::new();
    for step in 0..=(14 * 6) {
        let ts = T0 + step * 10 * MIN;
        let hour = step as f64 / 6.0;
        let value = (level(hour) * 1000.0).round() / 1000.0;
        // Link down 5:00-6:30: the firmware buffers and catches up at 6:30.
        if (5.0..6.5).contains(&hour) {
            buffered.push((ts, value));
            continue;
        }
        for (t, v) in buffered.drain(..) {
            h.read("RV0001", t, Metric::WaterLevelM, v);
        }
        h.read("RV0001", ts, Metric::WaterLevelM, value);
    }
    let log = h.log(&["river-level"]);
    let expected = [
        // 5.05 m at 04:30 starts the 5-minute hold; 04:40 confirms it.
        "04:40 Raised river-level@reach-zhuoshui-mid 三級警戒 v1",
        // The buffered 05:00-06:20 readings (≤ 5.97 m) arrive at 06:30 with 6.05 m; 06:40 confirms.
        "06:40 Escalated river-level@reach-zhuoshui-mid 二級警戒 v2",
        // Falling 0.55 m/h from 6.6 m at 09:00: 5.68 m < 5.7 (6.0 less 0.3).
        "10:40 DeEscalated river-level@reach-zhuoshui-mid 三級警戒 v3",
        // 4.675 m < 4.7.
        "12:30 Cleared river-level@reach-zhuoshui-mid 三級警戒 v4",
    ];
    assert_eq!(log, expected, "\n{}", log.join("\n"));
    let raised = h.changes.iter().find(|a| a.rule_id == "river-level").unwrap();
    assert_eq!(raised.values.get("warning_level").map(String::as_str), Some("3"));
    assert_eq!(h.engine.counters.late_dropped, 0);
}

/// HZ0001 drives from Chiayi through the Mailiao restricted zone and out again; later a second truck stops on the
/// flooded Freeway 3 segment at Nantou.
#[test]
fn hazmat_route_into_a_restricted_zone_and_a_flooded_road() {
    let mut h = Harness::new();
    let route = [
        (0, 23.7000, 120.4000),
        (60, 23.7500, 120.3000),
        (110, 23.7850, 120.2150),
        (130, 23.7920, 120.2000),
        (150, 23.8000, 120.1950),
        (180, 23.8300, 120.2500),
        (240, 23.8600, 120.4000),
    ];
    let at = |minute: i64| -> (f64, f64) {
        let i = route.iter().rposition(|p| p.0 <= minute).unwrap_or(0);
        let (a, b) = (route[i], route.get(i + 1).copied().unwrap_or(route[i]));
        if a.0 == b.0 {
            return (a.1, a.2);
        }
        let f = (minute - a.0) as f64 / (b.0 - a.0) as f64;
        (a.1 + (b.1 - a.1) * f, a.2 + (b.2 - a.2) * f)
    };
    for minute in (0..=240).step_by(2) {
        h.read_at("HZ0001", T0 + minute * MIN, Metric::SpeedKmh, 55.0, Some(at(minute)));
    }
    let log = h.log(&["hazmat-restricted", "hazmat-hazard-area"]);
    let entered = h.changes.iter().find(|a| a.rule_id == "hazmat-restricted").unwrap().issued_ms;
    let mailiao = h.geo.zone("restricted-mailiao").unwrap();
    let inside = |m: i64| {
        let (lat, lon) = at(m);
        geo::Intersects::intersects(&mailiao.geometry, &geo::Point::new(lon, lat))
    };
    let first_inside = (0..=240).step_by(2).find(|m| inside(*m)).unwrap();
    assert_eq!(entered, T0 + first_inside * MIN, "raised on the first report inside");
    assert_eq!(log.len(), 2, "\n{}", log.join("\n"));
    assert!(log[0].contains("Raised hazmat-restricted@restricted-mailiao 危險物品車輛進入管制區 v1"), "{log:?}");
    assert!(log[1].contains("Cleared hazmat-restricted@restricted-mailiao"), "{log:?}");
    let raised = h.changes.iter().find(|a| a.rule_id == "hazmat-restricted").unwrap();
    assert_eq!(raised.public_release, PublicRelease::Pending, "hazmat alerts wait for an operator");
    assert_eq!(raised.values.get("vehicle").map(String::as_str), Some("HZ0001"));

    // Freeway 3 floods; truck HZ0002 drives into the segment, stops for 4 minutes, drives on. (RF0009 stands on
    // the road's centre line: the demo's RF0001 sits 61 m east of it, outside the 60 m-wide buffered segment.)
    h.add_sensor("HZ0002", SensorKind::HazmatGps, 23.78, 120.68, 30);
    h.add_sensor("RF0009", SensorKind::RoadFlood, 23.7865, 120.6869, 300);
    let t1 = T0 + 10 * HOUR;
    h.read("RF0009", t1, Metric::FloodDepthCm, 40.0);
    let fwy = (23.7865, 120.6869);
    h.read_at("HZ0002", t1 + MIN, Metric::UnNumber, 1203.0, Some((23.70, 120.60)));
    h.read_at("HZ0002", t1 + MIN, Metric::SpeedKmh, 60.0, Some((23.70, 120.60)));
    h.read_at("HZ0002", t1 + 2 * MIN, Metric::SpeedKmh, 20.0, Some(fwy));
    for m in [3, 4, 5, 6, 7] {
        h.read_at("HZ0002", t1 + m * MIN, Metric::SpeedKmh, 0.0, Some(fwy));
    }
    h.read_at("HZ0002", t1 + 8 * MIN, Metric::SpeedKmh, 30.0, Some(fwy));
    h.read_at("HZ0002", t1 + 10 * MIN, Metric::SpeedKmh, 60.0, Some((23.70, 120.60)));
    let log = h.log(&["hazmat-hazard-area", "road-flood"]);
    let expected = [
        "10:00 Raised road-flood@fwy3-nantou 道路淹水封閉 v1",
        "10:02 Raised hazmat-hazard-area@fwy3-nantou 危險物品車輛進入災害警戒區 v1",
        "10:05 Escalated hazmat-hazard-area@fwy3-nantou 危險物品車輛停滯於淹水路段 v2",
        "10:08 DeEscalated hazmat-hazard-area@fwy3-nantou 危險物品車輛進入災害警戒區 v3",
        "10:10 Cleared hazmat-hazard-area@fwy3-nantou 危險物品車輛進入災害警戒區 v4",
    ];
    assert_eq!(log, expected, "\n{}", log.join("\n"));
    let stopped =
        h.changes.iter().find(|a| a.rule_id == "hazmat-hazard-area" && a.change == Change::Escalated).unwrap();
    assert_eq!(stopped.values.get("un_number").map(String::as_str), Some("1203"));
}

/// SM0001 in the Shenmu debris-flow area goes silent while heavy rain is active there: the deadman raises an
/// escalated alert after three missed reports; the sensor reporting again clears it. Elsewhere a silent sensor
/// raises the plain level, escalated at the next tick once a hazard becomes active around it.
#[test]
fn silent_sensor_inside_an_active_hazard_area() {
    let mut h = Harness::new();
    for step in 0..=12 {
        let ts = T0 + step * 10 * MIN;
        // 25 mm every 10 minutes: 豪雨 within the hour.
        h.read("RG0001", ts, Metric::RainMm, 25.0);
        if step <= 2 {
            h.read("SM0001", ts, Metric::SoilMoisturePct, 40.0);
        }
        h.tick(ts);
    }
    let log = h.log(&["sensor-silent"]);
    // Last report at 00:20; three intervals (30 min) later it is overdue.
    assert_eq!(log, ["01:00 Raised sensor-silent@dfa-xinyi-shenmu 警戒區內感測器失聯 v1"]);
    let alert = h.changes.iter().find(|a| a.rule_id == "sensor-silent").unwrap();
    assert_eq!(alert.values.get("device_id").map(String::as_str), Some("SM0001"));
    let back = h.read("SM0001", T0 + 2 * HOUR + 5 * MIN, Metric::SoilMoisturePct, 41.0);
    assert_eq!(
        back.iter().map(line).collect::<Vec<_>>(),
        ["02:05 Cleared sensor-silent@dfa-xinyi-shenmu 警戒區內感測器失聯 v2"]
    );

    // The river gauge falls silent in calm weather: plain level; a hazard there then escalates it at a tick.
    let mut h = Harness::new();
    h.read("RV0001", T0, Metric::WaterLevelM, 3.0);
    for m in (10..=40).step_by(10) {
        h.tick(T0 + m * MIN);
    }
    assert_eq!(h.log(&["sensor-silent"]), ["00:40 Raised sensor-silent@reach-zhuoshui-mid 感測器失聯 v1"]);
}

/// A gateway flushes six hours of backlog in a minute while the housekeeping tick runs on the wall clock: the
/// deadman runs on arrival time, so the river gauge is not "silent" although its timestamps are hours behind the
/// tick; once nothing arrives for three intervals it is. The backlog's alerts are issued now and kept for operators.
#[test]
fn a_backlog_does_not_make_a_live_sensor_look_silent() {
    let mut h = Harness::new();
    let now = T0 + 6 * HOUR;
    // 36 readings stamped 10 minutes apart over the last 6 h, arriving 1.5 s apart; a tick every 10 s of arrival.
    for i in 0..36 {
        let arrived = now + i * 1500;
        h.read_arrived("RV0001", T0 + i * 10 * MIN, arrived, Metric::WaterLevelM, 2.0 + 0.2 * i as f64);
        if i % 7 == 0 {
            h.tick(arrived);
        }
    }
    h.tick(now + 60_000);
    assert_eq!(h.log(&["sensor-silent"]), Vec::<String>::new(), "a sensor delivering its backlog is alive");
    // The river rose past a level in the backlog: raised for operators (issued now, observed hours ago), not public.
    let river: Vec<&Alert> = h.changes.iter().filter(|a| a.rule_id == "river-level").collect();
    assert!(!river.is_empty(), "the backlog still feeds the rules");
    for a in &river {
        assert!(a.issued_ms >= now, "issued at arrival, not at the reading's time: {a:?}");
        assert!(a.stale.is_some() && !a.is_public(), "old evidence alone warns no one: {a:?}");
    }
    let first = river[0];
    assert!(first.id.contains(&first.first_issued_ms.to_string()), "the id carries issue time: {}", first.id);
    assert_eq!(river[0].observed_ms, river[0].stale.unwrap().observed_ms);
    assert!(h.book.counters.stale_held >= 1);
    // Then it really stops: three intervals of arrival time later the deadman speaks.
    h.tick(now + 60_000 + 31 * MIN);
    assert_eq!(h.log(&["sensor-silent"]).len(), 1, "{:?}", h.log(&["sensor-silent"]));
}

/// An operator (or agency feed) posts forecast rain for Shenmu above its 250 mm threshold: yellow. Observed rain
/// and a wire trip then make it red, which the approval gate holds for the public until a chief approves.
#[test]
fn forecast_yellow_then_observed_red_with_approval() {
    let mut h = Harness::new();
    let yellow = h.forecast(SHENMU, 300.0, T0);
    assert_eq!(
        yellow.iter().map(line).collect::<Vec<_>>(),
        ["00:00 Raised debris-flow@dfa-xinyi-shenmu 土石流黃色警戒 v1"]
    );
    assert_eq!(yellow[0].values.get("forecast_rain_24h_mm").map(String::as_str), Some("300.0"));
    // A forecast below the threshold withdraws it (hysteresis 10%: 220 < 225).
    let cleared = h.forecast(SHENMU, 220.0, T0 + HOUR);
    assert_eq!(
        cleared.iter().map(line).collect::<Vec<_>>(),
        ["01:00 Cleared debris-flow@dfa-xinyi-shenmu 土石流黃色警戒 v2"]
    );
    let mut out = Vec::new();
    assert!(h.engine.post_forecast("nowhere", 1.0, T0, &mut out).is_err());
    assert!(h.engine.post_forecast(SHENMU, f64::NAN, T0, &mut out).is_err());

    h.forecast(SHENMU, 320.0, T0 + 2 * HOUR);
    // 270 mm in three hours at RG0001, then the wire breaks.
    for step in 1..=18 {
        h.read("RG0001", T0 + 2 * HOUR + step * 10 * MIN, Metric::RainMm, 15.0);
        h.read("WS0001", T0 + 2 * HOUR + step * 10 * MIN, Metric::WireIntact, if step < 18 { 1.0 } else { 0.0 });
    }
    let red = h.changes.iter().rev().find(|a| a.rule_id == "debris-flow").unwrap().clone();
    assert_eq!(line(&red), "05:00 Escalated debris-flow@dfa-xinyi-shenmu 土石流紅色警戒 v3");
    assert_eq!(red.public_release, PublicRelease::Pending);
    assert!(!red.is_public());
    let approved = h.book.approve(&red.id, "chief-on-duty", T0 + 5 * HOUR + MIN).unwrap();
    assert!(approved.is_public_real());
    // Forecasts lapse after 12 h; observed rain still keeps it red.
    let later = h.tick(T0 + 15 * HOUR);
    assert!(later.iter().all(|a| a.rule_id != "debris-flow"), "{:?}", later.iter().map(line).collect::<Vec<_>>());
}

/// The same input gives the same findings, alert for alert.
#[test]
fn replays_are_deterministic() {
    let run = || {
        let mut h = Harness::new();
        for step in 1..=(30 * 6) {
            let ts = T0 + step * 10 * MIN;
            let hour = (step - 1) as f64 / 6.0;
            h.read("RG0001", ts, Metric::RainMm, typhoon_rate(hour) / 6.0);
            h.read("RG0002", ts, Metric::RainMm, typhoon_rate(hour) / 7.0);
            h.read("TM0001", ts, Metric::TiltDeg, 0.02 * hour);
            h.tick(ts);
        }
        (format!("{:?}", h.findings), h.changes.iter().map(line).collect::<Vec<_>>())
    };
    assert_eq!(run(), run());
}
