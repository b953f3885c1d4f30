//! Web Push against an independent push service and browser written in Python from the RFCs
//! (`tests/fixtures/push_service.py`: PyPI `http_ece` decrypts, `cryptography` verifies the VAPID ES256 JWT). It makes
//! the subscription keys, receives our POSTs on 127.0.0.1, checks TTL, Urgency, Topic, Content-Encoding, size and one
//! record, and prints what it decrypted; these tests read that.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;

use serde_json::{json, Value};

use super::*;
use crate::channel::push::{PushLang, Refusal, SubscribeInput};

const SHENMU: (f64, f64) = (23.52, 120.93);
const JIAXIAN: (f64, f64) = (23.1, 120.62);

fn python() -> String {
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python");
    assert!(Path::new(venv).exists(), "no .venv with http_ece and cryptography: run scripts/test once");
    venv.to_string()
}

/// The Python push service, its subscriptions, and what it received.
pub(crate) struct PushService {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<Value>,
    pub listing: Value,
}

impl PushService {
    pub fn start(names: &[&str]) -> PushService {
        let spec = json!({ "subscriptions": names.iter().map(|n| json!({ "name": n })).collect::<Vec<_>>() });
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/push_service.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(spec.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python push service starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        let listing = lines.recv_timeout(Duration::from_secs(30)).expect("push service announces itself");
        PushService { child, stdin, lines, listing }
    }

    /// The subscribe body of subscription `name` with `places` and `lang`.
    pub fn input(&self, name: &str, places: &[(f64, f64)], lang: PushLang) -> SubscribeInput {
        let s = &self.listing["subscriptions"][name];
        let body = json!({
            "endpoint": s["endpoint"],
            "expirationTime": null,
            "keys": s["keys"],
            "places": places.iter().map(|(lat, lon)| json!({ "lat": lat, "lon": lon })).collect::<Vec<_>>(),
            "lang": match lang { PushLang::ZhTw => "zh-TW", PushLang::En => "en" },
            "client_id": format!("client-{name}"),
        });
        serde_json::from_value(body).expect("a subscribe body")
    }

    /// Tells the service what to answer next, per subscription (`"429:1"`: 429 with `Retry-After: 1`).
    pub fn answers(&mut self, answers: Value) {
        writeln!(self.stdin, "{}", json!({ "answers": answers })).unwrap();
        self.stdin.flush().unwrap();
        let ack = self.lines.recv_timeout(Duration::from_secs(10)).expect("ack");
        assert_eq!(ack["ack"], true, "{ack}");
    }

    pub fn expect_key(&mut self, key: &str) {
        writeln!(self.stdin, "{}", json!({ "vapid_key": key })).unwrap();
        self.stdin.flush().unwrap();
        let ack = self.lines.recv_timeout(Duration::from_secs(10)).expect("ack");
        assert_eq!(ack["ack"], true, "{ack}");
    }

    /// The next push received, within `timeout`; every check the service made must have passed.
    pub fn next(&self, timeout: Duration) -> Option<Value> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        let errors = line["errors"].as_array().cloned().unwrap_or_default();
        assert!(errors.is_empty(), "the push service found problems: {errors:?}\n{line}");
        Some(line)
    }

    /// Pushes received until none came for `quiet`.
    pub fn drain(&self, quiet: Duration) -> Vec<Value> {
        std::iter::from_fn(|| self.next(quiet)).collect()
    }
}

impl Drop for PushService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn push_config() -> DisseminationConfig {
    config(
        r#"
[push]
enabled = true
contact = "mailto:alerts@disaster-cloud.example.tw"
allow_http_loopback = true
max_per_client = 2
[push.retry]
request_timeout_ms = 2000
max_attempts = 5
backoff_initial_ms = 50
backoff_max_ms = 200
"#,
    )
}

fn started(dir: &Path, service: &mut PushService) -> Dissemination {
    let d = start(push_config(), dir);
    service.expect_key(d.push().expect("push enabled").public_key());
    d
}

