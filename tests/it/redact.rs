//! Redaction at ingest over real HTTP: secrets pushed as Loki JSON and as Promtail protobuf, in
//! lines and in structured metadata, come back as `<redacted:KIND>`, are counted on `/metrics`,
//! and are found nowhere under the data directory: not in the WAL before a flush, not in any file
//! after it, and not in the answers of a restarted server reading the chunks.

use std::path::Path;

use prost::Message;
use serde_json::{json, Value};
use tovlog::Config;

use crate::{
    compare::Case,
    conformance::{conformance_dir, run_cases},
    server::{conformance_config, TestServer},
};

/// Loki's push protobuf (`pkg/push/push.proto`), as Promtail sends it.
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<Stream>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Stream {
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<Entry>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        pub line: String,
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPair>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
}

/// Every secret pushed below; none may be stored anywhere.
const SECRETS: &[&str] = &[
    "hunter2-Qx81",
    "cs-9Lk2Zp",
    "eyJhbGciOiJIUzI1NiJ9.tovlogBearer42",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "ghp_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij",
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "4111 1111 1111 1111",
    "0123456789abcdef0123456789abcdef",
    "meta-pw-77Zq",
    "meta-tok-55Yy",
    "5500-0000-0000-0004",
    "pr0to-Pw-31",
    "cHJvdG86c2VjcmV0OTk=",
    "6011111111111117",
    "xoxb-123456789012-abcdefABCDEF",
    "proto-bearer-123456",
];

/// Stored text that must be found where the secrets must not: proves the raw search can see
/// the WAL's bytes at all.
const CANARY: &str = "login-canary-Zr7";

const TENANT: &str = "acme";

fn config() -> anyhow::Result<Config> {
    let mut c = Config::from_yaml(
        r#"
limits_config:
  redaction:
    enabled: true
    custom:
      - {name: session_id, regex: "sid=([a-f0-9]{32})"}
    tenants:
      plain: {enabled: false}
"#,
    )?;
    c.validate()?;
    c.auth_enabled = true;
    Ok(c)
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) - 60_000_000_000
}

async fn push_json(s: &TestServer, tenant: &str, body: Value) -> anyhow::Result<()> {
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
    anyhow::ensure!(status == 204, "JSON push: {status} {text}");
    Ok(())
}

