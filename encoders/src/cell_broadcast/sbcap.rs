//! SBc-AP PDUs (3GPP TS 29.168 §4.4, ASN.1 aligned PER) that a CBC sends an MME:
//! Write-Replace-Warning-Request to broadcast and Stop-Warning-Request to cancel.
//!
//! Shape of both (IEs in the order of the spec's tables):
//!
//! ```text
//! SBC-AP-PDU.initiatingMessage { procedureCode 0 (write-replace) | 1 (stop), criticality reject,
//!   value: ProtocolIE-Container {
//!     Message-Identifier (5) · Serial-Number (11) · Warning-Area-List (15, optional)
//!     [write-replace only] Repetition-Period (10) · Number-of-Broadcasts-Requested (7)
//!     · Data-Coding-Scheme (3) · Warning-Message-Content (16)
//!     · Concurrent-Warning-Message-Indicator (20)
//!     [write-replace, geofenced] · Warning-Area-Coordinates (46, criticality ignore, Release 15) } }
//! ```
//!
//! Warning-Area-Coordinates (`OCTET STRING (SIZE (1..1024))`, an extension of the request's IE set) carries the
//! alert's polygons for phones that check their own position ([`super::warning_area`]). Its criticality is
//! *ignore*, so an MME or eNB of an older release passes the warning on without it, and phones that do not
//! geofence display it as before.
//!
//! Concurrent-Warning-Message-Indicator is always sent: without it an eNB *replaces* the
//! warning it is broadcasting (TS 36.413 §8.12.1.2), so the English channel's message would
//! knock the Chinese one off the air.

use super::aper::{open_type, BitWriter};
use super::pages::MAX_PAGES;
use super::serial::SerialNumber;
use super::warning_area::{WarningAreaCoordinates, MAX_OCTETS as MAX_WARNING_AREA_OCTETS};
use super::{CbsError, CellBroadcast};

const PROC_WRITE_REPLACE_WARNING: u64 = 0;
const PROC_STOP_WARNING: u64 = 1;

const ID_DATA_CODING_SCHEME: u16 = 3;
const ID_MESSAGE_IDENTIFIER: u16 = 5;
const ID_NUMBER_OF_BROADCASTS_REQUESTED: u16 = 7;
const ID_REPETITION_PERIOD: u16 = 10;
const ID_SERIAL_NUMBER: u16 = 11;
const ID_WARNING_AREA_LIST: u16 = 15;
const ID_WARNING_MESSAGE_CONTENT: u16 = 16;
const ID_CONCURRENT_WARNING_MESSAGE_INDICATOR: u16 = 20;
const ID_WARNING_AREA_COORDINATES: u16 = 46;

/// Most entries in an ECGI, TAI or emergency-area list (maxnoofCellID etc.).
pub const MAX_AREA_ENTRIES: usize = 65535;
/// Longest repetition period a current CBC may send, in seconds (TS 29.168 §4.4.5).
pub const MAX_REPETITION_PERIOD: u16 = 4095;

#[derive(Debug, Clone, Copy)]
enum Criticality {
    Reject = 0,
    Ignore = 1,
}

/// A PLMN identity (MCC + MNC) in its 3-octet TBCD form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Plmn([u8; 3]);

impl Plmn {
    /// From digit strings, e.g. `Plmn::new("466", "92")` (Chunghwa Telecom). MCC has 3 digits,
    /// MNC 2 or 3.
    pub fn new(mcc: &str, mnc: &str) -> Result<Plmn, CbsError> {
        let bad = || CbsError::Plmn(format!("{mcc}-{mnc}"));
        let digits = |s: &str| -> Option<Vec<u8>> { s.bytes().map(|b| b.is_ascii_digit().then(|| b - b'0')).collect() };
        let m = digits(mcc).filter(|d| d.len() == 3).ok_or_else(bad)?;
        let n = digits(mnc).filter(|d| d.len() == 2 || d.len() == 3).ok_or_else(bad)?;
        // TBCD: low nibble first; a 2-digit MNC puts filler 0xF where its third digit goes.
        let n3 = n.get(2).copied().unwrap_or(0xF);
        Ok(Plmn([m[1] << 4 | m[0], n3 << 4 | m[2], n[1] << 4 | n[0]]))
    }

    /// The 3 octets as sent.
    pub fn octets(self) -> [u8; 3] {
        self.0
    }
}

/// An E-UTRAN cell global identity: PLMN + 28-bit cell identity (eNB id << 8 | cell).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ecgi {
    pub plmn: Plmn,
    /// Must fit 28 bits; checked when encoding.
    pub cell_id: u32,
}

