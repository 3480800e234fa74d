//! Binary operators: literal⊕literal, literal⊕vector per sample, and vector⊕vector with
//! one-to-one / many-to-one matching on label signatures (`on`/`ignoring`,
//! `group_left`/`group_right`) and the `and`/`or`/`unless` set operators, step by step as Loki.

use std::collections::{HashMap, HashSet};

use super::labels;
use super::{Assembler, Labels, Operand, SeriesVals};
use crate::ast::{BinOp, BinaryExpr, VectorMatching};
use crate::Error;

/// Evaluates `lhs op rhs`.
pub(super) fn eval_binary(b: &BinaryExpr, lhs: Operand, rhs: Operand) -> Result<Operand, Error> {
    let set_op = matches!(b.op, BinOp::And | BinOp::Or | BinOp::Unless);
    match (lhs, rhs) {
        (Operand::Scalar(l), Operand::Scalar(r)) => {
            if set_op {
                return Err(literal_in_set_op(b.op, "left", l));
            }
            // Loki folds literal pairs; comparisons give 0/1.
            Ok(Operand::Scalar(apply(b.op, l, r).unwrap_or(0.0)))
        }
        (Operand::Vector(v), Operand::Scalar(r)) => {
            if set_op {
                return Err(literal_in_set_op(b.op, "right", r));
            }
            Ok(Operand::Vector(with_scalar(b, v, r, false)))
        }
        (Operand::Scalar(l), Operand::Vector(v)) => {
            if set_op {
                return Err(literal_in_set_op(b.op, "left", l));
            }
            Ok(Operand::Vector(with_scalar(b, v, l, true)))
        }
        (Operand::Vector(l), Operand::Vector(r)) => vector_vector(b, l, r).map(Operand::Vector),
    }
}

fn literal_in_set_op(op: BinOp, side: &str, v: f64) -> Error {
    let name = match op {
        BinOp::And => "and",
        BinOp::Or => "or",
        _ => "unless",
    };
    Error::Validate(format!(
        "parse error : unexpected literal for {side} leg of logical/set binary operation ({name}): {v:.6}"
    ))
}

/// `l op r` for arithmetic (`Some(value)`) and comparisons (`Some(1.0)` when true, `None` when
/// false). `x/0` and `x%0` are NaN, as Loki.
fn apply(op: BinOp, l: f64, r: f64) -> Option<f64> {
    let truth = |b: bool| if b { Some(1.0) } else { None };
    match op {
        BinOp::Add => Some(l + r),
        BinOp::Sub => Some(l - r),
        BinOp::Mul => Some(l * r),
        BinOp::Div => Some(if r == 0.0 { f64::NAN } else { l / r }),
        BinOp::Mod => Some(if r == 0.0 { f64::NAN } else { l % r }),
        BinOp::Pow => Some(l.powf(r)),
        BinOp::Eq => truth(l == r),
        BinOp::Neq => truth(l != r),
        BinOp::Gt => truth(l > r),
        BinOp::Ge => truth(l >= r),
        BinOp::Lt => truth(l < r),
        BinOp::Le => truth(l <= r),
        // Set operators never reach here.
        BinOp::And | BinOp::Or | BinOp::Unless => None,
    }
}

fn is_comparison(op: BinOp) -> bool {
    matches!(
        op,
        BinOp::Eq | BinOp::Neq | BinOp::Gt | BinOp::Ge | BinOp::Lt | BinOp::Le
    )
}

/// The value of one matched pair, `None` when a filtering comparison drops it. A filtering
/// comparison keeps `keep` (the vector side's value).
fn merge(op: BinOp, l: f64, r: f64, return_bool: bool, keep: f64) -> Option<f64> {
    let res = apply(op, l, r);
    if !is_comparison(op) {
        return res;
    }
    match (res.is_some(), return_bool) {
        (true, true) => Some(1.0),
        (false, true) => Some(0.0),
        (true, false) => Some(keep),
        (false, false) => None,
    }
}

/// Vector ⊕ literal (or literal ⊕ vector when `scalar_left`), per sample; labels unchanged.
fn with_scalar(b: &BinaryExpr, v: Vec<SeriesVals>, s: f64, scalar_left: bool) -> Vec<SeriesVals> {
    v.into_iter()
        .filter_map(|mut series| {
            series.points = series
                .points
                .into_iter()
                .filter_map(|(k, x)| {
                    let (l, r) = if scalar_left { (s, x) } else { (x, s) };
                    merge(b.op, l, r, b.return_bool, x).map(|v| (k, v))
                })
                .collect();
            (!series.points.is_empty()).then_some(series)
        })
        .collect()
}

