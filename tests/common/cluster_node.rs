//! One `disaster-cloud serve --cluster … --role …` process on the NATS backbone, for the HA tests (`tests/ha*.rs`):
//! started on free 127.0.0.1 ports, ready once its HTTP answers, killed (SIGKILL) or stopped (SIGTERM), restarted on
//! the same addresses (as a service behind a load balancer or with a device-facing address would be).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cluster::alerts::STREAM;

use super::{free_port, http_get, test_env, TOKEN};

pub struct ClusterNode {
    pub child: Child,
    pub name: String,
    pub mqtt: SocketAddr,
    pub http: SocketAddr,
    pub log: PathBuf,
    args: Vec<String>,
}

impl ClusterNode {
    /// `role`: `front-door`, `worker`, `dissemination`, `fan-out`; `extra`: more arguments (`--signing-key …`).
    pub fn start(config: &Path, dir: &Path, urls: &str, name: &str, role: &str, extra: &[&str]) -> ClusterNode {
        let mut args: Vec<String> = ["serve", "--config", config.to_str().unwrap()]
            .into_iter()
            .chain(["--data-dir", dir.join(name).to_str().unwrap()])
            .chain(["--cluster", urls, "--role", role, "--client-id", name])
            .map(str::to_string)
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::launch(name, args, dir.join(format!("{name}.log")), None)
    }

    /// A rule worker signing with its key (`serve` refuses an unsigned one): `dir/{name}.pem`, made by
    /// [`worker_key`] unless it is there already (its public key for `[[cluster.trusted_workers]]` from that call).
    pub fn worker(config: &Path, dir: &Path, urls: &str, name: &str) -> ClusterNode {
        let key = dir.join(format!("{name}.pem"));
        if !key.exists() {
            worker_key(dir, name);
        }
        Self::start(config, dir, urls, name, "worker", &["--signing-key", key.to_str().unwrap()])
    }

    /// Starts the binary; `addresses`: the MQTT and HTTP listeners to use again (a restart keeps them).
    fn launch(name: &str, args: Vec<String>, log: PathBuf, addresses: Option<(SocketAddr, SocketAddr)>) -> ClusterNode {
        let port = || -> SocketAddr { format!("127.0.0.1:{}", free_port()).parse().unwrap() };
        for _ in 0..4 {
            let (mqtt, http) = addresses.unwrap_or_else(|| (port(), port()));
            let child = test_env(&mut Command::new(env!("CARGO_BIN_EXE_disaster-cloud")))
                .envs(nats_credentials(&args))
                .args(&args)
                .args(["--http-listen", &http.to_string(), "--mqtt-listen", &mqtt.to_string()])
                .args(["--mqtt5-listen", &port().to_string(), "--mqtt-tls=false"])
                .stdout(Stdio::null())
                .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap())
                .spawn()
                .expect("the binary starts");
            let mut node = ClusterNode { child, name: name.into(), mqtt, http, log: log.clone(), args: args.clone() };
            match node.wait_ready() {
                Ok(()) => return node,
                Err(text) if text.contains("Address already in use") => continue,
                Err(text) => panic!("{name} ({args:?}) not ready; log:\n{text}"),
            }
        }
        panic!("{name}: no free ports after 4 attempts");
    }

    /// HTTP answers once the role is attached (connected to the cluster, its streams and buckets found).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if http_get(self.http, "/metrics", Some(TOKEN)).is_some_and(|(s, _)| s == 200) {
                return Ok(());
            }
            if self.child.try_wait().ok().flatten().is_some() {
                return Err(self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(self.log())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One sample of `/metrics` (`name` or `name{labels}`); `None` when absent or the node does not answer.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = http_get(self.http, "/metrics", Some(TOKEN))?;
        body.lines().find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok()))
    }

    /// Counties a rule worker owns now.
    pub fn owned(&self) -> f64 {
        self.metric("dc_cluster_regions_owned").unwrap_or(0.0)
    }

    /// Whether this is the active dissemination node.
    pub fn active(&self) -> bool {
        self.metric("dc_cluster_dissemination_active") == Some(1.0)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again with the same arguments and addresses.
    pub fn restart(&mut self) {
        let name = self.name.clone();
        *self = Self::launch(&name, self.args.clone(), self.log.clone(), Some((self.mqtt, self.http)));
    }

    /// SIGTERM, as Kubernetes, systemd or `docker stop` ask a process to stop; returns once the process has exited
    /// (its exit status).
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "{} still running {within:?} after SIGTERM:\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A rule worker's signing key, made as an operator would (`cluster-key new`: an owner-only file, the public key
/// printed): the key file's path and the public key.
pub fn worker_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(format!("{name}.pem"));
    let made = Command::new(env!("CARGO_BIN_EXE_disaster-cloud"))
        .args(["cluster-key", "new", "--out", key.to_str().unwrap(), "--name", name])
        .output()
        .expect("cluster-key runs");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let printed = String::from_utf8_lossy(&made.stdout);
    let public = printed
        .lines()
        .find_map(|l| l.strip_prefix("public_key = \"").and_then(|l| l.strip_suffix('"')))
        .unwrap_or_else(|| panic!("no public key printed: {printed}"))
        .to_string();
    (key, public)
}

