//! # geo-index
//!
//! Everything spatial in disaster-cloud asks this crate: which hazard zones contain a sensor, which sensors lie in a
//! zone, which 4G cells to broadcast to for an alert area, what CAP `<polygon>` outlines that area, and how well a
//! targeting strategy fits the area (coverage and overshoot, in figures). Pure logic over [`h3o`] and [`geo`]: no
//! I/O (callers pass file *contents*), no clocks.
//!
//! ## Layout
//! - `index.rs` — [`GeoIndex`]: the one object holding zones, sensors and cell sites at one H3 resolution, and the
//!   point/zone/polygon/k-ring/neighbour queries; [`LoadPolicy`].
//! - `zone.rs` — [`Zone`], [`ZoneKind`]: parsing zones from GeoJSON (properties, geometry checks, buffering of road
//!   and river centre lines), GeoJSON output.
//! - `cover.rs` — [`CellCover`]: an area's H3 cells, each flagged interior or edge. **Why the `Covers` containment
//!   mode** is explained there: no false negatives, exact answers restored at edges from the geometry.
//! - `sensor.rs` — [`Sensor`] and the movable sensor ↔ cell index.
//! - `site.rs` — [`CellSite`], [`Ecgi`]: 4G cells from CSV, sector footprints and their cells.
//! - `targeting.rs` — [`AlertArea`], [`TargetingStrategy`], [`TargetingReport`]: which cell sites (or which H3
//!   cells, for the app) to target for an area, with covered share, overshoot km² and farthest overshoot metres.
//! - `outline.rs` — CAP 1.2 polygons that cover every cell of an area within a vertex budget.
//! - `geocode.rs` — Taiwan_Geocode_103 checks.
//! - `projection.rs` — local metric projection for buffers, areas and distances.
//! - `error.rs` — [`GeoError`], and [`ZoneError`]/[`SiteError`] that name the bad zone or site and the reason.
//!
//! Benchmarks are in `benches/geo_index.rs` and their figures in `BENCHMARKS.md`; property tests against brute
//! force in `tests/properties.rs`; demo data in `config/zones.geojson` and `config/cell_sites.csv`.

mod cover;
mod error;
mod geocode;
mod index;
mod outline;
mod projection;
mod sensor;
mod site;
mod targeting;
mod zone;

pub use cover::CellCover;
pub use error::{GeoError, SiteError, SiteProblem, ZoneError, ZoneProblem};
pub use geocode::{parse_geocode, Geocode, GeocodeLevel};
pub use h3o::{CellIndex, LatLng, Resolution};
pub use index::{cell_at, GeoIndex, LoadPolicy};
pub use outline::parse_cap_polygon;
pub use sensor::Sensor;
pub use site::{CellSite, Ecgi};
pub use targeting::{AlertArea, TargetingReport, TargetingStrategy, WEA_MAX_OVERSHOOT_M};
pub use zone::{multipolygon_to_geojson, Zone, ZoneKind};