/// The matching signature of a label set under `on`/`ignoring`.
fn signature(labels: &[(String, String)], matching: Option<&VectorMatching>) -> Labels {
    match matching {
        None => labels.to_vec(),
        Some(m) if m.on => labels::keep_only(labels, &m.labels),
        Some(m) => labels::drop_names(labels, &m.labels),
    }
}

/// Cardinality of a vector match.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Card {
    OneToOne,
    ManyToOne,
    OneToMany,
}

/// Samples of one side bucketed by step: `(series index, value)`.
fn by_step(side: &[SeriesVals], n_steps: usize) -> Vec<Vec<(usize, f64)>> {
    let mut buckets: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n_steps];
    for (i, s) in side.iter().enumerate() {
        for &(k, v) in &s.points {
            if let Some(b) = buckets.get_mut(k as usize) {
                b.push((i, v));
            }
        }
    }
    buckets
}

fn vector_vector(
    b: &BinaryExpr,
    lhs: Vec<SeriesVals>,
    rhs: Vec<SeriesVals>,
) -> Result<Vec<SeriesVals>, Error> {
    let matching = b.matching.as_ref();
    // Intern signatures so per-step work hashes small integers.
    let mut sig_ids: HashMap<Labels, u32> = HashMap::new();
    let mut intern = |labels: &[(String, String)]| {
        let sig = signature(labels, matching);
        let next = sig_ids.len() as u32;
        *sig_ids.entry(sig).or_insert(next)
    };
    let lsig: Vec<u32> = lhs.iter().map(|s| intern(&s.labels)).collect();
    let rsig: Vec<u32> = rhs.iter().map(|s| intern(&s.labels)).collect();
    let n_steps = lhs
        .iter()
        .chain(rhs.iter())
        .filter_map(|s| s.points.last().map(|p| p.0 as usize + 1))
        .max()
        .unwrap_or(0);
    let lsteps = by_step(&lhs, n_steps);
    let rsteps = by_step(&rhs, n_steps);
    let mut out = Assembler::new();
    // Output series index per input series (set operators keep the input labels).
    let mut lhs_out: Vec<Option<usize>> = vec![None; lhs.len()];
    let mut rhs_out: Vec<Option<usize>> = vec![None; rhs.len()];
    let slot =
        |out: &mut Assembler, cache: &mut Vec<Option<usize>>, side: &[SeriesVals], i: usize| {
            *cache[i].get_or_insert_with(|| out.series_index(&side[i].labels))
        };

    match b.op {
        BinOp::And | BinOp::Unless => {
            let keep_matched = b.op == BinOp::And;
            for (k, (l, r)) in lsteps.iter().zip(&rsteps).enumerate() {
                if r.is_empty() {
                    if !keep_matched {
                        for &(i, v) in l {
                            let at = slot(&mut out, &mut lhs_out, &lhs, i);
                            out.push_at(at, k as u32, v);
                        }
                    }
                    continue;
                }
                let right: HashSet<u32> = r.iter().map(|&(j, _)| rsig[j]).collect();
                for &(i, v) in l {
                    if right.contains(&lsig[i]) == keep_matched {
                        let at = slot(&mut out, &mut lhs_out, &lhs, i);
                        out.push_at(at, k as u32, v);
                    }
                }
            }
        }
        BinOp::Or => {
            for (k, (l, r)) in lsteps.iter().zip(&rsteps).enumerate() {
                let left: HashSet<u32> = l.iter().map(|&(i, _)| lsig[i]).collect();
                for &(i, v) in l {
                    let at = slot(&mut out, &mut lhs_out, &lhs, i);
                    out.push_at(at, k as u32, v);
                }
                for &(j, v) in r {
                    if !left.contains(&rsig[j]) {
                        let at = slot(&mut out, &mut rhs_out, &rhs, j);
                        out.push_at(at, k as u32, v);
                    }
                }
            }
        }
        _ => {
            let card = match matching.and_then(|m| m.group.as_ref()) {
                None => Card::OneToOne,
                Some(g) if g.left => Card::ManyToOne,
                Some(_) => Card::OneToMany,
            };
            let include: &[String] = matching
                .and_then(|m| m.group.as_ref())
                .map(|g| g.include.as_slice())
                .unwrap_or(&[]);
            // For one-to-many, the "many" side is the right one: swap, as Loki does.
            let (many, one, many_sig, one_sig, many_steps, one_steps) = if card == Card::OneToMany {
                (&rhs, &lhs, &rsig, &lsig, &rsteps, &lsteps)
            } else {
                (&lhs, &rhs, &lsig, &rsig, &lsteps, &rsteps)
            };
            // Output series per matched (many, one) pair, computed once.
            let mut pair_out: HashMap<(usize, usize), usize> = HashMap::new();
            for k in 0..n_steps {
                let mut one_by_sig: HashMap<u32, (usize, f64)> = HashMap::new();
                for &(j, v) in &one_steps[k] {
                    if one_by_sig.insert(one_sig[j], (j, v)).is_some() {
                        let side = if card == Card::OneToMany {
                            "left"
                        } else {
                            "right"
                        };
                        return Err(Error::Validate(format!(
                            "found duplicate series on the {side} hand-side;many-to-many matching not allowed: matching labels must be unique on one side"
                        )));
                    }
                }
                // Per matched signature: the output series already produced at this step.
                let mut matched: HashMap<u32, HashSet<usize>> = HashMap::new();
                for &(i, v) in &many_steps[k] {
                    let Some(&(j, w)) = one_by_sig.get(&many_sig[i]) else {
                        continue;
                    };
                    let at = *pair_out.entry((i, j)).or_insert_with(|| {
                        let metric =
                            result_metric(&many[i].labels, &one[j].labels, matching, card, include);
                        out.series_index(&metric)
                    });
                    match card {
                        Card::OneToOne => {
                            if matched.insert(many_sig[i], HashSet::new()).is_some() {
                                return Err(Error::Validate(
                                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                                        .to_string(),
                                ));
                            }
                        }
                        _ => {
                            if !matched.entry(many_sig[i]).or_default().insert(at) {
                                return Err(Error::Validate(
                                    "multiple matches for labels: grouping labels must ensure unique matches"
                                        .to_string(),
                                ));
                            }
                        }
                    }
                    // Back to the written order before applying the operator.
                    let (l, r) = if card == Card::OneToMany {
                        (w, v)
                    } else {
                        (v, w)
                    };
                    if let Some(value) = merge(b.op, l, r, b.return_bool, l) {
                        out.push_at(at, k as u32, value);
                    }
                }
            }
        }
    }
    Ok(out.finish())
}

