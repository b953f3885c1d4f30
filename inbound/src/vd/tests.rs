//! The VDLive decoder and checks against the NFB-shaped fixtures, each malformed case with its reason, and the
//! poller against a local HTTP feed (ETag, 304, a malformed update, egress).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::decode::{decode, DecodeError};
use super::poll::VdPoller;
use super::readings::{parse_collect_time, take, DetectorReading, Limits, Outcome};
use crate::config::VdFeedSource;

const JSON: &str = include_str!("fixtures/nfb_vdlive.json");
const XML: &str = include_str!("fixtures/nfb_vdlive.xml");

/// 2026-11-26T10:00:00+08:00 (02:00 UTC).
const COLLECTED_MS: i64 = 1_795_658_400_000;
const NOW_MS: i64 = COLLECTED_MS + 75_000;

fn mapping() -> BTreeMap<String, String> {
    [("VD-N3-S-217.010-M-LOOP", "VD0001"), ("VD-N3-N-217.010-M-LOOP", "VD0002"), ("VD-N3-S-221.500-M-LOOP", "VD0003")]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn limits() -> Limits {
    Limits { interval_s: 60.0, max_age_ms: 900_000, max_future_ms: 300_000 }
}

fn take_text(text: &str, detectors: &BTreeMap<String, String>) -> Outcome {
    let doc = decode(text.as_bytes()).expect("decodes");
    take(doc, detectors, limits(), NOW_MS, &mut HashMap::new())
}

fn reasons(outcome: &Outcome) -> Vec<&'static str> {
    outcome.refused.iter().map(|r| r.reason()).collect()
}

#[test]
fn the_sample_gives_volume_weighted_station_readings() {
    let doc = decode(JSON.as_bytes()).expect("the sample decodes");
    assert_eq!(doc.detectors.len(), 4);
    assert_eq!(doc.update_interval_s, Some(60.0));
    assert_eq!(doc.authority.as_deref(), Some("NFB"));
    let out = take(doc, &mapping(), limits(), NOW_MS, &mut HashMap::new());
    assert_eq!(
        out.readings,
        vec![
            // 60 vehicles in a minute over three lanes; (92×24 + 98×17 + 84×19) / 60; (9 + 7 + 11) / 3.
            DetectorReading {
                vdid: "VD-N3-S-217.010-M-LOOP".into(),
                sensor_id: "VD0001".into(),
                ts_ms: COLLECTED_MS,
                speed_kmh: Some(91.17),
                flow_veh_h: Some(3600.0),
                occupancy_pct: Some(9.0),
            },
            // Lane 2's speed is the -99 data-error mark: its 18 vehicles count in the flow, not in the speed.
            DetectorReading {
                vdid: "VD-N3-N-217.010-M-LOOP".into(),
                sensor_id: "VD0002".into(),
                ts_ms: COLLECTED_MS,
                speed_kmh: Some(31.62),
                flow_veh_h: Some(4680.0),
                occupancy_pct: Some(41.33),
            },
        ]
    );
    // The faulty detector is refused with its status; the unmapped ramp detector is counted, not taken.
    assert_eq!(reasons(&out), vec!["status_fault", "unknown_vdid"]);
}

#[test]
fn xml_and_json_of_the_same_detectors_agree() {
    let from_json = take_text(JSON, &mapping());
    let from_xml = take_text(XML, &mapping());
    assert_eq!(from_xml.readings, from_json.readings);
    assert_eq!(reasons(&from_xml), reasons(&from_json));
    assert_eq!(decode(XML.as_bytes()).expect("XML").update_interval_s, Some(60.0));
}

#[test]
fn an_empty_road_has_no_speed_and_standing_traffic_has_its_own() {
    let mut detectors = mapping();
    detectors.insert("VD-N3-S-214.300-I-EN-1-名間".into(), "VD0004".into());
    let out = take_text(JSON, &detectors);
    let ramp = out.readings.iter().find(|r| r.sensor_id == "VD0004").expect("the ramp's reading");
    // Nothing passed and nothing stands on the loop: flow and occupancy 0, and no speed (a 0 would read "blocked").
    assert_eq!((ramp.speed_kmh, ramp.flow_veh_h, ramp.occupancy_pct), (None, Some(0.0), Some(0.0)));

    let standing = JSON.replacen("\"Speed\": 92,\n", "\"Speed\": 0,\n", 1).replace(
        r#""VehicleType": "S",
                  "Volume": 20"#,
        r#""VehicleType": "S",
                  "Volume": 0"#,
    );
    let doc = standing.replace("\"Volume\": 3,", "\"Volume\": 0,").replace("\"Volume\": 1,", "\"Volume\": 0,");
    let out = take_text(&doc, &mapping());
    let vd = out.readings.iter().find(|r| r.sensor_id == "VD0001").expect("a reading");
    assert!(vd.speed_kmh.is_some(), "occupied lanes report their speed even with no vehicle counted: {vd:?}");
}

