//! Bad inbound documents: each gets its own typed error that names the element, and nothing panics.

use super::*;

/// A minimal valid message to mutate.
const GOOD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>CWA-EQ-001</identifier>
  <sender>cwa@cwa.gov.tw</sender>
  <sent>2026-11-26T18:00:00+08:00</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <language>zh-TW</language>
    <category>Met</category>
    <event>豪雨</event>
    <urgency>Expected</urgency>
    <severity>Severe</severity>
    <certainty>Likely</certainty>
    <eventCode><valueName>profile:CAP-TWP:Event:1.0</valueName><value>rainfall</value></eventCode>
    <expires>2026-11-27T06:00:00+08:00</expires>
    <area>
      <areaDesc>南投縣信義鄉</areaDesc>
      <polygon>23.5,120.8 23.5,121.0 23.7,121.0 23.5,120.8</polygon>
      <geocode><valueName>Taiwan_Geocode_103</valueName><value>1000813</value></geocode>
    </area>
  </info>
</alert>"#;

fn parse(xml: &str) -> Result<CapAlert, ParseError> {
    CapAlert::from_xml(xml)
}

fn with(from: &str, to: &str) -> Result<CapAlert, ParseError> {
    assert!(GOOD.contains(from), "test bug: {from} not in sample");
    parse(&GOOD.replacen(from, to, 1))
}

#[test]
fn good_sample_parses_and_validates() {
    let a = parse(GOOD).expect("good sample");
    assert_eq!(a.infos[0].areas[0].polygons[0].points().len(), 4);
    assert_eq!(a.infos[0].areas[0].geocodes[0], ValuePair::new(TW_GEOCODE_NAME, "1000813"));
    super::xsd::xmllint(GOOD).expect("sample is XSD-valid");
}

#[test]
fn prefixed_namespace_and_signature_are_accepted() {
    // Every element as `cap:name`, the namespace bound to the prefix instead of the default.
    let prefixed = GOOD
        .replace("<alert xmlns=", "<alert xmlns:cap=")
        .replace("</", "\u{1}")
        .replace("<?", "\u{2}")
        .replace('<', "<cap:")
        .replace('\u{1}', "</cap:")
        .replace('\u{2}', "<?");
    let a = parse(&prefixed).unwrap_or_else(|e| panic!("{e}\n{prefixed}"));
    assert_eq!(a, parse(GOOD).expect("good"));
    let signed = GOOD.replace(
        "</info>\n</alert>",
        "</info>\n<Signature xmlns=\"http://www.w3.org/2000/09/xmldsig#\"><SignedInfo/></Signature>\n</alert>",
    );
    assert!(parse(&signed).is_ok());
}

#[test]
fn invalid_xml() {
    for bad in ["", "not xml", "<alert xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\">", "<a></b>"] {
        assert!(matches!(parse(bad), Err(ParseError::InvalidXml { .. })), "{bad:?}: {:?}", parse(bad));
    }
    assert!(matches!(with("<status>", "<status>&bogus;"), Err(ParseError::InvalidXml { .. })));
    assert!(matches!(with("</event>", "&#7;</event>"), Err(ParseError::InvalidXml { .. })));
    let doctype = GOOD.replacen("<alert", "<!DOCTYPE alert [<!ENTITY x \"y\">]>\n<alert", 1);
    let err = parse(&doctype).unwrap_err();
    assert!(err.to_string().contains("DOCTYPE"), "{err}");
    assert!(matches!(
        CapAlert::from_xml("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><alert/>"),
        Err(ParseError::InvalidXml { .. })
    ));
    assert!(matches!(parse_alert(b"<alert>\xff</alert>"), Err(ParseError::InvalidXml { .. })));
}

#[test]
fn wrong_namespace_or_root() {
    let v11 = GOOD.replace("cap:1.2", "cap:1.1");
    assert!(matches!(parse(&v11), Err(ParseError::NotCap { .. })));
    assert!(matches!(parse("<feed xmlns=\"http://www.w3.org/2005/Atom\"/>"), Err(ParseError::NotCap { .. })));
}

