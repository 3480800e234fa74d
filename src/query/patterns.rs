//! `/loki/api/v1/patterns` over stored data: the log patterns of the selected streams in
//! `[start, end)`, with their line counts per step.
//!
//! Loki keeps patterns in memory for the last hours only; tovlog mines them from the
//! stored lines of any range. The rows are read part by part (the head's, then each
//! chunk file's), and what a chunk file gives is kept ([`PatternsCache`]): files never
//! change, so a repeated request reads only the head and the files it has not seen.
//!
//! ```text
//!  1. learn:  part ─► Drain miner per (stream, detected_level) ─► patterns with sizes
//!             (every line up to TRAIN_ALL per miner, then one in TRAIN_STRIDE)
//!             all parts ─► the largest MAX_CANDIDATES patterns: the candidates
//!  2. count:  part ─► which candidates' `|>` filters match each line (bit mask)
//!             ─► lines per (mask, level, 10 s sample)          (parts in parallel)
//!  3. choose: patterns whose filters never match the same line (`select_disjoint`),
//!             drop those under MIN_PATTERN_LINES, keep the MAX_PATTERNS largest;
//!             samples summed per step
//! ```
//!
//! A reported count is by construction the number of lines the pattern's `|> "…"` filter
//! matches in the range, so the Drilldown patterns tab's filter shows exactly the lines
//! it counted; and no line counts for two patterns.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tovlog_storage::ScanRequest;

use arrow::array::{Array, AsArray, MapArray, RecordBatch, UInt64Array};
use arrow::datatypes::{Int64Type, UInt64Type};
use datafusion_execution::TaskContext;
use datafusion_physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use futures::StreamExt;
use serde_json::{json, Value};

use tovlog_logql::ast::{Expr, LogExpr};
use tovlog_logql::patterns::{
    self as mining, tokenize, Drain, DrainConfig, LineFormat, PatternSet, Tokens, MAX_CANDIDATES,
};
use tovlog_storage::schema::{LINE, METADATA, STREAM_ID, TS};

use super::exec::Lines;
use super::plan::{datafusion_error, QueryContext};
use super::{QueryEngine, QueryError};

/// Lines every miner learns from before it samples.
const TRAIN_ALL: u64 = 4_000;
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
        let patterns = &self.patterns;
        let (body, warnings) = self
            .with_timeout(&req.tenant, |qc| {
                let (log, req) = (&log, &req);
                async move { run(&qc, log, req, patterns).await }
            })
            .await?;
        Ok(super::with_warnings(body, warnings))
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
    #[cfg(test)]
    fn index(&self, ts_ns: i64) -> u32 {
        self.index_ms(ts_ns.div_euclid(1_000_000))
    }

    /// Index of the bucket of the 10 s sample starting at `sample_ms`.
    fn index_ms(&self, sample_ms: i64) -> u32 {
        let b = Self::truncate(sample_ms, self.step_ms);
        ((b - self.base_ms).max(0) / self.step_ms) as u32
    }

    /// Unix seconds of bucket `i`.
    fn seconds(&self, i: u32) -> i64 {
        (self.base_ms + i64::from(i) * self.step_ms).div_euclid(1000)
    }
}

