//! OTLP/HTTP logs ingest over real HTTP: the OpenTelemetry Python SDK's exporter against our
//! server, OTLP/JSON and gzip-compressed protobuf bodies built here, bad bodies, partial
//! success, and CORS on the push endpoints. Every check reads the data back through
//! `/loki/api/v1/query_range`.

use std::{io::Write, path::Path, process::Stdio};

use prost::Message as _;
use serde_json::{json, Value};
use tovlog::{
    ingest::otlp::proto::{self, any_value::Value as Any},
    Config,
};

use crate::server::TestServer;

const T0: i64 = 1_763_596_800_000_000_000; // 2025-11-20T00:00:00Z

/// One entry read back: index labels, timestamp, line, structured metadata.
#[derive(Debug)]
struct Row {
    labels: serde_json::Map<String, Value>,
    ts: i64,
    line: String,
    metadata: serde_json::Map<String, Value>,
}

impl Row {
    fn label(&self, k: &str) -> Option<&str> {
        self.labels.get(k).and_then(Value::as_str)
    }
    fn meta(&self, k: &str) -> Option<&str> {
        self.metadata.get(k).and_then(Value::as_str)
    }
}

/// Run `query` over [start, end] for `tenant` with categorised labels, oldest first.
async fn read(
    s: &TestServer,
    tenant: &str,
    query: &str,
    start: i64,
    end: i64,
) -> anyhow::Result<Vec<Row>> {
    let params = vec![
        ("query".to_string(), query.to_string()),
        ("start".to_string(), start.to_string()),
        ("end".to_string(), end.to_string()),
        ("limit".to_string(), "1000".to_string()),
        ("direction".to_string(), "forward".to_string()),
    ];
    let headers = vec![
        ("X-Scope-OrgID".to_string(), tenant.to_string()),
        (
            "X-Loki-Response-Encoding-Flags".to_string(),
            "categorize-labels".to_string(),
        ),
    ];
    let (status, body) = s.get("/loki/api/v1/query_range", &params, &headers).await?;
    anyhow::ensure!(status == 200, "query {query} → {status}: {body}");
    let v: Value = serde_json::from_str(&body)?;
    let mut rows = Vec::new();
    for stream in v["data"]["result"].as_array().into_iter().flatten() {
        let labels = stream["stream"].as_object().cloned().unwrap_or_default();
        for e in stream["values"].as_array().into_iter().flatten() {
            let metadata = e[2]["structuredMetadata"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            // `stream` holds every label of the entry; the index labels are what is left once
            // the structured metadata is taken out.
            let mut index = labels.clone();
            index.retain(|k, _| !metadata.contains_key(k));
            rows.push(Row {
                labels: index,
                ts: e[0].as_str().unwrap_or("0").parse()?,
                line: e[1].as_str().unwrap_or_default().to_string(),
                metadata,
            });
        }
    }
    rows.sort_by_key(|r| r.ts);
    Ok(rows)
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// A Python virtual environment with the OpenTelemetry SDK and its OTLP/HTTP exporter, made
/// once under target/ and reused. Any failure here fails the test: the real client is the
/// point of it.
async fn python_with_otel_sdk() -> anyhow::Result<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("otlp-python-venv");
    let python = dir.join("bin").join("python");
    let probe =
        "import opentelemetry.sdk._logs, opentelemetry.exporter.otlp.proto.http._log_exporter";
    let ready = python.exists()
        && tokio::process::Command::new(&python)
            .args(["-c", probe])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map(|s| s.success())
            .unwrap_or(false);
    if ready {
        return Ok(python);
    }
    let out = tokio::process::Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&dir)
        .output()
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot run python3 (install python3 and python3-venv): {e}")
        })?;
    anyhow::ensure!(
        out.status.success(),
        "python3 -m venv failed (install python3-venv): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tokio::process::Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "opentelemetry-sdk",
            "opentelemetry-exporter-otlp-proto-http",
        ])
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "pip install of the OpenTelemetry SDK failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(python)
}

/// Logs three records through Python's `logging` and the SDK's `LoggingHandler`, one inside a
/// span, exported gzip-compressed by the OTLP/HTTP protobuf exporter; prints the span's ids.
const PYTHON_EMITTER: &str = r#"
import json
import logging
import sys

from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

