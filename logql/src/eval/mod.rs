//! Evaluation of LogQL metric (sample) expressions with Loki's semantics.
//!
//! The engine reads storage, runs the log pipeline and hands this module every
//! range-aggregation leaf through [`RangeInput`]: either as raw samples, which [`evaluate`]
//! turns into a range vector itself, or already evaluated (the engine runs
//! [`range_vector`] inside its own execution plan and hands over the result). Everything
//! else lives here: sliding windows and range functions (`range.rs`, entry point
//! [`range_vector`]), vector aggregations (`vector.rs`), binary operators and vector
//! matching (`binary.rs`), `label_replace` and `vector()` (`funcs.rs`), label helpers and
//! Loki's error texts (`labels.rs`).
//!
//! Internally a vector is a list of series whose points are `(step index, value)`, sparse and
//! in step order; a step index `k` stands for `t_k = start + k·step`.
//!
//! # Pipeline errors (`__error__` in metric queries)
//! Loki fails a metric query when a sample reaching a range aggregation still carries
//! `__error__`, unless the error was "preserved". What reaches that check depends on how
//! Loki builds the sample extractor, which this module reproduces per leaf in [`LeafHints`]:
//! 1. The extractor's grouping is the leaf's own `by`/`without`, or, when the leaf has none and
//!    its direct parent is `sum` and the range function is one of `count_over_time rate
//!    bytes_over_time bytes_rate sum_over_time`, the parent's grouping (`sum(x)` counts as
//!    `by ()`).
//! 2. When that grouping is `by ()` (or the function is `absent_over_time`) and no stage needs a
//!    label (no label filter, no template field, no unwrap), Loki's parsers skip every line:
//!    parser errors (`JSONParserErr`, `LogfmtParserErr`) never happen. We drop them.
//! 3. Otherwise a parser error is preserved when `__error__` is among the labels the query
//!    needs (grouping `by (…, __error__)`, a filter on `__error__`), except when the grouping is
//!    `without` or absent (then Loki extracts everything and preserves nothing). Preserved
//!    samples keep their full label set (Loki does not apply the range grouping to them).
//! 4. Any other sample with `__error__` (including `LabelFilterErr`, `SampleExtractionErr`,
//!    `TemplateFormatErr`, which are never preserved) fails the query with Loki's
//!    "pipeline error: …" text, at the first step whose window contains it.
//!
//! Known gap: with hints, Loki's `json` parser stops as soon as every needed label is found, so
//! a line truncated after those keys does not error there; a full parse (ours) flags it. That
//! only matters for queries that fail anyway on other bad lines in the dataset.
//!
//! This reproduces the goldens: `count_over_time({…}|json[…])` fails on bad lines,
//! `sum(count_over_time({…}|json[…]))` does not, `sum by (username)(…|json…)` (136) fails,
//! `sum by (__error__)(…|json…)` (130) returns the error group, and filtered queries
//! (`| __error__=""`, `| action="DELETE"`) never see error samples (129, 131, 102).
//!
//! # Result encoding (for the engine)
//! - [`Value::Scalar`]: only for pure literal expressions (`1 + 2 * 3`). Loki answers an instant
//!   query with `resultType: "scalar"`, `result: [<t in ms, integer>, "<value>"]` (golden 178:
//!   `[1763604000000, "7"]`), and a range query with a `matrix` holding one series with empty
//!   labels and a point at every step (golden 153).
//! - [`Value::Vector`]: everything else, including `vector(n)` (goldens 167, 177). Instant query:
//!   `resultType: "vector"`, one entry per series with its single point. Range query:
//!   `resultType: "matrix"`. Series come sorted by labels, except instant queries containing
//!   `sort`/`sort_desc`, which come in value order (as Loki). Point timestamps are the exact step
//!   timestamps in ns; Loki prints them as seconds truncated to milliseconds.
//! - Range queries: Loki's query frontend aligns the steps before evaluation (start rounded
//!   down, end rounded up to a multiple of the step; goldens 125, 127, 190, g07). Build the
//!   steps with [`Steps::range_aligned`]. Instant queries are not aligned.