#[test]
fn targeted_places_get_the_alert_decrypted_in_their_language_others_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = PushService::start(&["shenmu-zh", "shenmu-en", "jiaxian"]);
    let d = started(dir.path(), &mut service);
    let push = d.push().unwrap();
    for (name, place, lang) in [
        ("shenmu-zh", SHENMU, PushLang::ZhTw),
        ("shenmu-en", SHENMU, PushLang::En),
        ("jiaxian", JIAXIAN, PushLang::ZhTw),
    ] {
        let status = push.subscribe(&service.input(name, &[place], lang), None).expect("subscribes");
        assert!(status.zones >= 1, "{name}: {status:?}");
    }
    d.alert_changed(&view("DF1", 1));
    let got = service.drain(Duration::from_secs(3));
    assert_eq!(got.len(), 2, "only the two Shenmu subscriptions: {got:?}");
    for line in &got {
        let p = &line["payload"];
        assert_eq!(p["id"], "DF1");
        assert_eq!(p["version"], 1);
        assert_eq!(p["is_real"], true);
        assert_eq!(p["notify"], true, "a new alert rings");
        assert_eq!(line["urgency"], "high", "a real warning");
        assert!(line["ttl"].as_u64().unwrap() > 3600, "{line}");
        assert_eq!(line["records"], 1);
        assert!(line["size"].as_u64().unwrap() <= 4096);
        assert_eq!(line["claims"]["sub"], "mailto:alerts@disaster-cloud.example.tw");
        let title = p["title"].as_str().unwrap();
        match line["sub"].as_str().unwrap() {
            "shenmu-zh" => {
                assert_eq!(p["lang"], "zh-TW");
                assert!(title.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)), "a zh-TW headline: {title}");
            }
            "shenmu-en" => {
                assert_eq!(p["lang"], "en");
                assert!(title.is_ascii(), "an English headline: {title}");
            }
            other => panic!("pushed to {other}"),
        }
        assert_eq!(p["cap"], "/cap/DF1.1.xml");
        assert!(p["url"].as_str().unwrap().starts_with("/app#alert=DF1"));
    }
    assert_eq!(got[0]["topic"], got[1]["topic"], "one Topic per alert");
}

#[test]
fn value_updates_replace_silently_a_rise_and_the_end_ring() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = PushService::start(&["a"]);
    let d = started(dir.path(), &mut service);
    d.push().unwrap().subscribe(&service.input("a", &[SHENMU], PushLang::En), None).unwrap();
    d.alert_changed(&view("UP", 1));
    let first = service.next(Duration::from_secs(5)).expect("raised");
    d.alert_changed(&view("UP", 2));
    let update = service.next(Duration::from_secs(5)).expect("updated");
    assert_eq!(update["payload"]["version"], 2);
    assert_eq!(update["payload"]["notify"], false, "a value-only update is silent");
    assert_eq!(update["urgency"], "normal");
    assert_eq!(update["topic"], first["topic"], "the same Topic replaces an undelivered older version");
    d.alert_changed(&AlertView { level_index: Some(2), ..view("UP", 3) });
    let rise = service.next(Duration::from_secs(5)).expect("rise");
    assert_eq!(rise["payload"]["notify"], true, "a level rise rings");
    d.alert_changed(&ended(view("UP", 4), ViewState::Cleared));
    let end = service.next(Duration::from_secs(5)).expect("end");
    assert_eq!(end["payload"]["notify"], true, "the end rings");
    assert_eq!(end["payload"]["state"], "cleared");
    assert_eq!(end["topic"], first["topic"]);
    assert!(service.drain(Duration::from_millis(500)).is_empty());
}

#[test]
fn a_drill_is_labelled_silent_and_never_high() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = PushService::start(&["a"]);
    let d = started(dir.path(), &mut service);
    d.push().unwrap().subscribe(&service.input("a", &[SHENMU], PushLang::ZhTw), None).unwrap();
    d.alert_changed(&AlertView { mode: ViewMode::Exercise, ..view("DRILL", 1) });
    let got = service.next(Duration::from_secs(5)).expect("the drill is pushed, labelled");
    let p = &got["payload"];
    assert_eq!(p["is_real"], false);
    assert_eq!(p["label"], "演練");
    assert!(p["title"].as_str().unwrap().contains("演練"), "{p}");
    assert_eq!(p["notify"], false, "drills never ring");
    assert_eq!(got["urgency"], "normal");
}

