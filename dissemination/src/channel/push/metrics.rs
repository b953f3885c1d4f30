//! The push channel's Prometheus metrics (process-wide default registry, labels registered up front).

use std::sync::LazyLock;

use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge_vec, IntCounter, IntCounterVec, IntGaugeVec,
};

use super::notice::Loudness;
use super::store::Outcome;
use super::subscription::Refusal;

pub struct PushMetrics {
    /// Subscribe requests refused, by `reason` ([`Refusal::reason`]).
    pub refused: IntCounterVec,
    /// Subscriptions held, by the VAPID `key` they were made under (`current`, `previous`, `unknown`).
    pub subscriptions: IntGaugeVec,
    /// Subscriptions added (`subscribed`) and removed, by `reason` (`citizen`, `gone`).
    pub changes: IntCounterVec,
    /// Alert messages dispatched to subscribers, by `loudness` (`notify`, `silent`).
    pub dispatches: IntCounterVec,
    /// Final outcome per subscription and dispatch, by `outcome`.
    pub sent: IntCounterVec,
    /// Attempts that will be tried again, by `reason` (`rate_limited`: 429, `server_error`: 5xx, `network`).
    pub retries: IntCounterVec,
    /// Errors on our side, by `kind` (`journal`, `encrypt`, `vapid`, `no_key`).
    pub errors: IntCounterVec,
    /// Payloads (per message and language) sent without their geofence because it did not fit one record: every
    /// phone they reach alarms, as without cell broadcast's IE 46.
    pub geofence_dropped: IntCounter,
}

pub static METRICS: LazyLock<PushMetrics> = LazyLock::new(|| {
    let m = PushMetrics {
        refused: register_int_counter_vec!(
            "dc_push_refused_total",
            "Web Push subscribe requests refused, by reason",
            &["reason"]
        )
        .expect("metric registers"),
        subscriptions: register_int_gauge_vec!(
            "dc_push_subscriptions",
            "Web Push subscriptions held, by the VAPID key they were made under",
            &["key"]
        )
        .expect("metric registers"),
        changes: register_int_counter_vec!(
            "dc_push_subscription_changes_total",
            "Web Push subscriptions added or removed, by reason",
            &["reason"]
        )
        .expect("metric registers"),
        dispatches: register_int_counter_vec!(
            "dc_push_dispatches_total",
            "Alert messages dispatched to Web Push subscribers, by loudness",
            &["loudness"]
        )
        .expect("metric registers"),
        sent: register_int_counter_vec!(
            "dc_push_sent_total",
            "Web Push sends, final outcome per subscription and message",
            &["outcome"]
        )
        .expect("metric registers"),
        retries: register_int_counter_vec!(
            "dc_push_retries_total",
            "Web Push attempts to be tried again, by reason",
            &["reason"]
        )
        .expect("metric registers"),
        errors: register_int_counter_vec!("dc_push_errors_total", "Web Push errors on our side, by kind", &["kind"])
            .expect("metric registers"),
        geofence_dropped: register_int_counter!(
            "dc_push_geofence_dropped_total",
            "Web Push payloads sent without the alert's geofence because it did not fit one record"
        )
        .expect("metric registers"),
    };
    for r in Refusal::REASONS {
        m.refused.with_label_values(&[r]);
    }
    for k in ["current", "previous", "unknown"] {
        m.subscriptions.with_label_values(&[k]);
    }
    for r in ["subscribed", "citizen", "gone"] {
        m.changes.with_label_values(&[r]);
    }
    for l in [Loudness::Notify, Loudness::Silent] {
        m.dispatches.with_label_values(&[loudness_label(l)]);
    }
    for o in Outcome::ALL {
        m.sent.with_label_values(&[o.label()]);
    }
    for r in ["rate_limited", "server_error", "network"] {
        m.retries.with_label_values(&[r]);
    }
    for k in ["journal", "encrypt", "vapid", "no_key"] {
        m.errors.with_label_values(&[k]);
    }
    m
});

pub fn loudness_label(l: Loudness) -> &'static str {
    match l {
        Loudness::Notify => "notify",
        Loudness::Silent => "silent",
    }
}
