//! The Web Push channel (RFC 8030, 8291, 8292): alerts to citizens whose app is closed.
//!
//! Unlike webhooks and CBCs, whose few configured targets each have a journaled, strictly ordered outbox, push
//! fans one message out to up to a million anonymous subscriptions, of which only the newest version per alert
//! matters (`Topic`). So it keeps its own state: the subscriptions, one `dispatch` per alert message, and one `sent`
//! line per subscription that had it — not one outbox per phone. It takes the released CAP messages the outbox makes
//! (same approval gate, same zone targeting as the citizens' socket: an alert reaches the subscriptions whose places
//! lie in its zone).
//!
//! | file | what lives there |
//! |---|---|
//! | `mod.rs` | [`PushChannel`]: subscribe, unsubscribe, the public key, `message_released`, the dispatcher |
//! | [`config`] | `[push]`: contact, TTL, bounds, allowed push services, retries |
//! | [`subscription`] | the subscribe body, its checks and refusals (each a reason and a counter) |
//! | [`notice`] | the re-notify policy, `Urgency`, `Topic`, the payload the service worker reads |
//! | [`geofence`] | the area as phones test it: cell broadcast's Warning-Area-Coordinates, for payloads and frames |
//! | [`vapid`] | our key pair in the data dir (made on first start, rotation), the `Authorization` header |
//! | `sender.rs` | one push: encryption (`web-push-native`), headers, what the answer means, `Retry-After` |
//! | `store.rs` | state and journal (one `apply` for live and replay), compaction on start |
//! | [`metrics`] | `dc_push_*` |

#[doc(hidden)]
pub mod bench;
pub mod config;
pub mod geofence;
pub mod metrics;
pub mod notice;
mod sender;
mod store;
pub mod subscription;
pub mod vapid;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use geo_index::GeoIndex;
use serde::Serialize;
use tokio::sync::{watch, Notify, Semaphore};

pub use config::PushConfig;
pub use notice::{Loudness, PushPayload};
pub use store::Outcome;
pub use subscription::{PushLang, Refusal, SubscribeInput};

use self::config::Settings;
use self::metrics::METRICS;
use self::sender::Attempt;
use self::store::{Dispatch, PushState, Record};
use self::vapid::VapidKeys;
use crate::delivery::{backoff, now_ms};
use crate::lock;
use crate::messages::StoredMessage;

/// Why the push channel could not start.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Vapid(#[from] vapid::VapidError),
    #[error(transparent)]
    Durable(#[from] durable::Error),
}

/// What a citizen's app is told about its subscription.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SubscriptionStatus {
    /// The subscription's id (a hash of the endpoint).
    pub id: String,
    /// How many zones the places fall in (0: no alert zone covers them yet; the subscription is kept).
    pub zones: usize,
    pub lang: &'static str,
}

/// The journal is rewritten compact when it has grown past this and twice its size after the last rewrite.
const COMPACT_AFTER_BYTES: u64 = 32 * 1024 * 1024;

/// How long one VAPID token is reused for a push service (it is valid for [`sender::VAPID_VALID_S`]).
const VAPID_REUSE_S: u64 = 3600;

struct Inner {
    cfg: Settings,
    keys: VapidKeys,
    geo: Arc<GeoIndex>,
    journal_path: PathBuf,
    /// Outer lock: serialises every change (check, journal line, apply).
    journal: Mutex<(durable::Journal, u64)>,
    /// Inner lock, taken briefly.
    state: Mutex<PushState>,
    /// Wakes the dispatcher when a dispatch is journaled.
    wake: Notify,
    client: reqwest::Client,
    fsync: bool,
    /// VAPID tokens per (key id, push service origin): (header, made at s).
    tokens: Mutex<HashMap<(String, String), (String, u64)>>,
}

/// The push channel. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct PushChannel {
    inner: Arc<Inner>,
}

