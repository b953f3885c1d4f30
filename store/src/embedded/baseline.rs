//! The long-term speed baseline: each tracked vehicle detector's mean `speed_kmh` per 10-minute slot, kept for
//! `baseline_weeks` (8 by default) while raw readings are kept only `retention_days` (7).
//!
//! Why: the traffic rules judge a detector `slowed` against its own normal for that hour of the week, learned with
//! median and MAD (`alerting::TrafficBaseline`) from at least `[traffic] baseline_min_weeks` (3) weeks. The raw table
//! cannot hold that without keeping every reading of every sensor for weeks; this table holds what the statistics
//! need and nothing else: one row per detector and slot, six per hour. A week of one detector is 1,008 rows (about
//! 25 bytes each) against 30,240 raw rows of its three metrics at one reading set a minute, so eight weeks of the
//! baseline cost less than one week of raw readings. The median over the slots of an hour of the week, across weeks,
//! is robust as the raw median is: a crash or a holiday moves a few slots, not the median.
//!
//! Bounds (an attacker's device ids must not grow it):
//! - only **tracked** detectors are aggregated: the binary tracks the registry's vehicle detectors that are not
//!   retired ([`crate::ReadingStore::track_detectors`], then every registry change), at most
//!   `baseline_max_detectors` of them (past it refused and counted); an untracked detector's rows are deleted;
//! - per detector at most `baseline_weeks × 1,008` slots (+ a few ahead): readings older than the window are not
//!   aggregated, readings more than [`MAX_AHEAD_MS`] ahead of the wall clock are refused (counted), and retention
//!   deletes slots older than `min(now, newest stored) − baseline_weeks`, as it does for raw readings;
//! - in memory: the set of tracked ids, and per write batch one entry per (detector, slot) it touches.
//!
//! Maintained in the writer's transactions, so a batch's readings and their slots commit together. A reading
//! delivered twice (a QoS 1 redelivery replaces its raw row) is counted twice in its slot's mean: the mean of a slot
//! moves by less than (value − mean)/n, and the median over dozens of slots does not see it.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, Transaction};

use crate::metrics::STORE;
use crate::StoreError;

/// Width of a slot. Divides an hour, so every slot lies in one hour of the week (Taiwan's offset is whole hours).
pub const SLOT_MS: i64 = 10 * 60 * 1000;
/// Slots per week.
pub const SLOTS_PER_WEEK: i64 = 7 * 24 * 3_600_000 / SLOT_MS;
/// A reading stamped further ahead of the wall clock than this is not aggregated: it would hold a slot the window
/// cannot retire (validation already refuses minutes ahead; this guards callers that skip it).
pub const MAX_AHEAD_MS: i64 = 24 * 3_600_000;

/// Sum and count of one (series, slot) within a batch.
type Pending = HashMap<(i64, i64), (f64, i64)>;

/// The writer's part of the baseline: which detectors are tracked, and the batch's slots before they are written.
pub(crate) struct SpeedBaseline {
    /// Tracked detector ids (sensor ids, the `series.sensor_id` of their `speed_kmh` series).
    tracked: HashSet<String>,
    /// How long slots are kept (`baseline_weeks`).
    keep_ms: i64,
    max_detectors: usize,
    /// The current batch's slots, written by [`Self::write`] in the batch's transaction.
    pending: Pending,
}

impl SpeedBaseline {
    pub fn new(cfg: &crate::StoreConfig) -> SpeedBaseline {
        SpeedBaseline {
            tracked: HashSet::new(),
            keep_ms: cfg.baseline_ms(),
            max_detectors: cfg.baseline_max_detectors,
            pending: Pending::new(),
        }
    }

    pub fn tracks(&self, sensor_id: &str) -> bool {
        self.tracked.contains(sensor_id)
    }

    /// Slots before this (exclusive) are outside the window, given the newest event time stored.
    fn oldest_slot(&self, now_ms: i64, newest_ts: i64) -> i64 {
        now_ms.min(newest_ts).saturating_sub(self.keep_ms).div_euclid(SLOT_MS)
    }

