//! Roles on a NATS JetStream cluster (`serve --cluster nats://a,nats://b,nats://c`, `[cluster]`; docs/SCALING.md):
//! the replicated backbone that lets the deployment lose any one machine without losing a reading or an alert.
//!
//! Built so far: the **front door** (`--role front-door`, `front_door.rs`): devices' MQTT as on a single process,
//! each accepted publish appended to the replicated readings stream before its PUBACK; and the **rule worker**
//! (`--role worker`, `rule_worker.rs`): regions owned by lease, their readings through the hot path in stream order,
//! every alert change on the replicated alerts stream (signed, `backbone_alerts.rs`), a dead worker's regions and
//! open alerts continued by another; the **dissemination node** (`--role dissemination`, `disseminator.rs`): one
//! active by lease, the public warnings rebuilt from the alerts stream, every delivery recorded in a replicated
//! ledger before its call; and the **fan-out node** (`--role fan-out`, `backbone_fanout.rs`): watches the alerts
//! stream, applies only what trusted workers signed, serves citizens' and operators' websockets.

use std::sync::Arc;
use std::time::Duration;

use cluster::readings::ReadingsLog;
use cluster::{Backbone, BackboneConfig, NatsAuth};
use ingest::broker::BrokerConfig;
use ingest::devices::DeviceStore;

use super::front_door::ReplicatedIntake;
use super::signing::{AlertSigner, TrustedKeys};
use super::{without_rules, ScaleOutError};
use crate::app::App;
use crate::config::{ClusterSection, ConfigFiles};

/// What the command line says about the backbone; each field overrides `[cluster]`'s.
#[derive(Debug, Clone, Default)]
pub struct BackboneOverrides {
    pub urls: Vec<String>,
    pub role: Option<String>,
    pub name: Option<String>,
    /// A worker's signing key file (`--signing-key`), overriding `cluster.signing_key_file`.
    pub signing_key_file: Option<std::path::PathBuf>,
    /// The NATS user (`--cluster-user`, `DC_CLUSTER_USER`), overriding `cluster.user`.
    pub user: Option<String>,
}

/// The variable the NATS password is read from when the config names none (`password_env`, `password_file`).
pub const PASSWORD_ENV: &str = "DC_CLUSTER_PASSWORD";

/// Shorter passwords are refused: nats-server does not slow down guessing, and the client port is reachable by
/// whatever can reach the cluster.
const MIN_PASSWORD_CHARS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackboneRoleKind {
    FrontDoor,
    /// A rule worker: regions by lease, rules, alerts on the alerts stream.
    Worker,
    /// The dissemination node: public warnings from the alerts stream, delivered with ids recorded in a replicated
    /// ledger; one active by lease, the others standing by (`disseminator.rs`).
    Dissemination,
    /// Watches the alerts stream and serves the citizens' and operators' websockets: no front door, no rules.
    FanOut,
}

/// A resolved role on the NATS cluster: config file and command line merged and checked.
#[derive(Debug, Clone)]
pub struct BackboneRole {
    pub kind: BackboneRoleKind,
    pub config: BackboneConfig,
    /// A worker's region leases expire this long after their last renewal.
    pub lease_ttl: Duration,
    /// How long an ended alert stays in the alerts stream before its region's owner removes it.
    pub ended_alert_retention: Duration,
    /// A worker's key that signs every message it writes to the alerts stream (`None`: unsigned, which fan-out
    /// nodes refuse; a warning at start says so).
    pub signer: Option<Arc<AlertSigner>>,
    /// The workers' keys whose alert messages are accepted (required on a fan-out node; on a worker, checked on
    /// adoption when not empty).
    pub trusted: Arc<TrustedKeys>,
}

