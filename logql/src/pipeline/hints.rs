//! Parser hints for metric queries ([`LabelHints`]), after Loki's `ParserHint`.
//!
//! A metric query rarely needs every label: `sum(count_over_time({…} | json [5m]))` needs
//! none and `sum by (status) (…)` only `status`. Loki then skips or shortens parsing, and
//! that is observable: a line that is not JSON makes no `__error__` when nothing is
//! parsed, and parsing stops (without error) once all needed labels are found. Log
//! queries use no hints (everything is extracted).

use crate::ast::{self, LabelFilterExpr, LabelFormatSrc, MatchOp, RangeOp, Stage, VectorOp};

use super::label_filter::LabelFilter;
use super::labels::{LabelsBuilder, DUPLICATE_SUFFIX, ERROR_DETAILS_LABEL, ERROR_LABEL};

/// Which labels the parsers of a pipeline must extract.
#[derive(Debug, Clone)]
pub struct LabelHints {
    /// Parse nothing (unless `required` is set).
    no_labels: bool,
    /// Only these names (empty = all).
    required: Vec<String>,
    /// Bit `n` (`n` < 63; bit 63 for every longer length) set when a name of `n` bytes
    /// may be extracted: a wanted name's length, or that of its base before
    /// `_extracted`. Most keys of a JSON line are told apart by length alone.
    name_lens: u64,
    /// `__error__` is needed: parsers mark their errors with `__preserve_error__="true"`.
    preserve_error: bool,
    /// Whether single-label filters of the pipeline run as soon as a parser sets their
    /// label (Loki's `ShouldContinueParsingLine`); filled in by `Pipeline::with_hints`.
    early_filtering: bool,
    early: Vec<(String, LabelFilter)>,
    /// For each `required` name, a searcher for it as a quoted JSON key (`"name"`): how
    /// `| json` reads a line known to be a flat object (see `json::flat_object`).
    quoted: Vec<memchr::memmem::Finder<'static>>,
}

impl Default for LabelHints {
    fn default() -> LabelHints {
        LabelHints {
            no_labels: false,
            required: Vec::new(),
            name_lens: 0,
            preserve_error: false,
            early_filtering: true,
            early: Vec::new(),
            quoted: Vec::new(),
        }
    }
}

/// Label set by parsers when errors were explicitly asked for (`by (__error__)`); the
/// metric evaluator must not fail on series carrying it with value `"true"`.
pub const PRESERVE_ERROR_LABEL: &str = "__preserve_error__";

fn filter_names(e: &LabelFilterExpr, out: &mut Vec<String>) {
    match e {
        LabelFilterExpr::And { lhs, rhs, .. } | LabelFilterExpr::Or(lhs, rhs) => {
            filter_names(lhs, out);
            filter_names(rhs, out);
        }
        LabelFilterExpr::Paren(inner) => filter_names(inner, out),
        LabelFilterExpr::String { name, .. }
        | LabelFilterExpr::Number { name, .. }
        | LabelFilterExpr::Duration { name, .. }
        | LabelFilterExpr::Bytes { name, .. }
        | LabelFilterExpr::Ip { name, .. } => out.push(name.clone()),
    }
}

/// Field names a template reads (`.name`). An over-approximation is harmless: it only
/// makes parsers extract a little more.
fn template_fields(src: &str, out: &mut Vec<String>) {
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'.' && i + 1 < b.len() && (b[i + 1].is_ascii_alphabetic() || b[i + 1] == b'_') {
            let start = i + 1;
            let mut j = start;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            out.push(src[start..j].to_string());
            i = j;
        } else {
            i += 1;
        }
    }
}

/// Loki's `RequiredLabelNames` of a pipeline: labels read by label filters and formatters.
fn required_label_names(stages: &[Stage], post_filters: &[LabelFilterExpr]) -> Vec<String> {
    let mut out = Vec::new();
    for s in stages {
        match s {
            Stage::LabelFilter(e) => filter_names(e, &mut out),
            Stage::LineFormat(t) => template_fields(t, &mut out),
            Stage::LabelFormat(ops) => {
                for op in ops {
                    match &op.src {
                        LabelFormatSrc::Rename(src) => out.push(src.clone()),
                        LabelFormatSrc::Template(t) => template_fields(t, &mut out),
                    }
                }
            }
            _ => {}
        }
    }
    for f in post_filters {
        filter_names(f, &mut out);
    }
    out
}

/// The bit of a name length in [`LabelHints::name_lens`].
fn len_bit(len: usize) -> u64 {
    1 << len.min(63)
}