    /// Adds one speed reading of a tracked detector (`series` is its `speed_kmh` series) to the batch.
    pub fn add(&mut self, series: i64, ts_ms: i64, speed: f64, now_ms: i64, newest_ts: i64) {
        if ts_ms > now_ms.saturating_add(MAX_AHEAD_MS) {
            STORE.baseline_refused.with_label_values(&["ahead"]).inc();
            return;
        }
        let slot = ts_ms.div_euclid(SLOT_MS);
        // Late history (a gateway emptying an old buffer) older than the window would be deleted at the next
        // retention pass; not worth writing. `newest_ts` MIN: the store is empty, every reading is in the window.
        if newest_ts != i64::MIN && slot < self.oldest_slot(now_ms, newest_ts) {
            STORE.baseline_refused.with_label_values(&["too_old"]).inc();
            return;
        }
        let e = self.pending.entry((series, slot)).or_insert((0.0, 0));
        e.0 += speed;
        e.1 += 1;
    }

    /// Writes the batch's slots into `tx` (adding to slots earlier batches began).
    pub fn write(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut upsert = tx.prepare_cached(
            "INSERT INTO speed_slots (series, slot, sum, n) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (series, slot) DO UPDATE SET sum = sum + excluded.sum, n = n + excluded.n",
        )?;
        for ((series, slot), (sum, n)) in self.pending.drain() {
            upsert.execute(params![series, slot, sum, n])?;
        }
        Ok(())
    }

    /// Forgets the batch's slots (its transaction failed).
    pub fn discard(&mut self) {
        self.pending.clear();
    }

    /// Starts or stops tracking detectors. A newly tracked detector with no slots yet is filled from the raw
    /// readings the store still holds (an upgrade, or a detector registered after its readings arrived); an
    /// untracked one loses its slots. `series_of` gives a detector's `speed_kmh` series, if it has one.
    pub fn track(
        &mut self,
        tx: &Transaction<'_>,
        changes: Vec<(String, bool)>,
        series_of: &dyn Fn(&str) -> Option<i64>,
    ) -> Result<(), StoreError> {
        for (id, on) in changes {
            if on {
                if self.tracked.contains(&id) {
                    continue;
                }
                if self.tracked.len() >= self.max_detectors {
                    STORE.baseline_refused.with_label_values(&["too_many_detectors"]).inc();
                    tracing::warn!(
                        detector = %id,
                        limit = self.max_detectors,
                        "speed baseline: too many detectors; this one gets no long-term baseline \
                         (raise [store] baseline_max_detectors)"
                    );
                    continue;
                }
                if let Some(series) = series_of(&id) {
                    let empty: bool = tx
                        .prepare_cached("SELECT NOT EXISTS (SELECT 1 FROM speed_slots WHERE series = ?1)")?
                        .query_row([series], |row| row.get(0))?;
                    if empty {
                        tx.prepare_cached(
                            "INSERT OR IGNORE INTO speed_slots (series, slot, sum, n)
                             SELECT series, ts / ?2, total(value), count(*) FROM readings
                             WHERE series = ?1 AND ts >= 0 GROUP BY ts / ?2",
                        )?
                        .execute(params![series, SLOT_MS])?;
                    }
                }
                self.tracked.insert(id);
            } else if self.tracked.remove(&id) {
                if let Some(series) = series_of(&id) {
                    tx.prepare_cached("DELETE FROM speed_slots WHERE series = ?1")?.execute([series])?;
                }
            }
        }
        STORE.baseline_detectors.set(self.tracked.len() as i64);
        Ok(())
    }

    /// Deletes the slots of `series` older than the window; returns how many went.
    pub fn retain(&self, tx: &Transaction<'_>, series: &[i64], now_ms: i64, newest_ts: i64) -> Result<u64, StoreError> {
        let oldest = self.oldest_slot(now_ms, newest_ts);
        let mut delete = tx.prepare_cached("DELETE FROM speed_slots WHERE series = ?1 AND slot < ?2")?;
        let mut deleted = 0u64;
        for id in series {
            deleted += delete.execute(params![id, oldest])? as u64;
        }
        Ok(deleted)
    }
}
