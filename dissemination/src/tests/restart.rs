//! Dropped with deliveries pending, restarted on the same `data_dir`: everything arrives, in order.

use std::time::Duration;

use super::*;

const LONG: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_pending_deliveries_delivers_everything_in_order() {
    let addr = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let extra = subscriber_toml("a", &format!("http://{addr}/a"), "")
        + &subscriber_toml("b", &format!("http://{addr}/b"), "format = \"json\"");

    // First run: the receiver is down; some changes queue up, one delivery has failed a few times.
    let d = start(config(&extra), dir.path());
    d.alert_changed(&view("RS1", 1));
    d.alert_changed(&rain_view("RS2", 1, "township-jiaxian"));
    d.alert_changed(&view("RS1", 2));
    wait_for(LONG, "a failed attempt", || d.delivery_log("a").iter().any(|r| r.attempts >= 2)).await;
    d.alert_changed(&ended(view("RS1", 3), ViewState::Cleared));
    d.alert_changed(&rain_view("RS2", 2, "township-jiaxian"));
    assert_eq!(d.subscribers().iter().map(|s| s.queued).sum::<usize>(), 10);
    drop(d);

    // Second run on the same folder, receiver up.
    let rx = Receiver::start_on(addr).await;
    let d = start(config(&extra), dir.path());
    let want = ["RS1.1", "RS2.1", "RS1.2", "RS1.3", "RS2.2"];
    wait_for(LONG, "all delivered after restart", || {
        identifiers(&rx.delivered("/a")).len() == 5 && identifiers(&rx.delivered("/b")).len() == 5
    })
    .await;
    assert_eq!(identifiers(&rx.delivered("/a")), want);
    assert_eq!(identifiers(&rx.delivered("/b")), want);
    // Exactly once here: nothing was in flight when the first run stopped.
    assert_eq!(rx.delivered("/a").len(), 5);
    for r in rx.delivered("/a") {
        assert!(super::tools::signature_ok(SECRET, r.header("X-DC-Signature"), &r.body));
    }
    // The attempts of the first run are remembered.
    let first = d.delivery_log("a").into_iter().find(|r| r.identifier == "RS1.1").unwrap();
    assert!(first.attempts >= 3, "{first:?}");

    // Messages survive too: CAP files, the feed, references, and the next message continues the history.
    assert!(d.cap_xml("RS1.1").is_some());
    let cancel = d.cap_xml("RS1.3").unwrap();
    // Cleared by the rules: an all-clear Update (`docs/API.md` § Ending a warning).
    assert!(cancel.contains("<msgType>Update</msgType>") && cancel.contains("<responseType>AllClear</responseType>"));
    assert!(cancel.contains("RS1.1,") && cancel.contains("RS1.2,"), "references both earlier messages");
    assert_eq!(d.alert_changed(&rain_view("RS2", 3, "township-jiaxian")).as_deref(), Some("RS2.3"));
    assert!(d.atom_feed().contains("RS2.3.xml"));
    wait_for(LONG, "new message after restart", || d.subscribers().iter().all(|s| s.queued == 0 && s.delivered == 6))
        .await;
    drop(d);

    // A third start finds nothing left to send.
    let d = start(config(&extra), dir.path());
    drained(&d).await;
    assert_eq!(rx.delivered("/a").len(), 6, "nothing sent twice");
    assert!(d.subscribers().iter().all(|s| s.queued == 0));
}

