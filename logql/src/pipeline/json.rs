//! `| json`, `| json a="path", b` and `| unpack`.
//!
//! Loki parses with buger/jsonparser, a lazy scanner: it validates only what it walks
//! over, so labels read before a syntax error are kept and the error text
//! (`__error_details__`) is one of jsonparser's messages. This module is a small scanner
//! with the same walk and the same messages; it never builds a DOM.

use std::borrow::Cow;

use super::hints::LabelHints;
use super::labels::{is_label_name, sanitize_label_key, LabelsBuilder, DUPLICATE_SUFFIX};
use crate::ast::LabelExtraction;
use crate::Error;

/// `__error__` value of JSON failures.
pub(crate) const ERR_JSON: &str = "JSONParserErr";

/// jsonparser's errors, with its exact messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonErr {
    Malformed,
    MalformedString,
    MalformedArray,
    MalformedObject,
    UnknownValueType,
    MalformedStringEscape,
    /// Not an error: every hinted label was found, stop walking.
    FoundAll,
    /// Not an error: an early label filter rejected the line.
    Mismatch,
}

impl JsonErr {
    pub(crate) fn message(self) -> &'static str {
        match self {
            JsonErr::Malformed => "Malformed JSON error",
            JsonErr::MalformedString => "Value is string, but can't find closing '\"' symbol",
            JsonErr::MalformedArray => "Value is array, but can't find closing ']' symbol",
            JsonErr::MalformedObject => {
                "Value looks like object, but can't find closing '}' symbol"
            }
            JsonErr::UnknownValueType => "Unknown value type",
            JsonErr::MalformedStringEscape => "Encountered an invalid escape sequence in a string",
            JsonErr::FoundAll => "found all required labels",
            JsonErr::Mismatch => "found a label with a matcher that didn't match",
        }
    }
}

/// JSON value kinds as jsonparser reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonType {
    String,
    Number,
    Object,
    Array,
    Boolean,
    Null,
}

/// Offset of the next non-whitespace byte.
#[inline]
fn next_token(data: &[u8]) -> Option<usize> {
    // Compact JSON has no whitespace between tokens: answer that case without a loop.
    match data.first() {
        Some(c) if *c > b' ' => Some(0),
        _ => data
            .iter()
            .position(|c| !matches!(c, b' ' | b'\n' | b'\r' | b'\t')),
    }
}

/// Index just past the closing quote of a string whose opening quote was already
/// consumed, and whether it contains escapes. A backslash escapes the next byte, so a quote
/// closes the string exactly when an even number of backslashes precede it (jsonparser's
/// rule); the search jumps between the only two bytes that matter.
fn string_end(data: &[u8]) -> (Option<usize>, bool) {
    let mut escaped = false;
    let mut i = 0;
    while let Some(p) = super::swar::find_either(&data[i..], b'"', b'\\') {
        let at = i + p;
        if data[at] == b'"' {
            return (Some(at + 1), escaped);
        }
        escaped = true;
        i = at + 2;
        if i > data.len() {
            break;
        }
    }
    (None, escaped)
}

