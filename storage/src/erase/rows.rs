//! The rows line-filtered deletes remove from chunk files, found once and kept.
//!
//! A delete with line filters (`{env=~".+"} |= "mallory"`) typically removes a few rows
//! of many files. Reading each such file through a per-row check would decompress every
//! line of it on every query, even a count that otherwise reads no line at all (or none
//! of the file, from its minute counts). Instead, the rows one request removes from one
//! file are found once: the file's trigram index narrows them to the blocks that may hold
//! the request's literals, and only those blocks' `stream_id`, `ts` and `line` are read.
//! The answer is kept by (file, request): a file never changes and neither does a
//! request, so it holds until the compactor replaces the file or the request leaves the
//! tombstones. A scan then leaves those positions out of its row selection, minute counts
//! subtract them, and the file is otherwise read as if nothing were erased.
//!
//! Retention cut-offs and deletes without line filters need no line: they stay a per-row
//! check of `stream_id` and `ts` ([`super::EraseExpr`]).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, StringArray, UInt64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, UInt64Type};
use datafusion_datasource_parquet::ParquetFileReaderFactory;
use futures::TryStreamExt;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection};
use parquet::arrow::async_reader::ParquetRecordBatchStream;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::file::metadata::PageIndexPolicy;

use super::LineMatch;
use crate::error::{Error, Result};
use crate::model::StreamId;
use crate::scan::{OpenedFile, TextIndexCache};
use crate::schema::{LINE, STREAM_ID, TS};
use crate::textindex::TextNeedle;

/// One row a delete removes from a chunk file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ErasedRow {
    /// Position in the file.
    pub(crate) pos: u64,
    pub(crate) stream: StreamId,
    pub(crate) ts: i64,
}

/// What one line-filtered delete removes from one chunk file: known, or still to find.
#[derive(Clone)]
pub(crate) enum LineErase {
    Known {
        request_id: String,
        rows: Arc<[ErasedRow]>,
    },
    Find(Arc<FindRows>),
}

impl LineErase {
    /// The delete request.
    pub(crate) fn request_id(&self) -> &str {
        match self {
            LineErase::Known { request_id, .. } => request_id,
            LineErase::Find(job) => &job.request_id,
        }
    }
}

impl std::fmt::Debug for LineErase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineErase::Known { request_id, rows } => {
                write!(f, "Known({request_id}: {} rows)", rows.len())
            }
            LineErase::Find(job) => write!(f, "Find({} in {})", job.request_id, job.path),
        }
    }
}

/// One stream's rows in one chunk file.
pub(crate) struct FileStream {
    pub(crate) path: String,
    pub(crate) size: u64,
    pub(crate) file_rows: u64,
    /// The stream's rows in the file (from the manifest).
    pub(crate) ranges: Vec<Range<u64>>,
    pub(crate) stream: StreamId,
}

/// How to find the rows one request removes from one file.
pub(crate) struct FindRows {
    pub(crate) path: String,
    pub(crate) size: u64,
    pub(crate) file_rows: u64,
    pub(crate) text_index: bool,
    /// SHA-256 of the block index, as listed.
    pub(crate) text_index_sha256: Option<String>,
    pub(crate) request_id: String,
    /// Streams of the file the request selects, sorted.
    pub(crate) streams: Vec<StreamId>,
    /// Their rows in the file within the request's time range (from the manifest).
    pub(crate) ranges: Vec<Range<u64>>,
    /// Inclusive bounds, ns.
    pub(crate) start_ns: i64,
    pub(crate) end_ns: i64,
    pub(crate) line: LineMatch,
    pub(crate) needles: Vec<TextNeedle>,
}

/// The rows one request removes from one file, by position.
type FileRows = Arc<[ErasedRow]>;

/// `(ts, line bytes of this and every earlier row)` of one stream in one file, by time.
type StreamSizes = Arc<[(i64, u64)]>;

/// Rows found per (file, request), and the row times and line sizes of streams in files a
/// retention cut-off falls inside (for exact volumes), bounded in rows held.
pub struct ErasedRowsCache {
    readers: Arc<dyn ParquetFileReaderFactory>,
    indexes: Arc<TextIndexCache>,
    entries: parking_lot::Mutex<HashMap<(String, String), FileRows>>,
    /// Per (file, stream): `(ts, line bytes of this and every earlier row)`, by time.
    sizes: parking_lot::Mutex<HashMap<(String, StreamId), StreamSizes>>,
    rows: AtomicUsize,
    capacity: usize,
}

impl ErasedRowsCache {
    /// A cache opening files through `readers` (the scans' own, with their parsed footers)
    /// and their trigram indexes through `indexes`, holding at most about `capacity` rows.
    pub fn new(
        readers: Arc<dyn ParquetFileReaderFactory>,
        indexes: Arc<TextIndexCache>,
        capacity: usize,
    ) -> ErasedRowsCache {
        ErasedRowsCache {
            readers,
            indexes,
            entries: parking_lot::Mutex::new(HashMap::new()),
            sizes: parking_lot::Mutex::new(HashMap::new()),
            rows: AtomicUsize::new(0),
            capacity,
        }
    }

