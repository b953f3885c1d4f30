//! A fan-out node on the NATS backbone (`serve --cluster … --role fan-out`): no front door, no rules, no readings
//! store. It watches the alerts stream `DC_ALERTS` (the last message of every alert, then every new one), applies each
//! message through the same book as the MQTT cluster's fan-out ([`super::RemoteAlerts`]: signature by a trusted
//! worker over the subject, the subject's county against the key's counties and the alert's area, versions never
//! going back) and serves `/ws/citizen` (public warnings) and `/ws/operator` (alerts and warnings) from it, so
//! citizens' connections scale apart from the workers and any node can serve any citizen.
//!
//! Start: the node reads the stream's current state (every alert's last message) **before** it returns, so the
//! HTTP listener opens on a whole book and a citizen reconnecting here after another node died gets what it missed
//! through the citizens' replay (`last_seen`), not a half-built picture.
//!
//! Resuming: the watcher is an ordered consumer, which the client recreates after two missed heartbeats (a lost
//! stream leader) at the stream sequence after the last one delivered; when the client reconnects (its node died)
//! the watcher replaces it itself (`cluster/src/ordered.rs`). When the consumer ends or keeps failing, the node opens
//! a new one after the last sequence it applied. Either way a version it already applied is never applied again (and
//! would be dropped as `stale` if it were), so no citizen gets a frame twice.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use cluster::alerts::{AlertWatch, AlertsLog, StoredAlert, WatchFrom};
use cluster::Backbone;
use prometheus::{register_int_counter_vec, IntCounterVec};

use super::region;
use super::signing::TrustedKeys;
use crate::app::App;
use crate::clock::now_ms;

/// How long an ended alert stays in the node's book (its citizens' replay tells a reconnecting app that it ended),
/// as the MQTT cluster's default `closed_retention_h`. Its last version is remembered after that (a replay of an
/// older one is refused).
const ENDED_KEPT_MS: i64 = 24 * 3_600_000;

/// Consecutive errors from the watcher before it is replaced by a new one (the client recreates it by itself after
/// missed heartbeats; errors in a row mean that did not help).
const ERRORS_BEFORE_REOPEN: u32 = 5;

/// How long the start waits for the next message of the stream's current state before it gives up on the start.
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(30);

static WATCH: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = register_int_counter_vec!(
        "dc_cluster_alert_watch_total",
        "A fan-out node's watch of the alerts stream, by event (message: one stored alert message read; error: the \
         consumer reported a failure; reopened: a new consumer after the last applied sequence)",
        &["event"]
    )
    .expect("metric registers");
    for event in ["message", "error", "reopened"] {
        c.with_label_values(&[event]);
    }
    c
});

/// Sets the node's book up (trusted keys, zones' counties), reads the stream's current state, then keeps watching in
/// the background.
pub(super) async fn start(
    app: Arc<App>,
    backbone: Backbone,
    trusted: Arc<TrustedKeys>,
) -> Result<(), cluster::ClusterError> {
    for outcome in super::remote_alerts::OUTCOMES {
        super::remote_alerts::ALERTS_RECEIVED.with_label_values(&[outcome]);
    }
    LazyLock::force(&WATCH);
    let area_regions = app
        .geo
        .zones()
        .filter_map(|z| Some((z.id.clone(), region::county_of(z.geocode.as_deref()?)?.to_string())))
        .collect();
    app.remote_alerts.set_area_regions(area_regions);
    app.remote_alerts.set_trusted(trusted);
    // The stream exists before the watcher is created (a fan-out node may start before any worker).
    AlertsLog::open(&backbone).await?;
    let mut watch = AlertWatch::open(&backbone, WatchFrom::LastPerSubject).await?;
    let mut last = None;
    let mut left = watch.pending_at_start;
    let started = tokio::time::Instant::now();
    while left > 0 {
        match tokio::time::timeout(CATCH_UP_PATIENCE, watch.next()).await {
            Ok(Some(Ok(message))) => {
                left = message.pending;
                last = Some(message.sequence);
                apply(&app, &message);
            }
            Ok(Some(Err(e))) => {
                WATCH.with_label_values(&["error"]).inc();
                tracing::warn!(error = %e, "alerts stream: the watcher is recovering");
            }
            Ok(None) | Err(_) => {
                return Err(cluster::ClusterError::Setup {
                    what: "the alerts stream's current state".into(),
                    waited: CATCH_UP_PATIENCE,
                    message: format!("{left} messages still to read"),
                })
            }
        }
    }
    tracing::info!(read = ?started.elapsed(), sequence = ?last, "alerts stream read: serving");
    tokio::spawn(watch_on(app, backbone, watch, last));
    Ok(())
}

/// Applies every new message; replaces the watcher when it ends or keeps failing. (After a reconnection of the
/// client the watcher replaces its own consumer: `cluster/src/ordered.rs`.)
async fn watch_on(app: Arc<App>, backbone: Backbone, mut watch: AlertWatch, mut last: Option<u64>) {
    let mut errors = 0;
    loop {
        match watch.next().await {
            Some(Ok(message)) => {
                errors = 0;
                last = Some(message.sequence);
                apply(&app, &message);
                continue;
            }
            Some(Err(e)) => {
                WATCH.with_label_values(&["error"]).inc();
                errors += 1;
                tracing::warn!(error = %e, errors, "alerts stream: the watcher reported an error");
                if errors < ERRORS_BEFORE_REOPEN {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            None => tracing::warn!("alerts stream: the watcher ended"),
        }
        // A new watcher after the last applied sequence (or the stream's current state, if nothing was applied yet:
        // versions already held are dropped as stale).
        let from = last.map_or(WatchFrom::LastPerSubject, WatchFrom::After);
        loop {
            match AlertWatch::open(&backbone, from).await {
                Ok(opened) => {
                    WATCH.with_label_values(&["reopened"]).inc();
                    tracing::info!(?from, "alerts stream: watching again");
                    watch = opened;
                    errors = 0;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "alerts stream: cannot watch it yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// One stored message through the node's book; news goes to the websockets.
fn apply(app: &App, message: &StoredAlert) {
    WATCH.with_label_values(&["message"]).inc();
    let now = now_ms();
    if let Some(change) = app.remote_alerts.apply_backbone(&message.subject, &message.payload, now, now - ENDED_KEPT_MS)
    {
        // No subscriber is normal.
        let _ = app.channels.alerts.send(change);
    }
}