/// A tracking area identity: PLMN + 16-bit TAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tai {
    pub plmn: Plmn,
    pub tac: u16,
}

/// Where a warning is broadcast (SBc-AP Warning-Area-List).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarningArea {
    /// Every cell the MME serves: the IE is left out.
    WholeNetwork,
    /// Listed cells (the targeting result from `geo-index`).
    Cells(Vec<Ecgi>),
    /// Listed tracking areas.
    TrackingAreas(Vec<Tai>),
    /// Emergency area identities (3 octets each) configured in the carrier's RAN.
    EmergencyAreas(Vec<[u8; 3]>),
}

/// How often and how many times cells repeat the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Seconds between repetitions, 0..=4095; 0 = no repetition.
    pub repetition_period_s: u16,
    /// Broadcasts requested; 0 with a non-zero period = until stopped (CMAS semantics).
    pub number_of_broadcasts: u16,
}

/// Write-Replace-Warning-Request for `broadcast` over `area`.
pub fn write_replace_warning_request(
    broadcast: &CellBroadcast,
    area: &WarningArea,
    schedule: Schedule,
) -> Result<Vec<u8>, CbsError> {
    write_replace(broadcast, area, schedule, None)
}

/// Write-Replace-Warning-Request that also carries the alert's own area for geofence-capable phones (IE 46
/// Warning-Area-Coordinates, encoded by [`WarningAreaCoordinates::encode`]: refused rather than cut when it does
/// not fit its 1,024 octets).
pub fn write_replace_warning_request_geofenced(
    broadcast: &CellBroadcast,
    area: &WarningArea,
    schedule: Schedule,
    coordinates: &WarningAreaCoordinates,
) -> Result<Vec<u8>, CbsError> {
    let octets = coordinates.encode()?;
    write_replace(broadcast, area, schedule, Some(&octets))
}

fn write_replace(
    broadcast: &CellBroadcast,
    area: &WarningArea,
    schedule: Schedule,
    coordinates: Option<&[u8]>,
) -> Result<Vec<u8>, CbsError> {
    let Schedule { repetition_period_s: period, number_of_broadcasts: count } = schedule;
    // `CellBroadcast` has public fields; a hand-built one could hold a page count that the
    // 1-octet page total or the 9600-octet IE bound would silently truncate.
    if broadcast.pages.is_empty() || broadcast.pages.len() > MAX_PAGES {
        return Err(CbsError::Malformed(format!("{} pages; a broadcast has 1..=15", broadcast.pages.len())));
    }
    if period > MAX_REPETITION_PERIOD {
        return Err(CbsError::RepetitionPeriod(period));
    }
    // TS 29.168 §4.4.5: (0, 0) means "no broadcast" and n > 1 without a period is invalid.
    if period == 0 && count != 1 {
        return Err(CbsError::Schedule { repetition_period_s: period, number_of_broadcasts: count });
    }
    let mut ies = vec![
        (ID_MESSAGE_IDENTIFIER, Criticality::Reject, bits16(broadcast.message_id)),
        (ID_SERIAL_NUMBER, Criticality::Reject, bits16(broadcast.serial.to_u16())),
    ];
    if let Some(v) = warning_area_list(area)? {
        ies.push((ID_WARNING_AREA_LIST, Criticality::Ignore, v));
    }
    let mut w = BitWriter::new();
    w.constrained(u64::from(period), 0, 4096);
    ies.push((ID_REPETITION_PERIOD, Criticality::Reject, w.finish()));
    let mut w = BitWriter::new();
    w.constrained(u64::from(count), 0, 65535);
    ies.push((ID_NUMBER_OF_BROADCASTS_REQUESTED, Criticality::Reject, w.finish()));
    ies.push((ID_DATA_CODING_SCHEME, Criticality::Ignore, vec![broadcast.dcs]));
    // OCTET STRING (SIZE (1..9600)): length − 1 as a 2-octet constrained number, then octets.
    let content = broadcast.warning_message_content();
    let mut w = BitWriter::new();
    w.constrained(content.len() as u64, 1, 9600);
    w.octets(&content);
    ies.push((ID_WARNING_MESSAGE_CONTENT, Criticality::Ignore, w.finish()));
    // ENUMERATED {true}: zero bits, so the complete encoding is one zero octet.
    ies.push((ID_CONCURRENT_WARNING_MESSAGE_INDICATOR, Criticality::Reject, BitWriter::new().finish()));
    if let Some(octets) = coordinates {
        if octets.is_empty() || octets.len() > MAX_WARNING_AREA_OCTETS {
            return Err(CbsError::WarningAreaTooLarge { octets: octets.len(), limit: MAX_WARNING_AREA_OCTETS });
        }
        // OCTET STRING (SIZE (1..1024)): length − 1 as a 2-octet constrained number (range 1024), then octets.
        let mut w = BitWriter::new();
        w.constrained(octets.len() as u64, 1, MAX_WARNING_AREA_OCTETS as u64);
        w.octets(octets);
        ies.push((ID_WARNING_AREA_COORDINATES, Criticality::Ignore, w.finish()));
    }
    Ok(pdu(PROC_WRITE_REPLACE_WARNING, &ies))
}

