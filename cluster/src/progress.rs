//! How far the owner of a region has worked through its readings: bucket `dc_progress` (`replicas` copies, no
//! expiry), key = region, value = the readings-stream sequence of the last reading whose alert changes are in the
//! alerts stream. A region's next owner rebuilds its rule windows from the readings up to it (findings dropped: the
//! alerts stream already has their effect) and evaluates the readings after it as new.
//!
//! Written by compare-and-set on the entry's revision: a new owner writes the entry once as it takes the region
//! over, so a previous owner that has not noticed it lost the region fails its next write ([`Progress::save`] →
//! `Ok(false)`) instead of moving the mark for someone else's work.

use async_nats::jetstream::kv;
use bytes::Bytes;

use crate::bucket::{self, compare_and_set, Cas};
use crate::{Backbone, ClusterError};

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
        Ok(Self { store: bucket::open(backbone, BUCKET, "the progress bucket", None).await? })
    }

    /// Takes the region's mark over (call it right after acquiring the region's lease): reads it and writes it
    /// back, which fences any previous owner's later writes.
    pub async fn take_over(&self, region: &str) -> Result<Mark, ClusterError> {
        let entry = bucket::live_entry(&self.store, region).await.map_err(|e| failed(region, e))?;
        let (sequence, value, revision) = match entry {
            Some(entry) => {
                let sequence = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| failed(region, "not a sequence number"))?;
                (sequence, entry.value, Some(entry.revision))
            }
            None => (0, Bytes::from_static(b"0"), None),
        };
        match compare_and_set(&self.store, region, value, revision).await.map_err(|e| failed(region, e))? {
            Cas::Written(revision) => Ok(Mark { sequence, revision }),
            Cas::Conflict => Err(failed(region, "written by someone else meanwhile")),
        }
    }

    /// Moves the mark to `sequence`. `Ok(false)`: someone else took the region over since (we lost it).
    pub async fn save(&self, region: &str, mark: &mut Mark, sequence: u64) -> Result<bool, ClusterError> {
        let value = Bytes::from(sequence.to_string());
        match compare_and_set(&self.store, region, value, Some(mark.revision)).await.map_err(|e| failed(region, e))? {
            Cas::Written(revision) => {
                *mark = Mark { sequence, revision };
                Ok(true)
            }
            Cas::Conflict => Ok(false),
        }
    }
}
