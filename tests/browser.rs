//! The operators' map in a real browser: headless Chromium (Debian `chromium`) loads the page, readings published over
//! MQTT raise an alert, and the page shows it in the list and shades its zone. Driven over the Chrome DevTools
//! Protocol; a screenshot is saved to `target/test-artifacts/operator-map.png`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, now_ms, raise_heavy_rain, Server, TOKEN};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

struct Browser {
    child: Child,
    _profile: std::path::PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn launch_chromium() -> (Browser, u16) {
    let port = free_port();
    let profile = std::env::temp_dir().join(format!("dc-chromium-{}-{port}", std::process::id()));
    let child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,800",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--remote-debugging-port={port}"))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts (Debian package `chromium`; scripts/test installs it)");
    (Browser { child, _profile: profile }, port)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Cdp {
    ws: Ws,
    next_id: u64,
}

impl Cdp {
    async fn connect(port: u16) -> Cdp {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            let list = common::http_get(format!("127.0.0.1:{port}").parse().unwrap(), "/json/list", None);
            if let Some((200, body)) = list {
                let pages: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                if let Some(url) = pages
                    .as_array()
                    .and_then(|p| p.iter().find(|t| t["type"] == "page"))
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                {
                    break url.to_string();
                }
            }
            assert!(Instant::now() < deadline, "chromium's DevTools endpoint did not come up");
            std::thread::sleep(Duration::from_millis(100));
        };
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("DevTools websocket");
        Cdp { ws, next_id: 0 }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.ws
            .send(Message::Text(json!({"id": id, "method": method, "params": params}).to_string().into()))
            .await
            .unwrap();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.ws.next()).await.expect("DevTools answers");
            if let Some(Ok(Message::Text(text))) = msg {
                let v: Value = serde_json::from_str(&text).unwrap();
                if v["id"] == id {
                    return v["result"].clone();
                }
            }
        }
    }

    async fn eval(&mut self, expression: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({"expression": expression, "returnByValue": true})).await;
        r["result"]["value"].clone()
    }

    async fn wait_for(&mut self, expression: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.eval(expression).await == Value::Bool(true) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

#[tokio::test]
async fn operator_map_shows_a_new_alert_and_shades_its_zone() {
    let server = Server::start();
    let (_browser, port) = launch_chromium();
    let mut page = Cdp::connect(port).await;
    page.call("Page.enable", json!({})).await;
    page.call("Page.navigate", json!({"url": format!("http://{}/?token={TOKEN}", server.http)})).await;
    assert!(
        page.wait_for("document.querySelectorAll('path[data-zone]').length >= 4", Duration::from_secs(20)).await,
        "the map did not draw the zones from the snapshot"
    );
    assert!(
        page.wait_for("document.querySelectorAll('circle[data-sensor]').length >= 10", Duration::from_secs(5)).await
    );
    assert_eq!(page.eval("document.querySelectorAll('.alert').length").await, json!(0));

    raise_heavy_rain(&server, 120.0, now_ms()).await;

    assert!(
        page.wait_for("!!document.querySelector('.alert.raised')", Duration::from_secs(15)).await,
        "the alert did not appear in the list"
    );
    let headline = page.eval("document.querySelector('.alert.raised b').textContent").await;
    assert!(headline.as_str().unwrap_or("").contains("豪雨"), "{headline}");
    assert!(
        page.wait_for(
            "(() => { const p = document.querySelector('path[data-zone=\"dfa-xinyi-shenmu\"]'); \
             return !!p && p.dataset.alert !== undefined && p.getAttribute('fill') === '#c62828'; })()",
            Duration::from_secs(5)
        )
        .await,
        "the alert's zone is not shaded"
    );
    assert!(
        page.wait_for("document.querySelectorAll('path.hex').length >= 1", Duration::from_secs(10)).await,
        "the alert's H3 hexagons are not drawn"
    );

    // Zoom to the alert so the screenshot shows it, then keep the picture as a test artifact.
    page.eval("document.querySelector('.alert.raised').click(); true").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shot = page.call("Page.captureScreenshot", json!({"format": "png"})).await;
    let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("operator-map.png"), png).unwrap();
}

/// Standard base64 (the DevTools screenshot encoding); a few lines beat a dependency.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
