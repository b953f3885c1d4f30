//! `alerting`: from validated readings to alerts, and from alerts to the channels that carry them.
//!
//! Layout:
//! - [`rules`]: rule declarations from `config/rules.toml` (eight kinds: threshold, accumulation, rate, trip,
//!   correlation, composite, geofence, deadman), validated on load with errors naming the rule and the field.
//! - [`engine`]: the rule engine — event-time windows, rates and levels per sensor, zone-wide rules, `tick` and
//!   forecasts, producing [`alert::Finding`]s; `engine/` holds its plan, window structures, state and snapshots.
//! - [`alert`]: alerts and their lifecycle; [`alert::AlertBook`] keeps exactly one alert per hazard (rule × area ×
//!   mode), with operator commands, the approval gate and public-release flag.
//! - [`journal`]: the data dir — the append-only alert journal, checkpoints and engine snapshots.
//! - [`message`]: the websocket/JSON form of an alert (`INTERFACE.md`).
//! - [`cap`]: CAP 1.2 messages, templates and the Atom feed.
//! - [`cell_broadcast`]: Taiwan PWS cell broadcast in 3GPP formats (CBS pages, SBc-AP PDUs).

pub mod alert;
pub mod cap;
pub mod cell_broadcast;
pub mod dissemination;
pub mod engine;
pub mod inbound;
pub mod journal;
pub mod message;
pub mod rules;

#[cfg(test)]
mod tests;

pub use alert::{Alert, AlertBook, AlertState, BookError, Change, Command, Finding, Mode, PublicRelease, Restored};
pub use engine::{EngineSnapshot, ForecastError, RuleEngine, ZoneRef};
pub use rules::RuleSet;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    #[error("{file}: {message}")]
    Config { file: PathBuf, message: String },
    #[error("{file}: rule `{rule}`: {message}")]
    Rule { file: PathBuf, rule: String, message: String },
}
