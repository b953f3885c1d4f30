//! Who owns a region: leases in a replicated key-value bucket.
//!
//! Bucket `dc_leases` (`replicas` copies), one key per region (`10008`), the value the owner's name. Every entry
//! expires `ttl` after it was written, on the bucket's own clock (the stream's `max_age`): nobody's wall clock decides
//! who owns what.
//! - **Acquire**: `create` — succeeds only when the key has no live entry (never taken, released, or expired because
//!   its owner stopped renewing). An entry already naming us (a restart under the same name) is taken over by
//!   compare-and-set on its revision.
//! - **Renew**: `update` with the revision we last wrote (compare-and-set). Success moves the revision and restarts
//!   the entry's age; a wrong revision means the entry expired and someone else (or nobody yet) took it: lost.
//! - **Validity**: a lease is ours until `ttl` after the last successful write was *sent* (the server stamped it
//!   later, so it expires later); [`Lease::is_valid`] keeps a quarter of the ttl in hand for clock rate and
//!   scheduling. An owner must stop working on a region as soon as its lease is not valid — before anyone else can
//!   acquire it — which is what makes two owners of one region impossible, partitions included.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use tokio::time::Instant;

use crate::bucket::{self, compare_and_set, Cas};
use crate::{Backbone, ClusterError, LEASES};

pub const BUCKET: &str = "dc_leases";

/// A region we hold.
#[derive(Debug, Clone)]
pub struct Lease {
    pub region: String,
    /// The bucket revision of our last write: the compare-and-set token of the next renewal.
    pub revision: u64,
    /// When the last successful write was sent: the lease expires on the server no earlier than `ttl` after it.
    written: Instant,
    ttl: Duration,
}

impl Lease {
    /// Whether we may still act as the region's owner: a quarter of the ttl short of the earliest server expiry.
    pub fn is_valid(&self, now: Instant) -> bool {
        now < self.written + self.ttl * 3 / 4
    }
}

/// The lease bucket, for one owner.
#[derive(Clone)]
pub struct Leases {
    store: kv::Store,
    owner: String,
    ttl: Duration,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases").field("owner", &self.owner).field("ttl", &self.ttl).finish()
    }
}

impl Leases {
    /// Finds the bucket, or creates it (the first process sets the ttl; renew every `ttl / 4`).
    pub async fn open(backbone: &Backbone, ttl: Duration) -> Result<Self, ClusterError> {
        std::sync::LazyLock::force(&LEASES);
        let store = bucket::open(backbone, BUCKET, "the lease bucket", Some(ttl)).await?;
        Ok(Self { store, owner: backbone.config().name.clone(), ttl })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes `region` if nobody holds it (or we do, from before a restart). `Ok(None)`: someone else holds it.
    pub async fn acquire(&self, region: &str) -> Result<Option<Lease>, ClusterError> {
        let failed = |message: String| ClusterError::Lease { region: region.into(), message };
        let owner = Bytes::from(self.owner.clone());
        let sent = Instant::now();
        if let Cas::Written(revision) =
            compare_and_set(&self.store, region, owner.clone(), None).await.map_err(failed)?
        {
            LEASES.with_label_values(&["acquired"]).inc();
            return Ok(Some(self.lease(region, revision, sent)));
        }
        // Live: ours from before a restart (taken back by compare-and-set), or someone else's.
        let ours = bucket::live_entry(&self.store, region).await.map_err(failed)?.filter(|e| e.value == owner);
        if let Some(entry) = ours {
            let sent = Instant::now();
            if let Cas::Written(revision) =
                compare_and_set(&self.store, region, owner, Some(entry.revision)).await.map_err(failed)?
            {
                LEASES.with_label_values(&["acquired"]).inc();
                return Ok(Some(self.lease(region, revision, sent)));
            }
        }
        LEASES.with_label_values(&["refused"]).inc();
        Ok(None)
    }

    /// Renews a lease by compare-and-set. `Ok(false)`: lost (it expired, and may be someone else's now); the caller
    /// stops acting for the region at once. An error (no answer) leaves the lease as it was: it stays usable while
    /// [`Lease::is_valid`] says so.
    pub async fn renew(&self, lease: &mut Lease) -> Result<bool, ClusterError> {
        let sent = Instant::now();
        let owner = Bytes::from(self.owner.clone());
        match compare_and_set(&self.store, &lease.region, owner, Some(lease.revision)).await {
            Ok(Cas::Written(revision)) => {
                lease.revision = revision;
                lease.written = sent;
                LEASES.with_label_values(&["renewed"]).inc();
                Ok(true)
            }
            Ok(Cas::Conflict) => {
                LEASES.with_label_values(&["lost"]).inc();
                tracing::warn!(region = %lease.region, "region lease lost (expired before renewal)");
                Ok(false)
            }
            Err(message) => Err(ClusterError::Lease { region: lease.region.clone(), message }),
        }
    }

    /// Gives a region up at once (a clean shutdown), so that another owner need not wait for the expiry.
    pub async fn release(&self, lease: Lease) -> Result<(), ClusterError> {
        self.store
            .delete_expect_revision(&lease.region, Some(lease.revision))
            .await
            .map_err(|e| ClusterError::Lease { region: lease.region.clone(), message: e.to_string() })?;
        LEASES.with_label_values(&["released"]).inc();
        Ok(())
    }

    /// Who holds `region` now, if anyone.
    pub async fn holder(&self, region: &str) -> Result<Option<String>, ClusterError> {
        let entry = bucket::live_entry(&self.store, region)
            .await
            .map_err(|message| ClusterError::Lease { region: region.into(), message })?;
        Ok(entry.map(|e| String::from_utf8_lossy(&e.value).into_owned()))
    }

    /// Every region whose lease is given up from now on (released by its owner: deleted), as it happens, until
    /// the watch ends (then the caller watches again; it relies on its tick meanwhile). A worker under
    /// its share tries at once instead of at its next tick. Expiries are not announced (the server removes the
    /// entry silently): those are found by the tick.
    pub async fn releases(&self) -> Result<impl futures_util::Stream<Item = String>, ClusterError> {
        use futures_util::StreamExt;
        let watch = self
            .store
            .watch_all()
            .await
            .map_err(|e| ClusterError::Lease { region: BUCKET.into(), message: format!("watch: {e}") })?;
        Ok(watch.filter_map(|entry| async move {
            let entry = entry.ok()?;
            matches!(entry.operation, kv::Operation::Delete | kv::Operation::Purge).then_some(entry.key)
        }))
    }

    fn lease(&self, region: &str, revision: u64, written: Instant) -> Lease {
        Lease { region: region.into(), revision, written, ttl: self.ttl }
    }
}
