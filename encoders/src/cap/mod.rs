//! CAP 1.2 (OASIS Common Alerting Protocol): the messages agencies, media and aggregators read, written and read
//! here without I/O or clocks (every time is an input).
//!
//! # Layout
//! - [`message`]: the CAP types (`CapAlert`, `CapInfo`, `CapArea`, …), enumerations spelled as the spec spells
//!   them, Taiwan profile constants, and `CapAlert::validate` (the spec rules every message keeps).
//! - [`times`]: CAP date-times — always an offset (`+08:00`; UTC as `-00:00`), never `Z`, no fractions.
//! - [`geometry`]: `Polygon` (closed, ≥ 4 `lat,lon` pairs, WGS 84 ranges) and `Circle`.
//! - [`write`]: `write_alert` — XML in the XSD's element order, escaped, validated first.
//! - [`parse`]: `parse_alert` — XML → `CapAlert` with typed errors naming the element; enforces order, enumerations
//!   and the rules the XSD cannot express (for inbound CAP from partner agencies).
//! - [`templates`]: texts per event type and language from TOML (`config/cap_templates.toml`).
//! - [`builder`]: `build_alert` — a domain-neutral `CapInput` plus `Templates` → `CapAlert` with zh-TW and en-US
//!   infos, Taiwan geocodes and event codes, drill/test prefixes.
//! - [`atom`]: `write_atom` — the Atom feed linking each message as `application/cap+xml`.
//! - `tests/`: round trip (proptest), XSD validation with `xmllint`, parser errors, builder and feed.
//!
//! # Flow
//! `CapInput` ─build_alert─▶ `CapAlert` ─write_alert─▶ XML ─parse_alert─▶ `CapAlert` (equal to the one written).

pub mod atom;
pub mod builder;
pub mod geometry;
pub mod message;
pub mod parse;
pub mod templates;
pub mod times;
pub mod write;

#[cfg(test)]
pub(crate) mod tests;

pub use atom::{cap_url, write_atom, AtomEntry, AtomError, AtomFeed};
pub use builder::{build_alert, AreaInput, BuildError, CapInput, Localized};
pub use geometry::{Circle, GeometryError, Point, Polygon};
pub use message::{
    CapAlert, CapArea, CapInfo, CapResource, Category, Certainty, InvalidMessage, MsgType, Reference, ResponseType,
    Scope, Severity, Status, Urgency, ValuePair, CAP_NAMESPACE, TW_EVENT_CODE_NAME, TW_GEOCODE_NAME,
};
pub use parse::{parse_alert, parse_alert_with, ParseError, ParseLimits};
pub use templates::{TemplateError, Templates};
pub use times::{format_cap_time, parse_cap_time, TimeError, TAIWAN_OFFSET};
pub use write::write_alert;

/// Any error of this module, for callers that handle them alike; each layer's own enum says which step failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CapError {
    /// Building from input and templates.
    #[error("building CAP message: {0}")]
    Build(#[from] BuildError),
    /// Loading or filling templates.
    #[error("CAP templates: {0}")]
    Template(#[from] TemplateError),
    /// A message that breaks a CAP rule (writing).
    #[error("invalid CAP message: {0}")]
    Invalid(#[from] InvalidMessage),
    /// Reading a message.
    #[error("reading CAP message: {0}")]
    Parse(#[from] ParseError),
    /// Writing the Atom feed.
    #[error("writing CAP feed: {0}")]
    Atom(#[from] AtomError),
}
