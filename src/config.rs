//! The configuration tree. Every default is written once, in an `impl Default`, and every field's
//! doc comment gives its meaning, unit and default; `docs/configuration.md` mirrors this file.
//! Defaults follow Grafana Loki's where Loki has one. Precedence, lowest first: the YAML file,
//! then command-line flags.

use std::{net::SocketAddr, path::Path, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tovlog_storage::StorageConfig;

/// The whole configuration (`--config FILE`, YAML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to serve the HTTP API on. Default `127.0.0.1:3100`.
    pub listen: SocketAddr,
    /// Largest accepted HTTP request body (push or query form), compressed size. Default `100MB`.
    #[serde(with = "bytesize")]
    pub max_request_body: u64,
    /// Require `X-Scope-OrgID` on every request (multi-tenant). When `false` every request
    /// belongs to the single tenant `fake`, as in Loki. Default `true` (Loki's default).
    pub auth_enabled: bool,
    /// Per-tenant limits, named as in Loki's `limits_config`.
    pub limits_config: LimitsConfig,
    /// Query execution settings.
    pub query: QueryConfig,
    /// Admission of queries: how many run at once and how they queue (Loki's
    /// `query_scheduler` block).
    pub query_scheduler: QuerySchedulerConfig,
    /// Storage engine settings (WAL, head, chunks, object store).
    pub storage: StorageConfig,
    /// Logging settings.
    pub log: LogConfig,
    /// Alerting and recording rules (Loki's `ruler` block).
    pub ruler: crate::ruler::RulerConfig,
    /// HTTP server settings (CORS).
    pub server: ServerConfig,
    /// Credentials bound to tenants and roles (docs/security.md). Default off, as Loki.
    pub auth: crate::server::auth::AuthConfig,
    /// Loki's `compactor` block: the keys tovlog has a knob for are copied onto
    /// `storage.compaction` (they win over it); the others are accepted and ignored.
    pub compactor: CompactorConfig,
    /// Loki's `runtime_config` block: a per-tenant overrides file re-read while running.
    pub runtime_config: RuntimeConfigConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 3100)),
            max_request_body: 100 << 20,
            auth_enabled: true,
            limits_config: LimitsConfig::default(),
            query: QueryConfig::default(),
            query_scheduler: QuerySchedulerConfig::default(),
            storage: StorageConfig::default(),
            log: LogConfig::default(),
            ruler: crate::ruler::RulerConfig::default(),
            server: ServerConfig::default(),
            auth: crate::server::auth::AuthConfig::default(),
            compactor: CompactorConfig::default(),
            runtime_config: RuntimeConfigConfig::default(),
        }
    }
}

/// HTTP server settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Origins (`https://app.example:8443`) whose browser pages may POST to the push endpoints
    /// (`/loki/api/v1/push`, `/api/prom/push`, `/otlp/v1/logs`): preflights are answered and
    /// `Access-Control-Allow-Origin` echoes a listed origin; `*` allows any. Default empty (no
    /// CORS headers).
    pub cors_allowed_origins: Vec<String>,
    /// HTTPS (Loki's `http_tls_config` keys); unset serves plain HTTP.
    pub http_tls_config: crate::server::tls::TlsConfig,
}

/// Loki's `compactor` block, so an operator's Loki file works unchanged. The keys tovlog has
/// a knob for are copied onto `storage.compaction` when given (they win over it); Loki keys
/// with no meaning here are accepted and ignored (listed in docs/configuration.md). Every
/// key is optional; an absent key leaves tovlog's own setting alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompactorConfig {
    /// How often the compactor looks for work → `storage.compaction.check_interval`.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub compaction_interval: Option<Duration>,
    /// Apply retention → `storage.compaction.retention_enabled`. As in Loki, the delete
    /// API exists only when retention is enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_enabled: Option<bool>,
    /// How long objects the manifest dropped are kept before they are deleted →
    /// `storage.compaction.delete_delay`.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub retention_delete_delay: Option<Duration>,
    /// How long a delete request can be cancelled →
    /// `storage.compaction.delete_request_cancel_period`.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub delete_request_cancel_period: Option<Duration>,
    /// Windows compacted at once → `storage.compaction.concurrency`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_compaction_parallelism: Option<usize>,
    /// Largest `max_interval` a delete request may ask for (Loki's `delete_max_interval`;
    /// `0` = no bound). tovlog never splits a delete request: the value only validates the
    /// parameter as Loki does. Default `24h`.
    #[serde(with = "duration")]
    pub delete_max_interval: Duration,
    /// Ignored (Loki's local scratch directory; tovlog's compactor works in `storage.data_dir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<serde_yaml::Value>,
    /// Ignored (tovlog applies retention on every compactor pass).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apply_retention_interval: Option<serde_yaml::Value>,
    /// Ignored (object deletion is bounded by the compactor itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_delete_worker_count: Option<serde_yaml::Value>,
    /// Ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_table_timeout: Option<serde_yaml::Value>,
    /// Ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_backoff_config: Option<serde_yaml::Value>,
    /// Ignored (delete requests live in tovlog's own object store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_request_store: Option<serde_yaml::Value>,
    /// Ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_request_store_key_prefix: Option<serde_yaml::Value>,
    /// Ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_request_store_db_type: Option<serde_yaml::Value>,
    /// Ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_delete_request_store_db_type: Option<serde_yaml::Value>,
    /// Ignored (tovlog applies every pending delete request in a pass).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_batch_size: Option<serde_yaml::Value>,
    /// Ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_parallelism: Option<serde_yaml::Value>,
    /// Ignored (one process runs the compactor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compactor_ring: Option<serde_yaml::Value>,
    /// Ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tables_to_compact: Option<serde_yaml::Value>,
    /// Ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_latest_n_tables: Option<serde_yaml::Value>,
    /// Ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub horizontal_scaling_mode: Option<serde_yaml::Value>,
    /// Ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_config: Option<serde_yaml::Value>,
    /// Ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs_config: Option<serde_yaml::Value>,
    /// Ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_marker_object_store_prefix: Option<serde_yaml::Value>,
}

