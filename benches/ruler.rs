//! The ruler's benchmark: evaluation cost of 1,000 alert rules and alert latency end to end.
//!
//! ```text
//! cargo bench --bench ruler -- [--lines 5000000] [--minutes 5] [--trials 20] [--only cost|latency]
//! ```
//!
//! **Cost** (`--only cost`):
//! 1. generates the standard workload with `shared/bench/gen.py` (or reuses `--dataset DIR`) and
//!    pushes it through the HTTP API with every timestamp shifted so the day ends `--minutes` + 18
//!    minutes from now: each evaluation's `[5m]` windows then hold the day's last minutes (about
//!    0.6 × the day's average rate),
//! 2. flushes, waits until the compaction of the pushed day is over (`/metrics`: no file left
//!    to compact or delete), measures its idle CPU for 30 s, then writes 1,000 alert rules in 100 groups at a
//!    1-minute interval (the playbook's four alerts with varied thresholds and hosts) to the
//!    ruler's local rule directory, with a real Alertmanager receiving what fires,
//! 3. after the first evaluation cycle, measures for `--minutes` minutes: CPU per cycle (minus the
//!    idle rate) and per rule, share of one core, p50/p99/max of the rules' `evaluationTime`
//!    (sampled from `/prometheus/api/v1/rules`), missed iterations and evaluation failures (from
//!    `/metrics`), and the server's RSS.
//!
//! **Latency** (`--only latency`): one group with a 2 s interval alerting on
//! `sum by (trial) (count_over_time({job="latency-probe"} |= "CROSS" [10s])) > 0`; each trial
//! pushes one crossing line and polls the real Alertmanager's `/api/v2/alerts` every 10 ms until
//! the trial's alert is there. Prints min, p50, p90, max over `--trials`.
//!
//! Needs the Debian packages `prometheus-alertmanager` (and the release `tovlog` binary, which
//! cargo builds). Figures are printed, never asserted.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "common/mod.rs"]
mod common;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

struct Args {
    lines: u64,
    minutes: u64,
    trials: usize,
    dataset: Option<PathBuf>,
    only: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        lines: 5_000_000,
        minutes: 5,
        trials: 20,
        dataset: None,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--lines" => a.lines = it.next().context("--lines N")?.parse()?,
            "--minutes" => a.minutes = it.next().context("--minutes N")?.parse()?,
            "--trials" => a.trials = it.next().context("--trials N")?.parse()?,
            "--dataset" => a.dataset = Some(it.next().context("--dataset DIR")?.into()),
            "--only" => a.only = Some(it.next().context("--only cost|latency")?),
            "--bench" => {}
            other if other.starts_with("--") => bail!("unknown flag {other}"),
            _ => {}
        }
    }
    Ok(a)
}

