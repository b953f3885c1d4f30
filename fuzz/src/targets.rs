//! One function per fuzz target. Each takes the raw fuzzer input, calls the real library function, and asserts what
//! must hold for any input. A panic (assertion or otherwise) is what libFuzzer reports as a crash.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use encoders::cap::{self, CapAlert, ParseLimits, Templates};
use encoders::cell_broadcast::dcs::Alphabet;
use encoders::cell_broadcast::{
    self as cbs, lte, pages, CbsError, CellBroadcast, Coding, Schedule, WarningArea, PAGE_OCTETS,
};
use arbitrary::Unstructured;
use geo_index::{GeoIndex, LoadPolicy, Resolution};
use ingest::payload::Limits;
use ingest::topic::{self, TopicKind};
use ingest::{Ingest, IngestConfig, RawMessage, SensorRegistry};
use parking_lot::RwLock;

use crate::aper::BitReader;
use crate::gen;

/// The clock every target runs at: ten minutes after the examples of `docs/PAYLOADS.md` (2025-11-26 10:00 +08:00),
/// so those examples are accepted and replays are deterministic.
pub const NOW_MS: i64 = 1_764_123_000_000;

/// The H3 resolution of `config/disaster-cloud.toml`.
const RESOLUTION: Resolution = Resolution::Nine;