async fn push_all(s: &TestServer, t0: i64) -> anyhow::Result<()> {
    let ts = |i: i64| (t0 + i).to_string();
    push_json(
        s,
        TENANT,
        json!({"streams": [{"stream": {"job": "redact", "src": "json"}, "values": [
            [ts(1), format!("level=info user=bob password=hunter2-Qx81 msg={CANARY}"),
                {"password": "meta-pw-77Zq", "note": "token=meta-tok-55Yy", "card": "5500-0000-0000-0004", "trace_id": "abc123"}],
            [ts(2), r#"{"user":"amy","client_secret":"cs-9Lk2Zp","ok":true}"#],
            [ts(3), "GET /api Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.tovlogBearer42"],
            [ts(4), "stripe key sk_live_4eC39HqLyjWDarjtT1zdp7dc github ghp_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij"],
            [ts(5), "s3 client AKIAIOSFODNN7EXAMPLE aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"],
            [ts(6), "charged 4111 1111 1111 1111 for order 4111111111111112"],
            [ts(7), "resume sid=0123456789abcdef0123456789abcdef"]
        ]}]}),
    )
    .await?;

    let entry = |i: i64, line: &str, metadata: &[(&str, &str)]| proto::Entry {
        timestamp: Some(proto::Timestamp {
            seconds: (t0 + i).div_euclid(1_000_000_000),
            nanos: (t0 + i).rem_euclid(1_000_000_000) as i32,
        }),
        line: line.to_string(),
        structured_metadata: metadata
            .iter()
            .map(|(k, v)| proto::LabelPair {
                name: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
    };
    let req = proto::PushRequest {
        streams: vec![proto::Stream {
            labels: r#"{job="redact", src="proto"}"#.to_string(),
            entries: vec![
                entry(
                    11,
                    r#"proto login password="pr0to-Pw-31" done"#,
                    &[("authorization", "Bearer proto-bearer-123456")],
                ),
                entry(
                    12,
                    r#"curl -H "authorization: Basic cHJvdG86c2VjcmV0OTk=""#,
                    &[],
                ),
                entry(
                    13,
                    "card 6011111111111117 xoxb-123456789012-abcdefABCDEF",
                    &[],
                ),
            ],
        }],
    };
    let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec())?;
    let (status, text) = s
        .post(
            "/loki/api/v1/push",
            body,
            &[
                ("content-type", "application/x-protobuf"),
                ("x-scope-orgid", TENANT),
            ],
        )
        .await?;
    anyhow::ensure!(status == 204, "protobuf push: {status} {text}");

    // A tenant whose override turns redaction off keeps its lines verbatim.
    push_json(
        s,
        "plain",
        json!({"streams": [{"stream": {"job": "redact"}, "values": [[ts(1), "password=plain-visible-1"]]}]}),
    )
    .await
}

/// Every line and metadata value of `{job="redact"}` for `tenant`, as one JSON text.
async fn query(s: &TestServer, tenant: &str, t0: i64) -> anyhow::Result<String> {
    let params = vec![
        ("query".to_string(), r#"{job="redact"}"#.to_string()),
        ("start".to_string(), (t0 - 1_000_000_000).to_string()),
        ("end".to_string(), (t0 + 60_000_000_000).to_string()),
        ("limit".to_string(), "1000".to_string()),
    ];
    let (status, body) = s
        .get(
            "/loki/api/v1/query_range",
            &params,
            &[("X-Scope-OrgID".to_string(), tenant.to_string())],
        )
        .await?;
    anyhow::ensure!(status == 200, "query: {status} {body}");
    Ok(body)
}

fn check_answer(body: &str) -> anyhow::Result<()> {
    let v: Value = serde_json::from_str(body)?;
    let lines: usize = v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["values"].as_array().map_or(0, Vec::len))
        .sum();
    anyhow::ensure!(
        lines == 10,
        "expected the 10 pushed lines, got {lines}: {body}"
    );
    for secret in SECRETS {
        anyhow::ensure!(!body.contains(secret), "{secret:?} came back: {body}");
    }
    for kind in [
        "password",
        "bearer",
        "api_key",
        "aws_key",
        "credit_card",
        "session_id",
    ] {
        anyhow::ensure!(
            body.contains(&format!("<redacted:{kind}>")),
            "no <redacted:{kind}> in {body}"
        );
    }
    // Shapes kept: the key, the JSON structure, an order id that fails Luhn, plain metadata.
    for kept in [
        "password=<redacted:password>",
        r#"\"client_secret\":\"<redacted:password>\""#,
        "Authorization: Bearer <redacted:bearer>",
        "order 4111111111111112",
        "sid=<redacted:session_id>",
        CANARY,
        "abc123",
    ] {
        anyhow::ensure!(body.contains(kept), "{kept:?} missing from {body}");
    }
    Ok(())
}

/// Paths of every file under `dir` holding `needle` in its raw bytes.
fn files_containing(dir: &Path, needle: &str) -> anyhow::Result<Vec<String>> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path)?;
                if memchr::memmem::find(&bytes, needle.as_bytes()).is_some() {
                    hits.push(path.display().to_string());
                }
            }
        }
    }
    Ok(hits)
}

fn no_secret_on_disk(dir: &Path) -> anyhow::Result<()> {
    for secret in SECRETS {
        let hits = files_containing(dir, secret)?;
        anyhow::ensure!(hits.is_empty(), "{secret:?} is stored in {hits:?}");
    }
    Ok(())
}

