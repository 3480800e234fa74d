//! Stream selectors `{name op "value", …}` and the matchers also used by `drop`/`keep`
//! and label filters.

use nom::combinator::cut;
use nom::Parser;

use super::{fail_hard, ident, string, t, Input, PResult};
use crate::ast::{MatchOp, Matcher};
use crate::lexer::Tok;

/// A matcher operator token, if the current token is one.
pub(super) fn match_op(tok: &Tok) -> Option<MatchOp> {
    match tok {
        Tok::Eq => Some(MatchOp::Eq),
        Tok::Neq => Some(MatchOp::Neq),
        Tok::Re => Some(MatchOp::Re),
        Tok::Nre => Some(MatchOp::Nre),
        _ => None,
    }
}

/// `name op "value"`.
pub(super) fn matcher(i: Input<'_>) -> PResult<'_, Matcher> {
    let (i, name) = ident(i)?;
    let Some(op) = match_op(i.tok()) else {
        return fail_hard(i);
    };
    let (i, value) = cut(string).parse(i.advance(1))?;
    Ok((
        i,
        Matcher {
            name: name.to_string(),
            op,
            value,
        },
    ))
}

/// `{}` or `{m, m, …}`.
pub(super) fn selector(i: Input<'_>) -> PResult<'_, Vec<Matcher>> {
    let (mut i, _) = t(Tok::LBrace)(i)?;
    let mut out = Vec::new();
    if let Tok::RBrace = i.tok() {
        return Ok((i.advance(1), out));
    }
    loop {
        if !matches!(i.tok(), Tok::Ident) {
            return fail_hard(i);
        }
        let (rest, m) = cut(matcher).parse(i)?;
        out.push(m);
        i = rest;
        match i.tok() {
            Tok::Comma => i = i.advance(1),
            Tok::RBrace => return Ok((i.advance(1), out)),
            _ => return fail_hard(i),
        }
    }
}
