//! Background compaction: merge each time window's chunk files into one and re-encode it
//! with a strong zstd level.
//!
//! Flushes write one file per window per flush at a fast zstd level so ingest keeps up.
//! Once a window's newest uncompacted file is `compaction.min_age` old, the compactor:
//! 1. reads the window's uncompacted files (and compacted ones under half of
//!    `max_file_bytes`) and k-way merges their rows by stream, in [`crate::order`], and
//!    timestamp, dropping exact duplicates (same stream, timestamp and line) — this also
//!    removes the duplicates a flush cannot see, where a re-sent entry arrives after its
//!    first copy was flushed. Each input is read in that stream order: one pass over a
//!    file written in it, and one read per stream over a file of an older version, whose
//!    streams are in id order;
//! 2. writes the result with `compaction.zstd_level` and `line_page_bytes` on a thread
//!    with the lowest CPU priority, so ingest and queries win any contention, plus the
//!    file's trigram block index ([`crate::textindex`]);
//! 3. swaps the manifest (inputs out, outputs in) under the manifest lock, with a hash chain
//!    entry ([`crate::chain`]) naming both and the outputs' SHA-256, and records the
//!    inputs as pending deletes. They are deleted `delete_delay` later, when no query
//!    planned against the old manifest can still be reading them.
//!
//! A crash before step 3 leaves an unlisted output file; [`Inner::remove_orphans`] deletes
//! such files at start-up. A crash after it leaves pending deletes in the manifest, done
//! on the next pass. No row is ever unlisted: the swap is one atomic manifest write.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, UInt64Type};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};

use crate::chain::{self, ChainEvent, RemovedFile};
use crate::chunk::writer_properties;
use crate::error::{Error, Result};
use crate::manifest::{self, ChunkMeta, ManifestState, MetadataKeys, StreamRange};
use crate::model::StreamId;
use crate::order::{self, Place};
use crate::schema::{logs_schema, LineClassifier, LINE, LINE_FLAGS};
use crate::textindex::{self, TextIndex, TextIndexBuilder};
use crate::{Inner, Tenant};

/// Rows per merged output batch.
const OUT_ROWS: usize = 16 * 1024;
/// Rows per batch read from an input file.
const IN_ROWS: usize = 8 * 1024;
/// Input batches held beyond one per cursor before picked rows are written out.
const MAX_LIVE_BATCHES: usize = 8;

pub(crate) fn os_err(path: &str, source: object_store::Error) -> Error {
    Error::ObjectStore {
        path: path.to_string(),
        source,
    }
}

/// One window's worth of compaction work.
struct Job {
    tenant: Arc<Tenant>,
    window_dir: String,
    window_start_ns: i64,
    inputs: Vec<ChunkMeta>,
}

/// One output file of a merge, with its trigram index.
pub(crate) struct Output {
    pub(crate) data: Bytes,
    pub(crate) text_index: Vec<u8>,
    pub(crate) meta: ChunkMeta,
}

impl Inner {
    /// Windows ready for compaction, oldest first.
    fn compaction_jobs(&self) -> Vec<Job> {
        let cfg = &self.config.compaction;
        let now = manifest::now_ms();
        let min_age = cfg.min_age.0.as_millis() as u64;
        let keep = cfg.max_file_bytes.0 / 2;
        let mut jobs = Vec::new();
        let tenants: Vec<Arc<Tenant>> = self.tenants.read().values().cloned().collect();
        for tenant in tenants {
            let state = tenant.manifest.read().clone();
            let mut windows: BTreeMap<&str, Vec<&ChunkMeta>> = BTreeMap::new();
            for c in &state.manifest.chunks {
                windows.entry(c.window_dir()).or_default().push(c);
            }
            for (dir, files) in windows {
                let fresh: Vec<&&ChunkMeta> = files.iter().filter(|c| !c.compacted).collect();
                let newest = fresh.iter().map(|c| c.created_ms).max();
                let Some(newest) = newest else {
                    continue;
                };
                if now.saturating_sub(newest) < min_age {
                    continue;
                }
                let Some(window_start_ns) = dir
                    .rsplit('/')
                    .next()
                    .and_then(|s| s.parse::<i64>().ok())
                    .map(|s| s.saturating_mul(1_000_000_000))
                else {
                    tracing::warn!(window = dir, "chunk directory is not a window; skipped");
                    continue;
                };
                let inputs = files
                    .iter()
                    .filter(|c| !c.compacted || c.size < keep)
                    .map(|c| (*c).clone())
                    .collect();
                jobs.push(Job {
                    tenant: tenant.clone(),
                    window_dir: dir.to_string(),
                    window_start_ns,
                    inputs,
                });
            }
        }
        jobs.sort_by_key(|j| j.window_start_ns);
        jobs
    }

    /// Run every due compaction and deletion once. Returns the windows compacted.
    pub(crate) async fn compact_once(&self) -> Result<usize> {
        self.delete_due().await?;
        self.unlist_damaged_indexes().await?;
        let jobs = self.compaction_jobs();
        self.compaction_pending
            .store(jobs.len() as u64, Ordering::Relaxed);
        let mut done = 0;
        let concurrency = self.config.compaction.concurrency.max(1);
        let mut jobs = jobs.into_iter();
        loop {
            let batch: Vec<Job> = jobs.by_ref().take(concurrency).collect();
            if batch.is_empty() {
                break;
            }
            let results =
                futures::future::join_all(batch.into_iter().map(|job| self.compact_window(job)))
                    .await;
            for r in results {
                r?;
                done += 1;
                self.compaction_pending.fetch_sub(1, Ordering::Relaxed);
            }
            if self.closed.load(Ordering::Acquire) {
                break;
            }
        }
        // Retention and due delete requests (`crate::erase`), after merging: a window
        // merged above is rewritten once, not per input.
        let erased = self.erase_pass().await?;
        if erased.files_dropped + erased.files_rewritten + erased.processed > 0 {
            tracing::info!(
                files_dropped = erased.files_dropped,
                files_rewritten = erased.files_rewritten,
                deletes_processed = erased.processed,
                "retention and deletes applied"
            );
        }
        // Unlisted chunk objects left by an interrupted write of this process.
        if self.erase.sweep_due(ORPHAN_SWEEP_INTERVAL) {
            self.sweep_orphans(Some(ORPHAN_MIN_AGE)).await?;
        }
        Ok(done)
    }

