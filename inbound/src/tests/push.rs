//! The push endpoint's body: each kind of bad push gets its own status and reason, is counted under its source,
//! and leaves the active set untouched. Signatures are made with the `hmac` crate, not the `ring` code under test.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::*;
use crate::metrics::METRICS;

fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn signed(secret: &str, t: i64, body: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    let value = format!("t={t},v1={}", sign(secret, t, body));
    h.insert(SIGNATURE_HEADER, value.parse().expect("header"));
    h
}

fn rejected(source: &str, reason: &str) -> u64 {
    METRICS.rejected.with_label_values(&[source, reason]).get()
}

#[tokio::test]
async fn bearer_and_hmac_pushes() {
    let (inbound, mut rx) = Inbound::start(push_config("pushok", true), geo()).expect("starts");
    let now = ms_at(1);
    let body = Msg::rain("CWA-p-1", 0).xml();

    let out = inbound.push(Some("pushok"), &bearer("token-pushok"), body.as_bytes(), now);
    assert_eq!(out, Ok(PushOutcome::Raised { id: "ext:weather@cwa.gov.tw:CWA-p-1".into() }));
    let e = next_event(&mut rx).await;
    assert_eq!((e.kind(), e.alert().source.as_str(), e.alert().public), ("raised", "pushok", true));

    // Without `source`, the credential picks it; the HMAC source signs `<t>.<body>`.
    let body2 = Msg::debris("SWCB-p-1", 0, 120).xml();
    let t = now / 1000;
    let out = inbound.push(None, &signed("secret-pushok", t, body2.as_bytes()), body2.as_bytes(), now);
    assert!(matches!(out, Ok(PushOutcome::Raised { .. })), "{out:?}");
    assert_eq!(next_event(&mut rx).await.alert().source, "pushok-hmac");
    // Within the window either side of our clock.
    let body3 = Msg::debris("SWCB-p-2", 0, 120).xml();
    let early = signed("secret-pushok", t - 299, body3.as_bytes());
    assert!(inbound.push(Some("pushok-hmac"), &early, body3.as_bytes(), now).is_ok());
    // A retry of the same message is fine and changes nothing.
    let out = inbound.push(Some("pushok"), &bearer("token-pushok"), body.as_bytes(), now);
    assert_eq!(out, Ok(PushOutcome::Ignored { why: Ignored::Duplicate }));
    assert_eq!(inbound.active().len(), 3);
    let accepted = METRICS.accepted.with_label_values(&["pushok-hmac", "raised"]).get();
    assert_eq!(accepted, 2);
    assert_eq!(METRICS.ignored.with_label_values(&["pushok", "duplicate"]).get(), 1);
}

