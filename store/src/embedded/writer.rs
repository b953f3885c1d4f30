//! The writer thread: the only owner of the write connection.
//!
//! It takes whatever readings are queued (up to `max_batch`) and writes them in one transaction with one prepared
//! statement, so the commit cost is shared by many rows and grows the batch exactly when the writer falls behind.
//! Between batches it enforces retention on a timer. The vehicle detectors' speed baseline (`baseline.rs`) is kept
//! in the same transactions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ingest::{Metric, Reading};
use rusqlite::{params, Connection};

use super::baseline::SpeedBaseline;
use crate::metrics::STORE;
use crate::StoreError;

/// Number of metrics in the vocabulary: the width of a sensor's series-id row.
const METRICS: usize = Metric::ALL.len();

/// Requests to the writer, in the order the store's users made them.
pub enum Command {
    Append(Vec<Reading>),
    /// Answered once everything queued before it is committed.
    Flush(SyncSender<()>),
    /// Enforce retention now, as if the wall clock read `now_ms`; answers the number of rows deleted.
    Retain {
        now_ms: i64,
        reply: SyncSender<Result<u64, StoreError>>,
    },
    /// Start (`true`) or stop tracking these vehicle detectors in the speed baseline.
    Track(Vec<(String, bool)>),
}

/// Counters shared by the writer and its handle (the per-instance view behind `ReadingStore::stats`).
#[derive(Default)]
pub struct Counters {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub write_errors: AtomicU64,
    pub retention_deleted: AtomicU64,
    /// Readings handed to `append` and not yet taken by the writer; `append` refuses past the configured bound.
    pub queued: AtomicUsize,
}

pub struct Writer {
    conn: Connection,
    /// sensor id → series id per metric (indexed by the metric's place in `Metric::ALL`; 0 = no series yet). Looked
    /// up by `&str` for every reading, so the hot loop allocates nothing for known sensors.
    series: HashMap<String, [i64; METRICS]>,
    /// Newest event time stored: retention never deletes relative to a time later than this, so a replayed or
    /// long-stopped installation keeps its last window instead of finding it wiped by the wall clock.
    newest_ts: i64,
    retention_ms: i64,
    retention_interval: Duration,
    max_batch: usize,
    counters: Arc<Counters>,
    /// The tracked detectors' long-term speed baseline.
    baseline: SpeedBaseline,
}

impl Writer {
    pub fn new(conn: Connection, cfg: &crate::StoreConfig, counters: Arc<Counters>) -> Result<Self, StoreError> {
        let mut writer = Writer {
            conn,
            series: HashMap::new(),
            newest_ts: i64::MIN,
            retention_ms: cfg.retention_ms(),
            retention_interval: Duration::from_secs(cfg.retention_interval_s),
            max_batch: cfg.max_batch,
            counters,
            baseline: SpeedBaseline::new(cfg),
        };
        writer.load_series()?;
        // The newest reading of each series is the last row of its range: one index probe per series.
        let mut newest = i64::MIN;
        {
            let mut stmt = writer.conn.prepare("SELECT max(ts) FROM readings WHERE series = ?1")?;
            for id in writer.series.values().flat_map(|ids| ids.iter()).filter(|id| **id != 0) {
                let ts: Option<i64> = stmt.query_row([id], |row| row.get(0))?;
                newest = newest.max(ts.unwrap_or(i64::MIN));
            }
        }
        writer.newest_ts = newest;
        Ok(writer)
    }

