//! `dissemination`: the sinks. Every alert change becomes a CAP 1.2 message (kept for `/cap/…` and the Atom
//! feed), signed webhook deliveries to agencies and media, and cell broadcasts to each carrier's CBC — journaled
//! first, then delivered from durable, strictly ordered outboxes. I/O lives here (files, HTTP); the encoders it
//! uses (the `encoders` crate: `cap`, `cell_broadcast`) and the geotargeting (`geo-index`) stay pure. From `alerting`
//! it takes only the report references and the template value name an alert carries.
//!
//! # Layout
//! | file | what lives there |
//! |---|---|
//! | `lib.rs` | [`Dissemination`] (the API the binary calls), its worker runtime, the error types |
//! | [`view`] | [`AlertView`]: the alert change as dissemination sees it (decoupled from the rule engine) |
//! | [`config`] | `config/dissemination.toml`: sender, CAP, feed, journal; shared checks ([`FieldError`]) |
//! | [`messages`] | AlertView → CAP message (builder, templates, zone polygons and geocodes), `StoredMessage` |
//! | [`feed`] | the public Atom feed of active and recent alerts, and its ETag |
//! | [`channel`] | the outbound channels, one room each; `Channel` and `Endpoint` list them, in one place |
//! | [`channel::webhook`] | webhook target, CAP/JSON body, `X-DC-Signature`, `[webhooks]` and `[[subscriber]]` |
//! | ↳ [`subscriber`], [`signature`] | subscribers (input, validation naming the field, filters, status); the HMAC |
//! | [`channel::cbc`] | carrier target, envelope, bearer token, `[cell_broadcast]` and `[[carrier]]`, on-air planning |
//! | [`channel::push`] | Web Push to citizens: subscriptions, VAPID key, re-notify policy, encrypted fan-out, `[push]` |
//! | ↳ [`broadcast`] | one broadcast: PWS class policy, serial numbers, texts, per-carrier targeting, envelopes |
//! | ↳ `ledger.rs` | the on-air ledger: per carrier, what was written and not yet stopped |
//! | [`ledger`] | cluster mode: delivery keys from what is delivered, the replicated ledger asked before each attempt |
//! | `journal.rs` | the append-only journal in `data_dir` (durability, restart, compaction) |
//! | `archive.rs` | the CAP archive `data_dir/cap/<identifier>.xml`: released messages memory no longer holds |
//! | `outbox.rs` | state rebuilt from the journal: per-target ordered outboxes, dead letters, delivery logs, planning |
//! | `delivery.rs` | one worker task per target: HTTP with timeout, exponential backoff with jitter; the clock |
//! | [`metrics`] | Prometheus metrics |
//! | `tests/` | real HTTP receivers on 127.0.0.1, restarts, tshark and xmllint checks, timing |
//!
//! # Flow
//! ```text
//! alert_changed(view) ─plan─▶ CAP message + deliveries + broadcasts ─journal (fsync)─▶ apply ─▶ wake workers
//!   worker(target): head of outbox ─POST─▶ 2xx: next · error: backoff, retry · N failures: dead letter
//! ```
//! Approval gate: while `view.public_release` is false the message is kept for operators (and internal
//! subscribers) only — not in the feed, not at `cap_xml`, not to public subscribers, nothing to CBCs. The change
//! that releases it sends the held messages in order.
//!
//! # Adding a channel
//! Say LINE: a room `channel/line.rs` (or a folder when it grows) holding its target type (what the config gives
//! of one account), its `request` (body, content type, authentication headers; the worker adds the `X-DC-*`
//! headers and does timeouts, retries and dead letters), its `wants` (which messages it takes, as a webhook's
//! filters), its config section (a `Deserialize` struct with `deny_unknown_fields`, and a `Settings::resolve`
//! naming the bad key) and its tests. Then in `channel/mod.rs` a variant in [`channel`]'s `Channel` and in
//! `Endpoint`, and `Channel::ALL`: the compiler points at each `match` there that needs its arm (label,
//! retry, channel, target name, wants, request); its targets join the chain in `configured`. Last, its section in [`DisseminationConfig`] and `config::Resolved`. The
//! outbox, journal, metrics and replay need nothing: a target's channel is its `Endpoint` variant, and its name
//! (`line:<account>`, from the label) is only how HTTP responses, metrics and the journal spell it.

