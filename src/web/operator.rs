//! The operators' channel, `/ws/operator`: a snapshot on connect, then every alert change and coalesced sensor
//! updates; commands (ack, comment, approve, cancel) over the same socket. A connection may be narrowed to a bounding
//! box and/or a set of zones (a region), at connect time (`?bbox=…&zones=…`) or later with a `filter` message; the
//! snapshot and every delta are then cut to what lies there.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use geo::{BoundingRect, Intersects};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::app::App;
use crate::audience::{AlertBroadcast, MapDelta};
use crate::metrics::{OPERATOR_SOCKETS, WS_DROPPED};
use crate::web::alerts::alert_command;
use crate::web::auth::Scope;
use crate::web::liveness::{Liveness, Probe};
use crate::web::{auth, AppError, Query};

/// A map that has not taken a frame for this long has stopped reading: drop it rather than hold its backlog.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Most zones one filter may name.
const MAX_FILTER_ZONES: usize = 200;

#[derive(Debug, Deserialize)]
struct Command {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    bbox: Option<Vec<f64>>,
    #[serde(default)]
    zones: Option<Vec<String>>,
}

/// What part of the country one operator socket shows. The empty filter shows everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `[min_lon, min_lat, max_lon, max_lat]`.
    bbox: Option<geo::Rect<f64>>,
    /// A region as zone ids: points inside one of them, and those zones, pass.
    zones: Option<HashSet<String>>,
    /// The zones that pass, worked out once so that matching an alert is a set lookup.
    passing_zones: HashSet<String>,
}

impl Filter {
    /// `bbox`: four numbers; `zones`: known zone ids. Either, both (an item must pass both) or neither.
    pub fn new(app: &App, bbox: Option<&[f64]>, zones: Option<&[String]>) -> Result<Self, String> {
        let bbox = match bbox {
            None => None,
            Some(&[min_lon, min_lat, max_lon, max_lat]) => {
                let finite = [min_lon, min_lat, max_lon, max_lat].iter().all(|v| v.is_finite());
                let ordered = min_lon <= max_lon && min_lat <= max_lat;
                let in_range = (-180.0..=180.0).contains(&min_lon)
                    && (-180.0..=180.0).contains(&max_lon)
                    && (-90.0..=90.0).contains(&min_lat)
                    && (-90.0..=90.0).contains(&max_lat);
                if !(finite && ordered && in_range) {
                    return Err("bbox: give min_lon,min_lat,max_lon,max_lat in degrees, min before max".into());
                }
                Some(geo::Rect::new(geo::coord! { x: min_lon, y: min_lat }, geo::coord! { x: max_lon, y: max_lat }))
            }
            Some(other) => return Err(format!("bbox: give 4 numbers, not {}", other.len())),
        };
        let zones = match zones {
            None => None,
            Some(ids) if ids.len() > MAX_FILTER_ZONES => {
                return Err(format!("zones: at most {MAX_FILTER_ZONES}, not {}", ids.len()))
            }
            Some(ids) => {
                if let Some(unknown) = ids.iter().find(|id| app.geo.zone(id).is_none()) {
                    return Err(format!("zones: no zone `{}`", unknown.chars().take(80).collect::<String>()));
                }
                Some(ids.iter().cloned().collect::<HashSet<_>>())
            }
        };
        let passing_zones = app
            .geo
            .zones()
            .filter(|z| zones.as_ref().is_none_or(|ids| ids.contains(&z.id)))
            .filter(|z| {
                bbox.is_none_or(|b| {
                    z.geometry.bounding_rect().is_some_and(|r| r.intersects(&b) && z.geometry.intersects(&b))
                })
            })
            .map(|z| z.id.clone())
            .collect();
        Ok(Self { bbox, zones, passing_zones })
    }

    /// `bbox=min_lon,min_lat,max_lon,max_lat` and `zones=a,b` as given in the socket's query string.
    pub fn from_query(app: &App, bbox: Option<&str>, zones: Option<&str>) -> Result<Self, String> {
        let bbox = match bbox {
            None => None,
            Some(text) => Some(
                text.split(',')
                    .map(|v| v.trim().parse::<f64>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| "bbox: give min_lon,min_lat,max_lon,max_lat as numbers".to_string())?,
            ),
        };
        let zones: Option<Vec<String>> =
            zones.map(|z| z.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect());
        Self::new(app, bbox.as_deref(), zones.as_deref())
    }

