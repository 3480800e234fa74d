//! Per-tenant limits, as Loki resolves them: `limits_config` for every tenant, with the keys a
//! tenant's entry of the runtime overrides file (Loki's `runtime_config.file`, section
//! `overrides`) gives replacing the defaults' values. The file is re-read every
//! `runtime_config.period` without a restart; a file that does not parse or validate keeps the
//! previous overrides, logs an error and sets `loki_runtime_config_last_reload_successful` to 0.
//!
//! ```text
//!  limits_config ──┐
//!                  ├─ deep merge per tenant ─► LimitsConfig ─► TenantLimits (compiled: redaction
//!  overrides.<t> ──┘   (mappings merge,                         rules, retention rules)
//!                       other values replace)
//!  Overrides::tenant(t): one read lock + one hash lookup + one Arc clone per request
//! ```
//!
//! Everything that reads a per-tenant limit (ingest, queries, tails, volume, retention, the
//! delete API) asks [`Overrides::tenant`] once per request and keeps the `Arc` for the rest of
//! it, so a reload never changes the limits in the middle of a request.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{Arc, Weak},
    time::Duration,
};

use parking_lot::RwLock;
use serde::Deserialize;
use tovlog_storage::erase::{RetentionPolicy, RetentionSource};

use crate::{
    config::{ConfigError, LimitsConfig, RuntimeConfigConfig},
    ingest::redact::Redactor,
    telemetry::Metrics,
};

/// One tenant's limits, compiled once per (re)load.
#[derive(Debug)]
pub struct TenantLimits {
    /// The effective `limits_config` of the tenant.
    pub limits: LimitsConfig,
    /// Redaction rules compiled from `limits.redaction` (ask it with the tenant's id, since
    /// `redaction.tenants` may name the tenant).
    pub redactor: Arc<Redactor>,
    /// `retention_period` and `retention_stream` with their selectors parsed.
    pub retention: RetentionPolicy,
}

impl TenantLimits {
    fn compile(
        limits: LimitsConfig,
        prefix: &str,
        shared: Option<&TenantLimits>,
    ) -> Result<TenantLimits, ConfigError> {
        limits.validate(prefix)?;
        // A tenant whose redaction settings are the defaults' shares their compiled rules:
        // compiling the built-in catalogue costs milliseconds per tenant.
        let redactor = match shared {
            Some(base) if base.limits.redaction == limits.redaction => base.redactor.clone(),
            _ => Arc::new(
                Redactor::new(&limits.redaction).map_err(|e| ConfigError::Invalid {
                    key: format!("{prefix}.redaction"),
                    msg: e.to_string(),
                })?,
            ),
        };
        let retention = RetentionPolicy {
            period: limits.retention_period,
            streams: limits.retention_rules(prefix)?,
        };
        Ok(TenantLimits {
            limits,
            redactor,
            retention,
        })
    }
}

/// Why the runtime overrides file was not (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum OverridesError {
    /// The file could not be read.
    #[error("cannot read runtime config file {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML of the expected shape.
    #[error("invalid runtime config file {path}: {msg}")]
    Parse {
        /// File.
        path: String,
        /// What is wrong.
        msg: String,
    },
    /// A tenant's limits are impossible.
    #[error("invalid runtime config file {path}: {source}")]
    Invalid {
        /// File.
        path: String,
        /// Which key and why.
        #[source]
        source: ConfigError,
    },
}

/// The runtime file's shape (Loki's `runtimeConfigValues`): unknown top-level keys are errors,
/// as Loki decodes it with known fields only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuntimeFile {
    /// Per-tenant `limits_config` keys.
    #[serde(default)]
    overrides: Option<BTreeMap<String, Option<serde_yaml::Value>>>,
    /// Loki's per-tenant operational config (`log_push_request` …): accepted, ignored.
    #[serde(default)]
    #[allow(dead_code)]
    configs: Option<serde_yaml::Value>,
    /// Loki's ring KV switch: accepted, ignored.
    #[serde(default)]
    #[allow(dead_code)]
    multi_kv_config: Option<serde_yaml::Value>,
}

/// The loaded overrides.
#[derive(Debug)]
struct Snapshot {
    tenants: HashMap<String, Arc<TenantLimits>>,
    /// SHA-256 of the file's bytes (empty without a file).
    hash: String,
}

/// Every tenant's limits: the defaults plus the runtime overrides file, swapped atomically
/// on each successful reload.
#[derive(Debug)]
pub struct Overrides {
    /// `limits_config` as a YAML mapping, the base every tenant's entry is merged onto.
    base_yaml: serde_yaml::Value,
    default: Arc<TenantLimits>,
    current: RwLock<Arc<Snapshot>>,
    file: Option<PathBuf>,
    period: Duration,
    metrics: Arc<Metrics>,
}

