//! Line tokenizers of the Drain miner, one per log format, after Loki's pattern ingester:
//!
//! * **unknown** (plain text): split on spaces and on punctuation; every punctuation mark is
//!   a token of its own, spaces are not tokens. `_ - . : /` do not split (paths, versions,
//!   times and IPs stay whole), `=` always does. Symbols (`+ < > | $ ^ ~`, tabs) stay inside
//!   tokens.
//! * **logfmt**: one token for each key and one for each value; the values of time-like keys
//!   (`ts`, `t`, `time`, `timestamp`, `traceID`) are the placeholder from the start.
//! * **JSON**: only the message (first of the string fields `log`, `message`, `msg`, `msg_`,
//!   `_msg`, `content`) is tokenized, as plain text; the pattern wraps it in placeholders.
//!
//! Unlike Loki, which re-encodes logfmt values and drops leading spaces when it joins tokens
//! back into a pattern, every token and every separator here is a slice of the line itself,
//! so the joined tokens of a line give back the line (or its raw, still escaped, JSON
//! message) byte for byte. That is what makes a pattern usable as a `|>` filter over the
//! lines it came from.

use std::sync::OnceLock;

/// The placeholder of a variable token (Loki's `ParamString`).
pub const PLACEHOLDER: &str = "<_>";

/// Lines longer than this are not mined (Loki's `max_allowed_line_length` default).
pub const MAX_LINE_LENGTH: usize = 3000;

/// The punctuation tokenizer stops splitting after this many tokens (Loki's limit).
const MAX_TOKENS_SCANNED: usize = 127;

/// JSON fields holding the message, in the order they are looked for (Loki's
/// `pattern_ingester_tokenizable_json_fields_default`).
const JSON_MESSAGE_FIELDS: [&str; 6] = ["log", "message", "msg", "msg_", "_msg", "content"];

/// The format of a stream's lines, guessed once from its first line (Loki's
/// `DetectLogFormat`); it decides the tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineFormat {
    /// `{…}` lines: the message field is mined.
    Json,
    /// `key=value …` lines.
    Logfmt,
    /// Anything else: the punctuation tokenizer.
    Unknown,
}

impl LineFormat {
    /// Guess the format from one line: `{` … `}` is JSON, a run of `key=value` pairs
    /// (values unquoted and non-empty, or quoted) is logfmt, the rest is plain text.
    pub fn detect(line: &str) -> LineFormat {
        let b = line.as_bytes();
        if b.len() < 2 {
            return LineFormat::Unknown;
        }
        if b[0] == b'{' && b[b.len() - 1] == b'}' {
            return LineFormat::Json;
        }
        if logfmt_shape().is_match(line) {
            return LineFormat::Logfmt;
        }
        LineFormat::Unknown
    }
}

/// Loki's logfmt detection expression, with Go's ASCII `\w` and `\S` spelled out.
fn logfmt_shape() -> &'static regex::Regex {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(|| {
        // A constant expression: it compiles (the unit tests run it).
        #[allow(clippy::expect_used)]
        regex::Regex::new(
            r#"^([0-9A-Za-z_]+?=([^"][^\t\n\f\r ]*?|".+?") )*?([0-9A-Za-z_]+?=([^"][^\t\n\f\r ]*?|".+?"))+$"#,
        )
        .expect("constant regex")
    })
}

/// A byte range of the line, or the placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// The placeholder token (not a slice of the line).
    pub const PLACEHOLDER: Span = Span {
        start: u32::MAX,
        end: u32::MAX,
    };

    fn new(start: usize, end: usize) -> Span {
        // Lines are at most MAX_LINE_LENGTH bytes: offsets fit.
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    /// The text of this span in `line`.
    pub fn text<'a>(&self, line: &'a str) -> &'a str {
        if *self == Span::PLACEHOLDER {
            return PLACEHOLDER;
        }
        line.get(self.start as usize..self.end as usize)
            .unwrap_or("")
    }
}

/// A tokenized line: tokens and the separators around them, as spans of the line.
/// `separators[0]` precedes the first token and `separators[i + 1]` follows token `i`, so
/// `separators.len() == tokens.len() + 1` and joining gives back the tokenized text.
/// Buffers are reused from line to line.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// The tokens.
    pub tokens: Vec<Span>,
    /// The separators (spaces, `=`), one more than the tokens.
    pub separators: Vec<Span>,
    /// JSON: the tokens are the message only; the pattern is `<_>message<_>`.
    pub wrapped: bool,
}

impl Tokens {
    fn clear(&mut self) {
        self.tokens.clear();
        self.separators.clear();
        self.wrapped = false;
    }

