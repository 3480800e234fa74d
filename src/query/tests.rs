//! Engine-level conformance: the recorded Loki answers of `tests/conformance/loki-goldens.json`
//! replayed through [`QueryEngine::query`] over a real [`Storage`] holding the conformance
//! dataset, compared with the rules of `check.py` (stream and series order free, entries in
//! order, numbers within 1e-6 relative). HTTP parameter handling is reproduced minimally
//! here (the server owns the real one), so only query endpoints are exercised.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use tovlog_storage::{Entry, LabelSet, PushStream, Storage, StorageConfig};

use super::{Direction, QueryEngine, QueryError, QueryLimits, QueryRequest};

const TENANT: &str = "fake";

fn conformance_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

/// Parse one Loki JSON push body.
fn parse_push(body: &Value) -> Vec<PushStream> {
    let mut out = Vec::new();
    for s in body["streams"].as_array().into_iter().flatten() {
        let labels: Vec<(String, String)> = s["stream"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        let mut entries = Vec::new();
        for v in s["values"].as_array().into_iter().flatten() {
            let ts_ns: i64 = v[0].as_str().and_then(|t| t.parse().ok()).expect("ts");
            let line = v[1].as_str().expect("line").to_owned();
            let metadata = v
                .get(2)
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            entries.push(Entry {
                ts_ns,
                line,
                metadata,
            });
        }
        out.push(PushStream {
            labels: LabelSet::new(labels),
            entries,
        });
    }
    out
}

/// Storage settings for a test store in `dir`; other settings keep their defaults,
/// whatever fields the storage config grows.
#[allow(clippy::needless_update)]
fn storage_config(dir: &Path) -> StorageConfig {
    StorageConfig {
        data_dir: dir.to_path_buf(),
        ..StorageConfig::default()
    }
}

async fn loaded_storage(dir: &Path) -> Arc<Storage> {
    let storage = Storage::open(storage_config(dir))
        .await
        .expect("open storage");
    load_dataset(&storage).await;
    storage
}

/// Append the conformance dataset.
async fn load_dataset(storage: &Storage) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(conformance_dir().join("dataset"))
        .expect("dataset dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("push-") && n.ends_with(".json"))
        })
        .collect();
    files.sort();
    for f in files {
        let body: Value =
            serde_json::from_slice(&std::fs::read(&f).expect("read push")).expect("push json");
        storage
            .append(TENANT, parse_push(&body))
            .await
            .expect("append");
    }
}

/// Loki's timestamp parameter rules: float seconds, ≤10-digit integer seconds, longer
/// integer ns, else RFC3339.
fn parse_time(s: &str) -> Option<i64> {
    if s.contains('.') {
        let f: f64 = s.parse().ok()?;
        return Some((f * 1e9).round() as i64);
    }
    if let Ok(i) = s.parse::<i64>() {
        return Some(if s.len() <= 10 { i * 1_000_000_000 } else { i });
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .and_then(|d| d.timestamp_nanos_opt())
}

/// Step as float seconds or a Go duration (`15000ms`, `1m0s`, `5m`).
fn parse_step(s: &str) -> Option<i64> {
    if let Ok(f) = s.parse::<f64>() {
        return Some((f * 1e9).round() as i64);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(total as i64)
}

/// The request a case describes, or `Err(())` when the HTTP layer itself would reject it.
fn request_of(case: &Value) -> Result<QueryRequest, ()> {
    let params = &case["params"];
    let p = |k: &str| params.get(k).and_then(Value::as_str);
    let instant = case["path"].as_str() == Some("/loki/api/v1/query");
    let categorize = case["headers"]
        .as_object()
        .into_iter()
        .flatten()
        .any(|(k, v)| {
            k.eq_ignore_ascii_case("X-Loki-Response-Encoding-Flags")
                && v.as_str().is_some_and(|v| v.contains("categorize-labels"))
        });
    let direction = match p("direction") {
        None | Some("backward") => Direction::Backward,
        Some("forward") => Direction::Forward,
        Some(_) => return Err(()),
    };
    let limit: i64 = match p("limit") {
        Some(l) => l.parse().map_err(|_| ())?,
        None => 100,
    };
    // The oracle ran with max_entries_limit_per_query 100000.
    if limit <= 0 || limit > 100_000 {
        return Err(());
    }
    let (start_ns, end_ns, step_ns) = if instant {
        let t = p("time").and_then(parse_time).ok_or(())?;
        (t, t, 0)
    } else {
        let end = p("end").and_then(parse_time).ok_or(())?;
        let start = p("start").and_then(parse_time).ok_or(())?;
        if end < start {
            return Err(());
        }
        let step = match p("step") {
            Some(s) => parse_step(s).ok_or(())?,
            None => ((end - start) / 250 / 1_000_000_000).max(1) * 1_000_000_000,
        };
        if step <= 0 {
            return Err(());
        }
        (start, end, step)
    };
    Ok(QueryRequest {
        tenant: TENANT.to_owned(),
        query: p("query").ok_or(())?.to_owned(),
        start_ns,
        end_ns,
        step_ns,
        limit: limit as u32,
        direction,
        instant,
        categorize_labels: categorize,
    })
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            s => s.parse().ok(),
        },
        _ => None,
    }
}

