//! OTLP/HTTP logs (`POST /otlp/v1/logs`): decode an `ExportLogsServiceRequest` (protobuf or
//! OTLP/JSON) and map it onto Loki streams the way Grafana Loki's default OTLP configuration
//! does. The result is a list of [`RawStream`]s that take the same validation, limits and WAL
//! path as a Loki push ([`super::Ingester::push_streams`]).
//!
//! ```text
//!  ResourceLogs ── resource attributes ─┬─ Loki's default index list ──► stream labels
//!   │                                   └─ the others ─────────────────► structured metadata
//!   └─ ScopeLogs ── scope name/version/attributes ─────────────────────► structured metadata
//!       └─ LogRecord ── body ──────────────────────────────────────────► the line
//!                    ── attributes, severity, trace/span id, flags ────► structured metadata
//!                    ── time_unix_nano (else observed time, else now) ─► the timestamp
//! ```
//!
//! Attribute names are normalised as Loki does (every character outside `[a-zA-Z0-9_]` becomes
//! `_`, a leading digit gets `key_`, a single leading `_` gets `key`); a map value is flattened
//! into one pair per leaf, its keys joined with `_`; other non-string values are rendered as
//! Loki renders them (JSON for arrays, base64 for bytes).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;

use super::decode::{RawEntry, RawLabels, RawStream};
use super::validate::LEVEL_KEYS;

/// The subset of the OpenTelemetry protocol this endpoint reads, declared with prost derives.
/// Written by hand, as `decode.rs` does for Loki's push.proto: the `opentelemetry-proto` crate
/// generates its types with tonic (gRPC services we do not serve) and needs protoc or a large
/// generated tree; these few messages are all the logs signal needs. Field numbers are those of
/// `opentelemetry/proto/{collector/logs,logs,common,resource}/v1/*.proto`; fields we do not use
/// (schema URLs, entity refs, `event_name`) are skipped by prost as unknown fields.
pub mod proto {
    /// `opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportLogsServiceRequest {
        /// Logs grouped by resource.
        #[prost(message, repeated, tag = "1")]
        pub resource_logs: Vec<ResourceLogs>,
    }

    /// `opentelemetry.proto.collector.logs.v1.ExportLogsServiceResponse`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportLogsServiceResponse {
        /// Set only when some records were rejected.
        #[prost(message, optional, tag = "1")]
        pub partial_success: Option<ExportLogsPartialSuccess>,
    }

    /// `opentelemetry.proto.collector.logs.v1.ExportLogsPartialSuccess`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportLogsPartialSuccess {
        /// Records not stored.
        #[prost(int64, tag = "1")]
        pub rejected_log_records: i64,
        /// Why.
        #[prost(string, tag = "2")]
        pub error_message: String,
    }

    /// `google.rpc.Status`: the body of an OTLP/HTTP error response.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        /// gRPC status code.
        #[prost(int32, tag = "1")]
        pub code: i32,
        /// Developer-facing message.
        #[prost(string, tag = "2")]
        pub message: String,
    }

    /// `opentelemetry.proto.logs.v1.ResourceLogs`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceLogs {
        /// The resource.
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        /// Logs grouped by instrumentation scope.
        #[prost(message, repeated, tag = "2")]
        pub scope_logs: Vec<ScopeLogs>,
    }

    /// `opentelemetry.proto.resource.v1.Resource`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        /// Attributes.
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
        /// Attributes the sender dropped.
        #[prost(uint32, tag = "2")]
        pub dropped_attributes_count: u32,
    }

    /// `opentelemetry.proto.logs.v1.ScopeLogs`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeLogs {
        /// The instrumentation scope.
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        /// Records.
        #[prost(message, repeated, tag = "2")]
        pub log_records: Vec<LogRecord>,
    }

    /// `opentelemetry.proto.common.v1.InstrumentationScope`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        /// Name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Version.
        #[prost(string, tag = "2")]
        pub version: String,
        /// Attributes.
        #[prost(message, repeated, tag = "3")]
        pub attributes: Vec<KeyValue>,
        /// Attributes the sender dropped.
        #[prost(uint32, tag = "4")]
        pub dropped_attributes_count: u32,
    }

    /// `opentelemetry.proto.logs.v1.LogRecord`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LogRecord {
        /// Event time (ns since the epoch; 0 = unknown).
        #[prost(fixed64, tag = "1")]
        pub time_unix_nano: u64,
        /// `SeverityNumber` enum value (0 = unspecified).
        #[prost(int32, tag = "2")]
        pub severity_number: i32,
        /// Severity as the source wrote it.
        #[prost(string, tag = "3")]
        pub severity_text: String,
        /// The body.
        #[prost(message, optional, tag = "5")]
        pub body: Option<AnyValue>,
        /// Attributes.
        #[prost(message, repeated, tag = "6")]
        pub attributes: Vec<KeyValue>,
        /// Attributes the sender dropped.
        #[prost(uint32, tag = "7")]
        pub dropped_attributes_count: u32,
        /// W3C trace flags in the low 8 bits.
        #[prost(fixed32, tag = "8")]
        pub flags: u32,
        /// 16 bytes, or empty.
        #[prost(bytes = "vec", tag = "9")]
        pub trace_id: Vec<u8>,
        /// 8 bytes, or empty.
        #[prost(bytes = "vec", tag = "10")]
        pub span_id: Vec<u8>,
        /// When the collector saw it (ns since the epoch; 0 = unknown).
        #[prost(fixed64, tag = "11")]
        pub observed_time_unix_nano: u64,
    }

    /// `opentelemetry.proto.common.v1.KeyValue`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        /// Key.
        #[prost(string, tag = "1")]
        pub key: String,
        /// Value (absent = empty).
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    /// `opentelemetry.proto.common.v1.AnyValue`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        /// The value; `None` is the empty value.
        #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4, 5, 6, 7")]
        pub value: Option<any_value::Value>,
    }

    /// The `AnyValue.value` oneof.
    pub mod any_value {
        /// One of the kinds of value.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            /// A string.
            #[prost(string, tag = "1")]
            StringValue(String),
            /// A boolean.
            #[prost(bool, tag = "2")]
            BoolValue(bool),
            /// A signed integer.
            #[prost(int64, tag = "3")]
            IntValue(i64),
            /// A double.
            #[prost(double, tag = "4")]
            DoubleValue(f64),
            /// An array.
            #[prost(message, tag = "5")]
            ArrayValue(super::ArrayValue),
            /// A map.
            #[prost(message, tag = "6")]
            KvlistValue(super::KeyValueList),
            /// Raw bytes.
            #[prost(bytes = "vec", tag = "7")]
            BytesValue(Vec<u8>),
        }
    }

    /// `opentelemetry.proto.common.v1.ArrayValue`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ArrayValue {
        /// Elements.
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<AnyValue>,
    }

    /// `opentelemetry.proto.common.v1.KeyValueList`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValueList {
        /// Entries.
        #[prost(message, repeated, tag = "1")]
        pub values: Vec<KeyValue>,
    }
}

