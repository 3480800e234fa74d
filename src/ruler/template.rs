//! Prometheus' alert templates (`{{ $labels.user }}`, `{{ $value | humanize }}`,
//! `$externalLabels`, `$externalURL`) on the project's Go-template engine in its Prometheus
//! dialect. As Prometheus does, the variable definitions are prepended to the text, so error
//! positions read like Prometheus'.

use std::collections::BTreeMap;

use tovlog_logql::template::{AlertData, Dialect, Template};

/// The definitions Prometheus prepends to every alert template.
const DEFS: &str = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}";

/// One label or annotation template of an alerting rule, parsed once.
#[derive(Debug, Clone)]
pub struct RuleTemplate {
    /// `None` when the text has no actions: it is its own output.
    parsed: Option<Template>,
    text: String,
}

/// What a template is expanded with.
pub struct Expansion<'a> {
    /// The sample's labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The sample's value.
    pub value: f64,
    /// `ruler.external_labels`.
    pub external_labels: &'a BTreeMap<String, String>,
    /// `ruler.external_url`.
    pub external_url: &'a str,
}

impl RuleTemplate {
    /// Parse `text` for alert `alert`; errors read like Go's
    /// (`template: __alert_A:1: function "x" not defined`).
    pub fn compile(alert: &str, text: &str) -> Result<RuleTemplate, String> {
        if !text.contains("{{") {
            return Ok(RuleTemplate {
                parsed: None,
                text: text.to_string(),
            });
        }
        let src = format!("{DEFS}{text}");
        let parsed =
            Template::parse_dialect(&format!("__alert_{alert}"), &src, Dialect::Prometheus)?;
        Ok(RuleTemplate {
            parsed: Some(parsed),
            text: text.to_string(),
        })
    }

    /// A template that outputs `text` as is.
    pub fn constant(text: &str) -> RuleTemplate {
        RuleTemplate {
            parsed: None,
            text: text.to_string(),
        }
    }

    /// The template text as written in the rule.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Expand; an execution error becomes the text Prometheus puts in its place.
    pub fn expand(&self, e: &Expansion<'_>) -> String {
        let Some(t) = &self.parsed else {
            return self.text.clone();
        };
        let data = AlertData {
            labels: e.labels,
            external_labels: e.external_labels,
            external_url: e.external_url,
            value: e.value,
        };
        match t.execute_alert(&data) {
            Ok(s) => s,
            Err(err) => format!("<error expanding template: {err}>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(text: &str, value: f64) -> String {
        let labels: BTreeMap<String, String> = [("user".to_string(), "bob".to_string())]
            .into_iter()
            .collect();
        let ext: BTreeMap<String, String> = [("cluster".to_string(), "eu1".to_string())]
            .into_iter()
            .collect();
        match RuleTemplate::compile("A", text) {
            Ok(t) => t.expand(&Expansion {
                labels: &labels,
                value,
                external_labels: &ext,
                external_url: "http://grafana:3000/sub",
            }),
            Err(e) => e,
        }
    }

    #[test]
    fn prometheus_variables_and_functions() {
        assert_eq!(expand("{{ $labels.user }} {{ $value }}", 3.0), "bob 3");
        assert_eq!(expand("{{ $labels.missing }}", 3.0), "");
        assert_eq!(expand("{{ $externalLabels.cluster }}", 0.0), "eu1");
        assert_eq!(expand("{{ $externalURL }}", 0.0), "http://grafana:3000/sub");
        assert_eq!(expand("{{ pathPrefix }}", 0.0), "/sub");
        assert_eq!(expand("{{ $value | humanize }}", 1234567.0), "1.235M");
        assert_eq!(expand("{{ $value | humanize }}", 0.0012), "1.2m");
        assert_eq!(expand("{{ humanize1024 $value }}", 2048.0), "2ki");
        assert_eq!(expand("{{ humanizeDuration $value }}", 3725.0), "1h 2m 5s");
        assert_eq!(expand("{{ humanizeDuration $value }}", 0.25), "250ms");
        assert_eq!(expand("{{ humanizePercentage $value }}", 0.1234), "12.34%");
        assert_eq!(
            expand("{{ humanizeTimestamp $value }}", 0.0),
            "1970-01-01 00:00:00 +0000 UTC"
        );
        assert_eq!(expand("{{ title \"a b\" | toUpper }}", 0.0), "A B");
        assert_eq!(
            expand("{{ reReplaceAll \"o+\" \"0\" $labels.user }}", 0.0),
            "b0b"
        );
        assert_eq!(
            expand("{{ if match \"^b\" $labels.user }}y{{ end }}", 0.0),
            "y"
        );
        assert_eq!(expand("{{ printf \"%.1f\" $value }}", 2.25), "2.2");
        assert_eq!(expand("{{ .Labels.user }}", 0.0), "bob");
        assert_eq!(expand("{{ stripPort \"h:9\" }}", 0.0), "h");
        assert!(expand("{{ upper \"x\" }}", 0.0).contains("function \"upper\" not defined"));
        assert!(expand("{{ humanize \"x\" }}", 0.0).starts_with("<error expanding template:"));
    }
}
