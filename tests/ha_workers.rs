//! High availability on NATS JetStream (issue 23): the rule workers' lease work. A real three-node nats-server
//! cluster (`cluster::test_support`), a front door and rule workers as `serve --cluster …` processes, devices at QoS 1.
//!
//! Asserted:
//! - **Balancing**: one worker holds every county; a second one starts, and within a few lease periods each holds
//!   its share (3 of 6), no county held by two workers or left without a holder for long, and an open alert of a
//!   county that moved continues on the new owner with its next version (no second alert, no version twice).
//! - **Release on SIGTERM**: of two workers, the one asked to stop hands its counties over and releases their leases;
//!   the other owns every county well under the lease ttl (printed), and the open alert continues there.
//! - **Pruning**: an ended alert's subject leaves `DC_ALERTS` once `ended_alert_retention_s` has passed since its
//!   final version; an open alert's stays.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cluster::test_support::NatsCluster;
use common::cluster_node::{
    alert_versions, assert_no_alert_doubled_or_lost, lease_holder, trusted_worker, wait_for_alert, worker_key,
    AlertVersion, ClusterNode as Node,
};
use common::ha_peers::{rain, FieldDevice};
use common::{config_copy, http_get, http_request, TOKEN};

/// The counties of the demo zones: what the workers share.
const COUNTIES: [&str; 6] = ["10007", "10008", "10009", "10017", "63000", "64000"];

/// Publishes one reading set at QoS 1 through the front door; returns once it is acknowledged (the reading is on the
/// replicated stream).
async fn publish(front_door: SocketAddr, device: &str, payload: String) {
    let gauge = FieldDevice::start(device, &[front_door]);
    assert!(gauge.publish(&payload, Duration::from_secs(30)).await, "{device}: no PUBACK in 30 s");
    gauge.finish().await;
}

/// Who holds each county's lease now (`None`: nobody).
async fn holders(js: &async_nats::jetstream::Context) -> BTreeMap<&'static str, Option<String>> {
    let mut out = BTreeMap::new();
    for county in COUNTIES {
        out.insert(county, lease_holder(js, county).await);
    }
    out
}

/// The shared set-up: three NATS nodes, a front door; `ttl` the lease ttl.
async fn cluster(
    tag: &str,
    ttl_s: u64,
    extra: &str,
) -> (NatsCluster, PathBuf, PathBuf, Node, async_nats::jetstream::Context) {
    let nats = NatsCluster::start(tag);
    let dir = nats.dir.join("processes");
    std::fs::create_dir_all(&dir).unwrap();
    let extra = extra.to_string();
    let config = config_copy(tag, |text| {
        text.replace("dissemination = \"dissemination.toml\"\n", "")
            + &format!("\n[cluster]\nlease_ttl_s = {ttl_s}\n{extra}")
    });
    let fd = Node::start(&config, &dir, &nats.urls_arg(), "fd-1", "front-door", &[]);
    let client = nats.admin().await;
    let js = async_nats::jetstream::new(client);
    (nats, dir, config, fd, js)
}

/// Heavy rain at Shenmu (50 mm in an hour, Nantou 10008) through the front door: `heavy-rain`'s first version as the
/// alerts stream holds it.
async fn raise_heavy_rain(front_door: SocketAddr, js: &async_nats::jetstream::Context, now: i64) -> AlertVersion {
    publish(front_door, "RG0001", rain(50.0, now - 240_000)).await;
    let versions =
        wait_for_alert(js, Duration::from_secs(20), "heavy rain raised", |v| is_heavy_rain(v) && v.version == 1).await;
    versions.iter().find(|v| is_heavy_rain(v)).unwrap().clone()
}

fn is_heavy_rain(v: &AlertVersion) -> bool {
    v.rule == "heavy-rain" && v.area == SHENMU_DFA
}

