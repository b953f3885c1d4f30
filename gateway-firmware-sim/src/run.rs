//! Scenario runs: plan, start one task per device, show progress, sum up.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::courier::Live;
use crate::error::SimError;
use crate::firmware::{run_device, DeviceReport, Stage};
use crate::fleet::Fleet;
use crate::plan::{plan_stamped, Stamp};
use crate::progress::{Progress, MIN_RUN_FOR_BAR};
use crate::scenario::Scenario;
use crate::stats::LatencyStats;
use crate::timefmt::format_duration;

/// How to play a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// MQTT broker address.
    pub host: String,
    pub port: u16,
    /// Further brokers (host, port) every device fails over to, in turn, when its connection fails or closes (the
    /// front doors of a cluster); unacknowledged messages are sent again there.
    pub failover: Vec<(String, u16)>,
    /// Seed of every random draw of the plan (same seed, same messages).
    pub seed: u64,
    /// Unix milliseconds of scenario offset 0: payload `ts` = start + offset (+ the device's clock skew). Put it one span
    /// in the past (see [`RunOptions::for_scenario`]) so no reading is stamped in the future.
    pub start_ts_ms: i64,
    /// Scenario seconds per wall second; zero or negative means the scenario's own.
    pub compression: f64,
    /// Stamp payload `ts` with the wall clock at the moment each device measures (`plan::Stamp::WallClock`) instead
    /// of scenario time from `start_ts_ms`: what `disaster-cloud demo` does, so the server sees a live storm.
    pub wall_clock: bool,
    /// No progress bar.
    pub quiet: bool,
}

impl Default for RunOptions {
    /// Local demo broker, seed 0, start one day ago, the scenario's compression.
    fn default() -> Self {
        RunOptions {
            host: "127.0.0.1".into(),
            port: 1883,
            failover: Vec::new(),
            seed: 0,
            start_ts_ms: now_ms() - 86_400_000,
            compression: 0.0,
            wall_clock: false,
            quiet: false,
        }
    }
}

impl RunOptions {
    /// Defaults fitted to a scenario: its seed, and a start one span ago so the last reading is stamped "now".
    pub fn for_scenario(scenario: &Scenario) -> Self {
        RunOptions {
            seed: scenario.seed,
            start_ts_ms: now_ms() - scenario.span.as_millis() as i64,
            ..Default::default()
        }
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// What a run did. `planned == acked + dropped + buffered` always holds.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub scenario: String,
    pub devices: usize,
    /// Messages the plan produced (readings + duplicates + status).
    pub planned: u64,
    pub readings: u64,
    pub duplicates: u64,
    pub status: u64,
    /// Publishes written, resends included.
    pub sent: u64,
    /// Publishes written again after their connection died unacknowledged.
    pub resent: u64,
    /// Messages the broker acknowledged.
    pub acked: u64,
    /// Still buffered or unacknowledged at the end (drain timeout ran out).
    pub buffered: u64,
    /// Lost to full buffers or dying devices.
    pub dropped: u64,
    /// Most messages one device held at once.
    pub peak_buffered: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub disconnects: u64,
    /// Times a device turned to another broker of `RunOptions::failover`.
    pub failovers: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    pub latency: LatencyStats,
    /// Last connection error per device that had one (`id: reason`), e.g. a refused password.
    pub errors: Vec<String>,
    /// Per-device detail.
    pub per_device: Vec<DeviceReport>,
}

impl Summary {
    /// Acknowledged messages per wall second.
    pub fn rate(&self) -> f64 {
        if self.elapsed.is_zero() {
            0.0
        } else {
            self.acked as f64 / self.elapsed.as_secs_f64()
        }
    }

    /// Planned messages the broker never acknowledged (dropped or left over).
    pub fn missing(&self) -> u64 {
        self.planned - self.acked
    }

