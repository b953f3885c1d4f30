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
//! over the old one (then the directory is fsynced), so a crash leaves either the old or the new file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub const BOOK_JOURNAL: &str = "alerts.journal.jsonl";
pub const BOOK_CHECKPOINT: &str = "alerts.checkpoint.json";
pub const ENGINE_SNAPSHOT: &str = "engine.snapshot.json";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("encoding a journal record: {0}")]
    Encode(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io { path: path.to_path_buf(), source }
}

/// Milliseconds since the Unix epoch on the wall clock: only for the `recorded_ms` of journal lines and for
/// compatibility wrappers; rules never read it.
pub fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// One complete line read back, with its byte offset (for error reports).
#[derive(Debug)]
pub struct Line {
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// What opening a journal read: complete lines after the start offset, and an unterminated last line if any.
#[derive(Debug, Default)]
pub struct Replay {
    pub lines: Vec<Line>,
    pub tail: Option<Line>,
}

/// An append-only file of newline-terminated records.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    dir: PathBuf,
    /// Byte length of the file as far as complete lines go; appends start here.
    offset: u64,
    /// The highest record sequence number written or replayed.
    seq: u64,
    /// End of complete lines before an unterminated tail (where `truncate_tail` cuts).
    tail_start: Option<u64>,
    /// Whether something was appended since the last fsync.
    dirty: bool,
    /// A failed append left bytes past `offset` that could not be cut off yet (see [`Journal::append`]).
    torn: bool,
}

impl Journal {
    /// Opens or creates the journal, reading every line after `from_offset`.
    pub fn open(path: &Path, from_offset: u64) -> Result<(Journal, Replay), JournalError> {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        if from_offset > len {
            return Err(JournalError::Corrupt {
                path: path.into(),
                message: format!("checkpoint covers {from_offset} bytes but the journal has only {len}"),
            });
        }
        file.seek(SeekFrom::Start(from_offset)).map_err(io(path))?;
        let mut bytes = Vec::with_capacity((len - from_offset) as usize);
        file.read_to_end(&mut bytes).map_err(io(path))?;
        let mut replay = Replay::default();
        let mut start = 0usize;
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'\n' {
                let line = &bytes[start..i];
                if !line.iter().all(u8::is_ascii_whitespace) {
                    replay.lines.push(Line { offset: from_offset + start as u64, bytes: line.to_vec() });
                }
                start = i + 1;
            }
        }
        let complete = from_offset + start as u64;
        let mut tail_start = None;
        if start < bytes.len() {
            replay.tail = Some(Line { offset: complete, bytes: bytes[start..].to_vec() });
            tail_start = Some(complete);
        }
        let journal = Journal {
            file,
            path: path.to_path_buf(),
            dir,
            offset: if tail_start.is_some() { complete } else { len },
            seq: 0,
            tail_start,
            dirty: false,
            torn: false,
        };
        Ok((journal, replay))
    }

    /// The unterminated last line was a complete record: finish it with its newline.
    pub fn complete_tail(&mut self) -> Result<(), JournalError> {
        if self.tail_start.take().is_some() {
            self.file.write_all(b"\n").map_err(io(&self.path))?;
            self.offset = self.file.metadata().map_err(io(&self.path))?.len();
            self.file.sync_data().map_err(io(&self.path))?;
        }
        Ok(())
    }

    /// The unterminated last line was torn by a crash: cut it off so the next append starts a clean line.
    pub fn truncate_tail(&mut self) -> Result<(), JournalError> {
        if let Some(at) = self.tail_start.take() {
            self.file.set_len(at).map_err(io(&self.path))?;
            self.file.sync_data().map_err(io(&self.path))?;
            self.offset = at;
        }
        Ok(())
    }

    /// The next record sequence number.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Keeps the sequence ahead of replayed records.
    pub fn observe_seq(&mut self, seq: u64) {
        self.seq = self.seq.max(seq);
    }

    /// Appends one record (no newline inside: JSON from serde never has one) in a single write, so a crash leaves at
    /// most one torn line at the end.
    ///
    /// A write that fails part-way (a full disk takes what fits) is cut back to the last complete line: left in
    /// place, the next append would continue that fragment and make one unreadable line of the two records. If the
    /// cut fails too, it is retried before the next append, which is refused until it succeeds.
    pub fn append(&mut self, record: &[u8]) -> Result<(), JournalError> {
        debug_assert!(!record.contains(&b'\n'));
        if self.torn {
            self.file.set_len(self.offset).map_err(io(&self.path))?;
            self.torn = false;
        }
        let mut line = Vec::with_capacity(record.len() + 1);
        line.extend_from_slice(record);
        line.push(b'\n');
        if let Err(e) = self.file.write_all(&line) {
            self.torn = self.file.set_len(self.offset).is_err();
            return Err(io(&self.path)(e));
        }
        self.offset += line.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Makes appended records durable (`fdatasync`).
    pub fn sync(&mut self) -> Result<(), JournalError> {
        if self.dirty {
            self.file.sync_data().map_err(io(&self.path))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Bytes of complete lines: a checkpoint taken now covers exactly these.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Writes `value` as JSON to `dir/name` atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_json_atomic<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), JournalError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let bytes = serde_json::to_vec(value).map_err(|e| JournalError::Encode(e.to_string()))?;
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(&bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        // A partial temporary file on a full disk would only hold on to the space the retry needs.
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    // The rename is durable only once the directory entry is.
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
}

/// Reads a JSON file written by [`write_json_atomic`]; `None` if it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, JournalError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| JournalError::Corrupt { path: path.into(), message: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(JournalError::Io { path: path.into(), source: e }),
    }
}

#[cfg(test)]
mod tests {
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
            let (mut j, replay) = Journal::open(&path, 0).unwrap();
            assert!(replay.lines.is_empty() && replay.tail.is_none());
            j.append(b"{\"a\":1}").unwrap();
            j.append(b"{\"a\":2}").unwrap();
            j.sync().unwrap();
        }
        // A crash in the middle of the third write.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"a\":").unwrap();
        let (mut j, replay) = Journal::open(&path, 0).unwrap();
        assert_eq!(replay.lines.len(), 2);
        assert_eq!(replay.tail.as_ref().unwrap().bytes, b"{\"a\":");
        j.truncate_tail().unwrap();
        j.append(b"{\"a\":3}").unwrap();
        j.sync().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n");
        // Reading from an offset skips what a checkpoint covers.
        let (_, replay) = Journal::open(&path, 8).unwrap();
        assert_eq!(replay.lines.len(), 2);
        assert!(Journal::open(&path, 10_000).is_err());
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
