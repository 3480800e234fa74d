//! Label objects: each tenant's stream label sets kept in the object store, so the tantivy
//! label index on local disk is only a cache that a node rebuilds from its bucket.
//!
//! ```text
//! <tenant>/streams/<n:020>.json   {"version":1,"streams":[{"id":<u64>,"labels":[["app","api"],…]},…]}
//! ```
//!
//! Rules that keep the bucket complete:
//! - A flush writes one object holding the streams of its head that no object holds yet,
//!   **before** the manifest edit that lists their files. Every stream id a manifest lists
//!   is therefore in an object written before that manifest; a reader that reads the
//!   manifest first and lists the objects afterwards finds every label set it needs.
//! - Objects are numbered 1, 2, 3, … by the one writer (the lease holder, see
//!   [`crate::lease`]); they are never edited, except by a merge: past [`MERGE_AT`]
//!   objects the writer writes the union of all of them under the newest one's number (a
//!   superset replacing it in one `put`) and then deletes the older ones. A crash in
//!   between leaves duplicates, which every reader folds together.
//! - Compaction and deletes only rewrite rows of known streams, so they write no object.
//! - Opening a tenant ([`open_tenant`]) adds every label set of the bucket that the local
//!   index lacks (a missing or emptied data directory rebuilds the index here) and, for a
//!   writer, writes the index's label sets the bucket lacks (buckets written by builds
//!   before label objects existed: a one-time migration).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{LabelSet, StreamId};
use crate::Tenant;

/// Format version of a label object.
const VERSION: u32 = 1;

/// A tenant with more label objects than this has them merged into one by its next flush.
pub const MERGE_AT: usize = 32;

/// One stream in a label object.
#[derive(Debug, Serialize, Deserialize)]
struct StoredStream {
    id: StreamId,
    labels: Vec<(String, String)>,
}

/// The body of a label object.
#[derive(Debug, Serialize, Deserialize)]
struct StoredStreams {
    version: u32,
    streams: Vec<StoredStream>,
}

/// Per-tenant bookkeeping of the label objects (one per [`Tenant`]).
#[derive(Debug, Default)]
pub(crate) struct StreamsLog {
    state: tokio::sync::Mutex<LogState>,
}

#[derive(Debug, Default)]
struct LogState {
    /// `next` and `in_bucket` were read from the bucket (a tenant opened at start, or
    /// created later and looked up at its first flush).
    initialized: bool,
    /// Number of the next object to write.
    next: u64,
    /// Objects in the bucket as far as this process knows.
    objects: usize,
    /// Streams some object holds.
    in_bucket: HashSet<StreamId>,
    /// Highest object number read into the index (readers follow from there).
    read_up_to: u64,
}

fn dir(tenant_dir: &str) -> String {
    format!("{tenant_dir}/streams")
}

fn object_path(tenant_dir: &str, n: u64) -> ObjectPath {
    ObjectPath::from(format!("{}/{n:020}.json", dir(tenant_dir)))
}

fn os_err(path: &ObjectPath, source: object_store::Error) -> Error {
    Error::ObjectStore {
        path: path.to_string(),
        source,
    }
}

fn join_err(e: tokio::task::JoinError) -> Error {
    Error::Internal(format!("blocking task failed: {e}"))
}

/// The numbers of a tenant's label objects, ascending.
async fn list(store: &dyn ObjectStore, tenant_dir: &str) -> Result<Vec<u64>> {
    let prefix = ObjectPath::from(dir(tenant_dir));
    let metas: Vec<_> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| os_err(&prefix, e))?;
    let mut out: Vec<u64> = metas
        .iter()
        .filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse().ok())
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// One object's streams; `None` when it is gone (merged away since it was listed).
async fn read(
    store: &dyn ObjectStore,
    tenant_dir: &str,
    n: u64,
) -> Result<Option<Vec<(StreamId, LabelSet)>>> {
    let path = object_path(tenant_dir, n);
    let body = match store.get(&path).await {
        Ok(got) => got.bytes().await.map_err(|e| os_err(&path, e))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(os_err(&path, e)),
    };
    let parsed: StoredStreams = serde_json::from_slice(&body).map_err(|e| Error::Corrupt {
        path: path.to_string(),
        detail: e.to_string(),
    })?;
    if parsed.version > VERSION {
        return Err(Error::Corrupt {
            path: path.to_string(),
            detail: format!(
                "label object version {} is newer than this build",
                parsed.version
            ),
        });
    }
    Ok(Some(
        parsed
            .streams
            .into_iter()
            .map(|s| (s.id, LabelSet::new(s.labels)))
            .collect(),
    ))
}

