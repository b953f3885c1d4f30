//! Properties against naive recomputation: the engine's rolling rain sums under late, duplicate and too-late
//! readings; the alert book's invariants under arbitrary finding sequences.

use std::collections::{BTreeMap, HashMap};

use ingest::Metric;
use proptest::prelude::*;

use super::{Harness, HOUR, MIN, T0};
use crate::alert::AlertBook;
use crate::types::{Finding, LevelInfo, Mode, Publish, Severity, Trigger};

const BUCKET: i64 = 10 * MIN;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Rain readings arrive out of order, some twice, some far too late. After each one the engine's 1 h / 3 h / 24 h
    /// sums equal a naive recomputation: the readings the engine must have accepted (within the lateness bound of
    /// the newest so far, first copy of a timestamp), summed over the buckets of each window.
    #[test]
    fn engine_window_sums_match_naive(
        steps in prop::collection::vec((0i64..30 * 60, 0u32..400, 0u8..10), 1..120),
    ) {
        let mut h = Harness::new();
        let mut accepted: Vec<(i64, u32)> = Vec::new();
        let mut newest = i64::MIN;
        let mut previous: Vec<i64> = Vec::new();
        for (minute, hundredths, kind) in steps {
            // kind 0: resend one of the last few readings; otherwise a reading at `minute` (which may be late).
            let ts = match (kind, previous.last()) {
                (0, Some(_)) => previous[previous.len() - 1 - (minute as usize % previous.len().min(5))],
                _ => T0 + minute * MIN + i64::from(hundredths % 7),
            };
            let value = f64::from(hundredths) / 100.0;
            let late_bound = newest.saturating_sub(HOUR);
            // The engine remembers the last 24 accepted timestamps of a series (`Dedup::CAP`).
            let duplicate = accepted.iter().rev().take(crate::engine::Dedup::CAP).any(|(t, _)| *t == ts);
            if newest == i64::MIN || (ts >= late_bound && !duplicate) {
                accepted.push((ts, hundredths));
                newest = newest.max(ts);
            }
            previous.push(ts);
            h.read("RG0001", ts, Metric::RainMm, value);
            let sums = h.engine.window_sums("RG0001", Metric::RainMm);
            let head = newest.div_euclid(BUCKET);
            for (window_ms, sum) in sums {
                let n = window_ms as i64 / BUCKET;
                let naive: u64 = accepted
                    .iter()
                    .filter(|(t, _)| { let b = t.div_euclid(BUCKET); b > head - n && b <= head })
                    .map(|(_, u)| u64::from(*u))
                    .sum();
                prop_assert_eq!((sum * 100.0).round() as u64, naive, "window {}", window_ms);
            }
        }
    }

    /// Whatever the engine reports, the book keeps one active alert per hazard, its level is its highest
    /// contribution, versions only grow, and closed alerts stay closed.
    #[test]
    fn book_invariants(
        findings in prop::collection::vec((0u8..3, 0u8..4, prop::option::of(0usize..3), 0u8..2), 1..200),
    ) {
        let mut book = AlertBook::new("p");
        let mut versions: HashMap<String, u32> = HashMap::new();
        let mut contributions: BTreeMap<(u8, u8), usize> = BTreeMap::new();
        for (i, (area, sensor, level, mode)) in findings.into_iter().enumerate() {
            let mode = if mode == 0 { Mode::Actual } else { Mode::Exercise };
            let f = Finding {
                rule_id: "r".into(),
                event: "heavy_rain".into(),
                area_id: format!("z{area}"),
                sensor_id: format!("s{sensor}"),
                level: level.map(|index| LevelInfo {
                    index,
                    name: format!("L{index}"),
                    name_en: format!("L{index}"),
                    severity: Severity::Moderate,
                    urgency: crate::types::Urgency::Immediate,
                    certainty: crate::types::Certainty::Observed,
                    condition: String::new(),
                }),
                value: 0.0,
                observed_ms: i as i64,
                publish: Publish::Public,
                approval_required: false,
                evidence: Vec::new(),
                values: BTreeMap::new(),
                trigger: Trigger::Reading,
            };
            if mode == Mode::Actual {
                match level {
                    Some(l) => contributions.insert((area, sensor), l),
                    None => contributions.remove(&(area, sensor)),
                };
            }
            if let Some(a) = book.apply(f, mode, i as i64) {
                let before = versions.insert(a.id.clone(), a.version);
                prop_assert!(before.is_none_or(|v| a.version > v));
            }
            let mut keys = std::collections::HashSet::new();
            for a in book.active() {
                prop_assert!(keys.insert((a.area_id.clone(), a.mode)), "two active alerts for one hazard");
            }
            for area in 0u8..3 {
                let top = contributions.iter().filter(|((z, _), _)| *z == area).map(|(_, l)| *l).max();
                let alert = book.active().find(|a| a.area_id == format!("z{area}") && a.mode == Mode::Actual);
                prop_assert_eq!(alert.map(|a| a.level.index), top);
            }
        }
    }
}
