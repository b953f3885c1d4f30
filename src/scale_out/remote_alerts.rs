//! A fan-out node's book of the cluster's alerts ([`RemoteAlerts`]): the newest version of each, from the workers'
//! retained `alerts/{region}/{id}` messages. It needs nothing of the running server, so [`crate::app::App`] can hold it
//! without importing the roles.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use alerting::message::{AlertMessage, CommentMessage, Headlines};
use alerting::types::{Certainty, Severity, Urgency};
use alerting::{AlertState, Mode};
use parking_lot::RwLock;
use prometheus::{register_int_counter_vec, IntCounterVec};
use serde::Deserialize;

use crate::audience::{AlertBroadcast, Lang};

pub(super) static ALERTS_RECEIVED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "dc_cluster_alerts_received_total",
        "Alert messages a fan-out node received, by outcome (applied, stale, removed, malformed, outside_region)",
        &["outcome"]
    )
    .expect("metric registers")
});

/// The alert as a worker publishes it (the operator frame's fields plus the cluster's).
#[derive(Deserialize)]
struct WireAlert {
    id: String,
    version: u32,
    state: AlertState,
    mode: Mode,
    event: String,
    severity: Severity,
    urgency: Urgency,
    certainty: Certainty,
    headline: String,
    headlines: WireHeadlines,
    area: serde_json::Value,
    area_id: String,
    area_name: String,
    sent: String,
    cap: String,
    level: String,
    value: f64,
    sensors: Vec<String>,
    acknowledged_by: Option<String>,
    /// Absent from workers that predate it.
    #[serde(default)]
    approved_by: Option<String>,
    #[serde(default)]
    cancelled_by: Option<String>,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    comments: Vec<CommentMessage>,
    #[serde(default)]
    reports: Vec<String>,
    #[serde(default)]
    observed: String,
    #[serde(default)]
    held: Option<String>,
    public: bool,
    /// The county the worker published it for; must be the topic's (checked).
    #[serde(default)]
    region: Option<String>,
}

#[derive(Deserialize)]
struct WireHeadlines {
    #[serde(rename = "zh-TW")]
    zh_tw: String,
    en: String,
}

struct Remote {
    /// The payload as received (with `worker`, `region`, `public`): what operators see.
    operator: serde_json::Value,
    broadcast: Arc<AlertBroadcast>,
    /// When we learnt that it ended: forgotten `closed_retention_h` later, like the worker's retained message (whose
    /// removal we may miss while disconnected).
    ended_ms: Option<i64>,
}

/// A fan-out node's picture of the cluster's alerts: the newest version of each, from `alerts/{region}/{id}`.
#[derive(Default)]
pub struct RemoteAlerts {
    alerts: RwLock<HashMap<String, Remote>>,
    /// The county of every zone this node knows (zone id → county code), to check that an alert published under
    /// `alerts/{region}/…` is for an area of that region: with the broker's ACLs letting each worker publish only under
    /// its own regions, a worker cannot put out an alert for another county's areas. Empty: not checked.
    area_regions: RwLock<HashMap<String, String>>,
}

impl RemoteAlerts {
    /// The zones' counties, set once at a fan-out node's start.
    pub fn set_area_regions(&self, regions: HashMap<String, String>) {
        *self.area_regions.write() = regions;
    }

