//! Crash safety with a real child process: a `tovlog` binary takes concurrent pushes, is killed
//! with SIGKILL mid-stream, restarts on the same data directory, and every entry whose push was
//! acknowledged is there exactly once. Then a SIGTERM must shut it down cleanly (exit 0).

use std::{
    collections::{BTreeMap, HashSet},
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{json, Value};

use crate::server::{free_port, spawn, wait_ready};

const T0: i64 = 1_763_596_800_000_000_000;

/// All lines of `{job="crash"}`, with how often each was returned.
async fn read_back(client: &reqwest::Client, url: &str) -> anyhow::Result<BTreeMap<String, usize>> {
    let resp = client
        .get(format!("{url}/loki/api/v1/query_range"))
        .query(&[
            ("query", "{job=\"crash\"}"),
            ("start", &T0.to_string()),
            ("end", &(T0 + 3_600_000_000_000).to_string()),
            ("limit", "1000000"),
            ("direction", "forward"),
        ])
        .send()
        .await?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    anyhow::ensure!(status.is_success(), "query failed: {status} {body}");
    let mut seen = BTreeMap::new();
    for s in body["data"]["result"].as_array().into_iter().flatten() {
        for v in s["values"].as_array().into_iter().flatten() {
            *seen
                .entry(v[1].as_str().unwrap_or("").to_string())
                .or_insert(0) += 1;
        }
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_pushes_survive_sigkill_exactly_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("tovlog.yaml");
    std::fs::write(
        &config,
        "auth_enabled: false\nlimits_config:\n  ingestion_rate_mb: 10000\n  ingestion_burst_size_mb: 10000\n  max_entries_limit_per_query: 1000000\n  discover_log_levels: false\n",
    )?;
    let data = dir.path().join("data");
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut child = spawn(&config, &data, port)?;
    wait_ready(&client, &url).await?;

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..4 {
        let (client, url, acked) = (client.clone(), url.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for b in 0..100_000u64 {
                let lines: Vec<String> = (0..20).map(|e| format!("client-{c} batch-{b} entry-{e}")).collect();
                let values: Vec<Value> = lines
                    .iter()
                    .enumerate()
                    .map(|(e, l)| json!([(T0 + (b as i64) * 1000 + (e as i64) * 10 + c).to_string(), l]))
                    .collect();
                let body = json!({"streams": [{"stream": {"job": "crash", "client": c.to_string()}, "values": values}]});
                match client.post(format!("{url}/loki/api/v1/push")).json(&body).send().await {
                    Ok(r) if r.status().as_u16() == 204 => {
                        if let Ok(mut a) = acked.lock() {
                            a.extend(lines);
                        }
                    }
                    _ => break, // the server died: this batch was never acknowledged
                }
            }
        }));
    }
    // Let the clients run, then kill the server mid-stream.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill()?;
    child.wait()?;
    for t in tasks {
        t.await?;
    }
    let acked: Vec<String> = acked.lock().map(|a| a.clone()).unwrap_or_default();
    anyhow::ensure!(
        acked.len() >= 200,
        "too few acknowledged entries before the kill: {}",
        acked.len()
    );

    let mut child = spawn(&config, &data, port)?;
    wait_ready(&client, &url).await?;
    let seen = read_back(&client, &url).await?;
    let missing: Vec<&String> = acked
        .iter()
        .filter(|l| !seen.contains_key(*l))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged entries lost, e.g. {missing:?}",
        acked.iter().filter(|l| !seen.contains_key(*l)).count()
    );
    let doubled: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        doubled.is_empty(),
        "entries returned more than once: {doubled:?}"
    );
    let acked_set: HashSet<&String> = acked.iter().collect();
    assert!(seen.len() >= acked_set.len());

    // Graceful stop: SIGTERM flushes and exits 0; a third start still has everything once.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let status = child.wait()?;
    assert!(status.success(), "SIGTERM exit status {status}");
    let mut child = spawn(&config, &data, port)?;
    wait_ready(&client, &url).await?;
    let again = read_back(&client, &url).await?;
    assert_eq!(again, seen, "a graceful restart changed the data");
    child.kill()?;
    child.wait()?;
    Ok(())
}
