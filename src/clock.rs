//! The wall clock, in one place for the binary: Unix milliseconds, as readings, alerts and journals carry them.
//!
//! Rules never read it (they run on event time, `docs/ARCHITECTURE.md` § Time); the edges do — arrival times,
//! rate limits, housekeeping ticks — and take it from here so that there is one definition to change or to fake.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds; 0 if the clock is before 1970.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
