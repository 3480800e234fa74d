//! Validation of decoded pushes with Loki's rules and messages, plus the label enrichment Loki
//! does at ingest (`service_name` discovery, `detected_level`). Entries that fail are reported
//! one per line (Loki's partial-accept semantics); the rest go on to storage.

use std::collections::HashSet;

use tovlog_storage::{Entry, LabelSet, PushStream};

use super::decode::{RawLabels, RawStream};
use crate::config::LimitsConfig;

/// Why an entry or stream was rejected; the names are the `reason` label of
/// `tovlog_discarded_entries_total` (Loki's `loki_discarded_samples_total` reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Labels could not be parsed or a name is invalid.
    InvalidLabels,
    /// The stream has no labels.
    MissingLabels,
    /// A label name is too long.
    LabelNameTooLong,
    /// A label value is too long.
    LabelValueTooLong,
    /// Too many label names.
    MaxLabelNamesPerSeries,
    /// The same label name twice.
    DuplicateLabelNames,
    /// The line is too long.
    LineTooLong,
    /// Timestamp older than the allowed age.
    TooOld,
    /// Timestamp too far in the future.
    TooNew,
    /// Structured metadata not allowed.
    DisallowedStructuredMetadata,
    /// Structured metadata too large.
    StructuredMetadataTooLarge,
    /// Tenant ingestion rate exceeded.
    RateLimited,
    /// The push would have created a stream beyond the tenant's active stream limit.
    StreamLimit,
    /// The stream's own rate (`per_stream_rate_limit`) exceeded.
    PerStreamRateLimit,
}

impl Reason {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidLabels => "invalid_labels",
            Reason::MissingLabels => "missing_labels",
            Reason::LabelNameTooLong => "label_name_too_long",
            Reason::LabelValueTooLong => "label_value_too_long",
            Reason::MaxLabelNamesPerSeries => "max_label_names_per_series",
            Reason::DuplicateLabelNames => "duplicate_label_names",
            Reason::LineTooLong => "line_too_long",
            Reason::TooOld => "greater_than_max_sample_age",
            Reason::TooNew => "too_far_in_future",
            Reason::DisallowedStructuredMetadata => "disallowed_structured_metadata",
            Reason::StructuredMetadataTooLarge => "structured_metadata_too_large",
            Reason::RateLimited => "rate_limited",
            Reason::StreamLimit => "stream_limit",
            Reason::PerStreamRateLimit => "per_stream_rate_limit",
        }
    }

    /// All reasons, for exposing zero-valued counters.
    pub const ALL: [Reason; 14] = [
        Reason::InvalidLabels,
        Reason::MissingLabels,
        Reason::LabelNameTooLong,
        Reason::LabelValueTooLong,
        Reason::MaxLabelNamesPerSeries,
        Reason::DuplicateLabelNames,
        Reason::LineTooLong,
        Reason::TooOld,
        Reason::TooNew,
        Reason::DisallowedStructuredMetadata,
        Reason::StructuredMetadataTooLarge,
        Reason::RateLimited,
        Reason::StreamLimit,
        Reason::PerStreamRateLimit,
    ];
}

/// One rejection: reason, how many entries it covers, and Loki's message.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// Reason.
    pub reason: Reason,
    /// Entries rejected.
    pub entries: usize,
    /// Message (one line of the 400 body).
    pub message: String,
}

/// The outcome of validating a push.
#[derive(Debug, Default)]
pub struct Validated {
    /// Streams with their valid entries.
    pub streams: Vec<PushStream>,
    /// Rejections, in request order.
    pub rejections: Vec<Rejection>,
    /// Valid entries.
    pub entries: usize,
    /// Bytes of valid lines plus structured metadata (what the rate limit counts).
    pub bytes: usize,
}

