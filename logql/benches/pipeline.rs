//! The log pipeline alone, per line, on lines shaped like the standard workload's
//! (`cargo bench -p tovlog-logql --bench pipeline`).
//!
//! The macro benchmark measures whole queries, where decompression and the machine's
//! swings hide a few percent won or lost in a parser; this one runs only
//! `Pipeline::process` (and the unwrap) with the label hints the engine builds, so a
//! change to a parser can be measured on its own.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use tovlog_logql::ast::{Expr, RangeAggregation, SampleExpr, VectorAggregation};
use tovlog_logql::pipeline::{line_flags, LabelHints, LabelsBuilder, Pipeline, SampleExtractor};

/// Deterministic pseudo-random numbers (no dependency for a bench's test data).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

const USERS: [&str; 6] = ["alice", "bob", "ariel.cohen", "dana", "mallory", "noa"];
const ACTIONS: [&str; 5] = ["READ", "LOGIN", "UPDATE", "DELETE", "CREATE"];
const RESOURCES: [&str; 4] = ["Game", "User", "Tournament", "Team"];
const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];

/// Backend JSON lines like the workload's `tovplay-backend` stream.
fn backend_lines(n: usize) -> Vec<String> {
    let mut r = Lcg(7);
    (0..n)
        .map(|i| {
            let res = RESOURCES[r.next(4) as usize];
            let id = 1000 + r.next(9000);
            format!(
                concat!(
                    r#"{{"timestamp":"2025-11-21T00:00:{:02}.{:06}Z","level":"{}","logger":"app.routes.{}","#,
                    r#""message":"read {}","correlation_id":"{:08x}-c3d4-4ce9-a6d0-{:012x}","user_id":{},"#,
                    r#""username":"{}","action":"{}","resource_type":"{}","resource_id":"{}","#,
                    r#""duration_ms":{}.{},"ip":"10.78.{}.{}","method":"{}","path":"/api/{}s/{}","status":{}}}"#
                ),
                i % 60,
                r.next(1_000_000),
                if r.next(10) == 0 { "WARNING" } else { "INFO" },
                res.to_lowercase(),
                res.to_lowercase(),
                r.next(u32::MAX as u64),
                r.next(1 << 48),
                100 + r.next(2000),
                USERS[r.next(6) as usize],
                ACTIONS[r.next(5) as usize],
                res,
                id,
                r.next(500),
                r.next(10),
                r.next(256),
                r.next(256),
                METHODS[r.next(4) as usize],
                res.to_lowercase(),
                id,
                [200, 200, 200, 201, 403, 404, 500][r.next(7) as usize],
            )
        })
        .collect()
}

/// nginx access lines like the workload's `nginx` stream.
fn nginx_lines(n: usize) -> Vec<String> {
    let mut r = Lcg(11);
    (0..n)
        .map(|i| {
            format!(
                concat!(
                    r#"10.{}.{}.{} - - [21/Nov/2025:00:{:02}:{:02} +0000] "{} /api/games/{} HTTP/1.1" {} {} "#,
                    r#""https://tovplay.example/lobby" "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36""#
                ),
                r.next(256),
                r.next(256),
                r.next(256),
                i % 60,
                r.next(60),
                METHODS[r.next(4) as usize],
                r.next(5000),
                [200, 200, 200, 304, 404, 500, 502][r.next(7) as usize],
                r.next(50_000),
            )
        })
        .collect()
}

/// The range aggregation of a metric query and the vector aggregation around it.
fn range_of(query: &str) -> (RangeAggregation, Option<VectorAggregation>) {
    let Ok(Expr::Sample(expr)) = tovlog_logql::parse(query) else {
        panic!("not a metric query: {query}");
    };
    match expr {
        SampleExpr::Range(r) => (r, None),
        SampleExpr::Vector(v) => match v.expr.as_ref() {
            SampleExpr::Range(r) => (r.clone(), Some(v.clone())),
            _ => panic!("no range aggregation directly inside: {query}"),
        },
        _ => panic!("unexpected shape: {query}"),
    }
}

/// `flagged`: lines carry their `line_flags`, as when read from compacted files.
fn bench_metric(c: &mut Criterion, name: &str, query: &str, lines: &[String], flagged: bool) {
    let (agg, parent) = range_of(query);
    let hints = LabelHints::for_range_aggregation(&agg, parent.as_ref());
    let pipeline = match Pipeline::with_hints(&agg.range.log.pipeline, hints) {
        Ok(p) => p,
        Err(e) => panic!("{query}: {e}"),
    };
    let extractor = agg
        .range
        .unwrap
        .as_ref()
        .map(|u| SampleExtractor::new(u).unwrap_or_else(|e| panic!("{query}: {e}")));
    let stream = vec![
        ("env".to_owned(), "prod".to_owned()),
        ("host".to_owned(), "app-01".to_owned()),
        ("job".to_owned(), "bench".to_owned()),
        ("pod".to_owned(), "bench-7d9f01-a".to_owned()),
    ];
    let flags: Vec<u8> = lines
        .iter()
        .map(|l| if flagged { line_flags(l) } else { 0 })
        .collect();
    let mut lb = LabelsBuilder::new();
    // All lines are of one stream, as in a scan: the engine resets only the entry.
    lb.reset(&stream, &[]);
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            let mut kept = 0usize;
            let mut sum = 0.0;
            for (i, (line, &f)) in lines.iter().zip(&flags).enumerate() {
                lb.reset_entry(&[]);
                if pipeline
                    .process_flagged(i as i64, line, f, &mut lb)
                    .is_none()
                {
                    continue;
                }
                match &extractor {
                    Some(ex) => {
                        if let Some(v) = ex.extract(&mut lb) {
                            sum += v;
                            kept += 1;
                        }
                    }
                    None => kept += 1,
                }
            }
            black_box((kept, sum))
        })
    });
    group.finish();
}

fn bench_pipelines(c: &mut Criterion) {
    let backend = backend_lines(20_000);
    let nginx = nginx_lines(20_000);
    bench_metric(
        c,
        "q4_pattern_count",
        r#"sum by (status) (count_over_time({job="nginx"} | pattern `<_> - - [<_>] "<_> <_> <_>" <status> <_>` [5m]))"#,
        &nginx,
        false,
    );
    bench_metric(
        c,
        "q5_json_filter_count",
        r#"sum by (user_id) (count_over_time({job="tovplay-backend"} | json | action="DELETE" [5m]))"#,
        &backend,
        false,
    );
    bench_metric(
        c,
        "q6_json_unwrap",
        r#"quantile_over_time(0.99, {job="tovplay-backend"} | json | unwrap duration_ms | __error__="" [5m]) by (host)"#,
        &backend,
        false,
    );
    bench_metric(
        c,
        "q6_json_unwrap_flat",
        r#"quantile_over_time(0.99, {job="tovplay-backend"} | json | unwrap duration_ms | __error__="" [5m]) by (host)"#,
        &backend,
        true,
    );
    bench_metric(
        c,
        "json_all_labels",
        r#"count_over_time({job="tovplay-backend"} | json [5m])"#,
        &backend,
        false,
    );
}

criterion_group!(benches, bench_pipelines);
criterion_main!(benches);
