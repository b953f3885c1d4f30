//! `config/dissemination.toml`: CAP sender and texts, the public feed, webhook subscribers and their retry policy,
//! cell broadcast (PWS class policy, schedule) and the carriers' CBCs. Unknown keys are errors naming the key.
//!
//! The shipped file documents every key; the defaults here are the safe ones (Actual-only subscribers, no
//! Presidential class from policy, no broadcast for an alert the policy does not name).

use std::collections::BTreeMap;
use std::time::Duration;

use geo_index::GeoIndex;
use serde::Deserialize;

use super::subscriber::{
    duplicates, validate_name, validate_url, Audience, FieldError, Filters, Format, SubscriberInput,
};
use encoders::cap::{Severity, Templates};
use encoders::cell_broadcast::{GeoScope, Plmn, PwsClass, Schedule};

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
    pub subscribers: Vec<SubscriberConfig>,
    #[serde(default)]
    pub cell_broadcast: CellBroadcastConfig,
    #[serde(default, rename = "carrier")]
    pub carriers: Vec<CarrierConfig>,
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
    fn resolve(&self, default: Retry) -> Retry {
        Retry {
            request_timeout: self.request_timeout_ms.map_or(default.request_timeout, Duration::from_millis),
            max_attempts: self.max_attempts.unwrap_or(default.max_attempts),
            backoff_initial: self.backoff_initial_ms.map_or(default.backoff_initial, Duration::from_millis),
            backoff_max: self.backoff_max_ms.map_or(default.backoff_max, Duration::from_millis),
        }
    }

    fn check(&self, table: &str) -> Result<(), FieldError> {
        if self.max_attempts == Some(0) {
            return Err(FieldError::new(format!("{table}.max_attempts"), "at least 1"));
        }
        if self.request_timeout_ms == Some(0) {
            return Err(FieldError::new(format!("{table}.request_timeout_ms"), "at least 1"));
        }
        Ok(())
    }
}

/// Webhooks: partners' receivers can be slow or down for hours; back off up to 5 minutes, give up after ~8.
const WEBHOOK_RETRY: Retry = Retry {
    request_timeout: Duration::from_secs(5),
    max_attempts: 8,
    backoff_initial: Duration::from_secs(1),
    backoff_max: Duration::from_secs(300),
};

/// CBCs: a warning is worth seconds; retry fast and long (Taiwan's budget is 4–10 s from issue to phones).
const CBC_RETRY: Retry = Retry {
    request_timeout: Duration::from_secs(10),
    max_attempts: 20,
    backoff_initial: Duration::from_millis(500),
    backoff_max: Duration::from_secs(30),
};

/// A subscriber in the file: like the API's [`SubscriberInput`], but the secret may come from the environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriberConfig {
    pub name: String,
    pub url: String,
    /// The HMAC key itself…
    pub secret: Option<String>,
    /// …or the environment variable holding it (keeps keys out of the file).
    pub secret_env: Option<String>,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub audience: Audience,
    #[serde(default)]
    pub filters: Filters,
}

/// Cell broadcast settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CellBroadcastConfig {
    /// Off: no envelopes to CBCs (CAP and webhooks are unaffected).
    pub enabled: bool,
    /// Seconds between repetitions in the cells (SBc-AP Repetition-Period, 1..=4095).
    pub repetition_period_s: u16,
    /// Broadcasts requested; 0 = until stopped.
    pub number_of_broadcasts: u16,
    /// Serial-number geographic scope: `cell_normal` (default), `cell_immediate`, `plmn`, `area`.
    pub geo_scope: String,
    pub retry: RetrySettings,
    /// Which alerts go out in which class; first match wins; none matching: no broadcast. Absent: the defaults
    /// (debris flow red → Emergency, heavy rain → Alert, severity Extreme → Emergency).
    pub policy: Option<Vec<PolicyRule>>,
}

