//! The logs table: a DataFusion plan ([`LogsTable::scan`]) over exactly the requested streams in
//! `[start, end)`, from the head snapshot and the chunk files the manifest selected.
//!
//! ```text
//!                      UnionExec
//!                /                  \
//!   DataSourceExec(memory)      FilterExec(stream_id IN ids AND start <= ts < end)
//!   head + frozen heads,              |
//!   already restricted          DataSourceExec(Parquet, predicate = same filter:
//!                               row groups and pages pruned by statistics / page index,
//!                               rows filtered while decoding)
//! ```
//!
//! Chunk files were already chosen with the manifest's per-stream time ranges (the
//! coarse, file-level step); the Parquet reader prunes inside files. When every file's
//! row selection is exactly the wanted rows (each selected stream's rows there lie inside
//! the range: `ChunkFile::rows_exact`), the files are read with no predicate and no
//! `FilterExec` (beyond a pushable line predicate). The stream and time
//! restriction is exact, so the provider answers every query filter `Unsupported` and lets
//! DataFusion apply those on top.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion_common::error::Result as DfResult;
use datafusion_common::DFSchema;
use datafusion_datasource::file_groups::FileGroup;
use datafusion_datasource::file_scan_config::FileScanConfigBuilder;
use datafusion_datasource::memory::MemorySourceConfig;
use datafusion_datasource::source::DataSourceExec;
use datafusion_datasource::PartitionedFile;
use datafusion_datasource_parquet::{source::ParquetSource, ParquetFileReaderFactory};
use datafusion_execution::object_store::ObjectStoreUrl;
use datafusion_expr::execution_props::ExecutionProps;
use datafusion_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion_expr::{col, lit, Expr, Operator};
use datafusion_physical_expr::create_physical_expr;
use datafusion_physical_expr::expressions::{col as physical_col, BinaryExpr};
use datafusion_physical_plan::empty::EmptyExec;
use datafusion_physical_plan::filter::FilterExecBuilder;
use datafusion_physical_plan::union::UnionExec;
use datafusion_physical_plan::ExecutionPlan;
use datafusion_physical_plan::PhysicalExpr;

use datafusion_datasource_parquet::ParquetRowSelection;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};

use crate::erase::{EraseExpr, EraseFilter, ErasedRowsCache, LineErase};
use crate::model::StreamId;

mod footers;
mod predicate;
mod recent;

pub use footers::ChunkReaders;
pub(crate) use footers::OpenedFile;
pub use recent::RecentRows;

use crate::schema::{logs_schema, LINE, STREAM_ID, TS};
use crate::textindex::{self, FieldBound, TextIndex, TextNeedle};
use predicate::LineMatchExpr;
pub use predicate::{LineMatch, LinePredicate, OnRejected};

/// A chunk file to read.
#[derive(Debug, Clone)]
pub struct ChunkFile {
    /// Object path inside the chunk store.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Rows in the file.
    pub rows: u64,
    /// Whether it has a trigram index ([`crate::textindex`]).
    pub text_index: bool,
    /// SHA-256 of the trigram index, as listed (checked at each load).
    pub text_index_sha256: Option<String>,
    /// Row ranges of the selected streams, from the manifest.
    pub stream_rows: Vec<Range<u64>>,
    /// Whether `stream_rows` are exactly the selected streams' rows in the table's range
    /// (`ChunkMeta::rows_exact`): no row needs the stream and time test.
    pub rows_exact: bool,
    /// Structured metadata keys of its rows (`None`: unknown).
    pub metadata_keys: Option<Vec<String>>,
    /// Rows of it the scan must leave out (expired or deleted, see [`crate::erase`]);
    /// `None` for a file without such rows, read as before. A caller keeping results
    /// per file keys them by [`ChunkFile::erase_key`] too.
    pub erase: Option<Arc<EraseFilter>>,
    /// Deletes with line filters that remove rows of it: the scan leaves those rows out of
    /// its selection (see the `erase::rows` module).
    pub(crate) line_erase: Vec<LineErase>,
}

