//! A rule worker on the NATS backbone (`serve --cluster … --role worker`): owns regions (counties) by lease and runs
//! each owned region's readings, in stream order, through the same hot path as a single process
//! (`hot_path::HotPath`), publishing every change of its alerts to the replicated alerts stream. When a worker dies,
//! another takes its regions over and continues their alerts: same id, next version, never a second alert.
//!
//! Four tasks:
//! - the **lease keeper** renews the leases held (every ttl/4), announces the worker (`cluster::presence`) and
//!   balances: each worker holds about its share, `ceil(regions / live workers)`. Under its share it acquires
//!   regions nobody holds (`cluster::lease`); past it, while another live worker is under its share, it hands the
//!   excess over — the processor finishes with the region (progress mark saved, its alerts dropped from the book)
//!   and the keeper then releases the lease, which the other worker acquires at its next tick. A region nobody
//!   holds for a whole ttl is taken by anyone, share or not: no region stays unowned because the count of live
//!   workers is briefly wrong. A lease found lost (someone else's revision) ends the process: it cannot know what
//!   the new owner did with its regions, and a restart (the orchestrator's) is the one state that is certainly
//!   right. On SIGTERM (or SIGINT) it withdraws the worker's presence, hands every region over the same way and
//!   releases every lease, so the other workers take the regions at once instead of a ttl later; `serve` waits
//!   for that before it exits ([`finish`]).
//! - one **reader** per owned region, an ordered consumer on `dc.readings.{region}.>` from the region's progress
//!   mark, feeding the processor.
//! - the **pruner** removes, from the regions owned, the subjects of alerts that ended longer than the retention
//!   ago (`ended_alert_retention_s`), and drops them from the book: the stream holds open and recently ended
//!   alerts, not every alert ever raised.
//! - the **processor** owns the hot path. Per reading: wait while the region's lease is not valid (the lease
//!   keeper is renewing it; no work is done for a region we may no longer own), run the hot path, publish the alert
//!   changes it made to `DC_ALERTS` (waiting for the quorum's acknowledgement), then move the region's progress mark
//!   to the reading (at once if an alert changed, else within a second). Alert changes from elsewhere — the
//!   housekeeping tick (deadman), operators' commands — are published as they come. Public warnings' versions go
//!   the same way (`W-…`, for fan-out nodes' citizens), and every message is signed with the worker's key
//!   (`backbone_alerts.rs`).
//!
//! Taking a region over (`take_over`): fence and read its progress mark; adopt the latest record of each of its
//! alerts into the book (`AlertBook::adopt`), each message verified against the trusted keys when there are any (a
//! refused last message: the newest earlier one that verifies), and its public warnings' chains into the publication
//! (`Publication::adopt`); rebuild the rule windows from the readings the rules still remember up
//! to the mark, findings dropped (their effect is what was adopted); then let the engine take its levels from the
//! book (`adopt_levels`, as after a restart); then read on from the mark. Readings after the mark are evaluated as
//! new: the old owner's changes for them either reached the alerts stream (then the same levels come out again, no
//! change) or did not (then they are made now). docs/SCALING.md § Rule workers.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use alerting::{AlertRecord, ZoneRef};
use cluster::alerts::{self, AlertsLog};
use cluster::lease::{Lease, Leases};
use cluster::presence::Presence;
use cluster::progress::{Mark, Progress};
use cluster::readings::{self, Delivered, RegionReadings};
use cluster::Backbone;
use ingest::RawMessage;
use parking_lot::Mutex;
use prometheus::{register_int_counter_vec, register_int_gauge, IntCounterVec, IntGauge};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use super::backbone_alerts::{self, Body};
use super::region::{county_of, zone_region};
use super::signing::{AlertSigner, TrustedKeys};
use crate::app::App;
use crate::clock::now_ms;
use crate::hot_path::HotPath;

/// Alert versions a worker sent to the alerts stream, by outcome.
static ALERT_VERSIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = register_int_counter_vec!(
        "dc_cluster_alert_versions_total",
        "Alert versions a rule worker sent to the alerts stream DC_ALERTS, by outcome (stored; duplicate: already \
         there; not_owned: the alert's region is not ours; failed: not acknowledged in time)",
        &["outcome"]
    )
    .expect("metric registers");
    for outcome in ["stored", "duplicate", "not_owned", "failed"] {
        c.with_label_values(&[outcome]);
    }
    c
});

/// Readings a worker ran, by phase.
static WORKER_READINGS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = register_int_counter_vec!(
        "dc_cluster_worker_publishes_total",
        "Device publishes a rule worker took from the readings stream, by phase (processed: through the hot path; \
         replayed: into the rule windows only, when taking a region over)",
        &["phase"]
    )
    .expect("metric registers");
    for phase in ["processed", "replayed"] {
        c.with_label_values(&[phase]);
    }
    c
});

