//! Loki's JSON encoding of query results: `streams`, `matrix`, `vector` and `scalar`
//! bodies, Prometheus-style number formatting and Loki's timestamp conventions.
//!
//! Everything here is pure; the engine hands over finished result structures and gets
//! the `data.result` part (and the rest of the envelope) back as `serde_json::Value`.

use serde_json::{Map, Number, Value};

use tovlog_logql::eval;

use super::stats::QueryStats;

/// One log entry ready for encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedEntry {
    /// Timestamp, ns.
    pub ts_ns: i64,
    /// The (possibly rewritten) line.
    pub line: String,
    /// Index into [`StreamResult::categories`] (categorize-labels only).
    pub category: u32,
}

/// The structured-metadata and parsed labels of entries (categorize-labels mode).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Categories {
    /// Structured metadata labels, sorted by name.
    pub structured_metadata: Vec<(String, String)>,
    /// Parsed labels (including `__error__`), sorted by name.
    pub parsed: Vec<(String, String)>,
}

/// One result stream: its final label set and its entries in output order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamResult {
    /// Final labels sorted by name.
    pub labels: Vec<(String, String)>,
    /// Entries in the order of the query direction.
    pub entries: Vec<EncodedEntry>,
    /// Distinct categorisations referenced by the entries (categorize-labels only).
    pub categories: Vec<Categories>,
}

/// Format a float as Go's `strconv.FormatFloat(v, 'f', -1, 64)` does (what Prometheus
/// and Loki put in sample value strings): shortest round-trip digits, no exponent,
/// `NaN`, `+Inf`, `-Inf`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    if v == 0.0 {
        // Go prints negative zero as "-0".
        return if v.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // Rust's `Display` for f64 prints the shortest round-trip digits without an
    // exponent, which is exactly Go's 'f' format with precision -1.
    format!("{v}")
}

/// A timestamp in ns as the JSON number of seconds Loki writes in matrices and vectors:
/// an integer when whole, otherwise a float with millisecond precision (Prometheus'
/// model time is in ms).
pub fn seconds_number(ts_ns: i64) -> Number {
    let ms = ts_ns.div_euclid(1_000_000);
    if ms % 1000 == 0 {
        Number::from(ms / 1000)
    } else {
        // `ms` fits an f64 exactly for any realistic timestamp; the division gives the
        // shortest float that prints as Go's JSON encoder does (e.g. 1763596860.5).
        Number::from_f64(ms as f64 / 1000.0).unwrap_or_else(|| Number::from(ms / 1000))
    }
}

/// `{name: value, …}` from sorted pairs.
pub fn labels_object(labels: &[(String, String)]) -> Value {
    let mut m = Map::new();
    for (k, v) in labels {
        m.insert(k.clone(), Value::String(v.clone()));
    }
    Value::Object(m)
}

/// The `result` array of a `streams` response.
pub fn streams_result(streams: &[StreamResult], categorize: bool) -> Value {
    let mut out = Vec::with_capacity(streams.len());
    for s in streams {
        // The categorisation objects are shared by many entries: build each once.
        let cats: Vec<Value> = if categorize {
            s.categories
                .iter()
                .map(|c| {
                    let mut m = Map::new();
                    if !c.structured_metadata.is_empty() {
                        m.insert(
                            "structuredMetadata".to_owned(),
                            labels_object(&c.structured_metadata),
                        );
                    }
                    if !c.parsed.is_empty() {
                        m.insert("parsed".to_owned(), labels_object(&c.parsed));
                    }
                    Value::Object(m)
                })
                .collect()
        } else {
            Vec::new()
        };
        let values: Vec<Value> = s
            .entries
            .iter()
            .map(|e| {
                let mut tuple = vec![
                    Value::String(e.ts_ns.to_string()),
                    Value::String(e.line.clone()),
                ];
                if categorize {
                    tuple.push(
                        cats.get(e.category as usize)
                            .cloned()
                            .unwrap_or_else(|| Value::Object(Map::new())),
                    );
                }
                Value::Array(tuple)
            })
            .collect();
        let mut obj = Map::new();
        obj.insert("stream".to_owned(), labels_object(&s.labels));
        obj.insert("values".to_owned(), Value::Array(values));
        out.push(Value::Object(obj));
    }
    Value::Array(out)
}

