//! Device credentials: who may connect, and how each device proves it.
//!
//! - On the plain listeners: username = device id, password checked against an argon2 hash.
//! - On the TLS listeners: a client certificate issued by the deployment CA ([`crate::identity`]). The store keeps the
//!   SHA-256 fingerprint of each device's *current* certificate; a certificate is accepted only if it is that one, so
//!   re-provisioning a device retires its old certificate, and revoking it retires both. Fingerprints that must never
//!   be accepted again are kept in a revocation list (`revoked_certs`), which the TLS handshake checks too.
//!
//! The store is persisted as `devices.json` in the data dir ([`DeviceStore::open`]), written atomically under a lock
//! file, so `disaster-cloud device provision|revoke` (another process) and the running server can share it: the
//! server re-reads the file when it changes ([`DeviceStore::refresh`]) and drops sessions of revoked devices.
//! [`DeviceStore::from_toml`] keeps the demo's in-memory form (plaintext passwords hashed on load).
//!
//! argon2 is slow on purpose (tens of milliseconds, 19 MiB of working memory). It runs on one dedicated thread
//! (`argon2`) with one work area reused for every hash, whichever thread asks: at most one core ever goes to password
//! hashing, and memory stays at one work area (measured before: hashing 8 passwords with the crate's own allocation
//! left ~100 MiB resident, as the allocator kept the freed areas). A successful login is remembered as an HMAC under a per-process random key
//! ([`DeviceStore::check_fast`]), so a reconnect storm after a network outage does not queue thousands of argon2 runs;
//! a wrong password always pays the full price.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::password_hash::PasswordHash;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::persist::{self, FileLock, Stamp};
use crate::topic::is_valid_device_id;
use crate::IngestError;

/// Why a login was refused by the store; a `reason` label of `dc_ingest_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    UnknownDevice,
    BadPassword,
    Revoked,
    /// A certificate our CA signed, but not the one registered for any device (replaced, or from a lost store).
    UnknownCertificate,
}

impl LoginRefusal {
    pub fn as_label(self) -> &'static str {
        match self {
            Self::UnknownDevice => "unknown_device",
            Self::BadPassword => "bad_password",
            Self::Revoked => "revoked",
            Self::UnknownCertificate => "unknown_certificate",
        }
    }
}

/// SHA-256 of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of_der(der: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }

    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(text: &str) -> Option<Fingerprint> {
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Fingerprint(out))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// One device as the store file holds it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRecord {
    /// argon2 PHC string; `None` for certificate-only devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// Hex SHA-256 of the device's current certificate; `None` for password-only devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
    /// Listed in the config's devices file (`[[device]]`): the file is its source, so taking it out of the file
    /// removes it from the store ([`DeviceStore::merge_toml`]). Devices provisioned with the command line are not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_config: bool,
}

/// A certificate that must never be accepted again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedCert {
    pub device: String,
    pub revoked_ms: i64,
    /// `revoked` (the device was revoked) or `replaced` (a newer certificate was provisioned).
    pub why: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    #[serde(default)]
    devices: BTreeMap<String, DeviceRecord>,
    /// Hex fingerprint → why it is refused.
    #[serde(default)]
    revoked_certs: BTreeMap<String, RevokedCert>,
}

/// The in-memory form: the file's content plus indexes for the two lookups logins make.
#[derive(Debug, Default)]
struct State {
    file: StoreFile,
    by_cert: HashMap<Fingerprint, String>,
    revoked_certs: HashSet<Fingerprint>,
}

impl State {
    fn from_file(file: StoreFile) -> State {
        let by_cert = file
            .devices
            .iter()
            .filter_map(|(id, d)| Some((Fingerprint::from_hex(d.cert_sha256.as_deref()?)?, id.clone())))
            .collect();
        let revoked_certs = file.revoked_certs.keys().filter_map(|h| Fingerprint::from_hex(h)).collect();
        State { file, by_cert, revoked_certs }
    }
}

/// How a live session proved who it is; used to re-check it when the store changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Password,
    Certificate(Fingerprint),
}

/// The cheap part of a password login (no argon2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastCheck {
    /// This exact password was verified before and nothing changed since.
    Accepted,
    Refused(LoginRefusal),
    /// Needs the full argon2 verification ([`DeviceStore::verify`]); run it off the async workers.
    NeedsHash,
}

