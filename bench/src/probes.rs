//! Latency, fan-out and memory: probes against the real binary over MQTT and websockets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gateway_firmware_sim::{now_ms, run_load, LoadOptions};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::server::{demo_devices, Server, TOKEN};
use crate::{span, Cli, Row};

/// Tens of thousands of sockets need more descriptors than the machine's default (1024, or a hard limit such as 20,000
/// that 20k citizens plus the server's own files exceed); children inherit the raised limit. As root the hard limit
/// can be raised too; otherwise the soft limit goes as high as the hard one allows.
#[allow(unsafe_code)] // getrlimit/setrlimit have no safe wrapper in std or libc.
pub fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            let raised = libc::rlimit { rlim_cur: want, rlim_max: want.max(lim.rlim_max) };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                lim.rlim_cur = want.min(lim.rlim_max);
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn mqtt_client(server: &Server, id: &str) -> anyhow::Result<(rumqttc::AsyncClient, tokio::task::JoinHandle<()>)> {
    let password = demo_devices().into_iter().find(|(d, _)| d == id).and_then(|(_, p)| p).unwrap_or_default();
    let mut opts = rumqttc::MqttOptions::new(id.to_string(), server.mqtt.ip().to_string(), server.mqtt.port());
    opts.set_credentials(id, password);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 100);
    let task = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    Ok((client, task))
}

