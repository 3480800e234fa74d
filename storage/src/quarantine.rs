//! Damaged files: found by their SHA-256, taken out of the listing, kept for inspection,
//! reported.
//!
//! Every listed chunk file and block index carries the SHA-256 of the bytes written
//! ([`crate::chain`]). Parquet pages carry no checksum of their own as parquet-rs writes
//! them, and hashing whole files on every read would cost more than the read, so a file is
//! checked when something suggests damage, and whenever its bytes are in memory anyway:
//!
//! - a **query** that fails while reading chunk files asks [`crate::Storage::check_chunks`]
//!   to hash the files it read (each at most once per process while it matches);
//! - the **compactor** and the **delete rewrite** hash every input they read whole;
//! - a **block index** is hashed each time it is loaded ([`crate::scan::TextIndexCache`]);
//!   a damaged one only costs pruning (the file is read whole), and the compactor's next
//!   pass unlists it.
//!
//! A chunk file whose bytes differ from its hash, or that is missing, is **quarantined**:
//! its bytes are copied to `<tenant>/quarantine/<window>/<name>` (outside the window
//! directories, so the orphan sweep never takes them), its entry moves from the manifest's
//! `chunks` to `quarantined` with the reason, the hash chain records the removal (event
//! `quarantine`), and the original object goes with the next due deletions. Scans then
//! read everything else, and every scan over a quarantined file's streams and times
//! reports it ([`Skipped`]), which the query engine turns into a response warning. An
//! error log line names the file, and `/metrics` counts quarantined files.
//!
//! A read replica cannot edit the bucket: it leaves the damaged file out of its own scans
//! (and reports it the same way) until the writer quarantines it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

use crate::chain::{self, ChainEvent, RemovedFile};
use crate::error::{Error, Result};
use crate::manifest::{self, ChunkMeta, ManifestState, PendingDelete, Quarantined};
use crate::model::StreamId;
use crate::{textindex, Inner, Tenant};

/// A quarantined chunk file a scan would have read: its rows of the scan's streams in the
/// scan's range are missing from the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Object path the file was listed under.
    pub path: String,
    /// Smallest and largest timestamp of the file, ns.
    pub min_ts: i64,
    /// See `min_ts`.
    pub max_ts: i64,
    /// Rows of the scan's streams in the file (whole streams, as listed).
    pub rows: u64,
    /// Why it was quarantined.
    pub reason: String,
}

/// Process-wide state of damage checks.
#[derive(Default)]
pub(crate) struct QuarantineState {
    /// Listed chunk files hashed in this process whose bytes matched (files never change
    /// under their path, so once is enough).
    verified: parking_lot::Mutex<HashSet<String>>,
    /// Read-only role: files found damaged here, per tenant, left out of scans.
    unreadable: parking_lot::RwLock<HashMap<String, Vec<Quarantined>>>,
    /// Chunk files quarantined (or left out, on a replica) by this process.
    pub(crate) files: AtomicU64,
}

impl QuarantineState {
    /// Files a replica found damaged in `tenant` (empty on a writer).
    pub(crate) fn unreadable(&self, tenant: &str) -> Vec<Quarantined> {
        self.unreadable
            .read()
            .get(tenant)
            .cloned()
            .unwrap_or_default()
    }
}

/// The entries among `quarantined` holding rows of `streams` (sorted) in `[start, end)`.
pub(crate) fn skipped_in<'a>(
    quarantined: impl IntoIterator<Item = &'a Quarantined>,
    streams: &[StreamId],
    start: i64,
    end: i64,
) -> Vec<Skipped> {
    let mut out = Vec::new();
    for q in quarantined {
        let c = &q.chunk;
        let mut rows = 0u64;
        c.for_each_overlapping(streams, start, end, |s| rows += s.rows);
        if rows > 0 && c.min_ts < end && c.max_ts >= start {
            out.push(Skipped {
                path: c.path.clone(),
                min_ts: c.min_ts,
                max_ts: c.max_ts,
                rows,
                reason: q.reason.clone(),
            });
        }
    }
    out
}

