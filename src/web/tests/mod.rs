//! The HTTP edge without sockets: the binary's [`router`](super::router) driven with `tower::ServiceExt::oneshot`
//! on an [`App`] built as `demo` builds it (embedded config, temp data dir) but with no listener bound and no task
//! spawned (`server::build`).
//!
//! Here rather than in `tests/`: the scope table is held against [`routes`](super::routes), the router's own list,
//! which stays crate-private; and these tests need no binary, no ports and no waiting, so they run with
//! `cargo test --lib` beside the e2e tests in `tests/` that drive the real server.
//!
//! - `scopes.rs`: every route × no token, `read`, `operate`, `admin` against the scope table, and the check that
//!   the table covers every route and method the router serves.
//! - `openapi.rs`: the OpenAPI document against the router (every mounted method and path documented, scopes as
//!   enforced, every error code), and the regressions Schemathesis found.
//! - `errors.rs`: each [`AppError`](super::AppError) variant's status and JSON body, and the other refusals (409 from
//!   the alert book, 413, 415, 429).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use crate::app::App;
use crate::config::ConfigFiles;
use crate::web::auth::{self, Scope, TokenEntry, TokenSet};

mod errors;
mod history;
mod openapi;
mod pages;
mod scopes;

/// The operator tokens of the test app, one per scope.
pub const READ_TOKEN: &str = "test-read-token";
pub const OPERATE_TOKEN: &str = "test-operate-token";
pub const ADMIN_TOKEN: &str = "test-admin-token";
/// The embedded inbound config's demo partner (`config/inbound.toml`, `[[push]] demo-agency`).
pub const PARTNER_TOKEN: &str = "demo-inbound-token";

/// The token a request carries, by scope (`None`: none).
pub fn token_of(scope: Option<Scope>) -> Option<&'static str> {
    scope.map(|s| match s {
        Scope::Read => READ_TOKEN,
        Scope::Operate => OPERATE_TOKEN,
        Scope::Admin => ADMIN_TOKEN,
    })
}

/// An app as `demo` builds it, in its own temp data dir (removed on drop).
pub struct TestApp {
    pub app: Arc<App>,
    pub data_dir: tempfile::TempDir,
}

impl TestApp {
    pub fn new() -> Self {
        let mut files = ConfigFiles::embedded().expect("embedded config");
        // Webhooks and cell broadcasts go to the demo receivers under `public_url`: somewhere nothing listens (port 1
        // is privileged), never a port another test's server may hold.
        files.main.http.public_url = "http://127.0.0.1:1".into();
        let entry = |name: &str, scope, token: &str| TokenEntry {
            name: name.into(),
            scope,
            sha256: auth::hex(&auth::digest(token)),
        };
        let tokens = TokenSet::new(
            &[
                entry("reader", Scope::Read, READ_TOKEN),
                entry("operator", Scope::Operate, OPERATE_TOKEN),
                entry("admin", Scope::Admin, ADMIN_TOKEN),
            ],
            None,
        )
        .expect("token set");
        let data_dir = tempfile::tempdir().expect("temp dir");
        let built = crate::server::build(&files, tokens, Some(data_dir.path()), files.main.http.listen)
            .expect("app builds from the demo config");
        TestApp { app: built.app, data_dir }
    }

    /// One request through a fresh router (what a connection gets), from `peer`, as `serve` passes peer addresses.
    pub async fn send(&self, request: Request<Body>, peer: SocketAddr) -> Answer {
        let mut request = request;
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = super::router(Arc::clone(&self.app)).oneshot(request).await.expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
        Answer { status, headers, body: bytes.to_vec() }
    }

    /// `method uri` with `token` as a bearer token and `body` as JSON, from 192.0.2.1.
    pub async fn call(&self, method: Method, uri: &str, token: Option<&str>, body: Option<&str>) -> Answer {
        self.send(request(method, uri, token, body), peer(1)).await
    }
}

/// A test peer address (TEST-NET-1).
pub fn peer(n: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, n], 40000))
}

pub fn request(method: Method, uri: &str, token: Option<&str>, body: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    // Websocket routes get a well-formed upgrade, so that what they answer is about the token, not the headers.
    if uri.starts_with("/ws/") {
        builder = builder
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==");
    }
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("request"),
        None => builder.body(Body::empty()).expect("request"),
    }
}

/// A response, read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The refusal body every `AppError` has: exactly `{"error": reason, "message": text}`.
    pub fn refusal(&self, status: StatusCode, reason: &str) -> String {
        assert_eq!(self.status, status, "{}", String::from_utf8_lossy(&self.body));
        let body = self.json();
        let object = body.as_object().expect("an object");
        assert_eq!(object.len(), 2, "only error and message: {body}");
        assert_eq!(body["error"], reason, "{body}");
        let message = body["message"].as_str().expect("message is text").to_string();
        assert!(!message.is_empty());
        message
    }
}