fn utf8(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Open findings (README.md, "Findings") are real bugs in the crates under test. So that a target keeps exploring
/// past them, the check that caught each is relaxed to exactly the known symptom — unless `FUZZ_STRICT` is set in the
/// environment, which restores the full check (the replay of `artifacts/` sets it; so should a fix's author).
/// No finding is open now (F1–F5 are fixed), so no check is relaxed.
pub fn strict() -> bool {
    std::env::var_os("FUZZ_STRICT").is_some()
}

// ------------------------------------------------------------------------------------------------------- ingest

/// `ingest::topic::parse`: whatever it accepts names a valid device id and round-trips through `readings_topic`.
pub fn ingest_topic(data: &[u8]) {
    let Some(text) = utf8(data) else { return };
    let Some(parsed) = topic::parse(text) else { return };
    assert!(topic::is_valid_device_id(parsed.device_id), "accepted device id {:?}", parsed.device_id);
    let leaf = match parsed.kind {
        TopicKind::Readings => "/readings",
        TopicKind::Status => "/status",
    };
    assert!(text.ends_with(leaf), "{text:?} parsed as {:?}", parsed.kind);
    if parsed.kind == TopicKind::Readings {
        let canonical = topic::readings_topic(parsed.device_id);
        assert_eq!(topic::parse(&canonical), Some(parsed), "{text:?} → {canonical:?}");
    }
}

/// `ingest::payload::decode_readings` with the default limits and with a tiny batch limit.
pub fn ingest_payload(data: &[u8]) {
    for limits in [Limits::default(), Limits { max_payload_bytes: 64 * 1024, max_batch: 2 }] {
        if let Ok(sets) = ingest::payload::decode_readings(data, limits, NOW_MS) {
            assert!(!sets.is_empty(), "an accepted payload has at least one set (F1)");
            assert!(sets.len() <= limits.max_batch.max(1) || data.first() != Some(&b'['), "batch limit ignored");
            assert!(data.len() <= limits.max_payload_bytes);
        }
    }
}

fn registry() -> Arc<RwLock<SensorRegistry>> {
    static REGISTRY: OnceLock<Arc<RwLock<SensorRegistry>>> = OnceLock::new();
    REGISTRY
        .get_or_init(|| {
            let text = include_str!("../../config/sensors.toml");
            let registry =
                SensorRegistry::from_toml(text, Path::new("config/sensors.toml")).expect("config/sensors.toml loads");
            Arc::new(RwLock::new(registry))
        })
        .clone()
}

/// The whole `Ingest::process` on the demo registry. Input: the topic, a newline, the payload.
pub fn ingest_process(data: &[u8]) {
    let (topic_bytes, payload) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let topic_text = String::from_utf8_lossy(topic_bytes).into_owned();
    const CAPACITY: usize = 4;
    let ingest = Ingest::new(registry(), IngestConfig { dead_letter_capacity: CAPACITY, ..IngestConfig::default() });
    let msg = RawMessage { topic: topic_text.clone(), payload: bytes::Bytes::copy_from_slice(payload) };
    let out = ingest.process(&msg, NOW_MS);
    let letters = ingest.dead_letters();
    // Every publish has an outcome: readings, a status, or a counted refusal with a dead letter.
    assert!(
        !out.readings.is_empty() || out.status.is_some() || out.rejected > 0,
        "publish vanished: no reading, no status, no refusal (F1)"
    );
    assert_eq!(letters.len(), out.rejected.min(CAPACITY), "one dead letter per refusal, bounded");
    for letter in &letters {
        assert!(letter.topic.chars().count() <= 256);
        assert_eq!(letter.payload_bytes, payload.len());
    }
    if !out.readings.is_empty() || out.status.is_some() {
        let parsed = topic::parse(&topic_text).expect("output only for a valid topic");
        for r in &out.readings {
            assert_eq!(r.sensor_id, parsed.device_id);
            assert!(r.value.is_finite(), "{r:?}");
        }
    }
}

/// `SensorRegistry::from_toml` (`config/sensors.toml`).
pub fn ingest_sensors_toml(data: &[u8]) {
    let Some(text) = utf8(data) else { return };
    if let Ok(registry) = SensorRegistry::from_toml(text, Path::new("sensors.toml")) {
        for sensor in registry.iter() {
            assert!(sensor.check().is_ok(), "loaded a sensor that fails its own check: {}", sensor.id);
        }
    }
}

/// `DeviceStore::from_toml` (`config/devices.toml`). Plaintext passwords are argon2-hashed on load, so inputs with
/// many `password` entries are slow (tens of ms each): that is the real cost of the real function.
pub fn ingest_devices_toml(data: &[u8]) {
    let Some(text) = utf8(data) else { return };
    if let Ok(store) = ingest::devices::DeviceStore::from_toml(text, Path::new("devices.toml")) {
        for id in store.device_ids() {
            assert!(topic::is_valid_device_id(&id), "stored device id {id:?}");
            assert!(store.record(&id).is_some());
        }
    }
}

// ------------------------------------------------------------------------------------------------------ alerting

/// `RuleSet::from_toml` (`config/rules.toml`).
pub fn alerting_rules_toml(data: &[u8]) {
    let Some(text) = utf8(data) else { return };
    let _ = alerting::RuleSet::from_toml(text, Path::new("rules.toml"));
}

/// Equal content, and every time keeps its offset (`OffsetDateTime` equality compares instants only).
fn assert_same_alert(a: &CapAlert, b: &CapAlert, xml: &str) {
    assert_eq!(a, b, "CAP round trip changed the message; XML:\n{xml}");
    let offsets = |m: &CapAlert| {
        let mut v = vec![m.sent.offset()];
        v.extend(m.references.iter().map(|r| r.sent.offset()));
        for i in &m.infos {
            v.extend([i.effective, i.onset, i.expires].into_iter().flatten().map(|t| t.offset()));
        }
        v
    };
    assert_eq!(offsets(a), offsets(b), "CAP round trip changed a UTC offset; XML:\n{xml}");
}

/// `cap::parse_alert_with` on any bytes (inbound CAP from partners). What it accepts our writer must be able to
/// write, and that output must read back to the same message.
pub fn alerting_cap_parse(data: &[u8]) {
    let _ = cap::parse_alert_with(data, &ParseLimits { max_bytes: 4096, max_depth: 4 });
    let Ok(alert) = cap::parse_alert_with(data, &ParseLimits::default()) else { return };
    let xml = cap::write_alert(&alert).unwrap_or_else(|e| panic!("parsed message is not writable: {e}\n{alert:?}"));
    let back = cap::parse_alert(xml.as_bytes()).unwrap_or_else(|e| panic!("our own XML does not parse: {e}\n{xml}"));
    assert_same_alert(&alert, &back, &xml);
}

fn templates() -> &'static (Templates, Vec<String>) {
    static TEMPLATES: OnceLock<(Templates, Vec<String>)> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let t = Templates::from_toml_str(include_str!("../../config/cap_templates.toml"))
            .expect("config/cap_templates.toml loads");
        let events = t.event_types().map(str::to_string).collect();
        (t, events)
    })
}

