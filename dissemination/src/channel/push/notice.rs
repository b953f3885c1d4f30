//! What a phone does with an alert change: the re-notify policy ([`loudness`]), the push headers that follow from it
//! (`Urgency`, `Topic`, `TTL`) and the JSON the service worker reads (`docs/PAYLOADS.md`, "Web Push").
//!
//! Pure: the change, what was pushed before for the alert, and the time come in; nothing here reads a clock.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::subscription::PushLang;
use super::vapid::B64;
use crate::messages::StoredMessage;
use crate::view::{AlertView, ViewMode};
use encoders::cap::Severity;

/// Largest plaintext that still fits one RFC 8291 record in 4096 octets on the wire: 4096 − 86 (header: salt 16,
/// record size 4, key id length 1, key id 65) − 16 (AEAD tag) − 1 (padding delimiter).
pub const MAX_PLAINTEXT: usize = 4096 - 86 - 16 - 1;

/// Whether the phone should alert the citizen (sound, vibration, a new banner) or only replace what it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loudness {
    Notify,
    Silent,
}

/// What was last pushed for an alert: all the policy remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pushed {
    pub version: u32,
    pub level_index: Option<u32>,
    pub severity: Severity,
    pub ended: bool,
}

impl Pushed {
    pub fn of(view: &AlertView) -> Pushed {
        Pushed {
            version: view.version,
            level_index: view.level_index,
            severity: view.severity,
            ended: view.state.is_end(),
        }
    }
}

fn severity_rank(s: Severity) -> u8 {
    match s {
        Severity::Unknown => 0,
        Severity::Minor => 1,
        Severity::Moderate => 2,
        Severity::Severe => 3,
        Severity::Extreme => 4,
    }
}

/// The re-notify policy, in one place. A phone alerts the citizen for:
/// - a **new alert** (nothing pushed for it before),
/// - a **level rise** (a higher level than the last push; by the rule's level rank, or by severity for views
///   without one),
/// - the **end** (cleared or cancelled: people need to hear that the danger passed as much as that it came).
///
/// Everything else — the measured value moved, contributing sensors changed, the level fell — replaces the shown
/// notification **silently**: same `Topic` (a push still waiting at the push service is replaced) and the same
/// notification tag on the phone, no sound. Drills and tests are always silent and labelled, as on the socket: a
/// drill that rings like the real thing teaches people to ignore the real thing. An end of an alert we never pushed,
/// and a version not newer than the last push, send nothing (`None`).
///
/// The alerting side is building a general calm-update policy for every channel; this is the push channel's until
/// that one can be shared.
pub fn loudness(last: Option<&Pushed>, view: &AlertView) -> Option<Loudness> {
    if let Some(last) = last {
        if view.version <= last.version || last.ended {
            return None;
        }
    } else if view.state.is_end() {
        return None;
    }
    if view.mode != ViewMode::Actual {
        return Some(Loudness::Silent);
    }
    let Some(last) = last else { return Some(Loudness::Notify) };
    if view.state.is_end() {
        return Some(Loudness::Notify);
    }
    let rose = match (view.level_index, last.level_index) {
        (Some(now), Some(before)) => now > before,
        _ => severity_rank(view.severity) > severity_rank(last.severity),
    };
    Some(if rose { Loudness::Notify } else { Loudness::Silent })
}

/// RFC 8030 `Urgency`: `high` for a real warning that should ring (phones in power saving deliver it at once),
/// `normal` for the rest.
pub fn urgency(loudness: Loudness, view: &AlertView) -> &'static str {
    if loudness == Loudness::Notify && view.mode == ViewMode::Actual && !view.state.is_end() {
        "high"
    } else {
        "normal"
    }
}

/// RFC 8030 `Topic` of an alert: at most 32 characters of the URL-safe base64 alphabet, so a hash of the alert id.
/// Every version of one alert has the same topic; the push service keeps only the newest undelivered one.
pub fn topic(alert_id: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, alert_id.as_bytes());
    B64.encode(&digest.as_ref()[..24])
}

/// The decrypted body the service worker reads (`docs/PAYLOADS.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushPayload {
    /// Payload format version.
    pub v: u32,
    pub id: String,
    pub version: u32,
    pub state: String,
    /// False for drills and tests: the worker labels them and never presents them as real.
    pub is_real: bool,
    /// "演練" / "Drill", "測試" / "Test" when not real.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Alert the citizen (true) or replace what is shown silently (false).
    pub notify: bool,
    pub lang: String,
    pub event: String,
    pub severity: Severity,
    pub title: String,
    pub body: String,
    /// Where a tap takes the citizen: the app, opened on this alert.
    pub url: String,
    /// The CAP message of this version.
    pub cap: String,
    /// Issue time of this version, Unix ms.
    pub sent_ms: i64,
    /// The alert's area as a phone tests its position against it: the Warning-Area-Coordinates octets of cell
    /// broadcast, base64 ([`super::geofence`]). Absent when the area has none or it did not fit one record: the
    /// phone then alarms, as a handset does without the IE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning_area_coordinates: Option<String>,
}

