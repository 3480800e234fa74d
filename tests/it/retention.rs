//! Retention and runtime overrides over a real server: Loki's `runtime_config` file re-read while
//! running (limits change without a restart, a bad file keeps the previous overrides), and
//! retention per tenant and per stream with every read API agreeing on the cut-off, before and
//! after the compactor removes the expired rows.

use std::{path::Path, time::Duration};

use serde_json::{json, Value};
use tovlog::Config;

use crate::server::TestServer;

/// Headers of a request as `tenant`.
fn org(tenant: &str) -> Vec<(String, String)> {
    vec![("X-Scope-OrgID".to_string(), tenant.to_string())]
}

/// Push one stream of `(ts_ns, line)` as `tenant`; returns the status and body.
async fn push(
    s: &TestServer,
    tenant: &str,
    labels: Value,
    entries: &[(i64, String)],
) -> anyhow::Result<(u16, String)> {
    let values: Vec<Value> = entries
        .iter()
        .map(|(ts, line)| json!([ts.to_string(), line]))
        .collect();
    let body = json!({"streams": [{"stream": labels, "values": values}]});
    s.post(
        "/loki/api/v1/push",
        body.to_string().into_bytes(),
        &[
            ("content-type", "application/json"),
            ("x-scope-orgid", tenant),
        ],
    )
    .await
}

/// The `/metrics` text.
async fn metrics(s: &TestServer) -> anyhow::Result<String> {
    let (status, text) = s.get("/metrics", &[], &[]).await?;
    anyhow::ensure!(status == 200, "metrics: {status}");
    Ok(text)
}

