//! The ruler's notifier and remote writer against the real peers: Alertmanager (Debian package
//! `prometheus-alertmanager`) with a webhook receiver pointing at a listener in the test, and
//! Prometheus (package `prometheus`) with its remote-write receiver. Each test starts its own
//! peers on free loopback ports with temporary directories and kills them when it ends; a peer
//! that cannot start fails the test.

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::sync::mpsc;

pub use crate::server::free_port;
use tovlog::ruler::{
    config::{QueueConfig, RemoteWriteClient, RemoteWriteConfig},
    notifier::{Alert, Notifier},
    remote_write::{RemoteWriter, Sample},
    RulerConfig,
};

/// A peer process with its directory; killed when dropped.
pub struct Peer {
    child: Child,
    _dir: tempfile::TempDir,
    /// Base URL, e.g. `http://127.0.0.1:9093`.
    pub url: String,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// Start `bins[0]` (or the next name found) with `args`, its output going to `log.txt` in
    /// `dir`, and wait for `GET /-/ready` to answer 200.
    async fn start(
        bins: &[&str],
        dir: tempfile::TempDir,
        port: u16,
        args: Vec<String>,
    ) -> Result<Peer> {
        Peer::start_with(bins, dir, port, args, "http", reqwest::Client::new()).await
    }

