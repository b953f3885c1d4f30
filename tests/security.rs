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
