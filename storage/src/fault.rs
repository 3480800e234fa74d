//! Fault points for crash tests: with `TOVLOG_FAULT=<point>` in the environment the
//! process aborts (as `kill -9` would stop it: no destructor, no flush) when it reaches
//! that point. The variable is read once; without it a point costs one load of a
//! `OnceLock`. `tests/it/crash_matrix.rs` and `tests/it/erase_crash.rs` arm each point.
//!
//! A head flush, in order:
//! - `flush.after_chunk_put`: the first chunk file is written, nothing else;
//! - `flush.after_streams_log`: the bucket's label objects hold the new streams;
//! - `index.before_commit`: the label index has the new streams' documents, uncommitted;
//! - `index.after_commit`: the label index committed them, its merges may still run;
//! - `flush.after_chain`: the hash chain's entry is written, the manifest not yet;
//! - `flush.after_manifest`: the manifest lists the files, the WAL still holds the rows.
//!
//! A compaction of a window, in order:
//! - `compact.after_index_put`: the first output's needle index (`.tri`) is written;
//! - `compact.after_output_put`: the outputs are written, not listed;
//! - `compact.after_chain`: the chain's entry is written, the manifest not yet;
//! - `compact.after_manifest`: the manifest lists the outputs, the inputs wait for deletion;
//! - `compact.after_input_delete`: the replaced inputs are deleted, the manifest still
//!   names them as pending deletes.
//!
//! A retention or delete rewrite (`crate::erase`), in order:
//! - `erase.after_drop_chain`: expired files' chain entry written, manifest not yet;
//! - `erase.after_drop_manifest`: expired files unlisted (pending deletes recorded);
//! - `erase.after_rewrite_write`: a rewritten file is written, nothing else;
//! - `erase.after_rewrite_chain`: its chain entry is written, the manifest not yet;
//! - `erase.after_rewrite_manifest`: the manifest lists it in place of the old file;
//! - `erase.before_processed`: every file is rewritten, the `processed` event not written.

use std::sync::OnceLock;

/// The environment variable naming the armed fault point.
pub const FAULT_ENV: &str = "TOVLOG_FAULT";

static ARMED: OnceLock<Option<String>> = OnceLock::new();

/// Abort the process here when `point` is the armed one.
#[inline]
pub(crate) fn point(point: &str) {
    let armed = ARMED.get_or_init(|| std::env::var(FAULT_ENV).ok().filter(|v| !v.is_empty()));
    if armed.as_deref() == Some(point) {
        tracing::error!(point, "fault point reached: aborting");
        std::process::abort();
    }
}
