//! What the cell broadcasts reached, for the operators' map: each carrier's cells an alert was written to, with
//! their footprints and whether they still broadcast (`GET /api/v1/carriers/{carrier}/cells`), and the Warning Area
//! Coordinates a geofence-capable phone checks its position against (`GET /api/v1/broadcasts/{alert_id}/warning-area`).
//!
//! The cells come from the on-air ledger (what was written and not seen stopped, and the recent stops), their
//! positions and footprints from the carriers' cell sites in geo-index (`config/cell_sites.csv`): the same sites the
//! targeting picked them from. A cell the ledger names and the sites no longer hold (a restart with a new sites file)
//! is listed by name under `unknown`, never dropped silently.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::dissemination::dissemination;
use super::{auth, AppError};
use crate::app::App;

/// Most footprints in one answer (a sector is ~25 vertices, ~700 bytes of JSON): a county-wide broadcast fits, and a
/// map asking for more gets the cells still on the air first and `truncated`.
const MAX_CELLS: usize = 2000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellsQuery {
    /// A public warning (`W-…`) or an alert behind one; absent: everything on the carrier's air now.
    alert: Option<String>,
}

/// Dissemination and the air know public warnings; an operator may name the warning or any alert behind it.
fn warning_id(app: &App, id: &str) -> String {
    app.alerts.publication.lock().warning_of(id).map_or_else(|| id.to_string(), str::to_string)
}

fn short(text: &str) -> String {
    text.chars().take(80).collect()
}

/// Rank of a ledger state for a cell written by several entries: what still broadcasts wins.
fn rank(state: dissemination::AirState) -> u8 {
    use dissemination::AirState as S;
    match state {
        S::OnAir => 0,
        S::Writing => 1,
        S::Stopping => 2,
        S::Stopped => 3,
    }
}

/// A cell's printed name (`466-92-2560257`, geo-index's `Ecgi` display) back to its identity.
fn parse_ecgi(name: &str) -> Option<geo_index::Ecgi> {
    let mut parts = name.splitn(3, '-');
    let (mcc, mnc, eci) = (parts.next()?, parts.next()?, parts.next()?);
    Some(geo_index::Ecgi {
        mcc: mcc.parse().ok()?,
        mnc: mnc.parse().ok()?,
        mnc_digits: u8::try_from(mnc.len()).ok().filter(|d| (2..=3).contains(d))?,
        eci: eci.parse().ok()?,
    })
}

/// Six decimals: 0.1 m, finer than any footprint is known.
fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// `GET /api/v1/carriers/{carrier}/cells[?alert=]`: a GeoJSON FeatureCollection of the cells the alert's broadcasts
/// were written to on this carrier (on the air, being stopped, or stopped), or without `alert` every cell on the
/// carrier's air now. Each feature is a cell's footprint with its state, serial and message identifiers.
#[utoipa::path(get, path = "/api/v1/carriers/{carrier}/cells", tag = "dissemination", security(("operator_token" = ["read"])),
    params(("carrier" = String, Path, description = "A carrier's name as configured (`[[cbc.carriers]]`)"),
        ("alert" = Option<String>, Query, description = "A public warning (`W-…`) or an alert behind one; absent: everything on the carrier's air now")),
    responses((status = 200, description = "GeoJSON FeatureCollection of cell footprints (at most 2,000, on the air first)", body = serde_json::Value),
        (status = 400, description = "`bad_request`: an unknown query parameter", body = super::openapi::ErrorBody),
        (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody),
        (status = 404, description = "`not_found`: no such carrier, or dissemination is not configured", body = super::openapi::ErrorBody)))]
