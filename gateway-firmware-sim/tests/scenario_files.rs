//! Scenario files: the shipped ones validate against the registry and tell the story they promise; broken ones fail
//! with an error naming file, key and reason; plans are deterministic for a seed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use gateway_firmware_sim::plan::{MessageKind, Step};
use gateway_firmware_sim::{plan, Fleet, Scenario};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).unwrap()
}

fn fixture_fleet() -> Fleet {
    Fleet::from_files(&fixture("sensors.toml"), &fixture("devices.toml")).unwrap()
}

fn config_fleet() -> Fleet {
    let s = std::fs::read_to_string(repo("config/sensors.toml")).expect("config/sensors.toml");
    let d = std::fs::read_to_string(repo("config/devices.toml")).expect("config/devices.toml");
    Fleet::from_files(&s, &d).expect("config files parse")
}

fn scenario_file(name: &str) -> Scenario {
    let text = std::fs::read_to_string(repo(&format!("config/scenarios/{name}"))).unwrap();
    Scenario::from_toml(&text, name).unwrap_or_else(|e| panic!("{e}"))
}

/// (scenario hours, value) of one metric of one device, from the plan.
fn series(fleet: &Fleet, s: &Scenario, device: &str, metric: &str) -> Vec<(f64, serde_json::Value)> {
    let p = plan(fleet, s, s.seed, 0).unwrap();
    p.messages()
        .into_iter()
        .filter(|m| m.device == device && m.kind == MessageKind::Reading)
        .filter_map(|m| {
            let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
            v["values"].get(metric).map(|x| (m.at.as_secs_f64() / 3600.0, x.clone()))
        })
        .collect()
}

#[test]
fn shipped_scenarios_validate_against_the_registry() {
    let fleet = config_fleet();
    for name in [
        "typhoon.toml",
        "quick.toml",
        "ph21-landslide.toml",
        "ph21-landslide-closed.toml",
        "ph21-rush-hour.toml",
        "ph21-stuck-detector.toml",
    ] {
        let s = scenario_file(name);
        s.check_fleet(&fleet).unwrap_or_else(|e| panic!("{e}"));
        assert!(!plan(&fleet, &s, s.seed, 0).unwrap().messages().is_empty());
    }
    let t = scenario_file("typhoon.toml");
    assert_eq!(t.span.as_secs(), 86_400);
    assert_eq!(t.duration().as_secs(), 60, "24 h replayed in 60 s");
}

#[test]
fn typhoon_rain_at_rg0001_passes_every_cwa_level_in_order() {
    let fleet = config_fleet();
    let s = scenario_file("typhoon.toml");
    let rain: Vec<(f64, f64)> =
        series(&fleet, &s, "RG0001", "rain_mm").into_iter().map(|(h, v)| (h, v.as_f64().unwrap())).collect();
    let window =
        |end: f64, hours: f64| rain.iter().filter(|(h, _)| *h > end - hours && *h <= end).map(|(_, v)| v).sum::<f64>();
    let first = |hours: f64, mm: f64| rain.iter().map(|(h, _)| *h).find(|&h| window(h, hours) >= mm);
    let heavy_24 = first(24.0, 80.0).expect("大雨 80 mm/24 h");
    let heavy_1 = first(1.0, 40.0).expect("大雨 40 mm/1 h");
    let torrential_3 = first(3.0, 100.0).expect("豪雨 100 mm/3 h");
    let torrential_24 = first(24.0, 200.0).expect("豪雨 200 mm/24 h");
    let extreme = first(24.0, 350.0).expect("大豪雨 350 mm/24 h");
    let super_extreme = first(24.0, 500.0).expect("超大豪雨 500 mm/24 h");
    assert!(heavy_24 < heavy_1 && heavy_1 <= torrential_3 && torrential_3 < torrential_24);
    assert!(torrential_24 < extreme && extreme < super_extreme && super_extreme < 24.0);
    assert!(heavy_24 > 6.0, "the alert should come in the storm, not at once ({heavy_24} h)");
}

