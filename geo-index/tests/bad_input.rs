//! Bad input gives errors that name the zone or site and the reason; loading continues or stops as asked.

use geo::{LineString, MultiPolygon, Polygon};
use geo_index::{GeoError, GeoIndex, LoadPolicy, Resolution, SiteProblem, ZoneProblem};
use serde_json::json;

fn feature(id: &str, kind: &str, geometry: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    let mut props = json!({"id": id, "kind": kind});
    if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    json!({"type": "Feature", "properties": props, "geometry": geometry})
}

fn square(lon: f64, lat: f64) -> serde_json::Value {
    json!({"type": "Polygon", "coordinates": [[[lon, lat], [lon + 0.01, lat], [lon + 0.01, lat + 0.01], [lon, lat + 0.01], [lon, lat]]]})
}

fn collection(features: Vec<serde_json::Value>) -> String {
    json!({"type": "FeatureCollection", "features": features}).to_string()
}

fn bad_zones() -> String {
    collection(vec![
        feature("good", "township", square(120.9, 23.5), json!({"geocode": "1000812"})),
        feature(
            "bowtie",
            "restricted",
            json!({"type": "Polygon", "coordinates": [[[120.0, 23.0], [120.1, 23.1], [120.1, 23.0], [120.0, 23.1], [120.0, 23.0]]]}),
            json!({}),
        ),
        feature("empty", "restricted", json!({"type": "Polygon", "coordinates": []}), json!({})),
        feature("far", "restricted", square(200.0, 23.5), json!({})),
        feature("unknown-geocode", "township", square(120.9, 23.5), json!({"geocode": "99999"})),
        feature("malformed-geocode", "township", square(120.9, 23.5), json!({"geocode": "10008x"})),
        feature(
            "road-without-width",
            "road_segment",
            json!({"type": "LineString", "coordinates": [[120.6, 23.7], [120.7, 23.8]]}),
            json!({}),
        ),
        feature("bad-kind", "volcano", square(120.9, 23.5), json!({})),
        feature("good", "township", square(120.9, 23.5), json!({})),
        feature("bad-threshold", "debris_flow", square(120.9, 23.5), json!({"thresholds": {"rain_24h_mm": "lots"}})),
        feature("point", "restricted", json!({"type": "Point", "coordinates": [120.9, 23.5]}), json!({})),
        json!({"type": "Feature", "properties": {"kind": "township"}, "geometry": square(120.9, 23.5)}),
    ])
}

#[test]
fn every_bad_zone_is_named_with_its_reason() {
    let mut index = GeoIndex::new(Resolution::Nine);
    let problems = index.load_zones(&bad_zones(), LoadPolicy::SkipInvalid).expect("a FeatureCollection");
    let named: Vec<(&str, &ZoneProblem)> = problems.iter().map(|p| (p.zone_id.as_str(), &p.reason)).collect();
    assert_eq!(index.zones().map(|z| z.id.as_str()).collect::<Vec<_>>(), ["good"]);
    assert!(
        matches!(named[0], ("bowtie", ZoneProblem::InvalidPolygon(why)) if why.contains("self-intersection")),
        "{named:?}"
    );
    assert!(matches!(named[1], ("empty", ZoneProblem::EmptyGeometry)));
    assert!(matches!(named[2], ("far", ZoneProblem::CoordinateOutOfRange { .. })));
    assert!(matches!(named[3], ("unknown-geocode", ZoneProblem::BadGeocode { why: "unknown county code", .. })));
    assert!(matches!(named[4], ("malformed-geocode", ZoneProblem::BadGeocode { why: "not all digits", .. })));
    assert!(matches!(named[5], ("road-without-width", ZoneProblem::BadWidth(None))));
    assert!(matches!(named[6], ("bad-kind", ZoneProblem::BadKind(k)) if k == "volcano"));
    assert!(matches!(named[7], ("good", ZoneProblem::DuplicateId)));
    assert!(matches!(named[8], ("bad-threshold", ZoneProblem::BadThresholds(_))));
    assert!(matches!(named[9], ("point", ZoneProblem::UnsupportedGeometry(t)) if t == "Point"));
    assert!(matches!(named[10], ("#11", ZoneProblem::MissingId)));
    assert_eq!(problems.len(), 11);
    // The messages read well in a log line.
    assert_eq!(problems[1].to_string(), "zone empty: empty geometry");
    assert!(problems[3].to_string().starts_with("zone unknown-geocode: bad geocode \"99999\""));
}

#[test]
fn stop_on_first_loads_nothing() {
    let mut index = GeoIndex::new(Resolution::Nine);
    let err = index.load_zones(&bad_zones(), LoadPolicy::StopOnFirst).expect_err("stops");
    assert!(matches!(err, GeoError::Zone(ref e) if e.zone_id == "bowtie"), "{err}");
    assert_eq!(index.zones().count(), 0);
}

