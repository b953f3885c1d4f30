//! Polling one vehicle-detector feed: conditional GET (ETag / Last-Modified) through the source's guarded client
//! (`fetch.rs`: allowed hosts, same-origin redirects, no loopback, private or link-local address unless configured),
//! a size bound, exponential backoff after failures, then decode → checks → readings handed on.
//!
//! Validators are kept only after a document was read: after a malformed one the next poll asks for the whole
//! document again, so a fixed feed is taken at once.

use std::collections::HashMap;
use std::time::Duration;

use super::decode::{decode, DecodeError};
use super::readings::{take, DetectorReading, Limits, RecordRefusal};
use super::{VdBatch, METRICS};
use crate::config::VdFeedSource;
use crate::egress::Refusal;
use crate::error::InboundError;
use crate::fetch::{poll_delay, FetchError, Fetched, GuardedClient, Validators};

/// Collection interval assumed when neither the config nor the document says (the national feeds' minute).
const DEFAULT_COLLECT_INTERVAL_S: f64 = 60.0;
/// Records in the future by more than this are refused (`future_time`): clocks disagree by seconds, not minutes.
const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;

/// Why a poll failed as a whole. Counted in `dc_vd_feed_refused_total` under [`VdPollError::reason`] and in
/// `dc_vd_feed_polls_total{result="error"}`; the poller then backs off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VdPollError {
    #[error("feed unreachable: {0}")]
    Unreachable(String),
    #[error("feed answered HTTP {0}")]
    Status(u16),
    #[error("feed is over {limit} bytes")]
    TooLarge { limit: usize },
    #[error("feed document refused: {0}")]
    Invalid(DecodeError),
    #[error("feed not fetched: {0}")]
    Refused(Refusal),
}

impl VdPollError {
    /// Feed-level labels and the egress refusals.
    pub const LABELS: &'static [&'static str] = &[
        "feed_unreachable",
        "feed_status",
        "feed_too_large",
        "feed_invalid",
        "host_not_allowed",
        "address_not_allowed",
        "redirect_refused",
    ];

    pub fn reason(&self) -> &'static str {
        match self {
            VdPollError::Unreachable(_) => "feed_unreachable",
            VdPollError::Status(_) => "feed_status",
            VdPollError::TooLarge { .. } => "feed_too_large",
            VdPollError::Invalid(_) => "feed_invalid",
            VdPollError::Refused(r) => r.reason(),
        }
    }
}

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VdPollReport {
    /// 304: nothing was read.
    pub not_modified: bool,
    /// Detector records in the document.
    pub records: usize,
    /// Readings handed on.
    pub readings: Vec<DetectorReading>,
    /// Refused records by reason.
    pub refused: HashMap<&'static str, usize>,
}

/// One feed's memory between polls.
pub(crate) struct VdPoller {
    pub cfg: VdFeedSource,
    url: reqwest::Url,
    client: GuardedClient,
    validators: Validators,
    /// VDID → event time of the last reading taken: the same or an older DataCollectTime is a duplicate.
    last_taken: HashMap<String, i64>,
    /// Consecutive failed polls, for backoff.
    pub failures: u32,
}

impl VdPoller {
    pub fn new(cfg: VdFeedSource) -> Result<Self, InboundError> {
        let source = format!("[[vd_feed]] `{}`", cfg.name);
        let url = reqwest::Url::parse(&cfg.url).map_err(|e| InboundError::Invalid(format!("{source}: {e}")))?;
        let client =
            GuardedClient::new(&source, &url, &cfg.hosts, &cfg.allow_networks, Duration::from_secs(cfg.timeout_s))?;
        Ok(VdPoller { cfg, url, client, validators: Validators::default(), last_taken: HashMap::new(), failures: 0 })
    }

    /// The wait before the next poll: the interval when healthy, doubling per consecutive failure up to the cap.
    pub fn next_delay(&self) -> Duration {
        poll_delay(self.cfg.interval_s, self.failures, self.cfg.max_backoff_s)
    }

    /// One poll at wall-clock `now_ms` (stale and future records are judged against it); counts everything.
    pub async fn poll_once(&mut self, now_ms: i64) -> Result<VdPollReport, VdPollError> {
        let result = self.poll(now_ms).await;
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
                METRICS.refused.with_label_values(&[name, e.reason()]).inc();
                tracing::warn!(source = name, failures = self.failures, reason = e.reason(), error = %e, "vehicle-detector feed poll failed");
            }
        }
        METRICS.failures.with_label_values(&[name]).set(i64::from(self.failures));
        result
    }

    async fn poll(&mut self, now_ms: i64) -> Result<VdPollReport, VdPollError> {
        let fetched = self.client.get(self.url.clone(), self.cfg.max_bytes, &self.validators.headers()).await.map_err(
            |e| match e {
                FetchError::Unreachable(m) => VdPollError::Unreachable(m),
                FetchError::Status(s) => VdPollError::Status(s),
                FetchError::TooLarge { .. } => VdPollError::TooLarge { limit: self.cfg.max_bytes },
                FetchError::Refused(r) => VdPollError::Refused(r),
            },
        )?;
        let (bytes, validators) = match fetched {
            Fetched::NotModified => return Ok(VdPollReport { not_modified: true, ..VdPollReport::default() }),
            Fetched::Body { bytes, validators } => (bytes, validators),
        };
        let doc = match decode(&bytes) {
            Ok(doc) => doc,
            Err(e) => {
                // Ask for the whole document next time: a fixed feed may keep its ETag.
                self.validators = Validators::default();
                return Err(VdPollError::Invalid(e));
            }
        };
        self.validators = validators;
        let name = self.cfg.name.as_str();
        let interval_s = self
            .cfg
            .collect_interval_s
            .map(|s| s as f64)
            .or(doc.update_interval_s.filter(|s| (1.0..=86_400.0).contains(s)))
            .unwrap_or(DEFAULT_COLLECT_INTERVAL_S);
        let limits = Limits {
            interval_s,
            max_age_ms: (self.cfg.max_age_s as i64).saturating_mul(1000),
            max_future_ms: MAX_FUTURE_MS,
        };
        let records = doc.detectors.len();
        let authority = doc.authority.clone();
        let outcome = take(doc, &self.cfg.detectors, limits, now_ms, &mut self.last_taken);
        let mut report = VdPollReport { records, readings: outcome.readings, ..VdPollReport::default() };
        let mut unknown = 0usize;
        for refusal in &outcome.refused {
            METRICS.refused.with_label_values(&[name, refusal.reason()]).inc();
            *report.refused.entry(refusal.reason()).or_default() += 1;
            // A national feed carries thousands of detectors we do not map: one summary line, not thousands.
            if matches!(refusal, RecordRefusal::UnknownVdid(_)) {
                unknown += 1;
            } else {
                tracing::warn!(source = name, reason = refusal.reason(), error = %refusal, "vehicle-detector record refused");
            }
        }
        METRICS.readings.with_label_values(&[name]).inc_by(report.readings.len() as u64);
        tracing::debug!(
            source = name,
            authority = authority.as_deref().unwrap_or("?"),
            records,
            readings = report.readings.len(),
            unmapped = unknown,
            "vehicle-detector feed polled"
        );
        Ok(report)
    }

    /// The report's readings as a batch for the hot path.
    pub fn batch(&self, readings: Vec<DetectorReading>) -> VdBatch {
        VdBatch { source: self.cfg.name.clone(), readings }
    }
}
