//! The log deletion API over a real server, answered as Loki's compactor answers
//! (`pkg/compactor/deletion/request_handler.go`): routes only with retention enabled, 403 for a
//! tenant whose `deletion_mode` is `disabled`, Loki's 400 texts for bad parameters.

use std::time::Duration;

use tovlog::Config;

use crate::server::TestServer;

/// A server with retention on (so the delete API exists) and the given overrides file text.
pub(crate) fn delete_config(dir: &std::path::Path, overrides: &str) -> anyhow::Result<Config> {
    let file = dir.join("overrides.yaml");
    std::fs::write(&file, overrides)?;
    let mut config = Config::default();
    config.storage.compaction.retention_enabled = true;
    config.runtime_config.file = file.display().to_string();
    config.runtime_config.period = Duration::from_millis(100);
    Ok(config)
}

/// Send `method path?query` as `tenant`; returns status and body.
pub(crate) async fn call(
    s: &TestServer,
    method: reqwest::Method,
    path_and_query: &str,
    tenant: &str,
) -> anyhow::Result<(u16, String)> {
    let resp = s
        .client
        .request(method, format!("{}{path_and_query}", s.url))
        .header("X-Scope-OrgID", tenant)
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await?))
}

#[tokio::test]
async fn delete_routes_exist_only_with_retention_enabled() -> anyhow::Result<()> {
    let mut s = TestServer::start(Config::default()).await?;
    for (method, path) in [
        (
            reqwest::Method::POST,
            "/loki/api/v1/delete?query=%7Ba%3D%22b%22%7D&start=1",
        ),
        (reqwest::Method::GET, "/loki/api/v1/delete"),
        (reqwest::Method::DELETE, "/loki/api/v1/delete?request_id=x"),
        (
            reqwest::Method::GET,
            "/loki/api/v1/cache/generation_numbers",
        ),
    ] {
        let (status, body) = call(&s, method.clone(), path, "t").await?;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    s.stop().await
}

#[tokio::test]
async fn a_tenant_with_deletion_disabled_is_refused_403() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = delete_config(
        dir.path(),
        "overrides:\n  locked:\n    deletion_mode: disabled\n",
    )?;
    let mut s = TestServer::start(config).await?;
    for (method, path) in [
        (
            reqwest::Method::POST,
            "/loki/api/v1/delete?query=%7Ba%3D%22b%22%7D&start=1700000000",
        ),
        (reqwest::Method::PUT, "/loki/api/v1/delete"),
        (reqwest::Method::GET, "/loki/api/v1/delete"),
        (reqwest::Method::DELETE, "/loki/api/v1/delete?request_id=x"),
        (
            reqwest::Method::GET,
            "/loki/api/v1/cache/generation_numbers",
        ),
    ] {
        let (status, body) = call(&s, method.clone(), path, "locked").await?;
        assert_eq!(
            (status, body.as_str()),
            (403, "deletion is not available for this tenant\n"),
            "{method} {path}"
        );
    }
    // Without a tenant the answer is Loki's 401 before anything else.
    let resp = s
        .client
        .get(format!("{}/loki/api/v1/delete", s.url))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 401);
    s.stop().await
}

