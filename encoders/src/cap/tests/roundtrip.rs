//! Property tests: whatever valid message we hold, writing and reading it gives it back unchanged, and (for a sample
//! of cases) the XSD accepts it.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use time::{OffsetDateTime, UtcOffset};

use super::xsd::xmllint;
use super::*;
use crate::cap::message::is_uri_reference;

/// Text with everything that needs care: markup characters, quotes, CJK, whitespace of all kinds, emoji.
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 &<>\"'\\]\\[{}:;/.,!?#%=+\\-\t\r\n颱風豪雨土石流警戒臺北高雄南投、，。（）°µ🌧]{0,60}"
}

/// URI-ish text with the characters validators care about; kept only when our anyURI check accepts it, so the
/// XSD property below also checks that check against libxml2.
fn uri() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        "https://[a-z]{1,10}\\.tw(:[0-9]{2,4})?/[a-zA-Z0-9颱風/._-]{0,20}(\\?[a-z]=[0-9]{1,3}(&[a-z]=[0-9]{1,3})?)?"
            .prop_map(Some),
        "([a-z][a-z0-9+.-]{0,5}:)?(//[a-z0-9.:@\\[\\]]{0,12})?[a-zA-Z0-9/?#%:@!$&'()*+,;=._~颱 \\[\\]-]{0,30}"
            .prop_map(|s| is_uri_reference(&s).then_some(s)),
    ]
}

fn ident() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:@\\-]{1,24}"
}

fn cap_time() -> impl Strategy<Value = OffsetDateTime> {
    // Years 1900-2200; offsets in whole minutes within ±14:00, including zero (written -00:00).
    (-2_208_988_800i64..7_258_118_400i64, -840i32..=840).prop_map(|(secs, minutes)| {
        let offset = UtcOffset::from_whole_seconds(minutes * 60).unwrap_or(UtcOffset::UTC);
        OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH).to_offset(offset)
    })
}

fn pick<T: Copy + std::fmt::Debug + 'static>(all: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(all)
}

fn pair() -> impl Strategy<Value = ValuePair> {
    (text(), text()).prop_map(|(n, v)| ValuePair::new(n, v))
}

fn point() -> impl Strategy<Value = (f64, f64)> {
    (-90.0f64..=90.0, -180.0f64..=180.0)
}

fn polygon() -> impl Strategy<Value = Polygon> {
    vec(point(), 3..8).prop_filter_map("ring", |pts| Polygon::from_ring(pts).ok())
}

fn circle() -> impl Strategy<Value = Circle> {
    (point(), 0.0f64..500.0).prop_filter_map("circle", |((lat, lon), r)| Circle::new(lat, lon, r).ok())
}

fn area() -> impl Strategy<Value = CapArea> {
    (
        text(),
        vec(polygon(), 0..3),
        vec(circle(), 0..2),
        vec(pair(), 0..3),
        option::of(-1e4f64..1e5),
        0.0f64..1e4,
        any::<bool>(),
    )
        .prop_map(|(area_desc, polygons, circles, geocodes, altitude, extra, with_ceiling)| CapArea {
            area_desc,
            polygons,
            circles,
            geocodes,
            altitude,
            ceiling: altitude.filter(|_| with_ceiling).map(|a| a + extra),
        })
}

fn resource() -> impl Strategy<Value = CapResource> {
    (text(), text(), option::of(any::<u64>()), uri(), option::of(text()), option::of(text())).prop_map(
        |(resource_desc, mime_type, size, uri, deref_uri, digest)| CapResource {
            resource_desc,
            mime_type,
            size,
            uri,
            deref_uri,
            digest,
        },
    )
}

