//! Traffic hazards through the real binary: the simulated gateways of `gateway-firmware-sim` replay the PH21
//! scenarios (`config/scenarios/ph21-*.toml`) over MQTT into `disaster-cloud demo`; we read what operators see on
//! their socket, what the public is told (public warnings, CAP, open data).
//!
//! Scenario time is stamped into the readings (not the wall clock), compressed 60–120×, so event-time rules
//! (`blocked_for`, `recovered_for`, `fault_after`) run as they would over the real hour; the start is placed so the
//! last reading is stamped about now and the evidence is fresh enough to warn the public.

mod common;

use std::time::{Duration, Instant};

use common::{now_ms, Server};
use gateway_firmware_sim::{run_scenario, Fleet, RunOptions, Scenario};
use serde_json::Value;

const PH21: &str = "ph21-xinyi-shenmu";

/// Plays a scenario against the server; returns the run's task and scenario time 0 (Unix ms).
fn play(server: &Server, toml: &'static str, name: &str) -> (tokio::task::JoinHandle<Result<u64, String>>, i64) {
    let scenario = Scenario::from_toml(toml, name).unwrap();
    let fleet =
        Fleet::from_files(include_str!("../config/sensors.toml"), include_str!("../config/devices.toml")).unwrap();
    let span = scenario.span.as_millis() as i64;
    let compression = scenario.compression;
    // Stamp so no reading is ever ahead of the wall clock and the last one is about now.
    let start_ts_ms = now_ms() - span + (span as f64 / compression) as i64;
    let opts = RunOptions {
        host: server.mqtt.ip().to_string(),
        port: server.mqtt.port(),
        quiet: true,
        start_ts_ms,
        ..RunOptions::for_scenario(&scenario)
    };
    let run = tokio::spawn(async move {
        run_scenario(&fleet, &scenario, &opts).await.map(|s| s.acked).map_err(|e| e.to_string())
    });
    (run, start_ts_ms)
}

/// Operators' frames until the run ends (and `linger` after), polling `poll` every second meanwhile.
async fn frames_until_done(
    server: &Server,
    run: &tokio::task::JoinHandle<Result<u64, String>>,
    linger: Duration,
    mut poll: impl FnMut(&Server),
) -> Vec<Value> {
    let mut operator = server.operator().await;
    let mut frames = Vec::new();
    let limit = Instant::now() + Duration::from_secs(240);
    let mut done_at: Option<Instant> = None;
    let mut polled = Instant::now();
    while Instant::now() < limit {
        if done_at.is_none() && run.is_finished() {
            done_at = Some(Instant::now());
        }
        if done_at.is_some_and(|t| t.elapsed() > linger) {
            break;
        }
        while let Some(frame) = operator.next_json(Duration::from_millis(200)).await {
            frames.push(frame);
        }
        if polled.elapsed() > Duration::from_secs(1) {
            poll(server);
            polled = Instant::now();
        }
    }
    frames
}

fn of<'a>(frames: &'a [Value], kind: &str, rule_or_event: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == kind && (f["rule"] == rule_or_event || f["event"] == rule_or_event)).collect()
}

