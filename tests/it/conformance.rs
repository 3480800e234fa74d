//! The Loki oracle in `cargo test`: push the conformance dataset (or replay the captured Promtail
//! requests) into a real server started with `tests/conformance/tovlog.yaml`, replay every
//! recorded request over HTTP and compare with Loki's answer.
//!
//! `tests/conformance/known-failures.txt` lists case ids that are known not to match yet, one per
//! line with the reason after `#`. A listed case that starts passing fails the test too, so the
//! list only shrinks. The expected answers themselves are never edited.

use std::{collections::BTreeSet, path::Path};

use crate::{
    compare::{compare, Case},
    server::{conformance_config, TestServer},
};

pub(crate) fn conformance_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

fn known_failures() -> anyhow::Result<BTreeSet<String>> {
    let path = conformance_dir().join("known-failures.txt");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.into()),
    };
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

#[allow(clippy::print_stderr)]
pub(crate) async fn run_cases(server: &TestServer, cases: &[Case]) -> anyhow::Result<()> {
    let known = known_failures()?;
    let (mut passed, mut failed) = (0, 0);
    let mut unexpected = Vec::new();
    let mut fixed = Vec::new();
    for case in cases {
        let params: Vec<(String, String)> = case
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let headers: Vec<(String, String)> = case
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (status, body) = server.get(&case.path, &params, &headers).await?;
        match compare(case, status, &body) {
            Ok(()) => {
                passed += 1;
                if known.contains(&case.id) {
                    fixed.push(case.id.clone());
                }
            }
            Err(why) => {
                failed += 1;
                eprintln!("FAIL {} [{}]: {why}", case.id, case.category);
                if !known.contains(&case.id) {
                    unexpected.push(format!("{}: {why}", case.id));
                }
            }
        }
    }
    eprintln!("conformance: {passed} passed, {failed} failed");
    anyhow::ensure!(
        unexpected.is_empty(),
        "cases that must pass failed:\n{}",
        unexpected.join("\n")
    );
    anyhow::ensure!(
        fixed.is_empty(),
        "cases listed in known-failures.txt now pass; remove them from the list: {fixed:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_goldens_match() -> anyhow::Result<()> {
    let mut server = TestServer::start(conformance_config()?).await?;
    server.push_dataset().await?;
    let cases: Vec<Case> =
        serde_json::from_slice(&std::fs::read(conformance_dir().join("loki-goldens.json"))?)?;
    anyhow::ensure!(
        cases.len() >= 159,
        "expected the 159 recorded cases, found {}",
        cases.len()
    );
    let result = run_cases(&server, &cases).await;
    server.stop().await?;
    result
}

/// The same answers once the data left the head: after a flush (chunk files written by the
/// flusher) and again once the compactor rewrote them. Label, series and volume answers come
/// from the manifest and index there, not from the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_goldens_match_over_flushed_and_compacted_chunks() -> anyhow::Result<()> {
    let mut config = conformance_config()?;
    config.storage.compaction.min_age =
        tovlog_storage::config::HumanDuration(std::time::Duration::ZERO);
    config.storage.compaction.check_interval =
        tovlog_storage::config::HumanDuration(std::time::Duration::from_millis(200));
    let mut server = TestServer::start(config).await?;
    server.push_dataset().await?;
    let (status, body) = server.post("/flush", Vec::new(), &[]).await?;
    anyhow::ensure!(status < 300, "flush: {status} {body}");
    let cases: Vec<Case> =
        serde_json::from_slice(&std::fs::read(conformance_dir().join("loki-goldens.json"))?)?;
    let flushed = run_cases(&server, &cases).await;
    // Wait for the compactor to rewrite every flushed file.
    let mut compacted = false;
    for _ in 0..300 {
        let (_, metrics) = server.get("/metrics", &[], &[]).await?;
        let files = metric(&metrics, "tovlog_chunk_files");
        if files > 0.0 && metric(&metrics, "tovlog_chunk_files_uncompacted") == 0.0 {
            compacted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let result = if compacted {
        run_cases(&server, &cases).await
    } else {
        Err(anyhow::anyhow!(
            "flushed files were not compacted within 30 s"
        ))
    };
    server.stop().await?;
    flushed?;
    result
}

/// The value of an unlabelled metric in Prometheus text (NaN when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// Replay the requests captured from a real Promtail, byte for byte, with their headers.
pub async fn replay_promtail(server: &TestServer) -> anyhow::Result<usize> {
    let dir = conformance_dir().join("promtail");
    let mut n = 0;
    for i in 1.. {
        let bin = dir.join(format!("req-{i:03}.bin"));
        if !bin.exists() {
            break;
        }
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("req-{i:03}.json")))?)?;
        let mut headers = Vec::new();
        for (k, v) in meta["headers"].as_object().into_iter().flatten() {
            if [
                "content-type",
                "content-encoding",
                "x-scope-orgid",
                "user-agent",
            ]
            .contains(&k.to_ascii_lowercase().as_str())
            {
                headers.push((k.clone(), v.as_str().unwrap_or("").to_string()));
            }
        }
        let hdrs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let path = meta["path"].as_str().unwrap_or("/loki/api/v1/push");
        let (status, body) = server.post(path, std::fs::read(&bin)?, &hdrs).await?;
        anyhow::ensure!(
            status == 204,
            "replay of {} failed: {status} {body}",
            bin.display()
        );
        n += 1;
    }
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtail_goldens_match() -> anyhow::Result<()> {
    let mut server = TestServer::start(conformance_config()?).await?;
    let n = replay_promtail(&server).await?;
    anyhow::ensure!(
        n == 3,
        "expected 3 captured Promtail requests, replayed {n}"
    );
    let cases: Vec<Case> = serde_json::from_slice(&std::fs::read(
        conformance_dir().join("promtail/goldens.json"),
    )?)?;
    let result = run_cases(&server, &cases).await;
    server.stop().await?;
    result
}
