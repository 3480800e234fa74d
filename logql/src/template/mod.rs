//! Go `text/template` for LogQL's `line_format` and `label_format`, with Loki's function set
//! (Go builtins, Loki's own functions, the sprig subset Loki enables, `__line__` and
//! `__timestamp__`). Parse once with [`Template::parse`], execute per entry.
//!
//! Why our own engine: the one Rust port of Go templates (`gtmpl`, last released 2021) has no
//! per-execution context for `__line__`/`__timestamp__`, does not reproduce Go's `fmt`
//! (Loki's output of `printf "%05.1f"` on a string label is `%!f(string=00003)`), nor Go's
//! argument type checks and error texts. The engine here follows Go's lexer/parser/exec
//! rules closely and is split by stage:
//!
//! ```text
//! source ─lexer─▶ tokens ─parse─▶ Tree (functions resolved, variables → slots, literal
//!                                       regexes compiled)
//! Tree + TemplateContext ─exec─▶ String     (funcs: the function table, printf: Go fmt,
//!                                            value: runtime values, time: Go time layouts)
//! ```
//!
//! Labels are read with Loki's `missingkey=zero`: a missing label is the empty string.
//!
//! Known departures from Go/Loki: named IANA zones in `toDateInZone` are read as UTC (no tz
//! database; Loki's `Local` is UTC anyway); `time.Time` methods with arguments (`.Format`)
//! and `Month`/`Weekday` are not available; `%x`/`%b` on floats print as bad verbs; Go
//! strings may hold invalid UTF-8, ours are repaired. Guards Go lacks, so one entry cannot
//! pin a thread or exhaust memory: 1,000,000 range iterations per execution, 16 MiB per
//! string built by `repeat`/`indent`/`alignLeft`/`alignRight`, nesting depth 100, template
//! recursion depth 10.

mod exec;
mod funcs;
mod lexer;
mod parse;
mod printf;
mod time;
mod value;

/// A parsed template. Cheap to share: execute it from many threads at once.
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    src: String,
    tree: parse::Tree,
}

/// Read access to the current entry's labels, as `.name` in a template.
pub trait LabelLookup {
    /// The value of label `name`, if present.
    fn label(&self, name: &str) -> Option<&str>;

    /// All labels sorted by name, for `{{ . }}`, `range .` and `len .`. The default lists
    /// none; implement it where the full set is at hand.
    fn all(&self) -> Vec<(&str, &str)> {
        Vec::new()
    }
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

/// Which function set a template's names resolve in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// LogQL's `line_format`/`label_format`: Go builtins, Loki's functions, sprig's subset.
    Loki,
    /// Prometheus' alert templates: Go builtins and Prometheus' functions (`humanize`,
    /// `reReplaceAll`, `match`, `externalURL`, …; not `query` and its helpers).
    Prometheus,
}

/// What a Prometheus alert template sees: `.Labels`, `.ExternalLabels`, `.ExternalURL` and
/// `.Value` (the ruler prepends the `$labels`/`$value`/… definitions to the text).
pub struct AlertData<'a> {
    /// The alert's labels (the sample's labels).
    pub labels: &'a dyn LabelLookup,
    /// The configured external labels.
    pub external_labels: &'a dyn LabelLookup,
    /// The configured external URL.
    pub external_url: &'a str,
    /// The sample value.
    pub value: f64,
}

/// Labels in a sorted map, as a [`LabelLookup`].
impl LabelLookup for std::collections::BTreeMap<String, String> {
    fn label(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }

    fn all(&self) -> Vec<(&str, &str)> {
        self.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }
}

impl Template {
    /// Parse a template in `dialect`'s function set.
    pub fn parse_dialect(name: &str, src: &str, dialect: Dialect) -> Result<Template, String> {
        let tree = parse::parse_dialect(name, src, dialect)?;
        Ok(Template {
            name: name.to_string(),
            src: src.to_string(),
            tree,
        })
    }

    /// Execute a Prometheus-dialect template against alert data.
    pub fn execute_alert(&self, data: &AlertData<'_>) -> Result<String, String> {
        let mut root = std::collections::BTreeMap::new();
        root.insert("Labels".to_string(), value::Value::Labels(data.labels));
        root.insert(
            "ExternalLabels".to_string(),
            value::Value::Labels(data.external_labels),
        );
        root.insert(
            "ExternalURL".to_string(),
            value::Value::str(data.external_url),
        );
        root.insert("Value".to_string(), value::Value::Float(data.value));
        let ctx = TemplateContext {
            line: "",
            ts_ns: 0,
            labels: data.labels,
        };
        let mut out = String::new();
        exec::execute_with_root(
            &self.name,
            &self.src,
            &self.tree,
            &ctx,
            value::Value::Map(std::rc::Rc::new(root)),
            &mut out,
        )?;
        Ok(out)
    }

    /// Parse a template; errors read like Loki's (`template: line:1: function "toJson" not defined`).
    pub fn parse(src: &str) -> Result<Template, String> {
        Template::parse_named("line", src)
    }

    /// Parse with the template name Go reports in errors (Loki uses `line` for
    /// `line_format` and `label` for `label_format`).
    pub fn parse_named(name: &str, src: &str) -> Result<Template, String> {
        let tree = parse::parse(name, src)?;
        Ok(Template {
            name: name.to_string(),
            src: src.to_string(),
            tree,
        })
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.src
    }

    /// The label name when the template is exactly one `{{ .name }}` action: its output is
    /// that label's value ("" when missing). Loki short-cuts this case; callers may too.
    pub fn single_field(&self) -> Option<&str> {
        match self.tree.root.as_slice() {
            [parse::Node::Action(pipe)] if pipe.decl.is_empty() => match pipe.cmds.as_slice() {
                [cmd] => match cmd.args.as_slice() {
                    [parse::Operand {
                        arg: parse::Arg::Field(chain),
                        ..
                    }] if chain.len() == 1 => chain.first().map(String::as_str),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        }
    }

    /// True when the template has no actions, so its output is the text itself.
    pub fn is_constant(&self) -> bool {
        self.tree
            .root
            .iter()
            .all(|n| matches!(n, parse::Node::Text(_)))
    }

    /// Execute against one entry.
    pub fn execute(&self, ctx: &TemplateContext<'_>) -> Result<String, String> {
        let mut out = String::new();
        self.execute_into(ctx, &mut out)?;
        Ok(out)
    }

    /// Execute against one entry, appending to `out` (reuse the buffer across entries).
    /// On error `out` may hold partial output.
    pub fn execute_into(&self, ctx: &TemplateContext<'_>, out: &mut String) -> Result<(), String> {
        exec::execute(&self.name, &self.src, &self.tree, ctx, out)
    }
}

#[cfg(test)]
mod tests;
