//! The per-entry label set while an entry goes through the pipeline ([`LabelsBuilder`]).
//!
//! Modelled on Loki's `LabelsBuilder` because its observable quirks are the spec:
//! stream labels are an immutable base plus a deletion list; structured metadata and
//! parsed labels are "added" lists; a parsed label shadows a metadata or stream label of
//! the same name; `__error__`/`__error_details__` live outside the label lists. Every
//! buffer is reused across entries (`reset`), so steady state allocates nothing unless a
//! stage creates a longer value than any seen before.

use crate::template::LabelLookup;

/// Name of the error label set by failing stages.
pub const ERROR_LABEL: &str = "__error__";
/// Name of the error details label.
pub const ERROR_DETAILS_LABEL: &str = "__error_details__";
/// Suffix given to parsed names that collide with stream labels or structured metadata.
pub(crate) const DUPLICATE_SUFFIX: &str = "_extracted";

/// Where a label came from (Loki's `LabelCategory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Category {
    Stream,
    Metadata,
    Parsed,
}

/// The labels of one entry. Reusable across entries with [`LabelsBuilder::reset`].
#[derive(Debug, Default)]
pub struct LabelsBuilder {
    /// Stream labels, sorted by name (the immutable base).
    base: Vec<(String, String)>,
    /// Names of deleted labels (hide base labels).
    del: Slots<String>,
    /// Structured metadata, push order.
    meta: Slots<(String, String)>,
    /// Parsed labels (parsers, `label_format`), in order of creation.
    parsed: Slots<(String, String)>,
    /// Every name ever added as a parsed label for this entry; later implicit parsers skip
    /// these ("first writer wins"). Deletion does not clear it, as in Loki.
    extracted: Slots<String>,
    err: String,
    err_details: String,
    /// Scratch for `label_format` template snapshots.
    pub(crate) snapshot: Vec<(String, String)>,
    /// Scratch strings parsers borrow for key building (kept to avoid per-line allocation).
    pub(crate) scratch_a: String,
    pub(crate) scratch_b: String,
    pub(crate) scratch_ranges: Vec<(usize, usize)>,
}

/// A list whose removed items keep their strings for the next entry: every entry of a
/// scan sets the same few labels, which then cost no allocation and no moves.
#[derive(Debug, Default)]
struct Slots<T> {
    items: Vec<T>,
    /// Items in use: `items[..len]`.
    len: usize,
}

impl<T: Default> Slots<T> {
    fn as_slice(&self) -> &[T] {
        &self.items[..self.len]
    }

    fn iter(&self) -> std::slice::Iter<'_, T> {
        self.as_slice().iter()
    }

    fn iter_mut(&mut self) -> std::slice::IterMut<'_, T> {
        self.items[..self.len].iter_mut()
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    /// Remove item `i`, keeping the order of the others.
    fn remove(&mut self, i: usize) {
        self.items[i..self.len].rotate_left(1);
        self.len -= 1;
    }

    /// A new last item: an old one to overwrite, or a default one.
    fn push_slot(&mut self) -> &mut T {
        if self.len == self.items.len() {
            self.items.push(T::default());
        }
        self.len += 1;
        &mut self.items[self.len - 1]
    }
}

fn overwrite(dst: &mut String, src: &str) {
    dst.clear();
    dst.push_str(src);
}

/// A label set split into Loki's categories (`categorize-labels` responses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CategorizedLabels {
    /// Stream labels left after the pipeline.
    pub stream: Vec<(String, String)>,
    /// Structured metadata not shadowed by parsed labels.
    pub structured_metadata: Vec<(String, String)>,
    /// Parsed labels, plus `__error__`/`__error_details__` when set (Loki puts them here).
    pub parsed: Vec<(String, String)>,
}

impl LabelsBuilder {
    /// An empty builder.
    pub fn new() -> LabelsBuilder {
        LabelsBuilder::default()
    }

    /// Start a new entry: stream labels (sorted by name) and structured metadata (push order).
    pub fn reset(&mut self, stream: &[(String, String)], metadata: &[(String, String)]) {
        // The base is usually the same stream as the previous entry: only copy on change.
        if self.base.as_slice() != stream {
            self.base.truncate(stream.len());
            let common = self.base.len();
            for (dst, src) in self.base.iter_mut().zip(stream) {
                dst.0.clone_from(&src.0);
                dst.1.clone_from(&src.1);
            }
            self.base.extend_from_slice(&stream[common..]);
        }
        self.reset_entry(metadata);
    }

