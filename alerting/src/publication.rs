//! What the public receives, as opposed to what operators see: one public warning per hazard and place, calm.
//!
//! Operators see every rule's alert and every version of it (`alert.rs`). The public channels — the CAP feed and
//! what dissemination sends (webhooks, cell broadcast), the citizens' app — take [`PublicWarning`]s instead, made
//! here from the public alerts:
//! - **Grouped** ([`GroupKey`]): one warning per event type (`debris_flow`, `landslide`, …), area and mode, the way
//!   Alertmanager groups alerts by labels. Its level is the highest of the public alerts in the group (by severity,
//!   then level index); every alert behind it is listed as a [`Contributor`] (CAP parameters, citizen frames).
//! - **Calm** ([`UpdatePolicy`]): a change that only moves values or contributors goes out at most once per
//!   `min_interval` per warning; a raise, a change of level or severity, an end and an operator's action go out at
//!   once; whatever is held, the latest state goes out when the interval has passed ([`Publication::due`], driven
//!   by issue time from the housekeeping tick, never by event time).
//! - **Flapping damped** (Kapacitor's `flapping()`, Nagios' flap detection): a warning whose level (or whether it is
//!   on at all) changes more than `flapping_changes` times within `flapping_window` is held as flapping — operators
//!   see it with the reason ([`PublicNote`]), counted — and nothing of it goes out until its changes within the
//!   window fall to `settled_changes` (the low threshold: hysteresis, so it does not enter and leave flapping on
//!   every change); then its settled state goes out once. An operator's action still goes out at once.
//!
//! Pure: time comes in as issue time (`now_ms`); no clock, no I/O. The state is serialisable: the binary keeps a
//! snapshot in the data dir so that a restart continues each warning's CAP chain (same id, next version) instead of
//! opening a new one.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::alert::{Alert, AlertState, Change, PublicRelease, ReportRef};
use crate::types::{Mode, Severity};

/// `[alerting.updates]`: how often the public hears about one warning, and when it is flapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatePolicy {
    /// A warning's value-only or contributor-only changes go out at most once per this interval.
    pub min_interval_ms: i64,
    /// More level changes (on/off included) than this within `flapping_window_ms`: flapping.
    pub flapping_changes: usize,
    pub flapping_window_ms: i64,
    /// A flapping warning has settled when its changes within the window have fallen to this many.
    pub settled_changes: usize,
}

/// Default `min_interval`: 5 minutes, the Alertmanager `group_interval` order of magnitude; an agency or a phone
/// hears of a value-only change at most every 5 minutes.
pub const DEFAULT_MIN_INTERVAL_MS: i64 = 5 * 60 * 1000;
/// Default flapping threshold: more than 6 level changes in 10 minutes. A typhoon's rain passes four CWA levels in
/// hours; six in ten minutes is a sensor or a threshold oscillating, not a hazard developing.
pub const DEFAULT_FLAPPING_CHANGES: usize = 6;
pub const DEFAULT_FLAPPING_WINDOW_MS: i64 = 10 * 60 * 1000;
/// Default settle threshold: at most 2 changes left within the window.
pub const DEFAULT_SETTLED_CHANGES: usize = 2;

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            min_interval_ms: DEFAULT_MIN_INTERVAL_MS,
            flapping_changes: DEFAULT_FLAPPING_CHANGES,
            flapping_window_ms: DEFAULT_FLAPPING_WINDOW_MS,
            settled_changes: DEFAULT_SETTLED_CHANGES,
        }
    }
}

/// One public warning per key: the hazard (event type) and the place (area), in one mode (a drill never merges into
/// a real warning).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GroupKey {
    pub mode: Mode,
    pub event: String,
    pub area_id: String,
}