/// End (exclusive) of a `{…}`/`[…]` block starting at `data[0]`.
fn block_end(data: &[u8], open: u8, close: u8) -> Option<usize> {
    let mut level = 0i32;
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'"' => {
                let (se, _) = string_end(&data[i + 1..]);
                i += se?;
            }
            c if c == open => level += 1,
            c if c == close => {
                level -= 1;
                if level == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn token_end(data: &[u8]) -> usize {
    data.iter()
        .position(|c| matches!(c, b' ' | b'\n' | b'\r' | b'\t' | b',' | b'}' | b']'))
        .unwrap_or(data.len())
}

/// The value starting at `data[off]`: (start, end, type); strings exclude their quotes.
fn get_type(data: &[u8], off: usize) -> Result<(usize, usize, JsonType), JsonErr> {
    match data[off] {
        b'"' => match string_end(&data[off + 1..]).0 {
            Some(e) => Ok((off + 1, off + e, JsonType::String)),
            None => Err(JsonErr::MalformedString),
        },
        b'[' => match block_end(&data[off..], b'[', b']') {
            Some(e) => Ok((off, off + e, JsonType::Array)),
            None => Err(JsonErr::MalformedArray),
        },
        b'{' => match block_end(&data[off..], b'{', b'}') {
            Some(e) => Ok((off, off + e, JsonType::Object)),
            None => Err(JsonErr::MalformedObject),
        },
        c => {
            let end = off + token_end(&data[off..]);
            let value = &data[off..end];
            let ty = match c {
                b't' | b'f' if value == b"true" || value == b"false" => JsonType::Boolean,
                b'u' | b'n' if value == b"null" => JsonType::Null,
                b'0'..=b'9' | b'-' => JsonType::Number,
                _ => return Err(JsonErr::UnknownValueType),
            };
            Ok((off, end, ty))
        }
    }
}

/// Value end offset as jsonparser's `Get` reports it: strings include the closing quote.
fn value_end(start_end_ty: (usize, usize, JsonType)) -> usize {
    let (_, end, ty) = start_end_ty;
    if ty == JsonType::String {
        end + 1
    } else {
        end
    }
}

/// jsonparser's `ObjectEach` over `data` (a `&str` so values can be borrowed as text).
/// The callback gets the unescaped key, the raw value text (strings without quotes) and
/// its type.
///
/// Generic over the callback so that it is inlined into the walk (one call per key
/// otherwise: a measurable share of `| json` on lines of a dozen short keys).
pub(crate) fn object_each<'a, F>(data: &'a str, cb: &mut F) -> Result<(), JsonErr>
where
    F: FnMut(&str, &'a str, JsonType) -> Result<(), JsonErr>,
{
    let b = data.as_bytes();
    let mut off = next_token(b).ok_or(JsonErr::MalformedObject)?;
    if b[off] != b'{' {
        return Err(JsonErr::MalformedObject);
    }
    off += 1;
    off += next_token(&b[off..]).ok_or(JsonErr::Malformed)?;
    if b[off] == b'}' {
        return Ok(());
    }
    while off < b.len() {
        match b[off] {
            b'"' => off += 1,
            b'}' => return Ok(()),
            _ => return Err(JsonErr::MalformedObject),
        }
        let (end, esc) = string_end(&b[off..]);
        let end = end.ok_or(JsonErr::Malformed)?;
        let raw_key = &data[off..off + end - 1];
        off += end;
        let key: Cow<'_, str> = if esc {
            Cow::Owned(unescape(raw_key).ok_or(JsonErr::MalformedStringEscape)?)
        } else {
            Cow::Borrowed(raw_key)
        };
        off += next_token(&b[off..]).ok_or(JsonErr::Malformed)?;
        if b[off] != b':' {
            return Err(JsonErr::Malformed);
        }
        off += 1;
        off += next_token(&b[off..]).ok_or(JsonErr::Malformed)?;
        let v = get_type(b, off)?;
        cb(&key, &data[v.0..v.1], v.2)?;
        off = value_end(v);
        off += next_token(&b[off..]).ok_or(JsonErr::MalformedArray)?;
        match b[off] {
            b'}' => return Ok(()),
            b',' => off += 1,
            _ => return Err(JsonErr::MalformedObject),
        }
        off += next_token(&b[off..]).ok_or(JsonErr::MalformedArray)?;
    }
    Err(JsonErr::MalformedObject)
}

/// jsonparser's `Unescape` (`None` on an invalid escape); lone surrogates become U+FFFD.
pub(crate) fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.char_indices().peekable();
    let b = s.as_bytes();
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let (_, e) = chars.next()?;
        match e {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '/' => out.push('/'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let hex = |at: usize| -> Option<u32> {
                    let h = s.get(at..at + 4)?;
                    // from_str_radix would accept a sign; JSON wants exactly 4 hex digits.
                    if !h.bytes().all(|c| c.is_ascii_hexdigit()) {
                        return None;
                    }
                    u32::from_str_radix(h, 16).ok()
                };
                let first = hex(i + 2)?;
                for _ in 0..4 {
                    chars.next();
                }
                if (0xD800..0xDC00).contains(&first) {
                    // A high surrogate must be followed by `\u` + low surrogate.
                    let next = i + 6;
                    if b.get(next) == Some(&b'\\') && b.get(next + 1) == Some(&b'u') {
                        if let Some(low) = hex(next + 2) {
                            if (0xDC00..0xE000).contains(&low) {
                                let cp = 0x10000 + ((first - 0xD800) << 10) + (low - 0xDC00);
                                out.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
                                for _ in 0..6 {
                                    chars.next();
                                }
                                continue;
                            }
                        }
                    }
                    out.push('\u{fffd}');
                } else {
                    out.push(char::from_u32(first).unwrap_or('\u{fffd}'));
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Loki's `unescapeJSONString`: "" on a bad escape; U+FFFD becomes a space.
fn label_string(raw: &str) -> Cow<'_, str> {
    let v: Cow<'_, str> = if raw.contains('\\') {
        match unescape(raw) {
            Some(s) => Cow::Owned(s),
            None => return Cow::Borrowed(""),
        }
    } else {
        Cow::Borrowed(raw)
    };
    if v.contains('\u{fffd}') {
        Cow::Owned(v.replace('\u{fffd}', " "))
    } else {
        v
    }
}

/// Whether `| json` may read `line` by searching for keys ([`JsonParser::process_flat`]):
/// the line is an object that parses without error, with no backslash anywhere, no value
/// that is an object or array, every key a label name (its own sanitized form), and no
/// `"` outside its keys and string values. In such a line every quote opens or closes a
/// string, so `"key"` followed by `:` occurs exactly where the walk meets key `key`, and
/// its value ends at the next quote or delimiter. `None` when the line is not flat;
/// otherwise whether a key starts with `__`, the prefix of Loki's reserved labels
/// (`__error__`), which queries often name and flat lines rarely have.
pub(crate) fn flat_object(line: &str) -> Option<FlatObject> {
    let b = line.as_bytes();
    if memchr::memchr(b'\\', b).is_some() {
        return None;
    }
    let mut quoted = 0usize;
    let mut reserved_keys = false;
    let walked = object_each(line, &mut |key, _, ty| {
        reserved_keys |= key.starts_with("__");
        match ty {
            JsonType::Object | JsonType::Array => return Err(JsonErr::Malformed),
            JsonType::String => quoted += 2,
            JsonType::Number | JsonType::Boolean | JsonType::Null => quoted += 1,
        }
        if is_label_name(key) {
            Ok(())
        } else {
            Err(JsonErr::Malformed)
        }
    });
    (walked.is_ok() && memchr::memchr_iter(b'"', b).count() == 2 * quoted)
        .then_some(FlatObject { reserved_keys })
}

/// Whether `| json` extracting every label walks all of `line` without a syntax error.
/// That walk enters every nested object and reports only what [`object_each`] meets, so
/// this walk, which sets no label, fails exactly where it would. On such a line a hinted
/// walk ([`JsonParser::process`] with hints) sets each hinted label as the whole walk
/// does: first occurrence wins, and no error label can appear later.
pub(crate) fn walks_cleanly(line: &str) -> bool {
    fn walk(data: &str) -> Result<(), JsonErr> {
        object_each(data, &mut |_, value, ty| match ty {
            JsonType::Object => walk(value),
            _ => Ok(()),
        })
    }
    walk(line).is_ok()
}

/// What [`flat_object`] found about a flat line.
pub(crate) struct FlatObject {
    /// Some key starts with `__`.
    pub(crate) reserved_keys: bool,
}

/// The first value of a top-level key of a [`flat_object`] line that sets a label (not
/// `null`): (offset of the key, raw value text, type). `quoted_key` finds `"key"`.
fn flat_value<'a>(
    line: &'a str,
    quoted_key: &memchr::memmem::Finder<'_>,
) -> Option<(usize, &'a str, JsonType)> {
    let b = line.as_bytes();
    let mut from = 0;
    while let Some(p) = quoted_key.find(&b[from..]) {
        let at = from + p;
        from = at + 1;
        let mut off = at + quoted_key.needle().len();
        off += next_token(&b[off..])?;
        if b[off] != b':' {
            // A string value equal to the key: skip it.
            continue;
        }
        off += 1;
        off += next_token(&b[off..])?;
        let (start, end, ty) = get_type(b, off).ok()?;
        if ty != JsonType::Null {
            return Some((at, line.get(start..end)?, ty));
        }
    }
    None
}

/// Loki's `appendSanitized`: append a sanitized key part to a prefix.
fn append_sanitized(to: &mut String, key: &str) {
    let key = key.trim_matches(super::labels::is_go_space);
    if key.is_empty() {
        return;
    }
    if to.is_empty() && key.as_bytes()[0].is_ascii_digit() {
        to.push('_');
    }
    for c in key.chars() {
        to.push(if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        });
    }
}

