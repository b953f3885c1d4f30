//! Speed targets of issue 5 (figures in `BENCHMARKS.md`):
//! - lat/lng → cell: ≥ 1.5 M/s per core;
//! - a 10 km polygon filled at resolution 9: < 1 ms;
//! - targeting a county-sized area (≈2,000 km²) against 3,000 cell sites: < 5 ms.
//!
//! Run briefly: `CARGO_TARGET_DIR=/work/target-geo cargo bench -p geo-index --bench geo_index`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use geo::{Coord, LineString, MultiPolygon, Polygon};
use geo_index::{GeoIndex, LoadPolicy, Resolution, TargetingStrategy};
use std::time::{Duration, Instant};

const LAT0: f64 = 23.7;
const LON0: f64 = 120.8;
const M_LAT: f64 = 110_800.0;
const M_LON: f64 = 102_000.0;

/// Deterministic pseudo-random numbers in [0, 1) (xorshift), so runs compare.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// An irregular 16-gon of roughly `radius_m` around the reference point.
fn blob(radius_m: f64, rng: &mut Rng) -> MultiPolygon<f64> {
    let ring: Vec<Coord<f64>> = (0..16)
        .map(|i| {
            let a = f64::from(i) / 16.0 * std::f64::consts::TAU;
            let r = radius_m * (0.85 + 0.3 * rng.next());
            Coord { x: LON0 + r * a.cos() / M_LON, y: LAT0 + r * a.sin() / M_LAT }
        })
        .collect();
    MultiPolygon(vec![Polygon::new(LineString(ring), vec![])])
}

fn square(side_m: f64) -> MultiPolygon<f64> {
    let (dx, dy) = (side_m / 2.0 / M_LON, side_m / 2.0 / M_LAT);
    MultiPolygon(vec![Polygon::new(
        LineString(vec![
            Coord { x: LON0 - dx, y: LAT0 - dy },
            Coord { x: LON0 + dx, y: LAT0 - dy },
            Coord { x: LON0 + dx, y: LAT0 + dy },
            Coord { x: LON0 - dx, y: LAT0 + dy },
        ]),
        vec![],
    )])
}

/// 3,000 sectors (1,000 three-sector sites) over a 150 km × 150 km region around the reference point.
fn sites_csv(rng: &mut Rng) -> String {
    let mut csv = String::from("carrier,mcc,mnc,eci,tac,lat,lon,azimuth_deg,beamwidth_deg,range_m\n");
    for site in 0..1000 {
        let (x, y) = ((rng.next() - 0.5) * 150_000.0, (rng.next() - 0.5) * 150_000.0);
        let rot = rng.next() * 120.0;
        let range = 2000.0 + rng.next() * 3000.0;
        let mnc = ["92", "97", "01"][site % 3];
        for cell in 0..3 {
            csv += &format!(
                "C,466,{mnc},{},1,{},{},{},120,{range}\n",
                (site + 1) * 256 + cell + 1,
                LAT0 + y / M_LAT,
                LON0 + x / M_LON,
                (rot + 120.0 * cell as f64) % 360.0
            );
        }
    }
    csv
}

fn benches(c: &mut Criterion) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let index = GeoIndex::new(Resolution::Nine);

    let points: Vec<(f64, f64)> = (0..10_000).map(|_| (21.9 + rng.next() * 3.4, 120.0 + rng.next() * 2.0)).collect();
    let mut g = c.benchmark_group("cell_at");
    g.throughput(Throughput::Elements(points.len() as u64));
    g.bench_function("latlng_to_cell_res9_x10k", |b| {
        b.iter(|| {
            for (lat, lon) in &points {
                black_box(index.cell_at(*lat, *lon).ok());
            }
        })
    });
    g.bench_function("h3o_latlng_to_cell_res9_x10k_reference", |b| {
        b.iter(|| {
            for (lat, lon) in &points {
                black_box(h3o::LatLng::new(*lat, *lon).ok().map(|ll| ll.to_cell(Resolution::Nine)));
            }
        })
    });
    g.finish();

    let ten_km = square(10_000.0);
    c.bench_function("fill_10km_square_res9", |b| b.iter(|| black_box(index.alert_area(ten_km.clone()).ok())));

    let csv = sites_csv(&mut rng);
    let mut with_sites = GeoIndex::new(Resolution::Nine);
    let started = Instant::now();
    let problems = with_sites.load_cell_sites(&csv, LoadPolicy::StopOnFirst).map(|p| p.len());
    eprintln!("loading 3,000 cell sites at res 9: {:?} ({problems:?} problems)", started.elapsed());
    let county = blob(25_300.0, &mut rng); // ≈ π·25.3² ≈ 2,000 km²
    let started = Instant::now();
    let area = with_sites.alert_area(county).expect("valid county");
    eprintln!("tiling the county ({:.0} km², {} cells): {:?}", area.area_km2, area.cells().len(), started.elapsed());
    let report = with_sites.geotarget(&area, TargetingStrategy::CellBroadcast { mnc: None }).expect("report");
    eprintln!(
        "cell broadcast: {} sites, covered {:.4}, reach {:.0} km², overshoot {:.0} km², farthest {:.0} m",
        report.sites.len(),
        report.covered_share,
        report.reach_km2,
        report.overshoot_km2,
        report.farthest_overshoot_m
    );
    let app = with_sites.geotarget(&area, TargetingStrategy::AppH3 { resolution: Resolution::Nine }).expect("app");
    eprintln!(
        "app res 9: {} cells, overshoot {:.1} km², farthest {:.0} m, tighter {:?}",
        app.cells.len(),
        app.overshoot_km2,
        app.farthest_overshoot_m,
        app.tighter
    );
    c.bench_function("sites_for_2000km2_of_3000", |b| {
        b.iter(|| black_box(with_sites.cell_sites_for_area(&area, None).len()))
    });
    c.bench_function("geotarget_cell_broadcast_2000km2_3000_sites", |b| {
        b.iter(|| black_box(with_sites.geotarget(&area, TargetingStrategy::CellBroadcast { mnc: None }).ok()))
    });
    c.bench_function("geotarget_app_h3_res9_2000km2", |b| {
        b.iter(|| {
            black_box(with_sites.geotarget(&area, TargetingStrategy::AppH3 { resolution: Resolution::Nine }).ok())
        })
    });
    let shenmu_like = blob(2_000.0, &mut rng);
    let small = index.alert_area(shenmu_like).expect("valid");
    c.bench_function("cap_polygons_12km2_max_100", |b| b.iter(|| black_box(small.cap_polygons(100))));
}

criterion_group! {
    name = geo;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(geo);
