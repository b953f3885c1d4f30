//! One citizen report as it arrives: the JSON body, read field by field so that every refusal names its field.
//!
//! Body: `{"lat": 23.52, "lon": 120.93, "category": "flooding", "text": "…", "ts": 1764122400000, "photo": "<base64>"}`.
//! `text`, `ts` and `photo` are optional. `ts` is Unix milliseconds or RFC 3339 with an offset; `photo` is a base64
//! JPEG or PNG (a `data:image/…;base64,` prefix, as browsers write it, is accepted).
//!
//! We read the body into a JSON map and take the fields by hand rather than derive `Deserialize`, because serde's
//! messages ("invalid type: string, expected f64 at line 1 column 9") name no field a citizen's app could show.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::photo::{Photo, PhotoError};
use super::ReportPolicy;

/// What a citizen saw. The words an operator uses, as `snake_case` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Flooding,
    Landslide,
    RoadBlocked,
    BuildingDamage,
    Fire,
    PeopleTrapped,
    Other,
}

impl Category {
    pub const ALL: [Category; 7] = [
        Category::Flooding,
        Category::Landslide,
        Category::RoadBlocked,
        Category::BuildingDamage,
        Category::Fire,
        Category::PeopleTrapped,
        Category::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::Flooding => "flooding",
            Category::Landslide => "landslide",
            Category::RoadBlocked => "road_blocked",
            Category::BuildingDamage => "building_damage",
            Category::Fire => "fire",
            Category::PeopleTrapped => "people_trapped",
            Category::Other => "other",
        }
    }

    pub fn parse(text: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.name() == text)
    }

    /// The event type (the CAP templates' key, `config/cap_templates.toml`) of an alert raised from a verified
    /// cluster of this category.
    pub fn event_type(self) -> &'static str {
        match self {
            Category::Flooding => "reported_flooding",
            Category::Landslide => "reported_landslide",
            Category::RoadBlocked => "reported_road_blocked",
            Category::BuildingDamage => "reported_building_damage",
            Category::Fire => "reported_fire",
            Category::PeopleTrapped => "reported_people_trapped",
            Category::Other => "reported_other",
        }
    }

    /// What people call it, in Traditional Chinese and in English: the alert's level name.
    pub fn words(self) -> (&'static str, &'static str) {
        match self {
            Category::Flooding => ("淹水", "flooding"),
            Category::Landslide => ("坍方落石", "landslide"),
            Category::RoadBlocked => ("道路阻斷", "road blocked"),
            Category::BuildingDamage => ("建物損壞", "building damage"),
            Category::Fire => ("火災", "fire"),
            Category::PeopleTrapped => ("民眾受困", "people trapped"),
            Category::Other => ("災情", "incident"),
        }
    }
}

/// Taiwan, Penghu, Kinmen, Matsu, Lanyu and Pratas (Dongsha) in one box: anything outside cannot be a report of ours.
pub const TAIWAN_LAT: (f64, f64) = (20.5, 26.5);
pub const TAIWAN_LON: (f64, f64) = (116.5, 122.5);

/// Longest `text` in characters (Unicode scalar values, so 500 Chinese characters fit as well as 500 Latin ones).
pub const MAX_TEXT_CHARS: usize = 500;

/// A report that passed every check, ready to be flagged and clustered.
#[derive(Debug, Clone)]
pub struct ReportInput {
    pub lat: f64,
    pub lon: f64,
    pub category: Category,
    /// Plain text, trimmed, line ends normalised; never HTML.
    pub text: String,
    /// When the citizen says they saw it (the `ts` field), if given. Clustering uses the receive time instead, which
    /// a client cannot forge.
    pub observed_ms: Option<i64>,
    pub photo: Option<Photo>,
}

/// Which way a rate limit was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    Client,
    Address,
}

impl std::fmt::Display for LimitScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitScope::Client => "client",
            LimitScope::Address => "address",
        })
    }
}

/// Which cap on new clusters a report met: it would open a new cluster, and its address, or a zone it lies in,
/// has opened as many as allowed lately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterCap {
    Address,
    Zone,
}

