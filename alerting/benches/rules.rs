//! Rule evaluation throughput: 10 000 sensors, 55 rules (the 19 of `config/rules.toml`, traffic rules included, and
//! 36 regional variants), one core. One sensor in twenty is a vehicle detector on a road segment (its reading sets
//! take turns: speed, flow, occupancy), five to a segment (a detector every kilometre or so of a 5 km segment, as on
//! Taiwan's freeways; PH21 at Shenmu has three), every fifth road standing still in a storm, so the traffic
//! classification, the segment correlations and the cause-and-effect composite run too. `RULES_BENCH_SPREAD=clustered`
//! puts the 500 detectors on five segments instead (100 each, the bench's layout before 2026-12-06): a segment's
//! neighbour walks and correlations then cost twenty times what a real road's do. Each iteration evaluates the next batch of a 10-minute reporting cycle in event-time order (every
//! sensor once per cycle, rain with showers and bursts, rivers rising and falling, slopes creeping), so the windows,
//! rates and levels do real work and some readings change levels. Geo lookups are not included (the caller does
//! them; geo-index has its own bench). Prints state bytes per sensor.
//!
//! Criterion's figure is per-thread CPU time (`CLOCK_THREAD_CPUTIME_ID`): on a shared machine wall time also counts the
//! turns of other processes. The wall-clock rate is printed next to it.
//!
//! `cargo bench -p alerting --bench rules` (add `-- --warm-up-time 1 --measurement-time 5` for a quick run).

use std::cell::Cell;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use alerting::rules::RuleSet;
use alerting::{RuleEngine, ZoneRef};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use geo_index::{GeoIndex, LoadPolicy, Resolution, ZoneKind};
use ingest::{Metric, Reading, Sensor, SensorKind};

const SENSORS: usize = 10_000;
const DEBRIS_ZONES: usize = 200;
const REACHES: usize = 100;
const ROADS: usize = 100;
const TOWNSHIPS: usize = 50;
const T0: i64 = 1_764_086_400_000;
const STEP: i64 = 600_000;

fn zone_id(kind: ZoneKind, i: usize) -> String {
    match kind {
        ZoneKind::DebrisFlow => format!("dfa-{i:04}"),
        ZoneKind::RiverReach => format!("reach-{i:04}"),
        ZoneKind::RoadSegment => format!("road-{i:04}"),
        ZoneKind::Township => format!("town-{i:04}"),
        ZoneKind::Restricted => format!("restricted-{i:04}"),
    }
}

