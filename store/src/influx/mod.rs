//! The InfluxDB v2 sink: readings as line protocol to `/api/v2/write`, through an on-disk spool when the server is
//! away.
//!
//! [`InfluxSink::send`] is called on ingest's hot thread: it clones the readings onto an unbounded channel guarded by
//! a reading count (`queue_readings`) and returns; past the bound it drops and counts. Everything else happens on the
//! sink's own thread, which runs a single-threaded tokio runtime for the `influxdb2` client ([`deliver`]): batching,
//! timeouts, retries with backoff and the spool ([`spool`]). Line formatting is in [`line`].

mod deliver;
mod line;
mod spool;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use ingest::{Reading, Sensor};
use tokio::sync::mpsc::UnboundedSender;

pub use line::UNREGISTERED;

use crate::embedded::wall_clock_ms;
use crate::metrics::INFLUX;
use crate::{InfluxConfig, StoreError};
use deliver::{Counters, Delivery, Input};

/// A point-in-time copy of one sink's counters. Points = readings (one line each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SinkStats {
    /// Points the server acknowledged, directly or from the spool.
    pub written: u64,
    /// Points that went through the spool.
    pub spooled: u64,
    pub failed_requests: u64,
    /// Requests sent again after a failure and a backoff.
    pub retried: u64,
    /// Points `send` refused because the sink's queue was full.
    pub dropped_queue_full: u64,
    /// Points lost at the spool's cap (oldest deleted or newest refused, per policy) or to a spool write error.
    pub dropped_spool_full: u64,
    /// Points the server refused with a status no retry can fix (or that line protocol cannot carry).
    pub rejected: u64,
    /// Incomplete lines cut from the spool at start (a crash mid-append).
    pub torn: u64,
    /// Readings waiting to be formatted.
    pub queued: usize,
    /// Unacknowledged bytes in the spool.
    pub spool_bytes: u64,
    /// Age of the oldest spool segment (updated twice a second).
    pub spool_age_s: i64,
    /// False from a failed request until the next success.
    pub healthy: bool,
}

pub struct InfluxSink {
    /// To the sink's task; dropped on shutdown, which tells the task to hand everything to the server or the spool.
    input: Option<UnboundedSender<Input>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    queue_readings: usize,
    spool_dir: PathBuf,
    /// Last time an overflow was logged (wall ms): a sustained overflow logs once a second.
    last_overflow_log_ms: AtomicI64,
}

