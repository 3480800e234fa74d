//! The crash matrix of head flushes, compactions and label index writes: the real `tovlog`
//! binary runs with a fault point armed (`TOVLOG_FAULT`, see `tovlog_storage::fault`) and
//! aborts, as `kill -9` would stop it, at one step of the write. Restarted without the fault
//! on the same data directory it must answer every acknowledged line exactly once, finish
//! the work (the WAL flushed, the window compacted, every replaced file deleted), leave no
//! file on disk that the manifest does not list, and pass `tovlog verify`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::erase_crash::{now_ns, parquet_files, spawn, verify, wait_exit, Case, HOUR, MINUTE};
use crate::server::{free_port, wait_ready};

/// The manifest of the single tenant (`fake`, auth off).
fn manifest(data: &Path) -> anyhow::Result<Value> {
    let path = data.join("chunks/fake/manifest.json");
    Ok(serde_json::from_slice(&std::fs::read(&path)?)?)
}

/// Parquet files the manifest lists and those it schedules for deletion.
fn listed(m: &Value) -> (BTreeSet<PathBuf>, usize) {
    let files = m["chunks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["path"].as_str())
        .map(PathBuf::from)
        .collect();
    let pending = m["pending_deletes"].as_array().map_or(0, |p| p.len());
    (files, pending)
}

/// Parquet files on disk, relative to the store's root (as the manifest names them).
fn on_disk(data: &Path) -> BTreeSet<PathBuf> {
    let root = data.join("chunks");
    parquet_files(data)
        .into_iter()
        .filter_map(|p| p.strip_prefix(&root).ok().map(Path::to_path_buf))
        .collect()
}

fn sigterm(child: &mut Child) -> anyhow::Result<()> {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "SIGTERM exit status {status}");
    Ok(())
}

type Rows = Vec<(i64, String)>;

/// Two streams over three hourly windows, pushed in two halves.
fn rows(first: i64) -> (Rows, Rows) {
    let all: Vec<(i64, String)> = (0..180)
        .map(|m| (first + m * MINUTE, format!("minute {m} of the matrix")))
        .collect();
    let (a, b): (Vec<_>, Vec<_>) = all.into_iter().partition(|(t, _)| (t / MINUTE) % 2 == 0);
    (a, b)
}

struct Run {
    _dir: tempfile::TempDir,
    config: PathBuf,
    data: PathBuf,
    port: u16,
    case: Case,
    expected: BTreeSet<String>,
}

