//! Errors of the geo index.
//!
//! Two levels, on purpose:
//! - [`ZoneError`] / [`SiteError`] name *one* configured object (a zone id or a cell site's ECGI / CSV line) and
//!   why it was rejected. Loading collects them so an operator sees every bad entry of a file at once.
//! - [`GeoError`] is what a call returns when it cannot go on at all (the file is not GeoJSON, a query point is
//!   out of range, or the policy said to stop at the first bad entry).
//!
//! Both are small, cloneable and comparable so callers and tests can `match` on the reason cheaply.

use thiserror::Error;

/// Why one zone of a GeoJSON file was rejected.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("zone {zone_id}: {reason}")]
pub struct ZoneError {
    /// The zone's `id` property, or `#<n>` (the feature's position) when the feature has no usable id.
    pub zone_id: String,
    /// What is wrong with it.
    pub reason: ZoneProblem,
}

/// The reasons a zone can be rejected.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ZoneProblem {
    #[error("missing or non-string `id` property")]
    MissingId,
    #[error("duplicate id (an earlier zone has the same id)")]
    DuplicateId,
    #[error("missing or unknown `kind` {0:?} (expected debris_flow, river_reach, road_segment, township, restricted)")]
    BadKind(String),
    #[error("feature has no geometry")]
    NoGeometry,
    #[error("empty geometry")]
    EmptyGeometry,
    #[error("unsupported geometry type {0} (expected Polygon, MultiPolygon, LineString or MultiLineString)")]
    UnsupportedGeometry(String),
    #[error("coordinate out of range: lon {lon}, lat {lat}")]
    CoordinateOutOfRange { lat: f64, lon: f64 },
    #[error("invalid polygon: {0}")]
    InvalidPolygon(String),
    #[error("line geometry needs a positive `width_m` property (metres), got {0:?}")]
    BadWidth(Option<f64>),
    #[error("bad geocode {code:?}: {why}")]
    BadGeocode { code: String, why: &'static str },
    #[error("bad `thresholds`: {0}")]
    BadThresholds(String),
    #[error("bad property `{name}`: {why}")]
    BadProperty { name: &'static str, why: String },
    #[error("zone cannot be indexed on H3: {0}")]
    Tiling(String),
    #[error(
        "its area would need about {cells} H3 cells at resolution {resolution}, more than the limit of {limit} \
         (a mistyped coordinate? otherwise split the zone or raise the limit)"
    )]
    TooManyCells { cells: u64, limit: u64, resolution: u8 },
}

/// Why one cell site of a CSV table was rejected.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("cell site {site} (line {line}): {reason}")]
pub struct SiteError {
    /// `MCC-MNC-ECI` when the row got that far, `?` otherwise.
    pub site: String,
    /// 1-based line number in the CSV text (the header is line 1).
    pub line: u64,
    /// What is wrong with it.
    pub reason: SiteProblem,
}

/// The reasons a cell site can be rejected.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SiteProblem {
    #[error("unreadable row: {0}")]
    Malformed(String),
    #[error("MCC {0} is not Taiwan's (466)")]
    NotTaiwan(u16),
    #[error("MNC {0} is not a 2- or 3-digit network code")]
    BadMnc(u16),
    #[error("ECI {0} does not fit in 28 bits")]
    BadEci(u64),
    #[error("TAC {0} does not fit in 16 bits")]
    BadTac(u64),
    #[error("coordinate out of range: lat {lat}, lon {lon}")]
    CoordinateOutOfRange { lat: f64, lon: f64 },
    #[error("azimuth_deg {0} is outside 0..360 degrees")]
    BadAzimuth(f64),
    #[error("beamwidth_deg {0} is outside (0, 360] degrees")]
    BadBeamwidth(f64),
    #[error("range_m {0} m is outside (0, 100000] m")]
    BadRange(f64),
    #[error(
        "range_m {range_m} m: the footprint would need about {cells} H3 cells at resolution {resolution}, more than \
         the limit of {limit} per site (check range_m, or raise the limit)"
    )]
    FootprintTooLarge { range_m: f64, cells: u64, limit: u64, resolution: u8 },
    #[error("duplicate ECGI (an earlier row has the same one)")]
    DuplicateEcgi,
}

/// What a geo-index call returns when it cannot complete.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum GeoError {
    #[error("zones file is not valid GeoJSON: {0}")]
    GeoJson(String),
    #[error("zones file must be a GeoJSON FeatureCollection")]
    NotAFeatureCollection,
    #[error(transparent)]
    Zone(#[from] ZoneError),
    #[error("cell-site table has no usable header: {0}")]
    SiteHeader(String),
    #[error(transparent)]
    Site(#[from] SiteError),
    #[error("coordinate out of range: lat {lat}, lon {lon}")]
    CoordinateOutOfRange { lat: f64, lon: f64 },
    #[error("invalid area: {0}")]
    InvalidArea(String),
    #[error("unknown zone {0:?}")]
    UnknownZone(String),
    #[error("unknown sensor {0:?}")]
    UnknownSensor(String),
}