    /// Token `i` of `line`.
    pub fn token<'a>(&self, line: &'a str, i: usize) -> &'a str {
        self.tokens.get(i).map_or("", |s| s.text(line))
    }
}

/// Tokenize `line` as `format` into `out`. `false` when the line is not mined: too long,
/// malformed logfmt, or a JSON line without a string message field.
pub fn tokenize(format: LineFormat, line: &str, out: &mut Tokens) -> bool {
    out.clear();
    if line.len() > MAX_LINE_LENGTH {
        return false;
    }
    match format {
        LineFormat::Unknown => {
            punctuation(line, 0, line.len(), out);
            true
        }
        LineFormat::Logfmt => logfmt(line, out),
        LineFormat::Json => match json_message(line) {
            Some((start, end)) => {
                punctuation(line, start, end, out);
                out.wrapped = true;
                true
            }
            None => false,
        },
    }
}

/// ASCII characters of Unicode's punctuation categories (`unicode.IsPunct` in Go).
/// `$ + < = > ^ \` | ~` are symbols, not punctuation.
fn is_ascii_punct(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'"'
            | b'#'
            | b'%'
            | b'&'
            | b'\''
            | b'('
            | b')'
            | b'*'
            | b','
            | b'-'
            | b'.'
            | b'/'
            | b':'
            | b';'
            | b'?'
            | b'@'
            | b'['
            | b'\\'
            | b']'
            | b'_'
            | b'{'
            | b'}'
    )
}

/// `\p{P}` for characters outside ASCII (rare in logs; the std library has no general
/// category lookup and no dependency is worth adding for it).
fn is_unicode_punct(c: char) -> bool {
    static RE: OnceLock<Option<regex::Regex>> = OnceLock::new();
    let re = RE.get_or_init(|| regex::Regex::new(r"^\p{P}$").ok());
    let mut buf = [0u8; 4];
    re.as_ref()
        .is_some_and(|re| re.is_match(c.encode_utf8(&mut buf)))
}

/// The punctuation tokenizer over `line[from..to]`.
fn punctuation(line: &str, from: usize, to: usize, out: &mut Tokens) {
    let text = &line[from..to];
    let mut start = 0usize; // start of the current token, relative to `text`
    let mut sep_start = 0usize; // start of the separator before the next token
    let push_token = |out: &mut Tokens, sep_start: usize, a: usize, b: usize| {
        out.separators.push(Span::new(from + sep_start, from + a));
        out.tokens.push(Span::new(from + a, from + b));
    };
    for (i, c) in text.char_indices() {
        if out.tokens.len() >= MAX_TOKENS_SCANNED {
            break;
        }
        let (split, own_token) = if c.is_ascii() {
            let b = c as u8;
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/') {
                (false, false)
            } else if b == b' ' {
                (true, false)
            } else if b == b'=' || is_ascii_punct(b) {
                (true, true)
            } else {
                (false, false)
            }
        } else if c.is_alphabetic() || c.is_numeric() {
            (false, false)
        } else if is_unicode_punct(c) {
            (true, true)
        } else {
            (false, false)
        };
        if !split {
            continue;
        }
        if i > start {
            push_token(out, sep_start, start, i);
            sep_start = i;
        }
        let next = i + c.len_utf8();
        if own_token {
            push_token(out, sep_start, i, next);
            sep_start = next;
        }
        start = next;
    }
    if start < text.len() {
        push_token(out, sep_start, start, text.len());
        sep_start = text.len();
    }
    out.separators.push(Span::new(from + sep_start, to));
}

/// Keys whose values vary on every line (Loki's `isVariableField`).
fn is_variable_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("ts")
        || key == "t"
        || key.eq_ignore_ascii_case("traceid")
        || key.eq_ignore_ascii_case("time")
        || key.eq_ignore_ascii_case("timestamp")
}

