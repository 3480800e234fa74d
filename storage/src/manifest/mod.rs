//! Manifests: per tenant, the list of chunk files with their statistics, so that planning a
//! query never lists the bucket.
//!
//! Layout on the object store (tenant names are percent-encoded into one path segment by
//! [`tenant_dir`]):
//!
//! ```text
//! tenants.json                          {"version":1,"tenants":["fake", ...]}
//! <tenant>/manifest.json                Manifest (below), rewritten whole on each flush
//! <tenant>/<window start, s>/<wal seq:020>.parquet   chunk files
//! <tenant>/chain/<seq:020>.json         hash chain of file-list changes ([`crate::chain`])
//! ```
//!
//! Each chunk entry records the file's SHA-256 (and its block index's), and the manifest
//! records the head of the tenant's hash chain; both are written under the manifest lock.
//!
//! `manifest.json` holds `flushed_wal_seq`: every WAL record of this tenant in a segment
//! numbered below it is in the listed chunks, so replay skips those records and no entry
//! is loaded twice after a restart. The object store's `put` replaces an object atomically
//! (rename on local disk, single PUT on S3), so a reader sees the old or the new manifest.

use std::collections::HashMap;
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::StreamId;

/// Current manifest format version. Version 2 records each stream's first row in its file
/// ([`StreamRange::first_row`]): files are no longer in stream id order, and a build that
/// knows only version 1 would read the wrong rows, so it refuses the manifest instead.
pub const MANIFEST_VERSION: u32 = 2;

/// Time range and size of one stream inside one chunk file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRange {
    /// Stream id.
    pub id: StreamId,
    /// Smallest timestamp, ns.
    pub min_ts: i64,
    /// Largest timestamp, ns.
    pub max_ts: i64,
    /// Rows.
    pub rows: u64,
    /// Bytes of lines (uncompressed).
    pub line_bytes: u64,
    /// The stream's first row in the file. `None` in files of older versions, whose
    /// streams are in id order: there a stream's rows follow those of the smaller ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_row: Option<u64>,
}

impl StreamRange {
    /// Does the stream have rows in this file that may fall in `[start, end)`?
    pub fn overlaps(&self, start: i64, end: i64) -> bool {
        self.min_ts < end && self.max_ts >= start
    }

    /// The share of the stream's rows in this file taken to fall in `[start, end)`: the
    /// part of `[min_ts, max_ts]` the range covers, as if rows were spread evenly over it.
    /// This is how Loki's index prorates a chunk's entries and bytes over a query range
    /// (the file's exact per-row times are not in the manifest).
    pub fn share_in(&self, start: i64, end: i64) -> f64 {
        if !self.overlaps(start, end) {
            return 0.0;
        }
        if self.min_ts == self.max_ts {
            return 1.0;
        }
        let lo = self.min_ts.max(start);
        let hi = self.max_ts.min(end.saturating_sub(1));
        // i128: the spans of extreme timestamps do not fit in i64.
        let span = i128::from(self.max_ts) - i128::from(self.min_ts);
        let covered = i128::from(hi) - i128::from(lo);
        (covered as f64 / span as f64).clamp(0.0, 1.0)
    }
}

/// One chunk file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMeta {
    /// Object path.
    pub path: String,
    /// File size in bytes.
    pub size: u64,
    /// Smallest timestamp, ns.
    pub min_ts: i64,
    /// Largest timestamp, ns.
    pub max_ts: i64,
    /// Rows.
    pub rows: u64,
    /// Per-stream ranges, sorted by stream id.
    pub streams: Vec<StreamRange>,
    /// Written by the compactor (strong zstd, merged window); flush output is not.
    #[serde(default)]
    pub compacted: bool,
    /// When the file was written, ms since the epoch (0 for files from older versions).
    #[serde(default)]
    pub created_ms: u64,
    /// Size of the file's trigram index ([`crate::textindex`]), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_index_bytes: Option<u64>,
    /// The structured metadata keys of the file's rows, sorted; `None` when unknown (files
    /// of older versions, or more than [`MAX_METADATA_KEYS`] distinct keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_keys: Option<Vec<String>>,
    /// Lowercase hex SHA-256 of the file, computed from its bytes as they were written
    /// (see [`crate::chain`]). `None` only in manifests of older versions, until the first
    /// start hashes their files into the chain's genesis entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// SHA-256 of the file's block index (`.tri`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_index_sha256: Option<String>,
}

