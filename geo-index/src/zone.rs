//! Zones: named areas of concern (debris-flow areas, river reaches, road segments, townships, restricted areas),
//! parsed from a GeoJSON FeatureCollection.
//!
//! Feature properties: `id` (string, required, unique), `name`, `name_en`, `kind` (snake_case [`ZoneKind`]),
//! `geocode` (Taiwan_Geocode_103, checked by `geocode.rs`), `width_m` (required for LineString/MultiLineString:
//! road segments and river reaches are centre lines buffered to that full width), `thresholds` (object of
//! string → number, kept as a map for the rule engine, e.g. `{"rain_24h_mm": 350}`), and for road segments the road
//! they are part of: `road` and `road_en` (the road's name: `台21線`, `Provincial Highway 21`), `direction` and
//! `direction_en` (the carriageway the segment's detectors watch, in the order its centre line is drawn: `北向`,
//! `northbound`). The centre line is kept beside the buffered area ([`Zone::centre_line`]) so traffic rules can order
//! a segment's detectors along it (which one is upstream).
//!
//! We read the JSON with `serde_json` directly rather than through the `geojson` crate so that every problem can be
//! reported against the zone's id with our own wording, and so a bad feature never stops us from reading the next.

use crate::{
    cover::CellCover,
    error::{ZoneError, ZoneProblem},
    geocode::parse_geocode,
    projection::{self, LocalProjection},
};
use geo::{Buffer, Coord, Distance, Euclidean, LineString, MultiLineString, MultiPolygon, Polygon, Validation};
use h3o::Resolution;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// What a zone is. The rule engine picks hazards by kind (rainfall thresholds for debris-flow areas, level gauges
/// for river reaches, road sensors for road segments); townships are the geocoded areas of public warnings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneKind {
    DebrisFlow,
    RiverReach,
    RoadSegment,
    Township,
    Restricted,
}

impl ZoneKind {
    fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Value::String(s.to_owned())).ok()
    }
}

/// A named area of concern with its exact geometry and its H3 cells.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Stable identifier from the config (`dfa-xinyi-shenmu`); alerts and rules refer to zones by it.
    pub id: String,
    /// Display name, usually Chinese (`神木村土石流潛勢溪流`); the id when the file gives none.
    pub name: String,
    /// English display name for the English CAP `info` block, when given.
    pub name_en: Option<String>,
    /// What kind of area it is.
    pub kind: ZoneKind,
    /// Taiwan_Geocode_103 (7-digit township or 5-digit county), checked on load.
    pub geocode: Option<String>,
    /// Per-zone thresholds for the rule engine (e.g. a debris-flow area's `rain_24h_mm`), as configured.
    pub thresholds: BTreeMap<String, f64>,
    /// Full width (metres) a centre line was buffered to, for road segments and river reaches.
    pub width_m: Option<f64>,
    /// The exact area (lon/lat, WGS84); lines are already buffered. Edge decisions use it.
    pub geometry: MultiPolygon<f64>,
    /// Area of `geometry` in km².
    pub area_km2: f64,
    /// The H3 cells covering `geometry` (mode `Covers`, see `cover.rs`).
    pub(crate) cover: CellCover,
    /// The road a road segment belongs to (names and carriageway, zh-TW and en), when the file gives it.
    pub road: Option<Road>,
    /// The centre line(s) before buffering (lon/lat), for LineString zones: the direction of travel is the order the
    /// line is drawn in, so a detector's place along it says which neighbours are upstream.
    pub centre_line: Option<MultiLineString<f64>>,
}

/// The road a road segment is a section of, as people name it on signs and in warnings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Road {
    /// `台21線`.
    pub name: String,
    /// `Provincial Highway 21`.
    pub name_en: Option<String>,
    /// The carriageway the segment covers, in the direction its centre line is drawn (`北向`, `雙向`).
    pub direction: Option<String>,
    /// `northbound`, `both directions`.
    pub direction_en: Option<String>,
}

impl Zone {
    /// The H3 cells covering the zone (every cell touching it), each flagged fully-inside or edge.
    pub fn cells(&self) -> &CellCover {
        &self.cover
    }

