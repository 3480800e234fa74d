//! The LogQL parser: nom 8 combinators over the token stream of [`crate::lexer`].
//!
//! The grammar is Loki's (`pkg/logql/syntax/syntax.y`), written as a predictive recursive
//! descent: each construct commits (`cut`) once its first tokens decide it, so a syntax error
//! is reported at the same token where Loki's LALR parser stops, worded the same way
//! (`syntax error: unexpected <token>`). Errors Loki raises while building AST nodes
//! (a log query as a binary operand, an unparsable number) are deferred until the whole
//! input parsed, because Loki reports them only after a successful parse too.
//!
//! Submodules: `selector` (stream selectors and matchers), `pipeline` (line filters,
//! parsers, label filters, formatting stages, unwrap), `metric` (range and vector
//! aggregations, binary operators, functions).

mod metric;
mod pipeline;
mod selector;

pub(crate) use metric::binop_symbol;

use std::cell::{Cell, RefCell};
use std::iter::Enumerate;
use std::slice::Iter;

use nom::error::{ErrorKind, ParseError};
use nom::{IResult, Needed};

use crate::ast::Expr;
use crate::lexer::{lex, Tok, Token};
use crate::Error;

/// Loki rejects queries of this many bytes or more.
pub const MAX_QUERY_BYTES: usize = 131_072;

/// Deepest nesting of parentheses, function calls, right-associative chains and label
/// filter groups. Loki's table-driven parser has no such limit; a recursive descent needs
/// one so a hostile query cannot overflow the stack of the request thread.
pub const MAX_NESTING: u32 = 256;

/// Parse a query into an AST (no semantic validation).
pub fn parse_expr(query: &str) -> Result<Expr, Error> {
    if query.len() >= MAX_QUERY_BYTES {
        return Err(Error::parse_msg(format!(
            "input size too long ({} > {})",
            query.len(),
            MAX_QUERY_BYTES
        )));
    }
    let toks = lex(query);
    let ctx = Ctx::default();
    let input = Input {
        toks: &toks,
        pos: 0,
        end: toks.len(),
        ctx: &ctx,
    };
    let result = metric::query(input);
    match result {
        Ok((rest, expr)) => {
            if !matches!(rest.tok(), Tok::Eof) {
                return Err(syntax_error(&toks, rest.pos));
            }
            if let Some(e) = ctx.deferred.into_inner() {
                return Err(e);
            }
            Ok(expr)
        }
        Err(nom::Err::Error(e)) | Err(nom::Err::Failure(e)) => Err(match e.custom {
            Some(err) => err,
            None => syntax_error(&toks, e.pos),
        }),
        Err(nom::Err::Incomplete(_)) => Err(syntax_error(&toks, toks.len() - 1)),
    }
}

fn syntax_error(toks: &[Token<'_>], pos: usize) -> Error {
    let Some(t) = toks.get(pos.min(toks.len().saturating_sub(1))) else {
        return Error::parse_msg("syntax error: unexpected $end");
    };
    match &t.tok {
        Tok::Error(msg) => Error::Parse {
            line: t.line,
            col: t.col,
            msg: msg.clone(),
        },
        _ => Error::Parse {
            line: t.line,
            col: t.col,
            msg: format!("syntax error: unexpected {}", t.describe()),
        },
    }
}

/// Parser state shared by all combinators of one parse.
#[derive(Default)]
pub(crate) struct Ctx {
    /// The first error Loki would raise only after a successful parse.
    deferred: RefCell<Option<Error>>,
    /// Current recursion depth (see [`MAX_NESTING`]).
    depth: Cell<u32>,
}

/// Runs `f` one nesting level deeper, failing beyond [`MAX_NESTING`].
pub(crate) fn nested<'t, O>(
    i: Input<'t>,
    f: impl FnOnce(Input<'t>) -> PResult<'t, O>,
) -> PResult<'t, O> {
    let depth = i.ctx.depth.get();
    if depth >= MAX_NESTING {
        let t = i.token();
        return Err(nom::Err::Failure(PErr {
            pos: i.pos,
            custom: Some(Error::Parse {
                line: t.line,
                col: t.col,
                msg: format!("syntax error: expression nested more than {MAX_NESTING} levels deep"),
            }),
        }));
    }
    i.ctx.depth.set(depth + 1);
    let out = f(i);
    i.ctx.depth.set(depth);
    out
}

/// The parser input: a window on the token vector. It always contains the final
/// `Eof`/`Error` token, which no primitive consumes.
#[derive(Clone, Copy)]
pub(crate) struct Input<'t> {
    toks: &'t [Token<'t>],
    pos: usize,
    end: usize,
    ctx: &'t Ctx,
}

impl<'t> Input<'t> {
    fn token(&self) -> &'t Token<'t> {
        &self.toks[self.pos.min(self.toks.len() - 1)]
    }

    fn tok(&self) -> &'t Tok {
        &self.token().tok
    }

    /// The kind of the token `n` places ahead.
    fn peek(&self, n: usize) -> &'t Tok {
        &self.toks[(self.pos + n).min(self.toks.len() - 1)].tok
    }

    fn advance(self, n: usize) -> Input<'t> {
        Input {
            pos: (self.pos + n).min(self.toks.len() - 1),
            ..self
        }
    }

    fn defer(&self, e: Error) {
        let mut d = self.ctx.deferred.borrow_mut();
        if d.is_none() {
            *d = Some(e);
        }
    }
}

