//! The in-memory state rebuilt from the journal: messages per alert, each target's ordered outbox, dead letters,
//! delivery logs, broadcasts and the message-code allocator.
//!
//! Two functions matter. [`State::plan_change`] reads the state and turns an alert change into a
//! [`ChangeRecord`] (the CAP message, who gets it, which broadcasts) without changing anything; [`State::apply`]
//! changes the state from any journal record. The live path is plan → journal → apply and the start-up path is
//! read → apply, so the two cannot drift apart.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Notify;

use super::broadcast::{self, class_for, BroadcastContext, BroadcastKind, BroadcastRecord, CarrierStatus};
use super::config::Carrier;
use super::journal::{AttemptRecord, ChangeRecord, NewDelivery, Outcome, Record};
use super::messages::{build_message, identifier_base, MessageContext, StoredMessage};
use super::metrics::METRICS;
use super::subscriber::{wants, Format, Source, SubscriberInput, TargetStats};
use super::view::AlertView;
use crate::cap::MsgType;
use crate::cell_broadcast::{PwsClass, SerialNumber};

/// Target names of carriers start with this; subscriber names cannot contain `:`.
pub(crate) const CBC_PREFIX: &str = "cbc:";

pub(crate) fn cbc_target(carrier: &str) -> String {
    format!("{CBC_PREFIX}{carrier}")
}

fn channel(target: &str) -> &'static str {
    if target.starts_with(CBC_PREFIX) {
        "cbc"
    } else {
        "webhook"
    }
}

/// What a target delivers to.
#[derive(Debug, Clone)]
pub(crate) enum TargetKind {
    Webhook {
        sub: SubscriberInput,
        source: Source,
    },
    Cbc {
        carrier: Carrier,
    },
    /// In the journal but no longer configured: kept (and reported in logs), not delivered.
    Orphan,
}

/// One subscriber's or carrier's outbox.
#[derive(Debug)]
pub(crate) struct Target {
    pub kind: TargetKind,
    /// Pending deliveries, oldest first; only the head is ever in flight (strict order).
    pub queue: VecDeque<u64>,
    pub dead: Vec<u64>,
    /// Finished deliveries, newest last, bounded by the journal's `delivery_log`.
    pub done: VecDeque<u64>,
    pub stats: TargetStats,
    /// Wakes the target's worker when something is queued.
    pub notify: Arc<Notify>,
}

impl Target {
    pub fn new(kind: TargetKind) -> Target {
        Target {
            kind,
            queue: VecDeque::new(),
            dead: Vec::new(),
            done: VecDeque::new(),
            stats: TargetStats::default(),
            notify: Arc::new(Notify::new()),
        }
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    DeadLetter,
    /// A dead letter an operator replayed (see `replayed_as`).
    Replayed,
}

/// One delivery as operators see it in a delivery log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryRecord {
    pub id: u64,
    /// Subscriber name or `cbc:<carrier>`.
    pub target: String,
    /// CAP identifier delivered.
    pub identifier: String,
    pub alert_id: String,
    pub version: u32,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub enqueued_ms: i64,
    pub last_attempt_ms: Option<i64>,
    pub http_status: Option<u16>,
    /// The receiver's answer or the error of the last attempt.
    pub detail: Option<String>,
    pub replay_of: Option<u64>,
    pub replayed_as: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct Delivery {
    pub record: DeliveryRecord,
    pub envelope: Option<Arc<str>>,
    /// When it was queued in this process (for the latency histogram; None when loaded from the journal).
    pub queued_at: Option<Instant>,
}

/// A CBC broadcast that is (or was) on the air for an alert.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CbcAlert {
    pub message_code: u16,
    pub update_number: u8,
    pub message_ids: [u16; 2],
    pub serial: SerialNumber,
    /// Broadcasting (written and not stopped).
    pub active: bool,
}

