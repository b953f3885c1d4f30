//! A model of the air and of the phones under it, written from the specifications rather than from our encoder, so
//! that it can disagree with it:
//! - [`decode`]: an SBc-AP decoder (TS 29.168 §9.3 ASN.1, aligned PER per X.691) for the two requests a CBC sends an
//!   MME, Write-Replace-Warning-Request and Stop-Warning-Request, reading only what the ASN.1 says.
//! - [`Air`]: one eNB cell per row of `config/cell_sites.csv`, each applying what reaches it as TS 36.413 §8.12
//!   says: a Write-Replace-Warning starts a broadcast unless the cell already broadcasts that message identifier and
//!   serial number (§8.12.1.2: then nothing changes); with the Concurrent-Warning-Message-Indicator it goes beside
//!   what the cell broadcasts, without it it *replaces* everything the cell broadcasts; Number-of-Broadcasts-Requested
//!   0 repeats until stopped. A Stop-Warning (the MME's Kill, §8.12.2) stops that identifier and serial in the listed
//!   cells (every cell when no list is given).
//! - [`Phone`]: a handset camped on one cell that shows a message unless it is a duplicate per TS 23.041 §8.2: same
//!   message identifier and serial number (update number included) received before in the location the serial's
//!   geographical scope names — the cell for GS 0 and 3, the tracking area for GS 2, the PLMN for GS 1. This is
//!   what Android's CellBroadcastService does (`CellBroadcastHandler.isDuplicate` / `isSameLocation`, location
//!   PLMN + LAC + cell id for the cell-wide scopes).
//!
//! Every broadcast carries a `tag` (the alert id from the envelope that carried it) only so a test can count
//! displays per hazard; no decision of the model reads it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

/// SBc-AP procedure codes (TS 29.168 §9.3.7: id-Write-Replace-Warning 0, id-Stop-Warning 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Procedure {
    WriteReplace,
    Stop,
}

/// A cell as SBc-AP names it: PLMN (`466-92`) and 28-bit E-UTRAN cell identity.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CellId {
    pub plmn: String,
    pub eci: u32,
}

/// One decoded request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub procedure: Procedure,
    pub message_id: u16,
    pub serial: u16,
    /// Warning-Area-List as cells; None when the IE is absent (every cell).
    pub cells: Option<Vec<CellId>>,
    pub repetition_period: Option<u32>,
    pub number_of_broadcasts: Option<u32>,
    pub concurrent: bool,
    pub dcs: Option<u8>,
    pub content: Option<Vec<u8>>,
}

/// Aligned-PER reader (X.691): bits most significant first, `align` skips to the next octet.
struct Bits<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Bits { bytes, pos: 0 }
    }

    fn bit(&mut self) -> Result<u64, String> {
        let byte = self.bytes.get(self.pos / 8).ok_or_else(|| format!("truncated at bit {}", self.pos))?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(u64::from(b))
    }

    fn bits(&mut self, n: usize) -> Result<u64, String> {
        (0..n).try_fold(0u64, |acc, _| Ok(acc << 1 | self.bit()?))
    }

    fn align(&mut self) {
        self.pos = self.pos.div_ceil(8) * 8;
    }

    fn octets(&mut self, n: usize) -> Result<Vec<u8>, String> {
        self.align();
        let start = self.pos / 8;
        let out = self.bytes.get(start..start + n).ok_or_else(|| format!("{n} octets past the end"))?.to_vec();
        self.pos += n * 8;
        Ok(out)
    }

    /// X.691 §11.9 unconstrained length determinant, aligned: 0xxxxxxx (< 128) or 10xxxxxx xxxxxxxx (< 16384).
    fn length(&mut self) -> Result<usize, String> {
        self.align();
        let first = self.bits(8)?;
        if first & 0x80 == 0 {
            Ok(first as usize)
        } else if first & 0xC0 == 0x80 {
            Ok(((first & 0x3F) << 8 | self.bits(8)?) as usize)
        } else {
            Err("fragmented length: no SBc-AP request of ours is 16 K".into())
        }
    }

    /// An open type (X.691 §10.2): a length, then that many octets holding a complete encoding.
    fn open_type(&mut self) -> Result<Vec<u8>, String> {
        let n = self.length()?;
        self.octets(n)
    }

    /// A constrained whole number with range 2..=65536 (X.691 §11.5.7): 1 to 16 bits, aligned when the range
    /// exceeds 255 (one or two octets).
    fn constrained(&mut self, lo: u64, hi: u64) -> Result<u64, String> {
        let range = hi - lo + 1;
        let v = if range <= 255 {
            self.bits(64 - (range - 1).leading_zeros() as usize)?
        } else if range == 256 {
            self.align();
            self.bits(8)?
        } else if range <= 65536 {
            self.align();
            self.bits(16)?
        } else {
            // 0..=131071 and other large ranges: a length (in octets) then the octets (§11.5.7.4).
            let octets = self.bits(2)? as usize + 1;
            self.align();
            self.bits(octets * 8)?
        };
        Ok(lo + v)
    }
}

