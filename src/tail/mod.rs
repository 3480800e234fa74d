//! Live tail: the registry of tail subscribers the write path feeds, and the per-tail state
//! that turns pushed streams into Loki's tail frames (the websocket itself lives in
//! `server::routes::tail`).
//!
//! ```text
//!  Ingester::push ─ tap (stream selector, per stream) ─ WAL append ok ─► deliver
//!        │ nobody tails the tenant: one atomic load, nothing else
//!        ▼
//!  Subscriber inbox (bounded: entries and bytes; overflow recorded as dropped)
//!        ▼  notify
//!  tail session: Live::ingest (LogQL pipeline per entry) ─► pending (held `delay_for`)
//!        ▼  take_ready, ≤ 100 entries / 1 MiB per frame
//!  frame queue (bounded: 10 frames; full → entries dropped, reported in the next frame)
//!        ▼
//!  websocket writer (pings every second, close frames)
//! ```
//!
//! The bounds follow Loki's querier (`maxBufferedTailResponses`, `maxEntriesPerTailResponse`,
//! `maxDroppedEntriesPerTailResponse`): a slow client loses entries, which are reported in
//! `dropped_entries`, and memory never grows with the ingest rate.

pub mod frame;
mod live;

pub use frame::{DroppedEntry, TailEntry};
pub use live::Live;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use parking_lot::{Mutex, RwLock};
use tokio::sync::{watch, Notify};
use tovlog_storage::{Matcher, PushStream};

/// Most entries a subscriber's inbox holds before new ones are dropped (a push is accepted
/// whole while the inbox is under this, so it may exceed it by one pushed stream).
pub const MAX_INBOX_ENTRIES: usize = 10_000;
/// Most line bytes a subscriber's inbox holds before new entries are dropped.
pub const MAX_INBOX_BYTES: usize = 16 << 20;
/// Most processed entries held back by `delay_for` (or a timestamp in the future).
pub const MAX_PENDING_ENTRIES: usize = 10_000;
/// Most line bytes held back by `delay_for`.
pub const MAX_PENDING_BYTES: usize = 16 << 20;
/// Frames queued for the websocket writer (Loki's `maxBufferedTailResponses`).
pub const MAX_QUEUED_FRAMES: usize = 10;
/// Entries per frame (Loki's `maxEntriesPerTailResponse`).
pub const MAX_FRAME_ENTRIES: usize = 100;
/// Line bytes per frame: a frame is closed early when it reaches this.
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// Dropped entries remembered for the next frame (Loki's
/// `maxDroppedEntriesPerTailResponse`); later ones are counted, not listed.
pub const MAX_DROPPED_LISTED: usize = 1000;
/// Most entries one tail may buffer in total (inbox, pending and queued frames, plus one
/// pushed stream over the inbox bound): the memory bound of a tail whatever the ingest rate.
pub const MAX_BUFFERED_ENTRIES: usize =
    MAX_INBOX_ENTRIES + MAX_PENDING_ENTRIES + MAX_QUEUED_FRAMES * MAX_FRAME_ENTRIES;

/// One pushed stream handed to the tails that select it, with its line bytes counted once.
#[derive(Debug)]
pub struct LiveBatch {
    /// The stream as stored (validated labels, entries, structured metadata).
    pub stream: PushStream,
    /// Sum of its line lengths.
    pub bytes: usize,
    /// What each tail query's pipeline made of it, by [`Live::shared_key`]: tails running
    /// the same query (several people watching one Live view) run the pipeline once.
    pub processed: Mutex<Vec<(u64, Arc<Vec<TailEntry>>)>>,
}

impl LiveBatch {
    /// A batch of `stream`.
    pub fn new(stream: PushStream) -> LiveBatch {
        LiveBatch {
            bytes: stream.entries.iter().map(|e| e.line.len()).sum(),
            stream,
            processed: Mutex::new(Vec::new()),
        }
    }
}

/// What a subscriber's inbox holds between two wake-ups of its session.
#[derive(Debug, Default)]
struct Inbox {
    batches: Vec<Arc<LiveBatch>>,
    entries: usize,
    bytes: usize,
    /// Entries that did not fit (stream labels: they never reached the pipeline).
    dropped: Vec<DroppedEntry>,
}