/// Distinct metadata keys a chunk's manifest entry lists at most.
pub const MAX_METADATA_KEYS: usize = 64;

/// Collects the distinct structured metadata keys of a file's rows.
#[derive(Debug, Default)]
pub(crate) struct MetadataKeys {
    keys: std::collections::BTreeSet<String>,
    overflow: bool,
}

impl MetadataKeys {
    pub(crate) fn add(&mut self, key: &str) {
        if self.overflow || self.keys.contains(key) {
            return;
        }
        if self.keys.len() >= MAX_METADATA_KEYS {
            self.overflow = true;
            self.keys.clear();
            return;
        }
        self.keys.insert(key.to_owned());
    }

    pub(crate) fn finish(self) -> Option<Vec<String>> {
        (!self.overflow).then(|| self.keys.into_iter().collect())
    }

    /// The keys so far, `None` past the limit.
    pub(crate) fn keys(&self) -> Option<impl Iterator<Item = &str>> {
        (!self.overflow).then(|| self.keys.iter().map(String::as_str))
    }
}

impl ChunkMeta {
    /// The range of `id` in this file, if it has rows of it.
    pub fn stream(&self, id: StreamId) -> Option<&StreamRange> {
        self.streams
            .binary_search_by_key(&id, |s| s.id)
            .ok()
            .map(|i| &self.streams[i])
    }

    /// Calls `f` with the range of each stream among `ids` (sorted) whose rows in this file
    /// overlap `[start, end)`, matching by binary search on the smaller side (a selector
    /// over 100k streams and a file of 100 cost 100 lookups, and the other way round).
    pub fn for_each_overlapping(
        &self,
        ids: &[StreamId],
        start: i64,
        end: i64,
        mut f: impl FnMut(&StreamRange),
    ) {
        if ids.len() < self.streams.len() {
            for s in ids.iter().filter_map(|&id| self.stream(id)) {
                if s.overlaps(start, end) {
                    f(s);
                }
            }
        } else {
            for s in &self.streams {
                if ids.binary_search(&s.id).is_ok() && s.overlaps(start, end) {
                    f(s);
                }
            }
        }
    }

    /// Each stream's rows in this file, in the order of `streams` (by id), or `None` when
    /// the per-stream counts and first rows do not partition the file's rows (never
    /// written so). Streams are in file order ([`crate::order`]) with their first rows
    /// recorded, or, in files of older versions, in id order without them.
    pub fn stream_rows(&self) -> Option<Vec<Range<u64>>> {
        let mut out = Vec::with_capacity(self.streams.len());
        let mut offset = 0u64;
        let recorded = self.streams.first().is_some_and(|s| s.first_row.is_some());
        for s in &self.streams {
            let first = match (recorded, s.first_row) {
                (true, Some(first)) => first,
                (false, None) => offset,
                _ => return None,
            };
            out.push(first..first.checked_add(s.rows)?);
            offset = offset.checked_add(s.rows)?;
        }
        if offset != self.rows {
            return None;
        }
        if recorded {
            // Counts add up, so the ranges partition the rows iff none overlaps another.
            let mut sorted = out.clone();
            sorted.sort_unstable_by_key(|r| r.start);
            if sorted.windows(2).any(|w| w[0].end > w[1].start)
                || sorted.last().is_some_and(|r| r.end > self.rows)
            {
                return None;
            }
        }
        Some(out)
    }

