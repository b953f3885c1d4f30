//! Test helpers: a real VictoriaMetrics server (Debian's `victoria-metrics`, which speaks the InfluxDB v2 write API)
//! on a free loopback port with its own data folder, and a std-only HTTP client to read back what it stored.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BINARY: &str = "victoria-metrics";

pub struct Vm {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
}

/// A port nobody listens on right now (the OS picks it; the listener is closed before we use it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a loopback port").local_addr().expect("local addr").port()
}

impl Vm {
    /// Starts VictoriaMetrics on a free port with data in `dir`. Panics (failing the test, never skipping it) when the
    /// binary is missing.
    pub fn start(dir: &Path) -> Vm {
        Vm::start_on(dir, free_port())
    }

    pub fn start_on(dir: &Path, port: u16) -> Vm {
        Vm::launch(dir, port, &[])
    }

    /// Like [`Vm::start_on`], but keeping one sample per (series, millisecond) the way InfluxDB keeps one point per
    /// (series, timestamp): a point written twice is stored once. See the mid-run outage test for why.
    pub fn start_with_influx_point_identity_on(dir: &Path, port: u16) -> Vm {
        Vm::launch(dir, port, &["-dedup.minScrapeInterval=1ms"])
    }

    fn launch(dir: &Path, port: u16, extra: &[&str]) -> Vm {
        std::fs::create_dir_all(dir).expect("vm data dir");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("vm.log")).expect("vm log file");
        let child = Command::new(BINARY)
            .arg(format!("-storageDataPath={}", dir.join("data").display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-retentionPeriod=100y")
            .args(extra)
            .stdout(Stdio::from(log.try_clone().expect("log fd")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{BINARY}` ({e}): these tests need a real VictoriaMetrics server; \
                     install it with `apt-get install -y victoria-metrics` (scripts/test does)"
                )
            });
        let mut vm = Vm { child: Some(child), port, dir: dir.to_owned() };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, body)) = vm.http("GET", "/health", "") {
                if body.trim() == "OK" {
                    return vm;
                }
            }
            if let Some(child) = vm.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("{BINARY} exited at start ({status}); see {}", dir.join("vm.log").display());
                }
            }
            assert!(Instant::now() < deadline, "{BINARY} not healthy after 20 s; see {}", dir.join("vm.log").display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server the way an operator or systemd would (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every sample of the series matching `selector`, keyed by series name and labels.
    pub fn export(&self, selector: &str) -> BTreeMap<String, Series> {
        let (status, _) = self.http("GET", "/internal/force_flush", "").expect("force_flush");
        assert_eq!(status, 200, "force_flush");
        let body = format!("match[]={}", urlencode(selector));
        let (status, text) = self.http("POST", "/api/v1/export", &body).expect("export");
        assert_eq!(status, 200, "export answered {status}: {text}");
        let mut out = BTreeMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).expect("export line is JSON");
            let labels: BTreeMap<String, String> = v["metric"]
                .as_object()
                .expect("metric labels")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            let key = labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
            let values: Vec<f64> =
                v["values"].as_array().expect("values").iter().map(|x| x.as_f64().unwrap()).collect();
            let timestamps: Vec<i64> =
                v["timestamps"].as_array().expect("timestamps").iter().map(|x| x.as_i64().unwrap()).collect();
            let series: &mut Series = out.entry(key).or_insert_with(|| Series { labels, samples: Vec::new() });
            series.samples.extend(timestamps.into_iter().zip(values));
        }
        for s in out.values_mut() {
            s.samples.sort_by_key(|(ts, _)| *ts);
        }
        out
    }

    /// A one-shot HTTP/1.0 request (so the answer is never chunked and the server closes the connection).
    pub fn http(&self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        Ok((status, body.to_owned()))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, Clone)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    /// (ts, value), sorted by time; duplicates kept, so "exactly once" can be checked.
    pub samples: Vec<(i64, f64)>,
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fake InfluxDB that answers each write request with the next status from `script` (then 204 forever), or never
/// answers when the status is 0. Returns its port and a counter of requests seen.
pub fn scripted_server(script: Vec<u16>) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let script = script.clone();
            let seen = seen2.clone();
            std::thread::spawn(move || loop {
                // Read one request: headers, then Content-Length bytes of body.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                if conn.read_exact(&mut body).is_err() {
                    return;
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let status = script.lock().unwrap().pop_front().unwrap_or(204);
                if status == 0 {
                    std::thread::sleep(Duration::from_secs(3600));
                    return;
                }
                let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 5\r\n\r\nnope\n");
                let reply = if status == 204 { "HTTP/1.1 204 No Content\r\n\r\n".to_owned() } else { reply };
                if conn.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            });
        }
    });
    (port, seen)
}
