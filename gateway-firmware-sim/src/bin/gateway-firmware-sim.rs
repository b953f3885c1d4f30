//! Command line of the simulator: thin, everything lives in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use gateway_firmware_sim::timefmt::parse_duration;
use gateway_firmware_sim::{plan, run_load, run_scenario, Fleet, LoadOptions, RunOptions, Scenario, SimError};
use serde_json::json;

/// Exit code when a run finished but some messages were never acknowledged.
const EXIT_MISSING: u8 = 2;

#[derive(Parser)]
#[command(
    name = "gateway-firmware-sim",
    version,
    about = "Field gateways that behave like real firmware: scenario replays and MQTT load for disaster-cloud.",
    long_about = "Field gateways that behave like real firmware: scenario replays and MQTT load for disaster-cloud.\n\n\
Devices publish readings to sensors/{id}/readings and heartbeats to sensors/{id}/status (MQTT 3.1.1, username = device \
id, password from devices.toml), with a last will {\"online\": false}. Firmware buffers while offline (bounded, oldest \
dropped and counted), reconnects with exponential backoff and jitter, and resends unacknowledged QoS 1 messages.\n\n\
Exit status: 0 all acknowledged, 1 bad input or options, 2 some messages were never acknowledged.",
    after_help = "Examples:\n  \
gateway-firmware-sim validate config/scenarios/*.toml\n  \
gateway-firmware-sim scenario config/scenarios/typhoon.toml --port 1883\n  \
gateway-firmware-sim scenario config/scenarios/typhoon.toml --plan-only | head\n  \
gateway-firmware-sim load --connections 50 --rate 5000 --duration 30s --qos 1"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a scenario file against a broker, one MQTT connection per device it names.
    #[command(after_help = "Examples:\n  \
gateway-firmware-sim scenario config/scenarios/typhoon.toml\n  \
gateway-firmware-sim scenario config/scenarios/typhoon.toml --seed 7 --compression 2880 --start 2026-11-26T00:00:00+08:00\n  \
gateway-firmware-sim scenario config/scenarios/quick.toml --plan-only")]
    Scenario(ScenarioArgs),
    /// Load a broker: many connections at a target rate; measures acknowledged msg/s and ack latency.
    #[command(after_help = "Examples:\n  \
gateway-firmware-sim load --connections 10 --rate 1000 --duration 10s\n  \
gateway-firmware-sim load --connections 100 --rate 0 --batch 20 --message-size 4096 --qos 1 --duration 1m\n  \
gateway-firmware-sim load --devices config/devices.toml --connections 11 --rate 200")]
    Load(LoadArgs),
    /// Check scenario files (and the sensor and device files) without connecting; prints what each plays.
    #[command(
        after_help = "Example:\n  gateway-firmware-sim validate config/scenarios/typhoon.toml config/scenarios/quick.toml"
    )]
    Validate(ValidateArgs),
}

#[derive(Args)]
struct FleetArgs {
    /// Sensor registry (ids, kinds, positions, intervals, metrics). Example: --sensors config/sensors.toml
    #[arg(long, default_value = "config/sensors.toml", value_name = "FILE")]
    sensors: PathBuf,
    /// Device credentials (id, password). Example: --devices config/devices.toml
    #[arg(long, default_value = "config/devices.toml", value_name = "FILE")]
    devices: PathBuf,
}

#[derive(Args)]
struct BrokerArgs {
    /// MQTT broker host. Example: --host 127.0.0.1
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// MQTT broker port (plain MQTT 3.1.1). Example: --port 1883
    #[arg(long, default_value_t = 1883)]
    port: u16,
}

