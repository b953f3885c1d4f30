//! `ingest`: everything between a field device and a validated [`Reading`].
//!
//! Layout:
//! - [`broker`]: [`broker::BrokerConfig`] and [`broker::start`] / [`broker::start_front_door`]: the MQTT listeners and
//!   the `ingest-link` thread that runs the pipeline callback.
//! - [`front_door`]: our own MQTT listeners (plain and TLS, MQTT 3.1.1 and 5) on rumqttd's codecs: one task per
//!   connection (TLS handshake + CONNECT under one deadline), logins answered with CONNACK codes, per-device topic
//!   rules ([`front_door::acl`]), sessions and commands to devices, last wills. Why: `ingest/FRONT_DOOR.md`.
//! - [`identity`]: the deployment CA (rcgen), device certificates, `provision` / `revoke`, the data-dir layout.
//! - [`devices`]: the device store: argon2 password hashes, certificate fingerprints, revocation list; persisted as
//!   `<data dir>/devices.json`.
//! - [`reading`]: the domain types that leave this crate — [`Reading`], [`Metric`] and its vocabulary (unit, range).
//! - [`topic`]: the MQTT topic schema (`sensors/{device_id}/readings|status`, and the tenant-prefixed form).
//! - [`payload`]: decoders for our native JSON and SenML JSON (RFC 8428), single or batched, element by element so
//!   that one bad element never sinks its neighbours.
//! - [`validate`]: plausibility checks of each decoded reading against the metric vocabulary and the sensor registry.
//! - [`registry`]: the sensor registry (id, kind, metrics, location, interval, agency) loaded from `config/sensors.toml`,
//!   with operators' add / update / retire persisted to `<data dir>/sensors.json`.
//! - [`pipeline`]: [`Ingest`], which turns raw MQTT publishes into readings, counts every rejection by reason and keeps
//!   rejected payloads in a bounded dead-letter store.
//! - [`throttle`]: devices reporting far faster than their registered interval: token buckets on event time;
//!   their readings are stored but kept from the rules, flagged and counted.
//! - [`upstream`]: an external MQTT broker (cluster) as the source of readings instead of the front door: a
//!   consumer (rumqttc, QoS 1, acknowledged after the pipeline callback) and a publisher; region topics.
//! - [`metrics`]: the Prometheus counters and gauges of this crate.
//! - [`persist`]: atomic file writes and lock files for the data dir.
//! - [`error`]: typed errors; [`RejectReason`] is the small enum on the hot path.

pub mod broker;
pub mod devices;
pub mod error;
pub mod front_door;
pub mod identity;
pub mod metrics;
pub mod payload;
pub mod persist;
pub mod pipeline;
pub mod reading;
pub mod registry;
pub mod throttle;
pub mod topic;
pub mod upstream;
pub mod validate;

pub use error::{IngestError, RejectReason};
pub use pipeline::{DeadLetter, Ingest, IngestConfig, RawMessage};
pub use reading::{Metric, Reading};
pub use registry::{RegistryError, Sensor, SensorKind, SensorRegistry};
