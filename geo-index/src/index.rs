//! [`GeoIndex`]: the one object everything spatial asks — zones, sensors and cell sites on one H3 resolution.

use crate::{
    cover::CellCover,
    error::SiteError,
    error::{GeoError, ZoneError, ZoneProblem},
    projection::haversine_m,
    sensor::{Sensor, SensorIndex},
    site::{parse_sites, CellSite, Ecgi, SiteIndex},
    zone::{check_polygons, parse_feature, Zone},
};
use ahash::RandomState;
use geo::{Intersects, MultiPolygon, Point};
use h3o::{CellIndex, LatLng, Resolution};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// What to do when a zone or cell site in a config file is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadPolicy {
    /// Load the good entries and return the problems of the bad ones (the caller logs them).
    #[default]
    SkipInvalid,
    /// Load nothing from the file and return the first problem as an error.
    StopOnFirst,
}

/// How big one zone or one cell-site footprint may be, in H3 cells at the index resolution. Tiling time and memory
/// grow with the cell count (about 1 µs and 40 bytes a cell), so one mistyped coordinate in a config file could
/// otherwise stall start-up for minutes (findings F3 and F4 of `fuzz/README.md`). The check runs on an estimate
/// ([`CellCover::estimated_cells`]) before any tiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeoLimits {
    /// Most cells one zone may need. The default, 200,000, is about 21,000 km² at resolution 9: four times
    /// Taiwan's largest county, so only a typo or a deliberately huge zone reaches it.
    pub max_zone_cells: u64,
    /// Most cells one cell-site footprint may need. The default, 100,000, is about an omni cell of 58 km radius at
    /// resolution 9 (real LTE cells in Taiwan reach a few km, sea-facing ones tens of km).
    pub max_site_cells: u64,
}

impl Default for GeoLimits {
    fn default() -> Self {
        Self { max_zone_cells: 200_000, max_site_cells: 100_000 }
    }
}

/// Zones, sensors and 4G cell sites indexed on H3 at one resolution.
#[derive(Debug, Clone)]
pub struct GeoIndex {
    /// Resolution of every cell in the index (9 ≈ 0.1 km² cells, ≈174 m edges, is the usual choice).
    resolution: Resolution,
    /// Size limits checked when zones and cell sites are loaded.
    limits: GeoLimits,
    /// Zones in load order; a removed zone leaves `None` so slot numbers in `zone_cells` stay valid.
    zones: Vec<Option<Zone>>,
    /// Zone id → slot in `zones`.
    zone_ids: HashMap<String, usize, RandomState>,
    /// Cell → (zone slot, cell fully inside the zone?). Includes one ring of padding around each zone's edge cells
    /// (flagged edge) so that a point is never missed because of the tiler's lon/lat-straight edges (`cover.rs`).
    zone_cells: HashMap<CellIndex, Vec<(u32, bool)>, RandomState>,
    /// Sensors by id and by cell.
    pub(crate) sensors: SensorIndex,
    /// Cell sites, their footprints and their cells.
    pub(crate) sites: SiteIndex,
}

impl GeoIndex {
    /// An empty index whose cells are all at `resolution`, with the default [`GeoLimits`].
    pub fn new(resolution: Resolution) -> Self {
        Self::with_limits(resolution, GeoLimits::default())
    }

    /// An empty index with explicit size limits for zones and cell-site footprints.
    pub fn with_limits(resolution: Resolution, limits: GeoLimits) -> Self {
        Self {
            resolution,
            limits,
            zones: Vec::new(),
            zone_ids: HashMap::default(),
            zone_cells: HashMap::default(),
            sensors: SensorIndex::default(),
            sites: SiteIndex::default(),
        }
    }

    /// The resolution of the index's cells.
    pub fn resolution(&self) -> Resolution {
        self.resolution
    }

    /// The size limits zones and cell sites are loaded with.
    pub fn limits(&self) -> GeoLimits {
        self.limits
    }

    /// The H3 cell of a point at the index resolution.
    pub fn cell_at(&self, lat: f64, lon: f64) -> Result<CellIndex, GeoError> {
        cell_at(lat, lon, self.resolution)
    }

    // ---------------------------------------------------------------- zones

