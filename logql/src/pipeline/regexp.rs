//! `| regexp "<re>"`: unanchored regex with named groups; a non-matching line gets no
//! labels and no error.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use regex::{CaptureLocations, Regex};

use super::hints::LabelHints;
use super::labels::{sanitize_label_key, LabelsBuilder, DUPLICATE_SUFFIX};
use super::line_filter::regex_error;
use crate::Error;

/// A compiled `regexp` stage.
#[derive(Debug, Clone)]
pub(crate) struct RegexpParser {
    re: Regex,
    /// (group index, sanitized label name)
    names: Vec<(usize, String)>,
    /// Tells this parser's capture slots apart in [`LOCATIONS`] (never reused).
    id: u64,
}

/// Source of [`RegexpParser::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Parsers whose capture slots a thread keeps, at most.
const KEPT_LOCATIONS: usize = 16;

thread_local! {
    /// Capture slots per parser, reused from line to line: `Regex::captures` allocates
    /// them on every call (a tenth of a `| regexp` query's CPU). Slots must come from the
    /// regex that fills them, hence one set per parser id.
    static LOCATIONS: RefCell<Vec<(u64, CaptureLocations)>> = const { RefCell::new(Vec::new()) };
}

impl RegexpParser {
    pub(crate) fn new(src: &str) -> Result<RegexpParser, Error> {
        let re = Regex::new(&super::line_filter::go_regex(src))
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
            re,
            names,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Run `f` with this parser's capture slots of the current thread.
    fn with_locations<R>(&self, f: impl FnOnce(&mut CaptureLocations) -> R) -> R {
        LOCATIONS.with(|cell| {
            let mut kept = cell.borrow_mut();
            let at = match kept.iter().position(|(id, _)| *id == self.id) {
                Some(at) => at,
                None => {
                    if kept.len() >= KEPT_LOCATIONS {
                        kept.remove(0);
                    }
                    kept.push((self.id, self.re.capture_locations()));
                    kept.len() - 1
                }
            };
            f(&mut kept[at].1)
        })
    }

    /// `false` = the line is dropped (an early label filter did not match).
    pub(crate) fn process(&self, line: &str, lb: &mut LabelsBuilder, hints: &LabelHints) -> bool {
        self.with_locations(|locs| {
            if self.re.captures_read(locs, line).is_none() {
                return true;
            }
            let mut key = std::mem::take(&mut lb.scratch_a);
            let mut keep = true;
            for (i, name) in &self.names {
                // An unmatched optional group yields "" in Go's FindSubmatch.
                let value = locs.get(*i).and_then(|(s, e)| line.get(s..e)).unwrap_or("");
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
        })
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

    /// Each parser fills its own capture slots, also when more parsers than a thread
    /// keeps slots for take turns on it.
    #[test]
    fn parsers_taking_turns_keep_their_own_slots() -> Result<(), Error> {
        let parsers: Vec<(RegexpParser, usize)> = (0..KEPT_LOCATIONS + 4)
            .map(|n| {
                // Parser n has n unnamed groups before its named one.
                let re = format!("{}(?P<v>x{n}y)", "(a?)".repeat(n));
                RegexpParser::new(&re).map(|p| (p, n))
            })
            .collect::<Result<_, _>>()?;
        for round in 0..3 {
            for (p, n) in parsers.iter().rev().skip(round) {
                let mut lb = LabelsBuilder::new();
                lb.reset(&[], &[]);
                assert!(p.process(&format!("-- x{n}y --"), &mut lb, &LabelHints::all()));
                assert_eq!(lb.get("v"), Some(format!("x{n}y").as_str()), "parser {n}");
            }
        }
        Ok(())
    }

    #[test]
    fn requires_named_group() {
        assert!(RegexpParser::new(r"(\d+)").is_err());
        assert!(RegexpParser::new(r"(unclosed").is_err());
    }
}
