//! kill -9 and restart on the same data dir: an alert raised from readings is still active with the same id and
//! version, is not raised again (operators' snapshot, CAP feed), and the rain windows come back — readings after the
//! restart complete a level that rain before it began.

mod common;

use std::time::Duration;

use common::{device_password, now_ms, Device, Server};
use serde_json::Value;

const GAUGE: &str = "RG0001";
const TOPIC: &str = "sensors/RG0001/readings";
const MIN: i64 = 60_000;
const WAIT: Duration = Duration::from_secs(20);

async fn rain(server: &Server, ts: i64, mm: f64) {
    let mut gauge = Device::connect(server.mqtt, GAUGE, &device_password(GAUGE)).await.unwrap();
    gauge.publish(TOPIC, format!(r#"{{"ts":{ts},"values":{{"rain_mm":{mm}}}}}"#)).await;
    gauge.wait_acks(1).await;
}

fn heavy_rain_alerts(snapshot: &Value) -> Vec<Value> {
    snapshot["alerts"].as_array().unwrap().iter().filter(|a| a["rule"] == "heavy-rain").cloned().collect()
}

/// How many entries of the CAP feed link a message of alert `id` at `version`.
fn feed_entries(server: &Server, id: &str, version: u32) -> usize {
    let (status, feed) = common::http_get(server.http, "/cap/feed.atom", None).unwrap();
    assert_eq!(status, 200, "{feed}");
    // The public hears the alert as its hazard's public warning, `W-` + its id.
    feed.matches(&format!("/cap/W-{id}.{version}.xml\"")).count()
}

#[tokio::test]
async fn after_kill_9_the_alert_is_the_same_and_the_windows_continue() {
    let data_dir = std::env::temp_dir().join(format!("dc-kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let server = Server::start_in(&data_dir);
    let mut operator = server.operator().await;
    // Within alerting.stale_after_s (15 min) of now: readings older than that raise nothing public on their own
    // (two clocks, docs/API.md), and this test follows the public CAP feed across the restart.
    let t0 = now_ms() - 12 * MIN;

    // 20 + 25 mm within the hour: 大雨 (≥ 40 mm / 1 h).
    rain(&server, t0, 20.0).await;
    rain(&server, t0 + 5 * MIN, 25.0).await;
    let raised = operator
        .alert_where(Duration::from_secs(10), |m| m["rule"] == "heavy-rain" && m["state"] == "raised")
        .await
        .unwrap_or_else(|| panic!("no alert; log:\n{}", server.log()));
    assert_eq!(raised["level"], "大雨");
    let id = raised["id"].as_str().unwrap().to_string();
    // Before the kill: the CAP message is in the feed and the readings are in the store.
    server.wait_until("the CAP message in the feed", WAIT, || feed_entries(&server, &id, 1) == 1).await;
    let history = format!("/api/v1/sensors/{GAUGE}/readings?metric=rain_mm&from={}&to={}", t0 - 1, t0 + 10 * MIN);
    server
        .eventually("the readings in the store", WAIT, || {
            let (_, body) = server.get(&history);
            let v: Value = serde_json::from_str(&body).ok()?;
            (v["points"].as_array()?.len() == 2).then_some(())
        })
        .await;

    server.kill();
    let server = Server::start_in(&data_dir);

    // The same alert, same version, once.
    let snapshot = server.snapshot().await;
    let alerts = heavy_rain_alerts(&snapshot);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!((alerts[0]["id"].as_str(), alerts[0]["version"].as_u64()), (Some(id.as_str()), Some(1)));
    assert_eq!(alerts[0]["state"], "raised");
    let (_, list) = server.get("/api/v1/alerts");
    let list: Value = serde_json::from_str(&list).unwrap();
    let all = list["alerts"].as_array().unwrap().iter().filter(|a| a["rule"] == "heavy-rain").count();
    assert_eq!(all, 1, "no second alert for the hazard: {list}");
    assert_eq!(feed_entries(&server, &id, 1), 1, "the CAP feed has the message once");
    assert_eq!(feed_entries(&server, &id, 2), 0, "and no new version");

    // 60 mm more: 105 mm in three hours is 豪雨 only with the 45 mm from before the kill (60 mm alone stays 大雨).
    let mut operator = server.operator().await;
    rain(&server, t0 + 10 * MIN, 60.0).await;
    let update = operator
        .alert_where(Duration::from_secs(10), |m| m["rule"] == "heavy-rain")
        .await
        .unwrap_or_else(|| panic!("the windows did not survive; log:\n{}", server.log()));
    assert_eq!(update["state"], "updated", "the restored alert is updated, not raised again: {update}");
    assert_eq!((update["id"].as_str(), update["version"].as_u64()), (Some(id.as_str()), Some(2)));
    assert_eq!(update["level"], "豪雨");
    assert_eq!(update["value"], 105.0);
    let _ = std::fs::remove_dir_all(&data_dir);
}