#[test]
fn typhoon_tells_the_rest_of_its_story() {
    let fleet = config_fleet();
    let s = scenario_file("typhoon.toml");
    let num = |v: &serde_json::Value| v.as_f64().unwrap();

    // Wire sensor: intact, then broken from 19h30m.
    let wire = series(&fleet, &s, "WS0001", "wire_intact");
    assert!(wire.iter().all(|(h, v)| v.as_bool().unwrap() == (*h < 19.5)));

    // Tilt rate: above 0.01 deg/h by 15 h, above 0.1 deg/h between 17 and 19 h.
    let tilt = series(&fleet, &s, "TM0001", "tilt_deg");
    let at = |h: f64| tilt.iter().find(|(t, _)| *t >= h).map(|(_, v)| num(v)).unwrap();
    assert!((at(15.5) - at(14.5)) >= 0.008, "precaution rate");
    assert!((at(18.5) - at(17.5)) >= 0.1, "warning rate");

    // Extensometer above 10 mm/h between 18 and 20 h.
    let ex = series(&fleet, &s, "EX0001", "displacement_mm");
    let ex_at = |h: f64| ex.iter().find(|(t, _)| *t >= h).map(|(_, v)| num(v)).unwrap();
    assert!(ex_at(19.5) - ex_at(18.5) > 10.0);

    // River passes 4, 5 and 6 m.
    let river = series(&fleet, &s, "RV0001", "water_level_m");
    let peak = river.iter().map(|(_, v)| num(v)).fold(0.0, f64::max);
    assert!(river.first().map(|(_, v)| num(v)).unwrap() < 3.0 && peak > 6.5);

    // Freeway: traffic at a stop and the road flooded by 18 h.
    let speed = series(&fleet, &s, "VD0001", "speed_kmh");
    assert!(speed.iter().filter(|(h, _)| *h >= 18.0).all(|(_, v)| num(v) <= 2.0));
    assert!(speed.iter().filter(|(h, _)| *h < 12.0).all(|(_, v)| num(v) >= 80.0));
    let flood = series(&fleet, &s, "RF0001", "flood_depth_cm");
    assert!(flood.iter().filter(|(h, _)| *h >= 18.0 && *h <= 21.0).all(|(_, v)| num(v) >= 40.0));

    // Soil moisture probe dies at 20 h: nothing from it afterwards, readings or heartbeats.
    let p = plan(&fleet, &s, s.seed, 0).unwrap();
    let last_sm =
        p.messages().iter().filter(|m| m.device == "SM0001").map(|m| m.at.as_secs_f64() / 3600.0).fold(0.0, f64::max);
    assert!(last_sm < 20.0 && last_sm > 19.0, "{last_sm}");

    // Hazmat truck passes within ~100 m of AQ0001 (inside the Mailiao restricted zone) and carries its position.
    let aq = fleet.device("AQ0001").unwrap();
    let closest = p
        .messages()
        .iter()
        .filter(|m| m.device == "HZ0001" && m.kind == MessageKind::Reading)
        .map(|m| {
            let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
            let (lat, lon) = (num(&v["lat"]), num(&v["lon"]));
            ((lat - aq.lat) * 111_000.0).hypot((lon - aq.lon) * 102_000.0)
        })
        .fold(f64::MAX, f64::min);
    assert!(closest < 100.0, "closest approach {closest} m");

    // The river gauge's link drops and comes back.
    let rv = p.devices.iter().find(|d| d.device.id == "RV0001").unwrap();
    assert!(rv.steps.iter().any(|(_, s)| *s == Step::LinkDown) && rv.steps.iter().any(|(_, s)| *s == Step::LinkUp));
}

#[test]
fn payloads_follow_the_interface() {
    let fleet = config_fleet();
    let s = scenario_file("typhoon.toml");
    let start = 1_764_122_400_000i64;
    let p = plan(&fleet, &s, 1, start).unwrap();
    for m in p.messages() {
        let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
        let ts = v["ts"].as_i64().unwrap();
        let skew = (ts - start - m.at.as_millis() as i64).abs();
        assert!(skew <= 2000, "ts is scenario time plus at most the configured skew ({skew} ms)");
        match m.kind {
            MessageKind::Status => {
                assert_eq!(m.topic, format!("sensors/{}/status", m.device));
                assert!(v["battery_v"].is_number() && v["rssi_dbm"].is_i64());
            }
            _ => {
                assert_eq!(m.topic, format!("sensors/{}/readings", m.device));
                assert!(v["values"].as_object().is_some_and(|o| !o.is_empty()));
                let mobile = fleet.device(&m.device).unwrap().mobile;
                assert_eq!(v.get("lat").is_some(), mobile, "lat/lon only for mobile devices: {}", m.payload);
            }
        }
    }
    assert!(p.count(MessageKind::Duplicate) > 0, "the typhoon's firmware sends the occasional duplicate");
}