/// `[<seconds>, "<value>"]`.
fn sample(ts_ns: i64, v: f64) -> Value {
    Value::Array(vec![
        Value::Number(seconds_number(ts_ns)),
        Value::String(format_value(v)),
    ])
}

/// Compare label sets the way Prometheus orders series in a matrix.
fn cmp_labels(a: &[(String, String)], b: &[(String, String)]) -> std::cmp::Ordering {
    a.cmp(b)
}

/// The `(resultType, result)` of a metric query. Range queries always answer with a
/// `matrix` (a scalar becomes one series without labels); instant queries with a
/// `vector`, or a `scalar` whose timestamp Loki writes in milliseconds.
pub fn metric_result(value: &eval::Value, instant: bool) -> (&'static str, Value) {
    match (value, instant) {
        (eval::Value::Scalar(points), false) => {
            let values = points.iter().map(|&(t, v)| sample(t, v)).collect();
            let mut obj = Map::new();
            obj.insert("metric".to_owned(), Value::Object(Map::new()));
            obj.insert("values".to_owned(), Value::Array(values));
            ("matrix", Value::Array(vec![Value::Object(obj)]))
        }
        (eval::Value::Scalar(points), true) => {
            let (t, v) = points.last().copied().unwrap_or((0, f64::NAN));
            let ms = t.div_euclid(1_000_000);
            (
                "scalar",
                Value::Array(vec![
                    Value::Number(Number::from(ms)),
                    Value::String(format_value(v)),
                ]),
            )
        }
        (eval::Value::Vector(series), false) => {
            let mut sorted: Vec<&eval::Series> =
                series.iter().filter(|s| !s.points.is_empty()).collect();
            sorted.sort_by(|a, b| cmp_labels(&a.labels, &b.labels));
            let result = sorted
                .into_iter()
                .map(|s| {
                    let mut obj = Map::new();
                    obj.insert("metric".to_owned(), labels_object(&s.labels));
                    obj.insert(
                        "values".to_owned(),
                        Value::Array(s.points.iter().map(|&(t, v)| sample(t, v)).collect()),
                    );
                    Value::Object(obj)
                })
                .collect();
            ("matrix", Value::Array(result))
        }
        (eval::Value::Vector(series), true) => {
            // Eval's order is kept: `sort`/`topk` define it for instant vectors.
            let result = series
                .iter()
                .filter_map(|s| {
                    let &(t, v) = s.points.last()?;
                    let mut obj = Map::new();
                    obj.insert("metric".to_owned(), labels_object(&s.labels));
                    obj.insert("value".to_owned(), sample(t, v));
                    Some(Value::Object(obj))
                })
                .collect();
            ("vector", Value::Array(result))
        }
    }
}