/// PLMN identity (3 octets TBCD, TS 23.003 §12.1 / TS 36.413 §9.2.3.8) as `mcc-mnc`.
fn plmn(octets: &[u8]) -> String {
    let d = |n: u8| char::from(b'0' + n);
    let mut mcc = String::new();
    mcc.push(d(octets[0] & 0xF));
    mcc.push(d(octets[0] >> 4));
    mcc.push(d(octets[1] & 0xF));
    let mut mnc = String::new();
    mnc.push(d(octets[2] & 0xF));
    mnc.push(d(octets[2] >> 4));
    if octets[1] >> 4 != 0xF {
        mnc.push(d(octets[1] >> 4));
    }
    format!("{mcc}-{mnc}")
}

/// Decodes an SBC-AP-PDU carrying a Write-Replace-Warning-Request or a Stop-Warning-Request.
///
/// ```text
/// SBC-AP-PDU ::= CHOICE { initiatingMessage, successfulOutcome, unsuccessfulOutcome, ... }
/// InitiatingMessage ::= SEQUENCE { procedureCode INTEGER (0..255), criticality ENUMERATED {reject, ignore, notify},
///                                  value OPEN TYPE }
/// Write-Replace-Warning-Request ::= SEQUENCE { protocolIEs ProtocolIE-Container, protocolExtensions … OPTIONAL, ... }
/// ProtocolIE-Container ::= SEQUENCE (SIZE (0..65535)) OF SEQUENCE { id INTEGER (0..65535), criticality, value OPEN TYPE }
/// ```
pub fn decode(pdu: &[u8]) -> Result<Request, String> {
    let mut r = Bits::new(pdu);
    if r.bit()? != 0 {
        return Err("extension choice".into());
    }
    if r.bits(2)? != 0 {
        return Err("not an initiatingMessage".into());
    }
    let procedure = match r.constrained(0, 255)? {
        0 => Procedure::WriteReplace,
        1 => Procedure::Stop,
        p => return Err(format!("procedure {p}")),
    };
    let _criticality = r.bits(2)?;
    let value = r.open_type()?;
    if r.pos.div_ceil(8) != pdu.len() {
        return Err(format!("{} trailing octets", pdu.len() - r.pos.div_ceil(8)));
    }
    let mut v = Bits::new(&value);
    let _extension = v.bit()?;
    if v.bit()? != 0 {
        return Err("protocolExtensions present".into());
    }
    let count = v.constrained(0, 65535)?;
    let mut req = Request {
        procedure,
        message_id: 0,
        serial: 0,
        cells: None,
        repetition_period: None,
        number_of_broadcasts: None,
        concurrent: false,
        dcs: None,
        content: None,
    };
    let mut seen = BTreeSet::new();
    for _ in 0..count {
        let id = v.constrained(0, 65535)?;
        // Criticality ::= ENUMERATED { reject, ignore, notify }.
        let criticality = v.bits(2)?;
        let ie = v.open_type()?;
        if !seen.insert(id) {
            return Err(format!("IE {id} twice"));
        }
        let mut b = Bits::new(&ie);
        match id {
            // Message-Identifier, Serial-Number ::= BIT STRING (SIZE (16)).
            5 => req.message_id = b.bits(16)? as u16,
            11 => req.serial = b.bits(16)? as u16,
            // Data-Coding-Scheme ::= BIT STRING (SIZE (8)).
            3 => req.dcs = Some(b.bits(8)? as u8),
            // Repetition-Period ::= INTEGER (0..4096); Number-of-Broadcasts-Requested ::= INTEGER (0..65535).
            10 => req.repetition_period = Some(b.constrained(0, 4096)? as u32),
            7 => req.number_of_broadcasts = Some(b.constrained(0, 65535)? as u32),
            // Warning-Message-Content ::= OCTET STRING (SIZE (1..9600)).
            16 => {
                let n = b.constrained(1, 9600)? as usize;
                req.content = Some(b.octets(n)?);
            }
            // Concurrent-Warning-Message-Indicator ::= ENUMERATED { true }: no bits, one zero octet as open type.
            20 => req.concurrent = true,
            15 => req.cells = Some(warning_area(&mut b)?),
            // An IE this eNB does not comprehend: TS 36.413 §10.3.4.1 (criticality handling) — `reject` fails the
            // procedure, `ignore` and `notify` go on without it. So an eNB before Release 15 treats IE 46
            // (Warning-Area-Coordinates, criticality ignore) as absent and broadcasts to the whole cell list.
            other if criticality == 0 => return Err(format!("unexpected IE {other} with criticality reject")),
            _ => {}
        }
    }
    if !seen.contains(&5) || !seen.contains(&11) {
        return Err("message identifier or serial number missing".into());
    }
    if procedure == Procedure::WriteReplace
        && !(seen.contains(&10) && seen.contains(&7) && seen.contains(&16) && seen.contains(&3))
    {
        return Err("write-replace without its mandatory IEs".into());
    }
    Ok(req)
}

