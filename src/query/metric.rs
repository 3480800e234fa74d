//! Metric queries: the engine side of `tovlog_logql::eval`.
//!
//! `eval::evaluate` owns Loki's math (range functions, vector aggregations, binary
//! operators, series limits); this module supplies its [`RangeInput`]: for each range
//! aggregation leaf it runs `scan ─► LineFilterExec ─► PipelineExec(sample mode)` over
//! `(start − offset − range, end − offset]` and groups the rows into sorted
//! [`RawSeries`] by interned label set.
//!
//! Grouping is pushed into the scan where the result cannot change: a range
//! aggregation's own `by`/`without`, and `sum by/without` directly over an additive
//! range function (`count_over_time`, `rate`, `bytes_*`, `sum_over_time`), so
//! `sum(count_over_time({…}[5m]))` produces one input series instead of one per stream
//! or per parsed label set. Error labels are always kept so the evaluator's pipeline
//! error rules see exactly what they would without the reduction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tovlog_storage::scan::MinuteCount;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Float64Type, Int64Type, UInt32Type};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::physical_plan::execute_stream;
use futures::StreamExt;
use serde_json::Value;

use tovlog_logql::ast::{RangeAggregation, RangeOp, SampleExpr, VectorAggregation};
use tovlog_logql::eval::{self, Bucketing, EvalLimits, LeafHints, RangeInput, RawSeries, Steps};
use tovlog_logql::pipeline::{metadata_sensitive_names, LabelHints, Pipeline, SampleExtractor};

use super::encode;
use super::exec::{reduce_labels, Interner, LabelReduce, PipelineMode, SampleValue};
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

/// The evaluator's view of storage.
struct EngineInput {
    qc: Arc<QueryContext>,
    handle: tokio::runtime::Handle,
    /// See [`series_guard`].
    series_guard: Option<usize>,
    leaves: Vec<Leaf>,
    /// Inputs of leaves that occur more than once in the query (`x / x`-like), so each is
    /// read once.
    cache: Vec<(RangeAggregation, Steps, LeafHints, Vec<RawSeries>)>,
    /// Pool accounting of the inputs handed to the evaluator, held until it finishes.
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
}

impl RangeInput for EngineInput {
    fn input(
        &mut self,
        agg: &RangeAggregation,
        steps: &Steps,
    ) -> Result<Vec<RawSeries>, tovlog_logql::Error> {
        let parent = self.parent_of(agg);
        let hints = eval::leaf_hints(agg, parent.as_ref());
        self.input_with_hints(agg, &hints, steps)
    }

    fn input_with_hints(
        &mut self,
        agg: &RangeAggregation,
        hints: &LeafHints,
        steps: &Steps,
    ) -> Result<Vec<RawSeries>, tovlog_logql::Error> {
        if let Some(f) = &self.failure {
            return Err(tovlog_logql::Error::Validate(f.to_string()));
        }
        if let Some((_, _, _, series)) = self
            .cache
            .iter()
            .find(|(a, s, h, _)| a == agg && s == steps && h == hints)
        {
            return Ok(series.clone());
        }
        let series = self.fetch(agg, hints, steps, None)?;
        if self.repeated(agg) {
            self.cache
                .push((agg.clone(), *steps, hints.clone(), series.clone()));
        }
        Ok(series)
    }

    fn input_bucketed(
        &mut self,
        agg: &RangeAggregation,
        hints: &LeafHints,
        steps: &Steps,
        bucketing: &Bucketing,
    ) -> Result<Option<Vec<RawSeries>>, tovlog_logql::Error> {
        if let Some(f) = &self.failure {
            return Err(tovlog_logql::Error::Validate(f.to_string()));
        }
        // Repeated leaves go through the raw-sample cache instead.
        if self.repeated(agg) {
            return Ok(None);
        }
        self.fetch(agg, hints, steps, Some(bucketing)).map(Some)
    }
}

impl EngineInput {
    /// Does `agg` occur more than once in the query?
    fn repeated(&self, agg: &RangeAggregation) -> bool {
        self.leaves.iter().filter(|l| &l.agg == agg).count() > 1
    }