#[test]
fn missing_required_element_is_named() {
    let err = with("<msgType>Alert</msgType>", "").unwrap_err();
    assert_eq!(err, ParseError::Missing { at: "alert".into(), element: "msgType" });
    let err = with("<urgency>Expected</urgency>", "").unwrap_err();
    assert_eq!(err, ParseError::Missing { at: "alert/info[0]".into(), element: "urgency" });
    let err = with("<category>Met</category>", "").unwrap_err();
    assert_eq!(err, ParseError::Missing { at: "alert/info[0]".into(), element: "category" });
    let err = with("<areaDesc>南投縣信義鄉</areaDesc>", "").unwrap_err();
    assert_eq!(err, ParseError::Missing { at: "alert/info[0]/area[0]".into(), element: "areaDesc" });
    assert!(err.to_string().contains("areaDesc"));
}

#[test]
fn order_and_unknown_elements() {
    let err = with("<sender>cwa@cwa.gov.tw</sender>\n", "").map(|_| ()).unwrap_err();
    assert_eq!(err, ParseError::Missing { at: "alert".into(), element: "sender" });
    let swapped = GOOD.replacen(
        "<identifier>CWA-EQ-001</identifier>\n  <sender>cwa@cwa.gov.tw</sender>",
        "<sender>cwa@cwa.gov.tw</sender>\n  <identifier>CWA-EQ-001</identifier>",
        1,
    );
    assert!(matches!(parse(&swapped), Err(ParseError::OutOfOrder { .. })), "{:?}", parse(&swapped));
    let err = with("<scope>Public</scope>", "<scope>Public</scope><colour>red</colour>").unwrap_err();
    assert!(matches!(&err, ParseError::Unexpected { element, .. } if element == "colour"), "{err}");
    let err = with("<scope>Public</scope>", "<scope>Public</scope><scope>Public</scope>").unwrap_err();
    assert!(matches!(&err, ParseError::Unexpected { element, .. } if element == "scope"), "{err}");
    let err = with("<event>豪雨</event>", "<event>豪雨<b>!</b></event>").unwrap_err();
    assert!(matches!(err, ParseError::BadContent { .. }), "{err}");
    let err = with("<scope>Public</scope>", "<scope>Public</scope>stray text").unwrap_err();
    assert!(matches!(err, ParseError::BadContent { .. }), "{err}");
}

#[test]
fn bad_enumeration_is_named() {
    let err = with("<status>Actual</status>", "<status>Real</status>").unwrap_err();
    assert_eq!(err, ParseError::BadEnum { at: "alert/status".into(), element: "status", value: "Real".into() });
    let err = with("<severity>Severe</severity>", "<severity>severe</severity>").unwrap_err();
    assert!(matches!(&err, ParseError::BadEnum { element: "severity", value, .. } if value == "severe"), "{err}");
    let err = with("<category>Met</category>", "<category>Weather</category>").unwrap_err();
    assert!(err.to_string().contains("category"), "{err}");
    // Surrounding whitespace from pretty-printers is tolerated.
    assert!(with("<status>Actual</status>", "<status>\n  Actual\n</status>").is_ok());
}

#[test]
fn polygon_rules() {
    let poly = "23.5,120.8 23.5,121.0 23.7,121.0 23.5,120.8";
    let at = "alert/info[0]/area[0]/polygon[0]".to_string();
    let err = with(poly, "23.5,120.8 23.5,121.0 23.7,121.0 23.6,120.8").unwrap_err();
    assert!(
        matches!(&err, ParseError::Geometry { at: a, source: GeometryError::NotClosed { .. } } if *a == at),
        "{err}"
    );
    let err = with(poly, "23.5,120.8 23.5,121.0 23.5,120.8").unwrap_err();
    assert!(matches!(err, ParseError::Geometry { source: GeometryError::TooFewPoints(3), .. }), "{err}");
    let err = with(poly, "93.5,120.8 23.5,121.0 23.7,121.0 93.5,120.8").unwrap_err();
    assert!(matches!(err, ParseError::Geometry { source: GeometryError::OutOfRange { .. }, .. }), "{err}");
    let err = with(poly, "120.8,23.5 121.0,23.5 121.0,23.7 120.8,23.5").unwrap_err();
    assert!(
        matches!(err, ParseError::Geometry { source: GeometryError::OutOfRange { .. }, .. }),
        "lon,lat swapped: {err}"
    );
    let err = with("</polygon>", "</polygon><circle>23.6,120.9</circle>").unwrap_err();
    assert!(matches!(err, ParseError::Geometry { source: GeometryError::BadCircle(_), .. }), "{err}");
}