    /// The row ranges (ascending, adjacent ones joined) of the streams among `ids`
    /// (sorted) whose rows in this file overlap `[start, end)`, found from the per-stream
    /// ranges without reading the file.
    pub fn stream_row_ranges(&self, ids: &[StreamId], start: i64, end: i64) -> Vec<Range<u64>> {
        let Some(rows) = self.stream_rows() else {
            // Ranges that do not add up (never written so): read every row instead.
            return std::iter::once(0..self.rows).collect();
        };
        let mut picked: Vec<Range<u64>> = self
            .streams
            .iter()
            .zip(rows)
            .filter(|(s, _)| ids.binary_search(&s.id).is_ok() && s.overlaps(start, end))
            .map(|(_, r)| r)
            .collect();
        picked.sort_unstable_by_key(|r| r.start);
        let mut out: Vec<Range<u64>> = Vec::with_capacity(picked.len());
        for r in picked {
            match out.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => out.push(r),
            }
        }
        out
    }

    /// Are the rows [`Self::stream_row_ranges`] gives for these arguments exactly the
    /// file's rows of `ids` in `[start, end)`: the per-stream ranges partition the file, and
    /// every selected stream's rows here lie inside the range. A reader then need not test
    /// stream ids or timestamps row by row.
    pub fn rows_exact(&self, ids: &[StreamId], start: i64, end: i64) -> bool {
        if self.stream_rows().is_none() {
            return false;
        }
        let mut inside = true;
        self.for_each_overlapping(ids, start, end, |s| {
            inside &= s.min_ts >= start && s.max_ts < end;
        });
        inside
    }

    /// Does this file hold rows of any of `ids` (sorted) in `[start, end)`?
    pub fn overlaps(&self, ids: &[StreamId], start: i64, end: i64) -> bool {
        if self.min_ts >= end || self.max_ts < start {
            return false;
        }
        ids.iter()
            .any(|&id| self.stream(id).is_some_and(|s| s.overlaps(start, end)))
    }
}

/// The chunk list of one tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// WAL segments below this number are fully in `chunks` for this tenant.
    pub flushed_wal_seq: u64,
    /// Chunk files.
    pub chunks: Vec<ChunkMeta>,
    /// Files replaced by compaction, deleted once `after_ms` (ms since the epoch) has
    /// passed. Recorded here so a restart still deletes them.
    #[serde(default)]
    pub pending_deletes: Vec<PendingDelete>,
    /// The newest entry of the tenant's hash chain of file-list changes ([`crate::chain`]);
    /// `None` before the first flush, and in manifests of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<crate::chain::ChainHead>,
    /// Delete requests being applied by the compactor: lines removed so far and the files
    /// known to be free of their rows ([`crate::erase`]), updated in the same write as the
    /// files they concern.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub deletes: std::collections::BTreeMap<String, crate::erase::DeleteProgress>,
    /// Chunk files taken out of the listing because their bytes no longer match their
    /// SHA-256 ([`crate::quarantine`]): scans over their streams and times say that rows
    /// are missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<Quarantined>,
}

/// A chunk file found damaged, as the manifest keeps it ([`crate::quarantine`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// The file's entry as it was listed (streams and times tell which queries miss rows).
    pub chunk: ChunkMeta,
    /// What was wrong, e.g. `SHA-256 is 3f…, the chain records 9a…`.
    pub reason: String,
    /// When it was found, ms since the epoch.
    pub at_ms: u64,
    /// Where its bytes were kept for inspection (`None`: the object was missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_at: Option<String>,
}

/// A chunk file no longer listed, waiting for in-flight queries before it is deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDelete {
    /// Object path.
    pub path: String,
    /// Delete at or after this time, ms since the epoch.
    pub after_ms: u64,
}

