//! Go's `fmt` for template values: `Sprint`, `Sprintln`, `Sprintf` with Go verbs, flags,
//! width/precision (`*` and `[n]` argument indexes too) and Go's error annotations
//! (`%!d(string=x)`, `%!s(MISSING)`, `%!(EXTRA int=1)`, `%!(NOVERB)`).
//!
//! Float formatting follows `strconv.FormatFloat`: Rust's formatter supplies correctly
//! rounded decimal digits (shortest or to a precision) and this module lays them out the way
//! Go does (`%v` switches to exponent form at 1e21 only for JSON, not here: Go's `%v` is `%g`
//! with the shortest digits, so 1e6 prints as `1e+06`).

use std::fmt::Write;

use super::value::Value;

#[derive(Clone, Copy, Default)]
struct Flags {
    plus: bool,
    minus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    /// `%#v`: Go-syntax representation.
    sharp_v: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

/// Writes `v` as Go's `%v` does (used by `{{ }}` output and `print`).
pub(crate) fn write_value(out: &mut String, v: &Value<'_>) {
    match v {
        Value::Str(s) => out.push_str(s),
        Value::Int(i) | Value::Int64(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        _ => print_arg(out, v, 'v', Flags::default()),
    }
}

/// Go's `fmt.Sprint`: operands separated by a space when neither side is a string.
pub(crate) fn sprint(out: &mut String, args: &[Value<'_>]) {
    let mut prev_string = false;
    for (i, a) in args.iter().enumerate() {
        let is_string = matches!(a, Value::Str(_));
        if i > 0 && !is_string && !prev_string {
            out.push(' ');
        }
        write_value(out, a);
        prev_string = is_string;
    }
}

/// Go's `fmt.Sprintln`: operands always separated by spaces, newline at the end.
pub(crate) fn sprintln(out: &mut String, args: &[Value<'_>]) {
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_value(out, a);
    }
    out.push('\n');
}

/// Go's `fmt.Sprintf`.
pub(crate) fn sprintf(out: &mut String, format: &str, args: &[Value<'_>]) {
    let b = format.as_bytes();
    let end = b.len();
    let mut i = 0;
    let mut arg_num = 0usize;
    // Set once an explicit `[n]` index is used: then extra arguments are not reported.
    let mut reordered = false;
    while i < end {
        let lit_start = i;
        while i < end && b[i] != b'%' {
            i += 1;
        }
        out.push_str(&format[lit_start..i]);
        if i >= end {
            break;
        }
        i += 1; // the '%'
        let mut f = Flags::default();
        while i < end {
            match b[i] {
                b'#' => f.sharp = true,
                b'0' => f.zero = !f.minus,
                b'+' => f.plus = true,
                b'-' => {
                    f.minus = true;
                    f.zero = false;
                }
                b' ' => f.space = true,
                _ => break,
            }
            i += 1;
        }
        let mut good_arg_num = true;
        let mut after_index = false;
        // `[n]` before the width.
        if i < end && b[i] == b'[' {
            reordered = true;
            match arg_index(format, i, args.len()) {
                (Some(n), w) => {
                    arg_num = n;
                    i += w;
                    after_index = true;
                }
                (None, w) => {
                    good_arg_num = false;
                    i += w;
                }
            }
        }
        // Width.
        if i < end && b[i] == b'*' {
            i += 1;
            match args.get(arg_num) {
                Some(Value::Int(n) | Value::Int64(n)) => {
                    if *n < 0 {
                        f.minus = true;
                        f.zero = false;
                    }
                    f.width = Some(n.unsigned_abs().min(1_000_000) as usize);
                }
                _ => out.push_str("%!(BADWIDTH)"),
            }
            arg_num += 1;
            after_index = false;
        } else {
            let (n, w) = parse_num(&b[i..]);
            if w > 0 {
                if after_index {
                    // `%[3]2d` is invalid in Go.
                    good_arg_num = false;
                }
                f.width = Some(n);
                i += w;
            }
        }
        // Precision.
        if i < end && b[i] == b'.' {
            i += 1;
            if after_index {
                good_arg_num = false;
            }
            if i < end && b[i] == b'[' {
                reordered = true;
                match arg_index(format, i, args.len()) {
                    (Some(n), w) => {
                        arg_num = n;
                        i += w;
                        after_index = true;
                    }
                    (None, w) => {
                        good_arg_num = false;
                        i += w;
                    }
                }
            }
            if i < end && b[i] == b'*' {
                i += 1;
                match args.get(arg_num) {
                    Some(Value::Int(n) | Value::Int64(n)) if *n >= 0 => {
                        f.prec = Some((*n).min(1_000_000) as usize)
                    }
                    Some(Value::Int(_) | Value::Int64(_)) => f.prec = None,
                    _ => out.push_str("%!(BADPREC)"),
                }
                arg_num += 1;
                after_index = false;
            } else {
                let (n, w) = parse_num(&b[i..]);
                f.prec = Some(n);
                i += w;
            }
        }
        if !after_index && i < end && b[i] == b'[' {
            reordered = true;
            match arg_index(format, i, args.len()) {
                (Some(n), w) => {
                    arg_num = n;
                    i += w;
                }
                (None, w) => {
                    good_arg_num = false;
                    i += w;
                }
            }
        }
        if i >= end {
            out.push_str("%!(NOVERB)");
            break;
        }
        let verb = format[i..].chars().next().unwrap_or('?');
        i += verb.len_utf8();
        if verb == '%' {
            out.push('%');
            continue;
        }
        if !good_arg_num {
            let _ = write!(out, "%!{verb}(BADINDEX)");
            continue;
        }
        let Some(arg) = args.get(arg_num) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        arg_num += 1;
        if verb == 'v' {
            f.sharp_v = f.sharp;
            f.sharp = false;
            f.plus = false;
        }
        print_arg(out, arg, verb, f);
    }
    if !reordered && arg_num < args.len() {
        out.push_str("%!(EXTRA ");
        for (k, a) in args[arg_num..].iter().enumerate() {
            if k > 0 {
                out.push_str(", ");
            }
            if matches!(a, Value::Nil) {
                out.push_str("<nil>");
            } else {
                out.push_str(a.type_name());
                out.push('=');
                print_arg(out, a, 'v', Flags::default());
            }
        }
        out.push(')');
    }
}

/// Parses `[n]` at `i`: the 0-based argument index (if valid) and the bytes consumed.
fn arg_index(format: &str, i: usize, nargs: usize) -> (Option<usize>, usize) {
    let b = format.as_bytes();
    let Some(close) = b[i..].iter().position(|&c| c == b']') else {
        return (None, 1);
    };
    let inner = &b[i + 1..i + close];
    let (n, w) = parse_num(inner);
    if w == 0 || w != inner.len() || n == 0 || n > nargs {
        return (None, close + 1);
    }
    (Some(n - 1), close + 1)
}

fn parse_num(b: &[u8]) -> (usize, usize) {
    let mut n = 0usize;
    let mut w = 0;
    while w < b.len() && b[w].is_ascii_digit() {
        n = n
            .saturating_mul(10)
            .saturating_add(usize::from(b[w] - b'0'));
        w += 1;
    }
    (n.min(1_000_000), w)
}

fn pad(out: &mut String, s: &str, f: Flags) {
    let width = f.width.unwrap_or(0);
    let n = s.chars().count();
    if n >= width {
        out.push_str(s);
        return;
    }
    let fill = width - n;
    if f.minus {
        out.push_str(s);
        out.extend(std::iter::repeat_n(' ', fill));
    } else {
        let c = if f.zero { '0' } else { ' ' };
        out.extend(std::iter::repeat_n(c, fill));
        out.push_str(s);
    }
}

fn bad_verb(out: &mut String, v: &Value<'_>, verb: char, f: Flags) {
    let _ = write!(out, "%!{verb}(");
    match v {
        Value::Nil => out.push_str("<nil>"),
        _ => {
            out.push_str(v.type_name());
            out.push('=');
            // Go keeps the flags, width and precision when printing the value with %v.
            print_arg(out, v, 'v', f);
        }
    }
    out.push(')');
}

fn print_arg(out: &mut String, v: &Value<'_>, verb: char, f: Flags) {
    if verb == 'T' {
        pad(out, v.type_name(), f);
        return;
    }
    match v {
        Value::Nil => match verb {
            'v' => pad(out, "<nil>", f),
            _ => bad_verb(out, v, verb, f),
        },
        Value::Bool(b) => match verb {
            't' | 'v' => pad(out, if *b { "true" } else { "false" }, f),
            _ => bad_verb(out, v, verb, f),
        },
        Value::Int(i) | Value::Int64(i) => fmt_integer(out, v, *i, verb, f),
        Value::Float(x) => match verb {
            'v' => fmt_float(out, *x, 'g', None, f),
            'g' | 'G' | 'e' | 'E' | 'f' | 'F' => {
                let default = if matches!(verb, 'g' | 'G') {
                    None
                } else {
                    Some(6)
                };
                fmt_float(out, *x, verb, f.prec.or(default), f)
            }
            _ => bad_verb(out, v, verb, f),
        },
        Value::Str(s) => fmt_string(out, v, s, verb, f),
        // time.Time is a Stringer: these verbs print `String()`.
        Value::Time(t) => match verb {
            'v' | 's' | 'x' | 'X' | 'q' => {
                let s = t.go_string();
                let mut f = f;
                f.sharp_v = false;
                fmt_string(out, v, &s, if verb == 'v' { 's' } else { verb }, f)
            }
            _ => bad_verb(out, v, verb, f),
        },
        Value::List(items) => {
            out.push('[');
            for (k, item) in items.iter().enumerate() {
                if k > 0 {
                    out.push(' ');
                }
                print_arg(out, item, verb, f);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push_str("map[");
            for (k, (key, item)) in m.iter().enumerate() {
                if k > 0 {
                    out.push(' ');
                }
                fmt_string(out, v, key, verb, f);
                out.push(':');
                print_arg(out, item, verb, f);
            }
            out.push(']');
        }
        Value::Labels(l) => {
            out.push_str("map[");
            for (k, (key, item)) in l.all().iter().enumerate() {
                if k > 0 {
                    out.push(' ');
                }
                fmt_string(out, v, key, verb, f);
                out.push(':');
                fmt_string(out, v, item, verb, f);
            }
            out.push(']');
        }
    }
}

fn fmt_string(out: &mut String, v: &Value<'_>, s: &str, verb: char, f: Flags) {
    let truncated = match f.prec {
        Some(p) => match s.char_indices().nth(p) {
            Some((idx, _)) => &s[..idx],
            None => s,
        },
        None => s,
    };
    match verb {
        'v' if f.sharp_v => pad(out, &quote(s, false), f),
        'v' | 's' => pad(out, truncated, f),
        'q' => {
            let q =
                if f.sharp && !s.contains('`') && s.chars().all(|c| c == '\t' || !c.is_control()) {
                    format!("`{truncated}`")
                } else {
                    quote(truncated, f.plus)
                };
            pad(out, &q, f)
        }
        'x' | 'X' => {
            let bytes = match f.prec {
                Some(p) => &s.as_bytes()[..p.min(s.len())],
                None => s.as_bytes(),
            };
            let mut h = String::with_capacity(bytes.len() * 3);
            for (k, byte) in bytes.iter().enumerate() {
                if f.space && k > 0 {
                    h.push(' ');
                }
                if f.sharp && (f.space || k == 0) {
                    h.push_str(if verb == 'x' { "0x" } else { "0X" });
                }
                if verb == 'x' {
                    let _ = write!(h, "{byte:02x}");
                } else {
                    let _ = write!(h, "{byte:02X}");
                }
            }
            pad(out, &h, f)
        }
        _ => bad_verb(out, v, verb, f),
    }
}

fn fmt_integer(out: &mut String, v: &Value<'_>, i: i64, verb: char, f: Flags) {
    let neg = i < 0;
    let u = i.unsigned_abs();
    let digits = match verb {
        'v' | 'd' => u.to_string(),
        'b' => format!("{u:b}"),
        'o' | 'O' => format!("{u:o}"),
        'x' => format!("{u:x}"),
        'X' => format!("{u:X}"),
        'c' => {
            let c = u32::try_from(i)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{FFFD}');
            pad(out, &c.to_string(), f);
            return;
        }
        'q' => {
            let c = u32::try_from(i)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{FFFD}');
            pad(out, &quote_rune(c, f.plus), f);
            return;
        }
        'U' => {
            let mut s = format!("U+{u:04X}");
            if f.sharp {
                if let Some(c) = u32::try_from(i).ok().and_then(char::from_u32) {
                    if !c.is_control() {
                        let _ = write!(s, " '{c}'");
                    }
                }
            }
            pad(out, &s, f);
            return;
        }
        _ => return bad_verb(out, v, verb, f),
    };
    // Precision is a minimum digit count; zero padding to the width works the same way.
    let mut min_digits = 0;
    if let Some(p) = f.prec {
        if p == 0 && u == 0 {
            let mut g = f;
            g.zero = false;
            pad(out, "", g);
            return;
        }
        min_digits = p;
    } else if f.zero && !f.minus {
        if let Some(w) = f.width {
            min_digits = w.saturating_sub(usize::from(neg || f.plus || f.space));
        }
    }
    let mut s = String::with_capacity(digits.len() + 4);
    if neg {
        s.push('-');
    } else if f.plus {
        s.push('+');
    } else if f.space {
        s.push(' ');
    }
    match verb {
        'b' if f.sharp => s.push_str("0b"),
        'o' if f.sharp => s.push('0'),
        'O' => s.push_str("0o"),
        'x' if f.sharp => s.push_str("0x"),
        'X' if f.sharp => s.push_str("0X"),
        _ => {}
    }
    s.extend(std::iter::repeat_n(
        '0',
        min_digits.saturating_sub(digits.len()),
    ));
    s.push_str(&digits);
    let mut g = f;
    g.zero = false;
    pad(out, &s, g);
}

/// Decimal digits (no leading/trailing zeros, except "0" for zero) and the decimal point
/// position of a finite non-negative float: shortest, or rounded to `sig` significant digits.
fn decimal(v: f64, sig: Option<usize>) -> (Vec<u8>, i32) {
    let s = match sig {
        Some(n) => format!("{:.*e}", n.max(1) - 1, v),
        None => format!("{v:e}"),
    };
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: Vec<u8> = mant.bytes().filter(u8::is_ascii_digit).collect();
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    (digits, exp + 1)
}

fn layout_e(s: &mut String, digits: &[u8], dp: i32, prec: usize, upper: bool) {
    s.push(char::from(digits.first().copied().unwrap_or(b'0')));
    if prec > 0 {
        s.push('.');
        for k in 1..=prec {
            s.push(char::from(digits.get(k).copied().unwrap_or(b'0')));
        }
    }
    let exp = if digits == b"0" { 0 } else { dp - 1 };
    s.push(if upper { 'E' } else { 'e' });
    s.push(if exp < 0 { '-' } else { '+' });
    let _ = write!(s, "{:02}", exp.unsigned_abs());
}

fn layout_f(s: &mut String, digits: &[u8], dp: i32, prec: usize) {
    if dp > 0 {
        for k in 0..dp as usize {
            s.push(char::from(digits.get(k).copied().unwrap_or(b'0')));
        }
    } else {
        s.push('0');
    }
    if prec > 0 {
        s.push('.');
        for k in 0..prec {
            let idx = dp + k as i32;
            let d = if idx >= 0 {
                digits.get(idx as usize).copied()
            } else {
                None
            };
            s.push(char::from(d.unwrap_or(b'0')));
        }
    }
}

/// Go's `strconv.FormatFloat(|v|, verb, prec, 64)` for a finite value.
fn format_abs(v: f64, verb: char, prec: Option<usize>) -> String {
    let mut s = String::new();
    match verb {
        'f' | 'F' => {
            let _ = write!(s, "{:.*}", prec.unwrap_or(6), v);
        }
        'e' | 'E' => {
            let (digits, dp) = match prec {
                Some(p) => decimal(v, Some(p + 1)),
                None => decimal(v, None),
            };
            let p = prec.unwrap_or(digits.len().saturating_sub(1));
            layout_e(&mut s, &digits, dp, p, verb == 'E');
        }
        _ => {
            // 'g' / 'G'
            let shortest = prec.is_none();
            let (digits, dp) = match prec {
                Some(p) => decimal(v, Some(p.max(1))),
                None => decimal(v, None),
            };
            let nd = if digits == b"0" {
                0
            } else {
                digits.len() as i32
            };
            let dp = if nd == 0 { 0 } else { dp };
            let mut p = match prec {
                Some(p) => p.max(1) as i32,
                None => nd,
            };
            let mut eprec = p;
            if eprec > nd && nd >= dp {
                eprec = nd;
            }
            if shortest {
                eprec = 6;
            }
            let exp = dp - 1;
            if exp < -4 || exp >= eprec {
                if p > nd {
                    p = nd;
                }
                layout_e(&mut s, &digits, dp, (p - 1).max(0) as usize, verb == 'G');
            } else {
                if p > dp {
                    p = nd;
                }
                layout_f(&mut s, &digits, dp, (p - dp).max(0) as usize);
            }
        }
    }
    s
}

fn fmt_float(out: &mut String, x: f64, verb: char, prec: Option<usize>, f: Flags) {
    let sign = if x.is_sign_negative() && !x.is_nan() {
        Some('-')
    } else if f.plus {
        Some('+')
    } else if f.space {
        Some(' ')
    } else {
        None
    };
    if x.is_nan() || x.is_infinite() {
        let body = if x.is_nan() { "NaN" } else { "Inf" };
        // Go always shows the sign of an infinity and never zero-pads these.
        let sign = if x.is_infinite() && sign.is_none() {
            Some('+')
        } else {
            sign
        };
        let s = match sign {
            Some(c) => format!("{c}{body}"),
            None => body.to_string(),
        };
        let mut g = f;
        g.zero = false;
        pad(out, &s, g);
        return;
    }
    let mut num = format_abs(x.abs(), verb, prec);
    if f.sharp_v && !num.contains(['.', 'e', 'E']) {
        num.push_str(".0");
    }
    match sign {
        Some(c) => {
            let width = f.width.unwrap_or(0);
            let len = num.chars().count() + 1;
            if f.zero && !f.minus && width > len {
                // The sign goes before the zero padding.
                out.push(c);
                out.extend(std::iter::repeat_n('0', width - len));
                out.push_str(&num);
            } else {
                pad(out, &format!("{c}{num}"), f);
            }
        }
        None => pad(out, &num, f),
    }
}

/// Go's `strconv.Quote` (or `QuoteToASCII` when `ascii`).
pub(crate) fn quote(s: &str, ascii: bool) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        push_escaped(&mut q, c, '"', ascii);
    }
    q.push('"');
    q
}

fn quote_rune(c: char, ascii: bool) -> String {
    let mut q = String::from("'");
    push_escaped(&mut q, c, '\'', ascii);
    q.push('\'');
    q
}

fn push_escaped(q: &mut String, c: char, delim: char, ascii: bool) {
    match c {
        '\x07' => q.push_str("\\a"),
        '\x08' => q.push_str("\\b"),
        '\x0c' => q.push_str("\\f"),
        '\n' => q.push_str("\\n"),
        '\r' => q.push_str("\\r"),
        '\t' => q.push_str("\\t"),
        '\x0b' => q.push_str("\\v"),
        '\\' => q.push_str("\\\\"),
        c if c == delim => {
            q.push('\\');
            q.push(c);
        }
        c if (c as u32) < 0x80 && !c.is_ascii_control() => q.push(c),
        c if !ascii && !c.is_control() && c != '\u{FFFD}' && !c.is_whitespace() => q.push(c),
        c if (c as u32) < 0x80 => {
            let _ = write!(q, "\\x{:02x}", c as u32);
        }
        c if (c as u32) < 0x10000 => {
            let _ = write!(q, "\\u{:04x}", c as u32);
        }
        c => {
            let _ = write!(q, "\\U{:08x}", c as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(format: &str, args: &[Value<'_>]) -> String {
        let mut s = String::new();
        sprintf(&mut s, format, args);
        s
    }

    fn s(v: &str) -> Value<'_> {
        Value::str(v)
    }

    #[test]
    fn string_verbs() {
        assert_eq!(
            f(
                "%s|%v|%q|%x|%X",
                &[s("hi"), s("hi"), s("a\"b"), s("hi"), s("hi")]
            ),
            "hi|hi|\"a\\\"b\"|6869|6869"
        );
        assert_eq!(
            f("%5s|%-5s|%.1s|%05s", &[s("ab"), s("ab"), s("ab"), s("ab")]),
            "   ab|ab   |a|000ab"
        );
        assert_eq!(f("% x", &[s("hi")]), "68 69");
    }

    #[test]
    fn integer_verbs() {
        let n = Value::Int(255);
        assert_eq!(
            f(
                "%d %v %x %X %o %b %c",
                &[
                    n.clone(),
                    n.clone(),
                    n.clone(),
                    n.clone(),
                    n.clone(),
                    Value::Int(5),
                    Value::Int(65)
                ]
            ),
            "255 255 ff FF 377 101 A"
        );
        assert_eq!(
            f(
                "%5d|%-5d|%05d|%+d|%#x|%.4d",
                &[
                    Value::Int(42),
                    Value::Int(42),
                    Value::Int(-42),
                    Value::Int(42),
                    n.clone(),
                    Value::Int(7)
                ]
            ),
            "   42|42   |-0042|+42|0xff|0007"
        );
        assert_eq!(
            f("%q %U", &[Value::Int(97), Value::Int(0x1F600)]),
            "'a' U+1F600"
        );
    }

    #[test]
    fn float_verbs() {
        let x = Value::Float(33.9);
        assert_eq!(
            f(
                "%f %.2f %05.1f %e %g %v",
                &[
                    x.clone(),
                    x.clone(),
                    x.clone(),
                    x.clone(),
                    x.clone(),
                    x.clone()
                ]
            ),
            "33.900000 33.90 033.9 3.390000e+01 33.9 33.9"
        );
        assert_eq!(
            f(
                "%v %v %v %v",
                &[
                    Value::Float(1e6),
                    Value::Float(123456.0),
                    Value::Float(0.0001),
                    Value::Float(0.00001)
                ]
            ),
            "1e+06 123456 0.0001 1e-05"
        );
        assert_eq!(
            f(
                "%.3g %g %G",
                &[
                    Value::Float(1234.5678),
                    Value::Float(1e21),
                    Value::Float(1e-7)
                ]
            ),
            "1.23e+03 1e+21 1E-07"
        );
        assert_eq!(
            f(
                "%+.1f|%8.2f|%-8.2f|%08.2f",
                &[
                    Value::Float(2.0),
                    Value::Float(-3.14259),
                    Value::Float(3.14259),
                    Value::Float(-3.14259)
                ]
            ),
            "+2.0|   -3.14|3.14    |-0003.14"
        );
        assert_eq!(
            f(
                "%v %v %5.1f",
                &[
                    Value::Float(f64::INFINITY),
                    Value::Float(f64::NAN),
                    Value::Float(f64::NEG_INFINITY)
                ]
            ),
            "+Inf NaN  -Inf"
        );
        assert_eq!(
            f("%.0f %.0f", &[Value::Float(0.5), Value::Float(1.5)]),
            "0 2"
        );
    }

    #[test]
    fn bool_and_percent() {
        assert_eq!(
            f(
                "%t %v %% %5t",
                &[Value::Bool(true), Value::Bool(false), Value::Bool(true)]
            ),
            "true false %  true"
        );
    }

    #[test]
    fn bad_verbs_keep_flags_like_go() {
        // What Loki outputs for `printf "%05.1f" .duration_ms` with duration_ms="33.9".
        assert_eq!(f("%05.1f", &[s("33.9")]), "%!f(string=00003)");
        assert_eq!(f("%d", &[s("x")]), "%!d(string=x)");
        assert_eq!(f("%s", &[Value::Int(5)]), "%!s(int=5)");
        assert_eq!(f("%t", &[Value::Int(1)]), "%!t(int=1)");
        assert_eq!(f("%d", &[Value::Nil]), "%!d(<nil>)");
    }

    #[test]
    fn argument_errors() {
        assert_eq!(f("%s %s", &[s("a")]), "a %!s(MISSING)");
        assert_eq!(
            f("%s", &[s("a"), Value::Int(1), s("b")]),
            "a%!(EXTRA int=1, string=b)"
        );
        assert_eq!(f("abc%", &[]), "abc%!(NOVERB)");
        assert_eq!(f("%[2]s %[1]s", &[s("a"), s("b")]), "b a");
        assert_eq!(
            f(
                "%*d|%-*d",
                &[Value::Int(4), Value::Int(7), Value::Int(3), Value::Int(1)]
            ),
            "   7|1  "
        );
        assert_eq!(f("%[3]s", &[s("a")]), "%!s(BADINDEX)");
    }

    #[test]
    fn sprint_spacing() {
        let mut out = String::new();
        sprint(
            &mut out,
            &[
                Value::Int(1),
                Value::Int(2),
                s("a"),
                Value::Int(3),
                s("b"),
                s("c"),
            ],
        );
        assert_eq!(out, "1 2a3bc");
        out.clear();
        sprintln(&mut out, &[s("a"), Value::Int(1)]);
        assert_eq!(out, "a 1\n");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a\tb\u{7}é", false), "\"a\\tb\\aé\"");
        assert_eq!(quote("é", true), "\"\\u00e9\"");
    }
}
