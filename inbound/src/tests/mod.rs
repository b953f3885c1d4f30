//! Tests of the inbound side as a whole. Unit tests of one part (geocode nesting, circles, the Atom reader, the
//! signature header) live in that part's file.
//!
//! - `book`: the CAP rules on the active set — duplicates, Update/Cancel chains, out-of-order, expiry, status.
//! - `feed`: a real HTTP server on 127.0.0.1:0 serving an Atom feed that changes between polls; the exact event
//!   sequence, 304s, backoff and recovery, bad entries counted and skipped; links to other hosts, to private,
//!   link-local and not-allowed loopback addresses, cross-origin redirects and names resolving to refused addresses,
//!   each refused and counted while counting servers on 127.0.0.2/127.0.0.3 prove nothing reached them.
//! - `push`: tokens, HMAC signatures (signed with the `hmac` crate, independent of the `ring` code under test),
//!   stale and missing signatures, oversized bodies, invalid XML and CAP, unknown geocodes, foreign senders, one
//!   source's Update, Cancel or re-issue of a warning another source opened.
//! - `restart`: the book saved in a data dir and restored: warnings, duplicates, cancels, expiry while down.
//! - `fixtures`: Taiwan-shaped CAP samples (`fixtures/*.xml`) validated against the OASIS CAP 1.2 XSD with
//!   `xmllint`, then pushed and placed.

mod book;
mod feed;
mod fixtures;
mod push;
mod restart;

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};

use geo_index::{GeoIndex, LoadPolicy, Resolution};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use encoders::cap::{format_cap_time, TAIWAN_OFFSET};

use super::*;

/// The shipped demo zones, so tests place messages on exactly what is deployed.
const ZONES: &str = include_str!("../../../config/zones.geojson");

/// Zone ids of config/zones.geojson used below.
pub(crate) const SHENMU: &str = "dfa-xinyi-shenmu";
pub(crate) const DONGPU: &str = "dfa-xinyi-dongpu";
pub(crate) const TONGFU: &str = "dfa-xinyi-tongfu";
pub(crate) const XINYI: &str = "township-xinyi";
/// Provincial Highway 21 at Shenmu: a road segment (issue 28), inside Xinyi township.
pub(crate) const PH21: &str = "ph21-xinyi-shenmu";
pub(crate) const ZHUOSHUI: &str = "reach-zhuoshui-mid";
pub(crate) const FWY3: &str = "fwy3-nantou";

pub(crate) fn geo() -> Arc<GeoIndex> {
    static GEO: OnceLock<Arc<GeoIndex>> = OnceLock::new();
    GEO.get_or_init(|| {
        let mut g = GeoIndex::new(Resolution::Nine);
        g.load_zones(ZONES, LoadPolicy::StopOnFirst).expect("demo zones load");
        Arc::new(g)
    })
    .clone()
}

/// The tests' "now": 2026-11-26 18:00 Taiwan time.
pub(crate) const BASE: OffsetDateTime = datetime!(2026-11-26 18:00 +8);

pub(crate) fn base_ms() -> i64 {
    BASE.unix_timestamp() * 1000
}

/// CAP time `minutes` after [`BASE`], in Taiwan time.
pub(crate) fn t(minutes: i64) -> String {
    format_cap_time((BASE + Duration::minutes(minutes)).to_offset(TAIWAN_OFFSET)).expect("CAP time")
}

/// Unix ms `minutes` after [`BASE`].
pub(crate) fn ms_at(minutes: i64) -> i64 {
    base_ms() + minutes * 60_000
}

/// A clock the test moves by hand.
#[derive(Clone)]
pub(crate) struct TestClock(Arc<AtomicI64>);

