//! The HTTP edge: websockets, the operator API, `/metrics`, `/healthz` and the map page.
//!
//! One [`AppError`] turns every refusal into a status code and a JSON body that names the problem, so handlers use
//! `?` and clients never see internals.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::metrics::{self, HTTP_REFUSED, OPERATOR_SOCKETS, WS_DROPPED};
use crate::server::{now_ms, App};

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(|| async { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics::render()) }))
        .route("/ws/operator", get(operator_socket))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/{id}/{action}", post(alert_action))
        .route("/api/v1/sensors", get(list_sensors))
        .route("/api/v1/dead-letters", get(list_dead_letters))
        .fallback(|| async { AppError::NotFound("no such path".into()) })
        .with_state(app)
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("missing or wrong operator token")]
    Unauthenticated,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, reason) = match &self {
            AppError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AppError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        };
        HTTP_REFUSED.with_label_values(&[reason]).inc();
        (status, Json(json!({ "error": reason, "message": self.to_string() }))).into_response()
    }
}

#[derive(Debug, Deserialize, Default)]
struct TokenQuery {
    token: Option<String>,
}

/// Operators authenticate with `Authorization: Bearer <token>` or, where a browser websocket cannot set headers,
/// `?token=`.
fn authorise(app: &App, headers: &HeaderMap, query: &TokenQuery) -> Result<(), AppError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let given = bearer.or(query.token.as_deref()).ok_or(AppError::Unauthenticated)?;
    if constant_time_eq(given.as_bytes(), app.operator_token.as_bytes()) {
        Ok(())
    } else {
        Err(AppError::Unauthenticated)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn index() -> Html<&'static str> {
    Html(include_str!("../web/index.html"))
}

fn snapshot(app: &App) -> serde_json::Value {
    let alerts: Vec<_> = app.book.lock().active().map(|a| app.alert_message(a)).collect();
    let live = app.live.read();
    let sensors: Vec<_> = app
        .registry()
        .read()
        .iter()
        .map(|s| {
            let l = live.get(&s.id);
            json!({
                "id": s.id, "kind": s.kind, "lat": s.lat, "lon": s.lon, "agency": s.agency, "retired": s.retired,
                "latest": l.map(|l| &l.latest), "last_seen_ms": l.and_then(|l| l.last_seen_ms),
                "status": match l.and_then(|l| l.online) { Some(false) => "offline", Some(true) => "online", None => "unknown" },
            })
        })
        .collect();
    let zones: Vec<_> = app
        .geo
        .zones()
        .map(|z| json!({"id": z.id, "name": z.name, "name_en": z.name_en, "kind": z.kind, "geocode": z.geocode, "area": z.geojson_geometry()}))
        .collect();
    json!({ "type": "snapshot", "alerts": alerts, "sensors": sensors, "zones": zones, "mode": app.mode })
}

async fn operator_socket(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    // Authenticate before looking at the upgrade, so that a tokenless probe learns nothing but 401.
    authorise(&app, &headers, &query)?;
    match ws {
        Ok(ws) => Ok(ws.on_upgrade(move |socket| operator_session(app, socket))),
        Err(rejection) => Ok(rejection.into_response()),
    }
}

async fn operator_session(app: Arc<App>, mut socket: WebSocket) {
    OPERATOR_SOCKETS.inc();
    // Subscribe before the snapshot so that nothing falls between the two.
    let mut alerts = app.alerts_tx.subscribe();
    let first = snapshot(&app).to_string();
    if socket.send(Message::Text(first.into())).await.is_ok() {
        loop {
            tokio::select! {
                next = alerts.recv() => match next {
                    Ok(message) => {
                        let Ok(text) = serde_json::to_string(&*message) else { continue };
                        if socket.send(Message::Text(text.into())).await.is_err() {
                            break;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        // A client this far behind would show a wrong map; drop it and let it reload the snapshot.
                        WS_DROPPED.with_label_values(&["operator"]).inc();
                        let _ = socket.send(Message::Close(None)).await;
                        break;
                    }
                    Err(RecvError::Closed) => break,
                },
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    OPERATOR_SOCKETS.dec();
}

async fn list_alerts(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Result<impl IntoResponse, AppError> {
    authorise(&app, &headers, &query)?;
    let alerts: Vec<_> = app.book.lock().all().map(|a| app.alert_message(a)).collect();
    Ok(Json(json!({ "alerts": alerts })))
}

async fn alert_action(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    Path((id, action)): Path<(String, String)>,
) -> Result<impl IntoResponse, AppError> {
    authorise(&app, &headers, &query)?;
    let changed = {
        let mut book = app.book.lock();
        if book.get(&id).is_none() {
            return Err(AppError::NotFound(format!("no alert `{}`", id.chars().take(80).collect::<String>())));
        }
        match action.as_str() {
            "ack" => book.acknowledge(&id, "operator"),
            "cancel" => book.cancel(&id, now_ms()),
            "approve" => book.get(&id).cloned(),
            other => {
                return Err(AppError::BadRequest(format!(
                    "unknown action `{}`: use ack, approve or cancel",
                    other.chars().take(40).collect::<String>()
                )))
            }
        }
    };
    match changed {
        Some(alert) => {
            if action != "approve" {
                app.publish(&alert);
            }
            Ok(Json(serde_json::to_value(app.alert_message(&alert)).unwrap_or_default()))
        }
        None => Err(AppError::BadRequest(format!("alert `{id}` is no longer active"))),
    }
}

async fn list_sensors(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Result<impl IntoResponse, AppError> {
    authorise(&app, &headers, &query)?;
    let sensors: Vec<_> = app.registry().read().iter().cloned().collect();
    Ok(Json(json!({ "sensors": sensors })))
}

async fn list_dead_letters(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Result<impl IntoResponse, AppError> {
    authorise(&app, &headers, &query)?;
    Ok(Json(json!({ "dead_letters": app.ingest.dead_letters() })))
}
