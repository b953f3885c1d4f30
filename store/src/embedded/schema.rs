//! The SQLite file: pragmas, tables and their versioning.
//!
//! Three tables. `series` gives each (sensor, metric) pair a small integer id, so that a reading row is three numbers
//! (about 20 bytes) instead of repeating the sensor id and metric name. `readings` is `WITHOUT ROWID` with primary key
//! (series, ts): rows are clustered by series and time, so a history query is one range scan and retention deletes one
//! range per series, and the table needs no second index. `speed_slots` is the long-term speed baseline of vehicle
//! detectors (`baseline.rs`): a sum and a count per (series, 10-minute slot), clustered the same way.
//!
//! Version 2 added `speed_slots`; a version-1 file is upgraded in place (the table is created empty and each tracked
//! detector's slots are filled from the raw readings the file still holds when the binary first tracks it).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::StoreError;

/// File name inside the data directory.
pub const FILE: &str = "readings.sqlite";

/// `PRAGMA user_version` of the schema below. A file from a newer version is refused rather than misread.
const SCHEMA_VERSION: i64 = 2;

const DDL: &str = "
CREATE TABLE IF NOT EXISTS series (
    id        INTEGER PRIMARY KEY,
    sensor_id TEXT NOT NULL,
    metric    TEXT NOT NULL,   -- the vocabulary name (`rain_mm`), stable across releases, unlike an enum index
    UNIQUE (sensor_id, metric)
);
CREATE TABLE IF NOT EXISTS readings (
    series INTEGER NOT NULL,
    ts     INTEGER NOT NULL,   -- event time, Unix ms
    value  REAL NOT NULL,
    PRIMARY KEY (series, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS speed_slots (
    series INTEGER NOT NULL,   -- a tracked detector's speed_kmh series
    slot   INTEGER NOT NULL,   -- event time div 600 000 (10-minute slots, Unix epoch aligned)
    sum    REAL NOT NULL,      -- of the speeds (km/h) stamped in the slot
    n      INTEGER NOT NULL,   -- how many
    PRIMARY KEY (series, slot)
) WITHOUT ROWID;
";

/// Opens (creating if needed) the file for the single writer.
pub fn open_writer(path: &Path, cache_mib: u32) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    // WAL: readers (history queries) never block the writer, and a commit is one sequential append.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Config(format!("{}: SQLite refused WAL mode (got `{mode}`)", path.display())));
    }
    // NORMAL in WAL mode survives a process crash; only an OS crash or power cut can lose the last commits, which is
    // an acceptable price for not syncing on every batch (the readings also went to the rules and to InfluxDB).
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "cache_size", -(i64::from(cache_mib) * 1024))?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Config(format!(
            "{}: schema version {version} is newer than this build understands ({SCHEMA_VERSION})",
            path.display()
        )));
    }
    conn.execute_batch(DDL)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(conn)
}

/// Opens a read-only connection for history queries. It must be opened after [`open_writer`] created the schema.
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    // A reader can meet a checkpoint in progress; waiting a little beats failing an operator's request.
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}