    /// The rows `request` removes from file `path`, if already found.
    pub(crate) fn get(&self, path: &str, request: &str) -> Option<Arc<[ErasedRow]>> {
        self.entries
            .lock()
            .get(&(path.to_string(), request.to_string()))
            .cloned()
    }

    /// Every row the `erases` of one file remove, sorted by position, found now where not
    /// known yet.
    pub(crate) async fn file_rows(&self, erases: &[LineErase]) -> Result<Vec<ErasedRow>> {
        let mut out: Vec<ErasedRow> = Vec::new();
        for e in erases {
            match e {
                LineErase::Known { rows, .. } => out.extend_from_slice(rows),
                LineErase::Find(job) => {
                    let rows = match self.get(&job.path, &job.request_id) {
                        Some(rows) => rows,
                        None => {
                            let rows: Arc<[ErasedRow]> = self.find(job).await?.into();
                            self.insert(job, rows.clone());
                            rows
                        }
                    };
                    out.extend_from_slice(&rows);
                }
            }
        }
        out.sort_unstable();
        out.dedup_by_key(|r| r.pos);
        Ok(out)
    }

    fn insert(&self, job: &FindRows, rows: Arc<[ErasedRow]>) {
        let n = rows.len().max(1);
        self.make_room(n);
        self.entries
            .lock()
            .insert((job.path.clone(), job.request_id.clone()), rows);
        self.rows.fetch_add(n, Ordering::Relaxed);
    }

    /// Start over when `n` more rows would pass the capacity: reached only by deletes
    /// removing millions of rows or cut-offs inside huge streams, so recency is not
    /// tracked (a miss costs one read).
    fn make_room(&self, n: usize) {
        if self.rows.load(Ordering::Relaxed) + n > self.capacity {
            self.entries.lock().clear();
            self.sizes.lock().clear();
            self.rows.store(0, Ordering::Relaxed);
        }
    }

    /// Entries and line bytes of a stream in `[from, end)` in a chunk file, counted from its
    /// rows: volumes use it where a retention cut-off falls inside the stream's span in the
    /// file, which the manifest's per-stream totals cannot split exactly.
    pub(crate) async fn stream_volume(
        &self,
        f: &FileStream,
        from: i64,
        end: i64,
    ) -> Result<(u64, u64)> {
        let key = (f.path.clone(), f.stream);
        let known = self.sizes.lock().get(&key).cloned();
        let sizes = match known {
            Some(s) => s,
            None => {
                let s: Arc<[(i64, u64)]> = self.read_sizes(f).await?.into();
                self.make_room(s.len().max(1));
                self.sizes.lock().insert(key, s.clone());
                self.rows.fetch_add(s.len().max(1), Ordering::Relaxed);
                s
            }
        };
        let lo = sizes.partition_point(|&(t, _)| t < from);
        let hi = sizes.partition_point(|&(t, _)| t < end);
        if hi <= lo {
            return Ok((0, 0));
        }
        let before = lo.checked_sub(1).map_or(0, |i| sizes[i].1);
        Ok(((hi - lo) as u64, sizes[hi - 1].1 - before))
    }

    async fn read_sizes(&self, f: &FileStream) -> Result<Vec<(i64, u64)>> {
        let FileStream {
            path,
            size,
            file_rows,
            ranges,
            stream,
        } = f;
        let (size, stream) = (*size, *stream);
        let total = usize::try_from(*file_rows).unwrap_or(usize::MAX);
        let selection = RowSelection::from_consecutive_ranges(
            ranges
                .iter()
                .map(|r| r.start as usize..(r.end as usize).min(total)),
            total,
        );
        let mut rows: Vec<(i64, u64)> = Vec::new();
        if selection.row_count() == 0 {
            return Ok(rows);
        }
        let mut batches = self
            .open(path, size, selection, &[STREAM_ID, TS, LINE])
            .await?;
        while let Some(batch) = batches.try_next().await? {
            let (ids, ts, line) = row_columns(&batch, path)?;
            for i in 0..batch.num_rows() {
                if ids.value(i) == stream {
                    rows.push((ts.value(i), line.value(i).len() as u64));
                }
            }
        }
        rows.sort_unstable_by_key(|&(t, _)| t);
        let mut sum = 0u64;
        for r in &mut rows {
            sum += r.1;
            r.1 = sum;
        }
        Ok(rows)
    }

    /// Read `columns` of the `selection` rows of a chunk file.
    async fn open(
        &self,
        path: &str,
        size: u64,
        selection: RowSelection,
        columns: &[&str],
    ) -> Result<ParquetRecordBatchStream<OpenedFile>> {
        let reader = OpenedFile::open(self.readers.as_ref(), path, size)?;
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let builder = ParquetRecordBatchStreamBuilder::new_with_options(reader, options).await?;
        let mask = ProjectionMask::columns(builder.parquet_schema(), columns.iter().copied());
        Ok(builder
            .with_projection(mask)
            .with_row_selection(selection)
            .with_batch_size(8192)
            .build()?)
    }

