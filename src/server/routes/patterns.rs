//! `GET|POST /loki/api/v1/patterns`: parameters with Loki's rules and messages, then the
//! engine's pattern mining over stored data (`crate::query::PatternsRequest`).

use axum::{
    body::Bytes,
    extract::{RawQuery, State},
    http::{HeaderMap, Method},
    Json,
};
use serde_json::Value;

use crate::{
    query::PatternsRequest,
    server::{
        error::ApiError,
        params::{self, Params},
        AppState,
    },
};

const HOUR_NS: i64 = 3_600_000_000_000;

/// Parse and validate a patterns request.
fn request(p: &Params, tenant: String) -> Result<PatternsRequest, ApiError> {
    // Loki parses a missing query as an empty one: a parse error.
    let query = p.get("query").unwrap_or_default().to_string();
    let end_ns = params::parse_time(p.get("end"), params::now_ns(), "end")?;
    let start_ns = params::parse_time(p.get("start"), end_ns - HOUR_NS, "start")?;
    if end_ns < start_ns {
        return Err(ApiError::BadRequest(
            "end timestamp must not be before or equal to start time".into(),
        ));
    }
    let step_ns = params::range_step(
        p,
        start_ns,
        end_ns,
        "exceeded maximum resolution of 11,000 points per time series. Try increasing the value of the step parameter",
    )?;
    Ok(PatternsRequest {
        tenant,
        query,
        start_ns,
        end_ns,
        step_ns,
    })
}

/// `GET|POST /loki/api/v1/patterns`.
pub async fn patterns(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let tenant = params::tenant(&headers, state.config.auth_enabled)?;
    let p = Params::collect(&method, raw.as_deref(), &headers, &body);
    let req = request(&p, tenant)?;
    let result = state.engine.patterns(req).await;
    state.metrics.query(result.is_err());
    Ok(Json(result?))
}
