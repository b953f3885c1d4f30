//! `disaster-cloud`: the command line. Thin on purpose: parsing flags, then handing over to the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use disaster_cloud::config::{self, ConfigFiles};
use disaster_cloud::server::{self, Listen};
use disaster_cloud::{deployment, metrics, web};

/// Field-sensor streams to public warnings: an MQTT broker, a geo-indexed rule engine and alert channels in one process.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server from a configuration file (production).
    ///
    /// Refuses to start with secrets written in config files (use the `*_env` keys or `password_hash`), with the
    /// demo's published secrets, with template placeholders (`.invalid`) and with deliveries to itself (unless
    /// `[deployment] drill = true`); see config/production/ and docs/OPERATIONS.md. Operator tokens: the config's
    /// `[[operator_tokens]]`, `--operator-token`, or both.
    ///
    /// Example: disaster-cloud serve --config /etc/disaster-cloud/disaster-cloud.toml --data-dir /var/lib/disaster-cloud
    Serve {
        /// The main configuration file; the files it names are read relative to its folder.
        #[arg(long, env = "DC_CONFIG", default_value = "config/disaster-cloud.toml")]
        config: PathBuf,
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Device identities: X.509 certificates from the deployment CA and passwords for the plain listeners.
    ///
    /// Example: disaster-cloud device provision RG0042 --data-dir /var/lib/disaster-cloud
    Device {
        #[command(subcommand)]
        action: DeviceAction,
        /// The server's data dir (holds the CA and the device store).
        #[arg(long, env = "DC_DATA_DIR", default_value = "data", global = true)]
        data_dir: PathBuf,
    },
    /// Make a new operator token: prints the token once and the config lines that store its hash.
    ///
    /// Example: disaster-cloud token new --name alice --scope operate
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Keys that sign alert messages between cluster processes (a worker signs, fan-out nodes verify).
    ///
    /// Example: disaster-cloud cluster-key new --out /etc/disaster-cloud/worker-nantou.pem
    ClusterKey {
        #[command(subcommand)]
        action: ClusterKeyAction,
    },
    /// Run the server on embedded defaults and replay a simulated typhoon, then print where to look.
    ///
    /// Example: disaster-cloud demo
    Demo {
        /// Do not start the simulated scenario (only the server, for trying things by hand).
        #[arg(long)]
        no_scenario: bool,
        /// A scenario file to replay instead of the built-in typhoon (see config/scenarios/README.md).
        #[arg(long, conflicts_with = "no_scenario")]
        scenario: Option<PathBuf>,
        #[command(flatten)]
        common: CommonArgs,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceAction {
    /// Issue a key and certificate (subject O = device id) and a password; register the device.
    Provision {
        /// 1-32 ASCII letters and digits.
        device_id: String,
    },
    /// Stop a device connecting (certificate and password), at once on a running server.
    Revoke { device_id: String },
}

#[derive(Debug, Subcommand)]
enum ClusterKeyAction {
    /// A new Ed25519 key for one worker: writes it (PKCS#8 PEM, mode 0600, never over an existing file) and prints
    /// the public key and the lines the fan-out nodes' config needs.
    New {
        /// Where to write the private key (the worker's `--signing-key` or `upstream.signing_key_file`).
        #[arg(long)]
        out: PathBuf,
        /// The worker that will hold it (its name in the fan-out nodes' list).
        #[arg(long, default_value = "worker")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// A new random token for one operator or tool.
    New {
        /// Who holds it (shown in logs and the audit trail).
        #[arg(long)]
        name: String,
        /// read, operate or admin.
        #[arg(long, value_parser = ["read", "operate", "admin"])]
        scope: String,
    },
}

#[derive(Debug, Args)]
struct CommonArgs {
    /// Where alerts, readings and spools are kept (serve); a temporary folder for the demo when not given.
    #[arg(long, env = "DC_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// MQTT 3.1.1 listen address, overriding mqtt.v4_listen.
    #[arg(long, env = "DC_MQTT_LISTEN")]
    mqtt_listen: Option<SocketAddr>,
    /// MQTT 5 listen address, overriding mqtt.v5_listen.
    #[arg(long, env = "DC_MQTT5_LISTEN")]
    mqtt5_listen: Option<SocketAddr>,
    /// MQTT 3.1.1 over TLS (device certificates), overriding mqtt.v4_tls_listen.
    #[arg(long, env = "DC_MQTT_TLS_LISTEN")]
    mqtt_tls_listen: Option<SocketAddr>,
    /// MQTT 5 over TLS (device certificates), overriding mqtt.v5_tls_listen.
    #[arg(long, env = "DC_MQTT5_TLS_LISTEN")]
    mqtt5_tls_listen: Option<SocketAddr>,
    /// HTTP listen address (map, websockets, APIs, /metrics), overriding http.listen.
    #[arg(long, env = "DC_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// HTTPS and WSS instead of HTTP and WS on the HTTP port, with the [tls] certificate (deployment CA by default);
    /// overrides http.tls (`--http-tls=false` turns it off).
    #[arg(long, env = "DC_HTTP_TLS", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    http_tls: Option<bool>,
    /// The MQTT TLS listeners (device certificates) on or off; overrides mqtt.tls (`--mqtt-tls=false` turns them off).
    #[arg(long, env = "DC_MQTT_TLS", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    mqtt_tls: Option<bool>,
    /// An admin operator token, added to the config's `[[operator_tokens]]` (`token new` makes those). `serve` needs
    /// at least one of the two; `demo` makes one up and prints it when neither is given.
    #[arg(long, env = "DC_OPERATOR_TOKEN", hide_env_values = true)]
    operator_token: Option<String>,
}

/// Scale-out on an existing MQTT cluster (`[upstream]`) or the NATS backbone (`[cluster]`), docs/SCALING.md; each flag
/// overrides the config's key.
#[derive(Debug, Args)]
struct ClusterArgs {
    /// Consume from this broker (mqtt://host:port) instead of running the front door.
    #[arg(long, env = "DC_UPSTREAM", conflicts_with = "cluster")]
    upstream: Option<String>,
    /// The NATS JetStream cluster (nats://a:4222,nats://b:4222,nats://c:4222) as the replicated backbone; overrides
    /// `[cluster] urls` (docs/SCALING.md).
    #[arg(long, env = "DC_CLUSTER", value_delimiter = ',')]
    cluster: Vec<String>,
    /// What this process does: on an MQTT cluster worker, writer or fanout; on the NATS cluster front-door, worker or
    /// dissemination or fan-out.
    #[arg(long, env = "DC_ROLE", value_parser = ["worker", "writer", "fanout", "front-door", "dissemination", "fan-out"])]
    role: Option<String>,
    /// The process's name on the cluster (the MQTT client id, or the NATS connection name and lease owner): unique
    /// per process, stable across its restarts.
    #[arg(long, env = "DC_UPSTREAM_CLIENT_ID")]
    client_id: Option<String>,
    /// A region this worker owns (a county code such as 10008); repeat or separate with commas.
    #[arg(long = "region", env = "DC_REGIONS", value_delimiter = ',')]
    regions: Vec<String>,
    /// A worker's key that signs its alert messages (PKCS#8 PEM, readable by its owner only), overriding
    /// `upstream.signing_key_file` or `cluster.signing_key_file` (`cluster-key new` makes one).
    #[arg(long, env = "DC_SIGNING_KEY_FILE")]
    signing_key: Option<PathBuf>,
    /// The NATS user this process logs in as, overriding `cluster.user` (default: the role's name). Its password
    /// comes from DC_CLUSTER_PASSWORD, `cluster.password_env` or `cluster.password_file`, never the command line.
    #[arg(long, env = "DC_CLUSTER_USER")]
    cluster_user: Option<String>,
}

/// `RUST_LOG`, or `info` with the broker's chatter at `warn`. Either way rustls's handshake parser is held at `error`
/// unless `RUST_LOG` names rustls: clients connecting by IP address (`mosquitto_pub -h 127.0.0.1 --cafile …`, which
/// OpenSSL-based clients do) put that address in SNI, which RFC 6066 forbids; rustls ignores it (the certificate
/// carries the IP as a subjectAltName, so verification is unaffected) but logs a warning for every connection.
fn log_filter() -> EnvFilter {
    let given = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
    let filter = match &given {
        Some(text) => EnvFilter::try_new(text).unwrap_or_else(|_| EnvFilter::new("info,rumqttd=warn")),
        None => EnvFilter::new("info,rumqttd=warn"),
    };
    if given.is_some_and(|text| text.contains("rustls")) {
        return filter;
    }
    match "rustls::msgs::handshake=error".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    metrics::init();
    match cli.command {
        Command::Device { action: DeviceAction::Provision { device_id }, data_dir } => {
            let p = ingest::identity::provision(&data_dir, &device_id)?;
            println!("device {} provisioned", p.device_id);
            println!(
                "  certificate: {}\n  key:         {}\n  CA:          {}",
                p.cert_path.display(),
                p.key_path.display(),
                p.ca_path.display()
            );
            println!("  password for the plain listeners (shown once, stored hashed): {}", p.password);
            println!("  on TLS publish to /tenants/{0}/sensors/{0}/readings or sensors/{0}/readings", p.device_id);
            Ok(())
        }
        Command::Device { action: DeviceAction::Revoke { device_id }, data_dir } => {
            ingest::identity::revoke(&data_dir, &device_id)?;
            println!("device {device_id} revoked");
            Ok(())
        }
        Command::ClusterKey { action: ClusterKeyAction::New { out, name } } => {
            let signer = disaster_cloud::scale_out::signing::AlertSigner::write_new(&out)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("key written to {} (give it to worker {name} only: --signing-key)", out.display());
            println!("public key: {}", signer.public_key());
            println!(
                "add to the fan-out nodes' config file ([[cluster.trusted_workers]] on the NATS backbone):\n[[upstream.trusted_workers]]\nname = \"{name}\"\npublic_key = \"{}\"\nregions = []  # the counties it may sign for, e.g. [\"10008\"]",
                signer.public_key()
            );
            Ok(())
        }
        Command::Token { action: TokenAction::New { name, scope } } => {
            let token = random_token();
            println!("token (give it to {name}; it is not stored): {token}");
            println!(
                "add to the config file:\n[[operator_tokens]]\nname = \"{name}\"\nscope = \"{scope}\"\nsha256 = \"{}\"",
                web::auth::hex(&web::auth::digest(&token))
            );
            Ok(())
        }
        Command::Serve { config, common, cluster } => {
            let mut files = ConfigFiles::from_path(&config)?;
            apply_tls_flags(&mut files, &common)?;
            let main_file = config.display().to_string();
            let env = |name: &str| std::env::var(name).ok();
            // Before anything binds or writes: no demo secrets, no secrets in files, no placeholders, no deliveries
            // to ourselves (src/deployment.rs).
            let http_listen = common.http_listen.unwrap_or(files.main.http.listen);
            deployment::check_serve(&files, &main_file, http_listen, &env)?;
            deployment::resolve_env(&mut files, &main_file, &env)?;
            if let Some(warning) = deployment::public_url_mismatch(&files.main.http.public_url, http_listen) {
                tracing::warn!(file = %main_file, "{warning}");
            }
            // `--role` and `--client-id` serve both ways of scaling out; `--cluster` says which one is meant.
            let on_backbone = !cluster.cluster.is_empty() || files.main.cluster.is_some();
            let (cluster_role, cluster_name, cluster_key) = if on_backbone {
                (cluster.role.clone(), cluster.client_id.clone(), cluster.signing_key.clone())
            } else {
                (None, None, None)
            };
            let overrides = disaster_cloud::scale_out::Overrides {
                url: cluster.upstream,
                role: if on_backbone { None } else { cluster.role },
                client_id: if on_backbone { None } else { cluster.client_id },
                regions: cluster.regions,
                signing_key_file: if on_backbone { None } else { cluster.signing_key },
            };
            let mqtt_role = disaster_cloud::scale_out::ClusterRole::resolve(
                files.main.upstream.as_ref(),
                overrides,
                &config.display().to_string(),
                &env,
            );
            let backbone = disaster_cloud::scale_out::BackboneRole::resolve(
                files.main.cluster.as_ref(),
                disaster_cloud::scale_out::BackboneOverrides {
                    urls: cluster.cluster,
                    role: cluster_role,
                    name: cluster_name,
                    signing_key_file: cluster_key,
                    user: cluster.cluster_user,
                },
                &config.display().to_string(),
                &env,
            )?;
            use disaster_cloud::scale_out::Scaled;
            let role = match backbone {
                // The MQTT-cluster flags were meant for the backbone: do not read them as an `[upstream]` role.
                Some(backbone) => {
                    anyhow::ensure!(
                        files.main.upstream.is_none(),
                        "{}: `[upstream]` and `[cluster]` are two ways to scale out; give one",
                        config.display()
                    );
                    Some(Scaled::Backbone(backbone))
                }
                None => mqtt_role?.map(Scaled::Mqtt),
            };
            let tokens = web::auth::TokenSet::new(&files.main.operator_tokens, common.operator_token.as_deref())
                .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
            anyhow::ensure!(
                !tokens.is_empty(),
                "serve needs operator tokens: `[[operator_tokens]]` in {} or DC_OPERATOR_TOKEN",
                config.display()
            );
            let listen = listen(&files, &common);
            let data_dir = common.data_dir.clone().unwrap_or_else(|| PathBuf::from("data"));
            if let Some(Scaled::Backbone(backbone)) = &role {
                backbone
                    .prepare_data_dir(&data_dir)
                    .with_context(|| format!("setting the earlier alert journal aside in {}", data_dir.display()))?;
            }
            let (app, http) = server::start_with(files, &listen, tokens, Some(data_dir), role).await?;
            let served = serve_http(app, http).await;
            // A rule worker on the backbone hands its regions over and releases their leases before the process
            // ends (docs/SCALING.md § Rule workers); within Kubernetes' default 30 s grace period.
            disaster_cloud::scale_out::backbone::finish(std::time::Duration::from_secs(15)).await;
            served
        }
        Command::Demo { no_scenario, scenario, common } => {
            let mut files = ConfigFiles::embedded()?;
            apply_tls_flags(&mut files, &common)?;
            deployment::resolve_env(&mut files, "config/disaster-cloud.toml (embedded)", &|name: &str| {
                std::env::var(name).ok()
            })?;
            // The demo's links (CAP feed, demo webhook and CBC receivers) point at wherever it actually listens.
            let scheme = if files.main.http.tls { "https" } else { "http" };
            files.main.http.public_url = format!("{scheme}://{}", common.http_listen.unwrap_or(files.main.http.listen));
            let token = common.operator_token.clone().unwrap_or_else(random_token);
            let tokens = web::auth::TokenSet::new(&files.main.operator_tokens, Some(&token))
                .map_err(|e| anyhow::anyhow!("embedded config: {e}"))?;
            let listen = listen(&files, &common);
            // The demo keeps its state (deployment CA, device store) in a fresh temporary folder unless told otherwise.
            let data_dir = common
                .data_dir
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join(format!("disaster-cloud-demo-{}", std::process::id())));
            let tls = files.main.http.tls;
            let replay = if no_scenario {
                None
            } else {
                let (text, origin) = match &scenario {
                    Some(path) => (
                        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
                        path.display().to_string(),
                    ),
                    None => (config::embedded::TYPHOON.to_string(), "config/scenarios/typhoon.toml (embedded)".into()),
                };
                // The replay compresses scenario time (24 h in 60 s) and stamps the wall clock, so every device
                // reports `compression` times faster than its registered interval: the throttle scales with it, or
                // the scripted storm would never reach the rules (`ingest::throttle`).
                let compression = gateway_firmware_sim::Scenario::from_toml(&text, &origin)?.compression;
                if files.main.ingest.rate_factor > 0.0 && compression > 1.0 {
                    files.main.ingest.rate_factor *= compression;
                }
                Some((text, origin))
            };
            let (app, http) = server::start(files, &listen, tokens, Some(data_dir)).await?;
            print_demo_banner(&listen, &token, tls);
            if let Some((text, origin)) = replay {
                let mqtt = listen.mqtt_v4.context("the demo scenario needs the MQTT 3.1.1 listener")?;
                spawn_scenario(&text, &origin, mqtt)?;
            }
            serve_http(app, http).await
        }
    }
}

/// Replays a scenario with the simulated gateways against our own broker, in the background. The gateways stamp
/// their readings with the wall clock (as real devices in a storm do), so the demo shows what operators would see:
/// alerts issued now, no sensor looking silent because its timestamps are hours old. The scenario's own clock is
/// printed beside, every scenario hour.
fn spawn_scenario(text: &str, origin: &str, mqtt: SocketAddr) -> anyhow::Result<()> {
    use gateway_firmware_sim::{run_scenario, Fleet, RunOptions, Scenario};
    let scenario = Scenario::from_toml(text, origin)?;
    let fleet = Fleet::from_files(config::embedded::SENSORS, config::embedded::DEVICES)?;
    let opts = RunOptions {
        host: mqtt.ip().to_string(),
        port: mqtt.port(),
        quiet: true,
        wall_clock: true,
        ..RunOptions::for_scenario(&scenario)
    };
    let (span, compression, name) = (scenario.span, scenario.compression, scenario.name.clone());
    println!(
        "Replaying {origin}: {:.0} s of wall time; watch the map and the operator socket.",
        scenario.duration().as_secs_f64()
    );
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let hour = std::time::Duration::from_secs(3600);
        let mut at = std::time::Duration::ZERO;
        while at <= span {
            tokio::time::sleep_until(started + at.div_f64(compression.max(f64::MIN_POSITIVE))).await;
            tracing::info!(scenario = %name, clock = %gateway_firmware_sim::timefmt::format_duration(at), "scenario clock");
            println!(
                "  scenario {name}: {} of {}",
                gateway_firmware_sim::timefmt::format_duration(at),
                gateway_firmware_sim::timefmt::format_duration(span)
            );
            at += hour;
        }
    });
    tokio::spawn(async move {
        match run_scenario(&fleet, &scenario, &opts).await {
            Ok(summary) => println!("Scenario finished:\n{summary}"),
            Err(e) => tracing::error!(error = %e, "scenario failed"),
        }
    });
    Ok(())
}

