//! Line filters (`|=`, `!=`, `|~`, `!~`, `|>`, `!>`, `ip("…")`) compiled into
//! [`LineFilterChain`], the AND of consecutive filters.
//!
//! Substrings use precompiled `memchr::memmem` finders. A regex that is a plain literal
//! becomes a substring search, and `(?i)literal` an ASCII case-insensitive search (falling
//! back to the regex on non-ASCII lines, where Unicode case folding may differ). Any other
//! regex that is a sequence with literal parts (`" 5\d\d `, `error.*timeout`) has its
//! longest literal part as a required substring: a line without it is rejected by one
//! `memmem` search instead of a regex run, and the storage's block index gets a needle.

use std::borrow::Cow;

use memchr::memmem;
use regex::Regex;

use super::scratch_regex::ScratchRegex;

use super::ip::IpMatcher;
use super::pattern::Pattern;
use crate::ast::{LineFilter, LineFilterOp, LineFilterValue};
use crate::Error;

/// One alternative of a filter, answering "does the line contain / match it".
#[derive(Debug, Clone)]
enum Matcher {
    /// Always true (`|= ""`, `|~ ""`).
    All,
    /// Case-sensitive substring.
    Substring(Box<memmem::Finder<'static>>),
    /// ASCII case-insensitive substring; `fallback` handles non-ASCII lines.
    CaseInsensitive {
        lower: Vec<u8>,
        fallback: ScratchRegex,
    },
    /// Unanchored regex, and a substring every match contains (see [`required_literal`]).
    Regex {
        re: ScratchRegex,
        required: Option<Box<memmem::Finder<'static>>>,
    },
    /// Pattern filter.
    Pattern(Pattern),
    /// `ip("…")`.
    Ip(IpMatcher),
}

impl Matcher {
    fn matches(&self, line: &str) -> bool {
        match self {
            Matcher::All => true,
            Matcher::Substring(f) => f.find(line.as_bytes()).is_some(),
            Matcher::CaseInsensitive { lower, fallback } => {
                if line.is_ascii() {
                    contains_ascii_ci(line.as_bytes(), lower)
                } else {
                    fallback.is_match(line)
                }
            }
            Matcher::Regex { re, required } => {
                required
                    .as_ref()
                    .is_none_or(|f| f.find(line.as_bytes()).is_some())
                    && re.is_match(line)
            }
            Matcher::Pattern(p) => p.test(line.as_bytes()),
            Matcher::Ip(ip) => ip.matches_line(line.as_bytes()),
        }
    }
}

/// ASCII case-insensitive substring search; `needle` is lowercase.
fn contains_ascii_ci(hay: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else {
        return true;
    };
    if hay.len() < needle.len() {
        return false;
    }
    let last_start = hay.len() - needle.len();
    let upper = first.to_ascii_uppercase();
    let mut pos = 0;
    while pos <= last_start {
        let Some(i) = memchr::memchr2(first, upper, &hay[pos..=last_start]) else {
            return false;
        };
        let s = pos + i;
        if hay[s..s + needle.len()].eq_ignore_ascii_case(needle) {
            return true;
        }
        pos = s + 1;
    }
    false
}

/// Regex metacharacters of RE2 syntax; a pattern without any is a plain literal.
fn is_plain_literal(s: &str) -> bool {
    !s.bytes().any(|c| {
        matches!(
            c,
            b'\\'
                | b'.'
                | b'+'
                | b'*'
                | b'?'
                | b'('
                | b')'
                | b'|'
                | b'['
                | b']'
                | b'{'
                | b'}'
                | b'^'
                | b'$'
        )
    })
}

/// Rewrite Go RE2 syntax where the `regex` crate differs: Go's Perl classes (`\d \w \s`
/// and negations) and word boundaries are ASCII-only, the crate's are Unicode-aware.
/// Nested classes are valid in the crate's syntax, so `[\d_]` becomes `[[0-9]_]`.
pub(crate) fn go_regex(src: &str) -> Cow<'_, str> {
    if !src.contains('\\') {
        return Cow::Borrowed(src);
    }
    let mut out = String::with_capacity(src.len() + 16);
    let mut chars = src.chars();
    let mut class_depth = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(n) = chars.next() else {
                    out.push('\\');
                    break;
                };
                match n {
                    'd' => out.push_str("[0-9]"),
                    'D' => out.push_str("[^0-9]"),
                    'w' => out.push_str("[0-9A-Za-z_]"),
                    'W' => out.push_str("[^0-9A-Za-z_]"),
                    's' => out.push_str(r"[\t\n\f\r ]"),
                    'S' => out.push_str(r"[^\t\n\f\r ]"),
                    'b' if class_depth == 0 => out.push_str(r"(?-u:\b)"),
                    'B' if class_depth == 0 => out.push_str(r"(?-u:\B)"),
                    // `\Q…\E` quotes a literal in RE2; the crate has no such syntax.
                    'Q' => {
                        let rest = chars.as_str();
                        let (lit, tail) = match rest.find(r"\E") {
                            Some(i) => (&rest[..i], &rest[i + 2..]),
                            None => (rest, ""),
                        };
                        out.push_str(&regex::escape(lit));
                        chars = tail.chars();
                    }
                    _ => {
                        out.push('\\');
                        out.push(n);
                    }
                }
            }
            '[' => {
                class_depth += 1;
                out.push(c);
            }
            ']' => {
                class_depth = class_depth.saturating_sub(1);
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Compile a regex (Go RE2 syntax) with Loki's error wording.
pub(crate) fn compile_regex(src: &str) -> Result<Regex, Error> {
    Regex::new(&go_regex(src))
        .map_err(|e| Error::Validate(format!("error parsing regexp: {}", regex_error(&e))))
}

/// [`compile_regex`] as a [`ScratchRegex`] (for regexes run on every line).
fn scratch_regex(src: &str) -> Result<ScratchRegex, Error> {
    ScratchRegex::new(&compile_regex(src)?)
}

/// The first line of a `regex` error, which names the problem (the rest is a caret
/// diagram that does not fit in a one-line message).
pub(crate) fn regex_error(e: &regex::Error) -> String {
    let s = e.to_string();
    let lines: Vec<&str> = s.lines().collect();
    lines
        .iter()
        .rev()
        .find(|l| l.starts_with("error:"))
        .map(|l| l.trim_start_matches("error:").trim().to_string())
        .unwrap_or(s)
}

fn compile_regex_matcher(src: &str) -> Result<Matcher, Error> {
    if src.is_empty() {
        return Ok(Matcher::All);
    }
    if is_plain_literal(src) {
        return Ok(Matcher::Substring(Box::new(
            memmem::Finder::new(src.as_bytes()).into_owned(),
        )));
    }
    if let Some(lit) = src.strip_prefix("(?i)") {
        if !lit.is_empty() && is_plain_literal(lit) && lit.is_ascii() {
            return Ok(Matcher::CaseInsensitive {
                lower: lit.to_ascii_lowercase().into_bytes(),
                fallback: scratch_regex(src)?,
            });
        }
    }
    let re = scratch_regex(src)?;
    let required =
        required_literal(src).map(|lit| Box::new(memmem::Finder::new(&lit).into_owned()));
    Ok(Matcher::Regex { re, required })
}

/// The longest run of literal bytes among the top-level parts of a regex that is a
/// sequence (a concatenation): every match contains it. `None` when there is none of at
/// least 2 bytes, or the regex is anything else (an alternation, a repetition, …).
/// Case-insensitive parts are classes, not literals, so they never count.
fn required_literal(src: &str) -> Option<Vec<u8>> {
    use regex_syntax::hir::HirKind;
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(&go_regex(src))
        .ok()?;
    let HirKind::Concat(parts) = hir.kind() else {
        return None;
    };
    let mut best: Vec<u8> = Vec::new();
    let mut run: Vec<u8> = Vec::new();
    for part in parts
        .iter()
        .chain(std::iter::once(&regex_syntax::hir::Hir::fail()))
    {
        match part.kind() {
            HirKind::Literal(lit) => run.extend_from_slice(&lit.0),
            _ => {
                if run.len() > best.len() {
                    best = std::mem::take(&mut run);
                }
                run.clear();
            }
        }
    }
    (best.len() >= 2).then_some(best)
}

/// One compiled line filter: `op` and its `or` alternatives.
#[derive(Debug, Clone)]
struct CompiledFilter {
    /// `true` for `!=`, `!~`, `!>`: the line must match none of the alternatives.
    negated: bool,
    alternatives: Vec<Matcher>,
}

impl CompiledFilter {
    fn new(f: &LineFilter) -> Result<CompiledFilter, Error> {
        let negated = matches!(
            f.op,
            LineFilterOp::NotContains | LineFilterOp::NotRegex | LineFilterOp::NotPattern
        );
        let mut alternatives = Vec::with_capacity(f.values.len());
        for v in &f.values {
            let m = match (f.op, v) {
                (LineFilterOp::Contains | LineFilterOp::NotContains, LineFilterValue::Str(s)) => {
                    if s.is_empty() {
                        Matcher::All
                    } else {
                        Matcher::Substring(Box::new(memmem::Finder::new(s.as_bytes()).into_owned()))
                    }
                }
                (LineFilterOp::Regex | LineFilterOp::NotRegex, LineFilterValue::Str(s)) => {
                    compile_regex_matcher(s)?
                }
                (LineFilterOp::Pattern | LineFilterOp::NotPattern, LineFilterValue::Str(s)) => {
                    Matcher::Pattern(Pattern::for_filter(s).map_err(Error::Validate)?)
                }
                (LineFilterOp::Contains | LineFilterOp::NotContains, LineFilterValue::Ip(s)) => {
                    Matcher::Ip(IpMatcher::new(s).map_err(Error::Validate)?)
                }
                (_, LineFilterValue::Ip(_)) => {
                    return Err(Error::Validate("ip: invalid operation".into()))
                }
            };
            alternatives.push(m);
        }
        Ok(CompiledFilter {
            negated,
            alternatives,
        })
    }

    #[inline]
    fn matches(&self, line: &str) -> bool {
        let any = self.alternatives.iter().any(|m| m.matches(line));
        any != self.negated
    }
}

/// A compiled sequence of line filters, ANDed. Vectorisable: callers loop over an Arrow
/// string array calling [`LineFilterChain::matches`].
#[derive(Debug, Clone, Default)]
pub struct LineFilterChain {
    filters: Vec<CompiledFilter>,
}

impl LineFilterChain {
    /// Compile the filters.
    pub fn new(filters: &[LineFilter]) -> Result<LineFilterChain, Error> {
        let filters = filters
            .iter()
            .map(CompiledFilter::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LineFilterChain { filters })
    }

    /// True when there is no filter (every line matches).
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// True when the line passes every filter.
    #[inline]
    pub fn matches(&self, line: &str) -> bool {
        self.filters.iter().all(|f| f.matches(line))
    }

    /// Byte strings every line passing the chain contains (case-sensitive): the literal of
    /// each positive filter with a single substring alternative (`|= "x"`, or `|~ "x"` with
    /// a plain-literal regex), and the required literal of a single regex alternative (see
    /// [`required_literal`]). A scan may skip any data known to lack one of them.
    pub fn required_substrings(&self) -> Vec<Vec<u8>> {
        self.filters
            .iter()
            .filter(|f| !f.negated && f.alternatives.len() == 1)
            .filter_map(|f| match &f.alternatives[0] {
                Matcher::Substring(finder) => Some(finder.needle().to_vec()),
                Matcher::Regex {
                    required: Some(finder),
                    ..
                } => Some(finder.needle().to_vec()),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn push(&mut self, f: &LineFilter) -> Result<(), Error> {
        self.filters.push(CompiledFilter::new(f)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lf(op: LineFilterOp, vals: &[&str]) -> LineFilter {
        LineFilter {
            op,
            values: vals
                .iter()
                .map(|v| LineFilterValue::Str(v.to_string()))
                .collect(),
        }
    }

    fn run(chain: &LineFilterChain, lines: &[&'static str]) -> Vec<&'static str> {
        lines.iter().copied().filter(|l| chain.matches(l)).collect()
    }

    #[test]
    fn or_alternatives_then_negation() -> Result<(), Error> {
        // §13 case 1: |= "err" or "warn" != "debug"
        let chain = LineFilterChain::new(&[
            lf(LineFilterOp::Contains, &["err", "warn"]),
            lf(LineFilterOp::NotContains, &["debug"]),
        ])?;
        assert_eq!(run(&chain, &["err x", "warn debug", "info"]), vec!["err x"]);
        Ok(())
    }

    #[test]
    fn required_substrings_come_only_from_positive_single_literals() -> Result<(), Error> {
        let chain = LineFilterChain::new(&[
            lf(LineFilterOp::Contains, &["needle"]),
            lf(LineFilterOp::Contains, &["a", "b"]),
            lf(LineFilterOp::NotContains, &["skip"]),
            lf(LineFilterOp::Regex, &["plain-literal"]),
            lf(LineFilterOp::Regex, &["x.*y"]),
            lf(LineFilterOp::Regex, &["(?i)mixed"]),
            lf(LineFilterOp::Regex, &[r#"" 5\d\d "#]),
            lf(LineFilterOp::Regex, &["error.*time(out)?"]),
            lf(LineFilterOp::Regex, &["ab|cd"]),
            lf(LineFilterOp::NotRegex, &["never.*here"]),
        ])?;
        assert_eq!(
            chain.required_substrings(),
            vec![
                b"needle".to_vec(),
                b"plain-literal".to_vec(),
                b"\" 5".to_vec(),
                b"error".to_vec()
            ]
        );
        Ok(())
    }

    #[test]
    fn required_literals_of_regexes_are_in_every_match() -> Result<(), Error> {
        assert_eq!(required_literal(r"ab\d+cde"), Some(b"cde".to_vec()));
        assert_eq!(
            required_literal(r"^GET /api/\w+ HTTP"),
            Some(b"GET /api/".to_vec())
        );
        // Case-insensitive parts, alternations, repetitions, short parts: nothing.
        assert_eq!(required_literal("(?i)abc.*def"), None);
        assert_eq!(required_literal("abc|def"), None);
        assert_eq!(required_literal("(abc)*"), None);
        assert_eq!(required_literal(r"a\d"), None);
        // The pre-check never changes an answer.
        let lines = [
            r#"1.2.3.4 - - [x] "GET / HTTP/1.1" 503 12"#,
            r#"1.2.3.4 - - [x] "GET / HTTP/1.1" 200 12"#,
            r#"" 5xx "#,
            "",
        ];
        for src in [r#"" 5\d\d "#, r"HTTP/\d\.\d.? 5", r"\d+ 12$"] {
            let re = Regex::new(&go_regex(src)).map_err(|e| Error::Validate(e.to_string()))?;
            let chain = LineFilterChain::new(&[lf(LineFilterOp::Regex, &[src])])?;
            for l in lines {
                assert_eq!(chain.matches(l), re.is_match(l), "{src} on {l}");
            }
        }
        Ok(())
    }

    #[test]
    fn negated_or_means_neither() -> Result<(), Error> {
        // §13 case 2: != "x" or "y"
        let chain = LineFilterChain::new(&[lf(LineFilterOp::NotContains, &["x", "y"])])?;
        assert_eq!(run(&chain, &["x1", "y1", "z1"]), vec!["z1"]);
        Ok(())
    }

    #[test]
    fn empty_substrings() -> Result<(), Error> {
        let all = LineFilterChain::new(&[lf(LineFilterOp::Contains, &[""])])?;
        assert!(all.matches("anything") && all.matches(""));
        let none = LineFilterChain::new(&[lf(LineFilterOp::NotContains, &[""])])?;
        assert!(!none.matches("anything"));
        Ok(())
    }

    #[test]
    fn regex_filters() -> Result<(), Error> {
        let ci = LineFilterChain::new(&[lf(LineFilterOp::Regex, &["(?i)MALLORY"])])?;
        assert!(ci.matches("user mallory logged in"));
        assert!(ci.matches("user MaLLoRy"));
        assert!(!ci.matches("user alice"));
        assert!(ci.matches("ünï mallory"));
        let re = LineFilterChain::new(&[lf(LineFilterOp::Regex, &["POST|PUT"])])?;
        assert!(re.matches("\"PUT /x\"") && !re.matches("GET"));
        let nre = LineFilterChain::new(&[lf(LineFilterOp::NotRegex, &[r#"" (2|3)\d\d "#])])?;
        assert!(!nre.matches(r#""GET /" 200 12"#));
        assert!(nre.matches(r#""GET /" 404 12"#));
        let anchored = LineFilterChain::new(&[lf(LineFilterOp::Regex, &["evicted.*=0$"])])?;
        assert!(anchored.matches("pods evicted count=0"));
        assert!(!anchored.matches("pods evicted count=01"));
        assert!(LineFilterChain::new(&[lf(LineFilterOp::Regex, &["(unclosed"])]).is_err());
        Ok(())
    }

    #[test]
    fn ip_and_pattern_filters() -> Result<(), Error> {
        let ip = LineFilterChain::new(&[LineFilter {
            op: LineFilterOp::Contains,
            values: vec![LineFilterValue::Ip("192.168.0.0/16".into())],
        }])?;
        assert!(ip.matches("192.168.1.1 - - GET"));
        assert!(!ip.matches("10.0.0.1 - - GET"));
        let pat = LineFilterChain::new(&[lf(LineFilterOp::NotPattern, &["<_> error <_>"])])?;
        assert!(pat.matches("all good"));
        assert!(!pat.matches("an error here"));
        Ok(())
    }

    #[test]
    fn perl_classes_are_ascii_like_go() -> Result<(), Error> {
        let d = compile_regex(r"^\d+$")?;
        assert!(d.is_match("123"));
        assert!(!d.is_match("١٢٣")); // Arabic-Indic digits are not \d in Go
        let w = compile_regex(r"^[\w.]+\s\S$")?;
        assert!(w.is_match("a_b.c x"));
        assert!(!w.is_match("é x"));
        let b = compile_regex(r"\bfoo\b")?;
        assert!(b.is_match("a foo b"));
        assert!(!b.is_match("afoo"));
        assert_eq!(go_regex(r"a\\d"), r"a\\d");
        assert_eq!(go_regex(r"[^\D]"), r"[^[^0-9]]");
        assert!(compile_regex(r"[^\D]")?.is_match("5"));
        let q = compile_regex(r"^\Qa.b\E\d$")?;
        assert!(q.is_match("a.b1") && !q.is_match("axb1"));
        assert!(compile_regex(r"\Q(x")?.is_match("(x"));
        Ok(())
    }

    #[test]
    fn ascii_case_insensitive_search() {
        assert!(contains_ascii_ci(b"Hello World", b"world"));
        assert!(contains_ascii_ci(b"WORLD", b"world"));
        assert!(!contains_ascii_ci(b"worl", b"world"));
        assert!(contains_ascii_ci(b"x", b""));
    }
}
