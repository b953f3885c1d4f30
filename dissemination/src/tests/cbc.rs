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
            // PLMN-wide by default: a phone moving between the carrier's cells does not show it again.
            assert_eq!(decoded.serial.geo_scope(), encoders::cell_broadcast::GeoScope::Plmn);
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

    // A level rise: the first serial is stopped, then the same code goes out with update number 1. Cancel: a
    // stop for the same identifiers and serial.
    d.alert_changed(&AlertView { level_index: Some(2), ..view("CB", 2) });
    wait_for(LONG, "update", || cbc_requests(&rx).len() == 9).await;
    d.alert_changed(&ended(view("CB", 3), ViewState::Cancelled));
    wait_for(LONG, "stop", || cbc_requests(&rx).len() == 12).await;
    let all = d.broadcasts();
    assert_eq!(all.len(), 4);
    let (stop, update, superseded, first) = (&all[0], &all[1], &all[2], &all[3]);
    assert_eq!(
        (superseded.kind, superseded.serial, superseded.reason.as_str()),
        (BroadcastKind::Stop, first.serial, "superseded")
    );
    assert_eq!((update.kind, update.reason.as_str()), (BroadcastKind::WriteReplace, "level_rose"));
    assert_eq!((update.message_code, update.update_number), (first.message_code, 1));
    assert_eq!(stop.kind, BroadcastKind::Stop);
    assert_eq!((stop.message_ids, stop.serial), (update.message_ids, update.serial));
    assert_eq!(stop.identifier, "CB.3");
    let stops: Vec<serde_json::Value> = rx.delivered("/cbc/cht").iter().map(envelope).collect();
    let kinds: Vec<&str> = stops.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["write_replace", "stop", "write_replace", "stop"], "the old serial stops before the new one");
    let s = &stops[3];
    assert_eq!(s["kind"], "stop");
    assert_eq!(s["pws"][0]["serial"].as_u64(), Some(u64::from(update.serial)));
    assert!(s["pws"][0].get("pages_hex").is_none());
    let pdu = unhex(s["pws"][0]["sbcap_pdu_hex"].as_str().unwrap());
    assert_eq!(pdu[1], 0x01, "procedure 1: stop-warning");
    assert!(s["cap_xml"].as_str().unwrap().contains("<msgType>Cancel</msgType>"));

    // Another alert gets another message code.
    d.alert_changed(&rain_view("CB-OTHER", 1, "township-jiaxian"));
    wait_for(LONG, "second alert", || d.broadcasts().len() == 5).await;
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
    // Nothing is under way to wait for (every carrier failed before a request was made): only a quiet while can show
    // a stray request.
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
    // Every version a level higher: every one a new broadcast (an operator's rebroadcast would do the same).
    for v in 1..=18 {
        d.alert_changed(&AlertView { level_index: Some(v), ..view("WRAP", v) });
    }
    let writes = |d: &Dissemination| -> Vec<BroadcastRecord> {
        d.broadcasts().into_iter().filter(|r| r.kind == BroadcastKind::WriteReplace).collect()
    };
    let updates: Vec<u8> = writes(&d).iter().rev().map(|r| r.update_number).collect();
    let want: Vec<u8> = (0..18).map(|i| (i % 16) as u8).collect();
    assert_eq!(updates, want);
    let codes: std::collections::BTreeSet<u16> = d.broadcasts().iter().map(|r| r.message_code).collect();
    assert_eq!(codes.len(), 1, "one message code per alert");
    let nowhere = &writes(&d)[0].carriers[3];
    assert_eq!(nowhere.status, CarrierStatus::Failed);
    assert!(nowhere.detail.as_deref().unwrap().contains("no Nowhere Telecom cell"), "{nowhere:?}");
    wait_for(LONG, "all updates to one carrier, in order", || rx.delivered("/cbc/cht").len() == 35).await;
    let serials: Vec<u64> = rx
        .delivered("/cbc/cht")
        .iter()
        .map(envelope)
        .filter(|e| e["kind"] == "write_replace")
        .map(|e| e["pws"][0]["update_number"].as_u64().unwrap())
        .collect();
    assert_eq!(serials, want.iter().map(|&u| u64::from(u)).collect::<Vec<_>>());
    assert!(rx.delivered("/cbc/none").is_empty());

    // The allocator survives a restart: a new alert does not reuse the code on the air.
    let code = d.broadcasts()[0].message_code;
    drop(d);
    let d = start(config(&extra), dir.path());
    d.alert_changed(&view("WRAP2", 1));
    assert_ne!(d.broadcasts()[0].message_code, code);
    assert_eq!(d.broadcasts().len(), 36);
}

