//! Clusters in the data dir, so that a restart keeps them with their operators' decisions.
//!
//! `reports/clusters.json` is a snapshot of the whole book; `reports/clusters.jsonl` has every change since, one
//! JSON line each (`{"seq":…,"event":{…}}`, a [`ClusterEvent`]). Opening replays the changes after the snapshot
//! through [`ClusterBook::apply`] — the same code that made them — then writes a fresh snapshot and empties the
//! journal. The journal is compacted the same way once it outgrows the last snapshot (at least 8 MiB), so writing
//! snapshots costs in proportion to what was written.
//!
//! Durability: an operator's decision is synced to disk before it is answered; a report is written (it survives the
//! process being killed) but not synced, so a power cut can lose the last seconds of reports — the price of not
//! syncing once per report in a flood. A line cut short by a crash is cut off when the journal is opened, and a
//! write that fails (a full disk) is cut back out at once, so the next change starts a clean line (both
//! `durable`'s); the snapshot notes the last change it holds, so a crash between writing it and emptying the
//! journal replays nothing twice. An unreadable line elsewhere is skipped and counted ([`Restored::skipped`]), as is a
//! change that no longer applies: each change stands alone, and the reports service should start.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cluster::{BookState, Cluster, ClusterBook, ClusterEvent, ClusterPolicy};

const SNAPSHOT: &str = "clusters.json";
const JOURNAL: &str = "clusters.jsonl";
/// The journal is compacted past this size, or past the last snapshot's size if that is larger.
const MIN_COMPACT_BYTES: u64 = 8 * 1024 * 1024;
const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file layer (`durable`): names the file and the operation.
    #[error(transparent)]
    Durable(#[from] durable::Error),
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    /// The photo folder could not be read at start (names the folder).
    #[error("report photos: {0}")]
    Photos(std::io::Error),
}

#[derive(Serialize, Deserialize)]
struct Snapshot<C> {
    format: u32,
    /// The last journal line the snapshot includes.
    seq: u64,
    book: BookState<C>,
}

#[derive(Serialize, Deserialize)]
struct Line<E> {
    seq: u64,
    event: E,
}

/// What opening found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Restored {
    pub clusters: usize,
    /// Journal lines applied after the snapshot.
    pub replayed: usize,
    /// Lines that could not be read or applied (logged).
    pub skipped: usize,
    /// Bytes of a last line cut short by a crash.
    pub truncated_bytes: u64,
}

/// The open journal. Owned by the report book, behind the same lock as the clusters, so lines are in the order the
/// changes were applied.
pub struct ClusterJournal {
    dir: PathBuf,
    file: durable::Journal,
    /// Sequence number of the next line.
    next_seq: u64,
    /// The journal size that triggers compaction.
    compact_at: u64,
}

impl ClusterJournal {
    /// Loads the snapshot and replays the journal in `dir` (created if needed), then compacts.
    pub fn open(dir: &Path, policy: ClusterPolicy) -> Result<(ClusterBook, ClusterJournal, Restored), JournalError> {
        let mut restored = Restored::default();
        let snapshot_path = dir.join(SNAPSHOT);
        let (mut book, mut last_seq) = match durable::read_json::<Snapshot<Cluster>>(&snapshot_path)? {
            Some(snapshot) => {
                if snapshot.format != FORMAT {
                    return Err(JournalError::Corrupt {
                        path: snapshot_path,
                        message: format!("format {} (this version reads {FORMAT})", snapshot.format),
                    });
                }
                (ClusterBook::from_state(policy, snapshot.book), snapshot.seq)
            }
            None => (ClusterBook::new(policy), 0),
        };

        let how = durable::Open::new(durable::BadLines::Skip);
        let (file, replay) = durable::Journal::open::<Line<ClusterEvent>>(&dir.join(JOURNAL), how)?;
        restored.skipped += replay.skipped.len();
        // A write cut short by a crash: it was never answered, so it is dropped (durable cut it off).
        restored.truncated_bytes = replay.torn.map_or(0, |t| t.bytes);
        for entry in replay.records {
            let entry = entry.record;
            if entry.seq <= last_seq {
                continue;
            }
            last_seq = entry.seq;
            match book.apply(entry.event) {
                Ok(_) => restored.replayed += 1,
                Err(e) => {
                    restored.skipped += 1;
                    tracing::error!(seq = entry.seq, error = %e, "report journal: change not replayed");
                }
            }
        }
        restored.clusters = book.len();
        let mut journal = ClusterJournal { dir: dir.to_path_buf(), file, next_seq: last_seq + 1, compact_at: 0 };
        journal.compact(&book)?;
        Ok((book, journal, restored))
    }

