//! Go `time` semantics the template functions need: a `time.Time`-like value, formatting
//! and parsing with Go reference-time layouts (`2006-01-02T15:04:05Z07:00`), `Time.String()`
//! and `time.ParseDuration`.
//!
//! Zones: Loki runs with `Local` = UTC, so local time is UTC here. Named IANA zones are not
//! available without a tz database dependency; `toDateInZone` with such a zone falls back to
//! UTC (what Go does when the zone cannot be loaded, since Loki ignores that error).

/// An instant plus the UTC offset it is displayed in, like Go's `time.Time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GoTime {
    /// Seconds since the Unix epoch.
    pub secs: i64,
    /// Nanoseconds within the second, `0..1e9`.
    pub nsec: u32,
    /// Offset east of UTC in seconds.
    pub offset: i32,
    /// True when the zone is UTC by name (prints `UTC`), false for a bare offset.
    pub utc: bool,
}

/// Seconds from 0001-01-01 to 1970-01-01, for Go's zero time.
const ZERO_TIME_SECS: i64 = -62_135_596_800;

impl GoTime {
    pub fn from_unix_ns(ns: i64) -> GoTime {
        GoTime {
            secs: ns.div_euclid(1_000_000_000),
            nsec: ns.rem_euclid(1_000_000_000) as u32,
            offset: 0,
            utc: true,
        }
    }

    pub fn from_unix(secs: i64, nsec: i64) -> GoTime {
        let extra = nsec.div_euclid(1_000_000_000);
        GoTime {
            secs: secs.saturating_add(extra),
            nsec: nsec.rem_euclid(1_000_000_000) as u32,
            offset: 0,
            utc: true,
        }
    }

    /// Go's zero `time.Time` (January 1, year 1, 00:00:00 UTC).
    pub fn zero() -> GoTime {
        GoTime {
            secs: ZERO_TIME_SECS,
            nsec: 0,
            offset: 0,
            utc: true,
        }
    }

    pub fn now() -> GoTime {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        GoTime::from_unix(d.as_secs() as i64, i64::from(d.subsec_nanos()))
    }

