//! `ApiError`: the only place an HTTP status is chosen. Loki answers errors as
//! `text/plain; charset=utf-8` with `X-Content-Type-Options: nosniff`; so do we.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad parameters or query: 400.
    #[error("{0}")]
    BadRequest(String),
    /// Missing tenant: 401.
    #[error("no org id")]
    NoOrgId,
    /// Not allowed for this tenant: 403.
    #[error("{0}")]
    Forbidden(String),
    /// Unknown resource: 404.
    #[error("{0}")]
    NotFound(String),
    /// Body too large: 413.
    #[error("{0}")]
    TooLarge(String),
    /// Rate limited: 429.
    #[error("{0}")]
    TooManyRequests(String),
    /// Query too slow: 504.
    #[error("{0}")]
    Timeout(String),
    /// This process cannot do it now (a read replica asked to write, a fenced writer): 503.
    #[error("{0}")]
    Unavailable(String),
    /// Our failure: 500 (details go to the log only).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NoOrgId => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "request failed");
                "internal server error: see the server log".to_string()
            }
            other => {
                tracing::debug!(status = status.as_u16(), error = %other, "request rejected");
                let mut s = other.to_string();
                s.push('\n');
                s
            }
        };
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        resp
    }
}

impl From<crate::ingest::PushError> for ApiError {
    fn from(e: crate::ingest::PushError) -> Self {
        use crate::ingest::PushError;
        match e {
            PushError::Decode(d) => ApiError::BadRequest(d.to_string()),
            PushError::Partial(m) => ApiError::BadRequest(m),
            PushError::RateLimited(m) | PushError::StreamLimited(m) => ApiError::TooManyRequests(m),
            PushError::Storage(s) => ApiError::from(s),
        }
    }
}

impl From<tovlog_storage::Error> for ApiError {
    fn from(e: tovlog_storage::Error) -> Self {
        match e {
            tovlog_storage::Error::ReadOnly(_) => ApiError::Unavailable(e.to_string()),
            // The head is full and cannot be flushed now: clients retry a 503 later.
            tovlog_storage::Error::Backlogged(m) => ApiError::Unavailable(m),
            // A full disk passes (the WAL cuts the failed write back off and takes the next
            // push): retryable, as clients treat 503.
            tovlog_storage::Error::Io { ref source, .. }
                if source.kind() == std::io::ErrorKind::StorageFull =>
            {
                ApiError::Unavailable(format!("disk full, retry later: {e}"))
            }
            e => ApiError::Internal(e.to_string()),
        }
    }
}
