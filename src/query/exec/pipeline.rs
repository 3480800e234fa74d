//! `PipelineExec`: runs a compiled LogQL pipeline over scan batches.
//!
//! Filter mode (log queries) only decides which rows the pipeline keeps and passes them
//! on in the storage schema: the rewritten line and final labels are computed again,
//! after the limit, for the few rows that are returned, so the per-row work here is the
//! pipeline itself with one reused `LabelsBuilder` and no output allocation.
//!
//! Sample mode emits `(key, ts, value)` for metric queries: `key` is the interned id of
//! the (possibly pre-grouped) series label set, `value` 1, the line length or the
//! unwrapped number.
//!
//! The input has passed the pipeline's leading line filters (`LineFilterExec` runs them
//! below this node, over whole batches), so rows go through the rest of the pipeline only
//! (`Pipeline::process_after_leading`).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, Float64Builder, Int64Array,
    Int64Builder, MapArray, RecordBatch, UInt32Builder, UInt64Array, UInt8Array,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, UInt64Type, UInt8Type};
use datafusion_common::error::{DataFusionError, Result};
use datafusion_common::tree_node::TreeNodeRecursion;
use datafusion_execution::{SendableRecordBatchStream, TaskContext};
use datafusion_physical_expr::EquivalenceProperties;
use datafusion_physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion_physical_plan::stream::RecordBatchStreamAdapter;
use datafusion_physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    PhysicalExpr, PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;

use tovlog_logql::eval::{Bucketing, FailureCut};
use tovlog_logql::pipeline::{LabelsBuilder, PatternGrouping, Pipeline, Precheck, SampleExtractor};
use tovlog_storage::schema::{cast_batch, LINE, LINE_FLAGS, METADATA, STREAM_ID, TS};

use super::line_filter::normalized_schema;
use super::lines::Lines;
use super::value_table::ValueTable;
use super::{encode_identity, Interner, StreamLabels, StreamMap, SERIES_ID_LABEL};
use crate::query::plan::QUERY_CANCELLED;
use crate::query::stats::StatsCollector;

/// Sample-mode output column: interned series id.
pub const SAMPLE_KEY: &str = "key";
/// Sample-mode output column: timestamp (ns).
pub const SAMPLE_TS: &str = "ts";
/// Sample-mode output column: sample value.
pub const SAMPLE_VALUE: &str = "value";

/// Schema of sample-mode output.
pub fn sample_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new(SAMPLE_KEY, DataType::UInt32, false),
            Field::new(SAMPLE_TS, DataType::Int64, false),
            Field::new(SAMPLE_VALUE, DataType::Float64, false),
        ]))
    })
    .clone()
}

/// How a metric row's value is obtained.
#[derive(Clone)]
pub enum SampleValue {
    /// 1 per entry (count_over_time, rate, absent_over_time).
    One,
    /// The line's byte length after the pipeline (bytes_over_time, bytes_rate).
    LineBytes,
    /// `| unwrap …`.
    Unwrap(Arc<SampleExtractor>),
}

impl SampleValue {
    /// The value of an entry whose line no stage changed (not for `Unwrap`, which reads
    /// labels).
    fn of_unchanged_line(&self, line: &str) -> f64 {
        match self {
            SampleValue::LineBytes => line.len() as f64,
            _ => 1.0,
        }
    }
}

/// Label reduction applied to metric rows before grouping into series. Only used when
/// the evaluation above would apply the same grouping anyway; error labels are always
/// kept so the evaluator still sees pipeline errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelReduce {
    /// Full label set.
    Keep,
    /// Only these labels (plus error labels).
    By(Vec<String>),
    /// All but these labels.
    Without(Vec<String>),
    /// Every series stays apart by its whole label set but carries only these labels and
    /// its id ([`SERIES_ID_LABEL`]); error labels keep the whole set. For a range function
    /// that must see each series alone (`avg_over_time`) under a parent that keeps only
    /// these labels (`avg by (route) (…)`): with one series per request, copying and
    /// freeing every parsed field of every series was most of such a query.
    Carry(Vec<String>),
}

/// What the node emits.
#[derive(Clone)]
pub enum PipelineMode {
    /// Log rows: only the rows the pipeline keeps, in the input schema.
    Filter,
    /// Metric samples.
    Sample {
        /// Value source.
        value: SampleValue,
        /// Label reduction.
        reduce: LabelReduce,
        /// Sum the samples of each batch per series and step bucket, emitting one sample
        /// per (series, bucket) at the bucket's end: what the range vector over them does
        /// with each sample anyway (see [`Bucketing`]), for a few rows per batch instead of
        /// one per entry.
        bucketing: Option<Bucketing>,
        /// Which entries fail the query with a pipeline error: a partition keeps only
        /// those failing no later than the earliest it has seen (see [`FailureCut`]).
        failures: Option<FailureCut>,
    },
}

impl fmt::Debug for PipelineMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PipelineMode::Filter => write!(f, "Filter"),
            PipelineMode::Sample {
                value,
                reduce,
                bucketing,
                ..
            } => {
                let v = match value {
                    SampleValue::One => "one",
                    SampleValue::LineBytes => "bytes",
                    SampleValue::Unwrap(_) => "unwrap",
                };
                write!(
                    f,
                    "Sample(value={v}, reduce={reduce:?}, bucketed={})",
                    bucketing.is_some()
                )
            }
        }
    }
}

/// Runs the pipeline over its input. See the module docs.
pub struct PipelineExec {
    input: Arc<dyn ExecutionPlan>,
    pipeline: Arc<Pipeline>,
    mode: PipelineMode,
    streams: Arc<StreamMap>,
    interner: Arc<Interner>,
    stats: Arc<StatsCollector>,
    cancelled: Arc<AtomicBool>,
    props: Arc<PlanProperties>,
}

impl fmt::Debug for PipelineExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineExec")
            .field("mode", &self.mode)
            .field("streams", &self.streams.0.len())
            .finish_non_exhaustive()
    }
}

impl PipelineExec {
    /// Build over `input` (a scan with the storage logs schema).
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        pipeline: Arc<Pipeline>,
        mode: PipelineMode,
        streams: Arc<StreamMap>,
        interner: Arc<Interner>,
        stats: Arc<StatsCollector>,
        cancelled: Arc<AtomicBool>,
    ) -> Result<PipelineExec, crate::query::QueryError> {
        let schema = match mode {
            // Kept rows leave with plain Utf8 lines: views would hold whole pages.
            PipelineMode::Filter => {
                normalized_schema(&input.schema(), false).unwrap_or_else(|| input.schema())
            }
            PipelineMode::Sample { .. } => sample_schema(),
        };
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            datafusion_physical_plan::Partitioning::UnknownPartitioning(
                input.output_partitioning().partition_count(),
            ),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(PipelineExec {
            input,
            pipeline,
            mode,
            streams,
            interner,
            stats,
            cancelled,
            props,
        })
    }
}

