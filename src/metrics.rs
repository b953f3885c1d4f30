//! Process-level metrics of the binary (per-crate metrics live in their crates) and the `/metrics` encoder.

use std::sync::LazyLock;

use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, register_int_gauge_vec, Encoder, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, TextEncoder,
};

pub static ALERT_TRANSITIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("dc_alert_transitions_total", "Alert lifecycle transitions, by new state", &["state"])
        .expect("metric registers")
});

pub static ALERTS_HELD_STALE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "dc_alerts_held_total",
        "Alert versions kept from the public channels although their rule is public, by reason (stale_evidence: \
         raised or changed by readings older than alerting.stale_after_s behind issue time — a replay, a backlog)",
        &["reason"]
    )
    .expect("metric registers")
});

pub static PUBLIC_WARNINGS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "dc_public_warnings_total",
        "Public warning versions sent (one warning per hazard and area; `[alerting.updates]`), by why they went out \
         now (raised, level, ended, operator, interval, settled)",
        &["reason"]
    )
    .expect("metric registers")
});

pub static PUBLIC_HELD: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "dc_public_held_total",
        "Alert changes whose public version was held, by reason (coalesced: only values or contributors changed \
         within alerting.updates.min_interval_s; flapping: the warning changes level too often)",
        &["reason"]
    )
    .expect("metric registers")
});

pub static PUBLIC_FLAPPING: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("dc_public_warnings_flapping", "Public warnings held as flapping now")
        .expect("metric registers")
});

pub static PUBLIC_FLAPPING_STARTED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "dc_public_flapping_started",
        "Times a public warning started flapping (cumulative since start)"
    )
    .expect("metric registers")
});

pub static OPERATOR_SOCKETS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("dc_ws_operator_connections", "Open operator websocket connections").expect("metric registers")
});

pub static CITIZEN_SOCKETS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("dc_ws_citizen_connections", "Open citizen websocket connections").expect("metric registers")
});

pub static CITIZEN_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("dc_ws_citizen_refused_total", "Citizen subscribe frames refused, by reason", &["reason"])
        .expect("metric registers")
});

pub static WS_DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "dc_ws_dropped_total",
        "Websocket clients dropped, by channel and reason (lagged: a whole broadcast buffer behind; send_timeout: \
         a frame not taken in time; unresponsive: nothing heard, not even a pong, for the idle timeout)",
        &["channel", "reason"]
    )
    .expect("metric registers")
});

pub static CONFIG_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "dc_config_refused_total",
        "Problems that made `serve` refuse its configuration, by reason (inline_secret, demo_secret, unset_env, \
         placeholder, self_delivery, push_http)",
        &["reason"]
    )
    .expect("metric registers")
});

pub static HTTP_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("dc_http_refused_total", "HTTP requests refused, by reason", &["reason"])
        .expect("metric registers")
});

pub static REPORTS_ACCEPTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("dc_reports_accepted_total", "Citizen reports accepted, by category", &["category"])
        .expect("metric registers")
});

pub static REPORTS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("dc_reports_refused_total", "Citizen reports refused, by reason", &["reason"])
        .expect("metric registers")
});

pub static REPORTS_FLAGGED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("dc_reports_flagged_total", "Citizen reports accepted with a flag, by flag", &["flag"])
        .expect("metric registers")
});

pub static REPORTS_JOURNAL_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "dc_reports_journal_errors_total",
        "Changes to citizen-report clusters the data dir's journal could not record (kept in memory)"
    )
    .expect("metric registers")
});

pub static REPORTS_PHOTO_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("dc_reports_photo_bytes", "Bytes of citizen report photos in the data dir")
        .expect("metric registers")
});

pub static REPORTS_PHOTO_QUOTA: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "dc_reports_photo_quota_bytes",
        "The photo store's byte quota (reports.photo_quota_bytes); photos past it are refused"
    )
    .expect("metric registers")
});

