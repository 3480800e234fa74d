//! Damaged files on a real server's data directory, damaged as a disk or an operator would:
//! 64 bytes zeroed in the middle of a flushed chunk file, a chunk file cut in half before
//! the compactor reads it, bytes flipped in a compacted file's block index. Each is found by
//! its SHA-256, quarantined (kept aside, unlisted, counted, recorded in the hash chain), and
//! queries answer from everything else, saying in their warnings what they lack.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tovlog_storage::config::HumanDuration;

use crate::server::{conformance_config, TestServer};
use crate::verify::{metric, read_json, tenant, tovlog};

const HOUR_NS: i64 = 3_600_000_000_000;
const COUNT_BY_JOB: &str = r#"sum by (job) (count_over_time({job=~".+"}[1h]))"#;

/// A chunk file as the manifest lists it.
#[derive(Debug, Clone)]
struct Listed {
    path: String,
    rows: u64,
    min_ts: i64,
    max_ts: i64,
    index: bool,
}

fn listed(data: &Path) -> anyhow::Result<Vec<Listed>> {
    let m = read_json(&tenant(data).join("manifest.json"))?;
    let mut out: Vec<Listed> = m["chunks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| Listed {
            path: c["path"].as_str().unwrap_or_default().to_string(),
            rows: c["rows"].as_u64().unwrap_or(0),
            min_ts: c["min_ts"].as_i64().unwrap_or(0),
            max_ts: c["max_ts"].as_i64().unwrap_or(0),
            index: c["text_index_bytes"].is_u64(),
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn object(data: &Path, path: &str) -> PathBuf {
    data.join("chunks").join(path)
}

/// `[start, end]` of hourly steps whose windows `(t − 1h, t]` cover every listed row.
fn hours(files: &[Listed]) -> (i64, i64) {
    let min = files.iter().map(|f| f.min_ts).min().unwrap_or(0);
    let max = files.iter().map(|f| f.max_ts).max().unwrap_or(0);
    (
        min.div_euclid(HOUR_NS) * HOUR_NS,
        (max.div_euclid(HOUR_NS) + 1) * HOUR_NS,
    )
}

/// A range query: status and body.
async fn range(
    s: &TestServer,
    query: &str,
    (start, end): (i64, i64),
) -> anyhow::Result<(u16, Value)> {
    let params = [
        ("query", query.to_string()),
        ("start", start.to_string()),
        ("end", end.to_string()),
        ("step", "3600".to_string()),
        ("limit", "100000".to_string()),
    ]
    .map(|(k, v)| (k.to_string(), v));
    let (status, body) = s.get("/loki/api/v1/query_range", &params, &[]).await?;
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    Ok((status, v))
}

/// The sum of every sample of a matrix.
fn total(v: &Value) -> f64 {
    v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["values"].as_array().into_iter().flatten())
        .filter_map(|p| p[1].as_str()?.parse::<f64>().ok())
        .sum()
}

/// Samples `(job, step, value)` of a matrix at steps for which `keep` holds.
fn samples(v: &Value, keep: impl Fn(i64) -> bool) -> Vec<(String, i64, String)> {
    let mut out = Vec::new();
    for s in v["data"]["result"].as_array().into_iter().flatten() {
        let job = s["metric"]["job"].as_str().unwrap_or_default().to_string();
        for p in s["values"].as_array().into_iter().flatten() {
            let t = p[0].as_i64().unwrap_or(0);
            if keep(t) {
                out.push((job.clone(), t, p[1].as_str().unwrap_or("").to_string()));
            }
        }
    }
    out.sort();
    out
}

fn warnings(v: &Value) -> Vec<String> {
    v["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str().map(str::to_string))
        .collect()
}

/// Every series of `{job=~".+"}` in `span`, as JSON texts, sorted.
async fn series(s: &TestServer, span: (i64, i64)) -> anyhow::Result<Vec<String>> {
    let params = [
        ("match[]".to_string(), r#"{job=~".+"}"#.to_string()),
        ("start".to_string(), span.0.to_string()),
        ("end".to_string(), span.1.to_string()),
    ];
    let (status, body) = s.get("/loki/api/v1/series", &params, &[]).await?;
    anyhow::ensure!(status == 200, "series: {status} {body}");
    let v: Value = serde_json::from_str(&body)?;
    let mut all: Vec<String> = v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(Value::to_string)
        .collect();
    all.sort();
    Ok(all)
}

async fn metrics(s: &TestServer) -> anyhow::Result<String> {
    Ok(s.get("/metrics", &[], &[]).await?.1)
}

async fn flush(s: &TestServer) -> anyhow::Result<()> {
    let (status, body) = s.post("/flush", Vec::new(), &[]).await?;
    anyhow::ensure!(status < 300, "flush: {status} {body}");
    Ok(())
}

/// Wait up to 60 s for `done` over the server's metrics.
async fn wait_metrics(
    s: &TestServer,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    for _ in 0..600 {
        if done(&metrics(s).await?) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{what} within 60 s; metrics:\n{}", metrics(s).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_chunk_file_is_quarantined_and_queries_say_what_they_lack() -> anyhow::Result<()>
{
    let mut config = conformance_config()?;
    config.storage.compaction.enabled = false;
    let mut server = TestServer::start(config.clone()).await?;
    let data = server.data_dir.clone();
    server.push_dataset().await?;
    flush(&server).await?;
    let files = listed(&data)?;
    anyhow::ensure!(files.len() >= 2, "expected several chunk files: {files:?}");
    let all_rows: u64 = files.iter().map(|f| f.rows).sum();
    let span = hours(&files);
    let (status, before) = range(&server, COUNT_BY_JOB, span).await?;
    assert_eq!(status, 200, "{before}");
    assert_eq!(
        total(&before),
        all_rows as f64,
        "every flushed row is counted once"
    );
    assert!(warnings(&before).is_empty(), "{before}");

    // 64 zero bytes in the middle of the first file.
    let victim = files[0].clone();
    let path = object(&data, &victim.path);
    let mut bytes = std::fs::read(&path)?;
    let mid = bytes.len() / 2;
    bytes[mid..mid + 64].fill(0);
    std::fs::write(&path, &bytes)?;

    let (status, after) = range(&server, COUNT_BY_JOB, span).await?;
    assert_eq!(status, 200, "{after}");
    assert_eq!(total(&after), (all_rows - victim.rows) as f64, "{after}");
    // Steps whose windows do not reach the victim's rows are as before.
    let outside = |t: i64| {
        let t = t * 1_000_000_000;
        t < victim.min_ts || t - HOUR_NS >= victim.max_ts
    };
    assert_eq!(samples(&after, outside), samples(&before, outside));
    let w = warnings(&after);
    assert_eq!(w.len(), 1, "{after}");
    assert!(
        w[0].contains(&victim.path)
            && w[0].contains("SHA-256")
            && w[0].contains(&victim.rows.to_string()),
        "{}",
        w[0]
    );

    // Counted, unlisted, kept as found.
    let m = metrics(&server).await?;
    assert_eq!(metric(&m, "tovlog_chunk_files_quarantined_total"), 1.0);
    assert_eq!(metric(&m, "tovlog_chunk_files_quarantined"), 1.0);
    let now = listed(&data)?;
    assert!(now.iter().all(|f| f.path != victim.path), "{now:?}");
    let manifest = read_json(&tenant(&data).join("manifest.json"))?;
    assert_eq!(
        manifest["quarantined"][0]["chunk"]["path"],
        victim.path.as_str()
    );
    let kept = manifest["quarantined"][0]["kept_at"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(kept.contains("/quarantine/"), "{manifest}");
    assert_eq!(std::fs::read(object(&data, &kept))?, bytes);

    // A query that reads only other files has nothing to say; one over the victim's
    // time says it, log queries too.
    let other = now
        .iter()
        .find(|f| f.min_ts > victim.max_ts || f.max_ts < victim.min_ts)
        .ok_or_else(|| anyhow::anyhow!("no file apart from the victim: {now:?}"))?;
    let logs = r#"{job=~".+"}"#;
    let (status, v) = range(&server, logs, (other.min_ts, other.max_ts + 1)).await?;
    assert_eq!(status, 200);
    assert!(warnings(&v).is_empty(), "{}", v["warnings"]);
    let (status, v) = range(&server, logs, (victim.min_ts, victim.max_ts + 1)).await?;
    assert_eq!(status, 200);
    assert_eq!(warnings(&v).len(), 1, "{}", v["warnings"]);

    // After a restart the quarantine holds and is still reported; the chain verifies.
    server.stop().await?;
    let _dir = server.take_dir();
    let mut server = TestServer::start_in(config, &data).await?;
    let (status, again) = range(&server, COUNT_BY_JOB, span).await?;
    assert_eq!(status, 200);
    assert_eq!(samples(&again, |_| true), samples(&after, |_| true));
    assert_eq!(warnings(&again), w);
    server.stop().await?;
    let run = tovlog(&["verify"], &data)?;
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compactor_quarantines_a_truncated_file_and_unlists_a_damaged_index(
) -> anyhow::Result<()> {
    let mut config = conformance_config()?;
    // Long enough to cut a flushed file before the compactor reads it.
    config.storage.compaction.min_age = HumanDuration(Duration::from_secs(3));
    config.storage.compaction.check_interval = HumanDuration(Duration::from_millis(200));
    config.storage.compaction.delete_delay = HumanDuration(Duration::ZERO);
    let mut server = TestServer::start(config.clone()).await?;
    let data = server.data_dir.clone();
    server.push_dataset().await?;
    flush(&server).await?;
    let files = listed(&data)?;
    let all_rows: u64 = files.iter().map(|f| f.rows).sum();
    let span = hours(&files);
    let victim = files[files.len() - 1].clone();
    let path = object(&data, &victim.path);
    let bytes = std::fs::read(&path)?;
    std::fs::write(&path, &bytes[..bytes.len() / 2])?;

    wait_metrics(
        &server,
        "the cut file was not quarantined or the rest not compacted",
        |m| {
            metric(m, "tovlog_chunk_files_quarantined_total") == 1.0
                && metric(m, "tovlog_chunk_files_uncompacted") == 0.0
                && metric(m, "tovlog_chunk_files_pending_delete") == 0.0
        },
    )
    .await?;
    let (status, v) = range(&server, COUNT_BY_JOB, span).await?;
    assert_eq!(status, 200, "{v}");
    assert_eq!(total(&v), (all_rows - victim.rows) as f64);
    let w = warnings(&v);
    assert!(w.len() == 1 && w[0].contains("truncated"), "{w:?}");

    // A needle query and a plain count read the compacted files' block indexes.
    let needle = r#"sum by (job) (count_over_time({job=~".+"} |= "error" [1h]))"#;
    let (_, needle_before) = range(&server, needle, span).await?;
    assert!(total(&needle_before) > 0.0, "{needle_before}");
    let compacted = listed(&data)?;
    let indexed = compacted
        .iter()
        .find(|f| f.index)
        .ok_or_else(|| anyhow::anyhow!("no compacted file with a block index: {compacted:?}"))?
        .clone();
    server.stop().await?;
    let _dir = server.take_dir();

    // Flip bits in the middle of its block index; a new process loads it.
    let tri = object(&data, &indexed.path.replace(".parquet", ".tri"));
    let mut index = std::fs::read(&tri)?;
    let mid = index.len() / 2;
    for b in &mut index[mid..mid + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(&tri, &index)?;
    let server = TestServer::start_in(config, &data).await?;
    for (query, want) in [(needle, &needle_before), (COUNT_BY_JOB, &v)] {
        let (status, got) = range(&server, query, span).await?;
        assert_eq!(status, 200, "{got}");
        assert_eq!(samples(&got, |_| true), samples(want, |_| true), "{query}");
    }
    wait_metrics(&server, "the damaged index was not unlisted", |m| {
        metric(m, "tovlog_block_indexes_damaged_total") == 1.0
    })
    .await?;
    for _ in 0..600 {
        if listed(&data)?
            .iter()
            .any(|f| f.path == indexed.path && !f.index)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = listed(&data)?;
    assert!(
        now.iter().any(|f| f.path == indexed.path && !f.index),
        "index still listed: {now:?}"
    );
    let kept = object(
        &data,
        &tovlog_storage::quarantine::kept_path(&indexed.path.replace(".parquet", ".tri")),
    );
    assert_eq!(std::fs::read(kept)?, index);
    // Unlisted, the file is read whole: the answer is the same.
    let (_, got) = range(&server, needle, span).await?;
    assert_eq!(samples(&got, |_| true), samples(&needle_before, |_| true));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_label_index_is_set_aside_and_rebuilt_from_the_bucket() -> anyhow::Result<()> {
    let mut config = conformance_config()?;
    config.storage.compaction.enabled = false;
    let mut server = TestServer::start(config.clone()).await?;
    let data = server.data_dir.clone();
    server.push_dataset().await?;
    flush(&server).await?;
    let span = hours(&listed(&data)?);
    let series_before = series(&server, span).await?;
    anyhow::ensure!(series_before.len() > 5, "{series_before:?}");
    let (_, counts_before) = range(&server, COUNT_BY_JOB, span).await?;
    server.stop().await?;
    let _dir = server.take_dir();

    // Flip bytes in the middle of the index's largest segment file.
    let dir = data.join("index").join("fake");
    let largest = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            !name.starts_with('.') && !name.ends_with(".json") && !name.ends_with(".lock")
        })
        .max_by_key(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .ok_or_else(|| anyhow::anyhow!("no segment file in {}", dir.display()))?
        .path();
    let mut bytes = std::fs::read(&largest)?;
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0xa5;
    }
    std::fs::write(&largest, &bytes)?;

    let server = TestServer::start_in(config, &data).await?;
    assert_eq!(series(&server, span).await?, series_before);
    let (status, counts) = range(&server, COUNT_BY_JOB, span).await?;
    assert_eq!(status, 200);
    assert_eq!(
        samples(&counts, |_| true),
        samples(&counts_before, |_| true)
    );
    assert_eq!(
        metric(&metrics(&server).await?, "tovlog_label_indexes_rebuilt"),
        1.0
    );
    let aside: Vec<String> = std::fs::read_dir(data.join("index"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("fake.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    Ok(())
}
