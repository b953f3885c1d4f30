//! Citizen reports over HTTP (the logic is in `crate::reports`).
//!
//! - `POST /api/v1/reports` — anyone. JSON body (see `reports/report.rs`); optional `X-Client-Id` (or
//!   `X-App-Token`) header: the app's own random id, the key of the per-client rate limit. `201` with the cluster
//!   the report joined; refusals are `4xx` with `{"error": reason, "field": …, "message": …}`, or `507` when the
//!   reports' share of the disk is used up (`photo_quota`: resend without the photo; `clusters_full`).
//! - `GET /api/v1/reports/clusters?state=open|verified|dismissed` — operators: the clusters, newest first.
//! - `POST /api/v1/reports/clusters/{id}/verify` (optional `{"summary": "…", "publish_photos": true}`),
//!   `…/dismiss`, `…/attach` (`{"alert_id": "…"}`: a verified cluster joins an active alert, whose next CAP message
//!   lists it), `…/raise` (`{"severity": "Severe", "zone": "…"}`: a verified cluster raises a new alert, `201`) —
//!   operators with the `operate` scope (the rest: `read`). A cluster is linked to one active alert at a time
//!   (`409` otherwise).
//! - `GET /api/v1/reports/photos/{name}` — operators (`private, no-store`: not published, so no shared cache keeps
//!   it); `GET /opendata/reports/photos/{name}` — anyone, only photos an operator published with a verified cluster
//!   (cacheable: named by its hash).
//! - `GET /opendata/reports.geojson` — anyone: verified clusters, without texts, people or exact positions.
//!
//! Every change to a cluster goes to the operator websockets as `{"type":"report",…}` through `App::channels.map`.
//!
//! Report text is plain text. All JSON from here escapes `<`, `>` and `&` (as `\u003c`…), so that even a page that
//! wrongly parses a response as HTML finds no tag in it; and responses say `nosniff`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use alerting::alert::{BookError, ReportRaise};
use alerting::types::{Certainty, LevelInfo, Severity, Urgency};
use alerting::Alert;

use crate::app::App;
use crate::clock::now_ms;
use crate::metrics::{REPORTS_ACCEPTED, REPORTS_FLAGGED, REPORTS_LINKED, REPORTS_REFUSED};
use crate::reports::{parse_report, Capacity, Cluster, ClusterError, ClusterState, Refusal, ReportInput, SaveError};
use crate::web::auth::{Operate, Operator, Read};
use crate::web::{AppError, Path, Query};

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
                    Refusal::RateLimited { .. } | Refusal::NewClusters { .. } => StatusCode::TOO_MANY_REQUESTS,
                    // The server's share of the disk for reports is used up; nothing the client did wrong.
                    Refusal::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
                    Refusal::Field { reason: "photo_too_large", .. } => StatusCode::PAYLOAD_TOO_LARGE,
                    Refusal::Field { reason: "bad_client_id", .. } => StatusCode::BAD_REQUEST,
                    Refusal::Field { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                };
                let body = json!({"error": refusal.reason(), "field": refusal.field(), "message": refusal.to_string()});
                let mut response = safe_json(status, &body);
                if let Refusal::RateLimited { retry_after_s, .. } | Refusal::NewClusters { retry_after_s, .. } = refusal
                {
                    if let Ok(v) = HeaderValue::from_str(&retry_after_s.to_string()) {
                        response.headers_mut().insert(header::RETRY_AFTER, v);
                    }
                }
                response
            }
        }
    }
}

