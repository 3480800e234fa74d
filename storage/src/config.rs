//! Storage configuration (the `storage:` section of the config file). Every default is
//! written once, in the `Default` impls; each field's doc states it. Durations are written
//! like Go/Prometheus (`500ms`, `30s`, `5m`, `1h30m`) and sizes with units (`64MiB`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// Storage settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Root data directory (WAL, label indexes, local chunks). Default `./data`.
    pub data_dir: PathBuf,
    /// Where chunk files and manifests go. Default: local, `<data_dir>/chunks`.
    pub object_store: ObjectStoreConfig,
    /// Write-ahead log settings.
    pub wal: WalConfig,
    /// In-memory head settings.
    pub head: HeadConfig,
    /// Parquet chunk settings.
    pub chunk: ChunkConfig,
    /// Background compaction settings.
    pub compaction: CompactionConfig,
    /// `writer` (default) or `reader`: a read replica following the bucket a writer fills
    /// (see [`crate::replica`]).
    pub role: crate::replica::Role,
    /// The writer lease on the bucket ([`crate::lease`]).
    pub lease: crate::lease::LeaseConfig,
    /// How a reader follows the bucket.
    pub replica: crate::replica::ReplicaConfig,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./data"),
            object_store: ObjectStoreConfig::default(),
            wal: WalConfig::default(),
            head: HeadConfig::default(),
            chunk: ChunkConfig::default(),
            compaction: CompactionConfig::default(),
            role: crate::replica::Role::default(),
            lease: crate::lease::LeaseConfig::default(),
            replica: crate::replica::ReplicaConfig::default(),
        }
    }
}

impl StorageConfig {
    /// Reject impossible settings, naming the key.
    pub fn validate(&self) -> Result<()> {
        if self.wal.segment_size.0 < 4096 {
            return Err(Error::Config(
                "wal.segment_size must be at least 4KiB".into(),
            ));
        }
        if self.head.max_bytes.0 < 1024 * 1024 {
            return Err(Error::Config("head.max_bytes must be at least 1MiB".into()));
        }
        if self.head.max_age.0.is_zero() {
            return Err(Error::Config("head.max_age must be positive".into()));
        }
        if self.chunk.window.0.as_secs() < 60 {
            return Err(Error::Config("chunk.window must be at least 1m".into()));
        }
        if self.chunk.row_group_rows < 1024 {
            return Err(Error::Config(
                "chunk.row_group_rows must be at least 1024".into(),
            ));
        }
        if !(1..=22).contains(&self.chunk.zstd_level) {
            return Err(Error::Config("chunk.zstd_level must be in 1..=22".into()));
        }
        if !(1..=22).contains(&self.compaction.zstd_level) {
            return Err(Error::Config(
                "compaction.zstd_level must be in 1..=22".into(),
            ));
        }
        if self.compaction.concurrency == 0 {
            return Err(Error::Config(
                "compaction.concurrency must be at least 1".into(),
            ));
        }
        if self.compaction.max_file_bytes.0 < 1024 * 1024 {
            return Err(Error::Config(
                "compaction.max_file_bytes must be at least 1MiB".into(),
            ));
        }
        self.lease.validate()?;
        if self.replica.poll_interval.0.is_zero() {
            return Err(Error::Config(
                "replica.poll_interval must be positive".into(),
            ));
        }
        if let ObjectStoreConfig::S3(s3) = &self.object_store {
            if s3.bucket.is_empty() {
                return Err(Error::Config(
                    "object_store.bucket must be set for s3".into(),
                ));
            }
        }
        Ok(())
    }

    /// The local chunk directory when the object store is local.
    pub fn local_chunk_dir(&self) -> Option<PathBuf> {
        match &self.object_store {
            ObjectStoreConfig::Local(local) => Some(
                local
                    .path
                    .clone()
                    .unwrap_or_else(|| self.data_dir.join("chunks")),
            ),
            ObjectStoreConfig::S3(_) => None,
        }
    }
}

/// Object store for chunk files and manifests, selected by `type: local | s3`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ObjectStoreConfig {
    /// A directory on the local file system.
    Local(LocalStoreConfig),
    /// An S3-compatible service.
    S3(Box<S3Config>),
}

impl Default for ObjectStoreConfig {
    fn default() -> Self {
        ObjectStoreConfig::Local(LocalStoreConfig::default())
    }
}

/// Local file system object store.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalStoreConfig {
    /// Directory of chunk files. Default: unset, meaning `<data_dir>/chunks`.
    pub path: Option<PathBuf>,
}

