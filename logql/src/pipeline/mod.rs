//! The per-entry log pipeline: line filters, parsers (`json`, `logfmt`, `regexp`,
//! `pattern`, `unpack`), label filters, formatting stages and `drop`/`keep`, compiled once
//! per query into a [`Pipeline`] and run on every entry with a reusable [`LabelsBuilder`].
//! `| unwrap` of metric queries is the [`SampleExtractor`].
//!
//! Behaviour follows Grafana Loki (`pkg/logql/log`), including its error labels
//! (`JSONParserErr`, `LogfmtParserErr`, `LabelFilterErr`, `TemplateFormatErr`,
//! `SampleExtractionErr`). Everything that can be precomputed (regexes, substring finders,
//! templates, patterns) is, in [`Pipeline::new`]; `process` allocates only when a stage
//! creates new text.
//!
//! ```
//! use tovlog_logql::ast::{LineFilter, LineFilterOp, LineFilterValue, Stage};
//! use tovlog_logql::pipeline::{LabelsBuilder, Pipeline};
//!
//! let stages = vec![
//!     Stage::LineFilter(LineFilter { op: LineFilterOp::Contains, values: vec![LineFilterValue::Str("err".into())] }),
//!     Stage::Logfmt { strict: false, keep_empty: false, params: vec![] },
//! ];
//! let p = Pipeline::new(&stages).unwrap();
//! let mut lb = LabelsBuilder::new();
//! lb.reset(&[("app".into(), "a".into())], &[]);
//! assert!(p.process(0, "level=err msg=x", &mut lb).is_some());
//! assert_eq!(lb.get("level"), Some("err"));
//! lb.reset(&[("app".into(), "a".into())], &[]);
//! assert!(p.process(0, "level=info", &mut lb).is_none());
//! ```

pub(crate) mod convert;
mod drop_keep;
mod format;
mod hints;
mod ip;
mod json;
mod label_filter;
mod labels;
mod line_filter;
mod logfmt;
mod needles;
mod pattern;
mod regexp;
mod scratch_regex;
mod swar;
mod unwrap;

use std::borrow::Cow;

pub use convert::{parse_go_float, parse_humanize_bytes};
pub use hints::{metadata_sensitive_names, LabelHints, PRESERVE_ERROR_LABEL};
pub use json::json_label_paths;
pub use labels::{CategorizedLabels, LabelsBuilder, ERROR_DETAILS_LABEL, ERROR_LABEL};
pub use line_filter::LineFilterChain;
pub use needles::{
    field_needles, json_numeric_bounds, metadata_needles, FieldNeedle, FieldNeedleFinder,
    NumericBound,
};
pub use unwrap::SampleExtractor;

use crate::ast;
use crate::Error;

/// Prometheus label-name syntax `[a-zA-Z_][a-zA-Z0-9_]*`.
pub(crate) fn is_valid_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// One compiled stage.
#[derive(Debug, Clone)]
enum CompiledStage {
    LineFilters(LineFilterChain),
    Json(json::JsonParser),
    JsonExpr(json::JsonExpressionParser),
    Logfmt(logfmt::LogfmtParser),
    Regexp(regexp::RegexpParser),
    Pattern(PatternStage),
    Unpack,
    LabelFilter(label_filter::LabelFilter),
    LineFormat(format::LineFormat),
    LabelFormat(format::LabelFormat),
    Decolorize(format::Decolorize),
    Drop(drop_keep::Drop),
    Keep(drop_keep::Keep),
}

/// `| pattern "…"`.
#[derive(Debug, Clone)]
struct PatternStage {
    pattern: pattern::Pattern,
}

impl PatternStage {
    fn new(src: &str) -> Result<PatternStage, Error> {
        let pattern = pattern::Pattern::for_parser(src).map_err(Error::Validate)?;
        for n in pattern.names() {
            if !is_valid_label_name(n) {
                return Err(Error::Validate(format!("invalid capture label name '{n}'")));
            }
        }
        Ok(PatternStage { pattern })
    }

