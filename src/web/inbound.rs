//! Partner agencies pushing CAP to us: `POST /api/v1/cap/inbound` (the `inbound` crate; what follows is in
//! `external.rs`).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::AppError;
use crate::app::App;
use crate::clock::now_ms;
use crate::metrics::HTTP_REFUSED;

#[derive(Debug, Deserialize, Default)]
pub struct SourceQuery {
    source: Option<String>,
}

/// `POST /api/v1/cap/inbound`: a partner agency pushes one CAP 1.2 message, authenticated per source (bearer token or
/// HMAC signature, see `config/inbound.toml`).
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
