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

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;

use crate::ClusterError;

/// How long one pull request lasts: heartbeats every 1 s, a lost consumer recreated after ~2–4 s.
pub(crate) const EXPIRES: Duration = Duration::from_secs(2);

/// An ordered consumer on `stream` (ephemeral, one replica, no acknowledgements) with its start kept.
pub(crate) struct Guarded {
    messages: pull::Ordered,
    /// Stream sequences at or below this are never delivered: the one before the start, then the last delivered.
    delivered: u64,
    /// Messages stored before this (ms since the epoch) are never delivered (a start by time).
    not_before_ms: i64,
    /// Messages waiting when the consumer was created.
    pub(crate) pending_at_start: u64,
}

impl Guarded {
    /// Creates the consumer: `filter`, starting at `start` (`LastPerSubject`, `ByStartSequence`, `ByStartTime` or
    /// `All`).
    pub(crate) async fn create(stream: &stream::Stream, filter: String, start: DeliverPolicy) -> Result<Self, String> {
        let (delivered, not_before_ms) = match start {
            DeliverPolicy::ByStartSequence { start_sequence } => (start_sequence.saturating_sub(1), i64::MIN),
            DeliverPolicy::ByStartTime { start_time } => {
                (0, i64::try_from(start_time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MIN))
            }
            _ => (0, i64::MIN),
        };
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: filter,
                deliver_policy: start,
                max_expires: EXPIRES,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let pending_at_start = consumer.cached_info().num_pending;
        let messages = consumer.messages().await.map_err(|e| e.to_string())?;
        Ok(Guarded { messages, delivered, not_before_ms, pending_at_start })
    }

    /// The next message at or after the start, never one delivered before, with where it is in the stream; `None` if
    /// the consumer ended (the client closed). Errors are the client's (heartbeats missed while it recreates the
    /// consumer); the caller may keep calling. `subject` names the stream in errors.
    pub(crate) async fn next(&mut self, subject: &str) -> Option<Result<(jetstream::Message, Position), ClusterError>> {
        loop {
            let message = match self.messages.next().await? {
                Ok(message) => message,
                Err(e) => return Some(Err(unavailable(subject, &e))),
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
