//! Property tests against brute force (issue 5): every sensor inside a random polygon is found and none outside;
//! every random point of an alert area is covered by a targeted cell site; outlines contain all their cells.
//! Plus the point → zones, k-ring and neighbour queries against their brute-force definitions.

use geo::{Coord, Intersects, LineString, MultiPolygon, Point, Polygon};
use geo_index::{
    multipolygon_to_geojson, parse_cap_polygon, GeoIndex, LatLng, LoadPolicy, Resolution, TargetingStrategy,
};
use proptest::prelude::*;

const LAT0: f64 = 23.5;
const LON0: f64 = 120.9;
const M_LAT: f64 = 110_800.0;
const M_LON: f64 = 102_000.0; // at 23.5°N

/// A random simple (star-shaped) polygon: radii around a centre at increasing angles.
fn star_polygon() -> impl Strategy<Value = Polygon<f64>> {
    (-3000.0..3000.0f64, -3000.0..3000.0f64, prop::collection::vec(300.0..6000.0f64, 3..14), 0.0..1.0f64).prop_map(
        |(cx, cy, radii, phase)| {
            let n = radii.len() as f64;
            let ring: Vec<Coord<f64>> = radii
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let a = (i as f64 + phase) / n * std::f64::consts::TAU;
                    Coord { x: LON0 + (cx + r * a.cos()) / M_LON, y: LAT0 + (cy + r * a.sin()) / M_LAT }
                })
                .collect();
            Polygon::new(LineString(ring), vec![])
        },
    )
}