/// The logfmt tokenizer, with Loki's decoder rules: a key ends at `=` or a space, a value
/// at a space or its closing quote; `=` or `"` inside an unquoted value, a quote in a key
/// or an unterminated quoted value makes the line malformed (not mined).
fn logfmt(line: &str, out: &mut Tokens) -> bool {
    let b = line.as_bytes();
    let mut pos = 0usize;
    let mut sep_start = 0usize;
    loop {
        // Garbage before a key: anything up to a byte above the space.
        while pos < b.len() && b[pos] <= b' ' {
            pos += 1;
        }
        if pos >= b.len() {
            break;
        }
        let key_start = pos;
        while pos < b.len() && b[pos] > b' ' && b[pos] != b'=' {
            if b[pos] == b'"' {
                return false;
            }
            pos += 1;
        }
        let key_end = pos;
        if key_end == key_start {
            // `=` with no key.
            return false;
        }
        out.separators.push(Span::new(sep_start, key_start));
        out.tokens.push(Span::new(key_start, key_end));
        let key = &line[key_start..key_end];
        if pos >= b.len() || b[pos] != b'=' {
            // A bare key: an empty value.
            out.separators.push(Span::new(key_end, key_end));
            out.tokens.push(Span::new(key_end, key_end));
            sep_start = key_end;
            continue;
        }
        pos += 1; // '='
        let value_start = pos;
        if pos < b.len() && b[pos] == b'"' {
            pos += 1;
            let mut escaped = false;
            let mut closed = false;
            while pos < b.len() {
                let c = b[pos];
                pos += 1;
                if escaped {
                    escaped = false;
                } else if c == b'\\' {
                    escaped = true;
                } else if c == b'"' {
                    closed = true;
                    break;
                }
            }
            if !closed {
                return false;
            }
        } else {
            while pos < b.len() && b[pos] > b' ' {
                if b[pos] == b'=' || b[pos] == b'"' {
                    return false;
                }
                pos += 1;
            }
        }
        out.separators.push(Span::new(key_end, value_start));
        out.tokens.push(if is_variable_key(key) {
            Span::PLACEHOLDER
        } else {
            Span::new(value_start, pos)
        });
        sep_start = pos;
    }
    out.separators.push(Span::new(sep_start, line.len()));
    true
}

/// The raw (still escaped) content of the first top-level string field of
/// [`JSON_MESSAGE_FIELDS`] present in `line`, as a byte range.
fn json_message(line: &str) -> Option<(usize, usize)> {
    let fields = top_level_string_fields(line.as_bytes())?;
    JSON_MESSAGE_FIELDS.iter().find_map(|want| {
        fields
            .iter()
            .find(|(k, _)| &line[k.0..k.1] == *want)
            .map(|(_, v)| *v)
    })
}

/// Key and value ranges (inside the quotes, raw) of the string-valued members of the
/// top-level object of `b`; `None` when `b` is not a well-formed object up to its last
/// member. Written by hand: only ranges are needed, not decoded values, and the scan
/// stops at the top level.
#[allow(clippy::type_complexity)]
fn top_level_string_fields(b: &[u8]) -> Option<Vec<((usize, usize), (usize, usize))>> {
    let mut out = Vec::new();
    let mut p = skip_ws(b, 0);
    if b.get(p) != Some(&b'{') {
        return None;
    }
    p = skip_ws(b, p + 1);
    if b.get(p) == Some(&b'}') {
        return Some(out);
    }
    loop {
        if b.get(p) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(b, p + 1)?;
        let key = (p + 1, key_end);
        p = skip_ws(b, key_end + 1);
        if b.get(p) != Some(&b':') {
            return None;
        }
        p = skip_ws(b, p + 1);
        if b.get(p) == Some(&b'"') {
            let end = string_end(b, p + 1)?;
            out.push((key, (p + 1, end)));
            p = end + 1;
        } else {
            p = skip_value(b, p)?;
        }
        p = skip_ws(b, p);
        match b.get(p) {
            Some(b',') => p = skip_ws(b, p + 1),
            Some(b'}') => return Some(out),
            _ => return None,
        }
    }
}

fn skip_ws(b: &[u8], mut p: usize) -> usize {
    while p < b.len() && matches!(b[p], b' ' | b'\t' | b'\n' | b'\r') {
        p += 1;
    }
    p
}

/// Index of the closing quote of a string whose content starts at `p`.
fn string_end(b: &[u8], mut p: usize) -> Option<usize> {
    while p < b.len() {
        match b[p] {
            b'\\' => p += 2,
            b'"' => return Some(p),
            _ => p += 1,
        }
    }
    None
}

