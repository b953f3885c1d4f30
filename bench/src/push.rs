//! `dc-bench push` (issue 24): what Web Push costs.
//!
//! 1. **Per push on one core**: the dispatcher's own code (`dissemination::channel::push::bench::OnePush`: RFC 8291
//!    encryption by web-push-native and the headers, and the RFC 8292 ES256 VAPID signature), run back to back on one
//!    thread and timed by that thread's CPU clock, so other processes on the machine do not inflate it. A payload as
//!    large as ours get: a long instruction and the 1,024-octet geofence.
//! 2. **One warning to N subscriptions** (100,000 by default): the real binary (`serve`, the demo's data as a drill,
//!    journal fsync off and the public rate limit raised so that registering N subscriptions takes seconds, not the
//!    measurement's time), N subscriptions registered through `POST /api/v1/push/subscriptions` with places in the
//!    Shenmu debris-flow area and endpoints on a stand-in push service in this process: a plain HTTP/1.1 keep-alive
//!    receiver on its own thread (one tokio current-thread runtime) answering `201 Created` and counting the pushes.
//!    Then one reading of 45 mm/h at gauge RG0001 raises one warning (heavy rain, 大雨; below the area's debris-flow
//!    threshold, so nothing else is pushed) and the clock runs from the publish to the N-th push received. Reported:
//!    that time, pushes per second, the server's CPU seconds per push (from /proc), and the stand-in's CPU time and
//!    share, so its cost can be told apart from ours on a shared machine.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use dissemination::channel::push::bench::OnePush;
use tokio::io::AsyncWriteExt;

use crate::receiver::next_request;
use crate::server::{demo_devices, Server, TOKEN};
use crate::{Cli, Row};

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A place inside the Shenmu debris-flow area (the zone of gauge RG0001's rain rules).
const PLACE: (f64, f64) = (23.52, 120.93);

pub async fn push(cli: &Cli) -> anyhow::Result<Vec<Row>> {
    let (p256dh, auth) = browser_keys()?;
    let mut rows = per_push(cli, &p256dh, &auth)?;
    rows.extend(fan_out(cli, &p256dh, &auth).await?);
    Ok(rows)
}

/// A browser's subscription keys: a P-256 public point (uncompressed) and a 16-byte secret, base64url.
fn browser_keys() -> anyhow::Result<(String, String)> {
    let rng = ring::rand::SystemRandom::new();
    let private = ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng)
        .map_err(|_| anyhow::anyhow!("no P-256 key"))?;
    let public = private.compute_public_key().map_err(|_| anyhow::anyhow!("no P-256 public key"))?;
    let mut auth = [0u8; 16];
    ring::rand::SecureRandom::fill(&rng, &mut auth).map_err(|_| anyhow::anyhow!("no random bytes"))?;
    Ok((B64URL.encode(public.as_ref()), B64URL.encode(auth)))
}

/// A payload as large as a real one gets: the fields of `docs/PAYLOADS.md`, a 300-character instruction and the
/// largest geofence (1,024 octets).
fn large_payload() -> String {
    serde_json::json!({
        "v": 1, "id": "W-A-heavy_rain:dfa-xinyi-shenmu-1", "version": 1, "state": "raised", "is_real": true,
        "notify": true, "lang": "zh-TW", "event": "heavy_rain", "severity": "Severe",
        "title": "豪雨特報：南投縣信義鄉神木村土石流潛勢區", "body": "請立即撤離至避難處所，遠離溪流與山坡地。".repeat(15),
        "url": "/app#alert=W-A-heavy_rain:dfa-xinyi-shenmu-1", "cap": "/cap/W-A-heavy_rain.1.xml", "sent_ms": 1,
        "warning_area_coordinates": base64::engine::general_purpose::STANDARD.encode([0x5Au8; 1024]),
    })
    .to_string()
}