/// One alert behind a public warning, as the public may read it: which rule found what, at which level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Contributor {
    /// The operators' alert id (operators find it on their map).
    pub alert_id: String,
    /// The rule (`debris-rain`, `wire-trip`, `debris-flow`).
    pub rule: String,
    /// The level's name, zh-TW and English.
    pub level: String,
    pub level_en: String,
    pub severity: Severity,
    /// The value the rule measured.
    pub value: f64,
    /// The sensors supporting it.
    pub sensors: Vec<String>,
}

/// A public warning as it goes out: the grouped alert (its id is the warning's, its version the warning's public
/// version, its level the group's highest), and what contributed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicWarning {
    /// The warning as an alert: `id` is the warning's (`W-` + the id of the alert that opened it), `version` counts
    /// only what went out, `rule_id` is the highest contributor's rule, `sensors` and `reports` are the union.
    pub alert: Alert,
    /// Every public alert behind it, highest first.
    pub contributors: Vec<Contributor>,
    /// Why this version went out now ([`Reason`]).
    pub reason: Reason,
}

/// Why a public warning's version went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The first public alert of the hazard and place.
    Raised,
    /// The level or severity changed.
    Level,
    /// The last public alert ended (cleared, or an operator cancelled it).
    Ended,
    /// An operator acted (approved, cancelled one of several, attached citizen reports).
    Operator,
    /// Values or contributors changed, and the interval since the last version had passed.
    Interval,
    /// It had been flapping and has settled: its settled state.
    Settled,
}

/// What became of one alert change on the public side, for the operators' frame of that alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PublicNote {
    /// The public warning this alert is part of, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    pub status: NoteStatus,
    /// For operators: why, in words.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoteStatus {
    /// The warning went out with this change.
    Sent,
    /// Held until the interval passes; the latest state goes out then.
    Coalesced,
    /// Held: the warning is flapping.
    Flapping,
    /// Nothing public changed (the public's warning already says this).
    Unchanged,
    /// The alert is not public (operators only, awaiting approval, or stale evidence).
    NotPublic,
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicationCounters {
    /// Public warning versions that went out.
    pub sent: u64,
    /// Alert changes whose public version was held for the interval (`reason="coalesced"`).
    pub coalesced: u64,
    /// Alert changes held because their warning was flapping (`reason="flapping"`).
    pub held_flapping: u64,
    /// Times a warning started flapping.
    pub flapping_started: u64,
    /// Times a flapping warning settled.
    pub flapping_settled: u64,
}

/// One alert's part in a group, as it last was public.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Member {
    alert: Alert,
}

/// The public chain of a group: the warning people have now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Chain {
    /// The last version that went out.
    last: PublicWarning,
    /// Issue time of the last version.
    sent_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Group {
    /// Public alerts of the hazard and place, by alert id: their latest public version.
    members: BTreeMap<String, Member>,
    /// The warning on the public channels now; `None` between warnings.
    chain: Option<Chain>,
    /// A change is waiting for the interval or for flapping to settle.
    pending: bool,
    /// Issue times of the latest level changes (at most `flapping_changes + 1`), oldest first.
    changes: VecDeque<i64>,
    /// The level the group was at after the latest change: `None` off, else (severity, level index, level name).
    level: Option<(Severity, usize, String)>,
    /// Since when it is flapping.
    flapping_since: Option<i64>,
    /// How the last member left, when it left: an operator's cancel ends the warning with CAP Cancel.
    ended_by_operator: bool,
}

impl Group {
    fn new() -> Self {
        Group {
            members: BTreeMap::new(),
            chain: None,
            pending: false,
            changes: VecDeque::new(),
            level: None,
            flapping_since: None,
            ended_by_operator: false,
        }
    }

    fn changes_within(&self, now_ms: i64, window_ms: i64) -> usize {
        self.changes.iter().filter(|&&t| now_ms - t < window_ms).count()
    }

