//! Traffic rules on the demo configuration: Provincial Highway 21 at Shenmu (VD0101 → VD0102 → VD0103 northbound,
//! the Shenmu debris-flow area with tilt meter TM0001 ~0.4 km east) and the Nangang underpass (RF0002, VD0201,
//! VD0202). Detectors report every minute; times are scenario time after T0.

use ingest::Metric;

use super::{Harness, HOUR, MIN, T0};
use crate::alert::{Alert, AlertState};
use crate::engine::{hour_of_week, TrafficBaseline};
use crate::publication::Publication;

const PH21: &str = "ph21-xinyi-shenmu";
const UNDERPASS: &str = "underpass-nantou-nangang";

fn vd(h: &mut Harness, id: &str, ts: i64, speed: f64, flow: f64, occupancy: f64) -> Vec<Alert> {
    let mut out = h.read(id, ts, Metric::SpeedKmh, speed);
    out.extend(h.read(id, ts, Metric::FlowVehH, flow));
    out.extend(h.read(id, ts, Metric::OccupancyPct, occupancy));
    out
}

fn active<'a>(h: &'a Harness, rule: &str, area: &str) -> Option<&'a Alert> {
    h.book.active().find(|a| a.rule_id == rule && a.area_id == area)
}

fn raised_at(h: &Harness, rule: &str) -> Option<i64> {
    h.changes.iter().find(|a| a.rule_id == rule && a.state.is_active()).map(|a| a.observed_ms)
}

/// The PH21 landslide: the tilt meter beside the road warns (0.2 °/h), then the slope comes down between VD0102 and
/// VD0103 at 50 min. The two upstream detectors stand still with their loops occupied, the downstream one sees an
/// empty road behind the queue; two agreeing make the road blocked, the tilt warning 0.4 km away names the cause,
/// within 2 minutes of the first blocked reading. Traffic resuming at 57 min clears it all.
#[test]
fn a_landslide_blocks_ph21_and_the_road_warning_names_it() {
    let mut h = Harness::new();
    let blocked_from = T0 + 50 * MIN;
    for m in 0..=70 {
        let ts = T0 + m * MIN;
        if m % 10 == 0 {
            h.read("TM0001", ts, Metric::TiltDeg, 0.1 + 0.2 * (m as f64 / 60.0));
        }
        let blocked = (50..57).contains(&m);
        if blocked {
            vd(&mut h, "VD0101", ts, 0.0, 0.0, 100.0);
            vd(&mut h, "VD0102", ts, 0.0, 0.0, 100.0);
            vd(&mut h, "VD0103", ts, 0.0, 0.0, 0.0);
        } else {
            vd(&mut h, "VD0101", ts, 60.0 + (m % 3) as f64, 620.0, 12.0);
            vd(&mut h, "VD0102", ts, 58.0 + (m % 2) as f64, 610.0, 12.0);
            vd(&mut h, "VD0103", ts, 61.0 - (m % 3) as f64, 600.0, 11.0);
        }
    }
    let tilt = h.changes.iter().find(|a| a.rule_id == "tilt-rate").expect("the tilt meter warned").clone();
    let raised = raised_at(&h, "road-blocked-by-hazard").expect("road blocked by the landslide");
    assert!(
        raised - blocked_from <= 2 * MIN,
        "raised {} s after the first blocked reading",
        (raised - blocked_from) / 1000
    );
    let cause = h.changes.iter().find(|a| a.rule_id == "road-blocked-by-hazard").unwrap();
    assert_eq!(cause.area_id, PH21);
    assert_eq!(cause.event, "road_blocked");
    assert_eq!(cause.level.name_en, "Road blocked by a landslide");
    assert_eq!(cause.values["caused_by_rule"], "tilt-rate");
    assert_eq!(cause.values["caused_by_area"], "dfa-xinyi-shenmu");
    assert_eq!(cause.values["caused_by"], tilt.id, "the link is the causing alert's id");
    assert!(cause.is_public(), "a public warning, no approval needed");
    // Evidence: the detectors that agree.
    let corr = h.changes.iter().find(|a| a.rule_id == "road-blocked").unwrap();
    assert!(corr.sensors.len() >= 2, "{:?}", corr.sensors);
    // No detector was taken for broken: its neighbours were blocked too.
    assert!(h.changes.iter().all(|a| a.rule_id != "traffic-device-fault"), "{:?}", h.log(&["traffic-device-fault"]));
    // One public warning for the road: the correlation and the cause fold into it, at the landslide level.
    let mut publication = Publication::new(Default::default());
    let mut warnings = Vec::new();
    // As the hot path does: the changes of one step (one reading) in one batch.
    let road: Vec<Alert> = h.changes.iter().filter(|a| a.area_id == PH21).cloned().collect();
    for batch in road.chunk_by(|a, b| a.issued_ms == b.issued_ms) {
        warnings.extend(publication.observe_all(batch, batch[0].issued_ms).1);
    }
    let ids: std::collections::BTreeSet<_> =
        warnings.iter().filter(|w| w.alert.event == "road_blocked").map(|w| w.alert.id.clone()).collect();
    assert_eq!(ids.len(), 1, "{warnings:?}");
    let first = warnings.first().unwrap();
    assert_eq!(first.alert.level.name_en, "Road blocked by a landslide", "the first public version names the cause");
    assert!(!warnings.last().unwrap().alert.state.is_active(), "the warning ends");
    // Cleared when traffic resumes (57 min) and has flowed for `recovered_for` (2 min).
    assert!(active(&h, "road-blocked-by-hazard", PH21).is_none(), "{:?}", h.log(&["road-blocked-by-hazard"]));
    assert!(active(&h, "road-blocked", PH21).is_none());
    let cleared = h.changes.iter().rev().find(|a| a.rule_id == "road-blocked-by-hazard").unwrap();
    assert_eq!(cleared.state, AlertState::Cleared);
    assert!(
        cleared.observed_ms >= T0 + 59 * MIN && cleared.observed_ms <= T0 + 61 * MIN,
        "{}",
        cleared.observed_ms - T0
    );
}

