//! Warning Area Coordinates: the alert's own area, sent beside the cell list so that a geofence-capable phone
//! checks its position and stays silent outside (device-based geofencing, the way US WEA meets its 0.1-mile
//! overshoot rule). Carried in SBc-AP IE 46 Warning-Area-Coordinates of the Write-Replace-Warning-Request (TS 29.168
//! Release 15, `OCTET STRING (SIZE (1..1024))`, criticality ignore: an MME or eNB that does not know it passes the
//! warning on without it and phones show it as today), and from the eNB to phones in SIB12 segments.
//!
//! # Layout (ATIS-0700041 §5.2, as Android reads it)
//! A sequence of TLVs, each starting on an octet boundary:
//!
//! ```text
//! tag (4 bits) · length (10 bits: octets of the whole TLV, these 2 header octets included) · 2 spare bits
//!   tag 1  maximum wait time   value: 8 bits, seconds the phone may wait for a position (255 = phone default)
//!   tag 2  polygon             value: n × (latitude 22 bits · longitude 22 bits), zero bits to the octet
//!   tag 3  circle              value: centre (22 + 22 bits) · radius (20 bits, in 1/64 km)
//! latitude  code = (lat + 90) / 180 × 2^22     phone reads  code × 180 / 2^22 − 90
//! longitude code = (lon + 180) / 360 × 2^22    phone reads  code × 360 / 2^22 − 180
//! ```
//! A polygon lists its vertices once (no closing vertex: the phone joins the last to the first); a phone is
//! inside when it is inside any polygon or circle (winding number ≠ 0, edges included).
//!
//! # What was verified where
//! - **Android** (`packages/modules/CellBroadcastService`, read through its public mirror):
//!   `GsmSmsCbMessage.parseWarningAreaCoordinates` — the TLV header (4-bit type, 10-bit length that counts the
//!   header, 2 skipped bits), the vertex count `(length − 2) × 8 / 44`, the padding skip after a polygon, the 20-bit
//!   radius `× 1/64 km`, and that any parse error makes the phone show the alert without geofencing;
//!   `getLatLng` — the 22-bit grid and its decoding formulas above; `CbGeoUtils` — the tag values 1/2/3 (its
//!   comment cites ATIS-0700041 §5.2.3), the winding-number polygon test with edges counted inside, the circle
//!   test by distance; `CellBroadcastHandler` — maximum wait time 255 means the phone's default, a phone without a
//!   position within the wait shows the alert (that is the fallback the citizen app copies).
//! - **TS 29.168 V15.1.0 ASN.1** (`SBC-AP-IEs`, `SBC-AP-PDU-Contents`, `SBC-AP-Constants`, vendored with the
//!   tests): `Warning-Area-Coordinates ::= OCTET STRING (SIZE (1..1024))`, id 46, criticality ignore, an extension
//!   of Write-Replace-Warning-Request. The tests decode whole PDUs with pycrate compiled from that ASN.1.
//! - **Not verified** (texts not reachable from this machine): ATIS-0700041 itself and TS 23.041 / TS 36.331 on how
//!   the eNB segments the IE into SIB12. Android's parser expects a 2-octet little-endian length *before* the TLVs:
//!   that is the framing its modem uses when it hands the reassembled segments up, not part of the IE, so the IE
//!   carries the TLVs alone. ATIS writes the coordinate codes with `floor`; we round to the nearest grid point (any
//!   22-bit code is valid, and it halves the displacement); outward margins absorb the rest (see below).
//!
//! # Never smaller than the area
//! Rounding moves a vertex by at most [`MAX_QUANTISATION_M`]. Callers that must not shrink an area (geo-index's
//! outward outline) keep their polygon at least that far outside the area, so the encoded polygon still holds all
//! of it. A circle's radius is rounded *up*, plus the centre's own rounding, so the encoded circle holds the given
//! one. Nothing is ever dropped or cut to fit: too many octets is an error ([`CbsError::WarningAreaTooLarge`]).