    /// Every planned message acknowledged.
    pub fn is_complete(&self) -> bool {
        self.missing() == 0
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "scenario {}: {} devices, {} wall", self.scenario, self.devices, format_duration(self.elapsed))?;
        writeln!(
            f,
            "  planned  {} ({} readings, {} duplicates, {} status)",
            self.planned, self.readings, self.duplicates, self.status
        )?;
        writeln!(f, "  sent     {} ({} resent)", self.sent, self.resent)?;
        writeln!(f, "  acked    {} ({:.1} msg/s)", self.acked, self.rate())?;
        writeln!(f, "  buffered {} at end (peak {} on one device)", self.buffered, self.peak_buffered)?;
        writeln!(f, "  dropped  {}", self.dropped)?;
        writeln!(
            f,
            "  links    {} connects, {} failed attempts, {} lost",
            self.connects, self.connect_failures, self.disconnects
        )?;
        if self.failovers > 0 {
            writeln!(f, "  failover {} turns to another broker", self.failovers)?;
        }
        write!(f, "  latency  {}", self.latency)?;
        for e in &self.errors {
            write!(f, "\n  error    {e}")?;
        }
        if !self.is_complete() {
            write!(f, "\n  MISSING  {} messages never acknowledged", self.missing())?;
        }
        Ok(())
    }
}

/// Play a scenario against a broker: one MQTT connection per device named by the scenario. Returns when every device
/// has finished (script done and delivered, or drain timeout). Dropping the future stops every device.
pub async fn run_scenario(fleet: &Fleet, scenario: &Scenario, opts: &RunOptions) -> Result<Summary, SimError> {
    let compression = if opts.compression > 0.0 { opts.compression } else { scenario.compression };
    if !compression.is_finite() {
        return Err(SimError::Option { option: "compression", reason: format!("{compression} is not a number") });
    }
    let wall_start_ms = now_ms();
    let stamp = if opts.wall_clock {
        Stamp::WallClock { wall_start_ms, compression }
    } else {
        Stamp::Scenario { start_ts_ms: opts.start_ts_ms }
    };
    let plan = plan_stamped(fleet, scenario, opts.seed, stamp)?;
    let planned: u64 = plan
        .devices
        .iter()
        .map(|d| d.steps.iter().filter(|(_, s)| matches!(s, crate::plan::Step::Publish(_))).count() as u64)
        .sum();

    let live = Arc::new(Live::default());
    let started = Instant::now();
    let stage = Stage {
        host: opts.host.clone(),
        port: opts.port,
        wall_start: started,
        compression,
        seed: opts.seed,
        failover: opts.failover.clone(),
    };
    let wall = scenario.wall_duration(compression);
    let progress =
        (!opts.quiet && wall >= MIN_RUN_FOR_BAR).then(|| Progress::start(Some(planned), live.clone(), "acked"));

    let mut tasks = JoinSet::new();
    let fw = Arc::new(scenario.firmware.clone());
    for device in plan.devices {
        let (fw, stage, live) = (fw.clone(), stage.clone(), live.clone());
        tasks.spawn(async move { run_device(device, &fw, &stage, live).await });
    }
    let mut reports = Vec::new();
    while let Some(r) = tasks.join_next().await {
        reports.push(r.map_err(|e| SimError::Mqtt(format!("device task failed: {e}")))?);
    }
    if let Some(p) = progress {
        p.finish();
    }
    reports.sort_by(|a, b| a.id.cmp(&b.id));

    let mut s = Summary {
        scenario: scenario.name.clone(),
        devices: reports.len(),
        elapsed: started.elapsed(),
        ..Default::default()
    };
    let mut latencies = Vec::new();
    for r in &reports {
        let d = &r.delivery;
        s.readings += r.readings;
        s.duplicates += r.duplicates;
        s.status += r.status;
        s.sent += d.sent;
        s.resent += d.resent;
        s.acked += d.acked;
        s.buffered += d.left;
        s.dropped += d.dropped;
        s.peak_buffered = s.peak_buffered.max(d.peak_buffered);
        s.connects += d.connects;
        s.connect_failures += d.connect_failures;
        s.disconnects += d.disconnects;
        s.failovers += d.failovers;
        latencies.extend_from_slice(&d.latencies_us);
        if let (Some(e), false) = (&d.last_error, r.delivery.acked == r.delivery.queued) {
            s.errors.push(format!("{}: {e}", r.id));
        }
    }
    s.planned = s.readings + s.duplicates + s.status;
    debug_assert_eq!(s.planned, planned);
    s.latency = LatencyStats::from_micros(&mut latencies);
    s.per_device = reports;
    Ok(s)
}