    /// GeoJSON geometry (serde_json::Value) of the exact area, for websocket messages and open data.
    /// A `Polygon` when the zone has one part, a `MultiPolygon` otherwise.
    pub fn geojson_geometry(&self) -> Value {
        multipolygon_to_geojson(&self.geometry)
    }

    /// CAP 1.2 polygons: one string per outer ring, `"lat,lon lat,lon ..."`, closed (first == last), at least
    /// 4 pairs, at most `max(max_vertices, 4)` pairs counting the closing one, and covering every H3 cell of the
    /// zone (so also the whole exact area). See `outline.rs` for how the outline is made and simplified.
    pub fn cap_polygons(&self, max_vertices: usize) -> Vec<String> {
        crate::outline::cap_polygons(&self.cover, max_vertices)
    }

    /// Shortest distance in metres between the two zones' exact areas (0 when they touch or overlap), in a local
    /// projection around this zone: what "a landslide within 3 km of this road segment" measures.
    pub fn distance_m(&self, other: &Zone) -> f64 {
        let proj = LocalProjection::for_multipolygon(&self.geometry);
        let (a, b) = (proj.mp_to_local(&self.geometry), proj.mp_to_local(&other.geometry));
        let mut best = f64::INFINITY;
        for pa in &a.0 {
            for pb in &b.0 {
                best = best.min(Euclidean.distance(pa, pb));
            }
        }
        best
    }

    /// [`Zone::distance_m`] if it is at most `max_m`, else `None`; bounding boxes first, so that measuring a road
    /// segment against every zone of a country stays cheap.
    pub fn within_m(&self, other: &Zone, max_m: f64) -> Option<f64> {
        use geo::BoundingRect;
        let (a, b) = (self.geometry.bounding_rect()?, other.geometry.bounding_rect()?);
        // Metres per degree: latitude ≈ 110.6 km; longitude at most 111.3 km (the equator), so the box test never
        // drops a zone that is within reach.
        let pad_lat = max_m / 110_000.0;
        let pad_lon = max_m / (111_320.0 * a.center().y.to_radians().cos().max(0.01)) * 1.01;
        let apart = b.min().x > a.max().x + pad_lon
            || b.max().x < a.min().x - pad_lon
            || b.min().y > a.max().y + pad_lat
            || b.max().y < a.min().y - pad_lat;
        if apart {
            return None;
        }
        let d = self.distance_m(other);
        (d <= max_m).then_some(d)
    }

    /// How far along the centre line (metres from its first point, in drawing order) the point nearest to
    /// (`lat`, `lon`) lies; `None` for zones without a centre line. For a MultiLineString the parts count one
    /// after the other.
    pub fn position_along_m(&self, lat: f64, lon: f64) -> Option<f64> {
        use geo::{Length, LineLocatePoint, Point};
        let lines = self.centre_line.as_ref()?;
        let proj = LocalProjection::around(lat, lon);
        let p = Point::from(proj.to_local(Coord { x: lon, y: lat }));
        let mut offset = 0.0;
        let mut best: Option<(f64, f64)> = None;
        for line in &lines.0 {
            let local = proj.ls_to_local(line);
            let length = Euclidean.length(&local);
            if let Some(fraction) = local.line_locate_point(&p) {
                let along = offset + fraction * length;
                use geo::InterpolatableLine;
                let at = local.point_at_ratio_from_start(&Euclidean, fraction);
                let d = at.map(|q| Euclidean.distance(&q, &p)).unwrap_or(f64::INFINITY);
                if best.is_none_or(|(bd, _)| d < bd) {
                    best = Some((d, along));
                }
            }
            offset += length;
        }
        best.map(|(_, along)| along)
    }
}

/// GeoJSON geometry value of a lon/lat multipolygon.
pub fn multipolygon_to_geojson(mp: &MultiPolygon<f64>) -> Value {
    fn ring(ls: &LineString<f64>) -> Value {
        Value::Array(ls.0.iter().map(|c| json!([c.x, c.y])).collect())
    }
    fn polygon(p: &Polygon<f64>) -> Value {
        let mut rings = vec![ring(p.exterior())];
        rings.extend(p.interiors().iter().map(ring));
        Value::Array(rings)
    }
    match mp.0.as_slice() {
        [single] => json!({"type": "Polygon", "coordinates": polygon(single)}),
        parts => json!({"type": "MultiPolygon", "coordinates": parts.iter().map(polygon).collect::<Vec<_>>()}),
    }
}