impl Overrides {
    /// The defaults of `limits`, and the overrides file of `runtime` loaded once (a file that
    /// cannot be loaded stops start-up, as in Loki).
    pub fn new(
        limits: LimitsConfig,
        runtime: &RuntimeConfigConfig,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Overrides>> {
        let base_yaml = serde_yaml::to_value(&limits)?;
        let default = Arc::new(TenantLimits::compile(limits, "limits_config", None)?);
        let file = (!runtime.file.is_empty()).then(|| PathBuf::from(&runtime.file));
        let overrides = Overrides {
            base_yaml,
            default,
            current: RwLock::new(Arc::new(Snapshot {
                tenants: HashMap::new(),
                hash: String::new(),
            })),
            file,
            period: runtime.period,
            metrics,
        };
        if overrides.file.is_some() {
            overrides.reload()?;
        }
        Ok(Arc::new(overrides))
    }

    /// Only the defaults (no overrides file): for tests and tools.
    pub fn fixed(limits: LimitsConfig) -> anyhow::Result<Arc<Overrides>> {
        Self::new(
            limits,
            &RuntimeConfigConfig::default(),
            Arc::new(Metrics::default()),
        )
    }

    /// The limits of `tenant`. Cheap: call it once per request and keep the result.
    pub fn tenant(&self, tenant: &str) -> Arc<TenantLimits> {
        let current = self.current.read();
        current.tenants.get(tenant).unwrap_or(&self.default).clone()
    }

    /// The `limits_config` defaults (tenants without an override).
    pub fn defaults(&self) -> &Arc<TenantLimits> {
        &self.default
    }

    /// The SHA-256 of the overrides file in force (empty without a file).
    pub fn hash(&self) -> String {
        self.current.read().hash.clone()
    }

    /// Each tenant's retention policy, for [`tovlog_storage::Storage::set_retention`].
    pub fn retention_source(self: &Arc<Self>) -> RetentionSource {
        let weak = Arc::downgrade(self);
        Arc::new(move |tenant: &str| match weak.upgrade() {
            Some(o) => o.tenant(tenant).retention.clone(),
            // Only while the server is being torn down: keep everything.
            None => RetentionPolicy::default(),
        })
    }

    /// Read the file again; on success the new overrides replace the old ones at once. On
    /// failure the old ones stay, and the error is returned (the reloader logs it). Both
    /// outcomes set the reload metrics.
    pub fn reload(&self) -> Result<(), OverridesError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let result = self.load(path);
        match &result {
            Ok(()) => self.metrics.runtime_config_reloaded(true, &self.hash()),
            Err(_) => self.metrics.runtime_config_reloaded(false, &self.hash()),
        }
        result
    }

    fn load(&self, path: &PathBuf) -> Result<(), OverridesError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| OverridesError::Read {
            path: shown.clone(),
            source,
        })?;
        let hash = tovlog_storage::chain::sha256_hex(&bytes);
        if hash == self.current.read().hash {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&bytes);
        let parsed: RuntimeFile = if text.trim().is_empty() {
            RuntimeFile {
                overrides: None,
                configs: None,
                multi_kv_config: None,
            }
        } else {
            serde_yaml::from_str(&text).map_err(|e| OverridesError::Parse {
                path: shown.clone(),
                msg: e.to_string(),
            })?
        };
        let mut tenants = HashMap::new();
        for (tenant, value) in parsed.overrides.unwrap_or_default() {
            let Some(value) = value else {
                tracing::warn!(%tenant, "skipping empty tenant limit definition");
                continue;
            };
            let prefix = format!("overrides.{tenant}");
            let mut merged = self.base_yaml.clone();
            merge(&mut merged, value);
            let limits: LimitsConfig =
                serde_yaml::from_value(merged).map_err(|e| OverridesError::Parse {
                    path: shown.clone(),
                    msg: format!("{prefix}: {e}"),
                })?;
            let compiled =
                TenantLimits::compile(limits, &prefix, Some(&self.default)).map_err(|source| {
                    OverridesError::Invalid {
                        path: shown.clone(),
                        source,
                    }
                })?;
            tenants.insert(tenant, Arc::new(compiled));
        }
        tracing::info!(file = %shown, tenants = tenants.len(), %hash, "runtime config loaded");
        *self.current.write() = Arc::new(Snapshot { tenants, hash });
        Ok(())
    }

    /// Re-read the file every `runtime_config.period` until the overrides are dropped.
    pub fn spawn_reloader(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        self.file.as_ref()?;
        let weak: Weak<Overrides> = Arc::downgrade(self);
        let period = self.period;
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(o) = weak.upgrade() else { return };
                // A few KB of YAML: read and parsed on a blocking thread all the same.
                let result = tokio::task::spawn_blocking(move || o.reload()).await;
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "runtime config reload failed; keeping the previous overrides")
                    }
                    Err(e) => tracing::error!(error = %e, "runtime config reload panicked"),
                }
            }
        }))
    }
}

