//! Operator tokens: hashed at rest, scoped.
//!
//! A token is a random string handed to one operator or tool; the server keeps only its SHA-256 (a random 128-bit
//! token needs no slow hash: there is nothing to guess from a dictionary). Scopes nest: `admin` ⊃ `operate` ⊃ `read`.

use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read alerts, sensors, history; the operator socket.
    Read,
    /// Acknowledge, approve and cancel alerts; verify reports.
    Operate,
    /// Change the sensor registry, subscribers and devices.
    Admin,
}

/// One configured token: `[[operator_tokens]]` in the main config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub scope: Scope,
    /// Hex SHA-256 of the token (`disaster-cloud token new` prints it).
    pub sha256: String,
}

#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    entries: Vec<(String, Scope, [u8; 32])>,
}

impl TokenSet {
    /// `entries` from config; `env_admin` (DC_OPERATOR_TOKEN) as an admin token named "env".
    pub fn new(entries: &[TokenEntry], env_admin: Option<&str>) -> Result<Self, String> {
        let mut set = TokenSet::default();
        for e in entries {
            let bytes = decode_hex32(&e.sha256)
                .ok_or_else(|| format!("operator_tokens `{}`: sha256 must be 64 hex digits", e.name))?;
            set.entries.push((e.name.clone(), e.scope, bytes));
        }
        if let Some(token) = env_admin {
            set.entries.push(("env".into(), Scope::Admin, digest(token)));
        }
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The token's name and scope, if it is one of ours. Compares digests in constant time.
    pub fn check(&self, token: &str) -> Option<(&str, Scope)> {
        let given = digest(token);
        let mut found = None;
        for (name, scope, hash) in &self.entries {
            if constant_time_eq(hash, &given) {
                found = Some((name.as_str(), *scope));
            }
        }
        found
    }
}

pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(out)
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a handler needs: `Operator<Read>` (or `Operate`, `Admin`) in its arguments authenticates the request and checks
/// the scope before the handler runs, so no handler can forget to.
///
/// The extractor itself (`FromRequestParts`) is in `web/mod.rs` beside the token check, so that this file needs
/// nothing of the server and `config.rs` and `App` can hold its types without a cycle.
pub struct Operator<S: Needs> {
    /// The token's name (`[[operator_tokens]] name`, "env" for `DC_OPERATOR_TOKEN`): who the audit trail names for
    /// what this request does.
    pub name: String,
    /// The token's scope, at least `S::SCOPE`: a handler may allow more to those who have more.
    pub scope: Scope,
    /// `S`, the scope the handler asked for, lives only in the type.
    pub(super) _needs: std::marker::PhantomData<S>,
}

/// The scope a handler needs, as a type.
pub trait Needs: Send + Sync {
    const SCOPE: Scope;
}

pub struct Read;
pub struct Operate;
pub struct Admin;

impl Needs for Read {
    const SCOPE: Scope = Scope::Read;
}
impl Needs for Operate {
    const SCOPE: Scope = Scope::Operate;
}
impl Needs for Admin {
    const SCOPE: Scope = Scope::Admin;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_tokens_by_hash() {
        let entry = TokenEntry { name: "alice".into(), scope: Scope::Read, sha256: hex(&digest("alice-token")) };
        let set = TokenSet::new(&[entry], Some("root-token")).unwrap();
        assert_eq!(set.check("alice-token"), Some(("alice", Scope::Read)));
        assert_eq!(set.check("root-token"), Some(("env", Scope::Admin)));
        assert_eq!(set.check("nope"), None);
        assert!(Scope::Admin > Scope::Operate && Scope::Operate > Scope::Read);
    }

    #[test]
    fn bad_hash_names_the_token() {
        let entry = TokenEntry { name: "bob".into(), scope: Scope::Read, sha256: "xyz".into() };
        assert!(TokenSet::new(&[entry], None).unwrap_err().contains("bob"));
    }
}
