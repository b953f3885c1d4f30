//! Atom feed (RFC 4287) of CAP messages: one entry per message, linking to `/cap/{identifier}.xml` as
//! `application/cap+xml`, the form Google Public Alerts and Taiwan's civil alert platform poll.
//!
//! Links are absolute (the base URL is an input) because aggregators fetch the CAP file from the link as is.

use time::OffsetDateTime;

use super::message::{check_text, CapAlert, InvalidMessage};
use super::times::{format_cap_time, TimeError};
use super::write::XmlOut;

/// The Atom namespace.
pub const ATOM_NAMESPACE: &str = "http://www.w3.org/2005/Atom";
/// Media type of a CAP document, as the alternate link announces it.
pub const CAP_MEDIA_TYPE: &str = "application/cap+xml";

/// The feed as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct AtomFeed {
    /// Public base URL of the HTTP server, e.g. `https://alerts.example.tw` (no trailing slash needed).
    pub base_url: String,
    /// Feed title, e.g. 災害應變雲端平台 警報 / disaster-cloud alerts.
    pub title: String,
    /// Last change of the feed (the newest entry's `updated`, usually).
    pub updated: OffsetDateTime,
    /// Publisher name, used as the feed's author.
    pub author: String,
    /// Newest first, as aggregators expect.
    pub entries: Vec<AtomEntry>,
}

/// One CAP message in the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct AtomEntry {
    /// CAP identifier; the link is `{base_url}/cap/{identifier}.xml` (percent-encoded where needed).
    pub identifier: String,
    /// Usually the zh-TW headline (already prefixed `[演練]` for drills by the builder).
    pub title: String,
    /// When this message was sent.
    pub updated: OffsetDateTime,
    /// Short text, usually the description.
    pub summary: Option<String>,
    /// Human sender name.
    pub author: String,
}

impl AtomEntry {
    /// An entry for `alert`, texts taken from its info in `language` (or the first info).
    pub fn from_alert(alert: &CapAlert, language: &str) -> AtomEntry {
        let info = alert.infos.iter().find(|i| i.language == language).or(alert.infos.first());
        let title = info
            .and_then(|i| i.headline.clone())
            .or_else(|| info.map(|i| i.event.clone()))
            .unwrap_or_else(|| alert.identifier.clone());
        AtomEntry {
            identifier: alert.identifier.clone(),
            title,
            updated: alert.sent,
            summary: info.and_then(|i| i.description.clone()),
            author: info.and_then(|i| i.sender_name.clone()).unwrap_or_else(|| alert.sender.clone()),
        }
    }
}

/// Why a feed could not be written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AtomError {
    /// Base URL must be absolute http(s) without query or fragment.
    #[error("base URL `{0}` must be an absolute http:// or https:// URL without query or fragment")]
    BadBaseUrl(String),
    /// Text with characters XML cannot carry.
    #[error(transparent)]
    Invalid(#[from] InvalidMessage),
    /// A time that cannot be written with an offset.
    #[error("{at}: {source}")]
    Time { at: String, source: TimeError },
}

/// Percent-encodes everything outside RFC 3986's unreserved set, so any CAP identifier makes a valid path segment.
pub fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The absolute URL of one CAP message.
pub fn cap_url(base_url: &str, identifier: &str) -> String {
    format!("{}/cap/{}.xml", base_url.trim_end_matches('/'), encode_path_segment(identifier))
}

/// Writes the feed document.
pub fn write_atom(feed: &AtomFeed) -> Result<String, AtomError> {
    let base = feed.base_url.trim_end_matches('/');
    let scheme_ok =
        base.strip_prefix("https://").or_else(|| base.strip_prefix("http://")).is_some_and(|rest| !rest.is_empty());
    if !scheme_ok || base.contains(['?', '#', ' ', '"', '<', '>']) {
        return Err(AtomError::BadBaseUrl(feed.base_url.clone()));
    }
    // Atom dates are RFC 3339; CAP's form (offset, no fraction) is a valid RFC 3339 date-time, so one format serves.
    let time = |at: &str, t: OffsetDateTime| {
        format_cap_time(t).map_err(|source| AtomError::Time { at: at.to_string(), source })
    };
    check_text("feed/title", &feed.title)?;
    check_text("feed/author", &feed.author)?;

    let self_url = format!("{base}/cap/feed.atom");
    let mut x = XmlOut::new();
    x.open_with("feed", &[("xmlns", ATOM_NAMESPACE)]);
    x.leaf("id", &self_url);
    x.leaf("title", &feed.title);
    x.leaf("updated", &time("feed/updated", feed.updated)?);
    x.empty("link", &[("rel", "self"), ("type", "application/atom+xml"), ("href", &self_url)]);
    x.open("author");
    x.leaf("name", &feed.author);
    x.close("author");
    for (i, e) in feed.entries.iter().enumerate() {
        let at = format!("feed/entry[{i}]");
        check_text(&format!("{at}/identifier"), &e.identifier)?;
        check_text(&format!("{at}/title"), &e.title)?;
        check_text(&format!("{at}/author"), &e.author)?;
        if let Some(s) = &e.summary {
            check_text(&format!("{at}/summary"), s)?;
        }
        let url = cap_url(base, &e.identifier);
        x.open("entry");
        // The CAP file's URL is permanent and unique per message, which is what an Atom id must be.
        x.leaf("id", &url);
        x.leaf("title", &e.title);
        x.leaf("updated", &time(&format!("{at}/updated"), e.updated)?);
        x.open("author");
        x.leaf("name", &e.author);
        x.close("author");
        x.empty("link", &[("rel", "alternate"), ("type", CAP_MEDIA_TYPE), ("href", &url)]);
        if let Some(s) = &e.summary {
            x.leaf("summary", s);
        }
        x.close("entry");
    }
    x.close("feed");
    Ok(x.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encodes_identifiers() {
        assert_eq!(cap_url("https://a.tw/", "TW-DC-1"), "https://a.tw/cap/TW-DC-1.xml");
        assert_eq!(encode_path_segment("a/b?c#d%:颱"), "a%2Fb%3Fc%23d%25%3A%E9%A2%B1");
    }
}
