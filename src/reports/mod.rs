//! Citizen reports: what people see on the ground, collected, filtered and shared, so that people's eyes join the
//! sensors.
//!
//! Logic with time passed in: validation, rate limits, flags, clustering, operator decisions and the views of
//! them. The I/O is the photo store and the clusters' journal. The edges are `web/reports.rs` (HTTP) and
//! `web/citizen.rs` (reports over the citizen websocket).
//!
//! ## Layout
//! - `report.rs` — [`ReportInput`], [`Category`], [`parse_report`]: a report body checked field by field;
//!   [`Refusal`] names the field and the reason (the label of `dc_reports_refused_total`).
//! - `limit.rs` — [`RateLimiter`]: token buckets per client id and per address.
//! - `nearby.rs` — [`ZoneProximity`]: is any zone within a radius (the `far_from_zones` flag).
//! - `cluster.rs` — [`ClusterBook`], [`Cluster`]: grouping by H3 cell, category and time window; verify, dismiss,
//!   attach to an alert; the operators' frame, the open-data feature and what an alert keeps ([`ReportRef`]);
//!   [`ClusterEvent`], the one way the book changes.
//! - `journal.rs` — [`ClusterJournal`]: the clusters in the data dir (snapshot + journal of changes).
//! - `photo.rs` — [`Photo`], [`PhotoStore`]: base64 → JPEG/PNG by magic bytes, metadata stripped, stored as
//!   `<sha256>.<ext>` under a byte quota; deleted once no cluster refers to them.
//!
//! - `mod.rs` — [`ReportBook`], [`ReportPolicy`] and the `[reports]` config section ([`ReportsConfig`]).
//!
//! ## Flow of one report
//! [`ReportBook::admit`] (rate limits, before the body is even read) → [`parse_report`] → photo saved within the
//! quota and held → [`ReportBook::record`] (zones, flags, caps on new clusters, cluster, journal; the photo's hold
//! ends) → the cluster's frame goes to the operators → photos no cluster refers to any more are deleted
//! ([`ReportBook::collect_garbage`], off the async workers).
//!
//! Operators' decisions ([`ReportBook::verify`], [`ReportBook::dismiss`], [`ReportBook::link`] to an alert they
//! raise or attach to) are journaled and synced before they are answered; a restart keeps every cluster.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use geo_index::GeoIndex;
use parking_lot::Mutex;

pub mod cluster;
pub mod journal;
pub mod limit;
pub mod nearby;
pub mod photo;
pub mod report;

pub use alerting::alert::ReportRef;
pub use cluster::{
    Cluster, ClusterBook, ClusterError, ClusterEvent, ClusterPolicy, ClusterState, Flag, NewReport, CLUSTER_RESOLUTION,
};
pub use journal::{ClusterJournal, JournalError, Restored};
pub use limit::{address_key, BucketPolicy, RateLimiter};
pub use nearby::ZoneProximity;
pub use photo::{Photo, PhotoError, PhotoKind, PhotoStore, SaveError};
pub use report::{
    parse_report, parse_report_fields, Capacity, Category, ClusterCap, LimitScope, Refusal, ReportInput,
    REFUSAL_REASONS,
};

