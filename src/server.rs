//! Wiring: config → geo index, ingest, rule engine, alert book, sinks, partners → [`App`]; then the tasks that run
//! them: the hot path on the front door or an upstream broker (`hot_path.rs`), the housekeeping tick, partner
//! agencies' alerts (`external.rs`), agency vehicle-detector feeds (`vd_feed.rs`), the operators' coalesced map
//! updates, the rules reload on SIGHUP. The HTTP listener is bound here and served by `web::serve`.
//!
//! Nothing here runs per reading or per request: this file builds the parts, spawns the tasks and returns the handles.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use alerting::{Alert, AlertBook, RuleEngine};
use anyhow::Context;
use geo_index::{GeoIndex, LoadPolicy, Resolution};
use ingest::broker::BrokerConfig;
use ingest::devices::DeviceStore;
use ingest::payload::Limits;
use ingest::validate::ValidationConfig;
use ingest::{Ingest, IngestConfig, SensorRegistry};
use parking_lot::{Mutex, RwLock};
use tokio::sync::broadcast;

use crate::app::{Alerts, App, Channels, LiveSensors, Partners, Readings, WebSettings};
use crate::clock::now_ms;
use crate::config::{Config, ConfigFiles};
use crate::hot_path::HotPath;
use crate::scale_out::Scaled;