/// CAP encoder round trip. First byte even: an arbitrary `CapAlert` → `write_alert` → `parse_alert` → the same
/// message. Odd: an arbitrary `CapInput` → `build_alert` (shipped templates) → write → parse → the same message.
/// Messages the writer or builder refuses are skipped.
pub fn alerting_cap_roundtrip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(build) = u.arbitrary::<bool>() else { return };
    let alert = if build {
        let (templates, events) = templates();
        let Ok(input) = gen::cap_input(&mut u, events) else { return };
        match cap::build_alert(&input, templates) {
            Ok(alert) => {
                let xml = cap::write_alert(&alert).unwrap_or_else(|e| panic!("built message is not writable: {e}"));
                (alert, xml)
            }
            Err(_) => return,
        }
    } else {
        let Ok(alert) = gen::cap_alert(&mut u) else { return };
        match cap::write_alert(&alert) {
            Ok(xml) => (alert, xml),
            Err(_) => return,
        }
    };
    let (alert, xml) = alert;
    let back = cap::parse_alert(xml.as_bytes()).unwrap_or_else(|e| panic!("our own XML does not parse: {e}\n{xml}"));
    assert_same_alert(&alert, &back, &xml);
}

/// Checks an encoded broadcast against the text it was made from, through both of our decoders.
fn check_broadcast(cb: &CellBroadcast, text: &str) {
    assert!((1..=cbs::MAX_PAGES).contains(&cb.pages.len()), "{} pages", cb.pages.len());
    assert_eq!(cb.dcs, cb.coding.dcs());
    // Accepted text has no CR (the padding; finding F2, fixed by refusing it), so it comes back exactly.
    let expected = text;
    let decoded =
        pages::decode_pages(&cb.page_bytes()).unwrap_or_else(|e| panic!("our pages do not decode: {e}; text {text:?}"));
    assert!(
        decoded.text == expected,
        "88-octet pages changed the text; coding {:?}\n decoded: {:?}\nexpected: {expected:?}",
        cb.coding,
        decoded.text
    );
    assert_eq!(decoded.serial, cb.serial);
    assert_eq!(decoded.message_id, cb.message_id);
    assert_eq!(decoded.dcs, cb.dcs);
    if let Coding::Ucs2WithLanguage(lang) = cb.coding {
        assert_eq!(decoded.language.as_deref().map(str::as_bytes), Some(&lang[..]));
    }
    let lte = lte::decode_warning_message_content(cb.dcs, &cb.warning_message_content())
        .unwrap_or_else(|e| panic!("our LTE content does not decode: {e}; text {text:?}"));
    assert!(
        lte == expected,
        "LTE content changed the text; coding {:?}\n decoded: {lte:?}\nexpected: {expected:?}",
        cb.coding
    );
}

/// `cell_broadcast::encode_broadcast` (and `encode_with_coding` for UCS-2 with and without a language) → our page
/// decoder and our LTE-content decoder → the same text; refusals only for the documented reasons.
pub fn alerting_cbs_roundtrip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((class, language, serial, mode)) = (|| {
        Ok::<_, arbitrary::Error>((
            gen::pws_class(&mut u)?,
            gen::language_channel(&mut u)?,
            gen::serial(&mut u)?,
            u.int_in_range(0..=3u8)?,
        ))
    })() else {
        return;
    };
    let Ok(text) = gen::cbs_text(&mut u, 700) else { return };
    let result = match mode {
        0 | 1 => cbs::encode_broadcast(class, language, serial, &text),
        2 => cbs::encode_with_coding(911, serial, Coding::Ucs2, &text),
        _ => {
            let lang = [b'a' + (serial.to_u16() % 26) as u8, b'a' + (serial.to_u16() / 26 % 26) as u8];
            cbs::encode_with_coding(4370, serial, Coding::Ucs2WithLanguage(lang), &text)
        }
    };
    match result {
        Ok(cb) => check_broadcast(&cb, &text),
        Err(CbsError::TooLong { pages, length, limit, .. }) => {
            assert!(pages > cbs::MAX_PAGES && length > limit, "TooLong with {pages} pages, {length}/{limit}")
        }
        Err(CbsError::EmptyText) => assert!(text.is_empty()),
        Err(CbsError::CarriageReturn { position }) => {
            assert_eq!(text.chars().position(|c| c == '\r'), Some(position), "CR refused at the wrong position")
        }
        Err(CbsError::Unencodable { ch, coding, .. }) => {
            assert!(coding != "UCS-2" || u32::from(ch) > 0xFFFF, "{ch:?} refused by {coding}");
            assert!(mode >= 2 || u32::from(ch) > 0xFFFF, "auto coding refused {ch:?}");
        }
        Err(CbsError::EmergencyLevel(n)) => assert!(n > cbs::pws::MAX_EMERGENCY),
        Err(e) => panic!("unexpected refusal {e:?} for {text:?}"),
    }
}