/// Every limit of the report intake in one place.
#[derive(Debug, Clone)]
pub struct ReportPolicy {
    /// Largest request body: a photo at its limit in base64 (4/3 larger) plus the rest of the report.
    pub max_body_bytes: usize,
    /// Largest photo, decoded.
    pub max_photo_bytes: usize,
    /// Oldest `ts` accepted.
    pub max_age_ms: i64,
    /// A report seen longer than this before it was sent is flagged `late`.
    pub late_after_ms: i64,
    /// Per client id (the app's `X-Client-Id`): a person reporting what they see, not a script.
    pub client: BucketPolicy,
    /// Per address (IPv4, or IPv6 /64). More generous than per client because many phones share one carrier NAT
    /// address.
    pub address: BucketPolicy,
    /// Buckets remembered per kind before idle ones are forgotten.
    pub max_tracked_keys: usize,
    /// A report with no zone within this many metres is flagged `far_from_zones`.
    pub near_zone_m: f64,
    pub clusters: ClusterPolicy,
    /// Bytes all stored photos may take together (the data dir's disk also holds the journals).
    pub photo_quota_bytes: u64,
    /// New clusters one address (IPv4, or IPv6 /64) may open: a flood of made-up places from one source cannot push
    /// everyone else's reports out of the book.
    pub new_clusters_per_address: BucketPolicy,
    /// New clusters that may open in one zone (reports in no zone share one bucket): bounds a flood spread over many
    /// addresses to its area.
    pub new_clusters_per_zone: BucketPolicy,
}

impl Default for ReportPolicy {
    fn default() -> Self {
        Self {
            max_body_bytes: 3 * 1024 * 1024,
            max_photo_bytes: 2 * 1024 * 1024,
            max_age_ms: 24 * 3600 * 1000,
            late_after_ms: 3600 * 1000,
            client: BucketPolicy { burst: 5, refill_every_ms: 60_000 },
            address: BucketPolicy { burst: 30, refill_every_ms: 6_000 },
            max_tracked_keys: 100_000,
            near_zone_m: 5_000.0,
            clusters: ClusterPolicy::default(),
            photo_quota_bytes: ReportsConfig::default().photo_quota_bytes,
            new_clusters_per_address: per_hour(ReportsConfig::default().new_clusters_per_address_per_hour),
            new_clusters_per_zone: per_hour(ReportsConfig::default().new_clusters_per_zone_per_hour),
        }
    }
}

/// `n` at once, refilled over an hour.
fn per_hour(n: u32) -> BucketPolicy {
    BucketPolicy { burst: n.max(1), refill_every_ms: 3_600_000 / i64::from(n.max(1)) }
}

/// The `[reports]` section of the main config file: what the citizen reports may take of the data dir and of the
/// operators' attention. Every key is optional.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsConfig {
    /// Bytes all report photos may take together; past it, reports with a new photo are refused (`photo_quota`)
    /// and reports without one are still taken.
    pub photo_quota_bytes: u64,
    /// Clusters kept; past it the least recent unverified, unlinked ones are dropped with their photos.
    pub max_clusters: usize,
    /// New clusters one address may open per hour (all at once, then evenly over the hour).
    pub new_clusters_per_address_per_hour: u32,
    /// New clusters that may open per zone per hour (reports in no zone count as one zone).
    pub new_clusters_per_zone_per_hour: u32,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        Self {
            // 1 GiB: about 500 photos at the 2 MiB limit, several thousand phone photos as phones send them.
            photo_quota_bytes: 1024 * 1024 * 1024,
            max_clusters: ClusterPolicy::default().max_clusters,
            // Generous: a carrier's NAT puts many phones behind one address.
            new_clusters_per_address_per_hour: 60,
            new_clusters_per_zone_per_hour: 300,
        }
    }
}

impl ReportsConfig {
    /// The first key that is out of range, and why.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.max_clusters < 10 {
            return Err(("reports.max_clusters", "must be at least 10"));
        }
        if self.new_clusters_per_address_per_hour == 0 {
            return Err(("reports.new_clusters_per_address_per_hour", "must be at least 1"));
        }
        if self.new_clusters_per_zone_per_hour == 0 {
            return Err(("reports.new_clusters_per_zone_per_hour", "must be at least 1"));
        }
        Ok(())
    }

    pub fn policy(&self) -> ReportPolicy {
        let defaults = ReportPolicy::default();
        ReportPolicy {
            photo_quota_bytes: self.photo_quota_bytes,
            new_clusters_per_address: per_hour(self.new_clusters_per_address_per_hour),
            new_clusters_per_zone: per_hour(self.new_clusters_per_zone_per_hour),
            clusters: ClusterPolicy { max_clusters: self.max_clusters, ..defaults.clusters },
            ..defaults
        }
    }
}