impl PushChannel {
    /// Loads (or makes) the VAPID key and the journal in `dir`, and starts the dispatcher on `handle` (it resumes
    /// unfinished dispatches). Stops when `stop` turns true.
    pub(crate) fn start(
        cfg: Settings,
        dir: &Path,
        geo: Arc<GeoIndex>,
        client: reqwest::Client,
        fsync: bool,
        handle: &tokio::runtime::Handle,
        stop: watch::Receiver<bool>,
    ) -> Result<PushChannel, PushError> {
        let keys = VapidKeys::load(dir)?;
        let journal_path = dir.join("journal.jsonl");
        let how = durable::Open::new(durable::BadLines::Refuse).private(true);
        let replay = durable::Journal::read::<Record>(&journal_path, how)?;
        let mut state = PushState::default();
        for e in &replay.records {
            state.apply(&e.record);
        }
        let compact = state.compact();
        let journal =
            durable::Journal::replace(&journal_path, &compact, durable::Replace::DURABLE.private(true).sync(fsync))?;
        let size = journal.len();
        let inner = Arc::new(Inner {
            cfg,
            keys,
            geo,
            journal_path,
            journal: Mutex::new((journal, size)),
            state: Mutex::new(state),
            wake: Notify::new(),
            client,
            fsync,
            tokens: Mutex::new(HashMap::new()),
        });
        inner.update_gauges();
        let (subscriptions, pending) = {
            let st = lock(&inner.state);
            (st.subs.len(), st.pending.len())
        };
        tracing::info!(subscriptions, pending, key = %inner.keys.current.id, "web push ready");
        handle.spawn(dispatcher(inner.clone(), stop));
        Ok(PushChannel { inner })
    }

    /// The VAPID public key (base64url, uncompressed point): the app's `applicationServerKey`.
    pub fn public_key(&self) -> &str {
        &self.inner.keys.current.public_b64
    }

    /// Subscriptions held.
    pub fn subscriptions(&self) -> usize {
        lock(&self.inner.state).subs.len()
    }

    /// Adds (or replaces, for the same endpoint) a citizen's subscription. Every refusal is counted by reason.
    pub fn subscribe(&self, input: &SubscribeInput, peer: Option<IpAddr>) -> Result<SubscriptionStatus, Refusal> {
        let result = self.try_subscribe(input, peer);
        if let Err(r) = &result {
            METRICS.refused.with_label_values(&[r.reason()]).inc();
        }
        result
    }

    fn try_subscribe(&self, input: &SubscribeInput, peer: Option<IpAddr>) -> Result<SubscriptionStatus, Refusal> {
        let inner = &self.inner;
        let sub = subscription::validate(input, &inner.cfg, &inner.geo, peer, &inner.keys.current.id, now_ms())?;
        let status = SubscriptionStatus { id: sub.id.clone(), zones: sub.zones.len(), lang: sub.lang.tag() };
        let mut j = lock(&inner.journal);
        {
            let st = lock(&inner.state);
            // A re-subscription of the same endpoint replaces itself: it counts against no bound.
            let old = st.subs.get(&sub.id);
            let same = |f: fn(&subscription::Subscription) -> &String| old.is_some_and(|o| f(o) == f(&sub));
            if old.is_none() && st.subs.len() >= inner.cfg.max_subscriptions {
                return Err(Refusal::TotalLimit(inner.cfg.max_subscriptions));
            }
            let n = st.per_client.get(&sub.client).copied().unwrap_or(0);
            if !same(|s| &s.client) && n >= inner.cfg.max_per_client {
                return Err(Refusal::ClientLimit(n));
            }
            let n = st.per_address.get(&sub.address).copied().unwrap_or(0);
            if !same(|s| &s.address) && n >= inner.cfg.max_per_address {
                return Err(Refusal::AddressLimit(n));
            }
        }
        inner.commit(&mut j, &Record::Subscribed { sub }, true);
        drop(j);
        METRICS.changes.with_label_values(&["subscribed"]).inc();
        inner.update_gauges();
        Ok(status)
    }

    /// Removes the subscription of `endpoint` (the citizen turned push off). False when there was none.
    pub fn unsubscribe(&self, endpoint: &str) -> bool {
        let id = subscription::subscription_id(endpoint);
        self.inner.remove(&id, "citizen")
    }

