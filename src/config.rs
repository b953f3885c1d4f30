//! The TOML configuration, with errors that name the file, the key and what is wrong.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use alerting::Mode;
use serde::Deserialize;

/// The default configuration folder, compiled in so that `demo` runs from anywhere.
pub mod embedded {
    pub const MAIN: &str = include_str!("../config/disaster-cloud.toml");
    pub const SENSORS: &str = include_str!("../config/sensors.toml");
    pub const DEVICES: &str = include_str!("../config/devices.toml");
    pub const ZONES: &str = include_str!("../config/zones.geojson");
    pub const RULES: &str = include_str!("../config/rules.toml");
    pub const CELL_SITES: &str = include_str!("../config/cell_sites.csv");
    pub const CAP_TEMPLATES: &str = include_str!("../config/cap_templates.toml");
    pub const DISSEMINATION: &str = include_str!("../config/dissemination.toml");
    pub const INBOUND: &str = include_str!("../config/inbound.toml");
    pub const TYPHOON: &str = include_str!("../config/scenarios/typhoon.toml");
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub mqtt: MqttConfig,
    pub http: HttpConfig,
    pub files: FilesConfig,
    pub geo: GeoConfig,
    pub ingest: IngestSection,
    pub alerting: AlertingSection,
    /// The embedded readings store (always on).
    #[serde(default)]
    pub store: store::StoreConfig,
    /// The InfluxDB v2 sink; absent: no sink.
    #[serde(default)]
    pub influx: Option<store::InfluxConfig>,
    /// An external MQTT broker (cluster) instead of the front door, and this process's role there (`scale_out/`).
    #[serde(default)]
    pub upstream: Option<UpstreamSection>,
    /// A NATS JetStream cluster as the replicated backbone, and this process's role on it (`scale_out/backbone.rs`).
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
    /// Operator tokens by hash and scope (`disaster-cloud token new` makes one); DC_OPERATOR_TOKEN adds an admin token.
    #[serde(default)]
    pub operator_tokens: Vec<crate::web::auth::TokenEntry>,
    /// The server certificate of every TLS listener (MQTT and HTTPS).
    #[serde(default)]
    pub tls: TlsSection,
    /// Citizen reports: photo quota, clusters kept, caps on new clusters.
    #[serde(default)]
    pub reports: crate::reports::ReportsConfig,
    /// What kind of deployment this is (`drill = true`: a drill environment that may deliver to itself).
    #[serde(default)]
    pub deployment: crate::deployment::DeploymentSection,
}

/// `[upstream]`: an external MQTT cluster instead of the front door, and this process's role on it. `serve
/// --upstream/--role/--client-id/--region` override its keys; `scale_out::ClusterRole::resolve` checks the lot.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// `mqtt://host:port` of the cluster's internal listener.
    pub url: Option<String>,
    /// Unique per process and stable across its restarts (the broker keeps a worker's queue under it).
    pub client_id: Option<String>,
    /// The broker's login for this process, both or neither.
    pub username: Option<String>,
    /// Inline for the demo only (`serve` refuses it); `password_env` names the environment variable holding it.
    pub password: Option<String>,
    pub password_env: Option<String>,
    /// `worker` (default), `writer` or `fanout`.
    pub role: Option<String>,
    /// A worker's regions (county codes, e.g. "10008"); empty: all readings, from the device topics.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Writers' shared-subscription group.
    pub share_group: Option<String>,
    /// MQTT keep-alive towards the broker, 5..=3600 s.
    pub keep_alive_s: Option<u64>,
    /// How long an ended (cleared, cancelled) alert stays retained on the broker before it is removed; default 24 h.
    pub closed_retention_h: Option<u32>,
    /// A worker's Ed25519 key that signs its alert messages (`scale_out/signing.rs`), PKCS#8 PEM: a file (relative to
    /// this config file, readable by its owner only) or an environment variable holding the PEM; `--signing-key`
    /// overrides the file. Never inline: the key is what lets a message reach citizens. Other roles ignore it.
    pub signing_key_file: Option<PathBuf>,
    pub signing_key_env: Option<String>,
    /// A fan-out node's list of the workers' public keys it accepts alert messages from (required for `fanout`).
    #[serde(default)]
    pub trusted_workers: Vec<TrustedWorker>,
}