impl ChunkFile {
    /// Identifies what the scan leaves out of this file (`None`: nothing): equal keys,
    /// equal rows left out.
    pub fn erase_key(&self) -> Option<u64> {
        if self.erase.is_none() && self.line_erase.is_empty() {
            return None;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.erase.as_ref().map(|e| e.key()).hash(&mut h);
        for l in &self.line_erase {
            l.request_id().hash(&mut h);
        }
        Some(h.finish())
    }
}

/// Rows of one stream in the minute ending at `minute_end_ns` (see
/// [`LogsTable::take_minute_counts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteCount {
    /// Stream.
    pub stream: StreamId,
    /// End of the minute (inclusive): the minute is `(end − 60 s, end]`.
    pub minute_end_ns: i64,
    /// Rows.
    pub rows: u32,
}

/// Loads trigram indexes and keeps them in memory (they are small: about half a byte per
/// row), so a repeated needle query reads no index twice.
pub struct TextIndexCache {
    store: Arc<dyn ObjectStore>,
    entries: parking_lot::Mutex<HashMap<String, Arc<TextIndex>>>,
    /// Chunk files whose index did not match its listed SHA-256 (until unlisted).
    damaged: parking_lot::Mutex<HashSet<String>>,
    /// Indexes found damaged by this process.
    damaged_total: std::sync::atomic::AtomicU64,
    bytes: AtomicUsize,
    capacity: usize,
}

impl TextIndexCache {
    /// Chunk files whose block index was found damaged and is not unlisted yet.
    pub(crate) fn damaged(&self) -> HashSet<String> {
        self.damaged.lock().clone()
    }

    /// Forget damage of indexes no longer listed.
    pub(crate) fn forget_damaged(&self, unlisted: &[String]) {
        let mut damaged = self.damaged.lock();
        for p in unlisted {
            damaged.remove(p);
        }
    }

    /// Block indexes this process found damaged.
    pub fn damaged_total(&self) -> u64 {
        self.damaged_total
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A cache over `store` holding at most about `capacity` bytes.
    pub fn new(store: Arc<dyn ObjectStore>, capacity: usize) -> TextIndexCache {
        TextIndexCache {
            store,
            entries: parking_lot::Mutex::new(HashMap::new()),
            damaged: parking_lot::Mutex::new(HashSet::new()),
            damaged_total: std::sync::atomic::AtomicU64::new(0),
            bytes: AtomicUsize::new(0),
            capacity,
        }
    }

    /// The index of chunk file `chunk_path`, whose bytes must have SHA-256 `sha256` (when
    /// listed with one). A damaged index is an error, remembered: callers read the whole
    /// file instead, and the compactor unlists it ([`crate::quarantine`]).
    pub async fn get(
        &self,
        chunk_path: &str,
        sha256: Option<&str>,
    ) -> crate::Result<Arc<TextIndex>> {
        if let Some(hit) = self.entries.lock().get(chunk_path) {
            return Ok(hit.clone());
        }
        let path = textindex::index_path(chunk_path);
        if self.damaged.lock().contains(chunk_path) {
            return Err(crate::Error::Corrupt {
                path,
                detail: "block index damaged (found earlier)".into(),
            });
        }
        let object = ObjectPath::from(path.as_str());
        let os_err = |e| crate::Error::ObjectStore {
            path: path.clone(),
            source: e,
        };
        let data = self
            .store
            .get(&object)
            .await
            .map_err(os_err)?
            .bytes()
            .await
            .map_err(os_err)?;
        if let Some(expected) = sha256 {
            let found = crate::chain::sha256_hex(&data);
            if found != expected {
                if self.damaged.lock().insert(chunk_path.to_string()) {
                    self.damaged_total
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::error!(file = %path, found = %found, listed = %expected,
                        "block index damaged: its SHA-256 differs from the listing; its chunk file is read whole");
                }
                return Err(crate::Error::Corrupt {
                    path,
                    detail: format!("SHA-256 is {found}, the listing records {expected}"),
                });
            }
        }
        let index = Arc::new(TextIndex::decode(&path, &data)?);
        let size = index.memory_size();
        let mut entries = self.entries.lock();
        if self.bytes.load(Ordering::Relaxed) + size > self.capacity {
            // Rarely reached (a day of 5M lines needs ~3 MiB); start over rather than
            // track recency.
            entries.clear();
            self.bytes.store(0, Ordering::Relaxed);
        }
        entries.insert(chunk_path.to_string(), index.clone());
        self.bytes.fetch_add(size, Ordering::Relaxed);
        Ok(index)
    }
}

/// The rows of some streams over a time range, in head and chunk files
/// ([`crate::Storage::logs_table`]); [`LogsTable::scan`] plans their read.
pub struct LogsTable {
    schema: SchemaRef,
    streams: Vec<StreamId>,
    start_ns: i64,
    end_ns: i64,
    head: Vec<RecordBatch>,
    files: Vec<ChunkFile>,
    store_url: ObjectStoreUrl,
    /// Byte strings every wanted row contains; trigram indexes skip blocks lacking one.
    needles: Vec<TextNeedle>,
    /// Comparisons every wanted row's field passes; block field statistics skip blocks
    /// where none can.
    bounds: Vec<FieldBound>,
    indexes: Option<Arc<TextIndexCache>>,
    line_predicate: Option<LinePredicate>,
    /// Opens chunk files; `None`: DataFusion's default, which parses each footer anew.
    parquet_readers: Option<Arc<dyn ParquetFileReaderFactory>>,
    /// Finds the rows of [`ChunkFile::line_erase`].
    erased_rows: Option<Arc<ErasedRowsCache>>,
    /// Serves recent rows of files from memory.
    recent: Option<Arc<RecentRows>>,
    /// Quarantined files holding rows of this table's streams and range: not read.
    skipped: Vec<crate::quarantine::Skipped>,
}

impl fmt::Debug for LogsTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogsTable")
            .field("streams", &self.streams.len())
            .field("start_ns", &self.start_ns)
            .field("end_ns", &self.end_ns)
            .field(
                "head_rows",
                &self.head.iter().map(|b| b.num_rows()).sum::<usize>(),
            )
            .field("files", &self.files.len())
            .finish()
    }
}