impl ReportError {
    /// A refused report as the citizen websocket answers it (`reason`, `field`, `message`, `retry_after_s`),
    /// counted like the HTTP refusal.
    pub fn rejected(&self) -> Value {
        match self {
            ReportError::Refused(refusal) => {
                REPORTS_REFUSED.with_label_values(&[refusal.reason()]).inc();
                let retry = match refusal {
                    Refusal::RateLimited { retry_after_s, .. } | Refusal::NewClusters { retry_after_s, .. } => {
                        Some(*retry_after_s)
                    }
                    _ => None,
                };
                json!({"reason": refusal.reason(), "field": refusal.field(), "message": refusal.to_string(),
                       "retry_after_s": retry})
            }
            ReportError::Storage => {
                REPORTS_REFUSED.with_label_values(&["storage"]).inc();
                json!({"reason": "storage", "field": null, "message": "the photo could not be stored; try again later"})
            }
            // Operator-side errors; a report never meets them.
            other => json!({"reason": "internal", "field": null, "message": other.to_string()}),
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
pub fn push_to_operators(app: &App, frame: &Value) {
    if app.channels.map.receiver_count() > 0 {
        let at = frame["lat"].as_f64().zip(frame["lon"].as_f64());
        let delta = crate::audience::MapDelta { at, frame: escape_json(&frame.to_string()) };
        let _ = app.channels.map.send(Arc::new(delta));
    }
}

/// The client id: the app's `X-Client-Id`, or its `X-App-Token` (accepted, not yet checked against issued tokens).
pub fn client_id(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let Some((name, value)) = ["x-client-id", "x-app-token"].iter().find_map(|n| headers.get(*n).map(|v| (*n, v)))
    else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| bad_client_id(name))?;
    check_client_id(name, text).map(Some)
}

/// 1 to 128 visible ASCII characters: a random app id, never anything a person typed.
pub fn check_client_id(field: &str, text: &str) -> Result<String, Refusal> {
    if text.is_empty() || text.len() > 128 || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad_client_id(field));
    }
    Ok(text.to_string())
}

fn bad_client_id(field: &str) -> Refusal {
    Refusal::field_error(field, "bad_client_id", "1 to 128 visible ASCII characters")
}

/// `POST /api/v1/reports`.
#[utoipa::path(post, path = "/api/v1/reports", operation_id = "submit_report", tag = "reports",
    params(("X-Client-Id" = Option<String>, Header, description = "The app's own random id (1–128 visible ASCII): the key of the per-client limit")),
    request_body = crate::web::openapi::ReportBody,
    responses((status = 201, description = "Recorded: the cluster it joined", body = crate::web::openapi::ReportAccepted),
        (status = 400, description = "`malformed`, `bad_client_id`", body = crate::web::openapi::Refusal),
        (status = 413, description = "`too_large`, `photo_too_large`", body = crate::web::openapi::Refusal),
        (status = 415, description = "`content_type`: not `application/json`", body = crate::web::openapi::Refusal),
        (status = 422, description = "A field refused (`field` names it): `bad_position`, `outside_taiwan`, `bad_category`, `bad_text`, `photo_encoding`, `unknown_field`, …", body = crate::web::openapi::Refusal),
        (status = 429, description = "`rate_limited_client`, `rate_limited_address`, `new_clusters_address`, `new_clusters_zone` (`Retry-After`)", body = crate::web::openapi::Refusal),
        (status = 503, description = "`storage`: the photo could not be stored; try again later", body = crate::web::openapi::Refusal),
        (status = 507, description = "`photo_quota` (resend without the photo), `clusters_full`", body = crate::web::openapi::Refusal)))]