    /// Parses a GeoJSON FeatureCollection of zones and adds them (see `zone.rs` for the properties).
    ///
    /// With [`LoadPolicy::SkipInvalid`] the good zones are added and the problems of the others are returned, each
    /// naming the zone id (or `#n` for a feature without one) and the reason. With [`LoadPolicy::StopOnFirst`]
    /// nothing is added and the first problem is the error. A zone whose id is already loaded is a problem
    /// ([`ZoneProblem::DuplicateId`]); remove it first to replace it. A zone that would need more H3 cells than
    /// [`GeoLimits::max_zone_cells`] is a problem ([`ZoneProblem::TooManyCells`]), found before tiling it.
    pub fn load_zones(&mut self, geojson_text: &str, on_error: LoadPolicy) -> Result<Vec<ZoneError>, GeoError> {
        let doc: Value = serde_json::from_str(geojson_text).map_err(|e| GeoError::GeoJson(e.to_string()))?;
        if doc.get("type").and_then(Value::as_str) != Some("FeatureCollection") {
            return Err(GeoError::NotAFeatureCollection);
        }
        let features = doc.get("features").and_then(Value::as_array).ok_or(GeoError::NotAFeatureCollection)?;
        let mut problems = Vec::new();
        let mut accepted: Vec<Zone> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for (index, feature) in features.iter().enumerate() {
            let parsed = parse_feature(feature, index, self.resolution, self.limits.max_zone_cells).and_then(|zone| {
                if self.zone_ids.contains_key(&zone.id) || !seen.insert(zone.id.clone()) {
                    Err(ZoneError { zone_id: zone.id, reason: ZoneProblem::DuplicateId })
                } else {
                    Ok(zone)
                }
            });
            match parsed {
                Ok(zone) => accepted.push(zone),
                Err(problem) if on_error == LoadPolicy::StopOnFirst => return Err(problem.into()),
                Err(problem) => problems.push(problem),
            }
        }
        for zone in accepted {
            self.insert_zone(zone);
        }
        Ok(problems)
    }

    fn insert_zone(&mut self, zone: Zone) {
        let slot = self.zones.len();
        let slot32 = u32::try_from(slot).unwrap_or(u32::MAX);
        for (cell, interior) in zone.cover.annotated() {
            self.zone_cells.entry(cell).or_default().push((slot32, interior));
        }
        for padding in padding_cells(&zone.cover) {
            self.zone_cells.entry(padding).or_default().push((slot32, false));
        }
        self.zone_ids.insert(zone.id.clone(), slot);
        self.zones.push(Some(zone));
    }

    /// Removes a zone (e.g. before loading a corrected version); returns it.
    pub fn remove_zone(&mut self, id: &str) -> Option<Zone> {
        let slot = self.zone_ids.remove(id)?;
        let zone = self.zones.get_mut(slot)?.take()?;
        let slot32 = u32::try_from(slot).unwrap_or(u32::MAX);
        let cells: Vec<CellIndex> = zone.cover.cells().chain(padding_cells(&zone.cover)).collect();
        for cell in cells {
            if let Some(entries) = self.zone_cells.get_mut(&cell) {
                entries.retain(|(s, _)| *s != slot32);
                if entries.is_empty() {
                    self.zone_cells.remove(&cell);
                }
            }
        }
        Some(zone)
    }

    /// Every zone, in load order.
    pub fn zones(&self) -> impl Iterator<Item = &Zone> {
        self.zones.iter().flatten()
    }

    /// A zone by id.
    pub fn zone(&self, id: &str) -> Option<&Zone> {
        self.zone_ids.get(id).and_then(|&slot| self.zones.get(slot)).and_then(Option::as_ref)
    }

    /// The zones containing a point (boundary included), in load order. One hash lookup finds the candidate zones
    /// of the point's cell; only zones for which the cell is an edge cell are checked against the exact geometry.
    /// An out-of-range point is in no zone.
    pub fn zones_containing(&self, lat: f64, lon: f64) -> Vec<&Zone> {
        let Ok(cell) = self.cell_at(lat, lon) else { return Vec::new() };
        let Some(entries) = self.zone_cells.get(&cell) else { return Vec::new() };
        let point = Point::new(lon, lat);
        let mut slots: Vec<u32> = entries
            .iter()
            .filter(|(slot, interior)| {
                *interior
                    || self
                        .zones
                        .get(*slot as usize)
                        .and_then(Option::as_ref)
                        .is_some_and(|z| z.geometry.intersects(&point))
            })
            .map(|(slot, _)| *slot)
            .collect();
        slots.sort_unstable();
        slots.dedup();
        slots.into_iter().filter_map(|s| self.zones.get(s as usize).and_then(Option::as_ref)).collect()
    }

    // ---------------------------------------------------------------- sensors

    /// Adds a sensor or moves it; returns its (new) cell. Vehicles call this on every position report.
    pub fn upsert_sensor(&mut self, id: &str, lat: f64, lon: f64) -> Result<CellIndex, GeoError> {
        let cell = self.cell_at(lat, lon)?;
        self.sensors.upsert(id, lat, lon, cell);
        Ok(cell)
    }

