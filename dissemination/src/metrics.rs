//! Prometheus metrics of dissemination, registered once in the process-wide default registry (like
//! `ingest::metrics`). Label values are pre-registered so `/metrics` shows zeros before the first alert.

use std::sync::LazyLock;

use prometheus::{
    register_histogram_vec, register_int_counter_vec, register_int_gauge, register_int_gauge_vec, HistogramVec,
    IntCounterVec, IntGauge, IntGaugeVec,
};

use super::channel::Channel;
use crate::view::ViewMode;
use encoders::cap::MsgType;

pub struct DisseminationMetrics {
    /// Delivery attempts by `channel` (`webhook`, `cbc`) and `result` (`delivered`, `retry`, `dead_letter`).
    pub deliveries: IntCounterVec,
    /// Deliveries waiting in outboxes, by channel (the head of each may be mid-retry).
    pub queue_depth: IntGaugeVec,
    /// Deliveries in the dead letters (replayable), by channel.
    pub dead_letters: IntGaugeVec,
    /// CAP messages made, by `status` and `msg_type`.
    pub cap_messages: IntCounterVec,
    /// Things that went wrong outside a delivery, by `kind` (`cap_build`, `journal`, `broadcast_encode`,
    /// `targeting`, `cap_archive`).
    pub errors: IntCounterVec,
    /// Seconds from queueing to a successful delivery, by channel (the "reaches subscribers within 1 s" figure).
    pub delivery_latency: HistogramVec,
    /// Attempts that hit the request timeout (a receiver that accepts and never answers), by channel. Each is
    /// also a `retry` or `dead_letter` in `deliveries`.
    pub timeouts: IntCounterVec,
    /// Journal lines a full disk refused, kept in memory until it takes them (see `journal.rs`).
    pub journal_backlog: IntGauge,
    /// CAP message bodies held in memory (the rest are in the CAP archive); bounded by configuration.
    pub messages_in_memory: IntGauge,
    /// Alerts whose history is held in memory (active, in the feed, or still needed by a delivery or broadcast).
    pub alerts_in_memory: IntGauge,
    /// Cell broadcasts planned, by kind and reason (`write_replace`/`level_rose`, `stop`/`ended`, …).
    pub cbc_broadcasts: IntCounterVec,
    /// Alert versions released while their broadcast was on the air that left the air as it was (calm updates).
    pub cbc_calm: prometheus::IntCounter,
    /// Broadcasts on the air (written and not seen stopped), by carrier: the on-air ledger.
    pub cbc_on_air: IntGaugeVec,
    /// Operators' rebroadcasts refused, by reason.
    pub cbc_rebroadcast_refused: IntCounterVec,
    /// Delivery-ledger decisions in cluster mode (`ledger.rs`), by `outcome`: `first` (attempt 1 anywhere), `retry`
    /// (the key was attempted before, here or on a node that died), `confirmed_earlier` (not sent: a receiver
    /// confirmed it before), `unavailable` (the ledger did not answer; the delivery waits), `confirm_failed`.
    pub ledger: IntCounterVec,
}

