//! Tokenizer for Go `text/template` source: text runs, `{{ }}` actions with trim markers,
//! comments, and the tokens inside actions (fields, variables, identifiers, literals).
//!
//! Unlike Go's goroutine-driven lexer this produces the whole token vector up front; the
//! rules (what ends an action, what a trim marker is, which characters may follow a name)
//! are Go's, so the same templates are accepted and rejected.

/// One token. `pos` is the byte offset in the source (used for `line:col` in errors).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub kind: Tok,
    pub pos: usize,
    /// True when whitespace separates this token from the previous one inside an action;
    /// Go uses this to tell `$x.a` (one operand) from `$x .a` (two operands).
    pub space_before: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// Plain text outside actions, already trimmed by any adjacent trim markers.
    Text(String),
    LeftDelim,
    RightDelim,
    /// `.name` (the text without the dot).
    Field(String),
    /// `$` or `$name` (with the dollar).
    Variable(String),
    /// A function name.
    Ident(String),
    /// `if`, `else`, `end`, `range`, `with`, `break`, `continue`, `define`, `template`, `block`.
    Keyword(&'static str),
    /// A string literal, unquoted.
    Str(String),
    /// A number or character literal, as written (characters keep their quotes).
    Number(String),
    Bool(bool),
    Nil,
    Dot,
    Pipe,
    LeftParen,
    RightParen,
    /// `:=`
    Declare,
    /// `=`
    Assign,
    Comma,
    Eof,
}

const KEYWORDS: [&str; 10] = [
    "block", "break", "continue", "define", "else", "end", "if", "range", "template", "with",
];

/// A lexing error: message in Go's wording and the byte offset it refers to.
#[derive(Debug)]
pub(crate) struct LexError {
    pub msg: String,
    pub pos: usize,
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Tokenizes a whole template.
pub(crate) fn lex(src: &str) -> Result<Vec<Token>, LexError> {
    let mut lx = Lexer {
        src,
        b: src.as_bytes(),
        pos: 0,
        toks: Vec::new(),
        paren_depth: 0,
    };
    lx.run()?;
    Ok(lx.toks)
}

struct Lexer<'s> {
    src: &'s str,
    b: &'s [u8],
    pos: usize,
    toks: Vec<Token>,
    paren_depth: usize,
}