/// Our CBS decoders on any bytes (what a tshark-free test or a monitoring tap would feed them): no panics.
pub fn alerting_cbs_decode(data: &[u8]) {
    let pages: Vec<[u8; PAGE_OCTETS]> =
        data.chunks_exact(PAGE_OCTETS).map(|c| c.try_into().expect("chunks_exact")).collect();
    let _ = pages::decode_pages(&pages);
    if let Some((&dcs, rest)) = data.split_first() {
        let _ = lte::decode_warning_message_content(dcs, rest);
        if let Ok(alphabet) = Alphabet::from_dcs(dcs) {
            let _ = pages::decode_content(alphabet, rest);
        }
    }
}

/// One protocol IE as read back: (id, criticality, value).
type Ie = (u64, u64, Vec<u8>);

/// Walks a PDU written by `sbcap`: the SBC-AP-PDU header, the open type around the request, the IE container, and
/// each IE's open type. Returns `(procedure, [(id, criticality, value)])`, or the step that did not add up.
fn read_sbcap(pdu: &[u8]) -> Result<(u64, Vec<Ie>), &'static str> {
    let mut r = BitReader::new(pdu);
    if r.bits(3) != Some(0) {
        return Err("PDU: extension bit / initiatingMessage index");
    }
    r.align().ok_or("PDU: padding before procedureCode")?;
    let procedure = r.bits(8).ok_or("PDU: procedureCode")?;
    if r.bits(2) != Some(0) {
        return Err("PDU: criticality is not reject");
    }
    let body = r.open_type().ok_or("PDU: open type length")?;
    if !r.at_end() {
        return Err("PDU: bytes after the open type");
    }
    let mut b = BitReader::new(&body);
    if b.bits(2) != Some(0) {
        return Err("request: extension / optional bits");
    }
    b.align().ok_or("request: padding")?;
    let count = b.bits(16).ok_or("request: IE count")?;
    let mut ies = Vec::new();
    for _ in 0..count {
        b.align().ok_or("IE: padding")?;
        let id = b.bits(16).ok_or("IE: id")?;
        let crit = b.bits(2).ok_or("IE: criticality")?;
        let value = b.open_type().ok_or("IE: open type length")?;
        ies.push((id, crit, value));
    }
    if !b.at_end() {
        return Err("request: bytes after the last IE");
    }
    Ok((procedure, ies))
}

/// Decodes a Warning-Area-List IE value back to the area it was written from.
fn read_area(value: &[u8]) -> Option<WarningArea> {
    use encoders::cell_broadcast::{Ecgi, Plmn, Tai};
    let mut r = BitReader::new(value);
    if r.bits(1)? != 0 {
        return None;
    }
    let index = r.bits(2)?;
    r.align()?;
    let count = r.bits(16)? as usize + 1;
    // Plmn has no constructor from octets; compare through `octets()` instead.
    let plmn_of = |o: &[u8]| -> Option<Plmn> {
        let digit = |n: u8| (n <= 9).then(|| char::from(b'0' + n));
        let mcc: String = [digit(o[0] & 0xF)?, digit(o[0] >> 4)?, digit(o[1] & 0xF)?].iter().collect();
        let mut mnc: String = [digit(o[2] & 0xF)?, digit(o[2] >> 4)?].iter().collect();
        if o[1] >> 4 != 0xF {
            mnc.push(digit(o[1] >> 4)?);
        }
        Plmn::new(&mcc, &mnc).ok().filter(|p| p.octets() == o)
    };
    let area = match index {
        0 => {
            let mut cells = Vec::with_capacity(count);
            for _ in 0..count {
                if r.bits(2)? != 0 {
                    return None;
                }
                let plmn = plmn_of(r.octets(3)?)?;
                let cell_id = r.bits(28)? as u32;
                cells.push(Ecgi { plmn, cell_id });
            }
            WarningArea::Cells(cells)
        }
        1 => {
            let mut tais = Vec::with_capacity(count);
            for _ in 0..count {
                if r.bits(1)? != 0 {
                    return None;
                }
                let plmn = plmn_of(r.octets(3)?)?;
                let tac = r.bits(16)? as u16;
                tais.push(Tai { plmn, tac });
            }
            WarningArea::TrackingAreas(tais)
        }
        2 => {
            let mut ids = Vec::with_capacity(count);
            for _ in 0..count {
                ids.push(r.octets(3)?.try_into().ok()?);
            }
            WarningArea::EmergencyAreas(ids)
        }
        _ => return None,
    };
    r.at_end().then_some(area)
}

