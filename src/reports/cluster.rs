//! Clusters: reports of one thing seen by many people, grouped so an operator judges the thing once.
//!
//! A report joins a cluster of the same category whose anchor cell (H3 resolution 8, cells of about 0.7 km²) is
//! the report's own cell or one of its six neighbours — so two people either side of a cell edge still meet — and
//! whose last report is at most `window_ms` old (receive time, which no client can forge). Otherwise it opens a new
//! cluster anchored at its own cell. Categories never mix: a fire and a flood on the same street are two things.
//!
//! A dismissed cluster takes no more reports: the dismissal judged what was seen so far, and a real event after a
//! false report must not be hidden under it. Verified clusters keep counting.
//!
//! Reporters are kept only as keyed hashes, to count distinct people (three reports from one phone weigh less than
//! three from three phones); no client id or address is ever stored here.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use alerting::message::{format_time, TAIWAN_OFFSET};
use geo_index::{CellIndex, LatLng, Resolution};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::report::Category;

/// Cells of about 0.74 km² (edge ≈ 530 m): one street block to one village centre.
pub const CLUSTER_RESOLUTION: Resolution = Resolution::Eight;

/// Why a report deserves a second look; set per report, and on a cluster when any of its reports has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// No zone within the configured radius: nothing we watch is there, so it may be a mistake or a prank.
    FarFromZones,
    /// Seen long before it was sent (a phone that was offline): the situation may have changed.
    Late,
}

impl Flag {
    pub const ALL: [Flag; 2] = [Flag::FarFromZones, Flag::Late];