impl Default for CompactorConfig {
    fn default() -> Self {
        CompactorConfig {
            compaction_interval: None,
            retention_enabled: None,
            retention_delete_delay: None,
            delete_request_cancel_period: None,
            max_compaction_parallelism: None,
            delete_max_interval: Duration::from_secs(24 * 3600),
            working_directory: None,
            apply_retention_interval: None,
            retention_delete_worker_count: None,
            retention_table_timeout: None,
            retention_backoff_config: None,
            delete_request_store: None,
            delete_request_store_key_prefix: None,
            delete_request_store_db_type: None,
            backup_delete_request_store_db_type: None,
            delete_batch_size: None,
            upload_parallelism: None,
            compactor_ring: None,
            tables_to_compact: None,
            skip_latest_n_tables: None,
            horizontal_scaling_mode: None,
            worker_config: None,
            jobs_config: None,
            deletion_marker_object_store_prefix: None,
        }
    }
}

/// Loki's `runtime_config` block: where the per-tenant overrides file is and how often it is
/// re-read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfigConfig {
    /// The overrides file (`overrides: {<tenant>: {<limits_config keys>}}`); empty means
    /// none. Default empty.
    pub file: String,
    /// How often the file is re-read. Default `10s`.
    #[serde(with = "duration")]
    pub period: Duration,
}

impl Default for RuntimeConfigConfig {
    fn default() -> Self {
        RuntimeConfigConfig {
            file: String::new(),
            period: Duration::from_secs(10),
        }
    }
}

/// Per-tenant limits (Loki's `limits_config` keys and defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Per-tenant ingestion rate in MB/s (of log line bytes). Default 4.
    pub ingestion_rate_mb: f64,
    /// Per-tenant ingestion burst in MB. Default 6.
    pub ingestion_burst_size_mb: f64,
    /// Maximum label names per stream. Default 15.
    pub max_label_names_per_series: usize,
    /// Maximum length of a label name in bytes. Default 1024.
    pub max_label_name_length: usize,
    /// Maximum length of a label value in bytes. Default 2048.
    pub max_label_value_length: usize,
    /// Maximum size of one log line. Default `256KB` (262144 bytes).
    #[serde(with = "bytesize")]
    pub max_line_size: u64,
    /// Truncate lines over `max_line_size` instead of rejecting them. Default false.
    pub max_line_size_truncate: bool,
    /// Reject entries older than `reject_old_samples_max_age`. Default **false** (Loki defaults to true;
    /// tovlog accepts out-of-order and old data, see docs/configuration.md).
    pub reject_old_samples: bool,
    /// Maximum age of accepted entries when `reject_old_samples` is on. Default `1w`.
    #[serde(with = "duration")]
    pub reject_old_samples_max_age: Duration,
    /// How far in the future an entry may be. Default `10m`.
    #[serde(with = "duration")]
    pub creation_grace_period: Duration,
    /// Accept structured metadata on entries. Default true.
    pub allow_structured_metadata: bool,
    /// Maximum bytes of structured metadata per entry. Default `64KB`.
    #[serde(with = "bytesize")]
    pub max_structured_metadata_size: u64,
    /// Maximum structured metadata pairs per entry. Default 128.
    pub max_structured_metadata_entries_count: usize,
    /// Labels whose value becomes `service_name` when a stream has none (first present wins;
    /// `unknown_service` otherwise). Empty list disables. Default Loki's list.
    pub discover_service_name: Vec<String>,
    /// Add a `detected_level` structured-metadata field to each entry. Default true.
    pub discover_log_levels: bool,
    /// Largest `limit` a log query may ask for. Default 5000.
    pub max_entries_limit_per_query: u32,
    /// Most series a metric query may return. Default 500.
    pub max_query_series: usize,
    /// Longest time range a query may cover; `0` disables. Default `721h`.
    #[serde(with = "duration")]
    pub max_query_length: Duration,
    /// How far back queries may look; `0` disables. Default 0.
    #[serde(with = "duration")]
    pub max_query_lookback: Duration,
    /// Longest range of a range-vector selector (`[5m]`) a metric query may use; `0`
    /// disables. Default `0s` (Loki's).
    #[serde(with = "duration")]
    pub max_query_range: Duration,
    /// Queries of the tenant that may run at once; more wait in the tenant's queue (see
    /// `query_scheduler`). `0` refuses every query, as in Loki. Default 32 (Loki's).
    pub max_query_parallelism: usize,
    /// Active streams (streams in the head) the tenant may have, per ingester; `0`
    /// disables. Default 0 (Loki's).
    pub max_streams_per_user: usize,
    /// Active streams the tenant may have across the cluster; `0` disables. tovlog is one
    /// ingester, so this is the same limit as `max_streams_per_user`; when both are set the
    /// smaller applies. Default 5000 (Loki's).
    pub max_global_streams_per_user: usize,
    /// Bytes per second (lines plus structured metadata) one stream may ingest; `0`
    /// disables. Default `0` (off; Loki's is `3MB`, see docs/configuration.md).
    #[serde(with = "bytesize")]
    pub per_stream_rate_limit: u64,
    /// How far above its rate one stream may burst, in bytes. Default `15MB` (Loki's).
    #[serde(with = "bytesize")]
    pub per_stream_rate_limit_burst: u64,
    /// Serve `/loki/api/v1/index/volume` and `volume_range`. Default true.
    pub volume_enabled: bool,
    /// Maximum series `index/volume` returns. Default 100.
    pub volume_max_series: usize,
    /// Live tails (`/loki/api/v1/tail`) a tenant may have open at once; 0 disables
    /// tailing. Default 10.
    pub max_concurrent_tail_requests: usize,
    /// Secret redaction at ingest, with per-tenant overrides (docs/redaction.md). Default off.
    pub redaction: crate::ingest::redact::RedactionConfig,
    /// How long the tenant's entries are kept (Loki's `retention_period`); `0s` keeps them
    /// forever. Applied only when retention is enabled (`compactor.retention_enabled` or
    /// `storage.compaction.retention_enabled`). Default `0s`.
    #[serde(with = "duration")]
    pub retention_period: Duration,
    /// Per-stream retention (Loki's `retention_stream`): the matching rule of highest
    /// priority sets the period of a stream; streams no rule matches use `retention_period`.
    /// Default none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retention_stream: Vec<RetentionStream>,
    /// What the delete API may do for the tenant (Loki's `deletion_mode`): `disabled`
    /// refuses it (403), `filter-only` and `filter-and-delete` accept delete requests.
    /// Default `filter-and-delete`.
    pub deletion_mode: DeletionMode,
}

