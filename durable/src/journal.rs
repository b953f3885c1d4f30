//! The append-only JSON-lines journal and its one read policy (see the crate doc for the reasons).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{io, Error};
use crate::file::{parent, replace_with, Replace};

/// What to do with a line that does not parse and is not the last (the last one is always treated as torn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadLines {
    /// Refuse to open: the line was written whole and damaged since; skipping it could lose state that later lines
    /// build on (the dissemination outbox: a forgotten message, a whole outbox sent again).
    Refuse,
    /// Skip it, log it and report it in [`Replay::skipped`]: for journals whose records stand alone (each alert
    /// transition carries the whole alert; a report cluster change applies or is refused on its own).
    Skip,
}

/// How a journal is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    pub bad_lines: BadLines,
    /// Byte offset to read from: what a checkpoint already covers is not read again. Must be at a line start.
    pub from: u64,
    /// Owner-only permissions (0600 on Unix) when the file is created.
    pub private: bool,
}

impl Open {
    pub const fn new(bad_lines: BadLines) -> Open {
        Open { bad_lines, from: 0, private: false }
    }

    pub const fn starting_at(self, from: u64) -> Open {
        Open { from, ..self }
    }

    pub const fn private(self, private: bool) -> Open {
        Open { private, ..self }
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<T> {
    /// Line number, from 1, counted from where the read started.
    pub line: usize,
    /// Byte offset of the line in the file.
    pub offset: u64,
    pub record: T,
}

/// A line skipped under [`BadLines::Skip`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub line: usize,
    pub offset: u64,
    pub error: String,
}

/// The torn last line that was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Torn {
    /// Where it started (the file's length now).
    pub offset: u64,
    /// How many bytes were cut (the line and any blank lines after it).
    pub bytes: u64,
}

/// What reading a journal found.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay<T> {
    /// Every record that parsed, in file order.
    pub records: Vec<Entry<T>>,
    /// Lines skipped under [`BadLines::Skip`].
    pub skipped: Vec<Skipped>,
    /// The last line, if it was torn and cut off.
    pub torn: Option<Torn>,
}

impl<T> Default for Replay<T> {
    fn default() -> Self {
        Replay { records: Vec::new(), skipped: Vec::new(), torn: None }
    }
}

/// An open journal: appends go to the end, one record per line, in the order they are made.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    /// Bytes of complete lines: appends start here, and a failed append is cut back to it.
    len: u64,
    /// Appended since the last fsync.
    dirty: bool,
    /// A failed append left bytes past `len` that could not be cut off yet; nothing is appended until they are.
    torn: bool,
}

fn open_append(path: &Path, private: bool) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    options.open(path)
}

impl Journal {
    /// Opens or creates the journal (and its folder) and reads every record after `how.from` under the read policy:
    /// the torn last line is cut off, a last record missing only its newline gets it, other bad lines follow
    /// `how.bad_lines`.
    pub fn open<T: DeserializeOwned>(path: &Path, how: Open) -> Result<(Journal, Replay<T>), Error> {
        let dir = parent(path);
        std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        let mut file = open_append(path, how.private).map_err(io("open", path))?;
        let (replay, len) = read_file(&mut file, path, how)?;
        Ok((Journal { file, path: path.to_path_buf(), len, dirty: false, torn: false }, replay))
    }