impl BackboneRole {
    /// `None`: no cluster anywhere. `env` reads the environment (the signing key's `signing_key_env`).
    pub fn resolve(
        section: Option<&ClusterSection>,
        overrides: BackboneOverrides,
        file: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ScaleOutError> {
        let empty = ClusterSection::default();
        let section = section.unwrap_or(&empty);
        let invalid = |key: &'static str, message: String| ScaleOutError::Cluster { file: file.into(), key, message };
        let urls = if overrides.urls.is_empty() { section.urls.clone() } else { overrides.urls };
        if urls.is_empty() {
            if section.role.is_some() || section.name.is_some() {
                return Err(invalid("urls", "a cluster role needs the cluster: `--cluster nats://a:4222,…`".into()));
            }
            return Ok(None);
        }
        for url in &urls {
            let rest = url.strip_prefix("nats://").or_else(|| url.strip_prefix("tls://")).ok_or_else(|| {
                invalid("urls", format!("`{url}`: nats://host:port, or tls://host:port for TLS (with `ca_file`)"))
            })?;
            let port = rest.rsplit_once(':').and_then(|(host, port)| (!host.is_empty()).then_some(port));
            if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
                return Err(invalid("urls", format!("`{url}` is not nats://host:port")));
            }
        }
        let role_text = overrides.role.or_else(|| section.role.clone()).unwrap_or_else(|| "front-door".into());
        let kind = match role_text.as_str() {
            "front-door" => BackboneRoleKind::FrontDoor,
            "worker" => BackboneRoleKind::Worker,
            "dissemination" => BackboneRoleKind::Dissemination,
            // `fanout` is the MQTT cluster's spelling of the same role.
            "fan-out" | "fanout" => BackboneRoleKind::FanOut,
            other => {
                return Err(invalid(
                    "role",
                    format!(
                        "`{other}`: the cluster roles are: front-door, worker, dissemination, fan-out \
                         (docs/SCALING.md)"
                    ),
                ))
            }
        };
        let name = overrides.name.or_else(|| section.name.clone()).ok_or_else(|| {
            invalid("name", "required: unique per process, stable across restarts (`--client-id`)".into())
        })?;
        if !(1..=64).contains(&name.len()) || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(invalid("name", format!("`{name}`: 1-64 ASCII letters, digits or '-'")));
        }
        let mut config = BackboneConfig::new(urls, name);
        config.auth = Some(credentials(section, overrides.user, kind, file, env, &invalid)?);
        // Each role's user may subscribe to its own replies only (`ops/nats/authorization.conf`).
        config.inbox_prefix = format!("_INBOX.{}", role_name(kind));
        if let Some(ca) = &section.ca_file {
            let path = std::path::Path::new(file).parent().unwrap_or(std::path::Path::new(".")).join(ca);
            // Read now, so that a wrong path stops the start here rather than as a TLS error at every connection.
            let pem =
                std::fs::read_to_string(&path).map_err(|e| invalid("ca_file", format!("{}: {e}", path.display())))?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(invalid("ca_file", format!("{}: no PEM certificate in it", path.display())));
            }
            config.ca_file = Some(path);
        }
        let ranged = |key: &'static str, value: Option<u64>, range: std::ops::RangeInclusive<u64>, default: u64| {
            let v = value.unwrap_or(default);
            if range.contains(&v) {
                Ok(v)
            } else {
                Err(invalid(key, format!("{v} is not in {}..={}", range.start(), range.end())))
            }
        };
        config.replicas = ranged("replicas", section.replicas.map(|r| r as u64), 1..=5, 3)? as usize;
        config.publish_deadline =
            Duration::from_secs(ranged("publish_deadline_s", section.publish_deadline_s, 10..=300, 30)?);
        config.duplicate_window =
            Duration::from_secs(ranged("duplicate_window_s", section.duplicate_window_s, 60..=86_400, 600)?);
        config.readings_max_age =
            Duration::from_secs(3600 * ranged("readings_max_age_h", section.readings_max_age_h, 1..=8760, 168)?);
        let lease_ttl = Duration::from_secs(ranged("lease_ttl_s", section.lease_ttl_s, 2..=300, 10)?);
        let ended_alert_retention = Duration::from_secs(ranged(
            "ended_alert_retention_s",
            section.ended_alert_retention_s,
            1..=30 * 86_400,
            86_400,
        )?);
        let trusted = super::trusted_keys(&section.trusted_workers, &invalid)?;
        // Both roles put what they read on `DC_ALERTS` in front of the public (websockets; CAP, webhooks and cell
        // broadcast): trusting anything would make them a megaphone for anyone who may publish on the NATS cluster.
        let speaks = match kind {
            BackboneRoleKind::FanOut => Some("a fan-out node puts alerts in front of citizens"),
            BackboneRoleKind::Dissemination => {
                Some("a dissemination node turns alerts into public warnings, CAP messages and cell broadcasts")
            }
            BackboneRoleKind::FrontDoor | BackboneRoleKind::Worker => None,
        };
        if let (Some(what), true) = (speaks, trusted.is_empty()) {
            return Err(invalid(
                "trusted_workers",
                format!(
                    "{what}, so it takes only messages signed by a worker it trusts, and with no key listed it would \
                     trust nobody (or, if it trusted anything, be a megaphone for anyone who may publish on the NATS \
                     cluster): list the workers' public keys (`[[cluster.trusted_workers]]` name, public_key, \
                     regions; `disaster-cloud cluster-key new` prints them)"
                ),
            ));
        }
        let signer = match kind {
            BackboneRoleKind::Worker => super::load_signer(
                super::KeySource {
                    file: section.signing_key_file.as_deref(),
                    env: section.signing_key_env.as_deref(),
                    file_override: overrides.signing_key_file,
                },
                file,
                env,
                &invalid,
            )?
            .map(Arc::new),
            BackboneRoleKind::FrontDoor | BackboneRoleKind::FanOut | BackboneRoleKind::Dissemination => None,
        };
        // The other side of the refusal above: fan-out and dissemination nodes take only signed messages, so an
        // unsigned worker's alerts would reach nobody (and the next owner of its counties could not adopt them
        // when it trusts keys) while it looked healthy.
        if kind == BackboneRoleKind::Worker && signer.is_none() {
            return Err(invalid(
                "signing_key_file",
                "a rule worker signs every alert message it writes to DC_ALERTS (fan-out and dissemination nodes \
                 refuse unsigned ones, so its alerts would reach nobody): give its key with `--signing-key FILE`, \
                 `cluster.signing_key_file` or `cluster.signing_key_env` (`disaster-cloud cluster-key new` makes \
                 one)"
                    .into(),
            ));
        }
        Ok(Some(BackboneRole { kind, config, lease_ttl, ended_alert_retention, signer, trusted: Arc::new(trusted) }))
    }

    /// A front door runs no rules and disseminates nothing; it routes, so every zone needs a geocode. A worker needs
    /// the geocodes too (a zone's county is the region whose lease covers it); it names its alerts after itself (ids
    /// stay unique across workers, and are subject tokens: no `.`), leaves InfluxDB to the front doors, which
    /// wrote every accepted reading there already, and dissemination to the dissemination node. A dissemination
    /// node runs no rules and reads no partner feeds: its alerts come from the alerts stream.
    pub fn prepare(&self, files: &mut ConfigFiles) -> Result<(), ScaleOutError> {
        match self.kind {
            BackboneRoleKind::Worker => {
                super::region::zone_regions(&files.zones.0, &files.zones.1.display().to_string())?;
                let prefix = format!("{}-{}", files.main.alerting.id_prefix, self.config.name);
                if prefix.contains('.') {
                    return Err(ScaleOutError::Zones {
                        file: "the main configuration file".into(),
                        message: format!(
                            "`alerting.id_prefix`: `{prefix}`: on the cluster alert ids are NATS subject tokens, no '.'"
                        ),
                    });
                }
                files.main.alerting.id_prefix = prefix;
                files.main.influx = None;
                // The public hears through the dissemination node (`--role dissemination`), which rebuilds the
                // warnings from the alerts stream: a worker delivering too would send every warning twice, and what
                // it had not delivered would die with it.
                files.dissemination = None;
            }
            BackboneRoleKind::Dissemination => {
                if files.dissemination.is_none() {
                    return Err(ScaleOutError::Zones {
                        file: "the main configuration file".into(),
                        message: "the dissemination role needs `dissemination = \"dissemination.toml\"`".into(),
                    });
                }
                // Alerts come from the workers through the alerts stream: no rules, no readings, no partners' feeds
                // here (partner agencies' warnings on the cluster are not built yet: docs/SCALING.md).
                files.rules.0 = without_rules(&files.rules.0)
                    .map_err(|message| ScaleOutError::Zones { file: files.rules.1.display().to_string(), message })?;
                files.inbound = None;
                files.main.influx = None;
            }
            BackboneRoleKind::FrontDoor => {
                super::region::zone_regions(&files.zones.0, &files.zones.1.display().to_string())?;
                files.inbound = None;
                files.rules.0 = without_rules(&files.rules.0)
                    .map_err(|message| ScaleOutError::Zones { file: files.rules.1.display().to_string(), message })?;
                files.dissemination = None;
            }
            // As the MQTT cluster's fan-out: no rules, no dissemination; partners' warnings stay (for citizens). Every
            // zone needs its county: an alert is checked against its area's.
            BackboneRoleKind::FanOut => {
                super::region::zone_regions(&files.zones.0, &files.zones.1.display().to_string())?;
                files.rules.0 = without_rules(&files.rules.0)
                    .map_err(|message| ScaleOutError::Zones { file: files.rules.1.display().to_string(), message })?;
                files.dissemination = None;
                files.main.influx = None;
            }
        }
        Ok(())
    }

    /// A worker's alert journal, rule snapshot and public warnings in its data dir (`alerts/`) are from an earlier
    /// run, and their regions may have had other owners since: the alerts stream is the book of record. So they are
    /// set aside (renamed `alerts.before-{ms}`, kept for the audit trail) and the worker starts with an empty book,
    /// which its regions' take-overs fill from the stream.
    ///
    /// A dissemination node likewise sets aside its outbox (`dissemination/`: journal, CAP archive) and public
    /// warnings (`alerts/`): it rebuilds them from the alerts stream when it takes over, and the delivery ledger on
    /// the cluster says what receivers already have.
    pub fn prepare_data_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        let folders: &[&str] = match self.kind {
            BackboneRoleKind::Worker => &["alerts"],
            BackboneRoleKind::Dissemination => &["alerts", "dissemination"],
            BackboneRoleKind::FrontDoor | BackboneRoleKind::FanOut => &[],
        };
        let now = crate::clock::now_ms();
        for name in folders {
            let folder = dir.join(name);
            if !folder.exists() {
                continue;
            }
            let aside = dir.join(format!("{name}.before-{now}"));
            std::fs::rename(&folder, &aside)?;
            tracing::info!(from = %folder.display(), to = %aside.display(), "earlier state set aside: this role's state comes from the cluster");
        }
        Ok(())
    }

    /// Connects to the cluster (waiting for it up to the start timeout: a front door that cannot replicate must not
    /// accept devices), then opens the MQTT listeners with the replicated intake.
    pub async fn attach(
        &self,
        app: &Arc<App>,
        broker: &BrokerConfig,
        devices: DeviceStore,
    ) -> Result<(), ScaleOutError> {
        let backbone = Backbone::connect(self.config.clone()).await?;
        match self.kind {
            BackboneRoleKind::Worker => {
                let regions = super::rule_worker::regions_of(app);
                let keys = super::rule_worker::Keys { signer: self.signer.clone(), trusted: Arc::clone(&self.trusted) };
                super::rule_worker::start(
                    Arc::clone(app),
                    backbone,
                    self.lease_ttl,
                    self.ended_alert_retention,
                    regions.clone(),
                    keys,
                )
                .await?;
                tracing::info!(role = ?self.kind, cluster = %self.config.urls.join(","), name = %self.config.name, ?regions, lease_ttl = ?self.lease_ttl, signed = self.signer.is_some(), "cluster role started");
                return Ok(());
            }
            BackboneRoleKind::Dissemination => {
                super::disseminator::start(Arc::clone(app), backbone, self.lease_ttl, Arc::clone(&self.trusted))
                    .await?;
                tracing::info!(role = ?self.kind, cluster = %self.config.urls.join(","), name = %self.config.name, lease_ttl = ?self.lease_ttl, "cluster role started");
                return Ok(());
            }
            BackboneRoleKind::FanOut => {
                super::backbone_fanout::start(Arc::clone(app), backbone, Arc::clone(&self.trusted)).await?;
                tracing::info!(role = ?self.kind, cluster = %self.config.urls.join(","), name = %self.config.name, "cluster role started");
                return Ok(());
            }
            BackboneRoleKind::FrontDoor => {}
        }
        let log = ReadingsLog::open(&backbone).await?;
        let intake = Arc::new(ReplicatedIntake { app: Arc::clone(app), log, last_logged_ms: Arc::default() });
        let front_door = ingest::broker::start_durable_front_door(broker, Arc::new(devices), intake)?;
        // The listeners live as long as the process.
        std::mem::forget(front_door);
        tracing::info!(role = ?self.kind, cluster = %self.config.urls.join(","), name = %self.config.name, replicas = self.config.replicas, "cluster role started");
        Ok(())
    }
}

