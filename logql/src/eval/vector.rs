//! Vector aggregations (`sum avg count min max stddev stdvar topk bottomk sort sort_desc`):
//! groups series by their `by`/`without` label set and reduces the samples of each step.

use super::labels;
use super::{Labels, SeriesVals};
use crate::ast::{VectorAggregation, VectorOp};
use crate::Error;

/// Checks the parameter of `topk`/`bottomk` (an integer > 0) and that no other operation has one.
pub(super) fn check_params(va: &VectorAggregation) -> Result<(), Error> {
    let name = va.op.name();
    match va.op {
        VectorOp::Topk | VectorOp::Bottomk => match va.param {
            None => Err(Error::Validate(format!(
                "parse error : parameter required for operation {name}"
            ))),
            Some(k) if k.fract() != 0.0 || !k.is_finite() => Err(Error::Validate(format!(
                "parse error : invalid parameter {name}({k},"
            ))),
            Some(k) if k <= 0.0 => Err(Error::Validate(format!(
                "parse error : invalid parameter (must be greater than 0) {name}({k}"
            ))),
            Some(_) => Ok(()),
        },
        _ => match va.param {
            Some(p) => Err(Error::Validate(format!(
                "parse error : unsupported parameter for operation {name}({p},"
            ))),
            None => Ok(()),
        },
    }
}

/// Evaluates a vector aggregation over its (already evaluated) input.
pub(super) fn aggregate(va: &VectorAggregation, input: Vec<SeriesVals>) -> Vec<SeriesVals> {
    match va.op {
        VectorOp::Topk | VectorOp::Bottomk => {
            let k = va.param.unwrap_or(1.0).max(1.0) as usize;
            select_k(va, input, k, va.op == VectorOp::Topk)
        }
        VectorOp::Sort | VectorOp::SortDesc => sort(input, va.op == VectorOp::SortDesc),
        _ => reduce(va, input),
    }
}

/// Group label set of a series.
fn group_key(va: &VectorAggregation, labels: &[(String, String)]) -> Labels {
    match &va.grouping {
        Some(g) => labels::reduce(labels, g),
        // No clause: everything in one group.
        None => Labels::new(),
    }
}

/// Groups input series in order of first appearance.
fn groups(va: &VectorAggregation, input: &[SeriesVals]) -> Vec<(Labels, Vec<usize>)> {
    let mut index = labels::KeyIndex::with_capacity(input.len());
    let mut out: Vec<(Labels, Vec<usize>)> = Vec::new();
    for (i, s) in input.iter().enumerate() {
        let key = group_key(va, &s.labels);
        match index.find_or_insert(&key, out.len(), |g| out[g].0 == key) {
            Some(g) => out[g].1.push(i),
            None => out.push((key, vec![i])),
        }
    }
    out
}

/// The `(step, member, value)` samples of a group, sorted by step (stable: member order).
fn group_samples(input: &[SeriesVals], members: &[usize]) -> Vec<(u32, usize, f64)> {
    let mut samples: Vec<(u32, usize, f64)> = members
        .iter()
        .flat_map(|&m| input[m].points.iter().map(move |&(k, v)| (k, m, v)))
        .collect();
    samples.sort_by_key(|s| s.0);
    samples
}

/// Calls `f(step, run)` for every run of samples sharing a step.
fn for_each_step(samples: &[(u32, usize, f64)], mut f: impl FnMut(u32, &[(u32, usize, f64)])) {
    let mut i = 0;
    while i < samples.len() {
        let k = samples[i].0;
        let mut j = i + 1;
        while j < samples.len() && samples[j].0 == k {
            j += 1;
        }
        f(k, &samples[i..j]);
        i = j;
    }
}