/// Parses one feature into a zone. `index` is the feature's position, used to name it when it has no id.
/// A zone that would need more than `max_cells` H3 cells is refused before it is tiled.
pub(crate) fn parse_feature(
    feature: &Value,
    index: usize,
    resolution: Resolution,
    max_cells: u64,
) -> Result<Zone, ZoneError> {
    let props = feature.get("properties").and_then(Value::as_object);
    // The id is needed before anything else so that every later error can name the zone.
    let id = props
        .and_then(|p| p.get("id"))
        .or_else(|| feature.get("id"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let Some(id) = id else {
        return Err(ZoneError { zone_id: format!("#{index}"), reason: ZoneProblem::MissingId });
    };
    let fail = |reason| ZoneError { zone_id: id.to_owned(), reason };
    let empty = Map::new();
    let props = props.unwrap_or(&empty);

    let kind_text = props.get("kind").and_then(Value::as_str).unwrap_or_default();
    let kind = ZoneKind::parse(kind_text).ok_or_else(|| fail(ZoneProblem::BadKind(kind_text.to_owned())))?;
    let name = optional_string(props, "name").map_err(fail)?.unwrap_or_else(|| id.to_owned());
    let name_en = optional_string(props, "name_en").map_err(fail)?;
    let geocode = optional_string(props, "geocode").map_err(fail)?;
    if let Some(code) = &geocode {
        parse_geocode(code).map_err(|why| fail(ZoneProblem::BadGeocode { code: code.clone(), why }))?;
    }
    let thresholds = parse_thresholds(props.get("thresholds")).map_err(fail)?;
    let width_m = match props.get("width_m") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_f64().ok_or_else(|| fail(ZoneProblem::BadWidth(None)))?),
    };

    let road = match optional_string(props, "road").map_err(fail)? {
        Some(name) => Some(Road {
            name,
            name_en: optional_string(props, "road_en").map_err(fail)?,
            direction: optional_string(props, "direction").map_err(fail)?,
            direction_en: optional_string(props, "direction_en").map_err(fail)?,
        }),
        None => {
            // A direction without a road would be silently dropped: name the mistake instead.
            for name in ["road_en", "direction", "direction_en"] {
                if props.get(name).is_some_and(|v| !v.is_null()) {
                    return Err(fail(ZoneProblem::BadProperty { name, why: "given without `road`".into() }));
                }
            }
            None
        }
    };

    let geometry = feature.get("geometry").filter(|g| !g.is_null()).ok_or_else(|| fail(ZoneProblem::NoGeometry))?;
    let centre_line = centre_line(geometry);
    let geometry = parse_geometry(geometry, width_m).map_err(fail)?;
    let cells = CellCover::estimated_cells(&geometry, resolution);
    if cells > max_cells {
        return Err(fail(ZoneProblem::TooManyCells { cells, limit: max_cells, resolution: u8::from(resolution) }));
    }
    let cover = CellCover::tile(&geometry, resolution).map_err(|e| fail(ZoneProblem::Tiling(e)))?;
    if cover.is_empty() {
        return Err(fail(ZoneProblem::Tiling("no H3 cell covers the geometry".into())));
    }
    Ok(Zone {
        id: id.to_owned(),
        name,
        name_en,
        kind,
        geocode,
        thresholds,
        width_m,
        area_km2: projection::area_km2(&geometry),
        geometry,
        cover,
        road,
        centre_line,
    })
}

/// The centre line(s) of a LineString/MultiLineString geometry as given (checked by `parse_geometry` right after).
fn centre_line(geometry: &Value) -> Option<MultiLineString<f64>> {
    let coords = geometry.get("coordinates")?;
    match geometry.get("type").and_then(Value::as_str)? {
        "LineString" => parse_line(coords).ok().map(|l| MultiLineString(vec![l])),
        "MultiLineString" => {
            array(coords).ok()?.iter().map(|l| parse_line(l).ok()).collect::<Option<Vec<_>>>().map(MultiLineString)
        }
        _ => None,
    }
}

fn optional_string(props: &Map<String, Value>, name: &'static str) -> Result<Option<String>, ZoneProblem> {
    match props.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ZoneProblem::BadProperty { name, why: format!("expected a string, got {other}") }),
    }
}