impl LogsTable {
    /// A table over the given head batches (already restricted) and chunk files.
    pub fn new(
        streams: Vec<StreamId>,
        start_ns: i64,
        end_ns: i64,
        head: Vec<RecordBatch>,
        files: Vec<ChunkFile>,
        store_url: ObjectStoreUrl,
    ) -> LogsTable {
        let mut streams = streams;
        streams.sort_unstable();
        streams.dedup();
        LogsTable {
            schema: logs_schema(),
            streams,
            start_ns,
            end_ns,
            head,
            files,
            store_url,
            needles: Vec::new(),
            bounds: Vec::new(),
            indexes: None,
            line_predicate: None,
            parquet_readers: None,
            erased_rows: None,
            recent: None,
            skipped: Vec::new(),
        }
    }

    /// Take rows of files in a recent range from `recent` instead of their Parquet pages.
    pub(crate) fn with_skipped(mut self, skipped: Vec<crate::quarantine::Skipped>) -> Self {
        self.skipped = skipped;
        self
    }

    /// Quarantined chunk files holding rows this table would have read
    /// ([`crate::quarantine`]): the answer lacks those rows.
    pub fn skipped(&self) -> &[crate::quarantine::Skipped] {
        &self.skipped
    }

    pub(crate) fn with_recent_rows(mut self, recent: Arc<RecentRows>) -> Self {
        self.recent = Some(recent);
        self
    }

    /// Move the files `recent` serves from memory out of `files`, their rows into `memory`.
    async fn take_recent<'a>(
        &self,
        files: Vec<(&'a ChunkFile, RowSelection)>,
        memory: &mut Vec<RecordBatch>,
    ) -> DfResult<Vec<(&'a ChunkFile, RowSelection)>> {
        let Some(recent) = &self.recent else {
            return Ok(files);
        };
        let mut out = Vec::with_capacity(files.len());
        for (f, selection) in files {
            if f.erase.is_some() || !f.line_erase.is_empty() {
                out.push((f, selection));
                continue;
            }
            let rows = recent
                .rows(f, &self.streams, self.start_ns, self.end_ns)
                .await
                .map_err(|e| datafusion_common::error::DataFusionError::External(Box::new(e)))?;
            match rows {
                Some(batches) => {
                    for b in batches {
                        if b.schema() == self.schema {
                            memory.push(b);
                        } else {
                            memory.push(crate::schema::cast_batch(&b, &self.schema)?);
                        }
                    }
                }
                None => out.push((f, selection)),
            }
        }
        Ok(out)
    }

    /// Find the rows line-filtered deletes remove from the files through `cache`.
    pub(crate) fn with_erased_rows(mut self, cache: Arc<ErasedRowsCache>) -> Self {
        self.erased_rows = Some(cache);
        self
    }

