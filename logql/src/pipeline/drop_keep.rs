//! `| drop a, b="x"` and `| keep a, b="x"`. `drop` of `__error__`/`__error_details__`
//! clears the error; `keep` always keeps them.

use super::label_filter::StringMatcher;
use super::labels::{LabelsBuilder, ERROR_DETAILS_LABEL, ERROR_LABEL};
use crate::ast::LabelSelect;
use crate::Error;

/// A label name with an optional value matcher.
#[derive(Debug, Clone)]
pub(crate) struct NamedMatcher {
    name: String,
    matcher: Option<StringMatcher>,
}

fn compile(selects: &[LabelSelect]) -> Result<Vec<NamedMatcher>, Error> {
    selects
        .iter()
        .map(|s| {
            Ok(NamedMatcher {
                name: s.name.clone(),
                matcher: match &s.matcher {
                    // Prometheus label matcher semantics.
                    Some((op, v)) => Some(StringMatcher::new(*op, v, true)?),
                    None => None,
                },
            })
        })
        .collect()
}

/// `| drop …`.
#[derive(Debug, Clone)]
pub(crate) struct Drop {
    labels: Vec<NamedMatcher>,
}

impl Drop {
    pub(crate) fn new(selects: &[LabelSelect]) -> Result<Drop, Error> {
        Ok(Drop {
            labels: compile(selects)?,
        })
    }

    pub(crate) fn process(&self, lb: &mut LabelsBuilder) {
        for l in &self.labels {
            let value = match l.name.as_str() {
                ERROR_LABEL => lb.error(),
                ERROR_DETAILS_LABEL => lb.error_details(),
                name => lb.get(name).unwrap_or(""),
            };
            let hit = match &l.matcher {
                Some(m) => m.matches(value),
                None => true,
            };
            if !hit {
                continue;
            }
            match l.name.as_str() {
                ERROR_LABEL => lb.reset_error(),
                ERROR_DETAILS_LABEL => lb.reset_error_details(),
                name => {
                    // Without a matcher Loki deletes only labels that exist.
                    if l.matcher.is_some() || lb.get(name).is_some() {
                        lb.del(name);
                    }
                }
            }
        }
    }
}

/// `| keep …`.
#[derive(Debug, Clone)]
pub(crate) struct Keep {
    labels: Vec<NamedMatcher>,
}

impl Keep {
    pub(crate) fn new(selects: &[LabelSelect]) -> Result<Keep, Error> {
        Ok(Keep {
            labels: compile(selects)?,
        })
    }

    pub(crate) fn process(&self, lb: &mut LabelsBuilder) {
        if self.labels.is_empty() {
            return;
        }
        for name in lb.names() {
            let value = lb.get(&name).unwrap_or("");
            let keep = self.labels.iter().any(|k| {
                k.name == name
                    && match &k.matcher {
                        Some(m) => m.matches(value),
                        None => true,
                    }
            });
            if !keep {
                lb.del(&name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::MatchOp;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn sel(name: &str, m: Option<(MatchOp, &str)>) -> LabelSelect {
        LabelSelect {
            name: name.into(),
            matcher: m.map(|(o, v)| (o, v.to_string())),
        }
    }

    #[test]
    fn drop_with_and_without_matchers() -> Result<(), Error> {
        let d = Drop::new(&[
            sel("a", None),
            sel("b", Some((MatchOp::Eq, "x"))),
            sel("c", Some((MatchOp::Eq, "x"))),
            sel("__error__", None),
        ])?;
        let mut lb = LabelsBuilder::new();
        lb.reset(
            &pairs(&[("a", "1"), ("b", "x"), ("c", "y"), ("d", "z")]),
            &[],
        );
        lb.set_err("JSONParserErr");
        d.process(&mut lb);
        assert_eq!(lb.labels(), pairs(&[("c", "y"), ("d", "z")]));
        Ok(())
    }

    #[test]
    fn keep_keeps_error_labels() -> Result<(), Error> {
        let k = Keep::new(&[sel("a", None), sel("b", Some((MatchOp::Eq, "x")))])?;
        let mut lb = LabelsBuilder::new();
        lb.reset(
            &pairs(&[("a", "1"), ("b", "y"), ("c", "z")]),
            &pairs(&[("t", "1")]),
        );
        lb.set_parsed("a", "2");
        lb.set_err("E");
        k.process(&mut lb);
        assert_eq!(lb.labels(), pairs(&[("__error__", "E"), ("a", "2")]));
        Ok(())
    }
}
