//! The JSON form of an alert that both websocket channels carry (`INTERFACE.md`, "Websocket messages").

use serde::Serialize;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

use crate::alert::{Alert, AlertState};
use crate::publication::{Contributor, PublicNote, PublicWarning};
use crate::types::{Certainty, Mode, Severity, Urgency};

/// Taiwan time. CAP and our messages write times with an explicit offset, never `Z`.
pub const TAIWAN_OFFSET: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(o) => o,
    Err(_) => panic!("valid offset"),
};

/// `2026-11-26T18:00:00+08:00`: seconds precision with offset, as CAP 1.2 requires.
pub fn format_time(unix_ms: i64, offset: UtcOffset) -> String {
    let fmt = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory]:[offset_minute]"
    );
    let t = OffsetDateTime::from_unix_timestamp(unix_ms.div_euclid(1000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(offset);
    let text = t.format(&fmt).unwrap_or_default();
    // CAP writes UTC as -00:00 (CAP 1.2 §3.3.2), never +00:00 or Z.
    match text.strip_suffix("+00:00") {
        Some(stem) => format!("{stem}-00:00"),
        None => text,
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Headlines {
    #[serde(rename = "zh-TW")]
    pub zh_tw: String,
    pub en: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AlertMessage {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub version: u32,
    pub state: AlertState,
    pub mode: Mode,
    pub event: String,
    /// The rule that raised it (several rules can share an event type, e.g. operators' rain signals and the public
    /// debris-flow alert).
    pub rule: String,
    pub severity: Severity,
    pub urgency: Urgency,
    pub certainty: Certainty,
    /// zh-TW for operators; the citizen channel replaces it with the subscribed language.
    pub headline: String,
    pub headlines: Headlines,
    pub area: serde_json::Value,
    pub area_id: String,
    pub area_name: String,
    /// Issue time of this version (our clock when we decided): what people and agencies were told, when.
    pub sent: String,
    /// Event time of the evidence behind the version (the reading's timestamp): beside `sent` for operators, who
    /// see how old the evidence was.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub observed: String,
    /// Why the public channels do not carry this version although its rule is public (evidence older than the
    /// server's `alerting.stale_after_s`), for operators; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    pub cap: String,
    pub level: String,
    pub value: f64,
    pub sensors: Vec<String>,
    pub acknowledged_by: Option<String>,
    /// The operator token that released it to the public (the approval gate), if one did.
    pub approved_by: Option<String>,
    /// The operator token that cancelled it, if one did.
    pub cancelled_by: Option<String>,
    /// Operators' notes, oldest first (operators' channel and API; citizens' frames do not carry them).
    pub comments: Vec<CommentMessage>,
    /// Clusters of citizen reports behind the alert (`rc-…` ids; operators' map), absent when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<String>,
    /// Operators' frames of rule alerts: what became of this change on the public side (sent with a public
    /// warning, coalesced, held as flapping, not public) and why. Absent elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public: Option<PublicNote>,
    /// Public warnings (one per hazard and area): the alerts behind it, highest first. Empty for rule alerts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub contributors: Vec<Contributor>,
    /// The alert that caused this one (a road blocked by a landslide: the landslide alert's id), when a rule tied
    /// them (`within_m` conditions); absent otherwise. Operators' map draws the link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caused_by: Option<CausedBy>,
}

/// The hazard behind an alert: the causing alert (its id while it was active), its rule, event and area, and how
/// far away it is.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CausedBy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    pub rule: String,
    pub event: String,
    pub area_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_m: Option<f64>,
}

impl CausedBy {
    /// From an alert's values (`caused_by_rule`, `caused_by_event`, `caused_by_area`, `caused_by`).
    pub fn of(alert: &Alert) -> Option<CausedBy> {
        let v = &alert.values;
        Some(CausedBy {
            alert: v.get("caused_by").cloned(),
            rule: v.get("caused_by_rule")?.clone(),
            event: v.get("caused_by_event").cloned().unwrap_or_default(),
            area_id: v.get("caused_by_area")?.clone(),
            distance_m: v.get("caused_by_distance_m").and_then(|d| d.parse().ok()),
        })
    }
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CommentMessage {
    pub by: String,
    pub at: String,
    pub text: String,
}

/// What an alert message needs to know about the alert's area.
pub struct AreaInfo<'a> {
    pub name: &'a str,
    pub name_en: &'a str,
    pub geometry: serde_json::Value,
}

impl AlertMessage {
    pub fn new(alert: &Alert, area: AreaInfo<'_>) -> Self {
        let drill = match alert.mode {
            Mode::Actual => ("", ""),
            Mode::Exercise => ("[演練] ", "[Drill] "),
            Mode::Test => ("[測試] ", "[Test] "),
        };
        let (zh_state, en_state) = match alert.state {
            AlertState::Cleared => ("解除：", "Cleared: "),
            AlertState::Cancelled => ("取消：", "Cancelled: "),
            _ => ("", ""),
        };
        let headlines = Headlines {
            zh_tw: format!("{}{zh_state}{}（{}）", drill.0, alert.level.name, area.name),
            en: format!("{}{en_state}{} ({})", drill.1, alert.level.name_en, area.name_en),
        };
        AlertMessage {
            kind: "alert",
            id: alert.id.clone(),
            version: alert.version,
            state: alert.state,
            mode: alert.mode,
            event: alert.event.clone(),
            rule: alert.rule_id.clone(),
            severity: alert.level.severity,
            urgency: alert.level.urgency,
            certainty: alert.level.certainty,
            headline: headlines.zh_tw.clone(),
            headlines,
            area: area.geometry,
            area_id: alert.area_id.clone(),
            area_name: area.name.to_string(),
            sent: format_time(alert.issued_ms, TAIWAN_OFFSET),
            observed: format_time(alert.observed_ms, TAIWAN_OFFSET),
            held: alert.stale.map(|s| s.reason()),
            // The CAP message of this version (dissemination names them `{alert id}.{version}`).
            cap: format!("/cap/{}.{}.xml", alert.id, alert.version),
            level: alert.level.name.clone(),
            value: alert.value,
            sensors: alert.sensors.keys().cloned().collect(),
            acknowledged_by: alert.acknowledged_by.clone(),
            approved_by: alert.approved_by.clone(),
            cancelled_by: alert.cancelled_by.clone(),
            comments: alert
                .comments
                .iter()
                .map(|c| CommentMessage {
                    by: c.by.clone(),
                    at: format_time(c.at_ms, TAIWAN_OFFSET),
                    text: c.text.clone(),
                })
                .collect(),
            reports: alert.reports.iter().map(|r| r.cluster.clone()).collect(),
            public: None,
            contributors: Vec::new(),
            caused_by: CausedBy::of(alert),
        }
    }
}

impl AlertMessage {
    /// The frame of a public warning (`type` `public_warning` for operators; the citizens' frames are made from it
    /// with `type` `alert`).
    pub fn public_warning(w: &PublicWarning, area: AreaInfo<'_>) -> Self {
        let mut m = AlertMessage::new(&w.alert, area);
        m.kind = "public_warning";
        m.contributors = w.contributors.clone();
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_carry_offsets_never_z() {
        assert_eq!(format_time(1_764_151_200_000, TAIWAN_OFFSET), "2025-11-26T18:00:00+08:00");
        assert_eq!(format_time(1_764_151_200_000, UtcOffset::UTC), "2025-11-26T10:00:00-00:00");
    }
}