    /// The rows the line-filtered deletes of `f` remove, sorted by position (found now
    /// where not known yet).
    async fn erased_rows_of(&self, f: &ChunkFile) -> crate::Result<Vec<crate::erase::ErasedRow>> {
        if f.line_erase.is_empty() {
            return Ok(Vec::new());
        }
        let cache = self.erased_rows.as_ref().ok_or_else(|| {
            crate::Error::Internal("a scan with line-filtered deletes has no row finder".into())
        })?;
        cache.file_rows(&f.line_erase).await
    }

    /// Open chunk files through `readers` (the storage's, which keeps parsed footers).
    pub fn with_parquet_readers(mut self, readers: Arc<dyn ParquetFileReaderFactory>) -> Self {
        self.parquet_readers = Some(readers);
        self
    }

    /// Return `line` as Utf8View ([`crate::schema::logs_schema_line_views`]): the Parquet
    /// reader then points each line into its decompressed page instead of copying it into
    /// a new buffer, and filtering or caching rows copies 16-byte views, not lines. A
    /// batch keeps its pages alive while it lives, so this suits scans whose batches are
    /// consumed at once (metric samples), not ones that keep rows (a top-N of lines).
    pub fn with_line_views(mut self) -> DfResult<Self> {
        let schema = crate::schema::logs_schema_line_views();
        self.head = self
            .head
            .iter()
            .map(|b| crate::schema::cast_batch(b, &schema))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        self.schema = schema;
        Ok(self)
    }

    /// Let the Parquet reader drop rows whose line fails `predicate` while decoding, so their
    /// other columns are never decoded. Rows failing it may still come back (the head, files
    /// that may hold one of its metadata keys): callers filter exactly.
    pub fn with_line_predicate(mut self, predicate: LinePredicate) -> Self {
        self.line_predicate = Some(predicate);
        self
    }

    /// The line predicate, when every file read is known to lack its metadata keys.
    fn pushable_line_predicate(&self) -> Option<&LinePredicate> {
        let p = self.line_predicate.as_ref()?;
        self.files
            .iter()
            .all(|f| {
                f.metadata_keys.as_ref().is_some_and(|keys| {
                    !p.unless_metadata_keys
                        .iter()
                        .any(|k| keys.binary_search(k).is_ok())
                })
            })
            .then_some(p)
    }

    /// Read only rows that may contain every one of `needles` (case-sensitive substrings),
    /// using the trigram indexes of files that have one, loaded through `indexes`. Rows
    /// without the needles may still be returned: callers filter exactly.
    pub fn with_needles(mut self, needles: Vec<TextNeedle>, indexes: Arc<TextIndexCache>) -> Self {
        self.needles = needles.into_iter().filter(|n| n.bytes.len() >= 3).collect();
        self.indexes = Some(indexes);
        self
    }

    /// Read only rows that may pass every one of `bounds` (numeric comparisons of a field),
    /// using the field statistics of files whose index has them (loaded as for
    /// [`Self::with_needles`], which must come first). Rows failing them may still be
    /// returned: callers filter exactly.
    pub fn with_field_bounds(mut self, bounds: Vec<FieldBound>) -> Self {
        self.bounds = bounds;
        self
    }

    /// The files to read, each with the rows to read: those of the selected streams that
    /// its trigram index cannot rule out. Files with no such row are left out.
    async fn file_selections(&self) -> DfResult<Vec<(&ChunkFile, RowSelection)>> {
        let mut out = Vec::with_capacity(self.files.len());
        for (f, needles) in self.needle_selections().await? {
            let total = usize::try_from(f.rows).unwrap_or(usize::MAX);
            let streams = RowSelection::from_consecutive_ranges(
                f.stream_rows
                    .iter()
                    .map(|r| r.start as usize..(r.end as usize).min(total)),
                total,
            );
            let mut selection = match needles {
                Some(n) => n.intersection(&streams),
                None => streams,
            };
            if !f.line_erase.is_empty() {
                let erased = self.erased_rows_of(f).await.map_err(|e| {
                    datafusion_common::error::DataFusionError::External(Box::new(e))
                })?;
                if !erased.is_empty() {
                    selection = selection.intersection(&crate::erase::kept_rows(&erased, total));
                }
            }
            if selection.row_count() > 0 {
                out.push((f, selection));
            }
        }
        Ok(out)
    }

