//! `RangeVectorExec`: the range-vector step of a metric query as a DataFusion node.
//!
//! It sits on top of `PipelineExec` in sample mode (one partition: the plan coalesces
//! first) and turns the `(key, ts, value)` sample stream of one range-aggregation leaf into
//! that leaf's range vector, emitted as `(series, step, value)` batches
//! ([`range_vector_schema`]):
//!
//! 1. While the input streams, samples are kept per series key, or, with a [`Bucketing`],
//!    summed straight into per-step buckets (a key holds its non-empty buckets only until
//!    they are a quarter of all: `KeyBuckets`). Both are accounted in the query's memory
//!    pool. A bare range aggregation (`max_series` set) stops with Loki's series-limit
//!    error as soon as the interner holds more label sets than the limit.
//! 2. At the end of the input, the rows that compacted files answered with per-minute
//!    counts instead of rows are added to their buckets.
//! 3. The series go to [`tovlog_logql::eval::range_vector`], which applies Loki's
//!    pipeline-error rules, the extractor grouping and the range function over every
//!    window `(t − offset − range, t − offset]`. Its errors (pipeline errors, a grouping a
//!    function does not allow) fail the node as [`QueryError::BadRequest`].
//! 4. The result is emitted series by series, points in step order: `series` is the id of
//!    the series' label set in the node's output label table ([`RangeVectorExec::labels`]),
//!    `step` the index of the query step.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use arrow::array::{ArrayRef, AsArray, Float64Builder, PrimitiveArray, RecordBatch, UInt32Builder};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, UInt32Type};
use datafusion_common::error::{DataFusionError, Result};
use datafusion_common::tree_node::TreeNodeRecursion;
use datafusion_execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion_execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion_physical_expr::EquivalenceProperties;
use datafusion_physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion_physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion_physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, Distribution, ExecutionPlan,
    ExecutionPlanProperties, Partitioning, PhysicalExpr, PlanProperties, ReplaceChildrenOptions,
};
use futures::{Stream, StreamExt};

use tovlog_logql::ast::RangeAggregation;
use tovlog_logql::eval::{
    self, max_series_message, Bucketing, LeafHints, RawSeries, SeriesVals, Steps,
};
use tovlog_storage::scan::MinuteCount;

use super::{
    carried_labels, encode_identity, reduce_labels, take_labels, Interner, LabelReduce, StreamMap,
};
use crate::query::plan::QUERY_CANCELLED;
use crate::query::QueryError;

/// Output column: id of the series' label set in [`RangeVectorExec::labels`].
pub const RANGE_SERIES: &str = "series";
/// Output column: index of the query step.
pub const RANGE_STEP: &str = "step";
/// Output column: the range function's value at that step.
pub const RANGE_VALUE: &str = "value";

/// Schema of [`RangeVectorExec`]'s output.
pub fn range_vector_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new(RANGE_SERIES, DataType::UInt32, false),
            Field::new(RANGE_STEP, DataType::UInt32, false),
            Field::new(RANGE_VALUE, DataType::Float64, false),
        ]))
    })
    .clone()
}

/// A query error raised inside the plan, kept whole for `plan::datafusion_error`.
fn query_error(e: QueryError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// What one range-aggregation leaf evaluates.
#[derive(Debug, Clone)]
pub struct RangeVectorSpec {
    /// The range aggregation.
    pub agg: RangeAggregation,
    /// Loki's extraction hints for it (see `tovlog_logql::eval::leaf_hints`).
    pub hints: LeafHints,
    /// The query steps (already validated by the evaluator).
    pub steps: Steps,
    /// Sum samples per step bucket while reading (`Bucketing::of(agg, steps)`, or none).
    pub bucketing: Option<Bucketing>,
    /// Rows the scan did not read because their files' minute counts tell them; only with
    /// `bucketing`.
    pub minute_counts: Vec<MinuteCount>,
    /// Labels of the streams of the scan (for the minute counts).
    pub streams: Arc<StreamMap>,
    /// The label reduction the input applied (applied to minute counts alike).
    pub reduce: LabelReduce,
    /// Fail with Loki's series-limit error once more input label sets than this are seen
    /// (only where every input series makes an output series).
    pub max_series: Option<usize>,
}

/// The range-vector step of one leaf. See the module docs.
pub struct RangeVectorExec {
    input: Arc<dyn ExecutionPlan>,
    spec: Arc<RangeVectorSpec>,
    /// Label sets of the input's series keys.
    interner: Arc<Interner>,
    /// Label sets of the output's series ids.
    labels: Arc<Interner>,
    cancelled: Arc<AtomicBool>,
    metrics: ExecutionPlanMetricsSet,
    props: Arc<PlanProperties>,
}

impl fmt::Debug for RangeVectorExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RangeVectorExec")
            .field("op", &self.spec.agg.op)
            .field("steps", &self.spec.steps)
            .field("bucketing", &self.spec.bucketing)
            .finish_non_exhaustive()
    }
}