/// A landslide across PH21 beside a tilt meter that has warned: "road blocked by a landslide" reaches the public
/// within 2 minutes (event time) of the first blocked reading, named after the road, linked to the tilt alert, as
/// CAP category Transport with the segment's polygon and in open data as the segment; it ends when traffic resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_landslide_blocking_ph21_is_a_public_road_warning_that_names_the_road_and_its_cause() {
    let server = Server::start();
    let (run, t0) = play(&server, include_str!("../config/scenarios/ph21-landslide.toml"), "ph21-landslide.toml");
    let mut open_data: Vec<Value> = Vec::new();
    let frames = frames_until_done(&server, &run, Duration::from_secs(5), |server| {
        let (status, body) = server.get("/opendata/alerts.geojson");
        if status == 200 {
            if let Ok(v) = serde_json::from_str::<Value>(&body) {
                open_data.extend(
                    v["features"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|f| f["properties"]["road"].is_object()),
                );
            }
        }
    })
    .await;
    assert!(run.await.unwrap().is_ok(), "the scenario ran; log:\n{}", server.log());

    // Operators: the tilt warning, the detectors, the correlation and the cause, linked.
    let tilt = of(&frames, "alert", "tilt-rate");
    let tilt_id = tilt.first().unwrap_or_else(|| panic!("no tilt alert; log:\n{}", server.log()))["id"].clone();
    let caused = of(&frames, "alert", "road-blocked-by-hazard");
    let raised = caused.iter().find(|f| f["state"] == "raised").unwrap_or_else(|| {
        panic!(
            "no road-blocked-by-hazard: {:#?}",
            frames.iter().map(|f| (&f["rule"], &f["state"], &f["level"])).collect::<Vec<_>>()
        )
    });
    assert_eq!(raised["area_id"], PH21);
    assert_eq!(raised["level"], "道路因崩塌阻斷");
    assert_eq!(raised["caused_by"]["rule"], "tilt-rate", "{raised}");
    assert_eq!(raised["caused_by"]["alert"], tilt_id, "the link is the tilt alert's id: {raised}");
    assert_eq!(raised["caused_by"]["area_id"], "dfa-xinyi-shenmu");
    // Within 2 minutes of the first blocked reading (the slope came down at 50 min of scenario time).
    let first_blocked = t0 + 49 * 60_000;
    let observed = raised["observed"].as_str().unwrap();
    let latest = alerting::message::format_time(first_blocked + 3 * 60_000, alerting::message::TAIWAN_OFFSET);
    assert!(
        observed <= latest.as_str(),
        "observed {observed}, first blocked after {}",
        alerting::message::format_time(first_blocked, alerting::message::TAIWAN_OFFSET)
    );
    assert!(of(&frames, "alert", "traffic-device-fault").is_empty(), "no detector taken for broken");

    // The public: one warning for the road, named, at the landslide level, then ended.
    let warnings: Vec<&Value> =
        frames.iter().filter(|f| f["type"] == "public_warning" && f["event"] == "road_blocked").collect();
    let first = warnings.first().unwrap_or_else(|| panic!("no public road warning; log:\n{}", server.log()));
    assert!(warnings.iter().all(|w| w["id"] == first["id"]), "one warning per road: {warnings:#?}");
    let top = warnings.iter().find(|w| w["level"] == "道路因崩塌阻斷").expect("the landslide level went public");
    assert!(top["headlines"]["zh-TW"].as_str().unwrap().contains("台21線"), "{top}");
    assert!(top["headlines"]["en"].as_str().unwrap().contains("Provincial Highway 21"), "{top}");
    let last = warnings.last().unwrap();
    assert!(
        last["state"] == "cleared" || last["state"] == "cancelled",
        "the warning ends when traffic resumes: {last}"
    );

    // CAP: category Transport, the segment's polygon, valid.
    let cap_path = top["cap"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let xml = loop {
        let (status, xml) = server.get(cap_path);
        if status == 200 {
            break xml;
        }
        assert!(Instant::now() < deadline, "{cap_path}: {status} {xml}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(xml.contains("<category>Transport</category>"), "{xml}");
    assert!(xml.contains("<polygon>"), "{xml}");
    assert!(xml.contains("台21線"), "{xml}");
    common::assert_valid_cap(&xml, "traffic");

    // Open data: the road alert as the segment, with the road's names and the cause.
    let feature =
        open_data.iter().find(|f| f["properties"]["event"] == "road_blocked").expect("a road alert in open data");
    assert_eq!(feature["properties"]["road"]["name"], "台21線", "{feature}");
    assert_eq!(feature["properties"]["road"]["name_en"], "Provincial Highway 21");
    assert_eq!(feature["properties"]["segment"]["type"], "LineString", "{feature}");
    assert_eq!(feature["geometry"]["type"], "Polygon");
}

/// A weekday rush hour (25–35 km/h for 90 minutes on every detector): no detector is blocked, nothing is public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rush_hour_on_ph21_raises_nothing_public() {
    let server = Server::start();
    let (run, _) = play(&server, include_str!("../config/scenarios/ph21-rush-hour.toml"), "ph21-rush-hour.toml");
    let frames = frames_until_done(&server, &run, Duration::from_secs(3), |_| {}).await;
    assert!(run.await.unwrap().is_ok(), "the scenario ran; log:\n{}", server.log());
    // The detectors' readings arrived (2 h × 3 detectors × 3 metrics) and were not throttled away from the rules.
    let accepted = server.metric("dc_ingest_readings_accepted_total");
    assert!(accepted >= 600.0, "readings accepted: {accepted}");
    assert!(frames.iter().any(|f| f["type"] == "sensor" && f["id"] == "VD0102"), "operators saw the detectors");
    let public: Vec<&Value> = frames.iter().filter(|f| f["type"] == "public_warning").collect();
    assert!(public.is_empty(), "{public:#?}");
    let road: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "alert" && (f["event"] == "road_blocked" || f["event"] == "sensor_fault"))
        .collect();
    assert!(road.is_empty(), "{road:#?}");
}

