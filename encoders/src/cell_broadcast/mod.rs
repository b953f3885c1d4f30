//! 4G cell broadcast for Taiwan PWS: pure encoders for the exact 3GPP formats a carrier's
//! Cell Broadcast Centre (CBC) and its MMEs expect. No I/O and no clocks: callers pass the
//! class, serial number and text; delivery lives elsewhere.
//!
//! # Layout
//!
//! | file | what lives there | spec |
//! |---|---|---|
//! | `mod.rs` | [`CellBroadcast`], [`encode_broadcast`], the error type | |
//! | [`pws`] | Taiwan PWS classes → message identifiers; Chinese ↔ English channel pairs | TS 23.041 §9.4.1.2.2 |
//! | [`serial`] | serial number: geographic scope, message code, update number | TS 23.041 §9.4.1.2.1 |
//! | [`gsm7`] | GSM 7-bit default alphabet + extension table, septet packing | TS 23.038 §6 |
//! | [`dcs`] | data coding scheme: GSM 7-bit `0x0F`, UCS-2 `0x48`, UCS-2 with language `0x11` | TS 23.038 §5 |
//! | [`pages`] | split text into ≤ 15 pages of 82 octets; 88-octet CBS pages; our decoder | TS 23.041 §9.4.1.2 |
//! | [`lte`] | LTE warning-message-content form (page count, 82 + length per page) | TS 23.041 §9.4.2.2.5 |
//! | [`drill`] | broadcast text per mode: `[演練]` / `[Drill]` prefixes | |
//! | [`aper`] | the aligned-PER primitives SBc-AP needs | X.691 |
//! | [`sbcap`] | Write-Replace-Warning-Request and Stop-Warning-Request PDUs | TS 29.168 |
//! | [`warning_area`] | Warning Area Coordinates (IE 46): polygons and circles a phone checks its position against | ATIS-0700041 §5.2 (as Android reads it) |
//! | `tests/` | tshark-checked pages and PDUs, property round-trips | |
//!
//! # Example
//!
//! ```
//! use encoders::cell_broadcast::*;
//! let serial = SerialNumber::new(GeoScope::Plmn, 23, 0)?;
//! let text = drill::broadcast_text(BroadcastMode::Drill, Language::Chinese, "豪雨特報");
//! let cb = encode_broadcast(PwsClass::Alert, Language::Chinese, serial, &text)?;
//! assert_eq!((cb.message_id, cb.dcs, cb.pages.len()), (911, 0x48, 1));
//! let cells = WarningArea::Cells(vec![Ecgi { plmn: Plmn::new("466", "92")?, cell_id: 0x0ABCDEF }]);
//! let pdu = write_replace_warning_request(&cb, &cells, Schedule { repetition_period_s: 60, number_of_broadcasts: 0 })?;
//! let cancel = stop_warning_request(cb.message_id, cb.serial, &cells)?;
//! # let _ = (pdu, cancel);
//! # Ok::<(), CbsError>(())
//! ```

pub mod aper;
pub mod dcs;
pub mod drill;
pub mod gsm7;
pub mod lte;
pub mod pages;
pub mod pws;
pub mod sbcap;
pub mod serial;
pub mod warning_area;

#[cfg(test)]
mod tests;

pub use dcs::Coding;
pub use drill::BroadcastMode;
pub use pages::{CONTENT_OCTETS, MAX_PAGES, PAGE_OCTETS};
pub use pws::{paired_message_id, Language, PwsClass};
pub use sbcap::{
    stop_warning_request, write_replace_warning_request, write_replace_warning_request_geofenced, Ecgi, Plmn, Schedule,
    Tai, WarningArea,
};
pub use serial::{GeoScope, SerialNumber};
pub use warning_area::{Geofence, LatLon, WarningAreaCoordinates};

