//! SBc-AP PDUs checked with Wireshark's generated `sbcap` dissector (built from the
//! TS 29.168 ASN.1): every IE we send decodes to the value we meant, with no malformed-packet
//! or expert errors.

use super::tshark::{fields, one, verbose, Dissector};
use crate::cell_broadcast::*;
use std::collections::HashMap;

const FIELDS: &[&str] = &[
    "sbc-ap.procedureCode",
    "sbc-ap.id",
    "sbc-ap.Message_Identifier",
    "sbc_ap.SerialNumber.gs",
    "sbc_ap.SerialNumber.msg_code",
    "sbc_ap.SerialNumber.upd_nb",
    "sbc-ap.cell_ID_List",
    "sbc-ap.tracking_Area_List_for_Warning",
    "e212.ecgi.mcc",
    "e212.ecgi.mnc",
    "e212.tai.mcc",
    "e212.tai.mnc",
    "sbc-ap.cell_ID",
    "sbc-ap.tAC",
    "sbc-ap.Repetition_Period",
    "sbc-ap.Number_of_Broadcasts_Requested",
    "sbc-ap.Data_Coding_Scheme",
    "sbc-ap.WarningMessageContents.nb_pages",
    "sbc-ap.WarningMessageContents.decoded_page",
    "sbc-ap.Concurrent_Warning_Message_Indicator",
    "_ws.malformed",
    "_ws.expert",
];

fn decode_one(pdu: &[u8]) -> HashMap<String, Vec<String>> {
    let mut rows = fields(Dissector::Sbcap, &[pdu.to_vec()], FIELDS);
    assert_eq!(rows.len(), 1);
    let row = rows.remove(0);
    let clean = row["_ws.malformed"].is_empty() && row["_ws.expert"].is_empty();
    assert!(clean, "tshark reports a problem:\n{}", verbose(Dissector::Sbcap, &[pdu.to_vec()]));
    row
}

fn all<'a>(row: &'a HashMap<String, Vec<String>>, name: &str) -> Vec<&'a str> {
    row.get(name).map(|v| v.iter().map(String::as_str).collect()).unwrap_or_default()
}

/// BIT STRING values as plain hex (tshark may print bytes with ':' separators).
fn cell_ids(row: &HashMap<String, Vec<String>>) -> Vec<String> {
    all(row, "sbc-ap.cell_ID").iter().map(|v| v.replace(':', "")).collect()
}

fn cht() -> Plmn {
    Plmn::new("466", "92").expect("valid PLMN")
}

fn cells() -> Vec<Ecgi> {
    vec![
        Ecgi { plmn: cht(), cell_id: 0x0ABCDEF },
        Ecgi { plmn: cht(), cell_id: 0x0000001 },
        Ecgi { plmn: Plmn::new("466", "01").expect("valid PLMN"), cell_id: 0xFFFFFFF },
    ]
}