/// What is wrong with `data` read for `c`, if anything: its size or SHA-256 differs from
/// the listing. Files listed without a hash (before a chain's genesis) pass.
pub(crate) fn damage(c: &ChunkMeta, size: u64, sha256: &str) -> Option<String> {
    let expected = c.sha256.as_deref()?;
    if size != c.size {
        return Some(format!(
            "size is {size} bytes, the listing records {} (truncated or overwritten)",
            c.size
        ));
    }
    (sha256 != expected).then(|| {
        format!("SHA-256 is {sha256}, the listing records {expected} (the bytes were altered)")
    })
}

/// The object a quarantined file's bytes are kept under: `<tenant>/quarantine/<window>/<name>`.
pub fn kept_path(chunk_path: &str) -> String {
    match chunk_path.split_once('/') {
        Some((tenant, rest)) => format!("{tenant}/quarantine/{rest}"),
        None => format!("quarantine/{chunk_path}"),
    }
}

impl Inner {
    /// Hash the listed chunk files of `tenant` among `paths` not verified yet and
    /// quarantine those that differ from their listing. Returns how many were quarantined.
    /// An unreachable store is an error: nothing is decided without the bytes.
    pub(crate) async fn check_chunks(&self, tenant: &str, paths: &[String]) -> Result<usize> {
        let Some(t) = self.tenant(tenant) else {
            return Ok(0);
        };
        let listed: Vec<ChunkMeta> = {
            let state = t.manifest.read().clone();
            let verified = self.quarantine.verified.lock();
            let wanted: HashSet<&str> = paths.iter().map(String::as_str).collect();
            state
                .manifest
                .chunks
                .iter()
                .filter(|c| wanted.contains(c.path.as_str()) && !verified.contains(&c.path))
                .cloned()
                .collect()
        };
        let mut bad = Vec::new();
        for c in listed {
            if c.sha256.is_none() {
                continue;
            }
            match chain::hash_object(self.store.as_ref(), &c.path).await? {
                None => bad.push((c, "the object is missing from the store".to_string())),
                Some((size, sha)) => match damage(&c, size, &sha) {
                    Some(reason) => bad.push((c, reason)),
                    None => {
                        self.quarantine.verified.lock().insert(c.path);
                    }
                },
            }
        }
        let n = bad.len();
        if n > 0 {
            self.quarantine(&t, bad).await?;
        }
        Ok(n)
    }

    /// `data` read whole for listed file `c`, when its hash matches; `None` after
    /// quarantining it (the caller goes on without it).
    pub(crate) async fn checked_bytes(
        &self,
        tenant: &Arc<Tenant>,
        c: &ChunkMeta,
        data: Bytes,
    ) -> Result<Option<Bytes>> {
        let problem = {
            let data = data.clone();
            let c = c.clone();
            tokio::task::spawn_blocking(move || {
                damage(&c, data.len() as u64, &chain::sha256_hex(&data))
            })
            .await
            .map_err(|e| Error::Internal(format!("hashing task failed: {e}")))?
        };
        match problem {
            None => Ok(Some(data)),
            Some(reason) => {
                self.quarantine(tenant, vec![(c.clone(), reason)]).await?;
                Ok(None)
            }
        }
    }

