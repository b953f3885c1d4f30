//! Geotargeting: which cell sites (cell broadcast) or which H3 cells (the app) to target for an alert area, and how
//! well that fits, in figures.
//!
//! The rule we measure against is the strictest published one (US WEA): reach **100 %** of the area and overshoot
//! by at most **0.1 mile ≈ 161 m** ([`WEA_MAX_OVERSHOOT_M`]). Cell broadcast is bounded by cell footprints (kilometres),
//! so it usually cannot meet the overshoot limit; the app can target exactly by H3 cells. The report says what the
//! chosen strategy achieves and names the tighter strategy when there is one ([`TargetingReport::tighter`]).
//!
//! ## How each figure is computed (and how exact it is)
//! - **Targeted sites** (cell broadcast) = exactly the sites whose footprint intersects the area: candidates come from
//!   the cell → sites index over the area's cells; a site sharing a cell that is fully inside the area or fully
//!   inside its footprint is in at once, the others are decided by an exact polygon test.
//! - **Covered share** = share (by area) of the area's cells that are covered at their sample point: the cell's
//!   centre when it lies in the area, else the area's boundary point nearest that centre (so a cell that only
//!   clips the area is judged on the area, not on the outside). For the app it is 1 by construction. Figures are at
//!   the index resolution: a coverage gap smaller than a cell can hide between samples.
//! - **Reach** = area of the cells whose centre lies in a targeted footprint (app: of the targeted cells).
//!   **Overshoot km²** = reach − the covered part of the area.
//! - **Farthest overshoot (m)** = largest distance from the area of a footprint vertex (arc sampled every ≤5°, plus
//!   the arc's bulge between samples) or, for the app, of a targeted cell's vertex. Distances are planar in a local
//!   projection (`projection.rs`). For a footprint over a *hole* of the area the farthest point can be inside the
//!   footprint, not at a vertex; areas with holes are rare for warnings and the figure is then a lower bound.
//!
//! Cell areas are taken per ~35 km² patch (one exact H3 area per parent cell three levels up): H3 cell areas vary
//! smoothly, so this keeps area sums within 0.1 % while avoiding trigonometry for every cell.

use crate::{
    cover::CellCover,
    error::GeoError,
    index::GeoIndex,
    outline,
    projection::{self, LocalProjection},
    site::{CellSite, Ecgi},
    zone::{check_polygons, multipolygon_to_geojson},
};
use ahash::RandomState;
use geo::{BooleanOps, BoundingRect, Coord, Intersects, Line, MultiPolygon, Point, Rect};
use h3o::{CellIndex, LatLng, Resolution};
use rstar::{primitives::GeomWithData, RTree};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// US WEA's overshoot limit: 0.1 mile in metres.
pub const WEA_MAX_OVERSHOOT_M: f64 = 160.9344;

/// An area to warn: its exact geometry and its H3 cells at the index resolution.
#[derive(Debug, Clone)]
pub struct AlertArea {
    /// Exact area (lon/lat).
    pub geometry: MultiPolygon<f64>,
    /// Its area in km².
    pub area_km2: f64,
    /// Cells covering it (`Covers`, see `cover.rs`).
    pub(crate) cover: CellCover,
}

impl AlertArea {
    /// The cells covering the area.
    pub fn cells(&self) -> &CellCover {
        &self.cover
    }
    /// CAP polygons covering every cell of the area (see [`crate::Zone::cap_polygons`]).
    pub fn cap_polygons(&self, max_vertices: usize) -> Vec<String> {
        outline::cap_polygons(&self.cover, max_vertices)
    }
    /// GeoJSON geometry of the exact area.
    pub fn geojson_geometry(&self) -> serde_json::Value {
        multipolygon_to_geojson(&self.geometry)
    }
}

