//! History queries: raw points or min/max/mean buckets of one sensor's metric over a time range.
//!
//! The result is what `GET /api/v1/sensors/{id}/readings?metric=&from=&to=&step=` answers, as JSON:
//! `{"sensor_id":"RG0001","metric":"rain_mm","from":…,"to":…,"points":[{"ts":…,"value":…}]}` or, with a step,
//! `{…,"step":600000,"buckets":[{"ts":…,"min":…,"max":…,"mean":…,"sum":…,"count":…}]}`. Times are Unix ms.

use ingest::Metric;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::StoreError;

/// One stored reading.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Point {
    #[serde(rename = "ts")]
    pub ts_ms: i64,
    pub value: f64,
}

/// The readings of one step-long interval `[ts, ts + step)`. Only intervals holding readings appear: a gap in the
/// data is a gap in the list, which is what a chart should show for a silent sensor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Bucket {
    #[serde(rename = "ts")]
    pub ts_ms: i64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// Rain gauges report increments, so the operator's "rain in this hour" is the sum, not the mean.
    pub sum: f64,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Samples {
    Points(Vec<Point>),
    Buckets(Vec<Bucket>),
}

/// The answer to a history query. The range is half-open, `[from, to)`, so consecutive ranges never count a reading
/// twice; buckets start at `from + k·step`, so the caller chooses the alignment (local midnight for daily rain).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct History {
    pub sensor_id: String,
    pub metric: Metric,
    #[serde(rename = "from")]
    pub from_ms: i64,
    #[serde(rename = "to")]
    pub to_ms: i64,
    #[serde(rename = "step", skip_serializing_if = "Option::is_none")]
    pub step_ms: Option<i64>,
    #[serde(flatten)]
    pub samples: Samples,
}

