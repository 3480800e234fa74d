//! Semantic checks Loki makes on a parsed query, with Loki's error wording.
//!
//! Loki raises these at three moments, and we keep its order so the first error reported
//! is the one Loki reports: (1) while building AST nodes (invalid matcher regexes,
//! `regexp`/`pattern` parsers), (2) in `validateExpr` (selectors needing a non-empty
//! matcher, aggregation rules, literals in set operations), (3) when the pipeline is built
//! (line-filter regexes and patterns, `ip()` filters, templates, `label_format`
//! duplicates), which Loki reports as `parse error : stage '<stage>' : <reason>`.
//! Regex errors are reworded as Go's `regexp` package words them.

use std::net::IpAddr;

use crate::ast::{
    BinOp, Expr, LabelFilterExpr, LabelFormatSrc, LineFilter, LineFilterOp, LineFilterValue,
    LogExpr, LogRange, MatchOp, Matcher, RangeOp, SampleExpr, Stage, VectorOp,
};
use crate::template::Template;
use crate::Error;

/// Loki's message for a selector whose matchers all match the empty string.
pub const ERR_NEED_MATCHER: &str = "queries require at least one regexp or equality matcher that does not have an empty-compatible value. For instance, app=~\".*\" does not meet this requirement, but app=~\".+\" will";

/// Check a parsed expression with Loki's semantic rules.
pub fn validate(expr: &Expr) -> Result<(), Error> {
    let mut logs: Vec<&LogExpr> = Vec::new();
    match expr {
        Expr::Log(l) => logs.push(l),
        Expr::Sample(s) => collect_logs(s, &mut logs),
    }
    // (1) errors Loki raises while building the AST.
    for l in &logs {
        construction_checks(l)?;
    }
    // (2) validateExpr.
    match expr {
        Expr::Log(l) => check_selector(&l.selector)?,
        Expr::Sample(s) => check_sample(s)?,
    }
    // (3) pipeline construction.
    for l in &logs {
        stage_checks(&l.pipeline)?;
    }
    Ok(())
}

fn collect_logs<'a>(s: &'a SampleExpr, out: &mut Vec<&'a LogExpr>) {
    match s {
        SampleExpr::Range(r) => out.push(&r.range.log),
        SampleExpr::Vector(v) => collect_logs(&v.expr, out),
        SampleExpr::Binary(b) => {
            collect_logs(&b.lhs, out);
            collect_logs(&b.rhs, out);
        }
        SampleExpr::LabelReplace(l) => collect_logs(&l.expr, out),
        SampleExpr::Literal(_) | SampleExpr::VectorLiteral(_) => {}
    }
}

/// Go's `regexp` error text for an invalid pattern, or `None` when it compiles.
///
/// Only parses the pattern (AST and HIR): building the automaton would cost far more than
/// the whole query parse, and the pipeline compiles it later anyway.
pub fn regex_error(pattern: &str) -> Option<String> {
    use regex_syntax::ast::ErrorKind as K;
    let e = match regex_syntax::ast::parse::Parser::new().parse(pattern) {
        Ok(ast) => {
            return regex_syntax::hir::translate::Translator::new()
                .translate(pattern, &ast)
                .err()
                .map(|e| format!("error parsing regexp: {}", e.kind()));
        }
        Err(e) => e,
    };
    let span = e.span();
    let mut at = pattern
        .get(span.start.offset..span.end.offset)
        .unwrap_or(pattern);
    if at.is_empty() {
        // Zero-width spans point at the offending character.
        let rest = pattern.get(span.start.offset..).unwrap_or("");
        at = rest
            .get(..rest.chars().next().map_or(0, char::len_utf8))
            .unwrap_or("");
    }
    let (code, text): (&str, &str) = match e.kind() {
        K::GroupUnclosed => ("missing closing )", pattern),
        K::GroupUnopened => ("unexpected )", pattern),
        K::ClassUnclosed => (
            "missing closing ]",
            pattern.get(span.start.offset..).unwrap_or(pattern),
        ),
        K::RepetitionMissing => ("missing argument to repetition operator", at),
        K::RepetitionCountInvalid | K::RepetitionCountDecimalEmpty => ("invalid repeat count", at),
        K::EscapeUnrecognized
        | K::UnsupportedBackreference
        | K::EscapeHexInvalid
        | K::EscapeHexInvalidDigit
        | K::EscapeHexEmpty => ("invalid escape sequence", at),
        K::EscapeUnexpectedEof => ("trailing backslash at end of expression", ""),
        K::ClassRangeInvalid => ("invalid character class range", at),
        K::GroupNameInvalid
        | K::GroupNameEmpty
        | K::GroupNameUnexpectedEof
        | K::GroupNameDuplicate { .. } => ("invalid named capture", at),
        K::UnsupportedLookAround
        | K::FlagUnrecognized
        | K::FlagDanglingNegation
        | K::FlagRepeatedNegation { .. }
        | K::FlagUnexpectedEof
        | K::FlagDuplicate { .. } => ("invalid or unsupported Perl syntax", at),
        K::NestLimitExceeded(_) => ("expression nests too deeply", pattern),
        _ => {
            return Some(format!("error parsing regexp: {}", e.kind()));
        }
    };
    Some(format!("error parsing regexp: {code}: `{text}`"))
}