#[derive(Debug)]
pub(crate) struct AlertHistory {
    /// Indices into `State::messages`, oldest first.
    pub messages: Vec<usize>,
    pub last_view: AlertView,
    /// Webhook targets that took a message of this alert: they take the rest of it.
    pub reached: BTreeSet<String>,
    pub cbc: Option<CbcAlert>,
}

/// A targeting report to compute: broadcast index, zone, and the carriers (index, name) still without one.
pub(crate) type ReportJob = (usize, String, Vec<(usize, String)>);

/// Everything planning needs besides the state.
pub(crate) struct PlanContext<'a> {
    pub message: MessageContext<'a>,
    pub broadcast: BroadcastContext<'a>,
    pub cbc_enabled: bool,
    pub policy: &'a [super::config::PolicyRule],
    pub geo_scope: crate::cell_broadcast::GeoScope,
    pub now_ms: i64,
}

/// A delivery ready to send.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub id: u64,
    pub target: String,
    pub url: String,
    pub body: Result<Vec<u8>, String>,
    pub content_type: &'static str,
    pub auth: Auth,
    pub identifier: String,
    pub status: &'static str,
    /// Number of this attempt (1 = first).
    pub attempt: u32,
}

#[derive(Debug, Clone)]
pub(crate) enum Auth {
    Signature(String),
    Bearer(String),
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub messages: Vec<StoredMessage>,
    pub by_identifier: HashMap<String, usize>,
    /// Targets already given a message (not counting replays), so a release does not send it twice.
    pub msg_targets: HashMap<usize, BTreeSet<String>>,
    pub alerts: HashMap<String, AlertHistory>,
    pub targets: BTreeMap<String, Target>,
    pub deliveries: HashMap<u64, Delivery>,
    pub next_id: u64,
    /// Last message code handed out (the allocator goes round 0..=1023 skipping codes on the air).
    pub last_code: Option<u16>,
    pub broadcasts: Vec<BroadcastRecord>,
    /// Delivery id → (broadcast index, carrier index).
    pub broadcast_of: HashMap<u64, (usize, usize)>,
    /// Rendered feed and its ETag; dropped whenever a released message changes.
    pub feed_cache: Option<(String, String)>,
    pub log_len: usize,
}

impl State {
    /// Applies one journal record. `live` is false while replaying the journal on start (counters then stay put;
    /// gauges are rebuilt either way). Returns the targets to wake.
    pub fn apply(&mut self, record: &Record, live: bool) -> Vec<Arc<Notify>> {
        let mut wake = Vec::new();
        match record {
            Record::Change(c) => self.apply_change(c, live, &mut wake),
            Record::Enqueue { delivery } => {
                self.add_delivery(delivery, live, &mut wake);
                if let Some(old) = delivery.replay_of {
                    if let Some(d) = self.deliveries.get_mut(&old) {
                        if d.record.status == DeliveryStatus::DeadLetter {
                            METRICS.dead_letters.with_label_values(&[channel(&d.record.target)]).dec();
                        }
                        d.record.status = DeliveryStatus::Replayed;
                        d.record.replayed_as = Some(delivery.id);
                        if let Some(t) = self.targets.get_mut(&d.record.target) {
                            t.dead.retain(|&x| x != old);
                            t.done.push_back(old);
                        }
                    }
                    if let Some(&(b, c)) = self.broadcast_of.get(&old) {
                        self.broadcast_of.insert(delivery.id, (b, c));
                        if let Some(cb) = self.broadcasts.get_mut(b).and_then(|r| r.carriers.get_mut(c)) {
                            cb.delivery_id = Some(delivery.id);
                            cb.status = CarrierStatus::Pending;
                        }
                    }
                }
            }
            Record::Attempt(a) => self.apply_attempt(a, live),
            Record::Targeting { broadcast, carrier, summary } => {
                if let Some(c) = self.broadcasts.get_mut(*broadcast).and_then(|b| b.carriers.get_mut(*carrier)) {
                    c.targeting = Some(summary.clone());
                }
            }
            Record::Subscriber { subscriber, .. } => {
                // The config wins over a runtime entry of the same name (an operator can move one into the file).
                self.targets.entry(subscriber.name.clone()).or_insert_with(|| {
                    Target::new(TargetKind::Webhook { sub: subscriber.clone(), source: Source::Runtime })
                });
            }
        }
        wake
    }

