//! Firmware behaviour without a broker, in paused tokio time: the store-and-forward buffer's exact counts, backoff
//! delays between attempts, no attempts while the link is down, and a whole scenario run against a dead port.

use std::sync::Arc;
use std::time::Duration;

use gateway_firmware_sim::courier::{Courier, CourierConfig, Live, Parcel, Wake};
use gateway_firmware_sim::link::{LinkConfig, LinkEvent};
use gateway_firmware_sim::{run_scenario, Device, Fleet, RunOptions, Scenario};
use tokio::time::{timeout, Instant};

/// A port nothing listens on: bind, note, close.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn config(port: u16, buffer: usize, initial_ms: u64, max_ms: u64) -> CourierConfig {
    CourierConfig {
        link: LinkConfig {
            host: "127.0.0.1".into(),
            port,
            client_id: "RG0001".into(),
            credentials: Some(("RG0001".into(), "pw".into())),
            keep_alive: Duration::from_secs(5),
            will: Some(("sensors/RG0001/status".into(), r#"{"online":false}"#.into())),
            max_inflight: 10,
            max_packet_size: 64 * 1024,
        },
        qos: 1,
        buffer,
        backoff_initial: Duration::from_millis(initial_ms),
        backoff_max: Duration::from_millis(max_ms),
        seed: 3,
        failover: Vec::new(),
    }
}

fn parcel(n: u32) -> Parcel {
    Parcel {
        topic: "sensors/RG0001/readings".into(),
        payload: format!("{{\"n\":{n}}}").into_bytes().into(),
        readings: 1,
        attempts: 0,
    }
}

#[tokio::test(start_paused = true)]
async fn full_buffer_drops_the_oldest_and_counts_exactly() {
    let live = Arc::new(Live::default());
    let mut c = Courier::new(config(dead_port(), 4, 100, 400), live.clone());
    for n in 0..10 {
        c.enqueue(parcel(n));
    }
    // A few failed connection attempts change nothing: never sent, never acknowledged, still the newest four.
    for _ in 0..6 {
        let w = c.wait().await;
        c.handle(w);
    }
    assert_eq!(c.buffered(), 4);
    let d = c.finish().await;
    assert_eq!((d.queued, d.acked, d.dropped, d.left, d.sent), (10, 0, 6, 4, 0));
    assert_eq!(d.peak_buffered, 4);
    assert!(d.connect_failures >= 1 && d.connects == 0);
    assert!(d.last_error.is_some(), "the reason of the last failure is kept for the summary");
    assert_eq!(live.dropped.load(std::sync::atomic::Ordering::Relaxed), 6);
    assert_eq!(live.pending.load(std::sync::atomic::Ordering::Relaxed), 0, "every message is accounted for");
}

#[tokio::test(start_paused = true)]
async fn reconnect_delays_grow_exponentially_with_jitter_up_to_the_cap() {
    let mut c = Courier::new(config(dead_port(), 10, 1000, 8000), Arc::new(Live::default()));
    let mut closed_at = None;
    let mut delays = Vec::new();
    while delays.len() < 7 {
        match c.wait().await {
            Wake::ReconnectDue => {
                if let Some(t) = closed_at.take() {
                    delays.push(Instant::now() - t);
                }
                c.handle(Wake::ReconnectDue);
            }
            w @ Wake::Link(LinkEvent::Closed(_)) => {
                c.handle(w);
                closed_at = Some(Instant::now());
            }
            w => c.handle(w),
        }
    }
    // Ceilings 1, 2, 4, 8, 8, 8, 8 s; each delay lies in [ceiling/2, ceiling] (equal jitter).
    let ceilings = [1u64, 2, 4, 8, 8, 8, 8];
    for (d, c) in delays.iter().zip(ceilings) {
        let c = Duration::from_secs(c);
        assert!(
            *d >= c / 2 && *d <= c + Duration::from_millis(1),
            "delay {d:?} outside [{:?}, {c:?}] in {delays:?}",
            c / 2
        );
    }
    let distinct: std::collections::BTreeSet<_> = delays[3..].iter().collect();
    assert!(distinct.len() > 1, "jitter: capped delays still differ {delays:?}");
}

#[tokio::test(start_paused = true)]
async fn no_attempts_while_the_link_is_down_and_an_immediate_one_when_it_returns() {
    let mut c = Courier::new(config(dead_port(), 10, 1000, 8000), Arc::new(Live::default()));
    // Fail a few times so the backoff is long.
    let mut failures = 0;
    while failures < 4 {
        let w = c.wait().await;
        if matches!(w, Wake::Link(LinkEvent::Closed(_))) {
            failures += 1;
        }
        c.handle(w);
    }
    c.link_lost();
    c.enqueue(parcel(1));
    assert!(timeout(Duration::from_secs(3600), c.wait()).await.is_err(), "a device without a link must not try");
    c.link_restored();
    let t = Instant::now();
    let w = c.wait().await;
    assert!(matches!(w, Wake::ReconnectDue));
    assert_eq!(Instant::now(), t, "the link is back: connect now, not after the old backoff");
    let d = c.finish().await;
    assert_eq!((d.queued, d.left, d.dropped), (1, 1, 0));
}

fn one_gauge_fleet() -> Fleet {
    let mut fleet = Fleet::default();
    fleet.insert(Device {
        id: "RG0001".into(),
        password: Some("pw".into()),
        kind: "rain_gauge".into(),
        lat: 23.5185,
        lon: 120.928,
        interval_s: 60,
        metrics: vec!["rain_mm".into()],
        mobile: false,
        zone: None,
    });
    fleet
}

#[tokio::test(start_paused = true)]
async fn a_scenario_against_a_dead_broker_keeps_the_newest_and_reports_the_rest_missing() {
    let scenario = Scenario::from_toml(
        r#"
[scenario]
name = "dead"
span = "1h"
compression = 60.0
[firmware]
buffer = 25
heartbeat = "2h"
drain_timeout = "20s"
[[track]]
device = "RG0001"
metric = "rain_mm"
points = [["0h", 5.0]]
"#,
        "dead.toml",
    )
    .unwrap();
    let opts = RunOptions { port: dead_port(), quiet: true, ..RunOptions::for_scenario(&scenario) };
    let started = Instant::now();
    let s = run_scenario(&one_gauge_fleet(), &scenario, &opts).await.unwrap();
    assert_eq!(s.readings, 60, "one reading a minute for an hour");
    assert_eq!(s.planned, 61, "plus one heartbeat");
    assert_eq!((s.acked, s.buffered, s.dropped), (0, 25, 36));
    assert_eq!(s.missing(), 61);
    assert!(!s.is_complete());
    assert!(s.errors[0].starts_with("RG0001: "), "{:?}", s.errors);
    assert!(s.to_string().contains("MISSING  61 messages never acknowledged"), "{s}");
    // The last reading is due 59-60 s into the run (1 h at 60x, from a random phase), then the 20 s drain timeout.
    let took = Instant::now() - started;
    assert!(took >= Duration::from_secs(79) && took <= Duration::from_secs(81), "{took:?}");
}
