//! Query engine placeholder with the agreed API (see the engine work); replaced by the real engine.

use std::{sync::Arc, time::Duration};

use tovlog_storage::Storage;

/// Query limits.
#[derive(Debug, Clone)]
pub struct QueryLimits {
    /// Largest `limit` of a log query.
    pub max_entries_limit_per_query: u32,
    /// Most series a metric query may return.
    pub max_query_series: usize,
    /// Query timeout.
    pub query_timeout: Duration,
    /// Memory per query.
    pub max_memory_bytes: usize,
}

/// Log query direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first.
    Forward,
    /// Newest first.
    Backward,
}

/// A validated query request.
#[derive(Debug, Clone)]
pub struct QueryRequest {
    /// Tenant.
    pub tenant: String,
    /// LogQL text.
    pub query: String,
    /// Start, ns.
    pub start_ns: i64,
    /// End, ns.
    pub end_ns: i64,
    /// Step, ns.
    pub step_ns: i64,
    /// Entry limit.
    pub limit: u32,
    /// Direction.
    pub direction: Direction,
    /// Instant query.
    pub instant: bool,
    /// `categorize-labels` requested.
    pub categorize_labels: bool,
}

/// Query failures.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// 400
    #[error("{0}")]
    BadRequest(String),
    /// 504
    #[error("{0}")]
    Timeout(String),
    /// too large
    #[error("{0}")]
    TooLarge(String),
    /// 500
    #[error("{0}")]
    Internal(String),
}

/// The engine.
#[derive(Clone)]
pub struct QueryEngine {
    _storage: Arc<Storage>,
    _limits: QueryLimits,
}

impl QueryEngine {
    /// New engine.
    pub fn new(storage: Arc<Storage>, limits: QueryLimits) -> QueryEngine {
        QueryEngine { _storage: storage, _limits: limits }
    }

    /// Run a query.
    pub async fn query(&self, _req: QueryRequest) -> Result<serde_json::Value, QueryError> {
        Err(QueryError::Internal("query engine not implemented".into()))
    }
}