    /// The files to read, each with the rows its trigram index cannot rule out (`None`:
    /// all rows). Files whose index rules out every row are left out.
    async fn needle_selections(&self) -> DfResult<Vec<(&ChunkFile, Option<RowSelection>)>> {
        let mut out = Vec::with_capacity(self.files.len());
        for f in &self.files {
            let index = if self.needles.is_empty() && self.bounds.is_empty() {
                None
            } else {
                self.index_of(f).await
            };
            let Some(index) = index else {
                out.push((f, None));
                continue;
            };
            let ranges = index.candidate_rows_with(
                &self.streams,
                self.start_ns,
                self.end_ns,
                &self.needles,
                &self.bounds,
            );
            if ranges.is_empty() {
                continue;
            }
            let total = usize::try_from(f.rows).unwrap_or(usize::MAX);
            let selection = RowSelection::from_consecutive_ranges(
                ranges.iter().map(|r| r.start as usize..r.end as usize),
                total,
            );
            out.push((f, Some(selection)));
        }
        Ok(out)
    }

    /// Take over from the scan the files whose index has [`textindex::MinuteCounts`] and
    /// return their rows per (stream, minute `m`), for minutes `((m − 1)·60 s, m·60 s]`
    /// inside the table's range. Only a range made of whole such minutes (`start` and
    /// `end` one nanosecond past a minute) can be answered this way; otherwise nothing
    /// is taken. The files taken are no longer scanned, so counts plus the scan's rows
    /// are the table's rows exactly once. A file whose index cannot be read stays in the
    /// scan.
    pub async fn take_minute_counts(&mut self) -> Vec<MinuteCount> {
        let aligned = |t: i64| (t - 1).rem_euclid(textindex::MINUTE_NS) == 0;
        if !self.needles.is_empty()
            || !self.bounds.is_empty()
            || !aligned(self.start_ns)
            || !aligned(self.end_ns)
        {
            return Vec::new();
        }
        let first = textindex::minute_of(self.start_ns);
        let last = textindex::minute_of(self.end_ns - 1);
        let mut out = Vec::new();
        let mut kept = Vec::with_capacity(self.files.len());
        for f in std::mem::take(&mut self.files) {
            if f.erase.is_some() {
                // The counts include erased rows.
                kept.push(f);
                continue;
            }
            let index = self.index_of(&f).await;
            let Some(counts) = index.as_ref().and_then(|i| i.counts.as_ref()) else {
                kept.push(f);
                continue;
            };
            // Rows of line-filtered deletes come off the counts of their minutes.
            let mut erased: HashMap<(StreamId, i64), u32> = HashMap::new();
            match self.erased_rows_of(&f).await {
                Ok(rows) => {
                    for r in rows {
                        if r.ts >= self.start_ns
                            && r.ts < self.end_ns
                            && self.streams.binary_search(&r.stream).is_ok()
                        {
                            *erased
                                .entry((r.stream, textindex::minute_of(r.ts)))
                                .or_default() += 1;
                        }
                    }
                }
                Err(e) => {
                    // The scan tries again, and fails the query if it fails again.
                    tracing::warn!(file = %f.path, error = %e, "rows of a pending delete not found");
                    kept.push(f);
                    continue;
                }
            }
            // Most (stream, minute) entries have nothing erased: a search among the few
            // streams that do spares them a hash lookup each.
            let mut erased_streams: Vec<StreamId> = erased.keys().map(|k| k.0).collect();
            erased_streams.sort_unstable();
            erased_streams.dedup();
            counts.for_each(&self.streams, first, last, |stream, minute, rows| {
                let rows = if erased_streams.binary_search(&stream).is_ok() {
                    rows.saturating_sub(erased.get(&(stream, minute)).copied().unwrap_or(0))
                } else {
                    rows
                };
                if rows > 0 {
                    out.push(MinuteCount {
                        stream,
                        minute_end_ns: minute.saturating_mul(textindex::MINUTE_NS),
                        rows,
                    })
                }
            });
        }
        self.files = kept;
        out
    }

