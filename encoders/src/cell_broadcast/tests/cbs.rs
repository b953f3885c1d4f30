//! CBS pages checked with Wireshark's `gsm_cbs` dissector: identifier, serial number fields,
//! DCS, page numbering and the reassembled text.

use super::tshark::{fields, one, verbose, Dissector};
use crate::cell_broadcast::*;

/// The known-good page from the standards folder (message id 4370, serial 0x4170, DCS 0x0F,
/// page 1 of 1, "Hello World" CR-padded), embedded so the test stands alone.
const KNOWN_GOOD: &str = "417011120f11c8329bfd065ddf7236b9d168341a8d46a3d168341a8d46a3d168341a8d46a3d168341a8d46a3d168341a8d46a3d168341a8d46a3d168341a8d46a3d168341a8d46a3d168341a8d46a3d168341a8d46a3d100";

const FIELDS: &[&str] = &[
    "gsm_cbs.message-identifier",
    "gsm_cbs.serial_number",
    "gsm_cbs.geographic_scope",
    "gsm_cbs.message_code",
    "gsm_cbs.update_number",
    "gsm_map.cbs.coding_grp",
    "gsm_cbs.current_page",
    "gsm_cbs.total_pages",
    "gsm_cbs.page_content",
    "gsm_cbs.message_content",
];

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn serial(scope: GeoScope, code: u16, update: u8) -> SerialNumber {
    SerialNumber::new(scope, code, update).expect("valid serial")
}

/// Decode all pages with tshark; check per-page header fields; return the reassembled text
/// (on the last page) and the per-page rows.
fn decode(cb: &CellBroadcast) -> (String, Vec<std::collections::HashMap<String, Vec<String>>>) {
    let packets: Vec<Vec<u8>> = cb.pages.iter().map(|p| p.bytes.to_vec()).collect();
    let rows = fields(Dissector::Cbs, &packets, FIELDS);
    assert_eq!(rows.len(), cb.pages.len(), "one row per page");
    let total = cb.pages.len().to_string();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(one(row, "gsm_cbs.message-identifier"), cb.message_id.to_string());
        assert_eq!(one(row, "gsm_cbs.serial_number"), format!("{:#06x}", cb.serial.to_u16()));
        assert_eq!(one(row, "gsm_cbs.geographic_scope"), (cb.serial.geo_scope() as u16).to_string());
        assert_eq!(one(row, "gsm_cbs.message_code"), cb.serial.message_code().to_string());
        assert_eq!(one(row, "gsm_cbs.update_number"), cb.serial.update_number().to_string());
        assert_eq!(one(row, "gsm_cbs.current_page"), (i + 1).to_string(), "page number");
        assert_eq!(one(row, "gsm_cbs.total_pages"), total, "page total");
    }
    let last = rows.last().expect("at least one page");
    let text = one(last, "gsm_cbs.message_content").to_string();
    (text, rows)
}

#[test]
fn known_good_vector_is_reproduced_exactly() {
    let cb = encode_broadcast(PwsClass::Presidential, Language::Chinese, serial(GeoScope::Plmn, 23, 0), "Hello World")
        .unwrap();
    assert_eq!(cb.pages.len(), 1);
    assert_eq!(hex(&cb.pages[0].bytes), KNOWN_GOOD);
    let (text, rows) = decode(&cb);
    assert_eq!(text, "Hello World");
    assert_eq!(one(&rows[0], "gsm_map.cbs.coding_grp"), "0", "coding group 0: GSM 7-bit");
    let v = verbose(Dissector::Cbs, &[cb.pages[0].bytes.to_vec()]);
    assert!(v.contains("Language: Language unspecified (15)"), "{v}");
    assert!(v.contains("CBS Message Content: Hello World"), "{v}");
}

#[test]
fn english_gsm7_with_extension_characters_over_three_pages() {
    let text = "[Drill] Heavy rain {level 2}: rivers near Xindian may rise 1.5 m by 18:00. Avoid riverbanks \
                and underpasses; shelters open at schools. Fee waived €0 [ref: NFA-2024-118] {end}. Updates \
                follow on this channel every 30 minutes ~ stay tuned | 119 for emergencies \\ ^";
    assert!(gsm7::fits(text));
    let cb =
        encode_broadcast(PwsClass::Emergency(2), Language::English, serial(GeoScope::CellImmediate, 1023, 15), text)
            .unwrap();
    assert_eq!((cb.message_id, cb.dcs), (4386, 0x0F));
    assert_eq!(cb.pages.len(), 3);
    let (decoded, rows) = decode(&cb);
    assert_eq!(decoded, text);
    for row in &rows {
        assert_eq!(one(row, "gsm_map.cbs.coding_grp"), "0");
    }
}

#[test]
fn extension_characters_on_one_page() {
    let cb = encode_broadcast(PwsClass::Alert, Language::English, serial(GeoScope::Area, 5, 3), "[]{}€").unwrap();
    assert_eq!(cb.message_id, 919);
    let (decoded, rows) = decode(&cb);
    assert_eq!(decoded, "[]{}€");
    assert_eq!(one(&rows[0], "gsm_cbs.page_content"), "[]{}€");
}

