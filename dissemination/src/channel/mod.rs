//! The outbound channels, one room each: [`webhook`] (agencies' and media's HTTPS receivers, HMAC-signed) and
//! [`cbc`] (each carrier's Cell Broadcast Centre adapter, bearer token). A room owns its target's data, the body
//! it sends, the content type, the authentication, its config section and its planning; the outbox around it
//! (journal, strict order, retries, dead letters, delivery logs) is the same for every channel.
//!
//! This file is the one place that lists the channels: `Channel` names them and `Endpoint` holds a target's
//! data, one variant each. Every `match` on them is here and exhaustive, so a new variant makes the compiler
//! point at each line that needs it. What a channel is decided by is its target's `Endpoint` variant; its
//! name prefix (`cbc:`) exists only as the stable external name (`Channel::target_name`).
//!
//! [`push`] (Web Push to citizens' phones) is a room here too but not a `Channel` of the outbox: its targets are up to
//! a million anonymous subscriptions of which only the newest version of each alert matters, so it keeps its own
//! state (subscriptions, one dispatch per message, one line per phone that had it) instead of one strictly ordered,
//! journaled outbox per target. It takes the released messages the outbox makes (`Dissemination::alert_changed`).

pub mod cbc;
pub mod push;
pub mod webhook;

use super::config::{Resolved, Retry};
use super::messages::StoredMessage;
use super::view::AlertView;

/// An outbound channel. Its label is the `channel` label of the delivery metrics and the prefix of its targets'
/// names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Channel {
    Webhook,
    Cbc,
}

impl Channel {
    /// Every channel (metrics register their labels up front so dashboards see zeros, not gaps).
    pub const ALL: [Channel; 2] = [Channel::Webhook, Channel::Cbc];

    /// The metrics label; also the prefix of the target names (see [`Channel::target_name`]). Stable: dashboards
    /// and journals on disk hold it.
    pub fn label(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::Cbc => "cbc",
        }
    }

    /// The name a target of this channel goes by in HTTP responses, logs and the journal: `<label>:<name>`
    /// (`cbc:Chunghwa`), except webhook subscribers, who came first and are called by their bare name. Subscriber
    /// names cannot contain `:`, so no two channels' names collide.
    pub fn target_name(self, name: &str) -> String {
        if self == Channel::Webhook {
            name.to_string()
        } else {
            format!("{}:{name}", self.label())
        }
    }

    /// The channel a target name read back from the journal belongs to, for a target no longer configured (it
    /// has no [`Endpoint`] to tell): the inverse of [`Channel::target_name`].
    pub fn of_target_name(target: &str) -> Channel {
        let prefix = target.split_once(':').map(|(p, _)| p);
        Channel::ALL
            .into_iter()
            .find(|c| *c != Channel::Webhook && Some(c.label()) == prefix)
            .unwrap_or(Channel::Webhook)
    }

    /// The retry policy of this channel's deliveries (each channel's config section has its own).
    pub fn retry(self, cfg: &Resolved) -> Retry {
        match self {
            Channel::Webhook => cfg.webhook.retry,
            Channel::Cbc => cfg.cbc.retry,
        }
    }
}

/// What a target delivers to: one variant per [`Channel`], holding the data that channel's room defines.
#[derive(Debug, Clone)]
pub(crate) enum Endpoint {
    Webhook(webhook::Webhook),
    Cbc(cbc::Carrier),
}

impl Endpoint {
    pub fn channel(&self) -> Channel {
        match self {
            Endpoint::Webhook(_) => Channel::Webhook,
            Endpoint::Cbc(_) => Channel::Cbc,
        }
    }

    /// The target's name (see [`Channel::target_name`]).
    pub fn target_name(&self) -> String {
        let name = match self {
            Endpoint::Webhook(w) => &w.sub.name,
            Endpoint::Cbc(c) => &c.name,
        };
        self.channel().target_name(name)
    }

    /// Whether this target takes a CAP message of the alert `view` (see [`webhook::Webhook::wants`]). `reached`:
    /// it took an earlier message of the alert. Carriers take none this way: their envelopes are planned from
    /// what is on the air ([`cbc`]).
    pub fn wants(&self, view: &AlertView, released: bool, reached: bool) -> bool {
        match self {
            Endpoint::Webhook(w) => w.wants(view, released, reached),
            Endpoint::Cbc(_) => false,
        }
    }

    /// The request of one attempt, signed or authorised as the channel does it. `now_ms` is the send time
    /// (signatures carry it).
    pub fn request(&self, payload: &Payload<'_>, base_url: &str, now_ms: i64) -> Request {
        match self {
            Endpoint::Webhook(w) => w.request(payload, base_url, now_ms),
            Endpoint::Cbc(c) => c.request(payload),
        }
    }
}

/// The targets the config file defines, every channel's.
pub(crate) fn configured(cfg: &Resolved) -> Vec<Endpoint> {
    let webhooks = cfg.webhook.subscribers.iter().map(|s| Endpoint::Webhook(webhook::Webhook::configured(s)));
    let carriers = cfg.cbc.carriers.iter().map(|c| Endpoint::Cbc(c.clone()));
    webhooks.chain(carriers).collect()
}

/// What a delivery sends, as the outbox holds it: channels take what they need.
pub(crate) struct Payload<'a> {
    /// The CAP message's identifier.
    pub identifier: &'a str,
    /// The message, while memory holds its body (a pending delivery pins it).
    pub message: Option<&'a StoredMessage>,
    /// The body planned and journaled with the delivery (a CBC envelope).
    pub envelope: Option<&'a str>,
}

/// One attempt's HTTP POST as a channel builds it; the worker adds the headers every channel sends.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub url: String,
    /// The body, or why there is none (the attempt then fails with this text, and is retried like any failure).
    pub body: Result<Vec<u8>, String>,
    pub content_type: &'static str,
    /// The channel's authentication headers (a bearer token).
    pub auth: Vec<(&'static str, String)>,
    /// Signs the attempt with `X-DC-Signature` when it is sent: the signature covers the delivery id and the
    /// attempt, which only the sender knows then.
    pub signer: Option<Signer>,
}

/// A webhook's signing key and the send time the signature carries.
#[derive(Clone)]
pub(crate) struct Signer {
    pub secret: String,
    pub unix_s: i64,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("unix_s", &self.unix_s).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_read_back_to_their_channel() {
        for (channel, name) in [(Channel::Webhook, "ncdr-mirror"), (Channel::Cbc, "Chunghwa Telecom")] {
            assert_eq!(Channel::of_target_name(&channel.target_name(name)), channel);
        }
        // The names journals on disk hold.
        assert_eq!(Channel::Cbc.target_name("FarEasTone"), "cbc:FarEasTone");
        assert_eq!(Channel::Webhook.target_name("media-1"), "media-1");
        assert_eq!(Channel::of_target_name("cbc"), Channel::Webhook, "a subscriber may be called `cbc`");
    }
}
