//! Recording rules' samples to Prometheus remote write 1.0 (protobuf + snappy).
//!
//! ```text
//!  send(samples) ─┬► queue of client "a" ─► send loop ─► POST (retries with backoff) ─► receiver a
//!                 └► queue of client "b" ─► send loop ─► POST …                        ─► receiver b
//! ```
//!
//! Each client has a bounded queue ([`QueueConfig::capacity`](super::config::QueueConfig)
//! samples; when full the oldest are dropped and counted) and one send loop, so requests of a
//! client go out one at a time, in order: a receiver never sees a series' samples out of order
//! because of us. A loop takes up to `max_samples_per_send` samples as soon as they are queued
//! (a rule group's evaluation queues all its samples at once, so batches form by themselves; the
//! `batch_send_deadline` wait of Prometheus would only add latency).
//!
//! A request is retried with exponential backoff (`min_backoff` doubling up to `max_backoff`,
//! or the receiver's `Retry-After`) on connection errors, timeouts, 5xx and 429, until it
//! succeeds or the writer shuts down; any other status is final: the batch is counted as failed
//! and dropped. Unlike Loki's ruler there is no WAL behind the queue: samples queued when the
//! process stops are lost (counted as dropped on a graceful shutdown).
//!
//! Wire format: `prometheus.WriteRequest` (remote write 1.0) declared with prost derives below,
//! so no protoc runs at build time; the body is snappy block-compressed.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use parking_lot::Mutex;
use prost::Message as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::{sync::Notify, task::JoinHandle};

use super::{
    config::{RemoteWriteClient, RemoteWriteConfig},
    notifier::{escape_label_value, metric_header, parse_peer_url, DropOldestQueue, HttpAuth},
};

/// One recorded sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Series labels including `__name__` (the rule's `record`) and the external labels.
    /// Labels with an empty value are not sent.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
    /// Evaluation time, Unix milliseconds.
    pub timestamp_ms: i64,
}

