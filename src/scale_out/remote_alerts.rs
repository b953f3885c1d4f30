//! A fan-out node's book of the cluster's alerts ([`RemoteAlerts`]): the newest version of each, from the workers'
//! retained `alerts/{region}/{id}` messages. It needs nothing of the running server, so [`crate::app::App`] can hold it
//! without importing the roles.
//!
//! Nothing of a message is read before its signature is verified against the trusted workers' keys (`signing.rs`);
//! then its region is checked against the topic's and the key's, and its version against the newest this node has
//! held for that id, including alerts it has since forgotten (a tombstone), so a replayed older version, signed or
//! not, never rolls an alert back. Refusals are counted by reason and logged at most once a minute per reason.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;

use alerting::message::{AlertMessage, CommentMessage, Headlines};
use alerting::types::{Certainty, Severity, Urgency};
use alerting::{AlertState, Mode};
use parking_lot::RwLock;
use prometheus::{register_int_counter_vec, IntCounterVec};
use serde::Deserialize;

use super::signing::TrustedKeys;
use crate::audience::{AlertBroadcast, Lang};

pub(super) static ALERTS_RECEIVED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "dc_cluster_alerts_received_total",
        "Alert messages a fan-out node received, by outcome (applied; stale: a version already held; removed; refused: \
         malformed, unsigned, unknown_key, bad_signature, outside_region, replayed)",
        &["outcome"]
    )
    .expect("metric registers")
});

/// Every `dc_cluster_alerts_received_total` outcome, registered at zero at start.
pub(super) const OUTCOMES: [&str; 9] = [
    "applied",
    "stale",
    "removed",
    "malformed",
    "unsigned",
    "unknown_key",
    "bad_signature",
    "outside_region",
    "replayed",
];

/// Forgotten alerts whose last version is remembered (so that a replay of an old version is refused after the
/// alert left the broker); past this many, the oldest half is dropped.
const TOMBSTONES_MAX: usize = 100_000;

/// How often a refusal of one reason is logged (they are counted every time): a flood of forged messages must not
/// become a flood of log lines.
const LOG_EVERY_MS: i64 = 60_000;

/// The alert as a worker publishes it (the operator frame's fields plus the cluster's).
#[derive(Deserialize)]
struct WireAlert {
    /// `alert`: one alert of a worker's book, for operators; `public_warning`: what the public hears (one warning per
    /// hazard, area and mode, `alerting::publication`), for operators and citizens.
    #[serde(rename = "type")]
    kind: String,
    /// A public warning's alerts, highest first.
    #[serde(default)]
    contributors: Vec<alerting::publication::Contributor>,
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
    /// The alert frame as received (with `worker`, `region`, `public`, and `signed_by`): what operators see.
    operator: serde_json::Value,
    /// A public warning (`type` `public_warning`) rather than one alert of a worker's book.
    warning: bool,
    broadcast: Arc<AlertBroadcast>,
    /// When we learnt that it ended: forgotten `closed_retention_h` later, like the worker's retained message (whose
    /// removal we may miss while disconnected).
    ended_ms: Option<i64>,
}

/// A fan-out node's picture of the cluster's alerts: the newest version of each, from `alerts/{region}/{id}`.
#[derive(Default)]
pub struct RemoteAlerts {
    alerts: RwLock<HashMap<String, Remote>>,
    /// The workers' keys a message must be signed with; empty (until a fan-out node starts): everything is refused.
    trusted: RwLock<Arc<TrustedKeys>>,
    /// The last version of each alert this node forgot (removed from the broker, or past the retention) and when:
    /// an old signed version replayed afterwards is refused, not taken for a new alert.
    forgotten: Mutex<HashMap<String, (u32, i64)>>,
    /// Per refusal reason: when it was last logged, and how many since.
    refusals_logged: Mutex<HashMap<&'static str, (i64, u64)>>,
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

