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

/// The files of `config/` in `dir`, for a `serve` configuration built from the demo's (`soak`, `backbone`).
pub fn copy_config(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    for entry in std::fs::read_dir(&source)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), dir.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// `serve` refuses plaintext passwords (src/deployment.rs): `dir/devices.toml` with each `password` replaced by its
/// argon2 hash (devices still log in with the same password).
pub fn hash_device_passwords(dir: &Path) -> anyhow::Result<()> {
    let devices = std::fs::read_to_string(dir.join("devices.toml"))?;
    let hashed: Vec<String> = devices
        .lines()
        .map(|line| match line.strip_prefix("password = \"").and_then(|l| l.strip_suffix('"')) {
            Some(plain) => Ok(format!("password_hash = \"{}\"", ingest::devices::hash_password(plain)?)),
            None => Ok(line.to_string()),
        })
        .collect::<anyhow::Result<_>>()?;
    std::fs::write(dir.join("devices.toml"), hashed.join("\n") + "\n")?;
    Ok(())
}

/// …and secrets in files: each moves to the environment variable `Server::launch` sets (`SECRETS_ENV`).
pub fn secrets_to_env(dir: &Path) -> anyhow::Result<()> {
    for file in ["dissemination.toml", "inbound.toml"] {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path)?;
        let moved: Vec<String> = text
            .lines()
            .map(|line| {
                for key in ["token", "hmac_secret", "secret"] {
                    if line.starts_with(&format!("{key} = ")) {
                        return format!("{key}_env = \"DC_BENCH_{}\"", key.to_ascii_uppercase());
                    }
                }
                line.to_string()
            })
            .collect();
        std::fs::write(&path, moved.join("\n") + "\n")?;
    }
    Ok(())
}

/// The demo's stand-in vehicle-detector feed (`[[vd_feed]]`, the last tables of inbound.toml) is the server itself,
/// which `serve` refuses outside a drill: benchmarks poll no agency feed.
pub fn drop_vd_feeds(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join("inbound.toml");
    let text = std::fs::read_to_string(&path)?;
    let text = text.find("\n[[vd_feed]]").map_or(text.as_str(), |i| &text[..=i]).to_string();
    std::fs::write(&path, text)?;
    Ok(())
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`; 0 once it is gone.
#[allow(unsafe_code)] // sysconf has no safe wrapper in std or libc.
pub fn cpu_seconds(pid: u32) -> f64 {
    // SAFETY: sysconf only reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis (state is field 3,
    // utime 14, stime 15).
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / ticks
}
