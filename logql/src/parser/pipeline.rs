//! Pipeline stages: line filters (with `or` chains and `ip()`), parsers, label filters with
//! Loki's precedence, formatting stages, `drop`/`keep`, and `| unwrap` with its post filters.

use nom::combinator::cut;
use nom::Parser;

use super::selector::{match_op, matcher};
use super::{fail, fail_hard, ident, nested, parse_float, string, t, Input, PResult};
use crate::ast::{
    CmpOp, LabelExtraction, LabelFilterExpr, LabelFormatOp, LabelFormatSrc, LabelSelect,
    LineFilter, LineFilterOp, LineFilterValue, MatchOp, Stage, Unwrap, UnwrapConv,
};
use crate::lexer::{Func, Kw, Tok};
use crate::Error;

fn line_filter_op(tok: &Tok) -> Option<LineFilterOp> {
    Some(match tok {
        Tok::PipeExact => LineFilterOp::Contains,
        Tok::Neq => LineFilterOp::NotContains,
        Tok::PipeMatch => LineFilterOp::Regex,
        Tok::Nre => LineFilterOp::NotRegex,
        Tok::PipePattern => LineFilterOp::Pattern,
        Tok::Npa => LineFilterOp::NotPattern,
        _ => return None,
    })
}

/// Stages after a selector. With `allow_unwrap` (inside a range aggregation) the list ends
/// before `| unwrap`; otherwise `unwrap` there is a syntax error, as in Loki.
pub(super) fn pipeline(mut i: Input<'_>, allow_unwrap: bool) -> PResult<'_, Vec<Stage>> {
    let mut stages = Vec::new();
    loop {
        let tok = i.tok();
        if let Some(op) = line_filter_op(tok) {
            let (rest, f) = cut(|i| line_filter(i, op)).parse(i.advance(1))?;
            stages.push(Stage::LineFilter(f));
            i = rest;
            continue;
        }
        if let Tok::Pipe = tok {
            if allow_unwrap && *i.peek(1) == Tok::Kw(Kw::Unwrap) {
                break;
            }
            let (rest, s) = cut(stage).parse(i.advance(1))?;
            stages.push(s);
            i = rest;
            continue;
        }
        break;
    }
    Ok((i, stages))
}

fn line_filter_value(i: Input<'_>) -> PResult<'_, LineFilterValue> {
    match i.tok() {
        Tok::Str(s) => Ok((i.advance(1), LineFilterValue::Str(s.clone()))),
        Tok::Func(Func::Ip) => {
            let (i, _) = cut(t(Tok::LParen)).parse(i.advance(1))?;
            let (i, s) = cut(string).parse(i)?;
            let (i, _) = cut(t(Tok::RParen)).parse(i)?;
            Ok((i, LineFilterValue::Ip(s)))
        }
        _ => fail_hard(i),
    }
}

fn line_filter(i: Input<'_>, op: LineFilterOp) -> PResult<'_, LineFilter> {
    let (mut i, first) = line_filter_value(i)?;
    let mut values = vec![first];
    while let Tok::Kw(Kw::Or) = i.tok() {
        let (rest, v) = cut(line_filter_value).parse(i.advance(1))?;
        values.push(v);
        i = rest;
    }
    Ok((i, LineFilter { op, values }))
}

/// One stage after `|`.
fn stage(i: Input<'_>) -> PResult<'_, Stage> {
    match i.tok() {
        Tok::Kw(Kw::Json) => {
            let (i, params) = extraction_list(i.advance(1))?;
            Ok((i, Stage::Json(params)))
        }
        Tok::Kw(Kw::Logfmt) => {
            let mut i = i.advance(1);
            let (mut strict, mut keep_empty) = (false, false);
            while let Tok::Flag = i.tok() {
                match i.token().text {
                    "--strict" => strict = true,
                    _ => keep_empty = true,
                }
                i = i.advance(1);
            }
            let (i, params) = extraction_list(i)?;
            Ok((
                i,
                Stage::Logfmt {
                    strict,
                    keep_empty,
                    params,
                },
            ))
        }
        Tok::Kw(Kw::Regexp) => {
            let (i, s) = cut(string).parse(i.advance(1))?;
            Ok((i, Stage::Regexp(s)))
        }
        Tok::Kw(Kw::Pattern) => {
            let (i, s) = cut(string).parse(i.advance(1))?;
            Ok((i, Stage::Pattern(s)))
        }
        Tok::Kw(Kw::Unpack) => Ok((i.advance(1), Stage::Unpack)),
        Tok::Kw(Kw::Decolorize) => Ok((i.advance(1), Stage::Decolorize)),
        Tok::Kw(Kw::LineFormat) => {
            let (i, s) = cut(string).parse(i.advance(1))?;
            Ok((i, Stage::LineFormat(s)))
        }
        Tok::Kw(Kw::LabelFormat) => {
            let (i, ops) = label_format_ops(i.advance(1))?;
            Ok((i, Stage::LabelFormat(ops)))
        }
        Tok::Kw(Kw::Drop) => {
            let (i, l) = named_matchers(i.advance(1))?;
            Ok((i, Stage::Drop(l)))
        }
        Tok::Kw(Kw::Keep) => {
            let (i, l) = named_matchers(i.advance(1))?;
            Ok((i, Stage::Keep(l)))
        }
        Tok::Ident | Tok::LParen => {
            let (i, f) = label_filter(i)?;
            Ok((i, Stage::LabelFilter(f)))
        }
        _ => fail_hard(i),
    }
}

/// `a="x.y", b` after `json`/`logfmt`; empty when the next token is not a name.
fn extraction_list(mut i: Input<'_>) -> PResult<'_, Vec<LabelExtraction>> {
    let mut out = Vec::new();
    if !matches!(i.tok(), Tok::Ident) {
        return Ok((i, out));
    }
    loop {
        let (rest, name) = cut(ident).parse(i)?;
        i = rest;
        let mut expr = None;
        if let Tok::Eq = i.tok() {
            let (rest, s) = cut(string).parse(i.advance(1))?;
            expr = Some(s);
            i = rest;
        }
        out.push(LabelExtraction {
            name: name.to_string(),
            expr,
        });
        match i.tok() {
            Tok::Comma => i = i.advance(1),
            _ => return Ok((i, out)),
        }
    }
}

fn label_format_ops(mut i: Input<'_>) -> PResult<'_, Vec<LabelFormatOp>> {
    let mut out = Vec::new();
    loop {
        let (rest, dst) = cut(ident).parse(i)?;
        let (rest, _) = cut(t(Tok::Eq)).parse(rest)?;
        let (rest, src) = match rest.tok() {
            Tok::Ident => (
                rest.advance(1),
                LabelFormatSrc::Rename(rest.token().text.into()),
            ),
            Tok::Str(s) => (rest.advance(1), LabelFormatSrc::Template(s.clone())),
            _ => return fail_hard(rest),
        };
        out.push(LabelFormatOp {
            dst: dst.to_string(),
            src,
        });
        i = rest;
        match i.tok() {
            Tok::Comma => i = i.advance(1),
            _ => return Ok((i, out)),
        }
    }
}

fn named_matchers(mut i: Input<'_>) -> PResult<'_, Vec<LabelSelect>> {
    let mut out = Vec::new();
    loop {
        if !matches!(i.tok(), Tok::Ident) {
            return fail_hard(i);
        }
        if match_op(i.peek(1)).is_some() {
            let (rest, m) = cut(matcher).parse(i)?;
            out.push(LabelSelect {
                name: m.name,
                matcher: Some((m.op, m.value)),
            });
            i = rest;
        } else {
            out.push(LabelSelect {
                name: i.token().text.to_string(),
                matcher: None,
            });
            i = i.advance(1);
        }
        match i.tok() {
            Tok::Comma => i = i.advance(1),
            _ => return Ok((i, out)),
        }
    }
}

/// A full label filter expression.
///
/// Loki's yacc grammar gives `or` lower precedence than `and`, and `,`/whitespace no
/// precedence at all, so the parser always shifts on them: `a, X` makes everything to the
/// right of the comma the right operand. Hence:
/// `E := T (or T)*`, `T := U (and U)*`, `U := P [(","|juxtaposition) E]`.
pub(super) fn label_filter(i: Input<'_>) -> PResult<'_, LabelFilterExpr> {
    nested(i, label_filter_inner)
}

fn label_filter_inner(i: Input<'_>) -> PResult<'_, LabelFilterExpr> {
    let (mut i, mut lhs) = lf_and(i)?;
    while let Tok::Kw(Kw::Or) = i.tok() {
        let (rest, rhs) = cut(lf_and).parse(i.advance(1))?;
        lhs = LabelFilterExpr::Or(Box::new(lhs), Box::new(rhs));
        i = rest;
    }
    Ok((i, lhs))
}

fn lf_and(i: Input<'_>) -> PResult<'_, LabelFilterExpr> {
    let (mut i, mut lhs) = lf_comma(i)?;
    while let Tok::Kw(Kw::And) = i.tok() {
        let (rest, rhs) = cut(lf_comma).parse(i.advance(1))?;
        lhs = LabelFilterExpr::And {
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
            via_comma: false,
        };
        i = rest;
    }
    Ok((i, lhs))
}

fn lf_comma(i: Input<'_>) -> PResult<'_, LabelFilterExpr> {
    let (i, lhs) = lf_primary(i)?;
    let next = match i.tok() {
        Tok::Comma => i.advance(1),
        Tok::Ident | Tok::LParen => i,
        _ => return Ok((i, lhs)),
    };
    let (i, rhs) = cut(label_filter).parse(next)?;
    Ok((
        i,
        LabelFilterExpr::And {
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
            via_comma: true,
        },
    ))
}

fn lf_primary(i: Input<'_>) -> PResult<'_, LabelFilterExpr> {
    match i.tok() {
        Tok::LParen => {
            let (i, inner) = cut(label_filter).parse(i.advance(1))?;
            let (i, _) = cut(t(Tok::RParen)).parse(i)?;
            Ok((i, LabelFilterExpr::Paren(Box::new(inner))))
        }
        Tok::Ident => {
            let name = i.token().text.to_string();
            let op_tok = i.peek(1);
            let at_name = i;
            let i = i.advance(1);
            let cmp = match op_tok {
                Tok::Eq => CmpOp::Eq,
                Tok::Neq => CmpOp::Neq,
                Tok::CmpEq => CmpOp::Eq,
                Tok::Gt => CmpOp::Gt,
                Tok::Ge => CmpOp::Ge,
                Tok::Lt => CmpOp::Lt,
                Tok::Le => CmpOp::Le,
                Tok::Re | Tok::Nre => {
                    let op = if *op_tok == Tok::Re {
                        MatchOp::Re
                    } else {
                        MatchOp::Nre
                    };
                    let (i, value) = cut(string).parse(i.advance(1))?;
                    return Ok((i, LabelFilterExpr::String { name, op, value }));
                }
                _ => return fail_hard(i),
            };
            let string_ok = matches!(op_tok, Tok::Eq | Tok::Neq);
            let v = i.advance(1);
            if is_now_call(v) {
                return time_filter_advice(v);
            }
            if name == TIMESTAMP && !string_ok {
                return time_filter_advice(at_name);
            }
            match v.tok() {
                Tok::Str(s) if string_ok => {
                    let op = if cmp == CmpOp::Eq {
                        MatchOp::Eq
                    } else {
                        MatchOp::Neq
                    };
                    Ok((
                        v.advance(1),
                        LabelFilterExpr::String {
                            name,
                            op,
                            value: s.clone(),
                        },
                    ))
                }
                Tok::Func(Func::Ip) if string_ok => {
                    let (v, _) = cut(t(Tok::LParen)).parse(v.advance(1))?;
                    let (v, value) = cut(string).parse(v)?;
                    let (v, _) = cut(t(Tok::RParen)).parse(v)?;
                    Ok((
                        v,
                        LabelFilterExpr::Ip {
                            name,
                            negated: cmp == CmpOp::Neq,
                            value,
                        },
                    ))
                }
                Tok::Duration(d) => Ok((
                    v.advance(1),
                    LabelFilterExpr::Duration {
                        name,
                        op: cmp,
                        value_ns: *d,
                    },
                )),
                Tok::Bytes(b) => Ok((
                    v.advance(1),
                    LabelFilterExpr::Bytes {
                        name,
                        op: cmp,
                        value: *b,
                    },
                )),
                Tok::Number | Tok::Add | Tok::Sub => {
                    let (v, value) = cut(signed_number).parse(v)?;
                    Ok((
                        v,
                        LabelFilterExpr::Number {
                            name,
                            op: cmp,
                            value,
                        },
                    ))
                }
                _ => fail_hard(v),
            }
        }
        _ => fail(i),
    }
}

/// The name the source playbook compared with `now()`: not a label, so never a filter.
const TIMESTAMP: &str = "__timestamp__";

/// `now(` at `i`: LogQL has no clock function in label filters.
fn is_now_call(i: Input<'_>) -> bool {
    matches!(i.tok(), Tok::Ident) && i.token().text == "now" && matches!(i.peek(1), Tok::LParen)
}

/// The error for a time condition written as a label filter (`| __timestamp__ > now() - 1h`):
/// Loki's syntax error at the offending token, followed by what to do instead, since a bare
/// "unexpected IDENTIFIER" does not tell an investigator that the time range is the way.
fn time_filter_advice<O>(at: Input<'_>) -> PResult<'_, O> {
    let t = at.token();
    Err(nom::Err::Failure(super::PErr {
        pos: at.pos,
        custom: Some(Error::Parse {
            line: t.line,
            col: t.col,
            msg: format!(
                "syntax error: unexpected {}: LogQL has no `__timestamp__ > now() - …` filter; \
                 select the time with the query's time range instead (`start`/`end` or `since` \
                 on the HTTP API, the time picker in Grafana)",
                t.describe()
            ),
        }),
    }))
}

/// Loki's `literalExpr`: `NUMBER`, `+NUMBER` or `-NUMBER`. A malformed number is reported
/// after the parse, like Loki's `mustNewLiteralExpr`.
pub(super) fn signed_number(i: Input<'_>) -> PResult<'_, f64> {
    let (i, neg) = match i.tok() {
        Tok::Add => (i.advance(1), false),
        Tok::Sub => (i.advance(1), true),
        _ => (i, false),
    };
    if !matches!(i.tok(), Tok::Number) {
        return fail_hard(i);
    }
    let text = i.token().text;
    let v = match parse_float(text) {
        Ok(v) => v,
        Err(e) => {
            i.defer(Error::parse_msg(format!(
                "unable to parse literal as a float: {e}"
            )));
            0.0
        }
    };
    Ok((i.advance(1), if neg { -v } else { v }))
}

/// `| unwrap [conv(]label[)] [| label filter]*`.
pub(super) fn unwrap(i: Input<'_>) -> PResult<'_, Unwrap> {
    let (i, _) = t(Tok::Pipe)(i)?;
    let (i, _) = t(Tok::Kw(Kw::Unwrap))(i)?;
    let conv = match i.tok() {
        Tok::Func(Func::BytesConv) => Some(UnwrapConv::Bytes),
        Tok::Func(Func::DurationConv) => Some(UnwrapConv::Duration),
        Tok::Func(Func::DurationSecondsConv) => Some(UnwrapConv::DurationSeconds),
        _ => None,
    };
    let (mut i, conv, label) = match conv {
        Some(c) => {
            let (i, _) = cut(t(Tok::LParen)).parse(i.advance(1))?;
            let (i, l) = cut(ident).parse(i)?;
            let (i, _) = cut(t(Tok::RParen)).parse(i)?;
            (i, c, l)
        }
        None => {
            let (i, l) = cut(ident).parse(i)?;
            (i, UnwrapConv::None, l)
        }
    };
    let mut post_filters = Vec::new();
    while let Tok::Pipe = i.tok() {
        let (rest, f) = cut(label_filter).parse(i.advance(1))?;
        post_filters.push(f);
        i = rest;
    }
    Ok((
        i,
        Unwrap {
            conv,
            label: label.to_string(),
            post_filters,
        },
    ))
}