impl Default for CellBroadcastConfig {
    fn default() -> Self {
        CellBroadcastConfig {
            enabled: true,
            repetition_period_s: 60,
            number_of_broadcasts: 0,
            geo_scope: "cell_normal".into(),
            retry: RetrySettings::default(),
            policy: None,
        }
    }
}

/// The class a policy rule gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyClass {
    /// 緊急警報 4371+n / 4384+n (`emergency_level` = n).
    Emergency,
    /// 警訊通知 911 / 919.
    Alert,
    /// Explicitly not broadcast (to exempt something a later rule would catch).
    None,
    /// 國家級警報: refused when the file is loaded. Only the President's office may order it; no sensor rule may.
    Presidential,
}

/// One policy rule; every condition given must hold.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// Event type.
    pub event: Option<String>,
    /// Level name, matched against the alert's English (case-insensitive) or Chinese level name.
    pub level: Option<String>,
    /// Alert severity at least this.
    pub min_severity: Option<Severity>,
    pub class: PolicyClass,
    /// Emergency channel offset 0..=8 (4371..=4379).
    #[serde(default)]
    pub emergency_level: u8,
}

pub(crate) fn default_policy() -> Vec<PolicyRule> {
    vec![
        PolicyRule {
            event: Some("debris_flow".into()),
            level: Some("red".into()),
            min_severity: None,
            class: PolicyClass::Emergency,
            emergency_level: 0,
        },
        PolicyRule {
            event: Some("heavy_rain".into()),
            level: None,
            min_severity: None,
            class: PolicyClass::Alert,
            emergency_level: 0,
        },
        PolicyRule {
            event: None,
            level: None,
            min_severity: Some(Severity::Extreme),
            class: PolicyClass::Emergency,
            emergency_level: 0,
        },
    ]
}

/// One carrier's Cell Broadcast Centre adapter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierConfig {
    /// As operators read it; also the target name `cbc:<name>` in logs and metrics.
    pub name: String,
    /// Mobile country code, 3 digits (466).
    pub mcc: String,
    /// Mobile network code as the carrier writes it (`92`, `97`, `01`); selects its cell sites in geo-index.
    pub mnc: String,
    /// The CBC adapter's HTTP(S) endpoint receiving JSON envelopes.
    pub cbc_url: String,
    /// Bearer token…
    pub token: Option<String>,
    /// …or the environment variable holding it.
    pub token_env: Option<String>,
}

/// A carrier ready to use.
#[derive(Debug, Clone)]
pub(crate) struct Carrier {
    pub name: String,
    pub mnc: u16,
    pub cbc_url: String,
    pub token: String,
}

/// The file's settings, checked and with secrets resolved.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub sender: String,
    pub cap: CapSettings,
    pub value_placeholders: BTreeMap<String, Vec<String>>,
    pub feed: FeedSettings,
    pub journal: JournalSettings,
    pub webhook_retry: Retry,
    pub subscribers: Vec<SubscriberInput>,
    pub cbc_enabled: bool,
    pub cbc_retry: Retry,
    pub schedule: Schedule,
    pub geo_scope: GeoScope,
    pub policy: Vec<PolicyRule>,
    pub carriers: Vec<Carrier>,
}