impl Manifest {
    /// Delete chunk file `c` and its block index, if it has one, once `after_ms` has
    /// passed (files just unlisted: queries still running may read them).
    pub fn delete_later(&mut self, c: &ChunkMeta, after_ms: u64) {
        self.pending_deletes.push(PendingDelete {
            path: c.path.clone(),
            after_ms,
        });
        if c.text_index_bytes.is_some() {
            self.pending_deletes.push(PendingDelete {
                path: crate::textindex::index_path(&c.path),
                after_ms,
            });
        }
    }
}

impl ChunkMeta {
    /// The time-window directory of the file (`<tenant>/<window start, s>`).
    pub fn window_dir(&self) -> &str {
        self.path.rsplit_once('/').map_or("", |(dir, _)| dir)
    }
}

/// Milliseconds since the epoch now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A manifest plus lookup structures derived from it; immutable, swapped whole.
#[derive(Debug, Default)]
pub struct ManifestState {
    /// The manifest.
    pub manifest: Manifest,
    /// Per stream, the time ranges it has in chunk files (quarantined ones included).
    pub stream_ranges: HashMap<StreamId, Vec<(i64, i64)>>,
}

impl ManifestState {
    /// Derive the lookups.
    pub fn new(manifest: Manifest) -> Arc<Self> {
        let mut stream_ranges: HashMap<StreamId, Vec<(i64, i64)>> = HashMap::new();
        // Quarantined files too: selectors still find their streams, and scans over them
        // report what they cannot read.
        let quarantined = manifest.quarantined.iter().map(|q| &q.chunk);
        for chunk in manifest.chunks.iter().chain(quarantined) {
            for s in &chunk.streams {
                stream_ranges
                    .entry(s.id)
                    .or_default()
                    .push((s.min_ts, s.max_ts));
            }
        }
        Arc::new(ManifestState {
            manifest,
            stream_ranges,
        })
    }

    /// Does the stream have chunk data in `[start, end)`?
    pub fn stream_has_data(&self, id: StreamId, start: i64, end: i64) -> bool {
        self.stream_ranges
            .get(&id)
            .is_some_and(|r| r.iter().any(|&(lo, hi)| lo < end && hi >= start))
    }
}