/// The same closure with no hazard nearby is a road blocked, not blamed on anything; one detector alone is only
/// an operators' signal.
#[test]
fn a_closure_without_a_hazard_is_road_blocked_and_one_detector_is_not_public() {
    let mut h = Harness::new();
    for m in 0..=10 {
        let ts = T0 + m * MIN;
        vd(&mut h, "VD0101", ts, 0.0, 0.0, 100.0);
        vd(&mut h, "VD0102", ts, 0.0, 0.0, 100.0);
    }
    assert!(active(&h, "road-blocked", PH21).is_some());
    assert!(active(&h, "road-blocked-by-hazard", PH21).is_none());

    let mut h = Harness::new();
    for m in 0..=10 {
        let ts = T0 + m * MIN;
        vd(&mut h, "VD0101", ts, 0.0, 0.0, 100.0);
    }
    let one = active(&h, "traffic-detector", PH21).expect("the detector is blocked");
    assert!(!one.is_public(), "a single detector tells operators only");
    assert!(active(&h, "road-blocked", PH21).is_none());
}

/// Flow dropping to zero counts as blocked only behind a queue upstream: an empty road at night is not a closure.
#[test]
fn no_flow_is_blocked_only_with_a_queue_upstream() {
    let mut h = Harness::new();
    for m in 0..=10 {
        let ts = T0 + m * MIN;
        // Night: nobody on the road, no queue anywhere.
        vd(&mut h, "VD0101", ts, 0.0, 0.0, 0.0);
        vd(&mut h, "VD0103", ts, 0.0, 0.0, 0.0);
    }
    assert!(h.changes.iter().all(|a| a.rule_id != "traffic-detector"), "{:?}", h.log(&["traffic-detector"]));
    for m in 11..=20 {
        let ts = T0 + m * MIN;
        vd(&mut h, "VD0101", ts, 0.0, 0.0, 100.0);
        vd(&mut h, "VD0103", ts, 0.0, 0.0, 0.0);
    }
    let blocked: Vec<_> =
        h.book.active().filter(|a| a.rule_id == "traffic-detector").flat_map(|a| a.sensors.keys().cloned()).collect();
    assert_eq!(blocked, ["VD0101", "VD0103"], "VD0103 is empty behind VD0101's queue");
}

