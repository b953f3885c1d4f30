//! A citizen's push subscription: what the app sends (`PushSubscription.toJSON()` plus places and language), how
//! it is checked, and what we keep.
//!
//! Every refusal has a reason (the label of `dc_push_refused_total`) and a message naming the field, so the app (or
//! whoever sends garbage) learns what was wrong and nothing else is lost.

use std::collections::BTreeSet;
use std::net::IpAddr;

use base64::Engine as _;
use geo_index::GeoIndex;
use serde::{Deserialize, Serialize};

use super::config::{PushConfig, Settings};
use super::vapid::B64;

/// Most places one subscription may watch (home, work, family), as on the citizens' socket.
pub const MAX_PLACES: usize = 10;
/// Longest endpoint accepted (push services' are well under 1 KiB).
pub const MAX_ENDPOINT_BYTES: usize = 2048;
/// Largest subscribe body: an endpoint (≤ 2 KiB), two keys, ten places, a language.
pub const MAX_BODY_BYTES: usize = 4 * 1024;

/// The language a citizen reads (the two the CAP messages carry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum PushLang {
    #[serde(rename = "zh-TW")]
    ZhTw,
    #[serde(rename = "en")]
    En,
}

impl PushLang {
    pub fn tag(self) -> &'static str {
        match self {
            PushLang::ZhTw => "zh-TW",
            PushLang::En => "en",
        }
    }
}

/// A place the citizen cares about.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Place {
    LatLon { lat: f64, lon: f64 },
    Cell { h3: String },
}

/// `keys` of `PushSubscription.toJSON()`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    pub p256dh: String,
    pub auth: String,
}

/// The body of `POST /api/v1/push/subscriptions`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeInput {
    pub endpoint: String,
    /// `PushSubscription.toJSON()` carries it (`null` for browsers that do not expire subscriptions); unused.
    #[serde(default, rename = "expirationTime")]
    pub expiration_time: Option<serde_json::Value>,
    pub keys: Keys,
    pub places: Vec<Place>,
    pub lang: PushLang,
    /// The app's own random id (as in citizen reports), for the per-client bound.
    #[serde(default)]
    pub client_id: Option<String>,
}

/// What we keep of a subscription. `id` is derived from the endpoint, so subscribing again (new places, a new
/// language, keys after a rotation) replaces the old entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub endpoint: String,
    /// The browser's P-256 public key, base64url (65 bytes uncompressed).
    pub p256dh: String,
    /// The 16-byte authentication secret, base64url.
    pub auth: String,
    /// The zones the places fall in, resolved once when subscribing.
    pub zones: BTreeSet<String>,
    pub lang: PushLang,
    /// Hash of the client id (or of the address when there is none): counts per client, never the raw value.
    pub client: String,
    /// Hash of the address (IPv4, or IPv6 /64).
    pub address: String,
    /// The VAPID key (`VapidKey::id`) the browser subscribed with: pushes are signed with that one.
    pub key: String,
    pub created_ms: i64,
}

/// Why a subscribe request was refused. `reason()` is the metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("push is not enabled on this server")]
    Disabled,
    #[error("{0}")]
    Malformed(String),
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("endpoint: {0}")]
    Endpoint(String),
    #[error("keys.p256dh: {0}")]
    Key(String),
    #[error("keys.auth: {0}")]
    Auth(String),
    #[error("{0}")]
    Place(String),
    #[error("client_id: 1 to 128 visible ASCII characters")]
    ClientId,
    #[error("this client has {0} subscriptions already; remove one first")]
    ClientLimit(usize),
    #[error("this address has {0} subscriptions already")]
    AddressLimit(usize),
    #[error("the server holds its maximum of {0} subscriptions")]
    TotalLimit(usize),
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Disabled => "disabled",
            Refusal::Malformed(_) => "malformed",
            Refusal::TooLarge(_) => "too_large",
            Refusal::Endpoint(_) => "bad_endpoint",
            Refusal::Key(_) => "bad_key",
            Refusal::Auth(_) => "bad_auth",
            Refusal::Place(_) => "bad_place",
            Refusal::ClientId => "bad_client_id",
            Refusal::ClientLimit(_) => "client_limit",
            Refusal::AddressLimit(_) => "address_limit",
            Refusal::TotalLimit(_) => "total_limit",
        }
    }

    /// Every reason, for the metric's labels up front.
    pub const REASONS: [&'static str; 11] = [
        "disabled",
        "malformed",
        "too_large",
        "bad_endpoint",
        "bad_key",
        "bad_auth",
        "bad_place",
        "bad_client_id",
        "client_limit",
        "address_limit",
        "total_limit",
    ];

    /// Refusals that are the server's state rather than the request's fault (HTTP 429/503, not 400).
    pub fn is_limit(&self) -> bool {
        matches!(self, Refusal::ClientLimit(_) | Refusal::AddressLimit(_) | Refusal::TotalLimit(_))
    }
}

/// The id of a subscription: a hash of its endpoint (also what `DELETE` names).
pub fn subscription_id(endpoint: &str) -> String {
    crate::hex(&ring::digest::digest(&ring::digest::SHA256, endpoint.as_bytes()).as_ref()[..12])
}

fn short_hash(text: &str) -> String {
    crate::hex(&ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref()[..8])
}