url, tenant = sys.argv[1], sys.argv[2]
resource = Resource.create({
    "service.name": "forensics-api",
    "deployment.environment": "prod",
    "team.owner": "storage-sre",
})
provider = LoggerProvider(resource=resource)
exporter = OTLPLogExporter(
    endpoint=url + "/otlp/v1/logs",
    headers={"X-Scope-OrgID": tenant},
    compression=Compression.Gzip,
)
provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
set_logger_provider(provider)
tracer = TracerProvider(resource=resource).get_tracer("forensics.audit")

log = logging.getLogger("forensics.audit")
log.setLevel(logging.DEBUG)
log.propagate = False
log.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=provider))

with tracer.start_as_current_span("drop-table") as span:
    ctx = span.get_span_context()
    log.warning("user mallory dropped table orders", extra={"user.id": "mallory", "db.table": "orders"})
log.info("backup finished", extra={"backup.bytes": 1024})
log.error("restore failed", extra={"retry": True})

flushed = provider.force_flush(10000)
provider.shutdown()
print(json.dumps({
    "flushed": flushed,
    "trace_id": format(ctx.trace_id, "032x"),
    "span_id": format(ctx.span_id, "016x"),
    "flags": int(ctx.trace_flags),
}))
"#;

#[tokio::test]
async fn python_sdk_exporter_logs_are_queryable() -> anyhow::Result<()> {
    let python = python_with_otel_sdk().await?;
    let mut s = TestServer::start(Config::default()).await?;
    let work = tempfile::tempdir()?;
    let script = work.path().join("emit.py");
    std::fs::write(&script, PYTHON_EMITTER)?;
    let before = now_ns();
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .args([s.url.as_str(), "py-tenant"])
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "emitter failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        printed["flushed"],
        json!(true),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trace_id = printed["trace_id"].as_str().unwrap_or_default().to_string();
    let span_id = printed["span_id"].as_str().unwrap_or_default().to_string();
    assert_eq!((trace_id.len(), span_id.len()), (32, 16));

    let (start, end) = (before - 60_000_000_000, now_ns() + 60_000_000_000);
    let rows = read(
        &s,
        "py-tenant",
        r#"{service_name="forensics-api"}"#,
        start,
        end,
    )
    .await?;
    let lines: Vec<&str> = rows.iter().map(|r| r.line.as_str()).collect();
    assert_eq!(
        lines,
        [
            "user mallory dropped table orders",
            "backup finished",
            "restore failed"
        ]
    );
    for r in &rows {
        assert_eq!(r.label("service_name"), Some("forensics-api"));
        assert_eq!(r.label("deployment_environment"), Some("prod"));
        // Resource attributes outside Loki's index list are structured metadata.
        assert_eq!(r.label("team_owner"), None);
        assert_eq!(r.meta("team_owner"), Some("storage-sre"));
        assert_eq!(r.meta("telemetry_sdk_language"), Some("python"));
        assert_eq!(r.meta("scope_name"), Some("forensics.audit"));
        assert!(
            r.ts >= before && r.ts <= end,
            "timestamp {} out of range",
            r.ts
        );
    }
    // The index holds exactly one stream, labelled with the resource's index-list attributes.
    let series = s
        .get(
            "/loki/api/v1/series",
            &[
                ("match[]".to_string(), r#"{service_name=~".+"}"#.to_string()),
                ("start".to_string(), start.to_string()),
                ("end".to_string(), end.to_string()),
            ],
            &[("X-Scope-OrgID".to_string(), "py-tenant".to_string())],
        )
        .await?;
    assert_eq!(series.0, 200, "{}", series.1);
    let series: Value = serde_json::from_str(&series.1)?;
    // The SDK adds a random `service.instance.id`, which is on Loki's index list too.
    let instance = series["data"][0]["service_instance_id"]
        .as_str()
        .unwrap_or_default();
    assert!(!instance.is_empty(), "{series}");
    assert_eq!(
        series["data"],
        json!([{"deployment_environment": "prod", "service_instance_id": instance,
                "service_name": "forensics-api"}])
    );
    let [dropped, backup, restore] = &rows[..] else {
        anyhow::bail!("expected 3 rows, got {rows:?}");
    };
    assert_eq!(dropped.meta("trace_id"), Some(trace_id.as_str()));
    assert_eq!(dropped.meta("span_id"), Some(span_id.as_str()));
    // The span's W3C trace flags (sampled, and random with recent SDKs).
    let flags = printed["flags"].as_u64().unwrap_or_default();
    assert_eq!(flags & 1, 1, "the span is sampled");
    assert_eq!(dropped.meta("flags"), Some(flags.to_string().as_str()));
    assert_eq!(dropped.meta("user_id"), Some("mallory"));
    assert_eq!(dropped.meta("db_table"), Some("orders"));
    assert_eq!(dropped.meta("severity_number"), Some("13"));
    assert!(dropped
        .meta("severity_text")
        .is_some_and(|t| t.starts_with("WARN")));
    assert_eq!(dropped.meta("detected_level"), Some("warn"));
    assert_eq!(backup.meta("detected_level"), Some("info"));
    assert_eq!(backup.meta("severity_number"), Some("9"));
    assert_eq!(backup.meta("backup_bytes"), Some("1024"));
    assert_eq!(backup.meta("trace_id"), None);
    assert_eq!(restore.meta("detected_level"), Some("error"));
    assert_eq!(restore.meta("retry"), Some("true"));

    // The forensics question: every line of that trace.
    let q = format!(r#"{{service_name="forensics-api"}} | trace_id="{trace_id}""#);
    let traced = read(&s, "py-tenant", &q, start, end).await?;
    assert_eq!(traced.len(), 1);
    assert_eq!(traced[0].line, "user mallory dropped table orders");
    // Another tenant sees nothing.
    assert!(
        read(&s, "other", r#"{service_name="forensics-api"}"#, start, end)
            .await?
            .is_empty()
    );
    s.stop().await
}

fn kv(key: &str, value: Any) -> proto::KeyValue {
    proto::KeyValue {
        key: key.to_string(),
        value: Some(proto::AnyValue { value: Some(value) }),
    }
}

fn text(v: &str) -> Any {
    Any::StringValue(v.to_string())
}

fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes)?;
    Ok(enc.finish()?)
}

/// POST to /otlp/v1/logs; returns status, Content-Type and body.
async fn post_otlp(
    s: &TestServer,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String, Vec<u8>)> {
    let mut req = s.client.post(format!("{}/otlp/v1/logs", s.url)).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((status, ct, resp.bytes().await?.to_vec()))
}

#[tokio::test]
async fn json_and_gzip_bodies_map_as_loki_does() -> anyhow::Result<()> {
    let mut s = TestServer::start(Config::default()).await?;
    let trace = "5B8EFFF798038103D269B633813FC60C";
    let body = json!({"resourceLogs": [
        {"resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "checkout"}},
            {"key": "k8s.namespace.name", "value": {"stringValue": "shop"}},
            {"key": "host.name", "value": {"stringValue": "node-7"}}
        ]},
        "scopeLogs": [{"scope": {"name": "audit", "version": "2.0",
                                 "attributes": [{"key": "lib.kind", "value": {"stringValue": "sdk"}}]},
            "logRecords": [
                {"timeUnixNano": (T0 + 1).to_string(), "observedTimeUnixNano": (T0 + 9).to_string(),
                 "severityNumber": 17, "severityText": "ERROR", "flags": 1,
                 "body": {"stringValue": "charge declined"}, "traceId": trace, "spanId": "EEE19B7EC3C1B174",
                 "attributes": [
                    {"key": "http.status_code", "value": {"intValue": "402"}},
                    {"key": "order", "value": {"kvlistValue": {"values": [
                        {"key": "id", "value": {"intValue": 42}}]}}}
                 ]},
                {"timeUnixNano": 0, "observedTimeUnixNano": T0 + 2,
                 "body": {"kvlistValue": {"values": [
                    {"key": "msg", "value": {"stringValue": "refund <ok>"}},
                    {"key": "amount", "value": {"doubleValue": 12.5}},
                    {"key": "tags", "value": {"arrayValue": {"values": [
                        {"stringValue": "a"}, {"boolValue": true}]}}}
                 ]}}}
            ]}]},
        {"resource": {"attributes": [{"key": "team", "value": {"stringValue": "payments"}}]},
         "scopeLogs": [{"logRecords": [{"timeUnixNano": (T0 + 3).to_string(),
                                        "body": {"stringValue": "orphan line level=warn"}}]}]}
    ]});
    let (status, ct, resp) = post_otlp(
        &s,
        body.to_string().into_bytes(),
        &[("content-type", "application/json"), ("x-scope-orgid", "t")],
    )
    .await?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(ct, "application/json");
    assert_eq!(serde_json::from_slice::<Value>(&resp)?, json!({}));

    let end = T0 + 60_000_000_000;
    let rows = read(&s, "t", r#"{k8s_namespace_name="shop"}"#, T0, end).await?;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (declined, refund) = (&rows[0], &rows[1]);
    assert_eq!(declined.labels.len(), 2, "{:?}", declined.labels);
    assert_eq!(declined.label("service_name"), Some("checkout"));
    assert_eq!(
        (declined.ts, declined.line.as_str()),
        (T0 + 1, "charge declined")
    );
    let want = [
        ("host_name", "node-7"),
        ("scope_name", "audit"),
        ("scope_version", "2.0"),
        ("lib_kind", "sdk"),
        ("http_status_code", "402"),
        ("order_id", "42"),
        ("severity_number", "17"),
        ("severity_text", "ERROR"),
        ("detected_level", "error"),
        ("flags", "1"),
        ("trace_id", "5b8efff798038103d269b633813fc60c"),
        ("span_id", "eee19b7ec3c1b174"),
    ];
    for (k, v) in want {
        assert_eq!(declined.meta(k), Some(v), "{k} in {:?}", declined.metadata);
    }
    let observed = (T0 + 9).to_string();
    assert_eq!(declined.meta("observed_timestamp"), Some(observed.as_str()));
    // No event time: the observed time is the timestamp; a map body is JSON, keys sorted.
    assert_eq!(refund.ts, T0 + 2);
    assert_eq!(
        refund.line,
        r#"{"amount":12.5,"msg":"refund \u003cok\u003e","tags":["a",true]}"#
    );
    assert_eq!(refund.meta("observed_timestamp"), None);
    assert_eq!(refund.meta("severity_number"), None);

    // No service.name and nothing to discover it from: unknown_service; without a severity
    // the level comes from the line, as for a Loki push.
    let orphan = read(&s, "t", r#"{service_name="unknown_service"}"#, T0, end).await?;
    assert_eq!(orphan.len(), 1);
    assert_eq!(orphan[0].line, "orphan line level=warn");
    assert_eq!(orphan[0].meta("team"), Some("payments"));
    assert_eq!(orphan[0].meta("detected_level"), Some("warn"));

    // The same data model as gzip-compressed protobuf.
    let req = proto::ExportLogsServiceRequest {
        resource_logs: vec![proto::ResourceLogs {
            resource: Some(proto::Resource {
                attributes: vec![
                    kv("service.name", text("ledger")),
                    kv("cloud.region", text("eu-west-3")),
                    kv("process.pid", Any::IntValue(4242)),
                ],
                dropped_attributes_count: 0,
            }),
            scope_logs: vec![proto::ScopeLogs {
                scope: None,
                log_records: vec![proto::LogRecord {
                    time_unix_nano: (T0 + 5) as u64,
                    severity_number: 21,
                    body: Some(proto::AnyValue {
                        value: Some(text("ledger corrupted")),
                    }),
                    attributes: vec![kv("blob", Any::BytesValue(b"\x00\x01".to_vec()))],
                    trace_id: vec![0x11; 16],
                    ..Default::default()
                }],
            }],
        }],
    };
    let (status, ct, resp) = post_otlp(
        &s,
        gzip(&req.encode_to_vec())?,
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "gzip"),
            ("x-scope-orgid", "t"),
        ],
    )
    .await?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(ct, "application/x-protobuf");
    let decoded = proto::ExportLogsServiceResponse::decode(resp.as_slice())?;
    assert_eq!(decoded.partial_success, None);
    let ledger = read(
        &s,
        "t",
        r#"{service_name="ledger", cloud_region="eu-west-3"}"#,
        T0,
        end,
    )
    .await?;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].line, "ledger corrupted");
    assert_eq!(ledger[0].meta("process_pid"), Some("4242"));
    assert_eq!(ledger[0].meta("blob"), Some("AAE="));
    assert_eq!(ledger[0].meta("detected_level"), Some("fatal"));
    assert_eq!(ledger[0].meta("trace_id"), Some("11".repeat(16).as_str()));

    // And gzip-compressed OTLP/JSON.
    let small = json!({"resourceLogs": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "gz-json"}}]},
        "scopeLogs": [{"logRecords": [{"timeUnixNano": (T0 + 7).to_string(),
                                       "body": {"stringValue": "compressed"}}]}]}]});
    let (status, _, resp) = post_otlp(
        &s,
        gzip(small.to_string().as_bytes())?,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
            ("x-scope-orgid", "t"),
        ],
    )
    .await?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    let gz = read(&s, "t", r#"{service_name="gz-json"}"#, T0, end).await?;
    assert_eq!(
        gz.iter().map(|r| r.line.as_str()).collect::<Vec<_>>(),
        ["compressed"]
    );
    s.stop().await
}

