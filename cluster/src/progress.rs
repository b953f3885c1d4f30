//! How far the owner of a region has worked through its readings: bucket `dc_progress` (`replicas` copies, no
//! expiry), key = region, value = the readings-stream sequence of the last reading whose alert changes are in the
//! alerts stream. A region's next owner rebuilds its rule windows from the readings up to it (findings dropped: the
//! alerts stream already has their effect) and evaluates the readings after it as new.
//!
//! Written by compare-and-set on the entry's revision: a new owner writes the entry once as it takes the region
//! over, so a previous owner that has not noticed it lost the region fails its next write ([`Progress::save`] →
//! `Ok(false)`) instead of moving the mark for someone else's work.

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use bytes::Bytes;

use crate::{retry_setup, Backbone, ClusterError};

pub const BUCKET: &str = "dc_progress";

/// A region's mark as its owner holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// Readings-stream sequence; 0: nothing processed yet.
    pub sequence: u64,
    /// The bucket revision of our last write (the next write's compare-and-set token).
    revision: u64,
}

#[derive(Clone)]
pub struct Progress {
    store: kv::Store,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

fn failed(region: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Lease { region: region.into(), message: format!("progress mark: {e}") }
}

impl Progress {
    pub async fn open(backbone: &Backbone) -> Result<Self, ClusterError> {
        let config = backbone.config();
        let js = backbone.jetstream().clone();
        let bucket = kv::Config {
            bucket: BUCKET.into(),
            history: 1,
            num_replicas: config.replicas,
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let store = retry_setup("the progress bucket", config.start_timeout, || {
            let (js, bucket) = (js.clone(), bucket.clone());
            async move {
                let store = match js.get_key_value(BUCKET).await {
                    Ok(store) => store,
                    Err(_) => js.create_key_value(bucket).await.map_err(|e| e.to_string())?,
                };
                store.entry("probe").await.map_err(|e| e.to_string())?;
                Ok::<_, String>(store)
            }
        })
        .await?;
        Ok(Self { store })
    }

    /// Takes the region's mark over (call it right after acquiring the region's lease): reads it and writes it
    /// back, which fences any previous owner's later writes.
    pub async fn take_over(&self, region: &str) -> Result<Mark, ClusterError> {
        let entry = self.store.entry(region).await.map_err(|e| failed(region, e))?;
        match entry.filter(|e| e.operation == kv::Operation::Put) {
            Some(entry) => {
                let sequence = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| failed(region, "not a sequence number"))?;
                let revision = self
                    .store
                    .update(region, entry.value.clone(), entry.revision)
                    .await
                    .map_err(|e| failed(region, e))?;
                Ok(Mark { sequence, revision })
            }
            None => match self.store.create(region, Bytes::from_static(b"0")).await {
                Ok(revision) => Ok(Mark { sequence: 0, revision }),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                    Err(failed(region, "written by someone else meanwhile"))
                }
                Err(e) => Err(failed(region, e)),
            },
        }
    }

    /// Moves the mark to `sequence`. `Ok(false)`: someone else took the region over since (we lost it).
    pub async fn save(&self, region: &str, mark: &mut Mark, sequence: u64) -> Result<bool, ClusterError> {
        match self.store.update(region, Bytes::from(sequence.to_string()), mark.revision).await {
            Ok(revision) => {
                *mark = Mark { sequence, revision };
                Ok(true)
            }
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(failed(region, e)),
        }
    }
}
