//! Reading an Atom feed (RFC 4287) of CAP messages: for each entry its `id`, `updated` and the link to the CAP
//! document. Taiwan's civil alert platform, Google Public Alerts and our own `cap::atom` all announce each message
//! as an entry whose link has `type="application/cap+xml"`; feeds that omit the type get their `alternate` link.
//!
//! Only what polling needs is read, leniently on anything else (unknown elements, foreign namespaces), but the
//! document must be well-formed, UTF-8, without DOCTYPE (no entity expansion), and within the entry bound.

use quick_xml::events::Event;
use quick_xml::reader::Reader;

/// Most entries read from one feed; real feeds carry tens. The rest are ignored (and counted by the caller).
pub const MAX_ENTRIES: usize = 2000;

/// One entry of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    /// Atom `id` (Taiwan's platform uses the CAP identifier); falls back to the link when absent.
    pub id: String,
    /// Atom `updated` as written: an entry whose `id` and `updated` we have processed is not fetched again.
    pub updated: String,
    /// The CAP document's URL as written (possibly relative to the feed).
    pub link: Option<String>,
}

/// Why a feed document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtomReadError {
    #[error("feed is not well-formed XML at byte {position}: {message}")]
    Xml { position: u64, message: String },
    #[error("feed root is `{0}`, expected Atom `feed`")]
    NotAtom(String),
}

/// The entries of `text`, in document order.
pub fn read_feed(text: &str) -> Result<Vec<FeedEntry>, AtomReadError> {
    let mut reader = Reader::from_str(text);
    let mut path: Vec<String> = Vec::new();
    let mut entries = Vec::new();
    let mut current: Option<Partial> = None;
    let mut text_buf = String::new();
    let mut saw_root = false;
    loop {
        let position = reader.buffer_position();
        let bad = |message: String| AtomReadError::Xml { position, message };
        let event = reader.read_event().map_err(|e| bad(e.to_string()))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if !saw_root {
                    saw_root = true;
                    if name != "feed" {
                        return Err(AtomReadError::NotAtom(name));
                    }
                }
                let depth = path.len();
                if name == "entry" && depth == 1 {
                    current = Some(Partial::default());
                } else if let Some(entry) = current.as_mut().filter(|_| depth == 2) {
                    if name == "link" {
                        let mut link = Link::default();
                        for attr in e.attributes() {
                            let attr = attr.map_err(|err| bad(err.to_string()))?;
                            let value = attr.unescape_value().map_err(|err| bad(err.to_string()))?;
                            match attr.key.local_name().as_ref() {
                                b"href" => link.href = Some(value.trim().to_string()),
                                b"rel" => link.rel = Some(value.trim().to_string()),
                                b"type" => link.media_type = Some(value.trim().to_ascii_lowercase()),
                                _ => {}
                            }
                        }
                        entry.links.push(link);
                    }
                } else {
                    for attr in e.attributes() {
                        attr.map_err(|err| bad(err.to_string()))?;
                    }
                }
                text_buf.clear();
                if matches!(event, Event::Start(_)) {
                    path.push(name);
                }
            }
            Event::End(_) => {
                let name = path.pop().ok_or_else(|| bad("unmatched end tag".into()))?;
                let depth = path.len();
                if depth == 2 {
                    if let Some(entry) = current.as_mut() {
                        match name.as_str() {
                            "id" => entry.id = Some(text_buf.trim().to_string()),
                            "updated" => entry.updated = Some(text_buf.trim().to_string()),
                            _ => {}
                        }
                    }
                } else if depth == 1 && name == "entry" {
                    if let Some(entry) = current.take().and_then(Partial::finish) {
                        if entries.len() < MAX_ENTRIES {
                            entries.push(entry);
                        }
                    }
                }
                text_buf.clear();
            }
            Event::Text(t) => {
                let s = t.xml10_content().map_err(|e| bad(e.to_string()))?;
                text_buf.push_str(&s);
            }
            Event::CData(t) => {
                let s = t.decode().map_err(|e| bad(e.to_string()))?;
                text_buf.push_str(&s);
            }
            Event::GeneralRef(r) => {
                let c = encoders::cap::parse::referenced_char(&r).map_err(bad)?;
                text_buf.push(c);
            }
            // Entities declared in a DTD could expand without bound; feeds never need one.
            Event::DocType(_) => return Err(bad("DOCTYPE is not allowed".into())),
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !path.is_empty() {
        return Err(AtomReadError::Xml {
            position: reader.buffer_position(),
            message: "document ends inside an element".into(),
        });
    }
    if !saw_root {
        return Err(AtomReadError::NotAtom(String::new()));
    }
    Ok(entries)
}

#[derive(Debug, Default)]
struct Link {
    href: Option<String>,
    rel: Option<String>,
    media_type: Option<String>,
}

#[derive(Debug, Default)]
struct Partial {
    id: Option<String>,
    updated: Option<String>,
    links: Vec<Link>,
}

impl Partial {
    fn finish(self) -> Option<FeedEntry> {
        let is_cap = |l: &&Link| {
            l.media_type.as_deref().is_some_and(|t| t == "application/cap+xml" || t.starts_with("application/cap+xml;"))
        };
        // Atom: a link without rel is rel="alternate".
        let is_alternate = |l: &&Link| l.rel.as_deref().is_none_or(|r| r == "alternate");
        let link = self
            .links
            .iter()
            .find(is_cap)
            .or_else(|| self.links.iter().find(is_alternate))
            .and_then(|l| l.href.clone())
            .filter(|h| !h.is_empty());
        let id = self.id.filter(|s| !s.is_empty()).or_else(|| link.clone())?;
        Some(FeedEntry { id, updated: self.updated.unwrap_or_default(), link })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_taiwan_platform_shape() {
        let feed = r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <id>https://alerts.example.tw/feed</id><title>示警</title><updated>2026-11-26T18:00:00+08:00</updated>
  <entry>
    <id>CWA-Weather_heavy_rain_202611261800001</id>
    <title>大雨特報</title>
    <updated>2026-11-26T18:00:00+08:00</updated>
    <link rel="alternate" href="/Capstorage/CWA/a&amp;b.cap"/>
    <link rel="related" type="application/cap+xml" href="https://x.tw/a.cap"/>
  </entry>
  <entry>
    <title>no id</title><updated>2026-11-26T17:00:00+08:00</updated>
    <link href="https://x.tw/b.cap"/>
  </entry>
  <entry><title>nothing to fetch</title></entry>
</feed>"#;
        let entries = read_feed(feed).expect("feed reads");
        assert_eq!(
            entries,
            vec![
                FeedEntry {
                    id: "CWA-Weather_heavy_rain_202611261800001".into(),
                    updated: "2026-11-26T18:00:00+08:00".into(),
                    link: Some("https://x.tw/a.cap".into()),
                },
                FeedEntry {
                    id: "https://x.tw/b.cap".into(),
                    updated: "2026-11-26T17:00:00+08:00".into(),
                    link: Some("https://x.tw/b.cap".into()),
                },
            ]
        );
    }

    #[test]
    fn refuses_bad_feeds() {
        assert!(matches!(read_feed("<rss/>"), Err(AtomReadError::NotAtom(_))));
        assert!(matches!(read_feed("<feed><entry>"), Err(AtomReadError::Xml { .. })));
        assert!(matches!(read_feed("<!DOCTYPE feed [<!ENTITY a \"b\">]><feed/>"), Err(AtomReadError::Xml { .. })));
        assert!(matches!(read_feed(""), Err(AtomReadError::NotAtom(_))));
    }
}
