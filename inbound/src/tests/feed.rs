//! Polling against a real HTTP server on 127.0.0.1:0 whose Atom feed (written by our own `cap::write_atom`, the
//! shape Taiwan's platform serves) changes between polls. Asserts the exact event sequence, that conditional GET is
//! honoured (the server counts its 304s), that bad entries are counted and skipped, and backoff and recovery.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap as AxumHeaders, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::*;
use crate::metrics::METRICS;
use encoders::cap::{parse_cap_time, write_atom, AtomEntry, AtomFeed};

/// What the test server serves, and what it saw.
#[derive(Default)]
struct Server {
    feed: String,
    etag: String,
    docs: HashMap<String, Vec<u8>>,
    /// Statuses to answer the next feed requests with, instead of the feed.
    fail_next: Vec<u16>,
    feed_200: usize,
    feed_304: usize,
    doc_gets: HashMap<String, usize>,
    /// Conditional headers of the last feed request.
    last_conditional: (Option<String>, Option<String>),
}

type Shared = Arc<Mutex<Server>>;

const LAST_MODIFIED: &str = "Thu, 26 Nov 2026 10:00:00 GMT";

async fn feed(State(s): State<Shared>, headers: AxumHeaders) -> Response {
    let mut s = s.lock().expect("server state");
    let text = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
    s.last_conditional = (text(header::IF_NONE_MATCH), text(header::IF_MODIFIED_SINCE));
    if !s.fail_next.is_empty() {
        let code = s.fail_next.remove(0);
        return StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR).into_response();
    }
    if s.last_conditional.0.as_deref() == Some(s.etag.as_str()) {
        s.feed_304 += 1;
        return StatusCode::NOT_MODIFIED.into_response();
    }
    s.feed_200 += 1;
    let headers = [
        (header::ETAG, s.etag.clone()),
        (header::LAST_MODIFIED, LAST_MODIFIED.to_string()),
        (header::CONTENT_TYPE, "application/atom+xml".to_string()),
    ];
    (headers, s.feed.clone()).into_response()
}

async fn doc(State(s): State<Shared>, UrlPath(file): UrlPath<String>) -> Response {
    let mut s = s.lock().expect("server state");
    *s.doc_gets.entry(file.clone()).or_default() += 1;
    match s.docs.get(&file) {
        Some(body) => ([(header::CONTENT_TYPE, "application/cap+xml")], body.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `/go/{file}`: a same-origin redirect to `/cap/{file}`.
async fn go(UrlPath(file): UrlPath<String>) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, format!("/cap/{file}"))]).into_response()
}

/// `/go-away/{host:port}`: a redirect to another origin.
async fn go_away(UrlPath(to): UrlPath<String>) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, format!("http://{to}/cap/x.xml"))]).into_response()
}

/// `/loop`: a redirect to itself, for ever.
async fn redirect_loop() -> Response {
    (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, "/loop")]).into_response()
}

async fn start_server() -> (SocketAddr, Shared) {
    let state: Shared = Arc::default();
    let app = Router::new()
        .route("/feed.atom", get(feed))
        .route("/cap/{file}", get(doc))
        .route("/go/{file}", get(go))
        .route("/go-away/{to}", get(go_away))
        .route("/loop", get(redirect_loop))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, state)
}

/// Sets the feed to `entries` (newest first, as feeds list them) with `docs` served at `/cap/{identifier}.xml`.
fn publish(server: &Shared, addr: SocketAddr, entries: &[(&str, &str, Vec<u8>)]) {
    let entries_atom: Vec<AtomEntry> = entries
        .iter()
        .map(|(identifier, sent, _)| AtomEntry {
            identifier: identifier.to_string(),
            title: format!("CAP {identifier}"),
            updated: parse_cap_time(sent).expect("CAP time"),
            summary: None,
            author: "中央氣象署".into(),
        })
        .collect();
    let feed = AtomFeed {
        base_url: format!("http://{addr}"),
        title: "示警訊息".into(),
        updated: BASE,
        author: "NCDR".into(),
        entries: entries_atom,
    };
    let text = write_atom(&feed).expect("feed writes");
    let mut s = server.lock().expect("server state");
    s.etag = format!("\"v{}\"", s.feed_200 + s.feed_304 + entries.len());
    s.feed = text;
    for (identifier, _, body) in entries {
        s.docs.insert(format!("{identifier}.xml"), body.clone());
    }
}