#[tokio::test]
async fn bad_delete_requests_get_lokis_400s() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut s = TestServer::start(delete_config(dir.path(), "")?).await?;
    let now_s = tovlog::server::params::now_ns() / 1_000_000_000;
    let future = now_s + 3600;
    let q = "%7Bapp%3D%22a%22%7D"; // {app="a"}
    let qf = "%7Bapp%3D%22a%22%7D%20%7C%3D%20%22x%22"; // {app="a"} |= "x"
    let cases: Vec<(String, &str)> = vec![
        ("start=1700000000".into(), "query not set"),
        ("query=&start=1700000000".into(), "query not set"),
        ("query=nope&start=1700000000".into(), "invalid query expression"),
        (
            "query=sum(count_over_time(%7Bapp%3D%22a%22%7D%5B5m%5D))&start=1700000000".into(),
            "invalid query expression",
        ),
        (
            "query=%7Bapp%3D%22a%22%7D%20%7C%20json&start=1700000000".into(),
            "invalid query expression: a delete query is a stream selector with optional line filters (|=, !=, |~, !~, |>, !>) only",
        ),
        (format!("query={q}"), "start time not set"),
        (
            format!("query={q}&start=17000000000"),
            "invalid start time: require unix seconds or RFC3339 format",
        ),
        (
            format!("query={q}&start=1700000000&end=yesterday"),
            "invalid end time: require unix seconds or RFC3339 format",
        ),
        (
            format!("query={q}&start=1700000000&end={future}"),
            "deletes in the future are not allowed",
        ),
        (
            format!("query={q}&start=1700000100&end=1700000000"),
            "start time can't be greater than or equal to end time",
        ),
        (
            format!("query={q}&start=2023-11-14T22:13:20Z&end=1700000000"),
            "start time can't be greater than or equal to end time",
        ),
        (
            format!("query={qf}&start=1700000000&end=1700003600&max_interval=1d"),
            "invalid max_interval: valid time units are 's', 'm', 'h'",
        ),
        (
            format!("query={qf}&start=1700000000&end=1700003600&max_interval=2h"),
            "max_interval can't be greater than the interval to be deleted (1h0m0s)",
        ),
        (
            format!("query={qf}&start=1600000000&end=1700000000&max_interval=25h"),
            "max_interval can't be greater than 24h0m0s",
        ),
    ];
    for (params, want) in cases {
        for method in [reqwest::Method::POST, reqwest::Method::PUT] {
            let (status, body) = call(
                &s,
                method.clone(),
                &format!("/loki/api/v1/delete?{params}"),
                "t",
            )
            .await?;
            assert_eq!(
                (status, body.as_str()),
                (400, format!("{want}\n").as_str()),
                "{method} {params}"
            );
        }
    }
    s.stop().await
}

// ---------------------------------------------------------------------------------------------
// Round trips (need the storage side)
// ---------------------------------------------------------------------------------------------

use serde_json::{json, Value};

const SEC_NS: i64 = 1_000_000_000;

/// One pushed entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Line {
    app: String,
    ts: i64,
    line: String,
}

/// Two streams with an entry every 30 s between `base - 2h` and `base - 1h`; every fifth
/// `api` line leaks a password.
fn dataset(base: i64) -> Vec<Line> {
    let mut out = Vec::new();
    for i in 0..120i64 {
        let ts = base - 2 * 3600 * SEC_NS + i * 30 * SEC_NS;
        let api = if i % 5 == 0 {
            format!("login user=u{i} password=hunter{i}")
        } else {
            format!("GET /api/items/{i} 200")
        };
        out.push(Line {
            app: "api".into(),
            ts,
            line: api,
        });
        out.push(Line {
            app: "web".into(),
            ts: ts + SEC_NS,
            line: format!("page view {i}"),
        });
    }
    out
}

async fn push_lines(s: &TestServer, tenant: &str, data: &[Line]) -> anyhow::Result<()> {
    for app in ["api", "web"] {
        let values: Vec<Value> = data
            .iter()
            .filter(|l| l.app == app)
            .map(|l| json!([l.ts.to_string(), l.line]))
            .collect();
        let body = json!({"streams": [{"stream": {"app": app}, "values": values}]});
        let (status, text) = s
            .post(
                "/loki/api/v1/push",
                body.to_string().into_bytes(),
                &[
                    ("content-type", "application/json"),
                    ("x-scope-orgid", tenant),
                ],
            )
            .await?;
        anyhow::ensure!(status == 204, "push: {status} {text}");
    }
    Ok(())
}

