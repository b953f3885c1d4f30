//! Scale-out on an existing MQTT cluster (issue 14; `docs/SCALING.md`): the roles a process can play when readings
//! come from an external broker instead of our front door, and their wiring.
//!
//! - **worker** (`serve --upstream …`): the whole embedded pipeline — `Ingest::process`, store, rules, alert book,
//!   dissemination, web — fed by the broker. With `regions`, it owns those regions: it subscribes to
//!   `region/{r}/sensors/+/+` for each and loads only their zones, so every reading of an area reaches exactly one
//!   worker and that area's rule windows stay whole. Without `regions` it consumes the device topics directly (one
//!   worker behind the broker). It publishes every alert change to `alerts/{region}/{alert id}` (retained, QoS 1).
//! - **writer** (`--role writer`): stateless. Consumes the device topics through a shared subscription
//!   (`$share/{share_group}/sensors/+/readings|status`, so any number of writers split the load), validates with the same
//!   `Ingest::process`, writes readings to the InfluxDB sink, and forwards each accepted publish to the region topic of
//!   every region its readings fall in. No rules.
//! - **fanout** (`--role fanout`): no ingest, no rules. Subscribes to `alerts/+/+`, keeps the latest version of each
//!   alert ([`RemoteAlerts`], built from the broker's retained messages at start) and serves `/ws/citizen` and
//!   `/ws/operator` from it, so citizens' connections scale apart from the workers.
//!
//! A region is a county: the first five digits of a zone's Taiwan_Geocode_103 `geocode` (`10008` Nantou County).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use alerting::alert::{Certainty, Severity, Urgency};
use alerting::message::{AlertMessage, CommentMessage, Headlines};
use alerting::{Alert, AlertState, Mode};
use bytes::Bytes;
use ingest::pipeline::Processed;
use ingest::upstream::{self, Publisher, UpstreamConfig};
use ingest::RawMessage;
use parking_lot::RwLock;
use prometheus::{register_int_counter_vec, IntCounterVec};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use crate::config::ConfigFiles;
use crate::server::{now_ms, AlertBroadcast, App, Lang};

/// `[upstream]` in the main config file. `serve --upstream/--role/--client-id/--region` override its keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// `mqtt://host:port` of the cluster's internal listener.
    pub url: Option<String>,
    /// Unique per process and stable across its restarts (the broker keeps a worker's queue under it).
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `worker` (default), `writer` or `fanout`.
    pub role: Option<String>,
    /// A worker's regions (county codes, e.g. "10008"); empty: all readings, from the device topics.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Writers' shared-subscription group.
    pub share_group: Option<String>,
    pub keep_alive_s: Option<u64>,
    /// How long an ended (cleared, cancelled) alert stays retained on the broker before it is removed; default 24 h.
    pub closed_retention_h: Option<u32>,
}

/// What the command line says about the cluster; each field overrides the config file's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub url: Option<String>,
    pub role: Option<String>,
    pub client_id: Option<String>,
    pub regions: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Worker,
    Writer,
    Fanout,
}

