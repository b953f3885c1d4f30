//! CAP 1.2 reader: XML text → [`CapAlert`], with typed errors that name the element at fault.
//!
//! Two steps. First the bytes become a small element tree (size and depth bounded, DOCTYPE refused so no entity
//! expansion, only the five XML entities and character references). Then the tree is read against the XSD's sequence
//! — order, occurrence, enumerations — and against the spec's rules the XSD cannot express: polygon closure and
//! at least 4 pairs, coordinate ranges, times with an offset and without `Z`, `references` as
//! `sender,identifier,sent` triples, identifier characters. A message this reader accepts is one our writer could
//! have written (see the round-trip test).

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use time::OffsetDateTime;

use super::geometry::{Circle, GeometryError, Polygon};
use super::message::{
    is_xml_char, CapAlert, CapArea, CapInfo, CapResource, Category, Certainty, InvalidMessage, MsgType, Reference,
    ResponseType, Scope, Severity, Status, Urgency, ValuePair, CAP_NAMESPACE,
};
use super::times::{parse_cap_time, TimeError};

/// XML signatures may follow the last `info` (the XSD's `<any namespace="…xmldsig#">`); they are skipped.
const XMLDSIG_NAMESPACE: &str = "http://www.w3.org/2000/09/xmldsig#";

/// Bounds on what the reader accepts, because inbound CAP arrives from outside (pushes and polled feeds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Largest document in bytes. Real CAP messages are a few KiB; polygons of many points reach a few hundred.
    pub max_bytes: usize,
    /// Deepest element nesting. CAP itself needs 5; signatures need a few more.
    pub max_depth: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits { max_bytes: 1024 * 1024, max_depth: 32 }
    }
}