use proto::any_value::Value;

/// Resource attributes Loki's default `otlp_config` stores as index labels (normalised names);
/// every other resource attribute becomes structured metadata.
pub const INDEX_LABEL_ATTRIBUTES: [&str; 18] = [
    "service.name",
    "service.namespace",
    "service.instance.id",
    "deployment.environment",
    "deployment.environment.name",
    "cloud.region",
    "cloud.availability_zone",
    "k8s.cluster.name",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.container.name",
    "container.name",
    "k8s.replicaset.name",
    "k8s.deployment.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.cronjob.name",
    "k8s.job.name",
];

/// The two encodings of an OTLP/HTTP body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/x-protobuf`
    Protobuf,
    /// `application/json` (OTLP/JSON)
    Json,
}

impl Format {
    /// The format a `Content-Type` names, or `None` if it is neither (answer 415).
    pub fn from_content_type(content_type: Option<&str>) -> Option<Format> {
        let ct = content_type?
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match ct.as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Format::Protobuf),
            "application/json" => Some(Format::Json),
            _ => None,
        }
    }

    /// The `Content-Type` of answers in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// Why an OTLP body could not be read (always a 400).
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// Protobuf failed.
    #[error("cannot decode protobuf ExportLogsServiceRequest: {0}")]
    Protobuf(String),
    /// JSON failed.
    #[error("cannot parse OTLP/JSON ExportLogsServiceRequest: {0}")]
    Json(String),
    /// A field holds an impossible value.
    #[error("invalid log record: {0}")]
    Invalid(String),
}

/// Decode a (decompressed) request body.
pub fn decode(body: &[u8], format: Format) -> Result<proto::ExportLogsServiceRequest, OtlpError> {
    match format {
        Format::Protobuf => <proto::ExportLogsServiceRequest as prost::Message>::decode(body)
            .map_err(|e| OtlpError::Protobuf(e.to_string())),
        Format::Json => {
            let parsed: json::Request =
                serde_json::from_slice(body).map_err(|e| OtlpError::Json(e.to_string()))?;
            parsed.into_proto()
        }
    }
}

