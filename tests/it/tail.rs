//! Live tail over a real websocket (tokio-tungstenite against the server on a loopback port):
//! pipelines over pushed lines, recent entries first, categorize-labels, the per-tenant tail
//! limit, slow clients (drops reported, memory bounded) and shutdown.
//!
//! Waits are bounded by timeouts, never fixed sleeps; expectations are computed from the
//! lines pushed.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{
        client::IntoClientRequest,
        http::{HeaderName, HeaderValue},
        protocol::frame::coding::CloseCode,
        Message,
    },
    MaybeTlsStream, WebSocketStream,
};
use tovlog::Config;

use crate::server::{conformance_config, TestServer};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for something that should take milliseconds.
const WAIT: Duration = Duration::from_secs(10);

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

fn ws_url(s: &TestServer, path: &str, params: &[(&str, &str)]) -> String {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    format!("{}{path}?{query}", s.url.replacen("http", "ws", 1))
}

/// Open a tail; `Err` carries the HTTP status when the server refused the upgrade.
async fn open(
    s: &TestServer,
    path: &str,
    params: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> anyhow::Result<Result<Ws, u16>> {
    let mut req = ws_url(s, path, params).into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes())?,
            HeaderValue::from_str(v)?,
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(Ok(ws)),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Ok(Err(resp.status().as_u16())),
        Err(e) => Err(e.into()),
    }
}

async fn open_ok(
    s: &TestServer,
    params: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> anyhow::Result<Ws> {
    match open(s, "/loki/api/v1/tail", params, headers).await? {
        Ok(ws) => Ok(ws),
        Err(status) => anyhow::bail!("tail refused with HTTP {status}"),
    }
}

/// What the server sent next, ignoring pings.
enum Next {
    Frame(Value),
    Closed(Option<(u16, String)>),
    Timeout,
}

async fn next(ws: &mut Ws, wait: Duration) -> anyhow::Result<Next> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Ok(Next::Timeout),
            Ok(None) => return Ok(Next::Closed(None)),
            Ok(Some(m)) => m?,
        };
        match msg {
            Message::Text(t) => return Ok(Next::Frame(serde_json::from_str(t.as_str())?)),
            Message::Close(c) => {
                return Ok(Next::Closed(
                    c.map(|c| (u16::from(c.code), c.reason.as_str().to_owned())),
                ))
            }
            _ => {}
        }
    }
}

/// `(ts, line, labels)` of every value in a v1 frame, in frame order.
fn entries(frame: &Value) -> Vec<(i64, String, Value)> {
    let mut out = Vec::new();
    for s in frame["streams"].as_array().into_iter().flatten() {
        for v in s["values"].as_array().into_iter().flatten() {
            out.push((
                v[0].as_str().and_then(|t| t.parse().ok()).unwrap_or(0),
                v[1].as_str().unwrap_or_default().to_owned(),
                s["stream"].clone(),
            ));
        }
    }
    out
}

/// Read frames until `n` entries came (or fail after [`WAIT`]).
async fn collect(ws: &mut Ws, n: usize) -> anyhow::Result<Vec<(i64, String, Value)>> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next(ws, left).await? {
            Next::Frame(f) => got.extend(entries(&f)),
            Next::Closed(c) => anyhow::bail!("closed after {} entries: {c:?}", got.len()),
            Next::Timeout => anyhow::bail!("{} of {n} entries after {WAIT:?}: {got:?}", got.len()),
        }
    }
    Ok(got)
}

async fn push(s: &TestServer, tenant: &str, body: Value) -> anyhow::Result<()> {
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
    anyhow::ensure!(status == 204, "push failed: {status} {text}");
    Ok(())
}

async fn metric(s: &TestServer, name: &str) -> anyhow::Result<u64> {
    let (status, text) = s.get("/metrics", &[], &[]).await?;
    anyhow::ensure!(status == 200, "metrics: {status}");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no metric {name}"))
}

fn config(auth: bool) -> anyhow::Result<Config> {
    let mut c = conformance_config()?;
    c.auth_enabled = auth;
    Ok(c)
}

