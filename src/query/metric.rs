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

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Float64Type, Int64Type, UInt32Type};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::physical_plan::execute_stream;
use futures::StreamExt;
use serde_json::Value;

use tovlog_logql::ast::{RangeAggregation, RangeOp, SampleExpr, VectorOp};
use tovlog_logql::eval::{self, EvalLimits, RangeInput, RawSeries, Steps};
use tovlog_logql::pipeline::{Pipeline, SampleExtractor};

use super::encode;
use super::exec::{Interner, LabelReduce, PipelineMode, SampleValue};
use super::plan::{build_scan, datafusion_error, QueryContext};
use super::{QueryError, QueryRequest};

/// Run a metric query.
pub(super) async fn run(
    qc: Arc<QueryContext>,
    expr: SampleExpr,
    req: &QueryRequest,
    started: Instant,
) -> Result<Value, QueryError> {
    let steps = if req.instant {
        Steps {
            start_ns: req.end_ns,
            end_ns: req.end_ns,
            step_ns: 0,
        }
    } else {
        Steps {
            start_ns: req.start_ns,
            end_ns: req.end_ns,
            step_ns: req.step_ns,
        }
    };
    let limits = EvalLimits {
        max_series: qc.limits.max_query_series,
    };
    let handle = tokio::runtime::Handle::current();
    let input_qc = Arc::clone(&qc);
    // The evaluator is synchronous and pulls its inputs; it runs on a blocking thread
    // that drives each storage read to completion on the runtime.
    let (result, failure) = tokio::task::spawn_blocking(move || {
        let hints = reduction_hints(&expr);
        let mut input = EngineInput {
            qc: input_qc,
            handle,
            hints,
            cache: Vec::new(),
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

/// Range aggregation leaves with the label reduction allowed for each (by address).
struct Hint {
    addr: usize,
    agg: RangeAggregation,
    reduce: LabelReduce,
}

/// Range functions whose value over merged series is the sum of the per-series values.
fn additive(op: RangeOp) -> bool {
    matches!(
        op,
        RangeOp::CountOverTime
            | RangeOp::Rate
            | RangeOp::BytesOverTime
            | RangeOp::BytesRate
            | RangeOp::SumOverTime
    )
}

fn grouping_reduce(g: &tovlog_logql::ast::Grouping) -> LabelReduce {
    if g.without {
        LabelReduce::Without(g.labels.clone())
    } else {
        LabelReduce::By(g.labels.clone())
    }
}

/// Walk the expression and decide the reduction of every range aggregation leaf.
fn reduction_hints(expr: &SampleExpr) -> Vec<Hint> {
    fn walk(e: &SampleExpr, parent: Option<LabelReduce>, out: &mut Vec<Hint>) {
        match e {
            SampleExpr::Range(r) => {
                let reduce = match (&r.grouping, parent) {
                    (Some(g), _) => grouping_reduce(g),
                    (None, Some(p)) if additive(r.op) => p,
                    _ => LabelReduce::Keep,
                };
                out.push(Hint {
                    addr: r as *const RangeAggregation as usize,
                    agg: r.clone(),
                    reduce,
                });
            }
            SampleExpr::Vector(v) => {
                let hint = if v.op == VectorOp::Sum {
                    Some(match &v.grouping {
                        Some(g) => grouping_reduce(g),
                        None => LabelReduce::By(Vec::new()),
                    })
                } else {
                    None
                };
                walk(&v.expr, hint, out);
            }
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

/// The evaluator's view of storage.
struct EngineInput {
    qc: Arc<QueryContext>,
    handle: tokio::runtime::Handle,
    hints: Vec<Hint>,
    cache: Vec<(RangeAggregation, Steps, LabelReduce, Vec<RawSeries>)>,
    /// The engine failure behind an error handed to the evaluator (kept to report it
    /// with its own kind: timeout, memory, internal).
    failure: Option<QueryError>,
}

impl EngineInput {
    /// The reduction for `agg`: by address when it is a node of the query, otherwise by
    /// structure when every equal leaf agrees, otherwise none.
    fn reduce_for(&self, agg: &RangeAggregation) -> LabelReduce {
        let addr = agg as *const RangeAggregation as usize;
        if let Some(h) = self.hints.iter().find(|h| h.addr == addr) {
            return h.reduce.clone();
        }
        let mut equal = self.hints.iter().filter(|h| &h.agg == agg);
        match equal.next() {
            Some(first) if equal.all(|h| h.reduce == first.reduce) => first.reduce.clone(),
            _ => LabelReduce::Keep,
        }
    }
}

impl RangeInput for EngineInput {
    fn input(
        &mut self,
        agg: &RangeAggregation,
        steps: &Steps,
    ) -> Result<Vec<RawSeries>, tovlog_logql::Error> {
        if let Some(f) = &self.failure {
            return Err(tovlog_logql::Error::Validate(f.to_string()));
        }
        let reduce = self.reduce_for(agg);
        if let Some((_, _, _, series)) = self
            .cache
            .iter()
            .find(|(a, s, r, _)| a == agg && s == steps && *r == reduce)
        {
            return Ok(series.clone());
        }
        let fetched = self
            .handle
            .block_on(fetch_range(&self.qc, agg, steps, reduce.clone()));
        match fetched {
            Ok(series) => {
                self.cache
                    .push((agg.clone(), steps.clone(), reduce, series.clone()));
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

/// Read the raw samples of one range aggregation leaf.
async fn fetch_range(
    qc: &QueryContext,
    agg: &RangeAggregation,
    steps: &Steps,
    reduce: LabelReduce,
) -> Result<Vec<RawSeries>, QueryError> {
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
    let pipeline = Arc::new(Pipeline::new(&range.log.pipeline).map_err(bad)?);
    let value = match (agg.op, &range.unwrap) {
        (RangeOp::BytesOverTime | RangeOp::BytesRate, _) => SampleValue::LineBytes,
        (_, Some(unwrap)) => SampleValue::Unwrap(Arc::new(SampleExtractor::new(unwrap).map_err(bad)?)),
        (_, None) => SampleValue::One,
    };
    let interner = Interner::new();
    let Some((plan, _streams)) = build_scan(
        qc,
        &range.log,
        pipeline,
        PipelineMode::Sample { value, reduce },
        Arc::clone(&interner),
        start_ns,
        end_ns,
    )
    .await?
    else {
        return Ok(Vec::new());
    };
    let mut stream = execute_stream(plan, qc.session.task_ctx()).map_err(datafusion_error)?;
    // Samples are held until evaluation: account for them in the query's memory pool.
    let reservation =
        MemoryConsumer::new("tovlog range samples").register(&qc.session.runtime_env().memory_pool);
    let mut per_key: Vec<Vec<(i64, f64)>> = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(datafusion_error)?;
        reservation
            .try_grow(batch.num_rows() * std::mem::size_of::<(i64, f64)>())
            .map_err(datafusion_error)?;
        let internal = || QueryError::Internal("bad sample batch".into());
        let keys = batch.column(0).as_primitive_opt::<UInt32Type>().ok_or_else(internal)?;
        let ts = batch.column(1).as_primitive_opt::<Int64Type>().ok_or_else(internal)?;
        let values = batch.column(2).as_primitive_opt::<Float64Type>().ok_or_else(internal)?;
        for ((k, t), v) in keys.values().iter().zip(ts.values().iter()).zip(values.values().iter()) {
            let k = *k as usize;
            if k >= per_key.len() {
                per_key.resize_with(k + 1, Vec::new);
            }
            per_key[k].push((*t, *v));
        }
    }
    let sets = interner.sets();
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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints_of(q: &str) -> Vec<LabelReduce> {
        let Ok(tovlog_logql::ast::Expr::Sample(e)) = tovlog_logql::parse(q) else {
            panic!("not a metric query: {q}");
        };
        reduction_hints(&e).into_iter().map(|h| h.reduce).collect()
    }

    #[test]
    fn sums_over_additive_functions_are_pushed_down() {
        assert_eq!(
            hints_of(r#"sum(count_over_time({a="b"}[5m]))"#),
            vec![LabelReduce::By(vec![])]
        );
        assert_eq!(
            hints_of(r#"sum by (host) (rate({a="b"} | json [5m]))"#),
            vec![LabelReduce::By(vec!["host".into()])]
        );
        assert_eq!(
            hints_of(r#"sum without (host) (bytes_over_time({a="b"}[5m]))"#),
            vec![LabelReduce::Without(vec!["host".into()])]
        );
    }

    #[test]
    fn non_additive_or_non_sum_parents_keep_labels() {
        assert_eq!(
            hints_of(r#"max by (host) (count_over_time({a="b"}[5m]))"#),
            vec![LabelReduce::Keep]
        );
        assert_eq!(
            hints_of(r#"sum(max_over_time({a="b"} | logfmt | unwrap x [5m]))"#),
            vec![LabelReduce::Keep]
        );
        assert_eq!(
            hints_of(r#"count_over_time({a="b"}[5m]) * 2"#),
            vec![LabelReduce::Keep]
        );
    }

    #[test]
    fn range_grouping_is_pushed_down() {
        assert_eq!(
            hints_of(r#"quantile_over_time(0.99, {a="b"} | json | unwrap d [5m]) by (host)"#),
            vec![LabelReduce::By(vec!["host".into()])]
        );
    }
}