/// `<data_dir>/reports`: photos (`photos/`) and the clusters' journal; a per-process temporary folder without a
/// data dir.
fn reports_dir(data_dir: Option<&Path>) -> PathBuf {
    match data_dir {
        Some(dir) => dir.join("reports"),
        None => std::env::temp_dir().join(format!("disaster-cloud-{}", std::process::id())).join("reports"),
    }
}

/// What [`ReportBook::record`] did with a report.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub cluster_id: String,
    pub new_cluster: bool,
    pub count: u32,
    pub state: ClusterState,
    /// This report's flags.
    pub flags: Vec<Flag>,
    /// The cluster's operator frame after the report (`{"type":"report",…}`).
    pub frame: serde_json::Value,
}

/// The reports side of the app: limits, clusters and the photo store, shared by every request.
pub struct ReportBook {
    policy: ReportPolicy,
    /// Zone outlines for the distance check, taken from the geo index at start.
    proximity: ZoneProximity,
    photos: PhotoStore,
    /// Keys the reporter hashes kept in clusters; random per process, so a hash says nothing outside it.
    hasher: std::collections::hash_map::RandomState,
    /// Per client, per address. One lock for both so a report takes from both or from neither.
    limits: Mutex<(RateLimiter, RateLimiter)>,
    /// The clusters and their journal under one lock, so the journal's order is the order of the changes.
    clusters: Mutex<Clusters>,
    /// New clusters per address, per zone. Taken after `clusters` (never the other way round).
    new_clusters: Mutex<(RateLimiter, RateLimiter)>,
    /// Set while a compaction runs on the blocking pool, so that only one does.
    compacting: AtomicBool,
    /// Set when photos were marked for deletion; [`ReportBook::garbage_due`] hands the deletion to one caller.
    garbage: AtomicBool,
}

struct Clusters {
    book: ClusterBook,
    /// None without a data dir (tests): the clusters live in memory only.
    journal: Option<ClusterJournal>,
}

impl Clusters {
    /// Applies a change and journals it. A journal that cannot be written does not refuse the change (a report or a
    /// decision must not be lost to a full disk while the process runs); it is logged and counted.
    fn change(&mut self, event: ClusterEvent, durable: bool) -> Result<(&Cluster, bool), ClusterError> {
        let line = self.journal.as_ref().map(|j| j.encode(&event));
        let (cluster, new) = self.book.apply(event)?;
        if let (Some(journal), Some(line)) = (&mut self.journal, line) {
            if let Err(e) = journal.write(&line, durable) {
                crate::metrics::REPORTS_JOURNAL_ERRORS.inc();
                tracing::error!(error = %e, "report journal: change kept in memory only");
            }
        }
        Ok((cluster, new))
    }
}

impl ReportBook {
    /// A book whose clusters live in memory only (photos in `photo_dir`, counted from what is there).
    pub fn new(geo: &GeoIndex, photo_dir: PathBuf, policy: ReportPolicy) -> Result<Self, JournalError> {
        let clusters = Clusters { book: ClusterBook::new(policy.clusters), journal: None };
        Self::with(geo, photo_dir, policy, clusters)
    }

    /// The book of a data dir: photos in `<data_dir>/reports/photos`, clusters restored from and journaled to
    /// `<data_dir>/reports`. Without a data dir, a temporary photo folder and clusters in memory.
    pub fn open(geo: &GeoIndex, data_dir: Option<&Path>, policy: ReportPolicy) -> Result<Self, JournalError> {
        let dir = reports_dir(data_dir);
        let clusters = match data_dir {
            Some(_) => {
                let (book, journal, restored) = ClusterJournal::open(&dir, policy.clusters)?;
                tracing::info!(
                    clusters = restored.clusters,
                    replayed = restored.replayed,
                    skipped = restored.skipped,
                    truncated = restored.truncated_bytes,
                    "report clusters restored"
                );
                Clusters { book, journal: Some(journal) }
            }
            None => Clusters { book: ClusterBook::new(policy.clusters), journal: None },
        };
        Self::with(geo, dir.join("photos"), policy, clusters)
    }

