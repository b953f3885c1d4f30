//! Decoding a VDLive document, JSON or XML, into [`VdLive`] records: structure only, no judgement of values (that
//! is `readings.rs`).
//!
//! Two levels, as for device payloads: the document as a whole must be UTF-8, well-formed JSON or XML, of the
//! VDLive shape (an object with `VDLives`, a bare array of them, or the XML `VDLiveList`), within
//! [`MAX_DETECTORS`]; otherwise nothing in it is trusted ([`DecodeError`]). Inside it each detector's record is
//! decoded on its own, so one broken record ([`RecordError`]) never sinks its neighbours.
//!
//! Unknown fields are ignored on purpose: the standard is extended by publishers (`SubAuthorityCode`, `Count`,
//! `LinkVersion`, `SrcUpdateTime`) and a new field must not stop a feed. The XML reader accepts any namespace
//! (`http://traffic.transportdata.tw/standard/traffic/schema/` in the national feeds) and refuses a DOCTYPE (no
//! entity expansion), as the Atom reader does.

use quick_xml::events::Event;
use quick_xml::reader::Reader;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Most detector records read from one document. The national freeway feed carries ~3,300; more is a mistake or an
/// attack, and the document is refused whole.
pub const MAX_DETECTORS: usize = 20_000;
/// Deepest XML nesting accepted: VDLiveList/VDLives/VDLive/LinkFlows/LinkFlow/Lanes/Lane/Vehicles/Vehicle/Volume is 10.
const MAX_XML_DEPTH: usize = 16;
/// Most lanes per detector (a freeway has ≤ 6 a direction, both directions 12): more is a broken record.
pub const MAX_LANES: usize = 32;

/// A decoded document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VdLiveDocument {
    /// `SrcUpdateInterval` (the source's collection period, seconds), else `UpdateInterval` (the platform's).
    pub update_interval_s: Option<f64>,
    /// `AuthorityCode` (NFB, THB, a city's code), for the log.
    pub authority: Option<String>,
    /// Each detector's record, or why it could not be read.
    pub detectors: Vec<Result<VdLive, RecordError>>,
}

/// One detector's record (`VDLive`), every field as published; `None` where the document left it out.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VdLive {
    #[serde(rename = "VDID")]
    pub vdid: String,
    #[serde(default)]
    pub link_flows: Vec<LinkFlow>,
    /// 0 normal, 1 communication failure, 2 out of service or under construction, 3 faulty.
    #[serde(default)]
    pub status: Option<i64>,
    /// ISO 8601, normally with `+08:00`.
    pub data_collect_time: String,
}

/// The lanes of one link (`LinkFlow`) the detector covers.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LinkFlow {
    #[serde(default, rename = "LinkID")]
    pub link_id: Option<String>,
    #[serde(default)]
    pub lanes: Vec<Lane>,
}

/// One lane's measurements over the collection interval. `-99` means "data error" in `Speed` and `Volume`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Lane {
    #[serde(default, rename = "LaneID")]
    pub lane_id: Option<i64>,
    #[serde(default)]
    pub lane_type: Option<i64>,
    /// Mean speed, km/h.
    #[serde(default)]
    pub speed: Option<f64>,
    /// Share of the interval the detector was occupied, percent (0–100).
    #[serde(default)]
    pub occupancy: Option<f64>,
    #[serde(default)]
    pub vehicles: Vec<Vehicle>,
}

/// Vehicles of one class (`S` small, `L` large, `T` trailer, `M` motorcycle) in one lane over the interval.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Vehicle {
    #[serde(default)]
    pub vehicle_type: Option<String>,
    /// Count over the collection interval.
    #[serde(default)]
    pub volume: Option<f64>,
    #[serde(default)]
    pub speed: Option<f64>,
}

/// The document as a whole could not be read: nothing in it is taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not UTF-8 (valid up to byte {0})")]
    NotUtf8(usize),
    #[error("empty document")]
    Empty,
    #[error("not well-formed JSON: {0}")]
    Json(String),
    #[error("not well-formed XML at byte {position}: {message}")]
    Xml { position: u64, message: String },
    #[error("not a VDLive document: {0}")]
    NotVdLive(String),
    #[error("{0} detector records, over the limit of {MAX_DETECTORS}")]
    TooMany(usize),
}

