//! Push body decoding: Loki protobuf (snappy block compressed) and Loki JSON, optionally
//! gzip- or deflate-compressed. Produces raw streams (labels still as text); validation is
//! the next step (`validate.rs`).
//!
//! ```text
//!  Content-Encoding: gzip|deflate ──► inflate ─┐
//!                                             ▼
//!  Content-Type: application/x-protobuf ──► snappy block ──► prost PushRequest ─┐
//!  Content-Type: application/json (or none) ──► serde_json PushBody ────────────┴─► Vec<RawStream>
//! ```

use std::io::Read;

use serde::Deserialize;

/// Largest decompressed body we accept (bytes), to keep a bad request from exhausting memory.
pub const MAX_DECOMPRESSED_BYTES: usize = 256 << 20;

/// One stream as it arrived: the label string (`{a="b"}`) or a label map, and entries.
#[derive(Debug, Clone, PartialEq)]
pub struct RawStream {
    /// Labels as received.
    pub labels: RawLabels,
    /// Entries as received.
    pub entries: Vec<RawEntry>,
}

/// Labels as received.
#[derive(Debug, Clone, PartialEq)]
pub enum RawLabels {
    /// Protobuf: Prometheus text form `{a="b", c="d"}`.
    Text(String),
    /// JSON: a map.
    Map(Vec<(String, String)>),
}

/// One entry as received.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEntry {
    /// Timestamp in ns.
    pub ts_ns: i64,
    /// The line.
    pub line: String,
    /// Structured metadata.
    pub metadata: Vec<(String, String)>,
}

/// Why a body could not be decoded (always a 400).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Unknown content type.
    #[error("unsupported Content-Type {0:?}: use application/x-protobuf or application/json")]
    ContentType(String),
    /// Unknown content encoding.
    #[error("unsupported Content-Encoding {0:?}: use gzip, deflate or none")]
    ContentEncoding(String),
    /// Decompression failed.
    #[error("cannot decompress body: {0}")]
    Decompress(String),
    /// Body too large after decompression.
    #[error("decompressed body exceeds {MAX_DECOMPRESSED_BYTES} bytes")]
    TooLarge,
    /// Snappy failed.
    #[error("cannot snappy-decode protobuf body: {0}")]
    Snappy(String),
    /// Protobuf failed.
    #[error("cannot decode protobuf push request: {0}")]
    Protobuf(String),
    /// JSON failed.
    #[error("cannot parse JSON push request: {0}")]
    Json(String),
}

/// Loki's push protobuf (`pkg/push/push.proto`), declared with prost derives so no protoc is
/// needed at build time. Lines and labels are `bytes` so invalid UTF-8 is repaired instead of
/// failing the whole request.
mod proto {
    /// `logproto.PushRequest`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        /// Streams.
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<Stream>,
    }

    /// `logproto.StreamAdapter`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Stream {
        /// Prometheus-style label string.
        #[prost(bytes = "vec", tag = "1")]
        pub labels: Vec<u8>,
        /// Entries.
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<Entry>,
        /// Hash (ignored).
        #[prost(uint64, tag = "3")]
        pub hash: u64,
    }

    /// `logproto.EntryAdapter`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        /// Timestamp.
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        /// The line.
        #[prost(bytes = "vec", tag = "2")]
        pub line: Vec<u8>,
        /// Structured metadata.
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPair>,
    }

    /// `google.protobuf.Timestamp`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Timestamp {
        /// Seconds.
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        /// Nanoseconds.
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    /// `logproto.LabelPairAdapter`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        /// Name.
        #[prost(bytes = "vec", tag = "1")]
        pub name: Vec<u8>,
        /// Value.
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
}

