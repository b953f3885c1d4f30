//! Zones: a zone's H3 cells for the map (`GET /api/v1/zones/{id}/cells`) and forecasts posted for it
//! (`POST /api/v1/zones/{id}/forecast`), which rules that take forecasts act on at once.

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{auth, AppError, Path};
use crate::app::App;
use crate::clock::now_ms;

/// Most hexagons sent for one zone; larger zones are sent compacted (coarser parents), which draws the same area.
const MAX_HEXES: usize = 4000;

/// The H3 cells of a zone as a GeoJSON MultiPolygon, for shading hazard areas on the map.
#[utoipa::path(get, path = "/api/v1/zones/{id}/cells", operation_id = "zone_cells", tag = "zones", security(("operator_token" = ["read"])),
    params(("id" = String, Path, description = "The zone's id (`config/zones.geojson`)")),
    responses((status = 200, body = super::openapi::MultiPolygon), (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody),
        (status = 404, description = "`not_found`: no such zone", body = super::openapi::ErrorBody)))]
pub async fn cells(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Read>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    let zone = app
        .geo
        .zone(&id)
        .ok_or_else(|| AppError::NotFound(format!("no zone `{}`", id.chars().take(80).collect::<String>())))?;
    let mut cells: Vec<geo_index::CellIndex> = zone.cells().cells().collect();
    if cells.len() > MAX_HEXES {
        // Compaction needs a duplicate-free set of one resolution, which a zone's cover is.
        if geo_index::CellIndex::compact(&mut cells).is_err() {
            cells.truncate(MAX_HEXES);
        }
    }
    let polygons: Vec<_> = cells
        .into_iter()
        .take(MAX_HEXES)
        .map(|cell| {
            let mut ring: Vec<[f64; 2]> = cell.boundary().iter().map(|ll| [ll.lng(), ll.lat()]).collect();
            if let Some(first) = ring.first().copied() {
                ring.push(first);
            }
            vec![ring]
        })
        .collect();
    Ok(Json(json!({ "type": "MultiPolygon", "coordinates": polygons })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Forecast {
    /// Forecast rainfall (mm) for the zone, compared with its debris-flow threshold (SWCB yellow).
    value: f64,
    /// When the forecast was issued (Unix ms); default now.
    ts: Option<i64>,
}

/// `POST /api/v1/zones/{id}/forecast` `{"value": 320}`: an operator (or an agency's feed) posts a forecast; rules that
/// take forecasts (debris-flow yellow) act on it at once.
#[utoipa::path(post, path = "/api/v1/zones/{id}/forecast", tag = "zones", security(("operator_token" = ["operate"])),
    params(("id" = String, Path, description = "The zone's id")),
    request_body = Forecast,
    responses((status = 200, description = "The alerts the forecast raised or changed at once", body = super::openapi::ForecastAnswer),
        (status = 400, description = "`bad_request`: not a forecast body, or a value out of range", body = super::openapi::ErrorBody),
        (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody),
        (status = 404, description = "`not_found`: no such zone", body = super::openapi::ErrorBody)))]
pub async fn post_forecast(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Operate>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, AppError> {
    let forecast: Forecast =
        serde_json::from_slice(&body).map_err(|e| AppError::BadRequest(format!("forecast: {e}")))?;
    let mut findings = Vec::new();
    app.alerts
        .engine
        .lock()
        .post_forecast(&id, forecast.value, forecast.ts.unwrap_or_else(now_ms), &mut findings)
        .map_err(|e| match e {
            alerting::engine::ForecastError::UnknownZone(_) => AppError::NotFound(e.to_string()),
            alerting::engine::ForecastError::BadValue(_) => AppError::BadRequest(e.to_string()),
        })?;
    let changed = app.apply_findings(findings);
    let ids: Vec<_> = changed.iter().map(|a| json!({"id": a.id, "version": a.version, "event": a.event})).collect();
    Ok(Json(json!({ "zone": id, "alerts": ids })))
}
