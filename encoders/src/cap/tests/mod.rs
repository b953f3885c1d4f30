//! Cross-cutting tests of the CAP layer. Unit tests of one part live in that part's file.
//!
//! - `xsd`: every kind of message we produce validates against the OASIS CAP 1.2 XSD with `xmllint`.
//! - `roundtrip`: proptest — arbitrary message → write → parse → equal; build → write → parse → equal.
//! - `parse_errors`: each kind of bad inbound document gets its typed error, naming the element.
//! - `builder`: the shipped templates file, Taiwan conventions, drills, cancels, template errors.
//! - `feed`: the Atom feed.

mod builder;
mod feed;
mod parse_errors;
mod roundtrip;
/// The CAP XSD lookup and setup hint, shared with the dissemination and inbound tests.
pub(crate) mod xsd;

use std::collections::BTreeMap;

use time::macros::datetime;

use super::*;

/// The shipped templates file, compiled in so the tests check exactly what is deployed.
pub(crate) const TEMPLATES_TOML: &str = include_str!("../../../../config/cap_templates.toml");

pub(crate) fn templates() -> Templates {
    match Templates::from_toml_str(TEMPLATES_TOML) {
        Ok(t) => t,
        Err(e) => panic!("config/cap_templates.toml does not load: {e}"),
    }
}

/// Values every shipped template needs, so any event type can be built in tests.
pub(crate) fn all_values() -> BTreeMap<String, String> {
    crate::test_support::template_values()
}

pub(crate) fn shenmu_area() -> AreaInput {
    AreaInput {
        desc: Localized::new("南投縣信義鄉神木村", "Shenmu Village, Xinyi Township, Nantou County"),
        polygons: vec![Polygon::from_ring([(23.52, 120.88), (23.52, 120.95), (23.57, 120.95), (23.57, 120.88)])
            .expect("valid ring")],
        circles: vec![],
        geocodes: vec!["1000813".into()],
    }
}

pub(crate) fn sample_input() -> CapInput {
    CapInput {
        identifier: "TW-DC-20261126-0001".into(),
        sender: "alerts@disaster-cloud.example.tw".into(),
        sent: datetime!(2026-11-26 10:00:00.250 UTC),
        status: Status::Actual,
        msg_type: MsgType::Alert,
        all_clear: false,
        references: vec![],
        note: None,
        event_type: "debris_flow".into(),
        level: None,
        urgency: Urgency::Immediate,
        severity: Severity::Severe,
        certainty: Certainty::Observed,
        effective: None,
        onset: None,
        expires: Some(datetime!(2026-11-26 22:00 +8)),
        areas: vec![shenmu_area()],
        web: Some("https://alerts.example.tw/alerts/TW-DC-20261126-0001".into()),
        incidents: Some("TW-DC-20261126-0001".into()),
        values: all_values(),
        parameters: vec![],
    }
}

pub(crate) fn build(input: &CapInput) -> CapAlert {
    match build_alert(input, &templates()) {
        Ok(a) => a,
        Err(e) => panic!("build failed: {e}"),
    }
}

pub(crate) fn xml_of(alert: &CapAlert) -> String {
    match write_alert(alert) {
        Ok(x) => x,
        Err(e) => panic!("write failed: {e}"),
    }
}
