//! High availability on NATS JetStream (issue 23): the dissemination role. A real three-node nats-server cluster
//! (as `tests/ha.rs`), a front door, a rule worker, and two `serve --cluster … --role dissemination` nodes — the first
//! active (it holds the `dissemination` lease), the second standing by. A receiver in this test stands in for a
//! webhook subscriber and the carriers' CBCs, and answers each request only after a while, so that some delivery is
//! always in flight.
//!
//! Readings raise heavy rain at Shenmu and escalate it; the active dissemination node is SIGKILLed while a delivery
//! is in flight; the standby takes over, rebuilds the public warnings from the alerts stream and carries on.
//! Asserted: every delivery the replicated ledger recorded reached its receiver, the receiver saw no id twice unless
//! the later copy says it is a retry (`X-DC-Attempt` above the one before), every warning version from the first a
//! receiver got to the last reached it (none lost across the kill), the escalations after the kill (one in the
//! standby's replay, one it takes live from the durable consumer) reached the subscribers; and the time from the kill
//! to the next delivery is printed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::test_support::NatsCluster;
use common::cluster_node::{trusted_worker, worker_key, ClusterNode as Node};
use common::{config_copy, device_password, Device};
use futures_util::StreamExt;
use parking_lot::Mutex;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Seen {
    /// `hook/media`, `cbc/cht`, …
    path: String,
    id: String,
    attempt: u32,
    /// `X-DC-Message`: the CAP identifier (`{warning}.{version}`).
    message: String,
    at: Instant,
}

#[derive(Default)]
struct Received {
    seen: Vec<Seen>,
    /// Requests being held right now (arrived, not answered).
    in_flight: usize,
    /// Requests answered 200.
    answered: usize,
}

/// A request being held; counted out when dropped.
struct Held(Arc<Mutex<Received>>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
    }
}

