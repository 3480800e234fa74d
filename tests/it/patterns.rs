//! `/loki/api/v1/patterns` over the conformance dataset: the patterns of the nginx and
//! backend streams are few, have placeholders where those lines vary, never match the same
//! line twice, count exactly the dataset lines their `|>` filter matches per step, and
//! the same filter run through `query_range` returns that count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use tovlog_logql::ast::{LineFilter, LineFilterOp, LineFilterValue};
use tovlog_logql::pipeline::LineFilterChain;

use crate::server::{conformance_config, TestServer};

const STEP_S: i64 = 300;

/// (ts ns, line) of every dataset entry whose stream has `job`.
fn dataset_lines(job: &str) -> anyhow::Result<Vec<(i64, String)>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/dataset");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let body: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        for stream in body["streams"].as_array().into_iter().flatten() {
            if stream["stream"]["job"].as_str() != Some(job) {
                continue;
            }
            for v in stream["values"].as_array().into_iter().flatten() {
                let ts: i64 = v[0].as_str().unwrap_or("").parse()?;
                out.push((ts, v[1].as_str().unwrap_or("").to_string()));
            }
        }
    }
    Ok(out)
}

/// Loki's bucket of a line: its 10 s sample, truncated to the step (unix seconds).
fn bucket(ts_ns: i64) -> i64 {
    let ms = ts_ns / 1_000_000;
    let sample = ms - ms % 10_000;
    (sample - sample % (STEP_S * 1000)) / 1000
}

fn pattern_filter(pattern: &str) -> anyhow::Result<LineFilterChain> {
    Ok(LineFilterChain::new(&[LineFilter {
        op: LineFilterOp::Pattern,
        values: vec![LineFilterValue::Str(pattern.to_string())],
    }])?)
}

