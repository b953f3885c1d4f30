//! `soak`: an hour (`--soak-minutes`) of mixed load on the real binary, sampling what could grow without bound.
//!
//! The load, all at once: readings from 100 extra soil-moisture stations at `--soak-rate` readings/s; the demo
//! typhoon replayed slowly enough to last the whole soak (rain through every level, river, slope, flooded freeway,
//! hazmat route, a silent sensor: the operator approves what the approval gate holds); a road-flood sensor on
//! Freeway 1 that floods and drains every minute (one alert raised and cleared each time, every fifth one cancelled
//! by the operator instead); `--soak-citizens` citizens' sockets, each living 10–120 s and leaving (most with a close
//! frame, some by dropping the connection) for a new one to take its place; webhooks and the three carriers' CBCs
//! answered by a receiver here; readings to VictoriaMetrics through the InfluxDB sink.
//!
//! Every 10 s: the server's RSS, open files, threads and data-dir size, its queue gauges from `/metrics`, and what
//! arrived where. The samples go to a CSV; the figures compare the end of the run with the time after warm-up.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gateway_firmware_sim::{now_ms, run_load, run_scenario, Fleet, LoadOptions, RunOptions, Scenario};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::receiver::next_request;
use crate::server::{self, free_addr, request, Server, TOKEN};
use crate::{Cli, Row};

const SOAK_STATIONS: usize = 100;
/// Where the flooding sensor sits: on `fwy1-changhua`, which the typhoon leaves alone.
const FLOOD_SENSOR: (&str, f64, f64) = ("RFS001", 24.045, 120.553);
const FLOOD_PASSWORD: &str = "soak-flood-password";
/// Citizens watch the typhoon's gauges, the flooding freeway, and a place where nothing happens.
const PLACES: [(f64, f64); 3] = [(23.5185, 120.928), (24.045, 120.553), (25.04, 121.56)];
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Gauges of `/metrics` sampled, in CSV order.
/// The first 7 are queues that must drain; 7 and 8 are connections (open files); the rest are sizes that must
/// stay bounded.
const GAUGES: [&str; 11] = [
    "dc_ingest_queue_batches",
    "dc_ingest_lag_ms",
    "dc_store_queue_readings",
    "dc_store_influx_queue_readings",
    "dc_store_influx_spool_bytes",
    "dc_dissemination_queue_depth",
    "dc_dissemination_journal_backlog",
    "dc_ws_citizen_connections",
    "dc_ws_operator_connections",
    "dc_dissemination_messages_in_memory",
    "dc_dissemination_alerts_in_memory",
];

/// What the soak's own clients counted.
#[derive(Default)]
struct Tally {
    citizen_sessions: AtomicU64,
    citizen_failures: AtomicU64,
    citizen_alert_frames: AtomicU64,
    operator_frames: AtomicU64,
    approvals: AtomicU64,
    floods: AtomicU64,
    cancels: AtomicU64,
    webhooks: AtomicU64,
    cbc_requests: AtomicU64,
}

