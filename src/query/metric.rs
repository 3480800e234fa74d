//! Metric queries: the engine side of `tovlog_logql::eval`.
//!
//! `eval::evaluate` owns Loki's math (vector aggregations, binary operators, series
//! limits) and pulls each range aggregation leaf through [`RangeInput`]. This module
//! answers with the leaf's range vector, computed by one DataFusion plan over
//! `(start − offset − range, end − offset]`:
//!
//! ```text
//! scan ─► LineFilterExec ─► PipelineExec(sample mode) ─► [CoalescePartitionsExec] ─► RangeVectorExec
//! ```
//!
//! `RangeVectorExec` holds the samples (or per-step buckets and minute counts) per interned
//! label set and applies the evaluator's own windowing (`eval::range_vector`): pipeline-error
//! rules, grouping and range function. Its `(series, step, value)` rows are gathered here
//! into the evaluator's series.
//!
//! Grouping is pushed into the scan where the result cannot change: a range
//! aggregation's own `by`/`without`, and `sum by/without` directly over an additive
//! range function (`count_over_time`, `rate`, `bytes_*`, `sum_over_time`), so
//! `sum(count_over_time({…}[5m]))` produces one input series instead of one per stream
//! or per parsed label set. Error labels are always kept so the evaluator's pipeline
//! error rules see exactly what they would without the reduction.

use std::sync::Arc;
use std::time::Instant;

use tovlog_storage::scan::MinuteCount;

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, UInt32Type};
use datafusion_execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion_physical_plan::empty::EmptyExec;
use datafusion_physical_plan::{execute_stream, ExecutionPlan};
use futures::StreamExt;
use serde_json::Value;

use tovlog_logql::ast::{RangeAggregation, RangeOp, SampleExpr, VectorAggregation, VectorOp};
use tovlog_logql::eval::{
    self, Bucketing, EvalLimits, FailureCut, LeafHints, RangeInput, RawSeries, SeriesVals, Steps,
};
use tovlog_logql::pipeline::{metadata_sensitive_names, LabelHints, Pipeline, SampleExtractor};

use super::encode;
use super::exec::{
    sample_schema, take_labels, Interner, LabelReduce, PipelineMode, RangeVectorExec,
    RangeVectorSpec, SampleValue, StreamMap, SERIES_ID_LABEL,
};
use super::plan::{build_scan, datafusion_error, QueryContext, ScanColumns, ScanSpec};
use super::{QueryError, QueryRequest};

/// Run a metric query.
pub(super) async fn run(
    qc: Arc<QueryContext>,
    expr: SampleExpr,
    req: &QueryRequest,
    started: Instant,
) -> Result<Value, QueryError> {
    // Range queries run on step-aligned bounds, as Loki's query frontend splits them.
    let steps = if req.instant {
        Steps::instant(req.end_ns)
    } else {
        Steps::range_aligned(req.start_ns, req.end_ns, req.step_ns)
    };
    let limits = EvalLimits {
        max_series: qc.limits.max_query_series,
    };
    let handle = tokio::runtime::Handle::current();
    let input_qc = Arc::clone(&qc);
    // The evaluator is synchronous and pulls its inputs; it runs on a blocking thread
    // that drives each storage read to completion on the runtime.
    let (result, failure) = tokio::task::spawn_blocking(move || {
        let series_guard = series_guard(&expr, &steps, limits.max_series);
        let mut input = EngineInput {
            qc: input_qc,
            handle,
            series_guard,
            leaves: leaves(&expr),
            cache: Vec::new(),
            held: Vec::new(),
            failure: None,
        };
        let result = eval::evaluate(&expr, &steps, &mut input, &limits);
        (result, input.failure)
    })
    .await
    .map_err(|e| QueryError::Internal(format!("metric evaluation failed: {e}")))?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    let value = result.map_err(|e| QueryError::BadRequest(e.to_string()))?;
    let samples: u64 = match &value {
        eval::Value::Vector(series) => series.iter().map(|s| s.points.len() as u64).sum(),
        eval::Value::Scalar(points) => points.len() as u64,
    };
    let (result_type, result) = encode::metric_result(&value, req.instant);
    let stats = qc.stats.snapshot(started.elapsed(), samples);
    // Loki sends no encoding flags on metric results, even when they were requested.
    Ok(encode::envelope(result_type, result, false, &stats))
}