    /// `false` = the line is dropped (an early label filter did not match).
    fn process(&self, line: &str, lb: &mut LabelsBuilder, hints: &LabelHints) -> bool {
        if hints.no_labels(lb) {
            return true;
        }
        // Scratch buffers live in the builder: no allocation per line in steady state.
        let mut caps = std::mem::take(&mut lb.scratch_ranges);
        let mut key = std::mem::take(&mut lb.scratch_a);
        self.pattern.captures(line, &mut caps);
        let mut keep = true;
        for (name, &(start, end)) in self.pattern.names().iter().zip(caps.iter()) {
            key.clear();
            key.push_str(name);
            // Ranges come from memmem matches of UTF-8 needles: always char boundaries.
            let value = line.get(start..end).unwrap_or("");
            if !json::set_implicit(lb, hints, &mut key, value) {
                keep = false;
                break;
            }
        }
        lb.scratch_ranges = caps;
        lb.scratch_a = key;
        keep
    }
}

/// [`line_flags`] bit: the line is a flat JSON object (`json::flat_object`), which
/// `| json` reads by searching for the keys it needs instead of walking the whole line.
pub const FLAT_JSON: u8 = 1;

/// [`line_flags`] bit, with [`FLAT_JSON`]: no key of the object starts with `__`, so
/// `| json` need not search for `__error__` and the other reserved names a query asks for.
pub const NO_RESERVED_KEYS: u8 = 2;

/// Facts about a line's shape that make [`Pipeline::process_flagged`] faster, as bits
/// ([`FLAT_JSON`]). Costs about one `| json` parse: computed once, when storage compacts
/// the line, and kept beside it.
pub fn line_flags(line: &str) -> u8 {
    if line.as_bytes().first() != Some(&b'{') {
        return 0;
    }
    match json::flat_object(line) {
        Some(f) if f.reserved_keys => FLAT_JSON,
        Some(_) => FLAT_JSON | NO_RESERVED_KEYS,
        None => 0,
    }
}

/// See [`Pipeline::pattern_grouping`].
#[derive(Debug, Clone)]
pub struct PatternGrouping {
    pattern: pattern::Pattern,
    /// Indexes (in name order) of the captures that can set a grouping label.
    relevant: Vec<usize>,
}

impl PatternGrouping {
    /// How many grouping-relevant captures [`PatternGrouping::captures`] reports.
    pub fn relevant_captures(&self) -> usize {
        self.relevant.len()
    }

    /// Fill `out` with the byte range of each grouping-relevant capture in `line`, `None`
    /// for a capture the pattern did not reach. `line` must have passed the pipeline's
    /// [`Pipeline::leading_line_filters`] (an engine runs them first, over whole
    /// batches). `caps` is scratch space the caller reuses.
    pub fn captures(
        &self,
        line: &str,
        caps: &mut Vec<(usize, usize)>,
        out: &mut Vec<Option<(usize, usize)>>,
    ) {
        out.clear();
        self.pattern.captures(line, caps);
        out.extend(self.relevant.iter().map(|&i| caps.get(i).copied()));
    }
}

/// Compiled log pipeline; Send + Sync; built once per query, used from many threads.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    /// Line filters before any other stage (safe to run first, e.g. pushed into a scan).
    leading: LineFilterChain,
    /// Everything after the leading filters, in order.
    stages: Vec<CompiledStage>,
    /// Which labels parsers must extract (metric queries).
    hints: LabelHints,
    /// Label equalities after parsers that imply a substring of the line.
    field_needles: Vec<FieldNeedle>,
    /// Label equalities before any parser: stream labels or whole metadata values.
    metadata_needles: Vec<FieldNeedle>,
    /// See [`json_numeric_bounds`].
    json_bounds: Vec<NumericBound>,
    /// See [`Pipeline::precheck`].
    json_precheck: Option<JsonPrecheck>,
}

/// The label filters right after a leading `| json` of a pipeline without hints, and what
/// `| json` must extract for them (see [`Pipeline::precheck`]).
#[derive(Debug, Clone)]
struct JsonPrecheck {
    hints: LabelHints,
    /// How many label filter stages follow the `| json` stage.
    filters: usize,
}

/// What [`Pipeline::precheck`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precheck {
    /// Nothing was checked; the label builder is as it was.
    Skipped,
    /// [`Pipeline::process_after_leading`] drops the entry.
    Dropped,
    /// The entry may be kept. The label builder was written to: reset it before
    /// processing the entry.
    Passed,
}

impl Pipeline {
    /// Compile the stages. Errors carry Loki's wording (bad regex, bad template, …).
    /// Every parser extracts every label (use for log queries).
    pub fn new(stages: &[ast::Stage]) -> Result<Pipeline, Error> {
        Self::with_hints(stages, LabelHints::all())
    }

