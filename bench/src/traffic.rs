//! `dc-bench traffic` (issue 28, "Measured"): the traffic rules on a simulated normal week, and their detection delay,
//! driven in event time through the shipped configuration (`config/rules.toml`, `zones.geojson`, `sensors.toml`):
//! no server, no waiting — a week of one-minute detectors replays in seconds.
//!
//! Method:
//! 1. **Learning**: `LEARN_WEEKS` weeks of normal traffic (speeds only) go into a real readings store, which keeps
//!    raw readings 7 days and its long-term speed baseline `baseline_weeks` (`store::embedded::baseline`); the
//!    baseline is then learned from the store as the server learns it (`TrafficBaseline::learn` over the store's
//!    10-minute slot means), and handed to the rule engine.
//! 2. **A normal week** follows (Monday 00:00 to Sunday 24:00, Taiwan time), every vehicle detector of the registry
//!    reporting speed, flow and occupancy once a minute at its own second of the minute: weekday rush hours (morning
//!    and evening, about 90 minutes at 25–35 km/h, start, length and depth different every day), weekend daytime
//!    tourist traffic, nights with so few vehicles that many minutes count none (a loop then reports 0 km/h, 0
//!    veh/h, 0 %). Readings go through rule engine → alert book → publication (what the public hears) as on the hot
//!    path, with the housekeeping tick every minute. Counted: public warnings (**false public alerts**, goal 0),
//!    and operators' alerts by rule.
//! 3. **Detection delay**: closures of Provincial Highway 21 at Shenmu at times spread over the week (night,
//!    morning rush, midday, evening rush; weekdays and the weekend), each after an hour of normal traffic with the
//!    tilt meter beside the road creeping (a landslide's warning): from the first blocked reading (VD0101 and VD0102
//!    at 0 km/h with their loops occupied, VD0103 behind them on an empty road) to the first public `road_blocked`
//!    warning, and to the warning naming the landslide (`road-blocked-by-hazard`).
//!
//! Deterministic for a seed. Not modelled: how fast a queue reaches a detector (the closure is in the readings from
//! its first minute), detectors failing, and weather.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use alerting::engine::TrafficBaseline;
use alerting::{Alert, AlertBook, Mode, Publication, RuleEngine, RuleSet, ZoneRef};
use geo_index::{GeoIndex, LoadPolicy, Resolution, ZoneKind};
use ingest::{Metric, Reading, Sensor, SensorKind, SensorRegistry};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{Cli, Row};

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
const WEEK: i64 = 7 * DAY;
/// Monday 2026-06-01 00:00 Taiwan time: the first learning week (all of it before today's wall clock, which the
/// store's baseline checks readings against).
const START: i64 = 1_780_243_200_000;
/// Weeks of history learned before the measured week: above `[traffic] baseline_min_weeks` (3).
const LEARN_WEEKS: i64 = 4;
/// Taiwan time is UTC+8.
const TAIWAN: i64 = 8 * HOUR;
/// The road that closes, its detectors in order of travel, and the tilt meter on the slope above it.
const PH21: &str = "ph21-xinyi-shenmu";
const UPSTREAM: [&str; 2] = ["VD0101", "VD0102"];
const DOWNSTREAM: &str = "VD0103";
const TILT: &str = "TM0001";