#[tokio::test]
async fn bad_pushes_get_their_reason_and_change_nothing() {
    let (inbound, mut rx) = Inbound::start(push_config("pushbad", true), geo()).expect("starts");
    let now = ms_at(1);
    let t = now / 1000;
    let good = Msg::debris("SWCB-b-1", 0, 120).xml();
    let good = good.as_bytes();
    let hmac_src = Some("pushbad-hmac");

    // (what, source, headers, body, status, reason)
    type Case<'a> = (&'a str, Option<&'a str>, HeaderMap, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("no credentials", Some("pushbad"), HeaderMap::new(), good.to_vec(), 401, "unsigned"),
        ("wrong token", Some("pushbad"), bearer("token-other"), good.to_vec(), 401, "bad_token"),
        ("token for the HMAC source", hmac_src, bearer("token-pushbad"), good.to_vec(), 401, "unsigned"),
        ("wrong secret", hmac_src, signed("secret-other", t, good), good.to_vec(), 401, "bad_signature"),
        (
            "body changed after signing",
            hmac_src,
            signed("secret-pushbad", t, good),
            [good, b" "].concat(),
            401,
            "bad_signature",
        ),
        ("stale timestamp", hmac_src, signed("secret-pushbad", t - 301, good), good.to_vec(), 401, "stale_signature"),
        ("future timestamp", hmac_src, signed("secret-pushbad", t + 301, good), good.to_vec(), 401, "stale_signature"),
        ("unknown source", Some("nobody"), bearer("token-pushbad"), good.to_vec(), 401, "unknown_source"),
        ("oversized", Some("pushbad"), bearer("token-pushbad"), vec![b' '; 65537], 413, "too_large"),
        (
            "invalid XML",
            Some("pushbad"),
            bearer("token-pushbad"),
            b"<alert><oops></alert>".to_vec(),
            400,
            "invalid_xml",
        ),
        ("not UTF-8", Some("pushbad"), bearer("token-pushbad"), b"<alert>\xff</alert>".to_vec(), 400, "invalid_xml"),
    ];
    for (what, source, headers, body, status, reason) in cases {
        let counted = source.filter(|s| *s != "nobody").unwrap_or("unknown");
        let before = rejected(counted, reason);
        let err = inbound.push(source, &headers, &body, now).expect_err(what);
        assert_eq!((err.status(), err.reason()), (status, reason), "{what}: {err}");
        assert_eq!(rejected(counted, reason), before + 1, "{what}: counted under {counted}");
    }
    let malformed = {
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_HEADER, "sha256=abc".parse().expect("header"));
        h
    };
    let err = inbound.push(hmac_src, &malformed, good, now).expect_err("malformed header");
    assert_eq!(err.reason(), "bad_signature");

    // Authenticated, but the message itself is wrong.
    let mut unknown = Msg::debris("SWCB-b-2", 0, 120);
    unknown.geocodes = vec!["1001399"];
    let zulu = Msg::debris("SWCB-b-3", 0, 120).xml().replace(&super::t(0), "2026-11-26T10:00:00Z");
    let cap11 = good_with_namespace("urn:oasis:names:tc:emergency:cap:1.1");
    let mut from_cwa_as_swcb = Msg::rain("CWA-b-4", 0);
    from_cwa_as_swcb.sender = "impostor@example.com".into();
    let messages: Vec<(&str, String, u16, &str)> = vec![
        ("unknown geocode", unknown.xml(), 422, "unknown_geocode"),
        ("Z time", zulu, 422, "invalid_cap"),
        ("CAP 1.1", cap11, 422, "invalid_cap"),
        ("sender not allowed", from_cwa_as_swcb.xml(), 403, "sender_not_allowed"),
    ];
    for (what, body, status, reason) in messages {
        let before = rejected("pushbad-hmac", reason);
        let headers = signed("secret-pushbad", t, body.as_bytes());
        let err = inbound.push(hmac_src, &headers, body.as_bytes(), now).expect_err(what);
        assert_eq!((err.status(), err.reason()), (status, reason), "{what}: {err}");
        assert_eq!(rejected("pushbad-hmac", reason), before + 1, "{what}");
    }
    let err = inbound
        .push(hmac_src, &signed("secret-pushbad", t, unknown.xml().as_bytes()), unknown.xml().as_bytes(), now)
        .expect_err("unknown geocode");
    assert!(err.to_string().contains("1001399"), "the reason names the code: {err}");

    assert!(inbound.active().is_empty(), "nothing bad got in");
    assert!(drain(&mut rx).is_empty());
    // And the good message still goes through afterwards.
    let ok = inbound.push(hmac_src, &signed("secret-pushbad", t, good), good, now);
    assert!(matches!(ok, Ok(PushOutcome::Raised { .. })), "{ok:?}");
}

fn good_with_namespace(ns: &str) -> String {
    Msg::debris("SWCB-b-9", 0, 120).xml().replace("urn:oasis:names:tc:emergency:cap:1.2", ns)
}

