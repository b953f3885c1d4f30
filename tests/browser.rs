//! The pages in a real browser (issue 26): Playwright (PyPI, in the project's `.venv`) drives Debian's `chromium`
//! against the real binary, offline: every request that leaves 127.0.0.1 is refused. The checks themselves are the
//! Python scripts under `tests/playwright/` (what they check is written at their top); this file starts the server,
//! hands them its addresses and credentials, and fails with their output. Screenshots are kept as test artifacts in
//! `target/test-artifacts/`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{device_password, Server, TOKEN};

/// The operators' map runs against `serve` with the demo's data as a drill and a second, read-only token.
const VIEWER_TOKEN: &str = "browser-viewer-token";

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
    let config = common::config_copy("browser-scopes", |t| {
        format!(
            "{t}\n[[operator_tokens]]\nname = \"viewer\"\nscope = \"read\"\nsha256 = \"{}\"\n",
            common::sha256_hex(VIEWER_TOKEN)
        )
    });
    let server = Server::serve(&config);
    run("operator_map.py", &server, &[("DC_TOKEN", TOKEN), ("DC_VIEWER_TOKEN", VIEWER_TOKEN)]);
}

#[test]
fn citizen_app_at_360_px_offline_in_chromium() {
    let server = Server::start();
    run("citizen_app.py", &server, &[]);
}