/// S3-compatible object store.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000`. Default: unset (AWS for the region).
    pub endpoint: Option<String>,
    /// Bucket name. Required; default empty.
    pub bucket: String,
    /// Region. Default `us-east-1`.
    pub region: String,
    /// Access key id. Default: unset (taken from the `AWS_*` environment).
    pub access_key_id: Option<String>,
    /// Secret access key. Default: unset (taken from the `AWS_*` environment).
    pub secret_access_key: Option<String>,
    /// Allow plain `http://` endpoints. Default `false`.
    pub allow_http: bool,
    /// Path-style requests (`endpoint/bucket/key`) when `true`, virtual-hosted style
    /// (`bucket.endpoint/key`) when `false`. Default `true`, what MinIO and most
    /// self-hosted servers need.
    pub path_style: bool,
    /// Key prefix inside the bucket. Default empty.
    pub prefix: String,
    /// PEM file of certificate authorities to trust for an `https://` endpoint, besides
    /// the system's (a private CA in front of MinIO, say). Default: unset.
    pub ca_file: Option<std::path::PathBuf>,
    /// Time limit of one request, from sending to the end of the response body. Default
    /// `30s`.
    pub request_timeout: HumanDuration,
    /// Time limit of opening a connection. Default `5s`.
    pub connect_timeout: HumanDuration,
    /// Retries of a failed request (5xx, timeouts, connection errors), with exponential
    /// backoff. Default `10`.
    pub max_retries: usize,
    /// No retry starts this long after a request's first attempt. A flush against an
    /// unreachable store reports its failure after about this long (pushes are refused once
    /// the head is full, see `head.stall_timeout`). Default `1m`.
    pub retry_timeout: HumanDuration,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: None,
            bucket: String::new(),
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
            path_style: true,
            prefix: String::new(),
            ca_file: None,
            request_timeout: HumanDuration(Duration::from_secs(30)),
            connect_timeout: HumanDuration(Duration::from_secs(5)),
            max_retries: 10,
            retry_timeout: HumanDuration(Duration::from_secs(60)),
        }
    }
}

impl std::fmt::Debug for S3Config {
    // Credentials never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id.as_ref().map(|_| "***"))
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "***"),
            )
            .field("allow_http", &self.allow_http)
            .field("path_style", &self.path_style)
            .field("prefix", &self.prefix)
            .field("ca_file", &self.ca_file)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout", &self.retry_timeout)
            .finish()
    }
}

/// Write-ahead log settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalConfig {
    /// fsync each group commit before acknowledging. Default `true`. `false` is unsafe:
    /// acknowledged pushes can be lost on a power failure or kernel crash.
    pub fsync: bool,
    /// Size after which a new segment file is started. Default `64MiB`.
    pub segment_size: ByteSize,
    /// Largest amount of data one group commit writes before syncing. Default `8MiB`.
    pub max_batch_bytes: ByteSize,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            fsync: true,
            segment_size: ByteSize(64 * 1024 * 1024),
            max_batch_bytes: ByteSize(8 * 1024 * 1024),
        }
    }
}

/// In-memory head settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadConfig {
    /// Flush when the head (all tenants) holds more than this. Default `64MiB`.
    pub max_bytes: ByteSize,
    /// Flush when the oldest unflushed entry was appended longer ago than this. Default `10m`.
    pub max_age: HumanDuration,
    /// How often the background flusher checks the thresholds. Default `1s`.
    pub check_interval: HumanDuration,
    /// When the head holds twice `max_bytes` (flushes fall behind ingest), a push waits
    /// this long for a flush to free memory before it is refused with a retryable 503. A
    /// push is refused at once while flushes fail (the object store unreachable). Default
    /// `5s`, below the 10 s timeout of Promtail's client.
    pub stall_timeout: HumanDuration,
    /// Rows of chunk files newer than this are kept decoded in memory once a query has read
    /// them, so alert rules and dashboards over the last minutes do not decompress the same
    /// pages again (see `scan::RecentRows`). Default `15m`.
    pub recent_window: HumanDuration,
    /// Memory for those rows; `0` turns it off. Default `32MiB`.
    pub recent_bytes: ByteSize,
}

