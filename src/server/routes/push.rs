//! `POST /loki/api/v1/push` (and legacy `/api/prom/push`): 204 once the WAL has the entries.

use axum::{
    body::Bytes,
    extract::State,
    http::{header, HeaderMap, StatusCode},
};

use crate::server::{error::ApiError, params, AppState};

/// Push handler.
pub async fn push(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let tenant = params::tenant(&headers, state.config.auth_enabled)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    state
        .ingester
        .push(&tenant, &body, content_type, content_encoding)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