fn reduce(va: &VectorAggregation, input: Vec<SeriesVals>) -> Vec<SeriesVals> {
    let mut out = Vec::new();
    for (key, members) in groups(va, &input) {
        let mut points = Vec::new();
        if let [m] = members[..] {
            // A group of one series (a grouping by labels each series has alone): its
            // points are already one per step.
            let one = |&(k, v): &(u32, f64)| (k, reduce_values(va.op, std::iter::once(v)));
            points.extend(input[m].points.iter().map(one));
        } else {
            let samples = group_samples(&input, &members);
            for_each_step(&samples, |k, run| {
                let values = run.iter().map(|s| s.2);
                points.push((k, reduce_values(va.op, values)));
            });
        }
        out.push(SeriesVals {
            labels: key,
            points,
        });
    }
    out
}

/// One group's value at one step, with Loki's arithmetic (running mean, Welford).
fn reduce_values(op: VectorOp, mut values: impl Iterator<Item = f64>) -> f64 {
    let Some(first) = values.next() else {
        return f64::NAN;
    };
    match op {
        VectorOp::Sum => values.fold(first, |acc, v| acc + v),
        VectorOp::Count => 1.0 + values.count() as f64,
        VectorOp::Min => values.fold(first, |m, v| if m > v || m.is_nan() { v } else { m }),
        VectorOp::Max => values.fold(first, |m, v| if m < v || m.is_nan() { v } else { m }),
        VectorOp::Avg => {
            let (mut mean, mut count) = (first, 1.0f64);
            for v in values {
                count += 1.0;
                if mean.is_infinite() {
                    if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                        continue;
                    }
                    if v.is_finite() {
                        continue;
                    }
                }
                mean += (v - mean) / count;
            }
            mean
        }
        VectorOp::Stddev | VectorOp::Stdvar => {
            let (mut mean, mut count, mut aux) = (first, 1.0f64, 0.0f64);
            for v in values {
                count += 1.0;
                let delta = v - mean;
                mean += delta / count;
                aux += delta * (v - mean);
            }
            let var = aux / count;
            if op == VectorOp::Stddev {
                var.sqrt()
            } else {
                var
            }
        }
        // Handled elsewhere; never reached through `aggregate`.
        VectorOp::Topk | VectorOp::Bottomk | VectorOp::Sort | VectorOp::SortDesc => first,
    }
}

/// Ordering for topk (largest first) / bottomk (smallest first); NaN always ranks last.
fn rank(a: f64, b: f64, largest: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ if largest => b.total_cmp(&a),
        _ => a.total_cmp(&b),
    }
}

/// `topk`/`bottomk`: per group and step, the k best samples; they keep their full labels.
fn select_k(
    va: &VectorAggregation,
    input: Vec<SeriesVals>,
    k: usize,
    largest: bool,
) -> Vec<SeriesVals> {
    let mut picked: Vec<Vec<(u32, f64)>> = vec![Vec::new(); input.len()];
    // Order of output series for instant queries: by rank within the (single) step.
    let mut order: Vec<usize> = Vec::new();
    // Best first; ties by labels, then by input order (a run lists members in input order).
    let better = |a: &(u32, usize, f64), b: &(u32, usize, f64)| {
        rank(a.2, b.2, largest)
            .then_with(|| input[a.1].labels.cmp(&input[b.1].labels))
            .then(a.1.cmp(&b.1))
    };
    let mut best: Vec<(u32, usize, f64)> = Vec::new();
    for (_, members) in groups(va, &input) {
        let samples = group_samples(&input, &members);
        for_each_step(&samples, |step, run| {
            best.clear();
            best.extend_from_slice(run);
            // Only the k best are ordered: a partial selection first, for steps holding
            // thousands of series.
            if best.len() > k {
                best.select_nth_unstable_by(k - 1, better);
                best.truncate(k);
            }
            best.sort_by(better);
            for s in best.drain(..) {
                if picked[s.1].is_empty() {
                    order.push(s.1);
                }
                picked[s.1].push((step, s.2));
            }
        });
    }
    let mut input: Vec<Option<SeriesVals>> = input.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(order.len());
    for i in order {
        if let Some(mut s) = input[i].take() {
            let mut points = std::mem::take(&mut picked[i]);
            points.sort_by_key(|p| p.0);
            s.points = points;
            out.push(s);
        }
    }
    out
}

