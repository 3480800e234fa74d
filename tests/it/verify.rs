//! `tovlog verify` and `tovlog chain-head` run as an operator runs them: the real binary on
//! the data directory a real server wrote (the conformance dataset pushed over HTTP, flushed,
//! compacted, then a restart and one more flush). Clean data verifies; each kind of tampering
//! on a copy of the directory is named and fails the run; a recorded head proves the history
//! was not rewritten since.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tovlog_storage::chain::ChainEntry;

use crate::server::{conformance_config, TestServer};

/// An exit code and the output of one run of the binary.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Run `tovlog <args> --data-dir <data>` without configuration from the environment.
pub(crate) fn tovlog(args: &[&str], data: &Path) -> anyhow::Result<Run> {
    let out = Command::new(env!("CARGO_BIN_EXE_tovlog"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("TOVLOG_CONFIG")
        .env_remove("TOVLOG_DATA_DIR")
        .output()?;
    Ok(Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `verify` must fail, naming `kind` and every one of `words`.
fn assert_break(run: &Run, kind: &str, words: &[&str]) {
    assert_eq!(
        run.code, 1,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(
        run.stderr.contains(&format!("INTEGRITY BREAK: {kind}")),
        "expected a {kind} break: {}",
        run.stderr
    );
    for w in words {
        assert!(run.stderr.contains(w), "expected {w:?} in: {}", run.stderr);
    }
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}

pub(crate) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// The tenant directory of the local chunk store.
pub(crate) fn tenant(data: &Path) -> PathBuf {
    data.join("chunks").join("fake")
}

pub(crate) fn read_json(path: &Path) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(&std::fs::read(path)?)?)
}

fn write_json(path: &Path, v: &impl serde::Serialize) -> anyhow::Result<()> {
    Ok(std::fs::write(path, serde_json::to_vec(v)?)?)
}

fn entry_path(data: &Path, seq: u64) -> PathBuf {
    tenant(data).join("chain").join(format!("{seq:020}.json"))
}

fn entry(data: &Path, seq: u64) -> anyhow::Result<ChainEntry> {
    Ok(serde_json::from_slice(&std::fs::read(entry_path(
        data, seq,
    ))?)?)
}

/// The paths of the chunk files the manifest lists.
fn listed(data: &Path) -> anyhow::Result<Vec<String>> {
    let m = read_json(&tenant(data).join("manifest.json"))?;
    Ok(m["chunks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["path"].as_str().map(str::to_string))
        .collect())
}

/// A data directory written by a real server: the dataset flushed and compacted, then,
/// after a restart without compaction, one more flushed push.
async fn populated(dir: &Path) -> anyhow::Result<()> {
    let mut config = conformance_config()?;
    config.storage.compaction.min_age = tovlog_storage::config::HumanDuration(Duration::ZERO);
    config.storage.compaction.check_interval =
        tovlog_storage::config::HumanDuration(Duration::from_millis(200));
    let mut server = TestServer::start_in(config, dir).await?;
    server.push_dataset().await?;
    let (status, body) = server.post("/flush", Vec::new(), &[]).await?;
    anyhow::ensure!(status < 300, "flush: {status} {body}");
    let mut compacted = false;
    for _ in 0..300 {
        let (_, metrics) = server.get("/metrics", &[], &[]).await?;
        if metric(&metrics, "tovlog_chunk_files") > 0.0
            && metric(&metrics, "tovlog_chunk_files_uncompacted") == 0.0
        {
            compacted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await?;
    anyhow::ensure!(compacted, "flushed files were not compacted within 30 s");

    let mut config = conformance_config()?;
    config.storage.compaction.enabled = false;
    let mut server = TestServer::start_in(config, dir).await?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let body = json!({"streams": [{"stream": {"job": "verify"},
        "values": [[now.as_nanos().to_string(), "after the restart"]]}]});
    let (status, text) = server
        .post(
            "/loki/api/v1/push",
            serde_json::to_vec(&body)?,
            &[("content-type", "application/json")],
        )
        .await?;
    anyhow::ensure!(status == 204, "push: {status} {text}");
    let (status, text) = server.post("/flush", Vec::new(), &[]).await?;
    anyhow::ensure!(status < 300, "flush: {status} {text}");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_on_real_data_and_names_each_kind_of_tampering() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let data = root.path().join("data");
    populated(&data).await?;

    // Clean.
    let run = tovlog(&["verify"], &data)?;
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(run.stdout.contains("verified: 1 tenants"), "{}", run.stdout);
    assert!(run.stdout.contains("no break"), "{}", run.stdout);

    // The chain holds the flushes and compactions, and the head is the manifest's.
    let manifest = read_json(&tenant(&data).join("manifest.json"))?;
    let head_seq = manifest["chain"]["seq"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no chain head in {manifest}"))?;
    let head_hash = manifest["chain"]["hash"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let entries: Vec<ChainEntry> = (0..=head_seq)
        .map(|s| entry(&data, s))
        .collect::<anyhow::Result<_>>()?;
    assert!(entries.iter().any(|e| e
        .removed
        .iter()
        .any(|r| r.reason.starts_with("compaction: merged into"))));
    let last = entries
        .last()
        .ok_or_else(|| anyhow::anyhow!("empty chain"))?;
    assert_eq!(last.hash, head_hash);
    assert!(last.removed.is_empty() && !last.added.is_empty());

    // chain-head prints TENANT=HASH; it and any earlier entry are accepted as expected heads.
    let run = tovlog(&["chain-head"], &data)?;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let line = format!("fake={head_hash}\tentry {head_seq}");
    assert!(run.stdout.lines().any(|l| l == line), "{}", run.stdout);
    let expect = format!("fake={head_hash}");
    assert_eq!(
        tovlog(&["verify", "--expect-head", &expect], &data)?.code,
        0
    );
    let older = format!("fake={}", entries[0].hash);
    assert_eq!(tovlog(&["verify", "--expect-head", &older], &data)?.code, 0);
    let bogus = format!("fake={}", "ab".repeat(32));
    let run = tovlog(&["verify", "--expect-head", &bogus], &data)?;
    assert_break(
        &run,
        "history rewritten",
        &["expected head", &"ab".repeat(32)],
    );

    let files = listed(&data)?;
    assert!(files.len() >= 2, "{files:?}");
    let chunk = |d: &Path, i: usize| d.join("chunks").join(&files[i]);
    let mut case = 0;
    let mut fresh = || -> anyhow::Result<PathBuf> {
        case += 1;
        let copy = root.path().join(format!("case{case}"));
        copy_dir(&data, &copy)?;
        Ok(copy)
    };

    // (a) Bytes flipped in a chunk file.
    let d = fresh()?;
    let mut bytes = std::fs::read(chunk(&d, 0))?;
    let at = bytes.len() / 2;
    bytes[at] = !bytes[at];
    std::fs::write(chunk(&d, 0), &bytes)?;
    assert_break(
        &tovlog(&["verify"], &d)?,
        "file modified",
        &[&files[0], "SHA-256 mismatch"],
    );

    // (b) A chunk file replaced by another valid one.
    let d = fresh()?;
    std::fs::copy(chunk(&d, 1), chunk(&d, 0))?;
    assert_break(
        &tovlog(&["verify"], &d)?,
        "file modified",
        &[&files[0], "SHA-256 mismatch"],
    );

    // (c) A chunk file deleted.
    let d = fresh()?;
    std::fs::remove_file(chunk(&d, 0))?;
    assert_break(&tovlog(&["verify"], &d)?, "file missing", &[&files[0]]);

    // (d) A file's hash changed in history: the entry no longer matches its own hash...
    let d = fresh()?;
    let mut e0 = entry(&d, 0)?;
    e0.added[0].sha256 = "00".repeat(32);
    write_json(&entry_path(&d, 0), &e0)?;
    assert_break(
        &tovlog(&["verify"], &d)?,
        "history rewritten",
        &["chain entry 0", "altered"],
    );
    // ...and with its own hash recomputed, the next entry's link breaks.
    e0.hash = e0.compute_hash()?;
    write_json(&entry_path(&d, 0), &e0)?;
    assert_break(
        &tovlog(&["verify"], &d)?,
        "history rewritten",
        &["link broken at entry 1"],
    );

    // (e) A chain entry removed.
    let d = fresh()?;
    std::fs::remove_file(entry_path(&d, 1))?;
    assert_break(
        &tovlog(&["verify"], &d)?,
        "history rewritten",
        &["chain entry 1", "missing"],
    );

    // (e) The manifest rewritten to drop a file, its chain left alone.
    let d = fresh()?;
    let mut m = read_json(&tenant(&d).join("manifest.json"))?;
    if let Some(chunks) = m["chunks"].as_array_mut() {
        chunks.remove(0);
    }
    write_json(&tenant(&d).join("manifest.json"), &m)?;
    assert_break(
        &tovlog(&["verify"], &d)?,
        "manifest rewritten",
        &[&files[0]],
    );

    // (e) A consistent rewrite: the last flush's files dropped from the manifest together
    // with its chain entry, the head moved back. Only the head recorded earlier reveals it.
    let d = fresh()?;
    let mut m = read_json(&tenant(&d).join("manifest.json"))?;
    let dropped: Vec<&str> = last.added.iter().map(|f| f.path.as_str()).collect();
    if let Some(chunks) = m["chunks"].as_array_mut() {
        chunks.retain(|c| !dropped.contains(&c["path"].as_str().unwrap_or_default()));
    }
    let prev = &entries[entries.len() - 2];
    m["chain"] = json!({"seq": prev.seq, "hash": prev.hash});
    write_json(&tenant(&d).join("manifest.json"), &m)?;
    std::fs::remove_file(entry_path(&d, head_seq))?;
    for f in &dropped {
        std::fs::remove_file(d.join("chunks").join(f))?;
    }
    let run = tovlog(&["verify"], &d)?;
    assert_eq!(
        run.code, 0,
        "a consistent rewrite verifies alone: {}",
        run.stderr
    );
    let run = tovlog(&["verify", "--expect-head", &expect], &d)?;
    assert_break(&run, "history rewritten", &["expected head", &head_hash]);
    Ok(())
}
