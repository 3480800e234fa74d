//! `/loki/api/v1/patterns` over stored data: the log patterns of the selected streams in
//! `[start, end)`, with their line counts per step.
//!
//! Loki keeps patterns in memory for the last hours only; tovlog mines them from the
//! stored lines of any range, in two reads of the selected streams:
//!
//! ```text
//!  1. learn:  lines ─► Drain miner per (stream, detected_level) ─► candidate patterns
//!             (every line up to TRAIN_ALL per miner, then one in TRAIN_STRIDE)
//!  2. count:  lines ─► which candidates' `|>` filters match (bit mask), per partition
//!             in parallel ─► lines per (mask, level, step bucket)
//!  3. choose: patterns whose filters never match the same line (`select_disjoint`),
//!             drop those under MIN_PATTERN_LINES, keep the MAX_PATTERNS largest
//! ```
//!
//! A reported count is by construction the number of lines the pattern's `|> "…"` filter
//! matches in the range, so the Drilldown patterns tab's filter shows exactly the lines
//! it counted; and no line counts for two patterns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, MapArray, RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{Int64Type, UInt64Type};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use futures::StreamExt;
use serde_json::{json, Value};

use tovlog_logql::ast::{Expr, LogExpr};
use tovlog_logql::patterns::{
    self as mining, tokenize, Drain, DrainConfig, LineFormat, PatternSet, Tokens, MAX_CANDIDATES,
};
use tovlog_logql::pipeline::Pipeline;
use tovlog_storage::schema::{LINE, METADATA, STREAM_ID, TS};

use super::exec::{LineFilterExec, Lines};
use super::plan::{build_scan, datafusion_error, QueryContext, ScanColumns, ScanSpec};
use super::{humanize, QueryEngine, QueryError};

/// Lines every miner learns from before it samples.
const TRAIN_ALL: u64 = 20_000;
/// Past [`TRAIN_ALL`], a miner learns from one line in this many.
const TRAIN_STRIDE: u64 = 16;
/// Patterns with fewer lines in the range are not reported (Loki's `minClusterSize`).
pub const MIN_PATTERN_LINES: u64 = 30;
/// Most patterns reported (Loki's `maxPatterns`).
pub const MAX_PATTERNS: usize = 300;
/// Samples are counted at this resolution before being summed per step, and the step is
/// at least this (Loki's `TimeResolution`, 10 s), in ms.
const SAMPLE_INTERVAL_MS: i64 = 10_000;
/// Loki's level values; a `detected_level` outside them counts as `unknown`.
const LEVELS: [&str; 8] = [
    "unknown", "debug", "info", "warn", "error", "fatal", "critical", "trace",
];
/// The structured-metadata key holding the level (set at ingest by `discover_log_levels`).
const LEVEL_KEY: &str = "detected_level";
/// Loki's answer to a query that is not a bare selector.
const NOT_A_SELECTOR: &str = "only label matchers are supported";

/// One patterns request, validated by the HTTP layer.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternsRequest {
    /// Tenant.
    pub tenant: String,
    /// A stream selector (no pipeline).
    pub query: String,
    /// Inclusive start, ns.
    pub start_ns: i64,
    /// Exclusive end, ns.
    pub end_ns: i64,
    /// Step of the samples, ns (raised to 10 s).
    pub step_ns: i64,
}

impl QueryEngine {
    /// Mine the patterns of `req`; returns Loki's body
    /// `{"status":"success","data":[{"pattern","level","samples":[[s, n], …]}, …]}`.
    pub async fn patterns(&self, req: PatternsRequest) -> Result<Value, QueryError> {
        let expr =
            tovlog_logql::parse(&req.query).map_err(|e| QueryError::BadRequest(e.to_string()))?;
        let log = match expr {
            Expr::Log(log) if log.pipeline.is_empty() => log,
            _ => return Err(QueryError::BadRequest(NOT_A_SELECTOR.to_owned())),
        };
        let cancelled = Arc::new(AtomicBool::new(false));
        let qc = QueryContext::new(
            Arc::clone(&self.storage),
            req.tenant.clone(),
            &self.limits,
            Arc::clone(&cancelled),
        )?;
        let timeout = self.limits().query_timeout;
        match tokio::time::timeout(timeout, run(&qc, &log, &req)).await {
            Ok(result) => result,
            Err(_) => {
                cancelled.store(true, Ordering::Relaxed);
                Err(QueryError::Timeout(format!(
                    "query timed out after {}: decrease the duration of the request or add more label matchers to the query",
                    humanize(timeout)
                )))
            }
        }
    }
}