mod binary;
mod funcs;
mod labels;
mod range;
mod vector;

use std::collections::HashMap;

pub use labels::{max_series_message, KeyIndex};
pub use range::{range_vector, FailureCut};

use crate::ast::{
    Grouping, LabelFilterExpr, LabelFormatSrc, RangeAggregation, RangeOp, SampleExpr, Stage,
    VectorAggregation, VectorOp,
};
use crate::Error;

/// Loki's limit on `(end − start) / step`.
const MAX_POINTS_PER_SERIES: usize = 11_000;

/// A label set, sorted by name.
pub type Labels = Vec<(String, String)>;

/// The evaluation steps: `t_k = start_ns + k·step_ns` for every `t_k ≤ end_ns`.
/// An instant query has `start_ns == end_ns` and `step_ns == 0` (one step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steps {
    /// First step, ns.
    pub start_ns: i64,
    /// Last possible step, ns (inclusive).
    pub end_ns: i64,
    /// Step width, ns; 0 for instant queries.
    pub step_ns: i64,
}

impl Steps {
    /// Steps of an instant query at `ts_ns`.
    pub fn instant(ts_ns: i64) -> Steps {
        Steps {
            start_ns: ts_ns,
            end_ns: ts_ns,
            step_ns: 0,
        }
    }

    /// Steps of a metric range query as Loki's query frontend runs it: the start is rounded
    /// down and the end rounded up to a multiple of the step (`metricQuerySplitter`), so a
    /// range query can have a point after `end_ns`. `step_ns` must be positive.
    pub fn range_aligned(start_ns: i64, end_ns: i64, step_ns: i64) -> Steps {
        if step_ns <= 0 {
            return Steps {
                start_ns,
                end_ns,
                step_ns,
            };
        }
        let start = start_ns - start_ns.rem_euclid(step_ns);
        let rem = end_ns.rem_euclid(step_ns);
        let end = if rem == 0 {
            end_ns
        } else {
            end_ns.saturating_add(step_ns - rem)
        };
        Steps {
            start_ns: start,
            end_ns: end,
            step_ns,
        }
    }

    /// `true` for an instant query (a single step).
    pub fn is_instant(&self) -> bool {
        self.step_ns == 0
    }

    /// Number of steps.
    pub fn count(&self) -> usize {
        if self.step_ns <= 0 || self.end_ns < self.start_ns {
            return 1;
        }
        let n = (self.end_ns as i128 - self.start_ns as i128) / self.step_ns as i128 + 1;
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// Timestamp of step `k`, ns.
    pub fn at(&self, k: usize) -> i64 {
        self.start_ns + (k as i64) * self.step_ns
    }

    /// Index of the first step with `t_k ≥ ts_ns` (may be past the last step).
    pub(crate) fn first_at_or_after(&self, ts_ns: i64) -> usize {
        if ts_ns <= self.start_ns {
            return 0;
        }
        if self.step_ns <= 0 {
            return 1;
        }
        let diff = ts_ns as i128 - self.start_ns as i128;
        let step = self.step_ns as i128;
        let k = (diff + step - 1) / step;
        usize::try_from(k).unwrap_or(usize::MAX)
    }
}

/// Raw samples of one input series of a range aggregation, ts ascending (ties allowed).
/// `value` is 1.0 for count/rate/absent, the line's byte length for bytes_over_time/bytes_rate,
/// and the unwrapped value for unwrap functions.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSeries {
    /// Full post-pipeline label set (stream + structured metadata + parsed, minus the
    /// unwrapped label), including `__error__`/`__error_details__` when set.
    pub labels: Labels,
    /// `(timestamp ns, value)`, ascending by timestamp.
    pub samples: Vec<(i64, f64)>,
}