    /// Folds one message in; returns the change to broadcast when it is news (a version newer than what we hold).
    /// Replays of versions already seen — a worker's resend after a restart, retained messages after our own
    /// reconnect — return `None`, so no citizen sees an alert twice. Ended alerts older than `forget_ended_before_ms`
    /// are dropped on the way.
    pub fn apply(
        &self,
        topic: &str,
        payload: &[u8],
        now_ms: i64,
        forget_ended_before_ms: i64,
    ) -> Option<Arc<AlertBroadcast>> {
        let outcome = |o: &str| ALERTS_RECEIVED.with_label_values(&[o]).inc();
        let malformed = |why: String| {
            outcome("malformed");
            tracing::warn!(topic, reason = %why, "alert message refused");
            None
        };
        let mut parts = topic.split('/');
        let (Some("alerts"), Some(region), Some(id), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return malformed("topic is not alerts/{region}/{id}".into());
        };
        if payload.is_empty() {
            // The worker removed an ended alert from the broker.
            self.alerts.write().remove(id);
            outcome("removed");
            return None;
        }
        let wire: WireAlert = match serde_json::from_slice(payload) {
            Ok(w) => w,
            Err(e) => return malformed(format!("payload: {e}")),
        };
        if wire.id != id {
            return malformed(format!(
                "topic names alert `{id}`, payload `{}`",
                wire.id.chars().take(80).collect::<String>()
            ));
        }
        // An alert for another county's area, or naming another county than its topic, is refused: the topic's
        // region is what the broker's ACLs vouch for. (An area this node does not know reaches no citizen anyway.)
        let area_region = self.area_regions.read().get(&wire.area_id).cloned();
        if wire.region.as_deref() != Some(region) || area_region.is_some_and(|r| r != region) {
            outcome("outside_region");
            tracing::warn!(topic, area = %wire.area_id.chars().take(80).collect::<String>(), "alert message for an area outside its topic's region refused");
            return None;
        }
        let operator: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
        let mut alerts = self.alerts.write();
        if alerts.get(id).is_some_and(|known| known.broadcast.version >= wire.version) {
            outcome("stale");
            return None;
        }
        let public = wire.public;
        let message = AlertMessage {
            kind: "alert",
            id: wire.id,
            version: wire.version,
            state: wire.state,
            mode: wire.mode,
            event: wire.event,
            severity: wire.severity,
            urgency: wire.urgency,
            certainty: wire.certainty,
            headline: wire.headline,
            headlines: Headlines { zh_tw: wire.headlines.zh_tw, en: wire.headlines.en },
            area: wire.area,
            area_id: wire.area_id,
            area_name: wire.area_name,
            sent: wire.sent,
            observed: wire.observed,
            held: wire.held,
            cap: wire.cap,
            level: wire.level,
            value: wire.value,
            sensors: wire.sensors,
            acknowledged_by: wire.acknowledged_by,
            approved_by: wire.approved_by,
            cancelled_by: wire.cancelled_by,
            rule: wire.rule,
            comments: wire.comments,
            reports: wire.reports,
            public: None,
            contributors: Vec::new(),
            // The operators' frame is the payload itself (which carries it); the citizens' frames do not link.
            caused_by: None,
        };
        let mut broadcast = AlertBroadcast::new(message, public);
        broadcast.operator = String::from_utf8_lossy(payload).into_owned();
        let broadcast = Arc::new(broadcast);
        let ended_ms = (!broadcast.is_active).then_some(now_ms);
        alerts.insert(id.to_string(), Remote { operator, broadcast: Arc::clone(&broadcast), ended_ms });
        alerts.retain(|_, r| r.ended_ms.is_none_or(|t| t >= forget_ended_before_ms));
        outcome("applied");
        Some(broadcast)
    }

    /// Active alerts' operator frames, for the operators' snapshot.
    pub fn active_operator(&self) -> Vec<serde_json::Value> {
        self.alerts.read().values().filter(|r| r.broadcast.is_active).map(|r| r.operator.clone()).collect()
    }

    /// Every alert's operator frame, for `GET /api/v1/alerts`.
    pub fn all_operator(&self) -> Vec<serde_json::Value> {
        self.alerts.read().values().map(|r| r.operator.clone()).collect()
    }

