//! `config/dissemination.toml`: CAP sender and texts, the public feed, webhook subscribers and their retry policy,
//! cell broadcast (PWS class policy, schedule) and the carriers' CBCs. Unknown keys are errors naming the key.
//!
//! The shipped file documents every key; the defaults here are the safe ones (Actual-only subscribers, no
//! Presidential class from policy, no broadcast for an alert the policy does not name).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use geo_index::GeoIndex;
use serde::Deserialize;

use crate::channel::{cbc, push, webhook};
use encoders::cap::Templates;

// The channels' sections, where they were before the channels had rooms of their own.
pub use crate::channel::cbc::{CarrierConfig, CellBroadcastConfig, PolicyClass, PolicyRule};
pub use crate::channel::webhook::SubscriberConfig;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisseminationConfig {
    /// CAP `sender`: our id as partners see it (no spaces, commas, `<`, `&`).
    pub sender: String,
    #[serde(default)]
    pub cap: CapSettings,
    #[serde(default)]
    pub feed: FeedSettings,
    #[serde(default)]
    pub journal: JournalSettings,
    /// Retry policy of webhook deliveries.
    #[serde(default)]
    pub webhooks: RetrySettings,
    #[serde(default, rename = "subscriber")]
    pub subscribers: Vec<webhook::SubscriberConfig>,
    #[serde(default)]
    pub cell_broadcast: cbc::CellBroadcastConfig,
    #[serde(default, rename = "carrier")]
    pub carriers: Vec<cbc::CarrierConfig>,
    /// Web Push to citizens' phones (off unless turned on).
    #[serde(default)]
    pub push: push::PushConfig,
}

/// How CAP messages are built from alert views.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapSettings {
    /// Vertex budget per CAP polygon (geo-index simplifies outlines to it while still covering the zone).
    pub max_polygon_vertices: usize,
    /// `expires` = `sent` + this, for Alert and Update messages; 0 = no `expires`.
    pub expires_minutes: u32,
    /// Which template placeholders the alert's `value` fills, per event type (the rule's measured value).
    /// Merged over the built-in table; a placeholder still without a value is filled with `missing_value`.
    pub value_placeholders: BTreeMap<String, Vec<String>>,
    /// Text for a placeholder nobody supplied. A warning with a dash beats no warning at all.
    pub missing_value: String,
}

impl Default for CapSettings {
    fn default() -> Self {
        CapSettings {
            max_polygon_vertices: 100,
            expires_minutes: 360,
            value_placeholders: BTreeMap::new(),
            missing_value: "—".into(),
        }
    }
}

/// The value placeholder of each shipped event type (see `config/cap_templates.toml`).
pub(crate) fn builtin_value_placeholders() -> BTreeMap<String, Vec<String>> {
    [
        ("heavy_rain", "rain_24h_mm"),
        ("debris_flow", "rain_24h_mm"),
        ("river_level", "water_level_m"),
        ("road_flood", "flood_depth_cm"),
        ("air_quality", "aqi"),
        ("sensor_silent", "silent_min"),
    ]
    .into_iter()
    .map(|(e, p)| (e.to_string(), vec![p.to_string()]))
    .collect()
}

/// The Atom feed at `/cap/feed.atom`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedSettings {
    pub title: String,
    pub author: String,
    /// Ended alerts kept in the feed beside the active ones (newest first). A count, not a time window, so the
    /// feed (and its ETag) changes only when an alert does.
    pub recent: usize,
}

impl Default for FeedSettings {
    fn default() -> Self {
        FeedSettings {
            title: "災害應變雲端平台 警報 / Disaster Relief Cloud alerts".into(),
            author: "災害應變雲端平台 Disaster Relief Cloud".into(),
            recent: 50,
        }
    }
}

/// The journal in `data_dir`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalSettings {
    /// fsync each alert change before `alert_changed` returns (off only for throwaway demos on slow disks).
    pub fsync: bool,
    /// Finished deliveries kept in each subscriber's (and carrier's) in-memory delivery log.
    pub delivery_log: usize,
}

impl Default for JournalSettings {
    fn default() -> Self {
        JournalSettings { fsync: true, delivery_log: 500 }
    }
}

/// Retry policy of one kind of target. Every key optional; defaults differ between webhooks and CBCs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// Whole request (connect, send, response) must finish within this.
    pub request_timeout_ms: Option<u64>,
    /// Attempts before a delivery moves to the dead letters.
    pub max_attempts: Option<u32>,
    /// Wait after the first failure; doubles each attempt.
    pub backoff_initial_ms: Option<u64>,
    /// Longest wait between attempts.
    pub backoff_max_ms: Option<u64>,
}