impl DisplayAs for PipelineExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PipelineExec: mode={:?}, line_filter_only={}",
            self.mode,
            self.pipeline.is_line_filter_only()
        )
    }
}

impl ExecutionPlan for PipelineExec {
    fn name(&self) -> &str {
        "PipelineExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "PipelineExec has exactly one child".into(),
            ));
        }
        let node = PipelineExec::try_new(
            children.swap_remove(0),
            Arc::clone(&self.pipeline),
            self.mode.clone(),
            Arc::clone(&self.streams),
            Arc::clone(&self.interner),
            Arc::clone(&self.stats),
            Arc::clone(&self.cancelled),
        )
        .map_err(|e| DataFusionError::Internal(e.to_string()))?;
        Ok(Arc::new(node))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let schema = Arc::clone(self.props.eq_properties.schema());
        let mut state = PartitionState {
            pipeline: Arc::clone(&self.pipeline),
            mode: self.mode.clone(),
            streams: Arc::clone(&self.streams),
            interner: Arc::clone(&self.interner),
            stats: Arc::clone(&self.stats),
            cancelled: Arc::clone(&self.cancelled),
            schema: Arc::clone(&schema),
            row: RowLabels::default(),
            stream_keys: HashMap::new(),
            keys: SeriesKeys::for_mode(&self.mode),
            capture_keys: CaptureKeys::for_mode(&self.pipeline, &self.mode),
            sums: BucketSums::default(),
        };
        let stream = input
            .map(move |batch| state.process(batch?))
            .filter(|b| futures::future::ready(!matches!(b, Ok(b) if b.num_rows() == 0)));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// The label builder of a partition and the buffers that feed it, reused across rows.
#[derive(Default)]
struct RowLabels {
    lb: LabelsBuilder,
    /// The stream whose labels `lb` holds as its base.
    stream: Option<u64>,
    /// Structured metadata of the current row; strings are reused across rows.
    meta: Vec<(String, String)>,
    /// Entries [`Pipeline::precheck`] checked and dropped in this partition.
    prechecked: u32,
    predropped: u32,
}

/// After this many checked entries, a precheck that drops fewer than one in
/// [`PRECHECK_MIN_DROP_RATIO`] is given up for the partition: it would only add its cost
/// to the whole parse of nearly every entry.
const PRECHECK_TRIAL: u32 = 4096;
const PRECHECK_MIN_DROP_RATIO: u32 = 16;

impl RowLabels {
    /// Read row `row`'s structured metadata; returns how many pairs it has.
    fn read_metadata(&mut self, map: Option<&MapArray>, row: usize) -> usize {
        read_metadata(map, row, &mut self.meta)
    }

    /// Start the builder on a row of stream `sid` whose metadata was just read (`nmeta`
    /// pairs), comparing stream labels only when the stream differs from the previous
    /// row's.
    fn reset(&mut self, sid: u64, stream: &[(String, String)], nmeta: usize) {
        let metadata = &self.meta[..nmeta];
        if self.stream == Some(sid) {
            self.lb.reset_entry(metadata);
        } else {
            self.lb.reset(stream, metadata);
            self.stream = Some(sid);
        }
    }

    /// Run [`Pipeline::precheck`] on the row `reset` started; `false` when the pipeline
    /// drops it. Otherwise the builder is ready for the whole pipeline (reset again if the
    /// precheck wrote to it).
    fn precheck(
        &mut self,
        pipeline: &Pipeline,
        sid: u64,
        stream: &[(String, String)],
        nmeta: usize,
        line: &str,
        flags: u8,
    ) -> bool {
        if self.prechecked >= PRECHECK_TRIAL
            && self.predropped < self.prechecked / PRECHECK_MIN_DROP_RATIO
        {
            return true;
        }
        match pipeline.precheck(line, flags, &mut self.lb) {
            Precheck::Skipped => true,
            Precheck::Dropped => {
                self.prechecked = self.prechecked.saturating_add(1);
                self.predropped = self.predropped.saturating_add(1);
                false
            }
            Precheck::Passed => {
                self.prechecked = self.prechecked.saturating_add(1);
                self.reset(sid, stream, nmeta);
                true
            }
        }
    }
}

/// Per-partition state: builders and buffers reused across rows and batches.
struct PartitionState {
    pipeline: Arc<Pipeline>,
    mode: PipelineMode,
    streams: Arc<StreamMap>,
    interner: Arc<Interner>,
    stats: Arc<StatsCollector>,
    cancelled: Arc<AtomicBool>,
    schema: SchemaRef,
    row: RowLabels,
    /// Interned series id per stream, for rows whose labels are the stream's alone.
    stream_keys: HashMap<u64, u32>,
    /// Series ids of entries with parsed labels, found without allocating once seen.
    keys: SeriesKeys,
    /// Series ids of `by (…)` groupings over a lone `| pattern` stage, found from the
    /// captures without running the pipeline.
    capture_keys: Option<CaptureKeys>,
    /// Per-series sums of the current step bucket, with bucketing.
    sums: BucketSums,
}

/// Columns of an input batch.
struct Input<'a> {
    stream_ids: &'a UInt64Array,
    ts: &'a Int64Array,
    /// Absent when the scan did not read lines (`ScanColumns::TimeOnly`).
    lines: Option<Lines<'a>>,
    metadata: Option<&'a MapArray>,
    /// `tovlog_logql::pipeline::line_flags` of each line, where known (null: unknown).
    flags: Option<&'a UInt8Array>,
}

impl<'a> Input<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Input<'a>> {
        let col = |name: &str| -> Result<&'a ArrayRef> {
            let idx = batch.schema_ref().index_of(name)?;
            Ok(batch.column(idx))
        };
        let bad = |what: &str| {
            DataFusionError::Internal(format!("scan column {what} has the wrong type"))
        };
        Ok(Input {
            stream_ids: col(STREAM_ID)?
                .as_primitive_opt::<UInt64Type>()
                .ok_or_else(|| bad(STREAM_ID))?,
            ts: col(TS)?
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| bad(TS))?,
            lines: match batch.schema_ref().index_of(LINE) {
                Ok(idx) => Some(Lines::of(batch.column(idx)).ok_or_else(|| bad(LINE))?),
                Err(_) => None,
            },
            metadata: match batch.schema_ref().index_of(METADATA) {
                Ok(idx) => Some(
                    batch
                        .column(idx)
                        .as_map_opt()
                        .ok_or_else(|| bad(METADATA))?,
                ),
                Err(_) => None,
            },
            flags: match batch.schema_ref().index_of(LINE_FLAGS) {
                Ok(idx) => Some(
                    batch
                        .column(idx)
                        .as_primitive_opt::<UInt8Type>()
                        .ok_or_else(|| bad(LINE_FLAGS))?,
                ),
                Err(_) => None,
            },
        })
    }

    /// The flags of `row` (0 when unknown).
    fn flags(&self, row: usize) -> u8 {
        self.flags
            .filter(|f| f.is_valid(row))
            .map_or(0, |f| f.value(row))
    }
}

