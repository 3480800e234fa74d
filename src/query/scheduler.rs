//! Query admission: every query of the HTTP API waits here for one of
//! `query_scheduler.max_concurrent` slots before it runs. Waiting queries are kept in one FIFO
//! per tenant and free slots go to the tenants in turn (round-robin), so a burst of heavy
//! queries from one tenant delays another tenant's query by about one query per busy tenant,
//! not by the whole burst (Loki's query scheduler does the same with its per-tenant queues).
//! A tenant runs at most its `max_query_parallelism` queries at once, and may have at most
//! `query_scheduler.max_outstanding_requests_per_tenant` waiting; one more is refused with
//! Loki's 429 `too many outstanding requests`.
//!
//! ```text
//!  admit(t) ── slot free, t under its cap, none of t's waiting? ──yes──► run
//!                │ no                                     (one lock, no await)
//!                ▼
//!        t's FIFO (429 when full) ── tenant ring: [t1, t2, …] ──┐
//!                                                                │ a finishing query hands
//!  Permit dropped ──► slot freed ──► next tenant of the ring with │ its slot on, under the
//!                                    a waiter and under its cap ◄┘ same lock
//! ```
//!
//! A waiting query that is dropped (client gone, timeout) leaves its queue, or gives back
//! the slot it was handed before it could take it.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Why a query was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The tenant already has its maximum of queries waiting (Loki's text): HTTP 429.
    #[error("too many outstanding requests")]
    TooManyOutstanding,
    /// The tenant's `max_query_parallelism` is 0 (Loki's text): HTTP 400.
    #[error("querying is disabled, please contact your Loki operator")]
    Disabled,
}

/// The admission queue shared by every query of the server.
#[derive(Debug)]
pub struct QueryScheduler {
    max_concurrent: usize,
    max_outstanding: usize,
    state: Mutex<State>,
    /// Queries refused with `too many outstanding requests`.
    refused: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// Queries running (all tenants).
    running: usize,
    /// Tenants with a query running or waiting.
    tenants: HashMap<String, TenantQueue>,
    /// Tenants with waiting queries, in the order they get the next free slot.
    ring: VecDeque<String>,
    next_id: u64,
}

#[derive(Debug)]
struct TenantQueue {
    running: usize,
    /// The tenant's `max_query_parallelism` as of its latest query.
    cap: usize,
    waiting: VecDeque<Waiter>,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    grant: oneshot::Sender<()>,
}

/// A running query's slot; dropping it hands the slot to the next waiting query.
#[derive(Debug)]
pub struct Permit {
    scheduler: Arc<QueryScheduler>,
    tenant: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.scheduler.state.lock();
        self.scheduler.release(&mut state, &self.tenant);
    }
}

/// A query in its tenant's queue; dropped before it was admitted, it leaves the queue.
struct Waiting {
    scheduler: Arc<QueryScheduler>,
    tenant: String,
    id: u64,
    admitted: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.admitted {
            return;
        }
        let mut state = self.scheduler.state.lock();
        let state = &mut *state;
        let mut left_queue = false;
        if let Some(q) = state.tenants.get_mut(&self.tenant) {
            if let Some(pos) = q.waiting.iter().position(|w| w.id == self.id) {
                q.waiting.remove(pos);
                left_queue = true;
                if q.waiting.is_empty() {
                    state.ring.retain(|t| *t != self.tenant);
                    if q.running == 0 {
                        state.tenants.remove(&self.tenant);
                    }
                }
            }
        }
        if !left_queue {
            // A slot was handed over in the moment the query was dropped: pass it on.
            self.scheduler.release(state, &self.tenant);
        }
    }
}