mod archive;
pub mod channel;
pub mod config;
mod delivery;
pub mod feed;
mod journal;
pub mod ledger;
pub mod messages;
pub mod metrics;
mod outbox;
pub mod view;

// Paths from before the channels had rooms of their own.
pub use channel::cbc::broadcast;
pub use channel::webhook::{signature, subscriber};

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use geo_index::GeoIndex;
use tokio::sync::{watch, Notify};

pub use broadcast::{
    warning_area_of_zone, BroadcastKind, BroadcastRecord, CarrierBroadcast, CarrierStatus, GeofencedSummary,
    TargetingSummary, WarningAreaShape,
};
pub use channel::cbc::ledger::{AirEntry, AirState};
pub use config::{DisseminationConfig, FieldError};
pub use ledger::{Begin, DeliveryLedger, LedgerError, LedgerFuture, PlannedDelivery};
pub use outbox::{DeliveryRecord, DeliveryStatus};
pub use signature::{
    delivery_signature_header, signature_header, verify_delivery_signature, verify_signature, SIGNATURE_HEADER,
};
pub use subscriber::{Audience, Filters, Format, Source, SubscriberInput, SubscriberStatus};
pub use view::{AlertView, ViewMode, ViewState};

use channel::Endpoint;
use config::Resolved;
use delivery::now_ms;
use encoders::cap::Templates;
use journal::{Journal, NewDelivery, Record};
use outbox::{PlanContext, State, Target};

/// Why dissemination could not start.
#[derive(Debug, thiserror::Error)]
pub enum DisseminationError {
    /// A config value (the field is named).
    #[error("dissemination config: {0}")]
    Config(#[from] FieldError),
    #[error("public base URL `{0}` must be an absolute http:// or https:// URL without query or fragment")]
    BaseUrl(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A journal line that cannot be read (not the torn last line, which is dropped).
    #[error("{path}: line {line}: {message}")]
    Journal { path: PathBuf, line: usize, message: String },
    /// The journal's or the archive's file layer (`durable`): names the file and the operation.
    #[error(transparent)]
    Durable(#[from] durable::Error),
    #[error("HTTP client: {0}")]
    Client(String),
    #[error("starting the delivery runtime: {0}")]
    Runtime(std::io::Error),
    #[error("web push: {0}")]
    Push(#[from] channel::push::PushError),
}

/// Why a replay was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("no subscriber or carrier `{0}`")]
    UnknownTarget(String),
    #[error("`{target}` has no delivery {id}")]
    UnknownDelivery { target: String, id: u64 },
    #[error("delivery {id} is {status:?}, not a dead letter")]
    NotDeadLetter { id: u64, status: DeliveryStatus },
}

/// Why an operator's rebroadcast was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RebroadcastError {
    #[error("cell broadcast is off or has no carriers")]
    Disabled,
    #[error("no alert `{0}` in dissemination")]
    UnknownAlert(String),
    #[error("alert `{0}` is ended or not released to the public")]
    NotActive(String),
    #[error("the PWS class policy gives alert `{0}` no broadcast")]
    NoClass(String),
    #[error("alert rebroadcast less than a minute ago; try again in {wait_s} s")]
    TooSoon { wait_s: i64 },
}

/// Least time between two operator rebroadcasts of one alert.
const REBROADCAST_INTERVAL: Duration = Duration::from_secs(60);

/// What is on the air now (see [`Dissemination::on_air`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct OnAir {
    /// Carrier → its broadcasts not yet seen stopped (every configured carrier is listed, empty or not).
    pub carriers: std::collections::BTreeMap<String, Vec<AirEntry>>,
    /// Stopped broadcasts, newest first.
    pub history: Vec<AirEntry>,
}

/// Poisoning would only say that another thread panicked mid-update; the state is still the best we have, and
/// warnings must keep flowing.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Shared by the API and the worker tasks.
pub(crate) struct Inner {
    cfg: Resolved,
    geo: Arc<GeoIndex>,
    templates: Templates,
    base_url: String,
    /// Outer lock: serialises every change (plan, journal line, apply) so the journal's order is the state's.
    writer: Mutex<Journal>,
    /// Inner lock (always taken after `writer` when both are needed); readers take it alone, briefly.
    state: Mutex<State>,
    client: reqwest::Client,
    /// The replicated delivery ledger in cluster mode (`ledger.rs`): when set, every attempt is recorded there
    /// before the call and receivers get the delivery's key as its id.
    ledger: std::sync::OnceLock<Arc<dyn DeliveryLedger>>,
    /// Deliveries planned since the last [`Dissemination::take_planned`] (only while a ledger is set).
    planned: Mutex<Vec<PlannedDelivery>>,
}

impl Inner {
    /// What planning a change needs of this instance, at the current time.
    fn plan_context(&self) -> PlanContext<'_> {
        PlanContext {
            message: messages::MessageContext {
                cfg: &self.cfg,
                geo: &self.geo,
                templates: &self.templates,
                base_url: &self.base_url,
            },
            broadcast: broadcast::BroadcastContext {
                geo: &self.geo,
                carriers: &self.cfg.cbc.carriers,
                schedule: self.cfg.cbc.schedule,
            },
            cbc: &self.cfg.cbc,
            now_ms: now_ms(),
        }
    }