/// Why a broadcast could not be encoded. One enum for the module: every variant is a fact an
/// operator or a config author can act on (a too-long text, an out-of-range field), carrying
/// the numbers needed to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CbsError {
    #[error("the warning text is empty")]
    EmptyText,
    #[error(
        "the text needs {pages} pages ({length} {unit}); a cell broadcast carries at most 15 pages ({limit} {unit})"
    )]
    TooLong { length: usize, limit: usize, pages: usize, unit: &'static str },
    #[error("character {ch:?} at position {position} cannot be sent in {coding}")]
    Unencodable { ch: char, position: usize, coding: &'static str },
    #[error(
        "carriage return (CR) at position {position}: CR is the padding of every cell-broadcast page (TS 23.038), so a \
         receiver cannot tell it from padding; write line breaks as LF (\\n)"
    )]
    CarriageReturn { position: usize },
    #[error("emergency level {0} is out of range 0..=8 (message identifiers 4371–4379 / 4384–4392)")]
    EmergencyLevel(u8),
    #[error("message code {0} does not fit in 10 bits (0..=1023)")]
    MessageCode(u16),
    #[error("update number {0} does not fit in 4 bits (0..=15)")]
    UpdateNumber(u8),
    #[error("language code {0:?} is not two lowercase ISO 639 letters")]
    Language(String),
    #[error("malformed cell broadcast data: {0}")]
    Malformed(String),
    #[error("PLMN {0:?} is not a 3-digit MCC and a 2- or 3-digit MNC")]
    Plmn(String),
    #[error("E-UTRAN cell identity {0:#x} does not fit in 28 bits")]
    CellId(u32),
    #[error("the warning area list is empty; use WarningArea::WholeNetwork to target every cell")]
    EmptyWarningArea,
    #[error("the warning area has {count} entries; SBc-AP allows at most {limit}")]
    TooManyAreas { count: usize, limit: usize },
    #[error("repetition period {0} s is above the 4095 s a CBC may send (TS 29.168)")]
    RepetitionPeriod(u16),
    #[error("{number_of_broadcasts} broadcasts with repetition period {repetition_period_s} s is not a valid schedule (period 0 allows exactly 1)")]
    Schedule { repetition_period_s: u16, number_of_broadcasts: u16 },
    #[error("warning area coordinates need at least one polygon or circle")]
    WarningAreaEmpty,
    #[error(
        "warning area polygon {index} has {vertices} distinct grid points; a polygon needs 3..={limit} \
         (simplify it outward first)"
    )]
    WarningAreaPolygon { index: usize, vertices: usize, limit: usize },
    /// The point as given (text: the error type stays `Eq`).
    #[error("coordinate {0} is not a latitude in -90..=90 and a longitude in -180..=180")]
    WarningAreaCoordinate(String),
    /// The radius as given, metres (text: the error type stays `Eq`).
    #[error("circle radius {0} m is not in (0, 16383984] m (20 bits of 1/64 km)")]
    WarningAreaRadius(String),
    #[error(
        "warning area coordinates take {octets} octets; SBc-AP carries at most {limit} (simplify the outline \
         further; it is never cut)"
    )]
    WarningAreaTooLarge { octets: usize, limit: usize },
    #[error("maximum wait time {0} s is reserved (255 means the phone's default: leave it out instead)")]
    MaximumWaitTime(u8),
}

/// One 88-octet page and how many of its 82 content octets are text (not CR padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CbsPage {
    /// Serial (2) + message identifier (2) + DCS (1) + page parameter (1) + content (82).
    pub bytes: [u8; PAGE_OCTETS],
    /// Useful content octets; the LTE form sends it after each page.
    pub useful_len: u8,
}

impl CbsPage {
    /// The 82 content octets.
    pub fn content(&self) -> &[u8] {
        &self.bytes[6..]
    }
}

/// A warning encoded for one channel: what a CBC needs to broadcast it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellBroadcast {
    /// The PWS channel (e.g. 4370 Presidential, Chinese).
    pub message_id: u16,
    /// Identifies this alert and its update; a cancel names the same value.
    pub serial: SerialNumber,
    /// How the text was coded.
    pub coding: Coding,
    /// The DCS octet (`coding.dcs()`), kept as a field because every PDU carries it.
    pub dcs: u8,
    /// 1..=15 pages, numbered in their page-parameter octets.
    pub pages: Vec<CbsPage>,
}

impl CellBroadcast {
    /// The LTE warning-message-content form (TS 23.041 §9.4.2.2.5) of these pages.
    pub fn warning_message_content(&self) -> Vec<u8> {
        lte::warning_message_content(&self.pages)
    }

    /// The 88-octet pages alone, as a GSM/UMTS cell sends them.
    pub fn page_bytes(&self) -> Vec<[u8; PAGE_OCTETS]> {
        self.pages.iter().map(|p| p.bytes).collect()
    }
}

/// Encode `text` for `class` on `language`'s channel: GSM 7-bit (DCS `0x0F`) when every
/// character fits it, UCS-2 (DCS `0x48`, see [`dcs`] for why not `0x11`) otherwise.
///
/// `text` is sent as given: build it with [`drill::broadcast_text`] so non-real modes carry
/// their prefix and line breaks are LF. Errors: emergency level out of range, empty text, a CR
/// (see [`pages::paginate`]), characters outside UCS-2, text longer than 15 pages.
pub fn encode_broadcast(
    class: PwsClass,
    language: Language,
    serial: SerialNumber,
    text: &str,
) -> Result<CellBroadcast, CbsError> {
    let message_id = class.message_id(language)?;
    encode_with_coding(message_id, serial, Coding::for_text(text), text)
}

/// Encode with an explicit identifier and coding, e.g. [`Coding::Ucs2WithLanguage`] (DCS 0x11)
/// for a carrier that asks for the language indication.
pub fn encode_with_coding(
    message_id: u16,
    serial: SerialNumber,
    coding: Coding,
    text: &str,
) -> Result<CellBroadcast, CbsError> {
    let contents = pages::paginate(text, coding)?;
    let total = contents.len() as u8;
    let dcs = coding.dcs();
    let pages = contents
        .iter()
        .enumerate()
        .map(|(i, c)| CbsPage {
            bytes: pages::cbs_page(serial, message_id, dcs, i as u8 + 1, total, c),
            useful_len: c.useful_len,
        })
        .collect();
    Ok(CellBroadcast { message_id, serial, coding, dcs, pages })
}