/// Regions a worker gave up on purpose, by why (`balance`: another live worker was under its share; `stop`: the
/// worker was asked to stop). Each is followed by the lease's release.
static HANDED_OVER: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = register_int_counter_vec!(
        "dc_cluster_regions_handed_over_total",
        "Regions a rule worker handed over (progress saved, lease released), by why (balance, stop)",
        &["why"]
    )
    .expect("metric registers");
    for why in ["balance", "stop"] {
        c.with_label_values(&[why]);
    }
    c
});

/// Ended alerts whose subjects a worker removed from the alerts stream after their retention, by outcome.
static PRUNED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = register_int_counter_vec!(
        "dc_cluster_alerts_pruned_total",
        "Ended alerts a rule worker removed from the alerts stream after their retention, by outcome (removed, failed)",
        &["outcome"]
    )
    .expect("metric registers");
    for outcome in ["removed", "failed"] {
        c.with_label_values(&[outcome]);
    }
    c
});

static REGIONS_OWNED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("dc_cluster_regions_owned", "Regions (counties) this rule worker owns and runs now")
        .expect("metric registers")
});

static ALERTS_ADOPTED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "dc_cluster_alerts_adopted",
        "Alerts this rule worker continued from the alerts stream when it took regions over"
    )
    .expect("metric registers")
});

/// Messages of a region's alerts a worker taking the region over did not adopt, by reason (the signature's:
/// unsigned, unknown_key, bad_signature; outside_region; malformed).
static ADOPT_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = register_int_counter_vec!(
        "dc_cluster_adopt_refused_total",
        "Alerts-stream messages a rule worker taking a region over did not adopt, by reason (unsigned, unknown_key, \
         bad_signature: not signed by a trusted worker key; outside_region; malformed)",
        &["reason"]
    )
    .expect("metric registers");
    for reason in ["unsigned", "unknown_key", "bad_signature", "outside_region", "malformed"] {
        c.with_label_values(&[reason]);
    }
    c
});

/// A worker's keys on the alerts stream.
#[derive(Clone, Default)]
pub(super) struct Keys {
    /// Signs every message the worker writes (`None`: unsigned; fan-out nodes refuse them).
    pub signer: Option<Arc<AlertSigner>>,
    /// The workers' keys a region's alerts must be signed with to be adopted (empty: anything is adopted).
    pub trusted: Arc<TrustedKeys>,
}

/// What the lease keeper tells the processor (on a channel of its own, unbounded: the keeper must never wait behind
/// readings, or its renewals would stall while the processor waits for a valid lease).
enum Control {
    /// A region's lease was acquired: take the region over.
    TakeOver(String),
    /// Finish with a region (balance or stop): stop reading it, publish its pending alert changes, save its progress
    /// mark, drop its alerts from the book; then tell the keeper (`handed`), which releases the lease.
    HandOver(String),
}

/// A reading publish of an owned region, in stream order.
type Reading = (String, Delivered);

/// The leases held, shared by the lease keeper (who renews them) and the processor (who checks them before work).
type Held = Arc<Mutex<HashMap<String, Lease>>>;

/// Everything the worker's tasks share.
struct Worker {
    app: Arc<App>,
    backbone: Backbone,
    alerts: AlertsLog,
    progress: Progress,
    held: Held,
    name: String,
    keys: Keys,
}

/// Connects the worker's parts and starts its tasks. `regions`: the counties it competes for (every county of the
/// loaded zones).
pub(super) async fn start(
    app: Arc<App>,
    backbone: Backbone,
    lease_ttl: Duration,
    ended_alert_retention: Duration,
    regions: Vec<String>,
    keys: Keys,
) -> Result<(), cluster::ClusterError> {
    LazyLock::force(&ALERT_VERSIONS);
    LazyLock::force(&WORKER_READINGS);
    LazyLock::force(&HANDED_OVER);
    LazyLock::force(&PRUNED);
    LazyLock::force(&ADOPT_REFUSED);
    REGIONS_OWNED.set(0);
    ALERTS_ADOPTED.set(0);
    // The readings stream exists before any reader is created (a worker may start before every front door).
    readings::ReadingsLog::open(&backbone).await?;
    let leases = Leases::open(&backbone, lease_ttl).await?;
    let presence = Presence::open(&backbone, lease_ttl).await?;
    let alerts = AlertsLog::open(&backbone).await?;
    let progress = Progress::open(&backbone).await?;
    let (tx, rx) = mpsc::channel(4096);
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (handed_tx, handed_rx) = mpsc::unbounded_channel();
    let worker = Arc::new(Worker {
        name: backbone.config().name.clone(),
        app,
        backbone,
        alerts,
        progress,
        held: Arc::default(),
        keys,
    });
    let stop = Arc::new(Notify::new());
    let (done_tx, done_rx) = watch::channel(false);
    if STOP.set(Stop { ask: Arc::clone(&stop), done: done_rx }).is_err() {
        tracing::error!("a second rule worker in one process: only the first is stopped cleanly");
    }
    tokio::spawn(ask_on_signal(Arc::clone(&stop)));
    let keeper = Keeper {
        worker: Arc::clone(&worker),
        leases,
        presence,
        regions,
        control: control_tx,
        handed: handed_rx,
        handing: BTreeSet::new(),
        free_since: HashMap::new(),
    };
    tokio::spawn(keeper.run(stop, done_tx));
    tokio::spawn(prune_ended(Arc::clone(&worker), ended_alert_retention));
    tokio::spawn(process(worker, rx, tx, control_rx, handed_tx));
    Ok(())
}

