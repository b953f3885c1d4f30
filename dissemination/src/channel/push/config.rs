//! `[push]` in `config/dissemination.toml`: whether citizens may subscribe to Web Push, who we are to the push
//! services (the VAPID `sub` contact), how long a push may wait at the push service, the bounds on subscriptions, and
//! which push services we will POST to.
//!
//! Safe by default: off unless the file turns it on; when on, endpoints must be `https://` on a host of the known
//! browser push services (a subscription's endpoint is a URL a stranger hands us, and we POST to it: without the
//! allow-list the push channel is a way to make us send requests anywhere); `http://` only to a loopback address and
//! only with `allow_http_loopback` (tests and the demo's stand-in push service).

use std::time::Duration;

use serde::Deserialize;

use crate::config::{FieldError, Retry, RetrySettings};

/// The browser push services' hosts (a host matches itself and its subdomains): Chrome/Edge-on-Android (FCM),
/// Firefox (Mozilla autopush), Edge on Windows (WNS), Safari/iOS 16.4+ (Apple).
pub const KNOWN_PUSH_SERVICES: &[&str] =
    &["fcm.googleapis.com", "push.services.mozilla.com", "notify.windows.com", "push.apple.com"];

/// The section as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Citizens may subscribe (`/api/v1/push/*`) and alerts are pushed to them.
    pub enabled: bool,
    /// The VAPID `sub` claim (RFC 8292 §2.1): `mailto:` or `https:` contact a push service operator can reach when
    /// our pushes cause trouble. Empty: our public URL, when it is `https://` (else starting is refused).
    pub contact: String,
    /// `TTL` of a push (RFC 8030 §5.2): how long a push service keeps it for a phone that is off. A warning older than
    /// this is stale; a newer version of the same alert replaces it anyway (`Topic`).
    pub ttl_s: u32,
    /// Subscriptions kept in all; past it new ones are refused (`total_limit`), existing ones keep working.
    pub max_subscriptions: usize,
    /// Subscriptions per client (the app's `client_id`, else its address): a phone with a few browsers.
    pub max_per_client: usize,
    /// Subscriptions per address (IPv4, or IPv6 /64): generous, because a carrier's NAT puts many phones behind one.
    pub max_per_address: usize,
    /// Hosts (with their subdomains) endpoints may point at. Empty means the built-in [`KNOWN_PUSH_SERVICES`].
    pub endpoint_hosts: Vec<String>,
    /// Accept `http://` endpoints on loopback addresses (the tests' and demo's stand-in push service). Never in
    /// production: `serve` outside a drill refuses it (`deployment.rs`).
    pub allow_http_loopback: bool,
    /// Pushes in flight at once (one county warning to 100,000 phones is limited by this and the encryption).
    pub concurrency: usize,
    /// Retries of one push (429, 5xx, network errors); `Retry-After` wins over the backoff when longer.
    pub retry: RetrySettings,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            enabled: false,
            contact: String::new(),
            ttl_s: 6 * 3600,
            max_subscriptions: 1_000_000,
            max_per_client: 5,
            max_per_address: 1000,
            endpoint_hosts: Vec::new(),
            allow_http_loopback: false,
            concurrency: 256,
            retry: RetrySettings::default(),
        }
    }
}

/// The default retry policy of pushes: a push service that is busy says so with 429 and `Retry-After`.
const DEFAULT_RETRY: Retry = Retry {
    request_timeout: Duration::from_secs(10),
    max_attempts: 6,
    backoff_initial: Duration::from_secs(1),
    backoff_max: Duration::from_secs(60),
};

/// [`PushConfig`] checked, defaults applied.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub enabled: bool,
    pub contact: String,
    pub ttl_s: u32,
    pub max_subscriptions: usize,
    pub max_per_client: usize,
    pub max_per_address: usize,
    pub endpoint_hosts: Vec<String>,
    pub allow_http_loopback: bool,
    pub concurrency: usize,
    pub retry: Retry,
}

impl Settings {
    /// Checks the section; `public_url` stands in for an empty `contact`.
    pub fn resolve(c: &PushConfig, public_url: &str) -> Result<Settings, FieldError> {
        c.retry.check("push.retry")?;
        let contact = if c.contact.is_empty() { public_url.to_string() } else { c.contact.clone() };
        if c.enabled {
            let contact_ok = contact.strip_prefix("mailto:").is_some_and(|r| r.contains('@') && !r.contains(' '))
                || contact.strip_prefix("https://").is_some_and(|r| !r.is_empty() && !r.contains(' '));
            if !contact_ok {
                return Err(FieldError::new(
                    "push.contact",
                    format!(
                        "`{contact}`: a `mailto:` address or an `https:` URL where push services can reach us (RFC 8292 \
                         `sub`; empty means http.public_url, which is not https here)"
                    ),
                ));
            }
        }
        // RFC 8030 gives no upper bound; VAPID tokens live at most 24 h and a warning that old is history.
        if c.ttl_s == 0 || c.ttl_s > 24 * 3600 {
            return Err(FieldError::new("push.ttl_s", "1 to 86400 seconds"));
        }
        if c.max_subscriptions == 0 {
            return Err(FieldError::new("push.max_subscriptions", "at least 1"));
        }
        if c.max_per_client == 0 {
            return Err(FieldError::new("push.max_per_client", "at least 1"));
        }
        if c.max_per_address == 0 {
            return Err(FieldError::new("push.max_per_address", "at least 1"));
        }
        if c.concurrency == 0 || c.concurrency > 10_000 {
            return Err(FieldError::new("push.concurrency", "1 to 10000"));
        }
        for (i, h) in c.endpoint_hosts.iter().enumerate() {
            if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')) {
                return Err(FieldError::new(
                    format!("push.endpoint_hosts[{i}]"),
                    "a host name (letters, digits, `.`, `-`)",
                ));
            }
        }
        let endpoint_hosts = if c.endpoint_hosts.is_empty() {
            KNOWN_PUSH_SERVICES.iter().map(|s| s.to_string()).collect()
        } else {
            c.endpoint_hosts.iter().map(|h| h.to_ascii_lowercase()).collect()
        };
        Ok(Settings {
            enabled: c.enabled,
            contact,
            ttl_s: c.ttl_s,
            max_subscriptions: c.max_subscriptions,
            max_per_client: c.max_per_client,
            max_per_address: c.max_per_address,
            endpoint_hosts,
            allow_http_loopback: c.allow_http_loopback,
            concurrency: c.concurrency,
            retry: c.retry.resolve(DEFAULT_RETRY),
        })
    }
}
