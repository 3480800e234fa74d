//! The forensics playbook in seconds: ingest speed and the warm latency of every playbook query
//! over the incident data set (docs/forensics.md).
//!
//! ```text
//! cargo bench --workspace --bench playbook -- [--lines 10000000] [--dataset DIR] [--runs 5]
//!     [--store DIR]
//! ```
//!
//! `--store DIR` keeps the server's data directory in `DIR` instead of a temporary one: the
//! first run loads it, later runs with the same `DIR` skip steps 3–4 and time the queries over
//! what is there (for comparing builds on one loaded store).
//!
//! 1. generates the data set with `scripts/playbook/gen.py` (24 hours ending
//!    2026-11-21T00:00:00Z, seed 25; kept under `target/bench-data/playbook-<lines>`), or reuses
//!    `--dataset DIR`,
//! 2. starts the release `tovlog` binary as a child process on a temporary data directory (old
//!    samples accepted, ingestion limits raised, compaction as soon as a window is written),
//! 3. pushes every body with 2 concurrent clients: lines/s and raw MB/s,
//! 4. flushes (`POST /flush`) and waits until the background compactor has re-encoded every
//!    window and deleted what it replaced (`/metrics`),
//! 5. runs every query of `scripts/playbook/queries.json` (resolved against `truth.json` by
//!    `check.py --emit`) once cold, then `--runs` times, and prints each one's warm median,
//! 6. runs `check.py` once against the server, so the figures are those of right answers,
//! 7. prints a table and one JSON line with every figure.
//!
//! Figures are printed, never asserted: correctness is `tests/it/playbook.rs`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "common/mod.rs"]
mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// The span's end: fixed, so a data set generated once serves every run.
const END: &str = "2026-11-21T00:00:00Z";

struct Args {
    lines: u64,
    dataset: Option<PathBuf>,
    runs: usize,
    store: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        lines: 10_000_000,
        dataset: None,
        runs: 5,
        store: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--lines" => a.lines = it.next().context("--lines N")?.parse()?,
            "--dataset" => a.dataset = Some(it.next().context("--dataset DIR")?.into()),
            "--runs" => a.runs = it.next().context("--runs N")?.parse()?,
            "--store" => a.store = Some(it.next().context("--store DIR")?.into()),
            "--bench" => {}
            other if other.starts_with("--") => bail!("unknown flag {other}"),
            _ => {}
        }
    }
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    Ok(a)
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The generated data set (generated once per size).
fn dataset(args: &Args) -> Result<PathBuf> {
    if let Some(d) = &args.dataset {
        return Ok(d.clone());
    }
    let dir = root().join(format!("target/bench-data/playbook-{}", args.lines));
    if let Ok(truth) = std::fs::read(dir.join("truth.json")) {
        let truth: Value = serde_json::from_slice(&truth)?;
        if truth["lines"].as_u64() == Some(args.lines) {
            return Ok(dir);
        }
    }
    eprintln!("generating {} lines into {}", args.lines, dir.display());
    let t = Instant::now();
    let status = Command::new("python3")
        .arg(root().join("scripts/playbook/gen.py"))
        .args(["--lines", &args.lines.to_string(), "--end", END, "--out"])
        .arg(&dir)
        .status()
        .context("running gen.py")?;
    if !status.success() {
        bail!("gen.py failed");
    }
    eprintln!("generated in {:.0}s", t.elapsed().as_secs_f64());
    Ok(dir)
}

/// The server child process, killed on drop (a failed run leaves nothing behind).
use common::start_tovlog as start;

/// The playbook's requests, resolved against truth.json by check.py.
fn requests(data: &Path) -> Result<Vec<Value>> {
    let out = Command::new("python3")
        .arg(root().join("scripts/playbook/check.py"))
        .arg("--data")
        .arg(data)
        .arg("--emit")
        .output()
        .context("running check.py --emit")?;
    if !out.status.success() {
        bail!("check.py --emit: {}", String::from_utf8_lossy(&out.stderr));
    }
    match serde_json::from_slice(&out.stdout)? {
        Value::Array(v) => Ok(v),
        other => bail!("check.py --emit printed {other}"),
    }
}

