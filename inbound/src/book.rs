//! The set of active external alerts and the CAP rules that change it: de-duplication on (sender, identifier, sent),
//! Update and Cancel following `references`, expiry. Pure: time is an argument, the geo index is read-only, and a
//! rejected message leaves the book exactly as it was.
//!
//! A *chain* is one warning through its Updates. Every message key that belongs to a chain (the messages we
//! received and the ones their `references` name) points to it, so an Update that references any earlier message —
//! not only the latest — finds the warning, and an original that arrives after its Update is recognised as
//! superseded rather than raised again.
//!
//! A chain belongs to the *source* (the configured feed or push channel) that opened it, not to the `sender` its
//! messages name: a sender is a string any partner can write, a source is a credential or a URL we chose. An
//! Update or Cancel reaching a chain another source opened is refused ([`Rejection::ForeignSource`]) unless the
//! delivering source names the owner in `may_reference`.

use std::collections::HashMap;

use geo_index::GeoIndex;
use serde::{Deserialize, Serialize};

use encoders::cap::{CapAlert, MsgType, Reference};

use super::areas::place;
use super::error::Rejection;
use super::external::{build, unix_ms, ExternalAlert, ExternalEvent, ExternalFilter, Ignored, PushOutcome};

/// What identifies a CAP message (CAP §3.2.1: identifier is unique per sender; `sent` tells re-issues apart).
/// `sent` is compared as an instant, so `+08:00` and `-00:00` spellings of one time are one message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct MsgKey {
    sender: String,
    identifier: String,
    sent_s: i64,
}

impl MsgKey {
    fn of(cap: &CapAlert) -> Self {
        MsgKey { sender: cap.sender.clone(), identifier: cap.identifier.clone(), sent_s: cap.sent.unix_timestamp() }
    }

    fn of_ref(r: &Reference) -> Self {
        MsgKey { sender: r.sender.clone(), identifier: r.identifier.clone(), sent_s: r.sent.unix_timestamp() }
    }
}

/// How a chain ended, remembered so late messages of it are not mistaken for new warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Closed {
    Cancelled,
    Expired,
}

#[derive(Debug)]
struct Chain {
    alert: ExternalAlert,
    /// The source that opened the chain, and so the only one (with those naming it in `may_reference`) that may
    /// update or cancel it. Not `alert.source`, which names the source of the latest version.
    owner: String,
    /// Every message key of the chain (received and referenced), to unlink them when it ends.
    keys: Vec<MsgKey>,
}

/// Bounds and defaults of the book, from the config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BookSettings {
    pub default_lifetime_ms: i64,
    pub remember_ms: i64,
    pub max_active: usize,
}

/// Who delivered a message, as far as the book needs to know.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SourceMeta<'a> {
    pub name: &'a str,
    pub public: bool,
    pub senders: &'a [String],
    /// Other sources whose chains this one may update or cancel.
    pub may_reference: &'a [String],
}

/// What taking a message did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Applied {
    pub outcome: PushOutcome,
    pub events: Vec<ExternalEvent>,
}

#[derive(Debug)]
pub(crate) struct Book {
    settings: BookSettings,
    /// Active chains by alert id.
    chains: HashMap<String, Chain>,
    /// Message key → id of the active chain it belongs to.
    by_key: HashMap<MsgKey, String>,
    /// Keys of messages taken (received time), for de-duplication; forgotten after `remember_ms`.
    seen: HashMap<MsgKey, i64>,
    /// Keys of ended chains (with when they ended); forgotten after `remember_ms`.
    closed: HashMap<MsgKey, (Closed, i64)>,
}

