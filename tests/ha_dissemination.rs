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

use std::time::{Duration, Instant};

use cluster::test_support::NatsCluster;
use common::cluster_node::{trusted_worker, worker_key, ClusterNode as Node};
use common::ha_peers::{
    assert_deliveries_once_or_retried, deliver_to, ledger, rain, receiver, request_after, settled_ledger,
    webhook_versions_without_gaps, Seen,
};
use common::{config_copy, device_password, Device};

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
    let (_, public) = worker_key(&dir, "w-1");
    let config =
        config_copy("ha-dissem", |text| text + "\n[cluster]\nlease_ttl_s = 3\n" + &trusted_worker("w-1", &public));
    // The subscribers and carriers deliver to the stand-in receiver.
    deliver_to(&config, recv);

    let fd = Node::start(&config, &dir, &nats.urls_arg(), "fd-1", "front-door", &[]);
    let w1 = Node::worker(&config, &dir, &nats.urls_arg(), "w-1");
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

    // SIGKILL d-1 once the ledger holds a delivery it confirmed (the receiver answered and d-1 recorded it: one the
    // standby must not send again) and while another is in flight (it reached the receiver, which has not answered).
    // Answered is not enough: deliveries to several receivers are answered together, and a kill right then can come
    // before any confirmation is written (it failed that way in CI).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let in_flight = received.lock().in_flight > 0;
        if in_flight && ledger(&urls).await.values().any(|e| e.confirmed) && received.lock().in_flight > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no delivery in flight after a confirmed one within 60 s: {}", d1.log());
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
    let next = request_after(&received, before, Duration::from_secs(60), || d2.log()).await;
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

    // Every recorded delivery reached its receiver, under its own id; no id seen twice unless the later copy is a
    // retry (its attempt number above every earlier copy's).
    let entries = settled_ledger(&urls, &received, Duration::from_secs(90), || d2.log()).await;
    let seen = received.lock().seen.clone();
    let (per_id, retries) = assert_deliveries_once_or_retried(&seen, &entries);
    // Every warning version from the first a webhook subscriber got to the last reached it, none lost.
    let versions = webhook_versions_without_gaps(&seen);
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