async fn run(
    qc: &QueryContext,
    log: &LogExpr,
    req: &PatternsRequest,
    cache: &PatternsCache,
) -> Result<Value, QueryError> {
    let empty = || json!({"status": "success", "data": []});
    let units = units(qc, log, req).await?;
    if units.is_empty() {
        return Ok(empty());
    }
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
    let ctx = Arc::clone(&qc.task);

    // 1. learn, per part (chunk files from the cache when they have been learnt before).
    let permits = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = Vec::with_capacity(units.len());
    for u in &units {
        let hit = u.key.as_ref().and_then(|k| cache.learnt(k));
        let (plan, ctx, cancelled) = (
            Arc::clone(&u.learn),
            Arc::clone(&ctx),
            Arc::clone(&qc.cancelled),
        );
        let permits = Arc::clone(&permits);
        tasks.push(match hit {
            Some(hit) => Job::Done(hit),
            None => Job::Running(tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                learn(plan, ctx, cancelled).await.map(Arc::new)
            })),
        });
    }
    let mut learnt: Vec<Arc<Learnt>> = Vec::with_capacity(tasks.len());
    for t in tasks {
        learnt.push(t.result("learn").await?);
    }
    for (u, l) in units.iter().zip(&learnt) {
        if let Some(k) = &u.key {
            cache.keep_learnt(k.clone(), Arc::clone(l));
        }
    }
    let candidates = candidates(&learnt);
    if candidates.is_empty() {
        return Ok(empty());
    }
    let fingerprint = {
        let mut h = std::hash::DefaultHasher::new();
        candidates.hash(&mut h);
        h.finish()
    };

    // 2. count, per part (cached per chunk file and candidate set).
    let set = Arc::new(PatternSet::new(&candidates));
    let range = (req.start_ns, req.end_ns);
    let mut tasks = Vec::with_capacity(units.len());
    for u in &units {
        let key = u.key.clone().map(|k| (k, fingerprint));
        let hit = key.as_ref().and_then(|k| cache.counted(k));
        let (plan, ctx, cancelled) = (
            Arc::clone(&u.count),
            Arc::clone(&ctx),
            Arc::clone(&qc.cancelled),
        );
        let (set, permits) = (Arc::clone(&set), Arc::clone(&permits));
        tasks.push((
            key,
            match hit {
                Some(hit) => Job::Done(hit),
                None => Job::Running(tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    count(plan, ctx, cancelled, set, range).await.map(Arc::new)
                })),
            },
        ));
    }
    let mut counted: Vec<Arc<Samples>> = Vec::with_capacity(tasks.len());
    for (key, t) in tasks {
        let ran = matches!(t, Job::Running(_));
        let samples = t.result("count").await?;
        if let (Some(key), true) = (key, ran) {
            cache.keep_counted(key, Arc::clone(&samples));
        }
        counted.push(samples);
    }

    // 3. choose and answer.
    let buckets = Buckets::new(req.start_ns, req.step_ns);
    let mut counts = Counts::default();
    for samples in &counted {
        for &((mask, level, sample_ms), n) in samples.iter() {
            *counts
                .entry((mask, level, buckets.index_ms(sample_ms)))
                .or_default() += n;
        }
    }
    let patterns: Vec<&str> = candidates.iter().map(String::as_str).collect();
    Ok(answer(&patterns, &counts, buckets))
}

/// A part's result: from the cache, or being computed.
enum Job<T> {
    Done(Arc<T>),
    Running(tokio::task::JoinHandle<Result<Arc<T>, QueryError>>),
}

impl<T> Job<T> {
    async fn result(self, what: &str) -> Result<Arc<T>, QueryError> {
        match self {
            Job::Done(t) => Ok(t),
            Job::Running(task) => task
                .await
                .map_err(|e| QueryError::Internal(format!("patterns {what} task failed: {e}")))?,
        }
    }
}

/// Which rows of a chunk file a request read: a part's result depends on nothing else
/// (chunk files never change; a new file has a new path).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct UnitKey {
    path: String,
    /// Row ranges of the selected streams.
    rows: Vec<(u64, u64)>,
    /// The request's range, when the rows hold some outside it (they are filtered).
    range: Option<(i64, i64)>,
    /// Whether `detected_level` was read.
    levels: bool,
    /// What the scan leaves out of the file (expired or deleted rows), if anything.
    erase: Option<u64>,
}

/// One part of the selected rows: the head's, or one chunk file's (with its cache key).
/// A scan plan is executed once, so each phase has its own.
struct Unit {
    key: Option<UnitKey>,
    learn: Arc<dyn ExecutionPlan>,
    count: Arc<dyn ExecutionPlan>,
}

