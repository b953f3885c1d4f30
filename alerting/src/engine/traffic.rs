//! Vehicle detectors for `traffic` rules: each detector's recent readings, its place along its road segment, its
//! class (`rules::traffic` says what each class means), and the learned normal speeds ([`TrafficBaseline`]).
//!
//! Kept beside the per-sensor slots rather than in them: a detector's few minutes of (speed, flow, occupancy) do not
//! fit the 1 KiB a sensor's windows may take, and only detectors need them. Pure: event time in, classes out; the
//! baseline is computed by the caller from the readings store (`TrafficBaseline::learn`) and handed in.

use std::collections::{BTreeSet, HashMap, VecDeque};

use ingest::Metric;

use crate::rules::{TrafficClass, TrafficSettings};

/// At most this many reading sets per detector, whatever `[traffic]` asks: bounds memory against a detector
/// reporting far faster than its interval.
const MAX_SAMPLES: usize = 256;

/// One reading set (the three metrics share a timestamp); a metric not reported yet carries the previous value, so
/// a set arriving metric by metric never looks like a gap.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    ts: i64,
    speed: f64,
    flow: f64,
    occupancy: f64,
}

#[derive(Debug, Clone, Default)]
struct Detector {
    samples: VecDeque<Sample>,
    /// Per road zone: the class last decided there (blocked ends only after `recovered_for` of flowing).
    classes: Vec<(u32, TrafficClass)>,
    /// Per road zone: metres along the segment's centre line (upstream = smaller), when known.
    along: Vec<(u32, f64)>,
    /// The road zones the detector stands in (as last placed): what `classify` decides for, without searching
    /// every segment's detectors on each reading.
    zones: Vec<u32>,
    /// The detector's row in the baseline, resolved from its id once per baseline (`baseline_gen`) rather than by
    /// hashing the id on every reading.
    baseline: Option<u32>,
    baseline_gen: u64,
}

/// The detectors of every road segment.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrafficBoard {
    detectors: HashMap<u32, Detector, ahash::RandomState>,
    /// Road zone → detectors standing in it.
    segments: HashMap<u32, BTreeSet<u32>, ahash::RandomState>,
    baseline: TrafficBaseline,
    /// Bumped by every `set_baseline`: detectors resolve their baseline row again.
    baseline_gen: u64,
}

impl TrafficBoard {
    pub fn set_baseline(&mut self, baseline: TrafficBaseline) {
        self.baseline = baseline;
        self.baseline_gen += 1;
    }

    pub fn baseline(&self) -> &TrafficBaseline {
        &self.baseline
    }

    /// Places detector `s` on the road zones it stands in, with its position along each (`None`: unknown).
    pub fn place(&mut self, s: u32, zones: &[(u32, Option<f64>)]) {
        let d = self.detectors.entry(s).or_default();
        for seg in self.segments.values_mut() {
            seg.remove(&s);
        }
        d.along = zones.iter().filter_map(|&(z, a)| a.map(|a| (z, a))).collect();
        d.zones = zones.iter().map(|&(z, _)| z).collect();
        d.zones.sort_unstable();
        d.zones.dedup();
        d.classes.retain(|(z, _)| zones.iter().any(|(y, _)| y == z));
        for &(z, _) in zones {
            self.segments.entry(z).or_default().insert(s);
        }
    }

    /// Whether the detector has enough history to be judged (its reading sets span `blocked_for`). Until then its
    /// rules keep their level: after a restart an adopted closure must not end on the first reading.
    pub fn is_warm(&self, s: u32, settings: &TrafficSettings) -> bool {
        self.detectors.get(&s).is_some_and(|d| match (d.samples.front(), d.samples.back()) {
            (Some(a), Some(b)) => b.ts - a.ts >= settings.blocked_for as i64,
            _ => false,
        })
    }

    pub fn is_placed(&self, s: u32) -> bool {
        self.detectors.contains_key(&s)
    }

    /// Records one reading of a detector metric. Returns false for other metrics.
    pub fn record(&mut self, s: u32, metric: Metric, ts: i64, value: f64, settings: &TrafficSettings) -> bool {
        if !matches!(metric, Metric::SpeedKmh | Metric::FlowVehH | Metric::OccupancyPct) {
            return false;
        }
        let d = self.detectors.entry(s).or_default();
        let at = d.samples.iter().rposition(|x| x.ts <= ts);
        let i = match at {
            Some(i) if d.samples[i].ts == ts => i,
            _ => {
                let prev = at.map(|i| d.samples[i]);
                let fresh = Sample {
                    ts,
                    speed: prev.map_or(f64::NAN, |p| p.speed),
                    flow: prev.map_or(f64::NAN, |p| p.flow),
                    occupancy: prev.map_or(f64::NAN, |p| p.occupancy),
                };
                let i = at.map_or(0, |i| i + 1);
                d.samples.insert(i, fresh);
                i
            }
        };
        let sample = &mut d.samples[i];
        match metric {
            Metric::SpeedKmh => sample.speed = value,
            Metric::FlowVehH => sample.flow = value,
            _ => sample.occupancy = value,
        }
        // Keep what the longest duration needs, plus one set before it (a run's start).
        let newest = d.samples.back().map_or(ts, |x| x.ts);
        let keep_from = newest.saturating_sub(settings.history_ms() + settings.neighbour_fresh_for as i64);
        while d.samples.len() > 2 && d.samples.get(1).is_some_and(|x| x.ts < keep_from) {
            d.samples.pop_front();
        }
        while d.samples.len() > MAX_SAMPLES {
            d.samples.pop_front();
        }
        true
    }

