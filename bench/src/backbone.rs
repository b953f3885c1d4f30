//! `backbone`: the high-availability mode on NATS JetStream (issue 23, docs/SCALING.md) on the real binary and a real
//! three-node `nats-server` cluster on 127.0.0.1 (`cluster::test_support::NatsCluster`, the one the HA tests start;
//! streams and buckets at R3), beside one `serve` process in the same run, with the same load generator
//! (`gateway_firmware_sim`, QoS 1: a reading counts once its PUBACK is back).
//!
//! 1. Throughput, each window at the load generator's full rate: one `serve` process; one front door; two front doors
//!    (the same connections split over both), each into `DC_READINGS` with a rule worker consuming (its own count of
//!    readings processed is the end-to-end figure). Per window the CPU seconds of every process (`/proc/<pid>/stat`:
//!    the three NATS nodes, each role, this load generator); at the end of the last window the RSS of every role.
//! 2. Fail-over, at a steady rate: the devices reach the front doors through a TCP stand-in for a load balancer (the
//!    first front door that accepts), their readings are all of one county, two rule workers share the counties.
//!    SIGKILL in turn the readings stream's leader node, the front door the devices are on, the worker that owns the
//!    county (each restarted but the worker). Per kill: the longest time in which no PUBACK arrived, and in which no
//!    worker processed a reading (workers' `/metrics` every 100 ms).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster::test_support::NatsCluster;
use gateway_firmware_sim::courier::Live;
use gateway_firmware_sim::{run_load, run_load_live, LoadOptions, LoadSummary};

use crate::server::{self, cpu_seconds, free_addr, rss_kib, Server, SECRETS_ENV, TOKEN};
use crate::{span, Cli, Row};

/// Readings of one county (Nantou, 10008: the demo's two rain gauges at Shenmu), so that one worker runs them all
/// and a stop in processing is that worker's fail-over, not a lull in another county's share.
const ONE_COUNTY: [&str; 2] = ["RG0001", "RG0002"];
/// The fail-over load's rate, readings/s (at most half what one front door took in the throughput window).
const FAILOVER_RATE: f64 = 1000.0;
const PROCESSED: &str = "dc_cluster_worker_publishes_total{phase=\"processed\"}";

/// One `serve --cluster … --role …` process, restartable on the same addresses.
struct Node {
    name: String,
    role: &'static str,
    child: Child,
    http: SocketAddr,
    mqtt: SocketAddr,
    args: Vec<String>,
    log: PathBuf,
}

impl Node {
    fn start(
        binary: &Path,
        config: &Path,
        dir: &Path,
        urls: &str,
        name: &str,
        role: &'static str,
        extra: &[&str],
    ) -> anyhow::Result<Node> {
        let (config, data) = (config.display().to_string(), dir.join(name).display().to_string());
        let args: Vec<String> = [&binary.display().to_string(), "serve", "--config", &config, "--data-dir", &data]
            .into_iter()
            .chain(["--cluster", urls, "--role", role, "--client-id", name])
            .chain(extra.iter().copied())
            .map(str::to_string)
            .collect();
        Node::launch(name, role, args, dir.join(format!("{name}.log")), (free_addr(), free_addr()))
    }