/// How the running worker is stopped: `ask` starts the hand-over of every region, `done` turns true once every
/// lease is released (or could not be: then it expires a ttl later).
struct Stop {
    ask: Arc<Notify>,
    done: watch::Receiver<bool>,
}

static STOP: OnceLock<Stop> = OnceLock::new();

/// SIGTERM (Kubernetes, systemd, `docker stop`) or SIGINT starts the clean stop at once, while the HTTP side drains.
async fn ask_on_signal(stop: Arc<Notify>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM: the worker's regions wait for the lease ttl after a stop");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("stop asked: handing every region over and releasing its lease");
    stop.notify_one();
}

/// Stops a rule worker running in this process, if any: hands its regions over and releases their leases, waiting
/// at most `within`. `serve` calls it before exiting; `false`: not finished in time (the leases left expire).
pub(super) async fn finish(within: Duration) -> bool {
    let Some(stop) = STOP.get() else { return true };
    stop.ask.notify_one();
    let mut done = stop.done.clone();
    let finished = tokio::time::timeout(within, done.wait_for(|d| *d)).await;
    let ok = matches!(finished, Ok(Ok(_)));
    if !ok {
        tracing::warn!(?within, "regions not all handed over in time: their leases expire after the ttl");
    }
    ok
}

/// Ends the process: a region was found owned by someone else while we thought it ours.
fn lost(region: &str, why: &str) -> ! {
    tracing::error!(
        region,
        why,
        "region lost to another worker: exiting so that a restart begins from the cluster's state"
    );
    std::process::exit(75)
}

/// The lease keeper's state (see the module's documentation).
struct Keeper {
    worker: Arc<Worker>,
    leases: Leases,
    presence: Presence,
    /// The regions competed for (counties; other roles' keys in the lease bucket are not counted).
    regions: Vec<String>,
    control: mpsc::UnboundedSender<Control>,
    /// Regions the processor has finished with: release their leases.
    handed: mpsc::UnboundedReceiver<String>,
    /// Regions handed to the processor to finish with, lease not yet released.
    handing: BTreeSet<String>,
    /// Regions seen with no holder, since when.
    free_since: HashMap<String, Instant>,
}

