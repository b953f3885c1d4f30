//! High availability on NATS JetStream (issue 23): fan-out nodes on the backbone. A real three-node nats-server
//! cluster, one front door, two rule workers signing their alert messages (`--signing-key`), two
//! `serve --cluster … --role fan-out` nodes trusting the worker's public key, citizens' apps on both.
//!
//! Asserted: citizens on both fan-out nodes receive each public warning version exactly once; an unsigned message and
//! one signed by a key nobody trusts, published straight onto `dc.alerts.{county}.{id}` by a NATS client, reach no
//! citizen and are counted by reason; when a fan-out node is SIGKILLed its citizens reconnect to the other and get
//! the current warnings (nothing they already had); when the alerts stream's leader is SIGKILLed citizens still get
//! the next version; when the worker running the alert's county is SIGKILLed the other one takes its counties over —
//! refusing an unsigned copy someone wrote as the alert's last message, continuing from the last signed one — and the
//! warning goes on with its next version. The time from each kill to the next frame is printed.

mod common;

use std::time::{Duration, Instant};

use cluster::test_support::NatsCluster;
use common::cluster_node::{lease_holder, trusted_worker, worker_key, ClusterNode as Node};
use common::ha_peers::{rain, stream_leader, warnings_in_stream, Citizen};
use common::{device_password, Device};
use disaster_cloud::scale_out::backbone_alerts::{self, Body};
use disaster_cloud::scale_out::signing::AlertSigner;