pub async fn soak(cli: &Cli) -> anyhow::Result<Vec<Row>> {
    let duration = Duration::from_secs(if cli.quick { 60 } else { cli.soak_minutes * 60 });
    let work = std::env::temp_dir().join(format!("dc-soak-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let tally = Arc::new(Tally::default());
    let receiver = start_receiver(Arc::clone(&tally)).await?;
    let skip = |part: &str| cli.soak_skip.iter().any(|s| s == part);
    let vm = if skip("influx") { None } else { Some(VictoriaMetrics::start(&work.join("vm"))?) };
    let config = soak_config(&work.join("config"), receiver, vm.as_ref().map(|vm| vm.addr), cli.soak_cache_mib)?;
    // 100 stations' passwords are hashed (argon2) at start: allow for it.
    let server = Server::serve(&cli.server, &config, Duration::from_secs(180))?;
    println!(
        "soak: {} min, {} readings/s from {SOAK_STATIONS} stations, {} citizens churning, typhoon over the whole run{}",
        duration.as_secs() / 60,
        cli.soak_rate,
        cli.soak_citizens,
        if cli.soak_skip.is_empty() { String::new() } else { format!("; without {}", cli.soak_skip.join(", ")) }
    );

    let start = Instant::now();
    let end = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    let load = LoadOptions {
        host: server.mqtt.ip().to_string(),
        port: server.mqtt.port(),
        connections: SOAK_STATIONS,
        rate: cli.soak_rate,
        duration,
        devices: stations().into_iter().map(|(id, password)| (id, Some(password))).collect(),
        quiet: true,
        ..LoadOptions::default()
    };
    let load = (!skip("load")).then(|| tokio::spawn(async move { run_load(&load).await }));
    if !skip("typhoon") {
        tasks.spawn(typhoon(server.mqtt, duration, config.with_file_name("")));
    }
    if !skip("floods") {
        tasks.spawn(flood_cycles(server.mqtt, server.http, end, Arc::clone(&tally)));
    }
    if !skip("operator") {
        tasks.spawn(operator(server.http, end, Arc::clone(&tally)));
    }
    if !skip("citizens") {
        for slot in 0..cli.soak_citizens {
            tasks.spawn(citizen_slot(server.http, slot, end, Arc::clone(&tally)));
        }
    }

    let csv_path = cli.soak_csv.clone();
    let mut csv = String::from("elapsed_s,rss_kib,open_files,threads,data_dir_mib");
    for g in GAUGES {
        write!(csv, ",{g}")?;
    }
    csv.push_str(",readings_accepted,alerts_raised,citizen_sessions,citizen_alert_frames,webhooks,cbc_requests\n");
    let mut samples: Vec<Sample> = Vec::new();
    while Instant::now() < end {
        tokio::time::sleep(SAMPLE_EVERY).await;
        let sample = Sample::take(&server, start, &tally);
        csv.push_str(&sample.csv_line());
        std::fs::write(&csv_path, &csv)?;
        if samples.len().is_multiple_of(30) || cli.quick {
            println!("{}", sample.progress());
        }
        samples.push(sample);
    }
    let load = match load {
        Some(load) => Some(load.await??),
        None => None,
    };
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    // Let the queues drain, then the final sample.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let last = Sample::take(&server, start, &tally);
    csv.push_str(&last.csv_line());
    std::fs::write(&csv_path, &csv)?;
    println!("soak: samples in {}", csv_path.display());
    if let Some(load) = load {
        println!("soak: load {:.0} msgs/s acked, {} missing", load.rate(), load.missing);
    }
    let arrived = vm.as_ref().and_then(VictoriaMetrics::count_readings);
    let t = &tally;
    println!(
        "soak: {} citizen sessions ({} failed to connect), {} alert frames to citizens, {} operator frames, {} approvals; \
         {} floods, {} cancels; {} webhooks, {} CBC requests; {} readings accepted, {arrived:?} series points in VictoriaMetrics",
        t.citizen_sessions.load(Ordering::Relaxed),
        t.citizen_failures.load(Ordering::Relaxed),
        t.citizen_alert_frames.load(Ordering::Relaxed),
        t.operator_frames.load(Ordering::Relaxed),
        t.approvals.load(Ordering::Relaxed),
        t.floods.load(Ordering::Relaxed),
        t.cancels.load(Ordering::Relaxed),
        t.webhooks.load(Ordering::Relaxed),
        t.cbc_requests.load(Ordering::Relaxed),
        last.readings_accepted,
    );
    let _ = std::fs::remove_dir_all(&work);
    Ok(verdict(&samples, &last))
}

/// One sample of the server from outside.
struct Sample {
    elapsed_s: f64,
    rss_kib: u64,
    open_files: u64,
    threads: u64,
    data_dir_mib: f64,
    gauges: Vec<f64>,
    readings_accepted: f64,
    alerts_raised: f64,
    citizen_sessions: u64,
    citizen_alert_frames: u64,
    webhooks: u64,
    cbc_requests: u64,
}

impl Sample {
    fn take(server: &Server, start: Instant, tally: &Tally) -> Sample {
        let pid = server.pid();
        let metrics = crate::server::get(server.http, "/metrics").unwrap_or_default();
        let value = |name: &str| -> f64 {
            metrics
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter(|l| l.split([' ', '{']).next() == Some(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        Sample {
            elapsed_s: start.elapsed().as_secs_f64(),
            rss_kib: crate::server::rss_kib(pid),
            open_files: std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0),
            threads: std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count() as u64).unwrap_or(0),
            data_dir_mib: dir_bytes(&server.data) as f64 / (1024.0 * 1024.0),
            gauges: GAUGES.iter().map(|g| value(g)).collect(),
            readings_accepted: value("dc_ingest_readings_accepted_total"),
            alerts_raised: value("dc_alert_transitions_total"),
            citizen_sessions: tally.citizen_sessions.load(Ordering::Relaxed),
            citizen_alert_frames: tally.citizen_alert_frames.load(Ordering::Relaxed),
            webhooks: tally.webhooks.load(Ordering::Relaxed),
            cbc_requests: tally.cbc_requests.load(Ordering::Relaxed),
        }
    }

    fn csv_line(&self) -> String {
        let mut line = format!(
            "{:.0},{},{},{},{:.1}",
            self.elapsed_s, self.rss_kib, self.open_files, self.threads, self.data_dir_mib
        );
        for g in &self.gauges {
            let _ = write!(line, ",{g}");
        }
        let _ = writeln!(
            line,
            ",{},{},{},{},{},{}",
            self.readings_accepted,
            self.alerts_raised,
            self.citizen_sessions,
            self.citizen_alert_frames,
            self.webhooks,
            self.cbc_requests
        );
        line
    }

    fn progress(&self) -> String {
        format!(
            "soak {:>5.0} s: RSS {} KiB, {} files, {} threads, data {:.0} MiB, citizens {}, readings {:.0}, alert transitions {:.0}",
            self.elapsed_s,
            self.rss_kib,
            self.open_files,
            self.threads,
            self.data_dir_mib,
            self.gauges[7],
            self.readings_accepted,
            self.alerts_raised
        )
    }
}

/// Growth: the end of the run (last sixth) against the time after warm-up (second sixth), as result rows.
fn verdict(samples: &[Sample], last: &Sample) -> Vec<Row> {
    let n = samples.len().max(6);
    let baseline = &samples[(n / 6).min(samples.len())..(n / 3).min(samples.len())];
    let tail = &samples[samples.len().saturating_sub(n / 6)..];
    let peak = |set: &[Sample], f: &dyn Fn(&Sample) -> f64| set.iter().map(f).fold(f64::NAN, f64::max);
    let mut rows = Vec::new();
    let mut grow = |name: &str, unit: &'static str, f: &dyn Fn(&Sample) -> f64, slack: f64| {
        let (before, after) = (peak(baseline, f), peak(tail, f));
        println!("soak: {name}: after warm-up ≤ {before:.1} {unit}, at the end ≤ {after:.1} {unit}");
        rows.push(Row {
            name: format!("soak {name}: end vs after warm-up (peak {before:.1} → {after:.1} {unit})"),
            figure: after - before,
            unit,
            peer: None,
            target: "flat".into(),
            met: Some(after <= before * 1.1 + slack),
        });
    };
    grow("RSS", "MiB", &|s| s.rss_kib as f64 / 1024.0, 8.0);
    grow("open files", "files", &|s| s.open_files as f64 - s.gauges[7] - s.gauges[8], 16.0);
    grow("threads", "threads", &|s| s.threads as f64, 2.0);
    for (i, gauge) in GAUGES.iter().enumerate().take(7) {
        let max = samples.iter().map(|s| s.gauges[i]).fold(0.0, f64::max);
        println!("soak: {gauge}: max {max}, after the run {}", last.gauges[i]);
        if !gauge.ends_with("lag_ms") {
            rows.push(Row {
                name: format!("soak {gauge} after the run (max during it {max})"),
                figure: last.gauges[i],
                unit: "",
                peer: None,
                target: "drained".into(),
                met: Some(last.gauges[i] == 0.0),
            });
        }
    }
    for (i, gauge) in GAUGES.iter().enumerate().skip(9) {
        let max = samples.iter().map(|s| s.gauges[i]).fold(0.0, f64::max);
        println!("soak: {gauge}: max {max}, after the run {}", last.gauges[i]);
        rows.push(Row {
            name: format!("soak {gauge} after the run (max during it {max})"),
            figure: last.gauges[i],
            unit: "",
            peer: None,
            target: "bounded by config".into(),
            met: None,
        });
    }
    rows
}

fn dir_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_bytes(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The soak stations: ids and passwords.
/// The demo's `[push]` line for its stand-in push service on this machine.
pub(crate) const PUSH_OVER_HTTP: &str = "allow_http_loopback = true";

fn stations() -> Vec<(String, String)> {
    (1..=SOAK_STATIONS).map(|i| (format!("SOAK{i:04}"), format!("soak-station-{i:04}"))).collect()
}

/// A copy of `config/` with the soak's stations and flood sensor, its receiver for webhooks and CBCs, and the
/// InfluxDB sink to VictoriaMetrics. Returns the main file.
pub(crate) fn soak_config(
    dir: &Path,
    receiver: SocketAddr,
    vm: Option<SocketAddr>,
    cache_mib: Option<u32>,
) -> anyhow::Result<PathBuf> {
    server::copy_config(dir)?;
    let mut sensors = std::fs::read_to_string(dir.join("sensors.toml"))?;
    let mut devices = std::fs::read_to_string(dir.join("devices.toml"))?;
    for (i, (id, password)) in stations().iter().enumerate() {
        // A 10 × 10 grid over Taipei, away from every zone of the demo.
        let (lat, lon) = (25.00 + (i / 10) as f64 * 0.01, 121.45 + (i % 10) as f64 * 0.01);
        write!(
            sensors,
            "\n[[sensor]]\nid = \"{id}\"\nkind = \"soil_moisture\"\nlat = {lat:.4}\nlon = {lon:.4}\ninterval_s = 60\n\
             agency = \"SOAK\"\nmetrics = [\"soil_moisture_pct\", \"battery_v\"]\n"
        )?;
        write!(devices, "\n[[device]]\nid = \"{id}\"\npassword = \"{password}\"\n")?;
    }
    let (id, lat, lon) = FLOOD_SENSOR;
    write!(
        sensors,
        "\n[[sensor]]\nid = \"{id}\"\nkind = \"road_flood\"\nlat = {lat}\nlon = {lon}\ninterval_s = 3600\n\
         agency = \"SOAK\"\nmetrics = [\"flood_depth_cm\", \"battery_v\"]\nzone = \"fwy1-changhua\"\n"
    )?;
    write!(devices, "\n[[device]]\nid = \"{id}\"\npassword = \"{FLOOD_PASSWORD}\"\n")?;
    std::fs::write(dir.join("sensors.toml"), sensors)?;
    std::fs::write(dir.join("devices.toml"), devices)?;
    server::hash_device_passwords(dir)?;
    server::secrets_to_env(dir)?;
    server::drop_vd_feeds(dir)?;

    let path = dir.join("dissemination.toml");
    let url = |p: &str| format!("\"http://{receiver}{p}\"");
    let text = std::fs::read_to_string(&path)?
        .replace("\"{public_url}/demo/webhook\"", &url("/hook/media"))
        .replace("\"{public_url}/demo/webhook-drills\"", &url("/hook/drills"))
        .replace("\"{public_url}/demo/cbc/cht\"", &url("/cbc/cht"))
        .replace("\"{public_url}/demo/cbc/twm\"", &url("/cbc/twm"))
        .replace("\"{public_url}/demo/cbc/fet\"", &url("/cbc/fet"));
    anyhow::ensure!(!text.contains("{public_url}/demo"), "a demo receiver left in {}", path.display());
    // Web Push in the clear (the demo's stand-in push service) is refused outside a drill; the soak pushes to no one.
    anyhow::ensure!(text.contains(PUSH_OVER_HTTP), "`{PUSH_OVER_HTTP}` not in {}", path.display());
    let text = text.replace(PUSH_OVER_HTTP, "allow_http_loopback = false");
    std::fs::write(&path, text)?;

    let main = dir.join("disaster-cloud.toml");
    let mut text = std::fs::read_to_string(&main)?;
    if let Some(mib) = cache_mib {
        text = text.replace("[store]\n", &format!("[store]\ncache_mib = {mib}\n"));
    }
    if let Some(vm) = vm {
        // VictoriaMetrics needs no token (and `serve` refuses one written in the file).
        write!(text, "\n[influx]\nurl = \"http://{vm}\"\norg = \"soak\"\nbucket = \"readings\"\n")?;
    }
    std::fs::write(&main, text)?;
    Ok(main)
}

/// Answers webhooks and CBC requests (200), counting them.
async fn start_receiver(tally: Arc<Tally>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, Arc::clone(&tally)));
        }
    });
    Ok(addr)
}