/// `[[upstream.trusted_workers]]`: one worker key a fan-out node accepts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedWorker {
    /// Who holds the key (logs, the operators' `signed_by`).
    pub name: String,
    /// Base64 of the 32-byte Ed25519 public key (`disaster-cloud cluster-key new` prints it).
    pub public_key: String,
    /// The regions (county codes) this key may sign alerts for; empty: all (a single worker behind the broker).
    #[serde(default)]
    pub regions: Vec<String>,
}

/// `[cluster]`: a NATS JetStream cluster as the replicated backbone (`docs/SCALING.md`). `serve --cluster/--role/
/// --client-id` override its keys; `scale_out::BackboneRole::resolve` checks the lot.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Every node's client URL, `nats://host:4222`.
    #[serde(default)]
    pub urls: Vec<String>,
    /// `front-door`, `worker`, `dissemination` or `fan-out`.
    pub role: Option<String>,
    /// This process's name on the cluster: unique per process, stable across its restarts.
    pub name: Option<String>,
    /// Copies of each stream and bucket, 1..=5; default 3 (survives the loss of any one node).
    pub replicas: Option<usize>,
    /// How long a front door retries a publish with the same id before it gives the device up (closes the
    /// connection unacknowledged), 10..=300 s; default 30.
    pub publish_deadline_s: Option<u64>,
    /// How long the readings stream remembers publish ids (a device's resend within it is stored once), 60..=86400 s;
    /// default 600.
    pub duplicate_window_s: Option<u64>,
    /// How long readings stay in the stream, 1..=8760 h; default 168 (7 days).
    pub readings_max_age_h: Option<u64>,
    /// A rule worker's region leases (and the dissemination node's lease) expire this long after their last
    /// renewal, 2..=300 s; default 10. A dead worker's regions, or a dead dissemination node's work, are taken over
    /// after about this long. Set by the first process that creates the bucket.
    pub lease_ttl_s: Option<u64>,
    /// How long an ended alert (cleared, cancelled) stays in the alerts stream after its final version, 1..=2592000 s;
    /// default 86400 (a day: a fan-out node or a region's next owner still learns that it ended). Then the region's
    /// owner removes its subject.
    pub ended_alert_retention_s: Option<u64>,
    /// A rule worker's Ed25519 key that signs every message it writes to the alerts stream (`scale_out/signing.rs`),
    /// PKCS#8 PEM: a file (relative to this config file, readable by its owner only) or an environment variable
    /// holding the PEM; `--signing-key` overrides the file. Other roles ignore it.
    pub signing_key_file: Option<PathBuf>,
    pub signing_key_env: Option<String>,
    /// The workers' public keys whose alert messages are accepted: required on fan-out nodes; on rule workers, when
    /// given, a region's alerts are adopted from the stream only if signed by one of them.
    #[serde(default)]
    pub trusted_workers: Vec<TrustedWorker>,
    /// The NATS user this process logs in as; default: the role's name, which is the role's user in
    /// `ops/nats/authorization.conf` (`front-door`, `worker`, `dissemination`, `fan-out`). `--cluster-user` /
    /// `DC_CLUSTER_USER` override it.
    pub user: Option<String>,
    /// Never in the file: `serve` refuses it (anyone with a copy of the file would have it). Here only so that the
    /// refusal can say so instead of "unknown field".
    pub password: Option<String>,
    /// The environment variable holding the user's password; default `DC_CLUSTER_PASSWORD`.
    pub password_env: Option<String>,
    /// A file holding the password (a mounted secret; relative to this config file, readable by its owner only).
    pub password_file: Option<PathBuf>,
    /// The CA certificate (PEM, relative to this config file) that issued the NATS nodes' certificates: given, every
    /// connection to the cluster is TLS, checked against it. Without it `tls://` URLs are checked against the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
}

/// The one server certificate the MQTT TLS listeners and HTTPS serve.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Names (DNS or IP) the certificate issued by the deployment CA (`<data dir>/pki/`) is valid for.
    #[serde(default = "default_server_names")]
    pub server_names: Vec<String>,
    /// Your own certificate chain and key (PEM, relative to the config file) instead of one from the deployment CA.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

impl Default for TlsSection {
    fn default() -> Self {
        Self { server_names: default_server_names(), cert: None, key: None }
    }
}

