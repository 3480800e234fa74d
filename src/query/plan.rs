//! Planning of storage reads: the per-query DataFusion task context (memory pool), stream
//! resolution through the label index, and the physical plan
//! `scan ─► LineFilterExec ─► PipelineExec` shared by log and metric queries.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use datafusion_common::error::DataFusionError;
use datafusion_execution::config::SessionConfig;
use datafusion_execution::memory_pool::GreedyMemoryPool;
use datafusion_execution::runtime_env::RuntimeEnvBuilder;
use datafusion_execution::TaskContext;
use datafusion_physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion_physical_plan::{ExecutionPlan, ExecutionPlanProperties};

use tovlog_logql::ast;
use tovlog_logql::pipeline::{FieldNeedle, FieldNeedleFinder, Pipeline};
use tovlog_storage::quarantine::Skipped;
use tovlog_storage::scan::{LinePredicate, LogsTable, MinuteCount};
use tovlog_storage::schema::{LINE, LINE_FLAGS, METADATA, STREAM_ID, TS};
use tovlog_storage::textindex::TextNeedle;
use tovlog_storage::{MatchOp, Matcher, ScanRequest, Storage};

use super::exec::{Interner, LineFilterExec, PipelineExec, PipelineMode, StreamMap};
use super::stats::StatsCollector;
use super::{QueryError, QueryLimits};

/// Everything one running query shares: storage, tenant, its DataFusion task context with
/// its own memory pool, statistics and the cancellation flag.
pub struct QueryContext {
    /// The store.
    pub storage: Arc<Storage>,
    /// Tenant of the query.
    pub tenant: String,
    /// What the query's plans execute with: its memory pool (the runtime, which also
    /// reads the chunk store), batch size and scan partitions.
    pub task: Arc<TaskContext>,
    /// Counters for `stats`.
    pub stats: Arc<StatsCollector>,
    /// Set when the query timed out; execution nodes stop at the next batch.
    pub cancelled: Arc<AtomicBool>,
    /// Limits of the engine.
    pub limits: QueryLimits,
    /// The chunk files this query's scans read and the quarantined ones they could not.
    reads: parking_lot::Mutex<Reads>,
}

/// What a query's scans read ([`QueryContext::note_table`]).
#[derive(Default)]
struct Reads {
    files: std::collections::BTreeSet<String>,
    skipped: std::collections::BTreeMap<String, Skipped>,
}

/// Scan partitions of a query: `configured`, or twice the cores when 0. Two per core keep
/// every core decoding while a partition waits for its next read (measured on the standard
/// 5M workload: 8–14% lower latency than one per core, at the same CPU time).
fn partitions(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
}

