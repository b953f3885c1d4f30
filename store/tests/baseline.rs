//! The vehicle detectors' long-term speed baseline (`store/src/embedded/baseline.rs`) through the store's public
//! API, on a real SQLite file: it outlives raw retention, keeps its own window, takes only tracked detectors, stays
//! bounded per detector, survives a restart and fills itself from the raw readings of a version-1 file.

use ingest::{Metric, Reading, Sensor, SensorKind};
use store::embedded::baseline::{SLOTS_PER_WEEK, SLOT_MS};
use store::{Point, ReadingStore, StoreConfig};

/// Monday 2026-11-02 00:00 Taiwan time.
const MONDAY: i64 = 1_793_548_800_000;
const MINUTE: i64 = 60_000;
const WEEK: i64 = 7 * 24 * 60 * MINUTE;

fn sensor(id: &str, kind: SensorKind) -> Sensor {
    Sensor {
        id: id.into(),
        kind,
        lat: 23.52,
        lon: 120.93,
        interval_s: 60,
        agency: "THB".into(),
        metrics: vec![],
        zone: None,
        mobile: false,
        retired: false,
    }
}

fn speed(id: &str, ts_ms: i64, value: f64) -> Reading {
    Reading { sensor_id: id.into(), ts_ms, metric: Metric::SpeedKmh, value, position: None }
}

/// Rows of the baseline table, read from the file itself (a second connection; WAL lets it read).
fn slot_rows(store: &ReadingStore) -> i64 {
    let conn = rusqlite::Connection::open(store.path()).unwrap();
    conn.query_row("SELECT count(*) FROM speed_slots", [], |row| row.get(0)).unwrap()
}

fn refused(reason: &str) -> u64 {
    store::metrics::STORE.baseline_refused.with_label_values(&[reason]).get()
}

#[test]
fn ten_weeks_of_a_detector_keep_eight_weeks_of_slot_means_while_raw_readings_keep_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { retention_days: 7, baseline_weeks: 8, ..StoreConfig::default() };
    let store = ReadingStore::open(dir.path(), config).unwrap();
    store.track_detectors([&sensor("VD0101", SensorKind::VehicleDetector)]);
    // Twenty weeks before MONDAY, so that all of it lies before the wall clock.
    let monday = MONDAY - 20 * WEEK;
    // Ten weeks, a reading every 5 minutes: two per slot, 40 and 60 km/h (slot mean 50), in weekly batches as a
    // running server would store them, with retention passes between.
    let mut now = monday;
    for week in 0..10 {
        let batch: Vec<Reading> = (0..WEEK / (5 * MINUTE))
            .map(|k| {
                let ts = monday + week * WEEK + k * 5 * MINUTE;
                speed("VD0101", ts, if k % 2 == 0 { 40.0 } else { 60.0 })
            })
            .collect();
        now = monday + (week + 1) * WEEK;
        assert!(store.append(&batch));
        store.flush().unwrap();
        store.enforce_retention(now).unwrap();
    }
    let newest = now - 5 * MINUTE;

    // Raw readings: one week.
    let raw = store.history("VD0101", Metric::SpeedKmh, monday, now, Some(WEEK)).unwrap();
    assert_eq!(raw.len(), 2, "raw readings reach back one week (and the slot at its edge): {raw:?}");
    assert!(store.history("VD0101", Metric::SpeedKmh, monday, newest - 8 * 24 * 60 * MINUTE, None).unwrap().is_empty());

    // The baseline: eight weeks of slots (the window's edge slot included), every one the mean of its two readings.
    let slots = store.speed_baseline("VD0101", monday, now).unwrap();
    let window = 8 * SLOTS_PER_WEEK;
    assert!((window..=window + 1).contains(&(slots.len() as i64)), "{} slots for a window of {window}", slots.len());
    assert!(slots.iter().all(|p| p.value == 50.0 && p.ts_ms % SLOT_MS == 0), "slot means");
    assert!(slots[0].ts_ms >= newest - 8 * WEEK - SLOT_MS, "nothing older than 8 weeks: {}", slots[0].ts_ms);
    assert!(slots.windows(2).all(|w| w[0].ts_ms < w[1].ts_ms), "in time order");
    assert_eq!(slot_rows(&store), slots.len() as i64, "bounded per detector: the window and no more");

    // A range inside one hour gives that hour's slots.
    let hour = store.speed_baseline("VD0101", now - 2 * 60 * MINUTE, now - 60 * MINUTE).unwrap();
    assert_eq!(hour.len(), 6);
}

