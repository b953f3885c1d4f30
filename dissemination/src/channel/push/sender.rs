//! One push to one subscription (RFC 8030 §5): the body encrypted per RFC 8291 (aes128gcm, one record) by
//! `web-push-native`, signed per RFC 8292 ([`super::vapid`]), `TTL`, `Urgency`, `Topic`; then what the push service's
//! answer means.

use std::time::Duration;

use base64::Engine as _;
use web_push_native::{Auth, WebPushBuilder};

use super::store::{Dispatch, Outcome};
use super::subscription::Subscription;
use super::vapid::{origin, VapidKey, B64};

/// What one attempt came to.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// Finished: delivered, gone, or refused for good.
    Done(Outcome, String),
    /// Try again after at least this long (the push service's `Retry-After`, when it gave one), for `reason`.
    Again { after: Option<Duration>, reason: &'static str, detail: String },
}

/// The request of one push, ready for reqwest: URL, headers, encrypted body.
pub(crate) struct PushRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Encrypts `payload` for `sub` and adds every header. `authorization` is the VAPID header for the endpoint's
/// origin; `ttl_s` what is left of the dispatch's time to live.
pub(crate) fn build(
    sub: &Subscription,
    dispatch: &Dispatch,
    authorization: &str,
    ttl_s: u64,
) -> Result<PushRequest, String> {
    let endpoint: http::Uri = sub.endpoint.parse().map_err(|e| format!("endpoint: {e}"))?;
    let point = B64.decode(&sub.p256dh).map_err(|e| format!("p256dh: {e}"))?;
    let ua_public = web_push_native::p256::PublicKey::from_sec1_bytes(&point).map_err(|e| format!("p256dh: {e}"))?;
    let auth = B64.decode(&sub.auth).map_err(|e| format!("auth: {e}"))?;
    if auth.len() != 16 {
        return Err("auth: not 16 bytes".into());
    }
    let mut ua_auth = Auth::default();
    ua_auth.copy_from_slice(&auth);
    let request = WebPushBuilder::new(endpoint, ua_public, ua_auth)
        .with_valid_duration(Duration::from_secs(ttl_s))
        .build(dispatch.payload(sub.lang).as_bytes().to_vec())
        .map_err(|e| format!("encrypt: {e}"))?;
    let mut headers: Vec<(String, String)> = request
        .headers()
        .iter()
        // reqwest sets the length from the body itself.
        .filter(|(name, _)| *name != http::header::CONTENT_LENGTH)
        .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
        .collect();
    headers.push(("Urgency".into(), dispatch.urgency.clone()));
    headers.push(("Topic".into(), dispatch.topic.clone()));
    headers.push(("Authorization".into(), authorization.to_string()));
    Ok(PushRequest { url: sub.endpoint.clone(), headers, body: request.into_body() })
}

/// The VAPID origin of a subscription's endpoint.
pub(crate) fn endpoint_origin(sub: &Subscription) -> Option<String> {
    origin(&reqwest::Url::parse(&sub.endpoint).ok()?)
}

/// Signs for `origin` (kept by the caller for an hour: one ES256 signature per push service, not per push).
pub(crate) fn authorization(key: &VapidKey, origin: &str, contact: &str, now_s: u64) -> Result<String, String> {
    key.authorization(origin, contact, now_s, VAPID_VALID_S)
}

/// How long a VAPID token is valid: RFC 8292 §2 allows at most 24 h; 12 h leaves room for clock skew.
pub(crate) const VAPID_VALID_S: u64 = 12 * 3600;

/// Sends one push and says what it came to.
pub(crate) async fn send(client: &reqwest::Client, req: PushRequest, timeout: Duration, now_ms: i64) -> Attempt {
    let mut r = client.post(&req.url).timeout(timeout);
    for (name, value) in &req.headers {
        r = r.header(name.as_str(), value.as_str());
    }
    let resp = match r.body(req.body).send().await {
        Ok(resp) => resp,
        Err(e) => {
            let detail = if e.is_timeout() { "timed out".to_string() } else { format!("request failed: {e}") };
            return Attempt::Again { after: None, reason: "network", detail };
        }
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, now_ms));
    let detail = format!("HTTP {status}");
    match status {
        200..=299 => Attempt::Done(Outcome::Delivered, detail),
        // RFC 8030 §7.3: the subscription expired or was removed; it will never work again.
        404 | 410 => Attempt::Done(Outcome::Gone, detail),
        429 => Attempt::Again { after: retry_after, reason: "rate_limited", detail },
        500..=599 => Attempt::Again { after: retry_after, reason: "server_error", detail },
        // 400 (bad request), 401/403 (VAPID refused: a rotated-away key), 413 (too large): sending it again would be
        // refused again.
        _ => Attempt::Done(Outcome::Failed, detail),
    }
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, as a wait from `now_ms`.
pub(crate) fn retry_after(value: &str, now_ms: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(s) = value.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let wait_ms = (at.unix_timestamp() * 1000).saturating_sub(now_ms);
    Some(Duration::from_millis(wait_ms.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after("2", 0), Some(Duration::from_secs(2)));
        let now = 784_111_777_000 - 5_000; // 5 s before Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::from_secs(5)));
        assert_eq!(retry_after("soon", 0), None);
    }
}