/// Is `name` a valid Prometheus label name?
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parse Prometheus label text `{a="b", c="d"}` (Go escapes in values) into pairs in order.
/// Hand-written because it is ten lines of grammar and the LogQL parser must not be on the
/// ingest path.
pub fn parse_label_text(text: &str) -> Result<Vec<(String, String)>, String> {
    let s = text.trim();
    let inner = s
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| "labels must be enclosed in {}".to_string())?;
    let mut out = Vec::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        if !valid_label_name(name) {
            return Err(format!("invalid label name at {:?}", truncate(rest, 32)));
        }
        rest = rest[name_end..].trim_start();
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| format!("expected = after label name {name:?}"))?
            .trim_start();
        rest = rest
            .strip_prefix('"')
            .ok_or_else(|| format!("expected quoted value for label {name:?}"))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = Some(i);
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 't')) => value.push('\t'),
                    Some((_, 'r')) => value.push('\r'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, '\'')) => value.push('\''),
                    Some((_, other)) => {
                        return Err(format!("invalid escape \\{other} in value of {name:?}"))
                    }
                    None => return Err(format!("unterminated value of {name:?}")),
                },
                c => value.push(c),
            }
        }
        let end = end.ok_or_else(|| format!("unterminated value of {name:?}"))?;
        out.push((name.to_string(), value));
        rest = rest[end + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(format!("expected , or }} after value of {name:?}"));
        }
    }
    Ok(out)
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Validates pushes against the limits; owns the enrichment settings.
pub struct Validator<'a> {
    limits: &'a LimitsConfig,
    now_ns: i64,
}

impl<'a> Validator<'a> {
    /// A validator using `now_ns` as the current time.
    pub fn new(limits: &'a LimitsConfig, now_ns: i64) -> Self {
        Validator { limits, now_ns }
    }

    /// Validate and enrich all streams of a push.
    pub fn validate(&self, raw: Vec<RawStream>) -> Validated {
        let mut out = Validated::default();
        for stream in raw {
            self.validate_stream(stream, &mut out);
        }
        out
    }

    fn reject(out: &mut Validated, reason: Reason, entries: usize, message: String) {
        out.rejections.push(Rejection {
            reason,
            entries,
            message,
        });
    }