impl Keeper {
    async fn run(mut self, stop: Arc<Notify>, done: watch::Sender<bool>) {
        let mut tick = tokio::time::interval(self.leases.ttl() / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        // Leases released by others (a hand-over, a worker stopping): balance at once rather than at the next tick.
        let (wake, mut woken) = mpsc::unbounded_channel::<String>();
        tokio::spawn(watch_releases(self.leases.clone(), self.regions.clone(), wake));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.renew().await;
                    if !stopping {
                        self.balance().await;
                    }
                }
                Some(region) = woken.recv(), if !stopping => {
                    while woken.try_recv().is_ok() {}
                    tracing::debug!(region, "a lease was released: balancing now");
                    self.balance().await;
                }
                Some(region) = self.handed.recv() => self.release(&region).await,
                _ = stop.notified(), if !stopping => {
                    stopping = true;
                    // Out of the count first, so that the others' shares grow before our regions come free.
                    if let Err(e) = self.presence.withdraw().await {
                        tracing::warn!(error = %e, "presence not withdrawn: the others count this worker until it expires");
                    }
                    let held: Vec<String> = self.worker.held.lock().keys().cloned().collect();
                    for region in held {
                        self.hand_over(region, "stop");
                    }
                }
            }
            if stopping && self.worker.held.lock().is_empty() {
                tracing::info!("every region handed over and its lease released");
                let _ = done.send(true);
                return;
            }
        }
    }

    /// Renews every lease held (handed-over regions too, until released: the processor is still finishing them).
    async fn renew(&self) {
        let held: Vec<Lease> = self.worker.held.lock().values().cloned().collect();
        for mut lease in held {
            match self.leases.renew(&mut lease).await {
                Ok(true) => {
                    if let Some(slot) = self.worker.held.lock().get_mut(&lease.region) {
                        *slot = lease;
                    }
                }
                Ok(false) => lost(&lease.region, "lease renewal refused (expired and taken)"),
                Err(e) => {
                    tracing::warn!(error = %e, region = %lease.region, "lease not renewed; retrying (work on the region pauses once it is no longer valid)")
                }
            }
        }
    }

    /// Announces this worker, then moves toward its share: acquires free regions while under it (any region free
    /// for a whole ttl regardless), hands the excess over while over it and another live worker is under.
    async fn balance(&mut self) {
        let me = self.worker.name.clone();
        if let Err(e) = self.presence.announce().await {
            tracing::warn!(error = %e, "presence not announced");
        }
        let mut live = self.presence.live().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "live workers unknown: counting only this one");
            Vec::new()
        });
        if !live.contains(&me) {
            live.push(me.clone());
        }
        let share = self.regions.len().div_ceil(live.len()).max(1);
        // Who holds what, among the regions (an unreadable entry counts as held by someone unknown).
        let mut holds: HashMap<String, usize> = HashMap::new();
        let mut free = Vec::new();
        for region in &self.regions {
            if self.worker.held.lock().contains_key(region) {
                continue;
            }
            match self.leases.holder(region).await {
                Ok(Some(holder)) => *holds.entry(holder).or_default() += 1,
                Ok(None) => free.push(region.clone()),
                Err(e) => tracing::debug!(error = %e, region, "lease holder unknown"),
            }
        }
        let now = Instant::now();
        self.free_since.retain(|region, _| free.contains(region));
        let mut mine = self.worker.held.lock().len() - self.handing.len();
        for region in free {
            let since = *self.free_since.entry(region.clone()).or_insert(now);
            let abandoned = now.duration_since(since) >= self.leases.ttl();
            if mine >= share && !abandoned {
                continue;
            }
            match self.leases.acquire(&region).await {
                Ok(Some(lease)) => {
                    tracing::info!(region, owner = %me, share, live = live.len(), abandoned, "region lease acquired");
                    self.free_since.remove(&region);
                    self.worker.held.lock().insert(region.clone(), lease);
                    mine += 1;
                    if self.control.send(Control::TakeOver(region)).is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, region, "could not try the region's lease"),
            }
        }
        if mine <= share {
            return;
        }
        // Hand over only what live workers under their share can take (else the regions would just lie free).
        let wanted: usize =
            live.iter().filter(|w| **w != me).map(|w| share.saturating_sub(holds.get(w).copied().unwrap_or(0))).sum();
        let excess = (mine - share).min(wanted);
        let candidates: Vec<String> = {
            let held = self.worker.held.lock();
            held.keys().filter(|r| !self.handing.contains(*r)).cloned().collect::<BTreeSet<_>>().into_iter().collect()
        };
        for region in candidates.into_iter().take(excess) {
            tracing::info!(region, share, live = live.len(), "handing the region over to balance the workers");
            self.hand_over(region, "balance");
        }
    }

    fn hand_over(&mut self, region: String, why: &str) {
        if self.handing.insert(region.clone()) {
            HANDED_OVER.with_label_values(&[why]).inc();
            let _ = self.control.send(Control::HandOver(region));
        }
    }

    /// The processor is done with `region`: give the lease up, so that another worker acquires it at once.
    async fn release(&mut self, region: &str) {
        self.handing.remove(region);
        let Some(lease) = self.worker.held.lock().remove(region) else { return };
        match self.leases.release(lease).await {
            Ok(()) => tracing::info!(region, "region lease released"),
            Err(e) => tracing::warn!(error = %e, region, "lease not released: it expires after the ttl"),
        }
    }
}

