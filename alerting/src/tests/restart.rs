//! Restarts and reloads: the durable book (journal replay, checkpoints, torn lines) together with engine snapshots
//! gives the same alerts as an uninterrupted run, never a duplicate; reloading rules keeps windows.

use std::io::Write;
use std::path::Path;

use ingest::Metric;

use super::{default_rules, line, temp_dir, Harness, HOUR, MIN, T0};
use crate::alert::{AlertBook, Change};
use crate::engine::RuleEngine;
use crate::journal;
use crate::rules::RuleSet;
use crate::types::Mode;

fn rate(h: f64) -> f64 {
    match h {
        h if h < 8.0 => 5.0,
        h if h < 10.0 => 45.0,
        h if h < 16.0 => 60.0,
        h if h < 20.0 => 25.0,
        _ => 0.0,
    }
}

/// One step of the storm: rain at both Shenmu gauges, a tilt meter creeping, a tick.
fn step(h: &mut Harness, step: i64) {
    let ts = T0 + step * 10 * MIN;
    let hour = (step - 1) as f64 / 6.0;
    h.read("RG0001", ts, Metric::RainMm, rate(hour) / 6.0);
    h.read("RG0002", ts, Metric::RainMm, rate(hour) / 7.0);
    h.read("TM0001", ts, Metric::TiltDeg, 0.1 + 0.02 * hour);
    h.tick(ts);
}

const STEPS: i64 = 48 * 6;

fn reference() -> Vec<String> {
    let mut h = Harness::new();
    for s in 1..=STEPS {
        step(&mut h, s);
    }
    h.changes.iter().map(line).collect()
}

/// Opens the durable state in `dir` the way the server does after a restart.
fn resume(dir: &Path, now: i64) -> Harness {
    let (book, restored) = AlertBook::open(dir, "TW-DC").unwrap();
    assert!(restored.skipped.is_empty(), "{restored:?}");
    let mut h = Harness::with(default_rules(), book);
    if let Some(snapshot) = crate::engine::load_engine_snapshot(dir).unwrap() {
        h.engine.restore(snapshot, Some(now));
    }
    let mut out = Vec::new();
    h.engine.adopt_levels(&h.book, Mode::Actual, &mut out);
    assert!(out.is_empty(), "no rule disappeared: {out:?}");
    h
}

/// A clean shutdown (snapshot and checkpoint at the stop) continues exactly like an uninterrupted run.
#[test]
fn clean_restart_continues_exactly() {
    let dir = temp_dir("clean");
    let expected = reference();
    let stop = 15 * 6 + 3;
    let mut before = {
        let (book, _) = AlertBook::open(&dir, "TW-DC").unwrap();
        let mut h = Harness::with(default_rules(), book);
        for s in 1..=stop {
            step(&mut h, s);
        }
        crate::engine::save_engine_snapshot(&dir, &h.engine.snapshot()).unwrap();
        h.book.checkpoint().unwrap();
        h.changes.iter().map(line).collect::<Vec<_>>()
    };
    let mut h = resume(&dir, T0 + stop * 10 * MIN);
    for s in stop + 1..=STEPS {
        step(&mut h, s);
    }
    before.extend(h.changes.iter().map(line));
    assert_eq!(before, expected);
    let _ = std::fs::remove_dir_all(&dir);
}

