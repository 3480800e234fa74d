//! End-to-end tests of `evaluate`: the semantics doc's tricky cases (§13, 9–14) and the
//! pipeline-error rule.

use super::*;
use crate::ast::{
    BinOp, BinaryExpr, LabelFilterExpr, LogExpr, LogRange, MatchOp, Matcher, Stage, Unwrap,
    UnwrapConv,
};

const S: i64 = 1_000_000_000;

fn l(pairs: &[(&str, &str)]) -> Labels {
    let mut v: Labels = pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

/// Input that answers every leaf with fixed series, and records the hints it was given.
struct Fixed {
    series: Vec<RawSeries>,
    hints: Vec<LeafHints>,
}

impl Fixed {
    fn new(series: Vec<RawSeries>) -> Fixed {
        Fixed {
            series,
            hints: Vec::new(),
        }
    }
}

impl RangeInput for Fixed {
    fn input(&mut self, _agg: &RangeAggregation, _steps: &Steps) -> Result<Vec<RawSeries>, Error> {
        Ok(self.series.clone())
    }

    fn input_with_hints(
        &mut self,
        agg: &RangeAggregation,
        hints: &LeafHints,
        steps: &Steps,
    ) -> Result<Vec<RawSeries>, Error> {
        self.hints.push(hints.clone());
        self.input(agg, steps)
    }
}

fn raw(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> RawSeries {
    RawSeries {
        labels: l(labels),
        samples: samples.to_vec(),
    }
}

fn range(op: RangeOp, stages: Vec<Stage>, range_s: i64, offset_s: i64) -> RangeAggregation {
    RangeAggregation {
        op,
        param: None,
        range: LogRange {
            log: LogExpr {
                selector: vec![Matcher {
                    name: "app".into(),
                    op: MatchOp::Eq,
                    value: "a".into(),
                }],
                pipeline: stages,
            },
            range_ns: range_s * S,
            offset_ns: offset_s * S,
            unwrap: None,
        },
        grouping: None,
    }
}

fn by(names: &[&str]) -> Option<Grouping> {
    Some(Grouping {
        without: false,
        labels: names.iter().map(|s| s.to_string()).collect(),
    })
}

fn vagg(op: VectorOp, grouping: Option<Grouping>, inner: SampleExpr) -> SampleExpr {
    SampleExpr::Vector(VectorAggregation {
        op,
        param: None,
        expr: Box::new(inner),
        grouping,
    })
}

fn binop(op: BinOp, return_bool: bool, lhs: SampleExpr, rhs: SampleExpr) -> SampleExpr {
    SampleExpr::Binary(BinaryExpr {
        op,
        lhs: Box::new(lhs),
        rhs: Box::new(rhs),
        return_bool,
        matching: None,
    })
}

fn json() -> Vec<Stage> {
    vec![Stage::Json(vec![])]
}

fn no_limit() -> EvalLimits {
    EvalLimits { max_series: 0 }
}

fn vector_of(v: Value) -> Vec<Series> {
    match v {
        Value::Vector(s) => s,
        Value::Scalar(p) => panic!("expected a vector, got scalar {p:?}"),
    }
}

#[test]
fn case09_lower_bound_is_excluded() -> Result<(), Error> {
    let mut input = Fixed::new(vec![raw(
        &[("app", "a")],
        &[(0, 1.0), (30 * S, 1.0), (60 * S, 1.0)],
    )]);
    let expr = SampleExpr::Range(range(RangeOp::CountOverTime, vec![], 60, 0));
    let out = vector_of(evaluate(
        &expr,
        &Steps::instant(60 * S),
        &mut input,
        &no_limit(),
    )?);
    assert_eq!(
        out,
        vec![Series {
            labels: l(&[("app", "a")]),
            points: vec![(60 * S, 2.0)]
        }]
    );
    Ok(())
}

#[test]
fn case10_offset_covers_shifted_window() -> Result<(), Error> {
    let mut input = Fixed::new(vec![raw(
        &[("app", "a")],
        &[
            (0, 1.0),
            (10 * S, 1.0),
            (60 * S, 1.0),
            (61 * S, 1.0),
            (90 * S, 1.0),
        ],
    )]);
    let expr = SampleExpr::Range(range(RangeOp::CountOverTime, vec![], 60, 30));
    let out = vector_of(evaluate(
        &expr,
        &Steps::instant(90 * S),
        &mut input,
        &no_limit(),
    )?);
    // (0s, 60s] holds 10s and 60s.
    assert_eq!(out[0].points, vec![(90 * S, 2.0)]);
    Ok(())
}

#[test]
fn case11_literals() -> Result<(), Error> {
    let mut input = Fixed::new(vec![]);
    let st = Steps::instant(5 * S);
    let pow = binop(
        BinOp::Pow,
        false,
        SampleExpr::Literal(2.0),
        binop(
            BinOp::Pow,
            false,
            SampleExpr::Literal(3.0),
            SampleExpr::Literal(2.0),
        ),
    );
    assert_eq!(
        evaluate(&pow, &st, &mut input, &no_limit())?,
        Value::Scalar(vec![(5 * S, 512.0)])
    );
    // 1 + ((2 * 3) % 4) = 3
    let e = binop(
        BinOp::Add,
        false,
        SampleExpr::Literal(1.0),
        binop(
            BinOp::Mod,
            false,
            binop(
                BinOp::Mul,
                false,
                SampleExpr::Literal(2.0),
                SampleExpr::Literal(3.0),
            ),
            SampleExpr::Literal(4.0),
        ),
    );
    assert_eq!(
        evaluate(&e, &st, &mut input, &no_limit())?,
        Value::Scalar(vec![(5 * S, 3.0)])
    );
    let div = binop(
        BinOp::Div,
        false,
        SampleExpr::Literal(1.0),
        SampleExpr::Literal(0.0),
    );
    match evaluate(&div, &st, &mut input, &no_limit())? {
        Value::Scalar(p) => assert!(p[0].1.is_nan()),
        v => panic!("unexpected {v:?}"),
    }
    // A literal in a range query has a value at every step.
    let range_steps = Steps {
        start_ns: 0,
        end_ns: 20 * S,
        step_ns: 10 * S,
    };
    assert_eq!(
        evaluate(
            &SampleExpr::Literal(7.0),
            &range_steps,
            &mut input,
            &no_limit()
        )?,
        Value::Scalar(vec![(0, 7.0), (10 * S, 7.0), (20 * S, 7.0)])
    );
    Ok(())
}

#[test]
fn case12_vector_comparisons_and_or_vector() -> Result<(), Error> {
    let mut input = Fixed::new(vec![]);
    let st = Steps::instant(100 * S);
    let gt = binop(
        BinOp::Gt,
        false,
        SampleExpr::VectorLiteral(1.0),
        SampleExpr::Literal(2.0),
    );
    assert_eq!(
        vector_of(evaluate(&gt, &st, &mut input, &no_limit())?),
        vec![]
    );
    let gt_bool = binop(
        BinOp::Gt,
        true,
        SampleExpr::VectorLiteral(1.0),
        SampleExpr::Literal(2.0),
    );
    assert_eq!(
        vector_of(evaluate(&gt_bool, &st, &mut input, &no_limit())?),
        vec![Series {
            labels: vec![],
            points: vec![(100 * S, 0.0)]
        }]
    );
    let none = vagg(
        VectorOp::Sum,
        None,
        SampleExpr::Range(range(RangeOp::CountOverTime, vec![], 60, 0)),
    );
    let or = binop(BinOp::Or, false, none, SampleExpr::VectorLiteral(0.0));
    assert_eq!(
        vector_of(evaluate(&or, &st, &mut input, &no_limit())?),
        vec![Series {
            labels: vec![],
            points: vec![(100 * S, 0.0)]
        }]
    );
    Ok(())
}

#[test]
fn case13_range_grouping_pools_samples() -> Result<(), Error> {
    // Two series on host h: values {1, 2, 3} and {10}. Pooled avg = 4; mean of means = 6.
    let series = vec![
        raw(
            &[("h", "x"), ("s", "1")],
            &[(10 * S, 1.0), (20 * S, 2.0), (30 * S, 3.0)],
        ),
        raw(&[("h", "x"), ("s", "2")], &[(15 * S, 10.0)]),
    ];
    let mut agg = range(RangeOp::AvgOverTime, vec![], 60, 0);
    agg.range.unwrap = Some(Unwrap {
        conv: UnwrapConv::None,
        label: "v".into(),
        post_filters: vec![],
    });
    let st = Steps::instant(60 * S);
    let mut pooled = agg.clone();
    pooled.grouping = by(&["h"]);
    let out = vector_of(evaluate(
        &SampleExpr::Range(pooled),
        &st,
        &mut Fixed::new(series.clone()),
        &no_limit(),
    )?);
    assert_eq!(
        out,
        vec![Series {
            labels: l(&[("h", "x")]),
            points: vec![(60 * S, 4.0)]
        }]
    );
    let mean_of_means = vagg(VectorOp::Avg, by(&["h"]), SampleExpr::Range(agg));
    let out = vector_of(evaluate(
        &mean_of_means,
        &st,
        &mut Fixed::new(series),
        &no_limit(),
    )?);
    assert_eq!(out[0].points, vec![(60 * S, 6.0)]);
    Ok(())
}

fn json_series() -> Vec<RawSeries> {
    vec![
        raw(
            &[("app", "a"), ("level", "info")],
            &[(10 * S, 1.0), (20 * S, 1.0)],
        ),
        raw(
            &[
                ("app", "a"),
                ("__error__", "JSONParserErr"),
                ("__error_details__", "bad"),
            ],
            &[(30 * S, 1.0)],
        ),
    ]
}

#[test]
fn case14_parser_error_fails_plain_range_query() {
    let expr = SampleExpr::Range(range(RangeOp::CountOverTime, json(), 60, 0));
    let err = evaluate(
        &expr,
        &Steps::instant(60 * S),
        &mut Fixed::new(json_series()),
        &no_limit(),
    );
    match err {
        Err(Error::Validate(m)) => assert!(
            m.starts_with("pipeline error: 'JSONParserErr' for series: '{__error__=\"JSONParserErr\", __error_details__=\"bad\", app=\"a\"}'"),
            "{m}"
        ),
        other => panic!("expected a pipeline error, got {other:?}"),
    }
}

#[test]
fn case14_sum_by_error_returns_both_groups() -> Result<(), Error> {
    let expr = vagg(
        VectorOp::Sum,
        by(&["__error__"]),
        SampleExpr::Range(range(RangeOp::CountOverTime, json(), 60, 0)),
    );
    let mut input = Fixed::new(json_series());
    let out = vector_of(evaluate(
        &expr,
        &Steps::instant(60 * S),
        &mut input,
        &no_limit(),
    )?);
    assert_eq!(
        out,
        vec![
            Series {
                labels: vec![],
                points: vec![(60 * S, 2.0)]
            },
            Series {
                labels: l(&[("__error__", "JSONParserErr")]),
                points: vec![(60 * S, 1.0)]
            },
        ]
    );
    assert!(input.hints[0].preserve_parser_errors);
    Ok(())
}

#[test]
fn sum_without_labels_skips_parsing() -> Result<(), Error> {
    let expr = vagg(
        VectorOp::Sum,
        None,
        SampleExpr::Range(range(RangeOp::CountOverTime, json(), 60, 0)),
    );
    let mut input = Fixed::new(json_series());
    let out = vector_of(evaluate(
        &expr,
        &Steps::instant(60 * S),
        &mut input,
        &no_limit(),
    )?);
    assert_eq!(
        out,
        vec![Series {
            labels: vec![],
            points: vec![(60 * S, 3.0)]
        }]
    );
    assert!(input.hints[0].skip_parsers);
    Ok(())
}

#[test]
fn sum_by_other_label_fails_on_parser_error() {
    let expr = vagg(
        VectorOp::Sum,
        by(&["level"]),
        SampleExpr::Range(range(RangeOp::CountOverTime, json(), 60, 0)),
    );
    assert!(evaluate(
        &expr,
        &Steps::instant(60 * S),
        &mut Fixed::new(json_series()),
        &no_limit()
    )
    .is_err());
    // topk over it, as golden 136.
    let topk = SampleExpr::Vector(VectorAggregation {
        op: VectorOp::Topk,
        param: Some(3.0),
        expr: Box::new(expr),
        grouping: None,
    });
    assert!(evaluate(
        &topk,
        &Steps::instant(60 * S),
        &mut Fixed::new(json_series()),
        &no_limit()
    )
    .is_err());
}

#[test]
fn non_sum_parent_does_not_push_grouping_down() {
    // max(count_over_time(…|json…)) needs every label: the error fails the query.
    let expr = vagg(
        VectorOp::Max,
        None,
        SampleExpr::Range(range(RangeOp::CountOverTime, json(), 60, 0)),
    );
    assert!(evaluate(
        &expr,
        &Steps::instant(60 * S),
        &mut Fixed::new(json_series()),
        &no_limit()
    )
    .is_err());
}

#[test]
fn label_filter_makes_labels_needed() {
    // sum(count_over_time({…} | json | level="info" [1m])): parsing happens, errors count.
    let mut stages = json();
    stages.push(Stage::LabelFilter(LabelFilterExpr::String {
        name: "level".into(),
        op: MatchOp::Eq,
        value: "info".into(),
    }));
    let agg = range(RangeOp::CountOverTime, stages, 60, 0);
    let hints = leaf_hints(&agg, None);
    assert!(!hints.skip_parsers);
    let expr = vagg(VectorOp::Sum, None, SampleExpr::Range(agg));
    assert!(evaluate(
        &expr,
        &Steps::instant(60 * S),
        &mut Fixed::new(json_series()),
        &no_limit()
    )
    .is_err());
}

#[test]
fn error_outside_every_window_does_not_fail() -> Result<(), Error> {
    // Step 60s, range 10s: the error sample at 30s is never in a window.
    let expr = SampleExpr::Range(range(RangeOp::CountOverTime, json(), 10, 0));
    let st = Steps {
        start_ns: 0,
        end_ns: 120 * S,
        step_ns: 60 * S,
    };
    let out = vector_of(evaluate(
        &expr,
        &st,
        &mut Fixed::new(json_series()),
        &no_limit(),
    )?);
    assert!(out.is_empty());
    Ok(())
}

#[test]
fn max_series_limit() {
    let series: Vec<RawSeries> = (0..3)
        .map(|i| raw(&[("i", &i.to_string())], &[(S, 1.0)]))
        .collect();
    let expr = SampleExpr::Range(range(RangeOp::CountOverTime, vec![], 60, 0));
    let err = evaluate(
        &expr,
        &Steps::instant(10 * S),
        &mut Fixed::new(series.clone()),
        &EvalLimits { max_series: 2 },
    );
    assert!(
        matches!(err, Err(Error::Validate(m)) if m.starts_with("maximum number of series (2) reached for a single query"))
    );
    assert!(evaluate(
        &expr,
        &Steps::instant(10 * S),
        &mut Fixed::new(series),
        &EvalLimits { max_series: 3 }
    )
    .is_ok());
}

#[test]
fn absent_over_time_only_where_nothing_matched() -> Result<(), Error> {
    let mut agg = range(RangeOp::AbsentOverTime, vec![], 10, 0);
    agg.range.log.selector.push(Matcher {
        name: "env".into(),
        op: MatchOp::Re,
        value: ".+".into(),
    });
    agg.range.log.selector.push(Matcher {
        name: "job".into(),
        op: MatchOp::Eq,
        value: "x".into(),
    });
    let st = Steps {
        start_ns: 0,
        end_ns: 30 * S,
        step_ns: 10 * S,
    };
    let mut input = Fixed::new(vec![raw(&[("app", "a"), ("pod", "1")], &[(15 * S, 1.0)])]);
    let out = vector_of(evaluate(
        &SampleExpr::Range(agg),
        &st,
        &mut input,
        &no_limit(),
    )?);
    assert_eq!(
        out,
        vec![Series {
            labels: l(&[("app", "a"), ("job", "x")]),
            points: vec![(0, 1.0), (10 * S, 1.0), (30 * S, 1.0)]
        }]
    );
    Ok(())
}

#[test]
fn range_functions_over_one_window() -> Result<(), Error> {
    let samples = [(10 * S, 4.0), (20 * S, 1.0), (30 * S, 3.0), (40 * S, 2.0)];
    let st = Steps::instant(60 * S);
    let run = |op: RangeOp, param: Option<f64>, unwrap: bool| -> Result<f64, Error> {
        let mut agg = range(op, vec![], 60, 0);
        agg.param = param;
        if unwrap {
            agg.range.unwrap = Some(Unwrap {
                conv: UnwrapConv::None,
                label: "v".into(),
                post_filters: vec![],
            });
        }
        let mut input = Fixed::new(vec![raw(&[("app", "a")], &samples)]);
        let out = vector_of(evaluate(
            &SampleExpr::Range(agg),
            &st,
            &mut input,
            &no_limit(),
        )?);
        Ok(out[0].points[0].1)
    };
    assert_eq!(run(RangeOp::CountOverTime, None, false)?, 4.0);
    assert_eq!(run(RangeOp::Rate, None, false)?, 4.0 / 60.0);
    assert_eq!(run(RangeOp::Rate, None, true)?, 10.0 / 60.0);
    assert_eq!(run(RangeOp::BytesOverTime, None, false)?, 10.0);
    assert_eq!(run(RangeOp::BytesRate, None, false)?, 10.0 / 60.0);
    assert_eq!(run(RangeOp::SumOverTime, None, true)?, 10.0);
    assert_eq!(run(RangeOp::AvgOverTime, None, true)?, 2.5);
    assert_eq!(run(RangeOp::MinOverTime, None, true)?, 1.0);
    assert_eq!(run(RangeOp::MaxOverTime, None, true)?, 4.0);
    assert_eq!(run(RangeOp::StdvarOverTime, None, true)?, 1.25);
    assert_eq!(run(RangeOp::StddevOverTime, None, true)?, 1.25f64.sqrt());
    assert_eq!(run(RangeOp::QuantileOverTime, Some(0.5), true)?, 2.5);
    assert_eq!(run(RangeOp::FirstOverTime, None, true)?, 4.0);
    assert_eq!(run(RangeOp::LastOverTime, None, true)?, 2.0);
    // rate_counter: resets 4→1 and 3→2: increase = (2-4) + 4 + 3 = 5 over 30s sampled;
    // extrapolate 10s to start (zero point 30*4/5=24 > 10) and 20s → capped at 5s to end.
    let rc = run(RangeOp::RateCounter, None, true)?;
    assert!(
        (rc - 5.0 * (30.0 + 10.0 + 5.0) / 30.0 / 60.0).abs() < 1e-12,
        "{rc}"
    );
    Ok(())
}

#[test]
fn grouping_on_count_is_rejected() {
    let mut agg = range(RangeOp::CountOverTime, vec![], 60, 0);
    agg.grouping = by(&["a"]);
    let err = evaluate(
        &SampleExpr::Range(agg),
        &Steps::instant(S),
        &mut Fixed::new(vec![]),
        &no_limit(),
    );
    assert!(
        matches!(err, Err(Error::Validate(m)) if m == "parse error : grouping not allowed for count_over_time aggregation")
    );
}

#[test]
fn instant_sort_keeps_value_order() -> Result<(), Error> {
    let series = vec![
        raw(
            &[("app", "a"), ("x", "1")],
            &[(S, 1.0), (2 * S, 1.0), (3 * S, 1.0)],
        ),
        raw(&[("app", "a"), ("x", "2")], &[(S, 1.0)]),
    ];
    let count = SampleExpr::Range(range(RangeOp::CountOverTime, vec![], 60, 0));
    let asc = vagg(VectorOp::Sort, None, count.clone());
    let out = vector_of(evaluate(
        &asc,
        &Steps::instant(10 * S),
        &mut Fixed::new(series.clone()),
        &no_limit(),
    )?);
    assert_eq!(out[0].labels, l(&[("app", "a"), ("x", "2")]));
    let desc = vagg(VectorOp::SortDesc, None, count);
    let out = vector_of(evaluate(
        &desc,
        &Steps::instant(10 * S),
        &mut Fixed::new(series),
        &no_limit(),
    )?);
    assert_eq!(out[0].labels, l(&[("app", "a"), ("x", "1")]));
    Ok(())
}

#[test]
fn hints_follow_loki_extractor_rules() {
    let count = range(RangeOp::CountOverTime, json(), 60, 0);
    let sum = |g: Option<Grouping>| VectorAggregation {
        op: VectorOp::Sum,
        param: None,
        expr: Box::new(SampleExpr::Literal(0.0)),
        grouping: g,
    };
    let h = leaf_hints(&count, Some(&sum(None)));
    assert!(h.skip_parsers && !h.preserve_parser_errors);
    assert_eq!(h.grouping, by(&[]));
    let h = leaf_hints(&count, Some(&sum(by(&["__error__"]))));
    assert!(!h.skip_parsers && h.preserve_parser_errors);
    let h = leaf_hints(&count, None);
    assert!(!h.skip_parsers && !h.preserve_parser_errors && h.grouping.is_none());
    // rate_counter is never pushed down.
    let rc = range(RangeOp::RateCounter, json(), 60, 0);
    assert!(leaf_hints(&rc, Some(&sum(None))).grouping.is_none());
    // absent_over_time needs no labels.
    assert!(leaf_hints(&range(RangeOp::AbsentOverTime, json(), 60, 0), None).skip_parsers);
    // A template field makes labels needed.
    let lf = range(
        RangeOp::CountOverTime,
        vec![
            Stage::Json(vec![]),
            Stage::LineFormat("{{ .level }}".into()),
        ],
        60,
        0,
    );
    assert!(!leaf_hints(&lf, Some(&sum(None))).skip_parsers);
}

#[test]
fn range_steps_align_like_lokis_frontend() {
    // Golden 125: start 1763596817 s, end 1763603987 s, step 300 s.
    let st = Steps::range_aligned(1_763_596_817 * S, 1_763_603_987 * S, 300 * S);
    assert_eq!(st.start_ns, 1_763_596_800 * S);
    assert_eq!(st.end_ns, 1_763_604_000 * S);
    let aligned = Steps::range_aligned(600 * S, 1200 * S, 300 * S);
    assert_eq!((aligned.start_ns, aligned.end_ns), (600 * S, 1200 * S));
}

#[test]
fn range_leaves_carry_parent_hints() {
    let inner = SampleExpr::Range(range(RangeOp::CountOverTime, json(), 60, 0));
    let expr = binop(
        BinOp::Div,
        false,
        vagg(VectorOp::Sum, None, inner.clone()),
        vagg(VectorOp::Max, None, inner),
    );
    let leaves = range_leaves(&expr);
    assert_eq!(leaves.len(), 2);
    assert!(leaves[0].1.skip_parsers);
    assert!(!leaves[1].1.skip_parsers);
}

#[test]
fn range_level_without_and_pooled_first_last() -> Result<(), Error> {
    let series = vec![
        raw(
            &[("app", "a"), ("pod", "1")],
            &[(10 * S, 1.0), (30 * S, 3.0)],
        ),
        raw(
            &[("app", "a"), ("pod", "2")],
            &[(20 * S, 2.0), (40 * S, 4.0)],
        ),
    ];
    let mut agg = range(RangeOp::LastOverTime, vec![], 60, 0);
    agg.range.unwrap = Some(Unwrap {
        conv: UnwrapConv::None,
        label: "v".into(),
        post_filters: vec![],
    });
    agg.grouping = Some(Grouping {
        without: true,
        labels: vec!["pod".into()],
    });
    let st = Steps::instant(60 * S);
    let out = vector_of(evaluate(
        &SampleExpr::Range(agg.clone()),
        &st,
        &mut Fixed::new(series.clone()),
        &no_limit(),
    )?);
    assert_eq!(
        out,
        vec![Series {
            labels: l(&[("app", "a")]),
            points: vec![(60 * S, 4.0)]
        }]
    );
    agg.op = RangeOp::FirstOverTime;
    let out = vector_of(evaluate(
        &SampleExpr::Range(agg),
        &st,
        &mut Fixed::new(series),
        &no_limit(),
    )?);
    assert_eq!(out[0].points, vec![(60 * S, 1.0)]);
    Ok(())
}

/// Input that sums its fixed series per bucket when the evaluator offers bucketing.
struct Bucketed {
    series: Vec<RawSeries>,
    used: usize,
}

impl RangeInput for Bucketed {
    fn input(&mut self, _agg: &RangeAggregation, _steps: &Steps) -> Result<Vec<RawSeries>, Error> {
        Ok(self.series.clone())
    }

    fn input_bucketed(
        &mut self,
        _agg: &RangeAggregation,
        _hints: &LeafHints,
        _steps: &Steps,
        b: &Bucketing,
    ) -> Result<Option<Vec<RawSeries>>, Error> {
        self.used += 1;
        let mut out = Vec::new();
        for s in &self.series {
            let mut sums: std::collections::BTreeMap<i64, f64> = Default::default();
            for &(ts, v) in &s.samples {
                *sums.entry(b.index(ts)).or_default() += v;
            }
            out.push(RawSeries {
                labels: s.labels.clone(),
                samples: sums.into_iter().map(|(j, v)| (b.end_of(j), v)).collect(),
            });
        }
        Ok(Some(out))
    }
}

#[test]
fn bucketed_input_gives_the_same_answers() -> Result<(), Error> {
    // Samples on, just after and between step boundaries, two series, one step of 60 s.
    let samples: Vec<(i64, f64)> = [0, 1, 59, 60, 61, 119, 120, 150, 179, 180, 181, 299, 300]
        .iter()
        .map(|&s| (s * S + if s % 2 == 0 { 0 } else { 7 }, (s % 7) as f64 + 1.0))
        .collect();
    let series = [
        raw(&[("app", "a")], &samples),
        raw(&[("app", "b")], &samples[3..8]),
    ];
    let steps = Steps::range_aligned(60 * S, 300 * S, 60 * S);
    for op in [
        RangeOp::CountOverTime,
        RangeOp::Rate,
        RangeOp::BytesOverTime,
        RangeOp::BytesRate,
    ] {
        // The engine's sample value is 1 per entry for count and rate, bytes otherwise.
        let series: Vec<RawSeries> = series
            .iter()
            .map(|r| RawSeries {
                labels: r.labels.clone(),
                samples: r
                    .samples
                    .iter()
                    .map(|&(t, v)| {
                        let counted = matches!(op, RangeOp::CountOverTime | RangeOp::Rate);
                        (t, if counted { 1.0 } else { v })
                    })
                    .collect(),
            })
            .collect();
        let instants = [119, 120, 180, 300].map(|t| Steps::instant(t * S));
        for steps in std::iter::once(&steps).chain(&instants) {
            for (range_s, offset_s) in [(60, 0), (120, 0), (180, 60), (60, 30), (90, 7)] {
                let expr = SampleExpr::Range(range(op, vec![], range_s, offset_s));
                let what = format!("{op:?} [{range_s}s] offset {offset_s}s at {steps:?}");
                let plain = evaluate(&expr, steps, &mut Fixed::new(series.clone()), &no_limit())?;
                let mut bucketed = Bucketed {
                    series: series.clone(),
                    used: 0,
                };
                let summed = evaluate(&expr, steps, &mut bucketed, &no_limit())?;
                assert_eq!(plain, summed, "{what}");
                // An instant query is one bucket of any range; a range query's range must
                // be a whole number of steps.
                let whole = steps.is_instant() || range_s % 60 == 0;
                assert_eq!(bucketed.used, usize::from(whole), "{what}");
            }
        }
    }
    // Not bucketable: range not a multiple of the step, other functions.
    let agg = range(RangeOp::CountOverTime, vec![], 90, 0);
    assert!(Bucketing::of(&agg, &steps).is_none());
    assert!(Bucketing::of(&agg, &Steps::instant(60 * S)).is_some());
    let agg = range(RangeOp::AvgOverTime, vec![], 60, 0);
    assert!(Bucketing::of(&agg, &steps).is_none());
    Ok(())
}

/// Input that evaluates each leaf itself with [`range_vector`], as the engine's execution
/// plan does, and counts the leaves it answered.
struct PreEvaluated {
    series: Vec<RawSeries>,
    answered: usize,
}

impl RangeInput for PreEvaluated {
    fn input(&mut self, _agg: &RangeAggregation, _steps: &Steps) -> Result<Vec<RawSeries>, Error> {
        Err(Error::Validate("raw input must not be asked for".into()))
    }

    fn range_vector(
        &mut self,
        agg: &RangeAggregation,
        hints: &LeafHints,
        steps: &Steps,
    ) -> Result<Option<Vec<SeriesVals>>, Error> {
        self.answered += 1;
        let bucketing = Bucketing::of(agg, steps);
        let raw = match &bucketing {
            Some(b) => Bucketed {
                series: self.series.clone(),
                used: 0,
            }
            .input_bucketed(agg, hints, steps, b)?
            .unwrap_or_default(),
            None => self.series.clone(),
        };
        range_vector(agg, hints, raw, steps, bucketing.as_ref()).map(Some)
    }
}

#[test]
fn pre_evaluated_range_vectors_give_the_same_answers() -> Result<(), Error> {
    let samples: Vec<(i64, f64)> = (0..40).map(|i| (i * 7 * S + 3, 1.0)).collect();
    let series = vec![
        raw(&[("app", "a"), ("pod", "1")], &samples),
        raw(&[("app", "a"), ("pod", "2")], &samples[5..20]),
        raw(
            &[("app", "a"), ("pod", "3"), ("__error__", "JSONParserErr")],
            &samples[30..],
        ),
    ];
    let steps = Steps::range_aligned(60 * S, 300 * S, 60 * S);
    for (expr, steps) in [
        (
            SampleExpr::Range(range(RangeOp::CountOverTime, vec![], 120, 0)),
            steps,
        ),
        (
            vagg(
                VectorOp::Sum,
                None,
                SampleExpr::Range(range(RangeOp::Rate, json(), 60, 30)),
            ),
            steps,
        ),
        (
            SampleExpr::Range(range(RangeOp::AbsentOverTime, vec![], 60, 0)),
            Steps::instant(600 * S),
        ),
        // A failing sample fails both ways, with the same error.
        (
            SampleExpr::Range(range(RangeOp::CountOverTime, json(), 60, 0)),
            steps,
        ),
    ] {
        let plain = evaluate(&expr, &steps, &mut Fixed::new(series.clone()), &no_limit());
        let mut pre = PreEvaluated {
            series: series.clone(),
            answered: 0,
        };
        let evaluated = evaluate(&expr, &steps, &mut pre, &no_limit());
        assert_eq!(plain, evaluated, "{expr:?}");
        assert_eq!(pre.answered, 1);
    }
    Ok(())
}

/// An engine dropping the failing entries [`FailureCut`] allows (each of two partitions
/// keeping only those failing no later than its earliest so far, in any reading order) gets
/// the same error as with every entry kept, whatever the steps, range and offset.
#[test]
fn failure_cut_keeps_the_reported_failure() {
    use super::FailureCut;
    let hints = LeafHints {
        grouping: None,
        skip_parsers: false,
        preserve_parser_errors: true,
    };
    // (error, details, timestamp s): parser errors are preserved (never fail), others fail.
    let entries: Vec<(&str, String, i64)> = (0..60)
        .map(|i: i64| {
            let err = if i % 3 == 0 {
                "JSONParserErr"
            } else {
                "SampleExtractionErr"
            };
            (err, format!("bad value {}", (i * 37) % 61), (i * 53) % 97)
        })
        .collect();
    let series = |e: &(&str, String, i64)| {
        raw(
            &[
                ("__error__", e.0),
                ("__error_details__", &e.1),
                ("app", "a"),
            ],
            &[(e.2 * S, 1.0)],
        )
    };
    for (start, end, step, range_s, offset_s) in [
        (0, 100, 10, 10, 0),
        (0, 100, 10, 30, 5),
        (20, 90, 15, 5, 0),
        (40, 60, 1, 1, 0),
        (0, 100, 100, 20, 0),
    ] {
        let steps = Steps {
            start_ns: start * S,
            end_ns: end * S,
            step_ns: step * S,
        };
        let agg = range(RangeOp::CountOverTime, vec![], range_s, offset_s);
        let all: Vec<RawSeries> = entries.iter().map(series).collect();
        let want = range_vector(&agg, &hints, all, &steps, None).map_err(|e| e.to_string());
        for order in [1usize, 7, 11] {
            let cut = FailureCut::new(&agg, &hints, &steps);
            let mut earliest = [None::<usize>; 2];
            let mut kept = Vec::new();
            for j in 0..entries.len() {
                let e = &entries[(j * order) % entries.len()];
                let part = j % 2;
                if cut.admits(&mut earliest[part], e.0, e.2 * S) {
                    kept.push(series(e));
                }
            }
            let got = range_vector(&agg, &hints, kept, &steps, None).map_err(|e| e.to_string());
            assert_eq!(
                got, want,
                "steps {start}..{end}/{step}, [{range_s}s] offset {offset_s}s"
            );
        }
    }
}
