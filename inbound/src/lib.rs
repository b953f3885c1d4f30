//! `inbound`: a source — warnings that partner agencies (CWA weather, WRA water, SWCB slopes, …) publish as CAP 1.2,
//! taken in by polling their Atom feeds or receiving their pushes, validated, placed on our zones, and kept as
//! *external alerts* for the operators' map, for citizens (only when the source is public and the message real), and
//! as conditions of composite rules. Builds on `encoders` (CAP parsing) and `alerting` (the [`ExternalAlert`] and
//! [`ExternalFilter`] boundary types the rule engine reads, and the journal's atomic JSON files).
//!
//! # Layout
//! - `lib.rs` (this file): [`Inbound`] — start, push, active, tick, poll_now — and [`ExternalCoverage`], the handle
//!   the rule engine asks "is zone Z under an external warning?".
//! - [`config`]: [`InboundConfig`] from `config/inbound.toml`: `[[feed]]`, `[[push]]` and `[[vd_feed]]` sources,
//!   bounds, and the authority each source has: the `senders` it speaks for (required for pushes), the other sources
//!   whose warnings it may change (`may_reference`), where a feed may be fetched from (`hosts`, `allow_networks`).
//! - [`external`]: [`ExternalEvent`], [`PushOutcome`], [`Ignored`], and building an [`ExternalAlert`] from a CAP
//!   message; [`ExternalAlert`] and [`ExternalFilter`] themselves are `alerting::types`, re-exported.
//! - `book.rs` (private): the active set and the CAP rules that change it — duplicates, Update/Cancel through
//!   `references`, expiry — and who may change what: each chain belongs to the source that opened it, and another
//!   source's Update or Cancel of it is refused (`foreign_source`) unless configured. Pure: time is an argument. With a data dir ([`Inbound::start_in`]) the whole book is
//!   saved to `<dir>/book.json` after every change and restored at start, so warnings, duplicates and cancellations
//!   survive a restart (kill -9 included: the file is replaced atomically).
//! - [`areas`]: geocodes → zones, polygons and circles → zones and GeoJSON.
//! - [`auth`]: bearer tokens and the `X-DC-Signature` HMAC-SHA256 scheme (documented there).
//! - [`atom`]: reading an Atom feed's entries and their CAP links.
//! - [`poll`]: one feed's poller — conditional GET, timeouts, size bounds, backoff, redirects followed by hand.
//! - `fetch.rs` (private): one source's guarded HTTP client (the egress checks below, a deadline, a size bound,
//!   redirects by hand), shared by both kinds of poller.
//! - [`vd`]: agency vehicle-detector feeds (MOTC `VDLive`, JSON or XML) → readings of our `vehicle_detector`
//!   sensors: decode, checks and lane aggregation, the poller, `dc_vd_feed_*` metrics ([`vd::VdFeeds`]).
//! - [`egress`]: where a feed's poller may connect — allowed hosts, same-origin redirects, no loopback, private or
//!   link-local address unless configured, checked in the client's own DNS resolver (one resolution for check and
//!   connection, so DNS rebinding has nothing to swap) and again on the address the answer came from.
//! - [`metrics`]: `dc_inbound_*` counters in the default Prometheus registry.
//! - [`error`]: [`InboundError`] (start), [`Rejection`] (a message refused), [`PushError`] (a push refused, with
//!   its HTTP status and reason label).
//! - `tests/`: a local HTTP feed whose entries change between polls, feeds linking where they may not (counting
//!   servers on 127.0.0.2/3 prove nothing was requested), pushes good and bad, one source's Cancel of another's
//!   warning, Taiwan-shaped fixtures checked against the OASIS XSD with `xmllint`.
//!
//! # Flow
//! ```text
//! feed poller ─egress─▶ GET feed (If-None-Match) ─▶ entries ─egress─▶ GET CAP ─┐
//! POST /api/v1/cap/inbound ─▶ Inbound::push ─auth, size──────────────────────────┤
//!                                                                                ▼
//!   cap::parse_alert_with (XSD structure + CAP rules) ─▶ senders ─▶ areas::place ─▶ book (chain owner)
//!                                                                                ─▶ ExternalEvent channel
//! ```
//! Each step refuses with a [`Rejection`] (or, before a fetch, an [`egress::Refusal`]) that names the reason; a
//! refused message changes nothing.
//!
//! # For the lead (wiring)
//! - `let (inbound, mut events) = Inbound::start(config, geo)?;` inside the runtime; keep `inbound` in the app state
//!   (it is `Send + Sync`; dropping it stops the pollers).
//! - `POST /api/v1/cap/inbound[?source=name]`: `inbound.push(source, &headers, &body, now_ms)`; answer
//!   `Ok(outcome)` with 200 and `outcome` as JSON (`{"outcome":"raised","id":…}`), `Err(e)` with `e.status()` and
//!   `{"error": e.reason(), "message": e.to_string()}`. Let axum's body limit sit above the largest `max_bytes`.
//! - Operators' snapshot: `inbound.active()`; deltas: forward `events` (each names `source` and `public`).
//! - Citizens: forward only alerts with `public == true`, naming `source`/`sender_name`.
//!
//! # Composite rules
//! Rules read external alerts through `external` conditions (`alerting::rules::ExternalCondition`, compiled to an
//! [`ExternalFilter`]). The rule engine stays free of I/O and locks: the server hands it [`Inbound::active`] after
//! every event and every few seconds (`RuleEngine::set_external`), and the engine re-evaluates the zones whose
//! coverage changed. [`ExternalCoverage`] answers the same question ("is zone Z under an active, Actual warning of
//! this kind, `effective ≤ t < expires`?") for other callers.