/// What is full: the reports' share of the data dir is bounded so that the journals beside it keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    /// The photo store's byte quota (`reports.photo_quota_bytes`): the report may be sent without its photo.
    Photos,
    /// Every cluster the book may hold is verified or cited by an alert: no place for a new one.
    Clusters,
}

/// Why a report was refused. Small and cheap to match: the web layer turns each into a status code, and
/// [`Refusal::reason`] is the label of `dc_reports_refused_total`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("the body must be one JSON object: {0}")]
    Malformed(String),
    #[error("`{field}`: {message}")]
    Field { field: String, reason: &'static str, message: String },
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("send the report as `application/json`, not `{0}`")]
    ContentType(String),
    #[error("too many reports from this {scope}; try again in {retry_after_s} s")]
    RateLimited { scope: LimitScope, retry_after_s: u64 },
    #[error("{}; try again in {retry_after_s} s, or report from a place already reported", match scope {
        ClusterCap::Address => "too many new places reported from this address",
        ClusterCap::Zone => "too many new places reported in this area",
    })]
    NewClusters { scope: ClusterCap, retry_after_s: u64 },
    #[error("{}", match .0 {
        Capacity::Photos => "no room for more photos now; send the report without its photo",
        Capacity::Clusters => "no room for reports of new places now; try again later",
    })]
    Full(Capacity),
}

/// Every label [`Refusal::reason`] can return, for pre-registering the counter.
pub const REFUSAL_REASONS: &[&str] = &[
    "malformed",
    "too_large",
    "content_type",
    "rate_limited_client",
    "rate_limited_address",
    "unknown_field",
    "bad_client_id",
    "bad_position",
    "outside_taiwan",
    "bad_category",
    "bad_text",
    "text_too_long",
    "markup_in_text",
    "bad_ts",
    "photo_too_large",
    "photo_encoding",
    "photo_type",
    "storage",
    "new_clusters_address",
    "new_clusters_zone",
    "photo_quota",
    "clusters_full",
];

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::Field { reason, .. } => reason,
            Refusal::TooLarge { .. } => "too_large",
            Refusal::ContentType(_) => "content_type",
            Refusal::RateLimited { scope: LimitScope::Client, .. } => "rate_limited_client",
            Refusal::RateLimited { scope: LimitScope::Address, .. } => "rate_limited_address",
            Refusal::NewClusters { scope: ClusterCap::Address, .. } => "new_clusters_address",
            Refusal::NewClusters { scope: ClusterCap::Zone, .. } => "new_clusters_zone",
            Refusal::Full(Capacity::Photos) => "photo_quota",
            Refusal::Full(Capacity::Clusters) => "clusters_full",
        }
    }

    /// The field at fault, for clients that highlight it.
    pub fn field(&self) -> Option<&str> {
        match self {
            Refusal::Field { field, .. } => Some(field),
            Refusal::ContentType(_) => Some("Content-Type"),
            Refusal::TooLarge { .. } => Some("body"),
            Refusal::Full(Capacity::Photos) => Some("photo"),
            _ => None,
        }
    }

    pub fn field_error(field: &str, reason: &'static str, message: impl Into<String>) -> Refusal {
        Refusal::Field { field: field.to_string(), reason, message: message.into() }
    }
}

const FIELDS: [&str; 6] = ["lat", "lon", "category", "text", "ts", "photo"];

/// Reads and checks a report body. `now_ms` bounds `ts`; the policy gives the photo limit and the accepted age.
pub fn parse_report(body: &[u8], now_ms: i64, policy: &ReportPolicy) -> Result<ReportInput, Refusal> {
    let map: Map<String, Value> = serde_json::from_slice(body).map_err(|e| Refusal::Malformed(e.to_string()))?;
    parse_report_fields(&map, now_ms, policy)
}