/// One detector stuck at 0 km/h while the detectors on either side flow normally: a device fault for operators
/// after `fault_after` (5 min), never a closure.
#[test]
fn a_stuck_detector_between_flowing_neighbours_is_a_device_fault() {
    let mut h = Harness::new();
    for m in 0..=30 {
        let ts = T0 + m * MIN;
        vd(&mut h, "VD0101", ts, 68.0 + (m % 4) as f64, 600.0, 10.0);
        if m < 5 {
            vd(&mut h, "VD0102", ts, 66.0, 610.0, 10.0);
        } else {
            vd(&mut h, "VD0102", ts, 0.0, 0.0, 0.0);
        }
        vd(&mut h, "VD0103", ts, 66.0 - (m % 3) as f64, 600.0, 10.0);
    }
    let fault = active(&h, "traffic-device-fault", PH21).expect("a device fault");
    assert_eq!(fault.sensors.keys().collect::<Vec<_>>(), ["VD0102"]);
    assert!(!fault.is_public());
    let at = raised_at(&h, "traffic-device-fault").unwrap();
    assert_eq!(at, T0 + 10 * MIN, "stuck from 5 min, a fault after 5 more");
    for rule in ["traffic-detector", "road-blocked", "road-blocked-by-hazard"] {
        assert!(h.changes.iter().all(|a| a.rule_id != rule), "{rule}: {:?}", h.log(&[rule]));
    }
}

/// A night road: a few dozen vehicles an hour, so VD0102's loop counts none for half an hour and reports 0 km/h,
/// 0 veh/h, 0 % (as VDLive does) while its neighbours each saw a car now and then. An empty road, not a broken
/// loop: no device fault. When the morning traffic comes and the neighbours count hundreds while VD0102 still sees
/// nothing, it is broken.
#[test]
fn an_empty_night_road_is_no_device_fault_until_the_neighbours_count_enough_vehicles() {
    let mut h = Harness::new();
    for m in 0..=30 {
        let ts = T0 + 3 * HOUR + m * MIN;
        // 30 veh/h: 15 vehicles past each neighbour in 30 minutes, fewer than `fault_min_vehicles` (20).
        vd(&mut h, "VD0101", ts, 58.0 + (m % 4) as f64, 30.0, 0.4);
        vd(&mut h, "VD0102", ts, 0.0, 0.0, 0.0);
        vd(&mut h, "VD0103", ts, 60.0 - (m % 3) as f64, 30.0, 0.4);
    }
    assert!(h.changes.is_empty(), "{:?}", h.changes.iter().map(super::line).collect::<Vec<_>>());
    for m in 31..=40 {
        let ts = T0 + 3 * HOUR + m * MIN;
        vd(&mut h, "VD0101", ts, 60.0, 600.0, 10.0);
        vd(&mut h, "VD0102", ts, 0.0, 0.0, 0.0);
        vd(&mut h, "VD0103", ts, 61.0, 600.0, 10.0);
    }
    let fault = active(&h, "traffic-device-fault", PH21).expect("broken once traffic passes it unseen");
    assert_eq!(fault.sensors.keys().collect::<Vec<_>>(), ["VD0102"]);
    assert!(fault.observed_ms <= T0 + 3 * HOUR + 33 * MIN, "{}", (fault.observed_ms - T0) / MIN);
}

/// The same stuck loop with the loop occupied (a detector reporting a queue nobody else sees) is a fault too.
#[test]
fn a_frozen_detector_repeating_one_reading_is_a_device_fault() {
    let mut h = Harness::new();
    for m in 0..=40 {
        let ts = T0 + m * MIN;
        // VD0201 alone in the underpass: the very same non-zero reading for 40 minutes.
        vd(&mut h, "VD0201", ts, 47.0, 480.0, 9.0);
    }
    let fault = active(&h, "traffic-device-fault", UNDERPASS).expect("frozen");
    assert_eq!(fault.observed_ms, T0 + 30 * MIN);
}