#[tokio::test]
async fn bad_bodies_are_rejected_with_a_message() -> anyhow::Result<()> {
    let mut config = Config::default();
    config.limits_config.max_line_size = 64;
    let mut s = TestServer::start(config).await?;
    let pb = [
        ("content-type", "application/x-protobuf"),
        ("x-scope-orgid", "t"),
    ];
    let js = [("content-type", "application/json"), ("x-scope-orgid", "t")];

    let (status, ct, body) = post_otlp(&s, b"\xff\xff\xff\xff".to_vec(), &pb).await?;
    assert_eq!((status, ct.as_str()), (400, "application/x-protobuf"));
    let st = proto::Status::decode(body.as_slice())?;
    assert_eq!(st.code, 3);
    assert!(
        st.message.contains("cannot decode protobuf"),
        "{}",
        st.message
    );

    let (status, ct, body) = post_otlp(&s, b"{not json".to_vec(), &js).await?;
    assert_eq!((status, ct.as_str()), (400, "application/json"));
    let v: Value = serde_json::from_slice(&body)?;
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot parse OTLP/JSON")),
        "{v}"
    );

    let bad_id = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"traceId": "not-hex", "body": {"stringValue": "x"}}]}]}]});
    let (status, _, body) = post_otlp(&s, bad_id.to_string().into_bytes(), &js).await?;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("traceId"));

    let short_id = proto::ExportLogsServiceRequest {
        resource_logs: vec![proto::ResourceLogs {
            resource: None,
            scope_logs: vec![proto::ScopeLogs {
                scope: None,
                log_records: vec![proto::LogRecord {
                    trace_id: vec![1, 2, 3],
                    ..Default::default()
                }],
            }],
        }],
    };
    let (status, _, body) = post_otlp(&s, short_id.encode_to_vec(), &pb).await?;
    assert_eq!(status, 400);
    let st = proto::Status::decode(body.as_slice())?;
    assert!(
        st.message.contains("trace_id must be 16 bytes"),
        "{}",
        st.message
    );

    let mut gz_headers = js.to_vec();
    gz_headers.push(("content-encoding", "gzip"));
    let (status, _, body) = post_otlp(&s, b"plain, not gzip".to_vec(), &gz_headers).await?;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("cannot decompress"));

    let (status, ct, body) = post_otlp(
        &s,
        b"x".to_vec(),
        &[("content-type", "text/plain"), ("x-scope-orgid", "t")],
    )
    .await?;
    assert_eq!(status, 415);
    assert!(ct.starts_with("text/plain"));
    assert!(String::from_utf8_lossy(&body).contains("application/x-protobuf"));

    let (status, _, _) =
        post_otlp(&s, b"{}".to_vec(), &[("content-type", "application/json")]).await?;
    assert_eq!(status, 401);

    // One record over max_line_size, one fine: 200 with partial success, the good one stored.
    let long = "x".repeat(100);
    let mixed = json!({"resourceLogs": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "partial"}}]},
        "scopeLogs": [{"logRecords": [
            {"timeUnixNano": (T0 + 1).to_string(), "body": {"stringValue": long}},
            {"timeUnixNano": (T0 + 2).to_string(), "body": {"stringValue": "short"}}]}]}]});
    let (status, _, body) = post_otlp(&s, mixed.to_string().into_bytes(), &js).await?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body)?;
    assert_eq!(v["partialSuccess"]["rejectedLogRecords"], json!("1"), "{v}");
    assert!(v["partialSuccess"]["errorMessage"]
        .as_str()
        .is_some_and(|m| m.contains("max entry size '64' bytes exceeded")));
    let rows = read(
        &s,
        "t",
        r#"{service_name="partial"}"#,
        T0,
        T0 + 10_000_000_000,
    )
    .await?;
    assert_eq!(
        rows.iter().map(|r| r.line.as_str()).collect::<Vec<_>>(),
        ["short"]
    );

    // Every record rejected: 400.
    let all_bad = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": (T0 + 3).to_string(), "body": {"stringValue": long}}]}]}]});
    let (status, _, body) = post_otlp(&s, all_bad.to_string().into_bytes(), &js).await?;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_slice(&body)?;
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("max entry size")),
        "{v}"
    );
    s.stop().await
}