    /// [`Self::reset`] for an entry of the stream of the previous reset, which the caller
    /// knows: the stream labels are kept without comparing them.
    pub fn reset_entry(&mut self, metadata: &[(String, String)]) {
        self.del.clear();
        self.meta.clear();
        self.parsed.clear();
        self.extracted.clear();
        self.err.clear();
        self.err_details.clear();
        for (name, value) in metadata {
            // Loki's `Add`: metadata named like a stream label gets the suffix.
            if self.base_has(name) {
                let suffixed = format!("{name}{DUPLICATE_SUFFIX}");
                self.add_metadata(&suffixed, value);
            } else {
                self.add_metadata(name, value);
            }
        }
    }

    fn add_metadata(&mut self, name: &str, value: &str) {
        match name {
            ERROR_LABEL => self.set_err(value),
            ERROR_DETAILS_LABEL => self.set_error_details(value),
            _ => self.set(Category::Metadata, name, value),
        }
    }

    /// True when a stream label has this name (Loki's `BaseHas`).
    pub(crate) fn base_has(&self, name: &str) -> bool {
        self.base.iter().any(|(n, _)| n == name)
    }

    /// True when a structured metadata label has this name.
    pub(crate) fn meta_has(&self, name: &str) -> bool {
        self.meta.iter().any(|(n, _)| n == name)
    }

    /// The name a parser must use for `name`: suffixed when it collides with a stream
    /// label or structured metadata.
    pub(crate) fn collides(&self, name: &str) -> bool {
        self.base_has(name) || self.meta_has(name)
    }

    /// True when `name` was already added as a parsed label for this entry.
    pub(crate) fn extracted(&self, name: &str) -> bool {
        self.extracted.iter().any(|n| n == name)
    }

    /// The value of a label, with its category.
    pub(crate) fn get_with_category(&self, name: &str) -> Option<(&str, Category)> {
        if let Some((_, v)) = self.meta.iter().find(|(n, _)| n == name) {
            return Some((v, Category::Metadata));
        }
        if let Some((_, v)) = self.parsed.iter().find(|(n, _)| n == name) {
            return Some((v, Category::Parsed));
        }
        if self.del.iter().any(|n| n == name) {
            return None;
        }
        // Loki treats an empty stream label value as absent.
        match self.base.iter().find(|(n, _)| n == name) {
            Some((_, v)) if !v.is_empty() => Some((v, Category::Stream)),
            _ => None,
        }
    }

