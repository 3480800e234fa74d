//! Tamper-evident history: every change to a tenant's list of files is an entry of an
//! append-only hash chain, and every listed file carries its SHA-256.
//!
//! Layout on the object store, beside the manifest ([`crate::manifest`]):
//!
//! ```text
//! <tenant>/chain/<seq:020>.json    ChainEntry: {seq, prev_hash, time_ms, event, reason,
//!                                               added: [{path, size, sha256}],
//!                                               removed: [{path, size, sha256, reason}],
//!                                               hash}
//! <tenant>/manifest.json           ... "chain": {"seq": N, "hash": "<hash of entry N>"}
//! ```
//!
//! An entry's `hash` is the SHA-256 of [`CHAIN_DOMAIN`] followed by the entry's canonical
//! JSON (its fields in the order above, without `hash`). Entry 0 has a `prev_hash` of 64
//! zeros; every later one holds the hash of the entry before it, so changing, removing or
//! inserting any entry breaks a link or changes the head, which the manifest records (and an
//! operator may record elsewhere: `tovlog chain-head`). Replaying the entries' `added` and
//! `removed` lists from entry 0 gives exactly the files the manifest lists, with their sizes
//! and hashes; `tovlog verify` ([`verify`]) checks all of this and then re-hashes every file.
//!
//! Each chunk file's hash (and that of its `.tri` block index) is computed from the bytes
//! in memory just before they are written, so no file is read back to hash it.
//!
//! Events: `flush` (new chunk files; a retried flush that rewrites a path removes the old
//! version first), `compaction` (the merged outputs are added, the inputs removed with the
//! reason `compaction: merged into ...`), `retention` and `delete` (files unlisted or
//! rewritten by [`crate::erase`]), `quarantine` (damaged files unlisted by
//! [`crate::quarantine`]), and `genesis`. The physical deletion of replaced
//! files after `compaction.delete_delay` is not an entry: those files already left the
//! listing at their compaction.
//!
//! Writes happen under the storage's manifest lock: the entry first, then the manifest
//! pointing at it. A crash between the two leaves an entry beyond the manifest's head; on
//! the next start it is **discarded** (deleted): the manifest change it describes never
//! happened (its flush is replayed from the WAL, its compaction's outputs are orphans and
//! removed), and the next change reuses its sequence number. `verify` run before that start
//! reports such entries as a note, not a break.
//!
//! Data written by a build without the chain: on the first start, each tenant whose
//! manifest has no chain head gets a **genesis** entry listing its files, which are hashed
//! then, once (a full read of the tenant's files, logged). If chain entries already exist
//! (a manifest rewritten by an older build after a newer one ran), the genesis entry links
//! to the last of them, so a head recorded earlier is still an ancestor; `verify` notes
//! every genesis entry after the first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetResultPayload, ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::manifest::{self, ChunkMeta, Manifest};
use crate::textindex;

/// Prefix of the hashed bytes of every entry, so an entry's hash can never be mistaken for
/// the hash of some other JSON document.
pub const CHAIN_DOMAIN: &[u8] = b"tovlog-chain-v1\n";

/// The `prev_hash` of entry 0.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The newest entry of a tenant's chain, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// Sequence number of the entry.
    pub seq: u64,
    /// Its hash (lowercase hex SHA-256).
    pub hash: String,
}

/// What changed the file list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainEvent {
    /// The files that existed when the chain was started.
    Genesis,
    /// A head flush wrote new chunk files.
    Flush,
    /// The compactor merged a window's files.
    Compaction,
    /// Files past their retention period were unlisted or rewritten without expired rows.
    Retention,
    /// Files were rewritten without the rows of delete requests.
    Delete,
    /// Files whose bytes no longer match their hash were taken out of the listing
    /// ([`crate::quarantine`]).
    Quarantine,
}

impl std::fmt::Display for ChainEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChainEvent::Genesis => "genesis",
            ChainEvent::Flush => "flush",
            ChainEvent::Compaction => "compaction",
            ChainEvent::Retention => "retention",
            ChainEvent::Delete => "delete",
            ChainEvent::Quarantine => "quarantine",
        })
    }
}

/// A file an entry adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Object path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
}

