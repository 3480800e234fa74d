//! What Grafana's Logs Drilldown app asks about a selection besides its lines: the fields
//! found in its lines (`detected_fields`, `detected_field/{name}/values`) and the stream
//! labels worth grouping by (`detected_labels`), with Loki's rules
//! (`pkg/querier/queryrange/detected_fields.go`, `pkg/querier/querier.go`).
//!
//! Fields come from a sample, not from every line, as in Loki: the newest `line_limit`
//! entries of the query (a backward log query through the normal engine, pipeline
//! included, so the cost does not grow with the time range). Each sampled entry gives
//!
//! - its structured metadata (fields without a parser),
//! - the labels the query's own pipeline parsed,
//! - the labels `| json` sets from its line or, when the line is not a JSON object, the
//!   labels `| logfmt` sets (parser `json` or `logfmt`; a JSON field also gets its path).
//!
//! A field's type is that of the value it had in the last entry that set it (Loki types
//! each entry's value and keeps the last), its cardinality the number of distinct values in
//! the sample (Loki estimates it with HyperLogLog; on a sample the estimate is this count).

use std::collections::{HashMap, HashSet};

use tovlog_logql::ast::{Expr, Stage};
use tovlog_logql::lexer::parse_go_duration;
use tovlog_logql::pipeline::{
    json_label_paths, parse_go_float, parse_humanize_bytes, LabelsBuilder, Pipeline,
    ERROR_DETAILS_LABEL, ERROR_LABEL, PRESERVE_ERROR_LABEL,
};

use super::{logs, Direction, QueryEngine, QueryError, QueryRequest};

/// Loki's `line_limit` default: how many of the newest entries fields are detected in.
pub const DEFAULT_LINE_LIMIT: u32 = 100;
/// Loki's default of `limit` (most fields, or most values, returned).
pub const DEFAULT_FIELD_LIMIT: u32 = 1000;

/// One entry of the sample, its labels split as a `categorize-labels` answer splits them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SampledEntry {
    /// Timestamp, ns.
    pub ts_ns: i64,
    /// The line after the query's pipeline.
    pub line: String,
    /// Stream labels, sorted by name.
    pub stream: Vec<(String, String)>,
    /// Structured metadata.
    pub structured_metadata: Vec<(String, String)>,
    /// Labels the query's pipeline parsed (and its error labels).
    pub parsed: Vec<(String, String)>,
}

/// The type of a detected field (Loki's `DetectedFieldType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// Anything else.
    String,
    /// A base-10 64-bit integer.
    Int,
    /// A float in Go's syntax.
    Float,
    /// A Go boolean (`true`, `F`, …; `0`/`1` are ints).
    Boolean,
    /// A Go duration (`1.5s`, `250ms`).
    Duration,
    /// A humanized size (`1.5MB`, `20KiB`, `1,000`).
    Bytes,
}

impl FieldType {
    /// The type of one value, by Loki's rules in their order: int, float, boolean,
    /// duration, bytes, else string.
    pub fn of(value: &str) -> FieldType {
        // Rust's integer parsing takes what Go's `ParseInt(v, 10, 64)` takes: an optional
        // sign and ASCII digits that fit.
        if value.parse::<i64>().is_ok() {
            return FieldType::Int;
        }
        if parse_go_float(value).is_ok() {
            return FieldType::Float;
        }
        if matches!(
            value,
            "1" | "t"
                | "T"
                | "TRUE"
                | "true"
                | "True"
                | "0"
                | "f"
                | "F"
                | "FALSE"
                | "false"
                | "False"
        ) {
            return FieldType::Boolean;
        }
        if parse_go_duration(value).is_ok() {
            return FieldType::Duration;
        }
        if parse_humanize_bytes(value).is_ok() {
            return FieldType::Bytes;
        }
        FieldType::String
    }

    /// The name in Loki's answers.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Int => "int",
            FieldType::Float => "float",
            FieldType::Boolean => "boolean",
            FieldType::Duration => "duration",
            FieldType::Bytes => "bytes",
        }
    }
}

