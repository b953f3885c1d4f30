//! Report photos: base64 in the JSON body → checked bytes → a content-addressed file
//! `<photo dir>/<sha256>.<jpg|png>`.
//!
//! The type is decided by the file's magic bytes, never by what the client claims. Metadata segments are removed
//! before hashing and storing: a phone's JPEG carries the GPS position of the citizen's home and the camera's serial
//! number in EXIF, and published photos must carry no personal data. (A side effect: the EXIF orientation goes too,
//! so a photo taken sideways may show sideways.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// The image types we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhotoKind {
    Jpeg,
    Png,
}

impl PhotoKind {
    pub fn extension(self) -> &'static str {
        match self {
            PhotoKind::Jpeg => "jpg",
            PhotoKind::Png => "png",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            PhotoKind::Jpeg => "image/jpeg",
            PhotoKind::Png => "image/png",
        }
    }

    fn sniff(bytes: &[u8]) -> Option<PhotoKind> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(PhotoKind::Jpeg)
        } else if bytes.starts_with(PNG_SIGNATURE) {
            Some(PhotoKind::Png)
        } else {
            None
        }
    }
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PhotoError {
    #[error("larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("not valid base64: {0}")]
    Encoding(String),
    #[error("not a JPEG or PNG image")]
    Type,
    #[error("not a readable image: {0}")]
    Corrupt(&'static str),
}

/// A checked photo with its metadata removed.
#[derive(Debug, Clone)]
pub struct Photo {
    pub kind: PhotoKind,
    pub bytes: Vec<u8>,
    /// Hex SHA-256 of `bytes`: the file name, so the same photo sent twice is stored once.
    pub sha256: String,
}

impl Photo {
    /// Decodes a base64 photo of at most `max_bytes` (decoded). A `data:…;base64,` prefix and line breaks are
    /// tolerated because browsers and some base64 tools write them.
    pub fn from_base64(text: &str, max_bytes: usize) -> Result<Photo, PhotoError> {
        let text = match text.strip_prefix("data:") {
            Some(rest) => rest
                .split_once(',')
                .map(|(_, data)| data)
                .ok_or(PhotoError::Encoding("a data URL without data".into()))?,
            None => text,
        };
        // Refuse by size before decoding: 4 base64 characters carry 3 bytes.
        if text.len() / 4 * 3 > max_bytes + 3 {
            return Err(PhotoError::TooLarge { limit: max_bytes });
        }
        let compact: String;
        let text = if text.bytes().any(|b| b.is_ascii_whitespace()) {
            compact = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            compact.as_str()
        } else {
            text
        };
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let bytes = engine.decode(text).map_err(|e| PhotoError::Encoding(e.to_string()))?;
        if bytes.len() > max_bytes {
            return Err(PhotoError::TooLarge { limit: max_bytes });
        }
        Photo::from_bytes(&bytes)
    }

    /// Checks the type by magic bytes and strips metadata.
    pub fn from_bytes(bytes: &[u8]) -> Result<Photo, PhotoError> {
        let kind = PhotoKind::sniff(bytes).ok_or(PhotoError::Type)?;
        let bytes = match kind {
            PhotoKind::Jpeg => strip_jpeg(bytes)?,
            PhotoKind::Png => strip_png(bytes)?,
        };
        let sha256 = hex(&Sha256::digest(&bytes));
        Ok(Photo { kind, bytes, sha256 })
    }

    /// `<sha256>.<ext>`: the stored file's name and the last segment of its URL.
    pub fn name(&self) -> String {
        format!("{}.{}", self.sha256, self.kind.extension())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies a JPEG's segments up to its end-of-image marker (EOI), leaving out the ones that carry metadata (APP1
/// EXIF/XMP, APP13 IPTC, the other application segments, comments) wherever they are — before the first scan or
/// between the scans of a progressive or multi-scan image; keeps JFIF (APP0), ICC colour profiles (APP2) and
/// Adobe's colour-transform flag (APP14), without which colours come out wrong. A scan's entropy-coded data is
/// copied as is up to the next marker (`FF 00` is a stuffed data byte, `FF D0`–`FF D7` restart markers belong to the
/// scan). Whatever follows EOI is dropped: a file can carry anything there (a second image, a ZIP, the phone's
/// depth map or location) and no decoder looks at it, so nobody would notice it being published.
fn strip_jpeg(bytes: &[u8]) -> Result<Vec<u8>, PhotoError> {
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..2]);
    let mut pos = 2;
    loop {
        if pos >= bytes.len() || bytes[pos] != 0xFF {
            return Err(PhotoError::Corrupt("JPEG segment expected"));
        }
        // Markers may be preceded by any number of 0xFF fill bytes.
        while pos < bytes.len() && bytes[pos] == 0xFF {
            pos += 1;
        }
        let Some(&marker) = bytes.get(pos) else { return Err(PhotoError::Corrupt("JPEG ends inside a marker")) };
        pos += 1;
        match marker {
            0xD9 => {
                out.extend_from_slice(&[0xFF, 0xD9]);
                return Ok(out);
            }
            // Standalone markers carry no length.
            0x01 | 0xD0..=0xD7 => out.extend_from_slice(&[0xFF, marker]),
            _ => {
                let len = match bytes.get(pos..pos + 2) {
                    Some(b) => usize::from(u16::from_be_bytes([b[0], b[1]])),
                    None => return Err(PhotoError::Corrupt("JPEG segment without a length")),
                };
                if len < 2 || pos + len > bytes.len() {
                    return Err(PhotoError::Corrupt("JPEG segment longer than the file"));
                }
                let keep = !matches!(marker, 0xE1 | 0xE3..=0xED | 0xEF | 0xFE);
                if keep {
                    out.extend_from_slice(&[0xFF, marker]);
                    out.extend_from_slice(&bytes[pos..pos + len]);
                }
                pos += len;
                if marker == 0xDA {
                    let end = scan_end(bytes, pos).ok_or(PhotoError::Corrupt("JPEG ends inside a scan"))?;
                    out.extend_from_slice(&bytes[pos..end]);
                    pos = end;
                }
            }
        }
    }
}

/// Where the entropy-coded data that starts at `from` ends: the first `FF` that starts a marker other than a
/// restart marker (`FF 00` is a stuffed data byte). `None` when the file ends first.
fn scan_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut pos = from;
    loop {
        pos += bytes.get(pos..)?.iter().position(|&b| b == 0xFF)?;
        // Fill bytes may precede a marker: look at the first byte after the run of FFs.
        let mut next = pos + 1;
        while bytes.get(next) == Some(&0xFF) {
            next += 1;
        }
        match bytes.get(next)? {
            0x00 | 0xD0..=0xD7 => pos = next + 1,
            _ => return Some(pos),
        }
    }
}

