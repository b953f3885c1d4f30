//! Wiring: config → geo index, ingest, broker, rule engine, alert book → web.
//!
//! The broker's ingest link thread runs the whole hot path synchronously (decode → validate → rules → alert book) so
//! that a reading crosses no channel before its alert exists; alert changes are then broadcast to the async web side.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use alerting::message::{AlertMessage, AreaInfo};
use alerting::{Alert, AlertBook, Mode, RuleEngine, ZoneRef};
use anyhow::Context;
use geo_index::{GeoIndex, LoadPolicy, Resolution};
use ingest::broker::BrokerConfig;
use ingest::devices::DeviceStore;
use ingest::payload::Limits;
use ingest::pipeline::DeviceStatus;
use ingest::validate::ValidationConfig;
use ingest::{Ingest, IngestConfig, Reading, SensorRegistry};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::config::ConfigFiles;

/// Listen addresses after flags and environment have had their say.
#[derive(Debug, Clone)]
pub struct Listen {
    pub mqtt_v4: Option<SocketAddr>,
    pub mqtt_v5: Option<SocketAddr>,
    /// TLS listeners with device client certificates (8883 / 8884).
    pub mqtt_v4_tls: Option<SocketAddr>,
    pub mqtt_v5_tls: Option<SocketAddr>,
    pub http: SocketAddr,
}

/// The latest a sensor told us, for the operators' snapshot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SensorLive {
    pub latest: BTreeMap<String, (i64, f64)>,
    pub last_seen_ms: Option<i64>,
    pub online: Option<bool>,
    pub battery_v: Option<f64>,
    /// Where a mobile sensor (hazmat truck) last said it was; fixed sensors stay where the registry puts them.
    pub position: Option<(f64, f64)>,
}

/// A frame for the operators' map that sits at one place (a sensor update, a report cluster), so that an operator
/// socket filtered to a bounding box or region can skip it without parsing it. `at` is `(lat, lon)`; `None` passes
/// every filter.
#[derive(Debug, Clone)]
pub struct MapDelta {
    pub at: Option<(f64, f64)>,
    pub frame: String,
}

/// One alert change, serialised once per audience so that fan-out to many sockets costs no JSON work per socket.
pub struct AlertBroadcast {
    /// The zones the alert covers: a citizen subscribed to a place in any of them receives it.
    pub area_ids: Vec<String>,
    pub id: String,
    pub version: u32,
    pub is_active: bool,
    /// The operators' frame (every language).
    pub operator: String,
    /// The citizens' frames, zh-TW and en; `None` for what must not reach the public (non-public external sources).
    pub citizen: Option<(String, String)>,
}

impl AlertBroadcast {
    /// `public`: whether the public channels may carry this version (`Alert::is_public`: not held by an approval gate,
    /// not operators-only).
    pub fn new(message: AlertMessage, public: bool) -> Self {
        let citizen = |lang: &str| serde_json::to_string(&CitizenAlert::new(&message, lang)).unwrap_or_default();
        Self {
            area_ids: vec![message.area_id.clone()],
            id: message.id.clone(),
            version: message.version,
            is_active: message.state.is_active(),
            citizen: public.then(|| (citizen("zh-TW"), citizen("en"))),
            operator: serde_json::to_string(&message).unwrap_or_default(),
        }
    }

    /// The frame for a citizen subscribed in `lang` whose places lie in `zones`, if this alert is for them.
    pub fn citizen_frame(&self, zones: &std::collections::HashSet<String>, lang: Lang) -> Option<&str> {
        let (zh, en) = self.citizen.as_ref()?;
        if !self.area_ids.iter().any(|a| zones.contains(a)) {
            return None;
        }
        Some(match lang {
            Lang::ZhTw => zh,
            Lang::En => en,
        })
    }
}

/// The languages the citizen channel serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum Lang {
    #[serde(rename = "zh-TW")]
    ZhTw,
    #[serde(rename = "en")]
    En,
}