/// Why a document is not an acceptable CAP 1.2 message. `at` is an element path like `alert/info[0]/urgency`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// Larger than [`ParseLimits::max_bytes`]; checked before any parsing.
    #[error("document is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    /// Nested deeper than [`ParseLimits::max_depth`].
    #[error("elements nested deeper than {limit}")]
    TooDeep { limit: usize },
    /// Not well-formed XML (or not UTF-8, or uses a DOCTYPE or an undeclared entity).
    #[error("invalid XML at byte {position}: {message}")]
    InvalidXml { position: u64, message: String },
    /// The root is not `alert` in the CAP 1.2 namespace (a CAP 1.1 message lands here too).
    #[error("root element is `{found}` in namespace `{namespace}`, expected `alert` in {CAP_NAMESPACE}")]
    NotCap { found: String, namespace: String },
    /// A required element is absent.
    #[error("{at}: required element <{element}> is missing")]
    Missing { at: String, element: &'static str },
    /// An element is present but not where the XSD sequence puts it.
    #[error("{at}: <{element}> is out of order (the XSD fixes the sequence)")]
    OutOfOrder { at: String, element: String },
    /// An element the schema does not allow here (unknown name, foreign namespace, or repeated).
    #[error("{at}: unexpected element <{element}>")]
    Unexpected { at: String, element: String },
    /// Text where the schema allows only elements, or elements inside a text-only element.
    #[error("{at}: {what}")]
    BadContent { at: String, what: &'static str },
    /// A value outside its enumeration; `element` is the element name.
    #[error("{at}: `{value}` is not a valid <{element}> value")]
    BadEnum { at: String, element: &'static str, value: String },
    /// A time with `Z`, without an offset, with fractions, or malformed.
    #[error("{at}: {source}")]
    Time { at: String, source: TimeError },
    /// A polygon or circle that breaks the spec's geometry rules.
    #[error("{at}: {source}")]
    Geometry { at: String, source: GeometryError },
    /// `references` not made of `sender,identifier,sent` triples.
    #[error("alert/references: `{value}` is not a `sender,identifier,sent` triple")]
    BadReference { value: String },
    /// A number element (size, altitude, ceiling) that is not one.
    #[error("{at}: `{value}` is not a number")]
    BadNumber { at: String, value: String },
    /// A CAP rule checked on the whole message (identifier characters, scope needs, …).
    #[error(transparent)]
    Invalid(#[from] InvalidMessage),
}

/// Which namespace an element is in, as far as the reader cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ns {
    Cap,
    Dsig,
    Other,
}

/// The element tree the second step reads.
#[derive(Debug)]
struct Node {
    ns: Ns,
    name: String,
    namespace: String,
    children: Vec<Node>,
    text: String,
}

/// Parses with the default [`ParseLimits`].
pub fn parse_alert(xml: &[u8]) -> Result<CapAlert, ParseError> {
    parse_alert_with(xml, &ParseLimits::default())
}

/// Parses one CAP 1.2 `alert` document.
pub fn parse_alert_with(xml: &[u8], limits: &ParseLimits) -> Result<CapAlert, ParseError> {
    if xml.len() > limits.max_bytes {
        return Err(ParseError::TooLarge { size: xml.len(), limit: limits.max_bytes });
    }
    let text = std::str::from_utf8(xml).map_err(|e| ParseError::InvalidXml {
        position: e.valid_up_to() as u64,
        message: "not UTF-8 (CAP messages are read as UTF-8)".into(),
    })?;
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let root = build_tree(text, limits)?;
    if root.ns != Ns::Cap || root.name != "alert" {
        return Err(ParseError::NotCap { found: root.name, namespace: root.namespace });
    }
    let alert = read_alert(&root)?;
    alert.validate()?;
    Ok(alert)
}

impl CapAlert {
    /// Same as [`parse_alert`] on a string.
    pub fn from_xml(xml: &str) -> Result<CapAlert, ParseError> {
        parse_alert(xml.as_bytes())
    }
}

fn build_tree(text: &str, limits: &ParseLimits) -> Result<Node, ParseError> {
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    loop {
        let position = reader.buffer_position();
        let bad = |message: String| ParseError::InvalidXml { position, message };
        let (ns, event) = reader.read_resolved_event().map_err(|e| bad(e.to_string()))?;
        let (ns, namespace) = match ns {
            ResolveResult::Bound(n) => {
                let uri = String::from_utf8_lossy(n.as_ref()).into_owned();
                let kind = match uri.as_str() {
                    CAP_NAMESPACE => Ns::Cap,
                    XMLDSIG_NAMESPACE => Ns::Dsig,
                    _ => Ns::Other,
                };
                (kind, uri)
            }
            ResolveResult::Unbound => (Ns::Other, String::new()),
            ResolveResult::Unknown(prefix) => {
                return Err(bad(format!("undeclared namespace prefix `{}`", String::from_utf8_lossy(&prefix))))
            }
        };
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                // Attributes are not part of CAP, but a malformed one still makes the document ill-formed.
                for attr in e.attributes() {
                    attr.map_err(|err| bad(err.to_string()))?;
                }
                if root.is_some() {
                    return Err(bad("content after the root element".into()));
                }
                if stack.len() >= limits.max_depth {
                    return Err(ParseError::TooDeep { limit: limits.max_depth });
                }
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let node = Node { ns, name, namespace, children: Vec::new(), text: String::new() };
                if matches!(event, Event::Empty(_)) {
                    attach(&mut stack, &mut root, node);
                } else {
                    stack.push(node);
                }
            }
            Event::End(_) => {
                let node = stack.pop().ok_or_else(|| bad("unmatched end tag".into()))?;
                attach(&mut stack, &mut root, node);
            }
            Event::Text(t) => {
                let s = t.xml10_content().map_err(|e| bad(e.to_string()))?;
                push_text(&mut stack, &s).map_err(bad)?;
            }
            Event::CData(t) => {
                let s = t.decode().map_err(|e| bad(e.to_string()))?;
                push_text(&mut stack, &s).map_err(bad)?;
            }
            Event::GeneralRef(r) => {
                let c = referenced_char(&r).map_err(bad)?;
                push_text(&mut stack, c.encode_utf8(&mut [0; 4])).map_err(bad)?;
            }
            Event::Decl(d) => {
                if let Some(enc) = d.encoding() {
                    let enc = enc.map_err(|e| bad(e.to_string()))?;
                    if !enc.eq_ignore_ascii_case(b"utf-8") {
                        return Err(bad(format!("encoding `{}` is not supported", String::from_utf8_lossy(&enc))));
                    }
                }
            }
            // A DTD could declare entities (expansion bombs) or defaults; CAP never needs one.
            Event::DocType(_) => return Err(bad("DOCTYPE is not allowed in CAP messages".into())),
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(ParseError::InvalidXml {
            position: reader.buffer_position(),
            message: "document ends inside an element".into(),
        });
    }
    root.ok_or(ParseError::InvalidXml { position: 0, message: "no root element".into() })
}

fn attach(stack: &mut [Node], root: &mut Option<Node>, node: Node) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(node),
        None => *root = Some(node),
    }
}