/// One `limits_config.retention_stream` rule, as Loki writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionStream {
    /// Stream selector (`{namespace="dev"}`) choosing the streams the rule applies to.
    pub selector: String,
    /// Among the rules matching a stream the highest priority wins. Default 0.
    #[serde(default)]
    pub priority: i32,
    /// How long matching streams are kept; at least `24h`, as in Loki.
    #[serde(with = "duration")]
    pub period: Duration,
}

/// Loki's `deletion_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeletionMode {
    /// The delete API answers 403 for the tenant.
    Disabled,
    /// Deletes are applied to queries and never rewritten in the files (see
    /// docs/configuration.md for how tovlog treats this mode).
    FilterOnly,
    /// Deletes are applied to queries and removed from the files by the compactor.
    #[default]
    FilterAndDelete,
}

impl DeletionMode {
    /// The mode's name in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            DeletionMode::Disabled => "disabled",
            DeletionMode::FilterOnly => "filter-only",
            DeletionMode::FilterAndDelete => "filter-and-delete",
        }
    }

    /// Parse a mode; the error is Loki's text.
    pub fn parse(text: &str) -> Result<DeletionMode, String> {
        match text {
            "disabled" => Ok(DeletionMode::Disabled),
            "filter-only" => Ok(DeletionMode::FilterOnly),
            "filter-and-delete" => Ok(DeletionMode::FilterAndDelete),
            _ => Err(
                "unknown deletion mode: must be one of disabled|filter-only|filter-and-delete"
                    .to_owned(),
            ),
        }
    }

    /// Whether the delete API is available.
    pub fn delete_enabled(self) -> bool {
        self != DeletionMode::Disabled
    }
}

impl Serialize for DeletionMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DeletionMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        DeletionMode::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            ingestion_rate_mb: 4.0,
            ingestion_burst_size_mb: 6.0,
            max_label_names_per_series: 15,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            max_line_size: 256 * 1024,
            max_line_size_truncate: false,
            reject_old_samples: false,
            reject_old_samples_max_age: Duration::from_secs(7 * 24 * 3600),
            creation_grace_period: Duration::from_secs(600),
            allow_structured_metadata: true,
            max_structured_metadata_size: 64 * 1024,
            max_structured_metadata_entries_count: 128,
            discover_service_name: [
                "service",
                "app",
                "application",
                "name",
                "app_kubernetes_io_name",
                "container",
                "container_name",
                "component",
                "workload",
                "job",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            discover_log_levels: true,
            max_entries_limit_per_query: 5000,
            max_query_series: 500,
            max_query_length: Duration::from_secs(721 * 3600),
            max_query_lookback: Duration::ZERO,
            max_query_range: Duration::ZERO,
            max_query_parallelism: 32,
            max_streams_per_user: 0,
            max_global_streams_per_user: 5000,
            // Loki's 3MB would refuse the bulk loads of every configuration that raises
            // `ingestion_rate_mb` (benchmarks, the playbook loader): off unless asked for.
            per_stream_rate_limit: 0,
            per_stream_rate_limit_burst: 15 << 20,
            volume_enabled: true,
            volume_max_series: 1000,
            max_concurrent_tail_requests: 10,
            redaction: crate::ingest::redact::RedactionConfig::default(),
            retention_period: Duration::ZERO,
            retention_stream: Vec::new(),
            deletion_mode: DeletionMode::FilterAndDelete,
        }
    }
}

