//! The public Atom feed (`GET /cap/feed.atom`): the latest released message of every active alert, plus the
//! latest messages of the most recently ended ones, newest first; and its ETag.
//!
//! Held messages (approval gate) never appear. Drills and tests do, marked: their CAP status says so and their
//! titles carry the `[演練]` / `[測試]` prefix the builder puts on every headline.

use ring::digest;
use time::OffsetDateTime;

use super::config::FeedSettings;
use super::hex;
use super::outbox::State;
use encoders::cap::{write_atom, AtomEntry, AtomFeed};

/// Renders the feed and its strong ETag (a hash of the bytes, quoted as HTTP wants it).
pub(crate) fn render(state: &State, settings: &FeedSettings, base_url: &str) -> (String, String) {
    let mut active = Vec::new();
    let mut ended = Vec::new();
    for alert in state.alerts.values() {
        // The latest released message's body is always kept in memory (`State::prune`).
        let latest = alert.messages.iter().rev().find(|m| m.released).and_then(|m| state.messages.get(&m.identifier));
        if let Some(m) = latest {
            // Ended: an all-clear Update or a Cancel.
            if m.view.state.is_end() {
                ended.push(m);
            } else {
                active.push(m);
            }
        }
    }
    // Newest first; identifiers break ties so the order (and the ETag) is stable.
    let newest_first = |a: &&super::messages::StoredMessage, b: &&super::messages::StoredMessage| {
        b.sent_ms.cmp(&a.sent_ms).then_with(|| b.identifier.cmp(&a.identifier))
    };
    ended.sort_by(newest_first);
    ended.truncate(settings.recent);
    active.extend(ended);
    active.sort_by(newest_first);

    let entries: Vec<AtomEntry> = active
        .iter()
        .map(|m| AtomEntry {
            identifier: m.identifier.clone(),
            title: m.title.clone(),
            updated: m.sent(),
            summary: m.summary.clone(),
            author: m.author.clone(),
        })
        .collect();
    let feed = AtomFeed {
        base_url: base_url.to_string(),
        title: settings.title.clone(),
        // An empty feed still needs a date; the epoch keeps it (and its ETag) the same across restarts.
        updated: entries.first().map_or(OffsetDateTime::UNIX_EPOCH, |e| e.updated),
        author: settings.author.clone(),
        entries,
    };
    let xml = match write_atom(&feed) {
        Ok(x) => x,
        Err(e) => {
            // Base URL and texts are checked at start; this is a bug, so say so rather than serve half a feed.
            tracing::error!(error = %e, "cannot write the CAP feed");
            String::new()
        }
    };
    let etag = format!("\"{}\"", &hex(digest::digest(&digest::SHA256, xml.as_bytes()).as_ref())[..32]);
    (xml, etag)
}
