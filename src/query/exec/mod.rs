//! DataFusion execution nodes of the engine and the small shared structures they use:
//! the stream-id → labels map of a scan and the label-set interner of metric queries.
//!
//! `LineFilterExec` (leading line filters over the Arrow `line` column) and `PipelineExec`
//! (the rest of the LogQL pipeline; log rows or metric samples) serve every query;
//! `RangeVectorExec` turns a metric query's samples into a range aggregation's result.

mod line_filter;
mod lines;
mod pipeline;
mod range;
mod value_table;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion_common::error::Result;
use datafusion_execution::memory_pool::MemoryReservation;
use parking_lot::Mutex;
use tovlog_logql::eval::KeyIndex;

pub use line_filter::LineFilterExec;
pub use lines::Lines;
pub use pipeline::{
    carried_labels, reduce_labels, sample_schema, LabelReduce, PipelineExec, PipelineMode,
    SampleValue, SAMPLE_KEY, SAMPLE_TS, SAMPLE_VALUE,
};
pub use range::{
    range_vector_schema, RangeVectorExec, RangeVectorSpec, RANGE_SERIES, RANGE_STEP, RANGE_VALUE,
};

/// The labels of one stream, sorted by name, shared.
pub type StreamLabels = Arc<Vec<(String, String)>>;

/// Labels of the streams a scan reads, by stream id.
#[derive(Debug, Default, Clone)]
pub struct StreamMap(pub HashMap<u64, StreamLabels>);

/// Interns label sets to dense `u32` ids so metric rows carry a number instead of strings
/// and grouping into series is an index lookup. Shared by all partitions of a query.
/// With a memory reservation, every new label set is accounted in the query's pool, so a
/// query with millions of distinct series fails cleanly instead of exhausting memory.
#[derive(Debug, Default)]
pub struct Interner {
    inner: Mutex<InternerInner>,
    reservation: Option<MemoryReservation>,
}

#[derive(Debug, Default)]
struct InternerInner {
    /// The id of every set (foldhash: SipHash cost a tenth of a query grouping by a label
    /// with hundreds of thousands of values).
    ids: KeyIndex,
    sets: Vec<Arc<Vec<(String, String)>>>,
    /// Series kept apart by their whole label set while carrying fewer labels
    /// ([`Interner::intern_identity`]): positions in `identity_keys` by hash.
    identities: KeyIndex,
    /// The encoded whole set of each such series, with its id.
    identity_keys: Vec<(Box<[u8]>, u32)>,
}

/// Name of the label that tells apart series which carry only some of their labels
/// ([`LabelReduce::Carry`]); its value is the series id. Label names of parsed fields
/// never start with `__tovlog`, and a query grouping by it is not given this reduction.
pub const SERIES_ID_LABEL: &str = "__tovlog_series__";