    pub fn is_open(&self) -> bool {
        self.bbox.is_none() && self.zones.is_none()
    }

    pub fn point(&self, app: &App, lat: f64, lon: f64) -> bool {
        if let Some(b) = &self.bbox {
            if !b.intersects(&geo::coord! { x: lon, y: lat }) {
                return false;
            }
        }
        match &self.zones {
            None => true,
            Some(ids) => app.geo.zones_containing(lat, lon).iter().any(|z| ids.contains(&z.id)),
        }
    }

    pub fn zone(&self, id: &str) -> bool {
        self.is_open() || self.passing_zones.contains(id)
    }

    /// An alert's area: a zone passes by its geometry, an H3 cell by its centre. An area we cannot place is shown:
    /// an operator must not miss a hazard because of a map filter.
    pub fn area(&self, app: &App, area_id: &str) -> bool {
        if self.is_open() || self.passing_zones.contains(area_id) || app.geo.zone(area_id).is_some() {
            return self.zone(area_id);
        }
        match area_id.parse::<geo_index::CellIndex>() {
            Ok(cell) => {
                let centre = geo_index::LatLng::from(cell);
                self.point(app, centre.lat(), centre.lng())
            }
            Err(_) => true,
        }
    }

    fn alert(&self, app: &App, alert: &AlertBroadcast) -> bool {
        self.is_open() || alert.area_ids.is_empty() || alert.area_ids.iter().any(|a| self.area(app, a))
    }

    fn describe(&self) -> serde_json::Value {
        json!({
            "bbox": self.bbox.map(|b| [b.min().x, b.min().y, b.max().x, b.max().y]),
            "zones": self.zones.as_ref().map(|z| { let mut v: Vec<_> = z.iter().collect(); v.sort(); v }),
        })
    }
}

/// The snapshot cut to `filter`, as the first frame and as the answer to a `filter` message. It names the socket's
/// token and scope, so that the map offers only the actions the server would accept (a read token sees no buttons).
fn filtered_snapshot(app: &App, filter: &Filter, operator: &str, scope: Scope) -> String {
    let mut snap = snapshot(app);
    snap["operator"] = json!(operator);
    snap["scope"] = json!(scope);
    if !filter.is_open() {
        let keep = |list: &mut serde_json::Value, pass: &dyn Fn(&serde_json::Value) -> bool| {
            if let Some(items) = list.as_array_mut() {
                items.retain(|v| pass(v));
            }
        };
        let at = |v: &serde_json::Value, lat: &str, lon: &str| v[lat].as_f64().zip(v[lon].as_f64());
        keep(&mut snap["sensors"], &|s| {
            let position = at(&s["position"], "lat", "lon").or_else(|| at(s, "lat", "lon"));
            position.is_some_and(|(lat, lon)| filter.point(app, lat, lon))
        });
        keep(&mut snap["zones"], &|z| z["id"].as_str().is_some_and(|id| filter.zone(id)));
        keep(&mut snap["alerts"], &|a| a["area_id"].as_str().is_none_or(|id| filter.area(app, id)));
        keep(&mut snap["external_alerts"], &|a| match a["zone_ids"].as_array() {
            Some(zones) if !zones.is_empty() => zones.iter().filter_map(|z| z.as_str()).any(|z| filter.zone(z)),
            _ => true,
        });
        keep(&mut snap["reports"], &|r| at(r, "lat", "lon").is_none_or(|(lat, lon)| filter.point(app, lat, lon)));
    }
    snap["filter"] = filter.describe();
    snap.to_string()
}

async fn send(socket: &mut WebSocket, text: String) -> bool {
    matches!(tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await, Ok(Ok(())))
}

pub(crate) async fn ping(socket: &mut WebSocket) -> bool {
    matches!(tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Ping(Default::default()))).await, Ok(Ok(())))
}

