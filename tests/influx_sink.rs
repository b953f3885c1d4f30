//! Readings reach a real time-series server through the InfluxDB v2 sink when `[influx]` is configured: Debian's
//! VictoriaMetrics accepts `/api/v2/write`; we read back with `/api/v1/export` and count what arrived.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{device_password, free_port, http_get, http_request, now_ms, Device, Server};

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