/// Skip a non-string value (number, literal, object, array) starting at `p`.
fn skip_value(b: &[u8], mut p: usize) -> Option<usize> {
    let mut depth = 0usize;
    while p < b.len() {
        match b[p] {
            b'"' => p = string_end(b, p + 1)? + 1,
            b'{' | b'[' => {
                depth += 1;
                p += 1;
            }
            b'}' | b']' => {
                if depth == 0 {
                    return Some(p);
                }
                depth -= 1;
                p += 1;
                if depth == 0 {
                    return Some(p);
                }
            }
            b',' if depth == 0 => return Some(p),
            _ => p += 1,
        }
    }
    (depth == 0).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(format: LineFormat, line: &str) -> Option<(Vec<String>, String)> {
        let mut t = Tokens::default();
        if !tokenize(format, line, &mut t) {
            return None;
        }
        let tokens: Vec<String> = (0..t.tokens.len())
            .map(|i| t.token(line, i).to_string())
            .collect();
        let mut joined = t.separators[0].text(line).to_string();
        for (i, tok) in tokens.iter().enumerate() {
            joined.push_str(tok);
            joined.push_str(t.separators[i + 1].text(line));
        }
        Some((tokens, joined))
    }

    #[test]
    fn punctuation_splits_like_loki() {
        let line = r#"10.0.0.1 - - [20/Nov/2025:00:00:01 +0000] "GET /api/x HTTP/1.1" 200 rt=0.5"#;
        let (t, joined) = toks(LineFormat::Unknown, line).unwrap();
        assert_eq!(
            t,
            [
                "10.0.0.1",
                "-",
                "-",
                "[",
                "20/Nov/2025:00:00:01",
                "+0000",
                "]",
                "\"",
                "GET",
                "/api/x",
                "HTTP/1.1",
                "\"",
                "200",
                "rt",
                "=",
                "0.5"
            ]
        );
        assert_eq!(joined, line);
        // Leading and repeated spaces survive the round trip.
        let (t, joined) = toks(LineFormat::Unknown, "  a  b, c").unwrap();
        assert_eq!(t, ["a", "b", ",", "c"]);
        assert_eq!(joined, "  a  b, c");
        // Non-ASCII punctuation splits, letters do not.
        let (t, _) = toks(LineFormat::Unknown, "héllo«wörld»").unwrap();
        assert_eq!(t, ["héllo", "«", "wörld", "»"]);
        // Symbols and tabs stay inside tokens.
        let (t, _) = toks(LineFormat::Unknown, "a+b\tc|d").unwrap();
        assert_eq!(t, ["a+b\tc|d"]);
    }

    #[test]
    fn long_lines_are_not_mined() {
        let line = "x ".repeat(MAX_LINE_LENGTH);
        assert!(toks(LineFormat::Unknown, &line).is_none());
        // The token scan stops at 127 tokens; the rest becomes one last token.
        let line = "a ".repeat(200);
        let (t, _) = toks(LineFormat::Unknown, &line).unwrap();
        assert_eq!(t.len(), 128);
    }

    #[test]
    fn logfmt_tokens_keep_raw_values() {
        let line = r#"ts=2024-01-01T00:00:00Z level=info msg="hello world" dur=3ms flag"#;
        let (t, joined) = toks(LineFormat::Logfmt, line).unwrap();
        assert_eq!(
            t,
            [
                "ts",
                "<_>",
                "level",
                "info",
                "msg",
                "\"hello world\"",
                "dur",
                "3ms",
                "flag",
                ""
            ]
        );
        assert_eq!(
            joined,
            r#"ts=<_> level=info msg="hello world" dur=3ms flag"#
        );
        assert!(toks(LineFormat::Logfmt, r#"a=b"c"#).is_none());
        assert!(toks(LineFormat::Logfmt, r#"a="unterminated"#).is_none());
        assert!(toks(LineFormat::Logfmt, r#"=x"#).is_none());
    }

    #[test]
    fn json_tokenizes_the_message() {
        let line = r#"{"level":"info","n":{"a":[1,2]},"message":"user \"bob\" logged in","x":1}"#;
        let mut t = Tokens::default();
        assert!(tokenize(LineFormat::Json, line, &mut t));
        assert!(t.wrapped);
        let got: Vec<&str> = (0..t.tokens.len()).map(|i| t.token(line, i)).collect();
        assert_eq!(got, ["user", "\\", "\"", "bob", "\\", "\"", "logged", "in"]);
        // `log` comes before `message` in the lookup order.
        let line = r#"{"message":"m","log":"from log field"}"#;
        assert!(tokenize(LineFormat::Json, line, &mut t));
        assert_eq!(t.token(line, 0), "from");
        assert!(!tokenize(LineFormat::Json, r#"{"level":"x"}"#, &mut t));
        assert!(!tokenize(LineFormat::Json, r#"{"message":"trunc"#, &mut t));
        assert!(!tokenize(LineFormat::Json, r#"{"message":3}"#, &mut t));
    }

    #[test]
    fn formats_are_detected() {
        assert_eq!(LineFormat::detect(r#"{"a":1}"#), LineFormat::Json);
        assert_eq!(
            LineFormat::detect(r#"level=info msg="a b" x=1"#),
            LineFormat::Logfmt
        );
        assert_eq!(LineFormat::detect("level=info x="), LineFormat::Unknown);
        assert_eq!(
            LineFormat::detect("10.0.0.1 - - [x] \"GET / HTTP/1.1\""),
            LineFormat::Unknown
        );
        assert_eq!(LineFormat::detect("x"), LineFormat::Unknown);
    }
}