/// `prometheus.WriteRequest` and its parts (remote write 1.0, `prompb/remote.proto` and
/// `prompb/types.proto`), only the fields tovlog sends.
mod proto {
    /// `prometheus.WriteRequest`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        /// Series with their samples.
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    /// `prometheus.TimeSeries`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// Labels sorted by name.
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        /// Samples in timestamp order.
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    /// `prometheus.Label`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        /// Name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Value.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `prometheus.Sample`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        /// Value.
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Unix milliseconds.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

/// Encode a batch as a snappy-compressed `WriteRequest`: one time series per distinct label set,
/// labels sorted by name (byte order, as Prometheus sorts them), samples by timestamp.
fn encode(batch: &[Arc<Sample>]) -> anyhow::Result<Vec<u8>> {
    let mut series: BTreeMap<&BTreeMap<String, String>, Vec<proto::Sample>> = BTreeMap::new();
    for s in batch {
        series.entry(&s.labels).or_default().push(proto::Sample {
            value: s.value,
            timestamp: s.timestamp_ms,
        });
    }
    let req = proto::WriteRequest {
        timeseries: series
            .into_iter()
            .map(|(labels, mut samples)| {
                samples.sort_by_key(|s| s.timestamp);
                proto::TimeSeries {
                    // A BTreeMap<String, _> iterates in byte order of the names.
                    labels: labels
                        .iter()
                        .filter(|(_, v)| !v.is_empty())
                        .map(|(name, value)| proto::Label {
                            name: name.clone(),
                            value: value.clone(),
                        })
                        .collect(),
                    samples,
                }
            })
            .collect(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .context("snappy compression of a remote-write request")
}

/// Upper bounds of the `sent_batch_duration_seconds` histogram (Prometheus' defaults plus its
/// long remote-write buckets).
const DURATION_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0,
];

/// A fixed-bucket histogram of durations in seconds.
#[derive(Debug, Default)]
struct Histogram {
    /// Per bucket (not cumulative); the last slot is `+Inf`.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = DURATION_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one request came to.
enum Outcome {
    Sent,
    /// Connection error, timeout, 5xx or 429: send the same batch again.
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Any other status: the receiver will never take this batch.
    Fail(String),
}

/// One remote-write target: settings, queue and counters.
#[derive(Debug)]
struct Client {
    name: String,
    /// Receiver URL without credentials; the `url` label of the metrics.
    url: reqwest::Url,
    http: reqwest::Client,
    auth: HttpAuth,
    headers: HeaderMap,
    timeout: Duration,
    max_per_send: usize,
    min_backoff: Duration,
    max_backoff: Duration,
    queue: Mutex<DropOldestQueue<Arc<Sample>>>,
    wake: Notify,
    closing: AtomicBool,
    /// Samples of the batch being sent (they count as pending).
    in_flight: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
    bytes: AtomicU64,
    highest_sent_ms: AtomicI64,
    durations: Histogram,
}

impl Client {
    fn new(name: &str, cfg: &RemoteWriteClient) -> anyhow::Result<Client> {
        let what = format!("ruler.remote_write.clients.{name}.url");
        if cfg.url.trim().is_empty() {
            bail!("{what} is empty");
        }
        let (url, url_creds) = parse_peer_url(&what, cfg.url.trim())?;
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let header = HeaderName::from_bytes(k.as_bytes()).with_context(|| {
                format!("ruler.remote_write.clients.{name}.headers: invalid header name {k:?}")
            })?;
            let value = HeaderValue::from_str(v).with_context(|| {
                format!("ruler.remote_write.clients.{name}.headers: invalid value of {k:?}")
            })?;
            headers.insert(header, value);
        }
        let auth = if let Some(b) = &cfg.basic_auth {
            let password = if b.password_file.is_empty() {
                b.password.clone()
            } else {
                std::fs::read_to_string(&b.password_file)
                    .with_context(|| {
                        format!("reading basic_auth.password_file {}", b.password_file)
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_string()
            };
            HttpAuth::Basic {
                username: b.username.clone(),
                password,
            }
        } else if let Some(a) = &cfg.authorization {
            let scheme = if a.auth_type.is_empty() {
                "Bearer".to_string()
            } else {
                a.auth_type.clone()
            };
            if a.credentials_file.is_empty() {
                HttpAuth::Credentials {
                    scheme,
                    credentials: a.credentials.clone(),
                }
            } else {
                HttpAuth::CredentialsFile {
                    scheme,
                    path: a.credentials_file.clone().into(),
                }
            }
        } else if !cfg.bearer_token.is_empty() {
            HttpAuth::Credentials {
                scheme: "Bearer".into(),
                credentials: cfg.bearer_token.clone(),
            }
        } else if !cfg.bearer_token_file.is_empty() {
            HttpAuth::CredentialsFile {
                scheme: "Bearer".into(),
                path: cfg.bearer_token_file.clone().into(),
            }
        } else if let Some((username, password)) = url_creds {
            HttpAuth::Basic { username, password }
        } else {
            HttpAuth::None
        };
        let ignored: Vec<&str> = cfg
            .other
            .keys()
            .chain(cfg.queue_config.other.keys())
            .map(String::as_str)
            .filter(|k| *k != "name")
            .collect();
        if !ignored.is_empty() {
            tracing::warn!(client = name, keys = ?ignored, "remote_write settings tovlog does not implement are ignored");
        }
        let q = &cfg.queue_config;
        Ok(Client {
            name: name.to_string(),
            url,
            http: super::client_tls::client(
                reqwest::Client::builder().user_agent(super::notifier::USER_AGENT),
                &cfg.tls_config,
                &format!("ruler.remote_write.clients.{name}"),
            )?,
            auth,
            headers,
            timeout: cfg.remote_timeout,
            max_per_send: q.max_samples_per_send.max(1),
            min_backoff: q.min_backoff.max(Duration::from_millis(1)),
            max_backoff: q.max_backoff.max(q.min_backoff),
            queue: Mutex::new(DropOldestQueue::new(q.capacity)),
            wake: Notify::new(),
            closing: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            highest_sent_ms: AtomicI64::new(0),
            durations: Histogram::default(),
        })
    }

    /// One POST of an encoded batch.
    async fn post(&self, body: &[u8]) -> Outcome {
        let req = self
            .http
            .post(self.url.clone())
            .timeout(self.timeout)
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_ENCODING, "snappy")
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body.to_vec());
        let req = match self.auth.apply(req).await {
            Ok(r) => r,
            // A credentials file that cannot be read now may be readable later.
            Err(e) => {
                return Outcome::Retry {
                    error: format!("{e:#}"),
                    retry_after: None,
                }
            }
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Retry {
                    error: format!("{e}"),
                    retry_after: None,
                }
            }
        };
        let status = resp.status();
        if status.is_success() {
            return Outcome::Sent;
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        let error = format!(
            "server returned HTTP status {status}: {}",
            text.trim().chars().take(256).collect::<String>()
        );
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Outcome::Retry { error, retry_after }
        } else {
            Outcome::Fail(error)
        }
    }

    /// Samples queued or being sent.
    fn pending(&self) -> u64 {
        self.queue.lock().len() as u64 + self.in_flight.load(Ordering::Relaxed)
    }
}

/// Send this client's queue until the writer closes and the queue is empty.
async fn send_loop(c: Arc<Client>) {
    loop {
        let batch = {
            let mut q = c.queue.lock();
            let batch = q.take(c.max_per_send);
            c.in_flight.store(batch.len() as u64, Ordering::Relaxed);
            batch
        };
        if batch.is_empty() {
            if c.closing.load(Ordering::SeqCst) {
                return;
            }
            // A push between `take` and here leaves a permit: nothing is missed.
            c.wake.notified().await;
            continue;
        }
        let n = batch.len() as u64;
        let body = match encode(&batch) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(remote_name = %c.name, error = %format!("{e:#}"), "cannot encode remote-write samples");
                c.failed.fetch_add(n, Ordering::Relaxed);
                c.in_flight.store(0, Ordering::Relaxed);
                continue;
            }
        };
        let mut backoff = c.min_backoff;
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let outcome = c.post(&body).await;
            c.durations.observe(started.elapsed());
            match outcome {
                Outcome::Sent => {
                    c.sent.fetch_add(n, Ordering::Relaxed);
                    c.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                    if let Some(max) = batch.iter().map(|s| s.timestamp_ms).max() {
                        c.highest_sent_ms.fetch_max(max, Ordering::Relaxed);
                    }
                    break;
                }
                Outcome::Fail(error) => {
                    tracing::error!(remote_name = %c.name, url = %c.url, count = n, %error, "non-recoverable error sending samples, dropping them");
                    c.failed.fetch_add(n, Ordering::Relaxed);
                    break;
                }
                Outcome::Retry { error, retry_after } => {
                    c.retried.fetch_add(n, Ordering::Relaxed);
                    let delay = retry_after.map_or(backoff, |ra| {
                        ra.clamp(backoff, Duration::from_secs(300).max(backoff))
                    });
                    if attempt == 0 {
                        tracing::warn!(remote_name = %c.name, url = %c.url, count = n, %error, retry_in = ?delay, "recoverable error sending samples, retrying");
                    } else {
                        tracing::debug!(remote_name = %c.name, attempt, %error, retry_in = ?delay, "remote-write retry failed");
                    }
                    attempt = attempt.saturating_add(1);
                    tokio::time::sleep(delay).await;
                    backoff = (backoff * 2).min(c.max_backoff);
                }
            }
        }
        c.in_flight.store(0, Ordering::Relaxed);
    }
}