/// A file an entry removes from the listing, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedFile {
    /// Object path.
    pub path: String,
    /// Size in bytes, as listed.
    pub size: u64,
    /// SHA-256, as listed.
    pub sha256: String,
    /// Why, e.g. `compaction: merged into <path>`.
    pub reason: String,
}

/// One entry of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainEntry {
    /// Position in the chain, from 0.
    pub seq: u64,
    /// Hash of entry `seq - 1` ([`ZERO_HASH`] for entry 0).
    pub prev_hash: String,
    /// When it was written, ms since the epoch.
    pub time_ms: u64,
    /// What changed the file list.
    pub event: ChainEvent,
    /// A sentence for a human.
    pub reason: String,
    /// Files now listed.
    pub added: Vec<FileRef>,
    /// Files no longer listed.
    pub removed: Vec<RemovedFile>,
    /// SHA-256 of [`CHAIN_DOMAIN`] and the canonical JSON of the fields above.
    pub hash: String,
}

/// The hashed part of an entry, fields in their fixed order.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    prev_hash: &'a str,
    time_ms: u64,
    event: ChainEvent,
    reason: &'a str,
    added: &'a [FileRef],
    removed: &'a [RemovedFile],
}

impl ChainEntry {
    /// The hash this entry's content gives (compare with [`ChainEntry::hash`]).
    pub fn compute_hash(&self) -> Result<String> {
        let canonical = Canonical {
            seq: self.seq,
            prev_hash: &self.prev_hash,
            time_ms: self.time_ms,
            event: self.event,
            reason: &self.reason,
            added: &self.added,
            removed: &self.removed,
        };
        let body = serde_json::to_vec(&canonical).map_err(|e| Error::Internal(e.to_string()))?;
        let mut h = Sha256::new();
        h.update(CHAIN_DOMAIN);
        h.update(&body);
        Ok(to_hex(&h.finalize()))
    }

    /// The entry after `prev` (entry 0 when `None`), hashed.
    pub fn next(
        prev: Option<&ChainHead>,
        event: ChainEvent,
        reason: String,
        added: Vec<FileRef>,
        removed: Vec<RemovedFile>,
    ) -> Result<ChainEntry> {
        let mut entry = ChainEntry {
            seq: prev.map_or(0, |p| p.seq + 1),
            prev_hash: prev.map_or_else(|| ZERO_HASH.to_string(), |p| p.hash.clone()),
            time_ms: manifest::now_ms(),
            event,
            reason,
            added,
            removed,
            hash: String::new(),
        };
        entry.hash = entry.compute_hash()?;
        Ok(entry)
    }

    /// The head this entry makes.
    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    to_hex(&Sha256::digest(data))
}

/// Lowercase hex of a digest. By hand: the `hex` crate is in the tree only behind
/// DataFusion, and enabling its features here would rebuild DataFusion for four lines.
fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The directory of a tenant's chain entries.
pub fn chain_prefix(tenant: &str) -> ObjectPath {
    ObjectPath::from(format!("{}/chain", manifest::tenant_dir(tenant)))
}

/// The object of entry `seq` of a tenant's chain.
pub fn entry_path(tenant: &str, seq: u64) -> ObjectPath {
    ObjectPath::from(format!(
        "{}/chain/{seq:020}.json",
        manifest::tenant_dir(tenant)
    ))
}

fn os_err(path: &str, source: object_store::Error) -> Error {
    Error::ObjectStore {
        path: path.to_string(),
        source,
    }
}

/// The files a manifest lists, each chunk file followed by its block index, with the sizes
/// and hashes it records (an empty hash where it records none).
pub fn listed_files(manifest: &Manifest) -> Vec<FileRef> {
    let mut out = Vec::with_capacity(manifest.chunks.len());
    for c in &manifest.chunks {
        out.extend(chunk_files(c));
    }
    out
}

/// A chunk's files: the Parquet file and, when it has one, its block index.
pub fn chunk_files(c: &ChunkMeta) -> Vec<FileRef> {
    let mut out = vec![FileRef {
        path: c.path.clone(),
        size: c.size,
        sha256: c.sha256.clone().unwrap_or_default(),
    }];
    if let Some(size) = c.text_index_bytes {
        out.push(FileRef {
            path: textindex::index_path(&c.path),
            size,
            sha256: c.text_index_sha256.clone().unwrap_or_default(),
        });
    }
    out
}