/// `--http-tls` / `--mqtt-tls` override `http.tls` / `mqtt.tls`: TLS on or off with one flag each.
fn apply_tls_flags(files: &mut ConfigFiles, common: &CommonArgs) -> anyhow::Result<()> {
    let cfg = &mut files.main;
    cfg.http.tls = common.http_tls.unwrap_or(cfg.http.tls);
    cfg.mqtt.tls = common.mqtt_tls.unwrap_or(cfg.mqtt.tls);
    let addresses = [common.mqtt_tls_listen, common.mqtt5_tls_listen, cfg.mqtt.v4_tls_listen, cfg.mqtt.v5_tls_listen];
    anyhow::ensure!(
        common.mqtt_tls != Some(true) || addresses.iter().any(Option::is_some),
        "--mqtt-tls needs a listen address: mqtt.v4_tls_listen / mqtt.v5_tls_listen, or --mqtt-tls-listen"
    );
    Ok(())
}

fn listen(files: &ConfigFiles, common: &CommonArgs) -> Listen {
    let cfg = &files.main;
    let tls = |flag: Option<SocketAddr>, config: Option<SocketAddr>| flag.or(config).filter(|_| cfg.mqtt.tls);
    Listen {
        mqtt_v4: common.mqtt_listen.or(cfg.mqtt.v4_listen),
        mqtt_v5: common.mqtt5_listen.or(cfg.mqtt.v5_listen),
        mqtt_v4_tls: tls(common.mqtt_tls_listen, cfg.mqtt.v4_tls_listen),
        mqtt_v5_tls: tls(common.mqtt5_tls_listen, cfg.mqtt.v5_tls_listen),
        http: common.http_listen.unwrap_or(cfg.http.listen),
    }
}

