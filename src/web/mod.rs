//! The HTTP edge: websockets, the operator API, `/metrics`, `/healthz` and the map page; [`serve`] runs it over
//! plain HTTP or, with `http.tls`, HTTPS (`tls.rs`); `public.rs` rate-limits the public read-only endpoints.
//!
//! This file assembles the [`router`] and holds what every handler shares ([`AppError`], the token check). The
//! handlers live by resource: `operator.rs` (`/ws/operator`, the snapshot, map filters), `citizen.rs`
//! (`/ws/citizen`), `alerts.rs`, `sensors.rs`, `zones.rs` (cells, forecasts), `dissemination.rs` (CAP feed,
//! subscribers, broadcasts), `coverage.rs` (the cells and warning area a broadcast reached), `inbound.rs`
//! (partners' CAP push), `open_data.rs`, `reports.rs` (citizen reports),
//! `rules.rs` (reload), `push.rs` (Web Push subscriptions, the service worker and manifest), `demo.rs` (the demo's
//! receivers), `assets.rs` (the pages' scripts and vendored map files, compiled in); `auth.rs` (scoped tokens),
//! `liveness.rs` (pings),
//! `public.rs` (rate limits), `tls.rs` (HTTPS), `openapi.rs` (the OpenAPI document, `GET /api/v1/openapi.json`: a
//! new route needs its `#[utoipa::path]` on the handler and its name in `openapi::ApiDoc`, or `web/tests/openapi.rs`
//! fails).
//!
//! One [`AppError`] turns every refusal into a status code and a JSON body that names the problem, so handlers use
//! `?` and clients never see internals.

use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::metrics::{self, HTTP_REFUSED};

pub mod alerts;
pub mod assets;
pub mod auth;
pub mod citizen;
pub mod coverage;
pub mod demo;
pub mod dissemination;
pub mod inbound;
pub mod liveness;
pub mod open_data;
pub mod openapi;
pub mod operator;
pub mod public;
pub mod push;
pub mod reports;
pub mod rules;
pub mod sensors;
pub mod tls;
pub mod zones;

