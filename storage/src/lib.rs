//! tovlog's storage engine: write-ahead log, in-memory head, Parquet chunks on
//! `object_store`, a tantivy label index and a manifest of chunk files.
//!
//! ```text
//!  append(tenant, streams) ──► WAL (group commit, fsync) ──► head (per tenant, per stream)
//!                                                              │ size/age threshold
//!                                                              ▼
//!                       Parquet chunk (zstd, sorted by stream, ts) on object_store
//!                       + manifest edit + label index update, then WAL truncation
//!
//!  series()/label_names()/label_values()  ◄── label index + head
//!  logs_table(tenant) : DataFusion TableProvider over head + chunks (stream/time pruning)
//! ```
//!
//! It knows DataFusion, Parquet and tantivy, but nothing of HTTP or LogQL syntax.
#![warn(missing_docs)]

pub mod model;
pub mod schema;

pub use model::{Entry, LabelSet, MatchOp, Matcher, PushStream, Series, StreamId, TenantId};
pub mod config;
pub mod error;

pub use config::StorageConfig;
pub use error::{Error, Result};

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::prelude::SessionContext;

/// What one `append` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendSummary {
    /// Entries newly stored.
    pub entries: u64,
    /// Entries skipped as exact duplicates (same stream, timestamp and line).
    pub duplicates: u64,
    /// Bytes of log lines newly stored.
    pub bytes: u64,
}

/// What a scan reads: exactly these streams in `[start_ns, end_ns)`.
#[derive(Debug, Clone)]
pub struct ScanRequest {
    /// Tenant.
    pub tenant: String,
    /// Streams to read (from [`Storage::series`]).
    pub streams: Vec<StreamId>,
    /// Inclusive start, ns.
    pub start_ns: i64,
    /// Exclusive end, ns.
    pub end_ns: i64,
}

/// Per-stream volume in a time range (for `index/stats` and `index/volume`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamVolume {
    /// The stream.
    pub series: Series,
    /// Entries in range.
    pub entries: u64,
    /// Bytes of lines in range.
    pub bytes: u64,
    /// Chunk files holding them (head counts as one).
    pub chunks: u64,
}

/// Point-in-time figures for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct StorageMetrics {
    /// Bytes currently in WAL segments.
    pub wal_bytes: u64,
    /// Head flushes completed.
    pub flushes: u64,
    /// Chunk files in all manifests.
    pub chunk_files: u64,
    /// Bytes of all chunk files.
    pub chunk_bytes: u64,
    /// Bytes held in the head.
    pub head_bytes: u64,
    /// Entries held in the head.
    pub head_entries: u64,
}

/// The storage engine handle. Cheap to share (`Arc<Storage>`).
pub struct Storage {
    _private: (),
}

impl Storage {
    /// Open the store: create directories, replay the WAL into the head, load manifests and
    /// label indexes, start the background flusher.
    pub async fn open(_config: StorageConfig) -> Result<Arc<Storage>> {
        Err(Error::Internal("storage not implemented".into()))
    }

    /// Durably append validated streams for a tenant: when this returns `Ok`, the entries
    /// are in the fsynced WAL (unless fsync is disabled) and visible to queries.
    pub async fn append(&self, _tenant: &str, _streams: Vec<PushStream>) -> Result<AppendSummary> {
        Err(Error::Closed)
    }

    /// Streams of a tenant matching all `matchers` with data in `[start_ns, end_ns)`.
    pub fn series(
        &self,
        _tenant: &str,
        _matchers: &[Matcher],
        _start_ns: i64,
        _end_ns: i64,
    ) -> Result<Vec<Series>> {
        Ok(Vec::new())
    }

    /// Label names of the matching streams (all streams when `matchers` is empty), sorted.
    pub fn label_names(
        &self,
        _tenant: &str,
        _matchers: &[Matcher],
        _start_ns: i64,
        _end_ns: i64,
    ) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Values of label `name` over the matching streams (all when `matchers` is empty), sorted.
    pub fn label_values(
        &self,
        _tenant: &str,
        _name: &str,
        _matchers: &[Matcher],
        _start_ns: i64,
        _end_ns: i64,
    ) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Entries and bytes per matching stream in the range.
    pub fn volumes(
        &self,
        _tenant: &str,
        _matchers: &[Matcher],
        _start_ns: i64,
        _end_ns: i64,
    ) -> Result<Vec<StreamVolume>> {
        Ok(Vec::new())
    }

    /// A DataFusion table over head and chunks holding exactly the requested rows
    /// (schema [`schema::logs_schema`]); stream and time restrictions are applied inside
    /// (Parquet pruning by manifest, row-group statistics and page index).
    pub fn scan_table(&self, _request: ScanRequest) -> Result<Arc<dyn TableProvider>> {
        Err(Error::Internal("storage not implemented".into()))
    }

    /// Register the chunk object store with a DataFusion session so scans can read it.
    pub fn register_object_store(&self, _ctx: &SessionContext) {}

    /// Flush the whole head to chunk files now.
    pub async fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// Flush and stop background tasks; later appends fail with [`Error::Closed`].
    pub async fn shutdown(&self) -> Result<()> {
        Ok(())
    }

    /// Current figures for `/metrics`.
    pub fn metrics(&self) -> StorageMetrics {
        StorageMetrics::default()
    }
}
