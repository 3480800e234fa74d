//! Soak: one server pushed hard for a long time under a Grafana-like read load.
//!
//! ```text
//! cargo bench --workspace --bench soak -- [--minutes 30] [--streams 100] [--rate LINES_PER_S]
//! ```
//!
//! 1. starts the release `tovlog` (WAL fsync on) on a temp data dir,
//! 2. measures its maximum push rate for 20 s (2 clients, 1,000-line bodies, no reads),
//! 3. for `--minutes`, pushes at 80% of it (or `--rate`) from 2 clients paced per second, while
//!    readers do what Grafana does: an Explore log query and a dashboard of 3 metric panels
//!    over the last hour every 5 s, a volume and a labels + values request every 10 s, and 5
//!    live tails stay open,
//! 4. prints one row per minute: RSS, push p99 and query p99 latency, lines pushed, errors,
//!    tail frames; then whether RSS stayed within 10% of its level after minute 5,
//! 5. stops pushing, flushes, and checks that every acknowledged line is there: the count per
//!    stream from `count_over_time` equals the count pushed.
//!
//! Not part of `cargo test` (it runs for half an hour); figures are printed, never asserted,
//! but the final count check makes the process exit 1 when a line is missing.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "common/mod.rs"]
mod common;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{json, Value};

struct Args {
    minutes: u64,
    streams: usize,
    rate: Option<u64>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        minutes: 30,
        streams: 100,
        rate: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--minutes" => a.minutes = it.next().context("--minutes N")?.parse()?,
            "--streams" => a.streams = it.next().context("--streams N")?.parse()?,
            "--rate" => a.rate = Some(it.next().context("--rate N")?.parse()?),
            "--bench" => {}
            other if other.starts_with("--") => bail!("unknown flag {other}"),
            _ => {}
        }
    }
    Ok(a)
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Lines of a push body: JSON (backend-like) and logfmt (audit-like) lines in turn.
struct Generator {
    streams: usize,
    seq: u64,
}

impl Generator {
    /// A body of `lines` lines spread over the streams, with the lines of each stream.
    fn body(&mut self, lines: usize) -> (String, Vec<u64>) {
        let mut counts = vec![0u64; self.streams];
        let mut per: BTreeMap<usize, Vec<Value>> = BTreeMap::new();
        let base = now_ns();
        for i in 0..lines {
            self.seq += 1;
            let s = (self.seq as usize) % self.streams;
            let level = ["info", "info", "info", "warn", "error"][(self.seq % 5) as usize];
            let line = if s.is_multiple_of(2) {
                format!(
                    r#"{{"level":"{level}","msg":"request served","user_id":{},"duration_ms":{},"path":"/api/v1/items/{}","seq":{}}}"#,
                    self.seq % 977,
                    self.seq % 3001,
                    self.seq % 101,
                    self.seq
                )
            } else {
                format!(
                    "level={level} table=items op={} rows={} user=u{} seq={}",
                    ["SELECT", "UPDATE", "DELETE", "INSERT"][(self.seq % 4) as usize],
                    self.seq % 50,
                    self.seq % 977,
                    self.seq
                )
            };
            per.entry(s)
                .or_default()
                .push(json!([(base + i as i64).to_string(), line]));
            counts[s] += 1;
        }
        let streams: Vec<Value> = per
            .into_iter()
            .map(|(s, values)| {
                json!({"stream": {"job": "soak", "stream": format!("s{s:03}"), "kind": if s.is_multiple_of(2) {"json"} else {"logfmt"}}, "values": values})
            })
            .collect();
        (json!({ "streams": streams }).to_string(), counts)
    }
}

/// Latencies and errors of one minute.
#[derive(Default)]
struct Minute {
    push_ms: Vec<f64>,
    query_ms: Vec<f64>,
    errors: u64,
    lines: u64,
}

fn p99(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * 0.99).ceil() as usize)
        .saturating_sub(1)
        .min(v.len() - 1)]
}

const BODY_LINES: usize = 1000;

/// Add the lines of an acknowledged push to the per-stream totals.
fn acknowledged(counts: &Mutex<Vec<u64>>, lines: &[u64]) {
    for (total, n) in counts.lock().iter_mut().zip(lines) {
        *total += n;
    }
}

