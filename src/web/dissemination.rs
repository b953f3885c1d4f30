//! Dissemination: the public CAP feed and messages (`GET /cap/feed.atom`, `GET /cap/{identifier}.xml`), and for
//! operators the webhook subscribers, their delivery logs and replays, and the cell broadcasts
//! (`/api/v1/subscribers…`, `GET /api/v1/broadcasts`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{auth, AppError, Path};
use crate::app::App;

pub(super) fn dissemination(app: &App) -> Result<&dissemination::Dissemination, AppError> {
    app.partners.dissemination.as_ref().ok_or_else(|| AppError::NotFound("dissemination is not configured".into()))
}

/// `GET /cap/feed.atom`: public, cacheable (ETag / If-None-Match).
#[utoipa::path(get, path = "/cap/feed.atom", tag = "dissemination",
    params(("If-None-Match" = Option<String>, Header, description = "The `ETag` of a copy the client holds")),
    responses((status = 200, description = "The Atom feed of our CAP messages (active and recently ended warnings)", content_type = "application/atom+xml", body = String),
        (status = 304, description = "Not modified"),
        (status = 404, description = "`not_found`: dissemination is not configured", body = super::openapi::ErrorBody),
        (status = 429, description = "Rate limited (per address)", body = super::openapi::ErrorBody)))]
pub async fn cap_feed(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, AppError> {
    let d = dissemination(&app)?;
    let etag = d.feed_etag();
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/atom+xml; charset=utf-8".to_string()),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, "public, max-age=30".to_string()),
        ],
        d.atom_feed(),
    )
        .into_response())
}

/// `GET /cap/{identifier}.xml`: one released CAP message (messages held by an approval gate are not public).
#[utoipa::path(get, path = "/cap/{file}", tag = "dissemination",
    params(("file" = String, Path, description = "`{identifier}.xml`, the CAP identifier of a released message (`W-….{version}`)"),
        ("If-None-Match" = Option<String>, Header, description = "The `ETag` of a copy the client holds")),
    responses((status = 200, description = "The CAP 1.2 message; it never changes", content_type = "application/cap+xml", body = String),
        (status = 304, description = "Not modified"),
        (status = 404, description = "`not_found`: no such released message (held ones too)", body = super::openapi::ErrorBody),
        (status = 429, description = "Rate limited (per address)", body = super::openapi::ErrorBody)))]
pub async fn cap_message(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(file): Path<String>,
) -> Result<Response, AppError> {
    let d = dissemination(&app)?;
    let id =
        file.strip_suffix(".xml").ok_or_else(|| AppError::NotFound("CAP messages are /cap/{identifier}.xml".into()))?;
    let xml = d
        .cap_xml(id)
        .ok_or_else(|| AppError::NotFound(format!("no CAP message `{}`", id.chars().take(80).collect::<String>())))?;
    // Messages never change once written: the identifier is a strong validator.
    let etag = format!("\"{}\"", id);
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/cap+xml; charset=utf-8".to_string()),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, "public, max-age=86400".to_string()),
        ],
        xml,
    )
        .into_response())
}

/// `GET /api/v1/subscribers`: webhook subscribers and their delivery counts (never their secrets).
#[utoipa::path(get, path = "/api/v1/subscribers", tag = "dissemination", security(("operator_token" = ["read"])),
    responses((status = 200, body = super::openapi::SubscriberList), (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody), (status = 404, description = "`not_found`: dissemination is not configured", body = super::openapi::ErrorBody)))]
pub async fn list_subscribers(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Read>,
) -> Result<impl IntoResponse, AppError> {
    Ok(Json(json!({ "subscribers": dissemination(&app)?.subscribers() })))
}

/// `POST /api/v1/subscribers`: a webhook subscriber (docs/PAYLOADS.md, "A webhook subscriber").
#[utoipa::path(post, path = "/api/v1/subscribers", tag = "dissemination", security(("operator_token" = ["admin"])),
    request_body = ::dissemination::SubscriberInput,
    responses((status = 201, description = "Added and journaled", body = super::openapi::SubscriberEnvelope),
        (status = 400, description = "`bad_request`: a field missing, unknown or invalid (named), an existing name, or this server itself as the target outside a drill", body = super::openapi::ErrorBody),
        (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody), (status = 404, description = "`not_found`: dissemination is not configured", body = super::openapi::ErrorBody)))]
pub async fn add_subscriber(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Admin>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, AppError> {
    let d = dissemination(&app)?;
    let text = std::str::from_utf8(&body).map_err(|_| AppError::BadRequest("body: not UTF-8".into()))?;
    let input = dissemination::SubscriberInput::from_json(text).map_err(|e| AppError::BadRequest(e.to_string()))?;
    // As `serve` refuses such targets in its config (src/deployment.rs): a delivery to ourselves would count as done
    // when nothing left the machine.
    if !app.web.deliver_to_self
        && crate::deployment::is_self_target(&app.web.public_url, app.web.http_listen, &input.url)
    {
        return Err(AppError::BadRequest(format!(
            "url `{}` is this server itself; only a drill environment (`[deployment] drill = true`) delivers to itself",
            input.url
        )));
    }
    let status = d.add_subscriber(input).map_err(|e| AppError::BadRequest(e.to_string()))?;
    Ok((StatusCode::CREATED, Json(json!({ "subscriber": status }))))
}

/// `GET /api/v1/subscribers/{name}/deliveries`: a subscriber's (or `cbc:{carrier}`'s) deliveries, newest first.
#[utoipa::path(get, path = "/api/v1/subscribers/{name}/deliveries", tag = "dissemination", security(("operator_token" = ["read"])),
    params(("name" = String, Path, description = "A subscriber's name, or `cbc:{carrier}`")),
    responses((status = 200, description = "Pending, dead letters and the latest finished ones (empty for an unknown name)", body = super::openapi::DeliveryList),
        (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody), (status = 404, description = "`not_found`: dissemination is not configured", body = super::openapi::ErrorBody)))]