/// A range aggregation leaf of the query with the vector aggregation directly around it
/// (Loki derives parser hints and grouping push-down from that parent).
struct Leaf {
    addr: usize,
    agg: RangeAggregation,
    parent: Option<VectorAggregation>,
}

/// Every range aggregation leaf of `expr` with its direct parent.
fn leaves(expr: &SampleExpr) -> Vec<Leaf> {
    fn walk(e: &SampleExpr, parent: Option<&VectorAggregation>, out: &mut Vec<Leaf>) {
        match e {
            SampleExpr::Range(r) => out.push(Leaf {
                addr: r as *const RangeAggregation as usize,
                agg: r.clone(),
                parent: parent.cloned(),
            }),
            SampleExpr::Vector(v) => walk(&v.expr, Some(v), out),
            SampleExpr::Binary(b) => {
                walk(&b.lhs, None, out);
                walk(&b.rhs, None, out);
            }
            SampleExpr::LabelReplace(l) => walk(&l.expr, None, out),
            SampleExpr::Literal(_) | SampleExpr::VectorLiteral(_) => {}
        }
    }
    let mut out = Vec::new();
    walk(expr, None, &mut out);
    out
}

/// The label reduction the evaluator's extractor grouping allows at the source.
fn reduce_of(hints: &LeafHints) -> LabelReduce {
    match &hints.grouping {
        Some(g) if g.without => LabelReduce::Without(g.labels.clone()),
        Some(g) => LabelReduce::By(g.labels.clone()),
        None => LabelReduce::Keep,
    }
}

/// The labels a leaf's series need to carry when only its parent reads them: `Some(names)`
/// when the parent keeps nothing but the labels `names` of each series (`avg by (route)`,
/// `max(…)`), and the leaf neither groups (the evaluator's extractor grouping reduces
/// labels then) nor is `absent_over_time`. Each series still stays apart by its whole
/// label set ([`LabelReduce::Carry`]).
fn carried_names(
    agg: &RangeAggregation,
    parent: Option<&VectorAggregation>,
) -> Option<Vec<String>> {
    let parent = parent?;
    let keeps_only_grouping = matches!(
        parent.op,
        VectorOp::Sum
            | VectorOp::Avg
            | VectorOp::Count
            | VectorOp::Min
            | VectorOp::Max
            | VectorOp::Stddev
            | VectorOp::Stdvar
    );
    if !keeps_only_grouping || agg.grouping.is_some() || agg.op == RangeOp::AbsentOverTime {
        return None;
    }
    match &parent.grouping {
        None => Some(Vec::new()),
        Some(g) if g.without => None,
        Some(g) if g.labels.iter().any(|l| l == SERIES_ID_LABEL) => None,
        Some(g) => Some(g.labels.clone()),
    }
}

/// The evaluator's view of storage.
struct EngineInput {
    qc: Arc<QueryContext>,
    handle: tokio::runtime::Handle,
    /// See [`series_guard`].
    series_guard: Option<usize>,
    leaves: Vec<Leaf>,
    /// Range vectors of leaves that occur more than once in the query (`x / x`-like), so
    /// each is read once.
    cache: Vec<(RangeAggregation, Steps, LeafHints, Vec<SeriesVals>)>,
    /// Pool accounting of the range vectors handed to the evaluator, held until it
    /// finishes.
    held: Vec<MemoryReservation>,
    /// The engine failure behind an error handed to the evaluator (kept to report it
    /// with its own kind: timeout, memory, internal).
    failure: Option<QueryError>,
}

impl EngineInput {
    /// The parent of `agg`: by address when it is a node of the query, otherwise by
    /// structure when every equal leaf agrees, otherwise none.
    fn parent_of(&self, agg: &RangeAggregation) -> Option<VectorAggregation> {
        let addr = agg as *const RangeAggregation as usize;
        if let Some(l) = self.leaves.iter().find(|l| l.addr == addr) {
            return l.parent.clone();
        }
        let mut equal = self.leaves.iter().filter(|l| &l.agg == agg);
        match equal.next() {
            Some(first) if equal.all(|l| l.parent == first.parent) => first.parent.clone(),
            _ => None,
        }
    }

    /// Does `agg` occur more than once in the query?
    fn repeated(&self, agg: &RangeAggregation) -> bool {
        self.leaves.iter().filter(|l| &l.agg == agg).count() > 1
    }
}

