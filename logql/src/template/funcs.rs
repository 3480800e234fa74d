//! The function table: Go's `text/template` builtins, Loki's own functions and the sprig
//! subset Loki enables, each with its Go signature (parameter kinds drive Go's argument type
//! checks) and its implementation. Argument order follows sprig/Go: the value piped in is
//! the last argument (`{{ .path | hasPrefix "/api" }}` is `hasPrefix "/api" .path`).
//!
//! `and`/`or` are listed for name resolution but evaluated lazily by the executor.

use std::borrow::Cow;
use std::rc::Rc;

use regex::Regex;

use super::printf;
use super::time::{self, GoTime};
use super::value::Value;
use super::TemplateContext;

/// What a Go parameter accepts; values of other types fail with Go's "wrong type" error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `interface{}` / `reflect.Value`.
    Any,
    Str,
    Int,
    Float,
    Time,
}

impl Kind {
    pub fn go_name(self) -> &'static str {
        match self {
            Kind::Any => "interface {}",
            Kind::Str => "string",
            Kind::Int => "int",
            Kind::Float => "float64",
            Kind::Time => "time.Time",
        }
    }
}

/// A Go function signature: fixed parameters plus an optional variadic tail.
pub(crate) struct Sig {
    pub params: &'static [Kind],
    pub variadic: Option<Kind>,
}

impl Sig {
    /// The kind of argument `k` (0-based).
    pub fn kind(&self, k: usize) -> Kind {
        self.params
            .get(k)
            .copied()
            .or(self.variadic)
            .unwrap_or(Kind::Any)
    }
}

macro_rules! functions {
    ($($var:ident = $name:literal ($($p:ident),*) $(, ..$v:ident)?;)*) => {
        /// A template function, resolved by name at parse time.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Func { $($var),* }

        impl Func {
            /// Resolves a function name; `None` makes parsing fail as in Go.
            pub fn lookup(name: &str) -> Option<Func> {
                match name {
                    $($name => Some(Func::$var),)*
                    _ => None,
                }
            }

            pub fn name(self) -> &'static str {
                match self { $(Func::$var => $name),* }
            }

            pub fn sig(self) -> Sig {
                match self {
                    $(Func::$var => Sig {
                        params: &[$(Kind::$p),*],
                        variadic: functions!(@v $($v)?),
                    }),*
                }
            }
        }
    };
    (@v) => { None };
    (@v $v:ident) => { Some(Kind::$v) };
}

functions! {
    // Go text/template builtins.
    And = "and"(Any), ..Any;
    Or = "or"(Any), ..Any;
    Not = "not"(Any);
    Len = "len"(Any);
    Index = "index"(Any), ..Any;
    Slice = "slice"(Any), ..Any;
    Print = "print"(), ..Any;
    Printf = "printf"(Str), ..Any;
    Println = "println"(), ..Any;
    Eq = "eq"(Any), ..Any;
    Ne = "ne"(Any, Any);
    Lt = "lt"(Any, Any);
    Le = "le"(Any, Any);
    Gt = "gt"(Any, Any);
    Ge = "ge"(Any, Any);
    UrlQuery = "urlquery"(), ..Any;
    Html = "html"(), ..Any;
    Js = "js"(), ..Any;
    // Loki: per-entry functions.
    Line = "__line__"();
    Timestamp = "__timestamp__"();
    // Loki: Go `strings` functions (deprecated names, still supported).
    ToLowerGo = "ToLower"(Str);
    ToUpperGo = "ToUpper"(Str);
    ReplaceGo = "Replace"(Str, Str, Str, Int);
    TrimGo = "Trim"(Str, Str);
    TrimLeftGo = "TrimLeft"(Str, Str);
    TrimRightGo = "TrimRight"(Str, Str);
    TrimPrefixGo = "TrimPrefix"(Str, Str);
    TrimSuffixGo = "TrimSuffix"(Str, Str);
    TrimSpaceGo = "TrimSpace"(Str);
    // Loki's own.
    RegexReplaceAll = "regexReplaceAll"(Str, Str, Str);
    RegexReplaceAllLiteral = "regexReplaceAllLiteral"(Str, Str, Str);
    Count = "count"(Str, Str);
    UrlDecode = "urldecode"(Str);
    UrlEncode = "urlencode"(Str);
    Bytes = "bytes"(Str);
    Duration = "duration"(Str);
    DurationSeconds = "duration_seconds"(Str);
    UnixEpochMillis = "unixEpochMillis"(Time);
    UnixEpochNanos = "unixEpochNanos"(Time);
    ToDateInZone = "toDateInZone"(Str, Str, Str);
    UnixToTime = "unixToTime"(Str);
    AlignLeft = "alignLeft"(Int, Str);
    AlignRight = "alignRight"(Int, Str);
    // sprig subset.
    B64Enc = "b64enc"(Str);
    B64Dec = "b64dec"(Str);
    Lower = "lower"(Str);
    Upper = "upper"(Str);
    Title = "title"(Str);
    Trunc = "trunc"(Int, Str);
    Substr = "substr"(Int, Int, Str);
    Contains = "contains"(Str, Str);
    HasPrefix = "hasPrefix"(Str, Str);
    HasSuffix = "hasSuffix"(Str, Str);
    Indent = "indent"(Int, Str);
    Nindent = "nindent"(Int, Str);
    Replace = "replace"(Str, Str, Str);
    Repeat = "repeat"(Int, Str);
    Trim = "trim"(Str);
    TrimAll = "trimAll"(Str, Str);
    TrimSuffix = "trimSuffix"(Str, Str);
    TrimPrefix = "trimPrefix"(Str, Str);
    ToInt = "int"(Any);
    ToFloat64 = "float64"(Any);
    Add = "add"(), ..Any;
    Sub = "sub"(Any, Any);
    Mul = "mul"(Any), ..Any;
    Div = "div"(Any, Any);
    Mod = "mod"(Any, Any);
    AddF = "addf"(), ..Any;
    SubF = "subf"(Any), ..Any;
    MulF = "mulf"(Any), ..Any;
    DivF = "divf"(Any), ..Any;
    Max = "max"(Any), ..Any;
    Min = "min"(Any), ..Any;
    MaxF = "maxf"(Any), ..Any;
    MinF = "minf"(Any), ..Any;
    Ceil = "ceil"(Any);
    Floor = "floor"(Any);
    Round = "round"(Any, Int), ..Float;
    FromJson = "fromJson"(Str);
    Date = "date"(Str, Any);
    ToDate = "toDate"(Str, Str);
    Now = "now"();
    UnixEpoch = "unixEpoch"(Time);
    Default = "default"(Any), ..Any;
    // Prometheus alert templates (`Dialect::Prometheus` only).
    Humanize = "humanize"(Any);
    Humanize1024 = "humanize1024"(Any);
    HumanizeDuration = "humanizeDuration"(Any);
    HumanizePercentage = "humanizePercentage"(Any);
    HumanizeTimestamp = "humanizeTimestamp"(Any);
    ToUpperProm = "toUpper"(Str);
    ToLowerProm = "toLower"(Str);
    ReReplaceAll = "reReplaceAll"(Str, Str, Str);
    Match = "match"(Str, Str);
    StripPort = "stripPort"(Str);
    StripDomain = "stripDomain"(Str);
    ParseDuration = "parseDuration"(Str);
    ToTime = "toTime"(Any);
    SafeHtml = "safeHtml"(Str);
    Args = "args"(), ..Any;
    ExternalUrl = "externalURL"();
    PathPrefix = "pathPrefix"();
}