/// Query execution settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Abort a query after this long (HTTP 504). Default `5m`.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Memory one query may use for sorting and aggregation. Default `1GiB`.
    #[serde(with = "bytesize")]
    pub max_memory: u64,
    /// Partitions (concurrent scan streams) of one query; `0` is twice the cores, so a
    /// core whose stream waits for a read has another to decode. Default `0`.
    pub partitions: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout: Duration::from_secs(300),
            max_memory: 1 << 30,
            partitions: 0,
        }
    }
}

/// Admission of queries (Loki's `query_scheduler` block, for the keys tovlog has): every
/// query of the HTTP API waits for one of `max_concurrent` slots in its tenant's queue, and
/// the tenants with waiting queries are served in turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuerySchedulerConfig {
    /// Queries (of all tenants) that run at once; `0` is twice the number of cores, at
    /// least 4 (Loki's `querier.max_concurrent` default; each query already uses every
    /// core, and a dashboard's short queries should not wait behind one long one). tovlog's
    /// knob. Default `0`.
    pub max_concurrent: usize,
    /// Queries one tenant may have waiting; one more is answered 429 `too many outstanding
    /// requests`. Default 2048 (Loki's query frontend default).
    pub max_outstanding_requests_per_tenant: usize,
}

impl Default for QuerySchedulerConfig {
    fn default() -> Self {
        QuerySchedulerConfig {
            max_concurrent: 0,
            max_outstanding_requests_per_tenant: 2048,
        }
    }
}

impl QuerySchedulerConfig {
    /// `max_concurrent` with `0` resolved to twice the number of cores, at least 4.
    pub fn concurrency(&self) -> usize {
        if self.max_concurrent > 0 {
            return self.max_concurrent;
        }
        (2 * std::thread::available_parallelism().map_or(1, usize::from)).max(4)
    }
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Level filter in `RUST_LOG` syntax; the `RUST_LOG` variable wins. Default `info`.
    pub level: String,
    /// Emit JSON lines instead of text. Default false.
    pub json: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            json: false,
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML for this tree.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: serde_yaml::Error,
    },
    /// A value is impossible.
    #[error("invalid value for {key}: {msg}")]
    Invalid {
        /// Dotted key.
        key: String,
        /// Why.
        msg: String,
    },
}

/// Keys whose values are secrets: `/config` and `check-config` print them as `********`
/// (as Loki prints its `flagext.Secret` values), whatever block they are in.
const SECRET_KEYS: &[&str] = &[
    "secret_access_key",
    "session_token",
    "password",
    "basic_auth_password",
    "credentials",
    "bearer_token",
    "token",
    "token_hash",
    "password_hash",
    "client_secret",
    "account_key",
    "sas_token",
];

/// Replace every non-empty value of a [`SECRET_KEYS`] key, at any depth.
fn mask_secrets(v: &mut serde_yaml::Value) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                let secret = k.as_str().is_some_and(|k| SECRET_KEYS.contains(&k));
                let empty = match &*val {
                    serde_yaml::Value::Null => true,
                    serde_yaml::Value::String(s) => s.is_empty(),
                    // A list of entries (`auth.credentials`): their names and roles stay
                    // readable, their own secret keys are masked below.
                    serde_yaml::Value::Sequence(items) => items.iter().all(|i| i.is_mapping()),
                    _ => false,
                };
                if secret && !empty {
                    *val = serde_yaml::Value::String("********".to_owned());
                } else {
                    mask_secrets(val);
                }
            }
        }
        serde_yaml::Value::Sequence(items) => items.iter_mut().for_each(mask_secrets),
        serde_yaml::Value::Tagged(t) => mask_secrets(&mut t.value),
        _ => {}
    }
}

impl Config {
    /// The configuration as YAML with every secret (object store keys, passwords, tokens,
    /// hashes) printed as `********`: what `/config` and `tovlog check-config` show.
    pub fn to_masked_yaml(&self) -> Result<String, serde_yaml::Error> {
        let mut v = serde_yaml::to_value(self)?;
        mask_secrets(&mut v);
        serde_yaml::to_string(&v)
    }

