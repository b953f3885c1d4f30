//! The GSM 7-bit default alphabet, its extension table, and septet packing
//! (3GPP TS 23.038 §6.2.1, §6.2.1.1 and §6.1.2.1.1).
//!
//! Cell broadcast text that uses only these characters costs 7 bits a character (93 a page);
//! anything else forces UCS-2 (41 a page), so checking "does it fit" exactly matters.

/// The escape code: the next septet is looked up in the extension table.
pub const ESCAPE: u8 = 0x1B;
/// Carriage return, the padding character of CBS pages (TS 23.038 §6.1.2.3.1): a receiver
/// treats trailing CRs as padding, whereas 7 zero bits would read as `@`.
pub const CR: u8 = 0x0D;

/// Default alphabet, indexed by septet value. Index 0x1B is the escape code and never maps
/// from a character (`'\u{1B}'` below is only a placeholder that `encode_char` skips).
const DEFAULT: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1B}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// Extension table (reached through [`ESCAPE`]): septet after the escape → character.
const EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{0C}'), // form feed (page break)
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// One character in the GSM 7-bit alphabet: a single septet, or an escape pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsmChar {
    /// A character of the default alphabet: one septet.
    Basic(u8),
    /// A character of the extension table: `ESCAPE` then this septet. The pair must never be
    /// split across pages, or the second page would start with a stray default character.
    Extended(u8),
}

impl GsmChar {
    /// Septets this character occupies (1 or 2).
    pub fn septets(self) -> usize {
        match self {
            GsmChar::Basic(_) => 1,
            GsmChar::Extended(_) => 2,
        }
    }

    /// Append this character's septets to `out`.
    pub fn push_to(self, out: &mut Vec<u8>) {
        match self {
            GsmChar::Basic(s) => out.push(s),
            GsmChar::Extended(s) => {
                out.push(ESCAPE);
                out.push(s);
            }
        }
    }
}

/// The GSM 7-bit code of `c`, or `None` when `c` is in neither table.
pub fn encode_char(c: char) -> Option<GsmChar> {
    // ASCII letters and digits map to themselves: skip the table scan for the common case.
    if c.is_ascii_alphanumeric() {
        return Some(GsmChar::Basic(c as u8));
    }
    if c == '\u{1B}' {
        // ESC is a code, not a character a sender can put in text.
        return None;
    }
    if let Some(i) = DEFAULT.iter().position(|&d| d == c) {
        return Some(GsmChar::Basic(i as u8));
    }
    EXTENSION.iter().find(|&&(_, e)| e == c).map(|&(s, _)| GsmChar::Extended(s))
}

/// Whether every character of `text` is in the default alphabet or its extension table.
pub fn fits(text: &str) -> bool {
    text.chars().all(|c| encode_char(c).is_some())
}

/// Septets `text` needs (escape pairs count 2), or `None` when it does not fit GSM 7-bit.
pub fn septet_count(text: &str) -> Option<usize> {
    text.chars().map(|c| encode_char(c).map(GsmChar::septets)).sum()
}

/// Text → septets, or the first character (and its index) that does not fit.
pub fn to_septets(text: &str) -> Result<Vec<u8>, (usize, char)> {
    let mut out = Vec::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        encode_char(c).ok_or((i, c))?.push_to(&mut out);
    }
    Ok(out)
}

/// Septets → text. An escape followed by a code the extension table lacks shows the default
/// character, as TS 23.038 §6.2.1.1 asks of receivers; a trailing lone escape is dropped.
pub fn septets_to_string(septets: &[u8]) -> String {
    let mut out = String::with_capacity(septets.len());
    let mut it = septets.iter().map(|s| s & 0x7F);
    while let Some(s) = it.next() {
        if s == ESCAPE {
            if let Some(e) = it.next() {
                let ext = EXTENSION.iter().find(|&&(code, _)| code == e).map(|&(_, c)| c);
                out.push(ext.unwrap_or(DEFAULT[e as usize]));
            }
        } else {
            out.push(DEFAULT[s as usize]);
        }
    }
    out
}

/// Octets that `n` packed septets occupy.
pub fn packed_len(n: usize) -> usize {
    (n * 7).div_ceil(8)
}