    /// Nanoseconds since the epoch, saturating outside Go's `UnixNano` range.
    pub fn unix_nano(&self) -> i64 {
        (i128::from(self.secs) * 1_000_000_000 + i128::from(self.nsec))
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    pub fn unix_milli(&self) -> i64 {
        self.secs
            .saturating_mul(1000)
            .saturating_add(i64::from(self.nsec / 1_000_000))
    }

    /// Civil fields in the time's own zone.
    pub(crate) fn fields(&self) -> Fields {
        let local = self.secs + i64::from(self.offset);
        let days = local.div_euclid(86_400);
        let sod = local.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Fields {
            year,
            month,
            day,
            hour: (sod / 3600) as u32,
            min: (sod % 3600 / 60) as u32,
            sec: (sod % 60) as u32,
            // 1970-01-01 was a Thursday (4).
            weekday: (days + 4).rem_euclid(7) as usize,
            yday: (days - days_from_civil(year, 1, 1) + 1) as u32,
        }
    }

    /// Go's `Time.String()`: `2006-01-02 15:04:05.999999999 -0700 MST`.
    pub fn go_string(&self) -> String {
        self.format("2006-01-02 15:04:05.999999999 -0700 MST")
    }

    /// Go's `Time.Format(layout)`.
    pub fn format(&self, layout: &str) -> String {
        let f = self.fields();
        let mut out = String::with_capacity(layout.len() + 10);
        let mut rest = layout;
        while !rest.is_empty() {
            let (prefix, std, suffix) = next_std_chunk(rest);
            out.push_str(prefix);
            let Some(std) = std else { break };
            rest = suffix;
            self.format_std(&mut out, std, &f);
        }
        out
    }

    fn format_std(&self, out: &mut String, std: Std, f: &Fields) {
        use std::fmt::Write;
        let hour12 = match f.hour % 12 {
            0 => 12,
            h => h,
        };
        // Writes to a String cannot fail.
        let _ = match std {
            Std::LongMonth => write!(out, "{}", LONG_MONTHS[f.month as usize - 1]),
            Std::Month => write!(out, "{}", &LONG_MONTHS[f.month as usize - 1][..3]),
            Std::NumMonth => write!(out, "{}", f.month),
            Std::ZeroMonth => write!(out, "{:02}", f.month),
            Std::LongWeekDay => write!(out, "{}", LONG_DAYS[f.weekday]),
            Std::WeekDay => write!(out, "{}", &LONG_DAYS[f.weekday][..3]),
            Std::Day => write!(out, "{}", f.day),
            Std::UnderDay => write!(out, "{:>2}", f.day),
            Std::ZeroDay => write!(out, "{:02}", f.day),
            Std::UnderYearDay => write!(out, "{:>3}", f.yday),
            Std::ZeroYearDay => write!(out, "{:03}", f.yday),
            Std::Hour => write!(out, "{:02}", f.hour),
            Std::Hour12 => write!(out, "{hour12}"),
            Std::ZeroHour12 => write!(out, "{hour12:02}"),
            Std::Minute => write!(out, "{}", f.min),
            Std::ZeroMinute => write!(out, "{:02}", f.min),
            Std::Second => write!(out, "{}", f.sec),
            Std::ZeroSecond => write!(out, "{:02}", f.sec),
            Std::LongYear => {
                if f.year < 0 {
                    write!(out, "-{:04}", -f.year)
                } else {
                    write!(out, "{:04}", f.year)
                }
            }
            Std::Year => write!(out, "{:02}", f.year.rem_euclid(100)),
            Std::PM => write!(out, "{}", if f.hour >= 12 { "PM" } else { "AM" }),
            Std::Pm => write!(out, "{}", if f.hour >= 12 { "pm" } else { "am" }),
            Std::Tz => {
                if self.utc {
                    write!(out, "UTC")
                } else {
                    let (sign, m) = sign_abs(self.offset / 60);
                    write!(out, "{sign}{:02}{:02}", m / 60, m % 60)
                }
            }
            Std::NumTz {
                iso,
                colon,
                secs,
                hours_only,
            } => {
                if iso && self.offset == 0 {
                    write!(out, "Z")
                } else {
                    let (sign, s) = sign_abs(self.offset);
                    let _ = write!(out, "{sign}{:02}", s / 3600);
                    if !hours_only {
                        if colon {
                            out.push(':');
                        }
                        let _ = write!(out, "{:02}", s % 3600 / 60);
                    }
                    if secs {
                        if colon {
                            out.push(':');
                        }
                        let _ = write!(out, "{:02}", s % 60);
                    }
                    Ok(())
                }
            }
            Std::Frac { sep, digits, trim } => {
                let s = format!("{:09}", self.nsec);
                let mut d = &s[..digits.min(9)];
                if trim {
                    d = d.trim_end_matches('0');
                    if d.is_empty() {
                        return;
                    }
                }
                out.push(sep);
                write!(out, "{d}")
            }
        };
    }
}

fn sign_abs(v: i32) -> (char, i32) {
    if v < 0 {
        ('-', -v)
    } else {
        ('+', v)
    }
}

/// Civil fields of a time in its own zone.
pub(crate) struct Fields {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
    /// 0 = Sunday.
    pub weekday: usize,
    /// 1-based day of the year.
    pub yday: u32,
}

const LONG_MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const LONG_DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// One element of a Go layout.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Std {
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekDay,
    WeekDay,
    Day,
    UnderDay,
    ZeroDay,
    UnderYearDay,
    ZeroYearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    LongYear,
    Year,
    PM,
    Pm,
    Tz,
    NumTz {
        iso: bool,
        colon: bool,
        secs: bool,
        hours_only: bool,
    },
    Frac {
        sep: char,
        digits: usize,
        /// `.999` (trailing zeros dropped) rather than `.000`.
        trim: bool,
    },
}