    pub fn name(self) -> &'static str {
        match self {
            Flag::FarFromZones => "far_from_zones",
            Flag::Late => "late",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    Open,
    Verified,
    Dismissed,
}

impl ClusterState {
    pub fn parse(text: &str) -> Option<ClusterState> {
        match text {
            "open" => Some(ClusterState::Open),
            "verified" => Some(ClusterState::Verified),
            "dismissed" => Some(ClusterState::Dismissed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterPolicy {
    /// A report joins a cluster whose last report is at most this old.
    pub window_ms: i64,
    /// Clusters kept; past it the least recently reported go, dismissed ones first. Verified clusters and clusters
    /// linked to an alert are never dropped (an operator judged them; an alert cites them): when only those are
    /// left, reports that would open a new cluster are refused instead (`clusters_full`).
    pub max_clusters: usize,
    /// Reports kept per cluster for operators to read (the count goes on past it).
    pub recent_per_cluster: usize,
    /// Photos kept per cluster.
    pub photos_per_cluster: usize,
}

impl Default for ClusterPolicy {
    fn default() -> Self {
        Self { window_ms: 30 * 60 * 1000, max_clusters: 20_000, recent_per_cluster: 20, photos_per_cluster: 10 }
    }
}

/// A checked, flagged report, ready to be clustered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewReport {
    pub lat: f64,
    pub lon: f64,
    /// The report's cell at [`CLUSTER_RESOLUTION`].
    #[serde(with = "cell_text")]
    pub cell: CellIndex,
    pub category: Category,
    pub text: String,
    pub observed_ms: Option<i64>,
    pub received_ms: i64,
    /// Stored photo name (`<sha256>.<ext>`).
    pub photo: Option<String>,
    /// Keyed hash of the client id or address.
    pub reporter: u64,
    pub zones: Vec<String>,
    pub flags: Vec<Flag>,
}

/// One report as operators read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    received_ms: i64,
    observed_ms: Option<i64>,
    text: String,
    photo: Option<String>,
    lat: f64,
    lon: f64,
    flags: Vec<Flag>,
}

/// An operator's judgement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    pub at_ms: i64,
    /// Operator-written public wording (open data shows this, never the citizens' texts).
    pub summary: Option<String>,
    /// The operator token's name that took the decision (operators see it; open data does not). Absent in books
    /// written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// Most distinct reporters and duplicate fingerprints remembered per cluster: bounds memory under a flood.
const MAX_REMEMBERED: usize = 4096;
const MAX_ZONES: usize = 16;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cluster {
    pub seq: u64,
    pub category: Category,
    /// The cell of the first report; the cluster's public position is this cell's centre.
    #[serde(with = "cell_text")]
    pub anchor: CellIndex,
    pub state: ClusterState,
    /// Every report that joined, duplicates included.
    pub count: u32,
    /// Reports that repeated an earlier one from the same reporter word for word.
    pub duplicates: u32,
    reporters: HashSet<u64>,
    fingerprints: HashSet<(u64, String)>,
    lat_sum: f64,
    lon_sum: f64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub observed_from_ms: Option<i64>,
    pub flags: BTreeSet<Flag>,
    pub zones: BTreeSet<String>,
    recent: VecDeque<Entry>,
    pub photos: Vec<String>,
    /// Whether open data may show the photos (an operator's choice when verifying).
    pub publish_photos: bool,
    pub alert_id: Option<String>,
    pub decision: Option<Decision>,
}

impl Cluster {
    pub fn id(&self) -> String {
        format!("rc-{}", self.seq)
    }

    pub fn reporters(&self) -> usize {
        self.reporters.len()
    }

    /// Mean position of the reports (operators only: one report's exact spot may be someone's home).
    pub fn centroid(&self) -> (f64, f64) {
        let n = f64::from(self.count.max(1));
        (self.lat_sum / n, self.lon_sum / n)
    }

    /// The public position: the anchor cell's centre, a few hundred metres coarse on purpose.
    pub fn public_point(&self) -> (f64, f64) {
        let centre = LatLng::from(self.anchor);
        (centre.lat(), centre.lng())
    }

    /// Every photo the cluster refers to: those it keeps, and those of the recent reports operators read.
    pub fn photo_names(&self) -> BTreeSet<&str> {
        self.photos.iter().map(String::as_str).chain(self.recent.iter().filter_map(|e| e.photo.as_deref())).collect()
    }

    /// Never evicted: an operator judged it true, or an alert cites it.
    pub fn is_protected(&self) -> bool {
        self.state == ClusterState::Verified || self.alert_id.is_some()
    }

    /// The recent reports' texts, newest last.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.recent.iter().map(|e| e.text.as_str())
    }

    fn join(&mut self, r: NewReport, policy: &ClusterPolicy) {
        self.count = self.count.saturating_add(1);
        if self.reporters.len() < MAX_REMEMBERED {
            self.reporters.insert(r.reporter);
        }
        self.lat_sum += r.lat;
        self.lon_sum += r.lon;
        self.first_ms = self.first_ms.min(r.received_ms);
        self.last_ms = self.last_ms.max(r.received_ms);
        if let Some(seen) = r.observed_ms {
            self.observed_from_ms = Some(self.observed_from_ms.map_or(seen, |o| o.min(seen)));
        }
        self.flags.extend(r.flags.iter().copied());
        for zone in r.zones {
            if self.zones.len() < MAX_ZONES {
                self.zones.insert(zone);
            }
        }
        let fingerprint = (r.reporter, r.text.clone());
        if self.fingerprints.contains(&fingerprint) && r.photo.is_none() {
            // Same person, same words: counted, but not shown twice.
            self.duplicates = self.duplicates.saturating_add(1);
            return;
        }
        if self.fingerprints.len() < MAX_REMEMBERED {
            self.fingerprints.insert(fingerprint);
        }
        if let Some(photo) = &r.photo {
            if self.photos.len() < policy.photos_per_cluster && !self.photos.contains(photo) {
                self.photos.push(photo.clone());
            }
        }
        self.recent.push_back(Entry {
            received_ms: r.received_ms,
            observed_ms: r.observed_ms,
            text: r.text,
            photo: r.photo,
            lat: r.lat,
            lon: r.lon,
            flags: r.flags,
        });
        while self.recent.len() > policy.recent_per_cluster {
            self.recent.pop_front();
        }
    }

    /// The operators' frame (`{"type":"report",…}` on the operator websocket, and the API's list entries).
    /// `event` says what just happened: `new`, `updated`, `verified`, `dismissed`, `attached`, or `snapshot`.
    pub fn operator_view(&self, event: &str) -> Value {
        let (lat, lon) = self.centroid();
        let reports: Vec<Value> = self
            .recent
            .iter()
            .map(|e| {
                json!({"received": time(e.received_ms), "observed": e.observed_ms.map(time), "text": e.text,
                       "photo": e.photo, "lat": round(e.lat), "lon": round(e.lon), "flags": e.flags})
            })
            .collect();
        json!({
            "type": "report", "event": event, "id": self.id(), "category": self.category, "state": self.state,
            "count": self.count, "reporters": self.reporters(), "duplicates": self.duplicates,
            "lat": round(lat), "lon": round(lon), "cell": self.anchor.to_string(),
            "first_seen": time(self.first_ms), "last_seen": time(self.last_ms),
            "observed_from": self.observed_from_ms.map(time),
            "flags": self.flags, "zones": self.zones, "reports": reports, "photos": self.photos,
            "publish_photos": self.publish_photos, "alert_id": self.alert_id,
            "summary": self.decision.as_ref().and_then(|d| d.summary.as_deref()),
            "decided_at": self.decision.as_ref().map(|d| time(d.at_ms)),
            "decided_by": self.decision.as_ref().and_then(|d| d.by.as_deref()),
        })
    }

    /// The open-data feature: no texts, no reporters' positions, no identifiers of people; photos only when
    /// published. `photo_url` and `cap_url` turn a photo name and an alert id into public URLs.
    pub fn open_data_feature(&self, photo_url: impl Fn(&str) -> String, cap_url: impl Fn(&str) -> String) -> Value {
        let (lat, lon) = self.public_point();
        let photos: Vec<String> =
            if self.publish_photos { self.photos.iter().map(|p| photo_url(p)).collect() } else { Vec::new() };
        json!({
            "type": "Feature", "id": self.id(),
            "geometry": {"type": "Point", "coordinates": [round(lon), round(lat)]},
            "properties": {
                "id": self.id(), "category": self.category, "count": self.count, "reporters": self.reporters(),
                "cell": self.anchor.to_string(), "first_seen": time(self.first_ms), "last_seen": time(self.last_ms),
                "verified_at": self.decision.as_ref().map(|d| time(d.at_ms)),
                "summary": self.decision.as_ref().and_then(|d| d.summary.as_deref()),
                "zones": self.zones, "alert_id": self.alert_id, "cap": self.alert_id.as_deref().map(cap_url),
                "photos": photos,
            }
        })
    }
}

impl Cluster {
    /// What an alert keeps of a verified cluster (it goes into CAP): public data only, like the open-data feature.
    /// `photo_url` turns a photo name into its public URL; photos only when the operator published them.
    pub fn report_ref(&self, photo_url: impl Fn(&str) -> String) -> alerting::alert::ReportRef {
        let (lat, lon) = self.public_point();
        alerting::alert::ReportRef {
            cluster: self.id(),
            category: self.category.name().to_string(),
            reports: self.count,
            reporters: u32::try_from(self.reporters()).unwrap_or(u32::MAX),
            cell: self.anchor.to_string(),
            lat: round(lat),
            lon: round(lon),
            first_seen_ms: self.first_ms,
            last_seen_ms: self.last_ms,
            verified_ms: self.decision.as_ref().map_or(self.last_ms, |d| d.at_ms),
            summary: self.decision.as_ref().and_then(|d| d.summary.clone()),
            photos: if self.publish_photos { self.photos.iter().map(|p| photo_url(p)).collect() } else { Vec::new() },
        }
    }
}

fn time(ms: i64) -> String {
    format_time(ms, TAIWAN_OFFSET)
}

/// Cells as their H3 text form in the data dir (`88283082a3fffff`): readable, and checked when read back.
mod cell_text {
    use geo_index::CellIndex;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(cell: &CellIndex, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(cell)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CellIndex, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|_| serde::de::Error::custom(format!("`{text}` is not an H3 cell")))
    }
}

/// One change to the book: what the data dir's journal records, and what [`ClusterBook::apply`] replays. Every
/// change goes through `apply`, live or replayed, so a restart rebuilds exactly the book that was.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClusterEvent {
    Report(NewReport),
    /// `by`: the operator token's name (absent in journals written before it was recorded).
    Verify {
        id: String,
        at_ms: i64,
        summary: Option<String>,
        publish_photos: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    Dismiss {
        id: String,
        at_ms: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    Attach {
        id: String,
        alert_id: String,
    },
}

/// Everything a [`ClusterBook`] holds, for its snapshot in the data dir: `C` is `&Cluster` when writing, `Cluster`
/// when reading.
#[derive(Debug, Serialize, Deserialize)]
pub struct BookState<C> {
    pub next_seq: u64,
    pub clusters: Vec<C>,
    /// (anchor cell, category, cluster seq): the clusters new reports may join.
    pub joinable: Vec<(String, Category, u64)>,
}

/// Five decimals: about a metre, more than any phone's fix is worth.
fn round(v: f64) -> f64 {
    (v * 100_000.0).round() / 100_000.0
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClusterError {
    #[error("no report cluster `{0}`")]
    NotFound(String),
    #[error("cluster `{id}` is {state:?}: {why}")]
    Conflict { id: String, state: ClusterState, why: &'static str },
}

/// Every cluster, and the index that finds the one a new report joins.
#[derive(Debug, Default)]
pub struct ClusterBook {
    policy: ClusterPolicy,
    clusters: BTreeMap<u64, Cluster>,
    /// (anchor cell, category) → the newest cluster anchored there that may still take reports.
    by_cell: HashMap<(CellIndex, Category), u64>,
    next_seq: u64,
    /// Photo name → how many clusters refer to it ([`Cluster::photo_names`]). Derived from the clusters (rebuilt,
    /// never stored), so live and replayed books agree.
    photo_refs: HashMap<String, u32>,
    /// Photos no cluster refers to any more since [`ClusterBook::take_released`] was last called: the report book
    /// deletes their files (unless a report being recorded holds them).
    released: Vec<String>,
}

impl ClusterBook {
    pub fn new(policy: ClusterPolicy) -> Self {
        Self {
            policy,
            clusters: BTreeMap::new(),
            by_cell: HashMap::new(),
            next_seq: 1,
            photo_refs: HashMap::new(),
            released: Vec::new(),
        }
    }

    /// Whether `r` would open a new cluster rather than join one.
    pub fn would_open(&self, r: &NewReport) -> bool {
        self.joinable(r).is_none()
    }

    /// Whether a new cluster can be opened: the book has room, or holds a cluster it may drop for it.
    pub fn has_room(&self) -> bool {
        self.clusters.len() < self.policy.max_clusters || self.clusters.values().any(|c| !c.is_protected())
    }

    /// Whether any cluster refers to the photo `name`.
    pub fn references(&self, name: &str) -> bool {
        self.photo_refs.contains_key(name)
    }

    /// The photos no cluster refers to any more (see [`ClusterBook::released`]).
    pub fn take_released(&mut self) -> Vec<String> {
        std::mem::take(&mut self.released)
    }

    fn count_photos(&mut self, names: &BTreeSet<&str>, delta: i32) {
        for name in names {
            if delta > 0 {
                *self.photo_refs.entry((*name).to_string()).or_default() += 1;
            } else if let Some(n) = self.photo_refs.get_mut(*name) {
                *n -= 1;
                if *n == 0 {
                    self.photo_refs.remove(*name);
                    self.released.push((*name).to_string());
                }
            }
        }
    }

    /// Adds a report; returns its cluster and whether the cluster is new.
    fn add(&mut self, r: NewReport) -> (&Cluster, bool) {
        let target = self.joinable(&r);
        let (seq, new) = match target {
            Some(seq) => (seq, false),
            None => {
                self.prune();
                let seq = self.next_seq;
                self.next_seq += 1;
                let cluster = Cluster {
                    seq,
                    category: r.category,
                    anchor: r.cell,
                    state: ClusterState::Open,
                    count: 0,
                    duplicates: 0,
                    reporters: HashSet::new(),
                    fingerprints: HashSet::new(),
                    lat_sum: 0.0,
                    lon_sum: 0.0,
                    first_ms: r.received_ms,
                    last_ms: r.received_ms,
                    observed_from_ms: None,
                    flags: BTreeSet::new(),
                    zones: BTreeSet::new(),
                    recent: VecDeque::new(),
                    photos: Vec::new(),
                    publish_photos: false,
                    alert_id: None,
                    decision: None,
                };
                self.clusters.insert(seq, cluster);
                self.by_cell.insert((r.cell, r.category), seq);
                (seq, true)
            }
        };
        let policy = self.policy;
        let cluster = self.clusters.get_mut(&seq).expect("the cluster was just found or inserted");
        let before: BTreeSet<String> = cluster.photo_names().into_iter().map(str::to_string).collect();
        cluster.join(r, &policy);
        let after: BTreeSet<String> = cluster.photo_names().into_iter().map(str::to_string).collect();
        if before != after {
            let gone: BTreeSet<&str> = before.difference(&after).map(String::as_str).collect();
            let came: BTreeSet<&str> = after.difference(&before).map(String::as_str).collect();
            self.count_photos(&came, 1);
            self.count_photos(&gone, -1);
        }
        let cluster = self.clusters.get(&seq).expect("the cluster was just found or inserted");
        (cluster, new)
    }

    /// The cluster `r` belongs to: its own cell's first, else the neighbour's with the latest report.
    fn joinable(&self, r: &NewReport) -> Option<u64> {
        let mut best: Option<(bool, i64, u64)> = None;
        for cell in r.cell.grid_disk::<Vec<_>>(1) {
            let Some(&seq) = self.by_cell.get(&(cell, r.category)) else { continue };
            let Some(cluster) = self.clusters.get(&seq) else { continue };
            if cluster.state == ClusterState::Dismissed || r.received_ms - cluster.last_ms > self.policy.window_ms {
                continue;
            }
            let rank = (cell == r.cell, cluster.last_ms, seq);
            if best.is_none_or(|b| rank > b) {
                best = Some(rank);
            }
        }
        best.map(|(_, _, seq)| seq)
    }

    /// Keeps the book under `max_clusters`: drops the least recently reported clusters, dismissed ones first, and
    /// never a verified or alert-linked one (a flood of made-up places must not push out what operators judged or
    /// what an alert cites). Their photos are released with them. If only protected clusters are left the book
    /// grows past the limit: the live path refuses new clusters before that ([`ClusterBook::has_room`]), so only a
    /// replay under a lowered limit gets here.
    fn prune(&mut self) {
        if self.clusters.len() < self.policy.max_clusters {
            return;
        }
        let mut order: Vec<(bool, i64, u64)> = self
            .clusters
            .values()
            .filter(|c| !c.is_protected())
            .map(|c| (c.state != ClusterState::Dismissed, c.last_ms, c.seq))
            .collect();
        order.sort_unstable();
        let excess = self.clusters.len() + 1 - self.policy.max_clusters;
        // Drop a tenth at a time so that a flood of new places does not sort the whole book on every report.
        let drop = excess.max(self.policy.max_clusters / 10).min(order.len());
        for (_, _, seq) in &order[..drop] {
            if let Some(cluster) = self.clusters.remove(seq) {
                let names: BTreeSet<String> = cluster.photo_names().into_iter().map(str::to_string).collect();
                self.count_photos(&names.iter().map(String::as_str).collect(), -1);
            }
        }
        let clusters = &self.clusters;
        self.by_cell.retain(|_, seq| clusters.contains_key(seq));
    }

    pub fn get(&self, id: &str) -> Option<&Cluster> {
        self.clusters.get(&parse_id(id)?)
    }

    /// Applies one change; returns the cluster it touched and whether that cluster is new.
    pub fn apply(&mut self, event: ClusterEvent) -> Result<(&Cluster, bool), ClusterError> {
        match event {
            ClusterEvent::Report(r) => Ok(self.add(r)),
            ClusterEvent::Verify { id, at_ms, summary, publish_photos, by } => {
                Ok((self.verify(&id, at_ms, summary, publish_photos, by)?, false))
            }
            ClusterEvent::Dismiss { id, at_ms, by } => Ok((self.dismiss(&id, at_ms, by)?, false)),
            ClusterEvent::Attach { id, alert_id } => Ok((self.attach(&id, &alert_id)?, false)),
        }
    }

    /// The whole book, borrowed, for a snapshot.
    pub fn state(&self) -> BookState<&Cluster> {
        let mut joinable: Vec<(String, Category, u64)> =
            self.by_cell.iter().map(|((cell, category), seq)| (cell.to_string(), *category, *seq)).collect();
        joinable.sort_by_key(|j| j.2);
        BookState { next_seq: self.next_seq, clusters: self.clusters.values().collect(), joinable }
    }

    /// A book from a snapshot. A joinable entry naming an unknown cell or cluster is dropped (the cluster then only
    /// takes no new reports).
    pub fn from_state(policy: ClusterPolicy, state: BookState<Cluster>) -> Self {
        let clusters: BTreeMap<u64, Cluster> = state.clusters.into_iter().map(|c| (c.seq, c)).collect();
        let by_cell = state
            .joinable
            .into_iter()
            .filter(|(_, _, seq)| clusters.contains_key(seq))
            .filter_map(|(cell, category, seq)| Some(((cell.parse().ok()?, category), seq)))
            .collect();
        let next_seq = state.next_seq.max(clusters.keys().next_back().map_or(1, |s| s + 1));
        let mut book = Self { policy, clusters, by_cell, next_seq, photo_refs: HashMap::new(), released: Vec::new() };
        let names: Vec<BTreeSet<String>> =
            book.clusters.values().map(|c| c.photo_names().into_iter().map(str::to_string).collect()).collect();
        for names in &names {
            book.count_photos(&names.iter().map(String::as_str).collect(), 1);
        }
        book
    }

    fn get_mut(&mut self, id: &str) -> Result<&mut Cluster, ClusterError> {
        let seq = parse_id(id).ok_or_else(|| ClusterError::NotFound(id.chars().take(40).collect()))?;
        self.clusters.get_mut(&seq).ok_or_else(|| ClusterError::NotFound(id.chars().take(40).collect()))
    }

    /// Every cluster, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Cluster> {
        self.clusters.values()
    }

    /// Every cluster, newest report first.
    pub fn iter_recent(&self) -> Vec<&Cluster> {
        let mut all: Vec<&Cluster> = self.clusters.values().collect();
        all.sort_by_key(|c| std::cmp::Reverse((c.last_ms, c.seq)));
        all
    }

    pub fn len(&self) -> usize {
        self.clusters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    /// Marks a cluster as true. Verifying again updates the summary and the photo choice; a dismissed cluster can
    /// be verified after all (operators correct themselves).
    fn verify(
        &mut self,
        id: &str,
        at_ms: i64,
        summary: Option<String>,
        publish_photos: Option<bool>,
        by: Option<String>,
    ) -> Result<&Cluster, ClusterError> {
        let cluster = self.get_mut(id)?;
        let summary = summary.or_else(|| cluster.decision.as_ref().and_then(|d| d.summary.clone()));
        cluster.state = ClusterState::Verified;
        cluster.decision = Some(Decision { at_ms, summary, by });
        if let Some(publish) = publish_photos {
            cluster.publish_photos = publish;
        }
        Ok(cluster)
    }

    /// Marks a cluster as not true (or not useful). It takes no more reports and leaves open data.
    fn dismiss(&mut self, id: &str, at_ms: i64, by: Option<String>) -> Result<&Cluster, ClusterError> {
        let cluster = self.get_mut(id)?;
        cluster.state = ClusterState::Dismissed;
        cluster.decision = Some(Decision { at_ms, summary: None, by });
        cluster.publish_photos = false;
        let seq = cluster.seq;
        self.by_cell.retain(|_, s| *s != seq);
        self.clusters.get(&seq).ok_or_else(|| ClusterError::NotFound(id.into()))
    }

    /// Links a verified cluster to an alert (the caller checks the alert exists).
    fn attach(&mut self, id: &str, alert_id: &str) -> Result<&Cluster, ClusterError> {
        let cluster = self.get_mut(id)?;
        if cluster.state != ClusterState::Verified {
            return Err(ClusterError::Conflict {
                id: cluster.id(),
                state: cluster.state,
                why: "verify the cluster before attaching it to an alert",
            });
        }
        cluster.alert_id = Some(alert_id.to_string());
        Ok(cluster)
    }
}

fn parse_id(id: &str) -> Option<u64> {
    id.strip_prefix("rc-")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(lat: f64, lon: f64, category: Category, reporter: u64, at: i64) -> NewReport {
        NewReport {
            lat,
            lon,
            cell: geo_index::cell_at(lat, lon, CLUSTER_RESOLUTION).unwrap(),
            category,
            text: format!("seen by {reporter}"),
            observed_ms: None,
            received_ms: at,
            photo: None,
            reporter,
            zones: vec![],
            flags: vec![],
        }
    }

    #[test]
    fn same_place_same_window_is_one_cluster() {
        let mut book = ClusterBook::new(ClusterPolicy::default());
        for (i, (lat, lon)) in [(23.5185, 120.9280), (23.5187, 120.9282), (23.5183, 120.9279)].into_iter().enumerate() {
            book.add(report(lat, lon, Category::Flooding, i as u64, 1000 * i as i64));
        }
        assert_eq!(book.len(), 1);
        let c = book.iter_recent()[0];
        assert_eq!((c.count, c.reporters()), (3, 3));
    }

    #[test]
    fn far_apart_other_category_or_later_are_new_clusters() {
        let mut book = ClusterBook::new(ClusterPolicy::default());
        book.add(report(23.5185, 120.9280, Category::Flooding, 1, 0));
        book.add(report(23.0640, 120.5920, Category::Flooding, 2, 0));
        book.add(report(23.5185, 120.9280, Category::Fire, 3, 0));
        book.add(report(23.5185, 120.9280, Category::Flooding, 4, 31 * 60 * 1000));
        assert_eq!(book.len(), 4);
    }

    #[test]
    fn neighbouring_cells_meet() {
        let mut book = ClusterBook::new(ClusterPolicy::default());
        let first = report(23.5185, 120.9280, Category::Landslide, 1, 0);
        let neighbour = first.cell.grid_disk::<Vec<_>>(1).into_iter().find(|c| *c != first.cell).unwrap();
        let centre = LatLng::from(neighbour);
        book.add(first);
        book.add(report(centre.lat(), centre.lng(), Category::Landslide, 2, 10));
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn duplicates_are_counted_once_in_the_list() {
        let mut book = ClusterBook::new(ClusterPolicy::default());
        for at in 0..3 {
            book.add(report(23.5185, 120.9280, Category::Fire, 7, at));
        }
        let c = book.iter_recent()[0];
        assert_eq!((c.count, c.reporters(), c.duplicates, c.texts().count()), (3, 1, 2, 1));
    }

    #[test]
    fn decisions() {
        let mut book = ClusterBook::new(ClusterPolicy::default());
        let id = book.add(report(23.5185, 120.9280, Category::Fire, 1, 0)).0.id();
        assert!(matches!(book.attach(&id, "a-1"), Err(ClusterError::Conflict { .. })));
        book.verify(&id, 5, Some("Fire confirmed".into()), None, None).unwrap();
        assert_eq!(book.attach(&id, "a-1").unwrap().alert_id.as_deref(), Some("a-1"));
        let feature = book.get(&id).unwrap().open_data_feature(|p| p.to_string(), |a| format!("/cap/{a}.xml"));
        assert_eq!(feature["properties"]["cap"], "/cap/a-1.xml");
        assert!(!feature.to_string().contains("seen by"), "no citizen text in open data: {feature}");
        book.dismiss(&id, 6, None).unwrap();
        let (c, new) = book.add(report(23.5185, 120.9280, Category::Fire, 2, 10));
        assert!(new && c.id() != id, "a dismissed cluster takes no more reports");
        assert!(matches!(book.verify("rc-999", 0, None, None, None), Err(ClusterError::NotFound(_))));
        assert!(book.get("nonsense").is_none());
    }

    /// Issue 22 item 3: at the limit the least recent clusters were dropped "unverified first", but a tenth at a
    /// time, so a book holding mostly verified clusters lost verified ones to a flood; and a linked cluster an
    /// operator later dismissed (the alert still cites it) went like any other.
    #[test]
    fn a_flood_never_evicts_verified_or_alert_linked_clusters() {
        let policy = ClusterPolicy { max_clusters: 20, ..ClusterPolicy::default() };
        let mut book = ClusterBook::new(policy);
        let mut kept = Vec::new();
        for i in 0..19 {
            let id = book.add(report(22.0 + f64::from(i) * 0.03, 121.0, Category::Flooding, 1, i64::from(i))).0.id();
            book.verify(&id, 100, None, None, None).unwrap();
            kept.push(id);
        }
        book.attach(&kept[0], "TW-DC-1").unwrap();
        book.dismiss(&kept[0], 101, None).unwrap();
        assert!(book.has_room());
        for i in 0..500 {
            let (lat, lon) = (24.0 + f64::from(i / 25) * 0.03, 120.0 + f64::from(i % 25) * 0.03);
            let (c, new) = book.add(report(lat, lon, Category::Other, 2, 1000 + i64::from(i)));
            assert!(new && !c.is_protected());
        }
        for id in &kept {
            assert!(book.get(id).is_some(), "{id} was evicted");
        }
        assert!(book.len() <= 20, "{}", book.len());
        // With every place taken by a protected cluster there is no room: the report book refuses new places.
        let last = book.iter_recent()[0].id();
        book.verify(&last, 2000, None, None, None).unwrap();
        assert!(!book.has_room());
        let next = report(25.0, 121.5, Category::Fire, 3, 3000);
        assert!(book.would_open(&next));
        let joining = report(25.0 + 0.0001, 121.5, Category::Fire, 3, 3000);
        book.add(next);
        assert!(!book.would_open(&joining), "a report joining a cluster needs no room");
    }

    /// Photos are released when no cluster refers to them any more: dropped with an evicted cluster, or scrolled out
    /// of a cluster's recent reports without being among its kept photos; never while another cluster has them.
    #[test]
    fn photos_are_released_with_the_last_cluster_that_refers_to_them() {
        let policy = ClusterPolicy {
            max_clusters: 10,
            recent_per_cluster: 2,
            photos_per_cluster: 1,
            ..ClusterPolicy::default()
        };
        let mut book = ClusterBook::new(policy);
        let with_photo = |lat: f64, reporter: u64, at: i64, photo: &str| NewReport {
            photo: Some(photo.to_string()),
            ..report(lat, 121.0, Category::Flooding, reporter, at)
        };
        book.add(with_photo(22.0, 1, 0, "a.jpg"));
        book.add(with_photo(22.0, 2, 1, "b.jpg"));
        book.add(with_photo(22.5, 3, 2, "a.jpg"));
        assert!(book.references("a.jpg") && book.references("b.jpg"));
        assert!(book.take_released().is_empty());
        // Two more reports push b.jpg (not a kept photo: the cluster keeps one, a.jpg) out of the recent list.
        book.add(report(22.0, 121.0, Category::Flooding, 4, 3));
        book.add(report(22.0, 121.0, Category::Flooding, 5, 4));
        assert_eq!(book.take_released(), vec!["b.jpg".to_string()]);
        assert!(book.references("a.jpg"));
        // A flood of new places evicts both clusters; a.jpg goes with the second.
        let mut released = Vec::new();
        for i in 0..10 {
            book.add(report(24.0 + f64::from(i) * 0.03, 120.5, Category::Other, 9, 10 + i64::from(i)));
            released.extend(book.take_released());
        }
        assert_eq!(released, vec!["a.jpg".to_string()]);
        assert!(!book.references("a.jpg"));
        // A book read back from a snapshot counts the same references.
        let state = serde_json::to_string(&book.state()).unwrap();
        let again = ClusterBook::from_state(policy, serde_json::from_str(&state).unwrap());
        assert_eq!(again.photo_refs, book.photo_refs);
    }

    #[test]
    fn the_book_stays_bounded() {
        let policy = ClusterPolicy { max_clusters: 50, ..ClusterPolicy::default() };
        let mut book = ClusterBook::new(policy);
        for i in 0..500 {
            book.add(report(22.0 + f64::from(i) * 0.01, 120.5, Category::Other, 1, i64::from(i)));
        }
        assert!(book.len() <= 50, "{}", book.len());
        assert!(book.by_cell.len() <= 50);
    }
}
