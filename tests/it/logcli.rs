//! logcli compatibility: `logcli query` (with its batching loop), `instant-query`, `labels`,
//! `series`, and the headers of `--org-id`, `--query-tags`, `--nocache`, `--bearer-token`,
//! `--header` and `--compress`.
//!
//! The real logcli cannot be built on this machine (Loki's main branch needs Go 1.26, Debian has
//! 1.19 and no Go module proxy is reachable), so this file transcribes logcli's code at the
//! mirrored Loki commit 65e30f8488e8 (`pkg/logcli/client/client.go`, `pkg/logcli/query/query.go`,
//! `pkg/logcli/print/print.go`, `pkg/logcli/labelquery`, `pkg/logcli/seriesquery`,
//! `cmd/logcli/main.go`, `pkg/util/query_string_builder.go`):
//!
//! * requests go out over a plain TCP socket, byte for byte as Go's `net/http` writes them for
//!   logcli (request line with `url.Values.Encode()` query, `Host`, `User-Agent`, the other
//!   headers sorted, `Accept-Encoding: gzip` only with `--compress`, a new connection per request);
//! * answers are decoded into Rust mirrors of the Go types logcli decodes into (`loghttp`,
//!   `prometheus/common/model`, `logqlmodel/stats`), as strict as those decoders;
//! * `query`'s loop (batch sizes, moving `start`/`end`, skipping the overlapping entries) and the
//!   printer's sort and dedup are ported statement by statement.
//!
//! Expected answers are computed from the pushed data, never recorded from tovlog.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::{conformance_config, TestServer};

// ---------------------------------------------------------------------------------------------
// The dataset
// ---------------------------------------------------------------------------------------------

const T0: i64 = 1_763_596_800_000_000_000; // 2025-11-20T00:00:00Z
const FROM: &str = "2025-11-20T00:00:00Z";
const TO: &str = "2025-11-20T00:20:00Z";
const TICK: i64 = 5_000_000_000;
const TICKS: i64 = 240; // 20 minutes of 5 s ticks
const OFFSET: i64 = 123; // entries never sit on a step boundary

type LabelSet = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct LogLine {
    ts: i64,
    labels: LabelSet,
    line: String,
}

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn app(pod: &str) -> LabelSet {
    let env = if pod == "c" { "dev" } else { "prod" };
    labels(&[("job", "app"), ("env", env), ("pod", pod)])
}

/// Three `job="app"` streams with one entry per 5 s tick, and on every fourth tick a second entry
/// at the same nanosecond in another stream (so batches can end inside a timestamp tie), plus a
/// sparse `job="db"` stream.
fn dataset() -> Vec<LogLine> {
    let pods = ["a", "b", "c"];
    let mut out = Vec::new();
    for k in 0..TICKS {
        let ts = T0 + k * TICK + OFFSET;
        let level = if k % 7 == 0 { "error" } else { "info" };
        let first = pods[(k % 3) as usize];
        out.push(LogLine {
            ts,
            labels: app(first),
            line: format!("tick={k} pod={first} level={level} msg=\"request {k}\""),
        });
        if k % 4 == 0 {
            let second = pods[((k + 1) % 3) as usize];
            out.push(LogLine {
                ts,
                labels: app(second),
                line: format!("tick={k} pod={second} level=info msg=\"retry {k}\""),
            });
        }
        if k % 10 == 0 {
            out.push(LogLine {
                ts,
                labels: labels(&[("job", "db"), ("env", "prod"), ("pod", "d")]),
                line: format!("tick={k} checkpoint"),
            });
        }
    }
    out
}

async fn push(s: &TestServer, lines: &[LogLine], org: Option<&str>) -> anyhow::Result<()> {
    let mut streams: BTreeMap<&LabelSet, Vec<Value>> = BTreeMap::new();
    for l in lines {
        streams
            .entry(&l.labels)
            .or_default()
            .push(json!([l.ts.to_string(), l.line]));
    }
    let streams: Vec<Value> = streams
        .into_iter()
        .map(|(k, v)| json!({"stream": k, "values": v}))
        .collect();
    let body = json!({ "streams": streams }).to_string().into_bytes();
    let mut headers = vec![("content-type", "application/json")];
    if let Some(org) = org {
        headers.push(("x-scope-orgid", org));
    }
    let (status, text) = s.post("/loki/api/v1/push", body, &headers).await?;
    anyhow::ensure!(status == 204, "push: {status} {text}");
    Ok(())
}

/// `mustParse` of cmd/logcli: `time.Parse(time.RFC3339Nano, …)`, then `UnixNano()`.
fn must_parse(t: &str) -> anyhow::Result<i64> {
    chrono::DateTime::parse_from_rfc3339(t)?
        .timestamp_nanos_opt()
        .ok_or_else(|| anyhow::anyhow!("{t} out of range"))
}

/// Entries of `data` matching `keep` in `[start, end)`, ordered as logcli prints them.
fn expected_logs(
    data: &[LogLine],
    keep: impl Fn(&LogLine) -> bool,
    start: i64,
    end: i64,
    forward: bool,
) -> Vec<LogLine> {
    let v: Vec<LogLine> = data
        .iter()
        .filter(|l| keep(l) && l.ts >= start && l.ts < end)
        .cloned()
        .collect();
    canonical(v, forward)
}

/// Time in the query direction; Go's `sort.Slice` leaves timestamp ties in no defined order, so
/// ties are put in line order before comparing.
fn canonical(mut v: Vec<LogLine>, forward: bool) -> Vec<LogLine> {
    v.sort_by(|a, b| {
        let t = if forward {
            a.ts.cmp(&b.ts)
        } else {
            b.ts.cmp(&a.ts)
        };
        t.then_with(|| a.line.cmp(&b.line))
    });
    v
}

fn is_app(l: &LogLine) -> bool {
    l.labels.get("job").map(String::as_str) == Some("app")
}

// ---------------------------------------------------------------------------------------------
// What Go puts on the wire for logcli
// ---------------------------------------------------------------------------------------------

/// `build.Version` is set by the Makefile's ldflags (`IMAGE_TAG`); any value will do.
const USER_AGENT: &str = "loki-logcli/3.6.0";

/// Go's `url.QueryEscape`: only `[A-Za-z0-9-_.~]` stay, space becomes `+`, the rest `%XX`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`: shortest round-trip digits, no exponent, which is
/// what Rust's `Display` for `f64` prints.
fn format_float(v: f64) -> String {
    format!("{v}")
}

/// Go's `time.Duration.Seconds()`.
fn duration_seconds(ns: i64) -> f64 {
    let sec = ns / 1_000_000_000;
    let nsec = ns % 1_000_000_000;
    sec as f64 + nsec as f64 / 1e9
}

/// `util.QueryStringBuilder` over Go's `url.Values`: `Encode()` sorts keys, keeps the order of
/// the values of one key, and query-escapes both.
#[derive(Default)]
struct QueryStringBuilder(BTreeMap<String, Vec<String>>);