    /// The workers' keys messages must be signed with, set once at a fan-out node's start.
    pub fn set_trusted(&self, trusted: Arc<TrustedKeys>) {
        *self.trusted.write() = trusted;
    }

    /// Counts a refused message by `reason` and logs it, at most once a minute per reason (with how many were
    /// refused since the last line).
    fn refuse(
        &self,
        topic: &str,
        reason: &'static str,
        why: &dyn std::fmt::Display,
        now_ms: i64,
    ) -> Option<Arc<AlertBroadcast>> {
        ALERTS_RECEIVED.with_label_values(&[reason]).inc();
        let mut logged = self.refusals_logged.lock();
        let (last, since) = logged.entry(reason).or_insert((i64::MIN, 0));
        *since += 1;
        if now_ms.saturating_sub(*last) >= LOG_EVERY_MS {
            let topic: String = topic.chars().take(120).collect();
            tracing::warn!(topic, reason, why = %why, refused_since_last_line = *since, "alert message refused (logged once a minute per reason)");
            *last = now_ms;
            *since = 0;
        }
        None
    }

    /// Remembers the last version of an alert this node lets go of.
    fn forget(&self, id: &str, version: u32, now_ms: i64) {
        let mut forgotten = self.forgotten.lock();
        let slot = forgotten.entry(id.to_string()).or_insert((version, now_ms));
        *slot = (slot.0.max(version), now_ms);
        if forgotten.len() > TOMBSTONES_MAX {
            let mut times: Vec<i64> = forgotten.values().map(|(_, t)| *t).collect();
            times.sort_unstable();
            let cutoff = times[times.len() / 2];
            forgotten.retain(|_, (_, t)| *t > cutoff);
        }
    }

    /// Folds one message in; returns the change to broadcast when it is news (a version newer than what we hold).
    /// Replays of versions already seen — a worker's resend after a restart, retained messages after our own
    /// reconnect — return `None`, so no citizen sees an alert twice. Ended alerts older than `forget_ended_before_ms`
    /// are dropped on the way. Nothing is read of a message whose signature does not verify.
    pub fn apply(
        &self,
        topic: &str,
        payload: &[u8],
        now_ms: i64,
        forget_ended_before_ms: i64,
    ) -> Option<Arc<AlertBroadcast>> {
        let outcome = |o: &str| ALERTS_RECEIVED.with_label_values(&[o]).inc();
        let mut parts = topic.split('/');
        let (Some("alerts"), Some(region), Some(id), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return self.refuse(topic, "malformed", &"topic is not alerts/{region}/{id}", now_ms);
        };
        if payload.is_empty() {
            // The worker removed an ended alert from the broker. An empty message cannot be signed, so it may only
            // take away what has already ended: anyone could send one, and an active warning must stay.
            let mut alerts = self.alerts.write();
            if alerts.get(id).is_some_and(|known| known.broadcast.is_active) {
                drop(alerts);
                return self.refuse(topic, "unsigned", &"an empty message cannot end an active alert", now_ms);
            }
            if let Some(known) = alerts.remove(id) {
                self.forget(id, known.broadcast.version, now_ms);
            }
            outcome("removed");
            return None;
        }
        let opened = match self.trusted.read().open(topic, region, payload) {
            Ok(opened) => opened,
            Err(refusal) => return self.refuse(topic, refusal.reason(), &refusal, now_ms),
        };
        let operator: serde_json::Value = match serde_json::from_str(opened.alert) {
            Ok(v) => v,
            Err(e) => return self.refuse(topic, "malformed", &format!("alert: {e}"), now_ms),
        };
        self.fold(topic, region, id, operator, opened.signer, now_ms, forget_ended_before_ms)
    }

