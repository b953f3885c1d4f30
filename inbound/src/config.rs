//! What the operator writes in `config/inbound.toml`: the feeds to poll, the agencies allowed to push, the agencies'
//! vehicle-detector feeds ([`VdFeedSource`], `vd/`), and the bounds that keep a misbehaving partner from hurting
//! anything else.
//!
//! Every table denies unknown keys (a misspelt `pulbic = true` is an error, not a silent `false`). Secrets may be
//! written inline for the demo, or named by environment variable (`token_env`, `hmac_secret_env`) so that real ones
//! stay out of files (`serve` refuses inline ones and the demo's values: the binary's `src/deployment.rs`); they are
//! resolved once, at [`super::Inbound::start`].
//!
//! Authority is configured, never taken from the message: a push source lists the CAP `sender`s it may speak for
//! (`senders`, required), every source may only update or cancel the warnings it opened itself unless it names the
//! other sources in `may_reference`, and a feed's poller only reaches the hosts and address classes its table
//! allows (`hosts`, `allow_networks`; see [`super::egress`]).

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use super::egress::{AddressClass, EgressPolicy, Network, Refusal};
use super::error::InboundError;

/// Default largest CAP document per source. Real messages are a few KiB; a county-wide polygon set reaches ~100 KiB.
const DEFAULT_MAX_BYTES: usize = 256 * 1024;

/// The whole inbound configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// Capacity of the event channel [`super::Inbound::start`] returns. Events beyond it are dropped and counted
    /// (the state behind [`super::Inbound::active`] stays right), because a push must never wait on a slow reader.
    #[serde(default = "default_event_buffer")]
    pub event_buffer: usize,
    /// How often active alerts are checked for expiry, in milliseconds.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// Lifetime given to a message whose infos carry no `expires`, so nothing stays on the map for ever.
    #[serde(default = "default_lifetime_s")]
    pub default_lifetime_s: u64,
    /// How long a (sender, identifier, sent) key is remembered for de-duplication and for following `references`.
    #[serde(default = "default_remember_s")]
    pub remember_s: u64,
    /// Most external alerts active at once; a message beyond it is rejected (`capacity`) instead of growing memory.
    #[serde(default = "default_max_active")]
    pub max_active: usize,
    /// Atom feeds of CAP messages to poll.
    #[serde(default, rename = "feed")]
    pub feeds: Vec<FeedSource>,
    /// Agencies that push CAP messages to `POST /api/v1/cap/inbound`.
    #[serde(default, rename = "push")]
    pub pushes: Vec<PushSource>,
    /// Vehicle-detector feeds in the MOTC VDLive format, turned into readings of our detectors (`vd/`).
    #[serde(default, rename = "vd_feed")]
    pub vd_feeds: Vec<VdFeedSource>,
}

/// An agency's live vehicle-detector feed (MOTC traffic data standard v2.0 `VDLive`, JSON or XML), polled like a
/// CAP feed (conditional GET, backoff, the same egress rules) and turned into readings of our `vehicle_detector`
/// sensors through `detectors`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VdFeedSource {
    /// Source name, as for CAP feeds: logs and the `source` label of the `dc_vd_feed_*` metrics.
    pub name: String,
    /// The feed's URL (http or https): JSON (`{"VDLives": […]}`) or XML (`<VDLiveList>`), told apart by content.
    pub url: String,
    /// Seconds between polls while the feed is healthy. The national freeway feed updates every 60 s (and asks
    /// for no more than one request per 40 s).
    #[serde(default = "default_vd_interval_s")]
    pub interval_s: u64,
    /// Whole-request timeout in seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// Ceiling of the exponential backoff after failed polls.
    #[serde(default = "default_max_backoff_s")]
    pub max_backoff_s: u64,
    /// Largest document accepted, in bytes (the national freeway VDLive.xml is ~5 MB).
    #[serde(default = "default_vd_max_bytes")]
    pub max_bytes: usize,
    /// The period each record's volumes count over, seconds; by default the document's `SrcUpdateInterval` or
    /// `UpdateInterval`, else 60. Flow per hour is volume × 3600 / this.
    #[serde(default)]
    pub collect_interval_s: Option<u64>,
    /// A record whose `DataCollectTime` is older than this (seconds) is refused (`stale`): a feed stuck on old data
    /// must not look like a live road.
    #[serde(default = "default_vd_max_age_s")]
    pub max_age_s: u64,
    /// Agency detector id (`VDID`) → our sensor id. Records of other detectors are counted (`unknown_vdid`) and
    /// dropped. Each sensor must be a registered `vehicle_detector`.
    pub detectors: std::collections::BTreeMap<String, String>,
    /// Hosts the feed may redirect to besides its own (same-origin redirects only, as for CAP feeds).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Address classes or CIDR blocks besides public addresses the feed may be fetched from (as for CAP feeds).
    #[serde(default)]
    pub allow_networks: Vec<Network>,
}