    /// What a (re)connecting citizen missed, by the same rule as for the local book (`web/citizen.rs`): active
    /// alerts for its zones newer than what it saw, and the end of any it saw.
    pub fn citizen_replay(&self, zones: &HashSet<String>, lang: Lang, seen: &HashMap<&str, u32>) -> Vec<String> {
        self.alerts
            .read()
            .values()
            .map(|r| &r.broadcast)
            .filter(|b| {
                let newer = seen.get(b.id.as_str()).is_none_or(|v| b.version > *v);
                newer && (b.is_active || seen.contains_key(b.id.as_str()))
            })
            .filter_map(|b| b.citizen_frame(zones, lang).map(str::to_string))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(id: &str, version: u32, state: &str) -> String {
        serde_json::json!({
            "type": "alert", "id": id, "version": version, "state": state, "mode": "Actual", "event": "heavy_rain",
            "severity": "Severe", "urgency": "Immediate", "certainty": "Observed", "headline": "豪雨（神木）",
            "headlines": {"zh-TW": "豪雨（神木）", "en": "Extremely heavy rain (Shenmu)"}, "area": null,
            "area_id": "dfa-xinyi-shenmu", "area_name": "神木", "sent": "2026-11-26T18:00:00+08:00",
            "cap": format!("/cap/{id}.{version}.xml"), "level": "豪雨", "value": 120.0, "sensors": ["RG0001"],
            "acknowledged_by": null, "public": true, "worker": "w1", "region": "10008", "worker_url": "http://w1"
        })
        .to_string()
    }

    #[test]
    fn fanout_keeps_the_newest_version_and_refuses_bad_messages() {
        let remote = RemoteAlerts::default();
        let zones: HashSet<String> = ["dfa-xinyi-shenmu".to_string()].into();
        let t = "alerts/10008/A1";
        let first = remote.apply(t, sample("A1", 1, "raised").as_bytes(), 1_000, 0).expect("news");
        assert!(first.citizen_frame(&zones, Lang::En).unwrap().contains("Extremely heavy rain"));
        assert!(first.operator.contains("\"worker\":\"w1\""), "{}", first.operator);
        // A resend of the same version (a restarted worker) and an older one are not news.
        assert!(remote.apply(t, sample("A1", 1, "raised").as_bytes(), 1_000, 0).is_none());
        assert!(remote.apply(t, sample("A1", 2, "updated").as_bytes(), 1_000, 0).is_some());
        assert!(remote.apply(t, sample("A1", 1, "raised").as_bytes(), 1_000, 0).is_none());
        // Bad messages are refused, and what we hold survives them.
        assert!(remote.apply(t, b"{not json", 1_000, 0).is_none());
        assert!(remote.apply("alerts/10008/A2", sample("A1", 3, "updated").as_bytes(), 1_000, 0).is_none());
        assert!(remote.apply("alerts/A1", sample("A1", 3, "updated").as_bytes(), 1_000, 0).is_none());
        assert_eq!(remote.active_operator().len(), 1);
        assert_eq!(remote.active_operator()[0]["version"], 2);
        let seen: HashMap<&str, u32> = [("A1", 1)].into();
        assert_eq!(remote.citizen_replay(&zones, Lang::ZhTw, &seen).len(), 1);
        let seen: HashMap<&str, u32> = [("A1", 2)].into();
        assert!(remote.citizen_replay(&zones, Lang::ZhTw, &seen).is_empty());
        // An ended alert: replayed only to whoever saw it; an empty retained message removes it.
        assert!(remote.apply(t, sample("A1", 3, "cleared").as_bytes(), 1_000, 0).is_some());
        assert!(remote.citizen_replay(&zones, Lang::ZhTw, &HashMap::new()).is_empty());
        assert_eq!(remote.citizen_replay(&zones, Lang::ZhTw, &seen).len(), 1);
        assert!(remote.apply(t, b"", 1_000, 0).is_none());
        assert!(remote.all_operator().is_empty());
        // An ended alert whose removal we missed is forgotten after the retention.
        assert!(remote.apply(t, sample("A1", 4, "cleared").as_bytes(), 1_000, 0).is_some());
        assert!(remote.apply("alerts/10008/A9", sample("A9", 1, "raised").as_bytes(), 5_000, 2_000).is_some());
        let left: Vec<_> = remote.all_operator().iter().map(|a| a["id"].clone()).collect();
        assert_eq!(left, [json!("A9")]);
    }

    #[test]
    fn an_alert_outside_its_topics_region_is_refused() {
        let remote = RemoteAlerts::default();
        let refused = || ALERTS_RECEIVED.with_label_values(&["outside_region"]).get();
        let before = refused();
        // The payload says 10008 (Nantou); published under Kaohsiung's topic, whose worker may not speak for it.
        assert!(remote.apply("alerts/64000/A1", sample("A1", 1, "raised").as_bytes(), 1_000, 0).is_none());
        // The payload claims Kaohsiung, but Shenmu is a Nantou area.
        remote.set_area_regions([("dfa-xinyi-shenmu".to_string(), "10008".to_string())].into());
        let forged = sample("A2", 1, "raised").replace("\"region\":\"10008\"", "\"region\":\"64000\"");
        assert!(forged.contains("\"region\":\"64000\""), "{forged}");
        assert!(remote.apply("alerts/64000/A2", forged.as_bytes(), 1_000, 0).is_none());
        assert_eq!(refused(), before + 2);
        assert!(remote.all_operator().is_empty());
        // The same alert under its own region is applied.
        assert!(remote.apply("alerts/10008/A1", sample("A1", 1, "raised").as_bytes(), 1_000, 0).is_some());
    }
}