/// Power cut in the middle of an alert change: the file ends one byte into a zh-TW character (three bytes in
/// UTF-8). Reading the journal as text made that a failed start; it is a torn last line like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_cut_inside_a_zh_tw_character_starts_and_drops_only_that_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(config(""), dir.path());
    d.alert_changed(&view("CUT", 1));
    d.alert_changed(&view("CUT", 2));
    d.alert_changed(&view("CUT", 3));
    drop(d);
    let path = dir.path().join(super::super::journal::JOURNAL_FILE);
    let bytes = std::fs::read(&path).unwrap();
    let last_start = bytes[..bytes.len() - 1].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let last = std::str::from_utf8(&bytes[last_start..]).unwrap();
    assert!(last.contains("\"version\":3") && last.contains("紅色"), "{last}");
    let cut = last_start + last.bytes().position(|b| b >= 0x80).unwrap() + 1;
    std::fs::write(&path, &bytes[..cut]).unwrap();

    let d = start(config(""), dir.path());
    assert!(d.cap_xml("CUT.1").is_some() && d.cap_xml("CUT.2").is_some());
    // (Its CAP file may be in the archive already; the feed is rebuilt from the journal alone.)
    let feed = d.atom_feed();
    assert!(feed.contains("CUT.2.xml") && !feed.contains("CUT.3.xml"), "the torn change is dropped: {feed}");
    // The journal goes on cleanly: the change made again survives the next restart. (Its identifier is a new one:
    // the archive already has a `CUT.3`, and an identifier is never reused for different content.)
    let again = d.alert_changed(&view("CUT", 3)).unwrap();
    drop(d);
    let d = start(config(""), dir.path());
    assert!(d.atom_feed().contains(&format!("{again}.xml")), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_journal_line_is_dropped_and_a_bad_middle_line_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(config(""), dir.path());
    d.alert_changed(&view("TORN", 1));
    d.alert_changed(&view("TORN", 2));
    drop(d);
    let path = dir.path().join(super::super::journal::JOURNAL_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}{{\"type\":\"change\",\"vie")).unwrap();
    let d = start(config(""), dir.path());
    assert!(d.cap_xml("TORN.2").is_some());
    drop(d);

    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("garbage\n{text}")).unwrap();
    let err = Dissemination::start(config(""), dir.path(), geo(), templates(), BASE_URL.into())
        .err()
        .expect("bad middle line refused");
    assert!(matches!(err, DisseminationError::Journal { line: 1, .. }), "{err}");
}

/// The names a carrier's deliveries go by (`cbc:<carrier>`) are a contract: HTTP responses show them, and journals
/// on disk hold them. A restart reads them back to the same carrier; one no longer configured keeps its log,
/// is not sent, and cannot be replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carrier_deliveries_keep_their_cbc_names_across_restarts() {
    let rx = Receiver::start().await;
    rx.set(Behaviour::Answer(503));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&carriers_toml(&rx.url("")));
    cfg.cell_broadcast.retry.max_attempts = Some(2);
    let cht = "cbc:Chunghwa Telecom";

    let d = start(cfg.clone(), dir.path());
    d.alert_changed(&view("NM", 1));
    let dead_at = |d: &Dissemination, target: &str| {
        d.delivery_log(target).into_iter().find(|r| r.status == DeliveryStatus::DeadLetter).map(|r| r.id)
    };
    let dead = |d: &Dissemination| dead_at(d, cht);
    wait_for(LONG, "a dead letter at each carrier", || {
        [cht, "cbc:Taiwan Mobile", "cbc:FarEasTone"].iter().all(|t| dead_at(&d, t).is_some())
    })
    .await;
    let id = dead(&d).unwrap();
    assert_eq!(d.delivery_log(cht)[0].target, cht);
    assert!(d.delivery_log("Chunghwa Telecom").is_empty(), "carriers are not called by their bare name");
    assert!(d.subscribers().is_empty(), "carriers are not subscribers");
    drop(d);
    let journal = std::fs::read_to_string(dir.path().join(crate::journal::JOURNAL_FILE)).unwrap();
    assert!(journal.contains(r#""target":"cbc:Chunghwa Telecom""#), "the name on disk");

    // Restarted with the carrier: its dead letter is there under the same name, and replays to its CBC.
    let d = start(cfg, dir.path());
    assert_eq!(dead(&d), Some(id));
    rx.set(Behaviour::Answer(200));
    let again = d.replay(cht, id).expect("replay a carrier's dead letter");
    wait_for(LONG, "the replay acked", || {
        d.delivery_log(cht).iter().any(|r| r.id == again && r.status == DeliveryStatus::Delivered)
    })
    .await;
    assert!(rx.delivered("/cbc/cht").iter().any(|r| r.delivery() == again));
    drop(d);

    // Restarted without carriers: the log stays readable, nothing is sent, nothing can be replayed.
    let d = start(config(""), dir.path());
    assert!(d.delivery_log(cht).iter().any(|r| r.id == again && r.status == DeliveryStatus::Delivered));
    let twm_dead = dead_at(&d, "cbc:Taiwan Mobile").expect("Taiwan Mobile's dead letter kept");
    assert_eq!(d.replay("cbc:Taiwan Mobile", twm_dead), Err(ReplayError::UnknownTarget("cbc:Taiwan Mobile".into())));
    assert!(d.subscribers().is_empty(), "a carrier no longer configured does not turn into a subscriber");
}
