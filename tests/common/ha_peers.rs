//! The peers the HA tests (`tests/ha*.rs`) put around a cluster: field devices at QoS 1 that fail over between front
//! doors (the simulator's own delivery code), citizens' apps on the fan-out nodes, and the receiver standing in for a
//! webhook subscriber and the carriers' CBCs. Plus what those tests read off the NATS cluster (a stream's leader, the
//! readings stream's contents, the deliveries ledger).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gateway_firmware_sim::courier::{Courier, CourierConfig, Delivery, Live, Parcel};
use gateway_firmware_sim::link::LinkConfig;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::{device_password, SHENMU};

/// A rain reading set (`rain_mm` in the period it covers), stamped `ts`.
pub fn rain(mm: f64, ts: i64) -> String {
    format!(r#"{{"ts":{ts},"values":{{"rain_mm":{mm}}}}}"#)
}

// ---------------------------------------------------------------------------------------------------------------
// Field devices

/// A field gateway at QoS 1 provisioned with the addresses of several front doors: the simulator's firmware delivery
/// (`gateway_firmware_sim::courier`: store-and-forward buffer, reconnect with backoff, resend of what was not
/// acknowledged, failover to the next front door when a connection fails or closes) running in its own task.
pub struct FieldDevice {
    pub id: String,
    to_courier: mpsc::UnboundedSender<Parcel>,
    live: Arc<Live>,
    /// The index in `front_doors` of the one the firmware is connected (or connecting) to.
    front_door: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Delivery>,
}

impl FieldDevice {
    /// Connects to `front_doors[0]` first, then round the list whenever a connection fails or closes.
    pub fn start(id: &str, front_doors: &[SocketAddr]) -> FieldDevice {
        let (first, rest) = front_doors.split_first().expect("at least one front door");
        let config = CourierConfig {
            link: LinkConfig {
                host: first.ip().to_string(),
                port: first.port(),
                client_id: format!("{id}-gw"),
                credentials: Some((id.to_string(), device_password(id))),
                keep_alive: Duration::from_secs(30),
                will: None,
                // One publish in flight: what a device got a PUBACK for is exactly what it sent before.
                max_inflight: 1,
                max_packet_size: 64 * 1024,
            },
            qos: 1,
            // Nothing is dropped for room during a test's outages.
            buffer: 100_000,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(1),
            seed: 7,
            failover: rest.iter().map(|a| (a.ip().to_string(), a.port())).collect(),
        };
        let live = Arc::new(Live::default());
        let (to_courier, mut parcels) = mpsc::unbounded_channel::<Parcel>();
        let mut courier = Courier::new(config, Arc::clone(&live));
        let front_door = Arc::new(AtomicUsize::new(0));
        let current = Arc::clone(&front_door);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    parcel = parcels.recv() => match parcel {
                        Some(p) => courier.enqueue(p),
                        None => break,
                    },
                    wake = courier.wait() => courier.handle(wake),
                }
                current.store(courier.broker(), Ordering::Relaxed);
            }
            // Whatever is still unacknowledged is counted as left (`Delivery::left`).
            courier.finish().await
        });
        FieldDevice { id: id.into(), to_courier, live, front_door, task }
    }

    /// Hands a reading set (`sensors/{id}/readings`) to the firmware, which delivers it whenever it can.
    pub fn send(&self, payload: &str) {
        let parcel = Parcel {
            topic: format!("sensors/{}/readings", self.id).into(),
            payload: payload.as_bytes().into(),
            readings: 1,
            attempts: 0,
        };
        self.to_courier.send(parcel).expect("the device's task runs");
    }

    /// The index (in `start`'s list) of the front door the firmware is connected or connecting to.
    pub fn front_door(&self) -> usize {
        self.front_door.load(Ordering::Relaxed)
    }

    /// Messages a front door acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.live.acked.load(Ordering::Relaxed)
    }

    /// Waits until `n` messages are acknowledged in all; `false` when `within` passes first.
    pub async fn wait_acked(&self, n: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.acked() < n {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Sends `payload` and waits for its PUBACK (one message in flight: the next acknowledgement is its own).
    pub async fn publish(&self, payload: &str, within: Duration) -> bool {
        let n = self.acked() + 1;
        self.send(payload);
        self.wait_acked(n, within).await
    }

    /// Disconnects; what the firmware did (acknowledged, resent, failovers, left unacknowledged).
    pub async fn finish(self) -> Delivery {
        drop(self.to_courier);
        self.task.await.expect("the device's task ran")
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Citizens

/// A frame a citizen's app received, and when.
#[derive(Debug, Clone)]
pub struct Frame {
    pub at: Instant,
    pub id: String,
    pub version: u64,
    /// Which connection of the app (0, 1, …): a reconnection starts the next.
    pub session: usize,
    pub json: serde_json::Value,
}

/// A citizen's app at Shenmu: every frame it receives, over every connection it makes.
pub struct Citizen {
    pub name: &'static str,
    frames: Arc<Mutex<Vec<Frame>>>,
    sessions: usize,
    /// Whether the current connection is open.
    open: Arc<AtomicBool>,
}

impl Citizen {
    pub async fn connect(name: &'static str, http: SocketAddr) -> Citizen {
        let mut c = Citizen { name, frames: Arc::default(), sessions: 0, open: Arc::default() };
        c.reconnect(http).await;
        c
    }

    /// A (new) connection to `http`, subscribing with `last_seen` = the newest version of every id it received.
    pub async fn reconnect(&mut self, http: SocketAddr) {
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{http}/ws/citizen")).await.expect("citizen connects");
        let seen: Vec<serde_json::Value> =
            self.newest().into_iter().map(|(id, version)| serde_json::json!({"id": id, "version": version})).collect();
        let subscribe = serde_json::json!({
            "type": "subscribe", "places": [{"lat": SHENMU.0, "lon": SHENMU.1}], "lang": "en", "last_seen": seen,
        });
        ws.send(Message::Text(subscribe.to_string().into())).await.expect("subscribe sent");
        let session = self.sessions;
        self.sessions += 1;
        let (frames, open) = (Arc::clone(&self.frames), Arc::clone(&self.open));
        open.store(true, Ordering::SeqCst);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut tx = Some(tx);
        tokio::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else { continue };
                let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
                if json["type"] == "subscribed" {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                    continue;
                }
                if json["type"] != "alert" {
                    continue;
                }
                let id = json["id"].as_str().unwrap_or_default().to_string();
                let version = json["version"].as_u64().unwrap_or_default();
                frames.lock().push(Frame { at: Instant::now(), id, version, session, json });
            }
            open.store(false, Ordering::SeqCst);
        });
        tokio::time::timeout(Duration::from_secs(10), rx).await.expect("subscribed in 10 s").expect("subscribed");
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// The newest version of every id received.
    pub fn newest(&self) -> BTreeMap<String, u64> {
        let mut newest = BTreeMap::new();
        for f in self.frames.lock().iter() {
            let v = newest.entry(f.id.clone()).or_insert(0);
            *v = (*v).max(f.version);
        }
        newest
    }

    pub fn frames(&self) -> Vec<Frame> {
        self.frames.lock().clone()
    }

    /// Waits for a frame of `id` at `version` (or any id when `id` is empty, then any version ≥ `version`);
    /// returns when it arrived.
    pub async fn wait_for(&self, id: &str, version: u64, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            if let Some(f) = self.frames.lock().iter().find(|f| {
                (id.is_empty() || f.id == id) && f.version >= version && (!id.is_empty() || f.version == version)
            }) {
                return f.at;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no frame of {id} v{version} within {within:?}; got {:?}",
                self.name,
                self.frames().iter().map(|f| (&f.id, f.version, f.session)).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every frame's (id, version) at most once, over all its connections.
    pub fn assert_nothing_twice(&self) {
        let mut count: HashMap<(String, u64), usize> = HashMap::new();
        for f in self.frames() {
            *count.entry((f.id.clone(), f.version)).or_default() += 1;
        }
        let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{} received versions twice: {twice:?}", self.name);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The webhook subscribers' and carriers' stand-in

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `hook/media`, `cbc/cht`, …
    pub path: String,
    pub id: String,
    pub attempt: u32,
    /// `X-DC-Message`: the CAP identifier (`{warning}.{version}`).
    pub message: String,
    pub at: Instant,
}

#[derive(Default)]
pub struct Received {
    pub seen: Vec<Seen>,
    /// Requests being held right now (arrived, not answered).
    pub in_flight: usize,
    /// Requests answered 200.
    pub answered: usize,
}

/// A request being held; counted out when dropped.
struct Held(Arc<Mutex<Received>>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
    }
}

/// The stand-in receiver: records every request on arrival, answers 200 after `hold`.
pub async fn receiver(hold: Duration) -> (SocketAddr, Arc<Mutex<Received>>) {
    let received: Arc<Mutex<Received>> = Arc::default();
    let state = Arc::clone(&received);
    let app = axum::Router::new().route(
        "/{*path}",
        axum::routing::post(
            move |axum::extract::Path(path): axum::extract::Path<String>, headers: axum::http::HeaderMap| {
                let state = Arc::clone(&state);
                async move {
                    let header =
                        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                    let seen = Seen {
                        path,
                        id: header("X-DC-Delivery"),
                        attempt: header("X-DC-Attempt").parse().unwrap_or(0),
                        message: header("X-DC-Message"),
                        at: Instant::now(),
                    };
                    {
                        let mut r = state.lock();
                        r.seen.push(seen);
                        r.in_flight += 1;
                    }
                    // Counted out however the request ends: answered, or dropped when its sender dies mid-request.
                    let _held = Held(Arc::clone(&state));
                    tokio::time::sleep(hold).await;
                    state.lock().answered += 1;
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, received)
}

/// When the request after the first `before` ones arrived (waiting up to `within` for it).
pub async fn request_after(
    received: &Mutex<Received>,
    before: usize,
    within: Duration,
    log: impl Fn() -> String,
) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = received.lock().seen.get(before) {
            return s.at;
        }
        assert!(Instant::now() < deadline, "no request after the first {before} within {within:?}: {}", log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Points the subscribers and carriers of the `dissemination.toml` beside `config` at the receiver; the media
/// subscriber takes every mode; retries start after 200 ms.
pub fn deliver_to(config: &std::path::Path, receiver: SocketAddr) {
    let dissemination = config.with_file_name("dissemination.toml");
    let text = std::fs::read_to_string(&dissemination)
        .unwrap()
        .replace("{public_url}/demo/webhook-drills", &format!("http://{receiver}/hook/drills"))
        .replace("{public_url}/demo/webhook", &format!("http://{receiver}/hook/media"))
        .replace("{public_url}/demo/cbc/", &format!("http://{receiver}/cbc/"))
        .replace("backoff_initial_ms = 1000", "backoff_initial_ms = 200");
    std::fs::write(&dissemination, text).unwrap();
}

/// One entry of the replicated deliveries ledger.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    pub target: String,
    pub identifier: String,
    pub attempts: u64,
    pub confirmed: bool,
}

/// The ledger as the cluster holds it: delivery id → entry.
pub async fn ledger(urls: &[String]) -> BTreeMap<String, LedgerEntry> {
    let client = cluster::test_support::admin_client(urls).await;
    let js = async_nats::jetstream::new(client);
    let Ok(store) = js.get_key_value(cluster::deliveries::BUCKET).await else { return BTreeMap::new() };
    let mut keys = store.keys().await.expect("keys");
    let mut out = BTreeMap::new();
    while let Some(Ok(key)) = keys.next().await {
        if let Ok(Some(value)) = store.get(&key).await {
            let v: serde_json::Value = serde_json::from_slice(&value).expect("a ledger entry is JSON");
            let entry = LedgerEntry {
                target: v["target"].as_str().unwrap_or_default().into(),
                identifier: v["identifier"].as_str().unwrap_or_default().into(),
                attempts: v["attempts"].as_u64().unwrap_or_default(),
                confirmed: v["confirmed"].as_bool().unwrap_or_default(),
            };
            out.insert(key, entry);
        }
    }
    out
}

/// Waits until the ledger has entries, every one confirmed, no request is held at the receiver, and that stays so
/// for 2 s; returns the ledger.
pub async fn settled_ledger(
    urls: &[String],
    received: &Mutex<Received>,
    within: Duration,
    log: impl Fn() -> String,
) -> BTreeMap<String, LedgerEntry> {
    let deadline = Instant::now() + within;
    loop {
        let entries = ledger(urls).await;
        let in_flight = received.lock().in_flight;
        let unconfirmed = entries.values().filter(|e| !e.confirmed).count();
        if !entries.is_empty() && unconfirmed == 0 && in_flight == 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let again = ledger(urls).await;
            if again.len() == entries.len() && again.values().all(|e| e.confirmed) {
                return again;
            }
            continue;
        }
        assert!(
            Instant::now() < deadline,
            "{unconfirmed} of {} deliveries unconfirmed after {within:?}: {entries:#?}\n{}",
            entries.len(),
            log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every delivery the ledger recorded reached the receiver; every request carried a recorded id; an id seen twice
/// only as a retry (`X-DC-Attempt` above every earlier copy's). Returns the requests per id and the retries.
pub fn assert_deliveries_once_or_retried<'a>(
    seen: &'a [Seen],
    entries: &BTreeMap<String, LedgerEntry>,
) -> (BTreeMap<&'a str, Vec<&'a Seen>>, usize) {
    let ids: BTreeSet<&str> = seen.iter().map(|s| s.id.as_str()).collect();
    for (key, e) in entries {
        assert!(ids.contains(key.as_str()), "delivery {key} ({e:?}) never arrived");
    }
    let mut per_id: BTreeMap<&str, Vec<&Seen>> = BTreeMap::new();
    for s in seen {
        assert!(entries.contains_key(&s.id), "{s:?}: an id the ledger never recorded (not a cluster-wide id)");
        per_id.entry(&s.id).or_default().push(s);
    }
    let mut retries = 0;
    for (id, copies) in &per_id {
        for pair in copies.windows(2) {
            assert!(pair[1].attempt > pair[0].attempt, "{id} seen again without being a retry: {copies:#?}");
            retries += 1;
        }
        assert!(copies[0].attempt >= 1, "{id}: no attempt number: {copies:#?}");
    }
    (per_id, retries)
}

/// The warning and its version from a CAP identifier `{base}.{version}` (a `-n` suffix never occurs here).
pub fn warning_version(identifier: &str) -> (String, u32) {
    let (base, version) = identifier.rsplit_once('.').unwrap_or((identifier, "0"));
    (base.to_string(), version.parse().unwrap_or(0))
}

/// The warning versions each webhook subscriber (`hook/…`) got, asserting that every version from the first it got
/// to the last reached it (carriers get a broadcast only when a warning rises, not every version): (path, warning)
/// → versions.
pub fn webhook_versions_without_gaps(seen: &[Seen]) -> BTreeMap<(&str, String), BTreeSet<u32>> {
    let mut versions: BTreeMap<(&str, String), BTreeSet<u32>> = BTreeMap::new();
    for s in seen.iter().filter(|s| s.path.starts_with("hook/")) {
        let (warning, version) = warning_version(&s.message);
        versions.entry((s.path.as_str(), warning)).or_default().insert(version);
    }
    for ((path, warning), got) in &versions {
        let (first, last) = (*got.first().unwrap(), *got.last().unwrap());
        assert_eq!(got.len() as u32, last - first + 1, "{path} missed versions of {warning}: got {got:?}");
    }
    versions
}

// ---------------------------------------------------------------------------------------------------------------
// Reading the cluster

/// The node leading `stream` now.
pub async fn stream_leader(urls: &[String], stream: &str) -> String {
    let client = cluster::test_support::admin_client(urls).await;
    let js = async_nats::jetstream::new(client);
    for _ in 0..100 {
        if let Ok(mut s) = js.get_stream(stream).await {
            if let Some(leader) = s.info().await.ok().and_then(|i| i.cluster.clone()).and_then(|c| c.leader) {
                return leader;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the stream {stream} has no leader");
}

/// Every message of the readings stream: (subject, publish id) → how many copies.
pub async fn readings_in_stream(urls: &[String]) -> HashMap<(String, String), usize> {
    let client = cluster::test_support::admin_client(urls).await;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(cluster::readings::STREAM).await.expect("the readings stream");
    let last = stream.info().await.expect("info").state.last_sequence;
    let mut contents = HashMap::new();
    for seq in 1..=last {
        // Right after an election a read can fail; every sequence must be read (a skipped one would hide a copy).
        let mut tries = 0;
        let m = loop {
            match stream.get_raw_message(seq).await {
                Ok(m) => break m,
                Err(e) if tries < 100 => {
                    tries += 1;
                    if tries == 1 {
                        eprintln!("reading sequence {seq}: {e}; retrying");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("sequence {seq} unreadable: {e}"),
            }
        };
        let id = m.headers.get("Nats-Msg-Id").map(|v| v.to_string()).unwrap_or_default();
        *contents.entry((m.subject.to_string(), id)).or_insert(0) += 1;
    }
    contents
}

/// Every public warning version in the alerts stream (the body of each signed envelope, whoever signed it): id →
/// versions in stream order.
pub async fn warnings_in_stream(urls: &[String]) -> BTreeMap<String, Vec<u64>> {
    let client = cluster::test_support::admin_client(urls).await;
    let js = async_nats::jetstream::new(client);
    let mut warnings: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let Ok(mut stream) = js.get_stream(cluster::alerts::STREAM).await else { return warnings };
    let state = stream.info().await.expect("info").state.clone();
    for seq in state.first_sequence.max(1)..=state.last_sequence {
        let Ok(m) = stream.get_raw_message(seq).await else { continue };
        let envelope: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
        let body = &envelope["alert"];
        let Some((_, id)) = cluster::alerts::parse_subject(&m.subject) else { continue };
        if body["type"] == "public_warning" && body["public"] == true {
            let id = id.to_string();
            warnings.entry(id).or_default().push(body["frame"]["version"].as_u64().unwrap_or_default());
        }
    }
    warnings
}

/// The readings stream's key of a reading set `payload` that `device` (in `region`) published.
pub fn reading_key(device: &str, region: &str, payload: &str) -> (String, String) {
    let topic = format!("sensors/{device}/readings");
    (
        cluster::readings::subject(region, device),
        cluster::readings::publish_id(&topic, payload.as_bytes(), region, None),
    )
}