/// What a citizen's app receives: the INTERFACE alert frame with the headline in the subscribed language, and a
/// label that no app can miss when the alert is a drill or a test.
#[derive(Debug, Serialize)]
pub struct CitizenAlert<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: &'a str,
    pub version: u32,
    pub state: alerting::AlertState,
    pub mode: Mode,
    /// False for Exercise and Test: apps must never present such an alert as real.
    pub is_real: bool,
    /// "演練 Drill" / "測試 Test" for non-Actual alerts, absent for real ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<&'static str>,
    pub event: &'a str,
    pub severity: alerting::alert::Severity,
    pub urgency: alerting::alert::Urgency,
    pub certainty: alerting::alert::Certainty,
    pub headline: &'a str,
    pub lang: &'static str,
    pub area: &'a serde_json::Value,
    pub area_name: &'a str,
    pub sent: &'a str,
    pub cap: &'a str,
}

impl<'a> CitizenAlert<'a> {
    pub fn new(m: &'a AlertMessage, lang: &str) -> Self {
        let (headline, lang) = if lang == "en" { (&m.headlines.en, "en") } else { (&m.headlines.zh_tw, "zh-TW") };
        let label = match m.mode {
            Mode::Actual => None,
            Mode::Exercise => Some(if lang == "en" { "Drill" } else { "演練" }),
            Mode::Test => Some(if lang == "en" { "Test" } else { "測試" }),
        };
        CitizenAlert {
            kind: "alert",
            id: &m.id,
            version: m.version,
            state: m.state,
            mode: m.mode,
            is_real: m.mode == Mode::Actual,
            label,
            event: &m.event,
            severity: m.severity,
            urgency: m.urgency,
            certainty: m.certainty,
            headline,
            lang,
            area: &m.area,
            area_name: &m.area_name,
            sent: &m.sent,
            cap: &m.cap,
        }
    }
}

/// Everything the web side reads; shared behind an `Arc`.
pub struct App {
    pub geo: Arc<GeoIndex>,
    /// The rule engine, shared by the ingest link thread, the housekeeping tick and operators' forecasts.
    pub engine: Arc<Mutex<RuleEngine>>,
    /// Every validated reading, for operators' history (`None` only without a data dir).
    pub store: Option<Arc<store::ReadingStore>>,
    /// The InfluxDB v2 sink, when configured.
    pub influx: Option<store::InfluxSink>,
    /// CAP per transition, the feed, webhooks and cell broadcast, when configured.
    pub dissemination: Option<alerting::dissemination::Dissemination>,
    /// Demo receivers (`/demo/webhook…`, `/demo/cbc/…`): what they got, for the demo and its tests.
    pub demo_received: Mutex<Vec<serde_json::Value>>,
    /// Alerts from partner agencies (inbound CAP), when configured.
    pub inbound: Option<alerting::inbound::Inbound>,
    pub ingest: Arc<Ingest>,
    pub book: Mutex<AlertBook>,
    pub live: RwLock<BTreeMap<String, SensorLive>>,
    /// Alert changes for the websocket channels, rendered once for every channel and language. Slow receivers lag
    /// and are dropped by their connection task.
    pub alerts_tx: broadcast::Sender<Arc<AlertBroadcast>>,
    /// Coalesced sensor updates for operators (one frame per changed sensor per tick).
    pub sensors_tx: broadcast::Sender<Arc<MapDelta>>,
    /// Sensors whose live state changed since the last tick.
    pub dirty_sensors: Mutex<std::collections::HashSet<String>>,
    /// Operator tokens (hashed, scoped).
    pub tokens: crate::web::auth::TokenSet,
    pub public_url: String,
    /// Background map tiles for the operators' map (`{z}/{x}/{y}` template; empty for none).
    pub tile_url: String,
    /// Websocket clients silent for this long are dropped (`web::liveness`).
    pub ws_idle_timeout: std::time::Duration,
    pub mode: Mode,
    /// Citizen reports: rate limits, clusters, photo store (issue 11; `reports/`, `web/reports.rs`).
    pub reports: crate::reports::ReportBook,
    /// Alerts of the cluster's workers, on a fan-out node (empty elsewhere; `cluster.rs`).
    pub cluster_alerts: crate::scale_out::RemoteAlerts,
    /// Where a rules reload reads from and what it checks against (`rules_admin`).
    pub rules_source: crate::rules_admin::RulesSource,
    /// HTTPS on the HTTP port (`http.tls`): the acceptor with the deployment's server certificate (`web/tls.rs`).
    pub http_tls: Option<tokio_rustls::TlsAcceptor>,
    /// Per-address limits of the public read-only endpoints (`web/public.rs`).
    pub public_limit: crate::web::public::PublicLimit,
}

