//! Cell broadcast planning: which PWS class an alert takes (policy), its serial number, its text on the Chinese
//! and English channels, the cells per carrier (geo-index targeting, with the report), and the JSON envelope each
//! carrier's CBC adapter receives. Pure apart from reading the geo index: delivery is the outbox's job.
//!
//! Envelope (`POST` to the carrier's `cbc_url`, `Authorization: Bearer <token>`):
//! ```json
//! {"kind":"write_replace"|"stop", "carrier":"…",
//!  "alert":{"id":"…","version":3,"state":"raised","mode":"Actual"},
//!  "cap_identifier":"…", "cap_xml":"<alert …>",
//!  "pws":[{"language":"zh","message_id":4371,"serial":49168,"serial_hex":"c010","geo_scope":"cell_normal",
//!          "message_code":1,"update_number":0,"dcs":72,"text":"…","pages_hex":["…"],"lte_content_hex":"…",
//!          "sbcap_pdu_hex":"…"},
//!         {"language":"en","message_id":4384,…}],
//!  "cells":["466-92-2560257",…], "schedule":{"repetition_period_s":60,"number_of_broadcasts":0},
//!  "warning_area_coordinates":{"hex":"…","max_wait_s":10,"polygons":[[[23.51,120.90],…]],
//!                              "worst_displacement_m":41.2}}
//! ```
//! `warning_area_coordinates` (write-replace, carriers with `warning_area_coordinates = true`) is the alert's area as
//! the PDUs' IE 46 carries it: the outline geo-index simplified outward to fit 1,024 octets, its vertices as a
//! phone decodes them (lat, lon; each once), and how far that outline strays from the area at most.
//! A stop carries the same identifiers and serial numbers as the broadcast it ends, no text or pages, and a
//! Stop-Warning-Request PDU. One PDU per channel, because SBc-AP carries one message identifier per request.

use std::collections::HashMap;

use geo::{Coord, LineString, MultiPolygon, Polygon};
use geo_index::{AlertArea, GeoIndex, GeofenceOutline, OutlineBudget, TargetingReport, TargetingStrategy};
use serde::{Deserialize, Serialize};

use super::{Carrier, PolicyClass, PolicyRule};
use crate::hex;
use crate::messages::StoredMessage;
use crate::metrics::METRICS;
use crate::view::{AlertView, ViewMode};
use encoders::cap::Severity;
use encoders::cell_broadcast::warning_area::{self, Geofence, LatLon, WarningAreaCoordinates};
use encoders::cell_broadcast::{
    drill, encode_broadcast, stop_warning_request, write_replace_warning_request,
    write_replace_warning_request_geofenced, BroadcastMode, CbsError, CellBroadcast, Ecgi, GeoScope, Language, Plmn,
    PwsClass, Schedule, SerialNumber, WarningArea,
};

/// The class for an alert: the first matching policy rule; Test mode moves it to the monthly-test channel.
pub(crate) fn class_for(view: &AlertView, policy: &[PolicyRule]) -> Option<PwsClass> {
    let rule = policy.iter().find(|r| {
        r.event.as_ref().is_none_or(|e| *e == view.event)
            && r.level.as_ref().is_none_or(|l| l.eq_ignore_ascii_case(&view.level_name_en) || *l == view.level_name_zh)
            && r.min_severity.is_none_or(|min| view.severity <= min)
    })?;
    let class = match rule.class {
        PolicyClass::Emergency => PwsClass::Emergency(rule.emergency_level),
        PolicyClass::Alert => PwsClass::Alert,
        // Refused when the config is loaded; kept out here too so no path can produce it.
        PolicyClass::None | PolicyClass::Presidential => return None,
    };
    Some(if view.mode == ViewMode::Test { PwsClass::MonthlyTest } else { class })
}

fn class_label(class: PwsClass) -> String {
    match class {
        PwsClass::Presidential => "presidential".into(),
        PwsClass::Emergency(n) => format!("emergency({n})"),
        PwsClass::Alert => "alert".into(),
        PwsClass::MonthlyTest => "monthly_test".into(),
    }
}

