//! Our VAPID identity (RFC 8292): an ECDSA P-256 key pair kept in the data dir, generated on first start.
//!
//! `push/vapid.pem` is the current key (PKCS#8 PEM, owner-only permissions); its public half is what the app passes to
//! `pushManager.subscribe` as `applicationServerKey`, and push services then accept pushes to that subscription only
//! when signed with it. The private key never leaves the file and this process.
//!
//! Rotation (`docs/OPERATIONS.md`): move `vapid.pem` to `vapid.previous.pem` and restart. A new key is made; every
//! subscription remembers the key it was made with ([`VapidKey::id`]) and keeps being signed with the previous key
//! while that file is there; the app re-subscribes with the new key the next time it is opened. Remove the previous
//! file once `dc_push_subscriptions{key="previous"}` is low enough.
//!
//! The JWT is made by `jwt-simple` (ES256), with `aud` = the endpoint's origin (scheme, host and a non-default port,
//! RFC 6454 — the `web-push-native` helper leaves the port out), `exp` ≤ 24 h, `sub` = our contact. Time is an input.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use web_push_native::jwt_simple::algorithms::{ECDSAP256KeyPairLike, ECDSAP256PublicKeyLike, ES256KeyPair};
use web_push_native::jwt_simple::claims::Claims;
use web_push_native::jwt_simple::prelude::{Duration as JwtDuration, UnixTimeStamp};

pub(crate) const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Why our VAPID keys could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum VapidError {
    #[error("{path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error(transparent)]
    Durable(#[from] durable::Error),
}

/// One key pair.
pub(crate) struct VapidKey {
    pair: ES256KeyPair,
    /// The uncompressed public point, base64url without padding: `applicationServerKey` and the `k=` of the header.
    pub public_b64: String,
    /// A short name for the key (a hash of the public key), kept with each subscription made under it.
    pub id: String,
}

impl VapidKey {
    fn new(pair: ES256KeyPair) -> VapidKey {
        let public = pair.public_key().public_key().to_bytes_uncompressed();
        let digest = ring::digest::digest(&ring::digest::SHA256, &public);
        VapidKey { public_b64: B64.encode(&public), id: crate::hex(&digest.as_ref()[..6]), pair }
    }

    /// `Authorization: vapid t=<JWT>, k=<public key>` for a push to `origin`, valid until `now_s + valid_s`.
    pub fn authorization(&self, origin: &str, contact: &str, now_s: u64, valid_s: u64) -> Result<String, String> {
        let mut claims = Claims::create(JwtDuration::from_secs(valid_s)).with_audience(origin).with_subject(contact);
        // The clock is ours to give (a test can sign for any time): jwt-simple's `create` read its own.
        claims.issued_at = None;
        claims.expires_at = Some(UnixTimeStamp::from_secs(now_s + valid_s));
        claims.invalid_before = None;
        let token = self.pair.sign(claims).map_err(|e| format!("VAPID signature: {e}"))?;
        Ok(format!("vapid t={token}, k={}", self.public_b64))
    }
}

/// The current key and, during a rotation, the previous one.
pub(crate) struct VapidKeys {
    pub current: VapidKey,
    pub previous: Option<VapidKey>,
}

impl VapidKeys {
    /// Reads `dir/vapid.pem` (making it on first start) and `dir/vapid.previous.pem` if present.
    pub fn load(dir: &Path) -> Result<VapidKeys, VapidError> {
        let path = dir.join("vapid.pem");
        let current = match read(&path)? {
            Some(k) => k,
            None => {
                let pair = ES256KeyPair::generate();
                let pem = pair.to_pem().map_err(|e| VapidError::Key { path: path.clone(), message: e.to_string() })?;
                std::fs::create_dir_all(dir).map_err(|e| VapidError::Key {
                    path: dir.to_path_buf(),
                    message: format!("create directory: {e}"),
                })?;
                durable::replace(&path, pem.as_bytes(), durable::Replace::DURABLE.private(true))?;
                tracing::info!(path = %path.display(), "made a new VAPID key pair for Web Push");
                VapidKey::new(pair)
            }
        };
        let previous = read(&dir.join("vapid.previous.pem"))?;
        Ok(VapidKeys { current, previous })
    }

    /// The key a subscription was made under, if we still have it.
    pub fn by_id(&self, id: &str) -> Option<&VapidKey> {
        std::iter::once(&self.current).chain(self.previous.as_ref()).find(|k| k.id == id)
    }
}

fn read(path: &Path) -> Result<Option<VapidKey>, VapidError> {
    let Some(bytes) = durable::read_if_exists(path)? else { return Ok(None) };
    let text = String::from_utf8(bytes)
        .map_err(|_| VapidError::Key { path: path.to_path_buf(), message: "not a PEM file (not UTF-8)".into() })?;
    let pair = ES256KeyPair::from_pem(&text).map_err(|e| VapidError::Key {
        path: path.to_path_buf(),
        message: format!("not a P-256 private key in PKCS#8 PEM: {e}"),
    })?;
    Ok(Some(VapidKey::new(pair)))
}

/// The origin of an endpoint as RFC 8292 §2 wants it in `aud`: `scheme://host[:port]`, the port only when not the
/// scheme's default.
pub(crate) fn origin(url: &reqwest::Url) -> Option<String> {
    let host = url.host_str()?;
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
    Some(match url.port() {
        Some(p) => format!("{}://{host}:{p}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_keep_non_default_ports() {
        let o = |u: &str| origin(&reqwest::Url::parse(u).unwrap()).unwrap();
        assert_eq!(o("https://fcm.googleapis.com/fcm/send/abc"), "https://fcm.googleapis.com");
        assert_eq!(o("https://push.example:8443/x"), "https://push.example:8443");
        assert_eq!(o("https://push.example:443/x"), "https://push.example");
        assert_eq!(o("http://127.0.0.1:41234/p/1"), "http://127.0.0.1:41234");
        assert_eq!(o("http://[::1]:8080/p"), "http://[::1]:8080");
    }

    #[test]
    fn a_key_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = VapidKeys::load(dir.path()).unwrap();
        let b = VapidKeys::load(dir.path()).unwrap();
        assert_eq!(a.current.public_b64, b.current.public_b64);
        assert_eq!(B64.decode(&a.current.public_b64).unwrap().len(), 65, "uncompressed P-256 point");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("vapid.pem")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the private key is the owner's only");
        }
        std::fs::write(dir.path().join("vapid.pem"), "not a key").unwrap();
        let err = VapidKeys::load(dir.path()).err().expect("a broken key file is an error, not a new key");
        assert!(err.to_string().contains("vapid.pem"), "{err}");
    }
}
