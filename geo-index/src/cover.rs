//! H3 cell sets of areas ([`CellCover`]): how zones, ad-hoc alert areas and cell-site footprints are indexed.
//!
//! ## Containment mode, chosen on purpose: `Covers`
//! h3o's tiler offers four modes. We use the semantics of [`ContainmentMode::Covers`] — every cell that touches the
//! area, even a little, plus the covering cell of an area smaller than one cell — and note for each cell whether it
//! lies *fully* inside and whether its centre is inside (computed faster than h3o's own `Covers`, see
//! [`CellCover::tile`]). Why this mode:
//! - **No false negatives.** A warning that misses a sensor or a phone inside a hazard area is the failure we cannot
//!   afford. With `ContainsCentroid` (the default) a thin road segment 60 m wide can get *no* cell at all, and the
//!   edge of every zone loses up to half a cell; with `ContainsBoundary` even more is lost.
//! - **Exactness comes back from the geometry.** Cells fully inside answer "yes" at once; only cells on the edge
//!   (a thin band) are decided by an exact point-in-polygon test against the zone's geometry. So queries are as exact
//!   as the geometry while costing one hash lookup for most points.
//! - **The cost is overshoot**, which the targeting report measures instead of hiding (see `targeting.rs`).
//!
//! h3o decides "touches" with straight edges in lon/lat; H3 itself assigns points with great-circle edges. The two
//! differ by micrometres at resolution 9, but that is enough for a point a hair inside a zone to fall in a cell the
//! tiler judged outside. The point lookup therefore also pads each zone's edge cells with their neighbours (see
//! `GeoIndex` in `index.rs`); the padding cells are edge cells, decided by the exact geometry.

use ahash::RandomState;
use geo::{Coord, Intersects, LineString, MultiPolygon, Polygon};
use h3o::{CellIndex, LatLng, Resolution};
use std::collections::{HashMap, HashSet};

/// Working mark while tiling: a band cell that is not part of the area (never in a finished cover).
const OUT_OF_AREA: u8 = 0x80;
/// Flag: the cell lies wholly inside the area.
const INTERIOR: u8 = 1;
/// Flag: the cell's centre lies inside the area.
const CENTRE_IN: u8 = 2;

/// Cells covering an area at one resolution, each marked *interior* (fully inside) or *edge*, and whether its
/// centre is inside.
#[derive(Debug, Clone)]
pub struct CellCover {
    /// The resolution every cell is at.
    resolution: Resolution,
    /// Cell → flags. A map rather than sets: one lookup answers "in the cover?", "can I skip the exact test?" and
    /// "is the centre inside?".
    cells: HashMap<CellIndex, u8, RandomState>,
}

