//! [`AlertView`]: what dissemination needs to know about one alert change.
//!
//! Deliberately our own type rather than the rule engine's `Alert`: the engine's types change with the rules, and
//! the sink side only needs this stable, serialisable summary. The binary converts each alert change into one.
//! It is also the `alert` object of the JSON webhook format, so its field names are part of the public contract
//! (they follow the websocket message of `INTERFACE.md`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use alerting::alert::ReportRef;
pub use alerting::publication::Contributor;
use encoders::cap::{Certainty, Severity, Status, Urgency};

/// Where an alert is in its lifecycle. `Cleared` and `Cancelled` both end it (CAP `Cancel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViewState {
    Raised,
    Updated,
    /// The hazard passed (the rule's clear condition held).
    Cleared,
    /// An operator withdrew the alert.
    Cancelled,
}

impl ViewState {
    /// Cleared and cancelled alerts are over: their CAP message is a `Cancel` and their broadcast is stopped.
    pub fn is_end(self) -> bool {
        matches!(self, ViewState::Cleared | ViewState::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ViewState::Raised => "raised",
            ViewState::Updated => "updated",
            ViewState::Cleared => "cleared",
            ViewState::Cancelled => "cancelled",
        }
    }
}

/// Whether an alert is real. Spelled as CAP's `status` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ViewMode {
    Actual,
    /// A drill: every channel marks it (`[演練]` / `[Drill]`, CAP status Exercise).
    Exercise,
    /// A technical test: CAP status Test, the monthly-test broadcast channel.
    Test,
}

impl ViewMode {
    pub fn status(self) -> Status {
        match self {
            ViewMode::Actual => Status::Actual,
            ViewMode::Exercise => Status::Exercise,
            ViewMode::Test => Status::Test,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.status().as_str()
    }

    pub fn parse(s: &str) -> Option<ViewMode> {
        match s {
            "Actual" => Some(ViewMode::Actual),
            "Exercise" => Some(ViewMode::Exercise),
            "Test" => Some(ViewMode::Test),
            _ => None,
        }
    }
}

/// One alert change, as dissemination sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertView {
    /// The alert's stable id (one per hazard); CAP identifiers and the incident are derived from it.
    pub id: String,
    /// Bumped by the alert book on every change; a change with an older version than one already seen is stale.
    pub version: u32,
    pub state: ViewState,
    pub mode: ViewMode,
    /// Event type, the templates' key: `heavy_rain`, `debris_flow`, …
    pub event: String,
    pub severity: Severity,
    pub urgency: Urgency,
    pub certainty: Certainty,
    /// Level name as people read it (`紅色`, `豪雨`); fills the `{level}` placeholder in zh-TW texts.
    pub level_name_zh: String,
    /// The same in English (`red`, `heavy rain`); also what the PWS class policy matches on.
    pub level_name_en: String,
    /// The level's position in its rule, lowest danger 0: the air re-alerts phones only when it rises above what is
    /// broadcast (`channel::cbc`). Absent from older journals and from alerts without levels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_index: Option<u32>,
    /// A geo-index zone id: the CAP area, the cell-broadcast target, the webhook zone filter.
    pub area_id: String,
    /// The measured value that tripped the rule (unit per event type, see `config/dissemination.toml`).
    pub value: f64,
    /// When the alert was raised, Unix ms: issue time (our clock when we decided), not the readings' time.
    pub raised_ms: i64,
    /// When this change was issued, Unix ms (issue time): the CAP `sent` of the message, from which `expires` counts
    /// and the Atom entry's `updated`. Never the readings' time, so nothing reaches agencies already expired.
    pub updated_ms: i64,
    /// When the evidence behind this change was observed, Unix ms (event time: the reading's timestamp); the CAP
    /// `onset`. Absent for changes without one (operator-made alerts, older journals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_ms: Option<i64>,
    /// False while an approval gate holds the public channels: the message is kept for operators only.
    pub public_release: bool,
    /// Extra template values from the rule (`rain_1h_mm`, `station@zh-TW`, …); they win over derived ones.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, String>,
    /// Verified clusters of citizen reports behind the alert: CAP parameters (`disaster-cloud:citizen_reports`) and,
    /// for photos an operator published, CAP resources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<ReportRef>,
    /// The public warning's contributing alerts (one warning per hazard and area; `alerting::publication`): CAP
    /// parameters `disaster-cloud:contributor`, highest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contributors: Vec<Contributor>,
}

impl AlertView {
    /// Everything but the version and the release flag: two changes with equal content describe the same message.
    pub(crate) fn same_content(&self, other: &AlertView) -> bool {
        self.state == other.state
            && self.mode == other.mode
            && self.event == other.event
            && self.severity == other.severity
            && self.urgency == other.urgency
            && self.certainty == other.certainty
            && self.level_name_zh == other.level_name_zh
            && self.level_name_en == other.level_name_en
            && self.level_index == other.level_index
            && self.area_id == other.area_id
            && self.value.to_bits() == other.value.to_bits()
            && self.values == other.values
            && self.reports == other.reports
            && self.contributors == other.contributors
    }
}