impl QueryScheduler {
    /// A queue running `max_concurrent` queries at once (at least 1) and keeping at most
    /// `max_outstanding` waiting per tenant (at least 1).
    pub fn new(max_concurrent: usize, max_outstanding: usize) -> Arc<QueryScheduler> {
        Arc::new(QueryScheduler {
            max_concurrent: max_concurrent.max(1),
            max_outstanding: max_outstanding.max(1),
            state: Mutex::new(State::default()),
            refused: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The queue's gauges and counter in the Prometheus text format (`/metrics`).
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write;
        let (running, mut waiting): (usize, Vec<(String, usize)>) = {
            let state = self.state.lock();
            let waiting = state
                .tenants
                .iter()
                .filter(|(_, q)| !q.waiting.is_empty())
                .map(|(t, q)| (t.clone(), q.waiting.len()))
                .collect();
            (state.running, waiting)
        };
        waiting.sort();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP tovlog_query_scheduler_slots Queries that may run at once (all tenants).\n\
             # TYPE tovlog_query_scheduler_slots gauge\ntovlog_query_scheduler_slots {}\n\
             # HELP tovlog_query_scheduler_running Queries running.\n\
             # TYPE tovlog_query_scheduler_running gauge\ntovlog_query_scheduler_running {running}\n\
             # HELP tovlog_query_scheduler_refused_total Queries refused because their tenant's queue was full (429).\n\
             # TYPE tovlog_query_scheduler_refused_total counter\ntovlog_query_scheduler_refused_total {}\n\
             # HELP tovlog_query_scheduler_waiting Queries waiting for a slot, by tenant.\n\
             # TYPE tovlog_query_scheduler_waiting gauge",
            self.max_concurrent,
            self.refused.load(std::sync::atomic::Ordering::Relaxed),
        );
        for (tenant, n) in waiting {
            let _ = writeln!(
                out,
                "tovlog_query_scheduler_waiting{{tenant=\"{}\"}} {n}",
                tenant.replace('\\', "\\\\").replace('"', "\\\"")
            );
        }
        out
    }

    /// Queries that may run at once.
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// Wait for a slot for a query of `tenant`, which may run `max_parallelism` queries at
    /// once. Keep the permit while the query runs.
    pub async fn admit(
        self: &Arc<Self>,
        tenant: &str,
        max_parallelism: usize,
    ) -> Result<Permit, Refused> {
        if max_parallelism == 0 {
            return Err(Refused::Disabled);
        }
        let (id, granted) = {
            let mut state = self.state.lock();
            let state = &mut *state;
            let free = state.running < self.max_concurrent;
            let q = match state.tenants.get_mut(tenant) {
                Some(q) => q,
                None => state
                    .tenants
                    .entry(tenant.to_owned())
                    .or_insert(TenantQueue {
                        running: 0,
                        cap: max_parallelism,
                        waiting: VecDeque::new(),
                    }),
            };
            let raised = max_parallelism > q.cap;
            q.cap = max_parallelism;
            if free && q.waiting.is_empty() && q.running < q.cap {
                // Nobody to be fair to: a slot is free and the tenant has nobody waiting.
                q.running += 1;
                state.running += 1;
                return Ok(Permit {
                    scheduler: Arc::clone(self),
                    tenant: tenant.to_owned(),
                });
            }
            if q.waiting.len() >= self.max_outstanding {
                self.refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(Refused::TooManyOutstanding);
            }
            let id = state.next_id;
            state.next_id += 1;
            let (grant, granted) = oneshot::channel();
            q.waiting.push_back(Waiter { id, grant });
            if q.waiting.len() == 1 {
                state.ring.push_back(tenant.to_owned());
            }
            if raised {
                // A runtime override raised the tenant's cap: its waiters may run now.
                self.dispatch(state);
            }
            (id, granted)
        };
        let mut waiting = Waiting {
            scheduler: Arc::clone(self),
            tenant: tenant.to_owned(),
            id,
            admitted: false,
        };
        // The sender lives in the queue until it is used, and only `dispatch` uses it:
        // an error means the scheduler is gone, which an `Arc` held here rules out.
        let _ = granted.await;
        waiting.admitted = true;
        Ok(Permit {
            scheduler: Arc::clone(self),
            tenant: std::mem::take(&mut waiting.tenant),
        })
    }

    /// Queries of `tenant` waiting for a slot.
    pub fn waiting(&self, tenant: &str) -> usize {
        self.state
            .lock()
            .tenants
            .get(tenant)
            .map_or(0, |q| q.waiting.len())
    }

    /// Queries running (all tenants).
    pub fn running(&self) -> usize {
        self.state.lock().running
    }

    /// Give back a slot of `tenant` and hand the free slots on.
    fn release(&self, state: &mut State, tenant: &str) {
        state.running = state.running.saturating_sub(1);
        if let Some(q) = state.tenants.get_mut(tenant) {
            q.running = q.running.saturating_sub(1);
            if q.running == 0 && q.waiting.is_empty() {
                state.tenants.remove(tenant);
            }
        }
        self.dispatch(state);
    }

    /// Hand free slots to the waiting queries, one per tenant in ring order, skipping the
    /// tenants at their cap (they keep waiting until one of their own queries ends).
    fn dispatch(&self, state: &mut State) {
        let State {
            running,
            tenants,
            ring,
            ..
        } = state;
        // Tenants passed over in a row; once every tenant of the ring was, nobody can run.
        let mut passed = 0;
        while *running < self.max_concurrent && passed < ring.len() {
            let Some(tenant) = ring.pop_front() else {
                break;
            };
            let Some(q) = tenants.get_mut(&tenant) else {
                continue;
            };
            if q.running >= q.cap {
                ring.push_back(tenant);
                passed += 1;
                continue;
            }
            let Some(waiter) = q.waiting.pop_front() else {
                continue;
            };
            q.running += 1;
            *running += 1;
            // Counted as running even if the receiver is gone: its `Waiting` guard gives
            // the slot back (under this same lock) when it finds itself out of the queue.
            let _ = waiter.grant.send(());
            if !q.waiting.is_empty() {
                ring.push_back(tenant);
            }
            passed = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Wait until `tenant` has `n` queries waiting (the spawned tasks got to the queue).
    async fn until_waiting(s: &QueryScheduler, tenant: &str, n: usize) -> anyhow::Result<()> {
        for _ in 0..1000 {
            if s.waiting(tenant) == n {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        anyhow::bail!("{tenant} never had {n} waiting")
    }

    /// Queue `name` for `tenant`; when admitted it records its name and ends at once.
    fn queue(
        s: &Arc<QueryScheduler>,
        order: &Arc<Mutex<Vec<String>>>,
        tenant: &str,
        name: &str,
    ) -> tokio::task::JoinHandle<Result<(), Refused>> {
        let (s, order, tenant, name) =
            (s.clone(), order.clone(), tenant.to_owned(), name.to_owned());
        tokio::spawn(async move {
            let _permit = s.admit(&tenant, 32).await?;
            order.lock().push(name);
            Ok(())
        })
    }

    #[tokio::test]
    async fn waiting_tenants_take_turns() -> anyhow::Result<()> {
        let s = QueryScheduler::new(1, 100);
        let order = Arc::new(Mutex::new(Vec::new()));
        let held = s.admit("a", 32).await?;
        let mut tasks = Vec::new();
        for (i, name) in ["a1", "a2", "a3"].iter().enumerate() {
            tasks.push(queue(&s, &order, "a", name));
            until_waiting(&s, "a", i + 1).await?;
        }
        tasks.push(queue(&s, &order, "b", "b1"));
        until_waiting(&s, "b", 1).await?;
        tasks.push(queue(&s, &order, "c", "c1"));
        until_waiting(&s, "c", 1).await?;
        drop(held);
        for t in tasks {
            t.await??;
        }
        assert_eq!(*order.lock(), ["a1", "b1", "c1", "a2", "a3"]);
        assert_eq!(s.running(), 0);
        assert!(
            s.state.lock().tenants.is_empty(),
            "idle tenants are forgotten"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_tenant_runs_at_most_its_parallelism() -> anyhow::Result<()> {
        let s = QueryScheduler::new(4, 100);
        let first = s.admit("a", 1).await?;
        // A slot is free, but `a` is at its cap: its next query waits…
        let s2 = s.clone();
        let second = tokio::spawn(async move { s2.admit("a", 1).await.map(drop) });
        until_waiting(&s, "a", 1).await?;
        // …while another tenant runs at once.
        let other = s.admit("b", 1).await?;
        assert_eq!(s.running(), 2);
        drop(first);
        second.await??;
        drop(other);
        assert_eq!(s.running(), 0);
        Ok(())
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_zero_parallelism_disables() -> anyhow::Result<()> {
        let s = QueryScheduler::new(1, 2);
        let held = s.admit("a", 32).await?;
        let order = Arc::new(Mutex::new(Vec::new()));
        let queued = [queue(&s, &order, "a", "a1"), queue(&s, &order, "a", "a2")];
        until_waiting(&s, "a", 2).await?;
        assert_eq!(
            s.admit("a", 32).await.err(),
            Some(Refused::TooManyOutstanding)
        );
        // Another tenant has its own queue.
        let s2 = s.clone();
        let b = tokio::spawn(async move { s2.admit("b", 32).await.map(drop) });
        until_waiting(&s, "b", 1).await?;
        assert_eq!(s.admit("c", 0).await.err(), Some(Refused::Disabled));
        drop(held);
        for t in queued {
            t.await??;
        }
        b.await??;
        assert_eq!(
            Refused::TooManyOutstanding.to_string(),
            "too many outstanding requests"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_dropped_waiter_leaves_the_queue() -> anyhow::Result<()> {
        let s = QueryScheduler::new(1, 100);
        let held = s.admit("a", 32).await?;
        let s2 = s.clone();
        let gone = tokio::spawn(async move { s2.admit("a", 32).await.map(drop) });
        until_waiting(&s, "a", 1).await?;
        gone.abort();
        until_waiting(&s, "a", 0).await?;
        drop(held);
        assert_eq!(s.running(), 0);
        // The slot is free for the next query at once.
        let again = tokio::time::timeout(Duration::from_secs(5), s.admit("b", 32)).await??;
        drop(again);
        Ok(())
    }

    #[test]
    fn a_slot_handed_to_a_dropped_waiter_is_passed_on() {
        let s = QueryScheduler::new(1, 100);
        let mut state = s.state.lock();
        // One query of `a` running, one waiting whose receiver is already gone, one of `b`.
        state.running = 1;
        let (gone, _) = oneshot::channel();
        let (alive, mut alive_rx) = oneshot::channel();
        state.tenants.insert(
            "a".into(),
            TenantQueue {
                running: 1,
                cap: 32,
                waiting: VecDeque::from([Waiter { id: 1, grant: gone }]),
            },
        );
        state.tenants.insert(
            "b".into(),
            TenantQueue {
                running: 0,
                cap: 32,
                waiting: VecDeque::from([Waiter {
                    id: 2,
                    grant: alive,
                }]),
            },
        );
        state.ring = VecDeque::from(["a".to_owned(), "b".to_owned()]);
        s.release(&mut state, "a");
        // The dead waiter of `a` got the slot; its guard finds itself out of the queue
        // and passes the slot on to `b`.
        assert_eq!(state.running, 1);
        drop(state);
        drop(Waiting {
            scheduler: s.clone(),
            tenant: "a".into(),
            id: 1,
            admitted: false,
        });
        assert_eq!(alive_rx.try_recv(), Ok(()));
        let state = s.state.lock();
        assert_eq!(state.running, 1);
        assert_eq!(state.tenants.get("b").map(|q| q.running), Some(1));
        assert!(!state.tenants.contains_key("a"));
    }
}