fn entry(m: &Msg) -> (&str, &str, Vec<u8>) {
    (m.identifier.as_str(), m.sent.as_str(), m.xml().into_bytes())
}

fn feed_config(name: &str, addr: SocketAddr) -> InboundConfig {
    let toml = format!(
        r#"
        tick_ms = 20
        [[feed]]
        name = "{name}"
        url = "http://{addr}/feed.atom"
        # Long: after the first poll at start, the test polls by hand.
        interval_s = 3600
        max_backoff_s = 14400
        timeout_s = 5
        public = true
        max_bytes = 8192
        # The test server is on this machine: loopback must be allowed explicitly.
        allow_networks = ["loopback"]
        "#
    );
    InboundConfig::from_toml(&toml, Path::new("test.toml")).expect("test config")
}

const RAIN: &str = "ext:weather@cwa.gov.tw:CWA-feed-A1";
const DEBRIS: &str = "ext:swcb@swcb.gov.tw:SWCB-feed-B1";

#[tokio::test]
async fn feed_changes_become_the_exact_event_sequence() {
    let (addr, server) = start_server().await;
    let clock = TestClock::at(1);
    let a1 = Msg::rain("CWA-feed-A1", 0);
    let b1 = Msg::debris("SWCB-feed-B1", -5, 30);
    publish(&server, addr, &[entry(&a1), entry(&b1)]);

    // 1. The first poll runs at start: both alerts, oldest first.
    let (inbound, mut rx) =
        Inbound::start_with_clock(feed_config("feedseq", addr), geo(), clock.clock()).expect("starts");
    let first = [next_event(&mut rx).await, next_event(&mut rx).await];
    let got: Vec<_> = first.iter().map(|e| (e.kind(), e.alert().id.as_str(), e.alert().version)).collect();
    assert_eq!(got, vec![("raised", DEBRIS, 1), ("raised", RAIN, 1)]);
    assert!(first.iter().all(|e| e.alert().source == "feedseq" && e.alert().public));

    // 2. Unchanged feed: the server answers 304 to our validators, nothing is fetched or announced.
    let report = inbound.poll_now("feedseq").await.expect("poll");
    assert!(report.not_modified, "{report:?}");
    {
        let s = server.lock().expect("server state");
        assert_eq!((s.feed_200, s.feed_304), (1, 1));
        assert_eq!(s.last_conditional, (Some(s.etag.clone()), Some(LAST_MODIFIED.to_string())));
    }
    assert!(drain(&mut rx).is_empty());

    // 3. An Update appears: only the new entry is fetched.
    clock.set(10);
    let mut a2 = a1.follow_up("CWA-feed-A2", "Update", 9);
    a2.headline_zh = "豪雨特報（範圍擴大）".into();
    a2.geocodes = vec!["1000812", "6400033"];
    publish(&server, addr, &[entry(&a2), entry(&a1), entry(&b1)]);
    let report = inbound.poll_now("feedseq").await.expect("poll");
    assert_eq!((report.entries, report.fetched, report.accepted), (3, 1, 1), "{report:?}");
    assert_eq!(drain(&mut rx), vec![ev("updated", RAIN, 2)]);
    let rain = inbound.active().into_iter().find(|a| a.id == RAIN).expect("active");
    assert!(rain.zone_ids.contains(&"dfa-jiaxian-xiaolin".to_string()), "the update's new area counts");
    assert_eq!(server.lock().expect("state").doc_gets.get("CWA-feed-A1.xml"), Some(&1), "not refetched");

    // 4. The Cancel.
    clock.set(20);
    let a3 = a2.follow_up("CWA-feed-A3", "Cancel", 19);
    publish(&server, addr, &[entry(&a3), entry(&a2), entry(&a1), entry(&b1)]);
    inbound.poll_now("feedseq").await.expect("poll");
    assert_eq!(drain(&mut rx), vec![ev("cancelled", RAIN, 2)]);

    // 5. Time passes the debris-flow alert's expires: the timer ends it.
    clock.set(31);
    let e = next_event(&mut rx).await;
    assert_eq!((e.kind(), e.alert().id.as_str()), ("expired", DEBRIS));
    assert!(inbound.active().is_empty());

    // 6. Bad entries among good ones: each counted under its reason, the good one still taken.
    clock.set(32);
    let stale = Msg::debris("SWCB-feed-C1", -120, -60);
    let mut unknown = Msg::rain("CWA-feed-D1", 31);
    unknown.geocodes = vec!["1001399"];
    let broken = (
        "CWA-feed-E1",
        "2026-11-26T18:31:00+08:00",
        b"<alert xmlns='urn:oasis:names:tc:emergency:cap:1.2'><identifier>x".to_vec(),
    );
    let huge_body =
        Msg::rain("CWA-feed-H1", 31).xml().replace("</alert>", &format!("<!--{}--></alert>", "x".repeat(9000)));
    let huge = ("CWA-feed-H1", "2026-11-26T18:31:00+08:00", huge_body.into_bytes());
    let g1 = Msg::rain("CWA-feed-G1", 31);
    // One entry whose document is missing (404): retried on the next poll, not marked done.
    let missing = Msg::rain("CWA-feed-M1", 31);
    let before = |r: &str| METRICS.rejected.with_label_values(&["feedseq", r]).get();
    let (xml0, geo0, big0) = (before("invalid_xml"), before("unknown_geocode"), before("too_large"));
    publish(
        &server,
        addr,
        &[
            entry(&missing),
            entry(&g1),
            entry(&unknown),
            broken,
            huge,
            entry(&stale),
            entry(&a3),
            entry(&a2),
            entry(&a1),
            entry(&b1),
        ],
    );
    server.lock().expect("state").docs.remove("CWA-feed-M1.xml");
    let report = inbound.poll_now("feedseq").await.expect("poll");
    assert_eq!(
        (report.accepted, report.ignored, report.rejected, report.fetch_failed),
        (1, 1, 3, 1),
        "G1 taken; C1 expired; D1, E1, H1 refused; M1 missing: {report:?}"
    );
    assert_eq!(drain(&mut rx), vec![ev("raised", "ext:weather@cwa.gov.tw:CWA-feed-G1", 1)]);
    assert_eq!((before("invalid_xml") - xml0, before("unknown_geocode") - geo0, before("too_large") - big0), (1, 1, 1));
    assert_eq!(METRICS.ignored.with_label_values(&["feedseq", "expired"]).get(), 1);

    // 7. The document appears: the feed is fetched in full (no validators after a failed fetch) and only M1 is new.
    server.lock().expect("state").docs.insert("CWA-feed-M1.xml".into(), missing.xml().into_bytes());
    let report = inbound.poll_now("feedseq").await.expect("poll");
    assert_eq!((report.not_modified, report.fetched, report.accepted), (false, 1, 1), "{report:?}");
    assert_eq!(drain(&mut rx), vec![ev("raised", "ext:weather@cwa.gov.tw:CWA-feed-M1", 1)]);
    let report = inbound.poll_now("feedseq").await.expect("poll");
    assert!(report.not_modified);
    {
        let s = server.lock().expect("state");
        assert_eq!(s.doc_gets.get("CWA-feed-E1.xml"), Some(&1), "a refused document is not refetched every poll");
        assert_eq!(s.feed_304, 2);
    }

    // 8. The server fails: errors are counted and the wait doubles; a good answer resets it.
    server.lock().expect("state").fail_next = vec![500, 503];
    let status0 = METRICS.rejected.with_label_values(&["feedseq", "feed_status"]).get();
    assert_eq!(inbound.poll_now("feedseq").await, Err(PollError::Status(500)));
    assert_eq!(inbound.poll_now("feedseq").await, Err(PollError::Status(503)));
    let poller = inbound.feeds.get("feedseq").expect("poller").clone();
    assert_eq!(poller.lock().await.next_delay(), std::time::Duration::from_secs(14400), "3600 × 2² capped");
    assert_eq!(METRICS.rejected.with_label_values(&["feedseq", "feed_status"]).get(), status0 + 2);
    assert_eq!(METRICS.feed_failures.with_label_values(&["feedseq"]).get(), 2);
    assert!(inbound.poll_now("feedseq").await.expect("recovers").not_modified);
    assert_eq!(poller.lock().await.next_delay(), std::time::Duration::from_secs(3600));
    assert_eq!(METRICS.feed_failures.with_label_values(&["feedseq"]).get(), 0);
    assert!(drain(&mut rx).is_empty(), "nothing announced twice");
    assert_eq!(inbound.active().len(), 2);
}

