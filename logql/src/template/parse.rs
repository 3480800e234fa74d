//! Parser from tokens to the template tree, following Go's `text/template/parse`: actions,
//! `if`/`else if`/`with`/`else with`/`range` (with `break`/`continue`), `define`/`template`/
//! `block`, pipelines with variable declarations, parenthesised pipelines and field chains.
//!
//! Like Go it rejects unknown functions and undefined variables at parse time. Variables are
//! resolved here to fixed slots, so execution never looks a name up.

use regex::Regex;

use super::funcs::Func;
use super::lexer::{self, Tok, Token};

/// A node of the template tree.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Text(String),
    /// `{{ pipeline }}`; prints its value unless the pipeline declares variables.
    Action(Pipe),
    If(Box<Branch>),
    With(Box<Branch>),
    Range(Box<Branch>),
    Break,
    Continue,
    /// `{{template "name" pipeline}}` (also what `{{block}}` leaves in place).
    Template(Box<TemplateCall>),
}

#[derive(Debug, Clone)]
pub(crate) struct TemplateCall {
    pub name: String,
    pub pipe: Option<Pipe>,
    /// Source offset of the action, for errors.
    pub pos: usize,
}

/// A template defined with `{{define}}` or `{{block}}`: its own nodes and variable slots.
#[derive(Debug, Clone)]
pub(crate) struct Def {
    pub root: Vec<Node>,
    pub slots: usize,
}

/// The shared shape of `if`, `with` and `range`.
#[derive(Debug, Clone)]
pub(crate) struct Branch {
    pub pipe: Pipe,
    pub list: Vec<Node>,
    pub else_list: Vec<Node>,
}

#[derive(Debug, Clone)]
pub(crate) struct Pipe {
    /// Slots of the declared (or assigned) variables.
    pub decl: Vec<usize>,
    pub cmds: Vec<Cmd>,
}

#[derive(Debug, Clone)]
pub(crate) struct Cmd {
    pub args: Vec<Operand>,
    /// Argument 0 of `regexReplaceAll`/`count`, compiled once when it is a literal.
    pub regex: Option<Regex>,
}

/// An operand with its source span (`<...>` in Go's execution errors).
#[derive(Debug, Clone)]
pub(crate) struct Operand {
    pub arg: Arg,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Dot,
    /// `.a.b`: fields of the dot.
    Field(Vec<String>),
    /// `$x.a.b`.
    Var {
        slot: usize,
        chain: Vec<String>,
    },
    /// `(pipeline).a.b` or `fn.a`.
    Chain {
        inner: Box<Operand>,
        chain: Vec<String>,
    },
    Func(Func),
    Pipe(Box<Pipe>),
    Str(String),
    Num(Number),
    Bool(bool),
    Nil,
}

/// A number literal as Go's parser sees it: the forms it can be used as.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Number {
    pub text: String,
    pub int: Option<i64>,
    pub float: Option<f64>,
    /// Written like a float (`1.0`, `1e3`): as an `interface{}` argument it is a float64.
    pub float_syntax: bool,
}

/// The parsed template: its nodes and how many variable slots execution needs.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    pub root: Vec<Node>,
    pub slots: usize,
    /// Named templates from `{{define}}`/`{{block}}`.
    pub defs: std::collections::HashMap<String, Def>,
}

/// Parses `src`; errors are formatted like Go's (`template: line:1: ...`).
pub(crate) fn parse(name: &str, src: &str) -> Result<Tree, String> {
    parse_dialect(name, src, super::Dialect::Loki)
}