    /// The sidecar index of `f`, when it has one that loads. An index only saves reading:
    /// without it the file is read whole and the answer is the same, so a damaged one is
    /// logged, never an error.
    async fn index_of(&self, f: &ChunkFile) -> Option<Arc<TextIndex>> {
        let cache = self.indexes.as_ref().filter(|_| f.text_index)?;
        match cache.get(&f.path, f.text_index_sha256.as_deref()).await {
            Ok(index) => Some(index),
            Err(e) => {
                tracing::warn!(file = %f.path, error = %e, "chunk index unusable; reading the whole file");
                None
            }
        }
    }

    /// Chunk files this table reads.
    pub fn files(&self) -> &[ChunkFile] {
        &self.files
    }

    /// The same table as one table per part: the head's rows (`None` when there are none)
    /// and one table per chunk file, each with this table's settings. Chunk files never
    /// change once written, so a caller may keep results per file (keyed by its path and
    /// rows) and read only the parts it has no result for.
    pub fn split_by_file(self) -> (Option<LogsTable>, Vec<(ChunkFile, LogsTable)>) {
        let part = |head: Vec<RecordBatch>, files: Vec<ChunkFile>| LogsTable {
            schema: self.schema.clone(),
            streams: self.streams.clone(),
            start_ns: self.start_ns,
            end_ns: self.end_ns,
            head,
            files,
            store_url: self.store_url.clone(),
            needles: self.needles.clone(),
            bounds: self.bounds.clone(),
            indexes: self.indexes.clone(),
            line_predicate: self.line_predicate.clone(),
            parquet_readers: self.parquet_readers.clone(),
            erased_rows: self.erased_rows.clone(),
            recent: self.recent.clone(),
            skipped: Vec::new(),
        };
        let head = (!self.head.is_empty()).then(|| part(self.head.clone(), Vec::new()));
        let files = self
            .files
            .iter()
            .map(|f| (f.clone(), part(Vec::new(), vec![f.clone()])))
            .collect();
        (head, files)
    }

    /// Rows coming from the head.
    pub fn head_rows(&self) -> usize {
        self.head.iter().map(|b| b.num_rows()).sum()
    }

    /// `stream_id IN (…) AND stream_id BETWEEN min AND max AND start <= ts < end`. The
    /// redundant bounds let statistics prune even when the IN list is too long for
    /// DataFusion's pruning rewrite.
    fn restriction(&self) -> Expr {
        let ids: Vec<Expr> = self.streams.iter().map(|&id| lit(id)).collect();
        let (lo, hi) = (
            self.streams.first().copied().unwrap_or(0),
            self.streams.last().copied().unwrap_or(0),
        );
        col(STREAM_ID)
            .in_list(ids, false)
            .and(col(STREAM_ID).gt_eq(lit(lo)))
            .and(col(STREAM_ID).lt_eq(lit(hi)))
            .and(col(TS).gt_eq(lit(self.start_ns)))
            .and(col(TS).lt(lit(self.end_ns)))
    }

    /// [`Self::restriction`] over rows of `schema`. Its literals have the columns' own
    /// types, so it needs no coercion or simplification.
    fn physical_restriction(&self, schema: &DFSchema) -> DfResult<Arc<dyn PhysicalExpr>> {
        create_physical_expr(
            &self.restriction(),
            schema,
            &ExecutionProps::new(),
            &PhysicalPlanningContext::default(),
        )
    }
}

/// Files are split for parallel decoding only above this many selected rows per piece.
const MIN_SPLIT_ROWS: usize = 16_384;

/// Split `selection` into up to `parts` selections of about equal selected rows (at least
/// `min_rows` each), together selecting exactly the same rows.
fn split_selection(selection: &RowSelection, parts: usize, min_rows: usize) -> Vec<RowSelection> {
    let total_selected = selection.row_count();
    let parts = parts.min(total_selected / min_rows.max(1)).max(1);
    if parts == 1 {
        return vec![selection.clone()];
    }
    let share = total_selected.div_ceil(parts);
    let mut out = Vec::with_capacity(parts);
    // Each piece keeps the rows before it as skipped, so row numbers stay the file's.
    let mut current: Vec<RowSelector> = Vec::new();
    let mut taken = 0usize;
    let mut position = 0usize;
    for s in selection.iter() {
        if s.skip {
            current.push(RowSelector::skip(s.row_count));
            position += s.row_count;
            continue;
        }
        let mut left = s.row_count;
        while left > 0 {
            // Runs shorter than `min_rows` (a block or two of a needle search) stay whole:
            // cutting one would make both pieces decompress its pages.
            let n = if left < min_rows {
                left
            } else {
                left.min(share.saturating_sub(taken).max(1))
            };
            current.push(RowSelector::select(n));
            taken += n;
            left -= n;
            position += n;
            if taken >= share && out.len() + 1 < parts {
                out.push(std::mem::take(&mut current));
                current.push(RowSelector::skip(position));
                taken = 0;
            }
        }
    }
    out.push(current);
    // Every piece spans the whole file (trailing rows skipped), as the reader expects.
    out.into_iter()
        .map(|mut piece| {
            let len: usize = piece.iter().map(|s| s.row_count).sum();
            if len < position {
                piece.push(RowSelector::skip(position - len));
            }
            RowSelection::from(piece)
        })
        .collect()
}