/// The body of a successful answer: an `ExportLogsServiceResponse`, with `partial_success`
/// when `rejected` records were not stored.
pub fn success_body(format: Format, rejected: usize, message: &str) -> Vec<u8> {
    let partial = (rejected > 0).then(|| proto::ExportLogsPartialSuccess {
        rejected_log_records: i64::try_from(rejected).unwrap_or(i64::MAX),
        error_message: message.to_string(),
    });
    match format {
        Format::Protobuf => prost::Message::encode_to_vec(&proto::ExportLogsServiceResponse {
            partial_success: partial,
        }),
        Format::Json => match partial {
            None => b"{}".to_vec(),
            // OTLP/JSON: camelCase names, int64 as a decimal string.
            Some(p) => serde_json::json!({"partialSuccess": {
                "rejectedLogRecords": p.rejected_log_records.to_string(),
                "errorMessage": p.error_message,
            }})
            .to_string()
            .into_bytes(),
        },
    }
}

/// The body of an error answer: a `google.rpc.Status` with gRPC `code` and `message`.
pub fn status_body(format: Format, code: i32, message: &str) -> Vec<u8> {
    match format {
        Format::Protobuf => prost::Message::encode_to_vec(&proto::Status {
            code,
            message: message.to_string(),
        }),
        Format::Json => serde_json::json!({"code": code, "message": message})
            .to_string()
            .into_bytes(),
    }
}

/// The settings of the mapping that come from `limits_config`.
#[derive(Debug, Clone, Copy)]
pub struct MapOptions<'a> {
    /// `limits_config.discover_service_name`: index labels that stand in for a missing
    /// `service.name` (none, and no `unknown_service` either, when empty).
    pub discover_service_name: &'a [String],
    /// `limits_config.discover_log_levels`: derive `detected_level` from the severity number.
    pub discover_log_levels: bool,
    /// Now, in ns: the timestamp of records with neither time set.
    pub now_ns: i64,
}

/// Map a request onto Loki streams (one per distinct label set), as Loki's default OTLP
/// configuration does. Fails on trace or span ids of the wrong length.
pub fn to_streams(
    req: proto::ExportLogsServiceRequest,
    opts: &MapOptions<'_>,
) -> Result<Vec<RawStream>, OtlpError> {
    let mut streams: BTreeMap<Vec<(String, String)>, Vec<RawEntry>> = BTreeMap::new();
    for rl in req.resource_logs {
        let resource = rl.resource.unwrap_or_default();
        let (labels, resource_metadata) = resource_labels(&resource.attributes, opts);
        let stream = streams.entry(labels).or_default();
        for sl in rl.scope_logs {
            let scope = sl.scope.unwrap_or_default();
            let mut scope_metadata = Vec::new();
            for kv in &scope.attributes {
                flatten(&kv.key, kv.value.as_ref(), "", &mut scope_metadata);
            }
            if !scope.name.is_empty() {
                scope_metadata.push(("scope_name".to_string(), scope.name));
            }
            if !scope.version.is_empty() {
                scope_metadata.push(("scope_version".to_string(), scope.version));
            }
            if scope.dropped_attributes_count != 0 {
                scope_metadata.push((
                    "scope_dropped_attributes_count".to_string(),
                    scope.dropped_attributes_count.to_string(),
                ));
            }
            for record in sl.log_records {
                let mut entry = record_entry(record, opts)?;
                entry.metadata.extend(resource_metadata.iter().cloned());
                entry.metadata.extend(scope_metadata.iter().cloned());
                stream.push(entry);
            }
        }
    }
    Ok(streams
        .into_iter()
        .filter(|(_, entries)| !entries.is_empty())
        .map(|(labels, entries)| RawStream {
            labels: RawLabels::Map(labels),
            entries,
        })
        .collect())
}

/// Name/value pairs, as [`RawLabels::Map`] and [`RawEntry::metadata`] hold them.
type Pairs = Vec<(String, String)>;

/// Stream labels (sorted) and the structured metadata of one resource.
fn resource_labels(attributes: &[proto::KeyValue], opts: &MapOptions<'_>) -> (Pairs, Pairs) {
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    let mut metadata = Vec::new();
    let discover = !opts.discover_service_name.is_empty();
    let mut has_service_name = attributes
        .iter()
        .any(|kv| kv.key == "service.name" && !as_string(kv.value.as_ref()).is_empty());
    for kv in attributes {
        if !INDEX_LABEL_ATTRIBUTES.contains(&kv.key.as_str()) {
            flatten(&kv.key, kv.value.as_ref(), "", &mut metadata);
            continue;
        }
        let mut pairs = Vec::new();
        flatten(&kv.key, kv.value.as_ref(), "", &mut pairs);
        for (name, value) in pairs {
            // Loki: without a `service.name`, the first index label (in attribute order) named
            // in `discover_service_name` gives `service_name`.
            if !has_service_name && discover && opts.discover_service_name.contains(&name) {
                labels.insert("service_name".to_string(), value.clone());
                has_service_name = true;
            }
            labels.insert(name, value);
        }
    }
    if !has_service_name && discover {
        labels.insert("service_name".to_string(), "unknown_service".to_string());
    }
    // An empty value is no label at all (Prometheus semantics).
    labels.retain(|_, v| !v.is_empty());
    (labels.into_iter().collect(), metadata)
}