fn push_text(stack: &mut [Node], s: &str) -> Result<(), String> {
    if let Some(c) = s.chars().find(|c| !is_xml_char(*c)) {
        return Err(format!("character U+{:04X} is not allowed in XML", u32::from(c)));
    }
    match stack.last_mut() {
        Some(node) => node.text.push_str(s),
        // Outside the root only whitespace is well-formed.
        None if s.trim().is_empty() => {}
        None => return Err("text outside the root element".into()),
    }
    Ok(())
}

/// Walks the children of one element in XSD sequence order.
struct Seq<'a> {
    at: String,
    nodes: Vec<&'a Node>,
    pos: usize,
}

impl<'a> Seq<'a> {
    fn new(at: String, node: &'a Node) -> Result<Self, ParseError> {
        if !node.text.trim().is_empty() {
            return Err(ParseError::BadContent { at, what: "text is not allowed here, only elements" });
        }
        // XML signatures (the XSD's `<any namespace="…xmldsig#">`) are skipped among <alert>'s children; anywhere
        // else they are unexpected elements like any other.
        let nodes = node.children.iter().filter(|n| !(n.ns == Ns::Dsig && node.name == "alert")).collect();
        Ok(Seq { at, nodes, pos: 0 })
    }

    fn path(&self, name: &str, index: Option<usize>) -> String {
        match index {
            Some(i) => format!("{}/{name}[{i}]", self.at),
            None => format!("{}/{name}", self.at),
        }
    }

    fn peek_is(&self, name: &str) -> bool {
        self.nodes.get(self.pos).is_some_and(|n| n.ns == Ns::Cap && n.name == name)
    }

    fn opt(&mut self, name: &str) -> Option<&'a Node> {
        if self.peek_is(name) {
            self.pos += 1;
            Some(self.nodes[self.pos - 1])
        } else {
            None
        }
    }

    fn req(&mut self, name: &'static str) -> Result<&'a Node, ParseError> {
        if let Some(n) = self.opt(name) {
            return Ok(n);
        }
        let later = self.nodes[self.pos..].iter().any(|n| n.ns == Ns::Cap && n.name == name);
        if later {
            Err(ParseError::OutOfOrder { at: self.at.clone(), element: name.to_string() })
        } else {
            Err(ParseError::Missing { at: self.at.clone(), element: name })
        }
    }

    fn many(&mut self, name: &str) -> Vec<&'a Node> {
        let mut out = Vec::new();
        while let Some(n) = self.opt(name) {
            out.push(n);
        }
        out
    }

    fn finish(self) -> Result<(), ParseError> {
        match self.nodes.get(self.pos) {
            None => Ok(()),
            Some(n) => {
                let earlier = self.nodes[..self.pos].iter().any(|m| m.ns == n.ns && m.name == n.name);
                let element = if n.ns == Ns::Cap { n.name.clone() } else { format!("{{{}}}{}", n.namespace, n.name) };
                if n.ns == Ns::Cap && !earlier && KNOWN_ELEMENTS.contains(&n.name.as_str()) {
                    Err(ParseError::OutOfOrder { at: self.at, element })
                } else {
                    Err(ParseError::Unexpected { at: self.at, element })
                }
            }
        }
    }
}

