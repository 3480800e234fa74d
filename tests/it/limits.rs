//! Loki's per-tenant limits over real HTTP: `max_query_range`, the active stream limits
//! (`max_streams_per_user`, `max_global_streams_per_user`), `per_stream_rate_limit`,
//! `max_query_parallelism` and the query admission queue (`query_scheduler`: fair turns
//! across tenants, `max_outstanding_requests_per_tenant`). Each limit is checked with its
//! status and Loki's message, that what was accepted is queryable and what was refused is not,
//! and that a tenant's entry in the runtime overrides file changes the answer.

use std::{path::Path, sync::Arc, time::Duration};

use serde_json::{json, Value};
use tovlog::{query::scheduler::QueryScheduler, server::RunningServer, Config};

use crate::server::TestServer;

const T0: i64 = 1_763_596_800_000_000_000; // 2025-11-20T00:00:00Z
const MINUTE: i64 = 60_000_000_000;

/// Multi-tenant defaults with the label enrichment off, so streams keep the labels pushed,
/// and the runtime overrides file `overrides` (written into `dir`).
fn config(dir: &Path, defaults: &str, overrides: &str) -> anyhow::Result<Config> {
    let file = dir.join("overrides.yaml");
    std::fs::write(&file, overrides)?;
    let mut c = Config::from_yaml(&format!(
        "auth_enabled: true\nlimits_config:\n  discover_service_name: []\n  discover_log_levels: false\n{defaults}"
    ))?;
    c.runtime_config.file = file.display().to_string();
    Ok(c)
}

fn values(lines: &[(i64, &str)]) -> Vec<Value> {
    lines
        .iter()
        .map(|(ts, l)| json!([ts.to_string(), l]))
        .collect()
}

