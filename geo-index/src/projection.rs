//! A local metric projection (equirectangular around a reference point) for buffering, areas and distances.
//!
//! Why not geodesic everywhere: buffering a road by 30 m and measuring overshoot in km² need planar geometry, and
//! our areas are at most a few hundred km across. Around a reference latitude the metres-per-degree factors below
//! (WGS84 series) are exact at the reference and drift by under 0.5 % over ±50 km of latitude in Taiwan, which is
//! far below the H3 cell size that bounds every figure we report.

use geo::{Coord, LineString, MapCoords, MultiPolygon};

/// Converts between lon/lat degrees (`x` = lon, `y` = lat, as in GeoJSON and `geo`) and metres east/north of a
/// reference point.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalProjection {
    /// Reference longitude (degrees): x = 0 there.
    lon0: f64,
    /// Reference latitude (degrees): y = 0 there.
    lat0: f64,
    /// Metres per degree of longitude at the reference latitude.
    kx: f64,
    /// Metres per degree of latitude at the reference latitude.
    ky: f64,
}

impl LocalProjection {
    pub(crate) fn around(lat0: f64, lon0: f64) -> Self {
        let phi = lat0.to_radians();
        let ky = 111_132.954 - 559.822 * (2.0 * phi).cos() + 1.175 * (4.0 * phi).cos();
        let kx = 111_412.84 * phi.cos() - 93.5 * (3.0 * phi).cos();
        Self { lon0, lat0, kx, ky }
    }

    /// Projection centred on the middle of a geometry's bounding box.
    pub(crate) fn for_multipolygon(mp: &MultiPolygon<f64>) -> Self {
        use geo::BoundingRect;
        match mp.bounding_rect() {
            Some(r) => Self::around(r.center().y, r.center().x),
            None => Self::around(0.0, 0.0),
        }
    }

    pub(crate) fn to_local(self, c: Coord<f64>) -> Coord<f64> {
        Coord { x: (c.x - self.lon0) * self.kx, y: (c.y - self.lat0) * self.ky }
    }

    pub(crate) fn to_geo(self, c: Coord<f64>) -> Coord<f64> {
        Coord { x: c.x / self.kx + self.lon0, y: c.y / self.ky + self.lat0 }
    }

    pub(crate) fn mp_to_local(&self, mp: &MultiPolygon<f64>) -> MultiPolygon<f64> {
        mp.map_coords(|c| self.to_local(c))
    }

    pub(crate) fn mp_to_geo(&self, mp: &MultiPolygon<f64>) -> MultiPolygon<f64> {
        mp.map_coords(|c| self.to_geo(c))
    }

    pub(crate) fn ls_to_local(&self, ls: &LineString<f64>) -> LineString<f64> {
        ls.map_coords(|c| self.to_local(c))
    }
}

/// Area of a lon/lat multipolygon in km², through a projection centred on it.
pub(crate) fn area_km2(mp: &MultiPolygon<f64>) -> f64 {
    use geo::Area;
    let proj = LocalProjection::for_multipolygon(mp);
    proj.mp_to_local(mp).unsigned_area() / 1e6
}

/// Great-circle distance in metres (haversine, mean Earth radius): for sensor-to-sensor distances.
pub(crate) fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    const R: f64 = 6_371_008.8;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * R * a.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_metres_match_haversine_nearby() {
        let p = LocalProjection::around(23.5, 120.9);
        let a = p.to_local(Coord { x: 120.9, y: 23.5 });
        let b = p.to_local(Coord { x: 120.95, y: 23.53 });
        let planar = ((b.x - a.x).powi(2) + (b.y - a.y).powi(2)).sqrt();
        let sphere = haversine_m(23.5, 120.9, 23.53, 120.95);
        assert!((planar - sphere).abs() / sphere < 0.005, "{planar} vs {sphere}");
        let back = p.to_geo(b);
        assert!((back.x - 120.95).abs() < 1e-12 && (back.y - 23.53).abs() < 1e-12);
    }
}