    async fn compact_window(&self, job: Job) -> Result<()> {
        let started = Instant::now();
        let mut inputs = Vec::with_capacity(job.inputs.len());
        let mut damaged = 0usize;
        for c in &job.inputs {
            let data = match self.store.get(&ObjectPath::from(c.path.as_str())).await {
                Ok(got) => got.bytes().await.map_err(|e| os_err(&c.path, e))?,
                Err(object_store::Error::NotFound { .. }) => {
                    self.quarantine(
                        &job.tenant,
                        vec![(c.clone(), "the object is missing from the store".into())],
                    )
                    .await?;
                    damaged += 1;
                    continue;
                }
                Err(e) => return Err(os_err(&c.path, e)),
            };
            // Merged bytes get a new hash: an altered input must not pass into them.
            match self.checked_bytes(&job.tenant, c, data).await? {
                Some(data) => inputs.push(data),
                None => damaged += 1,
            }
        }
        if damaged > 0 {
            // Quarantined: the next pass merges the window's other files.
            return Ok(());
        }
        let places = order::places(
            job.inputs
                .iter()
                .flat_map(|c| c.streams.iter().map(|s| (s.id, job.tenant.index.get(s.id)))),
        );
        let inputs = inputs
            .into_iter()
            .zip(&job.inputs)
            .map(|(data, meta)| Input::new(data, meta, &places))
            .collect::<Result<Vec<_>>>()?;
        let cfg = self.config.compaction.clone();
        let row_group_rows = self.config.chunk.row_group_rows;
        let window_start_ns = job.window_start_ns;
        let line_flags = self.line_flags.clone();
        let fields = self.fields.clone();
        let stamp = manifest::now_ms();
        let dir = job.window_dir.clone();
        // The merge runs on its own thread at the lowest CPU priority: compaction is
        // deferred work and must never slow ingest or queries down.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("tovlog-compact".into())
            .spawn(move || {
                lower_thread_priority();
                let merged = merge(
                    inputs,
                    &places,
                    &MergeSettings {
                        row_group_rows,
                        zstd_level: cfg.zstd_level,
                        line_page_bytes: cfg.line_page_bytes.0 as usize,
                        max_file_bytes: cfg.max_file_bytes.0 as usize,
                        window_start_ns,
                        line_flags,
                        fields,
                    },
                );
                let _ = tx.send(merged);
                release_free_memory();
            })
            .map_err(|e| Error::Internal(format!("cannot start compaction thread: {e}")))?;
        let (outputs, duplicates) = rx
            .await
            .map_err(|_| Error::Internal("compaction thread ended without a result".into()))??;

        let mut metas = Vec::with_capacity(outputs.len());
        for (n, out) in outputs.into_iter().enumerate() {
            let path = format!("{dir}/c{stamp:013}-{n:03}.parquet");
            let mut meta = out.meta;
            meta.path = path.clone();
            meta.size = out.data.len() as u64;
            meta.created_ms = stamp;
            meta.text_index_bytes = Some(out.text_index.len() as u64);
            let index = textindex::index_path(&path);
            self.store
                .put(
                    &ObjectPath::from(index.as_str()),
                    PutPayload::from(out.text_index),
                )
                .await
                .map_err(|e| os_err(&index, e))?;
            crate::fault::point("compact.after_index_put");
            self.store
                .put(&ObjectPath::from(path.as_str()), PutPayload::from(out.data))
                .await
                .map_err(|e| os_err(&path, e))?;
            metas.push(meta);
        }
        crate::fault::point("compact.after_output_put");

        let before: u64 = job.inputs.iter().map(|c| c.size).sum();
        let after: u64 = metas.iter().map(|c| c.size).sum();
        let delete_after = manifest::now_ms()
            .saturating_add(self.config.compaction.delete_delay.0.as_millis() as u64);
        {
            let _edit = self.manifest_lock.lock().await;
            let mut next = job.tenant.manifest.read().manifest.clone();
            let replaced: HashSet<&str> = job.inputs.iter().map(|c| c.path.as_str()).collect();
            let listed = next
                .chunks
                .iter()
                .filter(|c| replaced.contains(c.path.as_str()))
                .count();
            if listed != replaced.len() {
                // Cannot happen with one compactor; never drop rows on a surprise.
                for m in &metas {
                    for p in [m.path.clone(), textindex::index_path(&m.path)] {
                        let _ = self.store.delete(&ObjectPath::from(p.as_str())).await;
                    }
                }
                return Err(Error::Internal(format!(
                    "compaction of {dir}: input files changed underneath"
                )));
            }
            next.version = manifest::MANIFEST_VERSION;
            let reason = format!(
                "compaction: merged into {}",
                metas
                    .iter()
                    .map(|m| m.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let removed = next
                .chunks
                .iter()
                .filter(|c| replaced.contains(c.path.as_str()))
                .flat_map(chain::chunk_files)
                .map(|f| RemovedFile {
                    path: f.path,
                    size: f.size,
                    sha256: f.sha256,
                    reason: reason.clone(),
                })
                .collect();
            let added = metas.iter().flat_map(chain::chunk_files).collect();
            let inputs: Vec<&str> = job.inputs.iter().map(|c| c.path.as_str()).collect();
            let outputs: Vec<&str> = metas.iter().map(|c| c.path.as_str()).collect();
            crate::erase::carry_clean(&mut next, &inputs, &outputs);
            next.chunks.retain(|c| !replaced.contains(c.path.as_str()));
            next.chunks.extend(metas);
            chain::append(
                self.store.as_ref(),
                &job.tenant.name,
                &mut next,
                ChainEvent::Compaction,
                format!("{reason} ({dir}, {duplicates} duplicate rows dropped)"),
                added,
                removed,
            )
            .await?;
            crate::fault::point("compact.after_chain");
            for c in &job.inputs {
                next.delete_later(c, delete_after);
            }
            manifest::save(self.store.as_ref(), &job.tenant.name, &next).await?;
            crate::fault::point("compact.after_manifest");
            *job.tenant.manifest.write() = ManifestState::new(next);
        }
        self.compactions.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            window = %job.window_dir,
            files_in = job.inputs.len(),
            bytes_in = before,
            bytes_out = after,
            duplicates,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "window compacted"
        );
        Ok(())
    }

    /// Delete replaced files whose delay has passed, then drop them from the manifests.
    async fn delete_due(&self) -> Result<()> {
        let now = manifest::now_ms();
        let tenants: Vec<Arc<Tenant>> = self.tenants.read().values().cloned().collect();
        for tenant in tenants {
            let due: Vec<String> = tenant
                .manifest
                .read()
                .manifest
                .pending_deletes
                .iter()
                .filter(|p| p.after_ms <= now)
                .map(|p| p.path.clone())
                .collect();
            if due.is_empty() {
                continue;
            }
            for path in &due {
                match self.store.delete(&ObjectPath::from(path.as_str())).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(os_err(path, e)),
                }
            }
            crate::fault::point("compact.after_input_delete");
            let _edit = self.manifest_lock.lock().await;
            let mut next = tenant.manifest.read().manifest.clone();
            next.pending_deletes.retain(|p| !due.contains(&p.path));
            manifest::save(self.store.as_ref(), &tenant.name, &next).await?;
            *tenant.manifest.write() = ManifestState::new(next);
        }
        Ok(())
    }

