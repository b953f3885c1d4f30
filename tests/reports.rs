//! Citizen reports end to end: the real binary, real sockets. Bad input of every kind, clustering, rate
//! limits, operator decisions, open data, and the operator websocket.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{now_ms, raise_heavy_rain, Operator, Server, SHENMU, TOKEN};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
/// A point in the Xiaolin debris-flow area, far from Shenmu.
const XIAOLIN: (f64, f64) = (23.162, 120.649);
/// Taitung: in Taiwan, but no demo zone within tens of kilometres.
const TAITUNG: (f64, f64) = (22.7583, 121.1444);

/// A raw HTTP/1.1 request with our own headers; returns status, lower-cased head and body. The body is written on
/// another thread so that a server refusing early (413) cannot deadlock us, and write errors are ignored for the same
/// reason: the answer is what counts.
fn raw(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connects");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(&body);
    });
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
    let _ = sender.join();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status");
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// `POST /api/v1/reports` as the app sends it.
fn post_report(server: &Server, client: Option<&str>, body: &Value) -> (u16, Value) {
    let (status, _, body) = post_report_raw(server.http, client, body);
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}")))
}

fn post_report_raw(addr: SocketAddr, client: Option<&str>, body: &Value) -> (u16, String, String) {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(c) = client {
        headers.push(("X-Client-Id", c));
    }
    raw(addr, "POST", "/api/v1/reports", &headers, body.to_string().into_bytes())
}

fn report(at: (f64, f64), category: &str, text: &str) -> Value {
    json!({"lat": at.0, "lon": at.1, "category": category, "text": text})
}

/// An operator request with the token; body parsed as JSON.
fn operator(server: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let (status, _, text) =
        raw(server.http, method, path, &headers, body.map(|b| b.to_string().into_bytes()).unwrap_or_default());
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn clusters(server: &Server) -> Vec<Value> {
    let (status, body) = operator(server, "GET", "/api/v1/reports/clusters", None);
    assert_eq!(status, 200, "{body}");
    body["clusters"].as_array().cloned().unwrap_or_default()
}

fn open_data(server: &Server) -> Value {
    let (status, head, body) = raw(server.http, "GET", "/opendata/reports.geojson", &[], Vec::new());
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("content-type: application/geo+json"), "{head}");
    serde_json::from_str(&body).unwrap()
}

/// A tiny structurally valid JPEG whose EXIF segment carries a (fake) home position and whose comment a name.
fn jpeg_with_exif() -> Vec<u8> {
    let mut v = vec![0xFF, 0xD8];
    let exif = b"Exif\0\0GPS 23.5185N 120.9280E";
    v.extend_from_slice(&[0xFF, 0xE1, 0x00, u8::try_from(exif.len() + 2).unwrap()]);
    v.extend_from_slice(exif);
    v.extend_from_slice(&[0xFF, 0xFE, 0x00, 0x0A]);
    v.extend_from_slice(b"Mr Chen");
    v.push(0);
    v.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x04, 0x00, 0x01]);
    v.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x03, 0x01, 0x12, 0x34, 0x56, 0xFF, 0xD9]);
    v
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Waits for a `{"type":"report"}` frame matching `pred`, skipping sensor and alert frames.
async fn report_frame(op: &mut Operator, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = op.next_json(left).await.expect("a report frame within 10 s");
        if frame["type"] == "report" && pred(&frame) {
            return frame;
        }
    }
}

/// (what, status, reason, field, (headers, body))
type Case<'a> = (&'a str, u16, &'a str, Option<&'a str>, (Vec<(&'a str, &'a str)>, Vec<u8>));