/// What [`DeviceStore::merge_toml`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// Devices new in the file.
    pub added: usize,
    /// Devices that came from the file and are gone from it: no longer able to log in.
    pub removed: Vec<String>,
}

/// Device credentials, shared by the front door and the operator tools.
pub struct DeviceStore {
    state: RwLock<State>,
    /// `Some` when persisted to a file (`devices.json` in the data dir).
    file: Option<PathBuf>,
    /// The file as we last read or wrote it, so that [`DeviceStore::refresh`] notices another process's writes.
    stamp: Mutex<Option<Stamp>>,
    /// Bumped on every change, so that the front door knows when to re-check live sessions.
    generation: AtomicU64,
    login_cache: LoginCache,
}

impl Default for DeviceStore {
    fn default() -> Self {
        DeviceStore::with_state(State::default(), None)
    }
}

impl fmt::Debug for DeviceStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceStore").field("devices", &self.len()).field("file", &self.file).finish()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlEntry {
    id: String,
    password: Option<String>,
    password_hash: Option<String>,
    #[serde(default)]
    revoked: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    device: Vec<TomlEntry>,
}

fn parse_toml(text: &str, file: &Path) -> Result<Vec<(String, DeviceRecord)>, IngestError> {
    let parsed: TomlFile =
        toml::from_str(text).map_err(|e| IngestError::Config { file: file.into(), message: e.to_string() })?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(parsed.device.len());
    for entry in parsed.device {
        let err = |message: &str| IngestError::Device {
            file: file.into(),
            device: entry.id.chars().take(64).collect(),
            message: message.into(),
        };
        if !is_valid_device_id(&entry.id) {
            return Err(err("id must be 1-32 ASCII letters or digits"));
        }
        let phc = match (&entry.password, &entry.password_hash) {
            (Some(plain), None) => hash_password(plain)?,
            (None, Some(phc)) => {
                PasswordHash::new(phc).map_err(|e| err(&format!("password_hash: {e}")))?;
                phc.clone()
            }
            _ => return Err(err("give exactly one of `password` or `password_hash`")),
        };
        if !seen.insert(entry.id.clone()) {
            return Err(err("duplicate id"));
        }
        out.push((
            entry.id,
            DeviceRecord { password_hash: Some(phc), cert_sha256: None, revoked: entry.revoked, from_config: true },
        ));
    }
    Ok(out)
}

impl DeviceStore {
    fn with_state(state: State, file: Option<PathBuf>) -> Self {
        DeviceStore {
            state: RwLock::new(state),
            file,
            stamp: Mutex::new(None),
            generation: AtomicU64::new(0),
            login_cache: LoginCache::new(),
        }
    }

    /// An in-memory store from a credential file (`config/devices.toml`): plaintext `password` entries are hashed on
    /// load, so no plaintext is kept after start; production files carry `password_hash` (PHC string) only.
    pub fn from_toml(text: &str, file: &Path) -> Result<Self, IngestError> {
        let mut store_file = StoreFile::default();
        store_file.devices.extend(parse_toml(text, file)?);
        Ok(DeviceStore::with_state(State::from_file(store_file), None))
    }

    /// The persisted store at `path` (normally `<data dir>/devices.json`); an absent file is an empty store.
    pub fn open(path: &Path) -> Result<Self, IngestError> {
        let file = read_store_file(path)?;
        let store = DeviceStore::with_state(State::from_file(file), Some(path.to_path_buf()));
        *store.stamp.lock() = persist::stamp(path);
        Ok(store)
    }

