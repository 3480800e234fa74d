//! Parse + validate of typical Grafana LogQL queries (`cargo bench -p tovlog-logql --bench parse`).

use criterion::{black_box, criterion_group, criterion_main, Criterion};

const QUERIES: [(&str, &str); 10] = [
    ("selector", r#"{job="nginx", env="prod"}"#),
    ("line_filter", r#"{job="nginx"} |= "GET" != "healthz""#),
    (
        "json_filter",
        r#"{job="api"} | json | level="error" | status >= 500"#,
    ),
    (
        "logfmt_duration",
        r#"{job="postgres"} | logfmt | duration > 500ms | line_format "{{.msg}}""#,
    ),
    (
        "rate_sum",
        r#"sum by (host) (rate({job="nginx"} |= "error" [5m]))"#,
    ),
    (
        "quantile_unwrap",
        r#"quantile_over_time(0.99, {job="api"} | json | unwrap duration_ms | __error__="" [10m]) by (route)"#,
    ),
    (
        "topk",
        r#"topk(10, sum by (path) (count_over_time({job="nginx"} | pattern `<ip> - - [<_>] "<method> <path> <_>" <status> <_>` [1h])))"#,
    ),
    (
        "binop_ratio",
        r#"sum(rate({job="api"} | json | status >= 500 [5m])) / sum(rate({job="api"}[5m])) * 100"#,
    ),
    (
        "drilldown",
        r#"sum by (level, detected_level) (count_over_time({service_name="checkout", namespace=~"prod|staging"} | drop __error__, __error_details__ [1m]))"#,
    ),
    (
        "long_200_chars",
        r#"sum by (cluster, namespace) (rate({cluster=~"eu-.+", namespace!="kube-system", app="payments", tier!="batch-jobs"} |= "transaction" != "debug" | logfmt | level=~"warn|error" and latency > 250ms [5m]))"#,
    ),
];

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("logql_parse");
    for (name, q) in QUERIES {
        group.bench_function(name, |b| {
            b.iter(|| tovlog_logql::parse(black_box(q)).map(|e| e.is_sample()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
