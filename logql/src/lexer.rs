//! The LogQL tokenizer. It reproduces Loki's lexer (a Go `text/scanner` plus LogQL rules):
//! Go string escapes, backtick raw strings, `#`, `//` and `/* */` comments, numbers followed by
//! a unit becoming durations or byte sizes, `[…]` read whole as a Prometheus range, and the
//! keyword-versus-name rule for function words (a keyword only before `(` or `by`/`without (`).
//!
//! Positions follow Go's scanner: 1-based line and column counted in characters. Like Loki,
//! tokens the scanner finished with extra `Next()` calls (two-character operators, ranges,
//! durations, byte sizes, flags) report line 0 in errors. The duration and byte-size parsers
//! are public because the pipeline needs the same conversions for `unwrap` and label filters.

use crate::ast::{RangeOp, VectorOp};

/// Always-reserved words (any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kw {
    /// `by`
    By,
    /// `without`
    Without,
    /// `bool`
    Bool,
    /// `offset`
    Offset,
    /// `on`
    On,
    /// `ignoring`
    Ignoring,
    /// `group_left`
    GroupLeft,
    /// `group_right`
    GroupRight,
    /// `or`
    Or,
    /// `and`
    And,
    /// `unless`
    Unless,
    /// `json`
    Json,
    /// `regexp`
    Regexp,
    /// `logfmt`
    Logfmt,
    /// `unpack`
    Unpack,
    /// `pattern`
    Pattern,
    /// `label_format`
    LabelFormat,
    /// `line_format`
    LineFormat,
    /// `decolorize`
    Decolorize,
    /// `drop`
    Drop,
    /// `keep`
    Keep,
    /// `unwrap`
    Unwrap,
}

impl Kw {
    fn from_lower(s: &str) -> Option<Kw> {
        Some(match s {
            "by" => Kw::By,
            "without" => Kw::Without,
            "bool" => Kw::Bool,
            "offset" => Kw::Offset,
            "on" => Kw::On,
            "ignoring" => Kw::Ignoring,
            "group_left" => Kw::GroupLeft,
            "group_right" => Kw::GroupRight,
            "or" => Kw::Or,
            "and" => Kw::And,
            "unless" => Kw::Unless,
            "json" => Kw::Json,
            "regexp" => Kw::Regexp,
            "logfmt" => Kw::Logfmt,
            "unpack" => Kw::Unpack,
            "pattern" => Kw::Pattern,
            "label_format" => Kw::LabelFormat,
            "line_format" => Kw::LineFormat,
            "decolorize" => Kw::Decolorize,
            "drop" => Kw::Drop,
            "keep" => Kw::Keep,
            "unwrap" => Kw::Unwrap,
            _ => return None,
        })
    }

    /// The word, lower case (also its name in syntax errors).
    pub fn as_str(self) -> &'static str {
        match self {
            Kw::By => "by",
            Kw::Without => "without",
            Kw::Bool => "bool",
            Kw::Offset => "offset",
            Kw::On => "on",
            Kw::Ignoring => "ignoring",
            Kw::GroupLeft => "group_left",
            Kw::GroupRight => "group_right",
            Kw::Or => "or",
            Kw::And => "and",
            Kw::Unless => "unless",
            Kw::Json => "json",
            Kw::Regexp => "regexp",
            Kw::Logfmt => "logfmt",
            Kw::Unpack => "unpack",
            Kw::Pattern => "pattern",
            Kw::LabelFormat => "label_format",
            Kw::LineFormat => "line_format",
            Kw::Decolorize => "decolorize",
            Kw::Drop => "drop",
            Kw::Keep => "keep",
            Kw::Unwrap => "unwrap",
        }
    }
}

/// Function words: keywords only when followed by `(` or `by`/`without (`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Func {
    /// A range aggregation (`rate`, `count_over_time`, …).
    Range(RangeOp),
    /// A vector aggregation (`sum`, `topk`, …).
    Vector(VectorOp),
    /// `vector`
    VectorLit,
    /// `label_replace`
    LabelReplace,
    /// `bytes` (unwrap conversion)
    BytesConv,
    /// `duration` (unwrap conversion)
    DurationConv,
    /// `duration_seconds` (unwrap conversion)
    DurationSecondsConv,
    /// `ip`
    Ip,
}

