//! Expressions: the query root, binary operators with Loki's precedence (`^` right
//! associative, a sign belongs to its number so `-2^2` is 4), literal folding, range and
//! vector aggregations, `label_replace`, `vector`, and log ranges in every placement Loki
//! accepts (`{…}[5m] | json`, `{…} | json [5m]`, `({…} | json)[5m]`, `(({…})[5m])`).

use nom::combinator::cut;
use nom::Parser;

use super::pipeline::{pipeline, signed_number, unwrap};
use super::selector::selector;
use super::{fail, fail_hard, ident, nested, parse_float, string, t, Input, PResult};
use crate::ast::{
    BinOp, BinaryExpr, Expr, GroupModifier, Grouping, LabelReplace, LogExpr, LogRange,
    RangeAggregation, RangeOp, SampleExpr, VectorAggregation, VectorMatching, VectorOp,
};
use crate::lexer::{Func, Kw, Tok};
use crate::Error;

/// An operand: Loki's grammar lets a log query stand where a metric is expected and
/// rejects it afterwards.
enum Node {
    Log(LogExpr),
    Sample(SampleExpr),
}

/// The whole query (the caller checks for end of input).
pub(super) fn query(i: Input<'_>) -> PResult<'_, Expr> {
    let (i, n) = expr(i, 0)?;
    Ok((
        i,
        match n {
            Node::Log(l) => Expr::Log(l),
            Node::Sample(s) => Expr::Sample(s),
        },
    ))
}

fn binop_of(tok: &Tok) -> Option<(BinOp, u8)> {
    Some(match tok {
        Tok::Kw(Kw::Or) => (BinOp::Or, 1),
        Tok::Kw(Kw::And) => (BinOp::And, 2),
        Tok::Kw(Kw::Unless) => (BinOp::Unless, 2),
        Tok::CmpEq => (BinOp::Eq, 3),
        Tok::Neq => (BinOp::Neq, 3),
        Tok::Gt => (BinOp::Gt, 3),
        Tok::Ge => (BinOp::Ge, 3),
        Tok::Lt => (BinOp::Lt, 3),
        Tok::Le => (BinOp::Le, 3),
        Tok::Add => (BinOp::Add, 4),
        Tok::Sub => (BinOp::Sub, 4),
        Tok::Mul => (BinOp::Mul, 5),
        Tok::Div => (BinOp::Div, 5),
        Tok::Mod => (BinOp::Mod, 5),
        Tok::Pow => (BinOp::Pow, 6),
        _ => return None,
    })
}

/// Loki's printed operator symbol (used in its error messages).
pub(crate) fn binop_symbol(op: BinOp) -> &'static str {
    match op {
        BinOp::Or => "or",
        BinOp::And => "and",
        BinOp::Unless => "unless",
        BinOp::Eq => "==",
        BinOp::Neq => "!=",
        BinOp::Gt => ">",
        BinOp::Ge => ">=",
        BinOp::Lt => "<",
        BinOp::Le => "<=",
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
        BinOp::Mod => "%",
        BinOp::Pow => "^",
    }
}