/// Set an implicitly parsed label: suffix on collision, skip if not hinted or already
/// extracted (first writer wins). `false` when an early label filter rejects the line.
#[must_use]
pub(crate) fn set_implicit(
    lb: &mut LabelsBuilder,
    hints: &LabelHints,
    name: &mut String,
    value: &str,
) -> bool {
    if lb.collides(name) {
        name.push_str(DUPLICATE_SUFFIX);
    }
    if !hints.should_extract(name) || lb.extracted(name) {
        return true;
    }
    lb.set_parsed(name, value);
    hints.should_continue(name, lb)
}

/// `| json` without parameters.
#[derive(Debug, Clone, Default)]
pub(crate) struct JsonParser;

impl JsonParser {
    /// `false` = the line is dropped (an early label filter did not match).
    pub(crate) fn process(&self, line: &str, lb: &mut LabelsBuilder, hints: &LabelHints) -> bool {
        if hints.no_labels(lb) {
            return true;
        }
        // Reuse the builder's scratch strings: no allocation per line in steady state.
        let mut prefix = std::mem::take(&mut lb.scratch_a);
        let mut name = std::mem::take(&mut lb.scratch_b);
        prefix.clear();
        let mut settled = false;
        let r = Self::walk(line, lb, hints, &mut prefix, &mut name, &mut settled);
        lb.scratch_a = prefix;
        lb.scratch_b = name;
        match r {
            Ok(()) | Err(JsonErr::FoundAll) => {}
            Err(JsonErr::Mismatch) => return false,
            Err(e) => hints.add_err(lb, ERR_JSON, Some(e.message())),
        }
        true
    }

