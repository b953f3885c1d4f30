//! What an operator writes in the `[store]` and `[influx]` sections of the binary's TOML config.
//!
//! Every struct denies unknown keys (a typo is an error naming the key, not a silent default) and every field has a
//! default except the InfluxDB connection itself, which has no sensible one.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::StoreError;

/// The embedded readings store (`<data_dir>/readings.sqlite`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// How much history is kept. Operators' history views look back days, not months; InfluxDB is the long-term store.
    pub retention_days: u32,
    /// How often the writer deletes readings older than the retention window.
    pub retention_interval_s: u64,
    /// Readings waiting for the writer, at most. Past this, `append` drops (and counts) instead of growing memory:
    /// ingest must never wait for the disk.
    pub queue_readings: usize,
    /// Readings written in one transaction, at most. Bigger transactions amortise the commit; the writer only makes
    /// them this big when it is behind.
    pub max_batch: usize,
    /// Points (or buckets) one history query may return; protects the HTTP edge from a week of 1 Hz data in one answer.
    pub max_points: usize,
    /// SQLite page cache of the writer, in MiB. The working set is the newest page of every series.
    pub cache_mib: u32,
    /// How long the vehicle detectors' speed baseline (10-minute means, `embedded/baseline.rs`) is kept, in weeks:
    /// the traffic rules' `slowed` needs `[traffic] baseline_min_weeks` (3) of them, whatever `retention_days` is.
    pub baseline_weeks: u32,
    /// Vehicle detectors the baseline tracks, at most (the registry's; past it a detector gets none, counted).
    pub baseline_max_detectors: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            retention_days: 7,
            retention_interval_s: 60,
            queue_readings: 1_000_000,
            max_batch: 250_000,
            max_points: 100_000,
            cache_mib: 64,
            baseline_weeks: 8,
            baseline_max_detectors: 20_000,
        }
    }
}

impl StoreConfig {
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if self.retention_days == 0 {
            return Err(StoreError::Config("retention_days must be at least 1".into()));
        }
        if self.retention_interval_s == 0 || self.queue_readings == 0 || self.max_batch == 0 || self.max_points == 0 {
            return Err(StoreError::Config(
                "retention_interval_s, queue_readings, max_batch and max_points must be at least 1".into(),
            ));
        }
        if !(1..=52).contains(&self.baseline_weeks) {
            return Err(StoreError::Config(format!("baseline_weeks {} must be 1-52", self.baseline_weeks)));
        }
        if self.baseline_max_detectors == 0 {
            return Err(StoreError::Config("baseline_max_detectors must be at least 1".into()));
        }
        Ok(())
    }

    pub(crate) fn retention_ms(&self) -> i64 {
        i64::from(self.retention_days) * 24 * 3600 * 1000
    }

    pub(crate) fn baseline_ms(&self) -> i64 {
        i64::from(self.baseline_weeks) * 7 * 24 * 3600 * 1000
    }
}

/// What to give up when the spool is at `spool_max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolFullPolicy {
    /// Delete the oldest spooled segment: during a long outage the newest readings matter most, and the embedded
    /// store still holds the recent window.
    DropOldest,
    /// Refuse new batches and keep the oldest: for sites that back-fill InfluxDB in order and would rather have a
    /// gap at the end.
    DropNewest,
}

/// The InfluxDB v2 sink. Absent from the config means no sink.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL, e.g. `http://127.0.0.1:8086` (the sink appends `/api/v2/write`).
    pub url: String,
    pub org: String,
    pub bucket: String,
    /// API token (`Authorization: Token …`). Empty sends no header (servers that need none, like VictoriaMetrics).
    #[serde(default)]
    pub token: String,
    /// …or the environment variable holding it (`serve` refuses a token written in the file); resolved by the
    /// binary at start ([`InfluxConfig::token`] then holds the value).
    #[serde(default)]
    pub token_env: Option<String>,
    /// Points per write request. Larger batches cost fewer requests; smaller ones lose less to a torn request.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// A partial batch is sent after this long, so a quiet network still reaches InfluxDB within a second or so.
    #[serde(default = "defaults::flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Every request is abandoned after this long (the `influxdb2` crate sets no timeout of its own).
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// First wait before retrying a failed server; doubles per failure up to `retry_max_ms`.
    #[serde(default = "defaults::retry_initial_ms")]
    pub retry_initial_ms: u64,
    #[serde(default = "defaults::retry_max_ms")]
    pub retry_max_ms: u64,
    /// Write requests in flight at once while the server is healthy; two keep the server busy while we format.
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
    /// Readings waiting to be formatted, at most; past it `send` drops and counts (it never blocks ingest).
    #[serde(default = "defaults::queue_readings")]
    pub queue_readings: usize,
    /// Bytes of line protocol the on-disk spool may hold.
    #[serde(default = "defaults::spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// Size at which a spool segment is closed and a new one started; the unit that `drop_oldest` deletes.
    #[serde(default = "defaults::spool_segment_bytes")]
    pub spool_segment_bytes: u64,
    #[serde(default = "defaults::on_spool_full")]
    pub on_spool_full: SpoolFullPolicy,
    /// H3 resolution of the `h3` tag (9 ≈ 0.1 km² cells, the resolution of our zone index).
    #[serde(default = "defaults::h3_resolution")]
    pub h3_resolution: u8,
}