/// The whole book in a serialisable form (`inbound/book.json` in the data dir), so that partner agencies' warnings,
/// what was seen and what was cancelled survive a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct BookState {
    format: u32,
    chains: Vec<ChainState>,
    seen: Vec<(MsgKey, i64)>,
    closed: Vec<(MsgKey, Closed, i64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ChainState {
    alert: ExternalAlert,
    keys: Vec<MsgKey>,
    /// Absent in books saved before chains had owners: the source of the latest version is the best guess.
    #[serde(default)]
    owner: Option<String>,
}

impl Book {
    pub fn new(settings: BookSettings) -> Self {
        Book { settings, chains: HashMap::new(), by_key: HashMap::new(), seen: HashMap::new(), closed: HashMap::new() }
    }

    /// Everything the book holds, ordered so that the same book always serialises the same.
    pub fn state(&self) -> BookState {
        let mut chains: Vec<ChainState> = self
            .chains
            .values()
            .map(|c| ChainState { alert: c.alert.clone(), keys: c.keys.clone(), owner: Some(c.owner.clone()) })
            .collect();
        chains.sort_by(|a, b| a.alert.id.cmp(&b.alert.id));
        let order = |k: &MsgKey| (k.sender.clone(), k.identifier.clone(), k.sent_s);
        let mut seen: Vec<(MsgKey, i64)> = self.seen.iter().map(|(k, t)| (k.clone(), *t)).collect();
        seen.sort_by_key(|(k, _)| order(k));
        let mut closed: Vec<(MsgKey, Closed, i64)> =
            self.closed.iter().map(|(k, (how, t))| (k.clone(), *how, *t)).collect();
        closed.sort_by_key(|(k, _, _)| order(k));
        BookState { format: 1, chains, seen, closed }
    }

    /// A book holding `state` under (possibly changed) settings. Chains keep their message keys, so an Update or
    /// Cancel arriving after the restart still finds its warning through `references`. Expiry is the caller's next
    /// `tick`, which also forgets keys older than `remember_ms`.
    pub fn restore(settings: BookSettings, state: BookState) -> Self {
        let mut book = Book::new(settings);
        for chain in state.chains {
            for k in &chain.keys {
                book.by_key.insert(k.clone(), chain.alert.id.clone());
            }
            let owner = chain.owner.unwrap_or_else(|| chain.alert.source.clone());
            book.chains.insert(chain.alert.id.clone(), Chain { alert: chain.alert, keys: chain.keys, owner });
        }
        book.seen.extend(state.seen);
        book.closed.extend(state.closed.into_iter().map(|(k, how, t)| (k, (how, t))));
        book
    }

    /// Takes one parsed message. `Err` changes nothing; `Ok` says what changed and the events to announce.
    pub fn receive(
        &mut self,
        cap: &CapAlert,
        source: SourceMeta<'_>,
        geo: &GeoIndex,
        now_ms: i64,
    ) -> Result<Applied, Rejection> {
        if !source.senders.is_empty() && !source.senders.contains(&cap.sender) {
            return Err(Rejection::SenderNotAllowed { sender: cap.sender.clone() });
        }
        let key = MsgKey::of(cap);
        if self.seen.contains_key(&key) {
            return Ok(ignored(Ignored::Duplicate));
        }
        if self.by_key.contains_key(&key) {
            // Named by the `references` of an Update we already hold: that Update replaced it.
            return Ok(self.remember(key, now_ms, ignored(Ignored::Superseded)));
        }
        match self.closed.get(&key) {
            Some((Closed::Cancelled, _)) => return Ok(self.remember(key, now_ms, ignored(Ignored::AfterCancel))),
            Some((Closed::Expired, _)) => return Ok(self.remember(key, now_ms, ignored(Ignored::Superseded))),
            None => {}
        }
        if matches!(cap.msg_type, MsgType::Ack | MsgType::Error) {
            return Ok(self.remember(key, now_ms, ignored(Ignored::NotAnAlert)));
        }

        // Active chains the references lead to, in reference order, each once.
        let ref_keys: Vec<MsgKey> = cap.references.iter().map(MsgKey::of_ref).collect();
        let mut targets: Vec<String> = Vec::new();
        for k in &ref_keys {
            if let Some(id) = self.by_key.get(k) {
                if !targets.contains(id) {
                    targets.push(id.clone());
                }
            }
        }
        for id in &targets {
            self.check_owner(id, source)?;
            if let Some(chain) = self.chains.get(id) {
                if chain.alert.sender != cap.sender {
                    return Err(Rejection::ForeignReference {
                        sender: cap.sender.clone(),
                        referenced_sender: chain.alert.sender.clone(),
                        identifier: chain.alert.identifier.clone(),
                    });
                }
            }
        }
        let sent_ms = unix_ms(cap.sent);

        if cap.msg_type == MsgType::Cancel {
            let Some(first) = targets.first().cloned() else {
                return Ok(self.remember(key, now_ms, ignored(Ignored::CancelOfUnknown)));
            };
            // A Cancel older than the alert's current Update cancels a version the sender has already replaced.
            if targets.iter().all(|id| self.chains.get(id).is_some_and(|c| c.alert.sent_ms > sent_ms)) {
                return Ok(self.remember(key, now_ms, ignored(Ignored::Superseded)));
            }
            let mut events = Vec::new();
            for id in &targets {
                if let Some(alert) = self.close(id, Closed::Cancelled, now_ms) {
                    events.push(ExternalEvent::Cancelled { alert, by: cap.identifier.clone() });
                }
            }
            self.closed.insert(key.clone(), (Closed::Cancelled, now_ms));
            return Ok(self.remember(key, now_ms, Applied { outcome: PushOutcome::Cancelled { id: first }, events }));
        }

        // Alert or Update: validate the place first, so a rejection leaves everything untouched.
        let placement = place(cap, geo)?;
        let mut alert = build(cap, placement, source.name, source.public, self.settings.default_lifetime_ms, now_ms);
        if alert.expires_ms <= now_ms {
            return Ok(self.remember(key, now_ms, ignored(Ignored::Expired)));
        }

        // The id a new chain would get. An Update of a message we never saw is the warning's current state: it is
        // raised under the id of the earliest message it names, so the id matches what a receiver of the whole
        // chain would use.
        let own_id = format!("ext:{}:{}", cap.sender, cap.identifier);
        let new_id = cap
            .references
            .iter()
            .filter(|r| r.sender == cap.sender)
            .min_by_key(|r| r.sent.unix_timestamp())
            .map(|r| format!("ext:{}:{}", r.sender, r.identifier))
            .unwrap_or_else(|| own_id.clone());
        // The chain this message continues: an Update follows its references; a message reusing an active
        // identifier of the same sender (a re-issue, which CAP discourages but agencies do) continues that one, and
        // so does one whose new id is already active (never replaced behind its owner's back).
        let continues: Option<String> = match cap.msg_type {
            MsgType::Update => targets.first().cloned(),
            _ => None,
        }
        .or_else(|| self.chains.contains_key(&own_id).then(|| own_id.clone()))
        .or_else(|| self.chains.contains_key(&new_id).then(|| new_id.clone()));
        if let Some(id) = &continues {
            self.check_owner(id, source)?;
        }

        let Some(chain_id) = continues else {
            if cap.msg_type == MsgType::Update
                && ref_keys.iter().any(|k| matches!(self.closed.get(k), Some((Closed::Cancelled, _))))
            {
                return Ok(self.remember(key, now_ms, ignored(Ignored::AfterCancel)));
            }
            if self.chains.len() >= self.settings.max_active {
                return Err(Rejection::Capacity { max: self.settings.max_active });
            }
            let id = new_id;
            alert.id = id.clone();
            let mut keys = vec![key.clone()];
            keys.extend(ref_keys.iter().filter(|k| !self.closed.contains_key(k)).cloned());
            for k in &keys {
                self.by_key.insert(k.clone(), id.clone());
            }
            let owner = source.name.to_string();
            self.chains.insert(id.clone(), Chain { alert: alert.clone(), keys, owner });
            return Ok(self.remember(
                key,
                now_ms,
                Applied { outcome: PushOutcome::Raised { id }, events: vec![ExternalEvent::Raised(alert)] },
            ));
        };

        let Some(current) = self.chains.get(&chain_id) else {
            // by_key and chains are changed together; an id without a chain would be a bug, not bad input.
            return Ok(self.remember(key, now_ms, ignored(Ignored::Superseded)));
        };
        if current.alert.sent_ms > sent_ms {
            return Ok(self.remember(key, now_ms, ignored(Ignored::Superseded)));
        }
        alert.id = chain_id.clone();
        alert.version = current.alert.version.saturating_add(1);
        let mut events = Vec::new();
        let mut merged_keys = vec![key.clone()];
        merged_keys.extend(ref_keys.iter().filter(|k| !self.closed.contains_key(k)).cloned());
        // An Update naming several active alerts merges them: the others end, superseded by this one.
        for other in targets.iter().filter(|id| **id != chain_id) {
            if let Some(chain) = self.chains.remove(other) {
                merged_keys.extend(chain.keys);
                events.push(ExternalEvent::Cancelled { alert: chain.alert, by: cap.identifier.clone() });
            }
        }
        for k in &merged_keys {
            self.by_key.insert(k.clone(), chain_id.clone());
        }
        if let Some(chain) = self.chains.get_mut(&chain_id) {
            chain.alert = alert.clone();
            for k in merged_keys {
                if !chain.keys.contains(&k) {
                    chain.keys.push(k);
                }
            }
        }
        events.insert(0, ExternalEvent::Updated(alert));
        Ok(self.remember(key, now_ms, Applied { outcome: PushOutcome::Updated { id: chain_id }, events }))
    }

    /// Ends the alerts whose `expires` has passed and forgets keys older than `remember_ms`.
    pub fn tick(&mut self, now_ms: i64) -> Vec<ExternalEvent> {
        let mut due: Vec<(i64, String)> = self
            .chains
            .values()
            .filter(|c| c.alert.expires_ms <= now_ms)
            .map(|c| (c.alert.expires_ms, c.alert.id.clone()))
            .collect();
        due.sort();
        let events = due
            .into_iter()
            .filter_map(|(_, id)| self.close(&id, Closed::Expired, now_ms))
            .map(|alert| ExternalEvent::Expired { alert })
            .collect();
        let horizon = now_ms.saturating_sub(self.settings.remember_ms);
        self.seen.retain(|_, at| *at > horizon);
        self.closed.retain(|_, (_, at)| *at > horizon);
        events
    }

    /// Active alerts, newest first.
    pub fn active(&self) -> Vec<ExternalAlert> {
        let mut out: Vec<ExternalAlert> = self.chains.values().map(|c| c.alert.clone()).collect();
        out.sort_by(|a, b| b.sent_ms.cmp(&a.sent_ms).then_with(|| a.id.cmp(&b.id)));
        out
    }

    /// Number of active alerts.
    pub fn len(&self) -> usize {
        self.chains.len()
    }

    /// Whether an active alert passing `filter` covers `zone_id` at `at_ms` (effective ≤ at < expires).
    pub fn zone_covered_by(&self, zone_id: &str, filter: &ExternalFilter, at_ms: i64) -> bool {
        self.chains.values().any(|c| {
            let a = &c.alert;
            a.effective_ms <= at_ms
                && at_ms < a.expires_ms
                && a.zone_ids.binary_search_by(|z| z.as_str().cmp(zone_id)).is_ok()
                && filter.accepts(a)
        })
    }

    /// `Ok` when `source` may change chain `id`: it opened it, or names its owner in `may_reference`.
    fn check_owner(&self, id: &str, source: SourceMeta<'_>) -> Result<(), Rejection> {
        match self.chains.get(id) {
            Some(chain) if chain.owner != source.name && !source.may_reference.contains(&chain.owner) => {
                Err(Rejection::ForeignSource { owner: chain.owner.clone(), identifier: chain.alert.identifier.clone() })
            }
            _ => Ok(()),
        }
    }

    fn close(&mut self, id: &str, how: Closed, now_ms: i64) -> Option<ExternalAlert> {
        let chain = self.chains.remove(id)?;
        for k in chain.keys {
            self.by_key.remove(&k);
            self.closed.insert(k, (how, now_ms));
        }
        Some(chain.alert)
    }

    fn remember(&mut self, key: MsgKey, now_ms: i64, applied: Applied) -> Applied {
        self.seen.insert(key, now_ms);
        applied
    }
}

fn ignored(why: Ignored) -> Applied {
    Applied { outcome: PushOutcome::Ignored { why }, events: Vec::new() }
}