    /// [`Self::process`] for a line [`flat_object`] accepted, with the same result: each
    /// wanted label is read at the first occurrence of its key, found by substring
    /// search, instead of walking the whole line. Such a line cannot fail to parse, so
    /// the walk would only have set labels (first occurrence of a key wins, `null` sets
    /// nothing) and run early label filters, which this does too. Without
    /// `reserved_keys` (see [`FlatObject`]), keys starting with `__` are not searched for.
    pub(crate) fn process_flat(
        &self,
        line: &str,
        lb: &mut LabelsBuilder,
        hints: &LabelHints,
        reserved_keys: bool,
    ) -> bool {
        if hints.is_all() {
            return self.process(line, lb, hints);
        }
        if hints.no_labels(lb) {
            return true;
        }
        for (name, finder) in hints.required_keys() {
            if lb.extracted(name) {
                continue;
            }
            // Keys that set label `name`: `name` itself unless a stream or metadata label
            // shadows it, and `<base>` whose label is renamed `<base>_extracted` = `name`.
            let own = (!lb.collides(name)).then_some((name, finder));
            let renamed = name
                .strip_suffix(DUPLICATE_SUFFIX)
                .filter(|base| lb.collides(base))
                .and_then(|base| hints.required_keys().find(|(n, _)| *n == base));
            let found = [own, renamed]
                .into_iter()
                .flatten()
                .filter(|(key, _)| reserved_keys || !key.starts_with("__"))
                .filter_map(|(_, f)| flat_value(line, f))
                .min_by_key(|(at, _, _)| *at);
            let Some((_, value, ty)) = found else {
                continue;
            };
            let text: Cow<'_, str> = match ty {
                JsonType::String => label_string(value),
                JsonType::Boolean => Cow::Borrowed(if value == "true" { "true" } else { "false" }),
                _ => Cow::Borrowed(value),
            };
            lb.set_parsed(name, &text);
            if !hints.should_continue(name, lb) {
                return false;
            }
            if hints.all_required_extracted(lb) {
                break;
            }
        }
        true
    }

    fn walk(
        data: &str,
        lb: &mut LabelsBuilder,
        hints: &LabelHints,
        prefix: &mut String,
        name: &mut String,
        settled: &mut bool,
    ) -> Result<(), JsonErr> {
        object_each(data, &mut |key, value, ty| {
            match ty {
                JsonType::Object => {
                    let len = prefix.len();
                    if !key.trim_matches(super::labels::is_go_space).is_empty()
                        && !prefix.is_empty()
                    {
                        prefix.push('_');
                    }
                    append_sanitized(prefix, key);
                    let r = if hints.should_extract_prefix(prefix) {
                        Self::walk(value, lb, hints, prefix, name, settled)
                    } else {
                        Ok(())
                    };
                    prefix.truncate(len);
                    return r;
                }
                JsonType::Array | JsonType::Null => {
                    return if hints.all_required_extracted(lb) {
                        Err(JsonErr::FoundAll)
                    } else {
                        Ok(())
                    };
                }
                JsonType::String | JsonType::Number | JsonType::Boolean => {}
            }
            if *settled {
                // No key can change a required label any more (see
                // `LabelHints::all_settable_extracted`); the walk goes on only to find
                // the errors Loki's would.
                return Ok(());
            }
            if prefix.is_empty() {
                // A key that is already a valid label name is its own sanitized form:
                // ask the hints before copying it.
                let clean = is_label_name(key);
                if clean && !hints.may_extract(key) {
                    return Ok(());
                }
                sanitize_label_key(key, name);
                if name.is_empty() {
                    return if hints.all_required_extracted(lb) {
                        Err(JsonErr::FoundAll)
                    } else {
                        Ok(())
                    };
                }
            } else {
                name.clear();
                name.push_str(prefix);
                if !key.trim_matches(super::labels::is_go_space).is_empty() {
                    name.push('_');
                }
                append_sanitized(name, key);
            }
            // Most keys are wanted by no hint: skip them before any label lookup or
            // unescaping (the value text is only built for labels that are set).
            // Skipping sets nothing, so the required labels are still not all extracted
            // (once they are, the walk has already stopped with `FoundAll`).
            if !hints.may_extract(name) {
                return Ok(());
            }
            let value_text: Cow<'_, str> = match ty {
                JsonType::String => label_string(value),
                JsonType::Boolean => Cow::Borrowed(if value == "true" { "true" } else { "false" }),
                _ => Cow::Borrowed(value),
            };
            if !set_implicit(lb, hints, name, &value_text) {
                return Err(JsonErr::Mismatch);
            }
            if hints.all_required_extracted(lb) {
                return Err(JsonErr::FoundAll);
            }
            *settled = hints.all_settable_extracted(lb);
            Ok(())
        })
    }
}

/// One step of a `json a="x.y[0]"` path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathPart {
    Key(String),
    Index(usize),
}

