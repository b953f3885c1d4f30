//! Warning Area Coordinates (IE 46), checked three independent ways:
//! - **tshark** still decodes every Write-Replace PDU cleanly and shows IE 46 holding exactly our octets;
//! - **pycrate**, compiled at test time from the TS 29.168 V15.1.0 ASN.1 (`sbcap_asn1/`), decodes the whole PDU,
//!   IE 46 included, and re-encodes it to the same octets;
//! - the octets themselves are read by a phone written from Android's parser (`test_support::phone`), not by our
//!   decoder, over random polygons and circles up to and beyond the 1,024-octet limit.

use std::path::PathBuf;
use std::process::Command;

use proptest::prelude::*;

use super::tshark::{fields, verbose, Dissector};
use crate::cell_broadcast::warning_area::{
    encoded_len, grid_codes, Geofence, LatLon, WarningAreaCoordinates, GRID, MAX_OCTETS, MAX_POLYGON_VERTICES,
    RADIUS_UNIT_M,
};
use crate::cell_broadcast::*;
use crate::test_support::phone::{read_coordinates, Phone, Shape};

fn broadcast() -> CellBroadcast {
    let serial = SerialNumber::new(GeoScope::CellNormal, 77, 2).unwrap();
    encode_broadcast(PwsClass::Emergency(0), Language::Chinese, serial, "土石流紅色警戒：請立即撤離。").unwrap()
}

fn cells() -> WarningArea {
    let plmn = Plmn::new("466", "92").unwrap();
    WarningArea::Cells(vec![Ecgi { plmn, cell_id: 0x0ABCDEF }, Ecgi { plmn, cell_id: 0x0000102 }])
}

const SCHEDULE: Schedule = Schedule { repetition_period_s: 60, number_of_broadcasts: 0 };

