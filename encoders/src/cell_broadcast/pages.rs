//! CBS pages (3GPP TS 23.041 §9.4.1.2): splitting text into at most 15 pages of 82 content
//! octets, and the 88-octet page a GSM/UMTS cell sends.
//!
//! ```text
//! serial number (2) | message identifier (2) | DCS (1) | page parameter (1) | content (82)
//! ```
//!
//! The page parameter is the page number in the high nibble and the total in the low one.
//! Content is 93 GSM septets or 41 UCS-2 characters, padded with CR. An escape pair or a
//! UCS-2 character is never split across pages: each page is decoded on its own.
//!
//! ## Why a CR in the text is refused
//! TS 23.038 pads every CBS page with CR (§6.1.2.3) and, for the 7 spare bits of a GSM 7-bit
//! message, fills them with CR too, noting that a receiver cannot tell a wanted final CR from
//! that padding (it treats `<CR><CR>` like `<CR>`). The 88-octet page carries no text length, so
//! a CR that ends a page's text — the last character of the message, or the last slot of any
//! page — is indistinguishable from padding, and our decoder (like a handset) drops it:
//! `"aaaa…a\r" + "b"` with the CR on position 41 of a UCS-2 page came back without it (finding F2
//! of `fuzz/README.md`). Moving such CRs to the next page fails for runs of CRs longer than a
//! page, and substituting LF silently changes the text. So [`paginate`] refuses CR anywhere
//! ([`CbsError::CarriageReturn`]) and whatever it accepts decodes back exactly; the one function
//! every broadcast's text passes through, [`super::drill::broadcast_text`], writes line breaks
//! as LF (GSM 0x0A / U+000A), so alert texts with CRLF line ends still go out.

use super::dcs::{Alphabet, Coding};
use super::serial::SerialNumber;
use super::{gsm7, CbsError};

/// Octets of one page as a cell sends it.
pub const PAGE_OCTETS: usize = 88;
/// Content octets of a page.
pub const CONTENT_OCTETS: usize = 82;
/// Most pages one message may have (the page parameter has 4 bits; 0 is reserved).
pub const MAX_PAGES: usize = 15;
/// GSM 7-bit septets a page holds (82 × 8 / 7, rounded down).
pub const GSM7_PER_PAGE: usize = 93;
/// UCS-2 characters a page holds.
pub const UCS2_PER_PAGE: usize = 41;
/// UCS-2 characters a DCS 0x11 page holds after its 2-octet language indication.
pub const UCS2_WITH_LANGUAGE_PER_PAGE: usize = 40;

/// One page's content: 82 octets, and how many of them carry text rather than CR padding
/// (the LTE form sends that count with each page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageContent {
    /// Text then CR padding.
    pub octets: [u8; CONTENT_OCTETS],
    /// Octets of useful content, 1..=82.
    pub useful_len: u8,
}

/// Split `text` into page contents in `coding`.
///
/// Errors: empty text; a CR anywhere (it is the padding, see the module doc); a character the
/// coding cannot carry (GSM 7-bit: outside both tables; UCS-2: outside the Basic Multilingual
/// Plane); more than 15 pages, reported with the length in the coding's units and the 15-page
/// limit, so the operator can shorten the text. Accepted text decodes back exactly.
pub fn paginate(text: &str, coding: Coding) -> Result<Vec<PageContent>, CbsError> {
    if text.is_empty() {
        return Err(CbsError::EmptyText);
    }
    if let Some(position) = text.chars().position(|c| c == '\r') {
        return Err(CbsError::CarriageReturn { position });
    }
    match coding {
        Coding::Gsm7 => paginate_gsm7(text),
        Coding::Ucs2 => paginate_ucs2(text, None),
        Coding::Ucs2WithLanguage(lang) => paginate_ucs2(text, Some(lang)),
    }
}