impl Func {
    fn from_lower(s: &str) -> Option<Func> {
        use RangeOp as R;
        use VectorOp as V;
        Some(match s {
            "rate" => Func::Range(R::Rate),
            "rate_counter" => Func::Range(R::RateCounter),
            "count_over_time" => Func::Range(R::CountOverTime),
            "bytes_rate" => Func::Range(R::BytesRate),
            "bytes_over_time" => Func::Range(R::BytesOverTime),
            "avg_over_time" => Func::Range(R::AvgOverTime),
            "sum_over_time" => Func::Range(R::SumOverTime),
            "min_over_time" => Func::Range(R::MinOverTime),
            "max_over_time" => Func::Range(R::MaxOverTime),
            "stdvar_over_time" => Func::Range(R::StdvarOverTime),
            "stddev_over_time" => Func::Range(R::StddevOverTime),
            "quantile_over_time" => Func::Range(R::QuantileOverTime),
            "first_over_time" => Func::Range(R::FirstOverTime),
            "last_over_time" => Func::Range(R::LastOverTime),
            "absent_over_time" => Func::Range(R::AbsentOverTime),
            "vector" => Func::VectorLit,
            "sum" => Func::Vector(V::Sum),
            "avg" => Func::Vector(V::Avg),
            "max" => Func::Vector(V::Max),
            "min" => Func::Vector(V::Min),
            "count" => Func::Vector(V::Count),
            "stddev" => Func::Vector(V::Stddev),
            "stdvar" => Func::Vector(V::Stdvar),
            "bottomk" => Func::Vector(V::Bottomk),
            "topk" => Func::Vector(V::Topk),
            "sort" => Func::Vector(V::Sort),
            "sort_desc" => Func::Vector(V::SortDesc),
            "label_replace" => Func::LabelReplace,
            "bytes" => Func::BytesConv,
            "duration" => Func::DurationConv,
            "duration_seconds" => Func::DurationSecondsConv,
            "ip" => Func::Ip,
            _ => return None,
        })
    }

    /// The token name Loki's parser prints in syntax errors (yacc names; `ip` and
    /// `label_replace` are also plain tokens and print as themselves).
    pub fn token_name(self) -> &'static str {
        match self {
            Func::Range(op) => match op {
                RangeOp::CountOverTime => "COUNT_OVER_TIME",
                RangeOp::Rate => "RATE",
                RangeOp::RateCounter => "RATE_COUNTER",
                RangeOp::BytesOverTime => "BYTES_OVER_TIME",
                RangeOp::BytesRate => "BYTES_RATE",
                RangeOp::AvgOverTime => "AVG_OVER_TIME",
                RangeOp::SumOverTime => "SUM_OVER_TIME",
                RangeOp::MinOverTime => "MIN_OVER_TIME",
                RangeOp::MaxOverTime => "MAX_OVER_TIME",
                RangeOp::StdvarOverTime => "STDVAR_OVER_TIME",
                RangeOp::StddevOverTime => "STDDEV_OVER_TIME",
                RangeOp::QuantileOverTime => "QUANTILE_OVER_TIME",
                RangeOp::FirstOverTime => "FIRST_OVER_TIME",
                RangeOp::LastOverTime => "LAST_OVER_TIME",
                RangeOp::AbsentOverTime => "ABSENT_OVER_TIME",
            },
            Func::Vector(op) => match op {
                VectorOp::Sum => "SUM",
                VectorOp::Avg => "AVG",
                VectorOp::Count => "COUNT",
                VectorOp::Min => "MIN",
                VectorOp::Max => "MAX",
                VectorOp::Stddev => "STDDEV",
                VectorOp::Stdvar => "STDVAR",
                VectorOp::Topk => "TOPK",
                VectorOp::Bottomk => "BOTTOMK",
                VectorOp::Sort => "SORT",
                VectorOp::SortDesc => "SORT_DESC",
            },
            Func::VectorLit => "VECTOR",
            Func::LabelReplace => "label_replace",
            Func::BytesConv => "BYTES_CONV",
            Func::DurationConv => "DURATION_CONV",
            Func::DurationSecondsConv => "DURATION_SECONDS_CONV",
            Func::Ip => "ip",
        }
    }
}