#[derive(Args)]
struct ScenarioArgs {
    /// Scenario file. Example: config/scenarios/typhoon.toml
    file: PathBuf,
    #[command(flatten)]
    fleet: FleetArgs,
    #[command(flatten)]
    broker: BrokerArgs,
    /// Another broker each device turns to when its connection fails or closes (repeat for more; tried in turn,
    /// then --host/--port again), as gateways provisioned with two front doors of a cluster do.
    /// Example: --failover 10.0.0.2:1883
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_broker)]
    failover: Vec<(String, u16)>,
    /// Seed of every random draw (noise, clock skew, duplicates); same seed, same messages. Default: the scenario's.
    /// Example: --seed 7
    #[arg(long)]
    seed: Option<u64>,
    /// Scenario time of offset 0, stamped into payload ts: Unix milliseconds, RFC 3339, `now` or `now-<duration>`.
    /// Default: one scenario span before now, so the last reading is stamped about now. Example: --start now-24h
    #[arg(long, value_name = "TIME")]
    start: Option<String>,
    /// Scenario seconds per wall second (default: the scenario's). Example: --compression 2880 (24 h in 30 s)
    #[arg(long)]
    compression: Option<f64>,
    /// Stamp payload ts with the wall clock when each device measures, not scenario time (--start is then unused):
    /// the server sees a live storm, as `disaster-cloud demo` plays it. Example: --wall-clock
    #[arg(long)]
    wall_clock: bool,
    /// Print the planned messages as JSON lines (at, device, topic, payload, kind) and exit without connecting.
    /// Example: --plan-only | grep RG0001
    #[arg(long)]
    plan_only: bool,
    /// No progress bar. Example: --quiet
    #[arg(long)]
    quiet: bool,
    /// Print the final summary as one JSON object instead of text. Example: --json
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct LoadArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Concurrent MQTT connections. Example: --connections 50
    #[arg(long, default_value_t = 10)]
    connections: usize,
    /// Target messages per second over all connections; 0 = as fast as acknowledgements allow. Example: --rate 5000
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Minimum payload size in bytes, padded with a "pad" field; 0 = natural size (~60 B). Example: --message-size 1024
    #[arg(long, default_value_t = 0)]
    message_size: usize,
    /// Reading sets per message (a JSON array when above 1, as a gateway batches). Example: --batch 20
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// MQTT QoS, 0 or 1 (QoS 0 counts a message as acknowledged once written). Example: --qos 0
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// How long to generate messages. Example: --duration 1m
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    duration: Duration,
    /// Unacknowledged publishes per connection. Example: --max-inflight 100
    #[arg(long, default_value_t = 100)]
    max_inflight: u16,
    /// After the duration, how long to wait for outstanding acknowledgements. Example: --drain-timeout 30s
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    drain_timeout: Duration,
    /// Connect as these devices (round-robin) with their passwords; default LOAD0001… without password (anonymous
    /// brokers only). Example: --devices config/devices.toml
    #[arg(long, value_name = "FILE")]
    devices: Option<PathBuf>,
    /// No progress bar. Example: --quiet
    #[arg(long)]
    quiet: bool,
    /// Print the final summary as one JSON object instead of text. Example: --json
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ValidateArgs {
    /// Scenario files. Example: config/scenarios/*.toml
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    fleet: FleetArgs,
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

fn read(path: &Path) -> Result<String, SimError> {
    std::fs::read_to_string(path).map_err(|source| SimError::Io { path: path.display().to_string(), source })
}

fn load_fleet(args: &FleetArgs) -> Result<Fleet, SimError> {
    let (s, d) = (read(&args.sensors)?, read(&args.devices)?);
    Fleet::from_files_named(&s, &args.sensors.display().to_string(), &d, &args.devices.display().to_string())
}

fn load_scenario(path: &Path) -> Result<Scenario, SimError> {
    Scenario::from_toml(&read(path)?, &path.display().to_string())
}

/// `--start`: Unix ms, RFC 3339, `now`, `now-<duration>`.
/// `--failover HOST:PORT`.
fn parse_broker(text: &str) -> Result<(String, u16), String> {
    let (host, port) = text.rsplit_once(':').filter(|(h, _)| !h.is_empty()).ok_or("expected HOST:PORT")?;
    let port = port.parse().map_err(|e| format!("port `{port}`: {e}"))?;
    Ok((host.to_string(), port))
}

fn parse_start(text: &str) -> Result<i64, SimError> {
    let bad = |reason: String| SimError::Option { option: "start", reason };
    let now = gateway_firmware_sim::now_ms();
    if text == "now" {
        return Ok(now);
    }
    if let Some(rest) = text.strip_prefix("now-") {
        return parse_duration(rest).map(|d| now - d.as_millis() as i64).map_err(bad);
    }
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|e| bad(format!("`{text}` is not Unix milliseconds, RFC 3339, `now` or `now-<duration>`: {e}")))
}

