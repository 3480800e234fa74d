//! The canonical single-line text of an AST, close to what Loki's `/format_query` prints:
//! `{job="a"} |= "x" | json | level="error"`, `sum by (host) (count_over_time({job="a"}[5m]))`.
//!
//! The output always parses back to the same AST: strings are re-quoted with Go escapes,
//! durations and byte sizes are written exactly (Prometheus units when whole
//! milliseconds, Go units otherwise), binary operands get parentheses only where
//! precedence needs them, and label filters keep their `and`/`,` form. Where Loki's own
//! printer is lossy (it rounds byte sizes, writes `vector(1.000000)`) we stay exact.

use std::fmt::{self, Display, Formatter, Write};

use crate::ast::{
    BinOp, BinaryExpr, CmpOp, Expr, Grouping, LabelExtraction, LabelFilterExpr, LabelFormatSrc,
    LabelSelect, LineFilter, LineFilterOp, LineFilterValue, LogExpr, LogRange, MatchOp, Matcher,
    SampleExpr, Stage, Unwrap, UnwrapConv, VectorMatching,
};
use crate::lexer::go_quote;

/// The canonical text of a query (what `/format_query` returns).
pub fn format(expr: &Expr) -> String {
    expr.to_string()
}

/// Same as [`format`]; Loki splits long queries over several lines, we keep one line.
pub fn format_pretty(expr: &Expr) -> String {
    format(expr)
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Log(l) => l.fmt(f),
            Expr::Sample(s) => s.fmt(f),
        }
    }
}

impl Display for MatchOp {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatchOp::Eq => "=",
            MatchOp::Neq => "!=",
            MatchOp::Re => "=~",
            MatchOp::Nre => "!~",
        })
    }
}

impl Display for CmpOp {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CmpOp::Eq => "==",
            CmpOp::Neq => "!=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
        })
    }
}

impl Display for Matcher {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.name, self.op, go_quote(&self.value))
    }
}

impl Display for LogExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_char('{')?;
        join(f, &self.selector, ", ")?;
        f.write_char('}')?;
        for s in &self.pipeline {
            write!(f, " {s}")?;
        }
        Ok(())
    }
}

fn join<T: Display>(f: &mut Formatter<'_>, items: &[T], sep: &str) -> fmt::Result {
    for (n, it) in items.iter().enumerate() {
        if n > 0 {
            f.write_str(sep)?;
        }
        it.fmt(f)?;
    }
    Ok(())
}

impl Display for LineFilterOp {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LineFilterOp::Contains => "|=",
            LineFilterOp::NotContains => "!=",
            LineFilterOp::Regex => "|~",
            LineFilterOp::NotRegex => "!~",
            LineFilterOp::Pattern => "|>",
            LineFilterOp::NotPattern => "!>",
        })
    }
}

impl Display for LineFilterValue {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            LineFilterValue::Str(s) => f.write_str(&go_quote(s)),
            LineFilterValue::Ip(s) => write!(f, "ip({})", go_quote(s)),
        }
    }
}

impl Display for LineFilter {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.op)?;
        join(f, &self.values, " or ")
    }
}

impl Display for LabelExtraction {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.expr {
            Some(e) => write!(f, "{}={}", self.name, go_quote(e)),
            None => f.write_str(&self.name),
        }
    }
}

impl Display for LabelSelect {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.matcher {
            Some((op, v)) => write!(f, "{}{}{}", self.name, op, go_quote(v)),
            None => f.write_str(&self.name),
        }
    }
}

impl Display for Stage {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Stage::LineFilter(lf) => lf.fmt(f),
            Stage::Json(params) => {
                f.write_str("| json")?;
                if !params.is_empty() {
                    f.write_char(' ')?;
                    join(f, params, ",")?;
                }
                Ok(())
            }
            Stage::Logfmt {
                strict,
                keep_empty,
                params,
            } => {
                f.write_str("| logfmt")?;
                if *strict {
                    f.write_str(" --strict")?;
                }
                if *keep_empty {
                    f.write_str(" --keep-empty")?;
                }
                if !params.is_empty() {
                    f.write_char(' ')?;
                    join(f, params, ",")?;
                }
                Ok(())
            }
            Stage::Regexp(re) => write!(f, "| regexp {}", go_quote(re)),
            Stage::Pattern(p) => write!(f, "| pattern {}", go_quote(p)),
            Stage::Unpack => f.write_str("| unpack"),
            Stage::LabelFilter(lf) => write!(f, "| {lf}"),
            Stage::LineFormat(t) => write!(f, "| line_format {}", go_quote(t)),
            Stage::LabelFormat(ops) => {
                f.write_str("| label_format ")?;
                for (n, op) in ops.iter().enumerate() {
                    if n > 0 {
                        f.write_char(',')?;
                    }
                    match &op.src {
                        LabelFormatSrc::Rename(src) => write!(f, "{}={}", op.dst, src)?,
                        LabelFormatSrc::Template(t) => write!(f, "{}={}", op.dst, go_quote(t))?,
                    }
                }
                Ok(())
            }
            Stage::Decolorize => f.write_str("| decolorize"),
            Stage::Drop(l) => {
                f.write_str("| drop ")?;
                join(f, l, ",")
            }
            Stage::Keep(l) => {
                f.write_str("| keep ")?;
                join(f, l, ",")
            }
        }
    }
}

