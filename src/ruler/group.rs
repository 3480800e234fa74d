//! Rule groups in Loki's format (Prometheus' `rulefmt` with LogQL expressions): the model,
//! YAML in and out, Prometheus durations, and validation with Loki's messages
//! (`pkg/ruler/compat.go ValidateGroups`).
//!
//! ```yaml
//! groups:                      # a namespace file; the API takes one group without `groups:`
//!   - name: auth
//!     interval: 1m             # optional, the ruler's evaluation_interval otherwise
//!     limit: 0                 # optional: most alerts / series per rule, 0 = none
//!     rules:
//!       - alert: BruteForce
//!         expr: sum by (user) (count_over_time({app="auth"} |= "failed" [5m])) > 50
//!         for: 1m
//!         keep_firing_for: 5m
//!         labels: {severity: page}
//!         annotations: {summary: "{{ $labels.user }}: {{ $value }} failures"}
//!       - record: auth:failures:rate5m
//!         expr: sum(rate({app="auth"} |= "failed" [5m]))
//! ```

use std::{collections::BTreeMap, fmt, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::template::RuleTemplate;

/// One rule group.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RuleGroup {
    /// Group name, unique in its namespace.
    #[serde(default, deserialize_with = "de_string")]
    pub name: String,
    /// Evaluation interval; `None` uses the ruler's `evaluation_interval`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration"
    )]
    pub interval: Option<Duration>,
    /// Evaluate at `time - query_offset`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration"
    )]
    pub query_offset: Option<Duration>,
    /// Most alerts (alerting rules) or series (recording rules) one rule may produce; 0 = no
    /// limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit: i64,
    /// The rules, evaluated in order.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Labels added to every rule of the group (Prometheus 3).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "de_string_map"
    )]
    pub labels: BTreeMap<String, String>,
}

/// One alerting or recording rule.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Rule {
    /// Name of the recorded series (recording rule).
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de_string"
    )]
    pub record: String,
    /// Alert name (alerting rule).
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "de_string"
    )]
    pub alert: String,
    /// LogQL metric query.
    #[serde(default, deserialize_with = "de_string")]
    pub expr: String,
    /// How long a condition must hold before the alert fires.
    #[serde(
        default,
        rename = "for",
        skip_serializing_if = "is_none_or_zero",
        with = "opt_duration"
    )]
    pub for_: Option<Duration>,
    /// How long a firing alert keeps firing after its condition cleared.
    #[serde(
        default,
        skip_serializing_if = "is_none_or_zero",
        with = "opt_duration"
    )]
    pub keep_firing_for: Option<Duration>,
    /// Labels added to the alerts / recorded series (templates for alerts).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "de_string_map"
    )]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the alerts (templates).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "de_string_map"
    )]
    pub annotations: BTreeMap<String, String>,
}

impl Rule {
    /// The alert or record name.
    pub fn name(&self) -> &str {
        if self.alert.is_empty() {
            &self.record
        } else {
            &self.alert
        }
    }

    /// True for an alerting rule.
    pub fn is_alert(&self) -> bool {
        !self.alert.is_empty()
    }
}

/// A namespace file: `groups: [...]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RuleFile {
    /// The groups of the namespace.
    #[serde(default)]
    pub groups: Vec<RuleGroup>,
}

/// Loki's answer to a body that does not decode as a rule group.
pub const ERR_BAD_RULE_GROUP: &str = "unable to decoded rule group";

/// Decode one group (the body of `POST /loki/api/v1/rules/{namespace}`).
pub fn parse_group(yaml: &[u8]) -> Result<RuleGroup, String> {
    serde_yaml::from_slice::<RuleGroup>(yaml).map_err(|e| e.to_string())
}

/// Decode a namespace file and validate it as Loki loads rule files (repeated group names
/// are errors). Errors are joined with `, `.
pub fn parse_file(yaml: &[u8]) -> Result<RuleFile, String> {
    let file: RuleFile = serde_yaml::from_slice(yaml).map_err(|e| e.to_string())?;
    let errs = validate_groups(&file.groups);
    if errs.is_empty() {
        Ok(file)
    } else {
        Err(errs.join(", "))
    }
}