impl RangeVectorExec {
    /// Build over `input`, a single-partition sample stream ([`super::sample_schema`])
    /// whose keys are ids of `interner`. Output label sets go to `labels`.
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        spec: RangeVectorSpec,
        interner: Arc<Interner>,
        labels: Arc<Interner>,
        cancelled: Arc<AtomicBool>,
    ) -> Result<RangeVectorExec, QueryError> {
        if spec.bucketing.is_none() && !spec.minute_counts.is_empty() {
            return Err(QueryError::Internal(
                "minute counts need a bucketed range vector".into(),
            ));
        }
        Ok(Self::with_spec(
            input,
            Arc::new(spec),
            interner,
            labels,
            cancelled,
        ))
    }

    fn with_spec(
        input: Arc<dyn ExecutionPlan>,
        spec: Arc<RangeVectorSpec>,
        interner: Arc<Interner>,
        labels: Arc<Interner>,
        cancelled: Arc<AtomicBool>,
    ) -> RangeVectorExec {
        let props = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(range_vector_schema()),
            Partitioning::UnknownPartitioning(1),
            // Nothing comes out before the whole input was seen.
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        RangeVectorExec {
            input,
            spec,
            interner,
            labels,
            cancelled,
            metrics: ExecutionPlanMetricsSet::new(),
            props,
        }
    }

    /// The output label sets, indexed by the `series` column.
    pub fn labels(&self) -> &Arc<Interner> {
        &self.labels
    }
}

impl DisplayAs for RangeVectorExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.spec;
        write!(
            f,
            "RangeVectorExec: op={}, range={}ns, offset={}ns, steps={}, bucketed={}, minute_counts={}",
            s.agg.op.name(),
            s.agg.range.range_ns,
            s.agg.range.offset_ns,
            s.steps.count(),
            s.bucketing.is_some(),
            s.minute_counts.len()
        )
    }
}

