//! Failure injection, with real processes killed for real:
//! - the time-series server (VictoriaMetrics) is SIGKILLed and comes back while the binary runs;
//! - `disaster-cloud` is SIGKILLed in the middle of an alert's dissemination and restarted on the same data dir;
//! - a webhook receiver and a CBC accept the connection and never answer;
//! - the disk under the data dir fills up (a tmpfs the test mounts) and space comes back.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{device_password, free_port, http_get, http_request, now_ms, raise_heavy_rain, Device, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ------------------------------------------------------------------------------------------- HTTP receivers

/// How a receiver treats requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `200 OK` at once.
    Answer,
    /// Accept the connection, read the request, never answer (until the connection is closed by the sender).
    Hang,
}

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Got {
    /// `X-DC-Delivery`: the outbox delivery id (receivers de-duplicate on it).
    delivery: u64,
    /// `X-DC-Message`: the CAP identifier.
    message: String,
    /// `X-DC-Attempt`.
    attempt: u32,
    answered: bool,
}

/// A webhook subscriber's or a carrier CBC's HTTP endpoint on 127.0.0.1: raw HTTP/1.1 over tokio, so that "accept
/// and hang" is exactly that.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<(Mode, Vec<Got>)>>,
}

impl Receiver {
    async fn start(mode: Mode) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver =
            Receiver { addr: listener.local_addr().unwrap(), state: Arc::new(Mutex::new((mode, Vec::new()))) };
        let state = Arc::clone(&receiver.state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_connection(stream, Arc::clone(&state)));
            }
        });
        receiver
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().0 = mode;
    }

    fn got(&self) -> Vec<Got> {
        self.state.lock().unwrap().1.clone()
    }

    /// Waits until `pred` holds for what was received.
    async fn wait_for(&self, what: &str, within: Duration, pred: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.got();
            if pred(&got) {
                return got;
            }
            assert!(Instant::now() < deadline, "{what}: not within {within:?}; got {got:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn serve_connection(mut stream: tokio::net::TcpStream, state: Arc<Mutex<(Mode, Vec<Got>)>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // One request: the head, then Content-Length bytes of body.
        let (head_end, length) = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
                break (end + 4, length);
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        while buf.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        buf.drain(..head_end + length);
        let mode = {
            let mut s = state.lock().unwrap();
            let mode = s.0;
            s.1.push(Got {
                delivery: header(&head, "x-dc-delivery").and_then(|v| v.parse().ok()).unwrap_or(0),
                message: header(&head, "x-dc-message").unwrap_or_default().to_string(),
                attempt: header(&head, "x-dc-attempt").and_then(|v| v.parse().ok()).unwrap_or(0),
                answered: mode == Mode::Answer,
            });
            mode
        };
        match mode {
            Mode::Answer => {
                if stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await.is_err() {
                    return;
                }
            }
            // Hold the connection until the sender gives up (its timeout) or dies.
            Mode::Hang => {
                while matches!(stream.read(&mut chunk).await, Ok(n) if n > 0) {}
                return;
            }
        }
    }
}

/// A header's value from a lower-cased request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':'))).map(str::trim)
}

