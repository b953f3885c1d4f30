//! The HTTP edge: websockets, the operator API, `/metrics`, `/healthz` and the map page; [`serve`] runs it over
//! plain HTTP or, with `http.tls`, HTTPS (`tls.rs`); `public.rs` rate-limits the public read-only endpoints.
//!
//! One [`AppError`] turns every refusal into a status code and a JSON body that names the problem, so handlers use
//! `?` and clients never see internals.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::metrics::{self, HTTP_REFUSED};
use crate::server::{now_ms, App};

pub mod auth;
pub mod citizen;
pub mod liveness;
pub mod operator;
pub mod public;
pub mod reports;
pub mod rules;
pub mod tls;

/// Serves the router on `http` until `shutdown` resolves: HTTPS and WSS when the app has a TLS acceptor (`http.tls`),
/// plain HTTP otherwise. Peer addresses reach the handlers either way (rate limits).
pub async fn serve(
    app: Arc<App>,
    http: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    use std::net::SocketAddr;
    let service = router(Arc::clone(&app)).into_make_service_with_connect_info::<SocketAddr>();
    match app.http_tls.clone() {
        // `tap_io` only so that axum's `ConnectInfo<SocketAddr>` works for a listener of ours.
        Some(acceptor) => {
            let listener = tls::HttpsListener::new(http, acceptor)?.tap_io(|_| {});
            axum::serve(listener, service).with_graceful_shutdown(shutdown).await
        }
        // Alert frames are small and latency is the point: no Nagle delay waiting for the client's delayed ACK
        // (~40 ms a frame otherwise).
        None => {
            let listener = http.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, service).with_graceful_shutdown(shutdown).await
        }
    }
}

pub fn router(app: Arc<App>) -> Router {
    let router = Router::new()
        .route("/", get(index))
        .route("/app", get(citizen_page))
        .route("/ws/citizen", get(citizen::socket))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(|| async { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics::render()) }))
        .route("/ws/operator", get(operator_socket))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/{id}/comment", post(comment_alert))
        .route("/api/v1/alerts/{id}/{action}", post(alert_action))
        .route("/api/v1/sensors", get(list_sensors).post(add_sensor))
        .route("/api/v1/sensors/{id}", axum::routing::put(update_sensor))
        .route("/api/v1/sensors/{id}/retire", post(retire_sensor))
        .route("/api/v1/sensors/{id}/readings", get(sensor_history))
        .route("/api/v1/dead-letters", get(list_dead_letters))
        .route("/api/v1/zones/{id}/cells", get(zone_cells))
        .route("/api/v1/zones/{id}/forecast", post(post_forecast))
        .route("/api/v1/rules/reload", post(rules::reload))
        .route("/api/v1/cap/inbound", post(inbound_cap))
        .route("/cap/feed.atom", get(cap_feed))
        .route("/cap/{file}", get(cap_message))
        .route("/opendata/alerts.geojson", get(open_alerts))
        .route("/opendata/sensors.geojson", get(open_sensors))
        .route("/api/v1/subscribers", get(list_subscribers).post(add_subscriber))
        .route("/api/v1/subscribers/{name}/deliveries", get(subscriber_log))
        .route("/api/v1/subscribers/{name}/deliveries/{id}/replay", post(replay_delivery))
        .route("/api/v1/broadcasts", get(list_broadcasts))
        .route("/demo/{*receiver}", post(demo_receiver).get(demo_received))
        // Citizen reports (issue 11): web/reports.rs.
        .route("/api/v1/reports", post(reports::submit))
        .route("/api/v1/reports/clusters", get(reports::list_clusters))
        .route("/api/v1/reports/clusters/{id}/{action}", post(reports::cluster_action))
        .route("/api/v1/reports/photos/{name}", get(reports::operator_photo))
        .route("/opendata/reports.geojson", get(reports::open_data))
        .route("/opendata/reports/photos/{name}", get(reports::public_photo))
        .fallback(|| async { AppError::NotFound("no such path".into()) })
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&app), public::limit))
        .layer(axum::middleware::from_fn(security_headers));
    // Browsers that saw us over HTTPS once refuse plain HTTP to us for a year (only sent over HTTPS, as RFC 6797 asks).
    let router = if app.http_tls.is_some() {
        router.layer(axum::middleware::from_fn(|request: axum::extract::Request, next: axum::middleware::Next| async {
            let mut response = next.run(request).await;
            response
                .headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, axum::http::HeaderValue::from_static("max-age=31536000"));
            response
        }))
    } else {
        router
    };
    router.with_state(app)
}