/// The full success body: `{"status":"success","data":{resultType, [encodingFlags], result, stats}}`.
pub fn envelope(result_type: &str, result: Value, categorize: bool, stats: &QueryStats) -> Value {
    let mut data = Map::new();
    data.insert(
        "resultType".to_owned(),
        Value::String(result_type.to_owned()),
    );
    if categorize {
        data.insert(
            "encodingFlags".to_owned(),
            Value::Array(vec![Value::String("categorize-labels".to_owned())]),
        );
    }
    data.insert("result".to_owned(), result);
    data.insert("stats".to_owned(), stats.to_json());
    let mut body = Map::new();
    body.insert("status".to_owned(), Value::String("success".to_owned()));
    body.insert("data".to_owned(), Value::Object(data));
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_format_like_go() {
        assert_eq!(format_value(7.0), "7");
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(format_value(-2.25), "-2.25");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(format_value(1.0 / 3.0), "0.3333333333333333");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(123456.789), "123456.789");
    }

    #[test]
    fn timestamps_are_integer_seconds_when_whole() {
        assert_eq!(
            serde_json::to_string(&seconds_number(1_763_596_860_000_000_000)).unwrap(),
            "1763596860"
        );
        assert_eq!(
            serde_json::to_string(&seconds_number(1_763_596_860_500_000_000)).unwrap(),
            "1763596860.5"
        );
        assert_eq!(
            serde_json::to_string(&seconds_number(4_000_000_000_000_000_000)).unwrap(),
            "4000000000"
        );
    }

    #[test]
    fn range_scalar_becomes_matrix_and_instant_scalar_uses_ms() {
        let v = eval::Value::Scalar(vec![
            (1_000_000_000_000_000_000, 7.0),
            (1_000_000_600_000_000_000, 7.0),
        ]);
        let (t, r) = metric_result(&v, false);
        assert_eq!(t, "matrix");
        assert_eq!(
            r,
            json!([{"metric": {}, "values": [[1000000000, "7"], [1000000600, "7"]]}])
        );
        let v = eval::Value::Scalar(vec![(1_763_604_000_000_000_000, 7.0)]);
        let (t, r) = metric_result(&v, true);
        assert_eq!(t, "scalar");
        assert_eq!(r, json!([1763604000000_i64, "7"]));
    }

    #[test]
    fn vectors_and_matrices() {
        let series = vec![
            eval::Series {
                labels: vec![("host".into(), "b".into())],
                points: vec![(2_000_000_000, 1.5)],
            },
            eval::Series {
                labels: vec![("host".into(), "a".into())],
                points: vec![(1_000_000_000, 2.0), (2_000_000_000, f64::INFINITY)],
            },
            eval::Series {
                labels: vec![("host".into(), "c".into())],
                points: vec![],
            },
        ];
        let v = eval::Value::Vector(series);
        let (t, r) = metric_result(&v, false);
        assert_eq!(t, "matrix");
        assert_eq!(
            r,
            json!([
                {"metric": {"host": "a"}, "values": [[1, "2"], [2, "+Inf"]]},
                {"metric": {"host": "b"}, "values": [[2, "1.5"]]}
            ])
        );
        let (t, r) = metric_result(&v, true);
        assert_eq!(t, "vector");
        assert_eq!(
            r,
            json!([
                {"metric": {"host": "b"}, "value": [2, "1.5"]},
                {"metric": {"host": "a"}, "value": [2, "+Inf"]}
            ])
        );
    }

    #[test]
    fn streams_plain_and_categorized() {
        let s = StreamResult {
            labels: vec![("job".into(), "a".into()), ("trace_id".into(), "t1".into())],
            entries: vec![
                EncodedEntry {
                    ts_ns: 2,
                    line: "two".into(),
                    category: 0,
                },
                EncodedEntry {
                    ts_ns: 1,
                    line: "one".into(),
                    category: 1,
                },
            ],
            categories: vec![
                Categories {
                    structured_metadata: vec![("trace_id".into(), "t1".into())],
                    parsed: vec![("__error__".into(), "JSONParserErr".into())],
                },
                Categories::default(),
            ],
        };
        assert_eq!(
            streams_result(std::slice::from_ref(&s), false),
            json!([{"stream": {"job": "a", "trace_id": "t1"}, "values": [["2", "two"], ["1", "one"]]}])
        );
        assert_eq!(
            streams_result(&[s], true),
            json!([{"stream": {"job": "a", "trace_id": "t1"}, "values": [
                ["2", "two", {"structuredMetadata": {"trace_id": "t1"}, "parsed": {"__error__": "JSONParserErr"}}],
                ["1", "one", {}]
            ]}])
        );
    }

    #[test]
    fn envelope_puts_encoding_flags_before_result() {
        let body = envelope("streams", json!([]), true, &QueryStats::default());
        let text = serde_json::to_string(&body).unwrap();
        let flags = text.find("encodingFlags").unwrap();
        let result = text.find("\"result\"").unwrap();
        assert!(flags < result);
        assert_eq!(body["status"], "success");
        assert_eq!(body["data"]["resultType"], "streams");
        assert!(body["data"]["stats"]["summary"]["execTime"].is_number());
    }
}
