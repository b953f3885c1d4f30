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
use h3o::{
    geom::{ContainmentMode, TilerBuilder},
    CellIndex, LatLng, Resolution,
};
use std::collections::{HashMap, HashSet};

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
    /// which missed our speed target. We get the same set faster in three steps:
    /// 1. h3o's fast `ContainsCentroid` fill gives the cells whose centre is inside;
    /// 2. the boundary is sampled every half cell edge; the cells of the samples and their neighbours form a band
    ///    that holds every cell the boundary passes through (a sample is within a quarter edge of any boundary
    ///    point, so its cell is that point's cell or a neighbour of it);
    /// 3. band cells with the centre inside are edge cells; other band cells are edge cells if they touch the area
    ///    (exact test); centre-inside cells outside the band cannot meet the boundary, so they are interior.
    pub(crate) fn tile(mp: &MultiPolygon<f64>, resolution: Resolution) -> Result<Self, String> {
        let mut tiler = TilerBuilder::new(resolution).containment_mode(ContainmentMode::ContainsCentroid).build();
        tiler.add_batch(mp.0.iter().cloned()).map_err(|e| e.to_string())?;
        let mut cells: HashMap<CellIndex, u8, RandomState> =
            HashMap::with_capacity_and_hasher(tiler.coverage_size_hint(), RandomState::new());
        for cell in tiler.into_coverage() {
            cells.insert(cell, INTERIOR | CENTRE_IN);
        }

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
            band.extend(cell.grid_disk_safe(1));
        }
        for cell in band {
            match cells.get_mut(&cell) {
                Some(flags) => *flags &= !INTERIOR,
                None => {
                    if touches(cell, mp) {
                        cells.insert(cell, 0);
                    }
                }
            }
        }
        Ok(Self { resolution, cells })
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// h3o's own `Covers` tiler, annotated: the reference our faster tiler must reproduce.
    fn reference(mp: &MultiPolygon<f64>, resolution: Resolution) -> HashMap<CellIndex, bool> {
        let mut tiler = TilerBuilder::new(resolution).containment_mode(ContainmentMode::Covers).build();
        tiler.add_batch(mp.0.iter().cloned()).expect("valid");
        tiler.into_annotated_coverage().map(|a| (a.cell, a.is_fully_contained)).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Same cells as h3o's `Covers`; a cell we call interior is fully inside by h3o too (we may call a few more
        /// cells "edge" than h3o: that only costs an exact test).
        #[test]
        fn fast_cover_equals_h3o_covers(
            radii in prop::collection::vec(50.0..3000.0f64, 3..12),
            phase in 0.0..1.0f64,
            res in prop_oneof![Just(Resolution::Eight), Just(Resolution::Nine), Just(Resolution::Ten)],
        ) {
            let n = radii.len() as f64;
            let ring: Vec<Coord<f64>> = radii.iter().enumerate().map(|(i, r)| {
                let a = (i as f64 + phase) / n * std::f64::consts::TAU;
                Coord { x: 120.9 + r * a.cos() / 102_000.0, y: 23.5 + r * a.sin() / 110_800.0 }
            }).collect();
            let mp = MultiPolygon(vec![Polygon::new(LineString(ring), vec![])]);
            let ours = CellCover::tile(&mp, res).expect("valid");
            let theirs = reference(&mp, res);
            let mut a: Vec<CellIndex> = ours.cells().collect();
            let mut b: Vec<CellIndex> = theirs.keys().copied().collect();
            a.sort_unstable();
            b.sort_unstable();
            prop_assert_eq!(a, b);
            for (cell, interior) in ours.annotated() {
                if interior {
                    prop_assert_eq!(theirs.get(&cell), Some(&true), "{} interior for us only", cell);
                }
            }
        }
    }
}
