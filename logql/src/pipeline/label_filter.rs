//! Label filters (`| a="b" and c > 1 …`) compiled from [`crate::ast::LabelFilterExpr`] trees.
//!
//! String predicates compare a missing label as `""` and are the only ones that see
//! `__error__`. Numeric, duration and bytes predicates drop the line when the label is
//! missing and keep it with `__error__="LabelFilterErr"` when the value does not convert.
//! `and` evaluates both sides (a failed conversion on the right still records its error),
//! `or` stops at the first success, as in Loki.

use regex::Regex;

use super::scratch_regex::ScratchRegex;

use super::convert::{parse_go_duration, parse_go_float, parse_humanize_bytes};
use super::ip::IpMatcher;
use super::labels::{LabelsBuilder, ERROR_DETAILS_LABEL, ERROR_LABEL};
use super::line_filter::regex_error;
use crate::ast::{CmpOp, LabelFilterExpr, MatchOp};
use crate::Error;

/// `__error__` value of failed conversions in label filters.
pub(crate) const ERR_LABEL_FILTER: &str = "LabelFilterErr";

/// A compiled string matcher; regexes are fully anchored.
#[derive(Debug, Clone)]
pub(crate) enum StringMatcher {
    Eq(String),
    Neq(String),
    Re(ScratchRegex),
    Nre(ScratchRegex),
}

impl StringMatcher {
    /// `dot_nl`: `.` also matches `\n`, as in Prometheus label matchers (`drop`/`keep`);
    /// Loki's label filter regexes are anchored with `^(?:…)$` and keep Go's default.
    pub(crate) fn new(op: MatchOp, value: &str, dot_nl: bool) -> Result<StringMatcher, Error> {
        let flags = if dot_nl { "?s:" } else { "?:" };
        let anchored = || {
            Regex::new(&format!(
                "^({flags}{})$",
                super::line_filter::go_regex(value)
            ))
            .map_err(|e| Error::Validate(format!("error parsing regexp: {}", regex_error(&e))))
            .and_then(|re| ScratchRegex::new(&re))
        };
        Ok(match op {
            MatchOp::Eq => StringMatcher::Eq(value.to_string()),
            MatchOp::Neq => StringMatcher::Neq(value.to_string()),
            MatchOp::Re => StringMatcher::Re(anchored()?),
            MatchOp::Nre => StringMatcher::Nre(anchored()?),
        })
    }

    #[inline]
    pub(crate) fn matches(&self, v: &str) -> bool {
        match self {
            // Lengths first: `__error__=""` runs on every sampled line, and comparing two
            // empty strings would still call `memcmp`.
            StringMatcher::Eq(s) => v.len() == s.len() && (s.is_empty() || v == s),
            StringMatcher::Neq(s) => v.len() != s.len() || (!s.is_empty() && v != s),
            StringMatcher::Re(re) => re.is_match(v),
            StringMatcher::Nre(re) => !re.is_match(v),
        }
    }
}

fn cmp<T: PartialOrd>(op: CmpOp, a: T, b: T) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Neq => a != b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
    }
}

/// A compiled label filter tree.
#[derive(Debug, Clone)]
pub(crate) enum LabelFilter {
    And(Box<LabelFilter>, Box<LabelFilter>),
    Or(Box<LabelFilter>, Box<LabelFilter>),
    String {
        name: String,
        m: StringMatcher,
    },
    /// A string filter on `__error__` (`details` false) or `__error_details__`, which are
    /// not labels of the builder: the name is resolved once here, not per line (`| __error__=""`
    /// runs on every sampled line).
    ErrorString {
        details: bool,
        m: StringMatcher,
    },
    Number {
        name: String,
        op: CmpOp,
        value: f64,
    },
    Duration {
        name: String,
        op: CmpOp,
        value_ns: i64,
    },
    Bytes {
        name: String,
        op: CmpOp,
        value: u64,
    },
    Ip {
        name: String,
        negated: bool,
        ip: IpMatcher,
    },
}

