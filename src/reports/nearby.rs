//! "Is any zone within r metres of this point?" — for flagging reports far from every zone we watch.
//!
//! Built once from the zones' outlines. A query keeps only the zones whose bounding box, grown by r, holds the point,
//! then measures the distance to their edges in a local flat projection (metres; under 0.1 % error over the few
//! kilometres this is used for). Points inside a zone are the caller's to find with `GeoIndex::zones_containing`,
//! which is exact and already indexed.

use geo_index::Zone;

/// Metres per degree of latitude (and of longitude at the equator).
const M_PER_DEG: f64 = 111_320.0;

#[derive(Debug, Clone)]
struct ZoneOutline {
    id: String,
    /// (min lat, max lat, min lon, max lon)
    bbox: (f64, f64, f64, f64),
    /// Every ring (outer and holes), as (lon, lat) points.
    rings: Vec<Vec<(f64, f64)>>,
}

#[derive(Debug, Clone, Default)]
pub struct ZoneProximity {
    zones: Vec<ZoneOutline>,
}

impl ZoneProximity {
    pub fn from_zones<'a>(zones: impl Iterator<Item = &'a Zone>) -> Self {
        let zones = zones
            .filter_map(|zone| {
                let rings: Vec<Vec<(f64, f64)>> = zone
                    .geometry
                    .0
                    .iter()
                    .flat_map(|polygon| std::iter::once(polygon.exterior()).chain(polygon.interiors()))
                    .map(|ring| ring.coords().map(|c| (c.x, c.y)).collect::<Vec<_>>())
                    .filter(|ring| !ring.is_empty())
                    .collect();
                let mut bbox = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
                for &(lon, lat) in rings.iter().flatten() {
                    bbox = (bbox.0.min(lat), bbox.1.max(lat), bbox.2.min(lon), bbox.3.max(lon));
                }
                bbox.0.is_finite().then(|| ZoneOutline { id: zone.id.clone(), bbox, rings })
            })
            .collect();
        Self { zones }
    }

    /// The nearest zone edge within `radius_m` of the point, with its distance in metres.
    pub fn nearest_within(&self, lat: f64, lon: f64, radius_m: f64) -> Option<(&str, f64)> {
        let dlat = radius_m / M_PER_DEG;
        let cos = lat.to_radians().cos().max(0.01);
        let dlon = radius_m / (M_PER_DEG * cos);
        let mut best: Option<(&str, f64)> = None;
        for zone in &self.zones {
            let (min_lat, max_lat, min_lon, max_lon) = zone.bbox;
            if lat < min_lat - dlat || lat > max_lat + dlat || lon < min_lon - dlon || lon > max_lon + dlon {
                continue;
            }
            let to_xy = |(plon, plat): (f64, f64)| ((plon - lon) * cos * M_PER_DEG, (plat - lat) * M_PER_DEG);
            for ring in &zone.rings {
                let mut previous = to_xy(ring[0]);
                for &point in ring.iter().skip(1).chain(std::iter::once(&ring[0])) {
                    let next = to_xy(point);
                    let d = distance_to_segment(previous, next);
                    if d <= radius_m && best.is_none_or(|(_, b)| d < b) {
                        best = Some((zone.id.as_str(), d));
                    }
                    previous = next;
                }
            }
        }
        best
    }
}

/// Distance from the origin to the segment a–b (metres, flat).
fn distance_to_segment(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 { 0.0 } else { (-(a.0 * dx + a.1 * dy) / len2).clamp(0.0, 1.0) };
    let (x, y) = (a.0 + t * dx, a.1 + t * dy);
    (x * x + y * y).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_distance() {
        assert!((distance_to_segment((-1.0, 2.0), (1.0, 2.0)) - 2.0).abs() < 1e-9);
        assert!((distance_to_segment((3.0, 4.0), (6.0, 8.0)) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn zones_near_and_far() {
        let mut geo = geo_index::GeoIndex::new(geo_index::Resolution::Nine);
        let zones = r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"id":"z","kind":"township"},
            "geometry":{"type":"Polygon","coordinates":[[[121.0,23.0],[121.01,23.0],[121.01,23.01],[121.0,23.01],[121.0,23.0]]]}}]}"#;
        geo.load_zones(zones, geo_index::LoadPolicy::StopOnFirst).unwrap();
        let near = ZoneProximity::from_zones(geo.zones());
        // 0.01° of latitude south of the zone: about 1.1 km.
        let (id, d) = near.nearest_within(22.99, 121.005, 5000.0).unwrap();
        assert_eq!(id, "z");
        assert!((d - 1113.2).abs() < 5.0, "{d}");
        assert!(near.nearest_within(22.99, 121.005, 1000.0).is_none());
        assert!(near.nearest_within(24.0, 121.0, 5000.0).is_none());
    }
}