pub async fn submit(
    State(app): State<Arc<App>>,
    PeerAddr(peer): PeerAddr,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ReportError> {
    let now = now_ms();
    let client = client_id(&headers)?;
    let peer = peer.map(|p| p.ip());
    app.reports.admit(client.as_deref(), peer, now)?;

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
    let answer = record(&app, &input, client, peer, now).await?;
    Ok(safe_json(StatusCode::CREATED, &answer))
}

/// A checked report, from HTTP or the citizen websocket: its photo stored, then flagged, clustered (and journaled),
/// counted and sent to the operators. Returns the answer for the citizen.
pub async fn record(
    app: &Arc<App>,
    input: &ReportInput,
    client: Option<String>,
    peer: Option<IpAddr>,
    now: i64,
) -> Result<Value, ReportError> {
    let photo = match &input.photo {
        Some(photo) => {
            let worker = Arc::clone(app);
            let photo = photo.clone();
            let saved = tokio::task::spawn_blocking(move || worker.reports.save_photo(&photo)).await;
            match saved {
                Ok(Ok(name)) => Some(name),
                Ok(Err(SaveError::Quota { used, quota })) => {
                    tracing::warn!(used, quota, "report photo refused: the photo store is at its quota");
                    return Err(Refusal::Full(Capacity::Photos).into());
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, dir = %app.reports.photos().dir().display(), "report photo not stored");
                    return Err(ReportError::Storage);
                }
                Err(_) => return Err(ReportError::Storage),
            }
        }
        None => None,
    };
    let reporter = client.or_else(|| peer.map(|p| p.to_string())).unwrap_or_else(|| "anonymous".into());
    let recorded = app.reports.record(&app.geo, input, photo.clone(), &reporter, peer, now);
    if app.reports.garbage_due() {
        let worker = Arc::clone(app);
        tokio::task::spawn_blocking(move || worker.reports.collect_garbage());
    }
    let recorded = recorded?;
    REPORTS_ACCEPTED.with_label_values(&[input.category.name()]).inc();
    for flag in &recorded.flags {
        REPORTS_FLAGGED.with_label_values(&[flag.name()]).inc();
    }
    tracing::info!(cluster = %recorded.cluster_id, category = input.category.name(), count = recorded.count,
        flags = ?recorded.flags, "citizen report");
    push_to_operators(app, &recorded.frame);
    if app.reports.compaction_due() {
        let worker = Arc::clone(app);
        tokio::task::spawn_blocking(move || worker.reports.compact());
    }
    Ok(json!({
        "cluster": recorded.cluster_id, "new_cluster": recorded.new_cluster, "count": recorded.count,
        "state": recorded.state, "category": input.category, "text": input.text, "photo": photo,
        "flags": recorded.flags.iter().map(|f| f.name()).collect::<Vec<_>>(),
    }))
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

#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClustersQuery {
    /// `open`, `verified`, `dismissed` or `all` (the default).
    #[param(pattern = "^(open|verified|dismissed|all)?$")]
    state: Option<String>,
}

/// Most clusters listed at once.
const MAX_LISTED: usize = 500;

/// `GET /api/v1/reports/clusters`.
#[utoipa::path(get, path = "/api/v1/reports/clusters", tag = "reports", security(("operator_token" = ["read"])),
    params(ClustersQuery),
    responses((status = 200, description = "Newest first, at most 500", body = crate::web::openapi::ClusterList),
        (status = 400, description = "`bad_request`: an unknown state", body = crate::web::openapi::ErrorBody), (status = 401, body = crate::web::openapi::ErrorBody), (status = 403, body = crate::web::openapi::ErrorBody)))]
pub async fn list_clusters(
    State(app): State<Arc<App>>,
    _operator: Operator<Read>,
    Query(query): Query<ClustersQuery>,
) -> Result<Response, ReportError> {
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

#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    summary: Option<String>,
    publish_photos: Option<bool>,
}

#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DismissBody {}

#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AttachBody {
    alert_id: Option<String>,
}

#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RaiseBody {
    /// CAP severity: Minor, Moderate, Severe or Extreme.
    severity: Option<String>,
    /// One of the zones the cluster lies in; default the smallest of them.
    zone: Option<String>,
}

/// An action's JSON body; an empty body is the action's defaults.
fn action_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| AppError::BadRequest(format!("body: {e}")))
}

/// `POST /api/v1/reports/clusters/{id}/{verify|dismiss|attach|raise}`. Judging reports changes what the public
/// sees: the `operate` scope, like alert approval.
#[utoipa::path(post, path = "/api/v1/reports/clusters/{id}/{action}", tag = "reports", security(("operator_token" = ["operate"])),
    params(("id" = String, Path, description = "The cluster's id (`rc-…`)"),
        ("action" = String, Path, description = "`verify`, `dismiss`, `attach` or `raise`", pattern = "^(verify|dismiss|attach|raise)$")),
    request_body(description = "The action's options; an empty body takes the defaults (`attach` needs `alert_id`, `raise` needs `severity`)",
        content((VerifyBody = "application/json"))),
    responses((status = 200, description = "The cluster after `verify`, `dismiss`, `attach` (with `alert`)", body = crate::web::openapi::ReportCluster),
        (status = 201, description = "`raise`: the cluster and the new alert (`alert`)", body = crate::web::openapi::ReportCluster),
        (status = 400, description = "`bad_request`: an unknown action, a body this action does not take, a missing `alert_id` or `severity`, a zone the cluster is not in", body = crate::web::openapi::ErrorBody),
        (status = 401, body = crate::web::openapi::ErrorBody), (status = 403, body = crate::web::openapi::ErrorBody),
        (status = 404, description = "`not_found`: no such cluster or alert", body = crate::web::openapi::ErrorBody),
        (status = 409, description = "`conflict`: not verified, already linked to an active alert, an alert already warns of this, the alert ended", body = crate::web::openapi::Refusal),
        (status = 500, description = "`internal`: a journal could not be written, or no CAP template for the event", body = crate::web::openapi::ErrorBody)))]