#[tokio::test]
async fn unreachable_oversized_and_invalid_feeds_fail_cleanly() {
    // A port with nothing listening.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let (inbound, _rx) = Inbound::start(feed_config("feeddown", closed), geo()).expect("starts");
    let err = inbound.poll_now("feeddown").await.expect_err("nothing listens");
    assert!(matches!(err, PollError::Unreachable(_)), "{err:?}");
    assert_eq!(inbound.poll_now("nosuchfeed").await, Err(PollError::UnknownFeed("nosuchfeed".into())));

    let (addr, server) = start_server().await;
    let mut config = feed_config("feedbig", addr);
    config.feeds[0].max_feed_bytes = 200;
    publish(&server, addr, &[entry(&Msg::rain("CWA-big-1", 0))]);
    let (inbound, _rx) = Inbound::start(config, geo()).expect("starts");
    assert_eq!(inbound.poll_now("feedbig").await, Err(PollError::TooLarge { limit: 200 }));

    server.lock().expect("state").feed = "<rss version=\"2.0\"><channel/></rss>".into();
    server.lock().expect("state").etag = "\"rss\"".into();
    let (inbound, _rx) = Inbound::start(feed_config("feedrss", addr), geo()).expect("starts");
    let err = inbound.poll_now("feedrss").await.expect_err("not Atom");
    assert_eq!(err.reason(), "feed_invalid");
    assert!(inbound.active().is_empty());
}

