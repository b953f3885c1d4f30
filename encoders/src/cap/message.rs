//! The CAP 1.2 message as Rust types, field for field, in the XSD's order, plus the spec rules every message must keep.
//!
//! Enumerations are spelled exactly as the spec spells them (`Actual`, `AllClear`, `CBRNE`, …), both in XML and in
//! serde, so nothing downstream needs a translation table. Optional CAP elements that our own messages do not use
//! (`source`, `resource`, `altitude`, …) are still here because inbound messages from partner agencies carry them.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::geometry::{Circle, GeometryError, Polygon};
use super::times::{format_cap_time, TimeError};

/// The CAP 1.2 XML namespace.
pub const CAP_NAMESPACE: &str = "urn:oasis:names:tc:emergency:cap:1.2";
/// Taiwan's CAP profile: the `eventCode` valueName that carries the event type.
pub const TW_EVENT_CODE_NAME: &str = "profile:CAP-TWP:Event:1.0";
/// Taiwan's CAP profile: the `geocode` valueName for 7-digit township and 5-digit county codes.
pub const TW_GEOCODE_NAME: &str = "Taiwan_Geocode_103";

/// Defines a CAP enumeration whose XML spelling is the variant name, with `as_str` and a strict `parse`.
macro_rules! cap_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in the XSD's order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling CAP uses.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant)),+ }
            }

            /// Reads the exact CAP spelling (case-sensitive, as the XSD is).
            pub fn parse(s: &str) -> Option<Self> {
                match s { $(stringify!($variant) => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

cap_enum! {
    /// `alert/status`. Only `Actual` may ever reach the public as real.
    Status { Actual, Exercise, System, Test, Draft }
}
cap_enum! {
    /// `alert/msgType`.
    MsgType { Alert, Update, Cancel, Ack, Error }
}
cap_enum! {
    /// `alert/scope`. Our own messages are always `Public`; inbound ones may be otherwise.
    Scope { Public, Restricted, Private }
}
cap_enum! {
    /// `info/category`.
    Category { Geo, Met, Safety, Security, Rescue, Fire, Health, Env, Transport, Infra, CBRNE, Other }
}
cap_enum! {
    /// `info/responseType`.
    ResponseType { Shelter, Evacuate, Prepare, Execute, Avoid, Monitor, Assess, AllClear, None }
}
cap_enum! {
    /// `info/urgency`.
    Urgency { Immediate, Expected, Future, Past, Unknown }
}
cap_enum! {
    /// `info/severity`.
    Severity { Extreme, Severe, Moderate, Minor, Unknown }
}
cap_enum! {
    /// `info/certainty`.
    Certainty { Observed, Likely, Possible, Unlikely, Unknown }
}

/// One earlier message this one refers to: CAP writes it `sender,identifier,sent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `sender` of the earlier message.
    pub sender: String,
    /// `identifier` of the earlier message.
    pub identifier: String,
    /// `sent` of the earlier message; kept as a time so offsets are checked like every other CAP time.
    pub sent: OffsetDateTime,
}

/// A `valueName`/`value` pair (eventCode, parameter, geocode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValuePair {
    /// The naming scheme, e.g. [`TW_EVENT_CODE_NAME`] or [`TW_GEOCODE_NAME`].
    pub value_name: String,
    /// The value within that scheme.
    pub value: String,
}

impl ValuePair {
    /// Shorthand for building pairs.
    pub fn new(value_name: impl Into<String>, value: impl Into<String>) -> Self {
        ValuePair { value_name: value_name.into(), value: value.into() }
    }
}

/// `alert`: the whole message.
#[derive(Debug, Clone, PartialEq)]
pub struct CapAlert {
    /// Unique per sender; no spaces, commas, `<` or `&` (CAP §3.2.1), because `references` is built from it.
    pub identifier: String,
    /// Originator id, same character rules as `identifier`.
    pub sender: String,
    /// When the message was issued, with offset.
    pub sent: OffsetDateTime,
    /// Actual / Exercise / System / Test / Draft.
    pub status: Status,
    /// Alert / Update / Cancel / Ack / Error.
    pub msg_type: MsgType,
    /// Source of the message (operator or device), optional.
    pub source: Option<String>,
    /// Public for everything we send.
    pub scope: Scope,
    /// Required when `scope` is Restricted.
    pub restriction: Option<String>,
    /// Required when `scope` is Private.
    pub addresses: Option<String>,
    /// Special-handling codes (`code`, repeatable).
    pub codes: Vec<String>,
    /// Free text; for Exercise/Test it says what the exercise or test is.
    pub note: Option<String>,
    /// Earlier messages this one updates or cancels.
    pub references: Vec<Reference>,
    /// Incident ids grouping several messages.
    pub incidents: Option<String>,
    /// One per language; Taiwan's convention puts zh-TW first.
    pub infos: Vec<CapInfo>,
}

/// `info`: the event in one language.
#[derive(Debug, Clone, PartialEq)]
pub struct CapInfo {
    /// RFC 3066 tag such as `zh-TW` or `en-US`; CAP's default when absent is `en-US`.
    pub language: String,
    /// At least one is required.
    pub categories: Vec<Category>,
    /// Short text naming the event, in `language`.
    pub event: String,
    /// Recommended actions.
    pub response_types: Vec<ResponseType>,
    /// How soon to act.
    pub urgency: Urgency,
    /// How bad.
    pub severity: Severity,
    /// How sure.
    pub certainty: Certainty,
    /// Intended audience, free text.
    pub audience: Option<String>,
    /// Machine-readable event codes; ours carries [`TW_EVENT_CODE_NAME`].
    pub event_codes: Vec<ValuePair>,
    /// When the information becomes effective (CAP: `sent` if absent).
    pub effective: Option<OffsetDateTime>,
    /// Expected onset of the hazard.
    pub onset: Option<OffsetDateTime>,
    /// When the information stops being valid.
    pub expires: Option<OffsetDateTime>,
    /// Human-readable sender, in `language`.
    pub sender_name: Option<String>,
    /// Short headline (what phones and feeds show first).
    pub headline: Option<String>,
    /// What is happening.
    pub description: Option<String>,
    /// What to do.
    pub instruction: Option<String>,
    /// Link to more information (xs:anyURI).
    pub web: Option<String>,
    /// Contact for follow-up.
    pub contact: Option<String>,
    /// System-specific values.
    pub parameters: Vec<ValuePair>,
    /// Attached files (maps, images) by reference.
    pub resources: Vec<CapResource>,
    /// Where it applies.
    pub areas: Vec<CapArea>,
}

/// `resource`: a file that goes with the info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapResource {
    /// What the file is.
    pub resource_desc: String,
    /// Its MIME type.
    pub mime_type: String,
    /// Size in bytes.
    pub size: Option<u64>,
    /// Where to fetch it.
    pub uri: Option<String>,
    /// The file inline, base64.
    pub deref_uri: Option<String>,
    /// SHA-1 of the file.
    pub digest: Option<String>,
}