impl Lexer<'_> {
    fn push(&mut self, kind: Tok, pos: usize, space_before: bool) {
        self.toks.push(Token {
            kind,
            pos,
            space_before,
        });
    }

    fn err<T>(&self, msg: impl Into<String>, pos: usize) -> Result<T, LexError> {
        Err(LexError {
            msg: msg.into(),
            pos,
        })
    }

    fn run(&mut self) -> Result<(), LexError> {
        // Set when the previous action ended with ` -}}`: trim leading space of the next text.
        let mut trim_next = false;
        loop {
            let rest = &self.src[self.pos..];
            let (text_end, at_delim) = match rest.find("{{") {
                Some(i) => (self.pos + i, true),
                None => (self.src.len(), false),
            };
            let mut text = &self.src[self.pos..text_end];
            if trim_next {
                text = text.trim_start_matches([' ', '\t', '\r', '\n']);
            }
            let left_trim = at_delim && {
                let after = &self.b[text_end + 2..];
                after.len() >= 2 && after[0] == b'-' && is_space(after[1])
            };
            if left_trim {
                text = text.trim_end_matches([' ', '\t', '\r', '\n']);
            }
            if !text.is_empty() {
                let start = text_end - text.len();
                self.push(Tok::Text(text.to_string()), start, false);
            }
            if !at_delim {
                self.push(Tok::Eof, self.src.len(), false);
                return Ok(());
            }
            let delim_pos = text_end;
            self.pos = text_end + 2;
            if left_trim {
                self.pos += 2;
            }
            // A comment must start right after the delimiter (and trim marker).
            if self.src[self.pos..].starts_with("/*") {
                trim_next = self.lex_comment(delim_pos)?;
                continue;
            }
            self.push(Tok::LeftDelim, delim_pos, false);
            trim_next = self.lex_action()?;
        }
    }

    /// Skips `/* ... */` and the closing delimiter; returns whether it had a right trim marker.
    fn lex_comment(&mut self, delim_pos: usize) -> Result<bool, LexError> {
        let body = self.pos + 2;
        let Some(end) = self.src[body..].find("*/") else {
            return self.err("unclosed comment", delim_pos);
        };
        self.pos = body + end + 2;
        let rest = &self.src[self.pos..];
        if rest.starts_with("}}") {
            self.pos += 2;
            Ok(false)
        } else if rest.len() >= 4 && is_space(rest.as_bytes()[0]) && rest[1..].starts_with("-}}") {
            self.pos += 4;
            Ok(true)
        } else {
            self.err("comment ends before closing delimiter", delim_pos)
        }
    }

    /// Right delimiter at the current position: `Some(trim)` when `}}` or ` -}}`.
    fn at_right_delim(&self) -> Option<bool> {
        let rest = &self.b[self.pos..];
        if rest.starts_with(b"}}") {
            return Some(false);
        }
        if rest.len() >= 4 && is_space(rest[0]) && &rest[1..4] == b"-}}" {
            return Some(true);
        }
        None
    }

    /// Lexes the inside of one action up to and including its right delimiter.
    fn lex_action(&mut self) -> Result<bool, LexError> {
        self.paren_depth = 0;
        let mut space = false;
        loop {
            if let Some(trim) = self.at_right_delim() {
                if self.paren_depth > 0 {
                    return self.err("unclosed left paren", self.pos);
                }
                let p = if trim { self.pos + 1 } else { self.pos };
                self.push(Tok::RightDelim, p, space);
                self.pos += if trim { 4 } else { 2 };
                return Ok(trim);
            }
            let Some(c) = self.src[self.pos..].chars().next() else {
                return self.err("unclosed action", self.pos);
            };
            let start = self.pos;
            match c {
                ' ' | '\t' | '\r' | '\n' => {
                    self.pos += 1;
                    space = true;
                    continue;
                }
                '=' => {
                    self.pos += 1;
                    self.push(Tok::Assign, start, space);
                }
                ':' => {
                    if self.b.get(self.pos + 1) != Some(&b'=') {
                        return self.err("expected :=", start);
                    }
                    self.pos += 2;
                    self.push(Tok::Declare, start, space);
                }
                '|' => {
                    self.pos += 1;
                    self.push(Tok::Pipe, start, space);
                }
                ',' => {
                    self.pos += 1;
                    self.push(Tok::Comma, start, space);
                }
                '(' => {
                    self.pos += 1;
                    self.paren_depth += 1;
                    self.push(Tok::LeftParen, start, space);
                }
                ')' => {
                    self.pos += 1;
                    if self.paren_depth == 0 {
                        return self.err("unexpected right paren", start);
                    }
                    self.paren_depth -= 1;
                    self.push(Tok::RightParen, start, space);
                }
                '"' => {
                    let s = self.lex_quote()?;
                    self.push(Tok::Str(s), start, space);
                }
                '`' => {
                    let Some(end) = self.src[self.pos + 1..].find('`') else {
                        return self.err("unterminated raw quoted string", start);
                    };
                    let raw = &self.src[self.pos + 1..self.pos + 1 + end];
                    self.pos += end + 2;
                    // Go drops carriage returns from raw strings.
                    self.push(Tok::Str(raw.replace('\r', "")), start, space);
                }
                '\'' => {
                    self.lex_char()?;
                    let text = self.src[start..self.pos].to_string();
                    self.push(Tok::Number(text), start, space);
                }
                '$' => {
                    self.pos += 1;
                    self.take_alnum();
                    let name = self.src[start..self.pos].to_string();
                    self.check_terminator()?;
                    self.push(Tok::Variable(name), start, space);
                }
                '.' => {
                    // A '.' followed by a digit is a number such as `.5`.
                    if self.b.get(self.pos + 1).is_some_and(|d| d.is_ascii_digit()) {
                        self.lex_number()?;
                        let text = self.src[start..self.pos].to_string();
                        self.push(Tok::Number(text), start, space);
                    } else {
                        self.pos += 1;
                        let name_start = self.pos;
                        self.take_alnum();
                        if self.pos == name_start {
                            self.push(Tok::Dot, start, space);
                        } else {
                            let name = self.src[name_start..self.pos].to_string();
                            self.check_terminator()?;
                            self.push(Tok::Field(name), start, space);
                        }
                    }
                }
                '+' | '-' | '0'..='9' => {
                    self.lex_number()?;
                    let text = self.src[start..self.pos].to_string();
                    self.push(Tok::Number(text), start, space);
                }
                c if is_alnum(c) => {
                    self.take_alnum();
                    let word = &self.src[start..self.pos];
                    self.check_terminator()?;
                    let kind = if let Some(k) = KEYWORDS.iter().find(|k| **k == word) {
                        Tok::Keyword(k)
                    } else {
                        match word {
                            "true" => Tok::Bool(true),
                            "false" => Tok::Bool(false),
                            "nil" => Tok::Nil,
                            _ => Tok::Ident(word.to_string()),
                        }
                    };
                    self.push(kind, start, space);
                }
                c => {
                    return self.err(
                        format!("unrecognized character in action: {}", go_rune(c)),
                        start,
                    );
                }
            }
            space = false;
        }
    }

    fn take_alnum(&mut self) {
        while let Some(c) = self.src[self.pos..].chars().next() {
            if !is_alnum(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    /// Go only lets a name be followed by a space, punctuation that can follow an operand,
    /// or the end of the action.
    fn check_terminator(&self) -> Result<(), LexError> {
        if self.at_right_delim().is_some() {
            return Ok(());
        }
        match self.src[self.pos..].chars().next() {
            None => Ok(()),
            Some(' ' | '\t' | '\r' | '\n' | '.' | ',' | '|' | ':' | ')' | '(' | '=') => Ok(()),
            Some(c) => self.err(format!("bad character {}", go_rune(c)), self.pos),
        }
    }

    fn lex_quote(&mut self) -> Result<String, LexError> {
        let start = self.pos;
        self.pos += 1;
        loop {
            match self.b.get(self.pos) {
                None | Some(b'\n') => return self.err("unterminated quoted string", start),
                Some(b'\\') => self.pos += 2,
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(_) => self.pos += 1,
            }
        }
        let body = self.src.get(start + 1..self.pos - 1).unwrap_or_default();
        unquote(body, '"').map_err(|_| LexError {
            msg: format!("invalid syntax: {}", &self.src[start..self.pos]),
            pos: start,
        })
    }

    fn lex_char(&mut self) -> Result<(), LexError> {
        let start = self.pos;
        self.pos += 1;
        loop {
            match self.b.get(self.pos) {
                None | Some(b'\n') => return self.err("unterminated character constant", start),
                Some(b'\\') => self.pos += 2,
                Some(b'\'') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// Scans a Go number literal (sign, base prefix, digits with underscores, fraction,
    /// exponent, imaginary suffix); validity of the value is checked by the parser.
    fn lex_number(&mut self) -> Result<(), LexError> {
        let start = self.pos;
        if matches!(self.b.get(self.pos), Some(b'+' | b'-')) {
            self.pos += 1;
        }
        let mut digits: &[u8] = b"0123456789_";
        if self.b.get(self.pos) == Some(&b'0') {
            match self.b.get(self.pos + 1) {
                Some(b'x' | b'X') => {
                    self.pos += 2;
                    digits = b"0123456789abcdefABCDEF_";
                }
                Some(b'o' | b'O') => {
                    self.pos += 2;
                    digits = b"01234567_";
                }
                Some(b'b' | b'B') => {
                    self.pos += 2;
                    digits = b"01_";
                }
                _ => {}
            }
        }
        let take = |lx: &mut Self, set: &[u8]| {
            while lx.b.get(lx.pos).is_some_and(|c| set.contains(c)) {
                lx.pos += 1;
            }
        };
        take(self, digits);
        if self.b.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            take(self, digits);
        }
        let hex = digits.len() > 12;
        let exp_chars: &[u8] = if hex { b"pP" } else { b"eE" };
        if self.b.get(self.pos).is_some_and(|c| exp_chars.contains(c)) {
            self.pos += 1;
            if matches!(self.b.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            take(self, b"0123456789_");
        }
        if self.b.get(self.pos) == Some(&b'i') {
            self.pos += 1;
        }
        if let Some(c) = self.src[self.pos..].chars().next() {
            if is_alnum(c) || c == '.' {
                self.pos += c.len_utf8();
                return self.err(
                    format!("bad number syntax: \"{}\"", &self.src[start..self.pos]),
                    start,
                );
            }
        }
        Ok(())
    }
}

/// Go's `%#U`-like rendering of a rune used in lexer errors, e.g. `U+0023 '#'`.
fn go_rune(c: char) -> String {
    format!("U+{:04X} '{}'", c as u32, c)
}

/// Decodes the body of a Go interpreted string (`quote` = `"`) or character (`'`) literal.
/// `\x` and octal escapes are bytes, as in Go; a result that is not UTF-8 is repaired.
pub(crate) fn unquote(body: &str, quote: char) -> Result<String, ()> {
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut it = body.chars();
    let mut utf8 = [0u8; 4];
    while let Some(c) = it.next() {
        if c != '\\' {
            if c == quote {
                return Err(());
            }
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            continue;
        }
        let e = it.next().ok_or(())?;
        let simple = match e {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            '\'' if quote == '\'' => Some(b'\''),
            '"' if quote == '"' => Some(b'"'),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            continue;
        }
        let (n, radix) = match e {
            'x' => (2, 16),
            'u' => (4, 16),
            'U' => (8, 16),
            '0'..='7' => (2, 8),
            _ => return Err(()),
        };
        let mut v: u32 = if radix == 8 { e as u32 - '0' as u32 } else { 0 };
        for _ in 0..n {
            let d = it.next().and_then(|d| d.to_digit(radix)).ok_or(())?;
            v = v * radix + d;
        }
        if e == 'x' || radix == 8 {
            out.push(u8::try_from(v).map_err(|_| ())?);
        } else {
            let c = char::from_u32(v).ok_or(())?;
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
    }
    Ok(match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<Tok> {
        lex(src)
            .map(|t| t.into_iter().map(|t| t.kind).collect())
            .unwrap_or_default()
    }

    #[test]
    fn lexes_text_and_actions() {
        assert_eq!(
            kinds("a {{ .x | f 1 }}b"),
            vec![
                Tok::Text("a ".into()),
                Tok::LeftDelim,
                Tok::Field("x".into()),
                Tok::Pipe,
                Tok::Ident("f".into()),
                Tok::Number("1".into()),
                Tok::RightDelim,
                Tok::Text("b".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn trim_markers_eat_whitespace() {
        assert_eq!(
            kinds("a \n {{- 1 -}} \n b"),
            vec![
                Tok::Text("a".into()),
                Tok::LeftDelim,
                Tok::Number("1".into()),
                Tok::RightDelim,
                Tok::Text("b".into()),
                Tok::Eof
            ]
        );
        // `{{-3}}` is the number -3, not a trim marker.
        assert_eq!(kinds("{{-3}}")[1], Tok::Number("-3".into()));
    }

    #[test]
    fn comments_are_dropped() {
        assert_eq!(
            kinds("x {{- /* hi */ -}} y"),
            vec![Tok::Text("x".into()), Tok::Text("y".into()), Tok::Eof]
        );
        assert!(lex("{{/* x */ }}").is_err());
        assert!(lex("{{/* x ").is_err());
    }

    #[test]
    fn strings_decode_go_escapes() {
        assert_eq!(kinds(r#"{{"\xc3\xa9\101"}}"#)[1], Tok::Str("éA".into()));
        assert_eq!(
            kinds(r#"{{"a\tb\x41\u00e9"}}"#)[1],
            Tok::Str("a\tbAé".into())
        );
        assert_eq!(kinds("{{`a\\n`}}")[1], Tok::Str("a\\n".into()));
    }

    #[test]
    fn errors_on_bad_input() {
        assert!(lex("{{ .a").is_err());
        assert!(lex("{{ # }}").is_err());
        assert!(lex("{{ 1a }}").is_err());
        assert!(lex("{{ ) }}").is_err());
    }
}
