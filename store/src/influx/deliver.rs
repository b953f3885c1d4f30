//! The sink's one task: batch readings into line protocol, send batches, and fall back to the spool.
//!
//! Two modes, chosen on every turn:
//! - **direct** (server healthy, spool empty): sealed batches wait in a short in-memory queue and are sent with up
//!   to `max_in_flight` requests at once. If that queue is full (the server is slower than ingest), readings wait in
//!   the input queue; once that is half full they are batched on and spill to the spool instead of waiting, so
//!   memory stays bounded and nothing upstream slows down.
//! - **backlog** (spool not empty, or the last request failed): every new batch is appended to the spool behind what
//!   is there, and the spool is replayed in order. After a failure one chunk at a time is tried, after a backoff that
//!   doubles per failure (`retry_initial_ms` … `retry_max_ms`); the first success restores full concurrency, and
//!   once the spool is empty the sink returns to direct mode.
//!
//! Every request carries a timeout. A request that times out may still have been written by the server, so the
//! chunk can arrive twice; InfluxDB keeps one point per (series, time), so a resend overwrites rather than duplicates.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h3o::Resolution;
use influxdb2::api::write::TimestampPrecision;
use ingest::{Reading, Sensor};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::sleep_until;

use super::line::{write_line, SensorTags};
use super::spool::{Appended, Chunk, Spool};
use crate::embedded::wall_clock_ms;
use crate::metrics::INFLUX;
use crate::InfluxConfig;

/// Largest replayed request body; batches are `batch_size` lines, this only guards against very long lines.
const MAX_CHUNK_BYTES: usize = 8 << 20;
/// How long appended spool data may wait for an fsync.
const SPOOL_SYNC_AFTER: Duration = Duration::from_secs(1);

pub enum Input {
    Readings(Vec<Reading>),
    /// A sensor added or changed in the registry after start.
    Sensor(Box<Sensor>),
    /// Answered once everything sent before it is either acknowledged by the server or in the spool.
    Flush(SyncSender<()>),
}

/// Counters shared by the task and its handle (the per-instance view behind `InfluxSink::stats`).
#[derive(Default)]
pub struct Counters {
    pub written: AtomicU64,
    pub spooled: AtomicU64,
    pub failed_requests: AtomicU64,
    pub retried: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_spool_full: AtomicU64,
    pub rejected: AtomicU64,
    pub torn: AtomicU64,
    pub queued: AtomicUsize,
    pub spool_bytes: AtomicU64,
    pub spool_age_s: AtomicI64,
    pub healthy: AtomicBool,
}

struct Batch {
    body: Bytes,
    points: usize,
}

enum Job {
    Direct(Batch),
    Replay(Chunk),
}

/// Why a request did not succeed.
enum Failure {
    Timeout,
    /// Connect, reset, TLS: the request may not have reached the server.
    Transport(String),
    /// A status worth retrying (5xx, 429, 408, and the auth/bucket errors an operator fixes without losing data).
    Status(u16, String),
    /// A status no retry can fix (400 malformed, 413 too large, 422): the batch is dropped and counted.
    Rejected(u16, String),
}

impl Failure {
    fn label(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Transport(_) => "transport",
            Failure::Status(..) | Failure::Rejected(..) => "status",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("request timed out"),
            Failure::Transport(e) => write!(f, "{e}"),
            Failure::Status(s, text) | Failure::Rejected(s, text) => {
                // Server bodies can be long HTML pages; the first line says enough.
                write!(f, "HTTP {s}: {}", text.lines().next().unwrap_or("").chars().take(200).collect::<String>())
            }
        }
    }
}