/// Loki's way of applying a tenant's entry onto the defaults (YAML decoded onto a copy of
/// them): mappings merge key by key, any other value replaces.
fn merge(base: &mut serde_yaml::Value, over: serde_yaml::Value) {
    match (base, over) {
        (serde_yaml::Value::Mapping(b), serde_yaml::Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, text: &str) -> anyhow::Result<String> {
        let path = dir.path().join("overrides.yaml");
        std::fs::write(&path, text)?;
        Ok(path.display().to_string())
    }

    fn runtime(file: String) -> RuntimeConfigConfig {
        RuntimeConfigConfig {
            file,
            period: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_tenant_entry_replaces_only_the_keys_it_gives() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = write(
            &dir,
            "overrides:\n  t1:\n    max_line_size: 1KB\n    retention_period: 48h\n    redaction:\n      enabled: true\n    retention_stream:\n      - selector: '{app=\"db\"}'\n        priority: 2\n        period: 744h\n",
        )?;
        let base = LimitsConfig {
            max_query_series: 7,
            ..LimitsConfig::default()
        };
        let o = Overrides::new(base, &runtime(file), Arc::new(Metrics::default()))?;
        let t1 = o.tenant("t1");
        assert_eq!(t1.limits.max_line_size, 1024);
        assert_eq!(
            t1.limits.max_query_series, 7,
            "untouched key keeps the default"
        );
        assert!(t1.limits.redaction.enabled);
        // A nested mapping merges: the built-in list of the defaults survives.
        assert_eq!(t1.limits.redaction.builtin.len(), 5);
        assert!(t1.redactor.for_tenant("t1").is_some());
        assert_eq!(t1.retention.period, Duration::from_secs(48 * 3600));
        assert_eq!(t1.retention.streams.len(), 1);
        assert_eq!(t1.retention.streams[0].priority, 2);
        let other = o.tenant("t2");
        assert_eq!(other.limits.max_line_size, 256 * 1024);
        assert!(other.redactor.for_tenant("t2").is_none());
        assert_eq!(other.retention.period, Duration::ZERO);
        Ok(())
    }

    #[test]
    fn a_bad_file_keeps_the_previous_overrides() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = write(&dir, "overrides:\n  t1:\n    ingestion_rate_mb: 1\n")?;
        let metrics = Arc::new(Metrics::default());
        let o = Overrides::new(LimitsConfig::default(), &runtime(file), metrics.clone())?;
        let hash = o.hash();
        assert_eq!(o.tenant("t1").limits.ingestion_rate_mb, 1.0);
        for bad in [
            "overrides:\n  t1:\n    no_such_limit: 1\n",
            "overrides: [",
            "overrides:\n  t1:\n    retention_stream:\n      - selector: 'nope'\n        period: 48h\n",
            "overrides:\n  t1:\n    retention_stream:\n      - selector: '{a=\"b\"}'\n        period: 1h\n",
            "overrides:\n  t1:\n    deletion_mode: sometimes\n",
            "limits:\n  t1: {}\n",
        ] {
            write(&dir, bad)?;
            let err = o.reload().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(!err.is_empty(), "{bad:?} was accepted");
            assert_eq!(o.tenant("t1").limits.ingestion_rate_mb, 1.0, "{bad:?}");
            assert_eq!(o.hash(), hash);
            assert!(metrics
                .render_runtime_config()
                .contains("loki_runtime_config_last_reload_successful 0"));
        }
        write(&dir, "overrides:\n  t1:\n    ingestion_rate_mb: 2\n")?;
        o.reload()?;
        assert_eq!(o.tenant("t1").limits.ingestion_rate_mb, 2.0);
        assert_ne!(o.hash(), hash);
        let text = metrics.render_runtime_config();
        assert!(text.contains("loki_runtime_config_last_reload_successful 1"));
        assert!(text.contains(&format!(
            "loki_runtime_config_hash{{sha256=\"{}\"}} 1",
            o.hash()
        )));
        Ok(())
    }

    #[test]
    fn errors_name_the_tenant_and_key() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = write(
            &dir,
            "overrides:\n  team-a:\n    retention_stream:\n      - selector: '{a=\"b\"}'\n        period: 48h\n      - selector: '{a=~\"(\"}'\n        period: 48h\n",
        )?;
        let err = Overrides::new(
            LimitsConfig::default(),
            &runtime(file),
            Arc::new(Metrics::default()),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("overrides.team-a.retention_stream[1].selector"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn an_empty_file_or_null_entry_means_defaults() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = write(&dir, "")?;
        let o = Overrides::new(
            LimitsConfig::default(),
            &runtime(file.clone()),
            Arc::new(Metrics::default()),
        )?;
        assert_eq!(o.tenant("x").limits, LimitsConfig::default());
        write(&dir, "overrides:\n  x:\nconfigs: {}\n")?;
        o.reload()?;
        assert_eq!(o.tenant("x").limits, LimitsConfig::default());
        Ok(())
    }
}
