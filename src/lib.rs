//! The `disaster-cloud` server: wiring of the pipeline crates and the HTTP edge. `main.rs` is only the command line.
//!
//! Layout:
//! - [`config`]: the TOML configuration (file, key and reason in every error) and the embedded defaults.
//! - [`server`]: start-up and wiring — geo index, ingest, broker, rules, alert book; the shared [`server::App`].
//! - [`web`]: the HTTP edge — operator and citizen websockets, the operator API, feeds, `/metrics`, the web pages.
//! - [`reports`]: citizen reports — validation, rate limits, clustering, flags, the photo store (pure logic).
//! - [`external`]: alerts from partner agencies (inbound CAP) onto the operator and citizen channels.
//! - [`scale_out`]: scale-out on an external MQTT cluster — worker, writer and fan-out roles, regions, alerts on the
//!   broker (`docs/SCALING.md`).
//! - [`metrics`]: process-level Prometheus metrics and the `/metrics` encoder.
//! - [`rules_admin`]: the running rule set — reload (API, SIGHUP) keeping windows, and the catch-up from the readings
//!   store after a restart.

pub mod config;
pub mod external;
pub mod metrics;
pub mod reports;
pub mod rules_admin;
pub mod scale_out;
pub mod server;
pub mod web;
