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
fn run(script: &str, server: &Server, extra: &[(&str, &str)]) {
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
    run("operator_map.py", &server, &[("DC_TOKEN", TOKEN), ("DC_VIEWER_TOKEN", VIEWER_TOKEN)]);
}

#[test]
fn citizen_app_at_360_px_offline_in_chromium() {
    let server = Server::start();
    run("citizen_app.py", &server, &[]);
}
