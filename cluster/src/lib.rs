//! The replicated backbone of a cluster deployment (`serve --cluster`, `docs/SCALING.md`): NATS with JetStream, an
//! existing distributed engine (RAFT-replicated streams and key-value buckets, publish de-duplication by
//! `Nats-Msg-Id`), instead of a consensus layer of our own. This crate knows NATS and nothing of ours: the binary
//! hands it subjects, ids and bytes, and wires it to the front door (`scale_out/backbone.rs`).
//!
//! Layout:
//! - `lib.rs` (this file): [`Backbone`] (one connection to the cluster and its JetStream context),
//!   [`BackboneConfig`], [`ClusterError`], the metrics.
//! - [`readings`]: the readings stream (`DC_READINGS`, subjects `dc.readings.{region}.{device}`), publish ids derived
//!   from the device's publish, and [`readings::ReadingsLog::append`], which retries with the same id until the
//!   cluster acknowledges it or the deadline passes.
//!   [`readings::RegionReadings`]: one region's readings in stream order, for its owner.
//! - [`alerts`]: the alerts stream (`DC_ALERTS`, `dc.alerts.{region}.{alert id}`, one message per alert version,
//!   de-duplicated by `{id}:{version}`): what a region's next owner continues its alert book from.
//! - [`alert_feed`]: `DC_ALERTS` as the dissemination node reads it: the history once at take-over, then a durable
//!   consumer with explicit acknowledgements, in order.
//! - [`deliveries`]: the delivery ledger (`dc_deliveries`): each delivery recorded before its call, its attempts
//!   counted across nodes, its receiver's confirmation.
//! - [`progress`]: how far each region's owner got in the readings stream (`dc_progress`, fenced by compare-and-set).
//! - [`lease`]: who owns a region — leases in a replicated key-value bucket, taken by compare-and-set on the
//!   revision, renewed, expiring on the server's clock when their owner dies, released by a clean stop or a
//!   hand-over.
//! - [`presence`]: which rule workers are alive (`dc_workers`, entries expiring a ttl after the last announcement):
//!   what workers balance regions by.
//! - `ordered`: the ordered consumers that follow a growing stream (region readings, the alerts watch): recovered
//!   within seconds of a lost leader, never delivering before their start or twice.
//! - `bucket`: opening a replicated key-value bucket and the compare-and-set write that leases, progress marks and
//!   presence share.
//! - `test_support` (feature `test-support`): a three-node `nats-server` cluster on loopback for tests.
//!
//! Why NATS 2.15 and not Debian's 2.9: `docs/SCALING.md` § The backbone.

pub mod alert_feed;
pub mod alerts;
mod bucket;
pub mod deliveries;
pub mod lease;
mod ordered;
pub mod presence;
pub mod progress;
pub mod readings;
#[cfg(feature = "test-support")]
pub mod test_support;

use std::sync::LazyLock;
use std::time::Duration;

use async_nats::jetstream;
use prometheus::{register_int_counter_vec, IntCounterVec};

/// What the backbone does, for one process.
#[derive(Debug, Clone)]
pub struct BackboneConfig {
    /// Every node's client URL (`nats://host:4222`); the client reconnects to any of them.
    pub urls: Vec<String>,
    /// This process's name on the cluster (the server's connection list shows it; leases name their owner by it).
    pub name: String,
    /// Copies of each stream and bucket: 3 survives the loss of any one node (and needs three nodes).
    pub replicas: usize,
    /// How long a publish is retried with the same id before the caller is told it failed. At least 10 s: when a
    /// stream's leader dies, publishes stall ~5 s until a new one is elected.
    pub publish_deadline: Duration,
    /// How long the stream remembers publish ids: a device's re-sent publish within it is stored once.
    pub duplicate_window: Duration,
    /// How long readings stay in the stream (a new owner of a region replays from it).
    pub readings_max_age: Duration,
    /// How long the start waits for the cluster (connect, streams created or found) before it fails.
    pub start_timeout: Duration,
}