    /// Reads a journal under the same policy as [`Journal::open`] (cutting a torn last line) without keeping it
    /// open: for a caller that compacts on start and then [`Journal::replace`]s it. A missing file reads as empty.
    pub fn read<T: DeserializeOwned>(path: &Path, how: Open) -> Result<Replay<T>, Error> {
        let mut file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Replay::default()),
            Err(e) => return Err(io("open", path)(e)),
        };
        Ok(read_file(&mut file, path, how)?.0)
    }

    /// Replaces the journal with `records`, atomically (see [`crate::replace_with`]), and opens it for appending.
    pub fn replace<'a, T: Serialize + 'a>(
        path: &Path,
        records: impl IntoIterator<Item = &'a T>,
        how: Replace,
    ) -> Result<Journal, Error> {
        let mut encode = None;
        let written = replace_with(path, how, |out| {
            for record in records {
                if let Err(e) = serde_json::to_writer(&mut *out, record) {
                    let message = e.to_string();
                    encode = Some(e);
                    return Err(std::io::Error::other(message));
                }
                out.write_all(b"\n")?;
            }
            Ok(())
        });
        if let Some(source) = encode {
            return Err(Error::Encode { path: path.to_path_buf(), source });
        }
        written?;
        let file = open_append(path, how.private).map_err(io("open", path))?;
        let len = file.metadata().map_err(io("stat", path))?.len();
        Ok(Journal { file, path: path.to_path_buf(), len, dirty: false, torn: false })
    }

    /// Appends one record (no newline inside: serde_json never writes one) in a single write, so a crash tears at most
    /// the last line; `durable` asks for an fsync (`fdatasync`) of everything appended so far before returning.
    ///
    /// A write that fails part-way (a full disk takes what fits) is cut back to the last complete line at once: left
    /// in place, the next append would continue the fragment and make one unreadable line of two records. If the cut
    /// fails too, it is retried before the next append, which is refused until it succeeds.
    pub fn append(&mut self, record: &[u8], durable: bool) -> Result<(), Error> {
        debug_assert!(!record.contains(&b'\n'), "a journal record must be one line");
        if self.torn {
            self.file.set_len(self.len).map_err(io("cut back a failed append", &self.path))?;
            self.torn = false;
        }
        let mut line = Vec::with_capacity(record.len() + 1);
        line.extend_from_slice(record);
        line.push(b'\n');
        if let Err(e) = write_line(&mut self.file, &line) {
            self.torn = self.file.set_len(self.len).is_err();
            return Err(io("append", &self.path)(e));
        }
        self.len += line.len() as u64;
        self.dirty = true;
        if durable {
            self.sync()?;
        }
        Ok(())
    }

    /// Encodes `record` as one JSON line and appends it (see [`Journal::append`]).
    pub fn append_json<T: Serialize + ?Sized>(&mut self, record: &T, durable: bool) -> Result<(), Error> {
        let bytes = serde_json::to_vec(record).map_err(|source| Error::Encode { path: self.path.clone(), source })?;
        self.append(&bytes, durable)
    }

    /// Makes every appended record durable (`fdatasync`); nothing to do if nothing was appended since the last one.
    pub fn sync(&mut self) -> Result<(), Error> {
        if self.dirty {
            self.file.sync_data().map_err(io("fsync", &self.path))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Empties the journal (durably): after a snapshot that holds everything in it was written.
    pub fn clear(&mut self) -> Result<(), Error> {
        self.file.set_len(0).map_err(io("truncate", &self.path))?;
        self.file.sync_all().map_err(io("fsync", &self.path))?;
        self.len = 0;
        self.dirty = false;
        self.torn = false;
        Ok(())
    }

    /// Bytes of complete lines: a checkpoint taken now covers exactly these.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn write_line(file: &mut File, line: &[u8]) -> std::io::Result<()> {
    #[cfg(any(test, feature = "fault-injection"))]
    if let Some(keep) = crate::fault::take_short_append() {
        file.write_all(&line[..keep.min(line.len())])?;
        return Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "injected fault: no space left on device"));
    }
    file.write_all(line)
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