impl QueryStringBuilder {
    fn set_string(&mut self, name: &str, value: &str) {
        self.0.insert(name.to_string(), vec![value.to_string()]);
    }
    fn set_string_array(&mut self, name: &str, values: &[String]) {
        self.0
            .entry(name.to_string())
            .or_default()
            .extend(values.iter().cloned());
    }
    fn set_int(&mut self, name: &str, value: i64) {
        self.set_string(name, &value.to_string());
    }
    fn set_float(&mut self, name: &str, value: f64) {
        self.set_string(name, &format_float(value));
    }
    fn encode(&self) -> String {
        let mut parts = Vec::new();
        for (k, vs) in &self.0 {
            for v in vs {
                parts.push(format!("{}={}", query_escape(k), query_escape(v)));
            }
        }
        parts.join("&")
    }
}

/// Go's `textproto.CanonicalMIMEHeaderKey` (what `http.Header.Set` stores).
fn canonical_header_key(k: &str) -> String {
    let mut upper = true;
    k.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// `logproto.Direction.String()`.
fn direction_name(forward: bool) -> &'static str {
    if forward {
        "FORWARD"
    } else {
        "BACKWARD"
    }
}

/// A parsed HTTP/1.1 response.
struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A complete response at the start of `buf`, or `None` when more bytes are needed.
fn parse_response(buf: &[u8]) -> anyhow::Result<Option<HttpResponse>> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    anyhow::ensure!(
        status_line.starts_with("HTTP/1.1 "),
        "not an HTTP/1.1 status line: {status_line:?}"
    );
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no status in {status_line:?}"))?
        .parse()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut resp = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    // RFC 9112 §6.3: a 204 or 304 answer has no body whatever its headers say.
    if status == 204 || status == 304 {
        return Ok(Some(resp));
    }
    let rest = &buf[head_end + 4..];
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut pos = 0;
        loop {
            let Some(eol) = find(&rest[pos..], b"\r\n") else {
                return Ok(None);
            };
            let size_text = std::str::from_utf8(&rest[pos..pos + eol])?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
            pos += eol + 2;
            if size == 0 {
                // No trailers from tovlog: the last chunk is followed by an empty line.
                return Ok((rest.len() >= pos + 2).then_some(resp));
            }
            if rest.len() < pos + size + 2 {
                return Ok(None);
            }
            resp.body.extend_from_slice(&rest[pos..pos + size]);
            pos += size + 2;
        }
    }
    let len: usize = resp
        .header("content-length")
        .ok_or_else(|| anyhow::anyhow!("neither chunked nor a content-length"))?
        .parse()?;
    if rest.len() < len {
        return Ok(None);
    }
    resp.body = rest[..len].to_vec();
    Ok(Some(resp))
}

/// logcli's `client.DefaultClient` with the flags that shape requests.
#[derive(Default)]
struct Logcli {
    /// `--addr`
    address: String,
    /// `--org-id`
    org_id: String,
    /// `--query-tags`
    query_tags: String,
    /// `--nocache`
    no_cache: bool,
    /// `--bearer-token`
    bearer_token: String,
    /// `--header` (repeatable, `Name: value`)
    custom_headers: Vec<String>,
    /// `--compress`
    compression: bool,
    /// Every URL logcli logged (`log.Print(us)` before each request), in order.
    requests: Mutex<Vec<String>>,
    /// The `Content-Encoding` of every response, in order.
    encodings: Mutex<Vec<Option<String>>>,
}