    /// Brings the store in line with the config's devices file: adds the devices it lists that the store does not
    /// know yet (a device already in the store keeps its stored credentials), and removes those that came from the
    /// file but are no longer in it: taking a device out of the file revokes it (its certificate, if one was
    /// provisioned, goes on the revocation list; live sessions are closed by the front door). Devices provisioned
    /// with `disaster-cloud device provision` and never listed in the file are left alone.
    pub fn merge_toml(&self, text: &str, file: &Path) -> Result<Merged, IngestError> {
        let entries = parse_toml(text, file)?;
        let listed: HashSet<String> = entries.iter().map(|(id, _)| id.clone()).collect();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        self.mutate(|data| {
            let mut merged = Merged::default();
            for (id, record) in entries {
                match data.devices.entry(id) {
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(record);
                        merged.added += 1;
                    }
                    // Listed now: from here on the file is its source (stores written before `from_config` existed).
                    std::collections::btree_map::Entry::Occupied(mut slot) => slot.get_mut().from_config = true,
                }
            }
            let gone: Vec<String> = data
                .devices
                .iter()
                .filter(|(id, r)| r.from_config && !listed.contains(*id))
                .map(|(id, _)| id.clone())
                .collect();
            for id in gone {
                if let Some(fp) = data.devices.remove(&id).and_then(|r| r.cert_sha256) {
                    data.revoked_certs.insert(
                        fp,
                        RevokedCert {
                            device: id.clone(),
                            revoked_ms: now_ms,
                            why: "removed from the devices file".into(),
                        },
                    );
                }
                merged.removed.push(id);
            }
            Ok(merged)
        })
    }

    /// The file this store persists to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Checks a login with argon2. Costs tens of milliseconds: call it off the async workers.
    pub fn verify(&self, device_id: &str, password: &str) -> Result<(), LoginRefusal> {
        let (phc, generation) = {
            let state = self.state.read();
            let record = state.file.devices.get(device_id).ok_or(LoginRefusal::UnknownDevice)?;
            if record.revoked {
                return Err(LoginRefusal::Revoked);
            }
            // A certificate-only device has no password: every password is wrong.
            let phc = record.password_hash.clone().ok_or(LoginRefusal::BadPassword)?;
            (phc, self.generation.load(Ordering::Acquire))
        };
        let attempt = password.to_string();
        let verified = argon2_thread::run(move |work| argon2_thread::verify(&phc, attempt.as_bytes(), work));
        if verified != Some(true) {
            return Err(LoginRefusal::BadPassword);
        }
        self.login_cache.remember(device_id, password, generation);
        Ok(())
    }

    /// Answers a login without argon2 when it can: unknown and revoked devices, and passwords verified before.
    pub fn check_fast(&self, device_id: &str, password: &str) -> FastCheck {
        let state = self.state.read();
        match state.file.devices.get(device_id) {
            None => FastCheck::Refused(LoginRefusal::UnknownDevice),
            Some(r) if r.revoked => FastCheck::Refused(LoginRefusal::Revoked),
            Some(r) if r.password_hash.is_none() => FastCheck::Refused(LoginRefusal::BadPassword),
            Some(_) if self.login_cache.knows(device_id, password, self.generation.load(Ordering::Acquire)) => {
                FastCheck::Accepted
            }
            Some(_) => FastCheck::NeedsHash,
        }
    }

    /// The device a client certificate belongs to. The chain has already been verified against the CA by TLS.
    pub fn identify_certificate(&self, fingerprint: &Fingerprint) -> Result<String, LoginRefusal> {
        let state = self.state.read();
        if state.revoked_certs.contains(fingerprint) {
            return Err(LoginRefusal::Revoked);
        }
        let id = state.by_cert.get(fingerprint).ok_or(LoginRefusal::UnknownCertificate)?;
        match state.file.devices.get(id) {
            Some(r) if r.revoked => Err(LoginRefusal::Revoked),
            Some(_) => Ok(id.clone()),
            None => Err(LoginRefusal::UnknownCertificate),
        }
    }

    /// Whether a certificate is on the revocation list (checked during the TLS handshake).
    pub fn is_certificate_revoked(&self, fingerprint: &Fingerprint) -> bool {
        self.state.read().revoked_certs.contains(fingerprint)
    }

    /// Whether a live session may go on after the store changed.
    pub fn session_still_valid(&self, device_id: &str, credential: &Credential) -> bool {
        let state = self.state.read();
        let Some(record) = state.file.devices.get(device_id) else { return false };
        if record.revoked {
            return false;
        }
        match credential {
            Credential::Password => record.password_hash.is_some(),
            Credential::Certificate(fp) => state.by_cert.get(fp).is_some_and(|owner| owner == device_id),
        }
    }

    /// Sets (or replaces) a device's password, creating the device if needed.
    pub fn set_password(&self, device_id: &str, password: &str) -> Result<(), IngestError> {
        check_id(device_id)?;
        let phc = hash_password(password)?;
        self.mutate(|data| {
            data.devices.entry(device_id.to_string()).or_default().password_hash = Some(phc);
            Ok(())
        })
    }

    /// Registers a device's new certificate (creating the device if needed, and lifting a revocation: provisioning
    /// is the operator's explicit decision). The previous certificate goes on the revocation list.
    pub fn register_certificate(
        &self,
        device_id: &str,
        fingerprint: Fingerprint,
        now_ms: i64,
    ) -> Result<(), IngestError> {
        check_id(device_id)?;
        self.mutate(|data| {
            let record = data.devices.entry(device_id.to_string()).or_default();
            let old = record.cert_sha256.replace(fingerprint.to_hex());
            record.revoked = false;
            if let Some(old) = old.filter(|old| *old != fingerprint.to_hex()) {
                data.revoked_certs.insert(
                    old,
                    RevokedCert { device: device_id.to_string(), revoked_ms: now_ms, why: "replaced".into() },
                );
            }
            data.revoked_certs.remove(&fingerprint.to_hex());
            Ok(())
        })
    }

    /// Revokes a device: it can no longer log in on any listener, its certificate goes on the revocation list, and the
    /// front door closes its live sessions within a second.
    pub fn revoke(&self, device_id: &str, now_ms: i64) -> Result<(), IngestError> {
        self.mutate(|data| {
            let record =
                data.devices.get_mut(device_id).ok_or_else(|| IngestError::NoSuchDevice(device_id.to_string()))?;
            record.revoked = true;
            if let Some(fp) = record.cert_sha256.clone() {
                data.revoked_certs.insert(
                    fp,
                    RevokedCert { device: device_id.to_string(), revoked_ms: now_ms, why: "revoked".into() },
                );
            }
            Ok(())
        })
    }

    /// A copy of one device's record.
    pub fn record(&self, device_id: &str) -> Option<DeviceRecord> {
        self.state.read().file.devices.get(device_id).cloned()
    }

    pub fn device_ids(&self) -> Vec<String> {
        self.state.read().file.devices.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.state.read().file.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes on every modification; the front door re-checks live sessions when it moves.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Re-reads the file if another process changed it. Returns whether anything was reloaded.
    pub fn refresh(&self) -> Result<bool, IngestError> {
        let Some(path) = &self.file else { return Ok(false) };
        let now = persist::stamp(path);
        if now == *self.stamp.lock() {
            return Ok(false);
        }
        let file = read_store_file(path)?;
        *self.state.write() = State::from_file(file);
        *self.stamp.lock() = now;
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(true)
    }

    /// Applies a change: under the file lock, on the file's latest content (another process may have written since
    /// we read it), then writes the file atomically and swaps the in-memory state.
    fn mutate<T>(&self, change: impl FnOnce(&mut StoreFile) -> Result<T, IngestError>) -> Result<T, IngestError> {
        let Some(path) = &self.file else {
            let mut state = self.state.write();
            let mut file = std::mem::take(&mut state.file);
            let result = change(&mut file);
            *state = State::from_file(file);
            self.generation.fetch_add(1, Ordering::AcqRel);
            return result;
        };
        let _lock = FileLock::acquire(path)?;
        let mut file = read_store_file(path)?;
        let result = change(&mut file)?;
        let text = serde_json::to_string_pretty(&file)
            .map_err(|e| IngestError::Config { file: path.clone(), message: e.to_string() })?;
        persist::write_atomically(path, text.as_bytes(), true)?;
        *self.state.write() = State::from_file(file);
        *self.stamp.lock() = persist::stamp(path);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(result)
    }
}