/// Listen addresses after flags and environment have had their say.
#[derive(Debug, Clone)]
pub struct Listen {
    /// MQTT 3.1.1, plain (1883).
    pub mqtt_v4: Option<SocketAddr>,
    /// MQTT 5, plain (1884).
    pub mqtt_v5: Option<SocketAddr>,
    /// TLS listeners with device client certificates (8883 / 8884).
    pub mqtt_v4_tls: Option<SocketAddr>,
    pub mqtt_v5_tls: Option<SocketAddr>,
    /// HTTP (or HTTPS with `http.tls`): the web edge.
    pub http: SocketAddr,
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

/// [`start`], or with `role` a role on an external MQTT cluster or the NATS backbone (`scale_out/`).
pub async fn start_with(
    mut files: ConfigFiles,
    listen: &Listen,
    tokens: crate::web::auth::TokenSet,
    data_dir: Option<PathBuf>,
    role: Option<Scaled>,
) -> anyhow::Result<(Arc<App>, tokio::net::TcpListener)> {
    if let Some(role) = &role {
        role.prepare(&mut files)?;
    }
    let cfg = &files.main;
    let Built { app, devices, inbound_events, alerts_dir, restored_changes } =
        build(&files, tokens, data_dir.as_deref(), listen.http)?;

    // Bind HTTP before the broker so that a busy port fails the start before anything runs.
    let http = tokio::net::TcpListener::bind(listen.http)
        .await
        .with_context(|| format!("cannot listen on {}", listen.http))?;

    app.publish_all(&restored_changes);
    // The publication's snapshot may predate the journal's last transitions (a crash between the two).
    let warnings = {
        let book = app.alerts.book.lock();
        app.alerts.publication.lock().resync(book.all(), crate::clock::now_ms())
    };
    app.publish_warnings(warnings);
    tokio::spawn(crate::hot_path::housekeeping(Arc::clone(&app), alerts_dir.clone()));
    tokio::spawn(crate::traffic_baseline::keep_learning(Arc::clone(&app)));
    #[cfg(unix)]
    tokio::spawn(crate::rules_admin::reload_on_sighup({
        let app = Arc::clone(&app);
        move |cause: &str| {
            let _ = app.reload_rules(cause);
        }
    }));
    let mut hot_path = HotPath::new(Arc::clone(&app));
    match &role {
        None => ingest::broker::start(
            &broker_config(cfg, listen, data_dir.clone()),
            Arc::new(devices),
            move |msg: ingest::RawMessage| hot_path.process(msg),
        )?,
        Some(Scaled::Mqtt(role)) => role.attach(&app, hot_path)?,
        Some(Scaled::Backbone(role)) => {
            role.attach(&app, &broker_config(cfg, listen, data_dir.clone()), devices).await?
        }
    }
    if let Some(events) = inbound_events {
        tokio::spawn(crate::external::forward(Arc::clone(&app), events));
    }
    // Agency vehicle-detector feeds enter the hot path where it runs whole: on a single node, not on a cluster role.
    crate::vd_feed::start(&app, &files, role.is_none())?;
    tokio::spawn(crate::web::operator::coalesce_sensor_updates(
        Arc::clone(&app),
        std::time::Duration::from_millis(cfg.http.sensor_update_ms),
    ));
    Ok((app, http))
}

/// What [`build`] makes: the app, and what the tasks [`start_with`] spawns need from the build.
pub struct Built {
    pub app: Arc<App>,
    /// The front door's device store (credentials, revocations), for the broker.
    devices: DeviceStore,
    /// Partner agencies' events, for `external::forward`.
    inbound_events: Option<tokio::sync::mpsc::Receiver<inbound::ExternalEvent>>,
    /// The alert journal's folder, for the housekeeping tick's snapshots.
    alerts_dir: Option<PathBuf>,
    /// Changes the restore made, published once the tasks run.
    restored_changes: Vec<Alert>,
}

/// Builds the app from config files (and a cluster role's changes to them): every part, but no listener bound and no
/// task spawned — [`start_with`] does those. The HTTP tests (`web/tests/`) drive its router as it is.
pub fn build(
    files: &ConfigFiles,
    tokens: crate::web::auth::TokenSet,
    data_dir: Option<&Path>,
    http_listen: SocketAddr,
) -> anyhow::Result<Built> {
    let cfg = &files.main;
    if let Some(dir) = data_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
    }
    let geo = load_geo(files)?;
    let (devices, registry) = load_devices_and_sensors(files, data_dir)?;
    let templates = match &files.dissemination {
        Some(_) => Some(cap_templates(files)?),
        None => None,
    };
    // `{public_url}` stands for http.public_url, as in dissemination.toml (the demo's vehicle-detector feed is its
    // own `/demo/vd/…` receiver).
    let inbound_config = match &files.inbound {
        Some((text, path)) => Some(inbound::InboundConfig::from_toml(
            &text.replace("{public_url}", cfg.http.public_url.trim_end_matches('/')),
            path,
        )?),
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
            throttle: ingest::throttle::ThrottleConfig {
                rate_factor: cfg.ingest.rate_factor,
                burst: f64::from(cfg.ingest.rate_burst),
            },
        },
    ));
    let (alerts_tx, _) = broadcast::channel(4096);
    let (map_tx, _) = broadcast::channel(4096);
    let reports = crate::reports::ReportBook::open(&geo, data_dir, cfg.reports.policy())
        .context("opening the citizen report clusters")?;
    let geo = Arc::new(geo);
    // Partner agencies' warnings are kept in the data dir, so they (and what was cancelled) survive a restart.
    let (inbound, inbound_events) = match inbound_config {
        Some(config) => {
            let (inbound, events) = match data_dir {
                Some(dir) => inbound::Inbound::start_in(config, Arc::clone(&geo), &dir.join("inbound"))?,
                None => inbound::Inbound::start(config, Arc::clone(&geo))?,
            };
            (Some(inbound), Some(events))
        }
        None => (None, None),
    };
    let alerts_dir = data_dir.as_ref().map(|d| d.join("alerts"));
    let mut engine = RuleEngine::new(rules, i64::from(cfg.alerting.max_lateness_s) * 1000);
    for warning in engine.set_zones(geo.zones()) {
        tracing::warn!(%warning, "rules and zones");
    }
    let store = match data_dir {
        Some(dir) if files.readings_store => {
            let store = store::ReadingStore::open(dir, cfg.store.clone()).context("opening the readings store")?;
            // The speed baseline keeps the registry's vehicle detectors (and only those): the current ones and every
            // later change, under one write lock so that no change falls between them.
            let mut registry = ingest.registry().write();
            store.track_detectors(registry.iter());
            registry.observe(store.registry_observer());
            Some(Arc::new(store))
        }
        _ => None,
    };
    let (book, restored_changes) =
        restore_alerts(cfg, alerts_dir.as_deref(), &mut engine, store.as_deref(), &ingest, &geo, inbound.as_ref())?;
    let influx = match (&cfg.influx, data_dir) {
        (Some(influx), Some(dir)) => {
            // The sink's copy of the registry and its subscription to changes under one write lock: no change can
            // fall between them (operators add sensors over the API at run time).
            let mut registry = ingest.registry().write();
            let sink = store::InfluxSink::start(influx.clone(), &dir.join("influx-spool"), registry.iter())
                .context("starting the InfluxDB sink")?;
            registry.observe(sink.registry_observer());
            Some(sink)
        }
        (Some(_), None) => anyhow::bail!("[influx] needs a data dir for its spool"),
        _ => None,
    };
    let dissemination = start_dissemination(files, data_dir, &geo)?;
    // The public warnings' state (`alerting::publication`): restored so that each warning's CAP chain continues.
    let policy = cfg.alerting.updates.policy();
    let publication = match &alerts_dir {
        Some(dir) => alerting::journal::read_json::<alerting::Publication>(&dir.join(crate::app::PUBLICATION_SNAPSHOT))
            .context("reading the public warnings' snapshot")?
            .map(|p| p.with_policy(policy))
            .unwrap_or_else(|| alerting::Publication::new(policy)),
        None => alerting::Publication::new(policy),
    };
    let app = Arc::new(App {
        geo,
        ingest: Arc::clone(&ingest),
        alerts: Alerts {
            engine: Arc::new(Mutex::new(engine)),
            book: Mutex::new(book),
            mode: cfg.alerting.mode,
            rules_source,
            publication: Mutex::new(publication),
            publication_dir: alerts_dir.clone(),
            replaying: Default::default(),
        },
        readings: Readings { store, influx },
        live: LiveSensors::default(),
        channels: Channels { alerts: alerts_tx, map: map_tx },
        partners: Partners { dissemination, inbound, demo_received: Mutex::new(Vec::new()) },
        reports,
        remote_alerts: Default::default(),
        web: WebSettings {
            tokens,
            public_url: cfg.http.public_url.trim_end_matches('/').to_string(),
            tile_url: cfg.http.map_tile_url.clone(),
            ws_idle_timeout: std::time::Duration::from_secs(cfg.http.ws_idle_timeout_s),
            http_tls: crate::web::tls::acceptor(cfg, data_dir)?,
            public_limit: crate::web::public::PublicLimit::new(cfg.http.public_burst, cfg.http.public_per_s),
            // The demo's stand-in receivers exist only where deliveries to ourselves are allowed: `demo`, and a
            // `serve` told it is a drill environment. Elsewhere `POST /demo/*` would be an open write endpoint.
            deliver_to_self: files.embedded || cfg.deployment.drill,
            http_listen,
        },
    });
    Ok(Built { app, devices, inbound_events, alerts_dir, restored_changes })
}