/// One detector stuck at 0 km/h between two that flow normally: a device fault for operators, no road closure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_detector_on_ph21_is_a_device_fault_not_a_closure() {
    let server = Server::start();
    let (run, t0) =
        play(&server, include_str!("../config/scenarios/ph21-stuck-detector.toml"), "ph21-stuck-detector.toml");
    let frames = frames_until_done(&server, &run, Duration::from_secs(3), |_| {}).await;
    assert!(run.await.unwrap().is_ok(), "the scenario ran; log:\n{}", server.log());
    let fault = of(&frames, "alert", "traffic-device-fault");
    let raised = fault
        .iter()
        .find(|f| f["state"] == "raised")
        .unwrap_or_else(|| panic!("no device fault; log:\n{}", server.log()));
    assert_eq!(raised["sensors"], serde_json::json!(["VD0102"]));
    assert_eq!(raised["event"], "sensor_fault");
    // Stuck from 5 min; a fault once `fault_after` (5 min) has passed.
    let earliest = alerting::message::format_time(t0 + 10 * 60_000, alerting::message::TAIWAN_OFFSET);
    assert!(raised["observed"].as_str().unwrap() >= earliest.as_str(), "{raised}");
    for rule in ["traffic-detector", "road-blocked", "road-blocked-by-hazard"] {
        assert!(of(&frames, "alert", rule).is_empty(), "{rule}: {:#?}", of(&frames, "alert", rule));
    }
    assert!(frames.iter().all(|f| f["type"] != "public_warning"), "nothing public");
}

/// `slowed` from weeks the raw store no longer holds: the data dir's readings store has four weeks of PH21's normal
/// (about 70 km/h at every hour) but, retention done, raw readings of the last week only; the server learns each
/// detector's normal from the store's long-term speed baseline at start, and two detectors at 20 km/h for a quarter
/// of an hour are "slowed" (operators, and the segment's correlation), nothing public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ph21_far_below_its_normal_is_slowed_learned_from_weeks_past_raw_retention() {
    let dir = tempfile::tempdir().unwrap();
    let detectors = ["VD0101", "VD0102", "VD0103"];
    let now = now_ms();
    let live_from = now - 16 * 60_000;
    {
        let store = store::ReadingStore::open(dir.path(), store::StoreConfig::default()).unwrap();
        let registry = ingest::SensorRegistry::from_toml(
            include_str!("../config/sensors.toml"),
            std::path::Path::new("config/sensors.toml"),
        )
        .unwrap();
        // What `serve` does at start: the registry's detectors get a long-term baseline.
        store.track_detectors(registry.iter());
        let week = 7 * 24 * 3_600_000;
        let mut readings = Vec::new();
        let mut ts = live_from - 4 * week;
        let mut k = 0u64;
        while ts < live_from - 60_000 {
            for id in detectors {
                let value = 70.0 + (k % 5) as f64 - 2.0;
                readings.push(ingest::Reading {
                    sensor_id: id.into(),
                    ts_ms: ts,
                    metric: ingest::Metric::SpeedKmh,
                    value,
                    position: None,
                });
            }
            ts += 5 * 60_000;
            k += 1;
        }
        assert!(store.append(&readings));
        store.flush().unwrap();
        assert!(store.enforce_retention(now).unwrap() > 0, "retention took the older raw readings");
        let old =
            store.history("VD0101", ingest::Metric::SpeedKmh, live_from - 4 * week, now - 8 * 24 * 3_600_000, None);
        assert!(old.unwrap().is_empty(), "raw readings older than a week are gone");
        store.shutdown();
    }
    let server = Server::start_in(dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.metric("dc_traffic_baseline_detectors") < 3.0 {
        assert!(Instant::now() < deadline, "no baseline learned; log:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let mut operator = server.operator().await;
    for id in ["VD0101", "VD0102"] {
        let mut device = common::Device::connect(server.mqtt, id, &common::device_password(id)).await.unwrap();
        for m in 0..16 {
            let payload = serde_json::json!({
                "ts": live_from + m * 60_000,
                "values": {"speed_kmh": 20.0 + (m % 3) as f64, "flow_veh_h": 300.0 + (m % 4) as f64, "occupancy_pct": 14.0},
            });
            device.publish(&format!("sensors/{id}/readings"), payload.to_string()).await;
        }
        device.wait_acks(16).await;
    }
    let slowed = operator
        .alert_where(Duration::from_secs(30), |a| a["rule"] == "road-slowed" && a["state"] == "raised")
        .await
        .unwrap_or_else(|| panic!("no road-slowed alert; log:\n{}", server.log()));
    assert_eq!(slowed["area_id"], PH21);
    assert_eq!(
        slowed["level"], "路段車流嚴重延滯（多站確認）",
        "traffic far slower than normal, two detectors: {slowed}"
    );
    let snapshot = server.snapshot().await;
    let alerts = snapshot["alerts"].as_array().unwrap();
    let detector: Vec<&Value> = alerts.iter().filter(|a| a["rule"] == "traffic-detector").collect();
    assert!(!detector.is_empty() && detector.iter().all(|a| a["level"] == "車流嚴重延滯"), "{detector:#?}");
    assert!(alerts.iter().all(|a| a["rule"] != "road-blocked" && a["rule"] != "traffic-device-fault"), "{alerts:#?}");
    assert!(snapshot["public_warnings"].as_array().unwrap().is_empty(), "slowed is for operators only");
}
