//! The rule set of a running server: reloading it (`POST /api/v1/rules/reload`, SIGHUP) and catching the engine up
//! after a restart.
//!
//! A reload re-reads the rules file named by the config, checks it completely (the loader's checks, then the names it
//! borrows from other files: inbound sources, per-level CAP texts) and only then swaps it into the engine, which
//! carries windows and levels over (`RuleEngine::reload`). A file with an error changes nothing: the old rules keep
//! running and the error names the file, the rule and the field.
//!
//! The catch-up: the engine's windows are snapshotted every minute; after a crash the readings store still has what
//! came in since. Those readings are replayed into the restored engine before the alert book's levels are adopted, so
//! a threshold begun before a kill -9 completes after it, and nothing already raised is raised again.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use alerting::rules::RuleContext;
use alerting::{Alert, AlertingError, EngineSnapshot, Finding, RuleEngine, RuleSet, ZoneRef};
use geo_index::GeoIndex;
use ingest::{Metric, SensorRegistry};
use parking_lot::Mutex;
use serde::Serialize;

use crate::metrics::{RULES_CAUGHT_UP, RULE_RELOADS};

/// Where the rules come from and what they are checked against; one per server.
pub struct RulesSource {
    /// The rules file; `None` for the embedded defaults (`demo`), which a reload re-checks unchanged.
    path: Option<PathBuf>,
    /// The name in messages (the path, or "config/rules.toml (embedded)").
    display: PathBuf,
    inbound_sources: Vec<String>,
    /// The CAP templates when CAP messages are built; per-level texts the rules name must exist in them.
    templates: Option<encoders::cap::Templates>,
    /// One reload at a time: the API and SIGHUP may ask together.
    lock: Mutex<()>,
}

impl RulesSource {
    pub fn new(
        path: Option<PathBuf>,
        display: PathBuf,
        inbound_sources: Vec<String>,
        templates: Option<encoders::cap::Templates>,
    ) -> Self {
        Self { path, display, inbound_sources, templates, lock: Mutex::new(()) }
    }

    /// The names rules may borrow from the other config files.
    pub fn context(&self) -> RuleContext<'_> {
        RuleContext { inbound_sources: &self.inbound_sources, templates: self.templates.as_ref() }
    }

    /// Loads and checks the rules from `text` (read from this source).
    pub fn load(&self, text: &str) -> Result<RuleSet, AlertingError> {
        let rules = RuleSet::from_toml(text, &self.display)?;
        rules.check_context(&self.context(), &self.display)?;
        Ok(rules)
    }
}

/// What a reload did, as `POST /api/v1/rules/reload` answers it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReloadSummary {
    pub file: String,
    /// Rules now running.
    pub rules: usize,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Rules whose declaration changed (same id).
    pub changed: Vec<String>,
    /// `[engine]` or `[[approval]]` changed.
    pub settings_changed: bool,
    /// Alert changes the new rules made at once (levels re-evaluated on the windows kept).
    pub alerts: Vec<serde_json::Value>,
    /// Rules and zones that do not fit (a `zone_ids` naming no zone, a zone threshold missing).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error(transparent)]
    Invalid(#[from] AlertingError),
}

impl ReloadError {
    /// The rule the error is about, when it is about one.
    pub fn rule(&self) -> Option<&str> {
        match self {
            ReloadError::Invalid(AlertingError::Rule { rule, .. }) => Some(rule),
            _ => None,
        }
    }
}

/// Re-reads the rules file and swaps it into `engine`, keeping windows and levels; `cause` names who asked (for the
/// log). The findings the new rules make at once go to `apply` (the alert book, then the channels: `App::reload_rules`
/// passes `App::apply_findings`), which returns the alert changes. On error nothing changes.
pub fn reload(
    source: &RulesSource,
    engine: &Mutex<RuleEngine>,
    geo: &GeoIndex,
    cause: &str,
    apply: impl FnOnce(Vec<Finding>) -> Vec<Alert>,
) -> Result<ReloadSummary, ReloadError> {
    let _one_at_a_time = source.lock.lock();
    let loaded = match &source.path {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| ReloadError::Read { file: path.display().to_string(), source: e })
        }
        None => Ok(crate::config::embedded::RULES.to_string()),
    }
    .and_then(|text| Ok(source.load(&text)?));
    let rules = match loaded {
        Ok(rules) => rules,
        Err(e) => {
            RULE_RELOADS.with_label_values(&["failed"]).inc();
            tracing::warn!(cause, error = %e, "rules not reloaded; the running rules stay");
            return Err(e);
        }
    };
    let mut findings = Vec::new();
    let (mut summary, warnings) = {
        let mut engine = engine.lock();
        let summary = diff(engine.rules(), &rules, &source.display);
        engine.reload(rules, &mut findings);
        (summary, engine.set_zones(geo.zones()))
    };
    let changed = apply(findings);
    summary.alerts = changed
        .iter()
        .map(|a| serde_json::json!({"id": a.id, "version": a.version, "state": a.state, "rule": a.rule_id}))
        .collect();
    for warning in &warnings {
        tracing::warn!(%warning, "rules and zones");
    }
    summary.warnings = warnings;
    RULE_RELOADS.with_label_values(&["ok"]).inc();
    tracing::info!(
        cause,
        rules = summary.rules,
        added = ?summary.added,
        removed = ?summary.removed,
        changed = ?summary.changed,
        alerts = summary.alerts.len(),
        "rules reloaded"
    );
    Ok(summary)
}