/// The stand-in receiver: records every request on arrival, answers 200 after `hold`.
async fn receiver(hold: Duration) -> (SocketAddr, Arc<Mutex<Received>>) {
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

/// The ledger as the cluster holds it: key → (target, identifier, attempts, confirmed).
async fn ledger(urls: &[String]) -> BTreeMap<String, (String, String, u64, bool)> {
    let client = cluster::test_support::admin_client(urls).await;
    let js = async_nats::jetstream::new(client);
    let Ok(store) = js.get_key_value(cluster::deliveries::BUCKET).await else { return BTreeMap::new() };
    let mut keys = store.keys().await.expect("keys");
    let mut out = BTreeMap::new();
    while let Some(Ok(key)) = keys.next().await {
        if let Ok(Some(value)) = store.get(&key).await {
            let v: serde_json::Value = serde_json::from_slice(&value).expect("a ledger entry is JSON");
            out.insert(
                key,
                (
                    v["target"].as_str().unwrap_or_default().into(),
                    v["identifier"].as_str().unwrap_or_default().into(),
                    v["attempts"].as_u64().unwrap_or_default(),
                    v["confirmed"].as_bool().unwrap_or_default(),
                ),
            );
        }
    }
    out
}

fn rain(mm: f64, ts: i64) -> String {
    format!(r#"{{"ts":{ts},"values":{{"rain_mm":{mm}}}}}"#)
}

/// The warning and its version from a CAP identifier `{base}.{version}` (a `-n` suffix never occurs here).
fn warning_version(identifier: &str) -> (String, u32) {
    let (base, version) = identifier.rsplit_once('.').unwrap_or((identifier, "0"));
    (base.to_string(), version.parse().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_dissemination_nodes_deliveries_continue_on_the_standby_with_the_same_ids() {
    let nats = NatsCluster::start("ha-dissem");
    let urls = nats.urls();
    let dir = nats.dir.join("processes");
    std::fs::create_dir_all(&dir).unwrap();
    // Every request is held 700 ms: with five receivers some delivery is in flight whenever warnings change.
    let (recv, received) = receiver(Duration::from_millis(700)).await;
    // The worker signs what it writes; the dissemination nodes take only what its key signed (`serve` refuses a
    // dissemination node that trusts no worker).
    let (key, public) = worker_key(&dir, "w-1");
    let config =
        config_copy("ha-dissem", |text| text + "\n[cluster]\nlease_ttl_s = 3\n" + &trusted_worker("w-1", &public));
    // The subscribers and carriers deliver to the stand-in receiver; the media subscriber takes every mode.
    let dissemination = config.with_file_name("dissemination.toml");
    let text = std::fs::read_to_string(&dissemination)
        .unwrap()
        .replace("{public_url}/demo/webhook-drills", &format!("http://{recv}/hook/drills"))
        .replace("{public_url}/demo/webhook", &format!("http://{recv}/hook/media"))
        .replace("{public_url}/demo/cbc/", &format!("http://{recv}/cbc/"))
        .replace("backoff_initial_ms = 1000", "backoff_initial_ms = 200");
    std::fs::write(&dissemination, text).unwrap();

    let fd = Node::start(&config, &dir, &nats.urls_arg(), "fd-1", "front-door", &[]);
    let w1 = Node::start(&config, &dir, &nats.urls_arg(), "w-1", "worker", &["--signing-key", key.to_str().unwrap()]);
    let mut d1 = Node::start(&config, &dir, &nats.urls_arg(), "d-1", "dissemination", &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !d1.active() {
        assert!(Instant::now() < deadline, "d-1 did not become active: {}", d1.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d2 = Node::start(&config, &dir, &nats.urls_arg(), "d-2", "dissemination", &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!d2.active(), "two active dissemination nodes");
    let deadline = Instant::now() + Duration::from_secs(30);
    while w1.metric("dc_cluster_regions_owned").unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline, "w-1 took no county: {}", w1.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Heavy rain at Shenmu: 50 mm raises 大雨 (heavy rain); 60 mm more in 3 h is 豪雨 (extremely heavy rain).
    let now = common::now_ms();
    let mut gauge = Device::connect(fd.mqtt, "RG0001", &device_password("RG0001")).await.expect("gauge connects");
    gauge.publish("sensors/RG0001/readings", rain(50.0, now - 300_000)).await;
    gauge.wait_acks(1).await;
    gauge.publish("sensors/RG0001/readings", rain(60.0, now - 240_000)).await;
    gauge.wait_acks(1).await;

    // SIGKILL d-1 once receivers confirmed some deliveries and while another is in flight (it reached the receiver,
    // which has not answered).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        {
            let r = received.lock();
            if r.answered >= 3 && r.in_flight > 0 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no delivery in flight within 60 s: {}", d1.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d1.kill9();
    let killed = Instant::now();
    let before = received.lock().seen.len();
    println!(
        "SIGKILL d-1 with a delivery in flight, after {before} requests at the receiver ({} answered)",
        received.lock().answered
    );

    // More rain after the kill: 250 mm more is 360 mm in 24 h, 大豪雨 (torrential rain), a new warning version
    // that only the standby can deliver.
    gauge.publish("sensors/RG0001/readings", rain(250.0, now - 120_000)).await;
    gauge.wait_acks(1).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !d2.active() {
        assert!(Instant::now() < deadline, "d-2 did not take over: {}", d2.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("d-2 active {:?} after the kill", killed.elapsed());
    let deadline = Instant::now() + Duration::from_secs(60);
    let next = loop {
        if let Some(s) = received.lock().seen.get(before) {
            break s.at;
        }
        assert!(Instant::now() < deadline, "no delivery within 60 s of the kill: {}", d2.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("kill → next delivery at a receiver: {:?}", next.duration_since(killed));
    // Once d-2 has caught up, a change it takes live from the durable consumer: 200 mm more, 560 mm in 24 h,
    // 超大豪雨 (extremely torrential rain).
    let deadline = Instant::now() + Duration::from_secs(30);
    while d2.metric("dc_cluster_dissemination_changes_total{outcome=\"replayed\"}").unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline, "d-2 replayed nothing: {}", d2.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gauge.publish("sensors/RG0001/readings", rain(200.0, now - 60_000)).await;
    gauge.wait_acks(1).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while d2.metric("dc_cluster_dissemination_changes_total{outcome=\"applied\"}").unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline, "d-2 took no change live from the consumer: {}", d2.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // d-1 comes back (same name, same data dir): it sets its old outbox aside and stands by, sending nothing.
    let d1 = Node::start(&config, &dir, &nats.urls_arg(), "d-1", "dissemination", &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!d1.active(), "the restarted d-1 took the lease d-2 holds");
    assert!(d2.active(), "d-2 lost the lease to the restarted d-1");

    // Wait until the ledger has every delivery confirmed and nothing moves any more.
    let deadline = Instant::now() + Duration::from_secs(90);
    let entries = loop {
        let entries = ledger(&urls).await;
        let in_flight = received.lock().in_flight;
        let unconfirmed = entries.values().filter(|e| !e.3).count();
        if !entries.is_empty() && unconfirmed == 0 && in_flight == 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let again = ledger(&urls).await;
            if again.len() == entries.len() && again.values().all(|e| e.3) {
                break again;
            }
            continue;
        }
        assert!(
            Instant::now() < deadline,
            "{unconfirmed} of {} deliveries unconfirmed after 90 s: {entries:#?}\n{}",
            entries.len(),
            d2.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let seen = received.lock().seen.clone();

    // Every recorded delivery reached its receiver, under its own id.
    let ids: BTreeSet<&str> = seen.iter().map(|s| s.id.as_str()).collect();
    for (key, (target, identifier, attempts, _)) in &entries {
        assert!(
            ids.contains(key.as_str()),
            "delivery {key} ({target}, {identifier}, {attempts} attempts) never arrived"
        );
    }
    // No id seen twice unless the later copy is a retry: its attempt number above every earlier copy's.
    let mut per_id: BTreeMap<&str, Vec<&Seen>> = BTreeMap::new();
    for s in &seen {
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
    assert!(retries >= 1, "the delivery in flight at the kill was not sent again: {per_id:#?}");
    // Every warning version from the first a webhook subscriber got to the last reached it, none lost (carriers get
    // a broadcast only when a warning rises, not every version).
    let mut versions: BTreeMap<(&str, String), BTreeSet<u32>> = BTreeMap::new();
    for s in seen.iter().filter(|s| s.path.starts_with("hook/")) {
        let (warning, version) = warning_version(&s.message);
        versions.entry((s.path.as_str(), warning)).or_default().insert(version);
    }
    for ((path, warning), got) in &versions {
        let (first, last) = (*got.first().unwrap(), *got.last().unwrap());
        assert_eq!(got.len() as u32, last - first + 1, "{path} missed versions of {warning}: got {got:?}");
    }
    // The escalations after the kill (replayed, then live) reached the media subscriber: versions d-1 never planned.
    let after_kill: Vec<&Seen> = seen.iter().filter(|s| s.at > killed && s.attempt == 1).collect();
    assert!(
        after_kill.iter().any(|s| s.path == "hook/media"),
        "nothing new reached the media subscriber after the kill"
    );
    let most = versions.iter().filter(|((path, _), _)| *path == "hook/media").map(|(_, v)| v.len()).max();
    assert!(most >= Some(4), "raised, risen twice, then once more live: {versions:?}");
    println!(
        "{} requests, {} delivery ids ({} recorded), {retries} retries; per receiver and warning: {versions:?}",
        seen.len(),
        per_id.len(),
        entries.len()
    );
    let replayed = d2.metric("dc_cluster_dissemination_changes_total{outcome=\"replayed\"}").unwrap_or(0.0);
    let confirmed_earlier = d2.metric("dc_dissemination_ledger_total{outcome=\"confirmed_earlier\"}").unwrap_or(0.0);
    println!("d-2 replayed {replayed} alert changes; {confirmed_earlier} deliveries not re-sent (confirmed before)");
    assert!(confirmed_earlier >= 1.0, "d-2 re-sent everything d-1 had delivered");
    assert_eq!(d2.metric("dc_cluster_dissemination_orphans"), Some(0.0), "recorded deliveries d-2 did not plan again");
    assert_eq!(d1.metric("dc_dissemination_ledger_total{outcome=\"first\"}"), Some(0.0), "the standby sent something");
    for n in [&fd, &w1, &d1, &d2] {
        assert!(!n.log().contains("panicked"), "{}", n.log());
    }
}