/// One cold run, then `runs` warm ones: (cold s, warm median s, HTTP status of the last).
async fn time_query(
    client: &reqwest::Client,
    url: &str,
    req: &Value,
    runs: usize,
) -> Result<(f64, f64, u16)> {
    let path = req["path"].as_str().context("request without path")?;
    let params: Vec<(String, String)> = req["params"]
        .as_object()
        .context("request without params")?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let mut times = Vec::with_capacity(runs + 1);
    let mut status = 0;
    for _ in 0..=runs {
        let t = Instant::now();
        let r = client
            .get(format!("{url}{path}"))
            .query(&params)
            .send()
            .await?;
        status = r.status().as_u16();
        r.bytes().await?;
        times.push(t.elapsed().as_secs_f64());
    }
    let cold = times[0];
    let mut warm = times[1..].to_vec();
    warm.sort_by(|a, b| a.total_cmp(b));
    Ok((cold, warm[warm.len() / 2], status))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let data = dataset(&args)?;
    let truth: Value = serde_json::from_slice(&std::fs::read(data.join("truth.json"))?)?;
    let lines = truth["lines"].as_u64().unwrap_or(0);
    let files = common::push_files(&data)?;

    let tmp = tempfile::tempdir()?;
    let store = match &args.store {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => tmp.path().to_path_buf(),
    };
    let loaded = store.join("loaded").exists();
    let config = store.join("bench.yaml");
    std::fs::write(
        &config,
        "auth_enabled: false\nlog:\n  level: warn\n\
         limits_config:\n  reject_old_samples: false\n  ingestion_rate_mb: 100000\n  \
         ingestion_burst_size_mb: 100000\n  max_query_series: 100000\n  \
         max_entries_limit_per_query: 100000\n  max_query_lookback: 0s\n\
         storage:\n  compaction:\n    min_age: 1m\n    check_interval: 1s\n    delete_delay: 0s\n    concurrency: 2\n",
    )?;
    let server = start(&config, &store.join("data")).await?;
    let client = reqwest::Client::new();

    let (mut ingest_s, mut lines_per_s, mut mb_per_s, mut settle_s) = (0.0, 0.0, 0.0, 0.0);
    if loaded {
        println!("reusing the loaded store in {}", store.display());
    } else {
        let t = Instant::now();
        let bytes = common::push_all(&server.url, files).await?;
        ingest_s = t.elapsed().as_secs_f64();
        lines_per_s = lines as f64 / ingest_s;
        mb_per_s = bytes as f64 / ingest_s / 1e6;
        println!(
            "ingest: {lines} lines in {ingest_s:.2}s = {lines_per_s:.0} lines/s ({mb_per_s:.1} MB/s of push JSON)"
        );
        let r = client.post(format!("{}/flush", server.url)).send().await?;
        if !r.status().is_success() {
            bail!("flush failed: {}", r.status());
        }
        let t = Instant::now();
        common::wait_for_compaction(&client, &server.url, Duration::from_secs(3600)).await?;
        settle_s = t.elapsed().as_secs_f64();
        println!("flush + compaction settled in {settle_s:.1}s");
        if args.store.is_some() {
            std::fs::write(store.join("loaded"), format!("{lines}\n"))?;
        }
    }

    println!(
        "{:<22} {:>8} {:>12}  title",
        "query", "cold s", "warm med s"
    );
    let mut results = serde_json::Map::new();
    for req in requests(&data)? {
        let id = req["id"].as_str().unwrap_or("?").to_string();
        let (cold, med, status) = time_query(&client, &server.url, &req, args.runs).await?;
        println!(
            "{id:<22} {cold:>8.3} {med:>12.3}  {} (HTTP {status})",
            req["title"].as_str().unwrap_or("")
        );
        results.insert(
            id,
            json!({"cold_s": cold, "warm_median_s": med, "status": status}),
        );
    }
    let check = Command::new("python3")
        .arg(root().join("scripts/playbook/check.py"))
        .args(["--url", &server.url, "--data"])
        .arg(&data)
        .output()
        .context("running check.py")?;
    let report = String::from_utf8_lossy(&check.stdout);
    println!(
        "answers: {}",
        report.lines().last().unwrap_or("check.py printed nothing")
    );
    if !check.status.success() {
        println!("{report}");
    }
    drop(server);
    println!(
        "{}",
        json!({"lines": lines, "ingest_s": ingest_s, "lines_per_s": lines_per_s,
               "push_mb_per_s": mb_per_s, "settle_s": settle_s, "answers_ok": check.status.success(),
               "queries": results})
    );
    Ok(())
}