/// Time buckets of the answer: Loki's 10 s samples summed per epoch-aligned step.
#[derive(Debug, Clone, Copy)]
struct Buckets {
    step_ms: i64,
    base_ms: i64,
}

impl Buckets {
    fn new(start_ns: i64, step_ns: i64) -> Buckets {
        let step_ms = (step_ns / 1_000_000).max(SAMPLE_INTERVAL_MS);
        Buckets {
            step_ms,
            base_ms: Self::truncate(start_ns.div_euclid(1_000_000), step_ms),
        }
    }

    fn truncate(ms: i64, step_ms: i64) -> i64 {
        let sample = ms - ms.rem_euclid(SAMPLE_INTERVAL_MS);
        sample - sample.rem_euclid(step_ms)
    }

    /// Index of the bucket of a line at `ts_ns`.
    fn index(&self, ts_ns: i64) -> u32 {
        let b = Self::truncate(ts_ns.div_euclid(1_000_000), self.step_ms);
        ((b - self.base_ms).max(0) / self.step_ms) as u32
    }

    /// Unix seconds of bucket `i`.
    fn seconds(&self, i: u32) -> i64 {
        (self.base_ms + i64::from(i) * self.step_ms).div_euclid(1000)
    }
}

async fn run(qc: &QueryContext, log: &LogExpr, req: &PatternsRequest) -> Result<Value, QueryError> {
    let empty = || json!({"status": "success", "data": []});
    let Some(learn_scan) = scan(qc, log, req).await? else {
        return Ok(empty());
    };
    let candidates = learn(qc, learn_scan).await?;
    if candidates.is_empty() {
        return Ok(empty());
    }
    let Some(count_scan) = scan(qc, log, req).await? else {
        return Ok(empty());
    };
    let buckets = Buckets::new(req.start_ns, req.step_ns);
    let set = Arc::new(PatternSet::new(&candidates));
    let counts = count(qc, count_scan, set, buckets, req.start_ns, req.end_ns).await?;
    let patterns: Vec<&str> = candidates.iter().map(String::as_str).collect();
    Ok(answer(&patterns, &counts, buckets))
}

/// The selected streams' rows in range as the storage reads them: partitioned, lines as
/// views into the decoded pages, with `metadata` when a `detected_level` can be there.
/// `None` when no stream matches.
async fn scan(
    qc: &QueryContext,
    log: &LogExpr,
    req: &PatternsRequest,
) -> Result<Option<Arc<dyn ExecutionPlan>>, QueryError> {
    let pipeline = Arc::new(Pipeline::new(&[]).map_err(|e| QueryError::Internal(e.to_string()))?);
    let built = build_scan(
        qc,
        ScanSpec {
            log,
            pipeline,
            mode: None,
            interner: super::exec::Interner::new(),
            columns: ScanColumns::All,
            start_ns: req.start_ns,
            end_ns: req.end_ns,
            minute_counts: None,
            metadata_names: Some(vec![LEVEL_KEY.to_owned()]),
        },
    )
    .await?;
    Ok(built.map(|(plan, _)| raw_scan(plan)))
}

/// Without a pipeline, the nodes `build_scan` puts over the scan only merge partitions and
/// copy view lines into plain strings: read the scan itself instead, partition by
/// partition, lines as views.
fn raw_scan(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    let mut node = plan;
    loop {
        let inner = if node.is::<CoalescePartitionsExec>() || node.is::<LineFilterExec>() {
            node.children().first().map(|c| Arc::clone(*c))
        } else {
            None
        };
        match inner {
            Some(child) => node = child,
            None => return node,
        }
    }
}

/// The columns of one scan batch this module reads.
struct Rows<'a> {
    stream_ids: &'a UInt64Array,
    ts: &'a datafusion::arrow::array::Int64Array,
    lines: Lines<'a>,
    metadata: Option<&'a MapArray>,
}

impl<'a> Rows<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Rows<'a>, QueryError> {
        let bad = |what: &str| {
            QueryError::Internal(format!(
                "scan column {what} is missing or has the wrong type"
            ))
        };
        let col = |name: &str| {
            batch
                .schema_ref()
                .index_of(name)
                .ok()
                .map(|i| batch.column(i))
        };
        Ok(Rows {
            stream_ids: col(STREAM_ID)
                .and_then(|c| c.as_primitive_opt::<UInt64Type>())
                .ok_or_else(|| bad(STREAM_ID))?,
            ts: col(TS)
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .ok_or_else(|| bad(TS))?,
            lines: col(LINE).and_then(Lines::of).ok_or_else(|| bad(LINE))?,
            metadata: col(METADATA).and_then(|c| c.as_map_opt()),
        })
    }

    /// Index in [`LEVELS`] of row `i`'s `detected_level` (0, `unknown`, without one).
    fn level(&self, i: usize) -> u8 {
        let Some(map) = self.metadata else { return 0 };
        if map.is_null(i) {
            return 0;
        }
        let offsets = map.value_offsets();
        let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
        let (Some(keys), Some(values)) = (Lines::of(map.keys()), Lines::of(map.values())) else {
            return 0;
        };
        for j in start..end {
            if keys.value(j) == LEVEL_KEY && values.is_valid(j) {
                let v = values.value(j);
                return LEVELS
                    .iter()
                    .position(|l| l.eq_ignore_ascii_case(v))
                    .map_or(0, |p| p as u8);
            }
        }
        0
    }
}

