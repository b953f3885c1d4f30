//! `config.example.toml` is what the lead copies into the binary's config: it must parse and hold the defaults.

use store::{InfluxConfig, SpoolFullPolicy, StoreConfig};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Example {
    store: StoreConfig,
    influx: InfluxConfig,
}

#[test]
fn the_example_parses_and_shows_the_defaults() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml")).unwrap();
    let example: Example = toml::from_str(&text).unwrap();
    assert_eq!(example.store, StoreConfig::default());
    let defaults = InfluxConfig::new("http://127.0.0.1:8086", "ndrc", "readings", "");
    assert_eq!(example.influx, defaults);
    assert_eq!(example.influx.on_spool_full, SpoolFullPolicy::DropOldest);
}

#[test]
fn a_misspelt_key_names_itself() {
    let e = toml::from_str::<Example>("[store]\nretention_day = 3\n[influx]\nurl='http://x'\norg='o'\nbucket='b'\n")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("retention_day"), "{e}");
}
