//! The alerts stream as the dissemination node reads it: the whole history once at take-over ([`replay`]), then the
//! changes one by one from a durable consumer with explicit acknowledgements ([`AlertQueue`]).
//!
//! Why a durable consumer on `DC_ALERTS` rather than a work-queue stream of its own (`docs/SCALING.md`): a work-queue
//! stream deletes a message once acknowledged, but the node taking dissemination over needs the history to rebuild
//! the public warnings exactly as they were (calm-update state, CAP references, what is on the air), and the workers
//! and fan-out nodes read `DC_ALERTS` anyway; a second stream would be a second copy of every alert version.
//!
//! The consumer (`dc_dissemination`) delivers in stream order with one message unacknowledged at a time
//! (`max_ack_pending` 1): a change is acknowledged only after its deliveries are recorded in the delivery ledger, and
//! the next one follows. A message its dead holder never acknowledged is delivered again after `ack_wait`.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, AckKind};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::alerts::STREAM;
use crate::{retry_setup, Backbone, ClusterError};

/// The durable consumer's name.
pub const CONSUMER: &str = "dc_dissemination";

/// One alert version from the stream.
pub struct AlertChange {
    /// Its sequence in `DC_ALERTS` (the order every node sees).
    pub sequence: u64,
    pub subject: String,
    pub payload: Bytes,
    /// Present for a change from [`AlertQueue`]: what [`AlertChange::ack`] acknowledges.
    message: Option<jetstream::Message>,
}

impl std::fmt::Debug for AlertChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertChange").field("sequence", &self.sequence).field("subject", &self.subject).finish()
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable { subject: format!("{STREAM} {what}"), waited: Duration::ZERO, message: e.to_string() }
}

impl AlertChange {
    /// Acknowledges the change and waits for the server to confirm it (a replayed change has nothing to acknowledge).
    pub async fn ack(&self) -> Result<(), ClusterError> {
        match &self.message {
            Some(m) => m.double_ack().await.map_err(|e| unavailable("ack", e)),
            None => Ok(()),
        }
    }

    /// Tells the server the change is still being worked on (its `ack_wait` starts again).
    pub async fn in_progress(&self) {
        if let Some(m) = &self.message {
            let _ = m.ack_with(AckKind::Progress).await;
        }
    }
}

/// Every message of `DC_ALERTS` up to the last one at the call, in order (an ordered consumer: nothing is
/// acknowledged, nothing is remembered). Returns them and the last sequence read.
pub async fn replay(backbone: &Backbone) -> Result<(Vec<AlertChange>, u64), ClusterError> {
    let js = backbone.jetstream().clone();
    let within = backbone.config().publish_deadline;
    retry_setup("the alerts stream's replay", within, || {
        let js = js.clone();
        async move { try_replay(&js).await }
    })
    .await
}

async fn try_replay(js: &jetstream::Context) -> Result<(Vec<AlertChange>, u64), String> {
    let mut stream = js.get_stream(STREAM).await.map_err(|e| e.to_string())?;
    let last = stream.info().await.map_err(|e| e.to_string())?.state.last_sequence;
    let mut changes = Vec::new();
    if last == 0 {
        return Ok((changes, 0));
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    loop {
        let message = match tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(None) => return Err("the consumer ended".into()),
            Err(_) => return Err("no message in 5 s".into()),
        };
        let info = message.info().map_err(|e| e.to_string())?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        changes.push(AlertChange {
            sequence,
            subject: message.subject.to_string(),
            payload: message.payload.clone(),
            message: None,
        });
        if sequence >= last || pending == 0 {
            return Ok((changes, sequence));
        }
    }
}

/// The durable consumer the active dissemination node takes changes from.
pub struct AlertQueue {
    messages: consumer::pull::Stream,
}

impl AlertQueue {
    /// Binds to the durable consumer (creating it: from the stream's start), in order, one unacknowledged message at
    /// a time, each given back after `ack_wait` if not acknowledged.
    pub async fn open(backbone: &Backbone, ack_wait: Duration) -> Result<Self, ClusterError> {
        let js = backbone.jetstream().clone();
        let config = consumer::pull::Config {
            durable_name: Some(CONSUMER.into()),
            ack_policy: consumer::AckPolicy::Explicit,
            deliver_policy: consumer::DeliverPolicy::All,
            ack_wait,
            max_ack_pending: 1,
            num_replicas: backbone.config().replicas,
            ..Default::default()
        };
        let messages = retry_setup("the dissemination consumer", backbone.config().start_timeout, || {
            let (js, config) = (js.clone(), config.clone());
            async move {
                let stream = js.get_stream(STREAM).await.map_err(|e| e.to_string())?;
                let consumer: consumer::PullConsumer =
                    stream.get_or_create_consumer(CONSUMER, config).await.map_err(|e| e.to_string())?;
                consumer.messages().await.map_err(|e| e.to_string())
            }
        })
        .await?;
        Ok(Self { messages })
    }

    /// The next change (waits for one). `None`: the consumer ended; an error: the client is recovering (call again).
    pub async fn next(&mut self) -> Option<Result<AlertChange, ClusterError>> {
        let message = match self.messages.next().await? {
            Ok(m) => m,
            Err(e) => return Some(Err(unavailable("consumer", e))),
        };
        let sequence = match message.info() {
            Ok(info) => info.stream_sequence,
            Err(e) => return Some(Err(unavailable("message info", e))),
        };
        Some(Ok(AlertChange {
            sequence,
            subject: message.subject.to_string(),
            payload: message.payload.clone(),
            message: Some(message),
        }))
    }
}