impl CellCover {
    /// Tiles a (valid, lon/lat) multipolygon in `Covers` mode.
    ///
    /// h3o's own `Covers` tiler tests every candidate cell against the polygon (about 5 µs a cell at resolution 9),
    /// and even its `ContainsCentroid` fill costs 7–30 µs a cell (more for rounder outlines): a 100 km cell-site
    /// footprint took 43 s. We get the same set in three steps, about 1 µs a cell:
    /// 1. the boundary is sampled every half cell edge; the cells of the samples and their neighbours form a band
    ///    that holds every cell the boundary passes through (a sample is within a quarter edge of any boundary
    ///    point, so its cell is that point's cell or a neighbour of it);
    /// 2. band cells are kept if their centre is inside (edge cells) or they touch the area (exact test);
    /// 3. a flood fill from the band adds every other cell whose centre is inside; those are interior.
    ///
    /// Why the fill reaches every such cell: a cell outside the band has no boundary point, so it lies wholly
    /// inside or wholly outside. An inside one's neighbours each hold inside points next to the shared edge, so a
    /// neighbour whose centre is outside has a boundary point, and is in the band. Following centre-inside
    /// neighbours from a cell inside therefore ends at the band, and the fill walks the same path backwards. The
    /// fill never steps to a cell outside the band whose centre is outside, so it cannot leak out of the area.
    pub(crate) fn tile(mp: &MultiPolygon<f64>, resolution: Resolution) -> Result<Self, String> {
        let step_m = resolution.edge_length_m() / 2.0;
        let mut sampled: HashSet<CellIndex, RandomState> = HashSet::default();
        for polygon in &mp.0 {
            for ring in std::iter::once(polygon.exterior()).chain(polygon.interiors()) {
                sample_ring(ring, step_m, resolution, &mut sampled)?;
            }
        }
        let mut band: HashSet<CellIndex, RandomState> =
            HashSet::with_capacity_and_hasher(sampled.len() * 3, RandomState::new());
        for cell in &sampled {
            band.extend(neighbours(*cell));
        }
        let inside = PointInArea::new(mp);
        let centre_in = |cell: CellIndex| {
            let ll = LatLng::from(cell);
            inside.contains(ll.lng(), ll.lat())
        };
        // Every band cell gets an entry, those left out marked `OUT_OF_AREA`, so the fill below asks one map per step.
        let mut cells: HashMap<CellIndex, u8, RandomState> =
            HashMap::with_capacity_and_hasher(band.len() * 4, RandomState::new());
        for &cell in &band {
            let flags = if centre_in(cell) {
                CENTRE_IN
            } else if touches(cell, mp) {
                0
            } else {
                OUT_OF_AREA
            };
            cells.insert(cell, flags);
        }
        // Flood fill outwards from every band cell (kept or not), through cells outside the band only.
        let mut queue: Vec<CellIndex> = band.iter().copied().collect();
        while let Some(cell) = queue.pop() {
            for next in neighbours(cell) {
                if let std::collections::hash_map::Entry::Vacant(slot) = cells.entry(next) {
                    if centre_in(next) {
                        slot.insert(INTERIOR | CENTRE_IN);
                        queue.push(next);
                    }
                }
            }
        }
        cells.retain(|_, flags| *flags & OUT_OF_AREA == 0);
        Ok(Self { resolution, cells })
    }

    /// About how many cells [`CellCover::tile`] would return for the area, computed from its area and outline
    /// alone (microseconds, whatever the size): the guard that refuses a zone or footprint too big to index before
    /// any tiling starts. Uses the size of the H3 cell at the area's centre (cell areas vary about twofold over
    /// the globe), and adds one cell per edge length of outline (the edge band) and a few per ring (a ring
    /// smaller than a cell still touches up to three). Never below the true count for our tests' shapes; the
    /// true count is usually 60–90 % of it.
    pub fn estimated_cells(mp: &MultiPolygon<f64>, resolution: Resolution) -> u64 {
        use geo::{BoundingRect, Euclidean, Length};
        let Some(rect) = mp.bounding_rect() else { return 0 };
        let centre = rect.center();
        let cell_km2 = LatLng::new(centre.y, centre.x)
            .map(|ll| ll.to_cell(resolution).area_km2())
            .unwrap_or_else(|_| resolution.area_km2());
        // Regular hexagon: area = 3√3/2 · edge².
        let edge_m = (cell_km2 * 1e6 / (1.5 * 3f64.sqrt())).sqrt();
        let proj = crate::projection::LocalProjection::for_multipolygon(mp);
        let local = proj.mp_to_local(mp);
        let mut perimeter_m = 0.0;
        let mut rings = 0u64;
        for polygon in &local.0 {
            for ring in std::iter::once(polygon.exterior()).chain(polygon.interiors()) {
                perimeter_m += Euclidean.length(ring);
                rings += 1;
            }
        }
        let area_km2 = geo::Area::unsigned_area(&local) / 1e6;
        let estimate = area_km2 / cell_km2 + perimeter_m / edge_m;
        // Saturating float → int cast: a continent-sized typo gives u64::MAX / a huge number, never a panic.
        (estimate.ceil() as u64).saturating_add(7 * rings)
    }

    /// Union of two covers at the same resolution: interior or centre-inside in either stays so.
    pub(crate) fn merge(&mut self, other: &CellCover) {
        for (cell, flags) in &other.cells {
            *self.cells.entry(*cell).or_insert(0) |= *flags;
        }
    }

