//! `| logfmt [--strict] [--keep-empty] [a="key", b]`: a decoder with Loki's exact
//! tokenisation (adapted go-logfmt) and error texts (`logfmt syntax error at pos N : …`).

use std::borrow::Cow;

use super::hints::LabelHints;
use super::labels::{is_label_name, sanitize_label_key, LabelsBuilder, DUPLICATE_SUFFIX};
use crate::ast::LabelExtraction;
use crate::Error;

/// `__error__` value of logfmt failures.
pub(crate) const ERR_LOGFMT: &str = "LogfmtParserErr";

/// Streaming logfmt decoder over one line.
pub(crate) struct Decoder<'a> {
    line: &'a str,
    pos: usize,
    pub(crate) key: Option<&'a str>,
    pub(crate) value: Option<Cow<'a, str>>,
    /// The last syntax error. Only `--strict` reports it, so its text is made on demand
    /// ([`SyntaxError::message`]): a non-strict parse of a line that is not logfmt meets
    /// an error at almost every pair.
    pub(crate) err: Option<SyntaxError>,
}

/// A logfmt syntax error: where, and what.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SyntaxError {
    /// 0-based byte offset (Loki reports it 1-based).
    pos: usize,
    what: SyntaxErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum SyntaxErrorKind {
    Unexpected(u8),
    Other(&'static str),
}

impl SyntaxError {
    /// Loki's text of the error.
    pub(crate) fn message(&self) -> String {
        match self.what {
            SyntaxErrorKind::Unexpected(c) => format!(
                "logfmt syntax error at pos {} : unexpected {}",
                self.pos + 1,
                go_quote_byte(c)
            ),
            SyntaxErrorKind::Other(msg) => {
                format!("logfmt syntax error at pos {} : {}", self.pos + 1, msg)
            }
        }
    }
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(line: &'a str) -> Decoder<'a> {
        Decoder {
            line,
            pos: 0,
            key: None,
            value: None,
            err: None,
        }
    }

    pub(crate) fn eol(&self) -> bool {
        self.pos >= self.line.len()
    }

    fn syntax_error(&mut self, msg: &'static str) {
        self.err = Some(SyntaxError {
            pos: self.pos,
            what: SyntaxErrorKind::Other(msg),
        });
    }

    fn unexpected_byte(&mut self, c: u8) {
        self.err = Some(SyntaxError {
            pos: self.pos,
            what: SyntaxErrorKind::Unexpected(c),
        });
    }

    fn skip_value(&mut self) -> bool {
        let b = self.line.as_bytes();
        match b[self.pos..].iter().position(|&c| c <= b' ') {
            Some(p) => self.pos += p,
            None => self.pos = b.len(),
        }
        false
    }

    /// Advance to the next pair; `false` on garbage or error (the caller decides whether
    /// to go on, as Loki's non-strict mode does).
    pub(crate) fn scan_keyval(&mut self) -> bool {
        self.key = None;
        self.value = None;
        let b = self.line.as_bytes();
        // skip garbage
        match b[self.pos..].iter().position(|&c| c > b' ') {
            Some(p) => self.pos += p,
            None => {
                self.pos = b.len();
                return false;
            }
        }
        // key
        let start = self.pos;
        let mut i = self.pos;
        loop {
            if i >= b.len() {
                self.pos = b.len();
                if self.pos > start {
                    self.key = Some(&self.line[start..self.pos]);
                }
                return true;
            }
            let c = b[i];
            if c == b'=' {
                self.pos = i;
                if self.pos > start {
                    self.key = Some(&self.line[start..self.pos]);
                }
                if self.key.is_none() {
                    self.unexpected_byte(c);
                    return self.skip_value();
                }
                break;
            } else if c == b'"' {
                self.pos = i;
                self.unexpected_byte(c);
                return self.skip_value();
            } else if c <= b' ' {
                self.pos = i;
                if self.pos > start {
                    self.key = Some(&self.line[start..self.pos]);
                }
                return true;
            }
            i += 1;
        }
        // equal
        self.pos += 1;
        if self.pos >= b.len() {
            return true;
        }
        let c = b[self.pos];
        if c <= b' ' {
            return true;
        }
        if c == b'"' {
            return self.quoted_value();
        }
        // bare value
        let start = self.pos;
        let mut i = self.pos;
        while i < b.len() {
            let c = b[i];
            if c == b'=' || c == b'"' {
                self.pos = i;
                self.unexpected_byte(c);
                return self.skip_value();
            }
            if c <= b' ' {
                self.pos = i;
                if self.pos > start {
                    self.value = Some(Cow::Borrowed(&self.line[start..self.pos]));
                }
                return true;
            }
            i += 1;
        }
        self.pos = b.len();
        if self.pos > start {
            self.value = Some(Cow::Borrowed(&self.line[start..self.pos]));
        }
        true
    }

    fn quoted_value(&mut self) -> bool {
        let b = self.line.as_bytes();
        let start = self.pos;
        let mut has_esc = false;
        let mut esc = false;
        for (p, &c) in b[self.pos + 1..].iter().enumerate() {
            if esc {
                esc = false;
            } else if c == b'\\' {
                has_esc = true;
                esc = true;
            } else if c == b'"' {
                self.pos += p + 2;
                if has_esc {
                    match unquote(&self.line[start..self.pos]) {
                        Some(v) => self.value = Some(Cow::Owned(v)),
                        None => {
                            self.syntax_error("invalid quoted value");
                            return false;
                        }
                    }
                } else {
                    let s = start + 1;
                    let e = self.pos - 1;
                    if e > s {
                        self.value = Some(Cow::Borrowed(&self.line[s..e]));
                    }
                }
                return true;
            }
        }
        self.pos = b.len();
        self.syntax_error("unterminated quoted value");
        false
    }
}

/// Go's `%q` of a byte (`'"'`, `'='`).
fn go_quote_byte(c: u8) -> String {
    match c {
        b'\'' => "'\\''".to_string(),
        b'\\' => "'\\\\'".to_string(),
        c if c.is_ascii_graphic() || c == b' ' => format!("'{}'", c as char),
        c => format!("'\\x{c:02x}'"),
    }
}

/// go-logfmt's `unquoteBytes`: JSON-style escapes inside a quoted value.
fn unquote(quoted: &str) -> Option<String> {
    let inner = quoted.get(1..quoted.len().checked_sub(1)?)?;
    super::json::unescape(inner)
}

/// `| logfmt` with optional flags and parameters.
#[derive(Debug, Clone)]
pub(crate) struct LogfmtParser {
    strict: bool,
    keep_empty: bool,
    /// (destination, source key) for the parameter form.
    params: Vec<(String, String)>,
}

impl LogfmtParser {
    pub(crate) fn new(
        strict: bool,
        keep_empty: bool,
        params: &[LabelExtraction],
    ) -> Result<LogfmtParser, Error> {
        let mut out = Vec::with_capacity(params.len());
        for p in params {
            if !super::is_valid_label_name(&p.name) {
                return Err(Error::Validate(format!(
                    "invalid extracted label name '{}'",
                    p.name
                )));
            }
            let src = p.expr.clone().unwrap_or_else(|| p.name.clone());
            out.push((p.name.clone(), src));
        }
        Ok(LogfmtParser {
            strict,
            keep_empty,
            params: out,
        })
    }

    /// `false` = the line is dropped (an early label filter did not match).
    pub(crate) fn process(&self, line: &str, lb: &mut LabelsBuilder, hints: &LabelHints) -> bool {
        if hints.no_labels(lb) {
            return true;
        }
        if self.params.is_empty() {
            self.process_all(line, lb, hints)
        } else {
            self.process_params(line, lb, hints);
            true
        }
    }

    fn process_all(&self, line: &str, lb: &mut LabelsBuilder, hints: &LabelHints) -> bool {
        // Reuse the builder's scratch string: no allocation per line in steady state.
        let mut key = std::mem::take(&mut lb.scratch_a);
        let keep = self.scan_all(line, lb, hints, &mut key);
        lb.scratch_a = key;
        keep
    }

    fn scan_all(
        &self,
        line: &str,
        lb: &mut LabelsBuilder,
        hints: &LabelHints,
        key: &mut String,
    ) -> bool {
        let mut dec = Decoder::new(line);
        while !dec.eol() {
            if !dec.scan_keyval() {
                if self.strict {
                    break;
                }
                continue;
            }
            let Some(raw) = dec.key else { continue };
            // A key that is already a valid label name is its own sanitized form: ask the
            // hints before copying it.
            if is_label_name(raw) && !hints.may_extract(raw) {
                continue;
            }
            sanitize_label_key(raw, key);
            if key.is_empty() {
                continue;
            }
            if lb.collides(key) {
                key.push_str(DUPLICATE_SUFFIX);
            }
            if !hints.should_extract(key) || lb.extracted(key) {
                continue;
            }
            let value = dec.value.as_deref().unwrap_or("");
            if !self.keep_empty && value.is_empty() {
                continue;
            }
            if value.contains('\u{fffd}') {
                lb.set_parsed(key, &value.replace('\u{fffd}', " "));
            } else {
                lb.set_parsed(key, value);
            }
            if !hints.should_continue(key, lb) {
                return false;
            }
            if hints.all_required_extracted(lb) {
                break;
            }
        }
        if self.strict {
            if let Some(e) = &dec.err {
                hints.add_err(lb, ERR_LOGFMT, Some(&e.message()));
                return hints.should_continue(super::labels::ERROR_LABEL, lb);
            }
        }
        true
    }

    fn process_params(&self, line: &str, lb: &mut LabelsBuilder, hints: &LabelHints) {
        for (id, _) in &self.params {
            if !lb.collides(id) {
                lb.set_parsed(id, "");
            }
        }
        let mut dec = Decoder::new(line);
        let mut key = String::new();
        while !dec.eol() {
            if !dec.scan_keyval() {
                if self.strict {
                    break;
                }
                continue;
            }
            let Some(raw) = dec.key else { continue };
            sanitize_label_key(raw, &mut key);
            if key.is_empty() {
                continue;
            }
            let Some((id, _)) = self
                .params
                .iter()
                .find(|(id, src)| *src == key || *id == key)
            else {
                continue;
            };
            let mut dst = id.clone();
            if lb.collides(&dst) {
                dst.push_str(DUPLICATE_SUFFIX);
            }
            let value = dec.value.as_deref().unwrap_or("");
            let value = if value.contains('\u{fffd}') {
                ""
            } else {
                value
            };
            lb.set_parsed(&dst, value);
        }
        if self.strict {
            if let Some(e) = &dec.err {
                hints.add_err(lb, ERR_LOGFMT, Some(&e.message()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn run(p: &LogfmtParser, stream: &[(&str, &str)], line: &str) -> Vec<(String, String)> {
        let mut lb = LabelsBuilder::new();
        lb.reset(&pairs(stream), &[]);
        assert!(p.process(line, &mut lb, &LabelHints::all()));
        lb.labels()
    }

    #[test]
    fn basic_pairs_quotes_and_collisions() -> Result<(), Error> {
        let p = LogfmtParser::new(false, false, &[])?;
        let got = run(
            &p,
            &[("level", "x")],
            r#"level=info msg="hello \"w\"" empty= bare dur=1.5s a.b=c"#,
        );
        assert_eq!(
            got,
            pairs(&[
                ("a_b", "c"),
                ("dur", "1.5s"),
                ("level", "x"),
                ("level_extracted", "info"),
                ("msg", "hello \"w\""),
            ])
        );
        Ok(())
    }

    #[test]
    fn keep_empty_and_duplicates() -> Result<(), Error> {
        let p = LogfmtParser::new(false, true, &[])?;
        let got = run(&p, &[], r#"a= b c="" a=2"#);
        assert_eq!(got, pairs(&[("a", ""), ("b", ""), ("c", "")]));
        Ok(())
    }

    #[test]
    fn non_strict_skips_garbage_strict_errors() -> Result<(), Error> {
        let p = LogfmtParser::new(false, false, &[])?;
        let line = r#"{"a":"b c"} x=1 "oops y=2"#;
        assert_eq!(run(&p, &[], line), pairs(&[("x", "1"), ("y", "2")]));
        let s = LogfmtParser::new(true, false, &[])?;
        let got = run(&s, &[], "x=1 y=\"unterminated");
        assert_eq!(
            got,
            pairs(&[
                ("__error__", "LogfmtParserErr"),
                (
                    "__error_details__",
                    "logfmt syntax error at pos 20 : unterminated quoted value"
                ),
                ("x", "1"),
            ])
        );
        let got = run(&s, &[], "a=1 b\"c=2 d=3");
        assert_eq!(
            got,
            pairs(&[
                ("__error__", "LogfmtParserErr"),
                (
                    "__error_details__",
                    "logfmt syntax error at pos 6 : unexpected '\"'"
                ),
                ("a", "1"),
            ])
        );
        Ok(())
    }

    #[test]
    fn parameter_form() -> Result<(), Error> {
        let p = LogfmtParser::new(
            false,
            false,
            &[
                LabelExtraction {
                    name: "lvl".into(),
                    expr: Some("level".into()),
                },
                LabelExtraction {
                    name: "missing".into(),
                    expr: None,
                },
            ],
        )?;
        let got = run(&p, &[], "level=info other=1");
        assert_eq!(got, pairs(&[("lvl", "info"), ("missing", "")]));
        Ok(())
    }
}