/// Token kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A name (also any character the lexer does not know, as in Loki).
    Ident,
    /// A string literal, unquoted.
    Str(String),
    /// A number; the text is in [`Token::text`].
    Number,
    /// A duration literal in ns (`5m`, `1.5s`, `-2h`).
    Duration(i64),
    /// A byte size (`10KB`).
    Bytes(u64),
    /// `[5m]`, in ns.
    Range(i64),
    /// `--strict` / `--keep-empty`; the text is in [`Token::text`].
    Flag,
    /// A reserved word.
    Kw(Kw),
    /// A function word used as a function.
    Func(Func),
    /// `,`
    Comma,
    /// `.`
    Dot,
    /// `{`
    LBrace,
    /// `}`
    RBrace,
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `]`
    RBracket,
    /// `=`
    Eq,
    /// `!=`
    Neq,
    /// `=~`
    Re,
    /// `!~`
    Nre,
    /// `!>`
    Npa,
    /// `|=`
    PipeExact,
    /// `|~`
    PipeMatch,
    /// `|>`
    PipePattern,
    /// `|`
    Pipe,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `^`
    Pow,
    /// `==`
    CmpEq,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// End of input.
    Eof,
    /// A lexical error; parsing stops here with this message.
    Error(String),
}

/// One token with its source text and position.
#[derive(Debug, Clone, PartialEq)]
pub struct Token<'a> {
    /// Kind and value.
    pub tok: Tok,
    /// The source text of the token.
    pub text: &'a str,
    /// 1-based line, or 0 when Loki's scanner would report 0 (see module docs).
    pub line: usize,
    /// 1-based column in characters.
    pub col: usize,
}

impl Token<'_> {
    /// The name Loki's parser uses for this token in `syntax error: unexpected …`.
    pub fn describe(&self) -> &str {
        match &self.tok {
            Tok::Ident => "IDENTIFIER",
            Tok::Str(_) => "STRING",
            Tok::Number => "NUMBER",
            Tok::Duration(_) => "DURATION",
            Tok::Bytes(_) => "BYTES",
            Tok::Range(_) => "RANGE",
            Tok::Flag => "FUNCTION_FLAG",
            Tok::Kw(k) => k.as_str(),
            Tok::Func(f) => f.token_name(),
            Tok::Eof => "$end",
            Tok::Error(_) => "$end",
            _ => self.text,
        }
    }
}

/// Tokenize a whole query. The result always ends with an [`Tok::Eof`] or [`Tok::Error`] token.
pub fn lex(src: &str) -> Vec<Token<'_>> {
    let mut lx = Lexer {
        src,
        pos: 0,
        line: 1,
        col: 1,
    };
    let mut out = Vec::with_capacity(src.len() / 4 + 2);
    loop {
        let t = lx.next_token();
        let stop = matches!(t.tok, Tok::Eof | Tok::Error(_));
        out.push(t);
        if stop {
            return out;
        }
    }
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
    col: usize,
}

fn is_go_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

fn is_duration_rune(c: char) -> bool {
    matches!(c, 'n' | 'u' | 'µ' | 'm' | 's' | 'h' | 'd' | 'w' | 'y')
}