/// The parser that read a field from a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Parser {
    /// `| json`.
    Json,
    /// `| logfmt`.
    Logfmt,
}

impl Parser {
    /// The name in Loki's answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Parser::Json => "json",
            Parser::Logfmt => "logfmt",
        }
    }
}

/// One detected field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectedField {
    /// Its label name.
    pub label: String,
    /// Its type.
    pub field_type: FieldType,
    /// Distinct values in the sample.
    pub cardinality: u64,
    /// The parsers that found it, in order of discovery; empty for structured metadata
    /// and for labels only the query's pipeline set (Loki answers `null` then).
    pub parsers: Vec<Parser>,
    /// For a JSON field, its keys from the root of the line (Loki's `jsonPath`).
    pub json_path: Option<Vec<String>>,
}

/// A stream label and its number of distinct values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectedLabel {
    /// The label name.
    pub label: String,
    /// Distinct values in the time range.
    pub cardinality: u64,
}

/// Labels Loki keeps whatever their values, as long as they have some.
const STATIC_LABELS: [&str; 4] = ["cluster", "namespace", "instance", "pod"];

/// Whether `detected_labels` lists a label with these distinct values (Loki's
/// `shouldRejectLabel`, with its exception for static labels): labels without values and
/// labels whose every value is an id (a number or a UUID) are left out, except that one or
/// two values all `0`/`1` count as a flag, and static labels stay.
pub fn is_detected_label(name: &str, values: &[String]) -> bool {
    if values.is_empty() {
        return false;
    }
    if STATIC_LABELS.contains(&name) {
        return true;
    }
    if values.len() <= 2 && values.iter().all(|v| v == "0" || v == "1") {
        return true;
    }
    !values
        .iter()
        .all(|v| parse_go_float(v).is_ok() || is_uuid(v))
}

/// The detected labels of `labels` (name and distinct values), sorted by name.
pub fn detected_labels(labels: Vec<(String, Vec<String>)>) -> Vec<DetectedLabel> {
    let mut out: Vec<DetectedLabel> = labels
        .into_iter()
        .filter(|(name, values)| is_detected_label(name, values))
        .map(|(label, values)| DetectedLabel {
            label,
            cardinality: values.iter().collect::<HashSet<_>>().len() as u64,
        })
        .collect();
    out.sort_by(|a, b| a.label.cmp(&b.label));
    out
}

/// google/uuid's `Parse`: 36 characters with dashes, the same in braces (38; the braces
/// themselves are not checked), with a `urn:uuid:` prefix (45), or 32 hex digits.
fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    let body = match b.len() {
        32 => return b.iter().all(u8::is_ascii_hexdigit),
        36 => b,
        38 => &b[1..37],
        45 if b[..9].eq_ignore_ascii_case(b"urn:uuid:") => &b[9..],
        _ => return false,
    };
    body.iter().enumerate().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => *c == b'-',
        _ => c.is_ascii_hexdigit(),
    })
}

/// The fields one entry gives.
#[derive(Debug, Default)]
struct EntryFields {
    /// Field name and its distinct values in this entry, in order of discovery.
    fields: Vec<(String, Vec<String>)>,
    /// The parser that read the line, if one did.
    parser: Option<Parser>,
    /// Paths of the JSON fields (when `parser` is JSON).
    json_paths: Vec<(String, Vec<String>)>,
}

impl EntryFields {
    fn add(&mut self, name: &str, value: &str) {
        match self.fields.iter_mut().find(|(n, _)| n == name) {
            Some((_, values)) => {
                if !values.iter().any(|v| v == value) {
                    values.push(value.to_owned());
                }
            }
            None => self.fields.push((name.to_owned(), vec![value.to_owned()])),
        }
    }
}

fn is_error_label(name: &str) -> bool {
    name == ERROR_LABEL || name == ERROR_DETAILS_LABEL || name == PRESERVE_ERROR_LABEL
}