/// `area`: one place the info applies to.
#[derive(Debug, Clone, PartialEq)]
pub struct CapArea {
    /// Human-readable description, in the info's language.
    pub area_desc: String,
    /// Closed rings in `lat,lon` order.
    pub polygons: Vec<Polygon>,
    /// Circles, radius in km.
    pub circles: Vec<Circle>,
    /// Coded areas; ours use [`TW_GEOCODE_NAME`].
    pub geocodes: Vec<ValuePair>,
    /// Lower bound, feet above sea level.
    pub altitude: Option<f64>,
    /// Upper bound, feet above sea level; only with `altitude`.
    pub ceiling: Option<f64>,
}

impl CapArea {
    /// An area with just a description; fill in the rest field by field.
    pub fn new(area_desc: impl Into<String>) -> Self {
        CapArea {
            area_desc: area_desc.into(),
            polygons: Vec::new(),
            circles: Vec::new(),
            geocodes: Vec::new(),
            altitude: None,
            ceiling: None,
        }
    }
}

/// A CAP rule broken by a message; `at` is the element path such as `alert/info[1]/area[0]/polygon[2]`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidMessage {
    /// XML 1.0 cannot carry most C0 control characters at all, escaped or not.
    #[error("{at}: contains control character U+{code:04X}, which XML cannot carry")]
    ControlChar { at: String, code: u32 },
    /// identifier/sender (and the parts of a reference) may not contain spaces, commas, `<` or `&`.
    #[error("{at}: `{value}` must be non-empty without whitespace, commas, `<` or `&` (CAP §3.2.1)")]
    BadIdentifier { at: String, value: String },
    /// A time that CAP's format cannot carry.
    #[error("{at}: {source}")]
    Time { at: String, source: TimeError },
    /// `info` without any `category`.
    #[error("{at}: at least one category is required")]
    NoCategory { at: String },
    /// Not an xs:language tag.
    #[error("{at}: `{value}` is not a language tag like zh-TW")]
    BadLanguage { at: String, value: String },
    /// altitude/ceiling must be finite decimals.
    #[error("{at}: not a finite decimal")]
    BadNumber { at: String },
    /// CAP: ceiling "MUST NOT be used except in combination with the altitude element".
    #[error("{at}: ceiling without altitude")]
    CeilingWithoutAltitude { at: String },
    /// scope Restricted needs restriction, Private needs addresses.
    #[error("alert: scope {scope} requires <{needs}>")]
    ScopeNeeds { scope: Scope, needs: &'static str },
    /// `web` and `uri` are xs:anyURI: a URI reference once non-ASCII characters and spaces are escaped.
    #[error("{at}: `{value}` is not a URI reference")]
    BadUri { at: String, value: String },
    /// Polygon or circle broken (only reachable through the parser, since the types check themselves).
    #[error("{at}: {source}")]
    Geometry { at: String, source: GeometryError },
}

