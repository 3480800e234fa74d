//! The two LogQL functions: `vector(n)` (a label-less series at every step) and
//! `label_replace(v, dst, replacement, src, regex)` with a fully anchored regex.

use super::labels;
use super::{Assembler, SeriesVals};
use crate::ast::LabelReplace;
use crate::Error;

/// `vector(n)`: one series without labels and a point at each of the `n_steps` steps.
pub(super) fn vector(value: f64, n_steps: usize) -> SeriesVals {
    SeriesVals {
        labels: Vec::new(),
        points: (0..n_steps).map(|k| (k as u32, value)).collect(),
    }
}

/// `label_replace`: where the regex matches the whole value of `src` (missing = ""), sets `dst`
/// to the expanded replacement (`$1`, `${name}`), or removes `dst` when that is empty.
/// Series left unmatched are unchanged. Series that end up with equal labels are merged.
pub(super) fn label_replace(
    lr: &LabelReplace,
    input: Vec<SeriesVals>,
) -> Result<Vec<SeriesVals>, Error> {
    let re = regex::Regex::new(&format!("^(?:{})$", lr.regex)).map_err(|e| {
        Error::Validate(format!("parse error : invalid regex in label_replace: {e}"))
    })?;
    let mut out = Assembler::new();
    for mut series in input {
        let src = labels::get(&series.labels, &lr.src).unwrap_or_default();
        if let Some(caps) = re.captures(src) {
            let mut value = String::new();
            caps.expand(&lr.replacement, &mut value);
            if value.is_empty() {
                labels::remove(&mut series.labels, &lr.dst);
            } else {
                labels::set(&mut series.labels, &lr.dst, &value);
            }
        }
        out.push_series(series);
    }
    Ok(out.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::SampleExpr;

    fn lr(dst: &str, repl: &str, src: &str, re: &str) -> LabelReplace {
        LabelReplace {
            expr: Box::new(SampleExpr::Literal(0.0)),
            dst: dst.into(),
            replacement: repl.into(),
            src: src.into(),
            regex: re.into(),
        }
    }

    fn s(pairs: &[(&str, &str)]) -> SeriesVals {
        SeriesVals {
            labels: pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            points: vec![(0, 1.0)],
        }
    }

    #[test]
    fn replaces_with_capture_groups() -> Result<(), Error> {
        let out = label_replace(
            &lr("edge", "$1", "host", "edge-(.*)"),
            vec![s(&[("host", "edge-1")])],
        )?;
        assert_eq!(out, vec![s(&[("edge", "1"), ("host", "edge-1")])]);
        Ok(())
    }

    #[test]
    fn regex_is_anchored_and_no_match_leaves_labels() -> Result<(), Error> {
        let out = label_replace(
            &lr("x", "$1", "host", "dge-(.*)"),
            vec![s(&[("host", "edge-1")])],
        )?;
        assert_eq!(out, vec![s(&[("host", "edge-1")])]);
        Ok(())
    }

    #[test]
    fn empty_replacement_removes_destination() -> Result<(), Error> {
        let out = label_replace(&lr("host", "", "host", ".*"), vec![s(&[("host", "a")])])?;
        assert_eq!(out, vec![s(&[])]);
        Ok(())
    }

    #[test]
    fn named_groups_and_missing_source() -> Result<(), Error> {
        let out = label_replace(
            &lr("d", "${x}-$x", "nope", "(?P<x>.*)"),
            vec![s(&[("a", "b")])],
        )?;
        // Missing source is "": it matches, and "-" is set.
        assert_eq!(out, vec![s(&[("a", "b"), ("d", "-")])]);
        Ok(())
    }

    #[test]
    fn invalid_regex_is_an_error() {
        let err = label_replace(&lr("d", "$1", "a", "(unclosed"), vec![]);
        assert!(
            matches!(err, Err(Error::Validate(m)) if m.starts_with("parse error : invalid regex in label_replace"))
        );
    }

    #[test]
    fn vector_has_a_point_per_step() {
        let v = vector(3.0, 3);
        assert!(v.labels.is_empty());
        assert_eq!(v.points, vec![(0, 3.0), (1, 3.0), (2, 3.0)]);
    }
}