fn scope_label(scope: GeoScope) -> &'static str {
    match scope {
        GeoScope::CellImmediate => "cell_immediate",
        GeoScope::Plmn => "plmn",
        GeoScope::Area => "area",
        GeoScope::CellNormal => "cell_normal",
    }
}

/// Write-replace (start or update) or stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BroadcastKind {
    WriteReplace,
    Stop,
}

/// Where one carrier's part of a broadcast stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CarrierStatus {
    /// Queued or being retried.
    Pending,
    /// The CBC answered 2xx.
    Acked,
    /// Not sent (no cells, encoding failed) or given up after the configured attempts (replayable).
    Failed,
}

/// The targeting report's figures for operators (the cell list itself is in the envelope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetingSummary {
    pub area_km2: f64,
    /// Share of the area reached (must be 1).
    pub covered_share: f64,
    pub reach_km2: f64,
    pub overshoot_km2: f64,
    pub farthest_overshoot_m: f64,
    /// 100 % coverage and overshoot within 0.1 mile (US WEA, the strictest published rule).
    pub meets_wea: bool,
    /// H3 cells of the area no targeted footprint reaches.
    pub uncovered_cells: usize,
    /// What a geofence-capable phone experiences with the area's Warning Area Coordinates (as encoded) attached,
    /// computed for every carrier (for one that opted out it says what opting in would give: its
    /// `CarrierBroadcast::warning_area_octets` tells whether they were sent); `None` when no outline could be made
    /// (the reason is logged and counted).
    #[serde(default)]
    pub geofenced: Option<GeofencedSummary>,
}

/// The targeting with device-based geofencing: the part of the alerted cells that the polygons, as a phone decodes
/// them, still admit outside the area (geo-index `geofence.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeofencedSummary {
    pub overshoot_km2: f64,
    pub farthest_overshoot_m: f64,
    /// Full coverage and geofenced overshoot within 0.1 mile.
    pub meets_wea: bool,
    /// How far the encoded outline strays from the area at most (outward simplification and grid rounding).
    pub worst_displacement_m: f64,
    /// Vertices sent, over all polygons.
    pub vertices: usize,
    /// Octets of the Warning-Area-Coordinates IE (without the wait time).
    pub octets: usize,
}

impl From<&TargetingReport> for TargetingSummary {
    fn from(r: &TargetingReport) -> Self {
        TargetingSummary {
            area_km2: r.area_km2,
            covered_share: r.covered_share,
            reach_km2: r.reach_km2,
            overshoot_km2: r.overshoot_km2,
            farthest_overshoot_m: r.farthest_overshoot_m,
            meets_wea: r.meets_wea,
            uncovered_cells: r.uncovered_cells.len(),
            geofenced: None,
        }
    }
}

/// One carrier's part of a broadcast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CarrierBroadcast {
    pub carrier: String,
    /// Cells in the warning area list.
    pub cells: usize,
    /// Coverage and overshoot of those cells; filled in just after the envelope is queued (write-replace only).
    pub targeting: Option<TargetingSummary>,
    /// Octets of the Warning-Area-Coordinates IE sent in this carrier's PDUs (None: not sent).
    #[serde(default)]
    pub warning_area_octets: Option<usize>,
    /// The outbox delivery carrying the envelope (None when nothing was sent).
    pub delivery_id: Option<u64>,
    pub status: CarrierStatus,
    pub attempts: u32,
    pub http_status: Option<u16>,
    /// The CBC's answer (first 512 bytes) on ack; the error otherwise.
    pub detail: Option<String>,
    /// Unix ms of the ack or the final failure.
    pub at_ms: Option<i64>,
    /// The cells of the warning area list (`466-92-2560257`), so that the stop of a write names exactly its cells
    /// (the on-air ledger keeps them). Empty in journals from before the ledger.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cell_ids: Vec<String>,
}