/// kill -9 between engine snapshots (taken every hour): the alert book comes back from its journal alone (no
/// checkpoint), the windows from the last snapshot. No hazard is raised twice, ids and versions continue, and the
/// storm still goes through the same levels.
#[test]
fn kill_between_snapshots_raises_no_duplicates() {
    let dir = temp_dir("kill");
    let crash = 15 * 6 + 4; // 15:40, 40 minutes after the last snapshot
    let before = {
        let (book, _) = AlertBook::open(&dir, "TW-DC").unwrap();
        let mut h = Harness::with(default_rules(), book);
        for s in 1..=crash {
            step(&mut h, s);
            if s % 6 == 0 {
                crate::engine::save_engine_snapshot(&dir, &h.engine.snapshot()).unwrap();
            }
        }
        h.changes.clone()
        // Dropped without checkpoint or snapshot: what a kill -9 leaves.
    };
    let active_before: Vec<(String, u32)> = {
        let mut last = std::collections::BTreeMap::new();
        for a in &before {
            last.insert(a.id.clone(), a.clone());
        }
        last.values().filter(|a| a.state.is_active()).map(|a| (a.id.clone(), a.version)).collect()
    };
    let mut h = resume(&dir, T0 + crash * 10 * MIN);
    let restored: Vec<(String, u32)> = h.book.active().map(|a| (a.id.clone(), a.version)).collect();
    assert_eq!(restored, active_before, "active alerts restored as they were");
    for s in crash + 1..=STEPS {
        step(&mut h, s);
    }
    for a in &h.changes {
        if a.change == Change::Raised {
            assert!(
                !active_before.iter().any(|(id, _)| {
                    let old = before.iter().find(|b| &b.id == id).unwrap();
                    old.rule_id == a.rule_id && old.area_id == a.area_id
                }),
                "hazard raised again after the restart: {}\n{}",
                line(a),
                h.changes.iter().filter(|c| c.rule_id == a.rule_id).map(line).collect::<Vec<_>>().join("\n")
            );
        }
    }
    // Versions continue where the journal left them.
    for (id, version) in &active_before {
        if let Some(next) = h.changes.iter().find(|a| &a.id == id) {
            assert_eq!(next.version, version + 1, "{}", line(next));
        }
    }
    // The same levels, in the same order, as without the crash.
    let levels = |lines: Vec<String>| -> Vec<String> {
        // Level changes only: which gauges are behind the alert may differ (RG0002 lost 40 minutes of rain from its
        // windows and stays one level lower for a while); the alert's own levels must not.
        lines
            .into_iter()
            .filter(|l| l.contains("heavy-rain") && !l.contains(" Updated "))
            .map(|l| l[6..l.rfind(" v").unwrap_or(l.len())].to_string())
            .collect()
    };
    let mut all: Vec<String> = before.iter().map(line).collect();
    all.extend(h.changes.iter().map(line));
    assert_eq!(levels(all), levels(reference()));
    let _ = std::fs::remove_dir_all(&dir);
}

fn sample_book(dir: &Path) -> Vec<String> {
    let (book, _) = AlertBook::open(dir, "TW-DC").unwrap();
    let mut h = Harness::with(default_rules(), book);
    for s in 1..=(20 * 6) {
        step(&mut h, s);
    }
    let id = h.book.active().next().unwrap().id.clone();
    h.book.comment(&id, "op1", "evacuation of Shenmu village ordered", T0 + 20 * HOUR).unwrap();
    h.book.all().map(|a| format!("{a:?}")).collect()
}

#[test]
fn torn_last_line_is_cut_and_a_complete_one_kept() {
    let dir = temp_dir("torn");
    let expected = sample_book(&dir);
    let path = dir.join(journal::BOOK_JOURNAL);
    let len = std::fs::metadata(&path).unwrap().len();
    // A crash in the middle of writing the next line.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(br#"{"type":"transition","seq":99"#)
        .unwrap();
    let (book, restored) = AlertBook::open(&dir, "TW-DC").unwrap();
    assert_eq!(restored.truncated_bytes, 29);
    assert_eq!(book.all().map(|a| format!("{a:?}")).collect::<Vec<_>>(), expected);
    drop(book);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len, "the torn bytes are gone");
    // The last line complete but its newline lost: the record is kept and the newline restored.
    let text = std::fs::read(&path).unwrap();
    std::fs::write(&path, &text[..text.len() - 1]).unwrap();
    let (book, restored) = AlertBook::open(&dir, "TW-DC").unwrap();
    assert_eq!(restored.truncated_bytes, 0);
    assert_eq!(book.all().map(|a| format!("{a:?}")).collect::<Vec<_>>(), expected);
    assert_eq!(std::fs::read(&path).unwrap(), text);
    // A damaged line in the middle is skipped and reported, not fatal.
    let mut damaged = text.clone();
    let at = damaged.iter().position(|b| *b == b'\n').unwrap() + 3;
    damaged[at] = b'#';
    std::fs::write(&path, &damaged).unwrap();
    let (_, restored) = AlertBook::open(&dir, "TW-DC").unwrap();
    assert_eq!(restored.skipped.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The sequence numbers of the journal's records.
fn journal_seqs(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join(journal::BOOK_JOURNAL))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"].as_u64().unwrap())
        .collect()
}