/// [`parse`] resolving function names in `dialect`'s function set.
pub(crate) fn parse_dialect(
    name: &str,
    src: &str,
    dialect: super::Dialect,
) -> Result<Tree, String> {
    let line_of = |pos: usize| 1 + src[..pos.min(src.len())].matches('\n').count();
    let toks =
        lexer::lex(src).map_err(|e| format!("template: {name}:{}: {}", line_of(e.pos), e.msg))?;
    let mut p = Parser {
        toks,
        i: 0,
        vars: vec![("$".to_string(), 0)],
        slots: 1,
        range_depth: 0,
        defs: std::collections::HashMap::new(),
        depth: 0,
        dialect,
    };
    let result = p.parse_top().and_then(|(root, term)| match term {
        Term::Eof => Ok(root),
        Term::End(pos) => Err(("unexpected {{end}}".to_string(), pos)),
        Term::Else(pos) => Err(("unexpected {{else}}".to_string(), pos)),
    });
    match result {
        Ok(root) => Ok(Tree {
            root,
            slots: p.slots,
            defs: p.defs,
        }),
        Err((msg, pos)) => Err(format!("template: {name}:{}: {msg}", line_of(pos))),
    }
}

type PResult<T> = Result<T, (String, usize)>;

/// What ended a list.
enum Term {
    Eof,
    End(usize),
    /// `{{else`; the cursor is right after the keyword.
    Else(usize),
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
    /// Visible variables, innermost last: name and slot.
    vars: Vec<(String, usize)>,
    slots: usize,
    range_depth: usize,
    defs: std::collections::HashMap<String, Def>,
    /// Current nesting of parentheses and control structures, against [`MAX_DEPTH`].
    depth: usize,
    /// Which function set names resolve in.
    dialect: super::Dialect,
}

/// Nesting allowed in a template (Go has a similar "max expression depth"); parsing and
/// execution recurse on the native stack.
const MAX_DEPTH: usize = 100;

const EOF: Token = Token {
    kind: Tok::Eof,
    pos: 0,
    space_before: false,
};

impl Parser {
    fn peek(&self) -> &Token {
        self.toks.get(self.i).unwrap_or(&EOF)
    }

