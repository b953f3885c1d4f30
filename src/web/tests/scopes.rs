//! Every route against the scope rules: 401 without a token, 403 with too small a scope, the handler's own answer
//! (success or a domain error, never 401/403) with enough; public routes open to all. The table below is the tests'
//! copy of `docs/API.md`'s "who" column, and [`the_table_covers_every_route_and_method`] fails when the router gains a
//! route or a method the table does not list.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};

use super::{token_of, TestApp, PARTNER_TOKEN};
use crate::web::auth::Scope;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    /// Anyone, no token (rate-limited per address where `web/public.rs` says).
    Public,
    /// An operator token of at least this scope.
    Operator(Scope),
    /// A partner agency's own credentials (`config/inbound.toml`), never an operator token.
    Partner,
}

/// One method of one route: its path as the router spells it, an example request, and what an allowed caller gets
/// back from the handler in the demo app (so that "allowed" is checked as the handler's own answer).
struct Case {
    method: &'static str,
    path: &'static str,
    who: Who,
    uri: &'static str,
    body: Option<&'static str>,
    allowed: u16,
}

const fn case(method: &'static str, path: &'static str, who: Who, uri: &'static str, allowed: u16) -> Case {
    Case { method, path, who, uri, body: None, allowed }
}

const fn with_body(
    method: &'static str,
    path: &'static str,
    who: Who,
    uri: &'static str,
    body: &'static str,
    allowed: u16,
) -> Case {
    Case { method, path, who, uri, body: Some(body), allowed }
}

use Who::{Operator, Partner, Public};
const READ: Who = Operator(Scope::Read);
const OPERATE: Who = Operator(Scope::Operate);
const ADMIN: Who = Operator(Scope::Admin);

