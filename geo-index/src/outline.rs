//! CAP 1.2 `<polygon>` outlines of a set of H3 cells, with a vertex budget, that still cover every cell.
//!
//! How:
//! 1. dissolve the cells into their exact outline (h3o `Solvent`); holes are dropped, because a CAP polygon has
//!    none and filling a hole only adds coverage;
//! 2. while a ring has too many vertices, remove *reflex* (inward) vertices, smallest added triangle first: the chord
//!    that replaces them lies outside the ring, so the ring only grows. A removal whose chord would cross another
//!    edge is refused, so the ring stays simple;
//! 3. if that is not enough, take the convex hull (which covers the ring) and cut corners *outwards*: an edge is
//!    dropped by extending its two neighbouring edges until they meet, smallest added triangle first;
//! 4. push every vertex outwards by about 0.2 m and print 6 decimals (≈0.1 m), so that rounding never moves the
//!    outline inside a cell vertex it passes through.
//!
//! Containment is planar in lon/lat, which is how CAP receivers read a polygon (straight edges between vertices).
//! The cost of a small budget is overshoot; `targeting.rs` measures it for the cells, not for the outline.

use crate::cover::CellCover;
use geo::{ConvexHull, Coord, LineString, MultiPoint, Point, Polygon, Winding};
use h3o::geom::SolventBuilder;
use std::{cmp::Ordering, collections::BinaryHeap};

/// Outward push before rounding, in degrees (≈0.2 m); larger than the 6-decimal rounding error (≤0.71e-6°).
const OUTWARD_DEG: f64 = 2e-6;

/// See the module doc. `max_vertices` counts lat,lon pairs including the closing one; values below 4 act as 4.
pub(crate) fn cap_polygons(cover: &CellCover, max_vertices: usize) -> Vec<String> {
    outline_rings(cover, max_vertices).iter().map(|ring| format_ring(ring)).collect()
}

/// The simplified, pushed-out rings (lon/lat, open: no repeated closing vertex), one per outer ring.
pub(crate) fn outline_rings(cover: &CellCover, max_vertices: usize) -> Vec<Vec<Coord<f64>>> {
    let budget = max_vertices.max(4) - 1; // distinct vertices; the closing pair repeats the first
    let Ok(outline) = SolventBuilder::new().build().dissolve(cover.cells()) else {
        // Only fails on duplicate or mixed-resolution cells, which a CellCover never holds.
        return Vec::new();
    };
    outline
        .0
        .iter()
        .map(|polygon| {
            let mut ring = polygon.exterior().clone();
            ring.make_ccw_winding();
            let mut coords = ring.0;
            coords.pop(); // open ring
            coords.dedup();
            let ring = simplify_covering(coords, budget);
            push_outwards(&ring, OUTWARD_DEG)
        })
        .collect()
}

fn format_ring(ring: &[Coord<f64>]) -> String {
    let mut out = String::with_capacity((ring.len() + 1) * 22);
    for c in ring.iter().chain(ring.first()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&format!("{:.6},{:.6}", c.y, c.x));
    }
    out
}

/// Parses a CAP polygon string back into a lon/lat polygon (for tests and for checking received alerts).
pub fn parse_cap_polygon(text: &str) -> Option<Polygon<f64>> {
    let coords = text
        .split_whitespace()
        .map(|pair| {
            let (lat, lon) = pair.split_once(',')?;
            Some(Coord { x: lon.parse().ok()?, y: lat.parse().ok()? })
        })
        .collect::<Option<Vec<_>>>()?;
    (coords.len() >= 4 && coords.first() == coords.last()).then(|| Polygon::new(LineString(coords), vec![]))
}

fn cross(o: Coord<f64>, a: Coord<f64>, b: Coord<f64>) -> f64 {
    (a.x - o.x) * (b.y - o.y) - (a.y - o.y) * (b.x - o.x)
}

/// Do segments p1-p2 and q1-q2 intersect (including touching)?
fn segments_intersect(p1: Coord<f64>, p2: Coord<f64>, q1: Coord<f64>, q2: Coord<f64>) -> bool {
    let d1 = cross(q1, q2, p1);
    let d2 = cross(q1, q2, p2);
    let d3 = cross(p1, p2, q1);
    let d4 = cross(p1, p2, q2);
    if ((d1 > 0.0 && d2 < 0.0) || (d1 < 0.0 && d2 > 0.0)) && ((d3 > 0.0 && d4 < 0.0) || (d3 < 0.0 && d4 > 0.0)) {
        return true;
    }
    let on = |a: Coord<f64>, b: Coord<f64>, p: Coord<f64>| {
        p.x >= a.x.min(b.x) && p.x <= a.x.max(b.x) && p.y >= a.y.min(b.y) && p.y <= a.y.max(b.y)
    };
    (d1 == 0.0 && on(q1, q2, p1))
        || (d2 == 0.0 && on(q1, q2, p2))
        || (d3 == 0.0 && on(p1, p2, q1))
        || (d4 == 0.0 && on(p1, p2, q2))
}