    fn apply_change(&mut self, c: &ChangeRecord, live: bool, wake: &mut Vec<Arc<Notify>>) {
        let alert = self.alerts.entry(c.view.id.clone()).or_insert_with(|| AlertHistory {
            messages: Vec::new(),
            last_view: c.view.clone(),
            reached: BTreeSet::new(),
            cbc: None,
        });
        alert.last_view = c.view.clone();
        let mut feed_changed = !c.released.is_empty();
        if let Some(m) = &c.message {
            let idx = self.messages.len();
            self.by_identifier.insert(m.identifier.clone(), idx);
            alert.messages.push(idx);
            feed_changed |= m.released;
            if live {
                METRICS.cap_messages.with_label_values(&[m.status.as_str(), m.msg_type.as_str()]).inc();
            }
            self.messages.push(m.clone());
        }
        for id in &c.released {
            if let Some(&i) = self.by_identifier.get(id) {
                self.messages[i].released = true;
            }
        }
        for r in &c.broadcasts {
            let Some(alert) = self.alerts.get_mut(&c.view.id) else {
                break;
            };
            if r.error.is_none() {
                match r.kind {
                    BroadcastKind::WriteReplace => {
                        alert.cbc = Some(CbcAlert {
                            message_code: r.message_code,
                            update_number: r.update_number,
                            message_ids: r.message_ids,
                            serial: SerialNumber::from_u16(r.serial),
                            active: true,
                        });
                    }
                    BroadcastKind::Stop => {
                        if let Some(cbc) = &mut alert.cbc {
                            cbc.active = false;
                        }
                    }
                }
                if r.allocated {
                    self.last_code = Some(r.message_code);
                }
            }
            let b = self.broadcasts.len();
            for (ci, cb) in r.carriers.iter().enumerate() {
                if let Some(id) = cb.delivery_id {
                    self.broadcast_of.insert(id, (b, ci));
                }
            }
            self.broadcasts.push(r.clone());
        }
        for d in &c.deliveries {
            self.add_delivery(d, live, wake);
        }
        if feed_changed {
            self.feed_cache = None;
        }
    }

    fn add_delivery(&mut self, d: &NewDelivery, live: bool, wake: &mut Vec<Arc<Notify>>) {
        self.next_id = self.next_id.max(d.id + 1);
        let (alert_id, version) = match self.by_identifier.get(&d.identifier) {
            Some(&i) => {
                if d.replay_of.is_none() {
                    self.msg_targets.entry(i).or_default().insert(d.target.clone());
                }
                let m = &self.messages[i];
                (m.alert_id.clone(), m.version)
            }
            None => (String::new(), 0),
        };
        if !d.target.starts_with(CBC_PREFIX) {
            if let Some(a) = self.alerts.get_mut(&alert_id) {
                a.reached.insert(d.target.clone());
            }
        }
        let target = self.targets.entry(d.target.clone()).or_insert_with(|| {
            tracing::warn!(target_name = %d.target, "journal has deliveries for a target no longer configured; kept, not sent");
            Target::new(TargetKind::Orphan)
        });
        target.queue.push_back(d.id);
        wake.push(target.notify.clone());
        METRICS.queue_depth.with_label_values(&[channel(&d.target)]).inc();
        self.deliveries.insert(
            d.id,
            Delivery {
                record: DeliveryRecord {
                    id: d.id,
                    target: d.target.clone(),
                    identifier: d.identifier.clone(),
                    alert_id,
                    version,
                    status: DeliveryStatus::Pending,
                    attempts: 0,
                    enqueued_ms: d.at_ms,
                    last_attempt_ms: None,
                    http_status: None,
                    detail: None,
                    replay_of: d.replay_of,
                    replayed_as: None,
                },
                envelope: d.envelope.as_deref().map(Arc::from),
                queued_at: live.then(Instant::now),
            },
        );
    }

