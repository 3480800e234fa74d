//! The tantivy label index of one tenant: stream label sets → stream ids.
//!
//! One tantivy document per stream that has reached a chunk file:
//!
//! | field       | options              | content                                    |
//! |-------------|----------------------|--------------------------------------------|
//! | `stream_id` | u64, indexed, stored | the stream fingerprint                     |
//! | `pair`      | raw string, indexed  | one term `name=value` per label            |
//! | `name`      | raw string, indexed  | one term per label name                    |
//! | `labels`    | stored               | the label set as a JSON array of pairs     |
//!
//! Matchers become a boolean query that narrows candidates with posting lists (`=` and
//! `!=` on values and on label presence); every candidate is then checked against all
//! matchers with [`Matcher::matches`], which is the single source of truth for matcher
//! semantics (Go RE2-style regexes, absent label = `""`). Time ranges are not indexed here:
//! they live in the manifest's per-stream ranges. Head streams are answered by the head.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tantivy::collector::DocSetCollector;
use tantivy::directory::MmapDirectory;
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, Value, INDEXED, STORED, STRING};
use tantivy::{Index, IndexReader, ReloadPolicy, TantivyDocument, Term};

use crate::error::{Error, Result};
use crate::model::{LabelSet, MatchOp, Matcher, StreamId};

/// Heap budget of the (short-lived) index writer.
const WRITER_HEAP_BYTES: usize = 15_000_000;

#[derive(Clone, Copy)]
struct Fields {
    stream_id: Field,
    pair: Field,
    name: Field,
    labels: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let stream_id = b.add_u64_field("stream_id", INDEXED | STORED);
    let pair = b.add_text_field("pair", STRING);
    let name = b.add_text_field("name", STRING);
    let labels = b.add_text_field("labels", STORED);
    (
        b.build(),
        Fields {
            stream_id,
            pair,
            name,
            labels,
        },
    )
}

fn pair_term(field: Field, name: &str, value: &str) -> Term {
    Term::from_field_text(field, &format!("{name}={value}"))
}

/// Label index of one tenant.
pub struct LabelIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    /// Every indexed stream; filled from the index at open and kept in step with it.
    known: RwLock<HashMap<StreamId, Arc<LabelSet>>>,
    /// Serialises writers (tantivy allows one per index).
    write_lock: Mutex<()>,
    /// Where a damaged index found at open was moved (it was rebuilt from the bucket).
    set_aside: Option<PathBuf>,
}

impl LabelIndex {
    /// Open (or create) the index in `dir`. The index is a cache of the bucket's label
    /// objects ([`crate::streams_log`]): one that fails its checksums or does not open is
    /// set aside as `<dir>.damaged-<ms>` and started empty, and the tenant's opening refills
    /// it from the bucket.
    pub fn open(dir: &Path) -> Result<LabelIndex> {
        match Self::open_checked(dir) {
            Ok(index) => Ok(index),
            Err(e) => {
                let aside = PathBuf::from(format!(
                    "{}.damaged-{}",
                    dir.display(),
                    crate::manifest::now_ms()
                ));
                std::fs::rename(dir, &aside).map_err(|source| Error::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
                tracing::error!(index = %dir.display(), set_aside = %aside.display(), error = %e,
                    "label index damaged; set aside and rebuilt from the bucket's label objects");
                let mut index = Self::open_checked(dir)?;
                index.set_aside = Some(aside);
                Ok(index)
            }
        }
    }

    fn open_checked(dir: &Path) -> Result<LabelIndex> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let (schema, fields) = schema();
        let directory = MmapDirectory::open(dir).map_err(|e| Error::Corrupt {
            path: dir.display().to_string(),
            detail: e.to_string(),
        })?;
        let index = Index::open_or_create(directory, schema)?;
        let damaged = index.validate_checksum()?;
        if !damaged.is_empty() {
            let mut files: Vec<String> = damaged.iter().map(|p| p.display().to_string()).collect();
            files.sort();
            return Err(Error::Corrupt {
                path: dir.display().to_string(),
                detail: format!("files failing their checksum: {}", files.join(", ")),
            });
        }
        Self::from_index(index, fields)
    }

    /// Where the damaged index found at open was set aside, if one was.
    pub fn set_aside(&self) -> Option<&Path> {
        self.set_aside.as_deref()
    }

    /// An index in memory (tests).
    pub fn in_memory() -> Result<LabelIndex> {
        let (schema, fields) = schema();
        Self::from_index(Index::create_in_ram(schema), fields)
    }

    fn from_index(index: Index, fields: Fields) -> Result<LabelIndex> {
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let this = LabelIndex {
            index,
            reader,
            fields,
            known: RwLock::new(HashMap::new()),
            write_lock: Mutex::new(()),
            set_aside: None,
        };
        let all = this.search(&AllQuery)?;
        *this.known.write() = all.into_iter().collect();
        Ok(this)
    }

    fn search(&self, query: &dyn Query) -> Result<Vec<(StreamId, Arc<LabelSet>)>> {
        let searcher = self.reader.searcher();
        let docs = searcher.search(query, &DocSetCollector)?;
        let mut out = Vec::with_capacity(docs.len());
        for addr in docs {
            let doc: TantivyDocument = searcher.doc(addr)?;
            let corrupt = |detail: &str| Error::Corrupt {
                path: "label index".into(),
                detail: detail.to_string(),
            };
            let id = doc
                .get_first(self.fields.stream_id)
                .and_then(|v| v.as_u64())
                .ok_or_else(|| corrupt("document without stream_id"))?;
            let json = doc
                .get_first(self.fields.labels)
                .and_then(|v| v.as_str())
                .ok_or_else(|| corrupt("document without labels"))?;
            let pairs: Vec<(String, String)> =
                serde_json::from_str(json).map_err(|e| corrupt(&e.to_string()))?;
            out.push((id, Arc::new(LabelSet::new(pairs))));
        }
        Ok(out)
    }

