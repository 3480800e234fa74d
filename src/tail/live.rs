//! The state of one tail between the write path and its websocket: runs the query's LogQL
//! pipeline over pushed entries (as `query::logs` does over stored rows), holds entries for
//! `delay_for`, hands out ready entries oldest first, and remembers what was dropped.
//!
//! Everything here is synchronous and bounded; the session in `server::routes::tail` drives it.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde_json::Value;
use tovlog_logql::pipeline::{LabelsBuilder, Pipeline};

use super::{
    DroppedEntry, LiveBatch, TailEntry, MAX_DROPPED_LISTED, MAX_PENDING_BYTES, MAX_PENDING_ENTRIES,
};
use crate::query::encode::Categories;

/// Per-tail processing state.
#[derive(Debug)]
pub struct Live {
    pipeline: Pipeline,
    lb: LabelsBuilder,
    categorize: bool,
    delay_ns: i64,
    pending: Vec<TailEntry>,
    pending_bytes: usize,
    dropped: Vec<DroppedEntry>,
    /// Keys of the recent entries already sent from storage; live entries delivered
    /// before that query finished may be among them (see [`Live::add_history`]).
    seen: Option<HashSet<u64>>,
    last_labels: Arc<Vec<(String, String)>>,
    last_categories: Option<Arc<Categories>>,
    /// Tails with the same key run the same pipeline and share its output per batch
    /// (`None`: not shared).
    shared_key: Option<u64>,
}

fn entry_key(ts_ns: i64, line: &str, labels: &[(String, String)]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ts_ns.hash(&mut h);
    line.hash(&mut h);
    labels.hash(&mut h);
    h.finish()
}