impl BackboneConfig {
    /// Defaults for everything but where and who.
    pub fn new(urls: Vec<String>, name: impl Into<String>) -> Self {
        Self {
            urls,
            name: name.into(),
            replicas: 3,
            publish_deadline: Duration::from_secs(30),
            duplicate_window: Duration::from_secs(600),
            readings_max_age: Duration::from_secs(7 * 24 * 3600),
            start_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot connect to the NATS cluster {urls}: {message}")]
    Connect { urls: String, message: String },
    #[error("cannot set up {what} on the NATS cluster within {waited:?}: {message}")]
    Setup { what: String, waited: Duration, message: String },
    /// The cluster did not acknowledge a publish before the deadline (no quorum, no leader, unreachable).
    #[error("`{subject}` not acknowledged by the cluster within {waited:?}: {message}")]
    Unavailable { subject: String, waited: Duration, message: String },
    #[error("lease on `{region}`: {message}")]
    Lease { region: String, message: String },
}

/// One process's link to the cluster: the client (reconnecting to any node by itself) and its JetStream context.
#[derive(Clone)]
pub struct Backbone {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    config: BackboneConfig,
}

impl std::fmt::Debug for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backbone").field("urls", &self.config.urls).field("name", &self.config.name).finish()
    }
}

/// How long one JetStream request (a publish's acknowledgement, a bucket operation) is waited for before it is
/// retried. Short, so that a request sent to a leader that just died is re-sent soon to the new one.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

impl Backbone {
    /// Connects (to whichever node answers; the client keeps reconnecting on its own afterwards).
    pub async fn connect(config: BackboneConfig) -> Result<Self, ClusterError> {
        let urls = config.urls.join(",");
        if config.urls.is_empty() {
            return Err(ClusterError::Connect { urls, message: "no URL given".into() });
        }
        let options = async_nats::ConnectOptions::new()
            .name(&config.name)
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(REQUEST_TIMEOUT))
            // Reconnect forever: a cluster that comes back must find its front doors and workers still there.
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 100).min(1_000)))
            .event_callback(|event| async move {
                tracing::info!(%event, "NATS connection");
            });
        let connect = options.connect(config.urls.as_slice());
        let client = tokio::time::timeout(config.start_timeout, connect)
            .await
            .map_err(|_| ClusterError::Connect { urls: urls.clone(), message: "timed out".into() })?
            .map_err(|e| ClusterError::Connect { urls: urls.clone(), message: e.to_string() })?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(REQUEST_TIMEOUT);
        Ok(Self { client, jetstream, config })
    }

    pub fn config(&self) -> &BackboneConfig {
        &self.config
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

/// Retries `attempt` until it succeeds or `within` has passed: setting up streams and buckets at start, while the
/// cluster may still be electing its JetStream leader.
pub(crate) async fn retry_setup<T, E: std::fmt::Display, F, Fut>(
    what: &str,
    within: Duration,
    mut attempt: F,
) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let started = tokio::time::Instant::now();
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if started.elapsed() >= within => {
                return Err(ClusterError::Setup { what: what.into(), waited: within, message: e.to_string() })
            }
            Err(e) => {
                tracing::debug!(error = %e, what, "cluster not ready yet; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Publishes to the replicated log, by outcome: `stored`, `duplicate` (the id was already stored: a device's
/// resend, or our own retry of a publish whose acknowledgement was lost), `retried` (one per attempt after the
/// first), `unavailable` (the deadline passed: the caller did not acknowledge the device).
pub static APPENDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = register_int_counter_vec!(
        "dc_cluster_appends_total",
        "Publishes to the replicated readings stream, by outcome (stored, duplicate, retried, unavailable)",
        &["outcome"]
    )
    .expect("metric registers");
    for outcome in ["stored", "duplicate", "retried", "unavailable"] {
        c.with_label_values(&[outcome]);
    }
    c
});

/// Lease changes, by kind (`acquired`, `renewed`, `lost`, `released`, `refused`: held by someone else).
pub static LEASES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = register_int_counter_vec!(
        "dc_cluster_leases_total",
        "Region lease operations, by outcome (acquired, renewed, lost, released, refused)",
        &["outcome"]
    )
    .expect("metric registers");
    for outcome in ["acquired", "renewed", "lost", "released", "refused"] {
        c.with_label_values(&[outcome]);
    }
    c
});
