//! Query-time erasure: which rows of a scan are expired or deleted, decided per stream
//! when the scan is planned, and applied only to the head batches and chunk files it
//! touches.
//!
//! A scan asks [`Inner::erase_filter`] once. With no pending tombstone overlapping its
//! range and no retention cut-off after its start (the common case) the answer is `None`
//! and the scan is planned exactly as without erasure. Otherwise the filter maps each
//! affected stream to its cut-off and its tombstones. Head batches are filtered in
//! memory. Files where a cut-off or a delete without line filters may erase rows are read
//! through a `FilterExec` with [`EraseExpr`] (a check of `stream_id` and `ts`); files
//! where a delete with line filters may erase rows carry those rows' positions
//! (`rows.rs`), which the scan leaves out of its row selection; the others are read as
//! before.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, BooleanBufferBuilder, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, Schema, UInt64Type};
use datafusion_common::error::{DataFusionError, Result as DfResult};
use datafusion_expr::ColumnarValue;
use datafusion_physical_plan::PhysicalExpr;

use super::log::Tombstone;
use super::rows::{ErasedRowsCache, FindRows, LineErase};
use super::{LineMatch, RetentionPolicy};
use crate::error::Result;
use crate::manifest::{ChunkMeta, ManifestState};
use crate::model::{LabelSet, Matcher, StreamId};
use crate::scan::ChunkFile;
use crate::schema::{LINE, STREAM_ID, TS};
use crate::{Inner, Tenant};

/// Nanoseconds since the epoch now.
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn period_ns(p: std::time::Duration) -> i64 {
    i64::try_from(p.as_nanos()).unwrap_or(i64::MAX)
}

/// One deleted time range of a stream, with the lines it takes (all when `None`).
#[derive(Clone)]
pub(crate) struct Cut {
    pub(crate) request: usize,
    pub(crate) start_ns: i64,
    pub(crate) end_ns: i64,
    pub(crate) line: Option<LineMatch>,
}

/// What is erased of one stream.
#[derive(Clone, Default)]
pub(crate) struct StreamErase {
    /// Rows before it are expired (`i64::MIN`: none).
    pub(crate) cutoff: i64,
    pub(crate) cuts: Vec<Cut>,
}

impl StreamErase {
    /// Which cut erases a row (`Some(usize::MAX)` for retention), if any.
    #[inline]
    pub(crate) fn erased_by(&self, ts: i64, line: Option<&str>) -> Option<usize> {
        if ts < self.cutoff {
            return Some(usize::MAX);
        }
        for c in &self.cuts {
            if ts < c.start_ns || ts > c.end_ns {
                continue;
            }
            match &c.line {
                None => return Some(c.request),
                Some(m) if line.is_some_and(|l| m(l)) => return Some(c.request),
                Some(_) => {}
            }
        }
        None
    }

    /// May rows in `[min_ts, max_ts]` be erased?
    pub(crate) fn touches(&self, min_ts: i64, max_ts: i64) -> bool {
        min_ts < self.cutoff
            || self
                .cuts
                .iter()
                .any(|c| c.start_ns <= max_ts && c.end_ns >= min_ts)
    }

    /// Does one delete without line filters take every row in `[min_ts, max_ts]`?
    pub(crate) fn deletes_whole(&self, min_ts: i64, max_ts: i64) -> bool {
        self.cuts
            .iter()
            .any(|c| c.line.is_none() && c.start_ns <= min_ts && c.end_ns >= max_ts)
    }

    /// May rows in `[min_ts, max_ts]` be erased by the cut-off or a delete without line
    /// filters (those a check of `stream_id` and `ts` decides)?
    pub(crate) fn touches_without_lines(&self, min_ts: i64, max_ts: i64) -> bool {
        min_ts < self.cutoff
            || self
                .cuts
                .iter()
                .any(|c| c.line.is_none() && c.start_ns <= max_ts && c.end_ns >= min_ts)
    }

    fn needs_line(&self) -> bool {
        self.cuts.iter().any(|c| c.line.is_some())
    }
}