/// Splits a layout at its first reference-time element, as Go's `nextStdChunk`.
fn next_std_chunk(layout: &str) -> (&str, Option<Std>, &str) {
    let b = layout.as_bytes();
    let has = |i: usize, s: &str| layout[i..].starts_with(s);
    for i in 0..b.len() {
        let c = b[i];
        let found: Option<(Std, usize)> = match c {
            b'J' if has(i, "January") => Some((Std::LongMonth, 7)),
            b'J' if has(i, "Jan") => Some((Std::Month, 3)),
            b'M' if has(i, "Monday") => Some((Std::LongWeekDay, 6)),
            b'M' if has(i, "Mon") => Some((Std::WeekDay, 3)),
            b'M' if has(i, "MST") => Some((Std::Tz, 3)),
            b'0' if has(i, "002") => Some((Std::ZeroYearDay, 3)),
            b'0' if i + 1 < b.len() && (b'1'..=b'6').contains(&b[i + 1]) => Some((
                [
                    Std::ZeroMonth,
                    Std::ZeroDay,
                    Std::ZeroHour12,
                    Std::ZeroMinute,
                    Std::ZeroSecond,
                    Std::Year,
                ][(b[i + 1] - b'1') as usize],
                2,
            )),
            b'1' if has(i, "15") => Some((Std::Hour, 2)),
            b'1' => Some((Std::NumMonth, 1)),
            b'2' if has(i, "2006") => Some((Std::LongYear, 4)),
            b'2' => Some((Std::Day, 1)),
            b'_' if has(i, "_2006") => {
                // `_2006` is a literal underscore followed by the year.
                return (&layout[..i + 1], Some(Std::LongYear), &layout[i + 5..]);
            }
            b'_' if has(i, "__2") => Some((Std::UnderYearDay, 3)),
            b'_' if has(i, "_2") => Some((Std::UnderDay, 2)),
            b'3' => Some((Std::Hour12, 1)),
            b'4' => Some((Std::Minute, 1)),
            b'5' => Some((Std::Second, 1)),
            b'P' if has(i, "PM") => Some((Std::PM, 2)),
            b'p' if has(i, "pm") => Some((Std::Pm, 2)),
            b'-' | b'Z' => {
                let iso = c == b'Z';
                let tail = &layout[i + 1..];
                let opts: [(&str, bool, bool, bool); 5] = [
                    ("070000", false, true, false),
                    ("07:00:00", true, true, false),
                    ("0700", false, false, false),
                    ("07:00", true, false, false),
                    ("07", false, false, true),
                ];
                opts.iter().find(|(s, ..)| tail.starts_with(s)).map(
                    |(s, colon, secs, hours_only)| {
                        (
                            Std::NumTz {
                                iso,
                                colon: *colon,
                                secs: *secs,
                                hours_only: *hours_only,
                            },
                            s.len() + 1,
                        )
                    },
                )
            }
            b'.' | b',' if i + 1 < b.len() && (b[i + 1] == b'0' || b[i + 1] == b'9') => {
                let ch = b[i + 1];
                let mut j = i + 1;
                while j < b.len() && b[j] == ch {
                    j += 1;
                }
                if j < b.len() && b[j].is_ascii_digit() {
                    None
                } else {
                    Some((
                        Std::Frac {
                            sep: c as char,
                            digits: j - i - 1,
                            trim: ch == b'9',
                        },
                        j - i,
                    ))
                }
            }
            _ => None,
        };
        if let Some((std, len)) = found {
            return (&layout[..i], Some(std), &layout[i + len..]);
        }
    }
    (layout, None, "")
}

