//! Reloading the rules of a running server (`POST /api/v1/rules/reload`, SIGHUP) keeps the rain windows: rain that
//! fell before the reload counts toward the edited and the added rules after it. A broken file is refused with the
//! rule and the field named, and the rules that were running keep firing.

mod common;

use std::time::{Duration, Instant};

use common::{device_password, http_request, now_ms, Device, Server, TOKEN};
use serde_json::Value;

const GAUGE: &str = "RG0001";
const TOPIC: &str = "sensors/RG0001/readings";
const MIN: i64 = 60_000;

/// A rule added by the reload: two-hour rain, a window no rule had before.
const RAIN_2H: &str = r#"
[[rule]]
id = "rain-2h"
kind = "accumulation"
event = "heavy_rain"
metric = "rain_mm"
scope = { zone_kinds = ["debris_flow"] }
publish = "operators"

[[rule.levels]]
name = "兩小時雨量達標"
name_en = "Two-hour rain reached"
severity = "Moderate"
any = [{ window = "2h", at_least = 50 }]
"#;

fn reload(server: &Server, token: Option<&str>) -> (u16, Value) {
    let (status, body) = http_request(server.http, "POST", "/api/v1/rules/reload", token, Some("")).unwrap();
    (status, serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON: {body}")))
}

async fn rain(device: &mut Device, ts: i64, mm: f64) {
    device.publish(TOPIC, format!(r#"{{"ts":{ts},"values":{{"rain_mm":{mm}}}}}"#)).await;
    device.wait_acks(1).await;
}

#[tokio::test]
async fn a_reload_keeps_the_windows_and_a_broken_file_keeps_the_old_rules() {
    let config = common::config_copy("rules-reload", |t| t);
    let rules_file = config.with_file_name("rules.toml");
    let shipped = std::fs::read_to_string(&rules_file).unwrap();
    let server = Server::serve(&config);
    let mut operator = server.operator().await;
    let mut gauge = Device::connect(server.mqtt, GAUGE, &device_password(GAUGE)).await.unwrap();
    let t0 = now_ms() - 40 * MIN;

    // 30 mm: below every level.
    rain(&mut gauge, t0, 30.0).await;

    // Only admins reload.
    let (status, _) = reload(&server, None);
    assert_eq!(status, 401);

    // 大雨 now needs 50 mm in an hour instead of 40, and a two-hour rule is added.
    let edited =
        shipped.replacen("{ window = \"1h\", at_least = 40 }", "{ window = \"1h\", at_least = 50 }", 1) + RAIN_2H;
    assert_ne!(edited, shipped + RAIN_2H);
    std::fs::write(&rules_file, &edited).unwrap();
    let (status, summary) = reload(&server, Some(TOKEN));
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["added"], serde_json::json!(["rain-2h"]), "{summary}");
    assert_eq!(summary["changed"], serde_json::json!(["heavy-rain"]), "{summary}");
    assert_eq!(summary["removed"], serde_json::json!([]), "{summary}");
    let count = summary["rules"].as_u64().unwrap();
    assert!(count > 10, "{summary}");
    assert_eq!(server.metric(r#"dc_rules_reloads_total{result="ok"}"#), 1.0);

    // 42 mm in the hour: enough under the old 40 mm, not under the new 50 mm. Then 55 mm: both new rules fire, on
    // rain most of which fell before the reload.
    rain(&mut gauge, t0 + 10 * MIN, 12.0).await;
    rain(&mut gauge, t0 + 20 * MIN, 13.0).await;
    let heavy = operator
        .alert_where(Duration::from_secs(10), |m| m["event"] == "heavy_rain" && m["level"] == "大雨")
        .await
        .unwrap_or_else(|| panic!("no 大雨 after the reload; log:\n{}", server.log()));
    assert_eq!(heavy["state"], "raised");
    assert_eq!(heavy["value"], 55.0, "raised by the third reading, not the second: {heavy}");
    let (_, alerts) = server.get("/api/v1/alerts");
    let alerts: Value = serde_json::from_str(&alerts).unwrap();
    let two_hour: Vec<&Value> =
        alerts["alerts"].as_array().unwrap().iter().filter(|a| a["level"] == "兩小時雨量達標").collect();
    assert_eq!(two_hour.len(), 1, "the added rule fired on the kept window: {alerts}");
    assert_eq!(two_hour[0]["value"], 55.0);

    // A broken file: refused, rule and field named, the running rules untouched.
    let broken = edited.replacen("{ window = \"1h\", at_least = 50 }", "{ window = \"7m\", at_least = 50 }", 1);
    std::fs::write(&rules_file, &broken).unwrap();
    let (status, refusal) = reload(&server, Some(TOKEN));
    assert_eq!(status, 400, "{refusal}");
    assert_eq!(refusal["error"], "invalid_rules");
    assert_eq!(refusal["rule"], "heavy-rain");
    let message = refusal["message"].as_str().unwrap();
    assert!(
        message.contains("rules.toml") && message.contains("levels[0].any[1].window") && message.contains("7m"),
        "{message}"
    );
    assert_eq!(server.metric(r#"dc_rules_reloads_total{result="failed"}"#), 1.0);
    // Still the edited rules: 50 mm more makes 105 mm in three hours, 豪雨, on the same alert.
    rain(&mut gauge, t0 + 30 * MIN, 50.0).await;
    let update = operator
        .alert_where(Duration::from_secs(10), |m| m["event"] == "heavy_rain" && m["level"] == "豪雨")
        .await
        .unwrap_or_else(|| panic!("the old rules stopped; log:\n{}", server.log()));
    assert_eq!((update["id"].clone(), update["version"].clone()), (heavy["id"].clone(), 2.into()));

    // SIGHUP does the same as the API.
    std::fs::write(&rules_file, edited.replace("at_least = 50 }]\n", "at_least = 60 }]\n")).unwrap();
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.metric(r#"dc_rules_reloads_total{result="ok"}"#) < 2.0 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload; log:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.log().contains("SIGHUP"), "the log says who asked");
}
