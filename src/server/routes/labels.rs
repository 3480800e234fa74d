//! Index endpoints answered from the label index (and the head): labels, label values, series,
//! `index/stats`, `index/volume` and `index/volume_range`.

use std::collections::BTreeMap;

use axum::{
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, Method},
    Json,
};
use serde_json::{json, Value};
use tovlog_logql::ast::Expr;
use tovlog_storage::{Matcher, StreamVolume};

use crate::server::{
    error::ApiError,
    params::{self, Params},
    AppState,
};

const HOUR_NS: i64 = 3_600_000_000_000;

/// A group key of `index/volume`: label pairs.
type GroupKey = Vec<(String, String)>;

/// Labels Grafana and Loki treat as internal: never indexed, so their values are always empty.
const INTERNAL_LABELS: [&str; 3] = ["__stream_shard__", "__aggregated_metric__", "__tenant_id__"];

/// Convert the matchers of a LogQL stream selector (ignoring any pipeline) into storage matchers.
pub fn selector_matchers(query: &str) -> Result<Vec<Matcher>, ApiError> {
    let expr = tovlog_logql::parse(query).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let Expr::Log(log) = expr else {
        return Err(ApiError::BadRequest(format!(
            "expected a stream selector, got a metric query: {query}"
        )));
    };
    Ok(crate::query::convert_matchers(&log.selector)?)
}

/// A request's tenant, form values and time range.
pub(super) struct Common {
    pub(super) tenant: String,
    pub(super) params: Params,
    pub(super) start_ns: i64,
    pub(super) end_ns: i64,
}

fn common(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    raw: Option<&str>,
    body: &[u8],
) -> Result<Common, ApiError> {
    common_with(state, method, headers, raw, body, |_, end_ns| {
        Ok(end_ns - 6 * HOUR_NS)
    })
}

/// Tenant, form values and `[start, end]`: `end` defaults to now, `start` to what
/// `default_start` derives from the form and the end (each endpoint has Loki's own default).
pub(super) fn common_with(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    raw: Option<&str>,
    body: &[u8],
    default_start: impl FnOnce(&Params, i64) -> Result<i64, ApiError>,
) -> Result<Common, ApiError> {
    let tenant = params::tenant(headers, state.config.auth_enabled)?;
    let p = Params::collect(method, raw, headers, body);
    let end_ns = params::parse_time(p.get("end"), params::now_ns(), "end")?;
    let start_default = default_start(&p, end_ns)?;
    let start_ns = params::parse_time(p.get("start"), start_default, "start")?;
    if end_ns < start_ns {
        return Err(ApiError::BadRequest(
            "end timestamp must not be before or equal to start time".into(),
        ));
    }
    Ok(Common {
        tenant,
        params: p,
        start_ns,
        end_ns,
    })
}

fn optional_matchers(p: &Params) -> Result<Vec<Matcher>, ApiError> {
    match p.get("query") {
        Some(q) => selector_matchers(q),
        None => Ok(Vec::new()),
    }
}

/// `GET /loki/api/v1/labels`.
pub async fn labels(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let c = common(&state, &method, &headers, raw.as_deref(), &body)?;
    let matchers = optional_matchers(&c.params)?;
    let names = state
        .storage
        .label_names(&c.tenant, &matchers, c.start_ns, c.end_ns)?;
    Ok(Json(json!({"status": "success", "data": names})))
}

/// `GET /loki/api/v1/label/{name}/values`.
pub async fn label_values(
    State(state): State<AppState>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let c = common(&state, &method, &headers, raw.as_deref(), &body)?;
    if INTERNAL_LABELS.contains(&name.as_str()) {
        return Ok(Json(json!({"status": "success", "data": []})));
    }
    let matchers = optional_matchers(&c.params)?;
    let values = state
        .storage
        .label_values(&c.tenant, &name, &matchers, c.start_ns, c.end_ns)?;
    Ok(Json(json!({"status": "success", "data": values})))
}

