//! The citizens' channel, `/ws/citizen`: anonymous, subscribe with places and a language, receive only the alerts
//! whose area covers one of the places — and, after a reconnect, what was missed that is still active.
//!
//! Places are resolved to zone ids once, at subscribe time, with the exact zone geometry (`geo-index`), so matching an
//! alert against a connection is one set lookup however many connections there are.
//!
//! Citizens may also send reports on the same socket (`{"type":"report",…}`, the fields of `POST /api/v1/reports`
//! plus an optional `id` of the app's own that the answer echoes and an optional `client_id`). The same checks,
//! limits and counters apply; the answer is `report_accepted` or `report_rejected`, and a refused report never
//! closes the socket nor holds up the alerts on it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast::error::RecvError;

use crate::app::App;
use crate::audience::{AlertBroadcast, Lang};
use crate::clock::now_ms;
use crate::metrics::{CITIZEN_REFUSED, CITIZEN_SOCKETS, WS_DROPPED};
use crate::reports::{parse_report_fields, Refusal};
use crate::web::liveness::{Liveness, Probe};
use crate::web::reports::{check_client_id, client_id, PeerAddr, ReportError};

/// Most places one phone may watch (home, work, family); bounds per-connection work and memory.
pub const MAX_PLACES: usize = 10;
/// A subscribe frame larger than this is refused unparsed.
const MAX_FRAME_BYTES: usize = 8 * 1024;
/// A report frame may be this much larger than the report body limit of `POST /api/v1/reports`, for its `type`,
/// `id` and `client_id`. A frame larger than that closes the socket (close code 1009, message too big): the one
/// refusal that does, as an oversized body ends an HTTP request.
const REPORT_FRAME_OVERHEAD: usize = 1024;
/// A client whose socket does not take a frame within this long has stopped reading: drop it.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /ws/citizen`: the citizens' websocket, anonymous (messages: docs/API.md, "Citizens").
#[utoipa::path(get, path = "/ws/citizen", operation_id = "citizen_socket", tag = "websockets",
    responses((status = 101, description = "Switching protocols: the citizen socket"),
        (status = 400, description = "Not a websocket upgrade (axum's plain-text refusal)", content_type = "text/plain", body = String),
        (status = 426, description = "The connection cannot be upgraded", content_type = "text/plain", body = String)))]
pub async fn socket(
    State(app): State<Arc<App>>,
    PeerAddr(peer): PeerAddr,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // Reports carry photos, so a message may be as large as a report body; buffers grow only while one arrives, so
    // tens of thousands of idle phones still fit in memory (target ≤ 16 KiB each).
    let max = app.reports.policy().max_body_bytes + REPORT_FRAME_OVERHEAD;
    let reporter = Reporter { peer: peer.map(|p| p.ip()), client: client_id(&headers) };
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| session(app, socket, reporter))
}