/// True for characters XML 1.0 allows in a document.
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

pub(crate) fn check_text(at: &str, s: &str) -> Result<(), InvalidMessage> {
    match s.chars().find(|c| !is_xml_char(*c)) {
        Some(c) => Err(InvalidMessage::ControlChar { at: at.to_string(), code: u32::from(c) }),
        None => Ok(()),
    }
}

fn check_opt_text(at: &str, s: &Option<String>) -> Result<(), InvalidMessage> {
    s.as_deref().map_or(Ok(()), |s| check_text(at, s))
}

/// CAP §3.2.1: identifier and sender "MUST NOT include spaces, commas or restricted characters (< and &)".
pub(crate) fn check_identifier(at: &str, s: &str) -> Result<(), InvalidMessage> {
    check_text(at, s)?;
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || matches!(c, ',' | '<' | '&')) {
        return Err(InvalidMessage::BadIdentifier { at: at.to_string(), value: s.to_string() });
    }
    Ok(())
}

/// xs:language: `[a-zA-Z]{1,8}(-[a-zA-Z0-9]{1,8})*`.
pub(crate) fn is_language_tag(s: &str) -> bool {
    let mut parts = s.split('-');
    let first_ok =
        parts.next().is_some_and(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphabetic()));
    first_ok && parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// xs:anyURI as schema validators check it: after escaping characters a URI cannot hold (non-ASCII, space,
/// `<>"{}|\^` and backquote), the text must be an RFC 3986 URI reference. Checked so that our own `web` links never
/// make a message schema-invalid, and inbound ones are held to what the XSD says.
pub(crate) fn is_uri_reference(s: &str) -> bool {
    fn escaped(c: char) -> bool {
        !c.is_ascii() || matches!(c, ' ' | '<' | '>' | '"' | '{' | '}' | '|' | '\\' | '^' | '`')
    }
    fn unreserved(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~') || escaped(c)
    }
    fn sub_delim(c: char) -> bool {
        matches!(c, '!' | '$' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | ';' | '=')
    }
    /// Every char passes `ok` or starts a `%XX` escape.
    fn chars_ok(part: &str, ok: fn(char) -> bool) -> bool {
        let mut it = part.chars();
        while let Some(c) = it.next() {
            if c == '%' {
                let hex = (it.next(), it.next());
                if !matches!(hex, (Some(a), Some(b)) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit()) {
                    return false;
                }
            } else if c.is_ascii_control() || !ok(c) {
                return false;
            }
        }
        true
    }
    fn pchar(c: char) -> bool {
        unreserved(c) || sub_delim(c) || matches!(c, ':' | '@')
    }
    let (rest, fragment) = s.split_once('#').unwrap_or((s, ""));
    // Validators tolerate brackets in fragments; a second `#` is an error everywhere.
    if !chars_ok(fragment, |c| pchar(c) || matches!(c, '/' | '?' | '[' | ']')) {
        return false;
    }
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !chars_ok(query, |c| pchar(c) || matches!(c, '/' | '?')) {
        return false;
    }
    // A colon before the first slash ends a scheme, which must be ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
    let first_segment = rest.split('/').next().unwrap_or("");
    let rest = match first_segment.split_once(':') {
        Some((scheme, _)) => {
            let mut cs = scheme.chars();
            let scheme_ok = cs.next().is_some_and(|c| c.is_ascii_alphabetic())
                && cs.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            if !scheme_ok {
                return false;
            }
            &rest[scheme.len() + 1..]
        }
        None => rest,
    };
    let path = match rest.strip_prefix("//") {
        Some(after) => {
            let (authority, path) = after.find('/').map_or((after, ""), |i| after.split_at(i));
            let host_port = match authority.rsplit_once('@') {
                Some((userinfo, _)) if !chars_ok(userinfo, |c| unreserved(c) || sub_delim(c) || c == ':') => {
                    return false
                }
                Some((_, host_port)) => host_port,
                None => authority,
            };
            // RFC 3986 allows an empty port after the colon (`http://a:`); libxml2, which xmllint validates with,
            // refuses it, so we do too.
            let (host, port) = if host_port.starts_with('[') {
                match host_port.find(']') {
                    Some(i) => match host_port[i + 1..].strip_prefix(':') {
                        Some("") => return false,
                        Some(port) => (&host_port[..=i], port),
                        None => (&host_port[..=i], &host_port[i + 1..]),
                    },
                    None => return false,
                }
            } else {
                match host_port.split_once(':') {
                    Some((_, "")) => return false,
                    Some(split) => split,
                    None => (host_port, ""),
                }
            };
            let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                !inner.is_empty() && inner.chars().all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'))
            } else {
                chars_ok(host, |c| unreserved(c) || sub_delim(c))
            };
            if !host_ok || !port.chars().all(|c| c.is_ascii_digit()) {
                return false;
            }
            path
        }
        None => rest,
    };
    chars_ok(path, |c| pchar(c) || c == '/')
}

