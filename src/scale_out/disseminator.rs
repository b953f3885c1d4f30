//! The dissemination node on the NATS backbone (`serve --cluster … --role dissemination`): turns the alert changes of
//! the alerts stream into public warnings with the very code a single process runs (`App::publish_all_at`: the
//! publication's calm updates and flapping holds, the approval gate's held chain, then `dissemination`'s CAP
//! messages, webhooks and cell broadcasts), and delivers them with ids that survive the loss of the machine.
//!
//! - **One active node.** It holds the lease `dissemination` in the lease bucket (a name no county code can be);
//!   standbys try it every ttl/4 and the first to find it expired takes over. A lease found lost ends the process
//!   (exit 75), as a rule worker's does; while a renewal is late the node sends nothing (the delivery ledger refuses
//!   it, below).
//! - **Take-over** (the first start too): the node's earlier dissemination state was set aside at start
//!   (`BackboneRole::prepare_data_dir`); it replays `DC_ALERTS` from the start through the publication, on the
//!   alerts' own issue times (`App::alerts.replaying` keeps the wall-clock tick out of it), so it plans the same
//!   warning versions, CAP messages and broadcasts as the node before it — and the same delivery keys.
//! - **Then live**: the durable consumer `dc_dissemination` (`cluster::alert_feed`) gives the changes in order, one
//!   unacknowledged at a time; each is published, the deliveries it planned are recorded in the delivery ledger
//!   (`cluster::deliveries`), and only then is it acknowledged. A change the dead node never acknowledged comes again
//!   after `ack_wait` (the lease ttl) and is acknowledged at once if the replay had it.
//! - **The delivery ledger** (`dissemination::ledger`): the outbox asks it before every attempt. A delivery a
//!   receiver confirmed (here or on the node before) is not sent again; any other is sent with its key as
//!   `X-DC-Delivery` and the ledger's attempt count as `X-DC-Attempt` (above 1: a retry, which receivers recognise).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use cluster::alert_feed::{self, AlertChange, AlertQueue};
use cluster::alerts::AlertsLog;
use cluster::deliveries::Deliveries;
use cluster::lease::{Lease, Leases};
use cluster::Backbone;
use dissemination::{Begin, DeliveryLedger, LedgerError, LedgerFuture, PlannedDelivery};
use parking_lot::Mutex;
use prometheus::{register_int_counter_vec, register_int_gauge, IntCounterVec, IntGauge};
use tokio::time::Instant;

use super::alert_message::open_alert_message;
use super::signing::TrustedKeys;
use super::ScaleOutError;
use crate::app::App;

/// The lease of the active dissemination node (counties are five digits: no region can be called this).
pub const LEASE: &str = "dissemination";

/// How long the ledger keeps an entry after its last write: far longer than any alert's replay could still plan it.
const LEDGER_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Alert changes this node took from the alerts stream, by outcome.
static CHANGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = register_int_counter_vec!(
        "dc_cluster_dissemination_changes_total",
        "Alert changes the dissemination node took from DC_ALERTS, by outcome (replayed: rebuilt at take-over; \
         applied: live; repeated: a version already applied, acknowledged only; unreadable: skipped)",
        &["outcome"]
    )
    .expect("metric registers");
    for outcome in ["replayed", "applied", "repeated", "unreadable"] {
        c.with_label_values(&[outcome]);
    }
    c
});

/// Deliveries the ledger holds unconfirmed that the take-over's replay did not plan again, so nothing will send them.
static ORPHANS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "dc_cluster_dissemination_orphans",
        "Deliveries recorded unconfirmed in the ledger that this node's replay of the alerts stream did not plan again"
    )
    .expect("metric registers")
});

/// 1 while this node holds the dissemination lease (0: standby).
static ACTIVE: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("dc_cluster_dissemination_active", "1 while this node is the active dissemination node")
        .expect("metric registers")
});

/// What the node's tasks share.
struct Node {
    app: Arc<App>,
    backbone: Backbone,
    leases: Leases,
    /// The lease while held (renewed by the keeper; the ledger checks it before every attempt).
    lease: Mutex<Option<Lease>>,
    deliveries: Deliveries,
    /// The workers' keys: with any, only alert messages they signed are disseminated (`alert_message.rs`).
    trusted: Arc<TrustedKeys>,
}

impl Node {
    fn lease_valid(&self) -> bool {
        self.lease.lock().as_ref().is_some_and(|l| l.is_valid(Instant::now()))
    }
}

/// The delivery ledger the outbox asks (`dissemination::DeliveryLedger`), on the replicated bucket, refusing while
/// this node does not validly hold the lease: a node that may have lost it sends nothing.
struct Ledger(Arc<Node>);

impl Ledger {
    fn check_lease(&self) -> Result<(), LedgerError> {
        if self.0.lease_valid() {
            Ok(())
        } else {
            Err(LedgerError(
                "this node does not validly hold the dissemination lease (standby, or renewal late)".into(),
            ))
        }
    }
}

