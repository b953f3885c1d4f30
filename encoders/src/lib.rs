//! `encoders`: the public-warning formats, pure — CAP 1.2 and 3GPP cell broadcast, written and read without I/O or
//! clocks (every time is an input), so they are deterministic and testable alone. This crate depends on nothing of
//! ours; `alerting`, `dissemination` and `inbound` build on it.
//!
//! Layout:
//! - [`cap`]: CAP 1.2 — the message types and the CAP vocabulary (`Severity`, `Urgency`, `Certainty`, `Status`,
//!   `MsgType`, `Category`, …), `write_alert`/`parse_alert`, times with offsets, polygons and circles, the per-event
//!   templates of `config/cap_templates.toml`, `build_alert`, and the Atom feed; `cap/tests/` holds the round trip,
//!   XSD validation, parser errors, builder and feed tests.
//! - [`cell_broadcast`]: Taiwan PWS cell broadcast in 3GPP formats — classes and message identifiers, serial numbers,
//!   GSM 7-bit and UCS-2 coding, CBS pages, the LTE content form, drill texts, SBc-AP Write-Replace-Warning /
//!   Stop-Warning PDUs (aligned PER) and Warning Area Coordinates (IE 46, for phones that geofence);
//!   `cell_broadcast/tests/` checks pages and PDUs with tshark and, for IE 46, with pycrate from the Rel-15 ASN.1.
//! - `test_support` (tests, and the `test-support` feature only): where the OASIS CAP 1.2 XSD is, for the XSD checks
//!   of this crate and of `dissemination` and `inbound`; `test_support::phone`, a geofence-capable phone written
//!   from Android's reading of Warning Area Coordinates.
//! - `benches/encoders.rs`: criterion benchmark of CAP build/write/parse, CBS pages and SBc-AP.

pub mod cap;
pub mod cell_broadcast;

#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod test_support;