/// Where a label filter sits in the grammar `E := T (or T)*`, `T := U (and U)*`,
/// `U := P [, E]`, `P := leaf | ( E )`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum LfLevel {
    Primary,
    Comma,
    And,
    Or,
}

fn lf_level(e: &LabelFilterExpr) -> LfLevel {
    match e {
        LabelFilterExpr::Or(..) => LfLevel::Or,
        LabelFilterExpr::And {
            via_comma: false, ..
        } => LfLevel::And,
        LabelFilterExpr::And {
            via_comma: true, ..
        } => LfLevel::Comma,
        _ => LfLevel::Primary,
    }
}

/// True when the printed form ends in a `, …` chain that would swallow whatever follows.
fn lf_open_right(e: &LabelFilterExpr) -> bool {
    match e {
        LabelFilterExpr::And {
            via_comma: true, ..
        } => true,
        LabelFilterExpr::And { rhs, .. } => lf_open_right(rhs),
        LabelFilterExpr::Or(_, rhs) => lf_open_right(rhs),
        _ => false,
    }
}

/// Writes `e` in a slot accepting at most `max` level; parenthesised otherwise.
fn write_lf(f: &mut Formatter<'_>, e: &LabelFilterExpr, max: LfLevel, closed: bool) -> fmt::Result {
    if lf_level(e) > max || (closed && lf_open_right(e)) {
        write!(f, "({e})")
    } else {
        e.fmt(f)
    }
}

impl Display for LabelFilterExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            LabelFilterExpr::Or(l, r) => {
                write_lf(f, l, LfLevel::Or, true)?;
                f.write_str(" or ")?;
                write_lf(f, r, LfLevel::And, false)
            }
            LabelFilterExpr::And {
                lhs,
                rhs,
                via_comma: false,
            } => {
                write_lf(f, lhs, LfLevel::And, true)?;
                f.write_str(" and ")?;
                write_lf(f, rhs, LfLevel::Comma, false)
            }
            LabelFilterExpr::And {
                lhs,
                rhs,
                via_comma: true,
            } => {
                write_lf(f, lhs, LfLevel::Primary, true)?;
                f.write_str(", ")?;
                write_lf(f, rhs, LfLevel::Or, false)
            }
            LabelFilterExpr::Paren(inner) => write!(f, "({inner})"),
            LabelFilterExpr::String { name, op, value } => {
                write!(f, "{name}{op}{}", go_quote(value))
            }
            LabelFilterExpr::Number { name, op, value } => {
                write!(f, "{name}{op}{}", number(*value))
            }
            LabelFilterExpr::Duration { name, op, value_ns } => {
                write!(f, "{name}{op}{}", duration(*value_ns))
            }
            LabelFilterExpr::Bytes { name, op, value } => write!(f, "{name}{op}{}", bytes(*value)),
            LabelFilterExpr::Ip {
                name,
                negated,
                value,
            } => write!(
                f,
                "{name}{}ip({})",
                if *negated { "!=" } else { "=" },
                go_quote(value)
            ),
        }
    }
}

/// A float as LogQL reads it back (no exponent; Loki prints `NaN`/`+Inf` for those).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v == 0.0 {
        // Never `-0`: Loki's lexer reads `-0` as a duration (Go's `time.ParseDuration` accepts it).
        "0".into()
    } else {
        format!("{v}")
    }
}

/// Byte size with the largest unit dividing it exactly.
fn bytes(v: u64) -> String {
    const UNITS: [(&str, u64); 10] = [
        ("PiB", 1 << 50),
        ("PB", 1_000_000_000_000_000),
        ("TiB", 1 << 40),
        ("TB", 1_000_000_000_000),
        ("GiB", 1 << 30),
        ("GB", 1_000_000_000),
        ("MiB", 1 << 20),
        ("MB", 1_000_000),
        ("KiB", 1 << 10),
        ("KB", 1000),
    ];
    if v == 0 {
        // Not `0B`: Go's scanner reads `0B` as an empty binary literal.
        return "0KB".into();
    }
    for (unit, mult) in UNITS {
        if v.checked_rem(mult) == Some(0) {
            return format!("{}{unit}", v / mult);
        }
    }
    format!("{v}B")
}