impl Logcli {
    fn new(s: &TestServer) -> Logcli {
        Logcli {
            address: s.url.clone(),
            ..Logcli::default()
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// `getHTTPRequestHeader`, as an `http.Header` (canonical keys, one value each).
    fn header(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut h = BTreeMap::new();
        h.insert("User-Agent".to_string(), USER_AGENT.to_string());
        if !self.org_id.is_empty() {
            h.insert(canonical_header_key("X-Scope-OrgID"), self.org_id.clone());
        }
        if self.no_cache {
            h.insert("Cache-Control".to_string(), "no-cache".to_string());
        }
        if !self.query_tags.is_empty() {
            h.insert("X-Query-Tags".to_string(), self.query_tags.clone());
        }
        for header in &self.custom_headers {
            let (k, v) = header
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("invalid header format: {header:?}"))?;
            anyhow::ensure!(!k.trim().is_empty(), "header name cannot be empty");
            h.insert(canonical_header_key(k.trim()), v.trim().to_string());
        }
        if !self.bearer_token.is_empty() {
            h.insert(
                "Authorization".to_string(),
                format!("Bearer {}", self.bearer_token),
            );
        }
        Ok(h)
    }

    /// One GET as `doRequest` sends it (a fresh `http.Client`, so a fresh connection), and the
    /// raw response with Go's transparent gunzip when `--compress` asked for gzip.
    async fn get(&self, path: &str, query: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        self.send("GET", path, query).await
    }

    /// One request as `doRequest`, `doPostRequest` and `doDeleteRequest` send it: no body, so
    /// Go's transfer writer adds `Content-Length: 0` for POST (and PUT, PATCH) only.
    async fn send(&self, method: &str, path: &str, query: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        let host = self
            .address
            .strip_prefix("http://")
            .ok_or_else(|| anyhow::anyhow!("plain http only: {}", self.address))?
            .trim_end_matches('/');
        // buildURL: path.Join(url.Path, p), RawQuery = q.
        let uri = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        if let Ok(mut r) = self.requests.lock() {
            r.push(uri.clone());
        }
        let mut header = self.header()?;
        let user_agent = header.remove("User-Agent").unwrap_or_default();
        // http.Request.write: request line, Host, User-Agent, the other headers sorted by key,
        // then the transport's extra headers, then the blank line.
        let mut req =
            format!("{method} {uri} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\n");
        if matches!(method, "POST" | "PUT" | "PATCH") {
            req.push_str("Content-Length: 0\r\n");
        }
        for (k, v) in &header {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        // prometheus/common's transport has DisableCompression; --compress turns it back on.
        if self.compression {
            req.push_str("Accept-Encoding: gzip\r\n");
        }
        req.push_str("\r\n");

        let mut stream = tokio::net::TcpStream::connect(host).await?;
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let resp = loop {
            if let Some(resp) = parse_response(&buf)? {
                break resp;
            }
            let n =
                tokio::time::timeout(Duration::from_secs(120), stream.read(&mut chunk)).await??;
            anyhow::ensure!(
                n > 0,
                "connection closed mid-response: {}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let encoding = resp.header("content-encoding").map(str::to_string);
        if let Ok(mut e) = self.encodings.lock() {
            e.push(encoding.clone());
        }
        let gzipped = encoding
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case("gzip"));
        let body = if self.compression && gzipped {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(resp.body.as_slice()).read_to_end(&mut out)?;
            out
        } else {
            // Without --compress Go hands the body to the JSON decoder as it came.
            resp.body
        };
        Ok((resp.status, body))
    }

    /// `doRequest`: a non-2xx answer is a failure (`--retries 0`: one attempt), else the body is
    /// decoded into `T`.
    async fn do_request<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        query: &str,
    ) -> anyhow::Result<T> {
        let (status, body) = self.get(path, query).await?;
        anyhow::ensure!(
            status / 100 == 2,
            "run out of attempts while querying the server: {status} {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).map_err(|e| {
            anyhow::anyhow!(
                "logcli cannot decode the answer to {path}?{query}: {e}\n{}",
                String::from_utf8_lossy(&body)
            )
        })
    }

    /// `doPostRequest` / `doDeleteRequest`: any 2xx is success and the body is not read; a
    /// non-2xx answer is a failure (`--retries 0`).
    async fn do_no_body(&self, method: &str, path: &str, query: &str) -> anyhow::Result<()> {
        let (status, body) = self.send(method, path, query).await?;
        anyhow::ensure!(
            status / 100 == 2,
            "run out of attempts while querying the server: {status} {}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }

    /// `CreateDeleteRequest`: the parameters in the URL of a POST without a body.
    async fn create_delete_request(&self, params: &DeleteRequestParams) -> anyhow::Result<()> {
        let mut q = QueryStringBuilder::default();
        q.set_string("query", &params.query);
        if !params.start.is_empty() {
            q.set_string("start", &params.start);
        }
        if !params.end.is_empty() {
            q.set_string("end", &params.end);
        }
        if !params.max_interval.is_empty() {
            q.set_string("max_interval", &params.max_interval);
        }
        self.do_no_body("POST", "/loki/api/v1/delete", &q.encode())
            .await
    }

    /// `ListDeleteRequests`: `doRequest` decoding `[]client.DeleteRequest`.
    async fn list_delete_requests(&self) -> anyhow::Result<Vec<LogcliDeleteRequest>> {
        self.do_request("/loki/api/v1/delete", "").await
    }

    /// `CancelDeleteRequest`.
    async fn cancel_delete_request(&self, request_id: &str, force: bool) -> anyhow::Result<()> {
        let mut q = QueryStringBuilder::default();
        q.set_string("request_id", request_id);
        if force {
            q.set_string("force", "true");
        }
        self.do_no_body("DELETE", "/loki/api/v1/delete", &q.encode())
            .await
    }

    /// `Query` (`/loki/api/v1/query`).
    async fn query(
        &self,
        query: &str,
        limit: i64,
        time: i64,
        forward: bool,
    ) -> anyhow::Result<QueryResponse> {
        let mut q = QueryStringBuilder::default();
        q.set_string("query", query);
        q.set_int("limit", limit);
        q.set_int("time", time);
        q.set_string("direction", direction_name(forward));
        self.do_request("/loki/api/v1/query", &q.encode()).await
    }

    /// `QueryRange` (`/loki/api/v1/query_range`); `step` and `interval` are ns, 0 = not sent.
    #[allow(clippy::too_many_arguments)]
    async fn query_range(
        &self,
        query: &str,
        limit: i64,
        start: i64,
        end: i64,
        forward: bool,
        step: i64,
        interval: i64,
    ) -> anyhow::Result<QueryResponse> {
        let mut q = QueryStringBuilder::default();
        q.set_string("query", query);
        q.set_int("limit", limit);
        q.set_int("start", start);
        q.set_int("end", end);
        q.set_string("direction", direction_name(forward));
        if step != 0 {
            q.set_float("step", duration_seconds(step));
        }
        if interval != 0 {
            q.set_float("interval", duration_seconds(interval));
        }
        self.do_request("/loki/api/v1/query_range", &q.encode())
            .await
    }

    /// `ListLabelNames`.
    async fn list_label_names(&self, start: i64, end: i64) -> anyhow::Result<LabelResponse> {
        let mut q = QueryStringBuilder::default();
        q.set_int("start", start);
        q.set_int("end", end);
        self.do_request("/loki/api/v1/labels", &q.encode()).await
    }

    /// `ListLabelValues`; `url.PathEscape` leaves label names (`[a-zA-Z_][a-zA-Z0-9_]*`) as
    /// they are.
    async fn list_label_values(
        &self,
        name: &str,
        start: i64,
        end: i64,
    ) -> anyhow::Result<LabelResponse> {
        assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        let mut q = QueryStringBuilder::default();
        q.set_int("start", start);
        q.set_int("end", end);
        self.do_request(&format!("/loki/api/v1/label/{name}/values"), &q.encode())
            .await
    }

    /// `Series`: the matchers go out as `match`, not `match[]`.
    async fn series(
        &self,
        matchers: &[String],
        start: i64,
        end: i64,
    ) -> anyhow::Result<SeriesResponse> {
        let mut q = QueryStringBuilder::default();
        q.set_int("start", start);
        q.set_int("end", end);
        q.set_string_array("match", matchers);
        self.do_request("/loki/api/v1/series", &q.encode()).await
    }
}

// ---------------------------------------------------------------------------------------------
// The Go types logcli decodes into
// ---------------------------------------------------------------------------------------------

/// `loghttp.QueryResponse`.
#[derive(Debug, Deserialize)]
struct QueryResponse {
    status: String,
    #[serde(default)]
    #[allow(dead_code)]
    warnings: Option<Vec<String>>,
    data: QueryResponseData,
}

/// `loghttp.QueryResponseData`: `resultType` must be a string naming one of the four types, and
/// `result` is decoded by that type (`unknown type: …` otherwise).
#[derive(Debug)]
struct QueryResponseData {
    #[allow(dead_code)]
    result_type: String,
    result: ResultValue,
    #[allow(dead_code)]
    statistics: StatsResult,
}

#[derive(Debug, Clone)]
enum ResultValue {
    Streams(Vec<Stream>),
    Scalar(Scalar),
    Vector(Vec<Sample>),
    Matrix(Vec<SampleStream>),
}

impl<'de> Deserialize<'de> for QueryResponseData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut obj = serde_json::Map::<String, Value>::deserialize(d)?;
        let result_type = match obj.get("resultType") {
            Some(Value::String(s)) => s.clone(),
            other => {
                return Err(de::Error::custom(format!(
                    "resultType is not a string: {other:?}"
                )))
            }
        };
        let raw = obj
            .remove("result")
            .ok_or_else(|| de::Error::custom("no result (logcli would print a nil result)"))?;
        let e = |err: serde_json::Error| de::Error::custom(format!("{result_type}: {err}"));
        let result = match result_type.as_str() {
            "streams" => ResultValue::Streams(serde_json::from_value(raw).map_err(e)?),
            "scalar" => ResultValue::Scalar(serde_json::from_value(raw).map_err(e)?),
            "vector" => ResultValue::Vector(serde_json::from_value(raw).map_err(e)?),
            "matrix" => ResultValue::Matrix(serde_json::from_value(raw).map_err(e)?),
            other => return Err(de::Error::custom(format!("unknown type: {other}"))),
        };
        let statistics = match obj.remove("stats") {
            Some(v) => serde_json::from_value(v)
                .map_err(|err| de::Error::custom(format!("stats: {err}")))?,
            None => StatsResult::default(),
        };
        Ok(QueryResponseData {
            result_type,
            result,
            statistics,
        })
    }
}

/// `loghttp.Stream`.
#[derive(Debug, Clone, Deserialize)]
struct Stream {
    #[serde(default)]
    stream: LabelSet,
    #[serde(default)]
    values: Option<Vec<Entry>>,
}

/// `loghttp.Entry`: `["<ns as a string>", "<line>"(, {structured metadata | categories})]`.
#[derive(Debug, Clone)]
struct Entry {
    ts: i64,
    line: String,
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<Value>::deserialize(d)?;
        let ts = match v.first() {
            // jsonparser.ParseInt: an optional '-' and digits, nothing else.
            Some(Value::String(s))
                if !s.is_empty()
                    && s.strip_prefix('-')
                        .unwrap_or(s)
                        .bytes()
                        .all(|b| b.is_ascii_digit()) =>
            {
                s.parse::<i64>().map_err(de::Error::custom)?
            }
            other => {
                return Err(de::Error::custom(format!(
                    "entry timestamp must be a string of ns: {other:?}"
                )))
            }
        };
        let line = match v.get(1) {
            Some(Value::String(s)) => s.clone(),
            other => {
                return Err(de::Error::custom(format!(
                    "entry line must be a string: {other:?}"
                )))
            }
        };
        if let Some(third) = v.get(2) {
            let Value::Object(m) = third else {
                return Err(de::Error::custom("entry metadata must be an object"));
            };
            for (k, val) in m {
                let ok = match val {
                    Value::String(_) => true,
                    Value::Object(inner) if k == "structuredMetadata" || k == "parsed" => {
                        inner.values().all(Value::is_string)
                    }
                    Value::Object(_) => true, // ignored by the Go decoder
                    _ => false,
                };
                if !ok {
                    return Err(de::Error::custom(format!("bad entry metadata {k}: {val}")));
                }
            }
        }
        Ok(Entry { ts, line })
    }
}