async fn push(client: &reqwest::Client, url: &str, body: String) -> Result<f64> {
    let t = Instant::now();
    let r = client
        .post(format!("{url}/loki/api/v1/push"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    if r.status().as_u16() != 204 {
        bail!("push → {}", r.status());
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let tmp = tempfile::tempdir()?;
    let config = tmp.path().join("soak.yaml");
    std::fs::write(
        &config,
        "auth_enabled: false\nlimits_config:\n  ingestion_rate_mb: 100000\n  ingestion_burst_size_mb: 100000\n  max_query_series: 100000\n  max_entries_limit_per_query: 100000\nlog:\n  level: warn\n",
    )?;
    let server = common::start_tovlog(&config, &tmp.path().join("data")).await?;
    let url = server.url.clone();
    let pid = server.child.id();
    let client = reqwest::Client::new();
    let counts: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![0; args.streams]));

    // 2. Maximum rate, flat out for 20 s.
    let rate = match args.rate {
        Some(r) => r,
        None => {
            let pushed = Arc::new(AtomicU64::new(0));
            let t = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..2 {
                let (client, url, pushed, counts) =
                    (client.clone(), url.clone(), pushed.clone(), counts.clone());
                let streams = args.streams;
                tasks.push(tokio::spawn(async move {
                    let mut g = Generator { streams, seq: 0 };
                    while t.elapsed() < Duration::from_secs(20) {
                        let (body, n) = g.body(BODY_LINES);
                        push(&client, &url, body).await?;
                        acknowledged(&counts, &n);
                        pushed.fetch_add(BODY_LINES as u64, Ordering::Relaxed);
                    }
                    anyhow::Ok(())
                }));
            }
            for task in tasks {
                task.await??;
            }
            let max = pushed.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
            println!(
                "maximum push rate: {max:.0} lines/s; soaking at 80%: {:.0}",
                max * 0.8
            );
            (max * 0.8) as u64
        }
    };

    // 3. The soak.
    let stop = Arc::new(AtomicBool::new(false));
    let minutes: Arc<Mutex<Vec<Minute>>> = Arc::new(Mutex::new(
        (0..args.minutes).map(|_| Minute::default()).collect(),
    ));
    let start = Instant::now();
    let minute_of = move || (start.elapsed().as_secs() / 60) as usize;
    let mut tasks = Vec::new();
    for worker in 0..2u64 {
        let (client, url, stop, minutes, counts) = (
            client.clone(),
            url.clone(),
            stop.clone(),
            minutes.clone(),
            counts.clone(),
        );
        let streams = args.streams;
        let per_second = rate / 2;
        tasks.push(tokio::spawn(async move {
            let mut g = Generator {
                streams,
                seq: worker * 1_000_000_000,
            };
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let mut left = per_second as usize;
                while left > 0 && !stop.load(Ordering::Relaxed) {
                    let n = left.min(BODY_LINES);
                    left -= n;
                    let (body, per_stream) = g.body(n);
                    let result = push(&client, &url, body).await;
                    if result.is_ok() {
                        acknowledged(&counts, &per_stream);
                    }
                    let m = minute_of();
                    let mut all = minutes.lock();
                    if let Some(slot) = all.get_mut(m) {
                        match result {
                            Ok(ms) => {
                                slot.push_ms.push(ms);
                                slot.lines += n as u64;
                            }
                            Err(_) => slot.errors += 1,
                        }
                    }
                }
            }
        }));
    }
    // (path, parameters, every N seconds)
    type Read = (&'static str, Vec<(&'static str, String)>, u64);
    let queries: Vec<Read> = {
        vec![
            ("/loki/api/v1/query_range", vec![("query", r#"{job="soak", kind="json"} |= "error" | json | duration_ms > 2000"#.into()), ("limit", "1000".into())], 5),
            ("/loki/api/v1/query_range", vec![("query", r#"sum by (level) (count_over_time({job="soak"} | logfmt [1m]))"#.into()), ("step", "15".into())], 5),
            ("/loki/api/v1/query_range", vec![("query", r#"sum(rate({job="soak", kind="json"} | json | __error__="" [1m]))"#.into()), ("step", "15".into())], 5),
            ("/loki/api/v1/query_range", vec![("query", r#"quantile_over_time(0.99, {job="soak", kind="json"} | json | unwrap duration_ms | __error__="" [1m]) by (stream)"#.into()), ("step", "15".into())], 5),
            ("/loki/api/v1/index/volume", vec![("query", r#"{job="soak"}"#.into())], 10),
            ("/loki/api/v1/labels", vec![], 10),
            ("/loki/api/v1/label/stream/values", vec![], 10),
        ]
    };
    for (path, params, every) in queries {
        let (client, url, stop, minutes) =
            (client.clone(), url.clone(), stop.clone(), minutes.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(every));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let end = now_ns();
                let mut p: Vec<(String, String)> = params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                p.push(("start".into(), (end - 3_600_000_000_000).to_string()));
                p.push(("end".into(), end.to_string()));
                let t = Instant::now();
                let ok = match client.get(format!("{url}{path}")).query(&p).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                let m = minute_of();
                let mut all = minutes.lock();
                if let Some(slot) = all.get_mut(m) {
                    if ok {
                        slot.query_ms.push(ms);
                    } else {
                        slot.errors += 1;
                    }
                }
            }
        }));
    }
    let frames = Arc::new(AtomicU64::new(0));
    for q in [
        r#"{job="soak", stream="s000"}"#,
        r#"{job="soak"} |= "level=error""#,
        r#"{job="soak", kind="json"} | json | level="error""#,
        r#"{job="soak", stream=~"s00.*"}"#,
        r#"{job="soak"} |~ "DELETE.*rows=4[0-9]""#,
    ] {
        let (url, stop, frames) = (url.clone(), stop.clone(), frames.clone());
        tasks.push(tokio::spawn(async move {
            let qs: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("query", q)
                .finish();
            let ws = format!("{}/loki/api/v1/tail?{qs}", url.replacen("http", "ws", 1));
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(ws).await else {
                return;
            };
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
                    Ok(Some(Ok(_))) => {
                        frames.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => break,
                    Err(_) => {}
                }
            }
        }));
    }

    println!(
        "\n| minute | RSS MiB | push p99 ms | query p99 ms | lines pushed | errors | tail frames |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut rss = Vec::new();
    let mut last_frames = 0;
    for m in 0..args.minutes as usize {
        let due = Duration::from_secs(60 * (m as u64 + 1));
        tokio::time::sleep(due.saturating_sub(start.elapsed())).await;
        let r = rss_mib(pid);
        rss.push(r);
        let f = frames.load(Ordering::Relaxed);
        let mut all = minutes.lock();
        let slot = &mut all[m];
        println!(
            "| {} | {r:.0} | {:.1} | {:.1} | {} | {} | {} |",
            m + 1,
            p99(&mut slot.push_ms),
            p99(&mut slot.query_ms),
            slot.lines,
            slot.errors,
            f - last_frames
        );
        last_frames = f;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let errors: u64 = minutes.lock().iter().map(|m| m.errors).sum();
    if rss.len() > 5 {
        let base = rss[4];
        let worst = rss[5..]
            .iter()
            .map(|r| (r / base - 1.0).abs())
            .fold(0.0, f64::max);
        println!(
            "RSS after minute 5: {base:.0} MiB; largest departure later {:.1}% ({})",
            worst * 100.0,
            if worst <= 0.10 {
                "within 10%"
            } else {
                "OVER 10%"
            }
        );
    }

    // 5. Every acknowledged line is there.
    client
        .post(format!("{url}/flush"))
        .send()
        .await?
        .error_for_status()?;
    let end = now_ns() + 1_000_000_000;
    let range_s = start.elapsed().as_secs() + 180;
    let v: Value = client
        .get(format!("{url}/loki/api/v1/query"))
        .query(&[
            (
                "query",
                format!(r#"sum by (stream) (count_over_time({{job="soak"}}[{range_s}s]))"#),
            ),
            ("time", end.to_string()),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut got = vec![0u64; args.streams];
    for s in v["data"]["result"].as_array().cloned().unwrap_or_default() {
        let i: usize = s["metric"]["stream"]
            .as_str()
            .and_then(|n| n.trim_start_matches('s').parse().ok())
            .unwrap_or(usize::MAX);
        let n = s["value"][1]
            .as_str()
            .and_then(|x| x.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        if let Some(slot) = got.get_mut(i) {
            *slot = n;
        }
    }
    let want = counts.lock().clone();
    let missing: Vec<usize> = (0..args.streams).filter(|&i| got[i] != want[i]).collect();
    let total: u64 = want.iter().sum();
    println!(
        "pushed {total} lines in {} streams at {rate} lines/s; error responses {errors}; streams whose count differs: {}",
        args.streams,
        missing.len()
    );
    if !missing.is_empty() {
        for &i in missing.iter().take(10) {
            println!("  s{i:03}: pushed {}, counted {}", want[i], got[i]);
        }
        bail!("acknowledged lines are missing");
    }
    drop(server);
    Ok(())
}
