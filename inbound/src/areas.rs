//! Where an inbound CAP message applies, in our terms: the zones it covers and a GeoJSON shape for the map.
//!
//! Taiwan's platform names areas by `Taiwan_Geocode_103` code (5-digit county, 7-digit township; some agencies send
//! longer village codes that start with the township's 7 digits). The codes nest, and a zone's `geocode` says which
//! county or township the zone lies in, so a warning code matches a zone when:
//! - the zone's code starts with the warning's (a county warning covers every zone tagged with one of its
//!   townships), or
//! - the zone *is* that area (kind `township`) and the warning names a part of it (a village code).
//!
//! A zone tagged only with its county is not matched by a township warning from codes alone (the river reach of
//! Jiji is not in Xinyi). Geometry settles those: the warning's polygons and circles (circles as 32-gons), and the
//! shapes of township zones whose code the warning names, are intersected with every zone. "Covers" therefore
//! means "overlaps": for a warning, missing an affected zone is the worse error.

use std::collections::BTreeSet;

use geo::{Coord, Intersects, LineString, MultiPolygon, Polygon as GeoPolygon};
use geo_index::{multipolygon_to_geojson, GeoIndex, ZoneKind};
use serde_json::Value;

use encoders::cap::{CapAlert, Circle, Polygon, TW_GEOCODE_NAME};

use super::error::Rejection;

/// Vertices of the polygon that stands in for a CAP circle; 32 keeps the chord error under 0.5 % of the radius.
const CIRCLE_VERTICES: usize = 32;
/// Mean Earth radius (IUGG), km.
const EARTH_RADIUS_KM: f64 = 6371.0088;
/// A radius-0 circle is a point; drawing it 10 m wide keeps the GeoJSON polygon valid and visible.
const MIN_RADIUS_KM: f64 = 0.01;

/// The result of placing a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// Our zones the message covers, sorted.
    pub zone_ids: Vec<String>,
    /// Every Taiwan_Geocode_103 value in the message, sorted, as written.
    pub geocodes: Vec<String>,
    /// Geocodes (any scheme, written `valueName=value` when not Taiwan_Geocode_103) that matched no zone.
    pub unresolved_geocodes: Vec<String>,
    /// GeoJSON geometry (lon/lat): the message's polygons and circles when it has any, else the matched zones.
    pub geometry: Value,
}

/// Places `alert` among `geo`'s zones, or says why it cannot be placed.
pub fn place(alert: &CapAlert, geo: &GeoIndex) -> Result<Placement, Rejection> {
    let mut tw_codes = BTreeSet::new();
    let mut other_codes = BTreeSet::new();
    // Infos in several languages repeat the same areas; sets and string keys keep each shape once.
    let mut shapes: Vec<GeoPolygon<f64>> = Vec::new();
    let mut shape_keys = BTreeSet::new();
    let mut any_area = false;
    for area in alert.infos.iter().flat_map(|i| &i.areas) {
        any_area = true;
        for g in &area.geocodes {
            if g.value_name.trim() == TW_GEOCODE_NAME {
                tw_codes.insert(g.value.trim().to_string());
            } else {
                other_codes.insert(format!("{}={}", g.value_name.trim(), g.value.trim()));
            }
        }
        for p in &area.polygons {
            if shape_keys.insert(p.to_string()) {
                shapes.push(polygon_to_geo(p));
            }
        }
        for c in &area.circles {
            if shape_keys.insert(format!("circle {c}")) {
                shapes.push(circle_to_geo(c));
            }
        }
    }
    if !any_area {
        return Err(Rejection::NoArea);
    }

    let shape = MultiPolygon(shapes);
    let mut zone_ids = BTreeSet::new();
    let mut unresolved = BTreeSet::new();
    // Township zones named exactly: their outlines stand in for the geocode's area in the intersection below.
    let mut named_areas: Vec<GeoPolygon<f64>> = Vec::new();
    for code in &tw_codes {
        let mut matched = false;
        for zone in geo.zones() {
            let Some(z) = zone.geocode.as_deref() else {
                continue;
            };
            if geocode_covers(code, z, zone.kind == ZoneKind::Township) {
                zone_ids.insert(zone.id.clone());
                matched = true;
                if zone.kind == ZoneKind::Township && z == code {
                    named_areas.extend(zone.geometry.0.iter().cloned());
                }
            }
        }
        if !matched {
            unresolved.insert(code.clone());
        }
    }
    let reach = MultiPolygon(shape.0.iter().cloned().chain(named_areas).collect());
    if !reach.0.is_empty() {
        for zone in geo.zones() {
            if !zone_ids.contains(&zone.id) && zone.geometry.intersects(&reach) {
                zone_ids.insert(zone.id.clone());
            }
        }
    }
    unresolved.extend(other_codes);

    let geometry = if !shape.0.is_empty() {
        multipolygon_to_geojson(&shape)
    } else if !zone_ids.is_empty() {
        let parts = zone_ids.iter().filter_map(|id| geo.zone(id)).flat_map(|z| z.geometry.0.iter().cloned()).collect();
        multipolygon_to_geojson(&MultiPolygon(parts))
    } else if unresolved.is_empty() {
        // Areas with a description only: nothing a map or a rule can use.
        return Err(Rejection::NoArea);
    } else {
        return Err(Rejection::UnknownGeocode { codes: unresolved.into_iter().collect() });
    };
    Ok(Placement {
        zone_ids: zone_ids.into_iter().collect(),
        geocodes: tw_codes.into_iter().collect(),
        unresolved_geocodes: unresolved.into_iter().collect(),
        geometry,
    })
}