/// Write the entry after the manifest's head and point the manifest at it. Call under the
/// manifest lock, then save the manifest.
pub(crate) async fn append(
    store: &dyn ObjectStore,
    tenant: &str,
    manifest: &mut Manifest,
    event: ChainEvent,
    reason: String,
    added: Vec<FileRef>,
    removed: Vec<RemovedFile>,
) -> Result<()> {
    let entry = ChainEntry::next(manifest.chain.as_ref(), event, reason, added, removed)?;
    let path = entry_path(tenant, entry.seq);
    let body = serde_json::to_vec_pretty(&entry).map_err(|e| Error::Internal(e.to_string()))?;
    store
        .put(&path, PutPayload::from(body))
        .await
        .map_err(|e| os_err(path.as_ref(), e))?;
    manifest.chain = Some(entry.head());
    Ok(())
}

/// The sequence numbers of the entries stored for a tenant, and the names of objects in
/// its chain directory that are not entries.
async fn stored_entries(
    store: &dyn ObjectStore,
    tenant: &str,
) -> Result<(BTreeSet<u64>, Vec<String>)> {
    let prefix = chain_prefix(tenant);
    let listed: Vec<_> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| os_err(prefix.as_ref(), e))?;
    let mut seqs = BTreeSet::new();
    let mut other = Vec::new();
    for object in listed {
        let name = object.location.filename().unwrap_or_default();
        match name
            .strip_suffix(".json")
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(seq) if object.location == entry_path(tenant, seq) => {
                seqs.insert(seq);
            }
            _ => other.push(object.location.to_string()),
        }
    }
    Ok((seqs, other))
}

async fn read_entry(store: &dyn ObjectStore, path: &ObjectPath) -> Result<Option<ChainEntry>> {
    match store.get(path).await {
        Ok(got) => {
            let bytes = got.bytes().await.map_err(|e| os_err(path.as_ref(), e))?;
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    path: path.to_string(),
                    detail: e.to_string(),
                })
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(os_err(path.as_ref(), e)),
    }
}

/// SHA-256 and size of a stored object, read once; `None` when it does not exist.
pub async fn hash_object(store: &dyn ObjectStore, path: &str) -> Result<Option<(u64, String)>> {
    let object = ObjectPath::from(path);
    let got = match store.get(&object).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(os_err(path, e)),
    };
    match got.payload {
        GetResultPayload::File(mut file, local) => {
            // A local file: read it in large blocks on a blocking thread (the store's own
            // stream reads small blocks, each on its own blocking task).
            tokio::task::spawn_blocking(move || -> Result<Option<(u64, String)>> {
                use std::io::Read;
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 1 << 20];
                let mut size = 0u64;
                loop {
                    let n = file.read(&mut buf).map_err(|e| Error::Io {
                        path: local.clone(),
                        source: e,
                    })?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                    size += n as u64;
                }
                Ok(Some((size, to_hex(&h.finalize()))))
            })
            .await
            .map_err(|e| Error::Internal(format!("hashing task failed: {e}")))?
        }
        GetResultPayload::Stream(mut stream) => {
            let mut h = Sha256::new();
            let mut size = 0u64;
            while let Some(part) = stream.next().await {
                let part = part.map_err(|e| os_err(path, e))?;
                h.update(&part);
                size += part.len() as u64;
            }
            Ok(Some((size, to_hex(&h.finalize()))))
        }
    }
}