/// `model.Time` (ms), decoded as Go does from the raw number text `<s>[.<frac>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Time(i64);

impl Time {
    fn from_text(text: &str) -> Result<Time, String> {
        let digits = |s: &str| -> Result<i64, String> {
            s.parse::<i64>().map_err(|e| format!("{text:?}: {e}"))
        };
        match text.split_once('.') {
            None => Ok(Time(digits(text)? * 1000)),
            Some((base, frac)) => {
                let v = digits(base)?;
                let frac = &frac[..frac.len().min(3)];
                let mut va = digits(frac)?;
                match 3 - frac.len() {
                    1 => va *= 10,
                    2 => va *= 100,
                    _ => {}
                }
                if base.starts_with('-') {
                    va = -va;
                }
                Ok(Time(v * 1000 + va))
            }
        }
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            // serde_json prints a number back as it was written for integers, and floats of
            // this size without an exponent.
            Value::Number(n) => Time::from_text(&n.to_string()).map_err(de::Error::custom),
            other => Err(de::Error::custom(format!(
                "a model.Time is a JSON number, got {other}"
            ))),
        }
    }
}

/// `model.SampleValue`: a quoted float (`strconv.ParseFloat`).
fn sample_value(v: &Value) -> Result<f64, String> {
    match v {
        Value::String(s) => s.parse::<f64>().map_err(|e| format!("{s:?}: {e}")),
        other => Err(format!("sample value must be a quoted string, got {other}")),
    }
}

/// `model.SamplePair`: `[<time>, "<value>"]`.
#[derive(Debug, Clone, Copy)]
struct SamplePair {
    t: Time,
    v: f64,
}

impl<'de> Deserialize<'de> for SamplePair {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (t, v): (Time, Value) = Deserialize::deserialize(d)?;
        Ok(SamplePair {
            t,
            v: sample_value(&v).map_err(de::Error::custom)?,
        })
    }
}

/// `model.Metric`: label names must be valid.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
struct Metric(LabelSet);

impl<'de> Deserialize<'de> for Metric {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = LabelSet::deserialize(d)?;
        for k in m.keys() {
            let mut b = k.bytes();
            let first_ok = b
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_');
            if !first_ok || !b.all(|c| c.is_ascii_alphanumeric() || c == b'_') {
                return Err(de::Error::custom(format!(
                    "{k:?} is not a valid label name"
                )));
            }
        }
        Ok(Metric(m))
    }
}

/// `model.Sample` in a vector.
#[derive(Debug, Clone, Deserialize)]
struct Sample {
    metric: Metric,
    value: SamplePair,
}

/// `model.SampleStream` in a matrix.
#[derive(Debug, Clone, Deserialize)]
struct SampleStream {
    metric: Metric,
    #[serde(default)]
    values: Option<Vec<SamplePair>>,
}

/// `loghttp.Scalar` (`model.Scalar`): `[<time>, "<value>"]`.
#[derive(Debug, Clone, Copy, Deserialize)]
struct Scalar(SamplePair);

/// `loghttp.LabelResponse`.
#[derive(Debug, Deserialize)]
struct LabelResponse {
    status: String,
    #[serde(default)]
    data: Option<Vec<String>>,
}

/// `loghttp.SeriesResponse`.
#[derive(Debug, Deserialize)]
struct SeriesResponse {
    status: String,
    #[serde(default)]
    data: Option<Vec<LabelSet>>,
}

/// `stats.Result` with the Go field types (an integer field does not take `1.5` or `"1"`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[allow(dead_code)]
struct StatsResult {
    summary: StatsSummary,
    querier: StatsQuerier,
    ingester: StatsIngester,
    #[serde(rename = "cache")]
    caches: StatsCaches,
    index: StatsIndex,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[allow(dead_code)]
struct StatsSummary {
    bytes_processed_per_second: i64,
    lines_processed_per_second: i64,
    total_bytes_processed: i64,
    total_lines_processed: i64,
    exec_time: f64,
    queue_time: f64,
    subqueries: i64,
    total_entries_returned: i64,
    splits: i64,
    shards: i64,
    total_post_filter_lines: i64,
    total_structured_metadata_bytes_processed: i64,
    estimated_query_bytes: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[allow(dead_code)]
struct StatsIndex {
    total_chunks: i64,
    post_filter_chunks: i64,
    shards_duration: i64,
    used_bloom_filters: bool,
    total_streams: i64,
    chunk_refs_lookup_time: f64,
    bloom_filter_time: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[allow(dead_code)]
struct StatsQuerier {
    store: StatsStore,
    querier_exec_time: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[allow(dead_code)]
struct StatsIngester {
    total_reached: i32,
    total_chunks_matched: i64,
    total_batches: i64,
    total_lines_sent: i64,
    store: StatsStore,
    recv_wait_time: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[allow(dead_code)]
struct StatsStore {
    total_chunks_ref: i64,
    total_chunks_downloaded: i64,
    chunks_download_time: i64,
    query_referenced_structured_metadata: bool,
    query_used_v2_engine: bool,
    chunk: StatsChunk,
    chunk_refs_fetch_time: i64,
    congestion_control_latency: i64,
    pipeline_wrapper_filtered_lines: i64,
    dataobj: StatsDataobj,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[allow(dead_code)]
struct StatsDataobj {
    pre_predicate_decompressed_rows: i64,
    pre_predicate_decompressed_bytes: i64,
    pre_predicate_decompressed_structured_metadata_bytes: i64,
    post_predicate_rows: i64,
    post_predicate_decompressed_bytes: i64,
    post_predicate_structured_metadata_bytes: i64,
    post_filter_rows: i64,
    pages_scanned: i64,
    pages_downloaded: i64,
    pages_downloaded_bytes: i64,
    page_batches: i64,
    total_rows_available: i64,
    total_page_download_time: i64,
    wire_bytes_transferred: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[allow(dead_code)]
struct StatsChunk {
    head_chunk_bytes: i64,
    head_chunk_lines: i64,
    decompressed_bytes: i64,
    decompressed_lines: i64,
    compressed_bytes: i64,
    total_duplicates: i64,
    post_filter_lines: i64,
    head_chunk_structured_metadata_bytes: i64,
    decompressed_structured_metadata_bytes: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[allow(dead_code)]
struct StatsCaches {
    chunk: StatsCache,
    index: StatsCache,
    result: StatsCache,
    stats_result: StatsCache,
    volume_result: StatsCache,
    series_result: StatsCache,
    label_result: StatsCache,
    instant_metric_result: StatsCache,
    log_result: StatsCache,
    task_result: StatsCache,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[allow(dead_code)]
struct StatsCache {
    entries_found: i32,
    entries_requested: i32,
    entries_stored: i32,
    bytes_received: i64,
    bytes_sent: i64,
    requests: i32,
    download_time: i64,
    query_length_served: i64,
}

// ---------------------------------------------------------------------------------------------
// logcli's commands
// ---------------------------------------------------------------------------------------------

/// `query.Query`, with the fields the `query` and `instant-query` flags set.
#[derive(Debug, Clone)]
struct Query {
    query_string: String,
    start: i64,
    end: i64,
    /// `--limit` (default 30; 0 = everything).
    limit: i64,
    /// `--batch` (default 1000).
    batch_size: i64,
    /// `--forward`
    forward: bool,
    /// `--step`, ns.
    step: i64,
    /// `--interval`, ns.
    interval: i64,
}

impl Query {
    /// `logcli query <q> --from <from> --to <to>` with the flag defaults.
    fn range(q: &str, from: &str, to: &str) -> anyhow::Result<Query> {
        Ok(Query {
            query_string: q.to_string(),
            start: must_parse(from)?,
            end: must_parse(to)?,
            limit: 30,
            batch_size: 1000,
            forward: false,
            step: 0,
            interval: 0,
        })
    }

