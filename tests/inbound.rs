//! Partner agencies' CAP pushed to `POST /api/v1/cap/inbound` shows on the operators' socket and, for public
//! sources, reaches citizens whose places it covers, with the source named.

mod common;

use std::time::Duration;

use common::{http_request, Citizen, Server, SHENMU, TAIPEI};
use serde_json::json;

const SWCB_YELLOW: &str = include_str!("../inbound/src/tests/fixtures/swcb_debris_flow_yellow.xml");

/// The fixture with its times moved around now (it must be neither expired nor from the future).
fn fresh(xml: &str, identifier_suffix: &str) -> String {
    let fmt = common::cap_time;
    xml.replace("2026-11-26T19:00:00+08:00", &fmt(-60))
        .replace("2026-11-27T07:00:00+08:00", &fmt(6 * 3600))
        .replace("-1000812</identifier>", &format!("-1000812-{identifier_suffix}</identifier>"))
}

fn config(name: &str) -> std::path::PathBuf {
    config_with(
        name,
        "[[push]]\nname = \"swcb\"\ntoken_env = \"DC_TEST_TOKEN\"\npublic = true\nmax_bytes = 65536\nsenders = [\"swcb@swcb.gov.tw\"]\n",
    )
}

/// A copy of config/ whose inbound.toml is `inbound` (push sources only: tests reach no network).
fn config_with(name: &str, inbound: &str) -> std::path::PathBuf {
    let main = common::config_copy(name, |t| t);
    std::fs::write(main.with_file_name("inbound.toml"), inbound).unwrap();
    main
}

/// The slope agency's own source, and a relay that may name SWCB as sender but did not open SWCB's warnings.
const SWCB_AND_RELAY: &str = r#"
[[push]]
name = "swcb"
token_env = "DC_TEST_TOKEN"
public = true
max_bytes = 65536
senders = ["swcb@swcb.gov.tw"]

[[push]]
name = "relay"
token_env = "DC_TEST_RELAY_TOKEN"
public = true
max_bytes = 65536
senders = ["swcb@swcb.gov.tw"]
"#;

/// A Cancel of `alert` (an XML message as sent), sent now.
fn cancel_of(alert: &str) -> String {
    let field = |name: &str| {
        let start = alert.find(&format!("<{name}>")).expect(name) + name.len() + 2;
        let end = alert[start..].find('<').expect(name) + start;
        alert[start..end].to_string()
    };
    let (identifier, sent) = (field("identifier"), field("sent"));
    alert
        .replacen(&format!("<identifier>{identifier}"), &format!("<identifier>{identifier}-cancel"), 1)
        .replacen(&format!("<sent>{sent}</sent>"), &format!("<sent>{}</sent>", common::cap_time(0)), 1)
        .replacen("<msgType>Alert</msgType>", "<msgType>Cancel</msgType>", 1)
        .replacen(
            "<scope>Public</scope>",
            &format!("<scope>Public</scope>\n  <references>swcb@swcb.gov.tw,{identifier},{sent}</references>"),
            1,
        )
}