impl Func {
    /// Whether the function exists in `dialect`: Go's builtins (and `title`) in both, Loki's
    /// and sprig's in LogQL templates, Prometheus' in alert templates.
    pub fn available(self, dialect: super::Dialect) -> bool {
        use Func::*;
        match self {
            And | Or | Not | Len | Index | Slice | Print | Printf | Println | Eq | Ne | Lt | Le
            | Gt | Ge | UrlQuery | Html | Js | Title => true,
            Humanize | Humanize1024 | HumanizeDuration | HumanizePercentage | HumanizeTimestamp
            | ToUpperProm | ToLowerProm | ReReplaceAll | Match | StripPort | StripDomain
            | ParseDuration | ToTime | SafeHtml | Args | ExternalUrl | PathPrefix => {
                dialect == super::Dialect::Prometheus
            }
            _ => dialect == super::Dialect::Loki,
        }
    }
}

impl Func {
    /// Whether argument 0 is a regular expression worth compiling once at parse time.
    pub fn takes_regex(self) -> bool {
        matches!(
            self,
            Func::RegexReplaceAll | Func::RegexReplaceAllLiteral | Func::Count
        )
    }

    /// Runs the function on arguments already checked against `sig()` (count and kinds).
    /// `regex` is argument 0 compiled at parse time, when it was a literal.
    pub fn call<'a>(
        self,
        a: &mut [Value<'a>],
        ctx: &TemplateContext<'a>,
        regex: Option<&Regex>,
    ) -> Result<Value<'a>, String> {
        use Func::*;
        let v = match self {
            // Lazily evaluated by the executor; this path only sees already-evaluated args.
            And => a
                .iter()
                .find(|v| !v.truthy())
                .cloned()
                .or_else(|| a.last().cloned())
                .unwrap_or(Value::Nil),
            Or => a
                .iter()
                .find(|v| v.truthy())
                .cloned()
                .or_else(|| a.last().cloned())
                .unwrap_or(Value::Nil),
            Not => Value::Bool(!arg(a, 0).truthy()),
            Humanize => Value::string(humanize(prom_float(arg(a, 0))?)),
            Humanize1024 => Value::string(humanize_1024(prom_float(arg(a, 0))?)),
            HumanizeDuration => Value::string(humanize_duration(prom_float(arg(a, 0))?)),
            HumanizePercentage => {
                Value::string(format!("{}%", go_g4(prom_float(arg(a, 0))? * 100.0)))
            }
            HumanizeTimestamp => {
                let v = prom_float(arg(a, 0))?;
                if v.is_nan() || v.is_infinite() {
                    Value::string(go_g4(v))
                } else {
                    Value::Time(GoTime::from_unix_ns((v * 1e9) as i64))
                }
            }
            ToTime => {
                let v = prom_float(arg(a, 0))?;
                if v.is_nan() || v.is_infinite() {
                    return Err(format!("cannot convert {} to time.Time", go_g4(v)));
                }
                Value::Time(GoTime::from_unix_ns((v * 1e9) as i64))
            }
            ToUpperProm => Value::string(str_arg(a, 0).to_uppercase()),
            ToLowerProm => Value::string(str_arg(a, 0).to_lowercase()),
            ReReplaceAll => {
                let re = compile(&str_arg(a, 0))?;
                let repl = str_arg(a, 1);
                Value::string(re.replace_all(&str_arg(a, 2), &*repl).into_owned())
            }
            Match => {
                let re = compile(&str_arg(a, 0))?;
                Value::Bool(re.is_match(&str_arg(a, 1)))
            }
            StripPort => Value::string(strip_port(&str_arg(a, 0)).to_string()),
            StripDomain => Value::string(strip_domain(&str_arg(a, 0))),
            ParseDuration => Value::Float(time::parse_duration_secs(&str_arg(a, 0))?),
            SafeHtml => Value::string(str_arg(a, 0).into_owned()),
            Args => {
                let mut m = std::collections::BTreeMap::new();
                for (i, v) in a.iter_mut().enumerate() {
                    m.insert(format!("arg{i}"), std::mem::take(v));
                }
                Value::Map(Rc::new(m))
            }
            // Answered by the executor, which holds the template data.
            ExternalUrl | PathPrefix => Value::string(String::new()),
            Len => Value::Int(length(arg(a, 0))?),
            Index => index(a)?,
            Slice => slice(a)?,
            Print => {
                let mut s = String::new();
                printf::sprint(&mut s, a);
                Value::string(s)
            }
            Println => {
                let mut s = String::new();
                printf::sprintln(&mut s, a);
                Value::string(s)
            }
            Printf => {
                let mut s = String::new();
                printf::sprintf(&mut s, &str_arg(a, 0), a.get(1..).unwrap_or_default());
                Value::string(s)
            }
            Eq => {
                if a.len() < 2 {
                    return Err("missing argument for comparison".into());
                }
                let mut any = false;
                for other in &a[1..] {
                    if eq(&a[0], other)? {
                        any = true;
                        break;
                    }
                }
                Value::Bool(any)
            }
            Ne => Value::Bool(!eq(arg(a, 0), arg(a, 1))?),
            Lt => Value::Bool(lt(arg(a, 0), arg(a, 1))?),
            Le => Value::Bool(lt(arg(a, 0), arg(a, 1))? || eq(arg(a, 0), arg(a, 1))?),
            Gt => Value::Bool(!(lt(arg(a, 0), arg(a, 1))? || eq(arg(a, 0), arg(a, 1))?)),
            Ge => Value::Bool(!lt(arg(a, 0), arg(a, 1))?),
            UrlQuery => Value::string(query_escape(&eval_args(a))),
            Html => Value::string(html_escape(&eval_args(a))),
            Js => Value::string(js_escape(&eval_args(a))),
            Line => Value::str(ctx.line),
            Timestamp => Value::Time(GoTime::from_unix_ns(ctx.ts_ns)),
            ToLowerGo | Lower => map_str(
                take(a, 0),
                |s| s.to_lowercase(),
                |s| !s.chars().any(char::is_uppercase),
            ),
            ToUpperGo | Upper => map_str(
                take(a, 0),
                |s| s.to_uppercase(),
                |s| !s.chars().any(char::is_lowercase),
            ),
            ReplaceGo => {
                let n = int_arg(a, 3);
                let (s, old, new) = (str_arg(a, 0), str_arg(a, 1), str_arg(a, 2));
                Value::string(if n < 0 {
                    s.replace(&*old, &new)
                } else {
                    s.replacen(&*old, &new, n as usize)
                })
            }
            TrimGo => {
                let cut = str_arg(a, 1).into_owned();
                sub_str(take(a, 0), |s| s.trim_matches(|c| cut.contains(c)))
            }
            TrimLeftGo => {
                let cut = str_arg(a, 1).into_owned();
                sub_str(take(a, 0), |s| s.trim_start_matches(|c| cut.contains(c)))
            }
            TrimRightGo => {
                let cut = str_arg(a, 1).into_owned();
                sub_str(take(a, 0), |s| s.trim_end_matches(|c| cut.contains(c)))
            }
            TrimPrefixGo => {
                let p = str_arg(a, 1).into_owned();
                sub_str(take(a, 0), |s| s.strip_prefix(&*p).unwrap_or(s))
            }
            TrimSuffixGo => {
                let p = str_arg(a, 1).into_owned();
                sub_str(take(a, 0), |s| s.strip_suffix(&*p).unwrap_or(s))
            }
            TrimSpaceGo | Trim => sub_str(take(a, 0), str::trim),
            RegexReplaceAll | RegexReplaceAllLiteral => {
                let compiled;
                let re = match regex {
                    Some(r) => r,
                    None => {
                        compiled = compile(&str_arg(a, 0))?;
                        &compiled
                    }
                };
                let s = str_arg(a, 1);
                let repl = str_arg(a, 2);
                let out = if self == RegexReplaceAll {
                    re.replace_all(&s, &*repl)
                } else {
                    re.replace_all(&s, regex::NoExpand(&repl))
                };
                Value::string(out.into_owned())
            }
            Count => {
                let compiled;
                let re = match regex {
                    Some(r) => r,
                    None => {
                        compiled = compile(&str_arg(a, 0))?;
                        &compiled
                    }
                };
                Value::Int(re.find_iter(&str_arg(a, 1)).count() as i64)
            }
            UrlDecode => Value::string(query_unescape(&str_arg(a, 0))?),
            UrlEncode => Value::string(query_escape(&str_arg(a, 0))),
            Bytes => Value::Float(parse_bytes(&str_arg(a, 0))?),
            Duration | DurationSeconds => Value::Float(time::parse_duration_secs(&str_arg(a, 0))?),
            UnixEpochMillis => Value::string(time_arg(a, 0).unix_milli().to_string()),
            UnixEpochNanos => Value::string(time_arg(a, 0).unix_nano().to_string()),
            ToDateInZone => {
                // Only UTC is known (no tz database); Go falls back to UTC for unknown zones too.
                let t = time::parse(&str_arg(a, 0), &str_arg(a, 2)).unwrap_or_else(GoTime::zero);
                Value::Time(t)
            }
            UnixToTime => Value::Time(unix_to_time(&str_arg(a, 0))?),
            AlignLeft | AlignRight => {
                let count = int_arg(a, 0);
                let s = take(a, 1);
                let Value::Str(s) = s else { return Ok(s) };
                let n = s.chars().count();
                if count < 0 || n == count as usize {
                    Value::Str(s)
                } else if n < count as usize {
                    check_size(count as usize)?;
                    let pad = " ".repeat(count as usize - n);
                    Value::string(if self == AlignLeft {
                        format!("{s}{pad}")
                    } else {
                        format!("{pad}{s}")
                    })
                } else if self == AlignLeft {
                    Value::string(s.chars().take(count as usize).collect())
                } else {
                    Value::string(s.chars().skip(n - count as usize).collect())
                }
            }
            B64Enc => Value::string(b64_encode(str_arg(a, 0).as_bytes())),
            B64Dec => Value::string(match b64_decode(&str_arg(a, 0)) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                // sprig returns the error text as the result.
                Err(e) => e,
            }),
            Title => Value::string(title(&str_arg(a, 0))),
            // Loki ships rune-based versions of sprig's byte-based `trunc`/`substr`
            // (same results on ASCII; never splits a UTF-8 sequence, never panics).
            Trunc => {
                let c = int_arg(a, 0);
                let s = take(a, 1);
                let Value::Str(s) = s else { return Ok(s) };
                let n = s.chars().count() as i64;
                if c < 0 && n + c > 0 {
                    char_slice(s, (n + c) as usize, n as usize)
                } else if c >= 0 && n > c {
                    char_slice(s, 0, c as usize)
                } else {
                    Value::Str(s)
                }
            }
            Substr => {
                let (mut start, mut end) = (int_arg(a, 0), int_arg(a, 1));
                let s = take(a, 2);
                let Value::Str(s) = s else { return Ok(s) };
                let n = s.chars().count() as i64;
                end = end.min(n);
                start = start.min(n);
                if start < 0 {
                    if end < 0 {
                        Value::str("")
                    } else {
                        char_slice(s, 0, end as usize)
                    }
                } else if end < 0 {
                    char_slice(s, start as usize, n as usize)
                } else if start > end {
                    Value::str("")
                } else {
                    char_slice(s, start as usize, end as usize)
                }
            }
            Contains => Value::Bool(str_arg(a, 1).contains(&*str_arg(a, 0))),
            HasPrefix => Value::Bool(str_arg(a, 1).starts_with(&*str_arg(a, 0))),
            HasSuffix => Value::Bool(str_arg(a, 1).ends_with(&*str_arg(a, 0))),
            Indent | Nindent => {
                let spaces = int_arg(a, 0).max(0) as usize;
                let lines = str_arg(a, 1).matches('\n').count() + 1;
                check_size(spaces.saturating_mul(lines))?;
                let pad = " ".repeat(spaces);
                let body = str_arg(a, 1).replace('\n', &format!("\n{pad}"));
                let nl = if self == Nindent { "\n" } else { "" };
                Value::string(format!("{nl}{pad}{body}"))
            }
            Replace => Value::string(str_arg(a, 2).replace(&*str_arg(a, 0), &str_arg(a, 1))),
            Repeat => {
                let n = int_arg(a, 0);
                if n < 0 {
                    return Err("strings: negative Repeat count".into());
                }
                let s = str_arg(a, 1);
                check_size((n as usize).saturating_mul(s.len()))?;
                Value::string(s.repeat(n as usize))
            }
            TrimAll => {
                let cut = str_arg(a, 0).into_owned();
                sub_str(take(a, 1), |s| s.trim_matches(|c| cut.contains(c)))
            }
            TrimSuffix => {
                let p = str_arg(a, 0).into_owned();
                sub_str(take(a, 1), |s| s.strip_suffix(&*p).unwrap_or(s))
            }
            TrimPrefix => {
                let p = str_arg(a, 0).into_owned();
                sub_str(take(a, 1), |s| s.strip_prefix(&*p).unwrap_or(s))
            }
            ToInt => Value::Int(to_int64(arg(a, 0))),
            ToFloat64 => Value::Float(to_f64(arg(a, 0))),
            Add => Value::Int64(a.iter().map(to_int64).fold(0i64, i64::wrapping_add)),
            Sub => Value::Int64(to_int64(arg(a, 0)).wrapping_sub(to_int64(arg(a, 1)))),
            Mul => Value::Int64(a.iter().map(to_int64).fold(1i64, i64::wrapping_mul)),
            Div | Mod => {
                let (x, y) = (to_int64(arg(a, 0)), to_int64(arg(a, 1)));
                if y == 0 {
                    return Err("runtime error: integer divide by zero".into());
                }
                Value::Int64(if self == Div {
                    x.wrapping_div(y)
                } else {
                    x.wrapping_rem(y)
                })
            }
            AddF | SubF | MulF | DivF => Value::Float(decimal_fold(self, a)?),
            Max => Value::Int64(a.iter().map(to_int64).max().unwrap_or(0)),
            Min => Value::Int64(a.iter().map(to_int64).min().unwrap_or(0)),
            MaxF => Value::Float(a.iter().map(to_f64).fold(f64::NEG_INFINITY, go_max)),
            MinF => Value::Float(a.iter().map(to_f64).fold(f64::INFINITY, go_min)),
            Ceil => Value::Float(to_f64(arg(a, 0)).ceil()),
            Floor => Value::Float(to_f64(arg(a, 0)).floor()),
            Round => {
                let val = to_f64(arg(a, 0));
                let pow = 10f64.powf(int_arg(a, 1) as f64);
                let round_on = match a.get(2) {
                    Some(Value::Float(f)) => *f,
                    _ => 0.5,
                };
                let digit = pow * val;
                let frac = digit.fract();
                let r = if frac >= round_on {
                    digit.ceil()
                } else {
                    digit.floor()
                };
                Value::Float(r / pow)
            }
            FromJson => serde_json::from_str::<serde_json::Value>(&str_arg(a, 0))
                .map(Value::from_json)
                .unwrap_or(Value::Nil),
            Date => {
                let t = match arg(a, 1) {
                    Value::Time(t) => *t,
                    Value::Int(i) | Value::Int64(i) => GoTime::from_unix(*i, 0),
                    _ => GoTime::now(),
                };
                // sprig formats in Local, which is UTC for Loki.
                let t = GoTime {
                    offset: 0,
                    utc: true,
                    ..t
                };
                Value::string(t.format(&str_arg(a, 0)))
            }
            ToDate => Value::Time(
                time::parse(&str_arg(a, 0), &str_arg(a, 1)).unwrap_or_else(GoTime::zero),
            ),
            Now => Value::Time(GoTime::now()),
            UnixEpoch => Value::string(time_arg(a, 0).secs.to_string()),
            Default => match a.get(1) {
                Some(given) if !given.is_empty() => take(a, 1),
                _ => take(a, 0),
            },
        };
        Ok(v)
    }
}

