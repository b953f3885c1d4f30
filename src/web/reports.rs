//! Citizen reports over HTTP (issue 11; the logic is in `crate::reports`).
//!
//! - `POST /api/v1/reports` — anyone. JSON body (see `reports/report.rs`); optional `X-Client-Id` (or
//!   `X-App-Token`) header: the app's own random id, the key of the per-client rate limit. `201` with the cluster
//!   the report joined; refusals are `4xx` with `{"error": reason, "field": …, "message": …}`.
//! - `GET /api/v1/reports/clusters?state=open|verified|dismissed` — operators: the clusters, newest first.
//! - `POST /api/v1/reports/clusters/{id}/verify` (optional `{"summary": "…", "publish_photos": true}`),
//!   `…/dismiss`, `…/attach` (`{"alert_id": "…"}`) — operators with the `operate` scope (the rest: `read`).
//! - `GET /api/v1/reports/photos/{name}` — operators; `GET /opendata/reports/photos/{name}` — anyone, only photos an
//!   operator published with a verified cluster.
//! - `GET /opendata/reports.geojson` — anyone: verified clusters, without texts, people or exact positions.
//!
//! Every change to a cluster goes to the operator websockets as `{"type":"report",…}` through `App::sensors_tx`.
//!
//! Report text is plain text. All JSON from here escapes `<`, `>` and `&` (as `\u003c`…), so that even a page that
//! wrongly parses a response as HTML finds no tag in it; and responses say `nosniff`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::metrics::{REPORTS_ACCEPTED, REPORTS_FLAGGED, REPORTS_REFUSED};
use crate::reports::{parse_report, ClusterError, ClusterState, Refusal};
use crate::server::{now_ms, App};
use crate::web::auth::Scope;
use crate::web::{authorise, require, AppError, TokenQuery};

/// The peer's address when the server runs with connection info
/// (`into_make_service_with_connect_info::<SocketAddr>()`); `None` otherwise, and then only per-client limits apply.
pub struct PeerAddr(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerAddr(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)))
    }
}

/// Everything a report handler can answer with besides success.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    App(#[from] AppError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("the photo could not be stored")]
    Storage,
}

impl IntoResponse for ReportError {
    fn into_response(self) -> Response {
        match self {
            ReportError::App(e) => e.into_response(),
            ReportError::Cluster(ClusterError::NotFound(id)) => {
                AppError::NotFound(format!("no report cluster `{id}`")).into_response()
            }
            ReportError::Cluster(e @ ClusterError::Conflict { .. }) => {
                safe_json(StatusCode::CONFLICT, &json!({"error": "conflict", "message": e.to_string()}))
            }
            ReportError::Storage => {
                REPORTS_REFUSED.with_label_values(&["storage"]).inc();
                let body = json!({"error": "storage", "message": "the photo could not be stored; try again later"});
                safe_json(StatusCode::SERVICE_UNAVAILABLE, &body)
            }
            ReportError::Refused(refusal) => {
                REPORTS_REFUSED.with_label_values(&[refusal.reason()]).inc();
                let status = match &refusal {
                    Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
                    Refusal::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                    Refusal::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    Refusal::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
                    Refusal::Field { reason: "photo_too_large", .. } => StatusCode::PAYLOAD_TOO_LARGE,
                    Refusal::Field { reason: "bad_client_id", .. } => StatusCode::BAD_REQUEST,
                    Refusal::Field { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                };
                let body = json!({"error": refusal.reason(), "field": refusal.field(), "message": refusal.to_string()});
                let mut response = safe_json(status, &body);
                if let Refusal::RateLimited { retry_after_s, .. } = refusal {
                    if let Ok(v) = HeaderValue::from_str(&retry_after_s.to_string()) {
                        response.headers_mut().insert(header::RETRY_AFTER, v);
                    }
                }
                response
            }
        }
    }
}

/// JSON with `<`, `>` and `&` escaped. Those three characters can only occur inside JSON strings, so replacing them
/// with their `\u` escapes keeps the document's meaning exactly.
pub fn escape_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c => out.push(c),
        }
    }
    out
}

fn safe_json(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        escape_json(&value.to_string()),
    )
        .into_response()
}

