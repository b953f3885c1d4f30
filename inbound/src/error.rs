//! Errors of the inbound side, one enum per layer, each with a stable snake_case `reason()` that is both the
//! metrics label and the word a pushing agency reads in its 4xx response.

use std::path::PathBuf;

use encoders::cap::ParseError;

/// Starting the inbound side failed (configuration or secrets); nothing was spawned.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// The configuration file does not read or does not check.
    #[error("{file}: {message}")]
    Config { file: PathBuf, message: String },
    /// A secret named by environment variable is missing or empty.
    #[error("inbound source `{source_name}`: environment variable {var} is not set or empty")]
    Secret { source_name: String, var: String },
    /// A configuration built in code (not read from a file) that does not check.
    #[error("inbound configuration: {0}")]
    Invalid(String),
    /// The HTTP client could not be built (TLS roots).
    #[error("inbound HTTP client: {0}")]
    Client(String),
    /// The saved external alerts in the data dir could not be read.
    #[error("inbound state: {0}")]
    State(String),
}

/// Why a CAP message was not taken, whether pushed or polled. Each leaves the state untouched.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// Larger than the source's `max_bytes`.
    #[error("message is {size} bytes, over this source's limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    /// Not well-formed XML (or not UTF-8, a DOCTYPE, nesting too deep).
    #[error("invalid XML: {0}")]
    InvalidXml(ParseError),
    /// Well-formed XML that is not a valid CAP 1.2 alert (schema structure or a rule the XSD cannot express).
    #[error("invalid CAP 1.2: {0}")]
    InvalidCap(ParseError),
    /// Taiwan_Geocode_103 (or other) geocodes that match none of our zones, and no polygon or circle to fall back on.
    #[error("unknown geocodes {codes:?} and no polygon or circle: the message cannot be placed")]
    UnknownGeocode { codes: Vec<String> },
    /// An Alert or Update without any area.
    #[error("the message has no area (no info, or infos without <area>)")]
    NoArea,
    /// The source lists the senders it may speak for, and this is not one of them.
    #[error("sender `{sender}` is not allowed for this source")]
    SenderNotAllowed { sender: String },
    /// An Update or Cancel of an active alert from a different sender: only the issuer may change its alert.
    #[error("message from `{sender}` references `{referenced_sender}`'s active alert {identifier}")]
    ForeignReference { sender: String, referenced_sender: String, identifier: String },
    /// An Update or Cancel of a warning another source opened, when this source's `may_reference` does not name
    /// that source: each chain belongs to the source that opened it, whatever `sender` the message claims.
    #[error("warning {identifier} was issued through source `{owner}`; this source may not update or cancel it")]
    ForeignSource { owner: String, identifier: String },
    /// As many external alerts are active as `max_active` allows.
    #[error("{max} external alerts are already active")]
    Capacity { max: usize },
}

impl Rejection {
    /// Every label, so metrics can show zeros before the first rejection.
    pub const LABELS: &'static [&'static str] = &[
        "too_large",
        "invalid_xml",
        "invalid_cap",
        "unknown_geocode",
        "no_area",
        "sender_not_allowed",
        "foreign_reference",
        "foreign_source",
        "capacity",
    ];

    /// Metrics label and 4xx reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::TooLarge { .. } => "too_large",
            Rejection::InvalidXml(_) => "invalid_xml",
            Rejection::InvalidCap(_) => "invalid_cap",
            Rejection::UnknownGeocode { .. } => "unknown_geocode",
            Rejection::NoArea => "no_area",
            Rejection::SenderNotAllowed { .. } => "sender_not_allowed",
            Rejection::ForeignReference { .. } => "foreign_reference",
            Rejection::ForeignSource { .. } => "foreign_source",
            Rejection::Capacity { .. } => "capacity",
        }
    }

    /// Sorts a reader error into "not XML" and "XML but not CAP", the two things a sender fixes differently.
    pub(crate) fn from_parse(e: ParseError) -> Rejection {
        match e {
            ParseError::TooLarge { size, limit } => Rejection::TooLarge { size, limit },
            ParseError::InvalidXml { .. } | ParseError::TooDeep { .. } => Rejection::InvalidXml(e),
            other => Rejection::InvalidCap(other),
        }
    }
}

/// Why a push was refused. [`PushError::status`] is the HTTP status to answer with and [`PushError::reason`] the
/// label to put in the body, so the agency's operator can tell "fix your signing" from "fix your geocodes".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PushError {
    /// `source` names no push source.
    #[error("unknown push source `{0}`")]
    UnknownSource(String),
    /// No `Authorization: Bearer` and no `X-DC-Signature` header (or none the source accepts).
    #[error("missing credentials: send `Authorization: Bearer <token>` or `X-DC-Signature: t=…,v1=…`")]
    Unsigned,
    /// A bearer token that matches no source (or not the named one).
    #[error("bearer token not accepted")]
    BadToken,
    /// A signature header that does not parse or does not match.
    #[error("signature not accepted: {0}")]
    BadSignature(&'static str),
    /// A valid-looking signature whose timestamp is outside the source's window.
    #[error("signature timestamp {t} is more than {window_s} s from the server's clock ({now})")]
    StaleSignature { t: i64, now: i64, window_s: u64 },
    /// The message itself was refused.
    #[error(transparent)]
    Rejected(#[from] Rejection),
}

impl PushError {
    /// Authentication labels, for pre-registering metrics.
    pub const AUTH_LABELS: &'static [&'static str] =
        &["unknown_source", "unsigned", "bad_token", "bad_signature", "stale_signature"];

    /// Metrics label and the reason named in the response.
    pub fn reason(&self) -> &'static str {
        match self {
            PushError::UnknownSource(_) => "unknown_source",
            PushError::Unsigned => "unsigned",
            PushError::BadToken => "bad_token",
            PushError::BadSignature(_) => "bad_signature",
            PushError::StaleSignature { .. } => "stale_signature",
            PushError::Rejected(r) => r.reason(),
        }
    }

    /// The HTTP status for the response.
    pub fn status(&self) -> u16 {
        match self {
            PushError::UnknownSource(_)
            | PushError::Unsigned
            | PushError::BadToken
            | PushError::BadSignature(_)
            | PushError::StaleSignature { .. } => 401,
            PushError::Rejected(r) => match r {
                Rejection::TooLarge { .. } => 413,
                Rejection::InvalidXml(_) => 400,
                Rejection::InvalidCap(_) | Rejection::UnknownGeocode { .. } | Rejection::NoArea => 422,
                Rejection::SenderNotAllowed { .. }
                | Rejection::ForeignReference { .. }
                | Rejection::ForeignSource { .. } => 403,
                // Not the sender's fault, and worth retrying later: the one non-4xx answer.
                Rejection::Capacity { .. } => 503,
            },
        }
    }
}