async fn wait_owning(node: &Node, counties: f64, within: Duration) {
    let deadline = Instant::now() + within;
    while node.owned() < counties {
        assert!(
            Instant::now() < deadline,
            "{} did not own {counties} counties in {within:?}: {}",
            node.name,
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const SHENMU_DFA: &str = "dfa-xinyi-shenmu";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_worker_gets_its_share_of_the_counties_and_continues_their_alerts() {
    let ttl = Duration::from_secs(3);
    let (nats, dir, config, fd, js) = cluster("ha-balance", ttl.as_secs(), "").await;
    let w1 = Node::worker(&config, &dir, &nats.urls_arg(), "w-1");
    wait_owning(&w1, 6.0, Duration::from_secs(30)).await;

    // Heavy rain at Shenmu (Nantou, 10008) raises `heavy-rain` on w-1.
    let now = common::now_ms();
    let raised = raise_heavy_rain(fd.mqtt, &js, now).await;
    assert_eq!(raised.worker, "w-1");

    // A second worker: the counties split 3 / 3, watched every 50 ms on the lease bucket and on both workers.
    let w2 = Node::worker(&config, &dir, &nats.urls_arg(), "w-2");
    let started = Instant::now();
    let mut unowned_since: HashMap<&str, Instant> = HashMap::new();
    let mut longest_unowned = Duration::ZERO;
    loop {
        let table = holders(&js).await;
        for (county, holder) in &table {
            match holder {
                None => {
                    unowned_since.entry(county).or_insert_with(Instant::now);
                }
                Some(_) => {
                    // Without a holder from the first sample that saw it free until this one (an upper bound).
                    if let Some(since) = unowned_since.remove(county) {
                        longest_unowned = longest_unowned.max(since.elapsed());
                    }
                }
            }
        }
        let (o1, o2) = (w1.owned(), w2.owned());
        assert!(o1 + o2 <= 6.0, "a county run by two workers at once: w-1 {o1}, w-2 {o2}, leases {table:?}");
        let split = |w: &str| table.values().filter(|h| h.as_deref() == Some(w)).count();
        if (o1, o2) == (3.0, 3.0) && split("w-1") == 3 && split("w-2") == 3 {
            break;
        }
        assert!(
            started.elapsed() < ttl * 5,
            "not split within five lease periods: w-1 {o1}, w-2 {o2}, leases {table:?}\n{}",
            w1.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let split_after = started.elapsed();
    println!("w-2 started → counties split 3/3 {split_after:?} later (ttl {ttl:?}); longest a county had no holder: {longest_unowned:?}");
    assert!(longest_unowned < ttl, "a county without a holder for {longest_unowned:?}");
    let table = holders(&js).await;
    // Handed over lowest first: Nantou (10008) moved to w-2 with its open alert.
    assert_eq!(table["10008"].as_deref(), Some("w-2"), "{table:?}");
    // Stable: nothing moves back and forth afterwards.
    tokio::time::sleep(ttl).await;
    assert_eq!(holders(&js).await, table, "the split did not hold");
    assert_eq!((w1.owned(), w2.owned()), (3.0, 3.0));
    let handed = w1.metric("dc_cluster_regions_handed_over_total{why=\"balance\"}").unwrap_or(0.0);
    assert_eq!(handed, 3.0, "w-1 handed over {handed} counties");

    // The alert continues on w-2: a second gauge joins (v2), then more rain escalates it (v3; 50 + 60 mm in 3 h is
    // 豪雨, which only windows rebuilt with w-1's 50 mm see).
    publish(fd.mqtt, "RG0002", rain(50.0, now - 180_000)).await;
    wait_for_alert(&js, Duration::from_secs(20), "the second gauge joining", |v| is_heavy_rain(v) && v.worker == "w-2")
        .await;
    publish(fd.mqtt, "RG0001", rain(60.0, now - 120_000)).await;
    let versions = wait_for_alert(&js, Duration::from_secs(20), "the escalation", |v| {
        is_heavy_rain(v) && v.worker == "w-2" && v.level == 1
    })
    .await;
    let heavy: Vec<(&str, u64, u64, &str)> = versions
        .iter()
        .filter(|v| is_heavy_rain(v))
        .map(|v| (v.id.as_str(), v.version, v.level, v.worker.as_str()))
        .collect();
    println!("heavy rain at Shenmu: {heavy:?}");
    assert!(heavy.iter().all(|(id, ..)| *id == raised.id), "{heavy:?}");
    assert_no_alert_doubled_or_lost(&versions);
    for w in [&fd, &w1, &w2] {
        assert!(!w.log().contains("panicked"), "{}", w.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_with_sigterm_hands_its_counties_over_at_once() {
    // A ttl long enough that a take-over by expiry is told apart from a release: without the release the other
    // worker would wait 7.5–10 s (the lease expires a ttl after its last renewal, renewed every ttl/4).
    let ttl = Duration::from_secs(10);
    let (nats, dir, config, fd, js) = cluster("ha-sigterm", ttl.as_secs(), "").await;
    let w1 = Node::worker(&config, &dir, &nats.urls_arg(), "w-1");
    let w2 = Node::worker(&config, &dir, &nats.urls_arg(), "w-2");
    // Both at work: three counties each.
    let deadline = Instant::now() + ttl * 4;
    while (w1.owned(), w2.owned()) != (3.0, 3.0) || holders(&js).await.values().any(Option::is_none) {
        assert!(Instant::now() < deadline, "the counties were not split: w-1 {}, w-2 {}", w1.owned(), w2.owned());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An open alert in Nantou (10008), on whichever worker owns it.
    let now = common::now_ms();
    let raised = raise_heavy_rain(fd.mqtt, &js, now).await;
    // The owner of Nantou is stopped, the other one must continue its alert.
    let (mut stopped, survivor) = if raised.worker == "w-1" { (w1, w2) } else { (w2, w1) };
    let held_before = stopped.owned();
    println!(
        "{} owns {held_before} counties (Nantou among them), {} owns {}",
        stopped.name,
        survivor.name,
        survivor.owned()
    );

    let asked = Instant::now();
    let status = stopped.terminate(ttl);
    let exited = asked.elapsed();
    assert!(status.success(), "{} exited with {status} after SIGTERM:\n{}", stopped.name, stopped.log());
    while survivor.owned() < 6.0 {
        assert!(
            asked.elapsed() < ttl,
            "{} did not own every county within the ttl:\n{}",
            survivor.name,
            survivor.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = asked.elapsed();
    println!(
        "SIGTERM {} → exited after {exited:?}; {} owns every county {took:?} after the signal (lease ttl {ttl:?})",
        stopped.name, survivor.name
    );
    assert!(took < ttl / 2, "take-over after SIGTERM took {took:?}: the leases expired instead of being released");
    let log = stopped.log();
    assert!(log.contains("every region handed over and its lease released"), "{log}");
    let after_stop =
        log.split_once("stop asked").map(|(_, rest)| rest).unwrap_or_else(|| panic!("no stop logged: {log}"));
    assert_eq!(after_stop.matches("region lease released").count() as f64, held_before, "{log}");
    assert!(holders(&js).await.values().all(|h| h.as_deref() == Some(survivor.name.as_str())));

    // The alert continues on the survivor (v2), no second alert, no version twice.
    publish(fd.mqtt, "RG0002", rain(50.0, now - 180_000)).await;
    let versions = wait_for_alert(&js, Duration::from_secs(20), "the second gauge joining", |v| {
        is_heavy_rain(v) && v.worker == survivor.name
    })
    .await;
    let continued = versions.iter().find(|v| is_heavy_rain(v) && v.worker == survivor.name).unwrap();
    assert_eq!((continued.id.as_str(), continued.version), (raised.id.as_str(), 2), "{versions:#?}");
    assert_no_alert_doubled_or_lost(&versions);
    for w in [&fd, &survivor] {
        assert!(!w.log().contains("panicked"), "{}", w.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_alert_leaves_the_alerts_stream_after_its_retention() {
    let retention = Duration::from_secs(4);
    let (nats, dir, config, fd, js) =
        cluster("ha-prune", 3, &format!("ended_alert_retention_s = {}\n", retention.as_secs())).await;
    // The worker signs what it writes and trusts its own key, as in production: the sweep reads ended alerts (and
    // warnings) through the envelope.
    let (_, public) = worker_key(&dir, "w-1");
    let text = std::fs::read_to_string(&config).unwrap() + &trusted_worker("w-1", &public);
    std::fs::write(&config, text).unwrap();
    let w1 = Node::worker(&config, &dir, &nats.urls_arg(), "w-1");
    wait_owning(&w1, 6.0, Duration::from_secs(30)).await;

    // Heavy rain at Shenmu (to be cancelled) and a flooded road at RF0001 (stays open).
    let now = common::now_ms();
    publish(fd.mqtt, "RG0001", rain(50.0, now - 240_000)).await;
    publish(fd.mqtt, "RF0001", format!(r#"{{"ts":{},"values":{{"flood_depth_cm":20}}}}"#, now - 60_000)).await;
    let _ = wait_for_alert(&js, Duration::from_secs(20), "heavy rain", |v| v.rule == "heavy-rain").await;
    let versions = wait_for_alert(&js, Duration::from_secs(20), "road flood", |v| v.rule == "road-flood").await;
    let ended = versions.iter().find(|v| v.rule == "heavy-rain").unwrap().clone();
    let open = versions.iter().find(|v| v.rule == "road-flood").unwrap().clone();

    // An operator cancels one: its final version is on the stream, and stays there for the retention.
    let (status, body) =
        http_request(w1.http, "POST", &format!("/api/v1/alerts/{}/cancel", ended.id), Some(TOKEN), None)
            .expect("the worker answers");
    assert_eq!(status, 200, "{body}");
    wait_for_alert(&js, Duration::from_secs(10), "the cancellation", |v| v.id == ended.id && v.state == "cancelled")
        .await;
    let cancelled_at = Instant::now();
    let subjects = |versions: &[AlertVersion]| versions.iter().map(|v| v.subject.clone()).collect::<BTreeSet<_>>();
    tokio::time::sleep(retention / 2).await;
    assert!(subjects(&alert_versions(&js).await).contains(&ended.subject), "removed before its retention");

    // Then the subject is gone; the open alert's stays.
    loop {
        let now_there = subjects(&alert_versions(&js).await);
        assert!(now_there.contains(&open.subject), "the open alert was removed: {now_there:?}");
        if !now_there.contains(&ended.subject) {
            break;
        }
        assert!(
            cancelled_at.elapsed() < retention * 3,
            "{} still in DC_ALERTS {:?} after it ended:\n{}",
            ended.subject,
            cancelled_at.elapsed(),
            w1.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("{} removed {:?} after its cancellation (retention {retention:?})", ended.subject, cancelled_at.elapsed());
    assert!(cancelled_at.elapsed() >= retention - Duration::from_millis(500));
    // The alert and its public warning (`W-…`, ended by the same cancellation), both read through the envelope.
    let removed = || w1.metric("dc_cluster_alerts_pruned_total{outcome=\"removed\"}");
    let deadline = Instant::now() + retention * 2;
    while removed() < Some(2.0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(removed(), Some(2.0), "{}", w1.log());
    // The worker forgot it too: it is not re-sent (which would put the subject back).
    let (_, list) = http_get(w1.http, "/api/v1/alerts", Some(TOKEN)).expect("alert list");
    assert!(!list.contains(&ended.id), "still in the worker's book: {list}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!subjects(&alert_versions(&js).await).contains(&ended.subject));
    for w in [&fd, &w1] {
        assert!(!w.log().contains("panicked"), "{}", w.log());
    }
}

#[test]
fn serve_refuses_a_worker_without_a_signing_key() {
    // Refused while reading the configuration, before any connection: no NATS cluster needed (an accepted worker
    // would keep trying nats://127.0.0.1:1, and be killed after 30 s).
    let config = config_copy("ha-unsigned", |text| text + "\n[cluster]\n");
    let log = config.with_file_name("serve.log");
    let mut child = common::test_env(&mut std::process::Command::new(env!("CARGO_BIN_EXE_disaster-cloud")))
        // Its NATS login is in order, so that the key is what it is refused for.
        .env("DC_CLUSTER_PASSWORD", "a-worker-password-long-enough")
        .args(["serve", "--config", config.to_str().unwrap(), "--cluster", "nats://127.0.0.1:1"])
        .args(["--data-dir", config.with_file_name("data").to_str().unwrap()])
        .args([
            "--role",
            "worker",
            "--client-id",
            "w-1",
            "--http-listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("the binary runs");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.is_some_and(|s| !s.success()), "an unsigned worker started ({status:?}): {stderr}");
    for needed in ["cluster.signing_key_file", "--signing-key", "cluster-key new"] {
        assert!(stderr.contains(needed), "the refusal does not name {needed}: {stderr}");
    }
}
