//! CAP area geometry: `polygon` and `circle`, with the spec's rules that the XSD leaves to plain `xs:string`.
//!
//! CAP 1.2 §3.2.4: a polygon is whitespace-separated WGS 84 `lat,lon` pairs, at least 4, first equal to last;
//! a circle is `lat,lon radius` with the radius in kilometres. Coordinates are kept as `f64` and written with Rust's
//! shortest round-tripping decimal form, so what we write reads back to the same numbers.

use std::fmt;

/// Why a polygon or circle is not valid CAP.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeometryError {
    /// CAP needs at least 4 pairs (a triangle plus the closing point).
    #[error("polygon has {0} coordinate pairs; CAP requires at least 4 (first equal to last)")]
    TooFewPoints(usize),
    /// Readers may not guess the closing edge: the spec requires the first pair to be repeated.
    #[error("polygon is not closed: first pair {first} differs from last pair {last}")]
    NotClosed { first: String, last: String },
    /// Latitude outside -90..=90 or longitude outside -180..=180 (or not a finite number).
    #[error("coordinate {lat},{lon} is outside WGS 84 range (lat -90..90, lon -180..180)")]
    OutOfRange { lat: f64, lon: f64 },
    /// A pair that is not two decimal numbers separated by a comma.
    #[error("`{0}` is not a `lat,lon` pair")]
    BadPair(String),
    /// A circle that is not `lat,lon radius` with a finite radius >= 0.
    #[error("`{0}` is not a CAP circle (`lat,lon radius_km`)")]
    BadCircle(String),
}

/// One WGS 84 point, latitude first as CAP writes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Degrees north, -90..=90.
    pub lat: f64,
    /// Degrees east, -180..=180.
    pub lon: f64,
}

impl Point {
    fn checked(lat: f64, lon: f64) -> Result<Self, GeometryError> {
        // `contains` is false for NaN, so NaN and infinities fail here too.
        if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) {
            Ok(Point { lat, lon })
        } else {
            Err(GeometryError::OutOfRange { lat, lon })
        }
    }

    fn parse(pair: &str) -> Result<Self, GeometryError> {
        let bad = || GeometryError::BadPair(pair.to_string());
        let (lat, lon) = pair.split_once(',').ok_or_else(bad)?;
        let lat = parse_decimal(lat).ok_or_else(bad)?;
        let lon = parse_decimal(lon).ok_or_else(bad)?;
        Point::checked(lat, lon)
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `{}` on f64 never uses exponent notation and round-trips exactly.
        write!(f, "{},{}", self.lat, self.lon)
    }
}

/// A plain decimal as CAP uses it: `-12.5`, `121`, `+0.25`. Rust's `f64::from_str` would also take `inf`, `NaN`
/// and `1e5`, which are not what the spec means, so the characters are checked first.
fn parse_decimal(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let mut dots = 0;
    let ok = !body.is_empty()
        && body.chars().all(|c| {
            if c == '.' {
                dots += 1;
            }
            c.is_ascii_digit() || c == '.'
        })
        && dots <= 1
        && body != ".";
    if ok {
        s.parse().ok()
    } else {
        None
    }
}

/// A closed ring of at least 4 points. Constructed only through checks, so every value can be written as valid CAP.
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon(Vec<Point>);

impl Polygon {
    /// Builds a polygon from `(lat, lon)` pairs, closing the ring if the last point is not the first (geo-index and
    /// GeoJSON producers differ on that). Needs at least 3 distinct corners.
    pub fn from_ring(points: impl IntoIterator<Item = (f64, f64)>) -> Result<Self, GeometryError> {
        let mut ring = points.into_iter().map(|(lat, lon)| Point::checked(lat, lon)).collect::<Result<Vec<_>, _>>()?;
        if let (Some(first), Some(last)) = (ring.first().copied(), ring.last().copied()) {
            if first != last {
                ring.push(first);
            }
        }
        Self::closed(ring)
    }

    /// Reads a CAP `polygon` string strictly: it must already be closed (CAP §3.2.4).
    pub fn parse(text: &str) -> Result<Self, GeometryError> {
        let ring = text.split_whitespace().map(Point::parse).collect::<Result<Vec<_>, _>>()?;
        Self::closed(ring)
    }

