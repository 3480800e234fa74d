//! Parser structure tests for the tricky cases of the semantics doc (§13 items 1–4, 11, 15),
//! Loki's accepted range placements, and a property test: for generated ASTs,
//! `parse(format(ast)) == ast`.

use proptest::prelude::*;
use tovlog_logql::ast::*;
use tovlog_logql::format::format;
use tovlog_logql::parser::parse_expr;
use tovlog_logql::{parse, Error};

fn log(q: &str) -> LogExpr {
    match parse(q) {
        Ok(Expr::Log(l)) => l,
        other => panic!("{q}: {other:?}"),
    }
}

fn sample(q: &str) -> SampleExpr {
    match parse(q) {
        Ok(Expr::Sample(s)) => s,
        other => panic!("{q}: {other:?}"),
    }
}

fn err(q: &str) -> String {
    match parse(q) {
        Ok(e) => panic!("{q} was accepted as {e}"),
        Err(e) => e.to_string(),
    }
}

fn s(v: &str) -> LineFilterValue {
    LineFilterValue::Str(v.into())
}

fn eq(name: &str, v: &str) -> LabelFilterExpr {
    LabelFilterExpr::String {
        name: name.into(),
        op: MatchOp::Eq,
        value: v.into(),
    }
}

fn label_filter(q: &str) -> LabelFilterExpr {
    match log(q).pipeline.pop() {
        Some(Stage::LabelFilter(f)) => f,
        other => panic!("{q}: {other:?}"),
    }
}

