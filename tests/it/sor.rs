//! The object store as the system of record, with real `tovlog` processes on a real S3
//! server (moto's standalone server from PyPI, started here as a child process; `.ci/run`
//! installs it) and on a shared local directory:
//! - a node started with an empty data directory serves everything the bucket holds;
//! - a second writer on a bucket is refused, naming the holder, and takes over once the
//!   first was killed (-9) and its lease expired;
//! - a read replica answers like the writer once the writer flushed, and refuses pushes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{free_port, wait_ready};

const T0: i64 = 1_763_596_800_000_000_000;
pub(crate) const BUCKET: &str = "tovlog-sor";

/// moto's S3 server on a loopback port, killed on drop.
pub(crate) struct Moto {
    child: Child,
    pub(crate) endpoint: String,
}

impl Moto {
    /// Start `moto_server` (or `$MOTO_SERVER`) and create [`BUCKET`]. A missing server is an
    /// error, never a skip.
    pub(crate) async fn start() -> anyhow::Result<Moto> {
        Moto::start_with(None).await
    }

    /// [`Moto::start`], serving HTTPS with `(certificate, key)` files when given; `client`
    /// must trust the certificate.
    pub(crate) async fn start_with(
        tls: Option<(&Path, &Path, reqwest::Client)>,
    ) -> anyhow::Result<Moto> {
        let program = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = free_port()?;
        let mut cmd = Command::new(&program);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let (scheme, client) = match tls {
            Some((cert, key, client)) => {
                cmd.arg("-c").arg(cert).arg("-k").arg(key);
                ("https", client)
            }
            None => ("http", reqwest::Client::new()),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("cannot start {program} (pip install 'moto[server]'): {e}")
            })?;
        let moto = Moto {
            child,
            endpoint: format!("{scheme}://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // moto accepts an unsigned bucket creation.
            match client
                .put(format!("{}/{BUCKET}", moto.endpoint))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(moto),
                Ok(r) => anyhow::bail!("moto refused the bucket: {}", r.status()),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => anyhow::bail!("moto never answered: {e}"),
            }
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the processes of a test keep their chunks.
enum Bucket<'a> {
    S3(&'a Moto),
    Local(&'a Path),
}

/// A config file for a process on `bucket` with a short lease and replica poll.
fn write_config(dir: &Path, name: &str, bucket: &Bucket, extra: &str) -> anyhow::Result<PathBuf> {
    let store = match bucket {
        Bucket::S3(moto) => format!(
            "  object_store:\n    type: s3\n    endpoint: {}\n    bucket: {BUCKET}\n    \
             region: us-east-1\n    access_key_id: test\n    secret_access_key: test\n    \
             allow_http: true\n    path_style: true\n    prefix: logs\n",
            moto.endpoint
        ),
        Bucket::Local(path) => format!(
            "  object_store:\n    type: local\n    path: {}\n",
            path.display()
        ),
    };
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "auth_enabled: false\nlimits_config:\n  ingestion_rate_mb: 1000\n  \
             ingestion_burst_size_mb: 1000\n  max_entries_limit_per_query: 100000\n  \
             discover_log_levels: false\nstorage:\n{store}  lease:\n    ttl: 2s\n    \
             renew_interval: 500ms\n  replica:\n    poll_interval: 200ms\n{extra}"
        ),
    )?;
    Ok(path)
}

/// Start the binary; stderr is kept in `<data>.stderr` for refusals to be read.
fn spawn(config: &Path, data: &Path, port: u16) -> anyhow::Result<Child> {
    let log = std::fs::File::create(data.with_extension("stderr"))?;
    Ok(Command::new(env!("CARGO_BIN_EXE_tovlog"))
        .arg("--config")
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?)
}

/// SIGTERM and wait: a graceful stop flushes the head and releases the lease.
fn stop(child: &mut Child) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -TERM failed");
    let exit = child.wait()?;
    anyhow::ensure!(exit.success(), "graceful stop exited with {exit}");
    Ok(())
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?)
}

/// Push `streams` streams of `job="sor"`, `lines` lines each, starting at `T0 + offset`.
async fn push(
    client: &reqwest::Client,
    url: &str,
    streams: usize,
    offset: i64,
) -> anyhow::Result<()> {
    let body: Vec<Value> = (0..streams)
        .map(|s| {
            let values: Vec<Value> = (0..5)
                .map(|i| {
                    json!([
                        (T0 + offset + (i * 1_000_000_000) + s as i64).to_string(),
                        format!("stream {s} line {i} offset {offset}")
                    ])
                })
                .collect();
            json!({"stream": {"job": "sor", "app": format!("app-{s:03}"), "env": if s % 2 == 0 { "prod" } else { "dev" }}, "values": values})
        })
        .collect();
    let r = client
        .post(format!("{url}/loki/api/v1/push"))
        .json(&json!({ "streams": body }))
        .send()
        .await?;
    anyhow::ensure!(
        r.status().as_u16() == 204,
        "push: {} {}",
        r.status(),
        r.text().await?
    );
    Ok(())
}

