//! Device-based geofencing: the alert area as polygons a phone checks its own position against (sent as
//! Warning Area Coordinates beside the cell list), and what that leaves of the cell-level overshoot.
//!
//! ## The outward outline ([`AlertArea::outward_outline`])
//! An encoding holds a bounded number of vertices (1,024 octets: at most 185 in one polygon), while a zone can have
//! thousands. Simplifying must never *shrink* the area: a phone just inside the zone's edge has to be inside the
//! polygon it receives. So the outline is built outward, in a local metric projection:
//! 1. holes are dropped (that only adds area);
//! 2. the outer rings are grown by `margin = clearance + ε` (round joins; nearby parts merge, fewer polygons);
//! 3. each grown ring is simplified by Douglas–Peucker with tolerance `ε`;
//! 4. the result is **checked**, not trusted: it must be valid, hold every part of the area, and stay at least
//!    `clearance` away from the area's outer rings everywhere (so rounding each vertex to the encoding's grid, by
//!    less than `clearance`, cannot cut into the area either);
//! 5. if it does not fit the caller's budget or fails a check, ε grows by half and it starts again from 2.
//!
//! The outline's **worst displacement** is the farthest point of it from the area (its vertices, points every
//! 10 m along its edges and a 16 × 16 grid inside each part it adds), in metres.
//!
//! ## Geofenced overshoot ([`GeoIndex::geofenced_overshoot`])
//! A geofence-capable phone alarms where a targeted cell reaches it *and* it is inside a polygon it received. The
//! part of the alerted cells that the polygons, as encoded, still admit outside the area is exact geometry:
//! `(admitted − area) ∩ (targeted footprints)`, in km², and its farthest point from the area in metres (sampled as
//! above). Coverage is the cell-level coverage: the admitted polygons hold the whole area.

use geo::{
    Area, BooleanOps, BoundingRect, Buffer, Contains, Coord, Intersects, Line, MultiPolygon, Point, Polygon, Simplify,
    Validation,
};
use rstar::{primitives::GeomWithData, RTree};
use serde::Serialize;

use crate::{
    error::GeoError,
    index::GeoIndex,
    projection::LocalProjection,
    targeting::{AlertArea, WEA_MAX_OVERSHOOT_M},
};

/// First simplification tolerance tried, metres; each retry takes half as much again.
const FIRST_TOLERANCE_M: f64 = 5.0;
/// Largest tolerance tried before giving up (a 200 km blob is no longer a warning area).
const LAST_TOLERANCE_M: f64 = 200_000.0;
/// Spacing of the samples along edges when looking for the farthest point, metres.
const EDGE_SAMPLE_M: f64 = 10.0;
/// Samples per side of the grid laid inside each added part.
const GRID_SAMPLES: usize = 16;

/// What the outline must fit.
pub struct OutlineBudget<'a> {
    /// Distance the outline keeps from the area everywhere, metres (at least the encoding's rounding).
    pub clearance_m: f64,
    /// Whether polygons with these vertex counts (each ring's vertices once, without the closing one) fit.
    pub fits: &'a dyn Fn(&[usize]) -> bool,
}

/// An outline holding the whole area, within the budget.
#[derive(Debug, Clone)]
pub struct GeofenceOutline {
    /// The polygons (lon/lat, closed rings, no holes).
    pub polygons: MultiPolygon<f64>,
    /// Farthest point of the outline from the area, metres.
    pub worst_displacement_m: f64,
    /// How far the area was grown before simplifying, metres.
    pub margin_m: f64,
}

impl GeofenceOutline {
    /// Each polygon's vertices as (lat, lon), once each (no closing vertex): the order an encoder writes.
    pub fn vertex_rings(&self) -> Vec<Vec<(f64, f64)>> {
        self.polygons
            .0
            .iter()
            .map(|p| {
                let ring = &p.exterior().0;
                ring[..ring.len().saturating_sub(1)].iter().map(|c| (c.y, c.x)).collect()
            })
            .collect()
    }
}

/// What a geofence-capable phone experiences of a cell-broadcast targeting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GeofencedOvershoot {
    /// Land alarmed outside the area: targeted footprints ∩ (admitted polygons − area), km².
    pub overshoot_km2: f64,
    /// Farthest alarmed point outside the area, metres.
    pub farthest_overshoot_m: f64,
    /// Cell-level coverage is full and the farthest geofenced overshoot is within 0.1 mile.
    pub meets_wea: bool,
}

impl AlertArea {
    /// The outward outline of the area within `budget` (see the module doc). Errors when no tolerance up to
    /// 200 km gives an outline that fits and passes the checks.
    pub fn outward_outline(&self, budget: &OutlineBudget<'_>) -> Result<GeofenceOutline, GeoError> {
        let proj = LocalProjection::for_multipolygon(&self.geometry);
        let local = proj.mp_to_local(&self.geometry);
        let shells = MultiPolygon(local.0.iter().map(|p| Polygon::new(p.exterior().clone(), vec![])).collect());
        let shell_edges = edge_tree(&shells);
        let clearance = budget.clearance_m.max(0.0);
        let mut tolerance = FIRST_TOLERANCE_M;
        while tolerance <= LAST_TOLERANCE_M {
            let margin = clearance + tolerance;
            let grown = shells.buffer(margin);
            let simplified: Vec<Polygon<f64>> = grown
                .0
                .iter()
                .map(|p| Polygon::new(p.exterior().simplify(tolerance), vec![]))
                .filter(|p| p.exterior().0.len() >= 4)
                .collect();
            let counts: Vec<usize> = simplified.iter().map(|p| p.exterior().0.len() - 1).collect();
            let candidate = MultiPolygon(simplified);
            if (budget.fits)(&counts) && holds(&candidate, &shells, &shell_edges, clearance) {
                let worst = farthest_from(&edge_tree(&local), &candidate, &candidate.difference(&local));
                return Ok(GeofenceOutline {
                    polygons: proj.mp_to_geo(&candidate),
                    worst_displacement_m: worst,
                    margin_m: margin,
                });
            }
            tolerance *= 1.5;
        }
        Err(GeoError::InvalidArea(format!(
            "no outward outline of the area fits the warning-area encoding (tried tolerances up to {} km)",
            LAST_TOLERANCE_M / 1000.0
        )))
    }
}