fn check_id(device_id: &str) -> Result<(), IngestError> {
    if is_valid_device_id(device_id) {
        Ok(())
    } else {
        Err(IngestError::InvalidDeviceId(device_id.chars().take(64).collect()))
    }
}

fn read_store_file(path: &Path) -> Result<StoreFile, IngestError> {
    let Some(text) = persist::read_optional(path)? else { return Ok(StoreFile::default()) };
    let file: StoreFile =
        serde_json::from_str(&text).map_err(|e| IngestError::Config { file: path.into(), message: e.to_string() })?;
    for (id, record) in &file.devices {
        let err =
            |message: &str| IngestError::Device { file: path.into(), device: id.clone(), message: message.into() };
        if !is_valid_device_id(id) {
            return Err(err("id must be 1-32 ASCII letters or digits"));
        }
        if let Some(phc) = &record.password_hash {
            PasswordHash::new(phc).map_err(|e| err(&format!("password_hash: {e}")))?;
        }
        if record.cert_sha256.as_deref().is_some_and(|h| Fingerprint::from_hex(h).is_none()) {
            return Err(err("cert_sha256 must be 64 hex digits"));
        }
    }
    Ok(file)
}

/// An argon2id PHC string for `plain` (the crate's default parameters: m = 19 MiB, t = 2, p = 1).
pub fn hash_password(plain: &str) -> Result<String, IngestError> {
    let plain = plain.to_string();
    argon2_thread::run(move |work| argon2_thread::hash(plain.as_bytes(), work))
        .unwrap_or_else(|| Err("the argon2 thread is gone".into()))
        .map_err(IngestError::Hash)
}