impl Role {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "worker" => Some(Role::Worker),
            "writer" => Some(Role::Writer),
            "fanout" => Some(Role::Fanout),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{file}: `upstream.{key}`: {message}")]
    Config { file: String, key: &'static str, message: String },
    #[error("{file}: {message}")]
    Zones { file: String, message: String },
    #[error("{0}")]
    Upstream(#[from] ingest::IngestError),
}

/// A resolved cluster role: config file and command line merged and checked.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub role: Role,
    pub upstream: UpstreamConfig,
    pub regions: Vec<String>,
    pub share_group: String,
    pub closed_retention_ms: i64,
}

impl Cluster {
    /// `None`: no upstream anywhere, the embedded front door (the default).
    pub fn resolve(
        section: Option<&UpstreamSection>,
        overrides: Overrides,
        file: &str,
    ) -> Result<Option<Self>, ClusterError> {
        let empty = UpstreamSection::default();
        let section = section.unwrap_or(&empty);
        let invalid = |key: &'static str, message: String| ClusterError::Config { file: file.into(), key, message };
        let Some(url) = overrides.url.or_else(|| section.url.clone()) else {
            if overrides.role.is_some() || section.role.is_some() || section.client_id.is_some() {
                return Err(invalid(
                    "url",
                    "a cluster role needs the upstream broker: `--upstream mqtt://host:port`".into(),
                ));
            }
            return Ok(None);
        };
        let role_text = overrides.role.or_else(|| section.role.clone()).unwrap_or_else(|| "worker".into());
        let role = Role::parse(&role_text)
            .ok_or_else(|| invalid("role", format!("`{role_text}` is not worker, writer or fanout")))?;
        let client_id = overrides.client_id.or_else(|| section.client_id.clone()).ok_or_else(|| {
            invalid("client_id", "required: unique per process, stable across restarts (`--client-id`)".into())
        })?;
        let mut upstream = UpstreamConfig::from_url(&url, &client_id).map_err(|e| invalid("url", e.to_string()))?;
        match (&section.username, &section.password) {
            (Some(u), Some(p)) => upstream.credentials = Some((u.clone(), p.clone())),
            (None, None) => {}
            _ => return Err(invalid("username", "give both username and password, or neither".into())),
        }
        if let Some(s) = section.keep_alive_s {
            if !(5..=3600).contains(&s) {
                return Err(invalid("keep_alive_s", "must be 5..=3600".into()));
            }
            upstream.keep_alive = Duration::from_secs(s);
        }
        let regions = if overrides.regions.is_empty() { section.regions.clone() } else { overrides.regions };
        for r in &regions {
            let county = geo_index::parse_geocode(r).ok().filter(|g| g.level == geo_index::GeocodeLevel::County);
            if county.is_none() {
                return Err(invalid("regions", format!("`{r}` is not a county code (Taiwan_Geocode_103, 5 digits)")));
            }
        }
        if !regions.is_empty() && role != Role::Worker {
            return Err(invalid("regions", format!("only workers own regions, not a {role_text}")));
        }
        let share_group = section.share_group.clone().unwrap_or_else(|| "dc-writers".into());
        if !upstream::is_valid_region(&share_group) {
            return Err(invalid("share_group", "must be 1-32 ASCII letters, digits or '-'".into()));
        }
        let retention_h = section.closed_retention_h.unwrap_or(24);
        if retention_h == 0 {
            return Err(invalid("closed_retention_h", "must be at least 1".into()));
        }
        Ok(Some(Cluster {
            role,
            upstream,
            regions,
            share_group,
            closed_retention_ms: i64::from(retention_h) * 3_600_000,
        }))
    }

    /// Adapts the configuration to the role before the app is built: a worker with regions keeps only their zones
    /// (so it never raises an alert for another worker's area, even for a sensor near a border whose readings reach
    /// both) and names its alerts after itself (ids stay unique across workers, and say who raised them); writers
    /// and fan-out nodes run no rules and disseminate nothing.
    pub fn prepare(&self, files: &mut ConfigFiles) -> Result<(), ClusterError> {
        match self.role {
            Role::Worker => {
                if !self.regions.is_empty() {
                    files.zones.0 = self.own_zones(&files.zones.0, &files.zones.1.display().to_string())?;
                }
                files.main.alerting.id_prefix =
                    format!("{}-{}", files.main.alerting.id_prefix, self.upstream.client_id);
            }
            Role::Writer | Role::Fanout => {
                if self.role == Role::Writer {
                    // Routing places every zone in a region: all of them need a geocode.
                    zone_regions(&files.zones.0, &files.zones.1.display().to_string())?;
                    // Partners' alerts are for operators and citizens, whom a writer does not serve.
                    files.inbound = None;
                }
                files.rules.0 = without_rules(&files.rules.0)
                    .map_err(|message| ClusterError::Zones { file: files.rules.1.display().to_string(), message })?;
                files.dissemination = None;
            }
        }
        Ok(())
    }