impl LogsTable {
    /// Schema of the table's rows ([`logs_schema`]); `projection`s index into it.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The physical plan reading exactly the table's rows (the `projection`'s columns of
    /// them, all columns when `None`), in at most `partitions` partitions: head rows from
    /// memory, chunk files through DataFusion's Parquet scan with the rows each file's
    /// selection, restriction and indexes leave.
    pub async fn scan(
        &self,
        partitions: usize,
        projection: Option<&Vec<usize>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        let files = if self.streams.is_empty() {
            Vec::new()
        } else {
            self.file_selections().await?
        };
        // Head rows, and the rows of files read from memory.
        let mut memory = self.head.clone();
        let files = self.take_recent(files, &mut memory).await?;
        if !memory.is_empty() {
            inputs.push(MemorySourceConfig::try_new_exec(
                &[memory],
                self.schema.clone(),
                projection.cloned(),
            )?);
        }
        // Files with erased rows are read through their own filter; the others as if
        // nothing were erased.
        let (erased, plain): (Vec<_>, Vec<_>) =
            files.into_iter().partition(|(f, _)| f.erase.is_some());
        if !plain.is_empty() {
            inputs.push(self.files_plan(partitions, projection, plain, None)?);
        }
        if let Some(filter) = erased.first().and_then(|(f, _)| f.erase.clone()) {
            inputs.push(self.files_plan(partitions, projection, erased, Some(filter))?);
        }
        Self::union(inputs, &self.schema, projection)
    }