/// Runs Loki's field detection parsers over sampled entries: `| json`, and `| logfmt`
/// when the line is not a JSON object. Reusable across entries.
struct Detector {
    json: Pipeline,
    logfmt: Pipeline,
    lb: LabelsBuilder,
}

impl Detector {
    fn new() -> Result<Detector, QueryError> {
        let build = |stage: Stage| {
            Pipeline::new(&[stage]).map_err(|e| QueryError::Internal(format!("{e}")))
        };
        Ok(Detector {
            json: build(Stage::Json(Vec::new()))?,
            logfmt: build(Stage::Logfmt {
                strict: false,
                keep_empty: false,
                params: Vec::new(),
            })?,
            lb: LabelsBuilder::new(),
        })
    }

    /// The fields of one entry besides its structured metadata (Loki's `parseEntry`): the
    /// labels the query parsed, and those `| json` (else `| logfmt`) sets from the line
    /// with the stream labels as the only other labels.
    fn parse(&mut self, entry: &SampledEntry) -> EntryFields {
        let mut out = EntryFields::default();
        for (name, value) in &entry.parsed {
            if !is_error_label(name) {
                out.add(name, value);
            }
        }
        // A label the query's pipeline overwrote is no stream label any more.
        let stream: Vec<(String, String)> = entry
            .stream
            .iter()
            .filter(|(n, _)| !entry.parsed.iter().any(|(p, _)| p == n))
            .cloned()
            .collect();
        let parser = [Parser::Json, Parser::Logfmt].into_iter().find(|p| {
            let pipeline = match p {
                Parser::Json => &self.json,
                Parser::Logfmt => &self.logfmt,
            };
            self.lb.reset(&stream, &[]);
            pipeline
                .process(entry.ts_ns, &entry.line, &mut self.lb)
                .is_some()
                && !self.lb.has_error()
        });
        let Some(parser) = parser else {
            return out;
        };
        for (name, value) in self.lb.categorized().parsed {
            if !is_error_label(&name) {
                out.add(&name, &value);
            }
        }
        if parser == Parser::Json {
            out.json_paths = json_label_paths(&entry.line, &|n| stream.iter().any(|(s, _)| s == n));
        }
        out.parser = Some(parser);
        out
    }
}

/// Structured metadata of an entry grouped by name: name and distinct values.
fn metadata_fields(entry: &SampledEntry) -> Vec<(&str, Vec<&str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for (name, value) in &entry.structured_metadata {
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, values)) => {
                if !values.contains(&value.as_str()) {
                    values.push(value);
                }
            }
            None => out.push((name, vec![value])),
        }
    }
    out
}

/// A field being counted.
struct FieldAcc {
    field_type: FieldType,
    parsers: Vec<Parser>,
    json_path: Option<Vec<String>>,
    values: HashSet<String>,
}

impl FieldAcc {
    /// Loki types a field once per entry, by the first of its values there.
    fn add_values<'v>(&mut self, values: impl IntoIterator<Item = &'v str>) {
        let mut values = values.into_iter().peekable();
        if let Some(first) = values.peek() {
            self.field_type = FieldType::of(first);
        }
        for v in values {
            if !self.values.contains(v) {
                self.values.insert(v.to_owned());
            }
        }
    }
}

/// The fields found so far, at most `limit` of them (the first found).
struct Fields {
    limit: usize,
    index: HashMap<String, usize>,
    accs: Vec<(String, FieldAcc)>,
}

impl Fields {
    /// The field `name`, created with `parsers` while there are fewer than `limit`.
    fn get(&mut self, name: &str, parsers: &[Parser]) -> Option<&mut FieldAcc> {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None if self.accs.len() < self.limit => {
                self.index.insert(name.to_owned(), self.accs.len());
                self.accs.push((
                    name.to_owned(),
                    FieldAcc {
                        field_type: FieldType::String,
                        parsers: parsers.to_vec(),
                        json_path: None,
                        values: HashSet::new(),
                    },
                ));
                self.accs.len() - 1
            }
            None => return None,
        };
        Some(&mut self.accs[i].1)
    }
}