    /// (Re)reads the series table into the cache; also the way back to a consistent cache after a failed transaction.
    fn load_series(&mut self) -> Result<(), StoreError> {
        self.series.clear();
        let mut stmt = self.conn.prepare("SELECT id, sensor_id, metric FROM series")?;
        let rows =
            stmt.query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?)))?;
        for row in rows {
            let (id, sensor, metric) = row?;
            // A metric dropped from the vocabulary keeps its rows (history) but can receive no new ones.
            if let Some(m) = Metric::from_name(&metric) {
                self.series.entry(sensor).or_insert([0; METRICS])[m as usize] = id;
            }
        }
        Ok(())
    }

    pub fn run(mut self, rx: Receiver<Command>) {
        let mut batch: Vec<Reading> = Vec::new();
        let mut next_retention = Instant::now() + self.retention_interval;
        loop {
            // Checked on every turn, not only when the queue is idle: a writer that is never idle still retains.
            if Instant::now() >= next_retention {
                self.retain_logged(wall_clock_ms());
                next_retention = Instant::now() + self.retention_interval;
            }
            let wait = next_retention.saturating_duration_since(Instant::now());
            let first = match rx.recv_timeout(wait) {
                Ok(cmd) => cmd,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // Gather appends until the batch is full or a control command arrives; a control command is handled
            // after the readings queued before it are committed, which is what Flush promises.
            let mut control = None;
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Append(mut readings) => {
                        self.counters.queued.fetch_sub(readings.len(), Ordering::Relaxed);
                        batch.append(&mut readings);
                    }
                    other => {
                        control = Some(other);
                        break;
                    }
                }
                if batch.len() >= self.max_batch {
                    break;
                }
                match rx.try_recv() {
                    Ok(cmd) => next = Some(cmd),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
                }
            }
            STORE.queued.set(self.counters.queued.load(Ordering::Relaxed) as i64);
            if !batch.is_empty() {
                self.write_logged(&batch);
                batch.clear();
            }
            match control {
                Some(Command::Flush(reply)) => {
                    // The asker may have given up waiting; nothing to do then.
                    let _ = reply.send(());
                }
                Some(Command::Retain { now_ms, reply }) => {
                    let _ = reply.send(self.retain(now_ms));
                }
                Some(Command::Track(changes)) => {
                    if let Err(e) = self.track(changes) {
                        tracing::error!(error = %e, "speed baseline: tracking detectors failed");
                    }
                }
                Some(Command::Append(_)) | None => {}
            }
        }
        // The handle is gone: everything it queued has been received and written above.
        tracing::debug!("embedded store writer stopped");
    }

    fn write_logged(&mut self, batch: &[Reading]) {
        match self.write(batch) {
            Ok(written) => {
                self.counters.written.fetch_add(written as u64, Ordering::Relaxed);
                STORE.written.inc_by(written as u64);
            }
            Err(e) => {
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                STORE.write_errors.inc();
                tracing::error!(error = %e, readings = batch.len(), "embedded store: write transaction failed, readings lost");
                self.baseline.discard();
                // Series ids created inside the failed transaction were rolled back; the cache must forget them.
                if let Err(e) = self.load_series() {
                    tracing::error!(error = %e, "embedded store: cannot reload the series table");
                }
            }
        }
    }

    /// Writes one batch in one transaction; returns the rows written.
    fn write(&mut self, batch: &[Reading]) -> Result<usize, StoreError> {
        let now = wall_clock_ms();
        let tx = self.conn.transaction()?;
        let mut rows: Vec<(i64, i64, f64)> = Vec::with_capacity(batch.len());
        let mut skipped = 0u64;
        {
            let mut create =
                tx.prepare_cached("INSERT INTO series (sensor_id, metric) VALUES (?1, ?2) RETURNING id")?;
            for r in batch {
                // SQLite stores NaN as NULL, which the NOT NULL column refuses, failing the whole batch; validated
                // readings are finite, so this only guards against a caller that skipped validation.
                if !r.value.is_finite() {
                    skipped += 1;
                    continue;
                }
                let slot = r.metric as usize;
                let id = match self.series.get(r.sensor_id.as_str()).map(|ids| ids[slot]) {
                    Some(id) if id != 0 => id,
                    _ => {
                        let id: i64 = create.query_row(params![r.sensor_id, r.metric.name()], |row| row.get(0))?;
                        self.series.entry(r.sensor_id.clone()).or_insert([0; METRICS])[slot] = id;
                        id
                    }
                };
                if r.metric == Metric::SpeedKmh && self.baseline.tracks(&r.sensor_id) {
                    self.baseline.add(id, r.ts_ms, r.value, now, self.newest_ts);
                }
                rows.push((id, r.ts_ms, r.value));
            }
        }
        // In key order, each insert lands next to the previous one in the clustered index: SQLite walks the B-tree
        // leaf by leaf instead of jumping between thousands of series. Stable, so that of two readings with the same
        // key the later one still wins below.
        rows.sort_by_key(|(series, ts, _)| (*series, *ts));
        {
            // Duplicates (a QoS 1 redelivery, a gateway resending its buffer) replace the earlier row: one value per
            // (sensor, metric, time), as InfluxDB does.
            let mut insert =
                tx.prepare_cached("INSERT OR REPLACE INTO readings (series, ts, value) VALUES (?1, ?2, ?3)")?;
            for (series, ts, value) in &rows {
                insert.execute(params![series, ts, value])?;
                self.newest_ts = self.newest_ts.max(*ts);
            }
        }
        self.baseline.write(&tx)?;
        tx.commit()?;
        if skipped > 0 {
            self.counters.dropped.fetch_add(skipped, Ordering::Relaxed);
            STORE.dropped.inc_by(skipped);
            tracing::warn!(skipped, "embedded store: readings with non-finite values skipped");
        }
        Ok(rows.len())
    }

    fn retain_logged(&mut self, now_ms: i64) {
        if let Err(e) = self.retain(now_ms) {
            tracing::error!(error = %e, "embedded store: retention failed; will retry");
        }
    }

    /// Deletes readings older than the retention window, one range per series, a few hundred series per transaction
    /// so that ingest's batches never wait long behind a big delete.
    fn retain(&mut self, now_ms: i64) -> Result<u64, StoreError> {
        if self.newest_ts == i64::MIN {
            return Ok(0);
        }
        let cutoff = now_ms.min(self.newest_ts).saturating_sub(self.retention_ms);
        let ids: Vec<i64> = self.series.values().flat_map(|ids| ids.iter().copied()).filter(|id| *id != 0).collect();
        let mut deleted = 0u64;
        for chunk in ids.chunks(256) {
            let tx = self.conn.transaction()?;
            {
                let mut delete = tx.prepare_cached("DELETE FROM readings WHERE series = ?1 AND ts < ?2")?;
                for id in chunk {
                    deleted += delete.execute(params![id, cutoff])? as u64;
                }
            }
            tx.commit()?;
        }
        if deleted > 0 {
            self.counters.retention_deleted.fetch_add(deleted, Ordering::Relaxed);
            STORE.retention_deleted.inc_by(deleted);
            tracing::info!(deleted, cutoff_ms = cutoff, "embedded store: retention deleted old readings");
        }
        // The speed baseline keeps its own, longer window: every speed series, tracked or not, so that the slots of
        // a detector no longer tracked age out too.
        let speed: Vec<i64> =
            self.series.values().map(|ids| ids[Metric::SpeedKmh as usize]).filter(|id| *id != 0).collect();
        let mut slots = 0u64;
        for chunk in speed.chunks(256) {
            let tx = self.conn.transaction()?;
            slots += self.baseline.retain(&tx, chunk, now_ms, self.newest_ts)?;
            tx.commit()?;
        }
        if slots > 0 {
            STORE.baseline_deleted.inc_by(slots);
            tracing::debug!(slots, "speed baseline: retention deleted old slots");
        }
        Ok(deleted)
    }

    fn track(&mut self, changes: Vec<(String, bool)>) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let series = &self.series;
        let series_of = |id: &str| series.get(id).map(|ids| ids[Metric::SpeedKmh as usize]).filter(|id| *id != 0);
        self.baseline.track(&tx, changes, &series_of)?;
        tx.commit()?;
        Ok(())
    }
}

pub fn wall_clock_ms() -> i64 {
    // A clock before 1970 is a broken host; treating it as 0 keeps retention from deleting anything.
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