/// YAML of one group as Loki's API answers it.
pub fn group_yaml(group: &RuleGroup) -> Result<String, String> {
    serde_yaml::to_string(group).map_err(|e| e.to_string())
}

/// Loki's `ValidateGroups`: every error, in Loki's words.
pub fn validate_groups(groups: &[RuleGroup]) -> Vec<String> {
    let mut errs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, g) in groups.iter().enumerate() {
        if g.name.is_empty() {
            errs.push(format!("group {i}: Groupname must not be empty"));
        }
        if !seen.insert(g.name.as_str()) {
            errs.push(format!(
                "groupname: \"{}\" is repeated in the same file",
                g.name
            ));
        }
        for r in &g.rules {
            if let Err(e) = validate_rule(r, &g.name) {
                errs.push(e);
            }
        }
    }
    errs
}

/// Loki's `validateRule`: the first problem of one rule.
pub fn validate_rule(r: &Rule, group: &str) -> Result<(), String> {
    if !r.record.is_empty() && !r.alert.is_empty() {
        return Err("only one of 'record' and 'alert' must be set".into());
    }
    if r.record.is_empty() && r.alert.is_empty() {
        return Err("one of 'record' or 'alert' must be set".into());
    }
    let what = if r.record.is_empty() {
        format!("alert '{}'", r.alert)
    } else {
        format!("record '{}'", r.record)
    };
    if r.expr.is_empty() {
        return Err("field 'expr' must be set in rule".into());
    }
    match tovlog_logql::parse(&r.expr) {
        Err(e) => {
            return Err(format!(
                "could not parse expression for {what} in group '{group}': {e}"
            ))
        }
        // Loki accepts a log query here and fails every evaluation with this text; tovlog
        // refuses it up front.
        Ok(expr) if !expr.is_sample() => {
            return Err(format!(
                "invalid expression for {what} in group '{group}': rule result is not a vector or scalar: a log query cannot be a rule, use a metric query such as count_over_time({{...}}[5m])"
            ))
        }
        Ok(_) => {}
    }
    if !r.record.is_empty() {
        if !r.annotations.is_empty() {
            return Err("invalid field 'annotations' in recording rule".into());
        }
        if r.for_.is_some_and(|d| !d.is_zero()) {
            return Err("invalid field 'for' in recording rule".into());
        }
        if !is_metric_name(&r.record) {
            return Err(format!("invalid recording rule name: {}", r.record));
        }
    }
    for k in r.labels.keys() {
        if !is_label_name(k) || k == "__name__" {
            return Err(format!("invalid label name: {k}"));
        }
    }
    for k in r.annotations.keys() {
        if !is_label_name(k) {
            return Err(format!("invalid annotation name: {k}"));
        }
    }
    if r.is_alert() {
        for (k, v) in &r.labels {
            RuleTemplate::compile(&r.alert, v).map_err(|e| format!("label {k:?}: {e}"))?;
        }
        for (k, v) in &r.annotations {
            RuleTemplate::compile(&r.alert, v).map_err(|e| format!("annotation {k:?}: {e}"))?;
        }
    }
    Ok(())
}

/// Prometheus' legacy label name rule: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Prometheus' legacy metric name rule: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// Parse a Prometheus duration (`1h30m`, `5m`, `90s`, `500ms`, `1d`, `1w`, `1y`, `0`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("not a valid duration string: {s:?}");
    if s.is_empty() {
        return Err("empty duration string".into());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let mut rest = s;
    let mut total: u64 = 0;
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        // `ms` before `m`: the longest unit that matches.
        let unit = UNITS
            .iter()
            .enumerate()
            .skip(next_unit)
            .filter(|(_, (u, _))| rest.starts_with(u))
            .max_by_key(|(_, (u, _))| u.len())
            .ok_or_else(invalid)?;
        let (idx, (u, ms)) = unit;
        rest = &rest[u.len()..];
        next_unit = idx + 1;
        total = n
            .checked_mul(*ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| "duration out of range".to_string())?;
    }
    Ok(Duration::from_millis(total))
}

/// Prometheus' rendering of a duration (`model.Duration.String`): `1h30m`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("y", 365 * 86_400_000u64),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        let n = ms / size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            ms -= n * size;
        }
    }
    out
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_none_or_zero(v: &Option<Duration>) -> bool {
    v.is_none_or(|d| d.is_zero())
}

