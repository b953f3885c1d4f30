//! The Atom feed: structure read back with an XML parser, well-formedness checked by xmllint.

use quick_xml::events::Event;
use quick_xml::reader::Reader;
use time::macros::datetime;

use super::*;

fn sample_feed() -> AtomFeed {
    let alert = build(&CapInput { level: Some("red".into()), ..sample_input() });
    let mut drill_input = sample_input();
    drill_input.identifier = "TW-DC/drill#2".into();
    drill_input.status = Status::Exercise;
    let drill = build(&drill_input);
    AtomFeed {
        base_url: "https://alerts.example.tw/".into(),
        title: "災害應變雲端平台 警報 & alerts".into(),
        updated: datetime!(2026-11-26 10:00 UTC),
        author: "Disaster Relief Cloud".into(),
        entries: vec![AtomEntry::from_alert(&drill, "zh-TW"), AtomEntry::from_alert(&alert, "zh-TW")],
    }
}

/// (element path, attributes or text) of every element, in document order.
fn elements(xml: &str) -> Vec<(String, String)> {
    let mut reader = Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut out = Vec::new();
    loop {
        match reader.read_event().expect("feed is well-formed") {
            Event::Start(e) => {
                path.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                out.push((path.join("/"), String::new()));
            }
            Event::Empty(e) => {
                let attrs: Vec<String> = e
                    .attributes()
                    .map(|a| {
                        let a = a.expect("attribute");
                        format!("{}={}", String::from_utf8_lossy(a.key.as_ref()), a.unescape_value().expect("value"))
                    })
                    .collect();
                out.push((
                    format!("{}/{}", path.join("/"), String::from_utf8_lossy(e.name().as_ref())),
                    attrs.join(" "),
                ));
            }
            Event::Text(t) => {
                if let Some(last) = out.last_mut() {
                    last.1.push_str(&t.decode().expect("utf8"));
                }
            }
            Event::GeneralRef(r) => {
                if let Some(last) = out.last_mut() {
                    let s = match r.decode().expect("utf8").as_ref() {
                        "amp" => "&".to_string(),
                        "lt" => "<".to_string(),
                        other => format!("&{other};"),
                    };
                    last.1.push_str(&s);
                }
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    out
}

#[test]
fn feed_links_each_cap_file() {
    let xml = write_atom(&sample_feed()).expect("feed");
    let els = elements(&xml);
    let get = |p: &str| els.iter().filter(|(k, _)| k == p).map(|(_, v)| v.trim().to_string()).collect::<Vec<_>>();
    assert_eq!(get("feed/id"), ["https://alerts.example.tw/cap/feed.atom"]);
    assert_eq!(get("feed/title"), ["災害應變雲端平台 警報 & alerts"]);
    assert_eq!(get("feed/updated"), ["2026-11-26T10:00:00-00:00"]);
    assert_eq!(get("feed/author/name"), ["Disaster Relief Cloud"]);
    assert_eq!(get("feed/link"), ["rel=self type=application/atom+xml href=https://alerts.example.tw/cap/feed.atom"]);
    assert_eq!(
        get("feed/entry/link"),
        [
            "rel=alternate type=application/cap+xml href=https://alerts.example.tw/cap/TW-DC%2Fdrill%232.xml",
            "rel=alternate type=application/cap+xml href=https://alerts.example.tw/cap/TW-DC-20261126-0001.xml",
        ]
    );
    assert_eq!(get("feed/entry/id")[1], "https://alerts.example.tw/cap/TW-DC-20261126-0001.xml");
    assert_eq!(get("feed/entry/updated"), ["2026-11-26T18:00:00+08:00", "2026-11-26T18:00:00+08:00"]);
    let titles = get("feed/entry/title");
    assert!(titles[0].starts_with("[演練]"), "drill entry must say so: {}", titles[0]);
    assert_eq!(titles[1], "南投縣信義鄉神木村土石流紅色警戒");
    assert_eq!(get("feed/entry/author/name"), ["災害應變雲端平台", "災害應變雲端平台"]);
    assert_eq!(get("feed/entry/summary").len(), 2);
    assert!(xml.contains("<feed xmlns=\"http://www.w3.org/2005/Atom\">"));
    assert!(!xml.contains("Z</updated>"));
}

#[test]
fn feed_is_well_formed_for_xmllint() {
    let xml = write_atom(&sample_feed()).expect("feed");
    if let Err(e) = crate::test_support::xmllint(&xml, None) {
        panic!("{e}");
    }
}

#[test]
fn feed_rejects_bad_input() {
    let mut feed = sample_feed();
    for bad in ["alerts.example.tw", "ftp://x", "https://", "https://x/?q=1", "https://x/#f"] {
        feed.base_url = bad.into();
        assert!(matches!(write_atom(&feed), Err(AtomError::BadBaseUrl(_))), "{bad}");
    }
    let mut feed = sample_feed();
    feed.entries[0].title.push('\u{1b}');
    assert!(matches!(write_atom(&feed), Err(AtomError::Invalid(InvalidMessage::ControlChar { code: 0x1b, .. }))));
    let mut feed = sample_feed();
    feed.entries.clear();
    assert!(write_atom(&feed).is_ok(), "an empty feed is valid Atom");
}