impl TestClock {
    pub fn at(minutes: i64) -> Self {
        TestClock(Arc::new(AtomicI64::new(ms_at(minutes))))
    }
    pub fn set(&self, minutes: i64) {
        self.0.store(ms_at(minutes), Ordering::SeqCst);
    }
    pub fn clock(&self) -> Clock {
        let c = self.0.clone();
        Arc::new(move || c.load(Ordering::SeqCst))
    }
}

/// A CAP message in the shape Taiwan's civil alert platform carries: zh-TW info first, then en-US, the event code
/// under `profile:CAP-TWP:Event:1.0`, areas by Taiwan_Geocode_103 and/or polygon/circle.
#[derive(Debug, Clone)]
pub(crate) struct Msg {
    pub identifier: String,
    pub sender: String,
    pub sent: String,
    pub status: &'static str,
    pub msg_type: &'static str,
    pub scope: &'static str,
    /// `(identifier, sent)` of earlier messages by the same sender.
    pub references: Vec<(String, String)>,
    pub event: &'static str,
    pub event_code: &'static str,
    pub severity: &'static str,
    pub headline_zh: String,
    pub headline_en: String,
    pub expires: Option<String>,
    pub geocodes: Vec<&'static str>,
    pub polygon: Option<&'static str>,
    pub circle: Option<&'static str>,
}

impl Msg {
    /// A CWA heavy-rain Alert for Xinyi Township, sent `sent_min` after BASE, expiring 6 h later.
    pub fn rain(identifier: &str, sent_min: i64) -> Msg {
        Msg {
            identifier: identifier.to_string(),
            sender: "weather@cwa.gov.tw".into(),
            sent: t(sent_min),
            status: "Actual",
            msg_type: "Alert",
            scope: "Public",
            references: Vec::new(),
            event: "降雨",
            event_code: "rainfall",
            severity: "Severe",
            headline_zh: "豪雨特報".into(),
            headline_en: "Extremely heavy rain advisory".into(),
            expires: Some(t(sent_min + 360)),
            geocodes: vec!["1000812"],
            polygon: None,
            circle: None,
        }
    }

    /// An SWCB debris-flow yellow alert for Xinyi Township.
    pub fn debris(identifier: &str, sent_min: i64, expires_min: i64) -> Msg {
        Msg {
            sender: "swcb@swcb.gov.tw".into(),
            event: "土石流",
            event_code: "debrisFlow",
            severity: "Moderate",
            headline_zh: "土石流黃色警戒".into(),
            headline_en: "Debris flow yellow alert".into(),
            expires: Some(t(expires_min)),
            ..Msg::rain(identifier, sent_min)
        }
    }

    /// This message as an Update (or Cancel) of `earlier`, sent `sent_min` after BASE.
    pub fn follow_up(&self, identifier: &str, msg_type: &'static str, sent_min: i64) -> Msg {
        let mut m = self.clone();
        m.identifier = identifier.to_string();
        m.msg_type = msg_type;
        m.sent = t(sent_min);
        m.references = vec![(self.identifier.clone(), self.sent.clone())];
        m
    }

