//! Which rule workers are alive: bucket `dc_workers` (`replicas` copies), key = worker name, value = the name,
//! every entry expiring `ttl` after it was written (the bucket's `max_age`, on the server's clock, like the leases).
//! A worker announces itself every ttl/4; one that dies drops out of [`Presence::live`] a ttl after its last
//! announcement, one that stops cleanly withdraws at once. Workers balance regions by it: each holds about
//! `ceil(regions / live workers)` (`scale_out/rule_worker.rs`).
//!
//! A separate bucket rather than keys in `dc_leases`: presence is not ownership of anything, and other roles keep
//! their own keys in the lease bucket (a dissemination node's lease), which must not count as workers.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::TryStreamExt;

use crate::{bucket, Backbone, ClusterError};

pub const BUCKET: &str = "dc_workers";

#[derive(Clone)]
pub struct Presence {
    store: kv::Store,
    name: String,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence").field("name", &self.name).finish()
    }
}

fn failed(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Lease { region: BUCKET.into(), message: format!("presence: {e}") }
}

impl Presence {
    /// Finds the bucket or creates it (the first worker sets the ttl: the lease ttl).
    pub async fn open(backbone: &Backbone, ttl: Duration) -> Result<Self, ClusterError> {
        let store = bucket::open(backbone, BUCKET, "the workers' presence bucket", Some(ttl)).await?;
        Ok(Self { store, name: backbone.config().name.clone() })
    }

    /// "Still here": restarts this worker's entry's age.
    pub async fn announce(&self) -> Result<(), ClusterError> {
        self.store.put(&self.name, Bytes::from(self.name.clone())).await.map(|_| ()).map_err(failed)
    }

    /// Leaves at once (a clean stop), so that the others count one worker fewer without waiting for the ttl.
    pub async fn withdraw(&self) -> Result<(), ClusterError> {
        self.store.delete(&self.name).await.map_err(failed)
    }

    /// The names of the workers announced within the last ttl, sorted.
    pub async fn live(&self) -> Result<Vec<String>, ClusterError> {
        let mut names: Vec<String> = self.store.keys().await.map_err(failed)?.try_collect().await.map_err(failed)?;
        names.sort();
        Ok(names)
    }
}
