//! The ordered consumers that follow a stream as it grows (a region's readings for its owner, the alerts stream for
//! a fan-out node), with two corrections to the client's own (`async-nats` 0.52, `consumer::pull::Ordered`):
//!
//! - **Recovery in ~4 s, not ~30 s.** The client sends idle heartbeats at half of a pull request's expiry and
//!   recreates the consumer after two missed ones; its default expiry is 30 s, so a consumer lost with its stream's
//!   leader (SIGKILL of a NATS node) stalled its region for ~30 s (measured: 27–35 s in `tests/ha_fanout.rs`).
//!   [`EXPIRES`] caps the expiry (`max_expires`), and with it the heartbeat.
//! - **The start kept.** When the client recreates a consumer before it delivered anything, it asks for the whole
//!   stream (`DeliverPolicy::All`, `recreate_consumer_stream`), not for the start it was given: a region's new owner
//!   would get the readings before its progress mark (seen in CI: a reader opened at sequence 2 got sequence 1).
//!   [`Guarded::next`] drops every message before the start (by sequence, or by the time the stream stored it) and
//!   any sequence it already delivered, so a recreation never delivers old or repeated messages.
//! - **A new consumer after a reconnection** ([`Guarded::next`]): the client's own can stay silent ~27 s then.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::Statistics;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;

use crate::ClusterError;

/// How long one pull request lasts: heartbeats every 1 s, a lost consumer recreated after ~2–4 s.
pub(crate) const EXPIRES: Duration = Duration::from_secs(2);

/// How often a follower checks whether its client has reconnected.
const RECONNECT_CHECK: Duration = Duration::from_millis(250);

/// An ordered consumer on `stream` (ephemeral, one replica, no acknowledgements) with its start kept.
pub(crate) struct Guarded {
    messages: pull::Ordered,
    stream: stream::Stream,
    filter: String,
    /// Where it was asked to start: a new consumer starts there again while nothing was delivered.
    start: DeliverPolicy,
    /// Stream sequences at or below this are never delivered: the one before the start, then the last delivered.
    delivered: u64,
    /// Messages stored before this (ms since the epoch) are never delivered (a start by time).
    not_before_ms: i64,
    /// The client's count of connections made, when the consumer was created.
    stats: Arc<Statistics>,
    connects: u64,
    check: tokio::time::Interval,
    /// Messages waiting when the consumer was created.
    pub(crate) pending_at_start: u64,
}

impl Guarded {
    /// Creates the consumer: `filter`, starting at `start` (`LastPerSubject`, `ByStartSequence`, `ByStartTime` or
    /// `All`). `client` is the one `stream` was found through (its reconnections are watched).
    pub(crate) async fn create(
        client: &async_nats::Client,
        stream: stream::Stream,
        filter: String,
        start: DeliverPolicy,
    ) -> Result<Self, String> {
        let (delivered, not_before_ms) = match start {
            DeliverPolicy::ByStartSequence { start_sequence } => (start_sequence.saturating_sub(1), i64::MIN),
            DeliverPolicy::ByStartTime { start_time } => {
                (0, i64::try_from(start_time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MIN))
            }
            _ => (0, i64::MIN),
        };
        let stats = client.statistics();
        let connects = stats.connects.load(Ordering::Relaxed);
        let (messages, pending_at_start) = consume(&stream, &filter, start).await?;
        let mut check = tokio::time::interval(RECONNECT_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Guarded {
            messages,
            stream,
            filter,
            start,
            delivered,
            not_before_ms,
            stats,
            connects,
            check,
            pending_at_start,
        })
    }

    /// The next message at or after the start, never one delivered before, with where it is in the stream; `None` if
    /// the consumer ended (the client closed). Errors are the client's (heartbeats missed while it recreates the
    /// consumer) or a failed replacement; the caller may keep calling. `subject` names the stream in errors.
    ///
    /// When the client has reconnected (its node died) the consumer is replaced by a new one after the last
    /// sequence delivered: measured on the fan-out watcher and the workers' readings, the client's own consumer sat
    /// silent ~27 s after such a reconnection until a pull request timed out, heartbeats notwithstanding.
    pub(crate) async fn next(&mut self, subject: &str) -> Option<Result<(jetstream::Message, Position), ClusterError>> {
        loop {
            let message = tokio::select! {
                next = self.messages.next() => match next? {
                    Ok(message) => message,
                    Err(e) => return Some(Err(unavailable(subject, &e))),
                },
                _ = self.check.tick() => {
                    let connects = self.stats.connects.load(Ordering::Relaxed);
                    if connects == self.connects {
                        continue;
                    }
                    if let Err(e) = self.replace().await {
                        return Some(Err(unavailable(subject, &e)));
                    }
                    self.connects = connects;
                    continue;
                }
            };
            let position = match message.info() {
                Ok(info) => {
                    Position { sequence: info.stream_sequence, pending: info.pending, stored_ms: stored_ms(&info) }
                }
                Err(e) => return Some(Err(unavailable(&message.subject, &e))),
            };
            if position.sequence <= self.delivered || position.stored_ms < self.not_before_ms {
                continue;
            }
            self.delivered = position.sequence;
            return Some(Ok((message, position)));
        }
    }

    /// A new consumer after the last sequence delivered (at the start, while nothing was).
    async fn replace(&mut self) -> Result<(), String> {
        let from = match self.start {
            DeliverPolicy::ByStartSequence { start_sequence } if self.delivered < start_sequence => self.start,
            _ if self.delivered == 0 => self.start,
            _ => DeliverPolicy::ByStartSequence { start_sequence: self.delivered + 1 },
        };
        let (messages, _) = consume(&self.stream, &self.filter, from).await?;
        self.messages = messages;
        tracing::info!(filter = %self.filter, ?from, "the NATS client reconnected: following the stream with a new consumer");
        Ok(())
    }
}

async fn consume(stream: &stream::Stream, filter: &str, from: DeliverPolicy) -> Result<(pull::Ordered, u64), String> {
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter.to_string(),
            deliver_policy: from,
            max_expires: EXPIRES,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let pending = consumer.cached_info().num_pending;
    Ok((consumer.messages().await.map_err(|e| e.to_string())?, pending))
}

/// Where a delivered message is in its stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Position {
    pub(crate) sequence: u64,
    /// Messages after it (matching the filter) when it was delivered.
    pub(crate) pending: u64,
    /// When the stream stored it, in ms since the epoch.
    pub(crate) stored_ms: i64,
}

/// When the stream stored a message, in ms since the epoch.
pub(crate) fn stored_ms(info: &jetstream::message::Info) -> i64 {
    i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn unavailable(subject: &str, e: &dyn std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable { subject: subject.into(), waited: Duration::ZERO, message: e.to_string() }
}
