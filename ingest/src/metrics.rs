//! Prometheus metrics of the ingest stage, registered once in the process-wide default registry. Every label value is
//! pre-registered, so `/metrics` shows zeros before traffic arrives (a zero is information too).

use std::sync::LazyLock;

use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, IntCounter, IntCounterVec, IntGauge,
};

use crate::front_door::Refusal;
use crate::RejectReason;

pub struct IngestMetrics {
    /// Publishes that reached the pipeline (allowed by the front door), including status messages and wills.
    pub payloads: IntCounter,
    /// Payload bytes of those publishes.
    pub bytes: IntCounter,
    pub accepted: IntCounter,
    pub rejected: IntCounterVec,
    /// Valid readings kept from the rules because their device reports far faster than its interval, by reason.
    pub throttled: IntCounterVec,
    pub dead_letters: IntGauge,
    pub status_messages: IntCounter,
    /// Refused connections by [`Refusal`] label (the name says logins; it counts every refused connection).
    pub logins_refused: IntCounterVec,
    pub logins_accepted: IntCounter,
    /// Event-time lag of the newest accepted reading behind our clock, in milliseconds.
    pub lag_ms: IntGauge,
    /// Open MQTT sessions (a device with two client ids counts twice).
    pub connected_devices: IntGauge,
    /// Publishes, subscriptions and wills a device was not allowed, by `action`.
    pub forbidden: IntCounterVec,
    /// Bytes read from / written to device sockets (MQTT framing and TLS records included).
    pub network_in: IntCounter,
    pub network_out: IntCounter,
    /// Batches waiting in the queue between the front door and the pipeline (sampled each second).
    pub queue_batches: IntGauge,
    /// Sessions ended, by why (`disconnect`, `closed`, `keep_alive`, `taken_over`, `too_many_sessions`, `revoked`, `malformed`, …).
    pub disconnects: IntCounterVec,
    /// Last wills handed to the pipeline.
    pub wills: IntCounter,
}

pub static METRICS: LazyLock<IngestMetrics> = LazyLock::new(|| {
    // Registration fails only on a duplicate name, which is a programming error caught by any test run.
    let m = IngestMetrics {
        payloads: register_int_counter!("dc_ingest_payloads_total", "MQTT publishes received on sensor topics")
            .expect("metric registers"),
        bytes: register_int_counter!("dc_ingest_bytes_total", "Payload bytes received on sensor topics")
            .expect("metric registers"),
        accepted: register_int_counter!("dc_ingest_readings_accepted_total", "Readings that passed validation")
            .expect("metric registers"),
        rejected: register_int_counter_vec!(
            "dc_ingest_readings_rejected_total",
            "Readings or payloads refused, by reason",
            &["reason"]
        )
        .expect("metric registers"),
        throttled: register_int_counter_vec!(
            "dc_ingest_readings_throttled_total",
            "Valid readings stored but kept from the rules: the device reports far faster than its registered interval",
            &["reason"]
        )
        .expect("metric registers"),
        dead_letters: register_int_gauge!("dc_ingest_dead_letters", "Refused payloads held for operators")
            .expect("metric registers"),
        status_messages: register_int_counter!("dc_ingest_status_messages_total", "Status and last-will messages")
            .expect("metric registers"),
        logins_refused: register_int_counter_vec!(
            "dc_ingest_connections_refused_total",
            "MQTT connections refused, by reason",
            &["reason"]
        )
        .expect("metric registers"),
        logins_accepted: register_int_counter!("dc_ingest_connections_accepted_total", "MQTT logins accepted")
            .expect("metric registers"),
        lag_ms: register_int_gauge!("dc_ingest_lag_ms", "Event-time lag of the latest accepted reading (ms)")
            .expect("metric registers"),
        connected_devices: register_int_gauge!("dc_ingest_connected_devices", "Open MQTT device sessions")
            .expect("metric registers"),
        forbidden: register_int_counter_vec!(
            "dc_ingest_forbidden_total",
            "Publishes, subscriptions and last wills outside the device's own topics, by action",
            &["action"]
        )
        .expect("metric registers"),
        network_in: register_int_counter!("dc_ingest_network_in_bytes_total", "Bytes read from device sockets")
            .expect("metric registers"),
        network_out: register_int_counter!("dc_ingest_network_out_bytes_total", "Bytes written to device sockets")
            .expect("metric registers"),
        queue_batches: register_int_gauge!(
            "dc_ingest_queue_batches",
            "Batches of publishes waiting between the MQTT front door and the pipeline"
        )
        .expect("metric registers"),
        disconnects: register_int_counter_vec!("dc_ingest_disconnects_total", "MQTT sessions ended, by why", &["why"])
            .expect("metric registers"),
        wills: register_int_counter!("dc_ingest_wills_total", "Last wills delivered to the pipeline")
            .expect("metric registers"),
    };
    for reason in RejectReason::ALL {
        m.rejected.with_label_values(&[reason.as_label()]);
    }
    for reason in crate::throttle::ThrottleReason::ALL {
        m.throttled.with_label_values(&[reason.as_label()]);
    }
    for r in Refusal::ALL {
        m.logins_refused.with_label_values(&[r.as_label()]);
    }
    for action in ["publish", "subscribe", "will"] {
        m.forbidden.with_label_values(&[action]);
    }
    for why in [
        "disconnect",
        "closed",
        "io_error",
        "keep_alive",
        "taken_over",
        "too_many_sessions",
        "revoked",
        "malformed",
        "protocol",
        "too_large",
        "shutdown",
        "not_durable",
    ] {
        m.disconnects.with_label_values(&[why]);
    }
    m
});
