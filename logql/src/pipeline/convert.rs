//! Value conversions shared by label filters and `unwrap`: Go's `strconv.ParseFloat`,
//! Go's `time.ParseDuration` and go-humanize's `ParseBytes`, with the same accepted
//! syntax and the same error texts (they end up verbatim in `__error_details__`).

/// Quote a string the way Go's `strconv.Quote` does for the inputs we meet in
/// error messages (printable text passes through; quotes, backslashes and control
/// characters are escaped).
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `strconv.ParseFloat(s, 64)`: decimal and hexadecimal floats, `inf`/`infinity`/`nan`
/// in any case, an optional sign; underscores only between digits of base-prefixed
/// numbers. Errors read `strconv.ParseFloat: parsing "x": invalid syntax`.
pub fn parse_go_float(s: &str) -> Result<f64, String> {
    let syntax = || {
        format!(
            "strconv.ParseFloat: parsing {}: invalid syntax",
            go_quote(s)
        )
    };
    let range = || {
        format!(
            "strconv.ParseFloat: parsing {}: value out of range",
            go_quote(s)
        )
    };
    let (neg, body) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty() {
        return Err(syntax());
    }
    if body.eq_ignore_ascii_case("inf") || body.eq_ignore_ascii_case("infinity") {
        return Ok(if neg {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if body.eq_ignore_ascii_case("nan") {
        // Go accepts a sign only on infinities.
        if body.len() != s.len() {
            return Err(syntax());
        }
        return Ok(f64::NAN);
    }
    if body.len() >= 2
        && body.as_bytes()[0] == b'0'
        && body.as_bytes()[1].eq_ignore_ascii_case(&b'x')
    {
        let v = parse_hex_float(&body[2..].to_ascii_lowercase()).ok_or_else(syntax)?;
        if v.is_infinite() {
            return Err(range());
        }
        return Ok(if neg { -v } else { v });
    }
    // Decimal: digits, optional fraction, optional exponent. Rust's parser accepts the
    // same grammar once the special words are handled above, except that it also
    // accepts "inf"/"nan" spellings we already dealt with.
    let bytes = body.as_bytes();
    let mut i = 0;
    let mut digits = 0;
    // The digits as an integer while they fit in 15 (below 2^53), and how many follow
    // the point: for the fast path below.
    let mut mantissa: u64 = 0;
    let mut fraction_digits = 0;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        mantissa = mantissa.wrapping_mul(10) + u64::from(bytes[i] - b'0');
        i += 1;
        digits += 1;
    }
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            mantissa = mantissa.wrapping_mul(10) + u64::from(bytes[i] - b'0');
            i += 1;
            digits += 1;
            fraction_digits += 1;
        }
    }
    if digits == 0 {
        return Err(syntax());
    }
    if i == bytes.len() && digits <= 15 {
        // Clinger's fast path: an integer below 2^53 and a power of ten up to 10^22 are
        // both exact doubles, and one correctly rounded division gives the correctly
        // rounded value, as the full parser would (`18.3`, `2048`: most unwrapped values).
        const POW10: [f64; 16] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
        ];
        let v = mantissa as f64 / POW10[fraction_digits];
        return Ok(if neg { -v } else { v });
    }
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        i += 1;
        if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(syntax());
        }
    }
    if i != bytes.len() {
        return Err(syntax());
    }
    let v: f64 = body.parse().map_err(|_| syntax())?;
    if v.is_infinite() {
        return Err(range());
    }
    Ok(if neg { -v } else { v })
}

/// Hexadecimal float body after `0x`: hex digits, optional fraction, mandatory `p` exponent.
fn parse_hex_float(s: &str) -> Option<f64> {
    let (mant, exp) = s.split_once('p')?;
    let exp: i32 = exp.parse().ok()?;
    let (int_part, frac_part) = mant.split_once('.').unwrap_or((mant, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let mut v = 0f64;
    for c in int_part.chars() {
        v = v * 16.0 + f64::from(c.to_digit(16)?);
    }
    let mut scale = 1.0 / 16.0;
    for c in frac_part.chars() {
        v += f64::from(c.to_digit(16)?) * scale;
        scale /= 16.0;
    }
    Some(v * 2f64.powi(exp))
}

/// Go's `time.ParseDuration`: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` with units
/// `ns us µs μs ms s m h`, or a bare `0`. Returns nanoseconds.
pub(crate) fn parse_go_duration(s: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", go_quote(s));
    let mut rest = s;
    let mut neg = false;
    if let Some(r) = rest.strip_prefix('-') {
        neg = true;
        rest = r;
    } else if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    // Accumulate in u128 nanoseconds-scaled integers to detect overflow like Go does.
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let b = rest.as_bytes();
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(invalid());
        }
        let mut i = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let int_digits = &rest[..i];
        let mut frac_digits = "";
        let pre = i > 0;
        let mut post = false;
        if i < b.len() && b[i] == b'.' {
            let start = i + 1;
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            frac_digits = &rest[start..i];
            post = i > start;
        }
        if !pre && !post {
            return Err(invalid());
        }
        let unit_start = i;
        while i < b.len() && b[i] != b'.' && !b[i].is_ascii_digit() {
            i += 1;
        }
        let unit = &rest[unit_start..i];
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {}", go_quote(s)));
        }
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    go_quote(unit),
                    go_quote(s)
                ))
            }
        };
        let mut int_val: u128 = 0;
        for d in int_digits.bytes() {
            int_val = int_val * 10 + u128::from(d - b'0');
            if int_val > (1u128 << 63) {
                return Err(invalid());
            }
        }
        let mut v = int_val * unit_ns;
        if !frac_digits.is_empty() {
            // Go keeps the fraction as a scaled integer and rounds down.
            let mut frac: u128 = 0;
            let mut scale: u128 = 1;
            for d in frac_digits.bytes() {
                if scale > 1u128 << 80 {
                    break;
                }
                frac = frac * 10 + u128::from(d - b'0');
                scale *= 10;
            }
            v += frac * unit_ns / scale;
        }
        total += v;
        if total > (1u128 << 63) {
            return Err(invalid());
        }
        rest = &rest[i..];
    }
    if neg {
        Ok(-(total as i128) as i64)
    } else if total > i64::MAX as u128 {
        Err(invalid())
    } else {
        Ok(total as i64)
    }
}

