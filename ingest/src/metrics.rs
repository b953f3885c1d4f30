//! Prometheus metrics of the ingest stage, registered once in the process-wide default registry.

use std::sync::LazyLock;

use prometheus::{register_int_counter, register_int_counter_vec, register_int_gauge, IntCounter, IntCounterVec, IntGauge};

use crate::devices::LoginRefusal;
use crate::RejectReason;

pub struct IngestMetrics {
    pub payloads: IntCounter,
    pub bytes: IntCounter,
    pub accepted: IntCounter,
    pub rejected: IntCounterVec,
    pub dead_letters: IntGauge,
    pub status_messages: IntCounter,
    pub logins_refused: IntCounterVec,
    pub logins_accepted: IntCounter,
    /// Event-time lag of the newest accepted reading behind our clock, in milliseconds.
    pub lag_ms: IntGauge,
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
        dead_letters: register_int_gauge!("dc_ingest_dead_letters", "Refused payloads held for operators")
            .expect("metric registers"),
        status_messages: register_int_counter!("dc_ingest_status_messages_total", "Status and last-will messages")
            .expect("metric registers"),
        logins_refused: register_int_counter_vec!(
            "dc_ingest_connections_refused_total",
            "MQTT logins refused, by reason",
            &["reason"]
        )
        .expect("metric registers"),
        logins_accepted: register_int_counter!("dc_ingest_connections_accepted_total", "MQTT logins accepted")
            .expect("metric registers"),
        lag_ms: register_int_gauge!("dc_ingest_lag_ms", "Event-time lag of the latest accepted reading (ms)")
            .expect("metric registers"),
    };
    for reason in RejectReason::ALL {
        m.rejected.with_label_values(&[reason.as_label()]);
    }
    for r in [LoginRefusal::UnknownDevice, LoginRefusal::BadPassword, LoginRefusal::Revoked] {
        m.logins_refused.with_label_values(&[r.as_label()]);
    }
    m
});