/// An Atom feed whose entries link to CAP messages (`<link type="application/cap+xml" href="…"/>`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedSource {
    /// Source name: shown to operators and citizens, used as the metrics label. `[a-z0-9_-]`, unique.
    pub name: String,
    /// The feed's URL (http or https).
    pub url: String,
    /// Seconds between polls while the feed is healthy.
    #[serde(default = "default_interval_s")]
    pub interval_s: u64,
    /// Whole-request timeout in seconds, for the feed and for each CAP document it links.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// Ceiling of the exponential backoff after failed polls (interval × 2^failures, at most this).
    #[serde(default = "default_max_backoff_s")]
    pub max_backoff_s: u64,
    /// Whether citizens may receive this source's Actual, Public-scope messages. Off unless said.
    #[serde(default)]
    pub public: bool,
    /// Largest CAP document accepted from this source, in bytes.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Largest feed document, in bytes.
    #[serde(default = "default_max_feed_bytes")]
    pub max_feed_bytes: usize,
    /// When not empty, only messages whose `sender` is listed are accepted (a feed may carry other agencies' alerts).
    #[serde(default)]
    pub senders: Vec<String>,
    /// Hosts the feed's entries may link to, besides the feed URL's own host (which is always allowed). A link or
    /// redirect elsewhere is refused (`host_not_allowed`) without being fetched. Bare names or addresses, no port.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// What this feed may be fetched from besides public addresses: `loopback`, `private`, `link_local` (whole
    /// classes) or CIDR blocks (`"10.20.0.0/16"`). Empty (the default): a host on this machine, the private
    /// network or the link — the cloud metadata service — is refused (`address_not_allowed`) before connecting,
    /// whatever the feed links to.
    #[serde(default)]
    pub allow_networks: Vec<Network>,
    /// Other sources (by name) whose warnings this source may update or cancel. Empty (the default): only its own.
    #[serde(default)]
    pub may_reference: Vec<String>,
}

/// An agency that pushes messages. Exactly one credential: a bearer token or an HMAC-SHA256 secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSource {
    /// Source name, as for feeds; pushes may name it (`?source=`) or be matched by their credential.
    pub name: String,
    /// `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<String>,
    /// Environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Secret for `X-DC-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` (the UTF-8 bytes).
    #[serde(default)]
    pub hmac_secret: Option<String>,
    /// Environment variable holding the HMAC secret.
    #[serde(default)]
    pub hmac_secret_env: Option<String>,
    /// How far the signature's `t` may be from our clock, in seconds: the window in which a captured push could be
    /// replayed (de-duplication then ignores the replay anyway).
    #[serde(default = "default_signature_window_s")]
    pub signature_window_s: u64,
    /// Whether citizens may receive this source's Actual, Public-scope messages. Off unless said.
    #[serde(default)]
    pub public: bool,
    /// Largest body accepted, in bytes; checked before authentication so a large body costs nothing.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// The CAP senders this source speaks for; messages from any other `sender` are refused
    /// (`sender_not_allowed`), so one agency cannot speak for another. Required: a push credential is a key to
    /// citizens' phones, and an empty list would let it speak for every agency.
    #[serde(default)]
    pub senders: Vec<String>,
    /// Other sources (by name) whose warnings this source may update or cancel. Empty (the default): only its own.
    #[serde(default)]
    pub may_reference: Vec<String>,
}