/// Largest string a function may build. Not in Go: it keeps one entry from exhausting
/// memory (`repeat 1000000000 "x"`).
const MAX_RESULT_BYTES: usize = 16 << 20;

fn check_size(n: usize) -> Result<(), String> {
    if n > MAX_RESULT_BYTES {
        return Err(format!(
            "result of {n} bytes exceeds the {MAX_RESULT_BYTES} byte limit"
        ));
    }
    Ok(())
}

fn arg<'v, 'a>(a: &'v [Value<'a>], k: usize) -> &'v Value<'a> {
    const NIL: &Value<'static> = &Value::Nil;
    a.get(k).unwrap_or(NIL)
}

fn take<'a>(a: &mut [Value<'a>], k: usize) -> Value<'a> {
    a.get_mut(k).map(std::mem::take).unwrap_or(Value::Nil)
}

/// A string argument (already type-checked; other values read as "").
fn str_arg<'v>(a: &'v [Value<'_>], k: usize) -> Cow<'v, str> {
    match a.get(k) {
        Some(Value::Str(s)) => Cow::Borrowed(s),
        _ => Cow::Borrowed(""),
    }
}

fn int_arg(a: &[Value<'_>], k: usize) -> i64 {
    match a.get(k) {
        Some(Value::Int(i)) => *i,
        _ => 0,
    }
}

fn time_arg(a: &[Value<'_>], k: usize) -> GoTime {
    match a.get(k) {
        Some(Value::Time(t)) => *t,
        _ => GoTime::zero(),
    }
}

/// Applies a case mapping, keeping the borrowed string when `unchanged` says it is a no-op.
fn map_str<'a>(
    v: Value<'a>,
    f: impl Fn(&str) -> String,
    unchanged: impl Fn(&str) -> bool,
) -> Value<'a> {
    match v {
        Value::Str(s) if unchanged(&s) => Value::Str(s),
        Value::Str(s) => Value::string(f(&s)),
        other => other,
    }
}

/// Narrows a string to a sub-slice without copying when it is borrowed.
fn sub_str<'a>(v: Value<'a>, f: impl for<'x> Fn(&'x str) -> &'x str) -> Value<'a> {
    match v {
        Value::Str(Cow::Borrowed(s)) => Value::str(f(s)),
        Value::Str(Cow::Owned(s)) => Value::string(f(&s).to_string()),
        other => other,
    }
}

