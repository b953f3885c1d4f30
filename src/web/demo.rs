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

/// The demo's stand-in for an agency's vehicle-detector feed (`GET /demo/vd/VDLive.json`), polled by the demo's
/// `[[vd_feed]] demo-nfb` (`config/inbound.toml`): the NFB-shaped sample of `inbound/src/vd/fixtures/`, its
/// collection times moved to the last whole minute, so the demo's detector VD0301 reads like a live freeway. Each
/// minute is one version (its ETag); a poll within the same minute gets 304, as from a real feed.
#[utoipa::path(get, path = "/demo/vd/VDLive.json", operation_id = "demo_vd_live", tag = "demo",
    responses((status = 200, description = "The MOTC VDLive sample, times at the last whole minute", content_type = "application/json", body = serde_json::Value),
        (status = 304, description = "Not modified since the `If-None-Match` ETag (one per minute)")))]
pub async fn vd_live(headers: HeaderMap) -> axum::response::Response {
    use axum::http::header;
    let collected_ms = crate::clock::now_ms().div_euclid(60_000) * 60_000 - 60_000;
    let etag = format!("\"vd-{collected_ms}\"");
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    match demo_vd_document(collected_ms) {
        Some(body) => {
            ([(header::CONTENT_TYPE, "application/json".to_string()), (header::ETAG, etag)], body).into_response()
        }
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The sample with every time at `collected_ms` (the platform's own times a minute later), in Taiwan time.
fn demo_vd_document(collected_ms: i64) -> Option<String> {
    const SAMPLE: &str = include_str!("../../inbound/src/vd/fixtures/nfb_vdlive.json");
    let taiwan = |ms: i64| {
        let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).ok()?;
        t.to_offset(time::macros::offset!(+8)).format(&time::format_description::well_known::Rfc3339).ok()
    };
    let mut doc: serde_json::Value = serde_json::from_str(SAMPLE).ok()?;
    let collected = taiwan(collected_ms)?;
    let updated = taiwan(collected_ms + 60_000)?;
    doc["UpdateTime"] = json!(updated);
    doc["SrcUpdateTime"] = json!(updated);
    for live in doc["VDLives"].as_array_mut()? {
        live["DataCollectTime"] = json!(collected);
    }
    serde_json::to_string(&doc).ok()
}