/// Calm updates: a value change and a falling level change CAP, not the air; a rise stops the serial on the air
/// before writing the next one, in each carrier's order; the end stops everything of the alert, in the cells each
/// carrier was written to, even after the alert's zone changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_rise_re_alerts_and_the_end_stops_every_serial_in_its_cells() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = start(config(&carriers_toml(&rx.url(""))), dir.path());
    let rain = |v: u32, level: u32| AlertView { level_index: Some(level), ..rain_view("CALM", v, "dfa-xinyi-shenmu") };
    d.alert_changed(&rain(1, 1));
    // New values, a fall, the same level again: CAP messages, no broadcast, each counted as a calm update.
    let calm_before = crate::metrics::METRICS.cbc_calm.get();
    d.alert_changed(&AlertView { value: 999.0, ..rain(2, 1) });
    d.alert_changed(&AlertView { severity: Severity::Moderate, ..rain(3, 0) });
    d.alert_changed(&rain(4, 1));
    assert_eq!(d.messages_of("CALM").len(), 4);
    // Other tests run beside this one and may count too: at least these three.
    assert!(crate::metrics::METRICS.cbc_calm.get() >= calm_before + 3);
    let kinds = |d: &Dissemination| d.broadcasts().iter().rev().map(|r| (r.kind, r.reason.clone())).collect::<Vec<_>>();
    assert_eq!(kinds(&d), [(BroadcastKind::WriteReplace, "first".to_string())]);
    // Above what is on the air: level 2 (a rise), then the zone moves to the whole township (the area grows).
    d.alert_changed(&rain(5, 2));
    d.alert_changed(&AlertView { area_id: "township-xinyi".into(), ..rain(6, 2) });
    let w = BroadcastKind::WriteReplace;
    let s = BroadcastKind::Stop;
    assert_eq!(
        kinds(&d),
        [
            (w, "first".into()),
            (s, "superseded".into()),
            (w, "level_rose".into()),
            (s, "superseded".into()),
            (w, "area_grew".into())
        ]
    );
    // Moving back to the smaller zone is not growth: calm.
    d.alert_changed(&rain(7, 2));
    assert_eq!(d.broadcasts().len(), 5);
    wait_for(LONG, "all carriers", || cbc_requests(&rx).len() == 15).await;
    wait_for(LONG, "acknowledged", || {
        let a = d.on_air();
        a.history.len() == 6 && a.carriers.values().flatten().all(|e| e.state == AirState::OnAir)
    })
    .await;
    let on_air = d.on_air();
    for (carrier, live) in &on_air.carriers {
        assert_eq!(live.len(), 1, "{carrier}: one serial on the air: {live:?}");
        assert_eq!(live[0].state, AirState::OnAir);
        assert_eq!(live[0].update_number, 2);
    }
    assert_eq!(on_air.history.len(), 6, "two serials stopped on three carriers");
    let township_cells = on_air.carriers["Chunghwa Telecom"][0].cells.clone();

    d.alert_changed(&ended(rain(8, 2), ViewState::Cleared));
    wait_for(LONG, "stops", || cbc_requests(&rx).len() == 18).await;
    wait_for(LONG, "nothing on the air", || d.on_air().carriers.values().all(Vec::is_empty)).await;
    let last_stop = envelope(rx.delivered("/cbc/cht").last().unwrap());
    assert_eq!(last_stop["kind"], "stop");
    let names: Vec<String> =
        last_stop["cells"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().into()).collect();
    assert_eq!(names, township_cells, "the stop names the cells written, not the zone's today");
}

