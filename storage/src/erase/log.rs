//! The delete request log: one immutable JSON object per event, under the tenant's
//! directory, folded into each request's state at open and after every event.
//!
//! ```text
//! <tenant>/deletes/<request id>/received.json    {version, event:"received", tenant, request_id,
//!                                                  query, start_ns, end_ns, created_ms, requested_by}
//! <tenant>/deletes/<request id>/cancelled.json   {version, event:"cancelled", request_id, time_ms}
//! <tenant>/deletes/<request id>/processed.json   {version, event:"processed", request_id, time_ms,
//!                                                  lines_removed}
//! ```
//!
//! Nothing deletes these objects: not a delete (it rewrites chunk files only), not the
//! orphan sweep (it removes only `.parquet`/`.tri` objects of window directories), not
//! retention. A request is `received` until one of the two later events exists; a second
//! copy of an event (a retried write) changes nothing, the first one read wins.

use std::collections::HashMap;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    CompiledDelete, DeleteCompiler, DeleteRequest, DeleteStatus, LineMatch, RetentionSource,
};
use crate::error::{Error, Result};
use crate::manifest::{self, tenant_dir};
use crate::model::Matcher;

/// Version of the event objects.
const EVENT_VERSION: u32 = 1;

/// Directory of a tenant's delete events, below its tenant directory.
pub(crate) const DELETES_DIR: &str = "deletes";

/// One stored event.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    version: u32,
    #[serde(flatten)]
    event: Event,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event {
    Received {
        tenant: String,
        request_id: String,
        query: String,
        start_ns: i64,
        end_ns: i64,
        created_ms: i64,
        requested_by: String,
    },
    Cancelled {
        request_id: String,
        time_ms: i64,
    },
    Processed {
        request_id: String,
        time_ms: i64,
        lines_removed: u64,
    },
}

impl Event {
    fn kind(&self) -> &'static str {
        match self {
            Event::Received { .. } => "received",
            Event::Cancelled { .. } => "cancelled",
            Event::Processed { .. } => "processed",
        }
    }

    fn request_id(&self) -> &str {
        match self {
            Event::Received { request_id, .. }
            | Event::Cancelled { request_id, .. }
            | Event::Processed { request_id, .. } => request_id,
        }
    }
}

fn event_path(tenant: &str, request_id: &str, kind: &str) -> ObjectPath {
    ObjectPath::from(format!(
        "{}/{DELETES_DIR}/{request_id}/{kind}.json",
        tenant_dir(tenant)
    ))
}

fn os_err(path: &str, source: object_store::Error) -> Error {
    Error::ObjectStore {
        path: path.to_string(),
        source,
    }
}

/// A received (not cancelled, not processed) delete request, compiled: what queries
/// filter out.
#[derive(Clone)]
pub(crate) struct Tombstone {
    pub(crate) request_id: String,
    pub(crate) created_ms: i64,
    pub(crate) matchers: Vec<Matcher>,
    pub(crate) line: Option<LineMatch>,
    /// Literals every line `line` deletes contains (at least 3 bytes each).
    pub(crate) needles: Vec<crate::textindex::TextNeedle>,
    /// Inclusive bounds, ns.
    pub(crate) start_ns: i64,
    pub(crate) end_ns: i64,
}

impl Tombstone {
    /// Does its time range meet `[start, end)`?
    pub(crate) fn overlaps(&self, start: i64, end: i64) -> bool {
        self.start_ns < end && self.end_ns >= start
    }
}

/// One tenant's requests.
#[derive(Default)]
struct LogState {
    /// Oldest first.
    requests: Vec<DeleteRequest>,
    compiled: HashMap<String, CompiledDelete>,
    tombstones: Arc<[Tombstone]>,
    generation: u64,
}

impl LogState {
    /// Fold one event in. Returns whether it changed anything.
    fn apply(&mut self, event: Event) -> bool {
        match event {
            Event::Received {
                request_id,
                query,
                start_ns,
                end_ns,
                created_ms,
                requested_by,
                ..
            } => {
                if self.requests.iter().any(|r| r.request_id == request_id) {
                    return false;
                }
                self.requests.push(DeleteRequest {
                    request_id,
                    query,
                    start_ns,
                    end_ns,
                    created_ms,
                    requested_by,
                    status: DeleteStatus::Received,
                    lines_removed: None,
                    finished_ms: None,
                });
                true
            }
            Event::Cancelled {
                request_id,
                time_ms,
            } => match self
                .requests
                .iter_mut()
                .find(|r| r.request_id == request_id)
            {
                Some(r) if r.status == DeleteStatus::Received => {
                    r.status = DeleteStatus::Cancelled;
                    r.finished_ms = Some(time_ms);
                    true
                }
                _ => false,
            },
            Event::Processed {
                request_id,
                time_ms,
                lines_removed,
            } => match self
                .requests
                .iter_mut()
                .find(|r| r.request_id == request_id)
            {
                Some(r) if r.status == DeleteStatus::Received => {
                    r.status = DeleteStatus::Processed;
                    r.lines_removed = Some(lines_removed);
                    r.finished_ms = Some(time_ms);
                    true
                }
                _ => false,
            },
        }
    }