    pub fn xml(&self) -> String {
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        x.push_str("<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">\n");
        x.push_str(&format!("  <identifier>{}</identifier>\n", self.identifier));
        x.push_str(&format!("  <sender>{}</sender>\n", self.sender));
        x.push_str(&format!("  <sent>{}</sent>\n", self.sent));
        x.push_str(&format!("  <status>{}</status>\n", self.status));
        x.push_str(&format!("  <msgType>{}</msgType>\n", self.msg_type));
        x.push_str(&format!("  <scope>{}</scope>\n", self.scope));
        if self.status != "Actual" {
            x.push_str("  <note>演練訊息 exercise message</note>\n");
        }
        if !self.references.is_empty() {
            let refs: Vec<String> =
                self.references.iter().map(|(id, sent)| format!("{},{id},{sent}", self.sender)).collect();
            x.push_str(&format!("  <references>{}</references>\n", refs.join(" ")));
        }
        for (lang, headline, area_name) in [
            ("zh-TW", &self.headline_zh, "南投縣信義鄉"),
            ("en-US", &self.headline_en, "Xinyi Township, Nantou County"),
        ] {
            x.push_str("  <info>\n");
            x.push_str(&format!("    <language>{lang}</language>\n    <category>Met</category>\n"));
            x.push_str(&format!("    <event>{}</event>\n", self.event));
            x.push_str("    <responseType>Monitor</responseType>\n    <urgency>Expected</urgency>\n");
            x.push_str(&format!("    <severity>{}</severity>\n    <certainty>Likely</certainty>\n", self.severity));
            x.push_str(&format!(
                "    <eventCode><valueName>profile:CAP-TWP:Event:1.0</valueName><value>{}</value></eventCode>\n",
                self.event_code
            ));
            x.push_str(&format!("    <effective>{}</effective>\n", self.sent));
            if let Some(e) = &self.expires {
                x.push_str(&format!("    <expires>{e}</expires>\n"));
            }
            x.push_str(&format!("    <headline>{headline}</headline>\n"));
            x.push_str(&format!("    <area>\n      <areaDesc>{area_name}</areaDesc>\n"));
            if let Some(p) = self.polygon {
                x.push_str(&format!("      <polygon>{p}</polygon>\n"));
            }
            if let Some(c) = self.circle {
                x.push_str(&format!("      <circle>{c}</circle>\n"));
            }
            for g in &self.geocodes {
                x.push_str(&format!(
                    "      <geocode><valueName>Taiwan_Geocode_103</valueName><value>{g}</value></geocode>\n"
                ));
            }
            x.push_str("    </area>\n  </info>\n");
        }
        x.push_str("</alert>\n");
        x
    }
}

/// An inbound config with one bearer push source `name` and one HMAC push source `{name}-hmac`.
pub(crate) fn push_config(name: &str, public: bool) -> InboundConfig {
    let toml = format!(
        r#"
        [[push]]
        name = "{name}"
        token = "token-{name}"
        public = {public}
        max_bytes = 65536
        senders = ["weather@cwa.gov.tw", "swcb@swcb.gov.tw", "wra@wra.gov.tw"]

        [[push]]
        name = "{name}-hmac"
        hmac_secret = "secret-{name}"
        public = {public}
        max_bytes = 65536
        senders = ["swcb@swcb.gov.tw", "weather@cwa.gov.tw"]
        "#
    );
    InboundConfig::from_toml(&toml, Path::new("test.toml")).expect("test config")
}

pub(crate) fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::AUTHORIZATION, format!("Bearer {token}").parse().expect("header"));
    h
}

/// Waits (bounded) for the next event.
pub(crate) async fn next_event(rx: &mut mpsc::Receiver<ExternalEvent>) -> ExternalEvent {
    match tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await {
        Ok(Some(e)) => e,
        Ok(None) => panic!("event channel closed"),
        Err(_) => panic!("no event within 10 s"),
    }
}

/// `(kind, id, version)` of every event already queued, without waiting.
pub(crate) fn drain(rx: &mut mpsc::Receiver<ExternalEvent>) -> Vec<(String, String, u32)> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push((e.kind().to_string(), e.alert().id.clone(), e.alert().version));
    }
    out
}

pub(crate) fn ev(kind: &str, id: &str, version: u32) -> (String, String, u32) {
    (kind.to_string(), id.to_string(), version)
}

/// The OASIS CAP 1.2 XSD, found once for the whole crate's tests (`cap/tests/xsd.rs`). Panics when missing: a
/// skipped validation would look like a passed one.
pub(crate) fn xsd_path() -> &'static Path {
    encoders::test_support::xsd_path()
}

/// `xmllint --noout --schema <XSD> -`: Ok or the tool's complaint.
pub(crate) fn xmllint(xml: &str) -> Result<(), String> {
    encoders::test_support::xmllint(xml, Some(xsd_path()))
}
