//! A read replica (`storage.role: reader`) answers every read and refuses every write with
//! 503 before the request body is read: pushes (Loki, legacy, OTLP), rule group changes,
//! delete requests and `/flush`. Storage refuses them too ([`Storage::check_writable`]);
//! this layer only makes the answer early and the same for every write route.
//!
//! [`Storage::check_writable`]: tovlog_storage::Storage::check_writable

use axum::{
    extract::{Request, State},
    http::Method,
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{error::ApiError, AppState};

/// Does `method` on `path` change data (and so need the writer)?
pub fn is_write(method: &Method, path: &str) -> bool {
    let reading = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if path == "/flush" {
        return true;
    }
    if reading {
        return false;
    }
    path.ends_with("/push")
        || path == "/otlp/v1/logs"
        || path.starts_with("/loki/api/v1/delete")
        || path.starts_with("/loki/api/v1/rules/")
        || path.starts_with("/api/prom/rules/")
}

/// The middleware: on a reader, writes get 503 with the reason.
pub async fn refuse_writes(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.storage.is_read_only() && is_write(req.method(), req.uri().path()) {
        let reason = match state.storage.check_writable() {
            Err(e) => e.to_string(),
            Ok(()) => "read-only replica".to_string(),
        };
        return ApiError::Unavailable(reason).into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_told_from_reads() {
        assert!(is_write(&Method::POST, "/loki/api/v1/push"));
        assert!(is_write(&Method::POST, "/api/prom/push"));
        assert!(is_write(&Method::POST, "/otlp/v1/logs"));
        assert!(is_write(&Method::POST, "/loki/api/v1/rules/ns"));
        assert!(is_write(&Method::DELETE, "/api/prom/rules/ns/g"));
        assert!(is_write(&Method::POST, "/loki/api/v1/delete"));
        assert!(is_write(&Method::GET, "/flush"));
        assert!(!is_write(&Method::GET, "/loki/api/v1/delete"));
        assert!(!is_write(&Method::POST, "/loki/api/v1/query_range"));
        assert!(!is_write(&Method::POST, "/prometheus/api/v1/rules"));
        assert!(!is_write(&Method::GET, "/loki/api/v1/rules/ns"));
    }
}
