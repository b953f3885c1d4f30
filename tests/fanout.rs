//! Live fan-out over websockets: citizens receive only the alerts for their places, in their language, replay what
//! they missed after a reconnect, and see drills labelled; operators receive coalesced sensor updates.

mod common;

use std::time::Duration;

use common::{now_ms, raise_heavy_rain, Citizen, Server, SHENMU, TAIPEI};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn citizens_receive_only_alerts_for_their_places_in_their_language() {
    let server = Server::start();
    let mut near_zh = Citizen::connect(&server).await;
    near_zh.subscribe(json!([{"lat": SHENMU.0, "lon": SHENMU.1}]), "zh-TW", json!([])).await;
    let mut near_en = Citizen::connect(&server).await;
    near_en
        .subscribe(json!([{"lat": TAIPEI.0, "lon": TAIPEI.1}, {"lat": SHENMU.0, "lon": SHENMU.1}]), "en", json!([]))
        .await;
    let mut far = Citizen::connect(&server).await;
    far.subscribe(json!([{"lat": TAIPEI.0, "lon": TAIPEI.1}]), "zh-TW", json!([])).await;

    raise_heavy_rain(&server, 120.0, now_ms()).await;

    let zh = near_zh.next_json(WAIT).await.expect("the Shenmu citizen gets the alert");
    assert_eq!(
        (zh["type"].as_str(), zh["state"].as_str(), zh["lang"].as_str()),
        (Some("alert"), Some("raised"), Some("zh-TW"))
    );
    assert!(zh["headline"].as_str().unwrap().contains("豪雨"), "{zh}");
    assert_eq!(zh["is_real"], true);
    assert!(zh.get("label").is_none(), "a real alert carries no drill label: {zh}");
    assert!(zh["cap"].as_str().unwrap().starts_with("/cap/"), "{zh}");
    let en = near_en.next_json(WAIT).await.expect("the English citizen gets the alert");
    assert!(en["headline"].as_str().unwrap().contains("Extremely heavy rain"), "{en}");
    assert!(far.next_json(Duration::from_secs(2)).await.is_none(), "Taipei must not receive a Shenmu alert");
}

#[tokio::test]
async fn a_reconnecting_citizen_receives_what_it_missed() {
    let server = Server::start();
    let ts = now_ms();
    raise_heavy_rain(&server, 45.0, ts - 60_000).await;
    // Subscribing after the alert was raised: it is still active, so it arrives at once.
    let mut first = Citizen::connect(&server).await;
    first.subscribe(json!([{"lat": SHENMU.0, "lon": SHENMU.1}]), "zh-TW", json!([])).await;
    let replayed = drain(&mut first).await;
    let v1 =
        replayed.iter().find(|m| m["event"] == "heavy_rain").expect("the active heavy-rain alert is replayed").clone();
    assert_eq!(v1["version"], 1);
    let seen: Vec<_> = replayed.iter().map(|m| json!({"id": m["id"], "version": m["version"]})).collect();
    drop(first);

    // While it is away, the alert escalates.
    raise_heavy_rain(&server, 80.0, ts).await;
    let mut again = Citizen::connect(&server).await;
    again.subscribe(json!([{"lat": SHENMU.0, "lon": SHENMU.1}]), "zh-TW", json!(seen)).await;
    let missed = drain(&mut again).await;
    let v2 = missed.iter().find(|m| m["id"] == v1["id"]).expect("the missed update is replayed");
    assert_eq!(v2["version"], 2);
    for m in &missed {
        assert!(
            !seen.contains(&json!({"id": m["id"], "version": m["version"]})),
            "nothing already seen is replayed: {m}"
        );
    }

    // A client that has seen the latest versions gets no duplicate.
    let latest: Vec<_> =
        missed.iter().chain(&replayed).map(|m| json!({"id": m["id"], "version": m["version"]})).collect();
    let newest: Vec<_> = latest
        .iter()
        .filter(|a| !latest.iter().any(|b| b["id"] == a["id"] && b["version"].as_u64() > a["version"].as_u64()))
        .cloned()
        .collect();
    let mut current = Citizen::connect(&server).await;
    current.subscribe(json!([{"lat": SHENMU.0, "lon": SHENMU.1}]), "zh-TW", json!(newest)).await;
    assert!(current.next_json(Duration::from_secs(1)).await.is_none());
}

