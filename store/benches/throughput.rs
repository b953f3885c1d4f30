//! Throughput of the embedded store and of the InfluxDB sink into a real VictoriaMetrics (started here, like the
//! tests). Plain timing, no criterion: each figure is one run of a fixed amount of work, short enough for a shared
//! 2-core machine (well under a minute in all).
//!
//!     cargo bench -p store                      # all
//!     cargo bench -p store -- store             # only the embedded store
//!     cargo bench -p store -- sink              # only the sink
//!
//! Targets (issue 4): the store keeps up with ingest's 250k readings/s; the sink writes 400k points/s.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use ingest::{Metric, Reading, Sensor, SensorKind};
use store::{InfluxConfig, InfluxSink, ReadingStore, StoreConfig};

const T0: i64 = 1_764_122_400_000;
const SENSORS: usize = 2_000;
/// Readings per `append`/`send` call: a gateway's batch as ingest hands it on.
const CHUNK: usize = 500;

fn readings(total: usize) -> Vec<Reading> {
    let sensors: Vec<String> = (0..SENSORS).map(|i| format!("RG{i:05}")).collect();
    (0..total)
        .map(|i| Reading {
            sensor_id: sensors[i % SENSORS].clone(),
            ts_ms: T0 + (i / SENSORS) as i64 * 1000,
            metric: Metric::RainMm,
            value: (i % 1000) as f64 / 4.0,
            position: None,
        })
        .collect()
}

fn bench_store(total: usize) {
    let data = readings(total);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ReadingStore::open(dir.path(), StoreConfig::default()).expect("open");

    // Burst: everything as fast as the caller can append; the time until the last commit is the store's rate.
    let start = Instant::now();
    let mut max_queued = 0;
    for chunk in data.chunks(CHUNK) {
        store.append(chunk);
        max_queued = max_queued.max(store.stats().queued);
    }
    let appended = start.elapsed();
    store.flush().expect("flush");
    let elapsed = start.elapsed();
    let s = store.stats();
    println!(
        "store  burst   {total} readings ({SENSORS} series): {:>9.0} inserts/s  (append calls took {:.3} s in all, \
         max queue {max_queued}, dropped {})",
        s.written as f64 / elapsed.as_secs_f64(),
        appended.as_secs_f64(),
        s.dropped
    );

    // Paced at ingest's target: does the queue stay bounded at 250k readings/s?
    let rate = 250_000.0;
    let paced = readings(total).into_iter().map(|mut r| {
        r.ts_ms += 10_000_000;
        r
    });
    let paced: Vec<Reading> = paced.collect();
    let before = store.stats().written;
    let start = Instant::now();
    let mut max_queued = 0;
    for (i, chunk) in paced.chunks(CHUNK).enumerate() {
        let due = Duration::from_secs_f64((i * CHUNK) as f64 / rate);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        store.append(chunk);
        max_queued = max_queued.max(store.stats().queued);
    }
    let fed = start.elapsed();
    store.flush().expect("flush");
    let lag = start.elapsed() - fed;
    let s = store.stats();
    println!(
        "store  paced   {total} readings at 250k/s: fed in {:.2} s, max queue {max_queued} readings, \
         drained {:.3} s after the last append, dropped {}  ({} written)",
        fed.as_secs_f64(),
        lag.as_secs_f64(),
        s.dropped,
        s.written - before
    );
    let size = std::fs::metadata(store.path()).map(|m| m.len()).unwrap_or(0);
    println!("store  file    {:.1} bytes/reading on disk", size as f64 / s.written as f64);
}

fn gauges() -> Vec<Sensor> {
    (0..SENSORS)
        .map(|i| Sensor {
            id: format!("RG{i:05}"),
            kind: SensorKind::RainGauge,
            lat: 23.0 + i as f64 * 0.0005,
            lon: 120.5,
            interval_s: 60,
            agency: "SWCB".into(),
            metrics: vec![Metric::RainMm],
            zone: None,
            mobile: false,
            retired: false,
        })
        .collect()
}

/// `BENCH_BATCH_SIZE` and `BENCH_MAX_IN_FLIGHT` override the defaults, for tuning.
fn tuned(mut config: InfluxConfig) -> InfluxConfig {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = var("BENCH_BATCH_SIZE") {
        config.batch_size = n;
    }
    if let Some(n) = var("BENCH_MAX_IN_FLIGHT") {
        config.max_in_flight = n;
    }
    println!("sink   config  batch_size {} max_in_flight {}", config.batch_size, config.max_in_flight);
    config
}