/// Every CAP element name, to tell "out of order" from "unknown" in errors.
const KNOWN_ELEMENTS: &[&str] = &[
    "identifier",
    "sender",
    "sent",
    "status",
    "msgType",
    "source",
    "scope",
    "restriction",
    "addresses",
    "code",
    "note",
    "references",
    "incidents",
    "info",
    "language",
    "category",
    "event",
    "responseType",
    "urgency",
    "severity",
    "certainty",
    "audience",
    "eventCode",
    "effective",
    "onset",
    "expires",
    "senderName",
    "headline",
    "description",
    "instruction",
    "web",
    "contact",
    "parameter",
    "resource",
    "resourceDesc",
    "mimeType",
    "size",
    "uri",
    "derefUri",
    "digest",
    "area",
    "areaDesc",
    "polygon",
    "circle",
    "geocode",
    "altitude",
    "ceiling",
    "valueName",
    "value",
];

/// The text of a text-only element, exactly as written (xs:string preserves whitespace).
fn text_of(at: &str, node: &Node) -> Result<String, ParseError> {
    if !node.children.is_empty() {
        return Err(ParseError::BadContent {
            at: at.to_string(),
            what: "elements are not allowed inside this element",
        });
    }
    Ok(node.text.clone())
}

fn enum_of<T>(at: String, node: &Node, element: &'static str, parse: fn(&str) -> Option<T>) -> Result<T, ParseError> {
    let text = text_of(&at, node)?;
    // Lenient on surrounding whitespace (pretty-printers add it); strict on the spelling.
    parse(text.trim()).ok_or(ParseError::BadEnum { at, element, value: text })
}

fn time_of(at: String, node: &Node) -> Result<OffsetDateTime, ParseError> {
    let text = text_of(&at, node)?;
    parse_cap_time(&text).map_err(|source| ParseError::Time { at, source })
}

fn read_alert(root: &Node) -> Result<CapAlert, ParseError> {
    let mut s = Seq::new("alert".into(), root)?;
    let identifier = text_of("alert/identifier", s.req("identifier")?)?;
    let sender = text_of("alert/sender", s.req("sender")?)?;
    let sent = time_of("alert/sent".into(), s.req("sent")?)?;
    let status = enum_of("alert/status".into(), s.req("status")?, "status", Status::parse)?;
    let msg_type = enum_of("alert/msgType".into(), s.req("msgType")?, "msgType", MsgType::parse)?;
    let source = s.opt("source").map(|n| text_of("alert/source", n)).transpose()?;
    let scope = enum_of("alert/scope".into(), s.req("scope")?, "scope", Scope::parse)?;
    let restriction = s.opt("restriction").map(|n| text_of("alert/restriction", n)).transpose()?;
    let addresses = s.opt("addresses").map(|n| text_of("alert/addresses", n)).transpose()?;
    let codes = s.many("code").into_iter().map(|n| text_of("alert/code", n)).collect::<Result<_, _>>()?;
    let note = s.opt("note").map(|n| text_of("alert/note", n)).transpose()?;
    let references = match s.opt("references") {
        Some(n) => parse_references(&text_of("alert/references", n)?)?,
        None => Vec::new(),
    };
    let incidents = s.opt("incidents").map(|n| text_of("alert/incidents", n)).transpose()?;
    let infos = s
        .many("info")
        .into_iter()
        .enumerate()
        .map(|(i, n)| read_info(format!("alert/info[{i}]"), n))
        .collect::<Result<_, _>>()?;
    s.finish()?;
    Ok(CapAlert {
        identifier,
        sender,
        sent,
        status,
        msg_type,
        source,
        scope,
        restriction,
        addresses,
        codes,
        note,
        references,
        incidents,
        infos,
    })
}

