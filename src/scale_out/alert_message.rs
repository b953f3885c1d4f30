//! Reading a message of the alerts stream (`DC_ALERTS`, written by `rule_worker.rs`'s `alert_body`): the one place
//! the readers that act on it (the dissemination node; later fan-out nodes) open one. When workers sign their
//! messages (the Ed25519 envelope of `signing.rs`), the envelope is opened and checked here, and nowhere else.

use alerting::AlertRecord;

/// Why a message of the alerts stream was not used (logged and counted by the caller; the message is skipped).
#[derive(Debug, thiserror::Error)]
pub enum AlertMessageError {
    #[error("not an alerts-stream message: {0}")]
    Unreadable(String),
}

/// The body as a worker publishes it; only what readers act on.
#[derive(serde::Deserialize)]
struct Body {
    record: AlertRecord,
}

/// The alert record a message of the alerts stream carries.
pub(crate) fn open_alert_message(payload: &[u8]) -> Result<AlertRecord, AlertMessageError> {
    serde_json::from_slice::<Body>(payload).map(|b| b.record).map_err(|e| AlertMessageError::Unreadable(e.to_string()))
}