/// The fields of a sample, at most `limit` of them (the first found), sorted by name.
///
/// Entries are visited stream by stream (streams in label order), each stream's newest
/// first, as Loki visits the streams of its answer: a field typed differently in two
/// entries gets the type of the last one visited.
pub fn detect_fields(
    entries: &[SampledEntry],
    limit: usize,
) -> Result<Vec<DetectedField>, QueryError> {
    let mut order: Vec<&SampledEntry> = entries.iter().collect();
    order.sort_by(|a, b| a.stream.cmp(&b.stream));
    let mut detector = Detector::new()?;
    let mut fields = Fields {
        limit,
        index: HashMap::new(),
        accs: Vec::new(),
    };
    for entry in order {
        for (name, values) in metadata_fields(entry) {
            if let Some(acc) = fields.get(name, &[]) {
                acc.add_values(values);
            }
        }
        let found = detector.parse(entry);
        let parsers: Vec<Parser> = found.parser.into_iter().collect();
        for (name, values) in &found.fields {
            let Some(acc) = fields.get(name, &parsers) else {
                continue;
            };
            for p in &parsers {
                if !acc.parsers.contains(p) {
                    acc.parsers.push(*p);
                }
            }
            if found.parser == Some(Parser::Json) {
                // Loki takes the path from the last JSON entry with the field (none when
                // the field came from the query's pipeline only).
                acc.json_path = found
                    .json_paths
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, p)| p.clone());
            }
            acc.add_values(values.iter().map(String::as_str));
        }
    }
    let mut out: Vec<DetectedField> = fields
        .accs
        .into_iter()
        .map(|(label, acc)| DetectedField {
            label,
            field_type: acc.field_type,
            cardinality: acc.values.len() as u64,
            parsers: acc.parsers,
            json_path: acc.json_path,
        })
        .collect();
    out.sort_by(|a, b| a.label.cmp(&b.label));
    Ok(out)
}

/// The distinct values of field `name` in a sample, newest first, at most about `limit`
/// (Loki stops before an entry once it has `limit`). Sizes with a unit (`1063KB`) are
/// rewritten as go-humanize prints them (`1.1MB`) so they can go into a query as they are.
pub fn field_values(
    entries: &[SampledEntry],
    name: &str,
    limit: usize,
) -> Result<Vec<String>, QueryError> {
    fn add(seen: &mut HashSet<String>, out: &mut Vec<String>, v: String) {
        if !seen.contains(&v) {
            seen.insert(v.clone());
            out.push(v);
        }
    }
    let mut detector = Detector::new()?;
    let mut seen: HashSet<String> = HashSet::new();
    let mut out: Vec<String> = Vec::new();
    for entry in entries {
        if out.len() >= limit {
            break;
        }
        for (n, v) in &entry.structured_metadata {
            if n == name {
                add(&mut seen, &mut out, v.clone());
            }
        }
        let found = detector.parse(entry);
        for (_, values) in found.fields.iter().filter(|(n, _)| n == name) {
            for v in values {
                add(&mut seen, &mut out, query_ready_value(v));
            }
        }
    }
    Ok(out)
}

/// Units that make a size value be rewritten (Loki's `allowedBytesUnits`, matched as a
/// suffix of the lower-cased value).
const SIZE_UNITS: [&str; 25] = [
    "b", "kib", "kb", "mib", "mb", "gib", "gb", "tib", "tb", "pib", "pb", "eib", "eb", "ki", "k",
    "mi", "m", "gi", "g", "ti", "t", "pi", "p", "ei", "e",
];