fn paginate_gsm7(text: &str) -> Result<Vec<PageContent>, CbsError> {
    // Septets of each page; a character that does not fit the current page starts the next,
    // so an escape pair stays together.
    let mut pages: Vec<Vec<u8>> = vec![Vec::with_capacity(GSM7_PER_PAGE)];
    let mut total = 0;
    for (position, ch) in text.chars().enumerate() {
        let g = gsm7::encode_char(ch).ok_or(CbsError::Unencodable { ch, position, coding: "GSM 7-bit" })?;
        total += g.septets();
        let fits = pages.last().is_some_and(|p| p.len() + g.septets() <= GSM7_PER_PAGE);
        if !fits {
            pages.push(Vec::with_capacity(GSM7_PER_PAGE));
        }
        // Past the limit we keep counting (for the error) but stop storing.
        if pages.len() <= MAX_PAGES {
            if let Some(page) = pages.last_mut() {
                g.push_to(page);
            }
        }
    }
    if pages.len() > MAX_PAGES {
        return Err(CbsError::TooLong {
            length: total,
            limit: MAX_PAGES * GSM7_PER_PAGE,
            pages: pages.len(),
            unit: "GSM 7-bit septets",
        });
    }
    Ok(pages
        .into_iter()
        .map(|mut septets| {
            let useful = gsm7::packed_len(septets.len());
            septets.resize(GSM7_PER_PAGE, gsm7::CR);
            let packed = gsm7::pack(&septets);
            let mut octets = [0u8; CONTENT_OCTETS];
            octets.copy_from_slice(&packed);
            PageContent { octets, useful_len: useful as u8 }
        })
        .collect())
}

fn paginate_ucs2(text: &str, language: Option<[u8; 2]>) -> Result<Vec<PageContent>, CbsError> {
    let per_page = if language.is_some() { UCS2_WITH_LANGUAGE_PER_PAGE } else { UCS2_PER_PAGE };
    let mut units = Vec::with_capacity(text.len());
    for (position, ch) in text.chars().enumerate() {
        // UCS-2 has no surrogate pairs: a character beyond U+FFFF cannot be sent exactly.
        let u = u16::try_from(u32::from(ch)).map_err(|_| CbsError::Unencodable { ch, position, coding: "UCS-2" })?;
        units.push(u);
    }
    let pages = units.len().div_ceil(per_page);
    if pages > MAX_PAGES {
        return Err(CbsError::TooLong {
            length: units.len(),
            limit: MAX_PAGES * per_page,
            pages,
            unit: "UCS-2 characters",
        });
    }
    Ok(units
        .chunks(per_page)
        .map(|chunk| {
            let mut octets = [0u8; CONTENT_OCTETS];
            let mut at = 0;
            if let Some(lang) = language {
                // Two septets packed into 14 bits, then 2 zero bits to the octet boundary.
                octets[..2].copy_from_slice(&gsm7::pack(&lang));
                at = 2;
            }
            let useful = at + 2 * chunk.len();
            let padding = std::iter::repeat(u16::from(gsm7::CR));
            for u in chunk.iter().copied().chain(padding) {
                if at + 2 > CONTENT_OCTETS {
                    break;
                }
                octets[at..at + 2].copy_from_slice(&u.to_be_bytes());
                at += 2;
            }
            PageContent { octets, useful_len: useful as u8 }
        })
        .collect())
}

/// The page parameter octet: page number (1-based) high nibble, total low nibble.
pub fn page_parameter(number: u8, total: u8) -> u8 {
    (number & 0xF) << 4 | (total & 0xF)
}

/// Assemble one 88-octet page.
pub fn cbs_page(
    serial: SerialNumber,
    message_id: u16,
    dcs: u8,
    number: u8,
    total: u8,
    content: &PageContent,
) -> [u8; PAGE_OCTETS] {
    let mut page = [0u8; PAGE_OCTETS];
    page[0..2].copy_from_slice(&serial.to_u16().to_be_bytes());
    page[2..4].copy_from_slice(&message_id.to_be_bytes());
    page[4] = dcs;
    page[5] = page_parameter(number, total);
    page[6..].copy_from_slice(&content.octets);
    page
}

