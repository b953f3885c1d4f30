//! One CAP message per alert transition: [`AlertView`] → `CapInput` → `CapAlert` (the `cap` builder) → XML, and
//! the [`StoredMessage`] kept in the journal for `GET /cap/{identifier}.xml`, the feed, webhooks and broadcasts.

use std::collections::BTreeMap;

use geo_index::GeoIndex;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::config::Resolved;
use super::view::{AlertView, Contributor, ReportRef, ViewState};
use encoders::cap::{
    build_alert, write_alert, AreaInput, BuildError, CapAlert, CapInput, CapResource, Certainty, GeometryError,
    InvalidMessage, Localized, MsgType, Polygon, Reference, Severity, Status, Templates, Urgency, ValuePair,
    TAIWAN_OFFSET,
};
use encoders::cap::{format_cap_time, times::whole_seconds};

/// Why no CAP message could be made for a change. Logged and counted; the change is still journaled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MessageError {
    #[error("alert {alert}: zone `{zone}` is not in the geo index")]
    UnknownZone { alert: String, zone: String },
    #[error("alert {alert}: zone `{zone}` outline: {source}")]
    Polygon { alert: String, zone: String, source: GeometryError },
    #[error("alert {alert}: time {ms} ms is out of range")]
    Time { alert: String, ms: i64 },
    #[error("alert {alert}: {source}")]
    Build { alert: String, source: BuildError },
    #[error("alert {alert}: {source}")]
    Write { alert: String, source: InvalidMessage },
}

/// The broadcast texts of one message (headline + instruction per language), taken from its CAP infos so the
/// phone shows what the CAP message says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MessageTexts {
    pub headline_zh: String,
    pub instruction_zh: String,
    pub headline_en: String,
    pub instruction_en: String,
}

/// A CAP message as kept: the XML exactly as served, plus what the feed, webhooks and broadcasts need from it
/// without parsing it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub identifier: String,
    pub alert_id: String,
    pub version: u32,
    pub msg_type: MsgType,
    pub status: Status,
    /// `sent`, Unix ms (whole seconds).
    pub sent_ms: i64,
    /// The change this message was made from (the JSON webhook body carries it).
    pub view: AlertView,
    pub xml: String,
    /// Through the approval gate: in the public feed and served at `/cap/…`.
    pub released: bool,
    /// Atom entry title (zh-TW headline), summary (description) and author.
    pub title: String,
    pub summary: Option<String>,
    pub author: String,
    pub texts: MessageTexts,
}

impl StoredMessage {
    pub(crate) fn sent(&self) -> OffsetDateTime {
        time_of(self.sent_ms).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

/// The CAP `<references>` entry of an earlier message (`sender,identifier,sent`).
pub(crate) fn reference(sender: &str, identifier: &str, sent_ms: i64) -> Reference {
    Reference {
        sender: sender.to_string(),
        identifier: identifier.to_string(),
        sent: time_of(sent_ms).unwrap_or(OffsetDateTime::UNIX_EPOCH),
    }
}

fn time_of(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok().map(|t| t.to_offset(TAIWAN_OFFSET))
}

/// An alert id made safe for a CAP identifier (no whitespace, `,`, `<`, `&`; we also keep out `/`, `?`, `#`, `%`
/// so the identifier is a clean path segment of `/cap/{identifier}.xml`).
pub(crate) fn identifier_base(alert_id: &str) -> String {
    let s: String = alert_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':') { c } else { '_' })
        .collect();
    if s.is_empty() {
        "alert".into()
    } else {
        s
    }
}

/// `356`, `72.5`: one decimal at most, none when whole (texts read like people write numbers).
pub(crate) fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// Placeholder names in a template text (`{name}`; `{{`/`}}` are literal braces).
fn placeholders(text: &str, out: &mut Vec<String>) {
    let mut rest = text;
    while let Some(i) = rest.find(['{', '}']) {
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            rest = &tail[2..];
        } else if let Some(after) = tail.strip_prefix('}') {
            rest = after;
        } else if let Some(end) = tail.find('}') {
            out.push(tail[1..end].to_string());
            rest = &tail[end + 1..];
        } else {
            return;
        }
    }
}

