//! Alerts and their lifecycle: exactly one alert per hazard, keyed by rule, area and mode.
//!
//! The engine reports per-sensor (or, for zone-wide rules, per-zone) level changes as [`Finding`]s; the
//! [`AlertBook`] folds them into alerts. An alert's level is the highest level among its current contributions, so a
//! second sensor agreeing updates the alert instead of raising another, and the alert clears only when its last
//! contribution clears (the engine applies hysteresis before that).
//!
//! Life of an alert: `raised` → `updated` (changes: updated / escalated / de-escalated / acknowledged / commented /
//! approved) → `cleared` (by the rules) or `cancelled` (by an operator). A cancelled hazard stays quiet while its
//! sensors stay at or below the cancelled level; it is raised again (as a new alert) only if it gets worse, and forgets
//! the cancellation once every contribution has cleared.
//!
//! Public release is a separate flag ([`PublicRelease`]): operators see every alert at once; public channels (cell
//! broadcast, public CAP, citizens' app) take an alert only when [`Alert::is_public`] says so. Nothing but
//! [`Mode::Actual`] may be presented to the public as real: see [`Alert::is_public_real`].
//!
//! Citizen reports: an operator can raise an alert from a verified cluster of citizen reports
//! ([`AlertBook::raise_from_report`]) or attach a cluster to an alert ([`Command::AttachReport`]); the alert keeps a
//! [`ReportRef`] per cluster, which its CAP messages carry. Such an alert has no rule contributions: the rules never
//! clear it (an operator cancels it) and the engine never adopts it after a restart.
//!
//! Durability: a book opened with [`AlertBook::open`] writes every transition to an append-only JSON-lines journal
//! (see `journal.rs`) before it returns, and rebuilds itself from a checkpoint plus the journal's tail after a restart.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::journal::{self, Journal, JournalError};
use crate::types::Publish;

mod handover;
pub use handover::AlertRecord;
// The boundary types, re-exported where they always were (`alerting::alert::Severity`, …).
pub use crate::types::{Certainty, Finding, LevelInfo, Mode, Severity, Trigger, Urgency};

/// The `state` of websocket messages (`INTERFACE.md`). Finer detail is in [`Alert::change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Raised,
    Updated,
    Cleared,
    Cancelled,
}

impl AlertState {
    pub fn is_active(self) -> bool {
        matches!(self, AlertState::Raised | AlertState::Updated)
    }
}

/// What the latest transition of an alert was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Raised,
    /// Same level, different contributing sensors.
    Updated,
    Escalated,
    DeEscalated,
    Acknowledged,
    Commented,
    Approved,
    /// An operator attached a verified cluster of citizen reports.
    ReportAttached,
    Cleared,
    Cancelled,
}

impl Change {
    /// The CAP `msgType` a message for this transition carries. A hazard that is over is an `Update` whose info
    /// says `responseType` AllClear (CAP 1.2 §3.2.2: "the subject event no longer poses a threat"), as Google Public
    /// Alerts' CAP guidance prefers to a Cancel; `Cancel` ("cancels the earlier message(s)") is kept for what an
    /// operator withdraws, a warning that should not have been issued (`docs/API.md` § Ending a warning).
    pub fn cap_msg_type(self) -> encoders::cap::MsgType {
        match self {
            Change::Raised => encoders::cap::MsgType::Alert,
            Change::Cancelled => encoders::cap::MsgType::Cancel,
            _ => encoders::cap::MsgType::Update,
        }
    }

    /// Whether a message for this transition is the all-clear of a hazard that is over.
    pub fn is_all_clear(self) -> bool {
        self == Change::Cleared
    }
}

/// Whether the public channels may carry the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublicRelease {
    /// No approval needed: public at once.
    NotRequired,
    /// The approval gate holds this version until an operator approves; operators already see it.
    Pending,
    /// An operator approved it (up to the severity approved; a later escalation past it is held again).
    Approved,
    /// The rule is for operators only (`publish = "operators"`); an operator may still approve it for the public.
    Withheld,
}

/// An operator's note on an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comment {
    pub by: String,
    pub at_ms: i64,
    pub text: String,
}

/// A verified cluster of citizen reports behind an alert, as it stood when an operator raised the alert from it or
/// attached it. Public data only (it goes into CAP): no texts, no reporters, no exact positions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRef {
    /// The cluster's id (`rc-12`).
    pub cluster: String,
    /// What people reported: `flooding`, `landslide`, `road_blocked`, `building_damage`, `fire`, `people_trapped`,
    /// `other`.
    pub category: String,
    /// Reports in the cluster, and distinct reporters among them.
    pub reports: u32,
    pub reporters: u32,
    /// The cluster's H3 cell (resolution 8) and its centre: a few hundred metres coarse on purpose.
    pub cell: String,
    pub lat: f64,
    pub lon: f64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// When an operator verified the cluster.
    pub verified_ms: i64,
    /// The operator's public wording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Public URLs of the photos an operator published.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub photos: Vec<String>,
}