/// A duration literal: Prometheus units when it is whole non-negative milliseconds
/// (`1h30m`, `1d`), Go's `time.Duration` text otherwise (`1.5µs`, `-2m0s`).
pub(crate) fn duration(ns: i64) -> String {
    if ns >= 0 && ns % 1_000_000 == 0 {
        prom_duration(ns)
    } else {
        go_duration(ns)
    }
}

fn prom_duration(ns: i64) -> String {
    let mut ms = ns / 1_000_000;
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    const D: i64 = 24 * 3600 * 1000;
    for (unit, mult, exact) in [
        ("y", 365 * D, true),
        ("w", 7 * D, true),
        ("d", D, false),
        ("h", 3_600_000, false),
        ("m", 60_000, false),
        ("s", 1000, false),
        ("ms", 1, false),
    ] {
        if exact && ms % mult != 0 {
            continue;
        }
        let v = ms / mult;
        if v > 0 {
            let _ = write!(out, "{v}{unit}");
            ms -= v * mult;
        }
    }
    out
}

fn frac(v: u64, div: u64) -> String {
    let int = v / div;
    let rem = v % div;
    if rem == 0 {
        return int.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{rem:0width$}");
    format!("{int}.{}", digits.trim_end_matches('0'))
}

/// Go's `time.Duration.String` (`24h0m0s`, `1m30s`, `1.5s`, `250ms`), as Loki prints
/// durations in its error messages.
pub fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    let body = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", frac(u, 1_000))
    } else if u < 1_000_000_000 {
        format!("{}ms", frac(u, 1_000_000))
    } else {
        let secs = format!("{}s", frac(u % 60_000_000_000, 1_000_000_000));
        let mins = u / 60_000_000_000;
        if mins == 0 {
            secs
        } else if mins < 60 {
            format!("{mins}m{secs}")
        } else {
            format!("{}h{}m{secs}", mins / 60, mins % 60)
        }
    };
    format!("{sign}{body}")
}

impl Display for Grouping {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({})",
            if self.without { "without" } else { "by" },
            self.labels.join(", ")
        )
    }
}

impl Display for Unwrap {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self.conv {
            UnwrapConv::None => write!(f, "| unwrap {}", self.label)?,
            UnwrapConv::Duration => write!(f, "| unwrap duration({})", self.label)?,
            UnwrapConv::DurationSeconds => write!(f, "| unwrap duration_seconds({})", self.label)?,
            UnwrapConv::Bytes => write!(f, "| unwrap bytes({})", self.label)?,
        }
        for pf in &self.post_filters {
            write!(f, " | {pf}")?;
        }
        Ok(())
    }
}

impl Display for LogRange {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        self.log.fmt(f)?;
        let bare = self.log.pipeline.is_empty() && self.unwrap.is_none();
        if let Some(u) = &self.unwrap {
            write!(f, " {u}")?;
        }
        if !bare {
            f.write_char(' ')?;
        }
        write!(f, "[{}]", prom_duration(self.range_ns))?;
        if self.offset_ns != 0 {
            write!(f, " offset {}", duration(self.offset_ns))?;
        }
        Ok(())
    }
}

fn bin_prec(op: BinOp) -> u8 {
    match op {
        BinOp::Or => 1,
        BinOp::And | BinOp::Unless => 2,
        BinOp::Eq | BinOp::Neq | BinOp::Gt | BinOp::Ge | BinOp::Lt | BinOp::Le => 3,
        BinOp::Add | BinOp::Sub => 4,
        BinOp::Mul | BinOp::Div | BinOp::Mod => 5,
        BinOp::Pow => 6,
    }
}

impl Display for VectorMatching {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({})",
            if self.on { "on" } else { "ignoring" },
            self.labels.join(", ")
        )?;
        if let Some(g) = &self.group {
            f.write_str(if g.left {
                " group_left"
            } else {
                " group_right"
            })?;
            if !g.include.is_empty() {
                write!(f, " ({})", g.include.join(", "))?;
            }
        }
        Ok(())
    }
}

fn write_operand(f: &mut Formatter<'_>, e: &SampleExpr, parent: BinOp, right: bool) -> fmt::Result {
    let needs = match e {
        SampleExpr::Binary(b) => {
            let (pc, pp) = (bin_prec(b.op), bin_prec(parent));
            // `^` is right-associative, everything else left-associative.
            let assoc_right = parent == BinOp::Pow;
            pc < pp || (pc == pp && (right != assoc_right))
        }
        // `-2 ^ 2` reads as `(-2) ^ 2`, which is what a negative literal means anyway.
        _ => false,
    };
    if needs {
        write!(f, "({e})")
    } else {
        e.fmt(f)
    }
}