fn default_server_names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub v4_listen: Option<SocketAddr>,
    pub v5_listen: Option<SocketAddr>,
    /// TLS with device client certificates from the deployment CA (in the data dir).
    pub v4_tls_listen: Option<SocketAddr>,
    pub v5_tls_listen: Option<SocketAddr>,
    /// The TLS listeners on or off as a whole (flag `--mqtt-tls[=false]`); on by default, at the addresses above.
    #[serde(default = "yes")]
    pub tls: bool,
    pub broker_max_payload_bytes: usize,
    pub max_connections: usize,
    /// Sessions one device may have open at once (different client ids); a further one closes its oldest.
    #[serde(default = "default_max_sessions_per_device")]
    pub max_sessions_per_device: usize,
    /// Logins of one device id waiting for the password check at once; more are refused "server busy".
    #[serde(default = "default_max_pending_logins_per_device")]
    pub max_pending_logins_per_device: usize,
    /// Failed logins (unknown device, wrong password) one address (IPv6: a /64) may have at once, and seconds until
    /// one more is allowed; past them its logins are refused before any check.
    #[serde(default = "default_failed_login_burst")]
    pub failed_login_burst: u32,
    #[serde(default = "default_failed_login_refill_s")]
    pub failed_login_refill_s: u64,
}

fn default_max_sessions_per_device() -> usize {
    ingest::broker::BrokerConfig::default().max_sessions_per_device
}

fn default_max_pending_logins_per_device() -> usize {
    ingest::broker::BrokerConfig::default().max_pending_logins_per_device
}

fn default_failed_login_burst() -> u32 {
    ingest::broker::BrokerConfig::default().failed_login_burst
}

fn default_failed_login_refill_s() -> u64 {
    ingest::broker::BrokerConfig::default().failed_login_refill.as_secs()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub public_url: String,
    /// Operators receive at most one update per sensor per this many milliseconds.
    pub sensor_update_ms: u64,
    /// Tile URL template for the operators' map background, with {z} {x} {y}; empty for none.
    pub map_tile_url: String,
    /// A websocket client that sends nothing (not even a pong to our pings) for this long is dropped.
    #[serde(default = "default_ws_idle_timeout_s")]
    pub ws_idle_timeout_s: u64,
    /// HTTPS and WSS instead of HTTP and WS on `listen` (flag `--http-tls`), with the `[tls]` certificate.
    #[serde(default)]
    pub tls: bool,
    /// Per client address, requests to the public read-only endpoints (`/`, `/app`, `/cap/*`, `/opendata/*`,
    /// `/metrics`) allowed at once, and refilled per second; beyond them: 429 with Retry-After.
    #[serde(default = "default_public_burst")]
    pub public_burst: u32,
    #[serde(default = "default_public_per_s")]
    pub public_per_s: u32,
}

fn default_ws_idle_timeout_s() -> u64 {
    60
}

fn yes() -> bool {
    true
}

fn default_public_burst() -> u32 {
    120
}

