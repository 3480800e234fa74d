//! Recent rows of chunk files, kept decoded in memory.
//!
//! Alert rules evaluate short windows ending now (`count_over_time(…[5m])` every minute,
//! a thousand of them), and dashboards refresh the last minutes. Left to the Parquet
//! reader, each such query decompresses the same zstd pages of the newest files again:
//! 40% of the ruler's CPU on the standard workload went to that. Instead, the first scan
//! of a file over a recent range decodes the file's rows at or after `now − window` once
//! (a row filter on `ts`, so older pages are skipped) and keeps them as one Arrow batch in
//! file order, with each stream's span of rows; later scans whose range starts at or after
//! that point take the rows of their streams and range from it, as they do from the head.
//!
//! Chunk files never change under their path, so an entry is exact while it lives. Entries
//! leave when their start falls a window behind, or oldest first when the byte budget is
//! full; a file whose recent rows alone pass the budget is read from Parquet as before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch};
use arrow::compute::kernels::cmp::gt_eq;
use arrow::datatypes::{Int64Type, UInt64Type};
use datafusion_datasource_parquet::ParquetFileReaderFactory;
use futures::TryStreamExt;
use parquet::arrow::arrow_reader::{ArrowPredicateFn, ArrowReaderOptions, RowFilter};
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::file::metadata::PageIndexPolicy;

use super::{ChunkFile, OpenedFile};
use crate::erase::now_ns;
use crate::error::{Error, Result};
use crate::model::StreamId;
use crate::schema::{logs_schema, STREAM_ID, TS};

/// A file's rows at or after `from`, in file order.
struct Entry {
    from: i64,
    batch: RecordBatch,
    /// `(stream, first row, rows)`, sorted by stream; each span is sorted by time.
    spans: Vec<(StreamId, usize, usize)>,
    bytes: usize,
}

/// The decoded recent rows of chunk files (see the module doc).
pub struct RecentRows {
    readers: Arc<dyn ParquetFileReaderFactory>,
    window_ns: i64,
    budget: usize,
    entries: parking_lot::Mutex<HashMap<String, Arc<Entry>>>,
    bytes: AtomicUsize,
    served: AtomicU64,
}

impl RecentRows {
    /// Rows of the last `window` of files opened through `readers`, at most `budget` bytes
    /// (0: none kept).
    pub fn new(
        readers: Arc<dyn ParquetFileReaderFactory>,
        window: std::time::Duration,
        budget: usize,
    ) -> RecentRows {
        RecentRows {
            readers,
            window_ns: i64::try_from(window.as_nanos()).unwrap_or(i64::MAX),
            budget,
            entries: parking_lot::Mutex::new(HashMap::new()),
            bytes: AtomicUsize::new(0),
            served: AtomicU64::new(0),
        }
    }

    /// Files whose rows scans took from memory so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The rows of `streams` (sorted) in `[start, end)` of file `f`, from memory; `None`
    /// when the file is read from Parquet instead (the range starts before the window,
    /// its recent rows do not fit the budget, or the file is not in stream and time order).
    pub(crate) async fn rows(
        &self,
        f: &ChunkFile,
        streams: &[StreamId],
        start: i64,
        end: i64,
    ) -> Result<Option<Vec<RecordBatch>>> {
        if self.budget == 0 {
            return Ok(None);
        }
        let known = self.entries.lock().get(&f.path).cloned();
        let entry = match known {
            Some(e) if e.from <= start => e,
            _ => {
                let now = now_ns();
                let from = now.saturating_sub(self.window_ns);
                if start < from {
                    return Ok(None);
                }
                let Some(entry) = self.decode(f, from).await? else {
                    return Ok(None);
                };
                let entry = Arc::new(entry);
                self.insert(&f.path, entry.clone(), now);
                entry
            }
        };
        self.served.fetch_add(1, Ordering::Relaxed);
        Ok(Some(entry.select(streams, start, end)?))
    }

