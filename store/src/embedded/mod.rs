//! The embedded readings store: SQLite in WAL mode at `<data_dir>/readings.sqlite`.
//!
//! [`ReadingStore::append`] is called on ingest's hot thread, so it only clones the readings onto a queue for the
//! writer thread ([`writer`]) and returns; when the queue holds `queue_readings` readings it drops and counts
//! instead of waiting. History queries ([`query`]) run on their own read-only connection: WAL lets them read while
//! the writer writes. The vehicle detectors' long-term speed baseline ([`baseline`]) is kept beside the readings by
//! the same writer, with its own, longer window.

pub mod baseline;
mod query;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use ingest::{Metric, Reading, Sensor, SensorKind};
use rusqlite::Connection;

pub use query::{Bucket, History, Point, Samples};
pub use schema::FILE;

use crate::metrics::STORE;
use crate::{StoreConfig, StoreError};
pub(crate) use writer::wall_clock_ms;
use writer::{Command, Counters, Writer};

/// A point-in-time copy of one store's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    pub written: u64,
    pub dropped: u64,
    pub queued: usize,
    pub write_errors: u64,
    pub retention_deleted: u64,
}

/// The embedded store. `Send + Sync`: share it in an `Arc` between the ingest thread (append) and the web edge
/// (history, from `spawn_blocking` since queries do disk I/O).
pub struct ReadingStore {
    path: PathBuf,
    /// To the writer thread; dropped (to let the writer finish its queue and stop) on shutdown.
    commands: Option<Sender<Command>>,
    writer: Option<JoinHandle<()>>,
    /// Queries take turns on one connection; they are short range scans, and one more connection per concurrent
    /// request would buy little on a 2-core machine.
    reader: Mutex<Connection>,
    counters: Arc<Counters>,
    config: StoreConfig,
    /// Last time an overflow was logged (wall ms), so a sustained overflow logs once a second, not per batch.
    last_overflow_log_ms: AtomicI64,
    /// The registry observers' way to the writer; emptied on shutdown so that an observer the registry still holds
    /// cannot keep the writer's channel open (the writer stops when every sender is gone).
    observer_link: Arc<Mutex<Option<Sender<Command>>>>,
}

/// Whether the speed baseline keeps a detector: registered vehicle detectors that still report.
fn is_tracked(sensor: &Sensor) -> bool {
    sensor.kind == SensorKind::VehicleDetector && !sensor.retired
}

