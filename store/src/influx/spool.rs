//! The on-disk spool: line protocol the server has not acknowledged yet, kept across outages and restarts.
//!
//! Layout of `<data_dir>/influx-spool/`:
//! - `seg-<seq>-<created_ms>.lp`: append-only segments of plain line protocol, one reading per line, oldest `seq`
//!   first. Plain text on purpose: an operator can inspect a segment or replay it by hand with `curl --data-binary`.
//!   A segment is closed ("sealed") when it reaches `spool_segment_bytes` or when replay reaches it; only the newest
//!   segment is ever written to, so only it can end in a torn line after a crash, and opening truncates that line.
//! - `cursor`: `<seq> <offset>`, how much of the oldest segment the server has acknowledged, rewritten (write +
//!   rename, `durable` without fsync) after every acknowledged chunk, so a restart resends nothing that arrived.
//!   Not fsynced: that would be an fsync per chunk, and a power cut that loses the newest cursor only resends
//!   points InfluxDB already has (same series and timestamp: it overwrites, nothing doubles).
//! - `LOCK`: held (advisory lock) while a sink uses the folder: two sinks on one spool would resend each other's data.
//!
//! Replay hands out chunks in order and may have several in flight; the cursor only moves past a chunk once every
//! chunk before it is acknowledged, and a failed chunk is resent before anything newer.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::{SpoolFullPolicy, StoreError};

const CURSOR: &str = "cursor";
const LOCK: &str = "LOCK";

/// A run of whole lines from one segment, sent as one write request.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub id: u64,
    seq: u64,
    start: u64,
    end: u64,
    pub body: Bytes,
    pub lines: usize,
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    created_ms: i64,
    path: PathBuf,
    /// Bytes in the file (final once sealed).
    bytes: u64,
}

#[derive(Debug)]
struct Issued {
    id: u64,
    seq: u64,
    end: u64,
    bytes: u64,
    done: bool,
}

/// What became of a batch handed to [`Spool::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Stored; `dropped_points` older points were deleted to make room (policy `drop_oldest`).
    Stored { dropped_points: u64 },
    /// Not stored: the spool is full and the policy keeps the oldest, or the batch alone exceeds the cap.
    Refused,
}

/// What opening an existing spool found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    pub segments: usize,
    pub bytes: u64,
    /// Incomplete last lines cut off the newest segment (a crash in the middle of an append).
    pub torn_lines: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    policy: SpoolFullPolicy,
    /// Oldest first; only the last can be open for appending.
    segments: VecDeque<Segment>,
    /// The last segment's file while it is open for appending.
    active: Option<File>,
    next_seq: u64,
    /// Bytes of the oldest segment the server has acknowledged (what `cursor` records).
    acked: u64,
    /// Bytes in all segments not yet acknowledged: the spool's size as `/metrics` shows it.
    pending: u64,
    /// The segment replay is reading: its sequence number, contents and the offset of the next chunk.
    reading: Option<(u64, Bytes, u64)>,
    /// Highest sequence number replay has finished handing out (0: none yet).
    issued_through: u64,
    /// Chunks handed out and not yet folded into `acked`, in order.
    issued: VecDeque<Issued>,
    /// Failed chunks waiting to be sent again, in order; they go before anything new.
    resend: VecDeque<Chunk>,
    next_id: u64,
    dirty_since: Option<Instant>,
    /// Held for the lifetime of the spool: the advisory lock on `LOCK`.
    _lock: File,
}