/// Forwards the regions whose leases are released to the keeper, watching again after a failure.
async fn watch_releases(leases: Leases, regions: Vec<String>, wake: mpsc::UnboundedSender<String>) {
    use futures_util::StreamExt;
    loop {
        match leases.releases().await {
            Ok(releases) => {
                let mut releases = std::pin::pin!(releases);
                while let Some(region) = releases.next().await {
                    if regions.contains(&region) && wake.send(region).is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "lease releases not watched; the tick finds them"),
        }
        if wake.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What the processor keeps per owned region.
struct Owned {
    mark: Mark,
    /// The newest reading processed whose sequence is not yet in the mark (no alert changed with it).
    unsaved: Option<u64>,
    /// The task reading the region's readings into the processor's channel.
    reader: tokio::task::JoinHandle<()>,
}

async fn process(
    worker: Arc<Worker>,
    mut rx: mpsc::Receiver<Reading>,
    tx: mpsc::Sender<Reading>,
    mut control: mpsc::UnboundedReceiver<Control>,
    handed: mpsc::UnboundedSender<String>,
) {
    let app = Arc::clone(&worker.app);
    let mut hot_path = HotPath::new(Arc::clone(&app));
    let mut changes = app.channels.alerts.subscribe();
    let mut owned: HashMap<String, Owned> = HashMap::new();
    let mut save = tokio::time::interval(Duration::from_secs(1));
    save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // In this order, and between two readings, never in the middle of one: the reading in hand is finished
            // first; readings come last so that a busy region cannot hold back hand-overs, changes or the marks.
            biased;
            command = control.recv() => match command {
                None => return,
                Some(Control::TakeOver(region)) => {
                    let started = Instant::now();
                    match take_over(&worker, &region, &tx).await {
                        Ok((mark, reader)) => {
                            owned.insert(region.clone(), Owned { mark, unsaved: None, reader });
                            REGIONS_OWNED.set(owned.len() as i64);
                            tracing::info!(region, took = ?started.elapsed(), from_sequence = mark.sequence + 1, "region taken over");
                        }
                        Err(e) => {
                            tracing::error!(error = %e, region, "could not take the region over");
                            lost(&region, "take-over failed")
                        }
                    }
                }
                Some(Control::HandOver(region)) => {
                    if let Some(state) = owned.remove(&region) {
                        hand_over(&worker, &mut changes, &region, state).await;
                        REGIONS_OWNED.set(owned.len() as i64);
                    }
                    if handed.send(region).is_err() {
                        return;
                    }
                }
            },
            // Changes that no reading made: the housekeeping tick (deadman, forecasts expiring), operators.
            next = changes.recv() => match next {
                Ok(change) => {
                    publish_ids(&worker, vec![change.id.clone()]).await;
                    publish_changes(&worker, &mut changes, false).await;
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "alert changes outran the alerts stream publisher; sending every owned alert");
                    publish_changes(&worker, &mut changes, true).await;
                }
                Err(RecvError::Closed) => return,
            },
            _ = save.tick() => {
                for (region, state) in owned.iter_mut() {
                    if let Some(sequence) = state.unsaved {
                        save_mark(&worker, region, state, sequence).await;
                    }
                }
            }
            reading = rx.recv() => match reading {
                None => return,
                Some((region, delivered)) => {
                    // Read before the region was handed over: its next owner reads it again from the mark.
                    if !owned.contains_key(&region) {
                        continue;
                    }
                    wait_for_lease(&worker, &region).await;
                    let sequence = delivered.sequence;
                    hot_path.process(RawMessage { topic: delivered.topic, payload: delivered.payload });
                    WORKER_READINGS.with_label_values(&["processed"]).inc();
                    let changed = publish_changes(&worker, &mut changes, false).await;
                    let Some(region_state) = owned.get_mut(&region) else { continue };
                    if changed {
                        save_mark(&worker, &region, region_state, sequence).await;
                    } else {
                        region_state.unsaved = Some(sequence);
                    }
                }
            },
        }
    }
}

/// Finishes with a region given up on purpose: no more of its readings; the alert changes made so far go to the
/// stream (the lease is still ours and valid: the keeper renews it until told we are done); the mark moves to the
/// last reading processed; the region's alerts leave the book, so that this worker neither changes nor re-sends
/// what is now another's (if the region comes back, its take-over adopts them again from the stream).
async fn hand_over(
    worker: &Worker,
    changes: &mut tokio::sync::broadcast::Receiver<Arc<crate::audience::AlertBroadcast>>,
    region: &str,
    mut state: Owned,
) {
    state.reader.abort();
    publish_changes(worker, changes, false).await;
    if let Some(sequence) = state.unsaved {
        save_mark(worker, region, &mut state, sequence).await;
    }
    let app = &worker.app;
    let ids: Vec<String> = {
        let book = app.alerts.book.lock();
        book.all().filter(|a| zone_region(app, &a.area_id) == Some(region)).map(|a| a.id.clone()).collect()
    };
    {
        let mut book = app.alerts.book.lock();
        for id in &ids {
            book.forget(id);
        }
    }
    tracing::info!(region, mark = state.mark.sequence, alerts = ids.len(), "region handed over");
}

