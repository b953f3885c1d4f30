//! Web Push for citizens (the channel itself: `dissemination::channel::push`): the VAPID public key, subscribe and
//! unsubscribe, and the installable app's files — the service worker that shows alerts while the app is closed, the
//! push opt-in script `/app` loads, the web app manifest and its icon.
//!
//! Anonymous like `/ws/citizen`. A subscribe body is bounded ([`MAX_BODY_BYTES`]) and checked field by field by the
//! channel; every refusal is a JSON error naming the problem and a `dc_push_refused_total{reason}` count.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dissemination::channel::push::{PushChannel, Refusal, SubscribeInput};
use serde::Deserialize;
use serde_json::json;

use super::reports::PeerAddr;
use super::AppError;
use crate::app::App;

pub use dissemination::channel::push::subscription::MAX_BODY_BYTES;

fn channel(app: &App) -> Result<&PushChannel, AppError> {
    app.partners
        .dissemination
        .as_ref()
        .and_then(|d| d.push())
        .ok_or_else(|| AppError::NotFound("web push is not enabled on this server".into()))
}

/// A refused subscribe or unsubscribe: the status, the reason (also the counter's label) and the message.
fn refused(r: &Refusal) -> Response {
    let status = match r {
        Refusal::Disabled => StatusCode::NOT_FOUND,
        Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Refusal::ClientLimit(_) | Refusal::AddressLimit(_) => StatusCode::TOO_MANY_REQUESTS,
        Refusal::TotalLimit(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    (status, Json(json!({ "error": r.reason(), "message": r.to_string() }))).into_response()
}

/// Reads at most [`MAX_BODY_BYTES`] and parses it; refusals counted like the channel's own.
async fn read_json<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, Refusal> {
    let bytes =
        axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| count(Refusal::TooLarge(MAX_BODY_BYTES)))?;
    serde_json::from_slice(&bytes).map_err(|e| count(Refusal::Malformed(format!("body: {e}"))))
}

fn count(r: Refusal) -> Refusal {
    dissemination::channel::push::metrics::METRICS.refused.with_label_values(&[r.reason()]).inc();
    r
}

/// `GET /api/v1/push/key`: the VAPID public key the app subscribes with (`applicationServerKey`).
#[utoipa::path(get, path = "/api/v1/push/key", operation_id = "push_key", tag = "push",
    responses((status = 200, body = super::openapi::PushKey),
        (status = 404, description = "`not_found`: web push is off", body = super::openapi::ErrorBody), (status = 429, description = "Rate limited (per address)", body = super::openapi::ErrorBody)))]
pub async fn key(State(app): State<Arc<App>>) -> Result<Response, AppError> {
    let push = channel(&app)?;
    Ok(([(header::CACHE_CONTROL, "no-cache")], Json(json!({ "public_key": push.public_key() }))).into_response())
}

/// `POST /api/v1/push/subscriptions`: `PushSubscription.toJSON()` plus `places`, `lang` and the app's `client_id`.
#[utoipa::path(post, path = "/api/v1/push/subscriptions", operation_id = "push_subscribe", tag = "push",
    request_body = dissemination::channel::push::SubscribeInput,
    responses((status = 201, description = "Subscribed (again: the same endpoint replaces its entry)", body = dissemination::channel::push::SubscriptionStatus),
        (status = 400, description = "`malformed`, `bad_endpoint`, `bad_key`, `bad_auth`, `bad_place`, `bad_client_id`", body = super::openapi::Refusal),
        (status = 404, description = "`disabled`: web push is off", body = super::openapi::Refusal),
        (status = 413, description = "`too_large`: over 4 KiB", body = super::openapi::Refusal),
        (status = 429, description = "`client_limit`, `address_limit`; or the public rate limit (`rate_limited`)", body = super::openapi::Refusal),
        (status = 503, description = "`total_limit`: the server holds as many subscriptions as it may", body = super::openapi::Refusal)))]
pub async fn subscribe(State(app): State<Arc<App>>, PeerAddr(peer): PeerAddr, body: Body) -> Response {
    let push = match channel(&app) {
        Ok(p) => p,
        Err(_) => return refused(&count(Refusal::Disabled)),
    };
    let input: SubscribeInput = match read_json(body).await {
        Ok(i) => i,
        Err(r) => return refused(&r),
    };
    match push.subscribe(&input, peer.map(|p| p.ip())) {
        Ok(status) => (StatusCode::CREATED, Json(status)).into_response(),
        Err(r) => {
            tracing::debug!(reason = r.reason(), message = %r, "push subscription refused");
            refused(&r)
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Unsubscribe {
    /// The subscription's endpoint, as subscribed.
    endpoint: String,
}

/// `DELETE /api/v1/push/subscriptions` with `{"endpoint": …}`: the citizen turns push off. The endpoint is the
/// capability (only the browser and its push service know it).
#[utoipa::path(delete, path = "/api/v1/push/subscriptions", operation_id = "push_unsubscribe", tag = "push",
    request_body = Unsubscribe,
    responses((status = 204, description = "Unsubscribed"),
        (status = 400, description = "`malformed`", body = super::openapi::Refusal),
        (status = 404, description = "`not_found`: no subscription with that endpoint; `disabled`: web push is off", body = super::openapi::Refusal),
        (status = 413, description = "`too_large`", body = super::openapi::Refusal),
        (status = 429, description = "Rate limited (per address)", body = super::openapi::Refusal)))]
pub async fn unsubscribe(State(app): State<Arc<App>>, body: Body) -> Response {
    let push = match channel(&app) {
        Ok(p) => p,
        Err(_) => return refused(&count(Refusal::Disabled)),
    };
    let input: Unsubscribe = match read_json(body).await {
        Ok(i) => i,
        Err(r) => return refused(&r),
    };
    if push.unsubscribe(&input.endpoint) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        AppError::NotFound("no subscription with that endpoint".into()).into_response()
    }
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    // `no-cache`: browsers check for a new service worker on every load anyway; the others are small.
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// `GET /sw.js`: the service worker (at the root, so its scope covers `/app`).
#[utoipa::path(get, path = "/sw.js", tag = "push",
    responses((status = 200, description = "The service worker", content_type = "text/javascript", body = String)))]
pub async fn service_worker() -> Response {
    static_file("text/javascript; charset=utf-8", include_str!("../../web/sw.js"))
}

/// `GET /manifest.webmanifest`: makes `/app` installable.
#[utoipa::path(get, path = "/manifest.webmanifest", operation_id = "app_manifest", tag = "push",
    responses((status = 200, description = "The web app manifest", content_type = "application/manifest+json", body = serde_json::Value)))]
pub async fn manifest() -> Response {
    static_file("application/manifest+json", include_str!("../../web/manifest.webmanifest"))
}

/// `GET /icon.svg`: the app's icon (manifest, notifications).
#[utoipa::path(get, path = "/icon.svg", operation_id = "app_icon", tag = "push",
    responses((status = 200, description = "The icon", content_type = "image/svg+xml", body = String)))]
pub async fn icon() -> Response {
    static_file("image/svg+xml", include_str!("../../web/icon.svg"))
}