/// `operator` names the token (the audit trail's actor for commands sent on this socket), `scope` is what it may do.
pub async fn session(app: Arc<App>, mut socket: WebSocket, operator: String, scope: Scope, mut filter: Filter) {
    OPERATOR_SOCKETS.inc();
    // Subscribe before the snapshot so that nothing falls between the two.
    let mut alerts = app.channels.alerts.subscribe();
    let mut sensors = app.channels.map.subscribe();
    let first = filtered_snapshot(&app, &filter, &operator, scope);
    let mut liveness = Liveness::new(app.web.ws_idle_timeout);
    if send(&mut socket, first).await {
        loop {
            let frame: Option<String> = tokio::select! {
                next = alerts.recv() => match next {
                    Ok(alert) => filter.alert(&app, &alert).then(|| alert.operator.clone()),
                    Err(RecvError::Lagged(_)) => {
                        // A client this far behind would show a wrong map; drop it and let it reload the snapshot.
                        WS_DROPPED.with_label_values(&["operator", "lagged"]).inc();
                        break;
                    }
                    Err(RecvError::Closed) => break,
                },
                next = sensors.recv() => match next {
                    Ok(delta) => delta
                        .at
                        .is_none_or(|(lat, lon)| filter.point(&app, lat, lon))
                        .then(|| delta.frame.clone()),
                    // Sensor frames are coalesced state: missing some is harmless, the next one carries the latest.
                    Err(RecvError::Lagged(_)) => None,
                    Err(RecvError::Closed) => break,
                },
                incoming = socket.recv() => {
                    liveness.heard();
                    match incoming {
                        Some(Ok(Message::Text(text))) => Some(command(&app, &operator, scope, &text, &mut filter)),
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => None,
                    }
                },
                probe = liveness.tick() => match probe {
                    Probe::Ping => {
                        if !ping(&mut socket).await {
                            WS_DROPPED.with_label_values(&["operator", "send_timeout"]).inc();
                            break;
                        }
                        None
                    }
                    Probe::Dead => {
                        WS_DROPPED.with_label_values(&["operator", "unresponsive"]).inc();
                        break;
                    }
                },
            };
            if let Some(frame) = frame {
                if !send(&mut socket, frame).await {
                    // Not taking frames: its backlog must not grow, nor hold anyone else up.
                    WS_DROPPED.with_label_values(&["operator", "send_timeout"]).inc();
                    break;
                }
            }
        }
    }
    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(None))).await;
    OPERATOR_SOCKETS.dec();
}

/// `{"type":"ack"|"approve"|"cancel","id":"…"}`, `{"type":"comment","id":"…","text":"…"}` → the same effect as the
/// HTTP API, with the token's scope checked the same way; `{"type":"filter","bbox":[…],"zones":[…]}` narrows the
/// socket (no field: everything) and answers with a new snapshot. Replies with a result frame. The alert journal names
/// `operator`, the socket's token.
fn command(app: &App, operator: &str, scope: Scope, text: &str, filter: &mut Filter) -> String {
    let cmd: Command = match serde_json::from_str(text) {
        Ok(c) => c,
        Err(e) => return json!({"type": "error", "reason": "malformed", "message": e.to_string()}).to_string(),
    };
    if cmd.kind == "filter" {
        return match Filter::new(app, cmd.bbox.as_deref(), cmd.zones.as_deref()) {
            Ok(new) => {
                *filter = new;
                filtered_snapshot(app, filter, operator, scope)
            }
            Err(message) => json!({"type": "error", "reason": "bad_filter", "message": message}).to_string(),
        };
    }
    if scope < Scope::Operate {
        return json!({"type": "error", "reason": "forbidden", "command": cmd.kind,
                      "message": "this token may watch, not act: the operate scope is needed"})
        .to_string();
    }
    match alert_command(app, &cmd.id, &cmd.kind, cmd.text.as_deref(), operator) {
        Ok(message) => json!({"type": "result", "ok": true, "command": cmd.kind, "alert": message}).to_string(),
        Err(e) => json!({"type": "error", "reason": e.reason(), "message": e.to_string()}).to_string(),
    }
}

