//! The readings stream: every device publish a front door accepted, replicated before the device is acknowledged.
//!
//! - **Stream** `DC_READINGS`, subjects `dc.readings.{region}.{device}` (`region`: a county code, or `none` for a
//!   publish whose readings fall in no zone), file storage, `replicas` copies, kept `readings_max_age`.
//!   The region leads the subject so that a region's owner consumes exactly its region, in stream order, with one
//!   filter (`dc.readings.10008.>`); the device follows so that one device's history is one filter too.
//! - **Publish id** (`Nats-Msg-Id`): derived from the device's publish — its topic (which names the device) and a
//!   SHA-256 of its payload (which carries the readings' timestamps) — plus the region (and the arrival time for
//!   readings without a time of their own, [`publish_id`]). A device re-sending an
//!   unacknowledged publish (QoS 1 after a reconnect, to either front door), and our own retry after a lost
//!   acknowledgement, carry the same id, and the stream stores it once within `duplicate_window`. Two publishes with
//!   the same bytes from the same device are the same readings (same timestamps), so storing them once is right.
//! - **Headers**: `Dc-Topic` (the device topic, so a consumer runs the same decoder on the same input) and
//!   `Dc-Arrived-Ms` (when the front door received it: the deadman's clock).
//!
//! [`ReadingsLog::append`] is what makes a PUBACK mean "survives the loss of any one node": it returns only once the
//! stream's leader has the publish on a quorum of replicas, retrying with the same id across leader elections until
//! `publish_deadline` (≥ 10 s: an election after a leader's death stalls publishes ~5 s).

use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::ordered::Guarded;
use crate::{retry_setup, Backbone, ClusterError, APPENDS};

pub const STREAM: &str = "DC_READINGS";
/// Every subject of the stream.
pub const SUBJECTS: &str = "dc.readings.>";
/// The region of a publish whose readings are in no zone: stored (it is a reading like any other), consumed by no
/// region's owner.
pub const NO_REGION: &str = "none";
pub const TOPIC_HEADER: &str = "Dc-Topic";
pub const ARRIVED_HEADER: &str = "Dc-Arrived-Ms";

/// `dc.readings.{region}.{device}`. Both parts must be subject tokens: a region is a county code (digits) or
/// [`NO_REGION`], a device id is 1-32 ASCII letters and digits (the front door's login already holds it to that).
pub fn subject(region: &str, device: &str) -> String {
    format!("dc.readings.{region}.{device}")
}

/// The filter a region's owner consumes with.
pub fn region_filter(region: &str) -> String {
    format!("dc.readings.{region}.>")
}

/// The publish id of a device publish in one region: the same device publish always gets the same id, whichever
/// front door receives it and however often.
///
/// `stamped_on_arrival`: the arrival time, when some of the publish's readings carry no time of their own (no `ts`,
/// or SenML times relative to arrival) and were stamped with it. Such a publish does not identify its readings — a
/// logger without a clock sends `{"values":{"rain_mm":0}}` every ten minutes, byte for byte — so its id includes
/// the arrival: each is stored, and a re-send of one is stored again (at least once, as on a single process),
/// rather than a real reading being taken for a resend and dropped.
pub fn publish_id(topic: &str, payload: &[u8], region: &str, stamped_on_arrival: Option<i64>) -> String {
    let mut digest = Sha256::new();
    digest.update(topic.as_bytes());
    digest.update([0]);
    digest.update(payload);
    let hash = digest.finalize();
    let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
    match stamped_on_arrival {
        None => format!("{topic}:{hex}:{region}"),
        Some(ms) => format!("{topic}:{hex}:{region}:{ms}"),
    }
}

/// What the stream made of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored now, at this stream sequence.
    Stored(u64),
    /// Already stored (a resend): this is the sequence of the first copy.
    Duplicate(u64),
}

