//! One simulated gateway playing its script: produce each planned message at its (compressed) moment, follow the
//! scenario's link events, and let the courier deliver. Ends when the script is done and everything is acknowledged,
//! or when the drain timeout after the last step runs out.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use crate::courier::{Courier, CourierConfig, Delivery, Live, Parcel};
use crate::link::LinkConfig;
use crate::plan::{DevicePlan, MessageKind, Step};
use crate::scenario::Firmware;

/// Where and how fast to play.
#[derive(Debug, Clone)]
pub struct Stage {
    pub host: String,
    pub port: u16,
    /// Wall instant of scenario offset 0 (shared by all devices so their clocks agree, apart from skew).
    pub wall_start: Instant,
    /// Scenario seconds per wall second.
    pub compression: f64,
    pub seed: u64,
    /// Further brokers each device fails over to (`RunOptions::failover`).
    pub failover: Vec<(String, u16)>,
}

impl Stage {
    /// Wall instant at which a scenario offset is due.
    pub fn wall_at(&self, at: Duration) -> Instant {
        self.wall_start + Duration::from_secs_f64(at.as_secs_f64() / self.compression)
    }
}

/// What one device did.
#[derive(Debug, Clone)]
pub struct DeviceReport {
    pub id: String,
    pub skew_ms: i64,
    /// Planned messages by kind.
    pub readings: u64,
    pub duplicates: u64,
    pub status: u64,
    /// True if the script killed the device.
    pub went_silent: bool,
    pub delivery: Delivery,
}

/// Delivery settings a device gets from the scenario's firmware section.
pub fn courier_config(plan: &DevicePlan, fw: &Firmware, stage: &Stage) -> CourierConfig {
    let id = plan.device.id.clone();
    CourierConfig {
        link: LinkConfig {
            host: stage.host.clone(),
            port: stage.port,
            client_id: id.clone(),
            credentials: plan.device.password.clone().map(|p| (id.clone(), p)),
            keep_alive: fw.keep_alive,
            will: Some((format!("sensors/{id}/status"), r#"{"online":false}"#.to_string())),
            max_inflight: fw.max_inflight,
            max_packet_size: 256 * 1024,
        },
        qos: fw.qos,
        buffer: fw.buffer,
        backoff_initial: fw.backoff_initial,
        backoff_max: fw.backoff_max,
        seed: stage.seed ^ 0x0062_6163_6b6f_6666, // "backoff": jitter independent of the plan's draws
        failover: stage.failover.clone(),
    }
}

enum Wake {
    Step,
    Courier(crate::courier::Wake),
    Deadline,
}

/// Play one device's script to the end.
pub async fn run_device(plan: DevicePlan, fw: &Firmware, stage: &Stage, live: Arc<Live>) -> DeviceReport {
    let mut report = DeviceReport {
        id: plan.device.id.clone(),
        skew_ms: plan.skew_ms,
        readings: 0,
        duplicates: 0,
        status: 0,
        went_silent: false,
        delivery: Delivery::default(),
    };
    let mut courier = Courier::new(courier_config(&plan, fw, stage), live);
    let mut steps = plan.steps.into_iter().peekable();
    let mut deadline: Option<Instant> = None;

    loop {
        if steps.peek().is_none() {
            if courier.pending() == 0 {
                break;
            }
            let d = *deadline.get_or_insert_with(|| Instant::now() + fw.drain_timeout);
            if Instant::now() >= d {
                break;
            }
        }
        let next_step = steps.peek().map(|(at, _)| stage.wall_at(*at));
        let wake = tokio::select! {
            _ = sleep_until(next_step.unwrap_or_else(Instant::now)), if next_step.is_some() => Wake::Step,
            w = courier.wait() => Wake::Courier(w),
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => Wake::Deadline,
        };
        match wake {
            Wake::Courier(w) => courier.handle(w),
            Wake::Deadline => {}
            Wake::Step => {
                let now = Instant::now();
                while let Some((at, _)) = steps.peek() {
                    if stage.wall_at(*at) > now {
                        break;
                    }
                    let (_, step) = steps.next().expect("peeked");
                    match step {
                        Step::Publish(m) => {
                            match m.kind {
                                MessageKind::Reading => report.readings += 1,
                                MessageKind::Duplicate => report.duplicates += 1,
                                MessageKind::Status => report.status += 1,
                            }
                            courier.enqueue(Parcel {
                                topic: m.topic.into(),
                                payload: m.payload.into_bytes().into(),
                                readings: u32::from(m.kind != MessageKind::Status),
                                attempts: 0,
                            });
                        }
                        Step::LinkDown => courier.link_lost(),
                        Step::LinkUp => courier.link_restored(),
                        Step::Silent => {
                            report.went_silent = true;
                            report.delivery = courier.kill();
                            return report;
                        }
                    }
                }
            }
        }
    }
    report.delivery = courier.finish().await;
    report
}