/// Random points in a 20 km box around the polygons' area.
fn points(n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<(f64, f64)>> {
    prop::collection::vec((-10_000.0..10_000.0f64, -10_000.0..10_000.0f64), n)
        .prop_map(|v| v.into_iter().map(|(x, y)| (LAT0 + y / M_LAT, LON0 + x / M_LON)).collect())
}

fn zones_doc(polygons: &[Polygon<f64>]) -> String {
    let features: Vec<serde_json::Value> = polygons
        .iter()
        .enumerate()
        .map(|(i, p)| {
            serde_json::json!({
                "type": "Feature",
                "properties": {"id": format!("z{i}"), "kind": "restricted"},
                "geometry": multipolygon_to_geojson(&MultiPolygon(vec![p.clone()])),
            })
        })
        .collect();
    serde_json::json!({"type": "FeatureCollection", "features": features}).to_string()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sensors_in_polygon_and_zone_match_brute_force(polygon in star_polygon(), pts in points(64..300)) {
        let mut index = GeoIndex::new(Resolution::Nine);
        for (i, (lat, lon)) in pts.iter().enumerate() {
            index.upsert_sensor(&format!("s{i:03}"), *lat, *lon).expect("valid point");
        }
        let mut expected: Vec<String> = pts.iter().enumerate()
            .filter(|(_, (lat, lon))| polygon.intersects(&Point::new(*lon, *lat)))
            .map(|(i, _)| format!("s{i:03}"))
            .collect();
        expected.sort();
        let area = MultiPolygon(vec![polygon.clone()]);
        let found: Vec<String> = index.sensors_in_polygon(&area).expect("valid polygon")
            .into_iter().map(|s| s.id.clone()).collect();
        prop_assert_eq!(&found, &expected);

        let problems = index.load_zones(&zones_doc(std::slice::from_ref(&polygon)), LoadPolicy::StopOnFirst).expect("loads");
        prop_assert!(problems.is_empty());
        let in_zone: Vec<String> = index.sensors_in_zone("z0").expect("zone").into_iter().map(|s| s.id.clone()).collect();
        prop_assert_eq!(&in_zone, &expected);
        for (lat, lon) in &pts {
            let brute = polygon.intersects(&Point::new(*lon, *lat));
            prop_assert_eq!(index.zones_containing(*lat, *lon).len() == 1, brute);
        }
    }

    #[test]
    fn moved_sensors_are_found_only_where_they_are(pts in points(2..40), moves in points(2..40)) {
        let mut index = GeoIndex::new(Resolution::Nine);
        for (i, (lat, lon)) in pts.iter().enumerate() {
            index.upsert_sensor(&format!("s{i}"), *lat, *lon).expect("valid");
        }
        for (i, (lat, lon)) in moves.iter().enumerate() {
            index.upsert_sensor(&format!("s{}", i % pts.len()), *lat, *lon).expect("valid");
        }
        for s in index.sensors() {
            let here = index.sensors_in_k_ring(s.lat, s.lon, 0).expect("valid");
            prop_assert!(here.iter().any(|t| t.id == s.id));
        }
        let total: usize = index.sensors().map(|s| index.sensors_in_k_ring(s.lat, s.lon, 0).map_or(0, |v| v.len())).sum();
        // Every sensor is filed exactly once: summing per-sensor cell populations counts each cell's n sensors n times.
        let mut cells: std::collections::HashMap<_, usize> = Default::default();
        for s in index.sensors() { *cells.entry(s.cell).or_default() += 1; }
        prop_assert_eq!(total, cells.values().map(|n| n * n).sum::<usize>());
    }

    #[test]
    fn k_ring_and_neighbours_match_brute_force(pts in points(5..120), k in 0u32..6, radius in 0.0..3000.0f64) {
        let mut index = GeoIndex::new(Resolution::Nine);
        for (i, (lat, lon)) in pts.iter().enumerate() {
            index.upsert_sensor(&format!("s{i:03}"), *lat, *lon).expect("valid");
        }
        let (lat, lon) = pts[0];
        let origin = index.cell_at(lat, lon).expect("valid");
        let mut expected: Vec<String> = index.sensors()
            .filter(|s| s.cell.grid_distance(origin).is_ok_and(|d| d <= k as i32))
            .map(|s| s.id.clone()).collect();
        expected.sort();
        let found: Vec<String> = index.sensors_in_k_ring(lat, lon, k).expect("valid").into_iter().map(|s| s.id.clone()).collect();
        prop_assert_eq!(found, expected);

        let me = index.sensor("s000").expect("exists").clone();
        let mut brute: Vec<String> = index.sensors()
            .filter(|s| s.id != me.id && haversine(me.lat, me.lon, s.lat, s.lon) <= radius)
            .map(|s| s.id.clone()).collect();
        brute.sort();
        let mut near: Vec<String> = index.sensor_neighbours("s000", radius).expect("known")
            .into_iter().map(|(s, _)| s.id.clone()).collect();
        near.sort();
        prop_assert_eq!(near, brute);
    }

    #[test]
    fn every_point_of_an_alert_area_is_covered_by_a_targeted_site(
        polygon in star_polygon(),
        sites in prop::collection::vec((-12_000.0..12_000.0f64, -12_000.0..12_000.0f64, 0.0..360.0f64,
                                        prop_oneof![Just(120.0), Just(65.0), Just(360.0)], 800.0..4000.0f64), 10..60),
        pts in points(50..200),
    ) {
        let mut csv = String::from("carrier,mcc,mnc,eci,tac,lat,lon,azimuth_deg,beamwidth_deg,range_m\n");
        for (i, (x, y, az, bw, r)) in sites.iter().enumerate() {
            csv += &format!("T,466,92,{},1,{},{},{az},{bw},{r}\n", 1000 + i, LAT0 + y / M_LAT, LON0 + x / M_LON);
        }
        // Resolution 8 keeps this test quick in debug builds; the logic is the same at every resolution.
        let mut index = GeoIndex::new(Resolution::Eight);
        let problems = index.load_cell_sites(&csv, LoadPolicy::StopOnFirst).expect("sites load");
        prop_assert!(problems.is_empty());
        let area = index.alert_area(MultiPolygon(vec![polygon.clone()])).expect("valid area");
        let targeted: Vec<_> = index.cell_sites_for_area(&area, None);
        // Exactly the sites whose footprint meets the area.
        let brute: Vec<_> = index.cell_sites().filter(|s| s.footprint.intersects(&area.geometry)).map(|s| s.ecgi).collect();
        prop_assert_eq!(targeted.iter().map(|s| s.ecgi).collect::<Vec<_>>(), brute);
        for (lat, lon) in pts.iter().filter(|(lat, lon)| polygon.intersects(&Point::new(*lon, *lat))) {
            let p = Point::new(*lon, *lat);
            let reachable = index.cell_sites().any(|s| s.footprint.intersects(&p));
            let reached = targeted.iter().any(|s| s.footprint.intersects(&p));
            prop_assert_eq!(reached, reachable, "point {},{}", lat, lon);
        }
        let report = index.geotarget(&area, TargetingStrategy::CellBroadcast { mnc: None }).expect("report");
        prop_assert!(report.covered_share >= 0.0 && report.covered_share <= 1.0);
        prop_assert_eq!(report.sites.len(), targeted.len());
        prop_assert!(report.overshoot_km2 >= 0.0 && report.farthest_overshoot_m >= 0.0);
    }

    #[test]
    fn outlines_contain_all_their_cells(polygon in star_polygon(), max_vertices in 4usize..60) {
        let index = GeoIndex::new(Resolution::Nine);
        let area = index.alert_area(MultiPolygon(vec![polygon])).expect("valid area");
        let outlines = area.cap_polygons(max_vertices);
        prop_assert!(!outlines.is_empty());
        let polygons: Vec<Polygon<f64>> = outlines.iter().map(|s| {
            let pairs = s.split_whitespace().count();
            assert!(pairs >= 4 && pairs <= max_vertices, "{pairs} pairs for a budget of {max_vertices}");
            parse_cap_polygon(s).expect("closed, parseable")
        }).collect();
        let outline = MultiPolygon(polygons);
        for cell in area.cells().cells() {
            for v in cell.boundary().iter() {
                prop_assert!(outline.intersects(&Point::new(v.lng(), v.lat())), "cell {} vertex {:?} outside", cell, v);
            }
            let c = LatLng::from(cell);
            prop_assert!(outline.intersects(&Point::new(c.lng(), c.lat())));
        }
    }
}

fn haversine(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let a = ((p2 - p1) / 2.0).sin().powi(2) + p1.cos() * p2.cos() * ((lon2 - lon1).to_radians() / 2.0).sin().powi(2);
    2.0 * 6_371_008.8 * a.sqrt().min(1.0).asin()
}