fn default_public_per_s() -> u32 {
    20
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    pub sensors: PathBuf,
    pub devices: PathBuf,
    pub zones: PathBuf,
    pub rules: PathBuf,
    /// Inbound CAP sources (partner agencies' feeds and pushes); absent: none.
    #[serde(default)]
    pub inbound: Option<PathBuf>,
    /// CAP texts per event type and language.
    pub cap_templates: PathBuf,
    /// Carriers' 4G cell sites (CSV) for cell-broadcast targeting; absent: no cell broadcast targeting.
    #[serde(default)]
    pub cell_sites: Option<PathBuf>,
    /// CAP feed, webhooks and cell broadcast; absent: operators' channels only.
    #[serde(default)]
    pub dissemination: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoConfig {
    pub h3_resolution: u8,
    /// Most H3 cells one zone may need at `h3_resolution`; a bigger zone (a mistyped coordinate) is refused at load.
    #[serde(default = "default_max_zone_cells")]
    pub max_zone_cells: u64,
    /// Most H3 cells one cell site's footprint may need; a bigger one (a `range_m` typo) is refused at load.
    #[serde(default = "default_max_site_cells")]
    pub max_site_cells: u64,
}

fn default_max_zone_cells() -> u64 {
    geo_index::GeoLimits::default().max_zone_cells
}

fn default_max_site_cells() -> u64 {
    geo_index::GeoLimits::default().max_site_cells
}

impl GeoConfig {
    pub fn limits(&self) -> geo_index::GeoLimits {
        geo_index::GeoLimits { max_zone_cells: self.max_zone_cells, max_site_cells: self.max_site_cells }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSection {
    pub max_payload_bytes: usize,
    pub max_batch: usize,
    pub max_future_s: u32,
    pub max_age_s: u32,
    pub dead_letters: usize,
    /// A device may report up to this many times faster than its registered `interval_s`, sustained, with bursts
    /// of `rate_burst`; beyond, its readings are stored but kept from the rules, and the sensor is flagged
    /// (`ingest::throttle`, `dc_ingest_readings_throttled_total`). 0 turns it off.
    #[serde(default = "default_rate_factor")]
    pub rate_factor: f64,
    #[serde(default = "default_rate_burst")]
    pub rate_burst: u32,
}

fn default_rate_factor() -> f64 {
    ingest::throttle::DEFAULT_RATE_FACTOR
}

fn default_rate_burst() -> u32 {
    ingest::throttle::DEFAULT_BURST as u32
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingSection {
    pub max_lateness_s: u32,
    pub mode: Mode,
    pub id_prefix: String,
    /// Readings more than this many seconds behind issue time (the wall clock when we decide) still feed history and
    /// the rules' windows, but what they raise or change is kept for operators, with the reason, until fresh
    /// readings confirm it or an operator approves (`dc_alerts_held_total{reason="stale_evidence"}`).
    #[serde(default = "default_stale_after_s")]
    pub stale_after_s: u32,
    /// `[alerting.updates]`: what the public hears, how often (`alerting::publication`).
    #[serde(default)]
    pub updates: UpdatesSection,
}

/// `[alerting.updates]`: one public warning per hazard and area; its value-only changes at most once per
/// `min_interval_s`; flapping held. Every key has a default (the values below).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatesSection {
    /// Value- or contributor-only changes of a public warning go out at most once per this many seconds (the
    /// latest state always goes out when it passes); a raise, a level or severity change, an end and an operator's
    /// action go out at once. Default 300.
    #[serde(default = "default_min_interval_s")]
    pub min_interval_s: u32,
    /// A warning whose level (on/off included) changes more than this many times within `flapping_window_s` is
    /// held as flapping. Default 6.
    #[serde(default = "default_flapping_changes")]
    pub flapping_changes: u32,
    /// Default 600.
    #[serde(default = "default_flapping_window_s")]
    pub flapping_window_s: u32,
    /// It has settled (and its settled state goes out once) when at most this many changes remain within the
    /// window. Default 2; less than `flapping_changes`.
    #[serde(default = "default_settled_changes")]
    pub settled_changes: u32,
}

impl Default for UpdatesSection {
    fn default() -> Self {
        UpdatesSection {
            min_interval_s: default_min_interval_s(),
            flapping_changes: default_flapping_changes(),
            flapping_window_s: default_flapping_window_s(),
            settled_changes: default_settled_changes(),
        }
    }
}

impl UpdatesSection {
    pub fn policy(&self) -> alerting::UpdatePolicy {
        alerting::UpdatePolicy {
            min_interval_ms: i64::from(self.min_interval_s) * 1000,
            flapping_changes: self.flapping_changes as usize,
            flapping_window_ms: i64::from(self.flapping_window_s) * 1000,
            settled_changes: self.settled_changes as usize,
        }
    }
}

fn default_min_interval_s() -> u32 {
    (alerting::publication::DEFAULT_MIN_INTERVAL_MS / 1000) as u32
}

fn default_flapping_changes() -> u32 {
    alerting::publication::DEFAULT_FLAPPING_CHANGES as u32
}

fn default_flapping_window_s() -> u32 {
    (alerting::publication::DEFAULT_FLAPPING_WINDOW_MS / 1000) as u32
}

fn default_settled_changes() -> u32 {
    alerting::publication::DEFAULT_SETTLED_CHANGES as u32
}

fn default_stale_after_s() -> u32 {
    (alerting::alert::DEFAULT_STALE_AFTER_MS / 1000) as u32
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
}

impl Config {
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Invalid { file: file.into(), message: e.to_string() })?;
        config.check(file)?;
        Ok(config)
    }

    fn check(&self, file: &str) -> Result<(), ConfigError> {
        let invalid =
            |key: &str, why: &str| ConfigError::Invalid { file: file.into(), message: format!("`{key}`: {why}") };
        if !(0..=15).contains(&self.geo.h3_resolution) {
            return Err(invalid("geo.h3_resolution", "must be 0..=15"));
        }
        if self.ingest.max_payload_bytes == 0 || self.ingest.max_payload_bytes > self.mqtt.broker_max_payload_bytes {
            return Err(invalid("ingest.max_payload_bytes", "must be between 1 and mqtt.broker_max_payload_bytes"));
        }
        if self.mqtt.max_sessions_per_device == 0
            || self.mqtt.max_pending_logins_per_device == 0
            || self.mqtt.failed_login_burst == 0
            || self.mqtt.failed_login_refill_s == 0
        {
            return Err(invalid(
                "mqtt.max_sessions_per_device / max_pending_logins_per_device / failed_login_burst / \
                 failed_login_refill_s",
                "must be at least 1",
            ));
        }
        if self.http.sensor_update_ms < 50 {
            return Err(invalid("http.sensor_update_ms", "must be at least 50"));
        }
        if !(1..=3600).contains(&self.http.ws_idle_timeout_s) {
            return Err(invalid("http.ws_idle_timeout_s", "must be between 1 and 3600 seconds"));
        }
        if self.ingest.max_batch == 0 {
            return Err(invalid("ingest.max_batch", "must be at least 1"));
        }
        if self.alerting.id_prefix.is_empty()
            || !self.alerting.id_prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(invalid("alerting.id_prefix", "must be non-empty ASCII letters, digits, '-' or '.'"));
        }
        if self.alerting.stale_after_s < 60 {
            return Err(invalid(
                "alerting.stale_after_s",
                "must be at least 60: a sensor's regular report takes a while to arrive, and must not be held as old",
            ));
        }
        let updates = &self.alerting.updates;
        if updates.min_interval_s > 3600 {
            return Err(invalid(
                "alerting.updates.min_interval_s",
                "at most 3600: the public must hear the latest state within the hour",
            ));
        }
        if updates.flapping_changes < 2 {
            return Err(invalid("alerting.updates.flapping_changes", "must be at least 2 (a raise and its end)"));
        }
        if updates.settled_changes >= updates.flapping_changes {
            return Err(invalid(
                "alerting.updates.settled_changes",
                "must be less than flapping_changes, or a flapping warning could never settle",
            ));
        }
        if !(10..=86_400).contains(&updates.flapping_window_s) {
            return Err(invalid("alerting.updates.flapping_window_s", "must be between 10 and 86400 seconds"));
        }
        if !(self.ingest.rate_factor.is_finite() && self.ingest.rate_factor >= 0.0) {
            return Err(invalid("ingest.rate_factor", "must be a number ≥ 0 (0 turns throttling off)"));
        }
        if self.ingest.rate_factor > 0.0 && (self.ingest.rate_factor < 1.0 || self.ingest.rate_burst == 0) {
            return Err(invalid(
                "ingest.rate_factor / ingest.rate_burst",
                "rate_factor below 1 would throttle devices reporting at their registered interval; rate_burst must be \
                 at least 1",
            ));
        }
        if !self.http.public_url.starts_with("http://") && !self.http.public_url.starts_with("https://") {
            return Err(invalid("http.public_url", "must start with http:// or https://"));
        }
        if self.http.public_burst == 0 || self.http.public_per_s == 0 {
            return Err(invalid("http.public_burst / http.public_per_s", "must be at least 1"));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(invalid(
                "tls.cert / tls.key",
                "give both (your own certificate) or neither (the deployment CA's)",
            ));
        }
        if let Err((key, why)) = self.reports.check() {
            return Err(invalid(key, why));
        }
        if self.tls.server_names.is_empty() && self.tls.cert.is_none() {
            return Err(invalid("tls.server_names", "needs at least one DNS name or IP address"));
        }
        Ok(())
    }
}

