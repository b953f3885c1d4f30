//! The cell broadcast channel: each carrier's Cell Broadcast Centre adapter receives a JSON envelope per
//! broadcast (SBc-AP PDUs, CBS pages, the cells), `Authorization: Bearer <token>`. What goes on the air follows
//! the alert's latest released message: a write-replace when it starts or changes, a stop when it ends or moves
//! class, nothing while it is held.
//!
//! | file | what lives there |
//! |---|---|
//! | `mod.rs` | the target (`Carrier`), its request, its config section, planning against what is on the air |
//! | [`broadcast`] | one broadcast: PWS class policy, serial numbers, texts, per-carrier targeting, envelopes |
//! | [`ledger`] | the on-air ledger: per carrier, what was written and not yet stopped (rebuilt from the journal) |
//!
//! Calm updates: phones show a new serial number as a new alarm (TS 23.041 §8.2), so an alert's later versions
//! re-alert only when it goes above what is on the air — its level, PWS class or severity rises, or its area
//! grows (each can be turned off in `rebroadcast_on`) — or an operator asks (`Dissemination::rebroadcast`). Then the
//! previous serial is stopped (Stop-Warning, in the same carrier's ordered outbox) before the new Write-Replace,
//! because with the Concurrent-Warning-Message-Indicator an eNB would broadcast both (TS 36.413 §8.12.1.2). Any
//! other change (a new value, a falling level) updates CAP, webhooks and the app, and leaves the air as it is: what
//! is broadcast stays the highest warning people were given, until the alert ends and every serial of it the
//! ledger holds is stopped.

pub mod broadcast;
pub mod ledger;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use geo_index::GeoIndex;
use serde::Deserialize;

use self::broadcast::{class_for, BroadcastKind, BroadcastRecord, Envelope};
use super::{Channel, Payload, Request};
use crate::config::{duplicates, secret_from, validate_name, validate_url, FieldError, Retry, RetrySettings};
use crate::journal::{NewDelivery, Record};
use crate::messages::StoredMessage;
use crate::metrics::METRICS;
use crate::outbox::{PlanContext, State};
use encoders::cap::{MsgType, Severity, Templates};
use encoders::cell_broadcast::{GeoScope, Plmn, PwsClass, Schedule, SerialNumber};

/// A carrier's CBC, ready to use: the target of the channel.
#[derive(Debug, Clone)]
pub(crate) struct Carrier {
    pub name: String,
    pub mnc: u16,
    pub cbc_url: String,
    pub token: String,
    /// Send Warning Area Coordinates (SBc-AP IE 46) with every write-replace, for phones that geofence.
    pub warning_area_coordinates: bool,
    /// Seconds a phone may wait for its position (None: the phone's default).
    pub geofence_max_wait_s: Option<u8>,
}

impl Carrier {
    /// The envelope journaled with the delivery, as planned (a broadcast is not re-planned when sent).
    pub fn request(&self, payload: &Payload<'_>) -> Request {
        Request {
            url: self.cbc_url.clone(),
            body: payload.envelope.map(|e| e.as_bytes().to_vec()).ok_or_else(|| "CBC envelope missing".to_string()),
            content_type: "application/json",
            auth: vec![("Authorization", format!("Bearer {}", self.token))],
            signer: None,
        }
    }
}

/// CBCs: a warning is worth seconds; retry fast and long (Taiwan's budget is 4–10 s from issue to phones).
const CBC_RETRY: Retry = Retry {
    request_timeout: Duration::from_secs(10),
    max_attempts: 20,
    backoff_initial: Duration::from_millis(500),
    backoff_max: Duration::from_secs(30),
};

/// `[cell_broadcast]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CellBroadcastConfig {
    /// Off: no envelopes to CBCs (CAP and webhooks are unaffected).
    pub enabled: bool,
    /// Seconds between repetitions in the cells (SBc-AP Repetition-Period, 1..=4095).
    pub repetition_period_s: u16,
    /// Broadcasts requested; 0 = until stopped.
    pub number_of_broadcasts: u16,
    /// Serial-number geographical scope: `plmn` (default), `area`, `cell_normal`, `cell_immediate`.
    pub geo_scope: String,
    /// The scope per PWS class (`emergency`, `alert`, `monthly_test`), overriding `geo_scope`.
    pub class_geo_scope: BTreeMap<String, String>,
    /// What makes a later version of an alert a new broadcast (a new serial, which phones show again):
    /// `level_rise`, `class_rise`, `severity_rise`, `area_growth`. Default: all four. Operators can always ask.
    pub rebroadcast_on: Vec<String>,
    pub retry: RetrySettings,
    /// Which alerts go out in which class; first match wins; none matching: no broadcast. Absent: the defaults
    /// (debris flow red → Emergency, heavy rain → Alert, severity Extreme → Emergency).
    pub policy: Option<Vec<PolicyRule>>,
}

