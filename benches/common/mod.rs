//! What the benchmarks share (each includes this file with `#[path]`; not every benchmark
//! uses every item).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Wait until every chunk file is compacted and every replaced file deleted (the
/// compactor's gauges on `/metrics` at zero), at most `limit`.
pub async fn wait_for_compaction(
    client: &reqwest::Client,
    url: &str,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let text = client
            .get(format!("{url}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let gauge = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        if gauge("tovlog_chunk_files_uncompacted ") == Some(0)
            && gauge("tovlog_chunk_files_pending_delete ") == Some(0)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("compaction was not over within {}s", limit.as_secs())
}

/// A release `tovlog` started by a benchmark; killed when dropped.
pub struct Server {
    /// The process.
    pub child: std::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the `tovlog` binary cargo built on a free loopback port and wait for `/ready`.
pub async fn start_tovlog(config: &std::path::Path, data_dir: &std::path::Path) -> Result<Server> {
    use anyhow::Context;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tovlog"))
        .arg("--config")
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .context("starting tovlog")?;
    let mut server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if let Some(status) = server.child.try_wait()? {
            bail!("tovlog exited with {status}");
        }
        if let Ok(r) = client.get(format!("{}/ready", server.url)).send().await {
            if r.status().is_success() {
                return Ok(server);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("server did not become ready")
}

/// The `push-*` bodies of a generated data set, in order.
pub fn push_files(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("push-"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Peak resident set size of process `pid` (VmHWM), MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// SIGTERM the server and wait for a clean exit (it flushes first).
pub fn stop(mut server: Server) -> Result<()> {
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()?;
    let status = server.child.wait()?;
    if !status.success() {
        bail!("tovlog exited with {status}");
    }
    Ok(())
}

/// Bytes of every file under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Push every body of `files` with 2 concurrent clients (files interleaved, so time order
/// is kept roughly); any answer but 204 fails. Returns the bytes of the files read.
pub async fn push_all(url: &str, files: Vec<PathBuf>) -> Result<u64> {
    push_shifted(url, files, 0).await
}

/// [`push_all`] with every timestamp moved by `shift_ns` (bodies are sent as read when 0).
pub async fn push_shifted(url: &str, files: Vec<PathBuf>, shift_ns: i64) -> Result<u64> {
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for worker in 0..2 {
        let mine: Vec<PathBuf> = files.iter().skip(worker).step_by(2).cloned().collect();
        let client = client.clone();
        let url = format!("{url}/loki/api/v1/push");
        tasks.push(tokio::spawn(async move {
            let mut bytes = 0u64;
            for f in mine {
                let mut body = tokio::fs::read(&f).await?;
                bytes += body.len() as u64;
                if shift_ns != 0 {
                    let mut json: serde_json::Value = serde_json::from_slice(&body)?;
                    for s in json["streams"].as_array_mut().into_iter().flatten() {
                        for v in s["values"].as_array_mut().into_iter().flatten() {
                            let ts: i64 = v[0].as_str().unwrap_or("0").parse()?;
                            v[0] = serde_json::Value::String((ts + shift_ns).to_string());
                        }
                    }
                    body = serde_json::to_vec(&json)?;
                }
                // A full head answers 503 (flushes behind ingest): retried with backoff,
                // as Promtail does.
                let mut delay = std::time::Duration::from_millis(100);
                loop {
                    let r = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await?;
                    let status = r.status();
                    if status.as_u16() == 204 {
                        break;
                    }
                    if status.as_u16() == 503 && delay < std::time::Duration::from_secs(30) {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                        continue;
                    }
                    bail!(
                        "push of {} → {status}: {}",
                        f.display(),
                        r.text().await.unwrap_or_default()
                    );
                }
            }
            Ok::<_, anyhow::Error>(bytes)
        }));
    }
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await??;
    }
    Ok(bytes)
}

/// The standard workload of `lines` lines: `explicit` when given, else generated once with
/// `shared/bench/gen.py` under target/bench-data (shared by the benchmarks).
pub fn dataset(lines: u64, explicit: Option<&Path>) -> Result<PathBuf> {
    use anyhow::Context;
    if let Some(d) = explicit {
        return Ok(d.to_path_buf());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join(format!("target/bench-data/{lines}"));
    if let Ok(meta) = std::fs::read(dir.join("meta.json")) {
        let meta: serde_json::Value = serde_json::from_slice(&meta)?;
        if meta["lines"].as_u64() == Some(lines) {
            return Ok(dir);
        }
    }
    let gen = root.join("../shared/bench/gen.py");
    eprintln!("generating {lines} lines with {}", gen.display());
    let status = Command::new("python3")
        .arg(&gen)
        .args(["--lines", &lines.to_string(), "--out"])
        .arg(&dir)
        .status()
        .context("running gen.py")?;
    if !status.success() {
        bail!("gen.py failed");
    }
    Ok(dir)
}