    fn apply_attempt(&mut self, a: &AttemptRecord, live: bool) {
        let ch = channel(&a.target);
        let Some(d) = self.deliveries.get_mut(&a.id) else {
            return;
        };
        if d.record.status != DeliveryStatus::Pending {
            return;
        }
        d.record.attempts = a.attempt;
        d.record.last_attempt_ms = Some(a.at_ms);
        d.record.http_status = a.http_status;
        d.record.detail = a.detail.clone();
        let result = match a.outcome {
            Outcome::Delivered => "delivered",
            Outcome::Retry => "retry",
            Outcome::Dead => "dead_letter",
        };
        if live {
            METRICS.deliveries.with_label_values(&[ch, result]).inc();
        }
        let queued_at = d.queued_at;
        let Some(t) = self.targets.get_mut(&a.target) else {
            return;
        };
        match a.outcome {
            Outcome::Retry => {
                t.stats.last_error = a.detail.clone();
            }
            Outcome::Delivered | Outcome::Dead => {
                t.queue.retain(|&x| x != a.id);
                METRICS.queue_depth.with_label_values(&[ch]).dec();
                if a.outcome == Outcome::Delivered {
                    d.record.status = DeliveryStatus::Delivered;
                    t.done.push_back(a.id);
                    t.stats.delivered += 1;
                    t.stats.last_success_ms = Some(a.at_ms);
                    t.stats.last_error = None;
                    if let (true, Some(q)) = (live, queued_at) {
                        METRICS.delivery_latency.with_label_values(&[ch]).observe(q.elapsed().as_secs_f64());
                    }
                } else {
                    d.record.status = DeliveryStatus::DeadLetter;
                    t.dead.push(a.id);
                    t.stats.last_error = a.detail.clone();
                    METRICS.dead_letters.with_label_values(&[ch]).inc();
                }
                // Keep the log bounded; dead letters stay until replayed.
                while t.done.len() > self.log_len {
                    if let Some(old) = t.done.pop_front() {
                        self.deliveries.remove(&old);
                    }
                }
            }
        }
        if let Some(&(b, c)) = self.broadcast_of.get(&a.id) {
            if let Some(cb) = self.broadcasts.get_mut(b).and_then(|r| r.carriers.get_mut(c)) {
                cb.attempts = a.attempt;
                cb.http_status = a.http_status;
                cb.detail = a.detail.clone();
                cb.status = match a.outcome {
                    Outcome::Delivered => CarrierStatus::Acked,
                    Outcome::Retry => CarrierStatus::Pending,
                    Outcome::Dead => CarrierStatus::Failed,
                };
                if a.outcome != Outcome::Retry {
                    cb.at_ms = Some(a.at_ms);
                }
            }
        }
    }

