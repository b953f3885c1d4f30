//! Operators' history from the embedded store: `GET /api/v1/sensors/{id}/readings?metric=&from=&to=&step=`.

mod common;

use common::{device_password, now_ms, Device, Server};

#[tokio::test]
async fn readings_come_back_raw_and_downsampled() {
    let server = Server::start();
    let mut device = Device::connect(server.mqtt, "RG0002", &device_password("RG0002")).await.unwrap();
    let t0 = now_ms() - 3_600_000;
    for i in 0..12 {
        device
            .publish(
                "sensors/RG0002/readings",
                format!(r#"{{"ts":{},"values":{{"rain_mm":{}}}}}"#, t0 + i * 300_000, i),
            )
            .await;
    }
    device.wait_acks(12).await;
    let path = format!("/api/v1/sensors/RG0002/readings?metric=rain_mm&from={t0}&to={}", t0 + 3_600_000);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let raw: serde_json::Value = loop {
        let (status, body) = server.get(&path);
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["points"].as_array().map_or(0, Vec::len) == 12 || std::time::Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let points = raw["points"].as_array().expect("raw points");
    assert_eq!(points.len(), 12, "{raw}");
    assert_eq!(points[3]["value"], 3.0);
    assert_eq!(points[3]["ts"], t0 + 3 * 300_000);

    // Hourly buckets... of 30 minutes: six readings each, sums 0+…+5 and 6+…+11.
    let (status, body) = server.get(&format!("{path}&step=1800000"));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let buckets = v["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 2, "{v}");
    assert_eq!(
        (buckets[0]["sum"].as_f64(), buckets[0]["max"].as_f64(), buckets[0]["count"].as_u64()),
        (Some(15.0), Some(5.0), Some(6))
    );
    assert_eq!((buckets[1]["sum"].as_f64(), buckets[1]["min"].as_f64()), (Some(51.0), Some(6.0)));
}

#[tokio::test]
async fn bad_history_queries_name_the_parameter() {
    let server = Server::start();
    for (path, status, needle) in [
        ("/api/v1/sensors/RG0002/readings?metric=rain", 400, "metric"),
        ("/api/v1/sensors/RG0002/readings", 400, "metric"),
        ("/api/v1/sensors/RG0002/readings?metric=rain_mm&from=yesterday", 400, "from"),
        ("/api/v1/sensors/RG0002/readings?metric=rain_mm&from=2000&to=1000", 400, "before"),
        ("/api/v1/sensors/RG0002/readings?metric=rain_mm&step=-5", 400, "step"),
        ("/api/v1/sensors/NOPE9/readings?metric=rain_mm", 404, "NOPE9"),
    ] {
        let (got, body) = server.get(path);
        assert_eq!(got, status, "{path} → {body}");
        assert!(body.contains(needle), "{path} → {body}");
    }
    let (status, _) = common::http_get(server.http, "/api/v1/sensors/RG0002/readings?metric=rain_mm", None).unwrap();
    assert_eq!(status, 401);
}
