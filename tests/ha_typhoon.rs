//! High availability on NATS JetStream (issue 23): the whole system through a typhoon. Three NATS nodes; two front
//! doors, two rule workers (signing), one dissemination node, two fan-out nodes (both trusting the workers' keys);
//! field devices at QoS 1 provisioned with both front doors (the simulator's firmware delivery, failing over to the
//! other when a connection dies: `common::ha_peers::FieldDevice`); a receiver standing in for the webhook subscribers
//! and the carriers' CBCs, counting delivery ids; a citizen's app on each fan-out node.
//!
//! Rain rises at Shenmu (RG0001, Nantou, county 10008) while other devices report steadily. SIGKILLed in turn, each
//! restarted after a while: the readings stream's JetStream leader, the rule worker running Nantou, a front door, the
//! dissemination node; after each kill the rain rises to the next level (大雨, 豪雨, 大豪雨, 超大豪雨; the dissemination
//! node dies while delivering the last), and the time from the kill to the next alert frame at each citizen (for the
//! dissemination node: at a receiver) is printed.
//!
//! Asserted: every reading a device got a PUBACK for (every reading sent: none is given up) is in the readings
//! stream exactly once; the heavy-rain alert is raised once, its versions each once and in order, and no hazard has
//! two alerts; the public warning's versions reach the citizens on both fan-out nodes once each; every delivery id
//! the ledger recorded reached the receiver, no id twice unless as a retry, what was in flight at the dissemination
//! node's death was sent again, and the media subscriber got every version. Then two of three NATS nodes die: devices get no PUBACK (the front doors refuse to acknowledge what they
//! cannot replicate) and get them again once one node returns, with nothing lost.
//!
//! Devices are driven by the simulator's courier rather than `run_scenario`'s timed script: each level must follow
//! a kill, and how long a kill and restart take depends on the machine's load.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::test_support::NatsCluster;
use common::cluster_node::{
    alert_versions, assert_no_alert_doubled_or_lost, lease_holder, trusted_worker, worker_key, AlertVersion,
    ClusterNode as Node,
};
use common::config_copy;
use common::ha_peers::{
    assert_deliveries_once_or_retried, deliver_to, rain, reading_key, readings_in_stream, receiver, request_after,
    settled_ledger, stream_leader, warnings_in_stream, webhook_versions_without_gaps, Citizen, FieldDevice,
};
use parking_lot::Mutex;

/// The devices reporting steadily besides the rising rain: device, county, payload at reading `n` stamped `ts`.
/// Neither raises anything (a dry road, clean air).
const STEADY: [(&str, &str); 2] = [("RF0001", "10008"), ("AQ0001", "10009")];