/// `{name: value}` of a JSON object as sorted pairs.
fn pairs(v: Option<&Value>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

impl Live {
    /// State for a query whose pipeline is `pipeline`; `delay_ns` is `delay_for`.
    pub fn new(pipeline: Pipeline, categorize: bool, delay_ns: i64) -> Live {
        Live {
            pipeline,
            lb: LabelsBuilder::new(),
            categorize,
            delay_ns: delay_ns.max(0),
            pending: Vec::new(),
            pending_bytes: 0,
            dropped: Vec::new(),
            seen: None,
            last_labels: Arc::new(Vec::new()),
            last_categories: None,
            shared_key: None,
        }
    }

    /// Share the pipeline's output per batch with the other tails of `query` (the query
    /// text with its `categorize-labels` choice decides the output, nothing else).
    pub fn shared(mut self, query: &str) -> Live {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        query.hash(&mut h);
        self.categorize.hash(&mut h);
        self.shared_key = Some(h.finish());
        self
    }

    /// Queue the entries of a `streams` query result (the recent entries a tail starts
    /// with; the engine already ran the pipeline), and remember them so that the live
    /// entries of the next [`Live::ingest`] that are among them are not sent twice.
    /// Returns how many were queued.
    pub fn add_history(&mut self, body: &Value) -> usize {
        let mut seen = HashSet::new();
        let streams = body
            .pointer("/data/result")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let before = self.pending.len();
        for s in streams {
            let labels = Arc::new(pairs(s.get("stream")));
            let values = s
                .get("values")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            for v in values {
                let ts_ns = v
                    .get(0)
                    .and_then(Value::as_str)
                    .and_then(|t| t.parse::<i64>().ok());
                let (Some(ts_ns), Some(line)) = (ts_ns, v.get(1).and_then(Value::as_str)) else {
                    continue;
                };
                let categories = if self.categorize {
                    let c = v.get(2);
                    Some(Arc::new(Categories {
                        structured_metadata: pairs(c.and_then(|c| c.get("structuredMetadata"))),
                        parsed: pairs(c.and_then(|c| c.get("parsed"))),
                    }))
                } else {
                    None
                };
                seen.insert(entry_key(ts_ns, line, &labels));
                self.pending_bytes += line.len();
                self.pending.push(TailEntry {
                    ts_ns,
                    line: line.to_owned(),
                    labels: Arc::clone(&labels),
                    categories,
                });
            }
        }
        self.seen = Some(seen);
        self.pending.len() - before
    }

    /// The pipeline's output for one batch.
    fn process(&mut self, batch: &LiveBatch) -> Vec<TailEntry> {
        let mut out = Vec::new();
        let stream_labels = batch.stream.labels.pairs();
        let mut stream_arc: Option<Arc<Vec<(String, String)>>> = None;
        for entry in &batch.stream.entries {
            self.lb.reset(stream_labels, &entry.metadata);
            let Some(line) = self
                .pipeline
                .process(entry.ts_ns, &entry.line, &mut self.lb)
            else {
                continue;
            };
            let labels = if self.lb.is_unchanged() {
                Arc::clone(stream_arc.get_or_insert_with(|| Arc::new(stream_labels.to_vec())))
            } else {
                let l = self.lb.labels();
                if *self.last_labels != l {
                    self.last_labels = Arc::new(l);
                }
                Arc::clone(&self.last_labels)
            };
            let categories = self.categorize.then(|| {
                let c = self.lb.categorized();
                let fresh = Categories {
                    structured_metadata: c.structured_metadata,
                    parsed: c.parsed,
                };
                match &self.last_categories {
                    Some(last) if **last == fresh => Arc::clone(last),
                    _ => {
                        let a = Arc::new(fresh);
                        self.last_categories = Some(Arc::clone(&a));
                        a
                    }
                }
            });
            out.push(TailEntry {
                ts_ns: entry.ts_ns,
                line: line.into_owned(),
                labels,
                categories,
            });
        }
        out
    }

    /// Run the pipeline over delivered streams and queue what it keeps. Returns the
    /// number of entries dropped because too many are held back by `delay_for`.
    pub fn ingest(&mut self, batches: &[Arc<LiveBatch>]) -> u64 {
        let seen = self.seen.take();
        let mut dropped = 0u64;
        for batch in batches {
            let shared = self.shared_key.and_then(|key| {
                let memo = batch.processed.lock();
                memo.iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, e)| Arc::clone(e))
            });
            let entries = match shared {
                Some(entries) => entries,
                None => {
                    let entries = Arc::new(self.process(batch));
                    if let Some(key) = self.shared_key {
                        batch.processed.lock().push((key, Arc::clone(&entries)));
                    }
                    entries
                }
            };
            for e in entries.iter() {
                if let Some(seen) = &seen {
                    if seen.contains(&entry_key(e.ts_ns, &e.line, &e.labels)) {
                        continue;
                    }
                }
                if self.pending.len() >= MAX_PENDING_ENTRIES
                    || self.pending_bytes >= MAX_PENDING_BYTES
                {
                    dropped += 1;
                    self.drop_one(e);
                    continue;
                }
                self.pending_bytes += e.line.len();
                self.pending.push(e.clone());
            }
        }
        dropped
    }

    /// Entries whose time has come (`ts + delay_for <= now`), oldest first (ties keep
    /// their arrival order).
    pub fn take_ready(&mut self, now_ns: i64) -> Vec<TailEntry> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        self.pending.sort_by_key(|e| e.ts_ns);
        let cut = now_ns.saturating_sub(self.delay_ns);
        let n = self.pending.partition_point(|e| e.ts_ns <= cut);
        let rest = self.pending.split_off(n);
        let ready = std::mem::replace(&mut self.pending, rest);
        self.pending_bytes = self.pending.iter().map(|e| e.line.len()).sum();
        ready
    }

    /// When the oldest held entry becomes ready, ns.
    pub fn next_ready_ns(&self) -> Option<i64> {
        self.pending
            .iter()
            .map(|e| e.ts_ns)
            .min()
            .map(|ts| ts.saturating_add(self.delay_ns))
    }

    /// Entries held back.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    fn drop_one(&mut self, e: &TailEntry) {
        if self.dropped.len() < MAX_DROPPED_LISTED {
            self.dropped.push(DroppedEntry {
                ts_ns: e.ts_ns,
                labels: e.labels.as_ref().clone(),
            });
        }
    }

    /// Record entries the client did not get.
    pub fn drop_entries(&mut self, entries: &[TailEntry]) {
        for e in entries {
            if self.dropped.len() >= MAX_DROPPED_LISTED {
                break;
            }
            self.drop_one(e);
        }
    }

    /// Record entries dropped before the pipeline (a full inbox).
    pub fn add_dropped(&mut self, dropped: Vec<DroppedEntry>) {
        let room = MAX_DROPPED_LISTED.saturating_sub(self.dropped.len());
        self.dropped.extend(dropped.into_iter().take(room));
    }

    /// Whether dropped entries wait to be reported.
    pub fn has_dropped(&self) -> bool {
        !self.dropped.is_empty()
    }

    /// The dropped entries to report in the next frame.
    pub fn take_dropped(&mut self) -> Vec<DroppedEntry> {
        std::mem::take(&mut self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tovlog_storage::{Entry, LabelSet, PushStream};

    fn live(query: &str, categorize: bool, delay_ns: i64) -> Live {
        let Ok(tovlog_logql::ast::Expr::Log(log)) = tovlog_logql::parse(query) else {
            panic!("not a log query: {query}");
        };
        let Ok(p) = Pipeline::new(&log.pipeline) else {
            panic!("bad pipeline")
        };
        Live::new(p, categorize, delay_ns)
    }

    fn batch(lines: &[(i64, &str)]) -> Arc<LiveBatch> {
        let entries: Vec<Entry> = lines
            .iter()
            .map(|(ts, l)| Entry {
                ts_ns: *ts,
                line: (*l).to_owned(),
                metadata: vec![("trace".into(), "t1".into())],
            })
            .collect();
        Arc::new(LiveBatch::new(PushStream {
            labels: LabelSet::new(vec![("job".into(), "x".into())]),
            entries,
        }))
    }

    #[test]
    fn pipeline_filters_parses_and_orders() {
        let mut l = live(r#"{job="x"} |= "keep" | logfmt | level="error""#, false, 0);
        let b = batch(&[
            (3, "level=error msg=keep-c"),
            (1, "level=error msg=keep-a"),
            (2, "level=error msg=drop"),
            (4, "level=info msg=keep-d"),
        ]);
        assert_eq!(l.ingest(&[b]), 0);
        let ready = l.take_ready(10);
        let got: Vec<(i64, &str)> = ready.iter().map(|e| (e.ts_ns, e.line.as_str())).collect();
        assert_eq!(
            got,
            vec![(1, "level=error msg=keep-a"), (3, "level=error msg=keep-c")]
        );
        let names: Vec<&str> = ready[0].labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["job", "level", "msg", "trace"]);
        assert_eq!(l.pending_len(), 0);
    }

    #[test]
    fn tails_of_one_query_share_the_pipeline_output() {
        let q = r#"{job="x"} |= "keep" | logfmt"#;
        let mut a = live(q, false, 0).shared(q);
        let mut b = live(q, false, 0).shared(q);
        let mut other = live(r#"{job="x"} |= "drop""#, false, 0).shared(r#"{job="x"} |= "drop""#);
        let batch = batch(&[(1, "msg=keep-a"), (2, "msg=drop")]);
        for l in [&mut a, &mut b, &mut other] {
            assert_eq!(l.ingest(&[Arc::clone(&batch)]), 0);
        }
        // One output per distinct query, whatever the number of tails.
        assert_eq!(batch.processed.lock().len(), 2);
        let (ra, rb) = (a.take_ready(10), b.take_ready(10));
        assert_eq!(ra, rb);
        assert_eq!(ra.len(), 1);
        assert_eq!(other.take_ready(10)[0].line, "msg=drop");
    }

    #[test]
    fn delay_for_holds_entries() {
        let mut l = live(r#"{job="x"}"#, true, 5);
        l.ingest(&[batch(&[(10, "a"), (20, "b")])]);
        assert!(l.take_ready(14).is_empty());
        assert_eq!(l.next_ready_ns(), Some(15));
        let r = l.take_ready(15);
        assert_eq!(r.len(), 1);
        let c = r[0].categories.as_deref().cloned().unwrap_or_default();
        assert_eq!(c.structured_metadata, vec![("trace".into(), "t1".into())]);
        assert_eq!(l.next_ready_ns(), Some(25));
        assert_eq!(l.take_ready(100).len(), 1);
    }

    #[test]
    fn history_comes_first_and_is_not_repeated() {
        let mut l = live(r#"{job="x"}"#, false, 0);
        let body = json!({"data": {"result": [
            {"stream": {"job": "x", "trace": "t1"}, "values": [["2", "b"], ["1", "a"]]}
        ]}});
        assert_eq!(l.add_history(&body), 2);
        // The live copy of "b" was delivered while the history query ran.
        l.ingest(&[batch(&[(2, "b"), (3, "c")])]);
        let lines: Vec<String> = l.take_ready(10).into_iter().map(|e| e.line).collect();
        assert_eq!(lines, ["a", "b", "c"]);
        // Later deliveries are never deduplicated.
        l.ingest(&[batch(&[(2, "b")])]);
        assert_eq!(l.take_ready(10).len(), 1);
    }

    #[test]
    fn drops_are_listed_up_to_the_cap() {
        let mut l = live(r#"{job="x"}"#, false, 1_000_000);
        let lines: Vec<(i64, String)> = (0..(MAX_PENDING_ENTRIES + 5) as i64)
            .map(|i| (i, format!("l{i}")))
            .collect();
        let refs: Vec<(i64, &str)> = lines.iter().map(|(t, s)| (*t, s.as_str())).collect();
        assert_eq!(l.ingest(&[batch(&refs)]), 5);
        assert_eq!(l.pending_len(), MAX_PENDING_ENTRIES);
        let ready = l.take_ready(i64::MAX);
        l.drop_entries(&ready);
        assert_eq!(l.take_dropped().len(), MAX_DROPPED_LISTED);
        assert!(!l.has_dropped());
    }
}