/// Parse Loki's JSON expression syntax: `a.b`, `a[0]`, `["k"]`, `a["b c"].d`.
fn parse_path(src: &str) -> Result<Vec<PathPart>, String> {
    let err = || format!("cannot parse expression [{src}]: syntax error");
    let b = src.as_bytes();
    let mut parts = Vec::new();
    let mut i = 0;
    let mut expect_field = true;
    while i < b.len() {
        match b[i] {
            b'.' if !parts.is_empty() && !expect_field => {
                i += 1;
                expect_field = true;
                if i >= b.len() {
                    return Err(err());
                }
            }
            b'[' => {
                i += 1;
                if i < b.len() && b[i] == b'"' {
                    let start = i + 1;
                    let mut j = start;
                    while j < b.len() && b[j] != b'"' {
                        if b[j] == b'\\' {
                            j += 1;
                        }
                        j += 1;
                    }
                    if j >= b.len() || b.get(j + 1) != Some(&b']') {
                        return Err(err());
                    }
                    let key = unescape(&src[start..j]).ok_or_else(err)?;
                    parts.push(PathPart::Key(key));
                    i = j + 2;
                } else {
                    let start = i;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    if i == start || b.get(i) != Some(&b']') {
                        return Err(err());
                    }
                    let n = src[start..i].parse().map_err(|_| err())?;
                    parts.push(PathPart::Index(n));
                    i += 1;
                }
                expect_field = false;
            }
            c if expect_field && (c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80) => {
                let start = i;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'_'
                        || b[i] == b'-'
                        || b[i] >= 0x80)
                {
                    i += 1;
                }
                parts.push(PathPart::Key(src[start..i].to_string()));
                expect_field = false;
            }
            _ => return Err(err()),
        }
    }
    if parts.is_empty() {
        return Err(err());
    }
    Ok(parts)
}

/// Find the value at `path`; `Ok(None)` when absent.
fn lookup<'a>(data: &'a str, path: &[PathPart]) -> Result<Option<(&'a str, JsonType)>, JsonErr> {
    let b = data.as_bytes();
    let Some(off) = next_token(b) else {
        return Ok(None);
    };
    let mut cur = match b[off] {
        // The root object is walked only as far as the path's first key (jsonparser's
        // walk too stops there), not measured first: that took a pass over the whole line.
        b'{' => (off, b.len(), JsonType::Object),
        _ => get_type(b, off)?,
    };
    for part in path {
        let text = &data[cur.0..cur.1];
        let mut found = None;
        match (part, cur.2) {
            (PathPart::Key(k), JsonType::Object) => {
                // The first occurrence wins; what follows it is not read.
                let r = object_each(text, &mut |key, value, ty| {
                    if key == k {
                        found = Some((value, ty));
                        return Err(JsonErr::FoundAll);
                    }
                    Ok(())
                });
                if found.is_none() {
                    r?;
                }
            }
            (PathPart::Index(n), JsonType::Array) => {
                found = array_nth(text, *n)?;
            }
            _ => return Ok(None),
        }
        let Some((value, ty)) = found else {
            return Ok(None);
        };
        // Re-base the found slice on `data` to keep offsets.
        let start = value.as_ptr() as usize - data.as_ptr() as usize;
        cur = (start, start + value.len(), ty);
    }
    Ok(Some((&data[cur.0..cur.1], cur.2)))
}

/// The `n`-th element of a JSON array text.
fn array_nth(data: &str, n: usize) -> Result<Option<(&str, JsonType)>, JsonErr> {
    let b = data.as_bytes();
    let mut off = 1; // past '['
    let mut idx = 0;
    loop {
        off += next_token(&b[off..]).ok_or(JsonErr::MalformedArray)?;
        if b[off] == b']' {
            return Ok(None);
        }
        let v = get_type(b, off)?;
        if idx == n {
            return Ok(Some((&data[v.0..v.1], v.2)));
        }
        idx += 1;
        off = value_end(v);
        off += next_token(&b[off..]).ok_or(JsonErr::MalformedArray)?;
        match b[off] {
            b',' => off += 1,
            b']' => return Ok(None),
            _ => return Err(JsonErr::MalformedArray),
        }
    }
}

/// `| json a="x.y", b`.
#[derive(Debug, Clone)]
pub(crate) struct JsonExpressionParser {
    ids: Vec<String>,
    paths: Vec<Vec<PathPart>>,
}

impl JsonExpressionParser {
    pub(crate) fn new(params: &[LabelExtraction]) -> Result<JsonExpressionParser, Error> {
        let mut ids = Vec::with_capacity(params.len());
        let mut paths = Vec::with_capacity(params.len());
        for p in params {
            let expr = p.expr.as_deref().unwrap_or(&p.name);
            let path = parse_path(expr).map_err(Error::Validate)?;
            if !super::is_valid_label_name(&p.name) {
                return Err(Error::Validate(format!(
                    "invalid extracted label name '{}'",
                    p.name
                )));
            }
            ids.push(p.name.clone());
            paths.push(path);
        }
        Ok(JsonExpressionParser { ids, paths })
    }

    pub(crate) fn process(&self, line: &str, lb: &mut LabelsBuilder, hints: &LabelHints) {
        let Some(&first) = line.as_bytes().first() else {
            return;
        };
        if hints.no_labels(lb) {
            return;
        }
        if !matches!(first, b'"' | b'{' | b'[') {
            hints.add_err(lb, ERR_JSON, None);
            return;
        }
        let mut matches = 0;
        let mut key = String::new();
        for (id, path) in self.ids.iter().zip(&self.paths) {
            match lookup(line, path) {
                Ok(Some((value, ty))) => {
                    key.clear();
                    key.push_str(id);
                    if lb.collides(&key) {
                        key.push_str(DUPLICATE_SUFFIX);
                    }
                    match ty {
                        JsonType::Null => lb.set_parsed(&key, ""),
                        JsonType::Object => lb.set_parsed(&key, value),
                        _ => {
                            let v = label_string(value);
                            lb.set_parsed(&key, &v);
                        }
                    }
                    matches += 1;
                }
                Ok(None) => {}
                Err(e) => hints.add_err(lb, ERR_JSON, Some(e.message())),
            }
        }
        if matches < self.ids.len() {
            for id in &self.ids {
                if lb.get(id).is_none() {
                    lb.set_parsed(id, "");
                }
            }
        }
    }
}

