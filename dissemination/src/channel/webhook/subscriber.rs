//! Webhook subscribers (agencies, media): who they are, what they asked for, and the checks that keep a bad entry
//! out (each failure names the field, so the operator API can answer 4xx with it).

use geo_index::GeoIndex;
use serde::{Deserialize, Serialize};

use crate::config::{validate_name, validate_url, FieldError};
use crate::view::{AlertView, ViewMode};
use encoders::cap::{Severity, Templates};

/// Body format of a webhook delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The CAP 1.2 XML document, as served at `/cap/{identifier}.xml` (`application/cap+xml`).
    #[default]
    Cap,
    /// `{"type":"alert","alert":AlertView,"cap":{…link…}}` (`application/json`).
    Json,
}

/// Whether a subscriber waits for the approval gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Media, aggregators, anything that republishes: receives a message only once it is released.
    #[default]
    Public,
    /// Agencies in the approval loop: receive held messages too (still only in the modes they asked for).
    Internal,
}

fn default_modes() -> Vec<ViewMode> {
    vec![ViewMode::Actual]
}

/// What a subscriber wants. Empty lists mean "all".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    /// geo-index zone ids.
    #[serde(default)]
    pub zones: Vec<String>,
    /// Event types (`heavy_rain`, …).
    #[serde(default)]
    pub events: Vec<String>,
    /// Lowest CAP severity delivered (`Extreme` > `Severe` > `Moderate` > `Minor` > `Unknown`).
    #[serde(default)]
    // CAP's spelling, which alerting's `Severity` shares (and has the schema of).
    #[schema(value_type = Option<alerting::types::Severity>)]
    pub min_severity: Option<Severity>,
    /// Modes delivered. Default `["Actual"]`: a drill or test never reaches a subscriber who did not ask for it.
    #[serde(default = "default_modes")]
    pub modes: Vec<ViewMode>,
}

impl Default for Filters {
    fn default() -> Self {
        Filters { zones: Vec::new(), events: Vec::new(), min_severity: None, modes: default_modes() }
    }
}

/// A subscriber as the operator API (JSON) or the config file gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriberInput {
    /// Unique; letters, digits, `-`, `_`, `.`; at most 64.
    pub name: String,
    /// Where deliveries are POSTed: `http://` or `https://`, no credentials in the URL.
    pub url: String,
    /// HMAC-SHA256 key for `X-DC-Signature`; at least 16 bytes.
    #[schema(min_length = 16)]
    pub secret: String,
    #[serde(default)]
    pub format: Format,
    #[serde(default)]
    pub audience: Audience,
    #[serde(default)]
    pub filters: Filters,
}

/// Shortest secret accepted: shorter HMAC keys are guessable.
pub const MIN_SECRET_BYTES: usize = 16;

impl SubscriberInput {
    /// Reads a JSON body from the operator API; a wrong or unknown key is a [`FieldError`] naming it.
    pub fn from_json(body: &str) -> Result<SubscriberInput, FieldError> {
        serde_json::from_str(body).map_err(|e| {
            let text = e.to_string();
            // serde names unknown and missing fields in backquotes; use that as the field when present.
            let field = text.split('`').nth(1).filter(|f| !f.is_empty()).unwrap_or("body").to_string();
            FieldError::new(field, text)
        })
    }

    /// Checks every field; zones and events are checked against what this instance knows.
    pub fn validate(&self, geo: &GeoIndex, templates: &Templates) -> Result<(), FieldError> {
        validate_name(&self.name)?;
        validate_url("url", &self.url)?;
        if self.secret.trim().is_empty() {
            return Err(FieldError::new("secret", "required"));
        }
        if self.secret.len() < MIN_SECRET_BYTES {
            return Err(FieldError::new("secret", format!("at least {MIN_SECRET_BYTES} bytes")));
        }
        for (i, z) in self.filters.zones.iter().enumerate() {
            if geo.zone(z).is_none() {
                return Err(FieldError::new(format!("filters.zones[{i}]"), format!("unknown zone `{z}`")));
            }
        }
        for (i, e) in self.filters.events.iter().enumerate() {
            if templates.event(e).is_err() {
                return Err(FieldError::new(format!("filters.events[{i}]"), format!("unknown event type `{e}`")));
            }
        }
        if self.filters.modes.is_empty() {
            return Err(FieldError::new("filters.modes", "at least one of Actual, Exercise, Test"));
        }
        Ok(())
    }
}

/// Whether `sub` takes this change. `reached`: it already took an earlier message of the same alert, and then it
/// also takes the rest (an Update or Cancel must follow its Alert even if the severity dropped below the filter).
/// The mode filter and the approval gate hold whatever came before.
pub(crate) fn wants(sub: &SubscriberInput, view: &AlertView, released: bool, reached: bool) -> bool {
    if !sub.filters.modes.contains(&view.mode) {
        return false;
    }
    if !released && sub.audience == Audience::Public {
        return false;
    }
    if reached {
        return true;
    }
    let f = &sub.filters;
    (f.zones.is_empty() || f.zones.contains(&view.area_id))
        && (f.events.is_empty() || f.events.contains(&view.event))
        // CAP enumerations order most severe first, so "at least" is "not after" (Unknown passes only Unknown).
        && f.min_severity.is_none_or(|min| view.severity <= min)
}

/// Where a subscriber was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Config,
    /// Added over the operator API; kept in the journal.
    Runtime,
}

/// What operators see of a subscriber (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SubscriberStatus {
    pub name: String,
    pub url: String,
    pub format: Format,
    pub audience: Audience,
    pub filters: Filters,
    pub source: Source,
    /// Deliveries waiting (the first may be mid-retry).
    pub queued: usize,
    pub delivered: u64,
    pub dead_letters: usize,
    /// Unix ms of the last successful delivery.
    pub last_success_ms: Option<i64>,
    /// The last failure's text, cleared by a success.
    pub last_error: Option<String>,
}
