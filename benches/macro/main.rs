//! The end-to-end benchmark over the standard workload (`shared/bench/gen.py`):
//!
//! ```text
//! cargo bench --bench macro -- [--lines 1000000] [--dataset DIR] [--skip-queries] [--tail] [--redact]
//! ```
//!
//! `--redact` runs the server with every built-in redaction rule on (`limits_config.redaction`).
//!
//! 1. generates the dataset with `gen.py` (or reuses `--dataset`),
//! 2. starts the release `tovlog` binary as a child process (WAL fsync on) on a temp data dir,
//! 3. pushes every body through the HTTP API with 2 concurrent clients: lines/s and raw MB/s,
//! 4. flushes (`POST /flush`) and measures bytes on disk per line, waits for the background
//!    compactor to re-encode every window, stops it with SIGTERM and measures again,
//! 5. restarts it and runs Q1–Q9 (one cold run, then the median of 5 warm runs), checking each
//!    answer against `meta.json`,
//! 6. with `--tail`, pushes the dataset twice more into fresh servers, without and with 20 live
//!    tails open (`tail.rs`): ingest slowdown and push → frame latency,
//! 7. prints a table and one JSON line with every figure, plus the peak RSS of the server.
//!
//! Figures are printed, never asserted: speed is measured here, correctness in `tests/`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../common/mod.rs"]
mod common;

mod drilldown;
mod tail;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

mod patterns;

struct Args {
    lines: u64,
    dataset: Option<PathBuf>,
    skip_queries: bool,
    keep: Option<PathBuf>,
    redact: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        lines: 1_000_000,
        dataset: None,
        skip_queries: false,
        keep: None,
        redact: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--lines" => a.lines = it.next().context("--lines N")?.parse()?,
            "--dataset" => a.dataset = Some(it.next().context("--dataset DIR")?.into()),
            "--data-dir" => a.keep = Some(it.next().context("--data-dir DIR")?.into()),
            "--skip-queries" => a.skip_queries = true,
            "--redact" => a.redact = true,
            "--bench" => {}
            "--tail" => {}
            other if other.starts_with("--") => bail!("unknown flag {other}"),
            _ => {}
        }
    }
    Ok(a)
}

fn dataset(args: &Args) -> Result<PathBuf> {
    common::dataset(args.lines, args.dataset.as_deref())
}

use common::{dir_bytes, peak_rss_mib, push_all, start_tovlog as start, stop};

struct Query {
    id: &'static str,
    path: &'static str,
    params: Vec<(String, String)>,
}

