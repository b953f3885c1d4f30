//! Typed errors of the ingest crate.
//!
//! [`RejectReason`] is deliberately a flat, copyable enum: it is produced on the hot path for every bad reading, is
//! matched to pick a Prometheus label, and its `as_label` string is part of the public metric contract.

use std::path::PathBuf;

/// Why one reading (or a whole payload) was refused. The label is the `reason` on
/// `dc_ingest_readings_rejected_total`, so renaming a variant's label breaks dashboards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RejectReason {
    #[error("payload is larger than the configured limit")]
    Oversized,
    #[error("payload is not valid UTF-8")]
    InvalidUtf8,
    #[error("payload is not well-formed JSON")]
    MalformedJson,
    #[error("payload JSON has the wrong shape or types")]
    WrongShape,
    #[error("batch holds more reading sets than allowed")]
    BatchTooLarge,
    #[error("payload holds no readings")]
    Empty,
    #[error("topic does not follow sensors/{{device_id}}/readings")]
    BadTopic,
    #[error("device is not in the sensor registry")]
    UnknownDevice,
    #[error("device has been retired")]
    RetiredDevice,
    #[error("metric name is not in the vocabulary")]
    UnknownMetric,
    #[error("metric is not one this sensor kind measures")]
    MetricNotForKind,
    #[error("value is not a finite number")]
    NotFinite,
    #[error("value is outside the physically plausible range")]
    OutOfRange,
    #[error("value has the wrong type for the metric")]
    WrongType,
    #[error("unit does not match the metric's unit")]
    UnitMismatch,
    #[error("timestamp is missing or unreadable")]
    BadTimestamp,
    #[error("timestamp is too far in the future")]
    FromFuture,
    #[error("timestamp is too far in the past")]
    TooOld,
    #[error("position is missing, partial or out of range")]
    BadPosition,
}

impl RejectReason {
    /// Every reason, so that metrics can pre-register all label values (a zero is information too).
    pub const ALL: [RejectReason; 19] = [
        Self::Oversized,
        Self::InvalidUtf8,
        Self::MalformedJson,
        Self::WrongShape,
        Self::BatchTooLarge,
        Self::Empty,
        Self::BadTopic,
        Self::UnknownDevice,
        Self::RetiredDevice,
        Self::UnknownMetric,
        Self::MetricNotForKind,
        Self::NotFinite,
        Self::OutOfRange,
        Self::WrongType,
        Self::UnitMismatch,
        Self::BadTimestamp,
        Self::FromFuture,
        Self::TooOld,
        Self::BadPosition,
    ];

    pub fn as_label(self) -> &'static str {
        match self {
            Self::Oversized => "oversized",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::MalformedJson => "malformed_json",
            Self::WrongShape => "wrong_shape",
            Self::BatchTooLarge => "batch_too_large",
            Self::Empty => "empty",
            Self::BadTopic => "bad_topic",
            Self::UnknownDevice => "unknown_device",
            Self::RetiredDevice => "retired_device",
            Self::UnknownMetric => "unknown_metric",
            Self::MetricNotForKind => "metric_not_for_kind",
            Self::NotFinite => "not_finite",
            Self::OutOfRange => "out_of_range",
            Self::WrongType => "wrong_type",
            Self::UnitMismatch => "unit_mismatch",
            Self::BadTimestamp => "bad_timestamp",
            Self::FromFuture => "from_future",
            Self::TooOld => "too_old",
            Self::BadPosition => "bad_position",
        }
    }
}

/// Errors of setting up ingest (config files, the broker). Reading-level problems are [`RejectReason`]s instead.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{file}: {message}")]
    Config { file: PathBuf, message: String },
    #[error("{file}: sensor `{sensor}`: {message}")]
    Sensor { file: PathBuf, sensor: String, message: String },
    #[error("{file}: device `{device}`: {message}")]
    Device { file: PathBuf, device: String, message: String },
    #[error("broker: {0}")]
    Broker(String),
    #[error("password hashing: {0}")]
    Hash(String),
    #[error("io on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The data dir's file layer (`durable`): names the file and the operation.
    #[error(transparent)]
    Durable(#[from] durable::Error),
    #[error("no device `{0}` in the device store")]
    NoSuchDevice(String),
    #[error("device id `{0}` is not 1-32 ASCII letters or digits")]
    InvalidDeviceId(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("certificate: {0}")]
    Certificate(String),
}
