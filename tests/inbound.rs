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
    let main = common::config_copy(name, |t| t);
    // Push sources only: tests reach no network.
    std::fs::write(
        main.with_file_name("inbound.toml"),
        "[[push]]\nname = \"swcb\"\ntoken_env = \"DC_TEST_TOKEN\"\npublic = true\nmax_bytes = 65536\nsenders = [\"swcb@swcb.gov.tw\"]\n",
    )
    .unwrap();
    main
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