/// Removes ended alerts older than `retention` from the stream, region by owned region (see the module's
/// documentation). The end's time is the final version's storage time on the server, the same for every owner;
/// this worker's clock only measures the retention from it (a skew of seconds against a retention of hours).
async fn prune_ended(worker: Arc<Worker>, retention: Duration) {
    let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let regions: Vec<String> = worker.held.lock().keys().cloned().collect();
        for region in regions {
            let latest = match worker.alerts.region_messages(&region).await {
                Ok(latest) => latest,
                Err(e) => {
                    tracing::warn!(error = %e, region, "ended alerts not pruned this time");
                    continue;
                }
            };
            let now = now_ms();
            for message in latest {
                let expired = now.saturating_sub(message.stored_ms) >= retention.as_millis() as i64;
                if !expired || !ended(&worker.keys.trusted, &region, &message.subject, &message.payload) {
                    continue;
                }
                // Only while the region is ours: a new owner prunes it itself.
                let ours = worker.held.lock().get(&region).is_some_and(|l| l.is_valid(Instant::now()));
                if !ours {
                    break;
                }
                // Out of the book first, so that nothing re-sends it (which would put the subject back); if the
                // purge fails, the next sweep finds it in the stream again.
                let id = message.subject.rsplit('.').next().unwrap_or_default().to_string();
                worker.app.alerts.book.lock().forget(&id);
                match worker.alerts.remove(&message.subject).await {
                    Ok(messages) => {
                        PRUNED.with_label_values(&["removed"]).inc();
                        tracing::info!(
                            id,
                            region,
                            messages,
                            "ended alert removed from the alerts stream after its retention"
                        );
                    }
                    Err(e) => {
                        PRUNED.with_label_values(&["failed"]).inc();
                        tracing::warn!(error = %e, id, "ended alert not removed; retrying later");
                    }
                }
            }
        }
    }
}

/// Whether an alerts-stream message is the final version of an alert or of a public warning (cleared or
/// cancelled: an ended alert never changes again; a return of its hazard is a new alert). The message is read as
/// every reader reads it (`backbone_alerts::open`: the workers' envelope, checked against the trusted keys when there
/// are any); one that cannot be read is not pruned here (adoption refuses and counts it).
fn ended(trusted: &TrustedKeys, region: &str, subject: &str, payload: &[u8]) -> bool {
    let Ok(opened) = backbone_alerts::open(trusted, subject, region, payload) else { return false };
    let alert = match (&opened.body.record, &opened.body.warning) {
        (Some(record), _) => &record.alert,
        (None, Some(warning)) => &warning.alert,
        (None, None) => return false,
    };
    !alert.state.is_active()
}

async fn save_mark(worker: &Worker, region: &str, state: &mut Owned, sequence: u64) {
    if sequence <= state.mark.sequence {
        state.unsaved = None;
        return;
    }
    match worker.progress.save(region, &mut state.mark, sequence).await {
        Ok(true) => state.unsaved = None,
        Ok(false) => lost(region, "progress mark written by another owner"),
        // Kept for the next tick: a mark behind only makes a new owner evaluate a few more readings again.
        Err(e) => {
            tracing::warn!(error = %e, region, "progress mark not saved; retrying");
            state.unsaved = Some(sequence);
        }
    }
}