fn label(mode: ViewMode, lang: PushLang) -> Option<&'static str> {
    match (mode, lang) {
        (ViewMode::Actual, _) => None,
        (ViewMode::Exercise, PushLang::ZhTw) => Some("演練"),
        (ViewMode::Exercise, PushLang::En) => Some("Drill"),
        (ViewMode::Test, PushLang::ZhTw) => Some("測試"),
        (ViewMode::Test, PushLang::En) => Some("Test"),
    }
}

/// Characters of the instruction kept before the geofence gives way: a notification shows two to four lines, the
/// app shows the whole instruction from the CAP message, and the polygon (at most 1,368 base64 characters) fits
/// beside this much in every realistic payload.
pub const MIN_BODY_CHARS: usize = 200;

/// A payload and whether the geofence had to be left out to fit one record.
pub struct Payload {
    pub bytes: Vec<u8>,
    pub geofence_dropped: bool,
}

/// The payload of one message in one language, as JSON bytes that fit one record ([`MAX_PLAINTEXT`]), with the
/// area's `warning_area_coordinates` (base64) when given. To fit, the body (the CAP instruction) is shortened first,
/// down to [`MIN_BODY_CHARS`]; if that is not enough the geofence is left out (`geofence_dropped`: every phone the
/// push reaches then alarms) and the body fitted again; the title and the ids are never cut.
pub fn payload(message: &StoredMessage, loudness: Loudness, lang: PushLang, geofence: Option<&str>) -> Payload {
    let view = &message.view;
    let (headline, instruction) = match lang {
        PushLang::ZhTw => (&message.texts.headline_zh, &message.texts.instruction_zh),
        PushLang::En => (&message.texts.headline_en, &message.texts.instruction_en),
    };
    let label = label(view.mode, lang);
    // The CAP headline of a drill carries its prefix already (`[演練]`); a template without one still gets it.
    let title = match label {
        Some(l) if !headline.contains(l) => format!("[{l}] {headline}"),
        _ => headline.clone(),
    };
    let mut p = PushPayload {
        v: 1,
        id: view.id.clone(),
        version: view.version,
        state: view.state.as_str().to_string(),
        is_real: view.mode == ViewMode::Actual,
        label: label.map(str::to_string),
        notify: loudness == Loudness::Notify,
        lang: lang.tag().to_string(),
        event: view.event.clone(),
        severity: view.severity,
        title: truncate(&title, 200),
        body: instruction.clone(),
        url: format!("/app#alert={}", percent_path(&view.id)),
        cap: format!("/cap/{}.xml", message.identifier),
        sent_ms: message.sent_ms,
        warning_area_coordinates: geofence.map(str::to_string),
    };
    let full_body = p.body.clone();
    let floor = if p.warning_area_coordinates.is_some() { MIN_BODY_CHARS } else { 0 };
    let mut bytes = fit(&mut p, floor);
    let geofence_dropped = bytes.len() > MAX_PLAINTEXT && p.warning_area_coordinates.is_some();
    if geofence_dropped {
        p.warning_area_coordinates = None;
        p.body = full_body;
        bytes = fit(&mut p, 0);
    }
    Payload { bytes, geofence_dropped }
}

/// Shortens the body (not below `floor` characters) until the payload fits one record; the JSON bytes.
fn fit(p: &mut PushPayload, floor: usize) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(&p).unwrap_or_default();
    while bytes.len() > MAX_PLAINTEXT && p.body.chars().count() > floor {
        let over = bytes.len() - MAX_PLAINTEXT;
        let keep = p.body.chars().count().saturating_sub(over.div_ceil(3).max(1) + 1).max(floor);
        p.body = truncate(&p.body, keep);
        bytes = serde_json::to_vec(&p).unwrap_or_default();
    }
    bytes
}