fn is_bytes_rune(c: char) -> bool {
    matches!(c, 'B' | 'i' | 'k' | 'K' | 'M' | 'G' | 'T' | 'P')
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek2(&self) -> Option<char> {
        let mut it = self.rest().chars();
        it.next();
        it.next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn bump_while(&mut self, f: impl Fn(char) -> bool) {
        while let Some(c) = self.peek() {
            if !f(c) {
                break;
            }
            self.bump();
        }
    }

    /// Skips whitespace and comments; returns an error token for an unterminated `/*`.
    fn skip_trivia(&mut self) -> Option<Token<'a>> {
        loop {
            match self.peek() {
                Some(c) if is_go_space(c) => {
                    self.bump();
                }
                Some('#') => self.bump_while(|c| c != '\n'),
                Some('/') if self.peek2() == Some('/') => self.bump_while(|c| c != '\n'),
                Some('/') if self.peek2() == Some('*') => {
                    let (line, col, start) = (self.line, self.col, self.pos);
                    self.bump();
                    self.bump();
                    loop {
                        match self.bump() {
                            None => {
                                return Some(Token {
                                    tok: Tok::Error("comment not terminated".into()),
                                    text: &self.src[start..],
                                    line,
                                    col,
                                })
                            }
                            Some('*') if self.peek() == Some('/') => {
                                self.bump();
                                break;
                            }
                            Some(_) => {}
                        }
                    }
                }
                _ => return None,
            }
        }
    }

    fn next_token(&mut self) -> Token<'a> {
        if let Some(err) = self.skip_trivia() {
            return err;
        }
        let (start, line, col) = (self.pos, self.line, self.col);
        let mk = |lx: &Self, tok: Tok, line_valid: bool| Token {
            tok,
            text: &lx.src[start..lx.pos],
            line: if line_valid { line } else { 0 },
            col,
        };
        let Some(c) = self.peek() else {
            return mk(self, Tok::Eof, true);
        };
        if c.is_ascii_digit() || (c == '.' && self.peek2().is_some_and(|d| d.is_ascii_digit())) {
            self.scan_go_number();
            let number_end = self.pos;
            if let Some(tok) = self.try_unit_suffix(start) {
                return mk(self, tok, false);
            }
            debug_assert_eq!(number_end, self.pos);
            return mk(self, Tok::Number, true);
        }
        if is_ident_start(c) {
            self.bump_while(is_ident_char);
            let text = &self.src[start..self.pos];
            let lower = text.to_ascii_lowercase();
            if let Some(f) = Func::from_lower(&lower) {
                if self.is_function_call_ahead() {
                    return mk(self, Tok::Func(f), true);
                }
                return mk(self, Tok::Ident, true);
            }
            if let Some(k) = Kw::from_lower(&lower) {
                return mk(self, Tok::Kw(k), true);
            }
            return mk(self, Tok::Ident, true);
        }
        match c {
            '"' => return self.scan_string(start, line, col),
            '`' => return self.scan_raw_string(start, line, col),
            '\'' => {
                // Go scans a char literal; Loki then treats it as an identifier.
                self.bump();
                loop {
                    match self.bump() {
                        Some('\'') => return mk(self, Tok::Ident, true),
                        Some('\\') => {
                            self.bump();
                        }
                        Some('\n') | None => {
                            return mk(self, Tok::Error("literal not terminated".into()), true)
                        }
                        Some(_) => {}
                    }
                }
            }
            '[' => return self.scan_range(start, line, col),
            '-' => {
                self.bump();
                if self.peek() == Some('-') {
                    let flag_end = self.rest().find(|c: char| !(c.is_alphabetic() || c == '-'));
                    let flag_len = flag_end.unwrap_or(self.rest().len());
                    let flag = &self.src[start..self.pos + flag_len];
                    if flag == "--strict" || flag == "--keep-empty" {
                        for _ in 0..flag.chars().count() - 1 {
                            self.bump();
                        }
                        return mk(self, Tok::Flag, false);
                    }
                }
                if let Some(tok) = self.try_duration_suffix(start) {
                    return mk(self, tok, false);
                }
                return mk(self, Tok::Sub, true);
            }
            _ => {}
        }
        self.bump();
        let two = |lx: &mut Self, next: char, tok2: Tok, tok1: Tok| {
            if lx.peek() == Some(next) {
                lx.bump();
                mk(lx, tok2, false)
            } else {
                mk(lx, tok1, true)
            }
        };
        match c {
            ',' => mk(self, Tok::Comma, true),
            '.' => mk(self, Tok::Dot, true),
            '{' => mk(self, Tok::LBrace, true),
            '}' => mk(self, Tok::RBrace, true),
            '(' => mk(self, Tok::LParen, true),
            ')' => mk(self, Tok::RParen, true),
            ']' => mk(self, Tok::RBracket, true),
            '+' => mk(self, Tok::Add, true),
            '*' => mk(self, Tok::Mul, true),
            '/' => mk(self, Tok::Div, true),
            '%' => mk(self, Tok::Mod, true),
            '^' => mk(self, Tok::Pow, true),
            '=' => match self.peek() {
                Some('~') => {
                    self.bump();
                    mk(self, Tok::Re, false)
                }
                Some('=') => {
                    self.bump();
                    mk(self, Tok::CmpEq, false)
                }
                _ => mk(self, Tok::Eq, true),
            },
            '!' => match self.peek() {
                Some('=') => {
                    self.bump();
                    mk(self, Tok::Neq, false)
                }
                Some('~') => {
                    self.bump();
                    mk(self, Tok::Nre, false)
                }
                Some('>') => {
                    self.bump();
                    mk(self, Tok::Npa, false)
                }
                _ => mk(self, Tok::Ident, true),
            },
            '|' => match self.peek() {
                Some('=') => {
                    self.bump();
                    mk(self, Tok::PipeExact, false)
                }
                Some('~') => {
                    self.bump();
                    mk(self, Tok::PipeMatch, false)
                }
                Some('>') => {
                    self.bump();
                    mk(self, Tok::PipePattern, false)
                }
                _ => mk(self, Tok::Pipe, true),
            },
            '>' => two(self, '=', Tok::Ge, Tok::Gt),
            '<' => two(self, '=', Tok::Le, Tok::Lt),
            _ => mk(self, Tok::Ident, true),
        }
    }

    /// Loki's `isFunction`: after optional spaces, `(`, or `by`/`without` then optional spaces and `(`.
    fn is_function_call_ahead(&self) -> bool {
        let rest = self.rest().trim_start_matches(is_go_space);
        if rest.starts_with('(') {
            return true;
        }
        for kw in ["by", "without"] {
            if rest.len() >= kw.len()
                && rest.is_char_boundary(kw.len())
                && rest[..kw.len()].eq_ignore_ascii_case(kw)
            {
                return rest[kw.len()..]
                    .trim_start_matches(is_go_space)
                    .starts_with('(');
            }
        }
        false
    }

    /// Scans a Go number literal (decimal, float with exponent, or 0x/0o/0b with `_`),
    /// loosely: conversion reports invalid forms later, as Loki does.
    fn scan_go_number(&mut self) {
        let rest = self.rest().as_bytes();
        if rest.len() > 1
            && rest[0] == b'0'
            && matches!(rest[1], b'x' | b'X' | b'o' | b'O' | b'b' | b'B')
        {
            self.bump();
            self.bump();
            self.bump_while(|c| c.is_ascii_hexdigit() || c == '_' || c == '.');
            return;
        }
        self.bump_while(|c| c.is_ascii_digit() || c == '_');
        if self.peek() == Some('.') {
            self.bump();
            self.bump_while(|c| c.is_ascii_digit() || c == '_');
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            let mut it = self.rest().chars().skip(1);
            let next = it.next();
            let ok = match next {
                Some(d) if d.is_ascii_digit() => true,
                Some('+' | '-') => it.next().is_some_and(|d| d.is_ascii_digit()),
                _ => false,
            };
            if ok {
                self.bump();
                if matches!(self.peek(), Some('+' | '-')) {
                    self.bump();
                }
                self.bump_while(|c| c.is_ascii_digit() || c == '_');
            }
        }
    }

    /// After a number: a following run of unit characters turns it into a duration or bytes.
    fn try_unit_suffix(&mut self, start: usize) -> Option<Tok> {
        if let Some(t) = self.try_duration_suffix(start) {
            return Some(t);
        }
        let run = self.run_len(|c| c.is_numeric() || is_bytes_rune(c) || c == '.');
        if run == 0 {
            return None;
        }
        let text = &self.src[start..self.pos + run];
        let b = parse_bytes(text).ok()?;
        self.advance_bytes(run);
        Some(Tok::Bytes(b))
    }

    fn try_duration_suffix(&mut self, start: usize) -> Option<Tok> {
        let run = self.run_len(|c| c.is_numeric() || is_duration_rune(c) || c == '.');
        if run == 0 {
            return None;
        }
        let text = &self.src[start..self.pos + run];
        let d = parse_duration(text).ok()?;
        self.advance_bytes(run);
        Some(Tok::Duration(d))
    }

    fn run_len(&self, f: impl Fn(char) -> bool) -> usize {
        self.rest()
            .find(|c: char| !f(c))
            .unwrap_or(self.rest().len())
    }

    fn advance_bytes(&mut self, n: usize) {
        let end = self.pos + n;
        while self.pos < end {
            self.bump();
        }
    }

    fn scan_range(&mut self, start: usize, line: usize, col: usize) -> Token<'a> {
        self.bump();
        let body_start = self.pos;
        let tok = match self.rest().find(']') {
            Some(i) => {
                let body = &self.src[body_start..body_start + i];
                self.advance_bytes(i + 1);
                match parse_prom_duration(body) {
                    Ok(d) => Tok::Range(d),
                    Err(e) => Tok::Error(e),
                }
            }
            None => {
                self.advance_bytes(self.rest().len());
                Tok::Error("missing closing ']' in duration".into())
            }
        };
        // Loki's scanner reports line 0 for everything read with Next().
        let _ = line;
        Token {
            tok,
            text: &self.src[start..self.pos],
            line: 0,
            col,
        }
    }

    fn scan_raw_string(&mut self, start: usize, line: usize, col: usize) -> Token<'a> {
        self.bump();
        let tok = match self.rest().find('`') {
            Some(i) => {
                let s = self.src[self.pos..self.pos + i].to_string();
                self.advance_bytes(i + 1);
                // Go drops carriage returns from raw strings.
                Tok::Str(if s.contains('\r') {
                    s.replace('\r', "")
                } else {
                    s
                })
            }
            None => {
                self.advance_bytes(self.rest().len());
                Tok::Error("literal not terminated".into())
            }
        };
        Token {
            tok,
            text: &self.src[start..self.pos],
            line,
            col,
        }
    }

    fn scan_string(&mut self, start: usize, line: usize, col: usize) -> Token<'a> {
        self.bump();
        let mut buf: Vec<u8> = Vec::new();
        let mut err: Option<&'static str> = None;
        loop {
            let Some(c) = self.bump() else {
                err = err.or(Some("literal not terminated"));
                break;
            };
            match c {
                '"' => break,
                '\n' => {
                    err = err.or(Some("literal not terminated"));
                    break;
                }
                '\\' => {
                    if let Err(e) = self.scan_escape(&mut buf) {
                        err = err.or(Some(e));
                    }
                }
                c => {
                    let mut tmp = [0u8; 4];
                    buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                }
            }
        }
        let tok = match err {
            Some(e) => Tok::Error(e.into()),
            None => match String::from_utf8(buf) {
                Ok(s) => Tok::Str(s),
                Err(_) => Tok::Error("invalid UTF-8 rune".into()),
            },
        };
        Token {
            tok,
            text: &self.src[start..self.pos],
            line,
            col,
        }
    }

    /// One escape after `\` in a `"…"` string, Go rules.
    fn scan_escape(&mut self, buf: &mut Vec<u8>) -> Result<(), &'static str> {
        let Some(c) = self.peek() else {
            return Err("literal not terminated");
        };
        let simple = match c {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            '"' => Some(b'"'),
            _ => None,
        };
        if let Some(b) = simple {
            self.bump();
            buf.push(b);
            return Ok(());
        }
        let (count, radix, is_byte) = match c {
            '0'..='7' => (3, 8, true),
            'x' => (2, 16, true),
            'u' => (4, 16, false),
            'U' => (8, 16, false),
            '\n' => return Err("invalid char escape"),
            _ => {
                self.bump();
                return Err("invalid char escape");
            }
        };
        if c.is_ascii_alphabetic() {
            self.bump();
        }
        let mut v: u32 = 0;
        for _ in 0..count {
            match self.peek().and_then(|d| d.to_digit(radix)) {
                Some(d) => {
                    self.bump();
                    v = v * radix + d;
                }
                None => return Err("invalid char escape"),
            }
        }
        if is_byte {
            let b = u8::try_from(v).map_err(|_| "invalid syntax")?;
            buf.push(b);
        } else {
            let ch = char::from_u32(v).ok_or("invalid syntax")?;
            let mut tmp = [0u8; 4];
            buf.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
        }
        Ok(())
    }
}