/// A copy of `config/` whose dissemination goes to these receivers: subscriber `demo-media` (public, Actual) and
/// `demo-drill-desk` (internal, the Xinyi zones), carriers Chunghwa, Taiwan Mobile and FarEasTone; the request
/// timeout of both channels is `timeout_ms`, retries come back quickly.
fn dissemination_config(name: &str, hooks: [&Receiver; 2], cbcs: [&Receiver; 3], timeout_ms: u64) -> PathBuf {
    let main = common::config_copy(name, |t| t);
    let path = main.with_file_name("dissemination.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replace("\"{public_url}/demo/webhook\"", &format!("\"{}\"", hooks[0].url("/hook")))
        .replace("\"{public_url}/demo/webhook-drills\"", &format!("\"{}\"", hooks[1].url("/drills")))
        .replace("\"{public_url}/demo/cbc/cht\"", &format!("\"{}\"", cbcs[0].url("/cbc")))
        .replace("\"{public_url}/demo/cbc/twm\"", &format!("\"{}\"", cbcs[1].url("/cbc")))
        .replace("\"{public_url}/demo/cbc/fet\"", &format!("\"{}\"", cbcs[2].url("/cbc")))
        .replace("request_timeout_ms = 5000", &format!("request_timeout_ms = {timeout_ms}"))
        .replace("request_timeout_ms = 10000", &format!("request_timeout_ms = {timeout_ms}"))
        .replace("max_attempts = 8", "max_attempts = 1000")
        .replace("max_attempts = 20", "max_attempts = 1000")
        .replace("backoff_initial_ms = 1000", "backoff_initial_ms = 200")
        .replace("backoff_initial_ms = 500", "backoff_initial_ms = 200")
        .replace("backoff_max_ms = 300000", "backoff_max_ms = 1000")
        .replace("backoff_max_ms = 30000", "backoff_max_ms = 1000");
    assert!(!text.contains("{public_url}/demo"), "a demo URL left: {text}");
    std::fs::write(&path, text).unwrap();
    main
}