/// The rows one scan must not return, per stream (see the module doc).
pub struct EraseFilter {
    streams: HashMap<StreamId, StreamErase>,
    /// The tombstones the cuts' `request` index.
    tombstones: Vec<Tombstone>,
    needs_line: bool,
    key: u64,
}

impl fmt::Debug for EraseFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EraseFilter")
            .field("streams", &self.streams.len())
            .field("key", &self.key)
            .finish()
    }
}

impl EraseFilter {
    pub(crate) fn new(streams: HashMap<StreamId, StreamErase>, tombstones: &[Tombstone]) -> Self {
        let mut h = DefaultHasher::new();
        for t in tombstones {
            t.request_id.hash(&mut h);
        }
        let mut cutoffs: Vec<(StreamId, i64)> =
            streams.iter().map(|(id, s)| (*id, s.cutoff)).collect();
        cutoffs.sort_unstable();
        cutoffs.hash(&mut h);
        EraseFilter {
            needs_line: streams.values().any(StreamErase::needs_line),
            streams,
            tombstones: tombstones.to_vec(),
            key: h.finish(),
        }
    }

    /// The same filter without the deletes that have line filters (files apply those by
    /// leaving out the rows [`super::rows`] found); `None` when nothing else is erased.
    fn without_line_cuts(&self) -> Option<Arc<EraseFilter>> {
        let streams: HashMap<StreamId, StreamErase> = self
            .streams
            .iter()
            .filter_map(|(id, e)| {
                let cuts: Vec<Cut> = e
                    .cuts
                    .iter()
                    .filter(|c| c.line.is_none())
                    .cloned()
                    .collect();
                (e.cutoff != i64::MIN || !cuts.is_empty()).then(|| {
                    (
                        *id,
                        StreamErase {
                            cutoff: e.cutoff,
                            cuts,
                        },
                    )
                })
            })
            .collect();
        if streams.is_empty() {
            return None;
        }
        let mut h = DefaultHasher::new();
        (self.key, "without line cuts").hash(&mut h);
        Some(Arc::new(EraseFilter {
            streams,
            tombstones: self.tombstones.clone(),
            needs_line: false,
            key: h.finish(),
        }))
    }

    /// Identifies what this filter erases: equal keys, equal rows erased. Callers that
    /// keep results per chunk file include it in their cache key.
    pub fn key(&self) -> u64 {
        self.key
    }

    /// Does it need the line column (some delete has line filters)?
    pub fn needs_line(&self) -> bool {
        self.needs_line
    }

    pub(crate) fn stream(&self, id: StreamId) -> Option<&StreamErase> {
        self.streams.get(&id)
    }

    /// Is every row of `id` at or after `end` expired (the stream leaves the scan)?
    pub(crate) fn gone(&self, id: StreamId, end: i64) -> bool {
        self.streams.get(&id).is_some_and(|s| s.cutoff >= end)
    }

    /// The keep mask of rows given as columns.
    fn keep(
        &self,
        ids: &arrow::array::UInt64Array,
        ts: &arrow::array::Int64Array,
        lines: Option<&dyn Array>,
    ) -> DfResult<BooleanArray> {
        let mut out = BooleanBufferBuilder::new(ids.len());
        let utf8;
        let view = lines.and_then(|l| l.as_string_view_opt());
        let plain = match (lines, view) {
            (Some(l), None) => match l.as_string_opt::<i32>() {
                Some(s) => Some(s),
                None => {
                    utf8 = cast(l, &DataType::Utf8)?;
                    Some(utf8.as_string_opt::<i32>().ok_or_else(|| {
                        DataFusionError::Internal("line column is not a string".into())
                    })?)
                }
            },
            _ => None,
        };
        let mut last: Option<(StreamId, Option<&StreamErase>)> = None;
        for i in 0..ids.len() {
            let id = ids.value(i);
            let s = match last {
                Some((l, s)) if l == id => s,
                _ => {
                    let s = self.streams.get(&id);
                    last = Some((id, s));
                    s
                }
            };
            let keep = match s {
                None => true,
                Some(s) => {
                    let line = match (view, plain) {
                        (Some(v), _) => v.is_valid(i).then(|| v.value(i)),
                        (None, Some(p)) => p.is_valid(i).then(|| p.value(i)),
                        (None, None) => None,
                    };
                    s.erased_by(ts.value(i), line).is_none()
                }
            };
            out.append(keep);
        }
        Ok(BooleanArray::new(out.finish(), None))
    }