/// Names the builder fills itself.
const BUILTIN_PLACEHOLDERS: [&str; 6] = ["event", "area", "sent", "effective", "onset", "expires"];

/// Template values for a view: the rule's own values win; then `value` and `level` (per language), the alert's
/// value under its event type's value placeholders, and `missing_value` for anything a template still needs.
pub(crate) fn template_values(view: &AlertView, cfg: &Resolved, templates: &Templates) -> BTreeMap<String, String> {
    let mut values = view.values.clone();
    let value = format_value(view.value);
    values.entry("value".into()).or_insert_with(|| value.clone());
    for lang in templates.languages() {
        let name = if lang.starts_with("zh") { &view.level_name_zh } else { &view.level_name_en };
        values.entry(format!("level@{lang}")).or_insert_with(|| name.clone());
    }
    if let Some(names) = cfg.value_placeholders.get(&view.event) {
        for n in names {
            values.entry(n.clone()).or_insert_with(|| value.clone());
        }
    }
    let mut needed = Vec::new();
    if let Ok(t) = templates.event(&view.event) {
        for texts in t.texts.values() {
            for s in [&texts.event, &texts.headline, &texts.description, &texts.instruction] {
                placeholders(s, &mut needed);
            }
        }
    }
    for lang in templates.languages() {
        if let Some(l) = templates.language(lang) {
            for s in [&l.cancel.headline, &l.cancel.description, &l.cancel.instruction] {
                placeholders(s, &mut needed);
            }
        }
    }
    for name in needed {
        if BUILTIN_PLACEHOLDERS.contains(&name.as_str()) || values.contains_key(&name) {
            continue;
        }
        let localized = templates.languages().iter().all(|l| values.contains_key(&format!("{name}@{l}")));
        if !localized {
            tracing::debug!(event = %view.event, placeholder = %name, "template placeholder without a value");
            values.insert(name, cfg.cap.missing_value.clone());
        }
    }
    values
}

/// The per-level texts the alert's rule level asked for (`template` in the rules), if the templates have them. An
/// alert raised under texts that a later templates file dropped falls back to the event's own texts rather than
/// failing its message (start and reload check that current rules only name existing ones).
fn level_texts(view: &AlertView, templates: &Templates) -> Option<String> {
    let key = view.values.get(alerting::rules::TEMPLATE_VALUE)?;
    if templates.event(&view.event).is_ok_and(|t| t.levels.contains_key(key)) {
        Some(key.clone())
    } else {
        tracing::warn!(event = %view.event, level = %key, "no per-level CAP texts; using the event's own texts");
        None
    }
}

/// Everything a message needs besides the view.
pub(crate) struct MessageContext<'a> {
    pub cfg: &'a Resolved,
    pub geo: &'a GeoIndex,
    pub templates: &'a Templates,
    pub base_url: &'a str,
}