impl LabelFilter {
    pub(crate) fn new(expr: &LabelFilterExpr) -> Result<LabelFilter, Error> {
        Ok(match expr {
            LabelFilterExpr::And { lhs, rhs, .. } => LabelFilter::And(
                Box::new(LabelFilter::new(lhs)?),
                Box::new(LabelFilter::new(rhs)?),
            ),
            LabelFilterExpr::Or(l, r) => LabelFilter::Or(
                Box::new(LabelFilter::new(l)?),
                Box::new(LabelFilter::new(r)?),
            ),
            LabelFilterExpr::Paren(inner) => LabelFilter::new(inner)?,
            LabelFilterExpr::String { name, op, value } => {
                let m = StringMatcher::new(*op, value, false)?;
                match name.as_str() {
                    ERROR_LABEL => LabelFilter::ErrorString { details: false, m },
                    ERROR_DETAILS_LABEL => LabelFilter::ErrorString { details: true, m },
                    _ => LabelFilter::String {
                        name: name.clone(),
                        m,
                    },
                }
            }
            LabelFilterExpr::Number { name, op, value } => LabelFilter::Number {
                name: name.clone(),
                op: *op,
                value: *value,
            },
            LabelFilterExpr::Duration { name, op, value_ns } => LabelFilter::Duration {
                name: name.clone(),
                op: *op,
                value_ns: *value_ns,
            },
            LabelFilterExpr::Bytes { name, op, value } => LabelFilter::Bytes {
                name: name.clone(),
                op: *op,
                value: *value,
            },
            LabelFilterExpr::Ip {
                name,
                negated,
                value,
            } => LabelFilter::Ip {
                name: name.clone(),
                negated: *negated,
                ip: IpMatcher::new(value).map_err(Error::Validate)?,
            },
        })
    }

    /// Record a conversion failure unless an earlier, more useful error is present.
    fn conversion_failed(lb: &mut LabelsBuilder, details: &str) -> bool {
        if !lb.has_error() {
            lb.set_err(ERR_LABEL_FILTER);
            lb.set_error_details(details);
        }
        true
    }