    /// Journals a record and applies it; wakes the targets it queued work for.
    fn commit(&self, record: &Record, durable: bool) {
        let mut w = lock(&self.writer);
        self.write(&mut w, record, durable);
        let wake = lock(&self.state).apply(record, true);
        drop(w);
        for n in wake {
            n.notify_one();
        }
    }

    fn write(&self, w: &mut Journal, record: &Record, durable: bool) {
        if let Err(e) = w.append(record, durable) {
            // Delivering without the journal beats not delivering: the warning goes out, and the error is loud. The
            // line waits in the journal's backlog for the disk (see `journal.rs`).
            tracing::error!(error = %e, backlog = w.backlog(), "dissemination journal write failed");
            metrics::METRICS.errors.with_label_values(&["journal"]).inc();
        }
        metrics::METRICS.journal_backlog.set(w.backlog() as i64);
    }

    /// Notes the deliveries a journaled record planned, for the ledger (cluster mode only).
    fn note_planned(&self, record: &Record) {
        if self.ledger.get().is_none() {
            return;
        }
        let deliveries: &[NewDelivery] = match record {
            Record::Change(c) => &c.deliveries,
            Record::Enqueue { delivery } => std::slice::from_ref(delivery),
            _ => return,
        };
        let mut planned = lock(&self.planned);
        for d in deliveries {
            if let Some(key) = &d.key {
                planned.push(PlannedDelivery {
                    key: key.clone(),
                    target: d.target.clone(),
                    identifier: d.identifier.clone(),
                });
            }
        }
    }

    fn next_job(&self, target: &str) -> Option<outbox::Job> {
        lock(&self.state).next_job(target, &self.base_url, now_ms())
    }
}

/// The dissemination service. `Send + Sync`; share it in an `Arc`. Dropping it stops its workers (pending
/// deliveries stay in the journal and go out after the next start on the same `data_dir`).
pub struct Dissemination {
    inner: Arc<Inner>,
    handle: tokio::runtime::Handle,
    stop: watch::Sender<bool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// When each alert was last rebroadcast by an operator (Unix ms), for [`REBROADCAST_INTERVAL`].
    rebroadcast_at: Mutex<std::collections::HashMap<String, i64>>,
    /// Web Push to citizens (`[push] enabled`).
    push: Option<channel::push::PushChannel>,
}

impl Dissemination {
    /// Loads the journal in `data_dir` (creating it), checks the config against the zones and templates, and
    /// starts one worker per subscriber and carrier on its own small runtime (a thread of its own, so this works
    /// inside or outside a tokio runtime).
    pub fn start(
        config: DisseminationConfig,
        data_dir: &Path,
        geo: Arc<GeoIndex>,
        templates: Templates,
        public_base_url: String,
    ) -> Result<Dissemination, DisseminationError> {
        let base_ok = public_base_url
            .strip_prefix("https://")
            .or_else(|| public_base_url.strip_prefix("http://"))
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(['?', '#', ' ', '"', '<', '>']));
        if !base_ok {
            return Err(DisseminationError::BaseUrl(public_base_url));
        }
        let cfg = config.resolve(&geo, &templates, &|k| std::env::var(k).ok(), &public_base_url)?;

