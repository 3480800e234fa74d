//! The retention and delete benchmark over the standard workload (`shared/bench/gen.py`):
//!
//! ```text
//! cargo bench --workspace --bench erase -- [--lines 5000000] [--dataset DIR]
//! ```
//!
//! 1. pushes the day into a release `tovlog` (WAL fsync on), flushes, waits until the
//!    compactor has re-encoded every window, and times Q1–Q8 (one cold run, then the median
//!    of 5 warm runs, as the macro benchmark),
//! 2. `POST /loki/api/v1/delete` of `{env=~".+"} |= "mallory"` over the whole day, a delete
//!    that touches every file (cancel period 24 h, so it stays a pending tombstone): the
//!    time from the POST to the first query answer without the deleted lines,
//! 3. Q1–Q8 again with the tombstone pending: the slowdown of each against step 1,
//! 4. restarts the server with a 1 s cancel period: the compactor's time to rewrite every
//!    file and mark the request `processed`, its lines removed, the process's peak RSS, and
//!    bytes on disk before and after,
//! 5. restarts with retention on and `retention_period` ending at the middle of the day:
//!    the time until 12 of the 24 hours are gone from disk, the peak RSS, bytes on disk, and
//!    the count of the day's lines left (checked against the ground truth).
//!
//! Figures are printed, never asserted: speed is measured here, correctness in `tests/`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "common/mod.rs"]
mod common;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use common::{dir_bytes, peak_rss_mib, push_all, start_tovlog as start, stop};

struct Args {
    lines: u64,
    dataset: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        lines: 5_000_000,
        dataset: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--lines" => a.lines = it.next().context("--lines N")?.parse()?,
            "--dataset" => a.dataset = Some(it.next().context("--dataset DIR")?.into()),
            "--bench" => {}
            other if other.starts_with("--") => bail!("unknown flag {other}"),
            _ => {}
        }
    }
    Ok(a)
}

