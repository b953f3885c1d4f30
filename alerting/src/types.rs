//! The types that cross alerting's modules, declared before the machinery that uses them: what the rules say
//! (severity, urgency, certainty, who may see an alert), what the engine reports (findings and their triggers and
//! levels), which mode an alert runs in, and the partner agencies' warnings the engine reads (external alerts and the
//! filters composite rules put on them). `rules`, `engine`, `alert` and `message` depend on this module and it
//! depends on none of them, so the modules of the crate form no import cycle.
//!
//! The CAP 1.2 vocabulary of the messages themselves (`encoders::cap::Severity`, …) is the encoders' own; ours
//! converts into it (`From`) where an alert becomes a message.

use std::collections::BTreeMap;
use std::path::PathBuf;

use encoders::cap;
use serde::{Deserialize, Serialize};

/// A rules or configuration file that does not load: which file, which rule, and why.
#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    #[error("{file}: {message}")]
    Config { file: PathBuf, message: String },
    #[error("{file}: rule `{rule}`: {message}")]
    Rule { file: PathBuf, rule: String, message: String },
}

/// CAP 1.2 `severity` (the spec's spelling is the serialised form). Ordered by danger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Severity {
    Unknown,
    Minor,
    Moderate,
    Severe,
    Extreme,
}

/// CAP 1.2 `urgency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Urgency {
    Immediate,
    Expected,
    Future,
    Past,
    Unknown,
}

impl Urgency {
    pub fn immediate() -> Self {
        Urgency::Immediate
    }
}

/// CAP 1.2 `certainty`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Certainty {
    Observed,
    Likely,
    Possible,
    Unlikely,
    Unknown,
}

impl Certainty {
    pub fn observed() -> Self {
        Certainty::Observed
    }
}

impl From<Severity> for cap::Severity {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Unknown => cap::Severity::Unknown,
            Severity::Minor => cap::Severity::Minor,
            Severity::Moderate => cap::Severity::Moderate,
            Severity::Severe => cap::Severity::Severe,
            Severity::Extreme => cap::Severity::Extreme,
        }
    }
}

impl From<Urgency> for cap::Urgency {
    fn from(u: Urgency) -> Self {
        match u {
            Urgency::Immediate => cap::Urgency::Immediate,
            Urgency::Expected => cap::Urgency::Expected,
            Urgency::Future => cap::Urgency::Future,
            Urgency::Past => cap::Urgency::Past,
            Urgency::Unknown => cap::Urgency::Unknown,
        }
    }
}

impl From<Certainty> for cap::Certainty {
    fn from(c: Certainty) -> Self {
        match c {
            Certainty::Observed => cap::Certainty::Observed,
            Certainty::Likely => cap::Certainty::Likely,
            Certainty::Possible => cap::Certainty::Possible,
            Certainty::Unlikely => cap::Certainty::Unlikely,
            Certainty::Unknown => cap::Certainty::Unknown,
        }
    }
}

/// Whether an alert is real. Only `Actual` may ever reach the public as real; drills run the same path as `Exercise`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
pub enum Mode {
    #[default]
    Actual,
    Exercise,
    Test,
}

impl From<Mode> for cap::Status {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Actual => cap::Status::Actual,
            Mode::Exercise => cap::Status::Exercise,
            Mode::Test => cap::Status::Test,
        }
    }
}

/// Who sees the alerts of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Publish {
    /// Operators at once; the public channels too (subject to the approval gate).
    #[default]
    Public,
    /// Operators only, unless an operator approves it for the public. For single-sensor signals that should not
    /// warn the public on their own (a tilt meter can be knocked by a falling tree); a correlation or composite rule
    /// built on them carries the public warning.
    Operators,
}

/// Which engine step produced a finding (journaled as part of the cause).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Reading,
    Tick,
    Forecast,
    Reload,
    /// A partner agency's warning (inbound CAP) began or ended over the zone.
    External,
}

/// A change of level reported by the rule engine for one contributor (a sensor, or the zone itself for zone-wide
/// rules) of one hazard. `level: None` means the contributor cleared.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub rule_id: String,
    pub event: String,
    pub area_id: String,
    /// The sensor for per-sensor rules; empty for zone-wide rules (composite, correlation), see `evidence`.
    pub sensor_id: String,
    pub level: Option<LevelInfo>,
    /// The measured quantity that decided (a window sum, the latest value, a rate), for texts and operators.
    pub value: f64,
    /// Event time: when what caused the change was observed — the reading's timestamp, or the tick, forecast or
    /// partner-warning time. Rules and windows run on it; it is never the time anything is issued (the alert book
    /// takes issue time from its caller, `AlertBook::apply`).
    pub observed_ms: i64,
    /// Who may see the rule's alerts.
    pub publish: Publish,
    /// Whether this level's class waits for an operator before public release (`[[approval]]`).
    pub approval_required: bool,
    /// Zone-wide rules: the sensors whose state supports the finding.
    pub evidence: Vec<String>,
    /// Values for CAP templates (`rain_24h_mm`, `water_level_m`, `vehicle`, …).
    pub values: BTreeMap<String, String>,
    pub trigger: Trigger,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelInfo {
    pub index: usize,
    pub name: String,
    pub name_en: String,
    pub severity: Severity,
    pub urgency: Urgency,
    pub certainty: Certainty,
    /// Which condition held, e.g. "24h ≥ 200".
    pub condition: String,
}

