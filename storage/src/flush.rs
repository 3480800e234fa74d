//! Flushing: head → Parquet chunk files per tenant and time window, then label index,
//! manifest, and finally WAL truncation. Also the background task that triggers it.
//!
//! Order of a flush, chosen so a crash at any point loses nothing and doubles nothing:
//! 1. Under the append gate: rotate the WAL (new segment `seq`) and move every tenant's
//!    head to its frozen list. Frozen heads stay visible to queries.
//! 2. Per tenant, per window: encode on a blocking thread, `put` the file
//!    (`<tenant>/<window>/<seq>.parquet`, so a retried flush overwrites, never duplicates).
//! 3. Write the label sets of streams new to the bucket ([`crate::streams_log`]), index
//!    new streams, write the hash chain's entry for the new files ([`crate::chain`]),
//!    write the manifest with `flushed_wal_seq = seq` and the new chain head, then swap the
//!    manifest in and drop the frozen head in one step (no window where rows are seen
//!    twice or not at all).
//! 4. When no tenant holds frozen data any more, delete WAL segments below `seq`.
//!
//! A crash after 3 for some tenants only: replay skips their records below `seq` using the
//! manifest, and replays the others.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};

use crate::chain::{self, ChainEvent, RemovedFile};
use crate::chunk::SortedHead;
use crate::error::{Error, Result};
use crate::head::Head;
use crate::manifest::{self, ChunkMeta, ManifestState};
use crate::{Inner, Tenant};

fn join_err(e: tokio::task::JoinError) -> Error {
    Error::Internal(format!("blocking task failed: {e}"))
}

impl Inner {
    /// Flush everything in the head now. A failure is recorded (see
    /// [`Self::wait_for_head_space`]) and left to the next attempt: the frozen heads stay
    /// in memory and the WAL keeps their rows.
    pub(crate) async fn flush_all(&self) -> Result<()> {
        let result = self.flush_all_once().await;
        match &result {
            Ok(()) => {
                if self.flush_failure.lock().take().is_some() {
                    tracing::info!("head flush succeeded again; the backlog is written");
                }
            }
            Err(e) => {
                self.flush_failures.fetch_add(1, Ordering::Relaxed);
                *self.flush_failure.lock() = Some(e.to_string());
                // Waiting pushes re-check: they are refused now instead of waiting.
                self.head_space.notify_waiters();
            }
        }
        result
    }