pub static METRICS: LazyLock<DisseminationMetrics> = LazyLock::new(|| {
    // Registration fails only on a duplicate name, a programming error any test run catches.
    let m = DisseminationMetrics {
        deliveries: register_int_counter_vec!(
            "dc_dissemination_deliveries_total",
            "Webhook and CBC delivery attempts, by channel and result",
            &["channel", "result"]
        )
        .expect("metric registers"),
        queue_depth: register_int_gauge_vec!(
            "dc_dissemination_queue_depth",
            "Deliveries waiting in outboxes, by channel",
            &["channel"]
        )
        .expect("metric registers"),
        dead_letters: register_int_gauge_vec!(
            "dc_dissemination_dead_letters",
            "Deliveries given up after the configured attempts (replayable), by channel",
            &["channel"]
        )
        .expect("metric registers"),
        cap_messages: register_int_counter_vec!(
            "dc_dissemination_cap_messages_total",
            "CAP messages made, by status and msgType",
            &["status", "msg_type"]
        )
        .expect("metric registers"),
        errors: register_int_counter_vec!(
            "dc_dissemination_errors_total",
            "Dissemination errors outside deliveries, by kind",
            &["kind"]
        )
        .expect("metric registers"),
        delivery_latency: register_histogram_vec!(
            "dc_dissemination_delivery_latency_seconds",
            "Seconds from queueing to successful delivery, by channel",
            &["channel"],
            vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0, 600.0]
        )
        .expect("metric registers"),
        timeouts: register_int_counter_vec!(
            "dc_dissemination_timeouts_total",
            "Delivery attempts that hit the request timeout, by channel",
            &["channel"]
        )
        .expect("metric registers"),
        journal_backlog: register_int_gauge!(
            "dc_dissemination_journal_backlog",
            "Dissemination journal lines waiting for the disk (it refused them)"
        )
        .expect("metric registers"),
        messages_in_memory: register_int_gauge!(
            "dc_dissemination_messages_in_memory",
            "CAP message bodies held in memory (the others are served from the CAP archive)"
        )
        .expect("metric registers"),
        alerts_in_memory: register_int_gauge!(
            "dc_dissemination_alerts_in_memory",
            "Alerts whose dissemination history is held in memory"
        )
        .expect("metric registers"),
        cbc_broadcasts: register_int_counter_vec!(
            "dc_cbc_broadcasts_total",
            "Cell broadcasts planned (one per serial, all carriers), by kind and reason",
            &["kind", "reason"]
        )
        .expect("metric registers"),
        cbc_calm: prometheus::register_int_counter!(
            "dc_cbc_calm_updates_total",
            "Alert versions that changed CAP and webhooks but not what is on the air (no rise)"
        )
        .expect("metric registers"),
        cbc_on_air: register_int_gauge_vec!(
            "dc_cbc_on_air",
            "Broadcasts on the air (written, not seen stopped), by carrier",
            &["carrier"]
        )
        .expect("metric registers"),
        cbc_rebroadcast_refused: register_int_counter_vec!(
            "dc_cbc_rebroadcast_refused_total",
            "Operators' rebroadcast requests refused, by reason",
            &["reason"]
        )
        .expect("metric registers"),
        ledger: register_int_counter_vec!(
            "dc_dissemination_ledger_total",
            "Delivery-ledger decisions before each attempt in cluster mode, by outcome",
            &["outcome"]
        )
        .expect("metric registers"),
    };
    for outcome in ["first", "retry", "confirmed_earlier", "unavailable", "confirm_failed"] {
        m.ledger.with_label_values(&[outcome]);
    }
    for (kind, reason) in [
        ("write_replace", "first"),
        ("write_replace", "level_rose"),
        ("write_replace", "class_rose"),
        ("write_replace", "severity_rose"),
        ("write_replace", "area_grew"),
        ("write_replace", "operator"),
        ("stop", "superseded"),
        ("stop", "ended"),
    ] {
        m.cbc_broadcasts.with_label_values(&[kind, reason]);
    }
    for reason in ["unknown_alert", "not_active", "no_class", "disabled", "too_soon"] {
        m.cbc_rebroadcast_refused.with_label_values(&[reason]);
    }
    for channel in Channel::ALL.map(Channel::label) {
        for result in ["delivered", "retry", "dead_letter"] {
            m.deliveries.with_label_values(&[channel, result]);
        }
        m.queue_depth.with_label_values(&[channel]);
        m.dead_letters.with_label_values(&[channel]);
        m.delivery_latency.with_label_values(&[channel]);
        m.timeouts.with_label_values(&[channel]);
    }
    // The CAP messages we make: one status per mode, Alert / Update / Cancel (never Ack or Error).
    for mode in [ViewMode::Actual, ViewMode::Exercise, ViewMode::Test] {
        for msg_type in [MsgType::Alert, MsgType::Update, MsgType::Cancel] {
            m.cap_messages.with_label_values(&[mode.status().as_str(), msg_type.as_str()]);
        }
    }
    for kind in ["cap_build", "journal", "broadcast_encode", "targeting", "cap_archive", "warning_area_coordinates"] {
        m.errors.with_label_values(&[kind]);
    }
    m
});