fn check_uri(at: &str, s: &Option<String>) -> Result<(), InvalidMessage> {
    match s {
        Some(v) if !is_uri_reference(v) => Err(InvalidMessage::BadUri { at: at.to_string(), value: v.clone() }),
        _ => Ok(()),
    }
}

fn check_time(at: &str, t: OffsetDateTime) -> Result<(), InvalidMessage> {
    format_cap_time(t).map(|_| ()).map_err(|source| InvalidMessage::Time { at: at.to_string(), source })
}

fn check_opt_time(at: &str, t: Option<OffsetDateTime>) -> Result<(), InvalidMessage> {
    t.map_or(Ok(()), |t| check_time(at, t))
}

fn check_pairs(at: &str, pairs: &[ValuePair]) -> Result<(), InvalidMessage> {
    for (i, p) in pairs.iter().enumerate() {
        check_text(&format!("{at}[{i}]/valueName"), &p.value_name)?;
        check_text(&format!("{at}[{i}]/value"), &p.value)?;
    }
    Ok(())
}

impl CapAlert {
    /// This message as a `references` entry, for the Update or Cancel that follows it. `(sender, identifier, sent)`
    /// is also what makes a CAP message unique, so inbound de-duplication can key on it.
    pub fn as_reference(&self) -> Reference {
        Reference { sender: self.sender.clone(), identifier: self.identifier.clone(), sent: self.sent }
    }

    /// Checks every CAP rule the writer relies on. The writer calls it, so an invalid message is never written;
    /// the parser calls it, so inbound messages meet the same bar.
    pub fn validate(&self) -> Result<(), InvalidMessage> {
        check_identifier("alert/identifier", &self.identifier)?;
        check_identifier("alert/sender", &self.sender)?;
        check_time("alert/sent", self.sent)?;
        check_opt_text("alert/source", &self.source)?;
        check_opt_text("alert/restriction", &self.restriction)?;
        check_opt_text("alert/addresses", &self.addresses)?;
        if self.scope == Scope::Restricted && self.restriction.is_none() {
            return Err(InvalidMessage::ScopeNeeds { scope: self.scope, needs: "restriction" });
        }
        if self.scope == Scope::Private && self.addresses.is_none() {
            return Err(InvalidMessage::ScopeNeeds { scope: self.scope, needs: "addresses" });
        }
        for (i, code) in self.codes.iter().enumerate() {
            check_text(&format!("alert/code[{i}]"), code)?;
        }
        check_opt_text("alert/note", &self.note)?;
        for (i, r) in self.references.iter().enumerate() {
            let at = format!("alert/references[{i}]");
            check_identifier(&at, &r.sender)?;
            check_identifier(&at, &r.identifier)?;
            check_time(&at, r.sent)?;
        }
        check_opt_text("alert/incidents", &self.incidents)?;
        for (i, info) in self.infos.iter().enumerate() {
            info.validate(&format!("alert/info[{i}]"))?;
        }
        Ok(())
    }
}