/// The scope of every route and method (docs/API.md, "HTTP paths"). Websockets answer 426 here: the scope check
/// passed and the upgrade itself needs a real connection (the e2e tests make those).
const TABLE: &[Case] = &[
    case("GET", "/", Public, "/", 200),
    case("GET", "/app", Public, "/app", 200),
    case("GET", "/static/{*file}", Public, "/static/map.js", 200),
    case("GET", "/ws/citizen", Public, "/ws/citizen", 426),
    case("GET", "/healthz", Public, "/healthz", 200),
    case("GET", "/metrics", Public, "/metrics", 200),
    case("GET", "/ws/operator", READ, "/ws/operator", 426),
    case("GET", "/api/v1/alerts", READ, "/api/v1/alerts", 200),
    with_body(
        "POST",
        "/api/v1/alerts/{id}/comment",
        OPERATE,
        "/api/v1/alerts/no-such-alert/comment",
        r#"{"text":"x"}"#,
        404,
    ),
    case("POST", "/api/v1/alerts/{id}/{action}", OPERATE, "/api/v1/alerts/no-such-alert/ack", 404),
    case("GET", "/api/v1/sensors", READ, "/api/v1/sensors", 200),
    with_body("POST", "/api/v1/sensors", ADMIN, "/api/v1/sensors", "{}", 400),
    with_body("PUT", "/api/v1/sensors/{id}", ADMIN, "/api/v1/sensors/no-such-sensor", "{}", 400),
    case("POST", "/api/v1/sensors/{id}/retire", ADMIN, "/api/v1/sensors/no-such-sensor/retire", 404),
    case(
        "GET",
        "/api/v1/sensors/{id}/readings",
        READ,
        "/api/v1/sensors/no-such-sensor/readings?metric=water_level_m",
        404,
    ),
    case("GET", "/api/v1/dead-letters", READ, "/api/v1/dead-letters", 200),
    case("GET", "/api/v1/zones/{id}/cells", READ, "/api/v1/zones/dfa-xinyi-shenmu/cells", 200),
    with_body(
        "POST",
        "/api/v1/zones/{id}/forecast",
        OPERATE,
        "/api/v1/zones/no-such-zone/forecast",
        r#"{"value":1}"#,
        404,
    ),
    case("POST", "/api/v1/rules/reload", ADMIN, "/api/v1/rules/reload", 200),
    with_body("POST", "/api/v1/cap/inbound", Partner, "/api/v1/cap/inbound", "not CAP", 400),
    case("GET", "/cap/feed.atom", Public, "/cap/feed.atom", 200),
    case("GET", "/cap/{file}", Public, "/cap/no-such-message.xml", 404),
    case("GET", "/opendata/alerts.geojson", Public, "/opendata/alerts.geojson", 200),
    case("GET", "/opendata/sensors.geojson", Public, "/opendata/sensors.geojson", 200),
    case("GET", "/api/v1/subscribers", READ, "/api/v1/subscribers", 200),
    with_body("POST", "/api/v1/subscribers", ADMIN, "/api/v1/subscribers", "{}", 400),
    case(
        "GET",
        "/api/v1/subscribers/{name}/deliveries",
        READ,
        "/api/v1/subscribers/no-such-subscriber/deliveries",
        200,
    ),
    case(
        "POST",
        "/api/v1/subscribers/{name}/deliveries/{id}/replay",
        OPERATE,
        "/api/v1/subscribers/no-such-subscriber/deliveries/1/replay",
        404,
    ),
    case("GET", "/api/v1/broadcasts", READ, "/api/v1/broadcasts", 200),
    case(
        "POST",
        "/api/v1/broadcasts/{alert_id}/rebroadcast",
        OPERATE,
        "/api/v1/broadcasts/no-such-alert/rebroadcast",
        404,
    ),
    case(
        "GET",
        "/api/v1/broadcasts/{alert_id}/warning-area",
        READ,
        "/api/v1/broadcasts/no-such-alert/warning-area",
        404,
    ),
    case("GET", "/api/v1/carriers/{carrier}/cells", READ, "/api/v1/carriers/Chunghwa%20Telecom/cells", 200),
    // The demo's stand-in receivers take anyone's POST; this app is built from the demo config, so they are mounted
    // (`serve` outside a drill answers 404 there: tests/deployment.rs).
    with_body("POST", "/demo/{*receiver}", Public, "/demo/webhook", "{}", 204),
    case("GET", "/demo/{*receiver}", READ, "/demo/received", 200),
    // The demo's stand-in vehicle-detector feed, polled by the demo's [[vd_feed]]: public as an agency's open feed.
    case("GET", "/demo/vd/VDLive.json", Public, "/demo/vd/VDLive.json", 200),
    with_body("POST", "/api/v1/reports", Public, "/api/v1/reports", "{}", 422),
    case("GET", "/api/v1/reports/clusters", READ, "/api/v1/reports/clusters", 200),
    with_body(
        "POST",
        "/api/v1/reports/clusters/{id}/{action}",
        OPERATE,
        "/api/v1/reports/clusters/no-such-cluster/verify",
        "{}",
        404,
    ),
    case("GET", "/api/v1/reports/photos/{name}", READ, "/api/v1/reports/photos/no-such-photo.jpg", 404),
    case("GET", "/opendata/reports.geojson", Public, "/opendata/reports.geojson", 200),
    case("GET", "/opendata/reports/photos/{name}", Public, "/opendata/reports/photos/no-such-photo.jpg", 404),
    // Web Push: anonymous like the citizens' socket (web/push.rs); a bad body is the channel's 400.
    case("GET", "/api/v1/push/key", Public, "/api/v1/push/key", 200),
    with_body("POST", "/api/v1/push/subscriptions", Public, "/api/v1/push/subscriptions", "{}", 400),
    with_body(
        "DELETE",
        "/api/v1/push/subscriptions",
        Public,
        "/api/v1/push/subscriptions",
        r#"{"endpoint":"https://fcm.googleapis.com/fcm/send/none"}"#,
        404,
    ),
    case("GET", "/sw.js", Public, "/sw.js", 200),
    case("GET", "/manifest.webmanifest", Public, "/manifest.webmanifest", 200),
    case("GET", "/icon.svg", Public, "/icon.svg", 200),
    // The contract (web/openapi.rs): public, like the prose in docs/API.md.
    case("GET", "/api/v1/openapi.json", Public, "/api/v1/openapi.json", 200),
];

