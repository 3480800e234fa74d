//! DataFusion execution nodes of the engine and the small shared structures they use:
//! the stream-id → labels map of a scan, the label-set interner of metric queries and
//! the compact label encoding carried through sorts by log queries.

mod line_filter;
mod pipeline;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

pub use line_filter::LineFilterExec;
pub use pipeline::{
    log_schema, sample_schema, LabelReduce, PipelineExec, PipelineMode, SampleValue, LOG_LABELS,
    LOG_LINE, LOG_METADATA, LOG_STREAM_ID, LOG_TS, SAMPLE_KEY, SAMPLE_TS, SAMPLE_VALUE,
};

/// The labels of one stream, sorted by name, shared.
pub type StreamLabels = Arc<Vec<(String, String)>>;

/// Labels of the streams a scan reads, by stream id.
#[derive(Debug, Default, Clone)]
pub struct StreamMap(pub HashMap<u64, StreamLabels>);

/// Interns label sets to dense `u32` ids so metric rows carry a number instead of strings
/// and grouping into series is an index lookup. Shared by all partitions of a query.
#[derive(Debug, Default)]
pub struct Interner {
    inner: Mutex<InternerInner>,
}

#[derive(Debug, Default)]
struct InternerInner {
    ids: HashMap<Arc<Vec<(String, String)>>, u32>,
    sets: Vec<Arc<Vec<(String, String)>>>,
}

impl Interner {
    /// A new, empty interner.
    pub fn new() -> Arc<Interner> {
        Arc::new(Interner::default())
    }

    /// The id of `labels`, assigning the next one when new.
    pub fn intern(&self, labels: Vec<(String, String)>) -> u32 {
        let mut inner = self.inner.lock();
        if let Some(&id) = inner.ids.get(&labels) {
            return id;
        }
        let id = inner.sets.len() as u32;
        let labels = Arc::new(labels);
        inner.sets.push(Arc::clone(&labels));
        inner.ids.insert(labels, id);
        id
    }

    /// All label sets, indexed by id.
    pub fn sets(&self) -> Vec<Arc<Vec<(String, String)>>> {
        self.inner.lock().sets.clone()
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

/// The labels of one log entry after the pipeline, in Loki's categories.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EntryLabels {
    /// Full label set (the entry's stream in the response), sorted by name.
    pub labels: Vec<(String, String)>,
    /// Structured metadata part (categorize-labels only).
    pub structured_metadata: Vec<(String, String)>,
    /// Parsed part (categorize-labels only).
    pub parsed: Vec<(String, String)>,
}

/// Encode entry labels into one string so they travel through DataFusion's sort as a
/// plain Utf8 column. Format: three sections, each `count;` followed by
/// `name\0len\0value` items (values may contain anything, names never contain `\0`).
pub fn encode_labels(l: &EntryLabels, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    for section in [&l.labels, &l.structured_metadata, &l.parsed] {
        let _ = write!(out, "{};", section.len());
        for (k, v) in section.iter() {
            out.push_str(k);
            out.push('\0');
            let _ = write!(out, "{}", v.len());
            out.push('\0');
            out.push_str(v);
        }
    }
}

/// Inverse of [`encode_labels`]; `None` on malformed input (a bug of ours).
pub fn decode_labels(s: &str) -> Option<EntryLabels> {
    let mut rest = s;
    let mut sections: [Vec<(String, String)>; 3] = Default::default();
    for section in sections.iter_mut() {
        let semi = rest.find(';')?;
        let count: usize = rest[..semi].parse().ok()?;
        rest = &rest[semi + 1..];
        section.reserve(count);
        for _ in 0..count {
            let z = rest.find('\0')?;
            let name = &rest[..z];
            rest = &rest[z + 1..];
            let z = rest.find('\0')?;
            let len: usize = rest[..z].parse().ok()?;
            rest = &rest[z + 1..];
            let value = rest.get(..len)?;
            rest = &rest[len..];
            section.push((name.to_owned(), value.to_owned()));
        }
    }
    if !rest.is_empty() {
        return None;
    }
    let [labels, structured_metadata, parsed] = sections;
    Some(EntryLabels {
        labels,
        structured_metadata,
        parsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn labels_roundtrip_with_awkward_values() {
        let l = EntryLabels {
            labels: vec![p("a", ""), p("b", "x;1\0y"), p("c", "ünï")],
            structured_metadata: vec![p("trace_id", "12;3")],
            parsed: vec![],
        };
        let mut s = String::new();
        encode_labels(&l, &mut s);
        assert_eq!(decode_labels(&s), Some(l));
        let empty = EntryLabels::default();
        encode_labels(&empty, &mut s);
        assert_eq!(s, "0;0;0;");
        assert_eq!(decode_labels(&s), Some(empty));
        assert_eq!(decode_labels("1;a\u{0}5\u{0}ab"), None);
    }

    #[test]
    fn interner_gives_dense_stable_ids() {
        let i = Interner::new();
        let a = i.intern(vec![p("a", "1")]);
        let b = i.intern(vec![p("a", "2")]);
        let a2 = i.intern(vec![p("a", "1")]);
        assert_eq!((a, b, a2), (0, 1, 0));
        assert_eq!(i.len(), 2);
        assert_eq!(i.sets()[1].as_slice(), &[p("a", "2")]);
    }
}
