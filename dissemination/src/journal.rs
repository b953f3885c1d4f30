//! The journal: one append-only JSON-lines file in `data_dir` holding everything dissemination must not lose —
//! every CAP message, every delivery put in the outbox (with the CBC envelopes), every attempt's outcome, and the
//! subscribers added at run time. State is rebuilt on start by replaying it through the same `apply` the live path
//! uses, so a restart cannot disagree with what ran before.
//!
//! Durability: an alert change (message + its deliveries) is one line, written and fsynced before
//! `alert_changed` returns. Attempt outcomes are written without fsync: losing one in a power cut means a
//! delivery is sent again (at-least-once; receivers de-duplicate on `X-DC-Delivery`), never lost. Lines are
//! appended in order by one writer, so a crash loses a suffix, never a middle: a delivery is never seen as done
//! while an earlier one of the same target is not, which is what keeps per-target order across restarts.
//!
//! On start the file is compacted (rewritten to a temporary file, fsynced, renamed): attempts shrink to the last
//! one per delivery; deliveries and subscribers stay; the changes of alerts memory forgot (ended, out of the feed,
//! nothing pending: see `State::prune`) go, their messages being in the CAP archive, and their deliveries stay as
//! slim `enqueue` lines (no envelope) so delivery logs and counts survive.
//!
//! A full disk: a line that cannot be written is cut back out of the file (a fragment left there would merge with
//! the next line into one unreadable line, and the next start would refuse the journal) and kept in memory, in
//! order, ahead of anything newer; [`Journal::flush`] writes the backlog as soon as the disk takes it again (on the
//! next append, and every few seconds from the retry task in `mod.rs`). Past [`MAX_BACKLOG`] lines, attempt
//! outcomes are no longer kept (losing one only means a resend); alert changes always are.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::channel::cbc::broadcast::{BroadcastRecord, TargetingSummary};
use super::channel::webhook::subscriber::SubscriberInput;
use super::messages::StoredMessage;
use super::view::AlertView;
use super::DisseminationError;

/// File name inside `data_dir`.
pub(crate) const JOURNAL_FILE: &str = "dissemination.jsonl";

/// One line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Record {
    Change(Box<ChangeRecord>),
    /// A delivery added outside an alert change (an operator's replay).
    Enqueue {
        delivery: NewDelivery,
    },
    Attempt(AttemptRecord),
    /// The targeting report of one carrier's part of a broadcast (computed after the envelope was queued).
    Targeting {
        /// Index of the broadcast in journal order.
        broadcast: usize,
        carrier: usize,
        summary: TargetingSummary,
    },
    /// A subscriber added over the operator API.
    Subscriber {
        subscriber: SubscriberInput,
        at_ms: i64,
    },
}

/// One alert change and everything it set in motion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChangeRecord {
    pub view: AlertView,
    /// The new CAP message (None: a pure release, or no message could be built).
    pub message: Option<StoredMessage>,
    /// Earlier held messages of the alert released by this change.
    pub released: Vec<String>,
    pub deliveries: Vec<NewDelivery>,
    pub broadcasts: Vec<BroadcastRecord>,
    /// Why no message was built, for operators.
    pub error: Option<String>,
}

/// A delivery put in a target's outbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NewDelivery {
    pub id: u64,
    /// The target's name: a subscriber's, or `cbc:<carrier>` (`Channel::target_name`).
    pub target: String,
    /// The CAP message delivered.
    pub identifier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<u64>,
    /// CBC envelope (webhook bodies are rendered from the stored message when sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<String>,
    pub at_ms: i64,
    /// Alert and version of the message, written only when compaction dropped the message's own change record
    /// (its alert was forgotten; the message is in the CAP archive) so the delivery log still names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// The delivery's key, derived from what it delivers (`ledger::delivery_key`): the id receivers see in cluster
    /// mode, the same on every node that plans this delivery. None in journals from before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    Delivered,
    /// Failed; will be retried.
    Retry,
    /// Failed for the last allowed time: in the dead letters.
    Dead,
}

/// One attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AttemptRecord {
    pub id: u64,
    pub target: String,
    pub attempt: u32,
    pub at_ms: i64,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub elapsed_ms: u64,
}

/// Lines kept in memory while the disk refuses them before attempt outcomes are dropped.
pub(crate) const MAX_BACKLOG: usize = 100_000;

/// The open journal file.
pub(crate) struct Journal {
    /// The file (`durable`: one record per line, a failed write cut back out, the torn last line dropped on read).
    file: durable::Journal,
    fsync: bool,
    /// Lines not written yet (the disk refused them), oldest first, without their newline.
    backlog: std::collections::VecDeque<Vec<u8>>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DisseminationError + '_ {
    move |source| DisseminationError::Io { path: path.to_path_buf(), source }
}

impl Journal {
    /// Reads every record of `dir`'s journal (creating the folder as needed). A torn last line — a crash mid-write,
    /// even one cut inside a multi-byte character — is dropped with a warning; a bad line elsewhere is an error
    /// naming it, because skipping it could forget a message or re-send a whole outbox.
    pub fn read(dir: &Path) -> Result<Vec<Record>, DisseminationError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(JOURNAL_FILE);
        match durable::Journal::read::<Record>(&path, durable::Open::new(durable::BadLines::Refuse)) {
            Ok(replay) => Ok(replay.records.into_iter().map(|e| e.record).collect()),
            Err(durable::Error::BadLine { path, line, message, .. }) => {
                Err(DisseminationError::Journal { path, line, message })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the journal with `records` (atomically: temporary file, fsync, rename, directory fsync) and opens
    /// it for appending. Owner-only: the journal holds runtime subscribers' secrets.
    pub fn rewrite(dir: &Path, records: &[Record], fsync: bool) -> Result<Journal, DisseminationError> {
        let how = durable::Replace::DURABLE.private(true);
        let file = durable::Journal::replace(&dir.join(JOURNAL_FILE), records, how)?;
        Ok(Journal { file, fsync, backlog: Default::default() })
    }

    /// Lines waiting for the disk.
    pub fn backlog(&self) -> usize {
        self.backlog.len()
    }

    /// Writes the backlog, oldest first, and fsyncs when `durable`. Stops at the first failure (the rest stays
    /// queued, the fragment of the failed line is cut off).
    pub fn flush(&mut self, durable: bool) -> Result<(), DisseminationError> {
        let had_backlog = self.backlog.len() > 1;
        while let Some(line) = self.backlog.front() {
            self.file.append(line, false)?;
            self.backlog.pop_front();
        }
        if (durable || had_backlog) && self.fsync {
            self.file.sync()?;
        }
        if had_backlog {
            tracing::info!(path = %self.file.path().display(), "dissemination journal: the lines the disk refused are written");
        }
        Ok(())
    }

    /// Appends one record; `durable` asks for an fsync before returning (when the config allows it).
    pub fn append(&mut self, record: &Record, durable: bool) -> Result<(), DisseminationError> {
        let line = serde_json::to_vec(record).map_err(|e| DisseminationError::Journal {
            path: self.file.path().to_path_buf(),
            line: 0,
            message: e.to_string(),
        })?;
        if self.backlog.len() >= MAX_BACKLOG && matches!(record, Record::Attempt(_)) {
            return Err(DisseminationError::Io {
                path: self.file.path().to_path_buf(),
                source: std::io::Error::other("journal backlog full: attempt outcome not kept"),
            });
        }
        // One write call per line: with O_APPEND a line is never interleaved, and a crash tears at most the last.
        self.backlog.push_back(line);
        self.flush(durable)
    }
}
