//! Partner agencies' warnings as rule conditions, through the binary with the shipped configuration: the slope
//! agency (`swcb`, HMAC-signed pushes) covering an area gives our debris-flow yellow there; our own rain reaching the
//! area's threshold confirms it to red. Either alone never gives red. Pushed warnings survive a kill -9.

mod common;

use std::time::{Duration, Instant};

use common::{device_password, http_request_with, now_ms, Device, Operator, Server};
use serde_json::Value;

const SWCB_YELLOW: &str = include_str!("../inbound/src/tests/fixtures/swcb_debris_flow_yellow.xml");
/// The SWCB source's secret in the test deployment ([`common::config_copy`] reads it from the environment).
const SWCB_SECRET: &str = common::TEST_HMAC_SECRET_ENV.1;
/// The shipped demo's secret for the `swcb` push source and bearer token for `demo-agency` (config/inbound.toml):
/// `demo` keeps them, `serve` refuses them.
const DEMO_SWCB_SECRET: &str = "demo-swcb-secret";
const DEMO_AGENCY_TOKEN: &str = "demo-inbound-token";
const SHENMU: &str = "dfa-xinyi-shenmu";

/// The SWCB yellow fixture, sent a minute ago, expiring `expires_in_s` from now, with its own identifier.
fn swcb_warning(identifier: &str, expires_in_s: i64) -> (String, String) {
    let sent = common::cap_time(-60);
    let xml = SWCB_YELLOW
        .replace("2026-11-26T19:00:00+08:00", &sent)
        .replace("2026-11-27T07:00:00+08:00", &common::cap_time(expires_in_s))
        .replace("SWCB-DebrisFlow-Yellow-20261126190000-1000812", identifier);
    (xml, sent)
}

/// A Cancel of `identifier` (sent at `sent`).
fn swcb_cancel(identifier: &str, sent: &str) -> String {
    let (xml, _) = swcb_warning(&format!("{identifier}-cancel"), 3600);
    xml.replacen("<msgType>Alert</msgType>", "<msgType>Cancel</msgType>", 1).replacen(
        "<scope>Public</scope>",
        &format!("<scope>Public</scope>\n  <references>swcb@swcb.gov.tw,{identifier},{sent}</references>"),
        1,
    )
}

