//! Go `text/template` subset used by `line_format` and `label_format`, with Loki's functions.
//! TODO: implementation.

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    _src: String,
}

/// Read access to the current entry's labels, as `.name` in a template.
pub trait LabelLookup {
    /// The value of label `name`, if present.
    fn label(&self, name: &str) -> Option<&str>;
}

/// What a template can see while executing.
pub struct TemplateContext<'a> {
    /// The current line (`__line__`).
    pub line: &'a str,
    /// The entry timestamp in ns (`__timestamp__`).
    pub ts_ns: i64,
    /// The current labels.
    pub labels: &'a dyn LabelLookup,
}

impl Template {
    /// Parse a template; errors read like Loki's (`template: line:1: function "toJson" not defined`).
    pub fn parse(src: &str) -> Result<Template, String> {
        Ok(Template {
            _src: src.to_string(),
        })
    }

    /// Execute against one entry.
    pub fn execute(&self, _ctx: &TemplateContext<'_>) -> Result<String, String> {
        Err("template engine not implemented".into())
    }
}