async fn get(
    client: &reqwest::Client,
    url: &str,
    path: &str,
    query: &[(&str, &str)],
) -> anyhow::Result<Value> {
    let r = client
        .get(format!("{url}{path}"))
        .query(query)
        .send()
        .await?;
    let status = r.status();
    let body: Value = r.json().await?;
    anyhow::ensure!(status.is_success(), "{path}: {status} {body}");
    Ok(body["data"].clone())
}

/// Sort a JSON array by each element's text, so answers compare regardless of order.
fn sorted(v: Value) -> Value {
    match v {
        Value::Array(mut a) => {
            a.sort_by_key(|x| x.to_string());
            Value::Array(a)
        }
        other => other,
    }
}

/// Every answer a node gives about `job="sor"`: lines, labels, values, series, volume.
async fn answers(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let (start, end) = (T0.to_string(), (T0 + 3_600_000_000_000).to_string());
    let range = [("start", start.as_str()), ("end", end.as_str())];
    let sel = "{job=\"sor\"}";
    let lines = get(
        client,
        url,
        "/loki/api/v1/query_range",
        &[
            ("query", sel),
            ("start", &start),
            ("end", &end),
            ("limit", "100000"),
            ("direction", "forward"),
        ],
    )
    .await?;
    let count = get(
        client,
        url,
        "/loki/api/v1/query_range",
        &[
            ("query", "sum by (env) (count_over_time({job=\"sor\"}[1h]))"),
            ("start", &start),
            ("end", &end),
            ("step", "3600"),
        ],
    )
    .await?;
    Ok(json!({
        "lines": sorted(lines["result"].clone()),
        "count": sorted(count["result"].clone()),
        "labels": get(client, url, "/loki/api/v1/labels", &range).await?,
        "apps": get(client, url, "/loki/api/v1/label/app/values", &range).await?,
        "series": sorted(get(client, url, "/loki/api/v1/series", &[("match[]", sel), ("start", &start), ("end", &end)]).await?),
        "volume": sorted(get(client, url, "/loki/api/v1/index/volume", &[("query", sel), ("start", &start), ("end", &end)]).await?["result"].clone()),
    }))
}