pub static REPORTS_PHOTOS_DELETED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "dc_reports_photos_deleted_total",
        "Report photos deleted because no cluster refers to them any more"
    )
    .expect("metric registers")
});

pub static REPORTS_LINKED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "dc_reports_alert_links_total",
        "Verified report clusters linked to alerts, by action (raised: a new alert; attached: an existing one)",
        &["action"]
    )
    .expect("metric registers")
});

/// Rule-engine and alert-book counters, copied from the engine every housekeeping tick (10 s).
pub static RULES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "dc_rules_readings",
        "Rule engine: readings evaluated, and late, duplicate or clamped ones, by kind (cumulative)",
        &["kind"]
    )
    .expect("metric registers")
});

/// Rule reloads (`POST /api/v1/rules/reload`, SIGHUP), by result.
pub static RULE_RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!("dc_rules_reloads_total", "Rule reloads (API or SIGHUP), by result", &["result"])
        .expect("metric registers")
});

/// Readings replayed from the store into the rule engine at start (what its last snapshot missed).
pub static RULES_CAUGHT_UP: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "dc_rules_catch_up_readings",
        "Readings replayed from the readings store into the rule engine at the last start"
    )
    .expect("metric registers")
});

pub static ALERT_JOURNAL_ERRORS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("dc_alert_journal_errors", "Alert transitions the journal could not record (cumulative)")
        .expect("metric registers")
});

pub static ALERT_JOURNAL_RECOVERIES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "dc_alert_journal_recoveries",
        "Checkpoints that made transitions the journal had missed durable (cumulative)"
    )
    .expect("metric registers")
});

/// The alert book's alerts now, by state (`raised`/`updated` are active; `cleared`/`cancelled` are kept a while
/// for the feed and the operators' history), set every housekeeping tick: dashboards show "alerts by state"
/// without summing transitions.
pub static ALERTS_BY_STATE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!("dc_alerts", "Alerts the alert book holds, by state (updated every 10 s)", &["state"])
        .expect("metric registers")
});

/// Active alerts the approval gate holds from the public (an operator must approve), updated every tick.
pub static ALERTS_AWAITING_APPROVAL: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "dc_alerts_awaiting_approval",
        "Active alerts held by the approval gate until an operator approves (updated every 10 s)"
    )
    .expect("metric registers")
});

/// Sets [`ALERTS_BY_STATE`] and [`ALERTS_AWAITING_APPROVAL`] from the book's alerts.
pub fn record_alerts<'a>(alerts: impl IntoIterator<Item = &'a alerting::Alert>) {
    let mut by_state = [0i64; 4];
    let mut awaiting = 0;
    for alert in alerts {
        by_state[alert_state_index(alert.state)] += 1;
        if alert.state.is_active() && alert.public_release == alerting::alert::PublicRelease::Pending {
            awaiting += 1;
        }
    }
    for (state, n) in ALERT_STATES.iter().zip(by_state) {
        ALERTS_BY_STATE.with_label_values(&[state]).set(n);
    }
    ALERTS_AWAITING_APPROVAL.set(awaiting);
}

/// The `kind` label values of [`RULES`].
const RULE_READING_KINDS: [&str; 7] =
    ["evaluated", "late_dropped", "late_placed", "outside_windows", "duplicates", "clamped", "missing_zone_thresholds"];

/// The `state` label values, in [`alert_state_index`] order.
const ALERT_STATES: [&str; 4] = ["raised", "updated", "cleared", "cancelled"];

fn alert_state_index(state: alerting::AlertState) -> usize {
    match state {
        alerting::AlertState::Raised => 0,
        alerting::AlertState::Updated => 1,
        alerting::AlertState::Cleared => 2,
        alerting::AlertState::Cancelled => 3,
    }
}