/// The text of every file the server needs, read from a config folder or taken from the embedded defaults.
pub struct ConfigFiles {
    pub main: Config,
    pub sensors: (String, PathBuf),
    pub devices: (String, PathBuf),
    pub zones: (String, PathBuf),
    pub rules: (String, PathBuf),
    pub inbound: Option<(String, PathBuf)>,
    pub cap_templates: (String, PathBuf),
    pub cell_sites: Option<(String, PathBuf)>,
    pub dissemination: Option<(String, PathBuf)>,
    /// The compiled-in defaults (`demo`) rather than files: a rules reload re-checks the embedded text.
    pub embedded: bool,
    /// Whether this process keeps validated readings in `readings.sqlite` (history, the rules' catch-up): every
    /// process but a cluster's front door, which runs no rules and whose readings live in the replicated stream
    /// (`scale_out::Scaled::prepare` turns it off).
    pub readings_store: bool,
}

impl ConfigFiles {
    pub fn embedded() -> Result<Self, ConfigError> {
        let main = Config::parse(embedded::MAIN, "config/disaster-cloud.toml (embedded)")?;
        let name = |p: &Path| PathBuf::from(format!("config/{} (embedded)", p.display()));
        Ok(Self {
            sensors: (embedded::SENSORS.into(), name(&main.files.sensors)),
            devices: (embedded::DEVICES.into(), name(&main.files.devices)),
            zones: (embedded::ZONES.into(), name(&main.files.zones)),
            rules: (embedded::RULES.into(), name(&main.files.rules)),
            inbound: main.files.inbound.as_ref().map(|p| (embedded::INBOUND.to_string(), name(p))),
            cap_templates: (embedded::CAP_TEMPLATES.into(), name(&main.files.cap_templates)),
            cell_sites: main.files.cell_sites.as_ref().map(|p| (embedded::CELL_SITES.to_string(), name(p))),
            dissemination: main.files.dissemination.as_ref().map(|p| (embedded::DISSEMINATION.to_string(), name(p))),
            embedded: true,
            readings_store: true,
            main,
        })
    }