/// ```text
/// Warning-Area-List ::= CHOICE { cell-ID-List ECGIList, tracking-Area-List-for-Warning, emergency-Area-ID-List, ... }
/// ECGIList ::= SEQUENCE (SIZE (1..65535)) OF EUTRAN-CGI
/// EUTRAN-CGI ::= SEQUENCE { pLMNidentity OCTET STRING (SIZE (3)), cell-ID BIT STRING (SIZE (28)),
///                           iE-Extensions OPTIONAL, ... }
/// ```
fn warning_area(b: &mut Bits<'_>) -> Result<Vec<CellId>, String> {
    if b.bit()? != 0 {
        return Err("extension warning area".into());
    }
    if b.bits(2)? != 0 {
        return Err("only cell lists are modelled".into());
    }
    let n = b.constrained(1, 65535)?;
    let mut cells = Vec::new();
    for _ in 0..n {
        let _extension = b.bit()?;
        if b.bit()? != 0 {
            return Err("ECGI extensions".into());
        }
        let p = b.octets(3)?;
        // A fixed-size bit string longer than 16 bits is octet-aligned (X.691 §16.10).
        b.align();
        let eci = b.bits(28)? as u32;
        cells.push(CellId { plmn: plmn(&p), eci });
    }
    Ok(cells)
}

/// Hex → bytes.
pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex")).collect()
}

/// A cell site row: its identity and tracking area.
#[derive(Debug, Clone)]
pub struct Site {
    pub cell: CellId,
    pub tac: u16,
}

/// The cells of `config/cell_sites.csv`.
pub fn sites() -> Vec<Site> {
    let text = include_str!("../../config/cell_sites.csv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("carrier,"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some(Site {
                cell: CellId { plmn: format!("{}-{}", f.get(1)?, f.get(2)?), eci: f.get(3)?.parse().ok()? },
                tac: f.get(4)?.parse().ok()?,
            })
        })
        .collect()
}

/// A warning a cell broadcasts.
#[derive(Debug, Clone, PartialEq)]
pub struct OnAir {
    pub message_id: u16,
    pub serial: u16,
    pub tag: String,
    /// When the cell began (ms of the model's clock) and how long it goes on (None: until stopped).
    pub started_ms: i64,
    pub until_ms: Option<i64>,
}

/// Every eNB cell of the model and what each broadcasts.
#[derive(Debug, Default)]
pub struct Air {
    pub tac: BTreeMap<CellId, u16>,
    pub cells: BTreeMap<CellId, Vec<OnAir>>,
    /// Requests naming a cell no eNB has (a targeting error a real MME would report as unknown).
    pub unknown_cells: Vec<CellId>,
    /// Write-replaces that changed nothing because the cell already broadcast that identifier and serial.
    pub ignored_repeats: usize,
}

impl Air {
    pub fn new(sites: &[Site]) -> Air {
        Air {
            tac: sites.iter().map(|s| (s.cell.clone(), s.tac)).collect(),
            cells: sites.iter().map(|s| (s.cell.clone(), Vec::new())).collect(),
            ..Air::default()
        }
    }

