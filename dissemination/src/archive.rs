//! The CAP archive: every released CAP message as `<data_dir>/cap/<identifier>.xml`, written once (`durable`'s
//! atomic replace: temporary file, rename, and the fsyncs when the journal's `fsync` is on) when the message is
//! released. Memory keeps only the messages still in play (active alerts, the
//! feed's recent ones, anything a delivery or a broadcast still needs); `GET /cap/{identifier}.xml` answers the
//! rest from here. Held messages are never written, so nothing here is ever non-public.
//!
//! A message is immutable once made (its identifier is a strong ETag), so an existing file is never rewritten.
//! A write the disk refuses is logged and counted (`dc_dissemination_errors_total{kind="cap_archive"}`); the
//! message then stays in memory and the write is tried again (see `State::prune`).

use std::path::{Path, PathBuf};

/// Folder inside the dissemination `data_dir`.
pub(crate) const ARCHIVE_DIR: &str = "cap";

/// Longest identifier looked up or written (file names stop at 255 bytes; leaves room for the temporary name).
const MAX_IDENTIFIER: usize = 200;

/// Whether `identifier` is a clean file name: the characters `identifier_base` keeps, and not `.` or `..`.
/// Lookups refuse anything else, so a request cannot reach outside the archive.
pub(crate) fn is_clean(identifier: &str) -> bool {
    !identifier.is_empty()
        && identifier.len() <= MAX_IDENTIFIER
        && identifier != "."
        && identifier != ".."
        && identifier.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

#[derive(Debug, Clone)]
pub(crate) struct CapArchive {
    dir: PathBuf,
    fsync: bool,
}

impl CapArchive {
    pub fn new(dir: PathBuf, fsync: bool) -> CapArchive {
        CapArchive { dir, fsync }
    }

    fn path(&self, identifier: &str) -> Option<PathBuf> {
        is_clean(identifier).then(|| self.dir.join(format!("{identifier}.xml")))
    }

    pub fn contains(&self, identifier: &str) -> bool {
        self.path(identifier).is_some_and(|p| p.is_file())
    }

    /// The archived message, or None (not archived, or not a clean identifier).
    pub fn read(&self, identifier: &str) -> Option<String> {
        std::fs::read_to_string(self.path(identifier)?).ok()
    }

    /// Writes a message unless it is there already.
    pub fn write(&self, identifier: &str, xml: &str) -> std::io::Result<()> {
        let path = self.path(identifier).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("`{identifier}` is not a clean file name"))
        })?;
        if path.is_file() {
            return Ok(());
        }
        // The error names the file and the step that failed; callers log and count it.
        durable::replace(&path, xml.as_bytes(), durable::Replace::DURABLE.sync(self.fsync))
            .map_err(std::io::Error::other)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_refuse_anything_but_a_clean_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let a = CapArchive::new(dir.path().join(ARCHIVE_DIR), false);
        a.write("A-1.2", "<alert/>").unwrap();
        assert_eq!(a.read("A-1.2").as_deref(), Some("<alert/>"));
        std::fs::write(dir.path().join("secret.xml"), "secret").unwrap();
        for bad in ["../secret", "..", ".", "", "a/b", "a\\b", "a b", "%2e%2e", "A-1.2\0"] {
            assert_eq!(a.read(bad), None, "{bad:?}");
            assert!(a.write(bad, "x").is_err(), "{bad:?}");
        }
        assert!(!a.contains(&"x".repeat(MAX_IDENTIFIER + 1)));
    }

    #[test]
    fn an_existing_message_is_not_rewritten_and_a_refused_write_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let a = CapArchive::new(dir.path().join(ARCHIVE_DIR), true);
        a.write("M.1", "first").unwrap();
        a.write("M.1", "second").unwrap();
        assert_eq!(a.read("M.1").as_deref(), Some("first"));
        // A regular file where the folder should be: refused even for root, unlike a read-only folder.
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, "").unwrap();
        let b = CapArchive::new(blocked, true);
        assert!(b.write("M.1", "x").is_err());
        assert_eq!(b.read("M.1"), None);
    }
}
