//! Read replicas: a process in the `reader` role follows a bucket another process writes.
//!
//! A reader opens no lease, runs no flusher and no compactor, writes no object (its store
//! is wrapped in a [`crate::lease::GuardedStore`] that refuses every write) and refuses
//! appends. Every `replica.poll_interval` it reads `tenants.json` and each tenant's
//! manifest; when a manifest changed it first reads the tenant's new label objects
//! ([`crate::streams_log`]) into its local label index, then publishes the manifest, so
//! every stream the manifest lists is found by selectors from the moment its files are
//! queried. It answers over what the writer has flushed; the writer's head is not seen.
//! Then it reads the delete requests' new events, so a delete posted to the writer hides
//! its lines in the replica's answers within a poll.
//!
//! Files the writer's compactor replaces stay in the bucket for `compaction.delete_delay`
//! after the manifest stops listing them; a query planned on the previous manifest reads
//! them until then, so `delete_delay` must exceed `poll_interval` plus the longest query
//! (`query.timeout`); the default 10 minutes does.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::HumanDuration;
use crate::error::Result;
use crate::manifest::{self, ManifestState};
use crate::{streams_log, Inner};

/// What this process does with the bucket (`storage.role`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Ingests, flushes, compacts; holds the writer lease. The default.
    #[default]
    Writer,
    /// A read replica: follows what a writer flushed, never writes.
    Reader,
}

/// How a reader follows the bucket (`storage.replica`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicaConfig {
    /// How often a reader reads the manifests. Default `2s`.
    pub poll_interval: HumanDuration,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            poll_interval: HumanDuration(Duration::from_secs(2)),
        }
    }
}

/// Why writes fail on a reader.
pub(crate) const READ_ONLY: &str = "this is a read-only replica (storage.role: reader): it \
                                    answers queries over what the writer flushed; send writes \
                                    to the writer";

impl Inner {
    /// One reader step: pick up new tenants, changed manifests and their label sets.
    /// Returns how many tenants changed.
    pub(crate) async fn follow_once(&self) -> Result<usize> {
        let names = manifest::load_tenants(self.store.as_ref()).await?;
        let mut changed = 0;
        for name in names {
            let next = manifest::load(self.store.as_ref(), &name).await?;
            let tenant = self.tenant_or_create(&name)?;
            if tenant.manifest.read().manifest == next {
                continue;
            }
            let added = streams_log::follow(self.store.as_ref(), &tenant).await?;
            *tenant.manifest.write() = ManifestState::new(next);
            changed += 1;
            tracing::debug!(tenant = %name, new_streams = added, "replica: manifest followed");
        }
        // Delete requests after the manifests: the writer records a request processed only
        // after the manifest lists the rewritten files, so its tombstone is never dropped
        // here while the files it hides are still listed.
        let events = self.erase.load(self.store.as_ref()).await?;
        if events > 0 {
            tracing::debug!(events, "replica: delete requests followed");
        }
        Ok(changed)
    }
}

/// The follower task of a reader. Holds only a weak reference, so dropping the storage
/// stops it.
pub(crate) async fn run_follower(inner: Weak<Inner>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = inner.follow_once().await {
            tracing::warn!(error = %e, "replica: following the bucket failed; will retry");
        }
    }
}