/// A public warning for Shenmu as a worker would write it, under a forger's id.
fn forged_body(id: &str) -> Body {
    Body {
        kind: backbone_alerts::PUBLIC_WARNING.into(),
        region: "10008".into(),
        worker: "w-1".into(),
        worker_url: String::new(),
        public: true,
        record: None,
        warning: None,
        frame: serde_json::json!({
            "type": "public_warning", "id": id, "version": 1, "state": "raised", "mode": "Actual",
            "event": "heavy_rain", "severity": "Extreme", "urgency": "Immediate", "certainty": "Observed",
            "headline": "Evacuate now", "headlines": {"zh-TW": "立即撤離", "en": "Evacuate now"}, "area": null,
            "area_id": "dfa-xinyi-shenmu", "area_name": "神木", "sent": "2026-12-06T18:00:00+08:00", "cap": "",
            "level": "超大豪雨", "value": 999.0, "sensors": ["RG0001"], "acknowledged_by": null,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn citizens_on_both_fan_out_nodes_get_each_warning_version_once_through_kills() {
    let mut nats = NatsCluster::start("ha-fanout");
    let urls = nats.urls();
    let dir = nats.dir.join("processes");
    std::fs::create_dir_all(&dir).unwrap();
    // The workers' keys, made as an operator would (`cluster-key new`: owner-only file, public key printed), trusted
    // for every county.
    let trusted: String = ["w-1", "w-2"]
        .into_iter()
        .map(|name| {
            let (_, public) = worker_key(&dir, name);
            trusted_worker(name, &public)
                + "regions = [\"10007\", \"10008\", \"10009\", \"10017\", \"63000\", \"64000\"]\n"
        })
        .collect();
    // Leases at their default ttl (10 s): shorter ones can expire while the leases bucket elects a new leader, and
    // this test kills NATS nodes, not workers.
    let config = common::config_copy("ha-fanout", |text| {
        text.replace("dissemination = \"dissemination.toml\"\n", "") + "\n[cluster]\n" + &trusted
    });
    let args = nats.urls_arg();
    let fd = Node::start(&config, &dir, &args, "fd-1", "front-door", &[]);
    let w1 = Node::worker(&config, &dir, &args, "w-1");
    let mut fan = [
        Node::start(&config, &dir, &args, "fan-1", "fan-out", &[]),
        Node::start(&config, &dir, &args, "fan-2", "fan-out", &[]),
    ];
    let counties = 6.0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while w1.owned() < counties {
        assert!(Instant::now() < deadline, "w-1 did not take the counties: {}", w1.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // w-2 starts: the workers split the counties 3 / 3 (w-1 hands three over), before any rain falls.
    let w2 = Node::worker(&config, &dir, &args, "w-2");
    let deadline = Instant::now() + Duration::from_secs(60);
    while (w1.owned(), w2.owned()) != (counties / 2.0, counties / 2.0) {
        assert!(Instant::now() < deadline, "the workers did not split the counties: {}\n{}", w1.log(), w2.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut workers = [w1, w2];
    let mut c1 = Citizen::connect("c1 (fan-1, then fan-2)", fan[0].http).await;
    let c2 = Citizen::connect("c2 (fan-2)", fan[1].http).await;

    // Heavy rain at Shenmu: 大雨 → the public warning's first version, on both nodes.
    let now = common::now_ms();
    let mut gauge = Device::connect(fd.mqtt, "RG0001", &device_password("RG0001")).await.unwrap();
    gauge.publish("sensors/RG0001/readings", rain(50.0, now - 300_000)).await;
    gauge.wait_acks(1).await;
    let first = c2.wait_for("", 1, Duration::from_secs(30)).await;
    let warning = c2.frames().iter().find(|f| f.at == first).unwrap().clone();
    assert!(warning.id.starts_with("W-"), "{:?}", warning.json);
    assert_eq!(warning.json["event"], "heavy_rain", "{:?}", warning.json);
    c1.wait_for(&warning.id, 1, Duration::from_secs(10)).await;
    println!("warning {} v1 on both fan-out nodes", warning.id);

    // Forgeries straight onto the alerts stream by anyone with NATS access: unsigned, and signed by a stranger.
    let client = cluster::test_support::admin_client(&urls).await;
    let js = async_nats::jetstream::new(client);
    let forged = [("W-FORGED-UNSIGNED", None), ("W-FORGED-STRANGER", Some(AlertSigner::generate()))];
    for (id, signer) in &forged {
        let subject = cluster::alerts::subject("10008", id).unwrap();
        let payload = backbone_alerts::seal(signer.as_ref(), &subject, &forged_body(id));
        js.publish(subject, payload).await.expect("published").await.expect("stored");
    }
    // The worker's own signed message of the real warning, replayed under another id: the signature covers the
    // subject.
    let real = cluster::alerts::subject("10008", &warning.id).unwrap();
    let stream = js.get_stream(cluster::alerts::STREAM).await.expect("the alerts stream");
    let genuine = stream.get_last_raw_message_by_subject(&real).await.expect("the warning's message");
    let moved = cluster::alerts::subject("10008", "W-FORGED-MOVED").unwrap();
    js.publish(moved, genuine.payload.clone()).await.expect("published").await.expect("stored");
    let deadline = Instant::now() + Duration::from_secs(15);
    for node in &fan {
        for reason in ["unsigned", "unknown_key", "bad_signature"] {
            let sample = format!("dc_cluster_alerts_received_total{{outcome=\"{reason}\"}}");
            while node.metric(&sample).unwrap_or(0.0) < 1.0 {
                assert!(Instant::now() < deadline, "{reason} never counted: {}", node.log());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    println!("forged messages refused and counted on both nodes");

    // fan-1 dies. Its citizen reconnects to fan-2 (the load balancer's choice) while the rain escalates: 豪雨.
    tokio::time::sleep(Duration::from_millis(500)).await;
    fan[0].kill9();
    let killed = Instant::now();
    gauge.publish("sensors/RG0001/readings", rain(60.0, now - 240_000)).await;
    gauge.wait_acks(1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while c1.is_open() {
        assert!(Instant::now() < deadline, "c1's connection outlived its node");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c1.reconnect(fan[1].http).await;
    let next = c1.wait_for(&warning.id, 2, Duration::from_secs(30)).await;
    println!("SIGKILL fan-1 → its citizen's next frame (v2, on fan-2) {:?} after the kill", next - killed);
    c2.wait_for(&warning.id, 2, Duration::from_secs(10)).await;
    // A node that starts now reads the stream's current state before it serves: a new app there gets v2 at once.
    fan[0].restart();
    let c3 = Citizen::connect("c3 (restarted fan-1)", fan[0].http).await;
    c3.wait_for(&warning.id, 2, Duration::from_secs(10)).await;
    println!("fan-1 restarted: a new citizen there got the current warning");

    // The alerts stream's leader dies; the next version (大豪雨) still reaches every citizen once.
    let leader = stream_leader(&urls, cluster::alerts::STREAM).await;
    let index = nats.index_of(&leader).expect("one of ours");
    nats.kill(index);
    let killed = Instant::now();
    println!("SIGKILL alerts-stream leader {leader}");
    gauge.publish("sensors/RG0001/readings", rain(250.0, now - 180_000)).await;
    // The front door's PUBACK waits for the readings stream, which may have lost its leader too.
    let acked = tokio::time::timeout(Duration::from_secs(60), gauge.wait_acks(1)).await;
    assert!(acked.is_ok(), "no PUBACK within 60 s with one node down");
    for c in [&c1, &c2, &c3] {
        // ~5 s of election and the consumers' recovery; 25 s catches the client's default heartbeats (27–35 s).
        let at = c.wait_for(&warning.id, 3, Duration::from_secs(25)).await;
        println!("SIGKILL alerts-stream leader → {}: v3 {:?} after the kill", c.name, at - killed);
    }
    nats.restart(index);

    // Someone with NATS access writes an unsigned copy of the heavy-rain alert onto its own subject, so that it is
    // the subject's last message; then the worker running Shenmu's county dies. The other one takes the counties
    // over, refuses the copy, goes back to the last signed version, continues the alert and its public warning: the
    // next version (超大豪雨) reaches every citizen as v4 of the same warning.
    let alert_id = c2.frames().iter().rev().find(|f| f.id == warning.id).unwrap().json["contributors"][0]["alert_id"]
        .as_str()
        .expect("the warning names its alert")
        .to_string();
    let alert_subject = cluster::alerts::subject("10008", &alert_id).unwrap();
    let stream = js.get_stream(cluster::alerts::STREAM).await.expect("the alerts stream");
    let genuine = stream.get_last_raw_message_by_subject(&alert_subject).await.expect("the alert's message");
    let envelope: serde_json::Value = serde_json::from_slice(&genuine.payload).unwrap();
    let genuine_version = envelope["alert"]["record"]["alert"]["version"].as_u64().expect("a version");
    let plain = envelope["alert"].to_string();
    js.publish(alert_subject.clone(), plain.into()).await.expect("published").await.expect("stored");
    let holder = lease_holder(&js, "10008").await.expect("Shenmu's county has a worker");
    let dead = workers.iter().position(|w| w.name == holder).expect("one of the two workers");
    let [w1, w2] = &mut workers;
    let (dead, survivor) = if dead == 0 { (w1, w2) } else { (w2, w1) };
    dead.kill9();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(40);
    while survivor.owned() < counties {
        assert!(Instant::now() < deadline, "{} did not take over: {}", survivor.name, survivor.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("SIGKILL {} → {} owns every county {:?} later", dead.name, survivor.name, killed.elapsed());
    let refused = survivor.metric("dc_cluster_adopt_refused_total{reason=\"unsigned\"}").unwrap_or(0.0);
    assert!(refused >= 1.0, "{}", survivor.log());
    assert!(survivor.metric("dc_cluster_alerts_adopted").unwrap_or(0.0) >= 1.0, "nothing adopted: {}", survivor.log());
    gauge.publish("sensors/RG0001/readings", rain(150.0, now - 120_000)).await;
    gauge.wait_acks(1).await;
    for c in [&c1, &c2, &c3] {
        let at = c.wait_for(&warning.id, 4, Duration::from_secs(30)).await;
        println!("SIGKILL {} → {}: v4 {:?} after the kill", dead.name, c.name, at - killed);
    }
    // The heavy-rain alert itself went on at the survivor (same id, next version, signed), not raised again under a new id.
    let last = stream.get_last_raw_message_by_subject(&alert_subject).await.expect("the alert's message");
    let envelope: serde_json::Value = serde_json::from_slice(&last.payload).unwrap();
    let body = &envelope["alert"];
    assert_eq!(
        (envelope["format"].as_str(), body["worker"].as_str(), body["record"]["alert"]["version"].as_u64()),
        (Some("dc-signed-alert/1"), Some(survivor.name.as_str()), Some(genuine_version + 1)),
        "{envelope}"
    );

    // Each citizen: no (id, version) twice over all its connections; c2, connected throughout, got every version of
    // every warning it heard of exactly as the stream holds them; none of them heard a forgery.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut stream = warnings_in_stream(&urls).await;
    stream.retain(|id, _| !id.contains("FORGED"));
    println!("public warnings in the stream: {stream:?}");
    assert_eq!(stream.get(&warning.id).map(Vec::as_slice), Some([1, 2, 3, 4].as_slice()), "{stream:?}");
    for c in [&c1, &c2, &c3] {
        c.assert_nothing_twice();
        let heard: Vec<_> = c.frames().iter().map(|f| (f.id.clone(), f.version, f.session)).collect();
        println!("{}: {heard:?}", c.name);
        assert!(c.frames().iter().all(|f| !f.id.contains("FORGED")), "{} heard a forgery: {heard:?}", c.name);
    }
    for (id, versions) in &stream {
        let got: Vec<u64> = c2.frames().iter().filter(|f| &f.id == id).map(|f| f.version).collect();
        if !got.is_empty() {
            assert_eq!(&got, versions, "c2's versions of {id}");
        }
    }
    let c1_versions: Vec<u64> = c1.frames().iter().filter(|f| f.id == warning.id).map(|f| f.version).collect();
    assert_eq!(c1_versions, [1, 2, 3, 4], "c1 across its two nodes");
    for node in fan.iter().chain([&fd, &*survivor]) {
        assert!(!node.log().contains("panicked"), "{}", node.log());
    }
    let applied: f64 =
        fan.iter().map(|n| n.metric("dc_cluster_alerts_received_total{outcome=\"applied\"}").unwrap_or(0.0)).sum();
    println!("applied on the fan-out nodes now running: {applied}");
}