/// What an operator raises from a verified cluster of citizen reports ([`AlertBook::raise_from_report`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRaise {
    /// The hazard's rule id (no rule of `rules.toml` has it): one active alert per (rule id, area, mode), so a second
    /// cluster of the same kind in the same area is attached to the first one's alert, not raised again.
    pub rule_id: String,
    pub event: String,
    pub area_id: String,
    pub level: LevelInfo,
    /// Whether the approval gate holds it (`[[approval]]` of the rules file, for `event` at the chosen severity).
    pub approval_required: bool,
    pub report: ReportRef,
    /// Values for CAP templates.
    pub values: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable id, also the CAP `identifier` stem.
    pub id: String,
    /// Incremented on every transition; clients use it to detect what they missed.
    pub version: u32,
    pub state: AlertState,
    /// The latest transition, finer than `state`.
    pub change: Change,
    pub mode: Mode,
    pub rule_id: String,
    pub event: String,
    pub area_id: String,
    pub level: LevelInfo,
    pub value: f64,
    /// Issue time (our wall clock when we decided) of version 1: CAP `sent` of the first message, and in the id.
    #[serde(alias = "raised_ms")]
    pub first_issued_ms: i64,
    /// Issue time of this version: CAP `sent` (and `expires` counts from it), Atom `updated`, the `sent` of the
    /// websocket frames and the operators' map. Never the readings' time: a warning raised from a replayed or
    /// backlogged reading is still issued now, so it does not reach agencies already expired.
    #[serde(alias = "updated_ms")]
    pub issued_ms: i64,
    /// Event time: when the evidence behind this version's rule change was observed (the reading's timestamp, or
    /// the tick, forecast or partner-warning time); CAP `onset`. Operator commands leave it as it was.
    #[serde(default)]
    pub observed_ms: i64,
    /// Why this version is kept from the public channels although its rule is public: the evidence is older than
    /// the book's `stale_after` behind issue time (a replay, a gateway flushing its backlog). Operators see it; the
    /// public keeps the last version it had. The next change from fresh evidence lifts it, or an operator approves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<StaleEvidence>,
    /// Sensors currently supporting the alert, with their level index.
    pub sensors: BTreeMap<String, usize>,
    pub acknowledged_by: Option<String>,
    /// Whether the public channels may carry the current version; see [`Alert::is_public`].
    pub public_release: PublicRelease,
    /// Whether any version of this alert has been releasable to the public (so its end must be announced too).
    pub released: bool,
    /// The severity an operator approved; escalation past it is held again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comments: Vec<Comment>,
    /// CAP template values from the latest finding.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, String>,
    /// Verified clusters of citizen reports behind the alert (raised from the first, or attached by operators).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reports: Vec<ReportRef>,
}

/// Evidence too old to warn the public on its own ([`Alert::stale`]): when it was observed, how old it was when we
/// decided, and the limit it passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleEvidence {
    /// Event time of the evidence.
    pub observed_ms: i64,
    /// Issue time minus event time.
    pub age_ms: i64,
    /// The book's `stale_after` at the time.
    pub limit_ms: i64,
}

impl StaleEvidence {
    /// For operators: "evidence observed 6h 0m before issue (limit 15m): kept from the public".
    pub fn reason(&self) -> String {
        format!(
            "evidence observed {} before issue (limit {}): operators only until fresh readings confirm it or an \
             operator approves",
            human_duration(self.age_ms),
            human_duration(self.limit_ms)
        )
    }
}

/// `6h 0m`, `15m`, `42s`: durations as operators read them.
fn human_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, _) => format!("{min}m"),
        (h, min, _) => format!("{h}h {min}m"),
    }
}

impl Alert {
    /// Whether public channels (cell broadcast, public CAP feed, citizens' app) should carry this version. An
    /// alert's end (cleared/cancelled) goes out when any earlier version went out. Mode is not considered here: a
    /// drill may go public *as a drill*; use [`Alert::is_public_real`] where only real warnings belong.
    pub fn is_public(&self) -> bool {
        let releasable = matches!(self.public_release, PublicRelease::NotRequired | PublicRelease::Approved);
        if self.state.is_active() {
            releasable && self.stale.is_none()
        } else {
            self.released
        }
    }

    /// Public and real: never true for Exercise or Test alerts.
    pub fn is_public_real(&self) -> bool {
        self.mode == Mode::Actual && self.is_public()
    }
}

/// The identity of a hazard: one alert at a time per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HazardKey {
    pub rule_id: String,
    pub area_id: String,
    /// A drill never merges into a real alert for the same hazard, nor the other way round.
    pub mode: Mode,
}

/// One contributor's current level in an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub level: LevelInfo,
    pub approval_required: bool,
    pub publish: Publish,
    /// Zone-wide rules: the sensors behind the contribution.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

/// What an operator cancelled, remembered until its sensors clear so that the same hazard does not return at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suppressed {
    /// The alert's level index when cancelled; only a higher level raises the hazard again.
    pub level_index: usize,
    pub contributions: BTreeMap<String, Contribution>,
}

/// Why a transition happened (journaled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Cause {
    /// The rule engine: which rule, which contributor, what it measured, which reading (event time).
    Rule { rule: String, contributor: String, condition: Option<String>, value: f64, trigger: Trigger, ts_ms: i64 },
    /// An operator command.
    Operator { action: String, text: Option<String> },
    /// An operator raised the alert from a verified cluster of citizen reports.
    Report { cluster: String },
}

/// An operator's command on an alert.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Acknowledge,
    Comment(String),
    /// Release to the public channels an alert the gate holds (or one withheld by its rule).
    Approve,
    Cancel {
        reason: Option<String>,
    },
    /// Attach a verified cluster of citizen reports (again: its numbers are refreshed). The new version's CAP
    /// message carries it.
    AttachReport(ReportRef),
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Acknowledge => "acknowledge",
            Command::Comment(_) => "comment",
            Command::Approve => "approve",
            Command::Cancel { .. } => "cancel",
            Command::AttachReport(_) => "attach_report",
        }
    }
}

