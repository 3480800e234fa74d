//! Fault points for crash tests: with `TOVLOG_FAULT=<point>` in the environment the
//! process aborts (as `kill -9` would stop it: no destructor, no flush) when it reaches
//! that point of a retention or delete rewrite. The variable is read once; without it a
//! point costs one load of a `OnceLock`.
//!
//! Points, in the order a rewrite reaches them:
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