/// HTTP/1.1 with keep-alive: each request is a head and Content-Length bytes of body.
async fn answer(mut stream: tokio::net::TcpStream, tally: Arc<Tally>) {
    let mut buf = Vec::new();
    while let Some(len) = next_request(&mut stream, &mut buf).await {
        let counter = if buf.starts_with(b"POST /cbc/") { &tally.cbc_requests } else { &tally.webhooks };
        counter.fetch_add(1, Ordering::Relaxed);
        buf.drain(..len);
        if stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await.is_err() {
            return;
        }
    }
}

/// The demo typhoon, slowed to end just before the soak does.
async fn typhoon(mqtt: SocketAddr, duration: Duration, config_dir: PathBuf) {
    let text = include_str!("../../config/scenarios/typhoon.toml");
    let read = |name: &str| std::fs::read_to_string(config_dir.join(name)).unwrap_or_default();
    let (Ok(scenario), Ok(fleet)) =
        (Scenario::from_toml(text, "typhoon.toml"), Fleet::from_files(&read("sensors.toml"), &read("devices.toml")))
    else {
        println!("soak: the typhoon scenario does not load; running without it");
        return;
    };
    let wall = duration.saturating_sub(Duration::from_secs(30)).max(Duration::from_secs(10));
    let opts = RunOptions {
        host: mqtt.ip().to_string(),
        port: mqtt.port(),
        quiet: true,
        compression: scenario.span.as_secs_f64() / wall.as_secs_f64(),
        // Stamped with the wall clock, as the demo plays it: scenario-time stamps reach back a whole day, and the
        // server keeps what readings that old raise for operators only (alerting.stale_after_s).
        wall_clock: true,
        ..RunOptions::for_scenario(&scenario)
    };
    match run_scenario(&fleet, &scenario, &opts).await {
        Ok(summary) => println!("soak: typhoon finished: {} acked of {} planned", summary.acked, summary.planned),
        Err(e) => println!("soak: typhoon failed: {e}"),
    }
}