/// `query_range` of every app over `[start, end]`, as sorted entries.
async fn query_lines(
    s: &TestServer,
    tenant: &str,
    start: i64,
    end: i64,
) -> anyhow::Result<Vec<Line>> {
    let (status, body) = s
        .get(
            "/loki/api/v1/query_range",
            &[
                ("query".into(), r#"{app=~".+"}"#.into()),
                ("start".into(), start.to_string()),
                ("end".into(), end.to_string()),
                ("limit".into(), "5000".into()),
            ],
            &[("X-Scope-OrgID".into(), tenant.into())],
        )
        .await?;
    anyhow::ensure!(status == 200, "query_range: {status} {body}");
    let v: Value = serde_json::from_str(&body)?;
    let mut out = Vec::new();
    for stream in v["data"]["result"].as_array().into_iter().flatten() {
        let app = stream["stream"]["app"].as_str().unwrap_or_default();
        for e in stream["values"].as_array().into_iter().flatten() {
            out.push(Line {
                app: app.into(),
                ts: e[0].as_str().unwrap_or_default().parse()?,
                line: e[1].as_str().unwrap_or_default().into(),
            });
        }
    }
    out.sort();
    Ok(out)
}

/// `sum by (app) (count_over_time(…[3h]))` at `time`.
async fn counts(s: &TestServer, tenant: &str, time: i64) -> anyhow::Result<Vec<(String, u64)>> {
    let (status, body) = s
        .get(
            "/loki/api/v1/query",
            &[
                (
                    "query".into(),
                    r#"sum by (app) (count_over_time({app=~".+"}[3h]))"#.into(),
                ),
                ("time".into(), time.to_string()),
            ],
            &[("X-Scope-OrgID".into(), tenant.into())],
        )
        .await?;
    anyhow::ensure!(status == 200, "query: {status} {body}");
    let v: Value = serde_json::from_str(&body)?;
    let mut out = Vec::new();
    for r in v["data"]["result"].as_array().into_iter().flatten() {
        let n: f64 = r["value"][1].as_str().unwrap_or_default().parse()?;
        out.push((
            r["metric"]["app"].as_str().unwrap_or_default().into(),
            n as u64,
        ));
    }
    out.sort();
    Ok(out)
}

fn expected_counts(lines: &[Line]) -> Vec<(String, u64)> {
    let mut m = std::collections::BTreeMap::new();
    for l in lines {
        *m.entry(l.app.clone()).or_insert(0u64) += 1;
    }
    m.into_iter().collect()
}

/// `series` and `label/app/values` of every app over `[start, end]`.
async fn series_and_labels(
    s: &TestServer,
    tenant: &str,
    start: i64,
    end: i64,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let h = [("X-Scope-OrgID".to_string(), tenant.to_string())];
    let range = [
        ("start".to_string(), start.to_string()),
        ("end".to_string(), end.to_string()),
    ];
    let mut p = range.to_vec();
    p.push(("match[]".into(), r#"{app=~".+"}"#.into()));
    let (status, body) = s.get("/loki/api/v1/series", &p, &h).await?;
    anyhow::ensure!(status == 200, "series: {status} {body}");
    let v: Value = serde_json::from_str(&body)?;
    let mut series: Vec<String> = v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["app"].as_str().map(String::from))
        .collect();
    series.sort();
    let (status, body) = s.get("/loki/api/v1/label/app/values", &range, &h).await?;
    anyhow::ensure!(status == 200, "label values: {status} {body}");
    let v: Value = serde_json::from_str(&body)?;
    let mut labels: Vec<String> = v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(String::from))
        .collect();
    labels.sort();
    Ok((series, labels))
}

/// POST a delete as `tenant` with extra headers; returns status, request id header and body.
async fn post_delete(
    s: &TestServer,
    tenant: &str,
    query: &str,
    start_s: i64,
    end_s: i64,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, Option<String>, String)> {
    let mut req = s
        .client
        .post(format!("{}/loki/api/v1/delete", s.url))
        .query(&[
            ("query", query.to_string()),
            ("start", start_s.to_string()),
            ("end", end_s.to_string()),
        ])
        .header("X-Scope-OrgID", tenant);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let id = resp
        .headers()
        .get("x-delete-request-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    Ok((status, id, resp.text().await?))
}

/// `GET /loki/api/v1/delete[?extra]` as `tenant`.
async fn list(s: &TestServer, tenant: &str, extra: &str) -> anyhow::Result<Vec<Value>> {
    let (status, body) = call(
        s,
        reqwest::Method::GET,
        &format!("/loki/api/v1/delete{extra}"),
        tenant,
    )
    .await?;
    anyhow::ensure!(status == 200, "list: {status} {body}");
    Ok(serde_json::from_str(&body)?)
}

async fn generation(s: &TestServer, tenant: &str) -> anyhow::Result<String> {
    let (status, body) = call(
        s,
        reqwest::Method::GET,
        "/loki/api/v1/cache/generation_numbers",
        tenant,
    )
    .await?;
    anyhow::ensure!(status == 200, "generation: {status} {body}");
    match serde_json::from_str::<Value>(&body)? {
        Value::String(g) => Ok(g),
        other => anyhow::bail!("generation number is not a JSON string: {other}"),
    }
}

#[tokio::test]
async fn delete_round_trip_applies_at_once_and_cancel_restores() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut s = TestServer::start(delete_config(dir.path(), "")?).await?;
    let now = tovlog::server::params::now_ns();
    let base = now - now.rem_euclid(SEC_NS);
    let data = dataset(base);
    push_lines(&s, "t", &data).await?;
    push_lines(&s, "other", &data).await?;
    let (qs, qe) = (base - 3 * 3600 * SEC_NS, base);
    assert_eq!(query_lines(&s, "t", qs, qe).await?, {
        let mut d = data.clone();
        d.sort();
        d
    });
    let gen0 = generation(&s, "t").await?;

    // Delete the leaked passwords of the first 40 minutes.
    let (ds, de) = (base / SEC_NS - 2 * 3600, base / SEC_NS - 2 * 3600 + 40 * 60);
    let before = now / 1_000_000;
    let (status, id, body) = post_delete(
        &s,
        "t",
        r#"{app="api"} |= "password=""#,
        ds,
        de,
        &[("X-Grafana-User", "alice")],
    )
    .await?;
    assert_eq!((status, body.as_str()), (204, ""));
    let id = id.ok_or_else(|| anyhow::anyhow!("no X-Delete-Request-ID"))?;
    let deleted = |l: &Line| {
        l.app == "api" && l.line.contains("password=") && l.ts >= ds * SEC_NS && l.ts <= de * SEC_NS
    };
    let mut want: Vec<Line> = data.iter().filter(|l| !deleted(l)).cloned().collect();
    want.sort();
    assert!(want.len() < data.len() && want.len() > data.len() - 20);
    // The very next query, and the metric query, omit the lines.
    assert_eq!(query_lines(&s, "t", qs, qe).await?, want);
    assert_eq!(counts(&s, "t", qe).await?, expected_counts(&want));
    // Other tenants are untouched.
    assert_eq!(query_lines(&s, "other", qs, qe).await?.len(), data.len());
    let gen1 = generation(&s, "t").await?;
    assert_ne!(gen0, gen1);

    // The record, in Loki's shape.
    let listed = list(&s, "t", "").await?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let r = &listed[0];
    assert_eq!(r["request_id"], id.as_str());
    assert_eq!(r["query"], r#"{app="api"} |= "password=""#);
    assert_eq!(r["start_time"], ds);
    assert_eq!(r["end_time"], de);
    assert_eq!(r["status"], "received");
    assert_eq!(r["user_id"], "");
    assert_eq!(r["requested_by"], "t/alice");
    assert_eq!(r["lines_removed"], Value::Null);
    let created = r["created_at"].as_f64().unwrap_or(0.0);
    let after = tovlog::server::params::now_ns() / 1_000_000;
    assert!(
        created * 1000.0 >= before as f64 - 1.0 && created * 1000.0 <= after as f64 + 1.0,
        "created_at {created} outside [{before}, {after}] ms"
    );
    assert!(list(&s, "other", "").await?.is_empty());

    // Deleting a whole stream (no line filter, all its time) removes it from series and labels.
    let (status, web_id, body) = post_delete(
        &s,
        "t",
        r#"{app="web"}"#,
        qs / SEC_NS,
        qe / SEC_NS,
        &[("Authorization", "Basic Ym9iOnNlY3JldA==")], // bob:secret
    )
    .await?;
    assert_eq!(status, 204, "{body}");
    let web_id = web_id.ok_or_else(|| anyhow::anyhow!("no X-Delete-Request-ID"))?;
    let no_web: Vec<Line> = want.iter().filter(|l| l.app != "web").cloned().collect();
    assert_eq!(query_lines(&s, "t", qs, qe).await?, no_web);
    assert_eq!(
        series_and_labels(&s, "t", qs, qe).await?,
        (vec!["api".to_string()], vec!["api".to_string()])
    );
    let gen2 = generation(&s, "t").await?;
    assert_ne!(gen1, gen2);
    let listed = list(&s, "t", "").await?;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["request_id"], web_id.as_str());
    assert_eq!(listed[1]["requested_by"], "t/bob");

    // Cancelled: everything of it is back, and it leaves Loki's list.
    let cancel = format!("/loki/api/v1/delete?request_id={web_id}");
    assert_eq!(
        call(&s, reqwest::Method::DELETE, &cancel, "other").await?,
        (
            404,
            "could not find delete request with given id\n".to_string()
        ),
        "a tenant cannot cancel another's request"
    );
    assert_eq!(
        call(&s, reqwest::Method::DELETE, &cancel, "t").await?,
        (204, String::new())
    );
    assert_eq!(query_lines(&s, "t", qs, qe).await?, want);
    assert_eq!(counts(&s, "t", qe).await?, expected_counts(&want));
    assert_eq!(
        series_and_labels(&s, "t", qs, qe).await?,
        (
            vec!["api".to_string(), "web".to_string()],
            vec!["api".to_string(), "web".to_string()]
        )
    );
    assert_ne!(generation(&s, "t").await?, gen2);
    assert_eq!(
        call(&s, reqwest::Method::DELETE, &cancel, "t").await?,
        (
            404,
            "could not find delete request with given id\n".to_string()
        )
    );
    assert_eq!(
        call(
            &s,
            reqwest::Method::DELETE,
            "/loki/api/v1/delete?request_id=nope",
            "t"
        )
        .await?,
        (
            404,
            "could not find delete request with given id\n".to_string()
        )
    );
    let listed = list(&s, "t", "").await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["request_id"], id.as_str());
    // The append-only record keeps the cancelled request.
    let all = list(&s, "t", "?include_cancelled=true").await?;
    assert_eq!(all.len(), 2);
    assert_eq!(all[1]["status"], "cancelled");
    assert!(all[1]["finished_at"].is_number(), "{:?}", all[1]);
    // `start` and `end` keep the requests overlapping them.
    let far = format!("?start={}&end={}", qs / SEC_NS - 7200, qs / SEC_NS - 3600);
    assert!(list(&s, "t", &far).await?.is_empty());
    let near = format!("?start={ds}&end={}", ds + 60);
    assert_eq!(list(&s, "t", &near).await?.len(), 1);

    // Restarted: the delete still applies, the cancelled one still does not.
    let dir_keep = s.take_dir();
    s.stop().await?;
    let mut s = TestServer::start_in(delete_config(dir.path(), "")?, &s.data_dir).await?;
    assert_eq!(query_lines(&s, "t", qs, qe).await?, want);
    assert_eq!(list(&s, "t", "?include_cancelled=true").await?, all);
    // Flushed to chunk files, still pending: the same answers, from the files' rows and
    // (at a whole minute, with the lines the delete removes found in the files and taken
    // off) from their per-minute counts.
    let (status, body) = s.post("/flush", Vec::new(), &[]).await?;
    assert_eq!(status, 204, "{body}");
    assert_eq!(query_lines(&s, "t", qs, qe).await?, want);
    assert_eq!(counts(&s, "t", qe).await?, expected_counts(&want));
    let minute = qe - qe.rem_euclid(60 * SEC_NS);
    assert_eq!(counts(&s, "t", minute).await?, expected_counts(&want));
    assert_eq!(query_lines(&s, "other", qs, qe).await?.len(), data.len());
    s.stop().await?;
    drop(dir_keep);
    Ok(())
}