/// One broadcast (per alert message and kind) as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BroadcastRecord {
    pub alert_id: String,
    pub version: u32,
    /// The CAP message this broadcast carries.
    pub identifier: String,
    pub mode: ViewMode,
    pub kind: BroadcastKind,
    /// `emergency(0)`, `alert`, `monthly_test`.
    pub class: String,
    /// Chinese channel, then English channel.
    pub message_ids: [u16; 2],
    pub serial: u16,
    pub message_code: u16,
    pub update_number: u8,
    /// This broadcast took a new message code (the allocator's state is rebuilt from these).
    pub allocated: bool,
    /// Broadcast texts, Chinese then English (empty for a stop).
    pub texts: Vec<String>,
    /// Pages per channel.
    pub pages: Vec<usize>,
    /// Why nothing was sent (text too long, with its length; unencodable character …).
    pub error: Option<String>,
    pub carriers: Vec<CarrierBroadcast>,
    /// Why it was planned: `first`, `level_rose`, `class_rose`, `severity_rose`, `area_grew`, `operator`
    /// (write-replace); `superseded`, `ended` (stop). Empty in journals from before.
    #[serde(default)]
    pub reason: String,
    /// The zone the alert had when this was planned.
    #[serde(default)]
    pub area_id: String,
    /// The alert's level index and severity when written: later versions re-alert phones only above these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
}

/// An envelope ready for one carrier's outbox.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    /// The outbox delivery id (also in the record's `carriers[index].delivery_id`).
    pub id: u64,
    pub carrier: String,
    pub body: String,
}

/// Settings a broadcast needs.
pub(crate) struct BroadcastContext<'a> {
    pub geo: &'a GeoIndex,
    pub carriers: &'a [Carrier],
    pub schedule: Schedule,
}

/// One channel's encoding.
struct Channel {
    language: Language,
    broadcast: Option<CellBroadcast>,
    message_id: u16,
    text: String,
}

fn broadcast_mode(mode: ViewMode) -> BroadcastMode {
    match mode {
        ViewMode::Actual => BroadcastMode::Actual,
        ViewMode::Exercise => BroadcastMode::Drill,
        ViewMode::Test => BroadcastMode::Test,
    }
}

/// The text a channel broadcasts: headline then instruction, marked for drills and tests by the drill helper
/// (which does not double the CAP builder's identical prefix).
fn channel_text(msg: &StoredMessage, language: Language) -> String {
    let t = &msg.texts;
    let (headline, instruction) = match language {
        Language::Chinese => (&t.headline_zh, &t.instruction_zh),
        Language::English => (&t.headline_en, &t.instruction_en),
    };
    let text = if instruction.is_empty() { headline.clone() } else { format!("{headline}\n{instruction}") };
    drill::broadcast_text(broadcast_mode(msg.view.mode), language, &text)
}

/// Cells per carrier for a zone; an error text when the carrier has no cell there.
///
/// Only the cell list is on the way to the CBC: one pass over the sites whose footprint meets the zone, split by
/// carrier (about 1 ms for a county). The targeting report (coverage, overshoot) costs ~10 ms per carrier for a
/// county and only operators read it, so [`targeting_report`] computes it afterwards, off the path.
/// One carrier's warning-area cells and their printable names, or why it has none.
type CarrierCells = Result<(Vec<Ecgi>, Vec<String>), String>;

pub(crate) fn target(ctx: &BroadcastContext<'_>, zone: &str) -> Vec<CarrierCells> {
    let area = match ctx.geo.alert_area_of_zones(&[zone]) {
        Ok(a) => a,
        Err(e) => return ctx.carriers.iter().map(|_| Err(format!("targeting: {e}"))).collect(),
    };
    let mut sites: Vec<geo_index::Ecgi> =
        ctx.geo.cell_sites_for_area(&area, None).into_iter().map(|s| s.ecgi).collect();
    // Sorted, as geo-index's targeting report lists them, so envelopes are deterministic.
    sites.sort();
    let mut plmns: HashMap<(u16, u16, u8), Option<Plmn>> = HashMap::new();
    ctx.carriers
        .iter()
        .map(|c| {
            let mut cells = Vec::new();
            let mut names = Vec::new();
            for s in sites.iter().filter(|s| s.mnc == c.mnc) {
                let plmn = *plmns.entry((s.mcc, s.mnc, s.mnc_digits)).or_insert_with(|| {
                    let mnc = format!("{:0w$}", s.mnc, w = usize::from(s.mnc_digits.max(2)));
                    Plmn::new(&format!("{:03}", s.mcc), &mnc).ok()
                });
                let plmn = plmn.ok_or_else(|| format!("cell {s}: PLMN is not 3+2/3 digits"))?;
                cells.push(Ecgi { plmn, cell_id: s.eci });
                names.push(s.to_string());
            }
            if cells.is_empty() {
                // Never fall back to WholeNetwork: a local warning on every phone of the island is worse than none.
                return Err(format!("no {} cell reaches zone `{zone}`", c.name));
            }
            Ok((cells, names))
        })
        .collect()
}