/// Stream lookup with a one-entry cache: scans deliver rows grouped by stream, so the
/// hash lookup runs once per run of rows instead of once per row.
struct StreamLookup<'a> {
    streams: &'a StreamMap,
    last: Option<(u64, &'a StreamLabels)>,
}

impl<'a> StreamLookup<'a> {
    fn new(streams: &'a StreamMap) -> StreamLookup<'a> {
        StreamLookup {
            streams,
            last: None,
        }
    }

    fn get(&mut self, sid: u64) -> Option<&'a StreamLabels> {
        if let Some((id, labels)) = self.last {
            if id == sid {
                return Some(labels);
            }
        }
        let labels = self.streams.0.get(&sid)?;
        self.last = Some((sid, labels));
        Some(labels)
    }
}

/// Copy row `row`'s structured metadata into `buf` (reusing its strings); returns the count.
fn read_metadata(map: Option<&MapArray>, row: usize, buf: &mut Vec<(String, String)>) -> usize {
    let Some(map) = map else { return 0 };
    if map.is_null(row) {
        return 0;
    }
    let offsets = map.value_offsets();
    let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
    if start == end {
        return 0;
    }
    let (Some(keys), Some(values)) = (
        map.keys().as_string_opt::<i32>(),
        map.values().as_string_opt::<i32>(),
    ) else {
        return 0;
    };
    let mut n = 0;
    for j in start..end {
        let k = keys.value(j);
        let v = if values.is_valid(j) {
            values.value(j)
        } else {
            ""
        };
        if n < buf.len() {
            buf[n].0.clear();
            buf[n].0.push_str(k);
            buf[n].1.clear();
            buf[n].1.push_str(v);
        } else {
            buf.push((k.to_owned(), v.to_owned()));
        }
        n += 1;
    }
    n
}

/// Label the pipeline's parsers add when parser errors are explicitly asked for; the
/// evaluator decides preservation from its own hints, so it never reaches a series.
const PRESERVE_ERROR_LABEL: &str = tovlog_logql::pipeline::PRESERVE_ERROR_LABEL;

/// Reduce a label set without errors.
pub fn reduce_labels(labels: Vec<(String, String)>, reduce: &LabelReduce) -> Vec<(String, String)> {
    match reduce {
        LabelReduce::Keep => labels,
        LabelReduce::By(names) => labels
            .into_iter()
            .filter(|(k, _)| names.iter().any(|n| n == k))
            .collect(),
        LabelReduce::Without(names) => labels
            .into_iter()
            .filter(|(k, _)| !names.iter().any(|n| n == k))
            .collect(),
        // The whole set is the series' identity: callers intern it with
        // `Interner::intern_identity` (see `carried_labels`).
        LabelReduce::Carry(_) => labels,
    }
}

/// What a series under [`LabelReduce::Carry`] carries: the labels `names` of `get` and the
/// series id, sorted.
pub fn carried_labels<'a>(
    names: &[String],
    get: impl Fn(&str) -> Option<&'a str>,
    id: u32,
) -> Vec<(String, String)> {
    let mut out = named_labels(names, get, 1);
    out.push((SERIES_ID_LABEL.to_owned(), id.to_string()));
    out.sort();
    out
}

/// The labels `names` (each once) that `get` has, unsorted, with room for `extra` more.
fn named_labels<'a>(
    names: &[String],
    get: impl Fn(&str) -> Option<&'a str>,
    extra: usize,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(names.len() + extra);
    for n in names {
        if out.iter().any(|(k, _)| k == n) {
            continue;
        }
        if let Some(v) = get(n) {
            out.push((n.clone(), v.to_owned()));
        }
    }
    out
}

/// The series labels of the current entry. Entries with a pipeline error keep their full
/// label set: the evaluator either drops the error labels, keeps such series whole or
/// fails the query with them, exactly as without the reduction. What [`SeriesKeys`]
/// interns, without building the set for an entry whose set it has seen.
#[cfg(test)]
fn series_labels(lb: &LabelsBuilder, reduce: &LabelReduce) -> Vec<(String, String)> {
    if lb.has_error() || *reduce == LabelReduce::Keep {
        let mut labels = lb.labels();
        labels.retain(|(k, _)| k != PRESERVE_ERROR_LABEL);
        return labels;
    }
    match reduce {
        LabelReduce::By(names) => grouping_labels(lb, names),
        other => {
            let mut labels = reduce_labels(lb.labels(), other);
            labels.retain(|(k, _)| k != PRESERVE_ERROR_LABEL);
            labels
        }
    }
}

/// The labels `names` of an entry without a pipeline error, sorted: its series under
/// `by (names)`. Reads only those labels instead of materialising the full set.
fn grouping_labels(lb: &LabelsBuilder, names: &[String]) -> Vec<(String, String)> {
    let mut out = named_labels(names, |n| lb.get(n), 0);
    out.sort();
    out
}

/// Series ids for `by (…)` label reductions, keyed by a hash of the grouping values read
/// straight from the builder: the hot path of `sum by (x) (count_over_time(… | parser …))`
/// neither allocates nor takes the interner lock once a group was seen.
#[derive(Default)]
struct ByCache {
    /// Grouping values (in grouping order) → series id; made at the first entry.
    groups: Option<ValueTable<u32>>,
}

impl ByCache {
    fn key(&mut self, lb: &LabelsBuilder, names: &[String], interner: &Interner) -> Result<u32> {
        let table = self
            .groups
            .get_or_insert_with(|| ValueTable::new(names.len()));
        let value = |i: usize| names.get(i).and_then(|n| lb.get(n));
        let hash = ValueTable::<u32>::hash(0, (0..names.len()).map(value));
        if let Some((_, key)) = table.find(hash, 0, value) {
            return Ok(key);
        }
        // A table starting over loses nothing: the interner keeps every id.
        let key = interner.intern(grouping_labels(lb, names))?;
        table.insert(hash, 0, value, key);
        Ok(key)
    }
}