/// Record sequence numbers keep rising across restarts, from a full replay and from a checkpoint alike (they used to
/// start again from 1 after every restart, so the audit trail's order could not be read from them).
#[test]
fn journal_sequence_continues_across_restarts() {
    let dir = temp_dir("sequence");
    let _ = sample_book(&dir);
    let (book, _) = AlertBook::open(&dir, "TW-DC").unwrap();
    let mut h = Harness::with(default_rules(), book);
    let id = h.book.all().next().unwrap().id.clone();
    h.book.comment(&id, "op1", "after a restart", T0 + 21 * HOUR).unwrap();
    h.book.checkpoint().unwrap();
    drop(h);
    let (mut book, restored) = AlertBook::open(&dir, "TW-DC").unwrap();
    assert!(restored.from_checkpoint && restored.records == 0, "everything is in the checkpoint");
    book.comment(&id, "op1", "after a checkpoint", T0 + 22 * HOUR).unwrap();
    drop(book);
    let seqs = journal_seqs(&dir);
    assert!(seqs.len() > 3);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "one rising sequence: {seqs:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn checkpoint_plus_tail_equals_full_replay() {
    let dir = temp_dir("checkpoint");
    let (book, _) = AlertBook::open(&dir, "TW-DC").unwrap();
    let mut h = Harness::with(default_rules(), book);
    for s in 1..=(12 * 6) {
        step(&mut h, s);
    }
    h.book.checkpoint().unwrap();
    for s in 12 * 6 + 1..=(30 * 6) {
        step(&mut h, s);
    }
    let live: Vec<String> = h.book.all().map(|a| format!("{a:?}")).collect();
    drop(h);
    let (from_checkpoint, r1) = AlertBook::open(&dir, "TW-DC").unwrap();
    assert!(r1.from_checkpoint);
    let a: Vec<String> = from_checkpoint.all().map(|a| format!("{a:?}")).collect();
    drop(from_checkpoint);
    std::fs::remove_file(dir.join(journal::BOOK_CHECKPOINT)).unwrap();
    let (full, r2) = AlertBook::open(&dir, "TW-DC").unwrap();
    assert!(!r2.from_checkpoint && r2.records > r1.records);
    let b: Vec<String> = full.all().map(|a| format!("{a:?}")).collect();
    assert_eq!(a, live);
    assert_eq!(b, live);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Operator commands are journaled with their actor and survive a restart; a cancelled hazard stays suppressed.
#[test]
fn operator_actions_survive_restart() {
    let dir = temp_dir("operator");
    let id = {
        let (book, _) = AlertBook::open(&dir, "TW-DC").unwrap();
        let mut h = Harness::with(default_rules(), book);
        for s in 1..=(11 * 6) {
            step(&mut h, s);
        }
        let id = h.book.active().find(|a| a.rule_id == "heavy-rain").unwrap().id.clone();
        h.book.acknowledge_by(&id, "op1", T0 + 11 * HOUR).unwrap();
        h.book.cancel_by(&id, "op2", Some("gauge RG0001 under maintenance"), T0 + 11 * HOUR + MIN).unwrap();
        crate::engine::save_engine_snapshot(&dir, &h.engine.snapshot()).unwrap();
        id
    };
    let journal_text = std::fs::read_to_string(dir.join(journal::BOOK_JOURNAL)).unwrap();
    let cancel_line = journal_text.lines().find(|l| l.contains("\"cancelled\"") && l.contains(&id)).unwrap();
    assert!(cancel_line.contains("\"actor\":\"op2\"") && cancel_line.contains("under maintenance"), "{cancel_line}");
    let mut h = resume(&dir, T0 + 11 * HOUR + 2 * MIN);
    let alert = h.book.get(&id).unwrap();
    assert_eq!((alert.acknowledged_by.as_deref(), alert.cancelled_by.as_deref()), (Some("op1"), Some("op2")));
    // Rain continues at the same level: suppressed. It gets worse (大豪雨): raised again, as a new alert.
    for s in 11 * 6 + 1..=(16 * 6) {
        step(&mut h, s);
    }
    let heavy: Vec<String> = h.log(&["heavy-rain"]);
    assert!(heavy[0].contains("Raised heavy-rain@dfa-xinyi-shenmu 大豪雨 v1"), "{heavy:?}");
    let raised = h.changes.iter().filter(|a| a.rule_id == "heavy-rain" && a.change == Change::Raised).count();
    assert_eq!(raised, 1, "{heavy:?}");
    // The new alert carries every gauge that was reporting while the hazard was suppressed.
    assert_eq!(h.changes.iter().find(|a| a.rule_id == "heavy-rain").unwrap().sensors.len(), 2, "{heavy:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reloading rules keeps the windows: a lower threshold takes effect at once, without waiting for new rain; a
/// removed rule's alerts clear.
#[test]
fn reload_keeps_windows() {
    let text = include_str!("../../../config/rules.toml");
    let start = text.find("[[rule]]\nid = \"heavy-rain\"").unwrap();
    let end = text[start + 8..].find("[[rule]]").unwrap() + start + 8;
    let heavy_only = format!("[engine]\nbucket = \"10m\"\n\n{}", &text[start..end]);
    let rules = RuleSet::from_toml(&heavy_only, Path::new("rules.toml")).unwrap();
    let mut h = Harness::with(rules, AlertBook::new("TW-DC"));
    for s in 1..=3 {
        h.read("RG0001", T0 + s * 10 * MIN, Metric::RainMm, 10.0);
    }
    assert!(h.changes.is_empty(), "30 mm: nothing yet");
    let lower = heavy_only.replace("{ window = \"1h\", at_least = 40 }", "{ window = \"1h\", at_least = 25 }");
    let mut out = Vec::new();
    h.engine.reload(RuleSet::from_toml(&lower, Path::new("rules.toml")).unwrap(), &mut out);
    let changed = h.fold(out);
    assert_eq!(changed.iter().map(line).collect::<Vec<_>>(), ["00:30 Raised heavy-rain@dfa-xinyi-shenmu 大雨 v1"]);
    assert_eq!(changed[0].values.get("rain_1h_mm").map(String::as_str), Some("30.0"));
    // The windows survived the reload: 75 mm more makes 105 mm in the hour, past 豪雨 (100 mm in 3 h).
    h.read("RG0001", T0 + 40 * MIN, Metric::RainMm, 75.0);
    assert_eq!(h.engine.window_sums("RG0001", Metric::RainMm)[0], (3_600_000, 105.0));
    assert_eq!(line(h.changes.last().unwrap()), "00:40 Escalated heavy-rain@dfa-xinyi-shenmu 豪雨 v2");
    // Drop the rule: its alert clears.
    let mut out = Vec::new();
    h.engine.reload(RuleSet::default(), &mut out);
    let changed = h.fold(out);
    assert_eq!(changed.iter().map(line).collect::<Vec<_>>(), ["00:40 Cleared heavy-rain@dfa-xinyi-shenmu 豪雨 v3"]);
}

/// A snapshot taken from JSON restores an engine that continues exactly like the original.
#[test]
fn snapshot_round_trip_continues_identically() {
    let mut a = Harness::new();
    for s in 1..=(14 * 6) {
        step(&mut a, s);
    }
    let json = serde_json::to_string(&a.engine.snapshot()).unwrap();
    let mut b = Harness::new();
    b.engine = RuleEngine::new(default_rules(), HOUR);
    b.engine.set_zones(b.geo.zones());
    b.engine.restore(serde_json::from_str(&json).unwrap(), None);
    a.findings.clear();
    for s in 14 * 6 + 1..=(40 * 6) {
        step(&mut a, s);
        step(&mut b, s);
    }
    assert_eq!(format!("{:?}", a.findings), format!("{:?}", b.findings));
    assert_eq!(
        serde_json::to_string(&a.engine.snapshot()).unwrap(),
        serde_json::to_string(&b.engine.snapshot()).unwrap()
    );
}
