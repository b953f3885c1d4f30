//! gateway-firmware-sim: field gateways that behave like real firmware, for demos, end-to-end tests and benchmarks.
//!
//! The simulator is a device, not part of the server: it reads plain files (`config/sensors.toml`,
//! `config/devices.toml`, `config/scenarios/*.toml`) and speaks only MQTT 3.1.1 (topics and payloads of
//! `shared/INTERFACE.md`). It depends on no other crate of the workspace.
//!
//! # Layout
//! - `error.rs` — [`SimError`]: every input error names file, key and reason.
//! - `timefmt.rs` — durations as written in files (`90s`, `1h30m`, `1d`).
//! - `fleet.rs` — [`Fleet`], [`Device`]: the sensor registry joined with device passwords.
//! - `scenario.rs` — [`Scenario`]: the scenario file format and its validation.
//! - `plan.rs` — [`plan()`]: scenario + seed → the exact messages each device publishes, pure and deterministic.
//! - `outbox.rs` — [`Outbox`]: the bounded store-and-forward buffer (oldest dropped, counted).
//! - `backoff.rs` — [`Backoff`]: exponential reconnect delays with jitter.
//! - `link.rs` — one MQTT connection generation (rumqttc event loop in its own task, PUBACK matching).
//! - `courier.rs` — [`Courier`]: buffer + connection + backoff + QoS 1 resend + failover to further brokers; shared by
//!   scenario and load runs.
//! - `firmware.rs` — one device playing its script in compressed time (link drops, dying, heartbeats).
//! - `run.rs` — [`run_scenario`], [`RunOptions`], [`Summary`].
//! - `load.rs` — [`run_load`], [`LoadOptions`], [`LoadSummary`]: rate, size, batch, QoS, connections.
//! - `stats.rs` — [`LatencyStats`]: ack-latency percentiles.
//! - `progress.rs` — the indicatif progress bar of long runs.
//! - `bin/gateway-firmware-sim.rs` — the command line (thin: parses options, calls the above).
//!
//! Scenario time vs wall time: a scenario covers `span` of scenario time, replayed `compression` times faster. Payload
//! `ts` is scenario time by default (`start_ts_ms` + offset + the device's clock skew), so a 24 h typhoon replayed in
//! 60 s still carries 24 h of timestamps; with `RunOptions::wall_clock` (`--wall-clock`, and `disaster-cloud demo`)
//! it is the wall clock when the device measures ([`Stamp`]), as real devices stamp a storm they live through.
//! Network timings (backoff, keep-alive, drain) are wall time.
//!
//! # Use from another program
//! ```no_run
//! # async fn demo() -> Result<(), gateway_firmware_sim::SimError> {
//! use gateway_firmware_sim::{run_scenario, Fleet, RunOptions, Scenario};
//! let fleet = Fleet::from_files(
//!     &std::fs::read_to_string("config/sensors.toml").unwrap(),
//!     &std::fs::read_to_string("config/devices.toml").unwrap(),
//! )?;
//! let scenario = Scenario::from_toml(&std::fs::read_to_string("config/scenarios/typhoon.toml").unwrap(), "typhoon.toml")?;
//! scenario.check_fleet(&fleet)?; // run_scenario checks too; this fails early, before any connection
//! // Seed of the scenario, `ts` starting one span ago (no reading stamped in the future), the scenario's compression.
//! let opts = RunOptions { port: 1883, quiet: true, ..RunOptions::for_scenario(&scenario) };
//! let summary = run_scenario(&fleet, &scenario, &opts).await?; // about scenario.duration() of wall time
//! assert!(summary.is_complete(), "{summary}");
//! # Ok(()) }
//! ```

pub mod backoff;
pub mod courier;
pub mod error;
pub mod firmware;
pub mod fleet;
pub mod link;
pub mod load;
pub mod outbox;
pub mod plan;
mod progress;
pub mod run;
pub mod scenario;
pub mod stats;
pub mod timefmt;

pub use backoff::Backoff;
pub use courier::Courier;
pub use error::SimError;
pub use fleet::{Device, Fleet};
pub use load::{run_load, run_load_live, LoadOptions, LoadSummary};
pub use outbox::Outbox;
pub use plan::{plan, plan_stamped, MessageKind, Plan, PlannedMessage, Stamp};
pub use run::{now_ms, run_scenario, RunOptions, Summary};
pub use scenario::Scenario;
pub use stats::LatencyStats;