#[test]
fn only_tracked_detectors_are_aggregated_and_the_count_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { baseline_max_detectors: 2, ..StoreConfig::default() };
    let store = ReadingStore::open(dir.path(), config).unwrap();
    let truck = sensor("HZ0001", SensorKind::HazmatGps);
    let mut retired = sensor("VD0009", SensorKind::VehicleDetector);
    retired.retired = true;
    let too_many = refused("too_many_detectors");
    store.track_detectors([
        &sensor("VD0101", SensorKind::VehicleDetector),
        &truck,
        &retired,
        &sensor("VD0102", SensorKind::VehicleDetector),
        &sensor("VD0103", SensorKind::VehicleDetector),
    ]);
    let t = MONDAY + 8 * 60 * MINUTE;
    // A thousand device ids an attacker made up, the truck's speed, the retired and the third detector: stored as
    // raw readings (validation is not the store's job), never in the baseline.
    let mut batch: Vec<Reading> = (0..1000).map(|i| speed(&format!("X{i}"), t, 1.0)).collect();
    batch.extend(["VD0101", "VD0102", "VD0103", "VD0009", "HZ0001"].map(|id| speed(id, t, 55.0)));
    assert!(store.append(&batch));
    store.flush().unwrap();
    assert_eq!(refused("too_many_detectors") - too_many, 1, "the third detector is over the cap, counted");
    assert_eq!(slot_rows(&store), 2, "VD0101 and VD0102 only");
    assert_eq!(store.speed_baseline("VD0101", t, t + 1).unwrap(), vec![Point { ts_ms: t, value: 55.0 }]);
    for id in ["VD0103", "VD0009", "HZ0001", "X7"] {
        assert!(store.speed_baseline(id, MONDAY, t + WEEK).unwrap().is_empty(), "{id} has no baseline");
    }

    // A reading stamped days ahead of the clock holds no slot (validation would have refused it; the store guards).
    let ahead = refused("ahead");
    let future = store::embedded::baseline::MAX_AHEAD_MS * 2
        + std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!(store.append(&[speed("VD0101", future, 50.0)]));
    store.flush().unwrap();
    assert_eq!(refused("ahead") - ahead, 1);
    assert_eq!(slot_rows(&store), 2);

    // The registry retires a detector: its slots go, and its later readings add none.
    let observer = store.registry_observer();
    let mut gone = sensor("VD0102", SensorKind::VehicleDetector);
    gone.retired = true;
    observer(&gone);
    assert!(store.append(&[speed("VD0102", t + SLOT_MS, 50.0)]));
    store.flush().unwrap();
    assert!(store.speed_baseline("VD0102", MONDAY, t + WEEK).unwrap().is_empty());
    // …and the freed place goes to the next detector registered.
    observer(&sensor("VD0104", SensorKind::VehicleDetector));
    assert!(store.append(&[speed("VD0104", t, 61.0)]));
    store.flush().unwrap();
    assert_eq!(store.speed_baseline("VD0104", t, t + 1).unwrap().len(), 1);
    assert_eq!(slot_rows(&store), 2);
}

#[test]
fn a_restart_keeps_the_slots_and_a_version_1_file_is_filled_from_its_raw_readings() {
    let dir = tempfile::tempdir().unwrap();
    let vd = sensor("VD0101", SensorKind::VehicleDetector);
    let t = MONDAY + 3 * 60 * MINUTE;
    {
        let store = ReadingStore::open(dir.path(), StoreConfig::default()).unwrap();
        store.track_detectors([&vd]);
        store.append(&[speed("VD0101", t, 70.0), speed("VD0101", t + MINUTE, 72.0)]);
        store.shutdown();
    }
    {
        let store = ReadingStore::open(dir.path(), StoreConfig::default()).unwrap();
        store.track_detectors([&vd]);
        store.append(&[speed("VD0101", t + 2 * MINUTE, 74.0)]);
        store.flush().unwrap();
        assert_eq!(
            store.speed_baseline("VD0101", t, t + SLOT_MS).unwrap(),
            vec![Point { ts_ms: t, value: 72.0 }],
            "the slot continues across the restart, counted once"
        );
        store.shutdown();
    }
    // The file as version 1 of the schema left it: raw readings, no baseline table.
    {
        let conn = rusqlite::Connection::open(dir.path().join(store::embedded::FILE)).unwrap();
        conn.execute_batch("DROP TABLE speed_slots; PRAGMA user_version = 1;").unwrap();
    }
    let store = ReadingStore::open(dir.path(), StoreConfig::default()).unwrap();
    assert!(store.speed_baseline("VD0101", t, t + SLOT_MS).unwrap().is_empty(), "nothing until tracked");
    store.track_detectors([&vd]);
    store.flush().unwrap();
    assert_eq!(
        store.speed_baseline("VD0101", t, t + SLOT_MS).unwrap(),
        vec![Point { ts_ms: t, value: 72.0 }],
        "filled from the raw readings the file still holds"
    );
    // Tracked again (the next start): not filled twice.
    store.track_detectors([&vd]);
    store.flush().unwrap();
    assert_eq!(slot_rows(&store), 1);
    assert_eq!(store.speed_baseline("VD0101", t, t + SLOT_MS).unwrap()[0].value, 72.0);
}

#[test]
fn a_baseline_window_of_no_weeks_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = ReadingStore::open(dir.path(), StoreConfig { baseline_weeks: 0, ..StoreConfig::default() })
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("baseline_weeks"), "{e}");
}