fn steady_reading(device: &str, ts: i64, n: u64) -> String {
    match device {
        "RF0001" => {
            format!(r#"{{"ts":{ts},"values":{{"flood_depth_cm":0.0,"battery_v":{}}}}}"#, 12.0 + (n % 10) as f64 * 0.01)
        }
        _ => format!(r#"{{"ts":{ts},"values":{{"pm25_ugm3":{}}}}}"#, 8 + n % 5),
    }
}

/// Rain at Shenmu: each amount crosses the next level of `heavy-rain` (50 mm in 1 h: 大雨; 110 in 3 h: 豪雨; 360 in
/// 24 h: 大豪雨; 560: 超大豪雨).
const RISES: [f64; 4] = [50.0, 60.0, 250.0, 200.0];

/// A reading's time: a second ago. A reading stamped with the very millisecond it arrives in is taken for one
/// without a time of its own, whose publish id includes the arrival (`scale_out/front_door.rs`), which this test
/// does not compute.
fn stamp() -> i64 {
    common::now_ms() - 1000
}

/// What every device sent, to compare with the readings stream: (device, county, payload).
type Sent = Arc<Mutex<Vec<(String, String, String)>>>;

/// A steadily reporting device: a reading every 250 ms, handed to its firmware without waiting (the firmware buffers
/// and resends); returns the device when `stop` is set.
fn report_steadily(
    device: &'static str,
    county: &'static str,
    front_doors: [std::net::SocketAddr; 2],
    sent: Sent,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<FieldDevice> {
    tokio::spawn(async move {
        let field = FieldDevice::start(device, &front_doors);
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let body = steady_reading(device, stamp(), n);
            field.send(&body);
            sent.lock().push((device.into(), county.into(), body));
            n += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        field
    })
}

/// Both citizens' first frame of version `version` of the warning (any warning when `id` is empty); prints the time
/// from `killed` to each.
async fn next_frame(citizens: &[&Citizen], id: &str, version: u64, killed: Instant, what: &str) -> Vec<Duration> {
    let mut gaps = Vec::new();
    for c in citizens {
        // Generous: an election (~5 s), a lease ttl (5 s) and a restart under load, then the consumers' recovery.
        let at = c.wait_for(id, version, Duration::from_secs(90)).await;
        let gap = at.duration_since(killed);
        println!("SIGKILL {what} → {}: v{version} {gap:?} after the kill", c.name);
        gaps.push(gap);
    }
    gaps
}

async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool, log: impl Fn() -> String) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}\n{}", log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typhoon_loses_no_reading_and_no_warning_through_a_kill_of_each_role() {
    let started = Instant::now();
    let mut nats = NatsCluster::start("ha-typhoon");
    let urls = nats.urls();
    let args = nats.urls_arg();
    let dir = nats.dir.join("processes");
    std::fs::create_dir_all(&dir).unwrap();
    // Every request is held 2 s, so that deliveries of a new version are still in flight seconds later.
    let (recv, received) = receiver(Duration::from_secs(2)).await;
    let trusted: String = ["w-1", "w-2"].into_iter().map(|w| trusted_worker(w, &worker_key(&dir, w).1)).collect();
    // Leases at their default ttl (10 s): a shorter one can expire while the leases bucket elects a new leader after
    // a node's SIGKILL, and a worker that finds its region taken exits for its supervisor to restart it (seen here
    // with 5 s: both workers exited, and nothing in this test restarts them). A front door gives a publish up after
    // 10 s (the shortest allowed) so the quorum-loss phase stays short.
    let config = config_copy("ha-typhoon", |text| text + "\n[cluster]\npublish_deadline_s = 10\n" + &trusted);
    deliver_to(&config, recv);

    let mut fd = [
        Node::start(&config, &dir, &args, "fd-1", "front-door", &[]),
        Node::start(&config, &dir, &args, "fd-2", "front-door", &[]),
    ];
    let mut workers = [Node::worker(&config, &dir, &args, "w-1"), Node::worker(&config, &dir, &args, "w-2")];
    let counties = 6.0;
    wait_until(
        "the workers split the counties",
        Duration::from_secs(90),
        || workers[0].owned() + workers[1].owned() == counties && workers.iter().all(|w| w.owned() > 0.0),
        || format!("{}\n{}", workers[0].log(), workers[1].log()),
    )
    .await;
    let mut d1 = Node::start(&config, &dir, &args, "d-1", "dissemination", &[]);
    wait_until("d-1 active", Duration::from_secs(60), || d1.active(), || d1.log()).await;
    let fan = [
        Node::start(&config, &dir, &args, "fan-1", "fan-out", &[]),
        Node::start(&config, &dir, &args, "fan-2", "fan-out", &[]),
    ];
    let c1 = Citizen::connect("c1 (fan-1)", fan[0].http).await;
    let c2 = Citizen::connect("c2 (fan-2)", fan[1].http).await;
    let citizens = [&c1, &c2];
    let js = async_nats::jetstream::new(cluster::test_support::admin_client(&urls).await);
    println!("cluster up in {:?}", started.elapsed());

    // The devices: steady reporters (first front doors alternating) and the rain gauge.
    let addrs = [fd[0].mqtt, fd[1].mqtt];
    let sent: Sent = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let steady: Vec<_> = STEADY
        .iter()
        .enumerate()
        .map(|(i, (device, county))| {
            let order = if i % 2 == 0 { addrs } else { [addrs[1], addrs[0]] };
            report_steadily(device, county, order, Arc::clone(&sent), Arc::clone(&stop))
        })
        .collect();
    let gauge = FieldDevice::start("RG0001", &addrs);
    let rain_at_shenmu = |mm: f64| {
        let body = rain(mm, stamp());
        gauge.send(&body);
        sent.lock().push(("RG0001".into(), "10008".into(), body));
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut gaps: Vec<(String, Vec<Duration>)> = Vec::new();

    // 1. The readings stream's leader dies; the rain reaches 大雨 meanwhile: the warning is raised.
    let leader = stream_leader(&urls, cluster::readings::STREAM).await;
    let node = nats.index_of(&leader).expect("one of ours");
    nats.kill(node);
    let killed = Instant::now();
    rain_at_shenmu(RISES[0]);
    let what = format!("readings-stream leader {leader}");
    gaps.push((what.clone(), next_frame(&citizens, "", 1, killed, &what).await));
    let frames = c2.frames();
    let raised = frames.iter().find(|f| f.json["event"] == "heavy_rain").expect("the heavy-rain warning");
    let warning = raised.id.clone();
    assert!(warning.starts_with("W-") && raised.version == 1, "{:?}", raised.json);
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.restart(node);

    // 2. The worker running Nantou dies; the rain reaches 豪雨: the other worker continues the alert.
    let holder = lease_holder(&js, "10008").await.expect("Nantou has a worker");
    let dead = workers.iter().position(|w| w.name == holder).expect("one of the two workers");
    workers[dead].kill9();
    let killed = Instant::now();
    rain_at_shenmu(RISES[1]);
    let what = format!("worker {holder}");
    gaps.push((what.clone(), next_frame(&citizens, &warning, 2, killed, &what).await));
    tokio::time::sleep(Duration::from_secs(2)).await;
    workers[dead].restart();

    // 3. The rain gauge's front door dies; the rain reaches 大豪雨, sent at once: the gauge's firmware must take it
    // to the other front door.
    let victim = gauge.front_door();
    let name = fd[victim].name.clone();
    fd[victim].kill9();
    let killed = Instant::now();
    rain_at_shenmu(RISES[2]);
    let what = format!("front door {name} (the rain gauge's)");
    gaps.push((what.clone(), next_frame(&citizens, &warning, 3, killed, &what).await));
    tokio::time::sleep(Duration::from_secs(2)).await;
    fd[victim].restart();

    // 4. The rain reaches 超大豪雨, and the dissemination node dies while delivering it (a request held at the
    // receiver). Citizens hear it from the fan-out nodes meanwhile; the receivers once d-1 is back, which sends what
    // it had in flight again, as a retry. The dissemination node is on no citizen's path: its gap is to the next
    // delivery.
    let sent_before = received.lock().seen.len();
    let rained = Instant::now();
    rain_at_shenmu(RISES[3]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.lock().in_flight == 0 || received.lock().seen.len() <= sent_before {
        assert!(Instant::now() < deadline, "no delivery of 超大豪雨 in flight within 60 s: {}", d1.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = received.lock().seen.len();
    let in_flight = received.lock().in_flight;
    d1.kill9();
    let killed = Instant::now();
    for c in citizens {
        let at = c.wait_for(&warning, 4, Duration::from_secs(90)).await;
        println!("{}: v4 {:?} after the rain (d-1 killed {:?} after it)", c.name, at - rained, killed - rained);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    d1.restart();
    wait_until("the restarted d-1 active", Duration::from_secs(60), || d1.active(), || d1.log()).await;
    let next = request_after(&received, before, Duration::from_secs(60), || d1.log()).await;
    println!("SIGKILL dissemination d-1 ({in_flight} requests in flight) → next delivery {:?} later", next - killed);
    gaps.push(("dissemination d-1 (next delivery at a receiver)".into(), vec![next - killed]));

    // The alert: raised once, each version once and in order, up to 超大豪雨, whoever wrote it.
    let versions = alert_versions(&js).await;
    assert_no_alert_doubled_or_lost(&versions);
    let heavy: Vec<&AlertVersion> =
        versions.iter().filter(|v| v.rule == "heavy-rain" && v.area == "dfa-xinyi-shenmu").collect();
    println!(
        "heavy rain at Shenmu: {:?}",
        heavy.iter().map(|v| (&v.id, v.version, v.level, &v.state, &v.worker)).collect::<Vec<_>>()
    );
    assert_eq!(heavy.iter().map(|v| v.level).max(), Some(3), "the alert did not reach 超大豪雨: {heavy:#?}");
    assert_eq!(heavy.iter().filter(|v| v.state == "raised").count(), 1, "raised more than once: {heavy:#?}");
    // The public warnings (heavy rain, and the debris-flow warning the rain brings): in the stream each version
    // once; at each citizen (all of them are at Shenmu) every version once, in order. Heavy rain's: 1–4.
    let warnings = warnings_in_stream(&urls).await;
    println!("public warnings in the stream: {warnings:?}");
    assert_eq!(warnings.get(&warning).map(Vec::as_slice), Some([1, 2, 3, 4].as_slice()), "{warnings:?}");
    for c in citizens {
        c.assert_nothing_twice();
        for (id, versions) in &warnings {
            let got: Vec<u64> = c.frames().iter().filter(|f| &f.id == id).map(|f| f.version).collect();
            assert_eq!(&got, versions, "{}: the versions of {id}", c.name);
        }
    }
    // Deliveries: every recorded id reached the receiver, none twice unless a retry; the media subscriber got every
    // version of the warning.
    let entries = settled_ledger(&urls, &received, Duration::from_secs(90), || d1.log()).await;
    let seen = received.lock().seen.clone();
    let (per_id, retries) = assert_deliveries_once_or_retried(&seen, &entries);
    let hooks = webhook_versions_without_gaps(&seen);
    let media = hooks.iter().filter(|((path, _), _)| *path == "hook/media").map(|(_, v)| v.len()).max();
    assert_eq!(media, Some(4), "the media subscriber did not get the four versions: {hooks:?}");
    println!(
        "{} requests, {} delivery ids, {retries} retries; webhooks per warning: {hooks:?}",
        seen.len(),
        per_id.len()
    );
    assert!(retries >= 1, "the {in_flight} deliveries in flight at d-1's death were not sent again: {per_id:#?}");

    // 5. Two of three NATS nodes die: no quorum. Devices keep sending and get no PUBACK (their front door holds each
    // publish 10 s, closes the connection; the firmware tries the other; and so on) — until one node returns.
    let survivor = stream_leader(&urls, cluster::readings::STREAM).await;
    let survivor = nats.index_of(&survivor).expect("one of ours");
    let gone: Vec<usize> = (0..3).filter(|&i| i != survivor).collect();
    for &i in &gone {
        nats.kill(i);
    }
    let killed = Instant::now();
    println!("SIGKILL {} and {}: one node of three left", nats.name(gone[0]), nats.name(gone[1]));
    let gauge_acked = gauge.acked();
    rain_at_shenmu(0.0); // a reading sent into the outage: it must be kept, not acknowledged and lost
                         // What was acknowledged just before the kill may still come in; then nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let unavailable = |fd: &[Node; 2]| -> f64 {
        fd.iter().filter_map(|f| f.metric("dc_cluster_appends_total{outcome=\"unavailable\"}")).sum()
    };
    let refused_before = unavailable(&fd);
    let sent_at_outage = sent.lock().len();
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(gauge.acked(), gauge_acked, "a PUBACK without a quorum: the reading could be lost");
    assert!(unavailable(&fd) > refused_before, "the front doors never gave a publish up");
    let not_durable: f64 = fd.iter().filter_map(|f| f.metric("dc_ingest_disconnects_total{why=\"not_durable\"}")).sum();
    assert!(not_durable >= 1.0, "no connection was closed unacknowledged");
    let held = sent.lock().len() - sent_at_outage;
    nats.restart_nowait(gone[0]);
    let back = Instant::now();
    assert!(gauge.wait_acked(gauge_acked + 1, Duration::from_secs(90)).await, "no PUBACK after a node returned");
    println!(
        "{} back {:?} after the double kill: the gauge's reading acknowledged {:?} later ({held} readings sent meanwhile)",
        nats.name(gone[0]),
        back - killed,
        back.elapsed()
    );
    nats.wait_healthy(gone[0], Duration::from_secs(60));

    // Every reading sent — each acknowledged in the end — is in the readings stream exactly once.
    stop.store(true, Ordering::Relaxed);
    let mut devices = vec![gauge];
    for s in steady {
        devices.push(s.await.expect("reporter ran"));
    }
    let total = sent.lock().len() as u64;
    for d in &devices {
        let mine = sent.lock().iter().filter(|(id, _, _)| *id == d.id).count() as u64;
        assert!(d.wait_acked(mine, Duration::from_secs(90)).await, "{}: {} of {mine} acknowledged", d.id, d.acked());
    }
    let mut failovers = 0;
    for d in devices {
        let id = d.id.clone();
        let delivery = d.finish().await;
        println!(
            "{id}: {} acknowledged, {} resent, {} turns to the other front door, {} left",
            delivery.acked, delivery.resent, delivery.failovers, delivery.left
        );
        assert_eq!(delivery.left, 0, "{id} left readings unacknowledged");
        failovers += delivery.failovers;
    }
    assert!(failovers >= 1, "no device turned to the other front door");
    let contents = readings_in_stream(&urls).await;
    for (device, county, body) in sent.lock().iter() {
        let copies = contents.get(&reading_key(device, county, body));
        assert_eq!(copies, Some(&1), "acknowledged reading {device} {body} stored {copies:?} times");
    }
    assert!(contents.values().all(|&c| c == 1), "a reading stored twice");
    assert_eq!(contents.len() as u64, total, "the stream holds readings no device sent");
    println!("readings stream: {} readings, each once; {failovers} failovers", contents.len());

    println!("kill → next alert frame (at the citizens on fan-1 and fan-2; for d-1 at a receiver):");
    for (what, gap) in &gaps {
        println!("  {what}: {gap:?}");
    }
    for n in fd.iter().chain(&workers).chain(&fan).chain([&d1]) {
        assert!(!n.log().contains("panicked"), "{}: {}", n.name, n.log());
    }
    println!("typhoon test took {:?}", started.elapsed());
}
