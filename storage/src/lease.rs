//! The writer lease: at most one process writes a bucket (the store, or the S3 prefix).
//!
//! ```text
//! writer.lease.json   {"version":1,"node":"…","process":"host pid start","acquired_ms":…,"renewed_ms":…,"expires_ms":…}
//! ```
//!
//! - **Taking it.** A writer opening the store reads the lease object. Absent: it creates
//!   it with a conditional create (`PutMode::Create`: S3 `If-None-Match: *`, an exclusive
//!   link on a local directory). Held by another node and not expired: the writer refuses
//!   to start, naming the holder. Expired, or held by this node (same data directory, so
//!   the holder was this node's previous process): it replaces it with a conditional
//!   update on the ETag it read (`PutMode::Update`: S3 `If-Match`). Two successors racing
//!   for an expired lease: one update wins, the other gets a precondition failure.
//! - **Renewing it.** Every `renew_interval` the holder rewrites the lease with a new
//!   expiry, conditional on the ETag of its own last write. A precondition failure means
//!   another writer took the lease: this process is **fenced** for good — every write to
//!   the store fails (see [`GuardedStore`]), flushes and compactions stop before their
//!   manifest edits, and pushes are answered 503. A renewal that fails for another reason
//!   (the store unreachable) is retried; once `ttl` has passed since the last successful
//!   renewal began, writes pause until one succeeds, since a successor may already hold
//!   the lease.
//! - **Releasing it.** A graceful shutdown deletes the lease after its last flush, so a
//!   successor starts at once; after a crash the successor waits for `ttl`.
//!
//! Expiry compares the holder's wall clock (it writes `expires_ms`) with the successor's:
//! clocks must agree to well within `ttl - renew_interval`. The local file system has no
//! conditional update: there a takeover or renewal reads the lease, checks the holder and
//! overwrites it (a race between two successors in the same instant is not excluded; the
//! local store is meant for one machine).

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
    UpdateVersion,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::config::HumanDuration;
use crate::error::{Error, Result};

/// Object path of the lease, at the root of the store (no tenant directory has a `.`).
pub const LEASE_PATH: &str = "writer.lease.json";

/// The writer lease settings (`storage.lease`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseConfig {
    /// Take the writer lease at start and hold it. Default `true`. `false` removes the
    /// protection against a second writer on the same bucket.
    pub enabled: bool,
    /// A lease not renewed for this long may be taken by another writer (the wait after a
    /// writer crashed). Default `30s`.
    pub ttl: HumanDuration,
    /// How often the holder renews the lease; at most a third of `ttl`. Default `10s`.
    pub renew_interval: HumanDuration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            enabled: true,
            ttl: HumanDuration(Duration::from_secs(30)),
            renew_interval: HumanDuration(Duration::from_secs(10)),
        }
    }
}

impl LeaseConfig {
    /// Reject impossible settings, naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.renew_interval.0.is_zero() || self.renew_interval.0 * 3 > self.ttl.0 {
            return Err(Error::Config(
                "lease.renew_interval must be positive and at most a third of lease.ttl".into(),
            ));
        }
        Ok(())
    }
}

/// The lease object.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseBody {
    version: u32,
    /// The holder's node id (`<data_dir>/node-id`).
    node: String,
    /// Host, pid and start time of the holding process (for people; and so a restarted
    /// process of the same node fences its predecessor).
    process: String,
    acquired_ms: u64,
    renewed_ms: u64,
    expires_ms: u64,
}

impl LeaseBody {
    fn describe(&self, now_ms: u64) -> String {
        let ago = now_ms.saturating_sub(self.renewed_ms) as f64 / 1000.0;
        let left = self.expires_ms.saturating_sub(now_ms) as f64 / 1000.0;
        format!(
            "node {} ({}), renewed {ago:.1}s ago, expires in {left:.1}s",
            self.node, self.process
        )
    }
}

fn now_ms() -> u64 {
    crate::manifest::now_ms()
}

fn os_err(source: object_store::Error) -> Error {
    Error::ObjectStore {
        path: LEASE_PATH.into(),
        source,
    }
}

/// Whether this process may write the store now: read replicas never may, a fenced
/// writer no longer may, and a writer whose lease may have expired waits.
#[derive(Debug, Default)]
pub(crate) struct WriteGuard {
    /// Writes are refused for good, with this reason.
    denied: Mutex<Option<String>>,
    /// Writes are allowed until then (the lease's expiry as this process measures it).
    valid_until: Mutex<Option<Instant>>,
}

