//! Label-set helpers shared by the evaluator: lookups on sorted label vectors, `by`/`without`
//! reduction, and Prometheus-style rendering (`{a="b", c="d"}`) used in Loki's error texts.

use super::Labels;
use crate::ast::Grouping;

/// Loki's error label set by failing pipeline stages.
pub(crate) const ERROR_LABEL: &str = "__error__";
/// Loki's companion label carrying the error's details.
pub(crate) const ERROR_DETAILS_LABEL: &str = "__error_details__";

/// Positions of distinct keys kept in the caller's vector, found by hash: a key is stored
/// once (in the vector), not cloned into a map beside it, and its hash is kept so growing
/// the table never reads the keys again. Hashes with foldhash, randomly seeded.
#[derive(Default)]
pub struct KeyIndex {
    state: foldhash::fast::RandomState,
    /// (hash, position) of every key.
    table: hashbrown::HashTable<(u64, usize)>,
}

impl std::fmt::Debug for KeyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyIndex")
            .field("keys", &self.table.len())
            .finish()
    }
}

impl KeyIndex {
    /// An index sized for `capacity` keys.
    pub fn with_capacity(capacity: usize) -> KeyIndex {
        KeyIndex {
            state: foldhash::fast::RandomState::default(),
            table: hashbrown::HashTable::with_capacity(capacity),
        }
    }

    /// The hash of `key` in this index.
    pub fn hash(&self, key: impl std::hash::Hash) -> u64 {
        use std::hash::BuildHasher;
        self.state.hash_one(key)
    }

    /// The position of the key hashing to `hash` for which `is(position)` holds.
    pub fn find(&self, hash: u64, is: impl Fn(usize) -> bool) -> Option<usize> {
        self.table
            .find(hash, |&(h, i)| h == hash && is(i))
            .map(|&(_, i)| i)
    }

    /// Records `position` for a key hashing to `hash` (not recorded yet: `find` missed it).
    pub fn insert(&mut self, hash: u64, position: usize) {
        self.table
            .insert_unique(hash, (hash, position), |&(h, _)| h);
    }

    /// The position of `key` (one for which `is(position)` holds); when it has none,
    /// records `next` as its position and returns `None`.
    pub fn find_or_insert(
        &mut self,
        key: impl std::hash::Hash,
        next: usize,
        is: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let hash = self.hash(key);
        let found = self.find(hash, is);
        if found.is_none() {
            self.insert(hash, next);
        }
        found
    }
}

/// Value of `name`, if present. `labels` is sorted by name, so this is a binary search.
pub(crate) fn get<'a>(labels: &'a [(String, String)], name: &str) -> Option<&'a str> {
    labels
        .binary_search_by(|(n, _)| n.as_str().cmp(name))
        .ok()
        .map(|i| labels[i].1.as_str())
}

/// Sets `name` to `value`, keeping the vector sorted.
pub(crate) fn set(labels: &mut Labels, name: &str, value: &str) {
    match labels.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
        Ok(i) => labels[i].1 = value.to_string(),
        Err(i) => labels.insert(i, (name.to_string(), value.to_string())),
    }
}

/// Removes `name` if present.
pub(crate) fn remove(labels: &mut Labels, name: &str) {
    if let Ok(i) = labels.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
        labels.remove(i);
    }
}

/// `by (names)`: only the listed labels that exist with a non-empty value (Loki treats an
/// empty value as an absent label).
pub(crate) fn keep_only(labels: &[(String, String)], names: &[String]) -> Labels {
    labels
        .iter()
        .filter(|(n, v)| !v.is_empty() && names.iter().any(|g| g == n))
        .cloned()
        .collect()
}

/// `without (names)`: every label except the listed ones.
pub(crate) fn drop_names(labels: &[(String, String)], names: &[String]) -> Labels {
    labels
        .iter()
        .filter(|(n, _)| !names.iter().any(|g| g == n))
        .cloned()
        .collect()
}