/// Bring a tenant's chain in line with its just-loaded manifest at start-up, before any
/// flush or compaction: discard entries beyond the head (an interrupted write), or start the
/// chain with a genesis entry for a manifest that has none (data of an older build), hashing
/// its files once. Returns whether the manifest changed (it is then saved here).
pub(crate) async fn open_tenant(
    store: &dyn ObjectStore,
    tenant: &str,
    manifest: &mut Manifest,
) -> Result<bool> {
    let (seqs, _) = stored_entries(store, tenant).await?;
    if let Some(head) = &manifest.chain {
        for &seq in seqs.range(head.seq + 1..) {
            tracing::warn!(
                tenant,
                seq,
                "chain entry beyond the manifest's head (a write interrupted before its \
                 manifest) discarded"
            );
            let path = entry_path(tenant, seq);
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(os_err(path.as_ref(), e)),
            }
        }
        return Ok(false);
    }
    if manifest.chunks.is_empty() {
        // Nothing listed yet: entries here are from a first write that never reached its
        // manifest; the first flush starts the chain at 0.
        for seq in seqs {
            let path = entry_path(tenant, seq);
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(os_err(path.as_ref(), e)),
            }
        }
        return Ok(false);
    }
    // Genesis. Link to the last stored entry, if any (see the module doc).
    let prev = match seqs.last() {
        Some(&seq) => {
            let path = entry_path(tenant, seq);
            read_entry(store, &path).await?.map(|e| e.head())
        }
        None => None,
    };
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut added = Vec::new();
    for c in &mut manifest.chunks {
        let (size, sha) = hash_object(store, &c.path)
            .await?
            .ok_or_else(|| missing_at_genesis(&c.path))?;
        bytes += size;
        c.sha256 = Some(sha);
        if c.text_index_bytes.is_some() {
            let index = textindex::index_path(&c.path);
            let (size, sha) = hash_object(store, &index)
                .await?
                .ok_or_else(|| missing_at_genesis(&index))?;
            bytes += size;
            c.text_index_bytes = Some(size);
            c.text_index_sha256 = Some(sha);
        }
        added.extend(chunk_files(c));
    }
    let reason = format!(
        "genesis: {} files listed by a manifest written without the hash chain, hashed at start-up",
        added.len()
    );
    let entry = ChainEntry::next(
        prev.as_ref(),
        ChainEvent::Genesis,
        reason,
        added,
        Vec::new(),
    )?;
    let path = entry_path(tenant, entry.seq);
    let body = serde_json::to_vec_pretty(&entry).map_err(|e| Error::Internal(e.to_string()))?;
    store
        .put(&path, PutPayload::from(body))
        .await
        .map_err(|e| os_err(path.as_ref(), e))?;
    manifest.chain = Some(entry.head());
    manifest::save(store, tenant, manifest).await?;
    tracing::info!(
        tenant,
        files = entry.added.len(),
        bytes,
        seq = entry.seq,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "hash chain started: existing files hashed into a genesis entry"
    );
    Ok(true)
}

fn missing_at_genesis(path: &str) -> Error {
    Error::Corrupt {
        path: path.to_string(),
        detail: "listed by the manifest but missing from the object store; the hash chain \
                 cannot start (restore the file or remove it from the manifest)"
            .into(),
    }
}

/// Each tenant's current head, from the manifests (`None`: no chain yet).
pub async fn heads(store: &dyn ObjectStore) -> Result<Vec<(String, Option<ChainHead>)>> {
    let mut out = Vec::new();
    for tenant in manifest::load_tenants(store).await? {
        let m = manifest::load(store, &tenant).await?;
        out.push((tenant, m.chain));
    }
    Ok(out)
}

/// What kind of break [`verify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakKind {
    /// A listed file's bytes differ from the hash recorded when it was written.
    FileModified,
    /// A listed file is not in the store.
    FileMissing,
    /// The chain was altered: an entry changed, missing or out of place, a broken link, or a
    /// head that does not match.
    HistoryRewritten,
    /// The manifest does not list what the chain records.
    ManifestRewritten,
    /// Something could not be read at all (store error, unparsable object).
    Unreadable,
}

impl std::fmt::Display for BreakKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BreakKind::FileModified => "file modified",
            BreakKind::FileMissing => "file missing",
            BreakKind::HistoryRewritten => "history rewritten",
            BreakKind::ManifestRewritten => "manifest rewritten",
            BreakKind::Unreadable => "unreadable",
        })
    }
}

/// The first integrity break found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    /// Tenant.
    pub tenant: String,
    /// Kind.
    pub kind: BreakKind,
    /// What exactly, naming the object.
    pub detail: String,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (tenant {:?}): {}",
            self.kind, self.tenant, self.detail
        )
    }
}