/// POSTs a CAP message signed as the slope agency; (status, JSON answer).
fn push_signed(server: &Server, xml: &str, secret: &str) -> (u16, Value) {
    let signature = dissemination::signature_header(secret.as_bytes(), now_ms() / 1000, xml.as_bytes());
    let headers = [("X-DC-Signature", signature), ("Content-Type", "application/cap+xml".to_string())];
    let (status, body) = http_request_with(server.http, "POST", "/api/v1/cap/inbound", &headers, Some(xml)).unwrap();
    (status, serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON: {body}")))
}

async fn rain_at_shenmu(server: &Server, mm: f64) {
    let mut gauge = Device::connect(server.mqtt, "RG0001", &device_password("RG0001")).await.unwrap();
    gauge.publish("sensors/RG0001/readings", format!(r#"{{"ts":{},"values":{{"rain_mm":{mm}}}}}"#, now_ms())).await;
    gauge.wait_acks(1).await;
}

/// The next frame of the public debris-flow rule (`debris-flow`) for Shenmu in `state`.
async fn debris_frame(operator: &mut Operator, server: &Server, state: &str) -> Value {
    operator
        .alert_where(Duration::from_secs(15), |m| {
            m["rule"] == "debris-flow" && m["area_id"] == SHENMU && m["state"] == state
        })
        .await
        .unwrap_or_else(|| panic!("no debris-flow `{state}` at Shenmu; log:\n{}", server.log()))
}

/// Debris-flow alerts at Shenmu as `GET /api/v1/alerts` lists them.
fn debris_alerts(server: &Server) -> Vec<Value> {
    let (_, body) = server.get("/api/v1/alerts");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == "debris-flow" && a["area_id"] == SHENMU)
        .cloned()
        .collect()
}

/// The CAP message of a version of the public warning an alert opened (`W-` + its id), once dissemination has
/// written it.
async fn cap_message(server: &Server, id: &str, version: u64) -> String {
    let path = format!("/cap/W-{id}.{version}.xml");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, xml) = common::http_get(server.http, &path, None).unwrap();
        if status == 200 {
            return xml;
        }
        assert!(Instant::now() < deadline, "{path}: {status} {xml}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_agencys_warning_alone_gives_yellow_and_our_rain_confirms_red() {
    let server = Server::serve(&common::config_copy("external-yellow-red", |t| t));
    let mut operator = server.operator().await;

    // A wrong signature changes nothing.
    let (xml, _) = swcb_warning("SWCB-e2e-1", 6 * 3600);
    let (status, answer) = push_signed(&server, &xml, "not-the-secret");
    assert_eq!((status, answer["error"].as_str()), (401, Some("bad_signature")), "{answer}");
    let (status, answer) = push_signed(&server, &xml, SWCB_SECRET);
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("raised")), "{answer}");

    let yellow = debris_frame(&mut operator, &server, "raised").await;
    assert_eq!(yellow["severity"], "Severe", "{yellow}");
    // The partner's warning is on a map filtered to Shenmu, not on one filtered to Taipei.
    let partner = |snapshot: &Value| snapshot["external_alerts"].as_array().map_or(0, Vec::len);
    let (_, shenmu_map) = Operator::connect_filtered(server.http, "?bbox=120.90,23.50,120.95,23.54").await;
    assert_eq!(partner(&shenmu_map), 1, "{}", shenmu_map["external_alerts"]);
    let (_, taipei_map) = Operator::connect_filtered(server.http, "?bbox=121.40,24.90,121.80,25.20").await;
    assert_eq!(partner(&taipei_map), 0, "{}", taipei_map["external_alerts"]);
    assert!(yellow["level"].as_str().unwrap().contains("黃色"), "{yellow}");
    // Settled in the same step as the yellow: no red anywhere.
    assert!(debris_alerts(&server).iter().all(|a| a["severity"] != "Extreme"), "{:?}", debris_alerts(&server));
    // Its CAP message reads yellow, never red (the template bug this guards against).
    let id = yellow["id"].as_str().unwrap();
    let cap = cap_message(&server, id, 1).await;
    assert!(cap.contains("土石流黃色警戒") && cap.contains("Debris flow yellow alert"), "{cap}");
    assert!(!cap.contains("紅色") && !cap.to_lowercase().contains("red alert"), "{cap}");

    // Our rain reaches Shenmu's threshold (60 mm in an hour): the same alert escalates to red.
    rain_at_shenmu(&server, 65.0).await;
    let red = debris_frame(&mut operator, &server, "updated").await;
    assert_eq!((red["id"].as_str(), red["severity"].as_str()), (Some(id), Some("Extreme")), "{red}");
    assert!(red["level"].as_str().unwrap().contains("紅色"), "{red}");
}

#[tokio::test]
async fn our_rain_alone_is_not_red_until_the_agency_confirms() {
    let server = Server::serve(&common::config_copy("external-rain-first", |t| t));
    let mut operator = server.operator().await;

    rain_at_shenmu(&server, 65.0).await;
    let yellow = debris_frame(&mut operator, &server, "raised").await;
    assert!(yellow["level"].as_str().unwrap().contains("黃色"), "{yellow}");
    assert!(debris_alerts(&server).iter().all(|a| a["severity"] != "Extreme"), "{:?}", debris_alerts(&server));

    let (xml, _) = swcb_warning("SWCB-e2e-2", 6 * 3600);
    let (status, answer) = push_signed(&server, &xml, SWCB_SECRET);
    assert_eq!(status, 200, "{answer}");
    let red = debris_frame(&mut operator, &server, "updated").await;
    assert_eq!((red["id"].clone(), red["severity"].as_str()), (yellow["id"].clone(), Some("Extreme")), "{red}");
    // Operators see the agency's warning itself beside it, its source named.
    let snapshot = server.snapshot().await;
    assert_eq!(snapshot["external_alerts"][0]["source"], "swcb", "{snapshot}");
}

