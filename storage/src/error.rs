//! Storage errors. Every variant carries the context a log reader needs.

use std::path::PathBuf;

/// Result alias with the storage error as default.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Local file I/O failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The object store failed.
    #[error("object store error on {path}: {source}")]
    ObjectStore {
        /// Object path.
        path: String,
        /// Cause.
        #[source]
        source: object_store::Error,
    },
    /// Parquet encoding or decoding failed.
    #[error("parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow failed.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// DataFusion failed.
    #[error("datafusion error: {0}")]
    DataFusion(#[from] datafusion_common::error::DataFusionError),
    /// The label index failed.
    #[error("label index error: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// Stored data is corrupt.
    #[error("corrupt data in {path}: {detail}")]
    Corrupt {
        /// File or object.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A limit was exceeded.
    #[error("limit exceeded: {what}")]
    LimitExceeded {
        /// Which limit.
        what: String,
    },
    /// Invalid configuration.
    #[error("invalid storage configuration: {0}")]
    Config(String),
    /// A request the caller must correct (the message says how): HTTP 400.
    #[error("{0}")]
    InvalidRequest(String),
    /// This process may not write (a read replica, or another writer holds the bucket).
    #[error("read-only: {0}")]
    ReadOnly(String),
    /// The head is full and cannot be flushed now (the object store fails, or flushes fall
    /// behind ingest): the push is refused, retryable (HTTP 503).
    #[error("{0}")]
    Backlogged(String),
    /// The storage is shutting down.
    #[error("storage is closed")]
    Closed,
    /// A bug of ours.
    #[error("internal error: {0}")]
    Internal(String),
}
