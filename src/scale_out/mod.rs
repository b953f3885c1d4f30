//! Scale-out on an existing MQTT cluster (`docs/SCALING.md`): the roles a process can play when readings
//! come from an external broker instead of our front door, and their wiring.
//!
//! - **worker** (`serve --upstream …`): the whole embedded pipeline — `Ingest::process`, store, rules, alert book,
//!   dissemination, web — fed by the broker. With `regions`, it owns those regions: it subscribes to
//!   `region/{r}/sensors/+/+` for each and loads only their zones, so every reading of an area reaches exactly one
//!   worker and that area's rule windows stay whole. Without `regions` it consumes the device topics directly (one
//!   worker behind the broker). It publishes every alert change to `alerts/{region}/{alert id}` (retained, QoS 1).
//! - **writer** (`--role writer`): stateless. Consumes the device topics through a shared subscription
//!   (`$share/{share_group}/sensors/+/readings|status`, so any number of writers split the load), validates with the same
//!   `Ingest::process`, writes readings to the InfluxDB sink, and forwards each accepted publish to the region topic of
//!   every region its readings fall in. No rules.
//! - **fanout** (`--role fanout`): no ingest, no rules. Subscribes to `alerts/+/+`, keeps the latest version of each
//!   alert ([`RemoteAlerts`], built from the broker's retained messages at start) and serves `/ws/citizen` and
//!   `/ws/operator` from it, so citizens' connections scale apart from the workers.
//!
//! Alert messages are signed by the worker that raised them (Ed25519, a key per worker) and verified by fan-out
//! nodes against the workers' public keys before anything is applied (`signing.rs`): publish rights on the broker are
//! not enough to reach citizens.
//!
//! A region is a county: the first five digits of a zone's Taiwan_Geocode_103 `geocode` (`10008` Nantou County).
//!
//! On a NATS JetStream cluster instead (`serve --cluster`), `backbone.rs` resolves the role, `front_door.rs` is
//! the front door whose PUBACKs wait for the replicated readings stream (it routes with the writer's code),
//! `rule_worker.rs` the rule worker owning regions by lease and continuing a dead worker's alerts,
//! `backbone_alerts.rs` the alerts stream's signed messages, `backbone_fanout.rs` the fan-out node watching them,
//! `disseminator.rs` the dissemination node (one active by lease, warnings rebuilt from the alerts stream, deliveries
//! recorded in a replicated ledger before each call) and `alert_message.rs` its reading of an alerts-stream message.
//!
//! Layout: this file resolves a process's role ([`ClusterRole`], from `[upstream]` in `config.rs` and the command
//! line), adapts the configuration to it and starts its links; `region.rs` maps zones to regions; `worker.rs`
//! publishes a worker's alerts; `signing.rs` signs and verifies them; `writer.rs` validates and routes;
//! `remote_alerts.rs` is a fan-out node's book of the workers' alerts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ingest::upstream::{self, Publisher, UpstreamConfig};

use crate::app::App;
use crate::clock::now_ms;
use crate::config::{ConfigFiles, UpstreamSection};
use crate::hot_path::HotPath;

mod alert_message;
pub mod backbone;
pub mod backbone_alerts;
mod backbone_fanout;
mod disseminator;
mod front_door;
mod region;
pub mod remote_alerts;
mod rule_worker;
pub mod signing;
mod worker;
mod writer;

pub use backbone::{BackboneOverrides, BackboneRole};
pub use region::zone_region;
pub use remote_alerts::RemoteAlerts;

/// What the command line says about the cluster; each field overrides the config file's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub url: Option<String>,
    pub role: Option<String>,
    pub client_id: Option<String>,
    pub regions: Vec<String>,
    /// A worker's signing key file (`--signing-key`), overriding `upstream.signing_key_file`: one config file can then
    /// serve every worker, each with its own key.
    pub signing_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Worker,
    Writer,
    Fanout,
}

