//! Load mode: many connections publishing at a target rate, measuring acknowledged messages per second and ack-latency
//! percentiles. Each connection is a [`Courier`], so load runs reconnect, buffer and resend like the field devices do.
//!
//! Generation is closed-loop: a connection produces its next message only when its in-flight window has room, so a
//! broker that cannot keep up shows as an achieved rate below target (and latencies measure the broker, not a local
//! queue). Payloads carry `battery_v` only, so a load run against the real server raises no hazard alert.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

use crate::courier::{Courier, CourierConfig, Delivery, Live, Parcel};
use crate::error::SimError;
use crate::link::LinkConfig;
use crate::progress::{Progress, MIN_RUN_FOR_BAR};
use crate::run::now_ms;
use crate::stats::LatencyStats;
use crate::timefmt::format_duration;

/// What to load the broker with.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    pub host: String,
    pub port: u16,
    /// Concurrent MQTT connections.
    pub connections: usize,
    /// Target messages per second over all connections; 0 means as fast as acknowledgements allow.
    pub rate: f64,
    /// Minimum payload size in bytes (padded with a `"pad"` string field); 0 keeps the natural size.
    pub message_size: usize,
    /// Reading sets per message; above 1 the payload is a JSON array (a gateway batch).
    pub batch: usize,
    /// 0 or 1.
    pub qos: u8,
    /// How long to generate messages.
    pub duration: Duration,
    /// Unacknowledged publishes per connection.
    pub max_inflight: u16,
    /// Identities to connect as (device id, password), used round-robin; empty means `LOAD0001`… without password.
    pub devices: Vec<(String, Option<String>)>,
    /// After `duration`, how long to wait for outstanding acknowledgements.
    pub drain_timeout: Duration,
    pub quiet: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            host: "127.0.0.1".into(),
            port: 1883,
            connections: 10,
            rate: 1000.0,
            message_size: 0,
            batch: 1,
            qos: 1,
            duration: Duration::from_secs(10),
            max_inflight: 100,
            devices: Vec::new(),
            drain_timeout: Duration::from_secs(10),
            quiet: false,
        }
    }
}

/// What a load run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadSummary {
    pub connections: usize,
    /// Connections that reached CONNACK at least once.
    pub connected: usize,
    /// Messages generated.
    pub generated: u64,
    /// Publishes written, resends included.
    pub sent: u64,
    pub resent: u64,
    pub acked: u64,
    pub readings_acked: u64,
    pub bytes_acked: u64,
    /// Generated but never acknowledged (dropped included).
    pub missing: u64,
    /// Lost to a full buffer after reconnects (load generates only into an open window, so normally 0).
    pub dropped: u64,
    /// Generation time (the rate's denominator).
    pub duration: Duration,
    /// Whole run including drain.
    pub elapsed: Duration,
    pub target_rate: f64,
    pub latency: LatencyStats,
    pub errors: Vec<String>,
}

impl LoadSummary {
    /// Acknowledged messages per second of generation time.
    pub fn rate(&self) -> f64 {
        if self.duration.is_zero() {
            0.0
        } else {
            self.acked as f64 / self.duration.as_secs_f64()
        }
    }

    pub fn is_complete(&self) -> bool {
        self.missing == 0 && self.connected == self.connections
    }
}

impl fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = if self.target_rate > 0.0 { format!("{:.0} msg/s", self.target_rate) } else { "unlimited".into() };
        writeln!(
            f,
            "load: {} connections ({} connected), target {target}, {}",
            self.connections,
            self.connected,
            format_duration(self.duration)
        )?;
        writeln!(f, "  sent     {} ({} resent) of {} generated", self.sent, self.resent, self.generated)?;
        writeln!(
            f,
            "  acked    {} ({:.1} msg/s, {:.1} readings/s, {:.1} KiB/s)",
            self.acked,
            self.rate(),
            self.readings_acked as f64 / self.duration.as_secs_f64().max(1e-9),
            self.bytes_acked as f64 / 1024.0 / self.duration.as_secs_f64().max(1e-9)
        )?;
        writeln!(f, "  buffered {} at end", self.missing - self.dropped)?;
        writeln!(f, "  dropped  {}", self.dropped)?;
        write!(f, "  latency  {}", self.latency)?;
        for e in &self.errors {
            write!(f, "\n  error    {e}")?;
        }
        if self.missing > 0 {
            write!(f, "\n  MISSING  {} messages never acknowledged", self.missing)?;
        }
        if self.connected < self.connections {
            write!(f, "\n  MISSING  {} connections never connected", self.connections - self.connected)?;
        }
        Ok(())
    }
}

/// One load message: `batch` reading sets, padded to `size` bytes.
pub fn load_payload(batch: usize, size: usize, ts: i64, n: u64) -> String {
    let set = |i: usize| json!({"ts": ts, "values": {"battery_v": 3.7 + ((n as usize + i) % 50) as f64 / 100.0}});
    let mut v = if batch <= 1 { set(0) } else { json!((0..batch).map(set).collect::<Vec<_>>()) };
    let natural = v.to_string();
    // `,"pad":""` adds 9 bytes around the padding itself.
    if size > natural.len() + 9 {
        let pad = "x".repeat(size - natural.len() - 9);
        let target = if let Some(a) = v.as_array_mut() { a.last_mut().expect("batch >= 2") } else { &mut v };
        target.as_object_mut().expect("object").insert("pad".into(), json!(pad));
    }
    v.to_string()
}

