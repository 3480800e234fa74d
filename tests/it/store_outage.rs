//! The object store goes away under a running writer: a real `tovlog` process on a real S3
//! server (moto), reached through a proxy the test switches between passing traffic,
//! answering every request 503, and dropping every connection.
//! - While the store fails, pushes are acknowledged from the WAL until the head is full,
//!   then refused with a retryable 503 that names the cause, while memory stays bounded
//!   and queries over the head keep answering; the compactor's failures are retried.
//! - When the store returns, the backlog flushes, pushes are taken again, the window
//!   waiting for compaction is compacted, and every acknowledged line is there once —
//!   also after a `kill -9` and a restart, and `tovlog verify` passes.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::erase_crash::{now_ns, spawn, verify_with, Case, HOUR};
use crate::server::{free_port, wait_ready};
use crate::sor::{Moto, BUCKET};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Traffic passes to the S3 server.
    Pass,
    /// Every request is answered `503 Service Unavailable`.
    Unavailable,
    /// Every connection is closed as soon as it is accepted.
    Drop,
}

/// A TCP proxy in front of the S3 server. Changing the mode closes the connections open
/// through it, so pooled connections cannot bypass an outage.
struct FaultProxy {
    mode: watch::Sender<Mode>,
    endpoint: String,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    async fn start(upstream: &str) -> anyhow::Result<FaultProxy> {
        let upstream = upstream
            .strip_prefix("http://")
            .unwrap_or(upstream)
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (mode, watched) = watch::channel(Mode::Pass);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, upstream.clone(), watched.clone()));
            }
        });
        Ok(FaultProxy {
            mode,
            endpoint,
            task,
        })
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(mut client: TcpStream, upstream: String, mut mode: watch::Receiver<Mode>) {
    let now = *mode.borrow_and_update();
    match now {
        Mode::Drop => {}
        Mode::Unavailable => {
            // Read the request head, answer, close.
            let mut buf = vec![0u8; 64 * 1024];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let body = "<Error><Code>ServiceUnavailable</Code></Error>";
            let _ = client
                .write_all(
                    format!(
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/xml\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
            let _ = client.shutdown().await;
        }
        Mode::Pass => {
            let Ok(mut server) = TcpStream::connect(&upstream).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = mode.changed() => {}
            }
        }
    }
}

/// The server's config: S3 through the proxy with short client timeouts and one retry, a
/// 1 MiB head, a lease long enough to outlast the outage.
fn config(dir: &Path, endpoint: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join("tovlog.yaml");
    std::fs::write(
        &path,
        format!(
            "auth_enabled: false\n\
             limits_config:\n  ingestion_rate_mb: 1000\n  ingestion_burst_size_mb: 1000\n  \
             max_entries_limit_per_query: 1000000\n  discover_log_levels: false\n\
             storage:\n  object_store:\n    type: s3\n    endpoint: {endpoint}\n    \
             bucket: {BUCKET}\n    region: us-east-1\n    access_key_id: test\n    \
             secret_access_key: test\n    allow_http: true\n    path_style: true\n    \
             prefix: outage\n    request_timeout: 2s\n    connect_timeout: 1s\n    \
             max_retries: 1\n    retry_timeout: 1s\n  \
             head:\n    max_bytes: 1MiB\n    check_interval: 200ms\n    stall_timeout: 5s\n  \
             lease:\n    ttl: 10m\n    renew_interval: 1m\n  \
             compaction:\n    min_age: 4s\n    check_interval: 300ms\n    delete_delay: 0s\n"
        ),
    )?;
    Ok(path)
}

/// One batch of 400 distinct lines of ~150 bytes at `ts0 + i`.
fn batch(n: usize, ts0: i64) -> (Value, Vec<String>) {
    let lines: Vec<String> = (0..400)
        .map(|i| {
            format!(
                "batch={n} line={i} user=u{} action=delete table=orders_{} note={}",
                i % 17,
                i % 5,
                "x".repeat(80)
            )
        })
        .collect();
    let values: Vec<Value> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| json!([(ts0 + i as i64).to_string(), l]))
        .collect();
    let body = json!({"streams": [{"stream": {"job": "outage", "shard": (n % 4).to_string()}, "values": values}]});
    (body, lines)
}

async fn push(case: &Case, body: &Value) -> anyhow::Result<(u16, String)> {
    let r = case
        .client
        .post(format!("{}/loki/api/v1/push", case.url))
        .json(body)
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.text().await?))
}

/// The value of an unlabelled metric.
async fn metric(case: &Case, name: &str) -> anyhow::Result<f64> {
    let text = case
        .client
        .get(format!("{}/metrics", case.url))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no metric {name}"))
}

/// Lines of `{job="outage"}` in `[start, end)`, each once.
async fn lines_between(case: &Case, start: i64, end: i64) -> anyhow::Result<BTreeSet<String>> {
    case.lines_of("{job=\"outage\"}", start, end).await
}