    /// `logcli instant-query <q> --now <now>` (`SetInstant`).
    fn instant(q: &str, now: &str) -> anyhow::Result<Query> {
        let t = must_parse(now)?;
        Ok(Query {
            start: t,
            end: t,
            ..Query::range(q, now, now)?
        })
    }

    fn is_instant(&self) -> bool {
        self.start == self.end && self.step == 0
    }

    fn with_forward(mut self, forward: bool) -> Query {
        self.forward = forward;
        self
    }
}

/// What a `DoQuery` run printed.
#[derive(Debug, Default)]
struct Output {
    /// Log lines, in print order.
    lines: Vec<LogLine>,
    /// Metric results (printed as JSON by logcli).
    metrics: Vec<ResultValue>,
    /// The largest `lastEntry` list a batch ended with (entries sharing the last timestamp).
    max_overlap: usize,
    /// Entries skipped as already printed by the previous batch.
    skipped: usize,
}

/// `QueryResultPrinter.PrintResult`: the number of lines printed (-1 for a metric result) and
/// the entries sharing the last timestamp.
fn print_result(
    value: ResultValue,
    forward: bool,
    out: &mut Output,
    last_entry: &[LogLine],
) -> (i64, Vec<LogLine>) {
    match value {
        ResultValue::Streams(streams) => print_stream(streams, forward, out, last_entry),
        other => {
            out.metrics.push(other);
            (-1, Vec::new())
        }
    }
}

/// `QueryResultPrinter.printStream` (the label trimming it does for display is left out).
fn print_stream(
    streams: Vec<Stream>,
    forward: bool,
    out: &mut Output,
    last_entry: &[LogLine],
) -> (i64, Vec<LogLine>) {
    let mut all: Vec<LogLine> = Vec::new();
    for s in streams {
        for e in s.values.unwrap_or_default() {
            all.push(LogLine {
                ts: e.ts,
                labels: s.stream.clone(),
                line: e.line,
            });
        }
    }
    if all.is_empty() {
        return (0, Vec::new());
    }
    // sort.Slice by timestamp only (ties in no defined order; stable here).
    if forward {
        all.sort_by_key(|e| e.ts);
    } else {
        all.sort_by_key(|e| std::cmp::Reverse(e.ts));
    }
    let mut printed = 0;
    for e in &all {
        if let Some(first) = last_entry.first() {
            if e.ts == first.ts && last_entry.iter().any(|le| le.line == e.line) {
                out.skipped += 1;
                continue;
            }
        }
        out.lines.push(e.clone());
        printed += 1;
    }
    let last_ts = all[all.len() - 1].ts;
    let lel: Vec<LogLine> = all.into_iter().filter(|e| e.ts == last_ts).collect();
    (printed, lel)
}

/// `Query.DoQuery` against a server (no `--stdin`, part files or local store).
async fn do_query(mut q: Query, c: &Logcli) -> anyhow::Result<Output> {
    let mut out = Output::default();
    if q.is_instant() {
        let resp = c
            .query(&q.query_string, q.limit, q.start, q.forward)
            .await?;
        anyhow::ensure!(resp.status == "success", "status {}", resp.status);
        print_result(resp.data.result, q.forward, &mut out, &[]);
        return Ok(out);
    }
    let unlimited = q.limit == 0;
    if q.limit < q.batch_size && !unlimited {
        q.batch_size = q.limit;
    }
    let mut total = 0;
    let mut start = q.start;
    let mut end = q.end;
    let mut last_entry: Vec<LogLine> = Vec::new();
    while total < q.limit || unlimited {
        let mut bs = q.batch_size;
        if q.limit - total < q.batch_size && !unlimited {
            bs = q.limit - total + last_entry.len() as i64;
        }
        let resp = c
            .query_range(
                &q.query_string,
                bs,
                start,
                end,
                q.forward,
                q.step,
                q.interval,
            )
            .await?;
        anyhow::ensure!(resp.status == "success", "status {}", resp.status);
        let (result_length, lel) = print_result(resp.data.result, q.forward, &mut out, &last_entry);
        last_entry = lel;
        out.max_overlap = out.max_overlap.max(last_entry.len());
        if result_length <= 0 {
            break;
        }
        if last_entry.is_empty() {
            break;
        }
        if result_length == q.limit {
            break;
        }
        anyhow::ensure!(
            (last_entry.len() as i64) < q.batch_size,
            "Invalid batch size {}, the next query will have {} overlapping entries",
            q.batch_size,
            last_entry.len()
        );
        total += result_length;
        if q.forward {
            start = last_entry[0].ts;
        } else {
            end = last_entry[0].ts + 1;
        }
    }
    Ok(out)
}

/// `labelquery.ListLabels`.
async fn list_labels(
    c: &Logcli,
    label_name: &str,
    from: &str,
    to: &str,
) -> anyhow::Result<Vec<String>> {
    let (start, end) = (must_parse(from)?, must_parse(to)?);
    let resp = if label_name.is_empty() {
        c.list_label_names(start, end).await?
    } else {
        c.list_label_values(label_name, start, end).await?
    };
    anyhow::ensure!(resp.status == "success", "status {}", resp.status);
    Ok(resp.data.unwrap_or_default())
}

/// `seriesquery.GetSeries`.
async fn get_series(
    c: &Logcli,
    matcher: &str,
    from: &str,
    to: &str,
) -> anyhow::Result<Vec<LabelSet>> {
    let resp = c
        .series(&[matcher.to_string()], must_parse(from)?, must_parse(to)?)
        .await?;
    anyhow::ensure!(resp.status == "success", "status {}", resp.status);
    Ok(resp.data.unwrap_or_default())
}

fn sorted_set<T: Ord + Clone>(v: &[T]) -> Vec<T> {
    v.iter()
        .cloned()
        .collect::<BTreeSet<T>>()
        .into_iter()
        .collect()
}

fn assert_monotonic(lines: &[LogLine], forward: bool) {
    for w in lines.windows(2) {
        let ok = if forward {
            w[0].ts <= w[1].ts
        } else {
            w[0].ts >= w[1].ts
        };
        assert!(ok, "printed out of order: {:?} then {:?}", w[0], w[1]);
    }
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn logcli_query_batches_stitch_to_the_single_query_answer() -> anyhow::Result<()> {
    let mut s = TestServer::start(conformance_config()?).await?;
    let data = dataset();
    push(&s, &data, None).await?;
    let (start, end) = (must_parse(FROM)?, must_parse(TO)?);
    let selector = r#"{job="app"}"#;

    // The bytes of the first request, spelled out once as a check of the Go encoding above.
    let c = Logcli::new(&s);
    let one = Query {
        limit: 250,
        batch_size: 100,
        ..Query::range(selector, FROM, TO)?
    };
    do_query(one, &c).await?;
    assert_eq!(
        c.requests()[0],
        format!(
            "/loki/api/v1/query_range?direction=BACKWARD&end={end}&limit=100&query=%7Bjob%3D%22app%22%7D&start={start}"
        )
    );

    for forward in [false, true] {
        let expected = expected_logs(&data, is_app, start, end, forward);
        assert!(expected.len() > 251);
        assert_ne!(
            expected[249].ts, expected[250].ts,
            "the dataset must not put a tie at the limit"
        );
        let want: Vec<LogLine> = expected[..250].to_vec();

        let c = Logcli::new(&s);
        let batched = do_query(
            Query {
                limit: 250,
                batch_size: 100,
                forward,
                ..Query::range(selector, FROM, TO)?
            },
            &c,
        )
        .await?;
        let batched_requests = c.requests();
        assert!(
            batched_requests.len() >= 3,
            "forward={forward}: {batched_requests:?}"
        );
        // Every batch after the first re-reads the entries at the boundary timestamp.
        assert!(batched.skipped >= batched_requests.len() - 1);
        assert_monotonic(&batched.lines, forward);
        assert_eq!(batched.lines.len(), 250, "forward={forward}");
        assert_eq!(
            canonical(batched.lines.clone(), forward),
            want,
            "forward={forward}"
        );

        let c = Logcli::new(&s);
        let single = do_query(
            Query {
                limit: 250,
                ..Query::range(selector, FROM, TO)?
            }
            .with_forward(forward),
            &c,
        )
        .await?;
        assert_eq!(c.requests().len(), 1);
        assert!(c.requests()[0].contains("&limit=250&"));
        assert_monotonic(&single.lines, forward);
        assert_eq!(canonical(single.lines, forward), want, "forward={forward}");
    }
    s.stop().await
}

#[tokio::test]
async fn logcli_query_without_limit_reads_everything_in_batches() -> anyhow::Result<()> {
    let mut s = TestServer::start(conformance_config()?).await?;
    let data = dataset();
    push(&s, &data, None).await?;
    // A range that starts and ends on entries: `--from` is inclusive, `--to` exclusive.
    let from = "2025-11-20T00:02:30.000000123Z";
    let to = "2025-11-20T00:17:30.000000123Z";
    for forward in [false, true] {
        for (selector, keep) in [
            (
                r#"{job="app"}"#,
                Box::new(is_app) as Box<dyn Fn(&LogLine) -> bool>,
            ),
            (
                r#"{job=~"app|db", pod!="b"} |= "level=error""#,
                Box::new(|l: &LogLine| {
                    l.labels.get("pod").map(String::as_str) != Some("b")
                        && l.line.contains("level=error")
                }),
            ),
        ] {
            let c = Logcli::new(&s);
            let out = do_query(
                Query {
                    limit: 0,
                    batch_size: 25,
                    forward,
                    ..Query::range(selector, from, to)?
                },
                &c,
            )
            .await?;
            let want = expected_logs(&data, keep, must_parse(from)?, must_parse(to)?, forward);
            assert!(!want.is_empty());
            assert_monotonic(&out.lines, forward);
            assert_eq!(
                canonical(out.lines, forward),
                want,
                "{selector} forward={forward} after {} requests",
                c.requests().len()
            );
            assert!(c.requests().len() > 1);
            if selector == r#"{job="app"}"# {
                // The entry at `--from` is in, the one at `--to` is not.
                assert!(want
                    .iter()
                    .any(|l| l.ts == must_parse(from).unwrap_or_default()));
                assert!(data
                    .iter()
                    .any(|l| l.ts == must_parse(to).unwrap_or_default()));
            }
            if selector == r#"{job="app"}"# && !forward {
                assert!(
                    out.max_overlap >= 2,
                    "some batch should end inside a timestamp tie"
                );
            }
        }
    }
    s.stop().await
}

/// `count_over_time(…[range])` of the pushed data at `t`, per value of `by`.
fn expected_counts(
    data: &[LogLine],
    keep: impl Fn(&LogLine) -> bool,
    by: &str,
    range: i64,
    t: i64,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for l in data
        .iter()
        .filter(|l| keep(l) && l.ts > t - range && l.ts <= t)
    {
        *out.entry(l.labels.get(by).cloned().unwrap_or_default())
            .or_insert(0.0) += 1.0;
    }
    out
}

#[tokio::test]
async fn logcli_metric_queries_decode_as_matrix_vector_and_scalar() -> anyhow::Result<()> {
    let mut s = TestServer::start(conformance_config()?).await?;
    let data = dataset();
    push(&s, &data, None).await?;
    let c = Logcli::new(&s);

    // `logcli query 'sum by (pod) (count_over_time({job="app"}[1m]))' --step 1m`.
    let q = Query {
        step: 60_000_000_000,
        ..Query::range(
            r#"sum by (pod) (count_over_time({job="app"}[1m]))"#,
            FROM,
            TO,
        )?
    };
    let (start, end, step) = (q.start, q.end, q.step);
    let out = do_query(q, &c).await?;
    let reqs = c.requests();
    assert_eq!(reqs.len(), 1, "a metric result ends the batching loop");
    assert!(reqs[0].contains("&limit=30&"), "{}", reqs[0]);
    assert!(reqs[0].ends_with("&step=60"), "{}", reqs[0]);
    assert!(out.lines.is_empty());
    let [ResultValue::Matrix(matrix)] = out.metrics.as_slice() else {
        anyhow::bail!("expected one matrix, got {:?}", out.metrics);
    };
    let mut want: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    let mut t = start;
    while t <= end {
        for (pod, n) in expected_counts(&data, is_app, "pod", 60_000_000_000, t) {
            want.entry(pod).or_default().push((t / 1_000_000, n));
        }
        t += step;
    }
    let got: BTreeMap<String, Vec<(i64, f64)>> = matrix
        .iter()
        .map(|ss| {
            let pod = ss.metric.0.get("pod").cloned().unwrap_or_default();
            assert_eq!(ss.metric.0.len(), 1, "{:?}", ss.metric);
            let vals = ss
                .values
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|p| (p.t.0, p.v))
                .collect();
            (pod, vals)
        })
        .collect();
    assert_eq!(got, want);