/// [`RetrySettings`] with defaults applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    pub request_timeout: Duration,
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl RetrySettings {
    pub(crate) fn resolve(&self, default: Retry) -> Retry {
        Retry {
            request_timeout: self.request_timeout_ms.map_or(default.request_timeout, Duration::from_millis),
            max_attempts: self.max_attempts.unwrap_or(default.max_attempts),
            backoff_initial: self.backoff_initial_ms.map_or(default.backoff_initial, Duration::from_millis),
            backoff_max: self.backoff_max_ms.map_or(default.backoff_max, Duration::from_millis),
        }
    }

    pub(crate) fn check(&self, table: &str) -> Result<(), FieldError> {
        if self.max_attempts == Some(0) {
            return Err(FieldError::new(format!("{table}.max_attempts"), "at least 1"));
        }
        if self.request_timeout_ms == Some(0) {
            return Err(FieldError::new(format!("{table}.request_timeout_ms"), "at least 1"));
        }
        Ok(())
    }
}

/// The file's settings, checked and with secrets resolved.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub sender: String,
    pub cap: CapSettings,
    pub value_placeholders: BTreeMap<String, Vec<String>>,
    pub feed: FeedSettings,
    pub journal: JournalSettings,
    /// `[webhooks]` and `[[subscriber]]`.
    pub webhook: webhook::Settings,
    /// `[cell_broadcast]` and `[[carrier]]`.
    pub cbc: cbc::Settings,
    /// `[push]`.
    pub push: push::config::Settings,
}

/// A secret given in the file or, by name, in the environment: `<field>` or `<field>_env`, exactly one.
pub(crate) fn secret_from(
    field: &str,
    value: &Option<String>,
    env: &Option<String>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, FieldError> {
    match (value, env) {
        (Some(v), None) => Ok(v.clone()),
        (None, Some(var)) => lookup(var)
            .ok_or_else(|| FieldError::new(format!("{field}_env"), format!("environment variable `{var}` is not set"))),
        (Some(_), Some(_)) => Err(FieldError::new(field, format!("give `{field}` or `{field}_env`, not both"))),
        (None, None) => Err(FieldError::new(field, format!("required (`{field}` or `{field}_env`)"))),
    }
}

impl DisseminationConfig {
    /// Parses the file's text; unknown keys, wrong types and missing required keys name the key.
    pub fn from_toml_str(text: &str) -> Result<DisseminationConfig, FieldError> {
        toml::from_str(text).map_err(|e| {
            let key = e
                .span()
                .map(|s| text.get(s).unwrap_or("").trim().to_string())
                .filter(|k| !k.is_empty() && k.len() < 80)
                .unwrap_or_else(|| "file".into());
            FieldError::new(key, e.message().to_string())
        })
    }

    /// Checks everything against the zones and templates this instance runs with; resolves secrets.
    pub(crate) fn resolve(
        &self,
        geo: &GeoIndex,
        templates: &Templates,
        env: &dyn Fn(&str) -> Option<String>,
        public_url: &str,
    ) -> Result<Resolved, FieldError> {
        if self.sender.is_empty() || self.sender.chars().any(|c| c.is_whitespace() || matches!(c, ',' | '<' | '&')) {
            return Err(FieldError::new("sender", "non-empty, without spaces, commas, `<` or `&` (CAP §3.2.1)"));
        }
        if self.cap.max_polygon_vertices < 4 {
            return Err(FieldError::new("cap.max_polygon_vertices", "at least 4"));
        }
        let mut value_placeholders = builtin_value_placeholders();
        for (event, names) in &self.cap.value_placeholders {
            if templates.event(event).is_err() {
                return Err(FieldError::new(
                    format!("cap.value_placeholders.{event}"),
                    format!("unknown event type `{event}`"),
                ));
            }
            value_placeholders.insert(event.clone(), names.clone());
        }
        let webhook = webhook::Settings::resolve(&self.webhooks, &self.subscribers, geo, templates, env)?;
        let cbc = cbc::Settings::resolve(&self.cell_broadcast, &self.carriers, templates, env)?;
        let push = push::config::Settings::resolve(&self.push, public_url)?;

        Ok(Resolved {
            sender: self.sender.clone(),
            cap: self.cap.clone(),
            value_placeholders,
            feed: self.feed.clone(),
            journal: self.journal.clone(),
            webhook,
            cbc,
            push,
        })
    }
}

/// A bad field in a subscriber (or config) entry: `field` is the path a client sent (`filters.zones[1]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

pub(crate) fn validate_name(name: &str) -> Result<(), FieldError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new("name", "1–64 characters: letters, digits, `-`, `_`, `.`"))
    }
}

/// An absolute http(s) URL with a host and no user info (a password in a URL ends up in logs).
pub(crate) fn validate_url(field: &str, url: &str) -> Result<(), FieldError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| FieldError::new(field, format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(FieldError::new(field, "must be http:// or https://"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(FieldError::new(field, "has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(FieldError::new(field, "must not carry credentials; use the secret"));
    }
    Ok(())
}

/// The first name given twice, for config checks.
pub(crate) fn duplicates<'a>(names: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut seen = BTreeSet::new();
    for n in names {
        if !seen.insert(n) {
            return Some(n.to_string());
        }
    }
    None
}