/// One result series: its points at step timestamps (ns), in step order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The series' labels.
    pub labels: Labels,
    /// `(step timestamp ns, value)`.
    pub points: Vec<(i64, f64)>,
}

/// The result of a metric expression. See the module docs for how to encode it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// One series per label set, points over steps.
    Vector(Vec<Series>),
    /// A pure literal expression: its value at every step.
    Scalar(Vec<(i64, f64)>),
}

/// Limits applied during evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalLimits {
    /// Maximum number of series in the result (`max_query_series`); 0 means unlimited.
    pub max_series: usize,
}

/// How Loki builds the sample extractor of one range-aggregation leaf (see module docs).
/// An engine may use `grouping` to reduce labels at the source and `skip_parsers` to avoid
/// parsing lines; evaluation is correct whether it does or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafHints {
    /// The extractor's grouping: the leaf's own, or the one pushed down from a parent `sum`.
    /// Applying it at range level gives the same final result.
    pub grouping: Option<Grouping>,
    /// Loki skips all parser stages for this leaf (no label is needed); parser errors vanish.
    pub skip_parsers: bool,
    /// Parser errors are kept as series instead of failing the query.
    pub preserve_parser_errors: bool,
}

/// The engine supplies each range aggregation leaf: already evaluated
/// ([`RangeInput::range_vector`]), or as raw input, for which it must read entries with
/// timestamps in `(steps.start_ns - agg.range.offset_ns - agg.range.range_ns,
/// steps.end_ns - agg.range.offset_ns]`.
pub trait RangeInput {
    /// The input series of `agg`, any number per label set, in any order.
    fn input(&mut self, agg: &RangeAggregation, steps: &Steps) -> Result<Vec<RawSeries>, Error>;

    /// Same as [`RangeInput::input`], with Loki's extraction hints for this leaf. The evaluator
    /// calls this one; override it to reduce labels at the source or skip parsing.
    fn input_with_hints(
        &mut self,
        agg: &RangeAggregation,
        _hints: &LeafHints,
        steps: &Steps,
    ) -> Result<Vec<RawSeries>, Error> {
        self.input(agg, steps)
    }

    /// The input already summed per bucket as [`Bucketing`] describes, or `None` to have
    /// the evaluator ask for raw samples instead (the default).
    fn input_bucketed(
        &mut self,
        _agg: &RangeAggregation,
        _hints: &LeafHints,
        _steps: &Steps,
        _bucketing: &Bucketing,
    ) -> Result<Option<Vec<RawSeries>>, Error> {
        Ok(None)
    }

    /// The leaf's range vector, already evaluated by the engine with [`range_vector`] (same
    /// `agg`, `hints` and `steps`), or `None` to have the evaluator ask for raw samples
    /// (bucketed or not) and evaluate them itself (the default). The evaluator asks this
    /// first.
    fn range_vector(
        &mut self,
        _agg: &RangeAggregation,
        _hints: &LeafHints,
        _steps: &Steps,
    ) -> Result<Option<Vec<SeriesVals>>, Error> {
        Ok(None)
    }
}

/// Pre-aggregation of a range aggregation's input into step-wide buckets.
///
/// When the range is a whole number of steps, each window `(t_k − offset − range,
/// t_k − offset]` is exactly the union of the buckets `(t_j − offset − step, t_j − offset]`
/// for the `range / step` steps `j` ending at `k`. For functions that only add up samples
/// (`count_over_time`, `rate`, `bytes_over_time`, `bytes_rate`), an engine can then sum
/// each bucket while reading and hand over one sample per non-empty bucket, at the bucket's
/// end, holding the bucket's sum: the same windows see the same totals, with no sample
/// list to hold or sort. The evaluator then applies [`Bucketing::op`], the summing
/// equivalent of the original function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucketing {
    /// End of bucket 0 (`steps.start_ns − offset`).
    pub base_ns: i64,
    /// Bucket width (the step).
    pub step_ns: i64,
    /// Number of buckets (steps).
    pub buckets: usize,
    /// The function to evaluate over the bucket sums.
    pub op: RangeOp,
}