/// At most `chars` characters, with `…` when cut.
fn truncate(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_string();
    }
    let mut out: String = text.chars().take(chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// An alert id as a URL fragment value: unreserved characters kept, the rest percent-encoded.
fn percent_path(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::ViewState;

    fn v(version: u32, level: u32, state: ViewState) -> AlertView {
        AlertView { level_index: Some(level), state, ..crate::tests::view("A", version) }
    }

    #[test]
    fn new_rise_and_end_ring_the_rest_is_silent() {
        let first = v(1, 1, ViewState::Raised);
        assert_eq!(loudness(None, &first), Some(Loudness::Notify), "a new alert");
        let last = Pushed::of(&first);
        assert_eq!(loudness(Some(&last), &v(2, 1, ViewState::Updated)), Some(Loudness::Silent), "value only");
        assert_eq!(loudness(Some(&last), &v(2, 0, ViewState::Updated)), Some(Loudness::Silent), "a fall");
        assert_eq!(loudness(Some(&last), &v(2, 2, ViewState::Updated)), Some(Loudness::Notify), "a rise");
        assert_eq!(loudness(Some(&last), &v(2, 1, ViewState::Cleared)), Some(Loudness::Notify), "the end");
        assert_eq!(loudness(Some(&last), &v(1, 2, ViewState::Updated)), None, "not newer than the last push");
        let ended = Pushed::of(&v(3, 1, ViewState::Cancelled));
        assert_eq!(loudness(Some(&ended), &v(4, 1, ViewState::Cancelled)), None, "an end is pushed once");
        assert_eq!(loudness(None, &v(1, 1, ViewState::Cleared)), None, "the end of an alert never pushed");
    }

    #[test]
    fn a_rise_within_one_severity_is_a_rise() {
        // 豪雨 → 大豪雨: both Severe, the level rank tells.
        let before = Pushed { version: 1, level_index: Some(1), severity: Severity::Severe, ended: false };
        let now = AlertView { severity: Severity::Severe, ..v(2, 2, ViewState::Updated) };
        assert_eq!(loudness(Some(&before), &now), Some(Loudness::Notify));
        // Older journals without ranks fall back on severity.
        let before = Pushed { level_index: None, ..before };
        let now = AlertView { level_index: None, severity: Severity::Extreme, ..now };
        assert_eq!(loudness(Some(&before), &now), Some(Loudness::Notify));
    }

    #[test]
    fn drills_are_silent_and_never_high() {
        let drill = AlertView { mode: ViewMode::Exercise, ..v(1, 3, ViewState::Raised) };
        assert_eq!(loudness(None, &drill), Some(Loudness::Silent));
        assert_eq!(urgency(Loudness::Silent, &drill), "normal");
        assert_eq!(urgency(Loudness::Notify, &v(1, 1, ViewState::Raised)), "high");
        assert_eq!(urgency(Loudness::Notify, &v(2, 1, ViewState::Cleared)), "normal");
    }

    #[test]
    fn topics_are_32_url_safe_characters_per_alert() {
        let t = topic("heavy_rain:township-xinyi");
        assert_eq!(t.len(), 32);
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{t}");
        assert_eq!(t, topic("heavy_rain:township-xinyi"));
        assert_ne!(t, topic("heavy_rain:township-jiaxian"));
    }

    #[test]
    fn a_long_instruction_is_cut_to_fit_one_record() {
        let mut m = crate::tests::stored_message(&crate::tests::view("LONG", 1));
        m.texts.instruction_zh = "請立即撤離。".repeat(2000);
        let p = payload(&m, Loudness::Notify, PushLang::ZhTw, None).bytes;
        assert!(p.len() <= MAX_PLAINTEXT, "{}", p.len());
        let back: PushPayload = serde_json::from_slice(&p).unwrap();
        assert!(back.body.ends_with('…'));
        assert_eq!(back.id, "LONG");
    }

    /// The largest IE there is (1,024 octets) as base64.
    fn biggest_geofence() -> String {
        base64::engine::general_purpose::STANDARD.encode([0x55u8; 1024])
    }

    #[test]
    fn the_geofence_stays_beside_a_long_instruction() {
        let mut m = crate::tests::stored_message(&crate::tests::view("LONG", 1));
        m.texts.instruction_zh = "請立即撤離。".repeat(2000);
        let fence = biggest_geofence();
        let p = payload(&m, Loudness::Notify, PushLang::ZhTw, Some(&fence));
        assert!(!p.geofence_dropped);
        assert!(p.bytes.len() <= MAX_PLAINTEXT, "{}", p.bytes.len());
        let back: PushPayload = serde_json::from_slice(&p.bytes).unwrap();
        assert_eq!(back.warning_area_coordinates.as_deref(), Some(fence.as_str()));
        assert!(back.body.chars().count() >= MIN_BODY_CHARS, "{}", back.body.chars().count());
    }

    #[test]
    fn a_geofence_that_cannot_fit_is_dropped_and_said() {
        // An alert id long enough (it is in the id, the url and the cap link) that the polygon cannot stay.
        let mut m = crate::tests::stored_message(&crate::tests::view(&"x".repeat(1000), 1));
        m.texts.instruction_zh = "請立即撤離。".repeat(100);
        let p = payload(&m, Loudness::Notify, PushLang::ZhTw, Some(&biggest_geofence()));
        assert!(p.geofence_dropped);
        assert!(p.bytes.len() <= MAX_PLAINTEXT, "{}", p.bytes.len());
        let back: PushPayload = serde_json::from_slice(&p.bytes).unwrap();
        assert_eq!(back.warning_area_coordinates, None);
        assert!(!back.body.is_empty());
    }
}
