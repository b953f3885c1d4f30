//! `store`: where validated readings go after the rules have seen them.
//!
//! Two destinations, both fed without ever blocking ingest's hot thread (each has a bounded queue; past it readings
//! are dropped and counted, never waited for):
//! - the **embedded store** (always on): SQLite in WAL mode at `<data_dir>/readings.sqlite`, a retention window
//!   (7 days by default), and the history queries behind `GET /api/v1/sensors/{id}/readings`;
//! - the **InfluxDB v2 sink** (when configured): line protocol over HTTP, batched, with a timeout on every request,
//!   retries with exponential backoff and an on-disk spool that outlives outages and restarts.
//!
//! # Layout
//! - [`config`]: [`StoreConfig`] and [`InfluxConfig`], the `[store]` / `[influx]` sections of the binary's config.
//! - [`embedded`]: [`ReadingStore`] — `mod.rs` the handle (append, flush, history, retention), `writer.rs` the writer
//!   thread (batched transactions, series-id cache, retention), `query.rs` history and downsampling ([`History`],
//!   [`Point`], [`Bucket`]), `schema.rs` the SQLite file.
//! - [`influx`]: [`InfluxSink`] — `mod.rs` the handle (send, flush, stats), `deliver.rs` the sink's task (batching,
//!   requests, timeouts, backoff, direct vs backlog mode), `spool.rs` the on-disk spool (segments, cursor, cap),
//!   `line.rs` line protocol (measurement per sensor kind; tags agency, h3, kind, sensor_id).
//! - [`metrics`]: the Prometheus metrics (`dc_store_*`, `dc_store_influx_*`).
//! - [`error`]: the error type, [`StoreError`].

pub mod config;
pub mod embedded;
pub mod error;
pub mod influx;
pub mod metrics;

pub use config::{InfluxConfig, SpoolFullPolicy, StoreConfig};
pub use embedded::{Bucket, History, Point, ReadingStore, Samples, StoreStats};
pub use error::StoreError;
pub use influx::{InfluxSink, SinkStats};
