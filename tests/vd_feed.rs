//! An agency's vehicle-detector feed (MOTC VDLive) polled by the real binary from a real HTTP server on 127.0.0.1:
//! the mapped detectors' readings appear in the operators' history at their collection time, an unchanged feed (304)
//! adds nothing, and a malformed update is counted with its reason while the earlier readings stay.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::Server;
use serde_json::Value;

const SAMPLE: &str = include_str!("../inbound/src/vd/fixtures/nfb_vdlive.json");
const SAMPLE_TIME: &str = "2026-11-26T10:00:00+08:00";

/// The agency's feed: the current document and its version (the ETag); 304 to a matching If-None-Match.
#[derive(Clone, Default)]
struct Feed {
    doc: Arc<Mutex<(u32, String)>>,
    full: Arc<AtomicUsize>,
    not_modified: Arc<AtomicUsize>,
}

async fn start_feed(feed: Feed) -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/v2/Road/Traffic/Live/VD/Freeway",
        axum::routing::get(move |headers: HeaderMap| {
            let feed = feed.clone();
            async move {
                let (version, body) = feed.doc.lock().unwrap().clone();
                let etag = format!("\"vdlive-{version}\"");
                if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
                    feed.not_modified.fetch_add(1, Ordering::SeqCst);
                    return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
                }
                feed.full.fetch_add(1, Ordering::SeqCst);
                ([(header::ETAG, etag), (header::CONTENT_TYPE, "application/json".into())], body).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A copy of config/ whose inbound.toml has the slope agency's push source (the shipped rules read it) and the feed.
fn config(feed: std::net::SocketAddr) -> std::path::PathBuf {
    let main = common::config_copy("vd-feed", |t| t);
    let inbound = format!(
        r#"
[[push]]
name = "swcb"
token_env = "DC_TEST_TOKEN"
public = true
senders = ["swcb@swcb.gov.tw"]

[[vd_feed]]
name = "agency-vd"
url = "http://{feed}/v2/Road/Traffic/Live/VD/Freeway"
interval_s = 1
max_backoff_s = 2
timeout_s = 5
max_age_s = 900
allow_networks = ["loopback"]
[vd_feed.detectors]
"VD-N3-S-217.010-M-LOOP" = "VD0301"
"VD-N3-S-221.500-M-LOOP" = "VD0001"
"#
    );
    std::fs::write(main.with_file_name("inbound.toml"), inbound).unwrap();
    main
}

fn history(server: &Server, sensor: &str, metric: &str) -> Vec<(i64, f64)> {
    let (status, body) = server.get(&format!("/api/v1/sensors/{sensor}/readings?metric={metric}"));
    assert_eq!(status, 200, "{body}");
    let value: Value = serde_json::from_str(&body).unwrap();
    value["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["ts"].as_i64().unwrap(), p["value"].as_f64().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_readings_reach_history_at_their_collection_time_and_a_broken_update_is_counted() {
    // Two minutes ago, to the minute, in Taiwan time as agencies write it.
    let collected_ms = (common::now_ms() / 60_000 - 2) * 60_000;
    let collected = alerting::message::format_time(collected_ms, alerting::message::TAIWAN_OFFSET);
    assert!(collected.ends_with("+08:00"), "{collected}");
    let feed = Feed::default();
    *feed.doc.lock().unwrap() = (1, SAMPLE.replace(SAMPLE_TIME, &collected));
    let addr = start_feed(feed.clone()).await;
    let server = tokio::task::block_in_place(|| Server::serve(&config(addr)));

    let source = |name: &str, labels: &str| format!("{name}{{{labels}source=\"agency-vd\"}}");
    tokio::task::block_in_place(|| {
        common::wait_until_blocking("the first readings", Duration::from_secs(30), || {
            server.metric(&source("dc_vd_feed_readings_total", "")) >= 1.0
        });
        // The south-bound detector's three lanes, as one station: volume-weighted speed, vehicles per hour, mean
        // occupancy — at the record's DataCollectTime, not at the time we polled.
        assert_eq!(history(&server, "VD0301", "speed_kmh"), vec![(collected_ms, 91.17)]);
        assert_eq!(history(&server, "VD0301", "flow_veh_h"), vec![(collected_ms, 3600.0)]);
        assert_eq!(history(&server, "VD0301", "occupancy_pct"), vec![(collected_ms, 9.0)]);
        // The mapped detector reporting Status 3 (faulty) gives nothing; it and the two detectors we do not map are
        // counted with their reasons, beside the good one.
        assert!(history(&server, "VD0001", "speed_kmh").is_empty());
        assert_eq!(server.metric(&source("dc_vd_feed_refused_total", "reason=\"status_fault\",")), 1.0);
        assert_eq!(server.metric(&source("dc_vd_feed_refused_total", "reason=\"unknown_vdid\",")), 2.0);

        // Unchanged: the binary sends the ETag back, gets 304, and nothing is added.
        common::wait_until_blocking("a 304", Duration::from_secs(20), || feed.not_modified.load(Ordering::SeqCst) >= 2);
        assert!(server.metric(&source("dc_vd_feed_polls_total", "result=\"not_modified\",")) >= 2.0);
        assert_eq!(feed.full.load(Ordering::SeqCst), 1, "the full document was sent once");
        assert_eq!(history(&server, "VD0301", "speed_kmh").len(), 1);
        assert_eq!(server.metric(&source("dc_vd_feed_readings_total", "")), 1.0);

        // A malformed update (a cut-off document): refused whole, counted with its reason; what was taken stays.
        let cut = SAMPLE.replace(SAMPLE_TIME, &collected)[..400].to_string();
        *feed.doc.lock().unwrap() = (2, cut);
        common::wait_until_blocking("the refusal", Duration::from_secs(20), || {
            server.metric(&source("dc_vd_feed_refused_total", "reason=\"feed_invalid\",")) >= 1.0
        });
        assert!(server.metric(&source("dc_vd_feed_consecutive_failures", "")) >= 1.0);
        assert_eq!(history(&server, "VD0301", "speed_kmh"), vec![(collected_ms, 91.17)]);
        assert_eq!(history(&server, "VD0301", "flow_veh_h"), vec![(collected_ms, 3600.0)]);
    });
}