/// The flooded underpass: a road-flood reading at its lowest point and one detector at a standstill are two kinds of
/// evidence: "road blocked by flooding", public, caused by the road-flood alert of the same segment.
#[test]
fn a_flooded_underpass_with_a_standing_detector_is_blocked_by_flooding() {
    let mut h = Harness::new();
    for m in 0..=6 {
        let ts = T0 + m * MIN;
        h.read("RF0002", ts, Metric::FloodDepthCm, if m < 2 { 5.0 } else { 35.0 });
        if m >= 2 {
            vd(&mut h, "VD0201", ts, 0.0, 0.0, 95.0);
        } else {
            vd(&mut h, "VD0201", ts, 45.0, 500.0, 10.0);
        }
    }
    let alert = active(&h, "road-blocked-by-hazard", UNDERPASS).expect("blocked by flooding");
    assert_eq!(alert.level.name_en, "Road blocked by flooding");
    assert_eq!(alert.values["caused_by_rule"], "road-flood");
    assert_eq!(alert.values["caused_by_distance_m"], "0");
    let flood = active(&h, "road-flood", UNDERPASS).unwrap();
    assert_eq!(alert.values["caused_by"], flood.id);
}

/// A detector's week: 30 km/h at the weekday morning rush (07–09 local), 60 km/h otherwise, for four weeks.
fn weeks_of_history(id: &'static str, until: i64) -> Vec<(&'static str, i64, f64)> {
    let mut out = Vec::new();
    let mut ts = until - 28 * 24 * HOUR;
    while ts < until {
        let how = hour_of_week(ts);
        let (day, hour) = (how / 24, how % 24);
        let rush = day < 5 && (7..9).contains(&hour);
        let speed = if rush { 30.0 } else { 60.0 } + ((ts / MIN) % 5) as f64;
        out.push((id, ts, speed));
        ts += 5 * MIN;
    }
    out
}

/// Rush hour is the detector's normal at rush hour: with the learned baseline, 25–35 km/h at 07:30 on a weekday
/// raises nothing; 20 km/h at 03:00 (normal 60) is slowed, for operators, and two detectors agreeing make the
/// segment slowed — still not public. Without a baseline nothing is ever slowed.
#[test]
fn rush_hour_is_normal_but_the_same_speed_at_night_is_slowed() {
    // T0 is Wednesday 2025-11-26 00:00 +08:00.
    assert_eq!(hour_of_week(T0), 2 * 24);
    let mut history = weeks_of_history("VD0101", T0);
    history.extend(weeks_of_history("VD0102", T0));
    let baseline = TrafficBaseline::learn(history.iter().map(|(id, ts, v)| (*id, *ts, *v)));
    assert_eq!(baseline.detectors(), 2);
    let normal = baseline.normal("VD0101", T0 + 7 * HOUR + 30 * MIN, 3).unwrap();
    assert!((30.0..35.0).contains(&normal.median_kmh), "{normal:?}");

    let mut h = Harness::new();
    h.engine.set_traffic_baseline(baseline.clone());
    // 03:00-03:30: about 20 km/h where 60 is normal.
    for m in 0..=30 {
        let ts = T0 + 3 * HOUR + m * MIN;
        let speed = 18.0 + (m % 5) as f64;
        vd(&mut h, "VD0101", ts, speed, 300.0 + m as f64, 20.0);
        vd(&mut h, "VD0102", ts, speed + 1.0, 310.0 + m as f64, 21.0);
    }
    let slowed = active(&h, "road-slowed", PH21).expect("slowed at night");
    assert!(!slowed.is_public());
    assert!(h.book.active().all(|a| !a.is_public()), "nothing public");
    // 06:50-08:50: the rush, 25-35 km/h.
    let mut h = Harness::new();
    h.engine.set_traffic_baseline(baseline);
    for m in 0..=120 {
        let ts = T0 + 6 * HOUR + 50 * MIN + m * MIN;
        let speed = 25.0 + (m % 11) as f64;
        vd(&mut h, "VD0101", ts, speed, 1200.0 + m as f64, 38.0);
        vd(&mut h, "VD0102", ts, speed, 1150.0 + m as f64, 40.0);
    }
    assert!(h.changes.is_empty(), "{:?}", h.changes.iter().map(super::line).collect::<Vec<_>>());

    // No baseline: the night's 20 km/h is unknown territory, not an incident.
    let mut h = Harness::new();
    for m in 0..=30 {
        let ts = T0 + 3 * HOUR + m * MIN;
        vd(&mut h, "VD0101", ts, 18.0 + (m % 5) as f64, 300.0 + m as f64, 20.0);
    }
    assert!(h.changes.is_empty());
}