/// Heap entry: smallest added area first; `version` drops entries made stale by a neighbour's removal.
#[derive(PartialEq)]
struct Candidate {
    added_area: f64,
    vertex: usize,
    version: u32,
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the smallest area.
        other.added_area.total_cmp(&self.added_area).then_with(|| other.vertex.cmp(&self.vertex))
    }
}

/// Reduces a CCW open ring to at most `budget` (≥3) vertices without losing any covered point.
fn simplify_covering(ring: Vec<Coord<f64>>, budget: usize) -> Vec<Coord<f64>> {
    if ring.len() <= budget {
        return ring;
    }
    let ring = remove_reflex_vertices(ring, budget);
    if ring.len() <= budget {
        return ring;
    }
    let hull = convex_hull(&ring);
    cut_corners_outwards(hull, budget)
}

/// Step 2 of the module doc.
fn remove_reflex_vertices(ring: Vec<Coord<f64>>, budget: usize) -> Vec<Coord<f64>> {
    let n = ring.len();
    let mut prev: Vec<usize> = (0..n).map(|i| (i + n - 1) % n).collect();
    let mut next: Vec<usize> = (0..n).map(|i| (i + 1) % n).collect();
    let mut alive = vec![true; n];
    let mut version = vec![0u32; n];
    let mut live = n;
    let mut heap = BinaryHeap::new();
    // Right turn (negative cross) at a vertex of a CCW ring = reflex; zero = collinear, free to drop.
    let reflex_area = |p: Coord<f64>, v: Coord<f64>, q: Coord<f64>| {
        let c = cross(p, v, q);
        (c <= 0.0).then_some(-c / 2.0)
    };
    for i in 0..n {
        if let Some(a) = reflex_area(ring[prev[i]], ring[i], ring[next[i]]) {
            heap.push(Candidate { added_area: a, vertex: i, version: 0 });
        }
    }
    while live > budget.max(3) {
        let Some(Candidate { vertex: v, version: ver, .. }) = heap.pop() else { break };
        if !alive[v] || version[v] != ver {
            continue;
        }
        let (p, q) = (prev[v], next[v]);
        // The chord p-q must not touch any edge other than the two it replaces and their neighbours at p and q.
        let mut blocked = false;
        let mut a = q;
        while next[a] != p {
            let b = next[a];
            // Edges sharing an endpoint with the chord (q→next[q], prev[p]→p) touch it there by construction.
            let shares_endpoint = a == q || b == p;
            if !shares_endpoint && segments_intersect(ring[p], ring[q], ring[a], ring[b]) {
                blocked = true;
                break;
            }
            a = b;
        }
        if blocked {
            continue;
        }
        alive[v] = false;
        live -= 1;
        next[p] = q;
        prev[q] = p;
        for w in [p, q] {
            version[w] += 1;
            if let Some(area) = reflex_area(ring[prev[w]], ring[w], ring[next[w]]) {
                heap.push(Candidate { added_area: area, vertex: w, version: version[w] });
            }
        }
    }
    // Walk the survivors in ring order.
    let Some(start) = (0..n).find(|&i| alive[i]) else { return ring };
    let mut out = Vec::with_capacity(live);
    let mut i = start;
    loop {
        out.push(ring[i]);
        i = next[i];
        if i == start {
            break;
        }
    }
    out
}

fn convex_hull(ring: &[Coord<f64>]) -> Vec<Coord<f64>> {
    let points: MultiPoint<f64> = ring.iter().map(|c| Point(*c)).collect();
    let mut hull = points.convex_hull().exterior().clone();
    hull.make_ccw_winding();
    let mut coords = hull.0;
    coords.pop();
    coords
}

/// Step 3 of the module doc, on a convex CCW ring.
fn cut_corners_outwards(mut ring: Vec<Coord<f64>>, budget: usize) -> Vec<Coord<f64>> {
    // A corner may move out by at most a few times the shape's size; beyond that the box/triangle is tighter.
    let (x0, y0, x1, y1) = bounds(&ring);
    let reach = 3.0 * (x1 - x0).hypot(y1 - y0);
    let centre = Coord { x: (x0 + x1) / 2.0, y: (y0 + y1) / 2.0 };
    // Small inputs: a quadratic loop is simpler than a heap and hull sizes after step 2 are modest.
    while ring.len() > budget {
        let n = ring.len();
        let mut best: Option<(f64, usize, Coord<f64>)> = None;
        for i in 0..n {
            // Drop edge (a, b) = (ring[i], ring[i+1]) by meeting the lines (pa→a) and (b→nb).
            let pa = ring[(i + n - 1) % n];
            let a = ring[i];
            let b = ring[(i + 1) % n];
            let nb = ring[(i + 2) % n];
            let meeting =
                outward_meeting_point(pa, a, b, nb).filter(|x| (x.x - centre.x).hypot(x.y - centre.y) <= reach);
            if let Some(x) = meeting {
                let area = cross(a, x, b).abs() / 2.0;
                if best.is_none_or(|(best_area, _, _)| area < best_area) {
                    best = Some((area, i, x));
                }
            }
        }
        let Some((_, i, x)) = best else {
            return bounding_shape(&ring, budget);
        };
        let n = ring.len();
        ring[i] = x;
        ring.remove((i + 1) % n);
    }
    ring
}