/// Queues samples and sends them to every configured client with retries.
#[derive(Debug)]
pub struct RemoteWriter {
    clients: Vec<Arc<Client>>,
    samples_in: AtomicU64,
    highest_ms: AtomicI64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl RemoteWriter {
    /// `None` when remote write is disabled or has no client; starts one send loop per client
    /// (needs a Tokio runtime). Fails on a client without a usable `http://` URL or with an
    /// invalid header.
    pub fn new(config: &RemoteWriteConfig) -> anyhow::Result<Option<Arc<RemoteWriter>>> {
        if !config.enabled || config.clients.is_empty() {
            return Ok(None);
        }
        let clients = config
            .clients
            .iter()
            .map(|(name, cfg)| Client::new(name, cfg).map(Arc::new))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let runtime = tokio::runtime::Handle::try_current()
            .context("the remote writer needs a Tokio runtime")?;
        let tasks = clients
            .iter()
            .map(|c| runtime.spawn(send_loop(c.clone())))
            .collect();
        Ok(Some(Arc::new(RemoteWriter {
            clients,
            samples_in: AtomicU64::new(0),
            highest_ms: AtomicI64::new(0),
            tasks: Mutex::new(tasks),
        })))
    }

    /// Queue one evaluation's samples without blocking; a full queue drops its oldest samples.
    pub fn send(&self, samples: Vec<Sample>) {
        if samples.is_empty() {
            return;
        }
        self.samples_in
            .fetch_add(samples.len() as u64, Ordering::Relaxed);
        if let Some(max) = samples.iter().map(|s| s.timestamp_ms).max() {
            self.highest_ms.fetch_max(max, Ordering::Relaxed);
        }
        let shared: Vec<Arc<Sample>> = samples.into_iter().map(Arc::new).collect();
        for c in &self.clients {
            let dropped = c.queue.lock().push_all(shared.iter().cloned());
            if dropped > 0 {
                tracing::warn!(remote_name = %c.name, count = dropped, "remote-write queue full, dropping the oldest samples");
                c.dropped.fetch_add(dropped, Ordering::Relaxed);
            }
            c.wake.notify_one();
        }
    }

    /// Samples queued or in flight, over all clients.
    pub fn pending(&self) -> u64 {
        self.clients.iter().map(|c| c.pending()).sum()
    }

    /// Stop taking work, keep sending (and retrying) what is queued for up to `timeout`, then
    /// drop and count whatever is left.
    pub async fn shutdown(&self, timeout: Duration) {
        for c in &self.clients {
            c.closing.store(true, Ordering::SeqCst);
            c.wake.notify_one();
        }
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock());
        let deadline = tokio::time::Instant::now() + timeout;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        for c in &self.clients {
            let left = c.queue.lock().clear() as u64 + c.in_flight.swap(0, Ordering::Relaxed);
            if left > 0 {
                tracing::warn!(remote_name = %c.name, count = left, "remote-write samples not sent before shutdown");
                c.dropped.fetch_add(left, Ordering::Relaxed);
            }
        }
    }