fn info() -> impl Strategy<Value = CapInfo> {
    let head = (
        pick(&["zh-TW", "en-US", "en", "zh-Hant-TW"]),
        vec(pick(Category::ALL), 1..3),
        text(),
        vec(pick(ResponseType::ALL), 0..3),
        pick(Urgency::ALL),
        pick(Severity::ALL),
        pick(Certainty::ALL),
        option::of(text()),
        vec(pair(), 0..3),
        (option::of(cap_time()), option::of(cap_time()), option::of(cap_time())),
    );
    let tail = (
        (option::of(text()), option::of(text()), option::of(text()), option::of(text())),
        (uri(), option::of(text())),
        vec(pair(), 0..3),
        vec(resource(), 0..2),
        vec(area(), 0..3),
    );
    (head, tail).prop_map(
        |(
            (language, categories, event, response_types, urgency, severity, certainty, audience, event_codes, times),
            ((sender_name, headline, description, instruction), (web, contact), parameters, resources, areas),
        )| CapInfo {
            language: language.to_string(),
            categories,
            event,
            response_types,
            urgency,
            severity,
            certainty,
            audience,
            event_codes,
            effective: times.0,
            onset: times.1,
            expires: times.2,
            sender_name,
            headline,
            description,
            instruction,
            web,
            contact,
            parameters,
            resources,
            areas,
        },
    )
}

fn reference() -> impl Strategy<Value = Reference> {
    (ident(), ident(), cap_time()).prop_map(|(sender, identifier, sent)| Reference { sender, identifier, sent })
}

fn alert() -> impl Strategy<Value = CapAlert> {
    (
        (ident(), ident(), cap_time(), pick(Status::ALL), pick(MsgType::ALL), option::of(text()), pick(Scope::ALL)),
        (option::of(text()), option::of(text()), vec(text(), 0..3), option::of(text())),
        (vec(reference(), 0..3), option::of(text()), vec(info(), 0..3)),
    )
        .prop_map(
            |(
                (identifier, sender, sent, status, msg_type, source, scope),
                (restriction, addresses, codes, note),
                (references, incidents, infos),
            )| CapAlert {
                identifier,
                sender,
                sent,
                status,
                msg_type,
                source,
                // The scope rules need these present; fill them rather than filter most cases away.
                restriction: if scope == Scope::Restricted { restriction.or(Some(String::new())) } else { restriction },
                addresses: if scope == Scope::Private { addresses.or(Some(String::new())) } else { addresses },
                scope,
                codes,
                note,
                references,
                incidents,
                infos,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn write_then_parse_is_identity(alert in alert()) {
        let xml = write_alert(&alert).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = CapAlert::from_xml(&xml).map_err(|e| TestCaseError::fail(format!("{e}\n{xml}")))?;
        // OffsetDateTime equality compares instants; the offset must survive too.
        prop_assert_eq!(back.sent.offset(), alert.sent.offset());
        prop_assert_eq!(back, alert);
    }

    #[test]
    fn build_write_parse_is_identity(
        event_type in pick(&["heavy_rain", "debris_flow", "river_level", "landslide", "road_flood", "hazmat_geofence", "sensor_silent", "air_quality"]),
        status in pick(Status::ALL),
        msg_type in pick(&[MsgType::Alert, MsgType::Update, MsgType::Cancel]),
        sent in cap_time(),
        expires in option::of(cap_time()),
        value in text(),
        refs in vec(reference(), 1..3),
    ) {
        let mut input = sample_input();
        input.event_type = event_type.to_string();
        input.status = status;
        input.msg_type = msg_type;
        input.sent = sent;
        input.expires = expires;
        input.references = refs;
        input.values.insert("rain_24h_mm".into(), value);
        let alert = build_alert(&input, &templates()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(alert.infos.iter().all(|i| i.effective.is_none() || i.effective.map(|t| t.offset()) == Some(TAIWAN_OFFSET)));
        prop_assert_eq!(alert.sent.offset(), TAIWAN_OFFSET);
        let xml = write_alert(&alert).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = CapAlert::from_xml(&xml).map_err(|e| TestCaseError::fail(format!("{e}\n{xml}")))?;
        prop_assert_eq!(back, alert);
    }
}

proptest! {
    // Each case starts xmllint, so fewer of them.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_messages_pass_the_xsd(alert in alert()) {
        let xml = write_alert(&alert).map_err(|e| TestCaseError::fail(e.to_string()))?;
        xmllint(&xml).map_err(|e| TestCaseError::fail(format!("{e}\n{xml}")))?;
    }
}