/// Series ids of entries whose series keeps the label set whole (a pipeline error, no
/// grouping at the source) or all but some labels (`without (…)`): the set is built into a
/// reused buffer and found in a partition-local table by a fast hash, so a known set costs
/// neither allocations nor the query's interner (a lock and SipHash). `sum by (__error__)
/// (count_over_time({…} | json [5m]))` over lines that are not JSON, or any `| logfmt` leaf
/// without a grouping, meets one for every entry.
#[derive(Default)]
struct SetCache {
    /// The current entry's labels (strings reused from entry to entry).
    scratch: Vec<(String, String)>,
    /// Hash of a series label set → (set, series id) of the sets with that hash.
    groups: HashMap<u64, Vec<SetEntry>, foldhash::fast::FixedState>,
    /// Sets in `groups`.
    len: usize,
    /// The current entry's identity key under [`LabelReduce::Carry`].
    identity: Vec<u8>,
}

/// A series label set and its series id.
type SetEntry = (Vec<(String, String)>, u32);

impl SetCache {
    /// Sets kept at most; beyond, the table starts over (its ids stay in the interner).
    const MAX_SETS: usize = 1 << 16;

    /// The series id of the entry in `lb`, whose labels `reduce` does not reduce to a
    /// grouping (`By` only with a pipeline error).
    fn key(
        &mut self,
        lb: &LabelsBuilder,
        reduce: &LabelReduce,
        interner: &Interner,
    ) -> Result<u32> {
        use std::hash::{BuildHasher, Hash, Hasher};
        lb.labels_into(&mut self.scratch);
        let dropped: &[String] = match reduce {
            LabelReduce::Without(names) if !lb.has_error() => names,
            _ => &[],
        };
        let keep = |k: &str| k != PRESERVE_ERROR_LABEL && !dropped.iter().any(|d| d == k);
        let mut h = foldhash::fast::FixedState::default().build_hasher();
        for (k, v) in self.scratch.iter().filter(|(k, _)| keep(k)) {
            k.hash(&mut h);
            v.hash(&mut h);
        }
        let hash = h.finish();
        if let Some(bucket) = self.groups.get(&hash) {
            for (set, key) in bucket {
                let mut current = self.scratch.iter().filter(|(k, _)| keep(k));
                if set.iter().all(|pair| current.next() == Some(pair)) && current.next().is_none() {
                    return Ok(*key);
                }
            }
        }
        let set: Vec<(String, String)> = self
            .scratch
            .iter()
            .filter(|(k, _)| keep(k))
            .cloned()
            .collect();
        let key = interner.intern(set.clone())?;
        if self.len >= Self::MAX_SETS {
            self.groups.clear();
            self.len = 0;
        }
        self.groups.entry(hash).or_default().push((set, key));
        self.len += 1;
        Ok(key)
    }

    /// The series id of the entry in `lb` (without a pipeline error) under
    /// [`LabelReduce::Carry`]`(names)`: its whole label set, encoded into a reused buffer,
    /// is the identity; a set seen before costs no allocation. The interner is asked
    /// directly: where this reduction applies most sets are new (one series per request),
    /// and a partition-local table beside it doubled the hashing and the copies.
    fn carry_key(
        &mut self,
        lb: &LabelsBuilder,
        names: &[String],
        interner: &Interner,
    ) -> Result<u32> {
        lb.labels_into(&mut self.scratch);
        self.identity.clear();
        encode_identity(
            self.scratch
                .iter()
                .filter(|(k, _)| k != PRESERVE_ERROR_LABEL)
                .map(|(k, v)| (k.as_str(), v.as_str())),
            &mut self.identity,
        );
        interner.intern_identity(&self.identity, |id| {
            carried_labels(names, |n| lb.get(n), id)
        })
    }
}

/// Series ids of sample-mode entries, by how their labels are reduced.
#[derive(Default)]
struct SeriesKeys {
    by: ByCache,
    sets: SetCache,
    /// The failing entries kept, when the mode says which fail.
    failures: Option<FailureBound>,
}

/// The failing entries of one partition: those failing at a step no later than the
/// earliest kept so far. The query fails at the earliest step any entry fails at (the
/// evaluator's rule), and every entry failing there is kept by the partition that read it,
/// so the error is the same as with every entry kept.
struct FailureBound {
    cut: FailureCut,
    earliest: Option<usize>,
}

impl SeriesKeys {
    fn for_mode(mode: &PipelineMode) -> SeriesKeys {
        let failures = match mode {
            PipelineMode::Sample {
                failures: Some(cut),
                ..
            } => Some(FailureBound {
                cut: *cut,
                earliest: None,
            }),
            _ => None,
        };
        SeriesKeys {
            failures,
            ..SeriesKeys::default()
        }
    }

    /// Whether the entry in `lb` at `ts` is to be kept: `false` for one failing the query
    /// later than a failing entry already kept, or in no window at all.
    fn admits(&mut self, lb: &LabelsBuilder, ts: i64) -> bool {
        match self.failures.as_mut() {
            Some(f) if lb.has_error() => f.cut.admits(&mut f.earliest, lb.error(), ts),
            _ => true,
        }
    }

    fn key(
        &mut self,
        lb: &LabelsBuilder,
        reduce: &LabelReduce,
        interner: &Interner,
    ) -> Result<u32> {
        match reduce {
            LabelReduce::By(names) if !lb.has_error() => self.by.key(lb, names, interner),
            LabelReduce::Carry(names) if !lb.has_error() => {
                self.sets.carry_key(lb, names, interner)
            }
            _ => self.sets.key(lb, reduce, interner),
        }
    }
}

/// Series ids of a `by (…)` grouping over a pipeline that is a lone `| pattern` stage
/// (after line filters; see [`Pipeline::pattern_grouping`]), for entries without
/// structured metadata: the pipeline runs for the first entry of each (stream, values of
/// the grouping-relevant captures) and its series id is kept for the following ones,
/// which then cost a pattern match and a hash lookup. `sum by (status)
/// (count_over_time(… | pattern …))` spends most of its pipeline time in the label
/// builder otherwise.
struct CaptureKeys {
    grouping: PatternGrouping,
    /// Scratch: all captures of the current line.
    caps: Vec<(usize, usize)>,
    /// Scratch: the relevant captures of the current line.
    ranges: Vec<Option<(usize, usize)>>,
    /// (stream, relevant capture values) → what the pipeline made of the group's first
    /// entry: its series id, or `None` when it dropped it. A full table starts over (a
    /// bound on memory for groupings by a high-cardinality capture, which then run the
    /// pipeline more often).
    groups: ValueTable<Option<u32>>,
    /// The group of the previous entry, tried first (most entries repeat it: a run of
    /// `200`s).
    last: Option<usize>,
}

