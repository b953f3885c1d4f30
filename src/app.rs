//! The shared state of a running server, [`App`] (axum's `AppState`): built once by `server.rs`, shared behind an
//! `Arc` by the hot path (`hot_path.rs`), the web edge (`web/`), partner agencies' alerts (`external.rs`), the rules
//! reload (`rules_admin.rs`) and the scale-out roles (`scale_out/`).
//!
//! Fields are grouped by feature: what alerts are made of ([`Alerts`]), where readings go ([`Readings`]), the
//! operators' live map ([`LiveSensors`]), the websocket fan-out ([`Channels`]), partner agencies and carriers
//! ([`Partners`]) and the HTTP edge's settings ([`WebSettings`]).
//!
//! [`App::publish`] is the one way an alert change leaves the alert book: every version to the operators, and
//! through the publication (`alerting::publication`: one warning per hazard and area, calm, flapping held) to the
//! citizens and dissemination ([`App::publish_warnings`]); the housekeeping tick sends what the publication held
//! ([`App::publication_due`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use alerting::message::{AlertMessage, AreaInfo};
use alerting::publication::{NoteStatus, PublicWarning, Publication};
use alerting::{Alert, AlertBook, Mode, RuleEngine};
use geo_index::GeoIndex;
use ingest::pipeline::DeviceStatus;
use ingest::{Ingest, Reading, SensorRegistry};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::audience::{AlertBroadcast, MapDelta};

/// Everything the server's tasks and handlers share; one per process, behind an `Arc`.
pub struct App {
    /// Zones (and cell sites) on H3: the hot path places readings in zones, the web places citizens, filters and
    /// alerts on the map, the scale-out roles find regions.
    pub geo: Arc<GeoIndex>,
    /// Decode and validate (the front of the hot path), and the sensor registry and dead letters the API shows.
    pub ingest: Arc<Ingest>,
    /// The rule engine and the alert book, and what they run under.
    pub alerts: Alerts,
    /// Where validated readings are kept besides the rules (history, InfluxDB).
    pub readings: Readings,
    /// The latest each sensor told us, for the operators' map.
    pub live: LiveSensors,
    /// Alert changes and map updates on their way to the websockets.
    pub channels: Channels,
    /// Partner agencies and carriers: what we send them, what they send us.
    pub partners: Partners,
    /// Citizen reports: rate limits, clusters, photo store (`reports/`, `web/reports.rs`).
    pub reports: crate::reports::ReportBook,
    /// The cluster workers' alerts, on a fan-out node (empty elsewhere; `scale_out/remote_alerts.rs`).
    pub remote_alerts: crate::scale_out::remote_alerts::RemoteAlerts,
    /// What the HTTP edge needs to know about itself: tokens, URLs, TLS, limits.
    pub web: WebSettings,
}

/// What alerts are made of: the rules, the book they fold into, and how to reload the rules.
pub struct Alerts {
    /// The rule engine, shared by the ingest link thread, the housekeeping tick, operators' forecasts and the rules
    /// reload. Lock order: the engine is released before the book is taken.
    pub engine: Arc<Mutex<RuleEngine>>,
    /// One alert per hazard (rule × area), journaled; every change goes out through [`App::publish`].
    pub book: Mutex<AlertBook>,
    /// Actual, Exercise or Test (`alerting.mode`): every alert this process makes carries it.
    pub mode: Mode,
    /// Where a rules reload reads from and what it checks against (`rules_admin`).
    pub rules_source: crate::rules_admin::RulesSource,
    /// What the public receives: one warning per hazard and area, calm (`alerting::publication`,
    /// `[alerting.updates]`). Lock order: the book before this.
    pub publication: Mutex<Publication>,
    /// Where its snapshot is kept (the alert journal's folder), so that a restart continues each warning's CAP
    /// chain; `None` without a data dir.
    pub publication_dir: Option<std::path::PathBuf>,
    /// Set while a cluster's dissemination node replays the alerts stream (`scale_out/dissemination.rs`): the
    /// housekeeping tick then leaves the publication to the replay, which runs it on the alerts' issue times.
    pub replaying: std::sync::atomic::AtomicBool,
}

/// The publication's snapshot file in the alert journal's folder.
pub const PUBLICATION_SNAPSHOT: &str = "publication.json";

/// Where validated readings go besides the rules. Neither blocks the hot path: past their bounded queues readings are
/// dropped and counted.
pub struct Readings {
    /// Every validated reading, for operators' history and the rules' catch-up (`None` only without a data dir).
    pub store: Option<Arc<store::ReadingStore>>,
    /// The InfluxDB v2 sink, when configured.
    pub influx: Option<store::InfluxSink>,
}