fn parse_thresholds(value: Option<&Value>) -> Result<BTreeMap<String, f64>, ZoneProblem> {
    let mut out = BTreeMap::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let n = v
                    .as_f64()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| ZoneProblem::BadThresholds(format!("{k} is not a number")))?;
                out.insert(k.clone(), n);
            }
        }
        Some(_) => return Err(ZoneProblem::BadThresholds("expected an object of name → number".into())),
    }
    Ok(out)
}

/// Turns a GeoJSON geometry into a valid lon/lat multipolygon (lines buffered by `width_m`).
pub(crate) fn parse_geometry(geometry: &Value, width_m: Option<f64>) -> Result<MultiPolygon<f64>, ZoneProblem> {
    let kind = geometry.get("type").and_then(Value::as_str).unwrap_or("<none>");
    let coords = geometry.get("coordinates").ok_or(ZoneProblem::EmptyGeometry)?;
    let mp = match kind {
        "Polygon" => MultiPolygon(vec![parse_polygon(coords)?]),
        "MultiPolygon" => MultiPolygon(array(coords)?.iter().map(parse_polygon).collect::<Result<_, _>>()?),
        "LineString" => buffer_lines(MultiLineString(vec![parse_line(coords)?]), width_m)?,
        "MultiLineString" => {
            buffer_lines(MultiLineString(array(coords)?.iter().map(parse_line).collect::<Result<_, _>>()?), width_m)?
        }
        other => return Err(ZoneProblem::UnsupportedGeometry(other.to_owned())),
    };
    if mp.0.is_empty() {
        return Err(ZoneProblem::EmptyGeometry);
    }
    check_polygons(&mp)?;
    Ok(mp)
}

/// Checks each part: valid rings, no self-intersection. Parts may overlap each other (the zone is their union).
pub(crate) fn check_polygons(mp: &MultiPolygon<f64>) -> Result<(), ZoneProblem> {
    for polygon in &mp.0 {
        if polygon.exterior().0.is_empty() {
            return Err(ZoneProblem::EmptyGeometry);
        }
        for c in polygon.exterior().0.iter().chain(polygon.interiors().iter().flat_map(|r| r.0.iter())) {
            check_coord(*c)?;
        }
        if let Some(first) = polygon.validation_errors().first() {
            return Err(ZoneProblem::InvalidPolygon(first.to_string()));
        }
    }
    Ok(())
}

fn check_coord(c: Coord<f64>) -> Result<(), ZoneProblem> {
    if c.x.is_finite() && c.y.is_finite() && (-180.0..=180.0).contains(&c.x) && (-90.0..=90.0).contains(&c.y) {
        Ok(())
    } else {
        Err(ZoneProblem::CoordinateOutOfRange { lat: c.y, lon: c.x })
    }
}

fn array(v: &Value) -> Result<&Vec<Value>, ZoneProblem> {
    let a = v.as_array().ok_or_else(|| ZoneProblem::InvalidPolygon("coordinates are not an array".into()))?;
    if a.is_empty() {
        return Err(ZoneProblem::EmptyGeometry);
    }
    Ok(a)
}

fn parse_position(v: &Value) -> Result<Coord<f64>, ZoneProblem> {
    let p = v.as_array().ok_or_else(|| ZoneProblem::InvalidPolygon("a position is not an array".into()))?;
    match (p.first().and_then(Value::as_f64), p.get(1).and_then(Value::as_f64)) {
        (Some(x), Some(y)) => {
            let c = Coord { x, y };
            check_coord(c)?;
            Ok(c)
        }
        _ => Err(ZoneProblem::InvalidPolygon("a position needs two numbers [lon, lat]".into())),
    }
}

fn parse_line(v: &Value) -> Result<LineString<f64>, ZoneProblem> {
    let coords: Vec<Coord<f64>> = array(v)?.iter().map(parse_position).collect::<Result<_, _>>()?;
    let mut distinct = coords.clone();
    distinct.dedup();
    if distinct.len() < 2 {
        return Err(ZoneProblem::EmptyGeometry);
    }
    Ok(LineString(coords))
}

