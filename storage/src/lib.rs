//! tovlog's storage engine: write-ahead log, in-memory head, Parquet chunks on
//! `object_store`, a tantivy label index and a manifest of chunk files.
//!
//! ```text
//!  append(tenant, streams) ──► WAL (group commit, fsync) ──► head (per tenant, per stream)
//!                                                              │ size/age threshold
//!                                                              ▼
//!                       Parquet chunk (zstd, grouped by stream, ts) on object_store
//!                       + manifest edit + label index update, then WAL truncation
//!                                                              │ window quiet for a minute
//!                                                              ▼
//!                       compaction: merge window, zstd 17, trigram block index (.tri)
//!
//!  every manifest edit of a flush or compaction: SHA-256 of each written file + an entry of
//!  the tenant's hash chain (chain.rs), checked offline by `chain::verify` (`tovlog verify`)
//!
//!  series()/label_names()/label_values()  ◄── label index + head
//!  logs_table(tenant) : a DataFusion plan over head + chunks (stream/time pruning)
//! ```
//!
//! It knows DataFusion, Parquet and tantivy, but nothing of HTTP or LogQL syntax.
#![warn(missing_docs)]

pub mod chain;
pub mod chunk;
pub mod head;
pub mod index;
pub mod lease;
pub mod manifest;
pub mod model;
pub mod order;
pub mod quarantine;
pub mod replica;
pub mod scan;
pub mod schema;
pub mod store;
pub mod textindex;
pub mod wal;

mod compact;
mod flush;
mod objects;
mod streams_log;

pub use model::{Entry, LabelSet, MatchOp, Matcher, PushStream, Series, StreamId, TenantId};
pub mod config;
pub mod erase;
pub mod error;
pub mod fault;

pub use config::StorageConfig;
pub use error::{Error, Result};

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use datafusion_datasource_parquet::ParquetFileReaderFactory;
use datafusion_execution::object_store::ObjectStoreUrl;
use datafusion_execution::runtime_env::RuntimeEnv;
use datafusion_execution::TaskContext;
use object_store::ObjectStore;
use parking_lot::RwLock;
use tokio::sync::Notify;

use head::Head;
use index::LabelIndex;
use manifest::ManifestState;
use scan::LogsTable;
use wal::Wal;

/// What one `append` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendSummary {
    /// Entries newly stored.
    pub entries: u64,
    /// Entries skipped as exact duplicates (same stream, timestamp and line).
    pub duplicates: u64,
    /// Bytes of log lines newly stored.
    pub bytes: u64,
}

/// What a scan reads: exactly these streams in `[start_ns, end_ns)`.
#[derive(Debug, Clone)]
pub struct ScanRequest {
    /// Tenant.
    pub tenant: String,
    /// Streams to read (from [`Storage::series`]).
    pub streams: Vec<StreamId>,
    /// Inclusive start, ns.
    pub start_ns: i64,
    /// Exclusive end, ns.
    pub end_ns: i64,
}

/// Per-stream volume in a time range (for `index/stats` and `index/volume`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamVolume {
    /// The stream.
    pub series: Series,
    /// Entries in range.
    pub entries: u64,
    /// Bytes of lines in range.
    pub bytes: u64,
    /// Chunk files holding them (head counts as one).
    pub chunks: u64,
}

/// Keep decompression buffers in the heap. Every Parquet page read allocates a buffer of
/// its uncompressed size (up to a few MiB); glibc serves blocks that large with a fresh
/// `mmap`, so each page read paid for page faults on every 4 KiB and an `munmap` (a fifth
/// of a query's CPU time). With a 32 MiB mmap threshold the freed buffers are reused; the
/// trim threshold keeps glibc from handing the heap top back after every query (the
/// compactor still trims after each window). Call once at start-up, before threads start.
/// A no-op off glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc allocator parameters; called before other threads
    // exist, with valid parameter numbers and values.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// Point-in-time figures for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct StorageMetrics {
    /// Bytes currently in WAL segments.
    pub wal_bytes: u64,
    /// Head flushes completed.
    pub flushes: u64,
    /// Head flush attempts that failed (each is retried).
    pub flush_failures: u64,
    /// Whether the last flush attempt failed (the object store unreachable, say).
    pub flush_failing: bool,
    /// Chunk files in all manifests.
    pub chunk_files: u64,
    /// Bytes of all chunk files.
    pub chunk_bytes: u64,
    /// Bytes held in the head.
    pub head_bytes: u64,
    /// Entries held in the head.
    pub head_entries: u64,
    /// Chunk files selected by scans so far (after manifest pruning).
    pub scan_chunk_files: u64,
    /// Chunk files whose rows scans took from the decoded recent rows instead.
    pub scan_recent_files: u64,
    /// Bytes of decoded recent rows held (`head.recent_bytes` at most).
    pub recent_bytes: u64,
    /// Label sets indexed in the label indexes of all tenants.
    pub indexed_streams: u64,
    /// Chunk files written by a flush and not compacted yet.
    pub uncompacted_files: u64,
    /// Windows compacted so far.
    pub compactions: u64,
    /// Windows waiting for compaction at the last compactor pass.
    pub compaction_pending: u64,
    /// Replaced chunk files waiting for deletion.
    pub pending_deletes: u64,
    /// Chunk files quarantined by this process ([`quarantine`]).
    pub quarantined_files: u64,
    /// Chunk files the manifests list as quarantined.
    pub quarantined_listed: u64,
    /// Block indexes this process found damaged.
    pub damaged_indexes: u64,
    /// Tenants whose label index was found damaged at start, set aside and rebuilt from
    /// the bucket.
    pub label_indexes_rebuilt: u64,
}

