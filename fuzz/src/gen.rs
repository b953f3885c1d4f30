//! Structured values from raw fuzzer bytes, for the round-trip targets.
//!
//! Values are drawn mostly from palettes of the characters and numbers each encoder treats specially (markup
//! characters, CJK, whitespace, GSM 7-bit escapes, range edges), and now and then from anything at all, so that the
//! encoders' refusals are exercised too. A value the encoder refuses is skipped by the target, never an error: the
//! round-trip property is about what the encoder *accepts*.

use std::collections::BTreeMap;

use encoders::cap::{
    AreaInput, CapAlert, CapArea, CapInfo, CapInput, CapResource, Category, Certainty, Circle, Localized, MsgType,
    Polygon, Reference, ResponseType, Scope, Severity, Status, Urgency, ValuePair,
};
use encoders::cell_broadcast::{Ecgi, GeoScope, Language, Plmn, PwsClass, SerialNumber, Tai, WarningArea};
use arbitrary::{Result, Unstructured};
use time::{OffsetDateTime, UtcOffset};

/// One of `all`.
pub fn pick<T: Copy>(u: &mut Unstructured, all: &[T]) -> Result<T> {
    u.choose(all).copied()
}

/// `Some(f(u))` about half the time.
pub fn opt<T>(u: &mut Unstructured, f: impl FnOnce(&mut Unstructured) -> Result<T>) -> Result<Option<T>> {
    Ok(if u.arbitrary::<bool>()? { Some(f(u)?) } else { None })
}

/// Up to `max` values.
pub fn many<T>(u: &mut Unstructured, max: usize, mut f: impl FnMut(&mut Unstructured) -> Result<T>) -> Result<Vec<T>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| f(u)).collect()
}

/// Characters that need care in XML and in our text checks: markup, quotes, CJK, every kind of whitespace
/// (including the ones `str::trim` knows and XML does not), BOM, emoji.
const CAP_CHARS: &[char] = &[
    'a',
    'Z',
    '0',
    ' ',
    '&',
    '<',
    '>',
    '"',
    '\'',
    ']',
    '[',
    '{',
    '}',
    ':',
    ';',
    '/',
    '.',
    ',',
    '!',
    '?',
    '#',
    '%',
    '=',
    '+',
    '-',
    '\t',
    '\r',
    '\n',
    '颱',
    '風',
    '豪',
    '雨',
    '、',
    '，',
    '。',
    '°',
    'µ',
    '🌧',
    '\u{85}',
    '\u{A0}',
    '\u{2028}',
    '\u{3000}',
    '\u{FEFF}',
    '\u{FFFD}',
    '\u{E000}',
    '\u{10FFFF}',
    '\u{7F}',
    '\u{9F}',
];

/// Text for CAP fields: mostly palette characters, one in sixteen anything.
pub fn cap_text(u: &mut Unstructured) -> Result<String> {
    let n = u.int_in_range(0..=40)?;
    let mut s = String::new();
    for _ in 0..n {
        s.push(if u.ratio(1u8, 16)? { u.arbitrary::<char>()? } else { pick(u, CAP_CHARS)? });
    }
    Ok(s)
}

/// identifier / sender style text: `[A-Za-z0-9._:@-]`, rarely anything.
pub fn ident(u: &mut Unstructured) -> Result<String> {
    const CHARS: &[char] = &['A', 'z', '0', '9', '.', '_', ':', '@', '-', '颱'];
    let n = u.int_in_range(1..=24)?;
    let mut s = String::new();
    for _ in 0..n {
        s.push(if u.ratio(1u8, 32)? { u.arbitrary::<char>()? } else { pick(u, CHARS)? });
    }
    Ok(s)
}

/// A whole-second instant in years 1..=9998 at a whole-minute offset within ±14:00 (what CAP can carry), rarely an
/// offset with seconds (which the writer must refuse).
pub fn cap_time(u: &mut Unstructured) -> Result<OffsetDateTime> {
    let secs = u.int_in_range(-62_135_510_400i64..=253_370_764_800)?;
    let offset = if u.ratio(1u8, 32)? {
        UtcOffset::from_whole_seconds(u.int_in_range(-50_399..=50_399)?).unwrap_or(UtcOffset::UTC)
    } else {
        UtcOffset::from_whole_seconds(u.int_in_range(-840i32..=840)? * 60).unwrap_or(UtcOffset::UTC)
    };
    let t = OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    Ok(t.checked_to_offset(offset).unwrap_or(t))
}