    /// The highest member (severity, then level index, then the rule id for a stable choice).
    fn top(&self) -> Option<&Alert> {
        self.members.values().map(|m| &m.alert).max_by(|a, b| {
            (a.level.severity, a.level.index)
                .cmp(&(b.level.severity, b.level.index))
                .then_with(|| b.rule_id.cmp(&a.rule_id))
        })
    }
}

/// The public side of the alert book: groups, their chains, the policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publication {
    policy: UpdatePolicy,
    /// JSON objects need string keys: kept as a list of pairs on disk.
    #[serde(with = "pairs")]
    groups: BTreeMap<GroupKey, Group>,
    /// Which group each member alert is in.
    member_of: BTreeMap<String, GroupKey>,
    /// The latest version of every warning that went out, kept for the citizens' replay (ended ones too, the
    /// `retain_ended` newest).
    latest: BTreeMap<String, PublicWarning>,
    ended: VecDeque<String>,
    pub counters: PublicationCounters,
}

/// Ended warnings kept for the citizens' replay (an app that saw a warning learns of its end after a reconnect).
const RETAIN_ENDED: usize = 1000;

/// What one alert change did on the public side.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// For the operators' frame of the alert.
    pub note: PublicNote,
    /// Public warning versions to send now (none, or one).
    pub warnings: Vec<PublicWarning>,
}

impl Publication {
    pub fn new(policy: UpdatePolicy) -> Self {
        Publication {
            policy,
            groups: BTreeMap::new(),
            member_of: BTreeMap::new(),
            latest: BTreeMap::new(),
            ended: VecDeque::new(),
            counters: PublicationCounters::default(),
        }
    }

    pub fn policy(&self) -> UpdatePolicy {
        self.policy
    }

    /// A restored state under the configured policy (the config may have changed since the snapshot).
    pub fn with_policy(mut self, policy: UpdatePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The latest version of every public warning still remembered (active ones and recently ended ones).
    pub fn latest(&self) -> impl Iterator<Item = &PublicWarning> {
        self.latest.values()
    }

    /// Active public warnings.
    pub fn active(&self) -> impl Iterator<Item = &PublicWarning> {
        self.latest.values().filter(|w| w.alert.state.is_active())
    }

    /// Groups held as flapping now.
    pub fn flapping(&self) -> usize {
        self.groups.values().filter(|g| g.flapping_since.is_some()).count()
    }

    /// The public warning an alert is part of now, if any.
    pub fn warning_of(&self, alert_id: &str) -> Option<&str> {
        let key = self.member_of.get(alert_id)?;
        self.groups.get(key)?.chain.as_ref().map(|c| c.last.alert.id.as_str())
    }

    /// The CAP message the public last received for the warning an alert is part of: `/cap/{id}.{version}.xml`.
    pub fn cap_of(&self, alert_id: &str) -> Option<String> {
        let key = self.member_of.get(alert_id)?;
        let last = &self.groups.get(key)?.chain.as_ref()?.last;
        Some(format!("/cap/{}.{}.xml", last.alert.id, last.alert.version))
    }

    /// Brings a restored publication in line with the alert book after a restart (the snapshot may predate the
    /// journal's last transitions): members that are no longer active in the book end, public alerts that are not
    /// members (or changed) join. Returns the public versions to send.
    pub fn resync<'a>(&mut self, book: impl IntoIterator<Item = &'a Alert>, now_ms: i64) -> Vec<PublicWarning> {
        let book: BTreeMap<&str, &Alert> = book.into_iter().map(|a| (a.id.as_str(), a)).collect();
        let mut out = Vec::new();
        let members: Vec<(String, GroupKey)> = self.member_of.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (id, key) in members {
            match book.get(id.as_str()) {
                Some(a) if a.state.is_active() => {}
                Some(a) => out.extend(self.observe(a, now_ms).warnings),
                None => {
                    // Forgotten by the book (pruned while we were down): it ended; say so as the rules would.
                    let Some(mut gone) =
                        self.groups.get(&key).and_then(|g| g.members.get(&id)).map(|m| m.alert.clone())
                    else {
                        continue;
                    };
                    gone.state = AlertState::Cleared;
                    gone.change = Change::Cleared;
                    out.extend(self.observe(&gone, now_ms).warnings);
                }
            }
        }
        for a in book.values().filter(|a| a.state.is_active() && a.is_public()) {
            let current = self
                .member_of
                .get(&a.id)
                .and_then(|k| self.groups.get(k))
                .and_then(|g| g.members.get(&a.id))
                .is_some_and(|m| m.alert.version == a.version);
            if !current {
                out.extend(self.observe(a, now_ms).warnings);
            }
        }
        out
    }