/// How to reach the people in an area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "channel")]
pub enum TargetingStrategy {
    /// 4G cell broadcast to every cell whose footprint intersects the area; `mnc` limits it to one carrier
    /// (each carrier's CBC gets its own cell list, and each must cover the whole area).
    CellBroadcast { mnc: Option<u16> },
    /// The app channel: phones whose reported position is in one of the area's H3 cells at `resolution`.
    AppH3 {
        #[serde(serialize_with = "serialize_resolution")]
        resolution: Resolution,
    },
}

fn serialize_resolution<S: serde::Serializer>(r: &Resolution, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u8(u8::from(*r))
}

fn serialize_cells<S: serde::Serializer>(cells: &[CellIndex], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(cells.iter().map(|c| c.to_string()))
}

/// What a targeting strategy achieves for an area.
#[derive(Debug, Clone, Serialize)]
pub struct TargetingReport {
    /// The strategy measured.
    pub strategy: TargetingStrategy,
    /// Exact area of the alert area, km².
    pub area_km2: f64,
    /// Share of the area reached, 0..=1 (must be 1; see the module doc for its resolution).
    pub covered_share: f64,
    /// Everything the strategy reaches, km².
    pub reach_km2: f64,
    /// Reach outside the area, km².
    pub overshoot_km2: f64,
    /// Farthest reached point outside the area, metres.
    pub farthest_overshoot_m: f64,
    /// Full coverage and overshoot within [`WEA_MAX_OVERSHOOT_M`].
    pub meets_wea: bool,
    /// Cell broadcast: the cells to put in the warning area list, sorted.
    pub sites: Vec<Ecgi>,
    /// App: the H3 cells to target, sorted.
    #[serde(serialize_with = "serialize_cells")]
    pub cells: Vec<CellIndex>,
    /// Cells of the area no targeted footprint reaches (a coverage hole, or a carrier absent there).
    #[serde(serialize_with = "serialize_cells")]
    pub uncovered_cells: Vec<CellIndex>,
    /// A strategy that overshoots less, when this one misses the WEA limit and one exists.
    pub tighter: Option<TargetingStrategy>,
}

impl GeoIndex {
    /// An alert area from an arbitrary lon/lat multipolygon (checked like a zone, tiled at the index resolution).
    pub fn alert_area(&self, geometry: MultiPolygon<f64>) -> Result<AlertArea, GeoError> {
        if geometry.0.is_empty() {
            return Err(GeoError::InvalidArea("empty geometry".into()));
        }
        check_polygons(&geometry).map_err(|p| GeoError::InvalidArea(p.to_string()))?;
        let cover = CellCover::tile(&geometry, self.resolution()).map_err(GeoError::InvalidArea)?;
        Ok(AlertArea { area_km2: projection::area_km2(&geometry), geometry, cover })
    }

    /// The alert area made of one or more zones (their union).
    pub fn alert_area_of_zones(&self, ids: &[&str]) -> Result<AlertArea, GeoError> {
        let mut zones = Vec::with_capacity(ids.len());
        for id in ids {
            zones.push(self.zone(id).ok_or_else(|| GeoError::UnknownZone((*id).to_owned()))?);
        }
        let Some((first, rest)) = zones.split_first() else {
            return Err(GeoError::InvalidArea("no zones given".into()));
        };
        if rest.is_empty() {
            return Ok(AlertArea {
                geometry: first.geometry.clone(),
                area_km2: first.area_km2,
                cover: first.cover.clone(),
            });
        }
        let mut geometry = first.geometry.clone();
        let mut cover = first.cover.clone();
        for z in rest {
            geometry = geometry.union(&z.geometry);
            // Interior to one zone is interior to the union; edge in both stays edge (conservative: exact tests).
            cover.merge(&z.cover);
        }
        Ok(AlertArea { area_km2: projection::area_km2(&geometry), geometry, cover })
    }

    /// The cell sites whose footprint intersects the area (optionally of one carrier), in load order: the cell
    /// list for a cell-broadcast warning area.
    pub fn cell_sites_for_area(&self, area: &AlertArea, mnc: Option<u16>) -> Vec<&CellSite> {
        self.targeted_site_ids(area, mnc).into_iter().filter_map(|i| self.sites.sites.get(i as usize)).collect()
    }

