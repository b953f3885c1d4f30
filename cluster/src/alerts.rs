//! The alerts stream: every change of every alert, by the worker owning its region, so that the region's next owner
//! continues the alert book (and fan-out nodes can watch it).
//!
//! Stream `DC_ALERTS` (`replicas` copies), subjects `dc.alerts.{region}.{alert id}`, one message per alert version,
//! `Nats-Msg-Id` = `{alert id}:{version}`: a worker that re-publishes a version after a lost acknowledgement or a
//! crash stores it once. The last message of a subject is the alert as it stands; a new owner reads the last message
//! of each subject of its region ([`AlertsLog::region_messages`]). A few versions per alert are kept for whoever
//! watches the stream late; an ended alert's subject is removed by the region's owner once the alert's retention
//! has passed since its final version was stored ([`AlertsLog::remove`]), so the stream holds the alerts that are
//! open or recently ended, not every alert ever raised.
//!
//! Fan-out nodes watch the whole stream ([`AlertWatch`]): the last message of every subject, then every new one,
//! resumed after the last sequence they applied when the connection or the consumer breaks.
//!
//! What a message holds is the binary's business (a signed envelope, `scale_out/backbone_alerts.rs`): this module
//! moves subjects, ids and bytes.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::ordered::{stored_ms, Guarded};
use crate::{retry_setup, Backbone, ClusterError};

pub const STREAM: &str = "DC_ALERTS";
pub const SUBJECTS: &str = "dc.alerts.>";
/// Versions of one alert the stream keeps (the latest is what counts).
const VERSIONS_KEPT: i64 = 64;

/// `dc.alerts.{region}.{alert id}`; `None` if the id cannot be a subject token (no `.`, `*`, `>` or white space).
pub fn subject(region: &str, alert_id: &str) -> Option<String> {
    let token =
        |t: &str| !t.is_empty() && !t.bytes().any(|b| matches!(b, b'.' | b'*' | b'>') || b.is_ascii_whitespace());
    (token(region) && token(alert_id)).then(|| format!("dc.alerts.{region}.{alert_id}"))
}

/// The publish id of one alert version.
pub fn publish_id(alert_id: &str, version: u32) -> String {
    format!("{alert_id}:{version}")
}

/// The alerts stream, for publishing and reading back a region.
#[derive(Debug, Clone)]
pub struct AlertsLog {
    jetstream: jetstream::Context,
    deadline: Duration,
}

impl AlertsLog {
    /// Finds the stream or creates it (first process's settings), waiting for the cluster up to `start_timeout`.
    pub async fn open(backbone: &Backbone) -> Result<Self, ClusterError> {
        let config = backbone.config();
        let stream_config = stream::Config {
            name: STREAM.into(),
            subjects: vec![SUBJECTS.into()],
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            max_messages_per_subject: VERSIONS_KEPT,
            duplicate_window: config.duplicate_window,
            ..Default::default()
        };
        let js = backbone.jetstream().clone();
        retry_setup("the alerts stream", config.start_timeout, || {
            let (js, stream_config) = (js.clone(), stream_config.clone());
            async move { js.get_or_create_stream(stream_config).await.map(|_| ()) }
        })
        .await?;
        Ok(Self { jetstream: backbone.jetstream().clone(), deadline: config.publish_deadline })
    }