pub async fn cluster_action(
    State(app): State<Arc<App>>,
    operator: Operator<Operate>,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ReportError> {
    // Who the cluster and alert journals name for this decision.
    let by = operator.name.as_str();
    let now = now_ms();
    let (status, frame, alert) = match action.as_str() {
        "verify" => {
            let args: VerifyBody = action_body(&body)?;
            let summary = match args.summary {
                Some(s) => Some(
                    crate::reports::report::check_text(&s)
                        .map_err(|e| AppError::BadRequest(format!("summary: {e}")))?,
                ),
                None => None,
            };
            (StatusCode::OK, app.reports.verify(&id, now, summary, args.publish_photos, by)?, None)
        }
        "dismiss" => {
            let _: DismissBody = action_body(&body)?;
            (StatusCode::OK, app.reports.dismiss(&id, now, by)?, None)
        }
        "attach" => {
            let args: AttachBody = action_body(&body)?;
            let alert_id = args.alert_id.ok_or_else(|| AppError::BadRequest("body: `alert_id` is required".into()))?;
            let (frame, alert) = attach(&app, &id, &alert_id, by, now)?;
            (StatusCode::OK, frame, Some(alert))
        }
        "raise" => {
            let args: RaiseBody = action_body(&body)?;
            let (frame, alert) = raise(&app, &id, args, by, now)?;
            (StatusCode::CREATED, frame, Some(alert))
        }
        other => {
            let other: String = other.chars().take(40).collect();
            return Err(AppError::BadRequest(format!(
                "unknown action `{other}`: use verify, dismiss, attach or raise"
            ))
            .into());
        }
    };
    tracing::info!(cluster = %id, action = %action, operator = %by, alert = ?alert.as_ref().map(|a| &a.id), "report cluster decision");
    push_to_operators(&app, &frame);
    let Some(alert) = alert else {
        return Ok(safe_json(status, &frame));
    };
    REPORTS_LINKED.with_label_values(&[if action == "raise" { "raised" } else { "attached" }]).inc();
    // After the locks: publishing journals the CAP message and wakes the deliveries.
    app.publish(&alert);
    let mut answer = frame;
    if let Value::Object(map) = &mut answer {
        map.insert("alert".into(), serde_json::to_value(app.alert_message(&alert)).unwrap_or_default());
    }
    Ok(safe_json(status, &answer))
}

/// The active alert a cluster is linked to, if any: a cluster belongs to one alert at a time.
fn active_link(app: &App, cluster: &Cluster) -> Option<String> {
    let id = cluster.alert_id.as_deref()?;
    app.alerts.book.lock().get(id).filter(|a| a.state.is_active()).map(|a| a.id.clone())
}

fn already_linked(cluster: &Cluster, alert_id: &str) -> ReportError {
    AppError::Conflict(format!("cluster `{}` is already linked to the active alert `{alert_id}`", cluster.id())).into()
}

fn book_error(e: BookError, alert_id: &str) -> ReportError {
    let short: String = alert_id.chars().take(80).collect();
    match e {
        BookError::NotFound(_) => AppError::NotFound(format!("no alert `{short}`")).into(),
        BookError::HazardActive(existing) => AppError::Conflict(format!(
            "alert `{existing}` already warns of this in this zone: attach the cluster to it \
             (POST …/attach {{\"alert_id\": \"{existing}\"}})"
        ))
        .into(),
        BookError::Journal(_) => {
            tracing::error!(error = %e, "alert journal");
            AppError::Internal("the alert journal could not be written".into()).into()
        }
        other => AppError::Conflict(other.to_string()).into(),
    }
}

/// A verified cluster joins an active alert: a new version of the alert, whose CAP message lists the cluster.
fn attach(app: &Arc<App>, id: &str, alert_id: &str, by: &str, now: i64) -> Result<(Value, Alert), ReportError> {
    let mut attached = None;
    let frame = app.reports.link(id, "attached", |cluster| {
        if let Some(linked) = active_link(app, cluster) {
            return Err(already_linked(cluster, &linked));
        }
        let report = cluster.report_ref(|p| photo_url(app, p));
        let alert =
            app.alerts.book.lock().attach_report(alert_id, report, by, now).map_err(|e| book_error(e, alert_id))?;
        attached = Some(alert);
        Ok(alert_id.to_string())
    })?;
    let alert = attached.ok_or_else(|| AppError::Internal("attach: no alert".into()))?;
    Ok((frame, alert))
}

/// A verified cluster raises a new alert through the usual lifecycle: the approval gate of the rules file, then
/// operators acknowledge, approve and cancel it like any other.
fn raise(app: &Arc<App>, id: &str, args: RaiseBody, by: &str, now: i64) -> Result<(Value, Alert), ReportError> {
    let severity = match args.severity.as_deref() {
        Some("Minor") => Severity::Minor,
        Some("Moderate") => Severity::Moderate,
        Some("Severe") => Severity::Severe,
        Some("Extreme") => Severity::Extreme,
        Some(other) => {
            let other: String = other.chars().take(20).collect();
            return Err(AppError::BadRequest(format!(
                "`severity`: `{other}` is not one of Minor, Moderate, Severe, Extreme"
            ))
            .into());
        }
        None => {
            return Err(AppError::BadRequest("`severity` is required: Minor, Moderate, Severe or Extreme".into()).into())
        }
    };
    let mut raised = None;
    let frame = app.reports.link(id, "raised", |cluster| {
        if let Some(linked) = active_link(app, cluster) {
            return Err(already_linked(cluster, &linked));
        }
        let zone = alert_zone(app, cluster, args.zone.as_deref())?;
        let event = cluster.category.event_type();
        if app.partners.dissemination.as_ref().is_some_and(|d| !d.has_event_type(event)) {
            return Err(AppError::Internal(format!(
                "the CAP templates have no event `{event}`: add it to the cap_templates file"
            ))
            .into());
        }
        // The engine's lock is taken and released before the alert book's, as everywhere else.
        let approval_required = app.alerts.engine.lock().rules().needs_approval(event, severity);
        let raise = report_raise(app, cluster, zone, severity, approval_required);
        let alert = app
            .alerts
            .book
            .lock()
            .raise_from_report(raise, app.alerts.mode, by, now)
            .map_err(|e| book_error(e, cluster.id().as_str()))?;
        let alert_id = alert.id.clone();
        raised = Some(alert);
        Ok(alert_id)
    })?;
    let alert = raised.ok_or_else(|| AppError::Internal("raise: no alert".into()))?;
    Ok((frame, alert))
}

/// The zone an alert raised from `cluster` covers: the one asked for, which must contain some of the cluster's
/// reports, or else the smallest that does (the warning should reach those near the reports, not a whole county).
fn alert_zone(app: &App, cluster: &Cluster, wanted: Option<&str>) -> Result<String, ReportError> {
    let zones: Vec<&geo_index::Zone> = cluster.zones.iter().filter_map(|z| app.geo.zone(z)).collect();
    if zones.is_empty() {
        return Err(AppError::Conflict(format!(
            "cluster `{}` lies in no zone, so an alert has no area to warn; attach it to an alert instead",
            cluster.id()
        ))
        .into());
    }
    match wanted {
        Some(z) => zones.iter().find(|zone| zone.id == z).map(|zone| zone.id.clone()).ok_or_else(|| {
            let known: Vec<&str> = zones.iter().map(|zone| zone.id.as_str()).collect();
            AppError::BadRequest(format!(
                "`zone`: `{}` does not contain the cluster's reports; use one of {}",
                z.chars().take(80).collect::<String>(),
                known.join(", ")
            ))
            .into()
        }),
        None => Ok(zones
            .iter()
            .min_by(|a, b| a.area_km2.total_cmp(&b.area_km2))
            .map(|zone| zone.id.clone())
            .unwrap_or_default()),
    }
}

/// What the alert book needs to raise an alert from a cluster. One hazard per (category, zone): a second cluster
/// of the same kind in the same zone is attached to the first one's alert.
fn report_raise(
    app: &App,
    cluster: &Cluster,
    zone: String,
    severity: Severity,
    approval_required: bool,
) -> ReportRaise {
    let (zh, en) = cluster.category.words();
    let report = cluster.report_ref(|p| photo_url(app, p));
    let values = BTreeMap::from([
        ("reports".to_string(), report.reports.to_string()),
        ("reporters".to_string(), report.reporters.to_string()),
        ("summary".to_string(), report.summary.clone().unwrap_or_default()),
    ]);
    ReportRaise {
        rule_id: format!("citizen-report-{}", cluster.category.name()),
        event: cluster.category.event_type().to_string(),
        area_id: zone,
        level: LevelInfo {
            index: 0,
            name: format!("民眾通報{zh}"),
            name_en: format!("Citizen reports: {en}"),
            severity,
            urgency: Urgency::Immediate,
            certainty: Certainty::Observed,
            condition: format!("verified cluster {} of {} reports", report.cluster, report.reports),
        },
        approval_required,
        report,
        values,
    }
}

fn photo_url(app: &App, name: &str) -> String {
    format!("{}/opendata/reports/photos/{name}", app.web.public_url)
}

/// `GET /opendata/reports.geojson`: verified clusters only.
#[utoipa::path(get, path = "/opendata/reports.geojson", operation_id = "open_data_reports", tag = "open data",
    responses((status = 200, description = "Verified clusters, without texts, people or exact positions (the cluster's H3 cell centre)", content_type = "application/geo+json", body = crate::web::openapi::FeatureCollection),
        (status = 429, description = "Rate limited (per address)", body = crate::web::openapi::ErrorBody)))]
