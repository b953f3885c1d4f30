//! A cluster's front door (`serve --cluster … --role front-door`): our MQTT front door, unchanged for devices
//! (identity, ACLs, validation), whose accepted publishes go to the replicated readings stream instead of a local
//! pipeline. A device's PUBACK leaves only once the stream has acknowledged every copy of its publish, so a PUBACK
//! means the readings survive the loss of any one node (`cluster::readings`).
//!
//! Per device publish: `Ingest::process` validates it (refusals counted and dead-lettered as on a single process;
//! a publish with nothing valid is acknowledged and not stored, as there), the regions of its readings are found
//! as a writer finds them (`writer::regions_of`), and one copy per region is appended under
//! `dc.readings.{region}.{device}` with the publish id of (device topic, payload, region; the arrival for untimed
//! readings).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use cluster::readings::{self, Append, ReadingsLog};
use ingest::front_door::DurableIntake;
use ingest::topic::{self, TopicKind};
use ingest::RawMessage;

use super::writer::regions_of;
use crate::app::App;
use crate::clock::now_ms;

/// The front door's intake on a cluster: validate, route, append, then (and only then) acknowledge.
pub(super) struct ReplicatedIntake {
    pub(super) app: Arc<App>,
    pub(super) log: ReadingsLog,
    /// When a publish was last given up in the log (ms): during a quorum loss every device's every batch fails, so
    /// one line a minute says so and `dc_cluster_appends_total{outcome="unavailable"}` counts the rest.
    pub(super) last_logged_ms: Arc<AtomicI64>,
}

impl ReplicatedIntake {
    /// What the stream must hold for this batch: one append per accepted publish and region.
    fn appends(&self, batch: Vec<RawMessage>) -> Vec<Append> {
        let arrived_ms = now_ms();
        let mut appends = Vec::with_capacity(batch.len());
        for msg in batch {
            let processed = self.app.ingest.process(&msg, arrived_ms);
            // Throttled readings (a device far faster than its interval) are accepted readings too: the throttle only
            // keeps them from the rules, which run on the workers. Skipping them here would PUBACK a reading that
            // was never stored.
            let accepted: Vec<_> = processed.readings.iter().chain(&processed.throttled).cloned().collect();
            if accepted.is_empty() && processed.status.is_none() {
                continue;
            }
            // Accepted, so the topic parsed: the device id is one its login proved.
            let Some(parsed) = topic::parse(&msg.topic) else { continue };
            if !accepted.is_empty() {
                if let Some(influx) = &self.app.readings.influx {
                    influx.send(&accepted);
                }
            }
            // The plain form of the topic, so that the tenant form of the same publish gets the same id.
            let leaf = match parsed.kind {
                TopicKind::Readings => "readings",
                TopicKind::Status => "status",
            };
            let device_topic = format!("sensors/{}/{leaf}", parsed.device_id);
            // A reading set without a time of its own was stamped with the arrival (`validate_set`): its bytes do not
            // identify it, the arrival must (`readings::publish_id`). Asked of ingest, not guessed from a reading's
            // time equal to the arrival: a timed reading measured in the millisecond it arrived would get the
            // arrival in its id, and its QoS 1 resend (another millisecond) would be stored twice.
            let untimed = processed.stamped.then_some(arrived_ms);
            let mut regions: Vec<String> = regions_of(&self.app, &processed).into_iter().collect();
            if regions.is_empty() {
                regions.push(readings::NO_REGION.to_string());
            }
            for region in regions {
                appends.push(Append {
                    subject: readings::subject(&region, parsed.device_id),
                    id: readings::publish_id(&device_topic, &msg.payload, &region, untimed),
                    topic: device_topic.clone(),
                    arrived_ms,
                    payload: msg.payload.clone(),
                });
            }
        }
        appends
    }
}

impl DurableIntake for ReplicatedIntake {
    fn accept(&self, batch: Vec<RawMessage>) -> Pin<Box<dyn Future<Output = bool> + Send + 'static>> {
        // Validation and routing run here, on the connection's task (~1.3 µs a reading); only the appends wait.
        let appends = self.appends(batch);
        let log = self.log.clone();
        let last_logged_ms = Arc::clone(&self.last_logged_ms);
        Box::pin(async move {
            let outcomes = futures_util::future::join_all(appends.iter().map(|a| log.append(a))).await;
            let Some(e) = outcomes.into_iter().find_map(Result::err) else { return true };
            let now = now_ms();
            let last = last_logged_ms.load(Ordering::Relaxed);
            let due = now - last >= 60_000;
            if due && last_logged_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                tracing::error!(error = %e, "device publishes not replicated in time: no PUBACK, connections closed (one line a minute)");
            }
            false
        })
    }
}
