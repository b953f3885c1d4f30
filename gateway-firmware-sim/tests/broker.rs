//! Against a real broker (Debian's `mosquitto`, started by each test on its own port): the messages that arrive are
//! exactly the plan, wills fire when links die, a broker restart mid-run loses nothing the firmware buffered, passwords
//! are used, and load runs count what they measure.
//!
//! These tests need `mosquitto` installed (`apt-get install -y mosquitto`); without it they fail, they do not skip.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_firmware_sim::plan::MessageKind;
use gateway_firmware_sim::{plan, run_load, run_scenario, Fleet, LoadOptions, RunOptions, Scenario};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

// ---------------------------------------------------------------------------------------------------------------
// broker and subscriber helpers

fn mosquitto_binary() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/sbin", "/usr/local/sbin"]) {
        let p = Path::new(dir).join("mosquitto");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "mosquitto is not installed: these integration tests need it (apt-get install -y mosquitto mosquitto-clients)"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A mosquitto process with its own config and directory; killed on drop.
struct Mosquitto {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// `extra`: more config lines (persistence, password file); `{dir}` stands for the broker's own temp directory.
    fn start(extra: &str) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("gfs-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Run as root, mosquitto switches to its own user, which must be able to write its persistence file here.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let conf = format!("listener {port} 127.0.0.1\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n{}\n", extra.replace("{dir}", dir.to_str().unwrap()));
        std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
        let mut m = Mosquitto { port, dir, child: None };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("mosquitto.log")).unwrap();
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("mosquitto did not listen on {} (log: {})", self.port, self.log());
    }

    /// Stop with SIGTERM (mosquitto saves its persistence file then) and wait for it.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type Received = Arc<Mutex<Vec<(String, String)>>>;

/// Subscribe to `sensors/#` at QoS 1 and collect everything; returns once the subscription is acknowledged.
/// `persistent`: a session that survives broker restarts (with broker persistence), so nothing published while the
/// subscriber is reconnecting is lost to the test's own counting.
async fn subscriber(port: u16, persistent: bool) -> Received {
    let mut opts = MqttOptions::new(format!("testsub{port}"), "127.0.0.1", port);
    opts.set_clean_session(!persistent);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    client.subscribe("sensors/#", QoS::AtLeastOnce).await.unwrap();
    let received: Received = Arc::default();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let sink = received.clone();
    tokio::spawn(async move {
        let _client = client; // dropping it would end the event loop
        let mut subscribed = Some(subscribed_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    sink.lock().unwrap().push((p.topic.clone(), String::from_utf8_lossy(&p.payload).into_owned()));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(5), subscribed_rx).await.expect("SUBACK in time").unwrap();
    received
}

/// Wait until the subscriber has seen at least `n` messages (or give up after `max`).
async fn settle(received: &Received, n: usize, max: Duration) {
    let deadline = tokio::time::Instant::now() + max;
    while received.lock().unwrap().len() < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // anything extra (duplicates) would show now
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).unwrap()
}

fn fleet() -> Fleet {
    Fleet::from_files(&fixture("sensors.toml"), &fixture("devices.toml")).unwrap()
}

fn count<'a>(items: impl Iterator<Item = (&'a str, &'a str)>) -> BTreeMap<(String, String), usize> {
    let mut m = BTreeMap::new();
    for (t, p) in items {
        *m.entry((t.to_string(), p.to_string())).or_insert(0) += 1;
    }
    m
}

/// A scenario run in its own task, so the test can act on the brokers meanwhile.
fn spawn_run(
    fleet: &Fleet,
    scenario: &Scenario,
    opts: &RunOptions,
) -> tokio::task::JoinHandle<Result<gateway_firmware_sim::Summary, gateway_firmware_sim::SimError>> {
    let (fleet, scenario, opts) = (fleet.clone(), scenario.clone(), opts.clone());
    tokio::spawn(async move { run_scenario(&fleet, &scenario, &opts).await })
}

const WILL: &str = r#"{"online":false}"#;

