//! TLS with one flag each: `--http-tls` serves the web API and websockets over HTTPS / WSS with the
//! deployment CA's server certificate; `--mqtt-tls=false` turns the MQTT TLS listeners off. Real binary, real
//! rustls clients: one that trusts the deployment CA (`<data dir>/pki/ca.pem`), one that does not.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{http_get, Server, TOKEN};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A rustls client trusting exactly the certificates of `ca_pem` (none: trusts nothing).
fn client(ca_pem: Option<&std::path::Path>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    if let Some(path) = ca_pem {
        for cert in CertificateDer::pem_file_iter(path).expect("ca.pem readable") {
            roots.add(cert.expect("a PEM certificate")).expect("a CA certificate");
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(addr: SocketAddr, connector: &TlsConnector) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    // The certificate is issued for `tls.server_names` = localhost and 127.0.0.1 (an IP SAN).
    let name = ServerName::try_from("127.0.0.1").expect("an IP address").to_owned();
    connector.connect(name, tcp).await
}

/// GET over HTTPS: (status, lower-cased head, body). `Connection: close`, so the body runs to the end.
async fn https_get(addr: SocketAddr, connector: &TlsConnector, path: &str) -> (u16, String, String) {
    let mut tls = connect(addr, connector).await.expect("TLS handshake with a client trusting the CA");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status");
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// Value of a Prometheus sample in a `/metrics` body (0 when absent).
fn sample(metrics: &str, name: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

#[tokio::test]
async fn https_and_wss_with_the_deployment_ca() {
    let server = Server::start_with(&["--http-tls"]);
    let ca = server.data_dir.join("pki").join("ca.pem");
    let trusted = client(Some(&ca));

    // HTTPS: a public endpoint, an operator endpoint, and HSTS beside the usual security headers.
    let (status, head, body) = https_get(server.http, &trusted, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"), "{head}");
    assert!(head.contains("strict-transport-security: max-age="), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    let (status, _, body) = https_get(server.http, &trusted, "/api/v1/alerts").await;
    assert_eq!(status, 200, "{body}");

    // WSS: the operator socket (bearer token) gets its snapshot, a citizen subscribes; then an alert raised over MQTT
    // reaches both through TLS.
    let mut request = format!("wss://{}/ws/operator", server.http).into_client_request().unwrap();
    request.headers_mut().insert("Authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let tls = connect(server.http, &trusted).await.unwrap();
    let (mut operator, _) = tokio_tungstenite::client_async(request, tls).await.expect("WSS upgrade (operator)");
    let first = next_json(&mut operator).await.expect("a snapshot");
    assert_eq!(first["type"], "snapshot");

    let tls = connect(server.http, &trusted).await.unwrap();
    let url = format!("wss://{}/ws/citizen", server.http);
    let (mut citizen, _) = tokio_tungstenite::client_async(url, tls).await.expect("WSS upgrade (citizen)");
    let place = serde_json::json!([{"lat": common::SHENMU.0, "lon": common::SHENMU.1}]);
    let subscribe = serde_json::json!({"type": "subscribe", "places": place, "lang": "en", "last_seen": []});
    citizen.send(Message::Text(subscribe.to_string().into())).await.unwrap();
    let ack = next_json(&mut citizen).await.expect("an acknowledgement");
    assert_eq!(ack["type"], "subscribed", "{ack}");

    common::raise_heavy_rain(&server, 120.0, common::now_ms()).await;
    let alert = next_of_type(&mut operator, "alert").await.expect("the alert over WSS (operator)");
    assert_eq!(alert["state"], "raised", "{alert}");
    let alert = next_of_type(&mut citizen, "alert").await.expect("the alert over WSS (citizen)");
    assert_eq!(alert["lang"], "en", "{alert}");

    // Plain HTTP to the HTTPS port: a readable 400 saying what to do, not a hang or a TLS alert; counted.
    let (status, body) = http_get(server.http, "/healthz", None).expect("an answer to plain HTTP");
    assert_eq!(status, 400);
    assert!(body.contains("https://"), "{body}");

    // A client that does not trust the deployment CA cannot connect; the server counts the failed handshake.
    let untrusted = client(None);
    let err = connect(server.http, &untrusted).await.expect_err("an untrusted certificate must fail");
    assert!(err.to_string().to_ascii_lowercase().contains("certificate"), "{err}");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, metrics) = https_get(server.http, &trusted, "/metrics").await;
        let plain = sample(&metrics, "dc_http_refused_total{reason=\"plain_http_on_tls\"}");
        let handshake = sample(&metrics, "dc_http_refused_total{reason=\"tls_handshake\"}");
        if plain >= 1.0 && handshake >= 1.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "refusals not counted: plain {plain}, handshake {handshake}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The server certificate is the one the MQTT TLS listeners serve (same pki/server.pem).
    assert!(server.data_dir.join("pki").join("server.pem").is_file());
}

#[tokio::test]
async fn mqtt_tls_is_one_flag_too() {
    let on = Server::start();
    assert!(tokio::net::TcpStream::connect(on.mqtt_tls).await.is_ok(), "TLS listener on by default");
    assert!(on.log().contains("v4-tls"), "{}", on.log());

    let off = Server::start_with(&["--mqtt-tls=false"]);
    assert!(tokio::net::TcpStream::connect(off.mqtt_tls).await.is_err(), "--mqtt-tls=false: nothing listens");
    assert!(!off.log().contains("v4-tls"), "{}", off.log());
    // Plain MQTT and HTTP are unaffected.
    assert_eq!(http_get(off.http, "/healthz", None).map(|(s, _)| s), Some(200));
}

async fn next_json<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Option<serde_json::Value>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next()).await.ok()??.ok()?;
        if let Message::Text(text) = msg {
            return serde_json::from_str(&text).ok();
        }
    }
}

async fn next_of_type<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, kind: &str) -> Option<serde_json::Value>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = next_json(ws).await?;
        if msg["type"] == kind {
            return Some(msg);
        }
    }
}