/// A message read back from its pages by our own decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedMessage {
    pub message_id: u16,
    pub serial: SerialNumber,
    pub dcs: u8,
    /// The ISO 639 code of DCS 0x10/0x11 messages (from the first page).
    pub language: Option<String>,
    /// The text with each page's CR padding (all trailing CRs) removed.
    pub text: String,
}

/// Decode the text of one page's content (or the useful part of it, for the LTE form).
/// Returns the language indication (if the alphabet has one) and the text, trailing CRs
/// removed: CR is the padding, and TS 23.038 makes a trailing CR display like none. (Our
/// encoder never puts a CR in the text, so for its pages this is exact.)
pub fn decode_content(alphabet: Alphabet, content: &[u8]) -> Result<(Option<String>, String), CbsError> {
    let (language, mut text) = match alphabet {
        Alphabet::Gsm7 | Alphabet::Gsm7WithLanguage => {
            let s = gsm7::septets_to_string(&gsm7::unpack(content, content.len() * 8 / 7));
            if alphabet == Alphabet::Gsm7WithLanguage {
                // "ll" + CR, then the text.
                let lang: String = s.chars().take(2).collect();
                (Some(lang), s.chars().skip(3).collect())
            } else {
                (None, s)
            }
        }
        Alphabet::Ucs2 => (None, ucs2_to_string(content)?),
        Alphabet::Ucs2WithLanguage => {
            let head = content
                .get(..2)
                .ok_or_else(|| CbsError::Malformed("DCS 0x11 page shorter than its language indication".into()))?;
            let lang = gsm7::septets_to_string(&gsm7::unpack(head, 2));
            (Some(lang), ucs2_to_string(&content[2..])?)
        }
    };
    let trimmed = text.trim_end_matches('\r').len();
    text.truncate(trimmed);
    Ok((language, text))
}

fn ucs2_to_string(octets: &[u8]) -> Result<String, CbsError> {
    octets
        .chunks_exact(2)
        .map(|p| {
            let u = u16::from_be_bytes([p[0], p[1]]);
            char::from_u32(u32::from(u))
                .ok_or_else(|| CbsError::Malformed(format!("UCS-2 unit {u:#06x} is a lone surrogate")))
        })
        .collect()
}