/// Go's `time.Parse(layout, value)` in UTC (Loki's `Local`). `None` when it does not match.
pub(crate) fn parse(layout: &str, value: &str) -> Option<GoTime> {
    let mut rest_layout = layout;
    let mut v = value;
    let (mut year, mut month, mut day, mut yday) = (1i64, 1u32, 1u32, 0u32);
    let (mut hour, mut min, mut sec, mut nsec) = (0u32, 0u32, 0u32, 0u32);
    let mut pm: Option<bool> = None;
    let mut offset: Option<i32> = None;
    let mut utc_name = false;
    loop {
        let (prefix, std, suffix) = next_std_chunk(rest_layout);
        v = skip_prefix(v, prefix)?;
        let Some(std) = std else {
            return if v.is_empty() { Some(()) } else { None }.and_then(|_| {
                let hour = match pm {
                    Some(true) if hour < 12 => hour + 12,
                    Some(false) if hour == 12 => 0,
                    _ => hour,
                };
                if month == 0 || month > 12 || day == 0 || day > days_in_month(year, month) {
                    return None;
                }
                let days = if yday > 0 {
                    days_from_civil(year, 1, 1) + i64::from(yday) - 1
                } else {
                    days_from_civil(year, month, day)
                };
                let off = offset.unwrap_or(0);
                let secs =
                    days * 86_400 + i64::from(hour) * 3600 + i64::from(min) * 60 + i64::from(sec)
                        - i64::from(off);
                Some(GoTime {
                    secs,
                    nsec,
                    offset: off,
                    utc: offset.is_none() || (off == 0 && utc_name),
                })
            });
        };
        rest_layout = suffix;
        match std {
            Std::LongMonth | Std::Month => {
                let idx = LONG_MONTHS.iter().position(|m| {
                    let name = if std == Std::Month { &m[..3] } else { m };
                    v.get(..name.len())
                        .is_some_and(|p| p.eq_ignore_ascii_case(name))
                })?;
                let len = if std == Std::Month {
                    3
                } else {
                    LONG_MONTHS[idx].len()
                };
                month = idx as u32 + 1;
                v = &v[len..];
            }
            Std::LongWeekDay | Std::WeekDay => {
                let idx = LONG_DAYS.iter().position(|d| {
                    let name = if std == Std::WeekDay { &d[..3] } else { d };
                    v.get(..name.len())
                        .is_some_and(|p| p.eq_ignore_ascii_case(name))
                })?;
                let len = if std == Std::WeekDay {
                    3
                } else {
                    LONG_DAYS[idx].len()
                };
                v = &v[len..];
            }
            Std::NumMonth | Std::ZeroMonth => {
                (month, v) = num(v, std == Std::ZeroMonth, 2)?;
            }
            Std::Day | Std::ZeroDay | Std::UnderDay => {
                if std == Std::UnderDay {
                    v = v.strip_prefix(' ').unwrap_or(v);
                }
                (day, v) = num(v, std == Std::ZeroDay, 2)?;
            }
            Std::UnderYearDay | Std::ZeroYearDay => {
                if std == Std::UnderYearDay {
                    v = v.trim_start_matches(' ');
                }
                (yday, v) = num(v, std == Std::ZeroYearDay, 3)?;
            }
            Std::Hour => (hour, v) = num(v, false, 2)?,
            Std::Hour12 | Std::ZeroHour12 => {
                (hour, v) = num(v, std == Std::ZeroHour12, 2)?;
                if hour > 12 {
                    return None;
                }
            }
            Std::Minute | Std::ZeroMinute => (min, v) = num(v, std == Std::ZeroMinute, 2)?,
            Std::Second | Std::ZeroSecond => {
                (sec, v) = num(v, std == Std::ZeroSecond, 2)?;
                // Go accepts a fractional second after seconds even if the layout has none.
                if let Some(r) = v.strip_prefix(['.', ',']) {
                    if !rest_layout.starts_with(['.', ','])
                        && r.starts_with(|c: char| c.is_ascii_digit())
                    {
                        let n = r.bytes().take_while(u8::is_ascii_digit).count();
                        nsec = frac_ns(&r[..n]);
                        v = &r[n..];
                    }
                }
            }
            Std::LongYear => {
                if v.len() < 4 || !v.as_bytes()[..4].iter().all(u8::is_ascii_digit) {
                    return None;
                }
                year = v[..4].parse().ok()?;
                v = &v[4..];
            }
            Std::Year => {
                let (y, r) = num(v, true, 2)?;
                year = i64::from(y) + if y >= 69 { 1900 } else { 2000 };
                v = r;
            }
            Std::PM | Std::Pm => {
                let p = v.get(..2)?;
                pm = Some(match p {
                    "PM" | "pm" => true,
                    "AM" | "am" => false,
                    _ => return None,
                });
                v = &v[2..];
            }
            Std::Tz => {
                if let Some(r) = v.strip_prefix("UTC") {
                    offset = Some(0);
                    utc_name = true;
                    v = r;
                } else {
                    // A zone abbreviation: Go records the name with an unknown (0) offset.
                    let n = v.bytes().take_while(u8::is_ascii_uppercase).count();
                    if n < 3 {
                        return None;
                    }
                    offset = Some(0);
                    v = &v[n..];
                }
            }
            Std::NumTz {
                iso,
                colon,
                secs,
                hours_only,
            } => {
                if iso && v.starts_with('Z') {
                    v = &v[1..];
                    offset = Some(0);
                    utc_name = true;
                    continue;
                }
                let sign = match v.as_bytes().first()? {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                v = &v[1..];
                let (h, r) = num(v, true, 2)?;
                v = r;
                let mut m = 0;
                let mut s = 0;
                if !hours_only {
                    if colon {
                        v = v.strip_prefix(':')?;
                    }
                    (m, v) = num(v, true, 2)?;
                }
                if secs {
                    if colon {
                        v = v.strip_prefix(':')?;
                    }
                    (s, v) = num(v, true, 2)?;
                }
                offset = Some(sign * (h * 3600 + m * 60 + s) as i32);
            }
            Std::Frac { digits, trim, .. } => {
                let r = v.strip_prefix(['.', ','])?;
                let n = r.bytes().take_while(u8::is_ascii_digit).count();
                if !trim && n != digits {
                    return None;
                }
                nsec = frac_ns(&r[..n]);
                v = &r[n..];
            }
        }
    }
}

fn skip_prefix<'v>(mut v: &'v str, mut prefix: &str) -> Option<&'v str> {
    // Go lets runs of spaces in the layout match runs of spaces in the value.
    while !prefix.is_empty() {
        if prefix.starts_with(' ') {
            if !v.is_empty() && !v.starts_with(' ') {
                return None;
            }
            prefix = prefix.trim_start_matches(' ');
            v = v.trim_start_matches(' ');
            continue;
        }
        let c = prefix.chars().next()?;
        v = v.strip_prefix(c)?;
        prefix = &prefix[c.len_utf8()..];
    }
    Some(v)
}