    fn own_zones(&self, geojson: &str, file: &str) -> Result<String, ClusterError> {
        let regions = zone_regions(geojson, file)?;
        let mut doc: serde_json::Value = serde_json::from_str(geojson)
            .map_err(|e| ClusterError::Zones { file: file.into(), message: e.to_string() })?;
        if let Some(features) = doc.get_mut("features").and_then(|f| f.as_array_mut()) {
            let mut i = 0;
            features.retain(|_| {
                let keep = self.regions.contains(&regions[i].1);
                i += 1;
                keep
            });
        }
        for r in &self.regions {
            if !regions.iter().any(|(_, region)| region == r) {
                return Err(ClusterError::Zones {
                    file: file.into(),
                    message: format!("region `{r}` owns no zone (no zone's geocode starts with it)"),
                });
            }
        }
        Ok(doc.to_string())
    }

    /// Starts the role's links to the broker. `on_message` is the embedded pipeline (a worker runs it as is).
    pub fn attach(
        &self,
        app: &Arc<App>,
        mut on_message: impl FnMut(RawMessage) + Send + 'static,
    ) -> Result<(), ClusterError> {
        let upstream = &self.upstream;
        touch_metrics();
        match self.role {
            Role::Worker => {
                let filters = if self.regions.is_empty() {
                    vec!["sensors/+/readings".to_string(), "sensors/+/status".to_string()]
                } else {
                    self.regions.iter().map(|r| format!("region/{r}/sensors/+/+")).collect()
                };
                let publisher = Publisher::start(upstream)?;
                tokio::spawn(publish_alerts(
                    Arc::clone(app),
                    publisher,
                    upstream.client_id.clone(),
                    self.closed_retention_ms,
                ));
                // The pipeline sees the device topic, as on the front door.
                upstream::consume(upstream, filters, true, "ingest-link", move |mut msg| {
                    if let (Some(_), topic) = upstream::device_topic(&msg.topic) {
                        msg.topic = topic.to_string();
                    }
                    on_message(msg);
                })?;
            }
            Role::Writer => {
                let group = &self.share_group;
                let filters =
                    vec![format!("$share/{group}/sensors/+/readings"), format!("$share/{group}/sensors/+/status")];
                let publisher = Publisher::start(upstream)?;
                let app = Arc::clone(app);
                upstream::consume(upstream, filters, true, "ingest-link", move |msg| {
                    write_and_route(&app, &publisher, msg)
                })?;
            }
            Role::Fanout => {
                let app = Arc::clone(app);
                let retention_ms = self.closed_retention_ms;
                upstream::consume(upstream, vec!["alerts/+/+".into()], false, "alerts-link", move |msg| {
                    let now = now_ms();
                    if let Some(change) = app.cluster_alerts.apply(&msg.topic, &msg.payload, now, now - retention_ms) {
                        let _ = app.alerts_tx.send(change);
                    }
                })?;
            }
        }
        tracing::info!(role = ?self.role, regions = ?self.regions, broker = %format!("{}:{}", upstream.host, upstream.port), client_id = %upstream.client_id, "cluster role started");
        Ok(())
    }
}

/// The region of each zone of a zones GeoJSON text, in file order: `(zone id, county code)`. Every zone needs a
/// geocode here; the error names the first that has none.
fn zone_regions(geojson: &str, file: &str) -> Result<Vec<(String, String)>, ClusterError> {
    #[derive(Deserialize)]
    struct Doc {
        features: Vec<Feature>,
    }
    #[derive(Deserialize)]
    struct Feature {
        properties: Props,
    }
    #[derive(Deserialize)]
    struct Props {
        id: String,
        geocode: Option<String>,
    }
    let doc: Doc =
        serde_json::from_str(geojson).map_err(|e| ClusterError::Zones { file: file.into(), message: e.to_string() })?;
    doc.features
        .into_iter()
        .map(|f| match f.properties.geocode.as_deref().and_then(county_of) {
            Some(region) => Ok((f.properties.id, region.to_string())),
            None => Err(ClusterError::Zones {
                file: file.into(),
                message: format!(
                    "zone `{}`: no geocode; in cluster mode every zone needs one (its county is its region)",
                    f.properties.id
                ),
            }),
        })
        .collect()
}

/// The county (region) of a Taiwan_Geocode_103 code: its first five digits.
fn county_of(geocode: &str) -> Option<&str> {
    geocode.get(..5).filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
}

/// The region of a loaded zone, if it has a geocode.
pub fn zone_region<'a>(app: &'a App, zone_id: &str) -> Option<&'a str> {
    app.geo.zone(zone_id).and_then(|z| z.geocode.as_deref()).and_then(county_of)
}

