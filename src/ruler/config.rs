//! The `ruler` block, named as Loki's so an operator's Loki configuration works unchanged.
//! Keys tovlog has no use for are accepted and ignored only where Loki users commonly set them
//! (`wal`, `ring`, `evaluation`); every other unknown key is an error.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::config::duration;

/// Loki's `ruler` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulerConfig {
    /// Run the ruler at all. tovlog evaluates rules whenever any rule exists; `false` turns
    /// evaluation off while keeping the APIs. Default true.
    pub enabled: bool,
    /// Default interval of a group without its own `interval`. Default `1m`.
    #[serde(with = "duration")]
    pub evaluation_interval: Duration,
    /// How often the rule stores are re-read for changes made outside the API (local directory,
    /// another node writing the object store). Default `1m`.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// Comma-separated Alertmanager base URLs (e.g. `http://am:9093`); alerts go to each.
    /// Empty disables notifications. Default empty.
    pub alertmanager_url: String,
    /// Base URL put in each alert's `generatorURL` (Grafana's, pointing at Explore). Default empty
    /// (the URL is then relative).
    pub external_url: String,
    /// Labels added to every alert and recorded series (`$externalLabels` in templates).
    pub external_labels: BTreeMap<String, String>,
    /// Serve the rules configuration API (`/loki/api/v1/rules`, `/api/prom/rules`). Default true.
    pub enable_api: bool,
    /// Accepted for compatibility: tovlog always speaks Alertmanager API v2. Default true.
    pub enable_alertmanager_v2: bool,
    /// Alertmanager client settings (auth, timeout).
    pub alertmanager_client: AlertmanagerClientConfig,
    /// Most alerts waiting to be sent; more are dropped and counted. Default 10000.
    pub notification_queue_capacity: usize,
    /// Timeout of one POST to an Alertmanager. Default `10s`.
    #[serde(with = "duration")]
    pub notification_timeout: Duration,
    /// Minimum time between resends of a still-firing alert. Default `1m`.
    #[serde(with = "duration")]
    pub resend_delay: Duration,
    /// Longest outage of the ruler for which a restored alert keeps its `for` progress. Default `1h`.
    #[serde(with = "duration")]
    pub for_outage_tolerance: Duration,
    /// Minimum `for` still to wait after a restore, when the rule's `for` is at least this long.
    /// Default `10m`.
    #[serde(with = "duration")]
    pub for_grace_period: Duration,
    /// Where rules are read from.
    pub storage: RuleStorageConfig,
    /// Loki's scratch directory for rule files. Accepted and unused: tovlog evaluates rules in
    /// memory. Default empty.
    pub rule_path: String,
    /// Recording rules' samples, sent with Prometheus remote write.
    pub remote_write: RemoteWriteConfig,
    /// Accepted for compatibility (Loki's ruler WAL, ring and evaluation mode); unused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal: Option<serde_yaml::Value>,
    /// Accepted for compatibility; unused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring: Option<serde_yaml::Value>,
    /// Accepted for compatibility; unused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<serde_yaml::Value>,
    /// Accepted for compatibility; unused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_sharding: Option<bool>,
}

impl Default for RulerConfig {
    fn default() -> Self {
        RulerConfig {
            enabled: true,
            evaluation_interval: Duration::from_secs(60),
            poll_interval: Duration::from_secs(60),
            alertmanager_url: String::new(),
            external_url: String::new(),
            external_labels: BTreeMap::new(),
            enable_api: true,
            enable_alertmanager_v2: true,
            alertmanager_client: AlertmanagerClientConfig::default(),
            notification_queue_capacity: 10_000,
            notification_timeout: Duration::from_secs(10),
            resend_delay: Duration::from_secs(60),
            for_outage_tolerance: Duration::from_secs(3600),
            for_grace_period: Duration::from_secs(600),
            storage: RuleStorageConfig::default(),
            rule_path: String::new(),
            remote_write: RemoteWriteConfig::default(),
            wal: None,
            ring: None,
            evaluation: None,
            enable_sharding: None,
        }
    }
}

impl RulerConfig {
    /// The Alertmanager base URLs, trimmed, without a trailing `/`.
    pub fn alertmanager_urls(&self) -> Vec<String> {
        self.alertmanager_url
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect()
    }
}

/// Loki's `ruler.alertmanager_client` (the auth parts of Cortex' notifier config).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertmanagerClientConfig {
    /// HTTP basic auth user.
    pub basic_auth_username: String,
    /// HTTP basic auth password.
    pub basic_auth_password: String,
    /// Authorization type with `credentials` (e.g. `Bearer`). Default `Bearer` when credentials
    /// are set.
    #[serde(rename = "type")]
    pub auth_type: String,
    /// Authorization credentials (a bearer token).
    pub credentials: String,
    /// File holding the credentials.
    pub credentials_file: String,
    /// PEM file of certificate authorities trusted for `https://` Alertmanagers, besides the
    /// system's.
    pub tls_ca_path: String,
    /// Client certificate presented to Alertmanager (with `tls_key_path`).
    pub tls_cert_path: String,
    /// Key of `tls_cert_path`.
    pub tls_key_path: String,
    /// Accept any certificate. Unsafe.
    pub tls_insecure_skip_verify: bool,
}