    /// Applies one request at `now_ms`, as every eNB of the listed cells does (TS 36.413 §8.12.1.2, §8.12.2.2).
    pub fn apply(&mut self, req: &Request, tag: &str, now_ms: i64) {
        self.expire(now_ms);
        let cells: Vec<CellId> = match &req.cells {
            Some(list) => list.clone(),
            None => self.cells.keys().cloned().collect(),
        };
        for cell in cells {
            let Some(air) = self.cells.get_mut(&cell) else {
                self.unknown_cells.push(cell);
                continue;
            };
            let same = |b: &OnAir| b.message_id == req.message_id && b.serial == req.serial;
            match req.procedure {
                Procedure::WriteReplace => {
                    if air.iter().any(same) {
                        self.ignored_repeats += 1;
                        continue;
                    }
                    if !req.concurrent {
                        air.clear();
                    }
                    let period = i64::from(req.repetition_period.unwrap_or(0));
                    let until_ms = match req.number_of_broadcasts.unwrap_or(1) {
                        0 => None,
                        n => Some(now_ms + i64::from(n.max(1) - 1) * period * 1000 + 1),
                    };
                    air.push(OnAir {
                        message_id: req.message_id,
                        serial: req.serial,
                        tag: tag.to_string(),
                        started_ms: now_ms,
                        until_ms,
                    });
                }
                Procedure::Stop => air.retain(|b| !same(b)),
            }
        }
    }

    /// Broadcasts whose requested number of repetitions is done.
    pub fn expire(&mut self, now_ms: i64) {
        for air in self.cells.values_mut() {
            air.retain(|b| b.until_ms.is_none_or(|u| u > now_ms));
        }
    }

    /// Every (cell, broadcast) on the air.
    pub fn on_air(&self) -> Vec<(CellId, OnAir)> {
        self.cells.iter().flat_map(|(c, v)| v.iter().map(move |b| (c.clone(), b.clone()))).collect()
    }
}

/// The language a handset shows, which picks the channels it listens to (Taiwan PWS: Chinese 911 and 4370..=4382,
/// English 919 and the additional-language identifiers 4383..=4395 of TS 23.041 Table 9.4.1.2.2-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Chinese,
    English,
}

impl Language {
    pub fn listens(self, message_id: u16) -> bool {
        match self {
            Language::Chinese => message_id == 911 || (4370..=4382).contains(&message_id),
            Language::English => message_id == 919 || (4383..=4395).contains(&message_id),
        }
    }
}

/// Where TS 23.041 §8.2 says a serial number's message code is unique: by its geographical scope (bits 15-14).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Location {
    Cell { plmn: String, tac: u16, eci: u32 },
    TrackingArea { plmn: String, tac: u16 },
    Plmn(String),
}

/// One message a phone showed.
#[derive(Debug, Clone, PartialEq)]
pub struct Display {
    pub message_id: u16,
    pub serial: u16,
    pub tag: String,
    pub cell: CellId,
    pub at_ms: i64,
}

/// A handset of one carrier.
#[derive(Debug, Clone)]
pub struct Phone {
    pub plmn: String,
    pub language: Language,
    pub cell: Option<CellId>,
    /// (message identifier, serial number, location) of everything received.
    seen: BTreeSet<(u16, u16, Location)>,
    pub displays: Vec<Display>,
    /// Tags of every broadcast in its language its cell carried while it listened (shown or not).
    pub exposed: BTreeSet<String>,
}

impl Phone {
    pub fn new(plmn: &str, language: Language) -> Phone {
        Phone {
            plmn: plmn.into(),
            language,
            cell: None,
            seen: BTreeSet::new(),
            displays: Vec::new(),
            exposed: BTreeSet::new(),
        }
    }

    /// Camps on `cell` (of its own PLMN) and receives what it broadcasts.
    pub fn camp(&mut self, cell: &CellId, air: &Air, now_ms: i64) {
        assert_eq!(cell.plmn, self.plmn, "a phone camps on its own carrier's cells");
        self.cell = Some(cell.clone());
        self.listen(air, now_ms);
    }