/// Sends a cluster frame to every operator socket (nobody connected is normal).
fn push_to_operators(app: &App, frame: &Value) {
    if app.sensors_tx.receiver_count() > 0 {
        let at = frame["lat"].as_f64().zip(frame["lon"].as_f64());
        let delta = crate::server::MapDelta { at, frame: escape_json(&frame.to_string()) };
        let _ = app.sensors_tx.send(Arc::new(delta));
    }
}

/// The client id: the app's `X-Client-Id`, or its `X-App-Token` (accepted, not yet checked against issued tokens).
fn client_id(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let Some((name, value)) = ["x-client-id", "x-app-token"].iter().find_map(|n| headers.get(*n).map(|v| (*n, v)))
    else {
        return Ok(None);
    };
    let bad = || Refusal::field_error(name, "bad_client_id", "1 to 128 visible ASCII characters");
    let text = value.to_str().map_err(|_| bad())?;
    if text.is_empty() || text.len() > 128 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(text.to_string()))
}

/// `POST /api/v1/reports`.
pub async fn submit(
    State(app): State<Arc<App>>,
    PeerAddr(peer): PeerAddr,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ReportError> {
    let now = now_ms();
    let client = client_id(&headers)?;
    app.reports.admit(client.as_deref(), peer.map(|p| p.ip()), now)?;

    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(Refusal::ContentType(content_type.chars().take(60).collect()).into());
    }
    let limit = app.reports.policy().max_body_bytes;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Refusal::TooLarge { limit }.into());
    }
    let bytes = read_limited(body, limit).await?;
    let input = parse_report(&bytes, now, app.reports.policy())?;
    drop(bytes);

    let photo = match &input.photo {
        Some(photo) => {
            let worker = Arc::clone(&app);
            let photo = photo.clone();
            let saved = tokio::task::spawn_blocking(move || worker.reports.save_photo(&photo)).await;
            match saved {
                Ok(Ok(name)) => Some(name),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, dir = %app.reports.photos().dir().display(), "report photo not stored");
                    return Err(ReportError::Storage);
                }
                Err(_) => return Err(ReportError::Storage),
            }
        }
        None => None,
    };
    let reporter = client.or_else(|| peer.map(|p| p.ip().to_string())).unwrap_or_else(|| "anonymous".into());
    let recorded = app.reports.record(&app.geo, &input, photo.clone(), &reporter, now)?;
    REPORTS_ACCEPTED.with_label_values(&[input.category.name()]).inc();
    for flag in &recorded.flags {
        REPORTS_FLAGGED.with_label_values(&[flag.name()]).inc();
    }
    tracing::info!(cluster = %recorded.cluster_id, category = input.category.name(), count = recorded.count,
        flags = ?recorded.flags, "citizen report");
    push_to_operators(&app, &recorded.frame);
    let body = json!({
        "cluster": recorded.cluster_id, "new_cluster": recorded.new_cluster, "count": recorded.count,
        "state": recorded.state, "category": input.category, "text": input.text, "photo": photo,
        "flags": recorded.flags.iter().map(|f| f.name()).collect::<Vec<_>>(),
    });
    Ok(safe_json(StatusCode::CREATED, &body))
}

