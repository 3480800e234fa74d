//! The query engine: runs LogQL queries over tovlog storage and answers with Loki's
//! JSON bodies.
//!
//! ```text
//!  QueryRequest ─► parse (tovlog_logql) ─┬─ log query ──► logs::run ──┐
//!                                        └─ metric ─────► metric::run ┤
//!                                                                     ▼
//!                                            encode (streams / matrix / vector / scalar + stats)
//!
//!  each storage read = plan::build_scan:
//!    label index → stream ids → Storage::logs_table → LogsTable::scan (only the columns needed)
//!    ─► LineFilterExec (leading line filters, vectorised over the Arrow `line` column)
//!    ─► PipelineExec (rest of the pipeline, per batch; skipped when it cannot drop rows)
//!    ─► log queries: TopK sort on `ts` (its dynamic bound reaches the Parquet scan), then
//!       final lines and labels computed for the surviving rows only; read in time windows
//!       from the end the direction starts at, stopping once `limit` entries are certain
//!    ─► metric queries: samples keyed by interned label set (`sum by`/range `by` groupings
//!       applied at the source) ─► RangeVectorExec (per-series samples or per-step buckets,
//!       then `eval::range_vector`: windows and range function) ─► `eval::evaluate` does
//!       the vector aggregations and binary operators over the range vectors
//! ```
//!
//! Every query gets its own DataFusion task context with a memory pool of
//! [`QueryLimits::max_memory_bytes`], so a heavy query fails with a clear error instead of
//! exhausting the process, and a timeout of [`QueryLimits::query_timeout`]. With a
//! [`scheduler::QueryScheduler`] (the server's engine has one) a query first waits for a
//! slot in its tenant's queue, within the same timeout.
//! The HTTP layer validates parameters and rejects instant log queries before calling in.

pub mod detected;
pub mod encode;
pub mod exec;
pub mod fields;
mod logs;
mod metric;
mod patterns;
mod plan;
pub mod scheduler;

pub use patterns::PatternsRequest;
pub use plan::convert_matchers;
pub mod stats;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tovlog_logql::ast::{Expr, SampleExpr};
use tovlog_storage::Storage;

/// Resource limits of the engine (Loki's `limits_config` names where they exist).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryLimits {
    /// Largest `limit` a log query may ask for (the HTTP layer enforces it; kept for reference).
    pub max_entries_limit_per_query: u32,
    /// Most series a metric query may return.
    pub max_query_series: usize,
    /// Wall-clock limit of one query.
    pub query_timeout: Duration,
    /// Memory one query may use for sorting, grouping and buffered results.
    pub max_memory_bytes: usize,
    /// Partitions a query's scan is split into (0: twice the cores).
    pub partitions: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_entries_limit_per_query: 5000,
            max_query_series: 500,
            query_timeout: Duration::from_secs(60),
            max_memory_bytes: 1 << 30,
            partitions: 0,
        }
    }
}

/// Order of entries in a log query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Oldest first.
    Forward,
    /// Newest first (Loki's default).
    #[default]
    Backward,
}

/// One query, with parameters already validated by the HTTP layer.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRequest {
    /// Tenant.
    pub tenant: String,
    /// LogQL text.
    pub query: String,
    /// Start, ns (inclusive for log queries; first step for metric queries).
    pub start_ns: i64,
    /// End, ns (exclusive for log queries; last step bound for metric queries).
    pub end_ns: i64,
    /// Step, ns (metric range queries).
    pub step_ns: i64,
    /// Entry limit (log queries).
    pub limit: u32,
    /// Entry order (log queries).
    pub direction: Direction,
    /// Instant query (`/query`): evaluated at `end_ns`.
    pub instant: bool,
    /// `X-Loki-Response-Encoding-Flags: categorize-labels` was sent.
    pub categorize_labels: bool,
}

/// Why a query failed. `Display` is the text sent to the client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// The query is wrong (parse error, pipeline error, limits of the request): HTTP 400.
    #[error("{0}")]
    BadRequest(String),
    /// The query took longer than the configured timeout: HTTP 504.
    #[error("{0}")]
    Timeout(String),
    /// The query needs more resources than allowed (memory, series): HTTP 422/400.
    #[error("{0}")]
    TooLarge(String),
    /// The tenant has too many queries waiting for a slot: HTTP 429.
    #[error("{0}")]
    TooManyRequests(String),
    /// A failure of tovlog or its storage: HTTP 500.
    #[error("{0}")]
    Internal(String),
}