/// One record as an entry (its own metadata only; resource and scope metadata are added by the
/// caller).
fn record_entry(record: proto::LogRecord, opts: &MapOptions<'_>) -> Result<RawEntry, OtlpError> {
    let mut metadata = Vec::with_capacity(record.attributes.len() + 8);
    for kv in &record.attributes {
        flatten(&kv.key, kv.value.as_ref(), "", &mut metadata);
    }
    let time = clamp_ns(record.time_unix_nano);
    let observed = clamp_ns(record.observed_time_unix_nano);
    // When the event time is missing the observed time is the timestamp, so it is not repeated.
    if time != 0 && observed != 0 {
        metadata.push(("observed_timestamp".to_string(), observed.to_string()));
    }
    if record.severity_number != 0 {
        metadata.push((
            "severity_number".to_string(),
            record.severity_number.to_string(),
        ));
    }
    if !record.severity_text.is_empty() {
        metadata.push(("severity_text".to_string(), record.severity_text));
    }
    if record.dropped_attributes_count != 0 {
        metadata.push((
            "dropped_attributes_count".to_string(),
            record.dropped_attributes_count.to_string(),
        ));
    }
    if record.flags != 0 {
        metadata.push(("flags".to_string(), record.flags.to_string()));
    }
    if let Some(id) = trace_hex(&record.trace_id, 16, "trace_id")? {
        metadata.push(("trace_id".to_string(), id));
    }
    if let Some(id) = trace_hex(&record.span_id, 8, "span_id")? {
        metadata.push(("span_id".to_string(), id));
    }
    // Loki's level detection reads a level label or field first, then the OTLP severity
    // number, then the line; the first and last are the validator's, the middle one is here.
    if opts.discover_log_levels
        && record.severity_number != 0
        && !metadata
            .iter()
            .any(|(k, _)| k == "detected_level" || LEVEL_KEYS.contains(&k.as_str()))
    {
        metadata.push((
            "detected_level".to_string(),
            severity_level(record.severity_number).to_string(),
        ));
    }
    let ts_ns = if time != 0 {
        time
    } else if observed != 0 {
        observed
    } else {
        opts.now_ns
    };
    Ok(RawEntry {
        ts_ns,
        line: as_string(record.body.as_ref()),
        metadata,
    })
}

fn clamp_ns(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

/// Lower-case hex of a trace or span id; `None` when empty or all zeros (an invalid id).
fn trace_hex(id: &[u8], len: usize, what: &str) -> Result<Option<String>, OtlpError> {
    if id.is_empty() {
        return Ok(None);
    }
    if id.len() != len {
        return Err(OtlpError::Invalid(format!(
            "{what} must be {len} bytes, got {}",
            id.len()
        )));
    }
    if id.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    Ok(Some(hex::encode(id)))
}

/// Loki's level for an OTLP severity number (ranges of four per level).
pub fn severity_level(n: i32) -> &'static str {
    match n {
        0 => "unknown",
        i32::MIN..=-1 | 1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => "unknown",
    }
}

/// Loki's attribute name normalisation (Prometheus' OTLP label rule).
pub fn normalize_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    } else if out.starts_with('_') && !out.starts_with("__") {
        out.insert_str(0, "key");
    }
    out
}

/// Push `key → value` as normalised pairs: one per leaf of a map (keys joined with `_`), the
/// value rendered as a string otherwise. Attributes without a name carry nothing and are left
/// out.
fn flatten(
    key: &str,
    value: Option<&proto::AnyValue>,
    prefix: &str,
    out: &mut Vec<(String, String)>,
) {
    if key.is_empty() && prefix.is_empty() {
        return;
    }
    let name = if prefix.is_empty() {
        normalize_name(key)
    } else {
        normalize_name(&format!("{prefix}_{key}"))
    };
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::KvlistValue(list)) => {
            for kv in &list.values {
                flatten(&kv.key, kv.value.as_ref(), &name, out);
            }
        }
        _ => out.push((name, as_string(value))),
    }
}

/// A value as Loki renders it: strings as they are, numbers and booleans in decimal, bytes in
/// base64, maps and arrays as JSON (map keys sorted), the empty value as "".
pub fn as_string(value: Option<&proto::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => format_double(*d),
        Some(Value::BytesValue(b)) => base64::engine::general_purpose::STANDARD.encode(b),
        Some(v @ (Value::ArrayValue(_) | Value::KvlistValue(_))) => {
            let mut out = String::new();
            write_json(Some(v), &mut out);
            out
        }
    }
}