    /// The resolution of the cells.
    pub fn resolution(&self) -> Resolution {
        self.resolution
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// True when there are no cells (cannot happen for a cover built from a non-empty area).
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Every cell, in no particular order.
    pub fn cells(&self) -> impl Iterator<Item = CellIndex> + '_ {
        self.cells.keys().copied()
    }

    /// Every cell with its "fully inside" flag.
    pub fn annotated(&self) -> impl Iterator<Item = (CellIndex, bool)> + '_ {
        self.cells.iter().map(|(c, f)| (*c, f & INTERIOR != 0))
    }

    /// Every cell with (fully inside, centre inside).
    pub(crate) fn flagged(&self) -> impl Iterator<Item = (CellIndex, bool, bool)> + '_ {
        self.cells.iter().map(|(c, f)| (*c, f & INTERIOR != 0, f & CENTRE_IN != 0))
    }

    /// `None` when the cell is not in the cover, otherwise `Some(fully_inside)`.
    pub fn get(&self, cell: CellIndex) -> Option<bool> {
        self.cells.get(&cell).map(|f| f & INTERIOR != 0)
    }

    /// Whether the cell is part of the cover.
    pub fn contains(&self, cell: CellIndex) -> bool {
        self.cells.contains_key(&cell)
    }

    /// Sum of the cells' areas in km² (what an H3-exact target actually reaches).
    pub fn area_km2(&self) -> f64 {
        self.cells.keys().map(|c| c.area_km2()).sum()
    }
}

/// Adds the cells of points sampled every `step_m` metres along a ring.
fn sample_ring(
    ring: &LineString<f64>,
    step_m: f64,
    resolution: Resolution,
    out: &mut HashSet<CellIndex, RandomState>,
) -> Result<(), String> {
    let cell_of = |c: Coord<f64>| {
        LatLng::new(c.y, c.x).map(|ll| ll.to_cell(resolution)).map_err(|e| format!("{e} at {},{}", c.y, c.x))
    };
    for line in ring.lines() {
        let (a, b) = (line.start, line.end);
        let kx = 111_320.0 * ((a.y + b.y) / 2.0).to_radians().cos();
        let len_m = ((b.x - a.x) * kx).hypot((b.y - a.y) * 110_574.0);
        let n = (len_m / step_m).ceil().max(1.0) as usize;
        for i in 0..=n {
            let t = i as f64 / n as f64;
            out.insert(cell_of(Coord { x: a.x + (b.x - a.x) * t, y: a.y + (b.y - a.y) * t })?);
        }
    }
    Ok(())
}

/// Does the cell's hexagon (lon/lat, straight edges) touch the area?
fn touches(cell: CellIndex, mp: &MultiPolygon<f64>) -> bool {
    let hexagon = Polygon::new(LineString::from(cell.boundary()), vec![]);
    mp.intersects(&hexagon)
}

/// A cell and its six (five at a pentagon) neighbours without allocating: the fill calls this once per cell, and
/// `grid_disk_safe` builds a set each time (a third of the fill's cost for a 10 km square).
fn neighbours(cell: CellIndex) -> impl Iterator<Item = CellIndex> {
    let mut ring = [None; 7];
    let mut complete = true;
    for (slot, next) in ring.iter_mut().zip(cell.grid_disk_fast(1)) {
        complete &= next.is_some();
        *slot = next;
    }
    let fallback: Vec<CellIndex> = if complete { Vec::new() } else { cell.grid_disk_safe(1).collect() };
    let fast = if complete { ring } else { [None; 7] };
    fast.into_iter().flatten().chain(fallback)
}

/// Point-in-area test for many points against one multipolygon: each part's edges bucketed into horizontal strips,
/// so a point is tested against the few edges of its strip (crossing number), not all of them. Parts may overlap
/// (a zone is their union), so parity is counted per part.
struct PointInArea {
    min_y: f64,
    /// Strips per degree of latitude.
    scale: f64,
    /// Per strip: its edges, grouped by part.
    strips: Vec<Vec<StripEdge>>,
}

/// One polygon edge in a strip: `(part, x1, y1, x2, y2)`.
type StripEdge = (u32, f64, f64, f64, f64);