    pub fn from_path(path: &Path) -> Result<Self, ConfigError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| ConfigError::Read { file: p.display().to_string(), source })
        };
        let mut main = Config::parse(&read(path)?, &path.display().to_string())?;
        let dir = path.parent().unwrap_or(Path::new("."));
        main.tls.cert = main.tls.cert.map(|p| dir.join(p));
        main.tls.key = main.tls.key.map(|p| dir.join(p));
        let load = |p: &Path| -> Result<(String, PathBuf), ConfigError> {
            let full = dir.join(p);
            Ok((read(&full)?, full))
        };
        Ok(Self {
            sensors: load(&main.files.sensors)?,
            devices: load(&main.files.devices)?,
            zones: load(&main.files.zones)?,
            rules: load(&main.files.rules)?,
            inbound: main.files.inbound.as_deref().map(load).transpose()?,
            cap_templates: load(&main.files.cap_templates)?,
            cell_sites: main.files.cell_sites.as_deref().map(load).transpose()?,
            dissemination: main.files.dissemination.as_deref().map(load).transpose()?,
            embedded: false,
            readings_store: true,
            main,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_parse() {
        ConfigFiles::embedded().unwrap();
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let text = embedded::MAIN.replace("[geo]", "[geo]\nh3_resolutoin = 9");
        let e = Config::parse(&text, "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("h3_resolutoin"), "{e}");
    }

    #[test]
    fn bad_value_names_key_and_reason() {
        let text = embedded::MAIN.replace("h3_resolution = 9", "h3_resolution = 99");
        let e = Config::parse(&text, "x.toml").unwrap_err().to_string();
        assert!(e.contains("geo.h3_resolution") && e.contains("0..=15"), "{e}");
        let text = embedded::MAIN.replace("mode = \"Actual\"", "mode = \"Real\"");
        let e = Config::parse(&text, "x.toml").unwrap_err().to_string();
        assert!(e.contains("Real"), "{e}");
    }

    #[test]
    fn report_limits_default_when_absent_and_name_their_key() {
        let config = Config::parse(embedded::MAIN, "x.toml").unwrap();
        assert_eq!(config.reports, crate::reports::ReportsConfig::default());
        let text = format!("{}\n[reports]\nphoto_quota_bytes = 5000\nmax_clusters = 50\n", embedded::MAIN);
        let config = Config::parse(&text, "x.toml").unwrap();
        let policy = config.reports.policy();
        assert_eq!((policy.photo_quota_bytes, policy.clusters.max_clusters), (5000, 50));
        let text = format!("{}\n[reports]\nnew_clusters_per_zone_per_hour = 0\n", embedded::MAIN);
        let e = Config::parse(&text, "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("reports.new_clusters_per_zone_per_hour"), "{e}");
        let text = format!("{}\n[reports]\nphoto_quota = 5000\n", embedded::MAIN);
        let e = Config::parse(&text, "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("photo_quota"), "{e}");
    }

    #[test]
    fn geo_size_limits_default_when_absent() {
        let text = embedded::MAIN.replace("max_zone_cells = 200000\n", "").replace("max_site_cells = 100000\n", "");
        assert!(!text.contains("max_zone_cells ="));
        let config = Config::parse(&text, "x.toml").unwrap();
        assert_eq!(config.geo.limits(), geo_index::GeoLimits::default());
        let text = embedded::MAIN.replace("max_site_cells = 100000", "max_site_cells = 5");
        assert_eq!(Config::parse(&text, "x.toml").unwrap().geo.limits().max_site_cells, 5);
    }
}