/// Write the overrides file, then wait until the server has read it: the reload metrics show
/// the new file's hash (`ok`) or a failed reload (`!ok`).
async fn rewrite(s: &TestServer, path: &Path, text: &str, ok: bool) -> anyhow::Result<()> {
    std::fs::write(path, text)?;
    let hash = tovlog_storage::chain::sha256_hex(text.as_bytes());
    let want = if ok {
        format!("loki_runtime_config_hash{{sha256=\"{hash}\"}} 1")
    } else {
        "loki_runtime_config_last_reload_successful 0".to_string()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = metrics(s).await?;
        if m.contains(&want) {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the server never reloaded the overrides file ({want}):\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The tenant's `retention_period` as the Drilldown limits endpoint publishes it.
async fn published_retention(s: &TestServer, tenant: &str) -> anyhow::Result<String> {
    let (status, body) = s
        .get("/loki/api/v1/drilldown-limits", &[], &org(tenant))
        .await?;
    anyhow::ensure!(status == 200, "drilldown-limits: {status} {body}");
    let v: Value = serde_json::from_str(&body)?;
    Ok(v["limits"]["retention_period"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

/// A `query_range` with `limit` as `tenant`; returns the status.
async fn query_with_limit(s: &TestServer, tenant: &str, limit: u32) -> anyhow::Result<u16> {
    let (status, _) = s
        .get(
            "/loki/api/v1/query_range",
            &[
                ("query".into(), r#"{app="x"}"#.into()),
                ("limit".into(), limit.to_string()),
            ],
            &org(tenant),
        )
        .await?;
    Ok(status)
}

#[tokio::test]
async fn runtime_overrides_change_limits_without_restart_and_a_bad_file_keeps_them(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("overrides.yaml");
    let first = "overrides:\n  small:\n    max_line_size: 100B\n    max_entries_limit_per_query: 10\n    retention_period: 48h\n";
    std::fs::write(&file, first)?;
    let mut config = Config::default();
    config.runtime_config.file = file.display().to_string();
    config.runtime_config.period = Duration::from_millis(100);
    let mut s = TestServer::start(config).await?;
    let now = tovlog::server::params::now_ns();
    let long_line = vec![(now, "x".repeat(200))];

    // The file read at start-up: `small` has its own limits, everyone else the defaults.
    let (status, body) = push(&s, "small", json!({"app": "x"}), &long_line).await?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("max entry size '100' bytes exceeded"),
        "{body}"
    );
    let (status, body) = push(&s, "other", json!({"app": "x"}), &long_line).await?;
    assert_eq!(status, 204, "{body}");
    assert_eq!(query_with_limit(&s, "small", 20).await?, 400);
    assert_eq!(query_with_limit(&s, "other", 20).await?, 200);
    assert_eq!(published_retention(&s, "small").await?, "2d");
    assert_eq!(published_retention(&s, "other").await?, "0s");

    // Edited while running: the next requests see the new limits.
    let second = "overrides:\n  small:\n    max_line_size: 1KB\n    max_entries_limit_per_query: 50\n    retention_period: 72h\n  other:\n    max_line_size: 150B\n";
    rewrite(&s, &file, second, true).await?;
    let (status, body) = push(&s, "small", json!({"app": "x"}), &long_line).await?;
    assert_eq!(status, 204, "{body}");
    let (status, body) = push(&s, "other", json!({"app": "x"}), &long_line).await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(query_with_limit(&s, "small", 20).await?, 200);
    assert_eq!(published_retention(&s, "small").await?, "3d");
    assert!(metrics(&s)
        .await?
        .contains("loki_runtime_config_last_reload_successful 1"));

    // A file with an unknown limit is refused as a whole; the previous overrides stay.
    let bad = "overrides:\n  small:\n    max_line_size: 100B\n    no_such_limit: 3\n";
    rewrite(&s, &file, bad, false).await?;
    let (status, body) = push(&s, "small", json!({"app": "x"}), &long_line).await?;
    assert_eq!(
        status, 204,
        "the refused file's 100B limit was applied: {body}"
    );
    assert_eq!(published_retention(&s, "small").await?, "3d");
    let m = metrics(&s).await?;
    let good_hash = tovlog_storage::chain::sha256_hex(second.as_bytes());
    assert!(
        m.contains(&format!(
            "loki_runtime_config_hash{{sha256=\"{good_hash}\"}} 1"
        )),
        "{m}"
    );

    // Fixed again: back to reloading.
    rewrite(&s, &file, first, true).await?;
    assert_eq!(published_retention(&s, "small").await?, "2d");
    assert!(metrics(&s)
        .await?
        .contains("loki_runtime_config_last_reload_successful 1"));

    // A retention rule whose selector does not parse makes the file invalid too.
    let bad_rule = "overrides:\n  small:\n    retention_stream:\n      - selector: 'app=x'\n        period: 24h\n";
    rewrite(&s, &file, bad_rule, false).await?;
    assert_eq!(published_retention(&s, "small").await?, "2d");
    let (status, body) = push(&s, "small", json!({"app": "x"}), &long_line).await?;
    assert_eq!(status, 400, "{body}");
    s.stop().await
}

#[tokio::test]
async fn a_bad_overrides_file_stops_start_up() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("overrides.yaml");
    std::fs::write(
        &file,
        "overrides:\n  t:\n    retention_stream:\n      - selector: '{a=\"b\"}'\n        period: 1h\n",
    )?;
    let mut config = Config::default();
    config.runtime_config.file = file.display().to_string();
    let err = match TestServer::start(config).await {
        Ok(mut s) => {
            s.stop().await?;
            anyhow::bail!("started with an invalid overrides file")
        }
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("overrides.t.retention_stream[0].period")
            && err.contains("retention period must be >= 24h"),
        "{err}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Retention per tenant and per stream
// ---------------------------------------------------------------------------------------------

const HOUR_NS: i64 = 3_600_000_000_000;

/// One pushed entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Pushed {
    app: String,
    ts: i64,
    line: String,
}

/// Entries `hours` ago in each app's stream: every app has a few lines around each offset.
fn dataset(now: i64) -> Vec<Pushed> {
    let plan: [(&str, &[i64]); 4] = [
        ("api", &[70, 50, 30, 10, 1]),
        ("audit", &[100, 70, 10]),
        ("debug", &[30, 10]),
        ("old", &[70]),
    ];
    let mut out = Vec::new();
    for (app, hours) in plan {
        for h in hours {
            for k in 0..3i64 {
                let ts = now - h * HOUR_NS + k * 1_000_000_000;
                out.push(Pushed {
                    app: app.to_string(),
                    ts,
                    // Long enough that each app's volume is several KiB (Loki's volumes
                    // are whole KiB per stream, see `expected_answers`).
                    line: format!(
                        "app={app} age={h}h n={k} {}",
                        "x".repeat(400 + (h + k) as usize % 7 * 37)
                    ),
                });
            }
        }
    }
    out
}

/// Push `data` as `tenant`, one stream per app.
async fn push_all(s: &TestServer, tenant: &str, data: &[Pushed]) -> anyhow::Result<()> {
    let mut apps: Vec<&str> = data.iter().map(|p| p.app.as_str()).collect();
    apps.sort();
    apps.dedup();
    for app in apps {
        let entries: Vec<(i64, String)> = data
            .iter()
            .filter(|p| p.app == app)
            .map(|p| (p.ts, p.line.clone()))
            .collect();
        let (status, body) = push(s, tenant, json!({ "app": app }), &entries).await?;
        anyhow::ensure!(status == 204, "push {tenant} {app}: {status} {body}");
    }
    Ok(())
}

/// Everything a tenant's read APIs answer over `[start, end]`.
#[derive(Debug, PartialEq)]
struct Answers {
    /// `query_range` entries.
    entries: Vec<Pushed>,
    /// `sum by (app) (count_over_time(…))` at `end`.
    counts: std::collections::BTreeMap<String, u64>,
    /// `label/app/values`.
    label_values: Vec<String>,
    /// `series` (their `app`).
    series: Vec<String>,
    /// `index/volume` bytes by app.
    volume: std::collections::BTreeMap<String, u64>,
    /// `index/stats` streams and entries.
    stats: (u64, u64),
}

/// What the APIs must answer when `visible` entries remain.
fn expected_answers(visible: &[Pushed]) -> Answers {
    let mut entries = visible.to_vec();
    entries.sort();
    let mut counts = std::collections::BTreeMap::new();
    let mut volume = std::collections::BTreeMap::new();
    for p in visible {
        *counts.entry(p.app.clone()).or_insert(0) += 1;
        *volume.entry(p.app.clone()).or_insert(0) += p.line.len() as u64;
    }
    // One stream per app; Loki's index keeps chunk sizes in whole KiB, and so do volumes.
    for bytes in volume.values_mut() {
        *bytes = *bytes / 1024 * 1024;
    }
    let apps: Vec<String> = counts.keys().cloned().collect();
    Answers {
        stats: (apps.len() as u64, visible.len() as u64),
        entries,
        counts,
        label_values: apps.clone(),
        series: apps,
        volume,
    }
}

async fn get_json(
    s: &TestServer,
    path: &str,
    params: &[(&str, String)],
    tenant: &str,
) -> anyhow::Result<Value> {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let (status, body) = s.get(path, &params, &org(tenant)).await?;
    anyhow::ensure!(status == 200, "{path} {params:?}: {status} {body}");
    Ok(serde_json::from_str(&body)?)
}

/// Ask every read API of `tenant` about all apps over `[start, end]`.
async fn answers(s: &TestServer, tenant: &str, start: i64, end: i64) -> anyhow::Result<Answers> {
    let sel = r#"{app=~".+"}"#.to_string();
    let range = [("start", start.to_string()), ("end", end.to_string())];
    let q = get_json(
        s,
        "/loki/api/v1/query_range",
        &[
            ("query", sel.clone()),
            ("limit", "5000".into()),
            ("direction", "forward".into()),
            range[0].clone(),
            range[1].clone(),
        ],
        tenant,
    )
    .await?;
    let mut entries = Vec::new();
    for stream in q["data"]["result"].as_array().into_iter().flatten() {
        let app = stream["stream"]["app"].as_str().unwrap_or_default();
        for v in stream["values"].as_array().into_iter().flatten() {
            entries.push(Pushed {
                app: app.to_string(),
                ts: v[0].as_str().unwrap_or_default().parse()?,
                line: v[1].as_str().unwrap_or_default().to_string(),
            });
        }
    }
    entries.sort();
    let span_s = (end - start) / 1_000_000_000 + 1;
    let m = get_json(
        s,
        "/loki/api/v1/query",
        &[
            (
                "query",
                format!("sum by (app) (count_over_time({sel}[{span_s}s]))"),
            ),
            ("time", end.to_string()),
        ],
        tenant,
    )
    .await?;
    let mut counts = std::collections::BTreeMap::new();
    for r in m["data"]["result"].as_array().into_iter().flatten() {
        let n: f64 = r["value"][1].as_str().unwrap_or_default().parse()?;
        counts.insert(
            r["metric"]["app"].as_str().unwrap_or_default().to_string(),
            n as u64,
        );
    }
    let l = get_json(s, "/loki/api/v1/label/app/values", &range, tenant).await?;
    let mut label_values: Vec<String> = l["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    label_values.sort();
    let mut series_params = range.to_vec();
    series_params.push(("match[]", sel.clone()));
    let se = get_json(s, "/loki/api/v1/series", &series_params, tenant).await?;
    let mut series: Vec<String> = se["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["app"].as_str().map(String::from))
        .collect();
    series.sort();
    let mut vol_params = range.to_vec();
    vol_params.push(("query", sel.clone()));
    vol_params.push(("targetLabels", "app".into()));
    let v = get_json(s, "/loki/api/v1/index/volume", &vol_params, tenant).await?;
    let mut volume = std::collections::BTreeMap::new();
    for r in v["data"]["result"].as_array().into_iter().flatten() {
        volume.insert(
            r["metric"]["app"].as_str().unwrap_or_default().to_string(),
            r["value"][1].as_str().unwrap_or_default().parse()?,
        );
    }
    let st = get_json(s, "/loki/api/v1/index/stats", &vol_params[..3], tenant).await?;
    let stats = (
        st["streams"].as_u64().unwrap_or(u64::MAX),
        st["entries"].as_u64().unwrap_or(u64::MAX),
    );
    Ok(Answers {
        entries,
        counts,
        label_values,
        series,
        volume,
        stats,
    })
}

/// The entries of `data` still inside their stream's period `now` (periods in hours by app;
/// `None` keeps forever).
fn visible(data: &[Pushed], now: i64, period_h: impl Fn(&str) -> Option<i64>) -> Vec<Pushed> {
    data.iter()
        .filter(|p| period_h(&p.app).is_none_or(|h| p.ts > now - h * HOUR_NS))
        .cloned()
        .collect()
}

/// Poll until `tenant` answers `want` (the compactor works in the background; a deadline
/// turns "never" into a failure rather than a hang).
async fn wait_for_answers(
    s: &TestServer,
    tenant: &str,
    start: i64,
    end: i64,
    want: &Answers,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = answers(s, tenant, start, end).await?;
        if &got == want {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{tenant}: never answered\n{want:#?}\ngot\n{got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn retention_per_tenant_and_stream_agrees_everywhere_before_and_after_compaction(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("overrides.yaml");
    // `acme` keeps 48h, its audit stream a week (priority 2) and its debug stream a day.
    let overrides = "overrides:\n  acme:\n    retention_period: 48h\n    retention_stream:\n      - selector: '{app=\"audit\"}'\n        priority: 2\n        period: 168h\n      - selector: '{app=~\"audit|debug\"}'\n        priority: 1\n        period: 24h\n";
    std::fs::write(&file, overrides)?;
    // An operator's Loki file, unchanged but for the paths and the test's short intervals.
    let config = Config::from_yaml(&format!(
        "auth_enabled: true
compactor:
  working_directory: /var/loki/compactor
  compaction_interval: 200ms
  retention_enabled: true
  retention_delete_delay: 0s
  retention_delete_worker_count: 150
  delete_request_store: filesystem
limits_config:
  retention_period: 0s
  ingestion_rate_mb: 64
  ingestion_burst_size_mb: 64
runtime_config:
  file: {}
  period: 100ms
storage:
  compaction:
    min_age: 0s
",
        file.display()
    ))?;
    config.validate()?;
    let mut s = TestServer::start(config.clone()).await?;
    let now = tovlog::server::params::now_ns();
    let data = dataset(now);
    push_all(&s, "acme", &data).await?;
    push_all(&s, "keep", &data).await?;
    let (start, end) = (now - 120 * HOUR_NS, now + 60_000_000_000);
    let acme_periods = |app: &str| match app {
        "audit" => Some(168),
        "debug" => Some(24),
        _ => Some(48),
    };
    let acme = expected_answers(&visible(&data, now, acme_periods));
    let keep = expected_answers(&data);
    assert_eq!(acme.label_values, ["api", "audit", "debug"]);
    assert!(acme.entries.len() < keep.entries.len());

    // In the head: the cut-off applies at query time.
    assert_eq!(answers(&s, "acme", start, end).await?, acme);
    assert_eq!(answers(&s, "keep", start, end).await?, keep);
    // In chunk files, before and after the compactor removed the expired rows.
    let (status, body) = s.post("/flush", Vec::new(), &[]).await?;
    assert_eq!(status, 204, "{body}");
    assert_eq!(answers(&s, "acme", start, end).await?, acme);
    assert_eq!(answers(&s, "keep", start, end).await?, keep);
    // The compactor's retention pass removes acme's expired rows (a `retention` event in the
    // tenant's hash chain); keep keeps everything.
    wait_for_retention(&s, "acme", 0).await?;
    assert_eq!(answers(&s, "acme", start, end).await?, acme);
    assert_eq!(answers(&s, "keep", start, end).await?, keep);
    assert_eq!(retention_events(&s, "keep")?, 0);

    // The overrides file changed at runtime: acme keeps 20h, keep 80h.
    std::fs::write(
        &file,
        overrides.replace("retention_period: 48h", "retention_period: 20h")
            + "  keep:\n    retention_period: 80h\n",
    )?;
    let acme = expected_answers(&visible(&data, now, |app| match app {
        "audit" => Some(168),
        "debug" => Some(24),
        _ => Some(20),
    }));
    let keep = expected_answers(&visible(&data, now, |_| Some(80)));
    wait_for_answers(&s, "acme", start, end, &acme).await?;
    wait_for_answers(&s, "keep", start, end, &keep).await?;
    // The next retention pass follows the new periods: keep's 100h-old audit rows go too.
    wait_for_retention(&s, "keep", 0).await?;
    assert_eq!(answers(&s, "acme", start, end).await?, acme);
    assert_eq!(answers(&s, "keep", start, end).await?, keep);

    // Restarted on the same directory, the answers are the same.
    let keep_dir = s.take_dir();
    s.stop().await?;
    let mut s = TestServer::start_in(config, &s.data_dir).await?;
    assert_eq!(answers(&s, "acme", start, end).await?, acme);
    assert_eq!(answers(&s, "keep", start, end).await?, keep);
    s.stop().await?;
    drop(keep_dir);
    Ok(())
}

/// `retention` events in `tenant`'s hash chain (`<tenant>/chain/<seq>.json` of the local
/// object store): each is one compactor edit that dropped or rewrote expired files.
fn retention_events(s: &TestServer, tenant: &str) -> anyhow::Result<usize> {
    let dir = s.data_dir.join("chunks").join(tenant).join("chain");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    let mut n = 0;
    for e in entries {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "json") {
            let v: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
            n += usize::from(v["event"] == "retention");
        }
    }
    Ok(n)
}

/// Wait until the compactor recorded more than `seen` retention events for `tenant` and has
/// no flushed file left to compact.
async fn wait_for_retention(s: &TestServer, tenant: &str, seen: usize) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = metrics(s).await?;
        let idle = m.lines().any(|l| l == "tovlog_chunk_files_uncompacted 0");
        if idle && retention_events(s, tenant)? > seen {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no retention pass for {tenant} in 60 s:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