/// A value as `detected_field/{name}/values` returns it: a size with a unit in
/// go-humanize's SI form without the space (`1063KB` → `1.1MB`), anything else unchanged.
fn query_ready_value(value: &str) -> String {
    let lower = value.to_lowercase();
    match parse_humanize_bytes(value) {
        Ok(bytes) if SIZE_UNITS.iter().any(|u| lower.ends_with(u)) => humanize_si_bytes(bytes),
        _ => value.to_owned(),
    }
}

/// go-humanize's `Bytes` (SI units, one decimal below 10) without the space.
fn humanize_si_bytes(bytes: u64) -> String {
    const SIZES: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 10 {
        return format!("{bytes}B");
    }
    let f = bytes as f64;
    let e = (f.ln() / 1000f64.ln()).floor();
    let suffix = SIZES[(e as usize).min(SIZES.len() - 1)];
    let val = (f / 1000f64.powf(e) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1}{suffix}")
    } else {
        format!("{val:.0}{suffix}")
    }
}

impl SampledEntry {
    fn from_row(row: logs::Row) -> SampledEntry {
        let labels = row.labels;
        let stream = labels
            .labels
            .into_iter()
            .filter(|(n, _)| {
                !labels.structured_metadata.iter().any(|(m, _)| m == n)
                    && !labels.parsed.iter().any(|(p, _)| p == n)
            })
            .collect();
        SampledEntry {
            ts_ns: row.ts,
            line: row.line,
            stream,
            structured_metadata: labels.structured_metadata,
            parsed: labels.parsed,
        }
    }
}

/// What to sample: the newest `line_limit` entries of a log query in a time range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRequest {
    /// Tenant.
    pub tenant: String,
    /// A log query (selector and optional pipeline).
    pub query: String,
    /// Start, ns (inclusive).
    pub start_ns: i64,
    /// End, ns (exclusive).
    pub end_ns: i64,
    /// How many of the newest entries to read.
    pub line_limit: u32,
}

impl QueryEngine {
    /// The newest `line_limit` entries of a log query, newest first, labels split into
    /// stream labels, structured metadata and parsed labels. A backward log query with a
    /// limit: it reads only the newest part of the range that holds them.
    pub async fn sample(&self, req: SampleRequest) -> Result<Vec<SampledEntry>, QueryError> {
        let expr =
            tovlog_logql::parse(&req.query).map_err(|e| QueryError::BadRequest(e.to_string()))?;
        let Expr::Log(log) = expr else {
            return Err(QueryError::BadRequest(format!(
                "only log queries are supported here, not metric queries: {}",
                req.query
            )));
        };
        let query = QueryRequest {
            tenant: req.tenant.clone(),
            query: req.query,
            start_ns: req.start_ns,
            end_ns: req.end_ns,
            step_ns: 0,
            limit: req.line_limit,
            direction: Direction::Backward,
            instant: false,
            categorize_labels: true,
        };
        let (rows, _) = self
            .with_timeout(&req.tenant, |qc| {
                let (log, query) = (&log, &query);
                async move { logs::first_rows(&qc, log, query).await }
            })
            .await?;
        Ok(rows.into_iter().map(SampledEntry::from_row).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    fn entry(ts: i64, stream: &[(&str, &str)], line: &str) -> SampledEntry {
        SampledEntry {
            ts_ns: ts,
            line: line.to_owned(),
            stream: pairs(stream),
            ..SampledEntry::default()
        }
    }

    fn field<'a>(fields: &'a [DetectedField], name: &str) -> &'a DetectedField {
        match fields.iter().find(|f| f.label == name) {
            Some(f) => f,
            None => panic!("no field {name} in {fields:?}"),
        }
    }

