//! `query_range`, `query` (instant) and the legacy `/api/prom/query`: parameter parsing and
//! validation with Loki's rules and messages, then the query engine.

use axum::{
    body::Bytes,
    extract::{RawQuery, State},
    http::{HeaderMap, Method},
    Json,
};
use serde_json::{json, Value};
use tovlog_logql::ast::{Expr, SampleExpr};

use crate::{
    query::{Direction, QueryError, QueryRequest},
    server::{
        error::ApiError,
        params::{self, Params},
        AppState,
    },
};

const HOUR_NS: i64 = 3_600_000_000_000;

fn parse_direction(p: &Params) -> Result<Direction, ApiError> {
    match p.get("direction").map(|d| d.to_ascii_lowercase()) {
        None => Ok(Direction::Backward),
        Some(d) if d == "backward" => Ok(Direction::Backward),
        Some(d) if d == "forward" => Ok(Direction::Forward),
        Some(d) => Err(ApiError::BadRequest(format!(
            "invalid direction '{d}': use forward or backward"
        ))),
    }
}

pub(super) fn parse_limit(p: &Params) -> Result<u32, ApiError> {
    match p.get("limit") {
        None => Ok(100),
        Some(v) => {
            let n: i64 = v.trim().parse().map_err(|_| {
                ApiError::BadRequest(format!(
                    "invalid limit parameter: cannot parse {v:?} to an integer"
                ))
            })?;
            if n <= 0 {
                return Err(ApiError::BadRequest(
                    "limit must be a positive value".into(),
                ));
            }
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        }
    }
}

pub(super) fn categorize(headers: &HeaderMap) -> bool {
    headers
        .get_all("x-loki-response-encoding-flags")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|f| f.trim() == "categorize-labels"))
}

fn parse_query(p: &Params) -> Result<(String, Expr), ApiError> {
    let q = p
        .get("query")
        .ok_or_else(|| ApiError::BadRequest("query parameter is required".into()))?;
    let expr = tovlog_logql::parse(q).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok((q.to_string(), expr))
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::BadRequest(m) | QueryError::TooLarge(m) => ApiError::BadRequest(m),
            QueryError::Timeout(m) => ApiError::Timeout(m),
            QueryError::TooManyRequests(m) => ApiError::TooManyRequests(m),
            QueryError::Internal(m) => ApiError::Internal(m),
        }
    }
}

/// Checks shared by range and instant queries.
pub(super) fn check_limits(
    state: &AppState,
    tenant: &str,
    expr: &Expr,
    limit: u32,
    start_ns: i64,
    end_ns: i64,
) -> Result<(), ApiError> {
    let tenant_limits = state.limits(tenant);
    let l = &tenant_limits.limits;
    if matches!(expr, Expr::Log(_)) && limit > l.max_entries_limit_per_query {
        return Err(ApiError::BadRequest(format!(
            "max entries limit per query exceeded, limit > max_entries_limit_per_query ({limit} > {})",
            l.max_entries_limit_per_query
        )));
    }
    let max_len = l.max_query_length.as_nanos() as i64;
    if max_len > 0 && end_ns.saturating_sub(start_ns) > max_len {
        return Err(ApiError::BadRequest(format!(
            "the query time range exceeds the limit (query length: {}s, limit: {}s)",
            (end_ns - start_ns) / 1_000_000_000,
            max_len / 1_000_000_000
        )));
    }
    if let Expr::Sample(sample) = expr {
        check_range_limit(sample, l.max_query_range)?;
    }
    Ok(())
}

/// `max_query_range`: no range-vector selector (`[5m]`) may be longer. Loki's text
/// (`logqlmodel.ErrIntervalLimit` with both durations, as its engine and query frontend
/// print them); the first selector over the limit, left to right, is named.
fn check_range_limit(expr: &SampleExpr, limit: std::time::Duration) -> Result<(), ApiError> {
    let limit_ns = i64::try_from(limit.as_nanos()).unwrap_or(i64::MAX);
    if limit_ns == 0 {
        return Ok(());
    }
    let Some(range_ns) = first_range_over(expr, limit_ns) else {
        return Ok(());
    };
    let range = std::time::Duration::from_nanos(u64::try_from(range_ns).unwrap_or(0));
    Err(ApiError::BadRequest(format!(
        "[interval] value exceeds limit: [{}] > [{}]",
        super::drilldown::prom_duration(range),
        super::drilldown::prom_duration(limit)
    )))
}

/// The range of the first range-vector selector of `expr` longer than `limit_ns`.
fn first_range_over(expr: &SampleExpr, limit_ns: i64) -> Option<i64> {
    match expr {
        SampleExpr::Range(r) => (r.range.range_ns > limit_ns).then_some(r.range.range_ns),
        SampleExpr::Vector(v) => first_range_over(&v.expr, limit_ns),
        SampleExpr::LabelReplace(l) => first_range_over(&l.expr, limit_ns),
        SampleExpr::Binary(b) => {
            first_range_over(&b.lhs, limit_ns).or_else(|| first_range_over(&b.rhs, limit_ns))
        }
        SampleExpr::Literal(_) | SampleExpr::VectorLiteral(_) => None,
    }
}