    /// The line for `event`, to be written with [`ClusterJournal::write`] once the event has applied (encoded first
    /// because applying consumes it).
    pub fn encode(&self, event: &ClusterEvent) -> Vec<u8> {
        serde_json::to_vec(&Line { seq: self.next_seq, event }).unwrap_or_default()
    }

    /// Appends a line from [`ClusterJournal::encode`]; `durable` syncs it to disk before returning. A failed write is
    /// cut back out of the file, so the next change is not lost with it.
    pub fn write(&mut self, line: &[u8], durable: bool) -> Result<(), JournalError> {
        self.file.append(line, durable)?;
        self.next_seq += 1;
        Ok(())
    }

    /// Whether the journal has outgrown its last snapshot.
    pub fn compaction_due(&self) -> bool {
        self.file.len() >= self.compact_at
    }

    /// Writes a snapshot of `book` (which must hold every change journaled so far) and empties the journal.
    pub fn compact(&mut self, book: &ClusterBook) -> Result<(), JournalError> {
        // If this fails, try again only after as much again has been written, not on every change.
        self.compact_at = self.file.len().saturating_add(MIN_COMPACT_BYTES);
        let snapshot = Snapshot { format: FORMAT, seq: self.next_seq - 1, book: book.state() };
        let target = self.dir.join(SNAPSHOT);
        let bytes = serde_json::to_vec(&snapshot)
            .map_err(|e| JournalError::Corrupt { path: target.clone(), message: e.to_string() })?;
        // Synced, directory included: the rename must be on disk before the journal it replaces is emptied.
        durable::replace(&target, &bytes, durable::Replace::DURABLE)?;
        self.file.clear()?;
        self.compact_at = MIN_COMPACT_BYTES.max(bytes.len() as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::reports::cluster::{NewReport, CLUSTER_RESOLUTION};
    use crate::reports::Category;

    fn report(lat: f64, reporter: u64, at: i64) -> ClusterEvent {
        ClusterEvent::Report(NewReport {
            lat,
            lon: 120.928,
            cell: geo_index::cell_at(lat, 120.928, CLUSTER_RESOLUTION).unwrap(),
            category: Category::Flooding,
            text: format!("water rising, says {reporter}"),
            observed_ms: None,
            received_ms: at,
            photo: None,
            reporter,
            zones: vec!["dfa-xinyi-shenmu".into()],
            flags: vec![],
        })
    }

    /// Applies and journals, as the report book does.
    fn change(book: &mut ClusterBook, journal: &mut ClusterJournal, event: ClusterEvent) -> String {
        let line = journal.encode(&event);
        let id = book.apply(event).unwrap().0.id();
        journal.write(&line, true).unwrap();
        id
    }

    fn views(book: &ClusterBook) -> Vec<serde_json::Value> {
        book.iter().map(|c| c.operator_view("snapshot")).collect()
    }

    #[test]
    fn a_reopened_book_is_the_book_that_was() {
        let dir = tempfile::tempdir().unwrap();
        let policy = ClusterPolicy::default();
        let (mut book, mut journal, restored) = ClusterJournal::open(dir.path(), policy).unwrap();
        assert_eq!(restored, Restored::default());
        let a = change(&mut book, &mut journal, report(23.5185, 1, 0));
        change(&mut book, &mut journal, report(23.5186, 2, 10));
        let b = change(&mut book, &mut journal, report(23.0, 3, 20));
        let c = change(&mut book, &mut journal, report(22.9, 4, 30));
        change(
            &mut book,
            &mut journal,
            ClusterEvent::Verify {
                id: a.clone(),
                at_ms: 40,
                summary: Some("knee-deep".into()),
                publish_photos: Some(true),
                by: Some("duty-officer-1".into()),
            },
        );
        change(&mut book, &mut journal, ClusterEvent::Attach { id: a.clone(), alert_id: "TW-DC-1".into() });
        change(&mut book, &mut journal, ClusterEvent::Dismiss { id: b.clone(), at_ms: 50, by: None });
        let before = views(&book);
        drop((book, journal));

        let (mut book, mut journal, restored) = ClusterJournal::open(dir.path(), policy).unwrap();
        assert_eq!((restored.clusters, restored.replayed, restored.skipped), (3, 7, 0));
        assert_eq!(views(&book), before);
        assert_eq!(before.iter().find(|v| v["id"] == a.as_str()).unwrap()["decided_by"], "duty-officer-1");
        // Clustering goes on where it stopped: a report next to the verified cluster joins it, one next to the
        // dismissed one opens a new cluster, and no id is reused.
        let joined = change(&mut book, &mut journal, report(23.5185, 5, 60));
        assert_eq!(joined, a);
        let fresh = change(&mut book, &mut journal, report(23.0, 6, 70));
        assert!(![a.clone(), b.clone(), c.clone()].contains(&fresh), "{fresh}");
        let before = views(&book);
        drop((book, journal));

        // Opened twice more (snapshot only, then with a torn line): the same book each time.
        let (book, journal, restored) = ClusterJournal::open(dir.path(), policy).unwrap();
        assert_eq!((restored.replayed, views(&book)), (2, before.clone()));
        drop((book, journal));
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL))
            .unwrap()
            .write_all(br#"{"seq":999,"event":{"type":"dism"#)
            .unwrap();
        let (book, _, restored) = ClusterJournal::open(dir.path(), policy).unwrap();
        assert!(restored.truncated_bytes > 0);
        assert_eq!(views(&book), before);
    }

    #[test]
    fn lines_already_in_the_snapshot_are_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let policy = ClusterPolicy::default();
        let (mut book, mut journal, _) = ClusterJournal::open(dir.path(), policy).unwrap();
        change(&mut book, &mut journal, report(23.5185, 1, 0));
        let line = journal.encode(&report(23.5185, 2, 5));
        book.apply(report(23.5185, 2, 5)).unwrap();
        journal.write(&line, true).unwrap();
        // A crash after the snapshot was written but before the journal was emptied.
        let kept = std::fs::read(dir.path().join(JOURNAL)).unwrap();
        journal.compact(&book).unwrap();
        std::fs::write(dir.path().join(JOURNAL), kept).unwrap();
        let (book, _, restored) = ClusterJournal::open(dir.path(), policy).unwrap();
        assert_eq!(restored.replayed, 0);
        assert_eq!(book.iter().next().unwrap().count, 2);
    }