/// Every frame that arrives within a second of the last one.
async fn drain(c: &mut Citizen) -> Vec<serde_json::Value> {
    let mut frames = Vec::new();
    while let Some(f) = c.next_json(Duration::from_secs(1)).await {
        frames.push(f);
    }
    frames
}

#[tokio::test]
async fn bad_subscribe_frames_get_a_reason_and_the_connection_survives() {
    let server = Server::start();
    let mut c = Citizen::connect(&server).await;
    let cases = [
        ("{not json", "malformed"),
        (r#"{"type":"subscribe","places":[],"lang":"zh-TW"}"#, "too_many_places"),
        (r#"{"type":"subscribe","places":[{"lat":123,"lon":1}],"lang":"zh-TW"}"#, "bad_place"),
        (r#"{"type":"subscribe","places":[{"h3":"not-a-cell"}],"lang":"en"}"#, "bad_place"),
        (r#"{"type":"subscribe","places":[{"lat":23.5,"lon":120.9}],"lang":"fr"}"#, "malformed"),
        (r#"{"type":"hello","places":[{"lat":23.5,"lon":120.9}],"lang":"en"}"#, "malformed"),
    ];
    for (frame, reason) in cases {
        c.send_text(frame).await;
        let reply = c.next_json(WAIT).await.expect("an error frame");
        assert_eq!(
            (reply["type"].as_str(), reply["reason"].as_str()),
            (Some("error"), Some(reason)),
            "{frame} → {reply}"
        );
    }
    let eleven: Vec<_> = (0..11).map(|_| json!({"lat": 23.5, "lon": 120.9})).collect();
    c.send(json!({"type": "subscribe", "places": eleven, "lang": "en"})).await;
    assert_eq!(c.next_json(WAIT).await.unwrap()["reason"], "too_many_places");
    // The same connection still subscribes and receives.
    c.subscribe(json!([{"lat": SHENMU.0, "lon": SHENMU.1}]), "en", json!([])).await;
    assert!(server.metric(r#"dc_ws_citizen_refused_total{reason="bad_place"}"#) >= 2.0);
}

#[tokio::test]
async fn drills_are_labelled_and_never_real() {
    let config = common::config_copy("drill", |t| t.replace(r#"mode = "Actual""#, r#"mode = "Exercise""#));
    let server = Server::serve(&config);
    let mut c = Citizen::connect(&server).await;
    c.subscribe(json!([{"lat": SHENMU.0, "lon": SHENMU.1}]), "en", json!([])).await;
    raise_heavy_rain(&server, 120.0, now_ms()).await;
    let alert = c.next_json(WAIT).await.expect("the drill alert");
    assert_eq!(alert["mode"], "Exercise");
    assert_eq!(alert["is_real"], false);
    assert_eq!(alert["label"], "Drill");
    assert!(alert["headline"].as_str().unwrap().starts_with("[Drill]"), "{alert}");
}

#[tokio::test]
async fn operators_get_coalesced_sensor_updates() {
    let server = Server::start();
    let mut operator = server.operator().await;
    let mut device = common::Device::connect(server.mqtt, "RG0002", &common::device_password("RG0002")).await.unwrap();
    let ts = now_ms();
    for i in 0..20 {
        device.publish("sensors/RG0002/readings", format!(r#"{{"ts":{},"values":{{"rain_mm":0.5}}}}"#, ts + i)).await;
    }
    device.wait_acks(20).await;
    let mut updates = 0;
    while let Some(frame) = operator.next_json(Duration::from_millis(2500)).await {
        if frame["type"] == "sensor" && frame["id"] == "RG0002" {
            updates += 1;
            assert_eq!(frame["latest"]["rain_mm"][1], 0.5, "{frame}");
        }
    }
    assert!((1..=3).contains(&updates), "20 readings in well under a second give 1–3 updates, got {updates}");
}
