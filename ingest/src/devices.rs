//! Device credentials for the plain MQTT listeners: username = device id, password checked against an argon2 hash.
//!
//! Plaintext `password` entries are accepted for the demo's credential file and hashed on load, so no plaintext is
//! kept in memory after start; production files carry `password_hash` (PHC string) only.

use std::collections::HashMap;
use std::path::Path;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Deserialize;

use crate::topic::is_valid_device_id;
use crate::IngestError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceEntry {
    id: String,
    password: Option<String>,
    password_hash: Option<String>,
    #[serde(default)]
    revoked: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevicesFile {
    #[serde(default)]
    device: Vec<DeviceEntry>,
}

/// Why a login was refused; the label of `dc_ingest_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    UnknownDevice,
    BadPassword,
    Revoked,
}

impl LoginRefusal {
    pub fn as_label(self) -> &'static str {
        match self {
            Self::UnknownDevice => "unknown_device",
            Self::BadPassword => "bad_password",
            Self::Revoked => "revoked",
        }
    }
}

#[derive(Debug, Clone)]
struct Credential {
    phc: String,
    revoked: bool,
}

#[derive(Debug, Clone, Default)]
pub struct DeviceStore {
    devices: HashMap<String, Credential>,
}

impl DeviceStore {
    pub fn from_toml(text: &str, file: &Path) -> Result<Self, IngestError> {
        let parsed: DevicesFile =
            toml::from_str(text).map_err(|e| IngestError::Config { file: file.into(), message: e.to_string() })?;
        let mut store = DeviceStore::default();
        for entry in parsed.device {
            let err = |message: &str| IngestError::Device {
                file: file.into(),
                device: entry.id.clone(),
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
            if store.devices.insert(entry.id.clone(), Credential { phc, revoked: entry.revoked }).is_some() {
                return Err(err("duplicate id"));
            }
        }
        Ok(store)
    }

    /// Checks a login. Costs an argon2 verification (tens of milliseconds): call it off the async workers.
    pub fn verify(&self, device_id: &str, password: &str) -> Result<(), LoginRefusal> {
        let cred = self.devices.get(device_id).ok_or(LoginRefusal::UnknownDevice)?;
        if cred.revoked {
            return Err(LoginRefusal::Revoked);
        }
        let hash = PasswordHash::new(&cred.phc).map_err(|_| LoginRefusal::BadPassword)?;
        Argon2::default().verify_password(password.as_bytes(), &hash).map_err(|_| LoginRefusal::BadPassword)
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

pub fn hash_password(plain: &str) -> Result<String, IngestError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(plain.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| IngestError::Hash(e.to_string()))
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
        assert_eq!(store.verify("RG0001", "s3cret"), Ok(()));
        assert_eq!(store.verify("RG0001", "wrong"), Err(LoginRefusal::BadPassword));
        assert_eq!(store.verify("NOPE", "s3cret"), Err(LoginRefusal::UnknownDevice));
        assert_eq!(store.verify("RG0002", "x"), Err(LoginRefusal::Revoked));
    }

    #[test]
    fn refuses_ambiguous_entries() {
        let e = DeviceStore::from_toml("[[device]]\nid = \"A1\"\n", Path::new("devices.toml")).unwrap_err();
        assert!(e.to_string().contains("A1"), "{e}");
    }
}
