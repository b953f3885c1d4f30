//! Sensors: the registry (`GET/POST /api/v1/sensors`, `PUT /api/v1/sensors/{id}`, `POST …/{id}/retire`), a sensor's
//! history from the readings store (`GET …/{id}/readings`) and the refused payloads (`GET /api/v1/dead-letters`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{auth, AppError, Path, Query};
use crate::app::App;
use crate::clock::now_ms;

/// `GET /api/v1/sensors`: the registry (retired sensors included, `retired: true`).
#[utoipa::path(get, path = "/api/v1/sensors", operation_id = "list_sensors", tag = "sensors", security(("operator_token" = ["read"])),
    responses((status = 200, body = super::openapi::SensorList), (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody)))]
pub async fn list(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Read>,
) -> Result<impl IntoResponse, AppError> {
    let sensors: Vec<_> = app.registry().read().iter().cloned().collect();
    Ok(Json(json!({ "sensors": sensors })))
}

/// `GET /api/v1/dead-letters`: refused device payloads, with reasons (newest kept, bounded).
#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "sensors", security(("operator_token" = ["read"])),
    responses((status = 200, body = super::openapi::DeadLetterList), (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody)))]
pub async fn dead_letters(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Read>,
) -> Result<impl IntoResponse, AppError> {
    Ok(Json(json!({ "dead_letters": app.ingest.dead_letters() })))
}

impl From<ingest::registry::RegistryError> for AppError {
    fn from(e: ingest::registry::RegistryError) -> Self {
        use ingest::registry::RegistryError as E;
        match e {
            E::Exists(_) => AppError::Conflict(e.to_string()),
            E::NotFound(_) => AppError::NotFound(e.to_string()),
            E::Invalid { .. } => AppError::BadRequest(e.to_string()),
            E::Persist(_) => {
                tracing::error!(error = %e, "sensor registry not saved");
                AppError::Internal("the registry could not be saved".into())
            }
        }
    }
}

/// A sensor as operators send it: the registry's own shape, every field checked (unknown fields refused).
fn sensor_body(body: &[u8]) -> Result<ingest::Sensor, AppError> {
    serde_json::from_slice(body).map_err(|e| AppError::BadRequest(format!("sensor: {e}")))
}

/// `POST /api/v1/sensors`: register a sensor (its device still needs a login: `disaster-cloud device provision`).
#[utoipa::path(post, path = "/api/v1/sensors", operation_id = "add_sensor", tag = "sensors", security(("operator_token" = ["admin"])),
    request_body = ingest::Sensor,
    responses((status = 201, description = "Registered and saved", body = super::openapi::SensorEnvelope),
        (status = 400, description = "`bad_request`: a field missing, unknown or out of range (named)", body = super::openapi::ErrorBody),
        (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody),
        (status = 409, description = "`conflict`: the id exists", body = super::openapi::ErrorBody),
        (status = 500, description = "`internal`: the registry could not be saved", body = super::openapi::ErrorBody)))]
pub async fn add(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Admin>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, AppError> {
    let sensor = sensor_body(&body)?;
    app.registry().write().add(sensor.clone())?;
    Ok((StatusCode::CREATED, Json(json!({ "sensor": sensor }))))
}

/// `PUT /api/v1/sensors/{id}`: the whole record again (the ids in path and body must agree).
#[utoipa::path(put, path = "/api/v1/sensors/{id}", operation_id = "update_sensor", tag = "sensors", security(("operator_token" = ["admin"])),
    params(("id" = String, Path, description = "The sensor's id")),
    request_body = ingest::Sensor,
    responses((status = 200, description = "Changed and saved", body = super::openapi::SensorEnvelope),
        (status = 400, description = "`bad_request`: a field missing, unknown or out of range, or the ids differ", body = super::openapi::ErrorBody),
        (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody),
        (status = 404, description = "`not_found`: no such sensor", body = super::openapi::ErrorBody),
        (status = 500, description = "`internal`: the registry could not be saved", body = super::openapi::ErrorBody)))]
pub async fn update(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Admin>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, AppError> {
    let sensor = sensor_body(&body)?;
    if sensor.id != id {
        return Err(AppError::BadRequest(format!("`id`: body says `{}`, path says `{}`", sensor.id, id)));
    }
    app.registry().write().update(sensor.clone())?;
    Ok(Json(json!({ "sensor": sensor })))
}

/// `POST /api/v1/sensors/{id}/retire`: its readings are refused from now on; its history stays.
#[utoipa::path(post, path = "/api/v1/sensors/{id}/retire", operation_id = "retire_sensor", tag = "sensors", security(("operator_token" = ["admin"])),
    params(("id" = String, Path, description = "The sensor's id")),
    responses((status = 200, body = super::openapi::Retired), (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody),
        (status = 404, description = "`not_found`: no such sensor", body = super::openapi::ErrorBody),
        (status = 500, description = "`internal`: the registry could not be saved", body = super::openapi::ErrorBody)))]
