//! Operational endpoints: readiness, metrics, build info, running config, `format_query`.

use axum::{
    body::Bytes,
    extract::{RawQuery, State},
    http::{header, HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

use crate::server::{error::ApiError, params::Params, AppState};

/// `GET /ready`: the server binds only after the WAL is replayed, so answering means ready.
pub async fn ready() -> &'static str {
    "ready\n"
}

/// `POST /flush` (Loki's ingester endpoint): write the whole head to chunk files now;
/// 204 once they are published.
pub async fn flush(State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    state.storage.flush().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut body = state.metrics.render(&state.storage.metrics());
    body.push_str(&state.ingester.tails().render_metrics());
    state.ruler.render_metrics(&mut body);
    body.push_str(&state.auth.render());
    if let Some(s) = state.engine.scheduler() {
        body.push_str(&s.render_metrics());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// `GET /loki/api/v1/status/buildinfo` in Loki's shape.
pub async fn buildinfo() -> Json<serde_json::Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": option_env!("TOVLOG_GIT_REVISION").unwrap_or("unknown"),
        "branch": "main",
        "buildUser": "tovlog",
        "buildDate": "unknown",
        "goVersion": "",
    }))
}

/// `GET /config`: the running configuration as YAML.
pub async fn config(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state
        .config
        .to_masked_yaml()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "text/yaml; charset=utf-8")], text).into_response())
}

/// `GET|POST /loki/api/v1/format_query?query=…`: the canonical form of a query.
pub async fn format_query(
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let p = Params::collect(&method, query.as_deref(), &headers, &body);
    let q = p
        .get("query")
        .ok_or_else(|| ApiError::BadRequest("query parameter is required".into()))?;
    let expr = tovlog_logql::parse(q).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Json(
        json!({"status": "success", "data": tovlog_logql::format::format(&expr)}),
    ))
}