    /// Append this writer's metrics in the Prometheus text format, named as Loki's ruler exposes
    /// Prometheus' remote-storage metrics (`loki_ruler_wal_` prefix, `remote_name` and `url`
    /// labels; no `tenant` label: one writer serves every tenant).
    pub fn render_metrics(&self, out: &mut String) {
        const P: &str = "loki_ruler_wal_prometheus_remote_storage";
        let labels = |c: &Client| {
            format!(
                "remote_name=\"{}\",url=\"{}\"",
                escape_label_value(&c.name),
                escape_label_value(c.url.as_str())
            )
        };
        let per_client = |out: &mut String,
                          name: &str,
                          help: &str,
                          kind: &str,
                          f: &dyn Fn(&Client) -> String| {
            metric_header(out, &format!("{P}_{name}"), help, kind);
            for c in &self.clients {
                let _ = writeln!(out, "{P}_{name}{{{}}} {}", labels(c), f(c));
            }
        };
        let count = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        per_client(
            out,
            "samples_total",
            "Total number of samples sent to remote storage.",
            "counter",
            &|c| count(&c.sent),
        );
        per_client(
            out,
            "samples_failed_total",
            "Total number of samples which failed on send to remote storage, non-recoverable errors.",
            "counter",
            &|c| count(&c.failed),
        );
        per_client(
            out,
            "samples_retried_total",
            "Total number of samples which failed on send to remote storage but were retried because the send error was recoverable.",
            "counter",
            &|c| count(&c.retried),
        );
        per_client(
            out,
            "samples_dropped_total",
            "Total number of samples dropped before being sent: queue full, or still queued at shutdown.",
            "counter",
            &|c| count(&c.dropped),
        );
        per_client(
            out,
            "samples_pending",
            "The number of samples pending in the queue to be sent to the remote storage.",
            "gauge",
            &|c| c.pending().to_string(),
        );
        per_client(
            out,
            "bytes_total",
            "The total number of bytes of data sent by the queue after compression.",
            "counter",
            &|c| count(&c.bytes),
        );
        per_client(
            out,
            "queue_highest_sent_timestamp_seconds",
            "Highest timestamp successfully sent by this queue, in seconds since epoch.",
            "gauge",
            &|c| (c.highest_sent_ms.load(Ordering::Relaxed) as f64 / 1000.0).to_string(),
        );
        per_client(
            out,
            "max_samples_per_send",
            "The maximum number of samples to be sent, in a single request, to the remote storage.",
            "gauge",
            &|c| c.max_per_send.to_string(),
        );
        let name = format!("{P}_sent_batch_duration_seconds");
        metric_header(
            out,
            &name,
            "Duration of send calls to the remote storage.",
            "histogram",
        );
        for c in &self.clients {
            let l = labels(c);
            let mut cumulative = 0u64;
            for (i, le) in DURATION_BUCKETS.iter().enumerate() {
                cumulative += c.durations.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"{le}\"}} {cumulative}");
            }
            cumulative += c.durations.buckets[DURATION_BUCKETS.len()].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{l},le=\"+Inf\"}} {cumulative}\n{name}_sum{{{l}}} {}\n{name}_count{{{l}}} {}",
                c.durations.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
                c.durations.count.load(Ordering::Relaxed)
            );
        }
        metric_header(
            out,
            &format!("{P}_samples_in_total"),
            "Samples in to remote storage, compare to samples out for queue managers.",
            "counter",
        );
        let _ = writeln!(
            out,
            "{P}_samples_in_total {}",
            self.samples_in.load(Ordering::Relaxed)
        );
        metric_header(
            out,
            &format!("{P}_highest_timestamp_in_seconds"),
            "Highest timestamp that has come into the remote storage via the Appender interface, in seconds since epoch.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "{P}_highest_timestamp_in_seconds {}",
            self.highest_ms.load(Ordering::Relaxed) as f64 / 1000.0
        );
    }
}