    /// Read one leaf's input (raw or bucketed), keeping its pool accounting and the
    /// engine error behind a failure.
    fn fetch(
        &mut self,
        agg: &RangeAggregation,
        hints: &LeafHints,
        steps: &Steps,
        bucketing: Option<&Bucketing>,
    ) -> Result<Vec<RawSeries>, tovlog_logql::Error> {
        let parent = self.parent_of(agg);
        let label_hints = LabelHints::for_range_aggregation(agg, parent.as_ref());
        let fetched = self.handle.block_on(fetch_range(
            &self.qc,
            agg,
            steps,
            label_hints,
            reduce_of(hints),
            self.series_guard,
            bucketing,
        ));
        match fetched {
            Ok((series, reservation)) => {
                self.held.push(reservation);
                Ok(series)
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

/// Loki's text for too many series (same as the evaluator's).
fn max_series_message(limit: usize) -> String {
    format!(
        "maximum number of series ({limit}) reached for a single query; consider reducing query \
         cardinality by adding more specific stream selectors, reducing the time range, or \
         aggregating results with functions like sum(), count() or topk()"
    )
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

/// The entry of series key `k`, growing the table as keys appear.
fn slot<T>(table: &mut Vec<Vec<T>>, k: u32) -> &mut Vec<T> {
    let k = k as usize;
    if k >= table.len() {
        table.resize_with(k + 1, Vec::new);
    }
    &mut table[k]
}

/// The buckets of series key `k`, allocated (and accounted in the query's pool) on first
/// use.
fn bucket_row<'a>(
    table: &'a mut Vec<Vec<(f64, u32)>>,
    k: u32,
    n_buckets: usize,
    reservation: &MemoryReservation,
) -> Result<&'a mut Vec<(f64, u32)>, QueryError> {
    let buckets = slot(table, k);
    if buckets.is_empty() {
        reservation
            .try_grow(n_buckets * std::mem::size_of::<(f64, u32)>())
            .map_err(datafusion_error)?;
        buckets.resize(n_buckets, (0.0, 0));
    }
    Ok(buckets)
}

/// Add `n` samples summing to `value` to bucket `idx` (outside every window: ignored).
fn add_to_bucket(buckets: &mut [(f64, u32)], idx: i64, value: f64, n: u32) {
    if let Some(slot) = usize::try_from(idx).ok().and_then(|i| buckets.get_mut(i)) {
        slot.0 += value;
        slot.1 += n;
    }
}

/// Read the raw samples of one range aggregation leaf, with the pool reservation that
/// accounts for them. With `bucketing`, samples are summed per step bucket while reading
/// (see [`Bucketing`]) and each series holds one sample per non-empty bucket.
async fn fetch_range(
    qc: &QueryContext,
    agg: &RangeAggregation,
    steps: &Steps,
    label_hints: LabelHints,
    reduce: LabelReduce,
    max_series: Option<usize>,
    bucketing: Option<&Bucketing>,
) -> Result<(Vec<RawSeries>, MemoryReservation), QueryError> {
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
    let runtime = qc.session.runtime_env();
    let pool = &runtime.memory_pool;
    let interner =
        Interner::with_reservation(MemoryConsumer::new("tovlog series labels").register(pool));
    let columns = scan_columns(&pipeline, &value, &reduce);
    // Counting rows of whole minutes: files with precomputed minute counts need no read.
    let minute = tovlog_storage::textindex::MINUTE_NS;
    let counted = columns == ScanColumns::TimeOnly
        && bucketing.is_some_and(|b| b.step_ns % minute == 0 && b.base_ns % minute == 0);
    let mut minute_counts: Vec<MinuteCount> = Vec::new();
    let Some((plan, streams)) = build_scan(
        qc,
        ScanSpec {
            log: &range.log,
            pipeline,
            mode: Some(PipelineMode::Sample {
                value,
                reduce: reduce.clone(),
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
    .await?
    else {
        return Ok((
            Vec::new(),
            MemoryConsumer::new("tovlog range samples").register(pool),
        ));
    };
    let mut stream = execute_stream(plan, qc.session.task_ctx()).map_err(datafusion_error)?;
    // Samples are held until evaluation: account for them in the query's memory pool.
    let reservation = MemoryConsumer::new("tovlog range samples").register(pool);
    let mut per_key: Vec<Vec<(i64, f64)>> = Vec::new();
    // Bucketed: per key, (sum, count) for buckets 1 − range/step ..= steps − 1.
    let first_bucket = match bucketing {
        Some(b) => 1 - range.range_ns / b.step_ns,
        None => 0,
    };
    let n_buckets = bucketing.map_or(0, |b| {
        b.buckets + usize::try_from(-first_bucket).unwrap_or(0)
    });
    let mut per_key_buckets: Vec<Vec<(f64, u32)>> = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(datafusion_error)?;
        if let Some(max) = max_series {
            if interner.len() > max {
                return Err(QueryError::BadRequest(max_series_message(max)));
            }
        }
        if bucketing.is_none() {
            reservation
                .try_grow(batch.num_rows() * std::mem::size_of::<(i64, f64)>())
                .map_err(datafusion_error)?;
        }
        let internal = || QueryError::Internal("bad sample batch".into());
        let keys = batch
            .column(0)
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(internal)?;
        let ts = batch
            .column(1)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(internal)?;
        let values = batch
            .column(2)
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(internal)?;
        let rows = keys
            .values()
            .iter()
            .zip(ts.values().iter())
            .zip(values.values().iter());
        if let Some(b) = bucketing {
            for ((k, t), v) in rows {
                let buckets = bucket_row(&mut per_key_buckets, *k, n_buckets, &reservation)?;
                add_to_bucket(buckets, b.index(*t) - first_bucket, *v, 1);
            }
            continue;
        }
        for ((k, t), v) in rows {
            slot(&mut per_key, *k).push((*t, *v));
        }
    }
    if let Some(b) = bucketing {
        // Rows the scan did not read because their files' minute counts tell them.
        let mut keys: HashMap<u64, u32> = HashMap::new();
        for c in &minute_counts {
            let key = match keys.get(&c.stream) {
                Some(&k) => k,
                None => {
                    let labels = streams
                        .0
                        .get(&c.stream)
                        .map_or_else(Vec::new, |l| reduce_labels(l.as_ref().clone(), &reduce));
                    let k = interner.intern(labels).map_err(datafusion_error)?;
                    keys.insert(c.stream, k);
                    k
                }
            };
            let buckets = bucket_row(&mut per_key_buckets, key, n_buckets, &reservation)?;
            let idx = b.index(c.minute_end_ns) - first_bucket;
            add_to_bucket(buckets, idx, f64::from(c.rows), c.rows);
        }
        if let Some(max) = max_series {
            if interner.len() > max {
                return Err(QueryError::BadRequest(max_series_message(max)));
            }
        }
    }
    let sets = interner.sets();
    if let Some(b) = bucketing {
        let mut out = Vec::with_capacity(per_key_buckets.len());
        for (k, buckets) in per_key_buckets.into_iter().enumerate() {
            let samples: Vec<(i64, f64)> = buckets
                .iter()
                .enumerate()
                .filter(|(_, (_, n))| *n > 0)
                .map(|(i, (sum, _))| (b.end_of(i as i64 + first_bucket), *sum))
                .collect();
            if samples.is_empty() {
                continue;
            }
            let labels = sets.get(k).map(|l| l.as_ref().clone()).unwrap_or_default();
            out.push(RawSeries { labels, samples });
        }
        reservation.grow(interner.reserved_bytes());
        return Ok((out, reservation));
    }
    let mut out = Vec::with_capacity(per_key.len());
    for (k, mut samples) in per_key.into_iter().enumerate() {
        if samples.is_empty() {
            continue;
        }
        // Stable: entries with equal timestamps keep their storage order.
        samples.sort_by_key(|s| s.0);
        let labels = sets.get(k).map(|l| l.as_ref().clone()).unwrap_or_default();
        out.push(RawSeries { labels, samples });
    }
    // The label sets now live in the series: move their accounting over before the
    // interner (and its reservation) goes away.
    reservation.grow(interner.reserved_bytes());
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