    /// Forgets a sensor; returns its last position.
    pub fn remove_sensor(&mut self, id: &str) -> Option<Sensor> {
        self.sensors.remove(id)
    }

    /// A sensor by id.
    pub fn sensor(&self, id: &str) -> Option<&Sensor> {
        self.sensors.by_id.get(id)
    }

    /// Every sensor, in no particular order.
    pub fn sensors(&self) -> impl Iterator<Item = &Sensor> {
        self.sensors.by_id.values()
    }

    /// The zones a sensor is in (a sensor in a hazard area that goes silent is itself a signal).
    pub fn zones_of_sensor(&self, id: &str) -> Result<Vec<&Zone>, GeoError> {
        let s = self.sensor(id).ok_or_else(|| GeoError::UnknownSensor(id.to_owned()))?;
        Ok(self.zones_containing(s.lat, s.lon))
    }

    /// The sensors inside a zone (boundary included), sorted by id.
    pub fn sensors_in_zone(&self, zone_id: &str) -> Result<Vec<&Sensor>, GeoError> {
        let zone = self.zone(zone_id).ok_or_else(|| GeoError::UnknownZone(zone_id.to_owned()))?;
        Ok(self.sensors_in(&zone.geometry, &zone.cover))
    }

    /// The sensors inside an arbitrary lon/lat multipolygon (boundary included), sorted by id. The polygon is
    /// checked like a zone's and tiled on the fly.
    pub fn sensors_in_polygon(&self, area: &MultiPolygon<f64>) -> Result<Vec<&Sensor>, GeoError> {
        if area.0.is_empty() {
            return Err(GeoError::InvalidArea(ZoneProblem::EmptyGeometry.to_string()));
        }
        check_polygons(area).map_err(|p| GeoError::InvalidArea(p.to_string()))?;
        // Few sensors: testing each one exactly is cheaper than tiling the polygon.
        if self.sensors.by_id.len() < 64 {
            let mut found: Vec<&Sensor> =
                self.sensors().filter(|s| area.intersects(&Point::new(s.lon, s.lat))).collect();
            found.sort_by(|a, b| a.id.cmp(&b.id));
            return Ok(found);
        }
        let cover = CellCover::tile(area, self.resolution).map_err(GeoError::InvalidArea)?;
        Ok(self.sensors_in(area, &cover))
    }