    fn validate_stream(&self, stream: RawStream, out: &mut Validated) {
        let n = stream.entries.len();
        let (pairs, text) = match stream.labels {
            RawLabels::Text(t) => match parse_label_text(&t) {
                Ok(p) => (p, t),
                Err(e) => {
                    Self::reject(
                        out,
                        Reason::InvalidLabels,
                        n,
                        format!("error parsing labels '{t}' with error: {e}"),
                    );
                    return;
                }
            },
            RawLabels::Map(m) => {
                let text = LabelSet::new(m.clone()).to_string();
                (m, text)
            }
        };
        if pairs.is_empty() {
            Self::reject(
                out,
                Reason::MissingLabels,
                n,
                "error at least one label pair is required per stream".into(),
            );
            return;
        }
        let l = self.limits;
        let mut seen = HashSet::with_capacity(pairs.len());
        for (name, value) in &pairs {
            if !valid_label_name(name) {
                Self::reject(
                    out,
                    Reason::InvalidLabels,
                    n,
                    format!(
                        "error parsing labels '{text}' with error: invalid label name {name:?}"
                    ),
                );
                return;
            }
            if !seen.insert(name.as_str()) {
                Self::reject(
                    out,
                    Reason::DuplicateLabelNames,
                    n,
                    format!("stream '{text}' has duplicate label name: '{name}'"),
                );
                return;
            }
            if name.len() > l.max_label_name_length {
                Self::reject(
                    out,
                    Reason::LabelNameTooLong,
                    n,
                    format!("stream '{text}' has label name too long: '{name}'"),
                );
                return;
            }
            if value.len() > l.max_label_value_length {
                Self::reject(
                    out,
                    Reason::LabelValueTooLong,
                    n,
                    format!("stream '{text}' has label value too long: '{value}'"),
                );
                return;
            }
        }
        if pairs.len() > l.max_label_names_per_series {
            Self::reject(
                out,
                Reason::MaxLabelNamesPerSeries,
                n,
                format!(
                    "stream '{text}' has {} label names; limit {}",
                    pairs.len(),
                    l.max_label_names_per_series
                ),
            );
            return;
        }
        let mut labels = pairs;
        self.discover_service_name(&mut labels);
        let labels = LabelSet::new(labels);
        let text = labels.to_string();

        let max_future = self
            .now_ns
            .saturating_add(l.creation_grace_period.as_nanos() as i64);
        let min_ts = if l.reject_old_samples {
            self.now_ns
                .saturating_sub(l.reject_old_samples_max_age.as_nanos() as i64)
        } else {
            i64::MIN
        };
        let mut entries = Vec::with_capacity(n);
        for mut e in stream.entries {
            if e.line.len() as u64 > l.max_line_size && l.max_line_size > 0 {
                if l.max_line_size_truncate {
                    let mut cut = l.max_line_size as usize;
                    while !e.line.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    e.line.truncate(cut);
                } else {
                    Self::reject(
                        out,
                        Reason::LineTooLong,
                        1,
                        format!(
                            "max entry size '{}' bytes exceeded for stream '{text}' while adding an entry with length '{}' bytes",
                            l.max_line_size,
                            e.line.len()
                        ),
                    );
                    continue;
                }
            }
            if e.ts_ns > max_future {
                Self::reject(
                    out,
                    Reason::TooNew,
                    1,
                    format!(
                        "entry for stream '{text}' has timestamp too new: {}",
                        rfc3339(e.ts_ns)
                    ),
                );
                continue;
            }
            if e.ts_ns < min_ts {
                Self::reject(
                    out,
                    Reason::TooOld,
                    1,
                    format!(
                        "entry for stream '{text}' has timestamp too old: {}, oldest acceptable timestamp is: {}",
                        rfc3339(e.ts_ns),
                        rfc3339(min_ts)
                    ),
                );
                continue;
            }
            if !e.metadata.is_empty() {
                if !l.allow_structured_metadata {
                    Self::reject(
                        out,
                        Reason::DisallowedStructuredMetadata,
                        1,
                        format!("stream '{text}' includes structured metadata, but this feature is disallowed. Please see `limits_config.allow_structured_metadata` or contact your administrator to enable it."),
                    );
                    continue;
                }
                let size: usize = e.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
                if size as u64 > l.max_structured_metadata_size
                    || e.metadata.len() > l.max_structured_metadata_entries_count
                {
                    Self::reject(
                        out,
                        Reason::StructuredMetadataTooLarge,
                        1,
                        format!(
                            "stream '{text}' has structured metadata too large: '{size}' bytes in {} entries, limit: '{}' bytes and {} entries",
                            e.metadata.len(),
                            l.max_structured_metadata_size,
                            l.max_structured_metadata_entries_count
                        ),
                    );
                    continue;
                }
                if let Some((name, _)) = e.metadata.iter().find(|(k, _)| !valid_label_name(k)) {
                    Self::reject(
                        out,
                        Reason::InvalidLabels,
                        1,
                        format!("stream '{text}' has invalid structured metadata name: '{name}'"),
                    );
                    continue;
                }
            }
            if l.discover_log_levels && !e.metadata.iter().any(|(k, _)| k == "detected_level") {
                let level = detect_level(&labels, &e.metadata, &e.line);
                e.metadata
                    .push(("detected_level".to_string(), level.to_string()));
            }
            let entry = Entry {
                ts_ns: e.ts_ns,
                line: e.line,
                metadata: e.metadata,
            };
            out.bytes += super::rate::entry_bytes(&entry);
            entries.push(entry);
        }
        if !entries.is_empty() {
            out.entries += entries.len();
            out.streams.push(PushStream { labels, entries });
        }
    }

    /// Loki's `discover_service_name`: copy the first present listed label into `service_name`,
    /// or `unknown_service` when none is present.
    fn discover_service_name(&self, labels: &mut Vec<(String, String)>) {
        let list = &self.limits.discover_service_name;
        if list.is_empty() || labels.iter().any(|(k, _)| k == "service_name") {
            return;
        }
        let found = list.iter().find_map(|want| {
            labels
                .iter()
                .find(|(k, v)| k == want && !v.is_empty())
                .map(|(_, v)| v.clone())
        });
        labels.push((
            "service_name".to_string(),
            found.unwrap_or_else(|| "unknown_service".to_string()),
        ));
    }
}

