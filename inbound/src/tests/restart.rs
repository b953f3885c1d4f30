//! With a data dir, the external alerts survive a restart: active warnings come back, a repeat is still a
//! duplicate, Updates and Cancels still follow `references`, a cancelled warning is not revived by a feed that still
//! lists it, and what expired while we were down ends at the first tick.

use super::*;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dc-inbound-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn start(dir: &Path, clock: &TestClock) -> (Inbound, mpsc::Receiver<ExternalEvent>) {
    Inbound::start_with(push_config("persist", true), geo(), clock.clock(), Some(dir)).expect("starts")
}

#[tokio::test]
async fn warnings_duplicates_and_cancels_survive_a_restart() {
    let dir = temp_dir("restart");
    let clock = TestClock::at(1);
    let token = bearer("token-persist");
    let long = Msg::debris("SWCB-r-1", 0, 600);
    let short = Msg::debris("SWCB-r-2", 0, 30);
    let cancelled = Msg::rain("CWA-r-3", 0);
    {
        let (inbound, _rx) = start(&dir, &clock);
        for m in [&long, &short, &cancelled] {
            let out = inbound.push(Some("persist"), &token, m.xml().as_bytes(), ms_at(1));
            assert!(matches!(out, Ok(PushOutcome::Raised { .. })), "{out:?}");
        }
        let cancel = cancelled.follow_up("CWA-r-3c", "Cancel", 2);
        let out = inbound.push(Some("persist"), &token, cancel.xml().as_bytes(), ms_at(2));
        assert!(matches!(out, Ok(PushOutcome::Cancelled { .. })), "{out:?}");
        assert_eq!(inbound.active().len(), 2);
        // Dropped without any shutdown step, as after kill -9: what is on disk is all there is.
    }
    assert!(dir.join(BOOK_FILE).is_file());

    // Back 40 minutes later: the short warning expired meanwhile.
    clock.set(40);
    let (inbound, mut rx) = start(&dir, &clock);
    let ids: Vec<String> = inbound.active().iter().map(|a| a.identifier.clone()).collect();
    assert!(ids.contains(&"SWCB-r-1".to_string()), "{ids:?}");
    assert_eq!(inbound.tick(ms_at(40)), 1, "the short warning ends at the first tick");
    assert_eq!(drain(&mut rx), [ev("expired", "ext:swcb@swcb.gov.tw:SWCB-r-2", 1)]);
    let active = inbound.active();
    assert_eq!(active.len(), 1);
    assert!(active[0].zone_ids.iter().any(|z| z == SHENMU), "placed as before: {:?}", active[0].zone_ids);

    // A repeat is a duplicate; the cancelled warning, still listed by some feed, is not revived.
    let again = inbound.push(Some("persist"), &token, long.xml().as_bytes(), ms_at(41));
    assert_eq!(again, Ok(PushOutcome::Ignored { why: Ignored::Duplicate }));
    let revived = inbound.push(Some("persist"), &token, cancelled.xml().as_bytes(), ms_at(41));
    assert_eq!(revived, Ok(PushOutcome::Ignored { why: Ignored::Duplicate }));
    // The warning still belongs to the source that opened it: another source's Cancel is refused.
    let foreign = long.follow_up("SWCB-r-1x", "Cancel", 42).xml();
    let headers = super::push::signed("secret-persist", ms_at(42) / 1000, foreign.as_bytes());
    let err = inbound.push(Some("persist-hmac"), &headers, foreign.as_bytes(), ms_at(42)).expect_err("not its own");
    assert_eq!(err.reason(), "foreign_source");
    // Update and Cancel still find the warning through `references`.
    let update = long.follow_up("SWCB-r-1u", "Update", 42);
    let out = inbound.push(Some("persist"), &token, update.xml().as_bytes(), ms_at(42));
    assert_eq!(out, Ok(PushOutcome::Updated { id: "ext:swcb@swcb.gov.tw:SWCB-r-1".into() }));
    assert_eq!(inbound.active()[0].version, 2);
    let cancel = update.follow_up("SWCB-r-1c", "Cancel", 43);
    let out = inbound.push(Some("persist"), &token, cancel.xml().as_bytes(), ms_at(43));
    assert_eq!(out, Ok(PushOutcome::Cancelled { id: "ext:swcb@swcb.gov.tw:SWCB-r-1".into() }));
    drop(inbound);

    let (inbound, _rx) = start(&dir, &clock);
    assert!(inbound.active().is_empty(), "the cancel was saved too");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_damaged_state_file_stops_the_start_with_its_name() {
    let dir = temp_dir("damaged");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(BOOK_FILE), b"{\"format\": 1, \"chains\": [").unwrap();
    let err = Inbound::start_with(push_config("damaged", true), geo(), TestClock::at(0).clock(), Some(&dir))
        .err()
        .expect("refused");
    assert!(err.to_string().contains(BOOK_FILE), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