impl AlertmanagerClientConfig {
    /// The TLS settings, as the other clients name them.
    pub fn tls(&self) -> super::client_tls::ClientTlsConfig {
        super::client_tls::ClientTlsConfig {
            ca_file: self.tls_ca_path.clone(),
            cert_file: self.tls_cert_path.clone(),
            key_file: self.tls_key_path.clone(),
            insecure_skip_verify: self.tls_insecure_skip_verify,
        }
    }
}

/// Loki's `ruler.storage`: where rule groups live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleStorageConfig {
    /// `local` reads `<local.directory>/<tenant>/<namespace>.yaml` (read-only). Rules created
    /// through the API are kept in the chunks' object store in every case. Default `local`.
    #[serde(rename = "type")]
    pub store_type: String,
    /// Local directory settings.
    pub local: LocalRuleStorage,
}

impl Default for RuleStorageConfig {
    fn default() -> Self {
        RuleStorageConfig {
            store_type: "local".into(),
            local: LocalRuleStorage::default(),
        }
    }
}

/// `ruler.storage.local`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalRuleStorage {
    /// Directory with one folder per tenant, one YAML file per namespace. Empty disables.
    pub directory: PathBuf,
}

/// `ruler.remote_write` as Loki 3 writes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// Send recording rules' samples. Default false.
    pub enabled: bool,
    /// Targets by name.
    pub clients: BTreeMap<String, RemoteWriteClient>,
    /// Accepted for compatibility; unused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_refresh_period: Option<serde_yaml::Value>,
}

/// One remote-write target (the Prometheus `remote_write` entry keys tovlog uses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RemoteWriteClient {
    /// Receiver URL, e.g. `http://prometheus:9090/api/v1/write`.
    pub url: String,
    /// Timeout of one request. Default `30s`.
    #[serde(with = "duration")]
    pub remote_timeout: Duration,
    /// Extra headers sent with every request.
    pub headers: BTreeMap<String, String>,
    /// HTTP basic auth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// Bearer token.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub bearer_token: String,
    /// File holding a bearer token, read at each request.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub bearer_token_file: String,
    /// `Authorization` header (Prometheus' `authorization` block).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
    /// TLS of the connection to the receiver.
    #[serde(skip_serializing_if = "super::client_tls::ClientTlsConfig::is_default")]
    pub tls_config: super::client_tls::ClientTlsConfig,
    /// Queue settings.
    pub queue_config: QueueConfig,
    /// Other Prometheus remote-write keys (relabel configs, metadata…): accepted, unused.
    #[serde(flatten, skip_serializing)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

impl Default for RemoteWriteClient {
    fn default() -> Self {
        RemoteWriteClient {
            url: String::new(),
            remote_timeout: Duration::from_secs(30),
            headers: BTreeMap::new(),
            basic_auth: None,
            bearer_token: String::new(),
            bearer_token_file: String::new(),
            authorization: None,
            tls_config: Default::default(),
            queue_config: QueueConfig::default(),
            other: BTreeMap::new(),
        }
    }
}

/// HTTP basic auth (Prometheus' `basic_auth`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BasicAuth {
    /// User.
    pub username: String,
    /// Password.
    pub password: String,
    /// File holding the password (wins over `password`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub password_file: String,
}

/// Prometheus' `authorization` block: `Authorization: <type> <credentials>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Authorization {
    /// Scheme. Default `Bearer`.
    #[serde(rename = "type")]
    pub auth_type: String,
    /// The credentials.
    pub credentials: String,
    /// File holding the credentials, read at each request (wins over `credentials`).
    pub credentials_file: String,
}

/// Prometheus' `queue_config` keys tovlog honours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueConfig {
    /// Most samples waiting; older ones are dropped and counted. Default 10000.
    pub capacity: usize,
    /// Most samples in one request. Default 2000.
    pub max_samples_per_send: usize,
    /// First retry delay. Default `30ms`.
    #[serde(with = "duration")]
    pub min_backoff: Duration,
    /// Longest retry delay. Default `5s`.
    #[serde(with = "duration")]
    pub max_backoff: Duration,
    /// Other keys: accepted, unused.
    #[serde(flatten, skip_serializing)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: 10_000,
            max_samples_per_send: 2_000,
            min_backoff: Duration::from_millis(30),
            max_backoff: Duration::from_secs(5),
            other: BTreeMap::new(),
        }
    }
}