/// A coordinate: mostly within range at 1e-7 degree steps, sometimes any f64 (edges, NaN, subnormals).
fn coordinate(u: &mut Unstructured, limit: i64) -> Result<f64> {
    Ok(match u.int_in_range(0..=7)? {
        0 => u.arbitrary::<f64>()?,
        1 => pick(u, &[0.0, -0.0, limit as f64, -(limit as f64), f64::MIN_POSITIVE, 5e-324, 1e-7])?,
        _ => u.int_in_range(-limit * 10_000_000..=limit * 10_000_000)? as f64 / 1e7,
    })
}

fn point(u: &mut Unstructured) -> Result<(f64, f64)> {
    Ok((coordinate(u, 90)?, coordinate(u, 180)?))
}

pub fn polygon(u: &mut Unstructured) -> Result<Option<Polygon>> {
    let n = u.int_in_range(3..=8)?;
    let pts = (0..n).map(|_| point(u)).collect::<Result<Vec<_>>>()?;
    Ok(Polygon::from_ring(pts).ok())
}

pub fn circle(u: &mut Unstructured) -> Result<Option<Circle>> {
    let (lat, lon) = point(u)?;
    let r = if u.ratio(1u8, 8)? { u.arbitrary::<f64>()? } else { f64::from(u.int_in_range(0u32..=5_000_000)?) / 1e3 };
    Ok(Circle::new(lat, lon, r).ok())
}

fn pair(u: &mut Unstructured) -> Result<ValuePair> {
    Ok(ValuePair::new(cap_text(u)?, cap_text(u)?))
}

/// `web` / `uri`: real-looking links, or text the anyURI check may refuse.
pub fn uri(u: &mut Unstructured) -> Result<Option<String>> {
    Ok(match u.int_in_range(0..=3)? {
        0 => None,
        1 => Some(cap_text(u)?),
        _ => {
            let base = pick(
                u,
                &[
                    "https://alerts.example.tw/alerts/",
                    "http://[::1]:8080/cap/",
                    "mailto:eoc@nfa.gov.tw",
                    "/cap/",
                    "https://a.tw/颱風 警報/",
                    "",
                ],
            )?;
            Some(format!("{base}{}", ident(u)?))
        }
    })
}

fn altitude(u: &mut Unstructured) -> Result<f64> {
    Ok(if u.ratio(1u8, 8)? {
        u.arbitrary::<f64>()?
    } else {
        f64::from(u.int_in_range(-10_000_000i32..=100_000_000)?) / 1e3
    })
}

fn area(u: &mut Unstructured) -> Result<CapArea> {
    let mut a = CapArea::new(cap_text(u)?);
    a.polygons = many(u, 3, polygon)?.into_iter().flatten().collect();
    a.circles = many(u, 2, circle)?.into_iter().flatten().collect();
    a.geocodes = many(u, 3, pair)?;
    a.altitude = opt(u, altitude)?;
    // Ceiling without altitude is a CAP error the writer must refuse; make it rare.
    a.ceiling = if a.altitude.is_some() || u.ratio(1u8, 16)? { opt(u, altitude)? } else { None };
    Ok(a)
}

fn resource(u: &mut Unstructured) -> Result<CapResource> {
    Ok(CapResource {
        resource_desc: cap_text(u)?,
        mime_type: cap_text(u)?,
        size: opt(u, |u| u.arbitrary::<u64>())?,
        uri: uri(u)?,
        deref_uri: opt(u, cap_text)?,
        digest: opt(u, cap_text)?,
    })
}

fn language(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=7)? {
        0 => cap_text(u)?,
        _ => pick(u, &["zh-TW", "en-US", "en", "zh-Hant-TW", "x-klingon1", "i"])?.to_string(),
    })
}

fn info(u: &mut Unstructured) -> Result<CapInfo> {
    let mut categories = many(u, 2, |u| pick(u, Category::ALL))?;
    if categories.is_empty() && !u.ratio(1u8, 16)? {
        categories.push(Category::Geo);
    }
    Ok(CapInfo {
        language: language(u)?,
        categories,
        event: cap_text(u)?,
        response_types: many(u, 3, |u| pick(u, ResponseType::ALL))?,
        urgency: pick(u, Urgency::ALL)?,
        severity: pick(u, Severity::ALL)?,
        certainty: pick(u, Certainty::ALL)?,
        audience: opt(u, cap_text)?,
        event_codes: many(u, 3, pair)?,
        effective: opt(u, cap_time)?,
        onset: opt(u, cap_time)?,
        expires: opt(u, cap_time)?,
        sender_name: opt(u, cap_text)?,
        headline: opt(u, cap_text)?,
        description: opt(u, cap_text)?,
        instruction: opt(u, cap_text)?,
        web: uri(u)?,
        contact: opt(u, cap_text)?,
        parameters: many(u, 3, pair)?,
        resources: many(u, 2, resource)?,
        areas: many(u, 3, area)?,
    })
}

