//! `POST /otlp/v1/logs`: OTLP/HTTP logs, as Grafana Loki serves them. The body (protobuf or
//! OTLP/JSON, optionally gzip/deflate) is decoded and mapped by [`crate::ingest::otlp`], then
//! takes the Loki push's validation, limits and WAL path ([`crate::ingest::Ingester::push_streams`]).
//!
//! Answers follow the OTLP/HTTP spec: 200 with an `ExportLogsServiceResponse` in the request's
//! encoding (with `partial_success` when some records were rejected and others stored);
//! otherwise a `google.rpc.Status` in the request's encoding: 400 for an unreadable body or
//! when every record was rejected, 401 without a tenant, 429 over the ingestion rate, 503 when
//! the WAL failed (nothing stored, the exporter retries); 415 (plain text) for any other
//! `Content-Type`.

use axum::{
    body::Bytes,
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

use crate::{
    ingest::{
        decode,
        otlp::{self, Format},
        PushError,
    },
    server::{error::ApiError, params, AppState},
};

/// gRPC status codes carried in `google.rpc.Status.code`.
const INVALID_ARGUMENT: i32 = 3;
const RESOURCE_EXHAUSTED: i32 = 8;
const UNAVAILABLE: i32 = 14;
const UNAUTHENTICATED: i32 = 16;

/// The OTLP logs handler.
pub async fn logs(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let Some(format) = Format::from_content_type(content_type) else {
        let mut resp = ApiError::BadRequest(format!(
            "unsupported Content-Type {:?}: use application/x-protobuf or application/json",
            content_type.unwrap_or("")
        ))
        .into_response();
        *resp.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return resp;
    };
    let tenant = match params::tenant(&headers, state.config.auth_enabled) {
        Ok(t) => t,
        Err(e @ ApiError::NoOrgId) => {
            return status(
                format,
                StatusCode::UNAUTHORIZED,
                UNAUTHENTICATED,
                &e.to_string(),
            )
        }
        Err(e) => {
            return status(
                format,
                StatusCode::BAD_REQUEST,
                INVALID_ARGUMENT,
                &e.to_string(),
            )
        }
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let inflated = match decode::decompress(&body, encoding) {
        Ok(i) => i,
        Err(e) => return bad_request(format, &e.to_string()),
    };
    let request = match otlp::decode(inflated.as_deref().unwrap_or(&body), format) {
        Ok(r) => r,
        Err(e) => return bad_request(format, &e.to_string()),
    };
    let tenant_limits = state.limits(&tenant);
    let limits = &tenant_limits.limits;
    let opts = otlp::MapOptions {
        discover_service_name: &limits.discover_service_name,
        discover_log_levels: limits.discover_log_levels,
        now_ns: params::now_ns(),
    };
    let streams = match otlp::to_streams(request, &opts) {
        Ok(s) => s,
        Err(e) => return bad_request(format, &e.to_string()),
    };
    match state.ingester.push_streams(&tenant, streams).await {
        Ok(done) if done.accepted == 0 && !done.message.is_empty() => {
            bad_request(format, &done.message)
        }
        Ok(done) => {
            let body = otlp::success_body(format, done.rejected, &done.message);
            with_type(format, StatusCode::OK, body)
        }
        Err(PushError::RateLimited(m)) => status(
            format,
            StatusCode::TOO_MANY_REQUESTS,
            RESOURCE_EXHAUSTED,
            &m,
        ),
        Err(PushError::Storage(e)) => {
            tracing::error!(error = %e, "OTLP push: storage failure");
            status(
                format,
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                "storage failure: see the server log",
            )
        }
        Err(e) => bad_request(format, &e.to_string()),
    }
}

fn bad_request(format: Format, message: &str) -> Response {
    status(format, StatusCode::BAD_REQUEST, INVALID_ARGUMENT, message)
}

fn status(format: Format, http: StatusCode, code: i32, message: &str) -> Response {
    tracing::debug!(status = http.as_u16(), error = %message, "OTLP push rejected");
    with_type(format, http, otlp::status_body(format, code, message))
}

fn with_type(format: Format, http: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (http, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    resp
}
