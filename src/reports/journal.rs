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
//! syncing once per report in a flood. A line cut short by a crash is cut off when the journal is opened; the
//! snapshot notes the last change it holds, so a crash between writing it and emptying the journal replays nothing
//! twice.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
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
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
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
    file: File,
    /// Sequence number of the next line.
    next_seq: u64,
    /// Journal size now, and the size that triggers compaction.
    bytes: u64,
    compact_at: u64,
}

impl ClusterJournal {
    /// Loads the snapshot and replays the journal in `dir` (created if needed), then compacts.
    pub fn open(dir: &Path, policy: ClusterPolicy) -> Result<(ClusterBook, ClusterJournal, Restored), JournalError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JournalError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut restored = Restored::default();
        let snapshot_path = dir.join(SNAPSHOT);
        let (mut book, mut last_seq) = match std::fs::read(&snapshot_path) {
            Ok(bytes) => {
                let snapshot: Snapshot<Cluster> = serde_json::from_slice(&bytes)
                    .map_err(|e| JournalError::Corrupt { path: snapshot_path.clone(), message: e.to_string() })?;
                if snapshot.format != FORMAT {
                    return Err(JournalError::Corrupt {
                        path: snapshot_path,
                        message: format!("format {} (this version reads {FORMAT})", snapshot.format),
                    });
                }
                (ClusterBook::from_state(policy, snapshot.book), snapshot.seq)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (ClusterBook::new(policy), 0),
            Err(e) => return Err(JournalError::Io { path: snapshot_path, source: e }),
        };

        let journal_path = dir.join(JOURNAL);
        let file =
            OpenOptions::new().create(true).read(true).append(true).open(&journal_path).map_err(io(&journal_path))?;
        let mut reader = BufReader::new(&file);
        let mut line = Vec::new();
        let mut complete_bytes = 0u64;
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io(&journal_path))?;
            if n == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                // A write cut short by a crash: it was never answered, so it is dropped.
                restored.truncated_bytes = n as u64;
                tracing::warn!(bytes = n, file = %journal_path.display(), "report journal: torn last line cut off");
                break;
            }
            complete_bytes += n as u64;
            match serde_json::from_slice::<Line<ClusterEvent>>(&line) {
                Ok(entry) if entry.seq <= last_seq => {}
                Ok(entry) => {
                    last_seq = entry.seq;
                    match book.apply(entry.event) {
                        Ok(_) => restored.replayed += 1,
                        Err(e) => {
                            restored.skipped += 1;
                            tracing::error!(seq = entry.seq, error = %e, "report journal: change not replayed");
                        }
                    }
                }
                Err(e) => {
                    restored.skipped += 1;
                    tracing::error!(offset = complete_bytes - n as u64, error = %e, "report journal: unreadable line skipped");
                }
            }
        }
        drop(reader);
        if restored.truncated_bytes > 0 {
            file.set_len(complete_bytes).map_err(io(&journal_path))?;
        }
        restored.clusters = book.len();
        let mut journal = ClusterJournal {
            dir: dir.to_path_buf(),
            file,
            next_seq: last_seq + 1,
            bytes: complete_bytes,
            compact_at: 0,
        };
        journal.compact(&book)?;
        Ok((book, journal, restored))
    }

    /// The line for `event`, to be written with [`ClusterJournal::write`] once the event has applied (encoded first
    /// because applying consumes it).
    pub fn encode(&self, event: &ClusterEvent) -> Vec<u8> {
        let mut line = serde_json::to_vec(&Line { seq: self.next_seq, event }).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// Appends a line from [`ClusterJournal::encode`]; `durable` syncs it to disk before returning.
    pub fn write(&mut self, line: &[u8], durable: bool) -> Result<(), JournalError> {
        let path = self.dir.join(JOURNAL);
        self.file.write_all(line).map_err(|source| JournalError::Io { path: path.clone(), source })?;
        self.next_seq += 1;
        self.bytes += line.len() as u64;
        if durable {
            self.file.sync_data().map_err(|source| JournalError::Io { path, source })?;
        }
        Ok(())
    }

    /// Whether the journal has outgrown its last snapshot.
    pub fn compaction_due(&self) -> bool {
        self.bytes >= self.compact_at
    }

    /// Writes a snapshot of `book` (which must hold every change journaled so far) and empties the journal.
    pub fn compact(&mut self, book: &ClusterBook) -> Result<(), JournalError> {
        // If this fails, try again only after as much again has been written, not on every change.
        self.compact_at = self.bytes.saturating_add(MIN_COMPACT_BYTES);
        let snapshot = Snapshot { format: FORMAT, seq: self.next_seq - 1, book: book.state() };
        let bytes = serde_json::to_vec(&snapshot)
            .map_err(|e| JournalError::Corrupt { path: self.dir.join(SNAPSHOT), message: e.to_string() })?;
        let tmp = self.dir.join(format!("{SNAPSHOT}.tmp"));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JournalError::Io { path, source }
        };
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&bytes).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        let target = self.dir.join(SNAPSHOT);
        std::fs::rename(&tmp, &target).map_err(io(&target))?;
        // The rename must be on disk before the journal it replaces is emptied.
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
        let journal = self.dir.join(JOURNAL);
        self.file.set_len(0).map_err(io(&journal))?;
        self.file.sync_all().map_err(io(&journal))?;
        self.bytes = 0;
        self.compact_at = MIN_COMPACT_BYTES.max(bytes.len() as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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
            },
        );
        change(&mut book, &mut journal, ClusterEvent::Attach { id: a.clone(), alert_id: "TW-DC-1".into() });
        change(&mut book, &mut journal, ClusterEvent::Dismiss { id: b.clone(), at_ms: 50 });
        let before = views(&book);
        drop((book, journal));

        let (mut book, mut journal, restored) = ClusterJournal::open(dir.path(), policy).unwrap();
        assert_eq!((restored.clusters, restored.replayed, restored.skipped), (3, 7, 0));
        assert_eq!(views(&book), before);
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
}
