//! The builder and the shipped templates: Taiwan conventions, drills, cancels, and template errors.

use time::macros::datetime;

use super::*;

#[test]
fn shipped_templates_cover_required_event_types() {
    let t = templates();
    assert_eq!(t.languages(), ["zh-TW", "en-US"]);
    for event_type in
        ["heavy_rain", "debris_flow", "river_level", "landslide", "road_flood", "hazmat_geofence", "sensor_silent"]
    {
        let e = t.event(event_type).unwrap_or_else(|err| panic!("{err}"));
        assert!(!e.categories.is_empty());
        for lang in t.languages() {
            let text = &e.texts[lang];
            assert!(!text.event.is_empty() && !text.headline.is_empty() && !text.instruction.is_empty());
        }
    }
}

#[test]
fn taiwan_conventions() {
    let a = build(&CapInput { level: Some("red".into()), ..sample_input() });
    assert_eq!(a.scope, Scope::Public);
    assert_eq!(a.infos.len(), 2);
    assert_eq!(a.infos[0].language, "zh-TW", "zh-TW info first");
    assert_eq!(a.infos[1].language, "en-US");
    assert_eq!(a.infos[0].event_codes[0], ValuePair::new(TW_EVENT_CODE_NAME, "debrisFlow"));
    assert_eq!(a.infos[0].areas[0].geocodes[0], ValuePair::new(TW_GEOCODE_NAME, "1000813"));
    assert_eq!(a.infos[0].areas[0].area_desc, "南投縣信義鄉神木村");
    assert_eq!(a.infos[1].areas[0].area_desc, "Shenmu Village, Xinyi Township, Nantou County");
    assert_eq!(a.infos[0].headline.as_deref(), Some("南投縣信義鄉神木村土石流紅色警戒"));
    assert!(a.infos[0].description.as_deref().is_some_and(|d| d.contains("356毫米") && d.contains("300毫米")));
    assert_eq!(a.infos[0].categories, [Category::Geo]);
    assert_eq!(a.infos[0].response_types, [ResponseType::Evacuate]);
    assert_eq!(a.note, None, "an Actual message carries no drill note");
    // UTC input with milliseconds: written in Taiwan time, whole seconds.
    assert_eq!(a.sent, datetime!(2026-11-26 18:00:00 +8));
    assert_eq!(a.sent.offset(), TAIWAN_OFFSET);
    assert_eq!(format_cap_time(a.sent).as_deref(), Ok("2026-11-26T18:00:00+08:00"));
}

#[test]
fn per_level_texts_are_checked() {
    let base = super::TEMPLATES_TOML;
    let mut input = sample_input();
    input.level = Some("orange".into());
    let err = build_alert(&input, &templates()).unwrap_err();
    assert!(err.to_string().contains("orange") && err.to_string().contains("debris_flow"), "{err}");
    // A level text in one language only: refused at load, naming the event, level and language.
    let one_language = base.replace("[event.debris_flow.level.yellow.en-US]", "[event.debris_flow.level.yellow.en-GB]");
    let err = Templates::from_toml_str(&one_language).unwrap_err().to_string();
    assert!(err.contains("debris_flow.level.yellow") && err.contains("en-US"), "{err}");
    let typo = base.replacen("headline = \"{area}土石流黃色警戒\"", "headlin = \"x\"", 1);
    assert_ne!(typo, base);
    let err = Templates::from_toml_str(&typo).unwrap_err().to_string();
    assert!(err.contains("level.yellow") && err.contains("headlin"), "{err}");
}

#[test]
fn language_specific_values() {
    let mut input = sample_input();
    input.event_type = "river_level".into();
    let a = build(&input);
    assert!(a.infos[0].description.as_deref().is_some_and(|d| d.starts_with("玉峰橋水位站")));
    assert!(a.infos[1].description.as_deref().is_some_and(|d| d.starts_with("The Yufeng Bridge gauge")));
}

