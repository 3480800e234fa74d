//! Field needles: `| json | k="v"` keeps only lines whose parsed `k` is `v`, and a parser
//! takes label values from the line, so such a line contains `v` — unless the encoder
//! escaped part of it (then the line has a backslash) or `k` came from elsewhere (a stream
//! label or structured metadata, which shadow parsed labels). Scans use this to skip lines
//! and blocks that cannot match before anything is parsed; the pipeline still decides.

use crate::ast::{CmpOp, LabelFilterExpr, MatchOp, Stage};

/// A label equality a line must satisfy after parsing, with the value it implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldNeedle {
    /// The label the filter tests.
    pub label: String,
    /// Its required value: the line contains it unless escaped or shadowed.
    pub value: Vec<u8>,
    /// Every parser before the filter is a plain `| json`: then the value is in the line as
    /// a whole JSON value, not only as bytes somewhere ([`FieldNeedleFinder::line_allows`]).
    pub json_value: bool,
}

impl FieldNeedle {
    /// Testers of all `needles`, in the order a line is best tested by: longest value
    /// first (rarer, and found fastest), and of equal ones the plain before the whole-value
    /// tests, so a line most needles reject is rejected before a short value's every
    /// occurrence is examined.
    pub fn finders(needles: &[FieldNeedle]) -> Vec<FieldNeedleFinder> {
        let mut sorted: Vec<&FieldNeedle> = needles.iter().collect();
        sorted.sort_by_key(|n| (std::cmp::Reverse(n.value.len()), n.json_value));
        sorted.into_iter().map(FieldNeedle::finder).collect()
    }

    /// A precompiled tester of this needle.
    pub fn finder(&self) -> FieldNeedleFinder {
        FieldNeedleFinder {
            label: self.label.clone(),
            finder: memchr::memmem::Finder::new(&self.value).into_owned(),
            json_value: self.json_value,
        }
    }
}

/// A [`FieldNeedle`] ready to test lines.
#[derive(Debug, Clone)]
pub struct FieldNeedleFinder {
    /// The label the filter tests.
    pub label: String,
    finder: memchr::memmem::Finder<'static>,
    json_value: bool,
}

impl FieldNeedleFinder {
    /// Whether the line lets the filter match: it contains the value, or has a backslash
    /// (the value may be escaped). A line failing this can still match only through a
    /// stream label or structured metadata named [`Self::label`].
    ///
    /// After plain `| json` parsers only, the value must also stand in the line as a whole
    /// JSON value: a string `"value"` or a bare token (number, `true`, `false`) ending
    /// where the parser's tokens end, after a `:` (whitespace allowed around it). `| json`
    /// takes every label value from such a place: a number is its raw token, a string its
    /// content, which equals the bytes when the line has no backslash; array elements set
    /// no label. Keys are not checked, as nested objects (`{"user":{"id":3}}` gives
    /// `user_id`) and sanitized keys (`user-id`) name labels that are not in the line. A
    /// needle `3` thus passes `"user_id":3` and `"id": "3"`, not `"status":503` or
    /// `"path":"/v1/3"`.
    pub fn line_allows(&self, line: &[u8]) -> bool {
        let found = if self.json_value {
            let n = self.finder.needle().len();
            self.finder
                .find_iter(line)
                .any(|at| whole_json_value(line, at, at + n))
        } else {
            self.finder.find(line).is_some()
        };
        found || memchr::memchr(b'\\', line).is_some()
    }
}

/// Whether `line[start..end]` is a whole JSON value after a `:` (see
/// [`FieldNeedleFinder::line_allows`]).
fn whole_json_value(line: &[u8], start: usize, end: usize) -> bool {
    let space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c');
    let colon_before = |mut i: usize| {
        while i > 0 && space(line[i - 1]) {
            i -= 1;
        }
        i > 0 && line[i - 1] == b':'
    };
    let quoted = start > 0 && line[start - 1] == b'"' && line.get(end) == Some(&b'"');
    if quoted && colon_before(start - 1) {
        return true;
    }
    // A bare token ends where the parser ends tokens.
    let token_ends = line
        .get(end)
        .is_none_or(|&c| space(c) || matches!(c, b',' | b'}' | b']'));
    token_ends && colon_before(start)
}

