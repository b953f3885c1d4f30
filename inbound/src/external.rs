//! The events that announce changes of external alerts, what a push answers, and how an alert is built from a CAP
//! message. The external alert itself and the filter composite rules use to ask "is zone Z under an external warning
//! of kind X?" are boundary types of `alerting` (`alerting::types`), which the rule engine reads; they are re-exported
//! here.

use serde::Serialize;

use encoders::cap::{
    format_cap_time, CapAlert, CapInfo, Certainty, Scope, Severity, Status, Urgency, TW_EVENT_CODE_NAME,
};

use super::areas::Placement;

pub use alerting::types::{ExternalAlert, ExternalFilter};

/// A change in the set of external alerts, in the order it happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum ExternalEvent {
    /// A new alert (an Alert, or an Update of a message we never saw).
    Raised(ExternalAlert),
    /// An Update replaced the alert's content; `id` unchanged, `version` + 1.
    Updated(ExternalAlert),
    /// A Cancel ended it, or an Update that merged several alerts superseded it (`by` is then that Update's id).
    Cancelled {
        alert: ExternalAlert,
        /// `identifier` of the Cancel (or superseding Update) message.
        by: String,
    },
    /// Its `expires` passed.
    Expired { alert: ExternalAlert },
}

impl ExternalEvent {
    /// The alert the event is about.
    pub fn alert(&self) -> &ExternalAlert {
        match self {
            ExternalEvent::Raised(a) | ExternalEvent::Updated(a) => a,
            ExternalEvent::Cancelled { alert, .. } | ExternalEvent::Expired { alert } => alert,
        }
    }

    /// `raised`, `updated`, `cancelled`, `expired`.
    pub fn kind(&self) -> &'static str {
        match self {
            ExternalEvent::Raised(_) => "raised",
            ExternalEvent::Updated(_) => "updated",
            ExternalEvent::Cancelled { .. } => "cancelled",
            ExternalEvent::Expired { .. } => "expired",
        }
    }
}

/// What happened to a message that was taken (pushes answer 2xx with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PushOutcome {
    /// A new external alert.
    Raised { id: String },
    /// An active alert changed.
    Updated { id: String },
    /// An active alert ended.
    Cancelled { id: String },
    /// Valid, but nothing changed; `why` says which rule applied.
    Ignored { why: Ignored },
}

/// Why a valid message changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Ignored {
    /// Same (sender, identifier, sent) seen before: feeds repeat entries, senders retry.
    Duplicate,
    /// Its `expires` has already passed.
    Expired,
    /// An Update or Cancel older than the alert's current message (arrived out of order), or an original that an
    /// Update we already hold replaced.
    Superseded,
    /// A Cancel of nothing active (never seen, already expired or cancelled).
    CancelOfUnknown,
    /// An Update of an alert that was cancelled: a cancelled warning is not revived.
    AfterCancel,
    /// msgType Ack or Error: acknowledgements between systems, not warnings.
    NotAnAlert,
}

impl Ignored {
    /// Every value, for pre-registering metrics.
    pub const ALL: &'static [Ignored] = &[
        Ignored::Duplicate,
        Ignored::Expired,
        Ignored::Superseded,
        Ignored::CancelOfUnknown,
        Ignored::AfterCancel,
        Ignored::NotAnAlert,
    ];

    /// Metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Ignored::Duplicate => "duplicate",
            Ignored::Expired => "expired",
            Ignored::Superseded => "superseded",
            Ignored::CancelOfUnknown => "cancel_of_unknown",
            Ignored::AfterCancel => "after_cancel",
            Ignored::NotAnAlert => "not_an_alert",
        }
    }
}

impl PushOutcome {
    /// Metrics label / response word.
    pub fn label(&self) -> &'static str {
        match self {
            PushOutcome::Raised { .. } => "raised",
            PushOutcome::Updated { .. } => "updated",
            PushOutcome::Cancelled { .. } => "cancelled",
            PushOutcome::Ignored { why } => why.label(),
        }
    }
}

/// Builds the alert for a CAP Alert or Update message already placed.
pub(crate) fn build(
    cap: &CapAlert,
    placement: Placement,
    source: &str,
    source_public: bool,
    default_lifetime_ms: i64,
    now_ms: i64,
) -> ExternalAlert {
    let zh = find_info(cap, "zh");
    let en = find_info(cap, "en");
    let primary = zh.or(cap.infos.first());
    let sent_ms = unix_ms(cap.sent);
    let latest_expires = cap.infos.iter().filter_map(|i| i.expires).max_by_key(|t| unix_ms(*t));
    let effective_ms = cap.infos.iter().filter_map(|i| i.effective).map(unix_ms).min().unwrap_or(sent_ms);
    let expires_ms = latest_expires.map(unix_ms).unwrap_or(sent_ms.saturating_add(default_lifetime_ms));
    let text = |info: Option<&CapInfo>, f: fn(&CapInfo) -> &Option<String>| info.and_then(|i| f(i).clone());
    ExternalAlert {
        id: String::new(),
        version: 1,
        source: source.to_string(),
        identifier: cap.identifier.clone(),
        sender: cap.sender.clone(),
        // A parsed time always formats (the reader checked it); the fallback only keeps this total.
        sent: format_cap_time(cap.sent).unwrap_or_default(),
        sent_ms,
        status: cap.status,
        msg_type: cap.msg_type,
        scope: cap.scope,
        event: primary.map(|i| i.event.clone()).unwrap_or_default(),
        event_code: cap
            .infos
            .iter()
            .flat_map(|i| &i.event_codes)
            .find(|c| c.value_name.trim() == TW_EVENT_CODE_NAME)
            .map(|c| c.value.trim().to_string()),
        categories: primary.map(|i| i.categories.clone()).unwrap_or_default(),
        severity: primary.map_or(Severity::Unknown, |i| i.severity),
        urgency: primary.map_or(Urgency::Unknown, |i| i.urgency),
        certainty: primary.map_or(Certainty::Unknown, |i| i.certainty),
        sender_name: text(primary, |i| &i.sender_name),
        headline_zh: text(zh, |i| &i.headline),
        headline_en: text(en, |i| &i.headline),
        description_zh: text(zh, |i| &i.description),
        description_en: text(en, |i| &i.description),
        instruction_zh: text(zh, |i| &i.instruction),
        instruction_en: text(en, |i| &i.instruction),
        web: text(primary, |i| &i.web),
        area_desc: primary.map(|i| i.areas.iter().map(|a| a.area_desc.clone()).collect()).unwrap_or_default(),
        effective_ms,
        expires: latest_expires.and_then(|t| format_cap_time(t).ok()),
        expires_ms,
        zone_ids: placement.zone_ids,
        geocodes: placement.geocodes,
        unresolved_geocodes: placement.unresolved_geocodes,
        geometry: placement.geometry,
        // The one gate between an agency's drill and a citizen's phone: every condition must hold.
        public: source_public && cap.status == Status::Actual && cap.scope == Scope::Public,
        received_ms: now_ms,
    }
}

/// The first info whose language starts with `prefix` (`zh` matches zh-TW and zh-Hant-TW).
fn find_info<'a>(cap: &'a CapAlert, prefix: &str) -> Option<&'a CapInfo> {
    cap.infos.iter().find(|i| {
        let lang = i.language.to_ascii_lowercase();
        lang == prefix || lang.starts_with(&format!("{prefix}-"))
    })
}

/// Unix milliseconds of a CAP time (whole seconds, so no overflow for years 0–9999).
pub(crate) fn unix_ms(t: time::OffsetDateTime) -> i64 {
    t.unix_timestamp().saturating_mul(1000)
}
