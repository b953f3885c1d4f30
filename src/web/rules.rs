//! `POST /api/v1/rules/reload` (admin scope): re-read the rules file and swap it in, keeping windows and levels.
//!
//! 200 with what changed (`rules_admin::ReloadSummary`); 400 `invalid_rules` with the loader's message naming the file,
//! the rule and the field (and `rule` on its own), the running rules untouched; 500 `rules_unreadable` when the file
//! cannot be read at all.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{auth, AppError};
use crate::app::App;
use crate::metrics::HTTP_REFUSED;
use crate::rules_admin::ReloadError;

#[utoipa::path(post, path = "/api/v1/rules/reload", operation_id = "reload_rules", tag = "rules", security(("operator_token" = ["admin"])),
    responses((status = 200, description = "What changed", body = crate::rules_admin::ReloadSummary),
        (status = 400, description = "`invalid_rules`: the loader's message names the file, the rule (also in `rule`) and the field; the running rules are untouched", body = super::openapi::Refusal),
        (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody),
        (status = 500, description = "`rules_unreadable`: the file cannot be read; `internal`: the reload did not finish", body = super::openapi::Refusal)))]
pub async fn reload(State(app): State<Arc<App>>, _operator: auth::Operator<auth::Admin>) -> Response {
    // File I/O and the engine lock: off the async workers.
    let outcome = tokio::task::spawn_blocking(move || app.reload_rules("api")).await;
    match outcome {
        Ok(Ok(summary)) => (StatusCode::OK, Json(summary)).into_response(),
        Ok(Err(e)) => {
            let (status, reason) = match &e {
                ReloadError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_rules"),
                ReloadError::Read { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "rules_unreadable"),
            };
            HTTP_REFUSED.with_label_values(&[reason]).inc();
            (status, Json(json!({ "error": reason, "message": e.to_string(), "rule": e.rule() }))).into_response()
        }
        Err(_) => AppError::Internal("the reload did not finish".into()).into_response(),
    }
}