pub fn record_rules(engine: &alerting::engine::EngineCounters, book: &alerting::alert::BookCounters) {
    let set = |kind: &str, v: u64| RULES.with_label_values(&[kind]).set(v as i64);
    // Keep in step with RULE_READING_KINDS (pre-registered at zero).
    set("evaluated", engine.evaluated);
    set("late_dropped", engine.late_dropped);
    set("late_placed", engine.late_placed);
    set("outside_windows", engine.outside_windows);
    set("duplicates", engine.duplicates);
    set("clamped", engine.clamped);
    set("missing_zone_thresholds", engine.missing_zone_thresholds);
    ALERT_JOURNAL_ERRORS.set(book.journal_errors as i64);
    ALERT_JOURNAL_RECOVERIES.set(book.journal_recoveries as i64);
}

/// Registers every metric family of the process with its label values at zero, so that `/metrics` lists from the
/// start what dashboards and alert rules (`ops/`) select, not only after the first event (`tests/ops.rs` holds
/// every name they use against a fresh demo's `/metrics`).
pub fn init() {
    for state in ALERT_STATES {
        ALERT_TRANSITIONS.with_label_values(&[state]);
        ALERTS_BY_STATE.with_label_values(&[state]);
    }
    LazyLock::force(&ALERTS_AWAITING_APPROVAL);
    LazyLock::force(&ALERT_JOURNAL_ERRORS);
    LazyLock::force(&ALERT_JOURNAL_RECOVERIES);
    LazyLock::force(&ingest::metrics::METRICS);
    LazyLock::force(&store::metrics::STORE);
    LazyLock::force(&store::metrics::INFLUX);
    LazyLock::force(&dissemination::metrics::METRICS);
    LazyLock::force(&inbound::metrics::METRICS);
    for kind in RULE_READING_KINDS {
        RULES.with_label_values(&[kind]);
    }
    for result in ["ok", "failed"] {
        RULE_RELOADS.with_label_values(&[result]);
    }
    LazyLock::force(&RULES_CAUGHT_UP);
    ALERTS_HELD_STALE.with_label_values(&["stale_evidence"]);
    for reason in ["raised", "level", "ended", "operator", "interval", "settled"] {
        PUBLIC_WARNINGS.with_label_values(&[reason]);
    }
    for reason in ["coalesced", "flapping"] {
        PUBLIC_HELD.with_label_values(&[reason]);
    }
    LazyLock::force(&PUBLIC_FLAPPING);
    LazyLock::force(&crate::traffic_baseline::BASELINE_DETECTORS);
    LazyLock::force(&PUBLIC_FLAPPING_STARTED);
    LazyLock::force(&OPERATOR_SOCKETS);
    LazyLock::force(&CITIZEN_SOCKETS);
    for channel in ["operator", "citizen"] {
        for reason in ["lagged", "send_timeout", "unresponsive"] {
            WS_DROPPED.with_label_values(&[channel, reason]);
        }
    }
    for reason in ["malformed", "too_many_places", "bad_place", "too_large"] {
        CITIZEN_REFUSED.with_label_values(&[reason]);
    }
    for reason in ["unauthenticated", "forbidden", "not_found", "bad_request", "rate_limited"] {
        HTTP_REFUSED.with_label_values(&[reason]);
    }
    for category in crate::reports::Category::ALL {
        REPORTS_ACCEPTED.with_label_values(&[category.name()]);
    }
    for reason in crate::reports::REFUSAL_REASONS {
        REPORTS_REFUSED.with_label_values(&[reason]);
    }
    for flag in crate::reports::Flag::ALL {
        REPORTS_FLAGGED.with_label_values(&[flag.name()]);
    }
    LazyLock::force(&REPORTS_JOURNAL_ERRORS);
    LazyLock::force(&REPORTS_PHOTO_BYTES);
    LazyLock::force(&REPORTS_PHOTO_QUOTA);
    LazyLock::force(&REPORTS_PHOTOS_DELETED);
    for action in ["raised", "attached"] {
        REPORTS_LINKED.with_label_values(&[action]);
    }
}

pub fn render() -> String {
    let mut buf = Vec::new();
    // Encoding into a Vec cannot fail for well-formed metric families.
    let _ = TextEncoder::new().encode(&prometheus::gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}