async fn serve_http(app: Arc<disaster_cloud::app::App>, http: tokio::net::TcpListener) -> anyhow::Result<()> {
    let addr = http.local_addr()?;
    tracing::info!(%addr, tls = app.web.http_tls.is_some(), "HTTP listening");
    web::serve(app, http, async {
        let signal = shutdown_signal().await;
        tracing::info!(signal, "shutting down: no new connections; open requests finish, then the process exits");
    })
    .await
    .context("HTTP server")?;
    tracing::info!("stopped");
    Ok(())
}

/// SIGINT (Ctrl-C) or, on Unix, SIGTERM (systemd, Kubernetes, `docker stop`): its name, for the shutdown log line.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server cleanly");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..24).map(|_| char::from(b"abcdefghijkmnpqrstuvwxyz23456789"[rng.gen_range(0..32)])).collect()
}

/// The demo's "where to look": URLs, the token, and one ready-to-run publish that raises an alert.
fn print_demo_banner(listen: &Listen, token: &str, tls: bool) {
    let http = listen.http;
    let (web, ws) = if tls { ("https", "wss") } else { ("http", "ws") };
    let (device, password) = demo_gauge_credentials();
    let mqtt = listen.mqtt_v4.map(|a| (a.ip().to_string(), a.port())).unwrap_or(("127.0.0.1".into(), 1883));
    println!();
    println!("disaster-cloud demo is running.");
    println!("  live map (operators):  {web}://{http}/?token={token}");
    println!("  operator websocket:    {ws}://{http}/ws/operator  (Authorization: Bearer {token}, or ?token={token})");
    println!("  CAP feed:              {web}://{http}/cap/feed.atom");
    println!("  metrics:               {web}://{http}/metrics");
    println!("  operator token:        {token}");
    println!("Raise a heavy-rain alert with the rain gauge {device} in the Shenmu debris-flow area:");
    println!(
        "  mosquitto_pub -h {} -p {} -u {device} -P {password} -t sensors/{device}/readings -m '{{\"values\":{{\"rain_mm\":120}}}}'",
        mqtt.0, mqtt.1
    );
    println!();
}

fn demo_gauge_credentials() -> (String, String) {
    #[derive(serde::Deserialize)]
    struct Devices {
        device: Vec<Device>,
    }
    #[derive(serde::Deserialize)]
    struct Device {
        id: String,
        password: Option<String>,
    }
    let device = "RG0001".to_string();
    let password = toml::from_str::<Devices>(config::embedded::DEVICES)
        .ok()
        .and_then(|d| d.device.into_iter().find(|d| d.id == device).and_then(|d| d.password))
        .unwrap_or_default();
    (device, password)
}