/// The zones (and cell sites, when configured) on H3.
fn load_geo(files: &ConfigFiles) -> anyhow::Result<GeoIndex> {
    let cfg = &files.main;
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
    Ok(geo)
}

/// Devices and sensors persist in the data dir (provisioning, revocations, operators' registry changes); the config
/// files seed them.
fn load_devices_and_sensors(
    files: &ConfigFiles,
    data_dir: Option<&Path>,
) -> anyhow::Result<(DeviceStore, SensorRegistry)> {
    let registry = SensorRegistry::from_toml(&files.sensors.0, &files.sensors.1)?;
    Ok(match data_dir {
        Some(dir) => {
            let paths = ingest::identity::DataDir::new(dir);
            let devices = DeviceStore::open(&paths.devices_file())?;
            let merged = devices.merge_toml(&files.devices.0, &files.devices.1)?;
            for id in &merged.removed {
                tracing::warn!(device = %id, file = %files.devices.1.display(), "device no longer in the devices file: removed, it can no longer log in");
            }
            (devices, registry.restore(&paths.sensors_file())?)
        }
        None => (DeviceStore::from_toml(&files.devices.0, &files.devices.1)?, registry),
    })
}

fn cap_templates(files: &ConfigFiles) -> anyhow::Result<encoders::cap::Templates> {
    encoders::cap::Templates::from_toml_str(&files.cap_templates.0)
        .map_err(|e| anyhow::anyhow!("{}: {e}", files.cap_templates.1.display()))
}

