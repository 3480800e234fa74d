//! [`ValueTable`]: a bounded, partition-local table from a few optional string values (plus
//! a tag, e.g. a stream id) to a small copyable value. The per-row caches of
//! `PipelineExec` (series ids by grouping values, by pattern captures) use it.
//!
//! The values of all entries live back to back in one byte arena and the entries in flat
//! vectors, so a new entry costs no allocation of its own and starting over is a few
//! `clear`s, not a free per entry. A grouping by a label with hundreds of thousands of
//! values (`sum by (path) (…)`) adds that many entries.

use hashbrown::HashTable;

/// Entries of `width` optional string values and a tag, each mapped to a `V`.
pub(super) struct ValueTable<V> {
    width: usize,
    /// The values of every entry, back to back.
    bytes: Vec<u8>,
    /// `width` spans into `bytes` per entry; `None` for an absent value.
    spans: Vec<Option<(u32, u32)>>,
    /// Per entry: its tag and value.
    entries: Vec<(u64, V)>,
    /// (hash, entry index) of every entry.
    table: HashTable<(u64, u32)>,
}

impl<V: Copy> ValueTable<V> {
    /// Entries kept at most; a full table starts over.
    const MAX_ENTRIES: usize = 1 << 18;
    /// Value bytes kept at most; a full table starts over.
    const MAX_BYTES: usize = 8 << 20;

    pub(super) fn new(width: usize) -> ValueTable<V> {
        ValueTable {
            width,
            bytes: Vec::new(),
            spans: Vec::new(),
            entries: Vec::new(),
            table: HashTable::new(),
        }
    }

    /// The hash of an entry's tag and values (the values in order; `None` for absent).
    pub(super) fn hash<'a>(tag: u64, values: impl Iterator<Item = Option<&'a str>>) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        // Runs for every row: a fast hash (collisions only cost a value comparison).
        let mut h = foldhash::fast::FixedState::default().build_hasher();
        tag.hash(&mut h);
        for v in values {
            v.hash(&mut h);
        }
        h.finish()
    }

    /// Value `i` of entry `e`.
    fn value(&self, e: usize, i: usize) -> Option<&[u8]> {
        let (s, n) = (*self.spans.get(e * self.width + i)?)?;
        self.bytes.get(s as usize..(s + n) as usize)
    }

    /// The entry with `tag` whose value `i` is `value(i)` for every `i < width`, found by
    /// its `hash` ([`ValueTable::hash`] of the same tag and values): its index and value.
    pub(super) fn find<'a>(
        &self,
        hash: u64,
        tag: u64,
        value: impl Fn(usize) -> Option<&'a str>,
    ) -> Option<(usize, V)> {
        self.table
            .find(hash, |&(h, e)| {
                h == hash && self.is(e as usize, tag, &value)
            })
            .and_then(|&(_, e)| Some((e as usize, self.entries.get(e as usize)?.1)))
    }

    /// The value of entry `e` when it still has `tag` and the values `value(i)`: the check
    /// of a remembered entry index (a table starting over gives indexes to new entries).
    pub(super) fn get_if<'a>(
        &self,
        e: usize,
        tag: u64,
        value: impl Fn(usize) -> Option<&'a str>,
    ) -> Option<V> {
        let (_, v) = *self.entries.get(e)?;
        self.is(e, tag, value).then_some(v)
    }

    /// Whether entry `e` has `tag` and the values `value(i)`.
    fn is<'a>(&self, e: usize, tag: u64, value: impl Fn(usize) -> Option<&'a str>) -> bool {
        self.entries.get(e).is_some_and(|(t, _)| *t == tag)
            && (0..self.width).all(|i| self.value(e, i) == value(i).map(str::as_bytes))
    }

    /// Adds an entry (not already present: [`ValueTable::find`] missed it) and returns its
    /// index. A full table first starts over.
    pub(super) fn insert<'a>(
        &mut self,
        hash: u64,
        tag: u64,
        value: impl Fn(usize) -> Option<&'a str>,
        v: V,
    ) -> usize {
        let added: usize = (0..self.width).map(|i| value(i).map_or(0, str::len)).sum();
        if self.entries.len() >= Self::MAX_ENTRIES || self.bytes.len() + added > Self::MAX_BYTES {
            self.clear();
        }
        for i in 0..self.width {
            let span = value(i).map(|s| {
                let start = self.bytes.len() as u32;
                self.bytes.extend_from_slice(s.as_bytes());
                (start, s.len() as u32)
            });
            self.spans.push(span);
        }
        let e = self.entries.len();
        self.entries.push((tag, v));
        self.table
            .insert_unique(hash, (hash, e as u32), |&(h, _)| h);
        e
    }

    /// Forgets every entry, keeping the allocations.
    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
        self.entries.clear();
        self.table.clear();
    }

    /// Number of entries.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(tag: u64, vals: &[Option<&str>]) -> u64 {
        ValueTable::<u32>::hash(tag, vals.iter().copied())
    }

    #[test]
    fn finds_by_tag_and_every_value() {
        let mut t = ValueTable::<u32>::new(2);
        let a = [Some("GET"), None];
        let b = [Some("GET"), Some("")];
        let ea = t.insert(hash(1, &a), 1, |i| a[i], 10);
        let eb = t.insert(hash(1, &b), 1, |i| b[i], 11);
        assert_eq!(t.find(hash(1, &a), 1, |i| a[i]), Some((ea, 10)));
        // An absent value differs from an empty one.
        assert_eq!(t.find(hash(1, &b), 1, |i| b[i]), Some((eb, 11)));
        // Another tag is another entry.
        assert_eq!(t.find(hash(2, &a), 2, |i| a[i]), None);
        assert_eq!(t.get_if(ea, 1, |i| a[i]), Some(10));
        assert_eq!(t.get_if(ea, 1, |i| b[i]), None);
        assert_eq!(t.get_if(7, 1, |i| a[i]), None);
    }

    #[test]
    fn colliding_hashes_compare_values() {
        let mut t = ValueTable::<u32>::new(1);
        // The same hash for two keys: only the values tell them apart.
        t.insert(42, 0, |_| Some("x"), 1);
        t.insert(42, 0, |_| Some("y"), 2);
        assert_eq!(t.find(42, 0, |_| Some("y")).map(|f| f.1), Some(2));
        assert_eq!(t.find(42, 0, |_| Some("x")).map(|f| f.1), Some(1));
        assert_eq!(t.find(42, 0, |_| Some("z")), None);
    }

    #[test]
    fn a_full_table_starts_over() {
        let mut t = ValueTable::<u32>::new(1);
        let max = ValueTable::<u32>::MAX_ENTRIES;
        for n in 0..=max {
            let s = n.to_string();
            t.insert(hash(0, &[Some(&s)]), 0, |_| Some(&s), n as u32);
        }
        // The last insert found the table full and started over.
        assert_eq!(t.len(), 1);
        let last = max.to_string();
        let first = "0".to_string();
        assert_eq!(
            t.find(hash(0, &[Some(&last)]), 0, |_| Some(&last)),
            Some((0, max as u32))
        );
        assert_eq!(t.find(hash(0, &[Some(&first)]), 0, |_| Some(&first)), None);
        // A remembered index from before now names another entry.
        assert_eq!(t.get_if(5, 0, |_| Some("5")), None);
    }
}