/// Four weeks of weekday mornings at 30 km/h from 07:00, the rush ending at 08:00 in two weeks and at 08:30 in the
/// other two; 60 km/h otherwise.
fn weeks_with_a_moving_rush_end(id: &'static str, until: i64) -> Vec<(&'static str, i64, f64)> {
    let mut out = Vec::new();
    let mut ts = until - 28 * 24 * HOUR;
    while ts < until {
        let (how, week) = (hour_of_week(ts), (until - ts) / (7 * 24 * HOUR));
        let (day, minute) = (how / 24, (how % 24) as i64 * 60 + (ts / MIN) % 60);
        let end = if week % 2 == 0 { 8 * 60 } else { 8 * 60 + 30 };
        let rush = day < 5 && (7 * 60..end).contains(&minute);
        out.push((id, ts, if rush { 30.0 } else { 60.0 } + ((ts / MIN) % 3) as f64));
        ts += 5 * MIN;
    }
    out
}

/// A rush hour that runs late: the weeks learnt ended it at 08:00 or 08:30, today it lasts till 08:40 at 25-29 km/h.
/// Judged against the 8 o'clock hour's normal (free flow in most of its readings) the last 40 minutes would be
/// "slowed"; judged against the detector's 10-minute slots, the most lenient within `slowed_shift` (30 min), it is
/// the rush hour it is. A real slowdown later in the morning is still slowed.
#[test]
fn a_rush_hour_that_runs_late_is_not_slowed() {
    let mut history = weeks_with_a_moving_rush_end("VD0101", T0);
    history.extend(weeks_with_a_moving_rush_end("VD0102", T0));
    let baseline = TrafficBaseline::learn(history.iter().map(|(id, ts, v)| (*id, *ts, *v)));
    let mut h = Harness::new();
    h.engine.set_traffic_baseline(baseline.clone());
    for m in 0..=110 {
        let ts = T0 + 6 * HOUR + 50 * MIN + m * MIN;
        let rush = ts < T0 + 8 * HOUR + 40 * MIN;
        let speed = if rush { 25.0 + (m % 5) as f64 } else { 60.0 + (m % 3) as f64 };
        vd(&mut h, "VD0101", ts, speed, 1200.0, 38.0);
        vd(&mut h, "VD0102", ts, speed + 0.5, 1150.0, 40.0);
    }
    assert!(h.changes.is_empty(), "{:?}", h.changes.iter().map(super::line).collect::<Vec<_>>());

    // 10:00-10:30 at 20 km/h, where every slot within half an hour is free flow: slowed.
    let mut h = Harness::new();
    h.engine.set_traffic_baseline(baseline);
    for m in 0..=30 {
        let ts = T0 + 10 * HOUR + m * MIN;
        vd(&mut h, "VD0101", ts, 20.0 + (m % 3) as f64, 900.0, 30.0);
        vd(&mut h, "VD0102", ts, 21.0 + (m % 3) as f64, 900.0, 30.0);
    }
    assert!(active(&h, "road-slowed", PH21).is_some(), "{:?}", h.log(&["traffic-detector", "road-slowed"]));
}