        let records = Journal::read(data_dir)?;
        let mut state = State {
            log_len: cfg.journal.delivery_log,
            feed_recent: cfg.feed.recent,
            archive: Some(archive::CapArchive::new(data_dir.join(archive::ARCHIVE_DIR), cfg.journal.fsync)),
            ..State::default()
        };
        for endpoint in channel::configured(&cfg) {
            state.targets.insert(endpoint.target_name(), Target::new(endpoint));
        }
        for r in &records {
            state.apply(r, false);
        }
        state.prune();
        let (records, broadcasts, count) = compact(records, &state);
        state.renumber_broadcasts(&broadcasts, count);
        let journal = Journal::rewrite(data_dir, &records, cfg.journal.fsync)?;

        let client = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| DisseminationError::Client(e.to_string()))?;

        let (stop, stop_rx) = watch::channel(false);
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("dc-dissemination".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("dc-dissemination-worker")
                    .enable_all()
                    .build();
                let rt = match rt {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                let mut stop_rx = stop_rx;
                rt.block_on(async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                });
                // Workers are at await points; in-flight requests are abandoned (and re-sent after a restart).
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .map_err(DisseminationError::Runtime)?;
        let handle = handle_rx
            .recv()
            .map_err(|_| DisseminationError::Runtime(std::io::Error::other("runtime thread ended")))?
            .map_err(DisseminationError::Runtime)?;

        let workers: Vec<(String, Arc<Notify>)> = state
            .targets
            .iter()
            .filter(|(_, t)| t.endpoint.is_some())
            .map(|(n, t)| (n.clone(), t.notify.clone()))
            .collect();
        let push = if cfg.push.enabled {
            let p = channel::push::PushChannel::start(
                cfg.push.clone(),
                &data_dir.join("push"),
                geo.clone(),
                client.clone(),
                cfg.journal.fsync,
                &handle,
                stop.subscribe(),
            );
            match p {
                Ok(p) => Some(p),
                Err(e) => {
                    let _ = stop.send(true);
                    return Err(e.into());
                }
            }
        } else {
            None
        };
        let inner = Arc::new(Inner {
            cfg,
            geo,
            templates,
            base_url: public_base_url,
            writer: Mutex::new(journal),
            state: Mutex::new(state),
            client,
            ledger: std::sync::OnceLock::new(),
            planned: Mutex::new(Vec::new()),
        });
        let d = Dissemination {
            inner,
            handle,
            stop,
            thread: Mutex::new(Some(thread)),
            rebroadcast_at: Mutex::new(Default::default()),
            push,
        };
        for (name, notify) in workers {
            d.spawn_worker(name, notify);
        }
        d.handle.spawn(journal_retry(d.inner.clone(), d.stop.subscribe()));
        // Reports a crash kept from being written.
        let missing = lock(&d.inner.state).missing_reports(0);
        d.spawn_reports(missing);
        Ok(d)
    }

    fn spawn_worker(&self, target: String, notify: Arc<Notify>) {
        self.handle.spawn(delivery::run_target(self.inner.clone(), target, notify, self.stop.subscribe()));
    }

    /// One alert change: builds its CAP message, journals it with its deliveries and broadcasts (fsync), then
    /// hands them to the workers and returns. Returns the new CAP identifier (None when the change was stale or a
    /// repeat, or no message could be built — the error is logged, counted and journaled).
    ///
    /// Cost: building the message and, for a broadcast, targeting and encoding (well under 10 ms), plus one
    /// fsync. It never waits for a receiver.
    pub fn alert_changed(&self, alert: &AlertView) -> Option<String> {
        let inner = &self.inner;
        let w = lock(&inner.writer);
        let record = {
            let st = lock(&inner.state);
            let ctx = inner.plan_context();
            st.plan_change(&ctx, alert)?
        };
        let identifier = record.message.as_ref().map(|m| m.identifier.clone());
        let record = Record::Change(Box::new(record));
        self.commit(w, &record);
        if let Some(push) = &self.push {
            if let Some(m) = self.latest_released(&alert.id) {
                push.message_released(&m);
            }
        }
        identifier
    }

    /// Whether an alert's held chain (its own messages for internal subscribers while an approval gate keeps it
    /// from the public, see `App::publish_all`) is open: it has messages, none released, and has not ended.
    pub fn held_chain_open(&self, alert_id: &str) -> bool {
        let st = lock(&self.inner.state);
        st.alerts
            .get(alert_id)
            .is_some_and(|h| !h.messages.is_empty() && !h.last_view.public_release && !h.last_view.state.is_end())
    }

    /// The newest released message of an alert still in memory (what a phone should show now).
    fn latest_released(&self, alert_id: &str) -> Option<messages::StoredMessage> {
        let st = lock(&self.inner.state);
        let meta = st.alerts.get(alert_id)?.messages.iter().rev().find(|m| m.released)?;
        st.messages.get(&meta.identifier).cloned()
    }

    /// Turns cluster mode on (`ledger.rs`): from now on every attempt is recorded in `ledger` before the call,
    /// a delivery it says was confirmed is not sent, and receivers get the delivery's key as `X-DC-Delivery` and the
    /// ledger's attempt count as `X-DC-Attempt`. Set it before the first alert change. `false`: one was set already.
    pub fn use_ledger(&self, ledger: Arc<dyn DeliveryLedger>) -> bool {
        self.inner.ledger.set(ledger).is_ok()
    }

    /// The deliveries planned since the last call (with a ledger only), for the caller to record in the ledger
    /// before it acknowledges the alert change that made them.
    pub fn take_planned(&self) -> Vec<PlannedDelivery> {
        std::mem::take(&mut *lock(&self.inner.planned))
    }

    /// The ledger in use, if any.
    pub fn ledger(&self) -> Option<Arc<dyn DeliveryLedger>> {
        self.inner.ledger.get().cloned()
    }

    /// Web Push, when `[push] enabled`: subscriptions and the public key for the HTTP edge.
    pub fn push(&self) -> Option<&channel::push::PushChannel> {
        self.push.as_ref()
    }

    /// Journals a planned change (the writer's lock held since planning, so changes reach the journal in plan
    /// order), applies it, wakes the workers it gave work and starts the targeting reports it needs.
    fn commit(&self, mut w: MutexGuard<'_, Journal>, record: &Record) {
        let inner = &self.inner;
        inner.write(&mut w, record, true);
        inner.note_planned(record);
        let (wake, reports) = {
            let mut st = lock(&inner.state);
            let first_new = st.broadcast_count;
            (st.apply(record, true), st.missing_reports(first_new))
        };
        drop(w);
        for n in wake {
            n.notify_one();
        }
        self.spawn_reports(reports);
    }

    /// Computes targeting reports on the runtime's blocking pool: operators read them, CBCs do not wait for them.
    fn spawn_reports(&self, reports: Vec<channel::cbc::ReportJob>) {
        if reports.is_empty() {
            return;
        }
        let inner = self.inner.clone();
        self.handle.spawn_blocking(move || {
            channel::cbc::targeting_reports(&inner.geo, &inner.cfg.cbc.carriers, reports, |r| inner.commit(&r, false))
        });
    }

    /// Whether the CAP templates have texts for `event` (an alert of another event gets no CAP message).
    pub fn has_event_type(&self, event: &str) -> bool {
        self.inner.templates.event(event).is_ok()
    }

    /// A released CAP message, for `GET /cap/{identifier}.xml` (held messages are not public): from memory, or
    /// from the CAP archive once memory let it go (only released messages are ever written there).
    pub fn cap_xml(&self, identifier: &str) -> Option<String> {
        let archive = {
            let st = lock(&self.inner.state);
            if let Some(m) = st.messages.get(identifier) {
                return m.released.then(|| m.xml.clone());
            }
            st.archive.clone()?
        };
        // Read without the lock: a slow disk must not stall alert changes.
        archive.read(identifier)
    }

    /// Any CAP message, held or not, for operators (held messages of alerts memory forgot are gone).
    pub fn operator_cap_xml(&self, identifier: &str) -> Option<String> {
        let archive = {
            let st = lock(&self.inner.state);
            if let Some(m) = st.messages.get(identifier) {
                return Some(m.xml.clone());
            }
            st.archive.clone()?
        };
        archive.read(identifier)
    }

    /// Every message of an alert still in memory, oldest first: (identifier, msgType, status, released).
    pub fn messages_of(&self, alert_id: &str) -> Vec<(String, encoders::cap::MsgType, encoders::cap::Status, bool)> {
        let st = lock(&self.inner.state);
        st.alerts.get(alert_id).map_or_else(Vec::new, |a| {
            a.messages.iter().map(|m| (m.identifier.clone(), m.msg_type, m.status, m.released)).collect()
        })
    }

    fn feed(&self) -> (String, String) {
        let mut st = lock(&self.inner.state);
        if let Some(c) = &st.feed_cache {
            return c.clone();
        }
        let rendered = feed::render(&st, &self.inner.cfg.feed, &self.inner.base_url);
        st.feed_cache = Some(rendered.clone());
        rendered
    }

    /// The Atom feed for `GET /cap/feed.atom` (`application/atom+xml`).
    pub fn atom_feed(&self) -> String {
        self.feed().0
    }

    /// The feed's strong ETag (quoted), for `ETag` / `If-None-Match`.
    pub fn feed_etag(&self) -> String {
        self.feed().1
    }

    /// Every webhook subscriber with its queue and counts (secrets never shown).
    pub fn subscribers(&self) -> Vec<SubscriberStatus> {
        let st = lock(&self.inner.state);
        st.targets
            .iter()
            .filter_map(|(name, t)| match &t.endpoint {
                Some(Endpoint::Webhook(w)) => Some(w.status(name, t)),
                _ => None,
            })
            .collect()
    }

    /// Adds a subscriber at run time (kept in the journal). Every field is checked; the error names the field.
    pub fn add_subscriber(&self, input: SubscriberInput) -> Result<SubscriberStatus, FieldError> {
        input.validate(&self.inner.geo, &self.inner.templates)?;
        let name = input.name.clone();
        {
            let st = lock(&self.inner.state);
            if st.targets.contains_key(&name) {
                return Err(FieldError::new("name", format!("`{name}` already exists")));
            }
        }
        let record = Record::Subscriber { subscriber: input, at_ms: now_ms() };
        self.inner.commit(&record, true);
        let (status, notify) = {
            let st = lock(&self.inner.state);
            let t = st.targets.get(&name).ok_or_else(|| FieldError::new("name", "was not added"))?;
            let Some(Endpoint::Webhook(w)) = &t.endpoint else {
                return Err(FieldError::new("name", format!("`{name}` already exists")));
            };
            (w.status(&name, t), t.notify.clone())
        };
        self.spawn_worker(name, notify);
        Ok(status)
    }

    /// A subscriber's deliveries (or a carrier's, as `cbc:<carrier>`), newest first: pending, dead letters and
    /// the latest finished ones.
    pub fn delivery_log(&self, target: &str) -> Vec<DeliveryRecord> {
        lock(&self.inner.state).delivery_log(target)
    }

    /// Queues a dead letter again (at the back of the target's outbox); returns the new delivery's id.
    pub fn replay(&self, target: &str, delivery_id: u64) -> Result<u64, ReplayError> {
        let inner = &self.inner;
        let mut w = lock(&inner.writer);
        let record = {
            let st = lock(&inner.state);
            if st.targets.get(target).and_then(|t| t.endpoint.as_ref()).is_none() {
                return Err(ReplayError::UnknownTarget(target.to_string()));
            }
            let d = st
                .deliveries
                .get(&delivery_id)
                .filter(|d| d.record.target == target)
                .ok_or_else(|| ReplayError::UnknownDelivery { target: target.to_string(), id: delivery_id })?;
            if d.record.status != DeliveryStatus::DeadLetter {
                return Err(ReplayError::NotDeadLetter { id: delivery_id, status: d.record.status });
            }
            Record::Enqueue {
                delivery: NewDelivery {
                    id: st.next_id,
                    target: target.to_string(),
                    identifier: d.record.identifier.clone(),
                    replay_of: Some(delivery_id),
                    envelope: d.envelope.as_deref().map(str::to_string),
                    at_ms: now_ms(),
                    alert_id: None,
                    version: None,
                    // The receiver never confirmed it: the same delivery, so the same key (a retry to them).
                    key: d.key.as_deref().map(str::to_string),
                },
            }
        };
        let Record::Enqueue { delivery } = &record else { unreachable!("built above") };
        let new_id = delivery.id;
        inner.write(&mut w, &record, true);
        inner.note_planned(&record);
        let wake = lock(&inner.state).apply(&record, true);
        drop(w);
        for n in wake {
            n.notify_one();
        }
        Ok(new_id)
    }

    /// Every cell broadcast of the alerts in memory, newest first: class, serial, texts, per carrier the cells,
    /// targeting figures and the CBC's ack or failure.
    pub fn broadcasts(&self) -> Vec<BroadcastRecord> {
        lock(&self.inner.state).broadcasts.values().rev().cloned().collect()
    }

    /// The latest version of the alert dissemination has seen, if it holds the alert (a restart compares it with
    /// the alert book's).
    pub fn seen_version(&self, alert_id: &str) -> Option<u32> {
        lock(&self.inner.state).alerts.get(alert_id).map(|h| h.last_view.version)
    }

    /// What is on the air now, per carrier (written and not seen stopped: queued, acknowledged, or being stopped),
    /// and the most recent stopped broadcasts, newest first.
    pub fn on_air(&self) -> OnAir {
        let st = lock(&self.inner.state);
        let mut carriers: std::collections::BTreeMap<String, Vec<AirEntry>> =
            self.inner.cfg.cbc.carriers.iter().map(|c| (c.name.clone(), Vec::new())).collect();
        for e in st.ledger.live() {
            carriers.entry(e.carrier.clone()).or_default().push(e.clone());
        }
        OnAir { carriers, history: st.ledger.history().take(200).cloned().collect() }
    }

    /// An operator asks for the alert to be broadcast again (a new serial number: phones show it again): its
    /// serials on the air are stopped and its latest released message written with the next update number.
    /// Returns the broadcasts planned.
    pub fn rebroadcast(&self, alert_id: &str) -> Result<Vec<BroadcastRecord>, RebroadcastError> {
        let result = self.plan_rebroadcast(alert_id);
        if let Err(e) = &result {
            let reason = match e {
                RebroadcastError::Disabled => "disabled",
                RebroadcastError::UnknownAlert(_) => "unknown_alert",
                RebroadcastError::NotActive(_) => "not_active",
                RebroadcastError::NoClass(_) => "no_class",
                RebroadcastError::TooSoon { .. } => "too_soon",
            };
            metrics::METRICS.cbc_rebroadcast_refused.with_label_values(&[reason]).inc();
        }
        result
    }

    fn plan_rebroadcast(&self, alert_id: &str) -> Result<Vec<BroadcastRecord>, RebroadcastError> {
        let inner = &self.inner;
        let now = now_ms();
        let w = lock(&inner.writer);
        let record = {
            let st = lock(&inner.state);
            let h = st.alerts.get(alert_id).ok_or_else(|| RebroadcastError::UnknownAlert(alert_id.to_string()))?;
            if !inner.cfg.cbc.enabled || inner.cfg.cbc.carriers.is_empty() {
                return Err(RebroadcastError::Disabled);
            }
            if h.last_view.state.is_end() || !h.last_view.public_release {
                return Err(RebroadcastError::NotActive(alert_id.to_string()));
            }
            // Every rebroadcast rings every phone of the area: one per alert per interval, whoever asks.
            if let Some(&at) = lock(&self.rebroadcast_at).get(alert_id) {
                let wait_ms = at + REBROADCAST_INTERVAL.as_millis() as i64 - now;
                if wait_ms > 0 {
                    return Err(RebroadcastError::TooSoon { wait_s: (wait_ms + 999) / 1000 });
                }
            }
            let msg = h
                .messages
                .iter()
                .rev()
                .find(|m| m.released)
                .and_then(|m| st.messages.get(&m.identifier))
                .ok_or_else(|| RebroadcastError::NotActive(alert_id.to_string()))?;
            let ctx = inner.plan_context();
            let mut next_id = st.next_id;
            let mut take_id = || {
                next_id += 1;
                next_id - 1
            };
            let (deliveries, broadcasts) = st.plan_broadcasts(&ctx, msg, true, &mut take_id);
            if broadcasts.iter().all(|b| b.kind != BroadcastKind::WriteReplace) {
                return Err(RebroadcastError::NoClass(alert_id.to_string()));
            }
            journal::ChangeRecord {
                view: h.last_view.clone(),
                message: None,
                released: Vec::new(),
                deliveries,
                broadcasts,
                error: None,
            }
        };
        let planned = record.broadcasts.clone();
        lock(&self.rebroadcast_at).insert(alert_id.to_string(), now);
        let record = Record::Change(Box::new(record));
        self.commit(w, &record);
        Ok(planned)
    }
}