    /// Delete chunk files no manifest lists or will delete: outputs of a compaction or
    /// flush that crashed before its manifest edit (the WAL still holds what such a flush
    /// wrote; a compaction's inputs are still listed). Run at start-up, before the
    /// flusher and compactor start: a file they are writing is not listed yet.
    pub(crate) async fn remove_orphans(&self) -> Result<usize> {
        self.sweep_orphans(None).await
    }

    /// [`Self::remove_orphans`] while the flusher and compactor run: only objects older
    /// than `min_age` (`None`: any), far longer than any write takes to be listed. Only
    /// chunk objects (`<tenant>/<window>/<name>.parquet` or `.tri`) are candidates; the
    /// manifest, the chain, delete requests and everything else are never touched.
    pub(crate) async fn sweep_orphans(
        &self,
        min_age: Option<std::time::Duration>,
    ) -> Result<usize> {
        let _edit = self.manifest_lock.lock().await;
        let now = std::time::SystemTime::now();
        let tenants: Vec<Arc<Tenant>> = self.tenants.read().values().cloned().collect();
        let mut removed = 0;
        for tenant in tenants {
            let state = tenant.manifest.read().clone();
            let known: HashSet<String> = state
                .manifest
                .chunks
                .iter()
                .flat_map(|c| {
                    let index = c.text_index_bytes.map(|_| textindex::index_path(&c.path));
                    std::iter::once(c.path.clone()).chain(index)
                })
                .chain(
                    state
                        .manifest
                        .pending_deletes
                        .iter()
                        .map(|p| p.path.clone()),
                )
                .collect();
            let prefix = ObjectPath::from(tenant.dir.as_str());
            let listed: Vec<_> = self
                .store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(|e| os_err(tenant.dir.as_str(), e))?;
            for object in listed {
                let path = object.location.to_string();
                if !is_chunk_object(&tenant.dir, &path) || known.contains(&path) {
                    continue;
                }
                let young = min_age.is_some_and(|age| {
                    now.duration_since(std::time::SystemTime::from(object.last_modified))
                        .map_or(true, |d| d < age)
                });
                if !young {
                    match self.store.delete(&object.location).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                        Err(e) => return Err(os_err(&path, e)),
                    }
                }
            }
        }
        if removed > 0 {
            tracing::warn!(
                files = removed,
                "unlisted chunk files from an interrupted write removed"
            );
        }
        Ok(removed)
    }
}

/// How often the running compactor looks for unlisted chunk objects.
const ORPHAN_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);
/// Unlisted chunk objects younger than this are left alone by the running sweep (a write
/// is listed within seconds).
const ORPHAN_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Is `path` a chunk object of a window directory of the tenant: `<dir>/<digits>/<name>`
/// ending in `.parquet` or `.tri`?
fn is_chunk_object(tenant_dir: &str, path: &str) -> bool {
    let Some(rest) = path
        .strip_prefix(tenant_dir)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return false;
    };
    let mut parts = rest.split('/');
    let (Some(window), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !window.is_empty()
        && window.bytes().all(|b| b.is_ascii_digit() || b == b'-')
        && (name.ends_with(".parquet") || name.ends_with(".tri"))
}

/// The background compactor. Holds only a weak reference, so dropping the storage stops it.
pub(crate) async fn run_compactor(inner: Weak<Inner>) {
    let interval = match inner.upgrade() {
        Some(i) => i.config.compaction.check_interval.0,
        None => return,
    };
    loop {
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = inner.compact_once().await {
            tracing::error!(error = %e, "compaction failed; will retry");
        }
    }
}

/// Put the calling thread at the lowest CPU priority (nice 19).
pub(crate) fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority with PRIO_PROCESS and who = 0 only changes the nice value of
        // the calling thread (Linux threads are tasks); it reads no memory of ours. No
        // crate wraps this one call; failure only means normal priority.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
        if rc != 0 {
            tracing::debug!("could not lower compaction thread priority");
        }
    }
}

/// Hand freed heap memory back to the OS. The zstd contexts of strong levels take tens of
/// MiB per page and glibc keeps such freed blocks in the thread's arena, so without this
/// the process would hold the compactor's peak forever.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only returns free pages of the allocator to the kernel; it
        // touches no memory of ours. No crate wraps it.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

pub(crate) struct MergeSettings {
    pub(crate) row_group_rows: usize,
    pub(crate) zstd_level: i32,
    pub(crate) line_page_bytes: usize,
    pub(crate) max_file_bytes: usize,
    pub(crate) window_start_ns: i64,
    /// Computes the `line_flags` column of the output (null without one).
    pub(crate) line_flags: Option<LineClassifier>,
    /// Reports rows' fields for the output's block statistics (none without one).
    pub(crate) fields: Option<crate::schema::FieldExtractor>,
}

/// One input of a merge: the file and its row ranges in merge order.
pub(crate) struct Input {
    data: Bytes,
    /// Runs of rows to read one after the other: together, the file's streams in
    /// [`crate::order`]. One run for a file written in that order; in a file of an older
    /// version (id order) mostly one run per stream.
    runs: Vec<Range<usize>>,
    rows: usize,
    /// Rows per stream.
    streams: Vec<(StreamId, u64)>,
}

impl Input {
    pub(crate) fn new(
        data: Bytes,
        meta: &ChunkMeta,
        places: &HashMap<StreamId, Place>,
    ) -> Result<Input> {
        let ranges = meta.stream_rows().ok_or_else(|| {
            Error::Internal(format!(
                "compaction: the stream ranges of {} do not add up to its rows",
                meta.path
            ))
        })?;
        let mut segments: Vec<(u32, Range<u64>)> = meta
            .streams
            .iter()
            .zip(ranges)
            .map(|(s, r)| (places.get(&s.id).map_or(u32::MAX, |p| p.rank), r))
            .collect();
        segments.sort_unstable_by_key(|(rank, _)| *rank);
        let as_usize = |n: u64| usize::try_from(n).map_err(|e| Error::Internal(e.to_string()));
        let mut runs: Vec<Range<usize>> = Vec::new();
        for (_, r) in segments {
            let r = as_usize(r.start)?..as_usize(r.end)?;
            match runs.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ if r.is_empty() => {}
                _ => runs.push(r),
            }
        }
        Ok(Input {
            data,
            runs,
            rows: as_usize(meta.rows)?,
            streams: meta.streams.iter().map(|s| (s.id, s.rows)).collect(),
        })
    }
}