    /// Turns an alert change into a record, or None when there is nothing to do (stale or repeated change).
    pub fn plan_change(&self, ctx: &PlanContext<'_>, view: &AlertView) -> Option<ChangeRecord> {
        let history = self.alerts.get(&view.id);
        if let Some(h) = history {
            if view.version < h.last_view.version {
                tracing::debug!(alert = %view.id, version = view.version, seen = h.last_view.version, "stale alert change ignored");
                return None;
            }
        }
        let msgs: Vec<(usize, &StoredMessage)> =
            history.map(|h| h.messages.iter().map(|&i| (i, &self.messages[i])).collect()).unwrap_or_default();
        let latest = msgs.last().map(|(_, m)| *m);
        let repeated = latest.is_some_and(|m| m.version == view.version && m.view.same_content(view));
        let mut record = ChangeRecord {
            view: view.clone(),
            message: None,
            released: Vec::new(),
            deliveries: Vec::new(),
            broadcasts: Vec::new(),
            error: None,
        };
        if view.public_release {
            record.released = msgs.iter().filter(|(_, m)| !m.released).map(|(_, m)| m.identifier.clone()).collect();
        }
        if !repeated {
            if msgs.is_empty() && view.state.is_end() {
                tracing::info!(alert = %view.id, "alert ended before any message was made; nothing to cancel");
            } else {
                let msg_type = if view.state.is_end() {
                    MsgType::Cancel
                } else if latest.is_none_or(|m| m.msg_type == MsgType::Cancel) {
                    MsgType::Alert
                } else {
                    MsgType::Update
                };
                let references = msgs.iter().map(|(_, m)| m.reference(&ctx.message.cfg.sender)).collect();
                let base = format!("{}.{}", identifier_base(&view.id), view.version);
                let mut identifier = base.clone();
                let mut n = 1;
                while self.by_identifier.contains_key(&identifier) {
                    identifier = format!("{base}-{n}");
                    n += 1;
                }
                match build_message(&ctx.message, view, identifier, msg_type, references, view.public_release) {
                    Ok(m) => record.message = Some(m),
                    Err(e) => {
                        tracing::error!(error = %e, "no CAP message for alert change");
                        METRICS.errors.with_label_values(&["cap_build"]).inc();
                        record.error = Some(e.to_string());
                    }
                }
            }
        }
        if record.message.is_none() && record.released.is_empty() {
            return record.error.is_some().then_some(record);
        }

        let mut next_id = self.next_id;
        let mut take_id = || {
            let id = next_id;
            next_id += 1;
            id
        };

        // Webhooks: held messages being released first (in order), then the new one.
        for (name, target) in &self.targets {
            let TargetKind::Webhook { sub, .. } = &target.kind else {
                continue;
            };
            let mut reached = history.is_some_and(|h| h.reached.contains(name));
            for (i, m) in &msgs {
                if !record.released.contains(&m.identifier) || self.msg_targets.get(i).is_some_and(|t| t.contains(name))
                {
                    continue;
                }
                if wants(sub, &m.view, true, reached) {
                    reached = true;
                    record.deliveries.push(NewDelivery {
                        id: take_id(),
                        target: name.clone(),
                        identifier: m.identifier.clone(),
                        replay_of: None,
                        envelope: None,
                        at_ms: ctx.now_ms,
                    });
                }
            }
            if let Some(m) = &record.message {
                if wants(sub, view, m.released, reached) {
                    record.deliveries.push(NewDelivery {
                        id: take_id(),
                        target: name.clone(),
                        identifier: m.identifier.clone(),
                        replay_of: None,
                        envelope: None,
                        at_ms: ctx.now_ms,
                    });
                }
            }
        }

        // Cell broadcast: bring the air in line with the alert's latest released message. Nothing while held.
        let on_air = history.and_then(|h| h.cbc);
        let latest_now = record.message.as_ref().or(latest);
        if ctx.cbc_enabled && view.public_release && !ctx.broadcast.carriers.is_empty() {
            if let Some(msg) = latest_now {
                let (deliveries, broadcasts) = self.plan_broadcasts(ctx, msg, on_air, &mut take_id);
                record.deliveries.extend(deliveries);
                record.broadcasts.extend(broadcasts);
            }
        }
        Some(record)
    }