/// Pauses the region's work while its lease is not valid (the keeper renews it, or ends the process if it is lost).
async fn wait_for_lease(worker: &Worker, region: &str) {
    let mut warned = false;
    loop {
        let valid = worker.held.lock().get(region).is_some_and(|l| l.is_valid(Instant::now()));
        if valid {
            return;
        }
        if !warned {
            tracing::warn!(region, "region lease not valid (renewal late): its readings wait");
            warned = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes the alert changes waiting on `changes` (or, with `everything`, every alert of the book); `true` if
/// any alert of ours was published.
async fn publish_changes(
    worker: &Worker,
    changes: &mut tokio::sync::broadcast::Receiver<Arc<crate::audience::AlertBroadcast>>,
    everything: bool,
) -> bool {
    let mut ids = Vec::new();
    let mut resend = everything;
    loop {
        match changes.try_recv() {
            Ok(change) => ids.push(change.id.clone()),
            Err(TryRecvError::Lagged(_)) => resend = true,
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
        }
    }
    if resend {
        ids = worker.app.alerts.book.lock().all().map(|a| a.id.clone()).collect();
        ids.extend(worker.app.alerts.publication.lock().latest().map(|w| w.alert.id.clone()));
    }
    publish_ids(worker, ids).await
}

/// Publishes the book's current version of each alert, and of each public warning (`W-…`, what fan-out nodes'
/// citizens hear), signed with the worker's key (a change seen late goes out as what it has become: the stream's
/// history of that alert then skips a version, but its last message is right).
async fn publish_ids(worker: &Worker, mut ids: Vec<String>) -> bool {
    ids.sort();
    ids.dedup();
    let mut published = false;
    for id in ids {
        let Some((body, version)) = message_of(worker, &id) else { continue };
        let region = body.region.clone();
        let owned = worker.held.lock().contains_key(&region);
        if !owned {
            // A sensor near a county line whose zones lie in another county (docs/SCALING.md § Limits).
            ALERT_VERSIONS.with_label_values(&["not_owned"]).inc();
            tracing::warn!(id, area = %body.frame["area_id"], "alert outside the regions this worker owns: not published to the cluster");
            continue;
        }
        let Some(subject) = alerts::subject(&region, &id) else {
            ALERT_VERSIONS.with_label_values(&["failed"]).inc();
            tracing::error!(id, "alert id is not a subject token");
            continue;
        };
        let payload = backbone_alerts::seal(worker.keys.signer.as_deref(), &subject, &body);
        match worker.alerts.publish(&subject, &alerts::publish_id(&id, version), payload).await {
            Ok(duplicate) => {
                ALERT_VERSIONS.with_label_values(&[if duplicate { "duplicate" } else { "stored" }]).inc();
                published = true;
            }
            Err(e) => {
                ALERT_VERSIONS.with_label_values(&["failed"]).inc();
                tracing::error!(error = %e, id, version, "alert version not replicated");
            }
        }
    }
    published
}

/// The alerts stream's message of `id` and its version: an alert of the book (the record a next owner adopts, and
/// the operators' frame) or a public warning (its frame; citizens of fan-out nodes hear these). `None`: neither
/// (partners' alerts share the channel), or its area has no county.
fn message_of(worker: &Worker, id: &str) -> Option<(Body, u32)> {
    let app = &worker.app;
    let record = app.alerts.book.lock().record_of(id);
    let (kind, public, record, warning, frame, area, version) = match record {
        Some(record) => {
            let frame = serde_json::to_value(app.alert_message(&record.alert)).unwrap_or_default();
            let (public, area, version) =
                (record.alert.is_public(), record.alert.area_id.clone(), record.alert.version);
            (backbone_alerts::ALERT, public, Some(record), None, frame, area, version)
        }
        None => {
            let warning = app.alerts.publication.lock().latest().find(|w| w.alert.id == id).cloned()?;
            let frame = serde_json::to_value(app.warning_message(&warning)).unwrap_or_default();
            let (area, version) = (warning.alert.area_id.clone(), warning.alert.version);
            (backbone_alerts::PUBLIC_WARNING, true, None, Some(warning), frame, area, version)
        }
    };
    let Some(region) = zone_region(app, &area) else {
        ALERT_VERSIONS.with_label_values(&["not_owned"]).inc();
        tracing::warn!(id, area, "alert area has no county: not published to the cluster");
        return None;
    };
    let body = Body {
        kind: kind.into(),
        region: region.to_string(),
        worker: worker.name.clone(),
        worker_url: app.web.public_url.clone(),
        public,
        record,
        warning,
        frame,
    };
    Some((body, version))
}

/// Takes a region over (see the module's documentation); returns its progress mark.
async fn take_over(
    worker: &Worker,
    region: &str,
    tx: &mpsc::Sender<Reading>,
) -> Result<(Mark, tokio::task::JoinHandle<()>), cluster::ClusterError> {
    let app = &worker.app;
    let mark = worker.progress.take_over(region).await?;
    // The alert book: the latest version of each of the region's alerts, each verified (with trusted keys); for a
    // subject whose last message is refused, the newest earlier one that is not. Then the public warnings' chains,
    // whose members the book now has.
    let mut adopted = 0;
    let mut warnings = Vec::new();
    for last in worker.alerts.region_messages(region).await? {
        let adoptable = match adoptable(worker, region, &last) {
            Ok(found) => Some(found),
            Err(()) => {
                let earlier = worker.alerts.subject_messages(&last.subject).await?;
                let found = earlier
                    .iter()
                    .rev()
                    .filter(|m| m.sequence < last.sequence)
                    .find_map(|m| adoptable(worker, region, m).ok());
                tracing::warn!(subject = %last.subject, found = found.is_some(), "the alert's last message was refused: went back to the newest adoptable one");
                found
            }
        };
        match adoptable {
            Some(Adoptable::Alert(record)) => adopted += usize::from(app.alerts.book.lock().adopt(*record)),
            Some(Adoptable::Warning(warning)) => warnings.push(*warning),
            None => {}
        }
    }
    let continued = {
        let book = app.alerts.book.lock();
        let mut publication = app.alerts.publication.lock();
        warnings.into_iter().filter(|w| publication.adopt(w.clone(), book.all())).count()
    };
    if continued > 0 {
        app.save_publication();
    }
    ALERTS_ADOPTED.add(adopted as i64);
    // The rule windows: what the rules remember, up to the mark.
    let memory_ms = app.alerts.engine.lock().memory_ms();
    let horizon = now_ms().saturating_sub(memory_ms);
    let mut replayed = 0u64;
    if mark.sequence > 0 {
        let mut readings = RegionReadings::open(&worker.backbone, region, readings::Start::Time(horizon)).await?;
        let mut left = readings.pending_at_start;
        while left > 0 {
            let delivered = match tokio::time::timeout(Duration::from_secs(10), readings.next()).await {
                Ok(Some(Ok(d))) => d,
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, region, "replay: the consumer is recovering");
                    continue;
                }
                Ok(None) | Err(_) => break,
            };
            left = delivered.pending;
            if delivered.sequence > mark.sequence {
                break;
            }
            rebuild_windows(app, &delivered);
            replayed += 1;
        }
    }
    WORKER_READINGS.with_label_values(&["replayed"]).inc_by(replayed);
    // Levels from the book, as after a restart: an alert already open is continued, not raised again.
    let mut findings = Vec::new();
    {
        let mut engine = app.alerts.engine.lock();
        let book = app.alerts.book.lock();
        engine.adopt_levels(&book, app.alerts.mode, &mut findings);
    }
    if !findings.is_empty() {
        app.apply_findings(findings);
    }
    tracing::info!(
        region,
        adopted,
        continued,
        replayed,
        mark = mark.sequence,
        "region's alerts adopted and rule windows rebuilt"
    );
    // Then the readings after the mark (from the rules' horizon if the region was never worked on).
    let from =
        if mark.sequence > 0 { readings::Start::Sequence(mark.sequence + 1) } else { readings::Start::Time(horizon) };
    let mut feed = RegionReadings::open(&worker.backbone, region, from).await?;
    let (tx, region) = (tx.clone(), region.to_string());
    let reader = tokio::spawn(async move {
        loop {
            match feed.next().await {
                Some(Ok(delivered)) => {
                    if tx.send((region.clone(), delivered)).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, region, "region readings: the consumer is recovering");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                None => return,
            }
        }
    });
    Ok((mark, reader))
}

/// What a new owner continues from one message of its region's alerts.
enum Adoptable {
    /// An alert of the old owner's book.
    Alert(Box<AlertRecord>),
    /// A public warning's chain (same id, next version at the new owner).
    Warning(Box<alerting::publication::PublicWarning>),
}

/// What one message of a region's alerts lets a new owner continue, if it may: signed by a trusted key for this
/// subject and region (when keys are trusted), naming the region, about an area of the region. `Err`: refused
/// (counted by reason).
fn adoptable(worker: &Worker, region: &str, message: &alerts::StoredAlert) -> Result<Adoptable, ()> {
    let refuse = |reason: &'static str, why: &dyn std::fmt::Display| {
        ADOPT_REFUSED.with_label_values(&[reason]).inc();
        tracing::warn!(subject = %message.subject, reason, why = %why, "alerts-stream message not adopted");
        Err(())
    };
    let opened = match backbone_alerts::open(&worker.keys.trusted, &message.subject, region, &message.payload) {
        Ok(opened) => opened,
        Err(refusal) => return refuse(refusal.reason(), &refusal),
    };
    let subject_id = alerts::parse_subject(&message.subject).map(|(_, id)| id);
    let (id, area, adoptable) = match (opened.body.record, opened.body.warning) {
        (Some(record), _) => {
            (record.alert.id.clone(), record.alert.area_id.clone(), Adoptable::Alert(Box::new(record)))
        }
        (None, Some(w)) => (w.alert.id.clone(), w.alert.area_id.clone(), Adoptable::Warning(Box::new(w))),
        (None, None) => return refuse("malformed", &"neither an alert's record nor a warning"),
    };
    if subject_id != Some(id.as_str()) {
        return refuse("malformed", &format!("the message is about `{id}`"));
    }
    if zone_region(&worker.app, &area).is_some_and(|r| r != region) {
        return refuse("outside_region", &format!("area `{area}` is in another region"));
    }
    Ok(adoptable)
}