#[test]
fn collection_times_read_with_their_offset_or_as_taiwan_time() {
    assert_eq!(parse_collect_time("2026-11-26T10:00:00+08:00"), Some(COLLECTED_MS));
    assert_eq!(parse_collect_time("2026-11-26T02:00:00Z"), Some(COLLECTED_MS));
    // Bare local times (some city feeds) are Asia/Taipei, UTC+8 all year.
    assert_eq!(parse_collect_time("2026-11-26T10:00:00"), Some(COLLECTED_MS));
    assert_eq!(parse_collect_time("2026-11-26 10:00:00"), Some(COLLECTED_MS));
    assert_eq!(parse_collect_time("2026/11/26 10:00:00"), Some(COLLECTED_MS));
    assert_eq!(parse_collect_time("yesterday"), None);
}

#[test]
fn malformed_documents_are_refused_whole_with_their_reason() {
    type Expected = fn(&DecodeError) -> bool;
    let cases: Vec<(&[u8], Expected)> = vec![
        (b"\xff\xfe{}", |e| matches!(e, DecodeError::NotUtf8(_))),
        (b"   ", |e| matches!(e, DecodeError::Empty)),
        (b"{\"VDLives\": [", |e| matches!(e, DecodeError::Json(_))),
        (b"{\"UpdateTime\": \"2026-11-26T10:00:00+08:00\"}", |e| matches!(e, DecodeError::NotVdLive(_))),
        (b"{\"VDLives\": {}}", |e| matches!(e, DecodeError::NotVdLive(_))),
        (b"\"VDLives\"", |e| matches!(e, DecodeError::NotVdLive(_))),
        (b"<CCTVList><CCTVs/></CCTVList>", |e| matches!(e, DecodeError::NotVdLive(_))),
        (b"<VDLiveList><VDLives><VDLive>", |e| matches!(e, DecodeError::Xml { .. })),
        (b"<VDLiveList></VDLives>", |e| matches!(e, DecodeError::Xml { .. })),
        (b"<!DOCTYPE x [<!ENTITY a \"b\">]><VDLiveList/>", |e| matches!(e, DecodeError::Xml { .. })),
        (b"<VDLiveList><VDLives/></VDLiveList><VDLiveList/>", |e| matches!(e, DecodeError::Xml { .. })),
    ];
    for (bytes, expected) in cases {
        let err = decode(bytes).expect_err(&String::from_utf8_lossy(bytes));
        assert!(expected(&err), "{}: {err:?}", String::from_utf8_lossy(bytes));
    }
    // A document nested past the bound is refused before it costs anything.
    let deep = format!("<VDLiveList>{}</VDLiveList>", "<a>".repeat(40) + &"</a>".repeat(40));
    assert!(matches!(decode(deep.as_bytes()), Err(DecodeError::Xml { .. })));
    // A bare array of records (some mirrors) is a VDLive document too.
    let array = r#"[{"VDID": "VD-N3-S-217.010-M-LOOP", "DataCollectTime": "2026-11-26T10:00:00+08:00",
        "LinkFlows": [{"Lanes": [{"Speed": 90, "Occupancy": 5, "Vehicles": [{"Volume": 10}]}]}]}]"#;
    assert_eq!(take_text(array, &mapping()).readings.len(), 1);
}