/// One open tail as the write path sees it.
#[derive(Debug)]
pub struct Subscriber {
    tenant: String,
    matchers: Vec<Matcher>,
    inbox: Mutex<Inbox>,
    notify: Notify,
    /// Entries the session holds (pending plus queued frames), for `/metrics`.
    held: AtomicUsize,
}

impl Subscriber {
    fn selects(&self, stream: &PushStream) -> bool {
        self.matchers
            .iter()
            .all(|m| m.matches_labels(&stream.labels))
    }

    /// Wait until the write path delivered something (returns at once when it did since
    /// the last call: the wake-up is stored).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// Take everything delivered so far, with the entries that did not fit.
    pub fn drain(&self) -> (Vec<Arc<LiveBatch>>, Vec<DroppedEntry>) {
        let mut inbox = self.inbox.lock();
        let batches = std::mem::take(&mut inbox.batches);
        let dropped = std::mem::take(&mut inbox.dropped);
        inbox.entries = 0;
        inbox.bytes = 0;
        (batches, dropped)
    }

    /// Record how many entries the session holds beyond its inbox.
    pub fn set_held(&self, entries: usize) {
        self.held.store(entries, Ordering::Relaxed);
    }

    fn buffered(&self) -> usize {
        self.inbox.lock().entries + self.held.load(Ordering::Relaxed)
    }
}

/// Streams of one push to hand to the tails that select them, once the WAL has them.
#[derive(Debug)]
pub struct Tap {
    registry: Arc<TailRegistry>,
    deliveries: Vec<(Arc<Subscriber>, Vec<Arc<LiveBatch>>)>,
}

impl Tap {
    /// Hand the streams over. Never blocks: a full inbox drops (and records) entries.
    pub fn deliver(self) {
        let mut dropped = 0u64;
        for (sub, batches) in self.deliveries {
            {
                let mut inbox = sub.inbox.lock();
                for batch in batches {
                    if inbox.entries < MAX_INBOX_ENTRIES && inbox.bytes < MAX_INBOX_BYTES {
                        inbox.entries += batch.stream.entries.len();
                        inbox.bytes += batch.bytes;
                        inbox.batches.push(batch);
                        continue;
                    }
                    dropped += batch.stream.entries.len() as u64;
                    for e in &batch.stream.entries {
                        if inbox.dropped.len() >= MAX_DROPPED_LISTED {
                            break;
                        }
                        inbox.dropped.push(DroppedEntry {
                            ts_ns: e.ts_ns,
                            labels: batch.stream.labels.pairs().to_vec(),
                        });
                    }
                }
            }
            sub.notify.notify_one();
        }
        self.registry.count_dropped(dropped);
    }
}

/// Why a tail could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// `max_concurrent_tail_requests` reached for the tenant (Loki's message).
    #[error("max concurrent tail requests limit exceeded, count > limit ({count} > {limit})")]
    TooMany {
        /// Tails of the tenant including the refused one.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The server is shutting down.
    #[error("server shutting down")]
    ShuttingDown,
}

/// All open tails, by tenant; shared by the write path and the tail sessions.
#[derive(Debug)]
pub struct TailRegistry {
    /// Open tails over all tenants: the write path's only cost when it is 0.
    active: AtomicUsize,
    tenants: RwLock<HashMap<String, Vec<Arc<Subscriber>>>>,
    dropped_total: AtomicU64,
    opened_total: AtomicU64,
    shutdown: watch::Sender<bool>,
    /// Running tail sessions (open websockets), for shutdown to wait on.
    sessions: watch::Sender<usize>,
}

impl Default for TailRegistry {
    fn default() -> Self {
        TailRegistry {
            active: AtomicUsize::new(0),
            tenants: RwLock::new(HashMap::new()),
            dropped_total: AtomicU64::new(0),
            opened_total: AtomicU64::new(0),
            shutdown: watch::channel(false).0,
            sessions: watch::channel(0).0,
        }
    }
}

impl TailRegistry {
    /// An empty registry.
    pub fn new() -> Arc<TailRegistry> {
        Arc::new(TailRegistry::default())
    }

