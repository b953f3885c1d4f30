//! What refusals look like: every [`AppError`](crate::web::AppError) variant's status and `{"error","message"}` body
//! through the router, the alert book's 409s, and the refusals that are not AppError's (413 and 415 of citizen
//! reports, 429 of the public endpoints).

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::Value;

use super::{peer, request, TestApp, ADMIN_TOKEN, OPERATE_TOKEN, READ_TOKEN};

#[tokio::test]
async fn unauthenticated_is_401_for_no_token_a_wrong_one_or_a_malformed_header() {
    let test = TestApp::new();
    test.call(Method::GET, "/api/v1/alerts", None, None).await.refusal(StatusCode::UNAUTHORIZED, "unauthenticated");
    test.call(Method::GET, "/api/v1/alerts", Some("not-a-token"), None)
        .await
        .refusal(StatusCode::UNAUTHORIZED, "unauthenticated");
    let basic = Request::builder()
        .uri("/api/v1/alerts")
        .header(header::AUTHORIZATION, format!("Basic {READ_TOKEN}"))
        .body(Body::empty())
        .unwrap();
    test.send(basic, peer(1)).await.refusal(StatusCode::UNAUTHORIZED, "unauthenticated");
    // `?token=` counts only on the websocket upgrade (browsers cannot set headers there): on the API a valid one is
    // no token at all, so URLs, proxies' logs and browser history never carry a working API credential.
    test.call(Method::GET, &format!("/api/v1/alerts?token={READ_TOKEN}"), None, None)
        .await
        .refusal(StatusCode::UNAUTHORIZED, "unauthenticated");
    test.call(Method::GET, "/api/v1/alerts?token=nope", None, None)
        .await
        .refusal(StatusCode::UNAUTHORIZED, "unauthenticated");
}