/// One tenant's verified figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantSummary {
    /// Tenant.
    pub tenant: String,
    /// The head checked (`None`: nothing written yet).
    pub head: Option<ChainHead>,
    /// Chain entries walked.
    pub entries: u64,
    /// Files hashed.
    pub files: u64,
    /// Bytes hashed.
    pub bytes: u64,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Tenants verified, in order (up to the one with the break).
    pub tenants: Vec<TenantSummary>,
    /// Things worth knowing that are not breaks (interrupted writes, later genesis entries).
    pub notes: Vec<String>,
    /// The first break, if any.
    pub first_break: Option<Break>,
    /// Wall time.
    pub elapsed: std::time::Duration,
}

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Per tenant, hashes recorded earlier that must be in its chain up to the head.
    pub expect_heads: Vec<(String, String)>,
    /// Files hashed at once (0: the number of CPUs).
    pub concurrency: usize,
}

fn brk(tenant: &str, kind: BreakKind, detail: impl Into<String>) -> Break {
    Break {
        tenant: tenant.to_string(),
        kind,
        detail: detail.into(),
    }
}

/// Check every tenant of the store: each chain from entry 0 to its head (links, hashes,
/// sequence), that the manifest's head is the chain's, that the manifest lists exactly the
/// files the chain records, that each of them exists with its recorded size and SHA-256,
/// and that every expected head is in the chain. Stops at the first break. Reads only.
pub async fn verify(store: Arc<dyn ObjectStore>, options: &VerifyOptions) -> VerifyReport {
    let started = Instant::now();
    let mut report = VerifyReport::default();
    let tenants = match manifest::load_tenants(store.as_ref()).await {
        Ok(t) => t,
        Err(e) => {
            report.first_break = Some(brk("", BreakKind::Unreadable, e.to_string()));
            report.elapsed = started.elapsed();
            return report;
        }
    };
    for (tenant, _) in &options.expect_heads {
        if !tenants.contains(tenant) {
            report.first_break = Some(brk(
                tenant,
                BreakKind::HistoryRewritten,
                "an expected head names this tenant, but the store lists no such tenant",
            ));
            report.elapsed = started.elapsed();
            return report;
        }
    }
    let concurrency = if options.concurrency == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        options.concurrency
    };
    for tenant in tenants {
        let expected: Vec<&str> = options
            .expect_heads
            .iter()
            .filter(|(t, _)| *t == tenant)
            .map(|(_, h)| h.as_str())
            .collect();
        match verify_tenant(&store, &tenant, &expected, concurrency, &mut report.notes).await {
            Ok(summary) => report.tenants.push(summary),
            Err(b) => {
                report.first_break = Some(b);
                break;
            }
        }
    }
    report.elapsed = started.elapsed();
    report
}