/// A read position in one input file.
struct Cursor {
    data: Bytes,
    metadata: ArrowReaderMetadata,
    /// Runs not started yet, last one first.
    runs: Vec<Range<usize>>,
    rows: usize,
    reader: ParquetRecordBatchReader,
    batch: RecordBatch,
    /// Index of `batch` in the merge's list of live batches.
    slot: usize,
    row: usize,
    /// The last stream looked up and its rank.
    stream: (StreamId, u32),
    /// The key of the previous row, to check that the input is in merge order.
    last: (u32, i64),
}

impl Cursor {
    /// A cursor on the first row of `input`, or `None` when it has no row.
    fn open(input: Input) -> Result<Option<Cursor>> {
        let metadata = ArrowReaderMetadata::load(&input.data, ArrowReaderOptions::new())?;
        // The merge reads the id, ts and line columns with typed casts that would panic
        // on another type: a file that is not a chunk fails the merge instead.
        // Files of versions before `line_flags` have one column less; their batches get
        // a null one (`next_batch`).
        let file = metadata.schema();
        let want = logs_schema();
        let n = file.fields().len();
        if !(n == want.fields().len() || n + 1 == want.fields().len())
            || want
                .fields()
                .iter()
                .zip(file.fields().iter())
                .enumerate()
                .any(|(i, (w, f))| i != 3 && w.data_type() != f.data_type())
        {
            return Err(Error::Internal(format!(
                "compaction: an input file's columns are not a chunk's: {file}"
            )));
        }
        let mut runs = input.runs;
        runs.reverse();
        let mut cursor = Cursor {
            reader: empty_reader(&input.data, &metadata)?,
            data: input.data,
            metadata,
            runs,
            rows: input.rows,
            batch: RecordBatch::new_empty(logs_schema()),
            slot: 0,
            row: 0,
            stream: (0, u32::MAX),
            last: (0, i64::MIN),
        };
        Ok(cursor.next_batch()?.then_some(cursor))
    }

    /// Load the next non-empty batch into `batch` (row 0); `false` at the end of the input.
    fn next_batch(&mut self) -> Result<bool> {
        loop {
            match self.reader.next() {
                Some(Ok(b)) if b.num_rows() == 0 => continue,
                Some(Ok(b)) => {
                    self.batch = with_all_columns(b)?;
                    self.row = 0;
                    return Ok(true);
                }
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
            let Some(run) = self.runs.pop() else {
                return Ok(false);
            };
            let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(
                self.data.clone(),
                self.metadata.clone(),
            )
            .with_batch_size(IN_ROWS);
            self.reader = if run == (0..self.rows) {
                builder.build()?
            } else {
                builder
                    .with_row_selection(RowSelection::from_consecutive_ranges(
                        std::iter::once(run),
                        self.rows,
                    ))
                    .build()?
            };
        }
    }

    /// The merge key `(rank of the stream, ts)` of the current row. Fails when the input
    /// is not in merge order (its manifest entry does not describe it): merging it would
    /// misplace rows and miss duplicates.
    fn key(&mut self, places: &HashMap<StreamId, Place>) -> Result<(u32, i64)> {
        let id = self
            .batch
            .column(0)
            .as_primitive::<UInt64Type>()
            .value(self.row);
        let ts = self
            .batch
            .column(1)
            .as_primitive::<Int64Type>()
            .value(self.row);
        if id != self.stream.0 || self.stream.1 == u32::MAX {
            let rank = places.get(&id).map(|p| p.rank).ok_or_else(|| {
                Error::Internal(format!("compaction: stream {id} is not in the manifest"))
            })?;
            self.stream = (id, rank);
        }
        let key = (self.stream.1, ts);
        if key < self.last {
            return Err(Error::Internal(
                "compaction: an input file's rows are not in its manifest's order".into(),
            ));
        }
        self.last = key;
        Ok(key)
    }
}

/// `batch` of an input file with the columns of [`logs_schema`]: a file written before
/// `line_flags` existed gets a null one.
pub(crate) fn with_all_columns(batch: RecordBatch) -> Result<RecordBatch> {
    let schema = logs_schema();
    if batch.num_columns() == schema.fields().len() {
        return Ok(batch);
    }
    let mut columns = batch.columns().to_vec();
    columns.push(crate::schema::unknown_line_flags(batch.num_rows()));
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// `batch` with its `line_flags` column computed by `classifier` (rows merged from earlier
/// files are classified again: the function may have changed since they were written).
fn classify(batch: RecordBatch, classifier: &LineClassifier) -> Result<RecordBatch> {
    let lines = batch
        .column(batch.schema_ref().index_of(LINE)?)
        .as_string_opt::<i32>()
        .ok_or_else(|| Error::Internal("compaction: the line column is not text".into()))?;
    let flags: arrow::array::UInt8Array = lines
        .iter()
        .map(|l| Some(classifier(l.unwrap_or(""))))
        .collect();
    let at = batch.schema_ref().index_of(LINE_FLAGS)?;
    let mut columns = batch.columns().to_vec();
    columns[at] = Arc::new(flags);
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// A reader that yields nothing, until a cursor opens its first run.
fn empty_reader(data: &Bytes, metadata: &ArrowReaderMetadata) -> Result<ParquetRecordBatchReader> {
    Ok(
        ParquetRecordBatchReaderBuilder::new_with_metadata(data.clone(), metadata.clone())
            .with_row_selection(RowSelection::from(Vec::<RowSelector>::new()))
            .build()?,
    )
}

/// Writes merged rows into files of at most `max_file_bytes`, tracking statistics.
struct Sink<'a> {
    settings: &'a MergeSettings,
    places: &'a HashMap<StreamId, Place>,
    /// Rows per service group (see [`Place::group`]) over all inputs.
    group_rows: HashMap<u32, u64>,
    /// The last row's stream and its service group.
    group: Option<(StreamId, u32)>,
    writer: Option<ArrowWriter<Vec<u8>>>,
    meta: ChunkMeta,
    outputs: Vec<Output>,
}

impl Sink<'_> {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.writer.is_none() {
            let props = writer_properties(
                self.settings.row_group_rows,
                self.settings.zstd_level,
                self.settings.line_page_bytes,
                self.settings.window_start_ns,
            )?;
            self.writer = Some(ArrowWriter::try_new(
                Vec::new(),
                logs_schema(),
                Some(props),
            )?);
        }
        let ids = batch.column(0).as_primitive::<UInt64Type>();
        let ts = batch.column(1).as_primitive::<Int64Type>();
        let lines = batch.column(2).as_string::<i32>();
        // Rows where a new service group starts.
        let mut starts: Vec<usize> = Vec::new();
        for i in 0..batch.num_rows() {
            let (id, t) = (ids.value(i), ts.value(i));
            if self.group.is_none_or(|(last, _)| last != id) {
                let group = self.places.get(&id).map_or(u32::MAX, |p| p.group);
                if self.group.is_some_and(|(_, last)| last != group) {
                    starts.push(i);
                }
                self.group = Some((id, group));
            }
            let line = lines.value(i);
            let len = line.len() as u64;
            let m = &mut self.meta;
            let first_row = m.rows;
            m.rows += 1;
            m.min_ts = m.min_ts.min(t);
            m.max_ts = m.max_ts.max(t);
            match m.streams.last_mut() {
                Some(s) if s.id == id => {
                    s.min_ts = s.min_ts.min(t);
                    s.max_ts = s.max_ts.max(t);
                    s.rows += 1;
                    s.line_bytes += len;
                }
                _ => m.streams.push(StreamRange {
                    id,
                    min_ts: t,
                    max_ts: t,
                    rows: 1,
                    line_bytes: len,
                    first_row: Some(first_row),
                }),
            }
        }
        let full = match self.writer.as_mut() {
            Some(w) => {
                // End the row group where a service starts (`order::starts_row_group`).
                let mut from = 0;
                for &start in &starts {
                    w.write(&batch.slice(from, start - from))?;
                    from = start;
                    let next = self
                        .places
                        .get(&ids.value(start))
                        .map_or(u32::MAX, |p| p.group);
                    let next_rows = self.group_rows.get(&next).copied().unwrap_or(0);
                    if order::starts_row_group(w.in_progress_rows(), next_rows) {
                        w.flush()?;
                    }
                }
                w.write(&batch.slice(from, batch.num_rows() - from))?;
                w.bytes_written() + w.in_progress_size() >= self.settings.max_file_bytes
            }
            None => false,
        };
        if full {
            self.finish_file()?;
        }
        Ok(())
    }

    fn finish_file(&mut self) -> Result<()> {
        if let Some(w) = self.writer.take() {
            let data = Bytes::from(w.into_inner()?);
            let (text_index, metadata_keys) = index_file(&data, self.settings.fields.as_ref())?;
            let text_index = text_index.encode();
            let mut meta = std::mem::replace(&mut self.meta, empty_meta());
            meta.streams.sort_unstable_by_key(|s| s.id);
            meta.metadata_keys = metadata_keys.finish();
            // Hashed here, from the bytes about to be written (see `crate::chain`).
            meta.sha256 = Some(chain::sha256_hex(&data));
            meta.text_index_sha256 = Some(chain::sha256_hex(&text_index));
            self.outputs.push(Output {
                data,
                text_index,
                meta,
            });
        }
        Ok(())
    }
}

