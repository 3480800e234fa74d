//! The ruler's HTTP APIs, as Loki serves them:
//! - rules configuration (`/loki/api/v1/rules…` and `/api/prom/rules…`): YAML groups per
//!   namespace, stored in the chunks' object store, with Loki's status codes and texts;
//! - read API (`/prometheus/api/v1/rules`, `/prometheus/api/v1/alerts`, also under
//!   `/api/prom/api/v1/`): Prometheus' JSON with the filters Grafana sends.

use std::collections::{BTreeMap, HashSet};

use axum::{
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{header, HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{json, Value};

use crate::{
    ruler::{
        group::{self, RuleGroup},
        manager::GroupView,
        state::{ActiveAlert, AlertState},
    },
    server::{
        error::ApiError,
        params::{self, Params},
        AppState,
    },
};

/// Loki's texts.
const NO_RULE_GROUPS: &str = "no rule groups found";
const GROUP_NOT_FOUND: &str = "group does not exist";
const NAMESPACE_NOT_FOUND: &str = "group namespace does not exist";

fn api_enabled(state: &AppState) -> Result<(), ApiError> {
    if state.config.ruler.enable_api {
        Ok(())
    } else {
        Err(ApiError::NotFound("404 page not found".into()))
    }
}

/// A namespace or group name from the path; Loki refuses names that leave their directory.
fn check_name(kind: &str, name: &str) -> Result<(), ApiError> {
    let local = !name.is_empty()
        && !name.starts_with('/')
        && !name.split(['/', '\\']).any(|seg| seg == "..");
    if local {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid {kind}: path traversal not allowed"
        )))
    }
}

fn yaml_response<T: serde::Serialize>(v: &T) -> Result<Response, ApiError> {
    let body = serde_yaml::to_string(v).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/yaml")], body).into_response())
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"status": "success"}).to_string(),
    )
        .into_response()
}

fn internal(e: anyhow::Error) -> ApiError {
    ApiError::Internal(format!("{e:#}"))
}

async fn resync(state: &AppState) {
    if let Err(e) = state.ruler.sync().await {
        tracing::warn!(error = %e, "ruler: applying a rules change failed");
    }
}

/// `GET /loki/api/v1/rules`: every namespace of the tenant.
pub async fn list_all(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api_enabled(&state)?;
    let tenant = params::tenant(&headers, state.config.auth_enabled)?;
    let all = state.ruler.store().list(&tenant).await.map_err(internal)?;
    if all.is_empty() {
        return Err(ApiError::NotFound(NO_RULE_GROUPS.into()));
    }
    yaml_response(&all)
}

/// `GET /loki/api/v1/rules/{namespace}`.
pub async fn list_namespace(
    State(state): State<AppState>,
    Path(namespace): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api_enabled(&state)?;
    let tenant = params::tenant(&headers, state.config.auth_enabled)?;
    check_name("namespace", &namespace)?;
    let mut all = state.ruler.store().list(&tenant).await.map_err(internal)?;
    let Some(groups) = all.remove(&namespace) else {
        return Err(ApiError::NotFound(NO_RULE_GROUPS.into()));
    };
    let one: BTreeMap<String, Vec<RuleGroup>> = [(namespace, groups)].into_iter().collect();
    yaml_response(&one)
}

/// `GET /loki/api/v1/rules/{namespace}/{group}`.
pub async fn get_group(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api_enabled(&state)?;
    let tenant = params::tenant(&headers, state.config.auth_enabled)?;
    check_name("namespace", &namespace)?;
    check_name("groupname", &name)?;
    match state
        .ruler
        .store()
        .get(&tenant, &namespace, &name)
        .await
        .map_err(internal)?
    {
        Some(g) => yaml_response(&g),
        None => Err(ApiError::NotFound(GROUP_NOT_FOUND.into())),
    }
}

/// `POST /loki/api/v1/rules/{namespace}`: a YAML group, created or replaced.
pub async fn create_group(
    State(state): State<AppState>,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    api_enabled(&state)?;
    let tenant = params::tenant(&headers, state.config.auth_enabled)?;
    check_name("namespace", &namespace)?;
    let g = group::parse_group(&body).map_err(|e| {
        tracing::debug!(error = %e, "unable to unmarshal rule group payload");
        ApiError::BadRequest(group::ERR_BAD_RULE_GROUP.into())
    })?;
    let errs = group::validate_groups(std::slice::from_ref(&g));
    if !errs.is_empty() {
        return Err(ApiError::BadRequest(errs.join(", ")));
    }
    state
        .ruler
        .store()
        .set(&tenant, &namespace, &g)
        .await
        .map_err(internal)?;
    resync(&state).await;
    Ok(accepted())
}

