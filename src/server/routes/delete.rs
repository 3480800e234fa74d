//! The log deletion API, as Loki's compactor serves it (`pkg/compactor/deletion/
//! request_handler.go`, `tenant_request_handler.go`): create, list and cancel delete requests,
//! and the tenant's cache generation number. Unlike Loki, a delete takes effect in every query
//! as soon as the POST returns (storage applies it as a tombstone); the compactor removes the
//! lines from the files after `delete_request_cancel_period`, and the request then shows
//! `processed`.
//!
//! ```text
//!  POST|PUT /loki/api/v1/delete?query=…&start=…&end=…  ─► 204, X-Delete-Request-ID
//!  GET      /loki/api/v1/delete                         ─► [{request_id, start_time, …}]
//!  DELETE   /loki/api/v1/delete?request_id=…[&force=…]  ─► 204 | 400 | 404
//!  GET      /loki/api/v1/cache/generation_numbers       ─► "7"
//! ```
//!
//! As in Loki the routes exist only when retention is enabled, and a tenant whose
//! `deletion_mode` is `disabled` gets 403 from every one of them.

use std::sync::Arc;

use axum::{
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use base64::Engine;
use serde_json::{json, Value};
use tovlog_storage::erase::{CancelOutcome, DeleteRequest, DeleteStatus};

use crate::{
    limits::TenantLimits,
    server::{
        error::ApiError,
        params::{self, Params},
        AppState,
    },
};

/// Loki's answer to a tenant whose `deletion_mode` is `disabled`.
pub const DELETION_NOT_AVAILABLE: &str = "deletion is not available for this tenant";

const NOT_FOUND: &str = "could not find delete request with given id";
const BAD_START: &str = "invalid start time: require unix seconds or RFC3339 format";
const BAD_END: &str = "invalid end time: require unix seconds or RFC3339 format";

/// The tenant of a delete API request and its limits; 403 when the tenant may not delete
/// (Loki's `TenantMiddleware`, which runs before any parameter is read).
fn delete_tenant(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(String, Arc<TenantLimits>), ApiError> {
    let tenant = params::tenant(headers, state.config.auth_enabled)?;
    let limits = state.limits(&tenant);
    if !limits.limits.deletion_mode.delete_enabled() {
        return Err(ApiError::Forbidden(DELETION_NOT_AVAILABLE.to_owned()));
    }
    Ok((tenant, limits))
}

/// Only the query string, as Loki reads `r.URL.Query()` (logcli sends nothing else).
fn query_params(raw: Option<&str>) -> Params {
    Params::collect(&axum::http::Method::GET, raw, &HeaderMap::new(), &[])
}

/// Loki's `parseTime` of the delete API, in ms: empty is now; RFC3339; else exactly ten
/// characters of (float) unix seconds.
fn parse_delete_time(value: Option<&str>, now_ms: i64) -> Option<i64> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Some(now_ms);
    };
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Some(t.timestamp_millis());
    }
    if v.len() != 10 {
        return None;
    }
    let f: f64 = v.parse().ok()?;
    if !f.is_finite() {
        return None;
    }
    let secs = f.trunc();
    let ms = ((f - secs) * 1000.0).round();
    Some((secs as i64).saturating_mul(1000).saturating_add(ms as i64))
}

/// Who asked: the tenant, and `/user` when the request names one (Grafana's
/// `X-Grafana-User`, else the user of basic auth). Tenant ids cannot contain `/`.
fn requested_by(tenant: &str, headers: &HeaderMap) -> String {
    let grafana = headers
        .get("x-grafana-user")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned);
    let basic = || {
        let value = headers.get("authorization")?.to_str().ok()?;
        let (scheme, creds) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(creds.trim())
            .ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
        (!user.is_empty()).then(|| user.to_owned())
    };
    match grafana.or_else(basic) {
        Some(user) => format!("{tenant}/{}", user.replace(['\n', '\r'], " ")),
        None => tenant.to_owned(),
    }
}