/// Precedence climbing over binary operators.
fn expr(i: Input<'_>, min_prec: u8) -> PResult<'_, Node> {
    nested(i, |i| expr_inner(i, min_prec))
}

fn expr_inner(i: Input<'_>, min_prec: u8) -> PResult<'_, Node> {
    let (mut i, mut lhs) = primary(i)?;
    while let Some((op, prec)) = binop_of(i.tok()) {
        if prec < min_prec {
            break;
        }
        let (rest, (return_bool, matching)) = cut(bin_modifiers).parse(i.advance(1))?;
        let next_min = if op == BinOp::Pow { prec } else { prec + 1 };
        let (rest, rhs) = cut(|i| expr(i, next_min)).parse(rest)?;
        lhs = Node::Sample(binary(rest, op, return_bool, matching, lhs, rhs));
        i = rest;
    }
    Ok((i, lhs))
}

fn log_type_name(l: &LogExpr) -> &'static str {
    if l.pipeline.is_empty() {
        "*syntax.MatchersExpr"
    } else {
        "*syntax.PipelineExpr"
    }
}

/// Builds a binary node: rejects log operands (deferred, as Loki) and folds literals.
fn binary(
    i: Input<'_>,
    op: BinOp,
    return_bool: bool,
    matching: Option<VectorMatching>,
    lhs: Node,
    rhs: Node,
) -> SampleExpr {
    let sym = binop_symbol(op);
    let lhs = match lhs {
        Node::Sample(s) => s,
        Node::Log(l) => {
            i.defer(Error::parse_msg(format!(
                "unexpected type for left leg of binary operation ({sym}): {}",
                log_type_name(&l)
            )));
            SampleExpr::VectorLiteral(0.0)
        }
    };
    let rhs = match rhs {
        Node::Sample(s) => s,
        Node::Log(l) => {
            i.defer(Error::parse_msg(format!(
                "unexpected type for right leg of binary operation ({sym}): {}",
                log_type_name(&l)
            )));
            SampleExpr::VectorLiteral(0.0)
        }
    };
    let logical = matches!(op, BinOp::Or | BinOp::And | BinOp::Unless);
    if let (SampleExpr::Literal(a), SampleExpr::Literal(b), false) = (&lhs, &rhs, logical) {
        return SampleExpr::Literal(fold(op, *a, *b));
    }
    SampleExpr::Binary(BinaryExpr {
        op,
        lhs: Box::new(lhs),
        rhs: Box::new(rhs),
        return_bool,
        matching,
    })
}

/// Literal ⊕ literal, as Loki's `reduceBinOp`: comparisons give 1/0, `x/0` and `x%0` NaN.
pub(crate) fn fold(op: BinOp, a: f64, b: f64) -> f64 {
    let truth = |c: bool| if c { 1.0 } else { 0.0 };
    match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => {
            if b == 0.0 {
                f64::NAN
            } else {
                a / b
            }
        }
        BinOp::Mod => {
            if b == 0.0 {
                f64::NAN
            } else {
                a % b
            }
        }
        BinOp::Pow => a.powf(b),
        BinOp::Eq => truth(a == b),
        BinOp::Neq => truth(a != b),
        BinOp::Gt => truth(a > b),
        BinOp::Ge => truth(a >= b),
        BinOp::Lt => truth(a < b),
        BinOp::Le => truth(a <= b),
        // Set operators never fold: literals there are rejected by validation.
        BinOp::Or | BinOp::And | BinOp::Unless => f64::NAN,
    }
}