fn queries(meta: &Value) -> Vec<Query> {
    let t0 = meta["t0_ns"].as_i64().unwrap_or(0);
    let t1 = meta["t_end_ns"].as_i64().unwrap_or(0);
    let cid = meta["planted_cid"].as_str().unwrap_or("");
    let day = |q: &str, extra: &[(&str, &str)]| {
        let mut p = vec![
            ("query".to_string(), q.to_string()),
            ("start".into(), t0.to_string()),
            ("end".into(), t1.to_string()),
        ];
        p.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        p
    };
    let last_hour = vec![
        (
            "query".to_string(),
            r#"{job="nginx"} |~ "\" 5\\d\\d ""#.to_string(),
        ),
        ("start".into(), (t1 - 3_600_000_000_000).to_string()),
        ("end".into(), t1.to_string()),
        ("limit".into(), "1000".into()),
    ];
    vec![
        Query {
            id: "Q1",
            path: "/loki/api/v1/query_range",
            params: day(
                r#"{job="tovplay-backend"} |= "needle-7f3a9c""#,
                &[("limit", "1000")],
            ),
        },
        Query {
            id: "Q2",
            path: "/loki/api/v1/query_range",
            params: day(
                &format!(r#"{{job="tovplay-backend"}} | json | correlation_id="{cid}""#),
                &[("limit", "1000")],
            ),
        },
        Query {
            id: "Q3",
            path: "/loki/api/v1/query_range",
            params: day(r#"{env="prod"} |= "mallory""#, &[("limit", "100")]),
        },
        Query {
            id: "Q4",
            path: "/loki/api/v1/query_range",
            params: day(
                r#"sum by (status) (count_over_time({job="nginx"} | pattern `<_> - - [<_>] "<_> <_> <_>" <status> <_>` [5m]))"#,
                &[("step", "300")],
            ),
        },
        Query {
            id: "Q5",
            path: "/loki/api/v1/query_range",
            params: day(
                r#"sum by (user_id) (count_over_time({job="tovplay-backend"} | json | action="DELETE" [5m]))"#,
                &[("step", "300")],
            ),
        },
        Query {
            id: "Q6",
            path: "/loki/api/v1/query_range",
            params: day(
                r#"quantile_over_time(0.99, {job="tovplay-backend"} | json | unwrap duration_ms | __error__="" [5m]) by (host)"#,
                &[("step", "300")],
            ),
        },
        Query {
            id: "Q7",
            path: "/loki/api/v1/query_range",
            params: day(
                r#"sum(count_over_time({env=~".+"}[5m]))"#,
                &[("step", "300")],
            ),
        },
        Query {
            id: "Q8",
            path: "/loki/api/v1/query_range",
            params: last_hour,
        },
        Query {
            id: "Q9a",
            path: "/loki/api/v1/labels",
            params: day("", &[]).into_iter().skip(1).collect(),
        },
        Query {
            id: "Q9b",
            path: "/loki/api/v1/label/job/values",
            params: day("", &[]).into_iter().skip(1).collect(),
        },
        Query {
            id: "Q9c",
            path: "/loki/api/v1/series",
            params: {
                let mut p: Vec<(String, String)> = day("", &[]).into_iter().skip(1).collect();
                p.push(("match[]".into(), r#"{job="nginx"}"#.into()));
                p
            },
        },
    ]
}

/// One cold run of a GET, then the median of 5 warm runs (s), with the last answer
/// (`{"error": …}` when one failed).
async fn time_query(
    client: &reqwest::Client,
    url: &str,
    path: &str,
    params: &[(String, String)],
) -> Result<(f64, f64, Value)> {
    let mut times = Vec::new();
    let mut last = Value::Null;
    for _ in 0..6 {
        let t = Instant::now();
        let r = client
            .get(format!("{url}{path}"))
            .query(params)
            .send()
            .await?;
        let status = r.status();
        let body = r.text().await?;
        times.push(t.elapsed().as_secs_f64());
        if !status.is_success() {
            last = json!({"error": format!("{status}: {}", body.chars().take(200).collect::<String>())});
            break;
        }
        last = serde_json::from_str(&body).unwrap_or(Value::Null);
    }
    let cold = times[0];
    let mut warm: Vec<f64> = times[1..].to_vec();
    warm.sort_by(|a, b| a.total_cmp(b));
    let med = warm.get(warm.len() / 2).copied().unwrap_or(f64::NAN);
    Ok((cold, med, last))
}

fn entries(v: &Value) -> usize {
    v["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|s| s["values"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0)
}

fn matrix_sum(v: &Value) -> f64 {
    v["data"]["result"]
        .as_array()
        .map(|r| {
            r.iter()
                .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
                .filter_map(|p| p[1].as_str().and_then(|x| x.parse::<f64>().ok()))
                .sum()
        })
        .unwrap_or(0.0)
}

/// Check an answer against the ground truth in meta.json.
fn check(id: &str, v: &Value, truth: &Value) -> String {
    let t = |k: &str| truth[k].as_u64().unwrap_or(u64::MAX);
    let ok = match id {
        "Q1" => entries(v) as u64 == t("Q1_needle_lines"),
        "Q2" => entries(v) as u64 == t("Q2_cid_lines"),
        "Q3" => entries(v) == 100.min(t("Q3_prod_mallory_lines") as usize),
        // Windows of 5m at a 5m step see each line once, except the first instant's.
        "Q4" | "Q7" => {
            let want: f64 = if id == "Q7" {
                t("Q7_total") as f64
            } else {
                truth["Q4_nginx_by_status"]
                    .as_object()
                    .map(|m| m.values().filter_map(Value::as_f64).sum())
                    .unwrap_or(0.0)
            };
            let got = matrix_sum(v);
            (got - want).abs() / want.max(1.0) < 0.01
        }
        "Q5" => {
            v["data"]["result"].as_array().map(|r| r.len() as u64)
                == Some(t("Q5_backend_delete_by_user_series"))
        }
        "Q6" => v["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "Q8" => entries(v) as u64 == t("Q8_nginx_5xx_last_hour").min(1000),
        "Q9a" => {
            v["data"].as_array().map(|a| a.len())
                == truth["Q9_label_names"].as_array().map(|a| a.len())
        }
        "Q9b" => v["data"] == truth["Q9_job_values"],
        "Q9c" => v["data"].as_array().map(|a| a.len() as u64) == Some(t("Q9_nginx_series")),
        _ => false,
    };
    if ok {
        "ok".into()
    } else {
        "WRONG".into()
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let data = dataset(&args)?;
    let meta: Value = serde_json::from_slice(&std::fs::read(data.join("meta.json"))?)?;
    let lines = meta["lines"].as_u64().unwrap_or(0);
    let raw_bytes = meta["raw_line_bytes"].as_u64().unwrap_or(0);
    let files = common::push_files(&data)?;

    let tmp = tempfile::tempdir()?;
    let data_dir = args.keep.clone().unwrap_or_else(|| tmp.path().join("data"));
    let config = tmp.path().join("bench.yaml");
    // TOVLOG_BENCH_CONFIG (YAML, e.g. a `storage:` section) is appended to try settings.
    let mut extra = std::env::var("TOVLOG_BENCH_CONFIG").unwrap_or_default();
    if !extra.contains("storage:") {
        // Compact as soon as a window is written, two windows at a time, and delete
        // replaced files at once (no queries run during ingest).
        extra.push_str("\nstorage:\n  compaction:\n    min_age: 1m\n    check_interval: 1s\n    delete_delay: 0s\n    concurrency: 2\n");
    }
    let redaction = if args.redact {
        "  redaction:\n    enabled: true\n"
    } else {
        ""
    };
    std::fs::write(
        &config,
        format!("auth_enabled: false\nlimits_config:\n  ingestion_rate_mb: 100000\n  ingestion_burst_size_mb: 100000\n  max_query_series: 100000\n  max_entries_limit_per_query: 100000\n  discover_log_levels: false\n{redaction}{extra}\n"),
    )?;

    let tail_files = files.clone();
    let server = start(&config, &data_dir).await?;
    let t = Instant::now();
    push_all(&server.url, files).await?;
    let ingest_s = t.elapsed().as_secs_f64();
    let rss_ingest = peak_rss_mib(server.child.id()).unwrap_or(f64::NAN);
    let client = reqwest::Client::new();
    let r = client.post(format!("{}/flush", server.url)).send().await?;
    if !r.status().is_success() {
        bail!("flush failed: {}", r.status());
    }
    let disk_flushed = dir_bytes(&data_dir);
    let t = Instant::now();
    common::wait_for_compaction(&client, &server.url, Duration::from_secs(3600)).await?;
    let compaction_s = t.elapsed().as_secs_f64();
    let rss_compaction = peak_rss_mib(server.child.id()).unwrap_or(f64::NAN);
    stop(server)?;
    let disk = dir_bytes(&data_dir);
    let lines_per_s = lines as f64 / ingest_s;
    let mb_per_s = raw_bytes as f64 / ingest_s / 1e6;
    let bytes_per_line = disk as f64 / lines.max(1) as f64;
    let flushed_per_line = disk_flushed as f64 / lines.max(1) as f64;
    println!("ingest: {lines} lines in {ingest_s:.2}s = {lines_per_s:.0} lines/s, {mb_per_s:.1} MB/s raw");
    println!("disk:   {disk_flushed} bytes after flush = {flushed_per_line:.1} bytes/line");
    println!("disk:   {disk} bytes after compaction ({compaction_s:.1}s more) = {bytes_per_line:.1} bytes/line");
    println!("rss:    peak {rss_ingest:.0} MiB during ingest, {rss_compaction:.0} MiB through compaction");

    let mut results = serde_json::Map::new();
    let mut rss_query = f64::NAN;
    if !args.skip_queries {
        let server = start(&config, &data_dir).await?;
        println!(
            "{:<5} {:>10} {:>12}  answer",
            "query", "cold s", "warm med s"
        );
        for q in queries(&meta) {
            let (cold, med, last) = time_query(&client, &server.url, q.path, &q.params).await?;
            let verdict = if last.get("error").is_some() {
                last["error"].to_string()
            } else {
                check(q.id, &last, &meta["truth"])
            };
            println!("{:<5} {cold:>10.4} {med:>12.4}  {verdict}", q.id);
            results.insert(
                q.id.to_string(),
                json!({"cold_s": cold, "warm_median_s": med, "answer": verdict}),
            );
        }
        patterns::run(&client, &server.url, &meta, &mut results).await?;
        drilldown::run(&client, &server.url, &meta, &mut results).await?;
        rss_query = peak_rss_mib(server.child.id()).unwrap_or(f64::NAN);
        stop(server)?;
    }
    let tail = if std::env::args().any(|a| a == "--tail") {
        tail::run(&config, tmp.path(), &tail_files, lines).await?
    } else {
        Value::Null
    };
    println!(
        "{}",
        json!({"lines": lines, "tail": tail, "ingest_s": ingest_s, "lines_per_s": lines_per_s, "raw_mb_per_s": mb_per_s,
               "disk_bytes": disk, "bytes_per_line": bytes_per_line, "peak_rss_ingest_mib": rss_ingest,
               "disk_bytes_flushed": disk_flushed, "bytes_per_line_flushed": flushed_per_line,
               "compaction_s": compaction_s, "peak_rss_compaction_mib": rss_compaction,
               "peak_rss_query_mib": rss_query, "queries": results})
    );
    Ok(())
}
