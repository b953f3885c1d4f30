//! Ingest throughput: our full path beside bare rumqttd and Debian mosquitto, same load generator and payloads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_firmware_sim::{run_load, LoadOptions, LoadSummary};

use crate::server::{demo_devices, free_addr, Server};
use crate::{span, Cli, Row};

fn load_options(cli: &Cli, addr: SocketAddr, devices: Vec<(String, Option<String>)>) -> LoadOptions {
    LoadOptions {
        host: addr.ip().to_string(),
        port: addr.port(),
        connections: cli.publishers,
        rate: 0.0,
        qos: 1,
        duration: span(cli, 20, 3),
        max_inflight: 100,
        devices,
        quiet: true,
        ..LoadOptions::default()
    }
}

/// The rate at which messages left the broker into `counter`, over the load's own elapsed time.
fn rate(count: u64, summary: &LoadSummary) -> f64 {
    count as f64 / summary.elapsed.as_secs_f64().max(1e-9)
}

pub async fn ingest(cli: &Cli) -> anyhow::Result<Vec<Row>> {
    // Ours: validated readings counted by the server itself.
    let server = Server::start(&cli.server)?;
    let before = server.metric("dc_ingest_readings_accepted_total");
    let ours = run_load(&load_options(cli, server.mqtt, demo_devices())).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let validated = (server.metric("dc_ingest_readings_accepted_total") - before) as u64;
    let ours_rate = rate(validated, &ours);
    println!("ours: {validated} validated readings, {:.0}/s (load: {ours})", ours_rate);
    drop(server);

    // Bare rumqttd: its own listener into a local link, no validation, no rules.
    let (addr, counter) = bare_rumqttd()?;
    let bare = run_load(&load_options(cli, addr, Vec::new())).await?;
    let bare_count = settle(&counter).await;
    let bare_rate = rate(bare_count, &bare);
    println!("bare rumqttd: {bare_count} messages into the local link, {bare_rate:.0}/s");

    // Debian mosquitto relaying to one subscriber.
    let mosquitto = match mosquitto_relay(cli).await {
        Ok(r) => r,
        Err(e) => {
            println!("mosquitto: {e:#}");
            0.0
        }
    };
    println!("mosquitto: {mosquitto:.0}/s relayed");
    Ok(vec![
        Row {
            name: "ingest: validated readings/s (full path)".into(),
            figure: ours_rate,
            unit: "readings/s",
            peer: Some(("mosquitto relay".into(), mosquitto)),
            target: "≥ 250000".into(),
            met: Some(ours_rate >= 250_000.0),
        },
        Row {
            name: "ingest: bare rumqttd local link".into(),
            figure: bare_rate,
            unit: "msgs/s",
            peer: Some(("ours".into(), ours_rate)),
            target: "-".into(),
            met: None,
        },
    ])
}

/// Waits until the counter stops moving (the broker has drained), then returns it.
async fn settle(counter: &AtomicU64) -> u64 {
    let mut last = counter.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = counter.load(Ordering::Relaxed);
        if now == last {
            return now;
        }
        last = now;
    }
}

fn bare_rumqttd() -> anyhow::Result<(SocketAddr, Arc<AtomicU64>)> {
    use rumqttd::{Broker, Config, ConnectionSettings, Notification, RouterConfig, ServerSettings};
    let addr = free_addr();
    let connections = ConnectionSettings {
        connection_timeout_ms: 5000,
        max_payload_size: 256 * 1024,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let settings =
        ServerSettings { name: "bare".into(), listen: addr, tls: None, next_connection_delay_ms: 0, connections };
    let config = Config {
        router: RouterConfig {
            max_connections: 1000,
            max_outgoing_packet_count: 200,
            max_segment_size: 4 * 1024 * 1024,
            max_segment_count: 4,
            ..Default::default()
        },
        v4: Some(HashMap::from([("bare".to_string(), settings)])),
        ..Default::default()
    };
    let mut broker = Broker::new(config);
    let (mut tx, mut rx) = broker.link("count").map_err(|e| anyhow::anyhow!("{e}"))?;
    tx.subscribe("sensors/+/readings").map_err(|e| anyhow::anyhow!("{e}"))?;
    // `start` blocks for the broker's life; its (large, rumqttd-owned) error ends only the benchmark's peer.
    std::thread::spawn(move || {
        if let Err(e) = broker.start() {
            eprintln!("bare rumqttd stopped: {e}");
        }
    });
    let counter = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&counter);
    std::thread::spawn(move || {
        let _tx = tx;
        while let Ok(n) = rx.recv() {
            match n {
                Some(Notification::Forward(_)) => {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                Some(Notification::Unschedule) if rx.ready().is_err() => {
                    break;
                }
                _ => {}
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "bare rumqttd did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((addr, counter))
}

async fn mosquitto_relay(cli: &Cli) -> anyhow::Result<f64> {
    let addr = free_addr();
    let conf = std::env::temp_dir().join(format!("dc-bench-mosquitto-{}.conf", addr.port()));
    std::fs::write(
        &conf,
        format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n",
            addr.port()
        ),
    )?;
    let mut child = Command::new("mosquitto")
        .args(["-c", &conf.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("mosquitto: {e} (apt-get install mosquitto)"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "mosquitto did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counter = Arc::new(AtomicU64::new(0));
    let mut opts = rumqttc::MqttOptions::new("bench-sub", addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 1000);
    client.subscribe("sensors/+/readings", rumqttc::QoS::AtMostOnce).await?;
    let c = Arc::clone(&counter);
    let sub = tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(_)) = event {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let load = run_load(&load_options(cli, addr, Vec::new())).await?;
    let relayed = settle(&counter).await;
    sub.abort();
    let _ = child.kill();
    let _ = child.wait();
    Ok(rate(relayed, &load))
}