/// [`LabelHints::name_lens`] of `required`.
fn name_lens(required: &[String]) -> u64 {
    required.iter().fold(0, |bits, r| {
        let base = r
            .strip_suffix(DUPLICATE_SUFFIX)
            .map_or(0, |b| len_bit(b.len()));
        bits | len_bit(r.len()) | base
    })
}

/// [`LabelHints::quoted`] of `required`.
fn quoted(required: &[String]) -> Vec<memchr::memmem::Finder<'static>> {
    required
        .iter()
        .map(|r| memchr::memmem::Finder::new(format!("\"{r}\"").as_bytes()).into_owned())
        .collect()
}

impl LabelHints {
    /// No hints: every parser extracts everything (log queries).
    pub fn all() -> LabelHints {
        LabelHints::default()
    }

    /// Hints for the pipeline of a range aggregation. `parent` is the vector aggregation
    /// directly around it, if any: a `sum` pushes its grouping down into `count_over_time`,
    /// `rate`, `bytes_over_time`, `bytes_rate` and `sum_over_time` that have no grouping of
    /// their own (Loki's `canInjectVectorGrouping`).
    pub fn for_range_aggregation(
        agg: &ast::RangeAggregation,
        parent: Option<&ast::VectorAggregation>,
    ) -> LabelHints {
        // A vector aggregation without a clause groups by nothing (Loki gives it an empty
        // grouping), so `sum(count_over_time(…))` needs no labels at all.
        let empty = ast::Grouping {
            without: false,
            labels: Vec::new(),
        };
        let mut grouping = agg.grouping.as_ref();
        if let Some(p) = parent {
            let injectable = matches!(
                agg.op,
                RangeOp::BytesOverTime
                    | RangeOp::BytesRate
                    | RangeOp::SumOverTime
                    | RangeOp::Rate
                    | RangeOp::CountOverTime
            );
            if p.op == VectorOp::Sum && injectable && agg.grouping.is_none() {
                grouping = Some(p.grouping.as_ref().unwrap_or(&empty));
            }
        }
        let (mut groups, mut without, mut no_labels) = match grouping {
            Some(g) => (
                g.labels.clone(),
                g.without,
                g.labels.is_empty() && !g.without,
            ),
            None => (Vec::new(), false, false),
        };
        if agg.op == RangeOp::AbsentOverTime {
            no_labels = true;
        }
        let post: &[LabelFilterExpr] = agg
            .range
            .unwrap
            .as_ref()
            .map_or(&[], |u| u.post_filters.as_slice());
        let required = required_label_names(&agg.range.log.pipeline, post);
        let metric_label = agg.range.unwrap.as_ref().map(|u| u.label.clone());
        if let Some(label) = &metric_label {
            if groups.is_empty() || without {
                without = true;
                groups.push(label.clone());
            }
        }
        Self::build(
            &required,
            &groups,
            without,
            no_labels,
            metric_label.as_deref(),
        )
    }

    /// Hints that extract only the labels the label filters `filters` read (and the key
    /// behind each `<name>_extracted`), with no early filter: what `| json` must read of a
    /// line to run those filters (see `Pipeline::precheck`).
    pub(crate) fn for_label_filters(filters: &[&LabelFilterExpr]) -> LabelHints {
        let mut names = Vec::new();
        for f in filters {
            filter_names(f, &mut names);
        }
        Self::build(&names, &[], false, true, None)
    }

    /// Loki's `NewParserHint`.
    fn build(
        required: &[String],
        groups: &[String],
        without: bool,
        no_labels: bool,
        metric_label: Option<&str>,
    ) -> LabelHints {
        let mut hints: Vec<String> = Vec::new();
        let all = required
            .iter()
            .chain(groups)
            .map(String::as_str)
            .chain(metric_label);
        for l in all {
            if l.is_empty() {
                continue;
            }
            hints.push(l.to_string());
            if let Some(base) = l.strip_suffix(DUPLICATE_SUFFIX) {
                hints.push(base.to_string());
            }
        }
        let mut unique: Vec<String> = Vec::with_capacity(hints.len());
        for h in hints {
            if !unique.contains(&h) {
                unique.push(h);
            }
        }
        let preserve_error = unique.iter().any(|h| h == ERROR_LABEL);
        if no_labels {
            if unique.is_empty() {
                return LabelHints {
                    no_labels: true,
                    early_filtering: false,
                    ..LabelHints::default()
                };
            }
            return LabelHints {
                name_lens: name_lens(&unique),
                quoted: quoted(&unique),
                required: unique,
                preserve_error,
                ..LabelHints::default()
            };
        }
        if without || groups.is_empty() {
            return LabelHints::default();
        }
        // With a known grouping Loki's hints carry no label filters.
        LabelHints {
            name_lens: name_lens(&unique),
            quoted: quoted(&unique),
            required: unique,
            preserve_error,
            early_filtering: false,
            ..LabelHints::default()
        }
    }