/// The generated dataset for `lines` (generated once, kept under target/bench-data, shared with
/// the macro bench).
fn dataset(args: &Args) -> Result<PathBuf> {
    common::dataset(args.lines, args.dataset.as_deref())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A child process killed on drop.
struct Proc {
    child: Child,
    url: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_ready(p: &mut Proc, path: &str, what: &str) -> Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if let Some(status) = p.child.try_wait()? {
            bail!("{what} exited with {status}");
        }
        if let Ok(r) = client.get(format!("{}{path}", p.url)).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{what} did not become ready")
}

/// A real Alertmanager on a free port (no receivers that go anywhere: alerts are only stored).
async fn start_alertmanager(dir: &Path) -> Result<Proc> {
    let port = free_port()?;
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: none\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n  - name: none\n",
    )?;
    let child = Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting prometheus-alertmanager (Debian package prometheus-alertmanager)")?;
    let mut p = Proc {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    wait_ready(&mut p, "/-/ready", "alertmanager").await?;
    Ok(p)
}

async fn start_tovlog(config: &Path, data_dir: &Path) -> Result<Proc> {
    let port = free_port()?;
    let child = Command::new(env!("CARGO_BIN_EXE_tovlog"))
        .arg("--config")
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting tovlog")?;
    let mut p = Proc {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    wait_ready(&mut p, "/ready", "tovlog").await?;
    Ok(p)
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit(')').next().context("stat format")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).context("utime")?.parse::<f64>()? + f.get(12).context("stime")?.parse::<f64>()?;
    Ok(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

fn rss_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// 1,000 alert rules in 100 groups of 10, the playbook's alerts with varied thresholds and hosts.
fn bench_rules() -> String {
    let mut y = String::from("groups:\n");
    for g in 0..100 {
        let _ = writeln!(y, "  - name: bench-{g:03}\n    interval: 1m\n    rules:");
        for r in 0..10 {
            let host = format!("app-{:02}", 1 + (g + r) % 8);
            let expr = match r % 5 {
                0 => format!(
                    r#"sum by (user_id) (count_over_time({{job="tovplay-backend"}} | json | action="DELETE" [5m])) > {}"#,
                    10 + g
                ),
                1 => format!(
                    r#"sum by (ip) (count_over_time({{job="tovplay-backend"}} | json | action="LOGIN" | status="401" [5m])) > {}"#,
                    20 + g
                ),
                2 => format!(
                    r#"sum(rate({{job="nginx"}} | pattern `<_> "<_> <_> <_>" <status> <_>` | status=~"5.." [5m])) / sum(rate({{job="nginx"}}[5m])) > {}"#,
                    0.05 + g as f64 / 1000.0
                ),
                3 => format!(
                    r#"quantile_over_time(0.95, {{job="tovplay-backend", host="{host}"}} | json | unwrap duration_ms | __error__="" [5m]) by (path) > {}"#,
                    1000 + 10 * g
                ),
                _ => format!(
                    r#"sum by (host) (count_over_time({{job="tovplay-backend", host="{host}"}} | json | level="ERROR" [5m])) > {}"#,
                    5 + g
                ),
            };
            let _ = writeln!(
                y,
                "      - alert: Bench_{g:03}_{r}\n        expr: '{}'\n        for: 1m\n        labels:\n          severity: page\n        annotations:\n          summary: 'value {{{{ $value }}}}'",
                expr.replace('\'', "''")
            );
        }
    }
    y
}

/// Sum of every sample whose metric name ends with `suffix` (whatever the prefix).
fn metric_sum(text: &str, suffix: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            name.ends_with(suffix)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn cost(args: &Args, tmp: &Path) -> Result<Value> {
    let data = dataset(args)?;
    let meta: Value = serde_json::from_slice(&std::fs::read(data.join("meta.json"))?)?;
    let files = common::push_files(&data)?;
    let am = start_alertmanager(tmp).await?;
    let rules_dir = tmp.join("rules");
    std::fs::create_dir_all(rules_dir.join("fake"))?;
    // Room for the flush and compaction to settle (at most 12 minutes), the idle baseline
    // and the first cycle before the measured minutes.
    let lead_min = args.minutes + 18;
    let config = tmp.join("tovlog.yaml");
    std::fs::write(
        &config,
        format!(
            "auth_enabled: false\nlimits_config:\n  ingestion_rate_mb: 100000\n  ingestion_burst_size_mb: 100000\n  \
             max_query_series: 100000\n  discover_log_levels: false\n  creation_grace_period: {}m\n\
             storage:\n  compaction:\n    min_age: 1m\n    check_interval: 1s\n    delete_delay: 0s\n    concurrency: 2\n\
             ruler:\n  evaluation_interval: 1m\n  poll_interval: 5s\n  alertmanager_url: {}\n  \
             storage:\n    type: local\n    local:\n      directory: {}\n",
            lead_min + 5,
            am.url,
            rules_dir.display()
        ),
    )?;
    let server = start_tovlog(&config, &tmp.join("data")).await?;
    let pid = server.child.id();
    let t_end = meta["t_end_ns"].as_i64().context("t_end_ns")?;
    let shift = now_ns() + (lead_min as i64) * 60_000_000_000 - t_end;
    let t = Instant::now();
    common::push_shifted(&server.url, files, shift).await?;
    eprintln!(
        "pushed {} lines in {:.1}s",
        meta["lines"],
        t.elapsed().as_secs_f64()
    );

    // Let the flush and the compaction of the pushed day finish first: the cost window
    // must hold the ruler's work only.
    let client0 = reqwest::Client::new();
    client0.post(format!("{}/flush", server.url)).send().await?;
    let settle = Instant::now();
    common::wait_for_compaction(&client0, &server.url, Duration::from_secs(720)).await?;
    eprintln!(
        "flush and compaction settled {:.0}s after the push",
        settle.elapsed().as_secs_f64()
    );
    // Idle baseline.
    let idle_s = 30.0;
    let c0 = cpu_seconds(pid)?;
    tokio::time::sleep(Duration::from_secs_f64(idle_s)).await;
    let idle_rate = (cpu_seconds(pid)? - c0) / idle_s;

    std::fs::write(rules_dir.join("fake/bench.yaml"), bench_rules())?;
    let client = reqwest::Client::new();
    let metrics = |client: reqwest::Client, url: String| async move {
        client
            .get(format!("{url}/metrics"))
            .send()
            .await?
            .text()
            .await
            .map_err(anyhow::Error::from)
    };
    // Wait until every group has evaluated once (the poll, then up to one interval).
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let m = metrics(client.clone(), server.url.clone()).await?;
        if metric_sum(&m, "rule_group_iterations_total") >= 100.0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the 100 groups did not all evaluate within 3 minutes");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let m0 = metrics(client.clone(), server.url.clone()).await?;
    let c0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    let mut seen = std::collections::HashSet::new();
    let mut eval_times = Vec::new();
    let mut errors = std::collections::BTreeSet::new();
    let window = Duration::from_secs(args.minutes * 60);
    while t0.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(15).min(window.saturating_sub(t0.elapsed()))).await;
        let v: Value = client
            .get(format!("{}/prometheus/api/v1/rules", server.url))
            .send()
            .await?
            .json()
            .await?;
        for g in v["data"]["groups"].as_array().into_iter().flatten() {
            for r in g["rules"].as_array().into_iter().flatten() {
                if let Some(e) = r["lastError"].as_str().filter(|e| !e.is_empty()) {
                    errors.insert(e.to_owned());
                }
                let key = format!("{}|{}", r["name"], r["lastEvaluation"]);
                if let Some(e) = r["evaluationTime"].as_f64() {
                    if seen.insert(key) {
                        eval_times.push(e);
                    }
                }
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - c0 - idle_rate * elapsed;
    for e in &errors {
        eprintln!("rule error: {e}");
    }
    let m1 = metrics(client.clone(), server.url.clone()).await?;
    let delta = |s: &str| metric_sum(&m1, s) - metric_sum(&m0, s);
    let cycles = elapsed / 60.0;
    eval_times.sort_by(f64::total_cmp);
    let out = json!({
        "lines": meta["lines"],
        "rules": 1000, "groups": 100, "interval_s": 60, "measured_s": elapsed,
        "idle_cpu_share": idle_rate,
        "cpu_s_per_cycle": cpu / cycles,
        // Seconds per cycle over 1,000 rules, in milliseconds: the same number.
        "cpu_ms_per_rule": cpu / cycles,
        "share_of_one_core": cpu / elapsed,
        "rule_eval_p50_s": quantile(&eval_times, 0.5),
        "rule_eval_p99_s": quantile(&eval_times, 0.99),
        "rule_eval_max_s": eval_times.last().copied().unwrap_or(f64::NAN),
        "rule_evals_sampled": eval_times.len(),
        "group_iterations": delta("rule_group_iterations_total"),
        "missed_iterations": delta("rule_group_iterations_missed_total"),
        "rule_evaluations": delta("rule_evaluations_total"),
        "rule_evaluation_failures": delta("rule_evaluation_failures_total"),
        "rss_mib": rss_mib(pid, "VmRSS:"),
        "peak_rss_mib": rss_mib(pid, "VmHWM:"),
    });
    println!(
        "cost: 1000 rules / 100 groups / 1m over {} lines, {elapsed:.0}s measured",
        meta["lines"]
    );
    println!(
        "  cpu/cycle {:.3}s = {:.2}% of one core (idle {:.2}% subtracted), {:.3} ms/rule",
        cpu / cycles,
        100.0 * cpu / elapsed,
        100.0 * idle_rate,
        cpu / cycles
    );
    println!(
        "  rule eval p50 {:.4}s p99 {:.4}s max {:.4}s ({} sampled); missed {} of {} iterations; {} failures",
        out["rule_eval_p50_s"].as_f64().unwrap_or(f64::NAN),
        out["rule_eval_p99_s"].as_f64().unwrap_or(f64::NAN),
        out["rule_eval_max_s"].as_f64().unwrap_or(f64::NAN),
        eval_times.len(),
        out["missed_iterations"],
        out["group_iterations"],
        out["rule_evaluation_failures"]
    );
    println!(
        "  rss {:.0} MiB (peak {:.0} MiB)",
        out["rss_mib"].as_f64().unwrap_or(f64::NAN),
        out["peak_rss_mib"].as_f64().unwrap_or(f64::NAN)
    );
    drop(server);
    drop(am);
    Ok(out)
}

async fn latency(args: &Args, tmp: &Path) -> Result<Value> {
    let am = start_alertmanager(tmp).await?;
    let rules_dir = tmp.join("latency-rules");
    std::fs::create_dir_all(rules_dir.join("fake"))?;
    std::fs::write(
        rules_dir.join("fake/latency.yaml"),
        "groups:\n  - name: latency\n    interval: 2s\n    rules:\n      - alert: LatencyProbe\n        \
         expr: 'sum by (trial) (count_over_time({job=\"latency-probe\"} |= \"CROSS\" [10s])) > 0'\n",
    )?;
    let config = tmp.join("latency.yaml");
    std::fs::write(
        &config,
        format!(
            "auth_enabled: false\nruler:\n  poll_interval: 1s\n  alertmanager_url: {}\n  storage:\n    type: local\n    local:\n      directory: {}\n",
            am.url,
            rules_dir.display()
        ),
    )?;
    let server = start_tovlog(&config, &tmp.join("latency-data")).await?;
    let client = reqwest::Client::new();
    // Let the group load and run a few times.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut lat = Vec::new();
    for trial in 0..args.trials {
        // Spread the pushes over the group's 2 s phase.
        tokio::time::sleep(Duration::from_millis(500 + (trial as u64 * 737) % 2000)).await;
        let t0 = Instant::now();
        let body = json!({"streams": [{"stream": {"job": "latency-probe", "trial": trial.to_string()},
            "values": [[now_ns().to_string(), format!("CROSS threshold trial {trial}")]]}]});
        let r = client
            .post(format!("{}/loki/api/v1/push", server.url))
            .json(&body)
            .send()
            .await?;
        if r.status().as_u16() != 204 {
            bail!("push failed: {}", r.status());
        }
        let filter = format!("trial=\"{trial}\"");
        loop {
            let v: Value = client
                .get(format!("{}/api/v2/alerts", am.url))
                .query(&[("filter", filter.as_str())])
                .send()
                .await?
                .json()
                .await?;
            if v.as_array().is_some_and(|a| !a.is_empty()) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("trial {trial}: no alert in Alertmanager after 60s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let s = t0.elapsed().as_secs_f64();
        eprintln!("trial {trial}: {s:.3}s");
        lat.push(s);
    }
    lat.sort_by(f64::total_cmp);
    let out = json!({
        "trials": lat.len(), "group_interval_s": 2,
        "min_s": lat.first(), "p50_s": quantile(&lat, 0.5), "p90_s": quantile(&lat, 0.9),
        "max_s": lat.last(), "all_s": lat,
    });
    println!(
        "latency: push → Alertmanager over {} trials: min {:.3}s p50 {:.3}s p90 {:.3}s max {:.3}s",
        lat.len(),
        lat.first().copied().unwrap_or(f64::NAN),
        quantile(&lat, 0.5),
        quantile(&lat, 0.9),
        lat.last().copied().unwrap_or(f64::NAN)
    );
    drop(server);
    drop(am);
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let tmp = tempfile::tempdir()?;
    let mut out = serde_json::Map::new();
    if args.only.as_deref() != Some("latency") {
        out.insert("cost".into(), cost(&args, tmp.path()).await?);
    }
    if args.only.as_deref() != Some("cost") {
        out.insert("latency".into(), latency(&args, tmp.path()).await?);
    }
    println!("{}", Value::Object(out));
    Ok(())
}