/// Send a CORS preflight for POST from `origin` to `path`; returns status and headers.
async fn preflight(
    s: &TestServer,
    path: &str,
    origin: &str,
) -> anyhow::Result<(u16, reqwest::header::HeaderMap)> {
    let resp = s
        .client
        .request(reqwest::Method::OPTIONS, format!("{}{path}", s.url))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,content-encoding,x-scope-orgid",
        )
        .send()
        .await?;
    Ok((resp.status().as_u16(), resp.headers().clone()))
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn cors_is_answered_for_listed_origins_on_push_routes() -> anyhow::Result<()> {
    let app = "https://console.example:8443";
    let mut config = Config::default();
    config.server.cors_allowed_origins = vec![app.to_string()];
    config.validate()?;
    let mut s = TestServer::start(config).await?;

    for path in ["/otlp/v1/logs", "/loki/api/v1/push", "/api/prom/push"] {
        let (status, h) = preflight(&s, path, app).await?;
        assert!((200..300).contains(&status), "{path}: {status}");
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            Some(app),
            "{path}"
        );
        let allowed = header(&h, "access-control-allow-headers").unwrap_or_default();
        for want in [
            "content-type",
            "content-encoding",
            "x-scope-orgid",
            "authorization",
        ] {
            assert!(allowed.contains(want), "{path}: {want} not in {allowed}");
        }
        assert!(header(&h, "access-control-allow-methods").is_some_and(|m| m.contains("POST")));
        let (_, h) = preflight(&s, path, "https://evil.example").await?;
        assert_eq!(header(&h, "access-control-allow-origin"), None, "{path}");
    }

    // The actual request carries the header too, and is stored.
    let body = json!({"resourceLogs": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "browser"}}]},
        "scopeLogs": [{"logRecords": [{"timeUnixNano": (T0 + 1).to_string(),
                                       "body": {"stringValue": "clicked delete"}}]}]}]});
    let resp = s
        .client
        .post(format!("{}/otlp/v1/logs", s.url))
        .header("origin", app)
        .header("content-type", "application/json")
        .header("x-scope-orgid", "web")
        .body(body.to_string())
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        header(resp.headers(), "access-control-allow-origin"),
        Some(app)
    );
    let rows = read(
        &s,
        "web",
        r#"{service_name="browser"}"#,
        T0,
        T0 + 10_000_000_000,
    )
    .await?;
    assert_eq!(rows.len(), 1);

    // The query API is not opened to other origins.
    let resp = s
        .client
        .get(format!("{}/loki/api/v1/labels", s.url))
        .header("origin", app)
        .header("x-scope-orgid", "web")
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(header(resp.headers(), "access-control-allow-origin"), None);
    s.stop().await?;

    // `*` allows any origin.
    let mut config = Config::default();
    config.server.cors_allowed_origins = vec!["*".to_string()];
    let mut any = TestServer::start(config).await?;
    let (_, h) = preflight(&any, "/api/prom/push", "https://anything.example").await?;
    assert_eq!(header(&h, "access-control-allow-origin"), Some("*"));
    any.stop().await?;

    // Nothing configured: no CORS headers, and no preflight answer.
    let mut none = TestServer::start(Config::default()).await?;
    let (status, h) = preflight(&none, "/otlp/v1/logs", app).await?;
    assert_eq!(status, 405);
    assert_eq!(header(&h, "access-control-allow-origin"), None);
    none.stop().await?;

    // Origins that could never match a browser's Origin header are refused at startup.
    for bad in ["https://console.example/", "console.example", "ftp://x"] {
        let mut c = Config::default();
        c.server.cors_allowed_origins = vec![bad.to_string()];
        assert!(c.validate().is_err(), "{bad} accepted");
    }
    Ok(())
}