    /// The write path's hook, called before the streams are handed to storage: `None`
    /// (at the cost of one atomic load) when nobody tails; otherwise copies of the streams
    /// some tail of `tenant` selects, per tail. Stream selectors are matched once per
    /// stream, never per line.
    pub fn tap(self: &Arc<Self>, tenant: &str, streams: &[PushStream]) -> Option<Tap> {
        if self.active.load(Ordering::Acquire) == 0 {
            return None;
        }
        let tenants = self.tenants.read();
        let subs = tenants.get(tenant)?;
        let mut deliveries: Vec<(Arc<Subscriber>, Vec<Arc<LiveBatch>>)> =
            subs.iter().map(|s| (Arc::clone(s), Vec::new())).collect();
        for stream in streams {
            let mut shared: Option<Arc<LiveBatch>> = None;
            for (sub, batches) in deliveries.iter_mut() {
                if stream.entries.is_empty() || !sub.selects(stream) {
                    continue;
                }
                let batch = shared.get_or_insert_with(|| Arc::new(LiveBatch::new(stream.clone())));
                batches.push(Arc::clone(batch));
            }
        }
        deliveries.retain(|(_, b)| !b.is_empty());
        if deliveries.is_empty() {
            return None;
        }
        Some(Tap {
            registry: Arc::clone(self),
            deliveries,
        })
    }

    /// Open a tail of `tenant` selecting streams with `matchers`, unless the tenant has
    /// `limit` open already (Loki refuses when the count reaches the limit, so 0 disables
    /// tailing).
    pub fn subscribe(
        self: &Arc<Self>,
        tenant: &str,
        matchers: Vec<Matcher>,
        limit: usize,
    ) -> Result<Subscription, SubscribeError> {
        if *self.shutdown.borrow() {
            return Err(SubscribeError::ShuttingDown);
        }
        let sub = Arc::new(Subscriber {
            tenant: tenant.to_string(),
            matchers,
            inbox: Mutex::new(Inbox::default()),
            notify: Notify::new(),
            held: AtomicUsize::new(0),
        });
        {
            let mut tenants = self.tenants.write();
            let list = tenants.entry(tenant.to_string()).or_default();
            if list.len() >= limit {
                return Err(SubscribeError::TooMany {
                    count: list.len() + 1,
                    limit,
                });
            }
            list.push(Arc::clone(&sub));
            self.active.fetch_add(1, Ordering::AcqRel);
        }
        self.opened_total.fetch_add(1, Ordering::Relaxed);
        Ok(Subscription {
            registry: Arc::clone(self),
            sub,
        })
    }

    fn unsubscribe(&self, sub: &Arc<Subscriber>) {
        let mut tenants = self.tenants.write();
        if let Some(list) = tenants.get_mut(&sub.tenant) {
            if let Some(i) = list.iter().position(|s| Arc::ptr_eq(s, sub)) {
                list.swap_remove(i);
                self.active.fetch_sub(1, Ordering::AcqRel);
            }
            if list.is_empty() {
                tenants.remove(&sub.tenant);
            }
        }
    }