impl RangeInput for EngineInput {
    fn input(
        &mut self,
        _agg: &RangeAggregation,
        _steps: &Steps,
    ) -> Result<Vec<RawSeries>, tovlog_logql::Error> {
        // `range_vector` answers every leaf.
        Err(tovlog_logql::Error::Validate(
            "internal error: raw range input requested from the engine".into(),
        ))
    }

    fn range_vector(
        &mut self,
        agg: &RangeAggregation,
        hints: &LeafHints,
        steps: &Steps,
    ) -> Result<Option<Vec<SeriesVals>>, tovlog_logql::Error> {
        if let Some(f) = &self.failure {
            return Err(tovlog_logql::Error::Validate(f.to_string()));
        }
        if let Some((_, _, _, vector)) = self
            .cache
            .iter()
            .find(|(a, s, h, _)| a == agg && s == steps && h == hints)
        {
            return Ok(Some(vector.clone()));
        }
        let parent = self.parent_of(agg);
        let label_hints = LabelHints::for_range_aggregation(agg, parent.as_ref());
        // A repeated leaf's vector is shared by every occurrence, whatever their parents.
        let carry = match self.repeated(agg) {
            true => None,
            false => carried_names(agg, parent.as_ref()),
        };
        let evaluated = self.handle.block_on(range_vector(
            &self.qc,
            agg,
            hints,
            steps,
            label_hints,
            self.series_guard,
            carry,
        ));
        match evaluated {
            Ok((vector, reservation)) => {
                self.held.push(reservation);
                if self.repeated(agg) {
                    self.cache
                        .push((agg.clone(), *steps, hints.clone(), vector.clone()));
                }
                Ok(Some(vector))
            }
            Err(e) => {
                let err = tovlog_logql::Error::Validate(e.to_string());
                self.failure = Some(e);
                Err(err)
            }
        }
    }
}

/// When the query is a bare range aggregation whose every input series is certain to
/// produce an output series (no grouping, not `absent_over_time`, steps no wider than the
/// range so every sample falls in some window), the number of distinct input label sets
/// is the number of result series: reading can stop with Loki's series-limit error as
/// soon as it passes the limit, instead of holding millions of series first.
fn series_guard(expr: &SampleExpr, steps: &Steps, max_series: usize) -> Option<usize> {
    let SampleExpr::Range(agg) = expr else {
        return None;
    };
    let dense = steps.step_ns == 0 || steps.step_ns <= agg.range.range_ns;
    (max_series > 0 && agg.grouping.is_none() && agg.op != RangeOp::AbsentOverTime && dense)
        .then_some(max_series)
}

/// The storage columns a leaf needs. Without labels to keep (everything summed together)
/// no structured metadata is needed, and without any stage or line-derived value not
/// even the lines.
fn scan_columns(pipeline: &Pipeline, value: &SampleValue, reduce: &LabelReduce) -> ScanColumns {
    let summed_away = matches!(reduce, LabelReduce::By(names) if names.is_empty());
    if !summed_away || !pipeline.is_line_filter_only() || matches!(value, SampleValue::Unwrap(_)) {
        ScanColumns::All
    } else if pipeline.is_empty() && matches!(value, SampleValue::One) {
        ScanColumns::TimeOnly
    } else {
        ScanColumns::NoMetadata
    }
}