#[test]
fn drills_and_tests_never_look_real() {
    for (status, zh, en) in [(Status::Exercise, "[演練]", "[Drill] "), (Status::Test, "[測試]", "[Test] ")] {
        let mut input = sample_input();
        input.status = status;
        let a = build(&input);
        assert_eq!(a.status, status);
        assert!(a.note.as_deref().is_some_and(|n| !n.is_empty()));
        for (info, prefix) in a.infos.iter().zip([zh, en]) {
            assert!(info.headline.as_deref().is_some_and(|h| h.starts_with(prefix)), "{:?}", info.headline);
            assert!(info.description.as_deref().is_some_and(|h| h.starts_with(prefix)));
        }
    }
}

#[test]
fn cancel_uses_cancel_texts() {
    let mut input = sample_input();
    input.msg_type = MsgType::Cancel;
    input.references = vec![Reference {
        sender: input.sender.clone(),
        identifier: "X-1".into(),
        sent: datetime!(2026-11-26 17:00 +8),
    }];
    let a = build(&input);
    assert_eq!(a.infos[0].response_types, [ResponseType::AllClear]);
    assert_eq!(a.infos[0].headline.as_deref(), Some("南投縣信義鄉神木村土石流警戒解除"));
    assert_eq!(
        a.infos[1].headline.as_deref(),
        Some("Debris Flow warning lifted: Shenmu Village, Xinyi Township, Nantou County")
    );
}

/// A hazard that is over: an Update with the end texts and AllClear (CAP 1.2 responseType), not a Cancel.
#[test]
fn an_all_clear_update_uses_the_end_texts_and_says_all_clear() {
    let mut input = sample_input();
    input.msg_type = MsgType::Update;
    input.all_clear = true;
    input.references = vec![Reference {
        sender: input.sender.clone(),
        identifier: "X-1".into(),
        sent: datetime!(2026-11-26 17:00 +8),
    }];
    let a = build(&input);
    assert_eq!(a.msg_type, MsgType::Update);
    assert_eq!(a.infos[0].response_types, [ResponseType::AllClear]);
    assert_eq!(a.infos[0].headline.as_deref(), Some("南投縣信義鄉神木村土石流警戒解除"));
    // Without the flag, an Update is an ordinary update.
    input.all_clear = false;
    assert_ne!(build(&input).infos[0].response_types, [ResponseType::AllClear]);
}

#[test]
fn update_and_cancel_need_references() {
    for msg_type in [MsgType::Update, MsgType::Cancel] {
        let mut input = sample_input();
        input.msg_type = msg_type;
        assert_eq!(build_alert(&input, &templates()), Err(BuildError::MissingReferences { msg_type }));
    }
}

#[test]
fn template_errors_name_event_and_key() {
    let mut input = sample_input();
    input.values.remove("threshold_mm");
    let err = build_alert(&input, &templates()).unwrap_err();
    assert_eq!(
        err,
        BuildError::Template(TemplateError::UnknownPlaceholder {
            event_type: "debris_flow".into(),
            language: "zh-TW".into(),
            field: "description",
            placeholder: "threshold_mm".into(),
        })
    );
    assert!(err.to_string().contains("debris_flow") && err.to_string().contains("{threshold_mm}"), "{err}");

    input.event_type = "volcano".into();
    let err = build_alert(&input, &templates()).unwrap_err();
    assert_eq!(err, BuildError::Template(TemplateError::UnknownEventType { event_type: "volcano".into() }));
    assert!(err.to_string().contains("volcano"));
}

#[test]
fn input_errors() {
    let mut input = sample_input();
    input.areas.clear();
    assert_eq!(build_alert(&input, &templates()), Err(BuildError::NoArea));

    let mut input = sample_input();
    input.areas[0].geocodes.push("10008-13".into());
    assert_eq!(build_alert(&input, &templates()), Err(BuildError::BadGeocode("10008-13".into())));

    let mut input = sample_input();
    input.identifier = "has space".into();
    assert!(matches!(
        build_alert(&input, &templates()),
        Err(BuildError::Invalid(InvalidMessage::BadIdentifier { .. }))
    ));

    let mut input = sample_input();
    input.values.insert("rain_24h_mm".into(), "35\u{0}6".into());
    input.event_type = "heavy_rain".into();
    let err = build_alert(&input, &templates()).unwrap_err();
    assert!(matches!(&err, BuildError::Invalid(InvalidMessage::ControlChar { code: 0, .. })), "{err}");
}