/// `references`: whitespace-separated `sender,identifier,sent` triples. Splitting on the first two commas is
/// unambiguous because sender and identifier may not contain commas, and a CAP time has none.
pub fn parse_references(text: &str) -> Result<Vec<Reference>, ParseError> {
    text.split_whitespace()
        .map(|triple| {
            let bad = || ParseError::BadReference { value: triple.to_string() };
            let mut parts = triple.splitn(3, ',');
            let (Some(sender), Some(identifier), Some(sent)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad());
            };
            if sender.is_empty() || identifier.is_empty() {
                return Err(bad());
            }
            let sent =
                parse_cap_time(sent).map_err(|source| ParseError::Time { at: "alert/references".into(), source })?;
            Ok(Reference { sender: sender.to_string(), identifier: identifier.to_string(), sent })
        })
        .collect()
}

fn read_pairs(s: &mut Seq<'_>, name: &'static str) -> Result<Vec<ValuePair>, ParseError> {
    let nodes = s.many(name);
    let mut out = Vec::with_capacity(nodes.len());
    for (i, n) in nodes.into_iter().enumerate() {
        let at = s.path(name, Some(i));
        let mut p = Seq::new(at.clone(), n)?;
        let value_name = text_of(&format!("{at}/valueName"), p.req("valueName")?)?;
        let value = text_of(&format!("{at}/value"), p.req("value")?)?;
        p.finish()?;
        out.push(ValuePair { value_name, value });
    }
    Ok(out)
}

fn opt_text(s: &mut Seq<'_>, name: &'static str) -> Result<Option<String>, ParseError> {
    let at = s.path(name, None);
    s.opt(name).map(|n| text_of(&at, n)).transpose()
}

fn opt_time(s: &mut Seq<'_>, name: &'static str) -> Result<Option<OffsetDateTime>, ParseError> {
    let at = s.path(name, None);
    s.opt(name).map(|n| time_of(at, n)).transpose()
}

fn read_info(at: String, node: &Node) -> Result<CapInfo, ParseError> {
    let mut s = Seq::new(at.clone(), node)?;
    // CAP: "If not present, an implicit default value of 'en-US' SHALL be assumed."
    let language = opt_text(&mut s, "language")?.map(|l| l.trim().to_string()).unwrap_or_else(|| "en-US".into());
    let categories: Vec<Category> = s
        .many("category")
        .into_iter()
        .map(|n| enum_of(format!("{at}/category"), n, "category", Category::parse))
        .collect::<Result<_, _>>()?;
    if categories.is_empty() {
        s.req("category")?;
    }
    let event = text_of(&format!("{at}/event"), s.req("event")?)?;
    let response_types = s
        .many("responseType")
        .into_iter()
        .map(|n| enum_of(format!("{at}/responseType"), n, "responseType", ResponseType::parse))
        .collect::<Result<_, _>>()?;
    let urgency = enum_of(format!("{at}/urgency"), s.req("urgency")?, "urgency", Urgency::parse)?;
    let severity = enum_of(format!("{at}/severity"), s.req("severity")?, "severity", Severity::parse)?;
    let certainty = enum_of(format!("{at}/certainty"), s.req("certainty")?, "certainty", Certainty::parse)?;
    let audience = opt_text(&mut s, "audience")?;
    let event_codes = read_pairs(&mut s, "eventCode")?;
    let effective = opt_time(&mut s, "effective")?;
    let onset = opt_time(&mut s, "onset")?;
    let expires = opt_time(&mut s, "expires")?;
    let sender_name = opt_text(&mut s, "senderName")?;
    let headline = opt_text(&mut s, "headline")?;
    let description = opt_text(&mut s, "description")?;
    let instruction = opt_text(&mut s, "instruction")?;
    let web = opt_text(&mut s, "web")?;
    let contact = opt_text(&mut s, "contact")?;
    let parameters = read_pairs(&mut s, "parameter")?;
    let resources = s
        .many("resource")
        .into_iter()
        .enumerate()
        .map(|(i, n)| read_resource(format!("{at}/resource[{i}]"), n))
        .collect::<Result<_, _>>()?;
    let areas = s
        .many("area")
        .into_iter()
        .enumerate()
        .map(|(i, n)| read_area(format!("{at}/area[{i}]"), n))
        .collect::<Result<_, _>>()?;
    s.finish()?;
    Ok(CapInfo {
        language,
        categories,
        event,
        response_types,
        urgency,
        severity,
        certainty,
        audience,
        event_codes,
        effective,
        onset,
        expires,
        sender_name,
        headline,
        description,
        instruction,
        web,
        contact,
        parameters,
        resources,
        areas,
    })
}