    fn closed(ring: Vec<Point>) -> Result<Self, GeometryError> {
        if ring.len() < 4 {
            return Err(GeometryError::TooFewPoints(ring.len()));
        }
        let (first, last) = (ring[0], ring[ring.len() - 1]);
        if first != last {
            return Err(GeometryError::NotClosed { first: first.to_string(), last: last.to_string() });
        }
        Ok(Polygon(ring))
    }

    /// The ring, first point repeated at the end.
    pub fn points(&self) -> &[Point] {
        &self.0
    }
}

impl fmt::Display for Polygon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A CAP circle: centre and radius in kilometres.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Circle {
    /// Centre of the circle.
    pub center: Point,
    /// Radius in kilometres (CAP's unit), finite and >= 0.
    pub radius_km: f64,
}

impl Circle {
    /// Checks the ranges once, so the writer can trust every `Circle`.
    pub fn new(lat: f64, lon: f64, radius_km: f64) -> Result<Self, GeometryError> {
        let center = Point::checked(lat, lon)?;
        if !(radius_km.is_finite() && radius_km >= 0.0) {
            return Err(GeometryError::BadCircle(format!("{lat},{lon} {radius_km}")));
        }
        Ok(Circle { center, radius_km })
    }

    /// Reads `lat,lon radius`.
    pub fn parse(text: &str) -> Result<Self, GeometryError> {
        let bad = || GeometryError::BadCircle(text.to_string());
        let mut parts = text.split_whitespace();
        let (Some(centre), Some(radius), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let center = Point::parse(centre)?;
        let radius_km = parse_decimal(radius).ok_or_else(bad)?;
        Circle::new(center.lat, center.lon, radius_km)
    }
}

impl fmt::Display for Circle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.center, self.radius_km)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_ring_closes_and_keeps_closed() {
        let open = Polygon::from_ring([(23.0, 120.0), (23.0, 121.0), (24.0, 121.0)]).unwrap();
        assert_eq!(open.to_string(), "23,120 23,121 24,121 23,120");
        let closed = Polygon::from_ring([(23.0, 120.0), (23.0, 121.0), (24.0, 121.0), (23.0, 120.0)]).unwrap();
        assert_eq!(open, closed);
    }

    #[test]
    fn parse_requires_closure_and_four_pairs() {
        assert!(Polygon::parse("23.5,120.1 23.5,121 24,121 23.5,120.1").is_ok());
        assert!(matches!(Polygon::parse("23.5,120.1 23.5,121 24,121 24,120"), Err(GeometryError::NotClosed { .. })));
        assert_eq!(Polygon::parse("23,120 23,121 23,120"), Err(GeometryError::TooFewPoints(3)));
        assert_eq!(Polygon::parse(""), Err(GeometryError::TooFewPoints(0)));
        assert!(matches!(Polygon::from_ring([(23.0, 120.0), (23.0, 121.0)]), Err(GeometryError::TooFewPoints(3))));
    }

    #[test]
    fn parse_rejects_bad_coordinates() {
        assert!(matches!(Polygon::parse("91,120 23,121 24,121 91,120"), Err(GeometryError::OutOfRange { .. })));
        assert!(matches!(Polygon::parse("23,181 23,121 24,121 23,181"), Err(GeometryError::OutOfRange { .. })));
        for bad in ["23;120 1,2 3,4 23;120", "NaN,1 1,2 3,4 NaN,1", "1e1,1 1,2 3,4 1e1,1", "23,120,5 1,2 3,4 23,120,5"]
        {
            assert!(matches!(Polygon::parse(bad), Err(GeometryError::BadPair(_))), "{bad}");
        }
        assert!(Polygon::from_ring([(f64::NAN, 1.0), (1.0, 2.0), (3.0, 4.0)]).is_err());
    }

    #[test]
    fn circles() {
        let c = Circle::parse("23.7,120.9 5.5").unwrap();
        assert_eq!(c.to_string(), "23.7,120.9 5.5");
        assert!(Circle::parse("23.7,120.9").is_err());
        assert!(Circle::parse("23.7,120.9 -1").is_err());
        assert!(Circle::parse("23.7,120.9 1 2").is_err());
        assert!(Circle::new(0.0, 0.0, f64::INFINITY).is_err());
    }
}