impl Bucketing {
    /// How `agg` over `steps` can be bucketed, if it can. An instant query's one window
    /// is one bucket as wide as the range.
    pub fn of(agg: &RangeAggregation, steps: &Steps) -> Option<Bucketing> {
        let range = agg.range.range_ns;
        let step = if steps.is_instant() {
            range
        } else {
            steps.step_ns
        };
        if step <= 0 || range < step || range % step != 0 || agg.grouping.is_some() {
            return None;
        }
        let op = match (agg.op, &agg.range.unwrap) {
            (RangeOp::CountOverTime, None) => RangeOp::SumOverTime,
            (RangeOp::Rate, None) => RangeOp::BytesRate,
            (RangeOp::BytesOverTime, _) => RangeOp::BytesOverTime,
            (RangeOp::BytesRate, _) => RangeOp::BytesRate,
            _ => return None,
        };
        Some(Bucketing {
            base_ns: steps.start_ns.checked_sub(agg.range.offset_ns)?,
            step_ns: step,
            buckets: steps.count(),
            op,
        })
    }

    /// The bucket holding timestamp `ts_ns`, or `None` outside every window (buckets
    /// before step 0 exist only to complete its window: index them from
    /// `1 − range/step`, shifted to 0 by the caller).
    pub fn index(&self, ts_ns: i64) -> i64 {
        // Runs per sample: 64-bit division where the difference fits (always, in
        // practice); the 128-bit one was 1.8% of a `count_over_time` query's CPU.
        if let (Some(diff), true) = (ts_ns.checked_sub(self.base_ns), self.step_ns > 0) {
            return diff.div_euclid(self.step_ns) + i64::from(diff.rem_euclid(self.step_ns) != 0);
        }
        let diff = ts_ns as i128 - self.base_ns as i128;
        let step = self.step_ns as i128;
        // Ceiling division: bucket j holds (base + (j−1)·step, base + j·step].
        (diff.div_euclid(step) + i128::from(diff.rem_euclid(step) != 0)) as i64
    }

    /// The end timestamp of bucket `j`, where its summed sample goes.
    pub fn end_of(&self, j: i64) -> i64 {
        self.base_ns + j * self.step_ns
    }

    /// [`Self::end_of`], `None` where it overflows.
    pub fn checked_end_of(&self, j: i64) -> Option<i64> {
        j.checked_mul(self.step_ns)?.checked_add(self.base_ns)
    }
}

/// Evaluates a metric expression over `steps`.
pub fn evaluate(
    expr: &SampleExpr,
    steps: &Steps,
    input: &mut dyn RangeInput,
    limits: &EvalLimits,
) -> Result<Value, Error> {
    if steps.end_ns < steps.start_ns || steps.step_ns < 0 {
        return Err(Error::Validate(
            "end timestamp must not be before or equal to start time".to_string(),
        ));
    }
    if steps.step_ns == 0 && steps.start_ns != steps.end_ns {
        return Err(Error::Validate(
            "zero or negative query resolution step widths are not accepted. Try a positive integer"
                .to_string(),
        ));
    }
    let n = steps.count();
    // Loki's resolution limit: (end − start) / step > 11000 is rejected (it also keeps step
    // indices well inside u32).
    if n > MAX_POINTS_PER_SERIES + 1 {
        return Err(Error::Validate(
            "exceeded maximum resolution of 11,000 points per time series. Try increasing the value of the step parameter"
                .to_string(),
        ));
    }
    let mut ctx = Ctx { steps, n, input };
    match ctx.eval(expr, None)? {
        Operand::Scalar(v) => Ok(Value::Scalar((0..n).map(|k| (steps.at(k), v)).collect())),
        Operand::Vector(series) => {
            let mut series: Vec<SeriesVals> = series
                .into_iter()
                .filter(|s| !s.points.is_empty())
                .collect();
            if limits.max_series > 0 && series.len() > limits.max_series {
                return Err(labels::max_series_error(limits.max_series));
            }
            // Loki sorts by labels, except instant queries whose expression sorts by value.
            if !(steps.is_instant() && sorts_by_value(expr)) {
                series.sort_by(|a, b| a.labels.cmp(&b.labels));
            }
            Ok(Value::Vector(
                series
                    .into_iter()
                    .map(|s| Series {
                        points: s
                            .points
                            .into_iter()
                            .map(|(k, v)| (steps.at(k as usize), v))
                            .collect(),
                        labels: s.labels,
                    })
                    .collect(),
            ))
        }
    }
}