fn check(opts: &LoadOptions) -> Result<(), SimError> {
    let bad = |option, reason: &str| Err(SimError::Option { option, reason: reason.to_string() });
    if opts.connections == 0 {
        return bad("connections", "must be at least 1");
    }
    if !(opts.rate.is_finite() && opts.rate >= 0.0) {
        return bad("rate", "must be zero (unlimited) or a positive number of messages per second");
    }
    if opts.batch == 0 {
        return bad("batch", "must be at least 1 reading set per message");
    }
    if opts.qos > 1 {
        return bad("qos", "must be 0 or 1");
    }
    if opts.duration.is_zero() {
        return bad("duration", "must be longer than zero");
    }
    if opts.max_inflight == 0 {
        return bad("max-inflight", "must be at least 1");
    }
    if opts.message_size > 16 * 1024 * 1024 {
        return bad("message-size", "must be at most 16 MiB");
    }
    Ok(())
}

/// Run a load test and measure it.
pub async fn run_load(opts: &LoadOptions) -> Result<LoadSummary, SimError> {
    run_load_live(opts, Arc::new(Live::default())).await
}

/// The same, counting into `live` as it goes: a caller sampling `live.acked` sees when acknowledgements stop and
/// resume (`dc-bench backbone` measures fail-over gaps so).
pub async fn run_load_live(opts: &LoadOptions, live: Arc<Live>) -> Result<LoadSummary, SimError> {
    check(opts)?;
    let start = Instant::now();
    let end = start + opts.duration;
    let per_conn = opts.rate / opts.connections as f64;
    let total = (opts.rate > 0.0).then(|| (opts.rate * opts.duration.as_secs_f64()).ceil() as u64);
    let progress =
        (!opts.quiet && opts.duration >= MIN_RUN_FOR_BAR).then(|| Progress::start(total, live.clone(), "acked"));

    let mut tasks = JoinSet::new();
    for n in 0..opts.connections {
        let (id, password) = if opts.devices.is_empty() {
            (format!("LOAD{:04}", n + 1), None)
        } else {
            opts.devices[n % opts.devices.len()].clone()
        };
        // A device id used by several connections needs distinct client ids, or the broker kicks the earlier one.
        let client_id = if opts.devices.len() >= opts.connections || opts.devices.is_empty() {
            id.clone()
        } else {
            format!("{id}c{n}")
        };
        let size = (opts.message_size + 256 * opts.batch).max(64 * 1024);
        let cfg = CourierConfig {
            link: LinkConfig {
                host: opts.host.clone(),
                port: opts.port,
                client_id,
                credentials: password.map(|p| (id.clone(), p)),
                keep_alive: Duration::from_secs(10),
                will: Some((format!("sensors/{id}/status"), r#"{"online":false}"#.to_string())),
                max_inflight: opts.max_inflight,
                max_packet_size: size,
            },
            qos: opts.qos,
            buffer: opts.max_inflight as usize * 4,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            seed: n as u64,
            failover: Vec::new(),
        };
        let topic: Arc<str> = format!("sensors/{id}/readings").into();
        let (live, batch, size, drain) = (live.clone(), opts.batch, opts.message_size, opts.drain_timeout);
        tasks.spawn(async move {
            let mut courier = Courier::new(cfg, live);
            let mut generated = 0u64;
            loop {
                let now = Instant::now();
                if now < end {
                    let due = if per_conn > 0.0 { (now - start).as_secs_f64() * per_conn } else { f64::INFINITY };
                    while (generated as f64) < due && courier.has_window() {
                        let payload = load_payload(batch, size, now_ms(), generated);
                        courier.enqueue(Parcel {
                            topic: topic.clone(),
                            payload: payload.into_bytes().into(),
                            readings: batch as u32,
                            attempts: 0,
                        });
                        generated += 1;
                    }
                } else if courier.pending() == 0 || now >= end + drain {
                    break;
                }
                // Next moment a message falls due (if the window is what holds us back, the courier wakes us).
                let next_due = if per_conn > 0.0 && now < end {
                    (start + Duration::from_secs_f64(generated as f64 / per_conn)).min(end)
                } else if now < end {
                    end
                } else {
                    end + drain
                };
                tokio::select! {
                    w = courier.wait() => courier.handle(w),
                    _ = sleep_until(next_due.max(now + Duration::from_micros(50))) => {}
                }
            }
            (generated, courier.finish().await)
        });
    }
    let mut results: Vec<(u64, Delivery)> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.push(r.map_err(|e| SimError::Mqtt(format!("load task failed: {e}")))?);
    }
    if let Some(p) = progress {
        p.finish();
    }

    let mut s = LoadSummary {
        connections: opts.connections,
        duration: opts.duration,
        elapsed: start.elapsed(),
        target_rate: opts.rate,
        ..Default::default()
    };
    let mut latencies = Vec::new();
    for (generated, d) in &results {
        s.generated += generated;
        s.sent += d.sent;
        s.resent += d.resent;
        s.acked += d.acked;
        s.readings_acked += d.readings_acked;
        s.bytes_acked += d.bytes_acked;
        s.dropped += d.dropped;
        s.connected += usize::from(d.connects > 0);
        latencies.extend_from_slice(&d.latencies_us);
        if let Some(e) = &d.last_error {
            if !s.errors.contains(e) {
                s.errors.push(e.clone());
            }
        }
    }
    s.missing = s.generated - s.acked;
    s.latency = LatencyStats::from_micros(&mut latencies);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_sizes_and_batches() {
        let one: serde_json::Value = serde_json::from_str(&load_payload(1, 0, 5, 0)).unwrap();
        assert_eq!(one["ts"], 5);
        assert!(one["values"]["battery_v"].is_number());
        let padded = load_payload(1, 500, 5, 0);
        assert_eq!(padded.len(), 500);
        let batch = load_payload(10, 2000, 5, 0);
        assert_eq!(batch.len(), 2000);
        let v: serde_json::Value = serde_json::from_str(&batch).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 10);
    }
}
