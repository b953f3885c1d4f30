//! The engine's state: per sensor (series and level slots), per zone (kind and thresholds), per (rule, zone) area
//! (who is at a level there), and the byte accounting behind the 1 KiB-per-sensor budget.

use std::collections::BTreeMap;
use std::mem::size_of;

use geo_index::ZoneKind;
use ingest::{Metric, SensorKind};

use super::plan::{SeriesPlan, NONE};
use super::windows::{Buckets, Dedup, RateRing};

/// "Never" for event-time fields.
pub(crate) const NO_TS: i64 = i64::MIN;
/// The member id of a zone-wide rule's own level in its area.
pub(crate) const AREA_MEMBER: u32 = u32::MAX;

#[derive(Debug, Clone)]
pub(crate) struct ZoneSlot {
    pub id: Box<str>,
    /// Unknown only for zones named by the alert book or a snapshot before the geo index told us.
    pub kind: Option<ZoneKind>,
    /// The zone's `thresholds` as configured (kept to re-resolve after a reload changes the keys in use).
    pub raw: BTreeMap<String, f64>,
    /// Resolved per `Plan::threshold_keys`; NaN where the zone has no such threshold.
    pub thresholds: Box<[f64]>,
    /// Rules whose `scope.zone_ids` name this zone, sorted.
    pub scoped: Box<[u16]>,
}

/// One metric of one sensor.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub metric: Metric,
    pub newest_ms: i64,
    /// Value of the newest reading (thresholds, trips).
    pub latest: f64,
    pub dedup: Dedup,
    /// Only when an accumulation rule reads this metric.
    pub acc: Option<Box<Buckets>>,
    /// Only when a rate rule reads this metric.
    pub rate: Option<Box<RateRing>>,
}

impl Series {
    pub fn new(metric: Metric, plan: &SeriesPlan) -> Self {
        Series {
            metric,
            newest_ms: NO_TS,
            latest: f64::NAN,
            dedup: Dedup::new(),
            acc: (plan.buckets > 0).then(|| Box::new(Buckets::new(plan.buckets))),
            rate: (plan.rate_keep > 0).then(|| Box::new(RateRing::new())),
        }
    }
}

/// A sensor's level under one rule in one zone. 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AreaSlot {
    /// Threshold rules: since when the pending level has been met. Geofence: since when the vehicle has been
    /// stopped inside this zone. `NO_TS` otherwise.
    pub since_ms: i64,
    pub zone: u32,
    pub rule: u16,
    pub level: u8,
    /// Threshold rules: the level waiting for `min_duration`.
    pub pending: u8,
}

impl AreaSlot {
    pub fn new(rule: u16, zone: u32, level: u8) -> Self {
        AreaSlot { since_ms: NO_TS, zone, rule, level, pending: NONE }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SensorSlot {
    pub id: Box<str>,
    pub kind: SensorKind,
    pub interval_ms: i64,
    /// Event time of the newest reading of any metric (rules without a series evaluate as of it).
    pub last_seen_ms: i64,
    /// Arrival time (the ingest clock) of the newest reading to arrive: the deadman's clock. Not event time: a
    /// replay or a gateway flushing its backlog delivers old timestamps from a sensor that is alive right now.
    pub last_arrived_ms: i64,
    /// Grace start for the deadman: a sensor watched before its first report, or the engine's restart.
    pub watch_from_ms: i64,
    /// Zones the sensor stands in (its latest position), interned.
    pub zones: Vec<u32>,
    pub speed_kmh: f32,
    pub speed_ts: i64,
    /// UN number of the cargo (hazmat trucks), 0 if unknown.
    pub cargo: u16,
    /// Whether any deadman slot is at a level (a reading must then re-evaluate the deadman to clear it).
    pub deadman_raised: bool,
    pub series: Vec<Series>,
    pub slots: Vec<AreaSlot>,
    /// (rule, zone) slots whose level came from the alert book and must be announced on their next evaluation
    /// (kept out of `AreaSlot`, which would grow from 16 to 24 bytes for a flag that is almost never set).
    pub announce: Vec<(u16, u32)>,
}

impl SensorSlot {
    pub fn new(id: &str, kind: SensorKind, interval_ms: i64) -> Self {
        SensorSlot {
            id: id.into(),
            kind,
            interval_ms: interval_ms.max(1000),
            last_seen_ms: NO_TS,
            last_arrived_ms: NO_TS,
            watch_from_ms: NO_TS,
            zones: Vec::new(),
            speed_kmh: f32::NAN,
            speed_ts: NO_TS,
            cargo: 0,
            deadman_raised: false,
            series: Vec::new(),
            slots: Vec::new(),
            announce: Vec::new(),
        }
    }
}

/// A contributor at a level in a (rule, zone) area.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Member {
    /// Sensor index, or `AREA_MEMBER` for a zone-wide rule's own level.
    pub sensor: u32,
    pub level: u8,
    /// The CAP values of its latest finding (zone-wide rules merge their inputs' values).
    pub values: BTreeMap<String, String>,
    /// Zone-wide members: the sensors behind them.
    pub evidence: Vec<u32>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct AreaAgg {
    pub members: Vec<Member>,
}

impl AreaAgg {
    pub fn level_of(&self, sensor: u32) -> Option<u8> {
        self.members.iter().find(|m| m.sensor == sensor).map(|m| m.level)
    }

    pub fn count_at_least(&self, level: u8) -> u32 {
        self.members.iter().filter(|m| m.level >= level).count() as u32
    }

    pub fn top(&self) -> Option<u8> {
        self.members.iter().map(|m| m.level).max()
    }
}

/// Bytes of engine state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StateBytes {
    pub sensors: usize,
    /// The largest sensor: its slot, id, zones, series (with bucket rings and rate samples), level slots and its
    /// entry in the id index. Allocator headers are not counted (they depend on the allocator).
    pub max_per_sensor: usize,
    pub mean_per_sensor: f64,
    /// Areas with someone at a level, and zones: shared, proportional to what is active, not to sensors.
    pub areas: usize,
    pub zones: usize,
}

pub(crate) fn sensor_bytes(s: &SensorSlot) -> usize {
    let index_entry = size_of::<Box<str>>() + size_of::<u32>() + 1;
    let series: usize = s
        .series
        .iter()
        .map(|x| {
            x.acc.as_ref().map(|b| size_of::<Buckets>() + b.heap_bytes()).unwrap_or(0)
                + x.rate.as_ref().map(|_| size_of::<RateRing>()).unwrap_or(0)
        })
        .sum();
    size_of::<SensorSlot>()
        + index_entry
        + s.id.len()
        + s.zones.capacity() * size_of::<u32>()
        + s.series.capacity() * size_of::<Series>()
        + series
        + s.slots.capacity() * size_of::<AreaSlot>()
        + s.announce.capacity() * size_of::<(u16, u32)>()
}

pub(crate) fn measure(sensors: &[SensorSlot], areas: usize, zones: usize) -> StateBytes {
    let sizes: Vec<usize> = sensors.iter().map(sensor_bytes).collect();
    let total: usize = sizes.iter().sum();
    StateBytes {
        sensors: sensors.len(),
        max_per_sensor: sizes.iter().copied().max().unwrap_or(0),
        mean_per_sensor: if sizes.is_empty() { 0.0 } else { total as f64 / sizes.len() as f64 },
        areas,
        zones,
    }
}