/// Builds and writes the CAP message for one change.
pub(crate) fn build_message(
    ctx: &MessageContext<'_>,
    view: &AlertView,
    identifier: String,
    msg_type: MsgType,
    references: Vec<Reference>,
    released: bool,
) -> Result<StoredMessage, MessageError> {
    let alert = view.id.clone();
    let zone = ctx
        .geo
        .zone(&view.area_id)
        .ok_or_else(|| MessageError::UnknownZone { alert: alert.clone(), zone: view.area_id.clone() })?;
    let polygons = zone
        .cap_polygons(ctx.cfg.cap.max_polygon_vertices)
        .iter()
        .map(|p| Polygon::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| MessageError::Polygon { alert: alert.clone(), zone: zone.id.clone(), source })?;
    let geocodes =
        zone.geocode.iter().filter(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit())).cloned().collect();
    let sent = time_of(view.updated_ms).ok_or(MessageError::Time { alert: alert.clone(), ms: view.updated_ms })?;
    // The hazard is over (the rules cleared it): an Update saying AllClear that expires shortly, as Google Public
    // Alerts asks; an operator's withdrawal is the Cancel (`docs/API.md` § Ending a warning).
    let all_clear = msg_type == MsgType::Update && view.state == ViewState::Cleared;
    let expires_minutes = if all_clear {
        ctx.cfg.cap.expires_minutes.min(ALL_CLEAR_EXPIRES_MINUTES)
    } else {
        ctx.cfg.cap.expires_minutes
    };
    let expires = (msg_type != MsgType::Cancel && expires_minutes > 0)
        .then(|| sent + time::Duration::minutes(i64::from(expires_minutes)));
    let base = ctx.base_url.trim_end_matches('/');
    let input = CapInput {
        identifier: identifier.clone(),
        sender: ctx.cfg.sender.clone(),
        sent,
        status: view.mode.status(),
        msg_type,
        all_clear,
        references,
        note: None,
        event_type: view.event.clone(),
        level: level_texts(view, ctx.templates),
        // Over: urgency Past, and no longer the severity of the threat (an aggregator must not sound an alarm for
        // an all-clear).
        urgency: if all_clear { Urgency::Past } else { view.urgency },
        severity: if all_clear { Severity::Minor } else { view.severity },
        certainty: if all_clear { Certainty::Observed } else { view.certainty },
        effective: None,
        // Event time beside issue time: when the hazard was observed, for agencies that show it. Never after `sent`.
        onset: view.observed_ms.filter(|&t| t <= view.updated_ms).and_then(time_of),
        expires,
        areas: vec![AreaInput {
            desc: Localized::new(zone.name.clone(), zone.name_en.clone().unwrap_or_else(|| zone.name.clone())),
            polygons,
            circles: Vec::new(),
            geocodes,
        }],
        // The public map, opened on this alert: people who follow the link see the area and the latest state.
        web: Some(format!("{base}/?alert={}", encoders::cap::atom::encode_path_segment(&view.id))),
        incidents: Some(identifier_base(&view.id)),
        values: template_values(view, ctx.cfg, ctx.templates),
        parameters: view
            .contributors
            .iter()
            .map(contributor_parameter)
            .chain(view.reports.iter().map(report_parameter))
            .collect(),
    };
    let mut cap =
        build_alert(&input, ctx.templates).map_err(|source| MessageError::Build { alert: alert.clone(), source })?;
    let photos: Vec<CapResource> = view.reports.iter().flat_map(report_photos).collect();
    for info in &mut cap.infos {
        info.resources.extend(photos.iter().cloned());
    }
    let xml = write_alert(&cap).map_err(|source| MessageError::Write { alert: alert.clone(), source })?;
    Ok(stored(view, identifier, &cap, xml, released))
}

/// How long an all-clear stays in force: "a short time in the future" (Google Public Alerts' CAP guidance).
const ALL_CLEAR_EXPIRES_MINUTES: u32 = 60;

/// valueName of the parameter that names one alert behind a public warning.
pub const CONTRIBUTOR_PARAMETER: &str = "disaster-cloud:contributor";

/// One contributing alert as one CAP parameter, `key=value` pairs joined by `;`:
/// `rule=wire-trip;level=…;level_en=…;severity=Severe;value=1;sensors=WS0001 WS0002`.
fn contributor_parameter(c: &Contributor) -> ValuePair {
    let sensors: Vec<String> = c.sensors.iter().map(|s| clean(s)).collect();
    let text = |s: &str| s.chars().filter(|c| !matches!(c, ';' | '=') && !c.is_control()).take(64).collect::<String>();
    ValuePair::new(
        CONTRIBUTOR_PARAMETER,
        format!(
            "rule={};level={};level_en={};severity={:?};value={};sensors={}",
            clean(&c.rule),
            text(&c.level),
            text(&c.level_en),
            c.severity,
            format_value(c.value),
            sensors.join(" ")
        ),
    )
}