/// The latest a sensor told us, for the operators' snapshot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SensorLive {
    /// Per metric name: the newest `(event time ms, value)`.
    pub latest: BTreeMap<String, (i64, f64)>,
    /// The newest event time of any of its readings.
    pub last_seen_ms: Option<i64>,
    /// From its status messages (and `true` on any reading); `None` until we know.
    pub online: Option<bool>,
    /// From its status messages: the map flags gateways about to go silent.
    pub battery_v: Option<f64>,
    /// Where a mobile sensor (hazmat truck) last said it was; fixed sensors stay where the registry puts them.
    pub position: Option<(f64, f64)>,
    /// Reporting far faster than its registered interval (`ingest::throttle`): readings kept from the rules since
    /// the start, and when the latest was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttled: Option<Throttled>,
}

/// A sensor flagged for reporting far faster than its registered interval.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Throttled {
    /// Readings stored but kept from the rules.
    pub readings: u64,
    /// Arrival time of the latest of them, Unix ms.
    pub last_ms: i64,
}

/// The operators' live map: what each sensor last said, and which changed since the last coalesced update.
#[derive(Default)]
pub struct LiveSensors {
    /// Per sensor id, for the operators' snapshot and the open-data sensors.
    pub sensors: RwLock<BTreeMap<String, SensorLive>>,
    /// Sensors whose live state changed since the last tick (`web::operator::coalesce_sensor_updates`).
    pub dirty: Mutex<HashSet<String>>,
}

impl LiveSensors {
    /// Folds a batch of validated readings in (the hot path, before the rules).
    pub fn record_readings(&self, readings: &[Reading]) {
        let mut live = self.sensors.write();
        let mut dirty = self.dirty.lock();
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

    /// Flags the sensors of throttled readings for the operators' map.
    pub fn flag_throttled(&self, readings: &[Reading], arrived_ms: i64) {
        let mut live = self.sensors.write();
        let mut dirty = self.dirty.lock();
        for r in readings {
            let t = live.entry(r.sensor_id.clone()).or_default().throttled.get_or_insert_with(Throttled::default);
            t.readings += 1;
            t.last_ms = arrived_ms;
            dirty.insert(r.sensor_id.clone());
        }
    }

    /// Folds a device's status message in (online, battery).
    pub fn record_status(&self, status: &DeviceStatus) {
        self.dirty.lock().insert(status.device_id.clone());
        let mut live = self.sensors.write();
        let entry = live.entry(status.device_id.clone()).or_default();
        entry.online = Some(status.online);
        if status.battery_v.is_some() {
            entry.battery_v = status.battery_v;
        }
    }
}

/// The websocket fan-out. Slow receivers lag and are dropped by their connection task, never waited for.
pub struct Channels {
    /// Alert changes, rendered once for every channel and language (operators, citizens, the cluster publisher).
    pub alerts: broadcast::Sender<Arc<AlertBroadcast>>,
    /// Frames for the operators' map that sit at one place: coalesced sensor updates, report clusters.
    pub map: broadcast::Sender<Arc<MapDelta>>,
}

/// Partner agencies and carriers.
pub struct Partners {
    /// CAP per transition, the feed, webhooks and cell broadcast, when configured.
    pub dissemination: Option<dissemination::Dissemination>,
    /// Alerts from partner agencies (inbound CAP), when configured.
    pub inbound: Option<inbound::Inbound>,
    /// Demo receivers (`/demo/webhook…`, `/demo/cbc/…`): what they got, for the demo and its tests.
    pub demo_received: Mutex<Vec<serde_json::Value>>,
}

/// The HTTP edge's settings and its own state.
pub struct WebSettings {
    /// Operator tokens (hashed, scoped).
    pub tokens: crate::web::auth::TokenSet,
    /// Our address as the public sees it (`http.public_url`, no trailing `/`): links in CAP, feeds, photos.
    pub public_url: String,
    /// Background map tiles for the operators' map (`{z}/{x}/{y}` template; empty for none).
    pub tile_url: String,
    /// Websocket clients silent for this long are dropped (`web::liveness`).
    pub ws_idle_timeout: std::time::Duration,
    /// HTTPS on the HTTP port (`http.tls`): the acceptor with the deployment's server certificate (`web/tls.rs`).
    pub http_tls: Option<tokio_rustls::TlsAcceptor>,
    /// Per-address limits of the public read-only endpoints (`web/public.rs`).
    pub public_limit: crate::web::public::PublicLimit,
    /// Deliveries to ourselves allowed, and `/demo/*` (`web/demo.rs`) mounted to receive them: in `demo`, and in
    /// `serve` with `[deployment] drill = true` only.
    pub deliver_to_self: bool,
    /// The HTTP listen address, to recognise a subscriber added over the API that is ourselves.
    pub http_listen: std::net::SocketAddr,
}

impl App {
    /// The sensor registry (operators change it at run time; the hot path reads it).
    pub fn registry(&self) -> &Arc<RwLock<SensorRegistry>> {
        self.ingest.registry()
    }

