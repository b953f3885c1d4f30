//! The command line: every option explained with an example, exit codes, and `--plan-only` reproducible.

use std::path::PathBuf;
use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gateway-firmware-sim"))
        .args(args)
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn help_explains_every_option_with_an_example() {
    for sub in ["scenario", "load", "validate"] {
        let out = sim(&[sub, "--help"]);
        assert!(out.status.success());
        let help = text(&out);
        assert!(help.contains("Example"), "{sub}: no examples section");
        // Each option or argument line (except clap's own --help) carries an example.
        let entries: Vec<&str> = help
            .lines()
            .filter(|l| l.trim_start().starts_with("--") || l.trim_start().starts_with('<'))
            .filter(|l| !l.contains("--help"))
            .collect();
        assert!(!entries.is_empty(), "{sub}: {help}");
        for l in entries {
            assert!(l.contains("Example:"), "{sub}: option without example: {l}");
        }
    }
    let top = text(&sim(&["--help"]));
    assert!(top.contains("Exit status") && top.contains("Examples:"), "{top}");
}

#[test]
fn validate_accepts_the_shipped_scenarios_and_names_what_is_wrong() {
    let ok = sim(&["validate", "config/scenarios/typhoon.toml", "config/scenarios/quick.toml"]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("ok  config/scenarios/typhoon.toml: typhoon — 11 devices"), "{}", text(&ok));

    let dir = std::env::temp_dir().join(format!("gfs-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[scenario]\nname = \"x\"\nspan = \"1h\"\ncompression = 60.0\n[[track]]\ndevice = \"RG0001\"\nmetric = \"rain_mm\"\npoints = [[\"2h\", 1.0]]\n").unwrap();
    let out = sim(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("bad.toml: track[0].points[0]: time 2h is after the end of the scenario (1h)"),
        "{}",
        text(&out)
    );
    let _ = std::fs::remove_dir_all(dir);

    let missing = sim(&["validate", "no/such.toml"]);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn plan_only_is_the_same_for_the_same_seed() {
    let a = sim(&["scenario", "config/scenarios/quick.toml", "--plan-only", "--start", "2026-11-26T00:00:00+08:00"]);
    let b = sim(&["scenario", "config/scenarios/quick.toml", "--plan-only", "--start", "1795622400000"]);
    assert!(a.status.success(), "{}", text(&a));
    assert_eq!(
        String::from_utf8_lossy(&a.stdout),
        String::from_utf8_lossy(&b.stdout),
        "RFC 3339 and Unix ms name the same start"
    );
    let first: serde_json::Value = serde_json::from_slice(a.stdout.split(|c| *c == b'\n').next().unwrap()).unwrap();
    let payload: serde_json::Value = serde_json::from_str(first["payload"].as_str().unwrap()).unwrap();
    let at_ms = (first["at_s"].as_f64().unwrap() * 1000.0).round() as i64;
    assert_eq!(payload["ts"].as_i64().unwrap(), 1_795_622_400_000 + at_ms, "quick.toml has no clock skew");
    let other =
        sim(&["scenario", "config/scenarios/quick.toml", "--plan-only", "--start", "1795622400000", "--seed", "2"]);
    assert_ne!(a.stdout, other.stdout);
}

#[test]
fn missing_acknowledgements_exit_non_zero() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let out =
        sim(&["load", "--port", &port, "--connections", "1", "--duration", "1s", "--drain-timeout", "1s", "--quiet"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("MISSING  1 connections never connected"), "{}", text(&out));
    let bad = sim(&["load", "--connections", "0"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).contains("option connections: must be at least 1"), "{}", text(&bad));
}