pub fn snapshot(app: &App) -> serde_json::Value {
    let mut alerts: Vec<_> = app.alerts.book.lock().active().map(|a| json!(app.alert_message(a))).collect();
    alerts.extend(app.remote_alerts.active_operator());
    let live = app.live.sensors.read();
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
                "throttled": l.and_then(|l| l.throttled),
            })
        })
        .collect();
    let zones: Vec<_> = app
        .geo
        .zones()
        .map(|z| {
            let mut zone = json!({"id": z.id, "name": z.name, "name_en": z.name_en, "kind": z.kind, "geocode": z.geocode, "area": z.geojson_geometry()});
            // Road segments: the road's names and the centre line, so the map draws the road and points a hazard's
            // link (`caused_by`) at it rather than at the middle of its buffer.
            if let Some(road) = &z.road {
                zone["road"] = json!(road);
                zone["segment"] = z.centre_line.as_ref().map_or(serde_json::Value::Null, super::open_data::segment_geojson);
            }
            zone
        })
        .collect();
    // What the public has now: one warning per hazard and area (`alerting::publication`).
    let public: Vec<_> = {
        let warnings: Vec<_> = app.alerts.publication.lock().active().cloned().collect();
        let mut public: Vec<_> = warnings.iter().map(|w| json!(app.warning_message(w))).collect();
        // On a fan-out node: the cluster's warnings.
        public.extend(app.remote_alerts.active_warnings());
        public
    };
    let external: Vec<_> = app.partners.inbound.as_ref().map(|i| i.active()).unwrap_or_default();
    let reports: Vec<_> = app.reports.with_clusters(|book| {
        book.iter_recent()
            .into_iter()
            .filter(|c| c.state != crate::reports::ClusterState::Dismissed)
            .map(|c| c.operator_view("snapshot"))
            .collect()
    });
    json!({ "type": "snapshot", "alerts": alerts, "public_warnings": public, "external_alerts": external, "reports": reports, "sensors": sensors,
            "zones": zones, "mode": app.alerts.mode,
            "tile_url": app.web.tile_url })
}

/// Narrows an operator socket to part of the map: `bbox=min_lon,min_lat,max_lon,max_lat`, `zones=a,b`.
#[derive(Debug, Deserialize)]
pub struct MapFilterQuery {
    bbox: Option<String>,
    zones: Option<String>,
}

/// `GET /ws/operator`: the operators' websocket (messages: docs/API.md, "Operators").
#[utoipa::path(get, path = "/ws/operator", operation_id = "operator_socket", tag = "websockets", security(("operator_token" = ["read"])),
    params(("bbox" = Option<String>, Query, description = "`min_lon,min_lat,max_lon,max_lat`: only what lies in the box"),
        ("zones" = Option<String>, Query, description = "Comma-separated zone ids (at most 200)"),
        ("token" = Option<String>, Query, description = "The operator token, for browsers (which cannot set headers on an upgrade); only here")),
    responses((status = 101, description = "Switching protocols: the operator socket"),
        (status = 400, description = "`bad_request`: a bad filter (JSON); or not a websocket upgrade (plain text)",
            content((super::openapi::ErrorBody = "application/json"), (String = "text/plain"))),
        (status = 401, body = super::openapi::ErrorBody), (status = 403, body = super::openapi::ErrorBody),
        (status = 426, description = "The connection cannot be upgraded", content_type = "text/plain", body = String)))]
pub async fn socket(
    State(app): State<Arc<App>>,
    operator: auth::Operator<auth::Read>,
    Query(query): Query<MapFilterQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    // Authenticate before looking at the upgrade, so that a tokenless probe learns nothing but 401.
    let filter =
        Filter::from_query(&app, query.bbox.as_deref(), query.zones.as_deref()).map_err(AppError::BadRequest)?;
    match ws {
        Ok(ws) => Ok(ws.on_upgrade(move |socket| session(app, socket, operator.name, operator.scope, filter))),
        Err(rejection) => Ok(rejection.into_response()),
    }
}

/// Sends at most one update per sensor per `every`, however fast it reports: a busy map stays readable and cheap.
pub async fn coalesce_sensor_updates(app: Arc<App>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let changed: Vec<String> = app.live.dirty.lock().drain().collect();
        if changed.is_empty() || app.channels.map.receiver_count() == 0 {
            continue;
        }
        let live = app.live.sensors.read();
        let registry = app.registry().read();
        for id in changed {
            if let Some(state) = live.get(&id) {
                let at = state.position.or_else(|| registry.get(&id).map(|s| (s.lat, s.lon)));
                let frame = serde_json::json!({"type": "sensor", "id": id, "latest": state.latest,
                    "last_seen_ms": state.last_seen_ms, "online": state.online, "battery_v": state.battery_v,
                    "position": state.position.map(|(lat, lon)| serde_json::json!({"lat": lat, "lon": lon}))});
                let _ = app.channels.map.send(Arc::new(MapDelta { at, frame: frame.to_string() }));
            }
        }
    }
}