impl WriteGuard {
    /// A guard that refuses every write with `reason`.
    pub(crate) fn read_only(reason: &str) -> WriteGuard {
        WriteGuard {
            denied: Mutex::new(Some(reason.to_string())),
            valid_until: Mutex::new(None),
        }
    }

    /// `Err(reason)` when this process must not write now.
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        if let Some(reason) = self.denied.lock().clone() {
            return Err(reason);
        }
        if let Some(until) = *self.valid_until.lock() {
            if Instant::now() >= until {
                return Err(
                    "the writer lease could not be renewed within storage.lease.ttl \
                            (object store unreachable?); writes wait until it is"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// As [`Self::check`], as a storage error.
    pub(crate) fn check_storage(&self) -> Result<()> {
        self.check().map_err(Error::ReadOnly)
    }

    fn deny(&self, reason: String) {
        *self.denied.lock() = Some(reason);
    }

    fn extend(&self, until: Instant) {
        *self.valid_until.lock() = Some(until);
    }
}

/// An object store that lets writes through only while its [`WriteGuard`] allows them.
/// Reads are untouched.
#[derive(Debug)]
pub(crate) struct GuardedStore {
    inner: Arc<dyn ObjectStore>,
    guard: Arc<WriteGuard>,
}

impl GuardedStore {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, guard: Arc<WriteGuard>) -> GuardedStore {
        GuardedStore { inner, guard }
    }

    fn check(&self) -> object_store::Result<()> {
        self.guard
            .check()
            .map_err(|reason| object_store::Error::Generic {
                store: "tovlog",
                source: format!("write refused: {reason}").into(),
            })
    }
}

impl fmt::Display for GuardedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guarded({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for GuardedStore {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check()?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check()?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &ObjectPath,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        if let Err(e) = self.check() {
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&ObjectPath>,
        offset: &ObjectPath,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.check()?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.check()?;
        self.inner.rename_opts(from, to, options).await
    }
}

/// This node's id: kept in `<data_dir>/node-id`, made on first start.
pub(crate) fn node_id(data_dir: &std::path::Path) -> Result<String> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::Io { path, source: e }),
    }
    use sha2::Digest;
    let seed = format!(
        "{}/{}/{:?}/{}",
        hostname(),
        std::process::id(),
        std::time::SystemTime::now(),
        data_dir.display()
    );
    let id: String = sha2::Sha256::digest(seed.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(&path, format!("{id}\n")).map_err(|e| Error::Io {
        path: path.clone(),
        source: e,
    })?;
    Ok(id)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// A held writer lease. Renew it with [`Lease::renew`] every `renew_interval`.
pub(crate) struct Lease {
    /// The store without the guard (the lease itself must be writable while fenced to
    /// find out, and after the guard's time ran out to renew it).
    store: Arc<dyn ObjectStore>,
    guard: Arc<WriteGuard>,
    body: Mutex<LeaseBody>,
    /// Version of our last write, for conditional updates.
    version: Mutex<Option<UpdateVersion>>,
    /// `false` once the store answered that it has no conditional update.
    conditional: std::sync::atomic::AtomicBool,
    ttl: Duration,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("body", &*self.body.lock())
            .finish_non_exhaustive()
    }
}

enum Read {
    Absent,
    Present(LeaseBody, UpdateVersion),
}

async fn read(store: &dyn ObjectStore) -> Result<Read> {
    let path = ObjectPath::from(LEASE_PATH);
    let got = match store.get(&path).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(Read::Absent),
        Err(e) => return Err(os_err(e)),
    };
    let version = UpdateVersion {
        e_tag: got.meta.e_tag.clone(),
        version: got.meta.version.clone(),
    };
    let bytes = got.bytes().await.map_err(os_err)?;
    let body: LeaseBody = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
        path: LEASE_PATH.into(),
        detail: format!(
            "{e}; delete the object once no writer uses the bucket, and start the writer again"
        ),
    })?;
    Ok(Read::Present(body, version))
}

fn put_result_version(r: PutResult) -> UpdateVersion {
    UpdateVersion {
        e_tag: r.e_tag,
        version: r.version,
    }
}