/// CPU seconds this thread has run (`CLOCK_THREAD_CPUTIME_ID`).
#[allow(unsafe_code)] // clock_gettime has no safe wrapper in std or libc.
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// CPU seconds (user + system) a process has run, from /proc/<pid>/stat.
fn process_cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // Fields after the command name (which may hold spaces) start at state: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    #[allow(unsafe_code)] // sysconf has no safe wrapper in std or libc.
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

fn per_push(cli: &Cli, p256dh: &str, auth: &str) -> anyhow::Result<Vec<Row>> {
    let n = if cli.quick { 300 } else { 5_000 };
    let dir = std::env::temp_dir().join(format!("dc-bench-push-keys-{}", std::process::id()));
    let payload = large_payload();
    let one = OnePush::new(&dir, "https://fcm.googleapis.com/fcm/send/bench", p256dh, auth, &payload)
        .map_err(|e| anyhow::anyhow!(e))?;
    let header = one.sign(now_s()).map_err(|e| anyhow::anyhow!(e))?;
    let mut wire = 0;
    let start = thread_cpu_s();
    for _ in 0..n {
        wire = one.encrypt(&header).map_err(|e| anyhow::anyhow!(e))?;
    }
    let encrypt_us = (thread_cpu_s() - start) / n as f64 * 1e6;
    let start = thread_cpu_s();
    for i in 0..n {
        std::hint::black_box(one.sign(now_s() + i as u64).map_err(|e| anyhow::anyhow!(e))?);
    }
    let sign_us = (thread_cpu_s() - start) / n as f64 * 1e6;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "push: {n} pushes of {} plaintext bytes ({wire} on the wire): encrypt {encrypt_us:.0} µs, sign {sign_us:.0} µs \
         (thread CPU time)",
        payload.len()
    );
    Ok(vec![
        Row {
            name: "push: encrypt + sign per push, one core".into(),
            figure: encrypt_us + sign_us,
            unit: "µs",
            peer: None,
            target: "-".into(),
            met: None,
        },
        Row {
            name: "push: encrypt per push (VAPID header reused), one core".into(),
            figure: encrypt_us,
            unit: "µs",
            peer: None,
            target: "-".into(),
            met: None,
        },
        Row {
            name: "push: pushes per second per core (dispatcher's crypto)".into(),
            figure: 1e6 / encrypt_us,
            unit: "/s",
            peer: None,
            target: "-".into(),
            met: None,
        },
    ])
}

fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What the stand-in push service saw.
#[derive(Default)]
struct Received {
    pushes: AtomicU64,
    /// Milliseconds since the stand-in started at the latest push.
    last_ms: AtomicU64,
    /// Its thread's CPU time, in microseconds, refreshed as it works.
    cpu_us: AtomicU64,
}

/// The stand-in push service on its own thread; its address.
fn start_stand_in(received: Arc<Received>) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new().name("push-stand-in".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => return println!("push: stand-in runtime: {e}"),
        };
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            let started = Instant::now();
            while let Ok((stream, _)) = listener.accept().await {
                let (received, started) = (received.clone(), started);
                tokio::spawn(serve_pushes(stream, received, started));
            }
        });
    })?;
    Ok(addr)
}