impl History {
    /// Number of points or buckets.
    pub fn len(&self) -> usize {
        match &self.samples {
            Samples::Points(p) => p.len(),
            Samples::Buckets(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub fn history(
    conn: &Connection,
    sensor_id: &str,
    metric: Metric,
    from_ms: i64,
    to_ms: i64,
    step_ms: Option<i64>,
    max_points: usize,
) -> Result<History, StoreError> {
    if from_ms >= to_ms {
        return Err(StoreError::BadQuery(format!("from ({from_ms}) must be before to ({to_ms})")));
    }
    // Checked here so that `ts - from` below can never overflow inside SQLite (which would turn it into a float).
    let span = to_ms
        .checked_sub(from_ms)
        .ok_or_else(|| StoreError::BadQuery(format!("range {from_ms}..{to_ms} is too wide")))?;
    if let Some(step) = step_ms {
        if step <= 0 {
            return Err(StoreError::BadQuery(format!("step must be positive, got {step}")));
        }
        let buckets = span / step + i64::from(span % step != 0);
        if buckets > max_points as i64 {
            return Err(StoreError::TooManyPoints { limit: max_points });
        }
    }
    let series: Option<i64> = conn
        .prepare_cached("SELECT id FROM series WHERE sensor_id = ?1 AND metric = ?2")?
        .query_row(params![sensor_id, metric.name()], |row| row.get(0))
        .optional()?;
    let samples = match (series, step_ms) {
        (None, None) => Samples::Points(Vec::new()),
        (None, Some(_)) => Samples::Buckets(Vec::new()),
        (Some(id), None) => {
            let mut stmt = conn.prepare_cached(
                "SELECT ts, value FROM readings WHERE series = ?1 AND ts >= ?2 AND ts < ?3 ORDER BY ts LIMIT ?4",
            )?;
            // One more than allowed tells "exactly at the limit" from "over it" without a count query.
            let limit = i64::try_from(max_points).unwrap_or(i64::MAX - 1) + 1;
            let rows = stmt.query_map(params![id, from_ms, to_ms, limit], |row| {
                Ok(Point { ts_ms: row.get(0)?, value: row.get(1)? })
            })?;
            let points = rows.collect::<Result<Vec<_>, _>>()?;
            if points.len() > max_points {
                return Err(StoreError::TooManyPoints { limit: max_points });
            }
            Samples::Points(points)
        }
        (Some(id), Some(step)) => {
            let mut stmt = conn.prepare_cached(
                "SELECT (ts - ?2) / ?4 AS k, min(value), max(value), total(value), count(*)
                 FROM readings WHERE series = ?1 AND ts >= ?2 AND ts < ?3
                 GROUP BY k ORDER BY k",
            )?;
            let rows = stmt.query_map(params![id, from_ms, to_ms, step], |row| {
                let k: i64 = row.get(0)?;
                let sum: f64 = row.get(3)?;
                let count: i64 = row.get(4)?;
                Ok(Bucket {
                    ts_ms: from_ms + k * step,
                    min: row.get(1)?,
                    max: row.get(2)?,
                    mean: sum / count as f64,
                    sum,
                    count: count as u64,
                })
            })?;
            Samples::Buckets(rows.collect::<Result<Vec<_>, _>>()?)
        }
    };
    Ok(History { sensor_id: sensor_id.to_owned(), metric, from_ms, to_ms, step_ms, samples })
}

/// Readings of every series after that series' cutoff (`after(sensor, metric)`: readings with `ts > cutoff` come
/// back; `None` skips the series), in event-time order, at most `limit` (the oldest are kept). One range scan per
/// series on the (series, ts) key. For the rule engine's catch-up after a restart.
pub fn readings_after(
    conn: &Connection,
    after: &dyn Fn(&str, Metric) -> Option<i64>,
    limit: usize,
) -> Result<Vec<ingest::Reading>, StoreError> {
    let mut series = Vec::new();
    {
        let mut stmt = conn.prepare_cached("SELECT id, sensor_id, metric FROM series")?;
        let rows =
            stmt.query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?)))?;
        for row in rows {
            let (id, sensor, metric) = row?;
            // A metric this build no longer knows cannot feed the rules.
            let Some(metric) = Metric::from_name(&metric) else { continue };
            if let Some(cutoff) = after(&sensor, metric) {
                series.push((id, sensor, metric, cutoff));
            }
        }
    }
    let mut out = Vec::new();
    let mut stmt = conn.prepare_cached("SELECT ts, value FROM readings WHERE series = ?1 AND ts > ?2 ORDER BY ts")?;
    for (id, sensor, metric, cutoff) in series {
        let rows = stmt.query_map(params![id, cutoff], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, f64>(1)?)))?;
        for row in rows {
            let (ts_ms, value) = row?;
            out.push(ingest::Reading { sensor_id: sensor.clone(), ts_ms, metric, value, position: None });
        }
    }
    out.sort_by(|a, b| (a.ts_ms, &a.sensor_id).cmp(&(b.ts_ms, &b.sensor_id)));
    out.truncate(limit);
    Ok(out)
}

/// A detector's speed baseline over `[from_ms, to_ms)`: per 10-minute slot its start and mean speed, in time order
/// (`baseline.rs`). Empty for a detector the baseline does not track.
pub fn speed_baseline(conn: &Connection, sensor_id: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Point>, StoreError> {
    if from_ms >= to_ms {
        return Err(StoreError::BadQuery(format!("from ({from_ms}) must be before to ({to_ms})")));
    }
    let slot = super::baseline::SLOT_MS;
    let mut stmt = conn.prepare_cached(
        "SELECT s.slot, s.sum / s.n FROM speed_slots s JOIN series ON series.id = s.series
         WHERE series.sensor_id = ?1 AND series.metric = ?2 AND s.slot >= ?3 AND s.slot < ?4 AND s.n > 0
         ORDER BY s.slot",
    )?;
    // Slots that begin in the range; a range not on slot boundaries takes the slot it begins in.
    let (first, end) = (from_ms.div_euclid(slot), to_ms.div_euclid(slot) + i64::from(to_ms.rem_euclid(slot) != 0));
    let rows = stmt.query_map(params![sensor_id, ingest::Metric::SpeedKmh.name(), first, end], |row| {
        Ok(Point { ts_ms: row.get::<_, i64>(0)? * slot, value: row.get(1)? })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}