/// One partner agency's warning, as it stands after following its Updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalAlert {
    /// Stable across Updates: `ext:{sender}:{identifier}` of the first message of the chain. Operators' clients key
    /// their map layer on it.
    pub id: String,
    /// 1 for the first message, +1 per Update, so a client can drop out-of-order deltas.
    pub version: u32,
    /// Configured source name (feed or push) the current message came from; shown with the alert.
    pub source: String,
    /// CAP `identifier` of the current message.
    pub identifier: String,
    /// CAP `sender`.
    pub sender: String,
    /// CAP `sent` of the current message, as the agency wrote it (with its offset).
    pub sent: String,
    /// `sent` in Unix milliseconds.
    pub sent_ms: i64,
    /// Actual / Exercise / System / Test / Draft. Anything but Actual is shown as such and never public.
    pub status: cap::Status,
    /// Alert or Update (a Cancel ends the chain instead of being stored).
    pub msg_type: cap::MsgType,
    /// CAP scope; only Public messages can be public.
    pub scope: cap::Scope,
    /// `event` of the primary info (zh-TW when present, else the first).
    pub event: String,
    /// `eventCode` value under `profile:CAP-TWP:Event:1.0` (`rainfall`, `debrisFlow`, `highWater`, …), if given.
    pub event_code: Option<String>,
    /// Categories of the primary info.
    pub categories: Vec<cap::Category>,
    pub severity: cap::Severity,
    pub urgency: cap::Urgency,
    pub certainty: cap::Certainty,
    /// `senderName` of the primary info (the agency's human name, e.g. 中央氣象署).
    pub sender_name: Option<String>,
    /// Headline of the zh-TW info.
    pub headline_zh: Option<String>,
    /// Headline of the English info.
    pub headline_en: Option<String>,
    pub description_zh: Option<String>,
    pub description_en: Option<String>,
    pub instruction_zh: Option<String>,
    pub instruction_en: Option<String>,
    /// `web` of the primary info: the agency's page about the event.
    pub web: Option<String>,
    /// Every `areaDesc` of the primary info.
    pub area_desc: Vec<String>,
    /// When the alert starts to hold (earliest `effective` of the infos, else `sent`), Unix ms.
    pub effective_ms: i64,
    /// Latest `expires` of the infos as written, when any info has one.
    pub expires: Option<String>,
    /// When the alert leaves the active set, Unix ms: the latest `expires`, else `sent` + `default_lifetime_s`.
    pub expires_ms: i64,
    /// Our zones the alert covers (geocodes resolved, polygons and circles intersected), sorted.
    pub zone_ids: Vec<String>,
    /// Taiwan_Geocode_103 codes in the message, sorted.
    pub geocodes: Vec<String>,
    /// Codes that matched no zone; shown so operators see the alert reaches beyond our zones.
    pub unresolved_geocodes: Vec<String>,
    /// GeoJSON geometry (lon/lat): the message's polygons and circles (circles as 32-gons), else its zones' shapes.
    pub geometry: serde_json::Value,
    /// True only for Actual, Public-scope messages of a source configured `public = true`: the one case in which
    /// citizens may receive it (with `source` and `sender_name` named).
    pub public: bool,
    /// When we received the current message, Unix ms.
    pub received_ms: i64,
}

/// Which external alerts a composite rule condition accepts. The default accepts any Actual alert; narrow it by
/// event code (the stable, language-free field), source, or a minimum severity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalFilter {
    /// Taiwan profile event codes (`debrisFlow`, `rainfall`, …); empty accepts any.
    pub event_codes: Vec<String>,
    /// Source names from the inbound config; empty accepts any.
    pub sources: Vec<String>,
    /// CAP categories, one of which the alert must carry; empty accepts any.
    pub categories: Vec<cap::Category>,
    /// At least this severe (Extreme > Severe > Moderate > Minor); `Unknown` severity never satisfies it.
    pub min_severity: Option<cap::Severity>,
    /// Statuses that count. Default `[Actual]`: an exercise must not trip a real rule. A drill instance running
    /// in Exercise mode can ask for `[Exercise]`.
    pub statuses: Vec<cap::Status>,
}

impl Default for ExternalFilter {
    fn default() -> Self {
        ExternalFilter {
            event_codes: Vec::new(),
            sources: Vec::new(),
            categories: Vec::new(),
            min_severity: None,
            statuses: vec![cap::Status::Actual],
        }
    }
}

impl ExternalFilter {
    /// Any Actual alert with this event code.
    pub fn event_code(code: impl Into<String>) -> Self {
        ExternalFilter { event_codes: vec![code.into()], ..ExternalFilter::default() }
    }

    /// Whether `alert` passes the filter (time and zone are checked by the caller).
    pub fn accepts(&self, alert: &ExternalAlert) -> bool {
        let code_ok = self.event_codes.is_empty()
            || alert.event_code.as_ref().is_some_and(|c| self.event_codes.iter().any(|f| f == c));
        let source_ok = self.sources.is_empty() || self.sources.contains(&alert.source);
        let category_ok = self.categories.is_empty() || self.categories.iter().any(|c| alert.categories.contains(c));
        // The derived order is the XSD's (Extreme first), so "at least as severe" is `<=`, and Unknown is last.
        let severity_ok =
            self.min_severity.is_none_or(|min| alert.severity != cap::Severity::Unknown && alert.severity <= min);
        code_ok && source_ok && category_ok && severity_ok && self.statuses.contains(&alert.status)
    }
}