fn utf8(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Undo `Content-Encoding`.
pub fn decompress(body: &[u8], encoding: Option<&str>) -> Result<Option<Vec<u8>>, DecodeError> {
    let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
    let reader: Box<dyn Read> = match encoding.as_deref() {
        None | Some("") | Some("identity") => return Ok(None),
        Some("gzip") | Some("x-gzip") => Box::new(flate2::read::MultiGzDecoder::new(body)),
        Some("deflate") => {
            // HTTP "deflate" is zlib-wrapped; some clients send raw deflate.
            if body.first().is_some_and(|b| b & 0x0f == 8) {
                Box::new(flate2::read::ZlibDecoder::new(body))
            } else {
                Box::new(flate2::read::DeflateDecoder::new(body))
            }
        }
        Some(other) => return Err(DecodeError::ContentEncoding(other.to_string())),
    };
    let mut out = Vec::with_capacity(body.len() * 4);
    reader
        .take(MAX_DECOMPRESSED_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Decompress(e.to_string()))?;
    if out.len() > MAX_DECOMPRESSED_BYTES {
        return Err(DecodeError::TooLarge);
    }
    Ok(Some(out))
}

/// Decode a push body by content type (after `decompress`).
pub fn decode(body: &[u8], content_type: Option<&str>) -> Result<Vec<RawStream>, DecodeError> {
    let ct = content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        "application/x-protobuf" | "application/protobuf" => decode_protobuf(body),
        "" | "application/json" | "text/json" => decode_json(body),
        other => Err(DecodeError::ContentType(other.to_string())),
    }
}

/// Snappy block + protobuf.
pub fn decode_protobuf(body: &[u8]) -> Result<Vec<RawStream>, DecodeError> {
    let len = snap::raw::decompress_len(body).map_err(|e| DecodeError::Snappy(e.to_string()))?;
    if len > MAX_DECOMPRESSED_BYTES {
        return Err(DecodeError::TooLarge);
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| DecodeError::Snappy(e.to_string()))?;
    let req = <proto::PushRequest as prost::Message>::decode(raw.as_slice())
        .map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    Ok(req
        .streams
        .into_iter()
        .map(|s| RawStream {
            labels: RawLabels::Text(utf8(s.labels)),
            entries: s
                .entries
                .into_iter()
                .map(|e| {
                    let ts_ns = e
                        .timestamp
                        .map(|t| {
                            t.seconds
                                .saturating_mul(1_000_000_000)
                                .saturating_add(i64::from(t.nanos))
                        })
                        .unwrap_or(0);
                    RawEntry {
                        ts_ns,
                        line: utf8(e.line),
                        metadata: e
                            .structured_metadata
                            .into_iter()
                            .map(|p| (utf8(p.name), utf8(p.value)))
                            .collect(),
                    }
                })
                .collect(),
        })
        .collect())
}

#[derive(Deserialize)]
struct JsonBody {
    #[serde(default)]
    streams: Vec<JsonStream>,
}

#[derive(Deserialize)]
struct JsonStream {
    #[serde(default)]
    stream: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    values: Vec<JsonEntry>,
}

/// `["<ns>", "line"]` or `["<ns>", "line", {"k": "v"}]`.
struct JsonEntry(RawEntry);

impl<'de> Deserialize<'de> for JsonEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an entry [\"<unix ns>\", \"<line>\", {optional metadata}]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonEntry, A::Error> {
                let ts: TsValue = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::custom("entry without timestamp"))?;
                let line: String = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::custom("entry without line"))?;
                let meta: Option<serde_json::Map<String, serde_json::Value>> =
                    seq.next_element()?;
                if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(A::Error::custom("entry has more than 3 elements"));
                }
                let metadata = match meta {
                    None => Vec::new(),
                    Some(m) => m
                        .into_iter()
                        .map(|(k, v)| match v {
                            serde_json::Value::String(s) => Ok((k, s)),
                            other => Err(A::Error::custom(format!(
                                "structured metadata value of {k:?} must be a string, got {other}"
                            ))),
                        })
                        .collect::<Result<_, _>>()?,
                };
                Ok(JsonEntry(RawEntry {
                    ts_ns: ts.0,
                    line,
                    metadata,
                }))
            }
        }
        d.deserialize_seq(V)
    }
}