#[tokio::test]
async fn tail_streams_entries_through_the_pipeline() -> anyhow::Result<()> {
    let mut s = TestServer::start(config(false)?).await?;
    let query = r#"{job="x"} |= "keep" | logfmt | level="error""#;
    let mut ws = open_ok(&s, &[("query", query)], &[]).await?;
    let t = now_ns();
    let lines = [
        "level=error msg=keep-one",
        "level=error msg=drop-two",
        "level=info msg=keep-three",
        "level=error msg=keep-four",
        "msg=keep-five",
    ];
    let values: Vec<Value> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| json!([(t + i as i64).to_string(), l]))
        .collect();
    push(
        &s,
        "fake",
        json!({"streams": [
            {"stream": {"job": "x", "host": "a"}, "values": values},
            {"stream": {"job": "y"}, "values": [[t.to_string(), "level=error msg=keep-other"]]}
        ]}),
    )
    .await?;
    // Expected: the lines the pipeline keeps, oldest first, with the parsed labels.
    let expected: Vec<(i64, String)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("keep") && l.contains("level=error"))
        .map(|(i, l)| (t + i as i64, l.to_string()))
        .collect();
    let got = collect(&mut ws, expected.len()).await?;
    let got_lines: Vec<(i64, String)> = got.iter().map(|(t, l, _)| (*t, l.clone())).collect();
    assert_eq!(got_lines, expected);
    for (_, line, labels) in &got {
        let msg = line.rsplit("msg=").next().unwrap_or_default();
        assert_eq!(
            labels,
            &json!({"job": "x", "host": "a", "level": "error", "msg": msg})
        );
    }
    // Nothing else came in between: the next entry is the next matching push.
    let t2 = now_ns();
    push(
        &s,
        "fake",
        json!({"streams": [{"stream": {"job": "x", "host": "a"}, "values": [
            [t2.to_string(), "level=error msg=drop-late"],
            [(t2 + 1).to_string(), "level=error msg=keep-sentinel"]
        ]}]}),
    )
    .await?;
    let got = collect(&mut ws, 1).await?;
    assert_eq!(got[0].1, "level=error msg=keep-sentinel");
    assert_eq!(got.len(), 1);
    ws.close(None).await?;
    s.stop().await
}

