//! The dissemination node's parts of the backbone against a real three-node nats-server cluster: the delivery
//! ledger counts attempts across nodes and remembers confirmations; the alerts feed replays in order, and its durable
//! consumer gives a change its holder never acknowledged to the next node, but never one that was acknowledged.

use std::time::Duration;

use bytes::Bytes;
use cluster::alert_feed::{self, AlertQueue};
use cluster::alerts::{self, AlertsLog};
use cluster::deliveries::Deliveries;
use cluster::test_support::NatsCluster;
use cluster::{Backbone, BackboneConfig};

/// `d-…` logs in as the dissemination node's user, `w-…` as a rule worker's (`ops/nats/authorization.conf`): what
/// they do here is what those roles may do.
fn config(cluster: &NatsCluster, name: &str) -> BackboneConfig {
    let user = if name.starts_with("d-") { "dissemination" } else { "worker" };
    let mut c = cluster.backbone_config(name, user);
    c.start_timeout = Duration::from_secs(30);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_counts_attempts_across_nodes_and_remembers_confirmations() {
    let nats = NatsCluster::start("deliveries");
    let d1 = Deliveries::open(&Backbone::connect(config(&nats, "d-1")).await.unwrap(), Duration::from_secs(3600))
        .await
        .unwrap();
    let d2 = Deliveries::open(&Backbone::connect(config(&nats, "d-2")).await.unwrap(), Duration::from_secs(3600))
        .await
        .unwrap();
    d1.record("k1", "media", "TW-DC-W-1.1").await.unwrap();
    // Recording again (a replay on the next node) leaves the entry as it is.
    assert_eq!(d1.begin("k1", "media", "TW-DC-W-1.1").await.unwrap(), Some(1));
    d2.record("k1", "media", "TW-DC-W-1.1").await.unwrap();
    let (entry, _) = d2.entry("k1").await.unwrap().unwrap();
    assert_eq!((entry.attempts, entry.confirmed, entry.target.as_str()), (1, false, "media"));
    // d-1 died with its attempt in flight: d-2's attempt is the second (a retry), then confirmed.
    assert_eq!(d2.begin("k1", "media", "TW-DC-W-1.1").await.unwrap(), Some(2));
    d2.confirm("k1").await.unwrap();
    assert_eq!(d1.begin("k1", "media", "TW-DC-W-1.1").await.unwrap(), None, "a confirmed delivery is not sent again");
    // A key never recorded (a crash between planning and recording) is recorded by its first attempt.
    assert_eq!(d2.begin("k2", "media", "TW-DC-W-1.1").await.unwrap(), Some(1));
    assert_eq!(d1.begin("k2", "media", "TW-DC-W-1.1").await.unwrap(), Some(2));
    d1.confirm("k2").await.unwrap();
    d1.confirm("k2").await.unwrap();
    let (entry, _) = d2.entry("k2").await.unwrap().unwrap();
    assert_eq!((entry.attempts, entry.confirmed, entry.node.as_str()), (2, true, "d-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_feed_replays_in_order_and_redelivers_only_what_was_not_acknowledged() {
    let nats = NatsCluster::start("alert-feed");
    let worker = Backbone::connect(config(&nats, "w-1")).await.unwrap();
    let log = AlertsLog::open(&worker).await.unwrap();
    for (id, version) in [("A", 1), ("B", 1), ("A", 2), ("A", 3)] {
        let subject = alerts::subject("10008", id).unwrap();
        log.publish(&subject, &alerts::publish_id(id, version), Bytes::from(format!("{id}{version}"))).await.unwrap();
    }
    let d1 = Backbone::connect(config(&nats, "d-1")).await.unwrap();
    let (changes, last) = alert_feed::replay(&d1).await.unwrap();
    let bodies: Vec<&[u8]> = changes.iter().map(|c| c.payload.as_ref()).collect();
    assert_eq!(bodies, [&b"A1"[..], b"B1", b"A2", b"A3"], "every version, in stream order");
    assert_eq!(last, 4);

    // d-1 acknowledges the first change and dies holding the second.
    let ack_wait = Duration::from_secs(2);
    let mut queue = AlertQueue::open(&d1, ack_wait).await.unwrap();
    let first = queue.next().await.unwrap().unwrap();
    assert_eq!(first.sequence, 1);
    first.ack().await.unwrap();
    let second = queue.next().await.unwrap().unwrap();
    assert_eq!(second.sequence, 2);
    drop(queue);
    drop(d1);
    // d-2 gets the second again (after ack_wait), then the rest in order: never the acknowledged first.
    let d2 = Backbone::connect(config(&nats, "d-2")).await.unwrap();
    let mut queue = AlertQueue::open(&d2, ack_wait).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        let change =
            tokio::time::timeout(Duration::from_secs(10), queue.next()).await.expect("a change").unwrap().unwrap();
        got.push(change.sequence);
        change.ack().await.unwrap();
    }
    assert_eq!(got, [2, 3, 4]);
}