/// A restart restores the ledger and finishes what was in flight: a stop the CBC had not acknowledged is sent again
/// after the restart, and only then is the air empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_in_flight_is_finished_after_a_restart() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = start(config(&carriers_toml(&rx.url(""))), dir.path());
    d.alert_changed(&view("INFLIGHT", 1));
    wait_for(LONG, "written", || cbc_requests(&rx).len() == 3).await;
    wait_for(LONG, "acknowledged", || d.on_air().carriers.values().flatten().all(|e| e.state == AirState::OnAir)).await;
    rx.set(Behaviour::Answer(503));
    d.alert_changed(&ended(view("INFLIGHT", 2), ViewState::Cancelled));
    wait_for(LONG, "stops refused", || rx.all().len() >= 6).await;
    let stopping: Vec<AirState> = d.on_air().carriers.values().flatten().map(|e| e.state).collect();
    assert_eq!(stopping, [AirState::Stopping; 3]);
    drop(d);

    // The CBCs still refuse while the restarted instance's ledger is read: with them answering at once, the resent
    // stops could be acknowledged before the check (it failed that way under load).
    let d = start(config(&carriers_toml(&rx.url(""))), dir.path());
    let stopping: Vec<AirState> = d.on_air().carriers.values().flatten().map(|e| e.state).collect();
    assert_eq!(stopping, [AirState::Stopping; 3], "the ledger is restored");
    rx.set(Behaviour::Answer(200));
    wait_for(LONG, "stops after the restart", || cbc_requests(&rx).len() == 6).await;
    wait_for(LONG, "nothing on the air", || d.on_air().carriers.values().all(Vec::is_empty)).await;
    assert!(rx.delivered("/cbc/cht").iter().map(envelope).last().is_some_and(|e| e["kind"] == "stop"));
    assert_eq!(d.on_air().history.len(), 3);
}

/// An operator's rebroadcast: the serial on the air stops, the next update number goes out; refused for an alert
/// that ended or does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_rebroadcast_re_alerts_once() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = start(config(&carriers_toml(&rx.url(""))), dir.path());
    d.alert_changed(&view("OPS", 1));
    d.alert_changed(&view("OPS", 2));
    assert_eq!(d.broadcasts().len(), 1, "a value change stays calm");
    let planned = d.rebroadcast("OPS").unwrap();
    assert_eq!(
        planned.iter().map(|r| (r.kind, r.reason.as_str())).collect::<Vec<_>>(),
        [(BroadcastKind::Stop, "superseded"), (BroadcastKind::WriteReplace, "operator")]
    );
    assert_eq!(planned[1].update_number, 1);
    assert_eq!(planned[1].identifier, "OPS.2", "the latest released message");
    wait_for(LONG, "stop and write", || cbc_requests(&rx).len() == 9).await;
    assert!(matches!(d.rebroadcast("OPS"), Err(RebroadcastError::TooSoon { wait_s: 55..=60 })), "one a minute");
    assert_eq!(d.rebroadcast("NOPE"), Err(RebroadcastError::UnknownAlert("NOPE".into())));
    d.alert_changed(&ended(view("OPS", 3), ViewState::Cancelled));
    assert_eq!(d.rebroadcast("OPS"), Err(RebroadcastError::NotActive("OPS".into())));
}

/// The geographical scope per class: PLMN-wide by default, overridable per class, a bad value named.
#[test]
fn geo_scope_per_class() {
    let mut cfg = config("");
    cfg.cell_broadcast.class_geo_scope.insert("monthly_test".into(), "cell_normal".into());
    let s = crate::channel::cbc::Settings::resolve(&cfg.cell_broadcast, &[], &templates(), &|_| None).unwrap();
    use encoders::cell_broadcast::GeoScope;
    assert_eq!(s.scope_for(PwsClass::Alert), GeoScope::Plmn);
    assert_eq!(s.scope_for(PwsClass::Emergency(0)), GeoScope::Plmn);
    assert_eq!(s.scope_for(PwsClass::MonthlyTest), GeoScope::CellNormal);
    cfg.cell_broadcast.class_geo_scope.insert("alert".into(), "galaxy".into());
    let e = crate::channel::cbc::Settings::resolve(&cfg.cell_broadcast, &[], &templates(), &|_| None).unwrap_err();
    assert_eq!(e.field, "cell_broadcast.class_geo_scope.alert", "{e}");
    cfg.cell_broadcast.class_geo_scope.clear();
    cfg.cell_broadcast.rebroadcast_on = vec!["level_rise".into(), "moon_phase".into()];
    let e = crate::channel::cbc::Settings::resolve(&cfg.cell_broadcast, &[], &templates(), &|_| None).unwrap_err();
    assert_eq!(e.field, "cell_broadcast.rebroadcast_on[1]", "{e}");
}