impl ExecutionPlan for RangeVectorExec {
    fn name(&self) -> &str {
        "RangeVectorExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition]
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
                "RangeVectorExec has exactly one child".into(),
            ));
        }
        Ok(Arc::new(RangeVectorExec::with_spec(
            children.swap_remove(0),
            Arc::clone(&self.spec),
            Arc::clone(&self.interner),
            Arc::clone(&self.labels),
            Arc::clone(&self.cancelled),
        )))
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
        if partition != 0 || self.input.output_partitioning().partition_count() != 1 {
            return Err(DataFusionError::Internal(format!(
                "RangeVectorExec has one partition over one input partition (asked {partition}, \
                 input has {})",
                self.input.output_partitioning().partition_count()
            )));
        }
        let batch_size = context.session_config().batch_size().max(1);
        // Samples (or buckets) are held until the input ends: account for them in the
        // query's memory pool.
        let reservation =
            MemoryConsumer::new("tovlog range samples").register(context.memory_pool());
        let input = self.input.execute(0, context)?;
        let samples = match self.spec.bucketing {
            Some(b) => {
                // Buckets 1 − range/step ..= steps − 1, shifted to start at 0.
                let first = 1 - self.spec.agg.range.range_ns / b.step_ns;
                Samples::Bucketed {
                    bucketing: b,
                    first,
                    table: BucketTable::new(b.buckets + usize::try_from(-first).unwrap_or(0)),
                }
            }
            None => Samples::Raw(Vec::new()),
        };
        Ok(Box::pin(RangeVectorStream {
            input: Some(input),
            spec: Arc::clone(&self.spec),
            interner: Arc::clone(&self.interner),
            labels: Arc::clone(&self.labels),
            cancelled: Arc::clone(&self.cancelled),
            reservation,
            batch_size,
            samples,
            output: Vec::new(),
            next_series: 0,
            next_point: 0,
            done: false,
            baseline: BaselineMetrics::new(&self.metrics, partition),
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// What the stream holds while its input runs.
enum Samples {
    /// Samples per series key, in arrival order.
    Raw(Vec<Vec<(i64, f64)>>),
    /// Per series key, the sums of its buckets `first ..= bucketing.buckets − 1` (bucket
    /// `b` at index `b − first`).
    Bucketed {
        bucketing: Bucketing,
        first: i64,
        table: BucketTable,
    },
}

/// Bucket entries reserved in the query's pool at a time (the pool is shared: a call per
/// entry would cost more than the add).
const RESERVE_ENTRIES: usize = 4096;

/// The buckets of every series key, accounted in the query's memory pool.
struct BucketTable {
    /// Buckets per key.
    n: usize,
    per_key: Vec<KeyBuckets>,
    /// Entries held by all keys, and how many the reservation covers.
    held: usize,
    reserved: usize,
}

impl BucketTable {
    fn new(n: usize) -> BucketTable {
        BucketTable {
            n,
            per_key: Vec::new(),
            held: 0,
            reserved: 0,
        }
    }

    /// Add `count` samples summing to `value` to bucket `idx` of key `k` (a bucket outside
    /// `0..n` is outside every window: ignored).
    fn add(
        &mut self,
        k: u32,
        idx: i64,
        value: f64,
        count: u32,
        reservation: &MemoryReservation,
    ) -> Result<()> {
        let (held, reserved) = (&mut self.held, &mut self.reserved);
        // Accounted before the key allocates.
        let mut grow = |units: usize| -> Result<()> {
            *held += units;
            if *held > *reserved {
                let more = (*held - *reserved).max(RESERVE_ENTRIES);
                reservation.try_grow(more * std::mem::size_of::<(u32, u32, f64)>())?;
                *reserved += more;
            }
            Ok(())
        };
        slot(&mut self.per_key, k).add(idx, value, count, self.n, &mut grow)
    }
}

/// The buckets of one series key: at first only its non-empty ones, as `(index, count,
/// sum)` entries in arrival order (an add lands in the last entry when it is for the same
/// bucket), then, once those are a quarter of the buckets, one `(sum, count)` slot per
/// bucket.
///
/// A key's samples come mostly in bucket order (a scan reads each stream's rows in time
/// order, and `PipelineExec` sums each batch per series and bucket), so a sparse key
/// holds about one entry per non-empty bucket. Slots for every bucket of every key would
/// cost 4.6 KB per series for a day at 5-minute steps: a gigabyte for `sum by (path)`
/// over a day of access logs (240,000 paths), where most series have a few samples.
#[derive(Debug, Default)]
struct KeyBuckets {
    sparse: Vec<(u32, u32, f64)>,
    /// Empty until the key turns dense.
    dense: Vec<(f64, u32)>,
}

impl KeyBuckets {
    /// Add `count` samples summing to `value` to bucket `idx` of `n` (others are outside
    /// every window: ignored). `grow` is told how many more 16-byte entries or slots the
    /// key is about to hold, before it allocates them, and may refuse.
    fn add(
        &mut self,
        idx: i64,
        value: f64,
        count: u32,
        n: usize,
        grow: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<()> {
        let Some(i) = usize::try_from(idx).ok().filter(|&i| i < n) else {
            return Ok(());
        };
        if let Some(slot) = self.dense.get_mut(i) {
            slot.0 += value;
            slot.1 += count;
            return Ok(());
        }
        if let Some(last) = self.sparse.last_mut() {
            if last.0 as usize == i {
                last.1 += count;
                last.2 += value;
                return Ok(());
            }
        }
        let limit = n / 4 + 1;
        if self.sparse.len() + 1 < limit {
            grow(1)?;
            // `i < n`, and `n` is at most the 11,000 points of a query plus a range's
            // buckets.
            self.sparse.push((i as u32, count, value));
            return Ok(());
        }
        // Dense from now on: `n` slots where `limit − 1` entries were; entries are added
        // in arrival order.
        grow(n + 1 - limit)?;
        self.dense = vec![(0.0, 0); n];
        let sparse = std::mem::take(&mut self.sparse);
        for (j, c, v) in sparse.into_iter().chain([(i as u32, count, value)]) {
            let slot = &mut self.dense[j as usize];
            slot.0 += v;
            slot.1 += c;
        }
        Ok(())
    }

    /// The non-empty buckets `(index, sum)` in bucket order; a bucket's samples are
    /// summed in arrival order.
    fn into_sums(mut self) -> Vec<(usize, f64)> {
        if !self.dense.is_empty() {
            return self
                .dense
                .iter()
                .enumerate()
                .filter(|(_, (_, count))| *count > 0)
                .map(|(i, &(sum, _))| (i, sum))
                .collect();
        }
        // Stable: entries of one bucket stay in arrival order.
        self.sparse.sort_by_key(|e| e.0);
        let mut out: Vec<(usize, u32, f64)> = Vec::with_capacity(self.sparse.len());
        for (i, c, v) in self.sparse {
            match out.last_mut() {
                Some(last) if last.0 == i as usize => {
                    last.1 += c;
                    last.2 += v;
                }
                _ => out.push((i as usize, c, v)),
            }
        }
        out.into_iter()
            .filter(|&(_, count, _)| count > 0)
            .map(|(i, _, sum)| (i, sum))
            .collect()
    }
}

struct RangeVectorStream {
    /// `None` once drained.
    input: Option<SendableRecordBatchStream>,
    spec: Arc<RangeVectorSpec>,
    interner: Arc<Interner>,
    labels: Arc<Interner>,
    cancelled: Arc<AtomicBool>,
    reservation: MemoryReservation,
    batch_size: usize,
    samples: Samples,
    /// The range vector: output series id and points; emitted from `next_series`,
    /// `next_point`.
    output: Vec<(u32, Vec<(u32, f64)>)>,
    next_series: usize,
    next_point: usize,
    /// Finished or failed: nothing more comes.
    done: bool,
    baseline: BaselineMetrics,
}

/// The entry of series key `k`, growing the table as keys appear.
fn slot<T: Default>(table: &mut Vec<T>, k: u32) -> &mut T {
    let k = k as usize;
    if k >= table.len() {
        table.resize_with(k + 1, T::default);
    }
    &mut table[k]
}

type SampleColumns<'a> = (
    &'a PrimitiveArray<UInt32Type>,
    &'a PrimitiveArray<Int64Type>,
    &'a PrimitiveArray<Float64Type>,
);

/// The `(key, ts, value)` columns of a sample batch.
fn sample_columns(batch: &RecordBatch) -> Result<SampleColumns<'_>> {
    let internal = || DataFusionError::Internal("bad sample batch".into());
    if batch.num_columns() != 3 {
        return Err(internal());
    }
    Ok((
        batch
            .column(0)
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(internal)?,
        batch
            .column(1)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(internal)?,
        batch
            .column(2)
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(internal)?,
    ))
}

impl RangeVectorStream {
    fn check_cancelled(&self) -> Result<()> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(DataFusionError::Execution(QUERY_CANCELLED.to_owned()));
        }
        Ok(())
    }

    fn check_series(&self) -> Result<()> {
        if let Some(max) = self.spec.max_series {
            if self.interner.len() > max {
                return Err(query_error(QueryError::BadRequest(max_series_message(max))));
            }
        }
        Ok(())
    }

    /// Take in one input batch.
    fn consume(&mut self, batch: &RecordBatch) -> Result<()> {
        self.check_cancelled()?;
        self.check_series()?;
        let (keys, ts, values) = sample_columns(batch)?;
        let rows = keys
            .values()
            .iter()
            .zip(ts.values().iter())
            .zip(values.values().iter());
        match &mut self.samples {
            Samples::Raw(per_key) => {
                self.reservation
                    .try_grow(batch.num_rows() * std::mem::size_of::<(i64, f64)>())?;
                for ((k, t), v) in rows {
                    slot(per_key, *k).push((*t, *v));
                }
            }
            Samples::Bucketed {
                bucketing,
                first,
                table,
            } => {
                for ((k, t), v) in rows {
                    table.add(*k, bucketing.index(*t) - *first, *v, 1, &self.reservation)?;
                }
            }
        }
        Ok(())
    }

    /// The input ended: evaluate the range vector.
    fn finish(&mut self) -> Result<()> {
        self.check_cancelled()?;
        let raw = match std::mem::replace(&mut self.samples, Samples::Raw(Vec::new())) {
            Samples::Bucketed {
                bucketing,
                first,
                table,
            } => self.bucketed_series(bucketing, first, table)?,
            Samples::Raw(per_key) => {
                // The input is over: the series take the interner's sets.
                let mut sets = self.interner.take_sets().into_iter();
                let mut out = Vec::with_capacity(per_key.len());
                for mut samples in per_key {
                    let set = sets.next();
                    if samples.is_empty() {
                        continue;
                    }
                    // Stable: entries with equal timestamps keep their storage order.
                    samples.sort_by_key(|s| s.0);
                    let labels = set.map(take_labels).unwrap_or_default();
                    out.push(RawSeries { labels, samples });
                }
                out
            }
        };
        // The input label sets now live in the series too.
        self.reservation.grow(self.interner.reserved_bytes());
        let spec = &self.spec;
        let vector = eval::range_vector(
            &spec.agg,
            &spec.hints,
            raw,
            &spec.steps,
            spec.bucketing.as_ref(),
        )
        .map_err(|e| query_error(QueryError::BadRequest(e.to_string())))?;
        // The samples are gone; the points are held until emitted.
        let points: usize = vector.iter().map(|s| s.points.len()).sum();
        self.reservation
            .resize(points * std::mem::size_of::<(u32, f64)>());
        self.output.reserve(vector.len());
        // Series that carry their id ([`LabelReduce::Carry`]) are distinct by their labels:
        // no lookup (a fifth of this call's time with one series per request).
        let distinct = matches!(self.spec.reduce, LabelReduce::Carry(_));
        for SeriesVals { labels, points } in vector {
            let id = if distinct {
                self.labels.push_distinct(labels)?
            } else {
                self.labels.intern(labels)?
            };
            self.output.push((id, points));
        }
        Ok(())
    }

    /// One series per key with a sample per non-empty bucket (at the bucket's end, holding
    /// its sum), after adding the minute counts.
    fn bucketed_series(
        &self,
        b: Bucketing,
        first: i64,
        mut table: BucketTable,
    ) -> Result<Vec<RawSeries>> {
        let mut keys: HashMap<u64, u32> = HashMap::new();
        for c in &self.spec.minute_counts {
            let key = match keys.get(&c.stream) {
                Some(&k) => k,
                None => {
                    let stream = self.spec.streams.0.get(&c.stream);
                    let k = match &self.spec.reduce {
                        LabelReduce::Carry(names) => {
                            // The key the pipeline gives the stream's rows.
                            let mut key = Vec::new();
                            let pairs = stream.map(|l| l.as_slice()).unwrap_or_default();
                            encode_identity(
                                pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                                &mut key,
                            );
                            let get = |n: &str| {
                                pairs.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str())
                            };
                            self.interner
                                .intern_identity(&key, |id| carried_labels(names, get, id))?
                        }
                        reduce => {
                            let labels = stream.map_or_else(Vec::new, |l| {
                                reduce_labels(l.as_ref().clone(), reduce)
                            });
                            self.interner.intern(labels)?
                        }
                    };
                    keys.insert(c.stream, k);
                    k
                }
            };
            let idx = b.index(c.minute_end_ns) - first;
            table.add(key, idx, f64::from(c.rows), c.rows, &self.reservation)?;
        }
        self.check_series()?;
        let mut sets = self.interner.take_sets().into_iter();
        let mut out = Vec::with_capacity(table.per_key.len());
        for buckets in table.per_key {
            let set = sets.next();
            let samples: Vec<(i64, f64)> = buckets
                .into_sums()
                .into_iter()
                .map(|(i, sum)| (b.end_of(i as i64 + first), sum))
                .collect();
            if samples.is_empty() {
                continue;
            }
            let labels = set.map(take_labels).unwrap_or_default();
            out.push(RawSeries { labels, samples });
        }
        Ok(out)
    }

    /// The next output batch of up to `batch_size` points, `None` at the end.
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        self.check_cancelled()?;
        if self.next_series >= self.output.len() {
            return Ok(None);
        }
        let cap = self.batch_size;
        let mut series_b = UInt32Builder::with_capacity(cap);
        let mut step_b = UInt32Builder::with_capacity(cap);
        let mut value_b = Float64Builder::with_capacity(cap);
        let (mut rows, mut freed) = (0usize, 0usize);
        while rows < cap && self.next_series < self.output.len() {
            let (id, points) = &mut self.output[self.next_series];
            let start = self.next_point;
            let end = points.len().min(start + (cap - rows));
            for &(k, v) in &points[start..end] {
                series_b.append_value(*id);
                step_b.append_value(k);
                value_b.append_value(v);
            }
            rows += end - start;
            self.next_point = end;
            if end == points.len() {
                // Emitted whole: free it.
                freed += points.len();
                *points = Vec::new();
                self.next_series += 1;
                self.next_point = 0;
            }
        }
        self.reservation.resize(
            self.reservation
                .size()
                .saturating_sub(freed * std::mem::size_of::<(u32, f64)>()),
        );
        let columns: Vec<ArrayRef> = vec![
            Arc::new(series_b.finish()),
            Arc::new(step_b.finish()),
            Arc::new(value_b.finish()),
        ];
        Ok(Some(RecordBatch::try_new(range_vector_schema(), columns)?))
    }

    fn fail(&mut self, e: DataFusionError) -> Poll<Option<Result<RecordBatch>>> {
        self.done = true;
        self.input = None;
        self.output = Vec::new();
        self.reservation.free();
        Poll::Ready(Some(Err(e)))
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<RecordBatch>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let elapsed = self.baseline.elapsed_compute().clone();
        while let Some(input) = self.input.as_mut() {
            match ready!(input.poll_next_unpin(cx)) {
                Some(Ok(batch)) => {
                    let timer = elapsed.timer();
                    let consumed = self.consume(&batch);
                    timer.done();
                    if let Err(e) = consumed {
                        return self.fail(e);
                    }
                }
                Some(Err(e)) => return self.fail(e),
                None => {
                    self.input = None;
                    let timer = elapsed.timer();
                    let finished = self.finish();
                    timer.done();
                    if let Err(e) = finished {
                        return self.fail(e);
                    }
                }
            }
        }
        let timer = elapsed.timer();
        let next = self.next_batch();
        timer.done();
        match next {
            Ok(Some(batch)) => Poll::Ready(Some(Ok(batch))),
            Ok(None) => {
                self.done = true;
                self.reservation.free();
                Poll::Ready(None)
            }
            Err(e) => self.fail(e),
        }
    }
}

