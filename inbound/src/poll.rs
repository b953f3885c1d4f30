//! Polling one Atom feed of CAP messages: conditional GET (ETag / Last-Modified), a timeout on every request, a size
//! bound on every body, exponential backoff after failures, and each new or changed entry's CAP document fetched
//! and handed to the book.
//!
//! An entry is fetched again only when its Atom `updated` changes; one whose document was refused is not fetched
//! again either (a broken message would otherwise be re-counted every poll). One whose fetch failed in transport is
//! retried on the next poll. Entries are processed oldest first so that an Alert precedes its Update even when
//! both appear in one poll.
//!
//! Every request — the feed, each CAP document, each redirect hop — goes only where the source's
//! [`EgressPolicy`] allows (allowed hosts, same-origin redirects, no loopback, private or link-local address unless
//! configured; see [`super::egress`]). A refused entry is counted under its reason and not fetched again while its
//! `updated` is unchanged; the feed's other entries are still taken.

use std::collections::HashMap;
use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::atom::{read_feed, AtomReadError, FeedEntry};
use super::config::FeedSource;
use super::egress::Refusal;
use super::error::{InboundError, Rejection};
use super::fetch::{poll_delay, FetchError, Fetched, GuardedClient, Validators};
use super::metrics::METRICS;
use super::Shared;

/// Why a poll failed as a whole (the feed document itself). Counted in `dc_inbound_rejected_total` with these
/// labels and in `dc_inbound_polls_total{result="error"}`; the poller then backs off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    /// Connection refused, DNS, TLS, timeout.
    #[error("feed unreachable: {0}")]
    Unreachable(String),
    /// An answer other than 200 or 304.
    #[error("feed answered HTTP {0}")]
    Status(u16),
    /// Body over `max_feed_bytes`.
    #[error("feed is over {limit} bytes")]
    TooLarge { limit: usize },
    /// Not an Atom feed we can read.
    #[error("{0}")]
    Invalid(#[from] AtomReadError),
    /// No feed of that name is configured.
    #[error("no feed named `{0}`")]
    UnknownFeed(String),
    /// The feed URL, or where it redirected, is not somewhere this source may reach.
    #[error("feed not fetched: {0}")]
    Refused(Refusal),
}

impl PollError {
    /// Labels of feed-level failures, of the two per-entry failures (`fetch_failed`, `no_link`), and of the
    /// egress refusals either can meet ([`Refusal::LABELS`]).
    pub const LABELS: &'static [&'static str] = &[
        "feed_unreachable",
        "feed_status",
        "feed_too_large",
        "feed_invalid",
        "fetch_failed",
        "no_link",
        "host_not_allowed",
        "address_not_allowed",
        "redirect_refused",
    ];

    pub fn reason(&self) -> &'static str {
        match self {
            PollError::Unreachable(_) | PollError::UnknownFeed(_) => "feed_unreachable",
            PollError::Status(_) => "feed_status",
            PollError::TooLarge { .. } => "feed_too_large",
            PollError::Invalid(_) => "feed_invalid",
            PollError::Refused(r) => r.reason(),
        }
    }
}

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// The server answered 304: nothing was read.
    pub not_modified: bool,
    /// Entries in the feed.
    pub entries: usize,
    /// CAP documents fetched (new or changed entries).
    pub fetched: usize,
    /// Messages that raised, updated or cancelled an alert.
    pub accepted: usize,
    /// Valid messages that changed nothing (duplicates, expired, …).
    pub ignored: usize,
    /// Messages refused (invalid XML or CAP, unknown geocodes, too large, no link, link not allowed).
    pub rejected: usize,
    /// Of `rejected`, entries whose link (or its redirect) went where this source may not reach.
    pub refused: usize,
    /// Documents that could not be fetched; retried next poll.
    pub fetch_failed: usize,
}

/// The poller's memory of one feed between polls.
pub(crate) struct FeedPoller {
    pub cfg: FeedSource,
    url: reqwest::Url,
    /// This feed's own client: every request only where its egress policy allows (`fetch.rs`).
    client: GuardedClient,
    /// Validators of the last 200, sent back so an unchanged feed costs the server a 304.
    validators: Validators,
    /// Entry id → `updated` of entries already processed.
    done: HashMap<String, String>,
    /// Consecutive failed polls, for backoff.
    pub failures: u32,
}

impl FeedPoller {
    pub fn new(cfg: FeedSource) -> Result<Self, InboundError> {
        let source = format!("[[feed]] `{}`", cfg.name);
        let url = reqwest::Url::parse(&cfg.url).map_err(|e| InboundError::Invalid(format!("{source}: {e}")))?;
        let timeout = Duration::from_secs(cfg.timeout_s);
        let client = GuardedClient::new(&source, &url, &cfg.hosts, &cfg.allow_networks, timeout)?;
        Ok(FeedPoller { cfg, url, client, validators: Validators::default(), done: HashMap::new(), failures: 0 })
    }

    /// The wait before the next poll: the interval when healthy, doubling per consecutive failure up to the cap.
    pub fn next_delay(&self) -> Duration {
        poll_delay(self.cfg.interval_s, self.failures, self.cfg.max_backoff_s)
    }