fn reference(u: &mut Unstructured) -> Result<Reference> {
    Ok(Reference { sender: ident(u)?, identifier: ident(u)?, sent: cap_time(u)? })
}

/// Any CAP message the types can hold (the writer decides whether it is valid).
pub fn cap_alert(u: &mut Unstructured) -> Result<CapAlert> {
    let scope = pick(u, Scope::ALL)?;
    let restriction = opt(u, cap_text)?;
    let addresses = opt(u, cap_text)?;
    Ok(CapAlert {
        identifier: ident(u)?,
        sender: ident(u)?,
        sent: cap_time(u)?,
        status: pick(u, Status::ALL)?,
        msg_type: pick(u, MsgType::ALL)?,
        source: opt(u, cap_text)?,
        // The scope rules need these present; fill them rather than lose most Restricted/Private cases.
        restriction: if scope == Scope::Restricted { restriction.or(Some(String::new())) } else { restriction },
        addresses: if scope == Scope::Private { addresses.or(Some(String::new())) } else { addresses },
        scope,
        codes: many(u, 3, cap_text)?,
        note: opt(u, cap_text)?,
        references: many(u, 3, reference)?,
        incidents: opt(u, cap_text)?,
        infos: many(u, 3, info)?,
    })
}

/// Placeholder values every shipped template needs (`encoders::test_support::template_values`), some replaced by
/// fuzzed text.
fn template_values(u: &mut Unstructured) -> Result<BTreeMap<String, String>> {
    let mut values = encoders::test_support::template_values();
    let keys: Vec<String> = values.keys().cloned().collect();
    for _ in 0..u.int_in_range(0..=4)? {
        let key = if u.ratio(1u8, 4)? { cap_text(u)? } else { u.choose(&keys)?.clone() };
        if u.ratio(1u8, 8)? {
            values.remove(&key);
        } else {
            values.insert(key, cap_text(u)?);
        }
    }
    Ok(values)
}

fn area_input(u: &mut Unstructured) -> Result<AreaInput> {
    Ok(AreaInput {
        desc: Localized::new(cap_text(u)?, cap_text(u)?),
        polygons: many(u, 2, polygon)?.into_iter().flatten().collect(),
        circles: many(u, 2, circle)?.into_iter().flatten().collect(),
        geocodes: many(u, 3, |u| {
            Ok(match u.int_in_range(0..=3)? {
                0 => cap_text(u)?,
                1 => u.int_in_range(0u64..=99_999_999_999)?.to_string(),
                _ => pick(u, &["10008", "1000812", "6500100", "09007"])?.to_string(),
            })
        })?,
    })
}

/// What the alert lifecycle hands the CAP builder, with `event_type` from `event_types` (or anything, rarely).
pub fn cap_input(u: &mut Unstructured, event_types: &[String]) -> Result<CapInput> {
    let sent = cap_time(u)?;
    // The builder writes whole seconds; give it sub-second input to check that it drops them.
    let sent = sent.replace_nanosecond(u.int_in_range(0..=999_999_999)?).unwrap_or(sent);
    Ok(CapInput {
        identifier: ident(u)?,
        sender: ident(u)?,
        sent,
        status: pick(u, Status::ALL)?,
        msg_type: pick(u, MsgType::ALL)?,
        all_clear: u.arbitrary()?,
        references: many(u, 3, reference)?,
        note: opt(u, cap_text)?,
        event_type: if u.ratio(1u8, 16)? || event_types.is_empty() {
            cap_text(u)?
        } else {
            u.choose(event_types)?.clone()
        },
        level: opt(u, ident)?,
        urgency: pick(u, Urgency::ALL)?,
        severity: pick(u, Severity::ALL)?,
        certainty: pick(u, Certainty::ALL)?,
        effective: opt(u, cap_time)?,
        onset: opt(u, cap_time)?,
        expires: opt(u, cap_time)?,
        areas: many(u, 3, area_input)?,
        web: uri(u)?,
        incidents: opt(u, ident)?,
        values: template_values(u)?,
        parameters: many(u, 2, pair)?,
    })
}

// ------------------------------------------------------------------------------------------------ cell broadcast