    /// Site positions (sorted) whose footprint intersects the area: bounding boxes reject most sites, the
    /// antenna's cell accepts those standing well inside, an exact polygon test decides the rest.
    fn targeted_site_ids(&self, area: &AlertArea, mnc: Option<u16>) -> Vec<u32> {
        let Some(area_box) = area.geometry.bounding_rect() else { return Vec::new() };
        let mut out = Vec::new();
        for (i, site) in self.sites.sites.iter().enumerate() {
            if mnc.is_some_and(|m| site.ecgi.mnc != m) || !boxes_meet(&site.bbox, &area_box) {
                continue;
            }
            if area.cover.get(site.site_cell) == Some(true) || site.footprint.intersects(&area.geometry) {
                out.push(i as u32);
            }
        }
        out
    }

    /// Measures a strategy for an area (see the module doc for each figure).
    pub fn geotarget(&self, area: &AlertArea, strategy: TargetingStrategy) -> Result<TargetingReport, GeoError> {
        match strategy {
            TargetingStrategy::CellBroadcast { mnc } => Ok(self.target_cell_broadcast(area, mnc)),
            TargetingStrategy::AppH3 { resolution } => self.target_app(area, resolution),
        }
    }

    /// Cell broadcast (all carriers), the app at the index resolution and, when that misses the WEA limit, the app
    /// at the coarsest resolution that meets it: the choice an operator is offered.
    pub fn geotarget_options(&self, area: &AlertArea) -> Result<Vec<TargetingReport>, GeoError> {
        let mut out = vec![self.target_cell_broadcast(area, None)];
        let app = self.target_app(area, self.resolution())?;
        let tighter = app.tighter;
        out.push(app);
        if let Some(t) = tighter {
            out.push(self.geotarget(area, t)?);
        }
        Ok(out)
    }

    fn target_cell_broadcast(&self, area: &AlertArea, mnc: Option<u16>) -> TargetingReport {
        let ids = self.targeted_site_ids(area, mnc);
        let mut is_targeted = vec![false; self.sites.sites.len()];
        for &i in &ids {
            is_targeted[i as usize] = true;
        }
        let mut areas = CellAreas::default();

        // One pass over the targeted footprints' cells: which area cells have their centre in a footprint, which
        // outside cells are reached, and which sites reach beyond the area (only those can overshoot).
        let mut reached_in: HashSet<CellIndex, RandomState> =
            HashSet::with_capacity_and_hasher(area.cover.len(), RandomState::new());
        let mut reached_out: HashSet<CellIndex, RandomState> = HashSet::default();
        let mut crossing: Vec<u32> = Vec::new();
        for &i in &ids {
            let Some(site) = self.sites.sites.get(i as usize) else { continue };
            let mut crosses = false;
            for &(cell, centre_in_footprint) in &site.cells {
                match area.cover.get(cell) {
                    Some(interior) => {
                        crosses |= !interior;
                        if centre_in_footprint {
                            reached_in.insert(cell);
                        }
                    }
                    None => {
                        crosses = true;
                        if centre_in_footprint {
                            reached_out.insert(cell);
                        }
                    }
                }
            }
            if crosses {
                crossing.push(i);
            }
        }

        // Coverage: each area cell is judged at one sample point of the area — its centre when that lies in the
        // area, else the area's boundary point nearest the centre — and is covered when a targeted footprint holds
        // that point.
        let ruler = Ruler::new(area);
        let (mut total, mut covered, mut reach_in_km2) = (0.0, 0.0, 0.0);
        let mut uncovered = Vec::new();
        for (cell, _, centre_in_area) in area.cover.flagged() {
            let a = areas.km2(cell);
            total += a;
            let centre_reached = reached_in.contains(&cell);
            if centre_reached {
                reach_in_km2 += a;
            }
            let hit = if centre_in_area {
                centre_reached
            } else {
                let centre = LatLng::from(cell);
                let sample = ruler.nearest_boundary_point(Coord { x: centre.lng(), y: centre.lat() });
                self.sites_holding(sample).any(|s| is_targeted[s as usize])
            };
            if hit {
                covered += a;
            } else {
                uncovered.push(cell);
            }
        }
        let covered_share = if total > 0.0 { covered / total } else { 0.0 };
        let reach_km2 = reach_in_km2 + reached_out.iter().map(|c| areas.km2(*c)).sum::<f64>();

        // Farthest: vertices of the footprints that cross the area's edge. A vertex can only raise the maximum if
        // its distance to the boundary does, so the inside/outside test runs only for those.
        let mut farthest: f64 = 0.0;
        for &i in &crossing {
            let Some(site) = self.sites.sites.get(i as usize) else { continue };
            let bulge = site.range_m * (1.0 - (site.arc_step_deg.to_radians() / 2.0).cos());
            for c in &site.footprint.exterior().0 {
                let d = ruler.distance(*c) + bulge;
                if d > farthest && !ruler.inside(area, *c, self.resolution()) {
                    farthest = d;
                }
            }
        }

        let mut sites: Vec<Ecgi> =
            ids.iter().filter_map(|i| self.sites.sites.get(*i as usize)).map(|s| s.ecgi).collect();
        sites.sort_unstable();
        uncovered.sort_unstable();
        let meets_wea = covered_share >= 1.0 && farthest <= WEA_MAX_OVERSHOOT_M;
        TargetingReport {
            strategy: TargetingStrategy::CellBroadcast { mnc },
            area_km2: area.area_km2,
            covered_share,
            reach_km2,
            overshoot_km2: (reach_km2 - area.area_km2 * covered_share).max(0.0),
            farthest_overshoot_m: farthest,
            meets_wea,
            sites,
            cells: Vec::new(),
            uncovered_cells: uncovered,
            tighter: (!meets_wea).then(|| TargetingStrategy::AppH3 { resolution: wea_resolution(self.resolution()) }),
        }
    }