impl App {
    pub fn registry(&self) -> &Arc<RwLock<SensorRegistry>> {
        self.ingest.registry()
    }

    pub fn alert_message(&self, alert: &Alert) -> AlertMessage {
        let zone = self.geo.zone(&alert.area_id);
        let area = AreaInfo {
            name: zone.map(|z| z.name.as_str()).unwrap_or(&alert.area_id),
            name_en: zone.and_then(|z| z.name_en.as_deref()).unwrap_or(&alert.area_id),
            geometry: zone.map(|z| z.geojson_geometry()).unwrap_or(serde_json::Value::Null),
        };
        AlertMessage::new(alert, area)
    }

    pub fn publish(&self, alert: &Alert) {
        let message = Arc::new(AlertBroadcast::new(self.alert_message(alert), alert.is_public()));
        tracing::info!(id = %alert.id, version = alert.version, state = ?alert.state, event = %alert.event, area = %alert.area_id, level = %alert.level.name_en, "alert");
        crate::metrics::ALERT_TRANSITIONS.with_label_values(&[state_label(alert)]).inc();
        // No receivers is normal (no operator connected).
        let _ = self.alerts_tx.send(message);
        if let Some(d) = &self.dissemination {
            d.alert_changed(&alert_view(alert));
        }
    }

    fn record_readings(&self, readings: &[Reading]) {
        let mut live = self.live.write();
        let mut dirty = self.dirty_sensors.lock();
        for r in readings {
            if !dirty.contains(&r.sensor_id) {
                dirty.insert(r.sensor_id.clone());
            }
            let entry = live.entry(r.sensor_id.clone()).or_default();
            let slot = entry.latest.entry(r.metric.name().to_string()).or_insert((i64::MIN, 0.0));
            if r.ts_ms >= slot.0 {
                *slot = (r.ts_ms, r.value);
            }
            entry.last_seen_ms = Some(entry.last_seen_ms.unwrap_or(i64::MIN).max(r.ts_ms));
            entry.online = Some(true);
            if let Some(p) = r.position {
                entry.position = Some((p.lat, p.lon));
            }
        }
    }

    fn record_status(&self, status: &DeviceStatus) {
        self.dirty_sensors.lock().insert(status.device_id.clone());
        let mut live = self.live.write();
        let entry = live.entry(status.device_id.clone()).or_default();
        entry.online = Some(status.online);
        if status.battery_v.is_some() {
            entry.battery_v = status.battery_v;
        }
    }
}

/// The dissemination side's view of an alert (it does not depend on the rule engine's types).
fn alert_view(alert: &Alert) -> alerting::dissemination::AlertView {
    use alerting::dissemination::{AlertView, ViewMode, ViewState};
    AlertView {
        id: alert.id.clone(),
        version: alert.version,
        state: match alert.state {
            alerting::AlertState::Raised => ViewState::Raised,
            alerting::AlertState::Updated => ViewState::Updated,
            alerting::AlertState::Cleared => ViewState::Cleared,
            alerting::AlertState::Cancelled => ViewState::Cancelled,
        },
        mode: match alert.mode {
            Mode::Actual => ViewMode::Actual,
            Mode::Exercise => ViewMode::Exercise,
            Mode::Test => ViewMode::Test,
        },
        event: alert.event.clone(),
        severity: alert.level.severity.into(),
        urgency: alert.level.urgency.into(),
        certainty: alert.level.certainty.into(),
        level_name_zh: alert.level.name.clone(),
        level_name_en: alert.level.name_en.clone(),
        area_id: alert.area_id.clone(),
        value: alert.value,
        raised_ms: alert.raised_ms,
        updated_ms: alert.updated_ms,
        public_release: alert.is_public(),
        values: alert.values.clone(),
        reports: alert.reports.clone(),
    }
}

