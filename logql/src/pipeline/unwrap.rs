//! `| unwrap [conv(]label[)]` of metric queries ([`SampleExtractor`]): converts the label
//! to a number, removes it, then applies the post-unwrap label filters.

use super::convert::{parse_go_duration, parse_go_float, parse_humanize_bytes};
use super::label_filter::LabelFilter;
use super::labels::LabelsBuilder;
use crate::ast::{Unwrap, UnwrapConv};
use crate::Error;

/// `__error__` value of failed conversions.
pub(crate) const ERR_SAMPLE_EXTRACTION: &str = "SampleExtractionErr";

/// `| unwrap …` of a metric query.
#[derive(Debug, Clone)]
pub struct SampleExtractor {
    label: String,
    conv: UnwrapConv,
    post_filters: Vec<LabelFilter>,
}

impl SampleExtractor {
    /// Compile the unwrap and its post filters.
    pub fn new(unwrap: &Unwrap) -> Result<SampleExtractor, Error> {
        Ok(SampleExtractor {
            label: unwrap.label.clone(),
            conv: unwrap.conv,
            post_filters: unwrap
                .post_filters
                .iter()
                .map(LabelFilter::new)
                .collect::<Result<_, _>>()?,
        })
    }

    /// The unwrapped label's name.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Converts the unwrapped label to a number and removes that label from `lb`. A
    /// missing or empty label drops the entry (Loki issue 6713). On a failed conversion
    /// sets `__error__="SampleExtractionErr"` (+ details) and yields 0.0, as Loki. Then
    /// applies the post-unwrap label filters: `None` = entry dropped.
    pub fn extract(&self, lb: &mut LabelsBuilder) -> Option<f64> {
        let raw = lb.get(&self.label).filter(|v| !v.is_empty())?;
        let converted = match self.conv {
            UnwrapConv::None => parse_go_float(raw),
            UnwrapConv::Duration | UnwrapConv::DurationSeconds => {
                parse_go_duration(raw).map(|ns| ns as f64 / 1e9)
            }
            UnwrapConv::Bytes => parse_humanize_bytes(raw).map(|b| b as f64),
        };
        let value = match converted {
            Ok(v) => v,
            Err(e) => {
                lb.set_err(ERR_SAMPLE_EXTRACTION);
                lb.set_error_details(&e);
                0.0
            }
        };
        lb.del(&self.label);
        for f in &self.post_filters {
            if !f.process(lb) {
                return None;
            }
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::{LabelFilterExpr, MatchOp};

    fn lb_with(label: &str, value: &str) -> LabelsBuilder {
        let mut lb = LabelsBuilder::new();
        lb.reset(&[("app".to_string(), "a".to_string())], &[]);
        lb.set_parsed(label, value);
        lb
    }

    fn unwrap(conv: UnwrapConv, post: Vec<LabelFilterExpr>) -> Unwrap {
        Unwrap {
            conv,
            label: "v".into(),
            post_filters: post,
        }
    }

    #[test]
    fn conversions() -> Result<(), Error> {
        let plain = SampleExtractor::new(&unwrap(UnwrapConv::None, vec![]))?;
        let mut lb = lb_with("v", "24.5");
        assert_eq!(plain.extract(&mut lb), Some(24.5));
        assert_eq!(lb.labels(), vec![("app".to_string(), "a".to_string())]);
        let dur = SampleExtractor::new(&unwrap(UnwrapConv::Duration, vec![]))?;
        assert_eq!(dur.extract(&mut lb_with("v", "1500ms")), Some(1.5));
        let bytes = SampleExtractor::new(&unwrap(UnwrapConv::Bytes, vec![]))?;
        assert_eq!(bytes.extract(&mut lb_with("v", "1.5KiB")), Some(1536.0));
        // missing label: dropped
        let mut lb = LabelsBuilder::new();
        lb.reset(&[], &[]);
        assert_eq!(plain.extract(&mut lb), None);
        Ok(())
    }

    #[test]
    fn failure_sets_error_and_post_filters_apply() -> Result<(), Error> {
        let plain = SampleExtractor::new(&unwrap(UnwrapConv::None, vec![]))?;
        let mut lb = lb_with("v", "abc");
        assert_eq!(plain.extract(&mut lb), Some(0.0));
        assert_eq!(lb.error(), "SampleExtractionErr");
        assert_eq!(
            lb.error_details(),
            "strconv.ParseFloat: parsing \"abc\": invalid syntax"
        );
        let filtered = SampleExtractor::new(&unwrap(
            UnwrapConv::None,
            vec![LabelFilterExpr::String {
                name: "__error__".into(),
                op: MatchOp::Eq,
                value: String::new(),
            }],
        ))?;
        assert_eq!(filtered.extract(&mut lb_with("v", "abc")), None);
        assert_eq!(filtered.extract(&mut lb_with("v", "2")), Some(2.0));
        Ok(())
    }
}
