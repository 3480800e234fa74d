//! Plain data types shared by the write and read paths. Timestamps are `i64` nanoseconds
//! since the Unix epoch everywhere.

use std::fmt;

/// A tenant (Loki's `X-Scope-OrgID`; `fake` when auth is disabled).
pub type TenantId = String;

/// A stream's id inside one tenant: a 64-bit fingerprint of its canonical label set.
pub type StreamId = u64;

/// A set of labels sorted by name, without duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct LabelSet(Vec<(String, String)>);

impl LabelSet {
    /// [`LabelSet::new`] from borrowed pairs (tests).
    #[cfg(test)]
    pub(crate) fn of(pairs: &[(&str, &str)]) -> Self {
        LabelSet::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// Build from pairs; sorts by name. Callers validate duplicates beforehand
    /// (a later duplicate replaces an earlier one here).
    pub fn new(mut pairs: Vec<(String, String)>) -> Self {
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                std::mem::swap(&mut earlier.1, &mut later.1);
                true
            } else {
                false
            }
        });
        LabelSet(pairs)
    }

    /// The pairs, sorted by name.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// Value of a label.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `true` when there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The stream fingerprint: FNV-1a over `name \xff value \xff …` (stable across
    /// versions and machines; it is stored on disk).
    pub fn fingerprint(&self) -> StreamId {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (k, v) in &self.0 {
            for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }
}

impl fmt::Display for LabelSet {
    /// Prometheus form: `{a="b", c="d"}` with Go-style escaping of values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}=\"")?;
            for c in v.chars() {
                match c {
                    '"' => f.write_str("\\\"")?,
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("\"")?;
        }
        f.write_str("}")
    }
}

/// One log entry of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Timestamp, ns since the epoch.
    pub ts_ns: i64,
    /// The log line.
    pub line: String,
    /// Structured metadata (name, value), in push order.
    pub metadata: Vec<(String, String)>,
}

/// A validated stream of a push request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushStream {
    /// The stream's labels.
    pub labels: LabelSet,
    /// Its entries, in push order (not necessarily sorted).
    pub entries: Vec<Entry>,
}

/// String matcher operators (same meaning as LogQL's, but storage knows no syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// equal
    Eq,
    /// not equal
    Neq,
    /// fully anchored regex match
    Re,
    /// fully anchored regex non-match
    Nre,
}

/// A label matcher; an absent label matches as the empty string.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Operator.
    pub op: MatchOp,
    /// Value or regex source.
    pub value: String,
    /// Compiled `^(?:value)$` for regex operators.
    regex: Option<regex::Regex>,
}

impl Matcher {
    /// Build a matcher; compiles regexes (anchored at both ends).
    pub fn new(
        name: impl Into<String>,
        op: MatchOp,
        value: impl Into<String>,
    ) -> Result<Self, regex::Error> {
        let value = value.into();
        let regex = match op {
            MatchOp::Re | MatchOp::Nre => Some(regex::Regex::new(&format!("^(?s:{value})$"))?),
            _ => None,
        };
        Ok(Matcher {
            name: name.into(),
            op,
            value,
            regex,
        })
    }

    /// Does `value` (the label's value, `""` when absent) match?
    pub fn matches(&self, value: &str) -> bool {
        match self.op {
            MatchOp::Eq => value == self.value,
            MatchOp::Neq => value != self.value,
            MatchOp::Re => self.regex.as_ref().is_some_and(|r| r.is_match(value)),
            MatchOp::Nre => !self.regex.as_ref().is_some_and(|r| r.is_match(value)),
        }
    }

    /// Does this matcher accept a label set?
    pub fn matches_labels(&self, labels: &LabelSet) -> bool {
        self.matches(labels.get(&self.name).unwrap_or(""))
    }
}

/// A stream known to the store, with its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// Stream id.
    pub id: StreamId,
    /// Stream labels.
    pub labels: LabelSet,
}