async fn write<'a>(
    store: &dyn ObjectStore,
    tenant_dir: &str,
    n: u64,
    streams: impl Iterator<Item = (StreamId, &'a LabelSet)>,
) -> Result<()> {
    let body = StoredStreams {
        version: VERSION,
        streams: streams
            .map(|(id, l)| StoredStream {
                id,
                labels: l.pairs().to_vec(),
            })
            .collect(),
    };
    let path = object_path(tenant_dir, n);
    let bytes = serde_json::to_vec(&body).map_err(|e| Error::Internal(e.to_string()))?;
    store
        .put(&path, PutPayload::from(bytes))
        .await
        .map_err(|e| os_err(&path, e))?;
    Ok(())
}

/// Read every label object of `tenant`, add the label sets its index lacks, and (when
/// `writable`) write the index's label sets the bucket lacks.
pub(crate) async fn open_tenant(
    store: &dyn ObjectStore,
    tenant: &Arc<Tenant>,
    writable: bool,
) -> Result<()> {
    let started = Instant::now();
    let mut state = tenant.streams_log.state.lock().await;
    let numbers = list(store, &tenant.dir).await?;
    let mut bucket: HashMap<StreamId, LabelSet> = HashMap::new();
    let mut objects = 0;
    for &n in &numbers {
        if let Some(streams) = read(store, &tenant.dir, n).await? {
            objects += 1;
            bucket.extend(streams);
        }
    }
    let missing: Vec<(StreamId, Arc<LabelSet>)> = bucket
        .iter()
        .filter(|(id, _)| tenant.index.get(**id).is_none())
        .map(|(id, l)| (*id, Arc::new(l.clone())))
        .collect();
    let rebuilt = if missing.is_empty() {
        0
    } else {
        let t = tenant.clone();
        tokio::task::spawn_blocking(move || t.index.add_streams(&missing))
            .await
            .map_err(join_err)??
    };
    let mut next = numbers.last().map_or(1, |n| n + 1);
    if writable {
        let local = tenant.index.lookup(&[])?;
        let absent: Vec<&(StreamId, Arc<LabelSet>)> = local
            .iter()
            .filter(|(id, _)| !bucket.contains_key(id))
            .collect();
        if !absent.is_empty() {
            write(
                store,
                &tenant.dir,
                next,
                absent.iter().map(|(id, l)| (*id, l.as_ref())),
            )
            .await?;
            objects += 1;
            next += 1;
            bucket.extend(absent.iter().map(|(id, l)| (*id, (**l).clone())));
            tracing::info!(
                tenant = %tenant.name,
                streams = absent.len(),
                "label sets of the local index written to the bucket (migration)"
            );
        }
    }
    let unknown = {
        let m = tenant.manifest.read().clone();
        m.stream_ranges
            .keys()
            .filter(|id| !bucket.contains_key(id) && tenant.index.get(**id).is_none())
            .count()
    };
    if unknown > 0 {
        tracing::error!(
            tenant = %tenant.name,
            streams = unknown,
            "streams listed in the manifest have no label set in the bucket or the local index: \
             selectors cannot reach their lines"
        );
    }
    state.initialized = true;
    state.next = next;
    state.objects = objects;
    state.read_up_to = next - 1;
    state.in_bucket = bucket.into_keys().collect();
    if rebuilt > 0 {
        tracing::info!(
            tenant = %tenant.name,
            streams = rebuilt,
            objects,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "label index rebuilt from the bucket"
        );
    }
    Ok(())
}

