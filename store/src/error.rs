//! Typed errors of the store crate.
//!
//! None of these is on the hot path: `append`/`send` never fail (they count and drop instead), so the error type can
//! carry context (paths, SQL errors) without slowing ingest.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or folder of the store could not be created, read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The data dir's file layer (`durable`, the spool cursor): names the file and the operation.
    #[error(transparent)]
    Durable(#[from] durable::Error),

    /// SQLite refused an operation (corrupt file, disk full, schema from a newer version…).
    #[error("readings database: {0}")]
    Sqlite(#[from] rusqlite::Error),

    /// A history query that cannot be answered as asked (the HTTP layer maps this to 400).
    #[error("bad query: {0}")]
    BadQuery(String),

    /// The answer would exceed `max_points`; the caller should ask for a coarser `step` or a shorter range.
    #[error("the query would return more than {limit} points; ask for a larger step or a shorter range")]
    TooManyPoints { limit: usize },

    /// A configuration value that cannot work (the binary reports it at start, before anything runs).
    #[error("store configuration: {0}")]
    Config(String),

    /// The background writer is gone (it panicked or was shut down), so the request cannot be served.
    #[error("the {0} thread has stopped")]
    Stopped(&'static str),
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io { path: path.into(), source }
    }
}