/// Appends `labels` (sorted, unique names) to `out` as the identity key
/// [`Interner::intern_identity`] takes: each name and value with its length in front, so
/// equal keys are equal label sets.
pub fn encode_identity<'a>(
    labels: impl IntoIterator<Item = (&'a str, &'a str)>,
    out: &mut Vec<u8>,
) {
    for (k, v) in labels {
        for s in [k, v] {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
}

impl Interner {
    /// A new, empty interner.
    pub fn new() -> Arc<Interner> {
        Arc::new(Interner::default())
    }

    /// A new interner accounting its memory in `reservation`'s pool.
    pub fn with_reservation(reservation: MemoryReservation) -> Arc<Interner> {
        Arc::new(Interner {
            inner: Mutex::default(),
            reservation: Some(reservation),
        })
    }

    /// The id of `labels`, assigning the next one when new. Fails when the memory pool
    /// cannot hold a new label set.
    pub fn intern(&self, labels: Vec<(String, String)>) -> Result<u32> {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let hash = inner.ids.hash(&labels);
        let sets = &inner.sets;
        if let Some(id) = inner
            .ids
            .find(hash, |id| sets.get(id).is_some_and(|s| **s == labels))
        {
            return Ok(id as u32);
        }
        self.reserve(&labels, 96)?;
        let id = inner.sets.len();
        inner.sets.push(Arc::new(labels));
        inner.ids.insert(hash, id);
        Ok(id as u32)
    }

    /// The id of the series whose whole label set encodes to `key` ([`encode_identity`]),
    /// assigning the next one when new; a new series carries the labels `carried` makes of
    /// its id. A range function then sees every series apart while the strings of labels
    /// no later step reads are neither built nor copied. Fails when the memory pool cannot
    /// hold a new series.
    pub fn intern_identity(
        &self,
        key: &[u8],
        carried: impl FnOnce(u32) -> Vec<(String, String)>,
    ) -> Result<u32> {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let key_hash = inner.identities.hash(key);
        let keys = &inner.identity_keys;
        if let Some(at) = inner.identities.find(key_hash, |at| {
            keys.get(at).is_some_and(|(k, _)| **k == *key)
        }) {
            return Ok(keys[at].1);
        }
        let id = inner.sets.len() as u32;
        let labels = carried(id);
        self.reserve(&labels, key.len() + 128)?;
        // Not in `ids`: the carried labels hold the new id ([`carried_labels`]), so no
        // other set equals them and `intern` never looks for them (hashing them cost the
        // lock's holder a quarter of this call).
        inner.sets.push(Arc::new(labels));
        inner.identities.insert(key_hash, inner.identity_keys.len());
        inner.identity_keys.push((key.into(), id));
        Ok(id)
    }

    /// Bytes accounted for the label sets so far.
    pub fn reserved_bytes(&self) -> usize {
        self.reservation.as_ref().map_or(0, MemoryReservation::size)
    }

    /// All label sets, indexed by id.
    pub fn sets(&self) -> Vec<Arc<Vec<(String, String)>>> {
        self.inner.lock().sets.clone()
    }

    /// The id of `labels`, which the caller knows no interned set equals (each holds a
    /// distinct series id), assigning the next one without looking it up. Fails when the
    /// memory pool cannot hold it.
    pub fn push_distinct(&self, labels: Vec<(String, String)>) -> Result<u32> {
        let mut inner = self.inner.lock();
        self.reserve(&labels, 64)?;
        let id = inner.sets.len() as u32;
        inner.sets.push(Arc::new(labels));
        Ok(id)
    }

    /// Account a new set of `labels` and `extra` bytes more in the pool (strings, their
    /// pair slots, map entries and the `Arc`: an estimate is enough).
    fn reserve(&self, labels: &[(String, String)], extra: usize) -> Result<()> {
        if let Some(r) = &self.reservation {
            let bytes: usize = labels
                .iter()
                .map(|(k, v)| k.len() + v.len() + 48)
                .sum::<usize>()
                + extra;
            r.try_grow(bytes)?;
        }
        Ok(())
    }

    /// All label sets, indexed by id, moved out: the interner is empty afterwards. A set
    /// nothing else shares leaves without a copy ([`take_labels`]).
    pub fn take_sets(&self) -> Vec<Arc<Vec<(String, String)>>> {
        let mut inner = self.inner.lock();
        inner.ids = KeyIndex::default();
        inner.identities = KeyIndex::default();
        inner.identity_keys = Vec::new();
        std::mem::take(&mut inner.sets)
    }

    /// Number of distinct label sets.
    pub fn len(&self) -> usize {
        self.inner.lock().sets.len()
    }

    /// `true` when nothing was interned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The labels of a shared set: moved out when nothing else holds it, else copied.
pub fn take_labels(set: Arc<Vec<(String, String)>>) -> Vec<(String, String)> {
    Arc::try_unwrap(set).unwrap_or_else(|shared| shared.as_ref().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn interner_gives_dense_stable_ids() {
        let i = Interner::new();
        let a = i.intern(vec![p("a", "1")]).unwrap();
        let b = i.intern(vec![p("a", "2")]).unwrap();
        let a2 = i.intern(vec![p("a", "1")]).unwrap();
        assert_eq!((a, b, a2), (0, 1, 0));
        assert_eq!(i.len(), 2);
        assert_eq!(i.sets()[1].as_slice(), &[p("a", "2")]);
    }

    #[test]
    fn interner_memory_is_accounted() {
        use datafusion_execution::memory_pool::{GreedyMemoryPool, MemoryConsumer, MemoryPool};
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1000));
        let i = Interner::with_reservation(MemoryConsumer::new("t").register(&pool));
        let mut failed = false;
        for n in 0..100 {
            if i.intern(vec![p("trace_id", &format!("{n:032}"))]).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "1000 bytes cannot hold 100 label sets");
        assert!(pool.reserved() <= 1000);
        // Known sets are still found without growing.
        assert_eq!(
            i.intern(vec![p("trace_id", &format!("{:032}", 0))])
                .unwrap(),
            0
        );
    }
}