pub mod areas;
pub mod atom;
pub mod auth;
mod book;
pub mod config;
pub mod egress;
pub mod error;
pub mod external;
mod fetch;
pub mod metrics;
pub mod poll;
pub mod vd;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use geo_index::GeoIndex;
use http::HeaderMap;
use tokio::sync::mpsc;

use encoders::cap::{parse_alert_with, ParseLimits};

pub use auth::SIGNATURE_HEADER;
pub use config::{FeedSource, InboundConfig, PushSource, VdFeedSource};
pub use error::{InboundError, PushError, Rejection};
pub use external::{ExternalAlert, ExternalEvent, ExternalFilter, Ignored, PushOutcome};
pub use poll::{PollError, PollReport};

use auth::Credential;
use book::{Book, BookSettings, SourceMeta};
use metrics::METRICS;
use poll::FeedPoller;

/// Wall clock in Unix milliseconds; injectable so tests can move time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Metrics label for pushes that name no configured source.
const UNKNOWN_SOURCE: &str = "unknown";
/// CAP needs depth 5; XML signatures a few more. Deeper is an attack or a mistake.
const MAX_DEPTH: usize = 32;

/// The running inbound side: feed pollers, the expiry timer, and the state they share with pushes.
pub struct Inbound {
    /// Everything pushes, pollers and the rule engine share.
    shared: Arc<Shared>,
    /// Each feed's poller behind an async mutex, so `poll_now` and the background loop never poll it at once.
    feeds: HashMap<String, Arc<tokio::sync::Mutex<FeedPoller>>>,
    /// Poller loops and the expiry timer; aborted on drop so the pollers stop with the owner.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// State shared by pushes, pollers and [`ExternalCoverage`].
pub(crate) struct Shared {
    geo: Arc<GeoIndex>,
    /// Read by the rule engine per reading, written a few times a minute: a read-write lock.
    book: RwLock<Book>,
    events: mpsc::Sender<ExternalEvent>,
    pushes: Vec<PushEntry>,
    clock: Clock,
    /// Where the book is saved (`book.json`); `None`: memory only.
    dir: Option<std::path::PathBuf>,
}

/// The file in the inbound data dir that holds the book.
pub const BOOK_FILE: &str = "book.json";

struct PushEntry {
    cfg: PushSource,
    credential: Credential,
}

impl Inbound {
    /// Starts the pollers (first poll at once) and the expiry timer; must be called inside a tokio runtime.
    pub fn start(
        config: InboundConfig,
        geo: Arc<GeoIndex>,
    ) -> Result<(Inbound, mpsc::Receiver<ExternalEvent>), InboundError> {
        Self::start_with_clock(config, geo, Arc::new(system_now_ms))
    }

    /// [`Inbound::start`] keeping the external alerts in `dir` (created if missing): restored now, saved after
    /// every change. Alerts that expired while we were down end at the first tick (their `Expired` events follow).
    pub fn start_in(
        config: InboundConfig,
        geo: Arc<GeoIndex>,
        dir: &std::path::Path,
    ) -> Result<(Inbound, mpsc::Receiver<ExternalEvent>), InboundError> {
        Self::start_with(config, geo, Arc::new(system_now_ms), Some(dir))
    }

