//! Live tail under full-speed ingest (`--tail`): the dataset is pushed twice more, each time
//! into a fresh server, first with no tail open, then with 20 tails open; the difference is
//! the ingest slowdown tails cost. During the second push a probe line is pushed every
//! 20 ms to a stream every tail selects, and each tail measures push → frame latency of the
//! probes it receives (from just before the probe's push request is sent, so it includes
//! that request's WAL write).
//!
//! The 20 tails: 5 of each of
//! 1. `{job="tail-probe"}` (only the probes),
//! 2. `{job=~".+"} |~ "tail-probe|error|ERROR"` (a line filter over every pushed line),
//! 3. `{job=~"nginx|tail-probe"}` (every nginx line: a client that cannot keep up drops),
//! 4. `{job=~"tovplay-backend|tail-probe"} | json | level="error" or msg="probe"`.
//!
//! Figures are printed, never asserted.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const QUERIES: [&str; 4] = [
    r#"{job="tail-probe"}"#,
    r#"{job=~".+"} |~ "tail-probe|error|ERROR""#,
    r#"{job=~"nginx|tail-probe"}"#,
    r#"{job=~"tovplay-backend|tail-probe"} | json | level="error" or msg="probe""#,
];
const TAILS_PER_QUERY: usize = 5;
const PROBE_PERIOD: Duration = Duration::from_millis(20);

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

/// What one tail saw.
#[derive(Default)]
struct Seen {
    entries: u64,
    dropped_reported: u64,
    frames: u64,
    latencies_ms: Vec<f64>,
}