use super::aper::BitWriter;
use super::CbsError;

/// Most octets of the IE (TS 29.168: `SIZE (1..1024)`).
pub const MAX_OCTETS: usize = 1024;
/// Most octets of one TLV: its length has 10 bits.
pub const MAX_TLV_OCTETS: usize = 1023;
/// Most vertices in one polygon TLV: 2 + ⌈44 n / 8⌉ ≤ 1023.
pub const MAX_POLYGON_VERTICES: usize = 185;
/// Grid steps per axis (22 bits).
pub const GRID: u32 = 1 << 22;
/// One radius unit: 1/64 km.
pub const RADIUS_UNIT_M: f64 = 1000.0 / 64.0;
/// Largest radius the 20-bit field holds, metres.
pub const MAX_RADIUS_M: f64 = ((1u32 << 20) - 1) as f64 * RADIUS_UNIT_M;
/// Farthest rounding to the nearest grid point moves a point, metres: half a latitude step (4.77 m) and half a
/// longitude step (≤ 9.55 m, at the equator) combined, with a margin for the ellipsoid.
pub const MAX_QUANTISATION_M: f64 = 5.5;
/// The maximum-wait-time value that means "the phone's default" (Android `MAXIMUM_WAIT_TIME_NOT_SET`).
pub const WAIT_NOT_SET: u8 = 255;

const TAG_MAXIMUM_WAIT_TIME: u8 = 1;
const TAG_POLYGON: u8 = 2;
const TAG_CIRCLE: u8 = 3;

/// A point in degrees (WGS84).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

/// One shape a phone tests its position against.
#[derive(Debug, Clone, PartialEq)]
pub enum Geofence {
    /// 3..=185 vertices, each once (a closing vertex equal to the first is dropped when encoding).
    Polygon(Vec<LatLon>),
    /// A centre and a radius in metres (up to [`MAX_RADIUS_M`]).
    Circle { centre: LatLon, radius_m: f64 },
}

/// The IE's content: the shapes and how long a phone may wait for its position.
#[derive(Debug, Clone, PartialEq)]
pub struct WarningAreaCoordinates {
    /// Seconds a phone may wait for a position before deciding (0..=254); `None` = the phone's default
    /// (the TLV is left out; a phone reads that as 255).
    pub max_wait_s: Option<u8>,
    /// At least one shape; a phone inside any of them shows the alert.
    pub areas: Vec<Geofence>,
}

/// Octets a polygon TLV of `n` vertices takes.
pub fn polygon_octets(n: usize) -> usize {
    2 + (44 * n).div_ceil(8)
}

/// Octets of an IE with polygons of these vertex counts, `circles` circles and, when `max_wait`, the wait TLV: what
/// an outline must fit under [`MAX_OCTETS`] (and each polygon under [`MAX_POLYGON_VERTICES`]).
pub fn encoded_len(polygon_vertices: &[usize], circles: usize, max_wait: bool) -> usize {
    polygon_vertices.iter().map(|&n| polygon_octets(n)).sum::<usize>() + circles * 10 + if max_wait { 3 } else { 0 }
}

/// Whether an outline of polygons with these vertex counts (plus the wait TLV when `max_wait`) can be encoded.
pub fn fits(polygon_vertices: &[usize], max_wait: bool) -> bool {
    !polygon_vertices.is_empty()
        && polygon_vertices.iter().all(|&n| (3..=MAX_POLYGON_VERTICES).contains(&n))
        && encoded_len(polygon_vertices, 0, max_wait) <= MAX_OCTETS
}

/// Grid codes of a point, rounded to the nearest grid point.
pub fn grid_codes(p: LatLon) -> Result<(u32, u32), CbsError> {
    if !(p.lat.is_finite() && p.lon.is_finite() && (-90.0..=90.0).contains(&p.lat) && (-180.0..=180.0).contains(&p.lon))
    {
        return Err(CbsError::WarningAreaCoordinate(format!("({}, {})", p.lat, p.lon)));
    }
    let g = f64::from(GRID);
    // Latitude +90 would be code 2^22: the pole itself is one step south of it on this grid.
    let lat = (((p.lat + 90.0) / 180.0 * g).round() as u32).min(GRID - 1);
    // Longitude wraps: +180 is −180.
    let lon = (((p.lon + 180.0) / 360.0 * g).round() as u32) % GRID;
    Ok((lat, lon))
}