pub async fn retire(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Admin>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    app.registry().write().retire(&id)?;
    Ok(Json(json!({ "retired": id })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// A metric of the vocabulary (`rain_mm`, `water_level_m`, … docs/PAYLOADS.md).
    #[param(example = "rain_mm")]
    metric: String,
    /// Unix milliseconds or RFC 3339; default: 24 h before `to`.
    from: Option<String>,
    /// Unix milliseconds or RFC 3339; default: now.
    to: Option<String>,
    /// Bucket width (min/max/mean/sum per bucket): milliseconds (`3600000`) or a duration (`1h`, `15m`, `30s`,
    /// `1h30m`); absent: raw points.
    step: Option<String>,
}

/// The bucket width of a history query in milliseconds. A bare number is milliseconds (what the query always took);
/// anything else is a duration with units (humantime: `ms`, `s`, `m`, `h`, `d`, …, `1h30m`, `1h 30m`, `1.5h`). A
/// width must be a whole number of milliseconds, at least one: buckets are counted in whole milliseconds.
fn parse_step(text: &str) -> Result<i64, AppError> {
    let shown: String = text.chars().take(40).collect();
    let bad = |why: &str| {
        AppError::BadRequest(format!(
            "`step`: `{shown}` {why}; expected milliseconds (`900000`) or a duration such as `1h`, `15m`, `30s`"
        ))
    };
    let ms = match text.trim().parse::<i64>() {
        Ok(ms) => ms,
        Err(_) => {
            let d = humantime::parse_duration(text.trim()).map_err(|e| bad(&format!("is not a duration ({e})")))?;
            if d.subsec_nanos() % 1_000_000 != 0 {
                return Err(bad("is not a whole number of milliseconds"));
            }
            i64::try_from(d.as_millis()).map_err(|_| bad("is too long"))?
        }
    };
    if ms <= 0 {
        return Err(bad("must be positive"));
    }
    Ok(ms)
}

fn parse_instant(text: &str, field: &str) -> Result<i64, AppError> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| AppError::BadRequest(format!("`{field}`: expected Unix milliseconds or RFC 3339 with an offset")))
}

/// `GET /api/v1/sensors/{id}/readings?metric=&from=&to=&step=`: a sensor's history from the embedded store
/// (`docs/API.md` § History: formats, defaults, bucket alignment).
#[utoipa::path(get, path = "/api/v1/sensors/{id}/readings", operation_id = "sensor_history", tag = "sensors", security(("operator_token" = ["read"])),
    params(("id" = String, Path, description = "The sensor's id"), HistoryQuery),
    responses((status = 200, description = "Raw points (`points`) without `step`; buckets `[from + k·step, from + (k+1)·step)` with it (`step`, `buckets`), only those holding readings", body = store::History),
        (status = 400, description = "`bad_request`: a parameter missing or malformed (named), `from` not before `to`, or more than `store.max_points` points", body = super::openapi::ErrorBody),
        (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody),
        (status = 404, description = "`not_found`: no such sensor, or no readings store", body = super::openapi::ErrorBody),
        (status = 500, description = "`internal`: the store failed", body = super::openapi::ErrorBody)))]
pub async fn history(
    State(app): State<Arc<App>>,
    // Before the query: a caller without a token learns nothing from the query's validation, only 401.
    _operator: auth::Operator<auth::Read>,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<impl IntoResponse, AppError> {
    let metric = ingest::Metric::from_name(&q.metric).ok_or_else(|| {
        AppError::BadRequest(format!(
            "`metric`: `{}` is not in the vocabulary",
            q.metric.chars().take(40).collect::<String>()
        ))
    })?;
    if app.registry().read().get(&id).is_none() {
        return Err(AppError::NotFound(format!("no sensor `{}`", id.chars().take(40).collect::<String>())));
    }
    let to = q.to.as_deref().map(|t| parse_instant(t, "to")).transpose()?.unwrap_or_else(now_ms);
    // Saturating: `to` is the caller's number, and near i64::MIN a plain subtraction overflows (a panic in debug
    // builds, a wrapped range in release).
    let from =
        q.from.as_deref().map(|t| parse_instant(t, "from")).transpose()?.unwrap_or(to.saturating_sub(86_400_000));
    if from >= to {
        return Err(AppError::BadRequest("`from` must be before `to`".into()));
    }
    let step = q.step.as_deref().map(parse_step).transpose()?;
    let store =
        app.readings.store.clone().ok_or_else(|| AppError::NotFound("no readings store (no data dir)".into()))?;
    let history = tokio::task::spawn_blocking(move || store.history(&id, metric, from, to, step))
        .await
        .map_err(|_| AppError::Internal("history query failed".into()))?
        .map_err(|e| match e {
            store::StoreError::BadQuery(_) | store::StoreError::TooManyPoints { .. } => {
                AppError::BadRequest(e.to_string())
            }
            other => {
                tracing::error!(error = %other, "history query");
                AppError::Internal("history query failed".into())
            }
        })?;
    Ok(Json(history))
}