impl Drop for RemoteWriter {
    fn drop(&mut self) {
        // The loops send what is queued (retrying as usual), then end.
        for c in &self.clients {
            c.closing.store(true, Ordering::SeqCst);
            c.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn sample(labels: &[(&str, &str)], value: f64, ts: i64) -> Arc<Sample> {
        Arc::new(Sample {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
            timestamp_ms: ts,
        })
    }

    #[test]
    fn batches_group_series_and_sort_labels_and_samples() -> anyhow::Result<()> {
        let a = [
            ("__name__", "r"),
            ("job", "x"),
            ("Zone", "1"),
            ("empty", ""),
        ];
        let b = [("__name__", "r"), ("job", "y")];
        let batch = vec![
            sample(&a, 2.0, 2000),
            sample(&b, 5.5, 1000),
            sample(&a, 1.0, 1000),
        ];
        let raw = snap::raw::Decoder::new().decompress_vec(&encode(&batch)?)?;
        let req = proto::WriteRequest::decode(raw.as_slice())?;
        assert_eq!(req.timeseries.len(), 2);
        let names: Vec<Vec<&str>> = req
            .timeseries
            .iter()
            .map(|t| t.labels.iter().map(|l| l.name.as_str()).collect())
            .collect();
        assert_eq!(
            names,
            [vec!["Zone", "__name__", "job"], vec!["__name__", "job"]]
        );
        let samples: Vec<Vec<(i64, f64)>> = req
            .timeseries
            .iter()
            .map(|t| t.samples.iter().map(|s| (s.timestamp, s.value)).collect())
            .collect();
        assert_eq!(samples, [vec![(1000, 1.0), (2000, 2.0)], vec![(1000, 5.5)]]);
        Ok(())
    }

    #[test]
    fn clients_need_an_http_or_https_url_and_readable_tls_files() {
        let mut cfg = RemoteWriteClient::default();
        assert!(Client::new("a", &cfg).is_err());
        cfg.url = "ftp://prom:9090/api/v1/write".into();
        assert!(Client::new("a", &cfg).is_err());
        cfg.url = "https://prom:9090/api/v1/write".into();
        assert!(Client::new("a", &cfg).is_ok());
        cfg.url = "http://prom:9090/api/v1/write".into();
        assert!(Client::new("a", &cfg).is_ok());
        cfg.tls_config.ca_file = "/nonexistent/ca.crt".into();
        let err = Client::new("a", &cfg).err().map(|e| format!("{e:#}"));
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("/nonexistent/ca.crt")),
            "{err:?}"
        );
        cfg.tls_config.ca_file.clear();
        cfg.tls_config.cert_file = "/etc/hostname".into();
        assert!(
            Client::new("a", &cfg).is_err(),
            "cert_file without key_file"
        );
    }
}
