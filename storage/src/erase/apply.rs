//! The compactor's erasure pass: retention and delete requests applied to the files.
//!
//! Each pass, per tenant:
//! 1. **Expired files** (every row of every stream before its cut-off) leave the manifest
//!    in one edit: a chain entry (event `retention`) removing them, then the manifest
//!    without them and with them as pending deletes (deleted `delete_delay` later, as
//!    compaction's inputs are).
//! 2. **Rewrites**, one file at a time: a file with rows of a due delete request (received,
//!    past its cancel period) not known to be applied to it, or one whose expired rows are
//!    a quarter of its rows or more, is streamed through the compaction merge without those
//!    rows; the outputs are written, then one manifest edit (chain entry with event
//!    `delete` or `retention`, then the manifest) swaps them in, adds each request's
//!    removed lines to `Manifest::deletes` and marks the outputs as free of the due
//!    requests.
//! 3. A due request that no listed file may still hold (and no head) becomes `processed`
//!    with the lines counted in the manifest.
//!
//! Crash safety: a crash before a manifest write leaves unlisted outputs (removed by the
//! orphan sweep) and the old manifest: the file is rewritten again, and its lines are
//! counted then, once. A crash after it leaves the count and the new files together in
//! the manifest; a crash before the `processed` event only delays it to the next pass,
//! which finds nothing left to rewrite and records the count the manifest holds.
//! Rows a tombstone hides stay hidden until `processed` is written, and by then no file
//! holds them: nothing is resurrected.

use std::collections::{BTreeMap, HashMap, HashSet};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::filter::{EraseContext, StreamErase};
use super::log::{within_cancel_period, Tombstone};
use crate::chain::{self, ChainEvent, RemovedFile};
use crate::compact::{self, Input, MergeSettings};
use crate::error::{Error, Result};
use crate::fault;
use crate::manifest::{self, ChunkMeta, Manifest, ManifestState};
use crate::model::StreamId;
use crate::order;
use crate::textindex;
use crate::{Inner, Tenant};

/// A delete request's progress in a tenant's manifest ([`Manifest::deletes`]), written
/// in the same manifest edit as the files it rewrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteProgress {
    /// Lines removed from files so far.
    pub lines_removed: u64,
    /// Listed files known to hold none of its rows (its rewrites' outputs).
    #[serde(default)]
    pub clean: Vec<String>,
}

/// Rows a rewrite leaves out, counted per request.
pub(crate) struct RowErasure {
    streams: HashMap<StreamId, StreamErase>,
    /// Per request index of [`EraseContext::tombstones`]; `usize::MAX` for retention.
    pub(crate) removed: HashMap<usize, u64>,
}

impl RowErasure {
    /// Does the rewrite leave this row out? Counts it.
    #[inline]
    pub(crate) fn drops(&mut self, id: StreamId, ts: i64, line: &str) -> bool {
        let Some(s) = self.streams.get(&id) else {
            return false;
        };
        match s.erased_by(ts, Some(line)) {
            Some(r) => {
                *self.removed.entry(r).or_default() += 1;
                true
            }
            None => false,
        }
    }
}

/// What a pass does to one file.
enum Plan {
    Keep,
    Drop,
    Rewrite(HashMap<StreamId, StreamErase>),
}

/// Figures of one pass.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PassFigures {
    pub(crate) files_dropped: u64,
    pub(crate) files_rewritten: u64,
    pub(crate) processed: u64,
}

/// `manifest.deletes` after `inputs` were replaced by `outputs` without erasing: an
/// output is clean of a request when every input was.
pub(crate) fn carry_clean(manifest: &mut Manifest, inputs: &[&str], outputs: &[&str]) {
    for progress in manifest.deletes.values_mut() {
        let all = inputs.iter().all(|i| progress.clean.iter().any(|c| c == i));
        progress.clean.retain(|c| !inputs.contains(&c.as_str()));
        if all && !inputs.is_empty() {
            progress.clean.extend(outputs.iter().map(|o| o.to_string()));
        }
    }
}

