//! From one detector's record to one reading of our sensor: the checks and the lane aggregation. Pure: the clock
//! and the memory of what was taken are arguments, so the same document always gives the same answer.
//!
//! Lanes are folded into one station value the way our own vehicle detectors publish over MQTT (one
//! `speed_kmh`, `flow_veh_h`, `occupancy_pct` per detector, `docs/PAYLOADS.md`):
//! - `flow_veh_h`: all lanes' volumes (the sum of their vehicle classes) over the collection interval, per hour;
//! - `speed_kmh`: the lanes' speeds weighted by their volumes, so an empty lane's nominal speed counts for nothing.
//!   With no vehicle counted at all, a lane speed is only taken when the lanes are occupied (traffic standing on
//!   the loops: the speed is the detector's, usually 0); an empty road has no speed, and none is sent — a 0 there
//!   would read as a blocked road;
//! - `occupancy_pct`: the mean of the lanes' occupancies.
//!
//! The standard marks a lane value it could not measure with `-99`: that lane is left out of that metric, and a
//! metric no lane could measure is left out of the reading (a partial flow would understate traffic, so one lane
//! without a volume leaves the flow out). Any other negative value, or a value no road produces, refuses the whole
//! record: a detector that reports impossible numbers cannot be trusted for its other lanes either.

use std::collections::{BTreeMap, HashMap};

use time::format_description::well_known::Rfc3339;
use time::macros::{format_description, offset};
use time::{OffsetDateTime, PrimitiveDateTime};

use super::decode::{RecordError, VdLive, VdLiveDocument, MAX_LANES};

/// The standard's "data error" mark in `Speed` and `Volume`.
const DATA_ERROR: f64 = -99.0;
/// Faster than any road vehicle a loop measures; above it the detector is broken.
const MAX_SPEED_KMH: f64 = 250.0;
/// One lane's flow past road capacity (≈ 2,400 veh/h a lane) by a wide margin: a broken counter.
const MAX_LANE_FLOW_VEH_H: f64 = 4_000.0;

/// One detector's record as a reading of our sensor.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorReading {
    /// The agency's detector id.
    pub vdid: String,
    /// Our `vehicle_detector` sensor it is mapped to.
    pub sensor_id: String,
    /// Event time: the record's `DataCollectTime`, Unix ms.
    pub ts_ms: i64,
    pub speed_kmh: Option<f64>,
    pub flow_veh_h: Option<f64>,
    pub occupancy_pct: Option<f64>,
}

/// Why one detector's record gave no reading. [`RecordRefusal::reason`] is the metrics label.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordRefusal {
    #[error("{0}")]
    Malformed(RecordError),
    #[error("`{0}` is mapped to no sensor of ours (detectors in this source's table)")]
    UnknownVdid(String),
    #[error("`{vdid}` reports Status {status} ({})", status_name(.status))]
    Status { vdid: String, status: i64 },
    #[error("`{vdid}`: DataCollectTime `{time}` is not an ISO 8601 time")]
    BadTime { vdid: String, time: String },
    #[error("`{vdid}`: DataCollectTime `{time}` is {age_s} s old, over max_age_s")]
    Stale { vdid: String, time: String, age_s: i64 },
    #[error("`{vdid}`: DataCollectTime `{time}` is {ahead_s} s in the future")]
    Future { vdid: String, time: String, ahead_s: i64 },
    #[error("`{vdid}`: DataCollectTime `{time}` is not newer than the last one taken from this detector")]
    DuplicateTime { vdid: String, time: String },
    #[error("`{vdid}`: {field} is {value} (negative, and not the -99 data-error mark)")]
    Negative { vdid: String, field: &'static str, value: f64 },
    #[error("`{vdid}`: {field} {value} is beyond what a road produces")]
    OutOfRange { vdid: String, field: &'static str, value: f64 },
    #[error("`{vdid}`: no lane measured anything usable")]
    NoValidLanes { vdid: String },
}

impl RecordRefusal {
    /// Every label, for pre-registering metrics.
    pub const LABELS: &'static [&'static str] = &[
        "malformed_record",
        "unknown_vdid",
        "status_comm_failure",
        "status_out_of_service",
        "status_fault",
        "status_unknown",
        "bad_time",
        "stale",
        "future_time",
        "duplicate_time",
        "negative_value",
        "out_of_range",
        "no_valid_lanes",
    ];

    pub fn reason(&self) -> &'static str {
        match self {
            RecordRefusal::Malformed(_) => "malformed_record",
            RecordRefusal::UnknownVdid(_) => "unknown_vdid",
            RecordRefusal::Status { status, .. } => match status {
                1 => "status_comm_failure",
                2 => "status_out_of_service",
                3 => "status_fault",
                _ => "status_unknown",
            },
            RecordRefusal::BadTime { .. } => "bad_time",
            RecordRefusal::Stale { .. } => "stale",
            RecordRefusal::Future { .. } => "future_time",
            RecordRefusal::DuplicateTime { .. } => "duplicate_time",
            RecordRefusal::Negative { .. } => "negative_value",
            RecordRefusal::OutOfRange { .. } => "out_of_range",
            RecordRefusal::NoValidLanes { .. } => "no_valid_lanes",
        }
    }
}

