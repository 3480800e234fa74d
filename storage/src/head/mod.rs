//! The in-memory head: entries appended since the last flush, per stream, for one tenant.
//!
//! Entries are kept in arrival order per stream (out-of-order timestamps are accepted and
//! sorted only when read or flushed). Exact duplicates — same stream, timestamp and line —
//! are stored once: while a stream's timestamps only grow no duplicate is possible and
//! nothing extra is kept; the first time a timestamp does not grow, the stream gets a hash
//! table of `(ts, line)` hashes that catches duplicates from then on. Memory is accounted
//! per entry so the flusher can bound it.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, Int64Builder, MapBuilder, MapFieldNames, RecordBatch, StringBuilder, UInt64Builder,
};

use crate::error::Result;
use crate::model::{LabelSet, PushStream, StreamId};
use crate::schema::logs_schema;
use crate::AppendSummary;

/// Fixed per-entry overhead we account besides the strings (struct + vector slot).
pub const ENTRY_OVERHEAD: usize = std::mem::size_of::<HeadEntry>() + 8;

/// Structured metadata pairs of one entry.
pub type MetadataPairs = Box<[(Box<str>, Box<str>)]>;

/// One stored entry.
#[derive(Debug, Clone)]
pub struct HeadEntry {
    /// Timestamp, ns.
    pub ts: i64,
    /// The line.
    pub line: Box<str>,
    /// Structured metadata in push order; `None` when empty (the common case).
    pub metadata: Option<MetadataPairs>,
}

/// The entries of one stream.
#[derive(Debug)]
pub struct HeadStream {
    /// Stream labels.
    pub labels: Arc<LabelSet>,
    entries: Vec<HeadEntry>,
    min_ts: i64,
    max_ts: i64,
    /// `true` while entries are in non-decreasing ts order.
    sorted: bool,
    /// Hash of (ts, line) → index of the entry, built on the first non-increasing ts.
    seen: Option<HashMap<u64, u32>>,
    bytes: usize,
    /// Structured metadata keys of its entries.
    metadata_keys: crate::manifest::MetadataKeys,
}

impl HeadStream {
    fn new(labels: Arc<LabelSet>) -> Self {
        HeadStream {
            labels,
            entries: Vec::new(),
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            sorted: true,
            seen: None,
            bytes: 0,
            metadata_keys: Default::default(),
        }
    }

    /// The structured metadata keys of its entries; `None` past the listing limit.
    pub fn metadata_keys(&self) -> Option<impl Iterator<Item = &str>> {
        self.metadata_keys.keys()
    }