    /// Decides detector `s`'s class on each of its road zones as of its newest reading set, and remembers it.
    pub fn classify(&mut self, s: u32, settings: &TrafficSettings, sensor_id: &str) {
        // A new detector's generation is 0 and this one at least 1: it resolves its row on its first reading.
        let generation = self.baseline_gen + 1;
        let Some(d) = self.detectors.get_mut(&s) else { return };
        if d.baseline_gen != generation {
            d.baseline = self.baseline.row_of(sensor_id);
            d.baseline_gen = generation;
        }
        let Some(d) = self.detectors.get(&s) else { return };
        let mut classes = Vec::with_capacity(d.zones.len());
        for &z in &d.zones {
            let was = d.classes.iter().find(|(y, _)| *y == z).map_or(TrafficClass::Normal, |c| c.1);
            let class = self.decide(s, d, z, was, settings);
            classes.push((z, class));
        }
        if let Some(d) = self.detectors.get_mut(&s) {
            d.classes = classes;
        }
    }

    /// The class last decided for detector `s` in zone `z`.
    pub fn class_of(&self, s: u32, z: u32) -> Option<TrafficClass> {
        self.detectors.get(&s)?.classes.iter().find(|(y, _)| *y == z).map(|c| c.1)
    }

    /// The newest (speed, flow, occupancy) of a detector, for alert values.
    pub fn latest(&self, s: u32) -> Option<(f64, f64, f64)> {
        self.detectors.get(&s)?.samples.back().map(|x| (x.speed, x.flow, x.occupancy))
    }