    /// [`Peer::start`] for a peer serving `scheme`, polled with `client`.
    async fn start_with(
        bins: &[&str],
        dir: tempfile::TempDir,
        port: u16,
        args: Vec<String>,
        scheme: &str,
        client: reqwest::Client,
    ) -> Result<Peer> {
        let log_path = dir.path().join("log.txt");
        let mut last_err = None;
        let mut child = None;
        for bin in bins {
            let log = std::fs::File::create(&log_path)?;
            match Command::new(bin)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
            {
                Ok(c) => {
                    child = Some(c);
                    break;
                }
                Err(e) => last_err = Some(format!("{bin}: {e}")),
            }
        }
        let Some(child) = child else {
            bail!(
                "cannot start any of {bins:?} ({}); install the Debian packages prometheus and \
                 prometheus-alertmanager",
                last_err.unwrap_or_default()
            );
        };
        let mut peer = Peer {
            child,
            _dir: dir,
            url: format!("{scheme}://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = peer.child.try_wait()? {
                bail!(
                    "{} exited with {status}: {}",
                    bins[0],
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            if let Ok(r) = client.get(format!("{}/-/ready", peer.url)).send().await {
                if r.status().is_success() {
                    return Ok(peer);
                }
            }
            if Instant::now() > deadline {
                let _ = peer.child.kill();
                bail!(
                    "{} not ready after 30s: {}",
                    bins[0],
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Alertmanager with one route to a webhook at `webhook_url`, grouping by `alertname` with short
/// waits so firing and resolved notifications arrive within a second or two.
pub async fn start_alertmanager(webhook_url: &str) -> Result<Peer> {
    start_alertmanager_with(webhook_url, None).await
}

/// [`start_alertmanager`], serving HTTPS with `(certificate, key, client trusting it)` when
/// given.
pub async fn start_alertmanager_with(
    webhook_url: &str,
    tls: Option<(&std::path::Path, &std::path::Path, reqwest::Client)>,
) -> Result<Peer> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: hook\n  group_by: ['alertname']\n  group_wait: 100ms\n  \
             group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    \
             webhook_configs:\n      - url: '{webhook_url}'\n        send_resolved: true\n"
        ),
    )?;
    let args = vec![
        format!("--config.file={}", config.display()),
        format!("--storage.path={}", dir.path().join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--cluster.listen-address=".to_string(),
    ];
    let bins = &["prometheus-alertmanager", "alertmanager"];
    match tls {
        None => Peer::start(bins, dir, port, args).await,
        Some((cert, key, client)) => {
            let web = dir.path().join("web.yml");
            std::fs::write(
                &web,
                format!(
                    "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                    cert.display(),
                    key.display()
                ),
            )?;
            let mut args = args;
            args.push(format!("--web.config.file={}", web.display()));
            Peer::start_with(bins, dir, port, args, "https", client).await
        }
    }
}

/// Prometheus with its remote-write receiver on `port`, scraping nothing.
pub async fn start_prometheus(port: u16) -> Result<Peer> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1h\n")?;
    let args = vec![
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.path().join("data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--web.enable-remote-write-receiver".to_string(),
    ];
    Peer::start(&["prometheus"], dir, port, args).await
}

/// One request a [`Listener`] received.
#[derive(Debug)]
pub struct Captured {
    /// Path.
    pub path: String,
    /// Headers, names lowercase.
    pub headers: BTreeMap<String, String>,
    /// Body.
    pub body: Vec<u8>,
}

/// A small HTTP server answering 200 to everything and handing each request to the test.
pub struct Listener {
    /// Base URL.
    pub url: String,
    rx: mpsc::UnboundedReceiver<Captured>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    /// Listen on a free loopback port.
    pub async fn start() -> Result<Listener> {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let tx = tx.clone();
            async move {
                let path = req.uri().path().to_string();
                let headers = req
                    .headers()
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect();
                let body = axum::body::to_bytes(req.into_body(), 64 << 20)
                    .await
                    .map(|b| b.to_vec())
                    .unwrap_or_default();
                let _ = tx.send(Captured {
                    path,
                    headers,
                    body,
                });
                axum::http::StatusCode::OK
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Listener { url, rx, task })
    }

    /// The next request, waiting at most `within`.
    pub async fn next(&mut self, within: Duration) -> Result<Captured> {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .context("no request arrived in time")?
            .context("listener closed")
    }

    /// The next webhook body (JSON) satisfying `want`, skipping others.
    pub async fn webhook(
        &mut self,
        within: Duration,
        want: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let c = self.next(left).await.context("waiting for the webhook")?;
            let v: Value = serde_json::from_slice(&c.body)?;
            if want(&v) {
                return Ok(v);
            }
        }
    }
}

/// The value of metric `name` on the line whose labels contain `labels` (Prometheus text).
pub fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']) && rest.contains(labels))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Poll `f` every 50 ms until it returns `Some`, for at most `within`.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Standard base64 (the `Authorization: Basic` encoding), for checking headers.
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn rendered(n: &Notifier) -> String {
    let mut s = String::new();
    n.render_metrics(&mut s);
    s
}

fn rendered_rw(w: &RemoteWriter) -> String {
    let mut s = String::new();
    w.render_metrics(&mut s);
    s
}

/// The labels of a JSON object as a map (Alertmanager's API and webhook shapes).
fn json_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifier_alert_reaches_alertmanager_and_webhook_then_resolves() -> Result<()> {
    let mut hook = Listener::start().await?;
    let am = start_alertmanager(&format!("{}/hook", hook.url)).await?;
    // A second Alertmanager that is down: its errors must not hold back the live one.
    let dead = format!("http://127.0.0.1:{}", free_port()?);
    let config = RulerConfig {
        alertmanager_url: format!("{}, {dead}", am.url),
        notification_timeout: Duration::from_secs(5),
        ..RulerConfig::default()
    };
    let notifier = Notifier::new(&config)?;
    assert_eq!(notifier.alertmanagers(), 2);

    let sent_labels = labels(&[
        ("alertname", "TovlogPeerBruteForce"),
        ("user", "mallory"),
        ("severity", "page"),
        ("unset", ""),
    ]);
    let want_labels: BTreeMap<String, String> = sent_labels
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let annotations = labels(&[
        ("summary", "50 failed logins for mallory in 5m"),
        ("description", "value: 50 \"quoted\" <b>"),
    ]);
    let generator = "http://grafana.example:3000/explore?left=%7B%22queries%22%3A%5B%5D%7D";
    let started = SystemTime::now() - Duration::from_secs(30);
    let alert = Alert {
        labels: sent_labels,
        annotations: annotations.clone(),
        starts_at: started,
        ends_at: None,
        generator_url: generator.to_string(),
    };
    notifier.send(vec![alert.clone()]);

    // Alertmanager's own API lists it, active, as sent.
    let client = reqwest::Client::new();
    let listed = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v: Value = client
                .get(format!("{}/api/v2/alerts", am.url))
                .query(&[("filter", "alertname=\"TovlogPeerBruteForce\"")])
                .send()
                .await?
                .json()
                .await?;
            if let Some(a) = v.as_array().and_then(|a| a.first()) {
                break a.clone();
            }
            if Instant::now() > deadline {
                bail!("the alert never appeared in Alertmanager's /api/v2/alerts");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(json_map(&listed["labels"]), want_labels);
    assert_eq!(json_map(&listed["annotations"]), annotations);
    assert_eq!(listed["generatorURL"], generator);
    assert_eq!(listed["status"]["state"], "active");
    let starts_at =
        chrono::DateTime::parse_from_rfc3339(listed["startsAt"].as_str().unwrap_or(""))?;
    assert_eq!(starts_at.timestamp_millis(), unix_ms(started));
    let ends_at = chrono::DateTime::parse_from_rfc3339(listed["endsAt"].as_str().unwrap_or(""))?;
    // Without an `ends_at` the notifier makes the alert valid for 4 × max(resend_delay,
    // evaluation_interval) from now.
    let validity = 4 * config.resend_delay.max(config.evaluation_interval);
    assert!(
        ends_at.timestamp_millis()
            >= unix_ms(SystemTime::now() + validity - Duration::from_secs(30))
    );

    // The webhook receives the firing notification with our labels and annotations.
    let firing = hook
        .webhook(Duration::from_secs(20), |v| v["status"] == "firing")
        .await?;
    assert_eq!(firing["receiver"], "hook");
    let alerts = firing["alerts"].as_array().context("alerts")?;
    assert_eq!(alerts.len(), 1);
    assert_eq!(json_map(&alerts[0]["labels"]), want_labels);
    assert_eq!(json_map(&alerts[0]["annotations"]), annotations);
    assert_eq!(alerts[0]["generatorURL"], generator);

    // Resolve it: an `ends_at` in the past.
    notifier.send(vec![Alert {
        ends_at: Some(SystemTime::now()),
        ..alert
    }]);
    let resolved = hook
        .webhook(Duration::from_secs(20), |v| v["status"] == "resolved")
        .await?;
    let alerts = resolved["alerts"].as_array().context("alerts")?;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["status"], "resolved");
    assert_eq!(json_map(&alerts[0]["labels"]), want_labels);

    // Two alerts sent to the live Alertmanager; both failed (and dropped) on the dead one.
    let live = format!("alertmanager=\"{}/api/v2/alerts\"", am.url);
    let down = format!("alertmanager=\"{dead}/api/v2/alerts\"");
    let text = eventually(
        "the dead Alertmanager's errors",
        Duration::from_secs(20),
        || {
            let t = rendered(&notifier);
            (metric(&t, "loki_prometheus_notifications_errors_total", &down) == Some(2.0))
                .then_some(t)
        },
    )
    .await?;
    assert_eq!(
        metric(&text, "loki_prometheus_notifications_sent_total", &live),
        Some(2.0)
    );
    assert_eq!(
        metric(&text, "loki_prometheus_notifications_errors_total", &live),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "loki_prometheus_notifications_sent_total", &down),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "loki_prometheus_notifications_dropped_total", &down),
        Some(2.0)
    );
    assert_eq!(
        metric(&text, "loki_prometheus_notifications_queue_length", &live),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "loki_prometheus_notifications_alertmanagers_discovered",
            ""
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &text,
            "loki_prometheus_notifications_latency_seconds_count",
            &live
        ),
        Some(2.0)
    );
    notifier.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ruler_clients_send_credentials_and_protocol_headers() -> Result<()> {
    let mut listener = Listener::start().await?;
    let port = listener.url.rsplit(':').next().context("port")?.to_string();

    // Basic auth from the URL's user info, as Loki's alertmanager_url allows.
    let config = RulerConfig {
        alertmanager_url: format!("http://ops:p%40ss+1@127.0.0.1:{port}/am/"),
        ..RulerConfig::default()
    };
    let n = Notifier::new(&config)?;
    let alert = Alert {
        labels: labels(&[("alertname", "A")]),
        annotations: BTreeMap::new(),
        starts_at: SystemTime::now(),
        ends_at: None,
        generator_url: String::new(),
    };
    n.send(vec![alert.clone()]);
    let req = listener.next(Duration::from_secs(10)).await?;
    assert_eq!(req.path, "/am/api/v2/alerts");
    assert_eq!(
        req.headers.get("authorization").map(String::as_str),
        Some(format!("Basic {}", base64(b"ops:p@ss+1")).as_str())
    );
    assert_eq!(
        req.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert!(req
        .headers
        .get("user-agent")
        .is_some_and(|u| u.starts_with("tovlog/")));
    let body: Value = serde_json::from_slice(&req.body)?;
    assert_eq!(body.as_array().map(Vec::len), Some(1));
    assert_eq!(body[0]["labels"], json!({"alertname": "A"}));
    assert!(body[0].get("generatorURL").is_none());
    n.shutdown(Duration::from_secs(5)).await;

    // A bearer token from the client settings (they win over the URL's user info), and more
    // alerts than one request carries.
    let mut config = RulerConfig {
        alertmanager_url: format!("http://ignored:x@127.0.0.1:{port}"),
        ..RulerConfig::default()
    };
    config.alertmanager_client.credentials = "tok-123".into();
    let n = Notifier::new(&config)?;
    let many: Vec<Alert> = (0..100)
        .map(|i| Alert {
            labels: labels(&[("alertname", "A"), ("i", &i.to_string())]),
            ..alert.clone()
        })
        .collect();
    n.send(many);
    let mut received = 0;
    while received < 100 {
        let req = listener.next(Duration::from_secs(10)).await?;
        assert_eq!(
            req.headers.get("authorization").map(String::as_str),
            Some("Bearer tok-123")
        );
        let body: Value = serde_json::from_slice(&req.body)?;
        let len = body.as_array().map_or(0, Vec::len);
        assert!((1..=tovlog::ruler::notifier::MAX_BATCH).contains(&len));
        received += len;
    }
    assert_eq!(received, 100);
    n.shutdown(Duration::from_secs(5)).await;

    // Remote write: a bearer token file, a custom header and the protocol's headers.
    let dir = tempfile::tempdir()?;
    let token = dir.path().join("token");
    std::fs::write(&token, "file-token\n")?;
    let client = RemoteWriteClient {
        url: format!("{}/api/v1/write", listener.url),
        bearer_token_file: token.display().to_string(),
        headers: BTreeMap::from([("X-Scope-OrgID".to_string(), "tenant-a".to_string())]),
        ..RemoteWriteClient::default()
    };
    let writer = RemoteWriter::new(&RemoteWriteConfig {
        enabled: true,
        clients: BTreeMap::from([("local".to_string(), client)]),
        ..RemoteWriteConfig::default()
    })?
    .context("writer enabled")?;
    writer.send(vec![Sample {
        labels: labels(&[("__name__", "x:y"), ("job", "j")]),
        value: 1.5,
        timestamp_ms: 1000,
    }]);
    let req = listener.next(Duration::from_secs(10)).await?;
    let h = |k: &str| req.headers.get(k).map(String::as_str);
    assert_eq!(req.path, "/api/v1/write");
    assert_eq!(h("authorization"), Some("Bearer file-token"));
    assert_eq!(h("x-scope-orgid"), Some("tenant-a"));
    assert_eq!(h("content-encoding"), Some("snappy"));
    assert_eq!(h("content-type"), Some("application/x-protobuf"));
    assert_eq!(h("x-prometheus-remote-write-version"), Some("0.1.0"));
    assert!(h("user-agent").is_some_and(|u| u.starts_with("tovlog/")));
    // The body is a snappy block; its uncompressed length is its first varint.
    assert!(snap::raw::decompress_len(&req.body)? > 0);
    writer.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// Query Prometheus for the raw samples of `selector` over the 10 minutes before `at_ms`.
async fn prometheus_samples(
    prom: &Peer,
    selector: &str,
    at_ms: i64,
) -> Result<Vec<(BTreeMap<String, String>, Vec<(i64, f64)>)>> {
    let v: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/query", prom.url))
        .query(&[
            ("query", format!("{selector}[10m]")),
            ("time", format!("{:.3}", at_ms as f64 / 1000.0)),
        ])
        .send()
        .await?
        .json()
        .await?;
    if v["status"] != "success" {
        bail!("Prometheus query failed: {v}");
    }
    let mut out = Vec::new();
    for series in v["data"]["result"].as_array().context("result")? {
        let points = series["values"]
            .as_array()
            .context("values")?
            .iter()
            .map(|p| {
                let ts = p[0].as_f64().context("timestamp")?;
                let val: f64 = p[1].as_str().context("value")?.parse()?;
                Ok(((ts * 1000.0).round() as i64, val))
            })
            .collect::<Result<Vec<_>>>()?;
        out.push((json_map(&series["metric"]), points));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn writer_to(url: &str, queue: QueueConfig) -> Result<Arc<RemoteWriter>> {
    RemoteWriter::new(&RemoteWriteConfig {
        enabled: true,
        clients: BTreeMap::from([(
            "prom".to_string(),
            RemoteWriteClient {
                url: url.to_string(),
                remote_timeout: Duration::from_secs(5),
                queue_config: queue,
                ..RemoteWriteClient::default()
            },
        )]),
        ..RemoteWriteConfig::default()
    })?
    .context("writer enabled")
}

/// Samples of two series at three times, values that only an exact round trip preserves.
fn recorded_samples(name: &str, now_ms: i64) -> Vec<Sample> {
    let mut out = Vec::new();
    for (i, ts) in [now_ms - 30_000, now_ms - 15_000, now_ms]
        .into_iter()
        .enumerate()
    {
        for (user, base) in [("alice", 0.1_f64), ("mallory", 1e-7)] {
            out.push(Sample {
                labels: labels(&[("__name__", name), ("user", user), ("env", "prod")]),
                value: base * (i as f64 + 1.0) + 0.2,
                timestamp_ms: ts,
            });
        }
    }
    out
}

/// The samples as Prometheus should return them, grouped per series.
/// A series' labels and its `(timestamp ms, value)` points.
type Series = (BTreeMap<String, String>, Vec<(i64, f64)>);

fn expected_series(samples: &[Sample]) -> Vec<Series> {
    let mut by: BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>> = BTreeMap::new();
    for s in samples {
        by.entry(s.labels.clone())
            .or_default()
            .push((s.timestamp_ms, s.value));
    }
    by.into_iter()
        .map(|(l, mut p)| {
            p.sort_by_key(|x| x.0);
            (l, p)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_samples_read_back_from_prometheus() -> Result<()> {
    let prom = start_prometheus(free_port()?).await?;
    let writer = writer_to(
        &format!("{}/api/v1/write", prom.url),
        QueueConfig {
            max_samples_per_send: 4,
            ..QueueConfig::default()
        },
    )?;
    let now_ms = unix_ms(SystemTime::now());
    let samples = recorded_samples("tovlog:failed_logins:rate5m", now_ms);
    let n = samples.len() as f64;
    writer.send(samples.clone());
    let text = eventually("all samples sent", Duration::from_secs(20), || {
        let t = rendered_rw(&writer);
        (metric(
            &t,
            "loki_ruler_wal_prometheus_remote_storage_samples_total",
            "remote_name=\"prom\"",
        ) == Some(n))
        .then_some(t)
    })
    .await?;
    assert_eq!(
        metric(
            &text,
            "loki_ruler_wal_prometheus_remote_storage_samples_failed_total",
            ""
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "loki_ruler_wal_prometheus_remote_storage_samples_pending",
            ""
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "loki_ruler_wal_prometheus_remote_storage_samples_in_total",
            ""
        ),
        Some(n)
    );
    assert_eq!(
        metric(
            &text,
            "loki_ruler_wal_prometheus_remote_storage_queue_highest_sent_timestamp_seconds",
            ""
        ),
        Some(now_ms as f64 / 1000.0)
    );
    // 6 samples at 4 per request: 2 requests.
    assert_eq!(
        metric(
            &text,
            "loki_ruler_wal_prometheus_remote_storage_sent_batch_duration_seconds_count",
            ""
        ),
        Some(2.0)
    );

    let got = prometheus_samples(&prom, "tovlog:failed_logins:rate5m", now_ms + 1000).await?;
    assert_eq!(got, expected_series(&samples));
    writer.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_retries_until_prometheus_comes_up() -> Result<()> {
    let port = free_port()?;
    let writer = writer_to(
        &format!("http://127.0.0.1:{port}/api/v1/write"),
        QueueConfig {
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(400),
            ..QueueConfig::default()
        },
    )?;
    let now_ms = unix_ms(SystemTime::now());
    let samples = recorded_samples("tovlog:retry:test", now_ms);
    let n = samples.len() as f64;
    writer.send(samples.clone());
    // Nothing listens yet: the batch is retried and stays pending.
    let text = eventually("retries", Duration::from_secs(20), || {
        let t = rendered_rw(&writer);
        (metric(
            &t,
            "loki_ruler_wal_prometheus_remote_storage_samples_retried_total",
            "",
        ) >= Some(2.0 * n))
        .then_some(t)
    })
    .await?;
    assert_eq!(
        metric(
            &text,
            "loki_ruler_wal_prometheus_remote_storage_samples_pending",
            ""
        ),
        Some(n)
    );
    assert_eq!(
        metric(
            &text,
            "loki_ruler_wal_prometheus_remote_storage_samples_total",
            ""
        ),
        Some(0.0)
    );
    assert_eq!(writer.pending(), samples.len() as u64);

    let prom = start_prometheus(port).await?;
    let text = eventually(
        "the samples sent after the receiver came up",
        Duration::from_secs(20),
        || {
            let t = rendered_rw(&writer);
            (metric(
                &t,
                "loki_ruler_wal_prometheus_remote_storage_samples_total",
                "",
            ) == Some(n))
            .then_some(t)
        },
    )
    .await?;
    assert_eq!(
        metric(
            &text,
            "loki_ruler_wal_prometheus_remote_storage_samples_failed_total",
            ""
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "loki_ruler_wal_prometheus_remote_storage_samples_pending",
            ""
        ),
        Some(0.0)
    );
    let got = prometheus_samples(&prom, "tovlog:retry:test", now_ms + 1000).await?;
    assert_eq!(got, expected_series(&samples));
    writer.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_drops_batches_prometheus_rejects() -> Result<()> {
    let prom = start_prometheus(free_port()?).await?;
    let writer = writer_to(
        &format!("{}/api/v1/write", prom.url),
        QueueConfig::default(),
    )?;
    let now_ms = unix_ms(SystemTime::now());
    let series = labels(&[("__name__", "tovlog:ooo:test"), ("job", "x")]);
    writer.send(vec![Sample {
        labels: series.clone(),
        value: 1.0,
        timestamp_ms: now_ms,
    }]);
    eventually("the first sample sent", Duration::from_secs(20), || {
        (metric(
            &rendered_rw(&writer),
            "loki_ruler_wal_prometheus_remote_storage_samples_total",
            "",
        ) == Some(1.0))
        .then_some(())
    })
    .await?;
    // An older sample of the same series: Prometheus answers 400 (out of order), which is
    // final: counted as failed, never retried.
    writer.send(vec![Sample {
        labels: series,
        value: 2.0,
        timestamp_ms: now_ms - 60_000,
    }]);
    let text = eventually(
        "the rejected sample counted",
        Duration::from_secs(20),
        || {
            let t = rendered_rw(&writer);
            (metric(
                &t,
                "loki_ruler_wal_prometheus_remote_storage_samples_failed_total",
                "",
            ) == Some(1.0))
            .then_some(t)
        },
    )
    .await?;
    assert_eq!(
        metric(
            &text,
            "loki_ruler_wal_prometheus_remote_storage_samples_retried_total",
            ""
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "loki_ruler_wal_prometheus_remote_storage_samples_total",
            ""
        ),
        Some(1.0)
    );
    let got = prometheus_samples(&prom, "tovlog:ooo:test", now_ms + 1000).await?;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, vec![(now_ms, 1.0)]);
    writer.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// Alertmanager serving HTTPS with a certificate of a private CA: the notifier reaches it
/// with `alertmanager_client.tls_ca_path` naming that CA, and not without (its sends fail
/// and are counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifier_reaches_an_https_alertmanager_through_its_ca_file() -> Result<()> {
    let certs = tempfile::tempdir()?;
    let d = certs.path();
    crate::tls::make_ca(d, "ca")?;
    crate::tls::make_leaf(d, "ca", "am", true)?;
    let trusting = crate::tls::client(d, "ca", None)?;
    let hook = Listener::start().await?;
    let am = start_alertmanager_with(
        &format!("{}/hook", hook.url),
        Some((&d.join("am.crt"), &d.join("am.key"), trusting.clone())),
    )
    .await?;
    let notifier_with = |ca: &str| {
        let mut config = RulerConfig {
            alertmanager_url: am.url.clone(),
            notification_timeout: Duration::from_secs(5),
            ..RulerConfig::default()
        };
        config.alertmanager_client.tls_ca_path = ca.to_string();
        Notifier::new(&config)
    };
    let alert = |name: &str| Alert {
        labels: labels(&[("alertname", name)]),
        annotations: BTreeMap::new(),
        starts_at: SystemTime::now(),
        ends_at: None,
        generator_url: String::new(),
    };
    let listed = |name: &'static str| {
        let trusting = trusting.clone();
        let url = am.url.clone();
        async move {
            let v: Value = trusting
                .get(format!("{url}/api/v2/alerts"))
                .query(&[("filter", format!("alertname=\"{name}\""))])
                .send()
                .await?
                .json()
                .await?;
            Ok::<_, anyhow::Error>(v.as_array().map_or(0, |a| a.len()))
        }
    };

    let untrusting = notifier_with("")?;
    untrusting.send(vec![alert("TovlogUntrustedPeer")]);
    eventually(
        "the send to an untrusted certificate failing",
        Duration::from_secs(20),
        || {
            metric(
                &rendered(&untrusting),
                "loki_prometheus_notifications_errors_total",
                "",
            )
            .filter(|v| *v >= 1.0)
        },
    )
    .await?;

    let notifier = notifier_with(&d.join("ca.crt").display().to_string())?;
    notifier.send(vec![alert("TovlogTrustedPeer")]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while listed("TovlogTrustedPeer").await? != 1 {
        if Instant::now() > deadline {
            bail!("the alert never reached the HTTPS Alertmanager");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed("TovlogUntrustedPeer").await?, 0);
    Ok(())
}
