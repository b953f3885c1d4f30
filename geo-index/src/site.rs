//! 4G cell sites (one row per sector cell) from CSV, their coverage footprints and H3 cells.
//!
//! Columns (header required, any order, extra columns ignored):
//! `carrier, mcc, mnc, eci, tac, lat, lon, azimuth_deg, beamwidth_deg, range_m`.
//! `eci` is the 28-bit E-UTRAN cell identity (eNB id << 8 | cell id), decimal or `0x` hex; with MCC and MNC it
//! makes the ECGI that SBc-AP's warning area cell list carries. A beam width of 360 is an omni cell.
//!
//! The footprint is a circular sector (site, arc of `range_m` from `azimuth ± beamwidth/2`), a planning
//! approximation: real coverage follows terrain. Its cells are tiled with `Covers` (every cell it touches, see
//! `cover.rs`), and for each cell the tiler also tells whether the cell's centre is inside the footprint — the
//! targeting report counts an area cell as covered when a targeted footprint holds its centre (`targeting.rs`).

use crate::{
    cover::CellCover,
    error::{GeoError, SiteError, SiteProblem},
    index::LoadPolicy,
    projection::LocalProjection,
};
use ahash::RandomState;
use geo::{BoundingRect, Coord, LineString, Polygon, Rect};
use h3o::{CellIndex, Resolution};
use serde::{Deserialize, Serialize};
use std::{collections::HashMap, fmt};

/// E-UTRAN Cell Global Identifier: PLMN (MCC + MNC) and the 28-bit cell identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Ecgi {
    /// Mobile country code: 466 for Taiwan.
    pub mcc: u16,
    /// Mobile network code: 92 Chunghwa Telecom, 97 Taiwan Mobile, 1 FarEasTone (written `01`).
    pub mnc: u16,
    /// Digits of the MNC as configured (2 in Taiwan); the PLMN's BCD encoding depends on it.
    pub mnc_digits: u8,
    /// E-UTRAN cell identity, 28 bits.
    pub eci: u32,
}

impl Ecgi {
    /// The eNodeB id (upper 20 bits of the ECI).
    pub fn enb_id(&self) -> u32 {
        self.eci >> 8
    }
    /// The cell within the eNodeB (lower 8 bits).
    pub fn cell_id(&self) -> u8 {
        (self.eci & 0xff) as u8
    }
}

impl fmt::Display for Ecgi {
    /// `466-92-1234567` (MCC-MNC-ECI, ECI in decimal).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:0w$}-{}", self.mcc, self.mnc, self.eci, w = usize::from(self.mnc_digits))
    }
}

/// One 4G cell (sector) of a carrier.
#[derive(Debug, Clone)]
pub struct CellSite {
    /// Carrier name as configured (`Chunghwa Telecom`).
    pub carrier: String,
    /// The cell's global id, what a cell-broadcast cell list names.
    pub ecgi: Ecgi,
    /// Tracking area code: a TAI list is the coarser alternative to a cell list.
    pub tac: u16,
    /// Antenna position, degrees WGS84.
    pub lat: f64,
    /// Antenna position, degrees WGS84.
    pub lon: f64,
    /// Main lobe direction, degrees clockwise from north.
    pub azimuth_deg: f64,
    /// Horizontal beam width in degrees (360 = omni).
    pub beamwidth_deg: f64,
    /// Planned coverage radius in metres.
    pub range_m: f64,
    /// Coverage footprint (lon/lat): the sector polygon.
    pub footprint: Polygon<f64>,
    /// Bounding box of the footprint: the cheap reject when looking for the sites of an area.
    pub(crate) bbox: Rect<f64>,
    /// The cell of the antenna position (a point of the footprint): if it lies wholly in an area, so does part of
    /// the footprint, and no exact test is needed.
    pub(crate) site_cell: CellIndex,
    /// Cells touching the footprint, each with "centre inside the footprint".
    pub(crate) cells: Vec<(CellIndex, bool)>,
    /// Arc sampling step (degrees): the true arc bulges out of the polygon by range·(1 − cos(step/2)), which the
    /// overshoot distance adds back.
    pub(crate) arc_step_deg: f64,
}

impl CellSite {
    /// The cells touching the footprint.
    pub fn cells(&self) -> impl Iterator<Item = CellIndex> + '_ {
        self.cells.iter().map(|(c, _)| *c)
    }
}

