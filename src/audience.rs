//! What the audiences receive: each alert change rendered once per audience ([`AlertBroadcast`]: the operators'
//! frame, the citizens' zh-TW and en frames), the citizens' alert frame ([`CitizenAlert`]) and language ([`Lang`]),
//! and the operators' map frames that sit at one place ([`MapDelta`]).
//!
//! These types cross the binary: the hot path and the operators' commands make them (`App::publish`), partner
//! agencies' alerts (`external.rs`) and the cluster's alerts (`scale_out/remote_alerts.rs`) too, and the websockets
//! (`web/operator.rs`, `web/citizen.rs`) send them. They depend on nothing of the binary, so none of those files has to
//! import another to speak to the sockets.

use std::collections::HashSet;

use alerting::message::AlertMessage;
use alerting::Mode;
use serde::Serialize;

/// A frame for the operators' map that sits at one place (a sensor update, a report cluster), so that an operator
/// socket filtered to a bounding box or region can skip it without parsing it. `at` is `(lat, lon)`; `None` passes
/// every filter.
#[derive(Debug, Clone)]
pub struct MapDelta {
    /// Where the frame sits, for the sockets' map filters.
    pub at: Option<(f64, f64)>,
    /// The JSON text, rendered once for every operator socket.
    pub frame: String,
}

/// One alert change, serialised once per audience so that fan-out to many sockets costs no JSON work per socket.
pub struct AlertBroadcast {
    /// The zones the alert covers: a citizen subscribed to a place in any of them receives it.
    pub area_ids: Vec<String>,
    /// The alert's id and version: a citizen's replay after a reconnect skips what it has already seen.
    pub id: String,
    pub version: u32,
    /// Ended alerts are replayed only to whoever saw them active.
    pub is_active: bool,
    /// The operators' frame (every language).
    pub operator: String,
    /// The citizens' frames, zh-TW and en; `None` for what must not reach the public (non-public external sources).
    pub citizen: Option<(String, String)>,
}

impl AlertBroadcast {
    /// `public`: whether the public channels may carry this version (`Alert::is_public`: not held by an approval gate,
    /// not operators-only).
    pub fn new(message: AlertMessage, public: bool) -> Self {
        // The area as phones test their position against it (cell broadcast's IE 46 octets), only for frames the
        // public gets; worked out once per area and remembered.
        let geofence = if public { dissemination::channel::push::geofence::for_area(&message.area) } else { None };
        let citizen = |lang: &str| {
            let mut frame = CitizenAlert::new(&message, lang);
            frame.warning_area_coordinates = geofence.as_deref();
            serde_json::to_string(&frame).unwrap_or_default()
        };
        Self {
            area_ids: vec![message.area_id.clone()],
            id: message.id.clone(),
            version: message.version,
            is_active: message.state.is_active(),
            citizen: public.then(|| (citizen("zh-TW"), citizen("en"))),
            operator: serde_json::to_string(&message).unwrap_or_default(),
        }
    }

    /// The frame for a citizen subscribed in `lang` whose places lie in `zones`, if this alert is for them.
    pub fn citizen_frame(&self, zones: &HashSet<String>, lang: Lang) -> Option<&str> {
        let (zh, en) = self.citizen.as_ref()?;
        if !self.area_ids.iter().any(|a| zones.contains(a)) {
            return None;
        }
        Some(match lang {
            Lang::ZhTw => zh,
            Lang::En => en,
        })
    }
}

/// The languages the citizen channel serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum Lang {
    #[serde(rename = "zh-TW")]
    ZhTw,
    #[serde(rename = "en")]
    En,
}

/// What a citizen's app receives: the INTERFACE alert frame with the headline in the subscribed language, and a
/// label that no app can miss when the alert is a drill or a test.
///
/// The fields are the wire frame (`docs/API.md`); those without a note are the alert's own, copied from the
/// operators' frame.
#[derive(Debug, Serialize)]
pub struct CitizenAlert<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: &'a str,
    pub version: u32,
    pub state: alerting::AlertState,
    pub mode: Mode,
    /// False for Exercise and Test: apps must never present such an alert as real.
    pub is_real: bool,
    /// "演練 Drill" / "測試 Test" for non-Actual alerts, absent for real ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<&'static str>,
    pub event: &'a str,
    pub severity: alerting::types::Severity,
    pub urgency: alerting::types::Urgency,
    pub certainty: alerting::types::Certainty,
    pub headline: &'a str,
    pub lang: &'static str,
    pub area: &'a serde_json::Value,
    pub area_name: &'a str,
    pub sent: &'a str,
    pub cap: &'a str,
    /// The alerts behind this warning (one public warning per hazard and area), highest first.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub contributors: &'a [alerting::publication::Contributor],
    /// The area as a phone tests its position against it: the Warning-Area-Coordinates octets cell broadcast
    /// carries (outward outline, 22-bit grid), base64. The app alarms only a position inside it (or within the
    /// position's accuracy), and anyone whose position is unknown (`web/geofence.js`). Absent: alarm as before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning_area_coordinates: Option<&'a str>,
}

impl<'a> CitizenAlert<'a> {
    pub fn new(m: &'a AlertMessage, lang: &str) -> Self {
        let (headline, lang) = if lang == "en" { (&m.headlines.en, "en") } else { (&m.headlines.zh_tw, "zh-TW") };
        let label = match m.mode {
            Mode::Actual => None,
            Mode::Exercise => Some(if lang == "en" { "Drill" } else { "演練" }),
            Mode::Test => Some(if lang == "en" { "Test" } else { "測試" }),
        };
        CitizenAlert {
            kind: "alert",
            id: &m.id,
            version: m.version,
            state: m.state,
            mode: m.mode,
            is_real: m.mode == Mode::Actual,
            label,
            event: &m.event,
            severity: m.severity,
            urgency: m.urgency,
            certainty: m.certainty,
            headline,
            lang,
            area: &m.area,
            area_name: &m.area_name,
            sent: &m.sent,
            cap: &m.cap,
            contributors: &m.contributors,
            warning_area_coordinates: None,
        }
    }
}