/// The token is checked before the query is: a caller without one learns nothing from the query's validation
/// (the history query used to be parsed first, answering 400 to anyone).
#[tokio::test]
async fn history_checks_the_token_before_the_query() {
    let test = TestApp::new();
    for uri in ["/api/v1/sensors/x/readings?bogus=1", "/api/v1/sensors/x/readings"] {
        test.call(Method::GET, uri, None, None).await.refusal(StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    // With a token the query's problems are named.
    let message = test
        .call(Method::GET, "/api/v1/sensors/x/readings?bogus=1", Some(READ_TOKEN), None)
        .await
        .refusal(StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("bogus"), "{message}");
    let message = test
        .call(Method::GET, "/api/v1/sensors/x/readings?metric=water_level_m", Some(READ_TOKEN), None)
        .await
        .refusal(StatusCode::NOT_FOUND, "not_found");
    assert!(message.contains("no sensor `x`"), "{message}");
}

#[tokio::test]
async fn forbidden_names_the_scope_needed() {
    let test = TestApp::new();
    let message = test
        .call(Method::POST, "/api/v1/rules/reload", Some(OPERATE_TOKEN), None)
        .await
        .refusal(StatusCode::FORBIDDEN, "forbidden");
    assert!(message.contains("Admin"), "{message}");
    let message = test
        .call(Method::POST, "/api/v1/alerts/x/ack", Some(READ_TOKEN), None)
        .await
        .refusal(StatusCode::FORBIDDEN, "forbidden");
    assert!(message.contains("Operate"), "{message}");
}

#[tokio::test]
async fn not_found_and_bad_request_name_the_problem() {
    let test = TestApp::new();
    let message = test.call(Method::GET, "/no/such/path", None, None).await.refusal(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(message, "no such path");
    let message = test
        .call(Method::POST, "/api/v1/alerts/no-such-alert/ack", Some(OPERATE_TOKEN), None)
        .await
        .refusal(StatusCode::NOT_FOUND, "not_found");
    assert!(message.contains("no-such-alert"), "{message}");

    let message = test
        .call(Method::POST, "/api/v1/alerts/any/frobnicate", Some(OPERATE_TOKEN), None)
        .await
        .refusal(StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("unknown action `frobnicate`"), "{message}");
    let message = test
        .call(Method::POST, "/api/v1/alerts/any/comment", Some(OPERATE_TOKEN), Some(r#"{"txt":"typo"}"#))
        .await
        .refusal(StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.starts_with("comment body:") && message.contains("txt"), "{message}");
    let message = test
        .call(
            Method::POST,
            "/api/v1/zones/dfa-xinyi-shenmu/forecast",
            Some(OPERATE_TOKEN),
            Some(r#"{"value":"a lot"}"#),
        )
        .await
        .refusal(StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.starts_with("forecast:"), "{message}");
}

/// An alert raised by a forecast: approving what needs no approval and cancelling twice are the book's 409s.
#[tokio::test]
async fn the_alert_book_answers_409_to_what_its_state_forbids() {
    let test = TestApp::new();
    // Shenmu's debris-flow threshold is 250 mm in 24 h (config/zones.geojson): 300 raises yellow (Severe, no approval).
    let answer = test
        .call(Method::POST, "/api/v1/zones/dfa-xinyi-shenmu/forecast", Some(OPERATE_TOKEN), Some(r#"{"value":300}"#))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let raised = answer.json();
    let id = raised["alerts"][0]["id"].as_str().unwrap_or_else(|| panic!("an alert: {raised}")).to_string();

    let message = test
        .call(Method::POST, &format!("/api/v1/alerts/{id}/approve"), Some(OPERATE_TOKEN), None)
        .await
        .refusal(StatusCode::CONFLICT, "conflict");
    assert!(message.contains(&id), "{message}");
    let ack = test.call(Method::POST, &format!("/api/v1/alerts/{id}/ack"), Some(OPERATE_TOKEN), None).await;
    assert_eq!(ack.status, StatusCode::OK);
    assert_eq!(ack.json()["id"], Value::from(id.clone()));
    let cancel =
        test.call(Method::POST, &format!("/api/v1/alerts/{id}/cancel"), Some(OPERATE_TOKEN), Some(r#"{}"#)).await;
    assert_eq!(cancel.status, StatusCode::OK, "{}", String::from_utf8_lossy(&cancel.body));
    test.call(Method::POST, &format!("/api/v1/alerts/{id}/cancel"), Some(OPERATE_TOKEN), None)
        .await
        .refusal(StatusCode::CONFLICT, "conflict");
    // Acknowledging an ended alert is one too; a note on it is not (operators annotate what happened afterwards).
    test.call(Method::POST, &format!("/api/v1/alerts/{id}/ack"), Some(OPERATE_TOKEN), None)
        .await
        .refusal(StatusCode::CONFLICT, "conflict");
}

/// The sensor registry: a copy of a sensor under a new id is created (201), the same again is a 409, and a registry
/// that cannot be saved is a 500 that says so without showing the file system.
#[tokio::test]
async fn the_registry_answers_201_409_and_500_when_it_cannot_save() {
    let test = TestApp::new();
    let list = test.call(Method::GET, "/api/v1/sensors", Some(READ_TOKEN), None).await.json();
    let mut sensor = list["sensors"][0].clone();
    sensor["id"] = Value::from("testcopy1");
    let body = sensor.to_string();
    let created = test.call(Method::POST, "/api/v1/sensors", Some(ADMIN_TOKEN), Some(&body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&created.body));
    let message = test
        .call(Method::POST, "/api/v1/sensors", Some(ADMIN_TOKEN), Some(&body))
        .await
        .refusal(StatusCode::CONFLICT, "conflict");
    assert!(message.contains("testcopy1"), "{message}");

    // The registry's file (ingest::identity::DataDir::sensors_file) turned into a folder: the save cannot replace it.
    let file = test.data_dir.path().join("sensors.json");
    std::fs::remove_file(&file).expect("the registry was saved to sensors.json");
    std::fs::create_dir_all(file.join("in-the-way")).unwrap();
    sensor["id"] = Value::from("testcopy2");
    let message = test
        .call(Method::POST, "/api/v1/sensors", Some(ADMIN_TOKEN), Some(&sensor.to_string()))
        .await
        .refusal(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert_eq!(message, "the registry could not be saved");
    // Nothing half-done: the sensor that was not saved is not served either.
    let list = test.call(Method::GET, "/api/v1/sensors", Some(READ_TOKEN), None).await.json();
    assert!(!list.to_string().contains("testcopy2"), "an unsaved sensor is in the registry");
}

/// Citizen reports: a declared body over the limit is 413 before it is read, a body that is not JSON is 415.
#[tokio::test]
async fn reports_refuse_too_large_and_wrong_type() {
    let test = TestApp::new();
    let limit = test.app.reports.policy().max_body_bytes;
    let big = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/reports")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, (limit + 1).to_string())
        .body(Body::from(vec![b' '; limit + 1]))
        .unwrap();
    let answer = test.send(big, peer(3)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer.json()["error"].is_string(), "{}", answer.json());

    let text = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/reports")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    let answer = test.send(text, peer(3)).await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(answer.json()["error"].is_string(), "{}", answer.json());
}

/// The public endpoints: `http.public_burst` requests at once per address, then 429 with `Retry-After`; another
/// address and an operator's token are not held back.
#[tokio::test]
async fn public_endpoints_answer_429_past_the_burst() {
    let test = TestApp::new();
    let burst = crate::config::ConfigFiles::embedded().unwrap().main.http.public_burst;
    // The bucket refills at `public_per_s` while the requests run, so the refusal comes at the burst or a little after.
    let mut admitted = 0;
    let answer = loop {
        let answer = test.send(request(Method::GET, "/opendata/alerts.geojson", None, None), peer(9)).await;
        if answer.status != StatusCode::OK || admitted > 2 * burst {
            break answer;
        }
        admitted += 1;
    };
    assert!(admitted >= burst, "refused after {admitted} of a burst of {burst}");
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "after {admitted} requests");
    assert!(answer.headers.get(header::RETRY_AFTER).is_some());
    let body = answer.json();
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("retry in")), "{body}");

    let other = test.send(request(Method::GET, "/opendata/alerts.geojson", None, None), peer(10)).await;
    assert_eq!(other.status, StatusCode::OK);
    let operator = test.send(request(Method::GET, "/opendata/alerts.geojson", Some(READ_TOKEN), None), peer(9)).await;
    assert_eq!(operator.status, StatusCode::OK);
    // Liveness probes are never limited.
    let health = test.send(request(Method::GET, "/healthz", None, None), peer(9)).await;
    assert_eq!(health.status, StatusCode::OK);
}