/// `s[from:to]` on bytes, as Go slices strings; a cut inside a UTF-8 sequence is repaired.
fn byte_slice(s: Cow<'_, str>, from: usize, to: usize) -> Value<'_> {
    match s {
        Cow::Borrowed(b) => match b.get(from..to) {
            Some(sub) => Value::str(sub),
            None => Value::string(String::from_utf8_lossy(&b.as_bytes()[from..to]).into_owned()),
        },
        Cow::Owned(o) => {
            Value::string(String::from_utf8_lossy(&o.as_bytes()[from..to]).into_owned())
        }
    }
}

/// Characters `from..to` of `s`, borrowing when `s` is borrowed.
fn char_slice(s: Cow<'_, str>, from: usize, to: usize) -> Value<'_> {
    let byte_at = |s: &str, k: usize| s.char_indices().nth(k).map_or(s.len(), |(i, _)| i);
    match s {
        Cow::Borrowed(b) => Value::str(&b[byte_at(b, from)..byte_at(b, to)]),
        Cow::Owned(o) => Value::string(o[byte_at(&o, from)..byte_at(&o, to)].to_string()),
    }
}

fn compile(re: &str) -> Result<Regex, String> {
    Regex::new(re).map_err(|e| format!("regexp: Compile({}): {e}", printf::quote(re, false)))
}

/// Go's `evalArgs` for `html`/`js`/`urlquery`: a lone string as is, otherwise `Sprint`.
fn eval_args<'v>(a: &'v [Value<'_>]) -> Cow<'v, str> {
    if let [Value::Str(s)] = a {
        return Cow::Borrowed(s);
    }
    let mut s = String::new();
    printf::sprint(&mut s, a);
    Cow::Owned(s)
}

/// Go's `len`.
fn length(v: &Value<'_>) -> Result<i64, String> {
    match v {
        Value::Str(s) => Ok(s.len() as i64),
        Value::List(l) => Ok(l.len() as i64),
        Value::Map(m) => Ok(m.len() as i64),
        Value::Labels(l) => Ok(l.all().len() as i64),
        Value::Nil => Err("len of nil pointer".into()),
        other => Err(format!("len of type {}", other.type_name())),
    }
}

fn index_int(v: &Value<'_>) -> Result<i64, String> {
    match v {
        Value::Int(i) | Value::Int64(i) => Ok(*i),
        Value::Nil => Err("cannot index slice/array with nil".into()),
        other => Err(format!(
            "cannot index slice/array with type {}",
            other.type_name()
        )),
    }
}

/// Go's `index item i j ...`.
fn index<'a>(a: &[Value<'a>]) -> Result<Value<'a>, String> {
    let mut item = arg(a, 0).clone();
    for idx in a.iter().skip(1) {
        item = match &item {
            Value::List(l) => {
                let i = index_int(idx)?;
                if i < 0 || i as usize >= l.len() {
                    return Err(format!("index out of range: {i}"));
                }
                l[i as usize].clone()
            }
            Value::Str(s) => {
                let i = index_int(idx)?;
                match s.as_bytes().get(i as usize) {
                    Some(b) if i >= 0 => Value::Int(i64::from(*b)),
                    _ => return Err(format!("index out of range: {i}")),
                }
            }
            Value::Map(m) => match idx {
                Value::Str(k) => m.get(k.as_ref()).cloned().unwrap_or(Value::Nil),
                other => {
                    return Err(format!(
                        "value has type {}; should be string",
                        other.type_name()
                    ))
                }
            },
            Value::Labels(l) => match idx {
                Value::Str(k) => Value::str(l.label(k).unwrap_or("")),
                other => {
                    return Err(format!(
                        "value has type {}; should be string",
                        other.type_name()
                    ))
                }
            },
            Value::Nil => return Err("index of untyped nil".into()),
            other => return Err(format!("can't index item of type {}", other.type_name())),
        };
    }
    Ok(item)
}

