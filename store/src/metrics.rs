//! Prometheus metrics of the store, registered once in the process-wide default registry (served on `/metrics`).
//!
//! Each store or sink also keeps its own counters ([`crate::SinkStats`], [`crate::StoreStats`]) because a test
//! process may run several at once; these globals are the sum over them, which in the binary is the one instance.

use std::sync::LazyLock;

use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, IntCounter, IntCounterVec, IntGauge,
};

pub struct StoreMetrics {
    /// Readings committed to the embedded store.
    pub written: IntCounter,
    /// Readings `append` refused because the writer's queue was full (the disk could not keep up).
    pub dropped: IntCounter,
    /// Readings waiting for the writer now.
    pub queued: IntGauge,
    /// Failed write transactions (their readings are lost to the embedded store, and logged).
    pub write_errors: IntCounter,
    /// Readings deleted by retention.
    pub retention_deleted: IntCounter,
    /// Vehicle detectors whose speed baseline the store keeps (`embedded/baseline.rs`).
    pub baseline_detectors: IntGauge,
    /// Speed readings or detectors the baseline did not take, by reason: `ahead` (stamped more than a day ahead of
    /// the clock), `too_old` (older than `baseline_weeks`), `too_many_detectors` (past `baseline_max_detectors`).
    pub baseline_refused: IntCounterVec,
    /// Baseline slots deleted by retention (older than `baseline_weeks`).
    pub baseline_deleted: IntCounter,
}

pub struct InfluxMetrics {
    /// Points the server acknowledged (204), directly or from the spool.
    pub written: IntCounter,
    /// Write requests that failed, by reason: `timeout`, `transport` (connect, reset) or `status` (non-2xx).
    pub failed: IntCounterVec,
    /// Requests sent again after a failure (spool replays after backoff).
    pub retried: IntCounter,
    /// Points written to the on-disk spool because the server was failing or behind.
    pub spooled: IntCounter,
    /// Points given up, by reason: `queue_full` (send() overflow), `spool_full` (cap reached), `rejected` (the server
    /// answered 4xx: retrying cannot help), `torn` (an incomplete line found in the spool after a crash).
    pub dropped: IntCounterVec,
    /// Bytes of line protocol in the spool that are not yet acknowledged.
    pub spool_bytes: IntGauge,
    /// Age of the oldest spooled segment, in seconds (0 when the spool is empty).
    pub spool_age_seconds: IntGauge,
    /// Readings waiting to be formatted now.
    pub queued: IntGauge,
}

pub static STORE: LazyLock<StoreMetrics> = LazyLock::new(|| {
    // Registration fails only on a duplicate name, which is a programming error caught by any test run.
    let m = StoreMetrics {
        written: register_int_counter!("dc_store_readings_written_total", "Readings committed to the embedded store")
            .expect("metric registers"),
        dropped: register_int_counter!(
            "dc_store_dropped_total",
            "Readings the embedded store dropped because its write queue was full"
        )
        .expect("metric registers"),
        queued: register_int_gauge!("dc_store_queue_readings", "Readings waiting for the embedded store's writer")
            .expect("metric registers"),
        write_errors: register_int_counter!("dc_store_write_errors_total", "Failed embedded-store write transactions")
            .expect("metric registers"),
        retention_deleted: register_int_counter!(
            "dc_store_retention_deleted_total",
            "Readings deleted from the embedded store by retention"
        )
        .expect("metric registers"),
        baseline_detectors: register_int_gauge!(
            "dc_store_baseline_detectors",
            "Vehicle detectors whose long-term speed baseline the embedded store keeps"
        )
        .expect("metric registers"),
        baseline_refused: register_int_counter_vec!(
            "dc_store_baseline_refused_total",
            "Speed readings or detectors the long-term speed baseline did not take, by reason",
            &["reason"]
        )
        .expect("metric registers"),
        baseline_deleted: register_int_counter!(
            "dc_store_baseline_deleted_total",
            "Speed baseline slots deleted by retention (older than baseline_weeks)"
        )
        .expect("metric registers"),
    };
    for reason in ["ahead", "too_old", "too_many_detectors"] {
        m.baseline_refused.with_label_values(&[reason]);
    }
    m
});

pub static INFLUX: LazyLock<InfluxMetrics> = LazyLock::new(|| {
    let m = InfluxMetrics {
        written: register_int_counter!("dc_store_influx_written_total", "Points acknowledged by InfluxDB")
            .expect("metric registers"),
        failed: register_int_counter_vec!(
            "dc_store_influx_failed_total",
            "InfluxDB write requests that failed, by reason",
            &["reason"]
        )
        .expect("metric registers"),
        retried: register_int_counter!(
            "dc_store_influx_retried_total",
            "InfluxDB write requests retried after backoff"
        )
        .expect("metric registers"),
        spooled: register_int_counter!("dc_store_influx_spooled_total", "Points written to the on-disk spool")
            .expect("metric registers"),
        dropped: register_int_counter_vec!(
            "dc_store_influx_dropped_total",
            "Points the InfluxDB sink gave up, by reason",
            &["reason"]
        )
        .expect("metric registers"),
        spool_bytes: register_int_gauge!("dc_store_influx_spool_bytes", "Unsent bytes in the InfluxDB spool")
            .expect("metric registers"),
        spool_age_seconds: register_int_gauge!(
            "dc_store_influx_spool_age_seconds",
            "Age of the oldest segment in the InfluxDB spool"
        )
        .expect("metric registers"),
        queued: register_int_gauge!("dc_store_influx_queue_readings", "Readings waiting for the InfluxDB sink")
            .expect("metric registers"),
    };
    // Every label exists from the start, so dashboards see zeros instead of missing series.
    for reason in ["timeout", "transport", "status"] {
        m.failed.with_label_values(&[reason]);
    }
    for reason in ["queue_full", "spool_full", "rejected", "torn"] {
        m.dropped.with_label_values(&[reason]);
    }
    m
});