#[test]
fn gone_subscriptions_are_removed_and_429_waits_for_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = PushService::start(&["gone", "busy"]);
    let d = started(dir.path(), &mut service);
    let push = d.push().unwrap();
    push.subscribe(&service.input("gone", &[SHENMU], PushLang::ZhTw), None).unwrap();
    push.subscribe(&service.input("busy", &[SHENMU], PushLang::ZhTw), None).unwrap();
    service.answers(json!({ "gone": ["410"], "busy": ["429:2", "503", "201"] }));
    d.alert_changed(&view("RA", 1));
    let got = service.drain(Duration::from_secs(6));
    let of = |name: &str| got.iter().filter(|l| l["sub"] == name).cloned().collect::<Vec<_>>();
    assert_eq!(of("gone").len(), 1, "410 is final: {got:?}");
    let busy = of("busy");
    assert_eq!(busy.iter().map(|l| l["status"].as_u64().unwrap()).collect::<Vec<_>>(), [429, 503, 201], "{busy:?}");
    let gap = busy[1]["at"].as_f64().unwrap() - busy[0]["at"].as_f64().unwrap();
    assert!(gap >= 1.9, "Retry-After: 2 honoured (our backoff alone is ≤ 0.2 s): waited {gap:.2} s");
    assert_eq!(push.subscriptions(), 1, "the 410 subscription is deleted");
    d.alert_changed(&view("RA", 2));
    let after = service.drain(Duration::from_secs(2));
    assert!(after.iter().all(|l| l["sub"] == "busy"), "nothing more to the gone one: {after:?}");
}

#[test]
fn a_restart_keeps_subscriptions_and_resends_nothing_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = PushService::start(&["a", "b"]);
    {
        let d = started(dir.path(), &mut service);
        let push = d.push().unwrap();
        push.subscribe(&service.input("a", &[SHENMU], PushLang::ZhTw), None).unwrap();
        push.subscribe(&service.input("b", &[SHENMU], PushLang::En), None).unwrap();
        // b's push service is down for longer than this process lives.
        service.answers(json!({ "b": ["503:30"] }));
        d.alert_changed(&view("RS", 1));
        let got = service.drain(Duration::from_secs(2));
        assert_eq!(got.iter().filter(|l| l["sub"] == "a" && l["status"] == 201).count(), 1, "{got:?}");
        assert!(got.iter().any(|l| l["sub"] == "b" && l["status"] == 503), "{got:?}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("push/journal.jsonl")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the subscriptions' secrets are the owner's only");
    }
    let d = started(dir.path(), &mut service);
    assert_eq!(d.push().unwrap().subscriptions(), 2, "subscriptions survive the restart");
    let got = service.drain(Duration::from_secs(3));
    assert!(got.iter().all(|l| l["sub"] == "b"), "a had it already: {got:?}");
    assert!(got.iter().any(|l| l["sub"] == "b" && l["status"] == 201 && l["payload"]["id"] == "RS"), "{got:?}");
    // The policy's memory survives too: the next version of the same alert is an update, silent.
    d.alert_changed(&view("RS", 2));
    let next = service.drain(Duration::from_secs(2));
    assert_eq!(next.len(), 2, "{next:?}");
    assert!(next.iter().all(|l| l["payload"]["notify"] == false), "{next:?}");
}