fn diff(old: &RuleSet, new: &RuleSet, file: &std::path::Path) -> ReloadSummary {
    let old_ids: BTreeSet<&str> = old.rules.iter().map(|r| r.id.as_str()).collect();
    let new_ids: BTreeSet<&str> = new.rules.iter().map(|r| r.id.as_str()).collect();
    let changed = new.rules.iter().filter(|r| old.get(&r.id).is_some_and(|o| o != *r)).map(|r| r.id.clone()).collect();
    ReloadSummary {
        file: file.display().to_string(),
        rules: new.rules.len(),
        added: new_ids.difference(&old_ids).map(|s| s.to_string()).collect(),
        removed: old_ids.difference(&new_ids).map(|s| s.to_string()).collect(),
        changed,
        settings_changed: old.engine != new.engine || old.approval != new.approval,
        alerts: Vec::new(),
        warnings: Vec::new(),
    }
}

/// Calls `reload` (`App::reload_rules`) with the cause "SIGHUP" on every SIGHUP until the process ends (the operators'
/// `kill -HUP`).
#[cfg(unix)]
pub async fn reload_on_sighup(reload: impl Fn(&str) + Clone + Send + 'static) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler: reload rules over the API");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        let reload = reload.clone();
        // File I/O and the engine lock: off the async workers. The outcome is logged and counted inside.
        let _ = tokio::task::spawn_blocking(move || reload("SIGHUP")).await;
    }
}

/// Readings of every series since the engine's last snapshot, from the readings store, replayed into the engine
/// (restored from that snapshot, levels not yet adopted from the alert book). Findings are dropped: the alert book's
/// journal is newer than any of them, and `adopt_levels` follows it. Mobile units are skipped: the store keeps no
/// positions, and their rules are about where they are now. Returns how many readings were replayed.
pub fn catch_up(
    engine: &mut RuleEngine,
    newest: &HashMap<(String, Metric), i64>,
    store: &store::ReadingStore,
    registry: &SensorRegistry,
    geo: &GeoIndex,
    now_ms: i64,
) -> usize {
    /// Bounds the memory a catch-up may take (≈ 100 bytes a reading).
    const MAX_READINGS: usize = 2_000_000;
    let horizon = now_ms.saturating_sub(engine.memory_ms());
    let after = |sensor: &str, metric: Metric| -> Option<i64> {
        if registry.get(sensor).is_none_or(|s| s.mobile) {
            return None;
        }
        // Series in the snapshot: what came after it. Others: everything the rules would still remember.
        Some(newest.get(&(sensor.to_string(), metric)).copied().unwrap_or(horizon).max(horizon))
    };
    let readings = match store.readings_after(&after, MAX_READINGS) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "rules catch-up: the readings store could not be read; windows restart from the snapshot");
            return 0;
        }
    };
    if readings.len() == MAX_READINGS {
        tracing::warn!(limit = MAX_READINGS, "rules catch-up cut at its limit; the newest readings were not replayed");
    }
    let mut scratch = Vec::new();
    for reading in &readings {
        let Some(sensor) = registry.get(&reading.sensor_id) else { continue };
        let zones: Vec<ZoneRef<'_>> = geo
            .zones_containing(sensor.lat, sensor.lon)
            .into_iter()
            .map(|z| ZoneRef { id: &z.id, kind: z.kind })
            .collect();
        // The store keeps no arrival time. These readings reached us before the restart, so the deadman counts their
        // sensors' silence from now: at worst it fires one downtime late, never because a replayed reading is old
        // (with arrival = event time, a backlog stored before a crash made live sensors look silent after it).
        engine.evaluate_arrived(reading, now_ms.max(reading.ts_ms), sensor, &zones, &mut scratch);
        scratch.clear();
    }
    RULES_CAUGHT_UP.set(readings.len() as i64);
    readings.len()
}

/// The newest reading time of every series in a snapshot: a catch-up replays only what came after.
pub fn snapshot_newest(snapshot: &EngineSnapshot) -> HashMap<(String, Metric), i64> {
    snapshot
        .sensors
        .iter()
        .flat_map(|s| s.series.iter().map(move |x| ((s.id.clone(), x.metric), x.newest_ms)))
        .collect()
}