/// `POST|PUT /loki/api/v1/delete`: record a delete request; 204 with `X-Delete-Request-ID`.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (tenant, _) = delete_tenant(&state, &headers)?;
    let p = query_params(raw.as_deref());
    let query = p
        .get("query")
        .ok_or_else(|| ApiError::BadRequest("query not set".into()))?;
    let compiled = crate::erase::compile_delete(query).map_err(ApiError::BadRequest)?;
    let now_ms = params::now_ns() / 1_000_000;
    let start_ms = match p.get("start") {
        None => return Err(ApiError::BadRequest("start time not set".into())),
        Some(s) => {
            parse_delete_time(Some(s), now_ms).ok_or(ApiError::BadRequest(BAD_START.into()))?
        }
    };
    let end_ms =
        parse_delete_time(p.get("end"), now_ms).ok_or(ApiError::BadRequest(BAD_END.into()))?;
    if end_ms > now_ms {
        return Err(ApiError::BadRequest(
            "deletes in the future are not allowed".into(),
        ));
    }
    if start_ms >= end_ms {
        return Err(ApiError::BadRequest(
            "start time can't be greater than or equal to end time".into(),
        ));
    }
    // Loki shards a request with line filters into `max_interval` pieces; tovlog applies a
    // request whole, but checks the parameter the same way so a client gets the same answers.
    if compiled.line.is_some() {
        check_max_interval(
            p.get("max_interval"),
            state.config.compactor.delete_max_interval,
            end_ms - start_ms,
        )?;
    }
    let by = requested_by(&tenant, &headers);
    let request = state
        .storage
        .add_delete(
            &tenant,
            query,
            start_ms.saturating_mul(1_000_000),
            end_ms.saturating_mul(1_000_000),
            &by,
        )
        .await
        .map_err(|e| match e {
            tovlog_storage::Error::InvalidRequest(m) => ApiError::BadRequest(m),
            other => {
                ApiError::Internal(format!("error adding delete request to the store: {other}"))
            }
        })?;
    state.metrics.delete_received(&tenant);
    tracing::info!(
        delete_request_id = %request.request_id,
        %tenant,
        requested_by = %by,
        query = %query,
        "delete request for user added"
    );
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&request.request_id) {
        resp.headers_mut().insert("x-delete-request-id", v);
    }
    Ok(resp)
}

/// Loki's `max_interval` checks.
fn check_max_interval(
    value: Option<&str>,
    max: std::time::Duration,
    span_ms: i64,
) -> Result<(), ApiError> {
    let Some(v) = value else { return Ok(()) };
    let invalid =
        || ApiError::BadRequest("invalid max_interval: valid time units are 's', 'm', 'h'".into());
    let ns = tovlog_logql::lexer::parse_go_duration(v).map_err(|_| invalid())?;
    if ns < 1_000_000_000 {
        return Err(invalid());
    }
    let max_ns = i64::try_from(max.as_nanos()).unwrap_or(i64::MAX);
    if max_ns != 0 && ns > max_ns {
        return Err(ApiError::BadRequest(format!(
            "max_interval can't be greater than {}",
            tovlog_logql::format::go_duration(max_ns)
        )));
    }
    let span_ns = span_ms.saturating_mul(1_000_000);
    if ns > span_ns {
        return Err(ApiError::BadRequest(format!(
            "max_interval can't be greater than the interval to be deleted ({})",
            tovlog_logql::format::go_duration(span_ns)
        )));
    }
    Ok(())
}

/// A timestamp in ms as Prometheus' `model.Time` encodes it in JSON: a number of seconds,
/// with the milliseconds as decimals only when there are any (`1591616227`, `1591616227.5`).
fn model_time(ms: i64) -> Value {
    if ms % 1000 == 0 {
        Value::from(ms / 1000)
    } else {
        serde_json::Number::from_f64(ms as f64 / 1000.0).map_or(Value::Null, Value::Number)
    }
}

/// Loki's status text.
fn status_text(s: DeleteStatus) -> &'static str {
    match s {
        DeleteStatus::Received => "received",
        DeleteStatus::Processed => "processed",
        DeleteStatus::Cancelled => "cancelled",
    }
}