/// `tovlog_ingest_redactions_total{tenant, rule}` from a `/metrics` text.
fn redactions(metrics: &str, tenant: &str, rule: &str) -> Option<u64> {
    let prefix = format!("tovlog_ingest_redactions_total{{tenant=\"{tenant}\",rule=\"{rule}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_redacted_before_the_wal() -> anyhow::Result<()> {
    let mut s = TestServer::start(config()?).await?;
    let dir = s.take_dir().ok_or_else(|| anyhow::anyhow!("no temp dir"))?;
    let t0 = now_ns();
    push_all(&s, t0).await?;

    check_answer(&query(&s, TENANT, t0).await?)?;
    let plain = query(&s, "plain", t0).await?;
    anyhow::ensure!(plain.contains("password=plain-visible-1"), "{plain}");

    let (_, metrics) = s.get("/metrics", &[], &[]).await?;
    for (rule, n) in [
        ("password", 5),
        ("bearer", 3),
        ("api_key", 3),
        ("aws_key", 2),
        ("credit_card", 3),
        ("session_id", 1),
    ] {
        assert_eq!(
            redactions(&metrics, TENANT, rule),
            Some(n),
            "rule {rule}:\n{metrics}"
        );
    }
    assert_eq!(redactions(&metrics, "plain", "password"), None);

    // The acknowledged push is in the WAL, whose bytes are plain: the canary is there, and no
    // secret is.
    let wal = files_containing(dir.path(), CANARY)?;
    anyhow::ensure!(
        wal.iter().any(|p| p.ends_with(".wal")),
        "the canary is not in a WAL file ({wal:?}): the raw search proves nothing"
    );
    no_secret_on_disk(dir.path())?;

    let (status, body) = s.post("/flush", Vec::new(), &[]).await?;
    anyhow::ensure!(status == 204, "flush: {status} {body}");
    no_secret_on_disk(dir.path())?;

    // Chunks are zstd Parquet, which a byte search cannot read: ask a restarted server.
    s.stop().await?;
    let mut s = TestServer::start_in(config()?, dir.path()).await?;
    check_answer(&query(&s, TENANT, t0).await?)?;
    no_secret_on_disk(dir.path())?;
    s.stop().await
}

#[tokio::test]
async fn an_invalid_rule_stops_startup_with_its_key() -> anyhow::Result<()> {
    let yaml = "limits_config:\n  redaction:\n    custom: [{name: broken, regex: 'sid=([a-f'}]\n";
    let config = Config::from_yaml(yaml)?;
    let err = match config.validate() {
        Ok(()) => anyhow::bail!("an invalid regex was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("limits_config.redaction.custom[0] (broken): invalid regex"),
        "{err}"
    );
    // The server refuses to start too, not only `check-config`.
    match TestServer::start(config).await {
        Ok(mut s) => {
            s.stop().await?;
            anyhow::bail!("the server started with an invalid redaction rule")
        }
        Err(e) => assert!(format!("{e:#}").contains("invalid regex"), "{e:#}"),
    }
    Ok(())
}

/// The Loki oracle still matches with every built-in rule on: the conformance data holds no
/// secret, and nothing in it is mistaken for one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_goldens_match_with_redaction_on() -> anyhow::Result<()> {
    let mut config = conformance_config()?;
    config.limits_config.redaction.enabled = true;
    let mut server = TestServer::start(config).await?;
    server.push_dataset().await?;
    let cases: Vec<Case> =
        serde_json::from_slice(&std::fs::read(conformance_dir().join("loki-goldens.json"))?)?;
    let result = run_cases(&server, &cases).await;
    let (_, metrics) = server.get("/metrics", &[], &[]).await?;
    server.stop().await?;
    result?;
    let redacted: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("tovlog_ingest_redactions_total{"))
        .collect();
    assert!(
        redacted.is_empty(),
        "the dataset was redacted: {redacted:?}"
    );
    Ok(())
}