/// Security headers on every response; CORS only on the public read-only feeds, which partners' pages may fetch.
async fn security_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let public = {
        let path = request.uri().path();
        path.starts_with("/cap/") || path.starts_with("/opendata/")
    };
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, axum::http::HeaderValue::from_static(value));
    };
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "no-referrer");
    // The pages are self-contained (inline script and style, no third-party code); map tiles are images from the
    // configured tile server, hence img-src https:.
    set(
        h,
        "content-security-policy",
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' https: data:; connect-src 'self' ws: wss:; frame-ancestors 'none'",
    );
    if public {
        set(h, "access-control-allow-origin", "*");
    }
    response
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("missing or wrong operator token")]
    Unauthenticated,
    #[error("this token's scope does not allow it: {0:?} needed")]
    Forbidden(auth::Scope),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    pub fn reason(&self) -> &'static str {
        match self {
            AppError::Unauthenticated => "unauthenticated",
            AppError::Forbidden(_) => "forbidden",
            AppError::NotFound(_) => "not_found",
            AppError::BadRequest(_) => "bad_request",
            AppError::Conflict(_) => "conflict",
            AppError::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match &self {
            AppError::Unauthenticated => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        HTTP_REFUSED.with_label_values(&[self.reason()]).inc();
        (status, Json(json!({ "error": self.reason(), "message": self.to_string() }))).into_response()
    }
}

#[derive(Debug, Deserialize, Default)]
pub struct TokenQuery {
    token: Option<String>,
}

/// Checks the operator token and that its scope covers `needed`. Operators authenticate with
/// `Authorization: Bearer <token>` or, where a browser websocket cannot set headers, `?token=`.
fn require(app: &App, headers: &HeaderMap, query: &TokenQuery, needed: auth::Scope) -> Result<auth::Scope, AppError> {
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let given = bearer.or(query.token.as_deref()).ok_or(AppError::Unauthenticated)?;
    let (_, scope) = app.tokens.check(given).ok_or(AppError::Unauthenticated)?;
    if scope >= needed {
        Ok(scope)
    } else {
        Err(AppError::Forbidden(needed))
    }
}

async fn index() -> Html<&'static str> {
    Html(include_str!("../../web/index.html"))
}

async fn citizen_page() -> Html<&'static str> {
    Html(include_str!("../../web/app.html"))
}

pub fn snapshot(app: &App) -> serde_json::Value {
    let mut alerts: Vec<_> = app.book.lock().active().map(|a| json!(app.alert_message(a))).collect();
    alerts.extend(app.cluster_alerts.active_operator());
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
    let external: Vec<_> = app.inbound.as_ref().map(|i| i.active()).unwrap_or_default();
    let reports: Vec<_> = app.reports.with_clusters(|book| {
        book.iter_recent()
            .into_iter()
            .filter(|c| c.state != crate::reports::ClusterState::Dismissed)
            .map(|c| c.operator_view("snapshot"))
            .collect()
    });
    json!({ "type": "snapshot", "alerts": alerts, "external_alerts": external, "reports": reports, "sensors": sensors,
            "zones": zones, "mode": app.mode,
            "tile_url": app.tile_url })
}

/// Narrows an operator socket to part of the map: `bbox=min_lon,min_lat,max_lon,max_lat`, `zones=a,b`.
#[derive(Debug, Deserialize)]
struct MapFilterQuery {
    bbox: Option<String>,
    zones: Option<String>,
}

