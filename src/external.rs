//! Alerts from partner agencies (inbound CAP, the `inbound` crate) onto our channels.
//!
//! Operators see every external alert, marked with its source and status. Every change is also handed to the rule
//! engine (`RuleEngine::set_external`), so composite rules that take partner warnings as conditions follow them. Citizens receive one only when the source
//! is configured public and the message is Actual with scope Public (`ExternalAlert::public`), with the source named.

use std::sync::Arc;

use alerting::types::ExternalAlert;
use inbound::ExternalEvent;
use serde_json::json;
use tokio::sync::mpsc;

use crate::app::App;
use crate::audience::AlertBroadcast;
use crate::clock::now_ms;

/// Forwards inbound events to the websocket channels until the inbound side stops.
pub async fn forward(app: Arc<App>, mut events: mpsc::Receiver<ExternalEvent>) {
    while let Some(event) = events.recv().await {
        let (alert, state) = match &event {
            ExternalEvent::Raised(a) => (a, "raised"),
            ExternalEvent::Updated(a) => (a, "updated"),
            ExternalEvent::Cancelled { alert, .. } => (alert, "cancelled"),
            ExternalEvent::Expired { alert } => (alert, "cleared"),
        };
        tracing::info!(id = %alert.id, source = %alert.source, state, public = alert.public, "external alert");
        let _ = app.channels.alerts.send(Arc::new(broadcast(alert, state)));
        rules_follow(&app);
    }
}

/// Composite rules with `external` conditions follow the warnings now active (raised, updated, ended).
fn rules_follow(app: &App) {
    let Some(inbound) = &app.partners.inbound else { return };
    let mut findings = Vec::new();
    let active = inbound.active();
    app.alerts.engine.lock().set_external(active, now_ms(), &mut findings);
    if findings.is_empty() {
        return;
    }
    app.apply_findings(findings);
}

/// One external alert change, rendered for operators and (when public) for citizens.
pub fn broadcast(alert: &ExternalAlert, state: &str) -> AlertBroadcast {
    let operator = json!({"type": "external_alert", "state": state, "alert": alert}).to_string();
    let citizen = alert.public.then(|| {
        let frame = |lang: &str| {
            let headline = match lang {
                "en" => alert.headline_en.as_deref().or(alert.headline_zh.as_deref()),
                _ => alert.headline_zh.as_deref().or(alert.headline_en.as_deref()),
            };
            json!({
                "type": "alert", "id": alert.id, "version": alert.version, "state": state,
                "mode": "Actual", "is_real": true, "event": alert.event,
                "severity": alert.severity, "urgency": alert.urgency, "certainty": alert.certainty,
                "headline": headline.unwrap_or(&alert.event), "lang": lang, "area": alert.geometry,
                "area_name": alert.area_desc.join("、"), "sent": alert.sent,
                "source": alert.source, "sender_name": alert.sender_name, "external": true,
            })
            .to_string()
        };
        (frame("zh-TW"), frame("en"))
    });
    AlertBroadcast {
        area_ids: alert.zone_ids.clone(),
        id: alert.id.clone(),
        version: alert.version,
        is_active: matches!(state, "raised" | "updated"),
        operator,
        citizen,
    }
}