/// `[[cluster.trusted_workers]]` for `name`'s public key (every county), to append after a `[cluster]` section.
pub fn trusted_worker(name: &str, public: &str) -> String {
    format!("\n[[cluster.trusted_workers]]\nname = \"{name}\"\npublic_key = \"{public}\"\n")
}

/// One alert version as the alerts stream holds it.
#[derive(Debug, Clone)]
pub struct AlertVersion {
    pub subject: String,
    pub id: String,
    pub version: u64,
    pub rule: String,
    pub area: String,
    pub level: u64,
    pub state: String,
    pub worker: String,
}

/// Every message of the alerts stream, in stream order.
pub async fn alert_versions(js: &async_nats::jetstream::Context) -> Vec<AlertVersion> {
    let Ok(mut stream) = js.get_stream(STREAM).await else { return Vec::new() };
    let state = stream.info().await.expect("info").state.clone();
    let mut versions = Vec::new();
    for seq in state.first_sequence.max(1)..=state.last_sequence {
        let Ok(m) = stream.get_raw_message(seq).await else { continue };
        let message: serde_json::Value = serde_json::from_slice(&m.payload).expect("an alerts-stream message is JSON");
        // A signing worker's body is inside its envelope (`scale_out/backbone_alerts.rs`).
        let body = if message["format"].is_string() { message["alert"].clone() } else { message };
        // The workers' public warnings share the stream (for fan-out nodes; tests/ha_fanout.rs checks their chains).
        if body["type"] == "public_warning" {
            continue;
        }
        let alert = &body["record"]["alert"];
        versions.push(AlertVersion {
            subject: m.subject.to_string(),
            id: alert["id"].as_str().unwrap_or_default().into(),
            version: alert["version"].as_u64().unwrap_or_default(),
            rule: alert["rule_id"].as_str().unwrap_or_default().into(),
            area: alert["area_id"].as_str().unwrap_or_default().into(),
            level: alert["level"]["index"].as_u64().unwrap_or(99),
            state: alert["state"].as_str().unwrap_or_default().into(),
            worker: body["worker"].as_str().unwrap_or_default().into(),
        });
    }
    versions
}

/// One alert per hazard, and each alert's versions once each and in order (1, 2, 3, …) — whoever published them.
pub fn assert_no_alert_doubled_or_lost(versions: &[AlertVersion]) {
    let mut ids_per_hazard: HashMap<(String, String), BTreeSet<String>> = HashMap::new();
    let mut per_id: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for v in versions {
        ids_per_hazard.entry((v.rule.clone(), v.area.clone())).or_default().insert(v.id.clone());
        per_id.entry(v.id.clone()).or_default().push((v.version, v.worker.clone()));
    }
    assert!(ids_per_hazard.values().all(|ids| ids.len() == 1), "a hazard with two alerts: {ids_per_hazard:#?}");
    for (id, list) in &per_id {
        let numbers: Vec<u64> = list.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            numbers,
            (1..=numbers.len() as u64).collect::<Vec<_>>(),
            "{id}: versions skipped or doubled: {list:?}"
        );
    }
}

pub async fn wait_for_alert(
    js: &async_nats::jetstream::Context,
    within: Duration,
    what: &str,
    want: impl Fn(&AlertVersion) -> bool,
) -> Vec<AlertVersion> {
    let deadline = Instant::now() + within;
    loop {
        let versions = alert_versions(js).await;
        if versions.iter().any(&want) {
            return versions;
        }
        assert!(Instant::now() < deadline, "{what}: not in the alerts stream within {within:?}: {versions:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The NATS credentials of the node's role on the test cluster its `--cluster` names, as a deployment passes them:
/// `DC_CLUSTER_USER` (the role's user, `ops/nats/authorization.conf`) and `DC_CLUSTER_PASSWORD`.
fn nats_credentials(args: &[String]) -> Vec<(&'static str, String)> {
    let after = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
    let (Some(urls), Some(role)) = (after("--cluster"), after("--role")) else { return Vec::new() };
    let url = urls.split(',').next().unwrap_or_default();
    let password = cluster::test_support::password_for(url, role)
        .unwrap_or_else(|| panic!("no running NatsCluster at {url} with a user `{role}`"));
    vec![("DC_CLUSTER_USER", role.clone()), ("DC_CLUSTER_PASSWORD", password)]
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Who holds `county`'s lease now (`None`: nobody, or the leases bucket cannot be read).
pub async fn lease_holder(js: &async_nats::jetstream::Context, county: &str) -> Option<String> {
    let store = js.get_key_value(cluster::lease::BUCKET).await.ok()?;
    let entry = store.entry(county).await.ok().flatten()?;
    (entry.operation == async_nats::jetstream::kv::Operation::Put)
        .then(|| String::from_utf8_lossy(&entry.value).into_owned())
}