/// Waits until every point is accounted for and the spool is empty; returns the sink's stats and whether it got there.
fn drained(sink: &InfluxSink, total: usize) -> (store::SinkStats, bool) {
    let ok = common::wait_until(Duration::from_secs(120), || {
        let s = sink.stats();
        s.written + s.dropped_queue_full + s.rejected + s.dropped_spool_full >= total as u64 && s.spool_bytes == 0
    });
    (sink.stats(), ok)
}

fn bench_sink(total: usize) {
    let data = readings(total);
    let dir = tempfile::tempdir().expect("tempdir");
    let vm = common::Vm::start(&dir.path().join("vm"));
    // The whole run is queued at once; a queue twice its size keeps it in memory (below the half-full mark where
    // the sink would start spilling to disk), so this measures the direct path.
    let config = tuned(InfluxConfig { queue_readings: 2 * total, ..InfluxConfig::new(vm.url(), "o", "b", "") });
    let sink = InfluxSink::start(config, &dir.path().join("spool"), &gauges()).expect("sink");
    let start = Instant::now();
    for chunk in data.chunks(CHUNK) {
        sink.send(chunk);
    }
    let sent = start.elapsed();
    sink.flush().expect("flush");
    let (s, ok) = drained(&sink, total);
    let elapsed = start.elapsed();
    println!(
        "sink   direct  {total} points into VictoriaMetrics: {:>9.0} points/s  (send calls took {:.3} s in all; \
         {} spooled, {} failed requests, dropped {}){}",
        s.written as f64 / elapsed.as_secs_f64(),
        sent.as_secs_f64(),
        s.spooled,
        s.failed_requests,
        s.dropped_queue_full + s.dropped_spool_full + s.rejected,
        if ok { "" } else { "  [TIMED OUT]" }
    );
}

fn bench_replay(total: usize) {
    let data = readings(total);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let config = tuned(InfluxConfig { queue_readings: 2 * total, ..InfluxConfig::new(url, "o", "b", "") });
    // The server is down: everything goes to the spool.
    let sink = InfluxSink::start(config, &dir.path().join("spool"), &gauges()).expect("sink");
    let start = Instant::now();
    for chunk in data.chunks(CHUNK) {
        sink.send(chunk);
    }
    sink.flush().expect("flush");
    let spooled = start.elapsed();
    let bytes = sink.stats().spool_bytes;
    // It comes back: how fast does the spool drain?
    let _vm = common::Vm::start_on(&dir.path().join("vm"), port);
    let start = Instant::now();
    let (s, ok) = drained(&sink, total);
    let elapsed = start.elapsed();
    println!(
        "sink   replay  {total} points spooled in {:.2} s ({:.0} MB), replayed at {:>9.0} points/s once the server \
         was back (incl. its start and the first backoff){}",
        spooled.as_secs_f64(),
        bytes as f64 / 1e6,
        s.written as f64 / elapsed.as_secs_f64(),
        if ok { "" } else { "  [TIMED OUT]" }
    );
}

/// The ceiling under the machine's current load: the `influxdb2` crate alone posting pre-formatted 5 000-line bodies
/// (the same lines the sink writes, h3 tag included) one after another; issue 4 quotes about 490k/s for this.
fn bench_crate_alone(total: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let vm = common::Vm::start(&dir.path().join("vm"));
    let cells: Vec<String> = gauges()
        .iter()
        .map(|s| h3o::LatLng::new(s.lat, s.lon).expect("lat/lon").to_cell(h3o::Resolution::Nine).to_string())
        .collect();
    let bodies: Vec<String> = readings(total)
        .chunks(5_000)
        .map(|chunk| {
            chunk
                .iter()
                .map(|r| {
                    let cell = &cells[r.sensor_id[2..].parse::<usize>().expect("sensor number")];
                    format!(
                        "rain_gauge,agency=SWCB,h3={cell},kind=rain_gauge,sensor_id={} rain_mm={:?} {}\n",
                        r.sensor_id, r.value, r.ts_ms
                    )
                })
                .collect()
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let client = influxdb2::Client::new(vm.url(), "o", "");
    let start = Instant::now();
    runtime.block_on(async {
        for body in bodies {
            client
                .write_line_protocol_with_precision(
                    "o",
                    "b",
                    body,
                    influxdb2::api::write::TimestampPrecision::Milliseconds,
                )
                .await
                .expect("write");
        }
    });
    let elapsed = start.elapsed();
    println!(
        "crate  alone   {total} pre-formatted points, sequential requests: {:>9.0} points/s (ceiling right now)",
        total as f64 / elapsed.as_secs_f64()
    );
}

fn main() {
    // `cargo bench` passes `--bench` (and any filter) to harness = false benches.
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wants = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if wants("store") {
        bench_store(1_000_000);
    }
    if wants("sink") {
        bench_sink(2_000_000);
        bench_replay(1_000_000);
    }
    if wants("crate") {
        bench_crate_alone(2_000_000);
    }
}