    fn plan_broadcasts(
        &self,
        ctx: &PlanContext<'_>,
        msg: &StoredMessage,
        on_air: Option<CbcAlert>,
        take_id: &mut dyn FnMut() -> u64,
    ) -> (Vec<NewDelivery>, Vec<BroadcastRecord>) {
        let mut out = (Vec::new(), Vec::new());
        let wanted = if msg.msg_type == MsgType::Cancel { None } else { class_for(&msg.view, ctx.policy) };
        let active = on_air.filter(|c| c.active);
        let push = |out: &mut (Vec<NewDelivery>, Vec<BroadcastRecord>),
                    (r, envelopes): (BroadcastRecord, Vec<broadcast::Envelope>)| {
            if let Some(e) = &r.error {
                tracing::error!(alert = %r.alert_id, error = %e, "cell broadcast not sent");
                METRICS.errors.with_label_values(&["broadcast_encode"]).inc();
            }
            for c in r.carriers.iter().filter(|c| c.delivery_id.is_none()) {
                if let Some(d) = &c.detail {
                    tracing::warn!(alert = %r.alert_id, carrier = %c.carrier, detail = %d, "carrier gets no broadcast");
                    METRICS.errors.with_label_values(&["targeting"]).inc();
                }
            }
            for e in envelopes {
                out.0.push(NewDelivery {
                    id: e.id,
                    target: cbc_target(&e.carrier),
                    identifier: r.identifier.clone(),
                    replay_of: None,
                    envelope: Some(e.body),
                    at_ms: ctx.now_ms,
                });
            }
            out.1.push(r);
        };
        let stop = |c: CbcAlert, take_id: &mut dyn FnMut() -> u64| {
            broadcast::plan(
                &ctx.broadcast,
                msg,
                BroadcastKind::Stop,
                PwsClass::from_message_id(c.message_ids[0]).map_or(PwsClass::Alert, |(class, _)| class),
                Some(c.message_ids),
                c.serial,
                false,
                take_id,
            )
        };
        match (active, wanted) {
            (None, None) => {}
            (Some(c), None) => push(&mut out, stop(c, take_id)),
            (Some(c), Some(class)) => {
                let ids = [
                    class.message_id(crate::cell_broadcast::Language::Chinese),
                    class.message_id(crate::cell_broadcast::Language::English),
                ];
                let same_channels = matches!(ids, [Ok(a), Ok(b)] if [a, b] == c.message_ids);
                if !same_channels {
                    // A class change (e.g. Alert → Emergency) moves channels: end the old one first, in order.
                    push(&mut out, stop(c, take_id));
                }
                let serial = c.serial.next_update();
                push(
                    &mut out,
                    broadcast::plan(
                        &ctx.broadcast,
                        msg,
                        BroadcastKind::WriteReplace,
                        class,
                        None,
                        serial,
                        false,
                        take_id,
                    ),
                );
            }
            (None, Some(class)) => {
                let Some(code) = self.allocate_code() else {
                    tracing::error!(alert = %msg.alert_id, "all 1024 message codes are on the air; broadcast not sent");
                    METRICS.errors.with_label_values(&["broadcast_encode"]).inc();
                    return out;
                };
                let Ok(serial) = SerialNumber::new(ctx.geo_scope, code, 0) else {
                    return out;
                };
                push(
                    &mut out,
                    broadcast::plan(
                        &ctx.broadcast,
                        msg,
                        BroadcastKind::WriteReplace,
                        class,
                        None,
                        serial,
                        true,
                        take_id,
                    ),
                );
            }
        }
        out
    }

