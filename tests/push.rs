//! Web Push end to end against the demo binary: an independent push service and browser in Python
//! (`tests/fixtures/push_service.py`: PyPI `http_ece` + `cryptography`) fetches the served VAPID key, registers its
//! subscriptions through the real HTTP API, and decrypts and checks what the server pushes when a rain reading raises
//! an alert; bad subscribe bodies are refused over HTTP with their reasons and counters; then the citizens' app in
//! headless Chromium (`tests/playwright/citizen_push.py`, PyPI `playwright` on Debian `chromium`) shows that very
//! payload as a notification — rung for a place inside the alert's geofence, quiet outside it, rung when no place is
//! known — and opens the alert on a tap, with the app open and with it closed.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use common::{http_get, http_request_with, now_ms, raise_heavy_rain, Server};
use serde_json::{json, Value};

fn venv_python() -> String {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
    assert!(
        std::path::Path::new(python).exists(),
        "no .venv with http_ece, cryptography, playwright: run scripts/test"
    );
    python.to_string()
}

struct PushService {
    child: Child,
    lines: mpsc::Receiver<Value>,
    listing: Value,
}

impl PushService {
    fn start(spec: Value) -> PushService {
        let mut child = Command::new(venv_python())
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/push_service.py"))
            .arg(spec.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python push service starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let listing = lines.recv_timeout(Duration::from_secs(60)).expect("push service announces itself");
        PushService { child, lines, listing }
    }

    fn next(&self, timeout: Duration) -> Option<Value> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        let errors = line["errors"].as_array().cloned().unwrap_or_default();
        assert!(errors.is_empty(), "the push service found problems: {errors:?}\n{line}");
        Some(line)
    }
}