/// `max_query_range`: no range-vector selector (`[5m]`) may be longer; `None` when none
/// is (or the limit is 0, off). Loki's text (`logqlmodel.ErrIntervalLimit` with both
/// durations, as its engine prints them); the first selector over the limit, left to right,
/// is named. Checked by the engine for every query (the ruler's too, as Loki's engine
/// does) and by the HTTP layer before a query waits for a slot.
pub fn range_limit_error(expr: &SampleExpr, limit: Duration) -> Option<String> {
    let limit_ns = i64::try_from(limit.as_nanos()).unwrap_or(i64::MAX);
    if limit_ns == 0 {
        return None;
    }
    let range_ns = first_range_over(expr, limit_ns)?;
    let range = Duration::from_nanos(u64::try_from(range_ns).unwrap_or(0));
    Some(format!(
        "[interval] value exceeds limit: [{}] > [{}]",
        crate::config::duration::prom(range),
        crate::config::duration::prom(limit)
    ))
}

/// The range of the first range-vector selector of `expr` longer than `limit_ns`.
fn first_range_over(expr: &SampleExpr, limit_ns: i64) -> Option<i64> {
    match expr {
        SampleExpr::Range(r) => (r.range.range_ns > limit_ns).then_some(r.range.range_ns),
        SampleExpr::Vector(v) => first_range_over(&v.expr, limit_ns),
        SampleExpr::LabelReplace(l) => first_range_over(&l.expr, limit_ns),
        SampleExpr::Binary(b) => {
            first_range_over(&b.lhs, limit_ns).or_else(|| first_range_over(&b.rhs, limit_ns))
        }
        SampleExpr::Literal(_) | SampleExpr::VectorLiteral(_) => None,
    }
}

/// Loki's text for an instant log query.
pub const INSTANT_LOG_QUERY_ERROR: &str =
    "log queries are not supported as an instant query type, please change your query to a range query type";

