//! Alert notifications to Alertmanager (API v2), as Prometheus' notifier sends them.
//!
//! ```text
//!  send(alerts) ─► JSON once per alert ─┬► queue of Alertmanager 1 ─► send loop ─► POST <am1>/api/v2/alerts
//!                                       └► queue of Alertmanager 2 ─► send loop ─► POST <am2>/api/v2/alerts
//! ```
//!
//! Each configured Alertmanager has its own bounded queue and its own send loop (as Prometheus
//! 3 does), so a slow or unreachable Alertmanager delays only its own deliveries. `send` never
//! blocks: when a queue is full its oldest alerts are dropped and counted. A loop posts up to
//! [`MAX_BATCH`] alerts per request with `notification_timeout`; a failed request is counted as
//! errors and dropped, not retried: the rule manager resends firing alerts every `resend_delay`,
//! which is Prometheus' recovery path too.
//!
//! The module also holds the two pieces the remote writer shares with it: the drop-oldest queue
//! ([`DropOldestQueue`]) and HTTP authentication ([`HttpAuth`]).

use std::{
    collections::{BTreeMap, VecDeque},
    fmt::Write as _,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::{sync::Notify, task::JoinHandle};

use super::RulerConfig;

/// Most alerts in one request (Prometheus' notifier batch size).
pub const MAX_BATCH: usize = 64;

/// `User-Agent` of the ruler's requests.
pub(crate) const USER_AGENT: &str = concat!("tovlog/", env!("CARGO_PKG_VERSION"));

/// One alert as sent to Alertmanager (`POST /api/v2/alerts`).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Labels, after templating, with the rule's and the external labels and `alertname`.
    /// Labels with an empty value are not sent (an empty value means "no such label").
    pub labels: BTreeMap<String, String>,
    /// Annotations, after templating.
    pub annotations: BTreeMap<String, String>,
    /// When the alert started firing (`startsAt`).
    pub starts_at: SystemTime,
    /// `endsAt`. For a resolved alert: when it resolved (in the past). For a firing alert either
    /// `None`, and the notifier sends `now + 4 × max(resend_delay, evaluation_interval)` (the
    /// default group interval: it does not know the group's own), or the manager's own
    /// "valid until" time from [`Notifier::valid_until`], which is what Prometheus sends
    /// (`evaluation time + 4 × max(resend_delay, group interval)`). Alertmanager resolves an alert
    /// by itself once `endsAt` passes without a resend.
    pub ends_at: Option<SystemTime>,
    /// Link back to the query (`generatorURL`); not sent when empty.
    pub generator_url: String,
}

/// Alertmanager API v2's `postableAlert`.
#[derive(Serialize)]
struct PostableAlert<'a> {
    labels: BTreeMap<&'a str, &'a str>,
    annotations: &'a BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    starts_at: String,
    #[serde(rename = "endsAt")]
    ends_at: String,
    #[serde(rename = "generatorURL", skip_serializing_if = "str::is_empty")]
    generator_url: &'a str,
}

/// RFC 3339 in UTC with the fraction Go prints (Alertmanager parses either).
fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A FIFO holding at most `capacity` items; pushing into a full queue drops the oldest.
#[derive(Debug)]
pub(crate) struct DropOldestQueue<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T> DropOldestQueue<T> {
    /// An empty queue; a capacity of 0 is taken as 1 so the newest item always fits.
    pub(crate) fn new(capacity: usize) -> Self {
        DropOldestQueue {
            items: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Append `items` in order; returns how many (oldest first, queued or new) were dropped.
    pub(crate) fn push_all(&mut self, items: impl IntoIterator<Item = T>) -> u64 {
        let mut dropped = 0;
        for item in items {
            if self.items.len() == self.capacity {
                self.items.pop_front();
                dropped += 1;
            }
            self.items.push_back(item);
        }
        dropped
    }

    /// Remove and return up to `n` of the oldest items.
    pub(crate) fn take(&mut self, n: usize) -> Vec<T> {
        let n = n.min(self.items.len());
        self.items.drain(..n).collect()
    }

    /// Remove everything; returns how many items there were.
    pub(crate) fn clear(&mut self) -> usize {
        let n = self.items.len();
        self.items.clear();
        n
    }

    /// Items waiting.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// The most items kept.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.capacity
    }
}

/// How a request authenticates (Prometheus' `basic_auth` / `authorization` client settings).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HttpAuth {
    /// No `Authorization` header.
    None,
    /// HTTP basic auth.
    Basic {
        /// User.
        username: String,
        /// Password.
        password: String,
    },
    /// `Authorization: <scheme> <credentials>`.
    Credentials {
        /// Scheme, e.g. `Bearer`.
        scheme: String,
        /// The token.
        credentials: String,
    },
    /// As `Credentials`, the token read from a file at each request so it can be rotated.
    CredentialsFile {
        /// Scheme, e.g. `Bearer`.
        scheme: String,
        /// File holding the token.
        path: std::path::PathBuf,
    },
}