pub async fn open_data(State(app): State<Arc<App>>) -> Response {
    let base = app.web.public_url.clone();
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
#[utoipa::path(get, path = "/api/v1/reports/photos/{name}", tag = "reports", security(("operator_token" = ["read"])),
    params(("name" = String, Path, description = "The photo's name (its hash and extension)")),
    responses((status = 200, description = "The photo (`private, no-store`)", content((Vec<u8> = "image/jpeg"), (Vec<u8> = "image/png"))),
        (status = 401, body = crate::web::openapi::ErrorBody), (status = 403, body = crate::web::openapi::ErrorBody),
        (status = 404, description = "`not_found`: no such photo", body = crate::web::openapi::ErrorBody)))]
pub async fn operator_photo(
    State(app): State<Arc<App>>,
    _operator: Operator<Read>,
    Path(name): Path<String>,
) -> Result<Response, ReportError> {
    // Not published (yet, or ever): no shared cache, proxy or browser disk may keep a copy.
    send_photo(&app, &name, "private, no-store").await
}

/// `GET /opendata/reports/photos/{name}`: only photos of verified clusters whose photos an operator published.
#[utoipa::path(get, path = "/opendata/reports/photos/{name}", tag = "open data",
    params(("name" = String, Path, description = "The photo's name (its hash and extension)")),
    responses((status = 200, description = "The photo (cached for a year: named by its hash)", content((Vec<u8> = "image/jpeg"), (Vec<u8> = "image/png"))),
        (status = 404, description = "`not_found`: no such published photo", body = crate::web::openapi::ErrorBody),
        (status = 429, description = "Rate limited (per address)", body = crate::web::openapi::ErrorBody)))]
pub async fn public_photo(State(app): State<Arc<App>>, Path(name): Path<String>) -> Result<Response, ReportError> {
    let published = app.reports.with_clusters(|book| {
        book.iter().any(|c| c.state == ClusterState::Verified && c.publish_photos && c.photos.contains(&name))
    });
    if !published {
        return Err(AppError::NotFound("no such published photo".into()).into());
    }
    // Published, and named by its hash: it never changes.
    send_photo(&app, &name, "public, max-age=31536000, immutable").await
}

async fn send_photo(app: &App, name: &str, cache: &'static str) -> Result<Response, ReportError> {
    let (path, kind) = app.reports.photos().path_of(name).ok_or_else(|| AppError::NotFound("no such photo".into()))?;
    let bytes = tokio::fs::read(&path).await.map_err(|_| AppError::NotFound("no such photo".into()))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind.content_type())),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
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
