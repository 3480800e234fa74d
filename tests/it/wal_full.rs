//! The write-ahead log's disk fills up: pushes are refused with a retryable 503 that says
//! so, the server keeps answering, nothing acknowledged is lost, no torn frame is left in
//! the WAL, and ingest resumes by itself once space returns. The disk is a 16 MiB tmpfs the
//! test mounts (as root, which CI is).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tovlog_storage::config::{ByteSize, HumanDuration, WalConfig};
use tovlog_storage::wal::Wal;

use crate::server::{conformance_config, TestServer};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(dir)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "cannot mount a tmpfs (the test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A push of `lines` lines of about 1 KB each, batch `batch`.
fn push_body(batch: usize, lines: usize) -> Vec<u8> {
    let base: i64 = 1_763_596_800_000_000_000;
    let pad = "x".repeat(1000);
    let values: Vec<serde_json::Value> = (0..lines)
        .map(|i| {
            let ts = base + ((batch * lines + i) as i64) * 1_000_000;
            serde_json::json!([ts.to_string(), format!("batch {batch} line {i} {pad}")])
        })
        .collect();
    serde_json::json!({"streams": [{"stream": {"job": "wal"}, "values": values}]})
        .to_string()
        .into_bytes()
}

/// Fill the filesystem of `path` with one file until a write fails, then give back `keep`
/// bytes of it.
fn fill(path: &Path, keep: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let block = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    while f.write_all(&block).is_ok() {
        written += block.len() as u64;
    }
    f.set_len(written.saturating_sub(keep))?;
    f.sync_all()?;
    Ok(())
}

/// Push batch `batch` of `lines` lines: status and body.
async fn push(s: &TestServer, batch: usize, lines: usize) -> anyhow::Result<(u16, String)> {
    s.post(
        "/loki/api/v1/push",
        push_body(batch, lines),
        &[("content-type", "application/json")],
    )
    .await
}

async fn count(s: &TestServer) -> anyhow::Result<u64> {
    let params = [
        (
            "query".to_string(),
            r#"sum(count_over_time({job="wal"}[1h]))"#.to_string(),
        ),
        ("time".to_string(), "1763598600000000000".to_string()),
    ];
    let (status, body) = s.get("/loki/api/v1/query", &params, &[]).await?;
    anyhow::ensure!(status == 200, "query: {status} {body}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    Ok(v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|x| x.parse().ok())
        .unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_wal_disk_refuses_pushes_then_resumes_and_loses_nothing() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let disk = tmp.path().join("disk");
    let _mount = Tmpfs::mount(&disk, "16m")?;
    let data = disk.join("data");
    let mut config = conformance_config()?;
    config.storage.compaction.enabled = false;
    // Everything stays in the head and the WAL while the disk is full.
    config.storage.head.max_age = HumanDuration(Duration::from_secs(3600));
    config.storage.head.max_bytes = ByteSize(1 << 30);
    let mut server = TestServer::start_in(config.clone(), &data).await?;
    let filler = disk.join("filler");
    fill(&filler, 2 << 20)?;

    // Push 100 KB at a time until the disk is full.
    let lines = 100;
    let mut acked = 0u64;
    let mut batch = 0;
    let refused = loop {
        anyhow::ensure!(batch < 200, "2 MiB never filled up");
        let (status, body) = push(&server, batch, lines).await?;
        batch += 1;
        if status == 204 {
            acked += lines as u64;
        } else {
            break (status, body);
        }
    };
    assert_eq!(refused.0, 503, "{}", refused.1);
    assert!(refused.1.contains("disk full"), "{}", refused.1);
    assert!(acked > 0, "the first pushes fit");
    // Still full: refused again, and the server goes on answering with what it has.
    let (status, _) = push(&server, batch, lines).await?;
    assert_eq!(status, 503);
    batch += 1;
    assert_eq!(server.get("/ready", &[], &[]).await?.0, 200);
    assert_eq!(
        count(&server).await?,
        acked,
        "refused pushes are not in the head"
    );

    // Space returns: ingest resumes without a restart.
    std::fs::remove_file(&filler)?;
    for _ in 0..5 {
        let (status, body) = push(&server, batch, lines).await?;
        assert_eq!(status, 204, "{body}");
        acked += lines as u64;
        batch += 1;
    }
    assert_eq!(count(&server).await?, acked);

    // The WAL holds exactly the acknowledged pushes, with no torn frame between them.
    let copy = tmp.path().join("wal-copy");
    std::fs::create_dir_all(&copy)?;
    for e in std::fs::read_dir(data.join("wal"))? {
        let e = e?;
        std::fs::copy(e.path(), copy.join(e.file_name()))?;
    }
    let mut replayed = 0u64;
    let (wal, stats) = Wal::open(&copy, &WalConfig::default(), |_, _, streams| {
        replayed += streams.iter().map(|s| s.entries.len() as u64).sum::<u64>();
        Ok(())
    })?;
    drop(wal);
    assert_eq!(stats.truncated, 0, "{stats:?}");
    assert_eq!(replayed, acked);

    // And after a restart every acknowledged line is there.
    server.stop().await?;
    let mut server = TestServer::start_in(config, &data).await?;
    assert_eq!(count(&server).await?, acked);
    server.stop().await?;
    Ok(())
}