/// Go's `slice item [i [j [k]]]`.
fn slice<'a>(a: &[Value<'a>]) -> Result<Value<'a>, String> {
    let item = arg(a, 0);
    let idx: Vec<i64> = a.iter().skip(1).map(index_int).collect::<Result<_, _>>()?;
    if idx.len() > 3 {
        return Err(format!("too many slice indexes: {}", idx.len()));
    }
    let len = match item {
        Value::Str(s) => {
            if idx.len() == 3 {
                return Err("cannot 3-index slice a string".into());
            }
            s.len()
        }
        Value::List(l) => l.len(),
        Value::Nil => return Err("slice of untyped nil".into()),
        other => return Err(format!("can't slice item of type {}", other.type_name())),
    } as i64;
    let mut bounds = [0, len, len];
    for (k, i) in idx.iter().enumerate() {
        if *i < 0 || *i > len {
            return Err(format!("index out of range: {i}"));
        }
        bounds[k] = *i;
    }
    if bounds[0] > bounds[1] {
        return Err(format!(
            "invalid slice index: {} > {}",
            bounds[0], bounds[1]
        ));
    }
    let (from, to) = (bounds[0] as usize, bounds[1] as usize);
    Ok(match item {
        Value::Str(s) => byte_slice(s.clone(), from, to),
        Value::List(l) => Value::List(Rc::new(l[from..to].to_vec())),
        _ => Value::Nil,
    })
}