/// Loki's extraction hints for `agg`, whose direct parent in the expression is `parent`.
pub fn leaf_hints(agg: &RangeAggregation, parent: Option<&VectorAggregation>) -> LeafHints {
    let pushed_down = match parent {
        Some(p)
            if p.op == VectorOp::Sum
                && agg.grouping.is_none()
                && matches!(
                    agg.op,
                    RangeOp::CountOverTime
                        | RangeOp::Rate
                        | RangeOp::BytesOverTime
                        | RangeOp::BytesRate
                        | RangeOp::SumOverTime
                ) =>
        {
            Some(p.grouping.clone().unwrap_or(Grouping {
                without: false,
                labels: Vec::new(),
            }))
        }
        _ => None,
    };
    let grouping = agg.grouping.clone().or(pushed_down);
    let singleton = grouping
        .as_ref()
        .is_some_and(|g| !g.without && g.labels.is_empty());
    let no_labels = singleton || agg.op == RangeOp::AbsentOverTime;

    // The labels Loki's parser hints are built from: what the stages need, the grouping
    // labels and the unwrapped label.
    let mut needed = required_labels(&agg.range.log.pipeline);
    let mut without = grouping.as_ref().is_some_and(|g| g.without);
    let mut groups: Vec<String> = grouping
        .as_ref()
        .map(|g| g.labels.clone())
        .unwrap_or_default();
    if let Some(unwrap) = &agg.range.unwrap {
        for f in &unwrap.post_filters {
            filter_labels(f, &mut needed);
        }
        // Loki turns "no grouping" into `without (<unwrapped label>)`.
        if groups.is_empty() || without {
            without = true;
            groups.push(unwrap.label.clone());
        }
        needed.push(unwrap.label.clone());
    }
    needed.extend(groups.iter().cloned());
    let has_error_label = needed.iter().any(|l| l == labels::ERROR_LABEL);

    let (skip_parsers, preserve) = if no_labels {
        if needed.is_empty() {
            (true, false)
        } else {
            (false, has_error_label)
        }
    } else if without || groups.is_empty() {
        (false, false)
    } else {
        (false, has_error_label)
    };
    LeafHints {
        grouping,
        skip_parsers,
        preserve_parser_errors: preserve,
    }
}

/// Every range-aggregation leaf of `expr` with its hints, in evaluation order, so an engine can
/// plan its reads before calling [`evaluate`].
pub fn range_leaves(expr: &SampleExpr) -> Vec<(&RangeAggregation, LeafHints)> {
    fn walk<'a>(
        expr: &'a SampleExpr,
        parent: Option<&'a VectorAggregation>,
        out: &mut Vec<(&'a RangeAggregation, LeafHints)>,
    ) {
        match expr {
            SampleExpr::Range(agg) => out.push((agg, leaf_hints(agg, parent))),
            SampleExpr::Vector(va) => walk(&va.expr, Some(va), out),
            SampleExpr::Binary(b) => {
                walk(&b.lhs, None, out);
                walk(&b.rhs, None, out);
            }
            SampleExpr::LabelReplace(lr) => walk(&lr.expr, None, out),
            SampleExpr::Literal(_) | SampleExpr::VectorLiteral(_) => {}
        }
    }
    let mut out = Vec::new();
    walk(expr, None, &mut out);
    out
}