/// A miner of one (stream, level) and how many lines it saw.
struct Miner {
    drain: Drain,
    seen: u64,
}

/// Phase 1: learn the candidate patterns, largest clusters first (only valid `|>`
/// filters).
async fn learn(qc: &QueryContext, scan: Arc<dyn ExecutionPlan>) -> Result<Vec<String>, QueryError> {
    let plan: Arc<dyn ExecutionPlan> = if scan.output_partitioning().partition_count() > 1 {
        Arc::new(CoalescePartitionsExec::new(scan))
    } else {
        scan
    };
    let mut stream = plan
        .execute(0, qc.session.task_ctx())
        .map_err(datafusion_error)?;
    let mut formats: HashMap<u64, LineFormat> = HashMap::new();
    let mut miners: HashMap<(u64, u8), Miner> = HashMap::new();
    let mut tokens = Tokens::default();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(datafusion_error)?;
        if qc.cancelled.load(Ordering::Relaxed) {
            return Err(QueryError::Timeout("query timed out".to_owned()));
        }
        let rows = Rows::of(&batch)?;
        for i in 0..batch.num_rows() {
            if !rows.lines.is_valid(i) {
                continue;
            }
            let line = rows.lines.value(i);
            let sid = rows.stream_ids.value(i);
            let format = *formats
                .entry(sid)
                .or_insert_with(|| LineFormat::detect(line));
            let miner = miners.entry((sid, rows.level(i))).or_insert_with(|| Miner {
                drain: Drain::new(DrainConfig::default()),
                seen: 0,
            });
            miner.seen += 1;
            if miner.seen > TRAIN_ALL && !miner.seen.is_multiple_of(TRAIN_STRIDE) {
                continue;
            }
            if miner.drain.is_blocked() {
                continue;
            }
            if tokenize(format, line, &mut tokens) {
                miner.drain.train(line, &tokens);
            }
        }
    }
    // The same pattern from several streams or levels is one candidate.
    let mut sizes: HashMap<String, u64> = HashMap::new();
    for miner in miners.values() {
        for cluster in miner.drain.clusters() {
            let pattern = cluster.pattern();
            if !pattern.is_empty() {
                *sizes.entry(pattern).or_default() += cluster.size();
            }
        }
    }
    let mut by_size: Vec<(String, u64)> = sizes.into_iter().collect();
    by_size.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(by_size
        .into_iter()
        .filter_map(|(p, _)| mining::filter(&p).map(|_| p))
        .take(MAX_CANDIDATES)
        .collect())
}

/// Lines per (matching candidates, level, bucket).
type Counts = HashMap<(u128, u8, u32), u64, foldhash::fast::FixedState>;

/// Phase 2: count every line in `[start_ns, end_ns)` by the set of candidates matching it,
/// one task per scan partition.
async fn count(
    qc: &QueryContext,
    scan: Arc<dyn ExecutionPlan>,
    set: Arc<PatternSet>,
    buckets: Buckets,
    start_ns: i64,
    end_ns: i64,
) -> Result<Counts, QueryError> {
    let ctx: Arc<TaskContext> = qc.session.task_ctx();
    let mut tasks = Vec::new();
    for p in 0..scan.output_partitioning().partition_count() {
        let mut stream = scan
            .execute(p, Arc::clone(&ctx))
            .map_err(datafusion_error)?;
        let set = Arc::clone(&set);
        let cancelled = Arc::clone(&qc.cancelled);
        tasks.push(tokio::spawn(async move {
            let mut counts = Counts::default();
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(datafusion_error)?;
                if cancelled.load(Ordering::Relaxed) {
                    return Err(QueryError::Timeout("query timed out".to_owned()));
                }
                let rows = Rows::of(&batch)?;
                for i in 0..batch.num_rows() {
                    let ts = rows.ts.value(i);
                    if ts < start_ns || ts >= end_ns || !rows.lines.is_valid(i) {
                        continue;
                    }
                    let mut mask = 0u128;
                    set.matches(rows.lines.value(i), |j| mask |= 1u128 << j);
                    if mask != 0 {
                        *counts
                            .entry((mask, rows.level(i), buckets.index(ts)))
                            .or_default() += 1;
                    }
                }
            }
            Ok::<Counts, QueryError>(counts)
        }));
    }
    let mut total = Counts::default();
    for task in tasks {
        let part = task
            .await
            .map_err(|e| QueryError::Internal(format!("patterns count task failed: {e}")))??;
        if total.is_empty() {
            total = part;
            continue;
        }
        for (k, v) in part {
            *total.entry(k).or_default() += v;
        }
    }
    Ok(total)
}