    /// Read the rows of `job` that may be removed and keep those that are.
    async fn find(&self, job: &FindRows) -> Result<Vec<ErasedRow>> {
        let total = usize::try_from(job.file_rows).unwrap_or(usize::MAX);
        let mut selection = RowSelection::from_consecutive_ranges(
            job.ranges
                .iter()
                .map(|r| r.start as usize..(r.end as usize).min(total)),
            total,
        );
        if job.text_index && !job.needles.is_empty() {
            match self
                .indexes
                .get(&job.path, job.text_index_sha256.as_deref())
                .await
            {
                Ok(index) => {
                    let candidates = index.candidate_rows(
                        &job.streams,
                        job.start_ns,
                        job.end_ns.saturating_add(1),
                        &job.needles,
                    );
                    let candidates = RowSelection::from_consecutive_ranges(
                        candidates
                            .iter()
                            .map(|r| r.start as usize..(r.end as usize).min(total)),
                        total,
                    );
                    selection = selection.intersection(&candidates);
                }
                // Only a saving: without the index every row of the streams is read.
                Err(e) => {
                    tracing::warn!(file = %job.path, error = %e, "chunk index unusable; reading every line the delete may remove")
                }
            }
        }
        if selection.row_count() == 0 {
            return Ok(Vec::new());
        }
        let positions: Vec<Range<u64>> = selected_ranges(&selection);
        let mut batches = self
            .open(&job.path, job.size, selection, &[STREAM_ID, TS, LINE])
            .await?;
        let mut at = positions.iter().flat_map(|r| r.clone());
        let mut out = Vec::new();
        while let Some(batch) = batches.try_next().await? {
            let (ids, ts, line) = row_columns(&batch, &job.path)?;
            for i in 0..batch.num_rows() {
                let pos = at.next().ok_or_else(|| {
                    Error::Internal(format!("{}: more rows than selected", job.path))
                })?;
                let (id, t) = (ids.value(i), ts.value(i));
                if t < job.start_ns
                    || t > job.end_ns
                    || job.streams.binary_search(&id).is_err()
                    || !line.is_valid(i)
                    || !(job.line)(line.value(i))
                {
                    continue;
                }
                out.push(ErasedRow {
                    pos,
                    stream: id,
                    ts: t,
                });
            }
        }
        Ok(out)
    }
}

/// `stream_id`, `ts` and `line` (as Utf8) of a batch [`ErasedRowsCache::open`] read from
/// chunk file `path`.
fn row_columns(
    batch: &arrow::array::RecordBatch,
    path: &str,
) -> Result<(UInt64Array, Int64Array, StringArray)> {
    let bad = |what: &str| Error::Internal(format!("{path}: {what} column"));
    let ids = batch
        .column_by_name(STREAM_ID)
        .and_then(|a| a.as_primitive_opt::<UInt64Type>())
        .ok_or_else(|| bad(STREAM_ID))?;
    let ts = batch
        .column_by_name(TS)
        .and_then(|a| a.as_primitive_opt::<Int64Type>())
        .ok_or_else(|| bad(TS))?;
    let line = batch.column_by_name(LINE).ok_or_else(|| bad(LINE))?;
    let line = cast(line, &DataType::Utf8)?;
    let line = line.as_string_opt::<i32>().ok_or_else(|| bad(LINE))?;
    Ok((ids.clone(), ts.clone(), line.clone()))
}

/// The row ranges `selection` selects, in order.
fn selected_ranges(selection: &RowSelection) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for s in selection.iter() {
        let n = s.row_count as u64;
        if !s.skip {
            out.push(at..at + n);
        }
        at += n;
    }
    out
}

/// The rows of a file of `total` rows that are not in `erased` (sorted by position).
pub(crate) fn kept_rows(erased: &[ErasedRow], total: usize) -> RowSelection {
    let mut ranges = Vec::with_capacity(erased.len() + 1);
    let mut from = 0usize;
    for r in erased {
        let p = usize::try_from(r.pos).unwrap_or(usize::MAX).min(total);
        if p > from {
            ranges.push(from..p);
        }
        from = p.saturating_add(1);
    }
    if from < total {
        ranges.push(from..total);
    }
    RowSelection::from_consecutive_ranges(ranges.into_iter(), total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_rows_leave_out_exactly_the_erased_positions() {
        let row = |pos| ErasedRow {
            pos,
            stream: 1,
            ts: 0,
        };
        let kept = kept_rows(&[row(0), row(3), row(4), row(9)], 10);
        assert_eq!(selected_ranges(&kept), vec![1..3, 5..9]);
        assert_eq!(selected_ranges(&kept_rows(&[], 4)), vec![0..4]);
    }
}