/// The field needles of a pipeline: `name = "value"` conjuncts (non-empty value, not a
/// `__…__` label) of label filters that follow only line filters, `json` and `logfmt`.
pub fn field_needles(stages: &[Stage]) -> Vec<FieldNeedle> {
    let mut parsed = false;
    let mut plain_json = true;
    let mut out = Vec::new();
    for stage in stages {
        match stage {
            Stage::LineFilter(_) => {}
            Stage::Json(params) => {
                parsed = true;
                plain_json &= params.is_empty();
            }
            Stage::Logfmt { .. } => {
                parsed = true;
                plain_json = false;
            }
            Stage::LabelFilter(expr) if parsed => conjuncts(expr, plain_json, &mut out),
            // Label filters before any parser test stream labels or metadata only; every
            // other stage can rename labels or rewrite the line.
            Stage::LabelFilter(_) => {}
            _ => break,
        }
    }
    out
}

/// The metadata needles of a pipeline: `name = "value"` conjuncts of label filters before
/// any parser (after only line filters). Such a label is a stream label or structured
/// metadata, so where no selected stream has it, the value is a whole metadata value of
/// every wanted row.
pub fn metadata_needles(stages: &[Stage]) -> Vec<FieldNeedle> {
    let mut out = Vec::new();
    for stage in stages {
        match stage {
            Stage::LineFilter(_) => {}
            Stage::LabelFilter(expr) => conjuncts(expr, false, &mut out),
            _ => break,
        }
    }
    out
}

/// A numeric comparison the label `label` of every kept line passes (`| json |
/// duration_ms > 1000`): a numeric label filter drops a line whose label is missing or is
/// a number failing the comparison, whatever else the line carries.
#[derive(Debug, Clone, PartialEq)]
pub struct NumericBound {
    /// The label the filter tests.
    pub label: String,
    /// The comparison (never `!=`).
    pub op: CmpOp,
    /// The literal.
    pub value: f64,
}

/// The numeric bounds of a pipeline whose only parser is one `| json` without
/// parameters: `name op number` conjuncts (`op` not `!=`, `name` not a `__…__` label) of
/// the label filters after it, with nothing but line and label filters before them. The
/// label such a filter reads is the one a full `| json` walk gives the line (parsed, or
/// structured metadata, which shadows parsed labels), unless a stream label shadows it,
/// which the caller checks.
pub fn json_numeric_bounds(stages: &[Stage]) -> Vec<NumericBound> {
    let mut parsed = false;
    let mut out = Vec::new();
    for stage in stages {
        match stage {
            Stage::LineFilter(_) => {}
            Stage::Json(params) if params.is_empty() && !parsed => parsed = true,
            Stage::LabelFilter(expr) if parsed => numeric_conjuncts(expr, &mut out),
            Stage::LabelFilter(_) => {}
            _ => break,
        }
    }
    out
}

fn numeric_conjuncts(expr: &LabelFilterExpr, out: &mut Vec<NumericBound>) {
    match expr {
        LabelFilterExpr::And { lhs, rhs, .. } => {
            numeric_conjuncts(lhs, out);
            numeric_conjuncts(rhs, out);
        }
        LabelFilterExpr::Paren(inner) => numeric_conjuncts(inner, out),
        LabelFilterExpr::Number { name, op, value }
            if *op != CmpOp::Neq && !name.starts_with("__") && !value.is_nan() =>
        {
            out.push(NumericBound {
                label: name.clone(),
                op: *op,
                value: *value,
            });
        }
        _ => {}
    }
}