    /// Positions of the sites whose footprint holds a lon/lat point (exact test).
    fn sites_holding(&self, c: Coord<f64>) -> impl Iterator<Item = u32> + '_ {
        let cell = LatLng::new(c.y, c.x).ok().map(|ll| ll.to_cell(self.resolution()));
        cell.and_then(|cell| self.sites.by_cell.get(&cell))
            .into_iter()
            .flatten()
            .filter(move |(s, _)| {
                self.sites.sites.get(*s as usize).is_some_and(|site| site.footprint.intersects(&Point(c)))
            })
            .map(|(s, _)| *s)
    }

    fn target_app(&self, area: &AlertArea, resolution: Resolution) -> Result<TargetingReport, GeoError> {
        let owned;
        let cover = if resolution == area.cover.resolution() {
            &area.cover
        } else {
            owned = CellCover::tile(&area.geometry, resolution).map_err(GeoError::InvalidArea)?;
            &owned
        };
        let mut areas = CellAreas::default();
        let reach_km2: f64 = cover.cells().map(|c| areas.km2(c)).sum();
        let ruler = Ruler::new(area);
        let mut farthest: f64 = 0.0;
        for (cell, interior) in cover.annotated() {
            if interior {
                continue;
            }
            for v in cell.boundary().iter() {
                let c = Coord { x: v.lng(), y: v.lat() };
                if !area.geometry.intersects(&Point(c)) {
                    farthest = farthest.max(ruler.distance(c));
                }
            }
        }
        let mut cells: Vec<CellIndex> = cover.cells().collect();
        cells.sort_unstable();
        let meets_wea = farthest <= WEA_MAX_OVERSHOOT_M;
        Ok(TargetingReport {
            strategy: TargetingStrategy::AppH3 { resolution },
            area_km2: area.area_km2,
            // Covers mode: every point of the area is in one of its cells.
            covered_share: 1.0,
            reach_km2,
            overshoot_km2: (reach_km2 - area.area_km2).max(0.0),
            farthest_overshoot_m: farthest,
            meets_wea,
            sites: Vec::new(),
            cells,
            uncovered_cells: Vec::new(),
            tighter: (!meets_wea && resolution < Resolution::Fifteen)
                .then(|| TargetingStrategy::AppH3 { resolution: wea_resolution(resolution) }),
        })
    }
}