#[test]
fn chinese_ucs2_one_page() {
    let text = "豪雨特報：新北市山區今晚可能有豪雨，請注意坍方落石。";
    let cb = encode_broadcast(PwsClass::Alert, Language::Chinese, serial(GeoScope::Plmn, 100, 1), text).unwrap();
    assert_eq!((cb.message_id, cb.dcs, cb.pages.len()), (911, 0x48, 1));
    let (decoded, rows) = decode(&cb);
    assert_eq!(decoded, text);
    assert_eq!(one(&rows[0], "gsm_map.cbs.coding_grp"), "4", "coding group 01xx: general data coding");
    let v = verbose(Dissector::Cbs, &[cb.pages[0].bytes.to_vec()]);
    assert!(v.contains("UCS2"), "DCS 0x48 shows as UCS2:\n{v}");
}

#[test]
fn chinese_drill_over_several_pages() {
    let body = "國家級警報：花蓮外海發生規模七點二地震，預估震度六強，請立即就地避難，遠離窗戶與懸掛物，\
                確認家人安全後關閉瓦斯與電源。沿海地區民眾請往高處避難，留意海嘯警報與後續餘震訊息，\
                並收聽廣播或查看消防署網站取得最新資訊。";
    let text = drill::broadcast_text(BroadcastMode::Drill, Language::Chinese, body);
    let cb = encode_broadcast(PwsClass::Presidential, Language::Chinese, serial(GeoScope::Plmn, 7, 2), &text).unwrap();
    assert_eq!((cb.message_id, cb.dcs), (4370, 0x48));
    assert_eq!(cb.pages.len(), text.chars().count().div_ceil(41));
    assert!(cb.pages.len() >= 3);
    let (decoded, rows) = decode(&cb);
    assert!(decoded.starts_with("[演練]國家級警報"), "{decoded}");
    assert_eq!(decoded, text);
    // Every page but the last is full: exactly 41 characters each.
    for row in &rows[..rows.len() - 1] {
        assert_eq!(one(row, "gsm_cbs.page_content").chars().count(), 41);
    }
}

#[test]
fn english_drill_prefix_survives_decoding() {
    let text =
        drill::broadcast_text(BroadcastMode::Drill, Language::English, "Earthquake M7.2 off Hualien. Take cover now.");
    let cb = encode_broadcast(PwsClass::Presidential, Language::English, serial(GeoScope::Plmn, 7, 2), &text).unwrap();
    assert_eq!(cb.message_id, 4383);
    let (decoded, _) = decode(&cb);
    assert_eq!(decoded, "[Drill] Earthquake M7.2 off Hualien. Take cover now.");
}

#[test]
fn fifteen_pages_reassemble() {
    let text: String = (0..15 * 41).map(|i| char::from_u32(0x4E00 + i).unwrap_or('雨')).collect();
    let cb = encode_broadcast(PwsClass::MonthlyTest, Language::Chinese, serial(GeoScope::Plmn, 1, 0), &text).unwrap();
    assert_eq!((cb.message_id, cb.pages.len()), (4380, 15));
    let (decoded, _) = decode(&cb);
    assert_eq!(decoded, text);
}

#[test]
fn ucs2_with_language_indication_dcs_0x11() {
    let text = "地震速報";
    let coding = Coding::ucs2_with_language("zh").unwrap();
    let cb = encode_with_coding(4371, serial(GeoScope::Plmn, 9, 0), coding, text).unwrap();
    assert_eq!(cb.dcs, 0x11);
    assert_eq!(&cb.pages[0].bytes[6..8], &[0x7A, 0x34], "'z' 'h' as two packed GSM septets + 2 zero bits");
    let (decoded, rows) = decode(&cb);
    assert_eq!(one(&rows[0], "gsm_map.cbs.coding_grp"), "1", "coding group 0001: language indication");
    // Wireshark 4.0 decodes the whole page as UCS-2 without stripping the indication, so the
    // two octets show as U+7A34; what follows must be our text exactly.
    assert!(decoded.ends_with(text), "{decoded:?}");
    assert_eq!(decoded.chars().count(), text.chars().count() + 1);
    // Our decoder strips it and reports the language.
    let ours = pages::decode_pages(&cb.page_bytes()).unwrap();
    assert_eq!((ours.language.as_deref(), ours.text.as_str()), (Some("zh"), text));
}

#[test]
fn at_sign_and_cr_padding_edges_through_tshark() {
    for text in ["ABCDEFG", "ABCDEFG@", "@", "x@@", &"a".repeat(93), &"b".repeat(94)] {
        let cb = encode_broadcast(PwsClass::Alert, Language::English, serial(GeoScope::Plmn, 2, 0), text).unwrap();
        let (decoded, _) = decode(&cb);
        assert_eq!(decoded, text);
    }
}
