//! The provisioned stack in `docker/`, checked against real servers and real tools, since no
//! container engine runs in CI:
//! - every panel query of the forensics dashboard runs, as Grafana sends it, on the conformance
//!   dataset and returns data (and "Deletes by user" counts what the dataset holds);
//! - every metric the tovlog dashboard's PromQL uses is on a real server's `/metrics`, and the
//!   queries parse with Prometheus' own parser (`promtool`);
//! - the playbook's rule files are Prometheus rule groups whose expressions run on the dataset,
//!   and the mass-DELETE and brute-force alerts fire exactly for the accounts and addresses that
//!   cross the thresholds in the data;
//! - the compose file, tovlog's configuration, Grafana's provisioning, Prometheus' and
//!   Alertmanager's configurations agree with each other and pass `promtool` / `amtool`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context};
use serde_json::Value;
use tovlog::Config;

use crate::server::{conformance_config, TestServer};

/// The conformance dataset covers 2025-11-20 00:00–02:00 UTC; dashboards are opened on that range.
const START_S: i64 = 1_763_596_800;
const END_S: i64 = START_S + 7200;
/// Step of range queries (what Grafana sends for a 2 h range on a wide panel is in this order).
const STEP_S: i64 = 60;
/// What Grafana puts for its interval macros with that range and step.
const MACROS: &[(&str, &str)] = &[
    ("__auto", "1m"),
    ("__interval", "1m"),
    ("__interval_ms", "60000"),
    ("__rate_interval", "4m"),
    ("__range", "2h"),
    ("__range_s", "7200"),
    ("__range_ms", "7200000"),
];

fn docker_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docker")
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

fn read_yaml(path: &Path) -> anyhow::Result<serde_yaml::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn ns(seconds: i64) -> String {
    (i128::from(seconds) * 1_000_000_000).to_string()
}

// ---------------------------------------------------------------------------------------------
// Dashboards: panels, targets, template variables.

/// One query of one panel.
#[derive(Debug, Clone)]
struct PanelQuery {
    /// Panel title (for messages).
    panel: String,
    /// Title of the row the panel sits in ("" above the first row).
    row: String,
    /// `targets[].expr` as written in the JSON.
    expr: String,
    /// The target asks for an instant query (`queryType: instant`, or the legacy `instant: true`).
    instant: bool,
}

/// Every target of every panel, rows' nested panels included, with the row each belongs to.
fn panel_queries(dashboard: &Value) -> Vec<PanelQuery> {
    fn walk(panels: &Value, row: &mut String, out: &mut Vec<PanelQuery>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default().to_string();
            if panel["type"] == "row" {
                *row = title;
                // A collapsed row keeps its panels inside it.
                let mut inner_row = row.clone();
                walk(&panel["panels"], &mut inner_row, out);
                continue;
            }
            for target in panel["targets"].as_array().into_iter().flatten() {
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                out.push(PanelQuery {
                    panel: title.clone(),
                    row: row.clone(),
                    expr: expr.to_string(),
                    instant: target["queryType"] == "instant" || target["instant"] == true,
                });
            }
            walk(&panel["panels"], row, out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut String::new(), &mut out);
    out
}

/// The value Grafana substitutes for each template variable with the dashboard as saved: the
/// current selection, "All" as the variable's `allValue`.
fn variable_values(dashboard: &Value) -> anyhow::Result<BTreeMap<String, String>> {
    let mut vars = BTreeMap::new();
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = v["name"]
            .as_str()
            .context("template variable without a name")?;
        let current = match &v["current"]["value"] {
            Value::String(s) => s.clone(),
            Value::Array(a) => a
                .first()
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            _ => v["query"].as_str().unwrap_or_default().to_string(),
        };
        let value = if current == "$__all" {
            v["allValue"].as_str().unwrap_or(".*").to_string()
        } else {
            current
        };
        vars.insert(name.to_string(), value);
    }
    Ok(vars)
}