fn rfc3339(ts_ns: i64) -> String {
    chrono::DateTime::from_timestamp(
        ts_ns.div_euclid(1_000_000_000),
        ts_ns.rem_euclid(1_000_000_000) as u32,
    )
    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    .unwrap_or_else(|| ts_ns.to_string())
}

/// The fields a level is looked for in (Loki's `log_level_fields`).
pub const LEVEL_KEYS: [&str; 9] = [
    "level", "LEVEL", "Level", "severity", "SEVERITY", "Severity", "lvl", "LVL", "Lvl",
];

/// Loki's `discover_log_levels`: a level label or metadata field, a level field in a JSON or
/// logfmt line, or a level keyword in the text; `unknown` otherwise.
pub fn detect_level(labels: &LabelSet, metadata: &[(String, String)], line: &str) -> &'static str {
    for key in LEVEL_KEYS {
        if let Some(v) = labels.get(key).or_else(|| {
            metadata
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        }) {
            return normalize_level(v);
        }
    }
    let trimmed = line.trim_start();
    if trimmed.starts_with('{') {
        if let Ok(serde_json::Value::Object(map)) =
            serde_json::from_str::<serde_json::Value>(trimmed)
        {
            for key in LEVEL_KEYS {
                if let Some(serde_json::Value::String(v)) = map.get(key) {
                    return normalize_level(v);
                }
            }
        }
    } else {
        for key in LEVEL_KEYS {
            let pat = format!("{key}=");
            if let Some(pos) = line.find(&pat) {
                let at_word_start = pos == 0 || line.as_bytes()[pos - 1] == b' ';
                if at_word_start {
                    let rest = line[pos + pat.len()..].trim_start_matches('"');
                    let end = rest.find([' ', '"']).unwrap_or(rest.len());
                    return normalize_level(&rest[..end]);
                }
            }
        }
    }
    keyword_level(line)
}

fn normalize_level(v: &str) -> &'static str {
    match v.to_ascii_lowercase().as_str() {
        "trace" | "trc" => "trace",
        "debug" | "dbg" => "debug",
        "info" | "inf" | "information" | "notice" => "info",
        "warn" | "warning" | "wrn" => "warn",
        "error" | "err" | "eror" => "error",
        "critical" | "crit" => "critical",
        "fatal" | "panic" => "fatal",
        _ => "unknown",
    }
}

fn keyword_level(line: &str) -> &'static str {
    let has = |word: &str| {
        let bytes = line.as_bytes();
        memchr_word(bytes, word.as_bytes())
            || memchr_word(bytes, word.to_ascii_lowercase().as_bytes())
    };
    if has("TRACE") {
        "trace"
    } else if has("DEBUG") {
        "debug"
    } else if has("INFO") {
        "info"
    } else if has("WARN") || has("WARNING") {
        "warn"
    } else if has("ERROR") || has("ERR") {
        "error"
    } else if has("CRITICAL") {
        "critical"
    } else if has("FATAL") {
        "fatal"
    } else {
        "unknown"
    }
}

