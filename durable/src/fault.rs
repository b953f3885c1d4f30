//! Faults on demand, for tests of what a full disk does (feature `fault-injection`; the crate's own tests have it).
//!
//! A real full disk or a directory that refuses fsync cannot be made in a test without root-only mounts, and a
//! fragment written into the file by hand would not go through the code that must notice it. So the two places
//! where the disk can fail us ask here first: [`Journal::append`](crate::Journal::append) and
//! [`sync_dir`](crate::sync_dir). Faults are per thread (tests run in parallel) and fire once.

use std::cell::Cell;

thread_local! {
    static SHORT_APPEND: Cell<Option<usize>> = const { Cell::new(None) };
    static DIR_SYNC_FAILS: Cell<bool> = const { Cell::new(false) };
}

/// The next journal append on this thread writes only its first `keep` bytes and then fails with "no space left on
/// device", as a write to a full disk does.
pub fn short_next_append(keep: usize) {
    SHORT_APPEND.with(|c| c.set(Some(keep)));
}

/// The next directory fsync on this thread fails with an I/O error (after the rename it follows has happened, as a
/// real failure would).
pub fn fail_next_dir_sync() {
    DIR_SYNC_FAILS.with(|c| c.set(true));
}

pub(crate) fn take_short_append() -> Option<usize> {
    SHORT_APPEND.with(Cell::take)
}

pub(crate) fn take_dir_sync_failure() -> bool {
    DIR_SYNC_FAILS.with(Cell::take)
}