    /// Compile the stages of a metric query with Loki's parser hints (see
    /// [`LabelHints::for_range_aggregation`]): parsers extract only what the query needs,
    /// which also decides whether unparseable lines get `__error__`.
    pub fn with_hints(stages: &[ast::Stage], mut hints: LabelHints) -> Result<Pipeline, Error> {
        hints.attach_filters(stages)?;
        let mut leading = LineFilterChain::default();
        let mut compiled: Vec<CompiledStage> = Vec::new();
        // Line filters commute with stages that neither change the line nor filter on
        // labels, so those after parsers, label_format, drop and keep are hoisted into the
        // leading chain (cheaper, and pushable into scans). Never past a label filter,
        // line_format, decolorize or unpack.
        let mut hoistable = true;
        // The label filters that directly follow a leading `| json` (line filters between
        // them are hoisted); `None` once another stage comes first or between.
        let mut json_filters: Option<Vec<&ast::LabelFilterExpr>> = None;
        let mut json_filters_open = true;
        for stage in stages {
            hoistable &= matches!(
                stage,
                ast::Stage::LineFilter(_)
                    | ast::Stage::Json(_)
                    | ast::Stage::Logfmt { .. }
                    | ast::Stage::Regexp(_)
                    | ast::Stage::Pattern(_)
                    | ast::Stage::LabelFormat(_)
                    | ast::Stage::Drop(_)
                    | ast::Stage::Keep(_)
            );
            let c = match stage {
                ast::Stage::LineFilter(f) => {
                    if hoistable {
                        leading.push(f)?;
                        continue;
                    }
                    // Merge consecutive filters into one chain.
                    if let Some(CompiledStage::LineFilters(chain)) = compiled.last_mut() {
                        chain.push(f)?;
                        continue;
                    }
                    CompiledStage::LineFilters(LineFilterChain::new(std::slice::from_ref(f))?)
                }
                ast::Stage::Json(params) if params.is_empty() => {
                    CompiledStage::Json(json::JsonParser)
                }
                ast::Stage::Json(params) => {
                    CompiledStage::JsonExpr(json::JsonExpressionParser::new(params)?)
                }
                ast::Stage::Logfmt {
                    strict,
                    keep_empty,
                    params,
                } => {
                    CompiledStage::Logfmt(logfmt::LogfmtParser::new(*strict, *keep_empty, params)?)
                }
                ast::Stage::Regexp(re) => CompiledStage::Regexp(regexp::RegexpParser::new(re)?),
                ast::Stage::Pattern(p) => CompiledStage::Pattern(PatternStage::new(p)?),
                ast::Stage::Unpack => CompiledStage::Unpack,
                ast::Stage::LabelFilter(e) => {
                    CompiledStage::LabelFilter(label_filter::LabelFilter::new(e)?)
                }
                ast::Stage::LineFormat(t) => CompiledStage::LineFormat(format::LineFormat::new(t)?),
                ast::Stage::LabelFormat(ops) => {
                    CompiledStage::LabelFormat(format::LabelFormat::new(ops)?)
                }
                ast::Stage::Decolorize => CompiledStage::Decolorize(format::Decolorize::new()?),
                ast::Stage::Drop(s) => CompiledStage::Drop(drop_keep::Drop::new(s)?),
                ast::Stage::Keep(s) => CompiledStage::Keep(drop_keep::Keep::new(s)?),
            };
            if json_filters_open {
                match (stage, &mut json_filters) {
                    (ast::Stage::Json(params), None)
                        if params.is_empty() && compiled.is_empty() =>
                    {
                        json_filters = Some(Vec::new());
                    }
                    (ast::Stage::LabelFilter(e), Some(filters)) => filters.push(e),
                    _ => json_filters_open = false,
                }
            }
            compiled.push(c);
        }
        // With hints, `| json` of flat lines already extracts only what the query needs
        // and runs single-label filters as it goes.
        let json_precheck = json_filters
            .filter(|f| !f.is_empty() && hints.is_all())
            .map(|f| JsonPrecheck {
                hints: LabelHints::for_label_filters(&f),
                filters: f.len(),
            });
        Ok(Pipeline {
            leading,
            stages: compiled,
            hints,
            field_needles: field_needles(stages),
            metadata_needles: metadata_needles(stages),
            json_bounds: json_numeric_bounds(stages),
            json_precheck,
        })
    }