#[test]
fn write_replace_warning_with_cell_list_decodes() {
    let serial = SerialNumber::new(GeoScope::Plmn, 321, 4).unwrap();
    let text = drill::broadcast_text(BroadcastMode::Drill, Language::Chinese, "土石流紅色警戒：請立即撤離至避難處所。");
    let cb = encode_broadcast(PwsClass::Emergency(0), Language::Chinese, serial, &text).unwrap();
    let area = WarningArea::Cells(cells());
    let pdu = write_replace_warning_request(&cb, &area, Schedule { repetition_period_s: 60, number_of_broadcasts: 0 })
        .unwrap();
    let row = decode_one(&pdu);
    assert_eq!(one(&row, "sbc-ap.procedureCode"), "0", "id-Write-Replace-Warning");
    assert_eq!(all(&row, "sbc-ap.id"), ["5", "11", "15", "10", "7", "3", "16", "20"], "IEs in spec order");
    assert_eq!(one(&row, "sbc-ap.Message_Identifier"), "4371");
    assert_eq!(one(&row, "sbc_ap.SerialNumber.gs"), "1");
    assert_eq!(one(&row, "sbc_ap.SerialNumber.msg_code"), "321");
    assert_eq!(one(&row, "sbc_ap.SerialNumber.upd_nb"), "4");
    assert_eq!(one(&row, "sbc-ap.cell_ID_List"), "3", "three ECGIs");
    assert_eq!(all(&row, "e212.ecgi.mcc"), ["466", "466", "466"]);
    assert_eq!(all(&row, "e212.ecgi.mnc"), ["92", "92", "1"]);
    assert_eq!(cell_ids(&row), ["0abcdef0", "00000010", "fffffff0"], "28 bits, left-aligned");
    assert_eq!(one(&row, "sbc-ap.Repetition_Period"), "60");
    assert_eq!(one(&row, "sbc-ap.Number_of_Broadcasts_Requested"), "0");
    assert_eq!(one(&row, "sbc-ap.Data_Coding_Scheme"), "48");
    assert_eq!(one(&row, "sbc-ap.WarningMessageContents.nb_pages"), "1");
    assert_eq!(one(&row, "sbc-ap.WarningMessageContents.decoded_page"), text);
    assert_eq!(one(&row, "sbc-ap.Concurrent_Warning_Message_Indicator"), "0", "true (the only value)");
}

#[test]
fn write_replace_warning_multi_page_english_gsm7() {
    let serial = SerialNumber::new(GeoScope::CellNormal, 77, 15).unwrap();
    let text = "Presidential Alert [Drill]: {test} of the national warning system. ".repeat(3);
    let cb = encode_broadcast(PwsClass::Presidential, Language::English, serial, &text).unwrap();
    assert_eq!(cb.pages.len(), 3);
    let pdu = write_replace_warning_request(
        &cb,
        &WarningArea::WholeNetwork,
        Schedule { repetition_period_s: 0, number_of_broadcasts: 1 },
    )
    .unwrap();
    let row = decode_one(&pdu);
    assert_eq!(all(&row, "sbc-ap.id"), ["5", "11", "10", "7", "3", "16", "20"], "no area list for the whole network");
    assert_eq!(one(&row, "sbc-ap.Message_Identifier"), "4383");
    assert_eq!(one(&row, "sbc_ap.SerialNumber.gs"), "3");
    assert_eq!(one(&row, "sbc_ap.SerialNumber.upd_nb"), "15");
    assert_eq!(one(&row, "sbc-ap.Repetition_Period"), "0");
    assert_eq!(one(&row, "sbc-ap.Number_of_Broadcasts_Requested"), "1");
    assert_eq!(one(&row, "sbc-ap.Data_Coding_Scheme"), "0f");
    assert_eq!(one(&row, "sbc-ap.WarningMessageContents.nb_pages"), "3");
    let pages: String = all(&row, "sbc-ap.WarningMessageContents.decoded_page").concat();
    assert_eq!(pages, text);
}

#[test]
fn lte_form_seven_spare_bits_read_as_cr_not_at_sign() {
    // 7 and 8 septets both fill 7 octets. Wireshark decodes 8 characters from 7 useful octets:
    // the 8th must be our CR padding for "ABCDEFG" and a real '@' for "ABCDEFG@".
    // (tshark's field output escapes CR as the two characters `\r`.)
    for (text, expected) in [("ABCDEFG", "ABCDEFG\\r"), ("ABCDEFG@", "ABCDEFG@"), ("ABCDEF", "ABCDEF")] {
        let serial = SerialNumber::new(GeoScope::Plmn, 1, 0).unwrap();
        let cb = encode_broadcast(PwsClass::Alert, Language::English, serial, text).unwrap();
        assert_eq!(cb.pages[0].useful_len as usize, gsm7::packed_len(text.len()));
        let pdu = write_replace_warning_request(
            &cb,
            &WarningArea::WholeNetwork,
            Schedule { repetition_period_s: 10, number_of_broadcasts: 3 },
        )
        .unwrap();
        let row = decode_one(&pdu);
        assert_eq!(one(&row, "sbc-ap.WarningMessageContents.decoded_page"), expected, "{text}");
    }
}