/// A server that only counts the requests it gets: where the poller must never connect.
async fn counting_server(ip: &str) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            ([(header::CONTENT_TYPE, "application/cap+xml")], Msg::rain("CWA-trap-1", 0).xml())
        }
    });
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, hits)
}

/// A hand-written Atom feed whose entries link `links` (identifier, href), all updated at BASE.
fn atom_with_links(links: &[(&str, String)]) -> String {
    let mut x =
        String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\n");
    x.push_str("<id>urn:test</id><title>t</title><updated>2026-11-26T18:00:00+08:00</updated>\n");
    for (id, href) in links {
        x.push_str(&format!(
            "<entry><id>{id}</id><title>{id}</title><updated>2026-11-26T18:00:00+08:00</updated>\
             <link rel=\"alternate\" type=\"application/cap+xml\" href=\"{href}\"/></entry>\n"
        ));
    }
    x.push_str("</feed>\n");
    x
}

#[tokio::test]
async fn feed_links_go_only_where_the_source_allows() {
    // The feed on 127.0.0.1; a host it may link to but whose address is not allowed (127.0.0.2); a host it may not
    // link to at all (127.0.0.3). Both of the latter count every request they get: there must be none.
    let (addr, server) = start_server().await;
    let (listed, listed_hits) = counting_server("127.0.0.2").await;
    let (other, other_hits) = counting_server("127.0.0.3").await;
    let port = addr.port();
    let good = Msg::rain("CWA-egress-good", 0);
    let moved = Msg::rain("CWA-egress-moved", 0);
    {
        let mut s = server.lock().expect("state");
        s.docs.insert("good.xml".into(), good.xml().into_bytes());
        s.docs.insert("moved.xml".into(), moved.xml().into_bytes());
        s.etag = "\"egress\"".into();
        s.feed = atom_with_links(&[
            ("good", format!("http://127.0.0.1:{port}/cap/good.xml")),
            // Same origin: followed.
            ("moved", format!("http://127.0.0.1:{port}/go/moved.xml")),
            ("other-host", format!("http://{other}/cap/x.xml")),
            ("listed-but-loopback", format!("http://{listed}/cap/x.xml")),
            // Listed hosts on a private and a link-local (metadata service) address: refused before connecting.
            ("private", "http://10.0.0.1/cap/x.xml".into()),
            ("metadata", "http://169.254.169.254/latest/meta-data/".into()),
            ("cross-origin-redirect", format!("http://127.0.0.1:{port}/go-away/{other}")),
            ("redirect-loop", format!("http://127.0.0.1:{port}/loop")),
        ]);
    }
    let toml = format!(
        r#"
        [[feed]]
        name = "egress"
        url = "http://127.0.0.1:{port}/feed.atom"
        interval_s = 3600
        max_backoff_s = 3600
        timeout_s = 5
        hosts = ["127.0.0.2", "10.0.0.1", "169.254.169.254"]
        # Loopback explicitly allowed, and only the feed's own address of it.
        allow_networks = ["127.0.0.1/32"]
        "#
    );
    let config = InboundConfig::from_toml(&toml, Path::new("test.toml")).expect("test config");
    let count = |r: &str| METRICS.rejected.with_label_values(&["egress", r]).get();
    let (inbound, mut rx) = Inbound::start_with_clock(config, geo(), TestClock::at(1).clock()).expect("starts");
    // The first poll runs at start; poll_now waits for it (the poller's lock) and then finds nothing new.
    next_event(&mut rx).await;
    next_event(&mut rx).await;
    let report = inbound.poll_now("egress").await.expect("poll");
    assert!(report.not_modified, "{report:?}");

    let ids: Vec<String> = inbound.active().into_iter().map(|a| a.identifier).collect();
    assert!(ids.contains(&good.identifier) && ids.contains(&moved.identifier) && ids.len() == 2, "{ids:?}");
    assert_eq!(
        (count("host_not_allowed"), count("address_not_allowed"), count("redirect_refused")),
        (1, 3, 2),
        "each refusal counted under its reason"
    );
    assert_eq!(listed_hits.load(Ordering::SeqCst), 0, "no request reached 127.0.0.2");
    assert_eq!(other_hits.load(Ordering::SeqCst), 0, "no request reached 127.0.0.3");
    assert_eq!(count("fetch_failed"), 0, "refusals are not transport failures, and are not retried");
}