    fn insert(&self, path: &str, entry: Arc<Entry>, now: i64) {
        if entry.bytes > self.budget {
            return;
        }
        let mut entries = self.entries.lock();
        let stale = now
            .saturating_sub(self.window_ns)
            .saturating_sub(self.window_ns);
        entries.retain(|_, e| e.from >= stale);
        let mut held: usize = entries.values().map(|e| e.bytes).sum();
        while held + entry.bytes > self.budget {
            let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.from)
                .map(|(p, _)| p.clone())
            else {
                break;
            };
            if let Some(e) = entries.remove(&oldest) {
                held -= e.bytes;
            }
        }
        held += entry.bytes;
        if let Some(old) = entries.insert(path.to_string(), entry) {
            held -= old.bytes;
        }
        self.bytes.store(held, Ordering::Relaxed);
    }

    /// Decode the rows of `f` at or after `from`.
    async fn decode(&self, f: &ChunkFile, from: i64) -> Result<Option<Entry>> {
        let reader = OpenedFile::open(self.readers.as_ref(), &f.path, f.size)?;
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let builder = ParquetRecordBatchStreamBuilder::new_with_options(reader, options).await?;
        let ts_only = ProjectionMask::columns(builder.parquet_schema(), [TS]);
        let bound = Int64Array::new_scalar(from);
        let recent = ArrowPredicateFn::new(ts_only, move |batch: RecordBatch| {
            gt_eq(batch.column(0), &bound)
        });
        let mut stream = builder
            .with_row_filter(RowFilter::new(vec![Box::new(recent)]))
            .with_batch_size(8192)
            .build()?;
        let schema = logs_schema();
        let mut batches = Vec::new();
        while let Some(b) = stream.try_next().await? {
            if b.num_rows() > 0 {
                batches.push(crate::compact::with_all_columns(b)?);
            }
        }
        let batch = arrow::compute::concat_batches(&schema, &batches)?;
        let Some(spans) = spans(&batch) else {
            tracing::debug!(file = %f.path, "rows not in stream and time order; read from Parquet");
            return Ok(None);
        };
        Ok(Some(Entry {
            from,
            bytes: batch.get_array_memory_size(),
            batch,
            spans,
        }))
    }
}

/// Each stream's span of rows in `batch`, sorted by stream; `None` unless every stream's
/// rows are one run sorted by time.
fn spans(batch: &RecordBatch) -> Option<Vec<(StreamId, usize, usize)>> {
    let ids = batch
        .column_by_name(STREAM_ID)?
        .as_primitive_opt::<UInt64Type>()?;
    let ts = batch.column_by_name(TS)?.as_primitive_opt::<Int64Type>()?;
    let mut out: Vec<(StreamId, usize, usize)> = Vec::new();
    for i in 0..batch.num_rows() {
        let id = ids.value(i);
        match out.last_mut() {
            Some(last) if last.0 == id => {
                if ts.value(i) < ts.value(i - 1) {
                    return None;
                }
                last.2 += 1;
            }
            _ => out.push((id, i, 1)),
        }
    }
    out.sort_unstable();
    if out.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    Some(out)
}

impl Entry {
    /// Rows of `streams` (sorted) in `[start, end)`.
    fn select(&self, streams: &[StreamId], start: i64, end: i64) -> Result<Vec<RecordBatch>> {
        let ts = self
            .batch
            .column_by_name(TS)
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| Error::Internal("recent rows: ts column".into()))?;
        let mut slices = Vec::new();
        for &(id, first, rows) in &self.spans {
            if streams.binary_search(&id).is_err() {
                continue;
            }
            let times = &ts.values()[first..first + rows];
            let lo = times.partition_point(|&t| t < start);
            let hi = times.partition_point(|&t| t < end);
            if hi > lo {
                slices.push(self.batch.slice(first + lo, hi - lo));
            }
        }
        // Many small slices (one per stream) cost the plan more per batch than one copy of
        // the few rows they hold.
        if slices.len() > 8 {
            let one = arrow::compute::concat_batches(&self.batch.schema(), &slices)?;
            return Ok(vec![one]);
        }
        Ok(slices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, UInt64Array};

    fn batch(ids: &[u64], ts: &[i64]) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                STREAM_ID,
                Arc::new(UInt64Array::from(ids.to_vec())) as Arc<dyn Array>,
            ),
            (
                TS,
                Arc::new(Int64Array::from(ts.to_vec())) as Arc<dyn Array>,
            ),
        ])
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn spans_need_one_time_sorted_run_per_stream() {
        let b = batch(&[5, 5, 2, 2, 2, 9], &[1, 2, 1, 1, 3, 0]);
        assert_eq!(spans(&b), Some(vec![(2, 2, 3), (5, 0, 2), (9, 5, 1)]));
        assert_eq!(spans(&batch(&[5, 5], &[2, 1])), None);
        assert_eq!(spans(&batch(&[5, 2, 5], &[1, 1, 2])), None);
    }
}