/// The coarsest resolution finer than `from` whose cells (worst case two average edges across, with margin for
/// H3's size variation) stay within the WEA overshoot limit.
fn wea_resolution(from: Resolution) -> Resolution {
    let mut r = from;
    while r < Resolution::Fifteen {
        if 2.0 * r.edge_length_m() * 1.2 <= WEA_MAX_OVERSHOOT_M {
            return r;
        }
        r = r.succ().unwrap_or(Resolution::Fifteen);
    }
    r
}

/// Cached cell areas: one exact H3 area per parent three levels up (see the module doc).
#[derive(Default)]
struct CellAreas {
    by_patch: HashMap<CellIndex, f64, RandomState>,
}

impl CellAreas {
    fn km2(&mut self, cell: CellIndex) -> f64 {
        let res = cell.resolution();
        let patch_res = Resolution::try_from(u8::from(res).saturating_sub(3)).unwrap_or(res);
        let key = cell.parent(patch_res).unwrap_or(cell);
        *self.by_patch.entry(key).or_insert_with(|| cell.area_km2())
    }
}

/// Distances (metres) to an area's boundary through an R-tree of its edges in a local projection.
struct Ruler {
    proj: LocalProjection,
    edges: RTree<GeomWithData<Line<f64>, ()>>,
}

impl Ruler {
    fn new(area: &AlertArea) -> Self {
        let proj = LocalProjection::for_multipolygon(&area.geometry);
        let mut lines = Vec::new();
        for p in &area.geometry.0 {
            for ring in std::iter::once(p.exterior()).chain(p.interiors()) {
                for l in ring.lines() {
                    lines.push(GeomWithData::new(Line::new(proj.to_local(l.start), proj.to_local(l.end)), ()));
                }
            }
        }
        Self { proj, edges: RTree::bulk_load(lines) }
    }

    /// Distance from a lon/lat point to the area's boundary.
    fn distance(&self, c: Coord<f64>) -> f64 {
        let p = self.proj.to_local(c);
        self.edges.nearest_neighbor(&Point(p)).map_or(0.0, |l| {
            use geo::{Distance, Euclidean};
            Euclidean.distance(l.geom(), &Point(p))
        })
    }

    /// The point of the area's boundary nearest to a lon/lat point (the point itself if there is no boundary).
    fn nearest_boundary_point(&self, c: Coord<f64>) -> Coord<f64> {
        use geo::{Closest, ClosestPoint};
        let p = Point(self.proj.to_local(c));
        match self.edges.nearest_neighbor(&p).map(|l| l.geom().closest_point(&p)) {
            Some(Closest::Intersection(q) | Closest::SinglePoint(q)) => self.proj.to_geo(q.0),
            _ => c,
        }
    }

    /// Is a lon/lat point in the area (boundary included)? The area's cells settle most points with one lookup.
    fn inside(&self, area: &AlertArea, c: Coord<f64>, resolution: Resolution) -> bool {
        let cell = LatLng::new(c.y, c.x).ok().map(|ll| ll.to_cell(resolution));
        match cell.and_then(|cell| area.cover.get(cell)) {
            Some(true) => true,
            // Not in the cover (or an edge cell): the exact test; see `cover.rs` on why "not in the cover" is not
            // taken as "outside" without it.
            _ => area.geometry.intersects(&Point(c)),
        }
    }
}

fn boxes_meet(a: &Rect<f64>, b: &Rect<f64>) -> bool {
    a.min().x <= b.max().x && b.min().x <= a.max().x && a.min().y <= b.max().y && b.min().y <= a.max().y
}