/// One publish for the stream.
#[derive(Debug, Clone)]
pub struct Append {
    pub subject: String,
    pub id: String,
    /// The device topic (`sensors/{id}/readings`).
    pub topic: String,
    pub arrived_ms: i64,
    pub payload: Bytes,
}

/// The readings stream, for appending.
#[derive(Debug, Clone)]
pub struct ReadingsLog {
    jetstream: jetstream::Context,
    deadline: Duration,
}

impl ReadingsLog {
    /// Finds the stream, or creates it with this process's settings (the first process to start sets them; later
    /// ones use what exists). Waits for the cluster up to its `start_timeout`.
    pub async fn open(backbone: &Backbone) -> Result<Self, ClusterError> {
        let config = backbone.config();
        let stream_config = stream::Config {
            name: STREAM.into(),
            subjects: vec![SUBJECTS.into()],
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            max_age: config.readings_max_age,
            duplicate_window: config.duplicate_window,
            ..Default::default()
        };
        // Listed at zero on /metrics from the start, as every other counter.
        std::sync::LazyLock::force(&APPENDS);
        let js = backbone.jetstream().clone();
        retry_setup("the readings stream", config.start_timeout, || {
            let (js, stream_config) = (js.clone(), stream_config.clone());
            async move { js.get_or_create_stream(stream_config).await.map(|_| ()) }
        })
        .await?;
        Ok(Self { jetstream: backbone.jetstream().clone(), deadline: config.publish_deadline })
    }

    /// Appends one publish; returns once the stream has it (stored now or before), or fails after the deadline. Every
    /// attempt carries the same id, so an attempt whose acknowledgement was lost and a later one store one copy.
    pub async fn append(&self, append: &Append) -> Result<Appended, ClusterError> {
        let started = tokio::time::Instant::now();
        let mut attempt = 0u32;
        loop {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(TOPIC_HEADER, append.topic.as_str());
            headers.insert(ARRIVED_HEADER, append.arrived_ms.to_string().as_str());
            let message = jetstream::message::PublishMessage::build()
                .payload(append.payload.clone())
                .headers(headers)
                .message_id(&append.id);
            let outcome = match self.jetstream.send_publish(append.subject.clone(), message).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            let error = match outcome {
                Ok(ack) if ack.duplicate => {
                    APPENDS.with_label_values(&["duplicate"]).inc();
                    return Ok(Appended::Duplicate(ack.sequence));
                }
                Ok(ack) => {
                    APPENDS.with_label_values(&["stored"]).inc();
                    return Ok(Appended::Stored(ack.sequence));
                }
                Err(e) => e,
            };
            // A payload over the server's limit will not fit on any attempt.
            let hopeless = matches!(error.kind(), PublishErrorKind::MaxPayloadExceeded);
            if hopeless || started.elapsed() >= self.deadline {
                APPENDS.with_label_values(&["unavailable"]).inc();
                return Err(ClusterError::Unavailable {
                    subject: append.subject.clone(),
                    waited: started.elapsed(),
                    message: error.to_string(),
                });
            }
            attempt += 1;
            APPENDS.with_label_values(&["retried"]).inc();
            if attempt == 1 {
                tracing::warn!(error = %error, subject = %append.subject, "readings stream did not acknowledge; retrying with the same id");
            }
            // Short pauses: a new leader is usually there within seconds, and every device waits for this.
            let pause = Duration::from_millis((100 * u64::from(attempt)).min(1_000));
            tokio::time::sleep(pause.min(self.deadline.saturating_sub(started.elapsed()))).await;
        }
    }
}

/// Where a region's owner starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At this stream sequence (the one after the owner's progress mark).
    Sequence(u64),
    /// At the first message the stream received at or after this time (Unix ms): the start of what the rules
    /// remember.
    Time(i64),
}

/// One stored reading publish as a region's owner receives it.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// Its stream sequence: the owner's progress mark counts these.
    pub sequence: u64,
    /// The device topic (`sensors/{id}/readings`), for the same decoder the front door ran.
    pub topic: String,
    /// When the front door received it (Unix ms).
    pub arrived_ms: i64,
    pub payload: Bytes,
    /// Messages of the region still to come after this one, as the server counted when it sent it.
    pub pending: u64,
}