async fn wait_for(
    what: &str,
    secs: u64,
    mut done: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if done().await? {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_outage_refuses_pushes_once_the_head_is_full_and_loses_nothing(
) -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let proxy = FaultProxy::start(&moto.endpoint).await?;
    let dir = tempfile::tempdir()?;
    let config = config(dir.path(), &proxy.endpoint)?;
    let data = dir.path().join("data");
    let port = free_port()?;
    let first = (now_ns() - 5 * HOUR).div_euclid(HOUR) * HOUR;
    let case = Case {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        url: format!("http://127.0.0.1:{port}"),
        first_ns: first,
    };
    let mut child = spawn(&config, &data, port, None)?;
    wait_ready(&case.client, &case.url).await?;
    let mut acknowledged = BTreeSet::new();

    // Store up: two flushes into one window, which the compactor takes up after `min_age`,
    // inside the outage.
    for n in 0..4 {
        let (body, lines) = batch(n, first + n as i64 * 1_000_000);
        let (status, text) = push(&case, &body).await?;
        anyhow::ensure!(status == 204, "push {n}: {status} {text}");
        acknowledged.extend(lines);
        if n % 2 == 1 {
            case.flush().await?;
        }
    }

    // Outage: 503 from the store. Pushes land in a later window (a query of it needs no
    // chunk file) and are acknowledged until the head is full.
    proxy.set(Mode::Unavailable);
    let outage_began = Instant::now();
    let outage_start = first + 2 * HOUR;
    let mut during = BTreeSet::new();
    let mut refusal = None;
    for n in 4..400 {
        let (body, lines) = batch(n, outage_start + n as i64 * 1_000_000);
        let (status, text) = push(&case, &body).await?;
        match status {
            204 => during.extend(lines),
            503 => {
                refusal = Some(text);
                break;
            }
            other => anyhow::bail!("push {n} during the outage: {other} {text}"),
        }
    }
    let refusal = refusal.ok_or_else(|| anyhow::anyhow!("no push was refused"))?;
    anyhow::ensure!(
        refusal.contains("object store") && refusal.contains("retry later"),
        "refusal message: {refusal}"
    );
    anyhow::ensure!(
        during.len() >= 2 * 400,
        "only {} lines taken before the head filled",
        during.len()
    );
    // Memory stays bounded by the head limit: twice 1 MiB, plus the push let in last.
    let head = metric(&case, "tovlog_head_bytes").await?;
    anyhow::ensure!(head < 3.0 * 1024.0 * 1024.0, "head holds {head} bytes");
    anyhow::ensure!(metric(&case, "tovlog_flush_failing").await? == 1.0);
    // Dropped connections instead of 503s: still refused, still answering queries.
    proxy.set(Mode::Drop);
    let (body, _) = batch(1000, outage_start + HOUR);
    let (status, text) = push(&case, &body).await?;
    anyhow::ensure!(
        status == 503,
        "push with the store unreachable: {status} {text}"
    );
    let got = lines_between(&case, outage_start, outage_start + HOUR).await?;
    anyhow::ensure!(
        got == during,
        "during the outage: {} lines answered, {} acknowledged",
        got.len(),
        during.len()
    );
    wait_for("flush retries", 20, async || {
        Ok(metric(&case, "tovlog_flush_failures_total").await? >= 3.0)
    })
    .await?;
    // The first window's compaction comes due and fails meanwhile.
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(outage_began.elapsed())).await;
    anyhow::ensure!(metric(&case, "tovlog_compactions_total").await? == 0.0);
    acknowledged.extend(during);

    // The store returns: the backlog flushes by itself and pushes are taken again.
    proxy.set(Mode::Pass);
    wait_for("the backlog flushed", 60, async || {
        Ok(metric(&case, "tovlog_flush_failing").await? == 0.0
            && metric(&case, "tovlog_head_bytes").await? < 1024.0 * 1024.0)
    })
    .await?;
    let (body, lines) = batch(2000, outage_start + 30 * 60 * 1_000_000_000);
    let (status, text) = push(&case, &body).await?;
    anyhow::ensure!(status == 204, "push after the outage: {status} {text}");
    acknowledged.extend(lines);
    wait_for("the waiting window compacted", 30, async || {
        Ok(metric(&case, "tovlog_compactions_total").await? >= 1.0)
    })
    .await?;
    let all = || lines_between(&case, first, outage_start + 2 * HOUR);
    let got = all().await?;
    anyhow::ensure!(
        got == acknowledged,
        "after the outage: {} lines answered, {} acknowledged",
        got.len(),
        acknowledged.len()
    );

    // kill -9 (the last push only in the WAL), restart: everything is there once.
    child.kill()?;
    child.wait()?;
    let mut child = spawn(&config, &data, port, None)?;
    wait_ready(&case.client, &case.url).await?;
    let got = all().await?;
    anyhow::ensure!(
        got == acknowledged,
        "after kill -9: {} lines answered, {} acknowledged",
        got.len(),
        acknowledged.len()
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "SIGTERM exit status {status}");
    verify_with(&data, Some(&config))?;
    Ok(())
}
