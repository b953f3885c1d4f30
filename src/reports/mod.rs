//! Citizen reports: what people see on the ground, collected, filtered and shared, so that people's eyes join the
//! sensors (issue 11).
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
//!   `<sha256>.<ext>`.
//!
//! ## Flow of one report
//! [`ReportBook::admit`] (rate limits, before the body is even read) → [`parse_report`] → photo saved →
//! [`ReportBook::record`] (zones, flags, cluster, journal) → the cluster's frame goes to the operators.
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
pub use photo::{Photo, PhotoError, PhotoKind, PhotoStore};
pub use report::{parse_report, parse_report_fields, Category, LimitScope, Refusal, ReportInput, REFUSAL_REASONS};

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
    /// Set while a compaction runs on the blocking pool, so that only one does.
    compacting: AtomicBool,
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
    /// A book whose clusters live in memory only.
    pub fn new(geo: &GeoIndex, photo_dir: PathBuf, policy: ReportPolicy) -> Self {
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
        Ok(Self::with(geo, dir.join("photos"), policy, clusters))
    }

    fn with(geo: &GeoIndex, photo_dir: PathBuf, policy: ReportPolicy, clusters: Clusters) -> Self {
        let limits = (
            RateLimiter::new(policy.client, policy.max_tracked_keys),
            RateLimiter::new(policy.address, policy.max_tracked_keys),
        );
        Self {
            proximity: ZoneProximity::from_zones(geo.zones()),
            photos: PhotoStore::new(photo_dir),
            hasher: Default::default(),
            limits: Mutex::new(limits),
            clusters: Mutex::new(clusters),
            compacting: AtomicBool::new(false),
            policy,
        }
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

    /// Saves a photo (blocking file I/O: call it off the async workers).
    pub fn save_photo(&self, photo: &Photo) -> std::io::Result<String> {
        self.photos.save(photo)?;
        Ok(photo.name())
    }

    /// Flags and clusters a checked report. `reporter` is the client id, or the address when there is none; only
    /// its keyed hash is kept.
    pub fn record(
        &self,
        geo: &GeoIndex,
        input: &ReportInput,
        photo: Option<String>,
        reporter: &str,
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
        let mut clusters = self.clusters.lock();
        let (cluster, new_cluster) = clusters.change(ClusterEvent::Report(report), false).map_err(|e| {
            // Adding a report cannot fail; kept as an error rather than a panic.
            Refusal::Malformed(e.to_string())
        })?;
        Ok(Recorded {
            cluster_id: cluster.id(),
            new_cluster,
            count: cluster.count,
            state: cluster.state,
            flags,
            frame: cluster.operator_view(if new_cluster { "new" } else { "updated" }),
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

    #[test]
    fn far_reports_are_flagged() {
        let book = book();
        let input =
            parse_report(br#"{"lat":22.75,"lon":121.15,"category":"fire","ts":0}"#, 0, &ReportPolicy::default())
                .unwrap();
        let geo = GeoIndex::new(geo_index::Resolution::Nine);
        let recorded = book.record(&geo, &input, None, "x", 2 * 3600 * 1000).unwrap();
        assert_eq!(recorded.flags, vec![Flag::FarFromZones, Flag::Late]);
        assert!(recorded.new_cluster);
    }
}
