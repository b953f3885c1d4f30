//! The one error type for the data dir's files.

use std::path::{Path, PathBuf};

/// What went wrong with which file. Every variant names the path; I/O errors also name the operation, because "No
/// space left on device" means something else for an append than for a directory fsync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed: `op` is what we were doing ("append", "fsync", "rename", "fsync directory", …).
    #[error("{path}: {op}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    /// A journal line other than the last does not parse (see [`crate::BadLines`]). `line` counts from where the
    /// read started (the start of the file unless a checkpoint said otherwise), from 1; `offset` is the byte offset
    /// in the file.
    #[error("{path}: line {line} (byte {offset}): {message}")]
    BadLine { path: PathBuf, line: usize, offset: u64, message: String },
    /// The file contradicts what the caller knows about it (a checkpoint covering more than the journal holds).
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    /// A value could not be encoded as JSON (a map with non-string keys, a failing `Serialize` impl).
    #[error("{path}: encoding JSON: {source}")]
    Encode { path: PathBuf, source: serde_json::Error },
    /// A whole JSON file (snapshot, checkpoint) does not parse.
    #[error("{path}: reading JSON: {source}")]
    Decode { path: PathBuf, source: serde_json::Error },
}

impl Error {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Error::Io { path, .. }
            | Error::BadLine { path, .. }
            | Error::Corrupt { path, .. }
            | Error::Encode { path, .. }
            | Error::Decode { path, .. } => path,
        }
    }
}

/// `map_err` helper: an I/O error of `op` on `path`.
pub(crate) fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io { op, path: path.to_path_buf(), source }
}