impl Spool {
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
        policy: SpoolFullPolicy,
    ) -> Result<(Spool, Recovered), StoreError> {
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io(&lock_path, e))?;
        lock.try_lock()
            .map_err(|_| StoreError::Config(format!("{}: another InfluxDB sink is using this spool", dir.display())))?;

        let mut segments = Vec::new();
        let entries = fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(dir, e))?;
            let name = entry.file_name();
            let Some((seq, created_ms)) = name.to_str().and_then(parse_segment_name) else { continue };
            let path = entry.path();
            let bytes = entry.metadata().map_err(|e| StoreError::io(&path, e))?.len();
            segments.push(Segment { seq, created_ms, path, bytes });
        }
        segments.sort_by_key(|s| s.seq);
        let (cursor_seq, cursor_offset) = read_cursor(&dir.join(CURSOR));

        let mut recovered = Recovered::default();
        // Only the newest segment was being appended to, so only it can end mid-line.
        if let Some(last) = segments.last_mut() {
            let data = fs::read(&last.path).map_err(|e| StoreError::io(&last.path, e))?;
            if data.last().is_some_and(|b| *b != b'\n') {
                let keep = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                let file =
                    OpenOptions::new().write(true).open(&last.path).map_err(|e| StoreError::io(&last.path, e))?;
                file.set_len(keep as u64).map_err(|e| StoreError::io(&last.path, e))?;
                recovered.torn_lines = 1;
                last.bytes = keep as u64;
            }
        }

        let mut spool = Spool {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes,
            policy,
            segments: VecDeque::new(),
            active: None,
            next_seq: segments.last().map_or(0, |s| s.seq).max(cursor_seq) + 1,
            acked: 0,
            pending: 0,
            reading: None,
            issued_through: 0,
            issued: VecDeque::new(),
            resend: VecDeque::new(),
            next_id: 0,
            dirty_since: None,
            _lock: lock,
        };
        for seg in segments {
            // Segments before the cursor's were fully acknowledged; the crash came between the ack and the delete.
            if seg.seq < cursor_seq || seg.bytes == 0 {
                remove_file_logged(&seg.path);
                continue;
            }
            spool.segments.push_back(seg);
        }
        if let Some(head) = spool.segments.front() {
            if head.seq == cursor_seq {
                spool.acked = cursor_offset.min(head.bytes);
            }
        }
        spool.pending = spool.segments.iter().map(|s| s.bytes).sum::<u64>() - spool.acked;
        spool.pop_finished_head();
        recovered.segments = spool.segments.len();
        recovered.bytes = spool.pending;
        Ok((spool, recovered))
    }

    /// Nothing waits to be sent or acknowledged.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Unacknowledged bytes.
    pub fn bytes(&self) -> u64 {
        self.pending
    }

    /// Age in seconds of the oldest segment at wall time `now_ms` (0 when empty).
    pub fn age_s(&self, now_ms: i64) -> i64 {
        self.segments.front().map_or(0, |s| ((now_ms - s.created_ms) / 1000).max(0))
    }

    /// Appends whole lines (`data` ends with `\n`), stamping a new segment with `now_ms`. Enforces the cap first.
    pub fn append(&mut self, data: &[u8], now_ms: i64) -> Result<Appended, StoreError> {
        let len = data.len() as u64;
        if len > self.max_bytes {
            return Ok(Appended::Refused);
        }
        let mut dropped_points = 0;
        while self.pending + len > self.max_bytes {
            match self.policy {
                SpoolFullPolicy::DropNewest => return Ok(Appended::Refused),
                SpoolFullPolicy::DropOldest => match self.drop_head()? {
                    Some(points) => dropped_points += points,
                    None => break,
                },
            }
        }
        let roll = match (self.active.is_some(), self.segments.back()) {
            (true, Some(last)) => last.bytes > 0 && last.bytes + len > self.segment_bytes,
            _ => true,
        };
        if roll {
            self.seal()?;
            let seq = self.next_seq;
            self.next_seq += 1;
            let path = self.dir.join(format!("seg-{seq:020}-{now_ms}.lp"));
            let file =
                OpenOptions::new().create_new(true).append(true).open(&path).map_err(|e| StoreError::io(&path, e))?;
            self.segments.push_back(Segment { seq, created_ms: now_ms, path, bytes: 0 });
            self.active = Some(file);
        }
        let (Some(file), Some(seg)) = (self.active.as_mut(), self.segments.back_mut()) else {
            return Err(StoreError::Config("spool has no open segment".into()));
        };
        if let Err(e) = file.write_all(data) {
            // A partial write leaves a torn tail; sealing here means the next append starts a clean segment, and the
            // torn line is cut when the spool is next opened.
            let path = seg.path.clone();
            self.active = None;
            return Err(StoreError::io(path, e));
        }
        seg.bytes += len;
        self.pending += len;
        self.dirty_since.get_or_insert_with(Instant::now);
        Ok(Appended::Stored { dropped_points })
    }

    /// Forces appended data to disk once it has waited `after` (a process crash loses nothing written; this bounds
    /// what an OS crash or power cut can lose without an fsync per batch).
    pub fn sync_if_older(&mut self, after: Duration) {
        if self.dirty_since.is_some_and(|t| t.elapsed() >= after) {
            self.sync();
        }
    }

    pub fn sync(&mut self) {
        if let Some(file) = &self.active {
            if let Err(e) = file.sync_data() {
                tracing::warn!(error = %e, "influx spool: fsync failed");
            }
        }
        self.dirty_since = None;
    }

    fn seal(&mut self) -> Result<(), StoreError> {
        if self.active.is_some() {
            self.sync();
            self.active = None;
        }
        Ok(())
    }

    /// Whether [`Self::next_chunk`] would have something to hand out.
    pub fn has_unsent(&self) -> bool {
        !self.resend.is_empty() || self.reading.is_some() || self.segments.iter().any(|s| s.seq > self.issued_through)
    }

    /// The next chunk to send: a failed one again, or up to `max_lines` lines / `max_bytes` bytes (at least one line)
    /// of new data in order.
    pub fn next_chunk(&mut self, max_lines: usize, max_bytes: usize) -> Result<Option<Chunk>, StoreError> {
        if let Some(chunk) = self.resend.pop_front() {
            return Ok(Some(chunk));
        }
        loop {
            if self.reading.is_none() {
                let Some(idx) = self.segments.iter().position(|s| s.seq > self.issued_through) else {
                    return Ok(None);
                };
                // Replay never reads a file still being appended to: sealing it sends new batches to a new segment.
                if idx + 1 == self.segments.len() {
                    self.seal()?;
                }
                let seg = &self.segments[idx];
                let data = Bytes::from(fs::read(&seg.path).map_err(|e| StoreError::io(&seg.path, e))?);
                let start = if idx == 0 { self.acked } else { 0 };
                self.reading = Some((seg.seq, data, start));
            }
            let Some((seq, data, pos)) = self.reading.as_mut() else { continue };
            let start = *pos as usize;
            let rest = data.get(start..).unwrap_or_default();
            let mut lines = 0;
            let mut end = start;
            for (i, b) in rest.iter().enumerate() {
                if *b == b'\n' {
                    lines += 1;
                    end = start + i + 1;
                    if lines >= max_lines || end - start >= max_bytes {
                        break;
                    }
                }
            }
            if lines == 0 {
                // This segment is all handed out (a sealed segment ends in a newline, so nothing is left behind).
                self.issued_through = *seq;
                self.reading = None;
                continue;
            }
            *pos = end as u64;
            let id = self.next_id;
            self.next_id += 1;
            let chunk =
                Chunk { id, seq: *seq, start: start as u64, end: end as u64, body: data.slice(start..end), lines };
            self.issued.push_back(Issued {
                id,
                seq: chunk.seq,
                end: chunk.end,
                bytes: chunk.end - chunk.start,
                done: false,
            });
            return Ok(Some(chunk));
        }
    }

    /// The server took (or definitively refused) this chunk: it need never be sent again.
    pub fn ack(&mut self, id: u64) -> Result<(), StoreError> {
        if let Some(entry) = self.issued.iter_mut().find(|e| e.id == id) {
            entry.done = true;
        }
        self.fold_acknowledged()
    }

    /// The request failed: the chunk goes back to be sent first when the server is reachable again.
    pub fn nack(&mut self, chunk: Chunk) {
        // A chunk whose segment was dropped meanwhile (spool cap) is forgotten with it.
        if !self.issued.iter().any(|e| e.id == chunk.id) {
            return;
        }
        let at = self.resend.iter().position(|c| c.id > chunk.id).unwrap_or(self.resend.len());
        self.resend.insert(at, chunk);
    }

    /// Moves the cursor past every acknowledged chunk at the front, deleting finished segments.
    fn fold_acknowledged(&mut self) -> Result<(), StoreError> {
        let mut moved = false;
        while self.issued.front().is_some_and(|e| e.done) {
            let Some(entry) = self.issued.pop_front() else { break };
            if self.segments.front().is_some_and(|s| s.seq == entry.seq) {
                self.acked = entry.end;
                self.pending -= entry.bytes;
                moved = true;
                self.pop_finished_head();
            }
        }
        if moved {
            self.write_cursor()?;
        }
        Ok(())
    }

    /// Deletes the oldest segment if it is sealed and fully acknowledged.
    fn pop_finished_head(&mut self) {
        let finished = self
            .segments
            .front()
            .is_some_and(|head| head.bytes == self.acked && !(self.segments.len() == 1 && self.active.is_some()));
        if finished {
            if let Some(head) = self.segments.pop_front() {
                remove_file_logged(&head.path);
            }
            self.acked = 0;
        }
    }

    /// Deletes the oldest segment to make room; returns the points lost, or None when there is nothing to delete.
    fn drop_head(&mut self) -> Result<Option<u64>, StoreError> {
        let Some(head) = self.segments.pop_front() else { return Ok(None) };
        if self.segments.is_empty() {
            self.active = None;
        }
        let unsent = match &self.reading {
            Some((seq, data, _)) if *seq == head.seq => {
                count_lines(data.get(self.acked as usize..).unwrap_or_default())
            }
            _ => match fs::read(&head.path) {
                Ok(data) => count_lines(data.get(self.acked as usize..).unwrap_or_default()),
                Err(e) => {
                    tracing::warn!(error = %e, path = %head.path.display(), "influx spool: cannot count dropped segment");
                    0
                }
            },
        };
        if self.reading.as_ref().is_some_and(|(seq, _, _)| *seq == head.seq) {
            self.reading = None;
        }
        self.issued_through = self.issued_through.max(head.seq);
        self.issued.retain(|e| e.seq != head.seq);
        self.resend.retain(|c| c.seq != head.seq);
        self.pending -= head.bytes - self.acked;
        self.acked = 0;
        remove_file_logged(&head.path);
        tracing::warn!(
            segment = %head.path.display(),
            points = unsent,
            cap_bytes = self.max_bytes,
            "influx spool full: dropped the oldest segment"
        );
        // Chunks of the next segment may already be acknowledged behind the dropped ones.
        self.fold_acknowledged()?;
        Ok(Some(unsent))
    }

    fn write_cursor(&self) -> Result<(), StoreError> {
        let (seq, offset) = self.segments.front().map_or((self.next_seq - 1, 0), |s| (s.seq, self.acked));
        let cursor = format!("{seq} {offset}\n");
        Ok(durable::replace(&self.dir.join(CURSOR), cursor.as_bytes(), durable::Replace::DURABLE.sync(false))?)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.sync();
    }
}

