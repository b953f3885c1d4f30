//! A writer's work: validate a device publish, write its readings to the InfluxDB sink, forward it to the regions its
//! readings fall in. No rules.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use ingest::pipeline::Processed;
use ingest::upstream::{self, Publisher};
use ingest::RawMessage;
use prometheus::{register_int_counter_vec, IntCounterVec};

use super::region::county_of;
use crate::app::App;
use crate::clock::now_ms;

pub(super) static ROUTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "dc_cluster_routed_total",
        "Device publishes a writer handled, by outcome (forwarded: once per region; no_region; refused: nothing valid)",
        &["outcome"]
    )
    .expect("metric registers")
});

/// A writer's work for one device publish: validate, write to the sink, forward to the owning workers.
pub(super) fn write_and_route(app: &App, publisher: &Publisher, msg: RawMessage) {
    let processed = app.ingest.process(&msg, now_ms());
    if let Some(influx) = &app.readings.influx {
        // Throttled readings (`ingest::throttle`) are stored like the others; only the rules do not take them.
        for readings in [&processed.readings, &processed.throttled] {
            if !readings.is_empty() {
                influx.send(readings);
            }
        }
    }
    if processed.readings.is_empty() && processed.throttled.is_empty() && processed.status.is_none() {
        ROUTED.with_label_values(&["refused"]).inc();
        return;
    }
    let regions = regions_of(app, &processed);
    if regions.is_empty() {
        ROUTED.with_label_values(&["no_region"]).inc();
        return;
    }
    for region in regions {
        // The raw publish, so the worker decodes exactly what the device sent (and counts the same refusals).
        match publisher.publish_blocking(upstream::region_topic(&region, &msg.topic), msg.payload.clone(), false) {
            Ok(()) => ROUTED.with_label_values(&["forwarded"]).inc(),
            Err(e) => tracing::error!(error = %e, topic = %msg.topic, "could not forward to region {region}"),
        }
    }
}

/// Every region whose zones contain one of the publish's readings (at the reading's own position for mobile units),
/// or the device's registered position for a status message.
pub(super) fn regions_of(app: &App, processed: &Processed) -> BTreeSet<String> {
    let registry = app.registry().read();
    let mut positions: Vec<(f64, f64)> = Vec::new();
    for r in processed.readings.iter().chain(&processed.throttled) {
        match (r.position, registry.get(&r.sensor_id)) {
            (Some(p), _) => positions.push((p.lat, p.lon)),
            (None, Some(s)) => positions.push((s.lat, s.lon)),
            (None, None) => {}
        }
    }
    if let Some(status) = &processed.status {
        if let Some(s) = registry.get(&status.device_id) {
            positions.push((s.lat, s.lon));
        }
    }
    positions.dedup();
    positions
        .into_iter()
        .flat_map(|(lat, lon)| app.geo.zones_containing(lat, lon))
        .filter_map(|z| z.geocode.as_deref().and_then(county_of).map(str::to_string))
        .collect()
}
