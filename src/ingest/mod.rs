//! The write path in front of storage: decode a push body, validate it with Loki's rules and
//! limits, enforce the per-tenant ingestion rate, redact secrets ([`redact`]), and hand the
//! valid streams to
//! [`tovlog_storage::Storage::append`], which acknowledges only once the WAL has them; then
//! to the live tails that select them ([`crate::tail`]).

pub mod decode;
pub mod otlp;
pub mod redact;
pub mod validate;

use std::{collections::HashMap, sync::Arc, time::Instant};

use parking_lot::Mutex;
use tovlog_storage::Storage;

use crate::{config::LimitsConfig, limits::Overrides, tail::TailRegistry, telemetry::Metrics};
use validate::{Reason, Validator};

/// What the HTTP layer must answer for a push.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Undecodable body: 400.
    #[error("{0}")]
    Decode(#[from] decode::DecodeError),
    /// Some entries were rejected (the others were stored): 400 with one line per rejection.
    #[error("{0}")]
    Partial(String),
    /// Rate limit: 429, nothing stored.
    #[error("{0}")]
    RateLimited(String),
    /// Storage failed: 500, nothing acknowledged.
    #[error("storage failure: {0}")]
    Storage(#[from] tovlog_storage::Error),
}

/// A token bucket per tenant, in bytes. Hand-written: it is a dozen lines, and the rate-limit
/// crates count requests or cells rather than variable-sized byte batches with Loki's semantics
/// (a batch larger than the burst is always refused).
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Decodes, validates, rate-limits and stores pushes.
pub struct Ingester {
    storage: Arc<Storage>,
    /// Per-tenant limits (defaults plus runtime overrides), including the secret redaction
    /// applied before the WAL sees an entry; looked up once per push.
    overrides: Arc<Overrides>,
    metrics: Arc<Metrics>,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Live tails fed after each successful append.
    tails: Arc<TailRegistry>,
}

impl Ingester {
    /// Build over a storage handle and the per-tenant limits.
    pub fn new(storage: Arc<Storage>, overrides: Arc<Overrides>, metrics: Arc<Metrics>) -> Self {
        Ingester {
            storage,
            overrides,
            metrics,
            buckets: Mutex::new(HashMap::new()),
            tails: TailRegistry::new(),
        }
    }

    /// The per-tenant limits this write path reads.
    pub fn overrides(&self) -> &Arc<Overrides> {
        &self.overrides
    }

    /// The live tails this write path feeds.
    pub fn tails(&self) -> &Arc<TailRegistry> {
        &self.tails
    }

    /// Take `bytes` from the tenant's token bucket. The rate and burst are the tenant's current
    /// ones, so an override changed at runtime applies from the next push on.
    fn allow(&self, tenant: &str, limits: &LimitsConfig, bytes: usize) -> bool {
        let rate = limits.ingestion_rate_mb * 1024.0 * 1024.0;
        let burst = limits.ingestion_burst_size_mb * 1024.0 * 1024.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let b = buckets.entry(tenant.to_string()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
        b.last = now;
        let need = bytes as f64;
        if need <= b.tokens {
            b.tokens -= need;
            true
        } else {
            false
        }
    }

    /// Handle one push body for `tenant`.
    pub async fn push(
        &self,
        tenant: &str,
        body: &[u8],
        content_type: Option<&str>,
        content_encoding: Option<&str>,
    ) -> Result<(), PushError> {
        let inflated = decode::decompress(body, content_encoding)?;
        let raw = decode::decode(inflated.as_deref().unwrap_or(body), content_type)?;
        let done = self.push_streams(tenant, raw).await?;
        if done.message.is_empty() {
            Ok(())
        } else {
            Err(PushError::Partial(done.message))
        }
    }

    /// Validate, rate-limit and store decoded streams for `tenant` (the path every push
    /// protocol shares once its body is decoded). Rejected entries are reported in the
    /// result, the others are stored; a rate limit or storage failure stores nothing.
    pub async fn push_streams(
        &self,
        tenant: &str,
        raw: Vec<decode::RawStream>,
    ) -> Result<Ingested, PushError> {
        let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        // One lookup per push request, never per entry.
        let tenant_limits = self.overrides.tenant(tenant);
        let limits = &tenant_limits.limits;
        let mut validated = Validator::new(limits, now_ns).validate(raw);
        for r in &validated.rejections {
            self.metrics.discarded(r.reason, r.entries as u64);
        }
        if validated.entries > 0 && !self.allow(tenant, limits, validated.bytes) {
            self.metrics
                .discarded(Reason::RateLimited, validated.entries as u64);
            return Err(PushError::RateLimited(format!(
                "Ingestion rate limit exceeded for user {tenant} (limit: {} bytes/sec) while attempting to ingest '{}' lines totaling '{}' bytes, reduce log volume or contact your administrator to see if the limit can be increased",
                (limits.ingestion_rate_mb * 1024.0 * 1024.0) as u64,
                validated.entries,
                validated.bytes
            )));
        }
        let accepted = validated.entries;
        if !validated.streams.is_empty() {
            if let Some(rules) = tenant_limits.redactor.for_tenant(tenant) {
                let mut pass = rules.pass();
                rules.redact_streams(&mut validated.streams, &mut pass);
                for (rule, n) in rules.rule_names().zip(pass.counts()) {
                    if *n > 0 {
                        self.metrics.redacted(tenant, rule, *n);
                    }
                }
            }
            let lines = validated.entries as u64;
            let bytes = validated.bytes as u64;
            // Copies for the live tails that select these streams (none, at the cost of one
            // atomic load, when nobody tails), handed over only once the WAL has them.
            let tap = self.tails.tap(tenant, &validated.streams);
            self.storage.append(tenant, validated.streams).await?;
            self.metrics.received(lines, bytes);
            if let Some(tap) = tap {
                tap.deliver();
            }
        }
        let rejected = validated.rejections.iter().map(|r| r.entries).sum();
        let message: Vec<String> = validated
            .rejections
            .into_iter()
            .map(|r| r.message)
            .collect();
        Ok(Ingested {
            accepted,
            rejected,
            message: message.join("\n"),
        })
    }
}

/// What [`Ingester::push_streams`] stored and refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// Entries stored.
    pub accepted: usize,
    /// Entries rejected by validation.
    pub rejected: usize,
    /// One line per rejection (Loki's messages); empty when nothing was rejected.
    pub message: String,
}