#[tokio::test]
async fn a_delete_is_processed_after_the_cancel_period_with_its_lines_counted() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let mut config = delete_config(dir.path(), "")?;
    // Loki's keys: the request may be cancelled for 2 s, the compactor looks every 200 ms.
    config.compactor.delete_request_cancel_period = Some(Duration::from_secs(2));
    config.compactor.compaction_interval = Some(Duration::from_millis(200));
    config.storage.compaction.min_age = tovlog_storage::config::HumanDuration(Duration::ZERO);
    let mut s = TestServer::start(config.clone()).await?;
    let now = tovlog::server::params::now_ns();
    let base = now - now.rem_euclid(SEC_NS);
    let data = dataset(base);
    push_lines(&s, "t", &data).await?;
    // In chunk files, so the compactor has something to rewrite.
    let (status, body) = s.post("/flush", Vec::new(), &[]).await?;
    assert_eq!(status, 204, "{body}");

    let (qs, qe) = (base - 3 * 3600 * SEC_NS, base);
    let (ds, de) = (qs / SEC_NS, qe / SEC_NS);
    let query = r#"{app="api"} |~ "password=hunter[0-9]*5""#;
    let (status, id, body) = post_delete(&s, "t", query, ds, de, &[]).await?;
    assert_eq!(status, 204, "{body}");
    let id = id.ok_or_else(|| anyhow::anyhow!("no X-Delete-Request-ID"))?;
    let re = regex::Regex::new("password=hunter[0-9]*5")?;
    let removed = data
        .iter()
        .filter(|l| l.app == "api" && re.is_match(&l.line))
        .count();
    assert!(removed > 0);
    let mut want: Vec<Line> = data
        .iter()
        .filter(|l| !(l.app == "api" && re.is_match(&l.line)))
        .cloned()
        .collect();
    want.sort();
    assert_eq!(query_lines(&s, "t", qs, qe).await?, want);

    // Poll the list until the compactor has processed it (a deadline, not a timing assertion).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let processed = loop {
        let listed = list(&s, "t", "").await?;
        let r = listed
            .into_iter()
            .find(|r| r["request_id"] == id.as_str())
            .ok_or_else(|| anyhow::anyhow!("request {id} not listed"))?;
        if r["status"] == "processed" {
            break r;
        }
        assert_eq!(r["status"], "received");
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "not processed in 60 s: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(processed["lines_removed"], removed as u64, "{processed}");
    assert!(processed["finished_at"].is_number(), "{processed}");
    assert_eq!(query_lines(&s, "t", qs, qe).await?, want);
    assert_eq!(counts(&s, "t", qe).await?, expected_counts(&want));
    // Too late to cancel now: Loki's 400.
    assert_eq!(
        call(
            &s,
            reqwest::Method::DELETE,
            &format!("/loki/api/v1/delete?request_id={id}"),
            "t"
        )
        .await?,
        (
            400,
            "deletion of request which is in process or already processed is not allowed\n"
                .to_string()
        )
    );

    // The lines are gone from the files: a restart with retention (and so the delete API and
    // its tombstones' purpose) still on answers the same, and the record survives.
    let keep = s.take_dir();
    s.stop().await?;
    let mut s = TestServer::start_in(config, &s.data_dir).await?;
    assert_eq!(query_lines(&s, "t", qs, qe).await?, want);
    let listed = list(&s, "t", "").await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["status"], "processed");
    assert_eq!(listed[0]["lines_removed"], removed as u64);
    s.stop().await?;
    drop(keep);
    Ok(())
}