/// The role's name on the cluster: its `--role`, and its user and inbox in `ops/nats/authorization.conf`.
fn role_name(kind: BackboneRoleKind) -> &'static str {
    match kind {
        BackboneRoleKind::FrontDoor => "front-door",
        BackboneRoleKind::Worker => "worker",
        BackboneRoleKind::Dissemination => "dissemination",
        BackboneRoleKind::FanOut => "fan-out",
    }
}

/// How this process logs in to NATS: the user (`--cluster-user`, `cluster.user`, else the role's name) and its
/// password from a file (`password_file`, owner-only) or the environment (`password_env`, else
/// `DC_CLUSTER_PASSWORD`), never from the config file. No password: refused — an anonymous process would only work
/// on a cluster that lets anyone write readings, take leases or delete streams.
fn credentials(
    section: &ClusterSection,
    user: Option<String>,
    kind: BackboneRoleKind,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
    invalid: &dyn Fn(&'static str, String) -> ScaleOutError,
) -> Result<NatsAuth, ScaleOutError> {
    let user = user.or_else(|| section.user.clone()).unwrap_or_else(|| role_name(kind).to_string());
    if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("user", format!("`{user}` is not a NATS user name")));
    }
    if section.password.is_some() {
        return Err(invalid(
            "password",
            "a secret written in the config file: anyone with a copy of the file has it; use `password_env` or \
             `password_file` instead"
                .into(),
        ));
    }
    let (key, password) = match (&section.password_file, &section.password_env) {
        (Some(_), Some(_)) => {
            return Err(invalid("password_env", "give password_file or password_env, not both".into()));
        }
        (Some(path), None) => {
            let path = std::path::Path::new(file).parent().unwrap_or(std::path::Path::new(".")).join(path);
            ("password_file", super::read_secret_file(&path).map_err(|e| invalid("password_file", e))?)
        }
        (None, var) => {
            let var = var.as_deref().unwrap_or(PASSWORD_ENV);
            let Some(password) = env(var).filter(|p| !p.trim().is_empty()) else {
                return Err(invalid(
                    "password_env",
                    format!(
                        "serve --cluster needs the NATS password of user `{user}`, and environment variable {var} is \
                         not set: the cluster refuses anonymous clients (docs/SCALING.md § Who may do what on the \
                         NATS cluster); set {var}, or name another variable (`password_env`) or a file \
                         (`password_file`)"
                    ),
                ));
            };
            ("password_env", password)
        }
    };
    // A file's trailing newline is not part of the password (`echo secret > file`).
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(invalid(
            key,
            format!("the NATS password is shorter than {MIN_PASSWORD_CHARS} characters: make a long random one"),
        ));
    }
    Ok(NatsAuth::UserPassword { user, password })
}

