//! Readings reach a real time-series server through the InfluxDB v2 sink when `[influx]` is configured: Debian's
//! VictoriaMetrics accepts `/api/v2/write`; we read back with `/api/v1/export` and count what arrived.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{device_password, free_port, http_get, http_request, now_ms, Device, Server, TOKEN};

struct VictoriaMetrics {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_victoria_metrics() -> VictoriaMetrics {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = std::env::temp_dir().join(format!("dc-vm-{}-{}", std::process::id(), addr.port()));
    let child = Command::new("victoria-metrics")
        .arg(format!("-storageDataPath={}", dir.display()))
        .arg(format!("-httpListenAddr={addr}"))
        .arg("-retentionPeriod=100y")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("victoria-metrics runs (Debian package victoria-metrics; scripts/test installs it)");
    let vm = VictoriaMetrics { child, addr };
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(addr, "/health", None).is_none_or(|(s, _)| s != 200) {
        assert!(Instant::now() < deadline, "victoria-metrics did not become healthy");
        std::thread::sleep(Duration::from_millis(100));
    }
    vm
}

#[tokio::test]
async fn readings_arrive_in_victoria_metrics_with_tags() {
    let vm = start_victoria_metrics();
    let config = common::config_copy("influx", |t| {
        format!(
            "{t}\n[influx]\nurl = \"http://{}\"\norg = \"o\"\nbucket = \"b\"\ntoken_env = \"DC_TEST_TOKEN\"\nflush_interval_ms = 200\n",
            vm.addr
        )
    });
    let server = Server::serve(&config);
    let mut device = Device::connect(server.mqtt, "RG0002", &device_password("RG0002")).await.unwrap();
    let t0 = now_ms() - 600_000;
    for i in 0..50 {
        device
            .publish("sensors/RG0002/readings", format!(r#"{{"ts":{},"values":{{"rain_mm":{}}}}}"#, t0 + i * 1000, i))
            .await;
    }
    device.wait_acks(50).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let _ = http_get(vm.addr, "/internal/force_flush", None);
        let (_, body) =
            http_request(vm.addr, "POST", "/api/v1/export?match[]=%7B__name__%3D~%22rain_gauge_.*%22%7D", None, None)
                .unwrap();
        let count: usize = body
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| v["values"].as_array().map_or(0, Vec::len))
            .sum();
        if count >= 50 || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let series: serde_json::Value = serde_json::from_str(body.lines().next().expect("a series")).unwrap();
    assert_eq!(series["metric"]["__name__"], "rain_gauge_rain_mm", "{series}");
    assert_eq!(series["metric"]["sensor_id"], "RG0002");
    assert_eq!(series["metric"]["agency"], "CWA");
    assert!(series["metric"]["h3"].as_str().is_some_and(|h| h.len() == 15), "{series}");
    let values: Vec<f64> = series["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(values, (0..50).map(f64::from).collect::<Vec<_>>());
    let stamps: Vec<i64> = series["timestamps"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(stamps.first(), Some(&t0));
}

/// Every series VictoriaMetrics holds whose name matches `name_regex`, as `/api/v1/export` gives them (one JSON
/// object per series: `metric` labels, `values`, `timestamps`).
fn export(vm: &VictoriaMetrics, name_regex: &str) -> Vec<serde_json::Value> {
    let _ = http_get(vm.addr, "/internal/force_flush", None);
    let selector = format!("{{__name__=~\"{name_regex}\"}}");
    let path = format!("/api/v1/export?match[]={}", url_encode(&selector));
    let (status, body) = http_request(vm.addr, "POST", &path, None, None).expect("victoria-metrics answers");
    assert_eq!(status, 200, "{body}");
    body.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn points(series: &[serde_json::Value]) -> usize {
    series.iter().map(|s| s["values"].as_array().map_or(0, Vec::len)).sum()
}

/// Waits until the series matching `name_regex` hold at least `n` points (or 20 s pass), and returns them.
async fn wait_points(vm: &VictoriaMetrics, name_regex: &str, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let series = export(vm, name_regex);
        if points(&series) >= n || Instant::now() > deadline {
            return series;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Issue 27: a sensor registered over the API was written as `unregistered_<metric>` until a restart, which split one
/// sensor's history into two series. The sink now hears every registry change as it happens: the new sensor's first
/// reading already has its own measurement and tags, and a later update (a new agency) moves the tags at once.
#[tokio::test]
async fn a_sensor_registered_over_the_api_reaches_the_sink_under_its_own_name_at_once() {
    let vm = start_victoria_metrics();
    let config = common::config_copy("influx-registry", |t| {
        format!(
            "{t}\n[influx]\nurl = \"http://{}\"\norg = \"o\"\nbucket = \"b\"\ntoken_env = \"DC_TEST_TOKEN\"\nflush_interval_ms = 200\n",
            vm.addr
        )
    });
    // AQ0001 has a device login (devices.toml) but is left out of the sensor registry: an operator registers it.
    let sensors = config.parent().unwrap().join("sensors.toml");
    let text = std::fs::read_to_string(&sensors).unwrap();
    let start = text.find("[[sensor]]\nid = \"AQ0001\"").expect("AQ0001 in sensors.toml");
    let end = text[start + 1..].find("[[sensor]]").map_or(text.len(), |i| start + 1 + i);
    std::fs::write(&sensors, format!("{}{}", &text[..start], &text[end..])).unwrap();
    let server = Server::serve(&config);
    let record = |agency: &str| {
        format!(
            r#"{{"id":"AQ0001","kind":"air_quality","lat":23.792,"lon":120.2,"interval_s":3600,"agency":"{agency}","metrics":["pm25_ugm3"]}}"#
        )
    };
    let (status, body) =
        http_request(server.http, "POST", "/api/v1/sensors", Some(TOKEN), Some(&record("MOENV"))).unwrap();
    assert_eq!(status, 201, "{body}");

    let mut device = Device::connect(server.mqtt, "AQ0001", &device_password("AQ0001")).await.unwrap();
    let t0 = now_ms() - 600_000;
    let publish = |i: i64| format!(r#"{{"ts":{},"values":{{"pm25_ugm3":{}}}}}"#, t0 + i * 1000, 10 + i);
    for i in 0..20 {
        device.publish("sensors/AQ0001/readings", publish(i)).await;
    }
    device.wait_acks(20).await;
    let series = wait_points(&vm, "air_quality_pm25_ugm3|unregistered_.*", 20).await;
    let names: Vec<&str> = series.iter().filter_map(|s| s["metric"]["__name__"].as_str()).collect();
    assert_eq!(names, ["air_quality_pm25_ugm3"], "one series under the sensor's own measurement: {series:?}");
    assert_eq!(points(&series), 20, "{series:?}");
    assert_eq!(series[0]["metric"]["agency"], "MOENV");
    assert_eq!(series[0]["metric"]["sensor_id"], "AQ0001");
    assert!(series[0]["metric"]["h3"].as_str().is_some_and(|h| h.len() == 15), "{series:?}");

    // An update (the sensor changes hands) reaches the sink as it is made: the next readings carry the new agency.
    let (status, body) =
        http_request(server.http, "PUT", "/api/v1/sensors/AQ0001", Some(TOKEN), Some(&record("EPA"))).unwrap();
    assert_eq!(status, 200, "{body}");
    for i in 20..30 {
        device.publish("sensors/AQ0001/readings", publish(i)).await;
    }
    device.wait_acks(10).await;
    let series = wait_points(&vm, "air_quality_pm25_ugm3|unregistered_.*", 30).await;
    assert_eq!(points(&series), 30, "{series:?}");
    let by_agency = |agency: &str| {
        series
            .iter()
            .filter(|s| s["metric"]["agency"] == agency)
            .map(|s| points(std::slice::from_ref(s)))
            .sum::<usize>()
    };
    assert_eq!((by_agency("MOENV"), by_agency("EPA")), (20, 10), "{series:?}");
    assert!(series.iter().all(|s| s["metric"]["__name__"] == "air_quality_pm25_ugm3"), "{series:?}");
}