#[cfg(test)]
mod tests;

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
    match app.web.http_tls.clone() {
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

/// The demo's stand-in webhook and CBC receivers, mounted only where deliveries to ourselves are allowed.
pub(crate) const DEMO_RECEIVERS: &str = "/demo/{*receiver}";
/// The demo's stand-in vehicle-detector feed, mounted with the receivers.
pub(crate) const DEMO_VD_FEED: &str = "/demo/vd/VDLive.json";

/// The demo's stand-ins (receivers, the detector feed): mounted, and documented, only where deliveries to ourselves
/// are allowed (`WebSettings::deliver_to_self`).
pub(crate) fn is_demo_route(path: &str) -> bool {
    path.starts_with(DEMO_RECEIVERS) || path == DEMO_VD_FEED
}

/// Every path the router serves, with its handlers: the one list that the router is built from and that the route
/// tests (`web/tests/`) hold against their scope table, so that no route is added without its scope being tested.
pub(crate) fn routes() -> Vec<(&'static str, MethodRouter<Arc<App>>)> {
    vec![
        ("/", get(index)),
        ("/app", get(citizen_page)),
        ("/static/{*file}", get(assets::serve)),
        ("/ws/citizen", get(citizen::socket)),
        ("/healthz", get(healthz)),
        ("/metrics", get(metrics_text)),
        ("/ws/operator", get(operator::socket)),
        ("/api/v1/alerts", get(alerts::list)),
        ("/api/v1/alerts/{id}/comment", post(alerts::comment)),
        ("/api/v1/alerts/{id}/{action}", post(alerts::action)),
        ("/api/v1/sensors", get(sensors::list).post(sensors::add)),
        ("/api/v1/sensors/{id}", axum::routing::put(sensors::update)),
        ("/api/v1/sensors/{id}/retire", post(sensors::retire)),
        ("/api/v1/sensors/{id}/readings", get(sensors::history)),
        ("/api/v1/dead-letters", get(sensors::dead_letters)),
        ("/api/v1/zones/{id}/cells", get(zones::cells)),
        ("/api/v1/zones/{id}/forecast", post(zones::post_forecast)),
        ("/api/v1/rules/reload", post(rules::reload)),
        ("/api/v1/cap/inbound", post(inbound::push_cap)),
        ("/cap/feed.atom", get(dissemination::cap_feed)),
        ("/cap/{file}", get(dissemination::cap_message)),
        ("/opendata/alerts.geojson", get(open_data::alerts)),
        ("/opendata/sensors.geojson", get(open_data::sensors)),
        ("/api/v1/subscribers", get(dissemination::list_subscribers).post(dissemination::add_subscriber)),
        ("/api/v1/subscribers/{name}/deliveries", get(dissemination::subscriber_log)),
        ("/api/v1/subscribers/{name}/deliveries/{id}/replay", post(dissemination::replay_delivery)),
        ("/api/v1/broadcasts", get(dissemination::list_broadcasts)),
        ("/api/v1/broadcasts/{alert_id}/rebroadcast", post(dissemination::rebroadcast)),
        // What the broadcasts reached, for the map: web/coverage.rs.
        ("/api/v1/broadcasts/{alert_id}/warning-area", get(coverage::warning_area)),
        ("/api/v1/carriers/{carrier}/cells", get(coverage::carrier_cells)),
        (DEMO_RECEIVERS, post(demo::receive).get(demo::received)),
        (DEMO_VD_FEED, get(demo::vd_live)),
        // Citizen reports: web/reports.rs.
        ("/api/v1/reports", post(reports::submit)),
        ("/api/v1/reports/clusters", get(reports::list_clusters)),
        ("/api/v1/reports/clusters/{id}/{action}", post(reports::cluster_action)),
        ("/api/v1/reports/photos/{name}", get(reports::operator_photo)),
        ("/opendata/reports.geojson", get(reports::open_data)),
        ("/opendata/reports/photos/{name}", get(reports::public_photo)),
        // Web Push for citizens and the installable app: web/push.rs.
        ("/api/v1/push/key", get(push::key)),
        ("/api/v1/push/subscriptions", post(push::subscribe).delete(push::unsubscribe)),
        ("/sw.js", get(push::service_worker)),
        ("/manifest.webmanifest", get(push::manifest)),
        ("/icon.svg", get(push::icon)),
        // The contract of everything above (web/openapi.rs).
        ("/api/v1/openapi.json", get(openapi::document_json)),
    ]
}

pub fn router(app: Arc<App>) -> Router {
    let router = routes()
        .into_iter()
        // The demo's receivers only where deliveries to ourselves are allowed (`WebSettings::deliver_to_self`: `demo`,
        // or `serve` with `[deployment] drill = true`); elsewhere `/demo/…` is an open write endpoint nobody needs.
        .filter(|(path, _)| app.web.deliver_to_self || !is_demo_route(path))
        .fold(Router::new(), |router, (path, handler)| router.route(path, handler))
        .fallback(|| async { AppError::NotFound("no such path".into()) })
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&app), public::limit))
        .layer(axum::middleware::from_fn(security_headers));
    // Browsers that saw us over HTTPS once refuse plain HTTP to us for a year (only sent over HTTPS, as RFC 6797 asks).
    let router = if app.web.http_tls.is_some() {
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

/// Security headers on every response; CORS only on the public read-only feeds, which partners' pages may fetch, and
/// on the OpenAPI document (an integrator's Swagger UI or editor loads it from another origin).
async fn security_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let public = {
        let path = request.uri().path();
        path.starts_with("/cap/") || path.starts_with("/opendata/") || path == "/api/v1/openapi.json"
    };
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, axum::http::HeaderValue::from_static(value));
    };
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "no-referrer");
    // The pages run only scripts served from here (`/static/`, compiled in: web/assets.rs), never inline ones, so
    // that an alert text, a partner's warning or a report that slipped past the pages' escaping cannot run as code.
    // Inline styles stay allowed (the pages' own <style>, Leaflet's positioning). Map tiles are images from the
    // configured tile server, hence img-src https:.
    set(
        h,
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' https: data:; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
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
    /// `?token=`: for browser websockets, which cannot set headers.
    pub(crate) token: Option<String>,
}