/// One request in Loki's JSON shape (`deletionproto.DeleteRequest`, `user_id` blanked as
/// Loki does), plus the audit fields tovlog keeps.
fn request_json(r: &DeleteRequest) -> Value {
    json!({
        "request_id": r.request_id,
        "start_time": model_time(r.start_ns.div_euclid(1_000_000)),
        "end_time": model_time(r.end_ns.div_euclid(1_000_000)),
        "query": r.query,
        "status": status_text(r.status),
        "created_at": model_time(r.created_ms),
        "user_id": "",
        "requested_by": r.requested_by,
        "lines_removed": r.lines_removed,
        "finished_at": r.finished_ms.map(model_time),
    })
}

/// `GET /loki/api/v1/delete`: the tenant's delete requests, oldest first. As in Loki,
/// cancelled requests are left out; `include_cancelled=true` (tovlog) lists the whole
/// append-only record. `start` and `end` together keep the requests overlapping them;
/// `for_querytime_filtering=true` keeps those not yet processed.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (tenant, _) = delete_tenant(&state, &headers)?;
    let p = query_params(raw.as_deref());
    let now_ms = params::now_ns() / 1_000_000;
    let range = match (p.get("start"), p.get("end")) {
        (Some(s), Some(e)) => Some((
            parse_delete_time(Some(s), now_ms).ok_or(ApiError::BadRequest(BAD_START.into()))?,
            parse_delete_time(Some(e), now_ms).ok_or(ApiError::BadRequest(BAD_END.into()))?,
        )),
        _ => None,
    };
    let include_cancelled = p.get("include_cancelled") == Some("true");
    let pending_only = p.get("for_querytime_filtering") == Some("true");
    let mut requests = state.storage.deletes(&tenant).await.map_err(|e| {
        ApiError::Internal(format!("error getting delete requests from the store: {e}"))
    })?;
    requests.retain(|r| {
        let status_ok = match r.status {
            DeleteStatus::Cancelled => include_cancelled,
            DeleteStatus::Processed => !pending_only,
            DeleteStatus::Received => true,
        };
        let overlaps = range.is_none_or(|(s, e)| {
            r.start_ns.div_euclid(1_000_000) <= e && r.end_ns.div_euclid(1_000_000) >= s
        });
        status_ok && overlaps
    });
    requests.sort_by(|a, b| {
        a.created_ms
            .cmp(&b.created_ms)
            .then_with(|| a.request_id.cmp(&b.request_id))
    });
    let body: Vec<Value> = requests.iter().map(request_json).collect();
    Ok(Json(Value::Array(body)).into_response())
}

/// `DELETE /loki/api/v1/delete?request_id=…`: cancel a request within the cancel period
/// (204); 404 for an unknown (or already cancelled) id; 400 once it is processed or past
/// the period.
pub async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, ApiError> {
    let (tenant, _) = delete_tenant(&state, &headers)?;
    let p = query_params(raw.as_deref());
    let id = p.get("request_id").unwrap_or_default();
    let force = p.get("force") == Some("true");
    let requests = state.storage.deletes(&tenant).await.map_err(|e| {
        ApiError::Internal(format!("error getting delete request from the store: {e}"))
    })?;
    let found = requests.iter().find(|r| r.request_id == id);
    match found.map(|r| r.status) {
        None | Some(DeleteStatus::Cancelled) => return Err(ApiError::NotFound(NOT_FOUND.into())),
        Some(DeleteStatus::Processed) => {
            return Err(ApiError::BadRequest(
                "deletion of request which is in process or already processed is not allowed"
                    .into(),
            ))
        }
        Some(DeleteStatus::Received) => {}
    }
    let outcome = state
        .storage
        .cancel_delete(&tenant, id)
        .await
        .map_err(|e| ApiError::Internal(format!("error cancelling the delete request: {e}")))?;
    match outcome {
        CancelOutcome::Cancelled => {
            tracing::info!(delete_request_id = %id, %tenant, "delete request cancelled");
            Ok(StatusCode::NO_CONTENT)
        }
        CancelOutcome::NotFound => Err(ApiError::NotFound(NOT_FOUND.into())),
        CancelOutcome::TooLate => {
            let period = tovlog_logql::format::go_duration(
                i64::try_from(
                    state
                        .config
                        .storage
                        .compaction
                        .delete_request_cancel_period
                        .0
                        .as_nanos(),
                )
                .unwrap_or(i64::MAX),
            );
            Err(ApiError::BadRequest(if force {
                format!(
                    "Cancellation of delete request past the deadline of {period} since its creation is not allowed: tovlog may already have removed its lines from the files, so force is not supported"
                )
            } else {
                format!(
                    "Cancellation of partially completed delete request or delete request past the deadline of {period} since its creation is not allowed. To force, use the ?force query parameter"
                )
            }))
        }
    }
}