/// Reads the body up to `limit` bytes; one byte more is a refusal, however the body is framed.
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, Refusal> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| Refusal::Malformed("the body could not be read".into()))?;
        if buf.len() + chunk.len() > limit {
            return Err(Refusal::TooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

#[derive(Debug, Deserialize, Default)]
pub struct ClustersQuery {
    token: Option<String>,
    state: Option<String>,
}

/// Most clusters listed at once.
const MAX_LISTED: usize = 500;

/// `GET /api/v1/reports/clusters`.
pub async fn list_clusters(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<ClustersQuery>,
) -> Result<Response, ReportError> {
    authorise(&app, &headers, &TokenQuery { token: query.token.clone() })?;
    let state = match query.state.as_deref() {
        None | Some("") | Some("all") => None,
        Some(s) => Some(ClusterState::parse(s).ok_or_else(|| {
            AppError::BadRequest(format!(
                "state `{}`: use open, verified, dismissed or all",
                s.chars().take(20).collect::<String>()
            ))
        })?),
    };
    let clusters: Vec<Value> = app.reports.with_clusters(|book| {
        book.iter_recent()
            .into_iter()
            .filter(|c| state.is_none_or(|s| c.state == s))
            .take(MAX_LISTED)
            .map(|c| c.operator_view("snapshot"))
            .collect()
    });
    Ok(safe_json(StatusCode::OK, &json!({ "clusters": clusters })))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    summary: Option<String>,
    publish_photos: Option<bool>,
    alert_id: Option<String>,
}

/// `POST /api/v1/reports/clusters/{id}/{verify|dismiss|attach}`.
pub async fn cluster_action(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ReportError> {
    // Judging reports changes what the public sees: the `operate` scope, like alert approval.
    require(&app, &headers, &query, Scope::Operate)?;
    let args: ActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActionBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| AppError::BadRequest(format!("body: {e}")))?
    };
    let now = now_ms();
    let frame = match action.as_str() {
        "verify" => {
            let summary = match args.summary {
                Some(s) => Some(
                    crate::reports::report::check_text(&s)
                        .map_err(|e| AppError::BadRequest(format!("summary: {e}")))?,
                ),
                None => None,
            };
            app.reports.with_clusters(|book| {
                book.verify(&id, now, summary, args.publish_photos).map(|c| c.operator_view("verified"))
            })?
        }
        "dismiss" => app.reports.with_clusters(|book| book.dismiss(&id, now).map(|c| c.operator_view("dismissed")))?,
        "attach" => {
            let alert_id = args.alert_id.ok_or_else(|| AppError::BadRequest("body: `alert_id` is required".into()))?;
            if app.book.lock().get(&alert_id).is_none() {
                return Err(AppError::NotFound(format!(
                    "no alert `{}`",
                    alert_id.chars().take(80).collect::<String>()
                ))
                .into());
            }
            app.reports.with_clusters(|book| book.attach(&id, &alert_id).map(|c| c.operator_view("attached")))?
        }
        other => {
            let other: String = other.chars().take(40).collect();
            return Err(AppError::BadRequest(format!("unknown action `{other}`: use verify, dismiss or attach")).into());
        }
    };
    tracing::info!(cluster = %id, action = %action, "report cluster decision");
    push_to_operators(&app, &frame);
    Ok(safe_json(StatusCode::OK, &frame))
}

/// `GET /opendata/reports.geojson`: verified clusters only.
pub async fn open_data(State(app): State<Arc<App>>) -> Response {
    let base = app.public_url.clone();
    let features: Vec<Value> = app.reports.with_clusters(|book| {
        book.iter_recent()
            .into_iter()
            .filter(|c| c.state == ClusterState::Verified)
            .map(|c| {
                c.open_data_feature(
                    |p| format!("{base}/opendata/reports/photos/{p}"),
                    |a| format!("{base}/cap/{a}.xml"),
                )
            })
            .collect()
    });
    let mut response = safe_json(StatusCode::OK, &json!({"type": "FeatureCollection", "features": features}));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/geo+json"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=30"));
    response
}

/// `GET /api/v1/reports/photos/{name}`: any stored photo, for operators.
pub async fn operator_photo(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    Path(name): Path<String>,
) -> Result<Response, ReportError> {
    authorise(&app, &headers, &query)?;
    send_photo(&app, &name).await
}

/// `GET /opendata/reports/photos/{name}`: only photos of verified clusters whose photos an operator published.
pub async fn public_photo(State(app): State<Arc<App>>, Path(name): Path<String>) -> Result<Response, ReportError> {
    let published = app.reports.with_clusters(|book| {
        book.iter().any(|c| c.state == ClusterState::Verified && c.publish_photos && c.photos.contains(&name))
    });
    if !published {
        return Err(AppError::NotFound("no such published photo".into()).into());
    }
    send_photo(&app, &name).await
}

async fn send_photo(app: &App, name: &str) -> Result<Response, ReportError> {
    let (path, kind) = app.reports.photos().path_of(name).ok_or_else(|| AppError::NotFound("no such photo".into()))?;
    let bytes = tokio::fs::read(&path).await.map_err(|_| AppError::NotFound("no such photo".into()))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind.content_type())),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            // A photo is named by its hash: it never changes.
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
        ],
        bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_the_json_meaning() {
        let value = json!({"text": "<script>alert('x')</script> & <3"});
        let escaped = escape_json(&value.to_string());
        assert!(!escaped.contains('<') && !escaped.contains('>') && !escaped.contains('&'));
        assert_eq!(serde_json::from_str::<Value>(&escaped).unwrap(), value);
    }
}