    /// Run all stages on one entry. `None` = the entry is filtered out. Otherwise the
    /// output line (changed by line_format/decolorize/unpack; borrowed when unchanged).
    /// `lb` must have been `reset` for this entry.
    pub fn process<'a>(
        &self,
        ts_ns: i64,
        line: &'a str,
        lb: &mut LabelsBuilder,
    ) -> Option<Cow<'a, str>> {
        self.process_flagged(ts_ns, line, 0, lb)
    }

    /// Whether [`Self::process_flagged`] can use a line's flags ([`line_flags`]): a scan
    /// then reads them along with the line.
    pub fn reads_line_flags(&self) -> bool {
        self.json_precheck.is_some()
            || (!self.hints.is_all()
                && self
                    .stages
                    .iter()
                    .any(|s| matches!(s, CompiledStage::Json(_))))
    }

    /// Whether [`Self::precheck`] can ever check anything.
    pub fn prechecks(&self) -> bool {
        self.json_precheck.is_some()
    }

    /// A first look at an entry that passed the leading line filters, for a pipeline that
    /// extracts every label (log queries) and starts with `| json` and label filters:
    /// `| json` extracts only the labels those filters read, and the filters run on them.
    /// Where the line is a flat JSON object (`flags` has [`FLAT_JSON`]) the labels are
    /// found by searching for their keys; otherwise, on a line whose whole walk meets no
    /// syntax error, by a walk that sets nothing else. Their values are those the whole
    /// parse would give (the first occurrence of a key sets its label), so
    /// [`Precheck::Dropped`] means [`Self::process_after_leading`] drops the entry too,
    /// at a fraction of the cost on selective filters (`| json | duration_ms > 2000`).
    /// `lb` must have been `reset` for this entry.
    pub fn precheck(&self, line: &str, flags: u8, lb: &mut LabelsBuilder) -> Precheck {
        let Some(pre) = &self.json_precheck else {
            return Precheck::Skipped;
        };
        let Some((CompiledStage::Json(p), rest)) = self.stages.split_first() else {
            return Precheck::Skipped;
        };
        // The hints carry no early filter: extraction never drops the line itself.
        let extracted = if flags & FLAT_JSON != 0 {
            let reserved = flags & NO_RESERVED_KEYS == 0;
            p.process_flat(line, lb, &pre.hints, reserved)
        } else {
            // Not known to be flat (nested objects, or a line of the head, whose flags are
            // not computed): the hinted walk reads the filters' labels as the whole walk
            // would once the line is known to parse cleanly. A line that does not keeps
            // its error label and is left to the whole pipeline.
            if !json::walks_cleanly(line) {
                return Precheck::Skipped;
            }
            p.process(line, lb, &pre.hints)
        };
        let kept = extracted
            && rest.iter().take(pre.filters).all(|s| match s {
                CompiledStage::LabelFilter(f) => f.process(lb),
                _ => true,
            });
        if kept {
            Precheck::Passed
        } else {
            Precheck::Dropped
        }
    }

    /// [`Self::process`] for a line whose [`line_flags`] are known (0 = nothing known):
    /// the same result, sooner.
    pub fn process_flagged<'a>(
        &self,
        ts_ns: i64,
        line: &'a str,
        flags: u8,
        lb: &mut LabelsBuilder,
    ) -> Option<Cow<'a, str>> {
        if !self.leading.matches(line) {
            return None;
        }
        self.process_after_leading(ts_ns, line, flags, lb)
    }

    /// [`Self::process_flagged`] for a line that passed [`Self::leading_line_filters`]
    /// already (an engine runs them first, over whole batches): the same result without
    /// running them again.
    pub fn process_after_leading<'a>(
        &self,
        ts_ns: i64,
        line: &'a str,
        flags: u8,
        lb: &mut LabelsBuilder,
    ) -> Option<Cow<'a, str>> {
        let mut cur: Cow<'a, str> = Cow::Borrowed(line);
        for stage in &self.stages {
            match stage {
                CompiledStage::LineFilters(chain) => {
                    if !chain.matches(&cur) {
                        return None;
                    }
                }
                CompiledStage::Json(p) => {
                    // The flags describe the stored line, not one a stage rewrote.
                    let flat = flags & FLAT_JSON != 0
                        && cur.as_ptr() == line.as_ptr()
                        && cur.len() == line.len();
                    let kept = if flat {
                        let reserved = flags & NO_RESERVED_KEYS == 0;
                        p.process_flat(&cur, lb, &self.hints, reserved)
                    } else {
                        p.process(&cur, lb, &self.hints)
                    };
                    if !kept {
                        return None;
                    }
                }
                CompiledStage::JsonExpr(p) => p.process(&cur, lb, &self.hints),
                CompiledStage::Logfmt(p) => {
                    if !p.process(&cur, lb, &self.hints) {
                        return None;
                    }
                }
                CompiledStage::Regexp(p) => {
                    if !p.process(&cur, lb, &self.hints) {
                        return None;
                    }
                }
                CompiledStage::Pattern(p) => {
                    if !p.process(&cur, lb, &self.hints) {
                        return None;
                    }
                }
                CompiledStage::Unpack => match json::unpack(&cur, lb, &self.hints) {
                    Ok(Some(entry)) => cur = Cow::Owned(entry),
                    Ok(None) => {}
                    Err(()) => return None,
                },
                CompiledStage::LabelFilter(f) => {
                    if !f.process(lb) {
                        return None;
                    }
                }
                CompiledStage::LineFormat(f) => {
                    if let Some(new_line) = f.process(ts_ns, &cur, lb) {
                        cur = Cow::Owned(new_line);
                    }
                }
                CompiledStage::LabelFormat(f) => f.process(ts_ns, &cur, lb),
                CompiledStage::Decolorize(d) => {
                    if let Some(new_line) = d.process(&cur) {
                        cur = Cow::Owned(new_line);
                    }
                }
                CompiledStage::Drop(d) => d.process(lb),
                CompiledStage::Keep(k) => k.process(lb),
            }
        }
        Some(cur)
    }

    /// The line filters that can run before every other stage (safe to run first, e.g.
    /// pushed into a scan): the leading ones plus those that only follow parsers,
    /// `label_format`, `drop` or `keep`.
    pub fn leading_line_filters(&self) -> &LineFilterChain {
        &self.leading
    }

    /// Label equalities after parsers whose value every kept line contains, unless it is
    /// escaped in the line or the label is shadowed (see [`FieldNeedle`]).
    pub fn field_needles(&self) -> &[FieldNeedle] {
        &self.field_needles
    }

    /// Numeric comparisons a full `| json` walk's label passes on every kept line (see
    /// [`json_numeric_bounds`]).
    pub fn json_numeric_bounds(&self) -> &[NumericBound] {
        &self.json_bounds
    }

    /// Label equalities before any parser: where no selected stream has the label, every
    /// kept row has the value as a whole structured-metadata value.
    pub fn metadata_needles(&self) -> &[FieldNeedle] {
        &self.metadata_needles
    }

    /// For a pipeline made of leading line filters and one `| pattern` stage and nothing
    /// else, the captures that can set a label of `names` (a capture `c` sets `c`, or
    /// `c_extracted` where the entry already has a label `c`). Such a pipeline keeps every
    /// line its leading filters pass and never marks an error, so for entries without structured
    /// metadata, the labels `names` after [`Self::process`] depend only on the stream and
    /// on these captures' values: an engine grouping by `names` can key its groups by
    /// stream and [`PatternGrouping::captures`] and run the whole pipeline only for the
    /// first entry of each group.
    pub fn pattern_grouping(&self, names: &[String]) -> Option<PatternGrouping> {
        let [CompiledStage::Pattern(stage)] = self.stages.as_slice() else {
            return None;
        };
        // With early label filters (none can exist without a filter stage, but the hints
        // are separate state) the pattern stage could drop lines.
        if !self.hints.without_early_filters() {
            return None;
        }
        let relevant = stage
            .pattern
            .names()
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                names.iter().any(|n| {
                    n == *c
                        || n.strip_suffix(labels::DUPLICATE_SUFFIX)
                            .is_some_and(|base| base == c.as_str())
                })
            })
            .map(|(i, _)| i)
            .collect();
        Some(PatternGrouping {
            pattern: stage.pattern.clone(),
            relevant,
        })
    }

    /// True when the pipeline has only line filters (labels and line are never changed).
    pub fn is_line_filter_only(&self) -> bool {
        self.stages.is_empty()
    }

    /// True when the pipeline has no stage at all.
    pub fn is_empty(&self) -> bool {
        self.leading.is_empty() && self.stages.is_empty()
    }
}

#[cfg(test)]
mod tests;
