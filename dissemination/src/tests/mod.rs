//! Dissemination against real HTTP receivers on 127.0.0.1 (axum), and the independent checkers: an HMAC
//! implementation other than ours (`hmac` + `sha2`), `xmllint` with the OASIS CAP XSD, `tshark` for pages and PDUs.
//!
//! - `webhooks`: signatures, down-then-up, dead letters and replay, Actual-only, hanging receivers, approval gate,
//!   operator API validation.
//! - `bounded`: memory bounded over hundreds of alert versions, the CAP archive, refused archive writes.
//! - `restart`: dropped with deliveries pending, restarted on the same `data_dir`.
//! - `cbc`: envelopes, serial numbers, stop on cancel, too-long texts, tshark on pages and the PDU.
//! - `cap_xsd`: every CAP message made validates against the XSD; the feed and its ETag.
//! - `config_file`: the shipped `config/dissemination.toml` and config errors.
//! - `push`: Web Push against a Python push service (`http_ece`, `cryptography`): targeting, policy, 410, 429, restart.
//! - `timing`: 60 subscribers p99, county-sized broadcast encode + target (figures printed).

mod bounded;
mod cap_xsd;
mod cbc;
mod config_file;
mod geofence;
mod push;
mod restart;
mod timing;
mod tools;
mod webhooks;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use geo_index::{GeoIndex, LoadPolicy, Resolution};

use super::*;
use encoders::cap::{Certainty, Severity, Templates, Urgency};

pub(crate) const TEMPLATES_TOML: &str = include_str!("../../../config/cap_templates.toml");
const ZONES: &str = include_str!("../../../config/zones.geojson");
const SITES: &str = include_str!("../../../config/cell_sites.csv");
pub(crate) const SHIPPED_CONFIG: &str = include_str!("../../../config/dissemination.toml");

pub(crate) fn templates() -> Templates {
    Templates::from_toml_str(TEMPLATES_TOML).expect("shipped templates load")
}

/// The demo zones and cell sites, loaded once.
pub(crate) fn geo() -> Arc<GeoIndex> {
    static GEO: std::sync::OnceLock<Arc<GeoIndex>> = std::sync::OnceLock::new();
    GEO.get_or_init(|| {
        let mut g = GeoIndex::new(Resolution::Nine);
        g.load_zones(ZONES, LoadPolicy::StopOnFirst).expect("zones load");
        g.load_cell_sites(SITES, LoadPolicy::StopOnFirst).expect("sites load");
        Arc::new(g)
    })
    .clone()
}

pub(crate) const BASE_URL: &str = "https://alerts.example.tw";
pub(crate) const SECRET: &str = "test-secret-0123456789abcdef";

/// A debris-flow red alert at Shenmu (Emergency class by the default policy).
pub(crate) fn view(id: &str, version: u32) -> AlertView {
    AlertView {
        id: id.into(),
        version,
        state: if version == 1 { ViewState::Raised } else { ViewState::Updated },
        mode: ViewMode::Actual,
        event: "debris_flow".into(),
        severity: Severity::Extreme,
        urgency: Urgency::Immediate,
        certainty: Certainty::Observed,
        level_name_zh: "紅色".into(),
        level_name_en: "red".into(),
        level_index: Some(1),
        area_id: "dfa-xinyi-shenmu".into(),
        value: 250.0 + f64::from(version),
        raised_ms: 1_764_122_400_000,
        updated_ms: 1_764_122_400_000 + i64::from(version) * 60_000,
        // Observed two minutes before it was issued (CAP `onset`).
        observed_ms: Some(1_764_122_400_000 + i64::from(version) * 60_000 - 120_000),
        public_release: true,
        values: BTreeMap::from([
            ("threshold_mm".to_string(), "250".to_string()),
            (alerting::rules::TEMPLATE_VALUE.to_string(), "red".to_string()),
        ]),
        reports: Vec::new(),
        contributors: Vec::new(),
    }
}

/// A heavy-rain alert (Alert class 911/919).
pub(crate) fn rain_view(id: &str, version: u32, zone: &str) -> AlertView {
    AlertView {
        event: "heavy_rain".into(),
        severity: Severity::Severe,
        urgency: Urgency::Expected,
        certainty: Certainty::Likely,
        level_name_zh: "豪雨".into(),
        level_name_en: "torrential rain".into(),
        area_id: zone.into(),
        values: BTreeMap::from([("rain_1h_mm".to_string(), "42.5".to_string())]),
        ..view(id, version)
    }
}

/// The released CAP message of a change, as the outbox would store it (for the push payload's unit tests).
pub(crate) fn stored_message(view: &AlertView) -> messages::StoredMessage {
    let geo = geo();
    let templates = templates();
    let cfg = config("").resolve(&geo, &templates, &|_| None, BASE_URL).expect("test config resolves");
    let ctx = messages::MessageContext { cfg: &cfg, geo: &geo, templates: &templates, base_url: BASE_URL };
    let identifier = format!("{}.{}", view.id, view.version);
    messages::build_message(&ctx, view, identifier, encoders::cap::MsgType::Alert, Vec::new(), true)
        .expect("message builds")
}