/// Checks the IEs common to both requests and returns the rest.
fn check_common_ies<'a>(ies: &'a [Ie], message_id: u16, serial: u16, area: &WarningArea) -> &'a [Ie] {
    assert!(ies.len() >= 2, "fewer than 2 IEs");
    assert_eq!((ies[0].0, ies[0].1, &ies[0].2[..]), (5, 0, &message_id.to_be_bytes()[..]), "Message-Identifier");
    assert_eq!((ies[1].0, ies[1].1, &ies[1].2[..]), (11, 0, &serial.to_be_bytes()[..]), "Serial-Number");
    let rest = &ies[2..];
    match area {
        WarningArea::WholeNetwork => {
            assert!(rest.iter().all(|ie| ie.0 != 15), "Warning-Area-List sent for the whole network");
            rest
        }
        _ => {
            assert_eq!((rest.first().map(|ie| (ie.0, ie.1))), Some((15, 1)), "Warning-Area-List missing");
            let back = read_area(&rest[0].2);
            assert!(back.as_ref() == Some(area), "Warning-Area-List does not decode to the area written");
            &rest[1..]
        }
    }
}

/// Why an SBc-AP request must be refused, if it must.
fn area_refusal(area: &WarningArea) -> Option<CbsError> {
    let n = match area {
        WarningArea::WholeNetwork => return None,
        WarningArea::Cells(v) => v.len(),
        WarningArea::TrackingAreas(v) => v.len(),
        WarningArea::EmergencyAreas(v) => v.len(),
    };
    if n == 0 {
        return Some(CbsError::EmptyWarningArea);
    }
    if n > 65_535 {
        return Some(CbsError::TooManyAreas { count: n, limit: 65_535 });
    }
    if let WarningArea::Cells(cells) = area {
        if let Some(c) = cells.iter().find(|c| c.cell_id >= 1 << 28) {
            return Some(CbsError::CellId(c.cell_id));
        }
    }
    None
}