    /// Recompile what is missing and rebuild the tombstones; bump the generation.
    fn refresh(&mut self, tenant: &str, compiler: Option<&DeleteCompiler>) {
        let mut tombstones = Vec::new();
        for r in &self.requests {
            if r.status != DeleteStatus::Received {
                continue;
            }
            if !self.compiled.contains_key(&r.request_id) {
                let Some(compiler) = compiler else {
                    continue;
                };
                match compiler(&r.query) {
                    Ok(c) => {
                        self.compiled.insert(r.request_id.clone(), c);
                    }
                    Err(e) => {
                        tracing::error!(
                            tenant,
                            request_id = %r.request_id,
                            query = %r.query,
                            error = %e,
                            "a stored delete request no longer compiles; it is not applied"
                        );
                        continue;
                    }
                }
            }
            if let Some(c) = self.compiled.get(&r.request_id) {
                tombstones.push(Tombstone {
                    request_id: r.request_id.clone(),
                    created_ms: r.created_ms,
                    matchers: c.matchers.clone(),
                    line: c.line.clone(),
                    needles: c
                        .needles
                        .iter()
                        .filter(|n| n.len() >= 3)
                        .map(|n| crate::textindex::TextNeedle::literal(n.clone()))
                        .collect(),
                    start_ns: r.start_ns,
                    end_ns: r.end_ns,
                });
            }
        }
        self.compiled.retain(|id, _| {
            self.requests
                .iter()
                .any(|r| &r.request_id == id && r.status == DeleteStatus::Received)
        });
        self.tombstones = tombstones.into();
        // Every event adds one; the time keeps numbers of different runs apart.
        let events: u64 = self
            .requests
            .iter()
            .map(|r| 1 + u64::from(r.finished_ms.is_some()))
            .sum();
        let last = self
            .requests
            .iter()
            .flat_map(|r| [r.created_ms, r.finished_ms.unwrap_or(0)])
            .max()
            .unwrap_or(0);
        self.generation = (last.max(0) as u64)
            .wrapping_mul(1000)
            .wrapping_add(events % 1000);
    }
}

/// One tenant's log: events are written one at a time.
#[derive(Default)]
struct TenantLog {
    write: tokio::sync::Mutex<()>,
    state: RwLock<LogState>,
}

/// The storage's erasure state: the delete compiler, the retention source and every
/// tenant's delete requests.
#[derive(Default)]
pub(crate) struct Eraser {
    compiler: RwLock<Option<DeleteCompiler>>,
    retention: RwLock<Option<RetentionSource>>,
    tenants: RwLock<HashMap<String, Arc<TenantLog>>>,
    /// Event objects already read by [`Eraser::load`] (a replica reads only new ones).
    loaded: parking_lot::Mutex<std::collections::HashSet<String>>,
    /// When the running compactor last swept orphans, ms since the epoch.
    last_sweep_ms: std::sync::atomic::AtomicU64,
}

impl Eraser {
    /// Is an orphan sweep due (none in the last `interval`)? Claims it when so.
    pub(crate) fn sweep_due(&self, interval: std::time::Duration) -> bool {
        use std::sync::atomic::Ordering;
        let now = manifest::now_ms();
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < interval.as_millis() as u64 {
            return false;
        }
        self.last_sweep_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    fn log(&self, tenant: &str) -> Option<Arc<TenantLog>> {
        self.tenants.read().get(tenant).cloned()
    }

    fn log_or_create(&self, tenant: &str) -> Arc<TenantLog> {
        if let Some(l) = self.log(tenant) {
            return l;
        }
        self.tenants
            .write()
            .entry(tenant.to_string())
            .or_default()
            .clone()
    }

    pub(crate) fn set_compiler(&self, compiler: DeleteCompiler) {
        *self.compiler.write() = Some(compiler.clone());
        let logs: Vec<(String, Arc<TenantLog>)> = self
            .tenants
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, log) in logs {
            log.state.write().refresh(&name, Some(&compiler));
        }
    }