impl<'t> nom::Input for Input<'t> {
    type Item = &'t Token<'t>;
    type Iter = Iter<'t, Token<'t>>;
    type IterIndices = Enumerate<Iter<'t, Token<'t>>>;

    fn input_len(&self) -> usize {
        self.end - self.pos
    }

    fn take(&self, index: usize) -> Self {
        Input {
            end: self.pos + index,
            ..*self
        }
    }

    fn take_from(&self, index: usize) -> Self {
        Input {
            pos: self.pos + index,
            ..*self
        }
    }

    fn take_split(&self, index: usize) -> (Self, Self) {
        (self.take_from(index), self.take(index))
    }

    fn position<P>(&self, predicate: P) -> Option<usize>
    where
        P: Fn(Self::Item) -> bool,
    {
        self.toks[self.pos..self.end].iter().position(predicate)
    }

    fn iter_elements(&self) -> Self::Iter {
        self.toks[self.pos..self.end].iter()
    }

    fn iter_indices(&self) -> Self::IterIndices {
        self.toks[self.pos..self.end].iter().enumerate()
    }

    fn slice_index(&self, count: usize) -> Result<usize, Needed> {
        if count <= self.input_len() {
            Ok(count)
        } else {
            Err(Needed::new(count - self.input_len()))
        }
    }
}

/// Parse error: the token index where parsing failed, or a complete error.
#[derive(Debug)]
pub(crate) struct PErr {
    pos: usize,
    custom: Option<Error>,
}

impl<'t> ParseError<Input<'t>> for PErr {
    fn from_error_kind(input: Input<'t>, _kind: ErrorKind) -> Self {
        PErr {
            pos: input.pos,
            custom: None,
        }
    }

    fn append(_input: Input<'t>, _kind: ErrorKind, other: Self) -> Self {
        other
    }

    /// Keep the error that got furthest, like an LR parser that fails at the first token
    /// no alternative accepts.
    fn or(self, other: Self) -> Self {
        match (&self.custom, &other.custom) {
            (Some(_), None) => self,
            (None, Some(_)) => other,
            _ if self.pos >= other.pos => self,
            _ => other,
        }
    }
}

pub(crate) type PResult<'t, O> = IResult<Input<'t>, O, PErr>;

/// A recoverable syntax error at the current token.
pub(crate) fn fail<'t, O>(i: Input<'t>) -> PResult<'t, O> {
    Err(nom::Err::Error(PErr {
        pos: i.pos,
        custom: None,
    }))
}

/// A committed syntax error at the current token.
pub(crate) fn fail_hard<'t, O>(i: Input<'t>) -> PResult<'t, O> {
    Err(nom::Err::Failure(PErr {
        pos: i.pos,
        custom: None,
    }))
}

/// Match one token kind exactly (for kinds without payload, and keywords).
pub(crate) fn t<'t>(want: Tok) -> impl Fn(Input<'t>) -> PResult<'t, &'t Token<'t>> {
    move |i: Input<'t>| {
        if *i.tok() == want {
            Ok((i.advance(1), i.token()))
        } else {
            fail(i)
        }
    }
}

/// A string literal.
pub(crate) fn string(i: Input<'_>) -> PResult<'_, String> {
    match i.tok() {
        Tok::Str(s) => Ok((i.advance(1), s.clone())),
        _ => fail(i),
    }
}

/// An identifier.
pub(crate) fn ident<'t>(i: Input<'t>) -> PResult<'t, &'t str> {
    match i.tok() {
        Tok::Ident => Ok((i.advance(1), i.token().text)),
        _ => fail(i),
    }
}

/// Go `strconv.ParseFloat` on a NUMBER token's text.
pub(crate) fn parse_float(text: &str) -> Result<f64, String> {
    let lower = text.to_ascii_lowercase();
    let bad = text.contains('_')
        || lower.starts_with("0x")
        || lower.starts_with("0o")
        || lower.starts_with("0b");
    let q = crate::lexer::go_quote(text);
    if bad {
        return Err(format!("strconv.ParseFloat: parsing {q}: invalid syntax"));
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!(
            "strconv.ParseFloat: parsing {q}: value out of range"
        )),
        Err(_) => Err(format!("strconv.ParseFloat: parsing {q}: invalid syntax")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_expr;

    #[test]
    fn time_condition_as_label_filter_says_to_use_the_time_range() {
        let q = r#"{job="tovplay-backend"} | json | __timestamp__ > now() - 1h"#;
        let msg = match parse_expr(q) {
            Ok(e) => panic!("parsed a clock filter: {e:?}"),
            Err(e) => e.to_string(),
        };
        assert!(
            msg.starts_with("parse error at line 1, col 50: syntax error: unexpected IDENTIFIER"),
            "{msg}"
        );
        assert!(msg.contains("query's time range instead"), "{msg}");
        // An ordering comparison on `__timestamp__` gets the advice too, at the name.
        let msg = match parse_expr(r#"{job="x"} | __timestamp__ >= 1700000000"#) {
            Ok(e) => panic!("parsed a clock filter: {e:?}"),
            Err(e) => e.to_string(),
        };
        assert!(msg.starts_with("parse error at line 1, col 13:"), "{msg}");
        assert!(msg.contains("time range"), "{msg}");
        // Ordinary label filters (including a label called `now`) are untouched.
        assert!(parse_expr(r#"{job="x"} | json | duration_ms > 1000 | now="y""#).is_ok());
    }
}