fn same_num(a: &Value, b: &Value) -> bool {
    match (num(a), num(b)) {
        (Some(x), Some(y)) => {
            (x.is_nan() && y.is_nan())
                || x == y
                || (x - y).abs() <= 1e-6 * 1f64.max(x.abs()).max(y.abs())
        }
        _ => a == b,
    }
}

fn key(labels: &Value) -> String {
    // serde_json maps are sorted, so this is canonical.
    labels.to_string()
}

fn cmp_samples(exp: &[Value], got: &[Value], at: &str) -> Result<(), String> {
    if exp.len() != got.len() {
        return Err(format!(
            "{at}: {} samples expected, {} returned",
            exp.len(),
            got.len()
        ));
    }
    for (e, g) in exp.iter().zip(got) {
        if !same_num(&e[0], &g[0]) || !same_num(&e[1], &g[1]) {
            return Err(format!("{at}: sample {e} expected, {g} returned"));
        }
    }
    Ok(())
}

/// `check.py`'s comparison of `data`.
fn compare_data(exp: &Value, got: &Value) -> Result<(), String> {
    let rtype = exp["resultType"].as_str().unwrap_or_default();
    if got["resultType"] != exp["resultType"] {
        return Err(format!(
            "resultType {} expected, {} returned",
            exp["resultType"], got["resultType"]
        ));
    }
    if exp.get("encodingFlags") != got.get("encodingFlags") {
        return Err("encodingFlags differ".into());
    }
    let er = &exp["result"];
    let gr = &got["result"];
    match rtype {
        "streams" => {
            let mut em = std::collections::BTreeMap::new();
            for s in er.as_array().into_iter().flatten() {
                em.insert(
                    key(&s["stream"]),
                    s["values"].as_array().cloned().unwrap_or_default(),
                );
            }
            let mut gm: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
            for s in gr.as_array().into_iter().flatten() {
                gm.entry(key(&s["stream"]))
                    .or_default()
                    .extend(s["values"].as_array().cloned().unwrap_or_default());
            }
            let ek: Vec<_> = em.keys().collect();
            let gk: Vec<_> = gm.keys().collect();
            if ek != gk {
                let missing: Vec<_> = em.keys().filter(|k| !gm.contains_key(*k)).take(2).collect();
                let extra: Vec<_> = gm.keys().filter(|k| !em.contains_key(*k)).take(2).collect();
                return Err(format!(
                    "streams differ: missing {missing:?}; unexpected {extra:?}"
                ));
            }
            for (k, ev) in &em {
                let gv = &gm[k];
                if ev.len() != gv.len() {
                    return Err(format!(
                        "stream {k}: {} entries expected, {} returned",
                        ev.len(),
                        gv.len()
                    ));
                }
                for (i, (e, g)) in ev.iter().zip(gv).enumerate() {
                    if e[0] != g[0] || e[1] != g[1] {
                        return Err(format!("stream {k} entry {i}: expected {e}, returned {g}"));
                    }
                    if let Some(em) = e.get(2) {
                        if Some(em) != g.get(2) {
                            return Err(format!(
                                "stream {k} entry {i}: metadata expected {em}, returned {:?}",
                                g.get(2)
                            ));
                        }
                    }
                }
            }
            Ok(())
        }
        "matrix" | "vector" => {
            let field = if rtype == "matrix" { "values" } else { "value" };
            let em: std::collections::BTreeMap<String, &Value> = er
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| (key(&s["metric"]), &s[field]))
                .collect();
            let gm: std::collections::BTreeMap<String, &Value> = gr
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| (key(&s["metric"]), &s[field]))
                .collect();
            if em.keys().collect::<Vec<_>>() != gm.keys().collect::<Vec<_>>() {
                let missing: Vec<_> = em.keys().filter(|k| !gm.contains_key(*k)).take(2).collect();
                let extra: Vec<_> = gm.keys().filter(|k| !em.contains_key(*k)).take(2).collect();
                return Err(format!(
                    "series differ ({} expected, {} returned): missing {missing:?}; unexpected {extra:?}",
                    em.len(),
                    gm.len()
                ));
            }
            for (k, e) in &em {
                let g = gm[k];
                if rtype == "matrix" {
                    cmp_samples(
                        e.as_array().map(Vec::as_slice).unwrap_or_default(),
                        g.as_array().map(Vec::as_slice).unwrap_or_default(),
                        k,
                    )?;
                } else {
                    cmp_samples(std::slice::from_ref(*e), std::slice::from_ref(g), k)?;
                }
            }
            Ok(())
        }
        "scalar" => cmp_samples(std::slice::from_ref(er), std::slice::from_ref(gr), "scalar"),
        other => Err(format!("unknown resultType {other}")),
    }
}