    /// Take `bad` chunk files (entry, reason) out of the tenant's listing and keep their
    /// bytes aside; on a replica, leave them out of this process's scans.
    pub(crate) async fn quarantine(
        &self,
        t: &Arc<Tenant>,
        bad: Vec<(ChunkMeta, String)>,
    ) -> Result<()> {
        let at_ms = manifest::now_ms();
        if self.guard.check_storage().is_err() {
            let mut unreadable = self.quarantine.unreadable.write();
            let list = unreadable.entry(t.name.clone()).or_default();
            for (c, reason) in bad {
                if list.iter().any(|q| q.chunk.path == c.path) {
                    continue;
                }
                tracing::error!(tenant = %t.name, file = %c.path, %reason,
                    "chunk file damaged; this read-only node leaves it out of its queries until the writer quarantines it");
                self.quarantine.files.fetch_add(1, Ordering::Relaxed);
                list.push(Quarantined {
                    chunk: c,
                    reason,
                    at_ms,
                    kept_at: None,
                });
            }
            return Ok(());
        }
        // Keep the bytes before anything forgets the file.
        let mut kept = Vec::with_capacity(bad.len());
        for (c, reason) in bad {
            let to = kept_path(&c.path);
            let kept_at = match self
                .store
                .copy(
                    &ObjectPath::from(c.path.as_str()),
                    &ObjectPath::from(to.as_str()),
                )
                .await
            {
                Ok(()) => Some(to),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => return Err(crate::compact::os_err(&c.path, e)),
            };
            kept.push((c, reason, kept_at));
        }
        let delete_after = manifest::now_ms()
            .saturating_add(self.config.compaction.delete_delay.0.as_millis() as u64);
        let _edit = self.manifest_lock.lock().await;
        let mut next = t.manifest.read().manifest.clone();
        let mut removed = Vec::new();
        let mut gone = Vec::new();
        for (c, reason, kept_at) in kept {
            // Compacted or unlisted meanwhile: nothing to take out.
            let Some(pos) = next.chunks.iter().position(|x| x.path == c.path) else {
                continue;
            };
            let listed = next.chunks.remove(pos);
            let why = format!("quarantine: {reason}");
            removed.extend(
                chain::chunk_files(&listed)
                    .into_iter()
                    .map(|f| RemovedFile {
                        path: f.path,
                        size: f.size,
                        sha256: f.sha256,
                        reason: why.clone(),
                    }),
            );
            next.delete_later(&listed, delete_after);
            crate::erase::carry_clean(&mut next, &[listed.path.as_str()], &[]);
            tracing::error!(tenant = %t.name, file = %listed.path, %reason,
                kept_at = kept_at.as_deref().unwrap_or("-"),
                "chunk file damaged; quarantined: queries over its streams and times answer without it and say so");
            gone.push(listed.path.clone());
            next.quarantined.push(Quarantined {
                chunk: listed,
                reason,
                at_ms,
                kept_at,
            });
        }
        if gone.is_empty() {
            return Ok(());
        }
        let reason = format!(
            "quarantine: damaged files taken out of the listing ({})",
            gone.join(", ")
        );
        self.publish(t, next, reason, removed).await?;
        self.quarantine
            .files
            .fetch_add(gone.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Record `removed` in the tenant's hash chain and make `next` its manifest. Call
    /// under the manifest lock.
    async fn publish(
        &self,
        t: &Tenant,
        mut next: manifest::Manifest,
        reason: String,
        removed: Vec<RemovedFile>,
    ) -> Result<()> {
        next.version = manifest::MANIFEST_VERSION;
        chain::append(
            self.store.as_ref(),
            &t.name,
            &mut next,
            ChainEvent::Quarantine,
            reason,
            Vec::new(),
            removed,
        )
        .await?;
        manifest::save(self.store.as_ref(), &t.name, &next).await?;
        *t.manifest.write() = ManifestState::new(next);
        Ok(())
    }

    /// Unlist the block indexes scans found damaged (their files stay, read whole), keeping
    /// their bytes aside. Run by the compactor; a no-op on a replica.
    pub(crate) async fn unlist_damaged_indexes(&self) -> Result<()> {
        let damaged = self.text_indexes.damaged();
        if damaged.is_empty() || self.guard.check_storage().is_err() {
            return Ok(());
        }
        let tenants: Vec<Arc<Tenant>> = self.tenants.read().values().cloned().collect();
        for t in tenants {
            let listed: Vec<ChunkMeta> = t
                .manifest
                .read()
                .manifest
                .chunks
                .iter()
                .filter(|c| c.text_index_bytes.is_some() && damaged.contains(&c.path))
                .cloned()
                .collect();
            if listed.is_empty() {
                continue;
            }
            for c in &listed {
                let from = textindex::index_path(&c.path);
                let to = kept_path(&from);
                match self
                    .store
                    .copy(
                        &ObjectPath::from(from.as_str()),
                        &ObjectPath::from(to.as_str()),
                    )
                    .await
                {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(crate::compact::os_err(&from, e)),
                }
            }
            let delete_after = manifest::now_ms()
                .saturating_add(self.config.compaction.delete_delay.0.as_millis() as u64);
            let _edit = self.manifest_lock.lock().await;
            let mut next = t.manifest.read().manifest.clone();
            let mut removed = Vec::new();
            for c in next.chunks.iter_mut() {
                if c.text_index_bytes.is_none() || !listed.iter().any(|l| l.path == c.path) {
                    continue;
                }
                let index = textindex::index_path(&c.path);
                removed.push(RemovedFile {
                    path: index.clone(),
                    size: c.text_index_bytes.unwrap_or(0),
                    sha256: c.text_index_sha256.clone().unwrap_or_default(),
                    reason: "quarantine: block index damaged; the file is read whole".into(),
                });
                c.text_index_bytes = None;
                c.text_index_sha256 = None;
                next.pending_deletes.push(PendingDelete {
                    path: index,
                    after_ms: delete_after,
                });
            }
            if removed.is_empty() {
                continue;
            }
            let names: Vec<String> = removed.iter().map(|r| r.path.clone()).collect();
            let reason = format!(
                "quarantine: damaged block indexes unlisted ({})",
                names.join(", ")
            );
            self.publish(&t, next, reason, removed).await?;
            let unlisted: Vec<String> = listed.iter().map(|c| c.path.clone()).collect();
            self.text_indexes.forget_damaged(&unlisted);
            tracing::error!(tenant = %t.name, files = ?names, "damaged block indexes quarantined; their chunk files are read whole");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(path: &str, streams: &[(StreamId, i64, i64, u64)]) -> ChunkMeta {
        ChunkMeta {
            path: path.into(),
            size: 10,
            min_ts: streams.iter().map(|s| s.1).min().unwrap_or(0),
            max_ts: streams.iter().map(|s| s.2).max().unwrap_or(0),
            rows: streams.iter().map(|s| s.3).sum(),
            streams: streams
                .iter()
                .map(|&(id, min_ts, max_ts, rows)| manifest::StreamRange {
                    id,
                    min_ts,
                    max_ts,
                    rows,
                    line_bytes: rows * 10,
                    first_row: None,
                })
                .collect(),
            compacted: false,
            created_ms: 0,
            text_index_bytes: None,
            metadata_keys: None,
            sha256: Some("ab".into()),
            text_index_sha256: None,
        }
    }

    #[test]
    fn skipped_files_are_those_holding_the_scans_rows() {
        let q = |c| Quarantined {
            chunk: c,
            reason: "r".into(),
            at_ms: 0,
            kept_at: None,
        };
        let list = [
            q(chunk(
                "t/1/a.parquet",
                &[(1, 100, 200, 5), (2, 100, 150, 7)],
            )),
            q(chunk("t/1/b.parquet", &[(3, 100, 200, 9)])),
        ];
        let got = skipped_in(&list, &[2, 3], 150, 160);
        let paths: Vec<(&str, u64)> = got.iter().map(|s| (s.path.as_str(), s.rows)).collect();
        assert_eq!(paths, [("t/1/a.parquet", 7), ("t/1/b.parquet", 9)]);
        // Stream 2 ends at 150: a scan from 151 misses nothing of it.
        let got = skipped_in(&list, &[2], 151, 300);
        assert!(got.is_empty(), "{got:?}");
        assert!(skipped_in(&list, &[1, 2, 3], 201, 300).is_empty());
        assert!(skipped_in(&list, &[4], 0, 300).is_empty());
    }

    #[test]
    fn damage_names_size_and_hash_differences() {
        let c = chunk("t/1/a.parquet", &[(1, 0, 1, 1)]);
        assert_eq!(damage(&c, 10, "ab"), None);
        assert!(damage(&c, 9, "ab").is_some_and(|r| r.contains("truncated")));
        assert!(damage(&c, 10, "cd").is_some_and(|r| r.contains("altered")));
        let unhashed = ChunkMeta {
            sha256: None,
            ..c.clone()
        };
        assert_eq!(damage(&unhashed, 3, "cd"), None);
        assert_eq!(kept_path("t/1/a.parquet"), "t/quarantine/1/a.parquet");
    }
}