/// Label names the stages of a pipeline read (Loki's `RequiredLabelNames`).
fn required_labels(stages: &[Stage]) -> Vec<String> {
    let mut out = Vec::new();
    for stage in stages {
        match stage {
            Stage::LabelFilter(f) => filter_labels(f, &mut out),
            Stage::LineFormat(t) => template_fields(t, &mut out),
            Stage::LabelFormat(ops) => {
                for op in ops {
                    match &op.src {
                        LabelFormatSrc::Rename(src) => out.push(src.clone()),
                        LabelFormatSrc::Template(t) => template_fields(t, &mut out),
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn filter_labels(f: &LabelFilterExpr, out: &mut Vec<String>) {
    match f {
        LabelFilterExpr::And { lhs, rhs, .. } | LabelFilterExpr::Or(lhs, rhs) => {
            filter_labels(lhs, out);
            filter_labels(rhs, out);
        }
        LabelFilterExpr::Paren(inner) => filter_labels(inner, out),
        LabelFilterExpr::String { name, .. }
        | LabelFilterExpr::Number { name, .. }
        | LabelFilterExpr::Duration { name, .. }
        | LabelFilterExpr::Bytes { name, .. }
        | LabelFilterExpr::Ip { name, .. } => out.push(name.clone()),
    }
}

/// Field references (`.name`) inside the `{{ … }}` actions of a template. An approximation of
/// Loki's walk over the parsed template: it only decides whether labels are needed at all.
fn template_fields(template: &str, out: &mut Vec<String>) {
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after.find("}}").unwrap_or(after.len());
        let action = &after[..close];
        let bytes = action.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            if b != b'.' {
                continue;
            }
            let ident: String = action[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let prev_is_ident =
                i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
            if !ident.is_empty() && !prev_is_ident && !ident.as_bytes()[0].is_ascii_digit() {
                out.push(ident);
            }
        }
        rest = &after[close.min(after.len())..];
    }
}

/// `true` when the expression contains `sort`/`sort_desc` (Loki's `Sortable`).
fn sorts_by_value(expr: &SampleExpr) -> bool {
    match expr {
        SampleExpr::Vector(v) => {
            matches!(v.op, VectorOp::Sort | VectorOp::SortDesc) || sorts_by_value(&v.expr)
        }
        SampleExpr::Binary(b) => sorts_by_value(&b.lhs) || sorts_by_value(&b.rhs),
        SampleExpr::LabelReplace(l) => sorts_by_value(&l.expr),
        SampleExpr::Range(_) | SampleExpr::Literal(_) | SampleExpr::VectorLiteral(_) => false,
    }
}

/// A series during evaluation (and a range vector's series, see [`range_vector`]): labels
/// and sparse `(step index, value)` points in step order; step index `k` stands for
/// `steps.at(k)`.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesVals {
    /// The series' labels, sorted by name.
    pub labels: Labels,
    /// `(step index, value)`, ascending by step index, at most one point per step.
    pub points: Vec<(u32, f64)>,
}

/// An intermediate result.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand {
    Vector(Vec<SeriesVals>),
    Scalar(f64),
}

struct Ctx<'a> {
    steps: &'a Steps,
    n: usize,
    input: &'a mut dyn RangeInput,
}

impl Ctx<'_> {
    fn eval(
        &mut self,
        expr: &SampleExpr,
        parent: Option<&VectorAggregation>,
    ) -> Result<Operand, Error> {
        match expr {
            SampleExpr::Literal(v) => Ok(Operand::Scalar(*v)),
            SampleExpr::VectorLiteral(v) => Ok(Operand::Vector(vec![funcs::vector(*v, self.n)])),
            SampleExpr::Range(agg) => {
                let hints = leaf_hints(agg, parent);
                if let Some(evaluated) = self.input.range_vector(agg, &hints, self.steps)? {
                    return Ok(Operand::Vector(evaluated));
                }
                if let Some(b) = Bucketing::of(agg, self.steps) {
                    if let Some(raw) = self.input.input_bucketed(agg, &hints, self.steps, &b)? {
                        return range::range_vector(agg, &hints, raw, self.steps, Some(&b))
                            .map(Operand::Vector);
                    }
                }
                let raw = self.input.input_with_hints(agg, &hints, self.steps)?;
                range::range_vector(agg, &hints, raw, self.steps, None).map(Operand::Vector)
            }
            SampleExpr::Vector(va) => {
                vector::check_params(va)?;
                let inner = match self.eval(&va.expr, Some(va))? {
                    Operand::Vector(v) => v,
                    // Loki's grammar only allows vector expressions here.
                    Operand::Scalar(_) => {
                        return Err(Error::Validate(format!(
                            "parse error : unexpected literal in {} aggregation",
                            va.op.name()
                        )))
                    }
                };
                Ok(Operand::Vector(vector::aggregate(va, inner)))
            }
            SampleExpr::Binary(b) => {
                let lhs = self.eval(&b.lhs, None)?;
                let rhs = self.eval(&b.rhs, None)?;
                binary::eval_binary(b, lhs, rhs)
            }
            SampleExpr::LabelReplace(lr) => match self.eval(&lr.expr, None)? {
                Operand::Vector(v) => funcs::label_replace(lr, v).map(Operand::Vector),
                Operand::Scalar(_) => Err(Error::Validate(
                    "parse error : unexpected literal in label_replace".to_string(),
                )),
            },
        }
    }
}

/// Builds series from `(labels, point)` contributions, merging equal label sets in order of
/// first appearance. Points must arrive in step order per label set; a second point at the
/// same step for the same labels is dropped (Loki would emit a duplicate timestamp).
pub(crate) struct Assembler {
    index: HashMap<Labels, usize>,
    out: Vec<SeriesVals>,
}

impl Assembler {
    pub(crate) fn new() -> Assembler {
        Assembler {
            index: HashMap::new(),
            out: Vec::new(),
        }
    }

    /// Index of the output series for `labels`, created if needed. Callers that emit many
    /// points for one label set keep the index and use [`Assembler::push_at`].
    pub(crate) fn series_index(&mut self, labels: &Labels) -> usize {
        if let Some(&i) = self.index.get(labels) {
            return i;
        }
        self.out.push(SeriesVals {
            labels: labels.clone(),
            points: Vec::new(),
        });
        self.index.insert(labels.clone(), self.out.len() - 1);
        self.out.len() - 1
    }

    pub(crate) fn push(&mut self, labels: Labels, k: u32, v: f64) {
        let i = self.series_index(&labels);
        self.push_at(i, k, v);
    }

    /// Adds a point to the series at `i` (from [`Assembler::series_index`]).
    pub(crate) fn push_at(&mut self, i: usize, k: u32, v: f64) {
        let points = &mut self.out[i].points;
        match points.last() {
            Some(&(last, _)) if last >= k => {
                if last > k {
                    // Out of order: insert at its place unless the step is taken.
                    if let Err(pos) = points.binary_search_by_key(&k, |p| p.0) {
                        points.insert(pos, (k, v));
                    }
                }
            }
            _ => points.push((k, v)),
        }
    }

    /// Adds a whole series (its points are in step order).
    pub(crate) fn push_series(&mut self, s: SeriesVals) {
        if !self.index.contains_key(&s.labels) {
            self.index.insert(s.labels.clone(), self.out.len());
            self.out.push(s);
            return;
        }
        for (k, v) in s.points {
            self.push(s.labels.clone(), k, v);
        }
    }

    /// The series, in order of first appearance; series that received no point are dropped.
    pub(crate) fn finish(self) -> Vec<SeriesVals> {
        let mut out = self.out;
        out.retain(|s| !s.points.is_empty());
        out
    }
}

#[cfg(test)]
mod tests;