fn conjuncts(expr: &LabelFilterExpr, json_value: bool, out: &mut Vec<FieldNeedle>) {
    match expr {
        LabelFilterExpr::And { lhs, rhs, .. } => {
            conjuncts(lhs, json_value, out);
            conjuncts(rhs, json_value, out);
        }
        LabelFilterExpr::Paren(inner) => conjuncts(inner, json_value, out),
        LabelFilterExpr::String {
            name,
            op: MatchOp::Eq,
            value,
        } if !value.is_empty() && !name.starts_with("__") => out.push(FieldNeedle {
            label: name.clone(),
            value: value.as_bytes().to_vec(),
            json_value,
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse_expr;

    #[test]
    fn finders_allow_lines_with_the_value_or_a_backslash() {
        let f = FieldNeedle {
            label: "user".into(),
            value: b"mallory".to_vec(),
            json_value: false,
        }
        .finder();
        assert!(f.line_allows(br#"{"user":"mallory"}"#));
        assert!(f.line_allows(br#"{"user":"mall\u006fry"}"#));
        assert!(!f.line_allows(br#"{"user":"alice"}"#));
        assert_eq!(f.label, "user");
    }

    #[test]
    fn after_plain_json_the_value_must_be_a_whole_json_value() {
        let f = FieldNeedle {
            label: "user_id".into(),
            value: b"3".to_vec(),
            json_value: true,
        }
        .finder();
        for line in [
            r#"{"user_id":3}"#,
            r#"{"a":1,"user_id" : 3 ,"b":2}"#,
            "{\"user_id\":\n\t3}",
            r#"{"user":{"id":3}}"#,
            r#"{"user-id":"3","status":503}"#,
            r#"{"ids":[1,2,3],"user_id":3}"#,
            r#"{"path":"/v1/3","user_id":3}"#,
            // A backslash: the value may be escaped.
            r#"{"user_id":"\u0033"}"#,
            // Conservative: a string that looks like a value.
            r#"{"msg":"count: 3, done"}"#,
        ] {
            assert!(f.line_allows(line.as_bytes()), "{line}");
        }
        for line in [
            r#"{"user_id":13}"#,
            r#"{"user_id":31}"#,
            r#"{"status":503}"#,
            r#"{"path":"/v1/3"}"#,
            r#"{"3":1}"#,
            r#"{"ids":[1,2,3]}"#,
            r#"{"user_id":"3a"}"#,
            r#"{"user_id":3.0}"#,
            "level=info user_id=3",
        ] {
            assert!(!f.line_allows(line.as_bytes()), "{line}");
        }
        let t = FieldNeedle {
            label: "ok".into(),
            value: b"true".to_vec(),
            json_value: true,
        }
        .finder();
        assert!(t.line_allows(br#"{"ok":true}"#));
        assert!(t.line_allows(br#"{"ok":"true"}"#));
        assert!(!t.line_allows(br#"{"ok":"untrue"}"#));
        // Other parsers: the bytes anywhere.
        let l = FieldNeedle {
            label: "user_id".into(),
            value: b"3".to_vec(),
            json_value: false,
        }
        .finder();
        assert!(l.line_allows(b"level=info user_id=3"));
        assert!(l.line_allows(br#"{"status":503}"#));
    }

    #[test]
    fn json_values_only_after_plain_json_parsers() {
        let flags = |q: &str| -> Vec<bool> {
            let stages = match parse_expr(q) {
                Ok(crate::ast::Expr::Log(l)) => l.pipeline,
                other => panic!("{q}: {other:?}"),
            };
            field_needles(&stages)
                .into_iter()
                .map(|n| n.json_value)
                .collect()
        };
        assert_eq!(flags(r#"{a="b"} | json | u="3""#), vec![true]);
        assert_eq!(
            flags(r#"{a="b"} | json | u="3" | json | v="4""#),
            vec![true, true]
        );
        assert_eq!(
            flags(r#"{a="b"} | json | u="3" | logfmt | v="4""#),
            vec![true, false]
        );
        assert_eq!(flags(r#"{a="b"} | logfmt | u="3""#), vec![false]);
        assert_eq!(flags(r#"{a="b"} | json u="x[0]" | u="3""#), vec![false]);
    }

    fn needles(q: &str) -> Vec<(String, String)> {
        let expr = match parse_expr(q) {
            Ok(e) => e,
            Err(e) => panic!("{q}: {e}"),
        };
        let stages = match &expr {
            crate::ast::Expr::Log(l) => l.pipeline.clone(),
            other => panic!("not a log query: {other:?}"),
        };
        field_needles(&stages)
            .into_iter()
            .map(|n| (n.label, String::from_utf8_lossy(&n.value).into_owned()))
            .collect()
    }

    #[test]
    fn equalities_after_parsers_only() {
        assert_eq!(
            needles(r#"{a="b"} |= "x" | json | cid="c1" and (user="u" , status=~"5..")"#),
            vec![("cid".into(), "c1".into()), ("user".into(), "u".into())]
        );
        assert_eq!(needles(r#"{a="b"} | logfmt | level="warn""#).len(), 1);
        // Before a parser, after a rewrite, alternatives, negations, empties, __error__.
        assert!(needles(r#"{a="b"} | cid="c1" "#).is_empty());
        assert!(needles(r#"{a="b"} | json | label_format cid=other | cid="c1""#).is_empty());
        assert!(needles(r#"{a="b"} | json | line_format "{{.x}}" | cid="c1""#).is_empty());
        assert!(needles(r#"{a="b"} | json | cid="c1" or cid="c2""#).is_empty());
        assert!(needles(r#"{a="b"} | json | cid!="c1""#).is_empty());
        assert!(needles(r#"{a="b"} | json | cid="""#).is_empty());
        assert!(needles(r#"{a="b"} | json | __error__="JSONParserErr""#).is_empty());
        assert!(needles(r#"{a="b"} | regexp "(?P<cid>.*)" | cid="c1""#).is_empty());
    }

    #[test]
    fn numeric_bounds_after_one_plain_json_only() {
        let bounds = |q: &str| -> Vec<(String, CmpOp, f64)> {
            let stages = match parse_expr(q) {
                Ok(crate::ast::Expr::Log(l)) => l.pipeline,
                other => panic!("{q}: {other:?}"),
            };
            json_numeric_bounds(&stages)
                .into_iter()
                .map(|b| (b.label, b.op, b.value))
                .collect()
        };
        assert_eq!(
            bounds(
                r#"{a="b"} |= "x" | level="info" | json | duration_ms > 1000 and (status >= 500, user="u") | size < 3"#
            ),
            vec![
                ("duration_ms".into(), CmpOp::Gt, 1000.0),
                ("status".into(), CmpOp::Ge, 500.0),
                ("size".into(), CmpOp::Lt, 3.0)
            ]
        );
        assert_eq!(bounds(r#"{a="b"} | json | n == 2"#).len(), 1);
        // Other parsers, parameters, a second parser, rewrites, alternatives, `!=`,
        // durations, reserved labels, filters before the parser.
        for q in [
            r#"{a="b"} | logfmt | n > 1"#,
            r#"{a="b"} | json n="x.n" | n > 1"#,
            r#"{a="b"} | json | logfmt | n > 1"#,
            r#"{a="b"} | json | label_format n=m | n > 1"#,
            r#"{a="b"} | json | line_format "x" | n > 1"#,
            r#"{a="b"} | json | n > 1 or m > 1"#,
            r#"{a="b"} | json | n != 1"#,
            r#"{a="b"} | json | n > 1s"#,
            r#"{a="b"} | json | __n__ > 1"#,
            r#"{a="b"} | n > 1 | json"#,
        ] {
            assert!(bounds(q).is_empty(), "{q}");
        }
    }

    #[test]
    fn metadata_equalities_before_any_parser() {
        let stages = |q: &str| match parse_expr(q) {
            Ok(crate::ast::Expr::Log(l)) => l.pipeline,
            other => panic!("{q}: {other:?}"),
        };
        let labels = |q: &str| -> Vec<String> {
            metadata_needles(&stages(q))
                .into_iter()
                .map(|n| n.label)
                .collect()
        };
        assert_eq!(
            labels(r#"{a="b"} |= "x" | trace_id="t1" and span="s" | json | cid="c1""#),
            vec!["trace_id".to_string(), "span".to_string()]
        );
        assert!(labels(r#"{a="b"} | json | trace_id="t1""#).is_empty());
        assert!(labels(r#"{a="b"} | trace_id="t1" or trace_id="t2""#).is_empty());
        assert!(labels(r#"{a="b"} | line_format "x" | trace_id="t1""#).is_empty());
    }
}