#[derive(PartialEq)]
enum Basic {
    Bool,
    Int,
    Float,
    Str,
    /// Not a basic kind (time, collections) or nil.
    Other,
}

fn basic(v: &Value<'_>) -> Basic {
    match v {
        Value::Bool(_) => Basic::Bool,
        Value::Int(_) | Value::Int64(_) => Basic::Int,
        Value::Float(_) => Basic::Float,
        Value::Str(_) => Basic::Str,
        _ => Basic::Other,
    }
}

/// Go's `eq` for one pair.
fn eq(x: &Value<'_>, y: &Value<'_>) -> Result<bool, String> {
    let (kx, ky) = (basic(x), basic(y));
    if kx != ky {
        // A nil against anything is simply unequal; other mixes are an error in Go.
        if matches!(x, Value::Nil) || matches!(y, Value::Nil) {
            return Ok(false);
        }
        return Err("incompatible types for comparison".into());
    }
    Ok(match (x, y) {
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Int(a) | Value::Int64(a), Value::Int(b) | Value::Int64(b)) => a == b,
        (Value::Float(a), Value::Float(b)) => a == b,
        (Value::Str(a), Value::Str(b)) => a == b,
        (Value::Nil, Value::Nil) => true,
        (Value::Nil, _) | (_, Value::Nil) => false,
        (Value::Time(a), Value::Time(b)) => a == b,
        (a, _) => return Err(format!("non-comparable type {}", a.type_name())),
    })
}

/// Go's `lt`.
fn lt(x: &Value<'_>, y: &Value<'_>) -> Result<bool, String> {
    let (kx, ky) = (basic(x), basic(y));
    if kx == Basic::Other || ky == Basic::Other {
        return Err("invalid type for comparison".into());
    }
    if kx != ky {
        return Err("incompatible types for comparison".into());
    }
    Ok(match (x, y) {
        (Value::Int(a) | Value::Int64(a), Value::Int(b) | Value::Int64(b)) => a < b,
        (Value::Float(a), Value::Float(b)) => a < b,
        (Value::Str(a), Value::Str(b)) => a < b,
        _ => return Err("invalid type for comparison".into()),
    })
}

/// spf13/cast `ToInt64` as sprig uses it: failures give 0.
pub(crate) fn to_int64(v: &Value<'_>) -> i64 {
    match v {
        Value::Int(i) | Value::Int64(i) => *i,
        Value::Float(f) => *f as i64,
        Value::Bool(b) => i64::from(*b),
        Value::Str(s) => parse_go_int(trim_zero_decimal(s)).unwrap_or(0),
        _ => 0,
    }
}