impl Stream for RangeVectorStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let poll = this.poll_inner(cx);
        this.baseline.record_poll(poll)
    }
}

impl RecordBatchStream for RangeVectorStream {
    fn schema(&self) -> SchemaRef {
        range_vector_schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, UInt32Array};
    use datafusion_datasource::memory::MemorySourceConfig;
    use datafusion_execution::config::SessionConfig;
    use datafusion_execution::memory_pool::GreedyMemoryPool;
    use datafusion_execution::runtime_env::RuntimeEnvBuilder;
    use datafusion_physical_plan::empty::EmptyExec;
    use tovlog_logql::ast::{Expr, SampleExpr};

    use crate::query::exec::sample_schema;
    use crate::query::plan::datafusion_error;

    const S: i64 = 1_000_000_000;

    fn agg(q: &str) -> RangeAggregation {
        match tovlog_logql::parse(q) {
            Ok(Expr::Sample(SampleExpr::Range(a))) => a,
            other => panic!("not a range aggregation: {q}: {other:?}"),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Two series: key 0 `{app="a", pod="1"}` every 10 s from 5 s to 295 s with values
    /// 0, 1, 2, … (1 each when `unit`, as `PipelineExec` gives for counting); key 1 `{app="a", pod="2"}` (or `extra` labels) at 100..=130 s. Two
    /// interleaved batches, as a scan of two files would give.
    fn samples(
        interner: &Interner,
        extra: &[(&str, &str)],
        unit: bool,
    ) -> (Vec<RawSeries>, Vec<RecordBatch>) {
        let k0 = interner
            .intern(labels(&[("app", "a"), ("pod", "1")]))
            .unwrap();
        let mut second = labels(&[("app", "a"), ("pod", "2")]);
        second.extend(labels(extra));
        second.sort();
        let k1 = interner.intern(second.clone()).unwrap();
        let s0: Vec<(i64, f64)> = (0..30)
            .map(|i| ((5 + 10 * i) * S, if unit { 1.0 } else { i as f64 }))
            .collect();
        let s1: Vec<(i64, f64)> = (0..4).map(|i| ((100 + 10 * i) * S, 1.0)).collect();
        let (a, b) = s0.split_at(17);
        let first: Vec<_> = b
            .iter()
            .map(|&(t, v)| (k0, t, v))
            .chain(s1[2..].iter().map(|&(t, v)| (k1, t, v)))
            .collect();
        let second_batch: Vec<_> = a
            .iter()
            .map(|&(t, v)| (k0, t, v))
            .chain(s1[..2].iter().map(|&(t, v)| (k1, t, v)))
            .collect();
        let raw = vec![
            RawSeries {
                labels: labels(&[("app", "a"), ("pod", "1")]),
                samples: s0,
            },
            RawSeries {
                labels: second,
                samples: s1,
            },
        ];
        (raw, vec![sample_batch(&first), sample_batch(&second_batch)])
    }

    fn node(
        agg: &RangeAggregation,
        steps: Steps,
        bucketed: bool,
        input: Arc<dyn ExecutionPlan>,
        interner: Arc<Interner>,
        max_series: Option<usize>,
    ) -> RangeVectorExec {
        RangeVectorExec::try_new(
            input,
            RangeVectorSpec {
                agg: agg.clone(),
                hints: eval::leaf_hints(agg, None),
                steps,
                bucketing: if bucketed {
                    Some(Bucketing::of(agg, &steps).expect("bucketable"))
                } else {
                    None
                },
                minute_counts: Vec::new(),
                streams: Arc::new(StreamMap::default()),
                reduce: LabelReduce::Keep,
                max_series,
            },
            interner,
            Interner::new(),
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap()
    }

    /// Run the node and gather its output into series, as the engine does.
    async fn run(node: RangeVectorExec, ctx: Arc<TaskContext>) -> Result<Vec<SeriesVals>> {
        let node = Arc::new(node);
        let table = Arc::clone(node.labels());
        let batches = datafusion_physical_plan::collect(node, ctx).await?;
        let mut out: Vec<SeriesVals> = Vec::new();
        for b in &batches {
            let (ids, ks, vs) = (
                b.column(0).as_primitive::<UInt32Type>(),
                b.column(1).as_primitive::<UInt32Type>(),
                b.column(2).as_primitive::<Float64Type>(),
            );
            for i in 0..b.num_rows() {
                let id = ids.value(i) as usize;
                while out.len() <= id {
                    out.push(SeriesVals {
                        labels: table.sets()[out.len()].as_ref().clone(),
                        points: Vec::new(),
                    });
                }
                out[id].points.push((ks.value(i), vs.value(i)));
            }
        }
        Ok(out)
    }

    /// A task context whose memory pool holds `bytes`.
    fn pool_of(bytes: usize) -> Arc<TaskContext> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(bytes)))
            .build_arc()
            .unwrap();
        Arc::new(TaskContext::default().with_runtime(runtime))
    }

