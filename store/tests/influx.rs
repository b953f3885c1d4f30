//! The InfluxDB sink against a real server (VictoriaMetrics' InfluxDB v2 write API), read back with `/api/v1/export`
//! and compared exactly: counts, timestamps, values, tags. Also outages, restarts and the spool cap.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{free_port, scripted_server, wait_until, Vm};
use h3o::{LatLng, Resolution};
use ingest::reading::Position;
use ingest::{Metric, Reading, Sensor, SensorKind};
use store::{InfluxConfig, InfluxSink, SpoolFullPolicy};

const T0: i64 = 1_764_122_400_000;

fn sensor(id: &str, kind: SensorKind, agency: &str, lat: f64, lon: f64) -> Sensor {
    Sensor {
        id: id.into(),
        kind,
        lat,
        lon,
        interval_s: 60,
        agency: agency.into(),
        metrics: vec![],
        zone: None,
        mobile: false,
        retired: false,
    }
}

fn gauges(n: usize) -> Vec<Sensor> {
    (0..n)
        .map(|i| sensor(&format!("RG{i:04}"), SensorKind::RainGauge, "SWCB", 23.0 + i as f64 * 0.001, 120.5))
        .collect()
}

/// Readings with distinct (sensor, ts) and a value that encodes both, so a wrong or doubled sample shows.
fn rain(sensor: usize, step: usize) -> Reading {
    Reading {
        sensor_id: format!("RG{sensor:04}"),
        ts_ms: T0 + step as i64 * 1000,
        metric: Metric::RainMm,
        value: (sensor * 1000 + step) as f64 / 8.0,
        position: None,
    }
}

fn config(url: &str) -> InfluxConfig {
    InfluxConfig {
        batch_size: 2_000,
        flush_interval_ms: 100,
        request_timeout_ms: 2_000,
        retry_initial_ms: 50,
        retry_max_ms: 400,
        ..InfluxConfig::new(url, "o", "b", "")
    }
}