/// Stop-Warning-Request: cancel the broadcast with this identifier and serial number over
/// `area` (the CBS "kill").
pub fn stop_warning_request(message_id: u16, serial: SerialNumber, area: &WarningArea) -> Result<Vec<u8>, CbsError> {
    let mut ies = vec![
        (ID_MESSAGE_IDENTIFIER, Criticality::Reject, bits16(message_id)),
        (ID_SERIAL_NUMBER, Criticality::Reject, bits16(serial.to_u16())),
    ];
    if let Some(v) = warning_area_list(area)? {
        ies.push((ID_WARNING_AREA_LIST, Criticality::Ignore, v));
    }
    Ok(pdu(PROC_STOP_WARNING, &ies))
}

/// BIT STRING (SIZE (16)): 16 bits, no length, no alignment.
fn bits16(v: u16) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

/// SBC-AP-PDU → initiatingMessage → the request's ProtocolIE-Container.
fn pdu(procedure_code: u64, ies: &[(u16, Criticality, Vec<u8>)]) -> Vec<u8> {
    // Write-Replace-Warning-Request / Stop-Warning-Request ::= SEQUENCE { protocolIEs,
    // protocolExtensions OPTIONAL, ... }: extension bit 0, optional bit 0, then the container,
    // SEQUENCE (SIZE (0..65535)) OF ProtocolIE-Field { id, criticality, value (open type) }.
    let mut body = BitWriter::new();
    body.bits(0, 1);
    body.bits(0, 1);
    body.constrained(ies.len() as u64, 0, 65535);
    for (id, criticality, value) in ies {
        body.constrained(u64::from(*id), 0, 65535);
        body.bits(*criticality as u64, 2);
        open_type(&mut body, value);
    }
    let body = body.finish();

    // SBC-AP-PDU ::= CHOICE { initiatingMessage, successfulOutcome, unsuccessfulOutcome, ... }:
    // extension bit 0, index 0 in 2 bits; InitiatingMessage ::= SEQUENCE { procedureCode
    // (0..255), criticality, value (open type) } with no extension marker.
    let mut w = BitWriter::new();
    w.bits(0, 1);
    w.bits(0, 2);
    w.constrained(procedure_code, 0, 255);
    w.bits(Criticality::Reject as u64, 2);
    open_type(&mut w, &body);
    w.finish()
}

