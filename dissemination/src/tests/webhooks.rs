//! Webhooks against real receivers.

use std::time::Duration;

use super::tools::{delivery_signature_ok, signature_ok};
use super::*;

const LONG: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_verifies_with_an_independent_hmac() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = subscriber_toml("media-cap", &rx.url("/cap"), "")
        + &subscriber_toml("media-json", &rx.url("/json"), "format = \"json\"");
    let d = start(config(&extra), dir.path());
    let id = d.alert_changed(&view("SIG", 1)).expect("message made");
    assert_eq!(id, "SIG.1");
    wait_for(LONG, "both deliveries", || rx.delivered("/cap").len() == 1 && rx.delivered("/json").len() == 1).await;

    let cap = &rx.delivered("/cap")[0];
    assert!(
        signature_ok(SECRET, cap.header("X-DC-Signature"), &cap.body),
        "signature {:?}",
        cap.header("X-DC-Signature")
    );
    assert!(!signature_ok("another-secret-0123456789", cap.header("X-DC-Signature"), &cap.body));
    // v2 covers the delivery id and attempt receivers de-duplicate on: the same request under another id fails.
    assert!(delivery_signature_ok(SECRET, cap), "v2 {:?}", cap.header("X-DC-Signature"));
    let mut moved = cap.clone();
    moved.headers.insert("X-DC-Delivery", "999999".parse().unwrap());
    assert!(!delivery_signature_ok(SECRET, &moved), "v2 ignores the delivery id");
    let mut retried = cap.clone();
    retried.headers.insert("X-DC-Attempt", "2".parse().unwrap());
    assert!(!delivery_signature_ok(SECRET, &retried), "v2 ignores the attempt");
    assert_eq!(cap.header("content-type"), "application/cap+xml");
    assert_eq!(cap.header("X-DC-Status"), "Actual");
    assert_eq!(cap.header("X-DC-Message"), "SIG.1");
    assert_eq!(cap.text(), d.cap_xml("SIG.1").unwrap(), "the body is the published CAP file");
    let t: i64 = cap.header("X-DC-Signature")[2..12].parse().unwrap();
    assert!((now_ms() / 1000 - t).abs() < 60, "t is the send time");

    let json = &rx.delivered("/json")[0];
    assert!(signature_ok(SECRET, json.header("X-DC-Signature"), &json.body));
    assert!(delivery_signature_ok(SECRET, json));
    assert_eq!(json.header("content-type"), "application/json");
    let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(v["type"], "alert");
    assert_eq!(v["alert"]["id"], "SIG");
    assert_eq!(v["alert"]["mode"], "Actual");
    assert_eq!(v["cap"]["url"], "https://alerts.example.tw/cap/SIG.1.xml");
    assert_eq!(v["cap"]["msg_type"], "Alert");

    // The receiver answers before the worker records the outcome: wait for the books too.
    wait_for(LONG, "outcomes recorded", || d.subscribers().iter().all(|s| s.delivered == 1 && s.queued == 0)).await;
    assert_eq!(d.subscribers().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_then_up_loses_nothing_and_keeps_order() {
    let addr = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let d = start(config(&subscriber_toml("late", &format!("http://{addr}/hook"), "")), dir.path());
    for v in 1..=6 {
        d.alert_changed(&view("DOWN", v));
    }
    // Let several attempts fail against the closed port.
    wait_for(LONG, "failed attempts", || d.delivery_log("late").iter().any(|r| r.attempts >= 3)).await;
    assert_eq!(d.subscribers()[0].queued, 6);
    assert!(d.subscribers()[0].last_error.as_deref().unwrap_or("").contains("connect"));

    let rx = Receiver::start_on(addr).await;
    wait_for(LONG, "all six delivered", || identifiers(&rx.delivered("/hook")).len() == 6).await;
    let want: Vec<String> = (1..=6).map(|v| format!("DOWN.{v}")).collect();
    assert_eq!(identifiers(&rx.delivered("/hook")), want);
    // Ordered per subscriber: never two in flight, so arrivals are in delivery-id order too.
    let ids: Vec<u64> = rx.delivered("/hook").iter().map(Received::delivery).collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{ids:?}");
    wait_for(LONG, "outbox empty", || d.subscribers()[0].queued == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_after_n_attempts_then_replay() {
    let rx = Receiver::start().await;
    rx.set(Behaviour::Answer(500));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&subscriber_toml("flaky", &rx.url("/h"), ""));
    cfg.webhooks.max_attempts = Some(3);
    let d = start(cfg, dir.path());
    d.alert_changed(&view("DEAD", 1));
    wait_for(LONG, "dead letter", || d.delivery_log("flaky").iter().any(|r| r.status == DeliveryStatus::DeadLetter))
        .await;
    let log = d.delivery_log("flaky");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].attempts, 3);
    assert_eq!(log[0].http_status, Some(500));
    assert_eq!(rx.all().len(), 3, "exactly N attempts");
    assert_eq!(d.subscribers()[0].dead_letters, 1);
    let dead_id = log[0].id;
    let text = {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new().encode(&prometheus::gather(), &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    };
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} not on /metrics:\n{text}"))
    };
    assert!(value("dc_dissemination_deliveries_total{channel=\"webhook\",result=\"dead_letter\"}") >= 1.0);
    assert!(value("dc_dissemination_deliveries_total{channel=\"webhook\",result=\"retry\"}") >= 2.0);
    assert!(value("dc_dissemination_dead_letters{channel=\"webhook\"}") >= 1.0);
    value("dc_dissemination_queue_depth{channel=\"webhook\"}");

    // The next message is not held up by the dead one.
    rx.set(Behaviour::Answer(200));
    d.alert_changed(&view("DEAD", 2));
    wait_for(LONG, "v2 delivered", || rx.delivered("/h").len() == 1).await;
    assert_eq!(rx.delivered("/h")[0].header("X-DC-Message"), "DEAD.2");

    assert_eq!(d.replay("flaky", 999_999), Err(ReplayError::UnknownDelivery { target: "flaky".into(), id: 999_999 }));
    assert_eq!(d.replay("nobody", dead_id), Err(ReplayError::UnknownTarget("nobody".into())));
    let new_id = d.replay("flaky", dead_id).expect("replay");
    assert!(new_id > dead_id);
    assert!(matches!(d.replay("flaky", dead_id), Err(ReplayError::NotDeadLetter { .. })));
    wait_for(LONG, "replayed v1 delivered", || rx.delivered("/h").len() == 2).await;
    let replayed = &rx.delivered("/h")[1];
    assert_eq!(replayed.header("X-DC-Message"), "DEAD.1");
    assert_eq!(replayed.delivery(), new_id);
    assert!(signature_ok(SECRET, replayed.header("X-DC-Signature"), &replayed.body));
    assert!(delivery_signature_ok(SECRET, replayed), "v2 over the replay's own id");
    wait_for(LONG, "replay recorded as delivered", || {
        d.delivery_log("flaky").iter().any(|r| r.id == new_id && r.status == DeliveryStatus::Delivered)
    })
    .await;
    let log = d.delivery_log("flaky");
    let old = log.iter().find(|r| r.id == dead_id).unwrap();
    assert_eq!((old.status, old.replayed_as), (DeliveryStatus::Replayed, Some(new_id)));
    assert_eq!(d.subscribers()[0].dead_letters, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actual_only_subscriber_never_receives_a_drill_or_test() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = subscriber_toml("actual-only", &rx.url("/actual"), "")
        + &subscriber_toml(
            "drill-desk",
            &rx.url("/all"),
            "[subscriber.filters]\nmodes = [\"Actual\", \"Exercise\", \"Test\"]",
        );
    let d = start(config(&extra), dir.path());
    let drill = AlertView { mode: ViewMode::Exercise, ..view("EX", 1) };
    let test = AlertView { mode: ViewMode::Test, ..rain_view("TST", 1, "township-jiaxian") };
    d.alert_changed(&drill);
    d.alert_changed(&test);
    d.alert_changed(&ended(AlertView { version: 2, ..drill.clone() }, ViewState::Cancelled));
    d.alert_changed(&view("REAL", 1));
    wait_for(LONG, "drill desk gets all four", || rx.delivered("/all").len() == 4).await;
    wait_for(LONG, "actual-only gets the real one", || rx.delivered("/actual").len() == 1).await;
    // A wrongly queued drill would have arrived by now.
    drained(&d).await;
    let actual = rx.delivered("/actual");
    assert_eq!(actual.len(), 1);
    assert_eq!(actual[0].header("X-DC-Message"), "REAL.1");
    assert!(actual[0].text().contains("<status>Actual</status>"));
    let all = rx.delivered("/all");
    let statuses: Vec<&str> = all.iter().map(|r| r.header("X-DC-Status")).collect();
    assert_eq!(statuses, ["Exercise", "Test", "Exercise", "Actual"]);
    assert!(all[0].text().contains("<status>Exercise</status>"));
    assert!(all[0].text().contains("[演練]"), "drill marked in the text too");
    assert!(all[1].text().contains("<status>Test</status>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_receiver_times_out_and_delays_no_one_else() {
    let hang = Receiver::start().await;
    hang.set(Behaviour::Hang);
    let ok = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg =
        config(&(subscriber_toml("stuck", &hang.url("/h"), "") + &subscriber_toml("fine", &ok.url("/h"), "")));
    cfg.webhooks.request_timeout_ms = Some(400);
    let d = start(cfg, dir.path());
    let t0 = std::time::Instant::now();
    d.alert_changed(&view("HANG", 1));
    d.alert_changed(&view("HANG", 2));
    wait_for(LONG, "fine subscriber served", || ok.delivered("/h").len() == 2).await;
    let served = ok.delivered("/h")[1].at - t0;
    assert!(served < Duration::from_millis(400), "the other subscriber waited {served:?}");
    wait_for(LONG, "timeout recorded", || {
        d.delivery_log("stuck").iter().any(|r| r.detail.as_deref() == Some("timed out"))
    })
    .await;
    let first_timeout = t0.elapsed();
    assert!(first_timeout >= Duration::from_millis(400), "{first_timeout:?}");
    // Strict order: v2 has not been tried while v1 hangs.
    assert!(hang.all().iter().all(|r| r.header("X-DC-Message") == "HANG.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_gate_holds_public_channels_until_release() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = subscriber_toml("public", &rx.url("/public"), "")
        + &subscriber_toml("agency", &rx.url("/internal"), "audience = \"internal\"")
        + &carriers_toml(&rx.url(""));
    let d = start(config(&extra), dir.path());
    let held = AlertView { public_release: false, ..view("GATE", 1) };
    d.alert_changed(&held);
    d.alert_changed(&AlertView { public_release: false, ..view("GATE", 2) });
    wait_for(LONG, "internal subscriber gets held messages", || rx.delivered("/internal").len() == 2).await;
    drained(&d).await;
    assert!(rx.delivered("/public").is_empty());
    assert!(rx.all().iter().all(|r| !r.path.starts_with("/cbc")), "nothing to CBCs while held");
    assert_eq!(d.cap_xml("GATE.1"), None);
    assert!(d.operator_cap_xml("GATE.1").is_some());
    assert!(!d.atom_feed().contains("GATE"));
    let etag_before = d.feed_etag();
    assert!(d.broadcasts().is_empty());

    // Approval: the same version, released.
    assert_eq!(d.alert_changed(&view("GATE", 2)), None, "a release makes no new message");
    wait_for(LONG, "public gets both, in order", || rx.delivered("/public").len() == 2).await;
    assert_eq!(identifiers(&rx.delivered("/public")), ["GATE.1", "GATE.2"]);
    assert!(d.cap_xml("GATE.1").is_some());
    assert!(d.atom_feed().contains("GATE.2.xml"));
    assert_ne!(d.feed_etag(), etag_before);
    wait_for(LONG, "three CBCs", || rx.all().iter().filter(|r| r.path.starts_with("/cbc")).count() == 3).await;
    // The internal subscriber already had both: not sent twice.
    drained(&d).await;
    assert_eq!(rx.delivered("/internal").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_follow_up_messages() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra =
        subscriber_toml("xiaolin-only", &rx.url("/zone"), "[subscriber.filters]\nzones = [\"dfa-jiaxian-xiaolin\"]")
            + &subscriber_toml(
                "severe-rain",
                &rx.url("/sev"),
                "[subscriber.filters]\nevents = [\"heavy_rain\"]\nmin_severity = \"Severe\"",
            );
    let d = start(config(&extra), dir.path());
    d.alert_changed(&rain_view("R1", 1, "dfa-jiaxian-xiaolin"));
    d.alert_changed(&rain_view("R2", 1, "township-xinyi"));
    // R1's update drops below Severe: severe-rain still gets it, because it had the Alert.
    d.alert_changed(&AlertView { severity: Severity::Moderate, ..rain_view("R1", 2, "dfa-jiaxian-xiaolin") });
    // A new Moderate alert does not pass the filter.
    d.alert_changed(&AlertView { severity: Severity::Moderate, ..rain_view("R3", 1, "township-xinyi") });
    d.alert_changed(&view("DF", 1));
    wait_for(LONG, "deliveries", || rx.delivered("/zone").len() == 2 && rx.delivered("/sev").len() == 3).await;
    drained(&d).await;
    assert_eq!(identifiers(&rx.delivered("/zone")), ["R1.1", "R1.2"]);
    assert_eq!(identifiers(&rx.delivered("/sev")), ["R1.1", "R2.1", "R1.2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_api_names_the_bad_field_and_keeps_added_subscribers() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = start(config(""), dir.path());
    let good = SubscriberInput {
        name: "cna".into(),
        url: rx.url("/cna"),
        secret: SECRET.into(),
        format: Format::Json,
        audience: Audience::Public,
        filters: Filters::default(),
    };
    let field = |r: Result<SubscriberStatus, FieldError>| r.unwrap_err().field;
    assert_eq!(field(d.add_subscriber(SubscriberInput { url: "ftp://x.tw/".into(), ..good.clone() })), "url");
    assert_eq!(field(d.add_subscriber(SubscriberInput { url: "not a url".into(), ..good.clone() })), "url");
    assert_eq!(field(d.add_subscriber(SubscriberInput { url: "https://u:p@x.tw/".into(), ..good.clone() })), "url");
    assert_eq!(field(d.add_subscriber(SubscriberInput { secret: "".into(), ..good.clone() })), "secret");
    assert_eq!(field(d.add_subscriber(SubscriberInput { secret: "short".into(), ..good.clone() })), "secret");
    assert_eq!(field(d.add_subscriber(SubscriberInput { name: "a b".into(), ..good.clone() })), "name");
    let mut bad_zone = good.clone();
    bad_zone.filters.zones = vec!["dfa-xinyi-shenmu".into(), "atlantis".into()];
    assert_eq!(field(d.add_subscriber(bad_zone)), "filters.zones[1]");
    let mut bad_event = good.clone();
    bad_event.filters.events = vec!["tsunami".into()];
    assert_eq!(field(d.add_subscriber(bad_event)), "filters.events[0]");
    let mut no_modes = good.clone();
    no_modes.filters.modes.clear();
    assert_eq!(field(d.add_subscriber(no_modes)), "filters.modes");

    // JSON bodies: unknown keys and missing secrets are named too.
    let e = SubscriberInput::from_json(
        r#"{"name":"x","url":"https://x.tw/","secret":"0123456789abcdef","filters":{"zone":["a"]}}"#,
    )
    .unwrap_err();
    assert_eq!(e.field, "zone", "{e}");
    let e = SubscriberInput::from_json(r#"{"name":"x","url":"https://x.tw/"}"#).unwrap_err();
    assert_eq!(e.field, "secret", "{e}");
    let e = SubscriberInput::from_json(
        r#"{"name":"x","url":"https://x.tw/","secret":"0123456789abcdef","filters":{"modes":["Real"]}}"#,
    )
    .unwrap_err();
    assert!(e.message.contains("Real"), "{e}");

    let status = d.add_subscriber(good.clone()).expect("valid subscriber");
    assert_eq!(status.source, Source::Runtime);
    assert_eq!(field(d.add_subscriber(good.clone())), "name", "duplicate");
    d.alert_changed(&view("API", 1));
    wait_for(LONG, "runtime subscriber delivered", || d.subscribers()[0].delivered == 1).await;
    drop(d);

    let d = start(config(""), dir.path());
    let subs = d.subscribers();
    assert_eq!(subs.len(), 1, "runtime subscriber survives a restart");
    assert_eq!((subs[0].name.as_str(), subs[0].source), ("cna", Source::Runtime));
    d.alert_changed(&view("API", 2));
    wait_for(LONG, "still delivered after restart", || identifiers(&rx.delivered("/cna")).len() == 2).await;
    assert_eq!(identifiers(&rx.delivered("/cna")), ["API.1", "API.2"]);
}
