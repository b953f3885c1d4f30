//! Outward outlines for device-based geofencing: never smaller than the area, within the encoding's budget, with an
//! honest worst displacement; and the geofenced overshoot beside the cell-level one.
//!
//! The budget rule is written here from the encoding (ATIS-0700041 as Android reads it: a polygon of n vertices takes
//! 2 + ⌈44 n / 8⌉ octets, at most 185 vertices, all TLVs within 1,024 octets with 3 for the wait time), not taken
//! from `encoders`: geo-index depends on nothing of ours.

use geo::{Contains, Coord, Distance, Euclidean, Intersects, LineString, MultiPolygon, Point, Polygon};
use geo_index::{GeoIndex, LoadPolicy, OutlineBudget, Resolution, TargetingStrategy};
use proptest::prelude::*;

const ZONES: &str = include_str!("../../config/zones.geojson");
const SITES: &str = include_str!("../../config/cell_sites.csv");

fn fits(counts: &[usize]) -> bool {
    !counts.is_empty()
        && counts.iter().all(|&n| (3..=185).contains(&n))
        && counts.iter().map(|&n| 2 + (44 * n).div_ceil(8)).sum::<usize>() + 3 <= 1024
}

fn budget() -> OutlineBudget<'static> {
    OutlineBudget { clearance_m: 5.5, fits: &fits }
}

fn demo() -> GeoIndex {
    let mut index = GeoIndex::new(Resolution::Nine);
    assert!(index.load_zones(ZONES, LoadPolicy::StopOnFirst).unwrap().is_empty());
    assert!(index.load_cell_sites(SITES, LoadPolicy::StopOnFirst).unwrap().is_empty());
    index
}

/// Metres per degree around a latitude (equirectangular; the checks below allow far more than its error).
fn metres(lat: f64) -> (f64, f64) {
    (111_320.0 * lat.to_radians().cos(), 110_574.0)
}

/// Distance in metres from a lon/lat point to a lon/lat multipolygon (0 inside).
fn distance_m(area: &MultiPolygon<f64>, c: Coord<f64>) -> f64 {
    if area.contains(&Point(c)) {
        return 0.0;
    }
    let (kx, ky) = metres(c.y);
    let local = |q: Coord<f64>| Coord { x: (q.x - c.x) * kx, y: (q.y - c.y) * ky };
    area.0
        .iter()
        .flat_map(|p| std::iter::once(p.exterior()).chain(p.interiors()))
        .flat_map(|r| r.lines())
        .map(|l| Euclidean.distance(&geo::Line::new(local(l.start), local(l.end)), &Point(Coord { x: 0.0, y: 0.0 })))
        .fold(f64::INFINITY, f64::min)
}

fn check_outline(area_geometry: &MultiPolygon<f64>, outline: &geo_index::GeofenceOutline) {
    let counts: Vec<usize> = outline.vertex_rings().iter().map(Vec::len).collect();
    assert!(fits(&counts), "outline of {counts:?} vertices does not fit");
    // Never smaller: every vertex of the area, and the area itself, is inside the outline.
    for p in &area_geometry.0 {
        for c in &p.exterior().0 {
            assert!(outline.polygons.contains(&Point(*c)), "area vertex {c:?} outside the outline");
        }
    }
    assert!(outline.polygons.contains(area_geometry), "the outline does not hold the area");
    // Honest displacement: no outline vertex is farther from the area than recorded (1 m for projections).
    for ring in outline.vertex_rings() {
        for (lat, lon) in ring {
            let d = distance_m(area_geometry, Coord { x: lon, y: lat });
            assert!(
                d <= outline.worst_displacement_m * 1.01 + 1.0,
                "vertex {d} m away, recorded {}",
                outline.worst_displacement_m
            );
            assert!(d >= 5.5 * 0.99, "vertex only {d} m from the area: rounding could cut into it");
        }
    }
}

#[test]
fn every_demo_zone_gets_an_outline_that_holds_it_and_fits() {
    let index = demo();
    for zone in index.zones() {
        let area = index.alert_area_of_zones(&[zone.id.as_str()]).unwrap();
        let outline = area.outward_outline(&budget()).unwrap();
        check_outline(&area.geometry, &outline);
        assert!(outline.worst_displacement_m < 500.0, "{}: {} m", zone.id, outline.worst_displacement_m);
    }
}

#[test]
fn geofencing_leaves_a_sliver_of_the_cell_level_overshoot() {
    let index = demo();
    let area = index.alert_area_of_zones(&["dfa-xinyi-shenmu"]).unwrap();
    let outline = area.outward_outline(&budget()).unwrap();
    for mnc in [92u16, 97, 1] {
        let cells = index.geotarget(&area, TargetingStrategy::CellBroadcast { mnc: Some(mnc) }).unwrap();
        let fenced = index.geofenced_overshoot(&area, Some(mnc), &outline.polygons, cells.covered_share);
        assert!(cells.overshoot_km2 > 50.0, "the cell level overshoots by kilometres");
        assert!(fenced.overshoot_km2 < cells.overshoot_km2 / 100.0, "{mnc}: {fenced:?} vs {}", cells.overshoot_km2);
        assert!(fenced.farthest_overshoot_m <= outline.worst_displacement_m * 1.01 + 1.0);
        assert!(fenced.farthest_overshoot_m > 0.0, "outward margins do admit something outside");
        assert_eq!(fenced.meets_wea, cells.covered_share >= 1.0 && fenced.farthest_overshoot_m <= 160.9344);
    }
    // Admitting nothing beyond the area leaves no overshoot.
    let none = index.geofenced_overshoot(&area, Some(92), &area.geometry, 1.0);
    assert!(none.overshoot_km2 < 1e-6 && none.farthest_overshoot_m < 1.0, "{none:?}");
}

#[test]
fn an_impossible_budget_is_an_error_not_a_smaller_area() {
    let index = demo();
    let area = index.alert_area_of_zones(&["township-xinyi"]).unwrap();
    let never = |_: &[usize]| false;
    let err = area.outward_outline(&OutlineBudget { clearance_m: 5.5, fits: &never }).unwrap_err();
    assert!(err.to_string().contains("no outward outline"), "{err}");
}

/// A star-shaped (so simple) polygon with `n` vertices at random radii around a point in Taiwan.
fn star() -> impl Strategy<Value = Polygon<f64>> {
    (22.0..25.0f64, 120.0..122.0f64, 3usize..800, 0.002..0.3f64).prop_flat_map(|(lat, lon, n, r)| {
        prop::collection::vec(0.2..1.0f64, n).prop_map(move |radii| {
            let mut ring: Vec<Coord<f64>> = radii
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let a = i as f64 / radii.len() as f64 * std::f64::consts::TAU;
                    Coord { x: lon + r * k * a.cos(), y: lat + r * k * a.sin() }
                })
                .collect();
            ring.push(ring[0]);
            Polygon::new(LineString(ring), vec![])
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Random areas of up to 800 vertices, one or two parts: the outline always fits, holds the area and keeps
    /// its clearance, and its recorded displacement bounds every vertex.
    #[test]
    fn random_areas_get_outward_outlines(a in star(), b in prop::option::of(star())) {
        let index = GeoIndex::new(Resolution::Seven);
        let mut parts = vec![a];
        if let Some(b) = b {
            // Only disjoint second parts: an alert area is a valid multipolygon.
            if !parts[0].intersects(&b) {
                parts.push(b);
            }
        }
        let Ok(area) = index.alert_area(MultiPolygon(parts)) else { return Ok(()) };
        let outline = area.outward_outline(&budget()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_outline(&area.geometry, &outline);
    }
}