/// How often lines a full disk refused are tried again when no new change comes to push them.
const JOURNAL_RETRY: Duration = Duration::from_secs(5);

/// Writes the journal's backlog as soon as the disk takes it, even in a quiet hour with nothing new to journal.
async fn journal_retry(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(JOURNAL_RETRY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let mut w = lock(&inner.writer);
        if w.backlog() > 0 {
            if let Err(e) = w.flush(true) {
                tracing::debug!(error = %e, backlog = w.backlog(), "dissemination journal: the disk still refuses");
            }
            metrics::METRICS.journal_backlog.set(w.backlog() as i64);
        }
    }
}

/// The journal as rewritten on start from the records replayed into `state`: of attempts only the last per
/// delivery (it carries the delivery's outcome and attempt count); the changes of alerts `state` forgot become
/// their deliveries alone (slim `Enqueue` lines naming alert and version, no envelope: all are finished), their
/// messages being in the CAP archive; their broadcasts and targeting reports go. Also returns the broadcasts'
/// new indices (old → new) and how many there are, for [`State::renumber_broadcasts`].
fn compact(records: Vec<Record>, state: &State) -> (Vec<Record>, std::collections::BTreeMap<usize, usize>, usize) {
    let mut last = std::collections::HashMap::new();
    for (i, r) in records.iter().enumerate() {
        if let Record::Attempt(a) = r {
            last.insert(a.id, i);
        }
    }
    let mut renumbered = std::collections::BTreeMap::new();
    let (mut old_b, mut new_b) = (0, 0);
    // Identifier → (alert, version) of the forgotten alerts' messages, for their deliveries.
    let mut forgotten = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(records.len());
    for (i, r) in records.into_iter().enumerate() {
        match r {
            Record::Attempt(a) if last.get(&a.id) != Some(&i) => {}
            Record::Change(c) if !state.alerts.contains_key(&c.view.id) => {
                old_b += c.broadcasts.len();
                if let Some(m) = &c.message {
                    forgotten.insert(m.identifier.clone(), (c.view.id.clone(), m.version));
                }
                for mut d in c.deliveries {
                    let live = state.deliveries.get(&d.id).is_some_and(|x| {
                        matches!(x.record.status, DeliveryStatus::Pending | DeliveryStatus::DeadLetter)
                    });
                    if !live {
                        d.envelope = None;
                    }
                    d.alert_id = Some(c.view.id.clone());
                    d.version = forgotten.get(&d.identifier).map(|(_, v)| *v);
                    out.push(Record::Enqueue { delivery: d });
                }
            }
            Record::Enqueue { mut delivery } => {
                if let Some((alert, version)) = forgotten.get(&delivery.identifier) {
                    delivery.alert_id = Some(alert.clone());
                    delivery.version = Some(*version);
                }
                out.push(Record::Enqueue { delivery });
            }
            Record::Change(c) => {
                for _ in &c.broadcasts {
                    renumbered.insert(old_b, new_b);
                    old_b += 1;
                    new_b += 1;
                }
                out.push(Record::Change(c));
            }
            Record::Targeting { broadcast, carrier, summary } => {
                if let Some(&b) = renumbered.get(&broadcast) {
                    out.push(Record::Targeting { broadcast: b, carrier, summary });
                }
            }
            r => out.push(r),
        }
    }
    (out, renumbered, new_b)
}

impl Drop for Dissemination {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        // The gauges are process-wide: take this instance's share out (a restart in-process re-adds it).
        let st = lock(&self.inner.state);
        for t in st.targets.values() {
            let ch = t.channel.label();
            metrics::METRICS.queue_depth.with_label_values(&[ch]).sub(t.queue.len() as i64);
            metrics::METRICS.dead_letters.with_label_values(&[ch]).sub(t.dead.len() as i64);
        }
    }
}

/// Lower-case hex, as envelopes, signatures and ETags write bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}