/// One tenant's state.
pub(crate) struct Tenant {
    pub(crate) name: String,
    /// Object path prefix ([`manifest::tenant_dir`]).
    pub(crate) dir: String,
    pub(crate) head: RwLock<Head>,
    /// Heads being flushed, oldest first, with the WAL segment number they end before.
    /// Lock order everywhere: `frozen`, then `head`, then `manifest`.
    pub(crate) frozen: RwLock<Vec<(u64, Arc<Head>)>>,
    pub(crate) manifest: RwLock<Arc<ManifestState>>,
    pub(crate) index: LabelIndex,
    /// The tenant's label objects in the bucket ([`streams_log`]).
    pub(crate) streams_log: streams_log::StreamsLog,
}

impl Tenant {
    fn open(
        data_dir: &std::path::Path,
        name: &str,
        manifest: manifest::Manifest,
    ) -> Result<Tenant> {
        let dir = manifest::tenant_dir(name);
        let index = LabelIndex::open(&data_dir.join("index").join(&dir))?;
        Ok(Tenant {
            name: name.to_string(),
            dir,
            head: RwLock::new(Head::default()),
            frozen: RwLock::new(Vec::new()),
            manifest: RwLock::new(ManifestState::new(manifest)),
            index,
            streams_log: streams_log::StreamsLog::default(),
        })
    }

    /// Streams matching `matchers` with data in `[start, end)`, from head, frozen heads and
    /// chunks (via the label index and the manifest's per-stream ranges).
    fn matching_streams(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<HashMap<StreamId, Arc<LabelSet>>> {
        let mut out: HashMap<StreamId, Arc<LabelSet>> = HashMap::new();
        let manifest = {
            let frozen = self.frozen.read();
            let head = self.head.read();
            let heads = std::iter::once(&*head).chain(frozen.iter().map(|(_, h)| h.as_ref()));
            for h in heads {
                for (id, s) in h.streams() {
                    if out.contains_key(&id) {
                        continue;
                    }
                    let in_range = s
                        .time_range()
                        .is_some_and(|(lo, hi)| lo < end && hi >= start);
                    if in_range && matchers.iter().all(|m| m.matches_labels(&s.labels)) {
                        out.insert(id, s.labels.clone());
                    }
                }
            }
            self.manifest.read().clone()
        };
        if !manifest.stream_ranges.is_empty() {
            for (id, labels) in self.index.lookup(matchers)? {
                if !out.contains_key(&id) && manifest.stream_has_data(id, start, end) {
                    out.insert(id, labels);
                }
            }
        }
        Ok(out)
    }
}

/// Shared state behind [`Storage`] (the background flusher holds a weak reference).
pub(crate) struct Inner {
    pub(crate) config: StorageConfig,
    pub(crate) wal: Wal,
    /// Appends hold it shared across WAL write + head insert; a flush takes it exclusively
    /// to rotate the WAL and freeze heads, so no acknowledged entry can sit in an old
    /// segment while missing from the frozen heads.
    pub(crate) gate: tokio::sync::RwLock<()>,
    pub(crate) flush_lock: tokio::sync::Mutex<()>,
    /// Serialises manifest edits (flush publishing, compaction swapping, deletions).
    pub(crate) manifest_lock: tokio::sync::Mutex<()>,
    pub(crate) tenants: RwLock<HashMap<String, Arc<Tenant>>>,
    pub(crate) listed_tenants: tokio::sync::Mutex<Vec<String>>,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) store_url: ObjectStoreUrl,
    pub(crate) closed: AtomicBool,
    pub(crate) flush_notify: Arc<Notify>,
    /// Woken whenever a flush releases head memory; stalled appends wait on it.
    pub(crate) head_space: Notify,
    pub(crate) flushes: AtomicU64,
    /// Failed flush attempts so far.
    pub(crate) flush_failures: AtomicU64,
    /// Why the last flush attempt failed; `None` once one succeeds. While set, a push that
    /// finds the head full is refused at once instead of waiting.
    pub(crate) flush_failure: parking_lot::Mutex<Option<String>>,
    pub(crate) head_bytes: AtomicU64,
    pub(crate) head_entries: AtomicU64,
    pub(crate) scan_chunk_files: AtomicU64,
    pub(crate) compactions: AtomicU64,
    pub(crate) compaction_pending: AtomicU64,
    pub(crate) text_indexes: Arc<scan::TextIndexCache>,
    /// Rows line-filtered deletes remove, per (chunk file, request).
    pub(crate) erased_rows: Arc<erase::ErasedRowsCache>,
    /// Recent rows of chunk files, decoded.
    pub(crate) recent_rows: Arc<scan::RecentRows>,
    /// Opens chunk files for scans, keeping their parsed footers and page indexes.
    pub(crate) parquet_readers: Arc<dyn ParquetFileReaderFactory>,
    /// Computes the `line_flags` column of compacted files.
    pub(crate) line_flags: Option<schema::LineClassifier>,
    /// Reports rows' fields for the block statistics of compacted files.
    pub(crate) fields: Option<schema::FieldExtractor>,
    /// Whether this process may write the store now (reader role, lost or stale lease).
    pub(crate) guard: Arc<lease::WriteGuard>,
    /// The writer lease, when held.
    pub(crate) lease: Option<Arc<lease::Lease>>,
    /// Retention and delete requests ([`erase`]).
    pub(crate) erase: erase::Eraser,
    /// Damage checks and quarantined files ([`quarantine`]).
    pub(crate) quarantine: quarantine::QuarantineState,
}