    /// The book over restored clusters. Photos no cluster refers to (their cluster was dropped before photos were
    /// collected, or the process died between saving a photo and recording its report) are deleted here.
    fn with(
        geo: &GeoIndex,
        photo_dir: PathBuf,
        policy: ReportPolicy,
        mut clusters: Clusters,
    ) -> Result<Self, JournalError> {
        let limits = (
            RateLimiter::new(policy.client, policy.max_tracked_keys),
            RateLimiter::new(policy.address, policy.max_tracked_keys),
        );
        let new_clusters = (
            RateLimiter::new(policy.new_clusters_per_address, policy.max_tracked_keys),
            RateLimiter::new(policy.new_clusters_per_zone, policy.max_tracked_keys),
        );
        let photos = PhotoStore::open(photo_dir, policy.photo_quota_bytes).map_err(JournalError::Photos)?;
        // Replaying dropped clusters released their photos; the scan below covers those and every other orphan.
        clusters.book.take_released();
        if photos.release(None, photos.names(), |name| clusters.book.references(name)) {
            let deleted = photos.delete_doomed();
            tracing::info!(deleted, "report photos no cluster refers to deleted");
        }
        Ok(Self {
            proximity: ZoneProximity::from_zones(geo.zones()),
            photos,
            hasher: Default::default(),
            limits: Mutex::new(limits),
            clusters: Mutex::new(clusters),
            new_clusters: Mutex::new(new_clusters),
            compacting: AtomicBool::new(false),
            garbage: AtomicBool::new(false),
            policy,
        })
    }

    pub fn policy(&self) -> &ReportPolicy {
        &self.policy
    }

    pub fn photos(&self) -> &PhotoStore {
        &self.photos
    }

    /// Rate limits, checked before the body is read so a flood costs us as little as possible. A report is admitted
    /// only if both its client's and its address's buckets have a token, and then takes one from each. Without a
    /// client id only the address counts; without an address (a server started without connection info) only the
    /// client id does.
    pub fn admit(&self, client: Option<&str>, address: Option<IpAddr>, now_ms: i64) -> Result<(), Refusal> {
        let address = address.map(address_key);
        let mut limits = self.limits.lock();
        let (clients, addresses) = &mut *limits;
        let refused = |scope, wait_ms: i64| Refusal::RateLimited {
            scope,
            retry_after_s: (wait_ms.max(0) as u64).div_ceil(1000).max(1),
        };
        if let Some(wait) = client.and_then(|c| clients.wait_ms(c, now_ms)) {
            return Err(refused(LimitScope::Client, wait));
        }
        if let Some(wait) = address.as_deref().and_then(|a| addresses.wait_ms(a, now_ms)) {
            return Err(refused(LimitScope::Address, wait));
        }
        if let Some(c) = client {
            clients.take(c, now_ms);
        }
        if let Some(a) = &address {
            addresses.take(a, now_ms);
        }
        Ok(())
    }

    /// Saves a photo within the quota and holds it for its report (blocking file I/O: call it off the async
    /// workers). Pass the name to [`ReportBook::record`], which ends the hold whatever it decides; if the save
    /// fails, the hold is ended here.
    pub fn save_photo(&self, photo: &Photo) -> Result<String, SaveError> {
        let name = photo.name();
        match self.photos.save(photo) {
            Ok(()) => Ok(name),
            Err(e @ SaveError::Quota { .. }) => Err(e),
            Err(e) => {
                let mut clusters = self.clusters.lock();
                self.settle(&mut clusters, Some(&name));
                Err(e)
            }
        }
    }