impl Default for CellBroadcastConfig {
    fn default() -> Self {
        CellBroadcastConfig {
            enabled: true,
            repetition_period_s: 60,
            number_of_broadcasts: 0,
            geo_scope: "plmn".into(),
            class_geo_scope: BTreeMap::new(),
            rebroadcast_on: REBROADCAST_ON.iter().map(|s| s.to_string()).collect(),
            retry: RetrySettings::default(),
            policy: None,
        }
    }
}

/// The reasons `rebroadcast_on` may name.
const REBROADCAST_ON: [&str; 4] = ["level_rise", "class_rise", "severity_rise", "area_growth"];

/// `cell_broadcast.geo_scope` and `class_geo_scope` values.
fn parse_scope(key: &str, value: &str) -> Result<GeoScope, FieldError> {
    match value {
        "cell_normal" => Ok(GeoScope::CellNormal),
        "cell_immediate" => Ok(GeoScope::CellImmediate),
        "plmn" => Ok(GeoScope::Plmn),
        "area" => Ok(GeoScope::Area),
        other => Err(FieldError::new(key, format!("`{other}`: expected plmn, area, cell_normal or cell_immediate"))),
    }
}

/// The class a policy rule gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyClass {
    /// 緊急警報 4371+n / 4384+n (`emergency_level` = n).
    Emergency,
    /// 警訊通知 911 / 919.
    Alert,
    /// Explicitly not broadcast (to exempt something a later rule would catch).
    None,
    /// 國家級警報: refused when the file is loaded. Only the President's office may order it; no sensor rule may.
    Presidential,
}

/// One policy rule; every condition given must hold.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// Event type.
    pub event: Option<String>,
    /// Level name, matched against the alert's English (case-insensitive) or Chinese level name.
    pub level: Option<String>,
    /// Alert severity at least this.
    pub min_severity: Option<Severity>,
    pub class: PolicyClass,
    /// Emergency channel offset 0..=8 (4371..=4379).
    #[serde(default)]
    pub emergency_level: u8,
}

pub(crate) fn default_policy() -> Vec<PolicyRule> {
    vec![
        PolicyRule {
            event: Some("debris_flow".into()),
            level: Some("red".into()),
            min_severity: None,
            class: PolicyClass::Emergency,
            emergency_level: 0,
        },
        PolicyRule {
            event: Some("heavy_rain".into()),
            level: None,
            min_severity: None,
            class: PolicyClass::Alert,
            emergency_level: 0,
        },
        PolicyRule {
            event: None,
            level: None,
            min_severity: Some(Severity::Extreme),
            class: PolicyClass::Emergency,
            emergency_level: 0,
        },
    ]
}

/// A `[[carrier]]`: one carrier's Cell Broadcast Centre adapter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierConfig {
    /// As operators read it; the target name is `cbc:<name>` (`Channel::target_name`).
    pub name: String,
    /// Mobile country code, 3 digits (466).
    pub mcc: String,
    /// Mobile network code as the carrier writes it (`92`, `97`, `01`); selects its cell sites in geo-index.
    pub mnc: String,
    /// The CBC adapter's HTTP(S) endpoint receiving JSON envelopes.
    pub cbc_url: String,
    /// Bearer token…
    pub token: Option<String>,
    /// …or the environment variable holding it.
    pub token_env: Option<String>,
    /// Attach the alert's own area (SBc-AP IE 46 Warning-Area-Coordinates, Release 15) to every write-replace, so
    /// geofence-capable phones outside it stay silent. Criticality ignore: an MME that does not know it drops it.
    #[serde(default = "default_true")]
    pub warning_area_coordinates: bool,
    /// Seconds a phone may wait for a position fix before deciding, 0..=254 (unset: the phone's default, often
    /// 20–30 s; a phone without a fix by then shows the warning).
    pub geofence_max_wait_s: Option<u8>,
}