    /// [`RemoteAlerts::apply`] for a message of the NATS backbone's alerts stream (`dc.alerts.{region}.{id}`,
    /// `backbone_alerts.rs`): the same checks — signature over the subject, the key's regions, the subject's region
    /// against the payload's and its area's, versions never going back — on the frame inside the body. The stream
    /// has no empty "removal" message: an ended alert's last version is its end.
    pub fn apply_backbone(
        &self,
        subject: &str,
        payload: &[u8],
        now_ms: i64,
        forget_ended_before_ms: i64,
    ) -> Option<Arc<AlertBroadcast>> {
        let Some((region, id)) = cluster::alerts::parse_subject(subject) else {
            return self.refuse(subject, "malformed", &"subject is not dc.alerts.{region}.{id}", now_ms);
        };
        let opened = match self.trusted.read().open(subject, region, payload) {
            Ok(opened) => opened,
            Err(refusal) => return self.refuse(subject, refusal.reason(), &refusal, now_ms),
        };
        let body: super::backbone_alerts::Body = match serde_json::from_str(opened.alert) {
            Ok(b) => b,
            Err(e) => return self.refuse(subject, "malformed", &format!("body: {e}"), now_ms),
        };
        self.fold(subject, region, id, body.fanout_frame(), opened.signer, now_ms, forget_ended_before_ms)
    }

    /// The checks and the book after a message's signature verified: `operator` is the alert frame with the
    /// cluster's fields, `signer` the key's holder.
    #[allow(clippy::too_many_arguments)]
    fn fold(
        &self,
        topic: &str,
        region: &str,
        id: &str,
        mut operator: serde_json::Value,
        signer: String,
        now_ms: i64,
        forget_ended_before_ms: i64,
    ) -> Option<Arc<AlertBroadcast>> {
        let outcome = |o: &str| ALERTS_RECEIVED.with_label_values(&[o]).inc();
        let wire = match WireAlert::deserialize(&operator) {
            Ok(w) => w,
            Err(e) => return self.refuse(topic, "malformed", &format!("alert: {e}"), now_ms),
        };
        if wire.id != id {
            let why = format!("topic names alert `{id}`, payload `{}`", wire.id.chars().take(80).collect::<String>());
            return self.refuse(topic, "malformed", &why, now_ms);
        }
        // An alert for another county's area, or naming another county than its topic, is refused: the topic's
        // region is what the signature (and the key's regions) vouch for. (An area this node does not know reaches
        // no citizen anyway.)
        let area_region = self.area_regions.read().get(&wire.area_id).cloned();
        if wire.region.as_deref() != Some(region) || area_region.is_some_and(|r| r != region) {
            let why =
                format!("area `{}` is outside the topic's region", wire.area_id.chars().take(80).collect::<String>());
            return self.refuse(topic, "outside_region", &why, now_ms);
        }
        if let Some(map) = operator.as_object_mut() {
            map.insert("signed_by".into(), signer.into());
        }
        let mut alerts = self.alerts.write();
        let held = alerts
            .get(id)
            .map(|known| known.broadcast.version)
            .or_else(|| self.forgotten.lock().get(id).map(|(v, _)| *v));
        match held {
            // The same version again: a worker's resend, our own reconnect. Normal, not logged.
            Some(v) if v == wire.version => {
                outcome("stale");
                return None;
            }
            // Older than what we have held: never normal (a worker's versions only grow), a replay.
            Some(v) if v > wire.version => {
                drop(alerts);
                let why = format!("version {} of an alert held at version {v}", wire.version);
                return self.refuse(topic, "replayed", &why, now_ms);
            }
            _ => {}
        }
        // As on a single process (`App::publish_all`): citizens hear only the public warnings, operators see both.
        let (kind, to_citizens) = match wire.kind.as_str() {
            "public_warning" => ("public_warning", wire.public),
            _ => ("alert", false),
        };
        let message = AlertMessage {
            kind,
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
            contributors: wire.contributors,
            // The operators' frame is the payload itself (which carries it); the citizens' frames do not link.
            caused_by: None,
        };
        let mut broadcast = AlertBroadcast::new(message, to_citizens);
        broadcast.operator = operator.to_string();
        let broadcast = Arc::new(broadcast);
        let ended_ms = (!broadcast.is_active).then_some(now_ms);
        let warning = kind == "public_warning";
        alerts.insert(id.to_string(), Remote { operator, warning, broadcast: Arc::clone(&broadcast), ended_ms });
        let mut expired = Vec::new();
        alerts.retain(|id, r| {
            let keep = r.ended_ms.is_none_or(|t| t >= forget_ended_before_ms);
            if !keep {
                expired.push((id.clone(), r.broadcast.version));
            }
            keep
        });
        drop(alerts);
        for (id, version) in expired {
            self.forget(&id, version, now_ms);
        }
        outcome("applied");
        Some(broadcast)
    }