#[test]
fn write_replace_warning_with_tai_list() {
    let serial = SerialNumber::new(GeoScope::Area, 12, 0).unwrap();
    let cb = encode_broadcast(PwsClass::Alert, Language::Chinese, serial, "大雨特報").unwrap();
    let area = WarningArea::TrackingAreas(vec![Tai { plmn: cht(), tac: 0x1234 }, Tai { plmn: cht(), tac: 65535 }]);
    let pdu =
        write_replace_warning_request(&cb, &area, Schedule { repetition_period_s: 4095, number_of_broadcasts: 65535 })
            .unwrap();
    let row = decode_one(&pdu);
    assert_eq!(one(&row, "sbc-ap.tracking_Area_List_for_Warning"), "2");
    assert_eq!(all(&row, "sbc-ap.tAC"), ["4660", "65535"]);
    assert_eq!(all(&row, "e212.tai.mcc"), ["466", "466"]);
    assert_eq!(all(&row, "e212.tai.mnc"), ["92", "92"]);
    assert_eq!(one(&row, "sbc-ap.Repetition_Period"), "4095");
    assert_eq!(one(&row, "sbc-ap.Number_of_Broadcasts_Requested"), "65535");
    assert_eq!(one(&row, "sbc-ap.WarningMessageContents.decoded_page"), "大雨特報");
}

#[test]
fn stop_warning_request_decodes() {
    let serial = SerialNumber::new(GeoScope::Plmn, 321, 5).unwrap();
    let pdu = stop_warning_request(4384, serial, &WarningArea::Cells(cells())).unwrap();
    let row = decode_one(&pdu);
    assert_eq!(one(&row, "sbc-ap.procedureCode"), "1", "id-Stop-Warning");
    assert_eq!(all(&row, "sbc-ap.id"), ["5", "11", "15"]);
    assert_eq!(one(&row, "sbc-ap.Message_Identifier"), "4384");
    assert_eq!(one(&row, "sbc_ap.SerialNumber.msg_code"), "321");
    assert_eq!(one(&row, "sbc_ap.SerialNumber.upd_nb"), "5");
    assert_eq!(cell_ids(&row), ["0abcdef0", "00000010", "fffffff0"]);
    let v = verbose(Dissector::Sbcap, &[pdu]);
    assert!(v.contains("Stop-Warning-Request"), "{v}");
}

#[test]
fn county_sized_cell_list_uses_fragmented_lengths_and_decodes() {
    // 3,000 cells: the Warning-Area-List value is > 16 K octets, so its open-type length is
    // fragmented (X.691 §11.9.3.8).
    let cells: Vec<Ecgi> = (0..3000u32).map(|i| Ecgi { plmn: cht(), cell_id: (i << 8) | 1 }).collect();
    let serial = SerialNumber::new(GeoScope::Plmn, 900, 0).unwrap();
    let cb = encode_broadcast(PwsClass::Alert, Language::Chinese, serial, "淹水警戒").unwrap();
    let pdu = write_replace_warning_request(
        &cb,
        &WarningArea::Cells(cells),
        Schedule { repetition_period_s: 30, number_of_broadcasts: 10 },
    )
    .unwrap();
    assert!(pdu.len() > 16384 + 100);
    let row = decode_one(&pdu);
    assert_eq!(one(&row, "sbc-ap.cell_ID_List"), "3000");
    let ids = cell_ids(&row);
    assert_eq!(ids.len(), 3000);
    assert_eq!(ids[2999], format!("{:08x}", ((2999u32 << 8) | 1) << 4));
    assert_eq!(one(&row, "sbc-ap.Repetition_Period"), "30");
    assert_eq!(one(&row, "sbc-ap.WarningMessageContents.decoded_page"), "淹水警戒");
}