/// The meaning of a VDLive `Status` (MOTC traffic data standard v2.0).
fn status_name(status: &i64) -> &'static str {
    match *status {
        0 => "normal",
        1 => "communication failure",
        2 => "out of service or under construction",
        3 => "faulty",
        _ => "not defined by the standard",
    }
}

/// What the checks need besides the record.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The collection interval the volumes count over, seconds.
    pub interval_s: f64,
    /// Oldest DataCollectTime taken, relative to now.
    pub max_age_ms: i64,
    /// Furthest DataCollectTime taken ahead of now (clocks disagree a little).
    pub max_future_ms: i64,
}

/// What one document gave.
#[derive(Debug, Default)]
pub struct Outcome {
    pub readings: Vec<DetectorReading>,
    pub refused: Vec<RecordRefusal>,
}

/// Every record of `doc`: readings for the mapped detectors, a refusal for each other. `last_taken` (VDID → event
/// time of the last reading taken) is read for duplicates and advanced by every reading given.
pub fn take(
    doc: VdLiveDocument,
    detectors: &BTreeMap<String, String>,
    limits: Limits,
    now_ms: i64,
    last_taken: &mut HashMap<String, i64>,
) -> Outcome {
    let mut out = Outcome::default();
    for record in doc.detectors {
        let result = record.map_err(RecordRefusal::Malformed).and_then(|r| {
            let reading = assess(&r, detectors, limits, now_ms)?;
            if last_taken.get(&r.vdid).is_some_and(|last| reading.ts_ms <= *last) {
                return Err(RecordRefusal::DuplicateTime { vdid: r.vdid.clone(), time: r.data_collect_time.clone() });
            }
            last_taken.insert(r.vdid.clone(), reading.ts_ms);
            Ok(reading)
        });
        match result {
            Ok(reading) => out.readings.push(reading),
            Err(refusal) => out.refused.push(refusal),
        }
    }
    out
}