/// `DELETE /loki/api/v1/rules/{namespace}`.
pub async fn delete_namespace(
    State(state): State<AppState>,
    Path(namespace): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api_enabled(&state)?;
    let tenant = params::tenant(&headers, state.config.auth_enabled)?;
    check_name("namespace", &namespace)?;
    let found = state
        .ruler
        .store()
        .delete_namespace(&tenant, &namespace)
        .await
        .map_err(internal)?;
    if !found {
        return Err(ApiError::NotFound(NAMESPACE_NOT_FOUND.into()));
    }
    resync(&state).await;
    Ok(accepted())
}

/// `DELETE /loki/api/v1/rules/{namespace}/{group}`.
pub async fn delete_group(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    api_enabled(&state)?;
    let tenant = params::tenant(&headers, state.config.auth_enabled)?;
    check_name("namespace", &namespace)?;
    check_name("groupname", &name)?;
    let found = state
        .ruler
        .store()
        .delete(&tenant, &namespace, &name)
        .await
        .map_err(internal)?;
    if !found {
        return Err(ApiError::NotFound(GROUP_NOT_FOUND.into()));
    }
    resync(&state).await;
    Ok(accepted())
}

/// Prometheus' JSON error (`{"status":"error","errorType":…,"error":…}`).
fn json_error(status: StatusCode, kind: &str, msg: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"status": "error", "data": null, "errorType": kind, "error": msg}).to_string(),
    )
        .into_response()
}

fn bad_data(msg: String) -> Response {
    json_error(StatusCode::BAD_REQUEST, "bad_data", msg)
}

fn json_ok(data: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        json!({"status": "success", "data": data}).to_string(),
    )
        .into_response()
}

/// Go's `time.Time` JSON form (RFC 3339 with nanoseconds); 0 is Go's zero time.
fn go_time(ms: i64) -> String {
    if ms == 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

/// Go's `strconv.FormatFloat(v, 'e', -1, 64)`, how Prometheus prints an alert's value.
pub fn go_float_e(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let s = format!("{v:e}");
    match s.split_once('e') {
        Some((mant, exp)) => {
            let e: i32 = exp.parse().unwrap_or(0);
            let sign = if e < 0 { '-' } else { '+' };
            format!("{mant}e{sign}{:02}", e.abs())
        }
        None => s,
    }
}

fn alert_json(a: &ActiveAlert) -> Value {
    let mut v = json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "state": a.state.as_str(),
        "activeAt": go_time(a.active_at),
        "value": go_float_e(a.value),
    });
    if a.keep_firing_since != 0 {
        v["keepFiringSince"] = json!(go_time(a.keep_firing_since));
    }
    v
}

/// A rule label matcher from Grafana's `matcher` parameter: its JSON form
/// (`{"Name":…,"Value":…,"IsRegex":…,"IsEqual":…}`) or `name="value"` (also `!=`, `=~`, `!~`).
struct LabelMatcher {
    name: String,
    equal: bool,
    re: Option<regex::Regex>,
    value: String,
}

impl LabelMatcher {
    fn parse(s: &str) -> Result<LabelMatcher, String> {
        let s = s.trim();
        if s.starts_with('{') {
            if let Ok(v) = serde_json::from_str::<Value>(s) {
                if v.get("Name").is_some() {
                    let name = v["Name"].as_str().unwrap_or_default().to_string();
                    let value = v["Value"].as_str().unwrap_or_default().to_string();
                    let is_regex = v["IsRegex"].as_bool().unwrap_or(false);
                    let equal = v["IsEqual"].as_bool().unwrap_or(true);
                    return LabelMatcher::build(name, equal, is_regex, value);
                }
            }
        }
        let inner = s.trim_start_matches('{').trim_end_matches('}');
        for (op, equal, is_regex) in [
            ("=~", true, true),
            ("!~", false, true),
            ("!=", false, false),
            ("=", true, false),
        ] {
            if let Some((n, v)) = inner.split_once(op) {
                let value = v.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|x| x.strip_suffix('"'))
                    .unwrap_or(value);
                return LabelMatcher::build(
                    n.trim().to_string(),
                    equal,
                    is_regex,
                    value.to_string(),
                );
            }
        }
        Err(format!("invalid matcher {s:?}"))
    }

    fn build(
        name: String,
        equal: bool,
        is_regex: bool,
        value: String,
    ) -> Result<LabelMatcher, String> {
        let re = if is_regex {
            Some(
                regex::Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("invalid matcher regex {value:?}: {e}"))?,
            )
        } else {
            None
        };
        Ok(LabelMatcher {
            name,
            equal,
            re,
            value,
        })
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        let hit = match &self.re {
            Some(re) => re.is_match(v),
            None => v == self.value,
        };
        hit == self.equal
    }
}

