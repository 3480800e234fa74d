//! Logs Drilldown's metadata endpoints over real HTTP: Loki's recorded answers on the
//! conformance dataset (`tests/conformance/drilldown-goldens.json`, compared with the rules of
//! `shared/conformance/check.py`), a pipeline-restricted sample, type detection of every type,
//! detected labels, the limits endpoint and bad requests.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use serde_json::{json, Value};

use crate::{
    compare::Case,
    server::{conformance_config, TestServer},
};

/// The conformance dataset's range: 2025-11-20 00:00–02:00 UTC.
const DATASET_START: i64 = 1_763_596_800_000_000_000;
const DATASET_END: i64 = 1_763_604_000_000_000_000;

fn params(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn dataset_range(query: &str) -> Vec<(String, String)> {
    params(&[
        ("query", query),
        ("start", &DATASET_START.to_string()),
        ("end", &DATASET_END.to_string()),
    ])
}

async fn get_json(
    s: &TestServer,
    path: &str,
    params: &[(String, String)],
) -> anyhow::Result<Value> {
    let (status, body) = s.get(path, params, &[]).await?;
    anyhow::ensure!(status == 200, "GET {path} {params:?} → {status}: {body}");
    Ok(serde_json::from_str(&body)?)
}

/// Loki counts distinct values with HyperLogLog: within 10% (at least 1) of its figure.
fn close_count(expected: u64, got: &Value) -> bool {
    let Some(g) = got.as_u64() else {
        return false;
    };
    let tolerance = (0.10 * expected as f64).round_ties_even().max(1.0) as u64;
    g.abs_diff(expected) <= tolerance
}

/// check.py's `compare_detected`: the same names; type, parsers (as a set) and jsonPath
/// exactly; cardinalities close.
fn compare_detected(expected: &Value, got: &Value) -> Result<(), String> {
    let key = if expected.get("fields").is_some() {
        "fields"
    } else {
        "detectedLabels"
    };
    let items = |v: &Value| -> BTreeMap<String, Value> {
        v[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| Some((f["label"].as_str()?.to_owned(), f.clone())))
            .collect()
    };
    let (exp, got) = (items(expected), items(got));
    let names = |m: &BTreeMap<String, Value>| m.keys().cloned().collect::<Vec<_>>();
    if names(&exp) != names(&got) {
        return Err(format!(
            "{key}: expected {:?}, returned {:?}",
            names(&exp),
            names(&got)
        ));
    }
    for (name, e) in &exp {
        let g = &got[name];
        for k in ["type", "jsonPath"] {
            if e.get(k) != g.get(k) {
                return Err(format!(
                    "{name}.{k}: {:?} expected, {:?} returned",
                    e.get(k),
                    g.get(k)
                ));
            }
        }
        let parsers = |v: &Value| -> BTreeSet<String> {
            v["parsers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        };
        if parsers(e) != parsers(g) {
            return Err(format!(
                "{name}.parsers: {} expected, {} returned",
                e["parsers"], g["parsers"]
            ));
        }
        let want = e["cardinality"].as_u64().unwrap_or(0);
        if !close_count(want, &g["cardinality"]) {
            return Err(format!(
                "{name}.cardinality: about {want} expected, {} returned",
                g["cardinality"]
            ));
        }
    }
    Ok(())
}

/// One recorded case, compared as check.py compares it.
fn compare_case(case: &Case, status: u16, body: &str) -> Result<(), String> {
    if status != case.expect.status {
        return Err(format!(
            "HTTP {} expected, {status} returned: {body}",
            case.expect.status
        ));
    }
    let Some(expected) = case.expect.json.as_ref().filter(|_| status == 200) else {
        return Ok(());
    };
    let got: Value = serde_json::from_str(body).map_err(|e| format!("not JSON ({e}): {body}"))?;
    if case.path.contains("/detected_field/") {
        let set = |v: &Value| -> BTreeSet<String> {
            v["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        };
        if set(expected) != set(&got) {
            return Err(format!(
                "values {:?} expected, {:?} returned",
                set(expected),
                set(&got)
            ));
        }
        return Ok(());
    }
    compare_detected(expected, &got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drilldown_goldens_match() -> anyhow::Result<()> {
    let mut server = TestServer::start(conformance_config()?).await?;
    server.push_dataset().await?;
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/drilldown-goldens.json");
    let cases: Vec<Case> = serde_json::from_slice(&std::fs::read(path)?)?;
    anyhow::ensure!(
        cases.len() >= 6,
        "expected the 6 recorded cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let p: Vec<(String, String)> = case
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let h: Vec<(String, String)> = case
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (status, body) = server.get(&case.path, &p, &h).await?;
        if let Err(why) = compare_case(case, status, &body) {
            failures.push(format!("{}: {why}", case.id));
        }
    }
    server.stop().await?;
    anyhow::ensure!(failures.is_empty(), "failed:\n{}", failures.join("\n"));
    Ok(())
}

/// One entry of the conformance dataset.
struct DatasetEntry {
    ts: i64,
    stream: BTreeMap<String, String>,
    line: String,
}

fn dataset() -> anyhow::Result<Vec<DatasetEntry>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/dataset");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let body: Value = serde_json::from_slice(&std::fs::read(f)?)?;
        for s in body["streams"].as_array().into_iter().flatten() {
            let stream: BTreeMap<String, String> = serde_json::from_value(s["stream"].clone())?;
            for v in s["values"].as_array().into_iter().flatten() {
                out.push(DatasetEntry {
                    ts: v[0].as_str().unwrap_or("0").parse()?,
                    stream: stream.clone(),
                    line: v[1].as_str().unwrap_or("").to_owned(),
                });
            }
        }
    }
    Ok(out)
}

fn field<'a>(fields: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    fields["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["label"] == name)
        .ok_or_else(|| anyhow::anyhow!("no field {name} in {fields}"))
}

/// A query with a pipeline samples only the entries it keeps: the newest 100 DELETE lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_restricts_the_sample() -> anyhow::Result<()> {
    let mut server = TestServer::start(conformance_config()?).await?;
    server.push_dataset().await?;
    // Expectations from the pushed data: the newest 100 backend entries whose action is DELETE.
    let mut deletes: Vec<(i64, Value)> = dataset()?
        .into_iter()
        .filter(|e| e.stream.get("job").map(String::as_str) == Some("tovplay-backend"))
        .filter_map(|e| {
            let v: Value = serde_json::from_str(&e.line).ok()?;
            (v["action"] == "DELETE").then_some((e.ts, v))
        })
        .collect();
    deletes.sort_by_key(|d| std::cmp::Reverse(d.0));
    anyhow::ensure!(
        deletes.len() > 100,
        "the dataset has {} deletes",
        deletes.len()
    );
    let sample = &deletes[..100];
    let distinct = |key: &str| -> HashSet<String> {
        sample
            .iter()
            .map(|(_, v)| match &v[key] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    };
    let query = r#"{job="tovplay-backend"} | json | action="DELETE""#;
    let fields = get_json(
        &server,
        "/loki/api/v1/detected_fields",
        &dataset_range(query),
    )
    .await?;
    let action = field(&fields, "action")?;
    assert_eq!(action["cardinality"], 1, "{action}");
    assert_eq!(action["parsers"], json!(["json"]));
    assert_eq!(action["jsonPath"], json!(["action"]));
    for key in ["user_id", "resource_id", "correlation_id", "path"] {
        let f = field(&fields, key)?;
        assert_eq!(
            f["cardinality"],
            distinct(key).len(),
            "{key}: {f} (sample of {})",
            sample.len()
        );
    }
    assert_eq!(fields["limit"], 1000);
    let mut p = dataset_range(query);
    p.push(("line_limit".into(), "10".into()));
    let few = get_json(&server, "/loki/api/v1/detected_fields", &p).await?;
    // Every backend line has its own correlation id: the cardinality is the sample size.
    assert_eq!(field(&few, "correlation_id")?["cardinality"], 10);
    let values = get_json(
        &server,
        "/loki/api/v1/detected_field/user_id/values",
        &dataset_range(query),
    )
    .await?;
    let got: HashSet<String> = values["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert_eq!(got, distinct("user_id"));
    server.stop().await?;
    Ok(())
}

const T: i64 = 1_700_000_000_000_000_000;

async fn push(server: &TestServer, body: Value) -> anyhow::Result<()> {
    let (status, text) = server
        .post(
            "/loki/api/v1/push",
            serde_json::to_vec(&body)?,
            &[("content-type", "application/json")],
        )
        .await?;
    anyhow::ensure!(status == 204, "push → {status}: {text}");
    Ok(())
}

fn around_t(query: &str) -> Vec<(String, String)> {
    params(&[
        ("query", query),
        ("start", &(T - 60_000_000_000).to_string()),
        ("end", &(T + 60_000_000_000).to_string()),
    ])
}

/// Every type Loki detects, from JSON (nested too), logfmt and structured metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_type_is_detected() -> anyhow::Result<()> {
    let mut server = TestServer::start(conformance_config()?).await?;
    // (key, value as it appears in the line, expected type)
    let table = [
        ("count", "42", "int"),
        ("ratio", "0.25", "float"),
        ("ok", "true", "boolean"),
        ("took", "\"1.5s\"", "duration"),
        ("size", "\"20KiB\"", "bytes"),
        ("who", "\"ann\"", "string"),
    ];
    let object: String = table
        .iter()
        .map(|(k, v, _)| format!("\"{k}\":{v}"))
        .collect::<Vec<_>>()
        .join(",");
    let json_line = format!("{{{object},\"req\":{{\"latency_ms\":12}}}}");
    let logfmt_line: String = table
        .iter()
        .map(|(k, v, _)| format!("l_{k}={}", v.trim_matches('"')))
        .collect::<Vec<_>>()
        .join(" ");
    push(
        &server,
        json!({"streams": [
            {"stream": {"job": "types", "fmt": "json"},
             "values": [[T.to_string(), json_line, {"span": "7"}]]},
            {"stream": {"job": "types", "fmt": "logfmt"},
             "values": [[(T + 1).to_string(), logfmt_line]]},
        ]}),
    )
    .await?;
    let fields = get_json(
        &server,
        "/loki/api/v1/detected_fields",
        &around_t(r#"{job="types"}"#),
    )
    .await?;
    for (key, _, ty) in table {
        let f = field(&fields, key)?;
        assert_eq!(f["type"], ty, "{f}");
        assert_eq!(f["parsers"], json!(["json"]), "{f}");
        assert_eq!(f["jsonPath"], json!([key]), "{f}");
        assert_eq!(f["cardinality"], 1, "{f}");
        let l = field(&fields, &format!("l_{key}"))?;
        assert_eq!(l["type"], ty, "{l}");
        assert_eq!(l["parsers"], json!(["logfmt"]), "{l}");
        assert!(l.get("jsonPath").is_none(), "{l}");
    }
    let nested = field(&fields, "req_latency_ms")?;
    assert_eq!(nested["jsonPath"], json!(["req", "latency_ms"]));
    assert_eq!(nested["type"], "int");
    let span = field(&fields, "span")?;
    assert_eq!(span["parsers"], Value::Null);
    assert_eq!(span["type"], "int");
    assert!(span.get("jsonPath").is_none());
    assert_eq!(
        fields["fields"].as_array().map(Vec::len),
        Some(2 * table.len() + 2)
    );
    // The field limit keeps that many fields.
    let mut p = around_t(r#"{job="types"}"#);
    p.push(("limit".into(), "3".into()));
    let few = get_json(&server, "/loki/api/v1/detected_fields", &p).await?;
    assert_eq!(few["fields"].as_array().map(Vec::len), Some(3));
    assert_eq!(few["limit"], 3);
    // Sizes come back in a form a query can use.
    let values = get_json(
        &server,
        "/loki/api/v1/detected_field/size/values",
        &around_t(r#"{job="types"}"#),
    )
    .await?;
    assert_eq!(values["values"], json!(["20kB"]));
    server.stop().await?;
    Ok(())
}

/// Labels whose values are all ids are left out, static labels stay, cardinalities count
/// the values of the range; the limits endpoint shows the configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detected_labels_and_limits() -> anyhow::Result<()> {
    let mut config = conformance_config()?;
    config.limits_config.max_entries_limit_per_query = 1234;
    let mut server = TestServer::start(config).await?;
    let streams: Vec<Value> = [
        ("api", "8080", "1", "f4ec491b-2330-41f6-a65c-3b2b28638da1"),
        ("db", "5432", "2", "14a9091e-fa1b-4d34-a53c-be930be2bf7c"),
        ("db", "5433", "3", "2701a0cc-9b36-438e-a5ca-68b4ddef8cb1"),
    ]
    .iter()
    .map(|(app, port, pod, uid)| {
        json!({"stream": {"app": app, "port": port, "pod": pod, "uid": uid, "flag": "1"},
               "values": [[T.to_string(), "x"]]})
    })
    .collect();
    push(&server, json!({ "streams": streams })).await?;
    let got = get_json(
        &server,
        "/loki/api/v1/detected_labels",
        &params(&[
            ("start", "2023-11-14T22:00:00Z"),
            ("end", "2023-11-14T23:00:00Z"),
        ]),
    )
    .await?;
    let labels: BTreeMap<String, u64> = got["detectedLabels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| Some((l["label"].as_str()?.to_owned(), l["cardinality"].as_u64()?)))
        .collect();
    let want: BTreeMap<String, u64> = [("app", 2), ("flag", 1), ("pod", 3)]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect();
    assert_eq!(labels, want, "{got}");
    let only_db = get_json(
        &server,
        "/loki/api/v1/detected_labels",
        &params(&[
            ("query", r#"{app="db"}"#),
            ("start", &(T - 1).to_string()),
            ("end", &(T + 1).to_string()),
        ]),
    )
    .await?;
    assert!(
        only_db["detectedLabels"].as_array().is_some_and(|a| a
            .iter()
            .any(|l| l["label"] == "app" && l["cardinality"] == 1)),
        "{only_db}"
    );
    // Outside the range there is nothing.
    let empty = get_json(
        &server,
        "/loki/api/v1/detected_labels",
        &params(&[("start", "1000"), ("end", "2000")]),
    )
    .await?;
    assert_eq!(empty["detectedLabels"], json!([]));

    let limits = get_json(&server, "/loki/api/v1/drilldown-limits", &[]).await?;
    assert_eq!(limits["limits"]["max_entries_limit_per_query"], 1234);
    assert_eq!(limits["limits"]["volume_enabled"], true);
    assert_eq!(limits["limits"]["discover_log_levels"], false);
    assert_eq!(limits["limits"]["max_query_length"], "30d1h");
    assert_eq!(limits["pattern_ingester_enabled"], true);
    assert!(limits["version"].as_str().is_some_and(|v| !v.is_empty()));
    server.stop().await?;
    Ok(())
}

/// Bad parameters and queries are answered 400 with a message, as Loki does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_rejected() -> anyhow::Result<()> {
    let mut config = conformance_config()?;
    config.limits_config.max_entries_limit_per_query = 500;
    let mut server = TestServer::start(config).await?;
    let ok = r#"{job="x"}"#;
    let cases: Vec<(&str, Vec<(String, String)>)> = vec![
        ("/loki/api/v1/detected_fields", params(&[])),
        ("/loki/api/v1/detected_fields", around_t(r#"{job="x""#)),
        (
            "/loki/api/v1/detected_fields",
            around_t(r#"sum(rate({job="x"}[5m]))"#),
        ),
        ("/loki/api/v1/detected_fields", {
            let mut p = around_t(ok);
            p.push(("line_limit".into(), "0".into()));
            p
        }),
        ("/loki/api/v1/detected_fields", {
            let mut p = around_t(ok);
            p.push(("line_limit".into(), "many".into()));
            p
        }),
        ("/loki/api/v1/detected_fields", {
            let mut p = around_t(ok);
            p.push(("line_limit".into(), "501".into()));
            p
        }),
        ("/loki/api/v1/detected_fields", {
            let mut p = around_t(ok);
            p.push(("limit".into(), "-1".into()));
            p
        }),
        ("/loki/api/v1/detected_fields", {
            let mut p = around_t(ok);
            p.push(("step".into(), "0".into()));
            p
        }),
        ("/loki/api/v1/detected_fields", {
            let mut p = around_t(ok);
            p.push(("step".into(), "1ms".into()));
            p
        }),
        (
            "/loki/api/v1/detected_fields",
            params(&[("query", ok), ("start", "2000"), ("end", "1000")]),
        ),
        (
            "/loki/api/v1/detected_fields",
            params(&[("query", ok), ("start", "yesterday")]),
        ),
        // Past `Duration`'s range: once a panic of the handler, now a 400.
        (
            "/loki/api/v1/detected_fields",
            params(&[("query", ok), ("since", "99999999999999999999999")]),
        ),
        (
            "/loki/api/v1/detected_field/level/values",
            around_t(r#"{job=~".*"}"#),
        ),
        (
            "/loki/api/v1/detected_labels",
            params(&[("query", r#"{job="x"} | json"#)]),
        ),
        (
            "/loki/api/v1/detected_labels",
            params(&[("query", "{job=")]),
        ),
    ];
    for (path, p) in cases {
        let (status, body) = server.get(path, &p, &[]).await?;
        assert_eq!(status, 400, "{path} {p:?} → {status}: {body}");
        assert!(!body.trim().is_empty(), "{path} {p:?}: no message");
    }
    // A valid query over nothing is an empty answer, not an error.
    let empty = get_json(&server, "/loki/api/v1/detected_fields", &around_t(ok)).await?;
    assert_eq!(empty["fields"], json!([]));
    server.stop().await?;
    Ok(())
}