/// Who sends the reports of one connection: for rate limits, and (hashed) to count distinct reporters.
struct Reporter {
    peer: Option<std::net::IpAddr>,
    /// The upgrade request's `X-Client-Id` / `X-App-Token` (native apps can set headers; browsers send `client_id`
    /// in the report instead). A bad header refuses each report, as it refuses each HTTP report.
    client: Result<Option<String>, Refusal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscribe {
    #[serde(rename = "type")]
    kind: String,
    places: Vec<Place>,
    lang: Lang,
    #[serde(default)]
    last_seen: Vec<Seen>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Place {
    LatLon { lat: f64, lon: f64 },
    Cell { h3: String },
}

#[derive(Debug, Deserialize)]
struct Seen {
    id: String,
    version: u32,
}

struct Subscription {
    zones: HashSet<String>,
    lang: Lang,
}

/// Why a subscribe frame was refused; the label of `dc_ws_citizen_refused_total`.
fn refuse(reason: &'static str, message: String) -> (&'static str, String) {
    CITIZEN_REFUSED.with_label_values(&[reason]).inc();
    (reason, message)
}

fn parse_subscribe(app: &App, text: &str) -> Result<(Subscription, Vec<Seen>), (&'static str, String)> {
    let sub: Subscribe =
        serde_json::from_str(text).map_err(|e| refuse("malformed", format!("subscribe frame: {e}")))?;
    if sub.kind != "subscribe" {
        return Err(refuse(
            "malformed",
            format!("unknown message type `{}`", sub.kind.chars().take(32).collect::<String>()),
        ));
    }
    if sub.places.is_empty() || sub.places.len() > MAX_PLACES {
        return Err(refuse("too_many_places", format!("give 1 to {MAX_PLACES} places, not {}", sub.places.len())));
    }
    let mut zones = HashSet::new();
    for (i, place) in sub.places.iter().enumerate() {
        let (lat, lon) = match place {
            Place::LatLon { lat, lon } => (*lat, *lon),
            Place::Cell { h3 } => {
                let cell: geo_index::CellIndex =
                    h3.parse().map_err(|_| refuse("bad_place", format!("places[{i}]: `{h3}` is not an H3 cell")))?;
                let centre = geo_index::LatLng::from(cell);
                (centre.lat(), centre.lng())
            }
        };
        if !(lat.is_finite() && lon.is_finite() && (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)) {
            return Err(refuse("bad_place", format!("places[{i}]: lat {lat} lon {lon} out of range")));
        }
        zones.extend(app.geo.zones_containing(lat, lon).into_iter().map(|z| z.id.clone()));
    }
    Ok((Subscription { zones, lang: sub.lang }, sub.last_seen))
}

async fn send(socket: &mut WebSocket, text: String) -> bool {
    matches!(tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await, Ok(Ok(())))
}

async fn session(app: Arc<App>, mut socket: WebSocket, reporter: Reporter) {
    CITIZEN_SOCKETS.inc();
    let mut alerts = app.channels.alerts.subscribe();
    let mut subscription: Option<Subscription> = None;
    let mut liveness = Liveness::new(app.web.ws_idle_timeout);
    loop {
        tokio::select! {
            probe = liveness.tick() => match probe {
                Probe::Ping => {
                    if !crate::web::operator::ping(&mut socket).await {
                        WS_DROPPED.with_label_values(&["citizen", "send_timeout"]).inc();
                        break;
                    }
                }
                Probe::Dead => {
                    WS_DROPPED.with_label_values(&["citizen", "unresponsive"]).inc();
                    break;
                }
            },
            incoming = socket.recv() => { liveness.heard(); match incoming {
                Some(Ok(Message::Text(text))) => {
                    let object = serde_json::from_str::<Map<String, Value>>(&text).ok();
                    if let Some(frame) = object.filter(|o| o.get("type").and_then(Value::as_str) == Some("report")) {
                        let answer = report(&app, &reporter, frame).await;
                        if !send(&mut socket, answer.to_string()).await {
                            break;
                        }
                        continue;
                    }
                    if text.len() > MAX_FRAME_BYTES {
                        let (reason, message) =
                            refuse("too_large", format!("a subscribe frame has at most {MAX_FRAME_BYTES} bytes"));
                        let frame = json!({"type": "error", "reason": reason, "message": message});
                        if !send(&mut socket, frame.to_string()).await {
                            break;
                        }
                        continue;
                    }
                    match parse_subscribe(&app, &text) {
                        Ok((sub, seen)) => {
                            let ack = json!({"type": "subscribed", "zones": sub.zones.len(), "lang": sub.lang_tag()});
                            if !send(&mut socket, ack.to_string()).await {
                                break;
                            }
                            if !replay(&app, &mut socket, &sub, &seen).await {
                                break;
                            }
                            subscription = Some(sub);
                        }
                        Err((reason, message)) => {
                            let frame = json!({"type": "error", "reason": reason, "message": message});
                            if !send(&mut socket, frame.to_string()).await {
                                break;
                            }
                        }
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    CITIZEN_REFUSED.with_label_values(&["malformed"]).inc();
                    let frame = json!({"type": "error", "reason": "malformed", "message": "send JSON text frames"});
                    if !send(&mut socket, frame.to_string()).await {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }},
            next = alerts.recv() => match next {
                Ok(alert) => {
                    let Some(sub) = &subscription else { continue };
                    let Some(frame) = alert.citizen_frame(&sub.zones, sub.lang) else { continue };
                    if !send(&mut socket, frame.to_string()).await {
                        WS_DROPPED.with_label_values(&["citizen", "send_timeout"]).inc();
                        break;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    // Behind by a whole buffer: it would miss alerts silently. Drop it; on reconnect it replays.
                    WS_DROPPED.with_label_values(&["citizen", "lagged"]).inc();
                    break;
                }
                Err(RecvError::Closed) => break,
            },
        }
    }
    CITIZEN_SOCKETS.dec();
}

/// One `{"type":"report",…}` frame → `report_accepted` or `report_rejected`, with the app's `id` echoed.
async fn report(app: &Arc<App>, reporter: &Reporter, mut frame: Map<String, Value>) -> Value {
    frame.remove("type");
    let reference = match frame.remove("id") {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(Value::String(s)) if (1..=64).contains(&s.chars().count()) => Ok(Value::String(s)),
        Some(_) => Err(Refusal::field_error("id", "malformed", "a string of 1 to 64 characters").into()),
    };
    let (reference, outcome) = match reference {
        Ok(reference) => (reference, check_and_record(app, reporter, frame).await),
        Err(e) => (Value::Null, Err(e)),
    };
    let (kind, mut answer) = match outcome {
        Ok(answer) => ("report_accepted", answer),
        Err(e) => ("report_rejected", e.rejected()),
    };
    if let Value::Object(map) = &mut answer {
        map.insert("type".into(), kind.into());
        map.insert("id".into(), reference);
    }
    answer
}

/// The checks, their order and the counters of `POST /api/v1/reports`: client id, rate limits, fields, photo.
async fn check_and_record(
    app: &Arc<App>,
    reporter: &Reporter,
    mut frame: Map<String, Value>,
) -> Result<Value, ReportError> {
    let now = now_ms();
    let client = match frame.remove("client_id") {
        None | Some(Value::Null) => reporter.client.clone()?,
        Some(Value::String(s)) => Some(check_client_id("client_id", &s)?),
        Some(_) => Some(check_client_id("client_id", "")?),
    };
    app.reports.admit(client.as_deref(), reporter.peer, now)?;
    let input = parse_report_fields(&frame, now, app.reports.policy())?;
    crate::web::reports::record(app, &input, client, reporter.peer, now).await
}

impl Subscription {
    fn lang_tag(&self) -> &'static str {
        match self.lang {
            Lang::ZhTw => "zh-TW",
            Lang::En => "en",
        }
    }
}

/// Sends what the client missed: every active alert for its places newer than what it says it saw, and the end of
/// any alert it saw that has since cleared or been cancelled (so the app can take it down).
async fn replay(app: &App, socket: &mut WebSocket, sub: &Subscription, seen: &[Seen]) -> bool {
    let seen: HashMap<&str, u32> = seen.iter().map(|s| (s.id.as_str(), s.version)).collect();
    // Citizens receive public warnings (one per hazard and area, `alerting::publication`), never the rules' alerts.
    let frames: Vec<String> = {
        let warnings: Vec<_> = app
            .alerts
            .publication
            .lock()
            .latest()
            .filter(|w| sub.zones.contains(&w.alert.area_id))
            .filter(|w| {
                let a = &w.alert;
                let newer = seen.get(a.id.as_str()).is_none_or(|v| a.version > *v);
                newer && (a.state.is_active() || seen.contains_key(a.id.as_str()))
            })
            .cloned()
            .collect();
        warnings
            .iter()
            .filter_map(|w| {
                AlertBroadcast::new(app.warning_message(w), true)
                    .citizen_frame(&sub.zones, sub.lang)
                    .map(str::to_string)
            })
            .collect()
    };
    // Public warnings from partner agencies covering these places, still active.
    let external: Vec<String> = app
        .partners
        .inbound
        .as_ref()
        .map(|inbound| {
            inbound
                .active()
                .into_iter()
                .filter(|a| seen.get(a.id.as_str()).is_none_or(|v| a.version > *v))
                .filter_map(|a| {
                    crate::external::broadcast(&a, "raised").citizen_frame(&sub.zones, sub.lang).map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    // On a fan-out node: the cluster's alerts.
    let cluster = app.remote_alerts.citizen_replay(&sub.zones, sub.lang, &seen);
    let frames = frames.into_iter().chain(external).chain(cluster);
    for frame in frames {
        if !send(socket, frame).await {
            return false;
        }
    }
    true
}