pub struct Delivery {
    client: influxdb2::Client,
    org: Arc<str>,
    bucket: Arc<str>,
    cfg: InfluxConfig,
    resolution: Resolution,
    tags: HashMap<String, SensorTags>,
    /// The batch being filled and when its first line came (the flush timer starts there).
    current: Vec<u8>,
    current_points: usize,
    current_started: Option<Instant>,
    /// Sealed batches waiting for a request slot (direct mode only).
    ready: VecDeque<Batch>,
    max_ready: usize,
    spool: Spool,
    healthy: bool,
    /// A single-chunk probe is in flight (unhealthy); its failure doubles the backoff.
    probing: bool,
    backoff: Duration,
    probe_at: Instant,
    direct_in_flight: usize,
    replay_in_flight: usize,
    shutting_down: bool,
    flush_waiters: Vec<SyncSender<()>>,
    counters: Arc<Counters>,
    /// Last warning about dropped points (wall ms): a full spool during a long outage warns every 10 s, not per batch.
    last_drop_warning_ms: i64,
    outage_started: Option<Instant>,
}

type InFlight = FuturesUnordered<BoxFuture<'static, (Job, Result<(), Failure>)>>;

impl Delivery {
    pub fn new<'a>(
        cfg: InfluxConfig,
        client: influxdb2::Client,
        spool: Spool,
        sensors: impl IntoIterator<Item = &'a Sensor>,
        counters: Arc<Counters>,
    ) -> Delivery {
        // Checked in InfluxConfig::check; 9 is the documented default should that ever be bypassed.
        let resolution = Resolution::try_from(cfg.h3_resolution).unwrap_or(Resolution::Nine);
        let tags = sensors.into_iter().map(|s| (s.id.clone(), SensorTags::new(s, resolution))).collect();
        counters.healthy.store(true, Ordering::Relaxed);
        Delivery {
            client,
            org: cfg.org.as_str().into(),
            bucket: cfg.bucket.as_str().into(),
            backoff: Duration::from_millis(cfg.retry_initial_ms),
            max_ready: cfg.max_in_flight * 2,
            resolution,
            tags,
            current: Vec::new(),
            current_points: 0,
            current_started: None,
            ready: VecDeque::new(),
            spool,
            healthy: true,
            probing: false,
            probe_at: Instant::now(),
            direct_in_flight: 0,
            replay_in_flight: 0,
            shutting_down: false,
            flush_waiters: Vec::new(),
            counters,
            last_drop_warning_ms: 0,
            outage_started: None,
            cfg,
        }
    }

    pub async fn run(mut self, mut input: UnboundedReceiver<Input>) {
        let mut in_flight: InFlight = FuturesUnordered::new();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        self.publish_gauges();
        loop {
            self.pump(&mut in_flight);
            self.answer_flushes();
            if self.shutting_down && in_flight.is_empty() {
                break;
            }
            let flush_at = self.current_started.map(|t| t + self.cfg.flush_interval());
            let probe_at = (!self.healthy && !self.shutting_down && in_flight.is_empty() && self.spool.has_unsent())
                .then_some(self.probe_at);
            tokio::select! {
                Some((job, result)) = in_flight.next(), if !in_flight.is_empty() => self.on_result(job, result),
                msg = input.recv(), if !self.shutting_down && self.wants_input() => match msg {
                    Some(Input::Readings(readings)) => self.take(readings),
                    Some(Input::Sensor(sensor)) => {
                        self.tags.insert(sensor.id.clone(), SensorTags::new(&sensor, self.resolution));
                    }
                    Some(Input::Flush(reply)) => {
                        self.seal_current();
                        self.flush_waiters.push(reply);
                    }
                    None => {
                        // The handle is gone: hand off what is buffered and finish the requests in flight (each
                        // bounded by its timeout); anything not acknowledged is in the spool for the next start.
                        self.shutting_down = true;
                        self.seal_current();
                        self.spill_ready();
                    }
                },
                _ = sleep_until(flush_at.unwrap_or(far).into()), if flush_at.is_some() => self.seal_current(),
                // Only wakes the loop: pump() sends the probe.
                _ = sleep_until(probe_at.unwrap_or(far).into()), if probe_at.is_some() => {}
                _ = tick.tick() => {
                    self.spool.sync_if_older(SPOOL_SYNC_AFTER);
                    self.publish_gauges();
                }
            }
        }
        self.spool.sync();
        self.publish_gauges();
        self.answer_flushes();
        tracing::debug!(spool_bytes = self.spool.bytes(), "influx sink stopped");
    }

    /// Whether to take more readings now. While the server keeps up, or the spool is in use anyway, always. When
    /// the send queue is full in direct mode, readings are left in the input queue (memory, bounded by
    /// `queue_readings`) so a burst costs no disk writes; only once that queue is half full do they go on and spill
    /// to the spool, which is bigger than memory and still ahead of dropping.
    fn wants_input(&self) -> bool {
        !(self.healthy && self.spool.is_empty())
            || self.ready.len() < self.max_ready
            || self.counters.queued.load(Ordering::Relaxed) > self.cfg.queue_readings / 2
    }

    fn take(&mut self, readings: Vec<Reading>) {
        self.counters.queued.fetch_sub(readings.len(), Ordering::Relaxed);
        for r in &readings {
            // One hash lookup for a known sensor; the unknown one is added once (and warned about once).
            let written = match self.tags.get(r.sensor_id.as_str()) {
                Some(tags) => write_line(&mut self.current, tags, r, self.resolution),
                None => {
                    tracing::warn!(sensor = %r.sensor_id, "influx sink: reading from a sensor it was not told about");
                    let tags = SensorTags::unregistered(&r.sensor_id);
                    let written = write_line(&mut self.current, &tags, r, self.resolution);
                    self.tags.insert(r.sensor_id.clone(), tags);
                    written
                }
            };
            if written {
                self.current_points += 1;
                self.current_started.get_or_insert_with(Instant::now);
                if self.current_points >= self.cfg.batch_size {
                    self.seal_current();
                }
            } else {
                self.count_rejected(1, "non-finite value");
            }
        }
    }

    /// Closes the batch being filled and hands it on: to the send queue in direct mode, else to the spool.
    fn seal_current(&mut self) {
        self.current_started = None;
        if self.current_points == 0 {
            return;
        }
        let batch = Batch { body: Bytes::from(std::mem::take(&mut self.current)), points: self.current_points };
        self.current_points = 0;
        if self.healthy && self.spool.is_empty() && !self.shutting_down {
            if self.ready.len() < self.max_ready {
                self.ready.push_back(batch);
                return;
            }
            tracing::debug!("influx sink: server slower than ingest, spilling to the spool");
            self.spill_ready();
        }
        self.spool_batch(batch);
    }

    /// Moves queued batches to the spool, oldest first, so they keep their place ahead of newer ones.
    fn spill_ready(&mut self) {
        while let Some(batch) = self.ready.pop_front() {
            self.spool_batch(batch);
        }
    }

    fn spool_batch(&mut self, batch: Batch) {
        let points = batch.points as u64;
        match self.spool.append(&batch.body, wall_clock_ms()) {
            Ok(Appended::Stored { dropped_points }) => {
                self.counters.spooled.fetch_add(points, Ordering::Relaxed);
                INFLUX.spooled.inc_by(points);
                if dropped_points > 0 {
                    self.count_spool_full(dropped_points, "dropped the oldest spooled points");
                }
            }
            Ok(Appended::Refused) => self.count_spool_full(points, "refused a new batch"),
            Err(e) => {
                tracing::error!(error = %e, points, "influx spool: cannot write; batch lost");
                self.count_spool_full(points, "write error");
            }
        }
        self.publish_spool_bytes();
    }

    fn count_spool_full(&mut self, points: u64, what: &'static str) {
        self.counters.dropped_spool_full.fetch_add(points, Ordering::Relaxed);
        INFLUX.dropped.with_label_values(&["spool_full"]).inc_by(points);
        let now = wall_clock_ms();
        if now - self.last_drop_warning_ms >= 10_000 {
            self.last_drop_warning_ms = now;
            tracing::warn!(
                what,
                points,
                total_dropped = self.counters.dropped_spool_full.load(Ordering::Relaxed),
                cap_bytes = self.cfg.spool_max_bytes,
                policy = ?self.cfg.on_spool_full,
                "influx spool at its cap"
            );
        }
    }

    fn count_rejected(&mut self, points: u64, why: &str) {
        self.counters.rejected.fetch_add(points, Ordering::Relaxed);
        INFLUX.dropped.with_label_values(&["rejected"]).inc_by(points);
        tracing::error!(points, reason = why, "influx sink: points refused and dropped (retrying cannot help)");
    }

    /// Starts whatever requests the mode allows.
    fn pump(&mut self, in_flight: &mut InFlight) {
        if self.shutting_down {
            return;
        }
        let max = self.cfg.max_in_flight;
        if self.healthy && self.spool.is_empty() {
            while self.direct_in_flight + self.replay_in_flight < max {
                let Some(batch) = self.ready.pop_front() else { break };
                self.direct_in_flight += 1;
                in_flight.push(self.request(Job::Direct(batch)));
            }
            return;
        }
        // Backlog: batches still queued in memory go behind what the spool holds.
        self.spill_ready();
        let slots = if self.healthy {
            max.saturating_sub(self.direct_in_flight + self.replay_in_flight)
        } else if in_flight.is_empty() && Instant::now() >= self.probe_at {
            1
        } else {
            0
        };
        for _ in 0..slots {
            match self.spool.next_chunk(self.cfg.batch_size, MAX_CHUNK_BYTES) {
                Ok(Some(chunk)) => {
                    if !self.healthy {
                        self.probing = true;
                        self.counters.retried.fetch_add(1, Ordering::Relaxed);
                        INFLUX.retried.inc();
                    }
                    self.replay_in_flight += 1;
                    in_flight.push(self.request(Job::Replay(chunk)));
                }
                Ok(None) => break,
                Err(e) => {
                    // A segment that cannot be read now (disk trouble) is tried again after the backoff.
                    tracing::error!(error = %e, "influx spool: cannot read a segment");
                    self.mark_failed();
                    break;
                }
            }
        }
    }

    fn request(&self, job: Job) -> BoxFuture<'static, (Job, Result<(), Failure>)> {
        let client = self.client.clone();
        let org = self.org.clone();
        let bucket = self.bucket.clone();
        let timeout = self.cfg.request_timeout();
        let body = match &job {
            Job::Direct(b) => b.body.clone(),
            Job::Replay(c) => c.body.clone(),
        };
        Box::pin(async move {
            let write =
                client.write_line_protocol_with_precision(&org, &bucket, body, TimestampPrecision::Milliseconds);
            let result = match tokio::time::timeout(timeout, write).await {
                Err(_) => Err(Failure::Timeout),
                Ok(Ok(())) => Ok(()),
                Ok(Err(influxdb2::RequestError::Http { status, text })) => {
                    let code = status.as_u16();
                    if status.is_server_error() || matches!(code, 401 | 403 | 404 | 408 | 429) {
                        Err(Failure::Status(code, text))
                    } else {
                        Err(Failure::Rejected(code, text))
                    }
                }
                Ok(Err(e)) => Err(Failure::Transport(e.to_string())),
            };
            (job, result)
        })
    }

    fn on_result(&mut self, job: Job, result: Result<(), Failure>) {
        if let Err(f) = &result {
            self.counters.failed_requests.fetch_add(1, Ordering::Relaxed);
            INFLUX.failed.with_label_values(&[f.label()]).inc();
        }
        match job {
            Job::Direct(batch) => {
                self.direct_in_flight -= 1;
                match result {
                    Ok(()) => {
                        self.mark_healthy();
                        self.count_written(batch.points as u64);
                    }
                    Err(f @ Failure::Rejected(..)) => self.count_rejected(batch.points as u64, &f.to_string()),
                    Err(f) => {
                        self.log_failure(&f);
                        self.mark_failed();
                        self.spill_ready();
                        self.spool_batch(batch);
                    }
                }
            }
            Job::Replay(chunk) => {
                self.replay_in_flight -= 1;
                match result {
                    Ok(()) => {
                        self.ack(chunk.id);
                        self.mark_healthy();
                        self.publish_spool_bytes();
                        // Last, so that whoever watches `written` sees the spool and health already updated.
                        self.count_written(chunk.lines as u64);
                    }
                    Err(f @ Failure::Rejected(..)) => {
                        // A chunk the server refuses would block the spool forever if kept.
                        self.count_rejected(chunk.lines as u64, &f.to_string());
                        self.ack(chunk.id);
                    }
                    Err(f) => {
                        self.log_failure(&f);
                        self.spool.nack(chunk);
                        self.mark_failed();
                    }
                }
            }
        }
        self.publish_spool_bytes();
    }

    fn ack(&mut self, id: u64) {
        if let Err(e) = self.spool.ack(id) {
            // The data arrived; only the cursor could not be saved, so a restart may send some of it again.
            tracing::warn!(error = %e, "influx spool: cannot record progress");
        }
    }

    fn count_written(&mut self, points: u64) {
        self.counters.written.fetch_add(points, Ordering::Relaxed);
        INFLUX.written.inc_by(points);
    }

    fn log_failure(&self, f: &Failure) {
        if self.healthy {
            tracing::warn!(error = %f, url = %self.cfg.url, "InfluxDB write failed; spooling to disk until it recovers");
        } else {
            tracing::debug!(error = %f, backoff_ms = self.backoff.as_millis() as u64, "InfluxDB still failing");
        }
    }

    fn mark_failed(&mut self) {
        if self.healthy {
            self.healthy = false;
            self.outage_started = Some(Instant::now());
            self.backoff = Duration::from_millis(self.cfg.retry_initial_ms);
        } else if self.probing {
            self.backoff = (self.backoff * 2).min(Duration::from_millis(self.cfg.retry_max_ms));
        }
        self.probing = false;
        self.probe_at = Instant::now() + self.backoff;
        self.counters.healthy.store(false, Ordering::Relaxed);
    }

    fn mark_healthy(&mut self) {
        if !self.healthy {
            tracing::info!(
                outage_s = self.outage_started.map_or(0, |t| t.elapsed().as_secs()),
                spool_bytes = self.spool.bytes(),
                "InfluxDB reachable again; replaying the spool"
            );
            self.healthy = true;
            self.probing = false;
            self.outage_started = None;
            self.backoff = Duration::from_millis(self.cfg.retry_initial_ms);
            self.counters.healthy.store(true, Ordering::Relaxed);
        }
    }

    fn answer_flushes(&mut self) {
        if self.flush_waiters.is_empty() {
            return;
        }
        if self.current_points == 0 && self.ready.is_empty() && self.direct_in_flight == 0 {
            for reply in self.flush_waiters.drain(..) {
                // The asker may have stopped waiting.
                let _ = reply.send(());
            }
        }
    }

    fn publish_spool_bytes(&self) {
        let bytes = self.spool.bytes();
        self.counters.spool_bytes.store(bytes, Ordering::Relaxed);
        INFLUX.spool_bytes.set(bytes as i64);
    }

    fn publish_gauges(&self) {
        self.publish_spool_bytes();
        let age = self.spool.age_s(wall_clock_ms());
        self.counters.spool_age_s.store(age, Ordering::Relaxed);
        INFLUX.spool_age_seconds.set(age);
        INFLUX.queued.set(self.counters.queued.load(Ordering::Relaxed) as i64);
    }
}