/// The rules file without its rules (engine settings and approval classes stay valid).
fn without_rules(text: &str) -> Result<String, String> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    doc.remove("rule");
    toml::to_string(&doc).map_err(|e| e.to_string())
}

static ALERTS_PUBLISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "dc_cluster_alerts_published_total",
        "Alert versions a worker published to the cluster (alerts/{region}/{id}), by kind (change, resend, removed)",
        &["kind"]
    )
    .expect("metric registers")
});

static ALERTS_RECEIVED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "dc_cluster_alerts_received_total",
        "Alert messages a fan-out node received, by outcome (applied, stale, removed, malformed)",
        &["outcome"]
    )
    .expect("metric registers")
});

static ROUTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "dc_cluster_routed_total",
        "Device publishes a writer handled, by outcome (forwarded: once per region; no_region; refused: nothing valid)",
        &["outcome"]
    )
    .expect("metric registers")
});

fn touch_metrics() {
    for kind in ["change", "resend", "removed"] {
        ALERTS_PUBLISHED.with_label_values(&[kind]);
    }
    for outcome in ["applied", "stale", "removed", "malformed"] {
        ALERTS_RECEIVED.with_label_values(&[outcome]);
    }
    for outcome in ["forwarded", "no_region", "refused"] {
        ROUTED.with_label_values(&[outcome]);
    }
}

/// A writer's work for one device publish: validate, write to the sink, forward to the owning workers.
fn write_and_route(app: &App, publisher: &Publisher, msg: RawMessage) {
    let processed = app.ingest.process(&msg, now_ms());
    if !processed.readings.is_empty() {
        if let Some(influx) = &app.influx {
            influx.send(&processed.readings);
        }
    }
    if processed.readings.is_empty() && processed.status.is_none() {
        ROUTED.with_label_values(&["refused"]).inc();
        return;
    }
    let regions = regions_of(app, &processed);
    if regions.is_empty() {
        ROUTED.with_label_values(&["no_region"]).inc();
        return;
    }
    for region in regions {
        // The raw publish, so the worker decodes exactly what the device sent (and counts the same refusals).
        match publisher.publish_blocking(upstream::region_topic(&region, &msg.topic), msg.payload.clone(), false) {
            Ok(()) => ROUTED.with_label_values(&["forwarded"]).inc(),
            Err(e) => tracing::error!(error = %e, topic = %msg.topic, "could not forward to region {region}"),
        }
    }
}

/// Every region whose zones contain one of the publish's readings (at the reading's own position for mobile units),
/// or the device's registered position for a status message.
fn regions_of(app: &App, processed: &Processed) -> BTreeSet<String> {
    let registry = app.registry().read();
    let mut positions: Vec<(f64, f64)> = Vec::new();
    for r in &processed.readings {
        match (r.position, registry.get(&r.sensor_id)) {
            (Some(p), _) => positions.push((p.lat, p.lon)),
            (None, Some(s)) => positions.push((s.lat, s.lon)),
            (None, None) => {}
        }
    }
    if let Some(status) = &processed.status {
        if let Some(s) = registry.get(&status.device_id) {
            positions.push((s.lat, s.lon));
        }
    }
    positions.dedup();
    positions
        .into_iter()
        .flat_map(|(lat, lon)| app.geo.zones_containing(lat, lon))
        .filter_map(|z| z.geocode.as_deref().and_then(county_of).map(str::to_string))
        .collect()
}