    /// `args[0]` is the binary.
    fn launch(
        name: &str,
        role: &'static str,
        args: Vec<String>,
        log: PathBuf,
        (mqtt, http): (SocketAddr, SocketAddr),
    ) -> anyhow::Result<Node> {
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        // The role's NATS login on the test cluster (`ops/nats/authorization.conf`), as a deployment passes it.
        let cluster = args.iter().position(|a| a == "--cluster").and_then(|i| args.get(i + 1));
        let url = cluster.and_then(|urls| urls.split(',').next()).unwrap_or_default();
        let password = cluster::test_support::password_for(url, role)
            .ok_or_else(|| anyhow::anyhow!("no running NatsCluster at {url} with a user `{role}`"))?;
        let child = Command::new(&args[0])
            .args(&args[1..])
            .args(["--http-listen", &http.to_string(), "--mqtt-listen", &mqtt.to_string()])
            .args(["--mqtt5-listen", &free_addr().to_string(), "--mqtt-tls=false"])
            .envs(SECRETS_ENV)
            .env("DC_OPERATOR_TOKEN", TOKEN)
            .env("DC_CLUSTER_USER", role)
            .env("DC_CLUSTER_PASSWORD", password)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", args[0]))?;
        let mut node = Node { name: name.into(), role, child, http, mqtt, args, log };
        // Ready once its HTTP answers: the role is attached (connected, its streams and buckets found).
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if metric(node.http, "dc_").is_some() {
                return Ok(node);
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                anyhow::bail!("{name} ({role}) exited ({status}) before it was ready:\n{}", node.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        anyhow::bail!("{name} ({role}) not ready in 120 s:\n{}", node.log_text())
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text[text.len().saturating_sub(4000)..].to_string()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn metric(&self, sample: &str) -> Option<f64> {
        metric(self.http, sample)
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Started again with the same arguments, addresses and data dir (as a supervisor restarts it).
    fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        let fresh = Node::launch(&self.name, self.role, self.args.clone(), self.log.clone(), (self.mqtt, self.http))?;
        *self = fresh;
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A sample of a node's `/metrics` (summed over label sets when `sample` names only the start of a metric);
/// `None` when the node does not answer.
fn metric(addr: SocketAddr, sample: &str) -> Option<f64> {
    let (status, body) = server::request(addr, "GET", "/metrics")?;
    (status == 200).then(|| {
        body.lines()
            .filter(|l| l.starts_with(sample))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    })
}

/// `dir/single.toml` (one `serve` process) and `dir/cluster.toml` (the same with `[cluster]`, trusting the two
/// workers' keys) over one copy of `config/`, as a drill (the demo's receivers are the server's own); the workers'
/// key files.
fn configs(binary: &Path, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, Vec<PathBuf>)> {
    server::copy_config(dir)?;
    server::hash_device_passwords(dir)?;
    server::secrets_to_env(dir)?;
    server::drop_vd_feeds(dir)?;
    let text = std::fs::read_to_string(dir.join("disaster-cloud.toml"))? + "\n[deployment]\ndrill = true\n";
    let single = dir.join("single.toml");
    std::fs::write(&single, &text)?;
    let mut cluster = text + "\n[cluster]\n";
    let mut keys = Vec::new();
    for name in ["w-1", "w-2"] {
        // Made as an operator would: `cluster-key new` writes an owner-only file and prints the public key.
        let key = dir.join(format!("{name}.pem"));
        let made = Command::new(binary)
            .args(["cluster-key", "new", "--out", &key.display().to_string(), "--name", name])
            .output()?;
        anyhow::ensure!(made.status.success(), "cluster-key new: {}", String::from_utf8_lossy(&made.stderr));
        let printed = String::from_utf8_lossy(&made.stdout);
        let public = printed
            .lines()
            .find_map(|l| l.strip_prefix("public_key = \"").and_then(|l| l.strip_suffix('"')))
            .ok_or_else(|| anyhow::anyhow!("cluster-key new printed no public key: {printed}"))?;
        cluster += &format!("\n[[cluster.trusted_workers]]\nname = \"{name}\"\npublic_key = \"{public}\"\n");
        keys.push(key);
    }
    let cluster_path = dir.join("cluster.toml");
    std::fs::write(&cluster_path, cluster)?;
    Ok((single, cluster_path, keys))
}

/// A process whose CPU time and RSS are read from `/proc`.
#[derive(Clone)]
struct Proc {
    name: String,
    pid: u32,
}

/// CPU seconds each process used in a window.
struct Usage {
    seconds: Vec<(String, f64)>,
    wall: Duration,
}

impl Usage {
    /// Prints each process's share and its CPU per reading; returns the total over processes named `prefix*`.
    fn print(&self, what: &str, readings: u64) {
        let wall = self.wall.as_secs_f64();
        for (name, s) in &self.seconds {
            println!(
                "cpu {what}: {name:<14} {s:6.2} s = {:5.1} % of one core, {:6.1} µs per reading",
                s / wall * 100.0,
                s / readings.max(1) as f64 * 1e6
            );
        }
        let total: f64 = self.seconds.iter().map(|(_, s)| s).sum();
        println!("cpu {what}: total {total:.2} s of {:.2} s × 2 cores available", wall);
    }

    fn of(&self, prefix: &str) -> f64 {
        self.seconds.iter().filter(|(n, _)| n.starts_with(prefix)).map(|(_, s)| s).sum()
    }
}

/// Runs the loads together, reading every process's CPU time before and after; returns the loads' summaries.
async fn window(loads: &[LoadOptions], procs: &[Proc]) -> anyhow::Result<(Vec<LoadSummary>, Usage)> {
    let before: Vec<f64> = procs.iter().map(|p| cpu_seconds(p.pid)).collect();
    let start = Instant::now();
    let summaries = futures_util::future::join_all(loads.iter().map(run_load)).await;
    let wall = start.elapsed();
    let seconds = procs.iter().zip(before).map(|(p, b)| (p.name.clone(), (cpu_seconds(p.pid) - b).max(0.0))).collect();
    let summaries = summaries.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok((summaries, Usage { seconds, wall }))
}

fn load(cli: &Cli, addr: SocketAddr, connections: usize, devices: Vec<(String, Option<String>)>) -> LoadOptions {
    LoadOptions {
        host: addr.ip().to_string(),
        port: addr.port(),
        connections,
        rate: 0.0,
        qos: 1,
        duration: span(cli, 30, 5),
        max_inflight: 100,
        devices,
        quiet: true,
        ..LoadOptions::default()
    }
}

/// Readings PUBACKed per second of the loads' own time (their drain included: nothing is counted before its PUBACK).
fn acked_rate(summaries: &[LoadSummary]) -> (u64, f64) {
    let readings: u64 = summaries.iter().map(|s| s.readings_acked).sum();
    let elapsed = summaries.iter().map(|s| s.elapsed).max().unwrap_or_default();
    (readings, readings as f64 / elapsed.as_secs_f64().max(1e-9))
}

/// The node that leads `DC_READINGS` now, from a live node's monitoring endpoint.
fn stream_leader(nats: &NatsCluster) -> anyhow::Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut said = String::new();
    while Instant::now() < deadline {
        for i in (0..3).filter(|&i| nats.is_running(i)) {
            let Some((200, body)) = nats.monitor(i, "/jsz?accounts=true&streams=true") else { continue };
            let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let leader = json["account_details"].as_array().into_iter().flatten().find_map(|account| {
                account["stream_detail"].as_array().into_iter().flatten().find_map(|stream| {
                    (stream["name"] == cluster::readings::STREAM).then(|| stream["cluster"]["leader"].as_str())?
                })
            });
            if let Some(index) = leader.and_then(|name| nats.index_of(name)) {
                return Ok(index);
            }
            said = body.chars().take(600).collect();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    anyhow::bail!("no leader of {} in 30 s; /jsz said: {said}", cluster::readings::STREAM)
}

/// The longest stretch without an event that overlaps [from, to): the fail-over gap. Events are the moments a
/// counter was seen to move; with none after `from`, the gap runs to `to` (not recovered).
fn longest_gap(events: &[Instant], from: Instant, to: Instant) -> Duration {
    let mut gap = Duration::ZERO;
    let mut previous: Option<Instant> = None;
    for &t in events {
        if t >= from {
            if let Some(p) = previous {
                gap = gap.max(t - p);
            }
        }
        if t >= to {
            return gap;
        }
        previous = Some(t);
    }
    previous.map_or(to - from, |p| gap.max(to.saturating_duration_since(p)))
}

/// Moments at which a counter moved, sampled every `every`; runs until `stop`.
fn sample_events(
    every: Duration,
    stop: Arc<AtomicBool>,
    mut read: impl FnMut() -> f64 + Send + 'static,
) -> (Arc<Mutex<Vec<Instant>>>, std::thread::JoinHandle<()>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let out = Arc::clone(&events);
    // A thread of its own: the sampling must not wait behind the load generator's tasks.
    let handle = std::thread::spawn(move || {
        let mut last = read();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(every);
            let now = read();
            if now != last {
                out.lock().map(|mut e| e.push(Instant::now())).ok();
                last = now;
            }
        }
    });
    (events, handle)
}

/// Waits until events have kept coming for a second after `kill` (or `within` passes): the service is back.
async fn wait_flowing(events: &Mutex<Vec<Instant>>, kill: Instant, within: Duration) -> bool {
    while kill.elapsed() < within {
        let last = events.lock().ok().and_then(|e| e.last().copied());
        if last.is_some_and(|t| t > kill + Duration::from_secs(1) && t.elapsed() < Duration::from_millis(300)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Forwards each connection to the first backend that accepts it (a load balancer's TCP mode with the simplest
/// health check: connect). A backend's death closes its connections; the devices reconnect and land on the next.
async fn balancer(backends: Vec<SocketAddr>) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut device, _)) = listener.accept().await {
            let backends = backends.clone();
            tokio::spawn(async move {
                for backend in &backends {
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut device, &mut upstream).await;
                        return;
                    }
                }
            });
        }
    });
    Ok((addr, task))
}

/// Appends by outcome over front doors (`stored`, `duplicate`: a publish id the stream had — the load generator
/// repeats a payload within a millisecond now and then, which JetStream keeps once but PUBACKs each time).
fn appends(doors: &[&Node]) -> [f64; 2] {
    let sum = |outcome: &str| {
        let sample = format!("dc_cluster_appends_total{{outcome=\"{outcome}\"}}");
        doors.iter().filter_map(|d| d.metric(&sample)).sum::<f64>()
    };
    [sum("stored"), sum("duplicate")]
}

fn devices(ids: &[&str]) -> Vec<(String, Option<String>)> {
    server::demo_devices().into_iter().filter(|(id, _)| ids.contains(&id.as_str())).collect()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub async fn backbone(cli: &Cli) -> anyhow::Result<Vec<Row>> {
    let work = std::env::temp_dir().join(format!("dc-bench-backbone-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let (single_config, cluster_config, keys) = configs(&cli.server, &work.join("config"))?;
    let bench = Proc { name: "load generator".into(), pid: std::process::id() };
    let mut rows = Vec::new();
    let all = server::demo_devices();
    anyhow::ensure!(all.len() >= cli.publishers, "{} publishers but {} demo devices", cli.publishers, all.len());
    let used: Vec<_> = all[..cli.publishers].to_vec();
    println!(
        "load: {} connections at QoS 1, 100 in flight each, devices {:?}",
        cli.publishers,
        used.iter().map(|d| &d.0).collect::<Vec<_>>()
    );

    // 1a. One `serve` process, the same configuration without `[cluster]`.
    let single = Server::serve(&cli.server, &single_config, Duration::from_secs(120))?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let procs = [Proc { name: "serve".into(), pid: single.pid() }, bench.clone()];
    let accepted = single.metric("dc_ingest_readings_accepted_total");
    let (summaries, usage) = window(&[load(cli, single.mqtt, cli.publishers, used.clone())], &procs).await?;
    let (single_readings, single_rate) = acked_rate(&summaries);
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "single process: {:.0} readings accepted by validation",
        single.metric("dc_ingest_readings_accepted_total") - accepted
    );
    println!("single process: {single_readings} readings PUBACKed, {single_rate:.0}/s; {}", summaries[0]);
    usage.print("single process", single_readings);
    let single_rss = single.rss_kib();
    let single_cpu_per_reading = usage.of("serve") / single_readings.max(1) as f64 * 1e6;
    drop(single);

    // 1b. The cluster: three NATS nodes, a front door, a rule worker, a fan-out and a dissemination node.
    let mut nats = tokio::task::block_in_place(|| NatsCluster::start("bench"));
    let urls = nats.urls_arg();
    let dir = work.join("processes");
    std::fs::create_dir_all(&dir)?;
    let key = |i: usize| keys[i].display().to_string();
    let start = |name: &str, role: &'static str, extra: &[&str]| {
        tokio::task::block_in_place(|| Node::start(&cli.server, &cluster_config, &dir, &urls, name, role, extra))
    };
    let mut fd1 = start("fd-1", "front-door", &[])?;
    let w1 = start("w-1", "worker", &["--signing-key", &key(0)])?;
    let fan = start("fan-1", "fan-out", &[])?;
    let dis = start("d-1", "dissemination", &[])?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while w1.metric("dc_cluster_regions_owned").unwrap_or(0.0) < 1.0 {
        anyhow::ensure!(Instant::now() < deadline, "w-1 took no county in 60 s:\n{}", w1.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let nats_procs = |nats: &NatsCluster| -> Vec<Proc> {
        (0..3).filter_map(|i| Some(Proc { name: format!("nats-server {}", nats.name(i)), pid: nats.pid(i)? })).collect()
    };
    let proc_of = |n: &Node| Proc { name: format!("{} ({})", n.name, n.role), pid: n.pid() };
    let mut procs = nats_procs(&nats);
    procs.extend([proc_of(&fd1), proc_of(&w1), proc_of(&fan), proc_of(&dis), bench.clone()]);
    let processed_before = w1.metric(PROCESSED).unwrap_or(0.0);
    let appended = appends(&[&fd1]);
    let (summaries, usage) = window(&[load(cli, fd1.mqtt, cli.publishers, used.clone())], &procs).await?;
    let now = appends(&[&fd1]);
    println!("one front door: appends stored {:.0}, duplicate {:.0}", now[0] - appended[0], now[1] - appended[1]);
    let processed_in_window = w1.metric(PROCESSED).unwrap_or(0.0) - processed_before;
    let (one_readings, one_rate) = acked_rate(&summaries);
    let worker_rate = processed_in_window / usage.wall.as_secs_f64();
    println!("one front door: {one_readings} readings PUBACKed, {one_rate:.0}/s; {}", summaries[0]);
    println!("one front door: worker processed {processed_in_window:.0} in the window ({worker_rate:.0}/s)");
    usage.print("one front door", one_readings);
    let one_nats_cpu = usage.of("nats-server") / one_readings.max(1) as f64 * 1e6;
    let one_fd_cpu = usage.of("fd-") / one_readings.max(1) as f64 * 1e6;
    let one_worker_cpu = usage.of("w-") / processed_in_window.max(1.0) * 1e6;
    // The worker's backlog at the end of the window: how long until its count stops moving, and where it stops.
    let drain_start = Instant::now();
    let (mut last, mut moved) = (w1.metric(PROCESSED).unwrap_or(0.0), Instant::now());
    while drain_start.elapsed() < Duration::from_secs(60) && moved.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = w1.metric(PROCESSED).unwrap_or(0.0);
        if now != last {
            (last, moved) = (now, Instant::now());
        }
    }
    println!(
        "one front door: the worker processed {:.0} publishes in all ({one_readings} PUBACKed); its count stopped {:.1} s after the load",
        last - processed_before,
        moved.duration_since(drain_start).as_secs_f64()
    );

    // 1c. Two front doors, the same connections split over them.
    let fd2 = start("fd-2", "front-door", &[])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    procs.push(proc_of(&fd2));
    let half = cli.publishers / 2;
    let loads = [
        load(cli, fd1.mqtt, cli.publishers - half, used[..cli.publishers - half].to_vec()),
        load(cli, fd2.mqtt, half.max(1), used[cli.publishers - half..].to_vec()),
    ];
    let processed_before = w1.metric(PROCESSED).unwrap_or(0.0);
    let appended = appends(&[&fd1, &fd2]);
    let (summaries, usage) = window(&loads, &procs).await?;
    // RSS per role at the end of the load.
    let mut rss: Vec<(String, u64)> = procs.iter().map(|p| (p.name.clone(), rss_kib(p.pid))).collect();
    let processed_two = w1.metric(PROCESSED).unwrap_or(0.0) - processed_before;
    let now = appends(&[&fd1, &fd2]);
    println!("two front doors: appends stored {:.0}, duplicate {:.0}", now[0] - appended[0], now[1] - appended[1]);
    let (two_readings, two_rate) = acked_rate(&summaries);
    println!("two front doors: {two_readings} readings PUBACKed, {two_rate:.0}/s; worker processed {processed_two:.0} ({:.0}/s)", processed_two / usage.wall.as_secs_f64());
    for s in &summaries {
        println!("  {s}");
    }
    usage.print("two front doors", two_readings);
    rss.push(("serve (one process, end of its window)".into(), single_rss));
    for (name, kib) in &rss {
        println!("rss at the end of the load: {name:<40} {:7.1} MiB", mib(*kib));
    }

    rows.push(Row {
        name: "backbone: readings/s PUBACKed, 1 front door, R3, worker consuming".into(),
        figure: one_rate,
        unit: "readings/s",
        peer: Some(("one serve process".into(), single_rate)),
        target: "-".into(),
        met: None,
    });
    rows.push(Row {
        name: "backbone: readings/s PUBACKed, 2 front doors, R3".into(),
        figure: two_rate,
        unit: "readings/s",
        peer: Some(("one serve process".into(), single_rate)),
        target: "-".into(),
        met: None,
    });
    rows.push(Row {
        name: "backbone: readings/s processed by the worker (1 front door)".into(),
        figure: worker_rate,
        unit: "readings/s",
        peer: Some(("one serve process".into(), single_rate)),
        target: "-".into(),
        met: None,
    });
    for (name, figure) in [
        ("backbone CPU per reading: one serve process", single_cpu_per_reading),
        ("backbone CPU per reading: 3 nats-servers (1 front door)", one_nats_cpu),
        ("backbone CPU per reading: front door", one_fd_cpu),
        ("backbone CPU per reading processed: worker", one_worker_cpu),
    ] {
        rows.push(Row { name: name.into(), figure, unit: "µs", peer: None, target: "-".into(), met: None });
    }
    for (name, kib) in &rss {
        rows.push(Row {
            name: format!("backbone RSS at the end of the load: {name}"),
            figure: mib(*kib),
            unit: "MiB",
            peer: None,
            target: "-".into(),
            met: None,
        });
    }

    // 2. Fail-over at a steady rate, one county, two workers, devices behind the balancer.
    let w2 = start("w-2", "worker", &["--signing-key", &key(1)])?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while w2.metric("dc_cluster_regions_owned").unwrap_or(0.0) < 1.0 {
        anyhow::ensure!(Instant::now() < deadline, "w-2 took no county in 60 s:\n{}", w2.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut workers = [w1, w2];
    let (lb, lb_task) = balancer(vec![fd1.mqtt, fd2.mqtt]).await?;
    let rate = FAILOVER_RATE.min(one_rate / 2.0).max(50.0);
    let live = Arc::new(Live::default());
    let opts = LoadOptions {
        rate,
        duration: Duration::from_secs(600),
        drain_timeout: Duration::from_secs(1),
        ..load(cli, lb, ONE_COUNTY.len(), devices(&ONE_COUNTY))
    };
    let steady = {
        let live = Arc::clone(&live);
        tokio::spawn(async move { run_load_live(&opts, live).await })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::clone(&live);
    let (acks, acks_thread) = sample_events(Duration::from_millis(5), Arc::clone(&stop), move || {
        counter.acked.load(Ordering::Relaxed) as f64
    });
    let worker_http: Vec<SocketAddr> = workers.iter().map(|w| w.http).collect();
    // A dead worker's counter stays at its last value: the sum moves only when some worker processes a reading.
    let mut last_seen = vec![0.0; worker_http.len()];
    let (processed, processed_thread) = sample_events(Duration::from_millis(100), Arc::clone(&stop), move || {
        for (i, addr) in worker_http.iter().enumerate() {
            if let Some(v) = metric(*addr, PROCESSED) {
                last_seen[i] = v;
            }
        }
        last_seen.iter().sum()
    });
    println!("fail-over: {rate:.0} readings/s from {ONE_COUNTY:?} (county 10008) through a TCP balancer, two workers");
    // A county handed to w-2 is replayed into its rule windows first (the readings of the throughput windows are in
    // them): kill nothing before both PUBACKs and processing flow.
    let warm = Instant::now();
    let flowing = wait_flowing(&acks, warm, Duration::from_secs(60)).await
        && wait_flowing(&processed, warm, Duration::from_secs(120)).await;
    anyhow::ensure!(flowing, "the fail-over load never flowed through PUBACKs and processing");
    println!("fail-over: load and processing flowing {:.1} s after the start", warm.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let quiet_from = Instant::now() - Duration::from_secs(3);
    let mut kills: Vec<(&str, Instant, Instant)> = Vec::new();
    let within = Duration::from_secs(60);

    // The readings stream's leader node.
    let leader = tokio::task::block_in_place(|| stream_leader(&nats))?;
    let kill = Instant::now();
    nats.kill(leader);
    println!("SIGKILL nats-server {} (leader of {})", nats.name(leader), cluster::readings::STREAM);
    let back = wait_flowing(&acks, kill, within).await && wait_flowing(&processed, kill, within).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    kills.push(("the readings stream's leader node", kill, Instant::now()));
    println!("  flowing again: {back}; restarting it");
    tokio::task::block_in_place(|| nats.restart(leader));
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The front door the devices are on (the balancer's first choice).
    let kill = Instant::now();
    fd1.kill9();
    println!("SIGKILL fd-1");
    let back = wait_flowing(&acks, kill, within).await && wait_flowing(&processed, kill, within).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    kills.push(("the devices' front door", kill, Instant::now()));
    println!("  flowing again: {back}; restarting it");
    tokio::task::block_in_place(|| fd1.restart())?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The worker that runs the county: the one whose count moves.
    let counts = |ws: &[Node; 2]| ws.iter().map(|w| w.metric(PROCESSED).unwrap_or(0.0)).collect::<Vec<_>>();
    let a = counts(&workers);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b = counts(&workers);
    let owner = if b[1] - a[1] > b[0] - a[0] { 1 } else { 0 };
    let replayed = |w: &Node| w.metric("dc_cluster_worker_publishes_total{phase=\"replayed\"}").unwrap_or(0.0);
    let replayed_before = replayed(&workers[1 - owner]);
    let kill = Instant::now();
    workers[owner].kill9();
    println!("SIGKILL {} (runs county 10008; lease ttl 10 s, the default)", workers[owner].name);
    let back = wait_flowing(&processed, kill, within).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    kills.push(("the county's rule worker", kill, Instant::now()));
    println!(
        "  processing again: {back}; {} replayed {:.0} readings into its rule windows on taking the county over",
        workers[1 - owner].name,
        replayed(&workers[1 - owner]) - replayed_before
    );

    stop.store(true, Ordering::Relaxed);
    steady.abort();
    lb_task.abort();
    let _ = acks_thread.join();
    let _ = processed_thread.join();
    let acks = acks.lock().map(|e| e.clone()).unwrap_or_default();
    let processed = processed.lock().map(|e| e.clone()).unwrap_or_default();
    let first_kill = kills[0].1;
    println!(
        "fail-over: quiet 3 s before the first kill: longest without a PUBACK {:.0} ms, without processing {:.0} ms",
        longest_gap(&acks, quiet_from, first_kill).as_secs_f64() * 1000.0,
        longest_gap(&processed, quiet_from, first_kill).as_secs_f64() * 1000.0
    );
    for (what, from, to) in kills {
        let puback = longest_gap(&acks, from, to).as_secs_f64();
        let processing = longest_gap(&processed, from, to).as_secs_f64();
        println!(
            "fail-over gap, SIGKILL {what}: no PUBACK for {puback:.2} s, no reading processed for {processing:.2} s"
        );
        rows.push(Row {
            name: format!("backbone fail-over gap, SIGKILL {what}: no PUBACK"),
            figure: puback,
            unit: "s",
            peer: None,
            target: "-".into(),
            met: None,
        });
        rows.push(Row {
            name: format!("backbone fail-over gap, SIGKILL {what}: no reading processed"),
            figure: processing,
            unit: "s",
            peer: None,
            target: "-".into(),
            met: None,
        });
    }
    for n in [&fd1, &fd2, &fan, &dis].into_iter().chain(workers.iter()) {
        let log = n.log_text();
        if log.contains("panicked") {
            println!("{} panicked:\n{log}", n.name);
        }
    }
    drop((fd1, fd2, fan, dis, workers));
    // The cluster keeps its folder for a failed test's logs; the stores of a finished benchmark are only disk.
    let nats_dir = nats.dir.clone();
    drop(nats);
    let _ = std::fs::remove_dir_all(&nats_dir);
    let _ = std::fs::remove_dir_all(&work);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_is_the_longest_silence_overlapping_the_kill() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let events = [at(0), at(10), at(20), at(5_020), at(5_030), at(9_000), at(9_010)];
        // Killed at 25 ms: the silence from 20 ms to 5,020 ms, not the later (longer-ago) one after the window.
        assert_eq!(longest_gap(&events, at(25), at(6_000)), Duration::from_millis(5_000));
        // A quiet window before any kill: the steady spacing.
        assert_eq!(longest_gap(&events, at(1), at(15)), Duration::from_millis(10));
        // Nothing after the kill: the gap runs to the end of the window (not recovered).
        assert_eq!(longest_gap(&events[..3], at(25), at(1_000)), Duration::from_millis(980));
    }
}
