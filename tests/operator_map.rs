//! The operators' socket narrowed to part of the map (bounding box, region of zones), commands over it checked against
//! the token's scope, operators' comments, and clients that stop reading dropped while the others keep receiving.

mod common;

use std::time::Duration;

use common::{
    device_password, http_get, http_request, now_ms, raise_heavy_rain, Citizen, Device, Server, SHENMU, TOKEN,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(10);
/// Around Shenmu village (the debris-flow gauges); the river gauge, the freeway and Taipei lie outside.
const SHENMU_BOX: &str = "120.90,23.50,120.95,23.54";
/// Around Keelung and Taipei: no demo sensor lies there.
const NORTH_BOX: &str = "121.40,24.90,121.80,25.20";

async fn connect(server: &Server, query: &str, token: &str) -> Ws {
    let mut request = format!("ws://{}/ws/operator{query}", server.http).into_client_request().unwrap();
    request.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(request).await.expect("operator websocket connects").0
}

async fn next_json(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.ok()??.ok()?;
        if let Message::Text(text) = msg {
            return serde_json::from_str(&text).ok();
        }
    }
}

/// Frames of `kind` arriving within `within`.
async fn collect(ws: &mut Ws, kind: &str, within: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while let Some(frame) = next_json(ws, deadline.saturating_duration_since(tokio::time::Instant::now())).await {
        if frame["type"] == kind {
            out.push(frame);
        }
    }
    out
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::Text(frame.to_string().into())).await.expect("frame sent");
}