/// spf13/cast `ToFloat64`: failures give 0.
pub(crate) fn to_f64(v: &Value<'_>) -> f64 {
    match v {
        Value::Int(i) | Value::Int64(i) => *i as f64,
        Value::Float(f) => *f,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Str(s) => s.parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

/// cast drops a zero-only decimal part (`"10.00"` → `"10"`) before parsing an integer.
fn trim_zero_decimal(s: &str) -> &str {
    let b = s.as_bytes();
    let mut found_zero = false;
    for i in (1..=b.len()).rev() {
        match b[i - 1] {
            b'.' if found_zero => return &s[..i - 1],
            b'.' => return s,
            b'0' => found_zero = true,
            _ => return s,
        }
    }
    s
}

/// Go's `strconv.ParseInt(s, 0, 64)`: sign, `0x`/`0o`/`0b`/leading-`0` prefixes, underscores.
pub(crate) fn parse_go_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.get(..2).map(str::to_ascii_lowercase);
    let (radix, digits) = match lower.as_deref() {
        Some("0x") => (16, &body[2..]),
        Some("0o") => (8, &body[2..]),
        Some("0b") => (2, &body[2..]),
        _ if body.len() > 1 && body.starts_with('0') => (8, &body[1..]),
        _ => (10, body),
    };
    if digits.is_empty()
        || digits.starts_with('_') && radix == 10
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    if clean.is_empty() || clean.starts_with(['+', '-']) {
        return None;
    }
    let mag = u64::from_str_radix(&clean, radix).ok()?;
    if neg {
        if mag <= i64::MAX as u64 + 1 {
            Some((mag as i64).wrapping_neg())
        } else {
            None
        }
    } else {
        i64::try_from(mag).ok()
    }
}

fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// A small exact decimal, standing in for shopspring/decimal which sprig's float functions
/// use (so `addf 0.1 0.2` is 0.3, not 0.30000000000000004).
#[derive(Clone, Copy)]
struct Dec {
    m: i128,
    scale: u32,
}

impl Dec {
    fn from_f64(f: f64) -> Option<Dec> {
        if !f.is_finite() {
            return None;
        }
        // Shortest round-trip digits, as decimal.NewFromFloat uses.
        let s = format!("{f:e}");
        let (mant, exp) = s.split_once('e')?;
        let exp: i32 = exp.parse().ok()?;
        let neg = mant.starts_with('-');
        let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
        let mut m: i128 = digits.parse().ok()?;
        if neg {
            m = -m;
        }
        let shift = exp - (digits.len() as i32 - 1);
        if shift >= 0 {
            Some(Dec {
                m: m.checked_mul(10i128.checked_pow(shift as u32)?)?,
                scale: 0,
            })
        } else {
            Some(Dec {
                m,
                scale: (-shift) as u32,
            })
        }
    }

    fn rescale(self, scale: u32) -> Option<i128> {
        self.m
            .checked_mul(10i128.checked_pow(scale.checked_sub(self.scale)?)?)
    }

    fn add(self, o: Dec, sign: i128) -> Option<Dec> {
        let scale = self.scale.max(o.scale);
        Some(Dec {
            m: self.rescale(scale)?.checked_add(sign * o.rescale(scale)?)?,
            scale,
        })
    }

    fn mul(self, o: Dec) -> Option<Dec> {
        Some(Dec {
            m: self.m.checked_mul(o.m)?,
            scale: self.scale.checked_add(o.scale)?,
        })
    }

    /// Quotient rounded half away from zero to 16 decimal places (decimal.DivisionPrecision).
    fn div(self, o: Dec) -> Option<Dec> {
        const PREC: u32 = 16;
        // self.m/10^s1 / (o.m/10^s2) = self.m*10^(s2+PREC) / (o.m*10^s1) / 10^PREC
        let num = self.m.checked_mul(10i128.checked_pow(o.scale + PREC)?)?;
        let den = o.m.checked_mul(10i128.checked_pow(self.scale)?)?;
        let q = num / den;
        let r = num % den;
        let q = if r.checked_mul(2)?.abs() >= den.abs() {
            q + if (num < 0) != (den < 0) { -1 } else { 1 }
        } else {
            q
        };
        Some(Dec { m: q, scale: PREC })
    }

    fn to_f64(self) -> f64 {
        format!("{}e-{}", self.m, self.scale).parse().unwrap_or(0.0)
    }
}

/// `addf`/`subf`/`mulf`/`divf`: exact decimal arithmetic with an f64 fallback on overflow.
fn decimal_fold(f: Func, a: &[Value<'_>]) -> Result<f64, String> {
    let floats: Vec<f64> = a.iter().map(to_f64).collect();
    if f == Func::DivF && floats.iter().skip(1).any(|d| *d == 0.0) {
        return Err("decimal division by 0".into());
    }
    let exact = || -> Option<f64> {
        let mut it = floats.iter().map(|x| Dec::from_f64(*x));
        let first = match f {
            Func::AddF => Dec { m: 0, scale: 0 },
            _ => it.next()??,
        };
        let mut acc = first;
        for d in it {
            let d = d?;
            acc = match f {
                Func::AddF => acc.add(d, 1)?,
                Func::SubF => acc.add(d, -1)?,
                Func::MulF => acc.mul(d)?,
                _ => acc.div(d)?,
            };
        }
        Some(acc.to_f64())
    };
    Ok(exact().unwrap_or_else(|| {
        let mut it = floats.iter().copied();
        let first = if f == Func::AddF {
            0.0
        } else {
            it.next().unwrap_or(0.0)
        };
        it.fold(first, |acc, x| match f {
            Func::AddF => acc + x,
            Func::SubF => acc - x,
            Func::MulF => acc * x,
            _ => acc / x,
        })
    }))
}

/// go-humanize `ParseBytes`.
fn parse_bytes(s: &str) -> Result<f64, String> {
    let num_len = s
        .char_indices()
        .find(|(_, c)| !(c.is_numeric() || *c == '.' || *c == ','))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    let num = s[..num_len].replace(',', "");
    let f: f64 = num.parse().map_err(|_| {
        format!(
            "strconv.ParseFloat: parsing {}: invalid syntax",
            printf::quote(&num, false)
        )
    })?;
    let unit = s[num_len..].trim().to_lowercase();
    let mult: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "kib" | "ki" => 1024.0,
        "kb" | "k" => 1e3,
        "mib" | "mi" => 1024f64.powi(2),
        "mb" | "m" => 1e6,
        "gib" | "gi" => 1024f64.powi(3),
        "gb" | "g" => 1e9,
        "tib" | "ti" => 1024f64.powi(4),
        "tb" | "t" => 1e12,
        "pib" | "pi" => 1024f64.powi(5),
        "pb" | "p" => 1e15,
        "eib" | "ei" => 1024f64.powi(6),
        "eb" | "e" => 1e18,
        _ => return Err(format!("unhandled size name: {unit}")),
    };
    let v = f * mult;
    if v >= u64::MAX as f64 {
        return Err(format!("too large: {s}"));
    }
    // humanize returns a uint64.
    Ok(v.trunc())
}

/// Loki's `unixToTime`: the length of the digits says the unit.
fn unix_to_time(epoch: &str) -> Result<GoTime, String> {
    let i: i64 = epoch.parse().map_err(|_| {
        format!(
            "unable to parse time '{epoch}': strconv.ParseInt: parsing {}: invalid syntax",
            printf::quote(epoch, false)
        )
    })?;
    Ok(match epoch.len() {
        5 => GoTime::from_unix(i.saturating_mul(86_400), 0),
        10 => GoTime::from_unix(i, 0),
        13 => GoTime::from_unix(0, i.saturating_mul(1_000_000)),
        16 => GoTime::from_unix(0, i.saturating_mul(1_000)),
        19 => GoTime::from_unix(0, i),
        // Loki wraps a nil error here, which Go prints as `%!w(<nil>)`.
        _ => return Err(format!("unable to parse time '{epoch}': %!w(<nil>)")),
    })
}

/// Go's deprecated `strings.Title`: upper-cases letters that start a word.
fn title(s: &str) -> String {
    let mut prev = ' ';
    s.chars()
        .map(|c| {
            let sep = if prev.is_ascii() {
                !(prev.is_ascii_alphanumeric() || prev == '_')
            } else {
                !(prev.is_alphabetic() || prev.is_numeric()) && prev.is_whitespace()
            };
            prev = c;
            if sep {
                c.to_uppercase().next().unwrap_or(c)
            } else {
                c
            }
        })
        .collect()
}

/// Go's `url.QueryEscape`.
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
                out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
            }
        }
    }
    out
}

