//! The CBS data coding scheme octet (3GPP TS 23.038 §5): which alphabet the pages use.
//!
//! We send three of its values:
//!
//! | DCS | meaning | characters a page |
//! |---|---|---|
//! | `0x0F` | GSM 7-bit default alphabet, language unspecified | 93 septets |
//! | `0x48` | UCS-2 (general data coding group 01xx, uncompressed, no class) | 41 |
//! | `0x11` | UCS-2 preceded by a language indication | 2 septets + 40 |
//!
//! For `0x11`, TS 23.038 says: "The message starts with a two GSM 7-bit default alphabet
//! character representation of the language encoded according to ISO 639. This is padded to
//! the octet boundary with two bits set to 0 and then followed by 40 characters of UCS2-encoded
//! message." A CBS page is decoded on its own, so every page carries the two octets (as
//! Android's decoder expects).
//!
//! Our default for text that is not GSM 7-bit is `0x48`, not `0x11`: in Taiwan PWS the message
//! identifier already says which language a channel carries (4370 Chinese, 4383 English), the
//! indication would cost one character a page, and decoders that do not strip it show it as a
//! stray character (Wireshark 4.0 renders "zh" as U+7A34 `稴` at the start of every page).
//! `0x11` stays available through [`Coding::Ucs2WithLanguage`].

use super::{gsm7, CbsError};

/// How a broadcast's text is coded into pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    /// GSM 7-bit default alphabet + extension table, DCS `0x0F`.
    Gsm7,
    /// UCS-2, DCS `0x48`.
    Ucs2,
    /// UCS-2 after a two-letter ISO 639 language code on every page, DCS `0x11`.
    Ucs2WithLanguage([u8; 2]),
}

/// Alphabet named by a received DCS octet, for our decoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alphabet {
    Gsm7,
    /// GSM 7-bit whose first three characters are a language code and CR (DCS `0x10`).
    Gsm7WithLanguage,
    Ucs2,
    Ucs2WithLanguage,
}

impl Coding {
    /// GSM 7-bit when every character fits it (cheaper: 93 a page), UCS-2 (`0x48`) otherwise.
    pub fn for_text(text: &str) -> Coding {
        if gsm7::fits(text) {
            Coding::Gsm7
        } else {
            Coding::Ucs2
        }
    }

    /// `0x11` with `language` as its ISO 639 code, checked to be two lowercase letters
    /// (which are the same septets in the GSM default alphabet as in ASCII).
    pub fn ucs2_with_language(language: &str) -> Result<Coding, CbsError> {
        match language.as_bytes() {
            [a, b] if a.is_ascii_lowercase() && b.is_ascii_lowercase() => Ok(Coding::Ucs2WithLanguage([*a, *b])),
            _ => Err(CbsError::Language(language.to_string())),
        }
    }

    /// The DCS octet.
    pub fn dcs(self) -> u8 {
        match self {
            Coding::Gsm7 => 0x0F,
            Coding::Ucs2 => 0x48,
            Coding::Ucs2WithLanguage(_) => 0x11,
        }
    }

    /// Name for error messages.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Gsm7 => "GSM 7-bit",
            Coding::Ucs2 | Coding::Ucs2WithLanguage(_) => "UCS-2",
        }
    }
}

impl Alphabet {
    /// The alphabet of a CBS DCS octet (TS 23.038 §5), or an error for compressed, 8-bit,
    /// reserved and other values we never send.
    pub fn from_dcs(dcs: u8) -> Result<Alphabet, CbsError> {
        Ok(match dcs {
            0x00..=0x0F | 0x20..=0x2F => Alphabet::Gsm7,
            0x10 => Alphabet::Gsm7WithLanguage,
            0x11 => Alphabet::Ucs2WithLanguage,
            // General data coding: bit 5 = compressed, bits 3..2 = character set.
            0x40..=0x7F if dcs & 0x20 == 0 => match (dcs >> 2) & 0b11 {
                0b00 => Alphabet::Gsm7,
                0b10 => Alphabet::Ucs2,
                _ => return Err(CbsError::Malformed(format!("DCS {dcs:#04x}: 8-bit data is not text"))),
            },
            0xF0..=0xFF if dcs & 0x04 == 0 => Alphabet::Gsm7,
            _ => return Err(CbsError::Malformed(format!("DCS {dcs:#04x} is not a text coding we decode"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcs_values() {
        assert_eq!(Coding::Gsm7.dcs(), 0x0F);
        assert_eq!(Coding::Ucs2.dcs(), 0x48);
        assert_eq!(Coding::ucs2_with_language("zh").unwrap().dcs(), 0x11);
        assert!(Coding::ucs2_with_language("ZH").is_err());
        assert!(Coding::ucs2_with_language("zho").is_err());
        assert_eq!(Alphabet::from_dcs(0x0F).unwrap(), Alphabet::Gsm7);
        assert_eq!(Alphabet::from_dcs(0x48).unwrap(), Alphabet::Ucs2);
        assert_eq!(Alphabet::from_dcs(0x11).unwrap(), Alphabet::Ucs2WithLanguage);
        assert!(Alphabet::from_dcs(0x44).is_err());
        assert!(Alphabet::from_dcs(0x68).is_err(), "compressed");
    }

    #[test]
    fn coding_choice() {
        assert_eq!(Coding::for_text("Heavy rain [Drill] {x} €5"), Coding::Gsm7);
        assert_eq!(Coding::for_text("豪雨特報"), Coding::Ucs2);
        assert_eq!(Coding::for_text("naïve"), Coding::Ucs2, "ï is not in the GSM alphabet");
    }
}