/// Copies a PNG's chunks up to `IEND`, leaving out the text, EXIF and time chunks.
fn strip_png(bytes: &[u8]) -> Result<Vec<u8>, PhotoError> {
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(PNG_SIGNATURE);
    let mut pos = PNG_SIGNATURE.len();
    loop {
        let Some(head) = bytes.get(pos..pos + 8) else { return Err(PhotoError::Corrupt("PNG ends before IEND")) };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind = &head[4..8];
        let end = pos.checked_add(12).and_then(|p| p.checked_add(len)).filter(|&e| e <= bytes.len());
        let Some(end) = end else { return Err(PhotoError::Corrupt("PNG chunk longer than the file")) };
        if !matches!(kind, b"tEXt" | b"zTXt" | b"iTXt" | b"eXIf" | b"tIME") {
            out.extend_from_slice(&bytes[pos..end]);
        }
        pos = end;
        if kind == b"IEND" {
            return Ok(out);
        }
    }
}

/// Why a photo was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The photo would take the store past its byte quota (`reports.photo_quota_bytes`).
    #[error("the photo store is full ({used} of {quota} bytes)")]
    Quota { used: u64, quota: u64 },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Where photos are kept: one folder, file names are content hashes, and a byte quota over the lot.
///
/// The folder shares its disk with the journals (alerts, clusters, dissemination): without a bound, anonymous
/// reports at the per-address rate limit could fill it in hours and every journal would stop. The store counts the
/// bytes of every photo it holds (scanned at start) and refuses a new photo past the quota; a report without a photo
/// is not affected. Photos are deleted when no cluster refers to them any more ([`super::ClusterBook::take_released`])
/// and no report being recorded holds them.
///
/// Names move through three states under one lock: held (a report is between saving and recording it), kept (a
/// cluster refers to it; the store only knows it is not held), doomed (to be deleted by the next
/// [`PhotoStore::delete_doomed`]). A save of a doomed photo takes it back, so a file is only ever unlinked under the
/// lock, after checking nobody took it back.
#[derive(Debug)]
pub struct PhotoStore {
    dir: PathBuf,
    quota_bytes: u64,
    state: Mutex<StoreState>,
}

