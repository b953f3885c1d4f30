//! A worker's alerts on the cluster: every change of its book, retained under `alerts/{region}/{id}`.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use alerting::Alert;
use bytes::Bytes;
use ingest::upstream::Publisher;
use prometheus::{register_int_counter_vec, IntCounterVec};
use tokio::sync::broadcast::error::RecvError;

use super::region::zone_region;
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

/// A worker's alerts on the cluster: every change of an alert in its book goes to `alerts/{region}/{id}` (retained,
/// QoS 1) as the operator frame plus `public`, `worker`, `worker_url` and `region`. After every (re)connection the
/// whole book is sent again (a restart or a broker failover must not leave stale retained state; receivers drop what
/// they have already seen by id and version). Ended alerts stay retained for `retention_ms`, then are removed with
/// an empty retained message.
pub(super) async fn publish_alerts(app: Arc<App>, publisher: Publisher, worker: String, retention_ms: i64) {
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
                (app.alerts.book.lock().all().map(|a| a.id.clone()).collect(), "resend")
            }
            next = changes.recv() => match next {
                Ok(change) => (vec![change.id.clone()], "change"),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "alert changes outran the cluster publisher; sending the whole book");
                    (app.alerts.book.lock().all().map(|a| a.id.clone()).collect(), "resend")
                }
                Err(RecvError::Closed) => return,
            },
            _ = expiry.tick() => {
                let cutoff = now_ms() - retention_ms;
                let expired: Vec<(String, String)> = app
                    .alerts
                    .book
                    .lock()
                    .all()
                    .filter(|a| !a.state.is_active() && a.issued_ms < cutoff && !removed.contains(&a.id))
                    .map(|a| (a.id.clone(), alert_topic(&app, a)))
                    .collect();
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
            // The book's current version: a change seen late is sent as what it has become since.
            let message = {
                let book = app.alerts.book.lock();
                match book.get(&id) {
                    // Alerts from partner agencies share the channel but are not ours to publish.
                    None => continue,
                    Some(a) if !a.state.is_active() && a.issued_ms < cutoff => continue,
                    Some(a) => (alert_topic(&app, a), alert_payload(&app, a, &worker)),
                }
            };
            match publisher.publish(message.0, message.1, true).await {
                Ok(()) => ALERTS_PUBLISHED.with_label_values(&[kind]).inc(),
                Err(e) => tracing::error!(error = %e, id, "could not publish the alert to the cluster"),
            }
        }
    }
}

fn alert_topic(app: &App, alert: &Alert) -> String {
    format!("alerts/{}/{}", zone_region(app, &alert.area_id).unwrap_or("unassigned"), alert.id)
}

fn alert_payload(app: &App, alert: &Alert, worker: &str) -> Bytes {
    let mut frame = serde_json::to_value(app.alert_message(alert)).unwrap_or_default();
    if let Some(map) = frame.as_object_mut() {
        map.insert("public".into(), alert.is_public().into());
        map.insert("worker".into(), worker.into());
        map.insert("worker_url".into(), app.web.public_url.clone().into());
        map.insert("region".into(), zone_region(app, &alert.area_id).unwrap_or("unassigned").into());
    }
    Bytes::from(frame.to_string())
}
