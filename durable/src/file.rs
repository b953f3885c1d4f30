//! Whole files replaced atomically (temporary file, fsync, rename, directory fsync) and read back.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{io, Error};

/// How a file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replace {
    /// Owner-only permissions (0600 on Unix) from the moment the file exists: private keys, password hashes, the
    /// outbox journal with subscribers' secrets.
    pub private: bool,
    /// fsync the file before the rename and the directory after it. Without it the replacement is still atomic for a
    /// killed process, not for a power cut.
    pub sync: bool,
}

impl Replace {
    /// Synced, default permissions: what every snapshot uses unless it says otherwise.
    pub const DURABLE: Replace = Replace { private: false, sync: true };

    pub fn private(self, private: bool) -> Replace {
        Replace { private, ..self }
    }

    pub fn sync(self, sync: bool) -> Replace {
        Replace { sync, ..self }
    }
}

impl Default for Replace {
    fn default() -> Self {
        Replace::DURABLE
    }
}

/// The folder a file lives in (`.` for a bare file name).
pub(crate) fn parent(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// A temporary name beside `path`, unique in this process and across processes (pid), hidden from `ls` and from
/// folders whose listings we parse (the dot). Two writers of the same file (two photo uploads of one picture) each get
/// their own, so neither renames the other's half-written file.
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

pub(crate) fn create_options(private: bool) -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    options
}

/// Replaces `path` (creating its folder if needed) with what `write` writes, so that readers and a restart see
/// either the old file or the new one, never a mix. The temporary file is removed if anything before the rename
/// fails (on a full disk it would only hold on to the space a retry needs).
pub fn replace_with(
    path: &Path,
    how: Replace,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<(), Error> {
    let dir = parent(path);
    std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    let tmp = temp_path(path);
    let written = (|| {
        let mut out = BufWriter::new(create_options(how.private).open(&tmp)?);
        write(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        if how.sync {
            file.sync_all()?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("write", &tmp)(e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("rename", path)(e));
    }
    if how.sync {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Replaces `path` with `bytes` (see [`replace_with`]).
pub fn replace(path: &Path, bytes: &[u8], how: Replace) -> Result<(), Error> {
    replace_with(path, how, |out| out.write_all(bytes))
}

/// Replaces `path` with `value` as JSON (see [`replace_with`]). Encoded first, so a value that cannot be encoded
/// leaves the old file alone.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T, how: Replace) -> Result<(), Error> {
    let bytes = serde_json::to_vec(value).map_err(|source| Error::Encode { path: path.to_path_buf(), source })?;
    replace(path, &bytes, how)
}

/// The contents of `path`, or `None` if it does not exist.
pub fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}

/// A JSON file written by [`write_json`], or `None` if it does not exist. A file that exists but does not parse is an
/// error: snapshots are replaced atomically, so a bad one was damaged, not torn, and silently starting empty would
/// forget what it held.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, Error> {
    match read_if_exists(path)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::Decode { path: path.to_path_buf(), source }),
        None => Ok(None),
    }
}

/// Makes the folder's entries (a rename, a new file) durable. A failure is an error: the caller's file may not
/// survive a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    #[cfg(any(test, feature = "fault-injection"))]
    if crate::fault::take_dir_sync_failure() {
        return Err(io("fsync directory", dir)(std::io::Error::other("injected fault: directory fsync failed")));
    }
    // Directories cannot be opened as files on Windows; their entries are durable with the file there.
    #[cfg(unix)]
    File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync directory", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_creates_folders_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("durable-replace-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("a/b/x.json");
        write_json(&path, &vec![1, 2, 3], Replace::DURABLE).unwrap();
        write_json(&path, &vec![4], Replace::DURABLE.private(true)).unwrap();
        replace(&dir.join("a/b/y"), b"y", Replace::DURABLE.sync(false)).unwrap();
        assert_eq!(read_json::<Vec<i32>>(&path).unwrap(), Some(vec![4]));
        assert_eq!(read_json::<Vec<i32>>(&dir.join("missing.json")).unwrap(), None);
        assert_eq!(read_if_exists(&dir.join("a/b/y")).unwrap().as_deref(), Some(&b"y"[..]));
        assert_eq!(entries(&dir.join("a/b")), ["x.json", "y"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        // A damaged snapshot is an error naming it, not an empty start.
        std::fs::write(&path, b"[4,").unwrap();
        let e = read_json::<Vec<i32>>(&path).unwrap_err();
        assert!(matches!(&e, Error::Decode { .. }) && e.path() == path, "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_no_temporary() {
        let dir = std::env::temp_dir().join(format!("durable-failed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("x");
        replace(&path, b"old", Replace::DURABLE).unwrap();
        let e = replace_with(&path, Replace::DURABLE, |out| {
            out.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(e.to_string().contains("write") && e.to_string().contains("disk full"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(&dir), ["x"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_directory_fsync_is_an_error() {
        // A path that cannot be opened: the real system call fails (no injection needed).
        let missing = std::env::temp_dir().join(format!("durable-no-such-dir-{}", std::process::id()));
        let e = sync_dir(&missing).unwrap_err();
        assert!(matches!(&e, Error::Io { op: "fsync directory", .. }), "{e}");
        // And `replace` passes it on instead of swallowing it (the rename has happened; the caller must know it is
        // not durable yet). The failure is injected: a directory that refuses fsync cannot be made without root-only
        // mounts, and a root test process opens any folder whatever its mode.
        let dir = std::env::temp_dir().join(format!("durable-dirsync-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        crate::fault::fail_next_dir_sync();
        let e = replace(&dir.join("x"), b"x", Replace::DURABLE).unwrap_err();
        assert!(matches!(&e, Error::Io { op: "fsync directory", .. }), "{e}");
        // Without sync there is no directory fsync to fail.
        crate::fault::fail_next_dir_sync();
        replace(&dir.join("x"), b"y", Replace::DURABLE.sync(false)).unwrap();
        let _ = crate::fault::take_dir_sync_failure();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