const NS_MS: i64 = 1_000_000;
const NS_S: i64 = 1_000_000_000;

/// Prometheus `model.ParseDuration`: integer+unit groups (`y w d h m s ms`) in descending
/// order, or `0`. Errors are worded like Prometheus'.
pub fn parse_prom_duration(s: &str) -> Result<i64, String> {
    match s {
        "0" => return Ok(0),
        "" => return Err("empty duration string".into()),
        _ => {}
    }
    let invalid = || format!("not a valid duration string: {}", go_quote(s));
    let b = s.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    let mut last_pos = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            return Err(invalid());
        }
        let ds = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let v: u64 = s[ds..i].parse().map_err(|_| invalid())?;
        let us = i;
        while i < b.len() && !b[i].is_ascii_digit() {
            i += 1;
        }
        if us == i {
            return Err(invalid());
        }
        let unit = &s[us..i];
        let (pos, mult): (u32, u64) = match unit {
            "ms" => (7, NS_MS as u64),
            "s" => (6, NS_S as u64),
            "m" => (5, 60 * NS_S as u64),
            "h" => (4, 3600 * NS_S as u64),
            "d" => (3, 86400 * NS_S as u64),
            "w" => (2, 7 * 86400 * NS_S as u64),
            "y" => (1, 365 * 86400 * NS_S as u64),
            _ => {
                return Err(format!(
                    "unknown unit {} in duration {}",
                    go_quote(unit),
                    go_quote(s)
                ))
            }
        };
        if pos <= last_pos {
            return Err(invalid());
        }
        last_pos = pos;
        if v > (1u64 << 63) / mult {
            return Err("duration out of range".into());
        }
        total += v * mult;
        if total > i64::MAX as u64 {
            return Err("duration out of range".into());
        }
    }
    Ok(total as i64)
}

