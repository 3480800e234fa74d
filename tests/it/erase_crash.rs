//! The crash matrix of retention and deletes: the real `tovlog` binary runs with a fault
//! point armed (`TOVLOG_FAULT`, see `tovlog_storage::fault`), so it aborts — as a
//! `kill -9` would stop it — at one step of the compactor's retention or delete rewrite.
//! Restarted without the fault on the same data directory, it must answer exactly what it
//! would have answered without the crash, finish the work, and pass `tovlog verify`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{free_port, wait_ready};

pub(crate) const HOUR: i64 = 3_600_000_000_000;
pub(crate) const MINUTE: i64 = 60_000_000_000;

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Start the binary, with `fault` armed when given.
pub(crate) fn spawn(
    config: &Path,
    data: &Path,
    port: u16,
    fault: Option<&str>,
) -> anyhow::Result<Child> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tovlog"));
    cmd.arg("--config")
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .env_remove("TOVLOG_FAULT")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(f) = fault {
        cmd.env("TOVLOG_FAULT", f);
    }
    Ok(cmd.spawn()?)
}

/// Wait for the child to end by itself (the fault point); `false` on timeout (then it is
/// killed).
pub(crate) fn wait_exit(child: &mut Child, timeout: Duration) -> anyhow::Result<bool> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(!status.success(), "the server exited cleanly: {status}");
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill()?;
    child.wait()?;
    Ok(false)
}

/// One test scenario: a data set, what the compactor does to it, and the lines that must
/// remain.
pub(crate) struct Case {
    pub(crate) client: reqwest::Client,
    pub(crate) url: String,
    /// Start of the oldest window pushed.
    pub(crate) first_ns: i64,
}

impl Case {
    pub(crate) async fn push(&self, job: &str, rows: &[(i64, String)]) -> anyhow::Result<()> {
        let values: Vec<Value> = rows
            .iter()
            .map(|(t, l)| json!([t.to_string(), l]))
            .collect();
        let body = json!({"streams": [{"stream": {"job": job}, "values": values}]});
        let r = self
            .client
            .post(format!("{}/loki/api/v1/push", self.url))
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 204, "push: {}", r.status());
        Ok(())
    }

    /// Every line of `{job=~".+"}` the server returns, each once.
    pub(crate) async fn lines(&self) -> anyhow::Result<BTreeSet<String>> {
        self.lines_of("{job=~\".+\"}", self.first_ns - HOUR, now_ns() + HOUR)
            .await
    }

    /// Every line `query` returns over `[start_ns, end_ns)`; a line returned twice fails.
    pub(crate) async fn lines_of(
        &self,
        query: &str,
        start_ns: i64,
        end_ns: i64,
    ) -> anyhow::Result<BTreeSet<String>> {
        let resp = self
            .client
            .get(format!("{}/loki/api/v1/query_range", self.url))
            .query(&[
                ("query", query),
                ("start", &start_ns.to_string()),
                ("end", &end_ns.to_string()),
                ("limit", "100000"),
                ("direction", "forward"),
            ])
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status.is_success(), "query failed: {status} {text}");
        let body: Value = serde_json::from_str(&text)?;
        let mut seen = BTreeSet::new();
        for s in body["data"]["result"].as_array().into_iter().flatten() {
            for v in s["values"].as_array().into_iter().flatten() {
                let line = v[1].as_str().unwrap_or("").to_string();
                anyhow::ensure!(seen.insert(line.clone()), "{line} returned twice");
            }
        }
        Ok(seen)
    }

    pub(crate) async fn flush(&self) -> anyhow::Result<()> {
        let r = self
            .client
            .post(format!("{}/flush", self.url))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "flush: {}", r.status());
        Ok(())
    }
}

/// `tovlog verify` over the data directory must pass.
pub(crate) fn verify(data: &Path) -> anyhow::Result<()> {
    verify_with(data, None)
}