    /// Continues a public warning another process made (a rule worker taking a region over on the NATS backbone,
    /// `src/scale_out/rule_worker.rs`): its chain — the next version keeps its id and counts on from its version —
    /// and its members, the active public alerts of `book` it lists as contributors (the book has adopted them
    /// first). Without this the new owner would open the hazard's warning again at version 1 under the same id,
    /// which receivers that have held a later version refuse as a replay. An ended warning, or one no newer than
    /// what this publication has, is left alone; `true` if adopted.
    pub fn adopt<'a>(&mut self, warning: PublicWarning, book: impl IntoIterator<Item = &'a Alert>) -> bool {
        let held = self.latest.get(&warning.alert.id).map(|w| w.alert.version);
        if !warning.alert.state.is_active() || held.is_some_and(|v| v >= warning.alert.version) {
            return false;
        }
        let key = GroupKey {
            mode: warning.alert.mode,
            event: warning.alert.event.clone(),
            area_id: warning.alert.area_id.clone(),
        };
        let group = self.groups.entry(key.clone()).or_insert_with(Group::new);
        let contributors: BTreeSet<&str> = warning.contributors.iter().map(|c| c.alert_id.as_str()).collect();
        for alert in book {
            if contributors.contains(alert.id.as_str()) && alert.state.is_active() && alert.is_public() {
                group.members.insert(alert.id.clone(), Member { alert: alert.clone() });
                self.member_of.insert(alert.id.clone(), key.clone());
            }
        }
        let level = &warning.alert.level;
        group.level = Some((level.severity, level.index, level.name.clone()));
        group.chain = Some(Chain { last: warning.clone(), sent_ms: warning.alert.issued_ms });
        self.latest.insert(warning.alert.id.clone(), warning);
        true
    }

    /// Folds one alert change in (every change the book makes, operators' commands included) at issue time
    /// `now_ms`; returns what operators should read about it and the public versions to send now.
    pub fn observe(&mut self, alert: &Alert, now_ms: i64) -> Outcome {
        let (mut notes, warnings) = self.observe_all(std::slice::from_ref(alert), now_ms);
        Outcome { note: notes.pop().expect("one note per alert"), warnings }
    }

    /// Folds a batch of alert changes made at one instant (one batch of readings, one tick) and decides once per
    /// warning they touch, so that three rules changing together make one public version, not three. Returns one
    /// note per alert, in order, and the public versions to send.
    pub fn observe_all(&mut self, alerts: &[Alert], now_ms: i64) -> (Vec<PublicNote>, Vec<PublicWarning>) {
        let mut notes: Vec<Option<PublicNote>> = Vec::with_capacity(alerts.len());
        // Touched groups in first-touch order, with whether an operator acted on any of their alerts.
        let mut touched: Vec<(GroupKey, bool)> = Vec::new();
        let mut group_of: Vec<Option<usize>> = Vec::with_capacity(alerts.len());
        for alert in alerts {
            match self.absorb(alert) {
                Err(note) => {
                    notes.push(Some(note));
                    group_of.push(None);
                }
                Ok(key) => {
                    let act = matches!(alert.change, Change::Approved | Change::Cancelled | Change::ReportAttached);
                    let at = match touched.iter().position(|(k, _)| *k == key) {
                        Some(i) => {
                            touched[i].1 |= act;
                            i
                        }
                        None => {
                            touched.push((key, act));
                            touched.len() - 1
                        }
                    };
                    notes.push(None);
                    group_of.push(Some(at));
                }
            }
        }
        let policy = self.policy;
        let mut outcomes: Vec<PublicNote> = Vec::with_capacity(touched.len());
        let mut warnings = Vec::new();
        for (key, operator_act) in &touched {
            let Some(group) = self.groups.get_mut(key) else { continue };
            note_level_change(group, &policy, now_ms, &mut self.counters);
            let decision = decide(group, &policy, now_ms, *operator_act);
            let outcome = self.finish(key, decision, now_ms);
            outcomes.push(outcome.note);
            warnings.extend(outcome.warnings);
        }
        let notes = notes
            .into_iter()
            .zip(group_of)
            .map(|(note, at)| {
                note.or_else(|| at.and_then(|i| outcomes.get(i).cloned())).unwrap_or(PublicNote {
                    warning: None,
                    status: NoteStatus::Unchanged,
                    reason: String::new(),
                })
            })
            .collect();
        (notes, warnings)
    }

    /// Updates the alert's membership in its group; `Err` with the note when the public side has nothing to do
    /// with it.
    fn absorb(&mut self, alert: &Alert) -> Result<GroupKey, PublicNote> {
        let key = GroupKey { mode: alert.mode, event: alert.event.clone(), area_id: alert.area_id.clone() };
        let was_member = self.member_of.contains_key(&alert.id);
        let group = self.groups.entry(key.clone()).or_insert_with(Group::new);
        if alert.state.is_active() {
            if alert.is_public() {
                group.members.insert(alert.id.clone(), Member { alert: alert.clone() });
                self.member_of.insert(alert.id.clone(), key.clone());
            } else if !was_member {
                // Operators only, awaiting approval, or stale evidence: nothing public. (A member whose new version
                // is held keeps its last public version: the public keeps what it had.)
                let reason = match alert.public_release {
                    PublicRelease::Withheld => "operators only (the rule's `publish`); an operator may approve it",
                    PublicRelease::Pending => "held for an operator's approval",
                    _ => "kept from the public: its evidence is old",
                };
                if group.members.is_empty() && group.chain.is_none() && group.changes.is_empty() {
                    self.groups.remove(&key);
                }
                return Err(PublicNote { warning: None, status: NoteStatus::NotPublic, reason: reason.into() });
            }
        } else if group.members.remove(&alert.id).is_some() {
            self.member_of.remove(&alert.id);
            group.ended_by_operator = alert.state == AlertState::Cancelled;
        } else {
            return Err(PublicNote {
                warning: None,
                status: NoteStatus::NotPublic,
                reason: "ended without having been public".into(),
            });
        }
        Ok(key)
    }

    /// The housekeeping pass at issue time `now_ms`: flapping warnings that settled send their settled state once;
    /// coalesced changes whose interval has passed go out. Call it every few seconds.
    pub fn due(&mut self, now_ms: i64) -> Vec<PublicWarning> {
        let policy = self.policy;
        let keys: Vec<GroupKey> = self.groups.keys().cloned().collect();
        let mut out = Vec::new();
        for key in keys {
            let Some(group) = self.groups.get_mut(&key) else { continue };
            let mut reason = None;
            if group.flapping_since.is_some() {
                if group.changes_within(now_ms, policy.flapping_window_ms) <= policy.settled_changes {
                    group.flapping_since = None;
                    self.counters.flapping_settled += 1;
                    if group.pending {
                        reason = Some(Reason::Settled);
                    }
                }
            } else if group.pending && group.chain.as_ref().is_none_or(|c| now_ms - c.sent_ms >= policy.min_interval_ms)
            {
                reason = Some(Reason::Interval);
            }
            if let Some(reason) = reason {
                if let Some(w) = emit(group, reason, now_ms) {
                    self.record(&w);
                    out.push(w);
                }
            }
            let idle = self.groups.get(&key).is_some_and(|g| {
                g.members.is_empty()
                    && g.chain.is_none()
                    && !g.pending
                    && g.flapping_since.is_none()
                    && g.changes_within(now_ms, policy.flapping_window_ms) == 0
            });
            if idle {
                self.groups.remove(&key);
            }
        }
        out
    }

    fn finish(&mut self, key: &GroupKey, decision: Decision, now_ms: i64) -> Outcome {
        let policy = self.policy;
        let group = self.groups.get_mut(key).expect("group exists");
        let current = group.chain.as_ref().map(|c| c.last.alert.id.clone());
        let unchanged = |warning: Option<String>| Outcome {
            note: PublicNote {
                warning,
                status: NoteStatus::Unchanged,
                reason: "the public warning already says this".into(),
            },
            warnings: Vec::new(),
        };
        match decision {
            Decision::Send(reason) => match emit(group, reason, now_ms) {
                Some(w) => {
                    let note = PublicNote {
                        warning: Some(w.alert.id.clone()),
                        status: NoteStatus::Sent,
                        reason: format!("public warning {} v{} sent ({})", w.alert.id, w.alert.version, reason.words()),
                    };
                    self.record(&w);
                    Outcome { note, warnings: vec![w] }
                }
                None => unchanged(current),
            },
            Decision::Coalesce => {
                let next = group.chain.as_ref().map_or(now_ms, |c| c.sent_ms + policy.min_interval_ms);
                self.counters.coalesced += 1;
                Outcome {
                    note: PublicNote {
                        warning: current,
                        status: NoteStatus::Coalesced,
                        reason: format!(
                            "only values or contributors changed: the public hears of it at most every {} s; the \
                             latest state goes out within {} s",
                            policy.min_interval_ms / 1000,
                            (next - now_ms).max(0) / 1000
                        ),
                    },
                    warnings: Vec::new(),
                }
            }
            Decision::HoldFlapping => {
                let n = group.changes_within(now_ms, policy.flapping_window_ms);
                self.counters.held_flapping += 1;
                Outcome {
                    note: PublicNote {
                        warning: current,
                        status: NoteStatus::Flapping,
                        reason: format!(
                            "flapping: {n} level changes within {} min (more than {}); nothing goes to the public \
                             until at most {} remain within the window, then its settled state goes out once",
                            policy.flapping_window_ms / 60_000,
                            policy.flapping_changes,
                            policy.settled_changes
                        ),
                    },
                    warnings: Vec::new(),
                }
            }
            Decision::Nothing => unchanged(current),
        }
    }

    fn record(&mut self, w: &PublicWarning) {
        self.counters.sent += 1;
        self.latest.insert(w.alert.id.clone(), w.clone());
        if !w.alert.state.is_active() {
            self.ended.push_back(w.alert.id.clone());
            while self.ended.len() > RETAIN_ENDED {
                if let Some(old) = self.ended.pop_front() {
                    self.latest.remove(&old);
                }
            }
        }
    }
}