/// Go `time.ParseDuration` (`1.5h`, `300ms`, `-2m3s`, units `ns us µs μs ms s m h`), in ns.
/// One implementation serves the parser and the pipeline (`unwrap duration()`, label filters).
pub fn parse_go_duration(s: &str) -> Result<i64, String> {
    crate::pipeline::convert::parse_go_duration(s)
}

/// Loki's duration literal rule: Prometheus syntax first, then Go's.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    parse_prom_duration(s).or_else(|_| parse_go_duration(s))
}

/// go-humanize `ParseBytes` (`20B`, `1.5KiB`, `42MB`, `1K`), as Loki uses for byte literals
/// and `unwrap bytes(…)`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(s.len());
    let num: String = s[..num_end].chars().filter(|&c| c != ',').collect();
    let f: f64 = num.parse().map_err(|_| {
        format!(
            "strconv.ParseFloat: parsing {}: invalid syntax",
            go_quote(&num)
        )
    })?;
    let unit = s[num_end..].trim().to_ascii_lowercase();
    let m: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gi" | "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "ti" | "tib" => 1 << 40,
        "p" | "pb" => 1_000_000_000_000_000,
        "pi" | "pib" => 1 << 50,
        "e" | "eb" => 1_000_000_000_000_000_000,
        "ei" | "eib" => 1 << 60,
        _ => return Err(format!("unhandled size name: {unit}")),
    };
    let v = f * m as f64;
    if v >= u64::MAX as f64 {
        return Err(format!("too large: {s}"));
    }
    Ok(v as u64)
}

