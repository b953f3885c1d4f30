//! Fuzz target bodies for every decoder of outside input (issue 13).
//!
//! Layout:
//! - [`targets`]: one `pub fn <target>(data: &[u8])` per libFuzzer target; `fuzz_targets/<target>.rs` is a one-line
//!   wrapper around it. Each calls the real library function and asserts what must hold for *any* input
//!   (no panic, bounded output, and for encoders: decode(encode(x)) == x).
//! - [`gen`]: builders of structured values (CAP messages, cell-broadcast texts, SBc-AP areas) from raw fuzzer bytes
//!   through `arbitrary::Unstructured`, for the round-trip targets.
//! - [`aper`]: a small aligned-PER reader, used only to check the SBc-AP PDUs our encoder writes.
//! - [`TARGETS`]: name → function, for the corpus-replay test (`tests/replay.rs`) that runs on stable `cargo test`.
//!
//! Why the bodies live in a library: the same code runs under libFuzzer (`cargo fuzz run`) and under the plain test
//! harness that replays `corpus/<target>/*` and `artifacts/<target>/*`, so CI does not need the fuzz toolchain to
//! catch a regression on a known input.

pub mod aper;
pub mod gen;
pub mod targets;

/// A target body: raw fuzzer input in, panic on a broken property.
pub type Target = fn(&[u8]);

/// Every target, by the name of its binary and corpus folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("ingest_topic", targets::ingest_topic),
    ("ingest_payload", targets::ingest_payload),
    ("ingest_process", targets::ingest_process),
    ("ingest_sensors_toml", targets::ingest_sensors_toml),
    ("ingest_devices_toml", targets::ingest_devices_toml),
    ("alerting_rules_toml", targets::alerting_rules_toml),
    ("alerting_cap_parse", targets::alerting_cap_parse),
    ("alerting_cap_roundtrip", targets::alerting_cap_roundtrip),
    ("alerting_cbs_roundtrip", targets::alerting_cbs_roundtrip),
    ("alerting_cbs_decode", targets::alerting_cbs_decode),
    ("alerting_sbcap_encode", targets::alerting_sbcap_encode),
    ("geo_zones_geojson", targets::geo_zones_geojson),
    ("geo_cell_sites_csv", targets::geo_cell_sites_csv),
    ("sim_scenario_toml", targets::sim_scenario_toml),
    ("app_config_toml", targets::app_config_toml),
    ("push_subscribe_body", targets::push_subscribe_body),
    ("app_report_body", targets::app_report_body),
    ("app_report_photo", targets::app_report_photo),
];