pub async fn carrier_cells(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Read>,
    Path(carrier): Path<String>,
    query: Result<Query<CellsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, AppError> {
    let Query(q) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let air = dissemination(&app)?.on_air();
    let Some(live) = air.carriers.get(&carrier) else {
        let known: Vec<&str> = air.carriers.keys().map(String::as_str).collect();
        return Err(AppError::NotFound(format!("no carrier `{}` (carriers: {})", short(&carrier), known.join(", "))));
    };
    let alert = q.alert.as_deref().map(|id| warning_id(&app, id));
    let wanted = |e: &&dissemination::AirEntry| alert.as_deref().is_none_or(|a| e.alert_id == a);
    // With an alert, its stopped broadcasts too (newest first): the map shows where it was and where it still is.
    let stopped = air.history.iter().filter(|e| alert.is_some() && e.carrier == carrier);
    let mut cells: BTreeMap<&str, &dissemination::AirEntry> = BTreeMap::new();
    for entry in live.iter().filter(wanted).chain(stopped.filter(wanted)) {
        for cell in &entry.cells {
            let better = cells
                .get(cell.as_str())
                .is_none_or(|known| (rank(entry.state), -entry.queued_ms) < (rank(known.state), -known.queued_ms));
            if better {
                cells.insert(cell, entry);
            }
        }
    }
    let mut ordered: Vec<(&str, &dissemination::AirEntry)> = cells.into_iter().collect();
    ordered.sort_by_key(|(cell, e)| (rank(e.state), *cell));
    let total = ordered.len();
    let (mut unknown, mut features, mut truncated) = (Vec::new(), Vec::new(), false);
    for (cell, entry) in ordered {
        let Some(site) = parse_ecgi(cell).and_then(|ecgi| app.geo.cell_site(&ecgi)) else {
            unknown.push(cell.to_string());
            continue;
        };
        if features.len() == MAX_CELLS {
            truncated = true;
            break;
        }
        let ring: Vec<[f64; 2]> = site.footprint.exterior().0.iter().map(|c| [round(c.x), round(c.y)]).collect();
        features.push(json!({
            "type": "Feature",
            "id": cell,
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {
                "cell": cell,
                "state": entry.state,
                "alert_id": entry.alert_id,
                "version": entry.version,
                "serial": entry.serial,
                "message_ids": entry.message_ids,
                "on_air_ms": entry.on_air_ms,
                "stopped_ms": entry.stopped_ms,
                "tac": site.tac,
                "site": [site.lat, site.lon],
                "azimuth_deg": site.azimuth_deg,
                "beamwidth_deg": site.beamwidth_deg,
                "range_m": site.range_m,
            },
        }));
    }
    Ok(Json(json!({
        "type": "FeatureCollection",
        "carrier": carrier,
        "alert_id": alert,
        "total": total,
        "truncated": truncated,
        "unknown": unknown,
        "features": features,
    })))
}

/// `GET /api/v1/broadcasts/{alert_id}/warning-area`: the polygons the alert's latest write-replace carried as Warning
/// Area Coordinates (SBc-AP IE 46), as a phone decodes them, with how far they stray from the zone and which
/// carriers sent them. 404 when dissemination holds no write-replace of the alert.
#[utoipa::path(get, path = "/api/v1/broadcasts/{alert_id}/warning-area", tag = "dissemination", security(("operator_token" = ["read"])),
    params(("alert_id" = String, Path, description = "A public warning's id (`W-…`) or the id of an alert behind one")),
    responses((status = 200, description = "The Warning Area Coordinates polygons as a phone decodes them, with their displacement and carriers", body = serde_json::Value),
        (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody),
        (status = 404, description = "`not_found`: no write-replace of the alert in memory", body = super::openapi::ErrorBody)))]
pub async fn warning_area(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Read>,
    Path(alert_id): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    let warning = warning_id(&app, &alert_id);
    let latest = dissemination(&app)?
        .broadcasts()
        .into_iter()
        .find(|b| b.alert_id == warning && b.kind == dissemination::BroadcastKind::WriteReplace && b.error.is_none())
        .ok_or_else(|| AppError::NotFound(format!("no cell broadcast of `{}` in memory", short(&alert_id))))?;
    if latest.area_id.is_empty() {
        return Err(AppError::NotFound(format!(
            "the broadcast of `{}` names no zone (an older journal)",
            short(&warning)
        )));
    }
    let geo = Arc::clone(&app.geo);
    let zone = latest.area_id.clone();
    // Buffering and simplifying a county's outline takes milliseconds to tens of them: off the async workers.
    let shape = tokio::task::spawn_blocking(move || dissemination::warning_area_of_zone(&geo, &zone))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(|e| AppError::NotFound(format!("no warning area coordinates for zone `{}`: {e}", latest.area_id)))?;
    let sent_by: Vec<Value> = latest
        .carriers
        .iter()
        .filter_map(|c| c.warning_area_octets.map(|octets| json!({"carrier": c.carrier, "octets": octets})))
        .collect();
    let vertices: usize = shape.polygons.0.iter().map(|p| p.exterior().0.len().saturating_sub(1)).sum();
    Ok(Json(json!({
        "alert_id": warning,
        "version": latest.version,
        "serial": latest.serial,
        "zone": latest.area_id,
        "geometry": geo_index::multipolygon_to_geojson(&shape.polygons),
        "worst_displacement_m": shape.worst_displacement_m,
        "vertices": vertices,
        "octets": shape.octets,
        "sent_by": sent_by,
    })))
}