#[test]
fn bad_input_gets_a_clear_4xx_naming_the_field_and_a_counter() {
    let server = Server::start();
    let good = report(SHENMU, "flooding", "water over the road");
    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        body
    };
    let json_ct = [("Content-Type", "application/json")];
    let cases: Vec<Case> = vec![
        (
            "wrong content type",
            415,
            "content_type",
            Some("Content-Type"),
            (vec![("Content-Type", "text/plain")], good.to_string().into_bytes()),
        ),
        (
            "form post",
            415,
            "content_type",
            Some("Content-Type"),
            (vec![("Content-Type", "application/x-www-form-urlencoded")], b"lat=23&lon=120".to_vec()),
        ),
        ("not JSON", 400, "malformed", None, (json_ct.to_vec(), b"{\"lat\": 23.5,".to_vec())),
        (
            "lat as text",
            422,
            "bad_position",
            Some("lat"),
            (json_ct.to_vec(), with("lat", json!("23.5N")).to_string().into_bytes()),
        ),
        (
            "lon out of range",
            422,
            "bad_position",
            Some("lon"),
            (json_ct.to_vec(), with("lon", json!(720.0)).to_string().into_bytes()),
        ),
        (
            "NaN as a string",
            422,
            "bad_position",
            Some("lat"),
            (json_ct.to_vec(), with("lat", json!("NaN")).to_string().into_bytes()),
        ),
        (
            "no position",
            422,
            "bad_position",
            Some("lat"),
            (json_ct.to_vec(), json!({"category": "fire"}).to_string().into_bytes()),
        ),
        (
            "Tokyo",
            422,
            "outside_taiwan",
            Some("position"),
            (json_ct.to_vec(), report((35.68, 139.69), "fire", "").to_string().into_bytes()),
        ),
        (
            "unknown category",
            422,
            "bad_category",
            Some("category"),
            (json_ct.to_vec(), with("category", json!("alien_landing")).to_string().into_bytes()),
        ),
        (
            "unknown field",
            422,
            "unknown_field",
            Some("user_phone"),
            (json_ct.to_vec(), with("user_phone", json!("0912")).to_string().into_bytes()),
        ),
        (
            "text too long",
            422,
            "text_too_long",
            Some("text"),
            (json_ct.to_vec(), with("text", json!("水".repeat(501))).to_string().into_bytes()),
        ),
        (
            "script in text",
            422,
            "markup_in_text",
            Some("text"),
            (
                json_ct.to_vec(),
                with("text", json!("<script>fetch('/api/v1/alerts')</script>")).to_string().into_bytes(),
            ),
        ),
        (
            "bidi override in text",
            422,
            "bad_text",
            Some("text"),
            (json_ct.to_vec(), with("text", json!("safe\u{202E}txt.exe")).to_string().into_bytes()),
        ),
        (
            "time in the future",
            422,
            "bad_ts",
            Some("ts"),
            (json_ct.to_vec(), with("ts", json!(now_ms() + 3_600_000)).to_string().into_bytes()),
        ),
        (
            "photo not base64",
            422,
            "photo_encoding",
            Some("photo"),
            (json_ct.to_vec(), with("photo", json!("not base64!!")).to_string().into_bytes()),
        ),
        (
            "photo is a GIF",
            422,
            "photo_type",
            Some("photo"),
            (json_ct.to_vec(), with("photo", json!(b64(b"GIF89a\x01\x00\x01\x00"))).to_string().into_bytes()),
        ),
        (
            "photo is SVG",
            422,
            "photo_type",
            Some("photo"),
            (json_ct.to_vec(), with("photo", json!(b64(b"<svg onload=alert(1)>"))).to_string().into_bytes()),
        ),
        ("photo over 2 MiB", 413, "photo_too_large", Some("photo"), {
            let mut big = vec![0xFF, 0xD8, 0xFF, 0xE0];
            big.resize(2 * 1024 * 1024 + 100 * 1024, 0);
            (json_ct.to_vec(), with("photo", json!(b64(&big))).to_string().into_bytes())
        }),
        (
            "bad client id",
            400,
            "bad_client_id",
            Some("x-client-id"),
            (
                vec![("Content-Type", "application/json"), ("X-Client-Id", "has spaces in it")],
                good.to_string().into_bytes(),
            ),
        ),
    ];
    for (what, status, reason, field, (headers, body)) in cases {
        let (got, head, text) = raw(server.http, "POST", "/api/v1/reports", &headers, body);
        let answer: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
        assert_eq!((got, answer["error"].as_str()), (status, Some(reason)), "{what}: {answer}");
        assert_eq!(answer["field"].as_str(), field, "{what}: {answer}");
        assert!(!answer["message"].as_str().unwrap_or("").is_empty(), "{what}: a message for people: {answer}");
        assert!(head.contains("content-type: application/json"), "{what}: {head}");
        assert!(!text.contains('<'), "{what}: nothing that looks like HTML comes back: {text}");
        let metric = server.metric(&format!("dc_reports_refused_total{{reason=\"{reason}\"}}"));
        assert!(metric >= 1.0, "{what}: counter {reason} is {metric}");
    }

    // A body larger than the limit, declared: refused on the header alone, before a byte of it is read.
    let headers = [("Content-Type", "application/json"), ("Content-Length", "4000000")];
    let (status, _, text) = raw(server.http, "POST", "/api/v1/reports", &headers, Vec::new());
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("\"too_large\"") && text.contains("\"body\""), "{text}");
    // … and streamed without a length: refused once the limit is passed.
    let mut chunked = Vec::new();
    for _ in 0..4 {
        let piece = vec![b' '; 1024 * 1024];
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(&piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let headers = [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")];
    let (status, _, text) = raw(server.http, "POST", "/api/v1/reports", &headers, chunked);
    assert_eq!(status, 413, "{text}");
    assert!(server.metric(r#"dc_reports_refused_total{reason="too_large"}"#) >= 2.0);

    // None of that got in the way: a good report still goes through, and nothing was counted as accepted before.
    assert_eq!(server.metric(r#"dc_reports_accepted_total{category="flooding"}"#), 0.0);
    let (status, answer) = post_report(&server, Some("phone-good"), &good);
    assert_eq!(status, 201, "{answer}");
    assert_eq!(server.metric(r#"dc_reports_accepted_total{category="flooding"}"#), 1.0);
}

#[test]
fn text_is_plain_text_and_never_comes_back_as_html() {
    let server = Server::start();
    let text = r#"depth < 1 m & "rising" <3 — 水深不到一公尺 > 還在漲"#;
    let (status, head, body) = post_report_raw(server.http, Some("phone-1"), &report(SHENMU, "flooding", text));
    assert_eq!(status, 201, "{body}");
    assert!(
        head.contains("content-type: application/json") && head.contains("x-content-type-options: nosniff"),
        "{head}"
    );
    assert!(!body.contains('<') && !body.contains('>') && !body.contains('&'), "escaped in JSON: {body}");
    assert!(body.contains("\\u003c"), "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["text"], text, "stored and returned exactly, as text");

    let (_, head, listing) = raw(
        server.http,
        "GET",
        "/api/v1/reports/clusters",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        Vec::new(),
    );
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(!listing.contains('<') && !listing.contains('>'), "{listing}");
    let listing: Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(listing["clusters"][0]["reports"][0]["text"], text);

    // The citizen page writes the answer with textContent, never innerHTML.
    let (_, _, page) = raw(server.http, "GET", "/app", &[], Vec::new());
    let start = page.find("BEGIN citizen reports").expect("the report form is on the citizen page");
    let block = &page[start..page.find("END citizen reports").expect("the block is delimited")];
    assert!(block.contains("id=\"report\"") && block.contains("textContent"), "the report form");
    assert!(
        !block.contains("innerHTML") && !block.contains("insertAdjacentHTML"),
        "no HTML rendering in the report block"
    );
}

#[test]
fn reports_in_one_place_form_one_cluster_with_a_count() {
    let server = Server::start();
    let near = [(SHENMU.0, SHENMU.1), (SHENMU.0 + 0.0004, SHENMU.1 + 0.0003), (SHENMU.0 - 0.0003, SHENMU.1 - 0.0002)];
    let mut ids = Vec::new();
    for (i, at) in near.into_iter().enumerate() {
        let (status, answer) =
            post_report(&server, Some(&format!("phone-{i}")), &report(at, "landslide", "mud on the road"));
        assert_eq!(status, 201, "{answer}");
        assert_eq!(answer["count"], i + 1, "{answer}");
        assert!(answer["flags"].as_array().unwrap().is_empty(), "inside a zone: no flag: {answer}");
        ids.push(answer["cluster"].as_str().unwrap().to_string());
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "one cluster: {ids:?}");
    // Far away, and the same place but another category: two more clusters.
    let (_, far) = post_report(&server, Some("phone-9"), &report(XIAOLIN, "landslide", "slope moving"));
    let (_, fire) = post_report(&server, Some("phone-8"), &report(SHENMU, "fire", "smoke"));
    assert_eq!((far["count"].as_u64(), far["new_cluster"].as_bool()), (Some(1), Some(true)), "{far}");
    assert_ne!(far["cluster"], ids[0]);
    assert_ne!(fire["cluster"], ids[0]);
    let all = clusters(&server);
    assert_eq!(all.len(), 3, "{all:?}");
    let shenmu = all.iter().find(|c| c["id"] == ids[0].as_str()).unwrap();
    assert_eq!(
        (shenmu["count"].as_u64(), shenmu["reporters"].as_u64(), shenmu["state"].as_str()),
        (Some(3), Some(3), Some("open"))
    );
    assert!(shenmu["zones"].as_array().unwrap().iter().any(|z| z == "dfa-xinyi-shenmu"), "{shenmu}");

    // The same phone sending the same words again is counted but not listed twice.
    post_report(&server, Some("phone-0"), &report(SHENMU, "landslide", "mud on the road"));
    let shenmu = clusters(&server).into_iter().find(|c| c["id"] == ids[0].as_str()).unwrap();
    assert_eq!(
        (shenmu["count"].as_u64(), shenmu["reporters"].as_u64(), shenmu["duplicates"].as_u64()),
        (Some(4), Some(3), Some(1))
    );
    assert_eq!(shenmu["reports"].as_array().unwrap().len(), 3);

    // A report where we watch nothing is accepted but flagged.
    let (status, lonely) = post_report(&server, Some("phone-7"), &report(TAITUNG, "building_damage", "wall cracked"));
    assert_eq!(status, 201);
    assert_eq!(lonely["flags"], json!(["far_from_zones"]), "{lonely}");
    assert_eq!(server.metric(r#"dc_reports_flagged_total{flag="far_from_zones"}"#), 1.0);
}

#[test]
fn one_client_flooding_is_limited_and_nobody_else_slows_down() {
    let server = Server::start();
    let body = report(SHENMU, "flooding", "water");
    for i in 0..5 {
        let (status, answer) = post_report(&server, Some("script-kiddie"), &body);
        assert_eq!(status, 201, "report {i}: {answer}");
    }
    let started = Instant::now();
    let mut refused = 0;
    for _ in 0..100 {
        let (status, head, text) = post_report_raw(server.http, Some("script-kiddie"), &body);
        assert_eq!(status, 429, "{text}");
        assert!(head.contains("retry-after: "), "{head}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["error"], "rate_limited_client");
        refused += 1;
    }
    assert!(started.elapsed() < Duration::from_secs(10), "refusals are cheap: {:?}", started.elapsed());
    assert_eq!(server.metric(r#"dc_reports_refused_total{reason="rate_limited_client"}"#), f64::from(refused));
    // Another phone is not affected, and neither is anything else.
    let (status, answer) = post_report(&server, Some("neighbour"), &body);
    assert_eq!(status, 201, "{answer}");
    let started = Instant::now();
    assert_eq!(server.get("/healthz").0, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(clusters(&server)[0]["count"], 6);
}

/// Per-address limits need the peer address, which axum hands over only when served with connection info. This
/// test serves the real app that way in-process (the binary's `serve_http` does the same once it passes
/// `into_make_service_with_connect_info`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_client_ids_from_one_address_are_limited_per_address() {
    use disaster_cloud::config::ConfigFiles;
    use disaster_cloud::server::{start, Listen};
    let free = || -> SocketAddr { format!("127.0.0.1:{}", common::free_port()).parse().unwrap() };
    let listen = Listen { mqtt_v4: Some(free()), mqtt_v5: None, mqtt_v4_tls: None, mqtt_v5_tls: None, http: free() };
    let data = std::env::temp_dir().join(format!("dc-reports-addr-{}", std::process::id()));
    let tokens = disaster_cloud::web::auth::TokenSet::new(&[], Some(TOKEN)).unwrap();
    let (app, http) =
        start(ConfigFiles::embedded().unwrap(), &listen, tokens, Some(data)).await.expect("the app starts");
    let addr = http.local_addr().unwrap();
    let service = disaster_cloud::web::router(app).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(http, service).await });

    let body = report(SHENMU, "flooding", "water");
    let answers = tokio::task::spawn_blocking(move || {
        (0..32).map(|i| post_report_raw(addr, Some(&format!("rotating-id-{i}")), &body)).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let accepted = answers.iter().filter(|(s, _, _)| *s == 201).count();
    assert_eq!(accepted, 30, "the address's burst");
    let (status, _, text) = &answers[31];
    assert_eq!(*status, 429, "{text}");
    assert!(text.contains("rate_limited_address"), "{text}");
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("dc-reports-addr-{}", std::process::id())));
}

#[test]
fn operator_routes_need_the_token() {
    let server = Server::start();
    for (method, path) in [
        ("GET", "/api/v1/reports/clusters"),
        ("POST", "/api/v1/reports/clusters/rc-1/verify"),
        ("POST", "/api/v1/reports/clusters/rc-1/attach"),
        ("GET", &format!("/api/v1/reports/photos/{}.jpg", "a".repeat(64))),
    ] {
        let (status, _, body) = raw(server.http, method, path, &[("Authorization", "Bearer wrong")], Vec::new());
        assert_eq!(status, 401, "{method} {path}: {body}");
    }
    let (status, body) = operator(&server, "POST", "/api/v1/reports/clusters/rc-404/verify", None);
    assert_eq!(status, 404, "{body}");
    let (status, body) = operator(&server, "GET", "/api/v1/reports/clusters?state=maybe", None);
    assert_eq!(status, 400, "{body}");
}

#[test]
fn verified_clusters_become_open_data_without_personal_data() {
    let server = Server::start();
    let photo = jpeg_with_exif();
    let exact = (23.518623, 120.928047);
    let mut first = report(exact, "road_blocked", "call me on 0912-345-678, I am at No. 5");
    first["photo"] = json!(format!("data:image/jpeg;base64,{}", b64(&photo)));
    let (status, answer) = post_report(&server, Some("secret-phone-id"), &first);
    assert_eq!(status, 201, "{answer}");
    let id = answer["cluster"].as_str().unwrap().to_string();
    let name = answer["photo"].as_str().expect("the stored photo's name").to_string();
    let (_, other) = post_report(&server, Some("prankster"), &report(XIAOLIN, "fire", "a dragon"));
    let other = other["cluster"].as_str().unwrap().to_string();

    // The photo is stored under the data dir by its hash, without its EXIF position or comment.
    let stored = std::fs::read(server.data_dir.join("reports").join("photos").join(&name)).expect("the photo file");
    assert!(name.ends_with(".jpg") && name.len() == 64 + 4, "{name}");
    let text = String::from_utf8_lossy(&stored);
    assert!(!text.contains("GPS") && !text.contains("Chen"), "metadata stripped");
    use sha2::Digest;
    let hash: String = sha2::Sha256::digest(&stored).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(format!("{hash}.jpg"), name);
    // Operators can see it; the public cannot, yet.
    let (status, head, _) = raw(
        server.http,
        "GET",
        &format!("/api/v1/reports/photos/{name}"),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        Vec::new(),
    );
    assert_eq!(status, 200);
    assert!(head.contains("content-type: image/jpeg") && head.contains("nosniff"), "{head}");
    let public = format!("/opendata/reports/photos/{name}");
    assert_eq!(raw(server.http, "GET", &public, &[], Vec::new()).0, 404);

    assert_eq!(open_data(&server)["features"], json!([]), "nothing verified yet");
    let (status, body) = operator(
        &server,
        "POST",
        &format!("/api/v1/reports/clusters/{id}/verify"),
        Some(json!({"summary": "Road 21 blocked by a landslide at Shenmu"})),
    );
    assert_eq!((status, body["state"].as_str()), (200, Some("verified")), "{body}");
    let (status, body) = operator(&server, "POST", &format!("/api/v1/reports/clusters/{other}/dismiss"), None);
    assert_eq!((status, body["state"].as_str()), (200, Some("dismissed")), "{body}");

    let data = open_data(&server);
    let features = data["features"].as_array().unwrap();
    assert_eq!(features.len(), 1, "verified only: {data}");
    let feature = &features[0];
    assert_eq!(feature["properties"]["id"], id.as_str());
    assert_eq!(feature["properties"]["category"], "road_blocked");
    assert_eq!(feature["properties"]["summary"], "Road 21 blocked by a landslide at Shenmu");
    assert_eq!(feature["properties"]["photos"], json!([]), "photos only when published");
    let text = data.to_string();
    for private in ["secret-phone-id", "0912-345-678", "127.0.0.1", "call me", "23.518623", "120.928047"] {
        assert!(!text.contains(private), "open data leaks `{private}`: {text}");
    }
    assert_eq!(raw(server.http, "GET", &public, &[], Vec::new()).0, 404);

    // Publishing the photos: now they are open data too.
    let (status, body) = operator(
        &server,
        "POST",
        &format!("/api/v1/reports/clusters/{id}/verify"),
        Some(json!({"publish_photos": true})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"], "Road 21 blocked by a landslide at Shenmu", "the summary is kept");
    let photos = open_data(&server)["features"][0]["properties"]["photos"].clone();
    assert!(photos[0].as_str().unwrap().ends_with(&public), "{photos}");
    let (status, head, _) = raw(server.http, "GET", &public, &[], Vec::new());
    assert_eq!(status, 200);
    assert!(head.contains("content-type: image/jpeg"), "{head}");

    // A bad summary is refused like a bad report text.
    let (status, _) = operator(
        &server,
        "POST",
        &format!("/api/v1/reports/clusters/{id}/verify"),
        Some(json!({"summary": "<b>x</b>"})),
    );
    assert_eq!(status, 400);
}

#[tokio::test]
async fn report_frames_reach_the_operator_socket() {
    let server = Server::start();
    let mut op = server.operator().await;
    let (status, answer) = post_report(
        &server,
        Some("phone-1"),
        &report(SHENMU, "people_trapped", "two people on a roof < 3 m above the water"),
    );
    assert_eq!(status, 201, "{answer}");
    let frame = report_frame(&mut op, |f| f["event"] == "new").await;
    assert_eq!(frame["id"], answer["cluster"]);
    assert_eq!(
        (frame["category"].as_str(), frame["count"].as_u64(), frame["state"].as_str()),
        (Some("people_trapped"), Some(1), Some("open"))
    );
    assert_eq!(frame["reports"][0]["text"], "two people on a roof < 3 m above the water");
    let (_, again) = post_report(&server, Some("phone-2"), &report(SHENMU, "people_trapped", "roof, two people"));
    assert_eq!(again["cluster"], answer["cluster"]);
    let frame = report_frame(&mut op, |f| f["event"] == "updated").await;
    assert_eq!((frame["count"].as_u64(), frame["reporters"].as_u64()), (Some(2), Some(2)));
}

#[tokio::test]
async fn a_verified_cluster_attached_to_an_alert_reaches_the_operators() {
    let server = Server::start();
    let mut op = server.operator().await;
    raise_heavy_rain(&server, 120.0, now_ms()).await;
    let alert = op.alert_where(WAIT, |a| a["state"] == "raised").await.expect("the heavy-rain alert");
    let alert_id = alert["id"].as_str().unwrap().to_string();

    for (i, text) in ["the creek is brown and loud", "rocks rolling down by the school"].iter().enumerate() {
        let (status, answer) = post_report(&server, Some(&format!("villager-{i}")), &report(SHENMU, "landslide", text));
        assert_eq!(status, 201, "{answer}");
    }
    let cluster = report_frame(&mut op, |f| f["count"] == 2).await;
    let id = cluster["id"].as_str().unwrap().to_string();

    // Not before it is verified, and only to an alert that exists.
    let attach = format!("/api/v1/reports/clusters/{id}/attach");
    let (status, body) = operator(&server, "POST", &attach, Some(json!({"alert_id": alert_id})));
    assert_eq!(status, 409, "{body}");
    let (status, _) = operator(&server, "POST", &format!("/api/v1/reports/clusters/{id}/verify"), None);
    assert_eq!(status, 200);
    report_frame(&mut op, |f| f["event"] == "verified" && f["id"] == id.as_str()).await;
    let (status, body) = operator(&server, "POST", &attach, Some(json!({"alert_id": "no-such-alert"})));
    assert_eq!(status, 404, "{body}");
    let (status, body) = operator(&server, "POST", &attach, Some(json!({})));
    assert_eq!(status, 400, "{body}");
    let (status, body) = operator(&server, "POST", &format!("/api/v1/reports/clusters/{id}/escalate"), None);
    assert_eq!(status, 400, "{body}");

    let (status, body) = operator(&server, "POST", &attach, Some(json!({"alert_id": alert_id})));
    assert_eq!(status, 200, "{body}");
    let frame = report_frame(&mut op, |f| f["event"] == "attached").await;
    assert_eq!(
        (frame["id"].as_str(), frame["alert_id"].as_str(), frame["state"].as_str()),
        (Some(id.as_str()), Some(alert_id.as_str()), Some("verified"))
    );
    assert_eq!(frame["count"], 2);

    let feature = open_data(&server)["features"][0].clone();
    assert_eq!(feature["properties"]["alert_id"], alert_id.as_str());
    assert!(feature["properties"]["cap"].as_str().unwrap().ends_with(&format!("/cap/{alert_id}.xml")), "{feature}");
}

/// Polls the public Atom feed until its entry for `alert_id` appears; returns the entry's CAP path.
async fn feed_entry(server: &Server, alert_id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, feed) = raw(server.http, "GET", "/cap/feed.atom", &[], Vec::new());
        assert_eq!(status, 200, "{feed}");
        let needle = format!("/cap/{alert_id}.");
        if let Some(start) = feed.find(&needle) {
            let end = start + feed[start..].find(".xml").expect("a .xml link") + 4;
            return feed[start..end].to_string();
        }
        assert!(Instant::now() < deadline, "no feed entry for {alert_id}: {feed}\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn verified_reports_raise_an_alert_that_reaches_operators_and_the_cap_feed() {
    let server = Server::start();
    let mut op = server.operator().await;
    // An agency in the approval loop and a media outlet, both receiving the demo's stand-in webhooks.
    for (name, audience) in [("agency", "internal"), ("media", "public")] {
        let url = format!("http://{}/demo/webhook-{name}", server.http);
        let body = json!({"name": name, "url": url, "secret": "a-secret-of-16-bytes+", "audience": audience});
        let (status, answer) = operator(&server, "POST", "/api/v1/subscribers", Some(body));
        assert_eq!(status, 201, "{answer}");
    }

    // Citizens around Shenmu: near-duplicates (one phone sending the same words twice, neighbours a few metres
    // apart) make one cluster.
    let mut with_photo = report(SHENMU, "flooding", "water up to the knees by the temple");
    with_photo["photo"] = json!(b64(&jpeg_with_exif()));
    let sent = [
        ("villager-1", with_photo),
        ("villager-1", report(SHENMU, "flooding", "water up to the knees by the temple")),
        ("villager-2", report((SHENMU.0 + 0.0003, SHENMU.1 - 0.0002), "flooding", "road under water")),
        ("villager-3", report((SHENMU.0 - 0.0002, SHENMU.1 + 0.0003), "flooding", "cars stuck, water rising")),
    ];
    let mut cluster = String::new();
    for (client, body) in &sent {
        let (status, answer) = post_report(&server, Some(client), body);
        assert_eq!(status, 201, "{answer}");
        cluster = answer["cluster"].as_str().unwrap().to_string();
    }
    let frame = report_frame(&mut op, |f| f["count"] == 4).await;
    assert_eq!(
        (frame["id"].as_str(), frame["reporters"].as_u64(), frame["duplicates"].as_u64()),
        (Some(cluster.as_str()), Some(3), Some(1))
    );
    let raise = format!("/api/v1/reports/clusters/{cluster}/raise");

    // Only verified clusters raise alerts, and only with a severity an operator chose among CAP's.
    let (status, body) = operator(&server, "POST", &raise, Some(json!({"severity": "Severe"})));
    assert_eq!(status, 409, "{body}");
    let (status, body) = operator(
        &server,
        "POST",
        &format!("/api/v1/reports/clusters/{cluster}/verify"),
        Some(json!({"summary": "Flooding confirmed by the village chief", "publish_photos": true})),
    );
    assert_eq!(status, 200, "{body}");
    for (bad, needle) in [
        (json!({}), "severity"),
        (json!({"severity": "Unknown"}), "severity"),
        (json!({"severity": "severe"}), "severity"),
        (json!({"severity": "Severe", "zone": "dfa-jiaxian-xiaolin"}), "zone"),
        (json!({"severity": "Severe", "level": 3}), "level"),
    ] {
        let (status, body) = operator(&server, "POST", &raise, Some(bad.clone()));
        assert_eq!(status, 400, "{bad} → {body}");
        assert!(body.to_string().contains(needle), "{bad} → {body}");
    }
    let auth = [("Authorization", "Bearer nope")];
    assert_eq!(raw(server.http, "POST", &raise, &auth, b"{\"severity\":\"Severe\"}".to_vec()).0, 401);

    let (status, answer) = operator(&server, "POST", &raise, Some(json!({"severity": "Severe"})));
    assert_eq!(status, 201, "{answer}");
    let alert = answer["alert"].clone();
    let alert_id = alert["id"].as_str().expect("the new alert").to_string();
    assert_eq!(
        (alert["event"].as_str(), alert["area_id"].as_str(), alert["severity"].as_str(), alert["state"].as_str()),
        (Some("reported_flooding"), Some("dfa-xinyi-shenmu"), Some("Severe"), Some("raised")),
        "the smallest zone around the reports: {alert}"
    );
    assert_eq!((answer["event"].as_str(), answer["alert_id"].as_str()), (Some("raised"), Some(alert_id.as_str())));

    // Operators see the alert, with the cluster behind it, and the cluster linked to it (in either order: they
    // travel on two channels).
    let (mut seen, mut linked) = (None, None);
    while seen.is_none() || linked.is_none() {
        let frame = op.next_json(WAIT).await.expect("the alert and the cluster on the operator socket");
        if frame["type"] == "alert" && frame["id"] == alert_id.as_str() {
            seen = Some(frame);
        } else if frame["type"] == "report" && frame["event"] == "raised" {
            linked = Some(frame);
        }
    }
    let (seen, linked) = (seen.unwrap(), linked.unwrap());
    assert_eq!((seen["state"].as_str(), seen["reports"].clone()), (Some("raised"), json!([cluster])), "{seen}");
    assert_eq!((linked["id"].as_str(), linked["alert_id"].as_str()), (Some(cluster.as_str()), Some(alert_id.as_str())));

    // One alert per cluster; a second cluster of the same kind in the same zone joins the first alert.
    let (status, body) = operator(&server, "POST", &raise, Some(json!({"severity": "Extreme"})));
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains(&alert_id), "{body}");
    let (_, second) = post_report(
        &server,
        Some("villager-4"),
        &report((23.5290, 120.9170), "flooding", "the bridge road is flooded"),
    );
    let second = second["cluster"].as_str().unwrap().to_string();
    assert_ne!(second, cluster);
    operator(&server, "POST", &format!("/api/v1/reports/clusters/{second}/verify"), None);
    let (status, body) = operator(
        &server,
        "POST",
        &format!("/api/v1/reports/clusters/{second}/raise"),
        Some(json!({"severity": "Severe", "zone": "dfa-xinyi-shenmu"})),
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains(&alert_id), "names the alert to attach to: {body}");
    let (status, body) = operator(
        &server,
        "POST",
        &format!("/api/v1/reports/clusters/{second}/attach"),
        Some(json!({"alert_id": alert_id})),
    );
    assert_eq!(status, 200, "{body}");
    let updated = op.alert_where(WAIT, |a| a["id"] == alert_id.as_str() && a["version"] == 2).await.expect("version 2");
    assert_eq!(updated["reports"], json!([cluster, second]));

    // The approval gate holds it from the public until an operator approves; the agency in the loop has each held
    // version (the alert's own chain), the media outlet nothing.
    let (_, _, feed) = raw(server.http, "GET", "/cap/feed.atom", &[], Vec::new());
    assert!(!feed.contains(&alert_id), "held alerts are not public: {feed}");
    let held = [format!("{alert_id}.1:Alert"), format!("{alert_id}.2:Update")];
    common::wait_until("the agency gets the held versions", WAIT, || {
        webhook_messages(&server, "agency").starts_with(&held)
    })
    .await;
    assert_eq!(webhook_messages(&server, "media"), Vec::<String>::new());
    let (status, body) = operator(&server, "POST", &format!("/api/v1/alerts/{alert_id}/approve"), None);
    assert_eq!(status, 200, "{body}");
    // The public hears it as the hazard's public warning (`W-` + the alert's id), raised when approved.
    let warning = format!("W-{alert_id}");
    let path = feed_entry(&server, &warning).await;
    assert_eq!(path, format!("/cap/{warning}.1.xml"));
    let (status, _, xml) = raw(server.http, "GET", &path, &[], Vec::new());
    assert_eq!(status, 200, "{path}: {xml}");
    common::assert_valid_cap(&xml, &alert_id);
    assert!(xml.contains("<status>Actual</status>") && xml.contains("<msgType>Alert</msgType>"), "{xml}");
    assert!(xml.contains("<value>rule=citizen-report-flooding;"), "the alert behind the warning: {xml}");
    assert!(xml.contains("<value>reported_flooding</value>"), "{xml}");
    assert!(xml.contains("Flooding confirmed by the village chief"), "the operator's words: {xml}");
    for c in [&cluster, &second] {
        assert!(xml.contains(&format!("<value>cluster={c};category=flooding;")), "cluster {c} in the CAP: {xml}");
    }
    assert!(xml.contains("<mimeType>image/jpeg</mimeType>") && xml.contains("/opendata/reports/photos/"), "{xml}");
    for private in ["villager", "temple", "cars stuck"] {
        assert!(!xml.contains(private), "the CAP message leaks `{private}`: {xml}");
    }
    // The alert's own held versions never became CAP messages: the public has only the warning.
    let (status, _, _) = raw(server.http, "GET", &format!("/cap/{alert_id}.1.xml"), &[], Vec::new());
    assert_eq!(status, 404);
    // The media outlet gets the warning alone; the agency the warning too, and the held chain ends with a Cancel
    // (the proposal superseded by the warning), in either order.
    let public = format!("{warning}.1:Alert");
    common::wait_until("the media outlet gets the warning", WAIT, || {
        webhook_messages(&server, "media") == [public.clone()]
    })
    .await;
    let cancel = format!("{alert_id}.3:Cancel");
    common::wait_until("the agency gets the warning and the held chain's end", WAIT, || {
        let got = webhook_messages(&server, "agency");
        got.len() == 4 && got.starts_with(&held) && got.contains(&public) && got.contains(&cancel)
    })
    .await;
    assert!(server.metric("dc_reports_alert_links_total{action=\"raised\"}") >= 1.0);
    assert!(server.metric("dc_reports_alert_links_total{action=\"attached\"}") >= 1.0);

    // Open data links the clusters to the alert's CAP.
    let data = open_data(&server);
    let linked: Vec<&Value> = data["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["properties"]["alert_id"] == alert_id.as_str())
        .collect();
    assert_eq!(linked.len(), 2, "{data}");
}

#[test]
fn clusters_and_decisions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path());
    for (i, text) in ["water in the street", "the street is a river"].iter().enumerate() {
        let (status, body) = post_report(&server, Some(&format!("phone-{i}")), &report(SHENMU, "flooding", text));
        assert_eq!(status, 201, "{body}");
    }
    let (_, landslide) = post_report(&server, Some("phone-9"), &report(XIAOLIN, "landslide", "mud on the road"));
    let (_, far) = post_report(&server, Some("phone-8"), &report(TAITUNG, "fire", "smoke"));
    let flood = clusters(&server).into_iter().find(|c| c["category"] == "flooding").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let landslide = landslide["cluster"].as_str().unwrap().to_string();
    let far = far["cluster"].as_str().unwrap().to_string();
    let action = |server: &Server, id: &str, what: &str, body: Option<Value>| {
        let (status, answer) = operator(server, "POST", &format!("/api/v1/reports/clusters/{id}/{what}"), body);
        assert!(status == 200 || status == 201, "{what} {id}: {status} {answer}");
        answer
    };
    action(&server, &flood, "verify", Some(json!({"summary": "Main street flooded"})));
    let raised = action(&server, &flood, "raise", Some(json!({"severity": "Moderate"})));
    let alert_id = raised["alert_id"].as_str().unwrap().to_string();
    action(&server, &landslide, "dismiss", None);
    let before = clusters(&server);
    assert_eq!(before.len(), 3);

    // kill -9, then the same data dir.
    drop(server);
    server = Server::start_in(dir.path());
    let after = clusters(&server);
    assert_eq!(after, before, "every cluster with its decisions, as it was");
    let by_id = |id: &str| after.iter().find(|c| c["id"] == id).cloned().unwrap();
    assert_eq!(
        (by_id(&flood)["state"].as_str(), by_id(&flood)["alert_id"].as_str()),
        (Some("verified"), Some(alert_id.as_str()))
    );
    assert_eq!(by_id(&landslide)["state"], "dismissed");
    assert_eq!(
        (by_id(&far)["state"].as_str(), by_id(&far)["flags"][0].as_str()),
        (Some("open"), Some("far_from_zones"))
    );

    // Clustering goes on: a report by the verified cluster joins it; one by the dismissed cluster starts another,
    // with an id never used before. The cluster still has its alert: raising again is refused.
    let (_, joined) = post_report(&server, Some("phone-3"), &report(SHENMU, "flooding", "still flooded"));
    assert_eq!((joined["cluster"].as_str(), joined["count"].as_u64()), (Some(flood.as_str()), Some(3)));
    let (_, fresh) = post_report(&server, Some("phone-4"), &report(XIAOLIN, "landslide", "more mud"));
    let fresh = fresh["cluster"].as_str().unwrap().to_string();
    assert!(![&flood, &landslide, &far].contains(&&fresh), "{fresh}");
    let (status, body) = operator(
        &server,
        "POST",
        &format!("/api/v1/reports/clusters/{flood}/raise"),
        Some(json!({"severity": "Severe"})),
    );
    assert_eq!(status, 409, "{body}");
    let features = open_data(&server)["features"].clone();
    assert_eq!(features[0]["properties"]["alert_id"], alert_id.as_str(), "{features}");
}

/// The next answer to a report (or an error frame) on a citizen socket, skipping alerts.
async fn report_answer(citizen: &mut common::Citizen) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = citizen.next_json(left).await.expect("an answer within 10 s (the socket is still open)");
        if frame["type"] != "alert" {
            return frame;
        }
    }
}

fn ws_report(at: (f64, f64), category: &str, text: &str) -> Value {
    json!({"type": "report", "lat": at.0, "lon": at.1, "category": category, "text": text})
}

#[tokio::test]
async fn reports_over_the_citizen_socket_are_checked_like_http_and_never_close_it() {
    let server = Server::start();
    let mut op = server.operator().await;
    let mut citizen = common::Citizen::connect(&server).await;
    citizen.subscribe(json!([{"lat": SHENMU.0, "lon": SHENMU.1}]), "en", json!([])).await;

    // A good report, with the app's own id echoed.
    let mut good = ws_report(SHENMU, "road_blocked", "tree across the road < 1 km from the school");
    good["id"] = json!("app-report-1");
    citizen.send(good).await;
    let accepted = report_answer(&mut citizen).await;
    assert_eq!(
        (accepted["type"].as_str(), accepted["id"].as_str()),
        (Some("report_accepted"), Some("app-report-1")),
        "{accepted}"
    );
    let cluster = accepted["cluster"].as_str().expect("the cluster").to_string();
    assert_eq!((accepted["new_cluster"].as_bool(), accepted["count"].as_u64()), (Some(true), Some(1)));
    let frame = report_frame(&mut op, |f| f["id"] == cluster.as_str()).await;
    assert_eq!(frame["reports"][0]["text"], "tree across the road < 1 km from the school");

    // With a photo (stored without its metadata) and a client id; it joins the same cluster.
    let mut photo = ws_report(SHENMU, "road_blocked", "photo of the tree");
    photo["photo"] = json!(format!("data:image/jpeg;base64,{}", b64(&jpeg_with_exif())));
    photo["client_id"] = json!("app-7f3a");
    citizen.send(photo).await;
    let accepted = report_answer(&mut citizen).await;
    assert_eq!(accepted["type"], "report_accepted", "{accepted}");
    assert_eq!((accepted["cluster"].as_str(), accepted["count"].as_u64()), (Some(cluster.as_str()), Some(2)));
    let name = accepted["photo"].as_str().expect("the stored photo").to_string();
    let stored = std::fs::read(server.data_dir.join("reports").join("photos").join(&name)).unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains("GPS"));

    let big_photo = {
        let mut jpeg = jpeg_with_exif();
        jpeg.resize(2 * 1024 * 1024 + 1, 0);
        b64(&jpeg)
    };
    let with = |field: &str, value: Value| {
        let mut r = ws_report(SHENMU, "flooding", "water");
        r[field] = value;
        r
    };
    let cases: Vec<(&str, Value, &str, Option<&str>)> = vec![
        ("lat not a number", with("lat", json!("north")), "bad_position", Some("lat")),
        (
            "no lon",
            {
                let mut r = ws_report(SHENMU, "flooding", "x");
                r.as_object_mut().unwrap().remove("lon");
                r
            },
            "bad_position",
            Some("lon"),
        ),
        ("Tokyo", with("lat", json!(35.68)), "outside_taiwan", Some("position")),
        ("unknown category", with("category", json!("alien_landing")), "bad_category", Some("category")),
        ("unknown field", with("severity", json!("high")), "unknown_field", Some("severity")),
        ("text too long", with("text", json!("水".repeat(501))), "text_too_long", Some("text")),
        ("markup", with("text", json!("<script>alert(1)</script>")), "markup_in_text", Some("text")),
        ("bidi override", with("text", json!("abc\u{202E}def")), "bad_text", Some("text")),
        ("future ts", with("ts", json!(now_ms() + 3_600_000)), "bad_ts", Some("ts")),
        ("photo too large", with("photo", json!(big_photo)), "photo_too_large", Some("photo")),
        ("photo not base64", with("photo", json!("not base64 at all!")), "photo_encoding", Some("photo")),
        ("photo a GIF", with("photo", json!(b64(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"))), "photo_type", Some("photo")),
        ("id not a string", with("id", json!(42)), "malformed", Some("id")),
        ("bad client id", with("client_id", json!("has spaces in it")), "bad_client_id", Some("client_id")),
    ];
    for (what, frame, reason, field) in cases {
        let before = server.metric(&format!("dc_reports_refused_total{{reason=\"{reason}\"}}"));
        citizen.send(frame).await;
        let answer = report_answer(&mut citizen).await;
        assert_eq!(
            (answer["type"].as_str(), answer["reason"].as_str()),
            (Some("report_rejected"), Some(reason)),
            "{what}: {answer}"
        );
        assert_eq!(answer["field"].as_str(), field, "{what}: {answer}");
        assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {answer}");
        let after = server.metric(&format!("dc_reports_refused_total{{reason=\"{reason}\"}}"));
        assert_eq!(after, before + 1.0, "{what}: counted");
    }

    // One app flooding: limited per client id, with when to try again.
    let mut last = Value::Null;
    for i in 0..6 {
        let mut r = ws_report(XIAOLIN, "other", &format!("spam {i}"));
        r["client_id"] = json!("flooding-app");
        citizen.send(r).await;
        last = report_answer(&mut citizen).await;
    }
    assert_eq!((last["reason"].as_str(), last["field"].as_str()), (Some("rate_limited_client"), None), "{last}");
    assert!(last["retry_after_s"].as_u64().is_some_and(|s| s > 0), "{last}");

    // Not JSON at all: the channel's error frame, as before.
    citizen.send_text("{\"type\": \"report\", ").await;
    let error = report_answer(&mut citizen).await;
    assert_eq!((error["type"].as_str(), error["reason"].as_str()), (Some("error"), Some("malformed")), "{error}");

    // The socket and its subscription are intact: an alert for the subscribed place still arrives.
    raise_heavy_rain(&server, 120.0, now_ms()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = citizen.next_json(left).await.expect("the alert reaches the citizen after the bad reports");
        if frame["type"] == "alert" {
            assert_eq!(frame["event"], "heavy_rain", "{frame}");
            break;
        }
    }
}

// Issue 22: bounded photos, protected clusters, caps on new clusters, clean and privately cached photos.

/// `serve` with a copy of `config/` whose main file gets `[reports]` `section`, keeping its state in `data_dir`.
fn serve_with_reports(name: &str, section: &str, data_dir: &std::path::Path) -> Server {
    let section = section.to_string();
    let config = common::config_copy(name, move |text| format!("{text}\n[reports]\n{section}\n"));
    Server::serve_in(&config, data_dir)
}

/// Places about 3 km apart in Taitung county (far from every demo zone), one cluster each.
fn place(i: u32) -> (f64, f64) {
    (22.5 + f64::from(i) * 0.03, 121.0)
}

/// A structurally valid JPEG of 1,009 bytes whose content (so whose hash) depends on `seed`.
fn seeded_jpeg(seed: u8) -> Vec<u8> {
    let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x03, 0x01];
    jpeg.extend(std::iter::repeat_n(seed, 1000));
    jpeg.extend_from_slice(&[0xFF, 0xD9]);
    jpeg
}

fn with_photo(mut body: Value, jpeg: &[u8]) -> Value {
    body["photo"] = json!(b64(jpeg));
    body
}

/// The CAP messages a demo webhook receiver got, in order, as `identifier:msgType`.
fn webhook_messages(server: &Server, name: &str) -> Vec<String> {
    let (_, got) = operator(server, "GET", "/demo/received", None);
    let field = |xml: &str, tag: &str| {
        let start = xml.find(&format!("<{tag}>")).map(|i| i + tag.len() + 2)?;
        Some(xml[start..].split('<').next()?.to_string())
    };
    got["received"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["receiver"] == format!("webhook-{name}").as_str())
        .filter_map(|r| {
            let xml = r["body"].as_str()?;
            let id = field(xml, "identifier")?;
            Some(format!("{}:{}", id.rsplit(':').next().unwrap_or(&id), field(xml, "msgType")?))
        })
        .collect()
}

/// Issue 22 item 2: anonymous photos had no bound (one address at the per-address limit could write ~28 GiB a day
/// into the data dir that holds the alert journal) and none was ever deleted.
#[test]
fn a_photo_flood_is_refused_at_the_quota_and_photos_go_with_their_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let size = seeded_jpeg(1).len();
    let quota = size * 5 / 2;
    let mut server =
        serve_with_reports("photo-quota", &format!("photo_quota_bytes = {quota}\nmax_clusters = 10"), dir.path());
    let photos = dir.path().join("reports").join("photos");
    let name_of = |seed: u8| {
        use sha2::Digest;
        let hash: String = sha2::Sha256::digest(seeded_jpeg(seed)).iter().map(|b| format!("{b:02x}")).collect();
        format!("{hash}.jpg")
    };
    let mut n = 0;
    let mut send = |server: &Server, body: Value| {
        n += 1;
        post_report(server, Some(&format!("phone-{n}")), &body)
    };
    assert_eq!(server.metric("dc_reports_photo_quota_bytes"), quota as f64);

    // Two photos fit; the third is refused, by name and counted, and not written.
    for (i, seed) in [(0, 1), (1, 2)] {
        let (status, answer) = send(&server, with_photo(report(place(i), "other", "photo"), &seeded_jpeg(seed)));
        assert_eq!(status, 201, "{answer}");
    }
    let (status, answer) = send(&server, with_photo(report(place(2), "other", "third"), &seeded_jpeg(3)));
    assert_eq!((status, answer["error"].as_str(), answer["field"].as_str()), (507, Some("photo_quota"), Some("photo")));
    assert_eq!(server.metric(r#"dc_reports_refused_total{reason="photo_quota"}"#), 1.0);
    assert!(!photos.join(name_of(3)).exists());
    assert_eq!(server.metric("dc_reports_photo_bytes"), (2 * size) as f64);
    // Reports without a photo are still taken, and the same photo again costs nothing.
    let (status, answer) = send(&server, report(place(2), "other", "no photo this time"));
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = send(&server, with_photo(report(place(3), "other", "same photo"), &seeded_jpeg(2)));
    assert_eq!(status, 201, "{answer}");

    // New places push the oldest clusters out (at most 10 are kept); a photo goes with the last cluster that had it.
    for i in 4..10 {
        assert_eq!(send(&server, report(place(i), "other", "new place")).0, 201);
    }
    assert!(photos.join(name_of(1)).exists() && photos.join(name_of(2)).exists());
    assert_eq!(send(&server, report(place(10), "other", "new place")).0, 201);
    common::wait_until_blocking("the first cluster's photo deleted", WAIT, || !photos.join(name_of(1)).exists());
    assert_eq!(send(&server, report(place(11), "other", "new place")).0, 201);
    assert_eq!(send(&server, report(place(12), "other", "new place")).0, 201);
    assert!(photos.join(name_of(2)).exists(), "still in the fourth cluster");
    assert_eq!(send(&server, report(place(13), "other", "new place")).0, 201);
    common::wait_until_blocking("the shared photo deleted", WAIT, || !photos.join(name_of(2)).exists());
    common::wait_until_blocking("the gauge at 0", WAIT, || server.metric("dc_reports_photo_bytes") == 0.0);
    assert_eq!(server.metric("dc_reports_photos_deleted_total"), 2.0);
    // Room again.
    let (status, answer) = send(&server, with_photo(report(place(14), "other", "now it fits"), &seeded_jpeg(3)));
    assert_eq!(status, 201, "{answer}");

    // The journals beside the photos kept working: an alert raised from a verified cluster is journaled, and
    // after a kill -9 both the alert and the clusters (with the photo they refer to) are back.
    let (status, flood) = send(&server, report(SHENMU, "flooding", "water in the street"));
    assert_eq!(status, 201, "{flood}");
    let id = flood["cluster"].as_str().unwrap().to_string();
    let (status, _) = operator(&server, "POST", &format!("/api/v1/reports/clusters/{id}/verify"), None);
    assert_eq!(status, 200);
    let (status, raised) = operator(
        &server,
        "POST",
        &format!("/api/v1/reports/clusters/{id}/raise"),
        Some(json!({"severity": "Moderate"})),
    );
    assert_eq!(status, 201, "{raised}");
    let alert_id = raised["alert_id"].as_str().unwrap().to_string();
    let before = clusters(&server);
    drop(server);
    server = serve_with_reports("photo-quota", &format!("photo_quota_bytes = {quota}\nmax_clusters = 10"), dir.path());
    assert_eq!(clusters(&server), before);
    let (_, alerts) = server.get("/api/v1/alerts");
    assert!(alerts.contains(&alert_id), "{alerts}");
    assert!(photos.join(name_of(3)).exists());
    assert_eq!(server.metric("dc_reports_photo_bytes"), size as f64);
}

/// Issue 22 item 3: at the cluster limit the least recent were dropped a tenth at a time, "unverified first" but
/// verified ones too when few others were left. Verified and alert-linked clusters must survive any flood; when only
/// they are left, a new place is refused rather than one of them dropped.
#[test]
fn a_report_flood_never_evicts_verified_or_alert_linked_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with_reports("protected", "max_clusters = 20", dir.path());
    let mut n = 0;
    let mut send = |body: Value| {
        n += 1;
        post_report(&server, Some(&format!("phone-{n}")), &body)
    };
    let action = |id: &str, what: &str, body: Option<Value>| {
        let (status, answer) = operator(&server, "POST", &format!("/api/v1/reports/clusters/{id}/{what}"), body);
        assert!(status == 200 || status == 201, "{what} {id}: {status} {answer}");
        answer
    };
    // 19 clusters operators judged: one raised an alert, 18 verified.
    let (_, linked) = send(report(SHENMU, "flooding", "water in the street"));
    let linked = linked["cluster"].as_str().unwrap().to_string();
    action(&linked, "verify", None);
    let alert_id = action(&linked, "raise", Some(json!({"severity": "Moderate"})))["alert_id"].clone();
    let mut kept = vec![linked.clone()];
    for i in 0..18 {
        let (status, answer) = send(report(place(i), "other", "verified later"));
        assert_eq!(status, 201, "{answer}");
        let id = answer["cluster"].as_str().unwrap().to_string();
        action(&id, "verify", None);
        kept.push(id);
    }
    // A flood of new places: each pushes out the one unjudged cluster before it, never a judged one.
    let mut last = String::new();
    for i in 18..26 {
        let (status, answer) = send(report(place(i), "other", "flood"));
        assert_eq!(status, 201, "{answer}");
        last = answer["cluster"].as_str().unwrap().to_string();
    }
    let now = clusters(&server);
    assert!(now.len() <= 20, "{}", now.len());
    for id in &kept {
        assert!(now.iter().any(|c| c["id"] == id.as_str()), "{id} was evicted");
    }
    assert_eq!(now.iter().find(|c| c["id"] == linked.as_str()).unwrap()["alert_id"], alert_id);

    // Every place taken by a judged cluster: a new place is refused (counted), a report joining one is not.
    action(&last, "verify", None);
    let (status, answer) = send(report(place(27), "other", "one more place"));
    assert_eq!((status, answer["error"].as_str()), (507, Some("clusters_full")), "{answer}");
    assert_eq!(server.metric(r#"dc_reports_refused_total{reason="clusters_full"}"#), 1.0);
    let (status, answer) = send(report(SHENMU, "flooding", "still flooded"));
    assert_eq!((status, answer["cluster"].as_str()), (201, Some(linked.as_str())), "{answer}");
}

/// Issue 22 item 3: one address could open clusters as fast as its report limit allowed.
#[test]
fn new_places_are_capped_per_address_with_a_counted_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with_reports("new-places", "new_clusters_per_address_per_hour = 3", dir.path());
    for i in 0..3 {
        let (status, answer) = post_report(&server, Some(&format!("phone-{i}")), &report(place(i), "other", "x"));
        assert_eq!(status, 201, "{answer}");
    }
    let (status, head, text) = post_report_raw(server.http, Some("phone-3"), &report(place(3), "other", "x"));
    assert_eq!(status, 429, "{text}");
    assert!(head.contains("retry-after: 1200"), "an hour shared by three: {head}");
    assert!(text.contains("new_clusters_address"), "{text}");
    assert_eq!(server.metric(r#"dc_reports_refused_total{reason="new_clusters_address"}"#), 1.0);
    // Reports of places already reported are not new places.
    let (status, answer) = post_report(&server, Some("phone-4"), &report(place(0), "other", "me too"));
    assert_eq!((status, answer["count"].as_u64()), (201, Some(2)), "{answer}");
}

/// Decodes JPEGs in headless Chromium (a real browser's decoder) and returns, per image, its size and a hash of its
/// pixels, or the decoding error.
fn decode_in_chromium(images: &[&[u8]]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let sources: Vec<String> = images.iter().map(|i| format!("'data:image/jpeg;base64,{}'", b64(i))).collect();
    let page = format!(
        "<html><body><script>
        async function pixels(src) {{
          const img = new Image(); img.src = src; await img.decode();
          const canvas = document.createElement('canvas');
          canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
          const ctx = canvas.getContext('2d'); ctx.drawImage(img, 0, 0);
          let h = 0; for (const v of ctx.getImageData(0, 0, canvas.width, canvas.height).data) h = (h * 31 + v) >>> 0;
          return canvas.width + 'x' + canvas.height + ':' + h;
        }}
        Promise.all([{}].map(s => pixels(s).catch(e => 'error ' + e)))
          .then(r => document.body.setAttribute('data-result', r.join(' ')));
        </script></body></html>",
        sources.join(",")
    );
    let html = dir.path().join("decode.html");
    std::fs::write(&html, page).unwrap();
    let output = std::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000"])
        .arg(format!("--user-data-dir={}", dir.path().join("profile").display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium runs (Debian package `chromium`)");
    let dom = String::from_utf8_lossy(&output.stdout);
    let result = dom.split("data-result=\"").nth(1).and_then(|r| r.split('"').next());
    result.unwrap_or_else(|| panic!("no result from chromium: {dom}")).split(' ').map(str::to_string).collect()
}

/// Issue 22 items 12 and 10: the cleaning copied everything from the first scan to the end of the file, so metadata
/// between the scans of a progressive JPEG and anything appended after its end were stored and published; and the
/// operators' route for unpublished photos said `public, immutable`, so any shared cache could keep them.
#[test]
fn photos_keep_only_the_image_and_unpublished_ones_are_not_cached() {
    // A real progressive JPEG (seven scans; from Node.js's documentation, MIT), with a comment and an EXIF segment
    // put between its first and second scans and an archive appended after its end.
    let original = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/progressive.jpg")).unwrap();
    let first_scan = original.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let length = usize::from(u16::from_be_bytes([original[first_scan + 2], original[first_scan + 3]]));
    let mut at = first_scan + 2 + length;
    while original[at] != 0xFF || matches!(original[at + 1], 0x00 | 0xD0..=0xD7) {
        at += 1;
    }
    let mut crafted = original[..at].to_vec();
    crafted.extend_from_slice(&[0xFF, 0xFE, 0x00, 0x16]);
    crafted.extend_from_slice(b"home: No. 5, Lane 3 ");
    let exif = b"Exif\0\0GPS 23.5185N 120.9280E";
    crafted.extend_from_slice(&[0xFF, 0xE1, 0x00, u8::try_from(exif.len() + 2).unwrap()]);
    crafted.extend_from_slice(exif);
    crafted.extend_from_slice(&original[at..]);
    crafted.extend_from_slice(b"PK\x03\x04 an appended archive: the phone's location history");
    assert_eq!(&decode_in_chromium(&[&crafted])[0][..6], "493x58", "the crafted file is itself a valid image");

    let server = Server::start();
    let (status, answer) =
        post_report(&server, Some("phone-1"), &with_photo(report(SHENMU, "flooding", "photo"), &crafted));
    assert_eq!(status, 201, "{answer}");
    let name = answer["photo"].as_str().unwrap().to_string();
    let stored = std::fs::read(server.data_dir.join("reports").join("photos").join(&name)).unwrap();
    let text = String::from_utf8_lossy(&stored);
    for private in ["home: No. 5", "GPS", "Exif", "PK\u{3}\u{4}", "location history"] {
        assert!(!text.contains(private), "`{private}` kept");
    }
    assert!(stored.ends_with(&[0xFF, 0xD9]), "the file ends at the end of the image");
    assert_eq!(stored.windows(2).filter(|w| *w == [0xFF, 0xDA]).count(), 7, "every scan kept");
    let decoded = decode_in_chromium(&[&original, &stored]);
    assert!(decoded[0].starts_with("493x58:"), "{decoded:?}");
    assert_eq!(decoded[0], decoded[1], "the cleaned photo shows the same pixels");

    // Operators' copy: never in a shared cache. Public copy (once published): cacheable.
    let auth = format!("Bearer {TOKEN}");
    let (status, head, _) =
        raw(server.http, "GET", &format!("/api/v1/reports/photos/{name}"), &[("Authorization", &auth)], Vec::new());
    assert_eq!(status, 200);
    assert!(head.contains("cache-control: private, no-store"), "{head}");
    let id = answer["cluster"].as_str().unwrap();
    let (status, _) = operator(
        &server,
        "POST",
        &format!("/api/v1/reports/clusters/{id}/verify"),
        Some(json!({"publish_photos": true})),
    );
    assert_eq!(status, 200);
    let (status, head, _) = raw(server.http, "GET", &format!("/opendata/reports/photos/{name}"), &[], Vec::new());
    assert_eq!(status, 200);
    assert!(head.contains("cache-control: public, max-age=31536000, immutable"), "{head}");
}