/// The alert book, and the engine brought back to where it was. Alerts are journaled in the data dir and restored
/// after a restart (kill -9 included) without duplicates: the engine is restored from its window snapshot, caught up
/// from the readings store, then adopts the book's levels (the journal is newer than both), then the restored partner
/// warnings. Returns the book and the changes that adoption made (to publish once the app exists).
fn restore_alerts(
    cfg: &Config,
    alerts_dir: Option<&Path>,
    engine: &mut RuleEngine,
    store: Option<&store::ReadingStore>,
    ingest: &Ingest,
    geo: &GeoIndex,
    inbound: Option<&inbound::Inbound>,
) -> anyhow::Result<(AlertBook, Vec<Alert>)> {
    let mut book = match alerts_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let (book, restored) =
                AlertBook::open(dir, cfg.alerting.id_prefix.clone()).context("opening the alert journal")?;
            let snapshot = alerting::engine::load_engine_snapshot(dir).context("reading the rules snapshot")?;
            let newest = snapshot.as_ref().map(crate::rules_admin::snapshot_newest).unwrap_or_default();
            if let Some(snapshot) = snapshot {
                engine.restore(snapshot, Some(now_ms()));
            }
            // What the snapshot missed (readings up to a crash) is in the readings store: windows continue.
            if let Some(store) = store {
                let replayed =
                    crate::rules_admin::catch_up(engine, &newest, store, &ingest.registry().read(), geo, now_ms());
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
    book.set_stale_after(i64::from(cfg.alerting.stale_after_s) * 1000);
    let mut adopted = Vec::new();
    engine.adopt_levels(&book, cfg.alerting.mode, &mut adopted);
    // Restored partner warnings, after the book's levels: a composite already raised on one stays as it is.
    if let Some(inbound) = inbound {
        engine.set_external(inbound.active(), now_ms(), &mut adopted);
    }
    let restored_changes = book.apply_all(adopted.drain(..), cfg.alerting.mode, now_ms());
    Ok((book, restored_changes))
}

/// CAP per transition, the Atom feed, webhooks and cell broadcast, when configured (its outbox lives in the data dir).
fn start_dissemination(
    files: &ConfigFiles,
    data_dir: Option<&Path>,
    geo: &Arc<GeoIndex>,
) -> anyhow::Result<Option<dissemination::Dissemination>> {
    let cfg = &files.main;
    let (Some((text, path)), Some(dir)) = (&files.dissemination, data_dir) else { return Ok(None) };
    let templates = cap_templates(files)?;
    let text = text.replace("{public_url}", cfg.http.public_url.trim_end_matches('/'));
    let config = dissemination::DisseminationConfig::from_toml_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Some(
        dissemination::Dissemination::start(
            config,
            &dir.join("dissemination"),
            Arc::clone(geo),
            templates,
            cfg.http.public_url.trim_end_matches('/').to_string(),
        )
        .context("starting dissemination")?,
    ))
}

/// The front door's settings: listeners, limits, and the TLS certificate it shares with HTTPS.
fn broker_config(cfg: &Config, listen: &Listen, data_dir: Option<PathBuf>) -> BrokerConfig {
    BrokerConfig {
        v4_listen: listen.mqtt_v4,
        v5_listen: listen.mqtt_v5,
        v4_tls_listen: listen.mqtt_v4_tls,
        v5_tls_listen: listen.mqtt_v5_tls,
        data_dir,
        max_payload_bytes: cfg.mqtt.broker_max_payload_bytes,
        max_connections: cfg.mqtt.max_connections,
        max_sessions_per_device: cfg.mqtt.max_sessions_per_device,
        max_pending_logins_per_device: cfg.mqtt.max_pending_logins_per_device,
        failed_login_burst: cfg.mqtt.failed_login_burst,
        failed_login_refill: std::time::Duration::from_secs(cfg.mqtt.failed_login_refill_s),
        tls_server_names: cfg.tls.server_names.clone(),
        tls_cert: cfg.tls.cert.clone(),
        tls_key: cfg.tls.key.clone(),
        ..BrokerConfig::default()
    }
}
