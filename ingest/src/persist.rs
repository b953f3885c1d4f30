//! Small files in the data dir: written atomically (`durable`: temp file, fsync, rename, directory fsync) and
//! guarded by a lock file, so that a crash never leaves half a file and the CLI (`device provision` in another
//! process) never interleaves with the server's own writes.

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::IngestError;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> IngestError + '_ {
    move |source| IngestError::Io { path: path.to_path_buf(), source }
}

/// Replaces `path` with `bytes` so that readers see either the old or the new file, never a mix; `private` files
/// (keys, password hashes) are owner-only from the moment they exist. A failed directory fsync is an error: the
/// caller (a provisioning CLI, a revocation) must not report a change as saved when a power cut could undo it.
pub fn write_atomically(path: &Path, bytes: &[u8], private: bool) -> Result<(), IngestError> {
    Ok(durable::replace(path, bytes, durable::Replace::DURABLE.private(private))?)
}

/// An exclusive advisory lock on `<path>.lock`, held until dropped.
pub struct FileLock {
    _file: File,
}

impl FileLock {
    pub fn acquire(path: &Path) -> Result<FileLock, IngestError> {
        let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".lock");
        let lock_path = path.with_file_name(name);
        if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        file.lock().map_err(io_err(&lock_path))?;
        Ok(FileLock { _file: file })
    }
}

/// Reads a file that may not exist yet.
pub fn read_optional(path: &Path) -> Result<Option<String>, IngestError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IngestError::Io { path: path.to_path_buf(), source }),
    }
}

/// What a file looked like when we last read or wrote it, to notice changes made by another process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
}

pub fn stamp(path: &Path) -> Option<Stamp> {
    std::fs::metadata(path).ok().map(|m| Stamp { modified: m.modified().ok(), len: m.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_creates_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/file.json");
        write_atomically(&path, b"one", false).unwrap();
        write_atomically(&path, b"two", true).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(read_optional(&dir.path().join("missing")).unwrap(), None);
        let _lock = FileLock::acquire(&path).unwrap();
    }

    /// The rename happened but the directory entry may not be durable: the write must not look saved (it used to be
    /// ignored here). A directory that refuses fsync cannot be made in a test (root opens any folder, and special
    /// file systems need mounts), so the failure is injected into `durable`'s directory fsync.
    #[test]
    fn a_failed_directory_fsync_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.json");
        durable::fault::fail_next_dir_sync();
        let e = write_atomically(&path, b"{}", true).unwrap_err();
        assert!(e.to_string().contains("fsync directory"), "{e}");
    }
}