fn write_operand_to(out: &mut String, e: &SampleExpr, parent: BinOp) -> fmt::Result {
    struct Operand<'a>(&'a SampleExpr, BinOp);
    impl Display for Operand<'_> {
        fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
            write_operand(f, self.0, self.1, true)
        }
    }
    write!(out, "{}", Operand(e, parent))
}

impl Display for BinaryExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write_operand(f, &self.lhs, self.op, false)?;
        write!(f, " {}", crate::parser::binop_symbol(self.op))?;
        if self.return_bool {
            f.write_str(" bool")?;
        }
        let mut rhs = String::new();
        write_operand_to(&mut rhs, &self.rhs, self.op)?;
        if let Some(m) = &self.matching {
            write!(f, " {m}")?;
            // `group_left (` would read the right operand's parenthesis as the label list.
            if m.group.as_ref().is_some_and(|g| g.include.is_empty()) && rhs.starts_with('(') {
                f.write_str(" ()")?;
            }
        }
        write!(f, " {rhs}")
    }
}

impl Display for SampleExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            SampleExpr::Range(r) => {
                write!(f, "{}(", r.op.name())?;
                if let Some(p) = r.param {
                    write!(f, "{}, ", number(p))?;
                }
                write!(f, "{})", r.range)?;
                if let Some(g) = &r.grouping {
                    write!(f, " {g}")?;
                }
                Ok(())
            }
            SampleExpr::Vector(v) => {
                f.write_str(v.op.name())?;
                if let Some(g) = &v.grouping {
                    write!(f, " {g} ")?;
                }
                f.write_char('(')?;
                if let Some(p) = v.param {
                    write!(f, "{}, ", number(p))?;
                }
                write!(f, "{})", v.expr)
            }
            SampleExpr::Binary(b) => b.fmt(f),
            SampleExpr::Literal(v) => f.write_str(&number(*v)),
            SampleExpr::VectorLiteral(v) => write!(f, "vector({})", number(*v)),
            SampleExpr::LabelReplace(l) => write!(
                f,
                "label_replace({}, {}, {}, {}, {})",
                l.expr,
                go_quote(&l.dst),
                go_quote(&l.replacement),
                go_quote(&l.src),
                go_quote(&l.regex)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::parse_expr;

    fn canon(q: &str) -> String {
        match parse_expr(q) {
            Ok(e) => format(&e),
            Err(e) => format!("ERR {e}"),
        }
    }

    #[test]
    fn formats_like_loki() {
        assert_eq!(
            canon(r#"{job="a"}|="x"|json|level="error""#),
            r#"{job="a"} |= "x" | json | level="error""#
        );
        assert_eq!(
            canon("SUM BY(host)(count_over_time({job=\"a\"}[5m]))"),
            r#"sum by (host) (count_over_time({job="a"}[5m]))"#
        );
        assert_eq!(
            canon(
                r#"quantile_over_time(0.99, {a="b"} | json | unwrap duration(d) | __error__="" [10m] offset 1h) by (x, y)"#
            ),
            r#"quantile_over_time(0.99, {a="b"} | json | unwrap duration(d) | __error__="" [10m] offset 1h) by (x, y)"#
        );
        assert_eq!(
            canon(r#"{a="b"} | x > 1.5MB, y < 250ms or z == 3"#),
            r#"{a="b"} | x>1500KB, y<250ms or z==3"#
        );
        assert_eq!(
            canon("(1 + 2) * x"),
            "ERR parse error at line 1, col 11: syntax error: unexpected IDENTIFIER"
        );
        assert_eq!(canon("2 ^ 3 ^ 2"), "512");
    }

    #[test]
    fn binary_parentheses_only_where_needed() {
        let q = r#"(vector(1) + vector(2)) * vector(3) - vector(4) / (vector(5) - vector(6)) ^ vector(7) ^ vector(8)"#;
        assert_eq!(canon(q), q);
        let q = r#"(vector(1) ^ vector(2)) ^ vector(3)"#;
        assert_eq!(canon(q), q);
        let q = r#"vector(1) > bool on (a) group_left (b) vector(2)"#;
        assert_eq!(canon(q), q);
    }

    #[test]
    fn durations_and_bytes_are_exact() {
        assert_eq!(duration(90 * 60 * 1_000_000_000), "1h30m");
        assert_eq!(duration(1_500), "1.5µs");
        assert_eq!(duration(-90_000_000_000), "-1m30s");
        assert_eq!(duration(1_500_000_001), "1.500000001s");
        assert_eq!(duration(3_600_000_000_001), "1h0m0.000000001s");
        assert_eq!(bytes(1536), "1536B");
        assert_eq!(bytes(1024), "1KiB");
        assert_eq!(bytes(1_500_000), "1500KB");
        assert_eq!(bytes(7), "7B");
        assert_eq!(bytes(0), "0KB");
    }
}