fn memchr_word(hay: &[u8], word: &[u8]) -> bool {
    let mut start = 0;
    while let Some(pos) = hay
        .get(start..)
        .and_then(|h| h.windows(word.len()).position(|w| w == word))
    {
        let i = start + pos;
        let before_ok = i == 0 || !hay[i - 1].is_ascii_alphanumeric();
        let after = i + word.len();
        let after_ok = after >= hay.len() || !hay[after].is_ascii_alphanumeric();
        if before_ok && after_ok {
            return true;
        }
        start = i + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::decode::RawEntry;

    fn raw(labels: &str, lines: &[(i64, &str)]) -> RawStream {
        RawStream {
            labels: RawLabels::Text(labels.to_string()),
            entries: lines
                .iter()
                .map(|(t, l)| RawEntry {
                    ts_ns: *t,
                    line: l.to_string(),
                    metadata: vec![],
                })
                .collect(),
        }
    }

    fn limits() -> LimitsConfig {
        LimitsConfig {
            discover_service_name: vec![],
            discover_log_levels: false,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn label_text_parses_with_escapes() -> Result<(), String> {
        let p = parse_label_text(r#"{job="a", msg="say \"hi\"\n", x_1 = "" }"#)?;
        assert_eq!(
            p,
            vec![
                ("job".into(), "a".into()),
                ("msg".into(), "say \"hi\"\n".into()),
                ("x_1".into(), "".into())
            ]
        );
        assert_eq!(parse_label_text("{}")?, vec![]);
        assert!(parse_label_text("{a=b}").is_err());
        assert!(parse_label_text("{1a=\"b\"}").is_err());
        assert!(parse_label_text("{a=\"b\"").is_err());
        Ok(())
    }

    #[test]
    fn partial_accept_keeps_good_entries() {
        let l = LimitsConfig {
            max_line_size: 10,
            ..limits()
        };
        let v = Validator::new(&l, 1_000).validate(vec![raw(
            "{job=\"a\"}",
            &[(1, "ok"), (2, "this line is too long")],
        )]);
        assert_eq!(v.entries, 1);
        assert_eq!(v.rejections.len(), 1);
        assert_eq!(v.rejections[0].reason, Reason::LineTooLong);
        assert!(v.rejections[0]
            .message
            .contains("max entry size '10' bytes exceeded"));
    }

    #[test]
    fn bad_streams_are_rejected_with_loki_messages() {
        let l = limits();
        let v = Validator::new(&l, 0).validate(vec![
            raw("{}", &[(1, "x")]),
            raw("{a=\"1\", a=\"2\"}", &[(1, "x")]),
            raw("not labels", &[(1, "x")]),
        ]);
        assert_eq!(v.entries, 0);
        let reasons: Vec<_> = v.rejections.iter().map(|r| r.reason).collect();
        assert_eq!(
            reasons,
            vec![
                Reason::MissingLabels,
                Reason::DuplicateLabelNames,
                Reason::InvalidLabels
            ]
        );
    }

    #[test]
    fn too_many_labels_and_future_entries() {
        let l = limits();
        let many: Vec<String> = (0..16).map(|i| format!("l{i}=\"v\"")).collect();
        let text = format!("{{{}}}", many.join(","));
        let now = 1_000_000_000_000;
        let v = Validator::new(&l, now).validate(vec![
            raw(&text, &[(1, "x")]),
            raw(
                "{a=\"b\"}",
                &[(now + 3_600_000_000_000, "future"), (now, "now")],
            ),
        ]);
        assert_eq!(v.entries, 1);
        assert_eq!(v.rejections[0].reason, Reason::MaxLabelNamesPerSeries);
        assert_eq!(v.rejections[1].reason, Reason::TooNew);
    }

    #[test]
    fn service_name_is_discovered() {
        let l = LimitsConfig {
            discover_log_levels: false,
            ..LimitsConfig::default()
        };
        let v = Validator::new(&l, 10).validate(vec![
            raw("{job=\"api\"}", &[(1, "x")]),
            raw("{foo=\"1\"}", &[(1, "x")]),
        ]);
        assert_eq!(v.streams[0].labels.get("service_name"), Some("api"));
        assert_eq!(
            v.streams[1].labels.get("service_name"),
            Some("unknown_service")
        );
    }

    #[test]
    fn levels_are_detected() {
        let ls = LabelSet::new(vec![("job".into(), "a".into())]);
        assert_eq!(
            detect_level(&ls, &[], r#"{"level":"WARNING","x":1}"#),
            "warn"
        );
        assert_eq!(detect_level(&ls, &[], "ts=1 level=error msg=boom"), "error");
        assert_eq!(detect_level(&ls, &[], "2025 INFO started"), "info");
        assert_eq!(detect_level(&ls, &[], "nothing here"), "unknown");
        assert_eq!(
            detect_level(&ls, &[("severity".into(), "debug".into())], "x"),
            "debug"
        );
    }
}