#[test]
fn or_line_filters_keep_the_first_operator() {
    // §13.1
    let l = log(r#"{app="a"} |= "err" or "warn" != "debug""#);
    assert_eq!(
        l.pipeline,
        vec![
            Stage::LineFilter(LineFilter {
                op: LineFilterOp::Contains,
                values: vec![s("err"), s("warn")]
            }),
            Stage::LineFilter(LineFilter {
                op: LineFilterOp::NotContains,
                values: vec![s("debug")]
            }),
        ]
    );
    // §13.2
    let l = log(r#"{app="a"} != "x" or "y""#);
    assert_eq!(
        l.pipeline,
        vec![Stage::LineFilter(LineFilter {
            op: LineFilterOp::NotContains,
            values: vec![s("x"), s("y")]
        })]
    );
    let l = log(r#"{app="a"} |= ip("10.0.0.0/8") or "x""#);
    assert_eq!(
        l.pipeline,
        vec![Stage::LineFilter(LineFilter {
            op: LineFilterOp::Contains,
            values: vec![LineFilterValue::Ip("10.0.0.0/8".into()), s("x")]
        })]
    );
}

#[test]
fn label_filter_precedence_follows_loki() {
    // §13.3: `a, b or c` is `a and (b or c)`.
    assert_eq!(
        label_filter(r#"{app="a"} | logfmt | a="1", b="2" or c="3""#),
        LabelFilterExpr::And {
            lhs: Box::new(eq("a", "1")),
            rhs: Box::new(LabelFilterExpr::Or(
                Box::new(eq("b", "2")),
                Box::new(eq("c", "3"))
            )),
            via_comma: true,
        }
    );
    // `a and b or c` is `(a and b) or c`.
    assert_eq!(
        label_filter(r#"{app="a"} | logfmt | a="1" and b="2" or c="3""#),
        LabelFilterExpr::Or(
            Box::new(LabelFilterExpr::And {
                lhs: Box::new(eq("a", "1")),
                rhs: Box::new(eq("b", "2")),
                via_comma: false,
            }),
            Box::new(eq("c", "3"))
        )
    );
    // Whitespace is a comma; `or` binds looser than `and`.
    assert_eq!(
        label_filter(r#"{app="a"} | a="1" b="2""#),
        LabelFilterExpr::And {
            lhs: Box::new(eq("a", "1")),
            rhs: Box::new(eq("b", "2")),
            via_comma: true,
        }
    );
    assert_eq!(
        label_filter(r#"{app="a"} | a="1" or b="2" and c="3""#),
        LabelFilterExpr::Or(
            Box::new(eq("a", "1")),
            Box::new(LabelFilterExpr::And {
                lhs: Box::new(eq("b", "2")),
                rhs: Box::new(eq("c", "3")),
                via_comma: false,
            })
        )
    );
    assert_eq!(
        label_filter(r#"{app="a"} | (a="1" or b="2")"#),
        LabelFilterExpr::Paren(Box::new(LabelFilterExpr::Or(
            Box::new(eq("a", "1")),
            Box::new(eq("b", "2"))
        )))
    );
}

#[test]
fn typed_label_filter_literals() {
    // §13.4
    assert_eq!(
        err(r#"{app="a"} | logfmt | status == "200""#),
        "parse error at line 1, col 32: syntax error: unexpected STRING"
    );
    assert_eq!(
        label_filter(r#"{app="a"} | logfmt | status == 200"#),
        LabelFilterExpr::Number {
            name: "status".into(),
            op: CmpOp::Eq,
            value: 200.0
        }
    );
    assert_eq!(
        label_filter(r#"{app="a"} | latency > 1s"#),
        LabelFilterExpr::Duration {
            name: "latency".into(),
            op: CmpOp::Gt,
            value_ns: 1_000_000_000
        }
    );
    assert_eq!(
        label_filter(r#"{app="a"} | size <= 1.5KiB"#),
        LabelFilterExpr::Bytes {
            name: "size".into(),
            op: CmpOp::Le,
            value: 1536
        }
    );
    assert_eq!(
        label_filter(r#"{app="a"} | x != -2.5"#),
        LabelFilterExpr::Number {
            name: "x".into(),
            op: CmpOp::Neq,
            value: -2.5
        }
    );
    assert_eq!(
        label_filter(r#"{app="a"} | addr != ip("10.0.0.0/8")"#),
        LabelFilterExpr::Ip {
            name: "addr".into(),
            negated: true,
            value: "10.0.0.0/8".into()
        }
    );
    // Function words are plain names where no `(` follows.
    assert_eq!(
        label_filter(r#"{app="a"} | bytes > 1KB"#),
        LabelFilterExpr::Bytes {
            name: "bytes".into(),
            op: CmpOp::Gt,
            value: 1000
        }
    );
    assert_eq!(label_filter(r#"{app="a"} | rate="x""#), eq("rate", "x"));
}

#[test]
fn literal_folding() {
    // §13.11
    assert_eq!(sample("2 ^ 3 ^ 2"), SampleExpr::Literal(512.0));
    assert_eq!(sample("1 + 2 * 3 % 4"), SampleExpr::Literal(3.0));
    assert!(matches!(sample("1 / 0"), SampleExpr::Literal(v) if v.is_nan()));
    assert!(matches!(sample("5 % 0"), SampleExpr::Literal(v) if v.is_nan()));
    assert_eq!(sample("-2 ^ 2"), SampleExpr::Literal(4.0));
    assert_eq!(sample("2 ^ 3 - 1"), SampleExpr::Literal(7.0));
    assert_eq!(sample("(1 + 2) * 3"), SampleExpr::Literal(9.0));
    assert_eq!(sample("3 > 2"), SampleExpr::Literal(1.0));
    assert_eq!(sample("1 - -1"), SampleExpr::Literal(2.0));
    // Negative zero prints as `0`: `-0` would lex as a duration, as in Loki.
    assert_eq!(
        format(&parse("- 0").unwrap_or(Expr::Sample(SampleExpr::Literal(1.0)))),
        "0"
    );
    assert!(parse("-0").is_err());
    // Not folded: vectors.
    assert!(matches!(sample("vector(1) + 1"), SampleExpr::Binary(_)));
}

#[test]
fn binary_precedence_and_modifiers() {
    let SampleExpr::Binary(b) = sample(
        r#"rate({a="b"}[1m]) + rate({a="b"}[1m]) * on (x) group_left (y) rate({a="b"}[1m]) > bool 1"#,
    ) else {
        panic!("not binary")
    };
    assert_eq!(b.op, BinOp::Gt);
    assert!(b.return_bool);
    let SampleExpr::Binary(add) = *b.lhs else {
        panic!("lhs not binary")
    };
    assert_eq!(add.op, BinOp::Add);
    let SampleExpr::Binary(mul) = *add.rhs else {
        panic!("rhs not binary")
    };
    assert_eq!(mul.op, BinOp::Mul);
    assert_eq!(
        mul.matching,
        Some(VectorMatching {
            on: true,
            labels: vec!["x".into()],
            group: Some(GroupModifier {
                left: true,
                include: vec!["y".into()]
            })
        })
    );
}

#[test]
fn range_placements_accepted_by_loki() {
    let base = parse(r#"rate({a="b"} | json [5m])"#).map(|e| format(&e));
    for q in [
        r#"rate({a="b"}[5m] | json)"#,
        r#"rate(({a="b"} | json)[5m])"#,
        r#"rate((({a="b"} | json)[5m]))"#,
        r#"rate(({a="b"}[5m] | json))"#,
        r#"RATE ( {a="b"} | JSON [5m] )"#,
    ] {
        assert_eq!(parse(q).map(|e| format(&e)), base, "{q}");
    }
    let SampleExpr::Range(r) = sample(r#"sum_over_time(({a="b"})[5m] offset 1m | unwrap x)"#)
    else {
        panic!()
    };
    assert_eq!(r.range.offset_ns, 60_000_000_000);
    assert_eq!(r.range.unwrap.map(|u| u.label), Some("x".into()));
    let SampleExpr::Range(r) = sample(
        r#"avg_over_time({a="b"}[5m] offset -30s | logfmt | unwrap bytes(x) | __error__="") by (h)"#,
    ) else {
        panic!()
    };
    assert_eq!(r.range.offset_ns, -30_000_000_000);
    assert_eq!(
        r.range.unwrap.as_ref().map(|u| u.conv),
        Some(UnwrapConv::Bytes)
    );
    assert_eq!(r.range.unwrap.map(|u| u.post_filters.len()), Some(1));
}

#[test]
fn vector_aggregation_grouping_prefix_and_suffix() {
    let a = sample(r#"topk by (h) (2, rate({a="b"}[1m]))"#);
    let b = sample(r#"topk(2, rate({a="b"}[1m])) by (h)"#);
    assert_eq!(a, b);
    let SampleExpr::Vector(v) = a else { panic!() };
    assert_eq!(v.param, Some(2.0));
    assert_eq!(
        v.grouping,
        Some(Grouping {
            without: false,
            labels: vec!["h".into()]
        })
    );
    assert!(matches!(
        sample(r#"sum by (count) (count_over_time({a="b"}[1m]))"#),
        SampleExpr::Vector(_)
    ));
}

#[test]
fn comments_and_case_insensitive_keywords() {
    let a = parse("sum(count_over_time({a=\"b\"} |= \"x\" [1m])) # trailing\n").map(|e| format(&e));
    let b =
        parse("SUM(/* c */Count_Over_Time({a=\"b\"} // x\n |= \"x\" [1m]))").map(|e| format(&e));
    // As in Loki, a comment between a function word and `(` makes the word a plain name.
    assert!(parse("sum /* c */ (vector(1))").is_err());
    assert_eq!(a, b);
    assert!(a.is_ok());
    let l = log(r#"{a="b"} | LOGFMT --strict --keep-empty x, y="z""#);
    assert_eq!(
        l.pipeline,
        vec![Stage::Logfmt {
            strict: true,
            keep_empty: true,
            params: vec![
                LabelExtraction {
                    name: "x".into(),
                    expr: None
                },
                LabelExtraction {
                    name: "y".into(),
                    expr: Some("z".into())
                }
            ]
        }]
    );
}

#[test]
fn rejected_queries() {
    // §13.15, with Loki's messages.
    let cases = [
        (r#"{json="x"}"#, "parse error at line 1, col 2: syntax error: unexpected json"),
        (r#"{a="b"} |~ "\w""#, "parse error at line 1, col 12: invalid char escape"),
        (
            r#"{a!="x"}"#,
            "parse error : queries require at least one regexp or equality matcher that does not have an empty-compatible value. For instance, app=~\".*\" does not meet this requirement, but app=~\".+\" will",
        ),
        (
            r#"rate({a="b"}[1.5h])"#,
            "parse error at line 0, col 13: unknown unit \".\" in duration \"1.5h\"",
        ),
        (
            r#"count_over_time({a="b"} | unwrap x [1m])"#,
            "parse error : invalid aggregation count_over_time with unwrap",
        ),
        (
            r#"sum_over_time({a="b"} | unwrap x [1m]) by (y)"#,
            "parse error : grouping not allowed for sum_over_time aggregation",
        ),
        (
            r#"topk(0, rate({a="b"}[1m]))"#,
            "parse error : invalid parameter (must be greater than 0) topk(0",
        ),
        (
            r#"sort(rate({a="b"}[1m])) by (a)"#,
            "parse error : sort and sort_desc doesn't allow grouping by ",
        ),
        (
            r#"sum(rate({a="b"}[1m])) or 1"#,
            "parse error : unexpected literal for right leg of logical/set binary operation (or): 1.000000",
        ),
        (
            r#"{a="b"} + 1"#,
            "parse error : unexpected type for left leg of binary operation (+): *syntax.MatchersExpr",
        ),
        (
            r#"1 + {a="b"} | json"#,
            "parse error : unexpected type for right leg of binary operation (+): *syntax.PipelineExpr",
        ),
        (
            r#"{a="b"} | label_format a=b, a="c""#,
            "parse error : stage '| label_format a=b,a=\"c\"' : multiple label name 'a' not allowed in a single format operation",
        ),
        (
            r#"{a="b"} | regexp "(\\d+)""#,
            "parse error : invalid regexp parser: at least one named capture must be supplied",
        ),
        (
            r#"{a="b"} | pattern "<a><b>""#,
            "parse error : invalid pattern parser: found consecutive capture '<a><b>': invalid expression",
        ),
        (
            r#"{a="b"} | addr == ip("1.2.3.4")"#,
            "parse error at line 1, col 19: syntax error: unexpected ip",
        ),
        (r#"{a="b"}[5m]"#, "parse error at line 0, col 8: syntax error: unexpected RANGE"),
        (r#"-rate({a="b"}[1m])"#, "parse error at line 1, col 2: syntax error: unexpected RATE"),
        (r#"sum("#, "parse error at line 1, col 5: syntax error: unexpected $end"),
        (r#"1 + 0x10"#, "parse error : unable to parse literal as a float: strconv.ParseFloat: parsing \"0x10\": invalid syntax"),
        (r#"{a="b"} | json | unwrap x"#, "parse error at line 1, col 18: syntax error: unexpected unwrap"),
        (r#"{a='b'}"#, "parse error at line 1, col 4: syntax error: unexpected IDENTIFIER"),
        ("{a=\"b\"} |= `x", "parse error at line 1, col 12: literal not terminated"),
    ];
    for (q, want) in cases {
        assert_eq!(err(q), want, "{q}");
    }
    let big = format!("{{a=\"{}\"}}", "x".repeat(131_072));
    assert!(matches!(
        parse(&big),
        Err(Error::Parse {
            line: 0,
            col: 0,
            ..
        })
    ));
    assert_eq!(
        err(&big),
        format!("parse error : input size too long ({} > 131072)", big.len())
    );
}

#[test]
fn deep_nesting_is_bounded() {
    // Unoptimised builds use ~20 KiB of stack per level (release: ~2.5 KiB, so 256 levels
    // fit a 2 MiB thread stack); give this debug-build test room.
    let h = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(deep_nesting_checks)
        .map(|h| h.join());
    assert!(matches!(h, Ok(Ok(()))));
}

fn deep_nesting_checks() {
    // Loki's LALR parser accepts any depth; we allow 256 levels and reject deeper input
    // instead of overflowing the stack.
    let ok = 200;
    let q = format!("{}vector(1){}", "(".repeat(ok), ")".repeat(ok));
    assert_eq!(parse(&q).map(|e| format(&e)), Ok("vector(1)".to_string()));
    let lf = format!("{{a=\"b\"}} | {}x=\"1\"{}", "(".repeat(ok), ")".repeat(ok));
    assert!(parse(&lf).is_ok());
    let commas: Vec<String> = (0..200).map(|n| format!("l{n}=\"v\"")).collect();
    assert!(parse(&format!("{{a=\"b\"}} | {}", commas.join(", "))).is_ok());
    let deep = 60_000;
    for q in [
        format!("{}vector(1){}", "(".repeat(deep), ")".repeat(deep)),
        format!(
            "{{a=\"b\"}} | {}x=\"1\"{}",
            "(".repeat(deep),
            ")".repeat(deep)
        ),
        format!("vector(1){}", " ^ vector(1)".repeat(deep / 10)),
        format!(
            "{}vector(1){}",
            "sum(".repeat(deep / 4),
            ")".repeat(deep / 4)
        ),
    ] {
        let e = err(&q);
        assert!(e.contains("nested more than 256 levels"), "{e}");
    }
}

// ---------------------------------------------------------------------------------------
// Property test: random well-formed ASTs survive format → parse.

/// SplitMix64: deterministic choices from the seed proptest hands us.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())].clone()
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

const NAMES: [&str; 12] = [
    "app", "job", "level", "host", "status", "_x", "a1", "Env", "rate", "count", "bytes", "vector",
];
const STRS: [&str; 11] = [
    "",
    "x",
    "a\"b",
    "back\\slash",
    "new\nline",
    "tab\t",
    "é✓",
    "\u{1}\u{7f}",
    "{{.a}}",
    "(?P<x>\\d+)",
    "`raw`",
];
const NUMS: [f64; 8] = [0.0, 1.0, 2.5, -3.0, 1e-7, 123_456_789.0, 0.1, 1e21];
const DURS: [i64; 9] = [
    1_000_000,
    250_000_000,
    1_500_000_000,
    90_000_000_000,
    5_400_000_000_000,
    1_500,
    -300_000_000_000,
    0,
    86_400_000_000_000,
];
const RANGES: [i64; 6] = [
    1_000_000_000,
    300_000_000_000,
    5_400_000_000_000,
    86_400_000_000_000,
    604_800_000_000_000,
    1_500_000_000,
];
const BYTES: [u64; 6] = [0, 7, 1024, 1_500_000, 1536, 1_000_000_000_000_000];

fn name(r: &mut Rng) -> String {
    r.pick(&NAMES).to_string()
}
fn string(r: &mut Rng) -> String {
    r.pick(&STRS).to_string()
}
fn match_op(r: &mut Rng) -> MatchOp {
    r.pick(&[MatchOp::Eq, MatchOp::Neq, MatchOp::Re, MatchOp::Nre])
}
fn cmp_op(r: &mut Rng) -> CmpOp {
    r.pick(&[
        CmpOp::Eq,
        CmpOp::Neq,
        CmpOp::Gt,
        CmpOp::Ge,
        CmpOp::Lt,
        CmpOp::Le,
    ])
}
fn labels(r: &mut Rng) -> Vec<String> {
    (0..r.below(3)).map(|_| name(r)).collect()
}

fn lf_leaf(r: &mut Rng) -> LabelFilterExpr {
    let n = name(r);
    match r.below(5) {
        0 => LabelFilterExpr::String {
            name: n,
            op: match_op(r),
            value: string(r),
        },
        1 => LabelFilterExpr::Number {
            name: n,
            op: cmp_op(r),
            value: r.pick(&NUMS),
        },
        2 => LabelFilterExpr::Duration {
            name: n,
            op: cmp_op(r),
            value_ns: r.pick(&DURS),
        },
        3 => LabelFilterExpr::Bytes {
            name: n,
            op: cmp_op(r),
            value: r.pick(&BYTES),
        },
        _ => LabelFilterExpr::Ip {
            name: n,
            negated: r.coin(),
            value: "10.0.0.0/8".into(),
        },
    }
}

// Generators follow the grammar E := T | Or(E, T); T := U | And(T, U); U := P | Comma(P, E);
// P := leaf | Paren(E). `closed` forbids a trailing comma chain (it would swallow what follows).
fn lf_e(r: &mut Rng, depth: u32, closed: bool) -> LabelFilterExpr {
    if depth > 0 && r.below(4) == 0 {
        LabelFilterExpr::Or(
            Box::new(lf_e(r, depth - 1, true)),
            Box::new(lf_t(r, depth - 1, closed)),
        )
    } else {
        lf_t(r, depth, closed)
    }
}
fn lf_t(r: &mut Rng, depth: u32, closed: bool) -> LabelFilterExpr {
    if depth > 0 && r.below(4) == 0 {
        LabelFilterExpr::And {
            lhs: Box::new(lf_t(r, depth - 1, true)),
            rhs: Box::new(lf_u(r, depth - 1, closed)),
            via_comma: false,
        }
    } else {
        lf_u(r, depth, closed)
    }
}
fn lf_u(r: &mut Rng, depth: u32, closed: bool) -> LabelFilterExpr {
    if depth > 0 && !closed && r.below(4) == 0 {
        LabelFilterExpr::And {
            lhs: Box::new(lf_p(r, depth - 1)),
            rhs: Box::new(lf_e(r, depth - 1, false)),
            via_comma: true,
        }
    } else {
        lf_p(r, depth)
    }
}
fn lf_p(r: &mut Rng, depth: u32) -> LabelFilterExpr {
    if depth > 0 && r.below(5) == 0 {
        LabelFilterExpr::Paren(Box::new(lf_e(r, depth - 1, false)))
    } else {
        lf_leaf(r)
    }
}

fn extraction(r: &mut Rng) -> Vec<LabelExtraction> {
    (0..r.below(3))
        .map(|_| LabelExtraction {
            name: name(r),
            expr: if r.coin() { Some(string(r)) } else { None },
        })
        .collect()
}

fn selects(r: &mut Rng) -> Vec<LabelSelect> {
    (0..1 + r.below(3))
        .map(|_| LabelSelect {
            name: name(r),
            matcher: if r.coin() {
                Some((match_op(r), string(r)))
            } else {
                None
            },
        })
        .collect()
}

fn stage(r: &mut Rng) -> Stage {
    match r.below(13) {
        0 | 1 => Stage::LineFilter(LineFilter {
            op: r.pick(&[
                LineFilterOp::Contains,
                LineFilterOp::NotContains,
                LineFilterOp::Regex,
                LineFilterOp::NotRegex,
                LineFilterOp::Pattern,
                LineFilterOp::NotPattern,
            ]),
            values: (0..1 + r.below(3))
                .map(|_| {
                    if r.below(4) == 0 {
                        LineFilterValue::Ip(string(r))
                    } else {
                        LineFilterValue::Str(string(r))
                    }
                })
                .collect(),
        }),
        2 => Stage::Json(extraction(r)),
        3 => Stage::Logfmt {
            strict: r.coin(),
            keep_empty: r.coin(),
            params: extraction(r),
        },
        4 => Stage::Regexp(string(r)),
        5 => Stage::Pattern(string(r)),
        6 => Stage::Unpack,
        7 | 8 => Stage::LabelFilter(lf_e(r, 3, false)),
        9 => Stage::LineFormat(string(r)),
        10 => Stage::LabelFormat(
            (0..1 + r.below(3))
                .map(|_| LabelFormatOp {
                    dst: name(r),
                    src: if r.coin() {
                        LabelFormatSrc::Rename(name(r))
                    } else {
                        LabelFormatSrc::Template(string(r))
                    },
                })
                .collect(),
        ),
        11 => Stage::Decolorize,
        _ => {
            if r.coin() {
                Stage::Drop(selects(r))
            } else {
                Stage::Keep(selects(r))
            }
        }
    }
}

fn log_expr(r: &mut Rng) -> LogExpr {
    let mut pipeline: Vec<Stage> = (0..r.below(5)).map(|_| stage(r)).collect();
    // `| drop a != "x"` can only mean the matcher `a!="x"` (in Loki too), so a bare name
    // cannot end a drop/keep list right before a `!=`/`!~` line filter.
    for k in 1..pipeline.len() {
        let negated_filter = matches!(
            &pipeline[k],
            Stage::LineFilter(LineFilter {
                op: LineFilterOp::NotContains | LineFilterOp::NotRegex,
                ..
            })
        );
        if let (true, Stage::Drop(l) | Stage::Keep(l)) = (negated_filter, &mut pipeline[k - 1]) {
            if let Some(last) = l.last_mut() {
                last.matcher.get_or_insert((MatchOp::Eq, "v".into()));
            }
        }
    }
    LogExpr {
        selector: (0..r.below(4))
            .map(|_| Matcher {
                name: name(r),
                op: match_op(r),
                value: string(r),
            })
            .collect(),
        pipeline,
    }
}

const RANGE_OPS: [RangeOp; 15] = [
    RangeOp::CountOverTime,
    RangeOp::Rate,
    RangeOp::RateCounter,
    RangeOp::BytesOverTime,
    RangeOp::BytesRate,
    RangeOp::AvgOverTime,
    RangeOp::SumOverTime,
    RangeOp::MinOverTime,
    RangeOp::MaxOverTime,
    RangeOp::StdvarOverTime,
    RangeOp::StddevOverTime,
    RangeOp::QuantileOverTime,
    RangeOp::FirstOverTime,
    RangeOp::LastOverTime,
    RangeOp::AbsentOverTime,
];
const VECTOR_OPS: [VectorOp; 11] = [
    VectorOp::Sum,
    VectorOp::Avg,
    VectorOp::Count,
    VectorOp::Min,
    VectorOp::Max,
    VectorOp::Stddev,
    VectorOp::Stdvar,
    VectorOp::Topk,
    VectorOp::Bottomk,
    VectorOp::Sort,
    VectorOp::SortDesc,
];
const BIN_OPS: [BinOp; 15] = [
    BinOp::Or,
    BinOp::And,
    BinOp::Unless,
    BinOp::Eq,
    BinOp::Neq,
    BinOp::Gt,
    BinOp::Ge,
    BinOp::Lt,
    BinOp::Le,
    BinOp::Add,
    BinOp::Sub,
    BinOp::Mul,
    BinOp::Div,
    BinOp::Mod,
    BinOp::Pow,
];

fn grouping(r: &mut Rng) -> Option<Grouping> {
    if r.coin() {
        Some(Grouping {
            without: r.coin(),
            labels: labels(r),
        })
    } else {
        None
    }
}

fn sample_expr(r: &mut Rng, depth: u32) -> SampleExpr {
    let choice = if depth == 0 { r.below(3) } else { r.below(6) };
    match choice {
        0 => {
            let op = r.pick(&RANGE_OPS);
            SampleExpr::Range(RangeAggregation {
                op,
                param: (op == RangeOp::QuantileOverTime).then(|| r.pick(&[0.5, 0.99, 1.0])),
                range: LogRange {
                    log: log_expr(r),
                    range_ns: r.pick(&RANGES),
                    offset_ns: if r.coin() { 0 } else { r.pick(&DURS) },
                    unwrap: if r.coin() {
                        Some(Unwrap {
                            conv: r.pick(&[
                                UnwrapConv::None,
                                UnwrapConv::Duration,
                                UnwrapConv::DurationSeconds,
                                UnwrapConv::Bytes,
                            ]),
                            label: name(r),
                            post_filters: (0..r.below(3)).map(|_| lf_e(r, 2, false)).collect(),
                        })
                    } else {
                        None
                    },
                },
                grouping: grouping(r),
            })
        }
        1 => SampleExpr::Literal(r.pick(&NUMS)),
        2 => SampleExpr::VectorLiteral(r.pick(&[0.0, 1.0, 2.5])),
        3 => {
            let op = r.pick(&VECTOR_OPS);
            SampleExpr::Vector(VectorAggregation {
                op,
                param: matches!(op, VectorOp::Topk | VectorOp::Bottomk)
                    .then(|| r.pick(&[1.0, 3.0, 10.0])),
                expr: Box::new(sample_expr(r, depth - 1)),
                grouping: grouping(r),
            })
        }
        4 => {
            let op = r.pick(&BIN_OPS);
            let lhs = sample_expr(r, depth - 1);
            let mut rhs = sample_expr(r, depth - 1);
            let logical = matches!(op, BinOp::Or | BinOp::And | BinOp::Unless);
            if !logical
                && matches!(lhs, SampleExpr::Literal(_))
                && matches!(rhs, SampleExpr::Literal(_))
            {
                // The parser folds literal ⊕ literal; keep one side a vector.
                rhs = SampleExpr::VectorLiteral(1.0);
            }
            SampleExpr::Binary(BinaryExpr {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
                return_bool: r.coin(),
                matching: if r.coin() {
                    Some(VectorMatching {
                        on: r.coin(),
                        labels: labels(r),
                        group: if r.coin() {
                            Some(GroupModifier {
                                left: r.coin(),
                                include: labels(r),
                            })
                        } else {
                            None
                        },
                    })
                } else {
                    None
                },
            })
        }
        _ => SampleExpr::LabelReplace(LabelReplace {
            expr: Box::new(sample_expr(r, depth - 1)),
            dst: string(r),
            replacement: string(r),
            src: string(r),
            regex: string(r),
        }),
    }
}

fn expr(seed: u64) -> Expr {
    let mut r = Rng(seed);
    if r.below(3) == 0 {
        Expr::Log(log_expr(&mut r))
    } else {
        Expr::Sample(sample_expr(&mut r, 4))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn format_then_parse_is_identity(seed in any::<u64>()) {
        let ast = expr(seed);
        let text = format(&ast);
        let back = parse_expr(&text);
        prop_assert_eq!(back.as_ref(), Ok(&ast), "text: {}", text);
        prop_assert_eq!(format(&ast), text);
    }

    #[test]
    fn parser_never_panics_on_mutated_queries(seed in any::<u64>(), cut in any::<usize>(), junk in "[ -~]{0,4}") {
        let text = format(&expr(seed));
        let mut at = cut % (text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let mutated = format!("{}{}{}", &text[..at], junk, &text[at..]);
        let _ = parse(&mutated);
        let _ = parse(&text[..at]);
    }
}
