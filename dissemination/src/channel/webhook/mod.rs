//! The webhook channel: agencies' and media's HTTPS receivers. Each subscriber gets the CAP messages its filters
//! select (CAP XML or JSON), in order, signed with `X-DC-Signature` (HMAC-SHA256 of its secret over time and body).
//!
//! | file | what lives there |
//! |---|---|
//! | `mod.rs` | the target (`Webhook`), its request (body, content type, signature), its config section |
//! | [`subscriber`] | subscribers: input, validation naming the field, filters, status |
//! | [`signature`] | `X-DC-Signature: t=…,v1=…,v2=<HMAC-SHA256>` (v2 also over `X-DC-Delivery` and `X-DC-Attempt`) |

pub mod signature;
pub mod subscriber;

use std::time::Duration;

use geo_index::GeoIndex;
use serde::Deserialize;

use self::subscriber::{wants, Audience, Filters, Format, Source, SubscriberInput, SubscriberStatus};
use super::{Payload, Request, Signer};
use crate::config::{duplicates, secret_from, FieldError, Retry, RetrySettings};
use crate::messages::StoredMessage;
use crate::outbox::Target;
use crate::view::AlertView;
use encoders::cap::Templates;

/// A webhook target: the subscriber and where it was defined.
#[derive(Debug, Clone)]
pub(crate) struct Webhook {
    pub sub: SubscriberInput,
    pub source: Source,
}

impl Webhook {
    pub fn configured(sub: &SubscriberInput) -> Webhook {
        Webhook { sub: sub.clone(), source: Source::Config }
    }

    /// Added over the operator API (and read back from the journal).
    pub fn runtime(sub: &SubscriberInput) -> Webhook {
        Webhook { sub: sub.clone(), source: Source::Runtime }
    }

    /// Whether the subscriber takes this change (its filters and audience; see [`subscriber::wants`]).
    pub fn wants(&self, view: &AlertView, released: bool, reached: bool) -> bool {
        wants(&self.sub, view, released, reached)
    }

    /// The body in the subscriber's format, signed at `now_ms`.
    pub fn request(&self, payload: &Payload<'_>, base_url: &str, now_ms: i64) -> Request {
        let body = match (payload.message, self.sub.format) {
            (Some(m), Format::Cap) => Ok(m.xml.clone().into_bytes()),
            (Some(m), Format::Json) => Ok(json_body(m, base_url).into_bytes()),
            (None, _) => Err(format!("CAP message {} is not in the journal", payload.identifier)),
        };
        let content_type = match self.sub.format {
            Format::Cap => "application/cap+xml",
            Format::Json => "application/json",
        };
        let signer = body.is_ok().then(|| Signer { secret: self.sub.secret.clone(), unix_s: now_ms / 1000 });
        Request { url: self.sub.url.clone(), body, content_type, auth: Vec::new(), signer }
    }

    /// What operators see of it (never the secret).
    pub fn status(&self, name: &str, t: &Target) -> SubscriberStatus {
        SubscriberStatus {
            name: name.to_string(),
            url: self.sub.url.clone(),
            format: self.sub.format,
            audience: self.sub.audience,
            filters: self.sub.filters.clone(),
            source: self.source,
            queued: t.queue.len(),
            delivered: t.stats.delivered,
            dead_letters: t.dead.len(),
            last_success_ms: t.stats.last_success_ms,
            last_error: t.stats.last_error.clone(),
        }
    }
}

/// The JSON webhook body: the alert view and where its CAP message is.
pub(crate) fn json_body(m: &StoredMessage, base_url: &str) -> String {
    // The view was stored when the message was made; a held message sent on release is released now.
    let mut view = m.view.clone();
    view.public_release = m.released;
    serde_json::json!({
        "type": "alert",
        "alert": view,
        "cap": {
            "identifier": m.identifier,
            "url": encoders::cap::cap_url(base_url, &m.identifier),
            "msg_type": m.msg_type,
            "status": m.status,
            "sent_ms": m.sent_ms,
        },
        "headline": {"zh-TW": m.texts.headline_zh, "en": m.texts.headline_en},
    })
    .to_string()
}

/// Webhooks: partners' receivers can be slow or down for hours; back off up to 5 minutes, give up after ~8.
const WEBHOOK_RETRY: Retry = Retry {
    request_timeout: Duration::from_secs(5),
    max_attempts: 8,
    backoff_initial: Duration::from_secs(1),
    backoff_max: Duration::from_secs(300),
};

/// A `[[subscriber]]` in the file: like the API's [`SubscriberInput`], but the secret may come from the
/// environment.
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

/// The channel's settings, checked and with secrets resolved.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `[webhooks]` with defaults applied.
    pub retry: Retry,
    pub subscribers: Vec<SubscriberInput>,
}

impl Settings {
    /// Checks `[webhooks]` and every `[[subscriber]]` against the zones and templates this instance runs with.
    pub fn resolve(
        retry: &RetrySettings,
        subscribers: &[SubscriberConfig],
        geo: &GeoIndex,
        templates: &Templates,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, FieldError> {
        retry.check("webhooks")?;
        let mut resolved = Vec::new();
        for (i, s) in subscribers.iter().enumerate() {
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
            resolved.push(input);
        }
        if let Some(d) = duplicates(resolved.iter().map(|s| s.name.as_str())) {
            return Err(FieldError::new("subscriber.name", format!("`{d}` appears twice")));
        }
        Ok(Settings { retry: retry.resolve(WEBHOOK_RETRY), subscribers: resolved })
    }
}