impl Reason {
    fn words(self) -> &'static str {
        match self {
            Reason::Raised => "raised",
            Reason::Level => "level changed",
            Reason::Ended => "ended",
            Reason::Operator => "an operator acted",
            Reason::Interval => "the interval passed",
            Reason::Settled => "settled after flapping",
        }
    }
}

enum Decision {
    Send(Reason),
    Coalesce,
    HoldFlapping,
    Nothing,
}

/// The group's level after a change: `None` when no public member is left.
fn level_of(group: &Group) -> Option<(Severity, usize, String)> {
    group.top().map(|a| (a.level.severity, a.level.index, a.level.name.clone()))
}

/// Counts a change of the group's level (on/off included) and starts flapping past the threshold.
fn note_level_change(group: &mut Group, policy: &UpdatePolicy, now_ms: i64, counters: &mut PublicationCounters) {
    let level = level_of(group);
    if level == group.level {
        return;
    }
    group.level = level;
    group.changes.push_back(now_ms);
    while group.changes.len() > policy.flapping_changes + 1 {
        group.changes.pop_front();
    }
    if group.flapping_since.is_none()
        && group.changes_within(now_ms, policy.flapping_window_ms) > policy.flapping_changes
    {
        group.flapping_since = Some(now_ms);
        counters.flapping_started += 1;
    }
}