impl QueryContext {
    /// A new context: a DataFusion task context whose runtime has a greedy memory pool of
    /// `limits.max_memory_bytes`.
    pub fn new(
        storage: Arc<Storage>,
        tenant: String,
        limits: &QueryLimits,
        cancelled: Arc<AtomicBool>,
    ) -> Result<QueryContext, QueryError> {
        // At least 1 MiB: below that not even one batch fits and every query would fail.
        let pool = Arc::new(GreedyMemoryPool::new(limits.max_memory_bytes.max(1 << 20)));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool)
            .build_arc()
            .map_err(datafusion_error)?;
        let config = SessionConfig::new()
            .with_batch_size(8192)
            .with_target_partitions(partitions(limits.partitions));
        storage.register_object_store(&runtime);
        let task = TaskContext::default()
            .with_session_config(config)
            .with_runtime(runtime);
        Ok(QueryContext {
            storage,
            tenant,
            task: Arc::new(task),
            stats: StatsCollector::new(),
            cancelled,
            limits: limits.clone(),
            reads: parking_lot::Mutex::default(),
        })
    }

    /// Record the chunk files `table` reads (checked for damage if the query fails) and
    /// the quarantined ones it cannot (reported as warnings).
    pub fn note_table(&self, table: &LogsTable) {
        let mut reads = self.reads.lock();
        reads
            .files
            .extend(table.files().iter().map(|f| f.path.clone()));
        for s in table.skipped() {
            reads
                .skipped
                .entry(s.path.clone())
                .and_modify(|known| known.rows = known.rows.max(s.rows))
                .or_insert_with(|| s.clone());
        }
    }

    /// The most partitions a scan of this query is split into.
    pub fn partitions(&self) -> usize {
        self.task.session_config().target_partitions()
    }

    /// The chunk files this query's scans read so far.
    pub fn files_read(&self) -> Vec<String> {
        self.reads.lock().files.iter().cloned().collect()
    }

    /// One warning per quarantined chunk file the query could not read.
    pub fn warnings(&self) -> Vec<String> {
        let time = |ns: i64| {
            chrono::DateTime::from_timestamp_nanos(ns)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        self.reads
            .lock()
            .skipped
            .values()
            .map(|s| {
                format!(
                    "chunk file {} is quarantined ({}); the answer lacks its {} lines of the selected streams from {} to {}",
                    s.path,
                    s.reason,
                    s.rows,
                    time(s.min_ts),
                    time(s.max_ts)
                )
            })
            .collect()
    }

    /// Resolve a selector to the streams with data in `[start_ns, end_ns)`.
    pub fn resolve_streams(
        &self,
        selector: &[ast::Matcher],
        start_ns: i64,
        end_ns: i64,
    ) -> Result<StreamMap, QueryError> {
        let matchers = convert_matchers(selector)?;
        let series = self
            .storage
            .series(&self.tenant, &matchers, start_ns, end_ns)
            .map_err(storage_error)?;
        StatsCollector::add(&self.stats.streams, series.len() as u64);
        let mut map = HashMap::with_capacity(series.len());
        for s in series {
            map.insert(s.id, Arc::new(s.labels.pairs().to_vec()));
        }
        Ok(StreamMap(map))
    }
}

/// LogQL matchers to storage matchers (regexes compiled, fully anchored).
pub fn convert_matchers(selector: &[ast::Matcher]) -> Result<Vec<Matcher>, QueryError> {
    selector
        .iter()
        .map(|m| {
            let op = match m.op {
                ast::MatchOp::Eq => MatchOp::Eq,
                ast::MatchOp::Neq => MatchOp::Neq,
                ast::MatchOp::Re => MatchOp::Re,
                ast::MatchOp::Nre => MatchOp::Nre,
            };
            Matcher::new(m.name.clone(), op, m.value.clone()).map_err(|e| {
                QueryError::BadRequest(format!(
                    "parse error : invalid regex in matcher {}: {e}",
                    m.name
                ))
            })
        })
        .collect()
}

/// A storage failure as a query error.
pub fn storage_error(e: tovlog_storage::Error) -> QueryError {
    match e {
        tovlog_storage::Error::LimitExceeded { what } => {
            QueryError::TooLarge(format!("limit exceeded: {what}"))
        }
        tovlog_storage::Error::DataFusion(e) => datafusion_error(e),
        other => QueryError::Internal(other.to_string()),
    }
}

/// A DataFusion failure as a query error: memory-pool exhaustion is the user's query
/// being too large, cancellation after a timeout is a timeout, the rest is ours.
pub fn datafusion_error(e: DataFusionError) -> QueryError {
    let root = e.find_root();
    match root {
        DataFusionError::ResourcesExhausted(msg) => QueryError::TooLarge(format!(
            "the query needs more memory than the per-query limit allows; narrow the time range or add filters ({msg})"
        )),
        DataFusionError::Execution(msg) if msg == QUERY_CANCELLED => {
            QueryError::Timeout("query timed out".to_owned())
        }
        DataFusionError::External(inner) => {
            if let Some(q) = inner.downcast_ref::<QueryError>() {
                q.clone()
            } else {
                QueryError::Internal(inner.to_string())
            }
        }
        other => QueryError::Internal(other.to_string()),
    }
}