/// Whether a warning for area code `warning` covers a zone tagged `zone` by codes alone (see the module docs).
/// `zone_is_area`: the zone is the whole area of its code (a township zone), so a part of it overlaps it.
pub fn geocode_covers(warning: &str, zone: &str, zone_is_area: bool) -> bool {
    let digits = |s: &str| s.bytes().all(|c| c.is_ascii_digit());
    // Shorter than a county code means nothing: "1" must not match every code starting with 1.
    if warning.len() < 5 || zone.len() < 5 || !digits(warning) || !digits(zone) {
        return false;
    }
    zone.starts_with(warning) || (zone_is_area && warning.starts_with(zone))
}

fn polygon_to_geo(p: &Polygon) -> GeoPolygon<f64> {
    let ring: Vec<Coord<f64>> = p.points().iter().map(|pt| Coord { x: pt.lon, y: pt.lat }).collect();
    GeoPolygon::new(LineString(ring), Vec::new())
}

/// A circle as a closed ring of 32 points at the great-circle distance `radius` from the centre.
pub fn circle_to_geo(c: &Circle) -> GeoPolygon<f64> {
    let r = c.radius_km.max(MIN_RADIUS_KM) / EARTH_RADIUS_KM;
    let (lat1, lon1) = (c.center.lat.to_radians(), c.center.lon.to_radians());
    let mut ring: Vec<Coord<f64>> = (0..CIRCLE_VERTICES)
        .map(|i| {
            let bearing = std::f64::consts::TAU * i as f64 / CIRCLE_VERTICES as f64;
            let lat2 = (lat1.sin() * r.cos() + lat1.cos() * r.sin() * bearing.cos()).asin();
            let lon2 = lon1 + (bearing.sin() * r.sin() * lat1.cos()).atan2(r.cos() - lat1.sin() * lat2.sin());
            // Back into -180..180 so circles near the antimeridian stay valid GeoJSON.
            let lon = (lon2.to_degrees() + 540.0).rem_euclid(360.0) - 180.0;
            Coord { x: lon, y: lat2.to_degrees() }
        })
        .collect();
    ring.push(ring[0]);
    GeoPolygon::new(LineString(ring), Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geocodes_cover_downwards_and_parts_of_townships() {
        assert!(geocode_covers("1000812", "1000812", false));
        assert!(geocode_covers("10008", "1000812", false), "county warning, township zone");
        assert!(!geocode_covers("1000812", "10008", false), "a county-tagged zone may lie elsewhere");
        assert!(geocode_covers("1000812", "10008", true), "a township is part of a county-wide zone");
        assert!(geocode_covers("1000812026", "1000812", true), "a village of a township zone");
        assert!(!geocode_covers("1000812026", "1000812", false));
        assert!(!geocode_covers("1000813", "1000812", true));
        assert!(!geocode_covers("1", "1000812", false));
        assert!(!geocode_covers("", "10008", false));
        assert!(!geocode_covers("10008a", "10008a", false));
    }

    #[test]
    fn circle_polygon_is_closed_and_round() {
        let c = Circle::new(23.5, 120.9, 5.0).expect("valid circle");
        let p = circle_to_geo(&c);
        let ring = &p.exterior().0;
        assert_eq!(ring.len(), CIRCLE_VERTICES + 1);
        assert_eq!(ring.first(), ring.last());
        for pt in ring {
            // Equirectangular distance is good to < 0.1 % at 5 km.
            let dy = (pt.y - 23.5).to_radians() * EARTH_RADIUS_KM;
            let dx = (pt.x - 120.9).to_radians() * EARTH_RADIUS_KM * 23.5f64.to_radians().cos();
            let d = (dx * dx + dy * dy).sqrt();
            assert!((d - 5.0).abs() < 0.01, "vertex {pt:?} at {d} km");
        }
        let point = circle_to_geo(&Circle::new(23.5, 120.9, 0.0).expect("valid circle"));
        assert!(point.exterior().0.iter().any(|c| c.y != 23.5), "radius 0 still has extent");
    }
}