fn num(v: &str, fixed: bool, max: usize) -> Option<(u32, &str)> {
    let n = v.bytes().take(max).take_while(u8::is_ascii_digit).count();
    if n == 0 || (fixed && n != max) {
        return None;
    }
    Some((v[..n].parse().ok()?, &v[n..]))
}

fn frac_ns(digits: &str) -> u32 {
    let mut ns = 0u32;
    for (i, d) in digits.bytes().take(9).enumerate() {
        ns += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
    }
    ns
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Go's `time.ParseDuration`, returning seconds (what `duration`/`duration_seconds` give).
pub(crate) fn parse_duration_secs(s: &str) -> Result<f64, String> {
    let invalid = || format!("time: invalid duration {}", go_quote(s));
    let mut rest = s;
    let neg = if let Some(r) = rest.strip_prefix('-') {
        rest = r;
        true
    } else {
        rest = rest.strip_prefix('+').unwrap_or(rest);
        false
    };
    if rest == "0" {
        return Ok(0.0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let mut num_len = int_len;
        let mut frac_len = 0;
        if rest[num_len..].starts_with('.') {
            num_len += 1;
            frac_len = rest[num_len..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            num_len += frac_len;
        }
        if int_len == 0 && frac_len == 0 {
            return Err(invalid());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| invalid())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {}", go_quote(s)));
        }
        let unit = &rest[..unit_len];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    go_quote(unit),
                    go_quote(s)
                ))
            }
        };
        total_ns += (value * scale).trunc();
        rest = &rest[unit_len..];
    }
    if total_ns > 9.223_372_036_854_776e18 {
        return Err(invalid());
    }
    let secs = total_ns / 1e9;
    Ok(if neg { -secs } else { secs })
}