/// Shenmu's debris-flow area, roughly (a quadrilateral), and a circle beside it.
fn shenmu() -> WarningAreaCoordinates {
    let p = |lat, lon| LatLon { lat, lon };
    WarningAreaCoordinates {
        max_wait_s: Some(10),
        areas: vec![
            Geofence::Polygon(vec![p(23.50, 120.91), p(23.50, 120.95), p(23.54, 120.95), p(23.545, 120.915)]),
            Geofence::Circle { centre: p(23.60, 120.80), radius_m: 1500.0 },
        ],
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn tshark_shows_ie_46_with_our_octets() {
    let wac = shenmu();
    let octets = wac.encode().unwrap();
    let pdu = write_replace_warning_request_geofenced(&broadcast(), &cells(), SCHEDULE, &wac).unwrap();
    let plain = write_replace_warning_request(&broadcast(), &cells(), SCHEDULE).unwrap();
    let names = ["sbc-ap.id", "sbc-ap.Warning_Area_Coordinates", "sbc-ap.cell_ID", "_ws.malformed", "_ws.expert"];
    let rows = fields(Dissector::Sbcap, &[pdu.clone(), plain], &names);
    for row in &rows {
        let clean = row["_ws.malformed"].is_empty() && row["_ws.expert"].is_empty();
        assert!(clean, "tshark reports a problem:\n{}", verbose(Dissector::Sbcap, std::slice::from_ref(&pdu)));
        assert_eq!(row["sbc-ap.cell_ID"].len(), 2, "the cell list is still there");
    }
    assert_eq!(rows[0]["sbc-ap.id"], ["5", "11", "15", "10", "7", "3", "16", "20", "46"]);
    let shown: Vec<String> = rows[0]["sbc-ap.Warning_Area_Coordinates"].iter().map(|v| v.replace(':', "")).collect();
    assert_eq!(shown, [hex(&octets)]);
    assert_eq!(rows[1]["sbc-ap.id"], ["5", "11", "15", "10", "7", "3", "16", "20"], "without geofencing: no IE 46");
    assert!(rows[1]["sbc-ap.Warning_Area_Coordinates"].is_empty());
}

/// The workspace's `.venv` python with pycrate (scripts/test installs it), or `SBCAP_PYTHON`.
fn pycrate_python() -> PathBuf {
    let python = std::env::var_os("SBCAP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    let ok = Command::new(&python)
        .args(["-c", "import pycrate_asn1c"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{} cannot import pycrate. These tests decode our SBc-AP PDUs with pycrate compiled from the TS 29.168 ASN.1; \
         run scripts/test (it installs it), or `python3 -m venv .venv && .venv/bin/pip install pycrate` in the \
         workspace root, or set SBCAP_PYTHON to a python that has it.",
        python.display()
    );
    python
}

fn pycrate_decode(pdus: &[Vec<u8>]) -> Vec<serde_json::Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/cell_broadcast/tests/sbcap_asn1/decode.py");
    let out = Command::new(pycrate_python()).arg(script).args(pdus.iter().map(|p| hex(p))).output().unwrap();
    assert!(out.status.success(), "pycrate failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn pycrate_decodes_the_whole_pdu_including_ie_46() {
    let wac = shenmu();
    let octets = wac.encode().unwrap();
    let b = broadcast();
    let geofenced = write_replace_warning_request_geofenced(&b, &cells(), SCHEDULE, &wac).unwrap();
    let stop = stop_warning_request(b.message_id, b.serial, &cells()).unwrap();
    let decoded = pycrate_decode(&[geofenced, stop]);
    let wr = &decoded[0];
    assert_eq!(wr["message"], "Write-Replace-Warning-Request");
    assert_eq!(wr["reencodes"], true, "pycrate's encoding of what it read is our octets");
    let ies = wr["ies"].as_array().unwrap();
    let ids: Vec<i64> = ies.iter().map(|ie| ie["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [5, 11, 15, 10, 7, 3, 16, 20, 46]);
    let last = &ies[8];
    assert_eq!(last["type"], "Warning-Area-Coordinates");
    assert_eq!(last["criticality"], "ignore");
    assert_eq!(last["value"], hex(&octets));
    assert_eq!(ies[6]["value"], hex(&b.warning_message_content()));
    assert_eq!(decoded[1]["message"], "Stop-Warning-Request");
    assert_eq!(decoded[1]["reencodes"], true);
}

#[test]
fn the_largest_coordinates_fit_one_pdu_and_one_more_octet_is_refused() {
    // 185 vertices (1,020 octets) + the wait TLV (3) = 1,023; a circle more (10) is over.
    let ring: Vec<LatLon> = (0..MAX_POLYGON_VERTICES)
        .map(|i| {
            let a = i as f64 / MAX_POLYGON_VERTICES as f64 * std::f64::consts::TAU;
            LatLon { lat: 23.5 + 0.1 * a.sin(), lon: 120.9 + 0.1 * a.cos() }
        })
        .collect();
    let mut wac = WarningAreaCoordinates { max_wait_s: Some(5), areas: vec![Geofence::Polygon(ring)] };
    let octets = wac.encode().unwrap();
    assert_eq!(octets.len(), 1023);
    let pdu = write_replace_warning_request_geofenced(&broadcast(), &cells(), SCHEDULE, &wac).unwrap();
    let decoded = pycrate_decode(&[pdu]);
    assert_eq!(decoded[0]["ies"][8]["value"], hex(&octets));
    wac.areas.push(Geofence::Circle { centre: LatLon { lat: 23.0, lon: 121.0 }, radius_m: 100.0 });
    assert_eq!(wac.encode(), Err(CbsError::WarningAreaTooLarge { octets: 1033, limit: MAX_OCTETS }));
    assert!(write_replace_warning_request_geofenced(&broadcast(), &cells(), SCHEDULE, &wac).is_err());
}

#[test]
fn a_phone_alarms_inside_and_within_its_accuracy_not_outside_and_when_it_has_no_position() {
    let octets = shenmu().encode().unwrap();
    let at = |lat, lon, accuracy_m| Phone { position: Some((lat, lon)), accuracy_m };
    assert!(at(23.52, 120.93, 10.0).alarms(Some(&octets)), "inside the polygon");
    assert!(at(23.60, 120.80, 10.0).alarms(Some(&octets)), "inside the circle");
    // 120.95 is the polygon's east edge: ~102 m east of it (1 mdeg of longitude at 23.5° ≈ 102 m).
    assert!(!at(23.52, 120.951, 50.0).alarms(Some(&octets)), "102 m outside, 50 m accuracy");
    assert!(at(23.52, 120.951, 150.0).alarms(Some(&octets)), "102 m outside, 150 m accuracy");
    assert!(!at(23.40, 120.93, 10.0).alarms(Some(&octets)), "11 km south");
    assert!(Phone { position: None, accuracy_m: 0.0 }.alarms(Some(&octets)), "no position within the wait");
    assert!(at(23.40, 120.93, 10.0).alarms(None), "no coordinates: every phone in the cell");
    assert!(at(23.40, 120.93, 10.0).alarms(Some(&[0x40, 0x0C, 0])), "unreadable coordinates: shown");
}

fn lat_step() -> f64 {
    180.0 / f64::from(GRID)
}
fn lon_step() -> f64 {
    360.0 / f64::from(GRID)
}

/// A star-shaped polygon (so it is simple) with `n` vertices at random radii around a random centre, its vertices
/// far more than a grid step apart (so none share a grid point and the counts compare one to one).
fn star() -> impl Strategy<Value = Vec<LatLon>> {
    (-60.0..60.0f64, -179.0..179.0f64, 3usize..260, 0.05..0.5f64).prop_flat_map(|(lat, lon, n, r)| {
        prop::collection::vec(0.3..1.0f64, n).prop_map(move |radii| {
            radii
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let a = i as f64 / radii.len() as f64 * std::f64::consts::TAU;
                    LatLon { lat: lat + r * k * a.sin(), lon: lon + r * k * a.cos() }
                })
                .collect()
        })
    })
}

fn circle() -> impl Strategy<Value = Geofence> {
    (-80.0..80.0f64, -180.0..180.0f64, 1.0..50_000.0f64)
        .prop_map(|(lat, lon, radius_m)| Geofence::Circle { centre: LatLon { lat, lon }, radius_m })
}

fn shape() -> impl Strategy<Value = Geofence> {
    prop_oneof![star().prop_map(Geofence::Polygon), circle()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any mix of shapes: encoded exactly when it fits (then every octet read back by the phone, every vertex
    /// within half a grid step, every circle at least as large), refused with the size otherwise; never cut.
    #[test]
    fn shapes_encode_whole_or_not_at_all(areas in prop::collection::vec(shape(), 1..6), wait in prop::option::of(0u8..255)) {
        let wac = WarningAreaCoordinates { max_wait_s: wait, areas: areas.clone() };
        // Our size rule, from the vertex counts (distinct grid points: a star's vertices are far apart).
        let polygons: Vec<usize> = areas.iter().filter_map(|a| match a { Geofence::Polygon(v) => Some(v.len()), _ => None }).collect();
        let circles = areas.len() - polygons.len();
        let expected = encoded_len(&polygons, circles, wait.is_some());
        match wac.encode() {
            Ok(octets) => {
                prop_assert!(polygons.iter().all(|&n| n <= MAX_POLYGON_VERTICES));
                prop_assert_eq!(octets.len(), expected);
                prop_assert!(octets.len() <= MAX_OCTETS);
                let read = read_coordinates(&octets).map_err(TestCaseError::fail)?;
                prop_assert_eq!(read.max_wait_s, wait.unwrap_or(255));
                prop_assert_eq!(read.shapes.len(), areas.len());
                for (given, got) in areas.iter().zip(&read.shapes) {
                    match (given, got) {
                        (Geofence::Polygon(v), Shape::Polygon(w)) => {
                            prop_assert_eq!(v.len(), w.len());
                            for (a, b) in v.iter().zip(w) {
                                prop_assert!((a.lat - b.0).abs() <= lat_step() / 2.0 + 1e-9, "{:?} {:?}", a, b);
                                let dlon = (a.lon - b.1).abs();
                                prop_assert!(dlon.min(360.0 - dlon) <= lon_step() / 2.0 + 1e-9, "{:?} {:?}", a, b);
                            }
                        }
                        (Geofence::Circle { centre, radius_m }, Shape::Circle(c, r)) => {
                            prop_assert!((centre.lat - c.0).abs() <= lat_step() / 2.0 + 1e-9);
                            // The circle a phone reads holds the given one (centre shift included), by at most
                            // one radius unit more than needed.
                            let shift = crate::test_support::phone::distance_m((centre.lat, centre.lon), *c);
                            prop_assert!(*r >= radius_m + shift - 0.01, "{} < {} + {}", r, radius_m, shift);
                            prop_assert!(*r <= radius_m + shift + RADIUS_UNIT_M + 1.0);
                        }
                        other => prop_assert!(false, "shape kinds differ: {:?}", other),
                    }
                }
            }
            Err(CbsError::WarningAreaTooLarge { octets, limit }) => {
                prop_assert_eq!(limit, MAX_OCTETS);
                prop_assert_eq!(octets, expected);
                prop_assert!(expected > MAX_OCTETS);
            }
            Err(CbsError::WarningAreaPolygon { vertices, .. }) => {
                prop_assert!(vertices > MAX_POLYGON_VERTICES);
            }
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }

    /// Grid codes are the nearest grid point, for every coordinate on the globe.
    #[test]
    fn grid_codes_are_nearest(lat in -90.0..90.0f64, lon in -180.0..180.0f64) {
        let (a, o) = grid_codes(LatLon { lat, lon }).unwrap();
        let back_lat = f64::from(a) * lat_step() - 90.0;
        let back_lon = f64::from(o) * lon_step() - 180.0;
        prop_assert!((back_lat - lat).abs() <= lat_step() / 2.0 + 1e-9 || a == GRID - 1);
        let d = (back_lon - lon).abs();
        prop_assert!(d.min(360.0 - d) <= lon_step() / 2.0 + 1e-9);
    }
}
