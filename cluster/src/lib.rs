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
//! - `test_support` (feature `test-support`): a three-node `nats-server` cluster on loopback for tests, run with the
//!   users and permissions of `ops/nats/authorization.conf`.
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
    /// How this process proves who it is to the cluster; `None`: anonymously (a server without authorization, for
    /// tests of the crate only: `serve` refuses to start without credentials).
    pub auth: Option<NatsAuth>,
    /// The CA certificate (PEM) the cluster's TLS certificates are checked against; given, TLS is required on every
    /// URL (`tls://` or `nats://` alike). `None`: TLS only for `tls://` URLs, against the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// The subject prefix of this process's reply inboxes (`_INBOX.{role}`): the server lets each role's user
    /// subscribe to its own prefix only, so no role listens to another's replies (`ops/nats/authorization.conf`).
    pub inbox_prefix: String,
}

/// The credentials of one NATS user. A user and password is what nats-server checks against per-user permissions in
/// its own configuration file, with nothing else to run (decentralised JWT auth, `.creds` files, needs an operator,
/// account JWTs and a resolver). An enum so that an NKey seed (the server holding only the public key) can join it
/// without touching its users (docs/SCALING.md § What is left).
#[derive(Clone, PartialEq, Eq)]
pub enum NatsAuth {
    UserPassword { user: String, password: String },
}

impl NatsAuth {
    fn apply(&self, options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        match self {
            NatsAuth::UserPassword { user, password } => options.user_and_password(user.clone(), password.clone()),
        }
    }
}

/// Never prints a password (logs, panics, `{:?}` of a config).
impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::UserPassword { user, .. } => write!(f, "UserPassword {{ user: {user:?}, password: <hidden> }}"),
        }
    }
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
            auth: None,
            ca_file: None,
            inbox_prefix: "_INBOX".into(),
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
        LazyLock::force(&SERVER_REFUSALS);
        let urls = config.urls.join(",");
        if config.urls.is_empty() {
            return Err(ClusterError::Connect { urls, message: "no URL given".into() });
        }
        let mut options = async_nats::ConnectOptions::new()
            .name(&config.name)
            .custom_inbox_prefix(&config.inbox_prefix)
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(REQUEST_TIMEOUT))
            // Reconnect forever: a cluster that comes back must find its front doors and workers still there.
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 100).min(1_000)))
            .event_callback(|event| async move {
                match &event {
                    // The server refused something this process did (a subject its user may not publish or
                    // subscribe to, `ops/nats/authorization.conf`), or its credentials: a deployment error to see.
                    async_nats::Event::ServerError(error) => {
                        let kind = refusal_kind(&error.to_string());
                        SERVER_REFUSALS.with_label_values(&[kind]).inc();
                        tracing::warn!(%event, kind, "NATS server refused");
                    }
                    _ => tracing::info!(%event, "NATS connection"),
                }
            });
        if let Some(auth) = &config.auth {
            options = auth.apply(options);
        }
        if let Some(ca) = &config.ca_file {
            // Passwords cross the wire in the CONNECT: never in clear once a CA says what the cluster is.
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        let connect = options.connect(config.urls.as_slice());
        let client = tokio::time::timeout(config.start_timeout, connect)
            .await
            .map_err(|_| ClusterError::Connect { urls: urls.clone(), message: "timed out".into() })?
            .map_err(|e| {
                let refused = matches!(
                    e.kind(),
                    async_nats::ConnectErrorKind::AuthorizationViolation | async_nats::ConnectErrorKind::Authentication
                );
                let message = if refused {
                    let who = match &config.auth {
                        Some(NatsAuth::UserPassword { user, .. }) => format!("user `{user}`"),
                        None => "no credentials".into(),
                    };
                    SERVER_REFUSALS.with_label_values(&["authorization"]).inc();
                    format!("the cluster refused our credentials ({who}): {e}")
                } else {
                    e.to_string()
                };
                ClusterError::Connect { urls: urls.clone(), message }
            })?;
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

/// The `dc_cluster_server_refusals_total` label of a server's `-ERR`.
fn refusal_kind(error: &str) -> &'static str {
    let error = error.to_ascii_lowercase();
    if error.contains("permissions violation") {
        "permission"
    } else if error.contains("authorization") || error.contains("authentication") {
        "authorization"
    } else {
        "other"
    }
}

/// What the NATS server refused this process, by kind: `permission` (a subject its user may not use: a role doing
/// what `ops/nats/authorization.conf` does not grant it), `authorization` (its credentials), `other`.
pub static SERVER_REFUSALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = register_int_counter_vec!(
        "dc_cluster_server_refusals_total",
        "Errors the NATS server sent this process, by kind (permission, authorization, other)",
        &["kind"]
    )
    .expect("metric registers");
    for kind in ["permission", "authorization", "other"] {
        c.with_label_values(&[kind]);
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