/// Go `strconv.Quote`: the string in double quotes with Go escapes, so the lexer reads
/// back exactly the same string.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() || is_unprintable_space(c) => {
                let v = c as u32;
                if v <= 0xffff {
                    out.push_str(&format!("\\u{v:04x}"));
                } else {
                    out.push_str(&format!("\\U{v:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn is_unprintable_space(c: char) -> bool {
    c.is_whitespace() && c != ' '
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<Tok> {
        lex(s).into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn function_words_are_keywords_only_before_paren_or_grouping() {
        assert_eq!(
            kinds("rate(x) | rate=\"a\""),
            vec![
                Tok::Func(Func::Range(RangeOp::Rate)),
                Tok::LParen,
                Tok::Ident,
                Tok::RParen,
                Tok::Pipe,
                Tok::Ident,
                Tok::Eq,
                Tok::Str("a".into()),
                Tok::Eof
            ]
        );
        assert_eq!(
            kinds("SUM BY (count)")[..4],
            [
                Tok::Func(Func::Vector(VectorOp::Sum)),
                Tok::Kw(Kw::By),
                Tok::LParen,
                Tok::Ident
            ]
        );
        assert_eq!(
            kinds("sum without(a)")[0],
            Tok::Func(Func::Vector(VectorOp::Sum))
        );
        assert_eq!(kinds("sum bar")[0], Tok::Ident);
        assert_eq!(kinds("JSON")[0], Tok::Kw(Kw::Json));
    }

    #[test]
    fn numbers_durations_bytes_and_ranges() {
        assert_eq!(kinds("5m")[0], Tok::Duration(300 * NS_S));
        assert_eq!(kinds("1.5h")[0], Tok::Duration(5400 * NS_S));
        assert_eq!(kinds("1h30m")[0], Tok::Duration(5400 * NS_S));
        assert_eq!(kinds("-5m")[0], Tok::Duration(-300 * NS_S));
        assert_eq!(kinds("1.5MB")[0], Tok::Bytes(1_500_000));
        assert_eq!(kinds("1KiB")[0], Tok::Bytes(1024));
        assert_eq!(kinds("1e3")[0], Tok::Number);
        assert_eq!(kinds(".5")[0], Tok::Number);
        assert_eq!(kinds("[1h30m]")[0], Tok::Range(5400 * NS_S));
        assert_eq!(
            kinds("[1.5h]")[0],
            Tok::Error("unknown unit \".\" in duration \"1.5h\"".into())
        );
        assert_eq!(
            kinds("[ 5m ]")[0],
            Tok::Error("not a valid duration string: \" 5m \"".into())
        );
        assert_eq!(kinds("--strict")[0], Tok::Flag);
        assert_eq!(
            kinds("2-1"),
            vec![Tok::Number, Tok::Sub, Tok::Number, Tok::Eof]
        );
    }

    #[test]
    fn strings_follow_go_rules() {
        assert_eq!(
            kinds(r#""a\"b\n\x41\u00e9""#)[0],
            Tok::Str("a\"b\nAé".into())
        );
        assert_eq!(
            kinds(r#""\w""#)[0],
            Tok::Error("invalid char escape".into())
        );
        assert_eq!(
            kinds("\"a\nb\"")[0],
            Tok::Error("literal not terminated".into())
        );
        assert_eq!(kinds("`a\\w\nb`")[0], Tok::Str("a\\w\nb".into()));
        assert_eq!(kinds("'a'")[0], Tok::Ident);
    }

    #[test]
    fn comments_are_skipped() {
        assert_eq!(
            kinds("# c\n{ // x\n/* y */}"),
            vec![Tok::LBrace, Tok::RBrace, Tok::Eof]
        );
        assert_eq!(
            kinds("/* open")[0],
            Tok::Error("comment not terminated".into())
        );
    }

    #[test]
    fn positions_match_go_scanner() {
        let t = lex("rate({a=\"b\"}[5x])");
        let r = t
            .iter()
            .find(|t| matches!(t.tok, Tok::Error(_)))
            .map(|t| (t.line, t.col));
        assert_eq!(r, Some((0, 13)));
        let t = lex("{a=\"b\"}\n  |= \"x\"");
        assert_eq!((t[5].line, t[5].col), (0, 3));
        assert_eq!((t[6].line, t[6].col), (2, 6));
    }

    #[test]
    fn quote_round_trips() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "nl\ntab\t",
            "\u{1}\u{7f}",
            "é✓",
            "\u{2028}",
        ] {
            let q = go_quote(s);
            assert_eq!(kinds(&q)[0], Tok::Str(s.to_string()), "{q}");
        }
    }

    #[test]
    fn duration_parsers() {
        assert_eq!(parse_prom_duration("1d"), Ok(86400 * NS_S));
        assert!(parse_prom_duration("1m1h").is_err());
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration("1µs"), Ok(1000));
        assert_eq!(parse_bytes("1.5KiB"), Ok(1536));
        assert_eq!(parse_bytes("42MB"), Ok(42_000_000));
        assert_eq!(parse_bytes("1K"), Ok(1000));
    }
}