    /// The plan reading `files` (each with its row selection), leaving out the rows
    /// `erase` erases.
    fn files_plan(
        &self,
        partitions: usize,
        projection: Option<&Vec<usize>>,
        files: Vec<(&ChunkFile, RowSelection)>,
        erase: Option<Arc<EraseFilter>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // Row selections that are exactly the wanted rows (a range covering the files'
        // time spans) need no stream and time test: rows are then only read.
        let exact = erase.is_none() && files.iter().all(|(f, _)| f.rows_exact);
        let df_schema = DFSchema::try_from(self.schema.as_ref().clone())?;
        let restriction = self.physical_restriction(&df_schema)?;
        let line_match = match self.pushable_line_predicate() {
            Some(p) => {
                let line = physical_col(LINE, &self.schema)?;
                Some(Arc::new(LineMatchExpr::new(line, p)) as Arc<dyn PhysicalExpr>)
            }
            None => None,
        };
        let predicate =
            match (line_match, exact) {
                (Some(m), true) => Some(m),
                (Some(m), false) => Some(Arc::new(BinaryExpr::new(restriction, Operator::And, m))
                    as Arc<dyn PhysicalExpr>),
                (None, true) => None,
                (None, false) => Some(restriction),
            };
        let mut source = ParquetSource::new(self.schema.clone()).with_enable_page_index(true);
        if let Some(predicate) = predicate {
            source = source
                .with_predicate(predicate)
                .with_pushdown_filters(true)
                .with_reorder_filters(true);
        }
        if let Some(readers) = &self.parquet_readers {
            source = source.with_parquet_file_reader_factory(readers.clone());
        }
        let partitions = partitions.max(1);
        // Fewer files than partitions (a recent hour is one file): split each file's
        // rows so every core decodes a share.
        let pieces = if files.len() < partitions {
            partitions.div_ceil(files.len())
        } else {
            1
        };
        let mut units: Vec<(&ChunkFile, RowSelection)> = Vec::new();
        for (f, selection) in files {
            for part in split_selection(&selection, pieces, MIN_SPLIT_ROWS) {
                units.push((f, part));
            }
        }
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); partitions.min(units.len())];
        let n_groups = groups.len();
        for (i, (f, selection)) in units.into_iter().enumerate() {
            let file = PartitionedFile::new(f.path.clone(), f.size)
                .with_extension(ParquetRowSelection::new(selection));
            groups[i % n_groups].push(file);
        }
        let mut builder = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source));
        for g in groups {
            builder = builder.with_file_group(FileGroup::new(g));
        }
        // The reader decodes only the projected columns plus the restriction's own
        // (`stream_id`, `ts`): a count never decompresses a line.
        let mut read: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        if exact {
            builder = builder.with_projection_indices(Some(read))?;
            return Ok(DataSourceExec::from_data_source(builder.build()));
        }
        let line_needed = erase.as_ref().is_some_and(|e| e.needs_line());
        for c in [STREAM_ID, TS, LINE] {
            if c == LINE && !line_needed {
                continue;
            }
            let i = self.schema.index_of(c)?;
            if !read.contains(&i) {
                read.push(i);
            }
        }
        read.sort_unstable();
        builder = builder.with_projection_indices(Some(read.clone()))?;
        let parquet = DataSourceExec::from_data_source(builder.build());
        let read_schema = Arc::new(self.schema.project(&read)?);
        let read_df = DFSchema::try_from(read_schema.as_ref().clone())?;
        let mut filter_predicate = self.physical_restriction(&read_df)?;
        if let Some(erase) = erase {
            let mut columns = vec![
                physical_col(STREAM_ID, &read_schema)?,
                physical_col(TS, &read_schema)?,
            ];
            if line_needed {
                columns.push(physical_col(LINE, &read_schema)?);
            }
            let keep = Arc::new(EraseExpr::new(erase, columns)) as Arc<dyn PhysicalExpr>;
            filter_predicate = Arc::new(BinaryExpr::new(filter_predicate, Operator::And, keep));
        }
        // Positions of the requested columns among those read.
        let out: Option<Vec<usize>> = projection.map(|p| {
            p.iter()
                .filter_map(|c| read.iter().position(|r| r == c))
                .collect()
        });
        // The Parquet reader filters rows while decoding; the FilterExec keeps the
        // restriction exact whatever the reader decides to push down.
        let filter = FilterExecBuilder::new(filter_predicate, parquet)
            .apply_projection(out)?
            .build()?;
        Ok(Arc::new(filter))
    }

    /// The scan of `inputs` (head and files, each already projected).
    fn union(
        inputs: Vec<Arc<dyn ExecutionPlan>>,
        schema: &SchemaRef,
        projection: Option<&Vec<usize>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match inputs.len() {
            0 => {
                let projected = match projection {
                    Some(p) => Arc::new(schema.project(p)?),
                    None => schema.clone(),
                };
                Ok(Arc::new(EmptyExec::new(projected)))
            }
            _ => UnionExec::try_new(inputs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selected(s: &RowSelection) -> Vec<usize> {
        let mut out = Vec::new();
        let mut at = 0;
        for r in s.iter() {
            if !r.skip {
                out.extend(at..at + r.row_count);
            }
            at += r.row_count;
        }
        out
    }

    #[test]
    fn split_selections_partition_the_selected_rows() {
        let whole =
            RowSelection::from_consecutive_ranges([3..40_000, 50_000..90_000].into_iter(), 100_000);
        let pieces = split_selection(&whole, 2, 16_384);
        assert_eq!(pieces.len(), 2);
        let mut all: Vec<usize> = pieces.iter().flat_map(selected).collect();
        all.sort_unstable();
        assert_eq!(all, selected(&whole));
        for p in &pieces {
            assert_eq!(p.iter().map(|r| r.row_count).sum::<usize>(), 100_000);
            let n = p.row_count();
            assert!((39_990..=40_000).contains(&n), "{n}");
        }
        // Too few rows to be worth splitting.
        let small = RowSelection::from_consecutive_ranges(std::iter::once(0..1000), 5000);
        assert_eq!(split_selection(&small, 4, 16_384).len(), 1);
        // Three pieces.
        let pieces = split_selection(&whole, 3, 16_384);
        assert_eq!(pieces.len(), 3);
        let mut all: Vec<usize> = pieces.iter().flat_map(selected).collect();
        all.sort_unstable();
        assert_eq!(all, selected(&whole));
    }
}