/// The needle index of a finished compacted file, and its metadata keys, read back from
/// its bytes (the one pass over its metadata). The index's blocks
/// follow the pages of the line column ([`line_page_cuts`]), so a candidate block costs
/// the decompression of one page, not two. The writer cuts pages by size
/// (`line_page_bytes`), checked every so many rows, so where they fall is only known once
/// the file is written.
fn index_file(
    data: &Bytes,
    fields: Option<&crate::schema::FieldExtractor>,
) -> Result<(TextIndex, MetadataKeys)> {
    let options = ArrowReaderOptions::new().with_offset_index_policy(PageIndexPolicy::Optional);
    let metadata = ArrowReaderMetadata::load(data, options)?;
    let cuts = line_page_cuts(metadata.metadata());
    let reader =
        ParquetRecordBatchReaderBuilder::new_with_metadata(data.clone(), metadata).build()?;
    let mut index = match fields {
        Some(_) => TextIndexBuilder::with_fields(),
        None => TextIndexBuilder::default(),
    };
    let mut keys = MetadataKeys::default();
    let mut cuts = cuts.into_iter().peekable();
    let mut row: u64 = 0;
    let malformed = || Error::Internal("compaction: unexpected column types on read-back".into());
    for batch in reader {
        let batch = batch?;
        let ids = batch
            .column(0)
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(malformed)?;
        let ts = batch
            .column(1)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(malformed)?;
        let lines = batch
            .column(2)
            .as_string_opt::<i32>()
            .ok_or_else(malformed)?;
        let metadata = batch.column(3).as_map_opt().ok_or_else(malformed)?;
        for i in 0..batch.num_rows() {
            while cuts.next_if(|&c| c <= row).is_some() {
                index.cut();
            }
            let file_row = u32::try_from(row)
                .map_err(|_| Error::Internal("compacted file exceeds 2^32 rows".into()))?;
            let (id, t, line) = (ids.value(i), ts.value(i), lines.value(i).as_bytes());
            if metadata.is_valid(i) {
                let entries = metadata.value(i);
                let names = entries
                    .column(0)
                    .as_string_opt::<i32>()
                    .ok_or_else(malformed)?;
                for k in names.iter().flatten() {
                    keys.add(k);
                }
                let values = entries
                    .column(1)
                    .as_string_opt::<i32>()
                    .ok_or_else(malformed)?;
                index.push(
                    file_row,
                    id,
                    t,
                    line,
                    values.iter().flatten().map(str::as_bytes),
                );
                if let Some(f) = fields {
                    let pairs: Vec<(&str, &str)> = names
                        .iter()
                        .zip(values.iter())
                        .filter_map(|(k, v)| Some((k?, v?)))
                        .collect();
                    f(lines.value(i), &pairs, &mut |name, value| {
                        index.add_field(name, value)
                    });
                }
            } else {
                index.push(file_row, id, t, line, []);
                if let Some(f) = fields {
                    f(lines.value(i), &[], &mut |name, value| {
                        index.add_field(name, value)
                    });
                }
            }
            row += 1;
        }
    }
    Ok((index.finish(), keys))
}