/// A double as JavaScript (and Go's JSON encoder) prints it: the shortest decimal that reads
/// back the same, in exponent form below 1e-6 and from 1e21 on.
fn format_double(d: f64) -> String {
    if !d.is_finite() {
        return if d.is_nan() {
            "NaN".to_string()
        } else if d > 0.0 {
            "+Inf".to_string()
        } else {
            "-Inf".to_string()
        };
    }
    let abs = d.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{d:e}");
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        }
    } else {
        format!("{d}")
    }
}

/// JSON of a value as Go's encoder writes it for Loki: map keys sorted, `<`, `>` and `&`
/// escaped. Hand-written because serde_json writes doubles differently (`1.0` for `1`) and
/// does not escape HTML characters, so lines would not match what Loki stores.
fn write_json(value: Option<&Value>, out: &mut String) {
    match value {
        None => out.push_str("null"),
        Some(Value::StringValue(s)) => write_json_string(s, out),
        Some(Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Value::IntValue(i)) => out.push_str(&i.to_string()),
        Some(Value::DoubleValue(d)) => {
            if d.is_finite() {
                out.push_str(&format_double(*d));
            } else {
                out.push_str("null");
            }
        }
        Some(Value::BytesValue(b)) => {
            write_json_string(&base64::engine::general_purpose::STANDARD.encode(b), out)
        }
        Some(Value::ArrayValue(a)) => {
            out.push('[');
            for (i, v) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(v.value.as_ref(), out);
            }
            out.push(']');
        }
        Some(Value::KvlistValue(list)) => {
            // Later duplicates win, as in a Go map.
            let sorted: BTreeMap<&str, Option<&Value>> = list
                .values
                .iter()
                .map(|kv| {
                    (
                        kv.key.as_str(),
                        kv.value.as_ref().and_then(|v| v.value.as_ref()),
                    )
                })
                .collect();
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(k, out);
                out.push(':');
                write_json(v, out);
            }
            out.push('}');
        }
    }
}

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// OTLP/JSON: the protobuf JSON mapping (lowerCamelCase names, the proto names accepted too;
/// 64-bit integers as strings or numbers; enums as integers; trace and span ids as hex; bytes
/// as base64). Unknown fields are ignored, as the OTLP spec requires.
mod json {
    use super::*;

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct Request {
        #[serde(default, alias = "resource_logs")]
        resource_logs: Vec<ResourceLogs>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ResourceLogs {
        #[serde(default)]
        resource: Option<Resource>,
        #[serde(default, alias = "scope_logs")]
        scope_logs: Vec<ScopeLogs>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Resource {
        #[serde(default)]
        attributes: Vec<KeyValue>,
        #[serde(default, alias = "dropped_attributes_count")]
        dropped_attributes_count: Int<u32>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ScopeLogs {
        #[serde(default)]
        scope: Option<Scope>,
        #[serde(default, alias = "log_records")]
        log_records: Vec<LogRecord>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Scope {
        #[serde(default)]
        name: String,
        #[serde(default)]
        version: String,
        #[serde(default)]
        attributes: Vec<KeyValue>,
        #[serde(default, alias = "dropped_attributes_count")]
        dropped_attributes_count: Int<u32>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct LogRecord {
        #[serde(default, alias = "time_unix_nano")]
        time_unix_nano: Int<u64>,
        #[serde(default, alias = "observed_time_unix_nano")]
        observed_time_unix_nano: Int<u64>,
        #[serde(default, alias = "severity_number")]
        severity_number: Int<i32>,
        #[serde(default, alias = "severity_text")]
        severity_text: String,
        #[serde(default)]
        body: Option<AnyValue>,
        #[serde(default)]
        attributes: Vec<KeyValue>,
        #[serde(default, alias = "dropped_attributes_count")]
        dropped_attributes_count: Int<u32>,
        #[serde(default)]
        flags: Int<u32>,
        #[serde(default, alias = "trace_id")]
        trace_id: String,
        #[serde(default, alias = "span_id")]
        span_id: String,
    }

    #[derive(Deserialize)]
    struct KeyValue {
        #[serde(default)]
        key: String,
        #[serde(default)]
        value: Option<AnyValue>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct AnyValue {
        #[serde(default, alias = "string_value")]
        string_value: Option<String>,
        #[serde(default, alias = "bool_value")]
        bool_value: Option<bool>,
        #[serde(default, alias = "int_value")]
        int_value: Option<Int<i64>>,
        #[serde(default, alias = "double_value")]
        double_value: Option<Double>,
        #[serde(default, alias = "array_value")]
        array_value: Option<ArrayValue>,
        #[serde(default, alias = "kvlist_value")]
        kvlist_value: Option<KeyValueList>,
        #[serde(default, alias = "bytes_value")]
        bytes_value: Option<String>,
    }

    #[derive(Deserialize)]
    struct ArrayValue {
        #[serde(default)]
        values: Vec<AnyValue>,
    }

    #[derive(Deserialize)]
    struct KeyValueList {
        #[serde(default)]
        values: Vec<KeyValue>,
    }

    /// An integer written as a JSON number or a decimal string (the proto3 JSON mapping of
    /// 64-bit integers, accepted for every width).
    #[derive(Default)]
    struct Int<T>(T);

    impl<'de, T> Deserialize<'de> for Int<T>
    where
        T: TryFrom<i128> + Default,
    {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            use serde::de::Error;
            let wide: i128 = match serde_json::Value::deserialize(d)? {
                serde_json::Value::Null => return Ok(Int(T::default())),
                serde_json::Value::Number(n) => {
                    if let Some(i) = n.as_i64() {
                        i128::from(i)
                    } else if let Some(u) = n.as_u64() {
                        i128::from(u)
                    } else {
                        return Err(D::Error::custom(format!("{n} is not an integer")));
                    }
                }
                serde_json::Value::String(s) => s
                    .trim()
                    .parse::<i128>()
                    .map_err(|_| D::Error::custom(format!("{s:?} is not an integer")))?,
                other => return Err(D::Error::custom(format!("{other} is not an integer"))),
            };
            T::try_from(wide)
                .map(Int)
                .map_err(|_| D::Error::custom(format!("integer {wide} is out of range")))
        }
    }

    /// A double as a JSON number, or `"NaN"`, `"Infinity"`, `"-Infinity"` or a decimal string.
    struct Double(f64);

    impl<'de> Deserialize<'de> for Double {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            use serde::de::Error;
            match serde_json::Value::deserialize(d)? {
                serde_json::Value::Number(n) => n
                    .as_f64()
                    .map(Double)
                    .ok_or_else(|| D::Error::custom(format!("{n} is not a double"))),
                serde_json::Value::String(s) => match s.as_str() {
                    "NaN" => Ok(Double(f64::NAN)),
                    "Infinity" => Ok(Double(f64::INFINITY)),
                    "-Infinity" => Ok(Double(f64::NEG_INFINITY)),
                    other => other
                        .trim()
                        .parse::<f64>()
                        .map(Double)
                        .map_err(|_| D::Error::custom(format!("{s:?} is not a double"))),
                },
                other => Err(D::Error::custom(format!("{other} is not a double"))),
            }
        }
    }

    fn hex_id(s: &str, what: &str) -> Result<Vec<u8>, OtlpError> {
        hex::decode(s.trim()).map_err(|e| OtlpError::Json(format!("{what} {s:?} is not hex: {e}")))
    }

    impl Request {
        pub(super) fn into_proto(self) -> Result<proto::ExportLogsServiceRequest, OtlpError> {
            let resource_logs = self
                .resource_logs
                .into_iter()
                .map(|rl| {
                    Ok(proto::ResourceLogs {
                        resource: rl
                            .resource
                            .map(|r| {
                                Ok::<_, OtlpError>(proto::Resource {
                                    attributes: key_values(r.attributes)?,
                                    dropped_attributes_count: r.dropped_attributes_count.0,
                                })
                            })
                            .transpose()?,
                        scope_logs: rl
                            .scope_logs
                            .into_iter()
                            .map(|sl| {
                                Ok(proto::ScopeLogs {
                                    scope: sl
                                        .scope
                                        .map(|s| {
                                            Ok::<_, OtlpError>(proto::InstrumentationScope {
                                                name: s.name,
                                                version: s.version,
                                                attributes: key_values(s.attributes)?,
                                                dropped_attributes_count: s
                                                    .dropped_attributes_count
                                                    .0,
                                            })
                                        })
                                        .transpose()?,
                                    log_records: sl
                                        .log_records
                                        .into_iter()
                                        .map(log_record)
                                        .collect::<Result<_, _>>()?,
                                })
                            })
                            .collect::<Result<_, OtlpError>>()?,
                    })
                })
                .collect::<Result<_, OtlpError>>()?;
            Ok(proto::ExportLogsServiceRequest { resource_logs })
        }
    }

    fn log_record(r: LogRecord) -> Result<proto::LogRecord, OtlpError> {
        Ok(proto::LogRecord {
            time_unix_nano: r.time_unix_nano.0,
            severity_number: r.severity_number.0,
            severity_text: r.severity_text,
            body: r.body.map(any_value).transpose()?,
            attributes: key_values(r.attributes)?,
            dropped_attributes_count: r.dropped_attributes_count.0,
            flags: r.flags.0,
            trace_id: hex_id(&r.trace_id, "traceId")?,
            span_id: hex_id(&r.span_id, "spanId")?,
            observed_time_unix_nano: r.observed_time_unix_nano.0,
        })
    }

    fn key_values(kvs: Vec<KeyValue>) -> Result<Vec<proto::KeyValue>, OtlpError> {
        kvs.into_iter()
            .map(|kv| {
                Ok(proto::KeyValue {
                    key: kv.key,
                    value: kv.value.map(any_value).transpose()?,
                })
            })
            .collect()
    }

    fn any_value(v: AnyValue) -> Result<proto::AnyValue, OtlpError> {
        let value = if let Some(s) = v.string_value {
            Some(Value::StringValue(s))
        } else if let Some(b) = v.bool_value {
            Some(Value::BoolValue(b))
        } else if let Some(i) = v.int_value {
            Some(Value::IntValue(i.0))
        } else if let Some(d) = v.double_value {
            Some(Value::DoubleValue(d.0))
        } else if let Some(a) = v.array_value {
            Some(Value::ArrayValue(proto::ArrayValue {
                values: a
                    .values
                    .into_iter()
                    .map(any_value)
                    .collect::<Result<_, _>>()?,
            }))
        } else if let Some(l) = v.kvlist_value {
            Some(Value::KvlistValue(proto::KeyValueList {
                values: key_values(l.values)?,
            }))
        } else if let Some(b) = v.bytes_value {
            Some(Value::BytesValue(
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .map_err(|e| OtlpError::Json(format!("bytesValue is not base64: {e}")))?,
            ))
        } else {
            None
        };
        Ok(proto::AnyValue { value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: Value) -> proto::KeyValue {
        proto::KeyValue {
            key: key.to_string(),
            value: Some(proto::AnyValue { value: Some(value) }),
        }
    }

    fn s(v: &str) -> Value {
        Value::StringValue(v.to_string())
    }

    fn opts(list: &[String]) -> MapOptions<'_> {
        MapOptions {
            discover_service_name: list,
            discover_log_levels: true,
            now_ns: 42,
        }
    }

    #[test]
    fn names_are_normalised_as_loki_does() {
        assert_eq!(normalize_name("http.status_code"), "http_status_code");
        assert_eq!(normalize_name("2xx"), "key_2xx");
        assert_eq!(normalize_name("_private"), "key_private");
        assert_eq!(normalize_name("__meta"), "__meta");
        assert_eq!(normalize_name("naïve-key"), "na_ve_key");
    }

    #[test]
    fn values_render_as_loki_does() {
        let body = proto::AnyValue {
            value: Some(Value::KvlistValue(proto::KeyValueList {
                values: vec![
                    kv("z", Value::DoubleValue(1.0)),
                    kv("a", s("<b>")),
                    kv(
                        "list",
                        Value::ArrayValue(proto::ArrayValue {
                            values: vec![
                                proto::AnyValue {
                                    value: Some(Value::IntValue(-3)),
                                },
                                proto::AnyValue { value: None },
                                proto::AnyValue {
                                    value: Some(Value::BytesValue(b"hi".to_vec())),
                                },
                            ],
                        }),
                    ),
                ],
            })),
        };
        assert_eq!(
            as_string(Some(&body)),
            r#"{"a":"\u003cb\u003e","list":[-3,null,"aGk="],"z":1}"#
        );
        assert_eq!(format_double(0.5), "0.5");
        assert_eq!(format_double(1e21), "1e+21");
        assert_eq!(format_double(1e-7), "1e-7");
        assert_eq!(format_double(123456.0), "123456");
        assert_eq!(as_string(None), "");
    }

    #[test]
    fn resource_record_and_scope_are_mapped() -> Result<(), OtlpError> {
        let list = vec!["container_name".to_string()];
        let req = proto::ExportLogsServiceRequest {
            resource_logs: vec![proto::ResourceLogs {
                resource: Some(proto::Resource {
                    attributes: vec![
                        kv("service.name", s("api")),
                        kv("k8s.pod.name", s("api-0")),
                        kv("host.name", s("node-1")),
                        kv(
                            "process",
                            Value::KvlistValue(proto::KeyValueList {
                                values: vec![kv("pid", Value::IntValue(7))],
                            }),
                        ),
                    ],
                    dropped_attributes_count: 0,
                }),
                scope_logs: vec![proto::ScopeLogs {
                    scope: Some(proto::InstrumentationScope {
                        name: "lib".into(),
                        version: "1.2".into(),
                        attributes: vec![kv("scope.attr", Value::BoolValue(true))],
                        dropped_attributes_count: 0,
                    }),
                    log_records: vec![
                        proto::LogRecord {
                            time_unix_nano: 0,
                            observed_time_unix_nano: 1000,
                            severity_number: 17,
                            severity_text: "ERROR".into(),
                            body: Some(proto::AnyValue {
                                value: Some(s("boom")),
                            }),
                            attributes: vec![kv("user.id", s("u1"))],
                            dropped_attributes_count: 0,
                            flags: 1,
                            trace_id: vec![0xab; 16],
                            span_id: vec![0x01; 8],
                        },
                        proto::LogRecord {
                            time_unix_nano: 5,
                            observed_time_unix_nano: 6,
                            attributes: vec![kv("level", s("debug"))],
                            severity_number: 9,
                            ..Default::default()
                        },
                        proto::LogRecord::default(),
                    ],
                }],
            }],
        };
        let streams = to_streams(req, &opts(&list))?;
        assert_eq!(streams.len(), 1);
        assert_eq!(
            streams[0].labels,
            RawLabels::Map(vec![
                ("k8s_pod_name".into(), "api-0".into()),
                ("service_name".into(), "api".into()),
            ])
        );
        let e = &streams[0].entries;
        assert_eq!((e[0].ts_ns, e[0].line.as_str()), (1000, "boom"));
        let md = |i: usize, k: &str| {
            e[i].metadata
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(md(0, "user_id").as_deref(), Some("u1"));
        assert_eq!(md(0, "severity_number").as_deref(), Some("17"));
        assert_eq!(md(0, "severity_text").as_deref(), Some("ERROR"));
        assert_eq!(md(0, "detected_level").as_deref(), Some("error"));
        assert_eq!(md(0, "flags").as_deref(), Some("1"));
        assert_eq!(md(0, "trace_id"), Some("ab".repeat(16)));
        assert_eq!(md(0, "span_id"), Some("01".repeat(8)));
        assert_eq!(md(0, "host_name").as_deref(), Some("node-1"));
        assert_eq!(md(0, "process_pid").as_deref(), Some("7"));
        assert_eq!(md(0, "scope_name").as_deref(), Some("lib"));
        assert_eq!(md(0, "scope_version").as_deref(), Some("1.2"));
        assert_eq!(md(0, "scope_attr").as_deref(), Some("true"));
        assert_eq!(md(0, "observed_timestamp"), None);
        // A level field wins over the severity number: the validator detects it later.
        assert_eq!(md(1, "detected_level"), None);
        assert_eq!(md(1, "observed_timestamp").as_deref(), Some("6"));
        assert_eq!(e[1].ts_ns, 5);
        assert_eq!((e[2].ts_ns, e[2].line.as_str()), (42, ""));
        Ok(())
    }

    #[test]
    fn service_name_is_discovered_or_unknown() {
        let list = vec!["container_name".to_string()];
        let (labels, _) = resource_labels(&[kv("container.name", s("web"))], &opts(&list));
        assert!(labels.contains(&("service_name".into(), "web".into())));
        let (labels, _) = resource_labels(&[kv("team", s("x"))], &opts(&list));
        assert_eq!(
            labels,
            vec![("service_name".to_string(), "unknown_service".to_string())]
        );
        let (labels, md) = resource_labels(&[kv("team", s("x"))], &opts(&[]));
        assert!(labels.is_empty());
        assert_eq!(md, vec![("team".to_string(), "x".to_string())]);
    }

    #[test]
    fn bad_ids_and_bodies_are_errors() {
        let rec = proto::LogRecord {
            trace_id: vec![1; 3],
            ..Default::default()
        };
        assert!(record_entry(rec, &opts(&[])).is_err());
        assert!(decode(b"\xff\xff\xff", Format::Protobuf).is_err());
        assert!(decode(
            b"{\"resourceLogs\":[{\"scopeLogs\":[{\"logRecords\":[{\"traceId\":\"zz\"}]}]}]}",
            Format::Json
        )
        .is_err());
        assert!(decode(b"[1,2]", Format::Json).is_err());
    }

    #[test]
    fn json_decodes_like_protobuf() -> Result<(), OtlpError> {
        let body = br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
            "scopeLogs":[{"scope":{"name":"s"},"logRecords":[{"timeUnixNano":"1700000000000000001","severityNumber":13,
            "body":{"kvlistValue":{"values":[{"key":"n","value":{"intValue":"5"}}]}},
            "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
            "attributes":[{"key":"b","value":{"bytesValue":"aGk="}},{"key":"d","value":{"doubleValue":2.5}}]}]}]}]}"#;
        let req = decode(body, Format::Json)?;
        let rec = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(rec.time_unix_nano, 1_700_000_000_000_000_001);
        assert_eq!(rec.severity_number, 13);
        assert_eq!(rec.trace_id.len(), 16);
        let round = prost::Message::encode_to_vec(&req);
        assert_eq!(decode(&round, Format::Protobuf)?, req);
        let streams = to_streams(req, &opts(&[]))?;
        let e = &streams[0].entries[0];
        assert_eq!(e.line, r#"{"n":5}"#);
        assert!(e
            .metadata
            .contains(&("trace_id".into(), "5b8efff798038103d269b633813fc60c".into())));
        assert!(e.metadata.contains(&("b".into(), "aGk=".into())));
        assert!(e.metadata.contains(&("d".into(), "2.5".into())));
        assert!(e
            .metadata
            .contains(&("detected_level".into(), "warn".into())));
        Ok(())
    }
}
