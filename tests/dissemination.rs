//! From a reading to the agencies' channels through the real binary: a CAP 1.2 message per transition (valid against
//! the OASIS schema), the Atom feed with ETag, a signed webhook delivery and the carriers' cell-broadcast envelopes
//! (received by the demo's stand-in receivers).

mod common;

use std::time::{Duration, Instant};

use common::{http_request, now_ms, raise_heavy_rain, Server};

#[tokio::test]
async fn an_alert_becomes_valid_cap_a_feed_entry_a_signed_webhook_and_cell_broadcasts() {
    let server = Server::start();
    raise_heavy_rain(&server, 120.0, now_ms()).await;

    // The feed lists the alert's CAP message; it is cacheable.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (feed, link) = loop {
        let (status, feed) = common::http_get(server.http, "/cap/feed.atom", None).unwrap();
        assert_eq!(status, 200, "{feed}");
        // The entry's link: the path ending in `.xml"`.
        if let Some(end) = feed.find(".xml\"") {
            let start = feed[..end].rfind("/cap/").expect("a /cap/ link");
            break (feed.clone(), feed[start..end + 4].to_string());
        }
        assert!(Instant::now() < deadline, "no entry in the feed: {feed}\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(feed.contains("<feed") && feed.contains("application/cap+xml"), "{feed}");

    let (status, xml) = common::http_get(server.http, &link, None).unwrap();
    assert_eq!(status, 200, "{link}: {xml}");
    assert!(xml.contains("<status>Actual</status>") && xml.contains("+08:00"), "{xml}");
    assert!(!xml.contains("Z</sent>"), "times carry offsets, never Z");
    common::assert_valid_cap(&xml, "dissemination");

    // The demo's webhook receiver got it signed; the demo CBCs got envelopes with 3GPP PDUs.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = server.get("/demo/received");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let received = v["received"].as_array().cloned().unwrap_or_default();
        let webhook = received.iter().find(|r| r["receiver"].as_str().is_some_and(|n| n.starts_with("webhook")));
        let cbc = received.iter().find(|r| r["receiver"].as_str().is_some_and(|n| n.starts_with("cbc/")));
        if let (Some(webhook), Some(cbc)) = (webhook, cbc) {
            assert!(
                webhook["signature"].as_str().is_some_and(|s| s.starts_with("t=") && s.contains(",v1=")),
                "{webhook}"
            );
            assert!(cbc["body"].as_str().unwrap_or("").contains("sbcap"), "{cbc}");
            // The demo carriers attach the zone's Warning Area Coordinates (SBc-AP IE 46) for geofencing phones.
            assert!(cbc["body"].as_str().unwrap_or("").contains("warning_area_coordinates"), "{cbc}");
            break;
        }
        assert!(Instant::now() < deadline, "deliveries missing: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (status, body) = server.get("/api/v1/broadcasts");
    assert_eq!(status, 200);
    assert!(body.contains("911") || body.contains("4371"), "a PWS message id: {body}");
    // The targeting reports (computed after the envelopes went) carry the geofenced figures beside the cell level.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = server.get("/api/v1/broadcasts");
        if body.contains("\"geofenced\":{") {
            break;
        }
        assert!(Instant::now() < deadline, "no geofenced targeting figures: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Operators' API for subscribers refuses bad input with the field named.
    let (status, body) = http_request(
        server.http,
        "POST",
        "/api/v1/subscribers",
        Some(common::TOKEN),
        Some(r#"{"name":"x","url":"ftp://nope","secret":"s3cret-s3cret"}"#),
    )
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("url"), "{body}");
}