    /// Load a YAML file (an empty file means all defaults).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|source| ConfigError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Parse YAML text.
    pub fn from_yaml(text: &str) -> Result<Config, serde_yaml::Error> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let mut config: Config = serde_yaml::from_str(text)?;
        config.apply_compactor();
        Ok(config)
    }

    /// Reject impossible settings, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits_config.validate("limits_config")?;
        for origin in &self.server.cors_allowed_origins {
            let o = origin.trim();
            let scheme_ok = o.starts_with("http://") || o.starts_with("https://");
            let chars_ok = o.bytes().all(|b| b.is_ascii_graphic());
            if o != "*" && (!scheme_ok || !chars_ok || o.ends_with('/')) {
                return Err(invalid(
                    "server.cors_allowed_origins",
                    format!(
                        "{origin:?} is not an origin: want `*` or scheme://host[:port] without a path"
                    ),
                ));
            }
        }
        if self.server.http_tls_config.enabled() {
            if let Err(e) = self.server.http_tls_config.load() {
                return Err(invalid("server.http_tls_config", e.to_string()));
            }
        }
        if let Err(msg) = self.auth.validate() {
            return Err(invalid("auth", msg));
        }
        if self.query.timeout.is_zero() {
            return Err(invalid("query.timeout", "must be > 0"));
        }
        if self.query_scheduler.max_outstanding_requests_per_tenant == 0 {
            return Err(invalid(
                "query_scheduler.max_outstanding_requests_per_tenant",
                "must be > 0",
            ));
        }
        if self.compactor.max_compaction_parallelism == Some(0) {
            return Err(invalid(
                "compactor.max_compaction_parallelism",
                "must be > 0",
            ));
        }
        if !self.runtime_config.file.is_empty() && self.runtime_config.period.is_zero() {
            return Err(invalid("runtime_config.period", "must be > 0"));
        }
        Ok(())
    }

    /// Copy the `compactor` keys tovlog has a knob for onto `storage.compaction` (a key
    /// given in `compactor` wins). Idempotent; [`Config::from_yaml`] calls it, and so does
    /// the server before opening storage, for configurations built in code.
    pub fn apply_compactor(&mut self) {
        let c = &self.compactor;
        let s = &mut self.storage.compaction;
        if let Some(d) = c.compaction_interval {
            s.check_interval = tovlog_storage::config::HumanDuration(d);
        }
        if let Some(on) = c.retention_enabled {
            s.retention_enabled = on;
        }
        if let Some(d) = c.retention_delete_delay {
            s.delete_delay = tovlog_storage::config::HumanDuration(d);
        }
        if let Some(d) = c.delete_request_cancel_period {
            s.delete_request_cancel_period = tovlog_storage::config::HumanDuration(d);
        }
        if let Some(n) = c.max_compaction_parallelism {
            s.concurrency = n;
        }
    }
}

fn invalid(key: impl Into<String>, msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        msg: msg.into(),
    }
}

impl LimitsConfig {
    /// The active stream limit in force: the smaller of `max_streams_per_user` and
    /// `max_global_streams_per_user` that is set (Loki converts the global limit to a local
    /// one by dividing it among the ingesters; tovlog is one), `None` when neither is.
    pub fn active_stream_limit(&self) -> Option<usize> {
        [self.max_streams_per_user, self.max_global_streams_per_user]
            .into_iter()
            .filter(|n| *n > 0)
            .min()
    }

    /// Reject impossible limits; `prefix` names where they came from in error messages
    /// (`limits_config`, or `overrides.<tenant>` of the runtime file).
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let l = self;
        if l.ingestion_rate_mb.is_nan() || l.ingestion_rate_mb <= 0.0 {
            return Err(invalid(
                format!("{prefix}.ingestion_rate_mb"),
                "must be > 0",
            ));
        }
        if l.ingestion_burst_size_mb < l.ingestion_rate_mb.min(1.0) {
            return Err(invalid(
                format!("{prefix}.ingestion_burst_size_mb"),
                "must be at least 1 MB or the rate",
            ));
        }
        if l.max_entries_limit_per_query == 0 {
            return Err(invalid(
                format!("{prefix}.max_entries_limit_per_query"),
                "must be > 0",
            ));
        }
        if l.max_query_series == 0 {
            return Err(invalid(format!("{prefix}.max_query_series"), "must be > 0"));
        }
        if l.per_stream_rate_limit > 0 && l.per_stream_rate_limit_burst == 0 {
            return Err(invalid(
                format!("{prefix}.per_stream_rate_limit_burst"),
                "must be > 0 when per_stream_rate_limit is set",
            ));
        }
        if let Err(e) = crate::ingest::redact::Redactor::new(&l.redaction) {
            return Err(invalid(format!("{prefix}.redaction"), e.to_string()));
        }
        self.retention_rules(prefix)?;
        Ok(())
    }

    /// The `retention_stream` rules with their selectors parsed (Loki's checks: a valid
    /// selector, a period of at least 24h).
    pub fn retention_rules(
        &self,
        prefix: &str,
    ) -> Result<Vec<tovlog_storage::erase::RetentionRule>, ConfigError> {
        self.retention_stream
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let key = format!("{prefix}.retention_stream[{i}]");
                let matchers = parse_selector(&rule.selector).map_err(|e| {
                    invalid(
                        format!("{key}.selector"),
                        format!("invalid labels matchers: {e}"),
                    )
                })?;
                if rule.period < Duration::from_secs(24 * 3600) {
                    return Err(invalid(
                        format!("{key}.period"),
                        format!(
                            "retention period must be >= 24h was {}",
                            duration::format(&rule.period)
                        ),
                    ));
                }
                Ok(tovlog_storage::erase::RetentionRule {
                    matchers,
                    priority: rule.priority,
                    period: rule.period,
                })
            })
            .collect()
    }
}