/// All sites plus the cell → sites inverted index used to find the sites for an area by lookup.
#[derive(Debug, Default, Clone)]
pub(crate) struct SiteIndex {
    /// Sites in load order; positions are the ids used below.
    pub(crate) sites: Vec<CellSite>,
    /// ECGI → position: duplicates are rejected, and the lead looks sites up by ECGI.
    pub(crate) by_ecgi: HashMap<Ecgi, u32, RandomState>,
    /// Cell → (site position, cell centre inside the site's footprint).
    pub(crate) by_cell: HashMap<CellIndex, Vec<(u32, bool)>, RandomState>,
}

impl SiteIndex {
    pub(crate) fn insert(&mut self, site: CellSite) {
        let id = u32::try_from(self.sites.len()).unwrap_or(u32::MAX);
        for (cell, centre_in) in &site.cells {
            self.by_cell.entry(*cell).or_default().push((id, *centre_in));
        }
        self.by_ecgi.insert(site.ecgi, id);
        self.sites.push(site);
    }
}

/// A CSV row as written; numbers that carry identity (MNC digits, hex ECI) are kept as text until checked.
#[derive(Debug, Deserialize)]
struct Row {
    carrier: String,
    mcc: String,
    mnc: String,
    eci: String,
    tac: String,
    lat: f64,
    lon: f64,
    azimuth_deg: f64,
    beamwidth_deg: f64,
    range_m: f64,
}

const COLUMNS: [&str; 10] =
    ["carrier", "mcc", "mnc", "eci", "tac", "lat", "lon", "azimuth_deg", "beamwidth_deg", "range_m"];

/// Parses the CSV text into sites. Returns the good sites and the problems of the bad rows; with
/// [`LoadPolicy::StopOnFirst`] the first problem is returned as an error instead.
pub(crate) fn parse_sites(
    csv_text: &str,
    resolution: Resolution,
    max_cells: u64,
    on_error: LoadPolicy,
    existing: &HashMap<Ecgi, u32, RandomState>,
) -> Result<(Vec<CellSite>, Vec<SiteError>), GeoError> {
    let mut reader =
        csv::ReaderBuilder::new().trim(csv::Trim::All).comment(Some(b'#')).from_reader(csv_text.as_bytes());
    let headers = reader.headers().map_err(|e| GeoError::SiteHeader(e.to_string()))?.clone();
    let missing: Vec<&str> = COLUMNS.iter().copied().filter(|c| !headers.iter().any(|h| h == *c)).collect();
    if !missing.is_empty() {
        return Err(GeoError::SiteHeader(format!("missing column(s) {}", missing.join(", "))));
    }
    let mut sites = Vec::new();
    let mut problems = Vec::new();
    let mut seen: std::collections::HashSet<Ecgi> = Default::default();
    for record in reader.records() {
        let result = record
            .map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                SiteError { site: "?".into(), line, reason: SiteProblem::Malformed(e.to_string()) }
            })
            .and_then(|rec| {
                let line = rec.position().map_or(0, |p| p.line());
                let row: Row = rec.deserialize(Some(&headers)).map_err(|e| SiteError {
                    site: "?".into(),
                    line,
                    reason: SiteProblem::Malformed(e.to_string()),
                })?;
                let site = build_site(row, resolution, max_cells).map_err(|(site, reason)| SiteError {
                    site,
                    line,
                    reason,
                })?;
                if existing.contains_key(&site.ecgi) || !seen.insert(site.ecgi) {
                    return Err(SiteError { site: site.ecgi.to_string(), line, reason: SiteProblem::DuplicateEcgi });
                }
                Ok(site)
            });
        match result {
            Ok(site) => sites.push(site),
            Err(problem) if on_error == LoadPolicy::StopOnFirst => return Err(problem.into()),
            Err(problem) => problems.push(problem),
        }
    }
    Ok((sites, problems))
}