pub(crate) fn ended(mut v: AlertView, state: ViewState) -> AlertView {
    v.state = state;
    v
}

/// Config with fast retries for tests. `extra` is appended (subscribers, carriers).
pub(crate) fn config(extra: &str) -> DisseminationConfig {
    let text = format!(
        r#"
sender = "alerts@disaster-cloud.example.tw"
[journal]
fsync = true
[webhooks]
request_timeout_ms = 2000
max_attempts = 50
backoff_initial_ms = 20
backoff_max_ms = 200
[cell_broadcast.retry]
request_timeout_ms = 2000
max_attempts = 50
backoff_initial_ms = 20
backoff_max_ms = 200
{extra}
"#
    );
    match DisseminationConfig::from_toml_str(&text) {
        Ok(c) => c,
        Err(e) => panic!("test config: {e}\n{text}"),
    }
}

pub(crate) fn subscriber_toml(name: &str, url: &str, extra: &str) -> String {
    format!("[[subscriber]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n{extra}\n")
}

pub(crate) fn carriers_toml(base: &str) -> String {
    [
        ("Chunghwa Telecom", "92", "cht"),
        ("Taiwan Mobile", "97", "twm"),
        ("FarEasTone", "01", "fet"),
    ]
    .iter()
    .map(|(name, mnc, path)| {
        format!(
            "[[carrier]]\nname = \"{name}\"\nmcc = \"466\"\nmnc = \"{mnc}\"\ncbc_url = \"{base}/cbc/{path}\"\ntoken = \"token-{path}\"\n"
        )
    })
    .collect()
}

pub(crate) fn start(config: DisseminationConfig, dir: &Path) -> Dissemination {
    start_with(config, dir, templates())
}

pub(crate) fn start_with(config: DisseminationConfig, dir: &Path, templates: Templates) -> Dissemination {
    match Dissemination::start(config, dir, geo(), templates, BASE_URL.into()) {
        Ok(d) => d,
        Err(e) => panic!("dissemination starts: {e}"),
    }
}

/// What a receiver does with a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Behaviour {
    Answer(u16),
    /// Accept and never answer.
    Hang,
}

/// One request a receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// What the receiver answered.
    pub status: Option<u16>,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn delivery(&self) -> u64 {
        self.header("X-DC-Delivery").parse().unwrap_or(0)
    }
}

#[derive(Clone)]
struct ReceiverState {
    got: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

/// An HTTP receiver on 127.0.0.1 recording every POST.
pub(crate) struct Receiver {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    task: tokio::task::JoinHandle<()>,
}

async fn record(State(s): State<ReceiverState>, uri: Uri, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let behaviour = *s.behaviour.lock().unwrap();
    let status = match behaviour {
        Behaviour::Answer(n) => Some(n),
        Behaviour::Hang => None,
    };
    s.got.lock().unwrap().push(Received { path: uri.path().to_string(), headers, body, at: Instant::now(), status });
    match status {
        Some(n) => (StatusCode::from_u16(n).unwrap_or(StatusCode::OK), "ack").into_response(),
        None => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        Receiver::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind receiver");
        let addr = listener.local_addr().unwrap();
        let state = ReceiverState {
            got: Arc::new(Mutex::new(Vec::new())),
            behaviour: Arc::new(Mutex::new(Behaviour::Answer(200))),
        };
        let app = axum::Router::new().fallback(axum::routing::post(record)).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, got: state.got, behaviour: state.behaviour, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set(&self, b: Behaviour) {
        *self.behaviour.lock().unwrap() = b;
    }

    pub fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Requests answered 2xx on `path`, in arrival order.
    pub fn delivered(&self, path: &str) -> Vec<Received> {
        self.all().into_iter().filter(|r| r.path == path && r.status.is_some_and(|s| (200..300).contains(&s))).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A free port on 127.0.0.1 with nothing listening (for "receiver down").
pub(crate) fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Waits until every subscriber's queue is empty: each delivery planned so far has been answered (`alert_changed` and
/// `start` plan theirs before they return), so what a receiver has now is all it will get of them. Checks that
/// something was *not* sent wait on this, not on a fixed time.
pub(crate) async fn drained(d: &Dissemination) {
    let empty = || d.subscribers().iter().all(|s| s.queued == 0);
    wait_for(Duration::from_secs(30), "every subscriber's queue empty", empty).await;
}

/// Polls `cond` until true or panics with `what` after `limit`.
pub(crate) async fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// CAP identifiers of the deliveries, first occurrence of each delivery id only (delivery is at-least-once).
pub(crate) fn identifiers(got: &[Received]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    got.iter().filter(|r| seen.insert(r.delivery())).map(|r| r.header("X-DC-Message").to_string()).collect()
}