/// The text of relevant capture `i` of `line` (`None`: not reached).
fn capture_value<'a>(
    ranges: &[Option<(usize, usize)>],
    line: &'a str,
    i: usize,
) -> Option<&'a str> {
    let (s, e) = ranges.get(i).copied().flatten()?;
    line.get(s..e)
}

/// What [`CaptureKeys::lookup`] found for an entry.
enum CaptureLookup {
    /// A known group: the series id, or `None` when the pipeline drops its entries.
    Known(Option<u32>),
    /// A new group: run the pipeline, then [`CaptureKeys::insert`] its result.
    New(u64),
}

impl CaptureKeys {
    fn for_mode(pipeline: &Pipeline, mode: &PipelineMode) -> Option<CaptureKeys> {
        let PipelineMode::Sample {
            value: SampleValue::One | SampleValue::LineBytes,
            reduce: LabelReduce::By(names),
            ..
        } = mode
        else {
            return None;
        };
        let grouping = pipeline.pattern_grouping(names)?;
        let width = grouping.relevant_captures();
        Some(CaptureKeys {
            grouping,
            caps: Vec::new(),
            ranges: Vec::new(),
            groups: ValueTable::new(width),
            last: None,
        })
    }

    /// The group of an entry whose line passed the leading line filters (`LineFilterExec`
    /// below this node ran them).
    fn lookup(&mut self, stream: u64, line: &str) -> CaptureLookup {
        self.grouping
            .captures(line, &mut self.caps, &mut self.ranges);
        let ranges = &self.ranges;
        let value = |i: usize| capture_value(ranges, line, i);
        if let Some(key) = self.last.and_then(|e| self.groups.get_if(e, stream, value)) {
            return CaptureLookup::Known(key);
        }
        let hash = ValueTable::<Option<u32>>::hash(stream, (0..ranges.len()).map(value));
        match self.groups.find(hash, stream, value) {
            Some((e, key)) => {
                self.last = Some(e);
                CaptureLookup::Known(key)
            }
            None => CaptureLookup::New(hash),
        }
    }

    /// Remember `key` for the group of the entry `lookup` last saw as new (`hash`).
    fn insert(&mut self, hash: u64, stream: u64, line: &str, key: Option<u32>) {
        let ranges = &self.ranges;
        let value = |i: usize| capture_value(ranges, line, i);
        self.last = Some(self.groups.insert(hash, stream, value, key));
    }
}

/// The series id and value of one entry in sample mode, after `pipeline` (`None`: the
/// line and labels stay as they are); `None` when the pipeline (or the unwrap) drops it.
/// `row.lb` must be reset for the entry, whose line passed the leading line filters.
#[allow(clippy::too_many_arguments)]
fn sample_of_entry(
    pipeline: Option<&Pipeline>,
    row: &mut RowLabels,
    keys: &mut SeriesKeys,
    interner: &Interner,
    value: &SampleValue,
    reduce: &LabelReduce,
    ts: i64,
    raw_line: &str,
    flags: u8,
) -> Result<Option<(u32, f64)>> {
    let line = match pipeline {
        Some(p) => match p.process_after_leading(ts, raw_line, flags, &mut row.lb) {
            Some(line) => line,
            None => return Ok(None),
        },
        None => std::borrow::Cow::Borrowed(raw_line),
    };
    let v = match value {
        SampleValue::One => 1.0,
        SampleValue::LineBytes => line.len() as f64,
        SampleValue::Unwrap(ex) => match ex.extract(&mut row.lb) {
            Some(v) => v,
            None => return Ok(None),
        },
    };
    // A lone `| pattern` (what `CaptureKeys` caches the result of) sets no error, so a
    // group's first entry is never dropped here.
    if !keys.admits(&row.lb, ts) {
        return Ok(None);
    }
    Ok(Some((keys.key(&row.lb, reduce, interner)?, v)))
}

impl PartitionState {
    fn process(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(DataFusionError::Execution(QUERY_CANCELLED.to_owned()));
        }
        let (out, kept) = match &self.mode {
            PipelineMode::Filter => {
                let out = self.process_filter(batch)?;
                let kept = out.num_rows();
                (out, kept)
            }
            PipelineMode::Sample { .. } => self.process_sample(&batch)?,
        };
        StatsCollector::add(&self.stats.post_filter_lines, kept as u64);
        Ok(out)
    }

    fn process_filter(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let input = Input::of(&batch)?;
        let lines = input
            .lines
            .ok_or_else(|| DataFusionError::Internal("log scan without lines".into()))?;
        let streams = Arc::clone(&self.streams);
        let mut lookup = StreamLookup::new(&streams);
        let mut mask = BooleanBufferBuilder::new(n);
        let mut kept = 0usize;
        for row in 0..n {
            let sid = input.stream_ids.value(row);
            let keep = match lookup.get(sid) {
                Some(stream) => {
                    let nmeta = self.row.read_metadata(input.metadata, row);
                    let line = lines.value(row);
                    let flags = input.flags(row);
                    self.row.reset(sid, stream, nmeta);
                    self.row
                        .precheck(&self.pipeline, sid, stream, nmeta, line, flags)
                        && self
                            .pipeline
                            .process_after_leading(
                                input.ts.value(row),
                                line,
                                flags,
                                &mut self.row.lb,
                            )
                            .is_some()
                }
                None => false,
            };
            kept += usize::from(keep);
            mask.append(keep);
        }
        let out = if kept == n {
            batch
        } else {
            filter_record_batch(&batch, &BooleanArray::new(mask.finish(), None))?
        };
        // Only the kept lines are copied out of the pages (see `PipelineExec::try_new`).
        if out.schema_ref() == &self.schema {
            Ok(out)
        } else {
            Ok(cast_batch(&out, &self.schema)?)
        }
    }

    /// The sample batch, and how many entries it stands for.
    fn process_sample(&mut self, batch: &RecordBatch) -> Result<(RecordBatch, usize)> {
        let PipelineMode::Sample {
            value,
            reduce,
            bucketing,
            ..
        } = &self.mode
        else {
            return Err(DataFusionError::Internal("not in sample mode".into()));
        };
        let n = batch.num_rows();
        let input = Input::of(batch)?;
        if input.lines.is_none() {
            // No LineFilterExec below to count what was read.
            StatsCollector::add(&self.stats.lines_scanned, n as u64);
        }
        let mut out = SampleOut::new(
            if bucketing.is_some() { 64 } else { n },
            bucketing.as_ref(),
            &mut self.sums,
        );
        let filter_only = self.pipeline.is_line_filter_only();
        let unwrap = matches!(value, SampleValue::Unwrap(_));
        let streams = Arc::clone(&self.streams);
        let mut lookup = StreamLookup::new(&streams);
        let mut last_key: Option<(u64, u32)> = None;
        for row in 0..n {
            let sid = input.stream_ids.value(row);
            let Some(stream) = lookup.get(sid) else {
                continue;
            };
            let ts = input.ts.value(row);
            // Only a scan without any stage or line-derived value skips the lines.
            let raw_line = input.lines.map_or("", |l| l.value(row));
            let nmeta = self.row.read_metadata(input.metadata, row);
            if filter_only && !unwrap && nmeta == 0 {
                // The labels are the stream's: one interned id per stream.
                let key = match last_key {
                    Some((id, k)) if id == sid => k,
                    _ => {
                        let k = match self.stream_keys.get(&sid) {
                            Some(&k) => k,
                            None => {
                                let labels = reduce_labels(stream.as_ref().clone(), reduce);
                                let k = self.interner.intern(labels)?;
                                self.stream_keys.insert(sid, k);
                                k
                            }
                        };
                        last_key = Some((sid, k));
                        k
                    }
                };
                out.push(key, ts, value.of_unchanged_line(raw_line));
                continue;
            }
            let flags = input.flags(row);
            let mut new_group = None;
            if let (Some(ck), 0) = (self.capture_keys.as_mut(), nmeta) {
                match ck.lookup(sid, raw_line) {
                    CaptureLookup::Known(None) => continue,
                    CaptureLookup::Known(Some(key)) => {
                        out.push(key, ts, value.of_unchanged_line(raw_line));
                        continue;
                    }
                    CaptureLookup::New(hash) => new_group = Some(hash),
                }
            }
            self.row.reset(sid, stream, nmeta);
            // A pipeline of line filters alone ran them below this node already.
            let pipeline = (!filter_only).then_some(&*self.pipeline);
            if pipeline.is_some()
                && !self
                    .row
                    .precheck(&self.pipeline, sid, stream, nmeta, raw_line, flags)
            {
                continue;
            }
            let sample = sample_of_entry(
                pipeline,
                &mut self.row,
                &mut self.keys,
                &self.interner,
                value,
                reduce,
                ts,
                raw_line,
                flags,
            )?;
            if let (Some(hash), Some(ck)) = (new_group, self.capture_keys.as_mut()) {
                ck.insert(hash, sid, raw_line, sample.map(|(k, _)| k));
            }
            let Some((key, v)) = sample else {
                continue;
            };
            out.push(key, ts, v);
        }
        let entries = out.entries;
        Ok((out.finish(&self.schema)?, entries))
    }
}