/// The robust statistics: one crash morning in the history moves neither the median nor the MAD much.
#[test]
fn one_bad_day_does_not_move_the_baseline() {
    let mut history = weeks_of_history("VD0101", T0);
    let clean = TrafficBaseline::learn(history.iter().map(|(id, ts, v)| (*id, *ts, *v)));
    // A closure one Wednesday at 10:00-11:00 a week ago: 0 km/h.
    for (_, ts, v) in history.iter_mut() {
        if (T0 - 7 * 24 * HOUR + 10 * HOUR..T0 - 7 * 24 * HOUR + 11 * HOUR).contains(ts) {
            *v = 0.0;
        }
    }
    let dirty = TrafficBaseline::learn(history.iter().map(|(id, ts, v)| (*id, *ts, *v)));
    let at = T0 + 10 * HOUR + 30 * MIN;
    let (a, b) = (clean.normal("VD0101", at, 3).unwrap(), dirty.normal("VD0101", at, 3).unwrap());
    assert!((a.median_kmh - b.median_kmh).abs() <= 1.0, "{a:?} {b:?}");
    assert!(b.mad_kmh <= a.mad_kmh + 1.5, "{a:?} {b:?}");
    // Fewer weeks than asked: no normal.
    assert!(clean.normal("VD0101", at, 5).is_none());
}

/// A restart (the engine rebuilt, the book's levels adopted) does not end a closure on the first reading: a detector
/// needs `blocked_for` of history before it is judged again.
#[test]
fn a_restart_keeps_the_closure_until_the_detectors_are_judged_again() {
    let mut h = Harness::new();
    for m in 0..=5 {
        let ts = T0 + m * MIN;
        vd(&mut h, "VD0101", ts, 0.0, 0.0, 100.0);
        vd(&mut h, "VD0102", ts, 0.0, 0.0, 100.0);
    }
    assert!(active(&h, "road-blocked", PH21).is_some());
    let mut engine = crate::engine::RuleEngine::new(super::default_rules(), HOUR);
    engine.set_zones(h.geo.zones());
    let mut out = Vec::new();
    engine.adopt_levels(&h.book, crate::types::Mode::Actual, &mut out);
    h.engine = engine;
    h.fold(out);
    vd(&mut h, "VD0101", T0 + 6 * MIN, 0.0, 0.0, 100.0);
    vd(&mut h, "VD0102", T0 + 6 * MIN, 0.0, 0.0, 100.0);
    assert!(active(&h, "road-blocked", PH21).is_some(), "{:?}", h.log(&["road-blocked", "traffic-detector"]));
}

/// A rules reload (SIGHUP) in the middle of a closure keeps the detectors' recent readings and the segment's
/// distances: the closure neither ends nor is raised again, and traffic resuming still clears it.
#[test]
fn a_reload_keeps_the_closure_and_its_cause() {
    let mut h = Harness::new();
    for m in 0..=50 {
        let ts = T0 + m * MIN;
        if m % 10 == 0 {
            h.read("TM0001", ts, Metric::TiltDeg, 0.1 + 0.2 * (m as f64 / 60.0));
        }
        let (speed, flow, occ) = if m >= 45 { (0.0, 0.0, 100.0) } else { (60.0 + (m % 3) as f64, 600.0, 12.0) };
        vd(&mut h, "VD0101", ts, speed, flow, occ);
        vd(&mut h, "VD0102", ts, speed, flow + 1.0, occ);
    }
    let before = active(&h, "road-blocked-by-hazard", PH21).expect("blocked by the landslide").id.clone();
    let mut out = Vec::new();
    h.engine.reload(super::default_rules(), &mut out);
    h.fold(out);
    assert_eq!(active(&h, "road-blocked-by-hazard", PH21).map(|a| a.id.clone()), Some(before));
    for m in 51..=56 {
        let ts = T0 + m * MIN;
        vd(&mut h, "VD0101", ts, 60.0 + (m % 3) as f64, 600.0, 12.0);
        vd(&mut h, "VD0102", ts, 59.0 + (m % 3) as f64, 601.0, 12.0);
    }
    assert!(active(&h, "road-blocked-by-hazard", PH21).is_none(), "{:?}", h.log(&["road-blocked-by-hazard"]));
}