mod defaults {
    use super::SpoolFullPolicy;
    pub fn batch_size() -> usize {
        5_000
    }
    pub fn flush_interval_ms() -> u64 {
        1_000
    }
    pub fn request_timeout_ms() -> u64 {
        10_000
    }
    pub fn retry_initial_ms() -> u64 {
        250
    }
    pub fn retry_max_ms() -> u64 {
        30_000
    }
    pub fn max_in_flight() -> usize {
        2
    }
    pub fn queue_readings() -> usize {
        1_000_000
    }
    pub fn spool_max_bytes() -> u64 {
        1 << 30
    }
    pub fn spool_segment_bytes() -> u64 {
        16 << 20
    }
    pub fn on_spool_full() -> SpoolFullPolicy {
        SpoolFullPolicy::DropOldest
    }
    pub fn h3_resolution() -> u8 {
        9
    }
}

impl InfluxConfig {
    /// A config with every default, for the given server.
    pub fn new(
        url: impl Into<String>,
        org: impl Into<String>,
        bucket: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        InfluxConfig {
            url: url.into(),
            org: org.into(),
            bucket: bucket.into(),
            token: token.into(),
            token_env: None,
            batch_size: defaults::batch_size(),
            flush_interval_ms: defaults::flush_interval_ms(),
            request_timeout_ms: defaults::request_timeout_ms(),
            retry_initial_ms: defaults::retry_initial_ms(),
            retry_max_ms: defaults::retry_max_ms(),
            max_in_flight: defaults::max_in_flight(),
            queue_readings: defaults::queue_readings(),
            spool_max_bytes: defaults::spool_max_bytes(),
            spool_segment_bytes: defaults::spool_segment_bytes(),
            on_spool_full: defaults::on_spool_full(),
            h3_resolution: defaults::h3_resolution(),
        }
    }

    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(StoreError::Config(format!("influx url `{}` must start with http:// or https://", self.url)));
        }
        if self.org.is_empty() || self.bucket.is_empty() {
            return Err(StoreError::Config("influx org and bucket must not be empty".into()));
        }
        let positive = [
            ("batch_size", self.batch_size as u64),
            ("flush_interval_ms", self.flush_interval_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("retry_initial_ms", self.retry_initial_ms),
            ("max_in_flight", self.max_in_flight as u64),
            ("queue_readings", self.queue_readings as u64),
            ("spool_segment_bytes", self.spool_segment_bytes),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(StoreError::Config(format!("influx {name} must be at least 1")));
        }
        if self.retry_max_ms < self.retry_initial_ms {
            return Err(StoreError::Config("influx retry_max_ms must be at least retry_initial_ms".into()));
        }
        if self.spool_max_bytes < self.spool_segment_bytes {
            return Err(StoreError::Config("influx spool_max_bytes must be at least spool_segment_bytes".into()));
        }
        if self.h3_resolution > 15 {
            return Err(StoreError::Config("influx h3_resolution must be 0..=15".into()));
        }
        Ok(())
    }

    pub(crate) fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }
    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

// By hand, so that the token never reaches a log line.
impl fmt::Debug for InfluxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InfluxConfig")
            .field("url", &self.url)
            .field("org", &self.org)
            .field("bucket", &self.bucket)
            .field("token", &if self.token.is_empty() { "" } else { "<redacted>" })
            .field("token_env", &self.token_env)
            .field("batch_size", &self.batch_size)
            .field("flush_interval_ms", &self.flush_interval_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("retry_initial_ms", &self.retry_initial_ms)
            .field("retry_max_ms", &self.retry_max_ms)
            .field("max_in_flight", &self.max_in_flight)
            .field("queue_readings", &self.queue_readings)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .field("spool_segment_bytes", &self.spool_segment_bytes)
            .field("on_spool_full", &self.on_spool_full)
            .field("h3_resolution", &self.h3_resolution)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_defaults_and_unknown_keys() {
        let c: StoreConfig = toml_like("").unwrap();
        assert_eq!(c, StoreConfig::default());
        assert_eq!(c.retention_ms(), 7 * 24 * 3600 * 1000);
        let e = serde_json::from_str::<StoreConfig>(r#"{"retention_dayz": 3}"#).unwrap_err().to_string();
        assert!(e.contains("retention_dayz"), "{e}");
        // The speed baseline outlives raw retention by default: `slowed` needs 3 weeks.
        assert!(c.baseline_ms() >= 3 * 7 * 24 * 3600 * 1000 && c.baseline_ms() > c.retention_ms());
        let bad: StoreConfig = serde_json::from_str(r#"{"baseline_weeks": 0}"#).unwrap();
        assert!(bad.check().unwrap_err().to_string().contains("baseline_weeks"));
    }

    #[test]
    fn influx_needs_its_server_and_checks_values() {
        assert!(serde_json::from_str::<InfluxConfig>(r#"{"url":"http://x"}"#).is_err());
        let c: InfluxConfig =
            serde_json::from_str(r#"{"url":"http://x:8086","org":"o","bucket":"b","on_spool_full":"drop_newest"}"#)
                .unwrap();
        assert_eq!(c.on_spool_full, SpoolFullPolicy::DropNewest);
        assert_eq!(c.batch_size, 5_000);
        c.check().unwrap();
        let mut bad = c.clone();
        bad.url = "x:8086".into();
        assert!(bad.check().is_err());
        let mut bad = c.clone();
        bad.batch_size = 0;
        assert!(bad.check().unwrap_err().to_string().contains("batch_size"));
    }

    #[test]
    fn debug_hides_the_token() {
        let c = InfluxConfig::new("http://x", "o", "b", "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    fn toml_like(text: &str) -> Result<StoreConfig, serde_json::Error> {
        // The binary parses TOML; JSON exercises the same serde attributes without a toml dependency here.
        serde_json::from_str(if text.is_empty() { "{}" } else { text })
    }
}
