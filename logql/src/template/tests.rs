//! End-to-end template tests: Loki's recorded outputs (conformance goldens 058, 076–094) on
//! label maps built by hand from the dataset's JSON lines, and Go semantics per feature.

use std::collections::BTreeMap;

use super::*;

struct Labels(BTreeMap<String, String>);

impl LabelLookup for Labels {
    fn label(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn all(&self) -> Vec<(&str, &str)> {
        self.0
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// The dataset line at 1763603999697371819 and the labels `| json` gives it in the goldens
/// (stream labels, structured metadata `trace_id`, and the JSON fields as strings).
const DAVE_LINE: &str = r#"{"timestamp":"2025-11-20T01:59:59.697371Z","level":"INFO","logger":"app.routes.game","message":"create Game","correlation_id":"2701a0cc-9b36-438e-a5ca-68b4ddef8cb1","user_id":104,"username":"dave","action":"CREATE","resource_type":"Game","resource_id":"452","duration_ms":33.9,"ip":"172.16.4.4","method":"POST","path":"/api/games/452","status":200}"#;
const DAVE_TS: i64 = 1_763_603_999_697_371_819;

fn dave() -> Labels {
    labels(&[
        ("action", "CREATE"),
        ("correlation_id", "2701a0cc-9b36-438e-a5ca-68b4ddef8cb1"),
        ("duration_ms", "33.9"),
        ("env", "prod"),
        ("host", "app-1"),
        ("ip", "172.16.4.4"),
        ("job", "tovplay-backend"),
        ("level", "INFO"),
        ("logger", "app.routes.game"),
        ("message", "create Game"),
        ("method", "POST"),
        ("path", "/api/games/452"),
        ("resource_id", "452"),
        ("resource_type", "Game"),
        ("service_name", "tovplay-backend"),
        ("status", "200"),
        ("timestamp", "2025-11-20T01:59:59.697371Z"),
        ("trace_id", "1a935d67bc19c74a1eefa42bbc2f9c47"),
        ("user_id", "104"),
        ("username", "dave"),
    ])
}

fn run_with(src: &str, lb: &Labels, line: &str, ts_ns: i64) -> Result<String, String> {
    let t = Template::parse(src)?;
    t.execute(&TemplateContext {
        line,
        ts_ns,
        labels: lb,
    })
}

fn run(src: &str, lb: &Labels) -> Result<String, String> {
    run_with(src, lb, "", 0)
}

/// Executes with no labels; panics on error (test helper only).
fn ok(src: &str) -> String {
    match run(src, &labels(&[])) {
        Ok(s) => s,
        Err(e) => panic!("{src}: {e}"),
    }
}

fn err(src: &str) -> String {
    match run(src, &labels(&[])) {
        Ok(s) => panic!("{src}: expected an error, got {s:?}"),
        Err(e) => e,
    }
}

#[test]
fn golden_076_upper_trunc_printf() -> Result<(), String> {
    let src = r#"{{.level | ToUpper}} {{.message | trunc 5}} {{printf "%05.1f" .duration_ms}}"#;
    assert_eq!(run(src, &dave())?, "INFO creat %!f(string=00003)");
    let bob = labels(&[
        ("level", "INFO"),
        ("message", "create Session"),
        ("duration_ms", "8.5"),
    ]);
    assert_eq!(run(src, &bob)?, "INFO creat %!f(string=00008)");
    let w = labels(&[
        ("level", "WARNING"),
        ("message", "read Session"),
        ("duration_ms", "34.1"),
    ]);
    assert_eq!(run(src, &w)?, "WARNING read  %!f(string=00003)");
    Ok(())
}

#[test]
fn golden_077_default() -> Result<(), String> {
    assert_eq!(run(r#"{{ default "none" .error }}"#, &dave())?, "none");
    Ok(())
}

#[test]
fn golden_078_if_eq() -> Result<(), String> {
    let src = r#"{{ if eq .level "ERROR" }}E{{ else }}-{{ end }} {{ .status }}"#;
    assert_eq!(run(src, &dave())?, "- 200");
    let e = labels(&[("level", "ERROR"), ("status", "500")]);
    assert_eq!(run(src, &e)?, "E 500");
    Ok(())
}

#[test]
fn golden_079_line_len() -> Result<(), String> {
    // The golden's first entry is this line; Loki printed 348.
    assert_eq!(DAVE_LINE.len(), 348);
    assert_eq!(
        run_with("{{ __line__ | len }}", &dave(), DAVE_LINE, DAVE_TS)?,
        "348"
    );
    Ok(())
}

#[test]
fn golden_080_timestamp_date() -> Result<(), String> {
    let src = r#"{{ __timestamp__ | date "2006-01-02T15:04:05" }} {{.action}}"#;
    assert_eq!(
        run_with(src, &dave(), DAVE_LINE, DAVE_TS)?,
        "2025-11-20T01:59:59 CREATE"
    );
    Ok(())
}

#[test]
fn golden_081_regex_replace() -> Result<(), String> {
    assert_eq!(
        run(r#"{{ regexReplaceAll "[0-9]+" .path "N" }}"#, &dave())?,
        "/api/games/N"
    );
    Ok(())
}

#[test]
fn golden_082_replace_has_prefix() -> Result<(), String> {
    let src = r#"{{ replace "api" "API" .path }} {{ .path | hasPrefix "/api/games" }}"#;
    assert_eq!(run(src, &dave())?, "/API/games/452 true");
    let t = labels(&[("path", "/api/tournaments/99")]);
    assert_eq!(run(src, &t)?, "/API/tournaments/99 false");
    Ok(())
}

#[test]
fn golden_085_label_lower() -> Result<(), String> {
    let t = Template::parse_named("label", "{{ .level | lower }}")?;
    let out = t.execute(&TemplateContext {
        line: "",
        ts_ns: 0,
        labels: &dave(),
    })?;
    assert_eq!(out, "info");
    Ok(())
}

#[test]
fn golden_092_int_add() -> Result<(), String> {
    assert_eq!(run("{{ .user_id | int | add 1 }}", &dave())?, "105");
    Ok(())
}

#[test]
fn golden_094_unknown_function() {
    assert_eq!(
        Template::parse("{{ toJson .action }}").err(),
        Some(r#"template: line:1: function "toJson" not defined"#.to_string())
    );
}

#[test]
fn golden_058_field() -> Result<(), String> {
    let lb = labels(&[("msg", "watching new directory")]);
    assert_eq!(run("{{.msg}}", &lb)?, "watching new directory");
    Ok(())
}

#[test]
fn missing_label_is_empty() {
    assert_eq!(ok("[{{ .nope }}]"), "[]");
    assert_eq!(ok(r#"{{ if eq .nope "" }}empty{{ end }}"#), "empty");
}

#[test]
fn text_and_trim_markers() {
    assert_eq!(ok("a  {{- 1 -}}  b"), "a1b");
    assert_eq!(ok("a {{- /* note */ -}}\n b"), "ab");
    assert_eq!(ok("{{/* only */}}x"), "x");
    assert_eq!(ok("plain"), "plain");
}

#[test]
fn control_structures() {
    assert_eq!(
        ok("{{ if false }}a{{ else if 0 }}b{{ else if \"x\" }}c{{ else }}d{{ end }}"),
        "c"
    );
    assert_eq!(
        ok(r#"{{ with "v" }}[{{ . }}]{{ else }}none{{ end }}"#),
        "[v]"
    );
    assert_eq!(
        ok(r#"{{ with "" }}[{{ . }}]{{ else }}none{{ end }}"#),
        "none"
    );
    assert_eq!(ok(r#"{{ with $x := "a" }}{{ $x }}{{ . }}{{ end }}"#), "aa");
    assert_eq!(ok("{{ range 3 }}{{ . }}{{ end }}"), "012");
    assert_eq!(
        ok(
            r#"{{ range $i, $e := fromJson "[\"a\",\"b\",\"c\"]" }}{{ if eq $i 1 }}{{ continue }}{{ end }}{{ $i }}={{ $e }};{{ end }}"#
        ),
        "0=a;2=c;"
    );
    assert_eq!(
        ok("{{ range $i := 10 }}{{ if eq $i 2 }}{{ break }}{{ end }}{{ $i }}{{ end }}"),
        "01"
    );
    assert_eq!(
        ok(r#"{{ range fromJson "[]" }}x{{ else }}empty{{ end }}"#),
        "empty"
    );
    assert_eq!(
        ok(r#"{{ range $k, $v := fromJson "{\"b\":2,\"a\":1}" }}{{ $k }}:{{ $v }} {{ end }}"#),
        "a:1 b:2 "
    );
}

#[test]
fn variables() {
    assert_eq!(ok(r#"{{ $x := "a" }}{{ $x = "b" }}{{ $x }}"#), "b");
    assert_eq!(
        ok(r#"{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}"#),
        "2"
    );
    let lb = labels(&[("a", "A")]);
    assert_eq!(
        run("{{ $.a }}{{ with 1 }}{{ $.a }}{{ end }}", &lb).ok(),
        Some("AA".into())
    );
}

#[test]
fn parenthesised_pipelines_and_chains() {
    assert_eq!(
        ok(r#"{{ (fromJson "{\"a\":{\"b\":\"deep\"}}").a.b }}"#),
        "deep"
    );
    assert_eq!(ok("{{ add (mul 2 3) 1 }}"), "7");
    assert_eq!(ok(r#"{{ ("x" | upper) }}"#), "X");
    assert_eq!(ok("{{ (unixToTime \"1700000000\").Unix }}"), "1700000000");
}

#[test]
fn labels_root_and_index() {
    let lb = labels(&[("a", "1"), ("b-c", "2")]);
    assert_eq!(
        run(r#"{{ index . "b-c" }}|{{ index . "zz" }}"#, &lb).ok(),
        Some("2|".into())
    );
    assert_eq!(run("{{ . }}", &lb).ok(), Some("map[a:1 b-c:2]".into()));
    assert_eq!(run("{{ len . }}", &lb).ok(), Some("2".into()));
    assert_eq!(
        run("{{ range $k, $v := . }}{{ $k }}={{ $v }},{{ end }}", &lb).ok(),
        Some("a=1,b-c=2,".into())
    );
}

#[test]
fn go_builtins() {
    assert_eq!(
        ok("{{ and 1 0 2 }} {{ or 0 \"\" 3 }} {{ not 0 }} {{ and 1 2 }}"),
        "0 3 true 2"
    );
    assert_eq!(
        ok(r#"{{ len "héllo" }} {{ index "abc" 1 }} {{ slice "abcdef" 1 3 }}"#),
        "6 98 bc"
    );
    assert_eq!(
        ok(r#"{{ print 1 2 "a" "b" 3 }}|{{ println "x" 1 }}|"#),
        "1 2ab3|x 1\n|"
    );
    assert_eq!(
        ok(
            r#"{{ eq 1 2 3 1 }} {{ ne "a" "b" }} {{ lt 1 2 }} {{ le 2 2 }} {{ gt "b" "a" }} {{ ge 1.5 2.5 }}"#
        ),
        "true true true true true false"
    );
    assert_eq!(
        ok(r#"{{ urlquery "a b&c" }} {{ html "<a href='x'>" }} {{ js "it's <b>" }}"#),
        r"a+b%26c &lt;a href=&#39;x&#39;&gt; it\'s \u003Cb\u003E"
    );
    // `and` is lazy: the failing call after a false operand never runs.
    assert_eq!(ok(r#"{{ and false (div 1 0) }}"#), "false");
}

#[test]
fn printf_verbs() {
    assert_eq!(
        ok(
            r#"{{ printf "%s|%d|%v|%f|%.2f|%05.1f|%q|%x|%t|%%" "s" 42 true 3.5 3.14259 2.25 "q" 255 false }}"#
        ),
        r#"s|42|true|3.500000|3.14|002.2|"q"|ff|false|%"#
    );
    let lb = labels(&[("n", "7")]);
    assert_eq!(
        run(r#"{{ printf "%d" .n }} {{ printf "%d" (.n | int) }}"#, &lb).ok(),
        Some("%!d(string=7) 7".into())
    );
    assert_eq!(ok(r#"{{ printf "%s %s" "a" }}"#), "a %!s(MISSING)");
    assert_eq!(
        ok(r#"{{ printf "%v" 1.0 }} {{ 1e6 }} {{ 2.50 }}"#),
        "1 1e+06 2.5"
    );
}

#[test]
fn comparison_errors_follow_go() {
    let lb = labels(&[("status", "200")]);
    let e = run("{{ eq .status 200 }}", &lb).err().unwrap_or_default();
    assert!(
        e.ends_with("error calling eq: incompatible types for comparison"),
        "{e}"
    );
    assert!(err("{{ lt true false }}").ends_with("invalid type for comparison"));
}

#[test]
fn string_functions() {
    let lb = labels(&[("s", "  Hello World  "), ("p", "/api/x")]);
    let r = |src: &str| run(src, &lb).unwrap_or_else(|e| e);
    assert_eq!(r("{{ .s | TrimSpace | ToLower }}"), "hello world");
    assert_eq!(r("{{ .s | trim | ToUpper }}"), "HELLO WORLD");
    assert_eq!(
        r(r#"{{ Replace .p "/" "_" 1 }}|{{ Replace .p "/" "_" -1 }}"#),
        "_api/x|_api_x"
    );
    assert_eq!(
        r(r#"{{ Trim "xxhixx" "x" }} {{ TrimLeft "xxhi" "x" }} {{ TrimRight "hixx" "x" }}"#),
        "hi hi hi"
    );
    assert_eq!(
        r(r#"{{ TrimPrefix .p "/api" }} {{ TrimSuffix .p "/x" }}"#),
        "/x /api"
    );
    assert_eq!(
        r(r#"{{ .p | trimPrefix "/api" }} {{ .p | trimSuffix "/x" }} {{ trimAll "/" .p }}"#),
        "/x /api api/x"
    );
    assert_eq!(
        r(r#"{{ "hello world" | title }} {{ "ABC" | lower }} {{ "abc" | upper }}"#),
        "Hello World abc ABC"
    );
    assert_eq!(
        r(r#"{{ trunc 3 "abcdef" }} {{ trunc -2 "abcdef" }} {{ trunc 10 "ab" }}"#),
        "abc ef ab"
    );
    assert_eq!(
        r(r#"{{ substr 1 3 "abcdef" }} {{ substr -1 2 "abcdef" }} {{ substr 2 99 "abcdef" }}"#),
        "bc ab cdef"
    );
    assert_eq!(
        r(r#"{{ contains "World" .s }} {{ hasSuffix "/x" .p }} {{ hasPrefix "x" .p }}"#),
        "true true false"
    );
    assert_eq!(
        r(r#"{{ indent 2 "a\nb" }}|{{ nindent 1 "a" }}"#),
        "  a\n  b|\n a"
    );
    assert_eq!(
        r(r#"{{ repeat 3 "ab" }} {{ replace "o" "0" "foo" }}"#),
        "ababab f00"
    );
    assert_eq!(
        r(
            r#"[{{ alignLeft 5 "hi" }}][{{ alignLeft 2 "hello" }}][{{ alignRight 5 "hi" }}][{{ alignRight 2 "hello" }}]"#
        ),
        "[hi   ][he][   hi][lo]"
    );
    assert_eq!(
        r(r#"{{ b64enc "hello" }} {{ b64dec "aGVsbG8=" }}"#),
        "aGVsbG8= hello"
    );
    assert_eq!(
        r(r#"{{ urlencode "a b/c" }} {{ urldecode "a%20b+c" }}"#),
        "a+b%2Fc a b c"
    );
}

#[test]
fn regex_functions() {
    assert_eq!(
        ok(r#"{{ regexReplaceAll "(\\w+)@(\\w+)" "me@host you@there" "${2}:$1" }}"#),
        "host:me there:you"
    );
    assert_eq!(
        ok(r#"{{ regexReplaceAllLiteral "[0-9]" "a1b2" "$1" }}"#),
        "a$1b$1"
    );
    assert_eq!(
        ok(r#"{{ count "a" "banana" }} {{ "xx" | count "x" }}"#),
        "3 2"
    );
    // A regex computed at run time is compiled then.
    let lb = labels(&[("re", "[a-c]+")]);
    assert_eq!(
        run(r#"{{ regexReplaceAll .re "abcdef" "_" }}"#, &lb).ok(),
        Some("_def".into())
    );
    assert!(err(r#"{{ regexReplaceAll "(" "x" "y" }}"#).contains("error calling regexReplaceAll"));
}

#[test]
fn math_functions() {
    assert_eq!(
        ok(r#"{{ add 1 2 3 }} {{ sub 5 7 }} {{ mul 2 3 4 }} {{ div 7 2 }} {{ mod -7 3 }}"#),
        "6 -2 24 3 -1"
    );
    assert_eq!(
        ok(r#"{{ addf 0.1 0.2 }} {{ subf 1 0.25 }} {{ mulf 1.5 2 }} {{ divf 1 4 }}"#),
        "0.3 0.75 3 0.25"
    );
    assert_eq!(
        ok(r#"{{ max 1 5 3 }} {{ min 4 2 9 }} {{ maxf 1.5 2.5 }} {{ minf 1.5 -2 }}"#),
        "5 2 2.5 -2"
    );
    assert_eq!(
        ok(r#"{{ ceil 1.2 }} {{ floor 1.8 }} {{ round 3.14259 2 }} {{ round 2.5 0 }}"#),
        "2 1 3.14 3"
    );
    assert_eq!(
        ok(r#"{{ "3.7" | float64 }} {{ "0x10" | int }} {{ "abc" | int }} {{ int 3.9 }}"#),
        "3.7 16 0 3"
    );
    assert!(
        err("{{ div 1 0 }}").ends_with("error calling div: runtime error: integer divide by zero")
    );
}

#[test]
fn conversion_functions() {
    assert_eq!(
        ok(r#"{{ bytes "2 KiB" }} {{ duration "1m30s" }} {{ duration_seconds "250ms" }}"#),
        "2048 90 0.25"
    );
    assert!(err(r#"{{ duration "x" }}"#)
        .ends_with(r#"error calling duration: time: invalid duration "x""#));
    assert!(err(r#"{{ bytes "1 parsec" }}"#).contains("unhandled size name"));
}

#[test]
fn time_functions() -> Result<(), String> {
    let lb = labels(&[]);
    let r = |src: &str| run_with(src, &lb, "", DAVE_TS);
    assert_eq!(
        r("{{ __timestamp__ | unixEpochMillis }} {{ __timestamp__ | unixEpochNanos }}")?,
        "1763603999697 1763603999697371819"
    );
    assert_eq!(r("{{ __timestamp__ | unixEpoch }}")?, "1763603999");
    assert_eq!(
        r("{{ __timestamp__ }}")?,
        "2025-11-20 01:59:59.697371819 +0000 UTC"
    );
    assert_eq!(
        r(r#"{{ unixToTime "1700000000123" | date "2006-01-02 15:04:05.000" }}"#)?,
        "2023-11-14 22:13:20.123"
    );
    assert_eq!(
        r(r#"{{ toDate "2006-01-02" "2024-03-01" | unixEpoch }}"#)?,
        "1709251200"
    );
    assert_eq!(
        r(
            r#"{{ toDateInZone "2006-01-02 15:04" "UTC" "2024-03-01 10:30" | date "15:04 Jan 2" }}"#
        )?,
        "10:30 Mar 1"
    );
    assert_eq!(
        r(r#"{{ toDate "2006-01-02" "garbage" }}"#)?,
        "0001-01-01 00:00:00 +0000 UTC"
    );
    assert_eq!(r(r#"{{ date "2006" 0 }}"#)?, "1970");
    assert!(r(r#"{{ unixToTime "123" }}"#).is_err());
    assert_eq!(r("{{ (__timestamp__).Year }}-{{ (__timestamp__).YearDay }} {{ (__timestamp__).Hour }}:{{ (__timestamp__).Minute }}:{{ (__timestamp__).Second }}")?, "2025-324 1:59:59");
    let e = r(r#"{{ (__timestamp__).Format "2006" }}"#)
        .err()
        .unwrap_or_default();
    assert!(e.contains("can't evaluate field Format"), "{e}");
    let lb = labels(&[("ts", "2025-11-20T01:59:59.697371Z")]);
    let src = r#"{{ toDateInZone "2006-01-02T15:04:05.999999999Z" "UTC" .ts | unixEpochMillis }}"#;
    assert_eq!(run(src, &lb)?, "1763603999697");
    let src = r#"{{ .ts | toDate "2006-01-02T15:04:05Z07:00" | date "Jan _2 15:04:05.000" }}"#;
    assert_eq!(run(src, &lb)?, "Nov 20 01:59:59.697");
    let now = r(r#"{{ now | date "2006" }}"#)?;
    assert!(now.len() == 4 && now.as_str() >= "2024", "{now}");
    Ok(())
}

#[test]
fn from_json_values() {
    assert_eq!(
        ok(
            r#"{{ $j := fromJson "{\"a\":[1,2],\"n\":null}" }}{{ $j.a }} {{ index $j.a 1 }} {{ len $j.a }}"#
        ),
        "[1 2] 2 2"
    );
    assert_eq!(ok(r#"{{ (fromJson "not json") }}"#), "<no value>");
}

#[test]
fn argument_type_errors() {
    let lb = labels(&[("n", "5"), ("s", "abc")]);
    let e = run("{{ trunc .n .s }}", &lb).err().unwrap_or_default();
    assert_eq!(
        e,
        r#"template: line:1:9: executing "line" at <.n>: wrong type for value; expected int; got string"#
    );
    let e = err(r#"{{ hasPrefix 1 "x" }}"#);
    assert!(e.ends_with("expected string; found 1"), "{e}");
    let e = err(r#"{{ "x" | trunc "a" }}"#);
    assert!(e.ends_with(r#"expected integer; found "a""#), "{e}");
    let e = err(r#"{{ upper }}"#);
    assert!(
        e.ends_with("wrong number of args for upper: want 1 got 0"),
        "{e}"
    );
    let e = err(r#"{{ 1 | upper }}"#);
    assert!(
        e.ends_with("wrong type for value; expected string; got int"),
        "{e}"
    );
}

#[test]
fn execution_errors() {
    assert!(err(r#"{{ "x" 1 }}"#).contains("can't give argument to non-function"));
    assert!(err("{{ nil }}").contains("nil is not a command"));
    let lb = labels(&[("a", "x")]);
    let e = run("{{ .a.b }}", &lb).err().unwrap_or_default();
    assert!(e.ends_with("can't evaluate field b in type string"), "{e}");
    assert_eq!(
        err(r#"{{ index "abc" 5 }}"#),
        r#"template: line:1:3: executing "line" at <index "abc" 5>: error calling index: index out of range: 5"#
    );
    assert!(err("{{ range 1000000000000 }}{{ end }}").contains("range iterations"));
    assert!(err(r#"{{ repeat 1000000000 "xy" }}"#).contains("byte limit"));
    assert!(err(r#"{{ alignLeft 1000000000 "x" }}"#).contains("byte limit"));
    assert!(err(r#"{{ range "abc" }}{{ end }}"#).contains("range can't iterate over abc"));
}

#[test]
fn parse_errors() {
    for src in [
        "{{ .a",
        "{{ if 1 }}",
        "{{ end }}",
        "{{ $x }}",
        "{{ .a | }}",
        "{{ ( 1 }}",
        "{{ 1 | 2 }}",
        "{{ define \"x\" }}",
    ] {
        assert!(Template::parse(src).is_err(), "{src}");
    }
}

#[test]
fn template_is_send_sync_and_reusable() -> Result<(), String> {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Template>();
    let t = Template::parse("{{ .a }}-{{ __line__ }}")?;
    let mut buf = String::new();
    for (a, line) in [("1", "x"), ("2", "y")] {
        buf.clear();
        let lb = labels(&[("a", a)]);
        t.execute_into(
            &TemplateContext {
                line,
                ts_ns: 0,
                labels: &lb,
            },
            &mut buf,
        )?;
        assert_eq!(buf, format!("{a}-{line}"));
    }
    assert!(Template::parse("abc")?.is_constant());
    assert_eq!(
        Template::parse("{{ .message }}")?.single_field(),
        Some("message")
    );
    assert_eq!(Template::parse("{{ .a.b }}")?.single_field(), None);
    assert_eq!(Template::parse("x{{ .a }}")?.single_field(), None);
    Ok(())
}

/// The template of the first `line_format` stage of a LogQL query (`"…"` or `` `…` ``).
fn line_format_template(query: &str) -> Option<String> {
    let rest = &query[query.find("line_format ")? + "line_format ".len()..];
    if let Some(body) = rest.strip_prefix('`') {
        return Some(body[..body.find('`')?].to_string());
    }
    let body = rest.strip_prefix('"')?;
    let mut escaped = false;
    let end = body.char_indices().find(|&(_, c)| {
        let close = c == '"' && !escaped;
        escaped = c == '\\' && !escaped;
        close
    })?;
    // These queries only use JSON-compatible escapes.
    serde_json::from_str(&format!("\"{}\"", &body[..end.0])).ok()
}

/// Replays every recorded `line_format` result in the Loki goldens: the labels are the
/// recorded stream (line_format leaves labels alone), the line and time come from the
/// dataset, and the output must equal what Loki returned.
#[test]
fn conformance_goldens_line_format() -> Result<(), String> {
    use std::collections::HashMap;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance");
    let read = |p: std::path::PathBuf| {
        std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
    };
    let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).map_err(|e| e.to_string());

    let mut lines: HashMap<String, String> = HashMap::new();
    let dir = std::fs::read_dir(root.join("dataset")).map_err(|e| e.to_string())?;
    for file in dir {
        let path = file.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let push = json(&read(path)?)?;
            for stream in push["streams"].as_array().into_iter().flatten() {
                for v in stream["values"].as_array().into_iter().flatten() {
                    if let (Some(ts), Some(line)) = (v[0].as_str(), v[1].as_str()) {
                        lines.insert(ts.to_string(), line.to_string());
                    }
                }
            }
        }
    }

    let goldens = json(&read(root.join("loki-goldens.json"))?)?;
    let mut checked = 0;
    for case in goldens.as_array().into_iter().flatten() {
        let query = case["params"]["query"].as_str().unwrap_or_default();
        let Some(src) = line_format_template(query) else {
            continue;
        };
        if case["expect"]["status"] != 200 {
            continue;
        }
        let id = case["id"].as_str().unwrap_or_default();
        let tmpl = Template::parse(&src).map_err(|e| format!("{id}: {e}"))?;
        for stream in case["expect"]["json"]["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let lb = Labels(
                stream["stream"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect(),
            );
            for v in stream["values"].as_array().into_iter().flatten() {
                let ts = v[0].as_str().unwrap_or_default();
                let want = v[1].as_str().unwrap_or_default();
                let line = lines
                    .get(ts)
                    .ok_or_else(|| format!("{id}: no dataset line at {ts}"))?;
                let ts_ns: i64 = ts.parse().map_err(|_| format!("{id}: bad ts {ts}"))?;
                let got = tmpl
                    .execute(&TemplateContext {
                        line,
                        ts_ns,
                        labels: &lb,
                    })
                    .map_err(|e| format!("{id}: {e}"))?;
                assert_eq!(got, want, "{id} at {ts}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 60, "only {checked} golden lines checked");
    Ok(())
}

#[test]
fn sprig_math_returns_int64() {
    // sprig's integer math gives int64, which Go refuses where an int is expected.
    assert_eq!(
        ok(r#"{{ printf "%T %T %T" (add 1 2) (len "x") (int "3") }}"#),
        "int64 int int"
    );
    let e = err(r#"{{ trunc (add 1 2) "abcdef" }}"#);
    assert!(
        e.ends_with("wrong type for value; expected int; got int64"),
        "{e}"
    );
    assert_eq!(
        ok(
            r#"{{ trunc (int (add 1 2)) "abcdef" }} {{ eq (add 1 1) 2 }} {{ lt (len "ab") (sub 5 1) }}"#
        ),
        "abc true true"
    );
}

#[test]
fn define_template_and_block() {
    let lb = labels(&[("a", "A")]);
    let r = |src: &str| run(src, &lb).unwrap_or_else(|e| e);
    assert_eq!(
        r(r#"{{ define "t" }}<{{ . }}>{{ end }}{{ template "t" .a }}{{ template "t" "x" }}"#),
        "<A><x>"
    );
    // Use before definition, and `$` is the template's own dot.
    assert_eq!(
        r(r#"{{ template "t" 5 }}{{ define "t" }}{{ $ }}{{ $v := 1 }}{{ $v }}{{ end }}"#),
        "51"
    );
    assert_eq!(r(r#"[{{ block "b" .a }}{{ . | lower }}{{ end }}]"#), "[a]");
    assert_eq!(
        r(r#"{{ template "t" }}{{ define "t" }}{{ . }}{{ end }}"#),
        "<no value>"
    );
    assert!(r(r#"{{ template "nope" }}"#).ends_with(r#"template "nope" not defined"#));
    assert!(
        r(r#"{{ define "r" }}{{ template "r" }}{{ end }}{{ template "r" }}"#)
            .contains("maximum template depth")
    );
    assert!(Template::parse(r#"{{ if 1 }}{{ define "x" }}{{ end }}{{ end }}"#).is_err());
    assert!(Template::parse(r#"{{ define "x" }}a{{ end }}{{ define "x" }}b{{ end }}"#).is_err());
    assert!(Template::parse(r#"{{ define "x" }}{{ $y }}{{ end }}{{ $y := 1 }}"#).is_err());
}

#[test]
fn worst_case_nesting_fits_the_stack() -> Result<(), String> {
    // 97 nested ifs inside a template that recurses to the depth limit: must error, not crash.
    let body = format!("{}x{}", "{{ if 1 }}".repeat(97), "{{ end }}".repeat(97));
    let src = String::from(r#"{{ define "r" }}"#)
        + &body
        + r#"{{ template "r" }}{{ end }}{{ template "r" }}"#;
    let e = run(&src, &labels(&[])).err().unwrap_or_default();
    assert!(e.contains("maximum template depth"), "{e}");
    Ok(())
}