#[test]
fn each_bad_record_has_its_reason_and_its_neighbours_are_kept() {
    let good = |vdid: &str, time: &str, lane: &str| {
        format!(
            r#"{{"VDID": "{vdid}", "Status": 0, "DataCollectTime": "{time}", "LinkFlows": [{{"Lanes": [{lane}]}}]}}"#
        )
    };
    let lane = r#"{"Speed": 80, "Occupancy": 10, "Vehicles": [{"VehicleType": "S", "Volume": 12, "Speed": 80}]}"#;
    let t = "2026-11-26T10:00:00+08:00";
    let a = "VD-N3-S-217.010-M-LOOP";
    let records = [
        (good(a, t, lane), None),
        (r#"{"Status": 0, "DataCollectTime": "2026-11-26T10:00:00+08:00"}"#.to_string(), Some("malformed_record")),
        (r#"{"VDID": "VD-N3-N-217.010-M-LOOP", "LinkFlows": "three"}"#.to_string(), Some("malformed_record")),
        (good("VD-N9-X-1.000-M-LOOP", t, lane), Some("unknown_vdid")),
        (good("VD-N3-N-217.010-M-LOOP", "noon", lane), Some("bad_time")),
        (good("VD-N3-N-217.010-M-LOOP", "2026-11-26T09:30:00+08:00", lane), Some("stale")),
        (good("VD-N3-N-217.010-M-LOOP", "2026-11-26T10:30:00+08:00", lane), Some("future_time")),
        (good("VD-N3-N-217.010-M-LOOP", t, &lane.replace("80, \"Occ", "-5, \"Occ")), Some("negative_value")),
        (
            good("VD-N3-N-217.010-M-LOOP", t, &lane.replace("\"Occupancy\": 10", "\"Occupancy\": 140")),
            Some("out_of_range"),
        ),
        (
            good("VD-N3-N-217.010-M-LOOP", t, &lane.replace("\"Speed\": 80, \"Occ", "\"Speed\": 900, \"Occ")),
            Some("out_of_range"),
        ),
        (good("VD-N3-N-217.010-M-LOOP", t, &lane.replace("\"Volume\": 12", "\"Volume\": 500")), Some("out_of_range")),
        (good("VD-N3-N-217.010-M-LOOP", t, ""), Some("no_valid_lanes")),
        (
            good("VD-N3-N-217.010-M-LOOP", t, r#"{"Speed": -99, "Occupancy": -99, "Vehicles": [{"Volume": -99}]}"#),
            Some("no_valid_lanes"),
        ),
        (good(a, t, lane), Some("duplicate_time")),
    ];
    let mut statuses = Vec::new();
    for (status, reason) in
        [(1, "status_comm_failure"), (2, "status_out_of_service"), (3, "status_fault"), (7, "status_unknown")]
    {
        statuses.push((
            good("VD-N3-S-221.500-M-LOOP", t, lane).replace("\"Status\": 0", &format!("\"Status\": {status}")),
            Some(reason),
        ));
    }
    let all: Vec<_> = records.into_iter().chain(statuses).collect();
    let doc = format!("{{\"VDLives\": [{}]}}", all.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>().join(","));
    let out = take_text(&doc, &mapping());
    assert_eq!(out.readings.len(), 1, "{:?}", out.readings);
    assert_eq!(out.readings[0].sensor_id, "VD0001");
    assert_eq!(out.readings[0].flow_veh_h, Some(720.0));
    let expected: Vec<&str> = all.iter().filter_map(|(_, reason)| *reason).collect();
    assert_eq!(reasons(&out), expected);
}

#[test]
fn a_detector_already_taken_at_that_time_is_a_duplicate_next_poll() {
    let mut last = HashMap::new();
    let first = take(decode(JSON.as_bytes()).expect("JSON"), &mapping(), limits(), NOW_MS, &mut last);
    assert_eq!(first.readings.len(), 2);
    let again = take(decode(XML.as_bytes()).expect("XML"), &mapping(), limits(), NOW_MS + 60_000, &mut last);
    assert!(again.readings.is_empty());
    assert_eq!(reasons(&again), vec!["duplicate_time", "duplicate_time", "status_fault", "unknown_vdid"]);
}

/// A local feed: serves `body` with an ETag (its version), answers 304 to a matching If-None-Match, counts requests.
#[derive(Clone, Default)]
struct Feed {
    body: Arc<Mutex<(u32, String)>>,
    requests: Arc<AtomicUsize>,
    not_modified: Arc<AtomicUsize>,
}

async fn serve_feed(feed: Feed) -> std::net::SocketAddr {
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/VDLive.json",
        axum::routing::get(move |headers: HeaderMap| {
            let feed = feed.clone();
            async move {
                feed.requests.fetch_add(1, Ordering::SeqCst);
                let (version, body) = feed.body.lock().expect("lock").clone();
                let etag = format!("\"v{version}\"");
                if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
                    feed.not_modified.fetch_add(1, Ordering::SeqCst);
                    return StatusCode::NOT_MODIFIED.into_response();
                }
                ([(header::ETAG, etag), (header::CONTENT_TYPE, "application/json".into())], body).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    addr
}

fn source(url: String, allow_loopback: bool) -> VdFeedSource {
    let text = format!(
        "name = \"test-vd\"\nurl = \"{url}\"\n{}\n[detectors]\n\"VD-N3-S-217.010-M-LOOP\" = \"VD0001\"\n",
        if allow_loopback { "allow_networks = [\"loopback\"]" } else { "" }
    );
    let source: VdFeedSource = toml::from_str(&text).expect("source parses");
    source
}

#[tokio::test]
async fn the_poller_uses_the_etag_keeps_nothing_twice_and_names_a_broken_update() {
    let feed = Feed::default();
    *feed.body.lock().expect("lock") = (1, JSON.to_string());
    let addr = serve_feed(feed.clone()).await;
    let mut poller = VdPoller::new(source(format!("http://{addr}/VDLive.json"), true)).expect("poller");

    let first = poller.poll_once(NOW_MS).await.expect("first poll");
    assert_eq!(first.readings.len(), 1);
    assert_eq!(first.readings[0].ts_ms, COLLECTED_MS);
    assert_eq!(first.refused.get("unknown_vdid"), Some(&3));

    let second = poller.poll_once(NOW_MS + 60_000).await.expect("second poll");
    assert!(second.not_modified && second.readings.is_empty(), "{second:?}");
    assert_eq!(feed.not_modified.load(Ordering::SeqCst), 1);

    // A malformed update: the poll fails with its reason and backs off; validators are dropped.
    *feed.body.lock().expect("lock") = (2, "{\"VDLives\": [".into());
    let broken = poller.poll_once(NOW_MS + 120_000).await.expect_err("malformed");
    assert_eq!(broken.reason(), "feed_invalid");
    assert_eq!(poller.next_delay(), std::time::Duration::from_secs(120));

    // Fixed, with a newer collection time: taken again, the earlier time is not.
    let newer = JSON.replace("2026-11-26T10:00:00+08:00", "2026-11-26T10:01:00+08:00");
    *feed.body.lock().expect("lock") = (2, newer);
    let fixed = poller.poll_once(NOW_MS + 180_000).await.expect("fixed");
    assert_eq!(fixed.readings.iter().map(|r| r.ts_ms).collect::<Vec<_>>(), vec![COLLECTED_MS + 60_000]);
    assert_eq!(poller.next_delay(), std::time::Duration::from_secs(60));
}

#[tokio::test]
async fn a_feed_on_this_machine_is_not_polled_unless_allowed() {
    let feed = Feed::default();
    *feed.body.lock().expect("lock") = (1, JSON.to_string());
    let addr = serve_feed(feed.clone()).await;
    let cfg = source(format!("http://{addr}/VDLive.json"), false);
    assert!(cfg.validate().expect_err("loopback").contains("allow_networks = [\"loopback\"]"));
    let mut poller = VdPoller::new(cfg).expect("poller");
    let err = poller.poll_once(NOW_MS).await.expect_err("refused");
    assert_eq!(err.reason(), "address_not_allowed");
    assert_eq!(feed.requests.load(Ordering::SeqCst), 0, "nothing was requested");
}

#[test]
fn the_config_names_file_key_and_reason() {
    let text = r#"
[[vd_feed]]
name = "thb"
url = "https://tisvcloud.freeway.gov.tw/history/motc20/VDLive.xml"
intervall_s = 60
[vd_feed.detectors]
"VD-N3-S-217.010-M-LOOP" = "VD0001"
"#;
    let err = crate::InboundConfig::from_toml(text, std::path::Path::new("config/inbound.toml")).expect_err("typo");
    let message = err.to_string();
    assert!(message.contains("config/inbound.toml") && message.contains("intervall_s"), "{message}");

    let bad_sensor = text.replace("intervall_s = 60\n", "").replace("= \"VD0001\"", "= \"VD-0001\"");
    let message = crate::InboundConfig::from_toml(&bad_sensor, std::path::Path::new("inbound.toml"))
        .expect_err("bad sensor id")
        .to_string();
    assert!(message.contains("[[vd_feed]] `thb`: detectors.") && message.contains("VD-0001"), "{message}");

    let empty = "[[vd_feed]]\nname = \"thb\"\nurl = \"https://x.example.tw/VDLive.json\"\ndetectors = {}\n";
    let message =
        crate::InboundConfig::from_toml(empty, std::path::Path::new("inbound.toml")).expect_err("empty").to_string();
    assert!(message.contains("detectors: map at least one VDID"), "{message}");

    let ok = text.replace("intervall_s", "interval_s");
    let cfg = crate::InboundConfig::from_toml(&ok, std::path::Path::new("inbound.toml")).expect("valid");
    assert_eq!(cfg.vd_feeds[0].detectors["VD-N3-S-217.010-M-LOOP"], "VD0001");
    assert_eq!(cfg.vd_feeds[0].max_age_s, 900);
}