/// `[bool] [on|ignoring (…) [group_left|group_right [(…)]]]`.
fn bin_modifiers(i: Input<'_>) -> PResult<'_, (bool, Option<VectorMatching>)> {
    let (i, return_bool) = match i.tok() {
        Tok::Kw(Kw::Bool) => (i.advance(1), true),
        _ => (i, false),
    };
    let on = match i.tok() {
        Tok::Kw(Kw::On) => true,
        Tok::Kw(Kw::Ignoring) => false,
        _ => return Ok((i, (return_bool, None))),
    };
    let (i, labels) = cut(label_list).parse(i.advance(1))?;
    let left = match i.tok() {
        Tok::Kw(Kw::GroupLeft) => Some(true),
        Tok::Kw(Kw::GroupRight) => Some(false),
        _ => None,
    };
    let (i, group) = match left {
        None => (i, None),
        Some(left) => {
            let i = i.advance(1);
            let (i, include) = if let Tok::LParen = i.tok() {
                cut(label_list).parse(i)?
            } else {
                (i, Vec::new())
            };
            (i, Some(GroupModifier { left, include }))
        }
    };
    Ok((i, (return_bool, Some(VectorMatching { on, labels, group }))))
}

/// `( )` or `( a, b, … )`.
fn label_list(i: Input<'_>) -> PResult<'_, Vec<String>> {
    let (mut i, _) = t(Tok::LParen)(i)?;
    let mut out = Vec::new();
    if let Tok::RParen = i.tok() {
        return Ok((i.advance(1), out));
    }
    loop {
        let (rest, name) = cut(ident).parse(i)?;
        out.push(name.to_string());
        i = rest;
        match i.tok() {
            Tok::Comma => i = i.advance(1),
            Tok::RParen => return Ok((i.advance(1), out)),
            _ => return fail_hard(i),
        }
    }
}

/// `by (…)` / `without (…)`.
fn grouping(i: Input<'_>) -> PResult<'_, Grouping> {
    let without = match i.tok() {
        Tok::Kw(Kw::By) => false,
        Tok::Kw(Kw::Without) => true,
        _ => return fail(i),
    };
    let (i, labels) = cut(label_list).parse(i.advance(1))?;
    Ok((i, Grouping { without, labels }))
}

fn primary(i: Input<'_>) -> PResult<'_, Node> {
    match i.tok() {
        Tok::Number | Tok::Add | Tok::Sub => {
            let (i, v) = signed_number(i)?;
            Ok((i, Node::Sample(SampleExpr::Literal(v))))
        }
        Tok::LBrace => {
            let (i, sel) = selector(i)?;
            let (i, stages) = pipeline(i, false)?;
            Ok((
                i,
                Node::Log(LogExpr {
                    selector: sel,
                    pipeline: stages,
                }),
            ))
        }
        Tok::LParen => {
            let (i, inner) = cut(|i| expr(i, 0)).parse(i.advance(1))?;
            let (i, _) = cut(t(Tok::RParen)).parse(i)?;
            Ok((i, inner))
        }
        Tok::Func(Func::Range(op)) => {
            let (i, r) = range_aggregation(i.advance(1), *op)?;
            Ok((i, Node::Sample(SampleExpr::Range(r))))
        }
        Tok::Func(Func::Vector(op)) => {
            let (i, v) = vector_aggregation(i.advance(1), *op)?;
            Ok((i, Node::Sample(SampleExpr::Vector(v))))
        }
        Tok::Func(Func::LabelReplace) => {
            let (i, l) = label_replace(i.advance(1))?;
            Ok((i, Node::Sample(SampleExpr::LabelReplace(l))))
        }
        Tok::Func(Func::VectorLit) => {
            let (i, _) = cut(t(Tok::LParen)).parse(i.advance(1))?;
            if !matches!(i.tok(), Tok::Number) {
                return fail_hard(i);
            }
            let v = match parse_float(i.token().text) {
                Ok(v) => v,
                Err(e) => {
                    i.defer(Error::parse_msg(format!(
                        "unable to parse vectorExpr as a float: {e}"
                    )));
                    0.0
                }
            };
            let (i, _) = cut(t(Tok::RParen)).parse(i.advance(1))?;
            Ok((i, Node::Sample(SampleExpr::VectorLiteral(v))))
        }
        _ => fail(i),
    }
}

/// A metric operand inside a function: a log query there is a syntax error at the token
/// after it (where Loki's parser notices).
fn sample_arg(i: Input<'_>) -> PResult<'_, SampleExpr> {
    let (i, n) = expr(i, 0)?;
    match n {
        Node::Sample(s) => Ok((i, s)),
        Node::Log(_) => fail_hard(i),
    }
}

/// `NUMBER ,` at the start of an argument list: the parameter's text.
fn number_param<'t>(i: Input<'t>) -> (Input<'t>, Option<&'t str>) {
    if matches!(i.tok(), Tok::Number) && *i.peek(1) == Tok::Comma {
        (i.advance(2), Some(i.token().text))
    } else {
        (i, None)
    }
}

fn range_aggregation(i: Input<'_>, op: RangeOp) -> PResult<'_, RangeAggregation> {
    let (i, _) = cut(t(Tok::LParen)).parse(i)?;
    let (i, param_text) = number_param(i);
    let param = param_text.map(|text| match parse_float(text) {
        Ok(v) => v,
        Err(e) => {
            i.defer(Error::parse_msg(format!(
                "invalid parameter for operation {}: {e}",
                op.name()
            )));
            0.0
        }
    });
    let (i, range) = cut(log_range).parse(i)?;
    let (i, _) = cut(t(Tok::RParen)).parse(i)?;
    let (i, grouping) = match i.tok() {
        Tok::Kw(Kw::By | Kw::Without) => {
            let (i, g) = grouping(i)?;
            (i, Some(g))
        }
        _ => (i, None),
    };
    Ok((
        i,
        RangeAggregation {
            op,
            param,
            range,
            grouping,
        },
    ))
}

fn vector_aggregation(i: Input<'_>, op: VectorOp) -> PResult<'_, VectorAggregation> {
    let (i, prefix) = match i.tok() {
        Tok::Kw(Kw::By | Kw::Without) => {
            let (i, g) = grouping(i)?;
            (i, Some(g))
        }
        _ => (i, None),
    };
    let (i, _) = cut(t(Tok::LParen)).parse(i)?;
    let (i, param_text) = number_param(i);
    let param = param_text.map(|text| {
        if matches!(op, VectorOp::Topk | VectorOp::Bottomk)
            && !text.bytes().all(|b| b.is_ascii_digit())
        {
            i.defer(Error::parse_msg(format!(
                "invalid parameter {}({text},",
                op.name()
            )));
        }
        parse_float(text).unwrap_or(0.0)
    });
    let (i, inner) = cut(sample_arg).parse(i)?;
    let (i, _) = cut(t(Tok::RParen)).parse(i)?;
    let (i, grouping) = match (&prefix, i.tok()) {
        (None, Tok::Kw(Kw::By | Kw::Without)) => {
            let (i, g) = grouping(i)?;
            (i, Some(g))
        }
        _ => (i, prefix),
    };
    Ok((
        i,
        VectorAggregation {
            op,
            param,
            expr: Box::new(inner),
            grouping,
        },
    ))
}

fn label_replace(i: Input<'_>) -> PResult<'_, LabelReplace> {
    let (i, _) = cut(t(Tok::LParen)).parse(i)?;
    let (i, inner) = cut(sample_arg).parse(i)?;
    let mut strs: [String; 4] = Default::default();
    let mut i = i;
    for s in strs.iter_mut() {
        let (rest, _) = cut(t(Tok::Comma)).parse(i)?;
        let (rest, v) = cut(string).parse(rest)?;
        *s = v;
        i = rest;
    }
    let (i, _) = cut(t(Tok::RParen)).parse(i)?;
    let [dst, replacement, src, regex] = strs;
    Ok((
        i,
        LabelReplace {
            expr: Box::new(inner),
            dst,
            replacement,
            src,
            regex,
        },
    ))
}

fn range_token(i: Input<'_>) -> PResult<'_, i64> {
    match i.tok() {
        Tok::Range(d) => Ok((i.advance(1), *d)),
        _ => fail_hard(i),
    }
}

fn offset(i: Input<'_>) -> PResult<'_, i64> {
    match i.tok() {
        Tok::Kw(Kw::Offset) => {
            let i = i.advance(1);
            match i.tok() {
                Tok::Duration(d) => Ok((i.advance(1), *d)),
                _ => fail_hard(i),
            }
        }
        _ => Ok((i, 0)),
    }
}

fn opt_unwrap(i: Input<'_>) -> PResult<'_, Option<crate::ast::Unwrap>> {
    if let (Tok::Pipe, Tok::Kw(Kw::Unwrap)) = (i.tok(), i.peek(1)) {
        let (i, u) = cut(unwrap).parse(i)?;
        Ok((i, Some(u)))
    } else {
        Ok((i, None))
    }
}

/// A log range in any of Loki's placements.
fn log_range(i: Input<'_>) -> PResult<'_, LogRange> {
    nested(i, log_range_inner)
}

fn log_range_inner(i: Input<'_>) -> PResult<'_, LogRange> {
    if let Tok::LParen = i.tok() {
        let i = i.advance(1);
        if let Tok::LParen = i.tok() {
            let (i, inner) = log_range(i)?;
            let (i, _) = cut(t(Tok::RParen)).parse(i)?;
            return Ok((i, inner));
        }
        let (i, sel) = cut(selector).parse(i)?;
        if let Tok::Range(_) = i.tok() {
            let (i, r) = after_range(i, sel, true)?;
            let (i, _) = cut(t(Tok::RParen)).parse(i)?;
            return Ok((i, r));
        }
        let (i, stages) = pipeline(i, true)?;
        let (i, unwrap) = opt_unwrap(i)?;
        if let Tok::Range(_) = i.tok() {
            let (i, range_ns) = range_token(i)?;
            let (i, offset_ns) = offset(i)?;
            let (i, _) = cut(t(Tok::RParen)).parse(i)?;
            return Ok((i, make_range(sel, stages, unwrap, range_ns, offset_ns)));
        }
        let (i, _) = cut(t(Tok::RParen)).parse(i)?;
        let bare = stages.is_empty() && unwrap.is_none();
        let (i, range_ns) = range_token(i)?;
        let (i, offset_ns) = offset(i)?;
        let (i, unwrap) = if bare { opt_unwrap(i)? } else { (i, unwrap) };
        return Ok((i, make_range(sel, stages, unwrap, range_ns, offset_ns)));
    }
    let (i, sel) = selector(i)?;
    if let Tok::Range(_) = i.tok() {
        return after_range(i, sel, true);
    }
    let (i, stages) = pipeline(i, true)?;
    let (i, unwrap) = opt_unwrap(i)?;
    let (i, range_ns) = range_token(i)?;
    let (i, offset_ns) = offset(i)?;
    Ok((i, make_range(sel, stages, unwrap, range_ns, offset_ns)))
}

/// `selector RANGE [offset] [pipeline] [unwrap]`.
fn after_range(
    i: Input<'_>,
    sel: Vec<crate::ast::Matcher>,
    allow_pipeline: bool,
) -> PResult<'_, LogRange> {
    let (i, range_ns) = range_token(i)?;
    let (i, offset_ns) = offset(i)?;
    let (i, stages) = if allow_pipeline {
        pipeline(i, true)?
    } else {
        (i, Vec::new())
    };
    let (i, unwrap) = opt_unwrap(i)?;
    Ok((i, make_range(sel, stages, unwrap, range_ns, offset_ns)))
}

fn make_range(
    selector: Vec<crate::ast::Matcher>,
    pipeline: Vec<crate::ast::Stage>,
    unwrap: Option<crate::ast::Unwrap>,
    range_ns: i64,
    offset_ns: i64,
) -> LogRange {
    LogRange {
        log: LogExpr { selector, pipeline },
        range_ns,
        offset_ns,
        unwrap,
    }
}
