//! The in-memory state rebuilt from the journal: messages per alert, each target's ordered outbox, dead letters,
//! delivery logs, broadcasts and the message-code allocator.
//!
//! Two functions matter. [`State::plan_change`] reads the state and turns an alert change into a
//! [`ChangeRecord`] (the CAP message, who gets it, which broadcasts) without changing anything; [`State::apply`]
//! changes the state from any journal record. The live path is plan → journal → apply and the start-up path is
//! read → apply, so the two cannot drift apart.
//!
//! Memory is bounded by configuration, not uptime: after each change and each finished delivery [`State::prune`]
//! forgets the alerts no longer in play (ended, out of the feed's `recent`, no pending delivery or dead letter, no
//! broadcast on the air) with their messages and broadcasts, and keeps of the other alerts' older messages only
//! what `<references>` needs ([`MessageMeta`]). Released messages are served from the CAP archive once forgotten.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Notify;

use super::archive::CapArchive;
use super::channel::cbc::broadcast::{BroadcastContext, BroadcastKind, BroadcastRecord, CarrierStatus};
use super::channel::cbc::ledger::Ledger;
use super::channel::cbc::{self, CbcAlert};
use super::channel::webhook::Webhook;
use super::channel::{Channel, Endpoint, Payload, Request};
use super::journal::{AttemptRecord, ChangeRecord, NewDelivery, Outcome, Record};
use super::messages::{build_message, identifier_base, reference, MessageContext, StoredMessage};
use super::metrics::METRICS;
use super::view::{AlertView, ViewState};
use encoders::cap::{MsgType, Status};

/// One subscriber's or carrier's outbox.
#[derive(Debug)]
pub(crate) struct Target {
    /// Where it delivers to; None: in the journal but no longer configured (kept, reported in logs, not sent).
    pub endpoint: Option<Endpoint>,
    /// The endpoint's channel, or for a target no longer configured the one its name says.
    pub channel: Channel,
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
    pub fn new(endpoint: Endpoint) -> Target {
        Target::with(endpoint.channel(), Some(endpoint))
    }

    /// A target the journal names that the config no longer has.
    pub fn orphan(name: &str) -> Target {
        Target::with(Channel::of_target_name(name), None)
    }

    fn with(channel: Channel, endpoint: Option<Endpoint>) -> Target {
        Target {
            endpoint,
            channel,
            queue: VecDeque::new(),
            dead: Vec::new(),
            done: VecDeque::new(),
            stats: TargetStats::default(),
            notify: Arc::new(Notify::new()),
        }
    }
}

/// Counts kept per target (a subscriber's status shows them).
#[derive(Debug, Clone, Default)]
pub(crate) struct TargetStats {
    pub delivered: u64,
    pub last_success_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    DeadLetter,
    /// A dead letter an operator replayed (see `replayed_as`).
    Replayed,
}

/// One delivery as operators see it in a delivery log.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
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
    /// Its key (`ledger.rs`), the id receivers see when a delivery ledger is in use.
    pub key: Option<Arc<str>>,
    /// Its target's channel (the metrics label).
    pub channel: Channel,
    /// When it was queued in this process (for the latency histogram; None when loaded from the journal).
    pub queued_at: Option<Instant>,
}

/// What memory keeps of every message of an alert still in memory, body or not: enough for `<references>`,
/// `messages_of`, and to find the body (in `State::messages` or the CAP archive).
#[derive(Debug, Clone)]
pub(crate) struct MessageMeta {
    pub identifier: String,
    pub version: u32,
    pub msg_type: MsgType,
    pub status: Status,
    pub sent_ms: i64,
    pub released: bool,
    /// The message ends its alert (an all-clear Update or a Cancel): the feed lists it as ended.
    pub ended: bool,
}

impl MessageMeta {
    fn of(m: &StoredMessage) -> MessageMeta {
        MessageMeta {
            identifier: m.identifier.clone(),
            version: m.version,
            msg_type: m.msg_type,
            ended: m.view.state.is_end(),
            status: m.status,
            sent_ms: m.sent_ms,
            released: m.released,
        }
    }
}