/// `sort`/`sort_desc`: values are unchanged; only the order of an instant result changes.
/// Series are ordered by their first point (the only one in an instant query).
fn sort(mut input: Vec<SeriesVals>, desc: bool) -> Vec<SeriesVals> {
    input.retain(|s| !s.points.is_empty());
    input.sort_by(|a, b| {
        let (x, y) = (a.points[0].1, b.points[0].1);
        rank(x, y, desc).then_with(|| a.labels.cmp(&b.labels))
    });
    input
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::{Grouping, SampleExpr};

    fn s(pairs: &[(&str, &str)], points: &[(u32, f64)]) -> SeriesVals {
        SeriesVals {
            labels: pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            points: points.to_vec(),
        }
    }

    fn agg(op: VectorOp, param: Option<f64>, grouping: Option<Grouping>) -> VectorAggregation {
        VectorAggregation {
            op,
            param,
            expr: Box::new(SampleExpr::Literal(0.0)),
            grouping,
        }
    }

    fn by(names: &[&str]) -> Option<Grouping> {
        Some(Grouping {
            without: false,
            labels: names.iter().map(|n| n.to_string()).collect(),
        })
    }

    fn input() -> Vec<SeriesVals> {
        vec![
            s(&[("host", "a"), ("m", "GET")], &[(0, 1.0), (1, 10.0)]),
            s(&[("host", "a"), ("m", "POST")], &[(0, 3.0)]),
            s(&[("host", "b"), ("m", "GET")], &[(0, 5.0), (1, 2.0)]),
        ]
    }

    #[test]
    fn sum_by_groups_per_step() {
        let out = aggregate(&agg(VectorOp::Sum, None, by(&["host"])), input());
        assert_eq!(
            out,
            vec![
                s(&[("host", "a")], &[(0, 4.0), (1, 10.0)]),
                s(&[("host", "b")], &[(0, 5.0), (1, 2.0)]),
            ]
        );
    }

    #[test]
    fn without_removes_listed_labels() {
        let g = Some(Grouping {
            without: true,
            labels: vec!["host".into()],
        });
        let out = aggregate(&agg(VectorOp::Count, None, g), input());
        assert_eq!(
            out,
            vec![
                s(&[("m", "GET")], &[(0, 2.0), (1, 2.0)]),
                s(&[("m", "POST")], &[(0, 1.0)]),
            ]
        );
    }

    #[test]
    fn avg_min_max_stddev_stdvar() {
        let one = |op| aggregate(&agg(op, None, None), input())[0].points.clone();
        assert_eq!(one(VectorOp::Avg), vec![(0, 3.0), (1, 6.0)]);
        assert_eq!(one(VectorOp::Min), vec![(0, 1.0), (1, 2.0)]);
        assert_eq!(one(VectorOp::Max), vec![(0, 5.0), (1, 10.0)]);
        let var0 = ((1.0f64 - 3.0).powi(2) + 0.0 + (5.0f64 - 3.0).powi(2)) / 3.0;
        let sv = one(VectorOp::Stdvar);
        assert!((sv[0].1 - var0).abs() < 1e-12);
        assert!((sv[1].1 - 16.0).abs() < 1e-12);
        let sd = one(VectorOp::Stddev);
        assert!((sd[0].1 - var0.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn groups_of_one_series_reduce_like_larger_groups() {
        // `by` every label each series has: every group holds one series.
        let all = by(&["host", "m"]);
        for op in [
            VectorOp::Sum,
            VectorOp::Avg,
            VectorOp::Count,
            VectorOp::Min,
            VectorOp::Max,
            VectorOp::Stddev,
            VectorOp::Stdvar,
        ] {
            let out = aggregate(&agg(op, None, all.clone()), input());
            let want: Vec<SeriesVals> = input()
                .into_iter()
                .map(|mut one| {
                    one.points = one
                        .points
                        .iter()
                        .map(|&(k, v)| (k, reduce_values(op, [v].into_iter())))
                        .collect();
                    one
                })
                .collect();
            assert_eq!(out, want, "{op:?}");
        }
        let counts = aggregate(&agg(VectorOp::Count, None, all), input());
        assert_eq!(counts[0].points, vec![(0, 1.0), (1, 1.0)]);
    }

    #[test]
    fn topk_selection_matches_a_full_sort() {
        // Many series per step with ties and a NaN: the k best of each step must be those a
        // full sort by (value, labels) puts first.
        let values = [3.0, 1.0, 3.0, f64::NAN, 2.0, 3.0, 1.0, 0.5, 2.0, 3.0];
        let series: Vec<SeriesVals> = (0..40)
            .map(|i| {
                let name = format!("p{:02}", (i * 7) % 40);
                let points: Vec<(u32, f64)> = (0..3u32)
                    .filter(|k| !(i + *k as usize).is_multiple_of(4))
                    .map(|k| (k, values[(i * 3 + k as usize) % values.len()]))
                    .collect();
                s(&[("path", &name)], &points)
            })
            .collect();
        for (op, largest) in [(VectorOp::Topk, true), (VectorOp::Bottomk, false)] {
            for k in [1usize, 3, 7, 39, 40, 50] {
                let out = aggregate(&agg(op, Some(k as f64), None), series.clone());
                for step in 0..3u32 {
                    let mut all: Vec<(&Labels, f64)> = series
                        .iter()
                        .filter_map(|s| {
                            let p = s.points.iter().find(|p| p.0 == step)?;
                            Some((&s.labels, p.1))
                        })
                        .collect();
                    all.sort_by(|a, b| rank(a.1, b.1, largest).then(a.0.cmp(b.0)));
                    let mut want: Vec<&Labels> = all.iter().take(k).map(|a| a.0).collect();
                    let mut got: Vec<&Labels> = out
                        .iter()
                        .filter(|s| s.points.iter().any(|p| p.0 == step))
                        .map(|s| &s.labels)
                        .collect();
                    want.sort();
                    got.sort();
                    assert_eq!(got, want, "{op:?} k={k} step={step}");
                }
            }
        }
    }

    #[test]
    fn topk_per_group_keeps_full_labels() {
        let out = aggregate(&agg(VectorOp::Topk, Some(1.0), by(&["host"])), input());
        let mut got: Vec<(Labels, Vec<(u32, f64)>)> =
            out.into_iter().map(|s| (s.labels, s.points)).collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                (
                    s(&[("host", "a"), ("m", "GET")], &[]).labels,
                    vec![(1, 10.0)]
                ),
                (
                    s(&[("host", "a"), ("m", "POST")], &[]).labels,
                    vec![(0, 3.0)]
                ),
                (
                    s(&[("host", "b"), ("m", "GET")], &[]).labels,
                    vec![(0, 5.0), (1, 2.0)]
                ),
            ]
        );
    }

    #[test]
    fn bottomk_picks_smallest() {
        let out = aggregate(&agg(VectorOp::Bottomk, Some(2.0), None), input());
        let at0: Vec<f64> = out
            .iter()
            .filter_map(|s| s.points.iter().find(|p| p.0 == 0).map(|p| p.1))
            .collect();
        assert_eq!(at0, vec![1.0, 3.0]);
    }

    #[test]
    fn sort_orders_by_value() {
        let v = vec![s(&[("a", "1")], &[(0, 3.0)]), s(&[("a", "2")], &[(0, 1.0)])];
        let asc = aggregate(&agg(VectorOp::Sort, None, None), v.clone());
        assert_eq!(asc[0].points[0].1, 1.0);
        let desc = aggregate(&agg(VectorOp::SortDesc, None, None), v);
        assert_eq!(desc[0].points[0].1, 3.0);
    }

    #[test]
    fn topk_parameter_is_checked() {
        assert!(check_params(&agg(VectorOp::Topk, Some(0.0), None)).is_err());
        assert!(check_params(&agg(VectorOp::Topk, Some(1.5), None)).is_err());
        assert!(check_params(&agg(VectorOp::Topk, None, None)).is_err());
        assert!(check_params(&agg(VectorOp::Sum, Some(1.0), None)).is_err());
        assert!(check_params(&agg(VectorOp::Bottomk, Some(3.0), None)).is_ok());
    }
}