    /// [`Inbound::start`] with a clock of the caller's choosing (tests, replays).
    pub fn start_with_clock(
        config: InboundConfig,
        geo: Arc<GeoIndex>,
        clock: Clock,
    ) -> Result<(Inbound, mpsc::Receiver<ExternalEvent>), InboundError> {
        Self::start_with(config, geo, clock, None)
    }

    /// The general form: a clock, and optionally a data dir.
    pub fn start_with(
        config: InboundConfig,
        geo: Arc<GeoIndex>,
        clock: Clock,
        dir: Option<&std::path::Path>,
    ) -> Result<(Inbound, mpsc::Receiver<ExternalEvent>), InboundError> {
        config.validate().map_err(InboundError::Invalid)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| InboundError::Invalid("Inbound::start must be called inside a tokio runtime".into()))?;
        let mut pushes = Vec::new();
        for p in &config.pushes {
            let credential = resolve_credential(p)?;
            pushes.push(PushEntry { cfg: p.clone(), credential });
            metrics::preregister(&p.name, false);
        }
        for reason in PushError::AUTH_LABELS {
            METRICS.rejected.with_label_values(&[UNKNOWN_SOURCE, reason]);
        }
        let (tx, rx) = mpsc::channel(config.event_buffer);
        let settings = BookSettings {
            default_lifetime_ms: ms(config.default_lifetime_s),
            remember_ms: ms(config.remember_s),
            max_active: config.max_active,
        };
        let book = match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| InboundError::State(format!("creating {}: {e}", dir.display())))?;
                match durable::read_json::<book::BookState>(&dir.join(BOOK_FILE)) {
                    Ok(Some(state)) => {
                        let book = Book::restore(settings, state);
                        tracing::info!(active = book.len(), dir = %dir.display(), "external alerts restored");
                        book
                    }
                    Ok(None) => Book::new(settings),
                    Err(e) => return Err(InboundError::State(e.to_string())),
                }
            }
            None => Book::new(settings),
        };
        METRICS.active.set(i64::try_from(book.len()).unwrap_or(i64::MAX));
        let shared = Arc::new(Shared {
            geo,
            book: RwLock::new(book),
            events: tx,
            pushes,
            clock,
            dir: dir.map(std::path::Path::to_path_buf),
        });

        let mut feeds = HashMap::new();
        let mut tasks = Vec::new();
        for f in &config.feeds {
            metrics::preregister(&f.name, true);
            // Each feed has its own client: its resolver enforces that feed's address policy.
            let poller = FeedPoller::new(f.clone())?;
            let poller = Arc::new(tokio::sync::Mutex::new(poller));
            feeds.insert(f.name.clone(), poller.clone());
            let shared = shared.clone();
            tasks.push(runtime.spawn(async move {
                loop {
                    let delay = {
                        let mut p = poller.lock().await;
                        // Errors are logged and counted inside; the delay grows with consecutive failures.
                        let _ = p.poll_once(&shared).await;
                        p.next_delay()
                    };
                    tokio::time::sleep(delay).await;
                }
            }));
        }
        let tick_shared = shared.clone();
        let tick = Duration::from_millis(config.tick_ms);
        tasks.push(runtime.spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                tick_shared.tick((tick_shared.clock)());
            }
        }));
        Ok((Inbound { shared, feeds, tasks }, rx))
    }

    /// The body of `POST /api/v1/cap/inbound`. `source` is the `?source=` name when the route has one; without it
    /// the credential decides (the source whose token or secret matches). Order: size (cheapest, before any
    /// hashing), authentication, then the message. Every refusal is counted and says its reason.
    pub fn push(
        &self,
        source: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
        now_ms: i64,
    ) -> Result<PushOutcome, PushError> {
        let candidates: Vec<&PushEntry> = match source {
            Some(name) => match self.shared.pushes.iter().find(|p| p.cfg.name == name) {
                Some(p) => vec![p],
                None => {
                    let e = PushError::UnknownSource(name.to_string());
                    return Err(count_push_error(UNKNOWN_SOURCE, e));
                }
            },
            None => self.shared.pushes.iter().collect(),
        };
        let label = source.unwrap_or(UNKNOWN_SOURCE);
        if candidates.is_empty() {
            return Err(count_push_error(label, PushError::UnknownSource("(no push source configured)".into())));
        }
        let limit = candidates.iter().map(|p| p.cfg.max_bytes).max().unwrap_or(0);
        if body.len() > limit {
            let e = PushError::Rejected(Rejection::TooLarge { size: body.len(), limit });
            return Err(count_push_error(label, e));
        }
        let mut refusal: Option<PushError> = None;
        let mut chosen = None;
        for p in &candidates {
            match p.credential.verify(headers, body, now_ms, p.cfg.signature_window_s) {
                Ok(()) => {
                    chosen = Some(*p);
                    break;
                }
                // Report the most telling refusal: a wrong credential says more than a missing one.
                Err(e) => {
                    if refusal.as_ref().is_none_or(|r| *r == PushError::Unsigned) {
                        refusal = Some(e);
                    }
                }
            }
        }
        let Some(p) = chosen else {
            return Err(count_push_error(label, refusal.unwrap_or(PushError::Unsigned)));
        };
        let name = p.cfg.name.as_str();
        if body.len() > p.cfg.max_bytes {
            let r = Rejection::TooLarge { size: body.len(), limit: p.cfg.max_bytes };
            self.shared.count_rejection(name, &r, "push");
            return Err(r.into());
        }
        let meta =
            SourceMeta { name, public: p.cfg.public, senders: &p.cfg.senders, may_reference: &p.cfg.may_reference };
        self.shared.receive_at(body, meta, p.cfg.max_bytes, "push", now_ms).map_err(PushError::Rejected)
    }

    /// Active external alerts, newest first: the operators' snapshot.
    pub fn active(&self) -> Vec<ExternalAlert> {
        self.shared.read_book().active()
    }

    /// Expires what is due at `now_ms` (the timer does this every `tick_ms`); returns how many ended.
    pub fn tick(&self, now_ms: i64) -> usize {
        self.shared.tick(now_ms)
    }

    /// Polls feed `name` now, in turn with its background loop (tests, an operator's "refresh" button).
    pub async fn poll_now(&self, name: &str) -> Result<PollReport, PollError> {
        let poller = self.feeds.get(name).ok_or_else(|| PollError::UnknownFeed(name.to_string()))?;
        let mut p = poller.lock().await;
        p.poll_once(&self.shared).await
    }

    /// The handle composite rules use; see the module docs.
    pub fn coverage(&self) -> ExternalCoverage {
        ExternalCoverage { shared: self.shared.clone() }
    }

    /// Same as [`ExternalCoverage::zone_covered_by`].
    pub fn zone_covered_by(&self, zone_id: &str, filter: &ExternalFilter, at_ms: i64) -> bool {
        self.shared.read_book().zone_covered_by(zone_id, filter, at_ms)
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Read-only view of the external alerts for the rule engine: clone it into the engine, ask per reading.
#[derive(Clone)]
pub struct ExternalCoverage {
    shared: Arc<Shared>,
}

impl ExternalCoverage {
    /// True while an active external alert that `filter` accepts covers `zone_id` at `at_ms` (a reading's event
    /// time): `effective ≤ at_ms < expires`, and the zone is among the alert's `zone_ids` (geocode match, or
    /// polygon/circle overlap). With the default filter only `Actual` alerts count.
    pub fn zone_covered_by(&self, zone_id: &str, filter: &ExternalFilter, at_ms: i64) -> bool {
        self.shared.read_book().zone_covered_by(zone_id, filter, at_ms)
    }

    /// Active external alerts, newest first.
    pub fn active(&self) -> Vec<ExternalAlert> {
        self.shared.read_book().active()
    }
}

impl std::fmt::Debug for ExternalCoverage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalCoverage").finish_non_exhaustive()
    }
}