fn read_resource(at: String, node: &Node) -> Result<CapResource, ParseError> {
    let mut s = Seq::new(at.clone(), node)?;
    let resource_desc = text_of(&format!("{at}/resourceDesc"), s.req("resourceDesc")?)?;
    let mime_type = text_of(&format!("{at}/mimeType"), s.req("mimeType")?)?;
    let size = match opt_text(&mut s, "size")? {
        Some(v) => Some(
            v.trim()
                .parse::<u64>()
                .map_err(|_| ParseError::BadNumber { at: format!("{at}/size"), value: v.clone() })?,
        ),
        None => None,
    };
    let uri = opt_text(&mut s, "uri")?;
    let deref_uri = opt_text(&mut s, "derefUri")?;
    let digest = opt_text(&mut s, "digest")?;
    s.finish()?;
    Ok(CapResource { resource_desc, mime_type, size, uri, deref_uri, digest })
}

fn read_area(at: String, node: &Node) -> Result<CapArea, ParseError> {
    let mut s = Seq::new(at.clone(), node)?;
    let area_desc = text_of(&format!("{at}/areaDesc"), s.req("areaDesc")?)?;
    let polygons = s
        .many("polygon")
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            let at = format!("{at}/polygon[{i}]");
            Polygon::parse(&text_of(&at, n)?).map_err(|source| ParseError::Geometry { at, source })
        })
        .collect::<Result<_, _>>()?;
    let circles = s
        .many("circle")
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            let at = format!("{at}/circle[{i}]");
            Circle::parse(&text_of(&at, n)?).map_err(|source| ParseError::Geometry { at, source })
        })
        .collect::<Result<_, _>>()?;
    let geocodes = read_pairs(&mut s, "geocode")?;
    let mut decimal = |name: &'static str| -> Result<Option<f64>, ParseError> {
        let at = format!("{at}/{name}");
        match opt_text(&mut s, name)? {
            Some(v) => match v.trim().parse::<f64>() {
                Ok(x) if x.is_finite() && !v.contains(['e', 'E']) => Ok(Some(x)),
                _ => Err(ParseError::BadNumber { at, value: v }),
            },
            None => Ok(None),
        }
    };
    let altitude = decimal("altitude")?;
    let ceiling = decimal("ceiling")?;
    s.finish()?;
    Ok(CapArea { area_desc, polygons, circles, geocodes, altitude, ceiling })
}

/// The character a reference in the text stands for: a character reference (`&#x8C6A;`) or one of XML's five
/// predefined entities. Any other name is refused: it would need a DTD, and we read none (declared entities can
/// expand without bound). Shared with the other XML readers of outside input (`inbound`'s Atom and VD feeds).
pub fn referenced_char(r: &quick_xml::events::BytesRef<'_>) -> Result<char, String> {
    if let Some(c) = r.resolve_char_ref().map_err(|e| e.to_string())? {
        return Ok(c);
    }
    match r.decode().map_err(|e| e.to_string())?.as_ref() {
        "amp" => Ok('&'),
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "quot" => Ok('"'),
        "apos" => Ok('\''),
        other => Err(format!("undeclared entity `&{other};`")),
    }
}