    /// A released CAP message: if the policy says the change is worth a push ([`notice::loudness`]), journal a
    /// dispatch and wake the dispatcher. Returns the loudness (None: nothing pushed).
    pub fn message_released(&self, message: &StoredMessage) -> Option<Loudness> {
        let inner = &self.inner;
        let view = &message.view;
        // The zone's outline, as cell broadcast sends it (worked out once per zone, before any lock is taken).
        let geofence = inner.geo.zone(&view.area_id).and_then(|z| geofence::for_area(&z.geojson_geometry()));
        let mut j = lock(&inner.journal);
        let record = {
            let st = lock(&inner.state);
            let last = st.last.get(&view.id).map(|d| &d.pushed);
            let loudness = notice::loudness(last, view)?;
            let payload = |lang| {
                let p = notice::payload(message, loudness, lang, geofence.as_deref());
                if p.geofence_dropped {
                    tracing::warn!(alert = %view.id, lang = lang.tag(), "web push: the geofence does not fit one record; every phone reached alarms");
                    METRICS.geofence_dropped.inc();
                }
                String::from_utf8_lossy(&p.bytes).into_owned()
            };
            Record::Dispatch {
                dispatch: Dispatch {
                    seq: st.next_seq,
                    alert_id: view.id.clone(),
                    identifier: message.identifier.clone(),
                    area_id: view.area_id.clone(),
                    pushed: notice::Pushed::of(view),
                    loudness,
                    urgency: notice::urgency(loudness, view).to_string(),
                    topic: notice::topic(&view.id),
                    at_ms: now_ms(),
                    zh_tw: payload(PushLang::ZhTw),
                    en: payload(PushLang::En),
                },
            }
        };
        let Record::Dispatch { dispatch } = &record else { unreachable!("built above") };
        let loudness = dispatch.loudness;
        tracing::info!(alert = %view.id, version = view.version, loudness = ?loudness, "web push dispatch");
        inner.commit(&mut j, &record, true);
        drop(j);
        METRICS.dispatches.with_label_values(&[metrics::loudness_label(loudness)]).inc();
        inner.wake.notify_one();
        Some(loudness)
    }
}

impl Inner {
    /// Journals a record and applies it (the caller holds the journal lock). A failed write is logged and counted;
    /// the change still applies (a subscription or a warning is worth more than its line).
    fn commit(&self, j: &mut (durable::Journal, u64), record: &Record, durable: bool) {
        if let Err(e) = j.0.append_json(record, durable && self.fsync) {
            tracing::error!(error = %e, "web push journal write failed");
            METRICS.errors.with_label_values(&["journal"]).inc();
        }
        lock(&self.state).apply(record);
    }

    fn remove(&self, id: &str, reason: &'static str) -> bool {
        let mut j = lock(&self.journal);
        if !lock(&self.state).subs.contains_key(id) {
            return false;
        }
        self.commit(&mut j, &Record::Removed { id: id.to_string(), reason: reason.into(), at_ms: now_ms() }, true);
        drop(j);
        METRICS.changes.with_label_values(&[reason]).inc();
        self.update_gauges();
        true
    }

    fn update_gauges(&self) {
        let (mut current, mut previous, mut unknown) = (0i64, 0i64, 0i64);
        for s in lock(&self.state).subs.values() {
            if s.key == self.keys.current.id {
                current += 1;
            } else if self.keys.previous.as_ref().is_some_and(|k| k.id == s.key) {
                previous += 1;
            } else {
                unknown += 1;
            }
        }
        METRICS.subscriptions.with_label_values(&["current"]).set(current);
        METRICS.subscriptions.with_label_values(&["previous"]).set(previous);
        METRICS.subscriptions.with_label_values(&["unknown"]).set(unknown);
    }

    /// The VAPID header for a push service, signed at most once an hour per key and origin.
    fn authorization(&self, key_id: &str, origin: &str) -> Result<String, String> {
        let key = self.keys.by_id(key_id).ok_or_else(|| format!("VAPID key {key_id} is gone (rotated away)"))?;
        let now_s = (now_ms() / 1000).max(0) as u64;
        let k = (key_id.to_string(), origin.to_string());
        if let Some((header, made)) = lock(&self.tokens).get(&k) {
            if now_s < made + VAPID_REUSE_S {
                return Ok(header.clone());
            }
        }
        let header = sender::authorization(key, origin, &self.cfg.contact, now_s)?;
        lock(&self.tokens).insert(k, (header.clone(), now_s));
        Ok(header)
    }

    /// Records one subscription's outcome for a dispatch.
    fn finish(&self, seq: u64, id: &str, outcome: Outcome) {
        METRICS.sent.with_label_values(&[outcome.label()]).inc();
        let mut j = lock(&self.journal);
        self.commit(&mut j, &Record::Sent { seq, id: id.to_string(), outcome }, false);
        drop(j);
        if outcome == Outcome::Gone {
            self.remove(id, "gone");
        }
    }

    /// Rewrites the journal compact once it has grown well past its last compact size.
    fn maybe_compact(&self) {
        let mut j = lock(&self.journal);
        let (len, base) = (j.0.len(), j.1);
        if len < COMPACT_AFTER_BYTES || len < base.saturating_mul(2) {
            return;
        }
        let records = lock(&self.state).compact();
        match durable::Journal::replace(
            &self.journal_path,
            &records,
            durable::Replace::DURABLE.private(true).sync(self.fsync),
        ) {
            Ok(fresh) => {
                let size = fresh.len();
                *j = (fresh, size);
            }
            Err(e) => {
                tracing::error!(error = %e, "web push journal compaction failed");
                METRICS.errors.with_label_values(&["journal"]).inc();
            }
        }
    }
}