/// [`verify`] with the server's `--config` (where the store is S3, say).
pub(crate) fn verify_with(data: &Path, config: Option<&Path>) -> anyhow::Result<()> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tovlog"));
    cmd.arg("verify");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd
        .arg("--data-dir")
        .arg(data)
        .env_remove("TOVLOG_FAULT")
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Parquet files under the tenant's window directories.
pub(crate) fn parquet_files(data: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![data.join("chunks").join("fake")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out
}

mod retention {
    use super::*;

    /// Three windows: one wholly expired (dropped by a manifest edit), one the cut-off
    /// halves (rewritten), one recent (kept). The period puts the cut-off in the middle of
    /// the second window whenever the test runs.
    struct Data {
        config: String,
        rows: Vec<(i64, String)>,
        expected: BTreeSet<String>,
        first_ns: i64,
    }

    fn data() -> Data {
        let now = now_ns();
        let this_hour = now.div_euclid(HOUR) * HOUR;
        let halved = this_hour - 3 * HOUR;
        let cutoff = halved + 30 * MINUTE;
        let period_s = (now - cutoff) / 1_000_000_000;
        let mut rows = Vec::new();
        let mut expected = BTreeSet::new();
        for m in 1..60 {
            if m == 30 {
                continue;
            }
            let old = (
                halved - 2 * HOUR + m * MINUTE,
                format!("expired window {m}"),
            );
            let half = (halved + m * MINUTE, format!("halved window {m}"));
            rows.push(old);
            if m > 30 {
                expected.insert(half.1.clone());
            }
            rows.push(half);
        }
        for m in 0..10 {
            let line = format!("recent {m}");
            expected.insert(line.clone());
            rows.push((now - HOUR + m * MINUTE, line));
        }
        let config = format!(
            "auth_enabled: false\n\
             limits_config:\n  retention_period: {period_s}s\n  max_entries_limit_per_query: 100000\n  discover_log_levels: false\n\
             storage:\n  compaction:\n    retention_enabled: true\n    check_interval: 200ms\n    min_age: 1h\n    delete_delay: 0s\n"
        );
        Data {
            config,
            rows,
            expected,
            first_ns: halved - 2 * HOUR,
        }
    }

    async fn run(point: &str) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let d = data();
        let config = dir.path().join("tovlog.yaml");
        std::fs::write(&config, &d.config)?;
        let data_dir = dir.path().join("data");
        let port = free_port()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()?;
        let case = Case {
            client: client.clone(),
            url: format!("http://127.0.0.1:{port}"),
            first_ns: d.first_ns,
        };

        let mut child = spawn(&config, &data_dir, port, Some(point))?;
        wait_ready(&client, &case.url).await?;
        case.push("erase", &d.rows).await?;
        assert_eq!(
            case.lines().await?,
            d.expected,
            "before the flush ({point})"
        );
        case.flush().await?;
        anyhow::ensure!(
            wait_exit(&mut child, Duration::from_secs(20))?,
            "the server never reached fault point {point}"
        );

        let mut child = spawn(&config, &data_dir, port, None)?;
        wait_ready(&client, &case.url).await?;
        assert_eq!(
            case.lines().await?,
            d.expected,
            "after the crash at {point}"
        );
        // The compactor finishes: the expired window's file and the halved window's
        // original are gone from disk, and the answer is the same.
        let window = |ns: i64| {
            data_dir
                .join("chunks/fake")
                .join((ns / 1_000_000_000).to_string())
        };
        let (expired_dir, halved_dir) = (window(d.first_ns), window(d.first_ns + 2 * HOUR));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let files = parquet_files(&data_dir);
            let expired = files.iter().filter(|p| p.starts_with(&expired_dir)).count();
            let halved: Vec<String> = files
                .iter()
                .filter(|p| p.starts_with(&halved_dir))
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            // The expired window's file is deleted, the halved window's replaced by its
            // rewrite.
            if expired == 0 && halved.len() == 1 && halved[0].starts_with('e') {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "compaction did not settle after {point}: {expired} expired, {halved:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            case.lines().await?,
            d.expected,
            "after compaction ({point})"
        );
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        let status = child.wait()?;
        anyhow::ensure!(status.success(), "SIGTERM exit status {status}");
        verify(&data_dir)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_after_the_drop_chain_entry() -> anyhow::Result<()> {
        run("erase.after_drop_chain").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_after_the_drop_manifest_edit() -> anyhow::Result<()> {
        run("erase.after_drop_manifest").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_after_writing_the_rewrite() -> anyhow::Result<()> {
        run("erase.after_rewrite_write").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_after_the_rewrite_chain_entry() -> anyhow::Result<()> {
        run("erase.after_rewrite_chain").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_after_the_rewrite_manifest_edit() -> anyhow::Result<()> {
        run("erase.after_rewrite_manifest").await
    }
}

mod deletes {
    use super::*;

    /// A delete with a line filter, due at once (cancel period 0): the compactor rewrites
    /// both files of the stream and records the lines removed.
    async fn run(point: &str) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("tovlog.yaml");
        std::fs::write(
            &config,
            "auth_enabled: false\n\
             limits_config:\n  max_entries_limit_per_query: 100000\n  discover_log_levels: false\n\
             storage:\n  compaction:\n    retention_enabled: true\n    check_interval: 200ms\n    min_age: 1h\n    delete_delay: 0s\n    delete_request_cancel_period: 0s\n",
        )?;
        let data_dir = dir.path().join("data");
        let port = free_port()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()?;
        let now = now_ns();
        let first = (now - 3 * HOUR).div_euclid(HOUR) * HOUR;
        let case = Case {
            client: client.clone(),
            url: format!("http://127.0.0.1:{port}"),
            first_ns: first,
        };
        // Two windows; every third line holds the secret.
        let rows: Vec<(i64, String)> = (0..120)
            .map(|m| {
                let what = if m % 3 == 0 { "token=secret" } else { "ok" };
                (first + m * MINUTE, format!("line {m} {what}"))
            })
            .collect();
        let expected: BTreeSet<String> = rows
            .iter()
            .filter(|(_, l)| !l.contains("secret"))
            .map(|(_, l)| l.clone())
            .chain(rows.iter().map(|(_, l)| format!("other {l}")))
            .collect();
        let other: Vec<(i64, String)> = rows
            .iter()
            .map(|(t, l)| (*t, format!("other {l}")))
            .collect();

        let mut child = spawn(&config, &data_dir, port, Some(point))?;
        wait_ready(&client, &case.url).await?;
        case.push("erase", &rows).await?;
        case.push("other", &other).await?;
        case.flush().await?;
        // The request is recorded before the answer; the compactor may abort the process
        // before the answer is sent, so only the restart tells.
        let posted = client
            .post(format!("{}/loki/api/v1/delete", case.url))
            .query(&[
                ("query", "{job=\"erase\"} |= \"secret\"".to_string()),
                ("start", (first / 1_000_000_000 - 60).to_string()),
                ("end", (now / 1_000_000_000).to_string()),
            ])
            .send()
            .await;
        if let Ok(r) = &posted {
            anyhow::ensure!(r.status().as_u16() == 204, "delete: {}", r.status());
        }
        anyhow::ensure!(
            wait_exit(&mut child, Duration::from_secs(20))?,
            "the server never reached fault point {point}"
        );

        let mut child = spawn(&config, &data_dir, port, None)?;
        wait_ready(&client, &case.url).await?;
        assert_eq!(case.lines().await?, expected, "after the crash at {point}");
        // The request ends processed with every secret line counted once.
        let deadline = Instant::now() + Duration::from_secs(20);
        let request = loop {
            let list: Value = client
                .get(format!("{}/loki/api/v1/delete", case.url))
                .send()
                .await?
                .json()
                .await?;
            let all = list.as_array().cloned().unwrap_or_default();
            anyhow::ensure!(all.len() == 1, "requests after {point}: {list}");
            if all[0]["status"] == "processed" {
                break all[0].clone();
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "never processed after {point}: {list}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            request["lines_removed"],
            json!(40),
            "after {point}: {request}"
        );
        assert_eq!(case.lines().await?, expected, "after processing ({point})");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        let status = child.wait()?;
        anyhow::ensure!(status.success(), "SIGTERM exit status {status}");
        verify(&data_dir)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_after_writing_the_rewrite() -> anyhow::Result<()> {
        run("erase.after_rewrite_write").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_after_the_rewrite_chain_entry() -> anyhow::Result<()> {
        run("erase.after_rewrite_chain").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_after_the_rewrite_manifest_edit() -> anyhow::Result<()> {
        run("erase.after_rewrite_manifest").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_before_the_processed_event() -> anyhow::Result<()> {
        run("erase.before_processed").await
    }
}