/// Memory for parsed chunk-file footers and page indexes (a few KiB to a few hundred KiB
/// per file); least recently used ones go first.
const PARQUET_METADATA_CACHE_BYTES: usize = 64 << 20;

impl Inner {
    fn tenant(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenants.read().get(name).cloned()
    }

    fn tenant_or_create(&self, name: &str) -> Result<Arc<Tenant>> {
        if let Some(t) = self.tenant(name) {
            return Ok(t);
        }
        let mut tenants = self.tenants.write();
        if let Some(t) = tenants.get(name) {
            return Ok(t.clone());
        }
        let t = Arc::new(Tenant::open(
            &self.config.data_dir,
            name,
            manifest::Manifest::default(),
        )?);
        tenants.insert(name.to_string(), t.clone());
        Ok(t)
    }
}

/// The storage engine handle. Cheap to share (`Arc<Storage>`).
pub struct Storage {
    inner: Arc<Inner>,
    /// Background flusher and compactor.
    tasks: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Storage {
    fn drop(&mut self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

impl Storage {
    /// Open the store: create directories, replay the WAL into the head, load manifests and
    /// label indexes, start the background flusher.
    pub async fn open(config: StorageConfig) -> Result<Arc<Storage>> {
        Self::open_with(config, None).await
    }

    /// [`Storage::open`] with a classifier for the `line_flags` column of compacted files
    /// (see [`schema`]).
    pub async fn open_with(
        config: StorageConfig,
        line_flags: Option<schema::LineClassifier>,
    ) -> Result<Arc<Storage>> {
        Self::open_with_fields(config, line_flags, None).await
    }

    /// [`Storage::open_with`] with a field extractor for the block statistics of
    /// compacted files (see [`textindex`]).
    pub async fn open_with_fields(
        config: StorageConfig,
        line_flags: Option<schema::LineClassifier>,
        fields: Option<schema::FieldExtractor>,
    ) -> Result<Arc<Storage>> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| Error::Io {
            path: config.data_dir.clone(),
            source: e,
        })?;
        let raw_store = store::build(&config)?;
        let reader = config.role == replica::Role::Reader;
        // Before anything writes: a reader's store refuses writes; a writer takes the lease.
        let (guard, lease) = if reader {
            (
                Arc::new(lease::WriteGuard::read_only(replica::READ_ONLY)),
                None,
            )
        } else if config.lease.enabled {
            let guard = Arc::new(lease::WriteGuard::default());
            let node = lease::node_id(&config.data_dir)?;
            let lease =
                lease::Lease::acquire(raw_store.clone(), guard.clone(), &node, config.lease.ttl.0)
                    .await?;
            (guard, Some(lease))
        } else {
            (Arc::new(lease::WriteGuard::default()), None)
        };
        let store: Arc<dyn ObjectStore> =
            Arc::new(lease::GuardedStore::new(raw_store, guard.clone()));
        let store_url = store::chunk_store_url()?;
        let listed = manifest::load_tenants(store.as_ref()).await?;
        let mut tenants: HashMap<String, Arc<Tenant>> = HashMap::new();
        for name in &listed {
            let mut m = manifest::load(store.as_ref(), name).await?;
            if !reader {
                chain::open_tenant(store.as_ref(), name, &mut m).await?;
            }
            let t = Arc::new(Tenant::open(&config.data_dir, name, m)?);
            // The label index is a cache of the bucket's label objects.
            streams_log::open_tenant(store.as_ref(), &t, !reader).await?;
            tenants.insert(name.clone(), t);
        }

        // WAL replay is blocking file I/O.
        let wal_dir: PathBuf = config.data_dir.join("wal");
        let wal_config = config.wal.clone();
        let data_dir = config.data_dir.clone();
        let (wal, tenants) = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut tenants = tenants;
            let mut skipped = 0u64;
            let (wal, _stats) = Wal::open(&wal_dir, &wal_config, |seq, tenant, streams| {
                let t = match tenants.get(&tenant) {
                    Some(t) => t.clone(),
                    None => {
                        let t = Arc::new(Tenant::open(
                            &data_dir,
                            &tenant,
                            manifest::Manifest::default(),
                        )?);
                        tenants.insert(tenant.clone(), t.clone());
                        t
                    }
                };
                if seq < t.manifest.read().manifest.flushed_wal_seq {
                    skipped += 1;
                    return Ok(());
                }
                t.head.write().append(streams);
                Ok(())
            })?;
            if skipped > 0 {
                tracing::info!(records = skipped, "WAL records already in chunks skipped");
            }
            Ok((wal, tenants))
        })
        .await
        .map_err(|e| Error::Internal(format!("WAL replay task failed: {e}")))??;

