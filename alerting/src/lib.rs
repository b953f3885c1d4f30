//! `alerting`: from validated readings to alerts, and from alerts to the channels that carry them.
//!
//! Layout:
//! - [`rules`]: rule declarations from `config/rules.toml`, validated on load.
//! - [`engine`]: the rule engine — event-time windows and thresholds per sensor, producing [`alert::Finding`]s.
//! - [`alert`]: alerts and their lifecycle; [`alert::AlertBook`] keeps exactly one alert per hazard (rule × area).
//! - [`message`]: the websocket/JSON form of an alert (`INTERFACE.md`).
//! - [`cap`]: CAP 1.2 messages, templates and the Atom feed.
//! - [`cell_broadcast`]: Taiwan PWS cell broadcast in 3GPP formats (CBS pages, SBc-AP PDUs).

pub mod alert;
pub mod cap;
pub mod cell_broadcast;
pub mod engine;
pub mod message;
pub mod rules;

pub use alert::{Alert, AlertBook, AlertState, Finding, Mode};
pub use engine::{RuleEngine, ZoneRef};
pub use rules::RuleSet;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    #[error("{file}: {message}")]
    Config { file: PathBuf, message: String },
    #[error("{file}: rule `{rule}`: {message}")]
    Rule { file: PathBuf, rule: String, message: String },
}
