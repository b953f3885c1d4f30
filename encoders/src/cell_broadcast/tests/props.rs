//! Property round-trips through our own decoders: whatever text we accept comes back
//! exactly, whatever we reject is rejected for being too long, and serial numbers survive
//! their 16-bit form.

use crate::cell_broadcast::*;
use proptest::prelude::*;

/// Characters from every class the encoder treats differently: GSM basic (including '@',
/// which packs as zero bits), GSM extension (escape pairs), Latin outside GSM (forces UCS-2),
/// and CJK. CR is left out: it is the padding, which the encoder refuses in text (see
/// `carriage_return_is_refused_and_lf_round_trips_at_page_ends`).
fn text_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::sample::select(vec!['a', 'Z', '0', ' ', '@', '$', '£', 'é', 'Δ', '\n', '.', '_']),
        2 => prop::sample::select(vec!['[', ']', '{', '}', '€', '^', '~', '|', '\\', '\u{0C}']),
        1 => prop::sample::select(vec!['ç', 'ï', '–', '“']),
        3 => prop::char::range('\u{4E00}', '\u{9FFF}'),
    ]
}

fn any_serial() -> impl Strategy<Value = SerialNumber> {
    any::<u16>().prop_map(SerialNumber::from_u16)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn pages_round_trip(chars in prop::collection::vec(text_char(), 1..700), serial in any_serial(), english in any::<bool>()) {
        let text: String = chars.into_iter().collect();
        let language = if english { Language::English } else { Language::Chinese };
        match encode_broadcast(PwsClass::Emergency(3), language, serial, &text) {
            Ok(cb) => {
                prop_assert!(!cb.pages.is_empty() && cb.pages.len() <= 15);
                let decoded = pages::decode_pages(&cb.page_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&decoded.text, &text);
                prop_assert_eq!(decoded.serial, serial);
                prop_assert_eq!(decoded.message_id, cb.message_id);
                let lte = lte::decode_warning_message_content(cb.dcs, &cb.warning_message_content())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&lte, &text);
            }
            Err(CbsError::TooLong { pages, .. }) => prop_assert!(pages > 15),
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }

    /// Finding F2: a CR that ended a page's text was lost. Put a line break at the last slot of a
    /// page (or anywhere): as CR it is refused with its position, as LF the text round-trips
    /// exactly through both decoders, whatever the coding.
    #[test]
    fn carriage_return_is_refused_and_lf_round_trips_at_page_ends(
        chars in prop::collection::vec(text_char(), 1..600),
        page_end in any::<bool>(),
        at in any::<prop::sample::Index>(),
        coding in prop_oneof![Just(Coding::Gsm7), Just(Coding::Ucs2), Just(Coding::Ucs2WithLanguage(*b"zh"))],
    ) {
        let text: String = chars.into_iter().collect();
        let coding = if coding == Coding::Gsm7 && gsm7::to_septets(&text).is_err() { Coding::Ucs2 } else { coding };
        let per_page = match coding {
            Coding::Gsm7 => pages::GSM7_PER_PAGE,
            Coding::Ucs2 => pages::UCS2_PER_PAGE,
            Coding::Ucs2WithLanguage(_) => pages::UCS2_WITH_LANGUAGE_PER_PAGE,
        };
        let n = text.chars().count();
        // The last slot of some page (exact for UCS-2; for GSM 7-bit escape pairs may shift it), or anywhere.
        let position = if page_end && n >= per_page {
            (at.index(n / per_page) + 1) * per_page - 1
        } else {
            at.index(n + 1)
        };
        let with = |brk: char| -> String {
            let mut v: Vec<char> = text.chars().collect();
            v.insert(position, brk);
            v.into_iter().collect()
        };
        let serial = SerialNumber::from_u16(0x4170);
        let cr = with('\r');
        prop_assert_eq!(encode_with_coding(4370, serial, coding, &cr), Err(CbsError::CarriageReturn { position }));
        let lf = with('\n');
        match encode_with_coding(4370, serial, coding, &lf) {
            Ok(cb) => {
                let decoded = pages::decode_pages(&cb.page_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&decoded.text, &lf);
                let lte = lte::decode_warning_message_content(cb.dcs, &cb.warning_message_content())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&lte, &lf);
            }
            Err(CbsError::TooLong { pages, .. }) => prop_assert!(pages > 15),
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }

    #[test]
    fn gsm7_texts_use_gsm7_and_round_trip(chars in prop::collection::vec(prop::sample::select(vec!['a', '@', '€', '[', ' ', 'Ü', '\n']), 1..400)) {
        let text: String = chars.into_iter().collect();
        let cb = encode_broadcast(PwsClass::Alert, Language::English, SerialNumber::from_u16(0x4170), &text)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(cb.dcs, 0x0F);
        prop_assert_eq!(pages::decode_pages(&cb.page_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?.text, text);
    }

    #[test]
    fn ucs2_with_language_round_trips(chars in prop::collection::vec(prop::char::range('\u{4E00}', '\u{9FFF}'), 1..600)) {
        let text: String = chars.into_iter().collect();
        match encode_with_coding(4370, SerialNumber::from_u16(1), Coding::Ucs2WithLanguage(*b"zh"), &text) {
            Ok(cb) => {
                let d = pages::decode_pages(&cb.page_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(d.language.as_deref(), Some("zh"));
                prop_assert_eq!(d.text, text);
            }
            Err(CbsError::TooLong { length, limit, .. }) => prop_assert!(length > limit && limit == 600),
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }

    #[test]
    fn septet_packing_round_trips(septets in prop::collection::vec(0u8..128, 0..200)) {
        let packed = gsm7::pack(&septets);
        prop_assert_eq!(packed.len(), gsm7::packed_len(septets.len()));
        prop_assert_eq!(gsm7::unpack(&packed, septets.len()), septets);
    }

    #[test]
    fn serial_number_round_trips(v in any::<u16>()) {
        let s = SerialNumber::from_u16(v);
        prop_assert_eq!(s.to_u16(), v);
        let again = SerialNumber::new(s.geo_scope(), s.message_code(), s.update_number()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(again, s);
        prop_assert_eq!(s.next_update().update_number(), (s.update_number() + 1) % 16);
        prop_assert_eq!(s.next_update().message_code(), s.message_code());
    }
}