// ---------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_run_delivers_exactly_the_plan_and_wills_fire_when_links_die() {
    let broker = Mosquitto::start("allow_anonymous true\npersistence false");
    let received = subscriber(broker.port, false).await;
    let (fleet, scenario) = (fleet(), Scenario::from_toml(&fixture("storm-short.toml"), "storm-short.toml").unwrap());
    let opts =
        RunOptions { port: broker.port, seed: 42, start_ts_ms: 1_764_122_400_000, quiet: true, ..Default::default() };

    let summary = run_scenario(&fleet, &scenario, &opts).await.unwrap();
    assert!(summary.is_complete(), "{summary}");
    assert_eq!((summary.dropped, summary.buffered), (0, 0));
    let planned = plan(&fleet, &scenario, 42, 1_764_122_400_000).unwrap();
    let expected = count(planned.messages().iter().map(|m| (m.topic.as_str(), m.payload.as_str())));
    let n_expected: usize = expected.values().sum();
    assert_eq!(summary.planned as usize, n_expected);
    assert!(planned.count(MessageKind::Duplicate) > 0, "the fixture plans some duplicate sends");

    settle(&received, n_expected + 2, Duration::from_secs(5)).await;
    let got = received.lock().unwrap().clone();
    let (wills, data): (Vec<_>, Vec<_>) = got.iter().partition(|(_, p)| p == WILL);
    let got_data = count(data.iter().map(|(t, p)| (t.as_str(), p.as_str())));
    if summary.resent == 0 {
        assert_eq!(got_data, expected, "every planned message exactly as often as planned");
    } else {
        // A resend after a dropped link may arrive twice (QoS 1 is at least once); never fewer.
        assert!(expected.iter().all(|(k, n)| got_data.get(k).copied().unwrap_or(0) >= *n));
        assert!(got_data.len() == expected.len() && data.len() <= n_expected + summary.resent as usize);
    }
    // The link drop of RV0001 and the death of SM0001 each make the broker publish the will once; the others
    // disconnect cleanly at the end.
    let mut will_topics: Vec<&str> = wills.iter().map(|(t, _)| t.as_str()).collect();
    will_topics.sort();
    assert_eq!(will_topics, vec!["sensors/RV0001/status", "sensors/SM0001/status"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_run_loses_nothing_the_firmware_buffered() {
    // Persistence, so the test's own subscriber keeps its session (and what was queued for it) across the restart.
    let mut broker = Mosquitto::start("allow_anonymous true\npersistence true\npersistence_location {dir}/");
    let received = subscriber(broker.port, true).await;
    let (fleet, scenario) = (fleet(), Scenario::from_toml(&fixture("restart.toml"), "restart.toml").unwrap());
    let opts =
        RunOptions { port: broker.port, seed: 9, start_ts_ms: 1_764_122_400_000, quiet: true, ..Default::default() };
    let planned = plan(&fleet, &scenario, 9, opts.start_ts_ms).unwrap();
    let expected = count(planned.messages().iter().map(|m| (m.topic.as_str(), m.payload.as_str())));

    let run = spawn_run(&fleet, &scenario, &opts);
    // 6 s run: the broker is gone from 2 s to 3.5 s, while about a quarter of the readings fall due.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let broker = tokio::task::spawn_blocking(move || {
        broker.stop();
        std::thread::sleep(Duration::from_millis(1500));
        broker.spawn();
        broker
    })
    .await
    .unwrap();

    let summary = run.await.unwrap().unwrap();
    assert!(summary.is_complete(), "{summary}");
    assert_eq!(summary.dropped, 0, "{summary}");
    assert_eq!(summary.acked, summary.planned, "{summary}");
    assert!(summary.peak_buffered > 3, "readings were buffered during the outage: {summary}");
    assert!(
        summary.disconnects >= 3 && summary.connect_failures >= 1,
        "every device lost its link and retried: {summary}"
    );

    let n_expected: usize = expected.values().sum();
    settle(&received, n_expected, Duration::from_secs(10)).await;
    let got = received.lock().unwrap().clone();
    let got_data = count(got.iter().filter(|(_, p)| p != WILL).map(|(t, p)| (t.as_str(), p.as_str())));
    // Every planned message arrived (QoS 1 may deliver a resent one twice; distinct messages must match exactly).
    let missing: Vec<_> = expected.keys().filter(|k| !got_data.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} planned messages never arrived: {:?}\nbroker log:\n{}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(3)],
        broker.log()
    );
    assert_eq!(got_data.len(), expected.len(), "nothing unplanned arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_fail_over_to_their_second_broker_when_the_first_dies() {
    // Two brokers standing for two front doors of a cluster; each device is provisioned with both. The first is
    // SIGKILLed (no restart) 2 s into a 6 s run: everything planned must still be acknowledged, by the second.
    let mut first = Mosquitto::start("allow_anonymous true\npersistence false");
    let second = Mosquitto::start("allow_anonymous true\npersistence false");
    let (on_first, on_second) = (subscriber(first.port, false).await, subscriber(second.port, false).await);
    let (fleet, scenario) = (fleet(), Scenario::from_toml(&fixture("restart.toml"), "restart.toml").unwrap());
    let opts = RunOptions {
        port: first.port,
        failover: vec![("127.0.0.1".into(), second.port)],
        seed: 9,
        start_ts_ms: 1_764_122_400_000,
        quiet: true,
        ..Default::default()
    };
    let planned = plan(&fleet, &scenario, 9, opts.start_ts_ms).unwrap();
    let expected = count(planned.messages().iter().map(|m| (m.topic.as_str(), m.payload.as_str())));
    let run = spawn_run(&fleet, &scenario, &opts);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = on_first.lock().unwrap().len();
    if let Some(mut child) = first.child.take() {
        child.kill().unwrap();
        child.wait().unwrap();
    }

    let summary = run.await.unwrap().unwrap();
    assert!(summary.is_complete(), "{summary}");
    assert_eq!(summary.acked, summary.planned, "{summary}");
    assert!(summary.failovers >= 3, "every device turned to the second broker: {summary}");
    assert!(summary.to_string().contains("failover"), "{summary}");
    assert!(before > 0, "the first broker took readings before it died");
    let n_expected: usize = expected.values().sum();
    settle(&on_second, n_expected - before, Duration::from_secs(10)).await;
    // Every planned message reached one of the two (a resend may reach the second as well: at least once).
    let got: Vec<(String, String)> =
        on_first.lock().unwrap().iter().chain(on_second.lock().unwrap().iter()).cloned().collect();
    let got_data = count(got.iter().filter(|(_, p)| p != WILL).map(|(t, p)| (t.as_str(), p.as_str())));
    let missing: Vec<_> = expected.keys().filter(|k| !got_data.contains_key(*k)).collect();
    assert!(missing.is_empty(), "{} planned messages reached neither broker: {missing:?}", missing.len());
    assert_eq!(got_data.len(), expected.len(), "nothing unplanned arrived");
    assert!(!on_second.lock().unwrap().is_empty(), "nothing reached the second broker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_log_in_with_their_passwords_and_a_wrong_one_is_reported() {
    let mut broker = Mosquitto::start("allow_anonymous false\npersistence false");
    let pwfile = broker.dir.join("passwd");
    let fleet = fleet();
    for (i, d) in fleet.devices().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let ok = cmd
            .arg("-b")
            .arg(&pwfile)
            .arg(&d.id)
            .arg(d.password.as_deref().unwrap())
            .status()
            .expect("mosquitto_passwd");
        assert!(ok.success());
    }
    let conf = std::fs::read_to_string(broker.dir.join("mosquitto.conf")).unwrap();
    std::fs::write(broker.dir.join("mosquitto.conf"), format!("{conf}password_file {}\n", pwfile.display())).unwrap();
    broker.stop();
    broker.spawn();

    let scenario = Scenario::from_toml(
        r#"
[scenario]
name = "login"
span = "30m"
compression = 1800.0
[firmware]
heartbeat = "1h"
drain_timeout = "1s"
backoff_initial = "100ms"
backoff_max = "200ms"
[[track]]
device = "RG0001"
metric = "rain_mm"
points = [["0h", 5.0]]
[[track]]
device = "TM0001"
metric = "tilt_deg"
points = [["0h", 0.1]]
"#,
        "login.toml",
    )
    .unwrap();
    let opts = RunOptions { port: broker.port, quiet: true, ..RunOptions::for_scenario(&scenario) };
    let good = run_scenario(&fleet, &scenario, &opts).await.unwrap();
    assert!(good.is_complete(), "{good}");

    let mut wrong = fleet.clone();
    let mut tm = wrong.device("TM0001").unwrap().clone();
    tm.password = Some("not-the-password".into());
    wrong.insert(tm);
    let bad = run_scenario(&wrong, &scenario, &opts).await.unwrap();
    assert!(!bad.is_complete());
    let rg = bad.per_device.iter().find(|d| d.id == "RG0001").unwrap();
    assert_eq!(rg.delivery.acked, rg.delivery.queued, "the other device is unaffected");
    assert_eq!(bad.errors.len(), 1, "{:?}", bad.errors);
    assert!(bad.errors[0].starts_with("TM0001: Connection refused"), "{:?}", bad.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_runs_count_what_they_measure() {
    let broker = Mosquitto::start("allow_anonymous true\npersistence false");
    let received = subscriber(broker.port, false).await;
    let opts = LoadOptions {
        port: broker.port,
        connections: 3,
        rate: 300.0,
        batch: 5,
        message_size: 600,
        qos: 1,
        duration: Duration::from_secs(2),
        quiet: true,
        ..Default::default()
    };
    let s = run_load(&opts).await.unwrap();
    assert!(s.is_complete(), "{s}");
    assert_eq!(s.connected, 3);
    assert!((540..=600).contains(&s.generated), "about rate x duration messages: {s}");
    assert_eq!(s.acked, s.generated);
    assert_eq!(s.readings_acked, s.acked * 5);
    assert_eq!(s.latency.count, s.acked);
    assert!(s.latency.p50 <= s.latency.p99 && s.latency.p99 <= s.latency.max);
    settle(&received, s.acked as usize, Duration::from_secs(5)).await;
    let got = received.lock().unwrap().clone();
    // Once each, unless a connection died and a message was resent (QoS 1 is at least once).
    assert!(got.len() as u64 >= s.acked && got.len() as u64 <= s.acked + s.resent, "{} received for {s}", got.len());
    let sizes: Vec<usize> = got.iter().map(|(_, p)| p.len()).collect();
    assert!(sizes.iter().all(|&n| n == 600), "payloads padded to the requested size");
    let topics: std::collections::BTreeSet<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics.len(), 3, "one device id per connection: {topics:?}");

    // QoS 0 counts a message as delivered once written.
    let s0 = run_load(&LoadOptions { qos: 0, batch: 1, message_size: 0, ..opts.clone() }).await.unwrap();
    assert!(s0.is_complete() && s0.acked == s0.generated && s0.acked > 0, "{s0}");
}