    /// `batch` (logs schema, from a head snapshot) without the erased rows.
    pub(crate) fn filter_batch(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let schema = batch.schema();
        let col =
            |name: &str| -> Result<&Arc<dyn Array>> { Ok(batch.column(schema.index_of(name)?)) };
        let ids = col(STREAM_ID)?
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| crate::Error::Internal("stream_id column type".into()))?;
        let ts = col(TS)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| crate::Error::Internal("ts column type".into()))?;
        let lines = col(LINE)?;
        let keep = self.keep(ids, ts, Some(lines.as_ref()))?;
        if keep.true_count() == batch.num_rows() {
            return Ok(batch);
        }
        Ok(arrow::compute::filter_record_batch(&batch, &keep)?)
    }
}

/// `keep(stream_id, ts, line)` of an [`EraseFilter`] as a physical expression.
pub(crate) struct EraseExpr {
    filter: Arc<EraseFilter>,
    /// `stream_id`, `ts` and, when the filter needs it, `line`.
    columns: Vec<Arc<dyn PhysicalExpr>>,
}

impl EraseExpr {
    pub(crate) fn new(filter: Arc<EraseFilter>, columns: Vec<Arc<dyn PhysicalExpr>>) -> Self {
        EraseExpr { filter, columns }
    }
}

impl fmt::Debug for EraseExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tovlog_not_erased({:x})", self.filter.key)
    }
}

impl fmt::Display for EraseExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tovlog_not_erased({:x})", self.filter.key)
    }
}

impl PartialEq for EraseExpr {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.filter, &other.filter) && self.columns == other.columns
    }
}

impl Eq for EraseExpr {}

impl Hash for EraseExpr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.filter.key.hash(state);
        self.columns.hash(state);
    }
}