    /// Active alerts' operator frames, for the operators' snapshot (`alerts`).
    pub fn active_operator(&self) -> Vec<serde_json::Value> {
        let alerts = self.alerts.read();
        alerts.values().filter(|r| !r.warning && r.broadcast.is_active).map(|r| r.operator.clone()).collect()
    }

    /// Active public warnings' frames, for the operators' snapshot (`public_warnings`, as on a single process).
    pub fn active_warnings(&self) -> Vec<serde_json::Value> {
        let alerts = self.alerts.read();
        alerts.values().filter(|r| r.warning && r.broadcast.is_active).map(|r| r.operator.clone()).collect()
    }

    /// Every alert's operator frame, for `GET /api/v1/alerts` (alerts, not warnings, as on a single process).
    pub fn all_operator(&self) -> Vec<serde_json::Value> {
        self.alerts.read().values().filter(|r| !r.warning).map(|r| r.operator.clone()).collect()
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
    use crate::scale_out::signing::{AlertSigner, TrustedKey};
    use serde_json::json;

    fn sample(id: &str, version: u32, state: &str) -> String {
        serde_json::json!({
            "type": "public_warning", "id": id, "version": version, "state": state, "mode": "Actual", "event": "heavy_rain",
            "severity": "Severe", "urgency": "Immediate", "certainty": "Observed", "headline": "豪雨（神木）",
            "headlines": {"zh-TW": "豪雨（神木）", "en": "Extremely heavy rain (Shenmu)"}, "area": null,
            "area_id": "dfa-xinyi-shenmu", "area_name": "神木", "sent": "2026-11-26T18:00:00+08:00",
            "cap": format!("/cap/{id}.{version}.xml"), "level": "豪雨", "value": 120.0, "sensors": ["RG0001"],
            "acknowledged_by": null, "public": true, "worker": "w1", "region": "10008", "worker_url": "http://w1"
        })
        .to_string()
    }

    #[test]
    fn citizens_hear_the_public_warnings_operators_see_the_alerts_too() {
        let (w, remote) = trusting(&[]);
        let zones: HashSet<String> = ["dfa-xinyi-shenmu".to_string()].into();
        // One alert of the worker's book: operators only, as on a single process.
        let a = "alerts/10008/A1";
        let alert = w.seal(a, &sample("A1", 1, "raised").replace("\"public_warning\"", "\"alert\""));
        let b = remote.apply(a, alert.as_bytes(), 1_000, 0).expect("news for operators");
        assert!(b.citizen_frame(&zones, Lang::En).is_none());
        // The public warning made of it: citizens too, with its contributors.
        let t = "alerts/10008/W-A1";
        let warning = sample("W-A1", 1, "raised").replace(
            "\"public\":true",
            r#""public":true,"contributors":[{"alert_id":"A1","rule":"debris-rain","level":"豪雨","level_en":"Heavy rain","severity":"Severe","value":120.0,"sensors":["RG0001"]}]"#,
        );
        let b = remote.apply(t, w.seal(t, &warning).as_bytes(), 1_000, 0).expect("news");
        let frame: serde_json::Value = serde_json::from_str(b.citizen_frame(&zones, Lang::En).unwrap()).unwrap();
        assert_eq!((frame["type"].as_str(), frame["id"].as_str()), (Some("alert"), Some("W-A1")), "{frame}");
        assert_eq!(frame["contributors"][0]["alert_id"], "A1", "{frame}");
        let replay = remote.citizen_replay(&zones, Lang::En, &HashMap::new());
        assert_eq!(replay.len(), 1, "{replay:?}");
        assert_eq!(remote.active_operator().len(), 1);
        assert_eq!(remote.active_warnings().len(), 1);
        assert_eq!(remote.all_operator().len(), 1);
    }

    /// A worker's key, and a fan-out book that trusts it (for `regions`; empty: every region).
    fn trusting(regions: &[&str]) -> (AlertSigner, RemoteAlerts) {
        let signer = AlertSigner::generate();
        let remote = RemoteAlerts::default();
        let regions = regions.iter().map(|r| r.to_string()).collect();
        let key = TrustedKey::new("w1", signer.public_key(), regions).unwrap();
        remote.set_trusted(Arc::new(TrustedKeys::new(vec![key])));
        (signer, remote)
    }

    /// `sample(id, version, state)` as the worker publishes it on `topic`.
    fn signed(signer: &AlertSigner, topic: &str, id: &str, version: u32, state: &str) -> Vec<u8> {
        signer.seal(topic, &sample(id, version, state)).into_bytes()
    }

    /// Every active frame held, alerts and warnings.
    fn active(remote: &RemoteAlerts) -> Vec<serde_json::Value> {
        remote.alerts.read().values().filter(|r| r.broadcast.is_active).map(|r| r.operator.clone()).collect()
    }

    /// Every frame held.
    fn all(remote: &RemoteAlerts) -> Vec<serde_json::Value> {
        remote.alerts.read().values().map(|r| r.operator.clone()).collect()
    }

    fn count(outcome: &str) -> u64 {
        ALERTS_RECEIVED.with_label_values(&[outcome]).get()
    }

    #[test]
    fn fanout_keeps_the_newest_version_and_refuses_bad_messages() {
        let (w, remote) = trusting(&[]);
        let zones: HashSet<String> = ["dfa-xinyi-shenmu".to_string()].into();
        let t = "alerts/10008/A1";
        let first = remote.apply(t, &signed(&w, t, "A1", 1, "raised"), 1_000, 0).expect("news");
        assert!(first.citizen_frame(&zones, Lang::En).unwrap().contains("Extremely heavy rain"));
        assert!(first.operator.contains("\"worker\":\"w1\""), "{}", first.operator);
        assert!(first.operator.contains("\"signed_by\":\"w1\""), "{}", first.operator);
        assert!(!first.operator.contains("signature"), "operators get the alert, not the envelope: {}", first.operator);
        // A resend of the same version (a restarted worker) and an older one are not news.
        assert!(remote.apply(t, &signed(&w, t, "A1", 1, "raised"), 1_000, 0).is_none());
        assert!(remote.apply(t, &signed(&w, t, "A1", 2, "updated"), 1_000, 0).is_some());
        assert!(remote.apply(t, &signed(&w, t, "A1", 1, "raised"), 1_000, 0).is_none());
        // Bad messages are refused, and what we hold survives them.
        assert!(remote.apply(t, b"{not json", 1_000, 0).is_none());
        let a2 = "alerts/10008/A2";
        assert!(remote.apply(a2, w.seal(a2, &sample("A1", 3, "updated")).as_bytes(), 1_000, 0).is_none());
        assert!(remote.apply("alerts/A1", &signed(&w, "alerts/A1", "A1", 3, "updated"), 1_000, 0).is_none());
        assert_eq!(active(&remote).len(), 1);
        assert_eq!(active(&remote)[0]["version"], 2);
        let seen: HashMap<&str, u32> = [("A1", 1)].into();
        assert_eq!(remote.citizen_replay(&zones, Lang::ZhTw, &seen).len(), 1);
        let seen: HashMap<&str, u32> = [("A1", 2)].into();
        assert!(remote.citizen_replay(&zones, Lang::ZhTw, &seen).is_empty());
        // An empty message (unsigned by nature) cannot take an active alert away.
        assert!(remote.apply(t, b"", 1_000, 0).is_none());
        assert_eq!(active(&remote).len(), 1);
        // An ended alert: replayed only to whoever saw it; an empty retained message removes it.
        assert!(remote.apply(t, &signed(&w, t, "A1", 3, "cleared"), 1_000, 0).is_some());
        assert!(remote.citizen_replay(&zones, Lang::ZhTw, &HashMap::new()).is_empty());
        assert_eq!(remote.citizen_replay(&zones, Lang::ZhTw, &seen).len(), 1);
        assert!(remote.apply(t, b"", 1_000, 0).is_none());
        assert!(all(&remote).is_empty());
        // An ended alert whose removal we missed is forgotten after the retention.
        assert!(remote.apply(t, &signed(&w, t, "A1", 4, "cleared"), 1_000, 0).is_some());
        let a9 = "alerts/10008/A9";
        assert!(remote.apply(a9, &signed(&w, a9, "A9", 1, "raised"), 5_000, 2_000).is_some());
        let left: Vec<_> = all(&remote).iter().map(|a| a["id"].clone()).collect();
        assert_eq!(left, [json!("A9")]);
    }

    #[test]
    fn unsigned_forged_and_foreign_messages_are_refused_and_good_ones_beside_them_kept() {
        let (w, remote) = trusting(&["10008"]);
        let t = "alerts/10008/A1";
        let before: Vec<u64> = OUTCOMES.iter().map(|o| count(o)).collect();
        // The plain frame anyone with publish rights could write.
        assert!(remote.apply(t, sample("A1", 1, "raised").as_bytes(), 1_000, 0).is_none());
        // Signed by a key nobody listed.
        let stranger = AlertSigner::generate();
        assert!(remote.apply(t, &signed(&stranger, t, "A1", 1, "raised"), 1_000, 0).is_none());
        // A trusted key named, signed by another: the envelope's key is a claim, the signature is the proof.
        let claimed = signed(&stranger, t, "A1", 1, "raised");
        let claimed = String::from_utf8(claimed).unwrap().replace(stranger.public_key(), w.public_key());
        assert!(remote.apply(t, claimed.as_bytes(), 1_000, 0).is_none());
        // The worker's real message with its text changed after signing (the level raised, the area moved).
        let altered = String::from_utf8(signed(&w, t, "A1", 1, "raised")).unwrap().replace("豪雨（神木）", "海嘯");
        assert!(remote.apply(t, altered.as_bytes(), 1_000, 0).is_none());
        // A valid message moved to another topic: another id, another region (here one the key is trusted for).
        let good = signed(&w, t, "A1", 1, "raised");
        assert!(remote.apply("alerts/10008/A7", &good, 1_000, 0).is_none());
        let (w_any, remote_any) = trusting(&[]);
        let shenmu = signed(&w_any, t, "A1", 1, "raised");
        assert!(remote_any.apply("alerts/64000/A1", &shenmu, 1_000, 0).is_none());
        // The key signs only for its regions: Kaohsiung's topic, correctly signed, by a Nantou key.
        let k = "alerts/64000/K1";
        let kaohsiung = w.seal(k, &sample("K1", 1, "raised").replace("\"region\":\"10008\"", "\"region\":\"64000\""));
        assert!(remote.apply(k, kaohsiung.as_bytes(), 1_000, 0).is_none());
        let after: Vec<u64> = OUTCOMES.iter().map(|o| count(o)).collect();
        let delta = |o: &str| {
            let i = OUTCOMES.iter().position(|x| *x == o).unwrap();
            after[i] - before[i]
        };
        assert!(all(&remote).is_empty(), "{:?}", all(&remote));
        assert!(delta("unsigned") >= 1 && delta("unknown_key") >= 1, "{after:?}");
        assert!(delta("bad_signature") >= 4, "claimed key, altered text, moved id, moved region: {after:?}");
        assert!(delta("outside_region") >= 1, "{after:?}");
        // The worker's real message beside them is applied.
        assert!(remote.apply(t, &good, 1_000, 0).is_some());
        assert_eq!(all(&remote).len(), 1);
    }

    #[test]
    fn a_replayed_older_version_never_rolls_an_alert_back() {
        let (w, remote) = trusting(&[]);
        let zones: HashSet<String> = ["dfa-xinyi-shenmu".to_string()].into();
        let t = "alerts/10008/A1";
        let raised = signed(&w, t, "A1", 1, "raised");
        let updated = signed(&w, t, "A1", 2, "updated");
        let cleared = signed(&w, t, "A1", 3, "cleared");
        assert!(remote.apply(t, &raised, 1_000, 0).is_some());
        assert!(remote.apply(t, &updated, 1_000, 0).is_some());
        let replayed = count("replayed");
        assert!(remote.apply(t, &raised, 1_000, 0).is_none());
        assert!(count("replayed") > replayed);
        assert!(remote.apply(t, &cleared, 1_000, 0).is_some());
        // The ended alert leaves the broker (the worker's empty retained message) ...
        assert!(remote.apply(t, b"", 2_000, 0).is_none());
        assert!(all(&remote).is_empty());
        // ... and the signed "raised" captured earlier, replayed now, does not bring it back to citizens.
        assert!(remote.apply(t, &raised, 3_000, 0).is_none());
        assert!(remote.apply(t, &updated, 3_000, 0).is_none());
        assert!(all(&remote).is_empty());
        assert!(remote.citizen_replay(&zones, Lang::En, &HashMap::new()).is_empty());
        // Nor after it was forgotten at the end of the retention rather than removed.
        let t2 = "alerts/10008/A2";
        let a2_raised = signed(&w, t2, "A2", 1, "raised");
        assert!(remote.apply(t2, &a2_raised, 1_000, 0).is_some());
        assert!(remote.apply(t2, &signed(&w, t2, "A2", 2, "cancelled"), 1_000, 0).is_some());
        let t3 = "alerts/10008/A3";
        assert!(remote.apply(t3, &signed(&w, t3, "A3", 1, "raised"), 90_000, 50_000).is_some());
        assert_eq!(all(&remote).len(), 1, "A2 forgotten after the retention");
        assert!(remote.apply(t2, &a2_raised, 91_000, 50_000).is_none());
        assert!(count("replayed") >= replayed + 4);
        // A genuinely newer version still gets through.
        assert!(remote.apply(t, &signed(&w, t, "A1", 4, "raised"), 4_000, 0).is_some());
    }

    #[test]
    fn an_alert_outside_its_topics_region_is_refused() {
        let (w, remote) = trusting(&[]);
        let refused = || ALERTS_RECEIVED.with_label_values(&["outside_region"]).get();
        let before = refused();
        // The payload says 10008 (Nantou); published under Kaohsiung's topic, whose worker may not speak for it.
        let k1 = "alerts/64000/A1";
        assert!(remote.apply(k1, &signed(&w, k1, "A1", 1, "raised"), 1_000, 0).is_none());
        // The payload claims Kaohsiung, but Shenmu is a Nantou area.
        remote.set_area_regions([("dfa-xinyi-shenmu".to_string(), "10008".to_string())].into());
        let forged = sample("A2", 1, "raised").replace("\"region\":\"10008\"", "\"region\":\"64000\"");
        assert!(forged.contains("\"region\":\"64000\""), "{forged}");
        let k2 = "alerts/64000/A2";
        assert!(remote.apply(k2, w.seal(k2, &forged).as_bytes(), 1_000, 0).is_none());
        assert!(refused() >= before + 2);
        assert!(all(&remote).is_empty());
        // The same alert under its own region is applied.
        let n1 = "alerts/10008/A1";
        assert!(remote.apply(n1, &signed(&w, n1, "A1", 1, "raised"), 1_000, 0).is_some());
    }
}