/// The one thread that runs argon2, and its reused work area (see the module doc for why).
mod argon2_thread {
    use std::sync::mpsc;
    use std::sync::LazyLock;

    use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
    use argon2::{Algorithm, Argon2, Block, Params, Version};
    use parking_lot::Mutex;

    type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

    static JOBS: LazyLock<Option<Mutex<mpsc::Sender<Job>>>> = LazyLock::new(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("argon2".into())
            .spawn(move || {
                let mut work = Vec::new();
                for job in rx {
                    job(&mut work);
                }
            })
            .ok()?;
        Some(Mutex::new(tx))
    });

    /// Runs `f` on the argon2 thread and waits for it; `None` if that thread is gone (it never exits on its own).
    pub fn run<T: Send + 'static>(f: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static) -> Option<T> {
        let Some(jobs) = &*JOBS else {
            // The thread could not be started: hash here rather than not at all.
            return Some(f(&mut Vec::new()));
        };
        let (tx, rx) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |work| {
            let _ = tx.send(f(work));
        });
        jobs.lock().send(job).ok()?;
        rx.recv().ok()
    }

    fn compute(
        argon: &Argon2<'_>,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
        work: &mut Vec<Block>,
    ) -> Result<(), String> {
        let blocks = argon.params().block_count();
        if work.len() < blocks {
            work.resize(blocks, Block::default());
        }
        argon.hash_password_into_with_memory(password, salt, out, &mut work[..blocks]).map_err(|e| e.to_string())
    }

    pub fn hash(password: &[u8], work: &mut Vec<Block>) -> Result<String, String> {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let argon = Argon2::default();
        let mut salt_bytes = [0u8; 64];
        let salt_raw = salt.as_salt().decode_b64(&mut salt_bytes).map_err(|e| e.to_string())?;
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        compute(&argon, password, salt_raw, &mut out, work)?;
        let phc = PasswordHash {
            algorithm: Algorithm::default().ident(),
            version: Some(Version::default().into()),
            params: ParamsString::try_from(argon.params()).map_err(|e| e.to_string())?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
        };
        Ok(phc.to_string())
    }

    /// Whether `password` matches the PHC string (constant-time comparison of the outputs).
    pub fn verify(phc: &str, password: &[u8], work: &mut Vec<Block>) -> bool {
        let mut check = || -> Option<bool> {
            let hash = PasswordHash::new(phc).ok()?;
            let algorithm = Algorithm::try_from(hash.algorithm).ok()?;
            let version = hash.version.map(Version::try_from).transpose().ok()?.unwrap_or_default();
            let params = Params::try_from(&hash).ok()?;
            let expected = hash.hash?;
            let mut salt_bytes = [0u8; 64];
            let salt = hash.salt?.decode_b64(&mut salt_bytes).ok()?;
            let mut out = vec![0u8; expected.len()];
            compute(&Argon2::new(algorithm, version, params), password, salt, &mut out, work).ok()?;
            Some(Output::new(&out).ok()? == expected)
        };
        check().unwrap_or(false)
    }

    #[cfg(test)]
    mod tests {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};

        use super::*;

        #[test]
        fn interoperates_with_the_crate_s_own_phc_strings() {
            let mut work = Vec::new();
            let ours = hash(b"s3cret", &mut work).unwrap();
            let parsed = PasswordHash::new(&ours).unwrap();
            assert!(Argon2::default().verify_password(b"s3cret", &parsed).is_ok());
            let theirs = Argon2::default()
                .hash_password(b"s3cret", &SaltString::generate(&mut argon2::password_hash::rand_core::OsRng))
                .unwrap()
                .to_string();
            assert!(verify(&theirs, b"s3cret", &mut work));
            assert!(!verify(&theirs, b"s3cret!", &mut work));
            assert!(!verify("not a phc string", b"x", &mut work));
        }
    }
}