/// The query engine. Cheap to clone.
#[derive(Clone)]
pub struct QueryEngine {
    storage: Arc<Storage>,
    limits: Arc<QueryLimits>,
    /// Per-tenant `max_query_series` and `max_entries_limit_per_query` (runtime overrides);
    /// `None`: `limits` for every tenant.
    overrides: Option<Arc<crate::limits::Overrides>>,
    /// What `/patterns` learnt and counted per chunk file.
    patterns: Arc<patterns::PatternsCache>,
    /// The admission queue every query waits in first; `None`: queries run at once.
    scheduler: Option<Arc<scheduler::QueryScheduler>>,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl QueryEngine {
    /// An engine over `storage` with `limits`.
    pub fn new(storage: Arc<Storage>, limits: QueryLimits) -> QueryEngine {
        QueryEngine {
            storage,
            limits: Arc::new(limits),
            overrides: None,
            patterns: Arc::default(),
            scheduler: None,
        }
    }

    /// Admit every query through `scheduler` (global concurrency, per-tenant queues and
    /// `max_query_parallelism`) before it runs.
    pub fn with_scheduler(mut self, scheduler: Arc<scheduler::QueryScheduler>) -> QueryEngine {
        self.scheduler = Some(scheduler);
        self
    }

    /// The admission queue, when queries go through one.
    pub fn scheduler(&self) -> Option<&Arc<scheduler::QueryScheduler>> {
        self.scheduler.as_ref()
    }

    /// Read the per-tenant query limits from `overrides` (its values replace
    /// `max_query_series` and `max_entries_limit_per_query` of the engine's limits).
    pub fn with_overrides(mut self, overrides: Arc<crate::limits::Overrides>) -> QueryEngine {
        self.overrides = Some(overrides);
        self
    }

    /// The configured limits.
    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// The limits a query of `tenant` runs with.
    pub(crate) fn tenant_limits(&self, tenant: &str) -> Arc<QueryLimits> {
        match &self.overrides {
            None => Arc::clone(&self.limits),
            Some(o) => {
                let t = o.tenant(tenant);
                Arc::new(QueryLimits {
                    max_entries_limit_per_query: t.limits.max_entries_limit_per_query,
                    max_query_series: t.limits.max_query_series,
                    ..(*self.limits).clone()
                })
            }
        }
    }

    /// The queries `tenant` may run at once (`max_query_parallelism`).
    fn query_parallelism(&self, tenant: &str) -> usize {
        match &self.overrides {
            Some(o) => o.tenant(tenant).limits.max_query_parallelism,
            None => crate::config::LimitsConfig::default().max_query_parallelism,
        }
    }

    /// Run a query; returns the full Loki JSON body `{"status":"success","data":{…}}`.
    pub async fn query(&self, req: QueryRequest) -> Result<serde_json::Value, QueryError> {
        let started = Instant::now();
        let expr =
            tovlog_logql::parse(&req.query).map_err(|e| QueryError::BadRequest(e.to_string()))?;
        if req.instant && !expr.is_sample() {
            return Err(QueryError::BadRequest(INSTANT_LOG_QUERY_ERROR.to_owned()));
        }
        if let (Expr::Sample(sample), Some(o)) = (&expr, &self.overrides) {
            let limit = o.tenant(&req.tenant).limits.max_query_range;
            if let Some(e) = range_limit_error(sample, limit) {
                return Err(QueryError::BadRequest(e));
            }
        }
        let tenant = req.tenant.clone();
        let (body, warnings) = self
            .with_timeout(&tenant, |qc| {
                let (expr, req) = (&expr, &req);
                async move {
                    match expr {
                        Expr::Log(log) => logs::run(&qc, log, req, started).await,
                        Expr::Sample(sample) => metric::run(qc, sample.clone(), req, started).await,
                    }
                }
            })
            .await?;
        Ok(with_warnings(body, warnings))
    }

    /// Run `work` with a new query context of `tenant`, under the query timeout. Returns
    /// its result and the warnings of its reads.
    ///
    /// A read that fails may have met a damaged chunk file: the files the failed attempt
    /// read are hashed ([`Storage::check_chunks`]) and, when that quarantined some, `work`
    /// runs again without them, its warnings saying what the answer lacks.
    async fn with_timeout<T, F, Fut>(
        &self,
        tenant: &str,
        work: F,
    ) -> Result<(T, Vec<String>), QueryError>
    where
        F: Fn(Arc<plan::QueryContext>) -> Fut,
        Fut: std::future::Future<Output = Result<T, QueryError>>,
    {
        let cancelled = Arc::new(AtomicBool::new(false));
        let limits = self.tenant_limits(tenant);
        let attempts = async {
            // Waiting for a slot counts against the timeout, as in Loki's query frontend.
            let _permit = match &self.scheduler {
                Some(s) => Some(s.admit(tenant, self.query_parallelism(tenant)).await?),
                None => None,
            };
            let mut quarantined = 0usize;
            loop {
                let qc = Arc::new(plan::QueryContext::new(
                    Arc::clone(&self.storage),
                    tenant.to_owned(),
                    &limits,
                    Arc::clone(&cancelled),
                )?);
                let error = match work(Arc::clone(&qc)).await {
                    Ok(v) => return Ok((v, qc.warnings())),
                    Err(QueryError::Internal(e)) => e,
                    Err(e) => return Err(e),
                };
                let files = qc.files_read();
                // A few files per failed attempt; a read that fails without damage found
                // is an error as before.
                if files.is_empty() || quarantined >= MAX_QUARANTINED_PER_QUERY {
                    return Err(QueryError::Internal(error));
                }
                match self.storage.check_chunks(tenant, &files).await {
                    Ok(0) => return Err(QueryError::Internal(error)),
                    Ok(n) => {
                        tracing::warn!(tenant, files = n, %error,
                            "query read damaged chunk files; they are quarantined and the query runs again without them");
                        quarantined += n;
                    }
                    Err(e) => {
                        tracing::warn!(tenant, error = %e, "checking the chunk files of a failed query failed");
                        return Err(QueryError::Internal(error));
                    }
                }
            }
        };
        let timeout = self.limits.query_timeout;
        match tokio::time::timeout(timeout, attempts).await {
            Ok(result) => result,
            Err(_) => {
                // Work still running on blocking threads sees the flag and stops.
                cancelled.store(true, Ordering::Relaxed);
                Err(QueryError::Timeout(format!(
                    "query timed out after {}: decrease the duration of the request or add more label matchers to the query",
                    humanize(timeout)
                )))
            }
        }
    }
}

impl From<scheduler::Refused> for QueryError {
    fn from(e: scheduler::Refused) -> Self {
        match e {
            scheduler::Refused::TooManyOutstanding => QueryError::TooManyRequests(e.to_string()),
            scheduler::Refused::Disabled => QueryError::BadRequest(e.to_string()),
        }
    }
}

/// Damaged files one query quarantines at most before it gives up with its error.
const MAX_QUARANTINED_PER_QUERY: usize = 64;

/// `body` (`{"status":"success",…}`) with Loki's top-level `warnings` when there are any.
pub(crate) fn with_warnings(
    mut body: serde_json::Value,
    warnings: Vec<String>,
) -> serde_json::Value {
    if !warnings.is_empty() {
        if let Some(map) = body.as_object_mut() {
            map.insert("warnings".to_owned(), serde_json::Value::from(warnings));
        }
    }
    body
}

/// `1m0s`-like rendering for error texts.
fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else if secs > 0 {
        format!("{secs}s")
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests;