/// Most earlier messages an Update or Cancel lists in `<references>`: the alert's first message and the most recent
/// others. CAP 1.2 leaves the count to the sender; listing every earlier one made the message of an alert updated
/// thousands of times (a flapping sensor) grow without bound, in memory and on every webhook. The first message
/// ties the thread to where it began and the recent ones to where a receiver left it.
pub(crate) const MAX_REFERENCES: usize = 32;

/// Held (unreleased) message bodies kept per alert, newest first: a release sends and publishes these. An alert that
/// stays held, or is for operators only, through thousands of versions (a flapping sensor's `sensor_silent`) kept
/// every body before — the growth the hour-long soak found.
const MAX_HELD_BODIES: usize = MAX_REFERENCES;

/// The earlier messages a new message of the alert references (see [`MAX_REFERENCES`]).
pub(crate) fn referenced(messages: &[MessageMeta]) -> impl Iterator<Item = &MessageMeta> {
    let recent_from = messages.len().saturating_sub(MAX_REFERENCES - 1).max(1);
    messages.iter().take(1).chain(messages.iter().skip(recent_from))
}

#[derive(Debug)]
pub(crate) struct AlertHistory {
    /// Every message of the alert, oldest first (positions are stable: `State::by_identifier` holds them).
    pub messages: Vec<MessageMeta>,
    pub last_view: AlertView,
    /// Webhook targets that took a message of this alert: they take the rest of it.
    pub reached: BTreeSet<String>,
    /// Its latest write-replace (what its broadcast says); what is on the air of it is in `State::ledger`.
    pub cbc: Option<CbcAlert>,
    /// Keys of this alert's broadcasts in `State::broadcasts`.
    pub broadcasts: Vec<usize>,
}

/// Everything planning needs besides the state.
pub(crate) struct PlanContext<'a> {
    pub message: MessageContext<'a>,
    pub broadcast: BroadcastContext<'a>,
    pub cbc: &'a cbc::Settings,
    pub now_ms: i64,
}

