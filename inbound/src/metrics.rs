//! Prometheus metrics of inbound CAP, in the process-wide default registry. Label values for every configured
//! source are registered at start, so `/metrics` shows zeros before the first message (a zero is information).

use std::sync::LazyLock;

use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, register_int_gauge_vec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec,
};

use super::error::{PushError, Rejection};
use super::external::Ignored;

pub struct InboundMetrics {
    /// Messages that changed the set of external alerts, by `source` and `change` (raised, updated, cancelled).
    pub accepted: IntCounterVec,
    /// Valid messages that changed nothing, by `source` and `reason` (duplicate, expired, …).
    pub ignored: IntCounterVec,
    /// Messages and pushes refused, by `source` and `reason` (`invalid_xml`, `bad_signature`, …). Pushes that name
    /// no known source are counted under source `unknown`.
    pub rejected: IntCounterVec,
    /// Active external alerts that reached their `expires`, by `source`.
    pub expired: IntCounterVec,
    /// Feed polls, by `source` and `result` (`ok`, `not_modified`, `error`).
    pub polls: IntCounterVec,
    /// Consecutive failed polls of a feed (0 when healthy): what an operator alarms on.
    pub feed_failures: IntGaugeVec,
    /// External alerts active now.
    pub active: IntGauge,
    /// Events dropped because the receiver of the event channel fell behind by `event_buffer`.
    pub events_dropped: IntCounter,
    /// Times the external alerts could not be saved to the data dir (they are still held in memory).
    pub save_errors: IntCounter,
}

pub static METRICS: LazyLock<InboundMetrics> = LazyLock::new(|| InboundMetrics {
    // Registration fails only on a duplicate name, a programming error that any test run catches.
    accepted: register_int_counter_vec!(
        "dc_inbound_accepted_total",
        "Inbound CAP messages that raised, updated or cancelled an external alert",
        &["source", "change"]
    )
    .expect("metric registers"),
    ignored: register_int_counter_vec!(
        "dc_inbound_ignored_total",
        "Valid inbound CAP messages that changed nothing, by reason",
        &["source", "reason"]
    )
    .expect("metric registers"),
    rejected: register_int_counter_vec!(
        "dc_inbound_rejected_total",
        "Inbound CAP messages and pushes refused, by reason",
        &["source", "reason"]
    )
    .expect("metric registers"),
    expired: register_int_counter_vec!(
        "dc_inbound_expired_total",
        "External alerts that reached their expires time",
        &["source"]
    )
    .expect("metric registers"),
    polls: register_int_counter_vec!("dc_inbound_polls_total", "Feed polls by result", &["source", "result"])
        .expect("metric registers"),
    feed_failures: register_int_gauge_vec!(
        "dc_inbound_feed_consecutive_failures",
        "Consecutive failed polls of a feed (0 when healthy)",
        &["source"]
    )
    .expect("metric registers"),
    active: register_int_gauge!("dc_inbound_active_alerts", "External alerts active now").expect("metric registers"),
    events_dropped: register_int_counter!(
        "dc_inbound_events_dropped_total",
        "External alert events dropped because their receiver lagged"
    )
    .expect("metric registers"),
    save_errors: register_int_counter!(
        "dc_inbound_save_errors_total",
        "Times the external alerts could not be saved to the data dir"
    )
    .expect("metric registers"),
});

/// Shows every label combination of `source` as zero.
pub(crate) fn preregister(source: &str, is_feed: bool) {
    let m = &*METRICS;
    for change in ["raised", "updated", "cancelled"] {
        m.accepted.with_label_values(&[source, change]);
    }
    for why in Ignored::ALL {
        m.ignored.with_label_values(&[source, why.label()]);
    }
    for reason in Rejection::LABELS {
        m.rejected.with_label_values(&[source, reason]);
    }
    if is_feed {
        for reason in super::poll::PollError::LABELS {
            m.rejected.with_label_values(&[source, reason]);
        }
        for result in ["ok", "not_modified", "error"] {
            m.polls.with_label_values(&[source, result]);
        }
        m.feed_failures.with_label_values(&[source]);
    } else {
        for reason in PushError::AUTH_LABELS {
            m.rejected.with_label_values(&[source, reason]);
        }
    }
    m.expired.with_label_values(&[source]);
}