    fn peek_at(&self, k: usize) -> &Token {
        self.toks.get(self.i + k).unwrap_or(&EOF)
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.i < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn expect_right_delim(&mut self, context: &str) -> PResult<()> {
        let t = self.next();
        match t.kind {
            Tok::RightDelim => Ok(()),
            _ => Err((
                format!("unexpected {} in {context}", describe(&t.kind)),
                t.pos,
            )),
        }
    }

    /// The top-level list, where `{{define}}` may appear.
    fn parse_top(&mut self) -> PResult<(Vec<Node>, Term)> {
        let mut nodes = Vec::new();
        loop {
            if self.peek().kind == Tok::LeftDelim && self.peek_at(1).kind == Tok::Keyword("define")
            {
                self.i += 2;
                self.definition()?;
                continue;
            }
            let (mut part, term) = self.parse_list_until_define()?;
            nodes.append(&mut part);
            if let Some(term) = term {
                return Ok((nodes, term));
            }
        }
    }

    /// Like `parse_list`, but stops (returning `None`) before a `{{define`.
    fn parse_list_until_define(&mut self) -> PResult<(Vec<Node>, Option<Term>)> {
        let mut nodes = Vec::new();
        loop {
            if self.peek().kind == Tok::LeftDelim && self.peek_at(1).kind == Tok::Keyword("define")
            {
                return Ok((nodes, None));
            }
            match self.list_item()? {
                Ok(node) => nodes.push(node),
                Err(term) => return Ok((nodes, Some(term))),
            }
        }
    }

    /// One text or action node, or the terminator that ends the list.
    fn list_item(&mut self) -> PResult<Result<Node, Term>> {
        let t = self.next();
        match t.kind {
            Tok::Eof => Ok(Err(Term::Eof)),
            Tok::Text(s) => Ok(Ok(Node::Text(s))),
            Tok::LeftDelim => {
                let kw = self.peek().clone();
                match kw.kind {
                    Tok::Keyword("end") => {
                        self.next();
                        self.expect_right_delim("end")?;
                        Ok(Err(Term::End(kw.pos)))
                    }
                    Tok::Keyword("else") => {
                        self.next();
                        Ok(Err(Term::Else(kw.pos)))
                    }
                    _ => Ok(Ok(self.action()?)),
                }
            }
            other => Err((format!("unexpected {}", describe(&other)), t.pos)),
        }
    }

    /// Parses a named template body in a fresh variable scope (`$` only), through `{{end}}`.
    fn named_body(&mut self, context: &str) -> PResult<Def> {
        self.enter()?;
        let r = self.named_body_inner(context);
        self.depth -= 1;
        r
    }

    fn named_body_inner(&mut self, context: &str) -> PResult<Def> {
        let saved_vars = std::mem::replace(&mut self.vars, vec![("$".to_string(), 0)]);
        let saved_slots = std::mem::replace(&mut self.slots, 1);
        let saved_depth = std::mem::replace(&mut self.range_depth, 0);
        let listed = self.parse_list();
        self.vars = saved_vars;
        let slots = std::mem::replace(&mut self.slots, saved_slots);
        self.range_depth = saved_depth;
        let (root, term) = listed?;
        match term {
            Term::End(_) => Ok(Def { root, slots }),
            Term::Else(pos) => Err((format!("unexpected {{{{else}}}} in {context}"), pos)),
            Term::Eof => Err(("unexpected EOF".into(), self.peek().pos)),
        }
    }

    fn add_def(&mut self, name: String, def: Def, pos: usize) -> PResult<()> {
        let empty = |d: &Def| {
            d.root
                .iter()
                .all(|n| matches!(n, Node::Text(t) if t.trim().is_empty()))
        };
        match self.defs.get(&name) {
            Some(old) if !empty(old) && !empty(&def) => Err((
                format!("template: multiple definition of template {}", quote(&name)),
                pos,
            )),
            Some(old) if empty(&def) && !empty(old) => Ok(()),
            _ => {
                self.defs.insert(name, def);
                Ok(())
            }
        }
    }

    /// `{{define "name"}}…{{end}}` after the keyword.
    fn definition(&mut self) -> PResult<()> {
        let (name, pos) = self.template_name("define clause")?;
        self.expect_right_delim("define clause")?;
        let def = self.named_body("define clause")?;
        self.add_def(name, def, pos)
    }

    fn template_name(&mut self, context: &str) -> PResult<(String, usize)> {
        let t = self.next();
        match t.kind {
            Tok::Str(s) => Ok((s, t.pos)),
            other => Err((
                format!("unexpected {} in {context}", describe(&other)),
                t.pos,
            )),
        }
    }

    fn parse_list(&mut self) -> PResult<(Vec<Node>, Term)> {
        let mut nodes = Vec::new();
        loop {
            match self.list_item()? {
                Ok(node) => nodes.push(node),
                Err(term) => return Ok((nodes, term)),
            }
        }
    }

    /// An action after its `{{`.
    fn action(&mut self) -> PResult<Node> {
        let t = self.peek().clone();
        match t.kind {
            Tok::Keyword("if") => {
                self.next();
                Ok(Node::If(Box::new(self.control("if")?)))
            }
            Tok::Keyword("with") => {
                self.next();
                Ok(Node::With(Box::new(self.control("with")?)))
            }
            Tok::Keyword("range") => {
                self.next();
                Ok(Node::Range(Box::new(self.control("range")?)))
            }
            Tok::Keyword(kw @ ("break" | "continue")) => {
                self.next();
                if self.range_depth == 0 {
                    return Err((format!("{{{{{kw}}}}} outside {{{{range}}}}"), t.pos));
                }
                self.expect_right_delim(kw)?;
                Ok(if kw == "break" {
                    Node::Break
                } else {
                    Node::Continue
                })
            }
            Tok::Keyword("template") => {
                self.next();
                let (name, _) = self.template_name("template clause")?;
                let pipe = if self.peek().kind == Tok::RightDelim {
                    self.next();
                    None
                } else {
                    Some(self.pipeline("template clause", false)?)
                };
                Ok(Node::Template(Box::new(TemplateCall {
                    name,
                    pipe,
                    pos: t.pos,
                })))
            }
            Tok::Keyword("block") => {
                self.next();
                let (name, pos) = self.template_name("block clause")?;
                let pipe = self.pipeline("block clause", false)?;
                let def = self.named_body("block clause")?;
                self.add_def(name.clone(), def, pos)?;
                Ok(Node::Template(Box::new(TemplateCall {
                    name,
                    pipe: Some(pipe),
                    pos: t.pos,
                })))
            }
            Tok::Keyword(kw) => Err((format!("unexpected <{kw}> in command"), t.pos)),
            _ => Ok(Node::Action(self.pipeline("command", false)?)),
        }
    }

    /// `if`/`with`/`range` after the keyword, through the matching `{{end}}`.
    fn control(&mut self, kind: &'static str) -> PResult<Branch> {
        self.enter()?;
        let r = self.control_inner(kind);
        self.depth -= 1;
        r
    }

    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            self.depth -= 1;
            return Err(("max expression depth exceeded".into(), self.peek().pos));
        }
        Ok(())
    }

    fn control_inner(&mut self, kind: &'static str) -> PResult<Branch> {
        let mark = self.vars.len();
        let pipe = self.pipeline(kind, false)?;
        if kind == "range" {
            self.range_depth += 1;
        }
        let listed = self.parse_list();
        if kind == "range" {
            self.range_depth -= 1;
        }
        let (list, term) = listed?;
        let else_list = match term {
            Term::End(_) => Vec::new(),
            Term::Eof => return Err(("unexpected EOF".into(), self.peek().pos)),
            Term::Else(_) => {
                let next = self.peek().clone();
                match (kind, &next.kind) {
                    // `{{else if}}` / `{{else with}}` nest a control that shares our `{{end}}`.
                    ("if", Tok::Keyword("if")) | ("with", Tok::Keyword("with")) => {
                        self.next();
                        let nested = self.control(kind)?;
                        vec![if kind == "if" {
                            Node::If(Box::new(nested))
                        } else {
                            Node::With(Box::new(nested))
                        }]
                    }
                    _ => {
                        self.expect_right_delim("else")?;
                        let (l, t) = self.parse_list()?;
                        match t {
                            Term::End(_) => l,
                            Term::Else(pos) => {
                                return Err(("expected end; found {{else}}".into(), pos))
                            }
                            Term::Eof => return Err(("unexpected EOF".into(), self.peek().pos)),
                        }
                    }
                }
            }
        };
        self.vars.truncate(mark);
        Ok(Branch {
            pipe,
            list,
            else_list,
        })
    }

    fn declare(&mut self, name: String) -> usize {
        let slot = self.slots;
        self.slots += 1;
        self.vars.push((name, slot));
        slot
    }

    fn lookup_var(&self, name: &str, pos: usize) -> PResult<usize> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, s)| *s)
            .ok_or_else(|| (format!("undefined variable {}", quote(name)), pos))
    }

    /// A pipeline up to `}}` (or `)` when `paren`), including declarations.
    fn pipeline(&mut self, context: &str, paren: bool) -> PResult<Pipe> {
        self.enter()?;
        let r = self.pipeline_inner(context, paren);
        self.depth -= 1;
        r
    }

    fn pipeline_inner(&mut self, context: &str, paren: bool) -> PResult<Pipe> {
        let start = self.peek().pos;
        // Declarations: `$x :=`, `$x =`, and `$i, $e :=` in range.
        let mut pending: Vec<(String, usize, bool)> = Vec::new();
        if let Tok::Variable(name) = &self.peek().kind {
            let name = name.clone();
            let pos = self.peek().pos;
            match &self.peek_at(1).kind {
                Tok::Declare | Tok::Assign => {
                    let assign = self.peek_at(1).kind == Tok::Assign;
                    self.i += 2;
                    pending.push((name, pos, assign));
                }
                Tok::Comma => {
                    if context != "range" {
                        return Err((format!("too many declarations in {context}"), pos));
                    }
                    let second = self.peek_at(2).clone();
                    let Tok::Variable(name2) = second.kind else {
                        return Err(("range can only initialize variables".into(), second.pos));
                    };
                    let op = self.peek_at(3).kind.clone();
                    if op != Tok::Declare && op != Tok::Assign {
                        return Err((format!("unexpected {} in range", describe(&op)), second.pos));
                    }
                    self.i += 4;
                    pending.push((name, pos, op == Tok::Assign));
                    pending.push((name2, second.pos, op == Tok::Assign));
                }
                _ => {}
            }
        }
        let mut cmds: Vec<Cmd> = Vec::new();
        loop {
            let t = self.peek().clone();
            match t.kind {
                Tok::RightDelim if !paren => {
                    self.next();
                    break;
                }
                Tok::RightParen if paren => {
                    self.next();
                    break;
                }
                Tok::Bool(_)
                | Tok::Dot
                | Tok::Field(_)
                | Tok::Ident(_)
                | Tok::Number(_)
                | Tok::Nil
                | Tok::Str(_)
                | Tok::Variable(_)
                | Tok::LeftParen => {
                    cmds.push(self.command()?);
                }
                other => {
                    return Err((
                        format!("unexpected {} in {context}", describe(&other)),
                        t.pos,
                    ))
                }
            }
        }
        if cmds.is_empty() {
            return Err((format!("missing value for {context}"), start));
        }
        for (k, c) in cmds.iter().enumerate().skip(1) {
            if let Some(Arg::Bool(_) | Arg::Dot | Arg::Nil | Arg::Num(_) | Arg::Str(_)) =
                c.args.first().map(|o| &o.arg)
            {
                return Err((
                    format!("non executable command in pipeline stage {}", k + 1),
                    start,
                ));
            }
        }
        // Declared variables become visible after their pipeline.
        let mut decl = Vec::with_capacity(pending.len());
        for (name, pos, assign) in pending {
            decl.push(if assign {
                self.lookup_var(&name, pos)?
            } else {
                self.declare(name)
            });
        }
        Ok(Pipe { decl, cmds })
    }

    /// Operands up to `|` (consumed), `}}` or `)` (left for the pipeline).
    fn command(&mut self) -> PResult<Cmd> {
        let mut args = Vec::new();
        loop {
            let op = self.operand()?;
            let Some(op) = op else {
                let t = self.peek().clone();
                return Err((
                    format!("unexpected {} in operand", describe(&t.kind)),
                    t.pos,
                ));
            };
            args.push(op);
            let t = self.peek().clone();
            match t.kind {
                Tok::RightDelim | Tok::RightParen => break,
                Tok::Pipe => {
                    self.next();
                    match self.peek().kind {
                        Tok::RightDelim | Tok::RightParen | Tok::Eof => {
                            return Err(("missing command".into(), self.peek().pos))
                        }
                        _ => break,
                    }
                }
                _ if t.space_before => continue,
                other => {
                    return Err((format!("unexpected {} in operand", describe(&other)), t.pos))
                }
            }
        }
        let regex = match (args.first(), args.get(1)) {
            (
                Some(Operand {
                    arg: Arg::Func(f), ..
                }),
                Some(Operand {
                    arg: Arg::Str(re), ..
                }),
            ) if f.takes_regex() => Regex::new(re).ok(),
            _ => None,
        };
        Ok(Cmd { args, regex })
    }

    /// A term followed by an optional field chain written without spaces.
    fn operand(&mut self) -> PResult<Option<Operand>> {
        let Some(mut op) = self.term()? else {
            return Ok(None);
        };
        let mut chain = Vec::new();
        while let Token {
            kind: Tok::Field(name),
            space_before: false,
            pos,
        } = self.peek().clone()
        {
            self.next();
            chain.push(name.clone());
            op.end = pos + 1 + name.len();
        }
        if chain.is_empty() {
            return Ok(Some(op));
        }
        let (start, end) = (op.start, op.end);
        let arg = match op.arg {
            Arg::Field(mut f) => {
                f.extend(chain);
                Arg::Field(f)
            }
            Arg::Var { slot, chain: mut c } => {
                c.extend(chain);
                Arg::Var { slot, chain: c }
            }
            Arg::Bool(_) | Arg::Str(_) | Arg::Num(_) | Arg::Nil | Arg::Dot => {
                return Err(("unexpected . after term".into(), start));
            }
            other => Arg::Chain {
                inner: Box::new(Operand {
                    arg: other,
                    start,
                    end,
                }),
                chain,
            },
        };
        Ok(Some(Operand { arg, start, end }))
    }

    fn term(&mut self) -> PResult<Option<Operand>> {
        let t = self.peek().clone();
        let start = t.pos;
        let arg = match t.kind {
            Tok::Ident(name) => match Func::lookup(&name).filter(|f| f.available(self.dialect)) {
                Some(f) => Arg::Func(f),
                None => return Err((format!("function {} not defined", quote(&name)), start)),
            },
            Tok::Dot => Arg::Dot,
            Tok::Nil => Arg::Nil,
            Tok::Variable(name) => Arg::Var {
                slot: self.lookup_var(&name, start)?,
                chain: Vec::new(),
            },
            Tok::Field(name) => Arg::Field(vec![name]),
            Tok::Bool(b) => Arg::Bool(b),
            Tok::Number(text) => Arg::Num(number(&text).map_err(|m| (m, start))?),
            Tok::Str(s) => Arg::Str(s),
            Tok::LeftParen => {
                self.next();
                let pipe = self.pipeline("parenthesized pipeline", true)?;
                let end = self
                    .toks
                    .get(self.i.saturating_sub(1))
                    .map_or(start, |t| t.pos + 1);
                return Ok(Some(Operand {
                    arg: Arg::Pipe(Box::new(pipe)),
                    start,
                    end,
                }));
            }
            _ => return Ok(None),
        };
        self.next();
        let end = self.peek().pos.max(start);
        Ok(Some(Operand { arg, start, end }))
    }
}

