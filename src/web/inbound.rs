//! Partner agencies pushing CAP to us: `POST /api/v1/cap/inbound` (the `inbound` crate; what follows is in
//! `external.rs`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{AppError, Query};
use crate::app::App;
use crate::clock::now_ms;
use crate::metrics::HTTP_REFUSED;

#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SourceQuery {
    /// The push source (`[[push]] name`); optional when the credentials say who is pushing.
    source: Option<String>,
}

/// `POST /api/v1/cap/inbound`: a partner agency pushes one CAP 1.2 message, authenticated per source (bearer token or
/// HMAC signature, see `config/inbound.toml`).
#[utoipa::path(post, path = "/api/v1/cap/inbound", tag = "inbound",
    security(("partner_token" = []), ("partner_hmac" = [])),
    params(SourceQuery),
    request_body(content = String, content_type = "application/cap+xml", description = "One CAP 1.2 `<alert>`"),
    responses((status = 200, description = "Taken: what it did (`outcome`: raised, updated, cancelled, ignored with `why`)", body = inbound::PushOutcome),
        (status = 400, description = "`invalid_xml`", body = super::openapi::Refusal),
        (status = 401, description = "`unknown_source`, `unsigned`, `bad_token`, `bad_signature`, `stale_signature`", body = super::openapi::Refusal),
        (status = 403, description = "`sender_not_allowed`, `foreign_reference`, `foreign_source`: the source may not say this", body = super::openapi::Refusal),
        (status = 404, description = "`not_found`: no push sources are configured", body = super::openapi::ErrorBody),
        (status = 413, description = "`too_large`", body = super::openapi::Refusal),
        (status = 422, description = "`invalid_cap`, `unknown_geocode`, `no_area`: valid XML, not a CAP message we can place", body = super::openapi::Refusal),
        (status = 503, description = "`capacity`: the book is full; retry later", body = super::openapi::Refusal)))]
pub async fn push_cap(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<SourceQuery>,
    body: axum::body::Bytes,
) -> Response {
    let Some(inbound) = &app.partners.inbound else {
        return AppError::NotFound("no inbound CAP sources are configured".into()).into_response();
    };
    match inbound.push(query.source.as_deref(), &headers, &body, now_ms()) {
        Ok(outcome) => (StatusCode::OK, Json(serde_json::to_value(&outcome).unwrap_or_default())).into_response(),
        Err(e) => {
            HTTP_REFUSED.with_label_values(&["inbound_cap"]).inc();
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            (status, Json(json!({ "error": e.reason(), "message": e.to_string() }))).into_response()
        }
    }
}