    fn area_info(&self, area_id: &str) -> (String, String, serde_json::Value) {
        let zone = self.geo.zone(area_id);
        (
            zone.map(|z| z.name.clone()).unwrap_or_else(|| area_id.to_string()),
            zone.and_then(|z| z.name_en.clone()).unwrap_or_else(|| area_id.to_string()),
            zone.map(|z| z.geojson_geometry()).unwrap_or(serde_json::Value::Null),
        )
    }

    /// The operators' frame of an alert, with its zone's names and shape. Its `cap` link is the CAP message of the
    /// public warning it is part of now (the public hears of alerts only through those), else empty.
    pub fn alert_message(&self, alert: &Alert) -> AlertMessage {
        let (name, name_en, geometry) = self.area_info(&alert.area_id);
        let mut message = AlertMessage::new(alert, AreaInfo { name: &name, name_en: &name_en, geometry });
        message.cap = self.alerts.publication.lock().cap_of(&alert.id).unwrap_or_default();
        message
    }

    /// The frame of a public warning (operators: `public_warning`; citizens: `alert`).
    pub fn warning_message(&self, warning: &PublicWarning) -> AlertMessage {
        let (name, name_en, geometry) = self.area_info(&warning.alert.area_id);
        AlertMessage::public_warning(warning, AreaInfo { name: &name, name_en: &name_en, geometry })
    }

    /// Sends an alert change everywhere it goes: to the operators, every version, with what became of it on the
    /// public side; and through the publication (one warning per hazard and area, calm) to the citizens and
    /// dissemination. Logged and counted.
    pub fn publish(&self, alert: &Alert) {
        self.publish_all(std::slice::from_ref(alert));
    }

    /// [`App::publish`] for the changes of one instant (one batch of findings): the public side decides once per
    /// warning they touch, so rules changing together make one public version.
    pub fn publish_all(&self, alerts: &[Alert]) {
        self.publish_all_at(alerts, crate::clock::now_ms());
    }

    /// [`App::publish_all`] at a given issue time: a cluster's dissemination node (`scale_out/dissemination.rs`)
    /// passes the time the worker issued the alert, so that rebuilding the warnings from the alerts stream after a
    /// take-over makes the same public versions the dead node made.
    pub fn publish_all_at(&self, alerts: &[Alert], now_ms: i64) {
        if alerts.is_empty() {
            return;
        }
        let (notes, warnings) = self.alerts.publication.lock().observe_all(alerts, now_ms);
        for (alert, note) in alerts.iter().zip(notes) {
            let mut message = self.alert_message(alert);
            tracing::info!(id = %alert.id, version = alert.version, state = ?alert.state, event = %alert.event, area = %alert.area_id, level = %alert.level.name_en, public = ?note.status, "alert");
            match note.status {
                NoteStatus::Coalesced => crate::metrics::PUBLIC_HELD.with_label_values(&["coalesced"]).inc(),
                NoteStatus::Flapping => {
                    tracing::info!(id = %alert.id, reason = %note.reason, "public warning held");
                    crate::metrics::PUBLIC_HELD.with_label_values(&["flapping"]).inc()
                }
                _ => {}
            }
            message.public = Some(note);
            crate::metrics::ALERT_TRANSITIONS.with_label_values(&[state_label(alert)]).inc();
            // Operators only: the public hears of it through the warnings below. No receivers is normal.
            let _ = self.channels.alerts.send(Arc::new(AlertBroadcast::new(message, false)));
            self.send_held(alert);
        }
        self.publish_warnings(warnings);
    }

    /// The approval loop's copy for internal webhook subscribers (`audience = "internal"`): the public hears of an
    /// alert only through its public warning, so while the approval gate holds an alert its versions go to
    /// dissemination on the alert's own chain (its id, never a `W-` one), never released:
    /// not in the feed, not at `/cap/`, not to public subscribers, never on the air. When the alert becomes public
    /// that chain ends with a Cancel — the proposal is superseded by the public warning, which internal subscribers
    /// receive like everyone — and when it ends while held, with its own end. Only the approval gate: alerts of
    /// operators-only rules (a flapping tilt meter's hundred `tilt-rate` versions) and alerts on old evidence are no
    /// proposal for the public, and stay on the operators' socket.
    fn send_held(&self, alert: &Alert) {
        let Some(d) = &self.partners.dissemination else { return };
        let held = alert.state.is_active() && alert.public_release == alerting::alert::PublicRelease::Pending;
        if !held && !d.held_chain_open(&alert.id) {
            return;
        }
        let mut view = alert_view(alert);
        view.public_release = false;
        if alert.state.is_active() && !held {
            view.state = dissemination::ViewState::Cancelled;
        }
        d.alert_changed(&view);
    }