/// Parse a bare stream selector (`{a="b", c=~"d.*"}`, no pipeline) into storage matchers.
pub fn parse_selector(text: &str) -> Result<Vec<tovlog_storage::Matcher>, String> {
    let expr = tovlog_logql::parse(text).map_err(|e| e.to_string())?;
    match expr {
        tovlog_logql::ast::Expr::Log(log) if log.pipeline.is_empty() => {
            crate::query::convert_matchers(&log.selector).map_err(|e| e.to_string())
        }
        _ => Err(format!("{text:?} is not a stream selector")),
    }
}

/// Durations as Prometheus/Go strings (`5m`, `1h30m`, `1w`, `500ms`), or a number of seconds.
pub mod duration {
    use super::*;

    /// Parse `1h30m`, `500ms`, `2d`, `1w`, `1.5h` or plain seconds.
    pub fn parse(text: &str) -> Option<Duration> {
        let text = text.trim();
        if let Ok(secs) = text.parse::<f64>() {
            // `try_`: a number past `Duration`'s range (`1e30`) is refused, not a panic.
            return Duration::try_from_secs_f64(secs).ok();
        }
        let mut total = 0f64;
        let mut rest = text;
        if rest.is_empty() {
            return None;
        }
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if num_len == 0 {
                return None;
            }
            let value: f64 = rest[..num_len].parse().ok()?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit = match &rest[..unit_len] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                "w" => 7.0 * 86400.0,
                "y" => 365.0 * 86400.0,
                _ => return None,
            };
            rest = &rest[unit_len..];
            total += value * unit;
        }
        Duration::try_from_secs_f64(total).ok()
    }

    /// Print as Go would (`1h30m0s` style is not needed; seconds with unit suffixes).
    pub fn format(d: &Duration) -> String {
        let ms = d.as_millis();
        if ms.is_multiple_of(3_600_000) && ms > 0 {
            format!("{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            format!("{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        }
    }

    /// A duration as Prometheus' `model.Duration` prints it in JSON (`0s`, `5m`, `30d1h`):
    /// Loki's limits are of that type.
    pub fn prom(d: Duration) -> String {
        let mut ms = d.as_millis();
        if ms == 0 {
            return "0s".into();
        }
        let mut out = String::new();
        // Years and weeks only when they divide exactly, as Prometheus does.
        for (unit, mult, exact) in [
            ("y", 365 * 86_400_000u128, true),
            ("w", 7 * 86_400_000, true),
            ("d", 86_400_000, false),
            ("h", 3_600_000, false),
            ("m", 60_000, false),
            ("s", 1000, false),
            ("ms", 1, false),
        ] {
            if exact && !ms.is_multiple_of(mult) {
                continue;
            }
            let v = ms / mult;
            if v > 0 {
                out.push_str(&format!("{v}{unit}"));
                ms -= v * mult;
            }
        }
        out
    }

    /// serde: serialize.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(d))
    }

    /// serde: deserialize from a string or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = serde_yaml::Value::deserialize(d)?;
        let text = match &v {
            serde_yaml::Value::String(s) => s.clone(),
            serde_yaml::Value::Number(n) => n.to_string(),
            _ => {
                return Err(serde::de::Error::custom(
                    "expected a duration such as 5m or 1h30m",
                ))
            }
        };
        parse(&text).ok_or_else(|| serde::de::Error::custom(format!("invalid duration {text:?}")))
    }
}

/// Optional durations (`None` when the key is absent), in [`duration`]'s formats.
pub mod opt_duration {
    use super::*;

    /// serde: serialize a present value.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// serde: deserialize a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        duration::deserialize(d).map(Some)
    }
}

/// Sizes with units (`256KB`, `512MiB`, `1GB`) or a plain number of bytes.
pub mod bytesize {
    use super::*;

    /// Parse a size; `KB`/`MB`/`GB` are powers of 1024 as in Loki's flagext.ByteSize.
    pub fn parse(text: &str) -> Option<u64> {
        let text = text.trim();
        if let Ok(n) = text.parse::<u64>() {
            return Some(n);
        }
        let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = text[..split].parse().ok()?;
        let mult: f64 = match text[split..].trim().to_ascii_lowercase().as_str() {
            "b" => 1.0,
            "k" | "kb" | "kib" => 1024.0,
            "m" | "mb" | "mib" => 1024.0 * 1024.0,
            "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
            "t" | "tb" | "tib" => 1024.0f64.powi(4),
            _ => return None,
        };
        let bytes = value * mult;
        (bytes.is_finite() && bytes >= 0.0).then_some(bytes as u64)
    }

