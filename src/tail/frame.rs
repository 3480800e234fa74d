//! Tail frames as Loki writes them.
//!
//! `/loki/api/v1/tail` (v1, what logcli and Grafana read as `loghttp.TailResponse`):
//!
//! ```text
//! {"streams":[{"stream":{…},"values":[["<ns>","line"(,{categories})],…]},…]
//!  (,"dropped_entries":[{"timestamp":"<ns>","labels":{…}},…])   only when some were dropped
//!  (,"encodingFlags":["categorize-labels"])}                      only when asked for
//! ```
//!
//! `/api/prom/tail` (legacy, Go's default encoding of Loki's legacy types):
//!
//! ```text
//! {"streams":[{"labels":"{a=\"b\"}","entries":[{"ts":"<RFC3339Nano>","line":"…"}]}],
//!  "dropped_entries":null|[{"Timestamp":"<RFC3339Nano>","Labels":"{a=\"b\"}"}]}
//! ```
//!
//! Consecutive entries with the same labels share one stream object, so a frame keeps the
//! order entries were sent in (Loki sends one stream object per entry; clients read both).
//! Written by hand into one `String`: a frame is rebuilt for every 100 entries of every tail,
//! and going through `serde_json::Value` would allocate a tree per entry.

use std::sync::Arc;

use crate::query::encode::Categories;

/// One entry after the query's pipeline, ready for a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct TailEntry {
    /// Timestamp, ns.
    pub ts_ns: i64,
    /// Line after the pipeline.
    pub line: String,
    /// Final labels, sorted by name (shared by the entries of a stream).
    pub labels: Arc<Vec<(String, String)>>,
    /// Structured metadata and parsed labels (categorize-labels only).
    pub categories: Option<Arc<Categories>>,
}

/// An entry a slow client did not get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedEntry {
    /// Timestamp, ns.
    pub ts_ns: i64,
    /// Its labels, sorted by name.
    pub labels: Vec<(String, String)>,
}

/// Which endpoint's shape to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `/loki/api/v1/tail`; `categorize`: `X-Loki-Response-Encoding-Flags: categorize-labels`.
    V1 {
        /// Write 3-tuples with the label categories, and `encodingFlags`.
        categorize: bool,
    },
    /// `/api/prom/tail`.
    Legacy,
}

/// Encode one frame.
pub fn encode(entries: &[TailEntry], dropped: &[DroppedEntry], format: Format) -> String {
    let bytes: usize = entries.iter().map(|e| e.line.len() + 32).sum();
    let mut out = String::with_capacity(bytes + 64);
    match format {
        Format::V1 { categorize } => encode_v1(&mut out, entries, dropped, categorize),
        Format::Legacy => encode_legacy(&mut out, entries, dropped),
    }
    out
}

/// Runs of consecutive entries with equal labels.
fn runs(entries: &[TailEntry]) -> impl Iterator<Item = &[TailEntry]> {
    entries.chunk_by(|a, b| Arc::ptr_eq(&a.labels, &b.labels) || a.labels == b.labels)
}

fn encode_v1(out: &mut String, entries: &[TailEntry], dropped: &[DroppedEntry], categorize: bool) {
    out.push_str("{\"streams\":[");
    for (i, run) in runs(entries).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"stream\":");
        labels_object(out, &run[0].labels);
        out.push_str(",\"values\":[");
        for (j, e) in run.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str("[\"");
            out.push_str(&e.ts_ns.to_string());
            out.push_str("\",");
            json_string(out, &e.line);
            if categorize {
                out.push(',');
                categories_object(out, e.categories.as_deref());
            }
            out.push(']');
        }
        out.push_str("]}");
    }
    out.push(']');
    if !dropped.is_empty() {
        out.push_str(",\"dropped_entries\":[");
        for (i, d) in dropped.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"timestamp\":\"");
            out.push_str(&d.ts_ns.to_string());
            out.push_str("\",\"labels\":");
            labels_object(out, &d.labels);
            out.push('}');
        }
        out.push(']');
    }
    if categorize {
        out.push_str(",\"encodingFlags\":[\"categorize-labels\"]");
    }
    out.push('}');
}

fn encode_legacy(out: &mut String, entries: &[TailEntry], dropped: &[DroppedEntry]) {
    out.push_str("{\"streams\":[");
    for (i, run) in runs(entries).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"labels\":");
        json_string(out, &labels_string(&run[0].labels));
        out.push_str(",\"entries\":[");
        for (j, e) in run.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str("{\"ts\":\"");
            out.push_str(&rfc3339_nano(e.ts_ns));
            out.push_str("\",\"line\":");
            json_string(out, &e.line);
            out.push('}');
        }
        out.push_str("]}");
    }
    out.push_str("],\"dropped_entries\":");
    if dropped.is_empty() {
        out.push_str("null");
    } else {
        out.push('[');
        for (i, d) in dropped.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"Timestamp\":\"");
            out.push_str(&rfc3339_nano(d.ts_ns));
            out.push_str("\",\"Labels\":");
            json_string(out, &labels_string(&d.labels));
            out.push('}');
        }
        out.push(']');
    }
    out.push('}');
}

