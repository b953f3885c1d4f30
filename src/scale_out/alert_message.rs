//! Reading a message of the alerts stream (`DC_ALERTS`) for the dissemination node: the workers' Ed25519 envelope is
//! opened and checked by `backbone_alerts::open` (the one reader of the message format), and only alerts are kept.
//! The workers' public warnings on the stream are for fan-out nodes: the dissemination node rebuilds the warnings
//! from the alerts with the single process's publication, so that what it delivers is the same as on one process.

use alerting::AlertRecord;
use cluster::alerts::parse_subject;

use super::backbone_alerts::{self, ALERT};
use super::signing::TrustedKeys;

/// Why a message of the alerts stream was not used (logged and counted by the caller; the message is skipped).
#[derive(Debug, thiserror::Error)]
pub enum AlertMessageError {
    #[error("not an alerts-stream subject: {0}")]
    Subject(String),
    #[error("refused ({reason}): {0}", reason = .0.reason())]
    Refused(super::signing::Refusal),
    #[error("an alert message without its record")]
    NoRecord,
}

/// The alert record a message of the alerts stream carries; `None` for a public warning (not the node's input).
pub(crate) fn open_alert_message(
    trusted: &TrustedKeys,
    subject: &str,
    payload: &[u8],
) -> Result<Option<AlertRecord>, AlertMessageError> {
    let (region, _) = parse_subject(subject).ok_or_else(|| AlertMessageError::Subject(subject.into()))?;
    let opened = backbone_alerts::open(trusted, subject, region, payload).map_err(AlertMessageError::Refused)?;
    if opened.body.kind != ALERT {
        return Ok(None);
    }
    opened.body.record.map(Some).ok_or(AlertMessageError::NoRecord)
}