/// go-humanize `ParseBytes`: a decimal number (commas ignored) followed by an optional
/// SI or IEC unit, case-insensitive (`1.5MB`, `20KiB`, `42 k`).
pub fn parse_humanize_bytes(s: &str) -> Result<u64, String> {
    let mut last = 0;
    let mut has_comma = false;
    for (i, c) in s.char_indices() {
        if !(c.is_numeric() || c == '.' || c == ',') {
            break;
        }
        if c == ',' {
            has_comma = true;
        }
        last = i + c.len_utf8();
    }
    let num = &s[..last];
    let f = if has_comma {
        parse_go_float(&num.replace(',', ""))?
    } else {
        parse_go_float(num)?
    };
    let extra = s[last..].trim().to_lowercase();
    let mult: f64 = match extra.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024f64.powi(3),
        "t" | "tb" => 1e12,
        "ti" | "tib" => 1024f64.powi(4),
        "p" | "pb" => 1e15,
        "pi" | "pib" => 1024f64.powi(5),
        "e" | "eb" => 1e18,
        "ei" | "eib" => 1024f64.powi(6),
        _ => return Err(format!("unhandled size name: {extra}")),
    };
    let v = f * mult;
    if v >= u64::MAX as f64 {
        return Err(format!("too large: {s}"));
    }
    // Go converts with truncation toward zero (negative input cannot occur: no sign accepted).
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Short decimals take the division fast path; it must give the bits Rust's
    /// correctly rounding parser gives, for every digit count and point position.
    #[test]
    fn go_float_fast_path_rounds_like_the_full_parser() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 15) as usize + 1;
            let digits: String = (0..len)
                .map(|k| char::from(b'0' + ((seed >> (4 * k)) % 10) as u8))
                .collect();
            let point = ((seed >> 60) as usize) % (len + 1);
            let text = match point {
                0 => digits.clone(),
                p => format!("{}.{}", &digits[..len - p], &digits[len - p..]),
            };
            for t in [text.clone(), format!("-{text}")] {
                let want: f64 = t.parse().expect("a decimal");
                let got = parse_go_float(&t).expect("a decimal");
                assert_eq!(got.to_bits(), want.to_bits(), "{t}");
            }
        }
    }

    #[test]
    fn go_float_accepts_go_syntax() {
        assert_eq!(parse_go_float("1.50"), Ok(1.5));
        assert_eq!(parse_go_float("-2e3"), Ok(-2000.0));
        assert_eq!(parse_go_float(".5"), Ok(0.5));
        assert_eq!(parse_go_float("5."), Ok(5.0));
        assert_eq!(parse_go_float("+Inf"), Ok(f64::INFINITY));
        assert_eq!(parse_go_float("0x1p-2"), Ok(0.25));
        assert_eq!(parse_go_float("-0X1P-2"), Ok(-0.25));
        assert_eq!(parse_go_float("-INFINITY"), Ok(f64::NEG_INFINITY));
        assert!(parse_go_float("-nan").is_err());
        assert!(parse_go_float("NaN").is_ok_and(f64::is_nan));
        assert_eq!(
            parse_go_float("abc"),
            Err("strconv.ParseFloat: parsing \"abc\": invalid syntax".to_string())
        );
        assert!(parse_go_float("").is_err());
        assert!(parse_go_float("1_000").is_err());
        assert!(parse_go_float("1e").is_err());
        assert!(parse_go_float(" 1").is_err());
        assert_eq!(
            parse_go_float("1e400"),
            Err("strconv.ParseFloat: parsing \"1e400\": value out of range".to_string())
        );
    }

    #[test]
    fn go_duration_parses_like_go() {
        assert_eq!(parse_go_duration("1500ms"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration("-2us"), Ok(-2_000));
        assert_eq!(parse_go_duration("3µs"), Ok(3_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration(".5m"), Ok(30_000_000_000));
        assert_eq!(
            parse_go_duration("abc"),
            Err("time: invalid duration \"abc\"".to_string())
        );
        assert_eq!(
            parse_go_duration("10"),
            Err("time: missing unit in duration \"10\"".to_string())
        );
        assert_eq!(
            parse_go_duration("10x"),
            Err("time: unknown unit \"x\" in duration \"10x\"".to_string())
        );
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("1d").is_err());
    }

    #[test]
    fn humanize_bytes_units() {
        assert_eq!(parse_humanize_bytes("1.5MB"), Ok(1_500_000));
        assert_eq!(parse_humanize_bytes("20KiB"), Ok(20_480));
        assert_eq!(parse_humanize_bytes("42"), Ok(42));
        assert_eq!(parse_humanize_bytes("1 k"), Ok(1000));
        assert_eq!(parse_humanize_bytes("1,024 B"), Ok(1024));
        assert_eq!(
            parse_humanize_bytes("12xb"),
            Err("unhandled size name: xb".to_string())
        );
        assert!(parse_humanize_bytes("abc").is_err());
    }
}