/// Opaque pagination token of a group.
fn group_token(namespace: &str, name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.bytes().chain([b';']).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn rule_state(alerts: &[&ActiveAlert]) -> AlertState {
    if alerts.iter().any(|a| a.state == AlertState::Firing) {
        AlertState::Firing
    } else if alerts.iter().any(|a| a.state == AlertState::Pending) {
        AlertState::Pending
    } else {
        AlertState::Inactive
    }
}

fn values<'a>(p: &'a Params, key: &str) -> Vec<&'a str> {
    let mut v = p.all(key);
    v.extend(p.all(&format!("{key}[]")));
    v.retain(|s| !s.is_empty());
    v
}

/// `GET /prometheus/api/v1/rules`.
pub async fn prometheus_rules(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let tenant = params::tenant(&headers, state.config.auth_enabled)?;
    let p = Params::collect(&method, raw.as_deref(), &headers, &body);
    let files: HashSet<&str> = values(&p, "file").into_iter().collect();
    let groups_f: HashSet<&str> = values(&p, "rule_group").into_iter().collect();
    let names: HashSet<&str> = values(&p, "rule_name").into_iter().collect();
    let (want_alert, want_record) = match p.get("type").map(str::to_ascii_lowercase).as_deref() {
        None => (true, true),
        Some("alert") => (true, false),
        Some("record") => (false, true),
        Some(other) => return Ok(bad_data(format!("not supported value {other:?}"))),
    };
    let mut states: HashSet<AlertState> = HashSet::new();
    for s in values(&p, "state") {
        match s.to_ascii_lowercase().as_str() {
            "firing" => states.insert(AlertState::Firing),
            "pending" => states.insert(AlertState::Pending),
            "inactive" => states.insert(AlertState::Inactive),
            other => return Ok(bad_data(format!("unsupported state value {other:?}"))),
        };
    }
    let exclude_alerts = match p.get("exclude_alerts") {
        None => false,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "t" => true,
            "false" | "0" | "f" => false,
            _ => {
                return Ok(bad_data(format!(
                    "parsing exclude_alerts: invalid boolean {v:?}"
                )))
            }
        },
    };
    let mut matchers = Vec::new();
    for m in values(&p, "matcher").into_iter().chain(values(&p, "match")) {
        match LabelMatcher::parse(m) {
            Ok(m) => matchers.push(m),
            Err(e) => return Ok(bad_data(e)),
        }
    }
    let group_limit = match p.get("group_limit") {
        None => None,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n > 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            _ => return Ok(bad_data("group_limit needs to be greater than 0".into())),
        },
    };
    let next_token = p.get("group_next_token");
    let rule_filtered = !names.is_empty()
        || !states.is_empty()
        || !matchers.is_empty()
        || !want_alert
        || !want_record;

    let mut views: Vec<GroupView> = state.ruler.views(&tenant);
    views.sort_by(|a, b| {
        (a.key.namespace.as_str(), a.key.name.as_str())
            .cmp(&(b.key.namespace.as_str(), b.key.name.as_str()))
    });
    if let Some(tok) = next_token {
        match views
            .iter()
            .position(|v| group_token(&v.key.namespace, &v.key.name) == tok)
        {
            Some(i) => {
                views.drain(..i);
            }
            None => return Ok(bad_data("invalid group_next_token".into())),
        }
    }
    let mut out = Vec::new();
    let mut next = None;
    for v in &views {
        if !files.is_empty() && !files.contains(v.key.namespace.as_str()) {
            continue;
        }
        if !groups_f.is_empty() && !groups_f.contains(v.key.name.as_str()) {
            continue;
        }
        let mut rules = Vec::new();
        for (r, st) in v.group.rules.iter().zip(&v.status.rules) {
            if !names.is_empty() && !names.contains(r.name()) {
                continue;
            }
            if (r.is_alert() && !want_alert) || (!r.is_alert() && !want_record) {
                continue;
            }
            let mut labels = v.group.labels.clone();
            labels.extend(r.labels.clone());
            if !matchers.iter().all(|m| m.matches(&labels)) {
                continue;
            }
            let common = |j: &mut Value| {
                j["health"] = json!(st.health.as_str());
                j["lastError"] = json!(st.last_error);
                j["lastEvaluation"] = json!(go_time(st.last_evaluation));
                j["evaluationTime"] = json!(st.evaluation_time);
            };
            if r.is_alert() {
                let alerts: Vec<&ActiveAlert> = st
                    .alerts
                    .values()
                    .filter(|a| a.state != AlertState::Inactive)
                    .collect();
                let rstate = rule_state(&alerts);
                if !states.is_empty() && !states.contains(&rstate) {
                    continue;
                }
                let mut j = json!({
                    "state": rstate.as_str(),
                    "name": r.alert,
                    "query": r.expr,
                    "duration": r.for_.unwrap_or_default().as_secs_f64(),
                    "keepFiringFor": r.keep_firing_for.unwrap_or_default().as_secs_f64(),
                    "labels": labels,
                    "annotations": r.annotations,
                    "type": "alerting",
                });
                if !exclude_alerts {
                    j["alerts"] = Value::Array(alerts.iter().map(|a| alert_json(a)).collect());
                }
                common(&mut j);
                rules.push(j);
            } else {
                if !states.is_empty() {
                    continue;
                }
                let mut j = json!({
                    "name": r.record,
                    "query": r.expr,
                    "labels": labels,
                    "type": "recording",
                });
                common(&mut j);
                rules.push(j);
            }
        }
        if rules.is_empty() && rule_filtered {
            continue;
        }
        if group_limit.is_some_and(|l| out.len() >= l) {
            next = Some(group_token(&v.key.namespace, &v.key.name));
            break;
        }
        out.push(json!({
            "name": v.key.name,
            "file": v.key.namespace,
            "rules": rules,
            "interval": v.interval.as_secs_f64(),
            "limit": v.group.limit,
            "lastEvaluation": go_time(v.status.last_evaluation),
            "evaluationTime": v.status.evaluation_time,
        }));
    }
    let mut data = json!({ "groups": out });
    if let Some(t) = next {
        data["groupNextToken"] = json!(t);
    }
    Ok(json_ok(data))
}