/// The generated dataset (kept under target/bench-data, shared with the other benchmarks).
fn dataset(args: &Args) -> Result<PathBuf> {
    common::dataset(args.lines, args.dataset.as_deref())
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Q1–Q8 of the standard query set (shared/bench/README.md).
fn queries(meta: &Value) -> Vec<(&'static str, Vec<(String, String)>)> {
    let t0 = meta["t0_ns"].as_i64().unwrap_or(0);
    let t1 = meta["t_end_ns"].as_i64().unwrap_or(0);
    let cid = meta["planted_cid"].as_str().unwrap_or("").to_string();
    let day = |q: &str, extra: &[(&str, &str)]| {
        let mut p = vec![
            ("query".to_string(), q.to_string()),
            ("start".into(), t0.to_string()),
            ("end".into(), t1.to_string()),
        ];
        p.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        p
    };
    vec![
        (
            "Q1",
            day(
                r#"{job="tovplay-backend"} |= "needle-7f3a9c""#,
                &[("limit", "1000")],
            ),
        ),
        (
            "Q2",
            day(
                &format!(r#"{{job="tovplay-backend"}} | json | correlation_id="{cid}""#),
                &[("limit", "1000")],
            ),
        ),
        (
            "Q3",
            day(r#"{env="prod"} |= "mallory""#, &[("limit", "100")]),
        ),
        (
            "Q4",
            day(
                r#"sum by (status) (count_over_time({job="nginx"} | pattern `<_> - - [<_>] "<_> <_> <_>" <status> <_>` [5m]))"#,
                &[("step", "300")],
            ),
        ),
        (
            "Q5",
            day(
                r#"sum by (user_id) (count_over_time({job="tovplay-backend"} | json | action="DELETE" [5m]))"#,
                &[("step", "300")],
            ),
        ),
        (
            "Q6",
            day(
                r#"quantile_over_time(0.99, {job="tovplay-backend"} | json | unwrap duration_ms | __error__="" [5m]) by (host)"#,
                &[("step", "300")],
            ),
        ),
        (
            "Q7",
            day(
                r#"sum(count_over_time({env=~".+"}[5m]))"#,
                &[("step", "300")],
            ),
        ),
        (
            "Q8",
            vec![
                (
                    "query".to_string(),
                    r#"{job="nginx"} |~ "\" 5\\d\\d ""#.to_string(),
                ),
                ("start".into(), (t1 - 3_600_000_000_000).to_string()),
                ("end".into(), t1.to_string()),
                ("limit".into(), "1000".into()),
            ],
        ),
    ]
}

/// One cold run, then the median of 5 warm runs (s).
async fn time_query(
    client: &reqwest::Client,
    url: &str,
    params: &[(String, String)],
) -> Result<(f64, f64)> {
    let mut times = Vec::new();
    for _ in 0..6 {
        let t = Instant::now();
        let r = client
            .get(format!("{url}/loki/api/v1/query_range"))
            .query(params)
            .send()
            .await?;
        let status = r.status();
        let _ = r.bytes().await?;
        if !status.is_success() {
            bail!("query failed: {status}");
        }
        times.push(t.elapsed().as_secs_f64());
    }
    let cold = times[0];
    let mut warm = times[1..].to_vec();
    warm.sort_by(|a, b| a.total_cmp(b));
    Ok((cold, warm[warm.len() / 2]))
}

async fn run_queries(
    client: &reqwest::Client,
    url: &str,
    meta: &Value,
) -> Result<Vec<(&'static str, f64, f64)>> {
    let mut out = Vec::new();
    for (id, params) in queries(meta) {
        let (cold, warm) = time_query(client, url, &params).await?;
        out.push((id, cold, warm));
    }
    Ok(out)
}

/// Lines of the day matching `query` (a log selector with filters), by an instant query.
async fn count_lines(
    client: &reqwest::Client,
    url: &str,
    query: &str,
    meta: &Value,
) -> Result<u64> {
    let t0 = meta["t0_ns"].as_i64().unwrap_or(0);
    let t1 = meta["t_end_ns"].as_i64().unwrap_or(0);
    let hours = (t1 - t0) / 3_600_000_000_000 + 1;
    let v: Value = client
        .get(format!("{url}/loki/api/v1/query"))
        .query(&[
            ("query", format!("sum(count_over_time({query} [{hours}h]))")),
            ("time", t1.to_string()),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(0.0) as u64)
}

/// The benchmark's config: `limits` lines go under `limits_config`, `extra` is top level.
fn write_config(path: &Path, limits: &str, extra: &str) -> Result<()> {
    std::fs::write(
        path,
        format!(
            "auth_enabled: false\nlimits_config:\n  ingestion_rate_mb: 100000\n  ingestion_burst_size_mb: 100000\n  max_query_series: 100000\n  max_entries_limit_per_query: 100000\n  discover_log_levels: false\n{limits}{extra}storage:\n  compaction:\n    min_age: 1m\n    check_interval: 1s\n    delete_delay: 0s\n    concurrency: 2\n"
        ),
    )?;
    Ok(())
}

/// Poll `/loki/api/v1/delete` until every request is `processed` (at most `limit`).
async fn wait_processed(client: &reqwest::Client, url: &str, limit: Duration) -> Result<Value> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let v: Value = client
            .get(format!("{url}/loki/api/v1/delete"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        if v.as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|r| r["status"] == "processed"))
        {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the delete was not processed within {}s", limit.as_secs())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let data = dataset(&args)?;
    let meta: Value = serde_json::from_slice(&std::fs::read(data.join("meta.json"))?)?;
    let lines = meta["lines"].as_u64().unwrap_or(0);
    let t0 = meta["t0_ns"].as_i64().unwrap_or(0);
    let t1 = meta["t_end_ns"].as_i64().unwrap_or(0);
    let files = common::push_files(&data)?;
    let tmp = tempfile::tempdir()?;
    let data_dir = tmp.path().join("data");
    let config = tmp.path().join("bench.yaml");
    let client = reqwest::Client::new();

    // 1. Load, compact, baseline.
    write_config(
        &config,
        "",
        // The delete API is served only with retention on, as in Loki (no period: nothing expires).
        "compactor:\n  retention_enabled: true\n  delete_request_cancel_period: 24h\n",
    )?;
    let server = start(&config, &data_dir).await?;
    push_all(&server.url, files).await?;
    client
        .post(format!("{}/flush", server.url))
        .send()
        .await?
        .error_for_status()?;
    common::wait_for_compaction(&client, &server.url, Duration::from_secs(3600)).await?;
    let disk_loaded = dir_bytes(&data_dir);
    run_queries(&client, &server.url, &meta).await?; // warm the caches once
    let baseline = run_queries(&client, &server.url, &meta).await?;

    // 2. A delete touching every file: time to its effect.
    let target = r#"{env=~".+"} |= "mallory""#;
    let before = count_lines(&client, &server.url, target, &meta).await?;
    let start_s = (t0 / 1_000_000_000).to_string();
    let end_s = (t1 / 1_000_000_000 + 1).to_string();
    let t = Instant::now();
    let r = client
        .post(format!("{}/loki/api/v1/delete", server.url))
        .query(&[("query", target), ("start", &start_s), ("end", &end_s)])
        .send()
        .await?;
    let post_s = t.elapsed().as_secs_f64();
    if !r.status().is_success() {
        bail!("delete POST → {}: {}", r.status(), r.text().await?);
    }
    let after = count_lines(&client, &server.url, target, &meta).await?;
    let effect_s = t.elapsed().as_secs_f64();

    // 3. Queries with the tombstone pending.
    let pending = run_queries(&client, &server.url, &meta).await?;
    stop(server)?;

    // 4. The compactor applies the delete.
    write_config(
        &config,
        "",
        "compactor:\n  retention_enabled: true\n  delete_request_cancel_period: 1s\n",
    )?;
    let t = Instant::now();
    let server = start(&config, &data_dir).await?;
    let processed = wait_processed(&client, &server.url, Duration::from_secs(3600)).await?;
    common::wait_for_compaction(&client, &server.url, Duration::from_secs(3600)).await?;
    let delete_s = t.elapsed().as_secs_f64();
    let delete_rss = peak_rss_mib(server.child.id()).unwrap_or(f64::NAN);
    let idle_rss = rss_mib(server.child.id()).unwrap_or(f64::NAN);
    let removed = processed[0]["lines_removed"].as_u64();
    let after_compaction = count_lines(&client, &server.url, target, &meta).await?;
    stop(server)?;
    let disk_deleted = dir_bytes(&data_dir);

    // 5. Retention: keep the second half of the day.
    let now_s = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let cut_s = (t0 + (t1 - t0) / 2) / 1_000_000_000;
    let period_s = now_s - cut_s;
    write_config(
        &config,
        &format!("  retention_period: {period_s}s\n"),
        "compactor:\n  retention_enabled: true\n  delete_request_cancel_period: 1s\n",
    )?;
    let t = Instant::now();
    let server = start(&config, &data_dir).await?;
    let visible_after_cut = count_lines(&client, &server.url, r#"{env=~".+"}"#, &meta).await?;
    let invisible_s = t.elapsed().as_secs_f64();
    // Compaction: wait until the manifest holds no file older than the cut-off, which
    // shows as the bytes on disk settling.
    let mut last = dir_bytes(&data_dir);
    let mut stable = 0;
    while stable < 10 && t.elapsed() < Duration::from_secs(3600) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = dir_bytes(&data_dir);
        if now == last {
            stable += 1;
        } else {
            stable = 0;
            last = now;
        }
    }
    let retention_s = t.elapsed().as_secs_f64() - 5.0;
    let retention_rss = peak_rss_mib(server.child.id()).unwrap_or(f64::NAN);
    let left = count_lines(&client, &server.url, r#"{env=~".+"}"#, &meta).await?;
    stop(server)?;
    let disk_retained = dir_bytes(&data_dir);

    println!("\n== tovlog erase benchmark: {lines} lines ==");
    println!(
        "delete {target} over the day: {before} lines before, {after} visible right after the POST"
    );
    println!(
        "  POST {:.3} s, POST → first answer without them {:.3} s",
        post_s, effect_s
    );
    println!(
        "\n| query | cold s | warm s | cold s (tombstone) | warm s (tombstone) | warm slowdown |"
    );
    println!("|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for ((id, c0, w0), (_, c1, w1)) in baseline.iter().zip(&pending) {
        let slow = (w1 / w0 - 1.0) * 100.0;
        println!("| {id} | {c0:.3} | {w0:.3} | {c1:.3} | {w1:.3} | {slow:+.1}% |");
        rows.push(
            json!({"id": id, "cold": c0, "warm": w0, "cold_tombstone": c1, "warm_tombstone": w1}),
        );
    }
    println!(
        "\ncompactor applying the delete: {delete_s:.1} s (restart included), lines removed {removed:?}, left visible {after_compaction}, peak RSS {delete_rss:.0} MiB (idle after {idle_rss:.0} MiB)"
    );
    println!(
        "retention of the second half: hidden at start-up ({:.3} s to the first answer), {visible_after_cut} lines visible, {left} left after compaction, compactor {retention_s:.1} s, peak RSS {retention_rss:.0} MiB",
        invisible_s
    );
    println!(
        "bytes on disk: loaded {:.1} MB, after the delete {:.1} MB, after retention {:.1} MB",
        disk_loaded as f64 / 1e6,
        disk_deleted as f64 / 1e6,
        disk_retained as f64 / 1e6
    );
    println!(
        "{}",
        json!({
            "lines": lines, "deleted_before": before, "visible_after_post": after,
            "post_s": post_s, "effect_s": effect_s, "queries": rows,
            "delete_compaction_s": delete_s, "lines_removed": removed, "delete_peak_rss_mib": delete_rss,
            "retention_visible": visible_after_cut, "retention_left": left, "retention_s": retention_s,
            "retention_peak_rss_mib": retention_rss,
            "disk_loaded": disk_loaded, "disk_deleted": disk_deleted, "disk_retained": disk_retained,
        })
    );
    Ok(())
}