/// One reading publish into the rule windows only, findings dropped: the hot path's validation (`Ingest::process`,
/// which counts it again on this worker) and its engine step, without the alert book.
fn rebuild_windows(app: &App, delivered: &Delivered) {
    let msg = RawMessage { topic: delivered.topic.clone(), payload: delivered.payload.clone() };
    let arrived_ms = if delivered.arrived_ms > 0 { delivered.arrived_ms } else { now_ms() };
    let processed = app.ingest.process(&msg, arrived_ms);
    if processed.readings.is_empty() {
        return;
    }
    let registry = app.registry().read();
    let mut engine = app.alerts.engine.lock();
    let mut scratch = Vec::new();
    for reading in &processed.readings {
        let Some(sensor) = registry.get(&reading.sensor_id) else { continue };
        let (lat, lon) = reading.position.map(|p| (p.lat, p.lon)).unwrap_or((sensor.lat, sensor.lon));
        let zones: Vec<ZoneRef<'_>> =
            app.geo.zones_containing(lat, lon).into_iter().map(|z| ZoneRef { id: &z.id, kind: z.kind }).collect();
        engine.evaluate_arrived(reading, arrived_ms, sensor, &zones, &mut scratch);
        scratch.clear();
    }
}

/// The counties of the loaded zones: the regions a worker competes for.
pub(super) fn regions_of(app: &App) -> Vec<String> {
    let mut regions: Vec<String> =
        app.geo.zones().filter_map(|z| z.geocode.as_deref().and_then(county_of)).map(str::to_string).collect();
    regions.sort();
    regions.dedup();
    regions
}