impl CapInfo {
    fn validate(&self, at: &str) -> Result<(), InvalidMessage> {
        if !is_language_tag(&self.language) {
            return Err(InvalidMessage::BadLanguage { at: format!("{at}/language"), value: self.language.clone() });
        }
        if self.categories.is_empty() {
            return Err(InvalidMessage::NoCategory { at: at.to_string() });
        }
        check_text(&format!("{at}/event"), &self.event)?;
        check_opt_text(&format!("{at}/audience"), &self.audience)?;
        check_pairs(&format!("{at}/eventCode"), &self.event_codes)?;
        check_opt_time(&format!("{at}/effective"), self.effective)?;
        check_opt_time(&format!("{at}/onset"), self.onset)?;
        check_opt_time(&format!("{at}/expires"), self.expires)?;
        for (name, value) in [
            ("senderName", &self.sender_name),
            ("headline", &self.headline),
            ("description", &self.description),
            ("instruction", &self.instruction),
            ("web", &self.web),
            ("contact", &self.contact),
        ] {
            check_opt_text(&format!("{at}/{name}"), value)?;
        }
        check_uri(&format!("{at}/web"), &self.web)?;
        check_pairs(&format!("{at}/parameter"), &self.parameters)?;
        for (i, r) in self.resources.iter().enumerate() {
            let at = format!("{at}/resource[{i}]");
            check_text(&format!("{at}/resourceDesc"), &r.resource_desc)?;
            check_text(&format!("{at}/mimeType"), &r.mime_type)?;
            check_opt_text(&format!("{at}/uri"), &r.uri)?;
            check_uri(&format!("{at}/uri"), &r.uri)?;
            check_opt_text(&format!("{at}/derefUri"), &r.deref_uri)?;
            check_opt_text(&format!("{at}/digest"), &r.digest)?;
        }
        for (i, area) in self.areas.iter().enumerate() {
            let at = format!("{at}/area[{i}]");
            check_text(&format!("{at}/areaDesc"), &area.area_desc)?;
            check_pairs(&format!("{at}/geocode"), &area.geocodes)?;
            for (name, v) in [("altitude", area.altitude), ("ceiling", area.ceiling)] {
                if v.is_some_and(|v| !v.is_finite()) {
                    return Err(InvalidMessage::BadNumber { at: format!("{at}/{name}") });
                }
            }
            if area.ceiling.is_some() && area.altitude.is_none() {
                return Err(InvalidMessage::CeilingWithoutAltitude { at });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_spellings_match_the_spec() {
        assert_eq!(ResponseType::AllClear.as_str(), "AllClear");
        assert_eq!(Category::CBRNE.as_str(), "CBRNE");
        assert_eq!(Status::parse("Exercise"), Some(Status::Exercise));
        assert_eq!(Status::parse("actual"), None);
        assert_eq!(Category::ALL.len(), 12);
        assert_eq!(ResponseType::ALL.len(), 9);
        assert_eq!(serde_json::to_string(&Severity::Extreme).unwrap(), "\"Extreme\"");
    }

    #[test]
    fn identifiers() {
        assert!(check_identifier("x", "TW-DC-2026-0001").is_ok());
        for bad in ["", "a b", "a,b", "a<b", "a&b", "a\tb"] {
            assert!(check_identifier("x", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn language_tags() {
        for ok in ["zh-TW", "en-US", "en", "zh-Hant-TW"] {
            assert!(is_language_tag(ok), "{ok}");
        }
        for bad in ["", "zh_TW", "toolonglang", "zh-", "1a"] {
            assert!(!is_language_tag(bad), "{bad}");
        }
    }

    #[test]
    fn uri_references() {
        for ok in [
            "https://alerts.example.tw/alerts/TW-1?lang=zh-TW&x=1#top",
            "https://a.tw/颱風 警報",
            "mailto:eoc@nfa.gov.tw",
            "http://[::1]:8080/cap",
            "/cap/x.xml",
            "",
            "x#[a]",
            "http://u:p@h:80/",
        ] {
            assert!(is_uri_reference(ok), "{ok}");
        }
        for bad in [
            "%zz",
            "a%4",
            "a#b#c",
            ":",
            "1a:b",
            "-:x",
            "a[b]",
            "x?[a]",
            "http://a]b/",
            "http://a:xx/",
            "a\u{1}b",
            "http://a:",
            "r-0w://@z7c~:",
            "http://[::1]:/",
        ] {
            assert!(!is_uri_reference(bad), "{bad}");
        }
    }

    #[test]
    fn control_chars() {
        assert!(check_text("x", "line\nnext\ttab\r").is_ok());
        assert_eq!(
            check_text("alert/note", "bell\u{7}"),
            Err(InvalidMessage::ControlChar { at: "alert/note".into(), code: 7 })
        );
        assert!(check_text("x", "\u{FFFE}").is_err());
    }
}