#[tokio::test]
async fn tail_starts_with_the_newest_recent_entries() -> anyhow::Result<()> {
    let mut s = TestServer::start(config(false)?).await?;
    let now = now_ns();
    let min = 60_000_000_000i64;
    // Ten entries, one a minute, the oldest 10 minutes ago.
    let old: Vec<(i64, String)> = (0..10)
        .map(|i| (now - (10 - i) * min, format!("old {i}")))
        .collect();
    let values: Vec<Value> = old.iter().map(|(t, l)| json!([t.to_string(), l])).collect();
    push(
        &s,
        "fake",
        json!({"streams": [{"stream": {"job": "h"}, "values": values}]}),
    )
    .await?;
    // `start` 5 m 30 s ago as RFC3339, limit 3: the newest 3 of those after start, oldest first.
    let start_ns = now - 5 * min - 30_000_000_000;
    let start = chrono::DateTime::from_timestamp(
        start_ns.div_euclid(1_000_000_000),
        start_ns.rem_euclid(1_000_000_000) as u32,
    )
    .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
    .unwrap_or_default();
    let mut expected: Vec<(i64, String)> = old
        .iter()
        .filter(|(t, _)| *t >= start_ns)
        .cloned()
        .collect();
    expected.drain(..expected.len() - 3);
    let mut ws = open_ok(
        &s,
        &[("query", r#"{job="h"}"#), ("start", &start), ("limit", "3")],
        &[],
    )
    .await?;
    let got = collect(&mut ws, 3).await?;
    let got: Vec<(i64, String)> = got.into_iter().map(|(t, l, _)| (t, l)).collect();
    assert_eq!(got, expected);
    // Then live entries.
    let t = now_ns();
    push(
        &s,
        "fake",
        json!({"streams": [{"stream": {"job": "h"}, "values": [[t.to_string(), "live"]]}]}),
    )
    .await?;
    let got = collect(&mut ws, 1).await?;
    assert_eq!((got[0].0, got[0].1.as_str()), (t, "live"));

    // The legacy endpoint: the same entries in Loki's legacy shape.
    let Ok(mut legacy) = open(
        &s,
        "/api/prom/tail",
        &[("query", r#"{job="h"}"#), ("start", &start), ("limit", "1")],
        &[],
    )
    .await?
    else {
        anyhow::bail!("legacy tail refused");
    };
    let Next::Frame(f) = next(&mut legacy, WAIT).await? else {
        anyhow::bail!("no legacy frame");
    };
    assert_eq!(f["streams"][0]["labels"], "{job=\"h\"}");
    assert_eq!(f["streams"][0]["entries"][0]["line"], "live");
    assert!(f["dropped_entries"].is_null());
    let ts = f["streams"][0]["entries"][0]["ts"]
        .as_str()
        .unwrap_or_default();
    let parsed = chrono::DateTime::parse_from_rfc3339(ts)?;
    assert_eq!(parsed.timestamp_nanos_opt(), Some(t));
    s.stop().await
}

#[tokio::test]
async fn tail_categorizes_labels_like_query_range() -> anyhow::Result<()> {
    let mut s = TestServer::start(config(false)?).await?;
    let query = r#"{job="c"} | logfmt"#;
    let flags = ("x-loki-response-encoding-flags", "categorize-labels");
    let mut ws = open_ok(&s, &[("query", query)], &[flags]).await?;
    let t = now_ns();
    push(
        &s,
        "fake",
        json!({"streams": [{"stream": {"job": "c"}, "values": [
            [t.to_string(), "level=warn msg=hi", {"trace_id": "abc"}]
        ]}]}),
    )
    .await?;
    let frame = loop {
        match next(&mut ws, WAIT).await? {
            Next::Frame(f) if !entries(&f).is_empty() => break f,
            Next::Frame(_) => continue,
            _ => anyhow::bail!("no frame"),
        }
    };
    assert_eq!(frame["encodingFlags"], json!(["categorize-labels"]));
    let value = &frame["streams"][0]["values"][0];
    assert_eq!(
        value[2],
        json!({"structuredMetadata": {"trace_id": "abc"}, "parsed": {"level": "warn", "msg": "hi"}})
    );
    // The same entry from query_range with the same header.
    let params = vec![
        ("query".to_string(), query.to_string()),
        ("start".to_string(), (t - 1_000_000_000).to_string()),
        ("end".to_string(), (t + 1_000_000_000).to_string()),
    ];
    let (status, body) = s
        .get(
            "/loki/api/v1/query_range",
            &params,
            &[(flags.0.to_string(), flags.1.to_string())],
        )
        .await?;
    anyhow::ensure!(status == 200, "query_range: {status} {body}");
    let body: Value = serde_json::from_str(&body)?;
    let stream = &body["data"]["result"][0];
    assert_eq!(frame["streams"][0]["stream"], stream["stream"]);
    assert_eq!(value, &stream["values"][0]);
    s.stop().await
}

#[tokio::test]
async fn tail_limits_and_bad_requests() -> anyhow::Result<()> {
    let mut c = config(true)?;
    c.limits_config.max_concurrent_tail_requests = 2;
    let mut s = TestServer::start(c).await?;
    let q = [("query", r#"{job="l"}"#)];
    let a = [("x-scope-orgid", "a")];
    // Bad parameters are refused before the upgrade.
    for params in [
        vec![("query", r#"{job="l"}"#), ("delay_for", "6")],
        vec![("query", r#"sum(rate({job="l"}[1m]))"#)],
        vec![("query", r#"{job="l""#)],
        vec![("query", r#"{job="l"}"#), ("limit", "0")],
    ] {
        let r = open(&s, "/loki/api/v1/tail", &params, &a).await?;
        assert_eq!(r.err(), Some(400), "{params:?}");
    }
    assert_eq!(
        open(&s, "/loki/api/v1/tail", &q, &[]).await?.err(),
        Some(401)
    );

    // Two tails of tenant a are open once each has sent its first entry.
    let t = now_ns();
    push(
        &s,
        "a",
        json!({"streams": [{"stream": {"job": "l"}, "values": [[t.to_string(), "x"]]}]}),
    )
    .await?;
    let mut first = open_ok(&s, &q, &a).await?;
    collect(&mut first, 1).await?;
    let mut second = open_ok(&s, &q, &a).await?;
    collect(&mut second, 1).await?;
    // The third is closed with Loki's error.
    let mut third = open_ok(&s, &q, &a).await?;
    match next(&mut third, WAIT).await? {
        Next::Closed(Some((code, reason))) => {
            assert_eq!(code, 1011);
            assert_eq!(
                reason,
                "max concurrent tail requests limit exceeded, count > limit (3 > 2)"
            );
        }
        _ => anyhow::bail!("third tail was not closed with an error"),
    }
    // Another tenant is not affected.
    let mut other = open_ok(&s, &q, &[("x-scope-orgid", "b")]).await?;
    push(
        &s,
        "b",
        json!({"streams": [{"stream": {"job": "l"}, "values": [[now_ns().to_string(), "b"]]}]}),
    )
    .await?;
    assert_eq!(collect(&mut other, 1).await?[0].1, "b");
    // Once a tail of a closes, a new one is accepted.
    first.close(None).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut again = open_ok(&s, &q, &a).await?;
        match next(&mut again, Duration::from_millis(500)).await? {
            Next::Frame(_) | Next::Timeout => break,
            Next::Closed(_) if tokio::time::Instant::now() < deadline => continue,
            Next::Closed(c) => anyhow::bail!("still refused: {c:?}"),
        }
    }
    s.stop().await
}

#[tokio::test]
async fn slow_client_gets_dropped_entries_and_buffers_stay_bounded() -> anyhow::Result<()> {
    let mut s = TestServer::start(config(false)?).await?;
    // A client with a small receive buffer that does not read.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(16 * 1024)?;
    let addr: std::net::SocketAddr = s.url.trim_start_matches("http://").parse()?;
    let stream = socket.connect(addr).await?;
    let req =
        ws_url(&s, "/loki/api/v1/tail", &[("query", r#"{job="slow"}"#)]).into_client_request()?;
    let (mut ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)).await?;
    // Wait until the tail is registered.
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric(&s, "tovlog_tail_active").await? < 1 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "tail never opened");
        tokio::task::yield_now().await;
    }
    // 30,000 lines of 2 KB (60 MB): more than the inbox and delay buffers (16 MiB each), the
    // frame queue and the socket buffers together, however fast the server's tasks run.
    let (pushes, per_push, width) = (150usize, 200usize, 2048usize);
    let total = pushes * per_push;
    let t = now_ns();
    for p in 0..pushes {
        let values: Vec<Value> = (0..per_push)
            .map(|i| {
                let n = p * per_push + i;
                let line = format!("{n:08} {}", "x".repeat(width - 9));
                json!([(t + n as i64).to_string(), line])
            })
            .collect();
        push(
            &s,
            "fake",
            json!({"streams": [{"stream": {"job": "slow"}, "values": values}]}),
        )
        .await?;
    }
    // Whatever the client does not take is dropped, not buffered.
    let buffered = metric(&s, "tovlog_tail_buffered_entries").await?;
    let bound = (tovlog::tail::MAX_BUFFERED_ENTRIES + per_push) as u64;
    assert!(
        buffered <= bound,
        "{buffered} entries buffered (bound {bound})"
    );
    // Now read everything: each entry was either received or counted as dropped.
    let (mut received, mut reported) = (0usize, 0usize);
    let mut last_ts = 0i64;
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    loop {
        match next(&mut ws, Duration::from_millis(300)).await? {
            Next::Frame(f) => {
                for (ts, _, _) in entries(&f) {
                    assert!(ts > last_ts, "entries out of order");
                    last_ts = ts;
                    received += 1;
                }
                reported += f["dropped_entries"].as_array().map_or(0, Vec::len);
            }
            Next::Closed(c) => anyhow::bail!("closed: {c:?}"),
            Next::Timeout => {
                let dropped = metric(&s, "tovlog_tail_dropped_entries_total").await? as usize;
                if received + dropped == total && reported > 0 {
                    assert!(received < total);
                    assert!(reported <= dropped);
                    break;
                }
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "received {received} + dropped {dropped} of {total}, {reported} reported"
                );
            }
        }
    }
    s.stop().await
}

#[tokio::test]
async fn shutdown_closes_tails() -> anyhow::Result<()> {
    let mut s = TestServer::start(config(false)?).await?;
    let mut ws = open_ok(&s, &[("query", r#"{job="z"}"#)], &[]).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric(&s, "tovlog_tail_active").await? < 1 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "tail never opened");
        tokio::task::yield_now().await;
    }
    let client = tokio::spawn(async move {
        let r = next(&mut ws, WAIT).await;
        // Keep reading so the close handshake completes.
        while let Some(Ok(_)) = ws.next().await {}
        r
    });
    tokio::time::timeout(WAIT, s.stop()).await??;
    match client.await?? {
        Next::Closed(Some((code, reason))) => {
            assert_eq!(code, u16::from(CloseCode::Away));
            assert_eq!(reason, "server shutting down");
        }
        Next::Closed(None) => anyhow::bail!("closed without a close frame"),
        _ => anyhow::bail!("tail not closed"),
    }
    Ok(())
}