/// A worker's alerts on the cluster: every change of an alert in its book goes to `alerts/{region}/{id}` (retained,
/// QoS 1) as the operator frame plus `public`, `worker`, `worker_url` and `region`. After every (re)connection the
/// whole book is sent again (a restart or a broker failover must not leave stale retained state; receivers drop what
/// they have already seen by id and version). Ended alerts stay retained for `retention_ms`, then are removed with
/// an empty retained message.
async fn publish_alerts(app: Arc<App>, publisher: Publisher, worker: String, retention_ms: i64) {
    let mut changes = app.alerts_tx.subscribe();
    let mut connections = publisher.connections();
    let mut expiry = tokio::time::interval(Duration::from_secs(60));
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut removed: HashSet<String> = HashSet::new();
    loop {
        let (ids, kind): (Vec<String>, &str) = tokio::select! {
            changed = connections.changed() => {
                if changed.is_err() {
                    return;
                }
                (app.book.lock().all().map(|a| a.id.clone()).collect(), "resend")
            }
            next = changes.recv() => match next {
                Ok(change) => (vec![change.id.clone()], "change"),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "alert changes outran the cluster publisher; sending the whole book");
                    (app.book.lock().all().map(|a| a.id.clone()).collect(), "resend")
                }
                Err(RecvError::Closed) => return,
            },
            _ = expiry.tick() => {
                let cutoff = now_ms() - retention_ms;
                let expired: Vec<(String, String)> = app
                    .book
                    .lock()
                    .all()
                    .filter(|a| !a.state.is_active() && a.updated_ms < cutoff && !removed.contains(&a.id))
                    .map(|a| (a.id.clone(), alert_topic(&app, a)))
                    .collect();
                for (id, topic) in expired {
                    if publisher.publish(topic, Bytes::new(), true).await.is_ok() {
                        ALERTS_PUBLISHED.with_label_values(&["removed"]).inc();
                        removed.insert(id);
                    }
                }
                continue;
            }
        };
        let cutoff = now_ms() - retention_ms;
        for id in ids {
            // The book's current version: a change seen late is sent as what it has become since.
            let message = {
                let book = app.book.lock();
                match book.get(&id) {
                    // Alerts from partner agencies share the channel but are not ours to publish.
                    None => continue,
                    Some(a) if !a.state.is_active() && a.updated_ms < cutoff => continue,
                    Some(a) => (alert_topic(&app, a), alert_payload(&app, a, &worker)),
                }
            };
            match publisher.publish(message.0, message.1, true).await {
                Ok(()) => ALERTS_PUBLISHED.with_label_values(&[kind]).inc(),
                Err(e) => tracing::error!(error = %e, id, "could not publish the alert to the cluster"),
            }
        }
    }
}

fn alert_topic(app: &App, alert: &Alert) -> String {
    format!("alerts/{}/{}", zone_region(app, &alert.area_id).unwrap_or("unassigned"), alert.id)
}

fn alert_payload(app: &App, alert: &Alert, worker: &str) -> Bytes {
    let mut frame = serde_json::to_value(app.alert_message(alert)).unwrap_or_default();
    if let Some(map) = frame.as_object_mut() {
        map.insert("public".into(), alert.is_public().into());
        map.insert("worker".into(), worker.into());
        map.insert("worker_url".into(), app.public_url.clone().into());
        map.insert("region".into(), zone_region(app, &alert.area_id).unwrap_or("unassigned").into());
    }
    Bytes::from(frame.to_string())
}

/// The alert as a worker publishes it (the operator frame's fields plus the cluster's).
#[derive(Deserialize)]
struct WireAlert {
    id: String,
    version: u32,
    state: AlertState,
    mode: Mode,
    event: String,
    severity: Severity,
    urgency: Urgency,
    certainty: Certainty,
    headline: String,
    headlines: WireHeadlines,
    area: serde_json::Value,
    area_id: String,
    area_name: String,
    sent: String,
    cap: String,
    level: String,
    value: f64,
    sensors: Vec<String>,
    acknowledged_by: Option<String>,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    comments: Vec<CommentMessage>,
    #[serde(default)]
    reports: Vec<String>,
    public: bool,
}

#[derive(Deserialize)]
struct WireHeadlines {
    #[serde(rename = "zh-TW")]
    zh_tw: String,
    en: String,
}

struct Remote {
    /// The payload as received (with `worker`, `region`, `public`): what operators see.
    operator: serde_json::Value,
    broadcast: Arc<AlertBroadcast>,
    /// When we learnt that it ended: forgotten `closed_retention_h` later, like the worker's retained message (whose
    /// removal we may miss while disconnected).
    ended_ms: Option<i64>,
}

/// A fan-out node's picture of the cluster's alerts: the newest version of each, from `alerts/{region}/{id}`.
#[derive(Default)]
pub struct RemoteAlerts {
    alerts: RwLock<HashMap<String, Remote>>,
}