async fn run(state: &AppState, req: QueryRequest) -> Result<Json<Value>, ApiError> {
    let started = std::time::Instant::now();
    let result = state.engine.query(req).await;
    state.metrics.query(result.is_err());
    state
        .metrics
        .query_duration(started.elapsed().as_secs_f64());
    Ok(Json(result?))
}

/// `GET|POST /loki/api/v1/query_range`.
pub async fn query_range(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let tenant = params::tenant(&headers, state.config.auth_enabled)?;
    let p = Params::collect(&method, raw.as_deref(), &headers, &body);
    let req = range_request(&state, &p, &headers, tenant)?;
    run(&state, req).await
}

fn range_request(
    state: &AppState,
    p: &Params,
    headers: &HeaderMap,
    tenant: String,
) -> Result<QueryRequest, ApiError> {
    let (query, expr) = parse_query(p)?;
    let now = params::now_ns();
    let end_ns = params::parse_time(p.get("end"), now, "end")?;
    let start_ns = params::parse_time(p.get("start"), end_ns - HOUR_NS, "start")?;
    if end_ns < start_ns {
        return Err(ApiError::BadRequest(
            "end timestamp must not be before or equal to start time".into(),
        ));
    }
    let step_ns = params::range_step(p, start_ns, end_ns, params::TOO_MANY_POINTS)?;
    let limit = parse_limit(p)?;
    let direction = parse_direction(p)?;
    check_limits(state, &tenant, &expr, limit, start_ns, end_ns)?;
    Ok(QueryRequest {
        tenant,
        query,
        start_ns,
        end_ns,
        step_ns,
        limit,
        direction,
        instant: false,
        categorize_labels: categorize(headers),
    })
}

/// `GET|POST /loki/api/v1/query` (instant).
pub async fn query_instant(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let tenant = params::tenant(&headers, state.config.auth_enabled)?;
    let p = Params::collect(&method, raw.as_deref(), &headers, &body);
    let (query, expr) = parse_query(&p)?;
    if matches!(expr, Expr::Log(_)) {
        return Err(ApiError::BadRequest(
            "log queries are not supported as an instant query type, please change your query to a range query type"
                .into(),
        ));
    }
    let time_ns = params::parse_time(p.get("time"), params::now_ns(), "time")?;
    let limit = parse_limit(&p)?;
    let direction = parse_direction(&p)?;
    check_limits(&state, &tenant, &expr, limit, time_ns, time_ns)?;
    let req = QueryRequest {
        tenant,
        query,
        start_ns: time_ns,
        end_ns: time_ns,
        step_ns: 0,
        limit,
        direction,
        instant: true,
        categorize_labels: categorize(&headers),
    };
    run(&state, req).await
}

/// Legacy `GET /api/prom/query`: log queries answered in the old `streams`/`entries` shape.
pub async fn legacy_query(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let tenant = params::tenant(&headers, state.config.auth_enabled)?;
    let p = Params::collect(&method, raw.as_deref(), &headers, &body);
    let req = range_request(&state, &p, &HeaderMap::new(), tenant)?;
    let Json(v) = run(&state, req).await?;
    let Some(result) = v.pointer("/data/result").and_then(Value::as_array) else {
        return Ok(Json(v));
    };
    if v.pointer("/data/resultType").and_then(Value::as_str) != Some("streams") {
        return Ok(Json(v));
    }
    let streams: Vec<Value> = result
        .iter()
        .map(|s| {
            let labels = s
                .get("stream")
                .and_then(Value::as_object)
                .map(|m| {
                    let inner: Vec<String> = m
                        .iter()
                        .map(|(k, v)| {
                            format!(
                                "{k}={}",
                                serde_json::to_string(v.as_str().unwrap_or("")).unwrap_or_default()
                            )
                        })
                        .collect();
                    format!("{{{}}}", inner.join(", "))
                })
                .unwrap_or_else(|| "{}".into());
            let entries: Vec<Value> = s
                .get("values")
                .and_then(Value::as_array)
                .map(|vals| {
                    vals.iter()
                        .map(|e| {
                            let ts: i64 = e
                                .get(0)
                                .and_then(Value::as_str)
                                .and_then(|t| t.parse().ok())
                                .unwrap_or(0);
                            let ts = chrono::DateTime::from_timestamp(
                                ts.div_euclid(1_000_000_000),
                                ts.rem_euclid(1_000_000_000) as u32,
                            )
                            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                            .unwrap_or_default();
                            json!({"ts": ts, "line": e.get(1).cloned().unwrap_or(Value::Null)})
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({"labels": labels, "entries": entries})
        })
        .collect();
    Ok(Json(json!({ "streams": streams })))
}