/// A timestamp given as a decimal string of ns (Loki's form) or a JSON integer.
struct TsValue(i64);

impl<'de> Deserialize<'de> for TsValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s.trim().parse::<i64>().map(TsValue).map_err(|_| {
                D::Error::custom(format!("invalid timestamp {s:?}: want unix nanoseconds"))
            }),
            serde_json::Value::Number(n) => n.as_i64().map(TsValue).ok_or_else(|| {
                D::Error::custom(format!("invalid timestamp {n}: want unix nanoseconds"))
            }),
            other => Err(D::Error::custom(format!("invalid timestamp {other}"))),
        }
    }
}

/// Loki JSON.
pub fn decode_json(body: &[u8]) -> Result<Vec<RawStream>, DecodeError> {
    let parsed: JsonBody =
        serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))?;
    parsed
        .streams
        .into_iter()
        .map(|s| {
            let labels = s
                .stream
                .into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(v) => Ok((k, v)),
                    other => Err(DecodeError::Json(format!(
                        "label {k:?} must be a string, got {other}"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(RawStream {
                labels: RawLabels::Map(labels),
                entries: s.values.into_iter().map(|e| e.0).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn json_with_metadata_and_numeric_timestamp() -> Result<(), DecodeError> {
        let body = br#"{"streams":[{"stream":{"job":"a"},"values":[["5","x"],[6,"y",{"trace_id":"t1"}]]}]}"#;
        let s = decode_json(body)?;
        assert_eq!(s.len(), 1);
        assert_eq!(
            s[0].labels,
            RawLabels::Map(vec![("job".into(), "a".into())])
        );
        assert_eq!(
            s[0].entries[0],
            RawEntry {
                ts_ns: 5,
                line: "x".into(),
                metadata: vec![]
            }
        );
        assert_eq!(
            s[0].entries[1].metadata,
            vec![("trace_id".to_string(), "t1".to_string())]
        );
        Ok(())
    }

    #[test]
    fn malformed_json_is_an_error() {
        assert!(
            decode_json(b"{\"streams\":[{\"stream\":{},\"values\":[[\"x\",\"y\"]]}]}").is_err()
        );
        assert!(decode_json(b"{\"streams\":[{\"stream\":{\"a\":1},\"values\":[]}]}").is_err());
        assert!(decode_json(b"not json").is_err());
        assert!(decode_json(b"{\"streams\":[{\"values\":[[\"1\",\"a\",{},4]]}]}").is_err());
    }

    #[test]
    fn gzip_round_trip() -> Result<(), Box<dyn std::error::Error>> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"hello")?;
        let gz = enc.finish()?;
        assert_eq!(decompress(&gz, Some("gzip"))?, Some(b"hello".to_vec()));
        assert_eq!(decompress(b"plain", None)?, None);
        assert!(decompress(b"nope", Some("br")).is_err());
        assert!(decompress(b"not gzip", Some("gzip")).is_err());
        Ok(())
    }

    #[test]
    fn protobuf_garbage_is_an_error() {
        assert!(decode_protobuf(b"\xff\xff\xff\xff").is_err());
        let snapped = snap::raw::Encoder::new()
            .compress_vec(b"\x0a\xff\xff\xff\xff\x0f")
            .unwrap_or_default();
        assert!(decode_protobuf(&snapped).is_err());
    }

    #[test]
    fn real_promtail_requests_decode() -> Result<(), Box<dyn std::error::Error>> {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/promtail");
        let mut total = 0;
        for i in 1..=3 {
            let body = std::fs::read(dir.join(format!("req-{i:03}.bin")))?;
            let streams = decode(&body, Some("application/x-protobuf"))?;
            assert!(!streams.is_empty());
            for s in &streams {
                assert!(matches!(&s.labels, RawLabels::Text(t) if t.starts_with('{')));
                total += s.entries.len();
            }
        }
        assert!(total > 0);
        Ok(())
    }
}