    /// The value of a label (stream, metadata or parsed). `__error__` is not a label here;
    /// see [`LabelsBuilder::error`].
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_with_category(name).map(|(v, _)| v)
    }

    /// Set a label in a category, following Loki's precedence (parsed > metadata > stream).
    pub(crate) fn set(&mut self, category: Category, name: &str, value: &str) {
        match category {
            Category::Parsed => {
                self.remove_from(Category::Metadata, name);
            }
            Category::Metadata => {
                if self.parsed.iter().any(|(n, _)| n == name) {
                    return;
                }
            }
            Category::Stream => {}
        }
        let list = match category {
            Category::Metadata => &mut self.meta,
            Category::Parsed => &mut self.parsed,
            // Stages never add stream labels; treat as metadata-free parsed shadowing.
            Category::Stream => &mut self.parsed,
        };
        if let Some((_, v)) = list.iter_mut().find(|(n, _)| n == name) {
            overwrite(v, value);
            return;
        }
        let (n, v) = list.push_slot();
        overwrite(n, name);
        overwrite(v, value);
        if category == Category::Parsed && !self.extracted(name) {
            overwrite(self.extracted.push_slot(), name);
        }
    }

    /// Shorthand for a parsed label.
    pub(crate) fn set_parsed(&mut self, name: &str, value: &str) {
        self.set(Category::Parsed, name, value);
    }

    fn remove_from(&mut self, category: Category, name: &str) {
        let list = match category {
            Category::Metadata => &mut self.meta,
            Category::Parsed => &mut self.parsed,
            Category::Stream => return,
        };
        if let Some(i) = list.iter().position(|(n, _)| n == name) {
            list.remove(i);
        }
    }

    /// Delete a label from every category (Loki's `Del`).
    pub(crate) fn del(&mut self, name: &str) {
        self.remove_from(Category::Metadata, name);
        self.remove_from(Category::Parsed, name);
        overwrite(self.del.push_slot(), name);
    }

    /// Set `__error__`.
    pub(crate) fn set_err(&mut self, err: &str) {
        self.err.clear();
        self.err.push_str(err);
    }

    /// Set `__error_details__`.
    pub(crate) fn set_error_details(&mut self, details: &str) {
        self.err_details.clear();
        self.err_details.push_str(details);
    }

    /// Clear `__error__`.
    pub(crate) fn reset_error(&mut self) {
        self.err.clear();
    }

    /// Clear `__error_details__`.
    pub(crate) fn reset_error_details(&mut self) {
        self.err_details.clear();
    }

    /// The `__error__` value ("" when none).
    pub fn error(&self) -> &str {
        &self.err
    }

    /// The `__error_details__` value ("" when none).
    pub fn error_details(&self) -> &str {
        &self.err_details
    }

    /// True when `__error__` is set.
    pub fn has_error(&self) -> bool {
        !self.err.is_empty()
    }

    /// Labels in Loki's "unsorted labels" order, each with its category.
    fn for_each<'s>(&'s self, mut f: impl FnMut(&'s str, &'s str, Category)) {
        for (n, v) in &self.base {
            if self.del.iter().any(|d| d == n)
                || self.meta.iter().any(|(m, _)| m == n)
                || self.parsed.iter().any(|(p, _)| p == n)
            {
                continue;
            }
            f(n, v, Category::Stream);
        }
        for (n, v) in self.meta.iter() {
            if self.parsed.iter().any(|(p, _)| p == n) {
                continue;
            }
            f(n, v, Category::Metadata);
        }
        for (n, v) in self.parsed.iter() {
            f(n, v, Category::Parsed);
        }
        if !self.err.is_empty() {
            f(ERROR_LABEL, &self.err, Category::Parsed);
        }
        if !self.err_details.is_empty() {
            f(ERROR_DETAILS_LABEL, &self.err_details, Category::Parsed);
        }
    }

    /// Final label set sorted by name: stream + structured metadata + parsed, after
    /// drops/renames, including `__error__`/`__error_details__` when set.
    pub fn labels(&self) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(self.base.len() + self.meta.len() + self.parsed.len());
        self.for_each(|n, v, _| out.push((n.to_string(), v.to_string())));
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// [`LabelsBuilder::labels`] into a reused vector: existing strings are overwritten in
    /// place, so a caller that keeps `out` across entries allocates nothing in steady state.
    pub fn labels_into(&self, out: &mut Vec<(String, String)>) {
        self.copy_into(out);
        // Names are unique; sorting moves the pairs, not their bytes.
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }

    /// The current labels (with error labels) into `out` in `for_each` order, reusing its
    /// strings.
    fn copy_into(&self, out: &mut Vec<(String, String)>) {
        let mut i = 0;
        self.for_each(|n, v, _| {
            match out.get_mut(i) {
                Some(dst) => {
                    dst.0.clear();
                    dst.0.push_str(n);
                    dst.1.clear();
                    dst.1.push_str(v);
                }
                None => out.push((n.to_string(), v.to_string())),
            }
            i += 1;
        });
        out.truncate(i);
    }

    /// A hash of the final label set (same as hashing [`LabelsBuilder::labels`]), without
    /// copying any string: lets callers find the output stream of an entry cheaply.
    pub fn labels_hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut refs: Vec<(&str, &str)> = Vec::with_capacity(16);
        self.for_each(|n, v, _| refs.push((n, v)));
        refs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (n, v) in refs {
            n.hash(&mut h);
            v.hash(&mut h);
        }
        h.finish()
    }

    /// Same labels split into Loki's categories for `categorize-labels` responses.
    pub fn categorized(&self) -> CategorizedLabels {
        let mut out = CategorizedLabels::default();
        self.for_each(|n, v, c| {
            let pair = (n.to_string(), v.to_string());
            match c {
                Category::Stream => out.stream.push(pair),
                Category::Metadata => out.structured_metadata.push(pair),
                Category::Parsed => out.parsed.push(pair),
            }
        });
        out.stream.sort_by(|a, b| a.0.cmp(&b.0));
        out.structured_metadata.sort_by(|a, b| a.0.cmp(&b.0));
        out.parsed.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// True when the pipeline changed nothing: the labels are exactly the stream labels.
    pub fn is_unchanged(&self) -> bool {
        self.del.is_empty()
            && self.meta.is_empty()
            && self.parsed.is_empty()
            && self.err.is_empty()
            && self.err_details.is_empty()
    }

    /// Copy the current labels (with error labels) into the snapshot buffer used by
    /// `label_format` templates, reusing its strings.
    pub(crate) fn fill_snapshot(&mut self) {
        let mut snap = std::mem::take(&mut self.snapshot);
        self.copy_into(&mut snap);
        self.snapshot = snap;
    }

    /// Names of all current labels except the error labels (for `keep`).
    pub(crate) fn names(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.for_each(|n, _, _| {
            if n != ERROR_LABEL && n != ERROR_DETAILS_LABEL && n != super::PRESERVE_ERROR_LABEL {
                out.push(n.to_string());
            }
        });
        out
    }
}