#[tokio::test]
async fn non_public_sources_and_drills_are_never_public() {
    let (inbound, _rx) = Inbound::start(push_config("pushpriv", false), geo()).expect("starts");
    let now = ms_at(1);
    let actual = Msg::rain("CWA-v-1", 0).xml();
    inbound.push(Some("pushpriv"), &bearer("token-pushpriv"), actual.as_bytes(), now).expect("taken");
    assert!(!inbound.active()[0].public, "source not configured public");

    let (inbound, _rx) = Inbound::start(push_config("pushdrill", true), geo()).expect("starts");
    for (id, status) in [("D-1", "Exercise"), ("D-2", "Test"), ("D-3", "Draft"), ("D-4", "System")] {
        let mut m = Msg::rain(id, 0);
        m.status = status;
        inbound.push(Some("pushdrill"), &bearer("token-pushdrill"), m.xml().as_bytes(), now).expect("taken");
    }
    let active = inbound.active();
    assert_eq!(active.len(), 4);
    for a in &active {
        assert!(!a.public, "{} {:?} must not be public", a.identifier, a.status);
    }
    let json = serde_json::to_value(&active[0]).expect("serialises");
    assert_eq!(json["public"], false);
    assert!(["Exercise", "Test", "Draft", "System"].contains(&json["status"].as_str().unwrap_or("")));
}

#[test]
fn start_needs_a_runtime_and_resolves_env_secrets() {
    let err = Inbound::start(push_config("norun", true), geo()).err().expect("no runtime");
    assert!(err.to_string().contains("tokio runtime"), "{err}");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let text = "[[push]]\nname = \"envsrc\"\ntoken_env = \"DC_TEST_INBOUND_TOKEN_UNSET_7\"\nsenders = [\"a@b\"]\n";
        let config = InboundConfig::from_toml(text, Path::new("inbound.toml")).expect("reads");
        let err = Inbound::start(config, geo()).err().expect("unset variable");
        assert!(err.to_string().contains("DC_TEST_INBOUND_TOKEN_UNSET_7"), "{err}");
    });
}

#[test]
fn config_errors_name_the_key() {
    let cases = [
        ("[[push]]\nname = \"a\"\ntoken = \"x\"\npulbic = true\n", "pulbic"),
        ("[[push]]\nname = \"a\"\n", "exactly one of token"),
        ("[[push]]\nname = \"a\"\ntoken = \"x\"\nhmac_secret = \"y\"\n", "exactly one of token"),
        ("[[feed]]\nname = \"a\"\nurl = \"ftp://x\"\n", "not an http(s) URL"),
        ("[[feed]]\nname = \"A b\"\nurl = \"http://x\"\n", "a-z, 0-9"),
        ("[[feed]]\nname = \"a\"\nurl = \"http://x\"\n[[push]]\nname = \"a\"\ntoken = \"t\"\n", "used twice"),
        ("[[feed]]\nname = \"a\"\nurl = \"http://x\"\ninterval_s = 60\nmax_backoff_s = 10\n", "max_backoff_s"),
        // A push credential must say whom it speaks for.
        ("[[push]]\nname = \"a\"\ntoken = \"t\"\nsenders = []\n", "`a`: senders"),
        ("[[push]]\nname = \"a\"\ntoken = \"t\"\n", "`a`: senders"),
        ("[[push]]\nname = \"a\"\ntoken = \"t\"\nsenders = [\"\"]\n", "`a`: senders"),
        ("[[push]]\nname = \"a\"\ntoken = \"t\"\nsenders = [\"s\"]\nmay_reference = [\"b\"]\n", "may_reference"),
        ("[[push]]\nname = \"a\"\ntoken = \"t\"\nsenders = [\"s\"]\nmay_reference = [\"a\"]\n", "may_reference"),
    ];
    for (text, expected) in cases {
        let err = InboundConfig::from_toml(text, Path::new("config/inbound.toml")).expect_err(text);
        let msg = err.to_string();
        assert!(msg.contains(expected) && msg.contains("config/inbound.toml"), "{text}: {msg}");
    }
    // The shipped production template and the demo file load.
    let example = include_str!("../../../config/inbound.example.toml");
    let config = InboundConfig::from_toml(example, Path::new("config/inbound.example.toml"))
        .expect("config/inbound.example.toml");
    assert!(!config.feeds.is_empty() && !config.pushes.is_empty());
    // The server puts http.public_url for `{public_url}` first (the demo's vehicle-detector feed is its own).
    let demo = include_str!("../../../config/inbound.toml").replace("{public_url}", "http://127.0.0.1:8080");
    let config = InboundConfig::from_toml(&demo, Path::new("config/inbound.toml")).expect("config/inbound.toml");
    assert!(!config.pushes.is_empty() && !config.vd_feeds.is_empty());
}

