//! The hot path: readings → store and sink → rules → alert book → broadcast, run synchronously on the ingest link
//! thread (`docs/ARCHITECTURE.md` § The hot path).
//!
//! [`HotPath::process`] takes one batch of device publishes as the front door (`ingest::broker`) or an upstream
//! broker (`scale_out`, a worker) delivers it. A reading crosses no channel before its alert exists: decode and
//! validate (`Ingest::process`), the operators' live map, the readings store and the InfluxDB sink (neither blocks),
//! the zones of the reading (geo index), the rule engine's windows, the alert book, then [`App::publish`] hands every
//! change to the async web side and to dissemination.
//!
//! Readings from a device far faster than its registered interval (`ingest::throttle`) are stored and shown but
//! kept from the rules.
//!
//! [`housekeeping`] is the same path driven by time instead of readings: deadman and forecast expiry, partner
//! warnings coming into force, public warnings held for their interval or while flapping, and the durability of what
//! the path keeps in memory.

use std::path::PathBuf;
use std::sync::Arc;

use alerting::{Finding, ZoneRef};
use ingest::RawMessage;

use crate::app::App;
use crate::clock::now_ms;

/// The hot path of one process; owned by the thread that feeds it (the findings buffer is reused across batches).
pub struct HotPath {
    /// Everything the path reads and writes.
    app: Arc<App>,
    /// The rules' findings of the current batch, folded into the alert book at its end.
    findings: Vec<Finding>,
}

impl HotPath {
    pub fn new(app: Arc<App>) -> Self {
        Self { app, findings: Vec::new() }
    }

    /// One device publish (a batch of readings, or a status message), all the way to the alert changes it makes.
    pub fn process(&mut self, msg: RawMessage) {
        let app = &self.app;
        // Arrival time: the ingest clock the deadman runs on (a backlog's old timestamps are still alive sensors).
        let arrived_ms = now_ms();
        let processed = app.ingest.process(&msg, arrived_ms);
        if let Some(status) = &processed.status {
            app.live.record_status(status);
        }
        if processed.readings.is_empty() && processed.throttled.is_empty() {
            return;
        }
        app.live.record_readings(&processed.readings);
        // Throttled readings (the device reports far faster than its interval, `ingest::throttle`) are what it
        // measured: stored, shown and flagged on the operators' map, but kept from the rules.
        if !processed.throttled.is_empty() {
            app.live.record_readings(&processed.throttled);
            app.live.flag_throttled(&processed.throttled, arrived_ms);
        }
        // Neither store blocks: past their bounded queues readings are dropped and counted, never waited for.
        if let Some(store) = &app.readings.store {
            store.append(&processed.readings);
            if !processed.throttled.is_empty() {
                store.append(&processed.throttled);
            }
        }
        if let Some(influx) = &app.readings.influx {
            influx.send(&processed.readings);
            if !processed.throttled.is_empty() {
                influx.send(&processed.throttled);
            }
        }
        if processed.readings.is_empty() {
            return;
        }
        let registry = app.registry().read();
        let mut engine = app.alerts.engine.lock();
        for reading in &processed.readings {
            let Some(sensor) = registry.get(&reading.sensor_id) else { continue };
            let (lat, lon) = reading.position.map(|p| (p.lat, p.lon)).unwrap_or((sensor.lat, sensor.lon));
            let zones: Vec<ZoneRef<'_>> =
                app.geo.zones_containing(lat, lon).into_iter().map(|z| ZoneRef { id: &z.id, kind: z.kind }).collect();
            engine.evaluate_arrived(reading, arrived_ms, sensor, &zones, &mut self.findings);
        }
        drop(engine);
        drop(registry);
        if self.findings.is_empty() {
            return;
        }
        // One fsync of the journal per batch of findings; the book is released before the changes are published.
        app.apply_findings(self.findings.drain(..));
    }
}

/// Time-driven rules (deadman, forecast expiry) and durability: a tick every 10 s, the engine's window snapshot every
/// minute, a checkpoint of the alert journal every hour — and at every tick while a journal write has failed (a full
/// disk), so that the transitions kept in memory become durable as soon as space returns. `dir`: the alert journal's
/// folder (`None` without a data dir: nothing to save).
pub async fn housekeeping(app: Arc<App>, dir: Option<PathBuf>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        let mut findings = Vec::new();
        {
            let mut engine = app.alerts.engine.lock();
            engine.tick(now_ms(), &mut findings);
            // A partner warning can come into force after it arrives, and expire between inbound events.
            if let Some(inbound) = &app.partners.inbound {
                engine.set_external(inbound.active(), now_ms(), &mut findings);
            }
            let book = app.alerts.book.lock();
            crate::metrics::record_rules(&engine.counters, &book.counters);
            crate::metrics::record_alerts(book.all());
        }
        if !findings.is_empty() {
            app.apply_findings(findings);
        }
        // Public warnings on issue time: coalesced changes whose interval passed, flapping ones that settled.
        app.publication_due(now_ms());
        if ticks.is_multiple_of(6) {
            app.save_publication();
        }
        let Some(dir) = &dir else { continue };
        if ticks.is_multiple_of(6) {
            let snapshot = app.alerts.engine.lock().snapshot();
            let dir = dir.clone();
            let saved =
                tokio::task::spawn_blocking(move || alerting::engine::save_engine_snapshot(&dir, &snapshot)).await;
            if !matches!(saved, Ok(Ok(()))) {
                tracing::error!("could not save the rules snapshot");
            }
        }
        if ticks.is_multiple_of(360) || app.alerts.book.lock().needs_checkpoint() {
            if let Err(e) = app.alerts.book.lock().checkpoint() {
                tracing::error!(error = %e, "could not checkpoint the alert journal");
            }
        }
    }
}