/// Remembers verified passwords as HMAC-SHA256 tags under a key that never leaves this process. Entries are tied to
/// the store generation, so any change to the store (new password, revocation) forgets them.
struct LoginCache {
    key: ring::hmac::Key,
    entries: Mutex<HashMap<String, (u64, ring::hmac::Tag)>>,
}

/// Past this many devices the cache stops growing (it is an optimisation; a miss only costs an argon2 run).
const LOGIN_CACHE_MAX: usize = 100_000;

impl LoginCache {
    fn new() -> Self {
        let rng = ring::rand::SystemRandom::new();
        // Key generation fails only if the OS has no randomness; a cache under a fixed key would still be sound
        // (entries are only created after a full argon2 check), merely guessable offline from a memory dump.
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"disaster-cloud-login-cache"));
        LoginCache { key, entries: Mutex::new(HashMap::new()) }
    }

    fn message(device_id: &str, password: &str) -> Vec<u8> {
        let mut m = Vec::with_capacity(device_id.len() + password.len() + 1);
        m.extend_from_slice(device_id.as_bytes());
        m.push(0);
        m.extend_from_slice(password.as_bytes());
        m
    }

    fn remember(&self, device_id: &str, password: &str, generation: u64) {
        let tag = ring::hmac::sign(&self.key, &Self::message(device_id, password));
        let mut entries = self.entries.lock();
        if entries.len() < LOGIN_CACHE_MAX || entries.contains_key(device_id) {
            entries.insert(device_id.to_string(), (generation, tag));
        }
    }

    fn knows(&self, device_id: &str, password: &str, generation: u64) -> bool {
        let entries = self.entries.lock();
        let Some((gen, tag)) = entries.get(device_id) else { return false };
        *gen == generation && ring::hmac::verify(&self.key, &Self::message(device_id, password), tag.as_ref()).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_and_refuses() {
        let store = DeviceStore::from_toml(
            "[[device]]\nid = \"RG0001\"\npassword = \"s3cret\"\n[[device]]\nid = \"RG0002\"\npassword = \"x\"\nrevoked = true\n",
            Path::new("devices.toml"),
        )
        .unwrap();
        assert_eq!(store.check_fast("RG0001", "s3cret"), FastCheck::NeedsHash);
        assert_eq!(store.verify("RG0001", "s3cret"), Ok(()));
        assert_eq!(store.check_fast("RG0001", "s3cret"), FastCheck::Accepted, "remembered after a full check");
        assert_eq!(store.check_fast("RG0001", "wrong"), FastCheck::NeedsHash, "a wrong password is never cached");
        assert_eq!(store.verify("RG0001", "wrong"), Err(LoginRefusal::BadPassword));
        assert_eq!(store.verify("NOPE", "s3cret"), Err(LoginRefusal::UnknownDevice));
        assert_eq!(store.check_fast("NOPE", "s3cret"), FastCheck::Refused(LoginRefusal::UnknownDevice));
        assert_eq!(store.verify("RG0002", "x"), Err(LoginRefusal::Revoked));
    }

    #[test]
    fn refuses_ambiguous_entries() {
        let e = DeviceStore::from_toml("[[device]]\nid = \"A1\"\n", Path::new("devices.toml")).unwrap_err();
        assert!(e.to_string().contains("A1"), "{e}");
        let e =
            DeviceStore::from_toml("[[device]]\nid = \"A-1\"\npassword = \"x\"\n", Path::new("d.toml")).unwrap_err();
        assert!(e.to_string().contains("A-1"), "{e}");
    }

    #[test]
    fn persists_certificates_revocations_and_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.json");
        let store = DeviceStore::open(&path).unwrap();
        assert!(store.is_empty());
        let first = Fingerprint::of_der(b"cert one");
        let second = Fingerprint::of_der(b"cert two");
        store.register_certificate("TM0001", first, 1).unwrap();
        assert_eq!(store.identify_certificate(&first), Ok("TM0001".to_string()));
        // Re-provisioning replaces the certificate: the old one is refused from now on.
        store.register_certificate("TM0001", second, 2).unwrap();
        assert_eq!(store.identify_certificate(&first), Err(LoginRefusal::Revoked));
        assert!(store.is_certificate_revoked(&first));
        assert_eq!(store.identify_certificate(&second), Ok("TM0001".to_string()));
        store.set_password("TM0001", "pw").unwrap();

        // Another process (here: a second handle on the same file) sees it all, and its revocation reaches us.
        let other = DeviceStore::open(&path).unwrap();
        assert_eq!(other.identify_certificate(&second), Ok("TM0001".to_string()));
        assert_eq!(other.verify("TM0001", "pw"), Ok(()));
        let before = store.generation();
        // Time passing is the point: `refresh` notices a change by the file's modification time (and length), and a
        // write within the file system's timestamp granularity could keep the time.
        std::thread::sleep(std::time::Duration::from_millis(20));
        other.revoke("TM0001", 3).unwrap();
        assert!(store.refresh().unwrap());
        assert!(store.generation() > before);
        assert_eq!(store.identify_certificate(&second), Err(LoginRefusal::Revoked));
        assert_eq!(store.check_fast("TM0001", "pw"), FastCheck::Refused(LoginRefusal::Revoked));
        assert!(!store.session_still_valid("TM0001", &Credential::Certificate(second)));
        assert!(matches!(store.revoke("NOSUCH", 4), Err(IngestError::NoSuchDevice(_))));
        assert!(matches!(store.set_password("bad id", "x"), Err(IngestError::InvalidDeviceId(_))));
    }

    #[test]
    fn merge_keeps_stored_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeviceStore::open(&dir.path().join("devices.json")).unwrap();
        store.set_password("RG0001", "stored").unwrap();
        let added = store
            .merge_toml(
                "[[device]]\nid = \"RG0001\"\npassword = \"demo\"\n[[device]]\nid = \"RG0002\"\npassword = \"demo2\"\n",
                Path::new("d.toml"),
            )
            .unwrap();
        assert_eq!(added.added, 1);
        assert_eq!(store.verify("RG0001", "stored"), Ok(()));
        assert_eq!(store.verify("RG0002", "demo2"), Ok(()));
    }

    #[test]
    fn removing_a_device_from_the_file_revokes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.json");
        let store = DeviceStore::open(&path).unwrap();
        let file = Path::new("d.toml");
        store
            .merge_toml(
                "[[device]]\nid = \"RG0001\"\npassword = \"a\"\n[[device]]\nid = \"RG0002\"\npassword = \"b\"\n",
                file,
            )
            .unwrap();
        // Provisioned with the command line, never in the file: the file does not own it.
        store.set_password("CLI0001", "c").unwrap();
        // RG0002 got a certificate later: removal must retire it too.
        let cert = Fingerprint::of_der(b"rg0002");
        store.register_certificate("RG0002", cert, 1).unwrap();
        drop(store);
        // After a restart, with RG0002 taken out of the file.
        let store = DeviceStore::open(&path).unwrap();
        let merged = store.merge_toml("[[device]]\nid = \"RG0001\"\npassword = \"a\"\n", file).unwrap();
        assert_eq!(merged, Merged { added: 0, removed: vec!["RG0002".into()] });
        assert_eq!(store.check_fast("RG0002", "b"), FastCheck::Refused(LoginRefusal::UnknownDevice));
        assert!(store.is_certificate_revoked(&cert));
        assert!(!store.session_still_valid("RG0002", &Credential::Password));
        assert_eq!(store.verify("RG0001", "a"), Ok(()));
        assert_eq!(store.verify("CLI0001", "c"), Ok(()));
        // Listed again: a new device from the file.
        let merged = store.merge_toml("[[device]]\nid = \"RG0002\"\npassword = \"new\"\n", file).unwrap();
        assert_eq!(merged, Merged { added: 1, removed: vec!["RG0001".into()] });
        assert_eq!(store.verify("RG0002", "new"), Ok(()));
    }

    #[test]
    fn fingerprint_hex_round_trip() {
        let fp = Fingerprint::of_der(b"x");
        assert_eq!(Fingerprint::from_hex(&fp.to_hex()), Some(fp));
        assert_eq!(Fingerprint::from_hex("zz"), None);
        assert_eq!(Fingerprint::from_hex(&"é".repeat(32)), None);
    }
}
