//! Cell broadcast: CBC receivers get the envelope; its pages, LTE content and PDUs decode (our decoder, and tshark).

use std::time::Duration;

use super::tools::{tshark_fields, unhex, Dissector};
use super::*;
use crate::broadcast::class_for;
use crate::channel::cbc::default_policy;
use encoders::cell_broadcast::{lte, pages, PwsClass};

const LONG: Duration = Duration::from_secs(20);

fn cbc_requests(rx: &Receiver) -> Vec<Received> {
    rx.delivered("/cbc/cht").into_iter().chain(rx.delivered("/cbc/twm")).chain(rx.delivered("/cbc/fet")).collect()
}

fn envelope(r: &Received) -> serde_json::Value {
    serde_json::from_slice(&r.body).expect("envelope is JSON")
}

fn page_bytes(v: &serde_json::Value) -> Vec<[u8; pages::PAGE_OCTETS]> {
    v["pages_hex"]
        .as_array()
        .expect("pages")
        .iter()
        .map(|p| unhex(p.as_str().unwrap()).try_into().expect("88-octet page"))
        .collect()
}

#[test]
fn default_policy_classes() {
    let p = default_policy();
    assert_eq!(class_for(&view("P", 1), &p), Some(PwsClass::Emergency(0)), "debris flow red");
    assert_eq!(class_for(&rain_view("P", 1, "township-xinyi"), &p), Some(PwsClass::Alert), "heavy rain");
    let extreme_rain = AlertView { severity: Severity::Extreme, ..rain_view("P", 1, "township-xinyi") };
    assert_eq!(class_for(&extreme_rain, &p), Some(PwsClass::Alert), "heavy-rain levels stay Alert");
    let landslide = AlertView { event: "landslide".into(), level_name_en: "warning".into(), ..view("P", 1) };
    assert_eq!(class_for(&landslide, &p), Some(PwsClass::Emergency(0)), "Extreme → Emergency");
    let yellow = AlertView { level_name_en: "yellow".into(), severity: Severity::Severe, ..view("P", 1) };
    assert_eq!(class_for(&yellow, &p), None, "debris flow yellow is not broadcast by default");
    let test = AlertView { mode: ViewMode::Test, ..view("P", 1) };
    assert_eq!(class_for(&test, &p), Some(PwsClass::MonthlyTest));
    let drill = AlertView { mode: ViewMode::Exercise, ..view("P", 1) };
    assert_eq!(class_for(&drill, &p), Some(PwsClass::Emergency(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cbc_gets_envelopes_that_decode_and_a_stop_on_cancel() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = start(config(&carriers_toml(&rx.url(""))), dir.path());
    d.alert_changed(&view("CB", 1));
    wait_for(LONG, "three carriers", || cbc_requests(&rx).len() == 3).await;

    let records = d.broadcasts();
    assert_eq!(records.len(), 1);
    let rec = &records[0];
    assert_eq!(
        (rec.kind, rec.class.as_str(), rec.message_ids),
        (BroadcastKind::WriteReplace, "emergency(0)", [4371, 4384])
    );
    assert_eq!(rec.update_number, 0);
    assert!(rec.error.is_none());
    assert!(rec.texts[0].starts_with("南投縣信義鄉神木村土石流潛勢區土石流紅色警戒\n"), "{:?}", rec.texts[0]);
    assert!(rec.texts[1].starts_with("Debris flow red alert: "), "{:?}", rec.texts[1]);

    for (r, (path, mnc)) in cbc_requests(&rx).iter().zip([("cht", "92"), ("twm", "97"), ("fet", "01")]) {
        assert_eq!(r.header("authorization"), format!("Bearer token-{path}"));
        let v = envelope(r);
        assert_eq!(v["kind"], "write_replace");
        assert_eq!(v["alert"]["id"], "CB");
        assert_eq!(v["cap_identifier"], "CB.1");
        assert_eq!(v["cap_xml"].as_str(), d.cap_xml("CB.1").as_deref());
        let cells: Vec<&str> = v["cells"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        assert!(!cells.is_empty());
        assert!(cells.iter().all(|c| c.starts_with(&format!("466-{mnc}-"))), "{cells:?}");
        for (i, ch) in v["pws"].as_array().unwrap().iter().enumerate() {
            let pages = page_bytes(ch);
            let decoded = pages::decode_pages(&pages).expect("our decoder reads the pages");
            assert_eq!(decoded.message_id as u64, ch["message_id"].as_u64().unwrap());
            assert_eq!(decoded.message_id, rec.message_ids[i]);
            assert_eq!(decoded.serial.to_u16(), rec.serial);
            assert_eq!(decoded.serial.geo_scope(), encoders::cell_broadcast::GeoScope::CellNormal);
            assert_eq!(decoded.text, rec.texts[i]);
            assert_eq!(decoded.text, ch["text"].as_str().unwrap());
            let lte = unhex(ch["lte_content_hex"].as_str().unwrap());
            let dcs = ch["dcs"].as_u64().unwrap() as u8;
            assert_eq!(lte::decode_warning_message_content(dcs, &lte).unwrap(), rec.texts[i]);
            assert_eq!(dcs, if i == 0 { 0x48 } else { 0x0F }, "UCS-2 Chinese, GSM 7-bit English");
            let pdu = unhex(ch["sbcap_pdu_hex"].as_str().unwrap());
            assert_eq!(pdu[0], 0x00, "initiatingMessage");
            assert_eq!(pdu[1], 0x00, "procedure 0: write-replace");
        }
    }
    wait_for(LONG, "acks and targeting reports recorded", || {
        d.broadcasts()[0].carriers.iter().all(|c| c.status == CarrierStatus::Acked && c.targeting.is_some())
    })
    .await;
    let rec = &d.broadcasts()[0];
    assert!(rec.carriers.iter().all(|c| c.cells > 0 && c.detail.as_deref() == Some("ack")));
    for c in &rec.carriers {
        let t = c.targeting.as_ref().unwrap();
        assert!(t.covered_share > 0.99, "{t:?}");
        assert!(t.overshoot_km2 >= 0.0 && t.farthest_overshoot_m > 0.0 && t.area_km2 > 1.0, "{t:?}");
    }
    // The report survives a restart with the rest of the journal.
    drop(d);
    let d = start(config(&carriers_toml(&rx.url(""))), dir.path());
    assert!(d.broadcasts()[0].carriers.iter().all(|c| c.targeting.is_some() && c.status == CarrierStatus::Acked));

    // Update: same code, update number 1. Cancel: a stop for the same identifiers and serial.
    d.alert_changed(&view("CB", 2));
    wait_for(LONG, "update", || cbc_requests(&rx).len() == 6).await;
    d.alert_changed(&ended(view("CB", 3), ViewState::Cancelled));
    wait_for(LONG, "stop", || cbc_requests(&rx).len() == 9).await;
    let all = d.broadcasts();
    assert_eq!(all.len(), 3);
    let (stop, update, first) = (&all[0], &all[1], &all[2]);
    assert_eq!(update.kind, BroadcastKind::WriteReplace);
    assert_eq!((update.message_code, update.update_number), (first.message_code, 1));
    assert_eq!(stop.kind, BroadcastKind::Stop);
    assert_eq!((stop.message_ids, stop.serial), (update.message_ids, update.serial));
    assert_eq!(stop.identifier, "CB.3");
    let stops: Vec<serde_json::Value> = rx.delivered("/cbc/cht").iter().map(envelope).collect();
    let s = &stops[2];
    assert_eq!(s["kind"], "stop");
    assert_eq!(s["pws"][0]["serial"].as_u64(), Some(u64::from(update.serial)));
    assert!(s["pws"][0].get("pages_hex").is_none());
    let pdu = unhex(s["pws"][0]["sbcap_pdu_hex"].as_str().unwrap());
    assert_eq!(pdu[1], 0x01, "procedure 1: stop-warning");
    assert!(s["cap_xml"].as_str().unwrap().contains("<msgType>Cancel</msgType>"));

    // Another alert gets another message code.
    d.alert_changed(&rain_view("CB-OTHER", 1, "township-jiaxian"));
    wait_for(LONG, "second alert", || d.broadcasts().len() == 4).await;
    let other = &d.broadcasts()[0];
    assert_ne!(other.message_code, first.message_code);
    assert_eq!(other.message_ids, [911, 919]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_pages_and_pdus_decode_in_tshark() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = start(config(&carriers_toml(&rx.url(""))), dir.path());
    let drill = AlertView { mode: ViewMode::Exercise, ..rain_view("TS", 1, "township-xinyi") };
    d.alert_changed(&drill);
    wait_for(LONG, "envelopes", || rx.delivered("/cbc/cht").len() == 1).await;
    let v = envelope(&rx.delivered("/cbc/cht")[0]);
    let rec = &d.broadcasts()[0];
    assert!(rec.texts[0].starts_with("[演練]"), "{}", rec.texts[0]);
    assert!(!rec.texts[0].starts_with("[演練][演練]"), "one prefix, not two");
    assert!(rec.texts[1].starts_with("[Drill] "), "{}", rec.texts[1]);

    for (i, ch) in v["pws"].as_array().unwrap().iter().enumerate() {
        let packets: Vec<Vec<u8>> = page_bytes(ch).iter().map(|p| p.to_vec()).collect();
        let rows = tshark_fields(
            Dissector::Cbs,
            &packets,
            &[
                "gsm_cbs.message-identifier",
                "gsm_cbs.serial_number",
                "gsm_cbs.message_code",
                "gsm_cbs.update_number",
                "gsm_cbs.current_page",
                "gsm_cbs.total_pages",
                "gsm_cbs.message_content",
            ],
        );
        assert_eq!(rows.len(), packets.len());
        for (p, row) in rows.iter().enumerate() {
            assert_eq!(row["gsm_cbs.message-identifier"], [rec.message_ids[i].to_string()]);
            assert_eq!(row["gsm_cbs.serial_number"], [format!("{:#06x}", rec.serial)]);
            assert_eq!(row["gsm_cbs.message_code"], [rec.message_code.to_string()]);
            assert_eq!(row["gsm_cbs.update_number"], ["0"]);
            assert_eq!(row["gsm_cbs.current_page"], [(p + 1).to_string()]);
            assert_eq!(row["gsm_cbs.total_pages"], [packets.len().to_string()]);
        }
        let text = &rows.last().unwrap()["gsm_cbs.message_content"];
        // tshark shows the reassembled text on the last page; CR padding and our LF may be rendered as escapes.
        let shown = text.join("").replace("\\r", "").replace("\\n", "\n").replace('\r', "");
        assert_eq!(shown.trim_end(), rec.texts[i].trim_end(), "channel {i}");

        let pdu = unhex(ch["sbcap_pdu_hex"].as_str().unwrap());
        let rows = tshark_fields(
            Dissector::Sbcap,
            &[pdu],
            &[
                "sbc-ap.procedureCode",
                "sbc-ap.Message_Identifier",
                "sbc_ap.SerialNumber.msg_code",
                "sbc_ap.SerialNumber.upd_nb",
                "e212.ecgi.mcc",
                "e212.ecgi.mnc",
                "sbc-ap.Repetition_Period",
                "sbc-ap.WarningMessageContents.nb_pages",
                "_ws.malformed",
                "_ws.expert",
            ],
        );
        let row = &rows[0];
        assert!(row["_ws.malformed"].is_empty() && row["_ws.expert"].is_empty(), "{row:?}");
        assert_eq!(row["sbc-ap.procedureCode"], ["0"]);
        assert_eq!(row["sbc_ap.SerialNumber.msg_code"], [rec.message_code.to_string()]);
        assert_eq!(row["sbc_ap.SerialNumber.upd_nb"], ["0"]);
        assert_eq!(row["sbc-ap.Repetition_Period"], ["60"]);
        assert_eq!(row["sbc-ap.WarningMessageContents.nb_pages"], [packets.len().to_string()]);
        let cells = v["cells"].as_array().unwrap().len();
        assert_eq!(row["e212.ecgi.mcc"].len(), cells);
        assert!(row["e212.ecgi.mnc"].iter().all(|m| m == "92"));
        assert_eq!(row["sbc-ap.Message_Identifier"], [rec.message_ids[i].to_string()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_mode_uses_the_monthly_test_channel() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = start(config(&carriers_toml(&rx.url(""))), dir.path());
    d.alert_changed(&AlertView { mode: ViewMode::Test, ..view("MT", 1) });
    wait_for(LONG, "envelopes", || cbc_requests(&rx).len() == 3).await;
    let rec = &d.broadcasts()[0];
    assert_eq!((rec.class.as_str(), rec.message_ids), ("monthly_test", [4380, 4393]));
    assert!(rec.texts[0].starts_with("[測試]") && rec.texts[1].starts_with("[Test] "));
    assert_eq!(envelope(&cbc_requests(&rx)[0])["alert"]["mode"], "Test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_long_text_is_recorded_with_its_length_never_cut() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let instruction =
        "土石流潛勢溪流影響範圍內之居民請立即撤離至避難處所，遠離溪流及坡地，並配合村里長及地方政府疏散指示。";
    let toml = TEMPLATES_TOML.replacen(instruction, &instruction.repeat(12), 1);
    assert_ne!(toml, TEMPLATES_TOML);
    let templates = Templates::from_toml_str(&toml).unwrap();
    let extra = carriers_toml(&rx.url("")) + &subscriber_toml("media", &rx.url("/media"), "");
    let d = start_with(config(&extra), dir.path(), templates);
    d.alert_changed(&view("LONG", 1));
    wait_for(LONG, "CAP still delivered", || rx.delivered("/media").len() == 1).await;
    let rec = &d.broadcasts()[0];
    let err = rec.error.as_deref().expect("an error for operators");
    assert!(err.contains("Chinese") && err.contains("pages") && err.contains("characters"), "{err}");
    let chars = rec.texts[0].chars().count();
    assert!(err.contains(&chars.to_string()), "names the length {chars}: {err}");
    assert!(rec.carriers.iter().all(|c| c.status == CarrierStatus::Failed && c.delivery_id.is_none()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(cbc_requests(&rx).is_empty(), "nothing half-sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_number_wraps_and_a_carrier_without_cells_fails_alone() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = carriers_toml(&rx.url(""))
        + &format!(
            "[[carrier]]\nname = \"Nowhere Telecom\"\nmcc = \"466\"\nmnc = \"89\"\ncbc_url = \"{}\"\ntoken = \"t\"\n",
            rx.url("/cbc/none")
        );
    let d = start(config(&extra), dir.path());
    for v in 1..=18 {
        d.alert_changed(&view("WRAP", v));
    }
    let updates: Vec<u8> = d.broadcasts().iter().rev().map(|r| r.update_number).collect();
    let want: Vec<u8> = (0..18).map(|i| (i % 16) as u8).collect();
    assert_eq!(updates, want);
    let codes: std::collections::BTreeSet<u16> = d.broadcasts().iter().map(|r| r.message_code).collect();
    assert_eq!(codes.len(), 1, "one message code per alert");
    let nowhere = &d.broadcasts()[0].carriers[3];
    assert_eq!(nowhere.status, CarrierStatus::Failed);
    assert!(nowhere.detail.as_deref().unwrap().contains("no Nowhere Telecom cell"), "{nowhere:?}");
    wait_for(LONG, "all updates to one carrier, in order", || rx.delivered("/cbc/cht").len() == 18).await;
    let serials: Vec<u64> =
        rx.delivered("/cbc/cht").iter().map(|r| envelope(r)["pws"][0]["update_number"].as_u64().unwrap()).collect();
    assert_eq!(serials, want.iter().map(|&u| u64::from(u)).collect::<Vec<_>>());
    assert!(rx.delivered("/cbc/none").is_empty());

    // The allocator survives a restart: a new alert does not reuse the code on the air.
    let code = d.broadcasts()[0].message_code;
    drop(d);
    let d = start(config(&extra), dir.path());
    d.alert_changed(&view("WRAP2", 1));
    assert_ne!(d.broadcasts()[0].message_code, code);
    assert_eq!(d.broadcasts().len(), 19);
}