    #[test]
    fn types_follow_loki_order() {
        let cases = [
            ("42", FieldType::Int),
            ("-7", FieldType::Int),
            ("+3", FieldType::Int),
            ("0", FieldType::Int),
            ("99999999999999999999", FieldType::Float),
            ("24.3", FieldType::Float),
            ("1e3", FieldType::Float),
            (".5", FieldType::Float),
            ("NaN", FieldType::Float),
            ("-Inf", FieldType::Float),
            ("0x1p-2", FieldType::Float),
            ("true", FieldType::Boolean),
            ("F", FieldType::Boolean),
            ("False", FieldType::Boolean),
            ("1236ms", FieldType::Duration),
            ("1h30m", FieldType::Duration),
            ("82.708s", FieldType::Duration),
            ("-1.5µs", FieldType::Duration),
            ("1063KB", FieldType::Bytes),
            ("816MiB", FieldType::Bytes),
            ("1,000", FieldType::Bytes),
            ("3 k", FieldType::Bytes),
            ("", FieldType::String),
            ("1e400", FieldType::String),
            ("+nan", FieldType::String),
            ("yes", FieldType::String),
            ("10 apples", FieldType::String),
            ("1.5hours", FieldType::String),
            ("1_000", FieldType::String),
        ];
        for (value, want) in cases {
            assert_eq!(FieldType::of(value), want, "{value:?}");
        }
        assert_eq!(FieldType::Duration.as_str(), "duration");
    }

    #[test]
    fn json_logfmt_and_metadata_fields() -> Result<(), QueryError> {
        let stream = [("job", "app"), ("level", "info")];
        let mut json = entry(
            3,
            &stream,
            r#"{"level":"warn","user":{"id":7,"name":"ann"},"took":"1.5s","ok":true,"tags":["a"]}"#,
        );
        json.structured_metadata = pairs(&[("trace_id", "t1")]);
        let mut other = entry(
            2,
            &stream,
            r#"{"level":"error","user":{"id":8,"name":"bob"},"took":"2s","ok":false}"#,
        );
        other.structured_metadata = pairs(&[("trace_id", "t2")]);
        let logfmt = entry(1, &stream, "size=12MB user_id=9 msg=\"x y\"");
        let fields = detect_fields(&[json, other, logfmt], 1000)?;
        let names: Vec<&str> = fields.iter().map(|f| f.label.as_str()).collect();
        assert_eq!(
            names,
            [
                "level_extracted",
                "msg",
                "ok",
                "size",
                "took",
                "trace_id",
                "user_id",
                "user_name"
            ]
        );
        // The stream label `level` makes the JSON key `level_extracted`; its path is the key.
        let level = field(&fields, "level_extracted");
        assert_eq!(level.json_path, Some(vec!["level".to_owned()]));
        assert_eq!(level.parsers, [Parser::Json]);
        assert_eq!(level.cardinality, 2);
        let user_id = field(&fields, "user_id");
        assert_eq!(user_id.field_type, FieldType::Int);
        assert_eq!(user_id.cardinality, 3);
        assert_eq!(user_id.parsers, [Parser::Json, Parser::Logfmt]);
        // The logfmt entry came last and has no path: the JSON path stays.
        assert_eq!(
            user_id.json_path,
            Some(vec!["user".to_owned(), "id".to_owned()])
        );
        assert_eq!(field(&fields, "took").field_type, FieldType::Duration);
        assert_eq!(field(&fields, "ok").field_type, FieldType::Boolean);
        let size = field(&fields, "size");
        assert_eq!(
            (size.field_type, size.json_path.clone()),
            (FieldType::Bytes, None)
        );
        let trace = field(&fields, "trace_id");
        assert!(trace.parsers.is_empty());
        assert_eq!(trace.cardinality, 2);
        assert_eq!(trace.json_path, None);
        // The field limit keeps the first fields found.
        let few = detect_fields(&[entry(1, &stream, "a=1 b=2 c=3")], 2)?;
        assert_eq!(few.len(), 2);
        Ok(())
    }

    #[test]
    fn labels_parsed_by_the_query_count_without_their_error_labels() -> Result<(), QueryError> {
        let mut e = entry(1, &[("job", "nginx")], "GET /x 200");
        e.parsed = pairs(&[
            ("status", "200"),
            ("__error__", "LogfmtParserErr"),
            ("__error_details__", "x"),
        ]);
        let fields = detect_fields(&[e], 1000)?;
        // The line is no JSON, so logfmt reads it (finding nothing but still the parser).
        let status = field(&fields, "status");
        assert_eq!(status.parsers, [Parser::Logfmt]);
        assert_eq!(status.field_type, FieldType::Int);
        assert!(fields.iter().all(|f| !f.label.starts_with("__")));
        Ok(())
    }