    /// `false` = drop the line.
    pub(crate) fn process(&self, lb: &mut LabelsBuilder) -> bool {
        match self {
            LabelFilter::And(l, r) => {
                let lok = l.process(lb);
                let rok = r.process(lb);
                lok && rok
            }
            LabelFilter::Or(l, r) => l.process(lb) || r.process(lb),
            // A missing label reads as "" (the error labels are `ErrorString`).
            LabelFilter::String { name, m } => m.matches(lb.get(name).unwrap_or("")),
            LabelFilter::ErrorString { details: false, m } => m.matches(lb.error()),
            LabelFilter::ErrorString { details: true, m } => m.matches(lb.error_details()),
            LabelFilter::Number { name, op, value } => {
                let Some(v) = lb.get(name) else { return false };
                match parse_go_float(v) {
                    Ok(x) => cmp(*op, x, *value),
                    Err(e) => Self::conversion_failed(lb, &e),
                }
            }
            LabelFilter::Duration { name, op, value_ns } => {
                let Some(v) = lb.get(name) else { return false };
                match parse_go_duration(v) {
                    Ok(x) => cmp(*op, x, *value_ns),
                    Err(e) => Self::conversion_failed(lb, &e),
                }
            }
            LabelFilter::Bytes { name, op, value } => {
                let Some(v) = lb.get(name) else { return false };
                match parse_humanize_bytes(v) {
                    Ok(x) => cmp(*op, x, *value),
                    Err(e) => Self::conversion_failed(lb, &e),
                }
            }
            LabelFilter::Ip { name, negated, ip } => {
                // Loki lets entries that already carry an error through ip filters.
                if lb.has_error() {
                    return true;
                }
                let Some(v) = lb.get(name) else { return false };
                ip.matches_line(v.as_bytes()) != *negated
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::logfmt::LogfmtParser;

    /// Label filter regexes match the whole value, as LogQL's documentation says, where
    /// Loki's classic engine turns one-sided patterns into substring tests
    /// (grafana/loki#14433, #23892): an investigator's `username=~"a.*"` must not
    /// return `carol`.
    #[test]
    fn regexes_are_anchored_to_the_whole_value() {
        let cases = [
            ("a.*", "alice", true),
            ("a.*", "carol", false),
            (".*a", "maya", true),
            (".*a", "carol", false),
            ("warn|warning", "warning", true),
            ("warn|warning", "warn", true),
            ("warn|warning", "warnings", false),
            ("warn|warning", "prewarn", false),
            ("ca", "carol", false),
            ("", "", true),
            ("", "x", false),
        ];
        for (re, v, want) in cases {
            let Ok(m) = StringMatcher::new(MatchOp::Re, re, false) else {
                panic!("{re} does not compile")
            };
            assert_eq!(m.matches(v), want, "{re} =~ {v}");
            let Ok(n) = StringMatcher::new(MatchOp::Nre, re, false) else {
                panic!("{re} does not compile")
            };
            assert_eq!(n.matches(v), !want, "{re} !~ {v}");
        }
    }

    fn s(name: &str, op: MatchOp, v: &str) -> LabelFilterExpr {
        LabelFilterExpr::String {
            name: name.into(),
            op,
            value: v.into(),
        }
    }

    fn and(l: LabelFilterExpr, r: LabelFilterExpr, via_comma: bool) -> LabelFilterExpr {
        LabelFilterExpr::And {
            lhs: Box::new(l),
            rhs: Box::new(r),
            via_comma,
        }
    }

    fn or(l: LabelFilterExpr, r: LabelFilterExpr) -> LabelFilterExpr {
        LabelFilterExpr::Or(Box::new(l), Box::new(r))
    }

    fn logfmt_then(expr: &LabelFilterExpr, line: &str) -> Result<Option<LabelsBuilder>, Error> {
        let p = LogfmtParser::new(false, false, &[])?;
        let f = LabelFilter::new(expr)?;
        let mut lb = LabelsBuilder::new();
        lb.reset(&[("app".to_string(), "a".to_string())], &[]);
        let _ = p.process(line, &mut lb, &crate::pipeline::LabelHints::all());
        Ok(f.process(&mut lb).then_some(lb))
    }

    #[test]
    fn precedence_case_3() -> Result<(), Error> {
        // §13 case 3: `a="1", b="2" or c="3"` = a and (b or c): drops `c=3`.
        let comma = and(
            s("a", MatchOp::Eq, "1"),
            or(s("b", MatchOp::Eq, "2"), s("c", MatchOp::Eq, "3")),
            true,
        );
        assert!(logfmt_then(&comma, "c=3")?.is_none());
        // `a="1" and b="2" or c="3"` = (a and b) or c: keeps it.
        let and_or = or(
            and(s("a", MatchOp::Eq, "1"), s("b", MatchOp::Eq, "2"), false),
            s("c", MatchOp::Eq, "3"),
        );
        assert!(logfmt_then(&and_or, "c=3")?.is_some());
        Ok(())
    }

    #[test]
    fn duration_filter_case_5() -> Result<(), Error> {
        // §13 case 5: `latency > 1s`
        let f = LabelFilterExpr::Duration {
            name: "latency".into(),
            op: CmpOp::Gt,
            value_ns: 1_000_000_000,
        };
        let kept = logfmt_then(&f, "latency=abc")?;
        let lb = kept.ok_or(Error::Validate("latency=abc dropped".into()))?;
        assert_eq!(lb.error(), "LabelFilterErr");
        assert_eq!(lb.error_details(), "time: invalid duration \"abc\"");
        assert!(logfmt_then(&f, "x=1")?.is_none());
        let lb = logfmt_then(&f, "latency=1500ms")?.ok_or(Error::Validate("dropped".into()))?;
        assert!(!lb.has_error());
        assert!(logfmt_then(&f, "latency=500ms")?.is_none());
        Ok(())
    }

    #[test]
    fn numeric_bytes_string_and_ip() -> Result<(), Error> {
        let num = LabelFilterExpr::Number {
            name: "status".into(),
            op: CmpOp::Ge,
            value: 500.0,
        };
        assert!(logfmt_then(&num, "status=503")?.is_some());
        assert!(logfmt_then(&num, "status=200")?.is_none());
        let bytes = LabelFilterExpr::Bytes {
            name: "size".into(),
            op: CmpOp::Gt,
            value: 1_500_000,
        };
        assert!(logfmt_then(&bytes, "size=2MB")?.is_some());
        assert!(logfmt_then(&bytes, "size=1MB")?.is_none());
        // missing label compares as "" for strings
        assert!(logfmt_then(&s("nope", MatchOp::Eq, ""), "x=1")?.is_some());
        assert!(logfmt_then(&s("x", MatchOp::Re, "1|2"), "x=1")?.is_some());
        assert!(logfmt_then(&s("x", MatchOp::Re, "1"), "x=12")?.is_none());
        assert!(logfmt_then(&s("x", MatchOp::Re, "a|b"), "x=a")?.is_some());
        assert!(logfmt_then(&s("x", MatchOp::Re, "a|b"), "x=ab")?.is_none());
        assert!(logfmt_then(&s("__error__", MatchOp::Eq, ""), "x=1")?.is_some());
        let ip = LabelFilterExpr::Ip {
            name: "ip".into(),
            negated: false,
            value: "10.0.0.0/8".into(),
        };
        assert!(logfmt_then(&ip, "ip=10.1.2.3")?.is_some());
        assert!(logfmt_then(&ip, "ip=11.1.2.3")?.is_none());
        Ok(())
    }
}