impl Role {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "worker" => Some(Role::Worker),
            "writer" => Some(Role::Writer),
            "fanout" => Some(Role::Fanout),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScaleOutError {
    #[error("{file}: `upstream.{key}`: {message}")]
    Config { file: String, key: &'static str, message: String },
    #[error("{file}: {message}")]
    Zones { file: String, message: String },
    #[error("{file}: `cluster.{key}`: {message}")]
    Cluster { file: String, key: &'static str, message: String },
    #[error("{0}")]
    Upstream(#[from] ingest::IngestError),
    #[error("{0}")]
    Backbone(#[from] cluster::ClusterError),
}

/// How a process takes part in a deployment past one machine: on an MQTT cluster (`[upstream]`) or on the NATS
/// JetStream backbone (`[cluster]`). Neither: the single process (the default).
#[derive(Debug, Clone)]
pub enum Scaled {
    Mqtt(ClusterRole),
    Backbone(BackboneRole),
}

impl Scaled {
    pub fn prepare(&self, files: &mut ConfigFiles) -> Result<(), ScaleOutError> {
        match self {
            Scaled::Mqtt(role) => role.prepare(files),
            Scaled::Backbone(role) => {
                // A front door's readings are in the replicated stream and it runs no rules, a fan-out node sees
                // alerts only, a dissemination node runs no rules: a local readings.sqlite would be written by nobody
                // and read by nobody.
                files.readings_store = role.kind == backbone::BackboneRoleKind::Worker;
                role.prepare(files)
            }
        }
    }
}

/// A resolved role on the MQTT cluster: config file and command line merged and checked.
#[derive(Debug, Clone)]
pub struct ClusterRole {
    pub role: Role,
    pub upstream: UpstreamConfig,
    pub regions: Vec<String>,
    pub share_group: String,
    pub closed_retention_ms: i64,
    /// A worker's key that signs every alert message it publishes (required for workers).
    pub signer: Option<Arc<signing::AlertSigner>>,
    /// The workers' keys a fan-out node accepts alert messages from (required for fan-out nodes).
    pub trusted: Arc<signing::TrustedKeys>,
}

impl ClusterRole {
    /// `None`: no upstream anywhere, the embedded front door (the default). `env` reads the environment (the
    /// signing key's `signing_key_env`).
    pub fn resolve(
        section: Option<&UpstreamSection>,
        overrides: Overrides,
        file: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ScaleOutError> {
        let empty = UpstreamSection::default();
        let section = section.unwrap_or(&empty);
        let invalid = |key: &'static str, message: String| ScaleOutError::Config { file: file.into(), key, message };
        let Some(url) = overrides.url.or_else(|| section.url.clone()) else {
            if overrides.role.as_deref() == Some("front-door") {
                // `--role front-door` is a NATS backbone role: what is missing is the cluster, not an MQTT broker.
                return Err(ScaleOutError::Cluster {
                    file: file.into(),
                    key: "urls",
                    message: "the front-door role runs on the NATS cluster: give it with \
                              `--cluster nats://a:4222,nats://b:4222,nats://c:4222` (or `[cluster] urls`)"
                        .into(),
                });
            }
            if overrides.role.is_some() || section.role.is_some() || section.client_id.is_some() {
                return Err(invalid(
                    "url",
                    "a cluster role needs the upstream broker: `--upstream mqtt://host:port`".into(),
                ));
            }
            return Ok(None);
        };
        let role_text = overrides.role.or_else(|| section.role.clone()).unwrap_or_else(|| "worker".into());
        let role = Role::parse(&role_text).ok_or_else(|| {
            let hint =
                if role_text == "front-door" { " (front-door is a role on the NATS cluster: `--cluster`)" } else { "" };
            invalid("role", format!("`{role_text}` is not worker, writer or fanout{hint}"))
        })?;
        let client_id = overrides.client_id.or_else(|| section.client_id.clone()).ok_or_else(|| {
            invalid("client_id", "required: unique per process, stable across restarts (`--client-id`)".into())
        })?;
        let mut upstream = UpstreamConfig::from_url(&url, &client_id).map_err(|e| invalid("url", e.to_string()))?;
        match (&section.username, &section.password) {
            (Some(u), Some(p)) => upstream.credentials = Some((u.clone(), p.clone())),
            (None, None) => {}
            _ => return Err(invalid("username", "give both username and password, or neither".into())),
        }
        if let Some(s) = section.keep_alive_s {
            if !(5..=3600).contains(&s) {
                return Err(invalid("keep_alive_s", "must be 5..=3600".into()));
            }
            upstream.keep_alive = Duration::from_secs(s);
        }
        let regions = if overrides.regions.is_empty() { section.regions.clone() } else { overrides.regions };
        for r in &regions {
            if !is_county(r) {
                return Err(invalid("regions", format!("`{r}` is not a county code (Taiwan_Geocode_103, 5 digits)")));
            }
        }
        if !regions.is_empty() && role != Role::Worker {
            return Err(invalid("regions", format!("only workers own regions, not a {role_text}")));
        }
        let share_group = section.share_group.clone().unwrap_or_else(|| "dc-writers".into());
        if !upstream::is_valid_region(&share_group) {
            return Err(invalid("share_group", "must be 1-32 ASCII letters, digits or '-'".into()));
        }
        let retention_h = section.closed_retention_h.unwrap_or(24);
        if retention_h == 0 {
            return Err(invalid("closed_retention_h", "must be at least 1".into()));
        }
        let trusted = trusted_keys(&section.trusted_workers, &invalid)?;
        if role == Role::Fanout && trusted.is_empty() {
            return Err(invalid(
                "trusted_workers",
                "a fan-out node applies only alert messages signed by a worker it trusts: list the workers' public \
                 keys (`[[upstream.trusted_workers]]` name, public_key, regions)"
                    .into(),
            ));
        }
        let signer = match role {
            Role::Worker => Some(Arc::new(
                load_signer(
                    KeySource {
                        file: section.signing_key_file.as_deref(),
                        env: section.signing_key_env.as_deref(),
                        file_override: overrides.signing_key_file,
                    },
                    file,
                    env,
                    &invalid,
                )?
                .ok_or_else(|| {
                    invalid(
                        "signing_key_file",
                        "a worker signs every alert it publishes: give its key (`--signing-key FILE`, \
                         `signing_key_file` or `signing_key_env`; `disaster-cloud cluster-key new --out FILE` makes one)"
                            .into(),
                    )
                })?,
            )),
            Role::Writer | Role::Fanout => None,
        };
        Ok(Some(ClusterRole {
            role,
            upstream,
            regions,
            share_group,
            closed_retention_ms: i64::from(retention_h) * 3_600_000,
            signer,
            trusted: Arc::new(trusted),
        }))
    }

    /// Adapts the configuration to the role before the app is built: a worker with regions keeps only their zones
    /// (so it never raises an alert for another worker's area, even for a sensor near a border whose readings reach
    /// both) and names its alerts after itself (ids stay unique across workers, and say who raised them); writers
    /// and fan-out nodes run no rules and disseminate nothing.
    pub fn prepare(&self, files: &mut ConfigFiles) -> Result<(), ScaleOutError> {
        match self.role {
            Role::Worker => {
                if !self.regions.is_empty() {
                    files.zones.0 = self.own_zones(&files.zones.0, &files.zones.1.display().to_string())?;
                }
                files.main.alerting.id_prefix =
                    format!("{}-{}", files.main.alerting.id_prefix, self.upstream.client_id);
            }
            Role::Writer | Role::Fanout => {
                if self.role == Role::Writer {
                    // Routing places every zone in a region: all of them need a geocode.
                    region::zone_regions(&files.zones.0, &files.zones.1.display().to_string())?;
                    // Partners' alerts are for operators and citizens, whom a writer does not serve.
                    files.inbound = None;
                }
                files.rules.0 = without_rules(&files.rules.0)
                    .map_err(|message| ScaleOutError::Zones { file: files.rules.1.display().to_string(), message })?;
                files.dissemination = None;
            }
        }
        Ok(())
    }

    fn own_zones(&self, geojson: &str, file: &str) -> Result<String, ScaleOutError> {
        let regions = region::zone_regions(geojson, file)?;
        let mut doc: serde_json::Value = serde_json::from_str(geojson)
            .map_err(|e| ScaleOutError::Zones { file: file.into(), message: e.to_string() })?;
        if let Some(features) = doc.get_mut("features").and_then(|f| f.as_array_mut()) {
            let mut i = 0;
            features.retain(|_| {
                let keep = self.regions.contains(&regions[i].1);
                i += 1;
                keep
            });
        }
        for r in &self.regions {
            if !regions.iter().any(|(_, region)| region == r) {
                return Err(ScaleOutError::Zones {
                    file: file.into(),
                    message: format!("region `{r}` owns no zone (no zone's geocode starts with it)"),
                });
            }
        }
        Ok(doc.to_string())
    }

    /// Starts the role's links to the broker. A worker runs `hot_path` as is; writers and fan-out nodes have none.
    pub fn attach(&self, app: &Arc<App>, mut hot_path: HotPath) -> Result<(), ScaleOutError> {
        let upstream = &self.upstream;
        touch_metrics();
        match self.role {
            Role::Worker => {
                let filters = if self.regions.is_empty() {
                    vec!["sensors/+/readings".to_string(), "sensors/+/status".to_string()]
                } else {
                    self.regions.iter().map(|r| format!("region/{r}/sensors/+/+")).collect()
                };
                let publisher = Publisher::start(upstream)?;
                let Some(signer) = self.signer.clone() else {
                    return Err(ScaleOutError::Config {
                        file: "command line".into(),
                        key: "signing_key_file",
                        message: "a worker needs its signing key".into(),
                    });
                };
                tokio::spawn(worker::publish_alerts(
                    Arc::clone(app),
                    publisher,
                    signer,
                    upstream.client_id.clone(),
                    self.closed_retention_ms,
                ));
                // The pipeline sees the device topic, as on the front door.
                upstream::consume(upstream, filters, true, "ingest-link", move |mut msg| {
                    if let (Some(_), topic) = upstream::device_topic(&msg.topic) {
                        msg.topic = topic.to_string();
                    }
                    hot_path.process(msg);
                })?;
            }
            Role::Writer => {
                let group = &self.share_group;
                let filters =
                    vec![format!("$share/{group}/sensors/+/readings"), format!("$share/{group}/sensors/+/status")];
                let publisher = Publisher::start(upstream)?;
                let app = Arc::clone(app);
                upstream::consume(upstream, filters, true, "ingest-link", move |msg| {
                    writer::write_and_route(&app, &publisher, msg)
                })?;
            }
            Role::Fanout => {
                // Every alert is checked against the county of its area (`RemoteAlerts::apply`).
                let area_regions = app
                    .geo
                    .zones()
                    .filter_map(|z| {
                        let county = z.geocode.as_deref().and_then(region::county_of)?;
                        Some((z.id.clone(), county.to_string()))
                    })
                    .collect();
                app.remote_alerts.set_area_regions(area_regions);
                app.remote_alerts.set_trusted(Arc::clone(&self.trusted));
                let app = Arc::clone(app);
                let retention_ms = self.closed_retention_ms;
                upstream::consume(upstream, vec!["alerts/+/+".into()], false, "alerts-link", move |msg| {
                    let now = now_ms();
                    if let Some(change) = app.remote_alerts.apply(&msg.topic, &msg.payload, now, now - retention_ms) {
                        let _ = app.channels.alerts.send(change);
                    }
                })?;
            }
        }
        tracing::info!(role = ?self.role, regions = ?self.regions, broker = %format!("{}:{}", upstream.host, upstream.port), client_id = %upstream.client_id, "cluster role started");
        Ok(())
    }
}

/// Whether `r` is a county code (Taiwan_Geocode_103, 5 digits): what a region is.
fn is_county(r: &str) -> bool {
    geo_index::parse_geocode(r).ok().is_some_and(|g| g.level == geo_index::GeocodeLevel::County)
}

/// Where a worker's signing key may come from (`[upstream]` or `[cluster]`).
pub(super) struct KeySource<'a> {
    /// `signing_key_file`, relative to the config file's folder.
    pub file: Option<&'a Path>,
    /// `signing_key_env`: the variable holding the PEM.
    pub env: Option<&'a str>,
    /// `--signing-key`: replaces the file.
    pub file_override: Option<PathBuf>,
}

/// A worker's signing key: `--signing-key` or `signing_key_file` (relative to the config file's folder; refused when
/// others may read it), or `signing_key_env`; at most one. `None`: none given.
pub(super) fn load_signer(
    source: KeySource<'_>,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
    invalid: &dyn Fn(&'static str, String) -> ScaleOutError,
) -> Result<Option<signing::AlertSigner>, ScaleOutError> {
    let key_file = source
        .file_override
        .or_else(|| source.file.map(|p| Path::new(file).parent().unwrap_or(Path::new(".")).join(p)));
    let (key, pem) = match (key_file, source.env) {
        (Some(_), Some(_)) if source.file.is_some() => {
            return Err(invalid("signing_key_env", "give signing_key_file or signing_key_env, not both".into()))
        }
        (Some(path), _) => ("signing_key_file", read_secret_file(&path).map_err(|e| invalid("signing_key_file", e))?),
        (None, Some(var)) => {
            let pem = env(var).filter(|v| !v.trim().is_empty());
            (
                "signing_key_env",
                pem.ok_or_else(|| invalid("signing_key_env", format!("environment variable {var} is not set")))?,
            )
        }
        (None, None) => return Ok(None),
    };
    signing::AlertSigner::from_pem(&pem).map(Some).map_err(|e| invalid(key, e.to_string()))
}

/// A secret kept in a file (a worker's signing key, the NATS password): refused when others than its owner may read
/// it, since then it is no secret on that machine.
pub(super) fn read_secret_file(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let read = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map(|m| m.permissions().mode()).unwrap_or(0);
        if mode & 0o077 != 0 {
            return Err(format!("{shown} may be read by others (mode {:o}): `chmod 600` it", mode & 0o777));
        }
    }
    Ok(read)
}

/// The `trusted_workers` list (`[upstream]` or `[cluster]`), each key checked, errors naming the entry.
pub(super) fn trusted_keys(
    list: &[crate::config::TrustedWorker],
    invalid: &dyn Fn(&'static str, String) -> ScaleOutError,
) -> Result<signing::TrustedKeys, ScaleOutError> {
    let mut trusted = Vec::new();
    for (i, w) in list.iter().enumerate() {
        let named = |message: String| invalid("trusted_workers", format!("[{i}] ({}): {message}", w.name));
        if w.name.trim().is_empty() {
            return Err(named("`name` is empty".into()));
        }
        if let Some(r) = w.regions.iter().find(|r| !is_county(r)) {
            return Err(named(format!("region `{r}` is not a county code (Taiwan_Geocode_103, 5 digits)")));
        }
        let key =
            signing::TrustedKey::new(&w.name, &w.public_key, w.regions.clone()).map_err(|e| named(e.to_string()))?;
        trusted.push(key);
    }
    Ok(signing::TrustedKeys::new(trusted))
}

/// The rules file without its rules (engine settings and approval classes stay valid).
pub(super) fn without_rules(text: &str) -> Result<String, String> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    doc.remove("rule");
    toml::to_string(&doc).map_err(|e| e.to_string())
}

fn touch_metrics() {
    for kind in ["change", "resend", "removed"] {
        worker::ALERTS_PUBLISHED.with_label_values(&[kind]);
    }
    for outcome in remote_alerts::OUTCOMES {
        remote_alerts::ALERTS_RECEIVED.with_label_values(&[outcome]);
    }
    for outcome in ["forwarded", "no_region", "refused"] {
        writer::ROUTED.with_label_values(&[outcome]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamSection;

    /// An Ed25519 key from `openssl genpkey -algorithm ed25519`, and its public key.
    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIDS/KIwi/EbQ8mBKULEe7WwWyhZ9pWfVtGltALBEsSOw\n-----END PRIVATE KEY-----\n";
    const PUBLIC: &str = "be34ZC3UchKLeOy86CarvQ3N1A5mq4Y+QpfzzHocRss=";

    fn env(name: &str) -> Option<String> {
        match name {
            "DC_TEST_SIGNING_KEY" => Some(PEM.to_string()),
            backbone::PASSWORD_ENV => Some("a-nats-password-0123".to_string()),
            _ => None,
        }
    }

    /// `section` with a signing key (from the environment) and one trusted worker key added.
    fn resolve(section: &str, overrides: Overrides) -> Result<Option<ClusterRole>, ScaleOutError> {
        let keyed = format!(
            "{section}\nsigning_key_env = \"DC_TEST_SIGNING_KEY\"\n[[trusted_workers]]\nname = \"w\"\npublic_key = \"{PUBLIC}\"\n"
        );
        resolve_as_is(&keyed, overrides)
    }

    fn resolve_as_is(section: &str, overrides: Overrides) -> Result<Option<ClusterRole>, ScaleOutError> {
        let section: UpstreamSection = toml::from_str(section).unwrap();
        ClusterRole::resolve(Some(&section), overrides, "x.toml", &env)
    }

    #[test]
    fn no_upstream_is_the_embedded_mode() {
        assert!(ClusterRole::resolve(None, Overrides::default(), "x.toml", &env).unwrap().is_none());
    }

    #[test]
    fn workers_need_a_signing_key_and_fanouts_trusted_keys() {
        let worker = resolve("url = \"mqtt://b\"\nclient_id = \"w\"", Overrides::default()).unwrap().unwrap();
        assert_eq!(worker.signer.as_ref().map(|s| s.public_key()), Some(PUBLIC));
        let cases = [
            ("url = \"mqtt://b\"\nclient_id = \"w\"", "signing_key_file", "cluster-key new"),
            ("url = \"mqtt://b\"\nclient_id = \"w\"\nsigning_key_env = \"NOPE\"", "signing_key_env", "NOPE is not set"),
            ("url = \"mqtt://b\"\nclient_id = \"f\"\nrole = \"fanout\"", "trusted_workers", "public keys"),
            (
                "url = \"mqtt://b\"\nclient_id = \"f\"\nrole = \"fanout\"\n[[trusted_workers]]\nname = \"n\"\npublic_key = \"abc\"",
                "trusted_workers",
                "32-byte",
            ),
            (
                "url = \"mqtt://b\"\nclient_id = \"f\"\nrole = \"fanout\"\n[[trusted_workers]]\nname = \"n\"\npublic_key = \"be34ZC3UchKLeOy86CarvQ3N1A5mq4Y+QpfzzHocRss=\"\nregions = [\"1\"]",
                "trusted_workers",
                "county",
            ),
        ];
        for (text, key, why) in cases {
            let e = resolve_as_is(text, Overrides::default()).unwrap_err().to_string();
            assert!(e.contains("x.toml") && e.contains(&format!("upstream.{key}")) && e.contains(why), "{text}: {e}");
        }
        // A key file others may read is refused; the same file made private is taken.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.pem");
        std::fs::write(&path, PEM).unwrap();
        let with_file = |path: &std::path::Path| {
            let overrides = Overrides { signing_key_file: Some(path.to_path_buf()), ..Overrides::default() };
            resolve_as_is("url = \"mqtt://b\"\nclient_id = \"w\"", overrides)
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = with_file(&path).unwrap_err().to_string();
            assert!(e.contains("chmod 600"), "{e}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert!(with_file(&path).unwrap().unwrap().signer.is_some());
        // `cluster-key new` writes a private file and never over an existing one.
        let made = dir.path().join("new.pem");
        let signer = signing::AlertSigner::write_new(&made).unwrap();
        assert_eq!(with_file(&made).unwrap().unwrap().signer.unwrap().public_key(), signer.public_key());
        assert!(signing::AlertSigner::write_new(&made).is_err());
    }

    #[tokio::test]
    async fn a_front_door_opens_no_readings_store() {
        let role = BackboneRole::resolve(
            None,
            BackboneOverrides {
                urls: vec!["nats://127.0.0.1:4222".into()],
                name: Some("fd".into()),
                ..BackboneOverrides::default()
            },
            "x.toml",
            &env,
        )
        .unwrap()
        .unwrap();
        let mut files = ConfigFiles::embedded().unwrap();
        Scaled::Backbone(role).prepare(&mut files).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tokens = crate::web::auth::TokenSet::new(&[], Some("t")).unwrap();
        let built = crate::server::build(&files, tokens, Some(dir.path()), "127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(built.app.readings.store.is_none());
        assert!(!dir.path().join("readings.sqlite").exists());
        // Every other process keeps one.
        let files = ConfigFiles::embedded().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tokens = crate::web::auth::TokenSet::new(&[], Some("t")).unwrap();
        crate::server::build(&files, tokens, Some(dir.path()), "127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(dir.path().join("readings.sqlite").exists());
    }

    #[test]
    fn the_front_door_role_without_a_cluster_says_what_is_missing() {
        let e = ClusterRole::resolve(
            None,
            Overrides { role: Some("front-door".into()), ..Overrides::default() },
            "x.toml",
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--cluster nats://") && !e.contains("--upstream"), "{e}");
        let e = resolve("url = \"mqtt://b\"\nclient_id = \"w\"\nrole = \"front-door\"", Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("NATS cluster"), "{e}");
    }

    #[test]
    fn command_line_overrides_the_file() {
        let c = resolve(
            "url = \"mqtt://b:1883\"\nclient_id = \"a\"\nregions = [\"10008\"]",
            Overrides {
                url: Some("mqtt://c:1884".into()),
                client_id: Some("w2".into()),
                regions: vec!["64000".into()],
                role: None,
                signing_key_file: None,
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!((c.role, c.upstream.host.as_str(), c.upstream.port), (Role::Worker, "c", 1884));
        assert_eq!((c.upstream.client_id.as_str(), c.regions.as_slice()), ("w2", ["64000".to_string()].as_slice()));
    }

    #[test]
    fn bad_settings_name_the_key_and_the_reason() {
        let cases = [
            ("url = \"mqtt://b\"", "client_id", "required"),
            ("url = \"mqtt://b\"\nclient_id = \"w\"\nrole = \"boss\"", "role", "boss"),
            ("url = \"mqtt://b\"\nclient_id = \"w\"\nregions = [\"99999\"]", "regions", "county code"),
            (
                "url = \"mqtt://b\"\nclient_id = \"w\"\nrole = \"fanout\"\nregions = [\"10008\"]",
                "regions",
                "only workers",
            ),
            ("url = \"mqtt://b\"\nclient_id = \"w\"\nusername = \"u\"", "username", "both"),
            ("url = \"mqtts://b\"\nclient_id = \"w\"", "url", "TLS"),
            ("role = \"fanout\"", "url", "--upstream"),
            ("url = \"mqtt://b\"\nclient_id = \"w\"\nshare_group = \"a/b\"", "share_group", "letters"),
        ];
        for (text, key, why) in cases {
            let e = resolve(text, Overrides::default()).unwrap_err().to_string();
            assert!(e.contains("x.toml") && e.contains(&format!("upstream.{key}")) && e.contains(why), "{text}: {e}");
        }
        let e = toml::from_str::<UpstreamSection>("regoins = []").unwrap_err().to_string();
        assert!(e.contains("regoins"), "{e}");
    }

    #[test]
    fn workers_keep_only_their_zones_and_name_alerts_after_themselves() {
        let mut files = ConfigFiles::embedded().unwrap();
        let all = region::zone_regions(&files.zones.0, "zones").unwrap().len();
        let c = resolve("url = \"mqtt://b\"\nclient_id = \"kao\"\nregions = [\"64000\"]", Overrides::default())
            .unwrap()
            .unwrap();
        c.prepare(&mut files).unwrap();
        let kept = region::zone_regions(&files.zones.0, "zones").unwrap();
        assert!(!kept.is_empty() && kept.len() < all, "{kept:?}");
        assert!(kept.iter().all(|(_, r)| r == "64000"), "{kept:?}");
        assert!(files.main.alerting.id_prefix.ends_with("-kao"), "{}", files.main.alerting.id_prefix);

        let mut files = ConfigFiles::embedded().unwrap();
        let c = resolve("url = \"mqtt://b\"\nclient_id = \"w\"\nregions = [\"10020\"]", Overrides::default())
            .unwrap()
            .unwrap();
        let e = c.prepare(&mut files).unwrap_err().to_string();
        assert!(e.contains("10020") && e.contains("owns no zone"), "{e}");
    }

    #[test]
    fn writers_and_fanouts_run_no_rules() {
        let mut files = ConfigFiles::embedded().unwrap();
        let c =
            resolve("url = \"mqtt://b\"\nclient_id = \"f\"\nrole = \"fanout\"", Overrides::default()).unwrap().unwrap();
        c.prepare(&mut files).unwrap();
        let rules = alerting::RuleSet::from_toml(&files.rules.0, &files.rules.1).unwrap();
        assert!(rules.rules.is_empty());
        assert!(files.dissemination.is_none());
    }
}