/// Which storage columns a scan needs. Reading fewer avoids decoding them: a plain
/// `sum(count_over_time({…}[5m]))` never touches the lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanColumns {
    /// Stream id, timestamp, line and structured metadata.
    All,
    /// Everything but structured metadata (labels are not needed beyond the stream's).
    NoMetadata,
    /// Stream id and timestamp only (no pipeline, no line-derived value, no labels).
    TimeOnly,
}

/// What [`build_scan`] reads and how it processes it.
pub struct ScanSpec<'a> {
    /// Selector and pipeline.
    pub log: &'a ast::LogExpr,
    /// The compiled pipeline of `log`.
    pub pipeline: Arc<Pipeline>,
    /// `PipelineExec` mode; `None` runs only the leading line filters.
    pub mode: Option<PipelineMode>,
    /// Series interner (sample mode).
    pub interner: Arc<Interner>,
    /// Columns to read.
    pub columns: ScanColumns,
    /// Inclusive start, ns.
    pub start_ns: i64,
    /// Exclusive end, ns.
    pub end_ns: i64,
    /// When set, chunk files with precomputed per-minute row counts are not scanned; their
    /// counts go here instead (see `LogsTable::take_minute_counts`).
    pub minute_counts: Option<&'a mut Vec<MinuteCount>>,
    /// With [`ScanColumns::All`]: the label names a structured-metadata key must have to
    /// matter (`tovlog_logql::pipeline::metadata_sensitive_names`). When no row in range
    /// can have such a key (per the manifest and the heads), metadata is not read.
    pub metadata_names: Option<Vec<String>>,
}

/// The rows `LineFilterExec` keeps, decided from the line alone, for the Parquet reader to
/// apply while decoding: the leading line filters, and for each field needle "the line has
/// the value or a backslash". The needles' third way out (a metadata key of that name) is
/// why the storage applies it only to files known to lack those keys.
fn line_predicate(
    pipeline: &Arc<Pipeline>,
    field_needles: &[FieldNeedle],
    stats: Arc<StatsCollector>,
) -> LinePredicate {
    let pipeline = Arc::clone(pipeline);
    let finders: Vec<FieldNeedleFinder> = FieldNeedle::finders(field_needles);
    LinePredicate {
        matches: Arc::new(move |line: &str| {
            pipeline.leading_line_filters().matches(line)
                && finders.iter().all(|f| f.line_allows(line.as_bytes()))
        }),
        unless_metadata_keys: field_needles.iter().map(|n| n.label.clone()).collect(),
        // Rows dropped in the reader never reach `LineFilterExec`, which counts the rest:
        // `stats` still reports every line read.
        on_rejected: Some(Arc::new(move |rows, bytes| {
            StatsCollector::add(&stats.lines_scanned, rows);
            StatsCollector::add(&stats.bytes_scanned, bytes);
        })),
    }
}

/// Message of the error execution nodes raise once the query was cancelled.
pub const QUERY_CANCELLED: &str = "tovlog query cancelled";