/// Plan one range aggregation leaf (see the module docs): `RangeVectorExec` over the
/// leaf's sample scan, or over nothing when no stream matches (`absent_over_time` still
/// has an answer then).
async fn plan_range_vector(
    qc: &QueryContext,
    agg: &RangeAggregation,
    hints: &LeafHints,
    steps: &Steps,
    label_hints: LabelHints,
    max_series: Option<usize>,
    carry: Option<Vec<String>>,
) -> Result<Arc<RangeVectorExec>, QueryError> {
    let range = &agg.range;
    // Windows are (t − offset − range, t − offset]; storage ranges are [start, end).
    let start_ns = steps
        .start_ns
        .saturating_sub(range.offset_ns)
        .saturating_sub(range.range_ns)
        .saturating_add(1);
    let end_ns = steps
        .end_ns
        .saturating_sub(range.offset_ns)
        .saturating_add(1);
    let bad = |e: tovlog_logql::Error| QueryError::BadRequest(e.to_string());
    let pipeline = Arc::new(Pipeline::with_hints(&range.log.pipeline, label_hints).map_err(bad)?);
    let value = match (agg.op, &range.unwrap) {
        (RangeOp::BytesOverTime | RangeOp::BytesRate, _) => SampleValue::LineBytes,
        (_, Some(unwrap)) => {
            SampleValue::Unwrap(Arc::new(SampleExtractor::new(unwrap).map_err(bad)?))
        }
        (_, None) => SampleValue::One,
    };
    let runtime = qc.task.runtime_env();
    let pool = &runtime.memory_pool;
    let interner =
        Interner::with_reservation(MemoryConsumer::new("tovlog series labels").register(pool));
    let reduce = match (reduce_of(hints), carry) {
        (LabelReduce::Keep, Some(names)) => LabelReduce::Carry(names),
        (reduce, _) => reduce,
    };
    let columns = scan_columns(&pipeline, &value, &reduce);
    // Additive functions over whole steps are summed per step bucket while reading.
    let bucketing = Bucketing::of(agg, steps);
    // Counting rows of whole minutes: files with precomputed minute counts need no read.
    let minute = tovlog_storage::textindex::MINUTE_NS;
    let counted = columns == ScanColumns::TimeOnly
        && bucketing.is_some_and(|b| b.step_ns % minute == 0 && b.base_ns % minute == 0);
    let mut minute_counts: Vec<MinuteCount> = Vec::new();
    let scanned = build_scan(
        qc,
        ScanSpec {
            log: &range.log,
            pipeline,
            mode: Some(PipelineMode::Sample {
                value,
                reduce: reduce.clone(),
                bucketing,
                failures: Some(FailureCut::new(agg, hints, steps)),
            }),
            interner: Arc::clone(&interner),
            columns,
            start_ns,
            end_ns,
            minute_counts: counted.then_some(&mut minute_counts),
            metadata_names: match &reduce {
                LabelReduce::By(names) => metadata_sensitive_names(agg, names),
                _ => None,
            },
        },
    )
    .await?;
    let (input, streams): (Arc<dyn ExecutionPlan>, Arc<StreamMap>) = match scanned {
        Some(scan) => scan,
        None => (
            Arc::new(EmptyExec::new(sample_schema())),
            Arc::new(StreamMap::default()),
        ),
    };
    let labels = Interner::with_reservation(
        MemoryConsumer::new("tovlog range vector labels").register(pool),
    );
    let node = RangeVectorExec::try_new(
        input,
        RangeVectorSpec {
            agg: agg.clone(),
            hints: hints.clone(),
            steps: *steps,
            bucketing,
            minute_counts,
            streams,
            reduce,
            max_series,
        },
        interner,
        labels,
        Arc::clone(&qc.cancelled),
    )?;
    Ok(Arc::new(node))
}