#[derive(Debug, Default)]
struct StoreState {
    /// Bytes of every photo in `files`, including photos being written.
    used: u64,
    files: HashMap<String, StoredPhoto>,
}

#[derive(Debug)]
struct StoredPhoto {
    bytes: u64,
    /// Reports between saving this photo and recording it.
    holds: u32,
    doomed: bool,
}

impl PhotoStore {
    /// A store over `dir` (which need not exist yet): counts the photos already there, and removes the temporary
    /// files of writes a crash interrupted.
    pub fn open(dir: PathBuf, quota_bytes: u64) -> std::io::Result<Self> {
        let mut state = StoreState::default();
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') && name.ends_with(".tmp") {
                        let _ = std::fs::remove_file(entry.path());
                        continue;
                    }
                    if PhotoStore::valid_name(&name).is_none() {
                        continue;
                    }
                    let bytes = entry.metadata()?.len();
                    state.used += bytes;
                    state.files.insert(name, StoredPhoto { bytes, holds: 0, doomed: false });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
        }
        crate::metrics::REPORTS_PHOTO_BYTES.set(i64::try_from(state.used).unwrap_or(i64::MAX));
        crate::metrics::REPORTS_PHOTO_QUOTA.set(i64::try_from(quota_bytes).unwrap_or(i64::MAX));
        Ok(Self { dir, quota_bytes, state: Mutex::new(state) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes held by stored photos (and photos being written).
    pub fn used_bytes(&self) -> u64 {
        self.state.lock().used
    }

    /// Every stored photo's name.
    pub fn names(&self) -> Vec<String> {
        self.state.lock().files.keys().cloned().collect()
    }

    /// Stores the photo and holds it for the report being recorded: the caller must [`PhotoStore::release`] it once
    /// the report is recorded or refused. Refused when the photo is new and would take the store past its quota.
    ///
    /// The write goes to a temporary name first (one per write, so two uploads of the same photo do not share it), is
    /// synced and renamed into place (`durable`), so a reader never sees half a photo and a report that names it
    /// survives a power cut with it. The error names the file and the step that failed; the photo is then still
    /// held (release it like any other).
    pub fn save(&self, photo: &Photo) -> Result<(), SaveError> {
        let name = photo.name();
        {
            let mut state = self.state.lock();
            let len = photo.bytes.len() as u64;
            match state.files.get_mut(&name) {
                Some(stored) => {
                    stored.holds += 1;
                    stored.doomed = false;
                }
                None => {
                    if state.used.saturating_add(len) > self.quota_bytes {
                        return Err(SaveError::Quota { used: state.used, quota: self.quota_bytes });
                    }
                    state.used += len;
                    state.files.insert(name.clone(), StoredPhoto { bytes: len, holds: 1, doomed: false });
                    crate::metrics::REPORTS_PHOTO_BYTES.set(i64::try_from(state.used).unwrap_or(i64::MAX));
                }
            }
        }
        let path = self.dir.join(&name);
        if path.exists() {
            return Ok(());
        }
        durable::replace(&path, &photo.bytes, durable::Replace::DURABLE).map_err(|e| std::io::Error::other(e).into())
    }

    /// Ends a hold from [`PhotoStore::save`], and marks for deletion every photo of `candidates` (and the released
    /// one) that nobody holds and `referenced` says no cluster refers to. Returns whether any is now doomed.
    pub fn release(&self, held: Option<&str>, candidates: Vec<String>, referenced: impl Fn(&str) -> bool) -> bool {
        let mut state = self.state.lock();
        if let Some(stored) = held.and_then(|name| state.files.get_mut(name)) {
            stored.holds = stored.holds.saturating_sub(1);
        }
        let mut any = false;
        for name in held.map(str::to_string).into_iter().chain(candidates) {
            if let Some(stored) = state.files.get_mut(&name) {
                if stored.holds == 0 && !referenced(&name) {
                    stored.doomed = true;
                    any = true;
                }
            }
        }
        any
    }

    /// Deletes the doomed photos nobody took back (blocking file I/O, under the store's lock so that no save of the
    /// same photo can slip between the check and the unlink). Returns how many files went.
    pub fn delete_doomed(&self) -> usize {
        let mut state = self.state.lock();
        let doomed: Vec<String> =
            state.files.iter().filter(|(_, s)| s.doomed && s.holds == 0).map(|(n, _)| n.clone()).collect();
        let mut deleted = 0;
        for name in doomed {
            match std::fs::remove_file(self.dir.join(&name)) {
                Ok(()) => deleted += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    // Kept doomed: the next collection tries again; counted in the meantime.
                    tracing::error!(photo = %name, error = %e, "report photo not deleted");
                    continue;
                }
            }
            if let Some(stored) = state.files.remove(&name) {
                state.used = state.used.saturating_sub(stored.bytes);
            }
        }
        crate::metrics::REPORTS_PHOTO_BYTES.set(i64::try_from(state.used).unwrap_or(i64::MAX));
        crate::metrics::REPORTS_PHOTOS_DELETED.inc_by(deleted as u64);
        deleted
    }

    fn valid_name(name: &str) -> Option<PhotoKind> {
        let (hash, ext) = name.split_once('.')?;
        let kind = match ext {
            "jpg" => PhotoKind::Jpeg,
            "png" => PhotoKind::Png,
            _ => return None,
        };
        let hex_ok = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        hex_ok.then_some(kind)
    }

    /// The path of a stored photo by name, or `None` when the name is not one of ours (which also keeps `..` and
    /// other path tricks out).
    pub fn path_of(&self, name: &str) -> Option<(PathBuf, PhotoKind)> {
        Self::valid_name(name).map(|kind| (self.dir.join(name), kind))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal JPEG: SOI, an APP1 "Exif" segment with a fake GPS tag, a comment, a quantisation table header,
    /// a scan and EOI. Not decodable as an image, but structurally a JPEG, which is all we check.
    pub(crate) fn jpeg_with_exif() -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        let exif = b"Exif\0\0GPS 23.5185N 120.9280E";
        v.extend_from_slice(&[0xFF, 0xE1]);
        v.extend_from_slice(&u16::try_from(exif.len() + 2).unwrap().to_be_bytes());
        v.extend_from_slice(exif);
        v.extend_from_slice(&[0xFF, 0xFE, 0x00, 0x07, b'h', b'o', b'm', b'e', b'!']);
        v.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x04, 0x00, 0x01]);
        v.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x03, 0x01, 0x12, 0x34, 0x56, 0xFF, 0xD9]);
        v
    }

    #[test]
    fn exif_and_comments_are_removed_from_jpegs() {
        let photo = Photo::from_bytes(&jpeg_with_exif()).unwrap();
        assert_eq!(photo.kind, PhotoKind::Jpeg);
        let text = String::from_utf8_lossy(&photo.bytes);
        assert!(!text.contains("GPS") && !text.contains("home"), "{:?}", photo.bytes);
        assert!(photo.bytes.ends_with(&[0x12, 0x34, 0x56, 0xFF, 0xD9]));
        assert_eq!(photo.sha256.len(), 64);
    }

    /// Issue 22 item 12: the cleaning used to copy everything from the first scan to the end of the file, so
    /// metadata between the scans of a progressive JPEG and anything appended after EOI were published.
    #[test]
    fn metadata_between_scans_and_bytes_after_the_end_are_removed() {
        let segment = |marker: u8, data: &[u8]| {
            let mut s = vec![0xFF, marker];
            s.extend_from_slice(&u16::try_from(data.len() + 2).unwrap().to_be_bytes());
            s.extend_from_slice(data);
            s
        };
        // Entropy-coded data with a stuffed FF 00 and a restart marker, which belong to the scan.
        let scan1 = [0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56];
        let scan2 = [0x78, 0xFF, 0xFF, 0xD1, 0x9A];
        let mut kept = vec![0xFF, 0xD8];
        kept.extend(segment(0xDB, &[0x00, 0x01]));
        kept.extend(segment(0xC2, &[8, 0, 1, 0, 1, 1, 1, 0x11, 0]));
        kept.extend(segment(0xDA, &[1, 1, 0, 0, 0, 0]));
        kept.extend_from_slice(&scan1);
        let mut jpeg = kept.clone();
        // Between the scans: a comment and an EXIF segment (dropped), a Huffman table (kept).
        jpeg.extend(segment(0xFE, b"home: No. 5, Lane 3"));
        jpeg.extend(segment(0xE1, b"Exif\0\0GPS 23.5185N 120.9280E"));
        let mut tail = segment(0xC4, &[0x00; 17]);
        tail.extend(segment(0xDA, &[1, 1, 0, 0, 0, 0]));
        tail.extend_from_slice(&scan2);
        tail.extend_from_slice(&[0xFF, 0xD9]);
        jpeg.extend_from_slice(&tail);
        kept.extend_from_slice(&tail);
        jpeg.extend_from_slice(b"PK\x03\x04 appended archive with the phone's location");

        let photo = Photo::from_bytes(&jpeg).unwrap();
        assert_eq!(photo.bytes, kept, "only the image, up to EOI");
        // A JPEG that never reaches EOI is not an image we publish.
        assert!(matches!(Photo::from_bytes(&kept[..kept.len() - 2]), Err(PhotoError::Corrupt(_))));
    }

    #[test]
    fn png_text_chunks_are_removed() {
        let chunk = |kind: &[u8], data: &[u8]| {
            let mut c = u32::try_from(data.len()).unwrap().to_be_bytes().to_vec();
            c.extend_from_slice(kind);
            c.extend_from_slice(data);
            c.extend_from_slice(&[0, 0, 0, 0]);
            c
        };
        let mut png = PNG_SIGNATURE.to_vec();
        png.extend(chunk(b"IHDR", &[0; 13]));
        png.extend(chunk(b"tEXt", b"Author\0Chen Mei-ling"));
        png.extend(chunk(b"IEND", &[]));
        let photo = Photo::from_bytes(&png).unwrap();
        assert!(!String::from_utf8_lossy(&photo.bytes).contains("Chen"));
        assert_eq!(photo.name().rsplit('.').next(), Some("png"));
    }

    #[test]
    fn other_types_and_broken_files_are_refused() {
        assert_eq!(Photo::from_bytes(b"GIF89a....").unwrap_err(), PhotoError::Type);
        assert_eq!(Photo::from_bytes(b"<svg onload=alert(1)>").unwrap_err(), PhotoError::Type);
        assert!(matches!(Photo::from_bytes(&[0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF]), Err(PhotoError::Corrupt(_))));
        assert!(matches!(Photo::from_base64("!!!!", 100), Err(PhotoError::Encoding(_))));
        let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 1000]);
        assert_eq!(Photo::from_base64(&big, 999).unwrap_err(), PhotoError::TooLarge { limit: 999 });
        let url =
            format!("data:image/jpeg;base64,{}", base64::engine::general_purpose::STANDARD.encode(jpeg_with_exif()));
        assert!(Photo::from_base64(&url, 10_000).is_ok());
    }

    #[test]
    fn only_our_names_map_to_paths() {
        let store = PhotoStore::open(PathBuf::from("/nonexistent/x"), 1).unwrap();
        assert!(store.path_of(&format!("{}.jpg", "a".repeat(64))).is_some());
        assert!(store.path_of("../../etc/passwd").is_none());
        assert!(store.path_of(&format!("{}.svg", "a".repeat(64))).is_none());
    }
}