    /// Receives what its cell broadcasts now; shows what is not a duplicate.
    pub fn listen(&mut self, air: &Air, now_ms: i64) {
        let Some(cell) = self.cell.clone() else { return };
        let tac = air.tac.get(&cell).copied().unwrap_or(0);
        for b in air.cells.get(&cell).into_iter().flatten() {
            if !self.language.listens(b.message_id) || b.until_ms.is_some_and(|u| u <= now_ms) {
                continue;
            }
            self.exposed.insert(b.tag.clone());
            let location = match b.serial >> 14 {
                1 => Location::Plmn(cell.plmn.clone()),
                2 => Location::TrackingArea { plmn: cell.plmn.clone(), tac },
                _ => Location::Cell { plmn: cell.plmn.clone(), tac, eci: cell.eci },
            };
            if self.seen.insert((b.message_id, b.serial, location)) {
                self.displays.push(Display {
                    message_id: b.message_id,
                    serial: b.serial,
                    tag: b.tag.clone(),
                    cell: cell.clone(),
                    at_ms: now_ms,
                });
            }
        }
    }

    /// Displays per tag (hazard).
    pub fn per_tag(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for d in &self.displays {
            *out.entry(d.tag.clone()).or_insert(0) += 1;
        }
        out
    }
}

/// One envelope a CBC adapter accepted (answered 2xx).
#[derive(Debug, Clone)]
pub struct Received {
    /// The path it was posted to (`/cbc/cht`).
    pub path: String,
    pub body: serde_json::Value,
    pub at_ms: i64,
}