/// The range vector of one range aggregation leaf, with the pool reservation that
/// accounts for it while the evaluator holds it.
async fn range_vector(
    qc: &QueryContext,
    agg: &RangeAggregation,
    hints: &LeafHints,
    steps: &Steps,
    label_hints: LabelHints,
    max_series: Option<usize>,
    carry: Option<Vec<String>>,
) -> Result<(Vec<SeriesVals>, MemoryReservation), QueryError> {
    let node = plan_range_vector(qc, agg, hints, steps, label_hints, max_series, carry).await?;
    let label_table = Arc::clone(node.labels());
    let mut stream = execute_stream(node, Arc::clone(&qc.task)).map_err(datafusion_error)?;
    let runtime = qc.task.runtime_env();
    let reservation = MemoryConsumer::new("tovlog range vector").register(&runtime.memory_pool);
    // Points per output series id (each series' points arrive together, in step order).
    let mut per_id: Vec<Vec<(u32, f64)>> = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(datafusion_error)?;
        // The node accounted for these points until it emitted them.
        reservation.grow(batch.num_rows() * std::mem::size_of::<(u32, f64)>());
        let internal = || QueryError::Internal("bad range vector batch".into());
        let ids = batch
            .column(0)
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(internal)?;
        let ks = batch
            .column(1)
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(internal)?;
        let values = batch
            .column(2)
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(internal)?;
        for ((id, k), v) in ids
            .values()
            .iter()
            .zip(ks.values().iter())
            .zip(values.values().iter())
        {
            let id = *id as usize;
            if id >= per_id.len() {
                per_id.resize_with(id + 1, Vec::new);
            }
            per_id[id].push((*k, *v));
        }
    }
    drop(stream);
    let mut sets = label_table.take_sets().into_iter();
    let mut out = Vec::with_capacity(per_id.len());
    for points in per_id {
        let set = sets.next();
        if points.is_empty() {
            continue;
        }
        let labels = set.map(take_labels).unwrap_or_default();
        out.push(SeriesVals { labels, points });
    }
    // The label sets now live in the series: move their accounting over before the
    // node's label table (and its reservation) goes away.
    reservation.grow(label_table.reserved_bytes());
    Ok((out, reservation))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> SampleExpr {
        match tovlog_logql::parse(q) {
            Ok(tovlog_logql::ast::Expr::Sample(e)) => e,
            other => panic!("not a metric query: {q}: {other:?}"),
        }
    }

    #[test]
    fn scans_read_only_needed_columns() {
        let plain = Pipeline::new(&[]).unwrap();
        let filtered = Pipeline::new(&[tovlog_logql::ast::Stage::LineFilter(
            tovlog_logql::ast::LineFilter {
                op: tovlog_logql::ast::LineFilterOp::Contains,
                values: vec![tovlog_logql::ast::LineFilterValue::Str("x".into())],
            },
        )])
        .unwrap();
        let parsed = Pipeline::new(&[tovlog_logql::ast::Stage::Json(vec![])]).unwrap();
        let none = LabelReduce::By(vec![]);
        assert_eq!(
            scan_columns(&plain, &SampleValue::One, &none),
            ScanColumns::TimeOnly
        );
        assert_eq!(
            scan_columns(&plain, &SampleValue::LineBytes, &none),
            ScanColumns::NoMetadata
        );
        assert_eq!(
            scan_columns(&filtered, &SampleValue::One, &none),
            ScanColumns::NoMetadata
        );
        assert_eq!(
            scan_columns(&parsed, &SampleValue::One, &none),
            ScanColumns::All
        );
        assert_eq!(
            scan_columns(
                &plain,
                &SampleValue::One,
                &LabelReduce::By(vec!["host".into()])
            ),
            ScanColumns::All
        );
        assert_eq!(
            scan_columns(&plain, &SampleValue::One, &LabelReduce::Keep),
            ScanColumns::All
        );
    }

    #[test]
    fn series_guard_only_where_series_map_one_to_one() {
        let inst = Steps::instant(1_000);
        let min = 60_000_000_000;
        let range_steps = Steps::range_aligned(0, 10 * min, min);
        let wide_steps = Steps::range_aligned(0, 10 * min, 10 * min);
        let q = parse(r#"count_over_time({a="b"}[5m])"#);
        assert_eq!(series_guard(&q, &inst, 500), Some(500));
        assert_eq!(series_guard(&q, &range_steps, 500), Some(500));
        assert_eq!(series_guard(&q, &wide_steps, 500), None);
        assert_eq!(series_guard(&q, &inst, 0), None);
        let q = parse(r#"sum(count_over_time({a="b"}[5m]))"#);
        assert_eq!(series_guard(&q, &inst, 500), None);
        let q = parse(r#"absent_over_time({a="b"}[5m])"#);
        assert_eq!(series_guard(&q, &inst, 500), None);
        let q = parse(r#"max_over_time({a="b"} | unwrap x [5m]) by (h)"#);
        assert_eq!(series_guard(&q, &inst, 500), None);
    }

    #[test]
    fn leaves_know_their_parent() {
        let e =
            parse(r#"sum by (host) (count_over_time({a="b"}[5m])) / count_over_time({a="c"}[5m])"#);
        let l = leaves(&e);
        assert_eq!(l.len(), 2);
        assert_eq!(
            l[0].parent.as_ref().map(|p| p.op),
            Some(tovlog_logql::ast::VectorOp::Sum)
        );
        assert!(l[1].parent.is_none());
    }

    #[test]
    fn sum_grouping_becomes_a_source_reduction() {
        let e = parse(r#"sum by (host) (rate({a="b"} | json [5m]))"#);
        let l = leaves(&e);
        let h = eval::leaf_hints(&l[0].agg, l[0].parent.as_ref());
        assert_eq!(reduce_of(&h), LabelReduce::By(vec!["host".into()]));
        let e = parse(r#"max by (host) (count_over_time({a="b"}[5m]))"#);
        let l = leaves(&e);
        let h = eval::leaf_hints(&l[0].agg, l[0].parent.as_ref());
        assert_eq!(reduce_of(&h), LabelReduce::Keep);
        let e = parse(r#"sum(count_over_time({a="b"}[5m]))"#);
        let l = leaves(&e);
        let h = eval::leaf_hints(&l[0].agg, l[0].parent.as_ref());
        assert_eq!(reduce_of(&h), LabelReduce::By(vec![]));
    }
}
