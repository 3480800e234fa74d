//! Logging (the only tracing subscriber) and the process metrics served on `/metrics`.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
};

use tovlog_storage::StorageMetrics;

use crate::{config::LogConfig, ingest::validate::Reason};

/// Install the tracing subscriber; `RUST_LOG` overrides the configured level. Safe to call twice
/// (tests start several servers in one process): later calls are no-ops.
pub fn init(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if log.json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Counters of the HTTP and ingest layers. Rendered by hand in the Prometheus text format: a
/// handful of counters does not justify a registry crate.
#[derive(Debug, Default)]
pub struct Metrics {
    lines_received: AtomicU64,
    bytes_received: AtomicU64,
    discarded: [AtomicU64; Reason::ALL.len()],
    queries: AtomicU64,
    query_errors: AtomicU64,
    query_duration: Histogram,
    /// Secrets redacted at ingest by (tenant, rule).
    redactions: parking_lot::Mutex<BTreeMap<(String, String), u64>>,
    /// The runtime overrides file's last reload: (successful, SHA-256 in force); `None`
    /// without a file.
    runtime_config: parking_lot::Mutex<Option<(bool, String)>>,
    /// Delete requests accepted, by tenant.
    deletes_received: parking_lot::Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    /// Count accepted lines and bytes.
    pub fn received(&self, lines: u64, bytes: u64) {
        self.lines_received.fetch_add(lines, Ordering::Relaxed);
        self.bytes_received.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Count rejected entries.
    pub fn discarded(&self, reason: Reason, entries: u64) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.discarded[i].fetch_add(entries, Ordering::Relaxed);
        }
    }

    /// Count `n` secrets that `rule` redacted for `tenant`.
    pub fn redacted(&self, tenant: &str, rule: &str, n: u64) {
        let mut map = self.redactions.lock();
        match map.get_mut(&(tenant.to_string(), rule.to_string())) {
            Some(v) => *v += n,
            None => {
                map.insert((tenant.to_string(), rule.to_string()), n);
            }
        }
    }

    /// Count a query and whether it failed.
    pub fn query(&self, failed: bool) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.query_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Record a reload of the runtime overrides file and the hash of the file in force.
    pub fn runtime_config_reloaded(&self, successful: bool, hash: &str) {
        *self.runtime_config.lock() = Some((successful, hash.to_owned()));
    }

    /// Count a delete request accepted for `tenant`.
    pub fn delete_received(&self, tenant: &str) {
        *self
            .deletes_received
            .lock()
            .entry(tenant.to_owned())
            .or_default() += 1;
    }

    /// The runtime config gauges under Loki's names (empty without an overrides file).
    pub fn render_runtime_config(&self) -> String {
        let mut out = String::new();
        if let Some((ok, hash)) = &*self.runtime_config.lock() {
            let _ = writeln!(
                out,
                "# HELP loki_runtime_config_last_reload_successful Whether the last runtime-config reload attempt was successful.\n# TYPE loki_runtime_config_last_reload_successful gauge\nloki_runtime_config_last_reload_successful {}",
                u8::from(*ok)
            );
            let _ = writeln!(
                out,
                "# HELP loki_runtime_config_hash Hash of the currently active runtime config file.\n# TYPE loki_runtime_config_hash gauge\nloki_runtime_config_hash{{sha256=\"{hash}\"}} 1"
            );
        }
        out
    }

    /// Record how long a query took (`tovlog_query_duration_seconds`).
    pub fn query_duration(&self, seconds: f64) {
        self.query_duration.observe(seconds);
    }

    /// Prometheus text exposition of these counters plus the storage figures.
    pub fn render(&self, storage: &StorageMetrics) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        counter(
            "tovlog_ingest_lines_received_total",
            "Log lines accepted.",
            "counter",
            self.lines_received.load(Ordering::Relaxed),
        );
        counter(
            "tovlog_ingest_bytes_received_total",
            "Bytes of accepted lines and structured metadata.",
            "counter",
            self.bytes_received.load(Ordering::Relaxed),
        );
        counter(
            "tovlog_query_requests_total",
            "Queries served.",
            "counter",
            self.queries.load(Ordering::Relaxed),
        );
        counter(
            "tovlog_query_errors_total",
            "Queries that failed.",
            "counter",
            self.query_errors.load(Ordering::Relaxed),
        );
        counter(
            "tovlog_wal_bytes",
            "Bytes in write-ahead log segments.",
            "gauge",
            storage.wal_bytes,
        );
        counter(
            "tovlog_flushes_total",
            "Head flushes to chunk files.",
            "counter",
            storage.flushes,
        );
        counter(
            "tovlog_flush_failures_total",
            "Head flush attempts that failed (the object store unreachable, say); each is retried.",
            "counter",
            storage.flush_failures,
        );
        counter(
            "tovlog_flush_failing",
            "1 while the last head flush attempt failed: a push that finds the head full is refused with 503.",
            "gauge",
            u64::from(storage.flush_failing),
        );
        counter(
            "tovlog_chunk_files",
            "Chunk files in the store.",
            "gauge",
            storage.chunk_files,
        );
        counter(
            "tovlog_chunk_bytes",
            "Bytes of chunk files in the store.",
            "gauge",
            storage.chunk_bytes,
        );
        counter(
            "tovlog_chunk_files_uncompacted",
            "Chunk files written by a flush and not compacted yet.",
            "gauge",
            storage.uncompacted_files,
        );
        counter(
            "tovlog_compactions_total",
            "Time windows compacted.",
            "counter",
            storage.compactions,
        );
        counter(
            "tovlog_chunk_files_pending_delete",
            "Chunk files replaced by compaction, waiting to be deleted.",
            "gauge",
            storage.pending_deletes,
        );
        counter(
            "tovlog_chunk_files_quarantined_total",
            "Chunk files this process found damaged (size or SHA-256 differs from the listing, or missing) and quarantined.",
            "counter",
            storage.quarantined_files,
        );
        counter(
            "tovlog_chunk_files_quarantined",
            "Chunk files the manifests list as quarantined: queries over their streams and times warn that rows are missing.",
            "gauge",
            storage.quarantined_listed,
        );
        counter(
            "tovlog_block_indexes_damaged_total",
            "Block indexes (.tri) this process found damaged; their chunk files are read whole.",
            "counter",
            storage.damaged_indexes,
        );
        counter(
            "tovlog_label_indexes_rebuilt",
            "Tenants whose local label index was damaged at start, set aside and rebuilt from the bucket.",
            "gauge",
            storage.label_indexes_rebuilt,
        );
        counter(
            "tovlog_head_bytes",
            "Bytes held in the in-memory head.",
            "gauge",
            storage.head_bytes,
        );
        counter(
            "tovlog_head_entries",
            "Entries held in the in-memory head.",
            "gauge",
            storage.head_entries,
        );
        self.query_duration.render(
            &mut out,
            "tovlog_query_duration_seconds",
            "Time to answer a query (instant or range), errors included.",
        );
        let _ = writeln!(
            out,
            "# HELP tovlog_ingest_discarded_entries_total Entries rejected at ingest, by reason.\n# TYPE tovlog_ingest_discarded_entries_total counter"
        );
        for (i, r) in Reason::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "tovlog_ingest_discarded_entries_total{{reason=\"{}\"}} {}",
                r.as_str(),
                self.discarded[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP tovlog_ingest_redactions_total Secrets replaced at ingest, by tenant and redaction rule.\n# TYPE tovlog_ingest_redactions_total counter"
        );
        for ((tenant, rule), n) in self.redactions.lock().iter() {
            let _ = writeln!(
                out,
                "tovlog_ingest_redactions_total{{tenant=\"{}\",rule=\"{rule}\"}} {n}",
                label_value(tenant)
            );
        }
        let _ = writeln!(
            out,
            "# HELP loki_compactor_delete_requests_received_total Number of delete requests received per user.\n# TYPE loki_compactor_delete_requests_received_total counter"
        );
        for (tenant, n) in self.deletes_received.lock().iter() {
            let _ = writeln!(
                out,
                "loki_compactor_delete_requests_received_total{{user=\"{}\"}} {n}",
                label_value(tenant)
            );
        }
        out.push_str(&self.render_runtime_config());
        out
    }
}

/// A Prometheus label value with `\\`, `"` and newlines escaped.
fn label_value(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        v.into()
    }
}

/// Upper bounds (seconds) of the query latency histogram's buckets, Prometheus' defaults widened
/// to a minute: a day-long range query over cold chunks can take tens of seconds.
const QUERY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A fixed-bucket histogram with lock-free counters, rendered as a Prometheus histogram
/// (`_bucket{le}`, `_sum`, `_count`). Hand-written for the same reason as [`Metrics`].
#[derive(Debug, Default)]
struct Histogram {
    /// Observations per bucket (not cumulative), the last one for `+Inf`.
    buckets: [AtomicU64; QUERY_BUCKETS.len() + 1],
    /// Sum of observations in nanoseconds (an integer, so it can be an atomic).
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        let seconds = if seconds.is_finite() && seconds > 0.0 {
            seconds
        } else {
            0.0
        };
        let i = QUERY_BUCKETS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(QUERY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0u64;
        for (i, le) in QUERY_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.buckets[QUERY_BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        // The count is the +Inf bucket, so the two always agree in one scrape.
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}