#[test]
fn broken_files_are_errors() {
    let mut index = GeoIndex::new(Resolution::Nine);
    assert!(matches!(index.load_zones("{not json", LoadPolicy::SkipInvalid), Err(GeoError::GeoJson(_))));
    assert!(matches!(
        index.load_zones(r#"{"type": "Feature"}"#, LoadPolicy::SkipInvalid),
        Err(GeoError::NotAFeatureCollection)
    ));
}

#[test]
fn out_of_range_points_are_errors_not_panics() {
    let mut index = GeoIndex::new(Resolution::Nine);
    for (lat, lon) in [(91.0, 0.0), (0.0, 181.0), (f64::NAN, 120.0), (23.5, f64::INFINITY)] {
        assert!(matches!(index.cell_at(lat, lon), Err(GeoError::CoordinateOutOfRange { .. })));
        assert!(index.upsert_sensor("s", lat, lon).is_err());
        assert!(index.zones_containing(lat, lon).is_empty());
        assert!(index.sensors_in_k_ring(lat, lon, 1).is_err());
    }
    assert!(matches!(index.sensors_in_zone("nope"), Err(GeoError::UnknownZone(_))));
    assert!(matches!(index.sensor_neighbours("nope", 100.0), Err(GeoError::UnknownSensor(_))));
    let bowtie = MultiPolygon(vec![Polygon::new(
        LineString::from(vec![(120.0, 23.0), (120.1, 23.1), (120.1, 23.0), (120.0, 23.1)]),
        vec![],
    )]);
    assert!(matches!(index.sensors_in_polygon(&bowtie), Err(GeoError::InvalidArea(_))));
    assert!(matches!(index.alert_area(bowtie), Err(GeoError::InvalidArea(_))));
    assert!(matches!(index.alert_area(MultiPolygon(vec![])), Err(GeoError::InvalidArea(_))));
}

#[test]
fn every_bad_cell_site_is_named_with_its_line_and_reason() {
    let csv = "\
carrier,mcc,mnc,eci,tac,lat,lon,azimuth_deg,beamwidth_deg,range_m
Good,466,92,1001,10,23.5,120.9,0,120,2000
Abroad,310,260,1002,10,23.5,120.9,0,120,2000
Wide,466,92,268435456,10,23.5,120.9,0,120,2000
Big-tac,466,92,1003,70000,23.5,120.9,0,120,2000
North-pole,466,92,1004,10,95.0,120.9,0,120,2000
Twisted,466,92,1005,10,23.5,120.9,400,120,2000
Blind,466,92,1006,10,23.5,120.9,0,0,2000
Endless,466,92,1007,10,23.5,120.9,0,120,-5
Copy,466,92,1001,10,23.5,120.9,0,120,2000
Garbled,466,92,1008,10,north,120.9,0,120,2000
Hex,466,01,0x3EA,10,23.5,120.9,90,65,1500
";
    let mut index = GeoIndex::new(Resolution::Nine);
    let problems = index.load_cell_sites(csv, LoadPolicy::SkipInvalid).expect("has a header");
    let got: Vec<(String, u64, SiteProblem)> =
        problems.iter().map(|p| (p.site.clone(), p.line, p.reason.clone())).collect();
    assert_eq!(got[0], ("310-260-1002".into(), 3, SiteProblem::NotTaiwan(310)));
    assert_eq!(got[1], ("466-92-268435456".into(), 4, SiteProblem::BadEci(268_435_456)));
    assert_eq!(got[2], ("466-92-1003".into(), 5, SiteProblem::BadTac(70_000)));
    assert!(matches!(got[3], (_, 6, SiteProblem::CoordinateOutOfRange { .. })));
    assert_eq!(got[4].2, SiteProblem::BadAzimuth(400.0));
    assert_eq!(got[5].2, SiteProblem::BadBeamwidth(0.0));
    assert_eq!(got[6].2, SiteProblem::BadRange(-5.0));
    assert_eq!(got[7], ("466-92-1001".into(), 10, SiteProblem::DuplicateEcgi));
    assert!(matches!(got[8], (_, 11, SiteProblem::Malformed(_))));
    assert_eq!(problems.len(), 9);
    let loaded: Vec<String> = index.cell_sites().map(|s| s.ecgi.to_string()).collect();
    assert_eq!(loaded, ["466-92-1001", "466-01-1002"]);
    assert_eq!(problems[0].to_string(), "cell site 310-260-1002 (line 3): MCC 310 is not Taiwan's (466)");

    let mut strict = GeoIndex::new(Resolution::Nine);
    assert!(matches!(strict.load_cell_sites(csv, LoadPolicy::StopOnFirst), Err(GeoError::Site(e)) if e.line == 3));
    assert_eq!(strict.cell_sites().count(), 0);
    assert!(
        matches!(strict.load_cell_sites("carrier,mcc\nX,466\n", LoadPolicy::SkipInvalid), Err(GeoError::SiteHeader(m)) if m.contains("eci"))
    );
}

/// Finding F3 of `fuzz/README.md`: a zone too big to index (here a mistyped latitude, 23.7 → 46.7, and a 3°×3°
/// square) is refused before tiling, named, with its estimated cell count and the limit; the good zone beside it
/// loads.
#[test]
fn a_zone_needing_too_many_cells_is_refused_by_name_and_count() {
    let spike = json!({"type": "Polygon", "coordinates": [[[120.90, 23.50], [120.95, 23.50], [120.95, 46.70], [120.90, 23.55], [120.90, 23.50]]]});
    let big = json!({"type": "Polygon", "coordinates": [[[120.0, 22.0], [123.0, 22.0], [123.0, 25.0], [120.0, 25.0], [120.0, 22.0]]]});
    let text = collection(vec![
        feature("typo", "township", spike, json!({})),
        feature("good", "township", square(120.9, 23.5), json!({})),
        feature("big", "debris_flow", big, json!({})),
    ]);
    let limits = geo_index::GeoLimits { max_zone_cells: 20_000, ..Default::default() };
    let mut index = GeoIndex::with_limits(Resolution::Nine, limits);
    let problems = index.load_zones(&text, LoadPolicy::SkipInvalid).expect("a FeatureCollection");
    assert_eq!(index.zones().map(|z| z.id.as_str()).collect::<Vec<_>>(), ["good"]);
    assert_eq!(problems.len(), 2, "{problems:?}");
    for (problem, id, at_least) in [(&problems[0], "typo", 20_000), (&problems[1], "big", 900_000)] {
        assert_eq!(problem.zone_id, id);
        match problem.reason {
            ZoneProblem::TooManyCells { cells, limit, resolution } => {
                assert!(cells > at_least, "{id}: {cells}");
                assert_eq!((limit, resolution), (20_000, 9));
            }
            ref other => panic!("{id}: {other:?}"),
        }
        let text = problem.to_string();
        assert!(text.starts_with(&format!("zone {id}: its area would need about ")) && text.contains("limit of 20000"));
    }
    // The default limit still refuses the 3°×3° square (about a million cells at resolution 9).
    let mut index = GeoIndex::new(Resolution::Nine);
    let err = index.load_zones(&text, LoadPolicy::StopOnFirst).expect_err("refused");
    assert!(matches!(&err, GeoError::Zone(e) if e.zone_id == "big"), "{err}");
    assert_eq!(index.zones().count(), 0);
}

/// Finding F4: a cell site whose footprint would need more cells than the limit is refused with its ECGI, line,
/// the field and the count. With the default limit a 100 km omni cell (about 300,000 cells at resolution 9) is
/// refused and a 30 km one loads.
#[test]
fn a_footprint_too_large_is_refused_naming_the_site_and_range_m() {
    let csv = "\
carrier,mcc,mnc,eci,tac,lat,lon,azimuth_deg,beamwidth_deg,range_m
Huge,466,92,2001,10,23.5,120.9,0,360,100000
Sea,466,92,2002,10,23.5,120.9,90,120,30000
";
    let mut index = GeoIndex::new(Resolution::Nine);
    let problems = index.load_cell_sites(csv, LoadPolicy::SkipInvalid).expect("has a header");
    assert_eq!(index.cell_sites().map(|s| s.ecgi.to_string()).collect::<Vec<_>>(), ["466-92-2002"]);
    assert_eq!(problems.len(), 1);
    assert_eq!((problems[0].site.as_str(), problems[0].line), ("466-92-2001", 2));
    match problems[0].reason {
        SiteProblem::FootprintTooLarge { range_m, cells, limit, resolution } => {
            assert_eq!((range_m, limit, resolution), (100_000.0, 100_000, 9));
            assert!(cells > 250_000, "{cells}");
        }
        ref other => panic!("{other:?}"),
    }
    let text = problems[0].to_string();
    assert!(
        text.starts_with("cell site 466-92-2001 (line 2): range_m 100000 m: the footprint would need about "),
        "{text}"
    );
    // The same row fits at resolution 7 (49× fewer cells).
    let mut coarse = GeoIndex::new(Resolution::Seven);
    assert!(coarse.load_cell_sites(csv, LoadPolicy::SkipInvalid).expect("header").is_empty());
    assert_eq!(coarse.cell_sites().count(), 2);
}
