//! The alert's area as a phone tests its position against it, for the citizens' app and Web Push: the very
//! Warning-Area-Coordinates octets cell broadcast carries in SBc-AP IE 46 (`encoders::cell_broadcast::warning_area`,
//! ATIS-0700041 layout), made the same way — the area simplified *outward* by geo-index to what the encoding holds
//! ([`crate::channel::cbc::broadcast::geofence_outline`]), quantised to the 22-bit grid — and sent base64 in the
//! citizens' frames and push payloads (`warning_area_coordinates`, `docs/PAYLOADS.md`). `web/geofence.js` reads them
//! the way Android's `GsmSmsCbMessage.parseWarningAreaCoordinates` does, so a phone in the app, a phone behind a
//! push and a geofence-capable handset under a cell broadcast draw the same line.
//!
//! No maximum-wait TLV is written: the app waits Android's default (`max_location_waiting_time`, 30 s); the outline
//! still leaves room for it, so the polygons are exactly those of every carrier's IE.
//!
//! The outline costs milliseconds to tens of milliseconds (buffering, simplifying and checking the zone's geometry),
//! so it is made once per area and kept ([`for_area`] memoises by a hash of the geometry: the same area from any
//! caller — the hot path's warnings, the fan-out nodes, the push dispatcher — is worked out once per process).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use base64::Engine as _;
use geo::{Coord, LineString, MultiPolygon, Polygon};
use geo_index::{GeoIndex, Resolution};
use serde_json::Value;

use crate::channel::cbc::broadcast::{coordinates, geofence_outline};
use crate::lock;

/// Areas remembered at most (the deployment's zones are a few hundred; partner areas come and go). When full the
/// memo starts again: a recomputation costs milliseconds, never a wrong answer.
const MEMO_LIMIT: usize = 4096;

/// SHA-256 of an area's GeoJSON text → its coordinates (base64), `None` when no outline could be made.
type Memo = HashMap<[u8; 32], Option<Arc<str>>>;

/// Outcomes remembered, by hash of the area's GeoJSON text.
static MEMO: LazyLock<Mutex<Memo>> = LazyLock::new(Mutex::default);

/// The Warning-Area-Coordinates of an area given as a GeoJSON geometry (Polygon or MultiPolygon, lon/lat), base64
/// (standard alphabet, padded). `None` when the area is not a polygon area or no outline fits the encoding: the
/// phone then alarms everyone the alert reached, as a handset does when the IE is absent.
pub fn for_area(area: &Value) -> Option<Arc<str>> {
    let text = serde_json::to_vec(area).ok()?;
    let key: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &text).as_ref().try_into().ok()?;
    if let Some(known) = lock(&MEMO).get(&key) {
        return known.clone();
    }
    // Worked out outside the lock: two callers racing on a new area both compute it, nobody waits on it.
    let made = compute(area).map_err(|e| tracing::warn!(error = %e, "no warning area coordinates for the phones"));
    let made: Option<Arc<str>> = made.ok().map(Into::into);
    let mut memo = lock(&MEMO);
    if memo.len() >= MEMO_LIMIT {
        memo.clear();
    }
    memo.insert(key, made.clone());
    made
}

fn compute(area: &Value) -> Result<String, String> {
    let geometry = multipolygon(area)?;
    // `outward_outline` reads only the geometry; an `AlertArea` is made by an index, and the coarsest one tiles any
    // area into a handful of cells.
    let area = GeoIndex::new(Resolution::Zero).alert_area(geometry).map_err(|e| e.to_string())?;
    let outline = geofence_outline(&area)?;
    let octets = coordinates(&outline, None).encode().map_err(|e| e.to_string())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(octets))
}

/// A GeoJSON Polygon or MultiPolygon as geometry.
fn multipolygon(v: &Value) -> Result<MultiPolygon<f64>, String> {
    fn ring(v: &Value) -> Result<LineString<f64>, String> {
        let points = v.as_array().ok_or("a ring is not an array")?;
        points
            .iter()
            .map(|p| match p.as_array().map(Vec::as_slice) {
                Some([x, y, ..]) => match (x.as_f64(), y.as_f64()) {
                    (Some(x), Some(y)) => Ok(Coord { x, y }),
                    _ => Err("a position is not two numbers".to_string()),
                },
                _ => Err("a position is not an array".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(LineString)
    }
    fn polygon(v: &Value) -> Result<Polygon<f64>, String> {
        let rings = v.as_array().ok_or("a polygon is not an array")?;
        let (outer, inner) = rings.split_first().ok_or("a polygon without rings")?;
        Ok(Polygon::new(ring(outer)?, inner.iter().map(ring).collect::<Result<_, _>>()?))
    }
    let coordinates = v.get("coordinates").ok_or("no coordinates")?;
    match v.get("type").and_then(Value::as_str) {
        Some("Polygon") => Ok(MultiPolygon(vec![polygon(coordinates)?])),
        Some("MultiPolygon") => Ok(MultiPolygon(
            coordinates
                .as_array()
                .ok_or("coordinates are not an array")?
                .iter()
                .map(polygon)
                .collect::<Result<_, _>>()?,
        )),
        other => Err(format!("a {} area has no polygon outline", other.unwrap_or("typeless"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use encoders::cell_broadcast::warning_area::{Geofence, WarningAreaCoordinates};
    use serde_json::json;

    fn square() -> Value {
        json!({"type": "Polygon", "coordinates": [[[120.91, 23.50], [120.95, 23.50], [120.95, 23.54], [120.91, 23.54], [120.91, 23.50]]]})
    }

    #[test]
    fn the_octets_hold_the_area_and_are_remembered() {
        let b64 = for_area(&square()).expect("an outline");
        let octets = base64::engine::general_purpose::STANDARD.decode(b64.as_bytes()).unwrap();
        assert!(octets.len() <= 1024);
        let read = WarningAreaCoordinates::decode(&octets).unwrap();
        assert_eq!(read.max_wait_s, None, "no wait TLV: the app uses Android's default");
        let Geofence::Polygon(v) = &read.areas[0] else { panic!("a polygon") };
        // Outward: every corner of the square is inside the decoded polygon's bounding box, by at least the grid.
        let (lat_min, lat_max) = v.iter().fold((90.0f64, -90.0f64), |(a, b), p| (a.min(p.lat), b.max(p.lat)));
        let (lon_min, lon_max) = v.iter().fold((180.0f64, -180.0f64), |(a, b), p| (a.min(p.lon), b.max(p.lon)));
        assert!(lat_min < 23.50 && lat_max > 23.54 && lon_min < 120.91 && lon_max > 120.95, "{v:?}");
        assert!(Arc::ptr_eq(&b64, &for_area(&square()).unwrap()), "worked out once");
    }

    #[test]
    fn areas_without_an_outline_have_none() {
        assert_eq!(for_area(&Value::Null), None);
        assert_eq!(for_area(&json!({"type": "Point", "coordinates": [120.9, 23.5]})), None);
        assert_eq!(for_area(&json!({"type": "Polygon", "coordinates": [[[1, 2], "x"]]})), None);
    }
}
