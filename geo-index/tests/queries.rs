//! Queries on the demo data: outlines, GeoJSON, targeting figures, sensors in zones.

use geo_index::{parse_cap_polygon, GeoIndex, LoadPolicy, Resolution, TargetingStrategy, WEA_MAX_OVERSHOOT_M};

const ZONES: &str = include_str!("../../config/zones.geojson");
const SITES: &str = include_str!("../../config/cell_sites.csv");

#[test]
fn cap_polygons_are_closed_within_budget_and_cover_the_zone() {
    let mut index = GeoIndex::new(Resolution::Nine);
    index.load_zones(ZONES, LoadPolicy::StopOnFirst).expect("loads");
    for zone in index.zones() {
        for budget in [4, 10, 100] {
            let polygons = zone.cap_polygons(budget);
            assert!(!polygons.is_empty(), "{}", zone.id);
            for text in &polygons {
                let pairs: Vec<&str> = text.split(' ').collect();
                assert!(pairs.len() >= 4 && pairs.len() <= budget, "{} at {budget}: {}", zone.id, pairs.len());
                assert_eq!(pairs.first(), pairs.last());
                let poly = parse_cap_polygon(text).expect("parses");
                // "lat,lon": Taiwan's latitudes come first.
                assert!(poly.exterior().0.iter().all(|c| (21.0..27.0).contains(&c.y) && (118.0..123.0).contains(&c.x)));
            }
        }
        let geometry = zone.geojson_geometry();
        assert!(matches!(geometry["type"].as_str(), Some("Polygon" | "MultiPolygon")), "{}", zone.id);
    }
}

#[test]
fn targeting_reports_figures_and_offers_the_tighter_channel() {
    // Resolution 8: loading 2,100 sectors at 9 is slow in debug builds; the logic is the same.
    let mut index = GeoIndex::new(Resolution::Eight);
    index.load_zones(ZONES, LoadPolicy::StopOnFirst).expect("loads");
    index.load_cell_sites(SITES, LoadPolicy::StopOnFirst).expect("loads");
    let area = index.alert_area_of_zones(&["dfa-xinyi-shenmu", "dfa-xinyi-dongpu"]).expect("zones");
    let options = index.geotarget_options(&area).expect("reports");
    let broadcast = &options[0];
    assert_eq!(broadcast.covered_share, 1.0);
    assert!(broadcast.overshoot_km2 > 0.0 && broadcast.farthest_overshoot_m > WEA_MAX_OVERSHOOT_M);
    assert!(!broadcast.meets_wea && broadcast.tighter.is_some());
    assert_eq!(broadcast.sites.len(), index.cell_sites_for_area(&area, None).len());
    let app = options.last().expect("app option");
    assert!(matches!(app.strategy, TargetingStrategy::AppH3 { .. }));
    assert!(app.meets_wea, "finest app option should meet WEA: {} m", app.farthest_overshoot_m);
    assert!(app.overshoot_km2 < broadcast.overshoot_km2);
    let json = serde_json::to_value(broadcast).expect("serialises");
    assert_eq!(json["strategy"]["channel"], "cell_broadcast");
}

#[test]
fn sensors_follow_zones_as_they_move() {
    let mut index = GeoIndex::new(Resolution::Nine);
    index.load_zones(ZONES, LoadPolicy::StopOnFirst).expect("loads");
    index.upsert_sensor("rain-shenmu", 23.5185, 120.9280).expect("valid");
    index.upsert_sensor("truck-7", 23.7860, 120.6870).expect("valid");
    let in_shenmu: Vec<&str> =
        index.sensors_in_zone("dfa-xinyi-shenmu").expect("zone").iter().map(|s| s.id.as_str()).collect();
    assert_eq!(in_shenmu, ["rain-shenmu"]);
    assert!(index.zones_of_sensor("truck-7").expect("known").iter().any(|z| z.id == "fwy3-nantou"));
    index.upsert_sensor("truck-7", 23.7900, 120.1900).expect("valid");
    let zones: Vec<&str> = index.zones_of_sensor("truck-7").expect("known").iter().map(|z| z.id.as_str()).collect();
    assert_eq!(zones, ["restricted-mailiao"]);
    assert!(index.sensors_in_zone("fwy3-nantou").expect("zone").is_empty());
    assert!(index.remove_zone("restricted-mailiao").is_some());
    assert!(index.zones_of_sensor("truck-7").expect("known").is_empty());
}