/// Why an operator command was refused. Small and matchable so the HTTP layer can map it to a status code.
#[derive(Debug, thiserror::Error)]
pub enum BookError {
    #[error("no alert `{0}`")]
    NotFound(String),
    #[error("alert `{0}` is no longer active")]
    NotActive(String),
    #[error("alert `{0}` has nothing to approve (already public)")]
    NothingToApprove(String),
    #[error("comment: {0}")]
    BadComment(&'static str),
    /// The hazard already has an active alert: attach to it instead of raising another.
    #[error("alert `{0}` is already active for this hazard and area")]
    HazardActive(String),
    #[error("alert `{0}` already has {MAX_REPORTS} clusters of citizen reports")]
    TooManyReports(String),
    /// The journal could not record the command, so it was not applied (the operator may retry).
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// What [`AlertBook::open`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Restored {
    /// Whether a checkpoint was loaded (the journal was then replayed from the checkpoint's offset).
    pub from_checkpoint: bool,
    /// Journal records applied.
    pub records: usize,
    /// Alerts active after the restore.
    pub active: usize,
    /// Bytes of an incomplete last line cut off (a crash in the middle of a write).
    pub truncated_bytes: u64,
    /// Byte offsets of lines that could not be read and were skipped (damage other than a torn last line).
    pub skipped: Vec<u64>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BookCounters {
    pub transitions: u64,
    /// Rule transitions kept in memory although the journal could not record them (disk full, I/O error).
    pub journal_errors: u64,
    /// Checkpoints that made such transitions durable after all (the journal works again).
    pub journal_recoveries: u64,
    /// Findings absorbed by a cancelled hazard.
    pub suppressed: u64,
    /// Transitions kept from the public because their evidence was older than `stale_after` ([`Alert::stale`]).
    pub stale_held: u64,
}

/// Contributor key of zone-wide findings (an empty sensor id).
const AREA: &str = "";
/// Longest operator comment, in characters.
const MAX_COMMENT_CHARS: usize = 2000;
/// Comments kept per alert; past that the journal still has them but the alert refuses more.
const MAX_COMMENTS: usize = 200;
/// Report clusters per alert: each is a CAP parameter, and a CAP message should stay small.
const MAX_REPORTS: usize = 50;
/// Default [`AlertBook::set_stale_after`]: readings more than 15 minutes behind issue time do not warn the public
/// on their own (a sensor's regular reports arrive within a few minutes; a backlog or a replay does not).
pub const DEFAULT_STALE_AFTER_MS: i64 = 15 * 60 * 1000;

/// The alerts, active and recent, with the index that keeps one alert per hazard.
#[derive(Debug)]
pub struct AlertBook {
    alerts: BTreeMap<String, Alert>,
    /// Hazard → id of its active alert.
    active: HashMap<HazardKey, String>,
    /// Per active alert: what each contributor reports.
    contributions: HashMap<String, BTreeMap<String, Contribution>>,
    /// Cancelled hazards whose sensors have not all cleared yet.
    suppressed: BTreeMap<HazardKey, Suppressed>,
    /// Ended alerts, oldest first: beyond `retain_closed` the oldest are forgotten (the journal keeps them).
    closed: VecDeque<String>,
    retain_closed: usize,
    /// Evidence older than this behind issue time raises nothing public on its own ([`Alert::stale`]).
    stale_after_ms: i64,
    /// Sequence of alert ids; survives restarts through the journal so ids are never reused.
    next_seq: u64,
    id_prefix: String,
    /// None for an in-memory book (tests, `demo` without a data dir).
    journal: Option<Journal>,
    /// Some change since the last checkpoint is not in the journal (a write failed): see [`AlertBook::needs_checkpoint`].
    unjournaled: bool,
    pub counters: BookCounters,
}

impl AlertBook {
    /// An in-memory book: nothing survives the process.
    pub fn new(id_prefix: impl Into<String>) -> Self {
        Self {
            alerts: BTreeMap::new(),
            active: HashMap::new(),
            contributions: HashMap::new(),
            suppressed: BTreeMap::new(),
            closed: VecDeque::new(),
            retain_closed: 10_000,
            stale_after_ms: DEFAULT_STALE_AFTER_MS,
            next_seq: 0,
            id_prefix: id_prefix.into(),
            journal: None,
            unjournaled: false,
            counters: BookCounters::default(),
        }
    }

    /// Opens (or creates) the durable book in `dir`: loads the checkpoint if there is one, replays the journal after
    /// it, tolerates a torn last line (cut off) and skips unreadable lines (reported), then journals every further
    /// transition with an fsync before returning it.
    pub fn open(dir: &Path, id_prefix: impl Into<String>) -> Result<(Self, Restored), JournalError> {
        let mut book = AlertBook::new(id_prefix);
        let mut restored = Restored::default();
        let checkpoint: Option<Checkpoint> = journal::read_json(&dir.join(journal::BOOK_CHECKPOINT))?;
        let mut offset = 0;
        let mut journal_seq = 0;
        if let Some(cp) = checkpoint {
            offset = cp.journal_offset;
            journal_seq = cp.journal_seq;
            book.load_checkpoint(cp);
            restored.from_checkpoint = true;
        }
        // Unreadable lines are skipped (and reported); a torn last line is cut off; a last record that lost only its
        // newline was written in full and may already have been broadcast, so it is kept (see `journal.rs`).
        let (mut journal, replay) = Journal::open::<Record>(&dir.join(journal::BOOK_JOURNAL), offset)?;
        journal.observe_seq(journal_seq);
        // The journal is in place before the replay, so every replayed record's sequence number is observed and the
        // next record continues the sequence instead of starting again from 1.
        book.journal = Some(journal);
        for entry in replay.records {
            book.replay(entry.record);
            restored.records += 1;
        }
        restored.skipped.extend(replay.skipped.iter().map(|s| s.offset));
        if let Some(torn) = replay.torn {
            restored.truncated_bytes = torn.bytes;
        }
        restored.active = book.active.len();
        Ok((book, restored))
    }

    /// Writes a checkpoint (the whole book and the journal offset it covers) so the next start replays only what
    /// follows. Call it at shutdown and now and then (hourly); the journal itself is never rewritten: it is the
    /// audit trail.
    pub fn checkpoint(&mut self) -> Result<(), JournalError> {
        let Some(journal) = &self.journal else { return Ok(()) };
        let cp = Checkpoint {
            format: 1,
            journal_offset: journal.offset(),
            journal_seq: journal.seq(),
            next_seq: self.next_seq,
            alerts: self.alerts.values().cloned().collect(),
            contributions: self.contributions.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            suppressed: self.suppressed.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            closed: self.closed.iter().cloned().collect(),
        };
        journal::write_json_atomic(journal.dir(), journal::BOOK_CHECKPOINT, &cp)?;
        if std::mem::take(&mut self.unjournaled) {
            self.counters.journal_recoveries += 1;
            tracing::info!("alert journal: checkpoint written; the transitions the journal missed are durable now");
        }
        Ok(())
    }

    /// Whether a journal write failed since the last checkpoint: those transitions live only in memory until a
    /// checkpoint succeeds, so the caller should checkpoint soon (and again, until it works).
    pub fn needs_checkpoint(&self) -> bool {
        self.unjournaled
    }

    /// How many closed alerts stay in memory (default 10 000); older ones remain in the journal.
    pub fn set_retain_closed(&mut self, n: usize) {
        self.retain_closed = n;
        self.prune();
    }

    /// How far behind issue time evidence may be observed and still warn the public on its own (default 15 min);
    /// older evidence still changes the alert, for operators, with the reason ([`Alert::stale`]).
    pub fn set_stale_after(&mut self, ms: i64) {
        self.stale_after_ms = ms.max(0);
    }

    /// Folds one finding in; returns the alert if it changed. `issued_ms` is issue time — the caller's wall clock
    /// when it decides (the book never reads a clock; a replay passes its own) — and becomes the version's CAP
    /// `sent`; the finding's `observed_ms` is event time. With a journal, the transition is on disk (fsync) before
    /// this returns; if the journal fails the alert still changes (a warning must not be lost to a full disk) and
    /// `counters.journal_errors` counts it.
    pub fn apply(&mut self, f: Finding, mode: Mode, issued_ms: i64) -> Option<Alert> {
        let changed = self.fold(f, mode, issued_ms);
        self.sync();
        changed
    }

    /// Folds many findings with a single fsync at the end: the hot path's batch form of [`AlertBook::apply`].
    pub fn apply_all(&mut self, findings: impl IntoIterator<Item = Finding>, mode: Mode, issued_ms: i64) -> Vec<Alert> {
        let changed: Vec<Alert> = findings.into_iter().filter_map(|f| self.fold(f, mode, issued_ms)).collect();
        self.sync();
        changed
    }

    /// Whether a finding's evidence is too old, at `issued_ms`, to warn the public on its own. Only readings can be:
    /// ticks (deadman, forecast expiry), forecasts, partner warnings and reloads are decided on the caller's clock.
    fn stale_evidence(&self, f: &Finding, issued_ms: i64) -> Option<StaleEvidence> {
        let age_ms = issued_ms.saturating_sub(f.observed_ms);
        (f.trigger == Trigger::Reading && f.level.is_some() && age_ms > self.stale_after_ms).then_some(StaleEvidence {
            observed_ms: f.observed_ms,
            age_ms,
            limit_ms: self.stale_after_ms,
        })
    }

    fn fold(&mut self, mut f: Finding, mode: Mode, issued_ms: i64) -> Option<Alert> {
        // Cause and effect (a road blocked near a landslide): the engine names the causing hazard by rule and
        // area; operators follow the link by alert id, so the active alert of that hazard is looked up here.
        if let (Some(rule_id), Some(area_id)) = (f.values.get("caused_by_rule"), f.values.get("caused_by_area")) {
            let cause = HazardKey { rule_id: rule_id.clone(), area_id: area_id.clone(), mode };
            if let Some(id) = self.active.get(&cause) {
                f.values.insert("caused_by".into(), id.clone());
            }
        }
        let key = HazardKey { rule_id: f.rule_id.clone(), area_id: f.area_id.clone(), mode };
        let contributor = if f.sensor_id.is_empty() { AREA.to_string() } else { f.sensor_id.clone() };
        let cause = Cause::Rule {
            rule: f.rule_id.clone(),
            contributor: contributor.clone(),
            condition: f.level.as_ref().map(|l| l.condition.clone()),
            value: f.value,
            trigger: f.trigger,
            ts_ms: f.observed_ms,
        };
        let contribution = f.level.clone().map(|level| Contribution {
            level,
            approval_required: f.approval_required,
            publish: f.publish,
            evidence: f.evidence.clone(),
        });

        // A cancelled hazard: track silently; raise again only above the cancelled level.
        if let Some(sup) = self.suppressed.get_mut(&key) {
            self.counters.suppressed += 1;
            match contribution {
                Some(c) => sup.contributions.insert(contributor, c),
                None => sup.contributions.remove(&contributor),
            };
            let top = sup.contributions.values().map(|c| c.level.index).max();
            match top {
                None => {
                    self.suppressed.remove(&key);
                    self.journal_suppression(key, None, f.observed_ms);
                    return None;
                }
                Some(top) if top <= sup.level_index => {
                    let sup = sup.clone();
                    self.journal_suppression(key, Some(sup), f.observed_ms);
                    return None;
                }
                Some(_) => {
                    // Worse than what the operator cancelled: a new alert with everything currently reporting.
                    let sup = self.suppressed.remove(&key)?;
                    self.journal_suppression(key.clone(), None, f.observed_ms);
                    return self.raise(key, sup.contributions, &f, cause, issued_ms);
                }
            }
        }

        match self.active.get(&key).cloned() {
            None => {
                let c = contribution?;
                self.raise(key, BTreeMap::from([(contributor, c)]), &f, cause, issued_ms)
            }
            Some(id) => {
                let contributions = self.contributions.entry(id.clone()).or_default();
                let before = contributions.get(&contributor).cloned();
                match contribution {
                    Some(c) => {
                        if before.as_ref() == Some(&c) {
                            return None;
                        }
                        contributions.insert(contributor, c);
                    }
                    None => {
                        before.as_ref()?;
                        contributions.remove(&contributor);
                    }
                }
                let contributions = contributions.clone();
                let stale = self.stale_evidence(&f, issued_ms);
                let alert = self.alerts.get_mut(&id)?;
                let old_level = alert.level.index;
                let old_sensors = alert.sensors.clone();
                match top_of(&contributions) {
                    None => {
                        alert.state = AlertState::Cleared;
                        alert.change = Change::Cleared;
                    }
                    Some(top) => {
                        let sensors = sensors_of(&contributions);
                        if top.level.index == old_level && sensors == old_sensors {
                            // Only a contributor's condition text changed (or the engine re-announced a level after
                            // a restart): not a transition, nothing to journal.
                            return None;
                        }
                        alert.change = match top.level.index.cmp(&old_level) {
                            std::cmp::Ordering::Greater => Change::Escalated,
                            std::cmp::Ordering::Less => Change::DeEscalated,
                            std::cmp::Ordering::Equal => Change::Updated,
                        };
                        alert.state = AlertState::Updated;
                        alert.public_release = regate(alert, top);
                        alert.level = top.level.clone();
                        alert.sensors = sensors;
                    }
                }
                alert.value = f.value;
                if !f.values.is_empty() {
                    alert.values = f.values.clone();
                }
                alert.version += 1;
                // Issue time never runs backwards between versions (a wall clock stepped back by NTP).
                alert.issued_ms = issued_ms.max(alert.issued_ms);
                alert.observed_ms = f.observed_ms;
                // Fresh evidence lifts an earlier hold; an end is never held (a public alert's end must go out).
                alert.stale = if alert.state.is_active() { stale } else { None };
                if alert.stale.is_some() {
                    self.counters.stale_held += 1;
                }
                note_release(alert);
                let alert = alert.clone();
                if !alert.state.is_active() {
                    self.active.remove(&key);
                    self.contributions.remove(&id);
                    self.closed.push_back(id.clone());
                } else {
                    self.contributions.insert(id.clone(), contributions.clone());
                }
                self.journal_transition(&alert, &contributions_if_active(&alert, contributions), cause, "rules");
                self.prune();
                Some(alert)
            }
        }
    }

    fn raise(
        &mut self,
        key: HazardKey,
        contributions: BTreeMap<String, Contribution>,
        f: &Finding,
        cause: Cause,
        issued_ms: i64,
    ) -> Option<Alert> {
        let top = top_of(&contributions)?.clone();
        let stale = self.stale_evidence(f, issued_ms);
        if stale.is_some() {
            self.counters.stale_held += 1;
        }
        self.next_seq += 1;
        // Issue time, not the reading's: ids sort by when we warned, and a replay cannot mint an id in the past.
        let id = format!("{}-{}-{:06}", self.id_prefix, issued_ms, self.next_seq);
        let public_release = match (top.publish, top.approval_required) {
            (Publish::Operators, _) => PublicRelease::Withheld,
            (Publish::Public, true) => PublicRelease::Pending,
            (Publish::Public, false) => PublicRelease::NotRequired,
        };
        let mut alert = Alert {
            id: id.clone(),
            version: 1,
            state: AlertState::Raised,
            change: Change::Raised,
            mode: key.mode,
            rule_id: key.rule_id.clone(),
            event: f.event.clone(),
            area_id: key.area_id.clone(),
            level: top.level.clone(),
            value: f.value,
            first_issued_ms: issued_ms,
            issued_ms,
            observed_ms: f.observed_ms,
            stale,
            sensors: sensors_of(&contributions),
            acknowledged_by: None,
            public_release,
            released: false,
            approved_severity: None,
            approved_by: None,
            cancelled_by: None,
            comments: Vec::new(),
            values: f.values.clone(),
            reports: Vec::new(),
        };
        note_release(&mut alert);
        self.active.insert(key, id.clone());
        self.contributions.insert(id.clone(), contributions.clone());
        self.alerts.insert(id, alert.clone());
        self.journal_transition(&alert, &contributions, cause, "rules");
        Some(alert)
    }

    /// Applies an operator command. The transition is journaled first: if the journal fails, nothing changes and the
    /// error says so (the operator can retry), unlike rule transitions which must never be lost.
    pub fn command(&mut self, id: &str, command: Command, actor: &str, at_ms: i64) -> Result<Alert, BookError> {
        let current = self.alerts.get(id).ok_or_else(|| BookError::NotFound(id.to_string()))?;
        let mut alert = current.clone();
        let active = alert.state.is_active();
        let mut text = None;
        match &command {
            Command::Acknowledge => {
                if !active {
                    return Err(BookError::NotActive(id.to_string()));
                }
                alert.acknowledged_by = Some(actor.to_string());
                alert.change = Change::Acknowledged;
            }
            Command::Comment(body) => {
                let body = body.trim();
                if body.is_empty() {
                    return Err(BookError::BadComment("empty"));
                }
                if body.chars().count() > MAX_COMMENT_CHARS {
                    return Err(BookError::BadComment("longer than 2000 characters"));
                }
                if alert.comments.len() >= MAX_COMMENTS {
                    return Err(BookError::BadComment("too many comments on this alert"));
                }
                alert.comments.push(Comment { by: actor.to_string(), at_ms, text: body.to_string() });
                alert.change = Change::Commented;
                text = Some(body.to_string());
            }
            Command::Approve => {
                if !active {
                    return Err(BookError::NotActive(id.to_string()));
                }
                if !matches!(alert.public_release, PublicRelease::Pending | PublicRelease::Withheld)
                    && alert.stale.is_none()
                {
                    return Err(BookError::NothingToApprove(id.to_string()));
                }
                // An operator vouches for old evidence: it goes public now, issued now.
                alert.stale = None;
                alert.public_release = PublicRelease::Approved;
                alert.approved_severity = Some(alert.level.severity);
                alert.approved_by = Some(actor.to_string());
                alert.change = Change::Approved;
            }
            Command::Cancel { reason } => {
                if !active {
                    return Err(BookError::NotActive(id.to_string()));
                }
                alert.state = AlertState::Cancelled;
                alert.change = Change::Cancelled;
                alert.cancelled_by = Some(actor.to_string());
                text = reason.clone();
            }
            Command::AttachReport(report) => {
                if !active {
                    return Err(BookError::NotActive(id.to_string()));
                }
                match alert.reports.iter().position(|r| r.cluster == report.cluster) {
                    Some(i) => alert.reports[i] = report.clone(),
                    None if alert.reports.len() >= MAX_REPORTS => {
                        return Err(BookError::TooManyReports(id.to_string()))
                    }
                    None => alert.reports.push(report.clone()),
                }
                alert.change = Change::ReportAttached;
                text = Some(report.cluster.clone());
            }
        }
        alert.version += 1;
        // Operator actions happen on the wall clock; never let an alert's time run backwards because the rules run
        // on event time that may be ahead.
        alert.issued_ms = at_ms.max(alert.issued_ms);
        note_release(&mut alert);
        let cause = Cause::Operator { action: command.name().to_string(), text };
        let key = HazardKey { rule_id: alert.rule_id.clone(), area_id: alert.area_id.clone(), mode: alert.mode };
        let contributions = self.contributions.get(id).cloned().unwrap_or_default();
        let journaled = if alert.state.is_active() { contributions.clone() } else { BTreeMap::new() };
        self.write_record(&Record::Transition {
            seq: 0,
            at_ms: alert.issued_ms,
            recorded_ms: journal::wall_ms(),
            actor: actor.to_string(),
            cause,
            alert: alert.clone(),
            contributions: journaled,
            suppressed: (alert.state == AlertState::Cancelled && !contributions.is_empty())
                .then(|| Suppressed { level_index: alert.level.index, contributions: contributions.clone() }),
            next_seq: self.next_seq,
        })?;
        if let Some(j) = &mut self.journal {
            j.sync()?;
        }
        if alert.state == AlertState::Cancelled {
            self.active.remove(&key);
            self.contributions.remove(id);
            if !contributions.is_empty() {
                self.suppressed.insert(key, Suppressed { level_index: alert.level.index, contributions });
            }
            self.closed.push_back(id.to_string());
        }
        self.alerts.insert(id.to_string(), alert.clone());
        self.counters.transitions += 1;
        self.prune();
        Ok(alert)
    }

    /// Raises an alert from a verified cluster of citizen reports: journaled (fsync) before it returns, like an
    /// operator command, and refused if the journal cannot record it. The alert has no contributions, so no rule
    /// finding changes it; operators acknowledge, approve and cancel it like any other.
    pub fn raise_from_report(
        &mut self,
        raise: ReportRaise,
        mode: Mode,
        actor: &str,
        at_ms: i64,
    ) -> Result<Alert, BookError> {
        let key = HazardKey { rule_id: raise.rule_id.clone(), area_id: raise.area_id.clone(), mode };
        if let Some(existing) = self.active.get(&key) {
            return Err(BookError::HazardActive(existing.clone()));
        }
        let seq = self.next_seq + 1;
        let id = format!("{}-{}-{:06}", self.id_prefix, at_ms, seq);
        let cluster = raise.report.cluster.clone();
        let mut alert = Alert {
            id: id.clone(),
            version: 1,
            state: AlertState::Raised,
            change: Change::Raised,
            mode,
            rule_id: raise.rule_id,
            event: raise.event,
            area_id: raise.area_id,
            level: raise.level,
            value: f64::from(raise.report.reports),
            first_issued_ms: at_ms,
            issued_ms: at_ms,
            // What citizens saw, as late as the cluster knows it.
            observed_ms: raise.report.last_seen_ms,
            stale: None,
            sensors: BTreeMap::new(),
            acknowledged_by: None,
            public_release: if raise.approval_required { PublicRelease::Pending } else { PublicRelease::NotRequired },
            released: false,
            approved_severity: None,
            approved_by: None,
            cancelled_by: None,
            comments: Vec::new(),
            values: raise.values,
            reports: vec![raise.report],
        };
        note_release(&mut alert);
        self.write_record(&Record::Transition {
            seq: 0,
            at_ms,
            recorded_ms: journal::wall_ms(),
            actor: actor.to_string(),
            cause: Cause::Report { cluster },
            alert: alert.clone(),
            contributions: BTreeMap::new(),
            suppressed: None,
            next_seq: seq,
        })?;
        if let Some(j) = &mut self.journal {
            j.sync()?;
        }
        self.next_seq = seq;
        self.active.insert(key, id.clone());
        self.contributions.insert(id.clone(), BTreeMap::new());
        self.alerts.insert(id, alert.clone());
        self.counters.transitions += 1;
        Ok(alert)
    }

    /// Attaches a verified cluster of citizen reports to an active alert (a new version).
    pub fn attach_report(&mut self, id: &str, report: ReportRef, actor: &str, at_ms: i64) -> Result<Alert, BookError> {
        self.command(id, Command::AttachReport(report), actor, at_ms)
    }

    /// Releases a held alert to the public channels.
    pub fn approve(&mut self, id: &str, actor: &str, at_ms: i64) -> Result<Alert, BookError> {
        self.command(id, Command::Approve, actor, at_ms)
    }

    pub fn comment(&mut self, id: &str, actor: &str, text: &str, at_ms: i64) -> Result<Alert, BookError> {
        self.command(id, Command::Comment(text.to_string()), actor, at_ms)
    }

    pub fn acknowledge_by(&mut self, id: &str, actor: &str, at_ms: i64) -> Result<Alert, BookError> {
        self.command(id, Command::Acknowledge, actor, at_ms)
    }

    /// Operator cancellation: the hazard's alert ends now, whatever the sensors say.
    pub fn cancel_by(&mut self, id: &str, actor: &str, reason: Option<&str>, at_ms: i64) -> Result<Alert, BookError> {
        self.command(id, Command::Cancel { reason: reason.map(str::to_string) }, actor, at_ms)
    }

    /// Compatibility form of [`AlertBook::acknowledge_by`] (wall-clock time, errors as `None`).
    pub fn acknowledge(&mut self, id: &str, by: &str) -> Option<Alert> {
        self.acknowledge_by(id, by, journal::wall_ms()).ok()
    }

    /// Compatibility form of [`AlertBook::cancel_by`] (actor "operator", errors as `None`).
    pub fn cancel(&mut self, id: &str, at_ms: i64) -> Option<Alert> {
        self.cancel_by(id, "operator", None, at_ms).ok()
    }

    pub fn get(&self, id: &str) -> Option<&Alert> {
        self.alerts.get(id)
    }

    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values().filter(|a| a.state.is_active())
    }

    pub fn all(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values()
    }

    /// Every contribution the book holds for `mode` (active alerts and cancelled-but-not-cleared hazards), as
    /// (rule id, area id, contributor — empty for zone-wide rules —, level index). The engine adopts these after a
    /// restart because the journal is newer than its snapshot (`RuleEngine::adopt_levels`).
    pub fn contributions(&self, mode: Mode) -> Vec<(String, String, String, usize)> {
        let mut out = Vec::new();
        for (key, id) in &self.active {
            if key.mode != mode {
                continue;
            }
            for (who, c) in self.contributions.get(id).into_iter().flatten() {
                out.push((key.rule_id.clone(), key.area_id.clone(), who.clone(), c.level.index));
            }
        }
        for (key, sup) in &self.suppressed {
            if key.mode == mode {
                for (who, c) in &sup.contributions {
                    out.push((key.rule_id.clone(), key.area_id.clone(), who.clone(), c.level.index));
                }
            }
        }
        out.sort();
        out
    }

    fn sync(&mut self) {
        if let Some(j) = &mut self.journal {
            if let Err(e) = j.sync() {
                self.counters.journal_errors += 1;
                self.unjournaled = true;
                tracing::error!(error = %e, "alert journal: fsync failed; transitions kept in memory");
            }
        }
    }

    fn journal_transition(
        &mut self,
        alert: &Alert,
        contributions: &BTreeMap<String, Contribution>,
        cause: Cause,
        actor: &str,
    ) {
        self.counters.transitions += 1;
        let record = Record::Transition {
            seq: 0,
            at_ms: alert.issued_ms,
            recorded_ms: journal::wall_ms(),
            actor: actor.to_string(),
            cause,
            alert: alert.clone(),
            contributions: contributions.clone(),
            suppressed: None,
            next_seq: self.next_seq,
        };
        if let Err(e) = self.write_record(&record) {
            self.counters.journal_errors += 1;
            self.unjournaled = true;
            tracing::error!(error = %e, id = %alert.id, "alert journal: write failed; transition kept in memory");
        }
    }

    fn journal_suppression(&mut self, key: HazardKey, suppressed: Option<Suppressed>, at_ms: i64) {
        let record = Record::Suppression { seq: 0, at_ms, recorded_ms: journal::wall_ms(), key, suppressed };
        if let Err(e) = self.write_record(&record) {
            self.counters.journal_errors += 1;
            self.unjournaled = true;
            tracing::error!(error = %e, "alert journal: write failed");
        }
    }

    fn write_record(&mut self, record: &Record) -> Result<(), JournalError> {
        let Some(journal) = &mut self.journal else { return Ok(()) };
        let seq = journal.next_seq();
        let mut record = record.clone();
        match &mut record {
            Record::Transition { seq: s, .. } | Record::Suppression { seq: s, .. } => *s = seq,
        }
        journal.append(&record)
    }

    /// Puts an alert as it stands into the book with its indexes (active per hazard, contributions, the suppression
    /// an end leaves, the closed list): what a journal replay and a cluster handover (`handover.rs`) both do.
    pub(crate) fn install(
        &mut self,
        alert: Alert,
        contributions: BTreeMap<String, Contribution>,
        suppressed: Option<Suppressed>,
    ) {
        let key = HazardKey { rule_id: alert.rule_id.clone(), area_id: alert.area_id.clone(), mode: alert.mode };
        let id = alert.id.clone();
        if alert.state.is_active() {
            self.active.insert(key, id.clone());
            self.contributions.insert(id.clone(), contributions);
        } else {
            if self.active.get(&key) == Some(&id) {
                self.active.remove(&key);
            }
            self.contributions.remove(&id);
            if let Some(sup) = suppressed {
                self.suppressed.insert(key, sup);
            }
            if !self.closed.contains(&id) {
                self.closed.push_back(id.clone());
            }
        }
        self.alerts.insert(id, alert);
        self.prune();
    }

    /// Applies one journal record during restore: the record carries the alert as it was after the transition, so
    /// replay is "last record per alert wins" and needs no rule logic.
    fn replay(&mut self, record: Record) {
        match record {
            Record::Transition { seq, alert, contributions, suppressed, next_seq, .. } => {
                if let Some(j) = &mut self.journal {
                    j.observe_seq(seq);
                }
                self.next_seq = self.next_seq.max(next_seq);
                self.install(alert, contributions, suppressed);
            }
            Record::Suppression { seq, key, suppressed, .. } => {
                if let Some(j) = &mut self.journal {
                    j.observe_seq(seq);
                }
                match suppressed {
                    Some(s) => self.suppressed.insert(key, s),
                    None => self.suppressed.remove(&key),
                };
            }
        }
    }

    fn load_checkpoint(&mut self, cp: Checkpoint) {
        self.next_seq = cp.next_seq;
        for alert in cp.alerts {
            if alert.state.is_active() {
                let key =
                    HazardKey { rule_id: alert.rule_id.clone(), area_id: alert.area_id.clone(), mode: alert.mode };
                self.active.insert(key, alert.id.clone());
            }
            self.alerts.insert(alert.id.clone(), alert);
        }
        self.contributions = cp.contributions.into_iter().collect();
        self.suppressed = cp.suppressed.into_iter().collect();
        self.closed = cp.closed.into_iter().collect();
    }

    fn prune(&mut self) {
        while self.closed.len() > self.retain_closed {
            if let Some(id) = self.closed.pop_front() {
                // Only forget it if it is still closed (ids are never reused, so this is belt and braces).
                if self.alerts.get(&id).is_some_and(|a| !a.state.is_active()) {
                    self.alerts.remove(&id);
                }
            }
        }
    }
}

/// The contribution with the highest level (ties: the first in contributor order, so the result is deterministic).
fn top_of(contributions: &BTreeMap<String, Contribution>) -> Option<&Contribution> {
    contributions.values().reduce(|best, c| if c.level.index > best.level.index { c } else { best })
}

/// Sensors supporting the alert: per-sensor contributors, and the evidence of a zone-wide contribution.
fn sensors_of(contributions: &BTreeMap<String, Contribution>) -> BTreeMap<String, usize> {
    let mut sensors = BTreeMap::new();
    for (who, c) in contributions {
        if who == AREA {
            for s in &c.evidence {
                sensors.insert(s.clone(), c.level.index);
            }
        } else {
            sensors.insert(who.clone(), c.level.index);
        }
    }
    sensors
}

fn contributions_if_active(
    alert: &Alert,
    contributions: BTreeMap<String, Contribution>,
) -> BTreeMap<String, Contribution> {
    if alert.state.is_active() {
        contributions
    } else {
        BTreeMap::new()
    }
}

/// The public-release flag after the level changed to `top`.
fn regate(alert: &Alert, top: &Contribution) -> PublicRelease {
    match alert.public_release {
        // `publish` is per rule, so it cannot change with the level: withheld stays withheld unless approved.
        PublicRelease::Withheld => PublicRelease::Withheld,
        PublicRelease::Pending | PublicRelease::NotRequired => {
            if top.approval_required {
                PublicRelease::Pending
            } else {
                PublicRelease::NotRequired
            }
        }
        PublicRelease::Approved => {
            let beyond = alert.approved_severity.is_none_or(|s| top.level.severity > s);
            if top.approval_required && beyond {
                PublicRelease::Pending
            } else {
                PublicRelease::Approved
            }
        }
    }
}

fn note_release(alert: &mut Alert) {
    if alert.is_public() {
        alert.released = true;
    }
}

/// One journal line. Built, written and dropped (or read and applied) one at a time, so the size difference between
/// the variants costs nothing worth a box.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)]
enum Record {
    /// An alert changed: the alert after the change, why, and by whom.
    Transition {
        seq: u64,
        /// Issue time of the transition (the alert's `issued_ms`); the rule cause carries the event time.
        at_ms: i64,
        /// Wall-clock time the line was written.
        recorded_ms: i64,
        /// "rules", or the operator's name.
        actor: String,
        cause: Cause,
        alert: Alert,
        /// Active alerts: the contributions after the change.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        contributions: BTreeMap<String, Contribution>,
        /// Cancellations: what is suppressed from now on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        suppressed: Option<Suppressed>,
        /// The alert-id sequence after the change.
        next_seq: u64,
    },
    /// A cancelled hazard's silent contributions changed (or it ended: `suppressed` absent).
    Suppression {
        seq: u64,
        at_ms: i64,
        recorded_ms: i64,
        key: HazardKey,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        suppressed: Option<Suppressed>,
    },
}

/// The whole book at a journal offset.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    format: u32,
    journal_offset: u64,
    /// The last journal record's sequence number at `journal_offset`: the records it covers are not replayed, so
    /// the sequence resumes from here (0 in checkpoints written before it was kept).
    #[serde(default)]
    journal_seq: u64,
    next_seq: u64,
    alerts: Vec<Alert>,
    contributions: Vec<(String, BTreeMap<String, Contribution>)>,
    suppressed: Vec<(HazardKey, Suppressed)>,
    closed: Vec<String>,
}

#[cfg(test)]
mod tests;