/// HTTP/1.1 keep-alive: each request is a head and Content-Length bytes of body; pushes get 201, the rest (the
/// demo's webhooks and CBCs, which also point here) 200.
async fn serve_pushes(mut stream: tokio::net::TcpStream, received: Arc<Received>, started: Instant) {
    let mut buf = Vec::new();
    while let Some(len) = next_request(&mut stream, &mut buf).await {
        let is_push = buf.starts_with(b"POST /push/");
        buf.drain(..len);
        let answer: &[u8] = if is_push {
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        };
        if stream.write_all(answer).await.is_err() {
            return;
        }
        if is_push {
            received.pushes.fetch_add(1, Ordering::Relaxed);
            received.last_ms.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        received.cpu_us.store((thread_cpu_s() * 1e6) as u64, Ordering::Relaxed);
    }
}

/// The demo's configuration as a drill for `serve`, pushing to the stand-in (on this machine, over plain HTTP: a
/// drill may): fsync off, public limits and push bounds raised for `subscribers`.
fn push_config(dir: &Path, stand_in: SocketAddr, subscribers: usize) -> anyhow::Result<PathBuf> {
    let main = crate::soak::soak_config(dir, stand_in, None, None)?;
    let text = std::fs::read_to_string(&main)?
        .replace("public_burst = 120", &format!("public_burst = {}", subscribers * 2))
        .replace("public_per_s = 20", &format!("public_per_s = {}", subscribers * 2));
    std::fs::write(&main, format!("{text}\n[deployment]\ndrill = true\n"))?;
    let path = dir.join("dissemination.toml");
    let mut text = std::fs::read_to_string(&path)?.replace("fsync = true", "fsync = false");
    for (key, value) in [
        ("max_subscriptions = 100000", format!("max_subscriptions = {}", subscribers * 2)),
        ("max_per_client = 5", format!("max_per_client = {}", subscribers * 2)),
        ("max_per_address = 1000", format!("max_per_address = {}", subscribers * 2)),
        ("allow_http_loopback = false", crate::soak::PUSH_OVER_HTTP.to_string()),
    ] {
        anyhow::ensure!(text.contains(key), "`{key}` not in {}", path.display());
        text = text.replace(key, &value);
    }
    std::fs::write(&path, text)?;
    Ok(main)
}

/// Registers subscriptions `range` over one keep-alive connection; how many were refused.
fn subscribe(http: SocketAddr, stand_in: SocketAddr, keys: (&str, &str), range: std::ops::Range<usize>) -> usize {
    let Ok(stream) = TcpStream::connect(http) else { return range.len() };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = stream.try_clone() else { return range.len() };
    let mut reader = BufReader::new(stream);
    let mut refused = 0;
    for i in range {
        let body = serde_json::json!({
            "endpoint": format!("http://{stand_in}/push/{i}"),
            "keys": { "p256dh": keys.0, "auth": keys.1 },
            "places": [{ "lat": PLACE.0 + (i % 100) as f64 * 1e-5, "lon": PLACE.1 }],
            "lang": if i % 2 == 0 { "zh-TW" } else { "en" },
            "client_id": format!("bench-{i}"),
        })
        .to_string();
        let request = format!(
            "POST /api/v1/push/subscriptions HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(request.as_bytes()).is_err() {
            return refused + 1;
        }
        let mut status = String::new();
        if reader.read_line(&mut status).is_err() {
            return refused + 1;
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return refused + 1;
        }
        if !status.contains(" 201 ") {
            refused += 1;
        }
    }
    refused
}

async fn fan_out(cli: &Cli, p256dh: &str, auth: &str) -> anyhow::Result<Vec<Row>> {
    let subscribers = if cli.quick { cli.push_subscribers.min(2_000) } else { cli.push_subscribers };
    let received = Arc::new(Received::default());
    let stand_in = start_stand_in(received.clone())?;
    let dir = std::env::temp_dir().join(format!("dc-bench-push-{}", std::process::id()));
    let config = push_config(&dir, stand_in, subscribers)?;
    let server = Server::serve(&cli.server, &config, Duration::from_secs(120))?;

    let started = Instant::now();
    let connections = 8;
    let per = subscribers.div_ceil(connections);
    let (http, keys) = (server.http, (p256dh.to_string(), auth.to_string()));
    let refused: usize = (0..connections)
        .map(|c| {
            let keys = keys.clone();
            std::thread::spawn(move || {
                subscribe(http, stand_in, (&keys.0, &keys.1), c * per..((c + 1) * per).min(subscribers))
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap_or(per))
        .sum();
    let held = server.metric("dc_push_subscriptions{key=\"current\"}") as usize;
    println!("push: {held} subscriptions registered in {:.1} s ({refused} refused)", started.elapsed().as_secs_f64());
    anyhow::ensure!(held >= subscribers, "only {held} of {subscribers} subscriptions held");

    let (before_pushes, cpu_before) = (received.pushes.load(Ordering::Relaxed), process_cpu_s(server.pid()));
    let stand_in_cpu_before = received.cpu_us.load(Ordering::Relaxed) as f64 / 1e6;
    let password = demo_devices().into_iter().find(|(d, _)| d == "RG0001").and_then(|(_, p)| p).unwrap_or_default();
    let mut opts = rumqttc::MqttOptions::new("RG0001", server.mqtt.ip().to_string(), server.mqtt.port());
    opts.set_credentials("RG0001", password);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10);
    let poller = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let payload = format!(r#"{{"ts":{},"values":{{"rain_mm":45}}}}"#, gateway_firmware_sim::now_ms());
    let t0 = Instant::now();
    client.publish("sensors/RG0001/readings", rumqttc::QoS::AtLeastOnce, false, payload).await?;
    let want = before_pushes + subscribers as u64;
    let deadline = t0 + Duration::from_secs(if cli.quick { 300 } else { 1200 });
    let mut first: Option<Duration> = None;
    while received.pushes.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        if first.is_none() && received.pushes.load(Ordering::Relaxed) > before_pushes {
            first = Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = t0.elapsed();
    poller.abort();
    let got = received.pushes.load(Ordering::Relaxed) - before_pushes;
    let server_cpu = process_cpu_s(server.pid()) - cpu_before;
    let stand_in_cpu = received.cpu_us.load(Ordering::Relaxed) as f64 / 1e6 - stand_in_cpu_before;
    let sent = server.metric("dc_push_sent_total{outcome=\"delivered\"}");
    println!(
        "push: {got} of {subscribers} pushes received in {:.1} s (first after {:.2} s); server CPU {server_cpu:.1} s, \
         stand-in CPU {stand_in_cpu:.1} s ({:.0} % of the CPU time spent); server counts {sent} delivered",
        took.as_secs_f64(),
        first.unwrap_or_default().as_secs_f64(),
        100.0 * stand_in_cpu / (server_cpu + stand_in_cpu).max(1e-9),
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(got >= subscribers as u64, "only {got} of {subscribers} pushes arrived in {took:?}");
    Ok(vec![
        Row {
            name: format!("push: one warning to {subscribers} subscriptions (publish → last push received)"),
            figure: took.as_secs_f64(),
            unit: "s",
            peer: None,
            target: "< 60 s for 100,000".into(),
            met: (subscribers >= 100_000).then_some(took.as_secs_f64() < 60.0),
        },
        Row {
            name: "push: fan-out rate".into(),
            figure: got as f64 / took.as_secs_f64(),
            unit: "pushes/s",
            peer: None,
            target: "-".into(),
            met: None,
        },
        Row {
            name: "push: server CPU per push".into(),
            figure: server_cpu / got.max(1) as f64 * 1e6,
            unit: "µs",
            peer: None,
            target: "-".into(),
            met: None,
        },
        Row {
            name: "push: stand-in push service's share of the CPU time".into(),
            figure: 100.0 * stand_in_cpu / (server_cpu + stand_in_cpu).max(1e-9),
            unit: "%",
            peer: None,
            target: "-".into(),
            met: None,
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The push benchmark's drill config is taken by `serve` and keeps Web Push in the clear to its stand-in (the
    /// soak's config, which it starts from, turns that off).
    #[test]
    fn serve_takes_the_push_config_and_it_pushes_to_the_stand_in() {
        let dir = tempfile::tempdir().unwrap();
        let main = push_config(dir.path(), SocketAddr::from(([127, 0, 0, 1], 9)), 1000).unwrap();
        crate::soak::tests::serve_refusals(&main).unwrap();
        let dissemination = std::fs::read_to_string(dir.path().join("dissemination.toml")).unwrap();
        assert!(dissemination.contains(crate::soak::PUSH_OVER_HTTP), "{dissemination}");
    }
}