/// The label set a grouping clause reduces `labels` to.
pub(crate) fn reduce(labels: &[(String, String)], grouping: &Grouping) -> Labels {
    if grouping.without {
        drop_names(labels, &grouping.labels)
    } else {
        keep_only(labels, &grouping.labels)
    }
}

/// Renders a label set as Prometheus' `labels.Labels.String()` does: `{a="x", b="y"}` with
/// values quoted like Go's `strconv.Quote`. Loki prints series this way in error messages.
pub(crate) fn format_labels(labels: &[(String, String)]) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push('=');
        go_quote(value, &mut out);
    }
    out.push('}');
    out
}

/// Go's `strconv.Quote` for valid UTF-8: escapes quotes, backslashes and control characters,
/// keeps printable characters as they are.
fn go_quote(s: &str, out: &mut String) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                if (c as u32) <= 0xffff {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Loki's `PipelineError` text for a series that still carries `__error__`.
pub(crate) fn pipeline_error(labels: &[(String, String)]) -> crate::Error {
    let kind = get(labels, ERROR_LABEL).unwrap_or_default();
    crate::Error::Validate(format!(
        "pipeline error: '{kind}' for series: '{}'.\n\
         Use a label filter to intentionally skip this error. (e.g | __error__!=\"{kind}\").\n\
         To skip all potential errors you can match empty errors.(e.g __error__=\"\")\n\
         The label filter can also be specified after unwrap. (e.g | unwrap latency | __error__=\"\" )",
        format_labels(labels)
    ))
}

/// Loki's series-limit message (the engine stops reads early with the same text).
pub fn max_series_message(limit: usize) -> String {
    format!(
        "maximum number of series ({limit}) reached for a single query; consider reducing query \
         cardinality by adding more specific stream selectors, reducing the time range, or \
         aggregating results with functions like sum(), count() or topk()"
    )
}

/// Loki's series-limit error.
pub(crate) fn max_series_error(limit: usize) -> crate::Error {
    crate::Error::Validate(max_series_message(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn by_keeps_only_listed_non_empty_labels() {
        let labels = l(&[("a", "1"), ("b", ""), ("c", "3")]);
        let g = Grouping {
            without: false,
            labels: vec!["b".into(), "c".into(), "zz".into()],
        };
        assert_eq!(reduce(&labels, &g), l(&[("c", "3")]));
    }

    #[test]
    fn without_drops_listed_labels() {
        let labels = l(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let g = Grouping {
            without: true,
            labels: vec!["b".into()],
        };
        assert_eq!(reduce(&labels, &g), l(&[("a", "1"), ("c", "3")]));
    }

    #[test]
    fn set_and_remove_keep_order() {
        let mut labels = l(&[("a", "1"), ("c", "3")]);
        set(&mut labels, "b", "2");
        set(&mut labels, "a", "x");
        assert_eq!(labels, l(&[("a", "x"), ("b", "2"), ("c", "3")]));
        remove(&mut labels, "b");
        remove(&mut labels, "nope");
        assert_eq!(labels, l(&[("a", "x"), ("c", "3")]));
        assert_eq!(get(&labels, "c"), Some("3"));
        assert_eq!(get(&labels, "b"), None);
    }

    #[test]
    fn formats_like_prometheus() {
        let labels = l(&[("a", "say \"hi\"\n"), ("b", "can't '}'")]);
        assert_eq!(
            format_labels(&labels),
            r#"{a="say \"hi\"\n", b="can't '}'"}"#
        );
        assert_eq!(format_labels(&[]), "{}");
    }

    #[test]
    fn pipeline_error_text_matches_loki() {
        let labels = l(&[("__error__", "JSONParserErr"), ("job", "x")]);
        let msg = pipeline_error(&labels).to_string();
        assert!(msg.starts_with(
            "pipeline error: 'JSONParserErr' for series: '{__error__=\"JSONParserErr\", job=\"x\"}'.\nUse a label filter"
        ));
        assert!(msg.contains("(e.g | __error__!=\"JSONParserErr\")"));
    }
}
