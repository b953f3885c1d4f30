//! Who is pushing: a bearer token or an HMAC-SHA256 signature per source.
//!
//! Signature header (the scheme of Stripe's and GitHub's webhooks, so agencies' HTTP tooling already knows it):
//!
//! ```text
//! X-DC-Signature: t=1764151200,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd
//! ```
//!
//! `t` is Unix seconds; `v1` is the lowercase hex HMAC-SHA256, keyed with the source's secret (its UTF-8 bytes),
//! of `"<t>.<body>"`. Binding the timestamp into the MAC and bounding `|now - t|` limits replay to the window, and
//! de-duplication on (sender, identifier, sent) makes a replay within it harmless. Several `v1=` may be sent while
//! a secret is being rotated; one matching is enough. Comparisons are constant-time.

use http::HeaderMap;
use ring::{digest, hmac};

use super::error::PushError;

/// Name of the signature header.
pub const SIGNATURE_HEADER: &str = "x-dc-signature";

/// A push source's credential, resolved from config and environment.
#[derive(Clone)]
pub(crate) enum Credential {
    /// SHA-256 of the token: compared digest to digest, so the comparison time says nothing about the length.
    Token(digest::Digest),
    Hmac(hmac::Key),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets, even hashed.
        match self {
            Credential::Token(_) => f.write_str("Token(…)"),
            Credential::Hmac(_) => f.write_str("Hmac(…)"),
        }
    }
}

impl Credential {
    pub fn token(token: &str) -> Self {
        Credential::Token(digest::digest(&digest::SHA256, token.as_bytes()))
    }

    pub fn hmac_secret(secret: &str) -> Self {
        Credential::Hmac(hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()))
    }

    /// Checks this source's credential against the request. `window_s` bounds the signature timestamp.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now_ms: i64, window_s: u64) -> Result<(), PushError> {
        match self {
            Credential::Token(expected) => {
                let given = bearer(headers).ok_or(PushError::Unsigned)?;
                let given = digest::digest(&digest::SHA256, given.as_bytes());
                if ct_eq(given.as_ref(), expected.as_ref()) {
                    Ok(())
                } else {
                    Err(PushError::BadToken)
                }
            }
            Credential::Hmac(key) => {
                let header = headers.get(SIGNATURE_HEADER).ok_or(PushError::Unsigned)?;
                let header = header.to_str().map_err(|_| PushError::BadSignature("header is not ASCII"))?;
                let (t, macs) = parse_signature(header)?;
                let now = now_ms.div_euclid(1000);
                if now.abs_diff(t) > window_s {
                    return Err(PushError::StaleSignature { t, now, window_s });
                }
                let mut ctx = hmac::Context::with_key(key);
                ctx.update(t.to_string().as_bytes());
                ctx.update(b".");
                ctx.update(body);
                let expected = ctx.sign();
                if macs.iter().any(|m| ct_eq(m, expected.as_ref())) {
                    Ok(())
                } else {
                    Err(PushError::BadSignature("HMAC does not match"))
                }
            }
        }
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, per RFC 7235).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// `t=<secs>,v1=<hex>[,v1=<hex>…]`; unknown keys are skipped so a future `v2` does not break v1 receivers.
fn parse_signature(header: &str) -> Result<(i64, Vec<Vec<u8>>), PushError> {
    let mut t = None;
    let mut macs = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            return Err(PushError::BadSignature("expected `t=<unix seconds>,v1=<hex>`"));
        };
        match k.trim() {
            "t" => {
                let secs = v.trim().parse::<i64>();
                t = Some(secs.map_err(|_| PushError::BadSignature("`t` is not Unix seconds"))?);
            }
            "v1" => macs.push(hex_decode(v.trim()).ok_or(PushError::BadSignature("`v1` is not hex"))?),
            _ => {}
        }
    }
    let t = t.ok_or(PushError::BadSignature("no `t=` timestamp"))?;
    if macs.is_empty() {
        return Err(PushError::BadSignature("no `v1=` signature"));
    }
    Ok((t, macs))
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() & 1 != 0 || s.len() > 128 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes().chunks(2).map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?)).collect()
}

/// Constant-time equality (for equal lengths; lengths are not secret here: both sides are fixed-size digests).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn bearer_tokens() {
        let c = Credential::token("s3cret-token");
        assert_eq!(c.verify(&headers(&[("authorization", "Bearer s3cret-token")]), b"", 0, 300), Ok(()));
        assert_eq!(c.verify(&headers(&[("authorization", "bearer  s3cret-token ")]), b"", 0, 300), Ok(()));
        assert_eq!(c.verify(&headers(&[("authorization", "Bearer s3cret")]), b"", 0, 300), Err(PushError::BadToken));
        assert_eq!(c.verify(&headers(&[("authorization", "Basic eDp5")]), b"", 0, 300), Err(PushError::Unsigned));
        assert_eq!(c.verify(&HeaderMap::new(), b"", 0, 300), Err(PushError::Unsigned));
    }

    #[test]
    fn signature_header_forms() {
        assert!(parse_signature("t=1,v1=00ff").is_ok());
        assert_eq!(parse_signature("t=1, v1=00ff ,v1=ab, v0=zz").map(|(_, m)| m.len()), Ok(2));
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=0", "t=1,v1=zz", "garbage"] {
            assert!(matches!(parse_signature(bad), Err(PushError::BadSignature(_))), "{bad}");
        }
    }

    #[test]
    fn hex() {
        assert_eq!(hex_decode("00fFa1"), Some(vec![0, 255, 161]));
        assert_eq!(hex_decode("0"), None);
        assert_eq!(hex_decode("0g"), None);
    }
}