/// Ends this process's role cleanly before it exits, waiting at most `within`: a rule worker hands every region
/// over and releases its leases (it started on SIGTERM already), so the other workers take its regions at once
/// instead of a lease ttl later. Nothing to do for other roles. `false`: not finished in time.
pub async fn finish(within: Duration) -> bool {
    super::rule_worker::finish(within).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "a-nats-password-0123";

    /// The environment of a process with its NATS password in `DC_CLUSTER_PASSWORD`.
    fn env(name: &str) -> Option<String> {
        (name == PASSWORD_ENV).then(|| PASSWORD.to_string())
    }

    fn resolve(section: &str, overrides: BackboneOverrides) -> Result<Option<BackboneRole>, ScaleOutError> {
        let section: ClusterSection = toml::from_str(section).unwrap();
        BackboneRole::resolve(Some(&section), overrides, "x.toml", &env)
    }

    #[test]
    fn the_role_logs_in_as_its_user_with_the_password_from_the_environment() {
        let r = resolve("urls = [\"nats://a:4222\"]\nname = \"fd-1\"\nrole = \"front-door\"", Default::default())
            .unwrap()
            .unwrap();
        let want = NatsAuth::UserPassword { user: "front-door".into(), password: PASSWORD.into() };
        assert_eq!((r.config.auth.as_ref(), r.config.inbox_prefix.as_str()), (Some(&want), "_INBOX.front-door"));
        assert!(!format!("{:?}", r.config).contains(PASSWORD), "the password never shows in a debug print");
        // Another user and another variable, from the file or the command line.
        let section = "urls = [\"nats://a:4222\"]\nname = \"fd-1\"\nuser = \"fd-edge\"\npassword_env = \"NATS_PW\"";
        let section: ClusterSection = toml::from_str(section).unwrap();
        let mine = |name: &str| (name == "NATS_PW").then(|| format!("{PASSWORD}-edge"));
        let r = BackboneRole::resolve(Some(&section), BackboneOverrides::default(), "x.toml", &mine).unwrap().unwrap();
        let want = NatsAuth::UserPassword { user: "fd-edge".into(), password: format!("{PASSWORD}-edge") };
        assert_eq!(r.config.auth, Some(want));
        let overrides = BackboneOverrides { user: Some("fd-cli".into()), ..Default::default() };
        let r = BackboneRole::resolve(Some(&section), overrides, "x.toml", &mine).unwrap().unwrap();
        assert!(matches!(r.config.auth, Some(NatsAuth::UserPassword { ref user, .. }) if user == "fd-cli"));
        let short = |name: &str| (name == "NATS_PW").then(|| "letmein".to_string());
        let e = BackboneRole::resolve(Some(&section), BackboneOverrides::default(), "x.toml", &short).unwrap_err();
        assert!(e.to_string().contains("cluster.password_env") && e.to_string().contains("shorter than 16"), "{e}");
    }

    #[test]
    fn serve_cluster_refuses_to_start_without_a_password() {
        let section: ClusterSection = toml::from_str("urls = [\"nats://a:4222\"]\nname = \"fd-1\"").unwrap();
        let e = BackboneRole::resolve(Some(&section), BackboneOverrides::default(), "x.toml", &|_| None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.toml") && e.contains("cluster.password_env") && e.contains("DC_CLUSTER_PASSWORD is not set"),
            "{e}"
        );
        assert!(e.contains("user `front-door`") && e.contains("anonymous"), "{e}");
    }

    #[test]
    fn a_ca_file_is_found_next_to_the_config_and_makes_the_cluster_tls() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("nats-ca.pem"),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("not-a-cert.pem"), "hello").unwrap();
        let file = dir.path().join("main.toml").display().to_string();
        let resolve = |section: &str| {
            let section: ClusterSection = toml::from_str(section).unwrap();
            BackboneRole::resolve(Some(&section), BackboneOverrides::default(), &file, &env)
        };
        let r = resolve("urls = [\"tls://a:4222\"]\nname = \"f\"\nca_file = \"nats-ca.pem\"").unwrap().unwrap();
        assert_eq!(r.config.ca_file, Some(dir.path().join("nats-ca.pem")));
        assert_eq!(r.config.urls, ["tls://a:4222"]);
        let e =
            resolve("urls = [\"tls://a:4222\"]\nname = \"f\"\nca_file = \"not-a-cert.pem\"").unwrap_err().to_string();
        assert!(e.contains("cluster.ca_file") && e.contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn the_password_comes_from_an_owner_only_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("main.toml");
        let secret = dir.path().join("nats-password");
        std::fs::write(&secret, format!("{PASSWORD}\n")).unwrap();
        let section: ClusterSection = toml::from_str(
            "urls = [\"nats://a:4222\"]\nname = \"fd-1\"\nrole = \"front-door\"\npassword_file = \"nats-password\"",
        )
        .unwrap();
        let file = config.display().to_string();
        let resolve = || BackboneRole::resolve(Some(&section), BackboneOverrides::default(), &file, &|_| None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = resolve().unwrap_err().to_string();
            assert!(e.contains("cluster.password_file") && e.contains("chmod 600"), "{e}");
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let r = resolve().unwrap().unwrap();
        let want = NatsAuth::UserPassword { user: "front-door".into(), password: PASSWORD.into() };
        assert_eq!(r.config.auth, Some(want), "read next to the config file, without its newline");
    }

    #[test]
    fn no_cluster_is_the_single_process_mode() {
        assert!(BackboneRole::resolve(None, BackboneOverrides::default(), "x.toml", &env).unwrap().is_none());
    }

    #[test]
    fn command_line_overrides_the_file_and_defaults_fill_the_rest() {
        let r = resolve(
            "urls = [\"nats://a:4222\"]\nname = \"fd-1\"\nreplicas = 1",
            BackboneOverrides {
                urls: vec!["nats://b:4222".into(), "nats://c:4222".into()],
                name: Some("fd-2".into()),
                ..BackboneOverrides::default()
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.kind, BackboneRoleKind::FrontDoor);
        assert_eq!(r.config.urls, ["nats://b:4222", "nats://c:4222"]);
        assert_eq!((r.config.name.as_str(), r.config.replicas), ("fd-2", 1));
        assert_eq!(r.config.publish_deadline, Duration::from_secs(30));
        assert_eq!(r.config.duplicate_window, Duration::from_secs(600));
    }

    #[test]
    fn bad_settings_name_the_key_and_the_reason() {
        let cases = [
            ("urls = [\"nats://a:4222\"]", "name", "required"),
            ("urls = [\"mqtt://a:4222\"]\nname = \"f\"", "urls", "tls://host:port"),
            ("urls = [\"tls://a:4222\"]\nname = \"f\"\nca_file = \"/nonexistent/ca.pem\"", "ca_file", "/nonexistent/ca.pem"),
            ("urls = [\"nats://a\"]\nname = \"f\"", "urls", "host:port"),
            ("urls = [\"nats://a:1\"]\nname = \"f\"\nrole = \"boss\"", "role", "front-door, worker, dissemination, fan-out"),
            ("urls = [\"nats://a:1\"]\nname = \"f\"\nrole = \"fan-out\"", "trusted_workers", "megaphone"),
            ("urls = [\"nats://a:1\"]\nname = \"d\"\nrole = \"dissemination\"", "trusted_workers", "cell broadcasts"),
            ("urls = [\"nats://a:1\"]\nname = \"w\"\nrole = \"worker\"", "signing_key_file", "cluster-key new"),
            (
                "urls = [\"nats://a:1\"]\nname = \"f\"\nrole = \"fan-out\"\n[[trusted_workers]]\nname = \"w\"\npublic_key = \"abc\"",
                "trusted_workers",
                "32-byte",
            ),
            ("urls = [\"nats://a:1\"]\nname = \"w\"\nrole = \"worker\"\nsigning_key_env = \"NOPE\"", "signing_key_env", "NOPE is not set"),
            ("urls = [\"nats://a:1\"]\nname = \"f\"\nlease_ttl_s = 1", "lease_ttl_s", "2..=300"),
            (
                "urls = [\"nats://a:1\"]\nname = \"f\"\nended_alert_retention_s = 0",
                "ended_alert_retention_s",
                "1..=2592000",
            ),
            ("urls = [\"nats://a:1\"]\nname = \"f/1\"", "name", "letters"),
            ("urls = [\"nats://a:1\"]\nname = \"f\"\nreplicas = 7", "replicas", "1..=5"),
            ("urls = [\"nats://a:1\"]\nname = \"f\"\npublish_deadline_s = 2", "publish_deadline_s", "10..=300"),
            ("role = \"front-door\"", "urls", "--cluster"),
            ("urls = [\"nats://a:1\"]\nname = \"f\"\npassword = \"hunter2hunter2hunter2\"", "password", "password_env"),
            (
                "urls = [\"nats://a:1\"]\nname = \"f\"\npassword_env = \"A\"\npassword_file = \"b\"",
                "password_env",
                "not both",
            ),
            ("urls = [\"nats://a:1\"]\nname = \"f\"\npassword_env = \"UNSET_PW\"", "password_env", "UNSET_PW is not set"),
            ("urls = [\"nats://a:1\"]\nname = \"f\"\nuser = \"a b\"", "user", "not a NATS user name"),
        ];
        for (text, key, why) in cases {
            let e = resolve(text, BackboneOverrides::default()).unwrap_err().to_string();
            assert!(e.contains("x.toml") && e.contains(&format!("cluster.{key}")) && e.contains(why), "{text}: {e}");
        }
        let e = toml::from_str::<ClusterSection>("url = []").unwrap_err().to_string();
        assert!(e.contains("url"), "{e}");
    }

    #[test]
    fn a_worker_names_its_alerts_after_itself_and_leaves_influx_to_the_front_doors() {
        let section = "urls = [\"nats://a:1\"]\nname = \"w-1\"\nrole = \"worker\"\nlease_ttl_s = 3\n\
                       signing_key_env = \"DC_TEST_SIGNING_KEY\"";
        let section: ClusterSection = toml::from_str(section).unwrap();
        let pem = AlertSigner::generate().to_pem().unwrap();
        let r = BackboneRole::resolve(Some(&section), Default::default(), "x.toml", &|_| Some(pem.clone()))
            .unwrap()
            .unwrap();
        assert!(r.signer.is_some());
        assert_eq!((r.kind, r.lease_ttl), (BackboneRoleKind::Worker, Duration::from_secs(3)));
        let mut files = ConfigFiles::embedded().unwrap();
        files.main.influx =
            Some(toml::from_str("url = \"http://127.0.0.1:8086\"\norg = \"o\"\nbucket = \"b\"").unwrap());
        r.prepare(&mut files).unwrap();
        assert!(files.main.alerting.id_prefix.ends_with("-w-1"), "{}", files.main.alerting.id_prefix);
        assert!(files.main.influx.is_none());
        let rules = alerting::RuleSet::from_toml(&files.rules.0, &files.rules.1).unwrap();
        assert!(!rules.rules.is_empty(), "a worker runs the rules");
        assert!(files.dissemination.is_none(), "the public hears through the dissemination node, not the worker");
        // An id prefix with a '.' cannot be a subject token.
        let mut files = ConfigFiles::embedded().unwrap();
        files.main.alerting.id_prefix = "TW.DC".into();
        let e = r.prepare(&mut files).unwrap_err().to_string();
        assert!(e.contains("alerting.id_prefix") && e.contains("'.'"), "{e}");
    }

    /// A dissemination node's `[cluster]` section, with the one trusted worker key it needs.
    fn dissemination_node() -> String {
        let key = crate::scale_out::signing::AlertSigner::generate();
        format!(
            "urls = [\"nats://a:1\"]\nname = \"d-1\"\nrole = \"dissemination\"\n[[trusted_workers]]\nname = \"w-1\"\n\
             public_key = \"{}\"\n",
            key.public_key()
        )
    }

    #[test]
    fn a_dissemination_node_runs_no_rules_and_needs_its_channels() {
        let r = resolve(&dissemination_node(), Default::default()).unwrap().unwrap();
        assert_eq!(r.kind, BackboneRoleKind::Dissemination);
        let mut files = ConfigFiles::embedded().unwrap();
        r.prepare(&mut files).unwrap();
        let rules = alerting::RuleSet::from_toml(&files.rules.0, &files.rules.1).unwrap();
        assert!(rules.rules.is_empty(), "alerts come from the workers");
        assert!(files.inbound.is_none() && files.main.influx.is_none());
        assert!(files.dissemination.is_some());
        let mut files = ConfigFiles::embedded().unwrap();
        files.dissemination = None;
        let e = r.prepare(&mut files).unwrap_err().to_string();
        assert!(e.contains("dissemination"), "{e}");
    }

    #[test]
    fn a_dissemination_node_sets_its_earlier_outbox_and_warnings_aside() {
        let r = resolve(&dissemination_node(), Default::default()).unwrap().unwrap();
        let dir = tempfile::tempdir().unwrap();
        for name in ["alerts", "dissemination", "pki"] {
            std::fs::create_dir_all(dir.path().join(name)).unwrap();
        }
        r.prepare_data_dir(dir.path()).unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(dir.path().join("pki").exists(), "{names:?}");
        assert!(!dir.path().join("alerts").exists() && !dir.path().join("dissemination").exists(), "{names:?}");
        assert_eq!(names.iter().filter(|n| n.contains(".before-")).count(), 2, "{names:?}");
    }
}