/// Publish → operator websocket frame, with background load at several rates.
pub async fn latency(cli: &Cli) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for background in [0.0, 10_000.0, 50_000.0] {
        let server = Server::start(&cli.server)?;
        let mut request = format!("ws://{}/ws/operator", server.http).into_client_request()?;
        request.headers_mut().insert("Authorization", format!("Bearer {TOKEN}").parse()?);
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
        ws.next().await; // snapshot
        let load = (background > 0.0).then(|| {
            let opts = LoadOptions {
                host: server.mqtt.ip().to_string(),
                port: server.mqtt.port(),
                connections: cli.publishers,
                rate: background,
                duration: span(cli, 60, 6),
                devices: demo_devices().into_iter().filter(|(d, _)| d != "RF0001").collect(),
                quiet: true,
                ..LoadOptions::default()
            };
            tokio::spawn(async move { run_load(&opts).await })
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The road-flood rule has no minimum duration: 40 cm raises, 0 cm clears — one alert change per publish.
        let (probe, task) = mqtt_client(&server, "RF0001").await?;
        let mut samples = Vec::new();
        let probes = if cli.quick { 10 } else { 200 };
        // The first publishes also pay for the probe's MQTT connect and password check: warm up, then measure.
        let warmup = 2;
        let mut ts = now_ms() - 10_000;
        for i in 0..probes + warmup {
            let depth = if i % 2 == 0 { 40 } else { 0 };
            ts += 1;
            let start = Instant::now();
            probe
                .publish(
                    "sensors/RF0001/readings",
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    format!(r#"{{"ts":{ts},"values":{{"flood_depth_cm":{depth}}}}}"#),
                )
                .await?;
            let deadline = start + Duration::from_secs(5);
            loop {
                let frame = tokio::time::timeout_at(deadline.into(), ws.next()).await;
                match frame {
                    Ok(Some(Ok(Message::Text(t)))) if t.contains("\"type\":\"alert\"") && t.contains("road_flood") => {
                        if i >= warmup {
                            samples.push(start.elapsed().as_secs_f64() * 1000.0);
                        }
                        break;
                    }
                    Ok(Some(Ok(_))) => continue,
                    _ => break,
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        task.abort();
        if let Some(l) = load {
            l.abort();
        }
        samples.sort_by(f64::total_cmp);
        let (p50, p99, max) =
            (percentile(&samples, 0.5), percentile(&samples, 0.99), samples.last().copied().unwrap_or(f64::NAN));
        println!("latency at {background:.0} readings/s: {} of {probes} probes, p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms", samples.len());
        rows.push(Row {
            name: format!("alert latency p99 @ {}k readings/s (p50 {p50:.2}, max {max:.2} ms)", background / 1000.0),
            figure: p99,
            unit: "ms",
            peer: None,
            target: if background >= 50_000.0 { "< 10 ms".into() } else { "-".into() },
            met: (background >= 50_000.0).then_some(p99 < 10.0 && samples.len() == probes),
        });
    }
    Ok(rows)
}

/// N citizen connections, one alert to all.
/// The soft open-file limit of this process (after `raise_fd_limit`); the server inherits it.
#[allow(unsafe_code)] // getrlimit has no safe wrapper in std or libc.
fn fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        u64::MAX
    }
}

pub async fn fanout(cli: &Cli) -> anyhow::Result<Vec<Row>> {
    let wanted = if cli.quick { 1000.min(cli.citizens) } else { cli.citizens };
    // One server process holds every connection, plus its listeners, database and journal files: where the hard limit
    // cannot be raised (no CAP_SYS_RESOURCE), measure as many connections as it leaves rather than fail half-way.
    let cap = fd_limit().saturating_sub(100) as usize;
    let n = wanted.min(cap);
    if n < wanted {
        println!("fanout: the open-file limit ({}) leaves room for {n} connections, not {wanted}", fd_limit());
    }
    let server = Server::start(&cli.server)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = server.rss_kib();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let ready = Arc::new(tokio::sync::Semaphore::new(0));
    let url = format!("ws://{}/ws/citizen", server.http);
    let mut tasks = Vec::with_capacity(n);
    let connect_limit = Arc::new(tokio::sync::Semaphore::new(256));
    for i in 0..n {
        let (url, tx, ready, limit) = (url.clone(), tx.clone(), Arc::clone(&ready), Arc::clone(&connect_limit));
        // Spread the clients over 127.0.0.x sources: one source address has only ~28k ephemeral ports.
        let source = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i / 20_000) as u8);
        tasks.push(tokio::spawn(async move {
            let permit = limit.acquire().await.ok()?;
            let socket = tokio::net::TcpSocket::new_v4().ok()?;
            socket.bind((source, 0).into()).ok()?;
            let addr: std::net::SocketAddr = url.trim_start_matches("ws://").split('/').next()?.parse().ok()?;
            let stream = socket.connect(addr).await.ok()?;
            let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), stream).await.ok()?;
            ws.send(Message::Text(
                r#"{"type":"subscribe","places":[{"lat":23.5185,"lon":120.928}],"lang":"zh-TW"}"#.into(),
            ))
            .await
            .ok()?;
            ws.next().await?.ok()?; // subscribed
            drop(permit);
            ready.add_permits(1);
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    if t.contains("\"type\":\"alert\"") {
                        let _ = tx.send(Instant::now());
                        break;
                    }
                }
            }
            // Hold the connection until the benchmark ends.
            std::future::pending::<()>().await;
            Some(())
        }));
    }
    let connect_start = Instant::now();
    let connected = loop {
        let have = ready.available_permits();
        if have >= n || connect_start.elapsed() > Duration::from_secs(300) {
            break have;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("fanout: {connected} of {n} citizens connected in {:.1} s", connect_start.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_held = server.rss_kib();
    let per_conn_kib = (rss_held.saturating_sub(rss_before)) as f64 / connected.max(1) as f64;
    let (probe, task) = mqtt_client(&server, "RG0001").await?;
    let start = Instant::now();
    probe
        .publish(
            "sensors/RG0001/readings",
            rumqttc::QoS::AtLeastOnce,
            false,
            format!(r#"{{"ts":{},"values":{{"rain_mm":120}}}}"#, now_ms()),
        )
        .await?;
    let mut times = Vec::with_capacity(connected);
    while times.len() < connected {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(t)) => times.push(t.duration_since(start).as_secs_f64() * 1000.0),
            _ => break,
        }
    }
    task.abort();
    for t in tasks {
        t.abort();
    }
    times.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    println!(
        "fanout: {} of {connected} delivered, p50 {p50:.1} ms, p99 {p99:.1} ms; server RSS {rss_before} → {rss_held} KiB ({per_conn_kib:.1} KiB per connection)",
        times.len()
    );
    Ok(vec![
        Row {
            name: format!(
                "citizen fan-out p99, {connected} connections{} (p50 {p50:.1} ms)",
                if n < wanted { format!(" (open-file limit; {wanted} asked)") } else { String::new() }
            ),
            figure: p99,
            unit: "ms",
            peer: None,
            target: "< 1000 ms at 20k".into(),
            met: Some(connected >= 20_000.min(n) && times.len() == connected && p99 < 1000.0),
        },
        Row {
            name: "citizen connection memory".into(),
            figure: per_conn_kib,
            unit: "KiB/conn",
            peer: None,
            target: "≤ 16".into(),
            met: Some(per_conn_kib <= 16.0),
        },
    ])
}

/// RSS through a flood at the maximum rate: the bounded message log must keep it flat.
pub async fn flood(cli: &Cli) -> anyhow::Result<Vec<Row>> {
    let server = Server::start(&cli.server)?;
    let duration = span(cli, 600, 10);
    let opts = LoadOptions {
        host: server.mqtt.ip().to_string(),
        port: server.mqtt.port(),
        connections: cli.publishers,
        rate: 0.0,
        duration,
        devices: demo_devices(),
        quiet: true,
        ..LoadOptions::default()
    };
    let load = tokio::spawn(async move { run_load(&opts).await });
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(server.rss_kib());
    }
    let summary = load.await??;
    let first_min = samples.iter().take(60).copied().max().unwrap_or(0);
    let last = samples.last().copied().unwrap_or(0);
    let peak = samples.iter().copied().max().unwrap_or(0);
    println!(
        "flood: {:.0} msgs/s acked; RSS after warm-up {first_min} KiB, peak {peak} KiB, end {last} KiB",
        summary.rate()
    );
    println!("flood RSS samples (KiB, 1/s): {samples:?}");
    Ok(vec![Row {
        name: format!(
            "RSS growth through a {} s flood at {:.0} msgs/s (peak {peak} KiB)",
            duration.as_secs(),
            summary.rate()
        ),
        figure: (last as f64 - first_min as f64) / 1024.0,
        unit: "MiB",
        peer: None,
        target: "flat".into(),
        met: Some(last as f64 <= first_min as f64 * 1.1),
    }])
}
