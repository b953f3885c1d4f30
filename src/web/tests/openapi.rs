//! The OpenAPI document against the router (issue 27): every method of every path the router mounts is an operation
//! of the document and every operation is served, so that neither can change without the other. The route list is
//! the router's own ([`routes`](crate::web::routes)), each path probed with every method; nothing here lists routes
//! by hand. Also: the document is public, an OpenAPI 3.1 document with the security schemes, every operator
//! operation names its scope and its 401/403, and every `AppError` code is in the documented `ErrorCode`.
//! (`tests/contract.rs` validates the document with openapi-spec-validator and runs Schemathesis against the binary.)

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use serde_json::Value;

use super::{TestApp, ADMIN_TOKEN};
use crate::web::auth::Scope;
use crate::web::openapi::{document, openapi_path};
use crate::web::AppError;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// A concrete request path for a route path: every parameter (`{id}`, `{*file}`) becomes `x`.
fn concrete(path: &str) -> String {
    path.split('/').map(|segment| if segment.starts_with('{') { "x" } else { segment }).collect::<Vec<_>>().join("/")
}

/// (method, OpenAPI path) of every operation the router serves: a method is served when the router does not answer
/// it with 405. An admin token, so that no scope check stands between the request and the method routing.
async fn served(test: &TestApp) -> BTreeSet<(String, String)> {
    let mut served = BTreeSet::new();
    for (path, _) in crate::web::routes() {
        if crate::web::is_demo_route(path) && !test.app.web.deliver_to_self {
            continue;
        }
        for m in METHODS {
            let method = Method::from_bytes(m.as_bytes()).expect("method");
            let answer = test.call(method, &concrete(path), Some(ADMIN_TOKEN), None).await;
            if answer.status != StatusCode::METHOD_NOT_ALLOWED {
                served.insert((m.to_string(), openapi_path(path)));
            }
        }
    }
    served
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m.to_ascii_lowercase()).is_some() {
                documented.insert((m.to_string(), path.clone()));
            }
        }
    }
    documented
}

/// The document as a client gets it: `GET /api/v1/openapi.json`, no token.
async fn fetched(test: &TestApp) -> Value {
    let answer = test.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    let content_type = answer.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("application/json"), "{content_type}");
    answer.json()
}

#[tokio::test]
async fn every_route_the_router_mounts_is_documented_and_nothing_else() {
    let test = TestApp::new();
    let doc = fetched(&test).await;
    let served = served(&test).await;
    let documented = documented(&doc);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(undocumented.is_empty(), "routes the router serves and the OpenAPI document lacks: {undocumented:?}");
    assert!(unserved.is_empty(), "operations the document has and the router does not serve: {unserved:?}");
    // Not vacuous: the public, operator, partner and websocket routes are all in.
    for (m, p) in [
        ("GET", "/api/v1/alerts"),
        ("POST", "/api/v1/cap/inbound"),
        ("GET", "/ws/operator"),
        ("DELETE", "/api/v1/push/subscriptions"),
        ("GET", "/api/v1/openapi.json"),
    ] {
        assert!(served.contains(&(m.to_string(), p.to_string())), "{m} {p}");
    }
}

/// Under `serve` outside a drill the demo's receivers are not mounted, and not in the document either.
#[test]
fn the_demo_receivers_are_documented_only_where_mounted() {
    let demo = openapi_path(crate::web::DEMO_RECEIVERS);
    assert!(document(true).paths.paths.contains_key(&demo));
    assert!(!document(false).paths.paths.contains_key(&demo));
}

#[tokio::test]
async fn the_document_is_openapi_3_1_with_security_schemes_and_scopes() {
    let test = TestApp::new();
    let doc = fetched(&test).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["operator_token"]["scheme"], "bearer", "{schemes}");
    assert_eq!(schemes["partner_token"]["scheme"], "bearer", "{schemes}");
    assert_eq!(schemes["partner_hmac"]["name"], "X-DC-Signature", "{schemes}");
    let scopes = ["read", "operate", "admin"];
    let mut seen_scopes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let label = format!("{method} {path}");
            let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{label}: no responses"));
            assert!(responses.keys().any(|s| s.starts_with('2') || s == "101"), "{label}: no success documented");
            let Some(security) = op.get("security").and_then(Value::as_array) else { continue };
            for requirement in security {
                if let Some(needed) = requirement.get("operator_token").and_then(Value::as_array) {
                    assert_eq!(needed.len(), 1, "{label}: one scope, the least it needs");
                    let scope = needed[0].as_str().unwrap_or_default();
                    assert!(scopes.contains(&scope), "{label}: scope {scope}");
                    seen_scopes.insert(scope.to_string());
                    for status in ["401", "403"] {
                        assert!(responses.contains_key(status), "{label}: {status} undocumented");
                    }
                }
            }
        }
    }
    assert_eq!(seen_scopes.len(), 3, "every scope is used somewhere: {seen_scopes:?}");
}

