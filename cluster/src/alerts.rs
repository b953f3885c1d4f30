//! The alerts stream: every change of every alert, by the worker owning its region, so that the region's next owner
//! continues the alert book (and fan-out nodes can watch it).
//!
//! Stream `DC_ALERTS` (`replicas` copies), subjects `dc.alerts.{region}.{alert id}`, one message per alert version,
//! `Nats-Msg-Id` = `{alert id}:{version}`: a worker that re-publishes a version after a lost acknowledgement or a
//! crash stores it once. The last message of a subject is the alert as it stands; a new owner reads the last message
//! of each subject of its region ([`AlertsLog::region_records`]). A few versions per alert are kept for whoever
//! watches the stream late; an ended alert's subject is removed by the region's owner once the alert's retention
//! has passed since its final version was stored ([`AlertsLog::remove`]), so the stream holds the alerts that are
//! open or recently ended, not every alert ever raised.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;

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

    /// The latest message of every alert of `region`, oldest first.
    pub async fn region_records(&self, region: &str) -> Result<Vec<Bytes>, ClusterError> {
        Ok(self.region_latest(region).await?.into_iter().map(|latest| latest.payload).collect())
    }

    /// The latest message of every alert of `region` with its subject and when the stream stored it, oldest first.
    pub async fn region_latest(&self, region: &str) -> Result<Vec<Latest>, ClusterError> {
        let failed = |message: String| ClusterError::Unavailable {
            subject: format!("dc.alerts.{region}.>"),
            waited: self.deadline,
            message,
        };
        let started = tokio::time::Instant::now();
        loop {
            match self.try_region_latest(region).await {
                Ok(records) => return Ok(records),
                Err(e) if started.elapsed() >= self.deadline => return Err(failed(e)),
                Err(e) => {
                    tracing::warn!(error = %e, region, "reading the region's alerts failed; retrying");
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

    async fn try_region_latest(&self, region: &str) -> Result<Vec<Latest>, String> {
        let stream = self.jetstream.get_stream(STREAM).await.map_err(|e| e.to_string())?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: format!("dc.alerts.{region}.>"),
                deliver_policy: consumer::DeliverPolicy::LastPerSubject,
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
            let (left, stored_ms) = (info.pending, (info.published.unix_timestamp_nanos() / 1_000_000) as i64);
            records.push(Latest { subject: message.subject.to_string(), payload: message.payload.clone(), stored_ms });
            if left == 0 {
                return Ok(records);
            }
        }
    }
}

/// The latest message of one alert's subject.
#[derive(Debug, Clone)]
pub struct Latest {
    pub subject: String,
    pub payload: Bytes,
    /// When the stream stored it (the server's clock), milliseconds since the Unix epoch.
    pub stored_ms: i64,
}