/// Starts every pending dispatch as its own task, so a slow fan-out (a push service asking us to wait) holds up no
/// other alert; all share `concurrency` pushes in flight.
async fn dispatcher(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(inner.cfg.concurrency));
    let running: Arc<Mutex<std::collections::HashSet<u64>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let ready: Vec<u64> = {
            let st = lock(&inner.state);
            let run = lock(&running);
            st.pending.keys().filter(|s| !run.contains(s)).copied().collect()
        };
        for seq in ready {
            lock(&running).insert(seq);
            let (inner, permits, running) = (inner.clone(), permits.clone(), running.clone());
            tasks.spawn(async move {
                run_dispatch(&inner, seq, &permits).await;
                lock(&running).remove(&seq);
                inner.maybe_compact();
            });
        }
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            _ = inner.wake.notified() => {}
            // A finished dispatch may have left work (none today); the tick also reaps tasks.
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn run_dispatch(inner: &Arc<Inner>, seq: u64, permits: &Arc<Semaphore>) {
    let (dispatch, recipients) = {
        let st = lock(&inner.state);
        let Some(p) = st.pending.get(&seq) else { return };
        let recipients: Vec<String> =
            st.recipients(&p.dispatch.area_id).into_iter().filter(|id| !p.done.contains(id)).collect();
        (Arc::new(p.dispatch.clone()), recipients)
    };
    tracing::debug!(seq, alert = %dispatch.alert_id, recipients = recipients.len(), "web push fan-out");
    let mut tasks = tokio::task::JoinSet::new();
    for id in recipients {
        let Ok(permit) = permits.clone().acquire_owned().await else { break };
        let (inner, dispatch) = (inner.clone(), dispatch.clone());
        tasks.spawn(async move {
            let outcome = push_one(&inner, &dispatch, &id).await;
            inner.finish(dispatch.seq, &id, outcome);
            drop(permit);
        });
        // Reap the finished ones as we go, so a 100,000-recipient dispatch does not hold 100,000 results.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let mut j = lock(&inner.journal);
    inner.commit(&mut j, &Record::Finished { seq }, false);
}

/// One subscription's push, with retries; its final outcome.
async fn push_one(inner: &Arc<Inner>, dispatch: &Dispatch, id: &str) -> Outcome {
    let retry = inner.cfg.retry;
    let ttl_ms = i64::from(inner.cfg.ttl_s) * 1000;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let sub = {
            let st = lock(&inner.state);
            if st.superseded(dispatch.seq, &dispatch.alert_id) {
                return Outcome::Superseded;
            }
            match st.subs.get(id) {
                Some(s) => s.clone(),
                // Unsubscribed meanwhile: nobody to tell.
                None => return Outcome::Gone,
            }
        };
        let now = now_ms();
        let left_ms = dispatch.at_ms + ttl_ms - now;
        if left_ms <= 1000 {
            return Outcome::Expired;
        }
        let Some(origin) = sender::endpoint_origin(&sub) else { return Outcome::Failed };
        let authorization = match inner.authorization(&sub.key, &origin) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(subscription = %id, error = %e, "web push: no key to sign with");
                METRICS.errors.with_label_values(&["no_key"]).inc();
                return Outcome::Failed;
            }
        };
        let request = match sender::build(&sub, dispatch, &authorization, (left_ms / 1000) as u64) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(subscription = %id, error = %e, "web push: could not encrypt");
                METRICS.errors.with_label_values(&["encrypt"]).inc();
                return Outcome::Failed;
            }
        };
        match sender::send(&inner.client, request, retry.request_timeout, now).await {
            Attempt::Done(outcome, detail) => {
                if outcome == Outcome::Failed {
                    tracing::warn!(subscription = %id, %detail, "web push refused");
                }
                return outcome;
            }
            Attempt::Again { after, reason, detail } => {
                METRICS.retries.with_label_values(&[reason]).inc();
                if attempt >= retry.max_attempts {
                    tracing::warn!(subscription = %id, attempts = attempt, %detail, "web push given up");
                    return Outcome::Failed;
                }
                // The push service's own word wins when it asks for longer than our backoff.
                let wait = backoff(&retry, attempt).max(after.unwrap_or_default());
                let left = Duration::from_millis((dispatch.at_ms + ttl_ms - now_ms()).max(0) as u64);
                if wait >= left {
                    return Outcome::Expired;
                }
                tracing::debug!(subscription = %id, attempt, ?wait, %detail, "web push retry");
                tokio::time::sleep(wait).await;
            }
        }
    }
}