/// Substitute `$name`, `${name}`, `${name:format}` and `[[name]]` with the variables and
/// Grafana's interval macros. A reference to anything else is an error: Grafana would send it
/// as it stands and the query would fail.
fn interpolate(expr: &str, vars: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let lookup = |name: &str| -> anyhow::Result<String> {
        if let Some(v) = vars.get(name) {
            return Ok(v.clone());
        }
        MACROS
            .iter()
            .find(|(m, _)| *m == name)
            .map(|(_, v)| (*v).to_string())
            .with_context(|| format!("unknown variable ${name} in {expr}"))
    };
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(i) = rest.find(['$', '[']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("${") {
            let end = after.find('}').context("unclosed ${")?;
            let name = after[..end].split(':').next().unwrap_or_default();
            out.push_str(&lookup(name)?);
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix("[[") {
            match after.find("]]") {
                Some(end) if after[..end].chars().all(is_ident) && end > 0 => {
                    out.push_str(&lookup(&after[..end])?);
                    rest = &after[end + 2..];
                }
                _ => {
                    out.push('[');
                    rest = &rest[1..];
                }
            }
        } else if let Some(after) = rest.strip_prefix('$') {
            let end = after.find(|c| !is_ident(c)).unwrap_or(after.len());
            if end == 0 {
                // A regex anchor, not a variable.
                out.push('$');
            } else {
                out.push_str(&lookup(&after[..end])?);
            }
            rest = &after[end..];
        } else {
            out.push('[');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Talking to the server.

/// Run a LogQL query as Grafana's Loki data source does: `query_range` (with the logs panel's
/// line limit) or an instant `query` at `time_s`. Returns `data` of a successful answer.
async fn loki_query(
    server: &TestServer,
    expr: &str,
    instant: bool,
    time_s: i64,
) -> anyhow::Result<Value> {
    let (path, params): (&str, Vec<(String, String)>) = if instant {
        (
            "/loki/api/v1/query",
            vec![
                ("query".into(), expr.into()),
                ("time".into(), ns(time_s)),
                ("limit".into(), "1000".into()),
            ],
        )
    } else {
        (
            "/loki/api/v1/query_range",
            vec![
                ("query".into(), expr.into()),
                ("start".into(), ns(START_S)),
                ("end".into(), ns(END_S)),
                ("step".into(), format!("{}ms", STEP_S * 1000)),
                ("limit".into(), "1000".into()),
                ("direction".into(), "backward".into()),
            ],
        )
    };
    let (status, body) = server.get(path, &params, &[]).await?;
    ensure!(status == 200, "HTTP {status}: {body}");
    let json: Value = serde_json::from_str(&body).context("answer is not JSON")?;
    ensure!(json["status"] == "success", "answer: {body}");
    Ok(json["data"].clone())
}

/// Whether an answer holds at least one sample or entry.
fn has_data(data: &Value) -> bool {
    let result = data["result"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    match data["resultType"].as_str() {
        Some("vector") => !result.is_empty(),
        Some("matrix") | Some("streams") => result
            .iter()
            .any(|s| s["values"].as_array().is_some_and(|v| !v.is_empty())),
        _ => false,
    }
}

/// Values of one label over the series of a vector or matrix answer.
fn label_values(data: &Value, label: &str) -> BTreeSet<String> {
    data["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["metric"][label].as_str().map(str::to_string))
        .collect()
}

/// Series names in a Prometheus text exposition.
fn exported_metric_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The conformance dataset, read directly to compute what the queries must find.

/// One entry of the dataset: its stream labels, timestamp (ns) and line.
struct Entry {
    labels: BTreeMap<String, String>,
    ts_ns: i128,
    line: String,
}

fn dataset() -> anyhow::Result<Vec<Entry>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/dataset");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let push = read_json(&f)?;
        for stream in push["streams"].as_array().into_iter().flatten() {
            let labels: BTreeMap<String, String> = stream["stream"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            for v in stream["values"].as_array().into_iter().flatten() {
                out.push(Entry {
                    labels: labels.clone(),
                    ts_ns: v[0].as_str().unwrap_or_default().parse()?,
                    line: v[1].as_str().unwrap_or_default().to_string(),
                });
            }
        }
    }
    ensure!(!out.is_empty(), "empty dataset in {}", dir.display());
    Ok(out)
}

/// The backend's JSON lines with their timestamps (lines that are not JSON objects skipped).
fn backend_events(entries: &[Entry]) -> Vec<(i128, serde_json::Map<String, Value>)> {
    entries
        .iter()
        .filter(|e| e.labels.get("job").is_some_and(|j| j == "tovplay-backend"))
        .filter_map(|e| match serde_json::from_str::<Value>(&e.line) {
            Ok(Value::Object(o)) => Some((e.ts_ns, o)),
            _ => None,
        })
        .collect()
}

/// A JSON field as Loki's `| json` turns it into a label value.
fn field(o: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    match o.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Keys whose count of matching events in a 5-minute window `(t-5m, t]` exceeds `threshold` at
/// some step `t` of the dataset's range: what an alert `sum by (key) (count_over_time(…[5m])) >
/// threshold` evaluated at those times must report.
fn keys_over_threshold(events: &[(i128, String)], threshold: usize) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let window = 300 * 1_000_000_000i128;
    let mut t = START_S;
    while t <= END_S {
        let t_ns = i128::from(t) * 1_000_000_000;
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (ts, key) in events {
            if *ts > t_ns - window && *ts <= t_ns {
                *counts.entry(key.as_str()).or_default() += 1;
            }
        }
        out.extend(
            counts
                .into_iter()
                .filter(|(_, n)| *n > threshold)
                .map(|(k, _)| k.to_string()),
        );
        t += STEP_S;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The forensics dashboard.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forensics_dashboard_queries_return_data_on_the_dataset() -> anyhow::Result<()> {
    let dash = read_json(&docker_dir().join("grafana/dashboards/forensics.json"))?;
    ensure!(
        dash["title"] == "forensics",
        "dashboard title {}",
        dash["title"]
    );
    let vars = variable_values(&dash)?;
    let queries = panel_queries(&dash);
    ensure!(
        queries.len() >= 15,
        "only {} panel queries found",
        queries.len()
    );
    ensure!(
        queries.iter().any(|q| q.row == "Database audit trail"),
        "the collapsed row's nested panels were not found"
    );

    let mut server = TestServer::start(conformance_config()?).await?;
    server.push_dataset().await?;
    let mut failures = Vec::new();
    let mut answers = BTreeMap::new();
    for q in &queries {
        let expr = interpolate(&q.expr, &vars)?;
        match loki_query(&server, &expr, q.instant, END_S).await {
            Ok(data) if has_data(&data) => {
                answers.insert(q.panel.clone(), data);
            }
            Ok(_) => failures.push(format!("{}: no data for {expr}", q.panel)),
            Err(e) => failures.push(format!("{}: {expr}: {e:#}", q.panel)),
        }
    }

    // The label-values variables are queries too (Grafana fills their drop-downs with them).
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] != "query" {
            continue;
        }
        let label = v["query"]["label"]
            .as_str()
            .context("variable without label")?;
        let stream = v["query"]["stream"].as_str().unwrap_or_default();
        let mut params = vec![
            ("start".to_string(), ns(START_S)),
            ("end".to_string(), ns(END_S)),
        ];
        if !stream.is_empty() {
            params.push(("query".into(), interpolate(stream, &vars)?));
        }
        let (status, body) = server
            .get(&format!("/loki/api/v1/label/{label}/values"), &params, &[])
            .await?;
        let values: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status != 200 || values["data"].as_array().is_none_or(|a| a.is_empty()) {
            failures.push(format!("variable {label}: {status} {body}"));
        }
    }
    server.stop().await?;
    ensure!(
        failures.is_empty(),
        "dashboard queries failed or found nothing:\n{}",
        failures.join("\n")
    );

    // "Deletes by user" counts exactly the dataset's DELETE actions per account over the range.
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    for (ts, o) in backend_events(&dataset()?) {
        if field(&o, "action").as_deref() == Some("DELETE")
            && ts > i128::from(START_S) * 1_000_000_000
            && ts <= i128::from(END_S) * 1_000_000_000
        {
            *expected
                .entry(field(&o, "user_id").unwrap_or_default())
                .or_default() += 1.0;
        }
    }
    let deletes = answers
        .get("Deletes by user")
        .context("no \"Deletes by user\" panel")?;
    let mut got: BTreeMap<String, f64> = BTreeMap::new();
    for s in deletes["result"].as_array().into_iter().flatten() {
        let user = s["metric"]["user_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let value: f64 = s["value"][1].as_str().unwrap_or_default().parse()?;
        got.insert(user, value);
    }
    ensure!(
        got == expected,
        "Deletes by user: got {got:?}, the dataset has {expected:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The tovlog dashboard (PromQL over tovlog's /metrics).

/// Metric names a PromQL expression reads: identifiers outside strings, label matchers and
/// range brackets that are not function names, keywords, or label lists of `by`/`without`/
/// `on`/`ignoring`/`group_left`/`group_right`. Hand-written: no PromQL parser crate is a
/// dependency, and the shapes in the dashboards are simple (the same expressions also go through
/// `promtool` in the test).
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "atan2",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_to = |i: usize, close: char| -> usize {
        let mut j = i + 1;
        while j < chars.len() && chars[j] != close {
            if chars[j] == '"' || chars[j] == '\'' {
                let q = chars[j];
                j += 1;
                while j < chars.len() && chars[j] != q {
                    j += if chars[j] == '\\' { 2 } else { 1 };
                }
            }
            j += 1;
        }
        j + 1
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' => i = skip_to(i, '}'),
            '[' => i = skip_to(i, ']'),
            '"' | '\'' | '`' => i = skip_to(i, c),
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let next: String = chars[j..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .collect();
                // `sum by (le) (…)`: an aggregation with its grouping first is a call too.
                let call =
                    (j < chars.len() && chars[j] == '(') || next == "by" || next == "without";
                if LABEL_LISTS.contains(&word.as_str()) && call {
                    i = skip_to(j, ')');
                } else if !call && !KEYWORDS.contains(&word.as_str()) {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// `label_values(selector, label)` of a Prometheus variable query → the selector.
fn variable_selector(query: &str) -> Option<&str> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    Some(inner.rsplit_once(',').map_or(inner, |(sel, _)| sel).trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tovlog_dashboard_metrics_are_exported() -> anyhow::Result<()> {
    let dash = read_json(&docker_dir().join("grafana/dashboards/tovlog.json"))?;
    ensure!(
        dash["title"] == "tovlog",
        "dashboard title {}",
        dash["title"]
    );
    let vars = variable_values(&dash)?;
    let queries = panel_queries(&dash);
    ensure!(queries.len() >= 15, "only {} queries", queries.len());

    let mut exprs: Vec<(String, String)> = queries
        .iter()
        .map(|q| (q.row.clone(), q.expr.clone()))
        .collect();
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["query"]["query"].as_str() {
            let sel = variable_selector(q)
                .with_context(|| format!("variable query {q} is not label_values(…)"))?;
            exprs.push((String::new(), sel.to_string()));
        }
    }
    // Metric names per dashboard row; the ruler's row is checked once the ruler serves its API.
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    for (row, expr) in &exprs {
        let names = promql_metric_names(expr);
        ensure!(!names.is_empty(), "no metric name found in {expr}");
        for n in names {
            wanted.insert(n, row.clone());
        }
    }

    // Prometheus' own parser on every expression, as Grafana would send it.
    let mut rules = String::from("groups:\n  - name: tovlog-dashboard\n    rules:\n");
    for (i, (_, expr)) in exprs.iter().enumerate() {
        let expr = interpolate(expr, &vars)?;
        rules.push_str(&format!(
            "      - record: dashboard:query:{i}\n        expr: {}\n",
            serde_json::to_string(&expr)?
        ));
    }
    let dir = tempfile::tempdir()?;
    let rules_path = dir.path().join("dashboard-queries.yaml");
    std::fs::write(&rules_path, rules)?;
    run_tool("promtool", &["check", "rules"], &rules_path)?;

    // A real server that ingested, flushed and answered queries.
    let mut config = conformance_config()?;
    // Nothing listens on the discard port: notifications fail and are counted.
    config.ruler.alertmanager_url = "http://127.0.0.1:9".into();
    let mut server = TestServer::start(config).await?;
    server.push_dataset().await?;
    let (status, body) = server.post("/flush", Vec::new(), &[]).await?;
    ensure!(status < 300, "flush: {status} {body}");
    for (expr, instant) in [
        (r#"sum by (job) (count_over_time({job=~".+"}[5m]))"#, false),
        (r#"{job="nginx"} |= "POST""#, false),
        (r#"{job="nginx"} |= "#, true),
    ] {
        // The last one is a syntax error: it counts as a failed query.
        let _ = loki_query(&server, expr, instant, END_S).await;
    }

    // With a ruler, give it a group to evaluate every second so its metrics have values.
    let (status, _) = server.get("/loki/api/v1/rules", &[], &[]).await?;
    let ruler = status != 404;
    if ruler {
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let push = serde_json::json!({"streams": [{"stream": {"job": "dashboard-probe"},
            "values": [[now_ns.to_string(), "probe"]]}]});
        let (status, body) = server
            .post(
                "/loki/api/v1/push",
                serde_json::to_vec(&push)?,
                &[("content-type", "application/json")],
            )
            .await?;
        ensure!(status == 204, "push: {status} {body}");
        let group = "name: dashboard-probe\ninterval: 1s\nrules:\n  - alert: DashboardProbe\n    expr: sum(count_over_time({job=\"dashboard-probe\"}[10m])) > 0\n  - record: dashboard:probe:count10m\n    expr: sum(count_over_time({job=\"dashboard-probe\"}[10m]))\n";
        let (status, body) = server
            .post(
                "/loki/api/v1/rules/dashboard-probe",
                group.as_bytes().to_vec(),
                &[("content-type", "application/yaml")],
            )
            .await?;
        ensure!(status == 202, "rule group POST: {status} {body}");
    }

    let mut missing = Vec::new();
    for _ in 0..40 {
        let (status, text) = server.get("/metrics", &[], &[]).await?;
        ensure!(status == 200, "/metrics: {status}");
        let exported = exported_metric_names(&text);
        missing = wanted
            .iter()
            .filter(|(name, row)| (ruler || row.as_str() != "Ruler") && !exported.contains(*name))
            .map(|(name, row)| format!("{name} (row {row:?})"))
            .collect();
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    server.stop().await?;
    ensure!(
        missing.is_empty(),
        "the tovlog dashboard uses metrics /metrics does not export: {missing:?}"
    );
    if !ruler {
        let unchecked: Vec<&String> = wanted
            .iter()
            .filter(|(_, row)| row.as_str() == "Ruler")
            .map(|(n, _)| n)
            .collect();
        note(&format!(
            "no ruler API on this build: Ruler row metrics not checked: {unchecked:?}"
        ));
    }
    Ok(())
}

/// Tell the person running the tests what was not checked.
#[allow(clippy::print_stderr)]
fn note(msg: &str) {
    eprintln!("{msg}");
}

// ---------------------------------------------------------------------------------------------
// The playbook's rule files.

/// A Prometheus rule file (the format of Loki's local ruler storage), strictly.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
    rules: Vec<Rule>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    #[serde(default)]
    alert: Option<String>,
    #[serde(default)]
    record: Option<String>,
    expr: String,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// `(tenant, file, parsed)` for every `docker/rules/<tenant>/<namespace>.yaml`.
fn rule_files() -> anyhow::Result<Vec<(String, PathBuf, RuleFile)>> {
    let mut out = Vec::new();
    for tenant in std::fs::read_dir(docker_dir().join("rules"))? {
        let tenant = tenant?.path();
        if !tenant.is_dir() {
            continue;
        }
        let name = tenant
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        for f in std::fs::read_dir(&tenant)? {
            let f = f?.path();
            if f.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let text = std::fs::read_to_string(&f)?;
                let parsed: RuleFile = serde_yaml::from_str(&text)
                    .with_context(|| format!("{} is not a rule-group file", f.display()))?;
                out.push((name.clone(), f, parsed));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    !s.contains(':') && is_metric_name(s)
}

#[test]
fn playbook_rule_files_are_prometheus_rule_groups() -> anyhow::Result<()> {
    let files = rule_files()?;
    ensure!(
        !files.is_empty(),
        "no rule files under docker/rules/<tenant>/"
    );
    // The tenant directory is the tenant the compose stack's tovlog serves.
    let config = Config::from_file(&docker_dir().join("tovlog.yaml"))?;
    let tenant = if config.auth_enabled {
        "tovplay"
    } else {
        "fake"
    };
    let (mut alerts, mut records) = (BTreeSet::new(), 0);
    for (dir, path, file) in &files {
        let at = path.display();
        ensure!(
            dir == tenant,
            "{at}: tenant directory {dir}, the stack serves {tenant}"
        );
        ensure!(!file.groups.is_empty(), "{at}: no groups");
        let mut names = BTreeSet::new();
        for g in &file.groups {
            ensure!(!g.name.is_empty(), "{at}: a group without a name");
            ensure!(names.insert(&g.name), "{at}: group {} twice", g.name);
            ensure!(!g.rules.is_empty(), "{at}: group {} has no rules", g.name);
            if let Some(i) = &g.interval {
                ensure!(
                    tovlog::config::duration::parse(i).is_some_and(|d| !d.is_zero()),
                    "{at}: group {}: bad interval {i}",
                    g.name
                );
            }
            ensure!(g.limit.is_none_or(|l| l < 10_000), "{at}: limit");
            for r in &g.rules {
                ensure!(!r.expr.trim().is_empty(), "{at}: empty expr");
                for d in [&r.for_, &r.keep_firing_for].into_iter().flatten() {
                    ensure!(
                        tovlog::config::duration::parse(d).is_some(),
                        "{at}: bad duration {d}"
                    );
                }
                ensure!(
                    r.labels.keys().all(|k| is_label_name(k)),
                    "{at}: bad label name in {:?}",
                    r.labels
                );
                match (&r.alert, &r.record) {
                    (Some(a), None) => {
                        ensure!(!a.is_empty(), "{at}: empty alert name");
                        ensure!(
                            r.labels.contains_key("severity"),
                            "{at}: alert {a} has no severity label"
                        );
                        for key in ["summary", "description"] {
                            let text = r.annotations.get(key).map(String::as_str);
                            ensure!(
                                text.is_some_and(
                                    |t| t.matches("{{").count() == t.matches("}}").count()
                                ),
                                "{at}: alert {a}: annotation {key} missing or unbalanced"
                            );
                        }
                        alerts.insert(a.clone());
                    }
                    (None, Some(name)) => {
                        ensure!(is_metric_name(name), "{at}: bad record name {name}");
                        ensure!(
                            r.for_.is_none() && r.annotations.is_empty(),
                            "{at}: recording rule {name} with for/annotations"
                        );
                        records += 1;
                    }
                    _ => bail!("{at}: a rule must have exactly one of alert and record"),
                }
            }
        }
    }
    for a in [
        "BruteForceLogin",
        "MassDeleteByOneAccount",
        "HighHttp5xxRate",
        "SlowApiP95",
    ] {
        ensure!(alerts.contains(a), "the playbook alert {a} is missing");
    }
    ensure!(records >= 1, "no recording rule");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playbook_rules_run_and_fire_on_the_dataset() -> anyhow::Result<()> {
    let files = rule_files()?;
    let rules: Vec<&Rule> = files
        .iter()
        .flat_map(|(_, _, f)| f.groups.iter().flat_map(|g| &g.rules))
        .collect();
    let mut server = TestServer::start(conformance_config()?).await?;
    server.push_dataset().await?;

    // Every rule evaluates as the ruler evaluates it: an instant query, here at 01:11 (inside
    // the planted mass delete).
    let mut failures = Vec::new();
    for r in &rules {
        if let Err(e) = loki_query(&server, &r.expr, true, START_S + 4260).await {
            failures.push(format!("{:?}{:?}: {e:#}", r.alert, r.record));
        }
    }

    // What the mass-DELETE and brute-force alerts must find, from the data itself.
    let events = backend_events(&dataset()?);
    let deletes: Vec<(i128, String)> = events
        .iter()
        .filter(|(_, o)| field(o, "action").as_deref() == Some("DELETE"))
        .map(|(ts, o)| (*ts, field(o, "user_id").unwrap_or_default()))
        .collect();
    let failed_logins: Vec<(i128, String)> = events
        .iter()
        .filter(|(_, o)| {
            field(o, "action").as_deref() == Some("LOGIN")
                && field(o, "status").as_deref() == Some("401")
        })
        .map(|(ts, o)| (*ts, field(o, "ip").unwrap_or_default()))
        .collect();
    let expected = [
        (
            "MassDeleteByOneAccount",
            "user_id",
            keys_over_threshold(&deletes, 10),
        ),
        (
            "BruteForceLogin",
            "ip",
            keys_over_threshold(&failed_logins, 20),
        ),
    ];
    for (alert, key, want) in expected {
        ensure!(
            !want.is_empty(),
            "the dataset has no {alert} incident to find"
        );
        let rule = rules
            .iter()
            .find(|r| r.alert.as_deref() == Some(alert))
            .with_context(|| format!("no rule {alert}"))?;
        // Scan the dataset's range with the alert's condition, as evaluations every step would.
        let data = match loki_query(&server, &rule.expr, false, END_S).await {
            Ok(d) => d,
            Err(e) => {
                failures.push(format!("{alert} over the range: {e:#}"));
                continue;
            }
        };
        let got = label_values(&data, key);
        if got != want {
            failures.push(format!(
                "{alert}: fires for {key} {got:?}, the data says {want:?}"
            ));
            continue;
        }
        // The first evaluation time where it holds, and the alert's instant query there.
        let first = data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["values"][0][0].as_f64())
            .fold(f64::INFINITY, f64::min);
        ensure!(first.is_finite(), "{alert}: no sample in {data}");
        let at = loki_query(&server, &rule.expr, true, first as i64).await?;
        let firing = label_values(&at, key);
        if firing.is_empty() || !firing.is_subset(&want) {
            failures.push(format!("{alert} at {first}: {firing:?}"));
        }
    }
    server.stop().await?;
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Configuration files of the stack.

/// Bind mounts (`./src:/dst[:mode]`) of one compose service, host side resolved against docker/.
fn bind_mounts(service: &serde_yaml::Value) -> Vec<(PathBuf, String)> {
    service["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .filter(|v| v.starts_with("./") || v.starts_with("../"))
        .filter_map(|v| {
            let mut parts = v.split(':');
            let src = parts.next()?;
            let dst = parts.next()?;
            Some((docker_dir().join(src), dst.to_string()))
        })
        .collect()
}

/// The container path a host file or directory under docker/ is mounted at in `service`.
fn mounted_at(service: &serde_yaml::Value, host: &str) -> Option<String> {
    let want = docker_dir().join(host);
    bind_mounts(service)
        .into_iter()
        .find(|(src, _)| *src == want)
        .map(|(_, dst)| dst)
}

#[test]
fn docker_stack_files_are_consistent() -> anyhow::Result<()> {
    let docker = docker_dir();
    let compose = read_yaml(&docker.join("docker-compose.yml"))?;
    let services = compose["services"]
        .as_mapping()
        .context("compose file without services")?;
    for name in [
        "tovlog",
        "promtail",
        "alertmanager",
        "prometheus",
        "grafana",
        "jaeger",
    ] {
        ensure!(
            services.contains_key(name),
            "compose service {name} missing"
        );
    }
    let volumes = compose["volumes"].as_mapping().cloned().unwrap_or_default();
    for (name, svc) in services {
        let name = name.as_str().unwrap_or_default();
        for (src, _) in bind_mounts(svc) {
            ensure!(
                src.exists(),
                "{name} mounts {} which does not exist",
                src.display()
            );
        }
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let v = v.as_str().unwrap_or_default();
            let src = v.split(':').next().unwrap_or_default();
            if !src.starts_with('.') && !src.starts_with('/') {
                ensure!(
                    volumes.contains_key(src),
                    "{name} uses volume {src}, not declared"
                );
            }
        }
        if let Some(build) = svc.get("build") {
            let context = docker.join(build["context"].as_str().unwrap_or("."));
            let dockerfile = context.join(build["dockerfile"].as_str().unwrap_or("Dockerfile"));
            ensure!(
                dockerfile.exists(),
                "{name}: {} missing",
                dockerfile.display()
            );
        }
    }
    let tovlog_svc = &compose["services"]["tovlog"];
    let prometheus_svc = &compose["services"]["prometheus"];
    let grafana_svc = &compose["services"]["grafana"];

    // tovlog's configuration files: load, validate, and agree with the compose mounts.
    let mut configs = 0;
    for entry in std::fs::read_dir(&docker)? {
        let path = entry?.path();
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !(file.starts_with("tovlog") && (file.ends_with(".yaml") || file.ends_with(".yml"))) {
            continue;
        }
        configs += 1;
        let config = Config::from_file(&path)?;
        config
            .validate()
            .with_context(|| format!("{} does not validate", path.display()))?;
        let ruler = &config.ruler;
        let mounted = mounted_at(tovlog_svc, "./rules").context("docker/rules not mounted")?;
        ensure!(
            ruler.storage.store_type == "local"
                && ruler.storage.local.directory == Path::new(&mounted),
            "{file}: ruler.storage.local.directory {:?} is not where docker/rules is mounted ({mounted})",
            ruler.storage.local.directory
        );
        let tenant = if config.auth_enabled {
            "tovplay"
        } else {
            "fake"
        };
        ensure!(
            docker.join("rules").join(tenant).is_dir(),
            "{file}: no rules for tenant {tenant}"
        );
        ensure!(
            ruler.alertmanager_urls() == ["http://alertmanager:9093"],
            "{file}: alertmanager_url {}",
            ruler.alertmanager_url
        );
        ensure!(
            ruler.external_url.contains(":3000"),
            "{file}: external_url is not Grafana's"
        );
        let rw: Vec<&str> = ruler
            .remote_write
            .clients
            .values()
            .map(|c| c.url.as_str())
            .collect();
        ensure!(
            ruler.remote_write.enabled && rw == ["http://prometheus:9090/api/v1/write"],
            "{file}: remote_write {rw:?}"
        );
        ensure!(
            mounted_at(tovlog_svc, &format!("./{file}")).as_deref()
                == Some("/etc/tovlog/tovlog.yaml"),
            "{file} is not mounted where the Dockerfile's entrypoint reads it"
        );
    }
    ensure!(configs >= 1, "no tovlog configuration in docker/");

    // Prometheus: receives remote write, scrapes tovlog.
    let command: Vec<&str> = prometheus_svc["command"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str())
        .collect();
    ensure!(
        command.contains(&"--web.enable-remote-write-receiver"),
        "prometheus without the remote-write receiver: {command:?}"
    );
    let prom = read_yaml(&docker.join("prometheus.yml"))?;
    let scrapes_tovlog = prom["scrape_configs"]
        .as_sequence()
        .into_iter()
        .flatten()
        .any(|s| {
            s["job_name"] == "tovlog"
                && s["static_configs"][0]["targets"][0].as_str() == Some("tovlog:3100")
        });
    ensure!(
        scrapes_tovlog,
        "prometheus.yml does not scrape tovlog:3100 as job tovlog"
    );

    // Grafana: every data source a dashboard or a link refers to is provisioned.
    let ds = read_yaml(&docker.join("grafana/datasources.yaml"))?;
    let mut uids = BTreeMap::new();
    for d in ds["datasources"].as_sequence().into_iter().flatten() {
        uids.insert(
            d["uid"].as_str().unwrap_or_default().to_string(),
            d["type"].as_str().unwrap_or_default().to_string(),
        );
    }
    for (uid, kind) in [
        ("tovlog", "loki"),
        ("prometheus", "prometheus"),
        ("alertmanager", "alertmanager"),
        ("jaeger", "jaeger"),
    ] {
        ensure!(
            uids.get(uid).map(String::as_str) == Some(kind),
            "data source {uid} ({kind}) missing"
        );
    }
    let loki = ds["datasources"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|d| d["uid"] == "tovlog")
        .context("no tovlog data source")?;
    let derived: Vec<&serde_yaml::Value> = loki["jsonData"]["derivedFields"]
        .as_sequence()
        .into_iter()
        .flatten()
        .collect();
    for f in ["trace_id", "correlation_id"] {
        ensure!(
            derived.iter().any(|d| d["name"].as_str() == Some(f)),
            "no derived field {f}"
        );
    }
    for d in &derived {
        if let Some(uid) = d["datasourceUid"].as_str() {
            ensure!(
                uids.contains_key(uid),
                "derived field links to unknown data source {uid}"
            );
        }
        if d["matcherType"].as_str() != Some("label") {
            let re = d["matcherRegex"].as_str().unwrap_or_default();
            regex::Regex::new(re).with_context(|| format!("derived field regex {re}"))?;
        }
    }
    // The correlation_id regex finds the id in a real backend line.
    let line = dataset()?
        .into_iter()
        .find(|e| e.line.contains("\"correlation_id\""))
        .context("no line with a correlation_id")?
        .line;
    let corr = derived
        .iter()
        .find(|d| d["name"].as_str() == Some("correlation_id"))
        .and_then(|d| d["matcherRegex"].as_str())
        .unwrap_or_default();
    let id = regex::Regex::new(corr)?
        .captures(&line)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str().to_string());
    ensure!(
        id.as_ref().is_some_and(|id| id.len() == 36),
        "correlation_id regex on {line}: {id:?}"
    );

    let provider = read_yaml(&docker.join("grafana/dashboards.yaml"))?;
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        mounted_at(grafana_svc, "./grafana/dashboards").as_deref() == Some(path),
        "dashboard provider reads {path}, not where grafana/dashboards is mounted"
    );
    for f in ["forensics.json", "tovlog.json"] {
        let dash = read_json(&docker.join("grafana/dashboards").join(f))?;
        let mut refs = BTreeSet::new();
        collect_datasource_uids(&dash, &mut refs);
        for uid in refs {
            ensure!(
                uid == "-- Grafana --" || uids.contains_key(&uid),
                "{f} uses data source {uid}, not provisioned"
            );
        }
    }
    Ok(())
}

fn collect_datasource_uids(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            if let Some(uid) = o.get("datasource").and_then(|d| d["uid"].as_str()) {
                out.insert(uid.to_string());
            }
            o.values().for_each(|v| collect_datasource_uids(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_datasource_uids(v, out)),
        _ => {}
    }
}

/// Run a checker from Prometheus' Debian packages on a file; its output is in the error.
fn run_tool(tool: &str, args: &[&str], file: &Path) -> anyhow::Result<()> {
    let out = Command::new(tool)
        .args(args)
        .arg(file)
        .output()
        .with_context(|| {
            format!("cannot run {tool} (Debian packages prometheus, prometheus-alertmanager)")
        })?;
    ensure!(
        out.status.success(),
        "{tool} {args:?} {}: {}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn docker_prometheus_and_alertmanager_configs_pass_their_checkers() -> anyhow::Result<()> {
    let docker = docker_dir();
    run_tool(
        "promtool",
        &["check", "config"],
        &docker.join("prometheus.yml"),
    )?;
    run_tool(
        "amtool",
        &["check-config"],
        &docker.join("alertmanager.yml"),
    )?;
    // The configuration the entrypoint renders with an operator's settings checks too.
    let dir = tempfile::tempdir()?;
    let script = std::fs::read_to_string(docker.join("alertmanager/entrypoint.sh"))?;
    let rendered = dir.path().join("alertmanager.yml");
    let script = script
        .replace(
            "/etc/alertmanager/alertmanager.yml",
            &docker.join("alertmanager.yml").display().to_string(),
        )
        .replace(
            "/alertmanager/alertmanager.rendered.yml",
            &rendered.display().to_string(),
        );
    let script = script
        .split("\nexec ")
        .next()
        .context("entrypoint does not exec alertmanager")?;
    let webhook = "https://discord.com/api/webhooks/123456/tok&en|x";
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("DISCORD_WEBHOOK_URL", webhook)
        .env("SMTP_SMARTHOST", "mail.example.net:25")
        .env("ALERT_EMAIL_TO", "ops@example.net")
        .output()?;
    ensure!(
        out.status.success(),
        "entrypoint: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&rendered)?;
    ensure!(
        text.matches(webhook).count() == 2
            && text.contains("smtp_smarthost: mail.example.net:25")
            && text.contains("to: ops@example.net")
            && !text.contains("CHANGE_ME"),
        "rendered configuration:\n{text}"
    );
    run_tool("amtool", &["check-config"], &rendered)?;
    Ok(())
}
