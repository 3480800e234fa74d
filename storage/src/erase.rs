//! Erasure: retention and delete requests, applied to queries at once and to the files
//! by the compactor.
//!
//! ```text
//!  add_delete ──► <tenant>/deletes/<id>/received.json ──► tombstone (in memory)
//!                       (append-only event log, log.rs)         │ every scan, series,
//!                                                               ▼ labels, volume
//!  retention source (per query) ──► per-stream cut-off ──► EraseFilter (filter.rs):
//!                                    head batches filtered; files a cut-off or a delete
//!                                    without line filters touches read through a
//!                                    FilterExec; rows of line-filtered deletes found once
//!                                    per file (rows.rs) and left out of row selections
//!                                    and minute counts; other files as before
//!  compactor pass (apply.rs): expired files unlisted; files with rows of due requests
//!  (past the cancel period) or a quarter expired rewritten; manifest + chain entry
//!  (`retention` / `delete`); then `processed.json` with the lines removed
//! ```
//!
//! - **Retention**: a [`RetentionSource`] gives each tenant's [`RetentionPolicy`] (global
//!   period plus per-stream rules, Loki's `retention_period` / `retention_stream`); it is
//!   asked again on every query and compactor pass, so runtime overrides take effect
//!   without a restart. With `compaction.retention_enabled`, rows older than
//!   `now - period(stream)` are invisible to scans, series, labels and volumes, and the
//!   compactor removes them physically.
//! - **Deletes**: a delete request (LogQL selector with optional line filters, inclusive
//!   time range) is recorded append-only in the object store and applied as a tombstone
//!   to every query from the moment [`crate::Storage::add_delete`] returns; after
//!   `compaction.delete_request_cancel_period` the compactor rewrites the affected files
//!   and the request becomes `processed` with the lines it removed.
//! - **Cost**: a scan asks once whether any tombstone overlaps its range or any
//!   cut-off falls after its start; when not, it is planned exactly as without erasure.
//!   Otherwise only the streams and files concerned pay a per-row check of `stream_id`
//!   and `ts`; a delete with line filters costs one read of the blocks that may hold its
//!   literals per file, after which the file is read as if nothing were erased.
//! - **Series, labels, volumes**: a stream disappears when retention expired all its
//!   rows in range, or when deletes without line filters cover every time range it has
//!   data in. Volumes count from the cut-off (exactly, from the rows, where it falls
//!   inside a file); deleted rows still count until the compactor has removed them.
//! - **Crash safety**: see the `apply` submodule; [`fault`] has the crash-test points.

use std::sync::Arc;
use std::time::Duration;

mod apply;
mod filter;
mod log;
mod rows;

pub use apply::DeleteProgress;
pub(crate) use apply::{carry_clean, RowErasure};
pub(crate) use filter::EraseExpr;
pub use filter::EraseFilter;
pub(crate) use filter::{now_ns, select_files};
pub(crate) use log::Eraser;
pub use rows::ErasedRowsCache;
pub(crate) use rows::{kept_rows, ErasedRow, FileStream, LineErase};

use serde::{Deserialize, Serialize};

use crate::model::{LabelSet, Matcher};

/// The caller's compiled line filters of a delete query: `true` = the line is deleted.
/// Storage knows no LogQL; the server compiles `|= "x" != "y"` into this.
pub type LineMatch = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A delete query compiled by the caller.
#[derive(Clone)]
pub struct CompiledDelete {
    /// The stream selector.
    pub matchers: Vec<Matcher>,
    /// Line filters; `None` deletes every line of the selected streams in range.
    pub line: Option<LineMatch>,
    /// Byte strings every line `line` deletes contains (case-sensitive; may be empty).
    /// The chunk files' trigram indexes then find the deleted rows without reading
    /// every line (see the `rows` submodule).
    pub needles: Vec<Vec<u8>>,
}

impl std::fmt::Debug for CompiledDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledDelete")
            .field("matchers", &self.matchers)
            .field("line", &self.line.is_some())
            .field("needles", &self.needles.len())
            .finish()
    }
}

/// Compiles a delete request's `query` (as stored) into matchers and a line predicate;
/// `Err` carries a message for a 400. Set once at start-up with
/// [`crate::Storage::set_delete_compiler`]; stored requests are compiled with it.
pub type DeleteCompiler = Arc<dyn Fn(&str) -> Result<CompiledDelete, String> + Send + Sync>;

/// Status of a delete request, as Loki names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteStatus {
    /// Accepted; applied to queries; not yet rewritten in the files.
    Received,
    /// The compactor has rewritten every affected file.
    Processed,
    /// Cancelled within the cancel period: nothing is deleted.
    Cancelled,
}

/// One delete request with its current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRequest {
    /// Unique id (Loki: 8 hex characters; ours may be longer).
    pub request_id: String,
    /// The LogQL query as given (selector plus optional line filters).
    pub query: String,
    /// First deleted timestamp, ns, inclusive.
    pub start_ns: i64,
    /// Last deleted timestamp, ns, inclusive.
    pub end_ns: i64,
    /// When it was received, ms since the epoch.
    pub created_ms: i64,
    /// Who asked (tenant and user as the server knows them).
    pub requested_by: String,
    /// Current status.
    pub status: DeleteStatus,
    /// Lines the compactor removed for it (set when processed).
    pub lines_removed: Option<u64>,
    /// When it became processed or cancelled, ms since the epoch.
    pub finished_ms: Option<i64>,
}

/// Outcome of [`crate::Storage::cancel_delete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Cancelled: nothing of it is deleted.
    Cancelled,
    /// No such request for this tenant.
    NotFound,
    /// The cancel period is over (or it is processed): it can no longer be cancelled.
    TooLate,
}

/// One `retention_stream` rule of Loki.
#[derive(Debug, Clone)]
pub struct RetentionRule {
    /// Stream selector.
    pub matchers: Vec<Matcher>,
    /// Higher wins among matching rules; ties go to the rule with more matchers.
    pub priority: i32,
    /// How long matching streams are kept.
    pub period: Duration,
}

/// A tenant's retention: Loki's `retention_period` and `retention_stream`.
#[derive(Debug, Clone, Default)]
pub struct RetentionPolicy {
    /// Period of streams no rule matches; `Duration::ZERO` keeps them forever.
    pub period: Duration,
    /// Per-stream rules.
    pub streams: Vec<RetentionRule>,
}

impl RetentionPolicy {
    /// The period that applies to a stream (`None` = kept forever): the matching rule of
    /// highest priority (then most matchers), else the tenant period.
    pub fn period_for(&self, labels: &LabelSet) -> Option<Duration> {
        let best = self
            .streams
            .iter()
            .filter(|r| r.matchers.iter().all(|m| m.matches_labels(labels)))
            .max_by_key(|r| (r.priority, r.matchers.len()));
        let period = best.map_or(self.period, |r| r.period);
        (!period.is_zero()).then_some(period)
    }
}

/// Each tenant's retention policy, asked on every query and compactor pass.
pub type RetentionSource = Arc<dyn Fn(&str) -> RetentionPolicy + Send + Sync>;