/// Build `scan ─► LineFilterExec ─► [PipelineExec] ─► [CoalescePartitionsExec]` for one
/// log selector over `[start_ns, end_ns)`, with the labels of the streams it reads.
/// Without a `mode` the rows keep the storage schema (only the leading line filters
/// run). `None` when no stream matches.
pub async fn build_scan(
    qc: &QueryContext,
    spec: ScanSpec<'_>,
) -> Result<Option<(Arc<dyn ExecutionPlan>, Arc<StreamMap>)>, QueryError> {
    let ScanSpec {
        log,
        pipeline,
        mode,
        interner,
        columns,
        start_ns,
        end_ns,
        minute_counts,
        metadata_names,
    } = spec;
    if start_ns >= end_ns {
        return Ok(None);
    }
    let streams = qc.resolve_streams(&log.selector, start_ns, end_ns)?;
    if streams.0.is_empty() {
        return Ok(None);
    }
    let mut ids: Vec<u64> = streams.0.keys().copied().collect();
    ids.sort_unstable();
    // Metadata no row can have under a name the leaf cares about changes nothing: skip
    // decoding it. Field needles stay exact (none of their labels is a metadata key).
    let metadata_irrelevant = columns == ScanColumns::All
        && metadata_names.as_ref().is_some_and(|names| {
            qc.storage
                .metadata_keys(&qc.tenant, &ids, start_ns, end_ns)
                .is_some_and(|keys| keys.iter().all(|k| !names.contains(k)))
        });
    // Literals every matching line contains let the trigram indexes skip blocks; so do the
    // values of `| json | k="v"` and `| k="v"` filters, unless a selected stream has a label
    // `k` (which then decides instead of the line or metadata).
    let mut field_needles: Vec<FieldNeedle> = Vec::new();
    let mut needles: Vec<TextNeedle> = Vec::new();
    // Numeric `| json` filters let block field statistics skip blocks (see `fields`).
    let mut bounds = Vec::new();
    if columns != ScanColumns::TimeOnly {
        let shadowed = |name: &str| {
            streams
                .0
                .values()
                .any(|labels| labels.iter().any(|(k, _)| k == name))
        };
        bounds = super::fields::bounds(&pipeline, &shadowed);
        needles = pipeline
            .leading_line_filters()
            .required_substrings()
            .into_iter()
            .map(TextNeedle::literal)
            .collect();
        let unshadowed = |n: &&FieldNeedle| {
            !streams
                .0
                .values()
                .any(|labels| labels.iter().any(|(k, _)| *k == n.label))
        };
        field_needles = pipeline
            .field_needles()
            .iter()
            .filter(unshadowed)
            .cloned()
            .collect();
        // `| k="v"` before any parser with no stream label `k`: `v` is a metadata value,
        // which the indexes hold whole.
        needles.extend(
            pipeline
                .metadata_needles()
                .iter()
                .filter(unshadowed)
                .map(|n| TextNeedle::metadata(n.value.clone())),
        );
        if columns == ScanColumns::All || metadata_irrelevant {
            needles.extend(
                field_needles
                    .iter()
                    .map(|n| TextNeedle::field(n.value.clone())),
            );
        } else {
            // Without metadata the row check would not be exact.
            field_needles.clear();
        }
    }
    let columns = if metadata_irrelevant {
        ScanColumns::NoMetadata
    } else {
        columns
    };
    let mut table = qc
        .storage
        .logs_table_with_needles(
            ScanRequest {
                tenant: qc.tenant.clone(),
                streams: ids,
                start_ns,
                end_ns,
            },
            needles,
        )
        .map_err(storage_error)?
        .with_field_bounds(bounds);
    qc.note_table(&table);
    if let Some(out) = minute_counts {
        out.extend(table.take_minute_counts().await);
    }
    // Only field needles go to the reader: `LineFilterExec` applies no needle, and a needle
    // spares the JSON or logfmt parsing of most lines. Line filters alone are cheaper in
    // `LineFilterExec`, over views of the decoded pages, than as a row filter in the reader,
    // which decodes the line column to decide and then reads the kept rows' columns again
    // (CPU A/B on the 5M workload: Q3 358 → 284 ms, Q1 11 → 7, Q8 22 → 19).
    if columns != ScanColumns::TimeOnly && !field_needles.is_empty() {
        table = table.with_line_predicate(line_predicate(
            &pipeline,
            &field_needles,
            Arc::clone(&qc.stats),
        ));
    }
    // Read lines as views into the decompressed Parquet pages rather than copies (see
    // `LogsTable::with_line_views`). Metric samples consume each batch at once and keep
    // the views; log rows are kept (top N), so the lines the pipeline keeps are copied
    // into plain strings that do not hold whole pages: by `PipelineExec`, or without one
    // by `LineFilterExec` after its filters.
    let views = mode.is_some();
    if columns != ScanColumns::TimeOnly {
        table = table.with_line_views().map_err(datafusion_error)?;
    }
    let names: &[&str] = match columns {
        ScanColumns::All => &[STREAM_ID, TS, LINE, METADATA],
        ScanColumns::NoMetadata => &[STREAM_ID, TS, LINE],
        ScanColumns::TimeOnly => &[STREAM_ID, TS],
    };
    let table_schema = table.schema();
    // Line flags speed up `| json` (`Pipeline::process_flagged`, `Pipeline::precheck`).
    let flags = (columns != ScanColumns::TimeOnly && mode.is_some() && pipeline.reads_line_flags())
        .then_some(LINE_FLAGS);
    let projection = names
        .iter()
        .chain(flags.iter())
        .map(|n| table_schema.index_of(n))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|e| QueryError::Internal(format!("logs table schema: {e}")))?;
    let scan = table
        .scan(qc.partitions(), Some(&projection))
        .await
        .map_err(datafusion_error)?;
    StatsCollector::add(&qc.stats.scans, 1);
    // The leading line filters run first, over whole Arrow string arrays, so the rest of
    // the pipeline (and everything above it) only sees the lines that can match.
    let filtered: Arc<dyn ExecutionPlan> = if columns == ScanColumns::TimeOnly {
        scan
    } else {
        let node = LineFilterExec::try_new(scan, Arc::clone(&pipeline), Arc::clone(&qc.stats))?
            .with_field_needles(&field_needles);
        Arc::new(if views {
            node.keeping_line_views()
        } else {
            node
        })
    };
    let streams = Arc::new(streams);
    let processed: Arc<dyn ExecutionPlan> = match mode {
        Some(mode) => Arc::new(PipelineExec::try_new(
            filtered,
            pipeline,
            mode,
            Arc::clone(&streams),
            interner,
            Arc::clone(&qc.stats),
            Arc::clone(&qc.cancelled),
        )?),
        None => filtered,
    };
    if processed.output_partitioning().partition_count() > 1 {
        Ok(Some((
            Arc::new(CoalescePartitionsExec::new(processed)),
            streams,
        )))
    } else {
        Ok(Some((processed, streams)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_convert_with_anchored_regexes() {
        let sel = vec![
            ast::Matcher {
                name: "job".into(),
                op: ast::MatchOp::Re,
                value: "tovplay-.*".into(),
            },
            ast::Matcher {
                name: "host".into(),
                op: ast::MatchOp::Neq,
                value: "edge-1".into(),
            },
        ];
        let m = convert_matchers(&sel).unwrap();
        assert_eq!(m.len(), 2);
        assert!(m[0].matches("tovplay-backend"));
        assert!(!m[0].matches("x-tovplay-backend"));
        assert!(m[1].matches("edge-2"));
        assert!(!m[1].matches("edge-1"));
    }

    #[test]
    fn bad_regex_is_a_bad_request() {
        let sel = vec![ast::Matcher {
            name: "job".into(),
            op: ast::MatchOp::Re,
            value: "(".into(),
        }];
        assert!(matches!(
            convert_matchers(&sel),
            Err(QueryError::BadRequest(_))
        ));
    }

    #[test]
    fn resource_exhaustion_maps_to_too_large() {
        let e = DataFusionError::ResourcesExhausted("pool full".into());
        assert!(matches!(datafusion_error(e), QueryError::TooLarge(_)));
        let e = DataFusionError::Execution(QUERY_CANCELLED.into());
        assert!(matches!(datafusion_error(e), QueryError::Timeout(_)));
        let e = DataFusionError::Internal("x".into());
        assert!(matches!(datafusion_error(e), QueryError::Internal(_)));
    }
}