/// The targeting report of one carrier's cells for a zone (the same cells [`target`] picked: geo-index selects
/// them with the same test), with and without device-based geofencing.
pub(crate) fn targeting_report(geo: &GeoIndex, zone: &str, mnc: u16) -> Result<TargetingSummary, String> {
    let area = geo.alert_area_of_zones(&[zone]).map_err(|e| e.to_string())?;
    let report =
        geo.geotarget(&area, TargetingStrategy::CellBroadcast { mnc: Some(mnc) }).map_err(|e| e.to_string())?;
    let mut summary = TargetingSummary::from(&report);
    match geofenced(geo, &area, mnc, report.covered_share) {
        Ok(g) => summary.geofenced = Some(g),
        Err(e) => {
            tracing::warn!(zone = %zone, error = %e, "no geofenced targeting figures");
            METRICS.errors.with_label_values(&["warning_area_coordinates"]).inc();
        }
    }
    Ok(summary)
}

/// The area's outline for Warning Area Coordinates: simplified outward (geo-index) to what the encoding holds, with
/// room for the wait-time TLV, kept clear of the area by more than the encoding's grid rounding.
pub(crate) fn geofence_outline(area: &AlertArea) -> Result<GeofenceOutline, String> {
    let fits = |counts: &[usize]| warning_area::fits(counts, true);
    let budget = OutlineBudget { clearance_m: warning_area::MAX_QUANTISATION_M, fits: &fits };
    area.outward_outline(&budget).map_err(|e| e.to_string())
}

/// The IE's content for an outline.
pub(crate) fn coordinates(outline: &GeofenceOutline, max_wait_s: Option<u8>) -> WarningAreaCoordinates {
    let areas = outline
        .vertex_rings()
        .into_iter()
        .map(|ring| Geofence::Polygon(ring.into_iter().map(|(lat, lon)| LatLon { lat, lon }).collect()))
        .collect();
    WarningAreaCoordinates { max_wait_s, areas }
}

/// The polygons a phone decodes from the IE's octets, as lon/lat geometry.
fn admitted(octets: &[u8]) -> Result<MultiPolygon<f64>, String> {
    let read = WarningAreaCoordinates::decode(octets).map_err(|e| e.to_string())?;
    let mut polygons = Vec::new();
    for area in read.areas {
        if let Geofence::Polygon(v) = area {
            let mut ring: Vec<Coord<f64>> = v.iter().map(|p| Coord { x: p.lon, y: p.lat }).collect();
            ring.extend(ring.first().copied());
            polygons.push(Polygon::new(LineString(ring), vec![]));
        }
    }
    Ok(MultiPolygon(polygons))
}

/// The outline of an area, its IE octets (without the wait time) and the polygons a phone decodes from them.
fn encoded_outline(area: &AlertArea) -> Result<(GeofenceOutline, Vec<u8>, MultiPolygon<f64>), String> {
    let outline = geofence_outline(area)?;
    let octets = coordinates(&outline, None).encode().map_err(|e| e.to_string())?;
    let polygons = admitted(&octets)?;
    Ok((outline, octets, polygons))
}

/// The Warning Area Coordinates a write-replace for a zone carries, as a phone decodes them (for the operators' map).
#[derive(Debug, Clone)]
pub struct WarningAreaShape {
    /// The polygons (lon/lat, closed rings): the area simplified outward, then rounded to the encoding's grid.
    pub polygons: MultiPolygon<f64>,
    /// How far they stray from the area at most, metres (simplification and grid rounding).
    pub worst_displacement_m: f64,
    /// Octets of the IE without the wait time (each carrier's `geofence_max_wait_s` adds its TLV).
    pub octets: usize,
}