/// Checks the operator token and that its scope covers `needed`; returns the token's name (for the audit trail) and
/// scope. Operators authenticate with `Authorization: Bearer <token>` or, on a websocket upgrade only (a browser
/// cannot set headers there), `?token=`: `query` is `None` on every other route, so that tokens do not end up in the
/// URLs that proxies, logs and browser histories keep.
pub(crate) fn require(
    app: &App,
    headers: &HeaderMap,
    query: Option<&TokenQuery>,
    needed: auth::Scope,
) -> Result<(String, auth::Scope), AppError> {
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let given = bearer.or(query.and_then(|q| q.token.as_deref())).ok_or(AppError::Unauthenticated)?;
    let (name, scope) = app.web.tokens.check(given).ok_or(AppError::Unauthenticated)?;
    if scope >= needed {
        Ok((name.to_string(), scope))
    } else {
        Err(AppError::Forbidden(needed))
    }
}

/// A websocket upgrade to one of our sockets (`/ws/…`, `Upgrade: websocket`): the one request where `?token=` counts.
fn websocket_upgrade(parts: &axum::http::request::Parts) -> bool {
    parts.method == axum::http::Method::GET
        && parts.uri.path().starts_with("/ws/")
        && parts
            .headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// axum's `Path` with our refusal: a path parameter that does not parse (not a number, not UTF-8 after
/// percent-decoding) is a JSON `400 bad_request` like every other refusal, not axum's plain-text one.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> axum::extract::FromRequestParts<S> for Path<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, AppError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| AppError::BadRequest(e.body_text()))
    }
}

/// axum's `Query` with our refusal (a repeated or malformed parameter is a JSON `400 bad_request`).
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _state: &S) -> Result<Self, AppError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Query(q.0))
            .map_err(|e| AppError::BadRequest(e.body_text()))
    }
}

/// `auth::Operator<Read>` (or `Operate`, `Admin`) in a handler's arguments: the token checked before the handler runs.
impl<S: auth::Needs> axum::extract::FromRequestParts<Arc<App>> for auth::Operator<S> {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        // `?token=` only for browser websockets; any other query parameters are the handler's.
        let query = websocket_upgrade(parts)
            .then(|| axum::extract::Query::<TokenQuery>::try_from_uri(&parts.uri).map(|q| q.0).unwrap_or_default());
        let (name, scope) = require(app, &parts.headers, query.as_ref(), S::SCOPE)?;
        Ok(auth::Operator { name, scope, _needs: std::marker::PhantomData })
    }
}

/// `GET /`: the operators' live map.
#[utoipa::path(get, path = "/", operation_id = "operator_map_page", tag = "pages",
    responses((status = 200, description = "The operators' map page", content_type = "text/html", body = String),
        (status = 429, description = "Rate limited (per address)", body = openapi::ErrorBody)))]
async fn index() -> Html<&'static str> {
    Html(include_str!("../../web/index.html"))
}

/// `GET /app`: the citizens' app.
#[utoipa::path(get, path = "/app", operation_id = "citizen_app_page", tag = "pages",
    responses((status = 200, description = "The citizens' app page", content_type = "text/html", body = String),
        (status = 429, description = "Rate limited (per address)", body = openapi::ErrorBody)))]
async fn citizen_page() -> Html<&'static str> {
    Html(include_str!("../../web/app.html"))
}

/// `GET /healthz`: liveness (not rate-limited: load balancers poll it).
#[utoipa::path(get, path = "/healthz", tag = "meta",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// `GET /metrics`: Prometheus text exposition (the metrics: docs/OPERATIONS.md).
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String),
        (status = 429, description = "Rate limited (per address; a valid operator token lifts it)", body = openapi::ErrorBody)))]
async fn metrics_text() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics::render()).into_response()
}