/// Go's `url.QueryUnescape`.
fn query_unescape(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (
                    b.get(i + 1).and_then(|c| hex(*c)),
                    b.get(i + 2).and_then(|c| hex(*c)),
                ) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        let end = (i + 3).min(b.len());
                        let esc = String::from_utf8_lossy(&b[i..end]);
                        return Err(format!("invalid URL escape {}", printf::quote(&esc, false)));
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Go's `template.HTMLEscapeString`.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Go's `template.JSEscapeString`.
fn js_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 || (!c.is_ascii() && c.is_control()) => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (Go's `base64.StdEncoding`).
fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for k in 0..4 {
            if k <= n {
                out.push(char::from(B64[((v >> (18 - 6 * k)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Go's `base64.StdEncoding.DecodeString`: newlines are ignored, padding is required.
fn b64_decode(s: &str) -> Result<Vec<u8>, String> {
    let err = |i: usize| format!("illegal base64 data at input byte {i}");
    let symbols: Vec<(usize, u8)> = s
        .bytes()
        .enumerate()
        .filter(|(_, b)| *b != b'\n' && *b != b'\r')
        .collect();
    let mut out = Vec::with_capacity(symbols.len() / 4 * 3);
    for quad in symbols.chunks(4) {
        let mut v: u32 = 0;
        let mut pad = 0;
        for (k, &(i, b)) in quad.iter().enumerate() {
            let d = match b {
                b'=' if k >= 2 => {
                    pad += 1;
                    0
                }
                _ if pad > 0 => return Err(err(i)),
                _ => B64.iter().position(|c| *c == b).ok_or_else(|| err(i))? as u32,
            };
            v = (v << 6) | d;
        }
        if quad.len() < 4 {
            // Go reports the offset where the incomplete quantum starts.
            return Err(err(quad.first().map_or(s.len(), |q| q.0)));
        }
        let bytes = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

/// Prometheus' `convertToFloat`: numbers as they are, strings parsed (an error otherwise).
fn prom_float(v: &Value<'_>) -> Result<f64, String> {
    match v {
        Value::Int(i) | Value::Int64(i) => Ok(*i as f64),
        Value::Float(f) => Ok(*f),
        Value::Str(s) => s.parse::<f64>().map_err(|_| {
            format!(
                "strconv.ParseFloat: parsing {}: invalid syntax",
                printf::quote(s, false)
            )
        }),
        Value::Time(t) => Ok(t.unix_nano() as f64 / 1e9),
        other => Err(format!("can't convert {} to float", other.type_name())),
    }
}

/// Go's `fmt.Sprintf("%.4g", v)`.
fn go_g4(v: f64) -> String {
    let mut s = String::new();
    printf::sprintf(&mut s, "%.4g", &[Value::Float(v)]);
    s
}

/// Prometheus' `humanize`: SI prefixes, four significant digits.
fn humanize(mut v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return go_g4(v);
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", go_g4(v))
}

/// Prometheus' `humanize1024`: binary prefixes.
fn humanize_1024(mut v: f64) -> String {
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return go_g4(v);
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", go_g4(v))
}

/// Prometheus' `humanizeDuration`: `1d 2h 3m 4s` down to seconds, SI prefixes below.
fn humanize_duration(mut v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return go_g4(v);
    }
    if v == 0.0 {
        return format!("{}s", go_g4(v));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        v = v.abs();
        let d = v as i64;
        let (secs, mins, hours, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86400);
        if days != 0 {
            return format!("{sign}{days}d {hours}h {mins}m {secs}s");
        }
        if hours != 0 {
            return format!("{sign}{hours}h {mins}m {secs}s");
        }
        if mins != 0 {
            return format!("{sign}{mins}m {secs}s");
        }
        return format!("{sign}{}s", go_g4(v));
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", go_g4(v))
}

/// Prometheus' `stripPort`: the host of `host:port` (IPv6 brackets removed).
fn strip_port(hostport: &str) -> &str {
    if let Some(rest) = hostport.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            return &rest[..end];
        }
        return hostport;
    }
    match hostport.rfind(':') {
        Some(i) if !hostport[..i].contains(':') => &hostport[..i],
        _ => hostport,
    }
}

/// Prometheus' `stripDomain`: the first label of a host name, keeping a port.
fn strip_domain(hostport: &str) -> String {
    let (host, port) = match hostport.rfind(':') {
        Some(i) if !hostport[..i].contains(':') => (&hostport[..i], &hostport[i..]),
        _ => (hostport, ""),
    };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return hostport.to_string();
    }
    match host.find('.') {
        Some(i) => format!("{}{port}", &host[..i]),
        None => hostport.to_string(),
    }
}

/// The path of a URL (Prometheus' `pathPrefix`).
pub(crate) fn url_path(url: &str) -> String {
    let rest = match url.find("://") {
        Some(i) => &url[i + 3..],
        None => return String::new(),
    };
    match rest.find('/') {
        Some(i) => rest[i..].split(['?', '#']).next().unwrap_or("").to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_int_parsing_follows_strconv_base0() {
        assert_eq!(parse_go_int("104"), Some(104));
        assert_eq!(parse_go_int("-0x1f"), Some(-31));
        assert_eq!(parse_go_int("010"), Some(8));
        assert_eq!(parse_go_int("1_000"), Some(1000));
        assert_eq!(parse_go_int("08"), None);
        assert_eq!(parse_go_int("33.9"), None);
        assert_eq!(to_int64(&Value::str("10.00")), 10);
        assert_eq!(to_int64(&Value::str("33.9")), 0);
    }

    #[test]
    fn decimal_float_math() {
        let f = |func, a: &[f64]| {
            let v: Vec<Value<'_>> = a.iter().map(|x| Value::Float(*x)).collect();
            decimal_fold(func, &v)
        };
        assert_eq!(f(Func::AddF, &[0.1, 0.2]), Ok(0.3));
        assert_eq!(f(Func::SubF, &[1.0, 0.9]), Ok(0.1));
        assert_eq!(f(Func::MulF, &[1.1, 3.0]), Ok(3.3));
        assert_eq!(f(Func::DivF, &[1.0, 3.0]), Ok(0.3333333333333333));
        assert!(f(Func::DivF, &[1.0, 0.0]).is_err());
    }

    #[test]
    fn base64_round_trip() {
        assert_eq!(b64_encode(b"hello"), "aGVsbG8=");
        assert_eq!(b64_decode("aGVsbG8="), Ok(b"hello".to_vec()));
        assert_eq!(
            b64_decode("aGVsbG8"),
            Err("illegal base64 data at input byte 4".into())
        );
        assert_eq!(
            b64_decode("a$=="),
            Err("illegal base64 data at input byte 1".into())
        );
    }

    #[test]
    fn humanize_bytes() {
        assert_eq!(parse_bytes("10 MB"), Ok(10e6));
        assert_eq!(parse_bytes("1.5KiB"), Ok(1536.0));
        assert_eq!(parse_bytes("42"), Ok(42.0));
        assert_eq!(
            parse_bytes("3 parsecs"),
            Err("unhandled size name: parsecs".into())
        );
    }

    #[test]
    fn url_escaping() {
        assert_eq!(query_escape("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
        assert_eq!(query_unescape("a+b%26c"), Ok("a b&c".into()));
        assert_eq!(
            query_unescape("%zz"),
            Err("invalid URL escape \"%zz\"".into())
        );
    }

    #[test]
    fn go_title_case() {
        assert_eq!(
            title("hello wide-world foo_bar"),
            "Hello Wide-World Foo_bar"
        );
    }
}