#[test]
fn bad_subscribe_bodies_are_refused_each_with_its_reason_and_counter() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = PushService::start(&["a", "b", "c"]);
    let d = started(dir.path(), &mut service);
    let push = d.push().unwrap();
    let good = service.input("a", &[SHENMU], PushLang::ZhTw);
    let with = |f: &dyn Fn(&mut SubscribeInput)| {
        let mut i = good.clone();
        f(&mut i);
        i
    };
    let cases: Vec<(&str, SubscribeInput)> = vec![
        ("bad_endpoint", with(&|i| i.endpoint = "http://push.example.com/x".into())),
        ("bad_endpoint", with(&|i| i.endpoint = "https://evil.example.com/x".into())),
        ("bad_endpoint", with(&|i| i.endpoint = "https://10.0.0.1/x".into())),
        ("bad_endpoint", with(&|i| i.endpoint = "not a url".into())),
        ("bad_endpoint", with(&|i| i.endpoint = format!("https://fcm.googleapis.com/{}", "x".repeat(3000)))),
        ("bad_key", with(&|i| i.keys.p256dh = "AAAA".into())),
        // 65 bytes starting 0x04 but not on the curve.
        ("bad_key", with(&|i| i.keys.p256dh = format!("BA{}", "A".repeat(85)))),
        ("bad_key", with(&|i| i.keys.p256dh = "!!!".into())),
        ("bad_auth", with(&|i| i.keys.auth = "AAAAAAAAAAAAAAAAAAAAAAAAAA".into())),
        ("bad_place", with(&|i| i.places.clear())),
        (
            "bad_place",
            with(&|i| i.places = vec![crate::channel::push::subscription::Place::LatLon { lat: 91.0, lon: 0.0 }]),
        ),
        ("bad_client_id", with(&|i| i.client_id = Some("has space".into()))),
    ];
    for (reason, input) in &cases {
        let before = crate::channel::push::metrics::METRICS.refused.with_label_values(&[reason]).get();
        let err = push.subscribe(input, None).expect_err(reason);
        assert_eq!(err.reason(), *reason, "{err}");
        assert!(!err.to_string().is_empty());
        let after = crate::channel::push::metrics::METRICS.refused.with_label_values(&[reason]).get();
        assert!(after > before, "{reason} counted");
    }
    assert_eq!(push.subscriptions(), 0, "nothing refused was kept");
    // Per client: two allowed here; a third endpoint of the same client is refused, a re-subscribe is not.
    push.subscribe(&good, None).unwrap();
    push.subscribe(
        &SubscribeInput { client_id: good.client_id.clone(), ..service.input("b", &[SHENMU], PushLang::En) },
        None,
    )
    .unwrap();
    let third = SubscribeInput { client_id: good.client_id.clone(), ..service.input("c", &[SHENMU], PushLang::En) };
    assert!(matches!(push.subscribe(&third, None), Err(Refusal::ClientLimit(2))));
    push.subscribe(&good, None).expect("the same endpoint again replaces itself");
    assert_eq!(push.subscriptions(), 2);
    assert!(push.unsubscribe(&good.endpoint));
    assert!(!push.unsubscribe(&good.endpoint), "gone already");
    push.subscribe(&third, None).expect("room again after the citizen removed one");
}

#[test]
fn after_a_key_rotation_old_subscriptions_are_signed_with_the_previous_key_new_ones_with_the_new() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = PushService::start(&["old", "new"]);
    let old_key = {
        let d = started(dir.path(), &mut service);
        d.push().unwrap().subscribe(&service.input("old", &[SHENMU], PushLang::ZhTw), None).unwrap();
        d.push().unwrap().public_key().to_string()
    };
    let push_dir = dir.path().join("push");
    std::fs::rename(push_dir.join("vapid.pem"), push_dir.join("vapid.previous.pem")).unwrap();
    let d = start(push_config(), dir.path());
    let new_key = d.push().unwrap().public_key().to_string();
    assert_ne!(new_key, old_key, "a new key was made");
    d.push().unwrap().subscribe(&service.input("new", &[JIAXIAN], PushLang::ZhTw), None).unwrap();
    service.expect_key(&old_key);
    d.alert_changed(&view("ROT", 1));
    let got = service.next(Duration::from_secs(5)).expect("the old subscription still gets pushes");
    assert_eq!((got["sub"].as_str(), got["status"].as_u64()), (Some("old"), Some(201)), "{got}");
    service.expect_key(&new_key);
    d.alert_changed(&rain_view("ROT2", 1, "township-jiaxian"));
    let got = service.next(Duration::from_secs(5)).expect("the new subscription, under the new key");
    assert_eq!(got["sub"], "new", "{got}");
}

#[test]
fn one_address_holds_at_most_max_per_address_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = PushService::start(&["a", "b", "c", "d"]);
    let mut cfg = push_config();
    cfg.push.max_per_address = 3;
    let d = start(cfg, dir.path());
    service.expect_key(d.push().unwrap().public_key());
    let push = d.push().unwrap();
    let nat: std::net::IpAddr = "203.0.113.7".parse().unwrap();
    for name in ["a", "b", "c"] {
        push.subscribe(&service.input(name, &[SHENMU], PushLang::ZhTw), Some(nat)).expect(name);
    }
    let err = push.subscribe(&service.input("d", &[SHENMU], PushLang::ZhTw), Some(nat)).expect_err("a fourth");
    assert_eq!(err.reason(), "address_limit", "{err}");
    assert!(err.is_limit());
    push.subscribe(&service.input("d", &[SHENMU], PushLang::ZhTw), Some("198.51.100.1".parse().unwrap()))
        .expect("another address has room");
}