fn state_label(alert: &Alert) -> &'static str {
    match alert.state {
        alerting::AlertState::Raised => "raised",
        alerting::AlertState::Updated => "updated",
        alerting::AlertState::Cleared => "cleared",
        alerting::AlertState::Cancelled => "cancelled",
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Builds the app from config files and starts the broker; returns the app and the bound HTTP listener.
pub async fn start(
    files: ConfigFiles,
    listen: &Listen,
    tokens: crate::web::auth::TokenSet,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<(Arc<App>, tokio::net::TcpListener)> {
    start_with(files, listen, tokens, data_dir, None).await
}

/// [`start`], or with `cluster` a role on an external MQTT broker instead of the front door (`cluster.rs`).
pub async fn start_with(
    mut files: ConfigFiles,
    listen: &Listen,
    tokens: crate::web::auth::TokenSet,
    data_dir: Option<PathBuf>,
    cluster: Option<crate::scale_out::Cluster>,
) -> anyhow::Result<(Arc<App>, tokio::net::TcpListener)> {
    if let Some(cluster) = &cluster {
        cluster.prepare(&mut files)?;
    }
    let cfg = &files.main;
    if let Some(dir) = &data_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
    }
    let resolution = Resolution::try_from(cfg.geo.h3_resolution).context("geo.h3_resolution")?;
    let mut geo = GeoIndex::with_limits(resolution, cfg.geo.limits());
    let problems = geo
        .load_zones(&files.zones.0, LoadPolicy::StopOnFirst)
        .with_context(|| format!("{} (size limit: geo.max_zone_cells)", files.zones.1.display()))?;
    for p in &problems {
        tracing::warn!(file = %files.zones.1.display(), problem = %p, "zone skipped");
    }
    if let Some((csv, path)) = &files.cell_sites {
        let problems =
            geo.load_cell_sites(csv, LoadPolicy::SkipInvalid).with_context(|| format!("{}", path.display()))?;
        for p in &problems {
            tracing::warn!(file = %path.display(), problem = %p, "cell site skipped");
        }
    }
    let registry = SensorRegistry::from_toml(&files.sensors.0, &files.sensors.1)?;
    // Devices and sensors persist in the data dir (provisioning, revocations, operators' registry changes); the
    // config files seed them.
    let (devices, registry) = match &data_dir {
        Some(dir) => {
            let paths = ingest::identity::DataDir::new(dir);
            let devices = DeviceStore::open(&paths.devices_file())?;
            devices.merge_toml(&files.devices.0, &files.devices.1)?;
            (devices, registry.restore(&paths.sensors_file())?)
        }
        None => (DeviceStore::from_toml(&files.devices.0, &files.devices.1)?, registry),
    };
    let templates = match &files.dissemination {
        Some(_) => Some(
            alerting::cap::Templates::from_toml_str(&files.cap_templates.0)
                .map_err(|e| anyhow::anyhow!("{}: {e}", files.cap_templates.1.display()))?,
        ),
        None => None,
    };
    let inbound_config = match &files.inbound {
        Some((text, path)) => Some(alerting::inbound::InboundConfig::from_toml(text, path)?),
        None => None,
    };
    let inbound_sources: Vec<String> = inbound_config
        .iter()
        .flat_map(|c| c.feeds.iter().map(|f| f.name.clone()).chain(c.pushes.iter().map(|p| p.name.clone())))
        .collect();
    let rules_source = crate::rules_admin::RulesSource::new(
        (!files.embedded).then(|| files.rules.1.clone()),
        files.rules.1.clone(),
        inbound_sources,
        templates,
    );
    let rules = rules_source.load(&files.rules.0)?;
    tracing::info!(
        zones = geo.zones().count(),
        sensors = registry.len(),
        devices = devices.len(),
        rules = rules.rules.len(),
        "configuration loaded"
    );

    let ingest = Arc::new(Ingest::new(
        Arc::new(RwLock::new(registry)),
        IngestConfig {
            limits: Limits { max_payload_bytes: cfg.ingest.max_payload_bytes, max_batch: cfg.ingest.max_batch },
            validation: ValidationConfig {
                max_future_ms: i64::from(cfg.ingest.max_future_s) * 1000,
                max_age_ms: i64::from(cfg.ingest.max_age_s) * 1000,
            },
            dead_letter_capacity: cfg.ingest.dead_letters,
        },
    ));
    let (alerts_tx, _) = broadcast::channel(4096);
    let (sensors_tx, _) = broadcast::channel(4096);
    let reports = crate::reports::ReportBook::open(&geo, data_dir.as_deref(), crate::reports::ReportPolicy::default())
        .context("opening the citizen report clusters")?;
    let geo = Arc::new(geo);
    // Partner agencies' warnings are kept in the data dir, so they (and what was cancelled) survive a restart.
    let (inbound, inbound_events) = match inbound_config {
        Some(config) => {
            let (inbound, events) = match &data_dir {
                Some(dir) => alerting::inbound::Inbound::start_in(config, Arc::clone(&geo), &dir.join("inbound"))?,
                None => alerting::inbound::Inbound::start(config, Arc::clone(&geo))?,
            };
            (Some(inbound), Some(events))
        }
        None => (None, None),
    };
    // Alerts are journaled in the data dir and restored after a restart (kill -9 included) without duplicates: the
    // journal is newer than the engine's window snapshot, so the engine adopts the book's levels.
    let mut engine = RuleEngine::new(rules, i64::from(cfg.alerting.max_lateness_s) * 1000);
    for warning in engine.set_zones(geo.zones()) {
        tracing::warn!(%warning, "rules and zones");
    }
    let store = match &data_dir {
        Some(dir) => {
            Some(Arc::new(store::ReadingStore::open(dir, cfg.store.clone()).context("opening the readings store")?))
        }
        None => None,
    };
    let alerts_dir = data_dir.as_ref().map(|d| d.join("alerts"));
    let book = match &alerts_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let (book, restored) =
                AlertBook::open(dir, cfg.alerting.id_prefix.clone()).context("opening the alert journal")?;
            let snapshot = alerting::journal::load_engine_snapshot(dir).context("reading the rules snapshot")?;
            let newest = snapshot.as_ref().map(crate::rules_admin::snapshot_newest).unwrap_or_default();
            if let Some(snapshot) = snapshot {
                engine.restore(snapshot, Some(now_ms()));
            }
            // What the snapshot missed (readings up to a crash) is in the readings store: windows continue.
            if let Some(store) = &store {
                let replayed = crate::rules_admin::catch_up(
                    &mut engine,
                    &newest,
                    store,
                    &ingest.registry().read(),
                    &geo,
                    now_ms(),
                );
                tracing::info!(readings = replayed, "rule windows caught up from the readings store");
            }
            tracing::info!(
                records = restored.records,
                active = restored.active,
                truncated = restored.truncated_bytes,
                "alerts restored"
            );
            book
        }
        None => AlertBook::new(cfg.alerting.id_prefix.clone()),
    };
    let mut book = book;
    let mut adopted = Vec::new();
    engine.adopt_levels(&book, cfg.alerting.mode, &mut adopted);
    // Restored partner warnings, after the book's levels: a composite already raised on one stays as it is.
    if let Some(inbound) = &inbound {
        engine.set_external(inbound.active(), now_ms(), &mut adopted);
    }
    let restored_changes = book.apply_all(adopted.drain(..), cfg.alerting.mode);
    let engine = Arc::new(Mutex::new(engine));
    let influx = match (&cfg.influx, &data_dir) {
        (Some(influx), Some(dir)) => Some(
            store::InfluxSink::start(influx.clone(), &dir.join("influx-spool"), ingest.registry().read().iter())
                .context("starting the InfluxDB sink")?,
        ),
        (Some(_), None) => anyhow::bail!("[influx] needs a data dir for its spool"),
        _ => None,
    };
    let dissemination = match (&files.dissemination, &data_dir) {
        (Some((text, path)), Some(dir)) => {
            let templates = alerting::cap::Templates::from_toml_str(&files.cap_templates.0)
                .map_err(|e| anyhow::anyhow!("{}: {e}", files.cap_templates.1.display()))?;
            let text = text.replace("{public_url}", cfg.http.public_url.trim_end_matches('/'));
            let config = alerting::dissemination::DisseminationConfig::from_toml_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Some(
                alerting::dissemination::Dissemination::start(
                    config,
                    &dir.join("dissemination"),
                    Arc::clone(&geo),
                    templates,
                    cfg.http.public_url.trim_end_matches('/').to_string(),
                )
                .context("starting dissemination")?,
            )
        }
        _ => None,
    };
    let app = Arc::new(App {
        geo,
        engine: Arc::clone(&engine),
        dissemination,
        demo_received: Mutex::new(Vec::new()),
        store,
        influx,
        inbound,
        ingest: Arc::clone(&ingest),
        book: Mutex::new(book),
        live: RwLock::new(BTreeMap::new()),
        alerts_tx,
        sensors_tx,
        dirty_sensors: Mutex::new(Default::default()),
        tokens,
        public_url: cfg.http.public_url.trim_end_matches('/').to_string(),
        tile_url: cfg.http.map_tile_url.clone(),
        ws_idle_timeout: std::time::Duration::from_secs(cfg.http.ws_idle_timeout_s),
        mode: cfg.alerting.mode,
        reports,
        cluster_alerts: Default::default(),
        rules_source,
        http_tls: crate::web::tls::acceptor(cfg, data_dir.as_deref())?,
        public_limit: crate::web::public::PublicLimit::new(cfg.http.public_burst, cfg.http.public_per_s),
    });

    // Bind HTTP before the broker so that a busy port fails the start before anything runs.
    let http = tokio::net::TcpListener::bind(listen.http)
        .await
        .with_context(|| format!("cannot listen on {}", listen.http))?;

    for alert in &restored_changes {
        app.publish(alert);
    }
    tokio::spawn(rules_housekeeping(Arc::clone(&app), Arc::clone(&engine), alerts_dir.clone()));
    #[cfg(unix)]
    tokio::spawn(crate::rules_admin::reload_on_sighup(Arc::clone(&app)));
    let pipeline_engine = Arc::clone(&engine);
    let pipeline_app = Arc::clone(&app);
    let mut findings = Vec::new();
    let broker_config = BrokerConfig {
        v4_listen: listen.mqtt_v4,
        v5_listen: listen.mqtt_v5,
        v4_tls_listen: listen.mqtt_v4_tls,
        v5_tls_listen: listen.mqtt_v5_tls,
        data_dir: data_dir.clone(),
        max_payload_bytes: cfg.mqtt.broker_max_payload_bytes,
        max_connections: cfg.mqtt.max_connections,
        tls_server_names: cfg.tls.server_names.clone(),
        tls_cert: cfg.tls.cert.clone(),
        tls_key: cfg.tls.key.clone(),
        ..BrokerConfig::default()
    };
    let on_message = move |msg: ingest::RawMessage| {
        let app = &pipeline_app;
        let processed = app.ingest.process(&msg, now_ms());
        if let Some(status) = &processed.status {
            app.record_status(status);
        }
        if processed.readings.is_empty() {
            return;
        }
        app.record_readings(&processed.readings);
        // Neither store blocks: past their bounded queues readings are dropped and counted, never waited for.
        if let Some(store) = &app.store {
            store.append(&processed.readings);
        }
        if let Some(influx) = &app.influx {
            influx.send(&processed.readings);
        }
        let registry = app.registry().read();
        let mut engine = pipeline_engine.lock();
        for reading in &processed.readings {
            let Some(sensor) = registry.get(&reading.sensor_id) else { continue };
            let (lat, lon) = reading.position.map(|p| (p.lat, p.lon)).unwrap_or((sensor.lat, sensor.lon));
            let zones: Vec<ZoneRef<'_>> =
                app.geo.zones_containing(lat, lon).into_iter().map(|z| ZoneRef { id: &z.id, kind: z.kind }).collect();
            engine.evaluate(reading, sensor, &zones, &mut findings);
        }
        drop(engine);
        drop(registry);
        if findings.is_empty() {
            return;
        }
        let changed: Vec<Alert> = {
            let mut book = app.book.lock();
            // One fsync of the journal per batch of findings.
            book.apply_all(findings.drain(..), app.mode)
        };
        for alert in &changed {
            app.publish(alert);
        }
    };
    match &cluster {
        None => ingest::broker::start(&broker_config, Arc::new(devices), on_message)?,
        Some(cluster) => cluster.attach(&app, on_message)?,
    }
    if let Some(events) = inbound_events {
        tokio::spawn(crate::external::forward(Arc::clone(&app), events));
    }
    tokio::spawn(coalesce_sensor_updates(
        Arc::clone(&app),
        std::time::Duration::from_millis(cfg.http.sensor_update_ms),
    ));
    Ok((app, http))
}