fn secret_from(
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
        self.webhooks.check("webhooks")?;
        self.cell_broadcast.retry.check("cell_broadcast.retry")?;

        let mut subscribers = Vec::new();
        for (i, s) in self.subscribers.iter().enumerate() {
            let at = |e: FieldError| FieldError::new(format!("subscriber[{i}].{}", e.field), e.message);
            let secret = secret_from("secret", &s.secret, &s.secret_env, env).map_err(at)?;
            let input = SubscriberInput {
                name: s.name.clone(),
                url: s.url.clone(),
                secret,
                format: s.format,
                audience: s.audience,
                filters: s.filters.clone(),
            };
            input.validate(geo, templates).map_err(at)?;
            subscribers.push(input);
        }
        if let Some(d) = duplicates(subscribers.iter().map(|s| s.name.as_str())) {
            return Err(FieldError::new("subscriber.name", format!("`{d}` appears twice")));
        }

        let cb = &self.cell_broadcast;
        if cb.repetition_period_s == 0 && cb.number_of_broadcasts != 1 {
            return Err(FieldError::new(
                "cell_broadcast.repetition_period_s",
                "0 (no repetition) needs number_of_broadcasts = 1",
            ));
        }
        if cb.repetition_period_s > encoders::cell_broadcast::sbcap::MAX_REPETITION_PERIOD {
            return Err(FieldError::new("cell_broadcast.repetition_period_s", "at most 4095"));
        }
        let geo_scope = match cb.geo_scope.as_str() {
            "cell_normal" => GeoScope::CellNormal,
            "cell_immediate" => GeoScope::CellImmediate,
            "plmn" => GeoScope::Plmn,
            "area" => GeoScope::Area,
            other => {
                return Err(FieldError::new(
                    "cell_broadcast.geo_scope",
                    format!("`{other}`: expected cell_normal, cell_immediate, plmn or area"),
                ))
            }
        };
        let policy = cb.policy.clone().unwrap_or_else(default_policy);
        for (i, rule) in policy.iter().enumerate() {
            let at = format!("cell_broadcast.policy[{i}]");
            match rule.class {
                PolicyClass::Presidential => {
                    return Err(FieldError::new(
                        format!("{at}.class"),
                        "presidential alerts are never issued by policy",
                    ))
                }
                PolicyClass::Emergency => {
                    PwsClass::Emergency(rule.emergency_level)
                        .message_id(encoders::cell_broadcast::Language::Chinese)
                        .map_err(|e| FieldError::new(format!("{at}.emergency_level"), e.to_string()))?;
                }
                PolicyClass::Alert | PolicyClass::None => {}
            }
            if let Some(e) = &rule.event {
                if templates.event(e).is_err() {
                    return Err(FieldError::new(format!("{at}.event"), format!("unknown event type `{e}`")));
                }
            }
        }

        let mut carriers = Vec::new();
        for (i, c) in self.carriers.iter().enumerate() {
            let at = |field: &str| format!("carrier[{i}].{field}");
            validate_name(&c.name.replace(' ', "-")).map_err(|e| FieldError::new(at("name"), e.message))?;
            // Checked here so a typo fails at start; the cells' own PLMNs go into the PDUs.
            Plmn::new(&c.mcc, &c.mnc).map_err(|e| FieldError::new(at("mnc"), e.to_string()))?;
            let mnc: u16 = c.mnc.parse().map_err(|_| FieldError::new(at("mnc"), "digits"))?;
            validate_url(&at("cbc_url"), &c.cbc_url)?;
            let token = secret_from("token", &c.token, &c.token_env, env)
                .map_err(|e| FieldError::new(at(&e.field), e.message))?;
            carriers.push(Carrier { name: c.name.clone(), mnc, cbc_url: c.cbc_url.clone(), token });
        }
        if let Some(d) = duplicates(carriers.iter().map(|c| c.name.as_str())) {
            return Err(FieldError::new("carrier.name", format!("`{d}` appears twice")));
        }

        Ok(Resolved {
            sender: self.sender.clone(),
            cap: self.cap.clone(),
            value_placeholders,
            feed: self.feed.clone(),
            journal: self.journal.clone(),
            webhook_retry: self.webhooks.resolve(WEBHOOK_RETRY),
            subscribers,
            cbc_enabled: cb.enabled,
            cbc_retry: cb.retry.resolve(CBC_RETRY),
            schedule: Schedule {
                repetition_period_s: cb.repetition_period_s,
                number_of_broadcasts: cb.number_of_broadcasts,
            },
            geo_scope,
            policy,
            carriers,
        })
    }
}