    // `logcli instant-query 'sum by (env) (count_over_time({job="app"}[5m]))' --now …`.
    let now = "2025-11-20T00:10:00Z";
    let c = Logcli::new(&s);
    let out = do_query(
        Query::instant(r#"sum by (env) (count_over_time({job="app"}[5m]))"#, now)?,
        &c,
    )
    .await?;
    let t = must_parse(now)?;
    assert_eq!(
        c.requests(),
        vec![format!(
            "/loki/api/v1/query?direction=BACKWARD&limit=30&query=sum+by+%28env%29+%28count_over_time%28%7Bjob%3D%22app%22%7D%5B5m%5D%29%29&time={t}"
        )]
    );
    let [ResultValue::Vector(vector)] = out.metrics.as_slice() else {
        anyhow::bail!("expected one vector, got {:?}", out.metrics);
    };
    let got: BTreeMap<String, f64> = vector
        .iter()
        .map(|smp| {
            assert_eq!(smp.value.t, Time(t / 1_000_000));
            (
                smp.metric.0.get("env").cloned().unwrap_or_default(),
                smp.value.v,
            )
        })
        .collect();
    let want = expected_counts(&data, is_app, "env", 300_000_000_000, t);
    assert_eq!(want.len(), 2);
    assert_eq!(got, want);

    // A scalar answer: `logcli instant-query '4 * 1.5'`.
    let c = Logcli::new(&s);
    let out = do_query(Query::instant("4 * 1.5", now)?, &c).await?;
    let [ResultValue::Scalar(Scalar(pair))] = out.metrics.as_slice() else {
        anyhow::bail!("expected a scalar, got {:?}", out.metrics);
    };
    assert_eq!(pair.v, 6.0);

    // `logcli query '{job="app"}' --from X --to X` is an instant query of a log selector, which
    // Loki refuses with a 400 (and so does tovlog).
    let c = Logcli::new(&s);
    let mut q = QueryStringBuilder::default();
    q.set_string("query", r#"{job="app"}"#);
    q.set_int("limit", 30);
    q.set_int("time", t);
    q.set_string("direction", "BACKWARD");
    let (status, body) = c.get("/loki/api/v1/query", &q.encode()).await?;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    s.stop().await
}

#[tokio::test]
async fn logcli_labels_and_series() -> anyhow::Result<()> {
    let mut s = TestServer::start(conformance_config()?).await?;
    let data = dataset();
    push(&s, &data, None).await?;
    let c = Logcli::new(&s);

    let names: Vec<String> = sorted_set(
        &data
            .iter()
            .flat_map(|l| l.labels.keys().cloned())
            .collect::<Vec<_>>(),
    );
    assert_eq!(list_labels(&c, "", FROM, TO).await?, names);
    for name in ["pod", "job", "env"] {
        let values: Vec<String> = sorted_set(
            &data
                .iter()
                .map(|l| l.labels[name].clone())
                .collect::<Vec<_>>(),
        );
        assert_eq!(list_labels(&c, name, FROM, TO).await?, values, "{name}");
    }
    assert_eq!(
        list_labels(&c, "nope", FROM, TO).await?,
        Vec::<String>::new()
    );
    let reqs = c.requests();
    assert_eq!(
        reqs[0],
        format!(
            "/loki/api/v1/labels?end={}&start={}",
            must_parse(TO)?,
            must_parse(FROM)?
        )
    );
    assert!(reqs[1].starts_with("/loki/api/v1/label/pod/values?end="));

    let all_streams: Vec<LabelSet> =
        sorted_set(&data.iter().map(|l| l.labels.clone()).collect::<Vec<_>>());
    type Case<'a> = (&'a str, Box<dyn Fn(&LabelSet) -> bool>);
    let cases: Vec<Case> = vec![
        (
            r#"{job="app", env="prod"}"#,
            Box::new(|l| l["job"] == "app" && l["env"] == "prod"),
        ),
        (
            r#"{pod=~"c|d"}"#,
            Box::new(|l| l["pod"] == "c" || l["pod"] == "d"),
        ),
        (
            r#"{job=~".+", job!="app"}"#,
            Box::new(|l| l["job"] != "app"),
        ),
        // Loki reads a lone `{}` as "no matcher": every series.
        ("{}", Box::new(|_| true)),
    ];
    for (matcher, keep) in cases {
        let got = get_series(&c, matcher, FROM, TO).await?;
        let want: Vec<LabelSet> = all_streams.iter().filter(|l| keep(l)).cloned().collect();
        assert_eq!(got.len(), want.len(), "{matcher}: {got:?}");
        assert_eq!(sorted_set(&got), want, "{matcher}");
    }
    let series_req = c
        .requests()
        .into_iter()
        .find(|r| r.starts_with("/loki/api/v1/series"))
        .unwrap_or_default();
    assert!(
        series_req.contains("&match=%7Bjob%3D%22app%22%2C+env%3D%22prod%22%7D&"),
        "{series_req}"
    );
    s.stop().await
}

#[tokio::test]
async fn logcli_org_id_headers_and_compression() -> anyhow::Result<()> {
    let mut config = conformance_config()?;
    config.auth_enabled = true;
    let mut s = TestServer::start(config).await?;
    let data = dataset();
    push(&s, &data, Some("team-a")).await?;
    let other: Vec<LogLine> = (0..50)
        .map(|k| LogLine {
            ts: T0 + k * TICK + OFFSET,
            labels: labels(&[("job", "other"), ("pod", "z")]),
            line: format!("team b line {k}"),
        })
        .collect();
    push(&s, &other, Some("team-b")).await?;

    // Everything a logcli user may add: tenant, query tags, no-cache, a token, a custom header
    // and --compress.
    let a = Logcli {
        org_id: "team-a".into(),
        query_tags: "source=logcli".into(),
        no_cache: true,
        bearer_token: "not-checked".into(),
        custom_headers: vec!["X-Trace: abc".into()],
        compression: true,
        ..Logcli::new(&s)
    };
    let b = Logcli {
        org_id: "team-b".into(),
        ..Logcli::new(&s)
    };
    assert_eq!(list_labels(&a, "job", FROM, TO).await?, vec!["app", "db"]);
    assert_eq!(list_labels(&b, "job", FROM, TO).await?, vec!["other"]);
    assert_eq!(list_labels(&b, "", FROM, TO).await?, vec!["job", "pod"]);
    assert_eq!(
        get_series(&b, "{}", FROM, TO).await?,
        vec![labels(&[("job", "other"), ("pod", "z")])]
    );
    assert!(get_series(&b, r#"{job="app"}"#, FROM, TO).await?.is_empty());

    let (start, end) = (must_parse(FROM)?, must_parse(TO)?);
    let out = do_query(
        Query {
            limit: 1000,
            ..Query::range(r#"{job="app"}"#, FROM, TO)?
        },
        &a,
    )
    .await?;
    assert_eq!(
        canonical(out.lines, false),
        expected_logs(&data, is_app, start, end, false)
    );
    assert!(
        a.encodings
            .lock()
            .map(|e| e.iter().any(|x| x.as_deref() == Some("gzip")))
            .unwrap_or(false),
        "--compress asks for gzip and tovlog sends it"
    );

    let before = b.requests().len();
    let out = do_query(
        Query {
            limit: 1000,
            ..Query::range(r#"{job="app"}"#, FROM, TO)?
        },
        &b,
    )
    .await?;
    assert!(out.lines.is_empty(), "team-b sees none of team-a's lines");
    assert_eq!(
        b.requests().len() - before,
        1,
        "an empty batch ends the loop"
    );
    let out = do_query(
        Query {
            limit: 1000,
            forward: true,
            ..Query::range(r#"{job="other"}"#, FROM, TO)?
        },
        &b,
    )
    .await?;
    assert_eq!(out.lines, expected_logs(&other, |_| true, start, end, true));
    assert!(
        b.encodings
            .lock()
            .map(|e| e.iter().all(Option::is_none))
            .unwrap_or(false),
        "without --compress nothing may come back compressed"
    );

    // Without --org-id the server answers 401 and logcli gives up.
    let anonymous = Logcli::new(&s);
    let mut q = QueryStringBuilder::default();
    q.set_int("start", start);
    q.set_int("end", end);
    let (status, _) = anonymous.get("/loki/api/v1/labels", &q.encode()).await?;
    assert_eq!(status, 401);
    assert!(list_labels(&anonymous, "", FROM, TO).await.is_err());
    s.stop().await
}

// ---------------------------------------------------------------------------------------------
// logcli delete (pkg/logcli/delete/delete.go, cmd/logcli/main.go `newDeleteCreateQuery`)
// ---------------------------------------------------------------------------------------------

/// `client.DeleteRequestParams`.
#[derive(Debug, Default)]
struct DeleteRequestParams {
    query: String,
    start: String,
    end: String,
    max_interval: String,
}

/// `client.DeleteRequest`, the only fields logcli decodes: Go's `encoding/json` refuses a
/// fractional number for an `int64` (and so does serde for `i64`) and ignores unknown fields.
#[derive(Debug, Clone, Default, Deserialize)]
struct LogcliDeleteRequest {
    #[serde(default)]
    start_time: i64,
    #[serde(default)]
    end_time: i64,
    #[serde(default)]
    query: String,
    #[serde(default)]
    status: String,
}

/// `logcli delete create <query> --from <from> --to <to> [--max-interval <i>]`: `mustParse`
/// both times, then `CreateQuery` sends them as unix seconds.
async fn delete_create(
    c: &Logcli,
    query: &str,
    from: &str,
    to: &str,
    max_interval: &str,
) -> anyhow::Result<()> {
    let params = DeleteRequestParams {
        query: query.to_string(),
        start: must_parse(from)?.div_euclid(1_000_000_000).to_string(),
        end: must_parse(to)?.div_euclid(1_000_000_000).to_string(),
        max_interval: max_interval.to_string(),
    };
    c.create_delete_request(&params).await
}

#[tokio::test]
async fn logcli_delete_create_list_and_cancel() -> anyhow::Result<()> {
    let mut config = conformance_config()?;
    config.storage.compaction.retention_enabled = true;
    let mut s = TestServer::start(config).await?;
    let data = dataset();
    push(&s, &data, None).await?;
    let (from_s, to_s) = (
        must_parse(FROM)?.div_euclid(1_000_000_000),
        must_parse(TO)?.div_euclid(1_000_000_000),
    );

    // `logcli delete create '{job="app"} |= "level=error"' --from … --to …`, byte for byte.
    let c = Logcli::new(&s);
    let errors = r#"{job="app"} |= "level=error""#;
    delete_create(&c, errors, FROM, TO, "").await?;
    assert_eq!(
        c.requests(),
        vec![format!(
            "/loki/api/v1/delete?end={to_s}&query=%7Bjob%3D%22app%22%7D+%7C%3D+%22level%3Derror%22&start={from_s}"
        )]
    );

    // The very next query no longer has the deleted lines.
    let deleted = |l: &LogLine| is_app(l) && l.line.contains("level=error");
    let (start, end) = (must_parse(FROM)?, must_parse(TO)?);
    let got = do_query(
        Query {
            limit: 0,
            forward: true,
            ..Query::range(r#"{job=~"app|db"}"#, FROM, TO)?
        },
        &c,
    )
    .await?;
    let want = expected_logs(&data, |l| !deleted(l), start, end, true);
    assert!(want.len() < data.len(), "the delete must remove something");
    assert_eq!(canonical(got.lines, true), want);

    // A second request, cancelled with `logcli delete cancel --request-id`: the id comes from
    // the API (logcli's list does not decode it).
    delete_create(&c, r#"{job="db"}"#, FROM, TO, "").await?;
    let (status, body) = s.get("/loki/api/v1/delete", &[], &[]).await?;
    anyhow::ensure!(status == 200, "{status} {body}");
    let listed: Vec<Value> = serde_json::from_str(&body)?;
    let db_id = listed
        .iter()
        .find(|r| r["query"] == r#"{job="db"}"#)
        .and_then(|r| r["request_id"].as_str())
        .ok_or_else(|| anyhow::anyhow!("no db request in {body}"))?
        .to_string();
    let cancel = Logcli::new(&s);
    cancel.cancel_delete_request(&db_id, false).await?;
    assert_eq!(
        cancel.requests(),
        vec![format!("/loki/api/v1/delete?request_id={db_id}")]
    );
    // Cancelling it again, or an id that never existed, fails as against Loki (404).
    assert!(cancel.cancel_delete_request(&db_id, false).await.is_err());
    assert!(cancel.cancel_delete_request("nope", true).await.is_err());

    // `logcli delete list`: the remaining request, decoded strictly; the cancelled one is gone.
    let list = Logcli::new(&s);
    let requests = list.list_delete_requests().await?;
    assert_eq!(list.requests(), vec!["/loki/api/v1/delete".to_string()]);
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].query, errors);
    assert_eq!(requests[0].start_time, from_s);
    assert_eq!(requests[0].end_time, to_s);
    assert_eq!(requests[0].status, "received");

    // The cancelled delete left the db lines; the errors stay deleted.
    let got = do_query(
        Query {
            limit: 0,
            forward: true,
            ..Query::range(r#"{job=~"app|db"}"#, FROM, TO)?
        },
        &c,
    )
    .await?;
    assert_eq!(canonical(got.lines, true), want);
    s.stop().await
}
