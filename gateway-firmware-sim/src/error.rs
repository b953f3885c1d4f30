//! The one error type of the simulator.
//!
//! Input errors (scenario, sensor and device files) carry the file they came from, the key that is wrong and why, because
//! the person reading them is editing a TOML file and needs to find the line. Run errors say which layer failed.

use thiserror::Error;

/// Everything that can stop a scenario run, a load run or a file check.
#[derive(Debug, Error)]
pub enum SimError {
    /// A file is not valid TOML, or a value has the wrong type, or a key is unknown (files deny unknown keys so that a typo
    /// is an error, not a silent default).
    #[error("{origin}: line {line}, column {column}: {message}")]
    Syntax {
        /// File name or other label the text came from.
        origin: String,
        line: usize,
        column: usize,
        /// The parser's own words, which name the offending key.
        message: String,
    },

    /// A file parses but says something impossible (a time past the end, an unknown metric, a device id with a dash).
    #[error("{origin}: {key}: {reason}")]
    Invalid {
        origin: String,
        /// Dotted path of the offending key, e.g. `track[2].points[1]`.
        key: String,
        reason: String,
    },

    /// Reading a file from disk failed (binary only; the library takes text).
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// Options given to a run make no sense (zero connections, a negative rate).
    #[error("option {option}: {reason}")]
    Option { option: &'static str, reason: String },

    /// The MQTT client could not be set up (not a connection failure: those are retried, counted and reported).
    #[error("mqtt: {0}")]
    Mqtt(String),
}

impl SimError {
    pub(crate) fn invalid(origin: &str, key: impl Into<String>, reason: impl Into<String>) -> Self {
        SimError::Invalid { origin: origin.to_string(), key: key.into(), reason: reason.into() }
    }

    /// Turn a TOML parser error into one that names the file and the line, because the parser only knows byte offsets.
    pub(crate) fn from_toml(origin: &str, text: &str, err: toml::de::Error) -> Self {
        let (line, column) = match err.span() {
            Some(span) => line_col(text, span.start),
            None => (0, 0),
        };
        SimError::Syntax { origin: origin.to_string(), line, column, message: err.message().trim().to_string() }
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, column)
}
