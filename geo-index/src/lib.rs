//! # geo-index
//!
//! Everything spatial in disaster-cloud asks this crate: which hazard zones contain a sensor, which sensors lie in a
//! zone, which 4G cells to broadcast to for an alert area, what CAP `<polygon>` outlines that area, and how well a
//! targeting strategy fits the area (coverage and overshoot, in figures). Pure logic over [`h3o`] and [`geo`]: no
//! I/O (callers pass file *contents*), no clocks.
//!
//! ## Layout
//! - `index.rs` — [`GeoIndex`]: the one object holding zones, sensors and cell sites at one H3 resolution, and the
//!   point/zone/polygon/k-ring/neighbour queries; [`LoadPolicy`]; [`GeoLimits`] (most H3 cells a zone or a cell
//!   site's footprint may need).
//! - `zone.rs` — [`Zone`], [`ZoneKind`]: parsing zones from GeoJSON (properties, geometry checks, buffering of road
//!   and river centre lines), GeoJSON output.
//! - `cover.rs` — [`CellCover`]: an area's H3 cells, each flagged interior or edge. **Why the `Covers` containment
//!   mode** is explained there: no false negatives, exact answers restored at edges from the geometry.
//! - `sensor.rs` — [`Sensor`] and the movable sensor ↔ cell index.
//! - `site.rs` — [`CellSite`], [`Ecgi`]: 4G cells from CSV, sector footprints and their cells.
//! - `targeting.rs` — [`AlertArea`], [`TargetingStrategy`], [`TargetingReport`]: which cell sites (or which H3
//!   cells, for the app) to target for an area, with covered share, overshoot km² and farthest overshoot metres.
//! - `outline.rs` — CAP 1.2 polygons that cover every cell of an area within a vertex budget.
//! - `geofence.rs` — [`GeofenceOutline`]: the area simplified *outward* to fit a phone-side geofence encoding
//!   (never smaller than the area, worst displacement recorded), and [`GeofencedOvershoot`]: what is left of the
//!   cell-level overshoot when phones check their position against it.
//! - `geocode.rs` — Taiwan_Geocode_103 checks.
//! - `projection.rs` — local metric projection for buffers, areas and distances.
//! - `error.rs` — [`GeoError`], and [`ZoneError`]/[`SiteError`] that name the bad zone or site and the reason.
//!
//! Benchmarks are in `benches/geo_index.rs` and their figures in `BENCHMARKS.md`; property tests against brute
//! force in `tests/properties.rs`, bad input in `tests/bad_input.rs`, demo-data checks in `tests/demo_data.rs` and
//! `tests/queries.rs`. Demo data (approximate coordinates, plausible but made-up cells) is `config/zones.geojson`
//! and `config/cell_sites.csv`, written by `scripts/gen_demo_data.py`.
//!
//! ## Using it
//! ```
//! use geo_index::{GeoIndex, LoadPolicy, Resolution, TargetingStrategy};
//! let mut index = GeoIndex::new(Resolution::Nine);
//! let zones = r#"{"type": "FeatureCollection", "features": [{"type": "Feature",
//!     "properties": {"id": "dfa-demo", "kind": "debris_flow", "geocode": "1000812", "thresholds": {"rain_24h_mm": 250}},
//!     "geometry": {"type": "Polygon", "coordinates": [[[120.91, 23.50], [120.95, 23.50], [120.95, 23.54], [120.91, 23.54], [120.91, 23.50]]]}}]}"#;
//! let problems = index.load_zones(zones, LoadPolicy::SkipInvalid)?;
//! assert!(problems.is_empty());
//! assert_eq!(index.zones_containing(23.5185, 120.9280)[0].id, "dfa-demo");
//! index.upsert_sensor("rain-1", 23.52, 120.93)?;
//! assert_eq!(index.sensors_in_zone("dfa-demo")?.len(), 1);
//! let area = index.alert_area_of_zones(&["dfa-demo"])?;
//! let report = index.geotarget(&area, TargetingStrategy::AppH3 { resolution: Resolution::Nine })?;
//! assert_eq!(report.covered_share, 1.0);
//! let cap = index.zone("dfa-demo").map(|z| z.cap_polygons(100)).unwrap_or_default();
//! assert!(cap[0].starts_with("23."));
//! # Ok::<(), geo_index::GeoError>(())
//! ```

mod cover;
mod error;
mod geocode;
mod geofence;
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
pub use geofence::{GeofenceOutline, GeofencedOvershoot, OutlineBudget};
pub use h3o::{CellIndex, LatLng, Resolution};
pub use index::{cell_at, GeoIndex, GeoLimits, LoadPolicy};
pub use outline::parse_cap_polygon;
pub use sensor::Sensor;
pub use site::{CellSite, Ecgi};
pub use targeting::{AlertArea, TargetingReport, TargetingStrategy, WEA_MAX_OVERSHOOT_M};
pub use zone::{multipolygon_to_geojson, Road, Zone, ZoneKind};