impl LabelLookup for LabelsBuilder {
    fn label(&self, name: &str) -> Option<&str> {
        match name {
            ERROR_LABEL if !self.err.is_empty() => Some(&self.err),
            ERROR_DETAILS_LABEL if !self.err_details.is_empty() => Some(&self.err_details),
            _ => self.get(name),
        }
    }

    fn all(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        self.for_each(|n, v, _| out.push((n, v)));
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    }
}

/// A frozen copy of the labels, as `label_format` templates see them.
pub(crate) struct SnapshotLookup<'a>(pub(crate) &'a [(String, String)]);

impl LabelLookup for SnapshotLookup<'_> {
    fn label(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> = self
            .0
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`: unchanged by [`sanitize_label_key`].
pub(crate) fn is_label_name(key: &str) -> bool {
    let b = key.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Loki's `sanitizeLabelKey(key, true)`: trim spaces, prefix a leading digit with `_`,
/// replace every char outside `[A-Za-z0-9_]` by `_`.
pub(crate) fn sanitize_label_key(key: &str, out: &mut String) {
    out.clear();
    if is_label_name(key) {
        // The usual key: one copy instead of a push per char.
        out.push_str(key);
        return;
    }
    // Keys are nearly always short ASCII without surrounding spaces: no trimming and a
    // byte-wise copy then.
    let plain = |c: &u8| c.is_ascii() && !matches!(c, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ');
    let b = key.as_bytes();
    let key = match (b.first(), b.last()) {
        (Some(f), Some(l)) if plain(f) && plain(l) => key,
        _ => key.trim_matches(is_go_space),
    };
    if key.is_empty() {
        return;
    }
    if key.as_bytes()[0].is_ascii_digit() {
        out.push('_');
    }
    if key.is_ascii() {
        out.extend(key.bytes().map(|c| {
            if c.is_ascii_alphanumeric() || c == b'_' {
                c as char
            } else {
                '_'
            }
        }));
        return;
    }
    for c in key.chars() {
        out.push(if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        });
    }
}

/// Go's `unicode.IsSpace` (what `strings.TrimSpace` trims).
pub(crate) fn is_go_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{85}' | '\u{a0}'
    ) || (c as u32 > 0xff && c.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn reused_entries_keep_no_label_of_the_previous_one() {
        let stream = pairs(&[("app", "a")]);
        let mut lb = LabelsBuilder::new();
        lb.reset(&stream, &pairs(&[("trace_id", "t1"), ("pod", "p")]));
        lb.set_parsed("x", "1");
        lb.set_parsed("y", "2");
        lb.set_parsed("z", "3");
        lb.del("y");
        lb.del("app");
        assert_eq!(
            lb.labels(),
            pairs(&[("pod", "p"), ("trace_id", "t1"), ("x", "1"), ("z", "3")])
        );
        assert!(lb.extracted("y"));
        // The next entry of the stream sets fewer labels into the reused slots.
        lb.reset_entry(&pairs(&[("pod", "q")]));
        assert!(!lb.extracted("x"));
        assert!(!lb.is_unchanged());
        lb.set_parsed("z", "4");
        assert_eq!(
            lb.labels(),
            pairs(&[("app", "a"), ("pod", "q"), ("z", "4")])
        );
        lb.reset_entry(&[]);
        assert!(lb.is_unchanged());
        assert_eq!(lb.labels(), stream);
    }

    #[test]
    fn reset_entry_keeps_the_stream_and_starts_a_new_entry() {
        let mut lb = LabelsBuilder::new();
        lb.reset(
            &pairs(&[("host", "a"), ("job", "j")]),
            &pairs(&[("trace", "t1")]),
        );
        lb.set_parsed("level", "info");
        lb.set_err("JSONParserErr");
        lb.reset_entry(&pairs(&[("host", "m")]));
        // Stream labels stay; parsed labels and errors go; metadata is the new entry's,
        // with the collision suffix computed against the kept stream labels.
        assert_eq!(
            lb.labels(),
            pairs(&[("host", "a"), ("host_extracted", "m"), ("job", "j")])
        );
        assert!(!lb.has_error());
    }

    #[test]
    fn parsed_label_shadows_stream_and_moves_category() {
        let mut lb = LabelsBuilder::new();
        lb.reset(
            &pairs(&[("app", "a"), ("level", "info")]),
            &pairs(&[("trace_id", "t1")]),
        );
        assert!(!lb.is_unchanged());
        lb.set_parsed("level", "warn");
        lb.set_parsed("x", "1");
        assert_eq!(lb.get("level"), Some("warn"));
        assert_eq!(
            lb.labels(),
            pairs(&[
                ("app", "a"),
                ("level", "warn"),
                ("trace_id", "t1"),
                ("x", "1")
            ])
        );
        let c = lb.categorized();
        assert_eq!(c.stream, pairs(&[("app", "a")]));
        assert_eq!(c.structured_metadata, pairs(&[("trace_id", "t1")]));
        assert_eq!(c.parsed, pairs(&[("level", "warn"), ("x", "1")]));
    }

    #[test]
    fn metadata_colliding_with_stream_label_is_suffixed() {
        let mut lb = LabelsBuilder::new();
        lb.reset(&pairs(&[("level", "info")]), &pairs(&[("level", "x")]));
        assert_eq!(
            lb.labels(),
            pairs(&[("level", "info"), ("level_extracted", "x")])
        );
    }

    #[test]
    fn delete_and_errors() {
        let mut lb = LabelsBuilder::new();
        lb.reset(&pairs(&[("a", "1"), ("b", "2")]), &[]);
        lb.del("a");
        lb.set_err("JSONParserErr");
        lb.set_error_details("boom");
        assert_eq!(lb.get("a"), None);
        assert!(lb.has_error());
        assert_eq!(
            lb.labels(),
            pairs(&[
                ("__error__", "JSONParserErr"),
                ("__error_details__", "boom"),
                ("b", "2")
            ])
        );
        assert_eq!(
            lb.categorized().parsed,
            pairs(&[
                ("__error__", "JSONParserErr"),
                ("__error_details__", "boom")
            ])
        );
        // reset really resets, and reuses the base
        lb.reset(&pairs(&[("a", "1"), ("b", "2")]), &[]);
        assert!(lb.is_unchanged());
        assert_eq!(lb.labels(), pairs(&[("a", "1"), ("b", "2")]));
        lb.reset(&pairs(&[("c", "3")]), &[]);
        assert_eq!(lb.labels(), pairs(&[("c", "3")]));
        let mut out = pairs(&[("x", "y"), ("z", "w")]);
        lb.set_parsed("a", "1");
        lb.labels_into(&mut out);
        assert_eq!(out, lb.labels());
        let h = lb.labels_hash();
        lb.set_parsed("a", "2");
        assert_ne!(h, lb.labels_hash());
        lb.set_parsed("a", "1");
        assert_eq!(h, lb.labels_hash());
    }

    #[test]
    fn sanitizing_keys() {
        let mut s = String::new();
        sanitize_label_key(" a.b-c ", &mut s);
        assert_eq!(s, "a_b_c");
        sanitize_label_key("1x", &mut s);
        assert_eq!(s, "_1x");
        sanitize_label_key("é", &mut s);
        assert_eq!(s, "_");
        sanitize_label_key("  ", &mut s);
        assert_eq!(s, "");
    }
}