fn labels_object(out: &mut String, labels: &[(String, String)]) {
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(out, k);
        out.push(':');
        json_string(out, v);
    }
    out.push('}');
}

fn categories_object(out: &mut String, c: Option<&Categories>) {
    out.push('{');
    if let Some(c) = c {
        let mut first = true;
        if !c.structured_metadata.is_empty() {
            out.push_str("\"structuredMetadata\":");
            labels_object(out, &c.structured_metadata);
            first = false;
        }
        if !c.parsed.is_empty() {
            if !first {
                out.push(',');
            }
            out.push_str("\"parsed\":");
            labels_object(out, &c.parsed);
        }
    }
    out.push('}');
}

/// A JSON string literal (RFC 8259 escaping, as Go's encoder minus its HTML escaping).
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                use std::fmt::Write;
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Prometheus' `labels.String()`: `{a="b", c="d"}` with quoted values.
pub fn labels_string(labels: &[(String, String)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(k);
        out.push('=');
        json_string(&mut out, v);
    }
    out.push('}');
    out
}

/// Go's `time.RFC3339Nano` in UTC: fraction without trailing zeros, none when whole.
fn rfc3339_nano(ts_ns: i64) -> String {
    let secs = ts_ns.div_euclid(1_000_000_000);
    let nanos = ts_ns.rem_euclid(1_000_000_000) as u32;
    let Some(t) = chrono::DateTime::from_timestamp(secs, nanos) else {
        return String::from("0001-01-01T00:00:00Z");
    };
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn entry(ts: i64, line: &str, labels: &Arc<Vec<(String, String)>>) -> TailEntry {
        TailEntry {
            ts_ns: ts,
            line: line.into(),
            labels: Arc::clone(labels),
            categories: None,
        }
    }

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap_or(Value::Null)
    }

    #[test]
    fn v1_frames_group_runs_and_report_drops() {
        let a = Arc::new(vec![("job".to_string(), "a".to_string())]);
        let b = Arc::new(vec![("job".to_string(), "b\"q".to_string())]);
        let entries = [
            entry(1, "one", &a),
            entry(2, "two\n\u{1}", &a),
            entry(3, "three", &b),
        ];
        let frame = encode(&entries, &[], Format::V1 { categorize: false });
        assert_eq!(
            parse(&frame),
            json!({"streams": [
                {"stream": {"job": "a"}, "values": [["1", "one"], ["2", "two\n\u{1}"]]},
                {"stream": {"job": "b\"q"}, "values": [["3", "three"]]}
            ]})
        );
        let dropped = [DroppedEntry {
            ts_ns: 9,
            labels: vec![("job".into(), "a".into())],
        }];
        let frame = encode(&[], &dropped, Format::V1 { categorize: true });
        assert_eq!(
            parse(&frame),
            json!({"streams": [], "dropped_entries": [{"timestamp": "9", "labels": {"job": "a"}}],
                   "encodingFlags": ["categorize-labels"]})
        );
    }

    #[test]
    fn categorized_values_are_triples() {
        let a = Arc::new(vec![("job".to_string(), "a".to_string())]);
        let mut e = entry(5, "x", &a);
        e.categories = Some(Arc::new(Categories {
            structured_metadata: vec![("trace".into(), "t".into())],
            parsed: vec![("level".into(), "error".into())],
        }));
        let plain = entry(6, "y", &a);
        let frame = encode(&[e, plain], &[], Format::V1 { categorize: true });
        assert_eq!(
            parse(&frame),
            json!({"streams": [{"stream": {"job": "a"}, "values": [
                ["5", "x", {"structuredMetadata": {"trace": "t"}, "parsed": {"level": "error"}}],
                ["6", "y", {}]
            ]}], "encodingFlags": ["categorize-labels"]})
        );
    }

    #[test]
    fn legacy_frames_use_go_default_encoding() {
        let a = Arc::new(vec![
            ("job".to_string(), "a".to_string()),
            ("z".to_string(), "q\"".to_string()),
        ]);
        let frame = encode(
            &[entry(1_763_596_800_500_000_000, "l", &a)],
            &[],
            Format::Legacy,
        );
        assert_eq!(
            parse(&frame),
            json!({"streams": [{"labels": "{job=\"a\", z=\"q\\\"\"}", "entries": [
                {"ts": "2025-11-20T00:00:00.5Z", "line": "l"}
            ]}], "dropped_entries": null})
        );
        let dropped = [DroppedEntry {
            ts_ns: 1_763_596_800_000_000_000,
            labels: vec![("job".into(), "a".into())],
        }];
        assert_eq!(
            parse(&encode(&[], &dropped, Format::Legacy)),
            json!({"streams": [], "dropped_entries": [
                {"Timestamp": "2025-11-20T00:00:00Z", "Labels": "{job=\"a\"}"}
            ]})
        );
    }
}
