//! Delivery ids that survive the loss of the machine (cluster mode, `serve --cluster … --role dissemination`).
//!
//! On one process a delivery's id is a counter in the local journal: a restart on the same disk resends it with the
//! same id. On a cluster the node that takes dissemination over has another disk, so a delivery also carries a
//! **key** derived from what it delivers (see [`delivery_key`]): the CAP message (its identifier names the warning
//! and its version), the target (channel and receiver), and for a cell broadcast the kind, message code and update
//! number. A node rebuilding the warnings from the alerts stream plans the same deliveries with the same keys.
//!
//! The binary hands the outbox a [`DeliveryLedger`] (a replicated key-value bucket there); the outbox then records
//! every attempt in it **before** the call ([`DeliveryLedger::begin`]) and the receiver's 2xx after it
//! ([`DeliveryLedger::confirm`]), and sends the key as `X-DC-Delivery` with the ledger's attempt count as
//! `X-DC-Attempt`: an id a receiver sees again is a retry (attempt > 1), after a timeout or after a crash on any
//! node. A delivery the ledger says was confirmed is not sent again.
//!
//! This crate knows no NATS: the trait is its whole view of the ledger.

use std::future::Future;
use std::pin::Pin;

/// What [`DeliveryLedger::begin`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// Go: the attempt is recorded as number `n` for this key, across every node (1: the first anywhere).
    Attempt(u32),
    /// A receiver already confirmed this key (on this node or a previous one): do not send it again.
    Confirmed,
}

/// Why the ledger could not answer (the cluster is unreachable, or this node may no longer act): the delivery waits
/// and asks again; nothing is sent without its record.
#[derive(Debug, Clone, thiserror::Error)]
#[error("delivery ledger: {0}")]
pub struct LedgerError(pub String);

/// A boxed future, so that the trait stays object-safe without a macro crate.
pub type LedgerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LedgerError>> + Send + 'a>>;

/// The replicated record of deliveries (implemented by the binary on JetStream key-value).
pub trait DeliveryLedger: Send + Sync + 'static {
    /// Records deliveries as planned (idempotent: a key already there is left as it is). The dissemination node
    /// acknowledges an alert change to the cluster only after this returned for its deliveries.
    fn record<'a>(&'a self, planned: &'a [PlannedDelivery]) -> LedgerFuture<'a, ()>;
    /// Called right before each attempt: counts it (creating the record if needed) and says whether to send.
    fn begin<'a>(&'a self, delivery: &'a PlannedDelivery) -> LedgerFuture<'a, Begin>;
    /// The receiver answered 2xx.
    fn confirm<'a>(&'a self, key: &'a str) -> LedgerFuture<'a, ()>;
}

/// A delivery the outbox planned, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlannedDelivery {
    /// The delivery key (`X-DC-Delivery`).
    pub key: String,
    /// Subscriber name, or `cbc:<carrier>`.
    pub target: String,
    /// The CAP message delivered (`X-DC-Message`).
    pub identifier: String,
}

/// The key of a delivery: 32 hex digits of SHA-256 over its parts, each length-prefixed (so `("ab","c")` and
/// `("a","bc")` differ). Hex only: it is a header value anywhere and a key in any key-value store.
pub fn delivery_key(parts: &[&str]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p.as_bytes());
    }
    let digest = ctx.finish();
    crate::hex(&digest.as_ref()[..16])
}

/// The key of a webhook delivery: the message and the receiver.
pub(crate) fn webhook_key(identifier: &str, target: &str) -> String {
    delivery_key(&["webhook", identifier, target])
}

/// The key of a carrier's envelope: the message, the carrier, and which broadcast (write-replace or stop, message
/// code and update number: an operator's rebroadcast of the same message is a new broadcast with a new update
/// number, so a new key).
pub(crate) fn cbc_key(identifier: &str, target: &str, kind: &str, message_code: u16, update_number: u8) -> String {
    delivery_key(&["cbc", identifier, target, kind, &message_code.to_string(), &update_number.to_string()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_deterministic_hex_and_separate_their_parts() {
        let k = webhook_key("TW-DC-W-1.3", "media");
        assert_eq!(k, webhook_key("TW-DC-W-1.3", "media"), "the same delivery on another node has the same key");
        assert_eq!(k.len(), 32);
        assert!(k.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(delivery_key(&["ab", "c"]), delivery_key(&["a", "bc"]));
        assert_ne!(k, webhook_key("TW-DC-W-1.4", "media"), "another version");
        assert_ne!(k, webhook_key("TW-DC-W-1.3", "media-2"), "another receiver");
        assert_ne!(cbc_key("m", "cbc:A", "write_replace", 1, 0), cbc_key("m", "cbc:A", "write_replace", 1, 1));
        assert_ne!(cbc_key("m", "cbc:A", "write_replace", 1, 0), cbc_key("m", "cbc:A", "stop", 1, 0));
    }
}