    /// Number of indexed streams.
    pub fn len(&self) -> usize {
        self.known.read().len()
    }

    /// `true` when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.known.read().is_empty()
    }

    /// Labels of an indexed stream.
    pub fn get(&self, id: StreamId) -> Option<Arc<LabelSet>> {
        self.known.read().get(&id).cloned()
    }

    /// Index the streams not indexed yet and commit. Blocking: call from a blocking thread.
    pub fn add_streams(&self, streams: &[(StreamId, Arc<LabelSet>)]) -> Result<usize> {
        let _guard = self.write_lock.lock();
        let new: Vec<&(StreamId, Arc<LabelSet>)> = {
            let known = self.known.read();
            streams
                .iter()
                .filter(|(id, _)| !known.contains_key(id))
                .collect()
        };
        if new.is_empty() {
            return Ok(0);
        }
        let mut writer = self
            .index
            .writer_with_num_threads::<TantivyDocument>(1, WRITER_HEAP_BYTES)?;
        for (id, labels) in &new {
            let mut doc = TantivyDocument::default();
            doc.add_u64(self.fields.stream_id, *id);
            for (k, v) in labels.pairs() {
                doc.add_text(self.fields.pair, format!("{k}={v}"));
                doc.add_text(self.fields.name, k);
            }
            let json = serde_json::to_string(labels.pairs())
                .map_err(|e| Error::Internal(e.to_string()))?;
            doc.add_text(self.fields.labels, json);
            writer.add_document(doc)?;
        }
        crate::fault::point("index.before_commit");
        writer.commit()?;
        crate::fault::point("index.after_commit");
        writer.wait_merging_threads()?;
        self.reader.reload()?;
        let mut known = self.known.write();
        for (id, labels) in new.iter() {
            known.insert(*id, labels.clone());
        }
        Ok(new.len())
    }

    /// Indexed streams matching all `matchers` (all streams when empty).
    pub fn lookup(&self, matchers: &[Matcher]) -> Result<Vec<(StreamId, Arc<LabelSet>)>> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut has_must = false;
        for m in matchers {
            let term = |value: &str| -> Box<dyn Query> {
                Box::new(TermQuery::new(
                    pair_term(self.fields.pair, &m.name, value),
                    IndexRecordOption::Basic,
                ))
            };
            let name_term = || -> Box<dyn Query> {
                Box::new(TermQuery::new(
                    Term::from_field_text(self.fields.name, &m.name),
                    IndexRecordOption::Basic,
                ))
            };
            match (m.op, m.value.is_empty()) {
                (MatchOp::Eq, false) => {
                    clauses.push((Occur::Must, term(&m.value)));
                    has_must = true;
                }
                (MatchOp::Eq, true) => clauses.push((Occur::MustNot, name_term())),
                (MatchOp::Neq, false) => clauses.push((Occur::MustNot, term(&m.value))),
                (MatchOp::Neq, true) => {
                    clauses.push((Occur::Must, name_term()));
                    has_must = true;
                }
                // Regexes are checked on the candidates below; tantivy's automaton regex
                // dialect differs from Loki's in corner cases, so it is not used to narrow.
                (MatchOp::Re | MatchOp::Nre, _) => {}
            }
        }
        if !has_must {
            clauses.push((Occur::Must, Box::new(AllQuery)));
        }
        let query = BooleanQuery::new(clauses);
        let mut found = self.search(&query)?;
        found.retain(|(_, labels)| matchers.iter().all(|m| m.matches_labels(labels)));
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(pairs: &[(&str, &str)]) -> Arc<LabelSet> {
        Arc::new(LabelSet::of(pairs))
    }

    fn ids(found: Vec<(StreamId, Arc<LabelSet>)>) -> Vec<StreamId> {
        let mut v: Vec<StreamId> = found.into_iter().map(|f| f.0).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn each_matcher_kind_selects_the_right_streams() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let index = LabelIndex::open(dir.path())?;
        index.add_streams(&[
            (1, ls(&[("job", "api"), ("env", "prod")])),
            (2, ls(&[("job", "api"), ("env", "dev")])),
            (3, ls(&[("job", "web")])),
        ])?;
        let m = |n: &str, op, v: &str| {
            Matcher::new(n, op, v).map_err(|e| Error::Internal(e.to_string()))
        };
        assert_eq!(ids(index.lookup(&[m("job", MatchOp::Eq, "api")?])?), [1, 2]);
        assert_eq!(
            ids(index.lookup(&[m("env", MatchOp::Neq, "prod")?])?),
            [2, 3]
        );
        assert_eq!(ids(index.lookup(&[m("env", MatchOp::Re, "p.*")?])?), [1]);
        assert_eq!(
            ids(index.lookup(&[m("env", MatchOp::Nre, "p.*|d.*")?])?),
            [3]
        );
        assert_eq!(ids(index.lookup(&[m("env", MatchOp::Eq, "")?])?), [3]);
        assert_eq!(ids(index.lookup(&[m("env", MatchOp::Neq, "")?])?), [1, 2]);
        assert_eq!(ids(index.lookup(&[])?), [1, 2, 3]);
        // Re-adding is a no-op; reopening finds everything again.
        assert_eq!(
            index.add_streams(&[(1, ls(&[("job", "api"), ("env", "prod")]))])?,
            0
        );
        drop(index);
        let index = LabelIndex::open(dir.path())?;
        assert_eq!(index.len(), 3);
        assert_eq!(
            index.get(3).map(|l| l.to_string()),
            Some("{job=\"web\"}".to_string())
        );
        Ok(())
    }
}