fn default_true() -> bool {
    true
}

/// The channel's settings, checked and with tokens resolved.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Off: no envelopes to CBCs (CAP and webhooks are unaffected).
    pub enabled: bool,
    pub retry: Retry,
    pub schedule: Schedule,
    pub geo_scope: GeoScope,
    /// Per class label (`emergency`, `alert`, `monthly_test`).
    pub class_geo_scope: BTreeMap<String, GeoScope>,
    /// Which rises make a new broadcast (see [`REBROADCAST_ON`]).
    pub rebroadcast_on: BTreeSet<String>,
    pub policy: Vec<PolicyRule>,
    pub carriers: Vec<Carrier>,
}

impl Settings {
    /// The geographical scope of a class's serial numbers.
    pub fn scope_for(&self, class: PwsClass) -> GeoScope {
        let label = match class {
            PwsClass::Presidential => "presidential",
            PwsClass::Emergency(_) => "emergency",
            PwsClass::Alert => "alert",
            PwsClass::MonthlyTest => "monthly_test",
        };
        self.class_geo_scope.get(label).copied().unwrap_or(self.geo_scope)
    }
}

impl Settings {
    /// Checks `[cell_broadcast]` and every `[[carrier]]` (policy events against the templates).
    pub fn resolve(
        cb: &CellBroadcastConfig,
        carriers: &[CarrierConfig],
        templates: &Templates,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, FieldError> {
        cb.retry.check("cell_broadcast.retry")?;
        if cb.repetition_period_s == 0 && cb.number_of_broadcasts != 1 {
            return Err(FieldError::new(
                "cell_broadcast.repetition_period_s",
                "0 (no repetition) needs number_of_broadcasts = 1",
            ));
        }
        if cb.repetition_period_s > encoders::cell_broadcast::sbcap::MAX_REPETITION_PERIOD {
            return Err(FieldError::new("cell_broadcast.repetition_period_s", "at most 4095"));
        }
        let geo_scope = parse_scope("cell_broadcast.geo_scope", &cb.geo_scope)?;
        let mut class_geo_scope = BTreeMap::new();
        for (class, scope) in &cb.class_geo_scope {
            let key = format!("cell_broadcast.class_geo_scope.{class}");
            if !["emergency", "alert", "monthly_test"].contains(&class.as_str()) {
                return Err(FieldError::new(key, "expected a class: emergency, alert or monthly_test"));
            }
            class_geo_scope.insert(class.clone(), parse_scope(&key, scope)?);
        }
        let mut rebroadcast_on = BTreeSet::new();
        for (i, r) in cb.rebroadcast_on.iter().enumerate() {
            if !REBROADCAST_ON.contains(&r.as_str()) {
                return Err(FieldError::new(
                    format!("cell_broadcast.rebroadcast_on[{i}]"),
                    format!("`{r}`: expected {}", REBROADCAST_ON.join(", ")),
                ));
            }
            rebroadcast_on.insert(r.clone());
        }
        let policy = cb.policy.clone().unwrap_or_else(default_policy);
        for (i, rule) in policy.iter().enumerate() {
            let at = format!("cell_broadcast.policy[{i}]");
            match rule.class {
                PolicyClass::Presidential => {
                    return Err(FieldError::new(
                        format!("{at}.class"),
                        "presidential alerts are never issued by policy",
                    ))
                }
                PolicyClass::Emergency => {
                    PwsClass::Emergency(rule.emergency_level)
                        .message_id(encoders::cell_broadcast::Language::Chinese)
                        .map_err(|e| FieldError::new(format!("{at}.emergency_level"), e.to_string()))?;
                }
                PolicyClass::Alert | PolicyClass::None => {}
            }
            if let Some(e) = &rule.event {
                if templates.event(e).is_err() {
                    return Err(FieldError::new(format!("{at}.event"), format!("unknown event type `{e}`")));
                }
            }
        }

        let mut resolved = Vec::new();
        for (i, c) in carriers.iter().enumerate() {
            let at = |field: &str| format!("carrier[{i}].{field}");
            validate_name(&c.name.replace(' ', "-")).map_err(|e| FieldError::new(at("name"), e.message))?;
            // Checked here so a typo fails at start; the cells' own PLMNs go into the PDUs.
            Plmn::new(&c.mcc, &c.mnc).map_err(|e| FieldError::new(at("mnc"), e.to_string()))?;
            let mnc: u16 = c.mnc.parse().map_err(|_| FieldError::new(at("mnc"), "digits"))?;
            validate_url(&at("cbc_url"), &c.cbc_url)?;
            let token = secret_from("token", &c.token, &c.token_env, env)
                .map_err(|e| FieldError::new(at(&e.field), e.message))?;
            if c.geofence_max_wait_s == Some(encoders::cell_broadcast::warning_area::WAIT_NOT_SET) {
                return Err(FieldError::new(
                    at("geofence_max_wait_s"),
                    "255 is reserved for \"the phone's default\": leave the key out for that (0..=254 seconds)",
                ));
            }
            resolved.push(Carrier {
                name: c.name.clone(),
                mnc,
                cbc_url: c.cbc_url.clone(),
                token,
                warning_area_coordinates: c.warning_area_coordinates,
                geofence_max_wait_s: c.geofence_max_wait_s,
            });
        }
        if let Some(d) = duplicates(resolved.iter().map(|c| c.name.as_str())) {
            return Err(FieldError::new("carrier.name", format!("`{d}` appears twice")));
        }

        Ok(Settings {
            enabled: cb.enabled,
            retry: cb.retry.resolve(CBC_RETRY),
            schedule: Schedule {
                repetition_period_s: cb.repetition_period_s,
                number_of_broadcasts: cb.number_of_broadcasts,
            },
            geo_scope,
            class_geo_scope,
            rebroadcast_on,
            policy,
            carriers: resolved,
        })
    }
}

/// The alert's latest write-replace: what its broadcast says now (later versions re-alert only above it).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CbcAlert {
    pub serial: SerialNumber,
    pub message_ids: [u16; 2],
    pub class: PwsClass,
    pub level_index: Option<u32>,
    pub severity: Option<Severity>,
    pub area_id: String,
}