impl Default for HeadConfig {
    fn default() -> Self {
        HeadConfig {
            max_bytes: ByteSize(64 * 1024 * 1024),
            max_age: HumanDuration(Duration::from_secs(600)),
            check_interval: HumanDuration(Duration::from_secs(1)),
            stall_timeout: HumanDuration(Duration::from_secs(5)),
            recent_window: HumanDuration(Duration::from_secs(900)),
            recent_bytes: ByteSize(32 * 1024 * 1024),
        }
    }
}

/// Parquet chunk settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChunkConfig {
    /// Time window of one chunk file: a flush writes one file per tenant per window it
    /// has data in. Default `1h`.
    pub window: HumanDuration,
    /// Target rows per Parquet row group. Default `131072`.
    pub row_group_rows: usize,
    /// Largest data page of the `line` column; bigger pages compress better, smaller ones
    /// let the page index skip more. Default `1MiB`.
    pub line_page_bytes: ByteSize,
    /// zstd level of all columns of flushed files. Default `3`: flushes must keep up with
    /// ingest, and the compactor re-encodes every window strongly a minute later.
    pub zstd_level: i32,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        ChunkConfig {
            window: HumanDuration(Duration::from_secs(3600)),
            row_group_rows: 128 * 1024,
            line_page_bytes: ByteSize(1024 * 1024),
            zstd_level: 3,
        }
    }
}

/// Background compaction: once a time window stops receiving flushes, its chunk files are
/// merged into one (rows re-sorted, exact duplicates dropped) and re-encoded with a strong
/// zstd level on a low-priority thread. Flushes stay fast; data at rest ends up small.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompactionConfig {
    /// Run the compactor. Default `true`.
    pub enabled: bool,
    /// A window is compacted once its newest uncompacted file is this old. Default `1m`.
    pub min_age: HumanDuration,
    /// zstd level of compacted files. Default `17` (about 5 MB/s of raw lines per core, as
    /// fast as 16 on log lines and 2% smaller; decompression is as fast as at low levels).
    pub zstd_level: i32,
    /// Largest data page of the `line` column in compacted files, and so the most a needle
    /// block (`textindex`) decompresses. Default `512KiB`: each halving since `2MiB` cost
    /// about 0.8 byte per line on the standard workload and cut the CPU of a needle query
    /// that reads tens of blocks (Q3) by a quarter to a third (see docs/performance.md).
    pub line_page_bytes: ByteSize,
    /// A compacted file is closed and a new one started past this size; compacted files
    /// of at least half this size are not merged again. Bounds the compactor's memory.
    /// Default `256MiB`.
    pub max_file_bytes: ByteSize,
    /// Replaced files are deleted this long after the manifest stops listing them, so
    /// queries that planned against the old manifest can finish. Keep it above
    /// `query.timeout`. Default `10m`.
    pub delete_delay: HumanDuration,
    /// How often the compactor looks for work. Default `10s`.
    pub check_interval: HumanDuration,
    /// Windows compacted at the same time, each on its own low-priority thread. Default `1`.
    pub concurrency: usize,
    /// Apply retention (Loki's `compactor.retention_enabled`): rows past their stream's
    /// retention period are hidden from queries and removed by the compactor. Default `false`.
    pub retention_enabled: bool,
    /// A delete request can be cancelled for this long; the compactor rewrites files for it
    /// only afterwards (Loki's `compactor.delete_request_cancel_period`). Default `24h`.
    pub delete_request_cancel_period: HumanDuration,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            enabled: true,
            min_age: HumanDuration(Duration::from_secs(60)),
            zstd_level: 17,
            line_page_bytes: ByteSize(512 * 1024),
            max_file_bytes: ByteSize(256 * 1024 * 1024),
            delete_delay: HumanDuration(Duration::from_secs(600)),
            check_interval: HumanDuration(Duration::from_secs(10)),
            concurrency: 1,
            retention_enabled: false,
            delete_request_cancel_period: HumanDuration(Duration::from_secs(24 * 3600)),
        }
    }
}

/// A byte size written with a unit (`512KiB`, `64MiB`, `1GB`, or plain bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parse `123`, `64KiB`, `64MiB`, `1GiB`, `10KB`, `10MB`, `1GB` (case-insensitive units).
    pub fn parse(s: &str) -> std::result::Result<ByteSize, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let num: f64 = num
            .parse()
            .map_err(|_| format!("invalid size {s:?}: expected a number with a unit"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" | "ki" => 1024,
            "m" | "mb" => 1_000_000,
            "mib" | "mi" => 1024 * 1024,
            "g" | "gb" => 1_000_000_000,
            "gib" | "gi" => 1024 * 1024 * 1024,
            other => return Err(format!("invalid size unit {other:?} in {s:?}")),
        };
        Ok(ByteSize((num * mult as f64) as u64))
    }
}