/// One detector record that could not be read (its neighbours still are).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("detector record {index}{}: {message}", .vdid.as_deref().map(|v| format!(" (`{v}`)")).unwrap_or_default())]
pub struct RecordError {
    /// Position in the document (0-based).
    pub index: usize,
    /// The VDID, when it could be read.
    pub vdid: Option<String>,
    pub message: String,
}

/// Decodes `bytes`: XML when the first non-blank character is `<`, JSON otherwise (a byte-order mark is skipped).
pub fn decode(bytes: &[u8]) -> Result<VdLiveDocument, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::NotUtf8(e.valid_up_to()))?;
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text).trim_start();
    match text.as_bytes().first() {
        None => Err(DecodeError::Empty),
        Some(b'<') => decode_xml(text),
        Some(_) => decode_json(text),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct JsonDocument<'a> {
    #[serde(default)]
    update_interval: Option<f64>,
    #[serde(default)]
    src_update_interval: Option<f64>,
    #[serde(default)]
    authority_code: Option<String>,
    #[serde(borrow, rename = "VDLives")]
    vd_lives: Option<Vec<&'a RawValue>>,
}

fn decode_json(text: &str) -> Result<VdLiveDocument, DecodeError> {
    let value: &RawValue = serde_json::from_str(text).map_err(|e| DecodeError::Json(e.to_string()))?;
    let (records, mut doc) = if value.get().trim_start().starts_with('[') {
        let records: Vec<&RawValue> =
            serde_json::from_str(value.get()).map_err(|e| DecodeError::NotVdLive(e.to_string()))?;
        (records, VdLiveDocument::default())
    } else {
        let wire: JsonDocument<'_> =
            serde_json::from_str(value.get()).map_err(|e| DecodeError::NotVdLive(e.to_string()))?;
        let records = wire.vd_lives.ok_or_else(|| DecodeError::NotVdLive("no `VDLives` array".into()))?;
        let doc = VdLiveDocument {
            update_interval_s: wire.src_update_interval.filter(|s| *s > 0.0).or(wire.update_interval),
            authority: wire.authority_code,
            detectors: Vec::new(),
        };
        (records, doc)
    };
    if records.len() > MAX_DETECTORS {
        return Err(DecodeError::TooMany(records.len()));
    }
    doc.detectors = records
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            serde_json::from_str::<VdLive>(raw.get()).map_err(|e| {
                let vdid = serde_json::from_str::<serde_json::Value>(raw.get())
                    .ok()
                    .and_then(|v| v.get("VDID").and_then(|id| id.as_str()).map(str::to_string));
                RecordError { index, vdid, message: e.to_string() }
            })
        })
        .collect();
    Ok(doc)
}

/// A minimal element tree: what the VDLive XML needs (element names, text, children), nothing else.
#[derive(Debug, Default)]
struct Node {
    name: String,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }
    fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim()).filter(|t| !t.is_empty())
    }
    /// The `item` children of the `list` child (`LinkFlows/LinkFlow`).
    fn items<'a>(&'a self, list: &str, item: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.child(list).into_iter().flat_map(move |l| l.children.iter().filter(move |c| c.name == item))
    }
}