/// One record, checked and aggregated (duplicates aside: that needs memory, [`take`] has it).
pub fn assess(
    r: &VdLive,
    detectors: &BTreeMap<String, String>,
    limits: Limits,
    now_ms: i64,
) -> Result<DetectorReading, RecordRefusal> {
    let vdid = || r.vdid.clone();
    let sensor_id = detectors.get(&r.vdid).ok_or_else(|| RecordRefusal::UnknownVdid(vdid()))?;
    if let Some(status) = r.status.filter(|s| *s != 0) {
        return Err(RecordRefusal::Status { vdid: vdid(), status });
    }
    let ts_ms = parse_collect_time(&r.data_collect_time)
        .ok_or_else(|| RecordRefusal::BadTime { vdid: vdid(), time: r.data_collect_time.clone() })?;
    if now_ms - ts_ms > limits.max_age_ms {
        let age_s = (now_ms - ts_ms) / 1000;
        return Err(RecordRefusal::Stale { vdid: vdid(), time: r.data_collect_time.clone(), age_s });
    }
    if ts_ms - now_ms > limits.max_future_ms {
        let ahead_s = (ts_ms - now_ms) / 1000;
        return Err(RecordRefusal::Future { vdid: vdid(), time: r.data_collect_time.clone(), ahead_s });
    }
    let lanes: Vec<_> = r.link_flows.iter().flat_map(|f| &f.lanes).collect();
    if lanes.is_empty() || lanes.len() > MAX_LANES {
        return Err(RecordRefusal::NoValidLanes { vdid: vdid() });
    }
    // Each lane: its speed, occupancy and volume, `None` where it carried the data-error mark or nothing.
    let checked = |field: &'static str, value: Option<f64>, max: f64| -> Result<Option<f64>, RecordRefusal> {
        match value {
            None => Ok(None),
            Some(v) if v == DATA_ERROR => Ok(None),
            Some(v) if !v.is_finite() || v > max => Err(RecordRefusal::OutOfRange { vdid: vdid(), field, value: v }),
            Some(v) if v < 0.0 => Err(RecordRefusal::Negative { vdid: vdid(), field, value: v }),
            Some(v) => Ok(Some(v)),
        }
    };
    let max_lane_volume = MAX_LANE_FLOW_VEH_H * limits.interval_s / 3600.0;
    let mut measured = Vec::with_capacity(lanes.len());
    for lane in lanes {
        let speed = checked("Speed", lane.speed, MAX_SPEED_KMH)?;
        // Occupancy has no data-error mark in the standard, but publishers use -99 there too.
        let occupancy = checked("Occupancy", lane.occupancy, 100.0)?;
        let mut volume = Some(0.0);
        for v in &lane.vehicles {
            checked("Vehicles.Speed", v.speed, MAX_SPEED_KMH)?;
            match checked("Vehicles.Volume", v.volume, max_lane_volume)? {
                Some(n) => volume = volume.map(|sum| sum + n),
                None => volume = None,
            }
        }
        if lane.vehicles.is_empty() {
            volume = None;
        }
        if let Some(v) = volume.filter(|v| *v > max_lane_volume) {
            return Err(RecordRefusal::OutOfRange { vdid: vdid(), field: "lane volume", value: v });
        }
        measured.push((speed, occupancy, volume));
    }
    let occupancies: Vec<f64> = measured.iter().filter_map(|m| m.1).collect();
    let occupancy_pct = (!occupancies.is_empty()).then(|| occupancies.iter().sum::<f64>() / occupancies.len() as f64);
    let flow_veh_h = measured.iter().map(|m| m.2).sum::<Option<f64>>().map(|total| total * 3600.0 / limits.interval_s);
    // Volume-weighted over the lanes that measured both.
    let (weighted, counted) = measured
        .iter()
        .filter_map(|(s, _, v)| Some((s.as_ref()?, v.as_ref()?)))
        .fold((0.0, 0.0), |(sum, n), (s, v)| (sum + s * v, n + v));
    let speed_kmh = if counted > 0.0 {
        Some(weighted / counted)
    } else if occupancy_pct.is_some_and(|o| o > 0.0) {
        // Nothing passed, yet the loops are occupied: standing traffic, at the speed the lanes report.
        let speeds: Vec<f64> = measured.iter().filter_map(|m| m.0).collect();
        (!speeds.is_empty()).then(|| speeds.iter().sum::<f64>() / speeds.len() as f64)
    } else {
        None
    };
    if speed_kmh.is_none() && flow_veh_h.is_none() && occupancy_pct.is_none() {
        return Err(RecordRefusal::NoValidLanes { vdid: vdid() });
    }
    Ok(DetectorReading {
        vdid: vdid(),
        sensor_id: sensor_id.clone(),
        ts_ms,
        speed_kmh: speed_kmh.map(round2),
        flow_veh_h: flow_veh_h.map(round2),
        occupancy_pct: occupancy_pct.map(round2),
    })
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// `DataCollectTime` in Unix ms: ISO 8601 with an offset (`2019-11-13T10:00:00+08:00`), or without one — some
/// city feeds write local time bare — read as Taiwan time (Asia/Taipei is UTC+8 all year: no daylight saving).
pub fn parse_collect_time(text: &str) -> Option<i64> {
    let text = text.trim();
    let at = |t: OffsetDateTime| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok();
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return at(t);
    }
    let bare = [
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        format_description!("[year]/[month]/[day] [hour]:[minute]:[second]"),
    ];
    bare.iter().find_map(|f| PrimitiveDateTime::parse(text, f).ok()).and_then(|t| at(t.assume_offset(offset!(+8))))
}