/// [`WarningAreaShape`] of `zone`. Worked out again rather than kept: the outline is a pure function of the zone's
/// geometry (geo-index is fixed while we run), so this is what [`plan`] attached to the zone's write-replaces.
pub fn warning_area_of_zone(geo: &GeoIndex, zone: &str) -> Result<WarningAreaShape, String> {
    let area = geo.alert_area_of_zones(&[zone]).map_err(|e| e.to_string())?;
    let (outline, octets, polygons) = encoded_outline(&area)?;
    Ok(WarningAreaShape {
        polygons,
        worst_displacement_m: outline.worst_displacement_m + warning_area::MAX_QUANTISATION_M,
        octets: octets.len(),
    })
}

fn geofenced(geo: &GeoIndex, area: &AlertArea, mnc: u16, covered_share: f64) -> Result<GeofencedSummary, String> {
    let (outline, octets, admitted) = encoded_outline(area)?;
    let fenced = geo.geofenced_overshoot(area, Some(mnc), &admitted, covered_share);
    Ok(GeofencedSummary {
        overshoot_km2: fenced.overshoot_km2,
        farthest_overshoot_m: fenced.farthest_overshoot_m,
        meets_wea: fenced.meets_wea,
        worst_displacement_m: outline.worst_displacement_m + warning_area::MAX_QUANTISATION_M,
        vertices: outline.vertex_rings().iter().map(Vec::len).sum(),
        octets: octets.len(),
    })
}

fn geo_area(ctx: &BroadcastContext<'_>, zone: &str) -> Result<AlertArea, String> {
    ctx.geo.alert_area_of_zones(&[zone]).map_err(|e| format!("targeting: {e}"))
}

fn failed_carriers(ctx: &BroadcastContext<'_>, detail: &str) -> Vec<CarrierBroadcast> {
    ctx.carriers
        .iter()
        .map(|c| CarrierBroadcast {
            carrier: c.name.clone(),
            cells: 0,
            targeting: None,
            warning_area_octets: None,
            delivery_id: None,
            status: CarrierStatus::Failed,
            attempts: 0,
            http_status: None,
            detail: Some(detail.to_string()),
            at_ms: None,
            cell_ids: Vec::new(),
        })
        .collect()
}

fn encode_error(e: &CbsError, language: Language, text: &str) -> String {
    let lang = match language {
        Language::Chinese => "Chinese",
        Language::English => "English",
    };
    match e {
        CbsError::TooLong { .. } => format!(
            "{lang} text not sent: {e} (text is {} characters; shorten the template, it is never cut)",
            text.chars().count()
        ),
        _ => format!("{lang} text not sent: {e}"),
    }
}

/// The cells a stop names per carrier (from the on-air ledger), by carrier name; carriers not listed get no stop.
pub(crate) type StopCells = std::collections::BTreeMap<String, Vec<String>>;

/// A cell's printed name (`466-92-2560257`: MCC-MNC-ECI, geo-index's form) back to its identity.
fn parse_cell(name: &str) -> Result<Ecgi, String> {
    let mut parts = name.splitn(3, '-');
    let (Some(mcc), Some(mnc), Some(eci)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("cell `{name}` is not MCC-MNC-ECI"));
    };
    let plmn = Plmn::new(mcc, mnc).map_err(|e| format!("cell `{name}`: {e}"))?;
    let cell_id = eci.parse().map_err(|_| format!("cell `{name}`: ECI is not a number"))?;
    Ok(Ecgi { plmn, cell_id })
}