impl InfluxSink {
    /// Opens the spool in `spool_dir` (replaying whatever a previous run left there) and starts the sink's thread.
    /// `sensors` gives each reading its measurement and tags; later registry changes reach the sink through
    /// [`Self::registry_observer`] (or [`Self::set_sensor`]).
    pub fn start<'a>(
        config: InfluxConfig,
        spool_dir: &Path,
        sensors: impl IntoIterator<Item = &'a Sensor>,
    ) -> Result<InfluxSink, StoreError> {
        config.check()?;
        // The influxdb2 client panics on a URL it cannot parse; check it here so a typo is a config error.
        url::Url::parse(&config.url).map_err(|e| StoreError::Config(format!("influx url `{}`: {e}", config.url)))?;
        let client = influxdb2::ClientBuilder::new(config.url.as_str(), config.org.as_str(), config.token.as_str())
            .build()
            .map_err(|e| StoreError::Config(format!("influx client: {e}")))?;
        let (spool, recovered) =
            spool::Spool::open(spool_dir, config.spool_max_bytes, config.spool_segment_bytes, config.on_spool_full)?;
        let counters = Arc::new(Counters::default());
        // Known before the thread starts, so stats() right after start() already shows the inherited spool.
        counters.spool_bytes.store(recovered.bytes, Ordering::Relaxed);
        INFLUX.spool_bytes.set(recovered.bytes as i64);
        if recovered.torn_lines > 0 {
            counters.torn.fetch_add(recovered.torn_lines, Ordering::Relaxed);
            INFLUX.dropped.with_label_values(&["torn"]).inc_by(recovered.torn_lines);
            tracing::warn!(lines = recovered.torn_lines, "influx spool: cut an incomplete line left by a crash");
        }
        if recovered.bytes > 0 {
            tracing::info!(
                segments = recovered.segments,
                bytes = recovered.bytes,
                "influx spool: replaying what the previous run could not send"
            );
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("influx-sink")
            .build()
            .map_err(|e| StoreError::io(spool_dir, e))?;
        let queue_readings = config.queue_readings;
        tracing::info!(?config, spool = %spool_dir.display(), "InfluxDB sink started");
        let delivery = Delivery::new(config, client, spool, sensors, counters.clone());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("influx-sink".into())
            .spawn(move || runtime.block_on(delivery.run(rx)))
            .map_err(|e| StoreError::io(spool_dir, e))?;
        Ok(InfluxSink {
            input: Some(tx),
            thread: Some(thread),
            counters,
            queue_readings,
            spool_dir: spool_dir.to_owned(),
            last_overflow_log_ms: AtomicI64::new(0),
        })
    }

    pub fn spool_dir(&self) -> &Path {
        &self.spool_dir
    }

    /// Queues readings for the sink and returns at once. Returns false when they were dropped (queue full, or the
    /// sink has stopped), counted in `dc_store_influx_dropped_total{reason="queue_full"}` and logged once a second.
    pub fn send(&self, readings: &[Reading]) -> bool {
        if readings.is_empty() {
            return true;
        }
        let n = readings.len();
        let queued = self.counters.queued.fetch_add(n, Ordering::Relaxed) + n;
        let sent = queued <= self.queue_readings
            && self.input.as_ref().is_some_and(|tx| tx.send(Input::Readings(readings.to_vec())).is_ok());
        if !sent {
            self.counters.queued.fetch_sub(n, Ordering::Relaxed);
            self.counters.dropped_queue_full.fetch_add(n as u64, Ordering::Relaxed);
            INFLUX.dropped.with_label_values(&["queue_full"]).inc_by(n as u64);
            let now = wall_clock_ms();
            let last = self.last_overflow_log_ms.load(Ordering::Relaxed);
            if now - last >= 1000
                && self.last_overflow_log_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                tracing::warn!(
                    total_dropped = self.counters.dropped_queue_full.load(Ordering::Relaxed),
                    "influx sink queue full: dropping readings"
                );
            }
        }
        sent
    }

    /// Tells the sink about a sensor added or changed in the registry (measurement, agency, position).
    pub fn set_sensor(&self, sensor: &Sensor) {
        if let Some(tx) = &self.input {
            // Fails only when the task has stopped, and then nothing will be written anyway.
            let _ = tx.send(Input::Sensor(Box::new(sensor.clone())));
        }
    }

    /// What the registry calls on every change ([`ingest::SensorRegistry::observe`]), so that a sensor added, moved
    /// or re-assigned over the API is written under its own measurement and tags from its next reading on — not as
    /// `unregistered_<metric>` until a restart, which would split one sensor's history into two series. The change
    /// travels on the readings' own queue, ahead of every reading validated against it. The observer holds the queue
    /// weakly: the registry outliving the sink must not keep the sink's task waiting for more input at shutdown.
    pub fn registry_observer(&self) -> ingest::registry::SensorObserver {
        let input = self.input.as_ref().map(UnboundedSender::downgrade);
        Arc::new(move |sensor: &Sensor| {
            if let Some(tx) = input.as_ref().and_then(|weak| weak.upgrade()) {
                let _ = tx.send(Input::Sensor(Box::new(sensor.clone())));
            }
        })
    }

    /// Sends the partial batch now and blocks until everything sent before this call is acknowledged by the server
    /// or safely in the spool (it does not wait for the spool to drain: see [`Self::stats`]).
    pub fn flush(&self) -> Result<(), StoreError> {
        let (reply, done) = mpsc::sync_channel(1);
        let tx = self.input.as_ref().ok_or(StoreError::Stopped("influx sink"))?;
        tx.send(Input::Flush(reply)).map_err(|_| StoreError::Stopped("influx sink"))?;
        done.recv().map_err(|_| StoreError::Stopped("influx sink"))
    }

    pub fn stats(&self) -> SinkStats {
        let c = &self.counters;
        SinkStats {
            written: c.written.load(Ordering::Relaxed),
            spooled: c.spooled.load(Ordering::Relaxed),
            failed_requests: c.failed_requests.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            dropped_queue_full: c.dropped_queue_full.load(Ordering::Relaxed),
            dropped_spool_full: c.dropped_spool_full.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            torn: c.torn.load(Ordering::Relaxed),
            queued: c.queued.load(Ordering::Relaxed),
            spool_bytes: c.spool_bytes.load(Ordering::Relaxed),
            spool_age_s: c.spool_age_s.load(Ordering::Relaxed),
            healthy: c.healthy.load(Ordering::Relaxed),
        }
    }

    /// Stops the sink: the partial batch and anything not yet acknowledged go to the spool (requests in flight get
    /// up to `request_timeout_ms` to finish), and the next start replays them. Dropping the sink does the same.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.input.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("influx sink thread panicked");
            }
        }
    }
}

impl Drop for InfluxSink {
    fn drop(&mut self) {
        self.stop();
    }
}