/// `| unpack`: string values become labels and `_entry` replaces the line, but only when
/// the line was packed (has `_entry`), as in Loki. `Err` = dropped by an early filter.
pub(crate) fn unpack(
    line: &str,
    lb: &mut LabelsBuilder,
    hints: &LabelHints,
) -> Result<Option<String>, ()> {
    if line.is_empty() || hints.no_labels(lb) {
        return Ok(None);
    }
    if !line.starts_with('{') {
        hints.add_err(
            lb,
            ERR_JSON,
            Some("expecting json object(6), but it is not"),
        );
        return Ok(None);
    }
    let mut entry: Option<String> = None;
    let mut pending: Vec<(String, String)> = Vec::new();
    let r = object_each(line, &mut |key, value, ty| {
        if ty != JsonType::String {
            return Ok(());
        }
        if key == "_entry" {
            entry = Some(unescape(value).ok_or(JsonErr::MalformedStringEscape)?);
            return Ok(());
        }
        let mut name = key.to_string();
        if lb.collides(&name) {
            name.push_str(DUPLICATE_SUFFIX);
        }
        if !hints.should_extract(&name) || lb.extracted(&name) {
            return Ok(());
        }
        let mut sanitized = String::new();
        sanitize_label_key(&name, &mut sanitized);
        pending.push((sanitized, label_string(value).into_owned()));
        Ok(())
    });
    if let Err(e) = r {
        hints.add_err(lb, ERR_JSON, Some(e.message()));
        return Ok(None);
    }
    let Some(entry) = entry else {
        return Ok(None);
    };
    for (n, v) in &pending {
        lb.set_parsed(n, v);
        if !hints.should_continue(n, lb) {
            return Err(());
        }
    }
    Ok(Some(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn path_lookup_reads_up_to_the_first_match() -> Result<(), String> {
        let get = |line: &str, path: &str| {
            let path = parse_path(path)?;
            Ok::<_, String>(lookup(line, &path).map(|v| v.map(|(t, ty)| (t.to_string(), ty))))
        };
        let s = |v: &str| Ok(Some((v.to_string(), JsonType::String)));
        // The first occurrence of a key wins.
        assert_eq!(get(r#"{"a":"1","a":"2"}"#, "a")?, s("1"));
        // What follows the match is not read, as jsonparser does not read it.
        assert_eq!(get(r#"{"a":"1","b":"#, "a")?, s("1"));
        assert_eq!(
            get(r#"{"x":{"y":[1,{"z":"w"}]}} trailing"#, "x.y[1].z")?,
            s("w")
        );
        assert_eq!(
            get(r#"{"x":{"y":2}}"#, "x")?,
            Ok(Some((r#"{"y":2}"#.to_string(), JsonType::Object)))
        );
        assert_eq!(get(r#"{"a":"1"}"#, "c")?, Ok(None));
        assert_eq!(get(r#"["a"]"#, "a")?, Ok(None));
        assert_eq!(get(r#"["a","b"]"#, "[1]")?, s("b"));
        Ok(())
    }

    fn run_json(stream: &[(&str, &str)], line: &str) -> Vec<(String, String)> {
        let mut lb = LabelsBuilder::new();
        lb.reset(&pairs(stream), &[]);
        assert!(JsonParser.process(line, &mut lb, &LabelHints::all()));
        lb.labels()
    }

    #[test]
    fn json_case_7() {
        // §13 case 7
        let got = run_json(
            &[("app", "a")],
            r#"{"app":"x","level":"info","n":null,"arr":[1]}"#,
        );
        assert_eq!(
            got,
            pairs(&[("app", "a"), ("app_extracted", "x"), ("level", "info")])
        );
    }

    #[test]
    fn json_nesting_numbers_booleans_and_sanitizing() {
        let got = run_json(
            &[],
            r#"{"a.b":{"c":1.50, "d":{"e":true}}, "1x":"y", "sp ace":"\u00e9\n", "":"z"}"#,
        );
        assert_eq!(
            got,
            pairs(&[
                ("_1x", "y"),
                ("a_b_c", "1.50"),
                ("a_b_d_e", "true"),
                ("sp_ace", "é\n"),
            ])
        );
    }

    #[test]
    fn unescape_rules() {
        assert_eq!(
            unescape(r#"a\"b\u00e9\ud83d\ude00"#).as_deref(),
            Some("a\"bé😀")
        );
        assert_eq!(unescape(r"\ud83d").as_deref(), Some("\u{fffd}"));
        assert_eq!(unescape(r"\u+123"), None);
        assert_eq!(unescape(r"\x"), None);
        assert_eq!(label_string(r"bad\x"), "");
        assert_eq!(label_string(r"lone\ud800!"), "lone !");
    }

    #[test]
    fn flat_object_tells_keys_with_the_reserved_prefix() {
        let reserved = |line: &str| flat_object(line).map(|f| f.reserved_keys);
        assert_eq!(reserved(r#"{"a":1,"_b":2}"#), Some(false));
        assert_eq!(reserved(r#"{"a":1,"__error__":"x"}"#), Some(true));
        assert_eq!(reserved(r#"{"__":null}"#), Some(true));
        assert_eq!(reserved(r#"{"__error__":{"x":1}}"#), None);
    }

    #[test]
    fn flat_object_accepts_only_lines_a_key_search_reads_like_the_walk() {
        for (line, flat) in [
            (r#"{"a":"x","b":1.5,"c":true,"d":null}"#, true),
            (r#"{ "a" : "x" , "b" : -2 }"#, true),
            ("{}", true),
            // The walk stops at the object's end; text without quotes after it is harmless.
            (r#"{"a":1} trailing"#, true),
            (r#"{"a":{"b":1}}"#, false),
            (r#"{"a":[1]}"#, false),
            (r#"{"a":"x\"y"}"#, false),
            (r#"{"a.b":1}"#, false),
            (r#"{"1a":1}"#, false),
            // A quote inside a number token: `"x"` would look like a key.
            (r#"{"a":12"x":1}"#, false),
            // Quotes after the object's end.
            (r#"{"a":1} "b":2}"#, false),
            (r#"{"a":"x""#, false),
            (r#"{"a":}"#, false),
            ("not json", false),
        ] {
            assert_eq!(flat_object(line).is_some(), flat, "{line}");
        }
    }

    #[test]
    fn json_duplicate_keys_keep_first() {
        assert_eq!(run_json(&[], r#"{"a":"1","a":"2"}"#), pairs(&[("a", "1")]));
    }

    #[test]
    fn json_errors_keep_earlier_labels() {
        let got = run_json(&[], r#"{"level":"ERROR","message":"truncated"#);
        assert_eq!(
            got,
            pairs(&[
                ("__error__", "JSONParserErr"),
                (
                    "__error_details__",
                    "Value is string, but can't find closing '\"' symbol"
                ),
                ("level", "ERROR"),
            ])
        );
        let got = run_json(&[], "worker booted pid=4242");
        assert_eq!(
            got,
            pairs(&[
                ("__error__", "JSONParserErr"),
                (
                    "__error_details__",
                    "Value looks like object, but can't find closing '}' symbol"
                ),
            ])
        );
        let got = run_json(&[], "");
        assert_eq!(
            got[0],
            ("__error__".to_string(), "JSONParserErr".to_string())
        );
        assert_eq!(run_json(&[], "{}"), pairs(&[]));
        assert_eq!(run_json(&[], r#" { "a" : "b" } "#), pairs(&[("a", "b")]));
    }

    #[test]
    fn json_expression_paths() -> Result<(), Error> {
        let p = JsonExpressionParser::new(&[
            LabelExtraction {
                name: "first".into(),
                expr: Some("a.b[0]".into()),
            },
            LabelExtraction {
                name: "obj".into(),
                expr: Some("a".into()),
            },
            LabelExtraction {
                name: "k".into(),
                expr: Some(r#"["x y"]"#.into()),
            },
            LabelExtraction {
                name: "missing".into(),
                expr: Some("nope.x".into()),
            },
            LabelExtraction {
                name: "n".into(),
                expr: None,
            },
        ])?;
        let mut lb = LabelsBuilder::new();
        lb.reset(&[], &[]);
        p.process(
            r#"{"a":{"b":["q",2]},"x y":"v","n":3}"#,
            &mut lb,
            &LabelHints::all(),
        );
        assert_eq!(
            lb.labels(),
            pairs(&[
                ("first", "q"),
                ("k", "v"),
                ("missing", ""),
                ("n", "3"),
                ("obj", r#"{"b":["q",2]}"#),
            ])
        );
        assert!(parse_path("a..b").is_err());
        assert!(parse_path("").is_err());
        Ok(())
    }

    #[test]
    fn unpack_only_with_entry() {
        let mut lb = LabelsBuilder::new();
        lb.reset(&pairs(&[("app", "a")]), &[]);
        let out = unpack(
            r#"{"app":"x","foo":"bar","n":1,"_entry":"the line"}"#,
            &mut lb,
            &LabelHints::all(),
        );
        assert_eq!(out, Ok(Some("the line".to_string())));
        assert_eq!(
            lb.labels(),
            pairs(&[("app", "a"), ("app_extracted", "x"), ("foo", "bar")])
        );
        lb.reset(&pairs(&[("app", "a")]), &[]);
        assert_eq!(
            unpack(r#"{"foo":"bar"}"#, &mut lb, &LabelHints::all()),
            Ok(None)
        );
        assert_eq!(lb.labels(), pairs(&[("app", "a")]));
        assert_eq!(unpack("nope", &mut lb, &LabelHints::all()), Ok(None));
        assert!(lb.has_error());
    }
}

/// The JSON path of every label `| json` (without parameters) sets from `line`, as Loki's
/// `JSONParser` records it with `captureJSONPath` (Logs Drilldown's `jsonPath`): the label
/// name, and the keys leading to its value from the root. A top-level key's path is the key
/// itself; every segment of a nested key's path loses an `_extracted` suffix (Loki trims it
/// from each segment). Names are built as [`JsonParser`] builds them and get the
/// `_extracted` suffix where `collides` says a label of that name already exists; the first
/// occurrence of a name wins, as for the labels. Arrays and nulls set no label. A syntax
/// error ends the walk with the paths found before it.
pub fn json_label_paths(line: &str, collides: &dyn Fn(&str) -> bool) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut prefix = String::new();
    let mut path = Vec::new();
    // A syntax error keeps what was found: the caller knows from the parser whether the
    // line parsed.
    let _ = label_paths_walk(line, collides, &mut prefix, &mut path, &mut out);
    out
}

fn label_paths_walk(
    data: &str,
    collides: &dyn Fn(&str) -> bool,
    prefix: &mut String,
    path: &mut Vec<String>,
    out: &mut Vec<(String, Vec<String>)>,
) -> Result<(), JsonErr> {
    object_each(data, &mut |key, value, ty| {
        let blank = key.trim_matches(super::labels::is_go_space).is_empty();
        match ty {
            JsonType::Object => {
                // The same prefix as `JsonParser::walk`.
                let len = prefix.len();
                if !blank && !prefix.is_empty() {
                    prefix.push('_');
                }
                append_sanitized(prefix, key);
                path.push(key.to_owned());
                let r = label_paths_walk(value, collides, prefix, path, out);
                path.pop();
                prefix.truncate(len);
                r
            }
            JsonType::Array | JsonType::Null => Ok(()),
            JsonType::String | JsonType::Number | JsonType::Boolean => {
                let mut name = String::new();
                if prefix.is_empty() {
                    sanitize_label_key(key, &mut name);
                    if name.is_empty() {
                        return Ok(());
                    }
                } else {
                    name.push_str(prefix);
                    if !blank {
                        name.push('_');
                    }
                    append_sanitized(&mut name, key);
                }
                if collides(&name) {
                    name.push_str(DUPLICATE_SUFFIX);
                }
                if out.iter().any(|(n, _)| *n == name) {
                    return Ok(());
                }
                let segments = if path.is_empty() {
                    vec![key.to_owned()]
                } else {
                    path.iter()
                        .map(String::as_str)
                        .chain(std::iter::once(key))
                        .map(|s| s.strip_suffix(DUPLICATE_SUFFIX).unwrap_or(s).to_owned())
                        .collect()
                };
                out.push((name, segments));
                Ok(())
            }
        }
    })
}

#[cfg(test)]
mod label_path_tests {
    use super::*;

    fn paths(line: &str, taken: &[&str]) -> Vec<(String, Vec<String>)> {
        json_label_paths(line, &|n| taken.contains(&n))
    }

    fn entry(name: &str, path: &[&str]) -> (String, Vec<String>) {
        (
            name.to_owned(),
            path.iter().map(|s| (*s).to_owned()).collect(),
        )
    }

    #[test]
    fn paths_follow_the_names_json_sets() {
        let line = r#"{"level":"warn","user":{"id":103,"roles":["p"],"a.b":{"c":true}},"x":null,"1st":1,"level":"dup"}"#;
        assert_eq!(
            paths(line, &[]),
            vec![
                entry("level", &["level"]),
                entry("user_id", &["user", "id"]),
                entry("user_a_b_c", &["user", "a.b", "c"]),
                entry("_1st", &["1st"]),
            ]
        );
        // The labels a parser sets agree on the names.
        let mut lb = LabelsBuilder::new();
        lb.reset(&[], &[]);
        assert!(JsonParser.process(line, &mut lb, &LabelHints::all()));
        let mut names: Vec<String> = lb.labels().into_iter().map(|(n, _)| n).collect();
        names.sort();
        let mut found: Vec<String> = paths(line, &[]).into_iter().map(|(n, _)| n).collect();
        found.sort();
        assert_eq!(names, found);
    }

    #[test]
    fn colliding_names_are_suffixed_and_paths_trimmed() {
        let line = r#"{"job":"a","k8s":{"job":"b","pod_extracted":"c"}}"#;
        assert_eq!(
            paths(line, &["job", "k8s_job"]),
            vec![
                entry("job_extracted", &["job"]),
                entry("k8s_job_extracted", &["k8s", "job"]),
                entry("k8s_pod_extracted", &["k8s", "pod"]),
            ]
        );
    }

    #[test]
    fn a_syntax_error_keeps_what_was_found() {
        assert_eq!(paths(r#"{"a":1,"b":"#, &[]), vec![entry("a", &["a"])]);
        assert!(paths("level=info", &[]).is_empty());
    }
}