/// Decode a whole message from its 88-octet pages (in order). Checks that the pages agree on
/// serial number, identifier and DCS, and that they are numbered 1..=n of n.
pub fn decode_pages(pages: &[[u8; PAGE_OCTETS]]) -> Result<DecodedMessage, CbsError> {
    let first = pages.first().ok_or_else(|| CbsError::Malformed("no pages".into()))?;
    let total = pages.len();
    if total > MAX_PAGES {
        return Err(CbsError::Malformed(format!("{total} pages; at most {MAX_PAGES}")));
    }
    let header = &first[..5];
    let alphabet = Alphabet::from_dcs(first[4])?;
    let mut text = String::new();
    let mut language = None;
    for (i, page) in pages.iter().enumerate() {
        if &page[..5] != header {
            return Err(CbsError::Malformed(format!("page {} has a different serial, identifier or DCS", i + 1)));
        }
        let expected = page_parameter(i as u8 + 1, total as u8);
        if page[5] != expected {
            return Err(CbsError::Malformed(format!(
                "page {} has page parameter {:#04x}, expected {expected:#04x}",
                i + 1,
                page[5]
            )));
        }
        let (lang, part) = decode_content(alphabet, &page[6..])?;
        if i == 0 {
            language = lang;
        }
        text.push_str(&part);
    }
    Ok(DecodedMessage {
        message_id: u16::from_be_bytes([first[2], first[3]]),
        serial: SerialNumber::from_u16(u16::from_be_bytes([first[0], first[1]])),
        dcs: first[4],
        language,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gsm_page_septets(p: &PageContent) -> Vec<u8> {
        gsm7::unpack(&p.octets, GSM7_PER_PAGE)
    }

    #[test]
    fn gsm7_pads_with_cr_to_93_septets() {
        let pages = paginate("Hello World", Coding::Gsm7).unwrap();
        assert_eq!(pages.len(), 1);
        assert_eq!(pages[0].useful_len, 10);
        let s = gsm_page_septets(&pages[0]);
        assert_eq!(&s[..11], &gsm7::to_septets("Hello World").unwrap()[..]);
        assert!(s[11..].iter().all(|&x| x == gsm7::CR));
        assert_eq!(pages[0].octets[81], 0, "the 5 bits after septet 93 are zero");
    }

    #[test]
    fn seven_and_eight_characters() {
        let p7 = paginate("ABCDEFG", Coding::Gsm7).unwrap();
        let p8 = paginate("ABCDEFG@", Coding::Gsm7).unwrap();
        assert_eq!(p7[0].useful_len, 7);
        assert_eq!(p8[0].useful_len, 7);
        // Within the useful 7 octets, the 8th septet is CR for 7 characters and '@' for 8.
        assert_eq!(decode_content(Alphabet::Gsm7, &p7[0].octets[..7]).unwrap().1, "ABCDEFG");
        assert_eq!(decode_content(Alphabet::Gsm7, &p8[0].octets[..7]).unwrap().1, "ABCDEFG@");
        assert_eq!(decode_content(Alphabet::Gsm7, &p8[0].octets).unwrap().1, "ABCDEFG@");
    }

    #[test]
    fn page_boundaries_at_93_septets() {
        let exactly = "a".repeat(93);
        assert_eq!(paginate(&exactly, Coding::Gsm7).unwrap().len(), 1);
        assert_eq!(paginate(&exactly, Coding::Gsm7).unwrap()[0].useful_len, 82);
        let one_more = "a".repeat(94);
        let pages = paginate(&one_more, Coding::Gsm7).unwrap();
        assert_eq!(pages.len(), 2);
        assert_eq!(pages[1].useful_len, 1);
    }

    #[test]
    fn escape_pair_is_not_split() {
        // 92 septets then '[' (2 septets): the pair moves to page 2 and page 1 ends in CR.
        let text = format!("{}[x", "a".repeat(92));
        let pages = paginate(&text, Coding::Gsm7).unwrap();
        assert_eq!(pages.len(), 2);
        let s1 = gsm_page_septets(&pages[0]);
        assert_eq!(s1[91], b'a');
        assert_eq!(s1[92], gsm7::CR);
        let s2 = gsm_page_septets(&pages[1]);
        assert_eq!(&s2[..3], &[gsm7::ESCAPE, 0x3C, b'x']);
    }

    #[test]
    fn ucs2_41_a_page_padded_with_cr() {
        let text = "雨".repeat(42);
        let pages = paginate(&text, Coding::Ucs2).unwrap();
        assert_eq!(pages.len(), 2);
        assert_eq!(pages[0].useful_len, 82);
        assert_eq!(pages[1].useful_len, 2);
        assert_eq!(&pages[1].octets[..4], &[0x96, 0xE8, 0x00, 0x0D]);
        assert!(pages[1].octets[2..].chunks(2).all(|c| c == [0x00, 0x0D]));
    }

    #[test]
    fn ucs2_with_language_carries_zh_on_every_page() {
        let text = "雨".repeat(41);
        let pages = paginate(&text, Coding::Ucs2WithLanguage(*b"zh")).unwrap();
        assert_eq!(pages.len(), 2, "40 a page after the language");
        for p in &pages {
            // 'z' = 0x7A, 'h' = 0x68 packed: 0x7A | (0 << 7), 0x68 >> 1 = 0x34, 2 zero bits.
            assert_eq!(&p.octets[..2], &[0x7A, 0x34]);
        }
        assert_eq!(pages[0].useful_len, 82);
        assert_eq!(pages[1].useful_len, 4);
        let (lang, text2) = decode_content(Alphabet::Ucs2WithLanguage, &pages[1].octets).unwrap();
        assert_eq!(lang.as_deref(), Some("zh"));
        assert_eq!(text2, "雨");
    }

    #[test]
    fn too_long_is_an_error_with_length_and_limit() {
        let err = paginate(&"a".repeat(15 * 93 + 1), Coding::Gsm7).unwrap_err();
        assert_eq!(err, CbsError::TooLong { length: 1396, limit: 1395, pages: 16, unit: "GSM 7-bit septets" });
        assert!(paginate(&"a".repeat(15 * 93), Coding::Gsm7).is_ok());
        let err = paginate(&"雨".repeat(616), Coding::Ucs2).unwrap_err();
        assert_eq!(err, CbsError::TooLong { length: 616, limit: 615, pages: 16, unit: "UCS-2 characters" });
        assert!(paginate(&"雨".repeat(615), Coding::Ucs2).is_ok());
        // Escape pairs that cannot straddle pages cost capacity: 697 pairs + 1 septet.
        let err = paginate(&format!("{}a", "€".repeat(697)), Coding::Gsm7).unwrap_err();
        assert!(matches!(err, CbsError::TooLong { length: 1395, limit: 1395, pages: 16, .. }), "{err}");
        assert!(err.to_string().contains("1395"));
    }

    #[test]
    fn unencodable_characters_are_errors() {
        assert_eq!(
            paginate("ab雨", Coding::Gsm7).unwrap_err(),
            CbsError::Unencodable { ch: '雨', position: 2, coding: "GSM 7-bit" }
        );
        assert_eq!(
            paginate("𥕢", Coding::Ucs2).unwrap_err(),
            CbsError::Unencodable { ch: '𥕢', position: 0, coding: "UCS-2" }
        );
        assert_eq!(paginate("", Coding::Ucs2).unwrap_err(), CbsError::EmptyText);
    }

    /// Finding F2: a CR on the last slot of a non-final page (here position 41 of a UCS-2 page) was
    /// taken for padding and lost. CR is now refused wherever it is, with its position.
    #[test]
    fn carriage_return_is_refused_with_its_position() {
        let f2 = format!("{}\r{}", "a".repeat(40), "b");
        for coding in [Coding::Ucs2, Coding::Gsm7, Coding::Ucs2WithLanguage(*b"en")] {
            assert_eq!(paginate(&f2, coding).unwrap_err(), CbsError::CarriageReturn { position: 40 });
        }
        assert_eq!(paginate("end\r", Coding::Gsm7).unwrap_err(), CbsError::CarriageReturn { position: 3 });
        assert_eq!(paginate("\r", Coding::Ucs2).unwrap_err(), CbsError::CarriageReturn { position: 0 });
        assert!(CbsError::CarriageReturn { position: 7 }.to_string().contains("position 7"));
        // LF is the line break: it lands on the same slot and comes back.
        let lf = f2.replace('\r', "\n");
        for coding in [Coding::Ucs2, Coding::Gsm7] {
            let pages = paginate(&lf, coding).unwrap();
            let alphabet = Alphabet::from_dcs(coding.dcs()).unwrap();
            let text: String = pages.iter().map(|p| decode_content(alphabet, &p.octets).unwrap().1).collect();
            assert_eq!(text, lf);
        }
    }

    #[test]
    fn decode_checks_page_numbering() {
        let serial = SerialNumber::from_u16(0x4170);
        let contents = paginate(&"a".repeat(100), Coding::Gsm7).unwrap();
        let p1 = cbs_page(serial, 4370, 0x0F, 1, 2, &contents[0]);
        let p2 = cbs_page(serial, 4370, 0x0F, 2, 2, &contents[1]);
        assert_eq!(p1[5], 0x12);
        assert_eq!(p2[5], 0x22);
        assert_eq!(decode_pages(&[p1, p2]).unwrap().text, "a".repeat(100));
        assert!(decode_pages(&[p2, p1]).is_err());
        assert!(decode_pages(&[]).is_err());
    }
}