/// The methods the coverage check tries on every path (HEAD rides with GET in axum).
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

fn method(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).expect("method")
}

#[tokio::test]
async fn every_route_answers_each_scope_as_the_table_says() {
    let test = TestApp::new();
    let mut wrong = Vec::new();
    for case in TABLE {
        let label = format!("{} {}", case.method, case.uri);
        for given in [None, Some(Scope::Read), Some(Scope::Operate), Some(Scope::Admin)] {
            let answer = test.call(method(case.method), case.uri, token_of(given), case.body).await;
            let status = answer.status;
            let expected = match case.who {
                Public => StatusCode::from_u16(case.allowed).unwrap(),
                Operator(_) if given.is_none() => StatusCode::UNAUTHORIZED,
                Operator(needed) if given < Some(needed) => StatusCode::FORBIDDEN,
                Operator(_) => StatusCode::from_u16(case.allowed).unwrap(),
                // Operator tokens are not partner credentials, whatever their scope.
                Partner => StatusCode::UNAUTHORIZED,
            };
            if status != expected {
                wrong.push(format!(
                    "{label} with {given:?}: {status}, expected {expected}: {}",
                    String::from_utf8_lossy(&answer.body).chars().take(200).collect::<String>()
                ));
                continue;
            }
            // The refusals are AppError's, body and all; the token's scope never shows in them.
            match status {
                StatusCode::UNAUTHORIZED if case.who != Partner => {
                    answer.refusal(StatusCode::UNAUTHORIZED, "unauthenticated");
                }
                StatusCode::FORBIDDEN => {
                    let message = answer.refusal(StatusCode::FORBIDDEN, "forbidden");
                    let Operator(needed) = case.who else { unreachable!() };
                    assert!(message.contains(&format!("{needed:?}")), "{label}: {message}");
                }
                _ => {}
            }
        }
        if case.who == Partner {
            let answer = test.call(method(case.method), case.uri, Some(PARTNER_TOKEN), case.body).await;
            if answer.status.as_u16() != case.allowed {
                wrong.push(format!("{label} with the partner's token: {}", answer.status));
            }
        }
    }
    assert!(wrong.is_empty(), "routes that break the scope table:\n{}", wrong.join("\n"));
}

#[tokio::test]
async fn the_table_covers_every_route_and_method() {
    let routed: BTreeSet<&str> = crate::web::routes().iter().map(|(path, _)| *path).collect();
    let tabled: BTreeSet<&str> = TABLE.iter().map(|c| c.path).collect();
    let missing: Vec<_> = routed.difference(&tabled).collect();
    let stale: Vec<_> = tabled.difference(&routed).collect();
    assert!(
        missing.is_empty(),
        "routes with no row in the scope table (add them to TABLE and docs/API.md): {missing:?}"
    );
    assert!(stale.is_empty(), "scope table rows for routes the router no longer has: {stale:?}");

    // Methods: every method the router answers on a path (anything but 405) has its row, and every row's method is
    // answered. An admin token, so that the scope check lets every routed method through.
    let test = TestApp::new();
    let mut by_path: BTreeMap<&str, (&str, BTreeSet<&str>)> = BTreeMap::new();
    for c in TABLE {
        by_path.entry(c.path).or_insert((c.uri, BTreeSet::new())).1.insert(c.method);
    }
    for (path, (uri, tabled)) in by_path {
        let mut served = BTreeSet::new();
        for m in METHODS {
            let answer = test.call(method(m), uri, token_of(Some(Scope::Admin)), None).await;
            if answer.status != StatusCode::METHOD_NOT_ALLOWED {
                served.insert(m);
            }
        }
        assert_eq!(served, tabled, "{path}: methods the router serves vs. the scope table's rows");
    }
}

/// The table cannot pass by being empty or lopsided: every kind of caller appears.
#[test]
fn the_table_has_every_kind_of_route() {
    for who in [Public, READ, OPERATE, ADMIN, Partner] {
        assert!(TABLE.iter().any(|c| c.who == who), "{who:?}");
    }
}