impl Shared {
    fn read_book(&self) -> std::sync::RwLockReadGuard<'_, Book> {
        // A panic while holding the lock leaves a book that is still consistent (each change is applied after
        // every check), so a poisoned lock is used as is rather than taking the rule engine down with it.
        self.book.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_book(&self) -> std::sync::RwLockWriteGuard<'_, Book> {
        self.book.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn feed_meta<'a>(&self, cfg: &'a FeedSource) -> (SourceMeta<'a>, usize) {
        let meta = SourceMeta {
            name: &cfg.name,
            public: cfg.public,
            senders: &cfg.senders,
            may_reference: &cfg.may_reference,
        };
        (meta, cfg.max_bytes)
    }

    /// Polled messages: the clock's time.
    pub(crate) fn receive(
        &self,
        bytes: &[u8],
        (meta, max_bytes): (SourceMeta<'_>, usize),
        what: &str,
    ) -> Result<PushOutcome, Rejection> {
        self.receive_at(bytes, meta, max_bytes, what, (self.clock)())
    }

    /// Parses, places and applies one message; counts and logs the result; announces the events.
    fn receive_at(
        &self,
        bytes: &[u8],
        meta: SourceMeta<'_>,
        max_bytes: usize,
        what: &str,
        now_ms: i64,
    ) -> Result<PushOutcome, Rejection> {
        let limits = ParseLimits { max_bytes, max_depth: MAX_DEPTH };
        let cap = match parse_alert_with(bytes, &limits) {
            Ok(cap) => cap,
            Err(e) => {
                let r = Rejection::from_parse(e);
                self.count_rejection(meta.name, &r, what);
                return Err(r);
            }
        };
        let mut book = self.write_book();
        match book.receive(&cap, meta, &self.geo, now_ms) {
            Ok(applied) => {
                match &applied.outcome {
                    PushOutcome::Ignored { why } => {
                        METRICS.ignored.with_label_values(&[meta.name, why.label()]).inc();
                        tracing::debug!(source = meta.name, identifier = %cap.identifier, why = why.label(), "inbound CAP ignored");
                    }
                    outcome => {
                        METRICS.accepted.with_label_values(&[meta.name, outcome.label()]).inc();
                        tracing::info!(source = meta.name, identifier = %cap.identifier, sender = %cap.sender, change = outcome.label(), "inbound CAP taken");
                    }
                }
                if !matches!(applied.outcome, PushOutcome::Ignored { why: Ignored::Duplicate }) {
                    self.save(&book);
                }
                // Sent under the lock so that events from concurrent pushes and polls arrive in the book's order.
                for event in applied.events {
                    self.announce(event);
                }
                METRICS.active.set(i64::try_from(book.len()).unwrap_or(i64::MAX));
                Ok(applied.outcome)
            }
            Err(r) => {
                self.count_rejection(meta.name, &r, what);
                Err(r)
            }
        }
    }

    fn tick(&self, now_ms: i64) -> usize {
        let mut book = self.write_book();
        let events = book.tick(now_ms);
        let n = events.len();
        if n > 0 {
            self.save(&book);
        }
        for event in events {
            METRICS.expired.with_label_values(&[&event.alert().source]).inc();
            self.announce(event);
        }
        METRICS.active.set(i64::try_from(book.len()).unwrap_or(i64::MAX));
        n
    }

    /// Saves the book (under its lock, so saves happen in the book's order). A failure is logged and counted; the
    /// book in memory stays right and the next change tries again.
    fn save(&self, book: &Book) {
        let Some(dir) = &self.dir else { return };
        if let Err(e) = durable::write_json(&dir.join(BOOK_FILE), &book.state(), durable::Replace::DURABLE) {
            METRICS.save_errors.inc();
            tracing::error!(error = %e, "external alerts not saved");
        }
    }

    fn announce(&self, event: ExternalEvent) {
        if let Err(e) = self.events.try_send(event) {
            // The book (and so `active()`) is still right; only the delta is lost. Closed means nobody listens.
            if matches!(e, mpsc::error::TrySendError::Full(_)) {
                METRICS.events_dropped.inc();
                tracing::warn!("inbound event channel full: external alert event dropped");
            }
        }
    }

    pub(crate) fn count_rejection(&self, source: &str, r: &Rejection, what: &str) {
        METRICS.rejected.with_label_values(&[source, r.reason()]).inc();
        tracing::warn!(source, what, reason = r.reason(), error = %r, "inbound CAP rejected");
    }
}

fn count_push_error(label: &str, e: PushError) -> PushError {
    METRICS.rejected.with_label_values(&[label, e.reason()]).inc();
    tracing::warn!(source = label, reason = e.reason(), error = %e, "inbound push refused");
    e
}

fn resolve_credential(p: &PushSource) -> Result<Credential, InboundError> {
    let from_env = |var: &String| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| InboundError::Secret { source_name: p.name.clone(), var: var.clone() })
    };
    let empty = || InboundError::Invalid(format!("[[push]] `{}`: the credential is empty", p.name));
    match (&p.token, &p.token_env, &p.hmac_secret, &p.hmac_secret_env) {
        (Some(t), None, None, None) if !t.is_empty() => Ok(Credential::token(t)),
        (None, Some(var), None, None) => Ok(Credential::token(&from_env(var)?)),
        (None, None, Some(s), None) if !s.is_empty() => Ok(Credential::hmac_secret(s)),
        (None, None, None, Some(var)) => Ok(Credential::hmac_secret(&from_env(var)?)),
        _ => Err(empty()),
    }
}

fn ms(seconds: u64) -> i64 {
    i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX)
}

fn system_now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos().div_euclid(1_000_000) as i64
}
