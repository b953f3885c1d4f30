//! The rules' view of the CAP templates: what a level of the shipped rules names (its `template`, its colour) must be
//! what the shipped templates say. The templates themselves are tested with the encoders (`encoders::cap`).

use encoders::cap::{
    build_alert, AreaInput, CapAlert, CapInput, Certainty, Localized, MsgType, Severity, Status, Templates, Urgency,
};
use time::macros::datetime;

use crate::rules::RuleContext;

fn templates() -> Templates {
    Templates::from_toml_str(include_str!("../../../config/cap_templates.toml"))
        .unwrap_or_else(|e| panic!("config/cap_templates.toml does not load: {e}"))
}

/// A debris-flow message for Shenmu village with every value the shipped templates ask for.
fn sample_input() -> CapInput {
    let values = encoders::test_support::template_values();
    CapInput {
        identifier: "TW-DC-20261126-0001".into(),
        sender: "alerts@disaster-cloud.example.tw".into(),
        sent: datetime!(2026-11-26 10:00:00 UTC),
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
        expires: None,
        areas: vec![AreaInput {
            desc: Localized::new("南投縣信義鄉神木村", "Shenmu Village, Xinyi Township, Nantou County"),
            polygons: vec![],
            circles: vec![],
            geocodes: vec!["1000813".into()],
        }],
        web: None,
        incidents: None,
        values,
        parameters: vec![],
    }
}

fn build(input: &CapInput) -> CapAlert {
    build_alert(input, &templates()).unwrap_or_else(|e| panic!("build failed: {e}"))
}

/// The debris-flow yellow alert once said 紅色 (red): one text served every level. Every level of the shipped rules
/// whose name carries a colour must build a CAP message whose headlines say that colour and no other.
#[test]
fn shipped_rule_levels_read_their_own_colour() {
    let rules = super::default_rules();
    let t = templates();
    rules
        .check_context(&RuleContext { inbound_sources: &["swcb".into()], templates: Some(&t) }, "r".as_ref())
        .unwrap_or_else(|e| panic!("{e}"));
    let colours = [("黃色", "yellow"), ("紅色", "red")];
    let mut checked = 0;
    for rule in &rules.rules {
        for level in &rule.levels {
            let Some((zh, en)) = colours.iter().find(|(zh, _)| level.name.contains(zh)) else { continue };
            let mut input = sample_input();
            input.event_type = rule.event.clone();
            input.level = level.template.clone();
            let a = build(&input);
            let headline_zh = a.infos[0].headline.clone().unwrap_or_default();
            let headline_en = a.infos[1].headline.clone().unwrap_or_default().to_lowercase();
            assert!(headline_zh.contains(zh), "{} `{}`: {headline_zh}", rule.id, level.name);
            assert!(headline_en.contains(en), "{} `{}`: {headline_en}", rule.id, level.name);
            for (other_zh, other_en) in colours.iter().filter(|(z, _)| z != zh) {
                assert!(!headline_zh.contains(other_zh), "{} `{}`: {headline_zh}", rule.id, level.name);
                assert!(!headline_en.contains(other_en), "{} `{}`: {headline_en}", rule.id, level.name);
            }
            checked += 1;
        }
    }
    assert!(checked >= 2, "the shipped debris-flow yellow and red levels");
    // Without a level text the event's own texts name no colour (operators' rain and wire signals use them).
    let mut input = sample_input();
    input.level = None;
    let headline = build(&input).infos[0].headline.clone().unwrap_or_default();
    assert!(!headline.contains("紅色") && !headline.contains("黃色"), "{headline}");
}