/// What the run measured.
#[derive(Debug, Default)]
pub struct Figures {
    /// Detectors simulated, and their readings in the normal week.
    pub detectors: usize,
    pub readings: u64,
    /// Wall time of the normal week's replay (rule engine, book, publication).
    pub replay_s: f64,
    /// Public warnings the normal week raised: (event, area) of each.
    pub public: Vec<(String, String)>,
    /// Operators' alerts raised in the normal week, by rule.
    pub operator: BTreeMap<String, usize>,
    /// … by rule, part of the week (night, rush, day, weekend) and detector: where they come from.
    pub operator_where: BTreeMap<(String, &'static str, String), usize>,
    /// Detectors with a learned normal for the hours they report.
    pub baselined: usize,
    /// Per closure: ms from the first blocked reading to the first public `road_blocked` warning, and to the
    /// warning naming the landslide; `None` when it never came.
    pub delays: Vec<(String, Option<i64>, Option<i64>)>,
}

/// The demo configuration, as the server loads it.
struct World {
    rules: RuleSet,
    geo: GeoIndex,
    detectors: Vec<Detector>,
    tilt: Sensor,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Road {
    Freeway,
    Mountain,
    Urban,
}

struct Detector {
    sensor: Sensor,
    road: Road,
    /// The second of the minute this detector reports at (detectors are not synchronised).
    offset_ms: i64,
}

impl World {
    fn load(seed: u64) -> anyhow::Result<World> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let rules = RuleSet::from_toml(include_str!("../../config/rules.toml"), &root.join("rules.toml"))
            .map_err(|e| anyhow::anyhow!("rules: {e}"))?;
        let mut geo = GeoIndex::new(Resolution::try_from(9u8).map_err(|e| anyhow::anyhow!("{e}"))?);
        geo.load_zones(include_str!("../../config/zones.geojson"), LoadPolicy::StopOnFirst)
            .map_err(|e| anyhow::anyhow!("zones: {e}"))?;
        let registry = SensorRegistry::from_toml(include_str!("../../config/sensors.toml"), &root.join("sensors.toml"))
            .map_err(|e| anyhow::anyhow!("sensors: {e}"))?;
        let mut rng = StdRng::seed_from_u64(seed);
        let detectors: Vec<Detector> = registry
            .iter()
            .filter(|s| s.kind == SensorKind::VehicleDetector && !s.retired)
            .map(|s| {
                let roads: Vec<String> = geo
                    .zones_containing(s.lat, s.lon)
                    .into_iter()
                    .filter(|z| z.kind == ZoneKind::RoadSegment)
                    .map(|z| z.id.clone())
                    .collect();
                let road = if roads.iter().any(|r| r.starts_with("fwy")) {
                    Road::Freeway
                } else if roads.iter().any(|r| r.starts_with("ph")) {
                    Road::Mountain
                } else {
                    Road::Urban
                };
                Detector { sensor: s.clone(), road, offset_ms: rng.gen_range(0..60) * 1000 }
            })
            .collect();
        let tilt = registry.get(TILT).cloned().ok_or_else(|| anyhow::anyhow!("{TILT} is not in the registry"))?;
        Ok(World { rules, geo, detectors, tilt })
    }
}

/// One day's traffic pattern: when its rush hours start, how long and how slow they are.
#[derive(Clone, Copy)]
struct Day {
    weekend: bool,
    /// Rush hours (start in hours after midnight, length in hours, speed at the bottom in km/h).
    rushes: [(f64, f64, f64); 2],
}

impl Day {
    fn draw(day_of_week: i64, rng: &mut StdRng) -> Day {
        let mut rush =
            |centre: f64| (centre + rng.gen_range(-0.25..0.25), rng.gen_range(1.35..1.65), rng.gen_range(25.0..35.0));
        Day { weekend: day_of_week >= 5, rushes: [rush(7.0), rush(17.0)] }
    }
}

/// (speed km/h, flow veh/h, occupancy %) a detector reports for the minute at local hour `h` of `day`.
fn normal_minute(road: Road, day: &Day, h: f64, rng: &mut StdRng) -> (f64, f64, f64) {
    let (free, day_flow, night_flow, lanes) = match road {
        Road::Freeway => (95.0, 3200.0, 400.0, 3.0),
        Road::Mountain => (60.0, 600.0, 25.0, 1.0),
        Road::Urban => (50.0, 900.0, 60.0, 2.0),
    };
    // Demand over the day: night lull, a ramp up from 5 to 7, daytime, a ramp down from 21 to 24.
    let demand = if h < 5.0 {
        0.0
    } else if h < 7.0 {
        (h - 5.0) / 2.0
    } else if h < 21.0 {
        1.0
    } else {
        (24.0 - h) / 3.0
    };
    let mut flow = night_flow + (day_flow - night_flow) * demand;
    let mut speed = free;
    if !day.weekend {
        for (start, length, bottom) in day.rushes {
            // 15-minute ramps into and out of the rush; at the bottom for the rest.
            let into = ((h - start) / 0.25).clamp(0.0, 1.0);
            let out = ((start + length - h) / 0.25).clamp(0.0, 1.0);
            let depth = into.min(out);
            speed -= (free - bottom) * depth;
            flow += day_flow * 0.5 * depth;
        }
    } else if (10.0..18.0).contains(&h) {
        // Weekend outings: the mountain road fills up, the city is quieter.
        let (bottom, more) = match road {
            Road::Mountain => (45.0, 1.4),
            Road::Freeway => (75.0, 1.1),
            Road::Urban => (free, 0.8),
        };
        speed = speed.min(bottom + rng.gen_range(-3.0..3.0));
        flow *= more;
    }
    // Vehicles counted this minute: Poisson around the demand. None → the loop reports nothing passing.
    let vehicles = poisson(flow / 60.0, rng);
    if vehicles == 0 {
        return (0.0, 0.0, 0.0);
    }
    let speed = (speed + rng.gen_range(-3.0..3.0)).max(5.5);
    let flow = vehicles as f64 * 60.0;
    // Occupancy: each vehicle covers the loop for (vehicle + loop length) / speed; 7.5 m per vehicle, per lane.
    let occupancy = (flow * 0.0075 / speed / lanes * 100.0).clamp(0.0, 100.0);
    (round1(speed), flow, round1(occupancy))
}

fn poisson(mean: f64, rng: &mut StdRng) -> u32 {
    // Knuth's method: fine for the means here (≤ 100 per minute); past that the normal approximation.
    if mean > 100.0 {
        return (mean + mean.sqrt() * (rng.gen::<f64>() * 2.0 - 1.0) * 1.7).round().max(0.0) as u32;
    }
    let limit = (-mean).exp();
    let (mut k, mut p) = (0u32, 1.0);
    loop {
        p *= rng.gen::<f64>();
        if p <= limit {
            return k;
        }
        k += 1;
    }
}

/// Which part of the week a local hour of `day` is in (for telling where operators' alerts come from).
fn part_of_week(day: &Day, h: f64) -> &'static str {
    let rush = day.rushes.iter().any(|(start, length, _)| h >= start - 0.5 && h <= start + length + 0.5);
    if !(5.0..22.0).contains(&h) {
        "night"
    } else if day.weekend {
        "weekend day"
    } else if rush {
        "rush ±30 min"
    } else {
        "weekday"
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn local_hour(ts: i64) -> f64 {
    ((ts + TAIWAN).rem_euclid(DAY)) as f64 / HOUR as f64
}

fn day_index(ts: i64) -> i64 {
    (ts - START).div_euclid(DAY)
}

/// The hot path in miniature: engine → book → publication, at event time.
struct Pipeline<'w> {
    world: &'w World,
    engine: RuleEngine,
    book: AlertBook,
    publication: Publication,
    /// Every change the book made, and every public warning version.
    changes: Vec<Alert>,
    public: Vec<alerting::PublicWarning>,
}

impl<'w> Pipeline<'w> {
    fn new(world: &'w World, baseline: TrafficBaseline) -> Pipeline<'w> {
        let mut engine = RuleEngine::new(world.rules.clone(), HOUR);
        engine.set_zones(world.geo.zones());
        engine.set_traffic_baseline(baseline);
        Pipeline {
            world,
            engine,
            book: AlertBook::new("TW-DC-BENCH"),
            publication: Publication::new(Default::default()),
            changes: Vec::new(),
            public: Vec::new(),
        }
    }

    fn read(&mut self, sensor: &Sensor, ts: i64, metric: Metric, value: f64) {
        let reading = Reading { sensor_id: sensor.id.clone(), ts_ms: ts, metric, value, position: None };
        let zones: Vec<ZoneRef<'_>> = self
            .world
            .geo
            .zones_containing(sensor.lat, sensor.lon)
            .into_iter()
            .map(|z| ZoneRef { id: &z.id, kind: z.kind })
            .collect();
        let mut out = Vec::new();
        self.engine.evaluate(&reading, sensor, &zones, &mut out);
        self.fold(out, ts);
    }

    fn tick(&mut self, now: i64) {
        let mut out = Vec::new();
        self.engine.tick(now, &mut out);
        self.fold(out, now);
    }

    fn fold(&mut self, findings: Vec<alerting::Finding>, now: i64) {
        if findings.is_empty() {
            return;
        }
        let changed = self.book.apply_all(findings, Mode::Actual, now);
        if changed.is_empty() {
            return;
        }
        let (_, warnings) = self.publication.observe_all(&changed, now);
        self.public.extend(warnings);
        self.changes.extend(changed);
    }

    /// One minute of every detector (in the order of their second of the minute), `blocked` ones replaced.
    fn minute(&mut self, t: i64, days: &BTreeMap<i64, Day>, rng: &mut StdRng, closed: bool) -> u64 {
        let day = days[&day_index(t)];
        let h = local_hour(t);
        let mut readings = 0;
        for d in &self.world.detectors {
            let ts = t + d.offset_ms;
            let (speed, flow, occupancy) = if closed && UPSTREAM.contains(&d.sensor.id.as_str()) {
                (0.0, 0.0, 100.0)
            } else if closed && d.sensor.id == DOWNSTREAM {
                (0.0, 0.0, 0.0)
            } else {
                normal_minute(d.road, &day, h, rng)
            };
            self.read(&d.sensor, ts, Metric::SpeedKmh, speed);
            self.read(&d.sensor, ts, Metric::FlowVehH, flow);
            self.read(&d.sensor, ts, Metric::OccupancyPct, occupancy);
            readings += 3;
        }
        self.tick(t + MIN - 1);
        readings
    }
}

/// Every day's pattern from `START` over `weeks` weeks (drawn once, so learning and measuring see the same kind of
/// days, not the same days).
fn days(weeks: i64, rng: &mut StdRng) -> BTreeMap<i64, Day> {
    (0..weeks * 7).map(|i| (i, Day::draw(i.rem_euclid(7), rng))).collect()
}

/// Learns the baseline through a real readings store (raw 7 days, the speed baseline kept `baseline_weeks`).
fn learn(world: &World, days: &BTreeMap<i64, Day>, rng: &mut StdRng) -> anyhow::Result<(TrafficBaseline, usize)> {
    let dir = std::env::temp_dir().join(format!("dc-bench-traffic-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = store::ReadingStore::open(&dir, store::StoreConfig::default())?;
    store.track_detectors(world.detectors.iter().map(|d| &d.sensor));
    let end = START + LEARN_WEEKS * WEEK;
    let mut t = START;
    while t < end {
        let day = days[&day_index(t)];
        let batch: Vec<Reading> = (0..60)
            .flat_map(|m| {
                let minute = t + m * MIN;
                world
                    .detectors
                    .iter()
                    .map(|d| {
                        let (speed, _, _) = normal_minute(d.road, &day, local_hour(minute), rng);
                        Reading {
                            sensor_id: d.sensor.id.clone(),
                            ts_ms: minute + d.offset_ms,
                            metric: Metric::SpeedKmh,
                            value: speed,
                            position: None,
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        store.append(&batch);
        t += HOUR;
    }
    store.flush()?;
    store.enforce_retention(end)?;
    let from = end - i64::from(store.config().baseline_weeks) * WEEK;
    let mut slots = Vec::new();
    for d in &world.detectors {
        slots.extend(store.speed_baseline(&d.sensor.id, from, end)?.into_iter().map(|p| (d.sensor.id.clone(), p)));
    }
    let baseline = TrafficBaseline::learn(slots.iter().map(|(id, p)| (id.as_str(), p.ts_ms, p.value)));
    let known = baseline.detectors();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((baseline, known))
}

/// The closures measured: (label, day of the week 0 = Monday, local hour).
fn closures(quick: bool) -> Vec<(String, i64, f64)> {
    let all = [
        ("Mon 03:10 night", 0, 3.17),
        ("Tue 07:40 morning rush", 1, 7.67),
        ("Wed 12:30 midday", 2, 12.5),
        ("Thu 17:50 evening rush", 3, 17.83),
        ("Fri 22:15 evening", 4, 22.25),
        ("Sat 14:05 weekend", 5, 14.08),
        ("Sun 02:40 night", 6, 2.67),
        ("Sun 16:20 weekend", 6, 16.33),
    ];
    all.iter().take(if quick { 3 } else { all.len() }).map(|(l, d, h)| (l.to_string(), *d, *h)).collect()
}

/// Runs the whole measurement (see the module's doc).
pub fn measure(seed: u64, quick: bool) -> anyhow::Result<Figures> {
    let world = World::load(seed)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let days = days(LEARN_WEEKS + 1, &mut rng);
    let (baseline, baselined) = learn(&world, &days, &mut rng)?;
    let mut figures = Figures { detectors: world.detectors.len(), baselined, ..Figures::default() };

    // The normal week.
    let week = START + LEARN_WEEKS * WEEK;
    let mut p = Pipeline::new(&world, baseline.clone());
    let started = Instant::now();
    let mut t = week;
    while t < week + WEEK {
        figures.readings += p.minute(t, &days, &mut rng, false);
        t += MIN;
    }
    figures.replay_s = started.elapsed().as_secs_f64();
    let mut seen = BTreeSet::new();
    for w in &p.public {
        if seen.insert(w.alert.id.clone()) {
            figures.public.push((w.alert.event.clone(), w.alert.area_id.clone()));
        }
    }
    for a in p.changes.iter().filter(|a| a.version == 1 && a.state.is_active()) {
        *figures.operator.entry(a.rule_id.clone()).or_default() += 1;
        let part = part_of_week(&days[&day_index(a.observed_ms)], local_hour(a.observed_ms));
        let sensors = a.sensors.keys().cloned().collect::<Vec<_>>().join("+");
        *figures.operator_where.entry((a.rule_id.clone(), part, sensors)).or_default() += 1;
    }

    // Closures of PH21, each after an hour of normal traffic with the slope above it creeping.
    for (label, day, hour) in closures(quick) {
        let at = week + day * DAY + (hour * HOUR as f64) as i64 - TAIWAN;
        let at = at - at.rem_euclid(MIN);
        let mut p = Pipeline::new(&world, baseline.clone());
        let mut t = at - HOUR;
        let mut first_blocked = None;
        while t < at + 15 * MIN {
            if (t - (at - HOUR)) % (10 * MIN) == 0 {
                // 0.2 °/h: the tilt warning (`tilt-rate` level 1) once it has 30 minutes of history.
                let tilt = 0.1 + 0.2 * ((t - (at - HOUR)) as f64 / HOUR as f64);
                p.read(&world.tilt, t, Metric::TiltDeg, tilt);
            }
            let closed = t >= at;
            if closed && first_blocked.is_none() {
                first_blocked = world
                    .detectors
                    .iter()
                    .filter(|d| UPSTREAM.contains(&d.sensor.id.as_str()) || d.sensor.id == DOWNSTREAM)
                    .map(|d| t + d.offset_ms)
                    .min();
            }
            p.minute(t, &days, &mut rng, closed);
            t += MIN;
        }
        let from = first_blocked.unwrap_or(at);
        let public = p
            .public
            .iter()
            .filter(|w| w.alert.event == "road_blocked" && w.alert.area_id == PH21 && w.alert.state.is_active());
        let first = public.clone().map(|w| w.alert.issued_ms).min().map(|ms| ms - from);
        let named = public
            .filter(|w| w.alert.rule_id == "road-blocked-by-hazard")
            .map(|w| w.alert.issued_ms)
            .min()
            .map(|ms| ms - from);
        figures.delays.push((label, first, named));
    }
    Ok(figures)
}

/// `dc-bench traffic`: the figures as result rows.
pub async fn traffic(cli: &Cli) -> anyhow::Result<Vec<Row>> {
    let quick = cli.quick;
    let f = tokio::task::spawn_blocking(move || measure(28, quick)).await??;
    println!(
        "normal week: {} detectors ({} with a learned baseline), {} readings replayed in {:.2} s ({:.0} readings/s)",
        f.detectors,
        f.baselined,
        f.readings,
        f.replay_s,
        f.readings as f64 / f.replay_s
    );
    println!("public warnings: {:?}", f.public);
    println!("operators' alerts by rule: {:?}", f.operator);
    for ((rule, part, sensors), n) in &f.operator_where {
        println!("  {n:4} × {rule} ({part}) {sensors}");
    }
    for (label, first, named) in &f.delays {
        let s = |d: &Option<i64>| d.map_or("never".to_string(), |ms| format!("{:.0} s", ms as f64 / 1000.0));
        println!("closure {label}: public road warning after {}, naming the landslide after {}", s(first), s(named));
    }
    let delays: Vec<f64> = f.delays.iter().filter_map(|(_, d, _)| d.map(|ms| ms as f64 / 1000.0)).collect();
    let named: Vec<f64> = f.delays.iter().filter_map(|(_, _, d)| d.map(|ms| ms as f64 / 1000.0)).collect();
    let missed = f.delays.iter().filter(|(_, d, n)| d.is_none() || n.is_none()).count();
    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    let operator: usize = f.operator.values().sum();
    Ok(vec![
        Row {
            name: "traffic: false public alerts, normal week".into(),
            figure: f.public.len() as f64,
            unit: "warnings",
            peer: None,
            target: "0".into(),
            met: Some(f.public.is_empty()),
        },
        Row {
            name: "traffic: operators' alerts, normal week".into(),
            figure: operator as f64,
            unit: "alerts",
            peer: None,
            target: "-".into(),
            met: None,
        },
        Row {
            name: "traffic: closure → public warning, max".into(),
            figure: max(&delays),
            unit: "s",
            peer: None,
            target: "≤ 120 s".into(),
            met: Some(missed == 0 && max(&delays) <= 120.0),
        },
        Row {
            name: "traffic: closure → warning names the landslide, max".into(),
            figure: max(&named),
            unit: "s",
            peer: None,
            target: "≤ 120 s".into(),
            met: Some(missed == 0 && max(&named) <= 120.0),
        },
        Row {
            name: "traffic: normal week replay".into(),
            figure: f.readings as f64 / f.replay_s,
            unit: "readings/s",
            peer: None,
            target: "-".into(),
            met: None,
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The goal of issue 28's "Measured": a normal week (rush hours, weekend, nights with empty minutes) raises no
    /// public warning, and a closure beside a warning slope reaches the public, naming the landslide, within two
    /// minutes of its first blocked reading.
    #[test]
    fn a_normal_week_raises_nothing_public_and_closures_are_told_within_two_minutes() {
        let f = measure(28, true).unwrap();
        assert!(f.readings > 100_000, "{} readings", f.readings);
        assert!(f.baselined >= 5, "every detector learned its normal from the store: {}", f.baselined);
        assert!(f.public.is_empty(), "false public alerts: {:?}", f.public);
        assert_eq!(f.delays.len(), 3);
        for (label, first, named) in &f.delays {
            let first = first.unwrap_or_else(|| panic!("{label}: no public warning"));
            let named = named.unwrap_or_else(|| panic!("{label}: the warning never named the landslide"));
            assert!((0..=120_000).contains(&first), "{label}: {first} ms");
            assert!((0..=120_000).contains(&named), "{label}: {named} ms");
        }
    }
}