/// Write the label sets of `streams` no object holds yet (a flush, before its manifest
/// edit); merge the tenant's objects when there are more than [`MERGE_AT`].
pub(crate) async fn record(
    store: &dyn ObjectStore,
    tenant: &Tenant,
    streams: &[(StreamId, Arc<LabelSet>)],
) -> Result<()> {
    let mut state = tenant.streams_log.state.lock().await;
    if !state.initialized {
        // A tenant that was not listed at start (new, or whose first flush was cut short):
        // objects of an interrupted flush may exist.
        let numbers = list(store, &tenant.dir).await?;
        for &n in &numbers {
            if let Some(streams) = read(store, &tenant.dir, n).await? {
                state
                    .in_bucket
                    .extend(streams.into_iter().map(|(id, _)| id));
            }
        }
        state.next = numbers.last().map_or(1, |n| n + 1);
        state.objects = numbers.len();
        state.initialized = true;
    }
    let mut seen = HashSet::new();
    let new: Vec<&(StreamId, Arc<LabelSet>)> = streams
        .iter()
        .filter(|(id, _)| !state.in_bucket.contains(id) && seen.insert(*id))
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    let n = state.next;
    write(
        store,
        &tenant.dir,
        n,
        new.iter().map(|(id, l)| (*id, l.as_ref())),
    )
    .await?;
    state.next = n + 1;
    state.objects += 1;
    state.read_up_to = state.read_up_to.max(n);
    state.in_bucket.extend(new.iter().map(|(id, _)| *id));
    if state.objects > MERGE_AT {
        match merge(store, &tenant.dir).await {
            Ok(left) => state.objects = left,
            Err(e) => {
                tracing::warn!(tenant = %tenant.name, error = %e, "merging label objects failed; will retry")
            }
        }
    }
    Ok(())
}

/// Write the union of all of a tenant's objects under the newest number, then delete the
/// older ones. Returns the objects left.
async fn merge(store: &dyn ObjectStore, tenant_dir: &str) -> Result<usize> {
    let numbers = list(store, tenant_dir).await?;
    let Some(&newest) = numbers.last() else {
        return Ok(0);
    };
    if numbers.len() < 2 {
        return Ok(numbers.len());
    }
    let mut all: HashMap<StreamId, LabelSet> = HashMap::new();
    for &n in &numbers {
        if let Some(streams) = read(store, tenant_dir, n).await? {
            all.extend(streams);
        }
    }
    let mut sorted: Vec<(StreamId, &LabelSet)> = all.iter().map(|(id, l)| (*id, l)).collect();
    sorted.sort_unstable_by_key(|(id, _)| *id);
    write(store, tenant_dir, newest, sorted.into_iter()).await?;
    for &n in &numbers[..numbers.len() - 1] {
        let path = object_path(tenant_dir, n);
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(os_err(&path, e)),
        }
    }
    tracing::info!(
        tenant_dir,
        objects = numbers.len(),
        streams = all.len(),
        "label objects merged"
    );
    Ok(1)
}

/// A reader's step: add the label sets of objects written since the last call to the
/// index. Call after reading a manifest and before publishing it.
pub(crate) async fn follow(store: &dyn ObjectStore, tenant: &Arc<Tenant>) -> Result<usize> {
    let mut state = tenant.streams_log.state.lock().await;
    let mut new: Vec<(StreamId, Arc<LabelSet>)> = Vec::new();
    let mut newest = state.read_up_to;
    // An object listed but gone was merged into a newer one, which the next listing shows;
    // until a pass reads every object it listed, advancing could skip label sets.
    for _pass in 0..3 {
        let numbers = list(store, &tenant.dir).await?;
        let mut complete = true;
        for &n in numbers.iter().filter(|&&n| n > state.read_up_to) {
            match read(store, &tenant.dir, n).await? {
                Some(streams) => new.extend(
                    streams
                        .into_iter()
                        .filter(|(id, _)| tenant.index.get(*id).is_none())
                        .map(|(id, l)| (id, Arc::new(l))),
                ),
                None => complete = false,
            }
            newest = newest.max(n);
        }
        if complete {
            break;
        }
        newest = state.read_up_to;
    }
    let added = if new.is_empty() {
        0
    } else {
        let t = tenant.clone();
        tokio::task::spawn_blocking(move || t.index.add_streams(&new))
            .await
            .map_err(join_err)??
    };
    state.read_up_to = newest;
    Ok(added)
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    fn labels(app: &str) -> LabelSet {
        LabelSet::new(vec![("app".into(), app.into())])
    }

    #[tokio::test]
    async fn merge_keeps_every_stream_under_the_newest_number() -> Result<()> {
        let store = InMemory::new();
        for n in 1..=5u64 {
            let l = labels(&format!("a{n}"));
            write(&store, "t", n, std::iter::once((n, &l))).await?;
        }
        assert_eq!(merge(&store, "t").await?, 1);
        assert_eq!(list(&store, "t").await?, vec![5]);
        let merged = read(&store, "t", 5).await?.unwrap_or_default();
        let ids: Vec<StreamId> = merged.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5]);
        assert_eq!(merged[2].1, labels("a3"));
        assert!(read(&store, "t", 1).await?.is_none());
        Ok(())
    }
}