impl DeliveryLedger for Ledger {
    fn record<'a>(&'a self, planned: &'a [PlannedDelivery]) -> LedgerFuture<'a, ()> {
        Box::pin(async move {
            for p in planned {
                self.0
                    .deliveries
                    .record(&p.key, &p.target, &p.identifier)
                    .await
                    .map_err(|e| LedgerError(e.to_string()))?;
            }
            Ok(())
        })
    }

    fn begin<'a>(&'a self, delivery: &'a PlannedDelivery) -> LedgerFuture<'a, Begin> {
        Box::pin(async move {
            self.check_lease()?;
            match self.0.deliveries.begin(&delivery.key, &delivery.target, &delivery.identifier).await {
                Ok(Some(n)) => Ok(Begin::Attempt(n)),
                Ok(None) => Ok(Begin::Confirmed),
                Err(e) => Err(LedgerError(e.to_string())),
            }
        })
    }

    fn confirm<'a>(&'a self, key: &'a str) -> LedgerFuture<'a, ()> {
        Box::pin(async move { self.0.deliveries.confirm(key).await.map_err(|e| LedgerError(e.to_string())) })
    }
}

/// Connects the node's parts and starts it: as a standby until it gets the lease, then active.
pub(super) async fn start(
    app: Arc<App>,
    backbone: Backbone,
    lease_ttl: Duration,
    trusted: Arc<TrustedKeys>,
) -> Result<(), ScaleOutError> {
    LazyLock::force(&CHANGES);
    LazyLock::force(&ORPHANS);
    ACTIVE.set(0);
    let Some(disseminate) = &app.partners.dissemination else {
        return Err(ScaleOutError::Zones {
            file: "the main configuration file".into(),
            message: "the dissemination role needs `dissemination = \"…toml\"`".into(),
        });
    };
    let leases = Leases::open(&backbone, lease_ttl).await?;
    let deliveries = Deliveries::open(&backbone, LEDGER_MAX_AGE).await?;
    // The stream exists before any worker wrote to it.
    AlertsLog::open(&backbone).await?;
    let node = Arc::new(Node { app: Arc::clone(&app), backbone, leases, lease: Mutex::new(None), deliveries, trusted });
    disseminate.use_ledger(Arc::new(Ledger(Arc::clone(&node))));
    tokio::spawn(run(node));
    Ok(())
}

async fn run(node: Arc<Node>) {
    let ttl = node.leases.ttl();
    let mut waiting_logged = false;
    let lease = loop {
        match node.leases.acquire(LEASE).await {
            Ok(Some(lease)) => break lease,
            Ok(None) => {
                if !waiting_logged {
                    let holder = node.leases.holder(LEASE).await.ok().flatten().unwrap_or_default();
                    tracing::info!(holder, "dissemination: standby (another node holds the lease)");
                    waiting_logged = true;
                }
            }
            Err(e) => tracing::warn!(error = %e, "dissemination: could not try the lease"),
        }
        tokio::time::sleep(ttl / 4).await;
    };
    *node.lease.lock() = Some(lease);
    ACTIVE.set(1);
    tracing::info!("dissemination: lease acquired, taking over");
    tokio::spawn(keep_lease(Arc::clone(&node)));
    take_over(&node).await;
}

/// Renews the lease every ttl/4; a lease found lost ends the process (see the module doc).
async fn keep_lease(node: Arc<Node>) {
    let mut tick = tokio::time::interval(node.leases.ttl() / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(mut lease) = node.lease.lock().clone() else { return };
        match node.leases.renew(&mut lease).await {
            Ok(true) => *node.lease.lock() = Some(lease),
            Ok(false) => lost("lease renewal refused (expired and taken)"),
            Err(e) => {
                tracing::warn!(error = %e, "dissemination lease not renewed; retrying (deliveries pause once it is no longer valid)")
            }
        }
    }
}

fn lost(why: &str) -> ! {
    tracing::error!(why, "dissemination lease lost: exiting so that a restart begins from the cluster's state");
    std::process::exit(75)
}

/// What the node applied, so that a version seen again (a worker's re-publication, a redelivery) is not applied
/// twice.
#[derive(Default)]
struct Applied {
    /// Alert id → the newest version applied.
    versions: HashMap<String, u32>,
    /// The newest stream sequence applied.
    sequence: u64,
    /// The keys of the deliveries planned so far (kept during the replay only).
    planned: Option<std::collections::HashSet<String>>,
}