    fn decide(&self, s: u32, d: &Detector, z: u32, was: TrafficClass, t: &TrafficSettings) -> TrafficClass {
        let Some(now) = d.samples.back().map(|x| x.ts) else { return TrafficClass::Normal };
        let fresh_from = now.saturating_sub(t.neighbour_fresh_for as i64);
        let mine = d.along.iter().find(|(y, _)| *y == z).map(|a| a.1);
        // The neighbours' newest fresh reading sets, with whether they are upstream of this detector. Walked only
        // when the detector's own readings leave the class open (most readings are of flowing traffic, and a
        // segment may carry dozens of detectors), and only as far as the answer needs.
        let neighbours = || {
            self.segments.get(&z).into_iter().flatten().filter(move |&&n| n != s).filter_map(move |n| {
                let nd = self.detectors.get(n)?;
                let last = *nd.samples.back()?;
                if last.ts < fresh_from {
                    return None;
                }
                let theirs = nd.along.iter().find(|(y, _)| *y == z).map(|a| a.1);
                // Unknown order: any neighbour may be the upstream one.
                let upstream = match (mine, theirs) {
                    (Some(m), Some(o)) => o < m,
                    _ => true,
                };
                Some((last, upstream))
            })
        };
        let flowing = |x: &Sample| x.speed >= t.normal_speed_kmh && x.flow > 0.0;
        // At least one fresh neighbour, and every fresh neighbour flowing.
        let all_neighbours_flow = || {
            let mut any = false;
            for (x, _) in neighbours() {
                if !flowing(&x) {
                    return false;
                }
                any = true;
            }
            any
        };

        // The fewest vehicles any fresh neighbour counted from `since` to now (its mean flow over the time times
        // the time; infinite without neighbours, which `all_neighbours_flow` refuses anyway).
        let least_counted_since = |since: i64| {
            let mut least = f64::INFINITY;
            for n in self.segments.get(&z).into_iter().flatten().filter(|&&n| n != s) {
                let Some(nd) = self.detectors.get(n) else { continue };
                if nd.samples.back().is_none_or(|x| x.ts < fresh_from) {
                    continue;
                }
                let (sum, k) = nd
                    .samples
                    .iter()
                    .filter(|x| x.ts >= since && x.ts <= now && x.flow.is_finite())
                    .fold((0.0, 0u32), |(sum, k), x| (sum + x.flow, k + 1));
                let mean = if k == 0 { 0.0 } else { sum / f64::from(k) };
                least = least.min(mean * (now - since) as f64 / 3_600_000.0);
            }
            least
        };

        // A broken detector first: what it reports cannot be believed, whatever it says. At a standstill while
        // every neighbour flows — and the neighbours counted enough vehicles meanwhile that a working loop could not
        // have missed them all (at night an empty road reads 0 km/h too).
        let stuck = run_start(d, |x| x.speed <= t.blocked_speed_kmh)
            .filter(|&since| now - since >= t.fault_after as i64)
            .is_some_and(|since| all_neighbours_flow() && least_counted_since(since) >= t.fault_min_vehicles);
        let newest = d.samples.back().copied();
        // Frozen: the very same reading set for `flat_for`. Counting vehicles it is broken by itself; repeating "no
        // vehicle" it is the empty road again unless the neighbours counted enough meanwhile.
        let frozen_since = newest.and_then(|n| {
            let same = |x: &Sample| x.speed == n.speed && x.flow == n.flow && x.occupancy == n.occupancy;
            let since = run_start(d, same).filter(|&since| now - since >= t.flat_for as i64)?;
            (d.samples.iter().filter(|x| same(x)).count() >= 3).then_some(since)
        });
        let frozen = frozen_since.is_some_and(|since| {
            newest.is_some_and(|n| n.flow > 0.0)
                || (all_neighbours_flow() && least_counted_since(since) >= t.fault_min_vehicles)
        });
        if stuck || frozen {
            return TrafficClass::DeviceFault;
        }

        let stalled = |x: &Sample| x.speed <= t.blocked_speed_kmh && x.occupancy >= t.blocked_occupancy_pct;
        let upstream_queue = || neighbours().any(|(x, up)| up && x.occupancy >= t.blocked_occupancy_pct);
        let blocked_now = held(d, t.blocked_for as i64, stalled)
            || (held(d, t.blocked_for as i64, |x| x.flow <= 0.0) && upstream_queue());
        // Entering: not while every neighbour flows (a blockage between them would stop one of them too).
        if blocked_now && !all_neighbours_flow() {
            return TrafficClass::Blocked;
        }
        // Leaving: only on its own readings, after `recovered_for` of flowing; neighbours flowing again first is
        // how a clearing road looks, and a blip of traffic must not end the closure.
        if was == TrafficClass::Blocked {
            let recovered = held(d, t.recovered_for as i64, |x| x.speed >= t.recovered_speed_kmh && x.flow > 0.0);
            if !recovered {
                return TrafficClass::Blocked;
            }
        }

        if let Some(limit) = d.baseline.and_then(|row| self.baseline.slowed_limit(row, now, t)) {
            if held(d, t.slowed_for as i64, |x| x.speed < limit) {
                return TrafficClass::Slowed;
            }
        }
        TrafficClass::Normal
    }
}

/// Where the newest run of reading sets for which `pred` holds began (`None`: the newest set does not meet it).
fn run_start(d: &Detector, pred: impl Fn(&Sample) -> bool) -> Option<i64> {
    let mut start = None;
    for x in d.samples.iter().rev() {
        if x.speed.is_nan() || x.flow.is_nan() || x.occupancy.is_nan() || !pred(x) {
            break;
        }
        start = Some(x.ts);
    }
    start
}

/// Whether `pred` has held for every reading set of the newest run, and that run spans at least `for_ms`.
fn held(d: &Detector, for_ms: i64, pred: impl Fn(&Sample) -> bool) -> bool {
    let Some(newest) = d.samples.back() else { return false };
    run_start(d, pred).is_some_and(|s| newest.ts - s >= for_ms)
}

/// Width of a baseline slot: the readings store's (`store::embedded::baseline`), whose slot means are learned from.
pub const SLOT_MS: i64 = 10 * 60 * 1000;
/// 10-minute slots in a week.
pub const SLOTS_PER_WEEK: usize = 7 * 24 * 6;
const TAIWAN_MS: i64 = 8 * 3_600_000;

/// Hour of the week in Taiwan time (UTC+8), Monday 00:00 = 0 … Sunday 23:00 = 167.
pub fn hour_of_week(ts_ms: i64) -> usize {
    slot_of_week(ts_ms) / 6
}

/// 10-minute slot of the week in Taiwan time, Monday 00:00 = 0 … Sunday 23:50 = 1007.
pub fn slot_of_week(ts_ms: i64) -> usize {
    // 1970-01-01 was a Thursday: 3 days after a Monday.
    (ts_ms + TAIWAN_MS + 3 * 86_400_000).div_euclid(SLOT_MS).rem_euclid(SLOTS_PER_WEEK as i64) as usize
}

/// A detector's normal speed for one 10-minute slot of the week.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SlotNormal {
    pub median_kmh: f64,
    /// Median absolute deviation from the median: robust spread (one crash in the history does not widen it).
    pub mad_kmh: f64,
    /// How many distinct weeks the readings came from.
    pub weeks: u32,
}

