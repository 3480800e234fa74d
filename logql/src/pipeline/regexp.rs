//! `| regexp "<re>"`: unanchored regex with named groups; a non-matching line gets no
//! labels and no error.

use regex::Regex;

use super::hints::LabelHints;
use super::labels::{sanitize_label_key, LabelsBuilder, DUPLICATE_SUFFIX};
use super::line_filter::regex_error;
use super::scratch_regex::ScratchRegex;
use crate::Error;

/// A compiled `regexp` stage.
#[derive(Debug, Clone)]
pub(crate) struct RegexpParser {
    re: ScratchRegex,
    /// (group index, sanitized label name)
    names: Vec<(usize, String)>,
}

impl RegexpParser {
    pub(crate) fn new(src: &str) -> Result<RegexpParser, Error> {
        let src = super::line_filter::go_regex(src);
        // `regex` validates, with the error texts users see; the engine is then built alike.
        let re = Regex::new(&src)
            .map_err(|e| Error::Validate(format!("error parsing regexp: {}", regex_error(&e))))?;
        let mut names = Vec::new();
        let mut key = String::new();
        for (i, n) in re.capture_names().enumerate() {
            let Some(n) = n else { continue };
            if !super::is_valid_label_name(n) {
                return Err(Error::Validate(format!(
                    "invalid extracted label name '{n}'"
                )));
            }
            if names
                .iter()
                .any(|(_, existing): &(usize, String)| existing == n)
            {
                return Err(Error::Validate(format!(
                    "duplicate extracted label name '{n}'"
                )));
            }
            sanitize_label_key(n, &mut key);
            if !key.is_empty() {
                names.push((i, key.clone()));
            }
        }
        if names.is_empty() {
            return Err(Error::Validate(
                "at least one named capture must be supplied".into(),
            ));
        }
        Ok(RegexpParser {
            re: ScratchRegex::new(&re)?,
            names,
        })
    }

    /// `false` = the line is dropped (an early label filter did not match).
    pub(crate) fn process(&self, line: &str, lb: &mut LabelsBuilder, hints: &LabelHints) -> bool {
        let mut spans = std::mem::take(&mut lb.scratch_ranges);
        let keep =
            !self.re.captures_into(line, &mut spans) || self.set_labels(line, &spans, lb, hints);
        lb.scratch_ranges = spans;
        keep
    }

    /// Set the labels of a match whose group spans are `spans`; `false` when an early
    /// label filter drops the line.
    fn set_labels(
        &self,
        line: &str,
        spans: &[(usize, usize)],
        lb: &mut LabelsBuilder,
        hints: &LabelHints,
    ) -> bool {
        let mut key = std::mem::take(&mut lb.scratch_a);
        let mut keep = true;
        for (i, name) in &self.names {
            // An unmatched optional group yields "" in Go's FindSubmatch.
            let value = spans
                .get(*i)
                .and_then(|&(s, e)| line.get(s..e))
                .unwrap_or("");
            key.clear();
            key.push_str(name);
            if lb.collides(&key) {
                key.push_str(DUPLICATE_SUFFIX);
            }
            if !hints.should_extract(&key) || lb.extracted(&key) {
                continue;
            }
            lb.set_parsed(&key, value);
            if !hints.should_continue(&key, lb) {
                keep = false;
                break;
            }
        }
        lb.scratch_a = key;
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_groups_become_labels() -> Result<(), Error> {
        let p = RegexpParser::new(r"^(?P<level>[A-Z]+) (?P<msg>.*)$")?;
        let mut lb = LabelsBuilder::new();
        lb.reset(&[("level".to_string(), "x".to_string())], &[]);
        assert!(p.process("INFO hello world", &mut lb, &LabelHints::all()));
        assert_eq!(lb.get("level_extracted"), Some("INFO"));
        assert_eq!(lb.get("msg"), Some("hello world"));
        lb.reset(&[], &[]);
        assert!(p.process("no match here", &mut lb, &LabelHints::all()));
        assert!(lb.is_unchanged());
        Ok(())
    }

    #[test]
    fn requires_named_group() {
        assert!(RegexpParser::new(r"(\d+)").is_err());
        assert!(RegexpParser::new(r"(unclosed").is_err());
    }
}
