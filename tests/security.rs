//! Operator tokens are scoped and stored as hashes; responses carry security headers; public feeds allow CORS.

mod common;

use common::{http_get, http_request, Server, TOKEN};

#[tokio::test]
async fn a_read_token_reads_but_cannot_operate() {
    let config = common::config_copy("scopes", |t| {
        format!(
            "{t}\n[[operator_tokens]]\nname = \"viewer\"\nscope = \"read\"\nsha256 = \"{}\"\n",
            common::sha256_hex("viewer-token")
        )
    });
    let server = Server::serve(&config);
    let (status, _) = http_get(server.http, "/api/v1/alerts", Some("viewer-token")).unwrap();
    assert_eq!(status, 200);
    let (status, body) =
        http_request(server.http, "POST", "/api/v1/alerts/x/cancel", Some("viewer-token"), None).unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("forbidden"), "{body}");
    // The admin token from DC_OPERATOR_TOKEN gets past the scope check (and then finds no such alert).
    let (status, _) = http_request(server.http, "POST", "/api/v1/alerts/x/cancel", Some(TOKEN), None).unwrap();
    assert_eq!(status, 404);
    // The plaintext token is in no file the server reads.
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(!text.contains("viewer-token"));
}

#[tokio::test]
async fn bad_token_hash_in_config_names_the_token() {
    let config = common::config_copy("badhash", |t| {
        format!("{t}\n[[operator_tokens]]\nname = \"broken\"\nscope = \"read\"\nsha256 = \"abc\"\n")
    });
    let out = common::test_env(&mut std::process::Command::new(env!("CARGO_BIN_EXE_disaster-cloud")))
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken") && err.contains("sha256"), "{err}");
}

#[tokio::test]
async fn security_headers_and_cors_on_public_feeds_only() {
    let server = Server::start();
    let head = |path: &str| {
        let mut s = std::net::TcpStream::connect(server.http).unwrap();
        use std::io::{Read, Write};
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase()
    };
    let page = head("/");
    assert!(page.contains("x-content-type-options: nosniff"), "{page}");
    assert!(page.contains("content-security-policy: default-src 'self'"), "{page}");
    assert!(page.contains("x-frame-options: deny"), "{page}");
    assert!(!page.contains("access-control-allow-origin"), "{page}");
    let feed = head("/opendata/reports.geojson");
    assert!(feed.contains("access-control-allow-origin: *"), "{feed}");
}

/// The public read-only endpoints are rate-limited per address (`http.public_burst`, `http.public_per_s`): past the
/// burst a 429 with Retry-After and the security headers, counted; `/healthz` and operator endpoints are not limited.
#[tokio::test]
async fn public_endpoints_are_rate_limited_per_address() {
    let config = common::config_copy("public-rate", |t| {
        t.replace("public_burst = 120", "public_burst = 3").replace("public_per_s = 20", "public_per_s = 1")
    });
    let server = Server::serve(&config);
    let raw = |path: &str| {
        let mut s = std::net::TcpStream::connect(server.http).unwrap();
        use std::io::{Read, Write};
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    for _ in 0..3 {
        let (status, _) = http_get(server.http, "/opendata/alerts.geojson", None).unwrap();
        assert_eq!(status, 200);
    }
    let refused = raw("/cap/feed.atom");
    let head = refused.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 429"), "{refused}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(refused.contains("rate_limited"), "{refused}");
    // Not limited: health checks, operators, and public endpoints asked with an operator token.
    for _ in 0..5 {
        assert_eq!(http_get(server.http, "/healthz", None).unwrap().0, 200);
        assert_eq!(http_get(server.http, "/api/v1/alerts", Some(TOKEN)).unwrap().0, 200);
        assert_eq!(http_get(server.http, "/cap/feed.atom", Some(TOKEN)).unwrap().0, 200);
    }
    assert_eq!(
        http_get(server.http, "/cap/feed.atom", Some("wrong-token")).unwrap().0,
        429,
        "a wrong token is no pass"
    );
    // One token a second comes back: /metrics (itself public, so limited) answers again and shows the refusal.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let metrics = loop {
        let (status, body) = http_get(server.http, "/metrics", None).unwrap();
        if status == 200 {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "still limited after 10 s");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let refused: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("dc_http_refused_total{reason=\"rate_limited\"}").and_then(|v| v.trim().parse().ok())
        })
        .expect("the rate_limited sample");
    assert!(refused >= 1.0, "{refused}");
}

