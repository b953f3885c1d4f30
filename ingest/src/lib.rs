//! `ingest`: everything between a field device and a validated [`Reading`].
//!
//! Layout:
//! - [`reading`]: the domain types that leave this crate — [`Reading`], [`Metric`] and its vocabulary (unit, range).
//! - [`topic`]: the MQTT topic schema (`sensors/{device_id}/readings|status`, tenant-prefixed on TLS listeners).
//! - [`payload`]: decoders for our native JSON and SenML JSON (RFC 8428), single or batched, element by element so
//!   that one bad element never sinks its neighbours.
//! - [`validate`]: plausibility checks of each decoded reading against the metric vocabulary and the sensor registry.
//! - [`registry`]: the sensor registry (id, kind, metrics, location, interval, agency) loaded from `config/sensors.toml`.
//! - [`devices`]: device credentials (argon2-hashed passwords) for the plain listeners.
//! - [`pipeline`]: [`Ingest`], which turns raw MQTT publishes into readings, counts every rejection by reason and keeps
//!   rejected payloads in a bounded dead-letter store.
//! - [`broker`]: the embedded rumqttd router and listeners, and the local link that feeds [`pipeline`].
//! - [`metrics`]: the Prometheus counters of this crate.
//! - [`error`]: typed errors; [`RejectReason`] is the small enum on the hot path.

pub mod broker;
pub mod devices;
pub mod error;
pub mod metrics;
pub mod payload;
pub mod pipeline;
pub mod reading;
pub mod registry;
pub mod topic;
pub mod validate;

pub use error::{IngestError, RejectReason};
pub use pipeline::{DeadLetter, Ingest, IngestConfig, RawMessage};
pub use reading::{Metric, Reading};
pub use registry::{Sensor, SensorKind, SensorRegistry};