/// Time-driven rules (deadman, forecast expiry) and durability: a tick every 10 s, the engine's window snapshot every
/// minute, a checkpoint of the alert journal every hour — and at every tick while a journal write has failed (a full
/// disk), so that the transitions kept in memory become durable as soon as space returns.
async fn rules_housekeeping(app: Arc<App>, engine: Arc<Mutex<RuleEngine>>, dir: Option<PathBuf>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        let mut findings = Vec::new();
        {
            let mut engine = engine.lock();
            engine.tick(now_ms(), &mut findings);
            // A partner warning can come into force after it arrives, and expire between inbound events.
            if let Some(inbound) = &app.inbound {
                engine.set_external(inbound.active(), now_ms(), &mut findings);
            }
            crate::metrics::record_rules(&engine.counters, &app.book.lock().counters);
        }
        if !findings.is_empty() {
            let changed = app.book.lock().apply_all(findings, app.mode);
            for alert in &changed {
                app.publish(alert);
            }
        }
        let Some(dir) = &dir else { continue };
        if ticks % 6 == 0 {
            let snapshot = engine.lock().snapshot();
            let dir = dir.clone();
            let saved =
                tokio::task::spawn_blocking(move || alerting::journal::save_engine_snapshot(&dir, &snapshot)).await;
            if !matches!(saved, Ok(Ok(()))) {
                tracing::error!("could not save the rules snapshot");
            }
        }
        if ticks % 360 == 0 || app.book.lock().needs_checkpoint() {
            if let Err(e) = app.book.lock().checkpoint() {
                tracing::error!(error = %e, "could not checkpoint the alert journal");
            }
        }
    }
}

/// Sends at most one update per sensor per `every`, however fast it reports: a busy map stays readable and cheap.
async fn coalesce_sensor_updates(app: Arc<App>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let changed: Vec<String> = app.dirty_sensors.lock().drain().collect();
        if changed.is_empty() || app.sensors_tx.receiver_count() == 0 {
            continue;
        }
        let live = app.live.read();
        let registry = app.registry().read();
        for id in changed {
            if let Some(state) = live.get(&id) {
                let at = state.position.or_else(|| registry.get(&id).map(|s| (s.lat, s.lon)));
                let frame = serde_json::json!({"type": "sensor", "id": id, "latest": state.latest,
                    "last_seen_ms": state.last_seen_ms, "online": state.online, "battery_v": state.battery_v,
                    "position": state.position.map(|(lat, lon)| serde_json::json!({"lat": lat, "lon": lon}))});
                let _ = app.sensors_tx.send(Arc::new(MapDelta { at, frame: frame.to_string() }));
            }
        }
    }
}