    /// Attach the pipeline's single-label filters for early evaluation (Loki evaluates a
    /// label filter on one label as soon as a parser sets that label, even when a later
    /// stage would change the label; `| json | label_format level=… | level="x"` thus
    /// filters on the parsed value).
    pub(crate) fn attach_filters(&mut self, stages: &[ast::Stage]) -> Result<(), crate::Error> {
        self.early.clear();
        if !self.early_filtering {
            return Ok(());
        }
        for s in stages {
            let Stage::LabelFilter(mut e) = s.clone() else {
                continue;
            };
            while let LabelFilterExpr::Paren(inner) = e {
                e = *inner;
            }
            let name = match &e {
                LabelFilterExpr::And { .. }
                | LabelFilterExpr::Or(..)
                | LabelFilterExpr::Paren(_) => continue,
                LabelFilterExpr::String { name, .. }
                | LabelFilterExpr::Number { name, .. }
                | LabelFilterExpr::Duration { name, .. }
                | LabelFilterExpr::Bytes { name, .. }
                | LabelFilterExpr::Ip { name, .. } => name.clone(),
            };
            self.early.push((name, LabelFilter::new(&e)?));
        }
        Ok(())
    }

    /// No label filter runs early: parsers never drop a line.
    pub(crate) fn without_early_filters(&self) -> bool {
        self.early.is_empty()
    }

    /// Loki's `ShouldContinueParsingLine`: run the first single-label filter on `name`.
    pub(crate) fn should_continue(&self, name: &str, lb: &mut LabelsBuilder) -> bool {
        match self.early.iter().find(|(n, _)| n == name) {
            Some((_, f)) => f.process(lb),
            None => true,
        }
    }

    /// True when no hint restricts extraction.
    pub fn is_all(&self) -> bool {
        !self.no_labels && self.required.is_empty()
    }

    pub(crate) fn should_extract(&self, key: &str) -> bool {
        self.required.is_empty() || self.required.iter().any(|r| r == key)
    }

    /// Could a parser key sanitized to `name` be extracted: is it wanted as is, or as
    /// `<name>_extracted` after a collision with a stream or metadata label?
    pub(crate) fn may_extract(&self, name: &str) -> bool {
        const SUFFIX: &str = super::labels::DUPLICATE_SUFFIX;
        if self.required.is_empty() {
            return true;
        }
        self.name_lens & len_bit(name.len()) != 0
            && self.required.iter().any(|r| {
                // Lengths first: most keys differ in length from every wanted name.
                (r.len() == name.len() && r == name)
                    || (r.len() == name.len() + SUFFIX.len()
                        && r.starts_with(name)
                        && r.ends_with(SUFFIX))
            })
    }

    /// The names to extract with a searcher for each as a quoted JSON key; empty when
    /// every name is wanted.
    pub(crate) fn required_keys(
        &self,
    ) -> impl Iterator<Item = (&str, &memchr::memmem::Finder<'static>)> {
        self.required
            .iter()
            .map(String::as_str)
            .zip(self.quoted.iter())
    }

    pub(crate) fn should_extract_prefix(&self, prefix: &str) -> bool {
        self.required.is_empty() || self.required.iter().any(|r| r.starts_with(prefix))
    }

    pub(crate) fn all_required_extracted(&self, lb: &LabelsBuilder) -> bool {
        !self.required.is_empty() && self.required.iter().all(|r| lb.extracted(r))
    }

    /// Every required label a parser can still set is set: it was extracted, or a stream
    /// label or metadata name shadows it (a parser never sets such a name: its key becomes
    /// `<name>_extracted`, and the first value extracted wins). The rest of the line then
    /// changes no required label, but unlike [`Self::all_required_extracted`] the parser
    /// must still walk it: Loki's parser does not stop, and reports the errors it finds.
    pub(crate) fn all_settable_extracted(&self, lb: &LabelsBuilder) -> bool {
        !self.required.is_empty()
            && self
                .required
                .iter()
                .all(|r| lb.extracted(r) || lb.collides(r))
    }

    /// Parsers skip the line entirely.
    pub(crate) fn no_labels(&self, lb: &LabelsBuilder) -> bool {
        self.no_labels || self.all_required_extracted(lb)
    }