/// Characters from every class the CBS encoder treats differently: GSM basic (including '@', which packs as zero
/// bits), GSM extension (escape pairs), Latin outside GSM (forces UCS-2), CJK, beyond the BMP (unencodable in
/// UCS-2), and CR, the padding character.
pub fn cbs_char(u: &mut Unstructured) -> Result<char> {
    Ok(match u.int_in_range(0..=15)? {
        0..=5 => pick(u, &['a', 'Z', '0', ' ', '@', '$', '£', 'é', 'Δ', '\n', '.', '_', 'Ü', '¿'])?,
        6..=8 => pick(u, &['[', ']', '{', '}', '€', '^', '~', '|', '\\', '\u{0C}'])?,
        9 => pick(u, &['ç', 'ï', '–', '“', '\u{1B}', '\0'])?,
        10..=12 => char::from_u32(u.int_in_range(0x4E00u32..=0x9FFF)?).unwrap_or('颱'),
        13 => '\r',
        14 => pick(u, &['🌧', '\u{FFFF}', '\u{D7FF}', '\u{E000}'])?,
        _ => u.arbitrary::<char>()?,
    })
}

/// A warning text of up to `max` characters.
pub fn cbs_text(u: &mut Unstructured, max: usize) -> Result<String> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| cbs_char(u)).collect()
}

pub fn pws_class(u: &mut Unstructured) -> Result<PwsClass> {
    Ok(match u.int_in_range(0..=3)? {
        0 => PwsClass::Presidential,
        1 => PwsClass::Emergency(u.int_in_range(0..=10)?),
        2 => PwsClass::Alert,
        _ => PwsClass::MonthlyTest,
    })
}

pub fn language_channel(u: &mut Unstructured) -> Result<Language> {
    Ok(if u.arbitrary::<bool>()? { Language::Chinese } else { Language::English })
}

pub fn serial(u: &mut Unstructured) -> Result<SerialNumber> {
    if u.arbitrary::<bool>()? {
        return Ok(SerialNumber::from_u16(u.arbitrary()?));
    }
    let scope = pick(u, &[GeoScope::CellImmediate, GeoScope::Plmn, GeoScope::Area, GeoScope::CellNormal])?;
    Ok(SerialNumber::new(scope, u.int_in_range(0..=1023)?, u.int_in_range(0..=15)?)
        .unwrap_or(SerialNumber::from_u16(0)))
}

fn plmn(u: &mut Unstructured) -> Result<Plmn> {
    let mcc = u.int_in_range(0u16..=999)?;
    let mnc = if u.arbitrary::<bool>()? {
        format!("{:02}", u.int_in_range(0u16..=99)?)
    } else {
        format!("{:03}", u.int_in_range(0u16..=999)?)
    };
    Ok(Plmn::new(&format!("{mcc:03}"), &mnc).unwrap_or(Plmn::new("466", "92").expect("a valid PLMN")))
}

/// A warning area: a few fuzzed entries, sometimes repeated up to past the 65535-entry limit (so the 16K open-type
/// fragments and the limit check are reached without megabytes of fuzz input).
pub fn warning_area(u: &mut Unstructured) -> Result<WarningArea> {
    let kind = u.int_in_range(0..=3)?;
    if kind == 0 {
        return Ok(WarningArea::WholeNetwork);
    }
    let distinct = u.int_in_range(0..=8)?;
    let total = match u.int_in_range(0..=7)? {
        0 => u.int_in_range(0..=70_000)?,
        1 => pick(u, &[2_184, 2_185, 4_681, 5_462, 65_535, 65_536])?,
        _ => distinct,
    };
    fn fill<T: Clone>(seed: Vec<T>, total: usize) -> Vec<T> {
        if seed.is_empty() {
            return seed;
        }
        seed.iter().cycle().take(total).cloned().collect()
    }
    Ok(match kind {
        1 => {
            let seed = (0..distinct)
                .map(|_| {
                    let cell_id = if u.ratio(1u8, 8)? { u.arbitrary()? } else { u.int_in_range(0..=(1u32 << 28) - 1)? };
                    Ok(Ecgi { plmn: plmn(u)?, cell_id })
                })
                .collect::<Result<Vec<_>>>()?;
            WarningArea::Cells(fill(seed, total))
        }
        2 => {
            let seed =
                (0..distinct).map(|_| Ok(Tai { plmn: plmn(u)?, tac: u.arbitrary()? })).collect::<Result<Vec<_>>>()?;
            WarningArea::TrackingAreas(fill(seed, total))
        }
        _ => {
            let seed = (0..distinct).map(|_| u.arbitrary::<[u8; 3]>()).collect::<Result<Vec<_>>>()?;
            WarningArea::EmergencyAreas(fill(seed, total))
        }
    })
}
