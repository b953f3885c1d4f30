//! A geofence-capable phone, written for tests from how Android reads and applies Warning Area Coordinates
//! (`GsmSmsCbMessage.parseWarningAreaCoordinates`, `CbGeoUtils.Polygon.contains`, `CbGeoUtils.Circle.contains`,
//! `CellBroadcastHandler.handleBroadcastSms`), independently of our encoder: it never calls
//! `encoders::cell_broadcast::warning_area`, so a mistake there cannot cancel out here.
//!
//! - [`read_coordinates`]: the octets → wait time and shapes, bit by bit as Android's `BitStreamReader` does.
//! - [`Shape::contains`]: Android's winding-number test (edges inside, coordinates relative to the westernmost
//!   vertex, scaled by 1000, `EPS` 1e-7) and its circle test (distance ≤ radius).
//! - [`Phone::alarms`]: what the phone does with a broadcast: shows it when the coordinates cannot be read, when
//!   its position is unknown (no fix within the wait), when it is inside a shape, or within its position's accuracy
//!   of one; stays silent otherwise.

/// One shape as Android holds it: degrees and metres.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Vertices (lat, lon), each once.
    Polygon(Vec<(f64, f64)>),
    /// Centre (lat, lon) and radius in metres.
    Circle((f64, f64), f64),
}

/// What a phone reads: the maximum wait time (255 = its default) and the shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Coordinates {
    pub max_wait_s: u8,
    pub shapes: Vec<Shape>,
}

/// Android's `BitStreamReader`: most significant bit first; `skip` moves to the next octet when inside one.
struct Bits<'a> {
    data: &'a [u8],
    offset: usize,
    remained: u32,
}

impl Bits<'_> {
    fn read(&mut self, mut count: u32) -> Result<u32, String> {
        let mut val: u32 = 0;
        while count > 0 {
            let byte = u32::from(*self.data.get(self.offset).ok_or("read past the end")?);
            if count >= self.remained {
                val = (val << self.remained) | (byte & ((1 << self.remained) - 1));
                count -= self.remained;
                self.remained = 8;
                self.offset += 1;
            } else {
                val = (val << count) | ((byte & ((1 << self.remained) - 1)) >> (self.remained - count));
                self.remained -= count;
                count = 0;
            }
        }
        Ok(val)
    }

    fn skip(&mut self) {
        if self.remained < 8 {
            self.remained = 8;
            self.offset += 1;
        }
    }
}

fn lat_lng(bits: &mut Bits<'_>) -> Result<(f64, f64), String> {
    let lat = bits.read(22)?;
    let lng = bits.read(22)?;
    Ok((f64::from(lat) * 180.0 / f64::from(1u32 << 22) - 90.0, f64::from(lng) * 360.0 / f64::from(1u32 << 22) - 180.0))
}

/// The IE's octets as Android reads them (after its modem's 2-octet length, which is not part of the IE).
pub fn read_coordinates(octets: &[u8]) -> Result<Coordinates, String> {
    let mut bits = Bits { data: octets, offset: 0, remained: 8 };
    let mut out = Coordinates { max_wait_s: 255, shapes: Vec::new() };
    let mut remained_bytes = octets.len() as i64;
    while remained_bytes > 0 {
        let kind = bits.read(4)?;
        let length = bits.read(10)?;
        remained_bytes -= i64::from(length);
        bits.skip();
        match kind {
            1 => out.max_wait_s = bits.read(8)? as u8,
            2 => {
                let n = (length as usize).checked_sub(2).ok_or("polygon length under 2")? * 8 / 44;
                let mut vertices = Vec::with_capacity(n);
                for _ in 0..n {
                    vertices.push(lat_lng(&mut bits)?);
                }
                bits.skip();
                out.shapes.push(Shape::Polygon(vertices));
            }
            3 => {
                let centre = lat_lng(&mut bits)?;
                let radius = f64::from(bits.read(20)?) / 64.0 * 1000.0;
                out.shapes.push(Shape::Circle(centre, radius));
            }
            other => return Err(format!("Unsupported geoType = {other}")),
        }
    }
    // Not Android: it stops when its count runs out. Our tests also want every octet accounted for.
    if bits.offset != octets.len() || bits.remained != 8 {
        return Err(format!("{} of {} octets read", bits.offset, octets.len()));
    }
    Ok(out)
}