async fn tail_client(url: String, query: &'static str, stop: Arc<AtomicBool>) -> Result<Seen> {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", query)
        .append_pair("start", &now_ns().to_string())
        .finish();
    let ws_url = format!("{}/loki/api/v1/tail?{q}", url.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await?;
    let mut seen = Seen::default();
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if stop.load(Ordering::Relaxed) { break; }
                continue;
            }
        };
        let Some(msg) = msg else { break };
        let Message::Text(text) = msg? else { continue };
        let received = now_ns();
        let frame: Value = serde_json::from_str(text.as_str())?;
        seen.frames += 1;
        seen.dropped_reported += frame["dropped_entries"].as_array().map_or(0, |d| d.len()) as u64;
        for s in frame["streams"].as_array().into_iter().flatten() {
            for v in s["values"].as_array().into_iter().flatten() {
                seen.entries += 1;
                let line = v[1].as_str().unwrap_or_default();
                if !line.contains("tail-probe") {
                    continue;
                }
                if let Ok(p) = serde_json::from_str::<Value>(line) {
                    if let Some(sent) = p["sent_ns"].as_i64() {
                        seen.latencies_ms.push((received - sent) as f64 / 1e6);
                    }
                }
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(seen)
}

async fn probe(url: String, stop: Arc<AtomicBool>) -> Result<u64> {
    let client = reqwest::Client::new();
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(PROBE_PERIOD);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        seq += 1;
        let sent = now_ns();
        let line =
            json!({"msg": "probe", "probe": "tail-probe", "seq": seq, "sent_ns": sent}).to_string();
        let body = json!({"streams": [{"stream": {"job": "tail-probe"},
                                       "values": [[sent.to_string(), line]]}]});
        client
            .post(format!("{url}/loki/api/v1/push"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
    }
    Ok(seq)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn ingest_once(config: &Path, dir: &Path, files: &[PathBuf], lines: u64) -> Result<f64> {
    let server = crate::start(config, dir).await?;
    let t = Instant::now();
    crate::push_all(&server.url, files.to_vec()).await?;
    let secs = t.elapsed().as_secs_f64();
    crate::stop(server)?;
    Ok(lines as f64 / secs)
}

/// Run the tail benchmark; prints a table and returns the figures as JSON.
pub async fn run(config: &Path, work: &Path, files: &[PathBuf], lines: u64) -> Result<Value> {
    // The bench's settings, with room for 20 tails of one tenant.
    let text = std::fs::read_to_string(config)?.replacen(
        "limits_config:\n",
        "limits_config:\n  max_concurrent_tail_requests: 100\n",
        1,
    );
    let config = &work.join("tail.yaml");
    std::fs::write(config, text)?;
    let baseline = ingest_once(config, &work.join("tail-baseline"), files, lines).await?;

    let server = crate::start(config, &work.join("tail-run")).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tails = Vec::new();
    for q in QUERIES {
        for _ in 0..TAILS_PER_QUERY {
            tails.push((
                q,
                tokio::spawn(tail_client(server.url.clone(), q, Arc::clone(&stop))),
            ));
        }
    }
    // Every tail is open once /metrics counts it.
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = client
            .get(format!("{}/metrics", server.url))
            .send()
            .await?
            .text()
            .await?;
        let open = text
            .lines()
            .find_map(|l| l.strip_prefix("tovlog_tail_active ")?.parse::<usize>().ok())
            .unwrap_or(0);
        if open >= tails.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let probe_stop = Arc::new(AtomicBool::new(false));
    let prober = tokio::spawn(probe(server.url.clone(), Arc::clone(&probe_stop)));
    let t = Instant::now();
    crate::push_all(&server.url, files.to_vec()).await?;
    let secs = t.elapsed().as_secs_f64();
    probe_stop.store(true, Ordering::Relaxed);
    let probes = prober.await??;
    // Let the tails drain what is in flight, then close them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics = client
        .get(format!("{}/metrics", server.url))
        .send()
        .await?
        .text()
        .await?;
    let dropped_total = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("tovlog_tail_dropped_entries_total ")?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    let with_tails = lines as f64 / secs;
    let slowdown = (baseline / with_tails - 1.0) * 100.0;

    let mut all = Vec::new();
    let mut per_query = serde_json::Map::new();
    let mut by_query: Vec<(&str, Seen)> = Vec::new();
    for (q, h) in tails {
        let seen = h.await??;
        match by_query.iter_mut().find(|(k, _)| *k == q) {
            Some((_, agg)) => {
                agg.entries += seen.entries;
                agg.frames += seen.frames;
                agg.dropped_reported += seen.dropped_reported;
                agg.latencies_ms.extend(seen.latencies_ms);
            }
            None => by_query.push((q, seen)),
        }
    }
    crate::stop(server)?;
    println!("tail:   ingest {baseline:.0} lines/s without tails, {with_tails:.0} with 20 tails ({slowdown:+.1}%)");
    println!(
        "{:<72} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "tail query (x5)", "entries", "dropped", "probes", "p50 ms", "p99 ms"
    );
    for (q, mut seen) in by_query {
        seen.latencies_ms.sort_by(|a, b| a.total_cmp(b));
        let (p50, p99) = (
            percentile(&seen.latencies_ms, 0.5),
            percentile(&seen.latencies_ms, 0.99),
        );
        println!(
            "{q:<72} {:>10} {:>9} {:>9} {p50:>9.2} {p99:>9.2}",
            seen.entries,
            seen.dropped_reported,
            seen.latencies_ms.len()
        );
        per_query.insert(
            q.to_string(),
            json!({"entries": seen.entries, "frames": seen.frames,
                   "dropped_reported": seen.dropped_reported,
                   "probes_received": seen.latencies_ms.len(), "p50_ms": p50, "p99_ms": p99}),
        );
        all.extend(seen.latencies_ms);
    }
    all.sort_by(|a, b| a.total_cmp(b));
    let (p50, p99) = (percentile(&all, 0.5), percentile(&all, 0.99));
    println!(
        "tail:   push → frame latency over all tails: p50 {p50:.2} ms, p99 {p99:.2} ms ({} of {} probe deliveries); {dropped_total} entries dropped",
        all.len(),
        probes * (QUERIES.len() * TAILS_PER_QUERY) as u64
    );
    Ok(json!({
        "lines_per_s_no_tails": baseline, "lines_per_s_20_tails": with_tails,
        "ingest_slowdown_pct": slowdown, "latency_p50_ms": p50, "latency_p99_ms": p99,
        "probes_sent": probes, "probe_deliveries": all.len(), "dropped_entries_total": dropped_total,
        "queries": per_query,
    }))
}