    /// Set the parser error labels (Loki's `addErrLabel`).
    pub(crate) fn add_err(&self, lb: &mut LabelsBuilder, err: &str, details: Option<&str>) {
        lb.set_err(err);
        if let Some(d) = details {
            lb.set_error_details(d);
        }
        if self.preserve_error {
            lb.set_parsed(PRESERVE_ERROR_LABEL, "true");
        }
    }
}

/// The label names whose presence as a structured-metadata key could change the result of
/// range aggregation `agg` when its samples keep only the labels `by` (the engine's
/// `LabelReduce::By`, with no parser error preserved). Metadata is a source of labels and
/// nothing else: a key can matter only by being a name the leaf reads, writes or keeps
/// (or, through a parser collision, that name with `_extracted`). `None` when the set is
/// not known statically: templates, `unpack`, and leaves where a parser error may reach
/// the output with its full label set.
pub fn metadata_sensitive_names(agg: &ast::RangeAggregation, by: &[String]) -> Option<Vec<String>> {
    let mut out: Vec<String> = by.to_vec();
    let mut parser_seen = false;
    let mut errors_dropped = false;
    for stage in &agg.range.log.pipeline {
        match stage {
            Stage::LineFilter(_) | Stage::Decolorize => {}
            Stage::Json(params) => {
                parser_seen = true;
                errors_dropped = false;
                out.extend(params.iter().map(|p| p.name.clone()));
            }
            Stage::Logfmt { params, .. } => {
                parser_seen = true;
                errors_dropped = false;
                out.extend(params.iter().map(|p| p.name.clone()));
            }
            Stage::Regexp(src) | Stage::Pattern(src) => {
                parser_seen = true;
                errors_dropped = false;
                angle_names(src, &mut out);
            }
            Stage::LabelFilter(e) => {
                filter_names(e, &mut out);
                errors_dropped |= drops_errors(e);
            }
            Stage::Drop(names) | Stage::Keep(names) => {
                out.extend(names.iter().map(|n| n.name.clone()));
            }
            Stage::Unpack | Stage::LineFormat(_) | Stage::LabelFormat(_) => return None,
        }
    }
    if let Some(u) = &agg.range.unwrap {
        out.push(u.label.clone());
        for f in &u.post_filters {
            filter_names(f, &mut out);
            errors_dropped |= drops_errors(f);
        }
    }
    // A parser error is preserved (with every label, metadata included) when the leaf
    // refers to `__error__`, unless a later `__error__=""` drops it.
    if parser_seen && !errors_dropped && out.iter().any(|n| n == ERROR_LABEL) {
        return None;
    }
    out.push(ERROR_LABEL.to_string());
    out.push(ERROR_DETAILS_LABEL.to_string());
    // A parser names a label `k_extracted` when `k` already exists (as metadata, say).
    let bases: Vec<String> = out
        .iter()
        .filter_map(|n| n.strip_suffix(DUPLICATE_SUFFIX).map(str::to_owned))
        .collect();
    out.extend(bases);
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Whether `e` keeps only rows without `__error__`: a top-level conjunct `__error__=""`.
fn drops_errors(e: &LabelFilterExpr) -> bool {
    match e {
        LabelFilterExpr::And { lhs, rhs, .. } => drops_errors(lhs) || drops_errors(rhs),
        LabelFilterExpr::Paren(inner) => drops_errors(inner),
        LabelFilterExpr::String {
            name,
            op: MatchOp::Eq,
            value,
        } => name == ERROR_LABEL && value.is_empty(),
        _ => false,
    }
}

/// Every `<name>` of a pattern or `(?P<name>…)` of a regexp (an over-approximation).
fn angle_names(src: &str, out: &mut Vec<String>) {
    let mut rest = src;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        if let Some(close) = rest.find('>') {
            let name = &rest[..close];
            if !name.is_empty() && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
                out.push(name.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::{Grouping, LogExpr, LogRange, MatchOp, Matcher, VectorAggregation};

    fn agg(op: RangeOp, stages: Vec<Stage>, grouping: Option<Grouping>) -> ast::RangeAggregation {
        ast::RangeAggregation {
            op,
            param: None,
            range: LogRange {
                log: LogExpr {
                    selector: vec![Matcher {
                        name: "job".into(),
                        op: MatchOp::Eq,
                        value: "x".into(),
                    }],
                    pipeline: stages,
                },
                range_ns: 60_000_000_000,
                offset_ns: 0,
                unwrap: None,
            },
            grouping,
        }
    }

    fn sum(grouping: Option<Grouping>, inner: &ast::RangeAggregation) -> VectorAggregation {
        VectorAggregation {
            op: VectorOp::Sum,
            param: None,
            expr: Box::new(ast::SampleExpr::Range(inner.clone())),
            grouping,
        }
    }

    fn by(labels: &[&str]) -> Option<Grouping> {
        Some(Grouping {
            without: false,
            labels: labels.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn sum_without_grouping_parses_nothing() {
        let a = agg(RangeOp::CountOverTime, vec![Stage::Json(vec![])], None);
        let h = LabelHints::for_range_aggregation(&a, Some(&sum(None, &a)));
        assert!(h.no_labels);
        let h = LabelHints::for_range_aggregation(&a, Some(&sum(by(&[]), &a)));
        assert!(h.no_labels);
        let h = LabelHints::for_range_aggregation(&a, None);
        assert!(h.is_all());
    }

    #[test]
    fn sum_by_restricts_to_groups_and_filters() {
        let a = agg(
            RangeOp::CountOverTime,
            vec![
                Stage::Json(vec![]),
                Stage::LabelFilter(LabelFilterExpr::String {
                    name: "action".into(),
                    op: MatchOp::Eq,
                    value: "DELETE".into(),
                }),
            ],
            None,
        );
        let h = LabelHints::for_range_aggregation(&a, Some(&sum(by(&["user_id"]), &a)));
        assert_eq!(
            h.required,
            vec!["action".to_string(), "user_id".to_string()]
        );
        assert!(h.should_extract("action") && !h.should_extract("level"));
        let e = LabelHints::for_range_aggregation(&a, Some(&sum(by(&["__error__"]), &a)));
        assert!(e.preserve_error);
    }
    #[test]
    fn may_extract_by_name_and_length() {
        let long = "k".repeat(70);
        let required = vec![
            "status_extracted".to_string(),
            "level".to_string(),
            long.clone(),
        ];
        let hints = LabelHints::build(&required, &["level".to_string()], false, false, None);
        for (name, want) in [
            ("status", true),
            ("status_extracted", true),
            ("level", true),
            ("statuz", false),
            ("levels", false),
            ("lever", false),
            ("", false),
            (long.as_str(), true),
        ] {
            assert_eq!(hints.may_extract(name), want, "{name}");
        }
        assert!(!hints.may_extract(&"k".repeat(71)));
        assert!(!hints.may_extract(&"j".repeat(70)));
        assert!(LabelHints::all().may_extract("anything"));
    }
}

#[cfg(test)]
mod metadata_tests {
    use super::metadata_sensitive_names;
    use crate::ast::{Expr, SampleExpr};
    use crate::parser::parse_expr;

    fn names(q: &str, by: &[&str]) -> Option<Vec<String>> {
        let agg = match parse_expr(q) {
            Ok(Expr::Sample(SampleExpr::Range(a))) => a,
            other => panic!("{q}: {other:?}"),
        };
        let by: Vec<String> = by.iter().map(|s| s.to_string()).collect();
        metadata_sensitive_names(&agg, &by)
    }

    #[test]
    fn names_a_metadata_key_must_have_to_matter() {
        let q6 = r#"quantile_over_time(0.99, {job="b"} | json | unwrap duration_ms | __error__="" [5m]) by (host)"#;
        assert_eq!(
            names(q6, &["host"]),
            Some(
                ["__error__", "__error_details__", "duration_ms", "host"]
                    .map(String::from)
                    .to_vec()
            )
        );
        let q = r#"count_over_time({job="b"} | json | action="DELETE" | pattern `<ip> - <_>` | x_extracted > 1 [5m])"#;
        let got = names(q, &["user_id"]).unwrap_or_default();
        for n in ["action", "ip", "user_id", "x", "x_extracted"] {
            assert!(got.contains(&n.to_string()), "{n} in {got:?}");
        }
        // Templates and unpack read labels dynamically; a preserved parser error keeps
        // every label.
        assert!(names(
            r#"count_over_time({job="b"} | line_format "{{.a}}" [5m])"#,
            &[]
        )
        .is_none());
        assert!(names(r#"count_over_time({job="b"} | unpack [5m])"#, &[]).is_none());
        assert!(names(r#"count_over_time({job="b"} | json [5m])"#, &["__error__"]).is_none());
        assert!(names(
            r#"count_over_time({job="b"} | json | __error__!="" [5m])"#,
            &[]
        )
        .is_none());
        assert!(names(
            r#"count_over_time({job="b"} | json | __error__="" [5m])"#,
            &[]
        )
        .is_some());
    }
}