/// Every file under `dir` named `name` (the alert journal's folder is the server's business).
fn find_file(dir: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        }
    }
    None
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends a command on the operator socket and returns its result (or error) frame, past any deltas.
async fn socket_command(ws: &mut Ws, command: serde_json::Value) -> serde_json::Value {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::Text(command.to_string().into())).await.unwrap();
    loop {
        let Some(Ok(message)) = ws.next().await else { panic!("the operator socket closed") };
        let Message::Text(text) = message else { continue };
        let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
        if matches!(frame["type"].as_str(), Some("result" | "error")) {
            return frame;
        }
    }
}

/// The audit trail names the operator token that took each decision — over the HTTP API and over the operator
/// socket — in the alert and cluster journals and in what operators see, and a restart keeps the names.
#[tokio::test]
async fn the_audit_trail_names_the_token_that_decided() {
    use serde_json::{json, Value};

    let config = common::config_copy("audit", |t| {
        format!(
            "{t}\n[[operator_tokens]]\nname = \"duty-officer-1\"\nscope = \"operate\"\nsha256 = \"{}\"\n\
             [[operator_tokens]]\nname = \"duty-officer-2\"\nscope = \"operate\"\nsha256 = \"{}\"\n",
            common::sha256_hex("officer-1-token"),
            common::sha256_hex("officer-2-token")
        )
    });
    let data = tempfile::tempdir().unwrap();
    let server = Server::serve_in(&config, data.path());
    let post = |path: &str, token: &str, body: Value| {
        let (status, body) = http_request(server.http, "POST", path, Some(token), Some(&body.to_string())).unwrap();
        (status, serde_json::from_str::<Value>(&body).unwrap_or(Value::String(body)))
    };

    // A citizen's report, verified and raised by officer 1 (HTTP): an alert held for approval.
    let report = json!({"lat": common::SHENMU.0, "lon": common::SHENMU.1, "category": "flooding",
                        "text": "water over the road"});
    let (status, answer) =
        http_request(server.http, "POST", "/api/v1/reports", None, Some(&report.to_string())).unwrap();
    assert_eq!(status, 201, "{answer}");
    let cluster = serde_json::from_str::<Value>(&answer).unwrap()["cluster"].as_str().unwrap().to_string();
    let (status, verified) = post(&format!("/api/v1/reports/clusters/{cluster}/verify"), "officer-1-token", json!({}));
    assert_eq!((status, verified["decided_by"].as_str()), (200, Some("duty-officer-1")), "{verified}");
    let (status, raised) =
        post(&format!("/api/v1/reports/clusters/{cluster}/raise"), "officer-1-token", json!({"severity": "Severe"}));
    assert_eq!(status, 201, "{raised}");
    let alert_id = raised["alert"]["id"].as_str().unwrap().to_string();

    // Officer 2 approves and comments over the operator socket (a browser's `?token=`), officer 1 acknowledges over
    // HTTP.
    let url = format!("ws://{}/ws/operator?token=officer-2-token", server.http);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("the socket takes ?token=");
    let approved = socket_command(&mut ws, json!({"type": "approve", "id": alert_id})).await;
    assert_eq!(approved["ok"], true, "{approved}");
    let commented =
        socket_command(&mut ws, json!({"type": "comment", "id": alert_id, "text": "sirens on in Shenmu"})).await;
    assert_eq!(commented["ok"], true, "{commented}");
    let (status, acked) = post(&format!("/api/v1/alerts/{alert_id}/ack"), "officer-1-token", json!({}));
    assert_eq!(status, 200, "{acked}");

    let names = |alert: &Value| {
        (
            alert["approved_by"].as_str().map(str::to_string),
            alert["acknowledged_by"].as_str().map(str::to_string),
            alert["comments"][0]["by"].as_str().map(str::to_string),
        )
    };
    let expected = (Some("duty-officer-2".into()), Some("duty-officer-1".into()), Some("duty-officer-2".into()));
    let listed = |server: &Server| {
        let (_, body) = http_get(server.http, "/api/v1/alerts", Some("officer-1-token")).unwrap();
        let list: Value = serde_json::from_str(&body).unwrap();
        list["alerts"].as_array().unwrap().iter().find(|a| a["id"] == alert_id.as_str()).cloned().unwrap()
    };
    assert_eq!(names(&listed(&server)), expected, "{}", listed(&server));

    // The journal lines name them too, and no line says only which channel it came by.
    let journal =
        std::fs::read_to_string(find_file(data.path(), "alerts.journal.jsonl").expect("alert journal")).unwrap();
    let actors: Vec<String> = journal
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["alert"]["id"] == alert_id.as_str())
        .map(|l| format!("{}:{}", l["cause"]["action"].as_str().unwrap_or("raise"), l["actor"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        actors,
        ["raise:duty-officer-1", "approve:duty-officer-2", "comment:duty-officer-2", "acknowledge:duty-officer-1"],
        "{journal}"
    );
    assert!(!journal.contains("operator-api") && !journal.contains("operator-socket"), "{journal}");

    // After a restart: the same names, from the journals.
    drop(ws);
    drop(server);
    let server = Server::serve_in(&config, data.path());
    assert_eq!(names(&listed(&server)), expected);
    let (_, body) = http_get(server.http, "/api/v1/reports/clusters", Some("officer-2-token")).unwrap();
    assert!(body.contains(r#""decided_by":"duty-officer-1""#), "{body}");
}

/// `?token=` authenticates the operator websocket (a browser cannot set headers there) and nothing else: a token in
/// any other URL is refused, so that it does not spread into proxy logs and browser histories.
#[test]
fn a_token_in_the_url_counts_only_for_the_websocket_upgrade() {
    let server = Server::start();
    assert_eq!(http_get(server.http, &format!("/api/v1/alerts?token={TOKEN}"), None).unwrap().0, 401);
    assert_eq!(http_get(server.http, &format!("/api/v1/reports/clusters?token={TOKEN}"), None).unwrap().0, 401);
    let (status, body) =
        http_request(server.http, "POST", &format!("/api/v1/alerts/x/cancel?token={TOKEN}"), None, None).unwrap();
    assert_eq!(status, 401, "{body}");
    assert_eq!(http_get(server.http, "/api/v1/sensors/RG0001/readings?metric=rain_mm", Some(TOKEN)).unwrap().0, 200);
    assert_eq!(
        http_get(server.http, &format!("/api/v1/sensors/RG0001/readings?metric=rain_mm&token={TOKEN}"), None)
            .unwrap()
            .0,
        401
    );
    // The socket's path without an upgrade is no way around it either.
    assert_eq!(http_get(server.http, &format!("/ws/operator?token={TOKEN}"), None).unwrap().0, 401);
    // With the header, as before.
    assert_eq!(http_get(server.http, "/api/v1/alerts", Some(TOKEN)).unwrap().0, 200);
    // And the websocket upgrade itself takes it (a browser's map).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let url = format!("ws://{}/ws/operator?token={TOKEN}", server.http);
    runtime.block_on(async { tokio_tungstenite::connect_async(url).await.expect("the upgrade takes ?token=") });
}