impl RemoteAlerts {
    /// Folds one message in; returns the change to broadcast when it is news (a version newer than what we hold).
    /// Replays of versions already seen — a worker's resend after a restart, retained messages after our own
    /// reconnect — return `None`, so no citizen sees an alert twice. Ended alerts older than `forget_ended_before_ms`
    /// are dropped on the way.
    pub fn apply(
        &self,
        topic: &str,
        payload: &[u8],
        now_ms: i64,
        forget_ended_before_ms: i64,
    ) -> Option<Arc<AlertBroadcast>> {
        let outcome = |o: &str| ALERTS_RECEIVED.with_label_values(&[o]).inc();
        let malformed = |why: String| {
            outcome("malformed");
            tracing::warn!(topic, reason = %why, "alert message refused");
            None
        };
        let mut parts = topic.split('/');
        let (Some("alerts"), Some(_region), Some(id), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return malformed("topic is not alerts/{region}/{id}".into());
        };
        if payload.is_empty() {
            // The worker removed an ended alert from the broker.
            self.alerts.write().remove(id);
            outcome("removed");
            return None;
        }
        let wire: WireAlert = match serde_json::from_slice(payload) {
            Ok(w) => w,
            Err(e) => return malformed(format!("payload: {e}")),
        };
        if wire.id != id {
            return malformed(format!(
                "topic names alert `{id}`, payload `{}`",
                wire.id.chars().take(80).collect::<String>()
            ));
        }
        let operator: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
        let mut alerts = self.alerts.write();
        if alerts.get(id).is_some_and(|known| known.broadcast.version >= wire.version) {
            outcome("stale");
            return None;
        }
        let public = wire.public;
        let message = AlertMessage {
            kind: "alert",
            id: wire.id,
            version: wire.version,
            state: wire.state,
            mode: wire.mode,
            event: wire.event,
            severity: wire.severity,
            urgency: wire.urgency,
            certainty: wire.certainty,
            headline: wire.headline,
            headlines: Headlines { zh_tw: wire.headlines.zh_tw, en: wire.headlines.en },
            area: wire.area,
            area_id: wire.area_id,
            area_name: wire.area_name,
            sent: wire.sent,
            cap: wire.cap,
            level: wire.level,
            value: wire.value,
            sensors: wire.sensors,
            acknowledged_by: wire.acknowledged_by,
            rule: wire.rule,
            comments: wire.comments,
            reports: wire.reports,
        };
        let mut broadcast = AlertBroadcast::new(message, public);
        broadcast.operator = String::from_utf8_lossy(payload).into_owned();
        let broadcast = Arc::new(broadcast);
        let ended_ms = (!broadcast.is_active).then_some(now_ms);
        alerts.insert(id.to_string(), Remote { operator, broadcast: Arc::clone(&broadcast), ended_ms });
        alerts.retain(|_, r| r.ended_ms.is_none_or(|t| t >= forget_ended_before_ms));
        outcome("applied");
        Some(broadcast)
    }

    /// Active alerts' operator frames, for the operators' snapshot.
    pub fn active_operator(&self) -> Vec<serde_json::Value> {
        self.alerts.read().values().filter(|r| r.broadcast.is_active).map(|r| r.operator.clone()).collect()
    }

    /// Every alert's operator frame, for `GET /api/v1/alerts`.
    pub fn all_operator(&self) -> Vec<serde_json::Value> {
        self.alerts.read().values().map(|r| r.operator.clone()).collect()
    }