    fn small_batches() -> Arc<TaskContext> {
        Arc::new(
            TaskContext::default().with_session_config(SessionConfig::new().with_batch_size(4)),
        )
    }

    #[tokio::test]
    async fn windows_and_steps_match_the_evaluator() {
        let steps = Steps::range_aligned(60 * S, 300 * S, 60 * S);
        for (q, bucketed) in [
            (r#"count_over_time({app="a"}[1m])"#, false),
            (r#"count_over_time({app="a"}[1m])"#, true),
            (r#"rate({app="a"}[2m] offset 30s)"#, false),
            (r#"rate({app="a"}[2m])"#, true),
            (r#"max_over_time({app="a"} | unwrap x [1m])"#, false),
            (r#"avg_over_time({app="a"} | unwrap x [90s])"#, false),
        ] {
            let a = agg(q);
            let interner = Interner::new();
            let unit = q.starts_with("count") || q.starts_with("rate");
            let (raw, batches) = samples(&interner, &[], unit);
            let input =
                MemorySourceConfig::try_new_exec(&[batches], sample_schema(), None).unwrap();
            let n = node(&a, steps, bucketed, input, interner, None);
            let got = run(n, small_batches()).await.unwrap();
            let want =
                eval::range_vector(&a, &eval::leaf_hints(&a, None), raw, &steps, None).unwrap();
            assert_eq!(got, want, "{q} bucketed={bucketed}");
        }
        // By hand: every minute holds 6 samples of pod 1; pod 2's are at 100..=130 s.
        let a = agg(r#"count_over_time({app="a"}[1m])"#);
        let interner = Interner::new();
        let (_, batches) = samples(&interner, &[], true);
        let input = MemorySourceConfig::try_new_exec(&[batches], sample_schema(), None).unwrap();
        let got = run(
            node(&a, steps, true, input, interner, None),
            small_batches(),
        )
        .await
        .unwrap();
        assert_eq!(
            got[0].points,
            vec![(0, 6.0), (1, 6.0), (2, 6.0), (3, 6.0), (4, 6.0)]
        );
        assert_eq!(got[1].labels, labels(&[("app", "a"), ("pod", "2")]));
        assert_eq!(got[1].points, vec![(1, 3.0), (2, 1.0)]);
    }

    #[tokio::test]
    async fn absent_over_time_answers_an_empty_input() {
        let a = agg(r#"absent_over_time({app="a", pod=~".+"}[1m])"#);
        let steps = Steps::range_aligned(60 * S, 180 * S, 60 * S);
        let input = Arc::new(EmptyExec::new(sample_schema()));
        let got = run(
            node(&a, steps, false, input, Interner::new(), None),
            small_batches(),
        )
        .await
        .unwrap();
        assert_eq!(
            got,
            vec![SeriesVals {
                labels: labels(&[("app", "a")]),
                points: vec![(0, 1.0), (1, 1.0), (2, 1.0)],
            }]
        );
    }

    #[tokio::test]
    async fn limits_and_pipeline_errors_fail_the_node() {
        let steps = Steps::range_aligned(60 * S, 300 * S, 60 * S);
        let a = agg(r#"count_over_time({app="a"}[1m])"#);
        // Memory: 34 raw samples (16 bytes each) do not fit in 256 bytes.
        let ctx = pool_of(256);
        let interner = Interner::new();
        let (_, batches) = samples(&interner, &[], true);
        let input = MemorySourceConfig::try_new_exec(&[batches], sample_schema(), None).unwrap();
        let err = run(node(&a, steps, false, input, interner, None), ctx)
            .await
            .unwrap_err();
        assert!(
            matches!(datafusion_error(err), QueryError::TooLarge(_)),
            "memory limit"
        );
        // Series limit.
        let interner = Interner::new();
        let (_, batches) = samples(&interner, &[], true);
        let input = MemorySourceConfig::try_new_exec(&[batches], sample_schema(), None).unwrap();
        let err = run(
            node(&a, steps, true, input, interner, Some(1)),
            small_batches(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            datafusion_error(err),
            QueryError::BadRequest(max_series_message(1))
        );
        // A sample with a pipeline error Loki does not preserve, inside a window.
        let interner = Interner::new();
        let (_, batches) = samples(&interner, &[("__error__", "LabelFilterErr")], true);
        let input = MemorySourceConfig::try_new_exec(&[batches], sample_schema(), None).unwrap();
        let err = run(
            node(&a, steps, false, input, interner, None),
            small_batches(),
        )
        .await
        .unwrap_err();
        match datafusion_error(err) {
            QueryError::BadRequest(msg) => assert!(msg.contains("pipeline error"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    fn sample_batch(rows: &[(u32, i64, f64)]) -> RecordBatch {
        RecordBatch::try_new(
            sample_schema(),
            vec![
                Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    /// Buckets are kept per key only where it has samples: 2,000 series of one sample over
    /// 1,440 steps fit in a pool far smaller than one bucket array per series (46 MB).
    #[tokio::test]
    async fn many_sparse_series_fit_a_small_pool() {
        let steps = Steps::range_aligned(60 * S, 1440 * 60 * S, 60 * S);
        let a = agg(r#"count_over_time({app="a"}[1m])"#);
        let interner = Interner::new();
        let rows: Vec<(u32, i64, f64)> = (0..2000u32)
            .map(|i| {
                let key = interner
                    .intern(labels(&[("path", &format!("/p/{i}"))]))
                    .unwrap();
                (key, (30 + 60 * i64::from(i % 1000)) * S, 1.0)
            })
            .collect();
        let input =
            MemorySourceConfig::try_new_exec(&[vec![sample_batch(&rows)]], sample_schema(), None)
                .unwrap();
        let ctx = pool_of(4 << 20);
        let got = run(node(&a, steps, true, input, interner, None), ctx)
            .await
            .unwrap();
        assert_eq!(got.len(), 2000);
        // Sample i is at 30 s + (i mod 1000) minutes: in the window of step i mod 1000.
        for (i, s) in got.iter().enumerate() {
            assert_eq!(s.points, vec![((i % 1000) as u32, 1.0)], "series {i}");
        }
    }

    /// A key's samples arriving forwards, backwards and batch by batch give the
    /// evaluator's answer, whether the key stays sparse (a few samples over 300 buckets)
    /// or turns dense on the way (many).
    #[tokio::test]
    async fn buckets_in_any_arrival_order_match_the_evaluator() {
        let steps = Steps::range_aligned(60 * S, 300 * 60 * S, 60 * S);
        let a = agg(r#"bytes_over_time({app="a"}[2m])"#);
        for (rounds, every) in [(2, 997), (6, 71)] {
            let interner = Interner::new();
            let key = interner.intern(labels(&[("app", "a")])).unwrap();
            let mut samples: Vec<(i64, f64)> = Vec::new();
            for round in 0..rounds {
                for t in (1..300 * 60).step_by(every) {
                    let t = if round % 2 == 0 { t } else { 300 * 60 - t };
                    samples.push((t * S, f64::from(round) * 1000.0 + t as f64));
                }
            }
            let rows: Vec<(u32, i64, f64)> = samples.iter().map(|&(t, v)| (key, t, v)).collect();
            let batches: Vec<RecordBatch> = rows.chunks(5).map(sample_batch).collect();
            let input =
                MemorySourceConfig::try_new_exec(&[batches], sample_schema(), None).unwrap();
            let got = run(
                node(&a, steps, true, input, interner, None),
                small_batches(),
            )
            .await
            .unwrap();
            let mut sorted = samples.clone();
            sorted.sort_by_key(|s| s.0);
            let raw = vec![RawSeries {
                labels: labels(&[("app", "a")]),
                samples: sorted,
            }];
            let want =
                eval::range_vector(&a, &eval::leaf_hints(&a, None), raw, &steps, None).unwrap();
            assert_eq!(got, want, "{rounds} rounds, a sample every {every} s");
        }
    }

    /// A key turning dense asks the pool for its slots first: 11,001 buckets (176 KB) do
    /// not fit in 128 KiB, and the node fails with the memory error.
    #[tokio::test]
    async fn a_key_turning_dense_is_accounted_first() {
        let steps = Steps::range_aligned(60 * S, 11_000 * 60 * S, 60 * S);
        let a = agg(r#"count_over_time({app="a"}[1m])"#);
        let interner = Interner::new();
        let key = interner.intern(labels(&[("app", "a")])).unwrap();
        let rows: Vec<(u32, i64, f64)> = (0..4000).map(|m| (key, (30 + 60 * m) * S, 1.0)).collect();
        let input =
            MemorySourceConfig::try_new_exec(&[vec![sample_batch(&rows)]], sample_schema(), None)
                .unwrap();
        let ctx = pool_of(128 << 10);
        let err = run(node(&a, steps, true, input, interner, None), ctx)
            .await
            .unwrap_err();
        assert!(matches!(datafusion_error(err), QueryError::TooLarge(_)));
    }
}