/// `GET /prometheus/api/v1/alerts`: every pending or firing alert of the tenant.
pub async fn prometheus_alerts(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = params::tenant(&headers, state.config.auth_enabled)?;
    let mut alerts = Vec::new();
    for v in state.ruler.views(&tenant) {
        for st in &v.status.rules {
            for a in st.alerts.values() {
                if a.state != AlertState::Inactive {
                    alerts.push(alert_json(a));
                }
            }
        }
    }
    Ok(json_ok(json!({ "alerts": alerts })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_go_e() {
        assert_eq!(go_float_e(12.0), "1.2e+01");
        assert_eq!(go_float_e(1.0), "1e+00");
        assert_eq!(go_float_e(0.5), "5e-01");
        assert_eq!(go_float_e(0.0), "0e+00");
        assert_eq!(go_float_e(1e100), "1e+100");
        assert_eq!(go_float_e(f64::INFINITY), "+Inf");
    }

    #[test]
    fn matchers_parse_both_forms() -> Result<(), String> {
        let labels: BTreeMap<String, String> = [("severity".to_string(), "page".to_string())]
            .into_iter()
            .collect();
        assert!(LabelMatcher::parse(
            r#"{"Name":"severity","Value":"page","IsRegex":false,"IsEqual":true}"#
        )?
        .matches(&labels));
        assert!(LabelMatcher::parse(r#"severity=~"pa.*""#)?.matches(&labels));
        assert!(!LabelMatcher::parse(r#"severity!="page""#)?.matches(&labels));
        assert!(LabelMatcher::parse("nonsense").is_err());
        Ok(())
    }
}