/// One path segment for a tenant: `[A-Za-z0-9_-]` kept, everything else `%XX`, so any
/// tenant id maps to a distinct, safe directory name.
pub fn tenant_dir(tenant: &str) -> String {
    let mut out = String::with_capacity(tenant.len());
    for b in tenant.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

fn os_err(path: &ObjectPath, source: object_store::Error) -> Error {
    Error::ObjectStore {
        path: path.to_string(),
        source,
    }
}

fn manifest_path(tenant: &str) -> ObjectPath {
    ObjectPath::from(format!("{}/manifest.json", tenant_dir(tenant)))
}

fn tenants_path() -> ObjectPath {
    ObjectPath::from("tenants.json")
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TenantList {
    version: u32,
    tenants: Vec<String>,
}

async fn get_json<T: for<'de> Deserialize<'de>>(
    store: &dyn ObjectStore,
    path: &ObjectPath,
) -> Result<Option<T>> {
    match store.get(path).await {
        Ok(got) => {
            let bytes = got.bytes().await.map_err(|e| os_err(path, e))?;
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    path: path.to_string(),
                    detail: e.to_string(),
                })
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(os_err(path, e)),
    }
}

async fn put_json<T: Serialize>(
    store: &dyn ObjectStore,
    path: &ObjectPath,
    value: &T,
) -> Result<()> {
    let body = serde_json::to_vec(value).map_err(|e| Error::Internal(e.to_string()))?;
    store
        .put(path, PutPayload::from(body))
        .await
        .map_err(|e| os_err(path, e))?;
    Ok(())
}

/// The tenants that have manifests.
pub async fn load_tenants(store: &dyn ObjectStore) -> Result<Vec<String>> {
    let list: Option<TenantList> = get_json(store, &tenants_path()).await?;
    Ok(list.map(|l| l.tenants).unwrap_or_default())
}

/// Record the tenant list.
pub async fn save_tenants(store: &dyn ObjectStore, tenants: &[String]) -> Result<()> {
    let list = TenantList {
        version: MANIFEST_VERSION,
        tenants: tenants.to_vec(),
    };
    put_json(store, &tenants_path(), &list).await
}

/// A tenant's manifest (empty when it has none yet).
pub async fn load(store: &dyn ObjectStore, tenant: &str) -> Result<Manifest> {
    let path = manifest_path(tenant);
    let manifest: Manifest = get_json(store, &path).await?.unwrap_or_default();
    if manifest.version > MANIFEST_VERSION {
        return Err(Error::Corrupt {
            path: path.to_string(),
            detail: format!(
                "manifest version {} is newer than this build",
                manifest.version
            ),
        });
    }
    Ok(manifest)
}

/// Replace a tenant's manifest.
pub async fn save(store: &dyn ObjectStore, tenant: &str, manifest: &Manifest) -> Result<()> {
    put_json(store, &manifest_path(tenant), manifest).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[test]
    fn a_range_takes_the_share_of_the_stream_span_it_covers() {
        let s = StreamRange {
            id: 1,
            min_ts: 100,
            max_ts: 300,
            rows: 10,
            line_bytes: 1000,
            first_row: None,
        };
        // Whole, outside, halves (the range end is exclusive), a quarter inside.
        assert_eq!(s.share_in(0, 1000), 1.0);
        assert_eq!(s.share_in(100, 301), 1.0);
        assert_eq!(s.share_in(301, 400), 0.0);
        assert_eq!(s.share_in(0, 100), 0.0);
        assert_eq!(s.share_in(100, 201), 0.5);
        assert_eq!(s.share_in(200, 400), 0.5);
        assert_eq!(s.share_in(150, 201), 0.25);
        // One timestamp: all or nothing.
        let one = StreamRange {
            min_ts: 5,
            max_ts: 5,
            ..s.clone()
        };
        assert_eq!(one.share_in(0, 6), 1.0);
        assert_eq!(one.share_in(0, 5), 0.0);
        // Extreme timestamps do not overflow.
        let wide = StreamRange {
            min_ts: i64::MIN,
            max_ts: i64::MAX,
            ..s
        };
        assert!((wide.share_in(0, i64::MAX) - 0.5).abs() < 1e-9);
    }

    fn chunk() -> ChunkMeta {
        ChunkMeta {
            path: "fake/0/1.parquet".into(),
            size: 10,
            min_ts: 100,
            max_ts: 300,
            rows: 3,
            streams: vec![
                StreamRange {
                    id: 1,
                    min_ts: 100,
                    max_ts: 150,
                    rows: 2,
                    line_bytes: 4,
                    first_row: None,
                },
                StreamRange {
                    id: 7,
                    min_ts: 250,
                    max_ts: 300,
                    rows: 1,
                    line_bytes: 2,
                    first_row: None,
                },
            ],
            compacted: false,
            created_ms: 0,
            text_index_bytes: None,
            metadata_keys: Some(Vec::new()),
            sha256: None,
            text_index_sha256: None,
        }
    }

    #[test]
    fn stream_row_ranges_follow_the_per_stream_counts() {
        let mut c = chunk();
        assert_eq!(c.stream_row_ranges(&[7], 0, 1000), vec![2..3]);
        assert_eq!(c.stream_row_ranges(&[1, 7], 0, 1000), vec![0..3]);
        assert!(c.stream_row_ranges(&[1], 200, 1000).is_empty());
        // Counts that do not add up to the file's rows: every row.
        c.rows = 4;
        assert_eq!(c.stream_row_ranges(&[7], 0, 1000), vec![0..4]);
    }

    #[test]
    fn rows_are_exact_only_for_streams_wholly_inside_the_range() {
        let mut c = chunk();
        let (s1, s7) = (c.streams[0].clone(), c.streams[1].clone());
        assert!(c.rows_exact(&[1, 7], s1.min_ts.min(s7.min_ts), 1000));
        // A selected stream whose rows straddle either end of the range.
        assert!(!c.rows_exact(&[7], s7.min_ts + 1, 1000));
        assert!(!c.rows_exact(&[7], 0, s7.max_ts));
        // Streams left out of the selection do not matter.
        assert!(c.rows_exact(&[7], s7.min_ts, s7.max_ts + 1));
        // Counts that do not add up: the ranges read are the whole file.
        c.rows = 4;
        assert!(!c.rows_exact(&[7], 0, 1000));
    }

    #[test]
    fn recorded_first_rows_place_streams_out_of_id_order() {
        let mut c = chunk();
        // Stream 7 first, then stream 1.
        c.streams[0].first_row = Some(1);
        c.streams[1].first_row = Some(0);
        assert_eq!(c.stream_rows(), Some(vec![1..3, 0..1]));
        assert_eq!(c.stream_row_ranges(&[1], 0, 1000), vec![1..3]);
        assert_eq!(c.stream_row_ranges(&[7], 0, 1000), vec![0..1]);
        assert_eq!(c.stream_row_ranges(&[1, 7], 0, 1000), vec![0..3]);
        // Overlapping, out-of-file or partly recorded ranges: every row.
        c.streams[1].first_row = Some(2);
        assert_eq!(c.stream_rows(), None);
        assert_eq!(c.stream_row_ranges(&[7], 0, 1000), vec![0..3]);
        c.streams[1].first_row = Some(3);
        c.streams[0].first_row = Some(0);
        assert_eq!(c.stream_rows(), None);
        c.streams[1].first_row = None;
        assert_eq!(c.stream_rows(), None);
    }

    #[test]
    fn metadata_keys_are_listed_up_to_a_limit() {
        let mut k = MetadataKeys::default();
        for key in ["trace_id", "span_id", "trace_id"] {
            k.add(key);
        }
        assert_eq!(
            k.finish(),
            Some(vec!["span_id".to_string(), "trace_id".to_string()])
        );
        let mut k = MetadataKeys::default();
        for i in 0..=MAX_METADATA_KEYS {
            k.add(&format!("k{i}"));
        }
        assert_eq!(k.finish(), None);
    }

    #[test]
    fn overlap_uses_per_stream_ranges() {
        let c = chunk();
        assert!(c.overlaps(&[1], 0, 101));
        assert!(!c.overlaps(&[1], 151, 1000));
        assert!(c.overlaps(&[1, 7], 151, 1000));
        assert!(!c.overlaps(&[2], 0, 1000));
        assert!(!c.overlaps(&[7], 301, 1000));
    }

    #[test]
    fn tenant_dirs_are_safe_and_distinct() {
        assert_eq!(tenant_dir("fake"), "fake");
        assert_eq!(tenant_dir("a/b"), "a%2Fb");
        assert_eq!(tenant_dir(".."), "%2E%2E");
        assert_ne!(tenant_dir("a%2Fb"), tenant_dir("a/b"));
    }

    #[tokio::test]
    async fn manifest_round_trips_and_corruption_is_reported() -> Result<()> {
        let store = InMemory::new();
        assert_eq!(load(&store, "t").await?, Manifest::default());
        let m = Manifest {
            version: 1,
            flushed_wal_seq: 9,
            chunks: vec![chunk()],
            pending_deletes: vec![PendingDelete {
                path: "fake/0/0.parquet".into(),
                after_ms: 5,
            }],
            chain: Some(crate::chain::ChainHead {
                seq: 3,
                hash: crate::chain::ZERO_HASH.into(),
            }),
            ..Manifest::default()
        };
        save(&store, "t", &m).await?;
        assert_eq!(load(&store, "t").await?, m);
        store
            .put(&manifest_path("t"), PutPayload::from_static(b"{not json"))
            .await
            .map_err(|e| os_err(&manifest_path("t"), e))?;
        assert!(matches!(
            load(&store, "t").await,
            Err(Error::Corrupt { .. })
        ));
        Ok(())
    }
}