    /// One poll: the feed, then every new or changed entry.
    pub async fn poll_once(&mut self, shared: &Shared) -> Result<PollReport, PollError> {
        let result = self.poll_feed(shared).await;
        let name = self.cfg.name.as_str();
        match &result {
            Ok(r) => {
                self.failures = 0;
                let label = if r.not_modified { "not_modified" } else { "ok" };
                METRICS.polls.with_label_values(&[name, label]).inc();
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                METRICS.polls.with_label_values(&[name, "error"]).inc();
                METRICS.rejected.with_label_values(&[name, e.reason()]).inc();
                tracing::warn!(source = name, failures = self.failures, error = %e, "inbound feed poll failed");
            }
        }
        METRICS.feed_failures.with_label_values(&[name]).set(i64::from(self.failures));
        result
    }

    async fn poll_feed(&mut self, shared: &Shared) -> Result<PollReport, PollError> {
        let fetched =
            self.client.get(self.url.clone(), self.cfg.max_feed_bytes, &self.validators.headers()).await.map_err(
                |e| match e {
                    FetchError::Unreachable(m) => PollError::Unreachable(m),
                    FetchError::Status(s) => PollError::Status(s),
                    FetchError::TooLarge { .. } => PollError::TooLarge { limit: self.cfg.max_feed_bytes },
                    FetchError::Refused(r) => PollError::Refused(r),
                },
            )?;
        let (bytes, validators) = match fetched {
            Fetched::NotModified => return Ok(PollReport { not_modified: true, ..PollReport::default() }),
            Fetched::Body { bytes, validators } => (bytes, validators),
        };
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            PollError::Invalid(AtomReadError::Xml { position: e.valid_up_to() as u64, message: "not UTF-8".into() })
        })?;
        let entries = read_feed(text.strip_prefix('\u{FEFF}').unwrap_or(text))?;

        let mut report = PollReport { entries: entries.len(), ..PollReport::default() };
        for entry in oldest_first(entries.clone()) {
            if self.done.get(&entry.id) == Some(&entry.updated) {
                continue;
            }
            match self.process_entry(&entry, shared, &mut report).await {
                EntryResult::Done => {
                    self.done.insert(entry.id.clone(), entry.updated.clone());
                }
                EntryResult::Retry => {}
            }
        }
        // Forget entries that left the feed, so the memory is bounded by the feed's size.
        self.done.retain(|id, _| entries.iter().any(|e| e.id == *id));
        // Validators are kept only when the feed was read and every entry processed: after a broken feed or a
        // failed document fetch, the next poll must get the full feed (a 304 would hide the entry to retry).
        self.validators = if report.fetch_failed == 0 { validators } else { Validators::default() };
        Ok(report)
    }

    async fn process_entry(&self, entry: &FeedEntry, shared: &Shared, report: &mut PollReport) -> EntryResult {
        let name = self.cfg.name.as_str();
        let url = entry
            .link
            .as_deref()
            .and_then(|l| self.url.join(l).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"));
        let Some(url) = url else {
            report.rejected += 1;
            METRICS.rejected.with_label_values(&[name, "no_link"]).inc();
            tracing::warn!(source = name, entry = %entry.id, "inbound feed entry has no http(s) link to a CAP document");
            return EntryResult::Done;
        };
        report.fetched += 1;
        let bytes = match self.client.get(url.clone(), self.cfg.max_bytes, &[]).await {
            Ok(Fetched::Body { bytes, .. }) => bytes,
            Ok(Fetched::NotModified) | Err(FetchError::Unreachable(_)) | Err(FetchError::Status(_)) => {
                report.fetch_failed += 1;
                METRICS.rejected.with_label_values(&[name, "fetch_failed"]).inc();
                tracing::warn!(source = name, entry = %entry.id, %url, "inbound CAP document could not be fetched; retrying next poll");
                return EntryResult::Retry;
            }
            Err(FetchError::TooLarge { size }) => {
                let r = Rejection::TooLarge { size, limit: self.cfg.max_bytes };
                shared.count_rejection(name, &r, &entry.id);
                report.rejected += 1;
                return EntryResult::Done;
            }
            // Not retried: the link is as the feed wrote it until the entry's `updated` changes.
            Err(FetchError::Refused(r)) => {
                report.rejected += 1;
                report.refused += 1;
                METRICS.rejected.with_label_values(&[name, r.reason()]).inc();
                tracing::warn!(source = name, entry = %entry.id, %url, reason = r.reason(), error = %r, "inbound CAP link refused");
                return EntryResult::Done;
            }
        };
        match shared.receive(&bytes, shared.feed_meta(&self.cfg), &entry.id) {
            Ok(super::PushOutcome::Ignored { .. }) => report.ignored += 1,
            Ok(_) => report.accepted += 1,
            Err(_) => report.rejected += 1,
        }
        EntryResult::Done
    }
}

enum EntryResult {
    /// Processed (taken, ignored or refused): not fetched again while `updated` is unchanged.
    Done,
    /// Transport failure: try again next poll.
    Retry,
}

/// Feeds list newest first; processing oldest first lets an Alert precede its Update. Entries whose `updated` does
/// not parse keep their (reversed) document position relative to each other.
fn oldest_first(mut entries: Vec<FeedEntry>) -> Vec<FeedEntry> {
    entries.reverse();
    entries.sort_by_key(|e| OffsetDateTime::parse(&e.updated, &Rfc3339).ok().map(|t| t.unix_timestamp()));
    entries
}