    /// Ends a photo's hold and marks the photos no cluster refers to any more for deletion.
    fn settle(&self, clusters: &mut Clusters, held: Option<&str>) {
        let released = clusters.book.take_released();
        if (held.is_some() || !released.is_empty())
            && self.photos.release(held, released, |name| clusters.book.references(name))
        {
            self.garbage.store(true, Ordering::Release);
        }
    }

    /// Whether photos wait to be deleted (then call [`ReportBook::collect_garbage`] off the async workers). True
    /// for one caller per batch.
    pub fn garbage_due(&self) -> bool {
        self.garbage.swap(false, Ordering::AcqRel)
    }

    /// Deletes the photos no cluster refers to any more (blocking file I/O).
    pub fn collect_garbage(&self) -> usize {
        self.photos.delete_doomed()
    }

    /// Flags and clusters a checked report. `reporter` is the client id, or the address when there is none; only
    /// its keyed hash is kept. `address` is the key of the cap on new clusters per address. `photo` is a name held
    /// by [`ReportBook::save_photo`]; its hold ends here, recorded or refused.
    ///
    /// A report that would open a new cluster is refused when the book holds only clusters it must keep
    /// (`clusters_full`), or when its address or one of its zones has opened as many new clusters as allowed
    /// (`new_clusters_address`, `new_clusters_zone`); a report joining a cluster never is.
    pub fn record(
        &self,
        geo: &GeoIndex,
        input: &ReportInput,
        photo: Option<String>,
        reporter: &str,
        address: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<Recorded, Refusal> {
        let cell = geo_index::cell_at(input.lat, input.lon, CLUSTER_RESOLUTION)
            .map_err(|e| Refusal::field_error("position", "bad_position", e.to_string()))?;
        let zones: Vec<String> = geo.zones_containing(input.lat, input.lon).into_iter().map(|z| z.id.clone()).collect();
        let mut flags = Vec::new();
        if zones.is_empty() && self.proximity.nearest_within(input.lat, input.lon, self.policy.near_zone_m).is_none() {
            flags.push(Flag::FarFromZones);
        }
        if input.observed_ms.is_some_and(|seen| now_ms - seen > self.policy.late_after_ms) {
            flags.push(Flag::Late);
        }
        let report = NewReport {
            lat: input.lat,
            lon: input.lon,
            cell,
            category: input.category,
            text: input.text.clone(),
            observed_ms: input.observed_ms,
            received_ms: now_ms,
            photo,
            reporter: self.hasher.hash_one(reporter),
            zones,
            flags: flags.clone(),
        };
        let held = report.photo.clone();
        let mut clusters = self.clusters.lock();
        let recorded =
            self.cluster_report(&mut clusters, report, address, now_ms).map(|(cluster, new_cluster)| Recorded {
                cluster_id: cluster.id(),
                new_cluster,
                count: cluster.count,
                state: cluster.state,
                flags,
                frame: cluster.operator_view(if new_cluster { "new" } else { "updated" }),
            });
        self.settle(&mut clusters, held.as_deref());
        recorded
    }

    /// The caps on new clusters, then the change. Under the clusters' lock: whether the report opens a cluster
    /// cannot change between the check and the change.
    fn cluster_report<'c>(
        &self,
        clusters: &'c mut Clusters,
        report: NewReport,
        address: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<(&'c Cluster, bool), Refusal> {
        if clusters.book.would_open(&report) {
            if !clusters.book.has_room() {
                return Err(Refusal::Full(Capacity::Clusters));
            }
            let address = address.map(address_key);
            // Reports in no zone share one bucket ("" is no zone id).
            let zones: Vec<&str> =
                if report.zones.is_empty() { vec![""] } else { report.zones.iter().map(String::as_str).collect() };
            let mut caps = self.new_clusters.lock();
            let (per_address, per_zone) = &mut *caps;
            let refused = |scope, wait_ms: i64| Refusal::NewClusters {
                scope,
                retry_after_s: (wait_ms.max(0) as u64).div_ceil(1000).max(1),
            };
            if let Some(wait) = address.as_deref().and_then(|a| per_address.wait_ms(a, now_ms)) {
                return Err(refused(ClusterCap::Address, wait));
            }
            if let Some(wait) = zones.iter().find_map(|z| per_zone.wait_ms(z, now_ms)) {
                return Err(refused(ClusterCap::Zone, wait));
            }
            if let Some(a) = &address {
                per_address.take(a, now_ms);
            }
            for zone in zones {
                per_zone.take(zone, now_ms);
            }
        }
        clusters.change(ClusterEvent::Report(report), false).map_err(|e| {
            // Adding a report cannot fail; kept as an error rather than a panic.
            Refusal::Malformed(e.to_string())
        })
    }

    /// Marks a cluster as true (journaled and synced); returns its operators' frame.
    pub fn verify(
        &self,
        id: &str,
        at_ms: i64,
        summary: Option<String>,
        publish_photos: Option<bool>,
        by: &str,
    ) -> Result<serde_json::Value, ClusterError> {
        let by = Some(by.to_string());
        let event = ClusterEvent::Verify { id: id.to_string(), at_ms, summary, publish_photos, by };
        Ok(self.clusters.lock().change(event, true)?.0.operator_view("verified"))
    }

    /// Marks a cluster as not true (journaled and synced); returns its operators' frame.
    pub fn dismiss(&self, id: &str, at_ms: i64, by: &str) -> Result<serde_json::Value, ClusterError> {
        let event = ClusterEvent::Dismiss { id: id.to_string(), at_ms, by: Some(by.to_string()) };
        Ok(self.clusters.lock().change(event, true)?.0.operator_view("dismissed"))
    }

    /// Links a verified cluster to the alert `choose` names — one it raises from the cluster or attaches the cluster
    /// to. `choose` runs under the clusters' lock, so no other decision on the cluster slips between its checks and
    /// the link; it may take the alert book's lock (never the other way round). Returns the cluster's operators'
    /// frame with `event` (`raised`, `attached`).
    pub fn link<E: From<ClusterError>>(
        &self,
        id: &str,
        event: &str,
        choose: impl FnOnce(&Cluster) -> Result<String, E>,
    ) -> Result<serde_json::Value, E> {
        let mut clusters = self.clusters.lock();
        let cluster = clusters.book.get(id).ok_or_else(|| ClusterError::NotFound(id.chars().take(40).collect()))?;
        if cluster.state != ClusterState::Verified {
            return Err(ClusterError::Conflict {
                id: cluster.id(),
                state: cluster.state,
                why: "verify the cluster before linking it to an alert",
            }
            .into());
        }
        let alert_id = choose(cluster)?;
        let change = ClusterEvent::Attach { id: id.to_string(), alert_id };
        Ok(clusters.change(change, true)?.0.operator_view(event))
    }

    /// Runs `f` on the clusters under their lock (keep it short: reports wait for it).
    pub fn with_clusters<R>(&self, f: impl FnOnce(&ClusterBook) -> R) -> R {
        f(&self.clusters.lock().book)
    }

    /// Whether the journal has grown enough to be compacted (then call [`ReportBook::compact`] off the async
    /// workers). True for one caller at a time.
    pub fn compaction_due(&self) -> bool {
        let due = self.clusters.lock().journal.as_ref().is_some_and(ClusterJournal::compaction_due);
        due && !self.compacting.swap(true, Ordering::AcqRel)
    }

    /// Writes a snapshot of the clusters and empties the journal (blocking file I/O, under the clusters' lock).
    pub fn compact(&self) {
        {
            let mut clusters = self.clusters.lock();
            let Clusters { book, journal } = &mut *clusters;
            if let Some(journal) = journal {
                if let Err(e) = journal.compact(book) {
                    crate::metrics::REPORTS_JOURNAL_ERRORS.inc();
                    tracing::error!(error = %e, "report journal: compaction failed");
                }
            }
        }
        self.compacting.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> ReportBook {
        ReportBook::new(
            &GeoIndex::new(geo_index::Resolution::Nine),
            PathBuf::from("/nonexistent"),
            ReportPolicy::default(),
        )
        .unwrap()
    }

    #[test]
    fn both_buckets_or_neither() {
        let book = book();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..5 {
            book.admit(Some("phone-a"), Some(ip), 0).unwrap();
        }
        assert_eq!(book.admit(Some("phone-a"), Some(ip), 0).unwrap_err().reason(), "rate_limited_client");
        for i in 0..25 {
            book.admit(Some(&format!("phone-{i}")), Some(ip), 0).unwrap();
        }
        let e = book.admit(Some("phone-z"), Some(ip), 0).unwrap_err();
        assert_eq!(e.reason(), "rate_limited_address");
        assert!(matches!(e, Refusal::RateLimited { retry_after_s: 6, .. }), "{e:?}");
        // Refused by the address, phone-z kept its token.
        assert!(book.admit(Some("phone-z"), Some("10.0.0.2".parse().unwrap()), 0).is_ok());
    }

    #[test]
    fn ipv6_neighbours_share_a_bucket() {
        let book = book();
        let burst = book.policy().address.burst;
        let one: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        for i in 0..burst {
            book.admit(Some(&format!("phone-{i}")), Some(one), 0).unwrap();
        }
        let neighbour: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(book.admit(Some("phone-x"), Some(neighbour), 0).unwrap_err().reason(), "rate_limited_address");
        assert!(book.admit(Some("phone-y"), Some("2001:db8:1:3::5".parse().unwrap()), 0).is_ok());
    }

    fn input(lat: f64, photo: Option<Photo>) -> ReportInput {
        ReportInput { lat, lon: 121.0, category: Category::Other, text: String::new(), observed_ms: None, photo }
    }

    /// Issue 22 item 3: nothing bounded how many clusters one address or one area could open.
    #[test]
    fn new_clusters_are_capped_per_address_and_per_zone() {
        let policy = ReportPolicy {
            new_clusters_per_address: BucketPolicy { burst: 3, refill_every_ms: 60_000 },
            new_clusters_per_zone: BucketPolicy { burst: 5, refill_every_ms: 60_000 },
            ..ReportPolicy::default()
        };
        let geo = GeoIndex::new(geo_index::Resolution::Nine);
        let book = ReportBook::new(&geo, PathBuf::from("/nonexistent"), policy).unwrap();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for i in 0..3 {
            book.record(&geo, &input(22.0 + f64::from(i) * 0.03, None), None, "a", Some(a), 0).unwrap();
        }
        let e = book.record(&geo, &input(23.0, None), None, "a", Some(a), 0).unwrap_err();
        assert_eq!(e.reason(), "new_clusters_address");
        assert!(matches!(e, Refusal::NewClusters { retry_after_s: 60, .. }), "{e:?}");
        // Joining a cluster is never capped.
        assert!(!book.record(&geo, &input(22.0, None), None, "a", Some(a), 0).unwrap().new_cluster);
        // Another address may open places, until the area (here: no zone) has had its five.
        book.record(&geo, &input(23.0, None), None, "b", Some(b), 0).unwrap();
        book.record(&geo, &input(23.03, None), None, "b", Some(b), 0).unwrap();
        let e = book.record(&geo, &input(23.06, None), None, "b", Some(b), 0).unwrap_err();
        assert_eq!(e.reason(), "new_clusters_zone");
        // Refused reports took nothing: after a refill, the address opens its next place.
        assert!(book.record(&geo, &input(23.06, None), None, "a", Some(a), 60_000).is_ok());
    }

    fn photo(seed: u8) -> Photo {
        let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x03, 0x01];
        jpeg.extend(std::iter::repeat_n(seed, 1000));
        jpeg.extend_from_slice(&[0xFF, 0xD9]);
        Photo::from_bytes(&jpeg).unwrap()
    }

    /// Issue 22 item 2: photos had no bound and were never deleted.
    #[test]
    fn photos_stay_within_the_quota_and_go_with_their_clusters() {
        let dir = tempfile::tempdir().unwrap();
        let size = photo(1).bytes.len() as u64;
        let policy = ReportPolicy {
            photo_quota_bytes: 2 * size + size / 2,
            clusters: ClusterPolicy { max_clusters: 10, ..ClusterPolicy::default() },
            ..ReportPolicy::default()
        };
        let geo = GeoIndex::new(geo_index::Resolution::Nine);
        let book = ReportBook::open(&geo, Some(dir.path()), policy.clone()).unwrap();
        let photos = dir.path().join("reports").join("photos");
        let send = |lat: f64, photo: Option<Photo>, at: i64| -> Result<Recorded, Refusal> {
            let name = match &photo {
                Some(p) => Some(book.save_photo(p).map_err(|_| Refusal::Full(Capacity::Photos))?),
                None => None,
            };
            let recorded = book.record(&geo, &input(lat, photo), name, "x", None, at);
            if book.garbage_due() {
                book.collect_garbage();
            }
            recorded
        };
        send(22.0, Some(photo(1)), 0).unwrap();
        send(22.03, Some(photo(2)), 1).unwrap();
        assert_eq!(send(22.06, Some(photo(3)), 2).unwrap_err().reason(), "photo_quota");
        assert!(!photos.join(photo(3).name()).exists());
        // Without its photo the report is taken; the same photo again costs nothing.
        send(22.06, None, 3).unwrap();
        send(22.09, Some(photo(2)), 4).unwrap();
        assert_eq!(book.photos().used_bytes(), 2 * size);
        // New places push the first clusters out, and their photos with them once no cluster refers to them.
        for i in 0..6 {
            send(23.0 + f64::from(i) * 0.03, None, 10 + i64::from(i)).unwrap();
        }
        assert!(photos.join(photo(1).name()).exists() && photos.join(photo(2).name()).exists());
        send(24.0, None, 20).unwrap();
        assert!(!photos.join(photo(1).name()).exists(), "the first cluster's photo went with it");
        send(24.03, None, 21).unwrap();
        assert!(photos.join(photo(2).name()).exists(), "another cluster still has it");
        send(24.06, None, 22).unwrap();
        send(24.09, None, 23).unwrap();
        assert!(!photos.join(photo(2).name()).exists());
        assert_eq!(book.photos().used_bytes(), 0);
        send(24.12, Some(photo(3)), 24).unwrap();

        // A photo left behind by a crash (saved, its report never recorded) is deleted at the next start; the
        // photos clusters refer to stay.
        book.save_photo(&photo(4)).unwrap();
        drop(book);
        let book = ReportBook::open(&geo, Some(dir.path()), policy).unwrap();
        assert!(!photos.join(photo(4).name()).exists());
        assert!(photos.join(photo(3).name()).exists());
        assert_eq!(book.photos().used_bytes(), size);
    }

    #[test]
    fn far_reports_are_flagged() {
        let book = book();
        let input =
            parse_report(br#"{"lat":22.75,"lon":121.15,"category":"fire","ts":0}"#, 0, &ReportPolicy::default())
                .unwrap();
        let geo = GeoIndex::new(geo_index::Resolution::Nine);
        let recorded = book.record(&geo, &input, None, "x", None, 2 * 3600 * 1000).unwrap();
        assert_eq!(recorded.flags, vec![Flag::FarFromZones, Flag::Late]);
        assert!(recorded.new_cluster);
    }
}
