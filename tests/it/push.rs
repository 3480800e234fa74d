//! Push API over real HTTP: Promtail protobuf, JSON, gzip, structured metadata, partial accept,
//! rate limits, malformed bodies and tenants.

use std::io::Write;

use serde_json::{json, Value};
use tovlog::Config;

use crate::{
    conformance::replay_promtail,
    server::{conformance_config, TestServer},
};

const T0: i64 = 1_763_596_800_000_000_000; // 2025-11-20T00:00:00Z

fn range() -> Vec<(String, String)> {
    vec![
        ("start".into(), T0.to_string()),
        ("end".into(), (T0 + 3_600_000_000_000).to_string()),
    ]
}

async fn json_get(
    s: &TestServer,
    path: &str,
    params: &[(String, String)],
    headers: &[(String, String)],
) -> anyhow::Result<Value> {
    let (status, body) = s.get(path, params, headers).await?;
    anyhow::ensure!(status == 200, "GET {path} → {status}: {body}");
    Ok(serde_json::from_str(&body)?)
}

fn open_config() -> anyhow::Result<Config> {
    let mut c = conformance_config()?;
    c.limits_config.discover_service_name = Config::default().limits_config.discover_service_name;
    Ok(c)
}

#[tokio::test]
async fn promtail_requests_are_accepted_and_indexed() -> anyhow::Result<()> {
    let mut s = TestServer::start(conformance_config()?).await?;
    assert_eq!(replay_promtail(&s).await?, 3);
    let wide = vec![
        ("start".to_string(), "1795683600000000000".to_string()),
        ("end".to_string(), "1795735917000000000".to_string()),
    ];
    let labels = json_get(&s, "/loki/api/v1/labels", &wide, &[]).await?;
    let names: Vec<&str> = labels["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        names.contains(&"job") && names.contains(&"cluster"),
        "labels: {names:?}"
    );
    let mut p = wide.clone();
    p.push(("match[]".into(), "{cluster=\"prod-1\"}".into()));
    let series = json_get(&s, "/loki/api/v1/series", &p, &[]).await?;
    assert!(
        !series["data"].as_array().map(Vec::is_empty).unwrap_or(true),
        "no series: {series}"
    );
    s.stop().await
}

#[tokio::test]
async fn json_gzip_and_metadata_pushes_are_stored() -> anyhow::Result<()> {
    let mut s = TestServer::start(open_config()?).await?;
    let body = json!({"streams": [{"stream": {"job": "gz", "host": "h1"}, "values": [
        [(T0 + 1).to_string(), "first line"],
        [(T0 + 2).to_string(), "second line", {"trace_id": "abc"}]
    ]}]});
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(body.to_string().as_bytes())?;
    let (status, text) = s
        .post(
            "/loki/api/v1/push",
            enc.finish()?,
            &[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
        )
        .await?;
    assert_eq!(status, 204, "{text}");
    let mut p = range();
    p.push(("match[]".into(), "{job=\"gz\"}".into()));
    let series = json_get(&s, "/loki/api/v1/series", &p, &[]).await?;
    assert_eq!(
        series["data"],
        json!([{"job": "gz", "host": "h1", "service_name": "gz"}])
    );
    s.stop().await
}

#[tokio::test]
async fn partial_accept_stores_valid_entries_and_reports_bad_ones() -> anyhow::Result<()> {
    let mut config = conformance_config()?;
    config.limits_config.max_line_size = 16;
    let mut s = TestServer::start(config).await?;
    let body = json!({"streams": [
        {"stream": {"job": "ok"}, "values": [[(T0 + 1).to_string(), "short"], [(T0 + 2).to_string(), "this line is much too long"]]},
        {"stream": {"job": "dup", "job2": "x", "0bad": "y"}, "values": [[(T0 + 1).to_string(), "x"]]}
    ]});
    let (status, text) = s
        .post(
            "/loki/api/v1/push",
            body.to_string().into_bytes(),
            &[("content-type", "application/json")],
        )
        .await?;
    assert_eq!(status, 400);
    assert_eq!(
        text.trim().lines().count(),
        2,
        "one line per rejection: {text}"
    );
    assert!(
        text.contains("max entry size '16' bytes exceeded"),
        "{text}"
    );
    let values = json_get(&s, "/loki/api/v1/label/job/values", &range(), &[]).await?;
    assert_eq!(values["data"], json!(["ok"]));
    s.stop().await
}

#[tokio::test]
async fn rate_limit_answers_429() -> anyhow::Result<()> {
    let mut config = conformance_config()?;
    config.limits_config.ingestion_rate_mb = 0.001;
    config.limits_config.ingestion_burst_size_mb = 0.001; // ~1 KiB
    let mut s = TestServer::start(config).await?;
    let big = "x".repeat(600);
    let body = json!({"streams": [{"stream": {"job": "rl"}, "values": [[(T0 + 1).to_string(), big], [(T0 + 2).to_string(), big]]}]});
    let (status, text) = s
        .post(
            "/loki/api/v1/push",
            body.to_string().into_bytes(),
            &[("content-type", "application/json")],
        )
        .await?;
    assert_eq!(status, 429, "{text}");
    assert!(
        text.contains("Ingestion rate limit exceeded for user fake"),
        "{text}"
    );
    let values = json_get(&s, "/loki/api/v1/label/job/values", &range(), &[]).await?;
    assert_eq!(values["data"], json!([]), "nothing stored after a 429");
    s.stop().await
}

#[tokio::test]
async fn malformed_bodies_get_400_and_the_server_stays_up() -> anyhow::Result<()> {
    let mut s = TestServer::start(conformance_config()?).await?;
    type Case<'a> = (Vec<u8>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            b"{not json".to_vec(),
            vec![("content-type", "application/json")],
        ),
        (
            b"{\"streams\":[{\"stream\":{\"a\":\"b\"},\"values\":[[\"x\",\"y\"]]}]}".to_vec(),
            vec![("content-type", "application/json")],
        ),
        (
            b"\x00\x01garbage".to_vec(),
            vec![("content-type", "application/x-protobuf")],
        ),
        (
            b"not gzip".to_vec(),
            vec![
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
        ),
        (b"{}".to_vec(), vec![("content-type", "text/csv")]),
    ];
    for (body, headers) in cases {
        let (status, text) = s.post("/loki/api/v1/push", body, &headers).await?;
        assert_eq!(status, 400, "headers {headers:?}: {text}");
        assert!(!text.trim().is_empty(), "a 400 explains itself");
    }
    let (status, _) = s.get("/ready", &[], &[]).await?;
    assert_eq!(status, 200);
    s.stop().await
}