/// `GET|POST /loki/api/v1/series` with one or more `match[]` (or `match`, as logcli sends).
pub async fn series(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let c = common(&state, &method, &headers, raw.as_deref(), &body)?;
    let mut selectors: Vec<&str> = c.params.all("match[]");
    selectors.extend(c.params.all("match"));
    selectors.retain(|s| !s.trim().is_empty());
    selectors.sort_unstable();
    selectors.dedup();
    // As Loki: a lone `{}` (spaces ignored) means no matcher, i.e. every series
    // (`logcli series '{}'`).
    if let [only] = selectors.as_slice() {
        if only.replace(' ', "") == "{}" {
            selectors.clear();
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let groups = if selectors.is_empty() {
        vec![Vec::new()]
    } else {
        selectors
            .iter()
            .map(|s| selector_matchers(s))
            .collect::<Result<Vec<_>, _>>()?
    };
    for matchers in groups {
        for s in state
            .storage
            .series(&c.tenant, &matchers, c.start_ns, c.end_ns)?
        {
            if seen.insert(s.id) {
                let map: serde_json::Map<String, Value> = s
                    .labels
                    .pairs()
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                out.push(Value::Object(map));
            }
        }
    }
    Ok(Json(json!({"status": "success", "data": out})))
}

fn required_selector(p: &Params) -> Result<Vec<Matcher>, ApiError> {
    let q = p
        .get("query")
        .ok_or_else(|| ApiError::BadRequest("query parameter is required".into()))?;
    selector_matchers(q)
}

/// `GET /loki/api/v1/index/stats`: `{"streams","chunks","entries","bytes"}`.
pub async fn index_stats(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let c = common(&state, &method, &headers, raw.as_deref(), &body)?;
    let matchers = required_selector(&c.params)?;
    let vols = state
        .storage
        .volumes(&c.tenant, &matchers, c.start_ns, c.end_ns)
        .await?;
    let streams = vols.iter().filter(|v| v.entries > 0).count();
    let (chunks, entries, bytes) = vols.iter().fold((0u64, 0u64, 0u64), |a, v| {
        (a.0 + v.chunks, a.1 + v.entries, a.2 + v.bytes)
    });
    Ok(Json(
        json!({"streams": streams, "chunks": chunks, "entries": entries, "bytes": bytes}),
    ))
}

/// How `index/volume` groups streams.
struct VolumeGrouping {
    by_labels: bool,
    targets: Vec<String>,
    limit: usize,
}

fn volume_grouping(
    state: &AppState,
    tenant: &str,
    p: &Params,
    matchers: &[Matcher],
) -> Result<VolumeGrouping, ApiError> {
    let tenant_limits = state.limits(tenant);
    if !tenant_limits.limits.volume_enabled {
        return Err(ApiError::NotFound("volume not enabled".into()));
    }
    let by_labels = match p.get("aggregateBy") {
        None | Some("series") => false,
        Some("labels") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "invalid aggregateBy {other:?}: use series or labels"
            )))
        }
    };
    let mut targets: Vec<String> = p
        .get("targetLabels")
        .map(|t| {
            t.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if targets.is_empty() && !by_labels {
        for m in matchers {
            if !targets.contains(&m.name) {
                targets.push(m.name.clone());
            }
        }
    }
    let limit = match p.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::BadRequest(format!("invalid limit {l:?}")))?,
        None => 100,
    };
    let limit = if limit == 0 {
        100
    } else {
        limit.min(tenant_limits.limits.volume_max_series)
    };
    Ok(VolumeGrouping {
        by_labels,
        targets,
        limit,
    })
}

fn group_volumes(
    g: &VolumeGrouping,
    vols: &[StreamVolume],
) -> BTreeMap<Vec<(String, String)>, u64> {
    let mut groups: BTreeMap<Vec<(String, String)>, u64> = BTreeMap::new();
    for v in vols.iter().filter(|v| v.entries > 0) {
        // Loki's index keeps chunk sizes in whole KiB, so its volumes are per-stream sizes rounded
        // down to KiB (a tiny stream weighs 0). Reproduced so Grafana shows the same figures.
        let bytes = v.bytes / 1024 * 1024;
        if g.by_labels {
            for (name, _) in v.series.labels.pairs() {
                if g.targets.is_empty() || g.targets.contains(name) {
                    *groups
                        .entry(vec![(name.clone(), String::new())])
                        .or_default() += bytes;
                }
            }
        } else {
            let key: Vec<(String, String)> = g
                .targets
                .iter()
                .filter_map(|t| {
                    v.series
                        .labels
                        .get(t)
                        .map(|val| (t.clone(), val.to_string()))
                })
                .collect();
            *groups.entry(key).or_default() += bytes;
        }
    }
    groups
}