    /// Smallest and largest timestamp held.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        (!self.entries.is_empty()).then_some((self.min_ts, self.max_ts))
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when the stream holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Indices of the entries with `start <= ts < end`, sorted by timestamp (stable, so
    /// equal timestamps keep arrival order).
    pub fn sorted_indices(&self, start: i64, end: i64) -> Vec<u32> {
        if self.sorted {
            let lo = self.entries.partition_point(|e| e.ts < start);
            let hi = self.entries.partition_point(|e| e.ts < end);
            return (lo as u32..hi.max(lo) as u32).collect();
        }
        let mut idx: Vec<u32> = (0..self.entries.len() as u32)
            .filter(|&i| {
                let ts = self.entries[i as usize].ts;
                ts >= start && ts < end
            })
            .collect();
        idx.sort_by_key(|&i| self.entries[i as usize].ts);
        idx
    }

    /// Entry by index (from [`Self::sorted_indices`]).
    pub fn entry(&self, i: u32) -> &HeadEntry {
        &self.entries[i as usize]
    }

    fn key_hash(hasher: &impl BuildHasher, ts: i64, line: &str) -> u64 {
        let mut h = hasher.build_hasher();
        ts.hash(&mut h);
        line.hash(&mut h);
        h.finish()
    }
}

/// The head of one tenant.
#[derive(Debug)]
pub struct Head {
    streams: HashMap<StreamId, HeadStream>,
    bytes: usize,
    entries: usize,
    created: Option<Instant>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            streams: HashMap::new(),
            bytes: 0,
            entries: 0,
            created: None,
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl Head {
    /// Add streams; exact duplicates are counted and skipped.
    pub fn append(&mut self, streams: Vec<PushStream>) -> AppendSummary {
        let mut summary = AppendSummary::default();
        if self.created.is_none() {
            self.created = Some(Instant::now());
        }
        for push in streams {
            if push.entries.is_empty() {
                continue;
            }
            let id = push.labels.fingerprint();
            let stream = self
                .streams
                .entry(id)
                .or_insert_with(|| HeadStream::new(Arc::new(push.labels)));
            stream.entries.reserve(push.entries.len());
            for entry in push.entries {
                let ts = entry.ts_ns;
                if !stream.entries.is_empty() && ts <= stream.max_ts {
                    // Possibly a duplicate: make sure the hash table exists, then look.
                    if stream.seen.is_none() {
                        let mut seen = HashMap::with_capacity(stream.entries.len() * 2);
                        for (i, e) in stream.entries.iter().enumerate() {
                            seen.entry(HeadStream::key_hash(&self.hasher, e.ts, &e.line))
                                .or_insert(i as u32);
                        }
                        stream.bytes += seen.capacity() * 16;
                        self.bytes += seen.capacity() * 16;
                        stream.seen = Some(seen);
                    }
                    if ts < stream.max_ts {
                        stream.sorted = false;
                    }
                }
                if let Some(seen) = stream.seen.as_mut() {
                    let key = HeadStream::key_hash(&self.hasher, ts, &entry.line);
                    let next = stream.entries.len() as u32;
                    match seen.entry(key) {
                        std::collections::hash_map::Entry::Occupied(o) => {
                            let prev = &stream.entries[*o.get() as usize];
                            if prev.ts == ts && *prev.line == *entry.line {
                                summary.duplicates += 1;
                                continue;
                            }
                            // A 64-bit hash collision between different entries: keep both.
                        }
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(next);
                            self.bytes += 16;
                            stream.bytes += 16;
                        }
                    }
                }
                let meta_bytes: usize = entry
                    .metadata
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 32)
                    .sum();
                let cost = ENTRY_OVERHEAD + entry.line.len() + meta_bytes;
                summary.entries += 1;
                summary.bytes += entry.line.len() as u64;
                stream.bytes += cost;
                self.bytes += cost;
                self.entries += 1;
                stream.min_ts = stream.min_ts.min(ts);
                stream.max_ts = stream.max_ts.max(ts);
                for (k, _) in &entry.metadata {
                    stream.metadata_keys.add(k);
                }
                let metadata = if entry.metadata.is_empty() {
                    None
                } else {
                    Some(
                        entry
                            .metadata
                            .into_iter()
                            .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
                            .collect(),
                    )
                };
                stream.entries.push(HeadEntry {
                    ts,
                    line: entry.line.into_boxed_str(),
                    metadata,
                });
            }
        }
        summary
    }

    /// Accounted bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Entries held.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// `true` when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// When the first entry since the last flush arrived.
    pub fn created(&self) -> Option<Instant> {
        self.created
    }

    /// A stream by id.
    pub fn stream(&self, id: StreamId) -> Option<&HeadStream> {
        self.streams.get(&id)
    }

    /// All streams.
    pub fn streams(&self) -> impl Iterator<Item = (StreamId, &HeadStream)> {
        self.streams.iter().map(|(id, s)| (*id, s))
    }

    /// Rows of `ids` with `start <= ts < end` as one batch in the logs schema, sorted by
    /// (stream_id, ts); `None` when there are none.
    pub fn snapshot(&self, ids: &[StreamId], start: i64, end: i64) -> Result<Option<RecordBatch>> {
        let mut sorted_ids: Vec<StreamId> = ids.to_vec();
        sorted_ids.sort_unstable();
        sorted_ids.dedup();
        let mut selected = Vec::new();
        let mut rows = 0usize;
        let mut line_bytes = 0usize;
        for id in sorted_ids {
            let Some(stream) = self.streams.get(&id) else {
                continue;
            };
            match stream.time_range() {
                Some((lo, hi)) if lo < end && hi >= start => {}
                _ => continue,
            }
            let idx = stream.sorted_indices(start, end);
            rows += idx.len();
            line_bytes += idx
                .iter()
                .map(|&i| stream.entry(i).line.len())
                .sum::<usize>();
            selected.push((id, stream, idx));
        }
        if rows == 0 {
            return Ok(None);
        }
        let mut builder = BatchBuilder::with_capacity(rows, line_bytes);
        for (id, stream, idx) in &selected {
            for &i in idx {
                builder.push(*id, stream.entry(i))?;
            }
        }
        builder.finish().map(Some)
    }