fn parse<T: DeserializeOwned>(line: &[u8]) -> Result<T, String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// The read policy (crate doc). Returns what was read and the file's length of complete lines afterwards.
fn read_file<T: DeserializeOwned>(file: &mut File, path: &Path, how: Open) -> Result<(Replay<T>, u64), Error> {
    let len = file.metadata().map_err(io("stat", path))?.len();
    if how.from > len {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            message: format!("a checkpoint covers {} bytes but the journal has only {len}", how.from),
        });
    }
    file.seek(SeekFrom::Start(how.from)).map_err(io("seek", path))?;
    let mut bytes = Vec::with_capacity((len - how.from) as usize);
    file.read_to_end(&mut bytes).map_err(io("read", path))?;

    // (start, end without the newline, terminated)
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            lines.push((start, i, true));
            start = i + 1;
        }
    }
    if start < bytes.len() {
        lines.push((start, bytes.len(), false));
    }
    let last = lines.iter().rposition(|&(s, e, _)| !is_blank(&bytes[s..e]));

    let mut replay = Replay::default();
    // Bytes (from `how.from`) to keep, and whether the kept last record needs its newline.
    let mut keep = bytes.len();
    let mut add_newline = false;
    for (i, &(s, e, terminated)) in lines.iter().enumerate() {
        let line = &bytes[s..e];
        if is_blank(line) {
            continue;
        }
        let offset = how.from + s as u64;
        match parse::<T>(line) {
            Ok(record) => {
                replay.records.push(Entry { line: i + 1, offset, record });
                add_newline = !terminated;
            }
            Err(message) if Some(i) == last => {
                let bytes_cut = (bytes.len() - s) as u64;
                tracing::warn!(path = %path.display(), line = i + 1, offset, bytes = bytes_cut, error = %message,
                    "journal: torn last line cut off");
                keep = s;
                replay.torn = Some(Torn { offset, bytes: bytes_cut });
            }
            Err(message) => match how.bad_lines {
                BadLines::Refuse => {
                    return Err(Error::BadLine { path: path.to_path_buf(), line: i + 1, offset, message });
                }
                BadLines::Skip => {
                    tracing::error!(path = %path.display(), line = i + 1, offset, error = %message,
                        "journal: unreadable line skipped");
                    replay.skipped.push(Skipped { line: i + 1, offset, error: message });
                }
            },
        }
    }
    // Blank bytes without a newline after the last record would be glued to the next append: cut them too.
    if let Some(&(s, e, false)) = lines.last() {
        if replay.torn.is_none() && is_blank(&bytes[s..e]) {
            keep = s;
        }
    }
    let mut new_len = how.from + keep as u64;
    if keep < bytes.len() {
        file.set_len(new_len).map_err(io("cut off the torn last line", path))?;
        file.sync_data().map_err(io("fsync", path))?;
    } else if add_newline {
        // Written in full but for its newline, so it may already have been acted on: keep it, end the line.
        file.seek(SeekFrom::End(0)).map_err(io("seek", path))?;
        file.write_all(b"\n").map_err(io("complete the last line", path))?;
        file.sync_data().map_err(io("fsync", path))?;
        new_len += 1;
    }
    Ok((replay, new_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Rec {
        n: u32,
        text: String,
    }

    fn rec(n: u32, text: &str) -> Rec {
        Rec { n, text: text.into() }
    }

    struct Dir(PathBuf);
    impl Dir {
        fn new(name: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!("durable-journal-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Dir(dir)
        }
        fn file(&self) -> PathBuf {
            self.0.join("j.jsonl")
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn numbers(replay: &Replay<Rec>) -> Vec<u32> {
        replay.records.iter().map(|e| e.record.n).collect()
    }

    const REFUSE: Open = Open::new(BadLines::Refuse);

    #[test]
    fn appends_read_back_and_reading_resumes_at_an_offset() {
        let dir = Dir::new("basic");
        let (mut j, replay) = Journal::open::<Rec>(&dir.file(), REFUSE).unwrap();
        assert_eq!(replay, Replay::default());
        j.append_json(&rec(1, "a"), false).unwrap();
        let after_first = j.len();
        j.append_json(&rec(2, "b"), true).unwrap();
        drop(j);
        let (j, replay) = Journal::open::<Rec>(&dir.file(), REFUSE).unwrap();
        assert_eq!(numbers(&replay), [1, 2]);
        assert_eq!((replay.records[1].line, replay.records[1].offset), (2, after_first));
        assert_eq!(j.len(), std::fs::metadata(dir.file()).unwrap().len());
        let (_, replay) = Journal::open::<Rec>(&dir.file(), REFUSE.starting_at(after_first)).unwrap();
        assert_eq!(numbers(&replay), [2]);
        let e = Journal::open::<Rec>(&dir.file(), REFUSE.starting_at(10_000)).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    }

    #[test]
    fn a_torn_last_line_is_cut_off_and_the_next_append_starts_clean() {
        let dir = Dir::new("torn");
        let (mut j, _) = Journal::open::<Rec>(&dir.file(), REFUSE).unwrap();
        j.append_json(&rec(1, "a"), true).unwrap();
        let good = j.len();
        drop(j);
        // A crash in the middle of the second write.
        OpenOptions::new().append(true).open(dir.file()).unwrap().write_all(br#"{"n":2,"te"#).unwrap();
        let (mut j, replay) = Journal::open::<Rec>(&dir.file(), REFUSE).unwrap();
        assert_eq!(numbers(&replay), [1]);
        assert_eq!(replay.torn, Some(Torn { offset: good, bytes: 10 }));
        assert_eq!(std::fs::metadata(dir.file()).unwrap().len(), good);
        j.append_json(&rec(3, "c"), true).unwrap();
        drop(j);
        let (_, replay) = Journal::open::<Rec>(&dir.file(), REFUSE).unwrap();
        assert_eq!((numbers(&replay), replay.torn), (vec![1, 3], None));
    }

    #[test]
    fn a_line_cut_inside_a_character_is_torn_not_a_failed_read() {
        let dir = Dir::new("utf8");
        let (mut j, _) = Journal::open::<Rec>(&dir.file(), REFUSE).unwrap();
        j.append_json(&rec(1, "土石流警戒"), true).unwrap();
        drop(j);
        let line = serde_json::to_vec(&rec(2, "豪雨特報")).unwrap();
        let cut = line.iter().position(|b| *b >= 0x80).unwrap() + 1; // one byte into the first character
        OpenOptions::new().append(true).open(dir.file()).unwrap().write_all(&line[..cut]).unwrap();
        let replay = Journal::read::<Rec>(&dir.file(), REFUSE).unwrap();
        assert_eq!(replay.records[0].record, rec(1, "土石流警戒"));
        assert_eq!(replay.torn.map(|t| t.bytes), Some(cut as u64));
        // Valid JSON whose last byte is cut in a string (invalid UTF-8 inside a complete-looking line) likewise.
        let mut bad = serde_json::to_vec(&rec(3, "雨")).unwrap();
        let at = bad.iter().position(|b| *b >= 0x80).unwrap();
        bad.remove(at + 1);
        OpenOptions::new().append(true).open(dir.file()).unwrap().write_all(&bad).unwrap();
        let replay = Journal::read::<Rec>(&dir.file(), REFUSE).unwrap();
        assert_eq!((numbers(&replay), replay.torn.is_some()), (vec![1], true));
    }

    #[test]
    fn a_last_record_missing_only_its_newline_is_kept_and_completed() {
        let dir = Dir::new("newline");
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(dir.file(), b"{\"n\":1,\"text\":\"a\"}\n{\"n\":2,\"text\":\"b\"}").unwrap();
        let (mut j, replay) = Journal::open::<Rec>(&dir.file(), REFUSE).unwrap();
        assert_eq!((numbers(&replay), replay.torn), (vec![1, 2], None));
        j.append_json(&rec(3, "c"), true).unwrap();
        let text = std::fs::read_to_string(dir.file()).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn bad_lines_in_the_middle_are_refused_or_skipped_as_asked() {
        let dir = Dir::new("middle");
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(dir.file(), b"{\"n\":1,\"text\":\"a\"}\n\nnot json\n{\"n\":2,\"text\":\"b\"}\n   \n").unwrap();
        let e = Journal::open::<Rec>(&dir.file(), REFUSE).unwrap_err();
        match &e {
            Error::BadLine { path, line, offset, .. } => assert_eq!((path, *line, *offset), (&dir.file(), 3, 20)),
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains("j.jsonl: line 3"), "{e}");
        let (_, replay) = Journal::open::<Rec>(&dir.file(), Open::new(BadLines::Skip)).unwrap();
        assert_eq!(numbers(&replay), [1, 2]);
        assert_eq!(replay.skipped.iter().map(|s| (s.line, s.offset)).collect::<Vec<_>>(), [(3, 20)]);
        // Nothing was cut: the bad line stays for an operator to look at; blank lines are ignored.
        assert!(std::fs::read_to_string(dir.file()).unwrap().contains("not json"));
    }

    #[test]
    fn a_failed_append_is_cut_back_so_the_next_one_loses_nothing() {
        let dir = Dir::new("short");
        let (mut j, _) = Journal::open::<Rec>(&dir.file(), REFUSE).unwrap();
        j.append_json(&rec(1, "a"), true).unwrap();
        crate::fault::short_next_append(7);
        let e = j.append_json(&rec(2, "b"), true).unwrap_err();
        assert!(matches!(&e, Error::Io { op: "append", .. }), "{e}");
        j.append_json(&rec(3, "c"), true).unwrap();
        drop(j);
        let (_, replay) = Journal::open::<Rec>(&dir.file(), REFUSE).unwrap();
        assert_eq!((numbers(&replay), replay.torn), (vec![1, 3], None));
    }

    #[test]
    fn replace_rewrites_atomically_and_keeps_appending() {
        let dir = Dir::new("replace");
        let records = [rec(1, "a"), rec(2, "b")];
        let mut j = Journal::replace(&dir.file(), &records, Replace::DURABLE.private(true)).unwrap();
        j.append_json(&rec(3, "c"), false).unwrap();
        j.sync().unwrap();
        let replay = Journal::read::<Rec>(&dir.file(), REFUSE).unwrap();
        assert_eq!(numbers(&replay), [1, 2, 3]);
        assert_eq!(Journal::read::<Rec>(&dir.0.join("missing"), REFUSE).unwrap(), Replay::default());
        j.clear().unwrap();
        assert!(j.is_empty() && std::fs::read(dir.file()).unwrap().is_empty());
    }
}