/// One slot as kept: 12 bytes rather than 32 (a detector has 1,008 slots; a national deployment thousands of
/// detectors). `weeks` 0: nothing learnt.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Slot {
    median_kmh: f32,
    mad_kmh: f32,
    weeks: u32,
}

/// Each detector's normal speed per 10-minute slot of the week, learned from stored history with robust statistics
/// (median and MAD over the weeks), so the weekday rush hour is normal for the detector that sees it every weekday.
/// Slots rather than hours: a rush hour that ends at 08:20 leaves the rest of the 8 o'clock hour free-flowing, and
/// an hourly normal cannot say which part of the hour a rush hour fills.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrafficBaseline {
    rows: HashMap<String, u32>,
    /// Per row, `SLOTS_PER_WEEK` slots.
    slots: Vec<Slot>,
}

impl TrafficBaseline {
    /// Learns from (detector id, event time, speed km/h) readings, e.g. the readings store's 10-minute slot means
    /// of the last 4–8 weeks. Non-finite speeds are skipped.
    pub fn learn<'a>(readings: impl IntoIterator<Item = (&'a str, i64, f64)>) -> TrafficBaseline {
        // (detector, slot of week) → (speeds, the weeks they came from).
        type Group = (Vec<f64>, BTreeSet<i64>);
        let mut groups: HashMap<(&str, usize), Group> = HashMap::new();
        for (id, ts, speed) in readings {
            if !speed.is_finite() {
                continue;
            }
            let g = groups.entry((id, slot_of_week(ts))).or_default();
            g.0.push(speed);
            g.1.insert((ts + TAIWAN_MS + 3 * 86_400_000).div_euclid(7 * 86_400_000));
        }
        let mut baseline = TrafficBaseline::default();
        for ((id, slot), (mut values, weeks)) in groups {
            let next = baseline.rows.len() as u32;
            let row = *baseline.rows.entry(id.to_string()).or_insert(next);
            if row == next {
                baseline.slots.resize(baseline.slots.len() + SLOTS_PER_WEEK, Slot::default());
            }
            let median_kmh = median(&mut values);
            let mut dev: Vec<f64> = values.iter().map(|v| (v - median_kmh).abs()).collect();
            let mad_kmh = median(&mut dev);
            baseline.slots[row as usize * SLOTS_PER_WEEK + slot] =
                Slot { median_kmh: median_kmh as f32, mad_kmh: mad_kmh as f32, weeks: weeks.len() as u32 };
        }
        baseline
    }

    /// The normal for `sensor` in the 10-minute slot of `ts_ms`, if learnt from at least `min_weeks` weeks.
    pub fn normal(&self, sensor: &str, ts_ms: i64, min_weeks: u32) -> Option<SlotNormal> {
        let slot = self.slot(self.row_of(sensor)?, slot_of_week(ts_ms));
        (slot.weeks >= min_weeks.max(1)).then_some(SlotNormal {
            median_kmh: f64::from(slot.median_kmh),
            mad_kmh: f64::from(slot.mad_kmh),
            weeks: slot.weeks,
        })
    }

    pub fn detectors(&self) -> usize {
        self.rows.len()
    }

    /// The detector's row (resolved once per baseline by the board, not per reading).
    pub(crate) fn row_of(&self, sensor: &str) -> Option<u32> {
        self.rows.get(sensor).copied()
    }

    fn slot(&self, row: u32, slot: usize) -> Slot {
        self.slots.get(row as usize * SLOTS_PER_WEEK + slot).copied().unwrap_or_default()
    }

    /// The speed below which the detector in `row` counts as slowed at `ts_ms`: below `slowed_fraction` of a
    /// slot's median and `slowed_mad_k` robust deviations under it, in the most lenient of the slots within
    /// `slowed_shift` of `ts_ms`. `None` when any of those slots has fewer than `baseline_min_weeks`: a normal
    /// not known for the whole span is no ground for an alert.
    pub(crate) fn slowed_limit(&self, row: u32, ts_ms: i64, t: &TrafficSettings) -> Option<f64> {
        let shift = t.slowed_shift as i64;
        let (first, last) = ((ts_ms - shift).div_euclid(SLOT_MS), (ts_ms + shift).div_euclid(SLOT_MS));
        let mut limit = f64::INFINITY;
        for k in first..=last {
            let slot = self.slot(row, slot_of_week(k * SLOT_MS));
            if slot.weeks < t.baseline_min_weeks.max(1) {
                return None;
            }
            let (median, mad) = (f64::from(slot.median_kmh), f64::from(slot.mad_kmh));
            limit = limit.min((median * t.slowed_fraction).min(median - t.slowed_mad_k * 1.4826 * mad));
        }
        Some(limit)
    }
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}
