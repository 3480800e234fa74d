//! The endpoints of Grafana's Logs Drilldown app besides queries and patterns:
//! `detected_fields`, `detected_field/{name}/values`, `detected_labels` and
//! `drilldown-limits`. Parameters are read and checked here with Loki's rules and
//! messages; the detection itself is `query::detected`.

use axum::{
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, Method},
    Json,
};
use serde::Serialize;
use serde_json::{json, Value};
use tovlog_logql::ast::Expr;

use crate::{
    config::duration,
    ingest::validate::LEVEL_KEYS,
    query::detected::{
        self, DetectedField, SampleRequest, SampledEntry, DEFAULT_FIELD_LIMIT, DEFAULT_LINE_LIMIT,
    },
    server::{
        error::ApiError,
        params::{self, Params},
        AppState,
    },
};

use super::labels::{common_with, Common};

const HOUR_NS: i64 = 3_600_000_000_000;

/// Loki's `bounds`: `end` defaults to now, `start` to `since` (default 1h) before the end,
/// or before now when the end is in the future.
fn common(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    raw: Option<&str>,
    body: &[u8],
) -> Result<Common, ApiError> {
    common_with(state, method, headers, raw, body, |p, end_ns| {
        let since_ns = match p.get("since") {
            None => HOUR_NS,
            Some(s) => duration::parse(s)
                .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "could not parse 'since' parameter: not a valid duration string: {s:?}"
                    ))
                })?,
        };
        Ok(end_ns.min(params::now_ns()).saturating_sub(since_ns))
    })
}

/// A positive count parameter (Loki's `parseInt` then its range checks).
fn positive(p: &Params, names: &[&str], default: u32) -> Result<u32, ApiError> {
    let Some((name, text)) = names.iter().find_map(|n| p.get(n).map(|v| (*n, v.trim()))) else {
        return Ok(default);
    };
    let n: i64 = text.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "invalid {name} parameter: cannot parse {text:?} to an integer"
        ))
    })?;
    if n <= 0 {
        return Err(ApiError::BadRequest(
            "limit must be a positive value".into(),
        ));
    }
    u32::try_from(n).map_err(|_| {
        ApiError::BadRequest(format!(
            "{name} value {n} is out of range [0, {}]",
            u32::MAX
        ))
    })
}

/// What `detected_fields` and `detected_field/{name}/values` were asked.
struct FieldsRequest {
    sample: SampleRequest,
    /// Most fields (or values) to return.
    limit: u32,
}

/// Read and check the parameters of the two field endpoints as Loki does: a log query,
/// the time range, `line_limit` (within `max_entries_limit_per_query`), `limit` (or the
/// older `field_limit`) and `step`.
fn fields_request(state: &AppState, c: Common) -> Result<FieldsRequest, ApiError> {
    let p = &c.params;
    let query = p
        .get("query")
        .ok_or_else(|| ApiError::BadRequest("query parameter is required".into()))?;
    let line_limit = positive(p, &["line_limit"], DEFAULT_LINE_LIMIT)?;
    let limit = positive(p, &["limit", "field_limit"], DEFAULT_FIELD_LIMIT)?;
    // Loki validates `step` here though the answer does not use it.
    params::range_step(p, c.start_ns, c.end_ns, params::TOO_MANY_POINTS)?;
    // Checked here so a metric query gets Loki's answer before any limit.
    let expr = tovlog_logql::parse(query).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if !matches!(expr, Expr::Log(_)) {
        return Err(ApiError::BadRequest(format!(
            "invalid query {query:?}: detected fields need a log query (a selector and an optional pipeline), not a metric query"
        )));
    }
    let tenant_limits = state.limits(&c.tenant);
    let l = &tenant_limits.limits;
    if line_limit > l.max_entries_limit_per_query {
        return Err(ApiError::BadRequest(format!(
            "max entries limit per query exceeded, limit > max_entries_limit_per_query ({line_limit} > {})",
            l.max_entries_limit_per_query
        )));
    }
    let max_len = i64::try_from(l.max_query_length.as_nanos()).unwrap_or(i64::MAX);
    if max_len > 0 && c.end_ns.saturating_sub(c.start_ns) > max_len {
        return Err(ApiError::BadRequest(format!(
            "the query time range exceeds the limit (query length: {}s, limit: {}s)",
            c.end_ns.saturating_sub(c.start_ns) / 1_000_000_000,
            max_len / 1_000_000_000
        )));
    }
    Ok(FieldsRequest {
        sample: SampleRequest {
            tenant: c.tenant,
            query: query.to_owned(),
            start_ns: c.start_ns,
            end_ns: c.end_ns,
            line_limit,
        },
        limit,
    })
}

/// Sample the entries fields are detected in, counted as a query.
async fn sample(state: &AppState, req: SampleRequest) -> Result<Vec<SampledEntry>, ApiError> {
    let result = state.engine.sample(req).await;
    state.metrics.query(result.is_err());
    Ok(result?)
}

/// One field of a `detected_fields` answer, in Loki's JSON shape and key order.
#[derive(Debug, Serialize)]
pub struct FieldJson {
    label: String,
    #[serde(rename = "type")]
    field_type: &'static str,
    cardinality: u64,
    /// `null` for structured metadata and fields no parser found in the line.
    parsers: Option<Vec<&'static str>>,
    #[serde(rename = "jsonPath", skip_serializing_if = "Option::is_none")]
    json_path: Option<Vec<String>>,
}