/// Minimal `strconv.Quote` for messages (the full one lives in `printf`).
fn go_quote(s: &str) -> String {
    crate::template::printf::quote(s, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_reference_layouts() {
        // 2025-11-20T01:59:59.697371819Z, a Thursday.
        let t = GoTime::from_unix_ns(1_763_603_999_697_371_819);
        assert_eq!(t.format("2006-01-02T15:04:05"), "2025-11-20T01:59:59");
        assert_eq!(
            t.format("Mon Jan _2 3:04:05 PM 2006"),
            "Thu Nov 20 1:59:59 AM 2025"
        );
        assert_eq!(
            t.format("2006-01-02T15:04:05.000Z07:00"),
            "2025-11-20T01:59:59.697Z"
        );
        assert_eq!(
            t.format("Monday January 02 06 002 -0700"),
            "Thursday November 20 25 324 +0000"
        );
        assert_eq!(t.format(".999999999|.9|,000000"), ".697371819|.6|,697371");
        assert_eq!(t.go_string(), "2025-11-20 01:59:59.697371819 +0000 UTC");
        assert_eq!(
            GoTime::from_unix_ns(0).go_string(),
            "1970-01-01 00:00:00 +0000 UTC"
        );
        assert_eq!(GoTime::zero().go_string(), "0001-01-01 00:00:00 +0000 UTC");
    }

    #[test]
    fn parses_layouts() {
        let t = parse("2006-01-02T15:04:05Z07:00", "2025-11-20T01:59:59+02:00");
        assert_eq!(t.map(|t| t.secs), Some(1_763_603_999 - 7200));
        let t = parse("2006-01-02 15:04:05.000", "2024-02-29 10:00:00.250");
        assert_eq!(
            t.map(|t| (t.secs, t.nsec)),
            Some((1_709_200_800, 250_000_000))
        );
        assert_eq!(parse("2006-01-02", "2023-02-29"), None);
        assert_eq!(parse("2006-01-02", "2023-02-01x"), None);
        assert_eq!(parse("Jan 2006", "Jaé 2006"), None);
        let t = parse("Jan 2 2006 3:04PM", "Mar 5 2020 1:30PM");
        assert_eq!(
            t.map(|t| t.format("2006-01-02 15:04")),
            Some("2020-03-05 13:30".into())
        );
    }

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_duration_secs("1h30m"), Ok(5400.0));
        assert_eq!(parse_duration_secs("-1.5s"), Ok(-1.5));
        assert_eq!(parse_duration_secs("250ms"), Ok(0.25));
        assert_eq!(parse_duration_secs("0"), Ok(0.0));
        assert_eq!(
            parse_duration_secs("1"),
            Err("time: missing unit in duration \"1\"".into())
        );
        assert_eq!(
            parse_duration_secs("x"),
            Err("time: invalid duration \"x\"".into())
        );
        assert_eq!(
            parse_duration_secs("3d"),
            Err("time: unknown unit \"d\" in duration \"3d\"".into())
        );
    }
}