/// Checks the endpoint: an absolute `https://` URL on an allowed push service (or `http://` to loopback when the
/// config allows it), no credentials, no fragment, bounded length.
pub(crate) fn check_endpoint(endpoint: &str, cfg: &Settings) -> Result<reqwest::Url, Refusal> {
    let bad = |m: &str| Refusal::Endpoint(m.to_string());
    if endpoint.len() > MAX_ENDPOINT_BYTES {
        return Err(bad(&format!("longer than {MAX_ENDPOINT_BYTES} bytes")));
    }
    let url = reqwest::Url::parse(endpoint).map_err(|e| Refusal::Endpoint(format!("not a URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials"));
    }
    if url.fragment().is_some() {
        return Err(bad("must not have a fragment"));
    }
    let host = url.host().ok_or_else(|| bad("has no host"))?;
    let loopback = match &host {
        url::Host::Ipv4(a) => a.is_loopback(),
        url::Host::Ipv6(a) => a.is_loopback(),
        url::Host::Domain(d) => *d == "localhost",
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback && cfg.allow_http_loopback => return Ok(url),
        "http" if loopback => {
            return Err(bad("http:// is allowed only to loopback in tests (push.allow_http_loopback)"))
        }
        "http" => return Err(bad("must be https://")),
        _ => return Err(bad("must be https://")),
    }
    if loopback && cfg.allow_http_loopback {
        return Ok(url);
    }
    let url::Host::Domain(name) = host else {
        return Err(bad("must name a push service's host, not an address"));
    };
    let name = name.to_ascii_lowercase();
    let allowed = cfg.endpoint_hosts.iter().any(|h| name == *h || name.ends_with(&format!(".{h}")));
    if !allowed {
        return Err(Refusal::Endpoint(format!(
            "`{name}` is not a known push service (push.endpoint_hosts: {})",
            cfg.endpoint_hosts.join(", ")
        )));
    }
    Ok(url)
}

/// Checks everything but the bounds, resolves the places to zones; `key` is the VAPID key the browser subscribed
/// with (the current one: that is the one we serve).
pub(crate) fn validate(
    input: &SubscribeInput,
    cfg: &Settings,
    geo: &GeoIndex,
    peer: Option<IpAddr>,
    key: &str,
    now_ms: i64,
) -> Result<Subscription, Refusal> {
    check_endpoint(&input.endpoint, cfg)?;
    let point =
        B64.decode(input.keys.p256dh.trim_end_matches('=')).map_err(|_| Refusal::Key("not base64url".into()))?;
    if point.len() != 65 || point[0] != 4 {
        return Err(Refusal::Key(format!(
            "an uncompressed P-256 point is 65 bytes starting 0x04, not {} bytes",
            point.len()
        )));
    }
    web_push_native::p256::PublicKey::from_sec1_bytes(&point)
        .map_err(|_| Refusal::Key("not a point on the P-256 curve".into()))?;
    let auth = B64.decode(input.keys.auth.trim_end_matches('=')).map_err(|_| Refusal::Auth("not base64url".into()))?;
    if auth.len() != 16 {
        return Err(Refusal::Auth(format!("the authentication secret is 16 bytes, not {}", auth.len())));
    }
    if input.places.is_empty() || input.places.len() > MAX_PLACES {
        return Err(Refusal::Place(format!("places: give 1 to {MAX_PLACES} places, not {}", input.places.len())));
    }
    let mut zones = BTreeSet::new();
    for (i, place) in input.places.iter().enumerate() {
        let (lat, lon) = match place {
            Place::LatLon { lat, lon } => (*lat, *lon),
            Place::Cell { h3 } => {
                let cell: geo_index::CellIndex = h3.parse().map_err(|_| {
                    Refusal::Place(format!(
                        "places[{i}]: `{}` is not an H3 cell",
                        h3.chars().take(32).collect::<String>()
                    ))
                })?;
                let centre = geo_index::LatLng::from(cell);
                (centre.lat(), centre.lng())
            }
        };
        if !(lat.is_finite() && lon.is_finite() && (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)) {
            return Err(Refusal::Place(format!("places[{i}]: lat {lat} lon {lon} out of range")));
        }
        zones.extend(geo.zones_containing(lat, lon).into_iter().map(|z| z.id.clone()));
    }
    if let Some(c) = &input.client_id {
        if c.is_empty() || c.len() > 128 || !c.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Refusal::ClientId);
        }
    }
    let address = peer.map_or_else(|| "unknown".to_string(), ingest::front_door::throttle::address_key);
    let client = match &input.client_id {
        Some(c) => short_hash(&format!("client:{c}")),
        None => short_hash(&format!("address:{address}")),
    };
    Ok(Subscription {
        id: subscription_id(&input.endpoint),
        endpoint: input.endpoint.clone(),
        p256dh: B64.encode(&point),
        auth: B64.encode(&auth),
        zones,
        lang: input.lang,
        client,
        address: short_hash(&address),
        key: key.to_string(),
        created_ms: now_ms,
    })
}

/// A subscribe body as the HTTP edge receives it, checked as `POST /api/v1/push/subscriptions` checks it (size, JSON
/// shape, every field) except the bounds that depend on what is stored: the fuzz target's entry (`fuzz/`).
pub fn check_body(body: &[u8], cfg: &PushConfig, geo: &GeoIndex, now_ms: i64) -> Result<Subscription, Refusal> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Refusal::TooLarge(MAX_BODY_BYTES));
    }
    let input: SubscribeInput = serde_json::from_slice(body).map_err(|e| Refusal::Malformed(format!("body: {e}")))?;
    let settings = Settings::resolve(cfg, "").map_err(|e| Refusal::Malformed(format!("config: {e}")))?;
    validate(&input, &settings, geo, None, "check", now_ms)
}