fn parse_segment_name(name: &str) -> Option<(u64, i64)> {
    let rest = name.strip_prefix("seg-")?.strip_suffix(".lp")?;
    let (seq, created) = rest.split_once('-')?;
    Some((seq.parse().ok()?, created.parse().ok()?))
}

/// A missing or unreadable cursor means "nothing acknowledged": at worst some lines are sent twice, never lost.
fn read_cursor(path: &Path) -> (u64, u64) {
    let Ok(text) = fs::read_to_string(path) else { return (0, 0) };
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    match (parts.next(), parts.next()) {
        (Some(Ok(seq)), Some(Ok(offset))) => (seq, offset),
        _ => {
            tracing::warn!(path = %path.display(), "influx spool: unreadable cursor, replaying the oldest segment whole");
            (0, 0)
        }
    }
}

fn count_lines(data: &[u8]) -> u64 {
    data.iter().filter(|b| **b == b'\n').count() as u64
}

fn remove_file_logged(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(error = %e, path = %path.display(), "influx spool: cannot delete segment");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn lines(range: std::ops::Range<usize>) -> Vec<u8> {
        range.map(|i| format!("m,s=a v={i} {i}\n")).collect::<String>().into_bytes()
    }

    fn drain(spool: &mut Spool, max_lines: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = spool.next_chunk(max_lines, usize::MAX).unwrap() {
            out.extend_from_slice(&c.body);
            spool.ack(c.id).unwrap();
        }
        out
    }

    #[test]
    fn replays_in_order_across_segments_and_empties() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, rec) = Spool::open(dir.path(), MB, 200, SpoolFullPolicy::DropOldest).unwrap();
        assert_eq!(rec, Recovered::default());
        let mut all = Vec::new();
        for k in 0..20 {
            let b = lines(k * 10..k * 10 + 10);
            spool.append(&b, 1000).unwrap();
            all.extend(b);
        }
        assert!(spool.segments.len() > 5);
        assert_eq!(spool.bytes(), all.len() as u64);
        assert_eq!(drain(&mut spool, 7), all);
        assert!(spool.is_empty());
        assert_eq!(spool.bytes(), 0);
        assert_eq!(
            fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("seg-"))
                .count(),
            0
        );
    }

    #[test]
    fn out_of_order_acks_and_resend_keep_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), MB, 1000, SpoolFullPolicy::DropOldest).unwrap();
        let data = lines(0..100);
        spool.append(&data, 0).unwrap();
        let a = spool.next_chunk(10, usize::MAX).unwrap().unwrap();
        let b = spool.next_chunk(10, usize::MAX).unwrap().unwrap();
        let c = spool.next_chunk(10, usize::MAX).unwrap().unwrap();
        spool.ack(b.id).unwrap();
        spool.nack(a.clone());
        spool.ack(c.id).unwrap();
        assert_eq!(spool.acked, 0, "the cursor waits for the first chunk");
        let again = spool.next_chunk(10, usize::MAX).unwrap().unwrap();
        assert_eq!(again.id, a.id);
        spool.ack(again.id).unwrap();
        assert_eq!(spool.acked, c.end);
        let mut got = a.body.to_vec();
        got.extend_from_slice(&b.body);
        got.extend_from_slice(&c.body);
        got.extend(drain(&mut spool, 10));
        assert_eq!(got, data);
    }

    #[test]
    fn restart_resumes_at_the_cursor_and_cuts_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let data = lines(0..50);
        let first_chunk;
        {
            let (mut spool, _) = Spool::open(dir.path(), MB, MB, SpoolFullPolicy::DropOldest).unwrap();
            spool.append(&data, 0).unwrap();
            let c = spool.next_chunk(20, usize::MAX).unwrap().unwrap();
            first_chunk = c.body.len();
            spool.ack(c.id).unwrap();
            // A second run of appends whose last line was cut by a crash.
            spool.append(b"m,s=a v=1 1000\nm,s=a v=2 10", 0).unwrap();
        }
        let (mut spool, rec) = Spool::open(dir.path(), MB, MB, SpoolFullPolicy::DropOldest).unwrap();
        assert_eq!(rec.torn_lines, 1);
        let mut expect = data[first_chunk..].to_vec();
        expect.extend_from_slice(b"m,s=a v=1 1000\n");
        assert_eq!(rec.bytes, expect.len() as u64);
        assert_eq!(drain(&mut spool, 1000), expect);
    }

    #[test]
    fn a_second_sink_on_the_same_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Spool::open(dir.path(), MB, MB, SpoolFullPolicy::DropOldest).unwrap();
        let e = Spool::open(dir.path(), MB, MB, SpoolFullPolicy::DropOldest).err().unwrap().to_string();
        assert!(e.contains("another"), "{e}");
    }

    #[test]
    fn cap_drops_oldest_or_refuses_newest_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let batch = lines(0..10);
        let cap = batch.len() as u64 * 3;
        let (mut spool, _) = Spool::open(dir.path(), cap, batch.len() as u64, SpoolFullPolicy::DropOldest).unwrap();
        for _ in 0..3 {
            assert_eq!(spool.append(&batch, 0).unwrap(), Appended::Stored { dropped_points: 0 });
        }
        assert_eq!(spool.append(&batch, 0).unwrap(), Appended::Stored { dropped_points: 10 });
        assert_eq!(spool.bytes(), cap);

        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path(), cap, batch.len() as u64, SpoolFullPolicy::DropNewest).unwrap();
        for _ in 0..3 {
            spool.append(&batch, 0).unwrap();
        }
        assert_eq!(spool.append(&batch, 0).unwrap(), Appended::Refused);
        assert_eq!(spool.bytes(), cap);
        assert_eq!(drain(&mut spool, 1000).len() as u64, cap);
    }
}