impl HttpAuth {
    /// Add the `Authorization` header to `req`.
    pub(crate) async fn apply(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        Ok(match self {
            HttpAuth::None => req,
            HttpAuth::Basic { username, password } => req.basic_auth(username, Some(password)),
            HttpAuth::Credentials {
                scheme,
                credentials,
            } => req.header(
                reqwest::header::AUTHORIZATION,
                format!("{scheme} {credentials}"),
            ),
            HttpAuth::CredentialsFile { scheme, path } => {
                let token = tokio::fs::read_to_string(path)
                    .await
                    .with_context(|| format!("reading credentials file {}", path.display()))?;
                req.header(
                    reqwest::header::AUTHORIZATION,
                    format!("{scheme} {}", token.trim()),
                )
            }
        })
    }
}

/// Parse an `http://` URL of a peer; `https` is refused with a clear error because the ruler's
/// HTTP client is built without TLS. Returns the URL without credentials and the credentials it
/// carried (`http://user:pass@host` is how Loki's `alertmanager_url` passes basic auth).
pub(crate) fn parse_peer_url(
    what: &str,
    raw: &str,
) -> anyhow::Result<(reqwest::Url, Option<(String, String)>)> {
    let mut url =
        reqwest::Url::parse(raw).with_context(|| format!("{what}: invalid URL {raw:?}"))?;
    match url.scheme() {
        "http" | "https" => {}
        other => bail!("{what}: unsupported URL scheme {other:?} in {raw:?}"),
    }
    if url.host_str().is_none() {
        bail!("{what}: URL {raw:?} has no host");
    }
    let creds = if url.username().is_empty() {
        None
    } else {
        let decode = |s: &str| {
            // Percent-decoding through form_urlencoded, with `+` kept literal as in a URL.
            form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        Some((decode(url.username()), decode(url.password().unwrap_or(""))))
    };
    // Clearing credentials cannot fail on an http URL with a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok((url, creds))
}

/// Escape a label value for the Prometheus text format.
pub(crate) fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `# HELP` and `# TYPE` lines of one metric family.
pub(crate) fn metric_header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One Alertmanager: its queue and counters.
#[derive(Debug)]
struct Target {
    /// `POST` URL without credentials; also the `alertmanager` label of the metrics.
    url: reqwest::Url,
    queue: Mutex<DropOldestQueue<Arc<str>>>,
    wake: Notify,
    sent: AtomicU64,
    errors: AtomicU64,
    dropped: AtomicU64,
    latency_ns: AtomicU64,
    latency_count: AtomicU64,
}

/// What every send loop needs.
#[derive(Debug)]
struct Shared {
    client: reqwest::Client,
    /// One per Alertmanager, same order as `Notifier::targets`.
    auth: Vec<HttpAuth>,
    timeout: Duration,
    closing: AtomicBool,
}

/// Sends alerts to every configured Alertmanager from bounded queues.
#[derive(Debug)]
pub struct Notifier {
    targets: Vec<Arc<Target>>,
    shared: Arc<Shared>,
    capacity: usize,
    /// `4 × max(resend_delay, evaluation_interval)`: how long a firing alert without `ends_at`
    /// stays valid in Alertmanager.
    default_validity: Duration,
    resend_delay: Duration,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Notifier {
    /// Build the notifier and start one send loop per Alertmanager (needs a Tokio runtime).
    /// Fails on an unusable `alertmanager_url` (not http, no host) or a missing runtime.
    pub fn new(config: &RulerConfig) -> anyhow::Result<Arc<Notifier>> {
        let client_cfg = &config.alertmanager_client;
        let scheme = if client_cfg.auth_type.is_empty() {
            "Bearer".to_string()
        } else {
            client_cfg.auth_type.clone()
        };
        let configured_auth = if !client_cfg.basic_auth_username.is_empty() {
            Some(HttpAuth::Basic {
                username: client_cfg.basic_auth_username.clone(),
                password: client_cfg.basic_auth_password.clone(),
            })
        } else if !client_cfg.credentials.is_empty() {
            Some(HttpAuth::Credentials {
                scheme,
                credentials: client_cfg.credentials.clone(),
            })
        } else if !client_cfg.credentials_file.is_empty() {
            Some(HttpAuth::CredentialsFile {
                scheme,
                path: client_cfg.credentials_file.clone().into(),
            })
        } else {
            None
        };

        let mut targets = Vec::new();
        let mut auth = Vec::new();
        for raw in config.alertmanager_urls() {
            let (base, creds) = parse_peer_url("ruler.alertmanager_url", &raw)?;
            let mut url = base;
            let path = format!("{}/api/v2/alerts", url.path().trim_end_matches('/'));
            url.set_path(&path);
            // The client settings win over credentials in the URL, as in Loki.
            auth.push(match (&configured_auth, creds) {
                (Some(a), _) => a.clone(),
                (None, Some((username, password))) => HttpAuth::Basic { username, password },
                (None, None) => HttpAuth::None,
            });
            targets.push(Arc::new(Target {
                url,
                queue: Mutex::new(DropOldestQueue::new(config.notification_queue_capacity)),
                wake: Notify::new(),
                sent: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                latency_ns: AtomicU64::new(0),
                latency_count: AtomicU64::new(0),
            }));
        }

        let client = super::client_tls::client(
            reqwest::Client::builder().user_agent(USER_AGENT),
            &client_cfg.tls(),
            "ruler.alertmanager_client",
        )?;
        let shared = Arc::new(Shared {
            client,
            auth,
            timeout: config.notification_timeout,
            closing: AtomicBool::new(false),
        });
        let mut tasks = Vec::new();
        if !targets.is_empty() {
            let runtime = tokio::runtime::Handle::try_current()
                .context("the notifier needs a Tokio runtime")?;
            for (i, t) in targets.iter().enumerate() {
                tasks.push(runtime.spawn(send_loop(t.clone(), shared.clone(), i)));
            }
        }
        Ok(Arc::new(Notifier {
            targets,
            shared,
            capacity: config.notification_queue_capacity.max(1),
            default_validity: 4 * config.resend_delay.max(config.evaluation_interval),
            resend_delay: config.resend_delay,
            tasks: Mutex::new(tasks),
        }))
    }

    /// The `endsAt` Prometheus gives a firing alert evaluated at `eval_time` in a group with
    /// interval `group_interval`: `eval_time + 4 × max(resend_delay, group_interval)`.
    pub fn valid_until(&self, eval_time: SystemTime, group_interval: Duration) -> SystemTime {
        eval_time + 4 * self.resend_delay.max(group_interval)
    }

    /// Number of Alertmanagers alerts go to.
    pub fn alertmanagers(&self) -> usize {
        self.targets.len()
    }

    /// Queue alerts without blocking; when a queue is full the oldest are dropped and counted.
    pub fn send(&self, alerts: Vec<Alert>) {
        if self.targets.is_empty() || alerts.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let encoded: Vec<Arc<str>> = alerts
            .iter()
            .filter_map(|a| {
                let postable = PostableAlert {
                    labels: a
                        .labels
                        .iter()
                        .filter(|(_, v)| !v.is_empty())
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect(),
                    annotations: &a.annotations,
                    starts_at: rfc3339(a.starts_at),
                    ends_at: rfc3339(a.ends_at.unwrap_or(now + self.default_validity)),
                    generator_url: &a.generator_url,
                };
                match serde_json::to_string(&postable) {
                    Ok(s) => Some(Arc::from(s)),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode an alert for Alertmanager");
                        None
                    }
                }
            })
            .collect();
        for t in &self.targets {
            let dropped = t.queue.lock().push_all(encoded.iter().cloned());
            if dropped > 0 {
                tracing::warn!(alertmanager = %t.url, count = dropped, "alert notification queue full, dropping alerts");
                t.dropped.fetch_add(dropped, Ordering::Relaxed);
            }
            t.wake.notify_one();
        }
    }

    /// Stop accepting work, send what is queued, and wait up to `timeout` for the send loops to
    /// finish; alerts still queued after that are dropped and counted.
    pub async fn shutdown(&self, timeout: Duration) {
        self.shared.closing.store(true, Ordering::SeqCst);
        for t in &self.targets {
            t.wake.notify_one();
        }
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock());
        let deadline = tokio::time::Instant::now() + timeout;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        for t in &self.targets {
            let left = t.queue.lock().clear() as u64;
            if left > 0 {
                tracing::warn!(alertmanager = %t.url, count = left, "alert notifications not sent before shutdown");
                t.dropped.fetch_add(left, Ordering::Relaxed);
            }
        }
    }

    /// Append this notifier's metrics in the Prometheus text format, named as Loki's ruler
    /// exposes Prometheus' notifier metrics (`loki_` prefix; no `user` label: one notifier
    /// serves every tenant).
    pub fn render_metrics(&self, out: &mut String) {
        const P: &str = "loki_prometheus_notifications";
        let per_am = |out: &mut String,
                      name: &str,
                      help: &str,
                      kind: &str,
                      f: &dyn Fn(&Target) -> String| {
            metric_header(out, &format!("{P}_{name}"), help, kind);
            for t in &self.targets {
                let _ = writeln!(
                    out,
                    "{P}_{name}{{alertmanager=\"{}\"}} {}",
                    escape_label_value(t.url.as_str()),
                    f(t)
                );
            }
        };
        per_am(
            out,
            "sent_total",
            "Total number of alerts sent.",
            "counter",
            &|t| t.sent.load(Ordering::Relaxed).to_string(),
        );
        per_am(
            out,
            "errors_total",
            "Total number of sent alerts affected by errors.",
            "counter",
            &|t| t.errors.load(Ordering::Relaxed).to_string(),
        );
        per_am(
            out,
            "dropped_total",
            "Total number of alerts dropped due to errors when sending to Alertmanager or a full queue.",
            "counter",
            &|t| t.dropped.load(Ordering::Relaxed).to_string(),
        );
        per_am(
            out,
            "queue_length",
            "The number of alert notifications in the queue.",
            "gauge",
            &|t| t.queue.lock().len().to_string(),
        );
        // A summary without quantiles: sum and count are what rate() dashboards use.
        let name = format!("{P}_latency_seconds");
        metric_header(
            out,
            &name,
            "Latency quantiles for sending alert notifications.",
            "summary",
        );
        for t in &self.targets {
            let am = escape_label_value(t.url.as_str());
            let _ = writeln!(
                out,
                "{name}_sum{{alertmanager=\"{am}\"}} {}\n{name}_count{{alertmanager=\"{am}\"}} {}",
                t.latency_ns.load(Ordering::Relaxed) as f64 / 1e9,
                t.latency_count.load(Ordering::Relaxed)
            );
        }
        metric_header(
            out,
            &format!("{P}_queue_capacity"),
            "The capacity of the alert notifications queue.",
            "gauge",
        );
        let _ = writeln!(out, "{P}_queue_capacity {}", self.capacity);
        metric_header(
            out,
            &format!("{P}_alertmanagers_discovered"),
            "The number of alertmanagers discovered and active.",
            "gauge",
        );
        let _ = writeln!(out, "{P}_alertmanagers_discovered {}", self.targets.len());
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        // The loops send what is queued, then end.
        self.shared.closing.store(true, Ordering::SeqCst);
        for t in &self.targets {
            t.wake.notify_one();
        }
    }
}