// `is_multiple_of` needs Rust 1.87; the workspace declares 1.85.
#[allow(clippy::manual_is_multiple_of)]
impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let v = self.0;
        const MIB: u64 = 1024 * 1024;
        if v > 0 && v.is_multiple_of(1024 * MIB) {
            s.serialize_str(&format!("{}GiB", v / (1024 * MIB)))
        } else if v > 0 && v.is_multiple_of(MIB) {
            s.serialize_str(&format!("{}MiB", v / MIB))
        } else if v > 0 && v.is_multiple_of(1024) {
            s.serialize_str(&format!("{}KiB", v / 1024))
        } else {
            s.serialize_u64(v)
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// A duration written Go-style: `250ms`, `30s`, `5m`, `1h30m`, `2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parse a Go-style duration.
    pub fn parse(s: &str) -> std::result::Result<HumanDuration, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty duration".into());
        }
        let mut total = Duration::ZERO;
        let mut rest = s;
        while !rest.is_empty() {
            let n_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
            let (num, tail) = rest.split_at(n_end);
            let num: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
            let u_end = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(u_end);
            let secs = match unit {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                "w" => 7.0 * 86400.0,
                other => return Err(format!("invalid duration unit {other:?} in {s:?}")),
            };
            // `try_` and `checked_`: a duration past `Duration`'s range is an error, not a
            // panic.
            total = Duration::try_from_secs_f64(num * secs)
                .ok()
                .and_then(|part| total.checked_add(part))
                .ok_or_else(|| format!("duration {s:?} is too long"))?;
            rest = tail;
        }
        Ok(HumanDuration(total))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let d = self.0;
        let text = if d.subsec_nanos() != 0 {
            format!("{}ms", d.as_millis())
        } else {
            let mut secs = d.as_secs();
            let mut out = String::new();
            for (unit, len) in [("h", 3600), ("m", 60), ("s", 1)] {
                if secs >= len {
                    out.push_str(&format!("{}{unit}", secs / len));
                    secs %= len;
                }
            }
            if out.is_empty() {
                out.push_str("0s");
            }
            out
        };
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        HumanDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() -> std::result::Result<(), String> {
        assert_eq!(ByteSize::parse("64MiB")?.0, 64 * 1024 * 1024);
        assert_eq!(ByteSize::parse("10kb")?.0, 10_000);
        assert_eq!(ByteSize::parse("4096")?.0, 4096);
        assert!(ByteSize::parse("12 parsecs").is_err());
        assert_eq!(HumanDuration::parse("1h30m")?.0, Duration::from_secs(5400));
        assert_eq!(HumanDuration::parse("250ms")?.0, Duration::from_millis(250));
        assert!(HumanDuration::parse("5").is_err());
        // Past `Duration`'s range: an error, never a panic.
        assert!(HumanDuration::parse("99999999999999999999999s").is_err());
        assert!(HumanDuration::parse("18446744073709551615s18446744073709551615s").is_err());
        Ok(())
    }

    #[test]
    fn default_round_trips_through_json() -> Result<(), serde_json::Error> {
        let config = StorageConfig::default();
        let text = serde_json::to_string(&config)?;
        let back: StorageConfig = serde_json::from_str(&text)?;
        assert_eq!(back, config);
        assert!(config.validate().is_ok());
        Ok(())
    }

    #[test]
    fn s3_section_parses() -> Result<(), serde_json::Error> {
        let config: StorageConfig = serde_json::from_str(
            r#"{"object_store":{"type":"s3","bucket":"logs","endpoint":"http://127.0.0.1:9000","allow_http":true},
                "wal":{"fsync":false,"segment_size":"16MiB"},"head":{"max_age":"2m"}}"#,
        )?;
        match &config.object_store {
            ObjectStoreConfig::S3(s3) => {
                assert_eq!(s3.bucket, "logs");
                assert!(s3.allow_http && s3.path_style);
                assert_eq!(s3.region, "us-east-1");
            }
            other => panic!("expected s3, got {other:?}"),
        }
        assert!(!config.wal.fsync);
        assert_eq!(config.wal.segment_size.0, 16 * 1024 * 1024);
        assert_eq!(config.head.max_age.0, Duration::from_secs(120));
        Ok(())
    }
}