/// Rows where needle blocks start: each page of the line column is a block, or is split
/// into equal blocks when it has more than [`textindex::BLOCK_ROWS`] rows. The last page
/// of a row group, cut short by the group's end, then joins a neighbour block when it has
/// fewer than [`MIN_BLOCK_ROWS`] and the two fit in one block: a block that small would
/// hold too many distinct trigrams per row for a filter (see `textindex::bloom`), and be
/// read by every needle query; joined, it costs those queries one small page more. Empty
/// without an offset index (the builder then cuts every `BLOCK_ROWS` rows).
fn line_page_cuts(meta: &ParquetMetaData) -> Vec<u64> {
    let block = u64::from(textindex::BLOCK_ROWS);
    let Some(offsets) = meta.offset_index() else {
        return Vec::new();
    };
    let schema = meta.file_metadata().schema_descr();
    let Some(column) = (0..schema.num_columns()).find(|&c| schema.column(c).name() == LINE) else {
        return Vec::new();
    };
    // (file rows, whether it is a short last page of its row group)
    let mut blocks: Vec<(Range<u64>, bool)> = Vec::new();
    let mut base: u64 = 0;
    for (group, columns) in meta.row_groups().iter().zip(offsets) {
        let rows = u64::try_from(group.num_rows()).unwrap_or(0);
        let firsts: Vec<u64> = columns
            .get(column)
            .map(|c| {
                c.page_locations()
                    .iter()
                    .filter_map(|p| u64::try_from(p.first_row_index).ok())
                    .collect()
            })
            .unwrap_or_default();
        if firsts.first() != Some(&0) {
            return Vec::new();
        }
        for (k, &start) in firsts.iter().enumerate() {
            let end = firsts.get(k + 1).copied().unwrap_or(rows).max(start);
            let short = k + 1 == firsts.len() && end - start < MIN_BLOCK_ROWS;
            let step = (end - start).div_ceil((end - start).div_ceil(block).max(1));
            let mut at = start;
            while at < end {
                let next = (at + step.max(1)).min(end);
                blocks.push((base + at..base + next, short));
                at = next;
            }
        }
        base += rows;
    }
    let mut joined: Vec<(Range<u64>, bool)> = Vec::with_capacity(blocks.len());
    for (b, short) in blocks {
        if let Some((last, last_short)) = joined.last_mut() {
            if (short || *last_short) && (last.end - last.start) + (b.end - b.start) <= block {
                last.end = b.end;
                *last_short = false;
                continue;
            }
        }
        joined.push((b, short));
    }
    joined.into_iter().map(|(b, _)| b.start).collect()
}

/// A row group's last page smaller than this joins a neighbour block (see
/// [`line_page_cuts`]).
const MIN_BLOCK_ROWS: u64 = textindex::BLOCK_ROWS as u64 / 4;

fn empty_meta() -> ChunkMeta {
    ChunkMeta {
        path: String::new(),
        size: 0,
        min_ts: i64::MAX,
        max_ts: i64::MIN,
        rows: 0,
        streams: Vec::new(),
        compacted: true,
        created_ms: 0,
        text_index_bytes: None,
        metadata_keys: None,
        sha256: None,
        text_index_sha256: None,
    }
}

/// K-way merge of chunk files, each read in merge order (see [`Input`]), into re-encoded
/// files. Returns the outputs and the number of exact duplicates dropped. Memory: one
/// input batch per file, one output batch, and the compressed output file.
fn merge(
    inputs: Vec<Input>,
    places: &HashMap<StreamId, Place>,
    settings: &MergeSettings,
) -> Result<(Vec<Output>, u64)> {
    merge_erasing(inputs, places, settings, None)
}

/// [`merge`] leaving out the rows `erase` drops (it counts them).
pub(crate) fn merge_erasing(
    inputs: Vec<Input>,
    places: &HashMap<StreamId, Place>,
    settings: &MergeSettings,
    mut erase: Option<&mut crate::erase::RowErasure>,
) -> Result<(Vec<Output>, u64)> {
    let mut live: Vec<RecordBatch> = Vec::new();
    let mut cursors: Vec<Cursor> = Vec::new();
    let mut heap: BinaryHeap<Reverse<(u32, i64, usize)>> = BinaryHeap::new();
    let mut group_rows: HashMap<u32, u64> = HashMap::new();
    for (id, rows) in inputs.iter().flat_map(|i| &i.streams) {
        let group = places.get(id).map_or(u32::MAX, |p| p.group);
        *group_rows.entry(group).or_default() += rows;
    }
    for input in inputs {
        if let Some(mut cursor) = Cursor::open(input)? {
            live.push(cursor.batch.clone());
            cursor.slot = live.len() - 1;
            let (rank, ts) = cursor.key(places)?;
            heap.push(Reverse((rank, ts, cursors.len())));
            cursors.push(cursor);
        }
    }
    let mut sink = Sink {
        settings,
        places,
        group_rows,
        group: None,
        writer: None,
        meta: empty_meta(),
        outputs: Vec::new(),
    };
    let mut picks: Vec<(usize, usize)> = Vec::with_capacity(OUT_ROWS);
    // The last row taken, to drop exact duplicates (rows with equal keys are adjacent).
    let mut last: Option<(u32, i64)> = None;
    let mut last_line: Vec<Vec<u8>> = Vec::new();
    let mut duplicates = 0u64;
    while let Some(Reverse((rank, ts, i))) = heap.pop() {
        let cursor = &mut cursors[i];
        let line = cursor.batch.column(2).as_string::<i32>().value(cursor.row);
        let erased = match erase.as_deref_mut() {
            Some(e) => e.drops(cursor.stream.0, ts, line),
            None => false,
        };
        if erased {
            // Left out; counted by `erase`.
        } else if last == Some((rank, ts)) {
            if last_line.iter().any(|l| l.as_slice() == line.as_bytes()) {
                duplicates += 1;
            } else {
                last_line.push(line.as_bytes().to_vec());
                picks.push((cursor.slot, cursor.row));
            }
        } else {
            last = Some((rank, ts));
            last_line.clear();
            last_line.push(line.as_bytes().to_vec());
            picks.push((cursor.slot, cursor.row));
        }
        cursor.row += 1;
        if cursor.row >= cursor.batch.num_rows() {
            if !cursor.next_batch()? {
                continue;
            }
            live.push(cursor.batch.clone());
            cursor.slot = live.len() - 1;
        }
        let (nrank, nts) = cursor.key(places)?;
        heap.push(Reverse((nrank, nts, i)));
        // Erased rows take no pick, so batches are also let go by count.
        if picks.len() >= OUT_ROWS || live.len() >= cursors.len() + MAX_LIVE_BATCHES {
            flush_picks(&mut sink, &mut live, &mut cursors, &mut picks)?;
        }
    }
    if !picks.is_empty() {
        flush_picks(&mut sink, &mut live, &mut cursors, &mut picks)?;
    }
    sink.finish_file()?;
    Ok((sink.outputs, duplicates))
}