    /// Targeting reports still to compute: (broadcast index, zone, carrier indices) of write-replace broadcasts
    /// from `from` on whose sent carriers (index, name) have no report yet.
    pub fn missing_reports(&self, from: usize) -> Vec<ReportJob> {
        self.broadcasts
            .iter()
            .enumerate()
            .skip(from)
            .filter(|(_, b)| b.kind == BroadcastKind::WriteReplace)
            .filter_map(|(i, b)| {
                let carriers: Vec<(usize, String)> = b
                    .carriers
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.delivery_id.is_some() && c.targeting.is_none())
                    .map(|(ci, c)| (ci, c.carrier.clone()))
                    .collect();
                let zone = self.by_identifier.get(&b.identifier).map(|&m| self.messages[m].view.area_id.clone())?;
                (!carriers.is_empty()).then_some((i, zone, carriers))
            })
            .collect()
    }

    /// The next message code after the last one handed out that no broadcast on the air uses.
    fn allocate_code(&self) -> Option<u16> {
        let on_air: BTreeSet<u16> =
            self.alerts.values().filter_map(|a| a.cbc.filter(|c| c.active).map(|c| c.message_code)).collect();
        let start = self.last_code.map_or(0, |c| c + 1);
        (0..=SerialNumber::MAX_MESSAGE_CODE)
            .map(|i| (start + i) % (SerialNumber::MAX_MESSAGE_CODE + 1))
            .find(|c| !on_air.contains(c))
    }

    /// The head of a target's outbox, ready to send.
    pub fn next_job(&self, target: &str, base_url: &str) -> Option<Job> {
        let t = self.targets.get(target)?;
        let &id = t.queue.front()?;
        let d = self.deliveries.get(&id)?;
        let msg = self.by_identifier.get(&d.record.identifier).map(|&i| &self.messages[i]);
        let status = msg.map_or("Actual", |m| m.status.as_str());
        let missing = || format!("CAP message {} is not in the journal", d.record.identifier);
        let (url, content_type, auth, body) = match &t.kind {
            TargetKind::Webhook { sub, .. } => {
                let body = match (msg, sub.format) {
                    (Some(m), Format::Cap) => Ok(m.xml.clone().into_bytes()),
                    (Some(m), Format::Json) => Ok(json_body(m, base_url).into_bytes()),
                    (None, _) => Err(missing()),
                };
                let ct = match sub.format {
                    Format::Cap => "application/cap+xml",
                    Format::Json => "application/json",
                };
                (sub.url.clone(), ct, Auth::Signature(sub.secret.clone()), body)
            }
            TargetKind::Cbc { carrier } => (
                carrier.cbc_url.clone(),
                "application/json",
                Auth::Bearer(carrier.token.clone()),
                d.envelope.as_ref().map(|e| e.as_bytes().to_vec()).ok_or_else(|| "CBC envelope missing".to_string()),
            ),
            TargetKind::Orphan => return None,
        };
        Some(Job {
            id,
            target: target.to_string(),
            url,
            body,
            content_type,
            auth,
            identifier: d.record.identifier.clone(),
            status,
            attempt: d.record.attempts + 1,
        })
    }

    /// A target's deliveries, newest first: pending, dead letters and the finished ones still in the log.
    pub fn delivery_log(&self, target: &str) -> Vec<DeliveryRecord> {
        let Some(t) = self.targets.get(target) else {
            return Vec::new();
        };
        let mut out: Vec<DeliveryRecord> = t
            .queue
            .iter()
            .chain(&t.dead)
            .chain(&t.done)
            .filter_map(|id| self.deliveries.get(id).map(|d| d.record.clone()))
            .collect();
        out.sort_by_key(|d| std::cmp::Reverse(d.id));
        out.dedup_by_key(|d| d.id);
        out
    }
}

/// The JSON webhook body: the alert view and where its CAP message is.
pub(crate) fn json_body(m: &StoredMessage, base_url: &str) -> String {
    // The view was stored when the message was made; a held message sent on release is released now.
    let mut view = m.view.clone();
    view.public_release = m.released;
    serde_json::json!({
        "type": "alert",
        "alert": view,
        "cap": {
            "identifier": m.identifier,
            "url": crate::cap::cap_url(base_url, &m.identifier),
            "msg_type": m.msg_type,
            "status": m.status,
            "sent_ms": m.sent_ms,
        },
        "headline": {"zh-TW": m.texts.headline_zh, "en": m.texts.headline_en},
    })
    .to_string()
}