    /// What a (re)connecting citizen missed, by the same rule as for the local book (`web/citizen.rs`): active
    /// alerts for its zones newer than what it saw, and the end of any it saw.
    pub fn citizen_replay(&self, zones: &HashSet<String>, lang: Lang, seen: &HashMap<&str, u32>) -> Vec<String> {
        self.alerts
            .read()
            .values()
            .map(|r| &r.broadcast)
            .filter(|b| {
                let newer = seen.get(b.id.as_str()).is_none_or(|v| b.version > *v);
                newer && (b.is_active || seen.contains_key(b.id.as_str()))
            })
            .filter_map(|b| b.citizen_frame(zones, lang).map(str::to_string))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resolve(section: &str, overrides: Overrides) -> Result<Option<Cluster>, ClusterError> {
        let section: UpstreamSection = toml::from_str(section).unwrap();
        Cluster::resolve(Some(&section), overrides, "x.toml")
    }

    #[test]
    fn no_upstream_is_the_embedded_mode() {
        assert!(Cluster::resolve(None, Overrides::default(), "x.toml").unwrap().is_none());
    }

    #[test]
    fn command_line_overrides_the_file() {
        let c = resolve(
            "url = \"mqtt://b:1883\"\nclient_id = \"a\"\nregions = [\"10008\"]",
            Overrides {
                url: Some("mqtt://c:1884".into()),
                client_id: Some("w2".into()),
                regions: vec!["64000".into()],
                role: None,
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!((c.role, c.upstream.host.as_str(), c.upstream.port), (Role::Worker, "c", 1884));
        assert_eq!((c.upstream.client_id.as_str(), c.regions.as_slice()), ("w2", ["64000".to_string()].as_slice()));
    }

    #[test]
    fn bad_settings_name_the_key_and_the_reason() {
        let cases = [
            ("url = \"mqtt://b\"", "client_id", "required"),
            ("url = \"mqtt://b\"\nclient_id = \"w\"\nrole = \"boss\"", "role", "boss"),
            ("url = \"mqtt://b\"\nclient_id = \"w\"\nregions = [\"99999\"]", "regions", "county code"),
            (
                "url = \"mqtt://b\"\nclient_id = \"w\"\nrole = \"fanout\"\nregions = [\"10008\"]",
                "regions",
                "only workers",
            ),
            ("url = \"mqtt://b\"\nclient_id = \"w\"\nusername = \"u\"", "username", "both"),
            ("url = \"mqtts://b\"\nclient_id = \"w\"", "url", "TLS"),
            ("role = \"fanout\"", "url", "--upstream"),
            ("url = \"mqtt://b\"\nclient_id = \"w\"\nshare_group = \"a/b\"", "share_group", "letters"),
        ];
        for (text, key, why) in cases {
            let e = resolve(text, Overrides::default()).unwrap_err().to_string();
            assert!(e.contains("x.toml") && e.contains(&format!("upstream.{key}")) && e.contains(why), "{text}: {e}");
        }
        let e = toml::from_str::<UpstreamSection>("regoins = []").unwrap_err().to_string();
        assert!(e.contains("regoins"), "{e}");
    }

    #[test]
    fn workers_keep_only_their_zones_and_name_alerts_after_themselves() {
        let mut files = ConfigFiles::embedded().unwrap();
        let all = zone_regions(&files.zones.0, "zones").unwrap().len();
        let c = resolve("url = \"mqtt://b\"\nclient_id = \"kao\"\nregions = [\"64000\"]", Overrides::default())
            .unwrap()
            .unwrap();
        c.prepare(&mut files).unwrap();
        let kept = zone_regions(&files.zones.0, "zones").unwrap();
        assert!(!kept.is_empty() && kept.len() < all, "{kept:?}");
        assert!(kept.iter().all(|(_, r)| r == "64000"), "{kept:?}");
        assert!(files.main.alerting.id_prefix.ends_with("-kao"), "{}", files.main.alerting.id_prefix);

        let mut files = ConfigFiles::embedded().unwrap();
        let c = resolve("url = \"mqtt://b\"\nclient_id = \"w\"\nregions = [\"10020\"]", Overrides::default())
            .unwrap()
            .unwrap();
        let e = c.prepare(&mut files).unwrap_err().to_string();
        assert!(e.contains("10020") && e.contains("owns no zone"), "{e}");
    }

    #[test]
    fn zones_without_a_geocode_are_refused_by_name() {
        let text =
            r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"id":"z1"},"geometry":null}]}"#;
        let e = zone_regions(text, "zones.geojson").unwrap_err().to_string();
        assert!(e.contains("zones.geojson") && e.contains("z1") && e.contains("geocode"), "{e}");
    }

    #[test]
    fn writers_and_fanouts_run_no_rules() {
        let mut files = ConfigFiles::embedded().unwrap();
        let c =
            resolve("url = \"mqtt://b\"\nclient_id = \"f\"\nrole = \"fanout\"", Overrides::default()).unwrap().unwrap();
        c.prepare(&mut files).unwrap();
        let rules = alerting::RuleSet::from_toml(&files.rules.0, &files.rules.1).unwrap();
        assert!(rules.rules.is_empty());
        assert!(files.dissemination.is_none());
    }

    fn sample(id: &str, version: u32, state: &str) -> String {
        serde_json::json!({
            "type": "alert", "id": id, "version": version, "state": state, "mode": "Actual", "event": "heavy_rain",
            "severity": "Severe", "urgency": "Immediate", "certainty": "Observed", "headline": "豪雨（神木）",
            "headlines": {"zh-TW": "豪雨（神木）", "en": "Extremely heavy rain (Shenmu)"}, "area": null,
            "area_id": "dfa-xinyi-shenmu", "area_name": "神木", "sent": "2026-11-26T18:00:00+08:00",
            "cap": format!("/cap/{id}.{version}.xml"), "level": "豪雨", "value": 120.0, "sensors": ["RG0001"],
            "acknowledged_by": null, "public": true, "worker": "w1", "region": "10008", "worker_url": "http://w1"
        })
        .to_string()
    }

    #[test]
    fn fanout_keeps_the_newest_version_and_refuses_bad_messages() {
        let remote = RemoteAlerts::default();
        let zones: HashSet<String> = ["dfa-xinyi-shenmu".to_string()].into();
        let t = "alerts/10008/A1";
        let first = remote.apply(t, sample("A1", 1, "raised").as_bytes(), 1_000, 0).expect("news");
        assert!(first.citizen_frame(&zones, Lang::En).unwrap().contains("Extremely heavy rain"));
        assert!(first.operator.contains("\"worker\":\"w1\""), "{}", first.operator);
        // A resend of the same version (a restarted worker) and an older one are not news.
        assert!(remote.apply(t, sample("A1", 1, "raised").as_bytes(), 1_000, 0).is_none());
        assert!(remote.apply(t, sample("A1", 2, "updated").as_bytes(), 1_000, 0).is_some());
        assert!(remote.apply(t, sample("A1", 1, "raised").as_bytes(), 1_000, 0).is_none());
        // Bad messages are refused, and what we hold survives them.
        assert!(remote.apply(t, b"{not json", 1_000, 0).is_none());
        assert!(remote.apply("alerts/10008/A2", sample("A1", 3, "updated").as_bytes(), 1_000, 0).is_none());
        assert!(remote.apply("alerts/A1", sample("A1", 3, "updated").as_bytes(), 1_000, 0).is_none());
        assert_eq!(remote.active_operator().len(), 1);
        assert_eq!(remote.active_operator()[0]["version"], 2);
        let seen: HashMap<&str, u32> = [("A1", 1)].into();
        assert_eq!(remote.citizen_replay(&zones, Lang::ZhTw, &seen).len(), 1);
        let seen: HashMap<&str, u32> = [("A1", 2)].into();
        assert!(remote.citizen_replay(&zones, Lang::ZhTw, &seen).is_empty());
        // An ended alert: replayed only to whoever saw it; an empty retained message removes it.
        assert!(remote.apply(t, sample("A1", 3, "cleared").as_bytes(), 1_000, 0).is_some());
        assert!(remote.citizen_replay(&zones, Lang::ZhTw, &HashMap::new()).is_empty());
        assert_eq!(remote.citizen_replay(&zones, Lang::ZhTw, &seen).len(), 1);
        assert!(remote.apply(t, b"", 1_000, 0).is_none());
        assert!(remote.all_operator().is_empty());
        // An ended alert whose removal we missed is forgotten after the retention.
        assert!(remote.apply(t, sample("A1", 4, "cleared").as_bytes(), 1_000, 0).is_some());
        assert!(remote.apply("alerts/10008/A9", sample("A9", 1, "raised").as_bytes(), 5_000, 2_000).is_some());
        let left: Vec<_> = remote.all_operator().iter().map(|a| a["id"].clone()).collect();
        assert_eq!(left, [json!("A9")]);
    }
}