/// Value of a Prometheus sample (0 when absent).
fn metric(server: &Server, sample: &str) -> f64 {
    let (_, body) = server.get("/metrics");
    body.lines().find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

/// Waits until a metric reaches `at_least`.
async fn wait_metric(server: &Server, sample: &str, at_least: f64, within: Duration) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let v = metric(server, sample);
        if v >= at_least {
            return v;
        }
        assert!(Instant::now() < deadline, "{sample} = {v}, expected ≥ {at_least} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The active alerts of the operators' snapshot: (id, version).
async fn active_alerts(server: &Server) -> Vec<(String, u64)> {
    let (status, body) = server.get("/api/v1/alerts");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let list = v["alerts"].as_array().or_else(|| v.as_array()).cloned().unwrap_or_default();
    list.iter()
        .filter(|a| a["state"] != "cleared" && a["state"] != "cancelled")
        .map(|a| (a["id"].as_str().unwrap_or_default().to_string(), a["version"].as_u64().unwrap_or(0)))
        .collect()
}

// --------------------------------------------------------------------------------------- (c) hanging receivers

#[tokio::test]
async fn hanging_receivers_time_out_and_delay_nobody_else() {
    let hang_hook = Receiver::start(Mode::Hang).await;
    let fast_hook = Receiver::start(Mode::Answer).await;
    let hang_cbc = Receiver::start(Mode::Hang).await;
    let fast_cbcs = [Receiver::start(Mode::Answer).await, Receiver::start(Mode::Answer).await];
    // A generous timeout, so that "the others got theirs while the hanging ones still hang" is a fact, not a race.
    let config =
        dissemination_config("hang", [&hang_hook, &fast_hook], [&hang_cbc, &fast_cbcs[0], &fast_cbcs[1]], 6000);
    let server = Server::serve(&config);
    raise_heavy_rain(&server, 120.0, now_ms()).await;

    // The hanging receivers got the request and hold it …
    hang_hook.wait_for("webhook request held", Duration::from_secs(20), |g| !g.is_empty()).await;
    hang_cbc.wait_for("CBC request held", Duration::from_secs(20), |g| !g.is_empty()).await;
    // … while the other subscriber and the other carriers get theirs, before any timeout has fired.
    fast_hook.wait_for("the other subscriber's delivery", Duration::from_secs(20), |g| !g.is_empty()).await;
    for cbc in &fast_cbcs {
        cbc.wait_for("the other carriers' broadcasts", Duration::from_secs(20), |g| !g.is_empty()).await;
    }
    assert_eq!(metric(&server, "dc_dissemination_timeouts_total{channel=\"webhook\"}"), 0.0);
    assert_eq!(metric(&server, "dc_dissemination_timeouts_total{channel=\"cbc\"}"), 0.0);

    // Then the timeouts fire, are counted, and the deliveries are retried (same delivery id, next attempt).
    wait_metric(&server, "dc_dissemination_timeouts_total{channel=\"webhook\"}", 1.0, Duration::from_secs(30)).await;
    wait_metric(&server, "dc_dissemination_timeouts_total{channel=\"cbc\"}", 1.0, Duration::from_secs(30)).await;
    let retried = hang_hook.wait_for("a retry", Duration::from_secs(30), |g| g.len() >= 2).await;
    assert_eq!(retried[0].delivery, retried[1].delivery, "a retry is the same delivery");
    assert!(retried[1].attempt > retried[0].attempt, "{retried:?}");
    let (_, log) = server.get("/api/v1/subscribers/demo-media/deliveries");
    assert!(log.contains("timed out"), "the delivery log says why: {log}");
    assert!(server.log().contains("delivery timed out"), "logged");

    // A receiver that comes back gets the delivery.
    hang_hook.set_mode(Mode::Answer);
    hang_cbc.set_mode(Mode::Answer);
    hang_hook.wait_for("delivered after recovery", Duration::from_secs(30), |g| g.iter().any(|x| x.answered)).await;
    hang_cbc.wait_for("broadcast after recovery", Duration::from_secs(30), |g| g.iter().any(|x| x.answered)).await;
}

// ------------------------------------------------------------------------- (b) SIGKILL during dissemination

#[tokio::test]
async fn sigkill_during_dissemination_loses_nothing_and_resends_the_same_deliveries() {
    let hooks = [Receiver::start(Mode::Hang).await, Receiver::start(Mode::Hang).await];
    let cbcs =
        [Receiver::start(Mode::Hang).await, Receiver::start(Mode::Hang).await, Receiver::start(Mode::Hang).await];
    let config = dissemination_config("sigkill", [&hooks[0], &hooks[1]], [&cbcs[0], &cbcs[1], &cbcs[2]], 30_000);
    let data_dir = std::env::temp_dir().join(format!("dc-failure-sigkill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let server = Server::serve_in(&config, &data_dir);
    raise_heavy_rain(&server, 120.0, now_ms()).await;

    // Every receiver holds its first request: the deliveries are in flight when the process dies.
    for r in hooks.iter().chain(&cbcs) {
        r.wait_for("a request in flight", Duration::from_secs(20), |g| !g.is_empty()).await;
    }
    // One reading raises an alert per hazard it crosses (heavy rain in the debris-flow area and the township).
    let before = active_alerts(&server).await;
    assert!(!before.is_empty());
    let in_flight: Vec<BTreeSet<u64>> =
        hooks.iter().chain(&cbcs).map(|r| r.got().iter().map(|g| g.delivery).collect()).collect();
    server.kill();

    for r in hooks.iter().chain(&cbcs) {
        r.set_mode(Mode::Answer);
    }
    let server = Server::serve_in(&config, &data_dir);

    // The same alerts, once each: nothing lost, nothing doubled.
    let after = active_alerts(&server).await;
    assert_eq!(after, before, "the alerts after the restart");
    // The deliveries interrupted by the kill are sent again, under the same ids, and answered.
    for (r, ids) in hooks.iter().chain(&cbcs).zip(&in_flight) {
        let got = r
            .wait_for("the interrupted delivery, resent", Duration::from_secs(30), |g| {
                ids.iter().all(|id| g.iter().any(|x| x.answered && x.delivery == *id))
            })
            .await;
        // At-least-once: a receiver may see a delivery twice, but only as the same delivery id; each CAP message
        // comes under one delivery id per receiver.
        let mut ids_per_message: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
        for g in &got {
            ids_per_message.entry(&g.message).or_default().insert(g.delivery);
        }
        assert!(ids_per_message.values().all(|ids| ids.len() == 1), "{got:?}");
    }
    // The outboxes drain: nothing pending, nothing dead.
    for name in ["demo-media", "demo-drill-desk"] {
        let (_, log) = server.get(&format!("/api/v1/subscribers/{name}/deliveries"));
        let v: serde_json::Value = serde_json::from_str(&log).unwrap();
        let deliveries = v["deliveries"].as_array().cloned().unwrap_or_default();
        assert!(!deliveries.is_empty(), "{name}: {log}");
        assert!(deliveries.iter().all(|d| d["status"] == "delivered"), "{name}: {log}");
    }
    // The alerts go on as the same alerts: more rain updates them, it never starts second ones. (500 mm alone
    // reaches 超大豪雨: the rule windows restart from the last minutely snapshot, and this process was killed before
    // its first, so the 120 mm before the kill are not in them.)
    raise_heavy_rain(&server, 500.0, now_ms()).await;
    let ids = |a: &[(String, u64)]| a.iter().map(|(id, _)| id.clone()).collect::<BTreeSet<_>>();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alerts = active_alerts(&server).await;
        assert_eq!(ids(&alerts), ids(&before), "{alerts:?}");
        if alerts.iter().any(|(_, v)| *v > 1) {
            break;
        }
        assert!(Instant::now() < deadline, "no update after the restart: {alerts:?}\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = std::fs::remove_dir_all(&data_dir);
}

// ------------------------------------------------------------------ (a) the time-series server dies and returns

struct VictoriaMetrics {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl VictoriaMetrics {
    /// Starts (or restarts) on `addr` with its data in `dir`. Deduplication per (series, timestamp) as InfluxDB
    /// does: the sink is at-least-once per request, and a server killed after storing a batch but before answering
    /// gets that batch again (`store/README.md`).
    fn start(addr: SocketAddr, dir: &Path) -> VictoriaMetrics {
        let child = Command::new("victoria-metrics")
            .arg(format!("-storageDataPath={}", dir.display()))
            .arg(format!("-httpListenAddr={addr}"))
            .arg("-retentionPeriod=100y")
            .arg("-dedup.minScrapeInterval=1ms")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("victoria-metrics runs (Debian package victoria-metrics; scripts/test installs it)");
        let vm = VictoriaMetrics { child, addr, dir: dir.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(addr, "/health", None).is_none_or(|(s, _)| s != 200) {
            assert!(Instant::now() < deadline, "victoria-metrics did not become healthy on {addr}");
            std::thread::sleep(Duration::from_millis(100));
        }
        vm
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Rows in the parts on disk (`data/small/<month>/<rows>_<blocks>_<min>_<max>_<id>`). This VictoriaMetrics
    /// answers writes and serves them from memory, and writes them to disk within ~5 s: a SIGKILL before that loses
    /// what it had acknowledged (checked by hand: killed 2 s after a write, the point was gone). The sink cannot
    /// help that, so before killing the server for real the test waits until what it acknowledged is on disk.
    fn rows_on_disk(&self) -> u64 {
        let Ok(months) = std::fs::read_dir(self.dir.join("data").join("small")) else { return 0 };
        months
            .flatten()
            .filter_map(|m| std::fs::read_dir(m.path()).ok())
            .flatten()
            .flatten()
            .filter_map(|part| part.file_name().to_str().and_then(|n| n.split('_').next()?.parse::<u64>().ok()))
            .sum()
    }

    /// Rain readings of RG0002 stored, counted through `/api/v1/export` (after a forced flush to disk).
    fn count(&self) -> usize {
        let _ = http_get(self.addr, "/internal/force_flush", None);
        let query = "/api/v1/export?match[]=%7B__name__%3D%22rain_gauge_rain_mm%22%2Csensor_id%3D%22RG0002%22%7D";
        let Some((200, body)) = http_request(self.addr, "POST", query, None, None) else { return 0 };
        body.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| v["values"].as_array().map_or(0, Vec::len))
            .sum()
    }

    async fn wait_count(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let count = self.count();
            if count == n {
                return;
            }
            assert!(count < n, "{count} readings stored, only {n} sent");
            assert!(Instant::now() < deadline, "{count} of {n} readings in victoria-metrics after {within:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Publishes `n` readings of RG0002, one second apart from `t0`, values `first..first + n`.
async fn publish_rain(server: &Server, t0: i64, first: i64, n: i64) {
    let mut device = Device::connect(server.mqtt, "RG0002", &device_password("RG0002")).await.unwrap();
    for i in first..first + n {
        let payload = format!(r#"{{"ts":{},"values":{{"rain_mm":{}}}}}"#, t0 + i * 1000, i % 7);
        device.publish("sensors/RG0002/readings", payload).await;
    }
    device.wait_acks(n as usize).await;
}

#[tokio::test]
async fn time_series_server_killed_and_back_gets_every_reading() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = std::env::temp_dir().join(format!("dc-failure-vm-{}-{}", std::process::id(), addr.port()));
    let mut vm = VictoriaMetrics::start(addr, &dir);
    let config = common::config_copy("vm-outage", |t| {
        format!(
            "{t}\n[influx]\nurl = \"http://{addr}\"\norg = \"o\"\nbucket = \"b\"\ntoken_env = \"DC_TEST_TOKEN\"\nflush_interval_ms = 200\n\
             request_timeout_ms = 2000\nretry_initial_ms = 200\nretry_max_ms = 1000\n"
        )
    });
    let server = Server::serve(&config);
    let t0 = now_ms() - 3_600_000;

    publish_rain(&server, t0, 0, 50).await;
    vm.wait_count(50, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while vm.rows_on_disk() < 50 {
        assert!(Instant::now() < deadline, "victoria-metrics did not persist its rows");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // SIGKILL: the sink's requests now fail; readings go to the spool, counted.
    vm.kill();
    publish_rain(&server, t0, 50, 100).await;
    wait_metric(&server, "dc_store_influx_spooled_total", 1.0, Duration::from_secs(30)).await;
    wait_metric(&server, "dc_store_influx_spool_bytes", 1.0, Duration::from_secs(30)).await;
    let failed = metric(&server, "dc_store_influx_failed_total{reason=\"transport\"}")
        + metric(&server, "dc_store_influx_failed_total{reason=\"timeout\"}");
    assert!(failed >= 1.0, "failures counted");

    // The server comes back on the same data: the spool drains and every reading is there exactly once.
    let vm = VictoriaMetrics::start(addr, &dir);
    vm.wait_count(150, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&server, "dc_store_influx_spool_bytes") > 0.0 {
        assert!(Instant::now() < deadline, "spool not drained");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(metric(&server, "dc_store_influx_dropped_total{reason=\"spool_full\"}"), 0.0);
    // And the readings keep flowing directly.
    publish_rain(&server, t0, 150, 10).await;
    vm.wait_count(160, Duration::from_secs(30)).await;
}

// ------------------------------------------------------------------------------------- (d) the disk fills up

/// A tmpfs of `size` mounted by the test; unmounted (lazily, so a straggling process cannot keep it) when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// `Err(why)` when this machine refuses the mount (not root, no CAP_SYS_ADMIN in a container).
    fn mount(name: &str, size: &str) -> Result<Tmpfs, String> {
        let dir = std::env::temp_dir().join(format!("dc-failure-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs { dir })
    }

    /// Writes a filler file until the file system refuses (ENOSPC); returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0x5a_u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(28), "ENOSPC expected, got {e}");
                    break;
                }
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Points of RG0002's rain history between `from` and `to` (ms).
fn history_points(server: &Server, from: i64, to: i64) -> usize {
    let (status, body) = server.get(&format!("/api/v1/sensors/RG0002/readings?metric=rain_mm&from={from}&to={to}"));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["points"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn a_full_disk_gives_clear_errors_alerts_still_flow_and_writes_resume() {
    let fs = match Tmpfs::mount("diskfull", "24m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!(
                "SKIPPED a_full_disk_gives_clear_errors_alerts_still_flow_and_writes_resume: mount refused: {why}"
            );
            return;
        }
    };
    let data_dir = fs.dir.join("data");
    let config = common::config_copy("diskfull", |t| t);
    let server = Server::serve_in(&config, &data_dir);
    let mut operator = server.operator().await;
    let mut citizen = common::Citizen::connect(&server).await;
    citizen
        .subscribe(serde_json::json!([{"lat": common::SHENMU.0, "lon": common::SHENMU.1}]), "en", serde_json::json!([]))
        .await;
    let t0 = now_ms() - 3_600_000;
    publish_rain(&server, t0, 0, 5).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while history_points(&server, t0, t0 + 3_600_000) < 5 {
        assert!(Instant::now() < deadline, "the store did not take the first readings");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The disk fills up.
    let filler = fs.fill();
    let errors_before = metric(&server, "dc_store_write_errors_total");
    publish_rain(&server, t0, 5, 5).await;
    wait_metric(&server, "dc_store_write_errors_total", errors_before + 1.0, Duration::from_secs(20)).await;
    assert!(server.log().contains("embedded store: write transaction failed"), "a clear error in the log");

    // A warning still reaches operators and citizens, although nothing can be written down.
    raise_heavy_rain(&server, 120.0, now_ms()).await;
    let raised = operator
        .alert_where(Duration::from_secs(20), |m| m["state"] == "raised")
        .await
        .unwrap_or_else(|| panic!("no alert on the operator socket with a full disk:\n{}", server.log()));
    let frame = citizen.next_json(Duration::from_secs(20)).await.expect("the alert on the citizen socket");
    assert_eq!(frame["type"], "alert", "{frame}");
    // The journal failure is counted (copied to /metrics at the next 10 s housekeeping tick) and logged.
    wait_metric(&server, "dc_alert_journal_errors", 1.0, Duration::from_secs(30)).await;
    assert!(server.log().contains("alert journal: write failed"), "{}", server.log());
    // Dissemination keeps what the disk refused in memory, in order, and says so.
    wait_metric(&server, "dc_dissemination_errors_total{kind=\"journal\"}", 1.0, Duration::from_secs(20)).await;
    assert!(metric(&server, "dc_dissemination_journal_backlog") >= 1.0);

    // Space comes back: store writes resume, and the alerts raised meanwhile become durable.
    std::fs::remove_file(&filler).unwrap();
    let written_before = metric(&server, "dc_store_readings_written_total");
    publish_rain(&server, t0, 10, 5).await;
    wait_metric(&server, "dc_store_readings_written_total", written_before + 5.0, Duration::from_secs(20)).await;
    let points = history_points(&server, t0, t0 + 3_600_000);
    assert!(points >= 10, "the readings after the recovery are stored: {points}");

    // The housekeeping tick (every 10 s) checkpoints the alerts the journal missed; dissemination writes its backlog.
    wait_metric(&server, "dc_alert_journal_recoveries", 1.0, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&server, "dc_dissemination_journal_backlog") > 0.0 {
        assert!(Instant::now() < deadline, "the dissemination backlog was not written:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // SIGKILL and restart on the same disk: everything raised while it was full is still there.
    let before = active_alerts(&server).await;
    assert!(before.iter().any(|(id, _)| *id == raised["id"]), "{before:?}");
    server.kill();
    let server = Server::serve_in(&config, &data_dir);
    let after = active_alerts(&server).await;
    assert_eq!(after, before, "the alerts raised while the disk was full survive a restart");
    let (_, log) = server.get("/api/v1/subscribers/demo-media/deliveries");
    let v: serde_json::Value = serde_json::from_str(&log).unwrap();
    let deliveries = v["deliveries"].as_array().cloned().unwrap_or_default();
    // Webhooks carry the public warning the alert opened (`W-` + its id; docs/API.md § What the public hears).
    let warning = format!("W-{}", raised["id"].as_str().unwrap());
    assert!(deliveries.iter().any(|d| d["alert_id"] == warning.as_str()), "the webhook delivery survives: {log}");
}
