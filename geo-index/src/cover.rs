//! H3 cell sets of areas ([`CellCover`]): how zones, ad-hoc alert areas and cell-site footprints are indexed.
//!
//! ## Containment mode, chosen on purpose: `Covers`
//! h3o's tiler offers four modes. We use [`ContainmentMode::Covers`] — every cell that touches the area, even a
//! little, plus the covering cell of an area smaller than one cell — and keep h3o's per-cell note of whether the cell
//! lies *fully* inside. Why:
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
use geo::MultiPolygon;
use h3o::{
    geom::{ContainmentMode, TilerBuilder},
    CellIndex, Resolution,
};
use std::collections::HashMap;

/// Cells covering an area at one resolution, each marked *interior* (fully inside) or *edge*.
#[derive(Debug, Clone)]
pub struct CellCover {
    /// The resolution every cell is at.
    resolution: Resolution,
    /// Cell → fully inside the area? A map rather than two sets: one lookup answers both "in the cover?" and
    /// "can I skip the exact test?".
    cells: HashMap<CellIndex, bool, RandomState>,
}

impl CellCover {
    /// Tiles a (valid, lon/lat) multipolygon with `Covers`.
    pub(crate) fn tile(mp: &MultiPolygon<f64>, resolution: Resolution) -> Result<Self, String> {
        let mut tiler = TilerBuilder::new(resolution)
            .containment_mode(ContainmentMode::Covers)
            .build();
        tiler.add_batch(mp.0.iter().cloned()).map_err(|e| e.to_string())?;
        let mut cells: HashMap<CellIndex, bool, RandomState> =
            HashMap::with_capacity_and_hasher(tiler.coverage_size_hint(), RandomState::new());
        for annotated in tiler.into_annotated_coverage() {
            // Overlapping parts of a multipolygon can yield a cell twice: interior if any part holds it whole.
            *cells.entry(annotated.cell).or_insert(false) |= annotated.is_fully_contained;
        }
        Ok(Self { resolution, cells })
    }

    /// A cover made of given cells, all edge (used for coarse footprints and tests).
    pub(crate) fn from_cells(resolution: Resolution, cells: impl IntoIterator<Item = (CellIndex, bool)>) -> Self {
        Self { resolution, cells: cells.into_iter().collect() }
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
        self.cells.iter().map(|(c, i)| (*c, *i))
    }

    /// `None` when the cell is not in the cover, otherwise `Some(fully_inside)`.
    pub fn get(&self, cell: CellIndex) -> Option<bool> {
        self.cells.get(&cell).copied()
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
