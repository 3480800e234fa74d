//! The write path in front of storage: decode a push body, validate it with Loki's rules and
//! limits, enforce the per-tenant ingestion rate and the per-stream limits (active streams,
//! stream rate), redact secrets ([`redact`]), and hand the valid streams to
//! [`tovlog_storage::Storage::append`], which acknowledges only once the WAL has them; then
//! to the live tails that select them ([`crate::tail`]).
//!
//! ```text
//!  decode ─► validate (400 lines) ─► tenant rate (429, nothing stored)
//!         ─► active stream limit ─► per-stream rate (429 lines; only those streams dropped)
//!         ─► redact ─► WAL + head ─► live tails
//! ```

pub mod active;
pub mod decode;
pub mod otlp;
pub mod rate;
pub mod redact;
pub mod validate;

use std::{collections::HashMap, sync::Arc, time::Instant};

use parking_lot::Mutex;
use tovlog_storage::{PushStream, Storage, StreamId};

use crate::{
    config::{bytesize, LimitsConfig},
    limits::Overrides,
    tail::TailRegistry,
    telemetry::Metrics,
};
use rate::TokenBucket;
use validate::{Reason, Rejection, Validator};

/// What the HTTP layer must answer for a push.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Undecodable body: 400.
    #[error("{0}")]
    Decode(#[from] decode::DecodeError),
    /// Some entries were rejected (the others were stored): 400 with one line per rejection.
    #[error("{0}")]
    Partial(String),
    /// Tenant rate limit, or every valid stream refused by a per-stream limit: 429, nothing
    /// stored.
    #[error("{0}")]
    RateLimited(String),
    /// Some streams were refused by a per-stream limit (active streams, stream rate), the
    /// others stored: 429 with one line per refused stream (then any rejections).
    #[error("{0}")]
    StreamLimited(String),
    /// Storage failed: 500, nothing acknowledged.
    #[error("storage failure: {0}")]
    Storage(#[from] tovlog_storage::Error),
}

/// Decodes, validates, rate-limits and stores pushes.
pub struct Ingester {
    storage: Arc<Storage>,
    /// Per-tenant limits (defaults plus runtime overrides), including the secret redaction
    /// applied before the WAL sees an entry; looked up once per push.
    overrides: Arc<Overrides>,
    metrics: Arc<Metrics>,
    /// The tenants' ingestion rate buckets (`ingestion_rate_mb`).
    buckets: Mutex<HashMap<String, TokenBucket>>,
    /// The streams' rate buckets (`per_stream_rate_limit`).
    stream_rates: rate::StreamRates,
    /// New streams of pushes in flight (`max_streams_per_user`).
    active: active::ActiveStreams,
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
            stream_rates: rate::StreamRates::default(),
            active: active::ActiveStreams::default(),
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
        let b = match buckets.get_mut(tenant) {
            Some(b) => b,
            None => buckets
                .entry(tenant.to_owned())
                .or_insert_with(|| TokenBucket::full(burst, now)),
        };
        b.take(now, rate, burst, bytes as f64)
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
        if done.limited {
            Err(PushError::StreamLimited(done.message))
        } else if done.message.is_empty() {
            Ok(())
        } else {
            Err(PushError::Partial(done.message))
        }
    }

    /// Validate, rate-limit and store decoded streams for `tenant` (the path every push
    /// protocol shares once its body is decoded). Rejected entries and streams refused by a
    /// per-stream limit are reported in the result, the others are stored; the tenant rate
    /// limit, every valid stream being refused, or a storage failure stores nothing.
    pub async fn push_streams(
        &self,
        tenant: &str,
        raw: Vec<decode::RawStream>,
    ) -> Result<Ingested, PushError> {
        let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        // One lookup per push request, never per entry.
        let tenant_limits = self.overrides.tenant(tenant);
        let limits = &tenant_limits.limits;
        let validated = Validator::new(limits, now_ns).validate(raw);
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
        // Held until the append is done: the new streams it admitted count against the
        // active stream limit of concurrent pushes meanwhile.
        let admitted = self.stream_limits(tenant, limits, validated.streams);
        let mut streams = admitted.streams;
        for r in &admitted.refused {
            self.metrics.discarded(r.reason, r.entries as u64);
        }
        let refused_entries: usize = admitted.refused.iter().map(|r| r.entries).sum();
        let accepted = validated.entries.saturating_sub(refused_entries);
        if !streams.is_empty() {
            if let Some(rules) = tenant_limits.redactor.for_tenant(tenant) {
                let mut pass = rules.pass();
                rules.redact_streams(&mut streams, &mut pass);
                for (rule, n) in rules.rule_names().zip(pass.counts()) {
                    if *n > 0 {
                        self.metrics.redacted(tenant, rule, *n);
                    }
                }
            }
            let lines = accepted as u64;
            let bytes = validated.bytes.saturating_sub(admitted.refused_bytes) as u64;
            // Copies for the live tails that select these streams (none, at the cost of one
            // atomic load, when nobody tails), handed over only once the WAL has them.
            let tap = self.tails.tap(tenant, &streams);
            self.storage.append(tenant, streams).await?;
            self.metrics.received(lines, bytes);
            if let Some(tap) = tap {
                tap.deliver();
            }
        }
        drop(admitted.reservation);
        let limited = !admitted.refused.is_empty();
        let rejected = refused_entries
            + validated
                .rejections
                .iter()
                .map(|r| r.entries)
                .sum::<usize>();
        // The limits' lines first: with them the answer is a 429, which a client retries.
        let message: Vec<String> = admitted
            .refused
            .into_iter()
            .chain(validated.rejections)
            .map(|r| r.message)
            .collect();
        let message = message.join("\n");
        if limited && accepted == 0 {
            return Err(PushError::RateLimited(message));
        }
        Ok(Ingested {
            accepted,
            rejected,
            message,
            limited,
        })
    }

    /// Loki's per-stream limits on the validated streams of one push, each applied to a
    /// stream's entries of the push as a whole (a refused stream loses all of them, the
    /// others are stored): first the active stream limit (a stream the head does not hold
    /// is refused once the tenant has its limit of active streams), then the stream's rate
    /// (its bytes in this push are taken from its bucket at once, as Loki does with
    /// `shard_streams` on, its default). A stream refused by the first takes no tokens.
    fn stream_limits(
        &self,
        tenant: &str,
        limits: &LimitsConfig,
        streams: Vec<PushStream>,
    ) -> Admitted<'_> {
        let stream_limit = limits.active_stream_limit();
        let rate = limits.per_stream_rate_limit;
        if streams.is_empty() || (stream_limit.is_none() && rate == 0) {
            return Admitted {
                streams,
                refused: Vec::new(),
                refused_bytes: 0,
                reservation: active::Reservation::none(),
            };
        }
        // The distinct streams of the push (a body may list one several times), in order.
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<StreamId, usize> = HashMap::with_capacity(streams.len());
        let group_of: Vec<usize> = streams
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let id = s.labels.fingerprint();
                let g = *index.entry(id).or_insert_with(|| {
                    groups.push(Group {
                        id,
                        first: i,
                        entries: 0,
                        bytes: 0,
                        refused: None,
                    });
                    groups.len() - 1
                });
                groups[g].entries += s.entries.len();
                groups[g].bytes += s.entries.iter().map(rate::entry_bytes).sum::<usize>();
                g
            })
            .collect();
        let ids: Vec<StreamId> = groups.iter().map(|g| g.id).collect();
        let reservation = match stream_limit {
            Some(limit) => {
                let (allowed, reservation) = self.active.admit(&self.storage, tenant, limit, &ids);
                for (g, ok) in groups.iter_mut().zip(allowed) {
                    if !ok {
                        g.refused = Some(Reason::StreamLimit);
                    }
                }
                reservation
            }
            None => active::Reservation::none(),
        };
        if rate > 0 {
            let candidates: Vec<usize> = (0..groups.len())
                .filter(|&g| groups[g].refused.is_none())
                .collect();
            let asked: Vec<(StreamId, usize)> = candidates
                .iter()
                .map(|&g| (groups[g].id, groups[g].bytes))
                .collect();
            let granted =
                self.stream_rates
                    .admit(tenant, rate, limits.per_stream_rate_limit_burst, &asked);
            for (g, ok) in candidates.into_iter().zip(granted) {
                if !ok {
                    groups[g].refused = Some(Reason::PerStreamRateLimit);
                }
            }
        }
        let mut refused = Vec::new();
        let mut refused_bytes = 0;
        for g in &groups {
            let Some(reason) = g.refused else { continue };
            let labels = &streams[g.first].labels;
            let message = match reason {
                Reason::StreamLimit => format!(
                    "Maximum active stream limit exceeded when trying to create stream {labels}, reduce the number of active streams (reduce labels or reduce label values), or contact your Loki administrator to see if the limit can be increased, user: '{tenant}'"
                ),
                _ => format!(
                    "Per stream rate limit exceeded (limit: {}/sec) while attempting to ingest for stream '{labels}' totaling {}, consider splitting a stream via additional labels or contact your Loki administrator to see if the limit can be increased",
                    bytesize::format(rate),
                    bytesize::format(g.bytes as u64)
                ),
            };
            refused_bytes += g.bytes;
            refused.push(Rejection {
                reason,
                entries: g.entries,
                message,
            });
        }
        let streams = if refused.is_empty() {
            streams
        } else {
            streams
                .into_iter()
                .zip(group_of)
                .filter(|(_, g)| groups[*g].refused.is_none())
                .map(|(s, _)| s)
                .collect()
        };
        Admitted {
            streams,
            refused,
            refused_bytes,
            reservation,
        }
    }
}

/// One distinct stream of a push, for the per-stream limits.
struct Group {
    id: StreamId,
    /// Its first occurrence in the push.
    first: usize,
    entries: usize,
    bytes: usize,
    /// Which limit refused it.
    refused: Option<Reason>,
}

/// What the per-stream limits let through.
struct Admitted<'a> {
    /// The streams to store.
    streams: Vec<PushStream>,
    /// One refusal per refused stream.
    refused: Vec<Rejection>,
    /// Their bytes (lines plus structured metadata).
    refused_bytes: usize,
    /// The new streams admitted, counted against the active stream limit until dropped.
    reservation: active::Reservation<'a>,
}

/// What [`Ingester::push_streams`] stored and refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// Entries stored.
    pub accepted: usize,
    /// Entries rejected by validation or refused by a per-stream limit.
    pub rejected: usize,
    /// One line per rejection (Loki's messages), the per-stream limits' first; empty when
    /// nothing was rejected.
    pub message: String,
    /// A per-stream limit refused some streams (Loki answers 429 for the push).
    pub limited: bool,
}