/// The point a phone reads for grid codes (Android's `getLatLng`).
pub fn grid_point(lat_code: u32, lon_code: u32) -> LatLon {
    let g = f64::from(GRID);
    LatLon { lat: f64::from(lat_code) * 180.0 / g - 90.0, lon: f64::from(lon_code) * 360.0 / g - 180.0 }
}

/// Metres between two nearby points (equirectangular; used only to size a circle's rounding margin, where an
/// over-estimate is harmless).
fn metres_between(a: LatLon, b: LatLon) -> f64 {
    const M_PER_DEG: f64 = 111_320.0;
    let dy = (a.lat - b.lat) * M_PER_DEG;
    let mut dlon = (a.lon - b.lon).abs();
    if dlon > 180.0 {
        dlon = 360.0 - dlon;
    }
    let dx = dlon * M_PER_DEG * ((a.lat + b.lat) / 2.0).to_radians().cos();
    (dx * dx + dy * dy).sqrt()
}

fn header(w: &mut BitWriter, tag: u8, octets: usize) {
    w.bits(u64::from(tag), 4);
    w.bits(octets as u64, 10);
    w.bits(0, 2);
}

impl WarningAreaCoordinates {
    /// The IE's octets. Errors: no shape, a polygon with fewer than 3 distinct grid points or more than
    /// [`MAX_POLYGON_VERTICES`], a coordinate off the globe, a radius ≤ 0 or too large, a wait of 255 (reserved),
    /// more than [`MAX_OCTETS`] in all. Never truncates.
    pub fn encode(&self) -> Result<Vec<u8>, CbsError> {
        if self.areas.is_empty() {
            return Err(CbsError::WarningAreaEmpty);
        }
        let mut w = BitWriter::new();
        if let Some(wait) = self.max_wait_s {
            if wait == WAIT_NOT_SET {
                return Err(CbsError::MaximumWaitTime(wait));
            }
            header(&mut w, TAG_MAXIMUM_WAIT_TIME, 3);
            w.bits(u64::from(wait), 8);
        }
        for (index, area) in self.areas.iter().enumerate() {
            match area {
                Geofence::Polygon(vertices) => {
                    let mut codes: Vec<(u32, u32)> = Vec::with_capacity(vertices.len());
                    for v in vertices {
                        let c = grid_codes(*v)?;
                        // Two vertices on one grid point are one vertex to a phone; sending both costs 5.5 octets.
                        if codes.last() != Some(&c) {
                            codes.push(c);
                        }
                    }
                    while codes.len() > 1 && codes.first() == codes.last() {
                        codes.pop();
                    }
                    if !(3..=MAX_POLYGON_VERTICES).contains(&codes.len()) {
                        return Err(CbsError::WarningAreaPolygon {
                            index,
                            vertices: codes.len(),
                            limit: MAX_POLYGON_VERTICES,
                        });
                    }
                    w.align();
                    header(&mut w, TAG_POLYGON, polygon_octets(codes.len()));
                    for (lat, lon) in codes {
                        w.bits(u64::from(lat), 22);
                        w.bits(u64::from(lon), 22);
                    }
                }
                Geofence::Circle { centre, radius_m } => {
                    let (lat, lon) = grid_codes(*centre)?;
                    if !(radius_m.is_finite() && *radius_m > 0.0) {
                        return Err(CbsError::WarningAreaRadius(radius_m.to_string()));
                    }
                    // Round up, and grow by the centre's rounding: the circle a phone reads holds the one given.
                    let shift = metres_between(*centre, grid_point(lat, lon));
                    let units = ((radius_m + shift) / RADIUS_UNIT_M).ceil();
                    if units >= f64::from(1u32 << 20) {
                        return Err(CbsError::WarningAreaRadius(radius_m.to_string()));
                    }
                    w.align();
                    header(&mut w, TAG_CIRCLE, 10);
                    w.bits(u64::from(lat), 22);
                    w.bits(u64::from(lon), 22);
                    w.bits(units as u64, 20);
                }
            }
        }
        let out = w.finish();
        if out.len() > MAX_OCTETS {
            return Err(CbsError::WarningAreaTooLarge { octets: out.len(), limit: MAX_OCTETS });
        }
        Ok(out)
    }