    pub(crate) fn set_retention(&self, source: RetentionSource) {
        *self.retention.write() = Some(source);
    }

    pub(crate) fn retention(&self) -> Option<RetentionSource> {
        self.retention.read().clone()
    }

    fn compiler(&self) -> Option<DeleteCompiler> {
        self.compiler.read().clone()
    }

    /// The tenant's pending tombstones; `None` when it has none (the common case).
    pub(crate) fn tombstones(&self, tenant: &str) -> Option<Arc<[Tombstone]>> {
        let log = self.log(tenant)?;
        let state = log.state.read();
        (!state.tombstones.is_empty()).then(|| state.tombstones.clone())
    }

    /// Tenants with delete requests.
    pub(crate) fn tenants(&self) -> Vec<String> {
        self.tenants.read().keys().cloned().collect()
    }

    pub(crate) fn requests(&self, tenant: &str) -> Vec<DeleteRequest> {
        self.log(tenant)
            .map(|l| l.state.read().requests.clone())
            .unwrap_or_default()
    }

    pub(crate) fn generation(&self, tenant: &str) -> u64 {
        self.log(tenant).map_or(0, |l| l.state.read().generation)
    }

    /// Read every tenant's events from the store not read before: all of them at open,
    /// and on a read replica at every poll, so the writer's new requests, cancellations
    /// and completions apply to the replica's answers within a poll interval.
    pub(crate) async fn load(&self, store: &dyn ObjectStore) -> Result<usize> {
        let top = store
            .list_with_delimiter(None)
            .await
            .map_err(|e| os_err("", e))?;
        let mut loaded = 0;
        for dir in top.common_prefixes {
            let prefix = ObjectPath::from(format!("{dir}/{DELETES_DIR}"));
            let objects: Vec<_> = store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(|e| os_err(prefix.as_ref(), e))?;
            let new: Vec<_> = {
                let seen = self.loaded.lock();
                objects
                    .into_iter()
                    .filter(|o| {
                        let path = o.location.as_ref();
                        path.ends_with(".json") && !seen.contains(path)
                    })
                    .collect()
            };
            if new.is_empty() {
                continue;
            }
            let mut events = Vec::with_capacity(new.len());
            let mut paths = Vec::with_capacity(new.len());
            for o in new {
                let path = o.location.to_string();
                let got = store.get(&o.location).await.map_err(|e| os_err(&path, e))?;
                let bytes = got.bytes().await.map_err(|e| os_err(&path, e))?;
                let record: Record =
                    serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                        path: path.clone(),
                        detail: e.to_string(),
                    })?;
                events.push(record.event);
                paths.push(path);
            }
            // Received first (in creation order), then the later events.
            events.sort_by_key(|e| match e {
                Event::Received { created_ms, .. } => (0, *created_ms),
                Event::Cancelled { time_ms, .. } | Event::Processed { time_ms, .. } => {
                    (1, *time_ms)
                }
            });
            // The tenant: named by a request's `received` event, read now or before.
            let tenant = events
                .iter()
                .find_map(|e| match e {
                    Event::Received { tenant, .. } => Some(tenant.clone()),
                    _ => None,
                })
                .or_else(|| {
                    self.tenants
                        .read()
                        .keys()
                        .find(|t| tenant_dir(t) == dir.as_ref())
                        .cloned()
                });
            let Some(tenant) = tenant else {
                continue;
            };
            if tenant_dir(&tenant) != dir.as_ref() {
                return Err(Error::Corrupt {
                    path: prefix.to_string(),
                    detail: format!(
                        "delete request of tenant {tenant:?} in another tenant's directory"
                    ),
                });
            }
            let log = self.log_or_create(&tenant);
            let mut state = log.state.write();
            for e in events {
                loaded += usize::from(state.apply(e));
            }
            state
                .requests
                .sort_by(|a, b| (a.created_ms, &a.request_id).cmp(&(b.created_ms, &b.request_id)));
            state.refresh(&tenant, self.compiler().as_ref());
            self.loaded.lock().extend(paths);
        }
        Ok(loaded)
    }

    /// Write `event` and fold it in.
    async fn record(
        &self,
        store: &dyn ObjectStore,
        tenant: &str,
        log: &TenantLog,
        event: Event,
    ) -> Result<()> {
        let path = event_path(tenant, event.request_id(), event.kind());
        let body = serde_json::to_vec_pretty(&Record {
            version: EVENT_VERSION,
            event: event.clone(),
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
        store
            .put(&path, PutPayload::from(body))
            .await
            .map_err(|e| os_err(path.as_ref(), e))?;
        let mut state = log.state.write();
        state.apply(event);
        state.refresh(tenant, self.compiler().as_ref());
        Ok(())
    }

    /// Record a new request; the tombstone is in place when this returns.
    pub(crate) async fn add(
        &self,
        store: &dyn ObjectStore,
        tenant: &str,
        query: &str,
        start_ns: i64,
        end_ns: i64,
        requested_by: &str,
    ) -> Result<DeleteRequest> {
        let compiler = self.compiler().ok_or_else(|| {
            Error::Internal("delete requests need a query compiler, and none is set".into())
        })?;
        let compiled = compiler(query).map_err(Error::InvalidRequest)?;
        if compiled.matchers.is_empty() {
            return Err(Error::InvalidRequest(
                "a delete query needs a stream selector with at least one matcher".into(),
            ));
        }
        if start_ns > end_ns {
            return Err(Error::InvalidRequest(format!(
                "the delete range is empty: start {start_ns} is after end {end_ns}"
            )));
        }
        let log = self.log_or_create(tenant);
        let _write = log.write.lock().await;
        let created_ms = manifest::now_ms() as i64;
        let mut attempt = 0u32;
        let request_id = loop {
            let mut h = Sha256::new();
            h.update(tenant.as_bytes());
            h.update([0]);
            h.update(query.as_bytes());
            h.update(start_ns.to_le_bytes());
            h.update(end_ns.to_le_bytes());
            h.update(created_ms.to_le_bytes());
            h.update(attempt.to_le_bytes());
            let id: String = h.finalize()[..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let taken = log.state.read().requests.iter().any(|r| r.request_id == id);
            if !taken {
                break id;
            }
            attempt += 1;
        };
        self.record(
            store,
            tenant,
            &log,
            Event::Received {
                tenant: tenant.to_string(),
                request_id: request_id.clone(),
                query: query.to_string(),
                start_ns,
                end_ns,
                created_ms,
                requested_by: requested_by.to_string(),
            },
        )
        .await?;
        let request = log
            .state
            .read()
            .requests
            .iter()
            .find(|r| r.request_id == request_id)
            .cloned();
        request.ok_or_else(|| Error::Internal("a recorded delete request vanished".into()))
    }

    /// Cancel a request received less than `period` ago.
    pub(crate) async fn cancel(
        &self,
        store: &dyn ObjectStore,
        tenant: &str,
        request_id: &str,
        period: std::time::Duration,
    ) -> Result<super::CancelOutcome> {
        use super::CancelOutcome;
        let Some(log) = self.log(tenant) else {
            return Ok(CancelOutcome::NotFound);
        };
        let _write = log.write.lock().await;
        let current = log
            .state
            .read()
            .requests
            .iter()
            .find(|r| r.request_id == request_id)
            .cloned();
        let Some(r) = current else {
            return Ok(CancelOutcome::NotFound);
        };
        match r.status {
            DeleteStatus::Cancelled => return Ok(CancelOutcome::Cancelled),
            DeleteStatus::Processed => return Ok(CancelOutcome::TooLate),
            DeleteStatus::Received => {}
        }
        let now = manifest::now_ms() as i64;
        if !within_cancel_period(r.created_ms, now, period) {
            return Ok(CancelOutcome::TooLate);
        }
        self.record(
            store,
            tenant,
            &log,
            Event::Cancelled {
                request_id: request_id.to_string(),
                time_ms: now,
            },
        )
        .await?;
        Ok(CancelOutcome::Cancelled)
    }

    /// Record that the compactor removed the request's rows from every file.
    pub(crate) async fn processed(
        &self,
        store: &dyn ObjectStore,
        tenant: &str,
        request_id: &str,
        lines_removed: u64,
    ) -> Result<()> {
        let Some(log) = self.log(tenant) else {
            return Ok(());
        };
        let _write = log.write.lock().await;
        let received = log
            .state
            .read()
            .requests
            .iter()
            .any(|r| r.request_id == request_id && r.status == DeleteStatus::Received);
        if !received {
            return Ok(());
        }
        self.record(
            store,
            tenant,
            &log,
            Event::Processed {
                request_id: request_id.to_string(),
                time_ms: manifest::now_ms() as i64,
                lines_removed,
            },
        )
        .await
    }
}

/// Can a request created at `created_ms` still be cancelled at `now_ms`? The compactor
/// applies a request only once this is false, so the two never disagree.
pub(crate) fn within_cancel_period(
    created_ms: i64,
    now_ms: i64,
    period: std::time::Duration,
) -> bool {
    let period_ms = i64::try_from(period.as_millis()).unwrap_or(i64::MAX);
    now_ms < created_ms.saturating_add(period_ms)
}
