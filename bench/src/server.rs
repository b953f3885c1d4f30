//! Starting the real binary and reading it from outside: ports, `/metrics`, RSS.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "bench-operator-token";

/// The secrets a `serve` configuration names by environment variable (`serve` refuses them in files): one variable
/// per secret kind of the demo config, which `soak::soak_config` rewrites to `*_env`.
pub const SECRETS_ENV: [(&str, &str); 3] = [
    ("DC_BENCH_TOKEN", "bench-push-and-cbc-token"),
    ("DC_BENCH_HMAC_SECRET", "bench-hmac-secret"),
    ("DC_BENCH_SECRET", "bench-webhook-secret-0123456789"),
];

pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

pub struct Server {
    child: Child,
    pub mqtt: SocketAddr,
    pub http: SocketAddr,
    /// The server's data dir, removed when the server is dropped.
    pub data: PathBuf,
    /// Its standard error (errors only), removed with it.
    log: PathBuf,
}

impl Server {
    /// `demo` on its embedded configuration, without the scenario.
    pub fn start(binary: &Path) -> anyhow::Result<Server> {
        Server::launch(binary, &["demo", "--no-scenario"], Duration::from_secs(30))
    }

    /// `serve` on a configuration file (the soak's, with its own sensors, receivers and time-series server).
    pub fn serve(binary: &Path, config: &Path, ready_within: Duration) -> anyhow::Result<Server> {
        let config = config.display().to_string();
        Server::launch(binary, &["serve", "--config", &config], ready_within)
    }

    fn launch(binary: &Path, command: &[&str], ready_within: Duration) -> anyhow::Result<Server> {
        let (mqtt, mqtt5, http) = (free_addr(), free_addr(), free_addr());
        let data = std::env::temp_dir().join(format!("dc-bench-{}-{}", std::process::id(), http.port()));
        let log = data.with_extension("log");
        let stderr = std::fs::File::create(&log)?;
        let child = Command::new(binary)
            .envs(SECRETS_ENV)
            .args(command)
            .args(["--mqtt-listen", &mqtt.to_string(), "--mqtt5-listen", &mqtt5.to_string()])
            .args(["--http-listen", &http.to_string(), "--data-dir", &data.display().to_string()])
            .args(["--mqtt-tls-listen", &free_addr().to_string(), "--mqtt5-tls-listen", &free_addr().to_string()])
            .env("DC_OPERATOR_TOKEN", TOKEN)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e} (run scripts/bench, which builds it)", binary.display()))?;
        let mut server = Server { child, mqtt, http, data, log };
        let deadline = Instant::now() + ready_within;
        while Instant::now() < deadline {
            if get(http, "/healthz").is_some() && TcpStream::connect(mqtt).is_ok() {
                return Ok(server);
            }
            // A refused configuration ends the process at once: say why now, not when the wait runs out.
            if let Ok(Some(status)) = server.child.try_wait() {
                let said = std::fs::read_to_string(&server.log).unwrap_or_default();
                anyhow::bail!(
                    "{} {} exited ({status}) before it was ready:\n{said}",
                    binary.display(),
                    command.join(" ")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("server did not become ready")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// A counter or gauge from `/metrics` (sum over label sets when `sample` names only the metric).
    pub fn metric(&self, sample: &str) -> f64 {
        let body = get(self.http, "/metrics").unwrap_or_default();
        body.lines()
            .filter(|l| l.starts_with(sample) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
        let _ = std::fs::remove_file(&self.log);
    }
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The body of a 200 answer to an operator's GET.
pub fn get(addr: SocketAddr, path: &str) -> Option<String> {
    request(addr, "GET", path).and_then(|(status, body)| (status == 200).then_some(body))
}

/// An operator's request without a body: (status, body).
pub fn request(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// The demo's device credentials, for publishers that must log in.
pub fn demo_devices() -> Vec<(String, Option<String>)> {
    let text = include_str!("../../config/devices.toml");
    let value: toml::Value = toml::from_str(text).unwrap_or(toml::Value::Table(Default::default()));
    value
        .get("device")
        .and_then(|d| d.as_array())
        .map(|devices| {
            devices
                .iter()
                .filter_map(|d| {
                    Some((d.get("id")?.as_str()?.to_string(), d.get("password")?.as_str().map(str::to_string)))
                })
                // Sensors that report battery_v (every kind but the river gauge, detectors and trucks in the demo file).
                .filter(|(id, _)| ["RG", "TM", "EX", "WS", "SM", "RF"].iter().any(|p| id.starts_with(p)))
                .collect()
        })
        .unwrap_or_default()
}