#[tokio::test]
async fn another_source_cannot_cancel_the_slope_agencys_warning() {
    let server = Server::serve(&config_with("inbound-foreign", SWCB_AND_RELAY));
    let post = |token: &str, body: &str| {
        http_request(server.http, "POST", "/api/v1/cap/inbound", Some(token), Some(body)).unwrap()
    };
    let warning = fresh(SWCB_YELLOW, "f");
    let (status, reply) = post(common::TEST_TOKEN_ENV.1, &warning);
    assert_eq!(status, 200, "{reply}");

    // The relay may speak as SWCB, but the warning is the `swcb` source's: its Cancel is refused and counted.
    let cancel = cancel_of(&warning);
    let (status, reply) = post(common::TEST_RELAY_TOKEN_ENV.1, &cancel);
    assert_eq!(status, 403, "{reply}");
    assert!(reply.contains("foreign_source"), "{reply}");
    assert_eq!(server.metric(r#"dc_inbound_rejected_total{reason="foreign_source",source="relay"}"#), 1.0);
    let snapshot = server.snapshot().await;
    let external = snapshot["external_alerts"].as_array().expect("external alerts");
    assert_eq!(external.len(), 1, "SWCB's warning stays active: {snapshot}");
    assert_eq!(external[0]["source"], "swcb");

    // The same Cancel from SWCB's own source ends it.
    let (status, reply) = post(common::TEST_TOKEN_ENV.1, &cancel);
    assert_eq!((status, reply.contains("cancelled")), (200, true), "{reply}");
}

#[test]
fn a_push_source_without_senders_stops_the_start() {
    // Otherwise valid (the `swcb` source the shipped rules read is there), so only the empty list can stop it.
    let inbound =
        format!("{SWCB_AND_RELAY}\n[[push]]\nname = \"anyone\"\ntoken_env = \"DC_TEST_SECRET\"\nsenders = []\n");
    let config = config_with("inbound-no-senders", &inbound);
    let data = config.with_file_name("data");
    let mut child = common::test_env(&mut std::process::Command::new(env!("CARGO_BIN_EXE_disaster-cloud")))
        .args(["serve", "--config", config.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .args(["--http-listen", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--mqtt-listen", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--mqtt5-listen", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--mqtt-tls-listen", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--mqtt5-tls-listen", &format!("127.0.0.1:{}", common::free_port())])
        .env("DC_OPERATOR_TOKEN", common::TOKEN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve kept running with a push source that lists no senders");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("inbound.toml") && stderr.contains("`anyone`: senders"), "names file and key: {stderr}");
}

#[tokio::test]
async fn pushed_cap_reaches_operators_and_covered_citizens() {
    let server = Server::serve(&config("inbound-push"));
    let mut operator = server.operator().await;
    let mut near = Citizen::connect(&server).await;
    near.subscribe(json!([{"lat": SHENMU.0, "lon": SHENMU.1}]), "zh-TW", json!([])).await;
    let mut far = Citizen::connect(&server).await;
    far.subscribe(json!([{"lat": TAIPEI.0, "lon": TAIPEI.1}]), "zh-TW", json!([])).await;

    let body = fresh(SWCB_YELLOW, "a");
    let (status, reply) =
        http_request(server.http, "POST", "/api/v1/cap/inbound", Some(common::TEST_TOKEN_ENV.1), Some(&body)).unwrap();
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("raised"), "{reply}");

    let frame = loop {
        let f = operator.next_json(Duration::from_secs(10)).await.expect("an external alert frame");
        if f["type"] == "external_alert" {
            break f;
        }
    };
    assert_eq!(frame["alert"]["source"], "swcb");
    assert!(frame["alert"]["zone_ids"].as_array().unwrap().iter().any(|z| z == "dfa-xinyi-shenmu"), "{frame}");

    let alert = near.next_json(Duration::from_secs(10)).await.expect("the covered citizen receives it");
    assert_eq!((alert["external"].as_bool(), alert["source"].as_str()), (Some(true), Some("swcb")), "{alert}");
    assert_eq!(alert["headline"], "土石流黃色警戒");
    assert!(far.next_json(Duration::from_secs(2)).await.is_none(), "Taipei is not covered");

    // The same message again is a duplicate, not a second alert.
    let (status, reply) =
        http_request(server.http, "POST", "/api/v1/cap/inbound", Some(common::TEST_TOKEN_ENV.1), Some(&body)).unwrap();
    assert_eq!(status, 200);
    assert!(reply.contains("duplicate"), "{reply}");
}

#[tokio::test]
async fn bad_pushes_are_refused_with_the_reason() {
    let server = Server::serve(&config("inbound-bad"));
    let body = fresh(SWCB_YELLOW, "b");
    let cases = [
        (None, body.as_str(), 401, "unsigned"),
        (Some("wrong-token"), body.as_str(), 401, "bad_token"),
        (Some(common::TEST_TOKEN_ENV.1), "<alert><oops", 400, "invalid_xml"),
    ];
    for (token, payload, want_status, reason) in cases {
        let (status, reply) = http_request(server.http, "POST", "/api/v1/cap/inbound", token, Some(payload)).unwrap();
        assert_eq!(status, want_status, "{reason}: {reply}");
        assert!(reply.contains(reason), "{reason}: {reply}");
    }
    let huge = format!("{}{}", body, " ".repeat(70_000));
    let (status, reply) =
        http_request(server.http, "POST", "/api/v1/cap/inbound", Some(common::TEST_TOKEN_ENV.1), Some(&huge)).unwrap();
    assert_eq!(status, 413, "{reply}");
}