/// Small square zones on a grid, with debris-flow thresholds, loaded through the real geo index.
fn zones() -> GeoIndex {
    let mut features = Vec::new();
    let mut n = 0;
    for (kind, count, name) in [
        (ZoneKind::DebrisFlow, DEBRIS_ZONES, "debris_flow"),
        (ZoneKind::RiverReach, REACHES, "river_reach"),
        (ZoneKind::RoadSegment, ROADS, "road_segment"),
        (ZoneKind::Township, TOWNSHIPS, "township"),
    ] {
        for i in 0..count {
            let (lat, lon) = (22.0 + (n / 30) as f64 * 0.05, 120.0 + (n % 30) as f64 * 0.05);
            n += 1;
            let ring = format!(
                "[[{lon},{lat}],[{},{lat}],[{},{}],[{lon},{}],[{lon},{lat}]]",
                lon + 0.01,
                lon + 0.01,
                lat + 0.01,
                lat + 0.01
            );
            let thresholds = if kind == ZoneKind::DebrisFlow {
                format!(r#","thresholds":{{"rain_24h_mm":{},"rain_1h_mm":60}}"#, 250 + (i % 5) * 50)
            } else {
                String::new()
            };
            features.push(format!(
                r#"{{"type":"Feature","properties":{{"id":"{}","kind":"{name}"{thresholds}}},"geometry":{{"type":"Polygon","coordinates":[{ring}]}}}}"#,
                zone_id(kind, i)
            ));
        }
    }
    let mut geo = GeoIndex::new(Resolution::try_from(7u8).expect("resolution"));
    geo.load_zones(
        &format!(r#"{{"type":"FeatureCollection","features":[{}]}}"#, features.join(",")),
        LoadPolicy::StopOnFirst,
    )
    .expect("zones");
    geo
}

/// The default rules plus 36 regional variants: 13 county rain rules, 8 river stations' own marks, 5 tilt-rate and
/// 5 road-flood variants, 5 regional debris-flow composites.
fn rules() -> RuleSet {
    let mut text = include_str!("../../config/rules.toml").to_string();
    let ids = |kind: ZoneKind, k: usize, of: usize, total: usize| -> String {
        (0..total).filter(|i| i % of == k).map(|i| format!("\"{}\"", zone_id(kind, i))).collect::<Vec<_>>().join(",")
    };
    for k in 0..13 {
        let _ = write!(
            text,
            "\n[[rule]]\nid = \"rain-county-{k}\"\nkind = \"accumulation\"\nevent = \"heavy_rain\"\nmetric = \"rain_mm\"\n\
             scope = {{ zone_ids = [{}] }}\n\
             [[rule.levels]]\nname = \"大雨\"\nname_en = \"Heavy rain\"\nseverity = \"Moderate\"\nany = [{{ window = \"24h\", at_least = {} }}, {{ window = \"1h\", at_least = {} }}]\n\
             [[rule.levels]]\nname = \"豪雨\"\nname_en = \"Extremely heavy rain\"\nseverity = \"Severe\"\nany = [{{ window = \"24h\", at_least = {} }}, {{ window = \"3h\", at_least = {} }}]\n",
            ids(ZoneKind::DebrisFlow, k, 13, DEBRIS_ZONES),
            70 + k * 2,
            35 + k,
            180 + k * 5,
            90 + k * 2
        );
    }
    for k in 0..8 {
        let _ = write!(
            text,
            "\n[[rule]]\nid = \"river-station-{k}\"\nkind = \"threshold\"\nevent = \"river_level\"\nmetric = \"water_level_m\"\n\
             scope = {{ zone_ids = [{}] }}\nmin_duration = \"10m\"\nclear_delta = 0.2\n\
             [[rule.levels]]\nname = \"三級\"\nname_en = \"Level 3\"\nseverity = \"Moderate\"\nany = [{{ at_least = {} }}]\n\
             [[rule.levels]]\nname = \"二級\"\nname_en = \"Level 2\"\nseverity = \"Severe\"\nany = [{{ at_least = {} }}]\n",
            ids(ZoneKind::RiverReach, k, 8, REACHES),
            4.5 + k as f64 * 0.1,
            5.5 + k as f64 * 0.1
        );
    }
    for k in 0..5 {
        let _ = write!(
            text,
            "\n[[rule]]\nid = \"tilt-{k}\"\nkind = \"rate\"\nevent = \"landslide\"\nmetric = \"tilt_deg\"\npublish = \"operators\"\n\
             scope = {{ zone_ids = [{}] }}\nwindow = \"1h\"\n\
             [[rule.levels]]\nname = \"注意\"\nname_en = \"Precaution\"\nseverity = \"Moderate\"\nany = [{{ at_least = 0.01 }}]\n\
             [[rule.levels]]\nname = \"警戒\"\nname_en = \"Warning\"\nseverity = \"Severe\"\nany = [{{ at_least = 0.1 }}]\n",
            ids(ZoneKind::DebrisFlow, k, 5, DEBRIS_ZONES)
        );
        let _ = write!(
            text,
            "\n[[rule]]\nid = \"flood-{k}\"\nkind = \"threshold\"\nevent = \"road_flood\"\nmetric = \"flood_depth_cm\"\n\
             scope = {{ zone_ids = [{}] }}\n\
             [[rule.levels]]\nname = \"積水\"\nname_en = \"Flooding\"\nseverity = \"Moderate\"\nany = [{{ at_least = {} }}]\n",
            ids(ZoneKind::RoadSegment, k, 5, ROADS),
            10 + k * 2
        );
        let _ = write!(
            text,
            "\n[[rule]]\nid = \"debris-region-{k}\"\nkind = \"composite\"\nevent = \"debris_flow\"\n\
             scope = {{ zone_kinds = [\"debris_flow\"] }}\n\
             [[rule.levels]]\nname = \"黃色\"\nname_en = \"Yellow\"\nseverity = \"Severe\"\nany = [{{ rule = \"rain-county-{k}\", level = 1 }}]\n\
             [[rule.levels]]\nname = \"紅色\"\nname_en = \"Red\"\nseverity = \"Extreme\"\nall = [{{ rule = \"rain-county-{k}\", level = 1 }}]\nany = [{{ rule = \"tilt-{k}\" }}]\n"
        );
    }
    let set = RuleSet::from_toml(&text, Path::new("bench-rules.toml")).expect("bench rules are valid");
    assert_eq!(set.rules.len(), 55);
    set
}

/// CPU time consumed by this thread.
#[allow(unsafe_code)] // libc has no safe wrapper for the per-thread CPU clock.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the pointer we own; CLOCK_THREAD_CPUTIME_ID is always valid.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

struct Fleet {
    sensors: Vec<Sensor>,
    zones: Vec<Vec<(String, ZoneKind)>>,
    readings: Vec<Reading>,
}

fn fleet() -> Fleet {
    let clustered = std::env::var("RULES_BENCH_SPREAD").is_ok_and(|v| v == "clustered");
    eprintln!("detectors: {}", if clustered { "clustered, 100 per road segment" } else { "5 per road segment" });
    // Road-side sensors (detectors, flood gauges): spread over every segment, or all on five.
    let road = |i: usize| if clustered { i % ROADS } else { (i / 20) % ROADS };
    let mut sensors = Vec::with_capacity(SENSORS);
    let mut zones = Vec::with_capacity(SENSORS);
    let mut readings = Vec::with_capacity(SENSORS);
    for i in 0..SENSORS {
        let (kind, metric, zone) = match i % 20 {
            0..=7 => (SensorKind::RainGauge, Metric::RainMm, (ZoneKind::DebrisFlow, i % DEBRIS_ZONES)),
            8..=11 => (SensorKind::RiverGauge, Metric::WaterLevelM, (ZoneKind::RiverReach, i % REACHES)),
            12..=14 => (SensorKind::TiltMeter, Metric::TiltDeg, (ZoneKind::DebrisFlow, i % DEBRIS_ZONES)),
            15..=16 => (SensorKind::Extensometer, Metric::DisplacementMm, (ZoneKind::DebrisFlow, i % DEBRIS_ZONES)),
            17 => (SensorKind::WireSensor, Metric::WireIntact, (ZoneKind::DebrisFlow, i % DEBRIS_ZONES)),
            18 => (SensorKind::RoadFlood, Metric::FloodDepthCm, (ZoneKind::RoadSegment, road(i))),
            _ => (SensorKind::VehicleDetector, Metric::SpeedKmh, (ZoneKind::RoadSegment, road(i))),
        };
        let id = format!("S{i:05}");
        sensors.push(Sensor {
            id: id.clone(),
            kind,
            lat: 23.0,
            lon: 121.0,
            interval_s: 600,
            agency: "bench".into(),
            metrics: vec![metric],
            zone: None,
            mobile: false,
            retired: false,
        });
        zones.push(vec![
            (zone_id(zone.0, zone.1), zone.0),
            (zone_id(ZoneKind::Township, i % TOWNSHIPS), ZoneKind::Township),
        ]);
        readings.push(Reading { sensor_id: id, ts_ms: T0, metric, value: 0.0, position: None });
    }
    Fleet { sensors, zones, readings }
}

/// A deterministic value for sensor `i` at cycle `c`: showers and bursts of rain, rivers rising and falling, slopes
/// creeping (a few fast), wires breaking now and then.
fn value(i: usize, c: i64, metric: Metric) -> f64 {
    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (c as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    let noise = (h >> 40) as f64 / (1u64 << 24) as f64;
    let storm = ((c + i as i64 % 97) % 288) < 60;
    match metric {
        Metric::RainMm => {
            if storm {
                4.0 + 8.0 * noise
            } else if noise < 0.2 {
                noise * 2.0
            } else {
                0.0
            }
        }
        Metric::WaterLevelM => {
            3.0 + 3.0 * (((c + i as i64) % 400) as f64 / 400.0 * std::f64::consts::TAU).sin().abs() + 0.02 * noise
        }
        Metric::TiltDeg => 0.1 + c as f64 * if i.is_multiple_of(50) { 0.02 } else { 0.0005 } + 0.0005 * noise,
        Metric::DisplacementMm => c as f64 * if i.is_multiple_of(40) { 2.0 } else { 0.01 },
        // Vehicle detectors: free flow with noise; in a storm one road in five stands still (loops occupied): every
        // detector of the road when spread, one in five of each road's when clustered.
        Metric::SpeedKmh | Metric::FlowVehH | Metric::OccupancyPct => {
            let stopped = storm && (i / 20).is_multiple_of(5);
            match (metric, stopped) {
                (Metric::SpeedKmh, false) => 55.0 + 20.0 * noise,
                (Metric::FlowVehH, false) => 500.0 + 400.0 * noise,
                (_, false) => 8.0 + 10.0 * noise,
                (Metric::OccupancyPct, true) => 95.0 + 5.0 * noise,
                (_, true) => 0.0,
            }
        }
        Metric::WireIntact => {
            if noise < 0.001 {
                0.0
            } else {
                1.0
            }
        }
        _ => {
            if storm {
                30.0 * noise
            } else {
                0.0
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let geo = zones();
    let fleet = fleet();
    let rules = rules();
    let mut engine = RuleEngine::new(rules, 3_600_000);
    let warnings = engine.set_zones(geo.zones());
    assert!(warnings.is_empty(), "{warnings:?}");
    // The zone ids the geo index holds, as the hot path passes them (`ZoneRef { id: &z.id, .. }` of
    // `zones_containing`): a few hundred strings every reading shares, not a private copy per sensor.
    let zone_refs: Vec<Vec<ZoneRef<'_>>> = fleet
        .zones
        .iter()
        .map(|z| {
            z.iter()
                .map(|(id, kind)| ZoneRef { id: &geo.zone(id).expect("the bench's zones are loaded").id, kind: *kind })
                .collect()
        })
        .collect();
    let mut readings = fleet.readings.clone();
    let mut out = Vec::new();
    // Position in the stream: (cycle, sensor).
    let mut cycle: i64 = 0;
    let mut next = 0usize;
    let findings = Cell::new(0usize);
    let wall = Cell::new(Duration::ZERO);
    let mut run = |n: u64, engine: &mut RuleEngine, out: &mut Vec<_>| -> Duration {
        let (start, cpu) = (Instant::now(), thread_cpu());
        for _ in 0..n {
            let r = &mut readings[next];
            r.ts_ms = T0 + cycle * STEP + (next as i64 % 600) * 1000;
            if fleet.sensors[next].kind == SensorKind::VehicleDetector {
                // One metric of the detector's reading set per cycle, in turn.
                r.metric = [Metric::SpeedKmh, Metric::FlowVehH, Metric::OccupancyPct][cycle as usize % 3];
            }
            r.value = value(next, cycle, r.metric);
            engine.evaluate(r, &fleet.sensors[next], &zone_refs[next], out);
            // Findings go to the alert book in the server; here they are only counted.
            findings.set(findings.get() + out.len());
            out.clear();
            next += 1;
            if next == SENSORS {
                next = 0;
                cycle += 1;
            }
        }
        wall.set(wall.get() + start.elapsed());
        thread_cpu() - cpu
    };
    // A day of history first, so the windows are full and levels settled.
    run(144 * SENSORS as u64, &mut engine, &mut out);
    let (evaluated_before, wall_before) = (engine.counters.evaluated, wall.get());

    let mut group = c.benchmark_group("rule_engine");
    group.throughput(Throughput::Elements(SENSORS as u64));
    group.sample_size(20);
    group.bench_function("evaluate_10k_sensors_50_rules", |b| {
        b.iter_custom(|iters| run(iters * SENSORS as u64, &mut engine, &mut out))
    });
    group.finish();

    let n = engine.counters.evaluated - evaluated_before;
    let spent = wall.get() - wall_before;
    eprintln!("wall clock: {n} readings in {spent:?} = {:.0} readings/s", n as f64 / spent.as_secs_f64());
    let bytes = engine.state_bytes();
    eprintln!(
        "rule engine state: {} sensors, max {} B/sensor, mean {:.0} B/sensor; {} active areas; {} findings; counters {:?}",
        bytes.sensors, bytes.max_per_sensor, bytes.mean_per_sensor, bytes.areas, findings.get(), engine.counters
    );
    let start = Instant::now();
    let snapshot = engine.snapshot();
    let taken = start.elapsed();
    let start = Instant::now();
    let json = serde_json::to_vec(&snapshot).expect("snapshot serialises");
    eprintln!(
        "engine snapshot: taken in {taken:?} (on the rules thread); {} bytes of JSON in {:?} (any thread)",
        json.len(),
        start.elapsed()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
