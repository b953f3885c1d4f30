//! One push's cryptography exactly as the dispatcher runs it, for `dc-bench push` (the cost per push on one core):
//! [`sender::build`] (RFC 8291 aes128gcm by `web-push-native`: a fresh ECDH key, HKDF, AES-GCM, the headers) and the
//! VAPID signature ([`VapidKey::authorization`], RFC 8292 ES256), which the dispatcher makes once an hour per push
//! service and key, so a real push pays the encryption and a share of one signature.

use std::path::Path;

use super::notice::{Loudness, Pushed};
use super::sender;
use super::store::Dispatch;
use super::subscription::{PushLang, Subscription};
use super::vapid::VapidKeys;
use encoders::cap::Severity;

/// The `sub` claim of the benchmark's tokens.
const CONTACT: &str = "mailto:bench@disaster-cloud.example.tw";

/// A subscription, a dispatch and our VAPID key, ready to push again and again.
pub struct OnePush {
    sub: Subscription,
    dispatch: Dispatch,
    keys: VapidKeys,
    origin: String,
}

impl OnePush {
    /// `dir`: where the VAPID key is made (a scratch folder); `p256dh`/`auth`: the browser's keys (base64url);
    /// `payload`: the JSON the service worker would read.
    pub fn new(dir: &Path, endpoint: &str, p256dh: &str, auth: &str, payload: &str) -> Result<OnePush, String> {
        let keys = VapidKeys::load(dir).map_err(|e| e.to_string())?;
        let sub = Subscription {
            id: super::subscription::subscription_id(endpoint),
            endpoint: endpoint.to_string(),
            p256dh: p256dh.to_string(),
            auth: auth.to_string(),
            zones: Default::default(),
            lang: PushLang::ZhTw,
            client: String::new(),
            address: String::new(),
            key: keys.current.id.clone(),
            created_ms: 0,
        };
        let origin = sender::endpoint_origin(&sub).ok_or("endpoint has no origin")?;
        let dispatch = Dispatch {
            seq: 0,
            alert_id: "bench".into(),
            identifier: "bench.1".into(),
            area_id: String::new(),
            pushed: Pushed { version: 1, level_index: Some(1), severity: Severity::Severe, ended: false },
            loudness: Loudness::Notify,
            urgency: "high".into(),
            topic: super::notice::topic("bench"),
            at_ms: 0,
            zh_tw: payload.to_string(),
            en: payload.to_string(),
        };
        Ok(OnePush { sub, dispatch, keys, origin })
    }

    /// A VAPID `Authorization` header signed now (`now_s`), valid for the dispatcher's 12 h.
    pub fn sign(&self, now_s: u64) -> Result<String, String> {
        sender::authorization(&self.keys.current, &self.origin, CONTACT, now_s)
    }

    /// Encrypts the payload for the subscription and builds the request; the body's length on the wire.
    pub fn encrypt(&self, authorization: &str) -> Result<usize, String> {
        Ok(sender::build(&self.sub, &self.dispatch, authorization, 3600)?.body.len())
    }
}