async fn scenario(args: ScenarioArgs) -> Result<ExitCode, SimError> {
    let scenario = load_scenario(&args.file)?;
    let fleet = load_fleet(&args.fleet)?;
    let mut opts = RunOptions::for_scenario(&scenario);
    opts.host = args.broker.host;
    opts.port = args.broker.port;
    opts.failover = args.failover;
    opts.quiet = args.quiet;
    opts.wall_clock = args.wall_clock;
    if let Some(seed) = args.seed {
        opts.seed = seed;
    }
    if let Some(start) = &args.start {
        opts.start_ts_ms = parse_start(start)?;
    }
    if let Some(c) = args.compression {
        if !(c.is_finite() && c > 0.0) {
            return Err(SimError::Option {
                option: "compression",
                reason: format!("must be a positive number, found {c}"),
            });
        }
        opts.compression = c;
    }
    if args.plan_only {
        let plan = plan(&fleet, &scenario, opts.seed, opts.start_ts_ms)?;
        for m in plan.messages() {
            println!(
                "{}",
                json!({"at_s": m.at.as_secs_f64(), "device": m.device, "topic": m.topic, "kind": format!("{:?}", m.kind).to_lowercase(), "payload": m.payload})
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !args.quiet && !args.json {
        eprintln!(
            "playing {} ({} devices, {} wall) against {}:{}, seed {}",
            scenario.name,
            scenario.device_ids().len(),
            gateway_firmware_sim::timefmt::format_duration(scenario.wall_duration(if opts.compression > 0.0 {
                opts.compression
            } else {
                scenario.compression
            })),
            opts.host,
            opts.port,
            opts.seed
        );
    }
    let s = run_scenario(&fleet, &scenario, &opts).await?;
    if args.json {
        println!(
            "{}",
            json!({
                "scenario": s.scenario, "devices": s.devices, "planned": s.planned, "readings": s.readings,
                "duplicates": s.duplicates, "status": s.status, "sent": s.sent, "resent": s.resent, "acked": s.acked,
                "buffered": s.buffered, "dropped": s.dropped, "missing": s.missing(), "connects": s.connects,
                "connect_failures": s.connect_failures, "disconnects": s.disconnects,
                "elapsed_s": s.elapsed.as_secs_f64(), "rate_msg_s": s.rate(),
                "latency_ms": {"p50": s.latency.p50.as_secs_f64() * 1e3, "p99": s.latency.p99.as_secs_f64() * 1e3, "max": s.latency.max.as_secs_f64() * 1e3},
                "errors": s.errors,
            })
        );
    } else {
        println!("{s}");
    }
    Ok(if s.is_complete() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_MISSING) })
}

async fn load(args: LoadArgs) -> Result<ExitCode, SimError> {
    let devices = match &args.devices {
        Some(path) => {
            let text = read(path)?;
            // Only the credentials matter here; reuse the fleet parser's checks with an empty registry.
            let parsed: toml::Table = toml::from_str(&text).map_err(|e| SimError::Syntax {
                origin: path.display().to_string(),
                line: 0,
                column: 0,
                message: e.message().to_string(),
            })?;
            let list = parsed.get("device").and_then(|d| d.as_array()).cloned().unwrap_or_default();
            let creds: Vec<(String, Option<String>)> = list
                .iter()
                .filter_map(|d| {
                    let id = d.get("id")?.as_str()?.to_string();
                    Some((id, d.get("password").and_then(|p| p.as_str()).map(String::from)))
                })
                .collect();
            if creds.is_empty() {
                return Err(SimError::Invalid {
                    origin: path.display().to_string(),
                    key: "device".into(),
                    reason: "no [[device]] with an id".into(),
                });
            }
            creds
        }
        None => Vec::new(),
    };
    let opts = LoadOptions {
        host: args.broker.host,
        port: args.broker.port,
        connections: args.connections,
        rate: args.rate,
        message_size: args.message_size,
        batch: args.batch,
        qos: args.qos,
        duration: args.duration,
        max_inflight: args.max_inflight,
        devices,
        drain_timeout: args.drain_timeout,
        quiet: args.quiet,
    };
    let s = run_load(&opts).await?;
    if args.json {
        println!(
            "{}",
            json!({
                "connections": s.connections, "connected": s.connected, "generated": s.generated, "sent": s.sent,
                "resent": s.resent, "acked": s.acked, "readings_acked": s.readings_acked, "bytes_acked": s.bytes_acked,
                "missing": s.missing, "dropped": s.dropped, "duration_s": s.duration.as_secs_f64(), "elapsed_s": s.elapsed.as_secs_f64(),
                "target_rate": s.target_rate, "rate_msg_s": s.rate(),
                "latency_ms": {"p50": s.latency.p50.as_secs_f64() * 1e3, "p99": s.latency.p99.as_secs_f64() * 1e3, "max": s.latency.max.as_secs_f64() * 1e3},
                "errors": s.errors,
            })
        );
    } else {
        println!("{s}");
    }
    Ok(if s.is_complete() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_MISSING) })
}

fn validate(args: ValidateArgs) -> Result<ExitCode, SimError> {
    let fleet = load_fleet(&args.fleet)?;
    let mut failed = false;
    for f in &args.files {
        match load_scenario(f).and_then(|s| s.check_fleet(&fleet).map(|()| s)) {
            Ok(s) => {
                let p = plan(&fleet, &s, s.seed, 0)?;
                println!(
                    "ok  {}: {} — {} devices ({}), {} messages, {} of scenario time in {}",
                    f.display(),
                    s.name,
                    s.device_ids().len(),
                    s.device_ids().join(" "),
                    p.messages().len(),
                    gateway_firmware_sim::timefmt::format_duration(s.span),
                    gateway_firmware_sim::timefmt::format_duration(s.duration()),
                );
            }
            Err(e) => {
                failed = true;
                println!("BAD {e}");
            }
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Scenario(a) => scenario(a).await,
        Command::Load(a) => load(a).await,
        Command::Validate(a) => validate(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