impl GeoIndex {
    /// What a geofence-capable phone experiences when `mnc`'s cells (all carriers' when `None`) broadcast for
    /// `area` with `admitted` (lon/lat: the polygons as a phone decodes them) attached. See the module doc.
    pub fn geofenced_overshoot(
        &self,
        area: &AlertArea,
        mnc: Option<u16>,
        admitted: &MultiPolygon<f64>,
        covered_share: f64,
    ) -> GeofencedOvershoot {
        let proj = LocalProjection::for_multipolygon(&area.geometry);
        let local = proj.mp_to_local(&area.geometry);
        let outside = proj.mp_to_local(admitted).difference(&local);
        let Some(out_box) = outside.bounding_rect() else {
            return GeofencedOvershoot {
                overshoot_km2: 0.0,
                farthest_overshoot_m: 0.0,
                meets_wea: covered_share >= 1.0,
            };
        };
        let footprints: Vec<Polygon<f64>> = self
            .cell_sites_for_area(area, mnc)
            .into_iter()
            .map(|s| proj.mp_to_local(&MultiPolygon(vec![s.footprint.clone()])))
            .flat_map(|mp| mp.0)
            .filter(|f| f.bounding_rect().is_some_and(|b| b.intersects(&out_box)))
            .collect();
        let reached = geo::unary_union(footprints.iter());
        let alarmed = outside.intersection(&reached);
        let edges = edge_tree(&local);
        let farthest = farthest_from(&edges, &alarmed, &alarmed);
        GeofencedOvershoot {
            overshoot_km2: alarmed.unsigned_area() / 1e6,
            farthest_overshoot_m: farthest,
            meets_wea: covered_share >= 1.0 && farthest <= WEA_MAX_OVERSHOOT_M,
        }
    }
}

type EdgeTree = RTree<GeomWithData<Line<f64>, ()>>;

fn edge_tree(mp: &MultiPolygon<f64>) -> EdgeTree {
    let mut lines = Vec::new();
    for p in &mp.0 {
        for ring in std::iter::once(p.exterior()).chain(p.interiors()) {
            lines.extend(ring.lines().map(|l| GeomWithData::new(l, ())));
        }
    }
    RTree::bulk_load(lines)
}

fn distance_to(edges: &EdgeTree, c: Coord<f64>) -> f64 {
    use geo::{Distance, Euclidean};
    edges.nearest_neighbor(&Point(c)).map_or(0.0, |l| Euclidean.distance(l.geom(), &Point(c)))
}

/// Does `outline` hold every shell with at least `clearance` between their boundaries? Exact for segments: two
/// non-crossing segments are nearest at an endpoint of one of them, so vertex-to-edge distances both ways suffice
/// once containment rules out crossings.
fn holds(outline: &MultiPolygon<f64>, shells: &MultiPolygon<f64>, shell_edges: &EdgeTree, clearance: f64) -> bool {
    if outline.0.is_empty() || !outline.is_valid() || !outline.contains(shells) {
        return false;
    }
    let outline_edges = edge_tree(outline);
    let shell_vertices = shells.0.iter().flat_map(|p| p.exterior().0.iter());
    let outline_vertices = outline.0.iter().flat_map(|p| p.exterior().0.iter());
    shell_vertices.into_iter().all(|c| distance_to(&outline_edges, *c) >= clearance)
        && outline_vertices.into_iter().all(|c| distance_to(shell_edges, *c) >= clearance)
}

/// Farthest point from the area whose boundary is `edges`, of `parts` (outside the area: a difference with it, so
/// the distance to its boundary is the distance to it): samples along the rings of `outline` (all of `parts`'
/// boundary that is not the area's own, where the distance is 0) and a grid inside each part.
fn farthest_from(edges: &EdgeTree, outline: &MultiPolygon<f64>, parts: &MultiPolygon<f64>) -> f64 {
    let mut worst: f64 = 0.0;
    let mut consider = |c: Coord<f64>| worst = worst.max(distance_to(edges, c));
    for p in &outline.0 {
        for ring in std::iter::once(p.exterior()).chain(p.interiors()) {
            for l in ring.lines() {
                let len = (l.dx().powi(2) + l.dy().powi(2)).sqrt();
                let n = ((len / EDGE_SAMPLE_M).ceil() as usize).clamp(1, 1000);
                for i in 0..n {
                    let t = i as f64 / n as f64;
                    consider(Coord { x: l.start.x + t * l.dx(), y: l.start.y + t * l.dy() });
                }
            }
        }
    }
    for p in &parts.0 {
        if let Some(b) = p.bounding_rect() {
            for i in 0..GRID_SAMPLES {
                for j in 0..GRID_SAMPLES {
                    let c = Coord {
                        x: b.min().x + (i as f64 + 0.5) / GRID_SAMPLES as f64 * b.width(),
                        y: b.min().y + (j as f64 + 0.5) / GRID_SAMPLES as f64 * b.height(),
                    };
                    if p.intersects(&Point(c)) {
                        consider(c);
                    }
                }
            }
        }
    }
    worst
}