async fn operator_socket(
    State(app): State<Arc<App>>,
    operator: auth::Operator<auth::Read>,
    Query(query): Query<MapFilterQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    // Authenticate before looking at the upgrade, so that a tokenless probe learns nothing but 401.
    let filter = operator::Filter::from_query(&app, query.bbox.as_deref(), query.zones.as_deref())
        .map_err(AppError::BadRequest)?;
    match ws {
        Ok(ws) => Ok(ws.on_upgrade(move |socket| operator::session(app, socket, operator.scope, filter))),
        Err(rejection) => Ok(rejection.into_response()),
    }
}

async fn list_alerts(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Read>,
) -> Result<impl IntoResponse, AppError> {
    let mut alerts: Vec<_> = app.book.lock().all().map(|a| json!(app.alert_message(a))).collect();
    alerts.extend(app.cluster_alerts.all_operator());
    Ok(Json(json!({ "alerts": alerts })))
}

async fn alert_action(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Operate>,
    Path((id, action)): Path<(String, String)>,
) -> Result<impl IntoResponse, AppError> {
    Ok(Json(alert_command(&app, &id, &action, None, "operator-api")?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommentBody {
    text: String,
}

/// `POST /api/v1/alerts/{id}/comment` with `{"text": "…"}`: a note in the alert's journal, seen by every operator.
async fn comment_alert(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Operate>,
    Path(id): Path<String>,
    body: Result<Json<CommentBody>, JsonRejection>,
) -> Result<impl IntoResponse, AppError> {
    let Json(body) = body.map_err(|e| AppError::BadRequest(format!("comment body: {}", e.body_text())))?;
    Ok(Json(alert_command(&app, &id, "comment", Some(&body.text), "operator-api")?))
}

/// An operator's lifecycle command, shared by the HTTP API and the operator socket.
pub fn alert_command(
    app: &App,
    id: &str,
    action: &str,
    text: Option<&str>,
    actor: &str,
) -> Result<serde_json::Value, AppError> {
    use alerting::alert::BookError;
    let short = |s: &str, n: usize| s.chars().take(n).collect::<String>();
    let result = {
        let mut book = app.book.lock();
        match action {
            "ack" => book.acknowledge_by(id, actor, now_ms()),
            "cancel" => book.cancel_by(id, actor, text, now_ms()),
            "comment" => book.comment(id, actor, text.unwrap_or_default(), now_ms()),
            "approve" => book.approve(id, actor, now_ms()),
            other => {
                return Err(AppError::BadRequest(format!(
                    "unknown action `{}`: use ack, comment, approve or cancel",
                    short(other, 40)
                )))
            }
        }
    };
    let alert = result.map_err(|e| match e {
        BookError::NotFound(_) => AppError::NotFound(format!("no alert `{}`", short(id, 80))),
        BookError::NotActive(_)
        | BookError::NothingToApprove(_)
        | BookError::HazardActive(_)
        | BookError::TooManyReports(_) => AppError::Conflict(e.to_string()),
        BookError::BadComment(_) => AppError::BadRequest(e.to_string()),
        BookError::Journal(_) => {
            tracing::error!(error = %e, "alert journal");
            AppError::Internal("the alert journal could not be written".into())
        }
    })?;
    app.publish(&alert);
    Ok(serde_json::to_value(app.alert_message(&alert)).unwrap_or_default())
}

async fn list_sensors(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Read>,
) -> Result<impl IntoResponse, AppError> {
    let sensors: Vec<_> = app.registry().read().iter().cloned().collect();
    Ok(Json(json!({ "sensors": sensors })))
}

async fn list_dead_letters(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Read>,
) -> Result<impl IntoResponse, AppError> {
    Ok(Json(json!({ "dead_letters": app.ingest.dead_letters() })))
}

/// Most hexagons sent for one zone; larger zones are sent compacted (coarser parents), which draws the same area.
const MAX_HEXES: usize = 4000;

/// The H3 cells of a zone as a GeoJSON MultiPolygon, for shading hazard areas on the map.
async fn zone_cells(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Read>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    let zone = app
        .geo
        .zone(&id)
        .ok_or_else(|| AppError::NotFound(format!("no zone `{}`", id.chars().take(80).collect::<String>())))?;
    let mut cells: Vec<geo_index::CellIndex> = zone.cells().cells().collect();
    if cells.len() > MAX_HEXES {
        // Compaction needs a duplicate-free set of one resolution, which a zone's cover is.
        if geo_index::CellIndex::compact(&mut cells).is_err() {
            cells.truncate(MAX_HEXES);
        }
    }
    let polygons: Vec<_> = cells
        .into_iter()
        .take(MAX_HEXES)
        .map(|cell| {
            let mut ring: Vec<[f64; 2]> = cell.boundary().iter().map(|ll| [ll.lng(), ll.lat()]).collect();
            if let Some(first) = ring.first().copied() {
                ring.push(first);
            }
            vec![ring]
        })
        .collect();
    Ok(Json(json!({ "type": "MultiPolygon", "coordinates": polygons })))
}

#[derive(Debug, Deserialize, Default)]
pub struct SourceQuery {
    source: Option<String>,
}

/// `POST /api/v1/cap/inbound`: a partner agency pushes one CAP 1.2 message, authenticated per source (bearer token or
/// HMAC signature, see `config/inbound.toml`).
async fn inbound_cap(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<SourceQuery>,
    body: axum::body::Bytes,
) -> Response {
    let Some(inbound) = &app.inbound else {
        return AppError::NotFound("no inbound CAP sources are configured".into()).into_response();
    };
    match inbound.push(query.source.as_deref(), &headers, &body, now_ms()) {
        Ok(outcome) => (StatusCode::OK, Json(serde_json::to_value(&outcome).unwrap_or_default())).into_response(),
        Err(e) => {
            HTTP_REFUSED.with_label_values(&["inbound_cap"]).inc();
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            (status, Json(json!({ "error": e.reason(), "message": e.to_string() }))).into_response()
        }
    }
}

impl From<ingest::registry::RegistryError> for AppError {
    fn from(e: ingest::registry::RegistryError) -> Self {
        use ingest::registry::RegistryError as E;
        match e {
            E::Exists(_) => AppError::Conflict(e.to_string()),
            E::NotFound(_) => AppError::NotFound(e.to_string()),
            E::Invalid { .. } => AppError::BadRequest(e.to_string()),
            E::Persist(_) => {
                tracing::error!(error = %e, "sensor registry not saved");
                AppError::Internal("the registry could not be saved".into())
            }
        }
    }
}

/// A sensor as operators send it: the registry's own shape, every field checked (unknown fields refused).
fn sensor_body(body: &[u8]) -> Result<ingest::Sensor, AppError> {
    serde_json::from_slice(body).map_err(|e| AppError::BadRequest(format!("sensor: {e}")))
}

async fn add_sensor(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Admin>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, AppError> {
    let sensor = sensor_body(&body)?;
    app.registry().write().add(sensor.clone())?;
    Ok((StatusCode::CREATED, Json(json!({ "sensor": sensor }))))
}

async fn update_sensor(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Admin>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, AppError> {
    let sensor = sensor_body(&body)?;
    if sensor.id != id {
        return Err(AppError::BadRequest(format!("`id`: body says `{}`, path says `{}`", sensor.id, id)));
    }
    app.registry().write().update(sensor.clone())?;
    Ok(Json(json!({ "sensor": sensor })))
}

async fn retire_sensor(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Admin>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    app.registry().write().retire(&id)?;
    Ok(Json(json!({ "retired": id })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    token: Option<String>,
    metric: String,
    /// Unix milliseconds or RFC 3339; default: 24 h before `to`.
    from: Option<String>,
    /// Unix milliseconds or RFC 3339; default: now.
    to: Option<String>,
    /// Bucket width in milliseconds (min/max/mean/sum per bucket); absent: raw points.
    step: Option<i64>,
}

fn parse_instant(text: &str, field: &str) -> Result<i64, AppError> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| AppError::BadRequest(format!("`{field}`: expected Unix milliseconds or RFC 3339 with an offset")))
}

/// `GET /api/v1/sensors/{id}/readings?metric=&from=&to=&step=`: a sensor's history from the embedded store.
async fn sensor_history(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, AppError> {
    let Query(q) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    require(&app, &headers, &TokenQuery { token: q.token.clone() }, auth::Scope::Read)?;
    let metric = ingest::Metric::from_name(&q.metric).ok_or_else(|| {
        AppError::BadRequest(format!(
            "`metric`: `{}` is not in the vocabulary",
            q.metric.chars().take(40).collect::<String>()
        ))
    })?;
    if app.registry().read().get(&id).is_none() {
        return Err(AppError::NotFound(format!("no sensor `{}`", id.chars().take(40).collect::<String>())));
    }
    let to = q.to.as_deref().map(|t| parse_instant(t, "to")).transpose()?.unwrap_or_else(now_ms);
    let from = q.from.as_deref().map(|t| parse_instant(t, "from")).transpose()?.unwrap_or(to - 86_400_000);
    if from >= to {
        return Err(AppError::BadRequest("`from` must be before `to`".into()));
    }
    if q.step.is_some_and(|s| s <= 0) {
        return Err(AppError::BadRequest("`step` must be a positive number of milliseconds".into()));
    }
    let store = app.store.clone().ok_or_else(|| AppError::NotFound("no readings store (no data dir)".into()))?;
    let history = tokio::task::spawn_blocking(move || store.history(&id, metric, from, to, q.step))
        .await
        .map_err(|_| AppError::Internal("history query failed".into()))?
        .map_err(|e| match e {
            store::StoreError::BadQuery(_) | store::StoreError::TooManyPoints { .. } => {
                AppError::BadRequest(e.to_string())
            }
            other => {
                tracing::error!(error = %other, "history query");
                AppError::Internal("history query failed".into())
            }
        })?;
    Ok(Json(history))
}

fn dissemination(app: &App) -> Result<&dissemination::Dissemination, AppError> {
    app.dissemination.as_ref().ok_or_else(|| AppError::NotFound("dissemination is not configured".into()))
}

/// `GET /cap/feed.atom`: public, cacheable (ETag / If-None-Match).
async fn cap_feed(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, AppError> {
    let d = dissemination(&app)?;
    let etag = d.feed_etag();
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/atom+xml; charset=utf-8".to_string()),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, "public, max-age=30".to_string()),
        ],
        d.atom_feed(),
    )
        .into_response())
}

/// `GET /cap/{identifier}.xml`: one released CAP message (messages held by an approval gate are not public).
async fn cap_message(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(file): Path<String>,
) -> Result<Response, AppError> {
    let d = dissemination(&app)?;
    let id =
        file.strip_suffix(".xml").ok_or_else(|| AppError::NotFound("CAP messages are /cap/{identifier}.xml".into()))?;
    let xml = d
        .cap_xml(id)
        .ok_or_else(|| AppError::NotFound(format!("no CAP message `{}`", id.chars().take(80).collect::<String>())))?;
    // Messages never change once written: the identifier is a strong validator.
    let etag = format!("\"{}\"", id);
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/cap+xml; charset=utf-8".to_string()),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, "public, max-age=86400".to_string()),
        ],
        xml,
    )
        .into_response())
}

/// `GET /opendata/alerts.geojson`: active alerts that the public may see, with their areas.
async fn open_alerts(State(app): State<Arc<App>>) -> impl IntoResponse {
    let features: Vec<_> = app
        .book
        .lock()
        .active()
        .filter(|a| a.is_public())
        .map(|a| {
            let m = app.alert_message(a);
            json!({"type": "Feature", "id": m.id, "geometry": m.area, "properties": {
                "event": m.event, "state": m.state, "mode": m.mode, "severity": m.severity, "urgency": m.urgency,
                "certainty": m.certainty, "headline_zh": m.headlines.zh_tw, "headline_en": m.headlines.en,
                "sent": m.sent, "version": m.version, "area": m.area_name}})
        })
        .collect();
    ([(header::CONTENT_TYPE, "application/geo+json")], Json(json!({"type": "FeatureCollection", "features": features})))
}

/// `GET /opendata/sensors.geojson`: sensors with their latest values.
async fn open_sensors(State(app): State<Arc<App>>) -> impl IntoResponse {
    let live = app.live.read();
    let features: Vec<_> = app
        .registry()
        .read()
        .iter()
        .filter(|s| !s.retired)
        .map(|s| {
            let l = live.get(&s.id);
            json!({"type": "Feature", "id": s.id, "geometry": {"type": "Point", "coordinates": [s.lon, s.lat]},
                   "properties": {"kind": s.kind, "agency": s.agency, "latest": l.map(|l| &l.latest),
                                  "last_seen_ms": l.and_then(|l| l.last_seen_ms)}})
        })
        .collect();
    ([(header::CONTENT_TYPE, "application/geo+json")], Json(json!({"type": "FeatureCollection", "features": features})))
}

async fn list_subscribers(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Read>,
) -> Result<impl IntoResponse, AppError> {
    Ok(Json(json!({ "subscribers": dissemination(&app)?.subscribers() })))
}

async fn add_subscriber(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Admin>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, AppError> {
    let d = dissemination(&app)?;
    let text = std::str::from_utf8(&body).map_err(|_| AppError::BadRequest("body: not UTF-8".into()))?;
    let input = dissemination::SubscriberInput::from_json(text).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let status = d.add_subscriber(input).map_err(|e| AppError::BadRequest(e.to_string()))?;
    Ok((StatusCode::CREATED, Json(json!({ "subscriber": status }))))
}

async fn subscriber_log(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Read>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    Ok(Json(json!({ "deliveries": dissemination(&app)?.delivery_log(&name) })))
}

async fn replay_delivery(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Operate>,
    Path((name, id)): Path<(String, u64)>,
) -> Result<impl IntoResponse, AppError> {
    let queued = dissemination(&app)?.replay(&name, id).map_err(|e| AppError::BadRequest(e.to_string()))?;
    Ok(Json(json!({ "replayed": queued })))
}

async fn list_broadcasts(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Read>,
) -> Result<impl IntoResponse, AppError> {
    Ok(Json(json!({ "broadcasts": dissemination(&app)?.broadcasts() })))
}

/// The demo's stand-ins for an agency's webhook receiver and the carriers' CBCs: they keep what arrives (newest 200)
/// so that the demo shows deliveries end to end. Not part of a production deployment's contract.
async fn demo_receiver(
    State(app): State<Arc<App>>,
    Path(receiver): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let signature = headers.get("x-dc-signature").and_then(|v| v.to_str().ok()).map(str::to_string);
    let text = String::from_utf8_lossy(&body);
    let mut got = app.demo_received.lock();
    if got.len() >= 200 {
        got.remove(0);
    }
    got.push(json!({"receiver": receiver, "bytes": body.len(), "signature": signature, "body": text.chars().take(32 * 1024).collect::<String>()}));
    StatusCode::NO_CONTENT
}

async fn demo_received(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Read>,
) -> Result<impl IntoResponse, AppError> {
    Ok(Json(json!({ "received": *app.demo_received.lock() })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Forecast {
    /// Forecast rainfall (mm) for the zone, compared with its debris-flow threshold (SWCB yellow).
    value: f64,
    /// When the forecast was issued (Unix ms); default now.
    ts: Option<i64>,
}

/// `POST /api/v1/zones/{id}/forecast` `{"value": 320}`: an operator (or an agency's feed) posts a forecast; rules that
/// take forecasts (debris-flow yellow) act on it at once.
async fn post_forecast(
    State(app): State<Arc<App>>,
    _operator: auth::Operator<auth::Operate>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, AppError> {
    let forecast: Forecast =
        serde_json::from_slice(&body).map_err(|e| AppError::BadRequest(format!("forecast: {e}")))?;
    let mut findings = Vec::new();
    app.engine.lock().post_forecast(&id, forecast.value, forecast.ts.unwrap_or_else(now_ms), &mut findings).map_err(
        |e| match e {
            alerting::engine::ForecastError::UnknownZone(_) => AppError::NotFound(e.to_string()),
            alerting::engine::ForecastError::BadValue(_) => AppError::BadRequest(e.to_string()),
        },
    )?;
    let changed = app.book.lock().apply_all(findings, app.mode);
    for alert in &changed {
        app.publish(alert);
    }
    let ids: Vec<_> = changed.iter().map(|a| json!({"id": a.id, "version": a.version, "event": a.event})).collect();
    Ok(Json(json!({ "zone": id, "alerts": ids })))
}