fn default_event_buffer() -> usize {
    1024
}
fn default_tick_ms() -> u64 {
    1000
}
fn default_lifetime_s() -> u64 {
    24 * 3600
}
fn default_remember_s() -> u64 {
    7 * 24 * 3600
}
fn default_max_active() -> usize {
    10_000
}
fn default_interval_s() -> u64 {
    60
}
fn default_timeout_s() -> u64 {
    10
}
fn default_max_backoff_s() -> u64 {
    900
}
fn default_max_bytes() -> usize {
    DEFAULT_MAX_BYTES
}
fn default_max_feed_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_signature_window_s() -> u64 {
    300
}
fn default_vd_interval_s() -> u64 {
    60
}
fn default_vd_max_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_vd_max_age_s() -> u64 {
    900
}

impl Default for InboundConfig {
    fn default() -> Self {
        InboundConfig {
            event_buffer: default_event_buffer(),
            tick_ms: default_tick_ms(),
            default_lifetime_s: default_lifetime_s(),
            remember_s: default_remember_s(),
            max_active: default_max_active(),
            feeds: Vec::new(),
            pushes: Vec::new(),
            vd_feeds: Vec::new(),
        }
    }
}

impl InboundConfig {
    /// Reads and checks the TOML text of `file` (the path is only used in messages).
    pub fn from_toml(text: &str, file: &Path) -> Result<Self, InboundError> {
        let config: InboundConfig = toml::from_str(text)
            .map_err(|e| InboundError::Config { file: file.to_path_buf(), message: e.to_string() })?;
        config.validate().map_err(|message| InboundError::Config { file: file.to_path_buf(), message })?;
        Ok(config)
    }

    /// Checks what serde cannot: names, URLs, ranges, one credential per push source. The message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.event_buffer == 0 || self.tick_ms == 0 || self.max_active == 0 {
            return Err("event_buffer, tick_ms and max_active must be > 0".into());
        }
        if self.default_lifetime_s == 0 || self.remember_s == 0 {
            return Err("default_lifetime_s and remember_s must be > 0".into());
        }
        let mut names = HashSet::new();
        let all_names = self
            .feeds
            .iter()
            .map(|f| ("feed", &f.name))
            .chain(self.pushes.iter().map(|p| ("push", &p.name)))
            .chain(self.vd_feeds.iter().map(|v| ("vd_feed", &v.name)));
        for (table, name) in all_names {
            if name.is_empty()
                || name.len() > 64
                || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "[[{table}]] name `{name}`: 1-64 characters of a-z, 0-9, `-`, `_` (it is a metrics label)"
                ));
            }
            if !names.insert(name.as_str()) {
                return Err(format!("[[{table}]] name `{name}` is used twice"));
            }
        }
        for f in &self.feeds {
            let at = |key: &str| format!("[[feed]] `{}`: {key}", f.name);
            match reqwest::Url::parse(&f.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => return Err(format!("{}: `{}` is not an http(s) URL", at("url"), f.url)),
            }
            if f.interval_s == 0 || f.timeout_s == 0 {
                return Err(at("interval_s and timeout_s must be > 0"));
            }
            if f.max_backoff_s < f.interval_s {
                return Err(at("max_backoff_s must be >= interval_s"));
            }
            if f.max_bytes == 0 || f.max_feed_bytes == 0 {
                return Err(at("max_bytes and max_feed_bytes must be > 0"));
            }
            if let Ok(url) = reqwest::Url::parse(&f.url) {
                let policy = EgressPolicy::new(&url, &f.hosts, &f.allow_networks)
                    .map_err(|e| format!("{}: {e}", at("hosts")))?;
                // A feed on an address its own policy refuses would fail every poll: say so now, and how to allow it.
                match policy.check_url(&url) {
                    Ok(()) => {}
                    Err(Refusal::AddressNotAllowed { class, .. }) if class != AddressClass::Never => {
                        let network = match class {
                            AddressClass::Loopback => "loopback",
                            AddressClass::Private => "private",
                            _ => "link_local",
                        };
                        return Err(format!(
                            "{}: `{}` is a {class} address; add allow_networks = [\"{network}\"] to poll it",
                            at("url"),
                            f.url
                        ));
                    }
                    Err(r) => return Err(format!("{}: {r}", at("url"))),
                }
            }
        }
        for v in &self.vd_feeds {
            v.validate()?;
        }
        for p in &self.pushes {
            let at = |key: &str| format!("[[push]] `{}`: {key}", p.name);
            let credentials =
                [&p.token, &p.token_env, &p.hmac_secret, &p.hmac_secret_env].iter().filter(|c| c.is_some()).count();
            if credentials != 1 {
                return Err(at("exactly one of token, token_env, hmac_secret, hmac_secret_env is required"));
            }
            if p.max_bytes == 0 || p.signature_window_s == 0 {
                return Err(at("max_bytes and signature_window_s must be > 0"));
            }
            if p.senders.is_empty() || p.senders.iter().any(|s| s.trim().is_empty()) {
                return Err(at(
                    "senders: list the CAP senders this source speaks for (an empty list would let its credential \
                     speak for every agency)",
                ));
            }
        }
        let sources = self
            .feeds
            .iter()
            .map(|f| ("feed", &f.name, &f.may_reference))
            .chain(self.pushes.iter().map(|p| ("push", &p.name, &p.may_reference)));
        for (table, name, others) in sources {
            for other in others {
                if other == name {
                    return Err(format!(
                        "[[{table}]] `{name}`: may_reference: `{other}` is this source (its own warnings are always \
                         its to change)"
                    ));
                }
                if !names.contains(other.as_str()) {
                    return Err(format!("[[{table}]] `{name}`: may_reference: no source is named `{other}`"));
                }
            }
        }
        Ok(())
    }
}