    /// Publishes one alert version; returns once the stream has it on a quorum (stored now or before: `true` if it
    /// was a duplicate), retrying with the same id until the deadline.
    pub async fn publish(&self, subject: &str, id: &str, body: Bytes) -> Result<bool, ClusterError> {
        let started = tokio::time::Instant::now();
        let mut attempt = 0u64;
        loop {
            let message = jetstream::message::PublishMessage::build().payload(body.clone()).message_id(id);
            let outcome = match self.jetstream.send_publish(subject.to_string(), message).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(ack) => return Ok(ack.duplicate),
                Err(e) if started.elapsed() >= self.deadline => {
                    return Err(ClusterError::Unavailable {
                        subject: subject.into(),
                        waited: started.elapsed(),
                        message: e.to_string(),
                    })
                }
                Err(e) => {
                    attempt += 1;
                    if attempt == 1 {
                        tracing::warn!(error = %e, subject, "alerts stream did not acknowledge; retrying with the same id");
                    }
                    tokio::time::sleep(Duration::from_millis((100 * attempt).min(1_000))).await;
                }
            }
        }
    }

    /// The latest message of every alert of `region`, oldest first (payloads only).
    pub async fn region_records(&self, region: &str) -> Result<Vec<Bytes>, ClusterError> {
        Ok(self.region_messages(region).await?.into_iter().map(|m| m.payload).collect())
    }

    /// The latest message of every alert of `region`, oldest first, with its subject (what a signature covers).
    ///
    /// Asked of the stream's leader (its subjects under the filter, then each one's last message), not of a
    /// consumer: an ephemeral consumer may be placed on a replica that has not yet stored what the leader
    /// acknowledged (a quorum is two of three), and then reports fewer alerts or older versions — a new owner would
    /// raise again what it should continue (seen once under load: nothing pending right after two publishes).
    pub async fn region_messages(&self, region: &str) -> Result<Vec<StoredAlert>, ClusterError> {
        let filter = format!("dc.alerts.{region}.>");
        self.read(&filter, || self.try_region(&filter)).await
    }

    /// Every message the stream keeps of one alert (`subject`), oldest first: a new owner goes back through them when
    /// the last one cannot be adopted (not signed by a trusted key: someone else wrote it). Read through a consumer,
    /// then checked against the leader's last message of the subject (retried while the consumer's replica lags).
    pub async fn subject_messages(&self, subject: &str) -> Result<Vec<StoredAlert>, ClusterError> {
        self.read(subject, || self.try_subject(subject)).await
    }

    async fn try_region(&self, filter: &str) -> Result<Vec<StoredAlert>, String> {
        let stream = self.jetstream.get_stream(STREAM).await.map_err(|e| e.to_string())?;
        let mut listed = stream.info_with_subjects(filter).await.map_err(|e| e.to_string())?;
        let mut subjects = Vec::new();
        while let Some(entry) = listed.next().await {
            subjects.push(entry.map_err(|e| e.to_string())?.0);
        }
        let mut records = Vec::with_capacity(subjects.len());
        for subject in subjects {
            match leader_last(&stream, &subject).await? {
                Some(record) => records.push(record),
                None => continue, // removed since it was listed (an ended alert pruned)
            }
        }
        records.sort_by_key(|r| r.sequence);
        Ok(records)
    }

    async fn try_subject(&self, subject: &str) -> Result<Vec<StoredAlert>, String> {
        let records = self.try_read(subject, consumer::DeliverPolicy::All).await?;
        let stream = self.jetstream.get_stream(STREAM).await.map_err(|e| e.to_string())?;
        let read = records.last().map_or(0, |r| r.sequence);
        match leader_last(&stream, subject).await? {
            Some(last) if last.sequence > read => {
                Err(format!("the consumer's replica is behind the leader ({read} < {})", last.sequence))
            }
            _ => Ok(records),
        }
    }

    async fn read<F, Fut>(&self, filter: &str, attempt: F) -> Result<Vec<StoredAlert>, ClusterError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<StoredAlert>, String>>,
    {
        let failed =
            |message: String| ClusterError::Unavailable { subject: filter.to_string(), waited: self.deadline, message };
        let started = tokio::time::Instant::now();
        loop {
            match attempt().await {
                Ok(records) => return Ok(records),
                Err(e) if started.elapsed() >= self.deadline => return Err(failed(e)),
                Err(e) => {
                    tracing::warn!(error = %e, filter, "reading the alerts stream failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Removes every message of one alert's subject (its owner, once the ended alert's retention has passed): the
    /// stream then no longer holds the alert, and a region's next owner does not adopt it.
    pub async fn remove(&self, subject: &str) -> Result<u64, ClusterError> {
        let failed =
            |message: String| ClusterError::Unavailable { subject: subject.into(), waited: self.deadline, message };
        let stream = self.jetstream.get_stream(STREAM).await.map_err(|e| failed(e.to_string()))?;
        let purged = stream.purge().filter(subject).await.map_err(|e| failed(e.to_string()))?;
        Ok(purged.purged)
    }

    async fn try_read(&self, filter: &str, policy: consumer::DeliverPolicy) -> Result<Vec<StoredAlert>, String> {
        let stream = self.jetstream.get_stream(STREAM).await.map_err(|e| e.to_string())?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter.to_string(),
                deliver_policy: policy,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let pending = consumer.cached_info().num_pending;
        let mut records = Vec::with_capacity(pending as usize);
        if pending == 0 {
            return Ok(records);
        }
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
            let message = match next {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => return Err(e.to_string()),
                Ok(None) => return Err("the consumer ended".into()),
                Err(_) => return Err("no message in 5 s".into()),
            };
            let info = message.info().map_err(|e| e.to_string())?;
            let left = info.pending;
            records.push(StoredAlert {
                sequence: info.stream_sequence,
                subject: message.subject.to_string(),
                payload: message.payload.clone(),
                pending: left,
                stored_ms: stored_ms(&info),
            });
            if left == 0 {
                return Ok(records);
            }
        }
    }
}

/// The last message of `subject` as the stream's leader has it (`None`: the subject holds none).
async fn leader_last(stream: &stream::Stream, subject: &str) -> Result<Option<StoredAlert>, String> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => Ok(Some(StoredAlert {
            sequence: m.sequence,
            subject: m.subject.to_string(),
            payload: m.payload,
            pending: 0,
            stored_ms: i64::try_from(m.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX),
        })),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// One message of the alerts stream.
#[derive(Debug, Clone)]
pub struct StoredAlert {
    /// Its stream sequence: where a watcher resumes after it.
    pub sequence: u64,
    /// `dc.alerts.{region}.{alert id}`.
    pub subject: String,
    pub payload: Bytes,
    /// Messages still to come after this one, as the server counted when it sent it (0: caught up; always 0 for a
    /// message read from the leader by subject).
    pub pending: u64,
    /// When the stream stored it (the server's clock), milliseconds since the Unix epoch.
    pub stored_ms: i64,
}

/// Where a watcher of the whole stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// The last message of every subject (every alert as it stands), then every new message.
    LastPerSubject,
    /// Every message after this stream sequence: a watcher resuming where it stopped.
    After(u64),
}

/// Every alert version as it is stored, for a fan-out node: an ordered consumer on `dc.alerts.>` (ephemeral, one
/// replica, no acknowledgements, [`crate::ordered`]). The client recreates it within seconds after a missed heartbeat
/// or a lost leader at the stream sequence after the last one delivered, so nothing is skipped or delivered twice; a
/// watcher that is dropped and opened again resumes with [`WatchFrom::After`].
pub struct AlertWatch {
    messages: Guarded,
    /// Messages waiting when the consumer was created (0: nothing to catch up on).
    pub pending_at_start: u64,
}

impl AlertWatch {
    pub async fn open(backbone: &Backbone, from: WatchFrom) -> Result<Self, ClusterError> {
        let deliver_policy = match from {
            WatchFrom::LastPerSubject => consumer::DeliverPolicy::LastPerSubject,
            WatchFrom::After(sequence) => consumer::DeliverPolicy::ByStartSequence { start_sequence: sequence + 1 },
        };
        let config = backbone.config();
        let js = backbone.jetstream().clone();
        retry_setup("the alerts stream's watcher", config.start_timeout, || {
            let js = js.clone();
            async move {
                let stream = js.get_stream(STREAM).await.map_err(|e| e.to_string())?;
                let messages = Guarded::create(&js.client(), stream, SUBJECTS.into(), deliver_policy).await?;
                Ok::<_, String>(AlertWatch { pending_at_start: messages.pending_at_start, messages })
            }
        })
        .await
    }

    /// The next stored alert message; `None` if the consumer ended (the client closed). Errors are the client's
    /// (heartbeats missed while it recreates the consumer); the caller may keep calling.
    pub async fn next(&mut self) -> Option<Result<StoredAlert, ClusterError>> {
        Some(self.messages.next(SUBJECTS).await?.map(|(m, at)| StoredAlert {
            sequence: at.sequence,
            subject: m.subject.to_string(),
            payload: m.payload.clone(),
            pending: at.pending,
            stored_ms: at.stored_ms,
        }))
    }
}

/// `(region, alert id)` of `dc.alerts.{region}.{alert id}`; `None` for any other subject.
pub fn parse_subject(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix("dc.alerts.")?;
    let (region, id) = rest.split_once('.')?;
    (!region.is_empty() && !id.is_empty() && !id.contains('.')).then_some((region, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip_and_nothing_else_parses() {
        let s = subject("10008", "TW-DC-w-1-1764-000001").unwrap();
        assert_eq!(parse_subject(&s), Some(("10008", "TW-DC-w-1-1764-000001")));
        assert_eq!(subject("10008", "a.b"), None);
        for bad in
            ["dc.alerts.10008", "dc.alerts..A1", "dc.alerts.10008.", "dc.alerts.10008.A.B", "dc.readings.10008.A"]
        {
            assert_eq!(parse_subject(bad), None, "{bad}");
        }
    }
}