/// A delivery ready to send.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub id: u64,
    pub target: String,
    pub channel: Channel,
    /// What the target's channel sends.
    pub request: Request,
    pub identifier: String,
    pub status: &'static str,
    /// Number of this attempt (1 = first).
    pub attempt: u32,
    /// The delivery's key (`ledger.rs`).
    pub key: Option<Arc<str>>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// Message bodies still in memory, by identifier (see `prune` for which).
    pub messages: HashMap<String, StoredMessage>,
    /// Every message of the alerts in memory → (alert id, position in its `AlertHistory::messages`).
    pub by_identifier: HashMap<String, (String, usize)>,
    /// Targets already given a held message (not counting replays), so its release does not send it twice.
    pub msg_targets: HashMap<String, BTreeSet<String>>,
    pub alerts: HashMap<String, AlertHistory>,
    pub targets: BTreeMap<String, Target>,
    pub deliveries: HashMap<u64, Delivery>,
    pub next_id: u64,
    /// Last message code handed out (the allocator goes round 0..=1023 skipping codes on the air).
    pub last_code: Option<u16>,
    /// The last update number written under each message code (a reused code starts above it).
    pub code_updates: HashMap<u16, u8>,
    /// What is on the air, per carrier (`channel::cbc::ledger`).
    pub ledger: Ledger,
    /// Broadcasts of the alerts in memory, by their index in journal order (`Record::Targeting` names them so).
    pub broadcasts: BTreeMap<usize, BroadcastRecord>,
    /// Broadcasts ever applied: the next one's index.
    pub broadcast_count: usize,
    /// Delivery id → (broadcast index, carrier index).
    pub broadcast_of: HashMap<u64, (usize, usize)>,
    /// Rendered feed and its ETag; dropped whenever a released message changes.
    pub feed_cache: Option<(String, String)>,
    pub log_len: usize,
    /// The feed's `recent`: ended alerts kept in memory (and in the feed).
    pub feed_recent: usize,
    /// Where released messages go (None: nowhere, they are forgotten with their alert).
    pub archive: Option<CapArchive>,
    /// Released messages the archive refused (disk full): their bodies stay in memory until it takes them.
    pub unarchived: BTreeSet<String>,
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
                            METRICS.dead_letters.with_label_values(&[d.channel.label()]).dec();
                        }
                        d.record.status = DeliveryStatus::Replayed;
                        d.record.replayed_as = Some(delivery.id);
                        if let Some(t) = self.targets.get_mut(&d.record.target) {
                            t.dead.retain(|&x| x != old);
                            t.done.push_back(old);
                        }
                    }
                    self.ledger.replayed(old, delivery.id);
                    if let Some(&(b, c)) = self.broadcast_of.get(&old) {
                        self.broadcast_of.insert(delivery.id, (b, c));
                        if let Some(cb) = self.broadcasts.get_mut(&b).and_then(|r| r.carriers.get_mut(c)) {
                            cb.delivery_id = Some(delivery.id);
                            cb.status = CarrierStatus::Pending;
                        }
                    }
                }
            }
            Record::Attempt(a) => {
                self.apply_attempt(a, live);
                if a.outcome == Outcome::Delivered {
                    self.prune();
                }
            }
            Record::Targeting { broadcast, carrier, summary } => {
                if let Some(c) = self.broadcasts.get_mut(broadcast).and_then(|b| b.carriers.get_mut(*carrier)) {
                    c.targeting = Some(summary.clone());
                }
            }
            Record::Subscriber { subscriber, .. } => {
                // The config wins over a runtime entry of the same name (an operator can move one into the file).
                self.targets
                    .entry(subscriber.name.clone())
                    .or_insert_with(|| Target::new(Endpoint::Webhook(Webhook::runtime(subscriber))));
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
            broadcasts: Vec::new(),
        });
        alert.last_view = c.view.clone();
        let mut feed_changed = !c.released.is_empty();
        if let Some(m) = &c.message {
            self.by_identifier.insert(m.identifier.clone(), (c.view.id.clone(), alert.messages.len()));
            alert.messages.push(MessageMeta::of(m));
            feed_changed |= m.released;
            if live {
                METRICS.cap_messages.with_label_values(&[m.status.as_str(), m.msg_type.as_str()]).inc();
            }
            self.messages.insert(m.identifier.clone(), m.clone());
            if m.released {
                self.archive(&m.identifier);
            }
        }
        for id in &c.released {
            if let Some((a, pos)) = self.by_identifier.get(id) {
                if let Some(meta) = self.alerts.get_mut(a).and_then(|h| h.messages.get_mut(*pos)) {
                    meta.released = true;
                }
            }
            if let Some(m) = self.messages.get_mut(id) {
                m.released = true;
                self.archive(id);
            }
        }
        for r in &c.broadcasts {
            let Some(alert) = self.alerts.get_mut(&c.view.id) else {
                break;
            };
            if r.error.is_none() {
                if r.kind == BroadcastKind::WriteReplace {
                    alert.cbc = Some(CbcAlert::of(r));
                    self.code_updates.insert(r.message_code, r.update_number);
                }
                if r.allocated {
                    self.last_code = Some(r.message_code);
                }
            }
            self.ledger.apply(r, c.view.updated_ms);
            if live && r.error.is_none() {
                let kind = match r.kind {
                    BroadcastKind::WriteReplace => "write_replace",
                    BroadcastKind::Stop => "stop",
                };
                METRICS.cbc_broadcasts.with_label_values(&[kind, &r.reason]).inc();
            }
            let b = self.broadcast_count;
            self.broadcast_count += 1;
            alert.broadcasts.push(b);
            for (ci, cb) in r.carriers.iter().enumerate() {
                if let Some(id) = cb.delivery_id {
                    self.broadcast_of.insert(id, (b, ci));
                }
            }
            self.broadcasts.insert(b, r.clone());
        }
        for d in &c.deliveries {
            self.add_delivery(d, live, wake);
        }
        if !c.broadcasts.is_empty() {
            self.ledger.export_gauge();
        }
        if feed_changed {
            self.feed_cache = None;
        }
        self.prune();
    }

    /// Writes a released message to the CAP archive; a refusal is logged, counted, and the body stays in memory.
    fn archive(&mut self, identifier: &str) {
        let (Some(archive), Some(m)) = (&self.archive, self.messages.get(identifier)) else {
            return;
        };
        match archive.write(identifier, &m.xml) {
            Ok(()) => {
                self.unarchived.remove(identifier);
            }
            Err(e) => {
                if self.unarchived.insert(identifier.to_string()) {
                    tracing::error!(identifier, dir = %archive.dir().display(), error = %e, "CAP archive write failed; the message stays in memory");
                    METRICS.errors.with_label_values(&["cap_archive"]).inc();
                }
            }
        }
    }

    /// Forgets what is out of play; see the module doc. Alerts kept: active ones, those in the feed (active by
    /// their latest released message, or among its `recent` ended ones), the `recent` latest ended ones never
    /// released (an operator may still look at them), and any with a message a pending delivery or a dead letter
    /// needs or a broadcast on the air. Bodies kept, of those alerts: the latest message, the latest released
    /// one (feed), the [`MAX_HELD_BODIES`] most recent held ones (their release sends them), and any a delivery
    /// needs or the archive refused.
    pub fn prune(&mut self) {
        // Borrows only `targets` and `deliveries`: the fields changed below are others.
        let pinned: HashSet<&str> = self
            .targets
            .values()
            .flat_map(|t| t.queue.iter().chain(&t.dead))
            .filter_map(|id| self.deliveries.get(id))
            .map(|d| d.record.identifier.as_str())
            .collect();
        let mut ended_released = Vec::new();
        let mut ended_held = Vec::new();
        let mut forget = Vec::new();
        for (id, h) in &self.alerts {
            let in_play = !h.last_view.state.is_end()
                || self.ledger.has_live(id)
                || h.messages.iter().any(|m| pinned.contains(m.identifier.as_str()));
            if in_play {
                continue;
            }
            match h.messages.iter().rev().find(|m| m.released) {
                Some(m) if !m.ended => {} // in the feed as active
                Some(m) => ended_released.push((m.sent_ms, m.identifier.as_str(), id.as_str())),
                None => ended_held.push((h.messages.last().map_or(0, |m| m.sent_ms), "", id.as_str())),
            }
        }
        for mut ended in [ended_released, ended_held] {
            if ended.len() > self.feed_recent {
                // The feed's order: newest first, identifiers breaking ties.
                ended.sort_unstable_by(|a, b| b.cmp(a));
                forget.extend(ended.drain(self.feed_recent..).map(|(_, _, id)| id.to_string()));
            }
        }
        let mut dropped_broadcasts = false;
        for id in forget {
            let Some(h) = self.alerts.remove(&id) else {
                continue;
            };
            for m in &h.messages {
                self.by_identifier.remove(&m.identifier);
            }
            for b in &h.broadcasts {
                dropped_broadcasts |= self.broadcasts.remove(b).is_some();
            }
        }
        if dropped_broadcasts {
            let broadcasts = &self.broadcasts;
            self.broadcast_of.retain(|_, (b, _)| broadcasts.contains_key(b));
        }

        // Bodies the archive refused: try again a few at a time (each prune), keep them until it takes them.
        let retry: Vec<String> = self.unarchived.iter().take(8).cloned().collect();
        for id in retry {
            if let (Some(archive), Some(m)) = (&self.archive, self.messages.get(&id)) {
                if archive.write(&id, &m.xml).is_ok() {
                    tracing::info!(identifier = %id, "CAP archive took the message it refused");
                    self.unarchived.remove(&id);
                }
            }
        }
        let (alerts, by_identifier, unarchived) = (&self.alerts, &self.by_identifier, &self.unarchived);
        self.messages.retain(|identifier, _| {
            if pinned.contains(identifier.as_str()) || unarchived.contains(identifier) {
                return true;
            }
            let Some((alert, pos)) = by_identifier.get(identifier) else {
                return false;
            };
            let Some(h) = alerts.get(alert) else {
                return false;
            };
            let latest_released = h.messages.iter().rposition(|m| m.released);
            let held_and_recent = *pos + MAX_HELD_BODIES >= h.messages.len();
            h.messages.get(*pos).is_some_and(|m| !m.released) && held_and_recent
                || *pos + 1 == h.messages.len()
                || latest_released == Some(*pos)
        });
        let messages = &self.messages;
        self.msg_targets.retain(|identifier, _| messages.contains_key(identifier));
        METRICS.messages_in_memory.set(self.messages.len() as i64);
        METRICS.alerts_in_memory.set(self.alerts.len() as i64);
    }

    /// Gives the broadcasts the indices a compacted journal gives them (`old → new`; those missing are gone).
    pub fn renumber_broadcasts(&mut self, map: &BTreeMap<usize, usize>, count: usize) {
        self.broadcasts =
            std::mem::take(&mut self.broadcasts).into_iter().filter_map(|(b, r)| Some((*map.get(&b)?, r))).collect();
        self.broadcast_of = std::mem::take(&mut self.broadcast_of)
            .into_iter()
            .filter_map(|(d, (b, c))| Some((d, (*map.get(&b)?, c))))
            .collect();
        for h in self.alerts.values_mut() {
            h.broadcasts = h.broadcasts.iter().filter_map(|b| map.get(b).copied()).collect();
        }
        self.broadcast_count = count;
    }

    fn add_delivery(&mut self, d: &NewDelivery, live: bool, wake: &mut Vec<Arc<Notify>>) {
        self.next_id = self.next_id.max(d.id + 1);
        let meta = self
            .by_identifier
            .get(&d.identifier)
            .and_then(|(a, pos)| Some((a, self.alerts.get(a)?.messages.get(*pos)?)));
        let (alert_id, version) = match meta {
            Some((a, m)) => {
                if d.replay_of.is_none() && !m.released {
                    self.msg_targets.entry(d.identifier.clone()).or_default().insert(d.target.clone());
                }
                (a.clone(), m.version)
            }
            // The message's alert was forgotten (a compacted journal says whose it was).
            None => (d.alert_id.clone().unwrap_or_default(), d.version.unwrap_or(0)),
        };
        let target = self.targets.entry(d.target.clone()).or_insert_with(|| {
            tracing::warn!(target_name = %d.target, "journal has deliveries for a target no longer configured; kept, not sent");
            Target::orphan(&d.target)
        });
        // Carriers' envelopes follow the air, not who took what (see `cbc`).
        if target.channel != Channel::Cbc {
            if let Some(a) = self.alerts.get_mut(&alert_id) {
                a.reached.insert(d.target.clone());
            }
        }
        target.queue.push_back(d.id);
        wake.push(target.notify.clone());
        let channel = target.channel;
        METRICS.queue_depth.with_label_values(&[channel.label()]).inc();
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
                key: d.key.as_deref().map(Arc::from),
                channel,
                queued_at: live.then(Instant::now),
            },
        );
    }

    fn apply_attempt(&mut self, a: &AttemptRecord, live: bool) {
        let Some(d) = self.deliveries.get_mut(&a.id) else {
            return;
        };
        let ch = d.channel.label();
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
        let is_cbc = d.channel == Channel::Cbc;
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
        if a.outcome != Outcome::Retry && is_cbc {
            self.ledger.attempt(a.id, a.outcome == Outcome::Delivered, a.outcome == Outcome::Dead, a.at_ms);
            self.ledger.export_gauge();
        }
        if let Some(&(b, c)) = self.broadcast_of.get(&a.id) {
            if let Some(cb) = self.broadcasts.get_mut(&b).and_then(|r| r.carriers.get_mut(c)) {
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
        let msgs: &[MessageMeta] = history.map_or(&[], |h| &h.messages);
        let latest_meta = msgs.last();
        let latest = latest_meta.and_then(|m| self.messages.get(&m.identifier));
        let repeated =
            latest_meta.is_some_and(|m| m.version == view.version) && latest.is_some_and(|m| m.view.same_content(view));
        let mut record = ChangeRecord {
            view: view.clone(),
            message: None,
            released: Vec::new(),
            deliveries: Vec::new(),
            broadcasts: Vec::new(),
            error: None,
        };
        if view.public_release {
            record.released = msgs.iter().filter(|m| !m.released).map(|m| m.identifier.clone()).collect();
        }
        if !repeated {
            if msgs.is_empty() && view.state.is_end() {
                tracing::info!(alert = %view.id, "alert ended before any message was made; nothing to cancel");
            } else {
                // A hazard that is over: an Update saying AllClear (CAP 1.2 responseType; Google Public Alerts'
                // guidance prefers it to a Cancel). Cancel only for what an operator withdrew (`docs/API.md`
                // § Ending a warning).
                let msg_type = match view.state {
                    ViewState::Cancelled => MsgType::Cancel,
                    ViewState::Cleared => MsgType::Update,
                    _ if latest_meta.is_none_or(|m| m.ended) => MsgType::Alert,
                    _ => MsgType::Update,
                };
                let sender = &ctx.message.cfg.sender;
                let references = referenced(msgs).map(|m| reference(sender, &m.identifier, m.sent_ms)).collect();
                let base = format!("{}.{}", identifier_base(&view.id), view.version);
                let mut identifier = base.clone();
                let mut n = 1;
                // A forgotten alert's messages are only in the archive; an identifier is never used twice.
                while self.by_identifier.contains_key(&identifier)
                    || self.messages.contains_key(&identifier)
                    || self.archive.as_ref().is_some_and(|a| a.contains(&identifier))
                {
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

        // Targets that take messages (webhooks; see `Endpoint::wants`): held messages being released first (in
        // order), then the new one.
        for (name, target) in &self.targets {
            let Some(endpoint) = &target.endpoint else {
                continue;
            };
            let mut reached = history.is_some_and(|h| h.reached.contains(name));
            for meta in msgs {
                if !record.released.contains(&meta.identifier)
                    || self.msg_targets.get(&meta.identifier).is_some_and(|t| t.contains(name))
                {
                    continue;
                }
                // Held messages keep their bodies while their alert is in memory.
                let Some(m) = self.messages.get(&meta.identifier) else {
                    continue;
                };
                if endpoint.wants(&m.view, true, reached) {
                    reached = true;
                    record.deliveries.push(NewDelivery {
                        id: take_id(),
                        target: name.clone(),
                        identifier: m.identifier.clone(),
                        replay_of: None,
                        envelope: None,
                        at_ms: ctx.now_ms,
                        alert_id: None,
                        version: None,
                        key: Some(crate::ledger::webhook_key(&m.identifier, name)),
                    });
                }
            }
            if let Some(m) = &record.message {
                if endpoint.wants(view, m.released, reached) {
                    record.deliveries.push(NewDelivery {
                        id: take_id(),
                        target: name.clone(),
                        identifier: m.identifier.clone(),
                        replay_of: None,
                        envelope: None,
                        at_ms: ctx.now_ms,
                        alert_id: None,
                        version: None,
                        key: Some(crate::ledger::webhook_key(&m.identifier, name)),
                    });
                }
            }
        }

        // Cell broadcast (`cbc::plan_broadcasts`): bring the air in line with the alert's latest message. Nothing
        // new while held; an end stops what is on the air even when its message is held (an alert re-held by an
        // escalation past its approval can still be cancelled).
        let latest_now = record.message.as_ref().or(latest);
        if ctx.cbc.enabled && (view.public_release || view.state.is_end()) && !ctx.broadcast.carriers.is_empty() {
            if let Some(msg) = latest_now {
                let (deliveries, broadcasts) = self.plan_broadcasts(ctx, msg, false, &mut take_id);
                record.deliveries.extend(deliveries);
                record.broadcasts.extend(broadcasts);
            }
        }
        Some(record)
    }

    /// The head of a target's outbox, ready to send at `now_ms`.
    pub fn next_job(&self, target: &str, base_url: &str, now_ms: i64) -> Option<Job> {
        let t = self.targets.get(target)?;
        let endpoint = t.endpoint.as_ref()?;
        let &id = t.queue.front()?;
        let d = self.deliveries.get(&id)?;
        let msg = self.messages.get(&d.record.identifier);
        let payload = Payload { identifier: &d.record.identifier, message: msg, envelope: d.envelope.as_deref() };
        Some(Job {
            id,
            target: target.to_string(),
            channel: t.channel,
            request: endpoint.request(&payload, base_url, now_ms),
            identifier: d.record.identifier.clone(),
            status: msg.map_or("Actual", |m| m.status.as_str()),
            attempt: d.record.attempts + 1,
            key: d.key.clone(),
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