/// `GET /loki/api/v1/cache/generation_numbers`: the tenant's delete generation as a JSON
/// string (Loki's type); it changes whenever a delete request is added or cancelled, so a
/// results cache keyed on it never serves deleted lines.
pub async fn generation_numbers(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (tenant, _) = delete_tenant(&state, &headers)?;
    Ok(Json(Value::String(
        state.storage.delete_generation(&tenant).to_string(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_times_parse_as_loki_does() {
        let now = 1_700_000_000_123;
        assert_eq!(parse_delete_time(None, now), Some(now));
        assert_eq!(parse_delete_time(Some(""), now), Some(now));
        assert_eq!(
            parse_delete_time(Some("1591616227"), now),
            Some(1_591_616_227_000)
        );
        assert_eq!(
            parse_delete_time(Some("2020-06-08T11:37:07Z"), now),
            Some(1_591_616_227_000)
        );
        assert_eq!(
            parse_delete_time(Some("2020-06-08T11:37:07.25+00:00"), now),
            Some(1_591_616_227_250)
        );
        // Not ten characters: neither ms nor ns timestamps are seconds.
        assert_eq!(parse_delete_time(Some("1591616227000"), now), None);
        assert_eq!(parse_delete_time(Some("yesterday!"), now), None);
        assert_eq!(parse_delete_time(Some("159161622"), now), None);
    }

    #[test]
    fn times_encode_as_model_time() {
        assert_eq!(model_time(1_591_616_227_000).to_string(), "1591616227");
        assert_eq!(model_time(1_591_616_227_500).to_string(), "1591616227.5");
        assert_eq!(model_time(1_591_616_227_123).to_string(), "1591616227.123");
    }

    #[test]
    fn requested_by_names_the_user_when_known() {
        let mut h = HeaderMap::new();
        assert_eq!(requested_by("t1", &h), "t1");
        h.insert(
            "authorization",
            HeaderValue::from_static("Basic YWxpY2U6c2VjcmV0"),
        );
        assert_eq!(requested_by("t1", &h), "t1/alice");
        h.insert("x-grafana-user", HeaderValue::from_static("bob"));
        assert_eq!(requested_by("t1", &h), "t1/bob");
    }

    #[test]
    fn max_interval_is_checked_as_loki_does() {
        let day = std::time::Duration::from_secs(86_400);
        let hour_ms = 3_600_000;
        assert!(check_max_interval(None, day, hour_ms).is_ok());
        assert!(check_max_interval(Some("30m"), day, hour_ms).is_ok());
        let msg = |v, max, span| {
            check_max_interval(Some(v), max, span)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            msg("1d", day, hour_ms),
            "invalid max_interval: valid time units are 's', 'm', 'h'"
        );
        assert_eq!(
            msg("500ms", day, hour_ms),
            "invalid max_interval: valid time units are 's', 'm', 'h'"
        );
        assert_eq!(
            msg("48h", day, 100 * hour_ms),
            "max_interval can't be greater than 24h0m0s"
        );
        assert_eq!(
            msg("2h", day, hour_ms),
            "max_interval can't be greater than the interval to be deleted (1h0m0s)"
        );
    }
}
