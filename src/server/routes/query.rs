//! `query_range`, `query` (instant) and the legacy `/api/prom/query`: parameter parsing and
//! validation with Loki's rules and messages, then the query engine.

use axum::{
    body::Bytes,
    extract::{RawQuery, State},
    http::{HeaderMap, Method},
    Json,
};
use serde_json::{json, Value};
use tovlog_logql::ast::Expr;

use crate::{
    query::{QueryError, QueryRequest},
    server::{
        error::ApiError,
        params::{self, Params},
        AppState,
    },
};

pub(super) fn categorize(headers: &HeaderMap) -> bool {
    headers
        .get_all("x-loki-response-encoding-flags")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|f| f.trim() == "categorize-labels"))
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
        if let Some(e) = crate::query::range_limit_error(sample, l.max_query_range) {
            return Err(ApiError::BadRequest(e));
        }
    }
    Ok(())
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
    let params::RangeParams {
        query,
        expr,
        start_ns,
        end_ns,
        step_ns,
        limit,
        direction,
    } = params::range_params(p, params::now_ns())?;
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
    let (query, expr) = params::parse_query(&p)?;
    if matches!(expr, Expr::Log(_)) {
        return Err(ApiError::BadRequest(
            "log queries are not supported as an instant query type, please change your query to a range query type"
                .into(),
        ));
    }
    let time_ns = params::parse_time(p.get("time"), params::now_ns(), "time")?;
    let limit = params::parse_limit(&p)?;
    let direction = params::parse_direction(&p)?;
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