#[tokio::test]
async fn a_cancel_after_the_cancel_period_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = delete_config(dir.path(), "")?;
    config.compactor.delete_request_cancel_period = Some(Duration::from_millis(500));
    // No compactor: the request stays `received`, only its cancel period runs out.
    config.storage.compaction.enabled = false;
    let mut s = TestServer::start(config).await?;
    let now_s = tovlog::server::params::now_ns() / SEC_NS;
    let (status, id, body) =
        post_delete(&s, "t", r#"{app="api"}"#, now_s - 3600, now_s - 60, &[]).await?;
    assert_eq!(status, 204, "{body}");
    let id = id.ok_or_else(|| anyhow::anyhow!("no X-Delete-Request-ID"))?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let path = format!("/loki/api/v1/delete?request_id={id}");
    assert_eq!(
        call(&s, reqwest::Method::DELETE, &path, "t").await?,
        (
            400,
            "Cancellation of partially completed delete request or delete request past the deadline of 500ms since its creation is not allowed. To force, use the ?force query parameter\n".to_string()
        )
    );
    let (status, body) = call(
        &s,
        reqwest::Method::DELETE,
        &format!("{path}&force=true"),
        "t",
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("force is not supported"), "{body}");
    assert_eq!(list(&s, "t", "").await?[0]["status"], "received");
    s.stop().await
}