/// A LogQL string literal of `s`.
fn logql_string(s: &str) -> String {
    if !s.contains('`') {
        return format!("`{s}`");
    }
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// One reported pattern: level → samples (bucket seconds → count).
type Reported = BTreeMap<String, BTreeMap<String, BTreeMap<i64, u64>>>;

fn parse_answer(body: &str) -> anyhow::Result<Reported> {
    let v: Value = serde_json::from_str(body)?;
    anyhow::ensure!(v["status"] == "success", "{body}");
    let mut out = Reported::new();
    for p in v["data"].as_array().into_iter().flatten() {
        let pattern = p["pattern"].as_str().unwrap_or_default().to_string();
        let level = p["level"].as_str().unwrap_or_default().to_string();
        let samples = out.entry(pattern).or_default().entry(level).or_default();
        for s in p["samples"].as_array().into_iter().flatten() {
            let (t, n) = (s[0].as_i64().unwrap_or(-1), s[1].as_u64().unwrap_or(0));
            anyhow::ensure!(samples.insert(t, n).is_none(), "duplicate sample in {p}");
        }
    }
    Ok(out)
}

/// Every check of the module for one job, whose answer may hold `max_patterns` patterns.
async fn check_job(server: &TestServer, job: &str, max_patterns: usize) -> anyhow::Result<()> {
    let lines = dataset_lines(job)?;
    anyhow::ensure!(
        lines.len() > 1000,
        "{job}: dataset has {} lines",
        lines.len()
    );
    let start = lines.iter().map(|l| l.0).min().unwrap_or(0);
    let end = lines.iter().map(|l| l.0).max().unwrap_or(0) + 1;
    let selector = format!("{{job=\"{job}\"}}");
    let (status, body) = server
        .get(
            "/loki/api/v1/patterns",
            &[
                ("query".into(), selector.clone()),
                ("start".into(), start.to_string()),
                ("end".into(), end.to_string()),
                ("step".into(), format!("{}m", STEP_S / 60)),
            ],
            &[],
        )
        .await?;
    anyhow::ensure!(status == 200, "{job}: {status} {body}");
    let reported = parse_answer(&body)?;
    anyhow::ensure!(
        !reported.is_empty() && reported.len() <= max_patterns,
        "{job}: expected 1..={max_patterns} patterns, got {}: {:?}",
        reported.len(),
        reported.keys().collect::<Vec<_>>()
    );
    let filters: Vec<(String, LineFilterChain)> = reported
        .keys()
        .map(|p| Ok((p.clone(), pattern_filter(p)?)))
        .collect::<anyhow::Result<_>>()?;

    // Each line matches at most one pattern; per pattern and bucket, the dataset lines its
    // filter matches are what it reported (summed over levels).
    let mut expected: BTreeMap<&str, BTreeMap<i64, u64>> = BTreeMap::new();
    let mut uncovered = 0usize;
    for (ts, line) in &lines {
        let hits: Vec<&str> = filters
            .iter()
            .filter(|(_, f)| f.matches(line))
            .map(|(p, _)| p.as_str())
            .collect();
        anyhow::ensure!(hits.len() <= 1, "{job}: {line:?} matches {hits:?}");
        match hits.first() {
            Some(p) => {
                *expected
                    .entry(p)
                    .or_default()
                    .entry(bucket(*ts))
                    .or_default() += 1
            }
            None => uncovered += 1,
        }
    }
    anyhow::ensure!(
        uncovered * 100 <= lines.len(),
        "{job}: {uncovered} of {} lines match no pattern",
        lines.len()
    );
    for (pattern, levels) in &reported {
        let mut got: BTreeMap<i64, u64> = BTreeMap::new();
        for samples in levels.values() {
            for (t, n) in samples {
                *got.entry(*t).or_default() += n;
            }
        }
        let want = expected.remove(pattern.as_str()).unwrap_or_default();
        anyhow::ensure!(
            got == want,
            "{job}: samples of {pattern:?}: got {got:?}, want {want:?}"
        );
    }

    // Placeholders stand where the lines vary: no pattern is a line of the dataset, and
    // each covers many distinct lines.
    let distinct: BTreeSet<&str> = lines.iter().map(|l| l.1.as_str()).collect();
    for pattern in reported.keys() {
        anyhow::ensure!(
            pattern.contains("<_>"),
            "{job}: {pattern:?} has no placeholder"
        );
        anyhow::ensure!(
            !distinct.contains(pattern.as_str()),
            "{job}: {pattern:?} is a line"
        );
    }

    // The `|>` filter of each pattern, run as a log query, returns the lines it counted.
    for (pattern, levels) in &reported {
        let total: u64 = levels.values().flat_map(|s| s.values()).sum();
        let query = format!("{selector} |> {}", logql_string(pattern));
        let (status, body) = server
            .get(
                "/loki/api/v1/query_range",
                &[
                    ("query".into(), query.clone()),
                    ("start".into(), start.to_string()),
                    ("end".into(), end.to_string()),
                    ("limit".into(), "100000".into()),
                ],
                &[],
            )
            .await?;
        anyhow::ensure!(status == 200, "{query}: {status} {body}");
        let v: Value = serde_json::from_str(&body)?;
        let entries: u64 = v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["values"].as_array().map_or(0, |a| a.len() as u64))
            .sum();
        anyhow::ensure!(
            entries == total,
            "{query}: {entries} entries, pattern counted {total}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_are_the_templates_of_the_lines() -> anyhow::Result<()> {
    // Levels on, so that the backend's patterns are split by level too.
    let mut config = conformance_config()?;
    config.limits_config.discover_log_levels = true;
    let mut server = TestServer::start(config).await?;
    server.push_dataset().await?;
    let result = async {
        check_job(&server, "nginx", 12).await?;
        check_job(&server, "tovplay-backend", 15).await?;
        // From chunk files: read once, then from what the first request kept per file.
        let (status, body) = server.post("/flush", Vec::new(), &[]).await?;
        anyhow::ensure!(status < 300, "flush: {status} {body}");
        for _ in 0..2 {
            check_job(&server, "nginx", 12).await?;
            check_job(&server, "tovplay-backend", 15).await?;
        }
        // The backend's JSON lines carry levels: its patterns come in more than one.
        let (_, body) = server
            .get(
                "/loki/api/v1/patterns",
                &[
                    ("query".into(), r#"{job="tovplay-backend"}"#.into()),
                    ("start".into(), "1763596800000000000".into()),
                    ("end".into(), "1763604000000000000".into()),
                    ("step".into(), "1m".into()),
                ],
                &[],
            )
            .await?;
        let v: Value = serde_json::from_str(&body)?;
        let levels: BTreeSet<&str> = v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["level"].as_str())
            .collect();
        anyhow::ensure!(levels.len() > 1, "backend levels: {levels:?}");
        Ok(())
    }
    .await;
    server.stop().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pattern_requests_are_rejected_like_loki() -> anyhow::Result<()> {
    let mut server = TestServer::start(conformance_config()?).await?;
    let cases: [(&str, &str, &str); 4] = [
        (
            r#"{job="nginx"} |= "x""#,
            "1m",
            "only label matchers are supported",
        ),
        (r#"{job="nginx""#, "1m", "parse error"),
        (r#"{job="nginx"}"#, "abc", "invalid step parameter"),
        (r#"{job="nginx"}"#, "1ms", "exceeded maximum resolution"),
    ];
    let mut failures = Vec::new();
    for (query, step, want) in cases {
        let (status, body) = server
            .get(
                "/loki/api/v1/patterns",
                &[
                    ("query".into(), query.into()),
                    ("start".into(), "1763596800".into()),
                    ("end".into(), "1763604000".into()),
                    ("step".into(), step.into()),
                ],
                &[],
            )
            .await?;
        if status != 400 || !body.contains(want) {
            failures.push(format!("{query} step={step}: {status} {body}"));
        }
    }
    // An empty range of a known selector is a success with no pattern.
    let (status, body) = server
        .get(
            "/loki/api/v1/patterns",
            &[("query".into(), r#"{job="nginx"}"#.into())],
            &[],
        )
        .await?;
    if status != 200 || serde_json::from_str::<Value>(&body)?["data"] != Value::Array(vec![]) {
        failures.push(format!("empty store: {status} {body}"));
    }
    server.stop().await?;
    anyhow::ensure!(failures.is_empty(), "{failures:#?}");
    Ok(())
}