/// Checks a report's fields (the body's object, or a websocket frame's without its own fields).
pub fn parse_report_fields(
    map: &Map<String, Value>,
    now_ms: i64,
    policy: &ReportPolicy,
) -> Result<ReportInput, Refusal> {
    if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(Refusal::field_error(
            &short(unknown, 40),
            "unknown_field",
            format!("unknown field; a report has {}", FIELDS.join(", ")),
        ));
    }
    let lat = coordinate(map, "lat", 90.0)?;
    let lon = coordinate(map, "lon", 180.0)?;
    if !(TAIWAN_LAT.0..=TAIWAN_LAT.1).contains(&lat) || !(TAIWAN_LON.0..=TAIWAN_LON.1).contains(&lon) {
        return Err(Refusal::field_error(
            "position",
            "outside_taiwan",
            format!(
                "lat {lat} lon {lon} is outside Taiwan (lat {}–{}, lon {}–{})",
                TAIWAN_LAT.0, TAIWAN_LAT.1, TAIWAN_LON.0, TAIWAN_LON.1
            ),
        ));
    }
    let category = match map.get("category") {
        Some(Value::String(s)) => {
            Category::parse(s).ok_or_else(|| bad_category(&format!("`{}` is not a category", short(s, 40))))?
        }
        Some(_) => return Err(bad_category("must be a string")),
        None => return Err(bad_category("required")),
    };
    let text = match map.get("text") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => check_text(s)?,
        Some(_) => return Err(Refusal::field_error("text", "bad_text", "must be a string")),
    };
    let observed_ms = match map.get("ts") {
        None | Some(Value::Null) => None,
        Some(value) => Some(check_ts(value, now_ms, policy.max_age_ms)?),
    };
    let photo = match map.get("photo") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(Photo::from_base64(s, policy.max_photo_bytes).map_err(photo_refusal)?),
        Some(_) => return Err(Refusal::field_error("photo", "photo_encoding", "must be a base64 string")),
    };
    Ok(ReportInput { lat, lon, category, text, observed_ms, photo })
}

fn bad_category(why: &str) -> Refusal {
    let names: Vec<&str> = Category::ALL.iter().map(|c| c.name()).collect();
    Refusal::field_error("category", "bad_category", format!("{why}: use one of {}", names.join(", ")))
}

fn coordinate(map: &Map<String, Value>, field: &'static str, limit: f64) -> Result<f64, Refusal> {
    let value = match map.get(field) {
        Some(Value::Number(n)) => n.as_f64(),
        Some(_) => None,
        None => return Err(Refusal::field_error(field, "bad_position", "required: a number of degrees (WGS84)")),
    };
    match value {
        Some(v) if v.is_finite() && (-limit..=limit).contains(&v) => Ok(v),
        _ => Err(Refusal::field_error(field, "bad_position", format!("must be a number of degrees within ±{limit}"))),
    }
}

/// Plain text only. Control characters (other than line breaks and tabs) and bidirectional overrides are refused
/// because they can make a report read differently on the operator's screen than it was written; anything that
/// looks like an HTML tag is refused because a report has no use for one and an operator should never have to wonder
/// whether a page renders it. A lone `<` ("depth < 1 m") is fine: it is stored and returned as the character.
pub fn check_text(raw: &str) -> Result<String, Refusal> {
    let text = raw.replace("\r\n", "\n").trim().to_string();
    let chars = text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(Refusal::field_error(
            "text",
            "text_too_long",
            format!("{chars} characters; at most {MAX_TEXT_CHARS}"),
        ));
    }
    if let Some(c) = text.chars().find(|&c| (c.is_control() && c != '\n' && c != '\t') || is_bidi_control(c)) {
        return Err(Refusal::field_error(
            "text",
            "bad_text",
            format!("control character U+{:04X} is not allowed", c as u32),
        ));
    }
    if looks_like_markup(&text) {
        return Err(Refusal::field_error("text", "markup_in_text", "plain text only: remove the HTML tags"));
    }
    Ok(text)
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `<` followed by a letter, `/`, `!` or `?` starts a tag, a comment or a processing instruction in HTML.
fn looks_like_markup(text: &str) -> bool {
    text.as_bytes()
        .windows(2)
        .any(|w| w[0] == b'<' && (w[1].is_ascii_alphabetic() || matches!(w[1], b'/' | b'!' | b'?')))
}

/// A report may describe the recent past (a phone that was offline) but not the future beyond clock skew.
const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;

