//! Open data for anyone: `GET /opendata/alerts.geojson` (active public alerts with their areas) and
//! `GET /opendata/sensors.geojson` (sensors with their latest values). Verified report clusters: `reports.rs`.
//!
//! A road alert's feature is its road segment: the geometry is the segment's area (the centre line buffered to its
//! width, what the alert targets) and its properties name the road (`road`: name, direction, zh-TW and en), carry
//! the centre line (`segment`, a GeoJSON LineString/MultiLineString, for maps that draw roads as lines) and, when a
//! hazard caused the closure, the causing alert (`caused_by`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::app::App;

/// `GET /opendata/alerts.geojson`: active public alerts with their areas.
#[utoipa::path(get, path = "/opendata/alerts.geojson", operation_id = "open_data_alerts", tag = "open data",
    responses((status = 200, description = "Features: `id`, the area, and `event`, `state`, `mode`, `severity`, `urgency`, `certainty`, `headline_zh`, `headline_en`, `sent`, `version`, `area`", content_type = "application/geo+json", body = super::openapi::FeatureCollection),
        (status = 429, description = "Rate limited (per address)", body = super::openapi::ErrorBody)))]
pub async fn alerts(State(app): State<Arc<App>>) -> impl IntoResponse {
    let features: Vec<_> = app
        .alerts
        .book
        .lock()
        .active()
        .filter(|a| a.is_public())
        .map(|a| {
            let m = app.alert_message(a);
            let mut feature = json!({"type": "Feature", "id": m.id, "geometry": m.area, "properties": {
                "event": m.event, "state": m.state, "mode": m.mode, "severity": m.severity, "urgency": m.urgency,
                "certainty": m.certainty, "headline_zh": m.headlines.zh_tw, "headline_en": m.headlines.en,
                "sent": m.sent, "version": m.version, "area": m.area_name}});
            if let Some(zone) = app.geo.zone(&a.area_id).filter(|z| z.kind == geo_index::ZoneKind::RoadSegment) {
                let props = &mut feature["properties"];
                props["road"] = json!(zone.road);
                props["segment"] = zone.centre_line.as_ref().map_or(serde_json::Value::Null, segment_geojson);
                if let Some(cause) = &m.caused_by {
                    props["caused_by"] = json!(cause);
                }
            }
            feature
        })
        .collect();
    ([(header::CONTENT_TYPE, "application/geo+json")], Json(json!({"type": "FeatureCollection", "features": features})))
}

/// `GET /opendata/sensors.geojson`: sensors with their latest values.
#[utoipa::path(get, path = "/opendata/sensors.geojson", operation_id = "open_data_sensors", tag = "open data",
    responses((status = 200, description = "Features: a `Point` per sensor in service, with `kind`, `agency`, `latest` (`{metric: [ts_ms, value]}`), `last_seen_ms`", content_type = "application/geo+json", body = super::openapi::FeatureCollection),
        (status = 429, description = "Rate limited (per address)", body = super::openapi::ErrorBody)))]
pub async fn sensors(State(app): State<Arc<App>>) -> impl IntoResponse {
    let live = app.live.sensors.read();
    let features: Vec<_> = app
        .registry()
        .read()
        .iter()
        .filter(|s| !s.retired)
        .map(|s| {
            let l = live.get(&s.id);
            json!({"type": "Feature", "id": s.id, "geometry": {"type": "Point", "coordinates": [s.lon, s.lat]},
                   "properties": {"kind": s.kind, "agency": s.agency, "latest": l.map(|l| &l.latest),
                                  "last_seen_ms": l.and_then(|l| l.last_seen_ms)}})
        })
        .collect();
    ([(header::CONTENT_TYPE, "application/geo+json")], Json(json!({"type": "FeatureCollection", "features": features})))
}

/// GeoJSON of a road segment's centre line: a LineString for one part, a MultiLineString otherwise.
pub(crate) fn segment_geojson(lines: &geo::MultiLineString<f64>) -> serde_json::Value {
    let line = |l: &geo::LineString<f64>| l.0.iter().map(|c| json!([c.x, c.y])).collect::<Vec<_>>();
    match lines.0.as_slice() {
        [one] => json!({"type": "LineString", "coordinates": line(one)}),
        parts => json!({"type": "MultiLineString", "coordinates": parts.iter().map(line).collect::<Vec<_>>()}),
    }
}