#[tokio::test]
async fn pushed_warnings_survive_a_kill_and_still_follow_cancel_and_expiry() {
    let config = common::config_copy("external-restart", |t| t);
    let data_dir = std::env::temp_dir().join(format!("dc-external-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let server = Server::serve_in(&config, &data_dir);
    let mut operator = server.operator().await;

    let (long, long_sent) = swcb_warning("SWCB-e2e-long", 6 * 3600);
    let (short, _) = swcb_warning("SWCB-e2e-short", 4);
    assert_eq!(push_signed(&server, &long, SWCB_SECRET).0, 200);
    let yellow = debris_frame(&mut operator, &server, "raised").await;
    let (status, answer) = push_signed(&server, &short, SWCB_SECRET);
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("raised")), "{answer}");
    // The short warning's expiry passes while the server is down.
    let expires_ms = now_ms() + 4_000;
    server.kill();
    while now_ms() <= expires_ms + 1_000 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let server = Server::serve_in(&config, &data_dir);
    let mut operator = server.operator().await;
    // Restored: the long warning; the short one ends at the first expiry tick after the start.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snapshot = server.snapshot().await;
        let external: Vec<&str> =
            snapshot["external_alerts"].as_array().unwrap().iter().filter_map(|a| a["identifier"].as_str()).collect();
        if external == ["SWCB-e2e-long"] {
            break;
        }
        assert!(Instant::now() < deadline, "external alerts after the restart: {external:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The composite it drives is the same alert, not raised again.
    let debris = debris_alerts(&server);
    assert_eq!(debris.len(), 1, "{debris:?}");
    assert_eq!((debris[0]["id"].clone(), debris[0]["version"].clone()), (yellow["id"].clone(), 1.into()));

    // A repeat is still a duplicate; a Cancel still finds the warning, and the yellow clears with it.
    let (_, answer) = push_signed(&server, &long, SWCB_SECRET);
    assert_eq!((answer["outcome"].as_str(), answer["why"].as_str()), (Some("ignored"), Some("duplicate")), "{answer}");
    let (status, answer) = push_signed(&server, &swcb_cancel("SWCB-e2e-long", &long_sent), SWCB_SECRET);
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("cancelled")), "{answer}");
    let cleared = debris_frame(&mut operator, &server, "cleared").await;
    assert_eq!(cleared["id"], yellow["id"]);
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test]
async fn the_demo_agency_cannot_cancel_the_slope_agencys_warning() {
    // The demo as shipped: `demo-agency` pushes with a bearer token, `swcb` signs its own warnings.
    let server = Server::start();
    let mut operator = server.operator().await;
    let (warning, sent) = swcb_warning("SWCB-e2e-foreign", 6 * 3600);
    assert_eq!(push_signed(&server, &warning, DEMO_SWCB_SECRET).0, 200);
    let yellow = debris_frame(&mut operator, &server, "raised").await;

    // The demo agency names SWCB as the sender of a Cancel of SWCB's warning: refused, counted, nothing changes.
    let cancel = swcb_cancel("SWCB-e2e-foreign", &sent);
    let (status, body) =
        common::http_request(server.http, "POST", "/api/v1/cap/inbound", Some(DEMO_AGENCY_TOKEN), Some(&cancel))
            .unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("sender_not_allowed"), "{body}");
    assert_eq!(server.metric(r#"dc_inbound_rejected_total{reason="sender_not_allowed",source="demo-agency"}"#), 1.0);
    let snapshot = server.snapshot().await;
    let external: Vec<&str> =
        snapshot["external_alerts"].as_array().unwrap().iter().filter_map(|a| a["identifier"].as_str()).collect();
    assert_eq!(external, ["SWCB-e2e-foreign"], "SWCB's warning stays active");
    let cleared =
        operator.alert_where(Duration::from_secs(3), |m| m["rule"] == "debris-flow" && m["state"] == "cleared").await;
    assert!(cleared.is_none(), "our yellow stays: {cleared:?}");
    assert_eq!(debris_alerts(&server)[0]["id"], yellow["id"]);
}