impl CbcAlert {
    pub fn of(r: &BroadcastRecord) -> CbcAlert {
        CbcAlert {
            serial: SerialNumber::from_u16(r.serial),
            message_ids: r.message_ids,
            class: PwsClass::from_message_id(r.message_ids[0]).map_or(PwsClass::Alert, |(c, _)| c),
            level_index: r.level_index,
            severity: r.severity,
            area_id: r.area_id.clone(),
        }
    }
}

/// Rank of a class for "the class rose": a monthly test, an alert (警訊通知), an emergency (緊急警報), presidential.
fn class_rank(class: PwsClass) -> u8 {
    match class {
        PwsClass::MonthlyTest => 0,
        PwsClass::Alert => 1,
        PwsClass::Emergency(_) => 2,
        PwsClass::Presidential => 3,
    }
}

/// Planning against what is on the air (the state is the outbox's; the decisions are this channel's).
impl State {
    /// Brings the air in line with the alert's latest message `msg` (see the module doc): the broadcasts (and their
    /// envelopes, one delivery per carrier) that start, re-alert or stop it. `operator`: an operator asked for a new
    /// broadcast (a reason to re-alert on its own).
    pub(crate) fn plan_broadcasts(
        &self,
        ctx: &PlanContext<'_>,
        msg: &StoredMessage,
        operator: bool,
        take_id: &mut dyn FnMut() -> u64,
    ) -> (Vec<NewDelivery>, Vec<BroadcastRecord>) {
        let mut out = (Vec::new(), Vec::new());
        let ended = msg.view.state.is_end() || msg.msg_type == MsgType::Cancel;
        let wanted = if ended { None } else { class_for(&msg.view, &ctx.cbc.policy) };
        let last = self.alerts.get(&msg.alert_id).and_then(|h| h.cbc.clone());
        let live: Vec<&ledger::AirEntry> = self.ledger.to_stop(&msg.alert_id).collect();
        let push = |out: &mut (Vec<NewDelivery>, Vec<BroadcastRecord>),
                    (r, envelopes): (BroadcastRecord, Vec<Envelope>)| {
            if let Some(e) = &r.error {
                tracing::error!(alert = %r.alert_id, error = %e, "cell broadcast not sent");
                METRICS.errors.with_label_values(&["broadcast_encode"]).inc();
            }
            for c in r.carriers.iter().filter(|c| c.delivery_id.is_none()) {
                if let Some(d) = &c.detail {
                    tracing::warn!(alert = %r.alert_id, carrier = %c.carrier, detail = %d, "carrier gets no broadcast");
                    METRICS.errors.with_label_values(&["targeting"]).inc();
                }
            }
            for e in envelopes {
                let target = Channel::Cbc.target_name(&e.carrier);
                let kind = match r.kind {
                    BroadcastKind::WriteReplace => "write_replace",
                    BroadcastKind::Stop => "stop",
                };
                let key = crate::ledger::cbc_key(&r.identifier, &target, kind, r.message_code, r.update_number);
                out.0.push(NewDelivery {
                    id: e.id,
                    target,
                    identifier: r.identifier.clone(),
                    replay_of: None,
                    envelope: Some(e.body),
                    at_ms: ctx.now_ms,
                    alert_id: None,
                    version: None,
                    key: Some(key),
                });
            }
            out.1.push(r);
        };
        // Every serial of the alert the ledger says is (or may be) on the air, each in the cells it was written to,
        // in each carrier's outbox ahead of anything new.
        let stop_all =
            |out: &mut (Vec<NewDelivery>, Vec<BroadcastRecord>), reason: &str, take_id: &mut dyn FnMut() -> u64| {
                let mut groups: BTreeMap<([u16; 2], u16), broadcast::StopCells> = BTreeMap::new();
                for e in &live {
                    groups.entry((e.message_ids, e.serial)).or_default().insert(e.carrier.clone(), e.cells.clone());
                }
                for ((ids, serial), cells) in groups {
                    let class = PwsClass::from_message_id(ids[0]).map_or(PwsClass::Alert, |(class, _)| class);
                    let serial = SerialNumber::from_u16(serial);
                    push(
                        out,
                        broadcast::plan(
                            &ctx.broadcast,
                            msg,
                            BroadcastKind::Stop,
                            class,
                            Some(ids),
                            serial,
                            false,
                            reason,
                            Some(&cells),
                            take_id,
                        ),
                    );
                }
            };
        let write = |out: &mut (Vec<NewDelivery>, Vec<BroadcastRecord>),
                     class: PwsClass,
                     serial: SerialNumber,
                     allocated: bool,
                     reason: &str,
                     take_id: &mut dyn FnMut() -> u64| {
            push(
                out,
                broadcast::plan(
                    &ctx.broadcast,
                    msg,
                    BroadcastKind::WriteReplace,
                    class,
                    None,
                    serial,
                    allocated,
                    reason,
                    None,
                    take_id,
                ),
            )
        };
        let Some(class) = wanted else {
            // Ended: stop everything of it. Not ended but the policy gives no class now (its level fell below what
            // is broadcast): the broadcast stays, as a falling level does (see the module doc).
            if ended && !live.is_empty() {
                stop_all(&mut out, "ended", take_id);
            }
            return out;
        };
        let reason = match &last {
            None => "first",
            Some(_) if operator => "operator",
            // Calm unless it goes above what it said (nothing on the air of it: its zone has no carrier's cells, or
            // every write failed to encode; a later version re-plans only on a rise, not on every change).
            Some(last) => match self.escalation(ctx, last, &msg.view, class, &live) {
                Some(r) => r,
                None => {
                    METRICS.cbc_calm.inc();
                    return out;
                }
            },
        };
        let scope = ctx.cbc.scope_for(class);
        let (serial, allocated) = match &last {
            Some(last) => {
                let next = last.serial.next_update();
                (SerialNumber::new(scope, next.message_code(), next.update_number()).unwrap_or(next), false)
            }
            None => {
                let Some(code) = self.allocate_code() else {
                    tracing::error!(alert = %msg.alert_id, "all 1024 message codes are on the air; broadcast not sent");
                    METRICS.errors.with_label_values(&["broadcast_encode"]).inc();
                    return out;
                };
                // A code used before starts one update above its last use, so that a phone that showed the earlier
                // alert under it within its duplicate-detection window (Android: 24 h) still shows this one.
                let update = self.code_updates.get(&code).map_or(0, |u| (u + 1) & 0xF);
                let Ok(serial) = SerialNumber::new(scope, code, update) else {
                    return out;
                };
                (serial, true)
            }
        };
        if !live.is_empty() {
            stop_all(&mut out, "superseded", take_id);
        }
        write(&mut out, class, serial, allocated, reason, take_id);
        out
    }