impl PointInArea {
    fn new(mp: &MultiPolygon<f64>) -> Self {
        let edges: Vec<(u32, Coord<f64>, Coord<f64>)> =
            mp.0.iter()
                .enumerate()
                .flat_map(|(part, p)| {
                    std::iter::once(p.exterior())
                        .chain(p.interiors())
                        .flat_map(LineString::lines)
                        .map(move |l| (part as u32, l.start, l.end))
                })
                .filter(|(_, a, b)| a.y != b.y)
                .collect();
        let (min_y, max_y) = edges.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, a, b)| {
            (lo.min(a.y).min(b.y), hi.max(a.y).max(b.y))
        });
        let count = edges.len().clamp(1, 1 << 16);
        let span = max_y - min_y;
        let scale = if span > 0.0 { count as f64 / span } else { 0.0 };
        let mut strips: Vec<Vec<StripEdge>> = vec![Vec::new(); count];
        for (part, a, b) in edges {
            let lo = ((a.y.min(b.y) - min_y) * scale) as usize;
            let hi = (((a.y.max(b.y) - min_y) * scale) as usize).min(count - 1);
            for strip in &mut strips[lo.min(count - 1)..=hi] {
                strip.push((part, a.x, a.y, b.x, b.y));
            }
        }
        Self { min_y, scale, strips }
    }

    fn contains(&self, x: f64, y: f64) -> bool {
        let offset = (y - self.min_y) * self.scale;
        if !(0.0..=self.strips.len() as f64).contains(&offset) {
            return false;
        }
        let strip = &self.strips[(offset as usize).min(self.strips.len() - 1)];
        let mut part = u32::MAX;
        let mut odd = false;
        for &(p, x1, y1, x2, y2) in strip {
            if p != part {
                if odd {
                    return true;
                }
                part = p;
            }
            // Half-open in y, so a vertex on the ray is counted once.
            if (y1 > y) != (y2 > y) && x < x1 + (y - y1) * (x2 - x1) / (y2 - y1) {
                odd = !odd;
            }
        }
        odd
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use h3o::geom::{ContainmentMode, TilerBuilder};
    use proptest::prelude::*;

    /// h3o's own `Covers` tiler, annotated: the reference our faster tiler must reproduce.
    fn reference(mp: &MultiPolygon<f64>, resolution: Resolution) -> HashMap<CellIndex, bool> {
        let mut tiler = TilerBuilder::new(resolution).containment_mode(ContainmentMode::Covers).build();
        tiler.add_batch(mp.0.iter().cloned()).expect("valid");
        tiler.into_annotated_coverage().map(|a| (a.cell, a.is_fully_contained)).collect()
    }

    /// h3o's `ContainsCentroid` fill: the cells whose centre is inside.
    fn centroid_reference(mp: &MultiPolygon<f64>, resolution: Resolution) -> HashSet<CellIndex> {
        let mut tiler = TilerBuilder::new(resolution).containment_mode(ContainmentMode::ContainsCentroid).build();
        tiler.add_batch(mp.0.iter().cloned()).expect("valid");
        tiler.into_coverage().collect()
    }

    /// A star-shaped (often concave) ring of `radii` metres around (lon, lat).
    fn star(lon: f64, lat: f64, radii: &[f64], phase: f64) -> LineString<f64> {
        let n = radii.len() as f64;
        let mut ring: Vec<Coord<f64>> = radii
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let a = (i as f64 + phase) / n * std::f64::consts::TAU;
                Coord { x: lon + r * a.cos() / 102_000.0, y: lat + r * a.sin() / 110_800.0 }
            })
            .collect();
        ring.push(ring[0]);
        LineString(ring)
    }

    /// Our cover against both h3o references: the same cells as `Covers`, interior only where h3o says fully
    /// inside, "centre inside" exactly where `ContainsCentroid` has the cell, and no more cells than the estimate.
    fn check_against_h3o(mp: &MultiPolygon<f64>, res: Resolution) -> Result<(), TestCaseError> {
        let ours = CellCover::tile(mp, res).expect("valid");
        let theirs = reference(mp, res);
        let mut a: Vec<CellIndex> = ours.cells().collect();
        let mut b: Vec<CellIndex> = theirs.keys().copied().collect();
        a.sort_unstable();
        b.sort_unstable();
        prop_assert_eq!(a, b);
        let centres = centroid_reference(mp, res);
        for (cell, interior, centre_in) in ours.flagged() {
            if interior {
                prop_assert_eq!(theirs.get(&cell), Some(&true), "{} interior for us only", cell);
            }
            prop_assert_eq!(centre_in, centres.contains(&cell), "centre of {}", cell);
        }
        let estimate = CellCover::estimated_cells(mp, res);
        prop_assert!(ours.len() as u64 <= estimate, "{} cells, estimated {}", ours.len(), estimate);
        Ok(())
    }

    #[test]
    fn holes_and_overlapping_parts() {
        let outer = star(120.9, 23.5, &[3000.0; 24], 0.0);
        let hole = star(120.9, 23.5, &[1200.0; 12], 0.3);
        let other = star(120.92, 23.51, &[2000.0; 16], 0.1);
        let mp = MultiPolygon(vec![Polygon::new(outer, vec![hole]), Polygon::new(other, vec![])]);
        check_against_h3o(&mp, Resolution::Nine).expect("same as h3o");
        // A point in the hole of the first part but inside the overlapping second part is in the area.
        let inside = PointInArea::new(&mp);
        assert!(inside.contains(120.9 + 800.0 / 102_000.0, 23.5));
        assert!(!inside.contains(120.9 - 800.0 / 102_000.0, 23.5), "in the hole, outside the second part");
        assert!(!inside.contains(121.5, 23.5));
    }

    #[test]
    fn a_100_km_footprint_tiles() {
        // F4 of fuzz/README.md: this took 43 s with h3o's fill at resolution 9. No timing here (benchmarks are
        // separate); it must give the whole disc: about π·100² km² of ~0.1 km² cells.
        let (footprint, _) = crate::site::sector(23.5, 120.9, 0.0, 360.0, 100_000.0);
        let mp = MultiPolygon(vec![footprint]);
        let cover = CellCover::tile(&mp, Resolution::Nine).expect("valid");
        let expected = std::f64::consts::PI * 100.0 * 100.0
            / LatLng::new(23.5, 120.9).unwrap().to_cell(Resolution::Nine).area_km2();
        assert!(
            (cover.len() as f64 - expected).abs() / expected < 0.02,
            "{} cells, ~{expected:.0} expected",
            cover.len()
        );
        assert!(cover.len() as u64 <= CellCover::estimated_cells(&mp, Resolution::Nine));
        assert_eq!(centroid_reference(&mp, Resolution::Seven).len(), {
            let c7 = CellCover::tile(&mp, Resolution::Seven).expect("valid");
            c7.flagged().filter(|(_, _, centre_in)| *centre_in).count()
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Star shapes (concave, one to three parts that may overlap, sometimes with a hole) at resolutions 8–10.
        #[test]
        fn fast_cover_equals_h3o(
            parts in prop::collection::vec((prop::collection::vec(50.0..3000.0f64, 3..12), 0.0..1.0f64, -0.02..0.02f64, -0.02..0.02f64), 1..4),
            hole in prop::option::of(0.05..0.3f64),
            res in prop_oneof![Just(Resolution::Eight), Just(Resolution::Nine), Just(Resolution::Ten)],
        ) {
            let polygons = parts.iter().map(|(radii, phase, dx, dy)| {
                let exterior = star(120.9 + dx, 23.5 + dy, radii, *phase);
                // A hole a fraction of the smallest radius: always inside a star-shaped ring.
                let interiors = hole.map(|f| {
                    let r = radii.iter().copied().fold(f64::INFINITY, f64::min) * f;
                    vec![star(120.9 + dx, 23.5 + dy, &[r; 8], 0.0)]
                }).unwrap_or_default();
                Polygon::new(exterior, interiors)
            }).collect();
            check_against_h3o(&MultiPolygon(polygons), res)?;
        }
    }
}