/// A region's readings in stream order: an ordered consumer (ephemeral, recreated by the client at the next
/// sequence after any disconnection, so nothing is skipped or repeated) on `dc.readings.{region}.>`.
pub struct RegionReadings {
    messages: Guarded,
    /// Messages waiting when the consumer was created.
    pub pending_at_start: u64,
}

impl RegionReadings {
    /// An ordered consumer of the region's readings from `from` ([`crate::ordered`]: recovered within seconds of a
    /// lost stream leader, never delivering a reading before `from` or one twice).
    pub async fn open(backbone: &Backbone, region: &str, from: Start) -> Result<Self, ClusterError> {
        let deliver_policy = match from {
            Start::Sequence(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence: start_sequence.max(1) },
            Start::Time(ms) => DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            },
        };
        let config = backbone.config();
        let js = backbone.jetstream().clone();
        let filter = region_filter(region);
        retry_setup("a region's readings consumer", config.start_timeout, || {
            let (js, filter, deliver_policy) = (js.clone(), filter.clone(), deliver_policy);
            async move {
                let stream = js.get_stream(STREAM).await.map_err(|e| e.to_string())?;
                let messages = Guarded::create(&js.client(), stream, filter, deliver_policy).await?;
                Ok::<_, String>(RegionReadings { pending_at_start: messages.pending_at_start, messages })
            }
        })
        .await
    }

    /// The next reading publish; `None` if the consumer ended (the client closed). Errors are the client's
    /// (heartbeats missed while it recreates the consumer); the caller may keep calling.
    pub async fn next(&mut self) -> Option<Result<Delivered, ClusterError>> {
        Some(self.messages.next("dc.readings").await?.map(|(m, at)| {
            let header = |name: &str| m.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.to_string());
            Delivered {
                sequence: at.sequence,
                pending: at.pending,
                topic: header(TOPIC_HEADER).unwrap_or_default(),
                arrived_ms: header(ARRIVED_HEADER).and_then(|v| v.parse().ok()).unwrap_or(0),
                payload: m.payload.clone(),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_publish_gets_the_same_id_and_any_difference_another() {
        let a = publish_id("sensors/RG0001/readings", br#"{"ts":1,"values":{"rain_mm":3}}"#, "10008", None);
        assert_eq!(a, publish_id("sensors/RG0001/readings", br#"{"ts":1,"values":{"rain_mm":3}}"#, "10008", None));
        assert!(a.starts_with("sensors/RG0001/readings:") && a.ends_with(":10008"), "{a}");
        for other in [
            publish_id("sensors/RG0002/readings", br#"{"ts":1,"values":{"rain_mm":3}}"#, "10008", None),
            publish_id("sensors/RG0001/readings", br#"{"ts":2,"values":{"rain_mm":3}}"#, "10008", None),
            publish_id("sensors/RG0001/status", br#"{"ts":1,"values":{"rain_mm":3}}"#, "10008", None),
            publish_id("sensors/RG0001/readings", br#"{"ts":1,"values":{"rain_mm":3}}"#, "64000", None),
        ] {
            assert_ne!(a, other);
        }
        // Untimed readings: two identical publishes at different arrivals are two readings.
        let untimed = br#"{"values":{"rain_mm":0}}"#;
        let first = publish_id("sensors/RG0001/readings", untimed, "10008", Some(1_000));
        assert_ne!(first, publish_id("sensors/RG0001/readings", untimed, "10008", Some(601_000)));
        assert_eq!(first, publish_id("sensors/RG0001/readings", untimed, "10008", Some(1_000)));
        assert_eq!(subject("10008", "RG0001"), "dc.readings.10008.RG0001");
        assert_eq!(region_filter("10008"), "dc.readings.10008.>");
    }
}