/// The Warning-Area-List value, or `None` for the whole network.
fn warning_area_list(area: &WarningArea) -> Result<Option<Vec<u8>>, CbsError> {
    let (index, count) = match area {
        WarningArea::WholeNetwork => return Ok(None),
        WarningArea::Cells(v) => (0, v.len()),
        WarningArea::TrackingAreas(v) => (1, v.len()),
        WarningArea::EmergencyAreas(v) => (2, v.len()),
    };
    if count == 0 {
        return Err(CbsError::EmptyWarningArea);
    }
    if count > MAX_AREA_ENTRIES {
        return Err(CbsError::TooManyAreas { count, limit: MAX_AREA_ENTRIES });
    }
    // Warning-Area-List ::= CHOICE { cell-ID-List, tracking-Area-List-for-Warning,
    // emergency-Area-ID-List, ... }: extension bit, 2-bit index; each list is
    // SEQUENCE (SIZE (1..65535)) OF …, its count − 1 in two aligned octets.
    let mut w = BitWriter::new();
    w.bits(0, 1);
    w.bits(index, 2);
    w.constrained(count as u64, 1, 65535);
    match area {
        WarningArea::WholeNetwork => {}
        WarningArea::Cells(cells) => {
            for c in cells {
                if c.cell_id >= 1 << 28 {
                    return Err(CbsError::CellId(c.cell_id));
                }
                // EUTRAN-CGI ::= SEQUENCE { pLMNidentity, cell-ID, iE-Extensions OPTIONAL, ... }:
                // extension bit, optional bit; PLMN (3 fixed octets) is aligned; the 28-bit
                // cell identity (fixed, > 16 bits) is aligned too, leaving 4 bits for the next.
                w.bits(0, 1);
                w.bits(0, 1);
                w.octets(&c.plmn.octets());
                w.bits(u64::from(c.cell_id), 28);
            }
        }
        WarningArea::TrackingAreas(tais) => {
            for t in tais {
                // TAI ::= SEQUENCE { pLMNidentity, tAC, iE-Extensions OPTIONAL } has no
                // extension marker: one optional bit. TAC (2 fixed octets) is not aligned.
                w.bits(0, 1);
                w.octets(&t.plmn.octets());
                w.bits(u64::from(t.tac), 16);
            }
        }
        WarningArea::EmergencyAreas(ids) => {
            for id in ids {
                w.octets(id);
            }
        }
    }
    Ok(Some(w.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plmn_tbcd() {
        assert_eq!(Plmn::new("466", "92").unwrap().octets(), [0x64, 0xF6, 0x29]);
        assert_eq!(Plmn::new("466", "01").unwrap().octets(), [0x64, 0xF6, 0x10]);
        assert_eq!(Plmn::new("310", "260").unwrap().octets(), [0x13, 0x00, 0x62]);
        assert!(Plmn::new("46", "92").is_err());
        assert!(Plmn::new("466", "9").is_err());
        assert!(Plmn::new("466", "9a").is_err());
    }

    #[test]
    fn stop_warning_request_bytes() {
        let serial = SerialNumber::from_u16(0x4170);
        let plmn = Plmn::new("466", "92").unwrap();
        let area = WarningArea::Cells(vec![Ecgi { plmn, cell_id: 0x0ABCDEF }]);
        let pdu = stop_warning_request(4370, serial, &area).unwrap();
        let expected: Vec<u8> = vec![
            0x00, 0x01, 0x00, // CHOICE initiatingMessage, procedure 1, criticality reject
            0x1e, // open type length 30
            0x00, 0x00, 0x03, // ext/opt bits, 3 IEs
            0x00, 0x05, 0x00, 0x02, 0x11, 0x12, // Message-Identifier 4370
            0x00, 0x0b, 0x00, 0x02, 0x41, 0x70, // Serial-Number
            0x00, 0x0f, 0x40, 0x0b, // Warning-Area-List, criticality ignore, 11 octets
            0x00, 0x00, 0x00, // cell-ID-List, 1 entry
            0x00, 0x64, 0xf6, 0x29, 0x0a, 0xbc, 0xde, 0xf0, // ECGI 466-92 / 0x0ABCDEF
        ];
        assert_eq!(pdu, expected);
    }

    #[test]
    fn bad_areas_and_schedules_are_errors() {
        let serial = SerialNumber::from_u16(0x4170);
        let plmn = Plmn::new("466", "92").unwrap();
        assert_eq!(stop_warning_request(4370, serial, &WarningArea::Cells(vec![])), Err(CbsError::EmptyWarningArea));
        let big = WarningArea::Cells(vec![Ecgi { plmn, cell_id: 1 << 28 }]);
        assert_eq!(stop_warning_request(4370, serial, &big), Err(CbsError::CellId(1 << 28)));
        let many = WarningArea::TrackingAreas(vec![Tai { plmn, tac: 1 }; 65536]);
        assert!(matches!(stop_warning_request(4370, serial, &many), Err(CbsError::TooManyAreas { count: 65536, .. })));
        let cb =
            super::super::encode_broadcast(super::super::PwsClass::Alert, super::super::Language::English, serial, "x")
                .unwrap();
        let s = |p, n| Schedule { repetition_period_s: p, number_of_broadcasts: n };
        let area = WarningArea::WholeNetwork;
        assert_eq!(write_replace_warning_request(&cb, &area, s(4096, 1)), Err(CbsError::RepetitionPeriod(4096)));
        assert!(write_replace_warning_request(&cb, &area, s(0, 0)).is_err());
        assert!(write_replace_warning_request(&cb, &area, s(0, 2)).is_err());
        assert!(write_replace_warning_request(&cb, &area, s(0, 1)).is_ok());
        assert!(write_replace_warning_request(&cb, &area, s(60, 0)).is_ok());
        let empty = CellBroadcast { pages: vec![], ..cb.clone() };
        assert!(matches!(write_replace_warning_request(&empty, &area, s(60, 0)), Err(CbsError::Malformed(_))));
    }
}