pub async fn subscriber_log(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Read>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    Ok(Json(json!({ "deliveries": dissemination(&app)?.delivery_log(&name) })))
}

/// `POST /api/v1/subscribers/{name}/deliveries/{id}/replay`: queue a dead letter again.
#[utoipa::path(post, path = "/api/v1/subscribers/{name}/deliveries/{id}/replay", tag = "dissemination", security(("operator_token" = ["operate"])),
    params(("name" = String, Path, description = "A subscriber's name, or `cbc:{carrier}`"),
        ("id" = u64, Path, description = "The dead letter's delivery id")),
    responses((status = 200, description = "Queued again as a new delivery", body = super::openapi::Replayed),
        (status = 400, description = "`bad_request`: the id is not a number", body = super::openapi::ErrorBody),
        (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody),
        (status = 404, description = "`not_found`: no such subscriber or carrier, or no such delivery of it; or dissemination is not configured", body = super::openapi::ErrorBody),
        (status = 409, description = "`conflict`: the delivery is not a dead letter", body = super::openapi::ErrorBody)))]
pub async fn replay_delivery(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Operate>,
    Path((name, id)): Path<(String, u64)>,
) -> Result<impl IntoResponse, AppError> {
    use dissemination::ReplayError as E;
    // What does not exist is 404 and a delivery in the wrong state 409, as for alerts and clusters.
    let queued = dissemination(&app)?.replay(&name, id).map_err(|e| match e {
        E::UnknownTarget(_) | E::UnknownDelivery { .. } => AppError::NotFound(e.to_string()),
        E::NotDeadLetter { .. } => AppError::Conflict(e.to_string()),
    })?;
    Ok(Json(json!({ "replayed": queued })))
}

#[utoipa::path(get, path = "/api/v1/broadcasts", tag = "dissemination", security(("operator_token" = ["read"])),
    responses((status = 200, body = super::openapi::BroadcastsAnswer), (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody), (status = 404, description = "`not_found`: dissemination is not configured", body = super::openapi::ErrorBody)))]
/// `GET /api/v1/broadcasts`: what is on the air now per carrier (the on-air ledger: written and not seen stopped),
/// the recently stopped ones, and every broadcast planned for the alerts in memory (newest first).
pub async fn list_broadcasts(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Read>,
) -> Result<impl IntoResponse, AppError> {
    let d = dissemination(&app)?;
    let on_air = d.on_air();
    Ok(Json(json!({ "on_air": on_air.carriers, "history": on_air.history, "broadcasts": d.broadcasts() })))
}

#[utoipa::path(post, path = "/api/v1/broadcasts/{alert_id}/rebroadcast", tag = "dissemination", security(("operator_token" = ["operate"])),
    params(("alert_id" = String, Path, description = "A public warning's id (`W-…`) or the id of an alert behind one")),
    responses((status = 200, description = "The broadcasts planned (a new serial per carrier)", body = super::openapi::Rebroadcast),
        (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody),
        (status = 404, description = "`not_found`: no such alert in dissemination", body = super::openapi::ErrorBody),
        (status = 409, description = "`conflict`: ended or held, no PWS class, cell broadcast off, or asked less than a minute ago", body = super::openapi::ErrorBody)))]
/// `POST /api/v1/broadcasts/{alert_id}/rebroadcast`: an operator asks for the alert (a public warning's id, or the id
/// of an alert behind one) on the air again, with a new
/// serial number that phones show again (calm updates never re-alert on their own for a value change or a fall).
pub async fn rebroadcast(
    State(app): State<Arc<App>>,
    operator: auth::Operator<auth::Operate>,
    Path(alert_id): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    use dissemination::RebroadcastError as E;
    // Dissemination knows public warnings (`W-…`); an operator may name the warning or any alert behind it.
    let warning = app.alerts.publication.lock().warning_of(&alert_id).map(str::to_string);
    let planned = dissemination(&app)?.rebroadcast(warning.as_deref().unwrap_or(&alert_id)).map_err(|e| match e {
        E::UnknownAlert(_) => AppError::NotFound(e.to_string()),
        E::NotActive(_) | E::NoClass(_) | E::Disabled | E::TooSoon { .. } => AppError::Conflict(e.to_string()),
    })?;
    tracing::info!(alert = %alert_id, operator = %operator.name, broadcasts = planned.len(), "operator rebroadcast");
    Ok(Json(json!({ "broadcasts": planned })))
}
