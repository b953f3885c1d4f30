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
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_disaster-cloud"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("DC_OPERATOR_TOKEN", TOKEN)
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
