//! Alerts, for operators: `GET /api/v1/alerts` (the book's alerts and, on a fan-out node, the cluster's),
//! `POST /api/v1/alerts/{id}/{ack|approve|cancel}` and `POST /api/v1/alerts/{id}/comment`. [`alert_command`] is
//! shared with the operator socket's commands.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{auth, AppError, Path};
use crate::app::App;
use crate::clock::now_ms;

/// `GET /api/v1/alerts`: every alert the book holds (active and recently ended).
#[utoipa::path(get, path = "/api/v1/alerts", operation_id = "list_alerts", tag = "alerts", security(("operator_token" = ["read"])),
    responses((status = 200, body = super::openapi::AlertList),
        (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody)))]
pub async fn list(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Read>,
) -> Result<impl IntoResponse, AppError> {
    let mut alerts: Vec<_> = app.alerts.book.lock().all().map(|a| json!(app.alert_message(a))).collect();
    alerts.extend(app.remote_alerts.all_operator());
    Ok(Json(json!({ "alerts": alerts })))
}

/// `POST /api/v1/alerts/{id}/{action}`: acknowledge, approve (release past the approval gate) or cancel an alert.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/{action}", operation_id = "alert_action", tag = "alerts", security(("operator_token" = ["operate"])),
    params(("id" = String, Path, description = "The alert's id (`TW-DC-…`)"),
        ("action" = String, Path, description = "`ack`, `approve` or `cancel`", pattern = "^(ack|approve|cancel)$")),
    responses((status = 200, description = "The alert as it now stands", body = alerting::message::AlertMessage),
        (status = 400, description = "`bad_request`: an unknown action", body = super::openapi::ErrorBody),
        (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody),
        (status = 404, description = "`not_found`: no such alert", body = super::openapi::ErrorBody),
        (status = 409, description = "`conflict`: ended, or nothing to approve", body = super::openapi::ErrorBody),
        (status = 500, description = "`internal`: the alert journal could not be written", body = super::openapi::ErrorBody)))]
pub async fn action(
    State(app): State<Arc<App>>,
    operator: auth::Operator<auth::Operate>,
    Path((id, action)): Path<(String, String)>,
) -> Result<impl IntoResponse, AppError> {
    Ok(Json(alert_command(&app, &id, &action, None, &operator.name)?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    /// The note: plain text, journaled with the token's name.
    text: String,
}

/// `POST /api/v1/alerts/{id}/comment` with `{"text": "…"}`: a note in the alert's journal, seen by every operator.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/comment", operation_id = "comment_alert", tag = "alerts", security(("operator_token" = ["operate"])),
    params(("id" = String, Path, description = "The alert's id")),
    request_body = CommentBody,
    responses((status = 200, description = "The alert with the comment", body = alerting::message::AlertMessage),
        (status = 400, description = "`bad_request`: not a comment body, or an empty or too long text", body = super::openapi::ErrorBody),
        (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody),
        (status = 404, description = "`not_found`: no such alert", body = super::openapi::ErrorBody),
        (status = 409, body = super::openapi::ErrorBody),
        (status = 500, description = "`internal`: the alert journal could not be written", body = super::openapi::ErrorBody)))]
pub async fn comment(
    State(app): State<Arc<App>>,
    operator: auth::Operator<auth::Operate>,
    Path(id): Path<String>,
    body: Result<Json<CommentBody>, JsonRejection>,
) -> Result<impl IntoResponse, AppError> {
    let Json(body) = body.map_err(|e| AppError::BadRequest(format!("comment body: {}", e.body_text())))?;
    Ok(Json(alert_command(&app, &id, "comment", Some(&body.text), &operator.name)?))
}

/// An operator's lifecycle command, shared by the HTTP API and the operator socket. `actor` is the operator token's
/// name: the alert journal records it as who acknowledged, approved, cancelled or commented.
pub fn alert_command(
    app: &App,
    id: &str,
    action: &str,
    text: Option<&str>,
    actor: &str,
) -> Result<serde_json::Value, AppError> {
    use alerting::alert::BookError;
    let short = |s: &str, n: usize| s.chars().take(n).collect::<String>();
    let result = {
        let mut book = app.alerts.book.lock();
        match action {
            "ack" => book.acknowledge_by(id, actor, now_ms()),
            "cancel" => book.cancel_by(id, actor, text, now_ms()),
            "comment" => book.comment(id, actor, text.unwrap_or_default(), now_ms()),
            "approve" => book.approve(id, actor, now_ms()),
            other => {
                return Err(AppError::BadRequest(format!(
                    "unknown action `{}`: use ack, comment, approve or cancel",
                    short(other, 40)
                )))
            }
        }
    };
    let alert = result.map_err(|e| match e {
        BookError::NotFound(_) => AppError::NotFound(format!("no alert `{}`", short(id, 80))),
        BookError::NotActive(_)
        | BookError::NothingToApprove(_)
        | BookError::HazardActive(_)
        | BookError::TooManyReports(_) => AppError::Conflict(e.to_string()),
        BookError::BadComment(_) => AppError::BadRequest(e.to_string()),
        BookError::Journal(_) => {
            tracing::error!(error = %e, "alert journal");
            AppError::Internal("the alert journal could not be written".into())
        }
    })?;
    app.publish(&alert);
    Ok(serde_json::to_value(app.alert_message(&alert)).unwrap_or_default())
}
