//! The operators' channel, `/ws/operator`: a snapshot on connect, then every alert change and coalesced sensor
//! updates; commands (ack, approve, cancel) over the same socket.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::metrics::{OPERATOR_SOCKETS, WS_DROPPED};
use crate::server::App;
use crate::web::{alert_command, snapshot};

#[derive(Debug, Deserialize)]
struct Command {
    #[serde(rename = "type")]
    kind: String,
    id: String,
}

pub async fn session(app: Arc<App>, mut socket: WebSocket) {
    OPERATOR_SOCKETS.inc();
    // Subscribe before the snapshot so that nothing falls between the two.
    let mut alerts = app.alerts_tx.subscribe();
    let mut sensors = app.sensors_tx.subscribe();
    let first = snapshot(&app).to_string();
    if socket.send(Message::Text(first.into())).await.is_ok() {
        loop {
            let frame: Option<String> = tokio::select! {
                next = alerts.recv() => match next {
                    Ok(alert) => Some(alert.operator.clone()),
                    Err(RecvError::Lagged(_)) => {
                        // A client this far behind would show a wrong map; drop it and let it reload the snapshot.
                        WS_DROPPED.with_label_values(&["operator"]).inc();
                        break;
                    }
                    Err(RecvError::Closed) => break,
                },
                next = sensors.recv() => match next {
                    Ok(update) => Some(update.to_string()),
                    // Sensor frames are coalesced state: missing some is harmless, the next one carries the latest.
                    Err(RecvError::Lagged(_)) => None,
                    Err(RecvError::Closed) => break,
                },
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Text(text))) => Some(command(&app, &text)),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => None,
                },
            };
            if let Some(frame) = frame {
                if socket.send(Message::Text(frame.into())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = socket.send(Message::Close(None)).await;
    OPERATOR_SOCKETS.dec();
}

/// `{"type":"ack"|"approve"|"cancel","id":"…"}` → the same effect as the HTTP API; replies with a result frame.
fn command(app: &App, text: &str) -> String {
    let cmd: Command = match serde_json::from_str(text) {
        Ok(c) => c,
        Err(e) => return json!({"type": "error", "reason": "malformed", "message": e.to_string()}).to_string(),
    };
    match alert_command(app, &cmd.id, &cmd.kind, "operator-socket") {
        Ok(message) => json!({"type": "result", "ok": true, "command": cmd.kind, "alert": message}).to_string(),
        Err(e) => json!({"type": "error", "reason": e.reason(), "message": e.to_string()}).to_string(),
    }
}