/// The documented scope of each operator route is the one the router enforces: a token of the scope below gets 403.
#[tokio::test]
async fn documented_scopes_are_the_enforced_ones() {
    let test = TestApp::new();
    let doc = fetched(&test).await;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let Some(scope) = op["security"][0]["operator_token"][0].as_str() else { continue };
            let below = match scope {
                "read" => None,
                "operate" => Some(Scope::Read),
                _ => Some(Scope::Operate),
            };
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
            let uri = concrete(path);
            let answer = test.call(method.clone(), &uri, super::token_of(below), None).await;
            let expected = if below.is_none() { StatusCode::UNAUTHORIZED } else { StatusCode::FORBIDDEN };
            assert_eq!(answer.status, expected, "{method} {uri} with {below:?}: documented scope {scope}");
            // The scope documented is enough.
            let enough = match scope {
                "read" => Scope::Read,
                "operate" => Scope::Operate,
                _ => Scope::Admin,
            };
            let answer = test.call(method.clone(), &uri, super::token_of(Some(enough)), None).await;
            assert!(
                ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&answer.status),
                "{method} {uri} with {enough:?}: {}",
                answer.status
            );
        }
    }
}

#[tokio::test]
async fn every_app_error_code_is_documented() {
    let test = TestApp::new();
    let doc = fetched(&test).await;
    let codes: BTreeSet<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode is an enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for e in [
        AppError::Unauthenticated,
        AppError::Forbidden(Scope::Admin),
        AppError::NotFound(String::new()),
        AppError::BadRequest(String::new()),
        AppError::Conflict(String::new()),
        AppError::Internal(String::new()),
    ] {
        assert!(codes.contains(e.reason()), "{} is not in ErrorCode {codes:?}", e.reason());
    }
    assert!(codes.contains("rate_limited"), "the public endpoints' 429");
}

/// Schemathesis found it (issue 27): a replay of a delivery or subscriber that does not exist answered 400, and a
/// delivery id that is not a number answered axum's plain-text rejection. Now 404 and a JSON 400.
#[tokio::test]
async fn replay_of_what_does_not_exist_is_404_and_a_bad_id_a_json_400() {
    let test = TestApp::new();
    let token = Some(super::OPERATE_TOKEN);
    let unknown_subscriber = "/api/v1/subscribers/no-such-subscriber/deliveries/1/replay";
    let message =
        test.call(Method::POST, unknown_subscriber, token, None).await.refusal(StatusCode::NOT_FOUND, "not_found");
    assert!(message.contains("no-such-subscriber"), "{message}");
    let unknown_delivery = "/api/v1/subscribers/demo-media/deliveries/999999/replay";
    let message =
        test.call(Method::POST, unknown_delivery, token, None).await.refusal(StatusCode::NOT_FOUND, "not_found");
    assert!(message.contains("999999"), "{message}");
    let not_a_number = "/api/v1/subscribers/demo-media/deliveries/abc/replay";
    test.call(Method::POST, not_a_number, token, None).await.refusal(StatusCode::BAD_REQUEST, "bad_request");
}

/// Schemathesis found it (issue 27): parameters axum's extractors refuse — a repeated query parameter, a path
/// segment that is not UTF-8 once percent-decoded — were answered in axum's plain text; now a JSON 400 like every
/// other refusal.
#[tokio::test]
async fn unparsable_path_and_query_parameters_are_json_400s() {
    let test = TestApp::new();
    for (method, uri) in [
        (Method::GET, "/api/v1/reports/clusters?state=open&state=open"),
        (Method::GET, "/api/v1/zones/%FF/cells"),
        (Method::GET, "/api/v1/sensors/%FF/readings?metric=rain_mm"),
        (Method::POST, "/api/v1/alerts/%FF/ack"),
        (Method::GET, "/cap/%FF.xml"),
        (Method::POST, "/api/v1/cap/inbound?source=a&source=b"),
    ] {
        let answer = test.call(method.clone(), uri, Some(ADMIN_TOKEN), None).await;
        assert_eq!(
            answer.headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{method} {uri}: {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        answer.refusal(StatusCode::BAD_REQUEST, "bad_request");
    }
}