    /// Print a size as Loki's error messages do (its `flagext.ByteSize`): the largest
    /// power-of-1024 unit that divides it exactly (`3MB`, `15MB`, `2KB`), else bytes
    /// (`8238B`).
    pub fn format(v: u64) -> String {
        if v == 0 {
            return "0B".to_owned();
        }
        for (unit, shift) in [
            ("EB", 60),
            ("PB", 50),
            ("TB", 40),
            ("GB", 30),
            ("MB", 20),
            ("KB", 10),
        ] {
            if v.trailing_zeros() >= shift {
                return format!("{}{unit}", v >> shift);
            }
        }
        format!("{v}B")
    }

    /// serde: serialize as bytes.
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v)
    }

    /// serde: deserialize a size string or number.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let v = serde_yaml::Value::deserialize(d)?;
        let text = match &v {
            serde_yaml::Value::String(s) => s.clone(),
            serde_yaml::Value::Number(n) => n.to_string(),
            _ => return Err(serde::de::Error::custom("expected a size such as 256KB")),
        };
        parse(&text).ok_or_else(|| serde::de::Error::custom(format!("invalid size {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_configuration_masks_every_secret() -> Result<(), serde_yaml::Error> {
        let c = Config::from_yaml(
            "storage:\n  object_store:\n    type: s3\n    bucket: logs\n    access_key_id: AKIAEXAMPLE\n    secret_access_key: s3cr3t-key\n\
             ruler:\n  alertmanager_client:\n    basic_auth_username: am\n    basic_auth_password: am-pass\n    credentials: am-token\n",
        )?;
        let text = c.to_masked_yaml()?;
        for secret in ["s3cr3t-key", "am-pass", "am-token"] {
            assert!(!text.contains(secret), "{secret} printed:\n{text}");
        }
        assert!(
            text.contains("secret_access_key: '********'")
                || text.contains("secret_access_key: \"********\""),
            "{text}"
        );
        // What is not a secret stays readable, and unset secrets stay visibly unset.
        assert!(text.contains("AKIAEXAMPLE") && text.contains("basic_auth_username: am"));
        let defaults = Config::default().to_masked_yaml()?;
        assert!(!defaults.contains("********"), "{defaults}");
        Ok(())
    }

    #[test]
    fn default_round_trips_through_yaml() -> Result<(), serde_yaml::Error> {
        let text = serde_yaml::to_string(&Config::default())?;
        let back = Config::from_yaml(&text)?;
        assert_eq!(back, Config::default());
        Ok(())
    }

    #[test]
    fn partial_file_keeps_other_defaults() -> Result<(), serde_yaml::Error> {
        let c = Config::from_yaml(
            "auth_enabled: false\nlimits_config:\n  max_query_series: 7\n  max_line_size: 1MB\n",
        )?;
        assert!(!c.auth_enabled);
        assert_eq!(c.limits_config.max_query_series, 7);
        assert_eq!(c.limits_config.max_line_size, 1 << 20);
        assert_eq!(c.limits_config.max_entries_limit_per_query, 5000);
        Ok(())
    }

    #[test]
    fn a_loki_retention_file_loads_unchanged() -> Result<(), Box<dyn std::error::Error>> {
        let c = Config::from_yaml(
            r#"
compactor:
  working_directory: /var/loki/compactor
  compaction_interval: 5m
  retention_enabled: true
  retention_delete_delay: 2h
  retention_delete_worker_count: 150
  delete_request_store: s3
  delete_request_cancel_period: 1h
  compactor_ring:
    kvstore: {store: inmemory}
limits_config:
  retention_period: 744h
  retention_stream:
    - selector: '{namespace="dev"}'
      priority: 1
      period: 24h
    - selector: '{container="nginx", level=~"debug|info"}'
      period: 1w
  deletion_mode: filter-only
runtime_config:
  file: /etc/loki/overrides.yaml
  period: 20s
"#,
        )?;
        let s = &c.storage.compaction;
        assert!(s.retention_enabled);
        assert_eq!(s.check_interval.0, Duration::from_secs(300));
        assert_eq!(s.delete_delay.0, Duration::from_secs(7200));
        assert_eq!(s.delete_request_cancel_period.0, Duration::from_secs(3600));
        let l = &c.limits_config;
        assert_eq!(l.retention_period, Duration::from_secs(744 * 3600));
        assert_eq!(l.deletion_mode, DeletionMode::FilterOnly);
        let rules = l.retention_rules("limits_config")?;
        assert_eq!(rules.len(), 2);
        assert_eq!(
            (rules[0].priority, rules[0].period),
            (1, Duration::from_secs(86_400))
        );
        assert_eq!(rules[1].matchers.len(), 2);
        assert_eq!(rules[1].period, Duration::from_secs(7 * 86_400));
        assert_eq!(c.runtime_config.period, Duration::from_secs(20));
        c.validate()?;
        // Printed and read back, the configuration is the same.
        let again = Config::from_yaml(&serde_yaml::to_string(&c)?)?;
        assert_eq!(again, c);
        Ok(())
    }

    #[test]
    fn absent_compactor_keys_leave_storage_alone() -> Result<(), serde_yaml::Error> {
        let c = Config::from_yaml(
            "storage:\n  compaction:\n    check_interval: 3s\n    retention_enabled: true\ncompactor:\n  delete_request_cancel_period: 2s\n",
        )?;
        assert_eq!(
            c.storage.compaction.check_interval.0,
            Duration::from_secs(3)
        );
        assert!(c.storage.compaction.retention_enabled);
        assert_eq!(
            c.storage.compaction.delete_request_cancel_period.0,
            Duration::from_secs(2)
        );
        assert!(Config::from_yaml("compactor:\n  no_such_key: 1\n").is_err());
        Ok(())
    }

    #[test]
    fn bad_retention_and_deletion_settings_name_the_key() -> Result<(), serde_yaml::Error> {
        let bad_selector = Config::from_yaml(
            "limits_config:\n  retention_stream:\n    - selector: '{a=\"b\"}'\n      period: 48h\n    - selector: 'a=b'\n      period: 48h\n",
        )?;
        let e = bad_selector.validate().err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.starts_with(
                "invalid value for limits_config.retention_stream[1].selector: invalid labels matchers:"
            )),
            "{e:?}"
        );
        let short = Config::from_yaml(
            "limits_config:\n  retention_stream:\n    - selector: '{a=\"b\"}'\n      period: 12h\n",
        )?;
        assert_eq!(
            short.validate().err().map(|e| e.to_string()).as_deref(),
            Some("invalid value for limits_config.retention_stream[0].period: retention period must be >= 24h was 12h")
        );
        let mode = Config::from_yaml("limits_config:\n  deletion_mode: sometimes\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            mode.contains(
                "unknown deletion mode: must be one of disabled|filter-only|filter-and-delete"
            ),
            "{mode}"
        );
        Ok(())
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(Config::from_yaml("nope: 1\n").is_err());
        assert!(Config::from_yaml("limits_config:\n  nope: 1\n").is_err());
    }

    #[test]
    fn durations_parse_like_prometheus_and_go() {
        assert_eq!(duration::parse("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(duration::parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(duration::parse("1w"), Some(Duration::from_secs(604_800)));
        assert_eq!(duration::parse("90"), Some(Duration::from_secs(90)));
        assert_eq!(duration::parse("5x"), None);
        assert_eq!(duration::parse(""), None);
        // Past `Duration`'s range, negative or not a number: refused, never a panic.
        assert_eq!(duration::parse("1e30"), None);
        assert_eq!(duration::parse("99999999999999999999999"), None);
        assert_eq!(duration::parse("99999999999999999999999h"), None);
        assert_eq!(duration::parse("-5"), None);
        assert_eq!(duration::parse("NaN"), None);
    }

    #[test]
    fn sizes_print_as_loki_prints_them() {
        assert_eq!(bytesize::format(3 << 20), "3MB");
        assert_eq!(bytesize::format(15 << 20), "15MB");
        assert_eq!(bytesize::format(8238), "8238B");
        assert_eq!(bytesize::format(2048), "2KB");
        assert_eq!(bytesize::format(1536 << 10), "1536KB");
        assert_eq!(bytesize::format(0), "0B");
    }

    #[test]
    fn stream_limits_take_the_smaller_set_one() {
        let mut l = LimitsConfig::default();
        assert_eq!(l.active_stream_limit(), Some(5000));
        l.max_streams_per_user = 300;
        assert_eq!(l.active_stream_limit(), Some(300));
        l.max_global_streams_per_user = 0;
        assert_eq!(l.active_stream_limit(), Some(300));
        l.max_streams_per_user = 0;
        assert_eq!(l.active_stream_limit(), None);
    }

    #[test]
    fn new_limits_parse_with_loki_names() -> Result<(), serde_yaml::Error> {
        let c = Config::from_yaml(
            "limits_config:\n  max_query_range: 1h\n  max_query_parallelism: 4\n  max_streams_per_user: 10\n  max_global_streams_per_user: 20\n  per_stream_rate_limit: 3MB\n  per_stream_rate_limit_burst: 15MB\nquery_scheduler:\n  max_concurrent: 3\n  max_outstanding_requests_per_tenant: 7\n",
        )?;
        let l = &c.limits_config;
        assert_eq!(l.max_query_range, Duration::from_secs(3600));
        assert_eq!(l.max_query_parallelism, 4);
        assert_eq!(l.active_stream_limit(), Some(10));
        assert_eq!(
            (l.per_stream_rate_limit, l.per_stream_rate_limit_burst),
            (3 << 20, 15 << 20)
        );
        assert_eq!(c.query_scheduler.concurrency(), 3);
        assert_eq!(c.query_scheduler.max_outstanding_requests_per_tenant, 7);
        assert!(Config::default().query_scheduler.concurrency() >= 1);
        Ok(())
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(bytesize::parse("256KB"), Some(262_144));
        assert_eq!(bytesize::parse("1.5MiB"), Some(1_572_864));
        assert_eq!(bytesize::parse("42"), Some(42));
        assert_eq!(bytesize::parse("3 parsecs"), None);
    }
}
