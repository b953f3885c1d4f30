//! A worker's alerts on the cluster: every change of its book, retained under `alerts/{region}/{id}`, signed with the
//! worker's key (`signing.rs`).

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use alerting::publication::PublicWarning;
use alerting::Alert;
use bytes::Bytes;
use ingest::upstream::Publisher;
use prometheus::{register_int_counter_vec, IntCounterVec};
use tokio::sync::broadcast::error::RecvError;

use super::region::zone_region;
use super::signing::AlertSigner;
use crate::app::App;
use crate::clock::now_ms;

pub(super) static ALERTS_PUBLISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "dc_cluster_alerts_published_total",
        "Alert versions a worker published to the cluster (alerts/{region}/{id}), by kind (change, resend, removed)",
        &["kind"]
    )
    .expect("metric registers")
});

/// Every id the worker publishes: its book's alerts and the public warnings made of them.
fn everything(app: &App) -> Vec<String> {
    let mut ids: Vec<String> = app.alerts.book.lock().all().map(|a| a.id.clone()).collect();
    ids.extend(app.alerts.publication.lock().latest().map(|w| w.alert.id.clone()));
    ids
}

/// A worker's alerts on the cluster: every change of an alert in its book, and every version of a public warning
/// (`alerting::publication`: one per hazard, area and mode, `W-{first alert id}`, what citizens of a single process
/// receive), goes to `alerts/{region}/{id}` (retained, QoS 1) as the operators' frame (`type` `alert` or
/// `public_warning`) plus `public`, `worker`, `worker_url` and `region`, in the signed envelope (the signature covers
/// the topic and the frame's exact text). Fan-out nodes show both to operators and only the warnings to citizens,
/// as a single process does. After every (re)connection everything is sent again (a restart or a broker failover
/// must not leave stale retained state; receivers drop what they have already seen by id and version). Ended alerts
/// and warnings stay retained for `retention_ms`, then are removed with an empty retained message.
pub(super) async fn publish_alerts(
    app: Arc<App>,
    publisher: Publisher,
    signer: Arc<AlertSigner>,
    worker: String,
    retention_ms: i64,
) {
    let mut changes = app.channels.alerts.subscribe();
    let mut connections = publisher.connections();
    let mut expiry = tokio::time::interval(Duration::from_secs(60));
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut removed: HashSet<String> = HashSet::new();
    loop {
        let (ids, kind): (Vec<String>, &str) = tokio::select! {
            changed = connections.changed() => {
                if changed.is_err() {
                    return;
                }
                (everything(&app), "resend")
            }
            next = changes.recv() => match next {
                Ok(change) => (vec![change.id.clone()], "change"),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "alert changes outran the cluster publisher; sending the whole book");
                    (everything(&app), "resend")
                }
                Err(RecvError::Closed) => return,
            },
            _ = expiry.tick() => {
                let cutoff = now_ms() - retention_ms;
                let ended = |a: &Alert| !a.state.is_active() && a.issued_ms < cutoff && !removed.contains(&a.id);
                let mut expired: Vec<(String, String)> = app
                    .alerts
                    .book
                    .lock()
                    .all()
                    .filter(|a| ended(a))
                    .map(|a| (a.id.clone(), alert_topic(&app, a)))
                    .collect();
                expired.extend(
                    app.alerts
                        .publication
                        .lock()
                        .latest()
                        .filter(|w| ended(&w.alert))
                        .map(|w| (w.alert.id.clone(), alert_topic(&app, &w.alert))),
                );
                for (id, topic) in expired {
                    if publisher.publish(topic, Bytes::new(), true).await.is_ok() {
                        ALERTS_PUBLISHED.with_label_values(&["removed"]).inc();
                        removed.insert(id);
                    }
                }
                continue;
            }
        };
        let cutoff = now_ms() - retention_ms;
        for id in ids {
            // The current version: a change seen late is sent as what it has become since.
            let (topic, frame) = {
                let book = app.alerts.book.lock();
                match book.get(&id) {
                    Some(a) if !a.state.is_active() && a.issued_ms < cutoff => continue,
                    Some(a) => (alert_topic(&app, a), alert_frame(&app, a, &worker)),
                    None => {
                        drop(book);
                        let warning = app.alerts.publication.lock().latest().find(|w| w.alert.id == id).cloned();
                        match warning {
                            // Alerts from partner agencies share the channel but are not ours to publish.
                            None => continue,
                            Some(w) if !w.alert.state.is_active() && w.alert.issued_ms < cutoff => continue,
                            Some(w) => (alert_topic(&app, &w.alert), warning_frame(&app, &w, &worker)),
                        }
                    }
                }
            };
            let payload = Bytes::from(signer.seal(&topic, &frame));
            match publisher.publish(topic, payload, true).await {
                Ok(()) => ALERTS_PUBLISHED.with_label_values(&[kind]).inc(),
                Err(e) => tracing::error!(error = %e, id, "could not publish the alert to the cluster"),
            }
        }
    }
}

fn alert_topic(app: &App, alert: &Alert) -> String {
    format!("alerts/{}/{}", zone_region(app, &alert.area_id).unwrap_or("unassigned"), alert.id)
}

/// The operators' frame of `alert` with the cluster's fields: the text the signature covers.
fn alert_frame(app: &App, alert: &Alert, worker: &str) -> String {
    let frame = serde_json::to_value(app.alert_message(alert)).unwrap_or_default();
    with_cluster_fields(app, frame, &alert.area_id, alert.is_public(), worker)
}

/// The frame of a public warning (`type` `public_warning`, as operators of a single process receive it; the
/// citizens' frames are made from it) with the cluster's fields.
fn warning_frame(app: &App, warning: &PublicWarning, worker: &str) -> String {
    let frame = serde_json::to_value(app.warning_message(warning)).unwrap_or_default();
    with_cluster_fields(app, frame, &warning.alert.area_id, true, worker)
}

fn with_cluster_fields(app: &App, mut frame: serde_json::Value, area_id: &str, public: bool, worker: &str) -> String {
    if let Some(map) = frame.as_object_mut() {
        map.insert("public".into(), public.into());
        map.insert("worker".into(), worker.into());
        map.insert("worker_url".into(), app.web.public_url.clone().into());
        map.insert("region".into(), zone_region(app, area_id).unwrap_or("unassigned").into());
    }
    frame.to_string()
}