impl PhysicalExpr for EraseExpr {
    fn data_type(&self, _input_schema: &Schema) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, _input_schema: &Schema) -> DfResult<bool> {
        Ok(false)
    }

    fn evaluate(&self, batch: &RecordBatch) -> DfResult<ColumnarValue> {
        let n = batch.num_rows();
        let mut arrays = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            arrays.push(c.evaluate(batch)?.into_array(n)?);
        }
        let bad = |what: &str| DataFusionError::Internal(format!("erase filter: {what} column"));
        let ids = arrays
            .first()
            .and_then(|a| a.as_primitive_opt::<UInt64Type>())
            .ok_or_else(|| bad("stream_id"))?;
        let ts = arrays
            .get(1)
            .and_then(|a| a.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| bad("ts"))?;
        let lines = arrays.get(2).map(|a| a.as_ref());
        Ok(ColumnarValue::Array(Arc::new(
            self.filter.keep(ids, ts, lines)?,
        )))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        self.columns.iter().collect()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> DfResult<Arc<dyn PhysicalExpr>> {
        Ok(Arc::new(EraseExpr {
            filter: Arc::clone(&self.filter),
            columns: children,
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tovlog_not_erased({:x})", self.filter.key)
    }
}

/// What erasure applies to one tenant over one time range, before looking at streams.
pub(crate) struct EraseContext {
    pub(crate) tombstones: Vec<Tombstone>,
    /// The tenant's retention, when some stream's cut-off may be after the range start.
    pub(crate) retention: Option<RetentionPolicy>,
    pub(crate) now_ns: i64,
}

impl EraseContext {
    /// The erasure of a stream with these labels (`None`: nothing of it).
    pub(crate) fn for_stream(&self, labels: &LabelSet) -> Option<StreamErase> {
        let cutoff = self
            .retention
            .as_ref()
            .and_then(|p| p.period_for(labels))
            .map_or(i64::MIN, |p| self.now_ns.saturating_sub(period_ns(p)));
        let cuts: Vec<Cut> = self
            .tombstones
            .iter()
            .enumerate()
            .filter(|(_, t)| t.matchers.iter().all(|m| m.matches_labels(labels)))
            .map(|(i, t)| Cut {
                request: i,
                start_ns: t.start_ns,
                end_ns: t.end_ns,
                line: t.line.clone(),
            })
            .collect();
        (cutoff != i64::MIN || !cuts.is_empty()).then_some(StreamErase { cutoff, cuts })
    }
}

/// The latest cut-off any stream of `policy` can have at `now`, if any.
pub(crate) fn latest_cutoff(policy: &RetentionPolicy, now: i64) -> Option<i64> {
    let shortest = std::iter::once(policy.period)
        .chain(policy.streams.iter().map(|r| r.period))
        .filter(|p| !p.is_zero())
        .min()?;
    Some(now.saturating_sub(period_ns(shortest)))
}

impl Tenant {
    /// Labels of a stream from the label index or the heads.
    pub(crate) fn labels_of(&self, id: StreamId) -> Option<Arc<LabelSet>> {
        if let Some(l) = self.index.get(id) {
            return Some(l);
        }
        if let Some(s) = self.head.read().stream(id) {
            return Some(s.labels.clone());
        }
        let frozen = self.frozen.read();
        frozen
            .iter()
            .find_map(|(_, h)| h.stream(id).map(|s| s.labels.clone()))
    }

    /// Time ranges the stream has data in: per chunk file, and per head.
    fn data_ranges(&self, id: StreamId, manifest: &ManifestState) -> Vec<(i64, i64)> {
        let mut out: Vec<(i64, i64)> = manifest.stream_ranges.get(&id).cloned().unwrap_or_default();
        let head = self.head.read();
        let frozen = self.frozen.read();
        for h in std::iter::once(&*head).chain(frozen.iter().map(|(_, h)| h.as_ref())) {
            if let Some(r) = h.stream(id).and_then(|s| s.time_range()) {
                out.push(r);
            }
        }
        out
    }
}

impl Inner {
    /// What erasure applies to `tenant` in `[start, end)`; `None` when nothing can be
    /// erased there.
    pub(crate) fn erase_context(&self, tenant: &str, start: i64, end: i64) -> Option<EraseContext> {
        let tombstones: Vec<Tombstone> = self
            .erase
            .tombstones(tenant)
            .map(|t| {
                t.iter()
                    .filter(|t| t.overlaps(start, end))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let now = now_ns();
        let retention = if self.config.compaction.retention_enabled {
            self.erase
                .retention()
                .map(|source| source(tenant))
                .filter(|p| latest_cutoff(p, now).is_some_and(|c| c > start))
        } else {
            None
        };
        if tombstones.is_empty() && retention.is_none() {
            return None;
        }
        Some(EraseContext {
            tombstones,
            retention,
            now_ns: now,
        })
    }

    /// The erase filter of a scan of `streams` in `[start, end)`; `None` when none of
    /// them loses a row there.
    pub(crate) fn erase_filter(
        &self,
        t: &Tenant,
        streams: &[StreamId],
        start: i64,
        end: i64,
    ) -> Option<Arc<EraseFilter>> {
        let ctx = self.erase_context(&t.name, start, end)?;
        let mut map = HashMap::new();
        for &id in streams {
            let Some(labels) = t.labels_of(id) else {
                continue;
            };
            if let Some(e) = ctx.for_stream(&labels) {
                map.insert(id, e);
            }
        }
        if map.is_empty() {
            return None;
        }
        Some(Arc::new(EraseFilter::new(map, &ctx.tombstones)))
    }

    /// Streams matching `matchers` with rows in `[start, end)` that are not erased, each
    /// with the start of its visible rows (after its retention cut-off). A stream goes
    /// when retention expired all its rows in range, or when deletes without line
    /// filters cover every time range it has data in; deletes with line filters never
    /// hide a stream (they would need a read).
    pub(crate) fn visible_streams(
        &self,
        t: &Tenant,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<HashMap<StreamId, (Arc<LabelSet>, i64)>> {
        let all = t.matching_streams(matchers, start, end)?;
        let Some(ctx) = self.erase_context(&t.name, start, end) else {
            return Ok(all.into_iter().map(|(id, l)| (id, (l, start))).collect());
        };
        let manifest = t.manifest.read().clone();
        let mut out = HashMap::with_capacity(all.len());
        for (id, labels) in all {
            let Some(e) = ctx.for_stream(&labels) else {
                out.insert(id, (labels, start));
                continue;
            };
            let from = start.max(e.cutoff);
            if from >= end {
                continue;
            }
            let ranges: Vec<(i64, i64)> = t
                .data_ranges(id, &manifest)
                .into_iter()
                .filter(|&(lo, hi)| lo < end && hi >= from)
                .map(|(lo, hi)| (lo.max(from), hi.min(end.saturating_sub(1))))
                .collect();
            if ranges.is_empty() {
                continue;
            }
            let mut whole: Vec<(i64, i64)> = e
                .cuts
                .iter()
                .filter(|c| c.line.is_none())
                .map(|c| (c.start_ns, c.end_ns))
                .collect();
            if !whole.is_empty() && covered(&ranges, &mut whole) {
                continue;
            }
            out.insert(id, (labels, from));
        }
        Ok(out)
    }
}

/// Is every range of `ranges` inside the union of `cover` (inclusive bounds)?
fn covered(ranges: &[(i64, i64)], cover: &mut [(i64, i64)]) -> bool {
    cover.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(cover.len());
    for &(lo, hi) in cover.iter() {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    ranges
        .iter()
        .all(|&(lo, hi)| merged.iter().any(|&(a, b)| a <= lo && hi <= b))
}

/// The chunk files a scan of `streams` in `[start, end)` reads. With `erase`, streams whose
/// rows in a file are all expired, or all taken by one delete without line filters, leave
/// that file's selection; a file the cut-off or a
/// delete without line filters touches is read through `erase` (without its line filters);
/// a file a delete with line filters touches carries that request's rows, known in `rows`
/// or found when the scan runs (the streams it selects decided with `labels`).
pub(crate) fn select_files(
    manifest: &ManifestState,
    streams: &[StreamId],
    start: i64,
    end: i64,
    erase: Option<&Arc<EraseFilter>>,
    rows: &ErasedRowsCache,
    labels: &dyn Fn(StreamId) -> Option<Arc<LabelSet>>,
) -> Vec<ChunkFile> {
    let plain = |c: &ChunkMeta| ChunkFile {
        path: c.path.clone(),
        size: c.size,
        rows: c.rows,
        text_index: c.text_index_bytes.is_some(),
        text_index_sha256: c.text_index_sha256.clone(),
        stream_rows: c.stream_row_ranges(streams, start, end),
        rows_exact: c.rows_exact(streams, start, end),
        metadata_keys: c.metadata_keys.clone(),
        erase: None,
        line_erase: Vec::new(),
    };
    let Some(erase) = erase else {
        return manifest
            .manifest
            .chunks
            .iter()
            .filter(|c| c.overlaps(streams, start, end))
            .map(&plain)
            .collect();
    };
    let mut without_lines: Option<Option<Arc<EraseFilter>>> = None;
    let mut out = Vec::new();
    for c in &manifest.manifest.chunks {
        if !c.overlaps(streams, start, end) {
            continue;
        }
        let mut touched = false;
        let mut requests: Vec<usize> = Vec::new();
        let mut expired: Vec<StreamId> = Vec::new();
        c.for_each_overlapping(streams, start, end, |s| {
            if let Some(e) = erase.stream(s.id) {
                let (lo, hi) = (s.min_ts.max(start), s.max_ts.min(end.saturating_sub(1)));
                // Every row of the stream the scan would read here is expired or deleted
                // without a line filter: the stream leaves this file's selection.
                if s.max_ts < e.cutoff || e.deletes_whole(lo, hi) {
                    expired.push(s.id);
                    return;
                }
                touched |= e.touches_without_lines(lo, hi);
                for cut in &e.cuts {
                    if cut.line.is_some()
                        && cut.start_ns <= hi
                        && cut.end_ns >= lo
                        && !requests.contains(&cut.request)
                    {
                        requests.push(cut.request);
                    }
                }
            }
        });
        if !touched && expired.is_empty() && requests.is_empty() {
            out.push(plain(c));
            continue;
        }
        expired.sort_unstable();
        let kept: Vec<StreamId>;
        let ids = if expired.is_empty() {
            streams
        } else {
            kept = streams
                .iter()
                .copied()
                .filter(|id| expired.binary_search(id).is_err())
                .collect();
            &kept
        };
        let stream_rows = c.stream_row_ranges(ids, start, end);
        if stream_rows.is_empty() {
            continue;
        }
        let line_erase = requests
            .iter()
            .filter_map(|&r| erase.tombstones.get(r))
            .map(|t| line_erase(c, t, rows, labels))
            .collect();
        let file_erase = if touched {
            without_lines
                .get_or_insert_with(|| erase.without_line_cuts())
                .clone()
        } else {
            None
        };
        out.push(ChunkFile {
            path: c.path.clone(),
            size: c.size,
            rows: c.rows,
            text_index: c.text_index_bytes.is_some(),
            text_index_sha256: c.text_index_sha256.clone(),
            stream_rows,
            rows_exact: !touched && c.rows_exact(ids, start, end),
            metadata_keys: c.metadata_keys.clone(),
            erase: file_erase,
            line_erase,
        });
    }
    out
}

/// What tombstone `t` (with line filters) removes from file `c`.
fn line_erase(
    c: &ChunkMeta,
    t: &Tombstone,
    rows: &ErasedRowsCache,
    labels: &dyn Fn(StreamId) -> Option<Arc<LabelSet>>,
) -> LineErase {
    if let Some(known) = rows.get(&c.path, &t.request_id) {
        return LineErase::Known {
            request_id: t.request_id.clone(),
            rows: known,
        };
    }
    let mut streams: Vec<StreamId> = c
        .streams
        .iter()
        .filter(|s| s.min_ts <= t.end_ns && s.max_ts >= t.start_ns)
        .filter(|s| labels(s.id).is_some_and(|l| t.matchers.iter().all(|m| m.matches_labels(&l))))
        .map(|s| s.id)
        .collect();
    streams.sort_unstable();
    LineErase::Find(Arc::new(FindRows {
        path: c.path.clone(),
        size: c.size,
        file_rows: c.rows,
        text_index: c.text_index_bytes.is_some(),
        text_index_sha256: c.text_index_sha256.clone(),
        request_id: t.request_id.clone(),
        ranges: c.stream_row_ranges(&streams, t.start_ns, t.end_ns.saturating_add(1)),
        streams,
        start_ns: t.start_ns,
        end_ns: t.end_ns,
        line: t.line.clone().unwrap_or_else(|| Arc::new(|_: &str| true)),
        needles: t.needles.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_needs_every_range_inside_the_union() {
        let mut cover = vec![(10, 20), (21, 30), (50, 60)];
        assert!(covered(&[(12, 28), (50, 55)], &mut cover));
        assert!(!covered(&[(12, 31)], &mut cover));
        assert!(!covered(&[(40, 45)], &mut cover));
        assert!(covered(&[], &mut cover));
    }

    #[test]
    fn a_row_is_erased_by_the_cutoff_or_a_matching_cut() {
        let only_x: LineMatch = Arc::new(|l: &str| l.contains('x'));
        let e = StreamErase {
            cutoff: 100,
            cuts: vec![
                Cut {
                    request: 0,
                    start_ns: 200,
                    end_ns: 300,
                    line: Some(only_x),
                },
                Cut {
                    request: 1,
                    start_ns: 400,
                    end_ns: 400,
                    line: None,
                },
            ],
        };
        let line = Some;
        assert_eq!(e.erased_by(99, line("a")), Some(usize::MAX));
        assert_eq!(e.erased_by(100, line("a")), None);
        assert_eq!(e.erased_by(250, line("a")), None);
        assert_eq!(e.erased_by(250, line("axe")), Some(0));
        assert_eq!(e.erased_by(300, line("x")), Some(0));
        assert_eq!(e.erased_by(301, line("x")), None);
        assert_eq!(e.erased_by(400, line("b")), Some(1));
        assert!(e.touches(0, 99));
        assert!(e.touches(150, 200));
        assert!(!e.touches(301, 399));
    }
}