async fn verify_tenant(
    store: &Arc<dyn ObjectStore>,
    tenant: &str,
    expected: &[&str],
    concurrency: usize,
    notes: &mut Vec<String>,
) -> std::result::Result<TenantSummary, Break> {
    let unreadable = |e: Error| brk(tenant, BreakKind::Unreadable, e.to_string());
    let manifest = manifest::load(store.as_ref(), tenant)
        .await
        .map_err(unreadable)?;
    let (seqs, others) = stored_entries(store.as_ref(), tenant)
        .await
        .map_err(unreadable)?;
    for other in others {
        notes.push(format!(
            "tenant {tenant:?}: {other} in the chain directory is not a chain entry"
        ));
    }
    let mut summary = TenantSummary {
        tenant: tenant.to_string(),
        head: manifest.chain.clone(),
        ..TenantSummary::default()
    };
    let Some(head) = manifest.chain.clone() else {
        if manifest.chunks.is_empty() && seqs.is_empty() {
            if let Some(h) = expected.first() {
                return Err(brk(
                    tenant,
                    BreakKind::HistoryRewritten,
                    format!("expected head {h} is not in the chain: the tenant has no chain"),
                ));
            }
            return Ok(summary);
        }
        let detail = if seqs.is_empty() {
            "the manifest lists files but has no chain head: written by a build without the \
             hash chain (start tovlog once to hash its files into a genesis entry), or its \
             head was removed"
                .to_string()
        } else {
            format!(
                "the manifest has no chain head, but {} chain entries exist: its head was \
                 removed",
                seqs.len()
            )
        };
        return Err(brk(tenant, BreakKind::HistoryRewritten, detail));
    };

    // The chain, entry 0 to the head.
    let mut live: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut prev_hash = ZERO_HASH.to_string();
    let mut found_expected: BTreeSet<&str> = BTreeSet::new();
    for seq in 0..=head.seq {
        let path = entry_path(tenant, seq);
        let history = |detail: String| brk(tenant, BreakKind::HistoryRewritten, detail);
        let entry = match read_entry(store.as_ref(), &path).await {
            Ok(Some(e)) => e,
            Ok(None) => {
                return Err(history(format!(
                    "chain entry {seq} ({path}) is missing: the chain up to the manifest's head \
                     {} must hold every entry from 0",
                    head.seq
                )))
            }
            Err(Error::Corrupt { detail, .. }) => {
                return Err(history(format!(
                    "chain entry {seq} ({path}) is not a valid entry: {detail}"
                )))
            }
            Err(e) => return Err(unreadable(e)),
        };
        if entry.seq != seq {
            return Err(history(format!(
                "chain entry {path} says it is entry {}, not {seq}: entries were moved",
                entry.seq
            )));
        }
        let computed = entry.compute_hash().map_err(unreadable)?;
        if computed != entry.hash {
            return Err(history(format!(
                "chain entry {seq} ({path}) was altered: its content hashes to {computed}, \
                 it records {}",
                entry.hash
            )));
        }
        if entry.prev_hash != prev_hash {
            return Err(history(format!(
                "chain link broken at entry {seq} ({path}): it follows {}, but the entry before \
                 it hashes to {prev_hash} (an entry was altered, removed or inserted)",
                entry.prev_hash
            )));
        }
        if entry.event == ChainEvent::Genesis && seq > 0 {
            notes.push(format!(
                "tenant {tenant:?}: entry {seq} is a later genesis ({}); files listed by a build \
                 without the chain were hashed anew then",
                entry.reason
            ));
        }
        if entry.event == ChainEvent::Genesis {
            // A genesis lists every file anew.
            live.clear();
        }
        for r in &entry.removed {
            match live.remove(&r.path) {
                Some((_, sha)) if sha == r.sha256 => {}
                Some((_, sha)) => {
                    return Err(history(format!(
                        "chain entry {seq} removes {} with SHA-256 {}, but the chain added it \
                         with {sha}",
                        r.path, r.sha256
                    )))
                }
                None => {
                    return Err(history(format!(
                        "chain entry {seq} removes {}, which the chain does not list at that \
                         point",
                        r.path
                    )))
                }
            }
        }
        for a in &entry.added {
            if live
                .insert(a.path.clone(), (a.size, a.sha256.clone()))
                .is_some()
            {
                return Err(history(format!(
                    "chain entry {seq} adds {}, which the chain already lists",
                    a.path
                )));
            }
        }
        if let Some(&h) = expected.iter().find(|h| **h == entry.hash) {
            found_expected.insert(h);
        }
        prev_hash = entry.hash;
        summary.entries += 1;
    }
    if prev_hash != head.hash {
        return Err(brk(
            tenant,
            BreakKind::HistoryRewritten,
            format!(
                "the manifest's chain head (entry {}, {}) is not the chain's entry {} ({prev_hash})",
                head.seq, head.hash, head.seq
            ),
        ));
    }
    if let Some(missing) = expected.iter().find(|h| !found_expected.contains(**h)) {
        return Err(brk(
            tenant,
            BreakKind::HistoryRewritten,
            format!(
                "the expected head {missing} is not in the chain up to the current head \
                 (entry {}, {}): the history was rewritten since it was recorded",
                head.seq, head.hash
            ),
        ));
    }
    let beyond = seqs.range(head.seq + 1..).count();
    if beyond > 0 {
        notes.push(format!(
            "tenant {tenant:?}: {beyond} chain entries beyond the head (a write interrupted \
             before its manifest; discarded on the next start)"
        ));
    }

    // The manifest lists exactly the chain's files.
    let listed = listed_files(&manifest);
    let mut seen = BTreeSet::new();
    for f in &listed {
        let manifest_break = |detail: String| brk(tenant, BreakKind::ManifestRewritten, detail);
        if !seen.insert(f.path.as_str()) {
            return Err(manifest_break(format!(
                "the manifest lists {} twice",
                f.path
            )));
        }
        match live.get(&f.path) {
            None => {
                return Err(manifest_break(format!(
                    "the manifest lists {}, which the chain never added (or removed)",
                    f.path
                )))
            }
            Some((size, sha)) if *size != f.size || *sha != f.sha256 => {
                return Err(manifest_break(format!(
                    "the manifest lists {} with {} bytes, SHA-256 {:?}; the chain recorded {size} \
                     bytes, SHA-256 {sha}",
                    f.path, f.size, f.sha256
                )))
            }
            Some(_) => {}
        }
    }
    if let Some(path) = live.keys().find(|p| !seen.contains(p.as_str())) {
        return Err(brk(
            tenant,
            BreakKind::ManifestRewritten,
            format!("the chain lists {path}, but the manifest no longer does (dropped without a chain entry)"),
        ));
    }

    // Every file's bytes.
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(listed.len());
    for f in &listed {
        let (store, semaphore, path) = (store.clone(), semaphore.clone(), f.path.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            hash_object(store.as_ref(), &path).await
        }));
    }
    let mut outcome = Ok(());
    for (f, task) in listed.iter().zip(tasks.iter_mut()) {
        if outcome.is_err() {
            task.abort();
            continue;
        }
        let hashed = match task.await {
            Ok(r) => r,
            Err(e) => Err(Error::Internal(format!("hashing task failed: {e}"))),
        };
        outcome = match hashed {
            Ok(Some((size, sha))) if sha == f.sha256 && size == f.size => {
                summary.files += 1;
                summary.bytes += size;
                Ok(())
            }
            Ok(Some((size, sha))) => Err(brk(
                tenant,
                BreakKind::FileModified,
                format!(
                    "{}: SHA-256 mismatch, the file hashes to {sha} ({size} bytes), its manifest \
                     entry and chain record {} ({} bytes): the file was edited or replaced",
                    f.path, f.sha256, f.size
                ),
            )),
            Ok(None) => Err(brk(
                tenant,
                BreakKind::FileMissing,
                format!(
                    "{} is listed by the manifest (and the chain) but missing from the store: \
                     the file was removed",
                    f.path
                ),
            )),
            Err(e) => Err(unreadable(e)),
        };
    }
    outcome.map(|()| summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn file(path: &str, data: &[u8]) -> FileRef {
        FileRef {
            path: path.into(),
            size: data.len() as u64,
            sha256: sha256_hex(data),
        }
    }

    #[test]
    fn entries_link_and_any_change_alters_the_hash() -> Result<()> {
        let first = ChainEntry::next(
            None,
            ChainEvent::Flush,
            "flush".into(),
            vec![file("t/0/1.parquet", b"abc")],
            Vec::new(),
        )?;
        assert_eq!(first.seq, 0);
        assert_eq!(first.prev_hash, ZERO_HASH);
        assert_eq!(first.compute_hash()?, first.hash);
        let second = ChainEntry::next(
            Some(&first.head()),
            ChainEvent::Compaction,
            "compaction".into(),
            Vec::new(),
            Vec::new(),
        )?;
        assert_eq!(
            (second.seq, second.prev_hash.as_str()),
            (1, first.hash.as_str())
        );
        // A known digest: the hash really is SHA-256.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut edited = first.clone();
        edited.added[0].sha256 = sha256_hex(b"abd");
        assert_ne!(edited.compute_hash()?, first.hash);
        let mut edited = first;
        edited.reason.push('!');
        assert_ne!(edited.compute_hash()?, edited.hash);
        Ok(())
    }

    #[tokio::test]
    async fn objects_hash_as_their_bytes_and_missing_ones_are_none() -> Result<()> {
        let store = InMemory::new();
        let data = vec![7u8; 3 << 20];
        store
            .put(&ObjectPath::from("t/x"), PutPayload::from(data.clone()))
            .await
            .map_err(|e| os_err("t/x", e))?;
        assert_eq!(
            hash_object(&store, "t/x").await?,
            Some((data.len() as u64, sha256_hex(&data)))
        );
        assert_eq!(hash_object(&store, "t/none").await?, None);
        Ok(())
    }
}
