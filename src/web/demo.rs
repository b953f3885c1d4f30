//! The demo's receivers, `/demo/{receiver}`: stand-ins for an agency's webhook and the carriers' CBCs, so that the
//! demo (and its tests) show deliveries end to end. Not part of a production deployment's contract: mounted by `demo`
//! and by `serve` with `[deployment] drill = true` only (`WebSettings::deliver_to_self`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::{auth, AppError, Path};
use crate::app::App;

/// The demo's stand-ins for an agency's webhook receiver and the carriers' CBCs: they keep what arrives (newest 200)
/// so that the demo shows deliveries end to end. Not part of a production deployment's contract.
#[utoipa::path(post, path = "/demo/{receiver}", operation_id = "demo_receive", tag = "demo",
    params(("receiver" = String, Path, description = "Any name (`webhook`, `cbc/…`): kept with what arrived")),
    request_body(content = serde_json::Value, content_type = "application/json", description = "Whatever a delivery sends (webhook JSON, CAP XML, a CBC envelope): kept as text"),
    responses((status = 204, description = "Kept")))]
pub async fn receive(
    State(app): State<Arc<App>>,
    Path(receiver): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let signature = headers.get("x-dc-signature").and_then(|v| v.to_str().ok()).map(str::to_string);
    let text = String::from_utf8_lossy(&body);
    let mut got = app.partners.demo_received.lock();
    if got.len() >= 200 {
        got.remove(0);
    }
    got.push(json!({"receiver": receiver, "bytes": body.len(), "signature": signature, "body": text.chars().take(32 * 1024).collect::<String>()}));
    StatusCode::NO_CONTENT
}

/// `GET /demo/{receiver}` (`/demo/received`): what the stand-ins received, newest last.
#[utoipa::path(get, path = "/demo/{receiver}", operation_id = "demo_received", tag = "demo", security(("operator_token" = ["read"])),
    params(("receiver" = String, Path, description = "Any name; `received` by convention")),
    responses((status = 200, body = super::openapi::DemoReceived), (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody)))]
pub async fn received(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Read>,
) -> Result<impl IntoResponse, AppError> {
    Ok(Json(json!({ "received": *app.partners.demo_received.lock() })))
}