fn ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list.as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn an_operator_socket_filtered_to_a_box_sees_only_what_lies_there() {
    let server = Server::start();
    let mut shenmu = connect(&server, &format!("?bbox={SHENMU_BOX}"), TOKEN).await;
    let snap = next_json(&mut shenmu, WAIT).await.expect("a snapshot");
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(
        ids(&snap["sensors"]),
        ["EX0001", "RG0001", "RG0002", "SM0001", "TM0001", "VD0102", "VD0103", "WS0001"],
        "{}",
        snap["sensors"]
    );
    let zones = ids(&snap["zones"]);
    assert!(zones.contains(&"dfa-xinyi-shenmu".to_string()), "{zones:?}");
    assert!(!zones.contains(&"reach-keelung-neihu".to_string()), "{zones:?}");
    assert_eq!(snap["filter"]["bbox"], json!([120.90, 23.50, 120.95, 23.54]));

    let mut north = connect(&server, &format!("?bbox={NORTH_BOX}"), TOKEN).await;
    let snap = next_json(&mut north, WAIT).await.expect("a snapshot");
    assert_eq!(snap["sensors"], json!([]), "no demo sensor lies around Taipei");
    assert!(ids(&snap["zones"]).contains(&"reach-keelung-neihu".to_string()));

    // Sensor deltas: a gauge inside the box and the river gauge outside it both report.
    let ts = now_ms();
    for id in ["RG0002", "RV0001"] {
        let mut device = Device::connect(server.mqtt, id, &device_password(id)).await.unwrap();
        let values = if id == "RV0001" { r#"{"level_m":1.2}"# } else { r#"{"rain_mm":0.5}"# };
        device.publish(&format!("sensors/{id}/readings"), format!(r#"{{"ts":{ts},"values":{values}}}"#)).await;
        device.wait_acks(1).await;
    }
    let updates = collect(&mut shenmu, "sensor", Duration::from_millis(2500)).await;
    let seen: Vec<_> = updates.iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert!(seen.contains(&"RG0002"), "the gauge inside the box is shown: {seen:?}");
    assert!(!seen.contains(&"RV0001"), "the river gauge outside the box is not: {seen:?}");

    // An alert at Shenmu reaches the Shenmu map only.
    raise_heavy_rain(&server, 120.0, now_ms()).await;
    let alert = collect(&mut shenmu, "alert", Duration::from_secs(3)).await;
    assert!(alert.iter().any(|a| a["area_id"] == "dfa-xinyi-shenmu"), "{alert:?}");
    let elsewhere = collect(&mut north, "alert", Duration::from_secs(2)).await;
    assert!(elsewhere.is_empty(), "Taipei's map must not get a Shenmu alert: {elsewhere:?}");

    // Re-aiming the northern map at the Shenmu region answers with that region's snapshot, alert included.
    send(&mut north, json!({"type": "filter", "zones": ["dfa-xinyi-shenmu"]})).await;
    let snap = next_json(&mut north, WAIT).await.expect("a new snapshot");
    assert_eq!(snap["type"], "snapshot", "{snap}");
    assert_eq!(snap["filter"]["zones"], json!(["dfa-xinyi-shenmu"]));
    assert!(snap["alerts"].as_array().unwrap().iter().any(|a| a["area_id"] == "dfa-xinyi-shenmu"), "{snap}");
    assert!(ids(&snap["sensors"]).contains(&"RG0001".to_string()));
    assert!(!ids(&snap["sensors"]).contains(&"RV0001".to_string()));
    // An empty filter shows everything again.
    send(&mut north, json!({"type": "filter"})).await;
    let snap = next_json(&mut north, WAIT).await.expect("a new snapshot");
    assert_eq!(snap["sensors"].as_array().unwrap().len(), 18, "{}", snap["sensors"]);
}

#[tokio::test]
async fn bad_filters_are_refused_with_the_reason() {
    let server = Server::start();
    for (query, needle) in [
        ("?bbox=120,23,121", "4 numbers"),
        ("?bbox=121,23,120,24", "min before max"),
        ("?bbox=120,23,121,NaN", "min before max"),
        ("?bbox=a,b,c,d", "numbers"),
        ("?zones=nowhere", "nowhere"),
    ] {
        let (status, body) = http_get(server.http, &format!("/ws/operator{query}"), Some(TOKEN)).unwrap();
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(needle), "{query}: {body}");
    }
    // No token: 401 before the filter is even looked at.
    let (status, _) = http_get(server.http, "/ws/operator?bbox=1", None).unwrap();
    assert_eq!(status, 401);

    let mut ws = connect(&server, "", TOKEN).await;
    next_json(&mut ws, WAIT).await.expect("a snapshot");
    send(&mut ws, json!({"type": "filter", "bbox": [1, 2, 3]})).await;
    let error = next_json(&mut ws, WAIT).await.expect("an error frame");
    assert_eq!((error["type"].as_str(), error["reason"].as_str()), (Some("error"), Some("bad_filter")), "{error}");
    send(&mut ws, json!({"type": "filter", "zones": vec!["x"; 201]})).await;
    let error = next_json(&mut ws, WAIT).await.expect("an error frame");
    assert_eq!(error["reason"], "bad_filter", "{error}");
    // The socket survives and takes a good filter.
    send(&mut ws, json!({"type": "filter", "bbox": [120.9, 23.5, 120.95, 23.54]})).await;
    let snap = next_json(&mut ws, WAIT).await.expect("a snapshot");
    assert_eq!(snap["type"], "snapshot", "{snap}");
}

#[tokio::test]
async fn a_read_token_watches_over_the_socket_but_does_not_act_and_comments_are_kept() {
    let config = common::config_copy("socket-scopes", |t| {
        format!(
            "{t}\n[[operator_tokens]]\nname = \"viewer\"\nscope = \"read\"\nsha256 = \"{}\"\n",
            common::sha256_hex("socket-viewer-token")
        )
    });
    let server = Server::serve(&config);
    let mut admin = server.operator().await;
    raise_heavy_rain(&server, 120.0, now_ms()).await;
    let alert = admin.alert_where(WAIT, |a| a["area_id"] == "dfa-xinyi-shenmu").await.expect("an alert");
    let id = alert["id"].as_str().unwrap().to_string();

    let mut viewer = connect(&server, "", "socket-viewer-token").await;
    let snapshot = next_json(&mut viewer, WAIT).await.expect("a snapshot");
    // The snapshot says what this socket may do, so that the map offers no button the server would refuse.
    assert_eq!(
        (snapshot["operator"].as_str(), snapshot["scope"].as_str()),
        (Some("viewer"), Some("read")),
        "{snapshot}"
    );
    for kind in ["ack", "approve", "cancel", "comment"] {
        send(&mut viewer, json!({"type": kind, "id": id, "text": "from a viewer"})).await;
        // Deltas (a second rule's alert, sensor updates) may arrive before the reply.
        let reply = loop {
            let frame = next_json(&mut viewer, WAIT).await.expect("a reply");
            if !matches!(frame["type"].as_str(), Some("alert" | "public_warning" | "sensor" | "report")) {
                break frame;
            }
        };
        assert_eq!((reply["type"].as_str(), reply["reason"].as_str()), (Some("error"), Some("forbidden")), "{reply}");
    }
    let (_, body) = http_get(server.http, "/api/v1/alerts", Some(TOKEN)).unwrap();
    let list: Value = serde_json::from_str(&body).unwrap();
    let stored = list["alerts"].as_array().unwrap().iter().find(|a| a["id"] == id.as_str()).unwrap().clone();
    assert_eq!(stored["acknowledged_by"], Value::Null, "the viewer's ack had no effect: {stored}");
    assert_eq!(stored["state"], "raised", "the viewer's cancel had no effect: {stored}");
    assert_eq!(stored["comments"], json!([]));

    // An admin comments over HTTP and over the socket; both are kept and shown to every operator.
    let (status, body) = http_request(
        server.http,
        "POST",
        &format!("/api/v1/alerts/{id}/comment"),
        Some(TOKEN),
        Some(r#"{"text": "police closed the bridge"}"#),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_request(
        server.http,
        "POST",
        &format!("/api/v1/alerts/{id}/comment"),
        Some(TOKEN),
        Some(r#"{"txt": "typo"}"#),
    )
    .unwrap();
    assert_eq!(status, 400, "{body}");
    let (status, _) = http_request(
        server.http,
        "POST",
        &format!("/api/v1/alerts/{id}/comment"),
        Some("socket-viewer-token"),
        Some(r#"{"text": "x"}"#),
    )
    .unwrap();
    assert_eq!(status, 403);
    let mut admin_ws = connect(&server, "", TOKEN).await;
    next_json(&mut admin_ws, WAIT).await.expect("a snapshot");
    send(&mut admin_ws, json!({"type": "comment", "id": id, "text": "evacuation bus sent"})).await;
    let reply = collect(&mut admin_ws, "result", Duration::from_secs(3)).await;
    assert_eq!(reply.len(), 1, "{reply:?}");
    let texts: Vec<_> =
        reply[0]["alert"]["comments"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["police closed the bridge", "evacuation bus sent"]);
    let seen = collect(&mut viewer, "alert", Duration::from_secs(3)).await;
    let commented = seen.iter().filter(|a| a["id"] == id.as_str()).filter_map(|a| a["comments"].as_array()).next_back();
    assert_eq!(commented.map(|c| c.len()), Some(2), "the viewer sees both comments: {seen:?}");
}

#[tokio::test]
async fn clients_that_stop_reading_are_dropped_while_others_keep_receiving() {
    let config = common::config_copy("idle-timeout", |t| t.replace("ws_idle_timeout_s = 60", "ws_idle_timeout_s = 2"));
    let server = Server::serve(&config);
    // Two clients that connect, subscribe, then never read again (their pongs are never sent).
    let mut stalled_citizen = Citizen::connect(&server).await;
    stalled_citizen.subscribe(json!([{"lat": SHENMU.0, "lon": SHENMU.1}]), "en", json!([])).await;
    let mut stalled_operator = connect(&server, "", TOKEN).await;
    next_json(&mut stalled_operator, WAIT).await.expect("a snapshot");

    // A citizen and an operator that keep reading, in their own tasks.
    let mut live_citizen = Citizen::connect(&server).await;
    live_citizen.subscribe(json!([{"lat": SHENMU.0, "lon": SHENMU.1}]), "en", json!([])).await;
    let (citizen_tx, mut citizen_rx) = tokio::sync::mpsc::unbounded_channel();
    let citizen_task = tokio::spawn(async move {
        while let Some(frame) = live_citizen.next_json(Duration::from_secs(60)).await {
            let _ = citizen_tx.send(frame);
        }
    });
    let mut live_operator = connect(&server, "", TOKEN).await;
    next_json(&mut live_operator, WAIT).await.expect("a snapshot");
    let (operator_tx, mut operator_rx) = tokio::sync::mpsc::unbounded_channel();
    let operator_task = tokio::spawn(async move {
        while let Some(frame) = next_json(&mut live_operator, Duration::from_secs(60)).await {
            let _ = operator_tx.send(frame);
        }
    });

    let dropped =
        |channel: &str| server.metric(&format!("dc_ws_dropped_total{{channel=\"{channel}\",reason=\"unresponsive\"}}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while (dropped("citizen") < 1.0 || dropped("operator") < 1.0) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(dropped("citizen"), 1.0, "the stalled citizen, and only it, is dropped");
    assert_eq!(dropped("operator"), 1.0, "the stalled operator, and only it, is dropped");

    // The readers are still connected and get the next alert at once.
    raise_heavy_rain(&server, 120.0, now_ms()).await;
    let until = tokio::time::Instant::now() + WAIT;
    let got = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>| {
        let mut found = false;
        while let Ok(frame) = rx.try_recv() {
            found |= frame["type"] == "alert";
        }
        found
    };
    let (mut citizen_got, mut operator_got) = (false, false);
    while !(citizen_got && operator_got) && tokio::time::Instant::now() < until {
        citizen_got |= got(&mut citizen_rx);
        operator_got |= got(&mut operator_rx);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(citizen_got && operator_got, "readers still served: citizen {citizen_got}, operator {operator_got}");

    // The server let go of the stalled sockets: only the readers are counted as open, and the stalled operator's
    // stream ends once it reads again.
    assert_eq!(server.metric("dc_ws_citizen_connections"), 1.0);
    assert_eq!(server.metric("dc_ws_operator_connections"), 1.0);
    let end = tokio::time::timeout(WAIT, async {
        while let Some(Ok(msg)) = stalled_operator.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the stalled operator's stream ends");
    drop(stalled_citizen);
    citizen_task.abort();
    operator_task.abort();
}

/// `serve` on the demo's data with a read-only token `viewer`, its `public_url` at the port it listens on, so that the
/// carriers' CBC envelopes reach its own demo receivers and are acknowledged (on the air).
fn serve_with_viewer(name: &str, viewer: &str) -> Server {
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port()).parse().unwrap();
    let mqtt: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port()).parse().unwrap();
    let config = common::config_copy(name, |t| {
        format!(
            "{}\n[[operator_tokens]]\nname = \"viewer\"\nscope = \"read\"\nsha256 = \"{}\"\n",
            t.replace("public_url = \"http://127.0.0.1:8080\"", &format!("public_url = \"http://{http}\"")),
            common::sha256_hex(viewer)
        )
    });
    let data_dir = std::env::temp_dir().join(format!("dc-{name}-{}-{}", std::process::id(), http.port()));
    Server::serve_again_at(&config, &data_dir, mqtt, http)
}

/// Percent-encodes what a path segment or query value cannot carry as is (carrier names have spaces).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The carriers' cell sites as written in `config/cell_sites.csv`, by printed ECGI (`466-92-2560257`):
/// (carrier name in the file, lat, lon, range in metres).
fn demo_sites() -> std::collections::HashMap<String, (String, f64, f64, f64)> {
    include_str!("../config/cell_sites.csv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("carrier,"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            (f.len() == 10).then(|| {
                let num = |i: usize| f[i].parse::<f64>().unwrap();
                (format!("{}-{}-{}", f[1], f[2], f[3]), (f[0].to_string(), num(5), num(6), num(9)))
            })
        })
        .collect()
}

/// Metres between two lat/lon points (haversine: the footprints are a few km, any sphere model agrees to 0.5 %).
fn metres((lat1, lon1): (f64, f64), (lat2, lon2): (f64, f64)) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6_371_008.8 * a.sqrt().asin()
}

/// Bounding box [min lon, min lat, max lon, max lat] of every position in a GeoJSON coordinates tree.
fn bbox(coordinates: &Value) -> [f64; 4] {
    let mut b = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
    fn walk(v: &Value, b: &mut [f64; 4]) {
        match v.as_array() {
            Some(a) if a.len() == 2 && a[0].is_number() => {
                let (x, y) = (a[0].as_f64().unwrap(), a[1].as_f64().unwrap());
                *b = [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)];
            }
            Some(a) => a.iter().for_each(|v| walk(v, b)),
            None => {}
        }
    }
    walk(coordinates, &mut b);
    b
}

/// What the map draws of a cell broadcast (issues 25 and 26): per carrier, the cells the alert's broadcast was written
/// to, as the footprints of the carriers' own cell sites with their state on the air; and the Warning Area
/// Coordinates exactly as the CBCs received them. Read scope is enough; no token is refused.
#[tokio::test]
async fn the_map_gets_each_carriers_cells_and_the_warning_area_a_broadcast_carried() {
    const VIEWER: &str = "coverage-viewer-token";
    let server = serve_with_viewer("coverage", VIEWER);
    raise_heavy_rain(&server, 120.0, now_ms()).await;

    // Every carrier's CBC acknowledged the write-replace: the ledger has it on the air.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let on_air = loop {
        let (_, body) = server.get("/api/v1/broadcasts");
        let v: Value = serde_json::from_str(&body).unwrap();
        let carriers = v["on_air"].as_object().cloned().unwrap_or_default();
        if !carriers.is_empty()
            && carriers.values().all(|e| e.as_array().is_some_and(|e| e.iter().any(|e| e["state"] == "on_air")))
        {
            break carriers;
        }
        assert!(std::time::Instant::now() < deadline, "not on the air on every carrier: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(on_air.len(), 3, "the demo's three carriers: {on_air:?}");
    let sites = demo_sites();
    let (_, zone) = http_get(server.http, "/api/v1/zones/dfa-xinyi-shenmu/cells", Some(TOKEN)).unwrap();
    let zone_box = bbox(&serde_json::from_str::<Value>(&zone).unwrap()["coordinates"]);
    let mut warning = String::new();
    for (carrier, entries) in &on_air {
        let entry = entries.as_array().unwrap().iter().find(|e| e["state"] == "on_air").unwrap();
        warning = entry["alert_id"].as_str().unwrap().to_string();
        let written: std::collections::BTreeSet<&str> =
            entry["cells"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        assert!(!written.is_empty(), "{entry}");
        let path = format!("/api/v1/carriers/{}/cells?alert={}", encode(carrier), encode(&warning));
        let (status, body) = http_get(server.http, &path, Some(VIEWER)).unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        let cells: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((cells["type"].as_str(), cells["truncated"].as_bool()), (Some("FeatureCollection"), Some(false)));
        assert_eq!(cells["unknown"], json!([]), "{body}");
        let features = cells["features"].as_array().unwrap();
        let drawn: std::collections::BTreeSet<&str> = features.iter().map(|f| f["id"].as_str().unwrap()).collect();
        assert_eq!(drawn, written, "{carrier}: the footprints are exactly the cells the ledger says were written");
        for f in features {
            let p = &f["properties"];
            assert_eq!((p["state"].as_str(), &p["serial"]), (Some("on_air"), &entry["serial"]), "{f}");
            assert_eq!(p["message_ids"], entry["message_ids"], "{f}");
            // The footprint is the carrier's own site's sector: every vertex within its range of the antenna, as the
            // sites file puts it, and it reaches the zone it was targeted for.
            let (site_carrier, lat, lon, range) = &sites[f["id"].as_str().unwrap()];
            assert_eq!(site_carrier, carrier, "{f}");
            let ring = f["geometry"]["coordinates"][0].as_array().unwrap();
            assert!(ring.len() >= 4 && ring.first() == ring.last(), "a closed ring: {f}");
            for v in ring {
                let d = metres((*lat, *lon), (v[1].as_f64().unwrap(), v[0].as_f64().unwrap()));
                assert!(d <= range * 1.005 + 1.0, "{}: a vertex {d:.0} m from the antenna, range {range} m", f["id"]);
            }
            let b = bbox(&f["geometry"]["coordinates"]);
            assert!(
                b[0] <= zone_box[2] && zone_box[0] <= b[2] && b[1] <= zone_box[3] && zone_box[1] <= b[3],
                "{}: a targeted cell's footprint {b:?} meets the zone {zone_box:?}",
                f["id"]
            );
        }
        // The alert behind the public warning names the same broadcast; without `alert`, what is on the air now.
        let opener = warning.strip_prefix("W-").expect("a public warning id");
        for other in [format!("?alert={}", encode(opener)), String::new()] {
            let path = format!("/api/v1/carriers/{}/cells{other}", encode(carrier));
            let (_, body) = http_get(server.http, &path, Some(VIEWER)).unwrap();
            let ids: std::collections::BTreeSet<String> = serde_json::from_str::<Value>(&body).unwrap()["features"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(ids.iter().map(String::as_str).collect::<std::collections::BTreeSet<_>>(), written, "{path}");
        }
        let (status, _) = http_get(server.http, &format!("/api/v1/carriers/{}/cells", encode(carrier)), None).unwrap();
        assert_eq!(status, 401, "no token, no cells");
    }
    let (status, body) = http_get(server.http, "/api/v1/carriers/Nowhere%20Mobile/cells", Some(VIEWER)).unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("Chunghwa Telecom"), "an unknown carrier's 404 names the carriers: {body}");
    let (status, body) = http_get(server.http, "/api/v1/carriers/FarEasTone/cells?zone=x", Some(VIEWER)).unwrap();
    assert_eq!(status, 400, "{body}");

    // The warning area: exactly the polygons the CBCs received in the envelope, sent by every demo carrier.
    let path = format!("/api/v1/broadcasts/{}/warning-area", encode(&warning));
    let (status, _) = http_get(server.http, &path, None).unwrap();
    assert_eq!(status, 401, "no token, no warning area");
    let (status, body) = http_get(server.http, &path, Some(VIEWER)).unwrap();
    assert_eq!(status, 200, "{body}");
    let area: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(area["zone"], "dfa-xinyi-shenmu", "{area}");
    let mut sent_by: Vec<&str> =
        area["sent_by"].as_array().unwrap().iter().map(|s| s["carrier"].as_str().unwrap()).collect();
    sent_by.sort();
    assert_eq!(sent_by, ["Chunghwa Telecom", "FarEasTone", "Taiwan Mobile"]);
    let (_, received) = server.get("/demo/received");
    let received: Value = serde_json::from_str(&received).unwrap();
    let envelope: Value = received["received"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["receiver"].as_str().is_some_and(|n| n.starts_with("cbc/")))
        .map(|r| serde_json::from_str::<Value>(r["body"].as_str().unwrap()).unwrap())
        .find(|b| b["kind"] == "write_replace")
        .expect("a write-replace envelope");
    let sent = &envelope["warning_area_coordinates"];
    let sent_polygons = sent["polygons"].as_array().expect("polygons in the envelope");
    let geometry = &area["geometry"];
    let drawn: Vec<&Value> = match geometry["type"].as_str() {
        Some("Polygon") => vec![&geometry["coordinates"]],
        Some("MultiPolygon") => geometry["coordinates"].as_array().unwrap().iter().collect(),
        other => panic!("geometry {other:?}"),
    };
    assert_eq!(drawn.len(), sent_polygons.len(), "{geometry}");
    for (ours, theirs) in drawn.iter().zip(sent_polygons) {
        let ring = ours[0].as_array().unwrap();
        let theirs = theirs.as_array().unwrap();
        assert_eq!(ring.len(), theirs.len() + 1, "closed ring vs the vertices once each");
        for (v, w) in ring.iter().zip(theirs) {
            let same = (v[0].as_f64().unwrap() - w[1].as_f64().unwrap()).abs() < 1e-9
                && (v[1].as_f64().unwrap() - w[0].as_f64().unwrap()).abs() < 1e-9;
            assert!(same, "vertex {v} vs the envelope's [lat, lon] {w}");
        }
    }
    assert_eq!(
        area["vertices"].as_u64().unwrap() as usize,
        sent_polygons.iter().map(|p| p.as_array().unwrap().len()).sum::<usize>()
    );
    assert!(
        (area["worst_displacement_m"].as_f64().unwrap() - sent["worst_displacement_m"].as_f64().unwrap()).abs() < 1e-6
    );
    // The outline holds the zone (outward simplification): its box holds the zone's box.
    let outline = bbox(&geometry["coordinates"]);
    let zone_geometry = server.snapshot().await["zones"]
        .as_array()
        .unwrap()
        .iter()
        .find(|z| z["id"] == "dfa-xinyi-shenmu")
        .map(|z| z["area"].clone())
        .expect("the zone in the snapshot");
    let zb = bbox(&zone_geometry["coordinates"]);
    assert!(
        outline[0] <= zb[0] && outline[1] <= zb[1] && outline[2] >= zb[2] && outline[3] >= zb[3],
        "{outline:?} holds {zb:?}"
    );
    let (status, body) = http_get(server.http, "/api/v1/broadcasts/W-nothing/warning-area", Some(VIEWER)).unwrap();
    assert_eq!(status, 404, "{body}");

    // Cancelled: every serial is stopped; the alert's cells stay listed, as stopped, and nothing is on the air.
    let opener = warning.strip_prefix("W-").unwrap();
    let (status, body) = common::http_request(
        server.http,
        "POST",
        &format!("/api/v1/alerts/{}/cancel", encode(opener)),
        Some(TOKEN),
        Some("{}"),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = server.get("/api/v1/broadcasts");
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["on_air"].as_object().unwrap().values().all(|e| e.as_array().unwrap().is_empty()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still on the air after the cancel: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (carrier, entries) in &on_air {
        let written = entries.as_array().unwrap()[0]["cells"].as_array().unwrap().len();
        let path = format!("/api/v1/carriers/{}/cells?alert={}", encode(carrier), encode(&warning));
        let (_, body) = http_get(server.http, &path, Some(VIEWER)).unwrap();
        let features = serde_json::from_str::<Value>(&body).unwrap()["features"].as_array().unwrap().clone();
        assert_eq!(features.len(), written, "{body}");
        assert!(
            features.iter().all(|f| f["properties"]["state"] == "stopped" && f["properties"]["stopped_ms"].is_i64()),
            "{body}"
        );
        let (_, body) =
            http_get(server.http, &format!("/api/v1/carriers/{}/cells", encode(carrier)), Some(VIEWER)).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["features"], json!([]), "nothing on the air: {body}");
    }
}