    /// What a phone reads from the IE's octets, the way Android's parser reads them (tags 1/2/3; any other tag or a
    /// length running past the end is an error, which makes a phone show the alert without geofencing). The
    /// targeting report measures the polygons a phone will test, so it decodes what was encoded.
    pub fn decode(octets: &[u8]) -> Result<WarningAreaCoordinates, CbsError> {
        let bad = |why: String| CbsError::Malformed(format!("warning area coordinates: {why}"));
        let mut out = WarningAreaCoordinates { max_wait_s: None, areas: Vec::new() };
        let mut at = 0usize;
        while at < octets.len() {
            let (Some(&b0), Some(&b1)) = (octets.get(at), octets.get(at + 1)) else {
                return Err(bad(format!("a TLV header at octet {at} runs past the end")));
            };
            let tag = b0 >> 4;
            let len = (usize::from(b0 & 0x0F) << 6) | usize::from(b1 >> 2);
            let body = octets
                .get(at + 2..at + len)
                .filter(|_| len >= 2)
                .ok_or_else(|| bad(format!("TLV at octet {at} says {len} octets; {} are left", octets.len() - at)))?;
            let mut r = BitReader { bytes: body, bit: 0 };
            match tag {
                TAG_MAXIMUM_WAIT_TIME => {
                    let v = r.read(8).ok_or_else(|| bad("maximum wait time has no value".into()))?;
                    out.max_wait_s = (v as u8 != WAIT_NOT_SET).then_some(v as u8);
                }
                TAG_POLYGON => {
                    let n = (len - 2) * 8 / 44;
                    let mut vertices = Vec::with_capacity(n);
                    for _ in 0..n {
                        let (Some(lat), Some(lon)) = (r.read(22), r.read(22)) else {
                            return Err(bad("polygon vertex runs past its TLV".into()));
                        };
                        vertices.push(grid_point(lat, lon));
                    }
                    out.areas.push(Geofence::Polygon(vertices));
                }
                TAG_CIRCLE => {
                    let (Some(lat), Some(lon), Some(radius)) = (r.read(22), r.read(22), r.read(20)) else {
                        return Err(bad("circle runs past its TLV".into()));
                    };
                    out.areas.push(Geofence::Circle {
                        centre: grid_point(lat, lon),
                        radius_m: f64::from(radius) * RADIUS_UNIT_M,
                    });
                }
                other => return Err(bad(format!("unknown tag {other} at octet {at}"))),
            }
            at += len;
        }
        Ok(out)
    }
}

/// Most significant bit first, within one TLV's value.
struct BitReader<'a> {
    bytes: &'a [u8],
    bit: usize,
}