/// The parts of the selected streams' rows in range, each a scan of its own: lines as
/// views into the decoded pages, with `metadata` when a `detected_level` can be there.
async fn units(
    qc: &QueryContext,
    log: &LogExpr,
    req: &PatternsRequest,
) -> Result<Vec<Unit>, QueryError> {
    if req.start_ns >= req.end_ns {
        return Ok(Vec::new());
    }
    let streams = qc.resolve_streams(&log.selector, req.start_ns, req.end_ns)?;
    if streams.0.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<u64> = streams.0.keys().copied().collect();
    ids.sort_unstable();
    let head_levels = qc
        .storage
        .metadata_keys(&qc.tenant, &ids, req.start_ns, req.end_ns)
        .is_none_or(|keys| keys.contains(LEVEL_KEY));
    let table = qc
        .storage
        .logs_table(ScanRequest {
            tenant: qc.tenant.clone(),
            streams: ids,
            start_ns: req.start_ns,
            end_ns: req.end_ns,
        })
        .map_err(super::plan::storage_error)?
        .with_line_views()
        .map_err(datafusion_error)?;
    qc.note_table(&table);
    let (head, files) = table.split_by_file();
    let partitions = qc.partitions();
    let mut units = Vec::with_capacity(files.len() + 1);
    let parts = head
        .map(|h| (None, h, head_levels))
        .into_iter()
        .chain(files.into_iter().map(|(f, t)| {
            let levels = f
                .metadata_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k == LEVEL_KEY));
            let key = UnitKey {
                rows: f.stream_rows.iter().map(|r| (r.start, r.end)).collect(),
                range: (!f.rows_exact).then_some((req.start_ns, req.end_ns)),
                erase: f.erase_key(),
                path: f.path,
                levels,
            };
            (Some(key), t, levels)
        }));
    for (key, table, levels) in parts {
        let schema = table.schema();
        let names: &[&str] = if levels {
            &[STREAM_ID, TS, LINE, METADATA]
        } else {
            &[STREAM_ID, TS, LINE]
        };
        let projection = names
            .iter()
            .map(|n| schema.index_of(n))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|e| QueryError::Internal(format!("logs table schema: {e}")))?;
        let learn = table
            .scan(partitions, Some(&projection))
            .await
            .map_err(datafusion_error)?;
        let count = table
            .scan(partitions, Some(&projection))
            .await
            .map_err(datafusion_error)?;
        units.push(Unit { key, learn, count });
    }
    Ok(units)
}

/// The columns of one scan batch this module reads.
struct Rows<'a> {
    stream_ids: &'a UInt64Array,
    ts: &'a arrow::array::Int64Array,
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

/// Every batch of every partition of `plan`, one partition after the other.
async fn for_each_batch(
    plan: &Arc<dyn ExecutionPlan>,
    ctx: &Arc<TaskContext>,
    cancelled: &AtomicBool,
    mut f: impl FnMut(&RecordBatch) -> Result<(), QueryError>,
) -> Result<(), QueryError> {
    for p in 0..plan.output_partitioning().partition_count() {
        let mut stream = plan.execute(p, Arc::clone(ctx)).map_err(datafusion_error)?;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(datafusion_error)?;
            if cancelled.load(Ordering::Relaxed) {
                return Err(QueryError::Timeout("query timed out".to_owned()));
            }
            f(&batch)?;
        }
    }
    Ok(())
}

/// A miner of one (stream, level) and how many lines it saw.
struct Miner {
    drain: Drain,
    seen: u64,
}

/// What one part taught: its clusters' patterns with their sizes.
type Learnt = Vec<(String, u64)>;

/// Phase 1, for one part: the patterns of its clusters, one Drain miner per (stream,
/// level).
async fn learn(
    plan: Arc<dyn ExecutionPlan>,
    ctx: Arc<TaskContext>,
    cancelled: Arc<AtomicBool>,
) -> Result<Learnt, QueryError> {
    let mut formats: HashMap<u64, LineFormat> = HashMap::new();
    let mut miners: HashMap<(u64, u8), Miner> = HashMap::new();
    let mut tokens = Tokens::default();
    for_each_batch(&plan, &ctx, &cancelled, |batch| {
        let rows = Rows::of(batch)?;
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
        Ok(())
    })
    .await?;
    let mut sizes: HashMap<String, u64> = HashMap::new();
    for miner in miners.values() {
        for cluster in miner.drain.clusters() {
            let pattern = cluster.pattern();
            if !pattern.is_empty() {
                *sizes.entry(pattern).or_default() += cluster.size();
            }
        }
    }
    let mut learnt: Learnt = sizes.into_iter().collect();
    learnt.sort_unstable();
    Ok(learnt)
}

/// The candidate patterns of all parts, largest clusters first (the same pattern from
/// several parts, streams or levels is one candidate; only valid `|>` filters).
fn candidates(learnt: &[Arc<Learnt>]) -> Vec<String> {
    let mut sizes: HashMap<&str, u64> = HashMap::new();
    for part in learnt {
        for (p, n) in part.iter() {
            *sizes.entry(p.as_str()).or_default() += n;
        }
    }
    let mut by_size: Vec<(&str, u64)> = sizes.into_iter().collect();
    by_size.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    by_size
        .into_iter()
        .filter(|(p, _)| mining::filter(p).is_some())
        .take(MAX_CANDIDATES)
        .map(|(p, _)| p.to_owned())
        .collect()
}