    #[test]
    fn the_last_entry_visited_decides_the_type() -> Result<(), QueryError> {
        // Newest first within a stream: the oldest entry's value types the field.
        let s = [("job", "a")];
        let fields = detect_fields(&[entry(2, &s, "v=1.5"), entry(1, &s, "v=3")], 10)?;
        assert_eq!(field(&fields, "v").field_type, FieldType::Int);
        Ok(())
    }

    #[test]
    fn values_are_distinct_and_sizes_query_ready() -> Result<(), QueryError> {
        let s = [("job", "fe")];
        let mut a = entry(3, &s, r#"{"bundle":"1063KB","n":"5"}"#);
        a.structured_metadata = pairs(&[("bundle", "meta")]);
        let b = entry(2, &s, r#"{"bundle":"1063KB"}"#);
        let c = entry(1, &s, "bundle=7b");
        let values = field_values(&[a, b, c], "bundle", 100)?;
        assert_eq!(values, ["meta", "1.1MB", "7B"]);
        assert_eq!(field_values(&[entry(1, &s, "n=5")], "n", 100)?, ["5"]);
        assert!(field_values(&[entry(1, &s, "n=5")], "m", 100)?.is_empty());
        Ok(())
    }

    #[test]
    fn humanized_sizes_match_go_humanize() {
        assert_eq!(humanize_si_bytes(5), "5B");
        assert_eq!(humanize_si_bytes(999), "999B");
        assert_eq!(humanize_si_bytes(1000), "1.0kB");
        assert_eq!(humanize_si_bytes(1_063_000), "1.1MB");
        assert_eq!(humanize_si_bytes(20 * 1024), "20kB");
        assert_eq!(humanize_si_bytes(816 * 1024 * 1024), "856MB");
        assert_eq!(query_ready_value("42"), "42");
        assert_eq!(query_ready_value("2e"), "2.0EB");
        assert_eq!(query_ready_value("some"), "some");
    }

    #[test]
    fn labels_of_ids_are_left_out() {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert!(is_detected_label("job", &v(&["api", "db"])));
        assert!(is_detected_label("flag", &v(&["0", "1"])));
        assert!(!is_detected_label("flag", &v(&["0", "1", "2"])));
        assert!(!is_detected_label("port", &v(&["8080"])));
        assert!(!is_detected_label("ratio", &v(&["0.5", "1e3", "NaN"])));
        assert!(is_detected_label("mixed", &v(&["12", "abc"])));
        assert!(!is_detected_label(
            "uid",
            &v(&[
                "f4ec491b-2330-41f6-a65c-3b2b28638da1",
                "{14a9091e-fa1b-4d34-a53c-be930be2bf7c}",
                "urn:uuid:2701a0cc-9b36-438e-a5ca-68b4ddef8cb1",
                "7cc040299afe4e06aed7312fa5fe751b",
            ])
        ));
        assert!(is_detected_label(
            "uid",
            &v(&["f4ec491b-2330-41f6-a65c-3b2b28638dz1"])
        ));
        assert!(is_detected_label("pod", &v(&["1", "2", "3"])));
        assert!(!is_detected_label("pod", &[]));
        let got = detected_labels(vec![
            ("z".into(), v(&["a", "b", "a"])),
            ("id".into(), v(&["1", "2", "3"])),
            ("cluster".into(), v(&["7"])),
        ]);
        assert_eq!(
            got,
            [
                DetectedLabel {
                    label: "cluster".into(),
                    cardinality: 1
                },
                DetectedLabel {
                    label: "z".into(),
                    cardinality: 2
                }
            ]
        );
    }
}
