//! Signed alert messages between our own processes: a worker signs every alert it publishes to
//! `alerts/{region}/{id}` (on the MQTT cluster) or to `dc.alerts.{region}.{id}` (the NATS backbone's alerts stream,
//! `backbone_alerts.rs`: the subject takes the topic's place in what is signed); a fan-out node applies nothing it
//! cannot verify against the workers' public keys, and on the backbone a worker taking a region over adopts nothing
//! it cannot verify either.
//!
//! Why Ed25519 (`ed25519-dalek`) with a key per worker rather than one shared HMAC key: a fan-out node holds only
//! public keys, so a fan-out node that is broken into (they face the public internet) cannot forge an alert, and one
//! worker's leaked key speaks only for the regions its public key is trusted for, not for the whole country. Signing
//! and verifying take tens of microseconds per alert version (not measured here), nothing at the rate alerts change.
//!
//! The envelope (`docs/PAYLOADS.md`) keeps the alert frame as it was, byte for byte, inside it:
//! `{"format":"dc-signed-alert/1","key":"<public key>","signature":"<sig>","alert":{…}}`. The signature covers
//! `dc-signed-alert/1`, the topic and the alert's exact text, so a valid message cannot be moved to another topic
//! (another region or id) and the version inside it cannot be changed; the fan-out refuses versions older than what it
//! has held (`RemoteAlerts`), so a replay cannot roll an alert back. Keys: PKCS#8 PEM, what
//! `openssl genpkey -algorithm ed25519` and `disaster-cloud cluster-key new` write; public keys in config as the
//! base64 of their 32 bytes.

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The envelope's format name, first in what is signed (a signature made for anything else never verifies here).
pub const FORMAT: &str = "dc-signed-alert/1";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not an Ed25519 private key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`): {0}")]
    Private(String),
    #[error("`{0}` is not the base64 of a 32-byte Ed25519 public key")]
    Public(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A worker's signing key.
pub struct AlertSigner {
    key: SigningKey,
    /// The public key, base64: the envelope's `key`, which fan-out nodes look up in their trusted list.
    public: String,
}

impl fmt::Debug for AlertSigner {
    /// The public half only: a signing key must never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertSigner").field("public", &self.public).finish_non_exhaustive()
    }
}

impl AlertSigner {
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let key = SigningKey::from_pkcs8_pem(pem.trim()).map_err(|e| KeyError::Private(e.to_string()))?;
        Ok(Self::new(key))
    }

    /// A new random key (tests, `cluster-key new`).
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        Self::new(SigningKey::from_bytes(&seed))
    }

    fn new(key: SigningKey) -> Self {
        let public = BASE64.encode(key.verifying_key().as_bytes());
        Self { key, public }
    }

    /// The public key, base64 of its 32 bytes (what fan-out nodes list in `trusted_workers`).
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The private key as PKCS#8 PEM, for a key file.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.key
            .to_pkcs8_pem(Default::default())
            .map(|pem| pem.to_string())
            .map_err(|e| KeyError::Private(e.to_string()))
    }

    /// The signed envelope of `alert` (a JSON object's text) for `topic`.
    pub fn seal(&self, topic: &str, alert: &str) -> String {
        let signature = self.key.sign(&signed_bytes(topic, alert));
        format!(
            r#"{{"format":"{FORMAT}","key":"{}","signature":"{}","alert":{alert}}}"#,
            self.public,
            BASE64.encode(signature.to_bytes())
        )
    }

    /// Writes a new key to `path` (owner-only, never over an existing file); returns the signer.
    pub fn write_new(path: &Path) -> Result<Self, KeyError> {
        let signer = Self::generate();
        let pem = signer.to_pem()?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        std::io::Write::write_all(&mut file, pem.as_bytes())?;
        file.sync_all()?;
        Ok(signer)
    }
}

/// What is signed: the format, the topic and the alert's text, each line-separated (a topic holds no newline: MQTT
/// topics are UTF-8 and ours are checked `alerts/{region}/{id}`, NATS subjects hold no white space; the alert text is
/// last, so nothing can shift).
fn signed_bytes(topic: &str, alert: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(FORMAT.len() + topic.len() + alert.len() + 2);
    bytes.extend_from_slice(FORMAT.as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(topic.as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(alert.as_bytes());
    bytes
}

/// One worker key a fan-out node accepts, and the regions it may speak for.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Who holds it (logs, and `signed_by` in the operators' frame).
    pub name: String,
    key: VerifyingKey,
    /// The base64 form, as envelopes carry it.
    public: String,
    /// Regions (county codes) whose topics this key may sign; empty: every region (a single worker behind the broker).
    pub regions: Vec<String>,
}

impl TrustedKey {
    pub fn new(name: &str, public_key: &str, regions: Vec<String>) -> Result<Self, KeyError> {
        let bad = || KeyError::Public(public_key.chars().take(60).collect());
        let bytes: [u8; 32] = BASE64.decode(public_key.trim()).map_err(|_| bad())?.try_into().map_err(|_| bad())?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
        Ok(Self { name: name.to_string(), key, public: BASE64.encode(bytes), regions })
    }
}

/// The keys a fan-out node accepts alert messages from. Empty (the default): every message is refused.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys(Vec<TrustedKey>);

/// Why a message on `alerts/…` was not opened; [`Refusal::reason`] is the `dc_cluster_alerts_received_total` label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a JSON object, or an envelope with a field missing or of the wrong kind.
    Malformed(String),
    /// A plain alert frame with no envelope: anyone with publish rights on the broker can write one.
    Unsigned,
    /// Signed with a key this node does not trust.
    UnknownKey,
    /// The signature does not verify for this topic and text (altered, moved to another topic, or forged).
    BadSignature,
    /// A trusted key signing for a region it is not trusted for.
    KeyRegion { key: String },
    /// A verified message whose content names another region than its topic (or subject).
    OutsideRegion(String),
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::Unsigned => "unsigned",
            Refusal::UnknownKey => "unknown_key",
            Refusal::BadSignature => "bad_signature",
            Refusal::KeyRegion { .. } | Refusal::OutsideRegion(_) => "outside_region",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Malformed(why) => write!(f, "malformed: {why}"),
            Refusal::Unsigned => f.write_str("not signed (no dc-signed-alert envelope)"),
            Refusal::UnknownKey => f.write_str("signed with a key this node does not trust"),
            Refusal::BadSignature => f.write_str("the signature does not verify for this topic and alert"),
            Refusal::KeyRegion { key } => write!(f, "key `{key}` is not trusted for this topic's region"),
            Refusal::OutsideRegion(why) => write!(f, "outside the topic's region: {why}"),
        }
    }
}

/// The envelope as received; every field optional so that a plain alert frame is told apart (`unsigned`) from a
/// broken envelope (`malformed`).
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    format: Option<&'a str>,
    #[serde(borrow, default)]
    key: Option<&'a str>,
    #[serde(borrow, default)]
    signature: Option<&'a str>,
    #[serde(borrow, default)]
    alert: Option<&'a RawValue>,
}

/// A verified message: the alert's exact text and who signed it.
#[derive(Debug)]
pub struct Opened<'p> {
    pub alert: &'p str,
    pub signer: String,
}

impl TrustedKeys {
    pub fn new(keys: Vec<TrustedKey>) -> Self {
        Self(keys)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Verifies `payload` received on `topic` (whose region is `region`) before anything of it is read.
    pub fn open<'p>(&self, topic: &str, region: &str, payload: &'p [u8]) -> Result<Opened<'p>, Refusal> {
        let text = std::str::from_utf8(payload).map_err(|_| Refusal::Malformed("not UTF-8".into()))?;
        let envelope: Envelope<'p> =
            serde_json::from_str(text).map_err(|e| Refusal::Malformed(format!("payload: {e}")))?;
        let (Some(format), Some(key), Some(signature), Some(alert)) =
            (envelope.format, envelope.key, envelope.signature, envelope.alert)
        else {
            return Err(if envelope.format.is_none() && envelope.signature.is_none() {
                Refusal::Unsigned
            } else {
                Refusal::Malformed("an envelope needs format, key, signature and alert".into())
            });
        };
        if format != FORMAT {
            return Err(Refusal::Malformed(format!(
                "format `{}` (expected {FORMAT})",
                format.chars().take(40).collect::<String>()
            )));
        }
        let trusted = self.0.iter().find(|k| k.public == key).ok_or(Refusal::UnknownKey)?;
        let signature = BASE64
            .decode(signature)
            .ok()
            .and_then(|bytes| Signature::from_slice(&bytes).ok())
            .ok_or(Refusal::BadSignature)?;
        trusted.key.verify(&signed_bytes(topic, alert.get()), &signature).map_err(|_| Refusal::BadSignature)?;
        if !trusted.regions.is_empty() && !trusted.regions.iter().any(|r| r == region) {
            return Err(Refusal::KeyRegion { key: trusted.name.clone() });
        }
        Ok(Opened { alert: alert.get(), signer: trusted.name.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_round_trips_through_pem_and_signs_what_it_says() {
        let signer = AlertSigner::generate();
        let again = AlertSigner::from_pem(&signer.to_pem().unwrap()).unwrap();
        assert_eq!(again.public_key(), signer.public_key());
        assert!(!format!("{signer:?}").contains("PRIVATE"));
        let trusted = TrustedKeys::new(vec![TrustedKey::new("w1", signer.public_key(), vec![]).unwrap()]);
        let sealed = again.seal("alerts/10008/A1", r#"{"id":"A1","version":1}"#);
        let opened = trusted.open("alerts/10008/A1", "10008", sealed.as_bytes()).unwrap();
        assert_eq!((opened.alert, opened.signer.as_str()), (r#"{"id":"A1","version":1}"#, "w1"));
        assert!(TrustedKey::new("x", "bm90IGEga2V5", vec![]).is_err());
        assert!(AlertSigner::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----").is_err());
    }

    #[test]
    fn an_openssl_key_file_is_read() {
        // `openssl genpkey -algorithm ed25519` (PKCS#8 v1, no public key inside).
        // Its public key from `openssl pkey -pubout -outform DER | tail -c 32 | base64`.
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIDS/KIwi/EbQ8mBKULEe7WwWyhZ9pWfVtGltALBEsSOw\n-----END PRIVATE KEY-----\n";
        let signer = AlertSigner::from_pem(pem).unwrap();
        assert_eq!(signer.public_key(), "be34ZC3UchKLeOy86CarvQ3N1A5mq4Y+QpfzzHocRss=");
    }
}