    /// Entries and line bytes of a stream in `[start, end)`.
    pub fn volume(&self, id: StreamId, start: i64, end: i64) -> (u64, u64) {
        let Some(stream) = self.streams.get(&id) else {
            return (0, 0);
        };
        stream
            .entries
            .iter()
            .filter(|e| e.ts >= start && e.ts < end)
            .fold((0, 0), |(n, b), e| (n + 1, b + e.line.len() as u64))
    }
}

/// Builds logs-schema batches row by row.
pub struct BatchBuilder {
    stream_id: UInt64Builder,
    ts: Int64Builder,
    line: StringBuilder,
    metadata: MapBuilder<StringBuilder, StringBuilder>,
    rows: usize,
}

impl BatchBuilder {
    /// Builder sized for `rows` rows holding `line_bytes` bytes of lines.
    pub fn with_capacity(rows: usize, line_bytes: usize) -> Self {
        let names = MapFieldNames {
            entry: "entries".into(),
            key: "keys".into(),
            value: "values".into(),
        };
        BatchBuilder {
            stream_id: UInt64Builder::with_capacity(rows),
            ts: Int64Builder::with_capacity(rows),
            line: StringBuilder::with_capacity(rows, line_bytes),
            metadata: MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new()),
            rows: 0,
        }
    }

    /// Add one row.
    pub fn push(&mut self, stream_id: StreamId, entry: &HeadEntry) -> Result<()> {
        self.stream_id.append_value(stream_id);
        self.ts.append_value(entry.ts);
        self.line.append_value(&entry.line);
        match &entry.metadata {
            None => self.metadata.append(false)?,
            Some(pairs) => {
                for (k, v) in pairs.iter() {
                    self.metadata.keys().append_value(k);
                    self.metadata.values().append_value(v);
                }
                self.metadata.append(true)?;
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Rows added so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The batch.
    pub fn finish(mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.stream_id.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.line.finish()),
            Arc::new(self.metadata.finish()),
            // Lines are classified only by compaction.
            crate::schema::unknown_line_flags(self.rows),
        ];
        Ok(RecordBatch::try_new(logs_schema(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Entry;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, UInt64Type};

    fn push(job: &str, entries: &[(i64, &str)]) -> PushStream {
        PushStream {
            labels: LabelSet::new(vec![("job".into(), job.into())]),
            entries: entries
                .iter()
                .map(|(ts, line)| Entry {
                    ts_ns: *ts,
                    line: (*line).into(),
                    metadata: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn duplicates_are_stored_once_and_out_of_order_is_sorted() -> Result<()> {
        let mut head = Head::default();
        let s = head.append(vec![push(
            "a",
            &[(10, "x"), (20, "y"), (10, "x"), (5, "w")],
        )]);
        assert_eq!((s.entries, s.duplicates), (3, 1));
        let s = head.append(vec![push("a", &[(20, "y"), (20, "z")])]);
        assert_eq!((s.entries, s.duplicates), (1, 1));
        let id = LabelSet::new(vec![("job".into(), "a".into())]).fingerprint();
        let batch = head
            .snapshot(&[id], 0, 100)?
            .ok_or_else(|| crate::Error::Internal("empty".into()))?;
        let ts: Vec<i64> = batch
            .column(1)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        assert_eq!(ts, [5, 10, 20, 20]);
        let lines: Vec<&str> = batch
            .column(2)
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect();
        assert_eq!(lines, ["w", "x", "y", "z"]);
        assert_eq!(head.entries(), 4);
        Ok(())
    }

    #[test]
    fn snapshot_restricts_streams_and_range() -> Result<()> {
        let mut head = Head::default();
        head.append(vec![
            push("a", &[(1, "a1"), (2, "a2"), (3, "a3")]),
            push("b", &[(2, "b2")]),
        ]);
        let a = LabelSet::new(vec![("job".into(), "a".into())]).fingerprint();
        let batch = head
            .snapshot(&[a], 2, 3)?
            .ok_or_else(|| crate::Error::Internal("empty".into()))?;
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.column(0).as_primitive::<UInt64Type>().value(0), a);
        assert!(batch.column(3).is_null(0));
        assert!(head.snapshot(&[a], 10, 20)?.is_none());
        Ok(())
    }
}