fn parse_int(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// Checks a row and builds its footprint; the error carries the best name we have for the site.
fn build_site(row: Row, resolution: Resolution, max_cells: u64) -> Result<CellSite, (String, SiteProblem)> {
    let name = format!("{}-{}-{}", row.mcc, row.mnc, row.eci);
    let fail = |reason| (name.clone(), reason);
    let mcc = parse_int(&row.mcc).ok_or_else(|| fail(SiteProblem::Malformed(format!("mcc {:?}", row.mcc))))?;
    if mcc != 466 {
        return Err(fail(SiteProblem::NotTaiwan(u16::try_from(mcc).unwrap_or(u16::MAX))));
    }
    let mnc_digits = row.mnc.len();
    let mnc = row.mnc.parse::<u16>().ok().filter(|m| *m <= 999 && (mnc_digits == 2 || mnc_digits == 3));
    let Some(mnc) = mnc else {
        return Err(fail(SiteProblem::BadMnc(row.mnc.parse().unwrap_or(u16::MAX))));
    };
    let eci = parse_int(&row.eci).ok_or_else(|| fail(SiteProblem::Malformed(format!("eci {:?}", row.eci))))?;
    if eci >= 1 << 28 {
        return Err(fail(SiteProblem::BadEci(eci)));
    }
    let tac = parse_int(&row.tac).ok_or_else(|| fail(SiteProblem::Malformed(format!("tac {:?}", row.tac))))?;
    let tac = u16::try_from(tac).map_err(|_| fail(SiteProblem::BadTac(tac)))?;
    let (lat, lon) = (row.lat, row.lon);
    if !(lat.is_finite() && lon.is_finite() && (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)) {
        return Err(fail(SiteProblem::CoordinateOutOfRange { lat, lon }));
    }
    if !(row.azimuth_deg.is_finite() && (0.0..=360.0).contains(&row.azimuth_deg)) {
        return Err(fail(SiteProblem::BadAzimuth(row.azimuth_deg)));
    }
    if !(row.beamwidth_deg.is_finite() && row.beamwidth_deg > 0.0 && row.beamwidth_deg <= 360.0) {
        return Err(fail(SiteProblem::BadBeamwidth(row.beamwidth_deg)));
    }
    if !(row.range_m.is_finite() && row.range_m > 0.0 && row.range_m <= 100_000.0) {
        return Err(fail(SiteProblem::BadRange(row.range_m)));
    }
    let ecgi = Ecgi { mcc: 466, mnc, mnc_digits: mnc_digits as u8, eci: eci as u32 };
    let (footprint, arc_step_deg) = sector(lat, lon, row.azimuth_deg, row.beamwidth_deg, row.range_m);
    let footprint_area = geo::MultiPolygon(vec![footprint.clone()]);
    let cells = CellCover::estimated_cells(&footprint_area, resolution);
    if cells > max_cells {
        let reason = SiteProblem::FootprintTooLarge {
            range_m: row.range_m,
            cells,
            limit: max_cells,
            resolution: resolution.into(),
        };
        return Err((ecgi.to_string(), reason));
    }
    let cells =
        footprint_cells(&footprint_area, resolution).map_err(|e| (ecgi.to_string(), SiteProblem::Malformed(e)))?;
    let bbox =
        footprint.bounding_rect().unwrap_or_else(|| Rect::new(Coord { x: lon, y: lat }, Coord { x: lon, y: lat }));
    let site_cell = crate::index::cell_at(lat, lon, resolution)
        .map_err(|_| (ecgi.to_string(), SiteProblem::CoordinateOutOfRange { lat, lon }))?;
    Ok(CellSite {
        carrier: row.carrier,
        ecgi,
        tac,
        lat,
        lon,
        azimuth_deg: row.azimuth_deg,
        beamwidth_deg: row.beamwidth_deg,
        range_m: row.range_m,
        footprint,
        bbox,
        site_cell,
        cells,
        arc_step_deg,
    })
}

/// The sector polygon (lon/lat) and the arc sampling step used.
pub(crate) fn sector(lat: f64, lon: f64, azimuth_deg: f64, beamwidth_deg: f64, range_m: f64) -> (Polygon<f64>, f64) {
    let proj = LocalProjection::around(lat, lon);
    let omni = beamwidth_deg >= 360.0;
    // ≤ 5° per step keeps the arc within 0.1 % of the range while a 120° sector needs only 24 steps.
    let steps = ((beamwidth_deg / 5.0).ceil() as usize).max(2);
    let step = beamwidth_deg / steps as f64;
    let start = azimuth_deg - beamwidth_deg / 2.0;
    let mut ring: Vec<Coord<f64>> = Vec::with_capacity(steps + 3);
    if !omni {
        ring.push(Coord { x: lon, y: lat });
    }
    let arc_points = if omni { steps } else { steps + 1 };
    for i in 0..arc_points {
        // Bearing clockwise from north: east = sin, north = cos.
        let bearing = (start + step * i as f64).to_radians();
        let local = Coord { x: range_m * bearing.sin(), y: range_m * bearing.cos() };
        ring.push(proj.to_geo(local));
    }
    (Polygon::new(LineString(ring), vec![]), step)
}

/// Cells touching the footprint, with "centre inside" (both from the tiler, see `cover.rs`).
fn footprint_cells(
    footprint: &geo::MultiPolygon<f64>,
    resolution: Resolution,
) -> Result<Vec<(CellIndex, bool)>, String> {
    let cover = CellCover::tile(footprint, resolution)?;
    Ok(cover.flagged().map(|(cell, _, centre_in)| (cell, centre_in)).collect())
}