impl Run {
    fn new(config: &str) -> anyhow::Result<Run> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tovlog.yaml");
        std::fs::write(&path, config)?;
        let data = dir.path().join("data");
        let port = free_port()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()?;
        let first = (now_ns() - 4 * HOUR).div_euclid(HOUR) * HOUR;
        Ok(Run {
            config: path,
            data,
            port,
            case: Case {
                client,
                url: format!("http://127.0.0.1:{port}"),
                first_ns: first,
            },
            expected: BTreeSet::new(),
            _dir: dir,
        })
    }

    fn spawn(&self, fault: Option<&str>) -> anyhow::Result<Child> {
        spawn(&self.config, &self.data, self.port, fault)
    }

    async fn ready(&self) -> anyhow::Result<()> {
        wait_ready(&self.case.client, &self.case.url).await
    }

    /// Push the same rows to two streams; they must be answered from now on.
    async fn push(&mut self, rows: &[(i64, String)]) -> anyhow::Result<()> {
        for job in ["alpha", "beta"] {
            let lines: Vec<(i64, String)> = rows
                .iter()
                .map(|(t, l)| (*t, format!("{job} {l}")))
                .collect();
            self.case.push(job, &lines).await?;
            self.expected.extend(lines.into_iter().map(|(_, l)| l));
        }
        Ok(())
    }

    async fn check(&self, when: &str) -> anyhow::Result<()> {
        let got = self.case.lines().await?;
        anyhow::ensure!(
            got == self.expected,
            "{when}: {} lines answered, {} acknowledged; missing {:?}, unexpected {:?}",
            got.len(),
            self.expected.len(),
            self.expected.difference(&got).take(3).collect::<Vec<_>>(),
            got.difference(&self.expected).take(3).collect::<Vec<_>>()
        );
        Ok(())
    }

    /// Wait until `done` holds for the manifest and the files on disk.
    async fn settle(
        &self,
        what: &str,
        done: impl Fn(&Value, &BTreeSet<PathBuf>) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = manifest(&self.data)?;
            let disk = on_disk(&self.data);
            if done(&m, &disk) {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{what} never settled: manifest {m}, on disk {disk:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The server aborts at `point` during the first flush of the pushed rows.
async fn flush_case(point: &str) -> anyhow::Result<()> {
    let mut run = Run::new(
        "auth_enabled: false\n\
         limits_config:\n  max_entries_limit_per_query: 100000\n  discover_log_levels: false\n\
         storage:\n  compaction:\n    enabled: false\n",
    )?;
    let (a, b) = rows(run.case.first_ns);
    let mut child = run.spawn(Some(point))?;
    run.ready().await?;
    run.push(&a).await?;
    run.push(&b).await?;
    run.check("before the flush").await?;
    // The process aborts while answering; only the restart tells.
    let _ = run.case.flush().await;
    anyhow::ensure!(
        wait_exit(&mut child, Duration::from_secs(20))?,
        "the server never reached fault point {point}"
    );

    let mut child = run.spawn(None)?;
    run.ready().await?;
    run.check(&format!("after the crash at {point}")).await?;
    run.case.flush().await?;
    run.check(&format!("after flushing again ({point})"))
        .await?;
    // What a crashed flush wrote and never listed is gone, at start-up.
    let m = manifest(&run.data)?;
    let (files, _) = listed(&m);
    anyhow::ensure!(
        on_disk(&run.data) == files,
        "after {point}: files on disk {:?}, listed {files:?}",
        on_disk(&run.data)
    );
    anyhow::ensure!(!files.is_empty(), "nothing listed after {point}");
    sigterm(&mut child)?;
    verify(&run.data)?;

    // Answered from the chunk files alone: the WAL is empty after the graceful stop.
    let mut child = run.spawn(None)?;
    run.ready().await?;
    run.check(&format!("from the chunk files ({point})"))
        .await?;
    sigterm(&mut child)?;
    Ok(())
}

/// The server aborts at `point` while compacting a window of two flushed files.
async fn compaction_case(point: &str) -> anyhow::Result<()> {
    let mut run = Run::new(
        "auth_enabled: false\n\
         limits_config:\n  max_entries_limit_per_query: 100000\n  discover_log_levels: false\n\
         storage:\n  compaction:\n    min_age: 2s\n    check_interval: 200ms\n    delete_delay: 0s\n",
    )?;
    let (a, b) = rows(run.case.first_ns);
    let mut child = run.spawn(Some(point))?;
    run.ready().await?;
    run.push(&a).await?;
    run.case.flush().await?;
    run.push(&b).await?;
    // Both flushes land within `min_age`, so the compactor merges two files per window.
    let _ = run.case.flush().await;
    let _ = run.check("before the compaction").await;
    anyhow::ensure!(
        wait_exit(&mut child, Duration::from_secs(30))?,
        "the server never reached fault point {point}"
    );

    let mut child = run.spawn(None)?;
    run.ready().await?;
    run.check(&format!("after the crash at {point}")).await?;
    // The compactor finishes: every listed file is compacted, the inputs are deleted and
    // nothing unlisted is left.
    run.settle(&format!("compaction after {point}"), |m, disk| {
        let (files, pending) = listed(m);
        let compacted = m["chunks"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["compacted"] == true));
        compacted && pending == 0 && !files.is_empty() && *disk == files
    })
    .await?;
    run.check(&format!("after compaction ({point})")).await?;
    sigterm(&mut child)?;
    verify(&run.data)?;
    let mut child = run.spawn(None)?;
    run.ready().await?;
    run.check(&format!("after a restart ({point})")).await?;
    sigterm(&mut child)?;
    Ok(())
}

mod flush {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_after_a_chunk_file_is_written() -> anyhow::Result<()> {
        flush_case("flush.after_chunk_put").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_after_the_label_objects() -> anyhow::Result<()> {
        flush_case("flush.after_streams_log").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_before_the_label_index_commits() -> anyhow::Result<()> {
        flush_case("index.before_commit").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_after_the_label_index_commits() -> anyhow::Result<()> {
        flush_case("index.after_commit").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_after_the_chain_entry() -> anyhow::Result<()> {
        flush_case("flush.after_chain").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_after_the_manifest_edit() -> anyhow::Result<()> {
        flush_case("flush.after_manifest").await
    }
}

mod compaction {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_after_a_needle_index_is_written() -> anyhow::Result<()> {
        compaction_case("compact.after_index_put").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_after_the_outputs_are_written() -> anyhow::Result<()> {
        compaction_case("compact.after_output_put").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_after_the_chain_entry() -> anyhow::Result<()> {
        compaction_case("compact.after_chain").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_after_the_manifest_edit() -> anyhow::Result<()> {
        compaction_case("compact.after_manifest").await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn crash_after_the_inputs_are_deleted() -> anyhow::Result<()> {
        compaction_case("compact.after_input_delete").await
    }
}