impl Drop for PushService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn post_json(server: &Server, body: &str) -> (u16, Value) {
    let headers = [("Content-Type", "application/json".to_string())];
    let (status, text) = http_request_with(server.http, "POST", "/api/v1/push/subscriptions", &headers, Some(body))
        .expect("subscribe answers");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_app_gets_the_alert_by_web_push_and_shows_it() {
    let server = Server::start();
    let base = format!("http://{}", server.http);
    let service = PushService::start(json!({
        "server": base,
        "subscriptions": [
            { "name": "near", "places": [{ "lat": 23.5185, "lon": 120.928 }], "lang": "en", "client_id": "c-near" },
            { "name": "far", "places": [{ "lat": 23.1, "lon": 120.62 }], "lang": "zh-TW" },
        ],
    }));
    for name in ["near", "far"] {
        let r = &service.listing["registered"][name];
        assert_eq!(r["status"], 201, "{name} registers through the HTTP API: {r}");
    }

    raise_heavy_rain(&server, 120.0, now_ms()).await;
    // 120 mm in an hour raises heavy rain and, in the debris-flow area, the debris-flow warning: a push for each.
    let first = service.next(Duration::from_secs(60)).expect("a push for the alerts");
    let mut got: Vec<Value> = vec![first];
    got.extend(std::iter::from_fn(|| service.next(Duration::from_secs(3))));
    assert!(
        got.iter().all(|l| l["sub"] == "near"),
        "only the subscription whose place is in the alerts' zones: {got:?}"
    );
    let line = got.iter().find(|l| l["payload"]["event"] == "heavy_rain").expect("the heavy-rain push").clone();
    let payload = line["payload"].clone();
    assert_eq!(payload["is_real"], true);
    assert_eq!(payload["lang"], "en");
    assert_eq!(payload["notify"], true);
    assert_eq!(payload["version"], 1);
    assert!(!payload["title"].as_str().unwrap().is_empty());
    assert_eq!(line["urgency"], "high");
    assert_eq!(line["claims"]["sub"], "mailto:alerts@disaster-cloud.example.tw");

    // Bad bodies over HTTP: each refused with its reason, and counted.
    let endpoint = service.listing["subscriptions"]["near"]["endpoint"].as_str().unwrap().to_string();
    let keys = service.listing["subscriptions"]["near"]["keys"].clone();
    let body = |endpoint: &str, keys: &Value, client: &str| {
        json!({ "endpoint": endpoint, "keys": keys, "places": [{ "lat": 23.5, "lon": 120.9 }], "lang": "en", "client_id": client })
            .to_string()
    };
    let short_auth = json!({ "p256dh": keys["p256dh"], "auth": "AAAAAAAAAAAAAA" });
    let bad_point = json!({ "p256dh": "BAAA", "auth": keys["auth"] });
    let cases = [
        ("not json".to_string(), 400, "malformed"),
        (body("http://push.example.com/x", &keys, "c-bad"), 400, "bad_endpoint"),
        (body("https://push.attacker.example/x", &keys, "c-bad"), 400, "bad_endpoint"),
        (body(&endpoint, &bad_point, "c-bad"), 400, "bad_key"),
        (body(&endpoint, &short_auth, "c-bad"), 400, "bad_auth"),
        (format!("{{\"endpoint\":\"{}\"}}", "x".repeat(5000)), 413, "too_large"),
    ];
    for (body, status, reason) in &cases {
        let (got_status, answer) = post_json(&server, body);
        assert_eq!((got_status, answer["error"].as_str()), (*status, Some(*reason)), "{answer}");
        assert!(!answer["message"].as_str().unwrap_or("").is_empty(), "a clear message: {answer}");
    }
    // Per client (demo: 5): the sixth endpoint of one client is refused.
    for i in 0..6 {
        let (status, answer) = post_json(&server, &body(&format!("http://127.0.0.1:9/limit/{i}"), &keys, "c-many"));
        let expected = if i < 5 { 201 } else { 429 };
        assert_eq!(status, expected, "subscription {i}: {answer}");
        if i == 5 {
            assert_eq!(answer["error"], "client_limit");
        }
    }
    let metrics = http_get(server.http, "/metrics", None).expect("metrics").1;
    for reason in ["malformed", "bad_endpoint", "bad_key", "bad_auth", "too_large", "client_limit"] {
        let line = format!("dc_push_refused_total{{reason=\"{reason}\"}} ");
        let count = metrics.lines().find_map(|l| l.strip_prefix(&line)).and_then(|v| v.trim().parse::<u64>().ok());
        assert!(count.is_some_and(|c| c >= 1), "{reason} counted: {count:?}");
    }

    // The phones test their position against the area as cell broadcast sends it: the payload carries the very
    // Warning-Area-Coordinates octets (base64), and they decode to polygons holding the subscriber's place.
    let wac = payload["warning_area_coordinates"].as_str().expect("the payload carries the geofence");
    let octets = base64::engine::general_purpose::STANDARD.decode(wac).expect("base64");
    let read = encoders::cell_broadcast::WarningAreaCoordinates::decode(&octets).expect("IE 46 octets");
    let holds = read.areas.iter().any(|g| match g {
        encoders::cell_broadcast::Geofence::Polygon(v) => {
            let ring: Vec<(f64, f64)> = v.iter().map(|p| (p.lon, p.lat)).collect();
            geo::Contains::contains(&geo::Polygon::new(ring.into(), vec![]), &geo::Point::new(120.928, 23.5185))
        }
        encoders::cell_broadcast::Geofence::Circle { .. } => false,
    });
    assert!(holds, "the geofence holds the subscriber's place: {read:?}");

    // The citizens' app in Chromium: the payload as a notification, rung or quiet by the geofence, and a tap (app
    // open, app closed) opens the alert.
    let artifacts = concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-artifacts");
    std::fs::create_dir_all(artifacts).unwrap();
    let out = Command::new(venv_python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/playwright/citizen_push.py"))
        .arg(&base)
        .arg(payload.to_string())
        .arg(artifacts)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .output()
        .expect("playwright script runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("\"step\": \"done\""),
        "browser steps:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
