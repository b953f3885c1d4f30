//! Device-based geofencing on the cell-broadcast channel (issue 25): the Warning Area Coordinates a carrier's PDUs
//! carry, what a phone reading them does, and the geofenced figures of the targeting report beside the cell-level
//! ones, for every demo zone and carrier (printed: `cargo test -p dissemination --lib geofence -- --nocapture`).

use super::*;
use crate::broadcast::{plan, targeting_report, BroadcastContext};
use crate::channel::cbc::Carrier;
use crate::messages::{build_message, MessageContext};
use encoders::cap::MsgType;
use encoders::cell_broadcast::{GeoScope, PwsClass, Schedule, SerialNumber};
use encoders::test_support::phone::{read_coordinates, Phone};

fn carrier(name: &str, mnc: u16, geofence: bool) -> Carrier {
    Carrier {
        name: name.into(),
        mnc,
        cbc_url: "https://cbc.example.tw/".into(),
        token: "t".into(),
        warning_area_coordinates: geofence,
        geofence_max_wait_s: geofence.then_some(10),
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn geofenced_carriers_send_the_area_and_phones_outside_it_stay_silent() {
    let geo = geo();
    let cfg = config("").resolve(&geo, &templates(), &|_| None, "").unwrap();
    let t = templates();
    let ctx = MessageContext { cfg: &cfg, geo: &geo, templates: &t, base_url: BASE_URL };
    let msg = build_message(&ctx, &view("GF", 1), "GF.1".into(), MsgType::Alert, Vec::new(), true).expect("message");
    let carriers = [carrier("CHT", 92, true), carrier("TWM", 97, false)];
    let bctx = BroadcastContext {
        geo: &geo,
        carriers: &carriers,
        schedule: Schedule { repetition_period_s: 60, number_of_broadcasts: 0 },
    };
    let serial = SerialNumber::new(GeoScope::CellNormal, 9, 0).unwrap();
    let mut id = 0;
    let mut next = || {
        id += 1;
        id
    };
    let (record, envelopes) = plan(
        &bctx,
        &msg,
        BroadcastKind::WriteReplace,
        PwsClass::Emergency(0),
        None,
        serial,
        true,
        "first",
        None,
        &mut next,
    );
    assert!(record.error.is_none(), "{:?}", record.error);
    assert_eq!(envelopes.len(), 2);
    let cht: serde_json::Value = serde_json::from_str(&envelopes[0].body).unwrap();
    let twm: serde_json::Value = serde_json::from_str(&envelopes[1].body).unwrap();

    let wac = &cht["warning_area_coordinates"];
    let octets = unhex(wac["hex"].as_str().unwrap());
    assert_eq!(record.carriers[0].warning_area_octets, Some(octets.len()));
    assert!(octets.len() <= 1024);
    assert_eq!(wac["max_wait_s"], 10);
    // Both channels' PDUs end with IE 46 holding exactly these octets (id 46, ignore, open type, length − 1).
    for ch in cht["pws"].as_array().unwrap() {
        let pdu = unhex(ch["sbcap_pdu_hex"].as_str().unwrap());
        assert!(pdu.ends_with(&octets), "IE 46 is the last IE");
        let n = octets.len() - 1;
        let head = [0x00, 0x2e, 0x40];
        let at = pdu.len() - octets.len() - 2;
        assert_eq!(&pdu[at..at + 2], &[(n >> 8) as u8, n as u8]);
        assert!(pdu[..at].windows(3).any(|w| w == head), "IE 46 header");
    }
    assert!(twm.get("warning_area_coordinates").is_none(), "a carrier that opted out sends no coordinates");
    assert_eq!(record.carriers[1].warning_area_octets, None);

    // The polygons shown to operators are those a phone decodes.
    let read = read_coordinates(&octets).unwrap();
    assert_eq!(read.max_wait_s, 10);
    let shown = wac["polygons"].as_array().unwrap();
    assert_eq!(shown.len(), read.shapes.len());

    // Phones in the same targeted cell: inside Shenmu it alarms; 3 km east of the zone's edge it does not (its
    // cell would have alarmed it); with no fix it alarms.
    let alarms = |lat, lon, accuracy_m| Phone { position: Some((lat, lon)), accuracy_m }.alarms(Some(&octets));
    assert!(alarms(23.5185, 120.9280, 20.0), "the demo point inside the zone");
    let area = geo.alert_area_of_zones(&["dfa-xinyi-shenmu"]).unwrap();
    use geo::BoundingRect;
    let b = area.geometry.bounding_rect().unwrap();
    let east = b.max().x + 3000.0 / (111_320.0 * 23.5f64.to_radians().cos());
    let mid = (b.min().y + b.max().y) / 2.0;
    assert!(!alarms(mid, east, 20.0), "3 km outside");
    assert!(alarms(mid, east, 5000.0), "3 km outside, but its fix is only good to 5 km");
    assert!(Phone { position: None, accuracy_m: 0.0 }.alarms(Some(&octets)), "no fix within the wait: shown");
    // Every vertex of the zone is inside what the phone reads: the outline never shrinks the area.
    for p in &area.geometry.0 {
        for c in &p.exterior().0 {
            assert!(alarms(c.y, c.x, 0.0), "zone vertex {c:?} left out");
        }
    }
}

#[test]
fn a_reserved_wait_time_is_refused_naming_the_key() {
    let base = "[[carrier]]\nname = \"C\"\nmcc = \"466\"\nmnc = \"92\"\ncbc_url = \"https://c.tw/\"\ntoken = \"t\"\n";
    let e =
        config(&format!("{base}geofence_max_wait_s = 255\n")).resolve(&geo(), &templates(), &|_| None, "").unwrap_err();
    assert_eq!(e.field, "carrier[0].geofence_max_wait_s");
    let ok = config(&format!("{base}geofence_max_wait_s = 0\nwarning_area_coordinates = false\n"))
        .resolve(&geo(), &templates(), &|_| None, "")
        .unwrap();
    assert!(!ok.cbc.carriers[0].warning_area_coordinates);
    let default = config(base).resolve(&geo(), &templates(), &|_| None, "").unwrap();
    assert!(default.cbc.carriers[0].warning_area_coordinates, "on unless a carrier opts out");
    assert_eq!(default.cbc.carriers[0].geofence_max_wait_s, None);
}

/// The measurement of issue 25: for every demo zone and carrier, what cell broadcast alarms outside the zone at cell
/// level and with device-based geofencing, beside the WEA limit of 0.1 mile.
#[test]
fn every_demo_zone_and_carrier_cell_level_vs_geofenced_overshoot() {
    let geo = geo();
    println!(
        "GEOFENCE | zone | carrier | area km² | covered | cells: overshoot km² | cells: farthest m | geofenced: overshoot km² | geofenced: farthest m | WEA 0.1 mi (161 m) cells / geofenced | IE 46 octets (vertices) | outline worst displacement m |"
    );
    println!("GEOFENCE |---|---|---|---|---|---|---|---|---|---|---|");
    let mut zones: Vec<String> = geo.zones().map(|z| z.id.clone()).collect();
    zones.sort();
    for zone in &zones {
        for (name, mnc) in [("CHT 92", 92u16), ("TWM 97", 97), ("FET 01", 1)] {
            let Ok(r) = targeting_report(&geo, zone, mnc) else { continue };
            if r.reach_km2 == 0.0 {
                continue;
            }
            let g = r.geofenced.clone().expect("geofenced figures for every demo zone");
            println!(
                "GEOFENCE | {zone} | {name} | {:.2} | {:.3} | {:.1} | {:.0} | {:.3} | {:.0} | {} / {} | {} ({}) | {:.0} |",
                r.area_km2,
                r.covered_share,
                r.overshoot_km2,
                r.farthest_overshoot_m,
                g.overshoot_km2,
                g.farthest_overshoot_m,
                if r.meets_wea { "yes" } else { "no" },
                if g.meets_wea { "yes" } else { "no" },
                g.octets,
                g.vertices,
                g.worst_displacement_m,
            );
            assert!(g.overshoot_km2 <= r.overshoot_km2 + 0.01, "{zone} {name}: geofencing cannot add overshoot");
            assert!(g.farthest_overshoot_m <= g.worst_displacement_m + 1.0, "{zone} {name}: {g:?}");
            assert!(g.octets <= 1024);
        }
    }
}