    /// A write the disk refuses part-way (a full disk takes what fits) used to leave its fragment in the file: the
    /// next change was appended to it, the two made one unreadable line, and the next start lost that change too.
    /// A full disk cannot be made in a test without root-only mounts, so the short write is injected into
    /// `durable`'s append, the code that must notice it.
    #[test]
    fn a_failed_write_does_not_take_the_next_change_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let policy = ClusterPolicy::default();
        let (mut book, mut journal, _) = ClusterJournal::open(dir.path(), policy).unwrap();
        change(&mut book, &mut journal, report(23.5185, 1, 0));
        // Applied in memory, but its line only half written.
        let event = report(23.0, 2, 10);
        let line = journal.encode(&event);
        book.apply(event).unwrap();
        durable::fault::short_next_append(line.len() / 2);
        assert!(journal.write(&line, true).is_err());
        change(&mut book, &mut journal, report(22.9, 3, 20));
        drop((book, journal));

        let (book, journal, restored) = ClusterJournal::open(dir.path(), policy).unwrap();
        assert_eq!((restored.replayed, restored.skipped, restored.truncated_bytes), (2, 0, 0));
        // Compared by the reports' texts: cluster ids are handed out in apply order, so without the failed change
        // the third report's cluster is numbered one lower after the restart.
        let texts = serde_json::Value::Array(views(&book)).to_string();
        assert!(texts.contains("says 1") && texts.contains("says 3"), "{texts}");
        // The failed change itself is not in the journal (its caller was told); it stayed in memory, and the
        // snapshot taken at the next compaction would have held it.
        assert!(!texts.contains("says 2"), "{texts}");
        drop((book, journal));
    }

    #[test]
    fn decisions_journaled_before_names_were_recorded_still_load() {
        let old: Line<ClusterEvent> = serde_json::from_str(
            r#"{"seq":4,"event":{"type":"verify","id":"rc-1","at_ms":40,"summary":null,"publish_photos":null}}"#,
        )
        .unwrap();
        assert!(matches!(old.event, ClusterEvent::Verify { by: None, .. }), "{:?}", old.event);
        let old: Line<ClusterEvent> =
            serde_json::from_str(r#"{"seq":5,"event":{"type":"dismiss","id":"rc-2","at_ms":50}}"#).unwrap();
        assert!(matches!(old.event, ClusterEvent::Dismiss { by: None, .. }), "{:?}", old.event);
    }
}