/// SBc-AP: Write-Replace-Warning-Request and Stop-Warning-Request from a fuzzed broadcast (encoded, or hand-built with
/// any page count), area and schedule. The encoder must not panic; it refuses exactly the documented cases; every
/// length in an accepted PDU adds up, each IE holds what was given, the area and the warning text decode back.
pub fn alerting_sbcap_encode(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let parts = (|| {
        let class = gen::pws_class(&mut u)?;
        let language = gen::language_channel(&mut u)?;
        let serial = gen::serial(&mut u)?;
        let text = gen::cbs_text(&mut u, 120)?;
        let hand_built_pages = if u.ratio(1u8, 8)? { Some(u.int_in_range(0..=17usize)?) } else { None };
        let area = gen::warning_area(&mut u)?;
        let schedule = Schedule { repetition_period_s: u.arbitrary()?, number_of_broadcasts: u.arbitrary()? };
        let schedule = if u.arbitrary::<bool>()? {
            Schedule { repetition_period_s: schedule.repetition_period_s % 4097, ..schedule }
        } else {
            schedule
        };
        Ok::<_, arbitrary::Error>((class, language, serial, text, hand_built_pages, area, schedule))
    })();
    let Ok((class, language, serial, text, hand_built_pages, area, schedule)) = parts else { return };
    let Ok(mut cb) = cbs::encode_broadcast(class, language, serial, &text) else { return };
    let mut text_survives = true;
    if let Some(n) = hand_built_pages {
        // `CellBroadcast` has public fields: a caller can hand over any page count.
        let page = cb.pages[0];
        cb.pages = vec![page; n];
        text_survives = false;
    }

    // Stop-Warning-Request.
    let stop = cbs::stop_warning_request(cb.message_id, cb.serial, &area);
    match (stop, area_refusal(&area)) {
        (Err(e), Some(expected)) => assert_eq!(e, expected),
        (Err(e), None) => panic!("stop request refused: {e}"),
        (Ok(_), Some(expected)) => panic!("stop request accepted; expected {expected}"),
        (Ok(pdu), None) => {
            let (procedure, ies) = read_sbcap(&pdu).unwrap_or_else(|step| panic!("stop PDU: {step}"));
            assert_eq!(procedure, 1);
            let rest = check_common_ies(&ies, cb.message_id, cb.serial.to_u16(), &area);
            assert!(rest.is_empty(), "stop request has extra IEs");
        }
    }

    // Write-Replace-Warning-Request.
    let written = cbs::write_replace_warning_request(&cb, &area, schedule);
    let (period, count) = (schedule.repetition_period_s, schedule.number_of_broadcasts);
    let refusal = if cb.pages.is_empty() || cb.pages.len() > cbs::MAX_PAGES {
        Some("pages")
    } else if period > 4095 {
        Some("period")
    } else if period == 0 && count != 1 {
        Some("schedule")
    } else if area_refusal(&area).is_some() {
        Some("area")
    } else {
        None
    };
    let pdu = match (written, refusal) {
        (Err(_), Some(_)) => return,
        (Err(e), None) => panic!("write-replace refused: {e}"),
        (Ok(_), Some(why)) => panic!("write-replace accepted a bad {why}"),
        (Ok(pdu), None) => pdu,
    };
    let (procedure, ies) = read_sbcap(&pdu).unwrap_or_else(|step| panic!("write-replace PDU: {step}"));
    assert_eq!(procedure, 0);
    let rest = check_common_ies(&ies, cb.message_id, cb.serial.to_u16(), &area);
    let ids: Vec<(u64, u64)> = rest.iter().map(|ie| (ie.0, ie.1)).collect();
    assert_eq!(ids, [(10, 0), (7, 0), (3, 1), (16, 1), (20, 0)], "write-replace IEs");
    assert_eq!(rest[0].2, period.to_be_bytes(), "Repetition-Period");
    assert_eq!(rest[1].2, count.to_be_bytes(), "Number-of-Broadcasts-Requested");
    assert_eq!(rest[2].2, [cb.dcs], "Data-Coding-Scheme");
    assert_eq!(rest[4].2, [0], "Concurrent-Warning-Message-Indicator");
    let content_ie = &rest[3].2;
    let content = cb.warning_message_content();
    assert_eq!(content_ie.len(), 2 + content.len(), "Warning-Message-Content length");
    assert_eq!(usize::from(u16::from_be_bytes([content_ie[0], content_ie[1]])) + 1, content.len());
    assert_eq!(&content_ie[2..], &content[..], "Warning-Message-Content");
    if text_survives {
        let back = lte::decode_warning_message_content(cb.dcs, &content_ie[2..])
            .unwrap_or_else(|e| panic!("warning message content does not decode: {e}"));
        assert!(back == text, "SBc-AP content changed the text\n decoded: {back:?}\nexpected: {text:?}");
    }
}

// ----------------------------------------------------------------------------------------------------- geo-index

/// Size limits for the geo targets: far below the defaults so that each input stays fast (tiling costs about
/// 1 µs a cell), the same code paths otherwise. Findings F3 and F4 (no size bound; 43 s for a 100 km footprint)
/// are fixed: loading refuses a zone or footprint above the limit, before tiling it.
const FUZZ_LIMITS: geo_index::GeoLimits = geo_index::GeoLimits { max_zone_cells: 20_000, max_site_cells: 5_000 };

/// `GeoIndex::load_zones` (`config/zones.geojson`) at the configured resolution. A loaded zone stays within twice
/// the cell limit (the limit is checked on an estimate, which must not be far off).
pub fn geo_zones_geojson(data: &[u8]) {
    let Some(text) = utf8(data) else { return };
    let mut index = GeoIndex::with_limits(RESOLUTION, FUZZ_LIMITS);
    if let Ok(problems) = index.load_zones(text, LoadPolicy::SkipInvalid) {
        let _ = problems;
        for zone in index.zones() {
            let cells = zone.cells().len() as u64;
            assert!(cells <= 2 * FUZZ_LIMITS.max_zone_cells, "zone {} has {cells} cells", zone.id);
        }
        let _ = index.zones_containing(23.5185, 120.9280);
    }
}