#[tokio::test]
async fn a_feed_whose_name_or_redirect_leads_where_it_may_not_is_not_fetched() {
    let (addr, server) = start_server().await;
    let (other, other_hits) = counting_server("127.0.0.3").await;
    publish(&server, addr, &[entry(&Msg::rain("CWA-egress-name", 0))]);
    let port = addr.port();
    // `localhost` is a name: the resolver finds 127.0.0.1, which this source may not reach.
    let toml = format!(
        r#"
        [[feed]]
        name = "egress-name"
        url = "http://localhost:{port}/feed.atom"
        interval_s = 3600
        max_backoff_s = 3600
        [[feed]]
        name = "egress-moved"
        url = "http://127.0.0.1:{port}/go-away/{other}"
        interval_s = 3600
        max_backoff_s = 3600
        allow_networks = ["loopback"]
        "#
    );
    let config = InboundConfig::from_toml(&toml, Path::new("test.toml")).expect("test config");
    let (inbound, _rx) = Inbound::start(config, geo()).expect("starts");
    let err = inbound.poll_now("egress-name").await.expect_err("refused");
    assert_eq!(err.reason(), "address_not_allowed", "{err}");
    let err = inbound.poll_now("egress-moved").await.expect_err("refused");
    assert_eq!(err.reason(), "redirect_refused", "{err}");
    // Each poll's refusal counted (ours, and the one at start when it has run).
    for (source, reason) in [("egress-name", "address_not_allowed"), ("egress-moved", "redirect_refused")] {
        assert!(METRICS.rejected.with_label_values(&[source, reason]).get() >= 1, "{source}");
    }
    let s = server.lock().expect("state");
    assert_eq!(s.feed_200 + s.feed_304, 0, "the feed behind `localhost` was never requested");
    assert_eq!(other_hits.load(Ordering::SeqCst), 0);
    assert!(inbound.active().is_empty());
}

#[test]
fn a_feed_on_an_address_it_may_not_reach_is_a_config_error() {
    let text = "[[feed]]\nname = \"local\"\nurl = \"http://127.0.0.1:8090/feed.atom\"\n";
    let err = InboundConfig::from_toml(text, Path::new("config/inbound.toml")).expect_err("loopback");
    let msg = err.to_string();
    assert!(msg.contains("config/inbound.toml") && msg.contains("allow_networks = [\"loopback\"]"), "{msg}");
    let text = "[[feed]]\nname = \"meta\"\nurl = \"http://169.254.169.254/feed\"\n";
    let msg = InboundConfig::from_toml(text, Path::new("inbound.toml")).expect_err("link-local").to_string();
    assert!(msg.contains("link_local"), "{msg}");
    let text = "[[feed]]\nname = \"x\"\nurl = \"http://a.example/f\"\nallow_networks = [\"intranet\"]\n";
    let msg = InboundConfig::from_toml(text, Path::new("inbound.toml")).expect_err("unknown class").to_string();
    assert!(msg.contains("allow_networks") && msg.contains("intranet"), "{msg}");
    let text = "[[feed]]\nname = \"x\"\nurl = \"http://a.example/f\"\nhosts = [\"b.example:8080\"]\n";
    let msg = InboundConfig::from_toml(text, Path::new("inbound.toml")).expect_err("host with port").to_string();
    assert!(msg.contains("hosts") && msg.contains("b.example:8080"), "{msg}");
}
