//! The one way this crate opens a replicated key-value bucket and writes to it by compare-and-set: leases
//! ([`crate::lease`]), progress marks ([`crate::progress`]) and the workers' presence ([`crate::presence`]) all
//! fence their writes on the entry's revision, and all meet the same three answers — written (the new revision),
//! someone else wrote first (a conflict: not an error, the caller decides what losing means), or no answer.

use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use async_nats::jetstream::stream::StorageType;
use bytes::Bytes;

use crate::{retry_setup, Backbone, ClusterError};

/// Finds bucket `name`, or creates it with `history` 1, the backbone's replicas and `max_age` (`None`: no expiry).
/// The first process to create it sets its settings. Returns once the bucket answers a read: a bucket just created
/// answers only once its replicas have elected a leader, and the first write must not meet "no responders".
pub(crate) async fn open(
    backbone: &Backbone,
    name: &'static str,
    what: &str,
    max_age: Option<Duration>,
) -> Result<kv::Store, ClusterError> {
    let config = backbone.config();
    let js = backbone.jetstream().clone();
    let bucket = kv::Config {
        bucket: name.into(),
        history: 1,
        max_age: max_age.unwrap_or_default(),
        num_replicas: config.replicas,
        storage: StorageType::File,
        ..Default::default()
    };
    retry_setup(what, config.start_timeout, || {
        let (js, bucket) = (js.clone(), bucket.clone());
        async move {
            let store = match js.get_key_value(name).await {
                Ok(store) => store,
                Err(_) => js.create_key_value(bucket).await.map_err(|e| e.to_string())?,
            };
            store.entry("probe").await.map_err(|e| e.to_string())?;
            Ok::<_, String>(store)
        }
    })
    .await
}

/// What a compare-and-set write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cas {
    /// Written: the entry's new revision (the next write's token).
    Written(u64),
    /// Not written: the entry is not at the revision we expected (someone else wrote, or it expired, or — for a
    /// create — it is live).
    Conflict,
}

/// Writes `value` under `key` only if the entry is still at `revision`; `None`: only if the key has no live entry
/// (never written, deleted, purged or expired). An error is no answer (timeout, no quorum): the write may or may not
/// have happened, and the caller's next compare-and-set tells.
pub(crate) async fn compare_and_set(
    store: &kv::Store,
    key: &str,
    value: Bytes,
    revision: Option<u64>,
) -> Result<Cas, String> {
    match revision {
        None => match store.create(key, value).await {
            Ok(revision) => Ok(Cas::Written(revision)),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(Cas::Conflict),
            Err(e) => Err(e.to_string()),
        },
        Some(revision) => match store.update(key, value, revision).await {
            Ok(revision) => Ok(Cas::Written(revision)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(Cas::Conflict),
            Err(e) => Err(e.to_string()),
        },
    }
}

/// The live entry of `key` (a put, not a delete or purge marker), if any.
pub(crate) async fn live_entry(store: &kv::Store, key: &str) -> Result<Option<kv::Entry>, String> {
    let entry = store.entry(key).await.map_err(|e| e.to_string())?;
    Ok(entry.filter(|e| e.operation == kv::Operation::Put))
}