    /// Sensors in a geometry given its cover: interior cells are taken whole, edge cells (and their padding ring)
    /// sensor by sensor against the exact geometry. Walks whichever is smaller, the cells or the sensors.
    fn sensors_in<'a>(&'a self, geometry: &MultiPolygon<f64>, cover: &CellCover) -> Vec<&'a Sensor> {
        let exact = |s: &Sensor| geometry.intersects(&Point::new(s.lon, s.lat));
        let mut found: Vec<&Sensor> = if self.sensors.by_id.len() <= cover.len() {
            self.sensors()
                .filter(|s| match cover.get(s.cell) {
                    Some(true) => true,
                    Some(false) => exact(s),
                    // Not in the cover: only a hair-thin mismatch of edges can put it inside, and then it is next
                    // to an edge cell (the padding ring of cover.rs).
                    None => s.cell.grid_disk_safe(1).any(|c| cover.get(c) == Some(false)) && exact(s),
                })
                .collect()
        } else {
            let mut v = Vec::new();
            for (cell, interior) in cover.annotated() {
                v.extend(self.sensors.in_cell(cell).filter(|s| interior || exact(s)));
            }
            for cell in padding_cells(cover) {
                v.extend(self.sensors.in_cell(cell).filter(|s| exact(s)));
            }
            v
        };
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found.dedup_by(|a, b| a.id == b.id);
        found
    }

    /// The sensors whose cells are within `k` grid steps of the point's cell (k = 0: the same cell), sorted by id.
    pub fn sensors_in_k_ring(&self, lat: f64, lon: f64, k: u32) -> Result<Vec<&Sensor>, GeoError> {
        let origin = self.cell_at(lat, lon)?;
        let mut found: Vec<&Sensor> = if grid_disk_size(k) > self.sensors.by_id.len() as u64 {
            // The disk has more cells than there are sensors: ask each sensor its grid distance instead.
            self.sensors()
                .filter(|s| s.cell.grid_distance(origin).is_ok_and(|d| d >= 0 && d as u64 <= u64::from(k)))
                .collect()
        } else {
            origin.grid_disk_safe(k).flat_map(|c| self.sensors.in_cell(c)).collect()
        };
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    /// The other sensors within `radius_m` metres (great-circle) of a sensor, nearest first, with their distance:
    /// the neighbourhood for spatial correlation (does the gauge next door see the same rain?).
    pub fn sensor_neighbours(&self, id: &str, radius_m: f64) -> Result<Vec<(&Sensor, f64)>, GeoError> {
        let me = self.sensor(id).ok_or_else(|| GeoError::UnknownSensor(id.to_owned()))?;
        let radius_m = if radius_m.is_finite() { radius_m.max(0.0) } else { 0.0 };
        // Adjacent hexagon centres are √3·edge apart; H3 edges shrink to about half the average in the most
        // distorted places, so this k is safe everywhere. The exact distance filter then trims the disk.
        let edge = self.resolution.edge_length_m() * 0.5;
        let k_f = (radius_m / (3f64.sqrt() * edge)).ceil() + 1.0;
        let candidates: Vec<&Sensor> = if k_f > 1000.0 || grid_disk_size(k_f as u32) > self.sensors.by_id.len() as u64 {
            self.sensors().collect()
        } else {
            me.cell.grid_disk_safe(k_f as u32).flat_map(|c| self.sensors.in_cell(c)).collect()
        };
        let mut out: Vec<(&Sensor, f64)> = candidates
            .into_iter()
            .filter(|s| s.id != me.id)
            .map(|s| (s, haversine_m(me.lat, me.lon, s.lat, s.lon)))
            .filter(|(_, d)| *d <= radius_m)
            .collect();
        out.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.id.cmp(&b.0.id)));
        Ok(out)
    }

    // ---------------------------------------------------------------- cell sites

    /// Parses a CSV table of 4G cells (see `site.rs` for the columns) and adds them. Problems name the site
    /// (`MCC-MNC-ECI`) and the CSV line; the policy works as for [`GeoIndex::load_zones`]. A footprint that would
    /// need more H3 cells than [`GeoLimits::max_site_cells`] is a problem ([`SiteProblem::FootprintTooLarge`]).
    pub fn load_cell_sites(&mut self, csv_text: &str, on_error: LoadPolicy) -> Result<Vec<SiteError>, GeoError> {
        let (sites, problems) =
            parse_sites(csv_text, self.resolution, self.limits.max_site_cells, on_error, &self.sites.by_ecgi)?;
        for site in sites {
            self.sites.insert(site);
        }
        Ok(problems)
    }

    /// Every cell site, in load order.
    pub fn cell_sites(&self) -> impl Iterator<Item = &CellSite> {
        self.sites.sites.iter()
    }

    /// A cell site by ECGI.
    pub fn cell_site(&self, ecgi: &Ecgi) -> Option<&CellSite> {
        self.sites.by_ecgi.get(ecgi).and_then(|&i| self.sites.sites.get(i as usize))
    }

    /// The cell sites whose footprint contains a point (centre-of-cell semantics are not used here: exact).
    pub fn cell_sites_at(&self, lat: f64, lon: f64) -> Vec<&CellSite> {
        let Ok(cell) = self.cell_at(lat, lon) else { return Vec::new() };
        let point = Point::new(lon, lat);
        self.sites
            .by_cell
            .get(&cell)
            .into_iter()
            .flatten()
            .filter_map(|(i, _)| self.sites.sites.get(*i as usize))
            .filter(|s| s.footprint.intersects(&point))
            .collect()
    }
}

/// The H3 cell of a point; rejects NaN/infinite and out-of-range coordinates with the values in the error.
pub fn cell_at(lat: f64, lon: f64, resolution: Resolution) -> Result<CellIndex, GeoError> {
    if !(lat.is_finite() && lon.is_finite() && (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)) {
        return Err(GeoError::CoordinateOutOfRange { lat, lon });
    }
    LatLng::new(lat, lon).map(|ll| ll.to_cell(resolution)).map_err(|_| GeoError::CoordinateOutOfRange { lat, lon })
}

/// Number of cells in a k-disk: 1 + 3k(k+1).
fn grid_disk_size(k: u32) -> u64 {
    1 + 3 * u64::from(k) * (u64::from(k) + 1)
}

/// Neighbours of a cover's edge cells that are not in the cover: the safety ring described in `cover.rs`.
fn padding_cells(cover: &CellCover) -> impl Iterator<Item = CellIndex> + '_ {
    let mut seen: HashSet<CellIndex, RandomState> = HashSet::default();
    cover
        .annotated()
        .filter(|(_, interior)| !interior)
        .flat_map(|(cell, _)| cell.grid_disk_safe(1))
        .filter(move |c| !cover.contains(*c) && seen.insert(*c))
}
