//! The foundation path end to end: an MQTT publish of a rain reading → ingest → rules → an alert on the operator
//! websocket. Publishers: rumqttc and Debian's `mosquitto_pub`.

mod common;

use std::time::Duration;

use common::{device_password, now_ms, Device, Server};

const GAUGE: &str = "RG0001";
const TOPIC: &str = "sensors/RG0001/readings";

#[tokio::test]
async fn rumqttc_rain_reading_raises_an_alert_on_the_operator_socket() {
    let server = Server::start();
    let mut operator = server.operator().await;
    let mut device = Device::connect(server.mqtt, GAUGE, &device_password(GAUGE)).await.unwrap();
    // 45 mm within the hour crosses the CWA 大雨 level (≥ 40 mm / 1 h).
    let ts = now_ms();
    device.publish(TOPIC, format!(r#"{{"ts":{},"values":{{"rain_mm":20}}}}"#, ts - 600_000)).await;
    device.publish(TOPIC, format!(r#"{{"ts":{ts},"values":{{"rain_mm":25}}}}"#)).await;
    device.wait_acks(2).await;
    let alert = operator
        .alert_where(Duration::from_secs(10), |m| m["state"] == "raised")
        .await
        .unwrap_or_else(|| panic!("no alert; server log:\n{}", server.log()));
    assert_eq!(alert["event"], "heavy_rain");
    assert_eq!(alert["mode"], "Actual");
    assert_eq!(alert["severity"], "Moderate");
    assert_eq!(alert["area_id"], "dfa-xinyi-shenmu");
    assert_eq!(alert["version"], 1);
    assert!(alert["sent"].as_str().unwrap().ends_with("+08:00"), "{alert}");
    assert!(alert["headlines"]["en"].as_str().unwrap().contains("Heavy rain"), "{alert}");
    assert!(alert["area"]["type"].as_str().unwrap().contains("Polygon"), "{alert}");

    // More rain escalates the same alert (one alert per hazard), it does not raise a second.
    device.publish(TOPIC, format!(r#"{{"ts":{},"values":{{"rain_mm":70}}}}"#, ts + 1000)).await;
    let update = operator.alert_where(Duration::from_secs(10), |m| m["state"] == "updated").await.expect("an update");
    assert_eq!(update["id"], alert["id"]);
    assert_eq!(update["version"], 2);
    assert_eq!(update["severity"], "Severe");

    let (status, body) = server.get("/api/v1/alerts");
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    // One heavy-rain alert for the hazard (the debris-flow rules watch the same rain and raise their own).
    let heavy_rain = list["alerts"].as_array().unwrap().iter().filter(|a| a["event"] == "heavy_rain").count();
    assert_eq!(heavy_rain, 1, "{body}");
}

#[tokio::test]
async fn mosquitto_pub_rain_reading_raises_an_alert() {
    let server = Server::start();
    let mut operator = server.operator().await;
    // The exact line the README and the demo banner give (no `ts`: stamped on arrival).
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &server.mqtt.port().to_string()])
        .args(["-u", GAUGE, "-P", &device_password(GAUGE), "-q", "1"])
        .args(["-t", TOPIC, "-m", r#"{"values":{"rain_mm":120}}"#])
        .status()
        .expect("mosquitto_pub runs (Debian mosquitto-clients; scripts/test installs it)");
    assert!(status.success());
    let alert = operator
        .alert_where(Duration::from_secs(10), |m| m["state"] == "raised")
        .await
        .unwrap_or_else(|| panic!("no alert; server log:\n{}", server.log()));
    // 120 mm in an hour: 豪雨 (≥ 100 mm / 3 h).
    assert_eq!(alert["level"], "豪雨");
    assert_eq!(alert["severity"], "Severe");
}

#[tokio::test]
async fn malformed_payload_is_refused_counted_and_the_next_good_reading_goes_through() {
    let server = Server::start();
    let mut operator = server.operator().await;
    let before = server.metric(r#"dc_ingest_readings_rejected_total{reason="malformed_json"}"#);
    let mut device = Device::connect(server.mqtt, GAUGE, &device_password(GAUGE)).await.unwrap();
    device.publish(TOPIC, r#"{"ts": 1, "values": {"rain_mm": 12"#).await;
    device.publish(TOPIC, format!(r#"{{"ts":{},"values":{{"rain_mm":150}}}}"#, now_ms())).await;
    device.wait_acks(2).await;
    let alert = operator.alert_where(Duration::from_secs(10), |m| m["state"] == "raised").await;
    assert!(alert.is_some(), "the good reading after the bad one raised nothing; log:\n{}", server.log());
    let after = server.metric(r#"dc_ingest_readings_rejected_total{reason="malformed_json"}"#);
    assert_eq!(after - before, 1.0);
    let (_, letters) = server.get("/api/v1/dead-letters");
    assert!(letters.contains("malformed_json") && letters.contains("rain_mm"), "{letters}");
    let log = server.log();
    assert!(log.contains("malformed_json"), "the refusal is logged with its reason:\n{log}");
}

#[tokio::test]
async fn wrong_password_and_unknown_device_are_refused() {
    let server = Server::start();
    assert!(Device::connect(server.mqtt, GAUGE, "not-the-password").await.is_err());
    assert!(Device::connect(server.mqtt, "NOSUCH1", "whatever").await.is_err());
    assert!(server.metric(r#"dc_ingest_connections_refused_total{reason="bad_password"}"#) >= 1.0);
    assert!(server.metric(r#"dc_ingest_connections_refused_total{reason="unknown_device"}"#) >= 1.0);
}

#[tokio::test]
async fn operator_endpoints_need_the_token() {
    let server = Server::start();
    let (status, body) = common::http_get(server.http, "/api/v1/alerts", None).unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, _) = common::http_get(server.http, "/api/v1/alerts", Some("wrong")).unwrap();
    assert_eq!(status, 401);
    let (status, _) = common::http_get(server.http, "/ws/operator", None).unwrap();
    assert_eq!(status, 401);
    let (status, _) = common::http_get(server.http, "/healthz", None).unwrap();
    assert_eq!(status, 200);
    assert!(server.metric(r#"dc_http_refused_total{reason="unauthenticated"}"#) >= 3.0);
}