/// Where line pa→a (extended beyond a) meets line nb→b (extended beyond b), if they meet on the outside.
fn outward_meeting_point(pa: Coord<f64>, a: Coord<f64>, b: Coord<f64>, nb: Coord<f64>) -> Option<Coord<f64>> {
    let d1 = Coord { x: a.x - pa.x, y: a.y - pa.y };
    let d2 = Coord { x: b.x - nb.x, y: b.y - nb.y };
    let denom = d1.x * d2.y - d1.y * d2.x;
    // Nearly parallel lines meet absurdly far away (or, numerically, anywhere): not a usable corner.
    if denom.abs() <= 1e-9 * d1.x.hypot(d1.y) * d2.x.hypot(d2.y) {
        return None;
    }
    let w = Coord { x: b.x - a.x, y: b.y - a.y };
    let t = (w.x * d2.y - w.y * d2.x) / denom;
    let s = (w.x * d1.y - w.y * d1.x) / denom;
    // Both rays must go forward (beyond a and beyond b); otherwise the lines meet on the inner side.
    (t >= 0.0 && s >= 0.0).then_some(Coord { x: a.x + t * d1.x, y: a.y + t * d1.y })
}

/// Last resort when corners cannot be cut (e.g. a rectangle down to a triangle): a box, or a triangle around it.
fn bounds(ring: &[Coord<f64>]) -> (f64, f64, f64, f64) {
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for c in ring {
        x0 = x0.min(c.x);
        y0 = y0.min(c.y);
        x1 = x1.max(c.x);
        y1 = y1.max(c.y);
    }
    (x0, y0, x1, y1)
}

fn bounding_shape(ring: &[Coord<f64>], budget: usize) -> Vec<Coord<f64>> {
    let (x0, y0, x1, y1) = bounds(ring);
    if budget >= 4 {
        return vec![Coord { x: x0, y: y0 }, Coord { x: x1, y: y0 }, Coord { x: x1, y: y1 }, Coord { x: x0, y: y1 }];
    }
    // Triangle with base 3w and height 2h holds the w×h box (at height h it is still 1.5w wide).
    let (w, h) = (x1 - x0, y1 - y0);
    vec![Coord { x: x0 - w, y: y0 }, Coord { x: x1 + w, y: y0 }, Coord { x: (x0 + x1) / 2.0, y: y1 + h }]
}

/// Mitered outward offset of a CCW ring by `delta` (degrees).
fn push_outwards(ring: &[Coord<f64>], delta: f64) -> Vec<Coord<f64>> {
    let n = ring.len();
    let normal = |a: Coord<f64>, b: Coord<f64>| {
        let (dx, dy) = (b.x - a.x, b.y - a.y);
        let len = (dx * dx + dy * dy).sqrt();
        if len == 0.0 {
            Coord { x: 0.0, y: 0.0 }
        } else {
            // Outward of a CCW ring is to the right of the direction of travel.
            Coord { x: dy / len, y: -dx / len }
        }
    };
    (0..n)
        .map(|i| {
            let p = ring[(i + n - 1) % n];
            let v = ring[i];
            let q = ring[(i + 1) % n];
            let (n1, n2) = (normal(p, v), normal(v, q));
            // Miter: (n1 + n2) / (1 + n1·n2) has unit projection on both normals. Clamped so a needle-sharp
            // corner moves by at most 10 δ instead of shooting off.
            let denom = (1.0 + n1.x * n2.x + n1.y * n2.y).max(0.01);
            Coord { x: v.x + delta * (n1.x + n2.x) / denom, y: v.y + delta * (n1.y + n2.y) / denom }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corners_are_cut_outwards() {
        // A regular octagon down to 4 vertices must still contain the octagon.
        let octagon: Vec<Coord<f64>> = (0..8)
            .map(|k| {
                let a = k as f64 * std::f64::consts::FRAC_PI_4;
                Coord { x: a.cos(), y: a.sin() }
            })
            .collect();
        let out = cut_corners_outwards(octagon.clone(), 4);
        assert_eq!(out.len(), 4, "{out:?}");
        // Kept edges pass exactly through octagon vertices: push out a hair as cap_polygons does.
        let poly = Polygon::new(LineString(push_outwards(&out, 1e-9)), vec![]);
        use geo::Intersects;
        assert!(octagon.iter().all(|c| poly.intersects(c)));
    }

    #[test]
    fn cap_polygon_round_trips() {
        let p = parse_cap_polygon("23.5,120.9 23.6,120.9 23.6,121.0 23.5,120.9").expect("valid");
        assert_eq!(p.exterior().0.len(), 4);
        assert!(parse_cap_polygon("23.5,120.9 23.6,120.9 23.6,121.0").is_none(), "not closed");
    }
}