/// Stand-ins for the carriers' CBC adapters on 127.0.0.1, outside the server (so they outlive a SIGKILL of it):
/// they keep every envelope in the order they accepted it, and can be made to refuse (503) for a while.
pub struct CbcReceiver {
    pub addr: std::net::SocketAddr,
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CbcReceiver {
    pub async fn start() -> CbcReceiver {
        use axum::{extract::State, http::StatusCode, routing::post, Router};
        type Shared = (std::sync::Arc<std::sync::Mutex<Vec<Received>>>, std::sync::Arc<std::sync::atomic::AtomicBool>);
        async fn accept(State((received, failing)): State<Shared>, uri: axum::http::Uri, body: String) -> StatusCode {
            if failing.load(std::sync::atomic::Ordering::SeqCst) {
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            let Ok(body) = serde_json::from_str(&body) else { return StatusCode::BAD_REQUEST };
            received.lock().unwrap().push(Received { path: uri.path().to_string(), body, at_ms: super::now_ms() });
            StatusCode::OK
        }
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let app = Router::new().route("/cbc/{carrier}", post(accept)).with_state((received.clone(), failing.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        CbcReceiver { addr, received, failing }
    }

    pub fn url(&self, carrier: &str) -> String {
        format!("http://{}/cbc/{carrier}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// While true, every envelope is answered 503 (and so retried by the server).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `config_copy` whose carriers deliver to `receiver` instead of the demo's stand-ins.
pub fn config_with_receiver(name: &str, receiver: &CbcReceiver) -> std::path::PathBuf {
    let main = super::config_copy(name, |t| t);
    let dissemination = main.with_file_name("dissemination.toml");
    let text = std::fs::read_to_string(&dissemination).unwrap();
    let text = text.replace("{public_url}/demo/cbc/", &format!("http://{}/cbc/", receiver.addr));
    std::fs::write(&dissemination, text).unwrap();
    main
}

/// What the model saw when fed every accepted envelope in order.
pub struct Replay {
    pub air: Air,
    /// One phone per cell any write named, per language, camped there throughout.
    pub staying: Vec<Phone>,
    /// One phone per carrier and language that drives through every such cell of its carrier after each envelope.
    pub driving: Vec<Phone>,
    /// Every PDU, for tshark.
    pub pdus: Vec<Vec<u8>>,
    /// Per tag: the distinct (PLMN, message identifier, serial) written on the Chinese channel: broadcasts.
    pub broadcasts: BTreeMap<String, BTreeSet<(String, u16, u16)>>,
    /// Requests the decoder refused, with why.
    pub undecodable: Vec<String>,
}

/// Feeds `received` (in acceptance order) through the eNBs of `sites`, with phones listening after each envelope.
pub fn replay(received: &[Received], sites: &[Site]) -> Replay {
    if let Ok(path) = std::env::var("AIR_DUMP") {
        let lines: Vec<String> = received
            .iter()
            .map(|r| {
                let mut b = r.body.clone();
                b["cap_xml"] = serde_json::Value::Null;
                for p in b["pws"].as_array_mut().into_iter().flatten() {
                    p["pages_hex"] = serde_json::Value::Null;
                    p["lte_content_hex"] = serde_json::Value::Null;
                }
                format!("{} {} {b}", r.at_ms, r.path)
            })
            .collect();
        let _ = std::fs::write(path, lines.join("\n"));
    }
    let mut decoded = Vec::new();
    let mut undecodable = Vec::new();
    let mut pdus = Vec::new();
    for r in received {
        let tag = r.body["alert"]["id"].as_str().unwrap_or("?").to_string();
        let mut reqs = Vec::new();
        for pws in r.body["pws"].as_array().into_iter().flatten() {
            let bytes = unhex(pws["sbcap_pdu_hex"].as_str().unwrap_or(""));
            match decode(&bytes) {
                Ok(req) => reqs.push(req),
                Err(e) => undecodable.push(format!("{tag}: {e}")),
            }
            pdus.push(bytes);
        }
        decoded.push((tag, r.at_ms, reqs));
    }
    // The area: every cell a write named, per carrier (PLMN).
    let mut area: BTreeMap<String, BTreeSet<CellId>> = BTreeMap::new();
    let mut broadcasts: BTreeMap<String, BTreeSet<(String, u16, u16)>> = BTreeMap::new();
    for (tag, _, reqs) in &decoded {
        for req in reqs.iter().filter(|r| r.procedure == Procedure::WriteReplace) {
            for c in req.cells.iter().flatten() {
                area.entry(c.plmn.clone()).or_default().insert(c.clone());
                if Language::Chinese.listens(req.message_id) {
                    broadcasts.entry(tag.clone()).or_default().insert((c.plmn.clone(), req.message_id, req.serial));
                }
            }
        }
    }
    let languages = [Language::Chinese, Language::English];
    let mut staying: Vec<Phone> = area
        .values()
        .flatten()
        .flat_map(|c| {
            languages.map(|l| {
                let mut p = Phone::new(&c.plmn, l);
                p.cell = Some(c.clone());
                p
            })
        })
        .collect();
    let mut driving: Vec<Phone> = area.keys().flat_map(|plmn| languages.map(|l| Phone::new(plmn, l))).collect();
    let mut air = Air::new(sites);
    for (tag, at_ms, reqs) in &decoded {
        for req in reqs {
            air.apply(req, tag, *at_ms);
        }
        for p in &mut staying {
            p.listen(&air, *at_ms);
        }
        for p in &mut driving {
            for cell in area.get(&p.plmn).into_iter().flatten() {
                p.camp(cell, &air, *at_ms);
            }
        }
    }
    Replay { air, staying, driving, pdus, broadcasts, undecodable }
}

/// Wireshark's SBc-AP dissector over every PDU: each must decode as an SBc-AP request without a malformed-packet
/// or error expert item. Returns the problems found (empty: all decode).
pub fn tshark_problems(pdus: &[Vec<u8>]) -> Vec<String> {
    if pdus.is_empty() {
        return Vec::new();
    }
    let dir = std::env::temp_dir().join(format!("dc-air-tshark-{}-{}", std::process::id(), super::now_ms()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut hex = String::new();
    for p in pdus {
        for (i, line) in p.chunks(16).enumerate() {
            hex.push_str(&format!("{:06x}", i * 16));
            for b in line {
                hex.push_str(&format!(" {b:02x}"));
            }
            hex.push('\n');
        }
    }
    std::fs::write(dir.join("in.txt"), hex).unwrap();
    let status = std::process::Command::new("text2pcap")
        .args(["-q", "-S", "29168,29168,24"])
        .arg(dir.join("in.txt"))
        .arg(dir.join("p.pcap"))
        .output()
        .expect("text2pcap (apt-get install tshark)");
    assert!(status.status.success(), "text2pcap: {}", String::from_utf8_lossy(&status.stderr));
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(dir.join("p.pcap"))
        .args(["-T", "fields", "-E", "separator=|", "-e", "frame.number", "-e", "sbc-ap.procedureCode"])
        .args(["-e", "sbc-ap.Message_Identifier", "-e", "_ws.malformed", "-e", "_ws.expert.severity"])
        .output()
        .expect("tshark (apt-get install tshark)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut problems = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() != pdus.len() {
        problems.push(format!("{} packets read back of {}", lines.len(), pdus.len()));
    }
    for line in lines {
        let f: Vec<&str> = line.split('|').collect();
        let bad = f.get(1).is_none_or(|p| p.is_empty())
            || f.get(2).is_none_or(|m| m.is_empty())
            || f.get(3).is_some_and(|m| !m.is_empty())
            || f.get(4).is_some_and(|s| !s.is_empty());
        if bad {
            problems.push(format!("frame: {line}"));
        }
    }
    problems
}