    /// Count entries a tail had to drop.
    pub fn count_dropped(&self, n: u64) {
        if n > 0 {
            self.dropped_total.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Open tails of `tenant`.
    pub fn tails_of(&self, tenant: &str) -> usize {
        self.tenants.read().get(tenant).map_or(0, Vec::len)
    }

    /// Ask every tail session to close (close frame 1001) and refuse new ones.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once [`TailRegistry::shutdown`] was called.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Count a running tail session until the guard is dropped.
    pub fn session(self: &Arc<Self>) -> SessionGuard {
        self.sessions.send_modify(|n| *n += 1);
        SessionGuard {
            registry: Arc::clone(self),
        }
    }

    /// Wait until every tail session has ended, at most `timeout`; `false` on timeout.
    pub async fn wait_closed(&self, timeout: Duration) -> bool {
        let mut rx = self.sessions.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Prometheus text of the tail figures.
    pub fn render_metrics(&self) -> String {
        let (tails, buffered) = {
            let tenants = self.tenants.read();
            let subs = tenants.values().flatten();
            subs.fold((0usize, 0usize), |(n, b), s| (n + 1, b + s.buffered()))
        };
        let mut out = String::new();
        let mut metric = |name: &str, help: &str, kind: &str, value: u64| {
            use std::fmt::Write;
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "tovlog_tail_active",
            "Open live tails.",
            "gauge",
            tails as u64,
        );
        metric(
            "tovlog_tail_opened_total",
            "Live tails opened.",
            "counter",
            self.opened_total.load(Ordering::Relaxed),
        );
        metric(
            "tovlog_tail_buffered_entries",
            "Entries buffered for live tails (inboxes, delay_for, queued frames).",
            "gauge",
            buffered as u64,
        );
        metric(
            "tovlog_tail_dropped_entries_total",
            "Entries live tails dropped because their client did not keep up.",
            "counter",
            self.dropped_total.load(Ordering::Relaxed),
        );
        out
    }
}

/// An open tail; closing it (drop) removes it from the registry.
#[derive(Debug)]
pub struct Subscription {
    registry: Arc<TailRegistry>,
    sub: Arc<Subscriber>,
}

impl Subscription {
    /// The subscriber the write path feeds.
    pub fn subscriber(&self) -> &Subscriber {
        &self.sub
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.registry.unsubscribe(&self.sub);
    }
}

/// A running tail session (see [`TailRegistry::session`]).
#[derive(Debug)]
pub struct SessionGuard {
    registry: Arc<TailRegistry>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.registry
            .sessions
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tovlog_storage::{Entry, LabelSet, MatchOp};

    fn stream(job: &str, n: usize) -> PushStream {
        PushStream {
            labels: LabelSet::new(vec![("job".into(), job.into())]),
            entries: (0..n)
                .map(|i| Entry {
                    ts_ns: i as i64,
                    line: format!("line {i}"),
                    metadata: Vec::new(),
                })
                .collect(),
        }
    }

    fn job(v: &str) -> Vec<Matcher> {
        Matcher::new("job", MatchOp::Eq, v).into_iter().collect()
    }

    #[test]
    fn nobody_tailing_costs_nothing_and_selectors_pick_streams() {
        let r = TailRegistry::new();
        assert!(r.tap("t", &[stream("a", 3)]).is_none());
        let s = r.subscribe("t", job("a"), 10).ok();
        assert!(s.is_some());
        assert!(r.tap("other", &[stream("a", 3)]).is_none());
        assert!(r.tap("t", &[stream("b", 3)]).is_none());
        let tap = r.tap("t", &[stream("a", 3), stream("b", 2)]);
        assert!(tap.is_some());
        if let Some(tap) = tap {
            tap.deliver();
        }
        if let Some(s) = &s {
            let (batches, dropped) = s.subscriber().drain();
            assert_eq!(batches.len(), 1);
            assert_eq!(batches[0].stream.entries.len(), 3);
            assert!(dropped.is_empty());
        }
        drop(s);
        assert!(r.tap("t", &[stream("a", 3)]).is_none());
        assert_eq!(r.tails_of("t"), 0);
    }

    #[test]
    fn limit_per_tenant() {
        let r = TailRegistry::new();
        let a = r.subscribe("t", job("a"), 2);
        let b = r.subscribe("t", job("a"), 2);
        assert!(a.is_ok() && b.is_ok());
        let c = r.subscribe("t", job("a"), 2);
        assert_eq!(
            c.err(),
            Some(SubscribeError::TooMany { count: 3, limit: 2 })
        );
        assert!(r.subscribe("u", job("a"), 2).is_ok());
        drop(a);
        assert!(r.subscribe("t", job("a"), 2).is_ok());
    }

    #[test]
    fn full_inbox_drops_and_records() {
        let r = TailRegistry::new();
        let s = r.subscribe("t", job("a"), 1);
        for _ in 0..3 {
            if let Some(tap) = r.tap("t", &[stream("a", MAX_INBOX_ENTRIES / 2)]) {
                tap.deliver();
            }
        }
        let Ok(s) = s else { panic!("subscribe failed") };
        let (batches, dropped) = s.subscriber().drain();
        let kept: usize = batches.iter().map(|b| b.stream.entries.len()).sum();
        assert_eq!(kept, MAX_INBOX_ENTRIES);
        assert_eq!(dropped.len(), MAX_DROPPED_LISTED);
        assert!(r.render_metrics().contains(&format!(
            "tovlog_tail_dropped_entries_total {}",
            MAX_INBOX_ENTRIES / 2
        )));
    }
}
