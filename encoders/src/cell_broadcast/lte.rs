//! The LTE/NR form of the message content (3GPP TS 23.041 §9.4.2.2.5, "CB Data"), which
//! SBc-AP's Warning-Message-Content carries to the MME and eNBs:
//!
//! ```text
//! number of pages (1) | page 1: content (82) + useful length (1) | … | page n
//! ```
//!
//! Unlike the 88-octet GSM page, there is no per-page header: serial number, identifier and
//! DCS travel as separate SBc-AP IEs.

use super::dcs::Alphabet;
use super::pages::{decode_content, CONTENT_OCTETS, MAX_PAGES};
use super::{CbsError, CbsPage};

/// Octets one page takes in this form.
pub const LTE_PAGE_OCTETS: usize = CONTENT_OCTETS + 1;

/// Encode pages (at most 15; `pages::paginate` guarantees it) in the LTE form.
pub fn warning_message_content(pages: &[CbsPage]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + pages.len() * LTE_PAGE_OCTETS);
    out.push(pages.len() as u8);
    for p in pages {
        out.extend_from_slice(p.content());
        out.push(p.useful_len);
    }
    out
}

/// Decode the LTE form back to text with our own decoder (each page's useful octets only).
pub fn decode_warning_message_content(dcs: u8, content: &[u8]) -> Result<String, CbsError> {
    let alphabet = Alphabet::from_dcs(dcs)?;
    let (&n, rest) =
        content.split_first().ok_or_else(|| CbsError::Malformed("empty warning message content".into()))?;
    let n = usize::from(n);
    if n == 0 || n > MAX_PAGES {
        return Err(CbsError::Malformed(format!("{n} pages; 1..=15 allowed")));
    }
    if rest.len() != n * LTE_PAGE_OCTETS {
        return Err(CbsError::Malformed(format!(
            "{} octets for {n} pages; expected {}",
            rest.len(),
            n * LTE_PAGE_OCTETS
        )));
    }
    let mut text = String::new();
    for page in rest.chunks_exact(LTE_PAGE_OCTETS) {
        let useful = usize::from(page[CONTENT_OCTETS]);
        if useful == 0 || useful > CONTENT_OCTETS {
            return Err(CbsError::Malformed(format!("useful length {useful}; 1..=82 allowed")));
        }
        text.push_str(&decode_content(alphabet, &page[..useful])?.1);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::super::{encode_with_coding, Coding, SerialNumber};
    use super::*;

    #[test]
    fn layout_is_count_then_82_plus_length() {
        let cb = encode_with_coding(4383, SerialNumber::from_u16(0x4170), Coding::Gsm7, &"a".repeat(100)).unwrap();
        let wmc = warning_message_content(&cb.pages);
        assert_eq!(wmc, cb.warning_message_content());
        assert_eq!(wmc.len(), 1 + 2 * 83);
        assert_eq!(wmc[0], 2);
        assert_eq!(wmc[83], 82, "page 1 is full: ceil(93 * 7 / 8)");
        assert_eq!(wmc[166], 7, "7 septets → 7 octets");
        assert_eq!(decode_warning_message_content(0x0F, &wmc).unwrap(), "a".repeat(100));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(decode_warning_message_content(0x0F, &[]).is_err());
        assert!(decode_warning_message_content(0x0F, &[1, 0]).is_err());
        assert!(decode_warning_message_content(0x0F, &[16]).is_err());
        let mut one = vec![1u8];
        one.extend_from_slice(&[0u8; 82]);
        one.push(0);
        assert!(decode_warning_message_content(0x0F, &one).is_err());
        assert!(decode_warning_message_content(0x11, &{
            let mut v = vec![1u8];
            v.extend_from_slice(&[0u8; 82]);
            v.push(1);
            v
        })
        .is_err());
    }
}
