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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 3100)),
            max_request_body: 100 << 20,
            auth_enabled: true,
            limits_config: LimitsConfig::default(),
            query: QueryConfig::default(),
            storage: StorageConfig::default(),
            log: LogConfig::default(),
            ruler: crate::ruler::RulerConfig::default(),
            server: ServerConfig::default(),
            auth: crate::server::auth::AuthConfig::default(),
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
    /// Serve `/loki/api/v1/index/volume` and `volume_range`. Default true.
    pub volume_enabled: bool,
    /// Maximum series `index/volume` returns. Default 100.
    pub volume_max_series: usize,
    /// Live tails (`/loki/api/v1/tail`) a tenant may have open at once; 0 disables
    /// tailing. Default 10.
    pub max_concurrent_tail_requests: usize,
    /// Secret redaction at ingest, with per-tenant overrides (docs/redaction.md). Default off.
    pub redaction: crate::ingest::redact::RedactionConfig,
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
            volume_enabled: true,
            volume_max_series: 1000,
            max_concurrent_tail_requests: 10,
            redaction: crate::ingest::redact::RedactionConfig::default(),
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
        key: &'static str,
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
        serde_yaml::from_str(text)
    }

    /// Reject impossible settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits_config;
        if l.ingestion_rate_mb.is_nan() || l.ingestion_rate_mb <= 0.0 {
            return Err(ConfigError::Invalid {
                key: "limits_config.ingestion_rate_mb",
                msg: "must be > 0".into(),
            });
        }
        if l.ingestion_burst_size_mb < l.ingestion_rate_mb.min(1.0) {
            return Err(ConfigError::Invalid {
                key: "limits_config.ingestion_burst_size_mb",
                msg: "must be at least 1 MB or the rate".into(),
            });
        }
        if l.max_entries_limit_per_query == 0 {
            return Err(ConfigError::Invalid {
                key: "limits_config.max_entries_limit_per_query",
                msg: "must be > 0".into(),
            });
        }
        if l.max_query_series == 0 {
            return Err(ConfigError::Invalid {
                key: "limits_config.max_query_series",
                msg: "must be > 0".into(),
            });
        }
        for origin in &self.server.cors_allowed_origins {
            let o = origin.trim();
            let scheme_ok = o.starts_with("http://") || o.starts_with("https://");
            let chars_ok = o.bytes().all(|b| b.is_ascii_graphic());
            if o != "*" && (!scheme_ok || !chars_ok || o.ends_with('/')) {
                return Err(ConfigError::Invalid {
                    key: "server.cors_allowed_origins",
                    msg: format!(
                        "{origin:?} is not an origin: want `*` or scheme://host[:port] without a path"
                    ),
                });
            }
        }
        if let Err(e) = crate::ingest::redact::Redactor::new(&l.redaction) {
            return Err(ConfigError::Invalid {
                key: "limits_config.redaction",
                msg: e.to_string(),
            });
        }
        if self.server.http_tls_config.enabled() {
            if let Err(e) = self.server.http_tls_config.load() {
                return Err(ConfigError::Invalid {
                    key: "server.http_tls_config",
                    msg: e.to_string(),
                });
            }
        }
        if let Err(msg) = self.auth.validate() {
            return Err(ConfigError::Invalid { key: "auth", msg });
        }
        if self.query.timeout.is_zero() {
            return Err(ConfigError::Invalid {
                key: "query.timeout",
                msg: "must be > 0".into(),
            });
        }
        Ok(())
    }
}

/// Durations as Prometheus/Go strings (`5m`, `1h30m`, `1w`, `500ms`), or a number of seconds.
pub mod duration {
    use super::*;

    /// Parse `1h30m`, `500ms`, `2d`, `1w`, `1.5h` or plain seconds.
    pub fn parse(text: &str) -> Option<Duration> {
        let text = text.trim();
        if let Ok(secs) = text.parse::<f64>() {
            return (secs >= 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs));
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
        Some(Duration::from_secs_f64(total))
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
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(bytesize::parse("256KB"), Some(262_144));
        assert_eq!(bytesize::parse("1.5MiB"), Some(1_572_864));
        assert_eq!(bytesize::parse("42"), Some(42));
        assert_eq!(bytesize::parse("3 parsecs"), None);
    }
}