/// Result labels of a matched pair (Loki's `resultMetric`): the "many" side's labels, reduced
/// to the `on` labels (or without the `ignoring` labels) for one-to-one matching, plus the
/// `group_x` labels copied from the "one" side.
fn result_metric(
    many: &[(String, String)],
    one: &[(String, String)],
    matching: Option<&VectorMatching>,
    card: Card,
    include: &[String],
) -> Labels {
    let Some(m) = matching else {
        return many.to_vec();
    };
    let mut out = if card == Card::OneToOne {
        if m.on {
            labels::keep_only(many, &m.labels)
        } else {
            labels::drop_names(many, &m.labels)
        }
    } else {
        many.to_vec()
    };
    for name in include {
        match labels::get(one, name) {
            Some(v) if !v.is_empty() => labels::set(&mut out, name, v),
            _ => labels::remove(&mut out, name),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::{GroupModifier, SampleExpr};

    fn s(pairs: &[(&str, &str)], points: &[(u32, f64)]) -> SeriesVals {
        SeriesVals {
            labels: pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            points: points.to_vec(),
        }
    }

    fn bin(op: BinOp, return_bool: bool, matching: Option<VectorMatching>) -> BinaryExpr {
        BinaryExpr {
            op,
            lhs: Box::new(SampleExpr::Literal(0.0)),
            rhs: Box::new(SampleExpr::Literal(0.0)),
            return_bool,
            matching,
        }
    }

    fn vecs(op: Operand) -> Vec<SeriesVals> {
        match op {
            Operand::Vector(v) => v,
            Operand::Scalar(x) => panic!("expected a vector, got scalar {x}"),
        }
    }

    #[test]
    fn scalar_pairs_fold() -> Result<(), Error> {
        let r = eval_binary(
            &bin(BinOp::Div, false, None),
            Operand::Scalar(1.0),
            Operand::Scalar(0.0),
        )?;
        assert!(matches!(r, Operand::Scalar(v) if v.is_nan()));
        let r = eval_binary(
            &bin(BinOp::Mod, false, None),
            Operand::Scalar(5.0),
            Operand::Scalar(0.0),
        )?;
        assert!(matches!(r, Operand::Scalar(v) if v.is_nan()));
        let r = eval_binary(
            &bin(BinOp::Gt, true, None),
            Operand::Scalar(3.0),
            Operand::Scalar(2.0),
        )?;
        assert_eq!(r, Operand::Scalar(1.0));
        let r = eval_binary(
            &bin(BinOp::Pow, false, None),
            Operand::Scalar(2.0),
            Operand::Scalar(9.0),
        )?;
        assert_eq!(r, Operand::Scalar(512.0));
        Ok(())
    }

    #[test]
    fn comparison_with_literal_filters_or_returns_bool() -> Result<(), Error> {
        let v = vec![s(&[("h", "a")], &[(0, 1.0), (1, 5.0)])];
        let r = vecs(eval_binary(
            &bin(BinOp::Gt, false, None),
            Operand::Vector(v.clone()),
            Operand::Scalar(2.0),
        )?);
        assert_eq!(r, vec![s(&[("h", "a")], &[(1, 5.0)])]);
        let r = vecs(eval_binary(
            &bin(BinOp::Gt, true, None),
            Operand::Vector(v.clone()),
            Operand::Scalar(2.0),
        )?);
        assert_eq!(r, vec![s(&[("h", "a")], &[(0, 0.0), (1, 1.0)])]);
        // literal on the left: 2 > v keeps the vector's value where true.
        let r = vecs(eval_binary(
            &bin(BinOp::Gt, false, None),
            Operand::Scalar(2.0),
            Operand::Vector(v.clone()),
        )?);
        assert_eq!(r, vec![s(&[("h", "a")], &[(0, 1.0)])]);
        let r = vecs(eval_binary(
            &bin(BinOp::Sub, false, None),
            Operand::Scalar(10.0),
            Operand::Vector(v),
        )?);
        assert_eq!(r, vec![s(&[("h", "a")], &[(0, 9.0), (1, 5.0)])]);
        Ok(())
    }

    #[test]
    fn one_to_one_matches_on_full_labels() -> Result<(), Error> {
        let l = vec![s(&[("h", "a")], &[(0, 6.0)]), s(&[("h", "b")], &[(0, 1.0)])];
        let r = vec![s(&[("h", "a")], &[(0, 3.0)]), s(&[("h", "c")], &[(0, 1.0)])];
        let out = vecs(eval_binary(
            &bin(BinOp::Div, false, None),
            Operand::Vector(l),
            Operand::Vector(r),
        )?);
        assert_eq!(out, vec![s(&[("h", "a")], &[(0, 2.0)])]);
        Ok(())
    }

    #[test]
    fn on_reduces_result_labels_and_group_left_keeps_many_side() -> Result<(), Error> {
        let l = vec![
            s(&[("h", "a"), ("m", "GET")], &[(0, 2.0)]),
            s(&[("h", "a"), ("m", "PUT")], &[(0, 6.0)]),
        ];
        let r = vec![s(&[("h", "a"), ("x", "1")], &[(0, 2.0)])];
        let on_h = Some(VectorMatching {
            on: true,
            labels: vec!["h".into()],
            group: None,
        });
        // One-to-one with two lhs matches → error.
        let err = eval_binary(
            &bin(BinOp::Mul, false, on_h.clone()),
            Operand::Vector(l.clone()),
            Operand::Vector(r.clone()),
        );
        assert!(
            matches!(err, Err(Error::Validate(m)) if m.contains("many-to-one matching must be explicit"))
        );
        let group_left = Some(VectorMatching {
            on: true,
            labels: vec!["h".into()],
            group: Some(GroupModifier {
                left: true,
                include: vec!["x".into()],
            }),
        });
        let out = vecs(eval_binary(
            &bin(BinOp::Div, false, group_left),
            Operand::Vector(l),
            Operand::Vector(r),
        )?);
        assert_eq!(
            out,
            vec![
                s(&[("h", "a"), ("m", "GET"), ("x", "1")], &[(0, 1.0)]),
                s(&[("h", "a"), ("m", "PUT"), ("x", "1")], &[(0, 3.0)]),
            ]
        );
        Ok(())
    }

    #[test]
    fn group_right_swaps_sides() -> Result<(), Error> {
        let one = vec![s(&[("h", "a")], &[(0, 10.0)])];
        let many = vec![
            s(&[("h", "a"), ("m", "GET")], &[(0, 2.0)]),
            s(&[("h", "a"), ("m", "PUT")], &[(0, 5.0)]),
        ];
        let m = Some(VectorMatching {
            on: true,
            labels: vec!["h".into()],
            group: Some(GroupModifier {
                left: false,
                include: vec![],
            }),
        });
        let out = vecs(eval_binary(
            &bin(BinOp::Div, false, m),
            Operand::Vector(one),
            Operand::Vector(many),
        )?);
        assert_eq!(
            out,
            vec![
                s(&[("h", "a"), ("m", "GET")], &[(0, 5.0)]),
                s(&[("h", "a"), ("m", "PUT")], &[(0, 2.0)]),
            ]
        );
        Ok(())
    }

    #[test]
    fn duplicate_right_signature_is_an_error() {
        let l = vec![s(&[("h", "a"), ("m", "1")], &[(0, 1.0)])];
        let r = vec![
            s(&[("h", "a"), ("m", "1")], &[(0, 1.0)]),
            s(&[("h", "a"), ("m", "2")], &[(0, 1.0)]),
        ];
        let on_h = Some(VectorMatching {
            on: true,
            labels: vec!["h".into()],
            group: None,
        });
        let err = eval_binary(
            &bin(BinOp::Add, false, on_h),
            Operand::Vector(l),
            Operand::Vector(r),
        );
        assert!(
            matches!(err, Err(Error::Validate(m)) if m.starts_with("found duplicate series on the right hand-side"))
        );
    }

    #[test]
    fn set_operators() -> Result<(), Error> {
        let l = vec![
            s(&[("h", "a")], &[(0, 1.0), (1, 1.0)]),
            s(&[("h", "b")], &[(0, 2.0)]),
        ];
        let r = vec![s(&[("h", "a")], &[(0, 9.0)]), s(&[("h", "c")], &[(1, 3.0)])];
        let and = vecs(eval_binary(
            &bin(BinOp::And, false, None),
            Operand::Vector(l.clone()),
            Operand::Vector(r.clone()),
        )?);
        assert_eq!(and, vec![s(&[("h", "a")], &[(0, 1.0)])]);
        let unless = vecs(eval_binary(
            &bin(BinOp::Unless, false, None),
            Operand::Vector(l.clone()),
            Operand::Vector(r.clone()),
        )?);
        // Series appear in order of their first output step.
        assert_eq!(
            unless,
            vec![s(&[("h", "b")], &[(0, 2.0)]), s(&[("h", "a")], &[(1, 1.0)])]
        );
        let or = vecs(eval_binary(
            &bin(BinOp::Or, false, None),
            Operand::Vector(l),
            Operand::Vector(r),
        )?);
        assert_eq!(
            or,
            vec![
                s(&[("h", "a")], &[(0, 1.0), (1, 1.0)]),
                s(&[("h", "b")], &[(0, 2.0)]),
                s(&[("h", "c")], &[(1, 3.0)]),
            ]
        );
        let err = eval_binary(
            &bin(BinOp::Or, false, None),
            Operand::Vector(vec![]),
            Operand::Scalar(1.0),
        );
        assert!(err.is_err());
        Ok(())
    }

    #[test]
    fn vector_comparison_without_bool_keeps_lhs_value() -> Result<(), Error> {
        let l = vec![s(&[("h", "a")], &[(0, 5.0)]), s(&[("h", "b")], &[(0, 1.0)])];
        let r = vec![s(&[("h", "a")], &[(0, 2.0)]), s(&[("h", "b")], &[(0, 2.0)])];
        let out = vecs(eval_binary(
            &bin(BinOp::Gt, false, None),
            Operand::Vector(l.clone()),
            Operand::Vector(r.clone()),
        )?);
        assert_eq!(out, vec![s(&[("h", "a")], &[(0, 5.0)])]);
        let out = vecs(eval_binary(
            &bin(BinOp::Gt, true, None),
            Operand::Vector(l),
            Operand::Vector(r),
        )?);
        assert_eq!(
            out,
            vec![s(&[("h", "a")], &[(0, 1.0)]), s(&[("h", "b")], &[(0, 0.0)])]
        );
        Ok(())
    }
}