/// Replays the stream, then takes the changes live (see the module doc). Never returns; a node that cannot read
/// the stream exits, as its standby then takes over.
async fn take_over(node: &Node) {
    let started = std::time::Instant::now();
    let mut applied = Applied { planned: Some(Default::default()), ..Applied::default() };
    node.app.alerts.replaying.store(true, Ordering::Release);
    let (changes, last) = match alert_feed::replay(&node.backbone).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "dissemination: cannot replay the alerts stream");
            std::process::exit(75)
        }
    };
    let replayed = changes.len();
    for change in &changes {
        apply(node, change, &mut applied, "replayed").await;
    }
    applied.sequence = applied.sequence.max(last);
    node.app.alerts.replaying.store(false, Ordering::Release);
    tracing::info!(replayed, last_sequence = last, took = ?started.elapsed(), "dissemination: warnings rebuilt from the alerts stream");
    // What the node before recorded and no receiver confirmed is sent again by the replay's own plans (same keys).
    // Anything else would never be sent: said loudly, not hidden.
    let planned = applied.planned.take().unwrap_or_default();
    match node.deliveries.unconfirmed().await {
        Ok(entries) => {
            let orphans: Vec<_> = entries.into_iter().filter(|(key, _)| !planned.contains(key)).collect();
            ORPHANS.set(orphans.len() as i64);
            for (key, entry) in &orphans {
                tracing::error!(delivery = %key, target = %entry.target, message = %entry.identifier, attempts = entry.attempts, "dissemination: a recorded delivery the replay did not plan again will not be sent");
            }
        }
        Err(e) => tracing::warn!(error = %e, "dissemination: could not list the ledger's unconfirmed deliveries"),
    }

    let ack_wait = node.leases.ttl().max(Duration::from_secs(2));
    let mut queue = match AlertQueue::open(&node.backbone, ack_wait).await {
        Ok(q) => q,
        Err(e) => {
            tracing::error!(error = %e, "dissemination: cannot open the alerts consumer");
            std::process::exit(75)
        }
    };
    loop {
        let change = match queue.next().await {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "dissemination: the alerts consumer is recovering");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            None => {
                tracing::error!("dissemination: the alerts consumer ended");
                std::process::exit(75)
            }
        };
        wait_for_lease(node).await;
        if change.sequence > applied.sequence {
            apply(node, &change, &mut applied, "applied").await;
            applied.sequence = change.sequence;
        } else {
            CHANGES.with_label_values(&["repeated"]).inc();
        }
        // Acknowledged after its deliveries are recorded (in `apply`). A lost acknowledgement only brings the change
        // back after `ack_wait`, as a repeat.
        if let Err(e) = change.ack().await {
            tracing::warn!(error = %e, sequence = change.sequence, "dissemination: acknowledgement not confirmed");
        }
    }
}

/// Pauses while the lease is not valid (the keeper renews it, or ends the process when it is lost).
async fn wait_for_lease(node: &Node) {
    let mut warned = false;
    while !node.lease_valid() {
        if !warned {
            tracing::warn!("dissemination lease not valid (renewal late): alert changes wait");
            warned = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One alert change through the publication and the outbox, on its issue time; its deliveries recorded in the
/// ledger before this returns.
async fn apply(node: &Node, change: &AlertChange, applied: &mut Applied, outcome: &'static str) {
    let record = match open_alert_message(&node.trusted, &change.subject, &change.payload) {
        Ok(Some(r)) => r,
        // A public warning, for fan-out nodes: this node rebuilds the warnings from the alerts.
        Ok(None) => {
            applied.sequence = applied.sequence.max(change.sequence);
            return;
        }
        Err(e) => {
            CHANGES.with_label_values(&["unreadable"]).inc();
            tracing::error!(error = %e, sequence = change.sequence, subject = %change.subject, "dissemination: alerts-stream message skipped");
            return;
        }
    };
    let alert = record.alert;
    applied.sequence = applied.sequence.max(change.sequence);
    if applied.versions.get(&alert.id).is_some_and(|&v| v >= alert.version) {
        CHANGES.with_label_values(&["repeated"]).inc();
        return;
    }
    applied.versions.insert(alert.id.clone(), alert.version);
    let issued_ms = alert.issued_ms;
    // What a single process's housekeeping tick would have released by then, then the change itself.
    node.app.publication_due_at(issued_ms);
    node.app.publish_all_at(std::slice::from_ref(&alert), issued_ms);
    CHANGES.with_label_values(&[outcome]).inc();
    let Some(disseminate) = &node.app.partners.dissemination else { return };
    let planned = disseminate.take_planned();
    if planned.is_empty() {
        return;
    }
    if let Some(keys) = &mut applied.planned {
        keys.extend(planned.iter().map(|p| p.key.clone()));
    }
    let Some(ledger) = disseminate.ledger() else { return };
    let mut warned = false;
    loop {
        match ledger.record(&planned).await {
            Ok(()) => return,
            Err(e) => {
                if !warned {
                    tracing::warn!(error = %e, deliveries = planned.len(), "dissemination: deliveries not recorded yet; retrying before the change is acknowledged");
                    warned = true;
                }
                change.in_progress().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