/// Gather the picked rows into one batch, write it, and drop batches no cursor needs.
fn flush_picks(
    sink: &mut Sink<'_>,
    live: &mut Vec<RecordBatch>,
    cursors: &mut [Cursor],
    picks: &mut Vec<(usize, usize)>,
) -> Result<()> {
    if !picks.is_empty() {
        let schema = logs_schema();
        let mut columns = Vec::with_capacity(schema.fields().len());
        for c in 0..schema.fields().len() {
            let arrays: Vec<&dyn Array> = live.iter().map(|b| b.column(c).as_ref()).collect();
            columns.push(arrow::compute::interleave(&arrays, picks)?);
        }
        let mut batch = RecordBatch::try_new(schema, columns)?;
        if let Some(f) = &sink.settings.line_flags {
            batch = classify(batch, f)?;
        }
        picks.clear();
        sink.write(&batch)?;
    }
    live.clear();
    for cursor in cursors.iter_mut() {
        live.push(cursor.batch.clone());
        cursor.slot = live.len() - 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::SortedHead;
    use crate::config::ChunkConfig;
    use crate::head::Head;
    use crate::model::{Entry, LabelSet, PushStream};

    fn stream(job: &str, host: &str, rows: i64, from: i64) -> PushStream {
        PushStream {
            labels: LabelSet::new(vec![
                ("job".into(), job.into()),
                ("host".into(), host.into()),
            ]),
            entries: (0..rows)
                .map(|t| Entry {
                    ts_ns: from + 2 * t,
                    line: format!("{job} {host} line {t}"),
                    metadata: vec![],
                })
                .collect(),
        }
    }

    /// A flushed file of `streams`, with its manifest entry.
    fn flushed(streams: Vec<PushStream>) -> Result<(Bytes, ChunkMeta)> {
        let mut head = Head::default();
        head.append(streams);
        let sorted = SortedHead::new(Arc::new(head));
        let windows = sorted.windows(i64::MAX);
        let window = windows
            .first()
            .ok_or_else(|| Error::Internal("no window".into()))?;
        let c = sorted.encode(window, &ChunkConfig::default())?;
        let meta = ChunkMeta {
            path: "t/0/f.parquet".into(),
            size: c.data.len() as u64,
            min_ts: c.min_ts,
            max_ts: c.max_ts,
            rows: c.rows,
            streams: c.streams,
            compacted: false,
            created_ms: 0,
            text_index_bytes: None,
            metadata_keys: c.metadata_keys,
            sha256: Some(c.sha256),
            text_index_sha256: None,
        };
        Ok((Bytes::from(c.data), meta))
    }

    /// Merge two flushed files of `make(0)` and `make(1)` (streams interleaving in time).
    fn merge_two(
        make: impl Fn(i64) -> Vec<PushStream>,
        row_group_rows: usize,
        line_page_bytes: usize,
    ) -> Result<(Vec<Output>, u64)> {
        let inputs = [flushed(make(0))?, flushed(make(1))?];
        let places = order::places(
            make(0)
                .into_iter()
                .map(|p| (p.labels.fingerprint(), Some(Arc::new(p.labels)))),
        );
        let settings = MergeSettings {
            row_group_rows,
            zstd_level: 3,
            line_page_bytes,
            max_file_bytes: usize::MAX,
            window_start_ns: 0,
            line_flags: None,
            fields: None,
        };
        let inputs = inputs
            .into_iter()
            .map(|(data, meta)| Input::new(data, &meta, &places))
            .collect::<Result<Vec<_>>>()?;
        merge(inputs, &places, &settings)
    }

    #[test]
    fn merged_files_start_row_groups_where_a_large_service_starts() -> Result<()> {
        // Two small services around two large ones; two inputs interleaving in time.
        let make = |from: i64| {
            vec![
                stream("a-small", "1", 50, from),
                stream("b-large", "1", 6_000, from),
                stream("b-large", "2", 6_000, from),
                stream("c-large", "1", 9_000, from),
                stream("d-small", "1", 30, from),
                stream("e-small", "1", 20, from),
            ]
        };
        let (outputs, duplicates) = merge_two(make, 128 * 1024, 1024 * 1024)?;
        assert_eq!((outputs.len(), duplicates), (1, 0));
        let out = &outputs[0];
        let groups = crate::chunk::row_group_rows(&out.data)?;
        // a-small (100 rows) alone before b-large starts; b-large (24,000); c-large
        // (18,000); the two small services after it share one.
        assert_eq!(groups, vec![100, 24_000, 18_000, 100]);
        // Rows come back in file order, each stream's rows in time order, and the
        // manifest entry says where each stream is.
        let rows = out
            .meta
            .stream_rows()
            .ok_or_else(|| Error::Internal("ranges".into()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(out.data.clone())?.build()?;
        let mut got: Vec<(StreamId, i64)> = Vec::new();
        for batch in reader {
            let batch = batch?;
            let ids = batch.column(0).as_primitive::<UInt64Type>();
            let ts = batch.column(1).as_primitive::<Int64Type>();
            got.extend((0..batch.num_rows()).map(|i| (ids.value(i), ts.value(i))));
        }
        assert_eq!(got.len(), 42_200);
        for (s, r) in out.meta.streams.iter().zip(rows) {
            let part = &got[r.start as usize..r.end as usize];
            assert!(part.iter().all(|g| g.0 == s.id));
            assert!(part.windows(2).all(|w| w[0].1 < w[1].1));
            assert_eq!(part.len() as u64, s.rows);
        }
        Ok(())
    }

    #[test]
    fn an_input_that_is_not_a_chunk_fails_the_merge() -> Result<()> {
        use arrow::array::{Int64Array, MapBuilder, StringArray, StringBuilder};
        use arrow::datatypes::{DataType, Field, Schema};
        // Right column names and count, but the stream id as text.
        let mut metadata = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        metadata.append(false)?;
        let metadata = metadata.finish();
        let schema = Arc::new(Schema::new(vec![
            Field::new(crate::schema::STREAM_ID, DataType::Utf8, false),
            Field::new(crate::schema::TS, DataType::Int64, false),
            Field::new(LINE, DataType::Utf8, false),
            Field::new(crate::schema::METADATA, metadata.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec!["1"])),
                Arc::new(Int64Array::from(vec![5])),
                Arc::new(StringArray::from(vec!["a line"])),
                Arc::new(metadata),
            ],
        )?;
        let mut writer = ArrowWriter::try_new(Vec::new(), schema, None)?;
        writer.write(&batch)?;
        let input = Input {
            data: Bytes::from(writer.into_inner()?),
            runs: std::iter::once(0..1).collect(),
            rows: 1,
            streams: vec![(1, 1)],
        };
        let err = Cursor::open(input).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("not a chunk")),
            "{err:?}"
        );
        Ok(())
    }

    /// Compaction writes `line_flags` with the storage's classifier, also for rows from
    /// files written before the column existed (one column less).
    #[test]
    fn merge_classifies_lines_also_from_files_without_flags() -> Result<()> {
        let make = |from: i64| vec![stream("a", "1", 40, from), stream("b", "2", 25, from)];
        let places = order::places(
            make(0)
                .into_iter()
                .map(|p| (p.labels.fingerprint(), Some(Arc::new(p.labels)))),
        );
        let (old, old_meta) = flushed(make(0))?;
        let (new, new_meta) = flushed(make(1))?;
        // The older file: the same rows without `line_flags`.
        let mut writer: Option<ArrowWriter<Vec<u8>>> = None;
        for batch in ParquetRecordBatchReaderBuilder::try_new(old)?.build()? {
            let batch = batch?.project(&[0, 1, 2, 3])?;
            let w = match writer.as_mut() {
                Some(w) => w,
                None => writer.insert(ArrowWriter::try_new(Vec::new(), batch.schema(), None)?),
            };
            w.write(&batch)?;
        }
        let old = writer.ok_or_else(|| Error::Internal("no rows".into()))?;
        let old = Bytes::from(old.into_inner()?);
        let settings = MergeSettings {
            row_group_rows: 1024,
            zstd_level: 3,
            line_page_bytes: 1 << 20,
            max_file_bytes: usize::MAX,
            window_start_ns: 0,
            line_flags: Some(Arc::new(|line: &str| line.len() as u8)),
            fields: None,
        };
        let inputs = vec![
            Input::new(old, &old_meta, &places)?,
            Input::new(new, &new_meta, &places)?,
        ];
        let (outputs, _) = merge(inputs, &places, &settings)?;
        let mut rows = 0;
        for out in &outputs {
            for batch in ParquetRecordBatchReaderBuilder::try_new(out.data.clone())?.build()? {
                let batch = batch?;
                let lines = batch.column(2).as_string::<i32>();
                let flags = batch
                    .column_by_name(crate::schema::LINE_FLAGS)
                    .ok_or_else(|| Error::Internal("no line_flags column".into()))?
                    .as_primitive::<arrow::datatypes::UInt8Type>();
                for i in 0..batch.num_rows() {
                    assert!(flags.is_valid(i));
                    assert_eq!(flags.value(i), lines.value(i).len() as u8);
                }
                rows += batch.num_rows();
            }
        }
        assert_eq!(rows, 130);
        Ok(())
    }

    #[test]
    fn needle_blocks_follow_line_pages() -> Result<()> {
        // Lines of varying length: pages of the line column hold different row counts,
        // some more than a block's maximum.
        let make = |from: i64| {
            let mut streams = vec![stream("a", "1", 30_000, from)];
            let mut long = stream("b", "1", 3_000, from);
            for (k, e) in long.entries.iter_mut().enumerate() {
                e.line = format!("{} {}", e.line, "x".repeat(k % 400));
            }
            streams.push(long);
            streams
        };
        let (outputs, _) = merge_two(make, 37_000, 256 * 1024)?;
        let out = &outputs[0];
        // The line column's pages, as file row ranges, read independently of the index.
        let meta = parquet::file::metadata::ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Required)
            .parse_and_finish(&out.data)?;
        let offsets = meta
            .offset_index()
            .ok_or_else(|| Error::Internal("no offset index".into()))?;
        let mut pages: Vec<Range<u64>> = Vec::new();
        let mut group_ends: Vec<u64> = Vec::new();
        let mut base = 0u64;
        for (group, columns) in meta.row_groups().iter().zip(offsets) {
            let rows = group.num_rows() as u64;
            let firsts: Vec<u64> = columns[2]
                .page_locations()
                .iter()
                .map(|p| p.first_row_index as u64)
                .collect();
            for (k, &f) in firsts.iter().enumerate() {
                let end = firsts.get(k + 1).copied().unwrap_or(rows);
                pages.push(base + f..base + end);
            }
            base += rows;
            group_ends.push(base);
        }
        assert_eq!(base, 66_000);
        let big = pages
            .iter()
            .filter(|p| p.end - p.start > u64::from(textindex::BLOCK_ROWS))
            .count();
        assert!(
            pages.len() > 5 && big > 0,
            "{} pages, {big} big",
            pages.len()
        );
        let index = TextIndex::decode("t", &out.text_index)?;
        let sizes: Vec<u64> = index.blocks.iter().map(|b| u64::from(b.rows)).collect();
        let mut next = 0u64;
        let mut joins = 0;
        for (i, b) in index.blocks.iter().enumerate() {
            let r = u64::from(b.first_row)..u64::from(b.first_row) + sizes[i];
            assert_eq!(r.start, next, "blocks cover the file in order");
            assert!(b.rows <= textindex::BLOCK_ROWS);
            // Rows of the block in each page it touches: one page, or two of which one
            // is a row group's short last page.
            let touched: Vec<&Range<u64>> = pages
                .iter()
                .filter(|p| p.start < r.end && r.start < p.end)
                .collect();
            assert!(
                touched.len() == 1
                    || (touched.len() == 2
                        && touched.iter().any(
                            |p| p.end - p.start < MIN_BLOCK_ROWS && group_ends.contains(&p.end)
                        )),
                "block {r:?} spans pages {touched:?}"
            );
            joins += usize::from(touched.len() == 2);
            // A row group's short last page forms no block of its own when it fits with
            // a neighbour.
            if let Some(p) = pages.iter().find(|p| **p == r) {
                if sizes[i] < MIN_BLOCK_ROWS && group_ends.contains(&p.end) {
                    let fits = |j: Option<usize>| {
                        j.and_then(|j| sizes.get(j))
                            .is_some_and(|&n| n + sizes[i] <= u64::from(textindex::BLOCK_ROWS))
                    };
                    assert!(!fits(i.checked_sub(1)) && !fits(Some(i + 1)), "{sizes:?}");
                }
            }
            next = r.end;
        }
        assert!(
            pages
                .iter()
                .any(|p| p.end - p.start < MIN_BLOCK_ROWS && group_ends.contains(&p.end)),
            "the data has short last pages to join"
        );
        assert!(joins > 0);
        assert_eq!(next, 66_000);
        // Big pages are split into equal blocks, not a full one and a remainder.
        for p in pages
            .iter()
            .filter(|p| p.end - p.start > u64::from(textindex::BLOCK_ROWS))
        {
            let sizes: Vec<u32> = index
                .blocks
                .iter()
                .filter(|b| p.contains(&u64::from(b.first_row)))
                .map(|b| b.rows)
                .collect();
            let (lo, hi) = (sizes.iter().min(), sizes.iter().max());
            assert!(
                sizes.len() >= 2 && hi.zip(lo).is_some_and(|(h, l)| h - l <= 1),
                "{sizes:?}"
            );
        }
        Ok(())
    }
}
