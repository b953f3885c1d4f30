//! Agency vehicle-detector feeds (`inbound::vd`, `[[vd_feed]]` in `config/inbound.toml`) onto the hot path.
//!
//! Each detector record the feed poller takes becomes what one of our own vehicle detectors would publish: a
//! native-JSON reading set `{"ts": <DataCollectTime>, "values": {"speed_kmh": …, "flow_veh_h": …,
//! "occupancy_pct": …}}` on `sensors/{sensor}/readings`, handed to a [`HotPath`] of its own. So a feed's readings
//! meet exactly what MQTT readings meet — the metric vocabulary and the sensor registry (`ingest::validate`), the
//! interval throttle, the dead letters, the store and InfluxDB, the rules and the alert book — with no second copy of
//! any of it. The hot path runs on a thread of its own (`vd-feed-link`), as the front door's does, so a poll never
//! waits on the rules and the async workers never run them; the engine and the book are behind their locks.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use ingest::{RawMessage, SensorKind};
use serde_json::{json, Map, Value};

use crate::app::App;
use crate::config::ConfigFiles;
use crate::hot_path::HotPath;

/// Starts the `[[vd_feed]]` pollers of `files`' inbound config, if any, and the thread that feeds their readings to
/// the hot path. Every mapped sensor must be a registered vehicle detector: a mapping to nothing would only fill the
/// dead letters, so the start fails naming the file and the key. Runs for the life of the process. Only on a single
/// node (`single_node`): a cluster role runs a part of the hot path, and says that it polls nothing.
pub fn start(app: &Arc<App>, files: &ConfigFiles, single_node: bool) -> anyhow::Result<()> {
    let Some((text, path)) = &files.inbound else { return Ok(()) };
    let text = text.replace("{public_url}", app.web.public_url.as_str());
    let config = inbound::InboundConfig::from_toml(&text, path)?;
    if config.vd_feeds.is_empty() {
        return Ok(());
    }
    if !single_node {
        tracing::warn!(file = %path.display(), "[[vd_feed]] sources are polled on a single node only, not on a cluster role");
        return Ok(());
    }
    check_sensors(app, &config.vd_feeds, path)?;
    let names: Vec<String> = config.vd_feeds.iter().map(|s| s.name.clone()).collect();
    let (feeds, mut batches) = inbound::vd::VdFeeds::start(config.vd_feeds, Arc::new(crate::clock::now_ms))
        .with_context(|| path.display().to_string())?;
    let mut hot_path = HotPath::new(Arc::clone(app));
    std::thread::Builder::new()
        .name("vd-feed-link".into())
        .spawn(move || {
            // The pollers live as long as this thread, which lives as long as the process.
            let _feeds = feeds;
            while let Some(batch) = batches.blocking_recv() {
                for reading in &batch.readings {
                    if let Some(msg) = raw_message(reading) {
                        hot_path.process(msg);
                    }
                }
            }
        })
        .context("starting the vd-feed-link thread")?;
    tracing::info!(sources = ?names, "vehicle-detector feeds polling");
    Ok(())
}

/// Every mapped sensor is registered, not retired, and a vehicle detector.
fn check_sensors(app: &App, sources: &[inbound::VdFeedSource], path: &Path) -> anyhow::Result<()> {
    let registry = app.ingest.registry().read();
    for source in sources {
        for (vdid, sensor) in &source.detectors {
            let problem = match registry.get(sensor) {
                None => Some("is not a registered sensor (sensors.toml or the sensor API)"),
                Some(s) if s.retired => Some("is retired"),
                Some(s) if s.kind != SensorKind::VehicleDetector => Some("is not a vehicle_detector"),
                Some(_) => None,
            };
            if let Some(problem) = problem {
                anyhow::bail!(
                    "{}: [[vd_feed]] `{}`: detectors.\"{vdid}\": sensor `{sensor}` {problem}",
                    path.display(),
                    source.name
                );
            }
        }
    }
    Ok(())
}

/// The reading set our own detector would publish; `None` when the record carried no metric (never, after the
/// poller's checks, but the hot path must not see an empty set).
fn raw_message(reading: &inbound::vd::DetectorReading) -> Option<RawMessage> {
    let mut values = Map::new();
    for (name, value) in
        [("speed_kmh", reading.speed_kmh), ("flow_veh_h", reading.flow_veh_h), ("occupancy_pct", reading.occupancy_pct)]
    {
        if let Some(v) = value {
            values.insert(name.into(), json!(v));
        }
    }
    if values.is_empty() {
        return None;
    }
    let payload = json!({"ts": reading.ts_ms, "values": Value::Object(values)}).to_string();
    Some(RawMessage { topic: ingest::topic::readings_topic(&reading.sensor_id), payload: Bytes::from(payload) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detector_reading_is_what_our_own_detector_publishes() {
        let reading = inbound::vd::DetectorReading {
            vdid: "VD-N3-S-217.010-M-LOOP".into(),
            sensor_id: "VD0001".into(),
            ts_ms: 1_795_658_400_000,
            speed_kmh: None,
            flow_veh_h: Some(0.0),
            occupancy_pct: Some(0.0),
        };
        let msg = raw_message(&reading).expect("a message");
        assert_eq!(msg.topic, "sensors/VD0001/readings");
        let payload: Value = serde_json::from_slice(&msg.payload).expect("JSON");
        assert_eq!(payload, json!({"ts": 1_795_658_400_000_i64, "values": {"flow_veh_h": 0.0, "occupancy_pct": 0.0}}));
        let empty = inbound::vd::DetectorReading { flow_veh_h: None, occupancy_pct: None, ..reading };
        assert!(raw_message(&empty).is_none());
    }
}
