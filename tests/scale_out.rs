//! Scale-out on an existing MQTT cluster (issue 14), against Debian's mosquitto started here on a free port: a writer
//! routing device publishes into regions, two workers owning different counties, one fan-out node serving citizens.
//! Every process is the real binary; devices and the test's observers are real MQTT clients.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{config_copy, free_port, http_get, http_request, now_ms, Citizen, Operator, SHENMU, TAIPEI, TOKEN};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);
/// A rain gauge added to the test's registry inside the Xiaolin debris-flow area (Kaohsiung, county 64000); the demo
/// gauge RG0001 stands in Shenmu (Nantou, county 10008).
const XIAOLIN: (f64, f64) = (23.160, 120.650);

/// `mosquitto -c <conf>` on a free loopback port.
struct Mosquitto {
    child: Child,
    port: u16,
    _dir: PathBuf,
}

impl Mosquitto {
    fn start() -> Mosquitto {
        for _ in 0..4 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!("dc-scale-mosquitto-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let conf = dir.join("mosquitto.conf");
            // Queued messages for offline persistent sessions (a killed worker) are what this test is about.
            std::fs::write(
                &conf,
                format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 10000\n"
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
            let mut child = Command::new("mosquitto")
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("Debian's mosquitto is installed (scripts/test installs it)");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Mosquitto { child, port, _dir: dir };
                }
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("mosquitto did not start");
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `disaster-cloud serve --upstream …` process.
struct Node {
    child: Child,
    http: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    args: Vec<String>,
}

impl Node {
    fn start(config: &Path, data_dir: &Path, args: &[&str]) -> Node {
        let args: Vec<String> =
            ["serve", "--config", config.to_str().unwrap(), "--data-dir", data_dir.to_str().unwrap()]
                .iter()
                .chain(args)
                .map(|s| s.to_string())
                .collect();
        Self::launch(data_dir.to_path_buf(), args)
    }

    fn launch(data_dir: PathBuf, args: Vec<String>) -> Node {
        for _ in 0..4 {
            let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let log = data_dir.with_extension(format!("{}.log", http.port()));
            let child = common::test_env(&mut Command::new(env!("CARGO_BIN_EXE_disaster-cloud")))
                .args(&args)
                .args(["--http-listen", &http.to_string()])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("the binary starts");
            let mut node = Node { child, http, data_dir: data_dir.clone(), log, args: args.clone() };
            match node.wait_ready() {
                Ok(()) => return node,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("node {args:?} not ready; log:\n{log}"),
            }
        }
        panic!("no free port after 4 attempts");
    }

    /// Serving HTTP, and the broker has granted its subscriptions (what is published from now on reaches it).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if self.metric_opt("dc_upstream_subscribed{link=\"consumer\"}") == Some(1.0) {
                return Ok(());
            }
            if self.child.try_wait().ok().flatten().is_some() {
                return Err(self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(self.log())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metric_opt(&self, sample: &str) -> Option<f64> {
        let (_, body) = http_get(self.http, "/metrics", Some(TOKEN))?;
        body.lines().find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok()))
    }

    fn metric(&self, sample: &str) -> f64 {
        self.metric_opt(sample).unwrap_or_else(|| panic!("metric {sample} not found; log:\n{}", self.log()))
    }

    fn alerts(&self) -> Vec<Value> {
        let (status, body) = http_get(self.http, "/api/v1/alerts", Some(TOKEN)).expect("alert list");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// SIGKILL: no shutdown code runs.
    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// The same command on the same data dir.
    fn restart(&mut self) {
        *self = Self::launch(self.data_dir.clone(), self.args.clone());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain MQTT client on the broker: devices publishing, and an observer of the retained alerts.
async fn mqtt_client(
    broker: &Mosquitto,
    id: &str,
) -> (AsyncClient, tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>) {
    let mut opts = MqttOptions::new(id, "127.0.0.1", broker.port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(p);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    (client, rx)
}

async fn rain(device: &AsyncClient, id: &str, mm: f64, ts: i64) {
    device
        .publish(
            format!("sensors/{id}/readings"),
            QoS::AtLeastOnce,
            false,
            format!(r#"{{"ts":{ts},"values":{{"rain_mm":{mm}}}}}"#),
        )
        .await
        .unwrap();
}

/// The retained alert messages seen so far, by topic (the newest message of each): the alert frame inside the signed
/// envelope, and the message as published.
struct AlertWatch {
    rx: tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
    latest: HashMap<String, Value>,
    raw: HashMap<String, bytes::Bytes>,
}

impl AlertWatch {
    async fn until(&mut self, what: &str, pred: impl Fn(&str, &Value) -> bool) -> (String, Value) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some((t, v)) = self.latest.iter().find(|(t, v)| pred(t, v)) {
                return (t.clone(), v.clone());
            }
            let p = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no alert message {what} on the broker; seen: {:?}", self.latest))
                .expect("observer running");
            let envelope: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
            if envelope["format"] != "dc-signed-alert/1" {
                // Removals (empty) and the test's own forgeries.
                continue;
            }
            self.latest.insert(p.topic.clone(), envelope["alert"].clone());
            self.raw.insert(p.topic.clone(), p.payload.clone());
        }
    }
}

/// Citizen frames until one matches `pred`, returning every frame received (the match last).
async fn frames_until(citizen: &mut Citizen, what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = citizen.next_json(left).await.unwrap_or_else(|| panic!("citizen never got {what}; got {got:?}"));
        let done = pred(&frame);
        got.push(frame);
        if done {
            return got;
        }
    }
}

/// A fresh worker key made by the binary (`cluster-key new`): the key file and its public key.
fn worker_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(format!("{name}.pem"));
    let out = Command::new(env!("CARGO_BIN_EXE_disaster-cloud"))
        .args(["cluster-key", "new", "--out", path.to_str().unwrap(), "--name", name])
        .output()
        .expect("cluster-key runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let public = stdout
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .unwrap_or_else(|| panic!("no public key in {stdout}"))
        .to_string();
    (path, public)
}

/// `config` with the fan-out nodes' list of trusted worker keys: (name, public key, regions).
fn trust_workers(config: &Path, workers: &[(&str, &str, &[&str])]) {
    let mut text = std::fs::read_to_string(config).unwrap();
    for (name, public, regions) in workers {
        let regions: Vec<String> = regions.iter().map(|r| format!("\"{r}\"")).collect();
        text.push_str(&format!(
            "\n[[upstream.trusted_workers]]\nname = \"{name}\"\npublic_key = \"{public}\"\nregions = [{}]\n",
            regions.join(", ")
        ));
    }
    std::fs::write(config, text).unwrap();
}

/// Waits until the fan-out node has counted `n` messages of `outcome`.
fn wait_outcome(fanout: &Node, outcome: &str, n: f64) {
    let sample = format!("dc_cluster_alerts_received_total{{outcome=\"{outcome}\"}}");
    let deadline = Instant::now() + WAIT;
    while fanout.metric(&sample) < n {
        assert!(Instant::now() < deadline, "fan-out never counted {n} {outcome}:\n{}", fanout.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every message on `alerts/…` the fan-out node has taken a decision on, whatever it was.
fn received_total(fanout: &Node) -> f64 {
    let (_, body) = http_get(fanout.http, "/metrics", Some(TOKEN)).expect("metrics");
    body.lines()
        .filter(|l| l.starts_with("dc_cluster_alerts_received_total{"))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

fn heavy_rain_in<'a>(alerts: &'a [Value], zone: &str) -> Vec<&'a Value> {
    alerts.iter().filter(|a| a["event"] == "heavy_rain" && a["area_id"] == zone).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_are_owned_by_workers_and_alerts_reach_citizens_through_the_fanout() {
    let broker = Mosquitto::start();
    let config = test_config("scale-out");
    let sensors = config.with_file_name("sensors.toml");
    let mut text = std::fs::read_to_string(&sensors).unwrap();
    text.push_str(&format!(
        "\n[[sensor]]\nid = \"RG0101\"\nkind = \"rain_gauge\"\nlat = {}\nlon = {}\ninterval_s = 600\nagency = \"SWCB\"\nmetrics = [\"rain_mm\"]\n",
        XIAOLIN.0, XIAOLIN.1
    ));
    std::fs::write(&sensors, text).unwrap();
    let base = std::env::temp_dir().join(format!("dc-scale-out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    // Each worker signs with its own key; the fan-out trusts each for its own county only.
    let (nantou_key, nantou_public) = worker_key(&base, "nantou");
    let (kaohsiung_key, kaohsiung_public) = worker_key(&base, "kaohsiung");
    trust_workers(&config, &[("nantou", &nantou_public, &["10008"]), ("kaohsiung", &kaohsiung_public, &["64000"])]);
    let url = broker.url();
    let node = |name: &str, args: &[&str]| {
        let mut all = vec!["--upstream", url.as_str(), "--client-id", name];
        all.extend_from_slice(args);
        Node::start(&config, &base.join(name), &all)
    };
    let writer = node("writer1", &["--role", "writer"]);
    let mut nantou = node("nantou", &["--region", "10008", "--signing-key", nantou_key.to_str().unwrap()]);
    let kaohsiung =
        node("kaohsiung", &["--role", "worker", "--region", "64000", "--signing-key", kaohsiung_key.to_str().unwrap()]);
    let (observer, rx) = mqtt_client(&broker, "test-observer").await;
    observer.subscribe("alerts/#", QoS::AtLeastOnce).await.unwrap();
    let mut watch = AlertWatch { rx, latest: HashMap::new(), raw: HashMap::new() };

    // Devices publish on their usual topics; a bad payload and an unknown device ride along.
    let (device, _) = mqtt_client(&broker, "test-devices").await;
    let ts = now_ms();
    device.publish("sensors/RG0001/readings", QoS::AtLeastOnce, false, "{not json").await.unwrap();
    device.publish("sensors/XX9999/readings", QoS::AtLeastOnce, false, r#"{"values":{"rain_mm":1}}"#).await.unwrap();
    rain(&device, "RG0001", 120.0, ts).await;
    rain(&device, "RG0101", 120.0, ts).await;

    // Each region's alert comes from its own worker, named in the message and in the id.
    let is_alert = |v: &Value, area: &str| v["type"] == "alert" && v["event"] == "heavy_rain" && v["area_id"] == area;
    let is_warning =
        |v: &Value, area: &str| v["type"] == "public_warning" && v["event"] == "heavy_rain" && v["area_id"] == area;
    let (nantou_topic, nantou_alert) = watch.until("for Shenmu", |_, v| is_alert(v, "dfa-xinyi-shenmu")).await;
    // Signed by the worker's own key.
    let envelope: Value = serde_json::from_slice(&watch.raw[&nantou_topic]).unwrap();
    assert_eq!(envelope["key"], nantou_public.as_str(), "{envelope}");
    assert!(nantou_topic.starts_with("alerts/10008/"), "{nantou_topic}");
    assert_eq!((nantou_alert["worker"].as_str(), nantou_alert["region"].as_str()), (Some("nantou"), Some("10008")));
    let nantou_id = nantou_alert["id"].as_str().unwrap().to_string();
    assert!(nantou_id.contains("-nantou-"), "{nantou_id}");
    assert_eq!(nantou_topic, format!("alerts/10008/{nantou_id}"));
    let (kaohsiung_topic, kaohsiung_alert) =
        watch.until("for Xiaolin", |_, v| is_alert(v, "dfa-jiaxian-xiaolin")).await;
    let kaohsiung_id = kaohsiung_alert["id"].as_str().unwrap().to_string();
    assert_eq!(kaohsiung_topic, format!("alerts/64000/{kaohsiung_id}"));
    assert_eq!(kaohsiung_alert["worker"], "kaohsiung");
    assert!(kaohsiung_id.contains("-kaohsiung-"), "{kaohsiung_id}");
    // What the public hears: one warning per hazard and area, as a single process makes it (`W-{first alert id}`).
    let (nantou_warning_topic, nantou_warning) =
        watch.until("the Shenmu warning", |_, v| is_warning(v, "dfa-xinyi-shenmu")).await;
    let nantou_wid = format!("W-{nantou_id}");
    assert_eq!(nantou_warning["id"], nantou_wid.as_str(), "{nantou_warning}");
    assert_eq!(nantou_warning_topic, format!("alerts/10008/{nantou_wid}"));
    assert_eq!(nantou_warning["contributors"][0]["alert_id"], nantou_id.as_str(), "{nantou_warning}");
    let (_, kaohsiung_warning) = watch.until("the Xiaolin warning", |_, v| is_warning(v, "dfa-jiaxian-xiaolin")).await;
    let kaohsiung_wid = format!("W-{kaohsiung_id}");
    assert_eq!(kaohsiung_warning["id"], kaohsiung_wid.as_str(), "{kaohsiung_warning}");
    // Neither worker saw the other's area.
    assert!(heavy_rain_in(&nantou.alerts(), "dfa-jiaxian-xiaolin").is_empty());
    let kaohsiung_zones = ["dfa-jiaxian-xiaolin", "dfa-namasia-minsheng", "restricted-linyuan", "township-jiaxian"];
    let theirs = kaohsiung.alerts();
    assert!(theirs.iter().all(|a| kaohsiung_zones.iter().any(|z| a["area_id"] == *z)), "{theirs:?}");
    assert_eq!(kaohsiung.metric("dc_ingest_readings_accepted_total"), 1.0, "only its own region's reading");

    // The writer refused the bad publishes with reasons and counters; the good readings beside them went through.
    let letters = http_get(writer.http, "/api/v1/dead-letters", Some(TOKEN)).unwrap().1;
    assert!(letters.contains("malformed_json") && letters.contains("unknown_device"), "{letters}");
    assert_eq!(writer.metric("dc_ingest_readings_rejected_total{reason=\"malformed_json\"}"), 1.0);
    assert_eq!(writer.metric("dc_cluster_routed_total{outcome=\"refused\"}"), 2.0);
    assert_eq!(writer.metric("dc_cluster_routed_total{outcome=\"forwarded\"}"), 2.0);

    // A fan-out node started now learns the alerts from the broker's retained messages.
    let fanout = node("fanout1", &["--role", "fanout"]);
    let ids = |snapshot: &Value, key: &str| -> HashSet<String> {
        snapshot[key].as_array().unwrap().iter().filter_map(|a| a["id"].as_str().map(str::to_string)).collect()
    };
    let deadline = Instant::now() + WAIT;
    let snapshot = loop {
        let (_, snapshot) = Operator::connect_with_snapshot(fanout.http).await;
        let (alerts, warnings) = (ids(&snapshot, "alerts"), ids(&snapshot, "public_warnings"));
        if [&nantou_id, &kaohsiung_id].iter().all(|id| alerts.contains(*id))
            && [&nantou_wid, &kaohsiung_wid].iter().all(|id| warnings.contains(*id))
        {
            break snapshot;
        }
        assert!(Instant::now() < deadline, "fan-out never applied the retained alerts: {snapshot}\n{}", fanout.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let signed_by: Vec<_> = snapshot["alerts"].as_array().unwrap().iter().map(|a| a["signed_by"].clone()).collect();
    assert!(signed_by.contains(&json!("nantou")) && signed_by.contains(&json!("kaohsiung")), "{snapshot}");
    let mut shenmu = Citizen::connect_to(fanout.http).await;
    shenmu.subscribe(json!([{"lat": SHENMU.0, "lon": SHENMU.1}]), "zh-TW", json!([])).await;
    let mut xiaolin = Citizen::connect_to(fanout.http).await;
    xiaolin.subscribe(json!([{"lat": XIAOLIN.0, "lon": XIAOLIN.1}]), "en", json!([])).await;
    let mut taipei = Citizen::connect_to(fanout.http).await;
    taipei.subscribe(json!([{"lat": TAIPEI.0, "lon": TAIPEI.1}]), "zh-TW", json!([])).await;
    // Citizens get the public warnings, exactly as citizens of a single process would, and never the operators' alerts.
    let mut shenmu_frames = frames_until(&mut shenmu, "the Shenmu warning", |f| f["id"] == nantou_wid.as_str()).await;
    let warning = shenmu_frames.last().unwrap().clone();
    assert!(warning["headline"].as_str().unwrap().contains("豪雨"));
    assert_eq!(warning["contributors"][0]["alert_id"], nantou_id.as_str(), "{warning}");
    let got = frames_until(&mut xiaolin, "the Xiaolin warning", |f| f["id"] == kaohsiung_wid.as_str()).await;
    assert!(got.iter().all(|f| f["id"] != nantou_wid.as_str()), "{got:?}");
    assert!(got.last().unwrap()["headline"].as_str().unwrap().contains("Extremely heavy rain"), "{got:?}");
    assert!(shenmu_frames.iter().chain(&got).all(|f| f["id"].as_str().unwrap().starts_with("W-")), "{got:?}");

    // A stranger with publish rights on the broker: a well-formed but unsigned warning for Shenmu, one signed with a
    // key nobody trusts, the Kaohsiung worker's key signing for Nantou, and the real signed warning moved to another
    // id. None reaches a citizen; each is counted by its reason; the real warnings stay.
    let (stranger, _) = mqtt_client(&broker, "stranger").await;
    let received = received_total(&fanout);
    let forged = |id: &str| {
        let mut frame = nantou_warning.clone();
        frame["id"] = json!(id);
        frame["version"] = json!(1);
        frame["headlines"] = json!({"zh-TW": "假警報：立即撤離", "en": "FORGED: evacuate now"});
        frame["headline"] = json!("假警報：立即撤離");
        frame.to_string()
    };
    let unsigned = "alerts/10008/W-FORGED-1";
    stranger.publish(unsigned, QoS::AtLeastOnce, false, forged("W-FORGED-1")).await.unwrap();
    let untrusted = disaster_cloud::scale_out::signing::AlertSigner::generate();
    let unknown = "alerts/10008/W-FORGED-2";
    stranger.publish(unknown, QoS::AtLeastOnce, false, untrusted.seal(unknown, &forged("W-FORGED-2"))).await.unwrap();
    let kaohsiung_signer =
        disaster_cloud::scale_out::signing::AlertSigner::from_pem(&std::fs::read_to_string(&kaohsiung_key).unwrap())
            .unwrap();
    let foreign = "alerts/10008/W-FORGED-3";
    stranger
        .publish(foreign, QoS::AtLeastOnce, false, kaohsiung_signer.seal(foreign, &forged("W-FORGED-3")))
        .await
        .unwrap();
    let moved = "alerts/10008/W-FORGED-4";
    stranger.publish(moved, QoS::AtLeastOnce, false, watch.raw[&nantou_warning_topic].clone()).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while received_total(&fanout) < received + 4.0 {
        assert!(Instant::now() < deadline, "the fan-out never received the stranger's messages:\n{}", fanout.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut late = Citizen::connect_to(fanout.http).await;
    late.subscribe(json!([{"lat": SHENMU.0, "lon": SHENMU.1}]), "en", json!([])).await;
    let replayed = frames_until(&mut late, "the real warning", |f| f["id"] == nantou_wid.as_str()).await;
    while let Some(f) = shenmu.next_json(Duration::from_secs(1)).await {
        shenmu_frames.push(f);
    }
    for f in shenmu_frames.iter().chain(&replayed) {
        assert!(!f["id"].as_str().unwrap().contains("FORGED"), "a forged warning reached a citizen: {f}");
    }
    let (_, snapshot) = Operator::connect_with_snapshot(fanout.http).await;
    assert!(!snapshot.to_string().contains("FORGED"), "{snapshot}");
    for reason in ["unsigned", "unknown_key", "outside_region", "bad_signature"] {
        wait_outcome(&fanout, reason, 1.0);
    }

    // Cancelling on the owning worker updates the retained message and reaches the citizen.
    let (status, body) =
        http_request(kaohsiung.http, "POST", &format!("/api/v1/alerts/{kaohsiung_id}/cancel"), Some(TOKEN), None)
            .unwrap();
    assert_eq!(status, 200, "{body}");
    let got = frames_until(&mut xiaolin, "the cancellation", |f| {
        f["id"] == kaohsiung_wid.as_str() && f["state"] == "cancelled"
    })
    .await;
    assert!(got.iter().all(|f| f["id"] != nantou_wid.as_str()), "{got:?}");
    watch.until("cancelled", |t, v| t == kaohsiung_topic && v["state"] == "cancelled").await;

    // A malformed message on the alert topics is refused and counted; the picture survives it.
    device.publish(format!("alerts/10008/{nantou_id}"), QoS::AtLeastOnce, false, "garbage").await.unwrap();
    let deadline = Instant::now() + WAIT;
    while fanout.metric("dc_cluster_alerts_received_total{outcome=\"malformed\"}") < 1.0 {
        assert!(Instant::now() < deadline, "the malformed alert message was not counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, snapshot) = Operator::connect_with_snapshot(fanout.http).await;
    assert!(snapshot["alerts"].as_array().unwrap().iter().any(|a| a["id"] == nantou_id.as_str()), "{snapshot}");

    // A worker killed with SIGKILL once its rule windows are on disk (the engine snapshot, every minute): what is
    // published meanwhile waits on the broker under its persistent session.
    let snapshot_file = nantou.data_dir.join("alerts").join("engine.snapshot.json");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !snapshot_file.exists() {
        assert!(Instant::now() < deadline, "no engine snapshot in 90 s:\n{}", nantou.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    nantou.kill9();
    let forwarded = writer.metric("dc_cluster_routed_total{outcome=\"forwarded\"}");
    rain(&device, "RG0001", 400.0, now_ms()).await;
    let deadline = Instant::now() + WAIT;
    while writer.metric("dc_cluster_routed_total{outcome=\"forwarded\"}") <= forwarded {
        assert!(Instant::now() < deadline, "the writer never forwarded the reading");
        std::thread::sleep(Duration::from_millis(50));
    }
    nantou.restart();
    // Restored from its journal and windows (120 + 400 mm in 24 h: 超大豪雨; without the 120 it would be 大豪雨), it
    // escalates the same alert: a new version of the same id, never a second alert.
    let more = frames_until(&mut shenmu, "the escalation", |f| {
        f["id"] == nantou_wid.as_str() && f["version"].as_u64() > Some(1)
    })
    .await;
    shenmu_frames.extend(more);
    let (_, latest) = watch
        .until("escalated", |t, v| *t == format!("alerts/10008/{nantou_id}") && v["version"].as_u64() > Some(1))
        .await;
    assert_eq!((latest["state"].as_str(), latest["worker"].as_str()), (Some("updated"), Some("nantou")), "{latest}");
    assert_eq!(latest["level"], "超大豪雨", "the 24 h window lost the reading before the kill: {latest}");
    let after = nantou.alerts();
    let heavy: Vec<_> = heavy_rain_in(&after, "dfa-xinyi-shenmu");
    assert_eq!(heavy.len(), 1, "one heavy-rain alert for Shenmu after the restart: {after:?}");
    assert_eq!(heavy[0]["id"], nantou_id.as_str());

    // Nothing twice: every (id, version) reached the Shenmu citizen once, and Taipei got nothing at all.
    while let Some(f) = shenmu.next_json(Duration::from_secs(2)).await {
        shenmu_frames.push(f);
    }
    let mut seen = HashSet::new();
    for f in &shenmu_frames {
        assert!(seen.insert((f["id"].to_string(), f["version"].to_string())), "duplicate frame {f}: {shenmu_frames:?}");
    }
    let heavy_ids: HashSet<_> =
        shenmu_frames.iter().filter(|f| f["event"] == "heavy_rain").map(|f| f["id"].clone()).collect();
    assert_eq!(heavy_ids.len(), 1, "{shenmu_frames:?}");
    assert!(taipei.next_json(Duration::from_secs(1)).await.is_none(), "Taipei must receive nothing");
}

/// The config both tests run with: the demo's, without outbound deliveries (not under test here; they would only
/// slow the processes down). Partner sources stay: the shipped debris-flow rule names the slope agency's.
fn test_config(name: &str) -> PathBuf {
    config_copy(name, |text| text.replace("dissemination = \"dissemination.toml\"\n", ""))
}

/// The `dc_ingest_*` samples that describe what the pipeline made of its input.
fn ingest_counters(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .filter(|l| {
            [
                "dc_ingest_payloads_total",
                "dc_ingest_readings_",
                "dc_ingest_status_messages_total",
                "dc_ingest_dead_letters",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_behind_the_broker_counts_exactly_like_the_front_door() {
    let broker = Mosquitto::start();
    let config = test_config("scale-out-single");
    let embedded = common::Server::serve(&config);
    let dir = std::env::temp_dir().join(format!("dc-scale-out-single-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // No regions: one worker consumes the device topics directly.
    let (key, _) = worker_key(&dir, "solo");
    let worker = Node::start(
        &config,
        &dir.join("solo"),
        &["--upstream", &broker.url(), "--client-id", "solo", "--signing-key", key.to_str().unwrap()],
    );

    let ts = now_ms();
    let publishes = [
        ("readings", format!(r#"{{"ts":{ts},"values":{{"rain_mm":3}}}}"#)),
        ("readings", "{not json".to_string()),
        ("readings", r#"{"values":{"rain_mm":-5}}"#.to_string()),
        ("readings", r#"{"values":{"foo_mm":1}}"#.to_string()),
        ("readings", format!(r#"[{{"ts":{ts},"values":{{"rain_mm":1}}}},{{"values":{{"rain_mm":"x"}}}}]"#)),
        ("readings", format!(r#"[{{"bn":"urn:dev:RG0001:","bt":{},"n":"rain_mm","u":"mm","v":2}}]"#, ts / 1000)),
        ("status", r#"{"battery_v":3.7}"#.to_string()),
    ];
    let mut device =
        common::Device::connect(embedded.mqtt, "RG0001", &common::device_password("RG0001")).await.unwrap();
    let (upstream_device, _) = mqtt_client(&broker, "RG0001").await;
    for (leaf, payload) in &publishes {
        device.publish(&format!("sensors/RG0001/{leaf}"), payload.clone()).await;
        upstream_device
            .publish(format!("sensors/RG0001/{leaf}"), QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
    }
    device.wait_acks(publishes.len()).await;
    let deadline = Instant::now() + WAIT;
    while worker.metric("dc_ingest_payloads_total") < publishes.len() as f64 {
        assert!(Instant::now() < deadline, "the worker did not consume every publish:\n{}", worker.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let front_door = ingest_counters(&embedded.get("/metrics").1);
    let upstream = ingest_counters(&http_get(worker.http, "/metrics", Some(TOKEN)).unwrap().1);
    assert!(front_door.iter().any(|l| l.starts_with("dc_ingest_readings_accepted_total 3")), "{front_door:#?}");
    assert!(front_door.iter().any(|l| l.contains("malformed_json\"} 1")), "{front_door:#?}");
    assert_eq!(upstream, front_door, "same input, same counters");
    let reasons = |body: String| -> Vec<String> {
        let v: Value = serde_json::from_str(&body).unwrap();
        v["dead_letters"].as_array().unwrap().iter().map(|d| d["reason"].as_str().unwrap().to_string()).collect()
    };
    let theirs = reasons(embedded.get("/api/v1/dead-letters").1);
    assert_eq!(theirs.len(), 4, "{theirs:?}");
    assert_eq!(reasons(http_get(worker.http, "/api/v1/dead-letters", Some(TOKEN)).unwrap().1), theirs);
}