impl BitReader<'_> {
    fn read(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.bytes.get(self.bit / 8)?;
            v = v << 1 | u32::from(byte >> (7 - self.bit % 8) & 1);
            self.bit += 1;
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lat: f64, lon: f64) -> LatLon {
        LatLon { lat, lon }
    }

    #[test]
    fn known_bytes_of_a_small_triangle_and_wait() {
        // Hand-computed from the layout: wait 30 s, then a triangle on exact grid points.
        let pt = |lat_code: u32, lon_code: u32| grid_point(lat_code, lon_code);
        let tri = vec![pt(1, 2), pt(3, 4), pt(GRID - 1, GRID - 1)];
        let wac = WarningAreaCoordinates { max_wait_s: Some(30), areas: vec![Geofence::Polygon(tri)] };
        let bytes = wac.encode().unwrap();
        // Wait TLV: tag 1, length 3 → 0001 0000000011 00 = 0x10 0x0C, value 30.
        assert_eq!(&bytes[..3], &[0x10, 0x0C, 30]);
        // Polygon TLV: tag 2, length 2 + ⌈132/8⌉ = 19 → 0010 0000010011 00 = 0x20 0x4C.
        assert_eq!(&bytes[3..5], &[0x20, 0x4C]);
        assert_eq!(bytes.len(), 3 + 19);
        // First vertex: lat code 1 (22 bits) then lon code 2 (22 bits): 0x00 0x00 0x04 0x00 0x00 0x2…
        assert_eq!(&bytes[5..10], &[0x00, 0x00, 0x04, 0x00, 0x00]);
        assert_eq!(bytes[10] >> 4, 0x2);
    }

    #[test]
    fn circles_round_up_and_refuse_nonsense() {
        let wac = |r| WarningAreaCoordinates {
            max_wait_s: None,
            areas: vec![Geofence::Circle { centre: p(23.5, 120.9), radius_m: r }],
        };
        let bytes = wac(1000.0).encode().unwrap();
        assert_eq!(bytes.len(), 10);
        let back = WarningAreaCoordinates::decode(&bytes).unwrap();
        let Geofence::Circle { radius_m, .. } = back.areas[0] else { panic!("a circle") };
        assert!((1000.0..1000.0 + RADIUS_UNIT_M + 6.0).contains(&radius_m), "{radius_m}");
        assert!(matches!(wac(0.0).encode(), Err(CbsError::WarningAreaRadius(_))));
        assert!(matches!(wac(f64::NAN).encode(), Err(CbsError::WarningAreaRadius(_))));
        assert!(matches!(wac(MAX_RADIUS_M * 2.0).encode(), Err(CbsError::WarningAreaRadius(_))));
    }

    #[test]
    fn bad_input_is_named() {
        let none = WarningAreaCoordinates { max_wait_s: None, areas: vec![] };
        assert_eq!(none.encode(), Err(CbsError::WarningAreaEmpty));
        let two =
            WarningAreaCoordinates { max_wait_s: None, areas: vec![Geofence::Polygon(vec![p(1.0, 1.0), p(2.0, 2.0)])] };
        assert!(matches!(two.encode(), Err(CbsError::WarningAreaPolygon { vertices: 2, .. })));
        let off = WarningAreaCoordinates {
            max_wait_s: None,
            areas: vec![Geofence::Polygon(vec![p(91.0, 1.0), p(2.0, 2.0), p(3.0, 1.0)])],
        };
        assert!(matches!(off.encode(), Err(CbsError::WarningAreaCoordinate(_))));
        let wait = WarningAreaCoordinates {
            max_wait_s: Some(255),
            areas: vec![Geofence::Circle { centre: p(0.0, 0.0), radius_m: 1.0 }],
        };
        assert_eq!(wait.encode(), Err(CbsError::MaximumWaitTime(255)));
        assert!(WarningAreaCoordinates::decode(&[0x40, 0x0C, 0]).is_err(), "tag 4 is unknown");
        assert!(WarningAreaCoordinates::decode(&[0x20, 0x4C, 0]).is_err(), "length past the end");
        assert!(WarningAreaCoordinates::decode(&[0x20]).is_err(), "half a header");
    }

    #[test]
    fn sizes() {
        assert_eq!(polygon_octets(MAX_POLYGON_VERTICES), 1020);
        assert!(polygon_octets(MAX_POLYGON_VERTICES + 1) > MAX_TLV_OCTETS);
        assert!(fits(&[185], true));
        assert!(!fits(&[186], false));
        assert!(!fits(&[100, 100], false), "1104 octets");
        assert!(fits(&[90, 90], true));
        assert!(!fits(&[], false));
    }
}
