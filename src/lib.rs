//! The `disaster-cloud` server: wiring of the pipeline crates and the HTTP edge. `main.rs` is only the command line.
//!
//! Layout:
//! - [`config`]: the TOML configuration (file, key and reason in every error) and the embedded defaults.
//! - [`deployment`]: what `serve` refuses before it starts (secrets in files, the demo's published values,
//!   template placeholders, delivery to itself unless `[deployment] drill = true`).
//! - [`server`]: start-up and wiring only — builds the parts from the config, spawns the tasks, returns the handles.
//! - [`app`]: the shared state, [`app::App`], grouped by feature (alerts, readings, live map, channels, partners, web),
//!   and [`app::App::publish`], the one way an alert change leaves the book.
//! - [`hot_path`]: readings → store/sink → rules → alert book → broadcast ([`hot_path::HotPath`]), and the
//!   time-driven housekeeping of the same path.
//! - [`audience`]: what the sockets receive — an alert change rendered once per audience, citizens' frames and
//!   languages, the operators' map frames.
//! - [`web`]: the HTTP edge — operator and citizen websockets, the API by resource, feeds, `/metrics`, the pages.
//! - [`reports`]: citizen reports — validation, rate limits, clustering, flags, the photo store (pure logic).
//! - [`external`]: alerts from partner agencies (inbound CAP) onto the operator and citizen channels.
//! - [`traffic_baseline`]: each vehicle detector's normal speed per hour of the week, learned from the readings
//!   store hourly and handed to the rules (without it nothing is ever "slowed").
//! - [`vd_feed`]: agency vehicle-detector feeds (`inbound::vd`) onto the hot path, as our own detectors' readings.
//! - [`scale_out`]: roles on an external MQTT cluster — worker, writer and fan-out, regions, the fan-out node's book
//!   of the workers' alerts (`docs/SCALING.md`).
//! - [`metrics`]: process-level Prometheus metrics and the `/metrics` encoder.
//! - [`rules_admin`]: the running rule set — reload (API, SIGHUP) keeping windows, and the catch-up from the readings
//!   store after a restart.
//! - [`clock`]: the wall clock (`now_ms`), for the edges; rules run on event time.

pub mod app;
pub mod audience;
pub mod clock;
pub mod config;
pub mod deployment;
pub mod external;
pub mod hot_path;
pub mod metrics;
pub mod reports;
pub mod rules_admin;
pub mod scale_out;
pub mod server;
pub mod traffic_baseline;
pub mod vd_feed;
pub mod web;