#[tokio::test]
async fn tenants_need_org_id_when_auth_is_enabled() -> anyhow::Result<()> {
    let mut config = conformance_config()?;
    config.auth_enabled = true;
    let mut s = TestServer::start(config).await?;
    let body =
        json!({"streams": [{"stream": {"job": "t"}, "values": [[(T0 + 1).to_string(), "x"]]}]})
            .to_string();
    let (status, _) = s
        .post(
            "/loki/api/v1/push",
            body.clone().into_bytes(),
            &[("content-type", "application/json")],
        )
        .await?;
    assert_eq!(status, 401);
    let (status, _) = s
        .post(
            "/loki/api/v1/push",
            body.into_bytes(),
            &[
                ("content-type", "application/json"),
                ("x-scope-orgid", "team-a"),
            ],
        )
        .await?;
    assert_eq!(status, 204);
    let a = vec![("X-Scope-OrgID".to_string(), "team-a".to_string())];
    let b = vec![("X-Scope-OrgID".to_string(), "team-b".to_string())];
    assert_eq!(
        json_get(&s, "/loki/api/v1/label/job/values", &range(), &a).await?["data"],
        json!(["t"])
    );
    assert_eq!(
        json_get(&s, "/loki/api/v1/label/job/values", &range(), &b).await?["data"],
        json!([])
    );
    s.stop().await
}

#[tokio::test]
async fn status_endpoints_answer() -> anyhow::Result<()> {
    let mut s = TestServer::start(conformance_config()?).await?;
    let (status, body) = s.get("/ready", &[], &[]).await?;
    assert_eq!((status, body.trim()), (200, "ready"));
    let (status, body) = s.get("/metrics", &[], &[]).await?;
    assert_eq!(status, 200);
    for name in [
        "tovlog_ingest_lines_received_total",
        "tovlog_wal_bytes",
        "tovlog_head_bytes",
        "tovlog_chunk_files",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics");
    }
    let info = json_get(&s, "/loki/api/v1/status/buildinfo", &[], &[]).await?;
    assert_eq!(info["version"], json!(env!("CARGO_PKG_VERSION")));
    s.stop().await
}

#[tokio::test]
async fn flushed_chunks_are_read_after_a_restart() -> anyhow::Result<()> {
    let mut s = TestServer::start(conformance_config()?).await?;
    s.push_dataset().await?;
    let q = vec![
        (
            "query".to_string(),
            "sum(count_over_time({job=\"nginx\"}[2h]))".to_string(),
        ),
        ("time".to_string(), (T0 + 7_200_000_000_000).to_string()),
    ];
    let before = json_get(&s, "/loki/api/v1/query", &q, &[]).await?;
    let dir = s.take_dir();
    s.stop().await?; // graceful: the head is flushed to Parquet chunks
    let data_dir = s.data_dir.clone();
    let mut s = TestServer::start_in(conformance_config()?, &data_dir).await?;
    let after = json_get(&s, "/loki/api/v1/query", &q, &[]).await?;
    assert_eq!(before["data"]["result"], after["data"]["result"]);
    let n: f64 = after["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or("0")
        .parse()?;
    assert!(n > 1000.0, "nginx lines after restart: {n}");
    let (status, metrics) = s.get("/metrics", &[], &[]).await?;
    assert_eq!(status, 200);
    assert!(
        !metrics.contains("\ntovlog_chunk_files 0\n"),
        "chunks were written: {metrics}"
    );
    s.stop().await?;
    drop(dir);
    Ok(())
}
