//! `alerting`: the transform from validated readings to alerts — rules, the rule engine, the alert book and its
//! journal — and the alert's websocket form. Pure but for the data dir the book and the engine snapshot are written
//! to; the encoders (`encoders`), the sinks (`dissemination`) and the partner agencies' source (`inbound`) are crates
//! of their own that build on this one.
//!
//! Layout:
//! - [`types`]: the boundary types that cross modules — `Severity`, `Urgency`, `Certainty`, `Mode`, `Publish`,
//!   `Finding`, `Trigger`, `LevelInfo`, `ExternalAlert`, `ExternalFilter`, `AlertingError`. It imports no other
//!   module, and every module imports only modules that come before it in the order `types`, `journal`, `rules`,
//!   `alert`, `publication`, `engine`, `message`: no import cycles.
//! - [`rules`]: rule declarations from `config/rules.toml` (eight kinds: threshold, accumulation, rate, trip,
//!   correlation, composite, geofence, deadman), validated on load with errors naming the rule and the field.
//! - [`engine`]: the rule engine — event-time windows, rates and levels per sensor, zone-wide rules, `tick`,
//!   forecasts and partner agencies' warnings, producing [`Finding`]s; `engine/` holds its plan, window structures,
//!   state and snapshots (and saving and loading them in the data dir).
//! - [`alert`]: alerts and their lifecycle; [`alert::AlertBook`] keeps exactly one alert per hazard (rule × area ×
//!   mode), with operator commands, the approval gate and public-release flag. Two clocks, never read here: findings
//!   carry event time (`observed_ms`), the caller passes issue time (`issued_ms`, CAP `sent`); evidence older than
//!   the book's `stale_after` behind issue time changes alerts for operators only ([`alert::StaleEvidence`]).
//! - [`publication`]: what the public receives — one [`publication::PublicWarning`] per hazard (event type) and
//!   area at the highest level of its public alerts, listing what contributed; value-only changes coalesced to one
//!   per `[alerting.updates]` interval, flapping warnings held until they settle ([`publication::UpdatePolicy`]).
//! - [`journal`]: the data dir's files — the append-only alert journal, checkpoints, atomically replaced JSON files.
//! - [`message`]: the websocket/JSON form of an alert (`INTERFACE.md`).
//! - `tests/`: scenario replays, restarts and reloads, properties of the engine and the book together, and the
//!   shipped rules' levels against the shipped CAP templates.
//! - `benches/rules.rs`: criterion benchmark of rule evaluation (`BENCHMARKS.md`).

pub mod alert;
pub mod engine;
pub mod journal;
pub mod message;
pub mod publication;
pub mod rules;
pub mod types;

#[cfg(test)]
mod tests;

pub use alert::{Alert, AlertBook, AlertRecord, AlertState, BookError, Change, Command, PublicRelease, Restored};
pub use engine::{EngineSnapshot, ForecastError, RuleEngine, ZoneRef};
pub use publication::{PublicWarning, Publication, UpdatePolicy};
pub use rules::RuleSet;
pub use types::{AlertingError, Finding, Mode};