fn metric(key: &[(String, String)]) -> Value {
    Value::Object(
        key.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn seconds(ts_ns: i64) -> Value {
    if ts_ns % 1_000_000_000 == 0 {
        json!(ts_ns / 1_000_000_000)
    } else {
        json!(ts_ns as f64 / 1e9)
    }
}

/// `GET /loki/api/v1/index/volume`: bytes per group as a vector at `end`, largest first.
pub async fn volume(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let c = common(&state, &method, &headers, raw.as_deref(), &body)?;
    let matchers = required_selector(&c.params)?;
    let g = volume_grouping(&state, &c.tenant, &c.params, &matchers)?;
    let vols = state
        .storage
        .volumes(&c.tenant, &matchers, c.start_ns, c.end_ns)
        .await?;
    let mut groups: Vec<_> = group_volumes(&g, &vols).into_iter().collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    groups.truncate(g.limit);
    let result: Vec<Value> = groups
        .iter()
        .map(|(k, bytes)| json!({"metric": metric(k), "value": [seconds(c.end_ns), bytes.to_string()]}))
        .collect();
    Ok(Json(
        json!({"status": "success", "data": {"resultType": "vector", "result": result}}),
    ))
}

/// `GET /loki/api/v1/index/volume_range`: bytes per group per step bucket as a matrix. Bucket k
/// covers `[start + (k-1)·step, start + k·step)` and is stamped 1 ms before its end, the last one
/// at `end` (Loki's stamping).
pub async fn volume_range(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let c = common(&state, &method, &headers, raw.as_deref(), &body)?;
    let matchers = required_selector(&c.params)?;
    let g = volume_grouping(&state, &c.tenant, &c.params, &matchers)?;
    let step_ns = match c.params.get("step") {
        Some(s) => params::parse_step(s)?,
        None => params::default_step_ns(c.start_ns, c.end_ns),
    };
    if step_ns <= 0 {
        return Err(ApiError::BadRequest(
            "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
        ));
    }
    if (c.end_ns - c.start_ns) / step_ns > 11_000 {
        return Err(ApiError::BadRequest(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
                .into(),
        ));
    }
    let mut series: BTreeMap<GroupKey, Vec<(i64, u64)>> = BTreeMap::new();
    let mut bucket_start = c.start_ns;
    while bucket_start < c.end_ns {
        let bucket_end = (bucket_start + step_ns).min(c.end_ns);
        let stamp = if bucket_end >= c.end_ns {
            c.end_ns
        } else {
            bucket_end - 1_000_000
        };
        let vols = state
            .storage
            .volumes(&c.tenant, &matchers, bucket_start, bucket_end)
            .await?;
        for (k, bytes) in group_volumes(&g, &vols) {
            series.entry(k).or_default().push((stamp, bytes));
        }
        bucket_start = bucket_end;
    }
    let mut ranked: Vec<_> = series.into_iter().collect();
    ranked.sort_by(|a, b| {
        let ta: u64 = a.1.iter().map(|p| p.1).sum();
        let tb: u64 = b.1.iter().map(|p| p.1).sum();
        tb.cmp(&ta).then_with(|| a.0.cmp(&b.0))
    });
    ranked.truncate(g.limit);
    let result: Vec<Value> = ranked
        .iter()
        .map(|(k, points)| {
            let values: Vec<Value> = points
                .iter()
                .map(|(t, b)| json!([seconds(*t), b.to_string()]))
                .collect();
            json!({"metric": metric(k), "values": values})
        })
        .collect();
    Ok(Json(
        json!({"status": "success", "data": {"resultType": "matrix", "result": result}}),
    ))
}