    /// Sends public warning versions to the citizens (and, as `public_warning` frames, the operators) and to
    /// dissemination, then saves the publication's snapshot.
    pub fn publish_warnings(&self, warnings: Vec<PublicWarning>) {
        if warnings.is_empty() {
            return;
        }
        for w in &warnings {
            let reason = serde_json::to_value(w.reason).ok().and_then(|v| v.as_str().map(str::to_string));
            crate::metrics::PUBLIC_WARNINGS.with_label_values(&[reason.as_deref().unwrap_or("raised")]).inc();
            tracing::info!(id = %w.alert.id, version = w.alert.version, state = ?w.alert.state, event = %w.alert.event, area = %w.alert.area_id, level = %w.alert.level.name_en, contributors = w.contributors.len(), reason = ?w.reason, "public warning");
            let _ = self.channels.alerts.send(Arc::new(AlertBroadcast::new(self.warning_message(w), true)));
            if let Some(d) = &self.partners.dissemination {
                let mut view = alert_view(&w.alert);
                view.contributors = w.contributors.clone();
                d.alert_changed(&view);
            }
        }
        self.save_publication();
    }

    /// The housekeeping pass of the publication at issue time: coalesced changes whose interval passed, flapping
    /// warnings that settled.
    pub fn publication_due(&self, now_ms: i64) {
        // A dissemination node rebuilding the warnings from the alerts stream drives the publication with the alerts'
        // own times; the wall clock would release held changes at the wrong place in that history.
        if self.alerts.replaying.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        self.publication_due_at(now_ms);
    }

    /// [`App::publication_due`] whatever the replay flag says (the replay itself calls it with the alerts' times).
    pub fn publication_due_at(&self, now_ms: i64) {
        let (warnings, flapping, started) = {
            let mut p = self.alerts.publication.lock();
            let w = p.due(now_ms);
            (w, p.flapping(), p.counters.flapping_started)
        };
        crate::metrics::PUBLIC_FLAPPING.set(flapping as i64);
        crate::metrics::PUBLIC_FLAPPING_STARTED.set(started as i64);
        self.publish_warnings(warnings);
    }

    /// Writes the publication's snapshot (atomically, fsync) so that a restart continues each warning's chain.
    pub fn save_publication(&self) {
        let Some(dir) = &self.alerts.publication_dir else { return };
        let snapshot = self.alerts.publication.lock().clone();
        if let Err(e) = alerting::journal::write_json_atomic(dir, PUBLICATION_SNAPSHOT, &snapshot) {
            tracing::error!(error = %e, "could not save the public warnings' snapshot");
        }
    }

    /// Reloads the rules file into the engine, keeping windows and levels (`rules_admin::reload`); the API and SIGHUP
    /// ask. On error the running rules stay.
    pub fn reload_rules(
        &self,
        cause: &str,
    ) -> Result<crate::rules_admin::ReloadSummary, crate::rules_admin::ReloadError> {
        crate::rules_admin::reload(&self.alerts.rules_source, &self.alerts.engine, &self.geo, cause, |findings| {
            self.apply_findings(findings)
        })
    }

    /// Folds findings into the alert book (one journal fsync for the lot) and publishes every change. Issue time is
    /// now, on the wall clock (`clock.rs`): the findings carry event time, what people receive carries this.
    pub fn apply_findings(&self, findings: impl IntoIterator<Item = alerting::Finding>) -> Vec<Alert> {
        let changed = self.alerts.book.lock().apply_all(findings, self.alerts.mode, crate::clock::now_ms());
        for alert in &changed {
            if let Some(stale) = &alert.stale {
                crate::metrics::ALERTS_HELD_STALE.with_label_values(&["stale_evidence"]).inc();
                tracing::info!(id = %alert.id, version = alert.version, reason = %stale.reason(), "alert kept from the public");
            }
        }
        self.publish_all(&changed);
        changed
    }
}

/// The dissemination side's view of an alert (it does not depend on the rule engine's types).
fn alert_view(alert: &Alert) -> dissemination::AlertView {
    use dissemination::{AlertView, ViewMode, ViewState};
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
        level_index: u32::try_from(alert.level.index).ok(),
        area_id: alert.area_id.clone(),
        value: alert.value,
        raised_ms: alert.first_issued_ms,
        updated_ms: alert.issued_ms,
        observed_ms: Some(alert.observed_ms).filter(|&t| t > 0),
        public_release: alert.is_public(),
        values: alert.values.clone(),
        reports: alert.reports.clone(),
        contributors: Vec::new(),
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