    async fn flush_all_once(&self) -> Result<()> {
        let _flushing = self.flush_lock.lock().await;
        let started = Instant::now();
        {
            let _gate = self.gate.write().await;
            // A retry after a failed flush with nothing appended since has nothing to
            // freeze: no new WAL segment for it.
            let appended = self
                .tenants
                .read()
                .values()
                .any(|t| !t.head.read().is_empty());
            if appended {
                let seq = self.wal.rotate().await?;
                for tenant in self.tenants.read().values() {
                    let mut frozen = tenant.frozen.write();
                    let mut head = tenant.head.write();
                    if !head.is_empty() {
                        frozen.push((seq, Arc::new(std::mem::take(&mut *head))));
                    }
                }
            }
        }
        let tenants: Vec<Arc<Tenant>> = self.tenants.read().values().cloned().collect();
        let mut rows = 0u64;
        let mut files = 0u64;
        // Segments below the newest frozen head's number hold only rows now in chunk files.
        let mut written_below = None;
        for tenant in &tenants {
            loop {
                let next = tenant.frozen.read().first().cloned();
                let Some((frozen_seq, head)) = next else {
                    break;
                };
                let (r, f) = self.flush_frozen(tenant, frozen_seq, head).await?;
                rows += r;
                files += f;
                written_below = written_below.max(Some(frozen_seq));
            }
        }
        let Some(seq) = written_below else {
            return Ok(());
        };
        let removed = self.wal.remove_segments_before(seq)?;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            rows,
            files,
            wal_segments_removed = removed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "head flushed"
        );
        Ok(())
    }

    /// Write one frozen head of a tenant and publish it. Returns (rows, files).
    async fn flush_frozen(
        &self,
        tenant: &Arc<Tenant>,
        seq: u64,
        head: Arc<Head>,
    ) -> Result<(u64, u64)> {
        let window_ns = i64::try_from(self.config.chunk.window.0.as_nanos()).unwrap_or(i64::MAX);
        let (sorted, windows) = {
            let head = head.clone();
            tokio::task::spawn_blocking(move || {
                let sorted = Arc::new(SortedHead::new(head));
                let windows = sorted.windows(window_ns);
                (sorted, windows)
            })
            .await
            .map_err(join_err)?
        };
        let mut chunks = Vec::with_capacity(windows.len());
        let mut rows = 0;
        for window in windows {
            let sorted = sorted.clone();
            let chunk_config = self.config.chunk.clone();
            let (window, encoded) = tokio::task::spawn_blocking(move || {
                let encoded = sorted.encode(&window, &chunk_config);
                (window, encoded)
            })
            .await
            .map_err(join_err)?;
            let encoded = encoded?;
            let path = format!(
                "{}/{}/{seq:020}.parquet",
                tenant.dir,
                window.start_ns.div_euclid(1_000_000_000)
            );
            let size = encoded.data.len() as u64;
            let object = ObjectPath::from(path.as_str());
            self.store
                .put(&object, PutPayload::from(encoded.data))
                .await
                .map_err(|e| Error::ObjectStore {
                    path: path.clone(),
                    source: e,
                })?;
            crate::fault::point("flush.after_chunk_put");
            rows += encoded.rows;
            chunks.push(ChunkMeta {
                path,
                size,
                min_ts: encoded.min_ts,
                max_ts: encoded.max_ts,
                rows: encoded.rows,
                streams: encoded.streams,
                compacted: false,
                created_ms: manifest::now_ms(),
                text_index_bytes: None,
                metadata_keys: encoded.metadata_keys,
                sha256: Some(encoded.sha256),
                text_index_sha256: None,
            });
        }
        drop(sorted);

        // Label index first: once the manifest is swapped in, the head no longer answers
        // for these streams.
        let streams: Vec<_> = head
            .streams()
            .map(|(id, s)| (id, s.labels.clone()))
            .collect();
        // The bucket's label objects before both: they must hold every stream a manifest
        // lists (the index is a cache of them, see `streams_log`).
        crate::streams_log::record(self.store.as_ref(), tenant, &streams).await?;
        crate::fault::point("flush.after_streams_log");
        let t = tenant.clone();
        tokio::task::spawn_blocking(move || t.index.add_streams(&streams))
            .await
            .map_err(join_err)??;

        self.ensure_tenant_listed(&tenant.name).await?;
        let _edit = self.manifest_lock.lock().await;
        let mut next = tenant.manifest.read().manifest.clone();
        let files = chunks.len() as u64;
        next.version = manifest::MANIFEST_VERSION;
        next.flushed_wal_seq = next.flushed_wal_seq.max(seq);
        // A retried flush of the same frozen head rewrites the same paths: replace, not add.
        let mut removed = Vec::new();
        next.chunks.retain(|c| {
            let rewritten = chunks.iter().any(|n| n.path == c.path);
            if rewritten {
                removed.extend(chain::chunk_files(c).into_iter().map(|f| RemovedFile {
                    path: f.path,
                    size: f.size,
                    sha256: f.sha256,
                    reason: "flush: rewritten by a retried flush of the same WAL segments".into(),
                }));
            }
            !rewritten
        });
        let added = chunks.iter().flat_map(chain::chunk_files).collect();
        next.chunks.extend(chunks);
        chain::append(
            self.store.as_ref(),
            &tenant.name,
            &mut next,
            ChainEvent::Flush,
            format!("flush: head of WAL segments below {seq}, {rows} rows"),
            added,
            removed,
        )
        .await?;
        crate::fault::point("flush.after_chain");
        manifest::save(self.store.as_ref(), &tenant.name, &next).await?;
        crate::fault::point("flush.after_manifest");
        {
            let mut frozen = tenant.frozen.write();
            let mut state = tenant.manifest.write();
            *state = ManifestState::new(next);
            frozen.retain(|(_, h)| !Arc::ptr_eq(h, &head));
        }
        self.head_bytes
            .fetch_sub(head.bytes() as u64, Ordering::Relaxed);
        self.head_entries
            .fetch_sub(head.entries() as u64, Ordering::Relaxed);
        self.head_space.notify_waiters();
        Ok((rows, files))
    }

    /// Write stall: while the head (active plus frozen, still being written) holds twice
    /// `head.max_bytes`, appends wait for a flush to release memory. Ingest that outruns
    /// chunk encoding would otherwise grow the head without bound; with the stall, memory
    /// stays near `2 × max_bytes` and pushes slow down to the flush rate instead. A push
    /// waits at most `head.stall_timeout`, and not at all while flushes fail: then it is
    /// refused ([`Error::Backlogged`], a retryable 503), and what was acknowledged stays in
    /// the WAL and the head until the store takes it.
    pub(crate) async fn wait_for_head_space(&self) -> Result<()> {
        let limit = self.config.head.max_bytes.0.saturating_mul(2);
        // Taken when the head is first found full: pushes that need not wait read no clock.
        let mut deadline = None;
        loop {
            let released = self.head_space.notified();
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            let held = self.head_bytes.load(Ordering::Relaxed);
            if held < limit {
                return Ok(());
            }
            let mib = held as f64 / (1024.0 * 1024.0);
            if let Some(why) = self.flush_failure.lock().clone() {
                return Err(Error::Backlogged(format!(
                    "the head holds {mib:.1} MiB not yet written to the object store, and writing it fails ({why}); retry later"
                )));
            }
            let deadline =
                *deadline.get_or_insert_with(|| Instant::now() + self.config.head.stall_timeout.0);
            if Instant::now() >= deadline {
                return Err(Error::Backlogged(format!(
                    "the head holds {mib:.1} MiB and flushes fall behind ingest; retry later"
                )));
            }
            self.flush_notify.notify_one();
            // The timeout only guards against a missed wake-up; flushes notify every waiter.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(100), released).await;
        }
    }

    async fn ensure_tenant_listed(&self, name: &str) -> Result<()> {
        let mut listed = self.listed_tenants.lock().await;
        if listed.iter().any(|t| t == name) {
            return Ok(());
        }
        let mut next = listed.clone();
        next.push(name.to_string());
        next.sort();
        manifest::save_tenants(self.store.as_ref(), &next).await?;
        *listed = next;
        Ok(())
    }

    /// Should the head be flushed now?
    pub(crate) fn flush_due(&self) -> bool {
        if self.head_bytes.load(Ordering::Relaxed) >= self.config.head.max_bytes.0 {
            return true;
        }
        let max_age = self.config.head.max_age.0;
        // Frozen heads are left by a failed flush: retried at every check.
        self.tenants.read().values().any(|t| {
            !t.frozen.read().is_empty()
                || t.head
                    .read()
                    .created()
                    .is_some_and(|c| c.elapsed() >= max_age)
        })
    }
}

/// The background flusher: checks the thresholds every `check_interval` and when appends
/// signal a full head. Holds only a weak reference, so dropping the storage stops it.
pub(crate) async fn run_flusher(inner: Weak<Inner>) {
    let (interval, notify) = match inner.upgrade() {
        Some(i) => (i.config.head.check_interval.0, i.flush_notify.clone()),
        None => return,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = notify.notified() => {}
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        if inner.flush_due() {
            if let Err(e) = inner.flush_all().await {
                tracing::error!(error = %e, "background flush failed; will retry");
            }
        }
    }
}