impl Lease {
    /// Take the lease of `store` for node `node`, or fail with [`Error::ReadOnly`] naming
    /// the holder when another node holds a fresh one.
    pub(crate) async fn acquire(
        store: Arc<dyn ObjectStore>,
        guard: Arc<WriteGuard>,
        node: &str,
        ttl: Duration,
    ) -> Result<Arc<Lease>> {
        let path = ObjectPath::from(LEASE_PATH);
        let started_ms = now_ms();
        let process = format!(
            "host {} pid {} started {started_ms}",
            hostname(),
            std::process::id()
        );
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        for _attempt in 0..5 {
            let began = Instant::now();
            let now = now_ms();
            let body = LeaseBody {
                version: 1,
                node: node.to_string(),
                process: process.clone(),
                acquired_ms: now,
                renewed_ms: now,
                expires_ms: now.saturating_add(ttl_ms),
            };
            let payload = serde_json::to_vec(&body).map_err(|e| Error::Internal(e.to_string()))?;
            let result = match read(store.as_ref()).await? {
                Read::Absent => {
                    store
                        .put_opts(&path, payload.into(), PutMode::Create.into())
                        .await
                }
                Read::Present(held, version) => {
                    if held.node != node && held.expires_ms > now {
                        return Err(Error::ReadOnly(format!(
                            "another writer holds this bucket's lease ({LEASE_PATH}): {}. Two \
                             writers would corrupt it; start this one as a read replica \
                             (storage.role: reader), stop the other, or wait for its lease to \
                             expire (storage.lease.ttl) if it crashed",
                            held.describe(now)
                        )));
                    }
                    if held.node != node {
                        tracing::warn!(
                            holder = %held.describe(now),
                            "taking over the expired writer lease"
                        );
                    }
                    match store
                        .put_opts(
                            &path,
                            payload.clone().into(),
                            PutMode::Update(version).into(),
                        )
                        .await
                    {
                        Err(object_store::Error::NotImplemented { .. }) => {
                            store
                                .put_opts(&path, payload.into(), PutMode::Overwrite.into())
                                .await
                        }
                        other => other,
                    }
                }
            };
            match result {
                Ok(r) => {
                    guard.extend(began + ttl);
                    tracing::info!(node, ttl_s = ttl.as_secs_f64(), "writer lease taken");
                    return Ok(Arc::new(Lease {
                        store,
                        guard,
                        body: Mutex::new(body),
                        version: Mutex::new(Some(put_result_version(r))),
                        conditional: std::sync::atomic::AtomicBool::new(true),
                        ttl,
                    }));
                }
                // Someone else wrote it between our read and our write: look again.
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => continue,
                Err(e) => return Err(os_err(e)),
            }
        }
        Err(Error::ReadOnly(
            "the writer lease changed hands five times while this writer tried to take it; \
             is another writer starting on the same bucket?"
                .into(),
        ))
    }

    /// Renew the lease. A lost lease fences this process for good (returns the reason);
    /// other failures are logged and retried at the next interval.
    pub(crate) async fn renew(&self) -> std::result::Result<(), String> {
        if let Err(reason) = self.guard.check() {
            if self.guard.denied.lock().is_some() {
                return Err(reason);
            }
        }
        let began = Instant::now();
        let now = now_ms();
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let body = {
            let mut b = self.body.lock();
            b.renewed_ms = now;
            b.expires_ms = now.saturating_add(ttl_ms);
            b.clone()
        };
        let payload = match serde_json::to_vec(&body) {
            Ok(p) => p,
            Err(e) => return Err(e.to_string()),
        };
        let path = ObjectPath::from(LEASE_PATH);
        let conditional = self.conditional.load(std::sync::atomic::Ordering::Relaxed);
        let result = if conditional {
            let version = self.version.lock().clone();
            match version {
                Some(v) => {
                    match self
                        .store
                        .put_opts(&path, payload.clone().into(), PutMode::Update(v).into())
                        .await
                    {
                        Err(object_store::Error::NotImplemented { .. }) => {
                            self.conditional
                                .store(false, std::sync::atomic::Ordering::Relaxed);
                            self.overwrite_if_ours(&path, payload).await
                        }
                        other => other.map_err(|e| (e, None)),
                    }
                }
                None => self.overwrite_if_ours(&path, payload).await,
            }
        } else {
            self.overwrite_if_ours(&path, payload).await
        };
        match result {
            Ok(r) => {
                *self.version.lock() = Some(put_result_version(r));
                self.guard.extend(began + self.ttl);
                Ok(())
            }
            Err((object_store::Error::Precondition { .. }, holder))
            | Err((object_store::Error::NotFound { .. }, holder)) => {
                let holder = match holder {
                    Some(h) => h,
                    None => match read(self.store.as_ref()).await {
                        Ok(Read::Present(b, _)) => b.describe(now_ms()),
                        Ok(Read::Absent) => "nobody (the lease object was deleted)".into(),
                        Err(e) => format!("unknown ({e})"),
                    },
                };
                let reason = format!(
                    "this writer lost the bucket's lease ({LEASE_PATH}), now held by {holder}; \
                     it no longer writes (fenced): restart it as a reader or stop it"
                );
                tracing::error!(%reason, "writer fenced");
                self.guard.deny(reason.clone());
                Err(reason)
            }
            Err((e, _)) => {
                tracing::warn!(error = %e, "renewing the writer lease failed; will retry");
                Ok(())
            }
        }
    }