fn decide(group: &mut Group, policy: &UpdatePolicy, now_ms: i64, operator_act: bool) -> Decision {
    let published = group.chain.as_ref().map(|c| &c.last);
    let top = group.top();
    // Held while flapping, whatever it is now (`due` sends the settled state if it differs from what the public has),
    // except a level above the one the public has: a storm that truly worsens while a sensor flaps must not wait
    // out the window. Flipping back and forth below that peak stays held, so this sends once per new high.
    let new_high = match (published, top) {
        (Some(p), Some(t)) => (t.level.severity, t.level.index) > (p.alert.level.severity, p.alert.level.index),
        _ => false,
    };
    if group.flapping_since.is_some() && !operator_act && !new_high {
        group.pending = content_differs(group);
        return Decision::HoldFlapping;
    }
    let significant = match (published, top) {
        (None, None) => return Decision::Nothing,
        (None, Some(_)) => Some(Reason::Raised),
        (Some(_), None) => Some(Reason::Ended),
        (Some(p), Some(t)) => {
            (p.alert.level.severity != t.level.severity || p.alert.level.name != t.level.name).then_some(Reason::Level)
        }
    };
    if operator_act {
        return Decision::Send(significant.unwrap_or(Reason::Operator));
    }
    if let Some(reason) = significant {
        return Decision::Send(reason);
    }
    let interval_passed = group.chain.as_ref().is_none_or(|c| now_ms - c.sent_ms >= policy.min_interval_ms);
    if interval_passed {
        Decision::Send(Reason::Interval)
    } else if content_differs(group) {
        group.pending = true;
        Decision::Coalesce
    } else {
        Decision::Nothing
    }
}