impl From<DetectedField> for FieldJson {
    fn from(f: DetectedField) -> FieldJson {
        FieldJson {
            label: f.label,
            field_type: f.field_type.as_str(),
            cardinality: f.cardinality,
            parsers: (!f.parsers.is_empty())
                .then(|| f.parsers.iter().map(|p| p.as_str()).collect()),
            json_path: f.json_path,
        }
    }
}

/// The `detected_fields` answer.
#[derive(Debug, Serialize)]
pub struct FieldsJson {
    fields: Vec<FieldJson>,
    limit: u32,
}

/// The `detected_field/{name}/values` answer.
#[derive(Debug, Serialize)]
pub struct ValuesJson {
    values: Vec<String>,
    limit: u32,
}

/// `GET|POST /loki/api/v1/detected_fields`: the fields of the newest `line_limit` entries
/// of `query` (default 100), at most `limit` of them (default 1000).
pub async fn detected_fields(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<FieldsJson>, ApiError> {
    let c = common(&state, &method, &headers, raw.as_deref(), &body)?;
    let req = fields_request(&state, c)?;
    let entries = sample(&state, req.sample).await?;
    let fields = detected::detect_fields(&entries, req.limit as usize)?;
    Ok(Json(FieldsJson {
        fields: fields.into_iter().map(FieldJson::from).collect(),
        limit: req.limit,
    }))
}

/// `GET|POST /loki/api/v1/detected_field/{name}/values`: the distinct values of one field
/// in the same sample as `detected_fields`.
pub async fn detected_field_values(
    State(state): State<AppState>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<ValuesJson>, ApiError> {
    let c = common(&state, &method, &headers, raw.as_deref(), &body)?;
    let req = fields_request(&state, c)?;
    let entries = sample(&state, req.sample).await?;
    let values = detected::field_values(&entries, &name, req.limit as usize)?;
    Ok(Json(ValuesJson {
        values,
        limit: req.limit,
    }))
}

/// `GET|POST /loki/api/v1/detected_labels`: the stream labels of the time range (of the
/// streams `query` selects, when given) with their number of values, leaving out what
/// Loki leaves out (see `detected::is_detected_label`).
pub async fn detected_labels(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let c = common(&state, &method, &headers, raw.as_deref(), &body)?;
    let matchers = match c.params.get("query").map(str::trim) {
        None | Some("") => Vec::new(),
        Some(q) => {
            let expr = tovlog_logql::parse(q).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            match expr {
                Expr::Log(log) if log.pipeline.is_empty() => {
                    crate::query::convert_matchers(&log.selector)?
                }
                _ => {
                    return Err(ApiError::BadRequest(
                        "only label matchers is supported".into(),
                    ))
                }
            }
        }
    };
    let names = state
        .storage
        .label_names(&c.tenant, &matchers, c.start_ns, c.end_ns)?;
    let mut labels = Vec::with_capacity(names.len());
    for name in names {
        let values = state
            .storage
            .label_values(&c.tenant, &name, &matchers, c.start_ns, c.end_ns)?;
        labels.push((name, values));
    }
    let detected: Vec<Value> = detected::detected_labels(labels)
        .into_iter()
        .map(|l| json!({"label": l.label, "cardinality": l.cardinality}))
        .collect();
    Ok(Json(json!({ "detectedLabels": detected })))
}

/// `GET /loki/api/v1/drilldown-limits`: the limits Loki publishes to the Drilldown app
/// (its default allow-list), with the tenant's values of the settings tovlog has, whether
/// patterns are served and the version. Limits tovlog does not have are answered with
/// Loki's "disabled" value (`0`, `false`).
pub async fn drilldown_limits(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let tenant = params::tenant(&headers, state.config.auth_enabled)?;
    let tenant_limits = state.limits(&tenant);
    let l = &tenant_limits.limits;
    let limits = json!({
        "discover_log_levels": l.discover_log_levels,
        "discover_service_name": l.discover_service_name,
        "log_level_fields": LEVEL_KEYS,
        "max_entries_limit_per_query": l.max_entries_limit_per_query,
        "max_line_size_truncate": l.max_line_size_truncate,
        "max_query_bytes_read": 0,
        "max_query_length": crate::config::duration::prom(l.max_query_length),
        "max_query_lookback": crate::config::duration::prom(l.max_query_lookback),
        "max_query_range": crate::config::duration::prom(l.max_query_range),
        "max_query_series": l.max_query_series,
        "metric_aggregation_enabled": false,
        "pattern_persistence_enabled": false,
        "query_timeout": crate::config::duration::prom(state.config.query.timeout),
        // Loki publishes the tenant's period whether or not the compactor enforces it.
        "retention_period": crate::config::duration::prom(l.retention_period),
        "volume_enabled": l.volume_enabled,
        "volume_max_series": l.volume_max_series,
    });
    Ok(Json(json!({
        "limits": limits,
        "pattern_ingester_enabled": true,
        "version": env!("CARGO_PKG_VERSION"),
    })))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn durations_print_as_prometheus_does() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(crate::config::duration::prom(Duration::ZERO), "0s");
        assert_eq!(
            crate::config::duration::prom(Duration::from_secs(300)),
            "5m"
        );
        assert_eq!(crate::config::duration::prom(h(721)), "30d1h");
        assert_eq!(crate::config::duration::prom(h(24 * 14)), "2w");
        assert_eq!(crate::config::duration::prom(h(24 * 365)), "1y");
        assert_eq!(crate::config::duration::prom(h(24 * 366)), "366d");
        assert_eq!(
            crate::config::duration::prom(Duration::from_millis(1500)),
            "1s500ms"
        );
    }
}
