//! The data dir's files: how every journal and snapshot in the workspace is written and read back.
//!
//! Two kinds of file, one error type:
//! - [`Journal`] (`journal.rs`) — an append-only JSON-lines file: the alert journal, the dissemination outbox, the
//!   report clusters' changes.
//! - [`replace`] and friends (`file.rs`) — a whole file replaced atomically: checkpoints, snapshots, the device
//!   store, certificates, CAP archive entries, report photos, the spool cursor.
//! - [`Error`] (`error.rs`) — names the path and the operation that failed; each caller wraps it (`#[from]`) in its
//!   own typed error.
//! - `fault.rs` (feature `fault-injection`, tests only) — a short append and a failed directory fsync on demand,
//!   so callers can test what a full disk does to them.
//!
//! ## Why JSON lines
//! Our journals are written a few times a second at the worst of a typhoon (alert transitions, operator decisions,
//! delivery attempts; never raw readings), so they need no index. One record per line makes an append plus
//! `fdatasync` the whole durability story, makes a crash's damage easy to find (only the last line can be torn), lets
//! an operator read the file with `jq` and `grep` during an incident, and keeps the workspace free of a C build.
//!
//! ## What a torn tail means, and the one read policy
//! A record and its newline go out in one `write`, appended in order by one writer, so a crash (or a power cut before
//! the data reached the disk) damages at most the **last** line: it may stop short (no newline), stop inside a
//! multi-byte character (zh-TW text in an alert headline is three bytes a character), or be a complete-looking line
//! of zeros. The file is read as bytes and split on `b'\n'` — never as text, so a cut character cannot make the read
//! itself fail — and then:
//! - the last line is kept if it parses (if only its newline is missing the record was written in full and may
//!   already have been acted on, so the newline is added); if it does not parse (incomplete, not UTF-8, not JSON of
//!   the record type) it is dropped with a warning and the file is cut back to the end of the line before, so the
//!   next append starts a clean line;
//! - a bad line anywhere else was written whole and damaged later: by default ([`BadLines::Refuse`]) that is an
//!   error naming the file, the line and its byte offset, because skipping it could forget a message or resend a
//!   whole outbox; a caller whose records stand alone may choose [`BadLines::Skip`] (reported back in
//!   [`Replay::skipped`] and logged);
//! - blank lines are ignored.
//!
//! A failed append (a full disk takes what fits) is cut back to the last good length at once: left in place, the
//! fragment would merge with the next record into one unreadable line, and that record would be lost at the next
//! start. If the cut fails too, it is retried before the next append, which is refused until it succeeds.
//!
//! ## Durability choices
//! - Appends: each call says whether it needs `fdatasync` before it returns ([`Journal::append`]'s `durable`). A
//!   record someone is told about (an alert transition, an operator's decision, an alert change in the outbox) is
//!   synced; records whose loss costs only a repeat (a delivery attempt: the delivery is sent again) or that arrive in
//!   floods (citizen reports) are written (they survive the process being killed) but not synced (a power cut may
//!   lose the last seconds).
//! - Whole files: written to a temporary file beside the target, fsynced, renamed over the target, then the
//!   directory is fsynced (the rename is durable only once the directory entry is), so a crash leaves the old file or
//!   the new one, never a mix. A failed directory fsync is an error like any other: the caller believed the file was
//!   durable when it was not. [`Replace::sync`] `false` keeps the rename (a killed process still leaves a whole file)
//!   and skips both fsyncs, for files whose loss in a power cut costs only a repeat (the spool cursor) or where the
//!   operator turned fsync off (test rigs).
//! - What a snapshot costs: the whole state, serialised and written; callers snapshot now and then (the engine every
//!   minute, the report clusters when their journal outgrows the last snapshot), never per change.

mod error;
#[cfg(any(test, feature = "fault-injection"))]
pub mod fault;
mod file;
mod journal;

pub use error::Error;
pub use file::{read_if_exists, read_json, replace, replace_with, sync_dir, write_json, Replace};
pub use journal::{BadLines, Entry, Journal, Open, Replay, Skipped, Torn};
