//! CORS for the push endpoints (`server.cors_allowed_origins`), so a browser front end may
//! post logs directly: a preflight `OPTIONS` is answered here (204), and
//! `Access-Control-Allow-Origin` echoes only a listed origin (or is `*` when `*` is listed).
//! The query API is not covered: it stays same-origin.
//!
//! Written by hand rather than with tower-http's `CorsLayer`: turning on tower-http's `cors`
//! feature changes the build of tower-http that reqwest, object_store, parquet and DataFusion
//! share, which recompiles all of them; the policy here is a few dozen lines.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

/// Methods a cross-origin page may use on the push endpoints.
const ALLOW_METHODS: &str = "POST, OPTIONS";
/// Request headers a cross-origin page may send (compression, tenant, credentials).
const ALLOW_HEADERS: &str = "content-type, content-encoding, x-scope-orgid, authorization";
/// How long a browser may cache a preflight answer (seconds).
const MAX_AGE: &str = "3600";

/// The origins allowed to post.
#[derive(Debug)]
pub struct CorsPolicy {
    any: bool,
    origins: Vec<HeaderValue>,
}

impl CorsPolicy {
    /// The policy for `origins`, or `None` when the list is empty (no CORS headers at all).
    /// Origins that are not valid header values are skipped (`Config::validate` rejects them
    /// at startup).
    pub fn new(origins: &[String]) -> Option<Arc<CorsPolicy>> {
        if origins.is_empty() {
            return None;
        }
        Some(Arc::new(CorsPolicy {
            any: origins.iter().any(|o| o.trim() == "*"),
            origins: origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
                .collect(),
        }))
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if allowed.
    fn allow(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        if self.any {
            Some(HeaderValue::from_static("*"))
        } else {
            // Origins compare as ASCII, scheme and host case-insensitively.
            self.origins
                .iter()
                .find(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
                .map(|_| origin.clone())
        }
    }
}

/// The middleware: answer preflights, add the allow header to actual requests.
pub async fn middleware(
    State(policy): State<Arc<CorsPolicy>>,
    req: Request,
    next: Next,
) -> Response {
    let allow = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| policy.allow(o));
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        h.insert(
            header::VARY,
            HeaderValue::from_static(
                "origin, access-control-request-method, access-control-request-headers",
            ),
        );
        if let Some(allow) = allow {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_METHODS),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(MAX_AGE),
            );
        }
        return resp;
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("origin"));
    if let Some(allow) = allow {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
    }
    resp
}