    /// Why this version goes above what is on the air (`last`), if it does and the config counts that reason.
    fn escalation(
        &self,
        ctx: &PlanContext<'_>,
        last: &CbcAlert,
        view: &crate::view::AlertView,
        class: PwsClass,
        live: &[&ledger::AirEntry],
    ) -> Option<&'static str> {
        let on = |r: &str| ctx.cbc.rebroadcast_on.contains(r);
        if on("class_rise") && class_rank(class) > class_rank(last.class) {
            return Some("class_rose");
        }
        if on("level_rise") && view.level_index.zip(last.level_index).is_some_and(|(new, old)| new > old) {
            return Some("level_rose");
        }
        // CAP severities order Extreme first.
        if on("severity_rise") && last.severity.is_some_and(|old| view.severity < old) {
            return Some("severity_rose");
        }
        if on("area_growth") && view.area_id != last.area_id {
            let grew = ctx.broadcast.carriers.iter().zip(broadcast::target(&ctx.broadcast, &view.area_id)).any(
                |(carrier, cells)| {
                    let written: BTreeSet<&str> = live
                        .iter()
                        .filter(|e| e.carrier == carrier.name)
                        .flat_map(|e| e.cells.iter().map(String::as_str))
                        .collect();
                    cells.is_ok_and(|(_, names)| names.iter().any(|n| !written.contains(n.as_str())))
                },
            );
            if grew {
                return Some("area_grew");
            }
        }
        None
    }

    /// The next message code after the last one handed out that no broadcast on the air and no active alert uses.
    fn allocate_code(&self) -> Option<u16> {
        // On the air, and held by any alert still active (its next rise reuses its code).
        let active = self.alerts.values().filter(|h| !h.last_view.state.is_end());
        let on_air: BTreeSet<u16> = self
            .ledger
            .codes_in_use()
            .chain(active.filter_map(|h| h.cbc.as_ref().map(|c| c.serial.message_code())))
            .collect();
        let start = self.last_code.map_or(0, |c| c + 1);
        (0..=SerialNumber::MAX_MESSAGE_CODE)
            .map(|i| (start + i) % (SerialNumber::MAX_MESSAGE_CODE + 1))
            .find(|c| !on_air.contains(c))
    }

    /// Targeting reports still to compute: (broadcast index, zone, carrier indices) of write-replace broadcasts
    /// from `from` on whose sent carriers (index, name) have no report yet.
    pub fn missing_reports(&self, from: usize) -> Vec<ReportJob> {
        self.broadcasts
            .range(from..)
            .filter(|(_, b)| b.kind == BroadcastKind::WriteReplace)
            .filter_map(|(&i, b)| {
                let carriers: Vec<(usize, String)> = b
                    .carriers
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.delivery_id.is_some() && c.targeting.is_none())
                    .map(|(ci, c)| (ci, c.carrier.clone()))
                    .collect();
                let zone = match self.messages.get(&b.identifier) {
                    Some(m) => m.view.area_id.clone(),
                    None => self.alerts.get(&b.alert_id)?.last_view.area_id.clone(),
                };
                (!carriers.is_empty()).then_some((i, zone, carriers))
            })
            .collect()
    }
}

/// A targeting report to compute: broadcast index, zone, and the carriers (index, name) still without one.
pub(crate) type ReportJob = (usize, String, Vec<(usize, String)>);

/// Computes targeting reports (~10 ms per carrier for a county: on a blocking thread, after the envelopes went)
/// and hands each to `commit` as its journal record.
pub(crate) fn targeting_reports(
    geo: &GeoIndex,
    carriers: &[Carrier],
    reports: Vec<ReportJob>,
    mut commit: impl FnMut(Record),
) {
    for (broadcast, zone, targets) in reports {
        for (carrier, name) in targets {
            // By name: the carrier list may have changed since the broadcast (a restart with a new config).
            let Some(mnc) = carriers.iter().find(|c| c.name == name).map(|c| c.mnc) else {
                continue;
            };
            match broadcast::targeting_report(geo, &zone, mnc) {
                Ok(summary) => commit(Record::Targeting { broadcast, carrier, summary }),
                Err(e) => {
                    tracing::warn!(zone = %zone, error = %e, "no targeting report");
                    METRICS.errors.with_label_values(&["targeting"]).inc();
                }
            }
        }
    }
}