fn parse_tree(text: &str) -> Result<Node, DecodeError> {
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut elements = 0usize;
    loop {
        let position = reader.buffer_position();
        let bad = |message: String| DecodeError::Xml { position, message };
        match reader.read_event().map_err(|e| bad(e.to_string()))? {
            Event::Start(e) => {
                if root.is_some() {
                    return Err(bad("content after the root element".into()));
                }
                if stack.len() >= MAX_XML_DEPTH {
                    return Err(bad(format!("nested deeper than {MAX_XML_DEPTH}")));
                }
                elements += 1;
                // 64 elements per detector is generous (3 lanes × 3 classes ≈ 40); the count stops huge documents.
                if elements > MAX_DETECTORS * 64 {
                    return Err(DecodeError::TooMany(elements / 64));
                }
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                stack.push(Node { name, ..Node::default() });
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node { name, ..Node::default() }),
                    None => return Err(bad("empty root element".into())),
                }
            }
            Event::End(_) => {
                let node = stack.pop().ok_or_else(|| bad("unmatched end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            Event::Text(t) => {
                let s = t.xml10_content().map_err(|e| bad(e.to_string()))?;
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&s);
                }
            }
            Event::CData(t) => {
                let s = t.decode().map_err(|e| bad(e.to_string()))?;
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&s);
                }
            }
            Event::GeneralRef(r) => {
                let c = encoders::cap::parse::referenced_char(&r).map_err(bad)?;
                if let Some(node) = stack.last_mut() {
                    node.text.push(c);
                }
            }
            // Entities declared in a DTD could expand without bound; the standard needs none.
            Event::DocType(_) => return Err(bad("DOCTYPE is not allowed".into())),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(DecodeError::Xml {
            position: reader.buffer_position(),
            message: "document ends inside an element".into(),
        });
    }
    root.ok_or(DecodeError::Empty)
}

fn decode_xml(text: &str) -> Result<VdLiveDocument, DecodeError> {
    let root = parse_tree(text)?;
    if root.name != "VDLiveList" {
        return Err(DecodeError::NotVdLive(format!("root element is `{}`, expected `VDLiveList`", root.name)));
    }
    let number = |node: &Node, name: &str| node.text_of(name).and_then(|t| t.parse::<f64>().ok());
    let records: Vec<&Node> = root.items("VDLives", "VDLive").collect();
    if records.len() > MAX_DETECTORS {
        return Err(DecodeError::TooMany(records.len()));
    }
    Ok(VdLiveDocument {
        update_interval_s: number(&root, "SrcUpdateInterval").filter(|s| *s > 0.0).or(number(&root, "UpdateInterval")),
        authority: root.text_of("AuthorityCode").map(str::to_string),
        detectors: records.iter().enumerate().map(|(index, node)| xml_record(index, node)).collect(),
    })
}

fn xml_record(index: usize, node: &Node) -> Result<VdLive, RecordError> {
    let vdid = node.text_of("VDID").map(str::to_string);
    let fail = |message: String| RecordError { index, vdid: vdid.clone(), message };
    // A field that is present must read as a number; an absent one is `None`, as in JSON.
    let number = |n: &Node, name: &str| -> Result<Option<f64>, RecordError> {
        match n.text_of(name) {
            None => Ok(None),
            Some(t) => t.parse::<f64>().map(Some).map_err(|_| fail(format!("{name} `{t}` is not a number"))),
        }
    };
    let integer = |n: &Node, name: &str| -> Result<Option<i64>, RecordError> {
        match n.text_of(name) {
            None => Ok(None),
            Some(t) => t.parse::<i64>().map(Some).map_err(|_| fail(format!("{name} `{t}` is not an integer"))),
        }
    };
    let id = vdid.clone().ok_or_else(|| fail("missing field `VDID`".into()))?;
    let time = node.text_of("DataCollectTime").ok_or_else(|| fail("missing field `DataCollectTime`".into()))?;
    let mut link_flows = Vec::new();
    for flow in node.items("LinkFlows", "LinkFlow") {
        let mut lanes = Vec::new();
        for lane in flow.items("Lanes", "Lane") {
            let mut vehicles = Vec::new();
            for v in lane.items("Vehicles", "Vehicle") {
                vehicles.push(Vehicle {
                    vehicle_type: v.text_of("VehicleType").map(str::to_string),
                    volume: number(v, "Volume")?,
                    speed: number(v, "Speed")?,
                });
            }
            lanes.push(Lane {
                lane_id: integer(lane, "LaneID")?,
                lane_type: integer(lane, "LaneType")?,
                speed: number(lane, "Speed")?,
                occupancy: number(lane, "Occupancy")?,
                vehicles,
            });
        }
        link_flows.push(LinkFlow { link_id: flow.text_of("LinkID").map(str::to_string), lanes });
    }
    Ok(VdLive { vdid: id, link_flows, status: integer(node, "Status")?, data_collect_time: time.to_string() })
}
