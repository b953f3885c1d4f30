//! The demo data in `config/` loads cleanly and holds the places the demo relies on.

use geo_index::{GeoIndex, LoadPolicy, Resolution, TargetingStrategy, ZoneKind};

const ZONES: &str = include_str!("../../config/zones.geojson");
const SITES: &str = include_str!("../../config/cell_sites.csv");

fn demo_index(resolution: Resolution) -> GeoIndex {
    let mut index = GeoIndex::new(resolution);
    let problems = index.load_zones(ZONES, LoadPolicy::StopOnFirst).expect("demo zones load");
    assert!(problems.is_empty());
    index
}

#[test]
fn demo_zones_hold_the_demo_points() {
    let index = demo_index(Resolution::Nine);
    assert!(index.zones().count() >= 12);
    for (id, lat, lon) in [
        ("dfa-xinyi-shenmu", 23.5185, 120.9280),
        ("reach-zhuoshui-mid", 23.8250, 120.6500),
        ("fwy3-nantou", 23.7860, 120.6870),
        ("restricted-mailiao", 23.7900, 120.1900),
    ] {
        let ids: Vec<&str> = index.zones_containing(lat, lon).iter().map(|z| z.id.as_str()).collect();
        assert!(ids.contains(&id), "{id} should contain {lat},{lon}; got {ids:?}");
    }
    let shenmu = index.zone("dfa-xinyi-shenmu").expect("shenmu");
    assert_eq!(shenmu.kind, ZoneKind::DebrisFlow);
    assert_eq!(shenmu.geocode.as_deref(), Some("1000812"));
    assert_eq!(shenmu.thresholds.get("rain_24h_mm"), Some(&250.0));
    // At least 500 m of margin around the demo point: points 500 m away in 8 directions are still inside.
    for k in 0..8 {
        let a = f64::from(k) * std::f64::consts::FRAC_PI_4;
        let (dlat, dlon) = (500.0 * a.cos() / 110_800.0, 500.0 * a.sin() / (111_320.0 * 23.5185f64.to_radians().cos()));
        let inside = index.zones_containing(23.5185 + dlat, 120.9280 + dlon);
        assert!(inside.iter().any(|z| z.id == "dfa-xinyi-shenmu"), "margin broken towards {k}");
    }
}

#[test]
fn demo_sites_cover_every_demo_zone_for_every_carrier() {
    // Resolution 8: loading 2,100 sectors at 9 is slow in debug builds; coverage holds at both.
    let mut index = demo_index(Resolution::Eight);
    let problems = index.load_cell_sites(SITES, LoadPolicy::StopOnFirst).expect("demo sites load");
    assert!(problems.is_empty());
    assert!(index.cell_sites().count() >= 600);
    let ids: Vec<String> = index.zones().map(|z| z.id.clone()).collect();
    for id in &ids {
        let area = index.alert_area_of_zones(&[id]).expect("zone area");
        for mnc in [92, 97, 1] {
            let report = index.geotarget(&area, TargetingStrategy::CellBroadcast { mnc: Some(mnc) }).expect("report");
            if report.covered_share < 1.0 {
                for c in &report.uncovered_cells {
                    let ll = geo_index::LatLng::from(*c);
                    eprintln!(
                        "{id}/{mnc}: uncovered {c} centre {},{} in zone: {}",
                        ll.lat(),
                        ll.lng(),
                        index.zones_containing(ll.lat(), ll.lng()).iter().any(|z| &z.id == id)
                    );
                }
            }
            assert_eq!(report.covered_share, 1.0, "{id} / {mnc}: {:?}", report.uncovered_cells.len());
            assert!(!report.sites.is_empty());
        }
    }
}