/// Floods and drains Freeway 1 every minute; every fifth flood (the 2nd, 7th, …) is cancelled by the operator before
/// it drains.
async fn flood_cycles(mqtt: SocketAddr, http: SocketAddr, end: Instant, tally: Arc<Tally>) {
    let (id, ..) = FLOOD_SENSOR;
    let mut opts = rumqttc::MqttOptions::new(id, mqtt.ip().to_string(), mqtt.port());
    opts.set_credentials(id, FLOOD_PASSWORD);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 100);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    let publish = |depth: u32| {
        let client = client.clone();
        async move {
            let payload = format!(r#"{{"ts":{},"values":{{"flood_depth_cm":{depth}}}}}"#, now_ms());
            let _ = client.publish(format!("sensors/{id}/readings"), rumqttc::QoS::AtLeastOnce, false, payload).await;
        }
    };
    let mut cycle = 0u64;
    while Instant::now() + Duration::from_secs(35) < end {
        cycle += 1;
        publish(45).await;
        tally.floods.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(30)).await;
        if cycle % 5 == 2 {
            cancel_active(http, "road_flood", &tally);
        }
        publish(0).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
}

/// Cancels the active alerts of one event type over the operator API.
fn cancel_active(http: SocketAddr, event: &str, tally: &Tally) {
    let Some(body) = crate::server::get(http, "/api/v1/alerts") else { return };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&body) else { return };
    let list = value["alerts"].as_array().or_else(|| value.as_array()).cloned().unwrap_or_default();
    for alert in list {
        let active = alert["state"] == "raised" || alert["state"] == "updated";
        if active && alert["event"] == event {
            if let Some(id) = alert["id"].as_str() {
                if matches!(request(http, "POST", &format!("/api/v1/alerts/{id}/cancel")), Some((200, _))) {
                    tally.cancels.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// One operator on the live map for the whole soak, approving what the approval gate holds; reconnects if dropped.
async fn operator(http: SocketAddr, end: Instant, tally: Arc<Tally>) {
    const GATED: [&str; 3] = ["debris_flow", "landslide", "hazmat_geofence"];
    while Instant::now() < end {
        let Ok(mut request) = format!("ws://{http}/ws/operator").into_client_request() else { return };
        let Ok(auth) = format!("Bearer {TOKEN}").parse() else { return };
        request.headers_mut().insert("Authorization", auth);
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(request).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(text) = msg else { continue };
            tally.operator_frames.fetch_add(1, Ordering::Relaxed);
            let Ok(frame) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
            let gated = GATED.iter().any(|e| frame["alert"]["event"] == *e || frame["event"] == *e);
            let fresh = ["raised", "updated"].iter().any(|s| frame["alert"]["state"] == *s || frame["state"] == *s);
            if frame["type"] == "alert" && gated && fresh {
                let id = frame["alert"]["id"].as_str().or(frame["id"].as_str()).unwrap_or_default().to_string();
                let command = serde_json::json!({"type": "approve", "id": id}).to_string();
                if ws.send(Message::Text(command.into())).await.is_ok() {
                    tally.approvals.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// One citizen's place in the crowd: connect, subscribe, read for 10–120 s, leave; again until the end.
async fn citizen_slot(http: SocketAddr, slot: usize, end: Instant, tally: Arc<Tally>) {
    let mut seed = (slot as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = move || {
        // xorshift64: enough to spread lifetimes and places.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // Connections ramp up over the first minute instead of all at once.
    tokio::time::sleep(Duration::from_millis(next() % 60_000)).await;
    let url = format!("ws://{http}/ws/citizen");
    while Instant::now() < end {
        let lifetime = Duration::from_secs(10 + next() % 111);
        let (lat, lon) = PLACES[(next() % PLACES.len() as u64) as usize];
        let leave_rudely = next() % 10 < 3;
        let Ok(Ok((mut ws, _))) =
            tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(url.as_str())).await
        else {
            tally.citizen_failures.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        tally.citizen_sessions.fetch_add(1, Ordering::Relaxed);
        let subscribe = format!(r#"{{"type":"subscribe","places":[{{"lat":{lat},"lon":{lon}}}],"lang":"zh-TW"}}"#);
        if ws.send(Message::Text(subscribe.into())).await.is_err() {
            continue;
        }
        let leave_at = tokio::time::Instant::now() + lifetime.min(end.saturating_duration_since(Instant::now()));
        loop {
            match tokio::time::timeout_at(leave_at, ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) if t.contains("\"type\":\"alert\"") => {
                    tally.citizen_alert_frames.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(Ok(_))) => {}
                Ok(_) => break,
                Err(_) => {
                    if !leave_rudely {
                        let _ = ws.close(None).await;
                    }
                    break;
                }
            }
        }
    }
}

/// VictoriaMetrics (Debian `victoria-metrics`) for the InfluxDB sink; absent, the soak fails rather than skip it.
struct VictoriaMetrics {
    child: Child,
    addr: SocketAddr,
}

impl VictoriaMetrics {
    fn start(dir: &Path) -> anyhow::Result<VictoriaMetrics> {
        let addr = free_addr();
        let child = Command::new("victoria-metrics")
            .arg(format!("-storageDataPath={}", dir.display()))
            .arg(format!("-httpListenAddr={addr}"))
            .arg("-retentionPeriod=1d")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("victoria-metrics: {e} (Debian package victoria-metrics)"))?;
        let vm = VictoriaMetrics { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while raw_get(addr, "/health").is_none() {
            anyhow::ensure!(Instant::now() < deadline, "victoria-metrics did not become healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(vm)
    }

    /// Points stored, from VictoriaMetrics' own count of rows.
    fn count_readings(&self) -> Option<f64> {
        let _ = raw_get(self.addr, "/internal/force_flush");
        let body = raw_get(self.addr, "/metrics")?;
        body.lines()
            .filter(|l| l.starts_with("vm_rows{") && l.contains("storage/"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .reduce(|a, b| a + b)
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn raw_get(addr: SocketAddr, path: &str) -> Option<String> {
    crate::server::request(addr, "GET", path).and_then(|(status, body)| (status == 200).then_some(body))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::server::SECRETS_ENV;

    /// Whatever `serve` refuses in a configuration before it binds or writes anything (`deployment::check_serve`,
    /// as `src/main.rs` calls it), with the environment `Server::launch` gives it.
    pub(crate) fn serve_refusals(main: &Path) -> Result<(), String> {
        let files = disaster_cloud::config::ConfigFiles::from_path(main).map_err(|e| e.to_string())?;
        let env = |name: &str| SECRETS_ENV.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        // `Server::launch` listens on a free port of its own, never the receiver's.
        let http_listen = SocketAddr::from(([127, 0, 0, 1], 18080));
        disaster_cloud::deployment::check_serve(&files, &main.display().to_string(), http_listen, &env)
            .map_err(|e| e.to_string())
    }

    /// The soak ran into "server did not become ready" after three minutes: `serve` refused the demo's Web Push in
    /// the clear (`[push] allow_http_loopback`), which its copy of the config kept.
    #[test]
    fn serve_takes_the_soak_config() {
        let dir = tempfile::tempdir().unwrap();
        let receiver = SocketAddr::from(([127, 0, 0, 1], 9));
        let vm = SocketAddr::from(([127, 0, 0, 1], 8428));
        let main = soak_config(dir.path(), receiver, Some(vm), Some(64)).unwrap();
        serve_refusals(&main).unwrap();
    }
}