/// Phase 3: the reported patterns and Loki's JSON body.
fn answer(patterns: &[&str], counts: &Counts, buckets: Buckets) -> Value {
    let mut per_mask: HashMap<u128, u64> = HashMap::new();
    for (&(mask, _, _), &n) in counts {
        *per_mask.entry(mask).or_default() += n;
    }
    let sets: Vec<(u128, u64)> = per_mask.into_iter().collect();
    let chosen = mining::select_disjoint(patterns.len(), &sets);
    // A line's mask holds at most one chosen pattern: its samples go to that one.
    let mut series: HashMap<(usize, u8), HashMap<u32, u64>> = HashMap::new();
    let mut totals = vec![0u64; patterns.len()];
    for (&(mask, level, bucket), &n) in counts {
        let hit = mask & chosen;
        if hit == 0 {
            continue;
        }
        let p = hit.trailing_zeros() as usize;
        if let Some(t) = totals.get_mut(p) {
            *t += n;
        }
        *series
            .entry((p, level))
            .or_default()
            .entry(bucket)
            .or_default() += n;
    }
    let mut reported: Vec<usize> = (0..patterns.len())
        .filter(|&p| totals[p] >= MIN_PATTERN_LINES)
        .collect();
    reported.sort_by(|&a, &b| totals[b].cmp(&totals[a]).then(patterns[a].cmp(patterns[b])));
    reported.truncate(MAX_PATTERNS);
    let mut data = Vec::new();
    for p in reported {
        for (level, name) in LEVELS.iter().enumerate() {
            let Some(samples) = series.get(&(p, level as u8)) else {
                continue;
            };
            let mut samples: Vec<(u32, u64)> = samples.iter().map(|(&b, &n)| (b, n)).collect();
            samples.sort_unstable();
            let samples: Vec<Value> = samples
                .into_iter()
                .map(|(b, n)| json!([buckets.seconds(b), n]))
                .collect();
            data.push(json!({"pattern": patterns[p], "level": name, "samples": samples}));
        }
    }
    json!({"status": "success", "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_epoch_aligned_steps_of_ten_second_samples() {
        // 1 m steps from 00:00:30: the first bucket starts at 00:00:00.
        let b = Buckets::new(30_000_000_000, 60_000_000_000);
        assert_eq!(b.step_ms, 60_000);
        assert_eq!(b.index(30_000_000_000), 0);
        assert_eq!(b.index(59_999_999_999), 0);
        assert_eq!(b.index(60_000_000_000), 1);
        assert_eq!(b.seconds(1), 60);
        // Steps under 10 s are raised to 10 s.
        let b = Buckets::new(0, 1_000_000_000);
        assert_eq!(b.step_ms, 10_000);
        assert_eq!(b.index(19_999_000_000), 1);
        // A 15 s step counts 10 s samples: 00:00:29 is in the 00:00:20 sample, bucket 15 s.
        let b = Buckets::new(0, 15_000_000_000);
        assert_eq!(b.seconds(b.index(29_000_000_000)), 15);
    }

    #[test]
    fn answer_reports_disjoint_patterns_with_their_levels() {
        let b = Buckets::new(0, 60_000_000_000);
        let patterns = ["<_> general <_>", "<_> general narrow <_>", "small <_>"];
        let mut counts = Counts::default();
        // 40 lines only the general pattern matches, 20 matched by both, 10 "small".
        counts.insert((0b001, 2, 0), 25);
        counts.insert((0b001, 4, 1), 15);
        counts.insert((0b011, 2, 1), 20);
        counts.insert((0b100, 2, 0), 10);
        let v = answer(&patterns, &counts, b);
        let data = v["data"].as_array().cloned().unwrap_or_default();
        assert_eq!(data.len(), 2, "{v}");
        assert_eq!(data[0]["pattern"], "<_> general <_>");
        assert_eq!(data[0]["level"], "info");
        assert_eq!(data[0]["samples"], json!([[0, 25], [60, 20]]));
        assert_eq!(data[1]["level"], "error");
        assert_eq!(data[1]["samples"], json!([[60, 15]]));
    }
}