    /// Renewal without a conditional update: read, check it is still ours, overwrite.
    async fn overwrite_if_ours(
        &self,
        path: &ObjectPath,
        payload: Vec<u8>,
    ) -> std::result::Result<PutResult, (object_store::Error, Option<String>)> {
        let (node, process) = {
            let b = self.body.lock();
            (b.node.clone(), b.process.clone())
        };
        let generic = |e: Error| object_store::Error::Generic {
            store: "tovlog",
            source: e.to_string().into(),
        };
        match read(self.store.as_ref()).await {
            Ok(Read::Present(held, _)) if held.node == node && held.process == process => self
                .store
                .put_opts(path, payload.into(), PutMode::Overwrite.into())
                .await
                .map_err(|e| (e, None)),
            Ok(Read::Present(held, _)) => Err((
                object_store::Error::Precondition {
                    path: LEASE_PATH.into(),
                    source: "held by another process".into(),
                },
                Some(held.describe(now_ms())),
            )),
            Ok(Read::Absent) => Err((
                object_store::Error::NotFound {
                    path: LEASE_PATH.into(),
                    source: "lease object deleted".into(),
                },
                None,
            )),
            Err(e) => Err((generic(e), None)),
        }
    }

    /// Give the lease up (graceful shutdown, after the last flush): a successor may start
    /// at once. Only deletes the object while it is still ours.
    pub(crate) async fn release(&self) -> Result<()> {
        let (node, process) = {
            let b = self.body.lock();
            (b.node.clone(), b.process.clone())
        };
        if let Read::Present(held, _) = read(self.store.as_ref()).await? {
            if held.node == node && held.process == process {
                let path = ObjectPath::from(LEASE_PATH);
                match self.store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(os_err(e)),
                }
                self.guard
                    .deny("this writer released its lease (shut down)".into());
                tracing::info!("writer lease released");
            }
        }
        Ok(())
    }
}

/// The heartbeat: renew every `interval` until the lease is lost or the task aborted.
pub(crate) async fn run_heartbeat(lease: Arc<Lease>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        if lease.renew().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    #[tokio::test]
    async fn a_second_node_is_refused_and_a_taker_fences_the_holder() -> Result<()> {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let ttl = Duration::from_millis(300);
        let g1 = Arc::new(WriteGuard::default());
        let first = Lease::acquire(store.clone(), g1.clone(), "node-a", ttl).await?;
        let g2 = Arc::new(WriteGuard::default());
        let refused = Lease::acquire(store.clone(), g2.clone(), "node-b", ttl).await;
        match refused {
            Err(Error::ReadOnly(msg)) => assert!(msg.contains("node-a"), "{msg}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(first.renew().await.is_ok());
        assert!(g1.check().is_ok());
        // The holder stops renewing (as if it hung); once expired, node-b takes over.
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        assert!(g1.check().is_err(), "an unrenewed lease stops writes");
        let second = Lease::acquire(store.clone(), g2.clone(), "node-b", ttl).await?;
        assert!(g2.check().is_ok());
        // The old holder wakes up: its renewal fails its condition and it is fenced.
        let lost = first.renew().await;
        assert!(lost.is_err_and(|r| r.contains("node-b")));
        assert!(g1.check().is_err());
        // Writes through the old holder's guarded store fail.
        let guarded = GuardedStore::new(store.clone(), g1.clone());
        let put = guarded
            .put(&ObjectPath::from("x"), PutPayload::from_static(b"1"))
            .await;
        assert!(put.is_err());
        second.release().await?;
        assert!(matches!(read(store.as_ref()).await?, Read::Absent));
        Ok(())
    }
}