impl VdFeedSource {
    /// What serde cannot check; the message names the table, the source and the key.
    pub fn validate(&self) -> Result<(), String> {
        let at = |key: &str| format!("[[vd_feed]] `{}`: {key}", self.name);
        let url = match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            _ => return Err(format!("{}: `{}` is not an http(s) URL", at("url"), self.url)),
        };
        if self.interval_s == 0 || self.timeout_s == 0 {
            return Err(at("interval_s and timeout_s must be > 0"));
        }
        if self.max_backoff_s < self.interval_s {
            return Err(at("max_backoff_s must be >= interval_s"));
        }
        if self.max_bytes == 0 || self.max_age_s == 0 {
            return Err(at("max_bytes and max_age_s must be > 0"));
        }
        if self.collect_interval_s.is_some_and(|s| !(1..=86_400).contains(&s)) {
            return Err(at("collect_interval_s must be 1..=86400 seconds"));
        }
        if self.detectors.is_empty() {
            return Err(at("detectors: map at least one VDID to a sensor id (\"VD-…\" = \"VD0001\")"));
        }
        for (vdid, sensor) in &self.detectors {
            if vdid.trim().is_empty() || vdid.len() > 128 {
                return Err(at(&format!("detectors: `{vdid}` is not a VDID (1-128 characters)")));
            }
            if sensor.is_empty() || sensor.len() > 32 || !sensor.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(at(&format!(
                    "detectors.\"{vdid}\": `{sensor}` is not a sensor id (1-32 letters and digits)"
                )));
            }
        }
        let policy =
            EgressPolicy::new(&url, &self.hosts, &self.allow_networks).map_err(|e| format!("{}: {e}", at("hosts")))?;
        match policy.check_url(&url) {
            Ok(()) => Ok(()),
            Err(Refusal::AddressNotAllowed { class, .. }) if class != AddressClass::Never => {
                let network = match class {
                    AddressClass::Loopback => "loopback",
                    AddressClass::Private => "private",
                    _ => "link_local",
                };
                Err(format!(
                    "{}: `{}` is a {class} address; add allow_networks = [\"{network}\"] to poll it",
                    at("url"),
                    self.url
                ))
            }
            Err(r) => Err(format!("{}: {r}", at("url"))),
        }
    }
}