        let (mut bytes, mut entries) = (0u64, 0u64);
        for t in tenants.values() {
            let h = t.head.read();
            bytes += h.bytes() as u64;
            entries += h.entries() as u64;
        }
        let text_indexes = Arc::new(scan::TextIndexCache::new(store.clone(), 256 << 20));
        let parquet_readers: Arc<dyn ParquetFileReaderFactory> = Arc::new(scan::ChunkReaders::new(
            store.clone(),
            PARQUET_METADATA_CACHE_BYTES,
        ));
        // At most 24 bytes a row: 1M rows is under 24 MiB, passed only by pending deletes
        // that remove over a million lines (each query then finds its rows again).
        let erased_rows = Arc::new(erase::ErasedRowsCache::new(
            parquet_readers.clone(),
            text_indexes.clone(),
            1 << 20,
        ));
        let recent_rows = Arc::new(scan::RecentRows::new(
            parquet_readers.clone(),
            config.head.recent_window.0,
            usize::try_from(config.head.recent_bytes.0).unwrap_or(usize::MAX),
        ));
        let inner = Arc::new(Inner {
            config,
            wal,
            gate: tokio::sync::RwLock::new(()),
            flush_lock: tokio::sync::Mutex::new(()),
            manifest_lock: tokio::sync::Mutex::new(()),
            tenants: RwLock::new(tenants),
            listed_tenants: tokio::sync::Mutex::new(listed),
            store,
            store_url,
            closed: AtomicBool::new(false),
            flush_notify: Arc::new(Notify::new()),
            head_space: Notify::new(),
            flushes: AtomicU64::new(0),
            flush_failures: AtomicU64::new(0),
            flush_failure: parking_lot::Mutex::new(None),
            head_bytes: AtomicU64::new(bytes),
            head_entries: AtomicU64::new(entries),
            scan_chunk_files: AtomicU64::new(0),
            compactions: AtomicU64::new(0),
            compaction_pending: AtomicU64::new(0),
            text_indexes,
            erased_rows,
            recent_rows,
            parquet_readers,
            line_flags,
            fields,
            guard,
            lease,
            erase: erase::Eraser::default(),
            quarantine: quarantine::QuarantineState::default(),
        });
        // Delete requests apply to every query, a replica's too.
        inner.erase.load(inner.store.as_ref()).await?;
        if reader {
            let interval = inner.config.replica.poll_interval.0;
            let task = tokio::spawn(replica::run_follower(Arc::downgrade(&inner), interval));
            return Ok(Arc::new(Storage {
                inner,
                tasks: parking_lot::Mutex::new(vec![task]),
            }));
        }
        // Before any flush or compaction writes: files of interrupted writes go.
        if let Err(e) = inner.remove_orphans().await {
            tracing::error!(error = %e, "orphan chunk cleanup failed; continuing");
        }
        let mut tasks = vec![tokio::spawn(flush::run_flusher(Arc::downgrade(&inner)))];
        if inner.config.compaction.enabled {
            tasks.push(tokio::spawn(compact::run_compactor(Arc::downgrade(&inner))));
        }
        if let Some(lease) = &inner.lease {
            let interval = inner.config.lease.renew_interval.0;
            tasks.push(tokio::spawn(lease::run_heartbeat(lease.clone(), interval)));
        }
        Ok(Arc::new(Storage {
            inner,
            tasks: parking_lot::Mutex::new(tasks),
        }))
    }

    /// Durably append validated streams for a tenant: when this returns `Ok`, the entries
    /// are in the fsynced WAL (unless fsync is disabled) and visible to queries.
    pub async fn append(&self, tenant: &str, streams: Vec<PushStream>) -> Result<AppendSummary> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        inner.guard.check_storage()?;
        if streams.iter().all(|s| s.entries.is_empty()) {
            return Ok(AppendSummary::default());
        }
        inner.wait_for_head_space().await?;
        let t = inner.tenant_or_create(tenant)?;
        let frame = wal::segment::encode_append(tenant, &streams);
        let summary = {
            let _gate = inner.gate.read().await;
            inner.wal.append(frame).await?;
            let mut head = t.head.write();
            let (bytes_before, entries_before) = (head.bytes(), head.entries());
            let summary = head.append(streams);
            inner
                .head_bytes
                .fetch_add((head.bytes() - bytes_before) as u64, Ordering::Relaxed);
            inner
                .head_entries
                .fetch_add((head.entries() - entries_before) as u64, Ordering::Relaxed);
            summary
        };
        if inner.head_bytes.load(Ordering::Relaxed) >= inner.config.head.max_bytes.0 {
            inner.flush_notify.notify_one();
        }
        Ok(summary)
    }

    /// Which of `ids` the tenant's head holds (the streams appended to since its last
    /// flush) and, when some are missing, how many streams it holds (`None` when all are
    /// there: counting takes a pass over the head). Read-only; what the per-tenant active
    /// stream limit counts.
    pub fn head_streams(&self, tenant: &str, ids: &[StreamId]) -> (Vec<bool>, Option<usize>) {
        let Some(t) = self.inner.tenant(tenant) else {
            return (vec![false; ids.len()], Some(0));
        };
        let head = t.head.read();
        let present: Vec<bool> = ids.iter().map(|id| head.stream(*id).is_some()).collect();
        let count = present.iter().any(|p| !p).then(|| head.streams().count());
        (present, count)
    }

    /// Streams of a tenant matching all `matchers` with data in `[start_ns, end_ns)`.
    pub fn series(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<Series>> {
        let Some(t) = self.inner.tenant(tenant) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<Series> = self
            .inner
            .visible_streams(&t, matchers, start_ns, end_ns)?
            .into_iter()
            .map(|(id, (labels, _))| Series {
                id,
                labels: (*labels).clone(),
            })
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// Label names of the matching streams (all streams when `matchers` is empty), sorted.
    pub fn label_names(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<String>> {
        let Some(t) = self.inner.tenant(tenant) else {
            return Ok(Vec::new());
        };
        let names: BTreeSet<String> = self
            .inner
            .visible_streams(&t, matchers, start_ns, end_ns)?
            .values()
            .flat_map(|(l, _)| l.pairs().iter().map(|(k, _)| k.clone()))
            .collect();
        Ok(names.into_iter().collect())
    }

    /// Values of label `name` over the matching streams (all when `matchers` is empty), sorted.
    pub fn label_values(
        &self,
        tenant: &str,
        name: &str,
        matchers: &[Matcher],
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<String>> {
        let Some(t) = self.inner.tenant(tenant) else {
            return Ok(Vec::new());
        };
        let values: BTreeSet<String> = self
            .inner
            .visible_streams(&t, matchers, start_ns, end_ns)?
            .values()
            .filter_map(|(l, _)| l.get(name).filter(|v| !v.is_empty()).map(str::to_string))
            .collect();
        Ok(values.into_iter().collect())
    }

    /// Entries and bytes per matching stream in the range. Head data is counted exactly;
    /// a chunk file's rows of the stream count with the share of the stream's time span in
    /// the file that the range covers ([`manifest::StreamRange::share_in`], as Loki's index
    /// prorates chunks), so only files the range cuts are estimated. Where a retention
    /// cut-off falls inside a stream's span in a file, its rows there are counted exactly
    /// (read once and kept), so expired rows never count.
    pub async fn volumes(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<StreamVolume>> {
        let Some(t) = self.inner.tenant(tenant) else {
            return Ok(Vec::new());
        };
        let streams = self.inner.visible_streams(&t, matchers, start_ns, end_ns)?;
        let mut out = Vec::with_capacity(streams.len());
        // Counted from rows after the locks are released: (slot in `out`, the stream's rows
        // in a file, its cut-off).
        let mut exact: Vec<(usize, erase::FileStream, i64)> = Vec::new();
        {
            let frozen = t.frozen.read();
            let head = t.head.read();
            let manifest = t.manifest.read().clone();
            for (id, (labels, from)) in streams {
                let (mut entries, mut bytes, mut chunks) = (0u64, 0u64, 0u64);
                let mut in_head = false;
                for h in std::iter::once(&*head).chain(frozen.iter().map(|(_, h)| h.as_ref())) {
                    let (n, b) = h.volume(id, from, end_ns);
                    entries += n;
                    bytes += b;
                    in_head |= n > 0;
                }
                chunks += u64::from(in_head);
                for c in &manifest.manifest.chunks {
                    if let Some(s) = c.stream(id) {
                        if !s.overlaps(from, end_ns) {
                            continue;
                        }
                        chunks += 1;
                        if from > start_ns && s.min_ts < from {
                            let file = erase::FileStream {
                                path: c.path.clone(),
                                size: c.size,
                                file_rows: c.rows,
                                ranges: c.stream_row_ranges(&[id], i64::MIN, i64::MAX),
                                stream: id,
                            };
                            exact.push((out.len(), file, from));
                            continue;
                        }
                        let share = s.share_in(from, end_ns);
                        // Truncated, as Loki truncates its prorated counts.
                        entries += (s.rows as f64 * share) as u64;
                        bytes += (s.line_bytes as f64 * share) as u64;
                    }
                }
                out.push(StreamVolume {
                    series: Series {
                        id,
                        labels: (*labels).clone(),
                    },
                    entries,
                    bytes,
                    chunks,
                });
            }
        }
        for (slot, file, from) in exact {
            let (n, b) = self
                .inner
                .erased_rows
                .stream_volume(&file, from, end_ns)
                .await?;
            if let Some(v) = out.get_mut(slot) {
                v.entries += n;
                v.bytes += b;
            }
        }
        out.sort_by(|a, b| a.series.labels.cmp(&b.series.labels));
        Ok(out)
    }

    /// The rows of the requested streams and time range over head and chunks (schema
    /// [`schema::logs_schema`]); stream and time restrictions are applied inside its scan
    /// (Parquet pruning by manifest, row-group statistics and page index).
    pub fn logs_table(&self, request: ScanRequest) -> Result<LogsTable> {
        let ScanRequest {
            tenant,
            mut streams,
            start_ns,
            end_ns,
        } = request;
        streams.sort_unstable();
        streams.dedup();
        let url = self.inner.store_url.clone();
        let Some(t) = self.inner.tenant(&tenant) else {
            return Ok(LogsTable::new(
                streams,
                start_ns,
                end_ns,
                Vec::new(),
                Vec::new(),
                url,
            ));
        };
        if streams.is_empty() || start_ns >= end_ns {
            return Ok(LogsTable::new(
                streams,
                start_ns,
                end_ns,
                Vec::new(),
                Vec::new(),
                url,
            ));
        }
        // Expired and deleted rows (`None`, the common case: nothing to leave out).
        let erase = self.inner.erase_filter(&t, &streams, start_ns, end_ns);
        if let Some(e) = &erase {
            streams.retain(|&id| !e.gone(id, end_ns));
        }
        let mut batches = Vec::new();
        let manifest = {
            let frozen = t.frozen.read();
            let head = t.head.read();
            for h in std::iter::once(&*head).chain(frozen.iter().map(|(_, h)| h.as_ref())) {
                if let Some(b) = h.snapshot(&streams, start_ns, end_ns)? {
                    match &erase {
                        Some(e) => batches.push(e.filter_batch(b)?),
                        None => batches.push(b),
                    }
                }
            }
            t.manifest.read().clone()
        };
        let mut files: Vec<scan::ChunkFile> = erase::select_files(
            &manifest,
            &streams,
            start_ns,
            end_ns,
            erase.as_ref(),
            &self.inner.erased_rows,
            &|id| t.labels_of(id),
        );
        // Damaged files: quarantined ones are no longer listed; a replica leaves out those
        // it found damaged itself. Either way the scan says what it misses.
        let unreadable = self.inner.quarantine.unreadable(&tenant);
        if !unreadable.is_empty() {
            files.retain(|f| !unreadable.iter().any(|q| q.chunk.path == f.path));
        }
        let skipped = quarantine::skipped_in(
            manifest.manifest.quarantined.iter().chain(&unreadable),
            &streams,
            start_ns,
            end_ns,
        );
        self.inner
            .scan_chunk_files
            .fetch_add(files.len() as u64, Ordering::Relaxed);
        Ok(
            LogsTable::new(streams, start_ns, end_ns, batches, files, url)
                .with_skipped(skipped)
                .with_parquet_readers(self.inner.parquet_readers.clone())
                .with_erased_rows(self.inner.erased_rows.clone())
                .with_recent_rows(self.inner.recent_rows.clone()),
        )
    }

    /// [`Self::logs_table`] reading only rows that may contain every one of `needles`
    /// (case-sensitive substrings every wanted line has), as far as the chunk files'
    /// trigram indexes tell. Rows without them may still come back: filter exactly.
    pub fn logs_table_with_needles(
        &self,
        request: ScanRequest,
        needles: Vec<textindex::TextNeedle>,
    ) -> Result<LogsTable> {
        Ok(self
            .logs_table(request)?
            .with_needles(needles, self.inner.text_indexes.clone()))
    }

    /// Every structured metadata key rows of `streams` (sorted) in `[start_ns, end_ns)` may
    /// have: the keys of those streams in the heads, and the listed keys of every chunk
    /// file holding rows of them in the range. `None` when some file or head stream has
    /// more keys than are listed (or a file predates the listing). Costs no read.
    pub fn metadata_keys(
        &self,
        tenant: &str,
        streams: &[StreamId],
        start_ns: i64,
        end_ns: i64,
    ) -> Option<std::collections::BTreeSet<String>> {
        let mut keys = std::collections::BTreeSet::new();
        let Some(t) = self.inner.tenant(tenant) else {
            return Some(keys);
        };
        {
            let frozen = t.frozen.read();
            let head = t.head.read();
            for h in std::iter::once(&*head).chain(frozen.iter().map(|(_, h)| h.as_ref())) {
                for &id in streams {
                    if let Some(s) = h.stream(id) {
                        keys.extend(s.metadata_keys()?.map(str::to_owned));
                    }
                }
            }
        }
        let manifest = t.manifest.read().clone();
        for c in &manifest.manifest.chunks {
            if c.min_ts >= end_ns || c.max_ts < start_ns {
                continue;
            }
            let mut holds = false;
            c.for_each_overlapping(streams, start_ns, end_ns, |_| holds = true);
            if holds {
                keys.extend(c.metadata_keys.as_ref()?.iter().cloned());
            }
        }
        Some(keys)
    }

    /// About how many rows `streams` (sorted) have in `[start_ns, end_ns)`: head rows
    /// exactly, plus every row of a stream in each chunk file where its range overlaps (a
    /// file spans one `chunk.window`, which bounds the error). Costs no read; each file
    /// is matched against the streams by binary search on the smaller side.
    pub fn estimate_rows(
        &self,
        tenant: &str,
        streams: &[StreamId],
        start_ns: i64,
        end_ns: i64,
    ) -> u64 {
        let Some(t) = self.inner.tenant(tenant) else {
            return 0;
        };
        let mut rows = 0u64;
        {
            let frozen = t.frozen.read();
            let head = t.head.read();
            for h in std::iter::once(&*head).chain(frozen.iter().map(|(_, h)| h.as_ref())) {
                for &id in streams {
                    rows += h.volume(id, start_ns, end_ns).0;
                }
            }
        }
        let manifest = t.manifest.read().clone();
        for c in &manifest.manifest.chunks {
            if c.min_ts >= end_ns || c.max_ts < start_ns {
                continue;
            }
            c.for_each_overlapping(streams, start_ns, end_ns, |s| rows += s.rows);
        }
        rows
    }

    /// Hash the chunk files of `tenant` among `paths` (those a failed read touched) that
    /// this process has not verified yet, and quarantine each whose bytes differ from its
    /// listing ([`quarantine`]). Returns how many were quarantined: when none, the failure
    /// was not damage. An unreachable store is an error.
    pub async fn check_chunks(&self, tenant: &str, paths: &[String]) -> Result<usize> {
        self.inner.check_chunks(tenant, paths).await
    }

    /// Time span of one chunk file (`chunk.window`), ns: reads aligned to it open each file
    /// once.
    pub fn chunk_window_ns(&self) -> i64 {
        i64::try_from(self.inner.config.chunk.window.0.as_nanos()).unwrap_or(i64::MAX)
    }

    /// Register the chunk object store with a DataFusion runtime so scans executed with it
    /// can read chunk files.
    pub fn register_object_store(&self, runtime: &RuntimeEnv) {
        runtime.register_object_store(self.inner.store_url.as_ref(), self.inner.store.clone());
    }

    /// A DataFusion task context (default configuration and memory pool) that can execute
    /// [`LogsTable::scan`] plans of this store.
    pub fn task_context(&self) -> Arc<TaskContext> {
        let ctx = TaskContext::default();
        self.register_object_store(ctx.runtime_env().as_ref());
        Arc::new(ctx)
    }

    /// Write (replace) the named object `name` (`/`-separated segments) in the chunks'
    /// object store, for components that keep small state next to the data.
    pub async fn put_object(&self, name: &str, body: bytes::Bytes) -> Result<()> {
        self.inner.guard.check_storage()?;
        objects::put(self.inner.store.as_ref(), name, body).await
    }

    /// Read the named object; `None` when missing.
    pub async fn get_object(&self, name: &str) -> Result<Option<bytes::Bytes>> {
        objects::get(self.inner.store.as_ref(), name).await
    }

    /// Delete the named object (a missing one is not an error).
    pub async fn delete_object(&self, name: &str) -> Result<()> {
        self.inner.guard.check_storage()?;
        objects::delete(self.inner.store.as_ref(), name).await
    }

    /// Names of the named objects under `prefix` (whole segments; empty for all), sorted.
    pub async fn list_objects(&self, prefix: &str) -> Result<Vec<String>> {
        objects::list(self.inner.store.as_ref(), prefix).await
    }

    /// Flush the whole head to chunk files now.
    pub async fn flush(&self) -> Result<()> {
        self.inner.flush_all().await
    }

    /// Set the compiler of delete queries (stored requests are compiled with it too).
    pub fn set_delete_compiler(&self, compiler: erase::DeleteCompiler) {
        self.inner.erase.set_compiler(compiler);
    }

    /// Set where each tenant's retention policy comes from (asked on every query and
    /// compactor pass; only used when `compaction.retention_enabled`).
    pub fn set_retention(&self, source: erase::RetentionSource) {
        self.inner.erase.set_retention(source);
    }

    /// Record a delete request; when this returns, every query already omits its lines.
    /// `Error::InvalidRequest` when the query does not compile or the range is empty.
    pub async fn add_delete(
        &self,
        tenant: &str,
        query: &str,
        start_ns: i64,
        end_ns: i64,
        requested_by: &str,
    ) -> Result<erase::DeleteRequest> {
        self.inner
            .erase
            .add(
                self.inner.store.as_ref(),
                tenant,
                query,
                start_ns,
                end_ns,
                requested_by,
            )
            .await
    }

    /// A tenant's delete requests, oldest first, with their current status.
    pub async fn deletes(&self, tenant: &str) -> Result<Vec<erase::DeleteRequest>> {
        Ok(self.inner.erase.requests(tenant))
    }

    /// Cancel a delete request within `compaction.delete_request_cancel_period`.
    pub async fn cancel_delete(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<erase::CancelOutcome> {
        let period = self.inner.config.compaction.delete_request_cancel_period.0;
        self.inner
            .erase
            .cancel(self.inner.store.as_ref(), tenant, request_id, period)
            .await
    }

    /// A number that changes whenever the tenant's delete requests change (Loki's cache
    /// generation number for results caches).
    pub fn delete_generation(&self, tenant: &str) -> u64 {
        self.inner.erase.generation(tenant)
    }

    /// Run one compaction pass now (windows past `compaction.min_age`, due deletions).
    /// Returns the number of windows compacted.
    pub async fn compact(&self) -> Result<usize> {
        self.inner.compact_once().await
    }

    /// Flush and stop background tasks; later appends fail with [`Error::Closed`].
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        if self.is_read_only() {
            return Ok(());
        }
        // The lease stays renewed while the last flush runs, however long it takes.
        let heartbeat = self.inner.lease.as_ref().map(|lease| {
            let interval = self.inner.config.lease.renew_interval.0;
            tokio::spawn(lease::run_heartbeat(lease.clone(), interval))
        });
        let flushed = self.inner.flush_all().await;
        if let Some(task) = heartbeat {
            task.abort();
        }
        self.inner.wal.close();
        flushed?;
        if let Some(lease) = &self.inner.lease {
            lease.release().await?;
        }
        Ok(())
    }

    /// `true` in the reader role (a read replica): appends and object writes fail with
    /// [`Error::ReadOnly`].
    pub fn is_read_only(&self) -> bool {
        self.inner.config.role == replica::Role::Reader
    }

    /// `Err(`[`Error::ReadOnly`]`)` when this process may not write now: a read replica,
    /// or a writer that lost its lease (fenced) or could not renew it in time.
    pub fn check_writable(&self) -> Result<()> {
        self.inner.guard.check_storage()
    }

    /// A reader's step of following the bucket now (the follower task does it every
    /// `replica.poll_interval`). Returns the number of tenants whose manifest changed.
    pub async fn follow(&self) -> Result<usize> {
        if !self.is_read_only() {
            return Ok(0);
        }
        self.inner.follow_once().await
    }

    /// Current figures for `/metrics`.
    pub fn metrics(&self) -> StorageMetrics {
        let inner = &self.inner;
        let (mut chunk_files, mut chunk_bytes, mut indexed) = (0u64, 0u64, 0u64);
        let (mut pending_deletes, mut uncompacted_files) = (0u64, 0u64);
        let (mut quarantined_listed, mut label_indexes_rebuilt) = (0u64, 0u64);
        for t in inner.tenants.read().values() {
            let m = t.manifest.read().clone();
            label_indexes_rebuilt += u64::from(t.index.set_aside().is_some());
            quarantined_listed += m.manifest.quarantined.len() as u64;
            uncompacted_files += m.manifest.chunks.iter().filter(|c| !c.compacted).count() as u64;
            pending_deletes += m.manifest.pending_deletes.len() as u64;
            chunk_files += m.manifest.chunks.len() as u64;
            chunk_bytes += m.manifest.chunks.iter().map(|c| c.size).sum::<u64>();
            indexed += t.index.len() as u64;
        }
        StorageMetrics {
            wal_bytes: inner.wal.bytes(),
            flushes: inner.flushes.load(Ordering::Relaxed),
            flush_failures: inner.flush_failures.load(Ordering::Relaxed),
            flush_failing: inner.flush_failure.lock().is_some(),
            chunk_files,
            chunk_bytes,
            head_bytes: inner.head_bytes.load(Ordering::Relaxed),
            head_entries: inner.head_entries.load(Ordering::Relaxed),
            scan_chunk_files: inner.scan_chunk_files.load(Ordering::Relaxed),
            scan_recent_files: inner.recent_rows.served(),
            recent_bytes: inner.recent_rows.bytes() as u64,
            indexed_streams: indexed,
            uncompacted_files,
            compactions: inner.compactions.load(Ordering::Relaxed),
            compaction_pending: inner.compaction_pending.load(Ordering::Relaxed),
            pending_deletes,
            quarantined_files: inner.quarantine.files.load(Ordering::Relaxed),
            quarantined_listed,
            damaged_indexes: inner.text_indexes.damaged_total(),
            label_indexes_rebuilt,
        }
    }
}
