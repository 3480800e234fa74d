//! The per-tenant active stream limit (`max_streams_per_user`, `max_global_streams_per_user`).
//!
//! Active streams are the streams of the tenant's head: those appended to since its last
//! flush (at most `storage.head.max_age` ago), which is what the storage already knows
//! ([`Storage::head_streams`]). A push may add a stream the head does not hold only while
//! the head holds fewer than the limit; the streams over it are refused, the others stored
//! (Loki's ingester refuses the stream it cannot create and stores the rest).
//!
//! Two pushes checking at once must not both take the last free place, so a push that adds
//! new streams reserves them here until its append is done:
//!
//! ```text
//!  lock ─► head: which streams exist, how many ─► count = head + reserved by other pushes
//!       ─► each new stream: count < limit ? reserve (count += 1) : refuse ─► unlock
//!  append to storage ─► drop the reservation (the head now counts the streams)
//! ```
//!
//! Between the append and the drop a stream is counted twice, which can only refuse a
//! stream a moment early at the limit, never admit one over it.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;
use tovlog_storage::{Storage, StreamId};

/// Streams being created by pushes in flight, per tenant.
#[derive(Debug, Default)]
pub struct ActiveStreams {
    /// Tenant → new stream → how many pushes in flight add it.
    creating: Mutex<HashMap<String, HashMap<StreamId, usize>>>,
}

/// New streams a push has reserved; released when dropped (after the append).
#[derive(Debug)]
pub struct Reservation<'a> {
    owner: Option<&'a ActiveStreams>,
    tenant: String,
    ids: Vec<StreamId>,
}

impl Reservation<'_> {
    /// A reservation of nothing.
    pub fn none() -> Reservation<'static> {
        Reservation {
            owner: None,
            tenant: String::new(),
            ids: Vec::new(),
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let Some(owner) = self.owner else { return };
        if self.ids.is_empty() {
            return;
        }
        let mut creating = owner.creating.lock();
        let Some(streams) = creating.get_mut(&self.tenant) else {
            return;
        };
        for id in &self.ids {
            if let Some(n) = streams.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    streams.remove(id);
                }
            }
        }
        if streams.is_empty() {
            creating.remove(&self.tenant);
        }
    }
}

impl ActiveStreams {
    /// Which of the push's streams (`ids`, in push order, repeats allowed) may be stored
    /// under `limit` active streams, and the reservation of the new ones to hold until the
    /// append is done. A stream refused once in a push is refused at every repeat.
    pub fn admit<'a>(
        &'a self,
        storage: &Storage,
        tenant: &str,
        limit: usize,
        ids: &[StreamId],
    ) -> (Vec<bool>, Reservation<'a>) {
        let mut creating = self.creating.lock();
        // Under the lock: a push admitted after this one sees its reservations.
        let (present, held) = storage.head_streams(tenant, ids);
        let Some(held) = held else {
            // Every stream is in the head already: nothing to count.
            return (vec![true; ids.len()], Reservation::none());
        };
        let others = creating.get(tenant);
        let mut count = held + others.map_or(0, HashMap::len);
        let mut mine: HashSet<StreamId> = HashSet::new();
        let mut allowed = Vec::with_capacity(ids.len());
        for (id, present) in ids.iter().zip(present) {
            let ok = if present || mine.contains(id) {
                true
            } else if others.is_some_and(|o| o.contains_key(id)) {
                // Another push is adding it and already counted it.
                mine.insert(*id);
                true
            } else if count < limit {
                count += 1;
                mine.insert(*id);
                true
            } else {
                false
            };
            allowed.push(ok);
        }
        if mine.is_empty() {
            return (allowed, Reservation::none());
        }
        let streams = creating.entry(tenant.to_owned()).or_default();
        for id in &mine {
            *streams.entry(*id).or_insert(0) += 1;
        }
        let reservation = Reservation {
            owner: Some(self),
            tenant: tenant.to_owned(),
            ids: mine.into_iter().collect(),
        };
        (allowed, reservation)
    }

    /// Streams reserved by pushes in flight (all tenants).
    #[cfg(test)]
    fn reserved(&self) -> usize {
        self.creating.lock().values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tovlog_storage::{Entry, LabelSet, PushStream, StorageConfig};

    fn stream(name: &str) -> PushStream {
        PushStream {
            labels: LabelSet::new(vec![("app".to_owned(), name.to_owned())]),
            entries: vec![Entry {
                ts_ns: 1,
                line: "x".to_owned(),
                metadata: Vec::new(),
            }],
        }
    }

    #[tokio::test]
    async fn new_streams_are_admitted_up_to_the_limit() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let storage = Storage::open(StorageConfig {
            data_dir: dir.path().to_path_buf(),
            ..StorageConfig::default()
        })
        .await?;
        let active = ActiveStreams::default();
        let (a, b, c) = (stream("a"), stream("b"), stream("c"));
        let ids = [
            a.labels.fingerprint(),
            b.labels.fingerprint(),
            c.labels.fingerprint(),
        ];
        storage.append("t", vec![a]).await?;
        // `a` is in the head: with a limit of 2 only one of `b` and `c` fits; a repeat of
        // the refused stream is refused too.
        let (allowed, held) = active.admit(&storage, "t", 2, &[ids[0], ids[1], ids[2], ids[2]]);
        assert_eq!(allowed, vec![true, true, false, false]);
        // While `b` is reserved, another push cannot take its place…
        let (again, _) = active.admit(&storage, "t", 2, &[ids[2]]);
        assert_eq!(again, vec![false]);
        // …but may add to `b` itself.
        let (same, shared) = active.admit(&storage, "t", 2, &[ids[1]]);
        assert_eq!(same, vec![true]);
        drop(held);
        drop(shared);
        assert_eq!(active.reserved(), 0);
        // Other tenants count their own streams.
        let (other, _) = active.admit(&storage, "u", 2, &ids);
        assert_eq!(other, vec![true, true, false]);
        storage.shutdown().await?;
        Ok(())
    }
}