/// valueName of the parameter that describes one verified cluster of citizen reports behind an alert.
pub const CITIZEN_REPORTS_PARAMETER: &str = "disaster-cloud:citizen_reports";

/// One cluster as one CAP parameter, `key=value` pairs joined by `;` (no key or value contains `;` or `=`):
/// `cluster=rc-3;category=flooding;reports=5;reporters=4;point=23.51850,120.92800;cell=88…;verified=…+08:00`.
/// The operator's summary is not repeated here: the alert's own texts carry it when it was raised from reports.
fn report_parameter(r: &ReportRef) -> ValuePair {
    let verified = time_of(r.verified_ms).and_then(|t| format_cap_time(whole_seconds(t)).ok());
    let mut value = format!(
        "cluster={};category={};reports={};reporters={};point={:.5},{:.5};cell={}",
        clean(&r.cluster),
        clean(&r.category),
        r.reports,
        r.reporters,
        r.lat,
        r.lon,
        clean(&r.cell)
    );
    if let Some(verified) = verified {
        value.push_str(&format!(";verified={verified}"));
    }
    ValuePair::new(CITIZEN_REPORTS_PARAMETER, value)
}

/// Identifiers from the report side, kept to what cannot break the `key=value;…` form.
fn clean(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).take(64).collect()
}

/// Photos an operator published with a cluster, as CAP resources (type by file extension: the report side stores
/// only JPEG and PNG, named by their hash).
fn report_photos(r: &ReportRef) -> Vec<CapResource> {
    r.photos
        .iter()
        .filter_map(|uri| {
            let mime = if uri.ends_with(".jpg") {
                "image/jpeg"
            } else if uri.ends_with(".png") {
                "image/png"
            } else {
                return None;
            };
            Some(CapResource {
                resource_desc: format!("citizen report photo ({})", clean(&r.cluster)),
                mime_type: mime.into(),
                size: None,
                uri: Some(uri.clone()),
                deref_uri: None,
                digest: None,
            })
        })
        .collect()
}

fn stored(view: &AlertView, identifier: String, cap: &CapAlert, xml: String, released: bool) -> StoredMessage {
    let info = |zh: bool| cap.infos.iter().find(|i| i.language.starts_with("zh") == zh).or(cap.infos.first());
    let (zh, en) = (info(true), info(false));
    let text = |i: Option<&encoders::cap::CapInfo>, f: fn(&encoders::cap::CapInfo) -> Option<&String>| {
        i.and_then(f).cloned().unwrap_or_default()
    };
    let entry = encoders::cap::AtomEntry::from_alert(cap, "zh-TW");
    StoredMessage {
        identifier,
        alert_id: view.id.clone(),
        version: view.version,
        msg_type: cap.msg_type,
        status: cap.status,
        sent_ms: cap.sent.unix_timestamp() * 1000,
        view: view.clone(),
        xml,
        released,
        title: entry.title,
        summary: entry.summary,
        author: entry.author,
        texts: MessageTexts {
            headline_zh: text(zh, |i| i.headline.as_ref()),
            instruction_zh: text(zh, |i| i.instruction.as_ref()),
            headline_en: text(en, |i| i.headline.as_ref()),
            instruction_en: text(en, |i| i.instruction.as_ref()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_like_people_write_them() {
        assert_eq!(format_value(356.0), "356");
        assert_eq!(format_value(72.5), "72.5");
        assert_eq!(format_value(0.12), "0.1");
        assert_eq!(format_value(f64::NAN), "—");
    }

    #[test]
    fn finds_placeholders() {
        let mut v = Vec::new();
        placeholders("{area}雨量{rain_24h_mm}毫米 {{literal}} }}", &mut v);
        assert_eq!(v, ["area", "rain_24h_mm"]);
    }

    #[test]
    fn identifiers_are_clean_path_segments() {
        assert_eq!(identifier_base("TW-DC 1/2&3"), "TW-DC_1_2_3");
        assert_eq!(identifier_base(""), "alert");
    }
}
