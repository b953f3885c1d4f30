//! What the public receives over the typhoon at Shenmu (`publication.rs`): the storm raises three debris-flow alerts
//! (rain at the area's threshold, the wire sensor tripped, the composite) and three landslide alerts (tilt rate,
//! extensometer rate, the composite) for operators; with every one of them released by an operator — as each was its
//! own public CAP chain before — the public gets one warning per hazard at a time, at the highest level, listing
//! what contributed. Also the figures for `BENCHMARKS.md`: alert versions, public CAP messages before (one per
//! public alert version) and after (one per public warning version), per hazard.

use std::collections::{BTreeMap, BTreeSet};

use ingest::Metric;

use super::{Harness, MIN, T0};
use crate::alert::{Alert, PublicRelease};
use crate::publication::{PublicWarning, Publication, UpdatePolicy};

const SHENMU: &str = "dfa-xinyi-shenmu";

fn typhoon_rate(h: f64) -> f64 {
    match h {
        h if h < 8.0 => 5.0,
        h if h < 10.0 => 45.0,
        h if h < 16.0 => 60.0,
        h if h < 20.0 => 25.0,
        _ => 0.0,
    }
}

/// The typhoon at Shenmu, every alert released by an operator as soon as it is held; every change folded into a
/// publication at its issue time, with the housekeeping pass every 10 s of issue time between readings.
fn typhoon(policy: UpdatePolicy) -> (Harness, Vec<Alert>, Vec<PublicWarning>, Publication) {
    let mut h = Harness::new();
    let mut publication = Publication::new(policy);
    let mut operators: Vec<Alert> = Vec::new();
    let mut public: Vec<PublicWarning> = Vec::new();
    let (mut tilt, mut opening) = (0.1, 0.0);
    let mut last_due = T0;
    for step in 1..=(50 * 6) {
        let ts = T0 + step * 10 * MIN;
        let hour = (step - 1) as f64 / 6.0;
        while last_due + 10_000 < ts {
            last_due += 10_000;
            public.extend(publication.due(last_due));
        }
        // The slope fails 4 hours into the core of the storm (as `landslide_tilt_extensometer_and_wire`, later);
        // the broken wire is repaired at 45 h.
        let slope = hour - 4.0;
        tilt += match slope {
            x if x < 12.0 => 0.001,
            x if x < 15.0 => 0.02,
            x if x < 17.0 => 0.15,
            _ => 0.0,
        } / 6.0;
        opening += match slope {
            x if (15.0..16.0).contains(&x) => 5.0,
            x if (16.0..17.0).contains(&x) => 15.0,
            _ => 0.0,
        } / 6.0;
        let mut changed = h.read("RG0001", ts, Metric::RainMm, typhoon_rate(hour) / 6.0);
        changed.extend(h.read("TM0001", ts, Metric::TiltDeg, tilt));
        changed.extend(h.read("EX0001", ts, Metric::DisplacementMm, opening));
        changed.extend(h.read("WS0001", ts, Metric::WireIntact, if slope < 17.0 || hour >= 45.0 { 1.0 } else { 0.0 }));
        changed.extend(h.tick(ts));
        // Operators release every held alert of the area at once (what made six public chains before).
        let held: Vec<String> = changed
            .iter()
            .filter(|a| a.area_id == SHENMU && a.state.is_active())
            .filter(|a| matches!(a.public_release, PublicRelease::Pending | PublicRelease::Withheld))
            .filter(|a| a.event != "sensor_silent")
            .map(|a| a.id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for id in held {
            if let Ok(a) = h.book.approve(&id, "op", ts) {
                changed.push(a);
            }
        }
        // One batch per step, as the hot path folds one batch of findings (`App::publish_all`).
        public.extend(publication.observe_all(&changed, ts).1);
        operators.extend(changed);
    }
    (h, operators, public, publication)
}

#[test]
fn the_public_gets_one_warning_per_hazard_and_place() {
    let (_, operators, public, _) = typhoon(UpdatePolicy::default());
    let shenmu = |event: &str| -> BTreeSet<String> {
        operators.iter().filter(|a| a.area_id == SHENMU && a.event == event).map(|a| a.rule_id.clone()).collect()
    };
    assert_eq!(shenmu("debris_flow").len(), 3, "{:?}", shenmu("debris_flow"));
    assert_eq!(shenmu("landslide").len(), 3, "{:?}", shenmu("landslide"));

    // Replay what the public had at every moment: never two warnings of one hazard in one place.
    let mut active: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut most: BTreeMap<String, usize> = BTreeMap::new();
    for w in &public {
        let set = active.entry((w.alert.event.clone(), w.alert.area_id.clone())).or_default();
        if w.alert.state.is_active() {
            set.insert(w.alert.id.clone());
        } else {
            set.remove(&w.alert.id);
        }
        let n = most.entry(w.alert.event.clone()).or_default();
        *n = (*n).max(set.len());
    }
    assert_eq!(most["debris_flow"], 1);
    assert_eq!(most["landslide"], 1);
    // Every rule contributed to the one warning, listed by it.
    for event in ["debris_flow", "landslide"] {
        let listed: BTreeSet<String> = public
            .iter()
            .filter(|w| w.alert.event == event && w.alert.area_id == SHENMU)
            .flat_map(|w| w.contributors.iter().map(|c| c.rule.clone()))
            .collect();
        assert_eq!(listed, shenmu(event), "{event}");
        // At the highest level: the composite's top level wins over the single sensors.
        let top = public.iter().filter(|w| w.alert.event == event).map(|w| w.alert.level.severity).max();
        let op_top =
            operators.iter().filter(|a| a.event == event && a.area_id == SHENMU).map(|a| a.level.severity).max();
        assert_eq!(top, op_top, "{event}");
    }
    // Everything that went out ended.
    assert!(active.values().all(BTreeSet::is_empty), "{active:?}");
}

/// Figures for `BENCHMARKS.md` (`cargo test -p alerting --lib typhoon_figures -- --nocapture`): per hazard in
/// Shenmu, alert versions operators see, public CAP messages before (one per version of every public alert) and
/// after (one per public warning version), and public chains before and after.
#[test]
fn typhoon_figures() {
    let (_, operators, public, publication) = typhoon(UpdatePolicy::default());
    println!(
        "hazard@area | alerts | alert versions (operators) | CAP before | chains before | CAP after | chains after"
    );
    let events: BTreeSet<(String, String)> = operators.iter().map(|a| (a.event.clone(), a.area_id.clone())).collect();
    let mut total_before = 0;
    let mut total_after = 0;
    for (event, area) in events {
        let ops: Vec<&Alert> = operators.iter().filter(|a| a.event == event && a.area_id == area).collect();
        let alerts: BTreeSet<&str> = ops.iter().map(|a| a.id.as_str()).collect();
        // Before: dissemination made one CAP message per public version (and the end of a released alert).
        let before: Vec<&&Alert> = ops.iter().filter(|a| a.is_public()).collect();
        let chains_before: BTreeSet<&str> = before.iter().map(|a| a.id.as_str()).collect();
        let after: Vec<&PublicWarning> =
            public.iter().filter(|w| w.alert.event == event && w.alert.area_id == area).collect();
        let chains_after: BTreeSet<&str> = after.iter().map(|w| w.alert.id.as_str()).collect();
        total_before += before.len();
        total_after += after.len();
        println!(
            "{event}@{area} | {} | {} | {} | {} | {} | {}",
            alerts.len(),
            ops.len(),
            before.len(),
            chains_before.len(),
            after.len(),
            chains_after.len()
        );
        assert!(after.len() <= before.len(), "{event}@{area}: the public hears no more than before");
    }
    println!("total public CAP messages: before {total_before}, after {total_after}; {:?}", publication.counters);
    assert!(total_after < total_before);
}