impl ReadingStore {
    /// Opens or creates the store in `dir` and starts its writer thread.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<ReadingStore, StoreError> {
        config.check()?;
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let path = dir.join(schema::FILE);
        let conn = schema::open_writer(&path, config.cache_mib)?;
        let counters = Arc::new(Counters::default());
        let writer = Writer::new(conn, &config, counters.clone())?;
        let reader = schema::open_reader(&path)?;
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::io(&path, e))?;
        tracing::info!(path = %path.display(), retention_days = config.retention_days, "embedded store open");
        Ok(ReadingStore {
            path,
            observer_link: Arc::new(Mutex::new(Some(tx.clone()))),
            commands: Some(tx),
            writer: Some(handle),
            reader: Mutex::new(reader),
            counters,
            config,
            last_overflow_log_ms: AtomicI64::new(0),
        })
    }

    /// The SQLite file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues readings for the writer and returns at once. Returns false when they were dropped (queue full, or the
    /// writer has stopped); the drop is counted in `dc_store_dropped_total` and logged at most once a second.
    pub fn append(&self, readings: &[Reading]) -> bool {
        if readings.is_empty() {
            return true;
        }
        let n = readings.len();
        let queued = self.counters.queued.fetch_add(n, Ordering::Relaxed) + n;
        if queued > self.config.queue_readings {
            self.counters.queued.fetch_sub(n, Ordering::Relaxed);
            self.overflow(n, "write queue full");
            return false;
        }
        let sent = self.commands.as_ref().is_some_and(|tx| tx.send(Command::Append(readings.to_vec())).is_ok());
        if !sent {
            self.counters.queued.fetch_sub(n, Ordering::Relaxed);
            self.overflow(n, "writer stopped");
        }
        sent
    }

    fn overflow(&self, n: usize, why: &'static str) {
        self.counters.dropped.fetch_add(n as u64, Ordering::Relaxed);
        STORE.dropped.inc_by(n as u64);
        let now = wall_clock_ms();
        let last = self.last_overflow_log_ms.load(Ordering::Relaxed);
        if now - last >= 1000
            && self.last_overflow_log_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(
                reason = why,
                total_dropped = self.counters.dropped.load(Ordering::Relaxed),
                "embedded store dropping readings"
            );
        }
    }

    /// Blocks until every reading appended before this call is committed (and so visible to [`Self::history`]).
    pub fn flush(&self) -> Result<(), StoreError> {
        let (reply, done) = mpsc::sync_channel(1);
        let tx = self.commands.as_ref().ok_or(StoreError::Stopped("store writer"))?;
        tx.send(Command::Flush(reply)).map_err(|_| StoreError::Stopped("store writer"))?;
        done.recv().map_err(|_| StoreError::Stopped("store writer"))
    }

    /// Enforces retention now as if the wall clock read `now_ms` (the background timer uses the real clock); returns
    /// the number of readings deleted. Readings older than `min(now_ms, newest stored) - retention` go.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<u64, StoreError> {
        let (reply, done) = mpsc::sync_channel(1);
        let tx = self.commands.as_ref().ok_or(StoreError::Stopped("store writer"))?;
        tx.send(Command::Retain { now_ms, reply }).map_err(|_| StoreError::Stopped("store writer"))?;
        done.recv().map_err(|_| StoreError::Stopped("store writer"))?
    }

    /// One sensor's metric over `[from_ms, to_ms)`: every reading, or with `step_ms` min/max/mean/sum/count per
    /// step. Sees what is committed; call [`Self::flush`] first to include readings just appended.
    pub fn history(
        &self,
        sensor_id: &str,
        metric: Metric,
        from_ms: i64,
        to_ms: i64,
        step_ms: Option<i64>,
    ) -> Result<History, StoreError> {
        // A query that panicked mid-way left nothing half-done in a read-only connection; keep serving.
        let conn = self.reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        query::history(&conn, sensor_id, metric, from_ms, to_ms, step_ms, self.config.max_points)
    }

    /// Every committed reading of each series after that series' cutoff, in event-time order, at most `limit`:
    /// `after(sensor_id, metric)` gives the cutoff (readings with a later timestamp come back) or `None` to skip
    /// the series. The rule engine replays these after a restart to refill the windows its last snapshot missed.
    /// Positions of mobile units are not stored, so their readings come back without one.
    pub fn readings_after(
        &self,
        after: &dyn Fn(&str, Metric) -> Option<i64>,
        limit: usize,
    ) -> Result<Vec<Reading>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        query::readings_after(&conn, after, limit)
    }

    /// Tells the speed baseline which detectors to keep: of `sensors`, the vehicle detectors not retired are
    /// tracked, the others dropped (with their slots). Call it with the registry at start, then hand
    /// [`Self::registry_observer`] to the registry for every change. Queued like readings: a reading appended after
    /// this call is aggregated if its detector is tracked.
    pub fn track_detectors<'a>(&self, sensors: impl IntoIterator<Item = &'a Sensor>) {
        let changes: Vec<(String, bool)> =
            sensors.into_iter().filter(|s| is_tracked(s)).map(|s| (s.id.clone(), true)).collect();
        if changes.is_empty() {
            return;
        }
        if let Some(tx) = self.commands.as_ref() {
            let _ = tx.send(Command::Track(changes));
        }
    }

    /// A registry observer that keeps the speed baseline's detectors in step with the registry (see
    /// [`Self::track_detectors`]). Holds only a weak link to the writer: a stopped store ignores changes.
    pub fn registry_observer(&self) -> ingest::registry::SensorObserver {
        let link = Arc::clone(&self.observer_link);
        Arc::new(move |sensor: &Sensor| {
            // Every change is sent: a detector retired, or re-registered as another kind, stops being tracked.
            let link = link.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(tx) = link.as_ref() {
                let _ = tx.send(Command::Track(vec![(sensor.id.clone(), is_tracked(sensor))]));
            }
        })
    }

    /// A vehicle detector's long-term speed baseline over `[from_ms, to_ms)`: the mean speed of each 10-minute slot
    /// ([`baseline`]), kept `baseline_weeks` whatever `retention_days` is. What `slowed` is learned from.
    pub fn speed_baseline(&self, sensor_id: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Point>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        query::speed_baseline(&conn, sensor_id, from_ms, to_ms)
    }

    /// The store's configuration (the binary reads `baseline_weeks` from it).
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            written: self.counters.written.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            queued: self.counters.queued.load(Ordering::Relaxed),
            write_errors: self.counters.write_errors.load(Ordering::Relaxed),
            retention_deleted: self.counters.retention_deleted.load(Ordering::Relaxed),
        }
    }

    /// Writes everything queued, then stops the writer. Dropping the store does the same.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        // Closing the channel is the stop signal: the writer drains what is queued, then sees the disconnect.
        self.commands.take();
        self.observer_link.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(handle) = self.writer.take() {
            if handle.join().is_err() {
                tracing::error!("embedded store writer panicked");
            }
        }
    }
}

impl Drop for ReadingStore {
    fn drop(&mut self) {
        self.stop();
    }
}