/// POST a JSON push for `tenant`: status and body.
async fn push(url: &str, tenant: &str, streams: Value) -> anyhow::Result<(u16, String)> {
    let resp = reqwest::Client::new()
        .post(format!("{url}/loki/api/v1/push"))
        .header("content-type", "application/json")
        .header("X-Scope-OrgID", tenant)
        .body(json!({ "streams": streams }).to_string())
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

/// GET `query_range` over the first hour after `T0` for `tenant`: status and body.
async fn query_range(url: &str, tenant: &str, query: &str) -> anyhow::Result<(u16, String)> {
    let resp = reqwest::Client::new()
        .get(format!("{url}/loki/api/v1/query_range"))
        .header("X-Scope-OrgID", tenant)
        .query(&[
            ("query", query.to_owned()),
            ("start", T0.to_string()),
            ("end", (T0 + 60 * MINUTE).to_string()),
            ("step", "60".to_owned()),
            ("limit", "1000".to_owned()),
        ])
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

/// The lines of a log query's answer, in answer order.
async fn lines(url: &str, tenant: &str, query: &str) -> anyhow::Result<Vec<String>> {
    let (status, body) = query_range(url, tenant, query).await?;
    anyhow::ensure!(status == 200, "{query} → {status}: {body}");
    let v: Value = serde_json::from_str(&body)?;
    let mut out = Vec::new();
    for stream in v["data"]["result"].as_array().into_iter().flatten() {
        for entry in stream["values"].as_array().into_iter().flatten() {
            out.push(entry[1].as_str().unwrap_or_default().to_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// The summed value of a metric range query's samples.
async fn total(url: &str, tenant: &str, query: &str) -> anyhow::Result<f64> {
    let (status, body) = query_range(url, tenant, query).await?;
    anyhow::ensure!(status == 200, "{query} → {status}: {body}");
    let v: Value = serde_json::from_str(&body)?;
    let mut sum = 0.0;
    for series in v["data"]["result"].as_array().into_iter().flatten() {
        for sample in series["values"].as_array().into_iter().flatten() {
            sum += sample[1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    Ok(sum)
}

#[tokio::test]
async fn max_query_range_refuses_longer_range_vectors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = config(
        dir.path(),
        "  max_query_range: 1h\n",
        "overrides:\n  wide:\n    max_query_range: 0s\n",
    )?;
    let mut s = TestServer::start(c).await?;
    for tenant in ["narrow", "wide"] {
        let streams = json!([{"stream": {"job": "r"}, "values": values(&[(T0 + MINUTE, "one"), (T0 + 2 * MINUTE, "two")])}]);
        assert_eq!(push(&s.url, tenant, streams).await?.0, 204);
    }
    // Over the limit: Loki's status and text, the longest first selector named.
    let (status, body) = query_range(
        &s.url,
        "narrow",
        r#"sum(count_over_time({job="r"}[1h])) / sum(count_over_time({job="r"}[90m]))"#,
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body.trim(),
        "[interval] value exceeds limit: [1h30m] > [1h]"
    );
    let (status, body) = query_range(&s.url, "narrow", r#"count_over_time({job="r"}[2h])"#).await?;
    assert_eq!(
        (status, body.trim()),
        (400, "[interval] value exceeds limit: [2h] > [1h]")
    );
    // Within it, the data is there; a log query has no range vector to refuse.
    assert!(total(&s.url, "narrow", r#"sum(count_over_time({job="r"}[1h]))"#).await? > 0.0);
    assert_eq!(
        lines(&s.url, "narrow", r#"{job="r"}"#).await?,
        ["one", "two"]
    );
    // The tenant whose override lifts the limit gets the longer range answered.
    assert!(total(&s.url, "wide", r#"sum(count_over_time({job="r"}[2h]))"#).await? > 0.0);
    // Drilldown is told each tenant's value.
    for (tenant, want) in [("narrow", "1h"), ("wide", "0s")] {
        let (status, body) = s
            .get(
                "/loki/api/v1/drilldown-limits",
                &[],
                &[("X-Scope-OrgID".to_owned(), tenant.to_owned())],
            )
            .await?;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body)?;
        assert_eq!(v["limits"]["max_query_range"], want, "{tenant}");
    }
    s.stop().await
}

#[tokio::test]
async fn a_push_over_the_active_stream_limit_loses_only_its_new_streams() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = config(
        dir.path(),
        "  max_global_streams_per_user: 2\n",
        // The local limit alone applies to `big`: 3 streams.
        "overrides:\n  big:\n    max_global_streams_per_user: 0\n    max_streams_per_user: 3\n",
    )?;
    let mut s = TestServer::start(c).await?;
    let stream = |job: &str, line: &str, ts: i64| json!({"stream": {"job": job}, "values": values(&[(ts, line)])});
    let first = json!([
        stream("s1", "s1-a", T0 + MINUTE),
        stream("s2", "s2-a", T0 + MINUTE)
    ]);
    assert_eq!(push(&s.url, "small", first).await?, (204, String::new()));
    // One existing stream, one new one: the existing stream's entry is stored, the new
    // stream refused with Loki's 429 and text.
    let second = json!([
        stream("s1", "s1-b", T0 + 2 * MINUTE),
        stream("s3", "s3-a", T0 + 2 * MINUTE)
    ]);
    let (status, body) = push(&s.url, "small", second).await?;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        body.trim(),
        r#"Maximum active stream limit exceeded when trying to create stream {job="s3"}, reduce the number of active streams (reduce labels or reduce label values), or contact your Loki administrator to see if the limit can be increased, user: 'small'"#
    );
    assert_eq!(
        lines(&s.url, "small", r#"{job="s1"}"#).await?,
        ["s1-a", "s1-b"]
    );
    assert!(lines(&s.url, "small", r#"{job="s3"}"#).await?.is_empty());
    // A push of only new streams over the limit stores nothing.
    let (status, body) = push(&s.url, "small", json!([stream("s4", "s4-a", T0 + MINUTE)])).await?;
    assert_eq!(status, 429, "{body}");
    assert!(lines(&s.url, "small", r#"{job="s4"}"#).await?.is_empty());
    // The tenant with the override may have 3 streams, not 4.
    let three = json!([
        stream("s1", "b1", T0 + MINUTE),
        stream("s2", "b2", T0 + MINUTE),
        stream("s3", "b3", T0 + MINUTE),
        stream("s4", "b4", T0 + MINUTE)
    ]);
    let (status, body) = push(&s.url, "big", three).await?;
    assert_eq!(status, 429, "{body}");
    assert!(
        body.contains("create stream {job=\"s4\"}") && body.contains("user: 'big'"),
        "{body}"
    );
    assert_eq!(
        lines(&s.url, "big", r#"{job=~"s.*"}"#).await?,
        ["b1", "b2", "b3"]
    );
    // The refusals are counted by reason.
    let (_, metrics) = s.get("/metrics", &[], &[]).await?;
    assert!(
        metrics.contains("tovlog_ingest_discarded_entries_total{reason=\"stream_limit\"} 3"),
        "{metrics}"
    );
    s.stop().await
}

#[tokio::test]
async fn a_stream_over_its_rate_is_refused_and_the_others_stored() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = config(
        dir.path(),
        "  per_stream_rate_limit: 1KB\n  per_stream_rate_limit_burst: 1KB\n",
        "overrides:\n  fast:\n    per_stream_rate_limit: 1MB\n    per_stream_rate_limit_burst: 1MB\n",
    )?;
    let mut s = TestServer::start(c).await?;
    let big = "x".repeat(600);
    let body = |ts: i64| {
        json!([
            {"stream": {"job": "busy"}, "values": values(&[(ts, big.as_str()), (ts + 1, big.as_str())])},
            {"stream": {"job": "quiet"}, "values": values(&[(ts, "hello")])}
        ])
    };
    // 1200 bytes for `busy` against a 1KB burst: that stream is refused whole, `quiet` stored.
    let (status, text) = push(&s.url, "slow", body(T0 + MINUTE)).await?;
    assert_eq!(status, 429, "{text}");
    assert_eq!(
        text.trim(),
        r#"Per stream rate limit exceeded (limit: 1KB/sec) while attempting to ingest for stream '{job="busy"}' totaling 1200B, consider splitting a stream via additional labels or contact your Loki administrator to see if the limit can be increased"#
    );
    assert_eq!(lines(&s.url, "slow", r#"{job="quiet"}"#).await?, ["hello"]);
    assert!(lines(&s.url, "slow", r#"{job="busy"}"#).await?.is_empty());
    // A stream's push within its burst passes.
    let small = json!([{"stream": {"job": "busy"}, "values": values(&[(T0 + 2 * MINUTE, "ok")])}]);
    assert_eq!(push(&s.url, "slow", small).await?.0, 204);
    assert_eq!(lines(&s.url, "slow", r#"{job="busy"}"#).await?, ["ok"]);
    // The tenant whose override raises the rate stores both streams.
    assert_eq!(
        push(&s.url, "fast", body(T0 + MINUTE)).await?,
        (204, String::new())
    );
    assert_eq!(lines(&s.url, "fast", r#"{job="busy"}"#).await?.len(), 2);
    s.stop().await
}

/// A server started directly, for its query admission queue.
async fn start_with_scheduler(
    c: Config,
    data: &Path,
) -> anyhow::Result<(RunningServer, Arc<QueryScheduler>)> {
    let mut c = c;
    c.storage.data_dir = data.to_path_buf();
    c.listen = "127.0.0.1:0".parse()?;
    let listener = tokio::net::TcpListener::bind(c.listen).await?;
    let server = tovlog::server::start_on(c, listener, std::future::pending()).await?;
    let scheduler = server
        .query_scheduler()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the server has no query scheduler"))?;
    Ok((server, scheduler))
}

/// Wait until `tenant` has `n` queries waiting for a slot.
async fn until_waiting(s: &QueryScheduler, tenant: &str, n: usize) -> anyhow::Result<()> {
    for _ in 0..2000 {
        if s.waiting(tenant) == n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    anyhow::bail!("{tenant} never had {n} queries waiting")
}

/// Push `n` lines spread over the first minutes after `T0` for `tenant`.
async fn load(url: &str, tenant: &str, n: i64) -> anyhow::Result<()> {
    let owned: Vec<(i64, String)> = (0..n)
        .map(|i| {
            (
                T0 + MINUTE + i * 1_000_000,
                format!("request {i} served in {}ms", i % 97),
            )
        })
        .collect();
    let v: Vec<(i64, &str)> = owned.iter().map(|(t, l)| (*t, l.as_str())).collect();
    let (status, body) = push(
        url,
        tenant,
        json!([{"stream": {"job": "load"}, "values": values(&v)}]),
    )
    .await?;
    anyhow::ensure!(status == 204, "load {tenant}: {status} {body}");
    Ok(())
}

const LOAD_QUERY: &str = r#"sum(count_over_time({job="load"} |~ "served in [0-9]*7ms" [5m]))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiting_tenants_take_turns_for_the_query_slot() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = config(
        dir.path(),
        "query_scheduler:\n  max_concurrent: 1\n  max_outstanding_requests_per_tenant: 3\n",
        "",
    )?;
    let (server, scheduler) = start_with_scheduler(c, &dir.path().join("data")).await?;
    let url = server.url();
    for tenant in ["a", "b"] {
        load(&url, tenant, 20_000).await?;
    }
    // Tenant a's slow query holds the only slot while a's backlog and then b's query queue.
    let running = scheduler.admit("a", 32).await?;
    let finished: Arc<parking_lot::Mutex<Vec<String>>> = Arc::default();
    let mut tasks = Vec::new();
    let send = |tenant: &'static str, name: String| {
        let (url, finished) = (url.clone(), finished.clone());
        tokio::spawn(async move {
            let got = total(&url, tenant, LOAD_QUERY).await;
            finished.lock().push(name);
            got
        })
    };
    for i in 1..=3 {
        tasks.push(send("a", format!("a{i}")));
        until_waiting(&scheduler, "a", i).await?;
    }
    // a's queue is full: one more is refused with Loki's 429, while b still gets in line.
    let (status, body) = query_range(&url, "a", LOAD_QUERY).await?;
    assert_eq!(
        (status, body.trim()),
        (429, "too many outstanding requests")
    );
    tasks.push(send("b", "b1".to_owned()));
    until_waiting(&scheduler, "b", 1).await?;
    // The queue on /metrics: a's three, b's one, the refusal.
    let metrics = reqwest::get(format!("{url}/metrics")).await?.text().await?;
    for line in [
        "tovlog_query_scheduler_waiting{tenant=\"a\"} 3",
        "tovlog_query_scheduler_waiting{tenant=\"b\"} 1",
        "tovlog_query_scheduler_refused_total 1",
        "tovlog_query_scheduler_running 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
    drop(running);
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await??);
    }
    // Every query counted the same lines of its tenant.
    assert!(
        answers.iter().all(|n| *n == answers[0] && *n > 0.0),
        "{answers:?}"
    );
    // FIFO would finish b1 last; taking turns, b1 runs right after a1, before a2 and a3.
    let order = finished.lock().clone();
    let b = order.iter().position(|n| n == "b1");
    assert!(
        b.is_some_and(|b| order[b + 1..].len() >= 2),
        "b1 must finish before a's backlog: {order:?}"
    );
    server.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_query_parallelism_caps_a_tenant_and_zero_disables_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let c = config(
        dir.path(),
        "  max_query_parallelism: 1\nquery_scheduler:\n  max_concurrent: 4\n",
        "overrides:\n  roomy:\n    max_query_parallelism: 2\n  off:\n    max_query_parallelism: 0\n",
    )?;
    let (server, scheduler) = start_with_scheduler(c, &dir.path().join("data")).await?;
    let url = server.url();
    for tenant in ["capped", "roomy", "off"] {
        load(&url, tenant, 100).await?;
    }
    // One query of each of `capped` and `roomy` is running.
    let capped_running = scheduler.admit("capped", 1).await?;
    let roomy_running = scheduler.admit("roomy", 1).await?;
    // `capped` (1 at once) must wait although slots are free…
    let waiting = {
        let url = url.clone();
        tokio::spawn(async move { total(&url, "capped", LOAD_QUERY).await })
    };
    until_waiting(&scheduler, "capped", 1).await?;
    // …while `roomy`, allowed 2 by its override, runs its second query at once.
    assert!(total(&url, "roomy", LOAD_QUERY).await? > 0.0);
    assert_eq!(scheduler.waiting("capped"), 1, "capped still waits");
    drop(capped_running);
    assert!(waiting.await?? > 0.0);
    drop(roomy_running);
    // `off` may not query at all: Loki's 400 and text.
    let (status, body) = query_range(&url, "off", LOAD_QUERY).await?;
    assert_eq!(
        (status, body.trim()),
        (
            400,
            "querying is disabled, please contact your Loki operator"
        )
    );
    assert_eq!(scheduler.running(), 0);
    server.shutdown().await
}
