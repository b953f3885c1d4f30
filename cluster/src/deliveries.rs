//! The delivery ledger: what the dissemination node planned, attempted and had confirmed, replicated, so that the
//! node taking dissemination over knows which deliveries a receiver already has and which to send again (as a retry,
//! with the same id).
//!
//! Bucket `dc_deliveries` (`replicas` copies), key = the delivery's key (hex, from what is delivered; the binary
//! derives it), value = [`DeliveryEntry`] as JSON. Entries expire `max_age` after their last write: by then every
//! alert they belong to has long been replayed past.
//! - **record**: `create` when planned (a key already there stays as it is): the dissemination node acknowledges an
//!   alert change to the alerts stream only after its deliveries are recorded.
//! - **begin**: before each call, the attempt count is raised by compare-and-set on the entry's revision (created if
//!   missing); a confirmed entry says "do not send".
//! - **confirm**: after the receiver's 2xx, the entry is marked confirmed (compare-and-set, retried on a race).
//!
//! One writer at a time in practice (the lease-holding dissemination node); compare-and-set keeps the count right
//! even when a node that lost its lease has an attempt in flight.

use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{retry_setup, Backbone, ClusterError};

pub const BUCKET: &str = "dc_deliveries";

/// One delivery as the ledger holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryEntry {
    /// The receiver (subscriber name, `cbc:<carrier>`).
    pub target: String,
    /// The CAP message delivered.
    pub identifier: String,
    /// Attempts begun, on every node together (0: planned, not attempted yet).
    pub attempts: u32,
    /// A receiver answered 2xx.
    pub confirmed: bool,
    /// The node that wrote last.
    pub node: String,
}

#[derive(Clone)]
pub struct Deliveries {
    store: kv::Store,
    node: String,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliveries").field("node", &self.node).finish()
    }
}

fn failed(key: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable { subject: format!("$KV.{BUCKET}.{key}"), waited: Duration::ZERO, message: e.to_string() }
}

/// Most compare-and-set races one call rides out before it reports an error (only a second writer causes them).
const MAX_RACES: usize = 16;

impl Deliveries {
    /// Finds the bucket or creates it (the first process sets `max_age`).
    pub async fn open(backbone: &Backbone, max_age: Duration) -> Result<Self, ClusterError> {
        let config = backbone.config();
        let js = backbone.jetstream().clone();
        let bucket = kv::Config {
            bucket: BUCKET.into(),
            history: 1,
            max_age,
            num_replicas: config.replicas,
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        };
        let store = retry_setup("the delivery ledger bucket", config.start_timeout, || {
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
        Ok(Self { store, node: config.name.clone() })
    }

    fn encode(entry: &DeliveryEntry) -> Bytes {
        Bytes::from(serde_json::to_vec(entry).unwrap_or_default())
    }

    /// The entry of `key` and its revision, if there is a live one.
    pub async fn entry(&self, key: &str) -> Result<Option<(DeliveryEntry, u64)>, ClusterError> {
        let entry = self.store.entry(key).await.map_err(|e| failed(key, e))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else { return Ok(None) };
        let value = serde_json::from_slice(&entry.value).map_err(|e| failed(key, format!("unreadable entry: {e}")))?;
        Ok(Some((value, entry.revision)))
    }

    /// Every entry no receiver confirmed yet (a take-over compares them with what its replay planned).
    pub async fn unconfirmed(&self) -> Result<Vec<(String, DeliveryEntry)>, ClusterError> {
        use futures_util::StreamExt;
        let mut keys = self.store.keys().await.map_err(|e| failed("*", e))?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| failed("*", e))?;
            if let Some((entry, _)) = self.entry(&key).await? {
                if !entry.confirmed {
                    out.push((key, entry));
                }
            }
        }
        Ok(out)
    }

    /// Records a planned delivery; one already recorded (by a node before us) stays as it is.
    pub async fn record(&self, key: &str, target: &str, identifier: &str) -> Result<(), ClusterError> {
        let entry = DeliveryEntry {
            target: target.into(),
            identifier: identifier.into(),
            attempts: 0,
            confirmed: false,
            node: self.node.clone(),
        };
        match self.store.create(key, Self::encode(&entry)).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(failed(key, e)),
        }
    }

    /// Counts an attempt about to be made: `Some(n)`, the attempt's number across every node; `None`: confirmed
    /// already, do not send.
    pub async fn begin(&self, key: &str, target: &str, identifier: &str) -> Result<Option<u32>, ClusterError> {
        for _ in 0..MAX_RACES {
            match self.entry(key).await? {
                Some((entry, _)) if entry.confirmed => return Ok(None),
                Some((mut entry, revision)) => {
                    entry.attempts += 1;
                    entry.node = self.node.clone();
                    match self.store.update(key, Self::encode(&entry), revision).await {
                        Ok(_) => return Ok(Some(entry.attempts)),
                        Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                        Err(e) => return Err(failed(key, e)),
                    }
                }
                None => {
                    // Not recorded at planning (a crash in between): recorded now, before the call.
                    let entry = DeliveryEntry {
                        target: target.into(),
                        identifier: identifier.into(),
                        attempts: 1,
                        confirmed: false,
                        node: self.node.clone(),
                    };
                    match self.store.create(key, Self::encode(&entry)).await {
                        Ok(_) => return Ok(Some(1)),
                        Err(e) if e.kind() == CreateErrorKind::AlreadyExists => continue,
                        Err(e) => return Err(failed(key, e)),
                    }
                }
            }
        }
        Err(failed(key, "too many concurrent writers"))
    }

    /// Marks a delivery confirmed by its receiver.
    pub async fn confirm(&self, key: &str) -> Result<(), ClusterError> {
        for _ in 0..MAX_RACES {
            let (mut entry, revision) = match self.entry(key).await? {
                Some(found) => found,
                None => (DeliveryEntry { attempts: 1, ..Default::default() }, 0),
            };
            if entry.confirmed {
                return Ok(());
            }
            entry.confirmed = true;
            entry.node = self.node.clone();
            let written = if revision == 0 {
                self.store
                    .create(key, Self::encode(&entry))
                    .await
                    .map(|_| ())
                    .map_err(|e| (e.kind() == CreateErrorKind::AlreadyExists, e.to_string()))
            } else {
                self.store
                    .update(key, Self::encode(&entry), revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| (e.kind() == UpdateErrorKind::WrongLastRevision, e.to_string()))
            };
            match written {
                Ok(()) => return Ok(()),
                Err((true, _)) => continue,
                Err((false, e)) => return Err(failed(key, e)),
            }
        }
        Err(failed(key, "too many concurrent writers"))
    }
}