/// Lines per (matching candidates, level, bucket).
type Counts = HashMap<(u128, u8, u32), u64, foldhash::fast::FixedState>;

/// Lines of one part per (matching candidates, level, 10 s sample start in ms).
type Samples = Vec<((u128, u8, i64), u64)>;

/// Phase 2, for one part: its lines in `[start, end)` by the set of candidates matching
/// each, per 10 s sample.
async fn count(
    plan: Arc<dyn ExecutionPlan>,
    ctx: Arc<TaskContext>,
    cancelled: Arc<AtomicBool>,
    set: Arc<PatternSet>,
    (start_ns, end_ns): (i64, i64),
) -> Result<Samples, QueryError> {
    let mut counts: HashMap<(u128, u8, i64), u64, foldhash::fast::FixedState> = HashMap::default();
    for_each_batch(&plan, &ctx, &cancelled, |batch| {
        let rows = Rows::of(batch)?;
        for i in 0..batch.num_rows() {
            let ts = rows.ts.value(i);
            if ts < start_ns || ts >= end_ns || !rows.lines.is_valid(i) {
                continue;
            }
            let mut mask = 0u128;
            set.matches(rows.lines.value(i), |j| mask |= 1u128 << j);
            if mask != 0 {
                let ms = ts.div_euclid(1_000_000);
                let sample = ms - ms.rem_euclid(SAMPLE_INTERVAL_MS);
                *counts.entry((mask, rows.level(i), sample)).or_default() += 1;
            }
        }
        Ok(())
    })
    .await?;
    Ok(counts.into_iter().collect())
}

/// Results per chunk file, so a repeated request (Drilldown's patterns tab refreshing, or
/// one a little later) reads only the head and files it has not seen: what each file
/// taught, and its counts per candidate set. Bounded by [`CACHE_SAMPLES`]; when full, the
/// oldest results go first.
#[derive(Debug, Default)]
pub struct PatternsCache {
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    learnt: HashMap<UnitKey, Arc<Learnt>>,
    counted: HashMap<(UnitKey, u64), Arc<Samples>>,
    /// What was kept, oldest first, with its size: evicted in this order.
    order: std::collections::VecDeque<(Kept, usize)>,
    /// Patterns and samples held.
    entries: usize,
}

/// A key of either map of [`CacheInner`].
#[derive(Debug)]
enum Kept {
    Learnt(UnitKey),
    Counted((UnitKey, u64)),
}

/// Most patterns plus samples the cache holds (about 40 bytes each: at most about 40 MiB).
/// A day of the benchmark's nginx or backend lines needs about 250,000.
const CACHE_SAMPLES: usize = 1_000_000;

impl PatternsCache {
    fn learnt(&self, key: &UnitKey) -> Option<Arc<Learnt>> {
        self.inner.lock().learnt.get(key).cloned()
    }

    fn counted(&self, key: &(UnitKey, u64)) -> Option<Arc<Samples>> {
        self.inner.lock().counted.get(key).cloned()
    }

    /// Evict the oldest results until `n` more entries fit, then count them in.
    fn make_room(inner: &mut CacheInner, kept: Kept, n: usize) {
        while inner.entries + n > CACHE_SAMPLES {
            let Some((old, size)) = inner.order.pop_front() else {
                break;
            };
            match old {
                Kept::Learnt(k) => {
                    inner.learnt.remove(&k);
                }
                Kept::Counted(k) => {
                    inner.counted.remove(&k);
                }
            }
            inner.entries = inner.entries.saturating_sub(size);
        }
        inner.entries += n;
        inner.order.push_back((kept, n));
    }

    fn keep_learnt(&self, key: UnitKey, learnt: Arc<Learnt>) {
        let mut inner = self.inner.lock();
        if inner.learnt.contains_key(&key) || learnt.len() > CACHE_SAMPLES / 4 {
            return;
        }
        Self::make_room(&mut inner, Kept::Learnt(key.clone()), learnt.len() + 1);
        inner.learnt.insert(key, learnt);
    }

    fn keep_counted(&self, key: (UnitKey, u64), samples: Arc<Samples>) {
        let mut inner = self.inner.lock();
        if inner.counted.contains_key(&key) || samples.len() > CACHE_SAMPLES / 4 {
            return;
        }
        Self::make_room(&mut inner, Kept::Counted(key.clone()), samples.len() + 1);
        inner.counted.insert(key, samples);
    }
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