fn status_of(e: &QueryError) -> u16 {
    match e {
        QueryError::BadRequest(_) => 400,
        QueryError::Timeout(_) => 504,
        QueryError::TooLarge(_) => 400,
        QueryError::TooManyRequests(_) => 429,
        QueryError::Internal(_) => 500,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_goldens_through_the_engine_from_the_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = loaded_storage(dir.path()).await;
    run_goldens(storage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_goldens_through_the_engine_from_parquet_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = loaded_storage(dir.path()).await;
    storage.flush().await.expect("flush");
    let m = storage.metrics();
    assert!(m.chunk_files > 0, "flush wrote no chunk files");
    assert_eq!(m.head_entries, 0, "entries left in the head after flush");
    run_goldens(storage).await;
}

/// Storage in `dir` compacting at once, with the server's line classifier (`| json` then
/// reads flat lines by key search) and field extractor (numeric `| json` filters skip
/// blocks).
async fn compacting_storage(dir: &Path) -> Arc<Storage> {
    let mut config = storage_config(dir);
    config.compaction.min_age = tovlog_storage::config::HumanDuration(Duration::ZERO);
    Storage::open_with_fields(
        config,
        Some(Arc::new(tovlog_logql::pipeline::line_flags)),
        Some(super::fields::json_field_extractor().expect("extractor")),
    )
    .await
    .expect("open storage")
}

/// Compacted files answer needles through their trigram blocks, whole-minute counts
/// through their minute counts, and `| json` on flat lines through their line flags: the
/// answers must not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_goldens_through_the_engine_from_compacted_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = compacting_storage(dir.path()).await;
    load_dataset(&storage).await;
    storage.flush().await.expect("flush");
    assert!(storage.compact().await.expect("compact") > 0);
    let m = storage.metrics();
    assert_eq!(m.uncompacted_files, 0, "files left uncompacted");
    run_goldens(storage).await;
}

async fn run_goldens(storage: Arc<Storage>) {
    let limits = QueryLimits {
        max_entries_limit_per_query: 100_000,
        max_query_series: 100_000,
        query_timeout: Duration::from_secs(60),
        max_memory_bytes: 512 << 20,
        partitions: 0,
    };
    let engine = QueryEngine::new(storage, limits);
    let cases: Vec<Value> = serde_json::from_slice(
        &std::fs::read(conformance_dir().join("loki-goldens.json")).expect("goldens"),
    )
    .expect("goldens json");
    let only = std::env::var("TOVLOG_CASE").ok();
    let mut passed = 0;
    let mut failures = Vec::new();
    for case in &cases {
        let path = case["path"].as_str().unwrap_or_default();
        if path != "/loki/api/v1/query_range" && path != "/loki/api/v1/query" {
            continue;
        }
        let id = case["id"].as_str().unwrap_or_default();
        if only.as_deref().is_some_and(|o| o != id) {
            continue;
        }
        let expected_status = case["expect"]["status"].as_u64().unwrap_or(0) as u16;
        let outcome = match request_of(case) {
            Err(()) => {
                if expected_status == 400 {
                    Ok(())
                } else {
                    Err("harness rejected the parameters".to_owned())
                }
            }
            Ok(req) => match engine.query(req).await {
                Err(e) if status_of(&e) == expected_status => Ok(()),
                Err(e) => Err(format!(
                    "HTTP {expected_status} expected, {} returned: {e}",
                    status_of(&e)
                )),
                Ok(_) if expected_status != 200 => {
                    Err(format!("HTTP {expected_status} expected, 200 returned"))
                }
                Ok(body) => compare_data(&case["expect"]["json"]["data"], &body["data"]),
            },
        };
        match outcome {
            Ok(()) => passed += 1,
            Err(msg) => failures.push(format!("{id}: {msg}")),
        }
    }
    let report = failures
        .iter()
        .map(|f| f.chars().take(400).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        failures.is_empty(),
        "{passed} passed, {} failed:\n{report}",
        failures.len()
    );
}

#[test]
fn parameter_parsing_matches_loki() {
    assert_eq!(parse_time("1763598600"), Some(1_763_598_600_000_000_000));
    assert_eq!(parse_time("1763598600.5"), Some(1_763_598_600_500_000_000));
    assert_eq!(
        parse_time("1763596800000000000"),
        Some(1_763_596_800_000_000_000)
    );
    assert_eq!(
        parse_time("2025-11-20T00:30:00Z"),
        Some(1_763_598_600_000_000_000)
    );
    assert_eq!(parse_step("15000ms"), Some(15_000_000_000));
    assert_eq!(parse_step("1m0s"), Some(60_000_000_000));
    assert_eq!(parse_step("450.5"), Some(450_500_000_000));
}

/// A store with `n` synthetic JSON lines in two streams, one per millisecond from `T0`.
async fn synthetic_storage(dir: &Path, n: usize) -> Arc<Storage> {
    let storage = Storage::open(storage_config(dir))
        .await
        .expect("open storage");
    let mut streams = Vec::new();
    for host in ["a", "b"] {
        let entries = (0..n / 2)
            .map(|i| Entry {
                ts_ns: T0 + (i as i64) * 2_000_000 + i64::from(host == "b") * 1_000_000,
                line: format!(
                    r#"{{"level":"info","status":{},"n":{i},"msg":"req {host}"}}"#,
                    200 + i % 3
                ),
                metadata: Vec::new(),
            })
            .collect();
        streams.push(PushStream {
            labels: LabelSet::new(vec![
                ("job".to_owned(), "synth".to_owned()),
                ("host".to_owned(), host.to_owned()),
            ]),
            entries,
        });
    }
    storage.append(TENANT, streams).await.expect("append");
    storage
}

const T0: i64 = 1_763_596_800_000_000_000;
const SEC: i64 = 1_000_000_000;

fn range_request(
    query: &str,
    start_ns: i64,
    end_ns: i64,
    step_ns: i64,
    limit: u32,
) -> QueryRequest {
    QueryRequest {
        tenant: TENANT.to_owned(),
        query: query.to_owned(),
        start_ns,
        end_ns,
        step_ns,
        limit,
        direction: Direction::Backward,
        instant: false,
        categorize_labels: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_fails_the_query_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = synthetic_storage(dir.path(), 200_000).await;
    let engine = QueryEngine::new(
        storage,
        QueryLimits {
            max_memory_bytes: 1 << 20,
            ..QueryLimits::default()
        },
    );
    // 200k samples of 16 bytes cannot be held in 1 MiB. (A range that is not a multiple
    // of the step keeps raw samples; with a multiple they would be summed per bucket.)
    let req = range_request(
        r#"count_over_time({job="synth"}[10m])"#,
        T0,
        T0 + 600 * SEC,
        90 * SEC,
        100,
    );
    match engine.query(req).await {
        Err(QueryError::TooLarge(msg)) => assert!(msg.contains("memory"), "{msg}"),
        other => panic!("expected a memory error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_is_reported_as_such() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = synthetic_storage(dir.path(), 200_000).await;
    let engine = QueryEngine::new(
        storage,
        QueryLimits {
            query_timeout: Duration::from_nanos(1),
            ..QueryLimits::default()
        },
    );
    let req = range_request(
        r#"sum by (status) (count_over_time({job="synth"} | json [10m]))"#,
        T0,
        T0 + 600 * SEC,
        60 * SEC,
        100,
    );
    assert!(matches!(
        engine.query(req).await,
        Err(QueryError::Timeout(_))
    ));
}

/// Timestamps of every entry of a streams result, sorted.
fn result_timestamps(body: &Value) -> Vec<i64> {
    let mut ts: Vec<i64> = body["data"]["result"]
        .as_array()
        .expect("streams")
        .iter()
        .flat_map(|s| s["values"].as_array().expect("values").clone())
        .map(|v| v[0].as_str().expect("ts").parse().expect("int"))
        .collect();
    ts.sort_unstable();
    ts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_and_direction_over_many_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = synthetic_storage(dir.path(), 200_000).await;
    let engine = QueryEngine::new(storage, QueryLimits::default());
    let end = T0 + 200 * SEC;
    // Backward: the newest 5 entries across both streams, interleaved by time.
    let body = engine
        .query(range_request(r#"{job="synth"}"#, T0, end, 0, 5))
        .await
        .expect("query");
    let ts = result_timestamps(&body);
    let want: Vec<i64> = (0..5)
        .map(|i| T0 + 199_995_000_000 + i * 1_000_000)
        .collect();
    assert_eq!(ts, want);
    assert_eq!(body["data"]["stats"]["summary"]["totalEntriesReturned"], 5);
    // Forward with a pipeline: the oldest 3 lines whose status is 201.
    let mut req = range_request(r#"{job="synth"} | json | status=201"#, T0, end, 0, 3);
    req.direction = Direction::Forward;
    let body = engine.query(req).await.expect("query");
    let result = body["data"]["result"].as_array().expect("streams");
    let mut got: Vec<(String, String)> = result
        .iter()
        .flat_map(|s| {
            s["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|v| {
                    (
                        v[0].as_str().expect("ts").to_owned(),
                        v[1].as_str().expect("line").to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    got.sort();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|(_, l)| l.contains(r#""status":201"#)));
    assert_eq!(got[0].0, (T0 + 2_000_000).to_string());
    // Every stream carries the parsed labels.
    assert!(result.iter().all(|s| s["stream"]["status"] == "201"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_sum_over_many_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = synthetic_storage(dir.path(), 200_000).await;
    let engine = QueryEngine::new(storage, QueryLimits::default());
    // Instant: the last minute holds 60k entries (one per ms), split over statuses.
    let mut req = range_request(
        r#"sum by (status) (count_over_time({job="synth"} | json [1m]))"#,
        0,
        T0 + 100 * SEC,
        0,
        100,
    );
    req.instant = true;
    let body = engine.query(req).await.expect("query");
    let result = body["data"]["result"].as_array().expect("vector");
    assert_eq!(body["data"]["resultType"], "vector");
    assert_eq!(result.len(), 3);
    let total: f64 = result
        .iter()
        .map(|s| {
            s["value"][1]
                .as_str()
                .expect("v")
                .parse::<f64>()
                .expect("f")
        })
        .sum();
    assert_eq!(total, 60_000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_limit_stops_high_cardinality_queries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = synthetic_storage(dir.path(), 20_000).await;
    let engine = QueryEngine::new(storage, QueryLimits::default());
    // `n` differs on every line: one series per line, far above 500.
    let mut req = range_request(
        r#"count_over_time({job="synth"} | json [1m])"#,
        0,
        T0 + 20 * SEC,
        0,
        100,
    );
    req.instant = true;
    match engine.query(req.clone()).await {
        Err(QueryError::BadRequest(msg)) => {
            assert!(msg.contains("maximum number of series (500)"), "{msg}")
        }
        other => panic!("expected the series limit, got {other:?}"),
    }
    // Aggregated, the same data is fine.
    req.query = r#"sum by (host) (count_over_time({job="synth"} | json [1m]))"#.to_owned();
    let body = engine.query(req).await.expect("query");
    assert_eq!(body["data"]["result"].as_array().map(Vec::len), Some(2));
}

/// A limit met halfway through a wide window: the window is read in pieces of whole
/// chunk files from its reading end, and the answer is still exactly the newest (or
/// oldest) `limit` matches, whichever files they are in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_needle_queries_across_many_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::open(storage_config(dir.path()))
        .await
        .expect("open storage");
    let hours = 12i64;
    let mut entries = Vec::new();
    let mut hits = Vec::new();
    // Four lines a second; a match every 17 minutes, and a burst of 40 in the fourth hour.
    for q in 0..hours * 3600 * 4 {
        let s = q / 4;
        let ts_ns = T0 + q * SEC / 4;
        let burst = q % 4 == 1 && (3 * 3600..3 * 3600 + 40).contains(&s);
        let hit = (q % 4 == 0 && s % 1020 == 7) || burst;
        if hit {
            hits.push(ts_ns);
        }
        entries.push(Entry {
            ts_ns,
            line: if hit {
                format!("user=mallory action=DELETE n={q}")
            } else {
                format!("user=alice action=READ n={q}")
            },
            metadata: Vec::new(),
        });
    }
    storage
        .append(
            TENANT,
            vec![PushStream {
                labels: LabelSet::new(vec![("job".to_owned(), "audit".to_owned())]),
                entries,
            }],
        )
        .await
        .expect("append");
    storage.flush().await.expect("flush");
    assert!(
        storage.metrics().chunk_files >= hours as u64,
        "one file per hour"
    );
    let engine = QueryEngine::new(storage, QueryLimits::default());
    let end = T0 + hours * 3600 * SEC;
    for limit in [5usize, 45, 60, 200] {
        let req = range_request(r#"{job="audit"} |= "mallory""#, T0, end, 0, limit as u32);
        let body = engine.query(req).await.expect("query");
        let newest: Vec<i64> = hits[hits.len().saturating_sub(limit)..].to_vec();
        assert_eq!(result_timestamps(&body), newest, "backward, limit {limit}");
        if limit == 45 {
            // The 45th newest match is in the burst of the fourth hour: the files of the
            // first two hours are never read (the third may be, read ahead).
            let read = body["data"]["stats"]["summary"]["totalLinesProcessed"]
                .as_u64()
                .expect("lines processed");
            assert!(read <= (10 * 3600 * 4) as u64, "{read} lines read");
        }
        let mut req = range_request(r#"{job="audit"} |= "mallory""#, T0, end, 0, limit as u32);
        req.direction = Direction::Forward;
        let body = engine.query(req).await.expect("query");
        let oldest: Vec<i64> = hits[..limit.min(hits.len())].to_vec();
        assert_eq!(result_timestamps(&body), oldest, "forward, limit {limit}");
    }
}

/// The series of a matrix result by label set (sorted keys), for comparisons free of
/// series order.
fn matrix_by_labels(body: &Value) -> std::collections::BTreeMap<String, Vec<(i64, f64)>> {
    body["data"]["result"]
        .as_array()
        .expect("matrix")
        .iter()
        .map(|s| {
            let points = s["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|v| {
                    let t = v[0].as_i64().expect("ts");
                    let x: f64 = v[1].as_str().expect("value").parse().expect("number");
                    (t, x)
                })
                .collect();
            (s["metric"].to_string(), points)
        })
        .collect()
}

/// A parent that keeps only some labels (`avg by (status) (…)`) lets the leaf's series carry
/// only those labels (`LabelReduce::Carry`), yet every series stays apart: the answers
/// equal those over whole label sets, which the same leaf gets under a binary operation
/// (its parent is then not an aggregation). Each synthetic line is its own series (`n`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parents_keeping_some_labels_still_see_every_series_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = synthetic_storage(dir.path(), 20_000).await;
    let engine = QueryEngine::new(storage, QueryLimits::default());
    let leaf_n = r#"{job="synth"} | json | unwrap n [10s]"#;
    let leaf_count = r#"{job="synth"} | json [10s]"#;
    let cases = [
        ("avg by (status)", format!("avg_over_time({leaf_n})")),
        ("max by (host)", format!("last_over_time({leaf_n})")),
        (
            "stddev by (host, status)",
            format!("max_over_time({leaf_n})"),
        ),
        ("sum", format!("avg_over_time({leaf_n})")),
        (
            "count by (status)",
            format!("count_over_time({leaf_count})"),
        ),
        ("min by (host)", format!("rate({leaf_count})")),
        ("count", r#"count_over_time({job="synth"}[10s])"#.to_owned()),
        (
            "avg by (host)",
            r#"bytes_over_time({job="synth"}[10s])"#.to_owned(),
        ),
    ];
    for (parent, leaf) in cases {
        let carried = format!("{parent} ({leaf})");
        // The leaf's parent is the binary operation here.
        let whole = format!("{parent} ({leaf} + 0)");
        let run = |q: String| {
            let engine = &engine;
            async move {
                let req = range_request(&q, T0, T0 + 30 * SEC, 5 * SEC, 100);
                let body = engine.query(req).await.expect("query");
                matrix_by_labels(&body)
            }
        };
        let (got, want) = (run(carried.clone()).await, run(whole.clone()).await);
        assert!(!want.is_empty(), "{whole}: no series");
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "{carried} vs {whole}"
        );
        for (labels, points) in &want {
            let g = &got[labels];
            assert_eq!(g.len(), points.len(), "{carried}: {labels}");
            for ((tg, xg), (tw, xw)) in g.iter().zip(points) {
                assert_eq!(tg, tw, "{carried}: {labels}");
                let scale = xw.abs().max(1.0);
                assert!(
                    (xg - xw).abs() <= 1e-9 * scale,
                    "{carried}: {labels} at {tw}: {xg} vs {xw}"
                );
            }
        }
    }
}

/// Numeric `| json` filters skip the blocks of compacted files whose field statistics rule
/// every row out, and answer exactly what a scan of every row answers: slow requests in
/// one burst, a field missing from some rows, text values, lines that are not JSON, a
/// metadata field shadowing the parsed one, and a stream label shadowing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_json_filters_skip_blocks_by_field_statistics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = compacting_storage(dir.path()).await;
    // 40,000 requests over 40 minutes of one stream: `d` below 100 but for a burst of
    // 50 slow ones (2000 to 2049) at rows 30,000..30,050; `m` is text in the first 1,000 rows
    // and missing from the rest; every 5,000th line is plain text; rows 20,000..20,010
    // carry a metadata `d` of 5000 that shadows the line's.
    let n = 40_000usize;
    let mut api = Vec::with_capacity(n);
    for i in 0..n {
        let slow = (30_000..30_050).contains(&i);
        let d = if slow { 2000 + i % 50 } else { i % 97 };
        let line = if i % 5000 == 1 {
            format!("plain text line {i}")
        } else if i < 1000 {
            format!(r#"{{"msg":"req {i}","d":{d},"m":"x{i}"}}"#)
        } else {
            format!(r#"{{"msg":"req {i}","d":{d}}}"#)
        };
        let metadata = if (20_000..20_010).contains(&i) {
            vec![("d".to_owned(), "5000".to_owned())]
        } else {
            Vec::new()
        };
        api.push(Entry {
            ts_ns: T0 + (i as i64) * 60_000_000,
            line,
            metadata,
        });
    }
    // A stream with a label `d`: its label decides, whatever its lines say.
    let shadow: Vec<Entry> = (0..100)
        .map(|i| Entry {
            ts_ns: T0 + i * SEC,
            line: format!(r#"{{"d":{i}}}"#),
            metadata: Vec::new(),
        })
        .collect();
    storage
        .append(
            TENANT,
            vec![
                PushStream {
                    labels: LabelSet::new(vec![("job".to_owned(), "api".to_owned())]),
                    entries: api.clone(),
                },
                PushStream {
                    labels: LabelSet::new(vec![
                        ("job".to_owned(), "shadow".to_owned()),
                        ("d".to_owned(), "7000".to_owned()),
                    ]),
                    entries: shadow,
                },
            ],
        )
        .await
        .expect("append");
    storage.flush().await.expect("flush");
    assert!(storage.compact().await.expect("compact") > 0);
    assert_eq!(storage.metrics().uncompacted_files, 0);
    let engine = QueryEngine::new(storage, QueryLimits::default());
    let end = T0 + 3600 * SEC;
    // (query, timestamps it must return, whether blocks can be skipped)
    let ts = |keep: &dyn Fn(usize) -> bool| -> Vec<i64> {
        let mut v: Vec<i64> = (0..n)
            .filter(|&i| keep(i))
            .map(|i| T0 + (i as i64) * 60_000_000)
            .collect();
        v.reverse();
        v
    };
    let slow = |i: usize| (30_000..30_050).contains(&i);
    let meta = |i: usize| (20_000..20_010).contains(&i);
    let plain = |i: usize| i % 5000 == 1;
    let cases: Vec<(&str, Vec<i64>, bool)> = vec![
        (
            r#"{job="api"} | json | d > 1000"#,
            ts(&|i| (slow(i) && !plain(i)) || meta(i)),
            true,
        ),
        (
            r#"{job="api"} |= "req" | json | d >= 2049"#,
            ts(&|i| (i == 30_049 || meta(i)) && !plain(i)),
            true,
        ),
        (r#"{job="api"} | json | d == 5000"#, ts(&|i| meta(i)), true),
        // Text values keep their rows with a conversion error: those blocks stay.
        (
            r#"{job="api"} | json | m > 5"#,
            ts(&|i| i < 1000 && !plain(i)),
            true,
        ),
        (r#"{job="api"} | json | absent > 5"#, Vec::new(), true),
        (r#"{job="api"} | json | d < 0"#, Vec::new(), true),
    ];
    for (q, want, prunes) in cases {
        let body = engine
            .query(range_request(q, T0, end, 0, 5000))
            .await
            .unwrap_or_else(|e| panic!("{q}: {e:?}"));
        // Each line is a stream of its own (its parsed labels): compare the entries.
        let mut got = result_timestamps(&body);
        got.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(got, want, "{q}");
        let read = body["data"]["stats"]["summary"]["totalLinesProcessed"]
            .as_u64()
            .expect("lines processed");
        if prunes {
            assert!(read < (n / 2) as u64, "{q}: {read} lines read");
        }
    }
    // The shadowing stream label decides: every line of that stream passes `d > 1000`.
    let body = engine
        .query(range_request(
            r#"{job="shadow"} | json | d > 1000"#,
            T0,
            end,
            0,
            5000,
        ))
        .await
        .expect("query");
    assert_eq!(result_timestamps(&body).len(), 100);
}
