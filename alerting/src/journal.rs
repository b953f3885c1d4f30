//! The embedded store: an append-only JSON-lines journal and atomically replaced JSON files, in one data directory.
//!
//! Files in the data dir:
//! - `alerts.journal.jsonl` — one line per alert transition (see `alert.rs`, `Record`), appended and fsynced before
//!   the transition is returned to the caller. Never rewritten: it is the audit trail operators read history from.
//! - `alerts.checkpoint.json` — the whole alert book and the journal offset it covers, so a restart replays only the
//!   tail.
//! - `engine.snapshot.json` — the rule engine's windows and levels (`engine::EngineSnapshot`), written by
//!   the caller now and then and at shutdown through `engine::save_engine_snapshot` (this module knows nothing of the
//!   engine, so it can sit under the alert book without a cycle).
//!
//! Why JSON lines rather than SQLite: the journal is written a few times a second at the worst of a typhoon (alert
//! transitions, not readings), so it needs no index; an append plus `fdatasync` is the whole durability story, a torn
//! last line after `kill -9` is easy to detect and cut, the file reads with `jq`/`grep` during an incident, and the
//! crate stays free of a C build. Checkpoints and snapshots are written to a temporary file, fsynced and renamed
//! over the old one (then the directory is fsynced), so a crash leaves either the old or the new file. The file
//! handling itself, and the read policy every journal in the workspace shares, is the `durable` crate's.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub const BOOK_JOURNAL: &str = "alerts.journal.jsonl";
pub const BOOK_CHECKPOINT: &str = "alerts.checkpoint.json";
pub const ENGINE_SNAPSHOT: &str = "engine.snapshot.json";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file layer (`durable`): names the file and the operation.
    #[error(transparent)]
    Durable(#[from] durable::Error),
}

/// Milliseconds since the Unix epoch on the wall clock: only for the `recorded_ms` of journal lines and for
/// compatibility wrappers; rules never read it.
pub fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The alert journal: a [`durable::Journal`] plus the record sequence numbers.
///
/// Read policy (`durable`'s, with [`durable::BadLines::Skip`]): every record stands alone (a transition carries the
/// alert as it was after it), so an unreadable line in the middle is skipped and reported rather than refusing to
/// start the warning service; a torn last line is cut off; a last line that parses but lost its newline was written in
/// full and may already have been broadcast, so it is kept.
#[derive(Debug)]
pub struct Journal {
    inner: durable::Journal,
    dir: PathBuf,
    /// The highest record sequence number written or replayed.
    seq: u64,
}

impl Journal {
    /// Opens or creates the journal, reading every record after `from_offset` (what the checkpoint covers).
    pub fn open<T: DeserializeOwned>(
        path: &Path,
        from_offset: u64,
    ) -> Result<(Journal, durable::Replay<T>), JournalError> {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let how = durable::Open::new(durable::BadLines::Skip).starting_at(from_offset);
        let (inner, replay) = durable::Journal::open(path, how)?;
        Ok((Journal { inner, dir, seq: 0 }, replay))
    }

    /// The next record sequence number.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The highest record sequence number written or replayed so far.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Keeps the sequence ahead of replayed records.
    pub fn observe_seq(&mut self, seq: u64) {
        self.seq = self.seq.max(seq);
    }

    /// Appends one record without fsync (call [`Journal::sync`] before the transition is returned). A failed write
    /// is cut back out of the file (see [`durable::Journal::append`]).
    pub fn append<T: Serialize>(&mut self, record: &T) -> Result<(), JournalError> {
        Ok(self.inner.append_json(record, false)?)
    }

    /// Makes appended records durable (`fdatasync`).
    pub fn sync(&mut self) -> Result<(), JournalError> {
        Ok(self.inner.sync()?)
    }

    /// Bytes of complete lines: a checkpoint taken now covers exactly these.
    pub fn offset(&self) -> u64 {
        self.inner.len()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Writes `value` as JSON to `dir/name` atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_json_atomic<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), JournalError> {
    Ok(durable::write_json(&dir.join(name), value, durable::Replace::DURABLE)?)
}

/// Reads a JSON file written by [`write_json_atomic`]; `None` if it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, JournalError> {
    Ok(durable::read_json(path)?)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dc-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn appends_replay_and_torn_tails() {
        let dir = temp_dir("tail");
        let path = dir.join("j.jsonl");
        {
            let (mut j, replay) = Journal::open::<serde_json::Value>(&path, 0).unwrap();
            assert!(replay.records.is_empty() && replay.torn.is_none());
            j.append(&serde_json::json!({"a": 1})).unwrap();
            j.append(&serde_json::json!({"a": 2})).unwrap();
            j.sync().unwrap();
        }
        // A crash in the middle of the third write.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"a\":").unwrap();
        let (mut j, replay) = Journal::open::<serde_json::Value>(&path, 0).unwrap();
        assert_eq!(replay.records.len(), 2);
        assert_eq!(replay.torn.unwrap().bytes, 5);
        j.append(&serde_json::json!({"a": 3})).unwrap();
        j.sync().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");
        // Reading from an offset skips what a checkpoint covers.
        let (_, replay) = Journal::open::<serde_json::Value>(&path, 8).unwrap();
        assert_eq!(replay.records.len(), 2);
        assert!(Journal::open::<serde_json::Value>(&path, 10_000).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn atomic_json_round_trip() {
        let dir = temp_dir("atomic");
        write_json_atomic(&dir, "x.json", &vec![1, 2, 3]).unwrap();
        let back: Option<Vec<i32>> = read_json(&dir.join("x.json")).unwrap();
        assert_eq!(back, Some(vec![1, 2, 3]));
        let none: Option<Vec<i32>> = read_json(&dir.join("missing.json")).unwrap();
        assert!(none.is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