#[test]
fn same_seed_same_messages_other_seed_other_messages() {
    let fleet = fixture_fleet();
    let s = Scenario::from_toml(&fixture("storm-short.toml"), "storm-short.toml").unwrap();
    let a = plan(&fleet, &s, 7, 1_000).unwrap();
    let b = plan(&fleet, &s, 7, 1_000).unwrap();
    assert_eq!(a, b);
    let c = plan(&fleet, &s, 8, 1_000).unwrap();
    assert_ne!(a.messages(), c.messages());
    // Same number of readings per device whatever the seed: only values, phases, skew and duplicates move.
    let per_device = |p: &gateway_firmware_sim::Plan| {
        let mut m = BTreeMap::new();
        for msg in p.messages().iter().filter(|m| m.kind == MessageKind::Reading) {
            *m.entry(msg.device.clone()).or_insert(0) += 1;
        }
        m
    };
    let (pa, pc) = (per_device(&a), per_device(&c));
    for (dev, n) in &pa {
        assert!((*n as i64 - pc[dev] as i64).abs() <= 1, "{dev}: {n} vs {}", pc[dev]);
    }
}

/// A valid scenario with one line changed must fail with exactly this message.
fn bad(replace: &str, with: &str) -> String {
    let good = fixture("storm-short.toml");
    assert!(good.contains(replace), "fixture lacks {replace:?}");
    let text = good.replacen(replace, with, 1);
    match Scenario::from_toml(&text, "bad.toml") {
        Ok(s) => match s.check_fleet(&fixture_fleet()) {
            Ok(()) => panic!("accepted: {with}"),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_scenarios_name_file_key_and_reason() {
    assert_eq!(
        bad(r#"points = [["0h", 10.0], ["2h", 60.0]]"#, r#"points = [["0h", 10.0], ["3h", 60.0]]"#),
        "bad.toml: track[0].points[1]: time 3h is after the end of the scenario (2h)"
    );
    assert_eq!(
        bad(r#"points = [["0h", 10.0], ["2h", 60.0]]"#, r#"points = [["1h", 10.0], ["1h", 60.0]]"#),
        "bad.toml: track[0].points[1]: time 1h is not after the previous point's 1h"
    );
    assert_eq!(
        bad(r#"metric = "rain_mm""#, r#"metric = "rainfall""#),
        "bad.toml: track[0].metric: `rainfall` is not a metric (expected one of rain_mm, water_level_m, pm25_ugm3, tilt_deg, \
displacement_mm, wire_intact, soil_moisture_pct, vibration_mm_s, pga_gal, speed_kmh, flow_veh_h, occupancy_pct, \
flood_depth_cm, battery_v, un_number)"
    );
    assert_eq!(
        bad(r#"metric = "rain_mm""#, "metric = \"rain_mm\"\nmode = \"linear\""),
        "bad.toml: track[0].mode: `rain_mm` is an increment since the previous report: use mode = \"rate\" with points per hour"
    );
    assert_eq!(
        bad(r#"["1h15m", false]"#, r#"["1h15m", 0]"#),
        "bad.toml: track[1].points[1]: `wire_intact` takes true or false, found the integer 0"
    );
    assert_eq!(bad(r#"until = "1h""#, r#"until = "20m""#), "bad.toml: event[1].until: 20m is not after `at` (30m)");
    assert_eq!(
        bad(r#"action = "silent""#, r#"action = "explode""#),
        "bad.toml: event[0].action: `explode` is not an action (expected offline or silent)"
    );
    assert_eq!(
        bad(r#"span = "2h""#, r#"span = "2 hours""#),
        "bad.toml: scenario.span: `2 hours`: unknown unit `hours` (use ms, s, m, h or d)"
    );
    assert_eq!(
        bad("compression = 1800.0", "compression = 0.0"),
        "bad.toml: scenario.compression: must be a positive number of scenario seconds per wall second, found 0"
    );
    assert_eq!(
        bad(r#"device = "RG0001""#, r#"device = "RG-0001""#),
        "bad.toml: track[0].device: `RG-0001` is not a device id (1-32 ASCII letters and digits)"
    );
    assert_eq!(
        bad("duplicate_probability = 0.05", "duplicate_probability = 5"),
        "bad.toml: firmware.duplicate_probability: must be between 0 and 1, found 5"
    );
    assert_eq!(
        bad(r#"[["0h", 23.70, 120.40],"#, r#"[["0h", 120.40, 23.70],"#),
        "bad.toml: route[0].points[0]: position 120.4,23.7 is not on Earth (lat first, then lon)"
    );

    // Against the registry.
    assert!(bad(r#"device = "RG0001""#, r#"device = "RG0009""#)
        .starts_with("bad.toml: track[0].device: `RG0009` is not in the sensor registry (known: "));
    assert_eq!(
        bad(r#"metric = "soil_moisture_pct""#, r#"metric = "tilt_deg""#),
        "bad.toml: track[2].metric: SM0001 (soil_moisture) does not report `tilt_deg` (it reports soil_moisture_pct, battery_v)"
    );
    assert_eq!(
        bad("[[route]]\ndevice = \"HZ0001\"", "[[route]]\ndevice = \"RG0001\""),
        "bad.toml: route[0].device: RG0001 is a fixed rain_gauge; only mobile units have routes"
    );

    // Syntax and typos: the parser's words, with file and line.
    let typo = bad("heartbeat = \"20m\"", "heartbeet = \"20m\"");
    assert!(typo.starts_with("bad.toml: line 9, column 1: unknown field `heartbeet`, expected one of"), "{typo}");
    let syntax = bad("seed = 42", "seed = ");
    assert!(syntax.starts_with("bad.toml: line 6, column 8: "), "{syntax}");
    let missing = bad("span = \"2h\"\n", "");
    assert!(missing.contains("missing field `span`"), "{missing}");
}

/// `--wall-clock` (and `disaster-cloud demo`): the same messages, stamped with the wall clock at which each device
/// measures — offset / compression after the run starts — instead of scenario time; duplicates keep their original's.
#[test]
fn wall_clock_stamps_follow_the_replay_not_the_scenario() {
    use gateway_firmware_sim::{plan_stamped, Stamp};
    let fleet = config_fleet();
    let s = scenario_file("typhoon.toml");
    let wall_start_ms = 1_796_500_000_000;
    let scenario = plan(&fleet, &s, 7, 0).unwrap();
    let wall = plan_stamped(&fleet, &s, 7, Stamp::WallClock { wall_start_ms, compression: s.compression }).unwrap();
    let (a, b) = (scenario.messages(), wall.messages());
    assert_eq!(a.len(), b.len());
    let ts = |m: &gateway_firmware_sim::PlannedMessage| {
        serde_json::from_str::<serde_json::Value>(&m.payload).unwrap()["ts"].as_i64().unwrap()
    };
    let skew = |d: &str| wall.devices.iter().find(|p| p.device.id == d).unwrap().skew_ms;
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.at, &x.device, x.kind), (y.at, &y.device, y.kind));
        let expected = wall_start_ms + (x.at.as_secs_f64() * 1000.0 / s.compression).round() as i64 + skew(&y.device);
        assert_eq!(ts(y), expected, "{}", y.payload);
        // Everything but `ts` is the same message.
        let strip = |p: &str| {
            let mut v: serde_json::Value = serde_json::from_str(p).unwrap();
            v.as_object_mut().unwrap().remove("ts");
            v
        };
        assert_eq!(strip(&x.payload), strip(&y.payload));
    }
    // The whole typhoon's readings fall within its 60 s of wall time (and the devices' 2 s of skew).
    let last = b.iter().map(|m| ts(m)).max().unwrap();
    assert!(last <= wall_start_ms + 62_000, "{}", last - wall_start_ms);
}
