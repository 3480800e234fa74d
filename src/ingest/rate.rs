//! Byte token buckets: the tenant's ingestion rate (`ingestion_rate_mb`) and each stream's
//! (`per_stream_rate_limit`). Loki's semantics: a bucket starts full, refills at the rate up
//! to the burst, and a batch larger than what it holds is refused whole (so a batch larger
//! than the burst is always refused).
//!
//! Hand-written: it is a dozen lines, and the rate-limit crates count requests or cells
//! rather than variable-sized byte batches with these semantics.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use tovlog_storage::{Entry, StreamId};

/// The bytes an entry counts for the rate limits: its line plus its structured metadata
/// (Loki's `EntryTotalSize`).
pub fn entry_bytes(e: &Entry) -> usize {
    e.line.len()
        + e.metadata
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

/// One bucket of byte tokens.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            last: now,
        }
    }

    /// Refill for the time since the last call at `rate` bytes/s (capped at `burst`), then
    /// take `n` bytes if the bucket holds them. The rate and burst are the caller's current
    /// ones, so a limit changed at runtime applies from the next call on.
    pub fn take(&mut self, now: Instant, rate: f64, burst: f64, n: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
        if n <= self.tokens {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// When the bucket will be full again at `rate`: from then on it is the same as a new
    /// one, so it can be forgotten.
    fn full_at(&self, rate: f64, burst: f64) -> Instant {
        let missing = (burst - self.tokens).max(0.0);
        let secs = if rate > 0.0 { missing / rate } else { 0.0 };
        // A rate of a few bytes a day: keep it for a day at most; dropping it then only
        // gives the stream a fresh burst.
        self.last + Duration::from_secs_f64(secs.min(86_400.0))
    }
}

/// How often the idle per-stream buckets are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The per-stream buckets of every tenant (`per_stream_rate_limit`).
///
/// Bounded: a bucket is kept only until it would be full again (`burst / rate` after its
/// last use, 5 s at Loki's 3MB/15MB), since a full bucket is the same as a missing one; a
/// sweep every [`SWEEP_EVERY`] drops those. The map holds at most the streams pushed to in
/// the last `burst / rate` plus one sweep interval.
#[derive(Debug)]
pub struct StreamRates {
    inner: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    /// Tenant → stream → (bucket, when it is full again).
    tenants: HashMap<String, HashMap<StreamId, (TokenBucket, Instant)>>,
    last_sweep: Instant,
}

impl Default for StreamRates {
    fn default() -> Self {
        StreamRates {
            inner: Mutex::new(Buckets {
                tenants: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }
}

impl StreamRates {
    /// Take each stream's bytes of one push from its bucket, whole: `streams` lists
    /// `(stream, bytes)` with each stream once. Returns, in the same order, whether the
    /// stream may be stored. A refused stream takes nothing from its bucket.
    pub fn admit(
        &self,
        tenant: &str,
        rate: u64,
        burst: u64,
        streams: &[(StreamId, usize)],
    ) -> Vec<bool> {
        let (rate, burst) = (rate as f64, burst as f64);
        let now = Instant::now();
        let mut inner = self.inner.lock();
        if now.saturating_duration_since(inner.last_sweep) >= SWEEP_EVERY {
            inner.sweep(now);
        }
        let buckets = match inner.tenants.get_mut(tenant) {
            Some(b) => b,
            None => inner.tenants.entry(tenant.to_owned()).or_default(),
        };
        streams
            .iter()
            .map(|&(id, bytes)| {
                let (bucket, full_at) = buckets
                    .entry(id)
                    .or_insert_with(|| (TokenBucket::full(burst, now), now));
                let ok = bucket.take(now, rate, burst, bytes as f64);
                *full_at = bucket.full_at(rate, burst);
                ok
            })
            .collect()
    }

    /// Buckets held (all tenants).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().tenants.values().map(HashMap::len).sum()
    }
}

impl Buckets {
    fn sweep(&mut self, now: Instant) {
        self.tenants.retain(|_, streams| {
            streams.retain(|_, (_, full_at)| *full_at > now);
            !streams.is_empty()
        });
        self.last_sweep = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(100.0, t0);
        assert!(b.take(t0, 10.0, 100.0, 100.0));
        assert!(!b.take(t0, 10.0, 100.0, 1.0), "empty");
        let t1 = t0 + Duration::from_secs(2);
        assert!(!b.take(t1, 10.0, 100.0, 21.0), "20 tokens after 2 s");
        assert!(b.take(t1, 10.0, 100.0, 20.0));
        let much_later = t0 + Duration::from_secs(3600);
        assert!(
            !b.take(much_later, 10.0, 100.0, 101.0),
            "never more than the burst"
        );
        assert!(b.take(much_later, 10.0, 100.0, 100.0));
    }

    #[test]
    fn streams_are_limited_separately_and_whole() {
        let r = StreamRates::default();
        let got = r.admit("t", 10, 100, &[(1, 60), (2, 60)]);
        assert_eq!(got, vec![true, true]);
        // Stream 1 has 40 left: 50 is refused whole and takes nothing, 40 still fits.
        assert_eq!(r.admit("t", 10, 100, &[(1, 50)]), vec![false]);
        assert_eq!(r.admit("t", 10, 100, &[(1, 40)]), vec![true]);
        // Another tenant's stream with the same id has its own bucket.
        assert_eq!(r.admit("u", 10, 100, &[(1, 100)]), vec![true]);
    }

    #[test]
    fn full_buckets_are_swept() {
        let r = StreamRates::default();
        // At 1 GB/s a 10-byte dent refills at once: the bucket is droppable right away.
        r.admit("t", 1 << 30, 1 << 30, &[(1, 10), (2, 10)]);
        assert_eq!(r.len(), 2);
        {
            let mut inner = r.inner.lock();
            let later = Instant::now() + Duration::from_secs(1);
            inner.sweep(later);
        }
        assert_eq!(r.len(), 0);
    }
}