/// Whether what the public would get now differs from what it has.
fn content_differs(group: &Group) -> bool {
    match (&group.chain, group.top()) {
        (None, None) => false,
        (Some(c), Some(_)) => {
            let (alert, contributors) = compose(group, "", 0, 0, 0);
            !same_content(&c.last, &alert, &contributors)
        }
        _ => true,
    }
}

fn same_content(last: &PublicWarning, alert: &Alert, contributors: &[Contributor]) -> bool {
    last.alert.state.is_active() == alert.state.is_active()
        && last.alert.level == alert.level
        && last.alert.value.to_bits() == alert.value.to_bits()
        && last.alert.values == alert.values
        && last.alert.reports == alert.reports
        && last.contributors == contributors
}

/// The warning as an alert, from the group's members (`id`, `version` and times filled by the caller).
fn compose(group: &Group, id: &str, version: u32, first_issued_ms: i64, issued_ms: i64) -> (Alert, Vec<Contributor>) {
    let mut members: Vec<&Alert> = group.members.values().map(|m| &m.alert).collect();
    members.sort_by(|a, b| {
        (b.level.severity, b.level.index)
            .cmp(&(a.level.severity, a.level.index))
            .then_with(|| a.rule_id.cmp(&b.rule_id))
    });
    let contributors = members
        .iter()
        .map(|a| Contributor {
            alert_id: a.id.clone(),
            rule: a.rule_id.clone(),
            level: a.level.name.clone(),
            level_en: a.level.name_en.clone(),
            severity: a.level.severity,
            value: a.value,
            sensors: a.sensors.keys().cloned().collect(),
        })
        .collect();
    let top = group.top().expect("compose is called with members");
    let mut sensors = BTreeMap::new();
    let mut reports: Vec<ReportRef> = Vec::new();
    let mut seen_clusters = BTreeSet::new();
    for a in &members {
        for (s, l) in &a.sensors {
            sensors.insert(s.clone(), *l);
        }
        for r in &a.reports {
            if seen_clusters.insert(r.cluster.clone()) {
                reports.push(r.clone());
            }
        }
    }
    let alert = Alert {
        id: id.to_string(),
        version,
        state: if version <= 1 { AlertState::Raised } else { AlertState::Updated },
        change: Change::Raised,
        mode: top.mode,
        rule_id: top.rule_id.clone(),
        event: top.event.clone(),
        area_id: top.area_id.clone(),
        level: top.level.clone(),
        value: top.value,
        first_issued_ms,
        issued_ms,
        observed_ms: members.iter().map(|a| a.observed_ms).max().unwrap_or(0),
        stale: None,
        sensors,
        acknowledged_by: None,
        public_release: PublicRelease::NotRequired,
        released: true,
        approved_severity: None,
        approved_by: None,
        cancelled_by: None,
        comments: Vec::new(),
        values: top.values.clone(),
        reports,
    };
    (alert, contributors)
}

