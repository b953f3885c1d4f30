//! The pages in a real browser (issue 26): Playwright (PyPI, in the project's `.venv`) drives Debian's `chromium`
//! against the real binary, offline: every request that leaves 127.0.0.1 is refused. The checks themselves are the
//! Python scripts under `tests/playwright/` (what they check is written at their top); this file starts the server,
//! hands them its addresses and credentials, and fails with their output. Screenshots are kept as test artifacts in
//! `target/test-artifacts/`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{device_password, http_request, Server, TOKEN};

/// The operators' map runs against `serve` with the demo's data as a drill and a second, read-only token.
const VIEWER_TOKEN: &str = "browser-viewer-token";

/// The slope agency (SWCB) pushes its CAP warnings: the partner warning the map must draw.
const SWCB_PUSH: &str = "[[push]]\nname = \"swcb\"\ntoken_env = \"DC_TEST_TOKEN\"\npublic = true\nmax_bytes = 65536\nsenders = [\"swcb@swcb.gov.tw\"]\n";
const SWCB_YELLOW: &str = include_str!("../inbound/src/tests/fixtures/swcb_debris_flow_yellow.xml");
/// What the partner's headline carries: markup that would run if a page set it as HTML.
const HOSTILE_HEADLINE: &str = "<img src=x onerror=\"window.__xss=2\">土石流黃色警戒";

/// SWCB's yellow debris-flow warning for Xinyi, sent a minute ago, its zh-TW headline made hostile (escaped in XML:
/// the partner's text itself is the markup).
fn partner_warning() -> String {
    let escaped =
        HOSTILE_HEADLINE.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    SWCB_YELLOW
        .replace("2026-11-26T19:00:00+08:00", &common::cap_time(-60))
        .replace("2026-11-27T07:00:00+08:00", &common::cap_time(6 * 3600))
        .replace("<headline>土石流黃色警戒</headline>", &format!("<headline>{escaped}</headline>"))
}

fn python() -> std::path::PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/test, which makes the venv and installs Playwright and Pillow",
        venv.display()
    );
    venv
}

/// Runs `tests/playwright/<script>` with the server's addresses; panics with its output when a check fails.
fn run_script(script: &str, server: &Server, extra: &[(&str, &str)]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let artifacts = root.join("target/test-artifacts");
    let mut command = Command::new(python());
    command
        .arg(root.join("tests/playwright").join(script))
        .current_dir(root.join("tests/playwright"))
        .env("DC_URL", format!("http://{}", server.http))
        .env("DC_MQTT_PORT", server.mqtt.port().to_string())
        .env("DC_DEVICE", "RG0001")
        .env("DC_DEVICE_PASSWORD", device_password("RG0001"))
        .env("DC_ARTIFACTS", &artifacts)
        // Playwright must not look for (or fetch) a browser of its own: the scripts name Debian's.
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1");
    for (name, value) in extra {
        command.env(name, value);
    }
    let out = command.output().expect("the venv's python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}\nserver log:\n{}", server.log());
}

#[test]
fn operator_map_offline_in_chromium() {
    // `public_url` at the port it listens on: the carriers' CBC envelopes reach its own demo receivers and are
    // acknowledged, so that the map has broadcasts on the air to draw.
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port()).parse().unwrap();
    let mqtt: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port()).parse().unwrap();
    let config = common::config_copy("browser-scopes", |t| {
        format!(
            "{}\n[[operator_tokens]]\nname = \"viewer\"\nscope = \"read\"\nsha256 = \"{}\"\n",
            t.replace("public_url = \"http://127.0.0.1:8080\"", &format!("public_url = \"http://{http}\"")),
            common::sha256_hex(VIEWER_TOKEN)
        )
    });
    std::fs::write(config.with_file_name("inbound.toml"), SWCB_PUSH).unwrap();
    let data_dir = std::env::temp_dir().join(format!("dc-browser-{}-{}", std::process::id(), http.port()));
    let server = Server::serve_again_at(&config, &data_dir, mqtt, http);
    let (status, reply) = http_request(
        server.http,
        "POST",
        "/api/v1/cap/inbound",
        Some(common::TEST_TOKEN_ENV.1),
        Some(&partner_warning()),
    )
    .expect("the partner's push is answered");
    assert_eq!(status, 200, "{reply}");
    run_script("operator_map.py", &server, &[("DC_TOKEN", TOKEN), ("DC_VIEWER_TOKEN", VIEWER_TOKEN)]);
}

/// Cause and effect on the map (issue 28): PH21 blocked by the landslide beside a tilting slope, the road left closed
/// (`ph21-landslide-closed.toml`, 54 min of scenario time in 54 s), then `traffic_map.py` checks the arrow from the
/// slope to the road and the detail panels' links between the two alerts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_map_draws_a_blocked_road_linked_to_its_cause_in_chromium() {
    let server = Server::start();
    let scenario = gateway_firmware_sim::Scenario::from_toml(
        include_str!("../config/scenarios/ph21-landslide-closed.toml"),
        "ph21-landslide-closed.toml",
    )
    .unwrap();
    let fleet = gateway_firmware_sim::Fleet::from_files(
        include_str!("../config/sensors.toml"),
        include_str!("../config/devices.toml"),
    )
    .unwrap();
    // Stamped so that the last reading is about now: the evidence is fresh when the page opens.
    let span = scenario.span.as_millis() as i64;
    let opts = gateway_firmware_sim::RunOptions {
        host: server.mqtt.ip().to_string(),
        port: server.mqtt.port(),
        quiet: true,
        start_ts_ms: common::now_ms() - span + (span as f64 / scenario.compression) as i64,
        ..gateway_firmware_sim::RunOptions::for_scenario(&scenario)
    };
    let run = gateway_firmware_sim::run_scenario(&fleet, &scenario, &opts).await;
    assert!(run.is_ok(), "the scenario ran: {:?}; log:\n{}", run.err(), server.log());
    // The road alert is raised by the readings' last minutes; give the hot path a moment under load.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, body) = common::http_get(server.http, "/api/v1/alerts", Some(TOKEN)).unwrap_or_default();
        if body.contains("road-blocked-by-hazard") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no road-blocked-by-hazard alert: {body}\n{}", server.log());
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    tokio::task::block_in_place(|| run_script("traffic_map.py", &server, &[("DC_TOKEN", TOKEN)]));
}

#[test]
fn citizen_app_at_360_px_offline_in_chromium() {
    let server = Server::start();
    run_script("citizen_app.py", &server, &[]);
}