/// Post batches of one Alertmanager's queue until the notifier closes and the queue is empty.
async fn send_loop(target: Arc<Target>, shared: Arc<Shared>, index: usize) {
    loop {
        let batch = target.queue.lock().take(MAX_BATCH);
        if batch.is_empty() {
            if shared.closing.load(Ordering::SeqCst) {
                return;
            }
            // `notify_one` leaves a permit when nobody waits, so a push between `take` and
            // here is not missed.
            target.wake.notified().await;
            continue;
        }
        let n = batch.len() as u64;
        let started = Instant::now();
        match post_batch(&target, &shared, index, &batch).await {
            Ok(()) => {
                target.sent.fetch_add(n, Ordering::Relaxed);
                target.latency_ns.fetch_add(
                    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                target.latency_count.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(alertmanager = %target.url, count = n, error = %format!("{e:#}"), "error sending alerts");
                target.errors.fetch_add(n, Ordering::Relaxed);
                target.dropped.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

/// One `POST /api/v2/alerts` with a JSON array of the already encoded alerts.
async fn post_batch(
    target: &Target,
    shared: &Shared,
    index: usize,
    batch: &[Arc<str>],
) -> anyhow::Result<()> {
    let mut body = String::with_capacity(2 + batch.iter().map(|a| a.len() + 1).sum::<usize>());
    body.push('[');
    for (i, a) in batch.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(a);
    }
    body.push(']');
    let req = shared
        .client
        .post(target.url.clone())
        .timeout(shared.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    let req = match shared.auth.get(index) {
        Some(auth) => auth.apply(req).await?,
        None => req,
    };
    let resp = req.send().await?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        bail!(
            "bad response status {status}: {}",
            text.chars().take(256).collect::<String>()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_the_oldest() {
        let mut q = DropOldestQueue::new(3);
        assert_eq!(q.push_all([1, 2]), 0);
        assert_eq!(q.push_all([3, 4, 5]), 2);
        assert_eq!(q.len(), 3);
        assert_eq!(q.take(2), vec![3, 4]);
        assert_eq!(q.take(5), vec![5]);
        assert_eq!(q.len(), 0);
        assert_eq!(DropOldestQueue::<u8>::new(0).capacity(), 1);
    }

    #[test]
    fn peer_urls_lose_their_credentials() -> anyhow::Result<()> {
        let (url, creds) = parse_peer_url("x", "http://u%40x:p%3Aw@am:9093/prefix/")?;
        assert_eq!(url.as_str(), "http://am:9093/prefix/");
        assert_eq!(creds, Some(("u@x".to_string(), "p:w".to_string())));
        assert_eq!(
            parse_peer_url("x", "https://am:9093")?.0.as_str(),
            "https://am:9093/"
        );
        assert!(parse_peer_url("x", "am:9093").is_err());
        assert!(parse_peer_url("x", "ftp://am:9093").is_err());
        Ok(())
    }

    #[tokio::test]
    async fn alertmanager_urls_get_the_v2_path() -> anyhow::Result<()> {
        let config = RulerConfig {
            alertmanager_url: "http://a:9093, http://b:9093/am/".into(),
            ..RulerConfig::default()
        };
        let n = Notifier::new(&config)?;
        let urls: Vec<&str> = n.targets.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://a:9093/api/v2/alerts",
                "http://b:9093/am/api/v2/alerts"
            ]
        );
        let mut m = String::new();
        n.render_metrics(&mut m);
        assert!(m.contains("loki_prometheus_notifications_alertmanagers_discovered 2\n"));
        assert!(m.contains("loki_prometheus_notifications_queue_capacity 10000\n"));
        n.shutdown(Duration::from_secs(1)).await;
        Ok(())
    }

    #[test]
    fn alerts_encode_as_alertmanager_v2_expects() -> anyhow::Result<()> {
        let labels = BTreeMap::from([
            ("alertname".to_string(), "A".to_string()),
            ("empty".to_string(), String::new()),
        ]);
        let annotations = BTreeMap::from([("summary".to_string(), "s \"q\"".to_string())]);
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let json = serde_json::to_value(PostableAlert {
            labels: labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            annotations: &annotations,
            starts_at: rfc3339(t),
            ends_at: rfc3339(t + Duration::from_secs(60)),
            generator_url: "",
        })?;
        assert_eq!(
            json,
            serde_json::json!({
                "labels": {"alertname": "A"},
                "annotations": {"summary": "s \"q\""},
                "startsAt": "2023-11-14T22:13:20.250Z",
                "endsAt": "2023-11-14T22:14:20.250Z",
            })
        );
        Ok(())
    }
}
