//! The broadcast text for each mode. A drill or test must never reach phones looking like a
//! real warning (a city app pushed a Test message as real in 2025), so the prefix is added
//! here, in the one function every broadcast's text passes through, not by operators.

use super::pws::Language;

/// Whether a broadcast is real. Maps from CAP `status`: `Actual` → `Actual`,
/// `Exercise` → `Drill`, `Test`/`System` → `Test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BroadcastMode {
    Actual,
    /// An exercise: prefixed `[演練]` / `[Drill]`, the labels Taiwan's drills use.
    Drill,
    /// A technical test (e.g. the monthly test channel): prefixed `[測試]` / `[Test]`.
    Test,
}

/// The prefix a mode puts in front of the text on `language`'s channel (empty for `Actual`).
pub fn prefix(mode: BroadcastMode, language: Language) -> &'static str {
    // Chinese has no word spaces, so no space after its bracket; English does.
    match (mode, language) {
        (BroadcastMode::Actual, _) => "",
        (BroadcastMode::Drill, Language::Chinese) => "[演練]",
        (BroadcastMode::Drill, Language::English) => "[Drill] ",
        (BroadcastMode::Test, Language::Chinese) => "[測試]",
        (BroadcastMode::Test, Language::English) => "[Test] ",
    }
}

/// The text to broadcast: `text` for `Actual`, otherwise with the mode's prefix; line breaks
/// written as LF (CRLF and lone CR become LF: CR is the page padding of cell broadcast, which
/// the encoder refuses in text, see `pages.rs`). Adding is idempotent: text that already starts
/// with the prefix is not prefixed twice (an update re-sent from stored text keeps one label).
pub fn broadcast_text(mode: BroadcastMode, language: Language, text: &str) -> String {
    let text = if text.contains('\r') { text.replace("\r\n", "\n").replace('\r', "\n") } else { text.to_string() };
    let p = prefix(mode, language);
    if p.is_empty() || text.starts_with(p) {
        text
    } else {
        format!("{p}{text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(broadcast_text(BroadcastMode::Drill, Language::Chinese, "豪雨特報"), "[演練]豪雨特報");
        assert_eq!(broadcast_text(BroadcastMode::Drill, Language::English, "Heavy rain"), "[Drill] Heavy rain");
        assert_eq!(broadcast_text(BroadcastMode::Test, Language::English, "Monthly test"), "[Test] Monthly test");
        assert_eq!(broadcast_text(BroadcastMode::Actual, Language::Chinese, "豪雨特報"), "豪雨特報");
        let once = broadcast_text(BroadcastMode::Drill, Language::Chinese, "地震");
        assert_eq!(broadcast_text(BroadcastMode::Drill, Language::Chinese, &once), once);
    }

    #[test]
    fn line_breaks_become_lf_so_the_encoder_takes_them() {
        let text = "Heavy rain\r\nMove to higher ground\rNow\n";
        let out = broadcast_text(BroadcastMode::Actual, Language::English, text);
        assert_eq!(out, "Heavy rain\nMove to higher ground\nNow\n");
        let serial = super::super::SerialNumber::from_u16(1);
        let cb =
            super::super::encode_broadcast(super::super::PwsClass::Alert, Language::English, serial, &out).unwrap();
        assert_eq!(super::super::pages::decode_pages(&cb.page_bytes()).unwrap().text, out);
    }
}