/// Pack septets into octets, least significant bit first (TS 23.038 §6.1.2.1.1): septet `i`
/// starts at bit `7 i`. Spare bits in the last octet are 0.
pub fn pack(septets: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; packed_len(septets.len())];
    for (i, &s) in septets.iter().enumerate() {
        let bit = i * 7;
        let (byte, shift) = (bit / 8, bit % 8);
        let v = u16::from(s & 0x7F) << shift;
        out[byte] |= v as u8;
        if shift > 1 {
            out[byte + 1] |= (v >> 8) as u8;
        }
    }
    out
}

/// Unpack `count` septets from `octets` (at most `octets.len() * 8 / 7` are available;
/// the count is clamped to that so short input cannot panic).
pub fn unpack(octets: &[u8], count: usize) -> Vec<u8> {
    let count = count.min(octets.len() * 8 / 7);
    (0..count)
        .map(|i| {
            let bit = i * 7;
            let (byte, shift) = (bit / 8, bit % 8);
            let lo = u16::from(octets[byte]);
            let hi = octets.get(byte + 1).copied().map_or(0, u16::from);
            (((hi << 8 | lo) >> shift) & 0x7F) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn hello_world_packs_like_the_known_vector() {
        let s = to_septets("Hello World").unwrap();
        // Same octets as the first 10 of the known-good page, except the last: there the spare
        // high bits hold the first CR of the padding, here they are zero.
        assert_eq!(hex(&pack(&s)), "c8329bfd065ddf723619");
    }

    #[test]
    fn seven_characters_leave_seven_spare_bits() {
        // 7 septets = 49 bits → 7 octets with 7 spare bits, which a receiver may read as '@':
        // that is why CBS pads with CR instead of leaving zeros.
        let s = to_septets("1234567").unwrap();
        let p = pack(&s);
        assert_eq!(p.len(), 7);
        assert_eq!(p[6] >> 1, 0, "spare bits are zero before padding");
        assert_eq!(unpack(&p, 8)[7], 0x00, "zero spare bits decode as '@'");
    }

    #[test]
    fn eight_characters_fill_seven_octets_exactly() {
        let s = to_septets("12345678").unwrap();
        let p = pack(&s);
        assert_eq!(p.len(), 7);
        assert_eq!(septets_to_string(&unpack(&p, 8)), "12345678");
    }

    #[test]
    fn at_sign_at_the_end_survives() {
        let s = to_septets("abcdefg@").unwrap();
        let p = pack(&s);
        assert_eq!(p.len(), 7);
        assert_eq!(septets_to_string(&unpack(&p, 8)), "abcdefg@");
        let s = to_septets("ab@").unwrap();
        assert_eq!(septets_to_string(&unpack(&pack(&s), 3)), "ab@");
    }

    #[test]
    fn extension_characters_take_an_escape() {
        assert_eq!(septet_count("[]{}€"), Some(10));
        assert_eq!(encode_char('€'), Some(GsmChar::Extended(0x65)));
        assert_eq!(encode_char('@'), Some(GsmChar::Basic(0)));
        assert_eq!(encode_char('$'), Some(GsmChar::Basic(2)));
        assert_eq!(encode_char('`'), None);
        assert_eq!(encode_char('ç'), None, "only capital Ç is in the table");
        assert_eq!(encode_char('\u{1B}'), None);
        assert_eq!(encode_char('雨'), None);
        let s = to_septets("a[b]€").unwrap();
        assert_eq!(septets_to_string(&s), "a[b]€");
    }

    #[test]
    fn every_table_entry_round_trips() {
        for (i, &c) in DEFAULT.iter().enumerate() {
            if i == ESCAPE as usize {
                continue;
            }
            assert_eq!(encode_char(c), Some(GsmChar::Basic(i as u8)), "{c:?}");
            assert_eq!(septets_to_string(&[i as u8]), c.to_string());
        }
        for &(code, c) in &EXTENSION {
            assert_eq!(encode_char(c), Some(GsmChar::Extended(code)));
            assert_eq!(septets_to_string(&[ESCAPE, code]), c.to_string());
        }
    }

    #[test]
    fn unknown_escape_falls_back_to_default_table() {
        assert_eq!(septets_to_string(&[ESCAPE, b'A']), "A");
        assert_eq!(septets_to_string(&[b'A', ESCAPE]), "A");
    }

    #[test]
    fn unpack_never_reads_past_the_input() {
        assert_eq!(unpack(&[0xff], 5).len(), 1);
        assert!(unpack(&[], 3).is_empty());
    }
}
