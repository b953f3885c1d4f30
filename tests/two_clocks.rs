//! Two clocks through the real binary: rules run on the readings' timestamps (event time), what people
//! and agencies receive carries the time we decided (issue time). A backlog raises nothing public on its own;
//! every CAP message is `sent` when it is published and `expires` after that; the demo's replay makes no live sensor
//! look silent.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{device_password, now_ms, Citizen, Device, Server, SHENMU};
use serde_json::Value;

const HOUR: i64 = 3_600_000;

/// Unix ms of a CAP or frame time (`2026-12-06T16:31:00+08:00`).
fn ms(text: &str) -> i64 {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("`{text}`: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The text of `<name>…</name>` in a CAP message, if any.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(&xml[start..end])
}

/// The `/cap/….xml` links of the public Atom feed.
fn feed_links(server: &Server) -> Vec<String> {
    let (status, feed) = common::http_get(server.http, "/cap/feed.atom", None).unwrap();
    assert_eq!(status, 200, "{feed}");
    feed.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|href| href.ends_with(".xml"))
        .filter_map(|href| href.find("/cap/").map(|i| href[i..].to_string()))
        .collect()
}

/// Polls the feed until `link` is in it; returns the wall time it was first seen.
async fn wait_in_feed(server: &Server, link: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if feed_links(server).iter().any(|l| l == link) {
            return now_ms();
        }
        assert!(Instant::now() < deadline, "{link} never reached the feed; log:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The CAP message at `link`: valid, `sent` within 2 s of the publication window [`from`, `seen`], `expires` after.
fn check_cap_times(server: &Server, link: &str, from: i64, seen: i64) -> String {
    let (status, xml) = common::http_get(server.http, link, None).unwrap();
    assert_eq!(status, 200, "{link}: {xml}");
    let sent = ms(element(&xml, "sent").expect("sent"));
    assert!(
        from - 2000 <= sent && sent <= seen + 2000,
        "{link}: sent {sent} is not the publication time ({from}..{seen}):\n{xml}"
    );
    if let Some(expires) = element(&xml, "expires") {
        assert!(ms(expires) > seen, "{link}: expires {expires} is not after publication:\n{xml}");
    }
    xml
}

#[tokio::test]
async fn a_backlog_warns_operators_only_and_cap_is_sent_when_published() {
    let server = Server::start();
    let mut operator = server.operator().await;
    let mut citizen = Citizen::connect(&server).await;
    citizen.subscribe(serde_json::json!([{"lat": SHENMU.0, "lon": SHENMU.1}]), "en", serde_json::json!([])).await;
    let mut gauge = Device::connect(server.mqtt, "RG0001", &device_password("RG0001")).await.unwrap();

    // A gateway flushes a reading stamped six hours ago: 120 mm, heavy rain for the rules.
    let observed = now_ms() - 6 * HOUR;
    let before = now_ms();
    gauge.publish("sensors/RG0001/readings", format!(r#"{{"ts":{observed},"values":{{"rain_mm":120}}}}"#)).await;
    gauge.wait_acks(1).await;
    let raised = operator
        .alert_where(Duration::from_secs(20), |m| m["rule"] == "heavy-rain")
        .await
        .unwrap_or_else(|| panic!("operators see no finding; log:\n{}", server.log()));
    let after = now_ms();
    // Operators see it, issued now, observed six hours ago, and why the public does not.
    let id = raised["id"].as_str().unwrap().to_string();
    let sent = ms(raised["sent"].as_str().unwrap());
    assert!(before - 2000 <= sent && sent <= after + 2000, "issued now: {raised}");
    assert!((ms(raised["observed"].as_str().unwrap()) - observed).abs() < 1000, "{raised}");
    let held = raised["held"].as_str().unwrap_or_else(|| panic!("no reason for operators: {raised}"));
    assert!(held.contains("6h") && held.contains("15m"), "{held}");
    assert!(id.contains(&format!("-{}", &sent.to_string()[..8])), "the id carries issue time: {id}");
    // Heavy rain and the Shenmu debris-flow signals it tips: each held, each counted.
    let held_count = server.metric(r#"dc_alerts_held_total{reason="stale_evidence"}"#);
    assert!(held_count >= 1.0, "{held_count}");
    // Nothing public: no citizen frame, no CAP message in the feed or at its address.
    assert!(citizen.next_json(Duration::from_secs(3)).await.is_none(), "citizens were warned by a backlog");
    assert!(feed_links(&server).is_empty(), "{:?}", feed_links(&server));
    let (status, _) = common::http_get(server.http, &format!("/cap/{id}.1.xml"), None).unwrap();
    assert_eq!(status, 404);

    // An operator vouches for it: public now, and its CAP message is sent now (not six hours ago), valid until later.
    let from = now_ms();
    let (status, body) =
        common::http_request(server.http, "POST", &format!("/api/v1/alerts/{id}/approve"), Some(common::TOKEN), None)
            .unwrap();
    assert_eq!(status, 200, "{body}");
    // The public hears of it as its hazard's public warning (one per hazard and area): `W-` + the alert's id.
    let warning = format!("W-{id}");
    let link = format!("/cap/{warning}.1.xml");
    let seen = wait_in_feed(&server, &link).await;
    let xml = check_cap_times(&server, &link, from, seen);
    common::assert_valid_cap(&xml, "two-clocks-approved");
    assert!(element(&xml, "expires").is_some(), "{xml}");
    // `onset` carries the observation (event) time beside it.
    let onset = ms(element(&xml, "onset").unwrap_or_else(|| panic!("no onset:\n{xml}")));
    assert!((onset - observed).abs() < 1000, "{xml}");
    let frame = citizen.next_json(Duration::from_secs(10)).await.expect("citizens get the approved warning");
    assert_eq!(frame["id"], warning.as_str(), "{frame}");

    // A reading ten minutes old is fresh: 250 mm more (370 mm in 24 h, 大豪雨) escalates the public alert at once,
    // sent now.
    let from = now_ms();
    let ts = from - 10 * 60_000;
    gauge.publish("sensors/RG0001/readings", format!(r#"{{"ts":{ts},"values":{{"rain_mm":250}}}}"#)).await;
    gauge.wait_acks(1).await;
    let link = format!("/cap/{warning}.2.xml");
    let seen = wait_in_feed(&server, &link).await;
    let xml = check_cap_times(&server, &link, from, seen);
    assert!((ms(element(&xml, "onset").unwrap()) - ts).abs() < 1000, "{xml}");
    let after = server.metric(r#"dc_alerts_held_total{reason="stale_evidence"}"#);
    assert_eq!(after, held_count, "fresh evidence is not held");
}

/// The demo replays its typhoon at the wall clock: for its first 60 s no sensor looks silent, and every CAP message
/// it publishes is sent when it is published.
#[tokio::test]
async fn the_demo_raises_no_sensor_silent_and_publishes_cap_as_it_issues_it() {
    let server = Server::start_demo_scenario();
    let mut operator = server.operator().await;
    let started = Instant::now();
    // First seen time of every CAP message in the feed (polled every 250 ms).
    let mut first_seen: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut frames: Vec<Value> = Vec::new();
    let mut polled = now_ms();
    while started.elapsed() < Duration::from_secs(60) {
        while let Some(frame) = operator.next_json(Duration::from_millis(250)).await {
            if frame["type"] == "alert" {
                frames.push(frame);
            }
        }
        let now = now_ms();
        for link in feed_links(&server) {
            first_seen.entry(link).or_insert((polled, now));
        }
        polled = now;
    }
    let silent: Vec<&Value> = frames.iter().filter(|f| f["event"] == "sensor_silent").collect();
    assert!(silent.is_empty(), "the replay made sensors look silent: {silent:?}");
    assert!(frames.iter().any(|f| f["rule"] == "heavy-rain"), "the scripted heavy rain: {frames:?}");
    assert!(!first_seen.is_empty(), "the demo published CAP messages");
    for (link, (from, seen)) in &first_seen {
        check_cap_times(&server, link, *from, *seen);
    }
    // Nothing the demo raised was held as old: its readings are stamped now.
    assert!(frames.iter().all(|f| f.get("held").is_none()), "{frames:?}");
}