fn line_count(answers: &Value) -> usize {
    answers["lines"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["values"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0)
}

/// Write through one node to S3, stop it (flush), delete its data directory, start a
/// node with an empty one: every answer is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_an_empty_data_dir_serves_its_s3_bucket() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), "writer", &Bucket::S3(&moto), "")?;
    let data = dir.path().join("data");
    let client = client()?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let mut child = spawn(&config, &data, port)?;
    wait_ready(&client, &url).await?;
    push(&client, &url, 30, 0).await?;
    let r = client.post(format!("{url}/flush")).send().await?;
    anyhow::ensure!(r.status().is_success(), "flush: {}", r.status());
    push(&client, &url, 40, 60_000_000_000).await?; // 10 new streams, flushed at stop
    let before = answers(&client, &url).await?;
    assert_eq!(line_count(&before), 30 * 5 + 40 * 5);
    stop(&mut child)?;

    std::fs::remove_dir_all(&data)?;
    let mut child = spawn(&config, &data, port)?;
    wait_ready(&client, &url).await?;
    let after = answers(&client, &url).await?;
    assert_eq!(after, before);
    // Only the WAL and caches are local: no chunk files under the new data directory.
    let local_parquet = walk(&data)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .count();
    assert_eq!(local_parquet, 0);
    stop(&mut child)?;
    Ok(())
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Two writer processes on one bucket: the second is refused (non-zero exit, the holder
/// named) while the first lives; after `kill -9` of the first and the lease's TTL, the
/// second starts and serves what the first flushed.
async fn second_writer(bucket: Bucket<'_>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path(), "writer", &bucket, "")?;
    let client = client()?;
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (pa, pb) = (free_port()?, free_port()?);
    let (ua, ub) = (
        format!("http://127.0.0.1:{pa}"),
        format!("http://127.0.0.1:{pb}"),
    );
    let mut first = spawn(&config, &a, pa)?;
    wait_ready(&client, &ua).await?;
    push(&client, &ua, 5, 0).await?;
    let r = client.post(format!("{ua}/flush")).send().await?;
    anyhow::ensure!(r.status().is_success(), "flush: {}", r.status());

    let mut second = spawn(&config, &b, pb)?;
    let exit = second.wait()?;
    assert!(!exit.success(), "a second writer started");
    let stderr = std::fs::read_to_string(b.with_extension("stderr"))?;
    let node = std::fs::read_to_string(a.join("node-id"))?;
    assert!(stderr.contains("another writer holds"), "{stderr}");
    assert!(
        stderr.contains(node.trim()),
        "the holder is named: {stderr}"
    );

    first.kill()?; // SIGKILL: no flush, no release
    first.wait()?;
    // Until the lease expires each start is refused and exits; then one serves.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut second = spawn(&config, &b, pb)?;
    loop {
        if let Some(status) = second.try_wait()? {
            anyhow::ensure!(
                Instant::now() < deadline,
                "second writer never started ({status}): {}",
                std::fs::read_to_string(b.with_extension("stderr"))?
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            second = spawn(&config, &b, pb)?;
            continue;
        }
        if let Ok(r) = client.get(format!("{ub}/ready")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(line_count(&answers(&client, &ub).await?), 25);
    push(&client, &ub, 5, 60_000_000_000).await?;
    stop(&mut second)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_is_refused_on_s3() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    second_writer(Bucket::S3(&moto)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_is_refused_on_a_shared_directory() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    second_writer(Bucket::Local(dir.path())).await
}

/// Wait (10 s at most) until the replica at `url` gives the `expected` answers.
async fn same_answers(
    client: &reqwest::Client,
    url: &str,
    expected: &Value,
    what: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = answers(client, url).await?;
        if seen == *expected {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the replica did not {what} in 10 s: {} of {} lines",
            line_count(&seen),
            line_count(expected)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A writer and a read replica on one bucket: after a flush, the replica's answers equal
/// the writer's within seconds, also after a delete request posted to the writer; pushes
/// to the replica get 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_replica_answers_like_the_writer_after_a_flush() -> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let dir = tempfile::tempdir()?;
    let bucket = Bucket::S3(&moto);
    // The delete API is served with retention on, as in Loki.
    let deletes = "  compaction:\n    retention_enabled: true\n";
    let wconf = write_config(dir.path(), "writer", &bucket, deletes)?;
    let rconf = write_config(
        dir.path(),
        "reader",
        &bucket,
        &format!("  role: reader\n{deletes}"),
    )?;
    let client = client()?;
    let (pw, pr) = (free_port()?, free_port()?);
    let (uw, ur) = (
        format!("http://127.0.0.1:{pw}"),
        format!("http://127.0.0.1:{pr}"),
    );
    let mut writer = spawn(&wconf, &dir.path().join("w"), pw)?;
    wait_ready(&client, &uw).await?;
    let mut reader = spawn(&rconf, &dir.path().join("r"), pr)?;
    wait_ready(&client, &ur).await?;

    for (round, streams) in [(0i64, 10usize), (1, 20)] {
        push(&client, &uw, streams, round * 60_000_000_000).await?;
        let r = client.post(format!("{uw}/flush")).send().await?;
        anyhow::ensure!(r.status().is_success(), "flush: {}", r.status());
        let expected = answers(&client, &uw).await?;
        same_answers(&client, &ur, &expected, "catch up").await?;
    }

    // A delete posted to the writer hides its lines in the replica's answers too, within
    // a poll, and the replica lists the request.
    let before = line_count(&answers(&client, &uw).await?);
    let r = client
        .post(format!("{uw}/loki/api/v1/delete"))
        .query(&[
            ("query", "{job=\"sor\", env=\"prod\"} |= \"line 2\""),
            ("start", &(T0 / 1_000_000_000 - 60).to_string()),
            ("end", &(T0 / 1_000_000_000 + 3600).to_string()),
        ])
        .send()
        .await?;
    anyhow::ensure!(r.status().as_u16() == 204, "delete: {}", r.status());
    let expected = answers(&client, &uw).await?;
    anyhow::ensure!(
        line_count(&expected) < before,
        "the delete hid nothing on the writer"
    );
    same_answers(&client, &ur, &expected, "apply the delete").await?;
    let listed: Value = client
        .get(format!("{ur}/loki/api/v1/delete"))
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(
        listed.as_array().map_or(0, Vec::len) == 1,
        "the replica's delete requests: {listed}"
    );

    let r = client
        .post(format!("{ur}/loki/api/v1/push"))
        .json(&json!({"streams": [{"stream": {"job": "sor"}, "values": [[T0.to_string(), "x"]]}]}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.text().await?.contains("read-only replica"));
    stop(&mut reader)?;
    stop(&mut writer)?;
    Ok(())
}