#[test]
fn time_rules() {
    let err = with("2026-11-26T18:00:00+08:00", "2026-11-26T10:00:00Z").unwrap_err();
    assert!(matches!(&err, ParseError::Time { at, source: TimeError::Zulu(_) } if at == "alert/sent"), "{err}");
    let err = with("2026-11-27T06:00:00+08:00", "2026-11-27T06:00:00").unwrap_err();
    assert!(
        matches!(&err, ParseError::Time { at, source: TimeError::NoOffset(_) } if at == "alert/info[0]/expires"),
        "{err}"
    );
    let err = with("2026-11-27T06:00:00+08:00", "2026-11-27T06:00:00.000+08:00").unwrap_err();
    assert!(matches!(err, ParseError::Time { source: TimeError::Fractional(_), .. }), "{err}");
}

#[test]
fn references_and_identifiers() {
    let refs = |r: &str| with("<scope>Public</scope>", &format!("<scope>Public</scope><references>{r}</references>"));
    let ok = refs("a@b,ID-1,2026-11-26T17:00:00+08:00  a@b,ID-2,2026-11-26T17:30:00-00:00").expect("two refs");
    assert_eq!(ok.references.len(), 2);
    assert_eq!(ok.references[1].identifier, "ID-2");
    assert!(matches!(refs("a@b,ID-1"), Err(ParseError::BadReference { .. })));
    assert!(matches!(refs(",ID-1,2026-11-26T17:00:00+08:00"), Err(ParseError::BadReference { .. })));
    assert!(matches!(refs("a@b,ID-1,2026-11-26T17:00:00Z"), Err(ParseError::Time { source: TimeError::Zulu(_), .. })));
    let err = with("<identifier>CWA-EQ-001</identifier>", "<identifier>CWA EQ 001</identifier>").unwrap_err();
    assert!(matches!(err, ParseError::Invalid(InvalidMessage::BadIdentifier { .. })), "{err}");
    let err = with("<scope>Public</scope>", "<scope>Private</scope>").unwrap_err();
    assert!(matches!(err, ParseError::Invalid(InvalidMessage::ScopeNeeds { needs: "addresses", .. })), "{err}");
}

#[test]
fn size_and_depth_limits() {
    let limits = ParseLimits { max_bytes: 100, ..ParseLimits::default() };
    assert_eq!(parse_alert_with(GOOD.as_bytes(), &limits), Err(ParseError::TooLarge { size: GOOD.len(), limit: 100 }));
    let deep = format!("{}{}", "<x>".repeat(100), "</x>".repeat(100));
    assert_eq!(parse(&deep), Err(ParseError::TooDeep { limit: 32 }));
}

#[test]
fn defaults_and_whitespace() {
    // language defaults to en-US; text keeps its whitespace exactly.
    let a = with("<language>zh-TW</language>", "").expect("no language");
    assert_eq!(a.infos[0].language, "en-US");
    let a = with("<event>豪雨</event>", "<event>  豪雨 &amp; 強風\n</event>").expect("spaces");
    assert_eq!(a.infos[0].event, "  豪雨 & 強風\n");
    let a = with("<event>豪雨</event>", "<event><![CDATA[<b>豪雨</b>]]></event>").expect("cdata");
    assert_eq!(a.infos[0].event, "<b>豪雨</b>");
}