/// Makes the group's next public version (or its end), records it as the chain's last; `None` if it would say
/// nothing new.
fn emit(group: &mut Group, reason: Reason, now_ms: i64) -> Option<PublicWarning> {
    group.pending = false;
    match (&group.chain, group.top().is_some()) {
        (None, false) => None,
        (Some(chain), false) => {
            // The end: the last public state, ended. Cleared by the rules → CAP Update with AllClear; withdrawn by
            // an operator → CAP Cancel (see `Change::cap_msg_type`).
            let mut alert = chain.last.alert.clone();
            alert.version += 1;
            alert.issued_ms = now_ms.max(alert.issued_ms);
            let cancelled = group.ended_by_operator;
            alert.state = if cancelled { AlertState::Cancelled } else { AlertState::Cleared };
            alert.change = if cancelled { Change::Cancelled } else { Change::Cleared };
            let w = PublicWarning { alert, contributors: chain.last.contributors.clone(), reason };
            group.chain = None;
            Some(w)
        }
        (None, true) => {
            let opener = group.top().map(|a| a.id.clone()).unwrap_or_default();
            let id = format!("W-{opener}");
            let (mut alert, contributors) = compose(group, &id, 1, now_ms, now_ms);
            alert.change = Change::Raised;
            let w = PublicWarning { alert, contributors, reason };
            group.chain = Some(Chain { last: w.clone(), sent_ms: now_ms });
            Some(w)
        }
        (Some(chain), true) => {
            let last = &chain.last;
            let (mut alert, contributors) =
                compose(group, &last.alert.id, last.alert.version + 1, last.alert.first_issued_ms, now_ms);
            if same_content(last, &alert, &contributors) {
                return None;
            }
            alert.issued_ms = now_ms.max(last.alert.issued_ms);
            alert.change = match (alert.level.severity, alert.level.index)
                .cmp(&(last.alert.level.severity, last.alert.level.index))
            {
                std::cmp::Ordering::Greater => Change::Escalated,
                std::cmp::Ordering::Less => Change::DeEscalated,
                std::cmp::Ordering::Equal => Change::Updated,
            };
            let w = PublicWarning { alert, contributors, reason };
            group.chain = Some(Chain { last: w.clone(), sent_ms: now_ms });
            Some(w)
        }
    }
}

/// A map with structured keys as a JSON list of `[key, value]` pairs.
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, K: Serialize, V: Serialize>(m: &BTreeMap<K, V>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
    {
        Vec::<(K, V)>::deserialize(d).map(|v| v.into_iter().collect())
    }
}

#[cfg(test)]
mod tests;