fn check_matcher_regex(op: MatchOp, value: &str) -> Result<(), Error> {
    if matches!(op, MatchOp::Re | MatchOp::Nre) {
        // Prometheus parses the bare pattern first, so errors quote it unanchored.
        if let Some(e) = regex_error(value) {
            return Err(Error::parse_msg(e));
        }
    }
    Ok(())
}

fn check_label_filter_regexes(f: &LabelFilterExpr) -> Result<(), Error> {
    match f {
        LabelFilterExpr::And { lhs, rhs, .. } | LabelFilterExpr::Or(lhs, rhs) => {
            check_label_filter_regexes(lhs)?;
            check_label_filter_regexes(rhs)
        }
        LabelFilterExpr::Paren(inner) => check_label_filter_regexes(inner),
        LabelFilterExpr::String { op, value, .. } => check_matcher_regex(*op, value),
        _ => Ok(()),
    }
}

/// A valid Prometheus label name.
fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

fn construction_checks(l: &LogExpr) -> Result<(), Error> {
    for m in &l.selector {
        check_matcher_regex(m.op, &m.value)?;
    }
    for s in &l.pipeline {
        match s {
            Stage::Regexp(re) => check_regexp_parser(re)?,
            Stage::Pattern(p) => {
                if let Err(e) = check_pattern(p, false) {
                    return Err(Error::parse_msg(format!("invalid pattern parser: {e}")));
                }
            }
            Stage::LabelFilter(f) => check_label_filter_regexes(f)?,
            Stage::Drop(sel) | Stage::Keep(sel) => {
                for ls in sel {
                    if let Some((op, v)) = &ls.matcher {
                        check_matcher_regex(*op, v)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_regexp_parser(re: &str) -> Result<(), Error> {
    let wrap = |m: String| Error::parse_msg(format!("invalid regexp parser: {m}"));
    if let Some(e) = regex_error(re) {
        return Err(wrap(e));
    }
    let compiled = regex::Regex::new(re).map_err(|e| wrap(e.to_string()))?;
    let mut seen: Vec<&str> = Vec::new();
    for name in compiled.capture_names().flatten() {
        if !is_label_name(name) {
            return Err(wrap(format!("invalid extracted label name '{name}'")));
        }
        if seen.contains(&name) {
            return Err(wrap(format!("duplicate extracted label name '{name}'")));
        }
        seen.push(name);
    }
    if seen.is_empty() {
        return Err(wrap("at least one named capture must be supplied".into()));
    }
    Ok(())
}

/// Parts of a Loki pattern: literals and `<name>` captures (`<_>` is unnamed).
enum PatternNode<'a> {
    Literal,
    Capture(&'a str),
}

fn pattern_nodes(p: &str) -> Vec<PatternNode<'_>> {
    let mut out = Vec::new();
    let b = p.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'<' {
            let name_len = b[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                .count();
            let end = i + 1 + name_len;
            let valid_start = b
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_');
            if name_len > 0 && valid_start && b.get(end) == Some(&b'>') {
                out.push(PatternNode::Capture(&p[i + 1..end]));
                i = end + 1;
                continue;
            }
        }
        if !matches!(out.last(), Some(PatternNode::Literal)) {
            out.push(PatternNode::Literal);
        }
        i += 1;
    }
    out
}

/// Loki's pattern validation; `line_filter` applies the `|>`/`!>` rules instead of the
/// parser's.
fn check_pattern(p: &str, line_filter: bool) -> Result<(), String> {
    let nodes = pattern_nodes(p);
    if line_filter && nodes.is_empty() {
        return Ok(());
    }
    let named: Vec<&str> = nodes
        .iter()
        .filter_map(|n| match n {
            PatternNode::Capture(c) if *c != "_" => Some(*c),
            _ => None,
        })
        .collect();
    if !line_filter && named.is_empty() {
        return Err("at least one capture is required".into());
    }
    for w in nodes.windows(2) {
        if let [PatternNode::Capture(a), PatternNode::Capture(b)] = w {
            return Err(format!(
                "found consecutive capture '<{a}><{b}>': invalid expression"
            ));
        }
    }
    if line_filter {
        if let Some(n) = named.first() {
            return Err(format!("named captures are not allowed: found '<{n}>'"));
        }
    } else {
        for (k, n) in named.iter().enumerate() {
            if named[..k].contains(n) {
                return Err(format!("duplicate capture name ({n}): invalid expression"));
            }
        }
    }
    Ok(())
}

fn matches_empty(m: &Matcher) -> bool {
    match m.op {
        MatchOp::Eq => m.value.is_empty(),
        MatchOp::Neq => !m.value.is_empty(),
        MatchOp::Re | MatchOp::Nre => regex_matches_empty(&m.value) == (m.op == MatchOp::Re),
    }
}

/// Whether the fully anchored regex matches `""`. Decided from the parsed pattern when it
/// has no assertions (the common case, and much cheaper than compiling it).
fn regex_matches_empty(pattern: &str) -> bool {
    let hir = regex_syntax::ParserBuilder::new()
        .dot_matches_new_line(true)
        .build()
        .parse(pattern);
    match hir {
        Ok(h) if h.properties().look_set().is_empty() => h.properties().minimum_len() == Some(0),
        _ => regex::Regex::new(&format!("^(?s:{pattern})$")).is_ok_and(|r| r.is_match("")),
    }
}

fn check_selector(sel: &[Matcher]) -> Result<(), Error> {
    if sel.iter().all(matches_empty) {
        return Err(Error::parse_msg(ERR_NEED_MATCHER));
    }
    Ok(())
}

fn fmt_param(v: f64) -> String {
    format!("{v}")
}

fn check_sample(s: &SampleExpr) -> Result<(), Error> {
    match s {
        SampleExpr::Binary(b) => {
            if matches!(b.op, BinOp::Or | BinOp::And | BinOp::Unless) {
                let sym = crate::parser::binop_symbol(b.op);
                if let SampleExpr::Literal(v) = *b.lhs {
                    return Err(Error::parse_msg(format!(
                        "unexpected literal for left leg of logical/set binary operation ({sym}): {v:.6}"
                    )));
                }
                if let SampleExpr::Literal(v) = *b.rhs {
                    return Err(Error::parse_msg(format!(
                        "unexpected literal for right leg of logical/set binary operation ({sym}): {v:.6}"
                    )));
                }
            }
            check_sample(&b.lhs)?;
            check_sample(&b.rhs)
        }
        SampleExpr::Literal(_) | SampleExpr::VectorLiteral(_) => Ok(()),
        SampleExpr::Vector(v) => {
            let name = v.op.name();
            match v.op {
                VectorOp::Topk | VectorOp::Bottomk => {
                    let Some(p) = v.param else {
                        return Err(Error::parse_msg(format!(
                            "parameter required for operation {name}"
                        )));
                    };
                    if p.fract() != 0.0 || !p.is_finite() {
                        return Err(Error::parse_msg(format!(
                            "invalid parameter {name}({},",
                            fmt_param(p)
                        )));
                    }
                    if p <= 0.0 {
                        return Err(Error::parse_msg(format!(
                            "invalid parameter (must be greater than 0) {name}({}",
                            fmt_param(p)
                        )));
                    }
                }
                _ => {
                    if let Some(p) = v.param {
                        return Err(Error::parse_msg(format!(
                            "unsupported parameter for operation {name}({},",
                            fmt_param(p)
                        )));
                    }
                }
            }
            if matches!(v.op, VectorOp::Sort | VectorOp::SortDesc)
                && v.grouping.as_ref().is_some_and(|g| !g.labels.is_empty())
            {
                return Err(Error::parse_msg(
                    "sort and sort_desc doesn't allow grouping by ",
                ));
            }
            check_sample(&v.expr)
        }
        SampleExpr::LabelReplace(l) => {
            if let Some(e) = regex_error(&format!("^(?:{})$", l.regex)) {
                return Err(Error::parse_msg(format!(
                    "invalid regex in label_replace: {e}"
                )));
            }
            check_sample(&l.expr)
        }
        SampleExpr::Range(r) => {
            let name = r.op.name();
            match (r.op, r.param) {
                (RangeOp::QuantileOverTime, None) => {
                    return Err(Error::parse_msg(format!(
                        "parameter required for operation {name}"
                    )))
                }
                (RangeOp::QuantileOverTime, Some(_)) | (_, None) => {}
                (_, Some(p)) => {
                    return Err(Error::parse_msg(format!(
                        "parameter {} not supported for operation {name}",
                        fmt_param(p)
                    )))
                }
            }
            check_range_rules(r.op, r.grouping.is_some(), &r.range)?;
            check_selector(&r.range.log.selector)
        }
    }
}

fn check_range_rules(op: RangeOp, grouped: bool, range: &LogRange) -> Result<(), Error> {
    use RangeOp as R;
    let name = op.name();
    if grouped
        && !matches!(
            op,
            R::AvgOverTime
                | R::StddevOverTime
                | R::StdvarOverTime
                | R::QuantileOverTime
                | R::MaxOverTime
                | R::MinOverTime
                | R::FirstOverTime
                | R::LastOverTime
        )
    {
        return Err(Error::parse_msg(format!(
            "grouping not allowed for {name} aggregation"
        )));
    }
    if let Some(u) = &range.unwrap {
        for f in &u.post_filters {
            check_label_filter_regexes(f)?;
        }
        if matches!(op, R::CountOverTime | R::BytesOverTime | R::BytesRate) {
            return Err(Error::parse_msg(format!(
                "invalid aggregation {name} with unwrap"
            )));
        }
        return Ok(());
    }
    if !matches!(
        op,
        R::BytesOverTime | R::BytesRate | R::CountOverTime | R::Rate | R::AbsentOverTime
    ) {
        return Err(Error::parse_msg(format!(
            "invalid aggregation {name} without unwrap"
        )));
    }
    Ok(())
}

/// `ip("…")` argument: one address, a CIDR or an `a-b` range of the same family.
fn valid_ip_pattern(p: &str) -> bool {
    if let Some((a, b)) = p.split_once('-') {
        return match (a.trim().parse::<IpAddr>(), b.trim().parse::<IpAddr>()) {
            (Ok(a), Ok(b)) => a.is_ipv4() == b.is_ipv4() && a <= b,
            _ => false,
        };
    }
    if let Some((a, bits)) = p.split_once('/') {
        return match (a.parse::<IpAddr>(), bits.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(n)) => n <= 32,
            (Ok(IpAddr::V6(_)), Ok(n)) => n <= 128,
            _ => false,
        };
    }
    p.parse::<IpAddr>().is_ok()
}

fn line_filter_error(f: &LineFilter) -> Option<String> {
    for v in &f.values {
        match v {
            LineFilterValue::Ip(p) => {
                if !matches!(f.op, LineFilterOp::Contains | LineFilterOp::NotContains) {
                    return Some("ip: invalid operation".into());
                }
                if !valid_ip_pattern(p) {
                    return Some(format!(
                        "ip: invalid pattern: {}",
                        crate::lexer::go_quote(p)
                    ));
                }
            }
            LineFilterValue::Str(s) => match f.op {
                LineFilterOp::Regex | LineFilterOp::NotRegex => {
                    if let Some(e) = regex_error(s) {
                        return Some(e);
                    }
                }
                LineFilterOp::Pattern | LineFilterOp::NotPattern => {
                    if let Err(e) = check_pattern(s, true) {
                        return Some(e);
                    }
                }
                _ => {}
            },
        }
    }
    None
}

fn stage_checks(stages: &[Stage]) -> Result<(), Error> {
    for (n, s) in stages.iter().enumerate() {
        let err = match s {
            Stage::LineFilter(f) => line_filter_error(f).map(|msg| {
                // Loki chains consecutive line filters into one stage and prints them all.
                let first = stages[..n]
                    .iter()
                    .rposition(|s| !matches!(s, Stage::LineFilter(_)))
                    .map_or(0, |p| p + 1);
                let last = stages[n..]
                    .iter()
                    .position(|s| !matches!(s, Stage::LineFilter(_)))
                    .map_or(stages.len(), |p| p + n);
                let text: Vec<String> = stages[first..last].iter().map(|s| s.to_string()).collect();
                (text.join(" "), msg)
            }),
            Stage::LineFormat(t) => Template::parse(t)
                .err()
                .map(|e| (s.to_string(), format!("invalid line template: {e}"))),
            Stage::LabelFormat(ops) => {
                let mut found = None;
                for (k, op) in ops.iter().enumerate() {
                    if op.dst == "__error__" {
                        found = Some(format!("{} cannot be formatted", op.dst));
                        break;
                    }
                    if ops[..k].iter().any(|o| o.dst == op.dst) {
                        found = Some(format!(
                            "multiple label name '{}' not allowed in a single format operation",
                            op.dst
                        ));
                        break;
                    }
                }
                if found.is_none() {
                    for op in ops {
                        if let LabelFormatSrc::Template(t) = &op.src {
                            if let Err(e) = Template::parse(t) {
                                found =
                                    Some(format!("invalid template for label '{}': {e}", op.dst));
                                break;
                            }
                        }
                    }
                }
                found.map(|m| (s.to_string(), m))
            }
            _ => None,
        };
        if let Some((stage, msg)) = err {
            return Err(Error::Stage { stage, msg });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(q: &str) -> String {
        match crate::parse(q) {
            Ok(e) => format!("OK {e}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn selectors_need_a_non_empty_matcher() {
        for q in [
            r#"{}"#,
            r#"{a=""}"#,
            r#"{a!="x"}"#,
            r#"{a=~".*"}"#,
            r#"{a!~".+"}"#,
        ] {
            assert_eq!(err(q), format!("parse error : {ERR_NEED_MATCHER}"), "{q}");
        }
        assert_eq!(err(r#"{a=~".+"}"#), r#"OK {a=~".+"}"#);
        assert_eq!(err(r#"{a!=""}"#), r#"OK {a!=""}"#);
        assert_eq!(
            err(r#"sum(rate({a=""}[1m]))"#),
            format!("parse error : {ERR_NEED_MATCHER}")
        );
    }

    #[test]
    fn go_regex_messages() {
        assert_eq!(
            regex_error("(unclosed").as_deref(),
            Some("error parsing regexp: missing closing ): `(unclosed`")
        );
        assert_eq!(
            regex_error("a)").as_deref(),
            Some("error parsing regexp: unexpected ): `a)`")
        );
        assert_eq!(
            regex_error("x[a-").as_deref(),
            Some("error parsing regexp: missing closing ]: `[a-`")
        );
        assert_eq!(
            regex_error("*a").as_deref(),
            Some("error parsing regexp: missing argument to repetition operator: `*`")
        );
        assert_eq!(regex_error("a.*b"), None);
        assert!(regex_matches_empty(".*"));
        assert!(regex_matches_empty("a|"));
        assert!(!regex_matches_empty(".+"));
        assert!(!regex_matches_empty("a*b"));
        assert!(regex_matches_empty("^$"));
        assert!(!regex_matches_empty(r"\b"));
    }

    #[test]
    fn aggregation_rules() {
        assert_eq!(
            err(r#"sum_over_time({a="b"} | unwrap x [1m]) by (y)"#),
            "parse error : grouping not allowed for sum_over_time aggregation"
        );
        assert_eq!(
            err(r#"count_over_time({a="b"} | unwrap x [1m])"#),
            "parse error : invalid aggregation count_over_time with unwrap"
        );
        assert_eq!(
            err(r#"sum_over_time({a="b"}[1m])"#),
            "parse error : invalid aggregation sum_over_time without unwrap"
        );
        assert_eq!(
            err(r#"quantile_over_time({a="b"} | unwrap x [1m])"#),
            "parse error : parameter required for operation quantile_over_time"
        );
        assert_eq!(
            err(r#"rate(5, {a="b"}[1m])"#),
            "parse error : parameter 5 not supported for operation rate"
        );
        assert_eq!(
            err(r#"topk(0, rate({a="b"}[1m]))"#),
            "parse error : invalid parameter (must be greater than 0) topk(0"
        );
        assert_eq!(
            err(r#"topk(1.5, rate({a="b"}[1m]))"#),
            "parse error : invalid parameter topk(1.5,"
        );
        assert_eq!(
            err(r#"topk(rate({a="b"}[1m]))"#),
            "parse error : parameter required for operation topk"
        );
        assert_eq!(
            err(r#"sum(2, rate({a="b"}[1m]))"#),
            "parse error : unsupported parameter for operation sum(2,"
        );
        assert_eq!(
            err(r#"sort(rate({a="b"}[1m])) by (a)"#),
            "parse error : sort and sort_desc doesn't allow grouping by "
        );
        assert_eq!(
            err(r#"sum(rate({a="b"}[1m])) or 1"#),
            "parse error : unexpected literal for right leg of logical/set binary operation (or): 1.000000"
        );
    }

    #[test]
    fn matcher_regexes_are_checked() {
        assert_eq!(
            err(r#"{a=~"("}"#),
            "parse error : error parsing regexp: missing closing ): `(`"
        );
        assert_eq!(
            err(r#"{a="b"} | x!~"[a""#),
            "parse error : error parsing regexp: missing closing ]: `[a`"
        );
    }

    #[test]
    fn label_replace_regex_is_checked() {
        assert_eq!(
            err(r#"label_replace(vector(1), "a", "$1", "b", "(")"#),
            "parse error : invalid regex in label_replace: error parsing regexp: missing closing ): `^(?:()$`"
        );
    }

    #[test]
    fn stage_errors() {
        assert_eq!(
            err(r#"{job="nginx"} |~ "(unclosed""#),
            "parse error : stage '|~ \"(unclosed\"' : error parsing regexp: missing closing ): `(unclosed`"
        );
        assert_eq!(
            err(r#"{a="b"} | label_format a=b, a="c""#),
            "parse error : stage '| label_format a=b,a=\"c\"' : multiple label name 'a' not allowed in a single format operation"
        );
        assert_eq!(
            err(r#"{a="b"} |~ "x" != ip("nope")"#),
            "parse error : stage '|~ \"x\" != ip(\"nope\")' : ip: invalid pattern: \"nope\""
        );
        assert_eq!(
            err(r#"{a="b"} |> "<a> x""#),
            "parse error : stage '|> \"<a> x\"' : named captures are not allowed: found '<a>'"
        );
    }

    #[test]
    fn parser_stage_errors() {
        assert_eq!(
            err(r#"{a="b"} | regexp "(\\d+)""#),
            "parse error : invalid regexp parser: at least one named capture must be supplied"
        );
        assert_eq!(
            err(r#"{a="b"} | pattern "<a><b>""#),
            "parse error : invalid pattern parser: found consecutive capture '<a><b>': invalid expression"
        );
        assert_eq!(
            err(r#"{a="b"} | pattern "<_> x""#),
            "parse error : invalid pattern parser: at least one capture is required"
        );
        assert!(err(r#"{a="b"} | regexp "(?P<x>\\d+)""#).starts_with("OK"));
        assert!(err(r#"{a="b"} | pattern "<a> x <_>""#).starts_with("OK"));
    }

    #[test]
    fn ip_patterns() {
        for ok in [
            "1.2.3.4",
            "10.0.0.0/8",
            "1.2.3.4-1.2.3.9",
            "::1",
            "2001:db8::/32",
        ] {
            assert!(valid_ip_pattern(ok), "{ok}");
        }
        for bad in ["nope", "1.2.3.4/33", "1.2.3.4-::1", "1.2.3"] {
            assert!(!valid_ip_pattern(bad), "{bad}");
        }
    }
}