fn check_ts(value: &Value, now_ms: i64, max_age_ms: i64) -> Result<i64, Refusal> {
    let ms = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .ok()
            .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()),
        _ => None,
    }
    .ok_or_else(|| Refusal::field_error("ts", "bad_ts", "Unix milliseconds or an RFC 3339 time with an offset"))?;
    if ms > now_ms.saturating_add(MAX_FUTURE_MS) {
        return Err(Refusal::field_error("ts", "bad_ts", "is in the future"));
    }
    if ms < now_ms.saturating_sub(max_age_ms) {
        return Err(Refusal::field_error("ts", "bad_ts", format!("is older than {} h", max_age_ms / 3_600_000)));
    }
    Ok(ms)
}

fn photo_refusal(e: PhotoError) -> Refusal {
    let reason = match e {
        PhotoError::TooLarge { .. } => "photo_too_large",
        PhotoError::Encoding(_) => "photo_encoding",
        PhotoError::Type | PhotoError::Corrupt(_) => "photo_type",
    };
    Refusal::field_error("photo", reason, e.to_string())
}

fn short(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_122_400_000;

    fn parse(body: &str) -> Result<ReportInput, Refusal> {
        parse_report(body.as_bytes(), NOW, &ReportPolicy::default())
    }

    fn reason(body: &str) -> (&'static str, Option<String>) {
        let e = parse(body).expect_err("refused");
        (e.reason(), e.field().map(str::to_string))
    }

    #[test]
    fn a_good_report_parses() {
        let r =
            parse(r#"{"lat":23.52,"lon":120.93,"category":"road_blocked","text":" tree down\r\n","ts":1764122300000}"#)
                .unwrap();
        assert_eq!(
            (r.category, r.text.as_str(), r.observed_ms),
            (Category::RoadBlocked, "tree down", Some(1_764_122_300_000))
        );
        let r = parse(r#"{"lat":23.52,"lon":120.93,"category":"fire","ts":"2025-11-26T09:55:00+08:00"}"#).unwrap();
        assert_eq!(r.observed_ms, Some(1_764_122_100_000));
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(reason("[1]").0, "malformed");
        assert_eq!(reason(r#"{"lat":"x","lon":120,"category":"fire"}"#), ("bad_position", Some("lat".into())));
        assert_eq!(reason(r#"{"lat":23,"lon":181,"category":"fire"}"#), ("bad_position", Some("lon".into())));
        assert_eq!(reason(r#"{"lon":120,"category":"fire"}"#), ("bad_position", Some("lat".into())));
        assert_eq!(
            reason(r#"{"lat":35.68,"lon":139.69,"category":"fire"}"#),
            ("outside_taiwan", Some("position".into()))
        );
        assert_eq!(reason(r#"{"lat":23,"lon":120,"category":"alien"}"#), ("bad_category", Some("category".into())));
        assert_eq!(reason(r#"{"lat":23,"lon":120,"category":"fire","x":1}"#), ("unknown_field", Some("x".into())));
        assert_eq!(reason(r#"{"lat":23,"lon":120,"category":"fire","ts":9999999999999}"#).0, "bad_ts");
        assert_eq!(reason(r#"{"lat":23,"lon":120,"category":"fire","ts":"yesterday"}"#).0, "bad_ts");
        let long = "字".repeat(501);
        assert_eq!(reason(&format!(r#"{{"lat":23,"lon":120,"category":"fire","text":"{long}"}}"#)).0, "text_too_long");
        assert!(parse(&format!(r#"{{"lat":23,"lon":120,"category":"fire","text":"{}"}}"#, "字".repeat(500))).is_ok());
    }

    #[test]
    fn markup_is_refused_but_a_less_than_sign_is_text() {
        assert_eq!(
            reason(r#"{"lat":23,"lon":120,"category":"fire","text":"<script>alert(1)</script>"}"#).0,
            "markup_in_text"
        );
        assert_eq!(
            reason(r#"{"lat":23,"lon":120,"category":"fire","text":"hi <img src=x onerror=alert(1)>"}"#).0,
            "markup_in_text"
        );
        assert_eq!(reason(r#"{"lat":23,"lon":120,"category":"fire","text":"a\u202Eb"}"#).0, "bad_text");
        let r = parse(r#"{"lat":23,"lon":120,"category":"flooding","text":"depth < 1 m & \"rising\" <3"}"#).unwrap();
        assert_eq!(r.text, "depth < 1 m & \"rising\" <3");
    }
}