const EPS: f64 = 1e-7;
const SCALE: f64 = 1000.0;

fn sign(v: f64) -> i32 {
    if v > EPS {
        1
    } else if v < -EPS {
        -1
    } else {
        0
    }
}

/// Great-circle metres (Android's `LatLng.distance`: haversine on a 6371 km sphere).
pub fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    const R: f64 = 6_371_000.0;
    let (la1, la2) = (a.0.to_radians(), b.0.to_radians());
    let dlat = la2 - la1;
    let dlng = (b.1 - a.1).to_radians();
    let x = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlng / 2.0).sin().powi(2);
    2.0 * R * x.sqrt().atan2((1.0 - x).sqrt())
}

impl Shape {
    /// Android's test: winding number ≠ 0 or on an edge (polygon); distance ≤ radius (circle).
    pub fn contains(&self, p: (f64, f64)) -> bool {
        match self {
            Shape::Circle(c, r) => distance_m(*c, p) <= *r,
            Shape::Polygon(v) if v.is_empty() => false,
            Shape::Polygon(v) => {
                let origin = v.iter().copied().fold(v[0], |o, x| if x.1 < o.1 { x } else { o });
                let scaled = |q: (f64, f64)| ((q.0 - origin.0) * SCALE, (q.1 - origin.1) * SCALE);
                let p = scaled(p);
                let pts: Vec<(f64, f64)> = v.iter().map(|q| scaled(*q)).collect();
                let mut winding = 0;
                for i in 0..pts.len() {
                    let a = pts[i];
                    let b = pts[(i + 1) % pts.len()];
                    let ccw = sign((b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0));
                    if ccw == 0 {
                        if a.0.min(b.0) <= p.0 && p.0 <= a.0.max(b.0) && a.1.min(b.1) <= p.1 && p.1 <= a.1.max(b.1) {
                            return true;
                        }
                    } else if sign(a.1 - p.1) <= 0 {
                        if ccw > 0 && sign(b.1 - p.1) > 0 {
                            winding += 1;
                        }
                    } else if ccw < 0 && sign(b.1 - p.1) <= 0 {
                        winding -= 1;
                    }
                }
                winding != 0
            }
        }
    }

    /// Metres from `p` to the shape's edge (0 inside): for the accuracy margin.
    pub fn distance_m(&self, p: (f64, f64)) -> f64 {
        if self.contains(p) {
            return 0.0;
        }
        match self {
            Shape::Circle(c, r) => (distance_m(*c, p) - r).max(0.0),
            Shape::Polygon(v) => {
                // Planar around p (metres east/north): the margins are tens of metres.
                let k = 111_195.0;
                let local = |q: (f64, f64)| ((q.1 - p.1) * k * p.0.to_radians().cos(), (q.0 - p.0) * k);
                (0..v.len())
                    .map(|i| {
                        let (a, b) = (local(v[i]), local(v[(i + 1) % v.len()]));
                        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
                        let len2 = dx * dx + dy * dy;
                        let t = if len2 > 0.0 { (-(a.0 * dx + a.1 * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
                        ((a.0 + t * dx).powi(2) + (a.1 + t * dy).powi(2)).sqrt()
                    })
                    .fold(f64::INFINITY, f64::min)
            }
        }
    }
}

/// A phone with (or without) a position fix.
#[derive(Debug, Clone, Copy)]
pub struct Phone {
    /// Its fix within the maximum wait time, (lat, lon); `None` when it got none.
    pub position: Option<(f64, f64)>,
    /// Radius of the fix's uncertainty, metres.
    pub accuracy_m: f64,
}

impl Phone {
    /// Does this phone show a broadcast carrying these Warning Area Coordinates (`None`: no IE)?
    pub fn alarms(&self, coordinates: Option<&[u8]>) -> bool {
        let Some(octets) = coordinates else { return true };
        // Android: coordinates it cannot parse are ignored and the alert is shown.
        let Ok(read) = read_coordinates(octets) else { return true };
        if read.shapes.is_empty() {
            return true;
        }
        let Some(p) = self.position else { return true };
        read.shapes.iter().any(|s| s.distance_m(p) <= self.accuracy_m)
    }
}