fn parse_polygon(v: &Value) -> Result<Polygon<f64>, ZoneProblem> {
    let rings = array(v)?;
    let mut rings = rings.iter().map(parse_line);
    let exterior = rings.next().ok_or(ZoneProblem::EmptyGeometry)??;
    let interiors = rings.collect::<Result<Vec<_>, _>>()?;
    // Polygon::new closes open rings; GeoJSON requires them closed but a missing closing point is harmless.
    Ok(Polygon::new(exterior, interiors))
}

/// Buffers centre lines to a band of `width_m` (full width), in a local metric projection.
fn buffer_lines(lines: MultiLineString<f64>, width_m: Option<f64>) -> Result<MultiPolygon<f64>, ZoneProblem> {
    let width = match width_m {
        Some(w) if w.is_finite() && w > 0.0 && w <= 50_000.0 => w,
        other => return Err(ZoneProblem::BadWidth(other)),
    };
    use geo::BoundingRect;
    let Some(rect) = lines.bounding_rect() else { return Err(ZoneProblem::EmptyGeometry) };
    let proj = LocalProjection::around(rect.center().y, rect.center().x);
    let local = MultiLineString(lines.0.iter().map(|l| proj.ls_to_local(l)).collect());
    let buffered = local.buffer(width / 2.0);
    let mp = proj.mp_to_geo(&buffered);
    if mp.0.is_empty() {
        return Err(ZoneProblem::EmptyGeometry);
    }
    Ok(mp)
}

#[cfg(test)]
mod road_tests {
    use super::*;

    fn road(props: &str) -> Result<Zone, ZoneError> {
        let feature: Value = serde_json::from_str(&format!(
            r#"{{"type":"Feature","properties":{{"id":"ph21","kind":"road_segment","width_m":40{props}}},
               "geometry":{{"type":"LineString","coordinates":[[120.9,23.49],[120.903,23.505],[120.902,23.52]]}}}}"#
        ))
        .unwrap();
        parse_feature(&feature, 0, Resolution::Nine, 100_000)
    }

    #[test]
    fn road_segments_name_their_road_and_keep_their_centre_line() {
        let z = road(
            r#","road":"台21線","road_en":"Provincial Highway 21","direction":"北向","direction_en":"northbound""#,
        )
        .unwrap();
        let r = z.road.as_ref().unwrap();
        assert_eq!((r.name.as_str(), r.name_en.as_deref()), ("台21線", Some("Provincial Highway 21")));
        assert_eq!((r.direction.as_deref(), r.direction_en.as_deref()), (Some("北向"), Some("northbound")));
        assert_eq!(z.centre_line.as_ref().unwrap().0[0].0.len(), 3);
        // Along the line in drawing order: the start, a point a third up the first part, the end (~3.3 km).
        let start = z.position_along_m(23.49, 120.9).unwrap();
        let third = z.position_along_m(23.495, 120.901).unwrap();
        let end = z.position_along_m(23.52, 120.902).unwrap();
        assert!(
            start < 1.0 && third > 400.0 && third < 700.0 && end > 3_100.0 && end < 3_500.0,
            "{start} {third} {end}"
        );
        // A direction without a road is refused, naming the key.
        let e = road(r#","direction":"北向""#).unwrap_err();
        assert!(e.to_string().contains("direction"), "{e}");
        // No road: fine (older files).
        assert!(road("").unwrap().road.is_none());
    }

    #[test]
    fn distances_between_zones_are_metres_between_areas() {
        let a = road("").unwrap();
        assert_eq!(a.distance_m(&a), 0.0);
        let feature: Value = serde_json::from_str(
            r#"{"type":"Feature","properties":{"id":"slope","kind":"debris_flow"},
               "geometry":{"type":"Polygon","coordinates":[[[120.92,23.50],[120.93,23.50],[120.93,23.51],[120.92,23.51],[120.92,23.50]]]}}"#,
        )
        .unwrap();
        let b = parse_feature(&feature, 1, Resolution::Nine, 100_000).unwrap();
        // The road's east edge (~120.9032 + 20 m) to 120.92 at 23.505: ~1.7 km.
        let d = a.distance_m(&b);
        assert!((1_500.0..1_900.0).contains(&d), "{d}");
        assert_eq!(a.within_m(&b, 3_000.0), Some(d));
        assert_eq!(a.within_m(&b, 1_000.0), None);
    }
}
