//! Memory bounded by configuration, not uptime: hundreds of alert versions through raise/update/clear, the
//! in-memory messages and alerts stay under a bound, old released messages come from the CAP archive, the
//! references of a long-lived alert stay bounded, held messages of forgotten alerts stay private, and a restart
//! (replay + compaction) keeps all of that.

use std::time::Duration;

use super::*;

const LONG: Duration = Duration::from_secs(30);
/// `[feed] recent` in these tests.
const RECENT: usize = 3;

fn counts(d: &Dissemination) -> (usize, usize) {
    let st = lock(&d.inner.state);
    (st.messages.len(), st.alerts.len())
}

/// `<sent>` of a CAP message.
fn sent_of(xml: &str) -> &str {
    let start = xml.find("<sent>").expect("sent") + "<sent>".len();
    &xml[start..start + xml[start..].find("</sent>").expect("sent ends")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_alert_lifecycles_keep_memory_bounded_and_old_messages_served() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = subscriber_toml("a", &format!("http://{}/a", rx.addr), "") + &format!("[feed]\nrecent = {RECENT}\n");
    let d = start(config(&extra), dir.path());

    // One alert lives through the whole run, updated between every other change.
    let mut long_version = 1;
    d.alert_changed(&view("LONG", long_version));
    let mut clock = 1_764_122_400_000_i64;
    let mut tick = |mut v: AlertView| {
        clock += 1000;
        v.updated_ms = clock;
        v
    };
    for n in 0..60 {
        let id = format!("A{n}");
        // Every tenth alert waits for an approval that never comes.
        let held = n % 10 == 5;
        for version in 1..=6 {
            let mut v = rain_view(&id, version, "township-jiaxian");
            v.public_release = !held;
            if version == 6 {
                v = ended(v, ViewState::Cleared);
            }
            d.alert_changed(&tick(v));
            long_version += 1;
            d.alert_changed(&view("LONG", long_version));
        }
        if n == 5 {
            assert_eq!(d.cap_xml("A5.1"), None, "held: not public");
            assert!(d.operator_cap_xml("A5.1").is_some(), "held: operators see it");
        }
        if n % 10 == 9 {
            wait_for(LONG, "queue drained", || d.subscribers()[0].queued == 0).await;
            let (messages, alerts) = counts(&d);
            // LONG and the alert in play; RECENT ended ones in the feed and RECENT ended held ones (6 held bodies
            // each at most); LONG's latest.
            assert!(alerts <= 2 + 2 * RECENT, "{alerts} alerts in memory after {n}");
            assert!(messages <= 2 + RECENT + 6 * RECENT, "{messages} messages in memory after {n}");
        }
    }
    assert!(long_version > 300);

    // An old released message, long forgotten in memory, comes from the archive.
    assert!(!lock(&d.inner.state).messages.contains_key("A0.1"));
    let old = d.cap_xml("A0.1").expect("A0.1 served from the archive");
    assert!(old.contains("<identifier>A0.1</identifier>"));
    assert!(dir.path().join("cap").join("A0.1.xml").is_file());
    assert_eq!(d.cap_xml("../A0.1"), None);

    // The held messages of a forgotten alert: not served to anyone, never written.
    assert!(!lock(&d.inner.state).alerts.contains_key("A5"));
    assert_eq!(d.cap_xml("A5.1"), None);
    assert_eq!(d.operator_cap_xml("A5.1"), None);
    assert!(!dir.path().join("cap").join("A5.1.xml").exists());

    // LONG's latest Update references its first message and the most recent others, each with its own `sent`;
    // the ones in between are left out (`MAX_REFERENCES`), though still served.
    let check_references = |d: &Dissemination, version: u32| {
        let xml = d.cap_xml(&format!("LONG.{version}")).expect("latest LONG served");
        assert!(xml.contains("<msgType>Update</msgType>"));
        let refs = &xml[xml.find("<references>").expect("references")..xml.find("</references>").unwrap()];
        assert_eq!(refs.matches(",LONG.").count(), outbox::MAX_REFERENCES);
        let oldest_recent = version - (outbox::MAX_REFERENCES as u32 - 1);
        for k in [1, oldest_recent, version - 1] {
            let earlier = d.cap_xml(&format!("LONG.{k}")).expect("earlier LONG served");
            assert!(refs.contains(&format!(",LONG.{k},{}", sent_of(&earlier))), "reference to LONG.{k}");
        }
        for k in [2, oldest_recent - 1] {
            assert!(!refs.contains(&format!(",LONG.{k},")), "LONG.{k} is between the first and the recent ones");
            assert!(d.cap_xml(&format!("LONG.{k}")).is_some(), "LONG.{k} is still served");
        }
    };
    check_references(&d, long_version);
    assert_eq!(d.messages_of("LONG").len(), long_version as usize);

    wait_for(LONG, "all delivered", || d.subscribers()[0].queued == 0).await;
    let feed = d.atom_feed();
    let delivered = d.subscribers()[0].delivered;
    drop(d);

    // Restart: the replay prunes the same way, compaction drops the forgotten alerts' messages.
    let d = start(config(&extra), dir.path());
    let (messages, alerts) = counts(&d);
    assert!(alerts <= 1 + 2 * RECENT && messages <= 1 + RECENT + 6 * RECENT, "{messages} / {alerts} after restart");
    assert_eq!(d.atom_feed(), feed, "the feed is the same after a restart");
    assert_eq!(d.subscribers()[0].delivered, delivered, "delivery counts survive compaction");
    assert!(d.delivery_log("a").iter().all(|r| !r.alert_id.is_empty() && r.version > 0), "logs still name alerts");
    let journal = std::fs::read_to_string(dir.path().join("dissemination.jsonl")).unwrap();
    assert!(!journal.contains("<identifier>A0.1</identifier>"), "forgotten messages left the journal");
    assert!(!journal.contains("<identifier>A5.1</identifier>"));
    assert!(d.cap_xml("A0.1").is_some());
    assert_eq!(d.operator_cap_xml("A5.1"), None);
    d.alert_changed(&view("LONG", long_version + 1));
    check_references(&d, long_version + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_archive_write_is_counted_and_keeps_the_message() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the archive folder goes: every write fails (even as root).
    let blocked = dir.path().join("cap");
    std::fs::write(&blocked, "").unwrap();
    let errors = || metrics::METRICS.errors.with_label_values(&["cap_archive"]).get();
    let before = errors();
    let d = start(config("[feed]\nrecent = 0\n"), dir.path());
    d.alert_changed(&view("DF", 1));
    d.alert_changed(&ended(view("DF", 2), ViewState::Cleared));
    assert!(errors() >= before + 2, "both refused writes counted");
    // The alert is forgotten, its released messages are not: they stay in memory and are served.
    assert!(!lock(&d.inner.state).alerts.contains_key("DF"));
    assert!(d.cap_xml("DF.1").is_some_and(|x| x.contains("<identifier>DF.1</identifier>")));
    assert!(d.cap_xml("DF.2").is_some());

    // The disk takes writes again: the next change writes them and lets them go.
    std::fs::remove_file(&blocked).unwrap();
    d.alert_changed(&view("OK", 1));
    assert!(blocked.join("DF.1.xml").is_file() && blocked.join("DF.2.xml").is_file());
    let st = lock(&d.inner.state);
    assert!(!st.messages.contains_key("DF.1") && st.unarchived.is_empty());
    drop(st);
    assert!(d.cap_xml("DF.1").is_some_and(|x| x.contains("<identifier>DF.1</identifier>")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_held_through_many_versions_keeps_only_its_recent_bodies() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = start(config(&subscriber_toml("a", &format!("http://{}/a", rx.addr), "")), dir.path());
    let versions = 3 * outbox::MAX_REFERENCES as u32;
    for version in 1..=versions {
        let mut v = rain_view("HELD", version, "township-jiaxian");
        v.public_release = false;
        v.updated_ms = 1_764_122_400_000 + i64::from(version) * 1000;
        d.alert_changed(&v);
    }
    let (messages, _) = counts(&d);
    assert!(messages <= outbox::MAX_REFERENCES + 1, "{messages} held bodies in memory");
    assert!(d.operator_cap_xml(&format!("HELD.{versions}")).is_some(), "the latest held one: operators see it");
    assert_eq!(d.operator_cap_xml("HELD.1"), None, "the oldest held bodies are gone");
    assert_eq!(d.messages_of("HELD").len(), versions as usize, "every version is still listed");

    // The approval releases what is kept: the latest is public and archived, with bounded references.
    let mut approved = rain_view("HELD", versions + 1, "township-jiaxian");
    approved.updated_ms = 1_764_122_400_000 + i64::from(versions + 1) * 1000;
    d.alert_changed(&approved);
    let xml = d.cap_xml(&format!("HELD.{}", versions + 1)).expect("released");
    assert_eq!(xml.matches(",HELD.").count(), outbox::MAX_REFERENCES);
    assert!(d.cap_xml(&format!("HELD.{versions}")).is_some(), "a recent held one is released with it");
    assert!(dir.path().join("cap").join(format!("HELD.{versions}.xml")).is_file());
}