/// `GeoIndex::load_cell_sites` (`config/cell_sites.csv`) at the configured resolution. A loaded footprint stays
/// within twice the cell limit.
pub fn geo_cell_sites_csv(data: &[u8]) {
    let Some(text) = utf8(data) else { return };
    let mut index = GeoIndex::with_limits(RESOLUTION, FUZZ_LIMITS);
    let _ = index.load_cell_sites(text, LoadPolicy::SkipInvalid);
    for site in index.cell_sites() {
        let cells = site.cells().count() as u64;
        assert!(cells <= 2 * FUZZ_LIMITS.max_site_cells, "site {} has {cells} cells", site.ecgi);
    }
}

// -------------------------------------------------------------------------------------------- gateway simulator

/// `Scenario::from_toml` (`config/scenarios/*.toml`).
pub fn sim_scenario_toml(data: &[u8]) {
    let Some(text) = utf8(data) else { return };
    let _ = gateway_firmware_sim::Scenario::from_toml(text, "scenario.toml");
}

// ------------------------------------------------------------------------------------- the binary's own library

/// `disaster_cloud::config::Config::parse` (`config/disaster-cloud.toml`).
pub fn app_config_toml(data: &[u8]) {
    let Some(text) = utf8(data) else { return };
    let _ = disaster_cloud::config::Config::parse(text, "disaster-cloud.toml");
}

/// `disaster_cloud::reports::parse_report`: a citizen report body (`POST /api/v1/reports`).
pub fn app_report_body(data: &[u8]) {
    use disaster_cloud::reports::{parse_report, report, ReportPolicy};
    let policy = ReportPolicy::default();
    if let Ok(input) = parse_report(data, NOW_MS, &policy) {
        assert!(input.lat.is_finite() && input.lon.is_finite());
        assert!((report::TAIWAN_LAT.0..=report::TAIWAN_LAT.1).contains(&input.lat));
        assert!((report::TAIWAN_LON.0..=report::TAIWAN_LON.1).contains(&input.lon));
        // Checked text is a fixed point of the check.
        assert_eq!(report::check_text(&input.text).ok().as_deref(), Some(input.text.as_str()));
        if let Some(photo) = &input.photo {
            assert!(photo.bytes.len() <= policy.max_photo_bytes);
        }
    }
}

/// `disaster_cloud::reports::Photo::from_bytes`: JPEG/PNG sniffing and metadata stripping of citizens' photos.
/// Stripping is idempotent: a stripped photo goes through unchanged.
pub fn app_report_photo(data: &[u8]) {
    use disaster_cloud::reports::Photo;
    let Ok(photo) = Photo::from_bytes(data) else { return };
    assert!(photo.bytes.len() <= data.len() + 2, "stripping grew the photo");
    let again = Photo::from_bytes(&photo.bytes).unwrap_or_else(|e| panic!("a stripped photo is refused: {e}"));
    assert_eq!(again.kind, photo.kind);
    assert!(again.bytes == photo.bytes, "stripping is not idempotent");
    assert_eq!(again.sha256, photo.sha256);
}

/// `dissemination::channel::push::subscription::check_body`: a Web Push subscribe body (`POST
/// /api/v1/push/subscriptions`). What it accepts is a push endpoint we may POST to (https on a push service, or http to
/// loopback as the test config allows), a P-256 point, a 16-byte secret, zones of the index.
pub fn push_subscribe_body(data: &[u8]) {
    use dissemination::channel::push::{subscription, PushConfig};
    static GEO: std::sync::LazyLock<GeoIndex> = std::sync::LazyLock::new(|| {
        let mut g = GeoIndex::new(RESOLUTION);
        g.load_zones(include_str!("../../config/zones.geojson"), LoadPolicy::StopOnFirst).expect("shipped zones load");
        g
    });
    let cfg = PushConfig {
        enabled: true,
        contact: "mailto:fuzz@example.tw".into(),
        allow_http_loopback: true,
        ..PushConfig::default()
    };
    let Ok(sub) = subscription::check_body(data, &cfg, &GEO, NOW_MS) else { return };
    let e = sub.endpoint.to_ascii_lowercase();
    assert!(
        e.starts_with("https://")
            || ["http://127.", "http://[::1]", "http://localhost"].iter().any(|p| e.starts_with(p)),
        "{e}"
    );
    assert_eq!(sub.p256dh.len(), 87, "65 bytes, base64url");
    assert_eq!(sub.auth.len(), 22, "16 bytes, base64url");
    assert!(sub.zones.iter().all(|z| GEO.zone(z).is_some()));
}