/// The sample columns a batch emits, with the entries of each series pre-summed per step
/// bucket when bucketing (see [`PipelineMode::Sample`]).
struct SampleOut<'a> {
    keys: UInt32Builder,
    ts: Int64Builder,
    values: Float64Builder,
    bucketing: Option<&'a Bucketing>,
    sums: &'a mut BucketSums,
    /// Entries pushed.
    entries: usize,
}

/// Sums per series of one step bucket (reused from batch to batch).
#[derive(Default)]
struct BucketSums {
    /// The bounds `(lo, hi]` of the bucket summed.
    bucket: Option<(i64, i64)>,
    /// Position + 1 in `entries` of each series key's sum (0: none yet).
    slot: Vec<u32>,
    /// (series key, sum) in the order of first appearance.
    entries: Vec<(u32, f64)>,
}

impl<'a> SampleOut<'a> {
    fn new(
        capacity: usize,
        bucketing: Option<&'a Bucketing>,
        sums: &'a mut BucketSums,
    ) -> SampleOut<'a> {
        // Left over only when a batch failed half-way.
        sums.bucket = None;
        for &(key, _) in &sums.entries {
            sums.slot[key as usize] = 0;
        }
        sums.entries.clear();
        SampleOut {
            keys: UInt32Builder::with_capacity(capacity),
            ts: Int64Builder::with_capacity(capacity),
            values: Float64Builder::with_capacity(capacity),
            bucketing,
            sums,
            entries: 0,
        }
    }

    fn push(&mut self, key: u32, ts: i64, v: f64) {
        self.entries += 1;
        let Some(b) = self.bucketing else {
            self.append(key, ts, v);
            return;
        };
        let same = matches!(self.sums.bucket, Some((lo, hi)) if lo < ts && ts <= hi);
        if !same {
            self.flush();
            let j = b.index(ts);
            // Bounds that overflow (timestamps near the ends of i64): no summing.
            let bounds = j
                .checked_sub(1)
                .and_then(|p| Some((b.checked_end_of(p)?, b.checked_end_of(j)?)));
            let Some((lo, hi)) = bounds else {
                self.append(key, ts, v);
                return;
            };
            self.sums.bucket = Some((lo, hi));
        }
        let k = key as usize;
        if k >= self.sums.slot.len() {
            self.sums.slot.resize(k + 1, 0);
        }
        match self.sums.slot[k] {
            0 => {
                self.sums.entries.push((key, v));
                // At most one entry per key: fits u32 as the keys do.
                self.sums.slot[k] = self.sums.entries.len() as u32;
            }
            i => self.sums.entries[i as usize - 1].1 += v,
        }
    }

    fn append(&mut self, key: u32, ts: i64, v: f64) {
        self.keys.append_value(key);
        self.ts.append_value(ts);
        self.values.append_value(v);
    }

    /// Emit the current bucket's sums at its end.
    fn flush(&mut self) {
        let Some((_, hi)) = self.sums.bucket.take() else {
            return;
        };
        for &(key, sum) in &self.sums.entries {
            self.sums.slot[key as usize] = 0;
            self.keys.append_value(key);
            self.ts.append_value(hi);
            self.values.append_value(sum);
        }
        self.sums.entries.clear();
    }

    fn finish(mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        self.flush();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.keys.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.values.finish()),
        ];
        Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn by_cache_matches_interning() {
        let interner = Interner::new();
        let mut cache = ByCache::default();
        let names = vec!["level".to_owned(), "host".to_owned()];
        let mut lb = LabelsBuilder::new();
        lb.reset(&[p("host", "a"), p("level", "info"), p("pod", "1")], &[]);
        let k1 = cache.key(&lb, &names, &interner).unwrap();
        lb.reset(&[p("host", "a"), p("level", "info"), p("pod", "2")], &[]);
        let k2 = cache.key(&lb, &names, &interner).unwrap();
        lb.reset(&[p("host", "a"), p("pod", "2")], &[]);
        let k3 = cache.key(&lb, &names, &interner).unwrap();
        assert_eq!(k1, k2);
        assert_ne!(k1, k3);
        assert_eq!(
            interner.sets()[k1 as usize].as_slice(),
            &[p("host", "a"), p("level", "info")]
        );
        assert_eq!(interner.sets()[k3 as usize].as_slice(), &[p("host", "a")]);
    }

    /// A precheck that drops (almost) nothing is given up after its trial; one that drops
    /// keeps running.
    #[test]
    fn precheck_is_given_up_when_it_rarely_drops() -> Result<()> {
        let Ok(tovlog_logql::ast::Expr::Log(q)) =
            tovlog_logql::parse(r#"{app="a"} | json | level="error""#)
        else {
            return Err(DataFusionError::Internal("not a log query".into()));
        };
        let pipeline =
            Pipeline::new(&q.pipeline).map_err(|e| DataFusionError::Internal(e.to_string()))?;
        let stream = vec![p("app", "a")];
        let flags = tovlog_logql::pipeline::line_flags(r#"{"level":"info"}"#);
        let run = |row: &mut RowLabels, line: &str| {
            row.reset(1, &stream, 0);
            row.precheck(&pipeline, 1, &stream, 0, line, flags)
        };
        let (mut passing, mut dropping) = (RowLabels::default(), RowLabels::default());
        for i in 0..PRECHECK_TRIAL {
            assert!(run(&mut passing, r#"{"level":"error"}"#));
            let level = if i % 4 == 0 { "error" } else { "info" };
            run(&mut dropping, &format!(r#"{{"level":"{level}"}}"#));
        }
        // Given up: the line goes on to the whole pipeline, which drops it.
        assert!(run(&mut passing, r#"{"level":"info"}"#));
        assert!(!run(&mut dropping, r#"{"level":"info"}"#));
        Ok(())
    }

    type LabeledSample = (Vec<(String, String)>, i64, f64);

    /// Runs sample mode over `rows` (stream id, line; row `i` at timestamp `i`) with the
    /// pattern fast path on or off; returns each output row as (labels, ts, value).
    fn samples(
        query_stages: &[tovlog_logql::ast::Stage],
        value: SampleValue,
        by: &[&str],
        streams: &StreamMap,
        rows: &[(u64, &str)],
        fast: bool,
    ) -> Vec<LabeledSample> {
        let ts: Vec<i64> = (0..rows.len() as i64).collect();
        samples_at(query_stages, value, by, streams, rows, &ts, fast, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn samples_at(
        query_stages: &[tovlog_logql::ast::Stage],
        value: SampleValue,
        by: &[&str],
        streams: &StreamMap,
        rows: &[(u64, &str)],
        ts: &[i64],
        fast: bool,
        bucketing: Option<Bucketing>,
    ) -> Vec<LabeledSample> {
        use arrow::array::StringArray;
        let pipeline = Arc::new(Pipeline::new(query_stages).unwrap());
        // As in a plan, `LineFilterExec` below has run the leading line filters.
        let (rows, ts): (Vec<(u64, &str)>, Vec<i64>) = rows
            .iter()
            .zip(ts)
            .filter(|(r, _)| pipeline.leading_line_filters().matches(r.1))
            .map(|(r, t)| (*r, *t))
            .unzip();
        let mode = PipelineMode::Sample {
            value,
            reduce: LabelReduce::By(by.iter().map(|s| s.to_string()).collect()),
            bucketing,
            failures: None,
        };
        let interner = Interner::new();
        let capture_keys = CaptureKeys::for_mode(&pipeline, &mode);
        let mut state = PartitionState {
            pipeline,
            mode,
            streams: Arc::new(streams.clone()),
            interner: Arc::clone(&interner),
            stats: Arc::new(StatsCollector::default()),
            cancelled: Arc::new(AtomicBool::new(false)),
            schema: sample_schema(),
            row: RowLabels::default(),
            stream_keys: HashMap::new(),
            keys: SeriesKeys::default(),
            capture_keys: if fast { capture_keys } else { None },
            sums: BucketSums::default(),
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new(STREAM_ID, DataType::UInt64, false),
            Field::new(TS, DataType::Int64, false),
            Field::new(LINE, DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(ts.iter().copied())),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap();
        let (out, _) = state.process_sample(&batch).unwrap();
        let (keys, ts, values) = (
            out.column(0).as_primitive::<arrow::datatypes::UInt32Type>(),
            out.column(1).as_primitive::<Int64Type>(),
            out.column(2)
                .as_primitive::<arrow::datatypes::Float64Type>(),
        );
        let sets = interner.sets();
        (0..out.num_rows())
            .map(|i| {
                (
                    sets[keys.value(i) as usize].as_ref().clone(),
                    ts.value(i),
                    values.value(i),
                )
            })
            .collect()
    }

    #[test]
    fn pattern_captures_group_as_the_whole_pipeline_does() {
        use tovlog_logql::ast::{LineFilter, LineFilterOp, LineFilterValue, Stage};
        let mut streams = StreamMap::default();
        streams.0.insert(1, Arc::new(vec![p("job", "nginx")]));
        // A stream label named like a capture: the capture becomes `host_extracted`.
        streams
            .0
            .insert(2, Arc::new(vec![p("host", "h2"), p("job", "nginx")]));
        let lines = [
            (1, "h1 GET /a 200 rt=1"),
            (1, "h1 GET /b 200 rt=2"),
            (2, "hx GET /a 200 rt=1"),
            (2, "hx GET /a 500 rt=1"),
            // The same capture in a stream without `host`: a different series.
            (1, "hx GET /a 500 rt=1"),
            (1, "h1 POST /a 200 rt=1"),
            (1, "h1 GET /a"),
            (1, "garbage"),
            (1, ""),
            (2, "h3 GET  200 rt=9"),
            (1, "h1 GET /b 404 rt=2"),
            (1, "h1 GET /b 200 rt=2"),
        ];
        let pattern = Stage::Pattern("<host> <method> <path> <status> rt=<_>".into());
        let get = Stage::LineFilter(LineFilter {
            op: LineFilterOp::Contains,
            values: vec![LineFilterValue::Str("GET".into())],
        });
        let groupings: [&[&str]; 5] = [
            &["status"],
            &["host", "status"],
            &["host_extracted", "method", "job"],
            &["path"],
            &["nothing"],
        ];
        for stages in [vec![pattern.clone()], vec![get, pattern.clone()]] {
            for by in groupings {
                let names = by.iter().map(|s| s.to_string()).collect();
                let mode = PipelineMode::Sample {
                    value: SampleValue::One,
                    reduce: LabelReduce::By(names),
                    bucketing: None,
                    failures: None,
                };
                let pipeline = Pipeline::new(&stages).unwrap();
                assert!(CaptureKeys::for_mode(&pipeline, &mode).is_some());
                for value in [SampleValue::One, SampleValue::LineBytes] {
                    let fast = samples(&stages, value.clone(), by, &streams, &lines, true);
                    let slow = samples(&stages, value, by, &streams, &lines, false);
                    assert_eq!(fast, slow, "by {by:?}, stages {stages:?}");
                    assert!(!fast.is_empty());
                }
            }
        }
        // Only a lone pattern stage (after line filters) takes the fast path.
        let json = vec![Stage::Json(vec![])];
        let by = LabelReduce::By(vec!["status".into()]);
        let mode = |value| PipelineMode::Sample {
            value,
            reduce: by.clone(),
            bucketing: None,
            failures: None,
        };
        let fast = |stages: &[Stage], m: &PipelineMode| {
            CaptureKeys::for_mode(&Pipeline::new(stages).unwrap(), m).is_some()
        };
        assert!(fast(
            std::slice::from_ref(&pattern),
            &mode(SampleValue::One)
        ));
        assert!(!fast(&json, &mode(SampleValue::One)));
        assert!(!fast(
            &[pattern.clone(), pattern.clone()],
            &mode(SampleValue::One)
        ));
        let keep = PipelineMode::Sample {
            value: SampleValue::One,
            reduce: LabelReduce::Keep,
            bucketing: None,
            failures: None,
        };
        assert!(!fast(&[pattern], &keep));
    }

    #[test]
    fn bucketed_samples_sum_to_what_the_range_vector_sums() {
        use tovlog_logql::ast::{RangeOp, Stage};
        let mut streams = StreamMap::default();
        streams.0.insert(1, Arc::new(vec![p("job", "a")]));
        streams.0.insert(2, Arc::new(vec![p("job", "b")]));
        let b = Bucketing {
            base_ns: 1_000,
            step_ns: 100,
            buckets: 5,
            op: RangeOp::SumOverTime,
        };
        // Two streams, times in and out of order, on and between bucket ends, and before
        // and after every bucket.
        let ts = [
            901, 950, 1_000, 1_001, 1_100, 1_099, 1_250, 1_000, 1_200, 1_201, 5_000, -7, 1_300,
            1_301, 1_302, 1_303,
        ];
        let rows: Vec<(u64, &str)> = ts
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let line = ["s=200 x", "s=404 yy", "s=200 zzz"][i % 3];
                (1 + (i as u64 / 4) % 2, line)
            })
            .collect();
        let pattern = vec![Stage::Pattern("s=<s> <_>".into())];
        for (stages, by) in [(vec![], &["job"][..]), (pattern, &["s", "job"][..])] {
            for value in [SampleValue::One, SampleValue::LineBytes] {
                let per_bucket = |samples: Vec<LabeledSample>| {
                    let mut sums: std::collections::BTreeMap<(Vec<(String, String)>, i64), f64> =
                        Default::default();
                    for (labels, t, v) in samples {
                        *sums.entry((labels, b.index(t))).or_default() += v;
                    }
                    sums
                };
                let raw = samples_at(&stages, value.clone(), by, &streams, &rows, &ts, true, None);
                let summed = samples_at(&stages, value, by, &streams, &rows, &ts, true, Some(b));
                assert!(summed.len() < raw.len(), "{} rows", summed.len());
                // Summed samples sit at their bucket's end.
                assert!(summed.iter().all(|(_, t, _)| b.end_of(b.index(*t)) == *t));
                assert_eq!(per_bucket(summed), per_bucket(raw));
            }
        }
    }

    #[test]
    fn reduction_filters_names() {
        let labels = vec![p("host", "a"), p("level", "info"), p("pod", "x")];
        assert_eq!(
            reduce_labels(labels.clone(), &LabelReduce::By(vec!["level".into()])),
            vec![p("level", "info")]
        );
        assert_eq!(
            reduce_labels(labels.clone(), &LabelReduce::Without(vec!["level".into()])),
            vec![p("host", "a"), p("pod", "x")]
        );
        assert_eq!(reduce_labels(labels.clone(), &LabelReduce::Keep), labels);
    }

    #[test]
    fn error_entries_keep_full_labels() {
        let mut lb = LabelsBuilder::new();
        lb.reset(&[p("host", "a"), p("job", "j")], &[]);
        assert_eq!(
            series_labels(&lb, &LabelReduce::By(vec!["host".into()])),
            vec![p("host", "a")]
        );
        let stages = vec![tovlog_logql::ast::Stage::Json(vec![])];
        let pipeline = Pipeline::new(&stages).unwrap();
        lb.reset(&[p("host", "a"), p("job", "j")], &[]);
        assert!(pipeline.process(0, "{not json", &mut lb).is_some());
        assert!(lb.has_error());
        let labels = series_labels(&lb, &LabelReduce::By(vec!["host".into()]));
        assert!(labels
            .iter()
            .any(|(k, v)| k == "__error__" && v == "JSONParserErr"));
        assert!(labels.iter().any(|(k, _)| k == "job"));
    }

    /// `SeriesKeys` interns what `series_labels` gives for every reduction, with and
    /// without a pipeline error, and finds a set it has seen again under the same id.
    #[test]
    fn series_keys_intern_the_series_labels() {
        let pipeline = Pipeline::new(&[tovlog_logql::ast::Stage::Logfmt {
            strict: true,
            keep_empty: false,
            params: vec![],
        }])
        .unwrap();
        let reduces = [
            LabelReduce::Keep,
            LabelReduce::By(vec!["level".into(), "host".into()]),
            LabelReduce::Without(vec!["pod".into(), "level".into()]),
            LabelReduce::By(vec![]),
        ];
        let lines = [
            "level=info msg=a",
            "level=warn msg=a",
            "level=info msg=a",
            "level=info msg=\"unterminated",
            "level=info msg=b pod=x",
        ];
        for reduce in &reduces {
            let interner = Interner::new();
            let mut keys = SeriesKeys::default();
            let mut seen: Vec<(Vec<(String, String)>, u32)> = Vec::new();
            for pod in ["1", "2"] {
                for line in lines {
                    let mut lb = LabelsBuilder::new();
                    lb.reset(&[p("host", "a"), p("pod", pod)], &[]);
                    assert!(pipeline.process(0, line, &mut lb).is_some());
                    let key = keys.key(&lb, reduce, &interner).unwrap();
                    let want = series_labels(&lb, reduce);
                    assert_eq!(
                        interner.sets()[key as usize].as_slice(),
                        want,
                        "{reduce:?} {line}"
                    );
                    // The same set always gets the same id, another set another one.
                    for (set, k) in &seen {
                        assert_eq!(*set == want, *k == key, "{reduce:?} {line}");
                    }
                    seen.push((want, key));
                }
            }
        }
    }
}