/// SWCB pushes its own warnings; `relay` is another push source that (mis)configured or not, may send messages
/// naming SWCB as sender; `trusted` names `swcb` in `may_reference`.
fn two_agencies() -> InboundConfig {
    let text = r#"
        [[push]]
        name = "own-swcb"
        token = "token-swcb"
        public = true
        senders = ["swcb@swcb.gov.tw"]

        [[push]]
        name = "own-relay"
        token = "token-relay"
        public = true
        senders = ["swcb@swcb.gov.tw", "weather@cwa.gov.tw"]

        [[push]]
        name = "own-trusted"
        token = "token-trusted"
        public = true
        senders = ["swcb@swcb.gov.tw"]
        may_reference = ["own-swcb"]
    "#;
    InboundConfig::from_toml(text, Path::new("test.toml")).expect("test config")
}

#[tokio::test]
async fn a_source_cannot_update_or_cancel_a_warning_another_source_opened() {
    let (inbound, mut rx) = Inbound::start(two_agencies(), geo()).expect("starts");
    let now = ms_at(2);
    let push = |source: &str, m: &Msg| {
        let token = format!("token-{}", source.trim_start_matches("own-"));
        inbound.push(Some(source), &bearer(&token), m.xml().as_bytes(), now)
    };
    let warning = Msg::debris("SWCB-own-1", 0, 360);
    assert!(matches!(push("own-swcb", &warning), Ok(PushOutcome::Raised { .. })));
    let id = next_event(&mut rx).await.alert().id.clone();

    // Another source, even one allowed to name SWCB as sender, can neither cancel nor update it, nor re-issue
    // its identifier: refused with its reason, counted, and the warning stays as it was.
    let before = rejected("own-relay", "foreign_source");
    let cancel = warning.follow_up("SWCB-own-1-cancel", "Cancel", 1);
    let mut update = warning.follow_up("SWCB-own-1-update", "Update", 1);
    update.severity = "Minor";
    let mut reissue = Msg::debris("SWCB-own-1", 1, 30);
    reissue.headline_zh = "解除".into();
    for (what, m) in [("cancel", &cancel), ("update", &update), ("re-issue", &reissue)] {
        let err = push("own-relay", m).expect_err(what);
        assert_eq!((err.status(), err.reason()), (403, "foreign_source"), "{what}: {err}");
        assert!(err.to_string().contains("own-swcb"), "{what}: names the owner: {err}");
    }
    assert_eq!(rejected("own-relay", "foreign_source"), before + 3);
    let active = inbound.active();
    assert_eq!((active.len(), active[0].id.as_str(), active[0].version), (1, id.as_str(), 1), "{active:?}");
    assert!(drain(&mut rx).is_empty(), "nothing announced");

    // A source configured to may update it; the owner keeps the chain and can still cancel it.
    assert!(matches!(push("own-trusted", &update), Ok(PushOutcome::Updated { .. })));
    assert_eq!(drain(&mut rx), vec![ev("updated", &id, 2)]);
    assert_eq!(inbound.active()[0].source, "own-trusted", "the version names who sent it");
    let err = push("own-relay", &update.follow_up("SWCB-own-1-again", "Cancel", 2)).expect_err("still not relay's");
    assert_eq!(err.reason(), "foreign_source");
    let own_cancel = update.follow_up("SWCB-own-1-end", "Cancel", 2);
    assert!(matches!(push("own-swcb", &own_cancel), Ok(PushOutcome::Cancelled { .. })));
    assert_eq!(drain(&mut rx), vec![ev("cancelled", &id, 2)]);

    // The relay's own warnings are its own to change.
    let rain = Msg::rain("CWA-own-2", 0);
    assert!(matches!(push("own-relay", &rain), Ok(PushOutcome::Raised { .. })));
    assert!(matches!(push("own-relay", &rain.follow_up("CWA-own-2c", "Cancel", 1)), Ok(PushOutcome::Cancelled { .. })));
    assert!(inbound.active().is_empty());
}

#[test]
fn inbound_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Inbound>();
    assert_send_sync::<ExternalCoverage>();
}