impl Inner {
    /// Apply retention and due delete requests to every tenant's files once.
    pub(crate) async fn erase_pass(&self) -> Result<PassFigures> {
        let mut figures = PassFigures::default();
        let mut names: Vec<String> = self.tenants.read().keys().cloned().collect();
        for t in self.erase.tenants() {
            if !names.contains(&t) {
                names.push(t);
            }
        }
        names.sort();
        for name in names {
            if self.closed.load(std::sync::atomic::Ordering::Acquire) {
                break;
            }
            self.erase_tenant(&name, &mut figures).await?;
        }
        Ok(figures)
    }

    async fn erase_tenant(&self, name: &str, figures: &mut PassFigures) -> Result<()> {
        let now_ms = manifest::now_ms() as i64;
        let period = self.config.compaction.delete_request_cancel_period.0;
        let due: Vec<Tombstone> = self
            .erase
            .tombstones(name)
            .map(|t| {
                t.iter()
                    .filter(|t| !within_cancel_period(t.created_ms, now_ms, period))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let retention = if self.config.compaction.retention_enabled {
            self.erase
                .retention()
                .map(|source| source(name))
                .filter(|p| super::filter::latest_cutoff(p, 0).is_some())
        } else {
            None
        };
        if due.is_empty() && retention.is_none() {
            return Ok(());
        }
        let Some(tenant) = self.tenant(name) else {
            // Requests of a tenant without data: nothing to rewrite.
            for t in &due {
                fault::point("erase.before_processed");
                self.erase
                    .processed(self.store.as_ref(), name, &t.request_id, 0)
                    .await?;
                figures.processed += 1;
            }
            return Ok(());
        };
        // Rows of due requests still in the heads go to files first.
        if due.iter().any(|t| head_holds(&tenant, t)) {
            self.flush_all().await?;
        }
        let ctx = EraseContext {
            tombstones: due,
            retention,
            now_ns: super::filter::now_ns(),
        };
        let received: HashSet<String> = self
            .erase
            .requests(name)
            .into_iter()
            .filter(|r| r.status == super::DeleteStatus::Received)
            .map(|r| r.request_id)
            .collect();

        // 1 and 2: plan every file against one manifest.
        let state = tenant.manifest.read().clone();
        let mut drops: Vec<ChunkMeta> = Vec::new();
        let mut rewrites: Vec<(ChunkMeta, HashMap<StreamId, StreamErase>)> = Vec::new();
        for c in &state.manifest.chunks {
            match plan_file(&tenant, &ctx, &state.manifest, c) {
                Plan::Keep => {}
                Plan::Drop => drops.push(c.clone()),
                Plan::Rewrite(streams) => rewrites.push((c.clone(), streams)),
            }
        }
        if !drops.is_empty() {
            self.drop_files(&tenant, &drops, &received).await?;
            figures.files_dropped += drops.len() as u64;
        }
        for (c, streams) in rewrites {
            if self.closed.load(std::sync::atomic::Ordering::Acquire) {
                return Ok(());
            }
            if self
                .rewrite_file(&tenant, &ctx, &received, c, streams)
                .await?
            {
                figures.files_rewritten += 1;
            }
        }

        // 3: requests no file holds any more.
        let state = tenant.manifest.read().clone();
        for t in &ctx.tombstones {
            if head_holds(&tenant, t) {
                continue;
            }
            let pending = state
                .manifest
                .chunks
                .iter()
                .any(|c| file_needs(&tenant, &state.manifest, c, t));
            if pending {
                continue;
            }
            let lines = state
                .manifest
                .deletes
                .get(&t.request_id)
                .map_or(0, |p| p.lines_removed);
            fault::point("erase.before_processed");
            self.erase
                .processed(self.store.as_ref(), name, &t.request_id, lines)
                .await?;
            figures.processed += 1;
            tracing::info!(tenant = name, request_id = %t.request_id, lines, "delete request processed");
        }
        Ok(())
    }

    /// Unlist files whose every row is expired.
    async fn drop_files(
        &self,
        tenant: &Tenant,
        drops: &[ChunkMeta],
        received: &HashSet<String>,
    ) -> Result<()> {
        let delete_after = manifest::now_ms()
            .saturating_add(self.config.compaction.delete_delay.0.as_millis() as u64);
        let _edit = self.manifest_lock.lock().await;
        let mut next = tenant.manifest.read().manifest.clone();
        let paths: HashSet<&str> = drops.iter().map(|c| c.path.as_str()).collect();
        let gone: Vec<ChunkMeta> = next
            .chunks
            .iter()
            .filter(|c| paths.contains(c.path.as_str()))
            .cloned()
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        let reason = "retention: every row is past its retention period".to_string();
        let removed = gone
            .iter()
            .flat_map(chain::chunk_files)
            .map(|f| RemovedFile {
                path: f.path,
                size: f.size,
                sha256: f.sha256,
                reason: reason.clone(),
            })
            .collect();
        next.chunks.retain(|c| !paths.contains(c.path.as_str()));
        next.version = manifest::MANIFEST_VERSION;
        let gone_paths: Vec<&str> = gone.iter().map(|c| c.path.as_str()).collect();
        carry_clean(&mut next, &gone_paths, &[]);
        next.deletes.retain(|id, _| received.contains(id));
        chain::append(
            self.store.as_ref(),
            &tenant.name,
            &mut next,
            ChainEvent::Retention,
            format!("{reason} ({} files)", gone.len()),
            Vec::new(),
            removed,
        )
        .await?;
        fault::point("erase.after_drop_chain");
        for c in &gone {
            next.delete_later(c, delete_after);
        }
        manifest::save(self.store.as_ref(), &tenant.name, &next).await?;
        *tenant.manifest.write() = ManifestState::new(next);
        fault::point("erase.after_drop_manifest");
        tracing::info!(tenant = %tenant.name, files = gone.len(), "expired files unlisted");
        Ok(())
    }

    /// Rewrite one file without its erased rows. Returns `false` when the file was no
    /// longer listed.
    async fn rewrite_file(
        &self,
        tenant: &std::sync::Arc<Tenant>,
        ctx: &EraseContext,
        received: &HashSet<String>,
        c: ChunkMeta,
        streams: HashMap<StreamId, StreamErase>,
    ) -> Result<bool> {
        let started = std::time::Instant::now();
        let data = {
            let got = self
                .store
                .get(&ObjectPath::from(c.path.as_str()))
                .await
                .map_err(|e| compact::os_err(&c.path, e))?;
            got.bytes().await.map_err(|e| compact::os_err(&c.path, e))?
        };
        // An altered file is quarantined, not rewritten under a fresh hash.
        let Some(data) = self.checked_bytes(tenant, &c, data).await? else {
            return Ok(false);
        };
        let places = order::places(c.streams.iter().map(|s| (s.id, tenant.index.get(s.id))));
        let input = Input::new(data, &c, &places)?;
        let window_start_ns = c
            .window_dir()
            .rsplit('/')
            .next()
            .and_then(|s| s.parse::<i64>().ok())
            .map_or(c.min_ts, |s| s.saturating_mul(1_000_000_000));
        let settings = MergeSettings {
            row_group_rows: self.config.chunk.row_group_rows,
            zstd_level: self.config.compaction.zstd_level,
            line_page_bytes: self.config.compaction.line_page_bytes.0 as usize,
            max_file_bytes: self.config.compaction.max_file_bytes.0 as usize,
            window_start_ns,
            line_flags: self.line_flags.clone(),
            fields: self.fields.clone(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("tovlog-erase".into())
            .spawn(move || {
                compact::lower_thread_priority();
                let mut erasure = RowErasure {
                    streams,
                    removed: HashMap::new(),
                };
                let merged =
                    compact::merge_erasing(vec![input], &places, &settings, Some(&mut erasure))
                        .map(|(outputs, _)| (outputs, erasure.removed));
                let _ = tx.send(merged);
                compact::release_free_memory();
            })
            .map_err(|e| Error::Internal(format!("cannot start erase thread: {e}")))?;
        let (outputs, removed) = rx
            .await
            .map_err(|_| Error::Internal("erase thread ended without a result".into()))??;

        let stamp = manifest::now_ms();
        let dir = c.window_dir().to_string();
        let mut metas = Vec::with_capacity(outputs.len());
        for (n, out) in outputs.into_iter().enumerate() {
            let path = format!("{dir}/e{stamp:013}-{n:03}.parquet");
            let mut meta = out.meta;
            meta.path = path.clone();
            meta.size = out.data.len() as u64;
            meta.created_ms = stamp;
            meta.compacted = c.compacted;
            meta.text_index_bytes = Some(out.text_index.len() as u64);
            let index = textindex::index_path(&path);
            self.store
                .put(
                    &ObjectPath::from(index.as_str()),
                    PutPayload::from(out.text_index),
                )
                .await
                .map_err(|e| compact::os_err(&index, e))?;
            self.store
                .put(&ObjectPath::from(path.as_str()), PutPayload::from(out.data))
                .await
                .map_err(|e| compact::os_err(&path, e))?;
            metas.push(meta);
        }
        fault::point("erase.after_rewrite_write");

        let expired = removed.get(&usize::MAX).copied().unwrap_or(0);
        let mut per_request: BTreeMap<&str, u64> = BTreeMap::new();
        for (&r, &n) in &removed {
            if let Some(t) = ctx.tombstones.get(r) {
                *per_request.entry(t.request_id.as_str()).or_default() += n;
            }
        }
        let mut parts: Vec<String> = per_request
            .iter()
            .map(|(id, n)| format!("delete request {id}: {n} lines"))
            .collect();
        if expired > 0 {
            parts.push(format!("retention: {expired} rows expired"));
        }
        if parts.is_empty() {
            parts.push("no rows of the due requests".into());
        }
        let event = if ctx.tombstones.is_empty() || (per_request.is_empty() && expired > 0) {
            ChainEvent::Retention
        } else {
            ChainEvent::Delete
        };
        let reason = format!(
            "{event}: rewritten into [{}] ({})",
            metas
                .iter()
                .map(|m| m.path.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            parts.join(", ")
        );

        let delete_after = manifest::now_ms()
            .saturating_add(self.config.compaction.delete_delay.0.as_millis() as u64);
        {
            let _edit = self.manifest_lock.lock().await;
            let mut next = tenant.manifest.read().manifest.clone();
            if !next.chunks.iter().any(|x| x.path == c.path) {
                for m in &metas {
                    for p in [m.path.clone(), textindex::index_path(&m.path)] {
                        let _ = self.store.delete(&ObjectPath::from(p.as_str())).await;
                    }
                }
                tracing::warn!(file = %c.path, "file replaced during its rewrite; skipped");
                return Ok(false);
            }
            next.version = manifest::MANIFEST_VERSION;
            let removed_files = chain::chunk_files(&c)
                .into_iter()
                .map(|f| RemovedFile {
                    path: f.path,
                    size: f.size,
                    sha256: f.sha256,
                    reason: reason.clone(),
                })
                .collect();
            let added = metas.iter().flat_map(chain::chunk_files).collect();
            let outputs: Vec<&str> = metas.iter().map(|m| m.path.as_str()).collect();
            // Outputs hold no row of the due requests; the input's marks go with it.
            for progress in next.deletes.values_mut() {
                let was_clean = progress.clean.contains(&c.path);
                progress.clean.retain(|p| *p != c.path);
                if was_clean {
                    progress.clean.extend(outputs.iter().map(|o| o.to_string()));
                }
            }
            for t in &ctx.tombstones {
                let progress = next.deletes.entry(t.request_id.clone()).or_default();
                progress.lines_removed +=
                    per_request.get(t.request_id.as_str()).copied().unwrap_or(0);
                for o in &outputs {
                    if !progress.clean.iter().any(|p| p == o) {
                        progress.clean.push(o.to_string());
                    }
                }
            }
            next.deletes.retain(|id, _| received.contains(id));
            next.chunks.retain(|x| x.path != c.path);
            next.chunks.extend(metas.iter().cloned());
            chain::append(
                self.store.as_ref(),
                &tenant.name,
                &mut next,
                event,
                reason,
                added,
                removed_files,
            )
            .await?;
            fault::point("erase.after_rewrite_chain");
            next.delete_later(&c, delete_after);
            manifest::save(self.store.as_ref(), &tenant.name, &next).await?;
            *tenant.manifest.write() = ManifestState::new(next);
        }
        fault::point("erase.after_rewrite_manifest");
        tracing::info!(
            tenant = %tenant.name,
            file = %c.path,
            bytes_in = c.size,
            bytes_out = metas.iter().map(|m| m.size).sum::<u64>(),
            expired,
            deleted = per_request.values().sum::<u64>(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "file rewritten for retention and deletes"
        );
        Ok(true)
    }
}

/// Does a head of the tenant hold rows `t` may delete?
fn head_holds(tenant: &Tenant, t: &Tombstone) -> bool {
    let holds = |h: &crate::head::Head| {
        h.streams().any(|(_, s)| {
            s.time_range()
                .is_some_and(|(lo, hi)| lo <= t.end_ns && hi >= t.start_ns)
                && t.matchers.iter().all(|m| m.matches_labels(&s.labels))
        })
    };
    if holds(&tenant.head.read()) {
        return true;
    }
    let frozen = tenant.frozen.read();
    frozen.iter().any(|(_, h)| holds(h))
}

/// May file `c` hold rows of due request `t` that are not removed yet?
fn file_needs(tenant: &Tenant, m: &Manifest, c: &ChunkMeta, t: &Tombstone) -> bool {
    if c.min_ts > t.end_ns || c.max_ts < t.start_ns {
        return false;
    }
    if m.deletes
        .get(&t.request_id)
        .is_some_and(|p| p.clean.contains(&c.path))
    {
        return false;
    }
    c.streams.iter().any(|s| {
        s.min_ts <= t.end_ns
            && s.max_ts >= t.start_ns
            && tenant
                .labels_of(s.id)
                .is_some_and(|l| t.matchers.iter().all(|m| m.matches_labels(&l)))
    })
}

/// What this pass does to file `c`.
fn plan_file(tenant: &Tenant, ctx: &EraseContext, m: &Manifest, c: &ChunkMeta) -> Plan {
    let mut streams: HashMap<StreamId, StreamErase> = HashMap::new();
    let mut all_expired = !c.streams.is_empty();
    let mut expired_rows = 0f64;
    let mut delete_rows = false;
    for s in &c.streams {
        let Some(labels) = tenant.labels_of(s.id) else {
            // Unknown labels (never expected): nothing of it is erased.
            all_expired = false;
            continue;
        };
        let Some(mut e) = ctx.for_stream(&labels) else {
            all_expired = false;
            continue;
        };
        // Requests already applied to this file are left out.
        e.cuts.retain(|cut| {
            let id = &ctx.tombstones[cut.request].request_id;
            !m.deletes.get(id).is_some_and(|p| p.clean.contains(&c.path))
        });
        if s.max_ts >= e.cutoff {
            all_expired = false;
        }
        if s.min_ts < e.cutoff {
            // The share of its rows before the cut-off, as if spread evenly.
            expired_rows += s.rows as f64 * s.share_in(i64::MIN, e.cutoff);
        }
        if e.cuts
            .iter()
            .any(|cut| cut.start_ns <= s.max_ts && cut.end_ns >= s.min_ts)
        {
            delete_rows = true;
        }
        if e.touches(s.min_ts, s.max_ts) {
            streams.insert(s.id, e);
        }
    }
    if all_expired {
        return Plan::Drop;
    }
    if delete_rows || (expired_rows > 0.0 && expired_rows * 4.0 >= c.rows as f64) {
        return Plan::Rewrite(streams);
    }
    Plan::Keep
}