/// Plans a write-replace (first broadcast or update) or a stop for `msg`. `next_id` hands out outbox delivery
/// ids for the envelopes. A write-replace targets the alert's zone per carrier; a stop names `stop_cells`, the
/// cells the ledger says each carrier was written to.
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan(
    ctx: &BroadcastContext<'_>,
    msg: &StoredMessage,
    kind: BroadcastKind,
    class: PwsClass,
    message_ids: Option<[u16; 2]>,
    serial: SerialNumber,
    allocated: bool,
    reason: &str,
    stop_cells: Option<&StopCells>,
    next_id: &mut dyn FnMut() -> u64,
) -> (BroadcastRecord, Vec<Envelope>) {
    let languages = [Language::Chinese, Language::English];
    let mut record = BroadcastRecord {
        alert_id: msg.alert_id.clone(),
        version: msg.version,
        identifier: msg.identifier.clone(),
        mode: msg.view.mode,
        kind,
        class: class_label(class),
        message_ids: [0, 0],
        serial: serial.to_u16(),
        message_code: serial.message_code(),
        update_number: serial.update_number(),
        allocated,
        texts: Vec::new(),
        pages: Vec::new(),
        error: None,
        carriers: Vec::new(),
        reason: reason.to_string(),
        area_id: msg.view.area_id.clone(),
        level_index: msg.view.level_index,
        severity: Some(msg.view.severity),
    };

    // Encode both channels first: a text too long on either means the alert does not go out half-done.
    let mut channels = Vec::with_capacity(2);
    for (i, language) in languages.into_iter().enumerate() {
        let id = match message_ids {
            Some(ids) => Ok(ids[i]),
            None => class.message_id(language),
        };
        let message_id = match id {
            Ok(id) => id,
            Err(e) => {
                record.error = Some(e.to_string());
                record.carriers = failed_carriers(ctx, "not sent: class has no channel");
                return (record, Vec::new());
            }
        };
        record.message_ids[i] = message_id;
        if kind == BroadcastKind::Stop {
            channels.push(Channel { language, broadcast: None, message_id, text: String::new() });
            continue;
        }
        let text = channel_text(msg, language);
        match encode_broadcast(class, language, serial, &text) {
            Ok(b) => {
                record.texts.push(text.clone());
                record.pages.push(b.pages.len());
                channels.push(Channel { language, broadcast: Some(b), message_id, text });
            }
            Err(e) => {
                let why = encode_error(&e, language, &text);
                record.texts.push(text);
                record.error = Some(why.clone());
                record.carriers = failed_carriers(ctx, &why);
                return (record, Vec::new());
            }
        }
    }

    let targets: Vec<(&Carrier, CarrierCells)> = match stop_cells {
        None => ctx.carriers.iter().zip(target(ctx, &msg.view.area_id)).collect(),
        Some(cells) => {
            // Journals from before the ledger kept no cell list: those stops name the zone's cells, as they did.
            let zone = || target(ctx, &msg.view.area_id);
            let mut by_zone: Option<Vec<CarrierCells>> = None;
            ctx.carriers
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let names = cells.get(&c.name)?;
                    if names.is_empty() {
                        let t = by_zone.get_or_insert_with(zone).get(i).cloned();
                        return Some((c, t.unwrap_or_else(|| Err("no cells".into()))));
                    }
                    let ecgis: Result<Vec<Ecgi>, String> = names.iter().map(|n| parse_cell(n)).collect();
                    Some((c, ecgis.map(|e| (e, names.clone()))))
                })
                .collect()
        }
    };

    // The outline for Warning Area Coordinates, once for every carrier that sends them. Without one the warning
    // still goes out, cell-wide as before: a missing geofence must never hold a warning back.
    let wants_geofence = kind == BroadcastKind::WriteReplace && ctx.carriers.iter().any(|c| c.warning_area_coordinates);
    let outline = wants_geofence.then(|| {
        geo_area(ctx, &msg.view.area_id).and_then(|a| geofence_outline(&a)).inspect_err(|e| {
            tracing::warn!(alert = %msg.alert_id, error = %e, "warning area coordinates left out");
            METRICS.errors.with_label_values(&["warning_area_coordinates"]).inc();
        })
    });
    let outline = outline.and_then(Result::ok);

    let mut envelopes = Vec::new();
    for (carrier, targeted) in targets {
        let mut entry = CarrierBroadcast {
            carrier: carrier.name.clone(),
            cells: 0,
            targeting: None,
            warning_area_octets: None,
            delivery_id: None,
            status: CarrierStatus::Failed,
            attempts: 0,
            http_status: None,
            detail: None,
            at_ms: None,
            cell_ids: Vec::new(),
        };
        let (cells, names) = match targeted {
            Ok(t) => t,
            Err(why) => {
                entry.detail = Some(why);
                record.carriers.push(entry);
                continue;
            }
        };
        entry.cells = cells.len();
        entry.cell_ids = names.clone();
        let area = WarningArea::Cells(cells);
        let fence = outline.as_ref().filter(|_| carrier.warning_area_coordinates).and_then(|o| {
            let c = coordinates(o, carrier.geofence_max_wait_s);
            match c.encode() {
                Ok(octets) => Some((o, c, octets)),
                Err(e) => {
                    tracing::warn!(alert = %msg.alert_id, error = %e, "warning area coordinates left out");
                    METRICS.errors.with_label_values(&["warning_area_coordinates"]).inc();
                    None
                }
            }
        });
        entry.warning_area_octets = fence.as_ref().map(|(_, _, octets)| octets.len());
        let mut pws = Vec::with_capacity(2);
        let mut failure = None;
        for ch in &channels {
            let lang = match ch.language {
                Language::Chinese => "zh",
                Language::English => "en",
            };
            let pdu = match (&ch.broadcast, &fence) {
                (Some(b), Some((_, c, _))) => write_replace_warning_request_geofenced(b, &area, ctx.schedule, c),
                (Some(b), None) => write_replace_warning_request(b, &area, ctx.schedule),
                (None, _) => stop_warning_request(ch.message_id, serial, &area),
            };
            let pdu = match pdu {
                Ok(p) => p,
                Err(e) => {
                    failure = Some(format!("SBc-AP PDU: {e}"));
                    break;
                }
            };
            let mut v = serde_json::json!({
                "language": lang,
                "message_id": ch.message_id,
                "serial": serial.to_u16(),
                "serial_hex": hex(&serial.to_u16().to_be_bytes()),
                "geo_scope": scope_label(serial.geo_scope()),
                "message_code": serial.message_code(),
                "update_number": serial.update_number(),
                "sbcap_pdu_hex": hex(&pdu),
            });
            if let Some(b) = &ch.broadcast {
                v["dcs"] = b.dcs.into();
                v["text"] = ch.text.clone().into();
                v["pages_hex"] = b.pages.iter().map(|p| hex(&p.bytes)).collect::<Vec<_>>().into();
                v["lte_content_hex"] = hex(&b.warning_message_content()).into();
            }
            pws.push(v);
        }
        if let Some(why) = failure {
            entry.detail = Some(why);
            record.carriers.push(entry);
            continue;
        }
        let mut body = serde_json::json!({
            "kind": kind,
            "carrier": carrier.name,
            "alert": {
                "id": msg.alert_id,
                "version": msg.version,
                "state": msg.view.state,
                "mode": msg.view.mode,
            },
            "cap_identifier": msg.identifier,
            "cap_xml": msg.xml,
            "pws": pws,
            "cells": names,
            "schedule": {
                "repetition_period_s": ctx.schedule.repetition_period_s,
                "number_of_broadcasts": ctx.schedule.number_of_broadcasts,
            },
        });
        if let Some((o, c, octets)) = &fence {
            // The vertices as a phone decodes them, so what operators see is what phones test.
            let decoded = WarningAreaCoordinates::decode(octets).map(|d| d.areas).unwrap_or_default();
            let polygons: Vec<Vec<[f64; 2]>> = decoded
                .iter()
                .filter_map(|g| match g {
                    Geofence::Polygon(v) => Some(v.iter().map(|p| [p.lat, p.lon]).collect()),
                    Geofence::Circle { .. } => None,
                })
                .collect();
            body["warning_area_coordinates"] = serde_json::json!({
                "hex": hex(octets),
                "max_wait_s": c.max_wait_s,
                "polygons": polygons,
                "worst_displacement_m": o.worst_displacement_m + warning_area::MAX_QUANTISATION_M,
            });
        }
        let id = next_id();
        entry.delivery_id = Some(id);
        entry.status = CarrierStatus::Pending;
        envelopes.push(Envelope { id, carrier: carrier.name.clone(), body: body.to_string() });
        record.carriers.push(entry);
    }
    (record, envelopes)
}
