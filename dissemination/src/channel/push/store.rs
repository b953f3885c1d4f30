//! The push channel's state and its journal `push/journal.jsonl` (through `durable`; owner-only: it holds the
//! subscriptions' secrets).
//!
//! One [`PushState::apply`] for live changes and replay, as the outbox does it. Records:
//! - `subscribed` / `removed`: the subscriptions (a citizen's subscribe replaces the entry of the same endpoint; a
//!   removal names why: the citizen, or the push service's 404/410);
//! - `dispatch`: one released alert message to push, with the policy's decision and the payloads per language,
//!   journaled (fsync) before the first push goes out;
//! - `sent`: one subscription's final outcome for a dispatch (written, not synced: losing the last few in a power cut
//!   costs a repeated push, which the phone folds into the same notification by its tag);
//! - `finished`: every recipient of a dispatch has its outcome.
//!
//! On start the journal is read, applied, and rewritten compact: the live subscriptions, the last dispatch of each
//! alert not yet ended (what the re-notify policy remembers), and the unfinished dispatches with their `sent` lines —
//! which the sender then resumes, skipping whoever already had it. So a restart keeps subscriptions and does not push
//! again what was delivered.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::notice::{Loudness, Pushed};
use super::subscription::{PushLang, Subscription};

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Record {
    Subscribed { sub: Subscription },
    Removed { id: String, reason: String, at_ms: i64 },
    Dispatch { dispatch: Dispatch },
    Sent { seq: u64, id: String, outcome: Outcome },
    Finished { seq: u64 },
}

/// One alert message on its way to every subscription whose zones it covers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Dispatch {
    pub seq: u64,
    pub alert_id: String,
    pub identifier: String,
    pub area_id: String,
    pub pushed: Pushed,
    pub loudness: Loudness,
    pub urgency: String,
    pub topic: String,
    /// When it was planned, Unix ms: with the TTL, when it stops being worth sending.
    pub at_ms: i64,
    /// The payload per language (JSON text, before encryption).
    pub zh_tw: String,
    pub en: String,
}

impl Dispatch {
    pub fn payload(&self, lang: PushLang) -> &str {
        match lang {
            PushLang::ZhTw => &self.zh_tw,
            PushLang::En => &self.en,
        }
    }
}

/// How one push ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The push service took it (201).
    Delivered,
    /// 404/410: the subscription is gone (removed with it).
    Gone,
    /// Retries ran out (429/5xx/network), or the push service refused it for good (400, 401/403, 413).
    Failed,
    /// A newer version of the same alert was dispatched first: its push replaces this one.
    Superseded,
    /// Older than the TTL by the time it could go.
    Expired,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Gone => "gone",
            Outcome::Failed => "failed",
            Outcome::Superseded => "superseded",
            Outcome::Expired => "expired",
        }
    }
    pub const ALL: [Outcome; 5] =
        [Outcome::Delivered, Outcome::Gone, Outcome::Failed, Outcome::Superseded, Outcome::Expired];
}

/// A dispatch not yet finished: who already has their outcome.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub dispatch: Dispatch,
    pub done: HashSet<String>,
}

#[derive(Debug, Default)]
pub(crate) struct PushState {
    pub subs: HashMap<String, Subscription>,
    /// Per client hash and per address hash: how many subscriptions (the bounds).
    pub per_client: HashMap<String, usize>,
    pub per_address: HashMap<String, usize>,
    /// Zone → subscription ids (an alert's recipients are one lookup).
    pub by_zone: HashMap<String, HashSet<String>>,
    /// What was last dispatched per alert (the policy's memory), and its dispatch, while the alert has not ended.
    pub last: HashMap<String, Dispatch>,
    /// Dispatches in progress, by sequence number.
    pub pending: BTreeMap<u64, Pending>,
    pub next_seq: u64,
}

impl PushState {
    /// Applies one record, live or replayed.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Subscribed { sub } => {
                self.remove(&sub.id);
                *self.per_client.entry(sub.client.clone()).or_default() += 1;
                *self.per_address.entry(sub.address.clone()).or_default() += 1;
                for z in &sub.zones {
                    self.by_zone.entry(z.clone()).or_default().insert(sub.id.clone());
                }
                self.subs.insert(sub.id.clone(), sub.clone());
            }
            Record::Removed { id, .. } => {
                self.remove(id);
            }
            Record::Dispatch { dispatch } => {
                self.next_seq = self.next_seq.max(dispatch.seq + 1);
                self.pending.insert(dispatch.seq, Pending { dispatch: dispatch.clone(), done: HashSet::new() });
                self.last.insert(dispatch.alert_id.clone(), dispatch.clone());
            }
            Record::Sent { seq, id, .. } => {
                if let Some(p) = self.pending.get_mut(seq) {
                    p.done.insert(id.clone());
                }
            }
            Record::Finished { seq } => {
                if let Some(p) = self.pending.remove(seq) {
                    // An ended alert's memory goes once its end is out: a later alert with the same id is new.
                    let latest = self.last.get(&p.dispatch.alert_id).is_some_and(|d| d.seq == *seq);
                    if latest && p.dispatch.pushed.ended {
                        self.last.remove(&p.dispatch.alert_id);
                    }
                }
            }
        }
    }

    fn remove(&mut self, id: &str) -> Option<Subscription> {
        let old = self.subs.remove(id)?;
        for (map, key) in [(&mut self.per_client, &old.client), (&mut self.per_address, &old.address)] {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
        for z in &old.zones {
            if let Some(ids) = self.by_zone.get_mut(z) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_zone.remove(z);
                }
            }
        }
        Some(old)
    }

    /// The subscriptions an alert in `area_id` reaches.
    pub fn recipients(&self, area_id: &str) -> Vec<String> {
        let mut ids: Vec<String> = self.by_zone.get(area_id).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        ids.sort();
        ids
    }

    /// Whether a dispatch has been overtaken by a newer one of its alert.
    pub fn superseded(&self, seq: u64, alert_id: &str) -> bool {
        self.last.get(alert_id).is_some_and(|d| d.seq > seq)
    }

    /// The journal as rewritten on start: what this state needs, nothing older.
    pub fn compact(&self) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::with_capacity(self.subs.len() + self.last.len());
        let mut subs: Vec<&Subscription> = self.subs.values().collect();
        subs.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        out.extend(subs.into_iter().map(|s| Record::Subscribed { sub: s.clone() }));
        // The policy's memory: dispatches that are finished but are their alert's latest, then the pending ones.
        let mut memory: Vec<&Dispatch> = self.last.values().filter(|d| !self.pending.contains_key(&d.seq)).collect();
        memory.sort_by_key(|d| d.seq);
        for d in memory {
            out.push(Record::Dispatch { dispatch: d.clone() });
            out.push(Record::Finished { seq: d.seq });
        }
        for p in self.pending.values() {
            out.push(Record::Dispatch { dispatch: p.dispatch.clone() });
            let mut done: Vec<&String> = p.done.iter().collect();
            done.sort();
            // The outcome itself was counted when it happened; after a restart only "had it" matters.
            out.extend(done.into_iter().map(|id| Record::Sent {
                seq: p.dispatch.seq,
                id: id.clone(),
                outcome: Outcome::Delivered,
            }));
        }
        out
    }
}
