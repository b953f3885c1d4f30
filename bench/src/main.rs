//! `dc-bench`: end-to-end benchmarks of the real `disaster-cloud` binary beside its peers, in the same run, on this
//! machine's loopback. Each benchmark prints its figure last; `--write` records the table in `BENCHMARKS.md`.
//!
//! - `ingest`: QoS 1 readings from rumqttc clients through our full path (front door → validate → rules → store),
//!   vs. bare rumqttd into a local link, vs. Debian mosquitto relaying to one subscriber — same payloads and clients.
//! - `latency`: publish → operator websocket frame, p50/p99/max, with background load of 0, 10k and 50k readings/s.
//! - `fanout`: N citizen websocket connections held, one alert to all, p50/p99 delivery, server RSS per connection.
//! - `flood`: server RSS sampled every second through a flood at the maximum rate.
//! - `push` (only when named): Web Push encryption + signature per push on one core, and one warning to 100,000
//!   subscriptions through a stand-in push service (`push.rs`).
//! - `soak` (only when named; an hour): mixed load with RSS, open files and queue depths sampled (`soak.rs`).
//! - `traffic` (only when named; no server): the traffic rules on a simulated normal week in event time (false public
//!   alerts) and the delay from a road's first blocked reading to its public warning (`traffic.rs`).
//! - `backbone` (only when named): the high-availability mode on a real three-node NATS JetStream cluster (issue 23):
//!   readings/s through one and two front doors at R3 beside one `serve` process, CPU per process, RSS per role, and
//!   the fail-over gap of each SIGKILL under steady load (`backbone.rs`).
//!
//! Run through `scripts/bench`, which builds in release mode and installs the peers.

mod backbone;
mod peers;
mod probes;
mod push;
mod receiver;
mod server;
mod soak;
mod traffic;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// End-to-end benchmarks with peers in the same run. Example: dc-bench --quick ingest latency
#[derive(Debug, Parser)]
pub struct Cli {
    /// Which benchmarks (ingest, latency, fanout, flood, soak, push, traffic, backbone); all but soak, push, traffic
    /// and backbone when none given.
    benches: Vec<String>,
    /// A few seconds each: checks that nothing is broken, not a measurement.
    #[arg(long)]
    quick: bool,
    /// The release binary to measure.
    #[arg(long, default_value = "target/release/disaster-cloud")]
    server: PathBuf,
    /// Citizen connections for `fanout`.
    #[arg(long, default_value_t = 20_000)]
    citizens: usize,
    /// Publishing connections for `ingest` and `flood`.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Subscriptions for `push` (2,000 with --quick).
    #[arg(long, default_value_t = 100_000)]
    push_subscribers: usize,
    /// Length of `soak`.
    #[arg(long, default_value_t = 60)]
    soak_minutes: u64,
    /// Readings per second from the soak's stations.
    #[arg(long, default_value_t = 5000.0)]
    soak_rate: f64,
    /// Citizen sockets open at any time during the soak (each comes and goes).
    #[arg(long, default_value_t = 5000)]
    soak_citizens: usize,
    /// Parts of the soak's load to leave out, to find which one a growth comes from: load, typhoon, floods, operator,
    /// citizens, influx (comma-separated).
    #[arg(long, value_delimiter = ',')]
    soak_skip: Vec<String>,
    /// SQLite page cache of the soak's server (`store.cache_mib`); the default fills in ~10 min of the soak, a small
    /// one shows sooner whether anything else grows.
    #[arg(long)]
    soak_cache_mib: Option<u32>,
    /// Where the soak writes its samples (CSV, one row per 10 s).
    #[arg(long, default_value = "target/soak.csv")]
    soak_csv: PathBuf,
    /// Where to append the result rows (tab-separated: name, figure, unit, peer, peer figure, ratio, target, met).
    #[arg(long)]
    results: Option<PathBuf>,
}

/// One row of the results table.
pub struct Row {
    pub name: String,
    pub figure: f64,
    pub unit: &'static str,
    pub peer: Option<(String, f64)>,
    pub target: String,
    pub met: Option<bool>,
}

impl Row {
    fn line(&self) -> String {
        let (peer, peer_figure, ratio) = match &self.peer {
            Some((name, f)) if *f > 0.0 => (name.clone(), format!("{f:.1}"), format!("{:.2}", self.figure / f)),
            Some((name, f)) => (name.clone(), format!("{f:.1}"), "-".into()),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let met = match self.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "-",
        };
        format!(
            "{}\t{:.1}\t{}\t{peer}\t{peer_figure}\t{ratio}\t{}\t{met}",
            self.name, self.figure, self.unit, self.target
        )
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    probes::raise_fd_limit(200_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let all = ["ingest", "latency", "fanout", "flood"];
    let chosen: Vec<&str> =
        if cli.benches.is_empty() { all.to_vec() } else { cli.benches.iter().map(String::as_str).collect() };
    let mut rows = Vec::new();
    for bench in chosen {
        println!("== {bench}");
        let result = runtime.block_on(async {
            match bench {
                "ingest" => peers::ingest(&cli).await,
                "latency" => probes::latency(&cli).await,
                "fanout" => probes::fanout(&cli).await,
                "flood" => probes::flood(&cli).await,
                "soak" => soak::soak(&cli).await,
                "push" => push::push(&cli).await,
                "traffic" => traffic::traffic(&cli).await,
                "backbone" => backbone::backbone(&cli).await,
                other => {
                    anyhow::bail!(
                        "unknown benchmark `{other}` (ingest, latency, fanout, flood, soak, push, traffic, backbone)"
                    )
                }
            }
        });
        match result {
            Ok(mut r) => {
                for row in &r {
                    println!("RESULT\t{}", row.line());
                }
                rows.append(&mut r);
            }
            Err(e) => println!("RESULT\t{bench}\tfailed: {e:#}"),
        }
    }
    if let Some(path) = &cli.results {
        let text: String = rows.iter().map(|r| r.line() + "\n").collect();
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))?;
    }
    Ok(())
}

/// Durations scale down in `--quick` mode.
pub fn span(cli: &Cli, full: u64, quick: u64) -> Duration {
    Duration::from_secs(if cli.quick { quick } else { full })
}