fn quote(s: &str) -> String {
    super::printf::quote(s, false)
}

/// Go's rendering of a token in "unexpected X" messages.
fn describe(t: &Tok) -> String {
    match t {
        Tok::Eof => "EOF".into(),
        Tok::Keyword(k) => format!("<{k}>"),
        Tok::Text(s) | Tok::Str(s) | Tok::Number(s) => quote(s),
        Tok::Field(s) => quote(&format!(".{s}")),
        Tok::Variable(s) | Tok::Ident(s) => quote(s),
        Tok::LeftDelim => quote("{{"),
        Tok::RightDelim => quote("}}"),
        Tok::Bool(b) => quote(if *b { "true" } else { "false" }),
        Tok::Nil => quote("nil"),
        Tok::Dot => quote("."),
        Tok::Pipe => quote("|"),
        Tok::LeftParen => quote("("),
        Tok::RightParen => quote(")"),
        Tok::Declare => quote(":="),
        Tok::Assign => quote("="),
        Tok::Comma => quote(","),
    }
}

/// Interprets a number literal as Go's `parse.NumberNode` does.
fn number(text: &str) -> Result<Number, String> {
    let bad = || format!("illegal number syntax: {}", quote(text));
    if let Some(body) = text.strip_prefix('\'') {
        let body = body.strip_suffix('\'').ok_or_else(bad)?;
        let s = lexer::unquote(body, '\'').map_err(|_| bad())?;
        let mut chars = s.chars();
        let (Some(c), None) = (chars.next(), chars.next()) else {
            return Err(bad());
        };
        return Ok(Number {
            text: text.to_string(),
            int: Some(i64::from(c as u32)),
            float: Some(f64::from(c as u32)),
            float_syntax: false,
        });
    }
    if text.ends_with('i') {
        return Err(format!(
            "complex numbers are not supported: {}",
            quote(text)
        ));
    }
    if let Some(i) = super::funcs::parse_go_int(text) {
        return Ok(Number {
            text: text.to_string(),
            int: Some(i),
            float: Some(i as f64),
            float_syntax: false,
        });
    }
    let is_hex = text
        .trim_start_matches(['+', '-'])
        .to_ascii_lowercase()
        .starts_with("0x");
    if is_hex {
        return Err(bad());
    }
    let clean: String = text.chars().filter(|c| *c != '_').collect();
    let f: f64 = clean.parse().map_err(|_| bad())?;
    if !text.contains(['.', 'e', 'E']) {
        return Err(format!("integer overflow: {}", quote(text)));
    }
    let int = (f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i64);
    Ok(Number {
        text: text.to_string(),
        int,
        float: Some(f),
        float_syntax: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> String {
        parse("line", src).err().unwrap_or_default()
    }

    #[test]
    fn unknown_function_fails_like_go() {
        assert_eq!(
            err("{{ toJson .action }}"),
            "template: line:1: function \"toJson\" not defined"
        );
    }

    #[test]
    fn structural_errors() {
        assert_eq!(err("{{ end }}"), "template: line:1: unexpected {{end}}");
        assert_eq!(err("{{ if .a }}x"), "template: line:1: unexpected EOF");
        assert_eq!(err("{{}}"), "template: line:1: missing value for command");
        assert_eq!(
            err("a\n{{ $x }}"),
            "template: line:2: undefined variable \"$x\""
        );
        assert_eq!(
            err("{{ .a | 1 }}"),
            "template: line:1: non executable command in pipeline stage 2"
        );
        assert_eq!(
            err("{{ break }}"),
            "template: line:1: {{break}} outside {{range}}"
        );
        assert_eq!(err("{{ .a"), "template: line:1: unclosed action");
        assert_eq!(
            err("{{ if 1 }}{{ else }}{{ else }}{{ end }}"),
            "template: line:1: expected end; found {{else}}"
        );
    }

    #[test]
    fn variables_get_scoped_slots() {
        let t = parse(
            "line",
            "{{ $a := 1 }}{{ if true }}{{ $b := 2 }}{{ end }}{{ $c := 3 }}{{ $a }}",
        );
        assert_eq!(t.map(|t| t.slots).ok(), Some(4));
        assert!(parse("line", "{{ if true }}{{ $b := 2 }}{{ end }}{{ $b }}").is_err());
        assert!(parse("line", "{{ range $i, $e := . }}{{ $i }}{{ $e }}{{ end }}").is_ok());
    }

    #[test]
    fn numbers_follow_go() {
        let n = number("5.0").ok();
        assert_eq!(n.as_ref().and_then(|n| n.int), Some(5));
        assert_eq!(n.map(|n| n.float_syntax), Some(true));
        assert_eq!(number("0x1F").ok().and_then(|n| n.int), Some(31));
        assert_eq!(number("'a'").ok().and_then(|n| n.int), Some(97));
        assert!(number("99999999999999999999").is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{{{{ {}1{} }}}}", "(".repeat(5000), ")".repeat(5000));
        assert_eq!(
            err(&deep),
            "template: line:1: max expression depth exceeded"
        );
        let ifs = "{{ if 1 }}".repeat(5000);
        assert_eq!(err(&ifs), "template: line:1: max expression depth exceeded");
        let ok = format!("{{{{ {}1{} }}}}", "(".repeat(50), ")".repeat(50));
        assert!(parse("line", &ok).is_ok());
    }
}