/// Checks that VictoriaMetrics holds exactly `steps` samples per gauge, each once, with the value `rain()` gave it.
fn assert_exactly_once(vm: &Vm, sensors: usize, steps: std::ops::Range<usize>) {
    // Points acknowledged by the server become searchable a little later (new series after a restart take longest),
    // so wait until the counts stop being short, then compare everything.
    let mut got = vm.export(r#"{__name__="rain_gauge_rain_mm"}"#);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline
        && (got.len() < sensors || got.values().any(|s| s.samples.len() < steps.len()))
    {
        std::thread::sleep(Duration::from_millis(250));
        got = vm.export(r#"{__name__="rain_gauge_rain_mm"}"#);
    }
    assert_eq!(got.len(), sensors, "one series per gauge");
    for series in got.values() {
        let id = &series.labels["sensor_id"];
        let s: usize = id[2..].parse().expect("sensor number");
        let want: Vec<(i64, f64)> = steps.clone().map(|k| (rain(s, k).ts_ms, rain(s, k).value)).collect();
        assert_eq!(series.samples.len(), want.len(), "{id}: count (duplicates or losses)");
        assert_eq!(series.samples, want, "{id}: samples");
    }
}

#[test]
fn readings_arrive_with_their_measurement_tags_and_exact_values() {
    let dir = tempfile::tempdir().unwrap();
    let vm = Vm::start(&dir.path().join("vm"));
    let sensors = vec![
        sensor("RG0001", SensorKind::RainGauge, "SWCB", 23.7, 120.9),
        sensor("WL0001", SensorKind::RiverGauge, "Water Resources Agency", 24.1, 120.6),
        sensor("HZ0001", SensorKind::HazmatGps, "MOTC", 25.0, 121.5),
    ];
    let sink = InfluxSink::start(config(&vm.url()), &dir.path().join("spool"), &sensors).unwrap();
    let readings = vec![
        Reading { sensor_id: "RG0001".into(), ts_ms: T0, metric: Metric::RainMm, value: 12.5, position: None },
        Reading { sensor_id: "RG0001".into(), ts_ms: T0, metric: Metric::BatteryV, value: 12.34375, position: None },
        Reading {
            sensor_id: "WL0001".into(),
            ts_ms: T0 + 1,
            metric: Metric::WaterLevelM,
            value: -1.25,
            position: None,
        },
        Reading {
            sensor_id: "HZ0001".into(),
            ts_ms: T0 + 2,
            metric: Metric::SpeedKmh,
            value: 80.0,
            position: Some(Position { lat: 24.15, lon: 120.67 }),
        },
        Reading { sensor_id: "XX0001".into(), ts_ms: T0 + 3, metric: Metric::RainMm, value: 1.0, position: None },
    ];
    assert!(sink.send(&readings));
    sink.flush().unwrap();
    assert!(wait_until(Duration::from_secs(30), || sink.stats().written == 5), "{:?}", sink.stats());

    let got = vm.export(r#"{__name__=~"(rain_gauge|river_gauge|hazmat_gps|unregistered)_.*"}"#);
    let by_name =
        |name: &str| -> Vec<&common::Series> { got.values().filter(|s| s.labels["__name__"] == name).collect() };
    let cell = |lat: f64, lon: f64| LatLng::new(lat, lon).unwrap().to_cell(Resolution::Nine).to_string();

    let rain = by_name("rain_gauge_rain_mm");
    assert_eq!(rain.len(), 1);
    assert_eq!(rain[0].samples, vec![(T0, 12.5)]);
    assert_eq!(rain[0].labels["sensor_id"], "RG0001");
    assert_eq!(rain[0].labels["kind"], "rain_gauge");
    assert_eq!(rain[0].labels["agency"], "SWCB");
    assert_eq!(rain[0].labels["h3"], cell(23.7, 120.9));
    // VictoriaMetrics keeps about 12 significant digits (0.1 + 0.2 comes back as 0.3), so exactness is checked with
    // values it can hold; that our text reads back to the identical f64 is line.rs's unit test.
    assert_eq!(by_name("rain_gauge_battery_v")[0].samples, vec![(T0, 12.34375)]);

    let river = by_name("river_gauge_water_level_m");
    assert_eq!(river[0].labels["agency"], "Water Resources Agency", "escaped spaces in a tag");
    assert_eq!(river[0].samples, vec![(T0 + 1, -1.25)]);

    let truck = by_name("hazmat_gps_speed_kmh");
    assert_eq!(truck[0].labels["h3"], cell(24.15, 120.67), "a mobile unit is tagged where it reported from");

    let stray = by_name("unregistered_rain_mm");
    assert_eq!(stray[0].labels["sensor_id"], "XX0001");
    assert_eq!(got.len(), 5);
    let stats = sink.stats();
    assert_eq!((stats.spooled, stats.failed_requests, stats.spool_bytes), (0, 0, 0), "{stats:?}");
}

/// Registry changes reach the sink through the registry's observer (what `serve` wires): a sensor added after start
/// is written under its measurement and tags, not `unregistered`; an update moves its tags from the next reading on.
/// The observer holds the sink's queue weakly: the registry outliving the sink neither keeps the sink's thread alive
/// at shutdown nor fails when it changes afterwards.
#[test]
fn registry_changes_reach_the_sink_through_its_observer() {
    let dir = tempfile::tempdir().unwrap();
    let vm = Vm::start(&dir.path().join("vm"));
    let mut registry = ingest::SensorRegistry::default();
    let sink = InfluxSink::start(config(&vm.url()), &dir.path().join("spool"), registry.iter()).unwrap();
    registry.observe(sink.registry_observer());
    let mut gauge = sensor("RG0042", SensorKind::RainGauge, "SWCB", 23.7, 120.9);
    gauge.metrics = vec![Metric::RainMm];
    registry.add(gauge.clone()).unwrap();
    let reading =
        |ts_ms| Reading { sensor_id: "RG0042".into(), ts_ms, metric: Metric::RainMm, value: 1.5, position: None };
    assert!(sink.send(&[reading(T0)]));
    gauge.agency = "WRA".into();
    registry.update(gauge.clone()).unwrap();
    assert!(sink.send(&[reading(T0 + 1000)]));
    sink.flush().unwrap();
    assert!(wait_until(Duration::from_secs(30), || sink.stats().written == 2), "{:?}", sink.stats());

    let mut got = vm.export(r#"{__name__=~"(rain_gauge|unregistered)_.*"}"#);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got.values().map(|s| s.samples.len()).sum::<usize>() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        got = vm.export(r#"{__name__=~"(rain_gauge|unregistered)_.*"}"#);
    }
    let seen: Vec<(&str, &str, usize)> = got
        .values()
        .map(|s| (s.labels["__name__"].as_str(), s.labels.get("agency").map_or("", String::as_str), s.samples.len()))
        .collect();
    assert_eq!(seen, [("rain_gauge_rain_mm", "SWCB", 1), ("rain_gauge_rain_mm", "WRA", 1)], "{got:?}");

    // Shut down while the registry (and its observer) lives on, then change the registry again.
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        sink.shutdown();
        let _ = done_tx.send(());
    });
    done.recv_timeout(Duration::from_secs(20)).expect("the sink stops although the registry still observes it");
    gauge.agency = "CWA".into();
    registry.update(gauge).unwrap();
}

/// The server is stopped (SIGTERM) with requests in flight and started again later on the same data.
///
/// Stopping a server with requests in flight makes some of them ambiguous: VictoriaMetrics may store a request's
/// points and then reset the connection before answering, so the sink sees a failure and sends them again. No client
/// can tell that case from a request that never arrived. InfluxDB keeps one point per (series, timestamp), so the
/// resend overwrites; VictoriaMetrics does the same with `-dedup.minScrapeInterval=1ms`, which this test uses. The
/// sink's own count of acknowledged points must still be exact (each point acknowledged once), and the other tests
/// (outages where nothing is in flight) check with no deduplication at all that the spool never sends anything twice.
#[test]
fn server_stopped_mid_run_every_reading_arrives_exactly_once() {
    const SENSORS: usize = 200;
    const STEPS: usize = 600; // 120 000 readings
    let dir = tempfile::tempdir().unwrap();
    let mut vm = Vm::start_with_influx_point_identity_on(&dir.path().join("vm"), free_port());
    let port = vm.port;
    let sink = InfluxSink::start(config(&vm.url()), &dir.path().join("spool"), &gauges(SENSORS)).unwrap();

    let mut stopped_at = None;
    let mut restarted = false;
    for k in 0..STEPS {
        let batch: Vec<Reading> = (0..SENSORS).map(|s| rain(s, k)).collect();
        assert!(sink.send(&batch), "send never refuses while the queue has room");
        if k == STEPS / 3 {
            // Let part of the run land first, so the outage hits a sink with data in flight and written.
            assert!(wait_until(Duration::from_secs(20), || sink.stats().written > 10_000), "{:?}", sink.stats());
            vm.stop();
            stopped_at = Some(sink.stats().written);
        }
        if k == 2 * STEPS / 3 {
            // The outage must have been noticed and the spool used before the server returns.
            assert!(wait_until(Duration::from_secs(20), || sink.stats().spool_bytes > 0), "{:?}", sink.stats());
            assert!(!sink.stats().healthy);
            vm = Vm::start_with_influx_point_identity_on(&dir.path().join("vm"), port);
            restarted = true;
        }
        if k % 20 == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    assert!(restarted);
    let total = (SENSORS * STEPS) as u64;
    assert!(
        wait_until(Duration::from_secs(60), || {
            let s = sink.stats();
            s.written == total && s.spool_bytes == 0
        }),
        "not everything arrived: {:?}",
        sink.stats()
    );
    let stats = sink.stats();
    eprintln!("after the outage: {stats:?} (written before the stop: {stopped_at:?})");
    assert!(stats.failed_requests > 0 && stats.spooled > 0 && stats.retried > 0, "{stats:?}");
    assert!(stopped_at.is_some_and(|w| w < total));
    assert_eq!((stats.dropped_queue_full, stats.dropped_spool_full, stats.rejected), (0, 0, 0), "{stats:?}");
    assert_exactly_once(&vm, SENSORS, 0..STEPS);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.stats().written, total, "nothing acknowledged twice");
}

#[test]
fn a_process_restart_during_an_outage_loses_nothing_spooled() {
    const SENSORS: usize = 50;
    const STEPS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let port = free_port(); // nothing listens here yet: the server is down
    let url = format!("http://127.0.0.1:{port}");
    {
        let sink = InfluxSink::start(config(&url), &spool_dir, &gauges(SENSORS)).unwrap();
        for k in 0..STEPS {
            sink.send(&(0..SENSORS).map(|s| rain(s, k)).collect::<Vec<_>>());
        }
        sink.flush().unwrap();
        let stats = sink.stats();
        assert_eq!(stats.written, 0);
        assert_eq!(stats.spooled, (SENSORS * STEPS) as u64, "{stats:?}");
        // The process "dies" here (a clean stop: the crash case is the spool's own torn-line test).
        sink.shutdown();
    }
    let segments = std::fs::read_dir(&spool_dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("seg-"));
    assert!(segments.count() > 0, "the spool is on disk");

    let vm = Vm::start_on(&dir.path().join("vm"), port);
    let sink = InfluxSink::start(config(&url), &spool_dir, &gauges(SENSORS)).unwrap();
    assert!(sink.stats().spool_bytes > 0, "the new process found the spool");
    assert!(
        wait_until(Duration::from_secs(30), || {
            let s = sink.stats();
            s.written == (SENSORS * STEPS) as u64 && s.spool_bytes == 0
        }),
        "{:?}",
        sink.stats()
    );
    assert_exactly_once(&vm, SENSORS, 0..STEPS);
    drop(sink);
    // Fully replayed: a third start has nothing to send.
    let sink = InfluxSink::start(config(&url), &spool_dir, &gauges(SENSORS)).unwrap();
    assert_eq!(sink.stats().spool_bytes, 0);
}

#[test]
fn the_spool_cap_drops_the_oldest_and_counts_every_point() {
    const SENSORS: usize = 20;
    const STEPS: usize = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let cfg = InfluxConfig {
        spool_max_bytes: 256 << 10,
        spool_segment_bytes: 32 << 10,
        batch_size: 500,
        on_spool_full: SpoolFullPolicy::DropOldest,
        ..config(&url)
    };
    let sink = InfluxSink::start(cfg, &dir.path().join("spool"), &gauges(SENSORS)).unwrap();
    for k in 0..STEPS {
        sink.send(&(0..SENSORS).map(|s| rain(s, k)).collect::<Vec<_>>());
    }
    sink.flush().unwrap();
    let stats = sink.stats();
    assert!(stats.dropped_spool_full > 0, "{stats:?}");
    assert!(stats.spool_bytes <= 256 << 10, "{stats:?}");
    let metric = prometheus::gather()
        .into_iter()
        .find(|f| f.name() == "dc_store_influx_dropped_total")
        .expect("dropped metric registered");
    let spool_full = metric
        .get_metric()
        .iter()
        .find(|m| m.get_label().iter().any(|l| l.value() == "spool_full"))
        .map(|m| m.get_counter().get_value())
        .unwrap_or(0.0);
    assert!(spool_full >= stats.dropped_spool_full as f64, "the drop is on /metrics too");

    // When the server comes back, what was kept arrives; kept + dropped is everything sent.
    let vm = Vm::start_on(&dir.path().join("vm"), port);
    let total = (SENSORS * STEPS) as u64;
    assert!(
        wait_until(Duration::from_secs(30), || {
            let s = sink.stats();
            s.spool_bytes == 0 && s.written + s.dropped_spool_full == total
        }),
        "{:?}",
        sink.stats()
    );
    let got = vm.export(r#"{__name__="rain_gauge_rain_mm"}"#);
    let arrived: usize = got.values().map(|s| s.samples.len()).sum();
    assert_eq!(arrived as u64, sink.stats().written);
    // Oldest dropped: the newest step of every gauge is there.
    for series in got.values() {
        assert_eq!(series.samples.last().map(|(ts, _)| *ts), Some(rain(0, STEPS - 1).ts_ms));
    }
}

#[test]
fn server_errors_are_retried_with_backoff_and_client_errors_dropped() {
    // Three 503s, then success: the batch is spooled, retried after backoff, and arrives once.
    let (port, seen) = scripted_server(vec![503, 503, 503]);
    let dir = tempfile::tempdir().unwrap();
    let sink =
        InfluxSink::start(config(&format!("http://127.0.0.1:{port}")), &dir.path().join("a"), &gauges(1)).unwrap();
    sink.send(&[rain(0, 0), rain(0, 1)]);
    assert!(wait_until(Duration::from_secs(30), || sink.stats().written == 2), "{:?}", sink.stats());
    let stats = sink.stats();
    assert_eq!((stats.failed_requests, stats.retried, stats.spool_bytes), (3, 3, 0), "{stats:?}");
    assert_eq!(seen.load(Ordering::SeqCst), 4);
    assert!(stats.healthy);

    // 400: the server will never take these lines; retrying would block everything behind them.
    let (port, seen) = scripted_server(vec![400]);
    let sink =
        InfluxSink::start(config(&format!("http://127.0.0.1:{port}")), &dir.path().join("b"), &gauges(1)).unwrap();
    sink.send(&[rain(0, 0)]);
    assert!(wait_until(Duration::from_secs(30), || sink.stats().rejected == 1), "{:?}", sink.stats());
    sink.send(&[rain(0, 1)]);
    assert!(wait_until(Duration::from_secs(30), || sink.stats().written == 1), "{:?}", sink.stats());
    assert_eq!((sink.stats().spooled, seen.load(Ordering::SeqCst)), (0, 2));
}

#[test]
fn a_server_that_never_answers_times_out_and_the_batch_is_spooled() {
    let (port, _) = scripted_server(vec![0]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = InfluxConfig { request_timeout_ms: 300, ..config(&format!("http://127.0.0.1:{port}")) };
    let sink = InfluxSink::start(cfg, &dir.path().join("spool"), &gauges(1)).unwrap();
    let started = std::time::Instant::now();
    sink.send(&[rain(0, 0)]);
    // The hung request is abandoned after 300 ms and the batch spooled; the retry (on a new connection) succeeds.
    assert!(wait_until(Duration::from_secs(30), || sink.stats().written == 1), "{:?}", sink.stats());
    assert!(started.elapsed() >= Duration::from_millis(300));
    let stats = sink.stats();
    assert_eq!((stats.failed_requests, stats.spooled, stats.spool_bytes), (1, 1, 0), "{stats:?}");
}

#[test]
fn send_never_blocks_and_counts_what_it_drops() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = InfluxConfig { queue_readings: 100, ..config(&format!("http://127.0.0.1:{}", free_port())) };
    let sink = InfluxSink::start(cfg, &dir.path().join("spool"), &gauges(1)).unwrap();
    let big: Vec<Reading> = (0..101).map(|k| rain(0, k)).collect();
    assert!(!sink.send(&big));
    assert_eq!(sink.stats().dropped_queue_full, 101);
}

#[test]
fn bad_configs_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    for url in ["127.0.0.1:8086", "http://exa mple:8086"] {
        let e = InfluxSink::start(InfluxConfig::new(url, "o", "b", "t"), dir.path(), &gauges(1));
        assert!(matches!(e, Err(store::StoreError::Config(_))), "{url}");
    }
}