/// Serde for `Option<Duration>` as a Prometheus duration string.
mod opt_duration {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v = Option::<serde_yaml::Value>::deserialize(d)?;
        match v {
            None | Some(serde_yaml::Value::Null) => Ok(None),
            Some(v) => {
                let text = scalar_text(&v).ok_or_else(|| {
                    serde::de::Error::custom("a duration must be a string such as 1m")
                })?;
                parse_duration(&text)
                    .map(Some)
                    .map_err(serde::de::Error::custom)
            }
        }
    }
}

/// A YAML scalar as Go's yaml decodes it into a string.
fn scalar_text(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Null => Some(String::new()),
        _ => None,
    }
}

struct ScalarError;

impl fmt::Display for ScalarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected a string")
    }
}

/// A string field that also takes numbers and booleans, as Go's yaml does.
fn de_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = serde_yaml::Value::deserialize(d)?;
    scalar_text(&v).ok_or_else(|| serde::de::Error::custom(ScalarError))
}

/// A `map[string]string` field whose values may be YAML numbers or booleans.
fn de_string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let v = Option::<BTreeMap<String, serde_yaml::Value>>::deserialize(d)?;
    let mut out = BTreeMap::new();
    for (k, v) in v.unwrap_or_default() {
        let text = scalar_text(&v).ok_or_else(|| serde::de::Error::custom(ScalarError))?;
        out.insert(k, text);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_as_prometheus() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("m1").is_err());
        assert!(parse_duration("1s1m").is_err());
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn groups_round_trip_through_yaml() -> anyhow::Result<()> {
        let text = "name: g\ninterval: 1m\nrules:\n- alert: A\n  expr: sum(count_over_time({a=\"b\"}[5m])) > 1\n  for: 30s\n  labels:\n    severity: 2\n  annotations:\n    summary: '{{ $value | humanize }}'\n";
        let g = parse_group(text.as_bytes()).map_err(anyhow::Error::msg)?;
        assert_eq!(g.interval, Some(Duration::from_secs(60)));
        assert_eq!(
            g.rules[0].labels.get("severity").map(String::as_str),
            Some("2")
        );
        assert!(validate_groups(std::slice::from_ref(&g)).is_empty());
        let back = parse_group(group_yaml(&g).map_err(anyhow::Error::msg)?.as_bytes())
            .map_err(anyhow::Error::msg)?;
        assert_eq!(back, g);
        Ok(())
    }

    #[test]
    fn validation_speaks_lokis_words() {
        let rule = |f: &dyn Fn(&mut Rule)| {
            let mut r = Rule {
                alert: "A".into(),
                expr: "sum(rate({a=\"b\"}[1m]))".into(),
                ..Rule::default()
            };
            f(&mut r);
            validate_rule(&r, "g").err().unwrap_or_default()
        };
        assert_eq!(
            rule(&|r| r.record = "x".into()),
            "only one of 'record' and 'alert' must be set"
        );
        assert_eq!(
            rule(&|r| r.alert.clear()),
            "one of 'record' or 'alert' must be set"
        );
        assert_eq!(
            rule(&|r| r.expr.clear()),
            "field 'expr' must be set in rule"
        );
        assert!(rule(&|r| r.expr = "sum(".into())
            .starts_with("could not parse expression for alert 'A' in group 'g': "));
        assert!(rule(&|r| r.expr = "{a=\"b\"}".into()).contains("not a vector or scalar"));
        assert_eq!(
            rule(&|r| {
                r.alert.clear();
                r.record = "1bad".into();
            }),
            "invalid recording rule name: 1bad"
        );
        assert_eq!(
            rule(&|r| {
                r.labels.insert("__name__".into(), "x".into());
            }),
            "invalid label name: __name__"
        );
        assert!(rule(&|r| {
            r.annotations.insert("s".into(), "{{ nope }}".into());
        })
        .starts_with("annotation \"s\": template: __alert_A:1: function \"nope\" not defined"));
        let dup = vec![
            RuleGroup {
                name: "x".into(),
                ..RuleGroup::default()
            };
            2
        ];
        assert_eq!(
            validate_groups(&dup),
            vec!["groupname: \"x\" is repeated in the same file".to_string()]
        );
    }
}
