//! Request parameters the way Loki reads them: form values from the query string and, for POST,
//! from an `application/x-www-form-urlencoded` body; timestamps in ns, s, float s or RFC3339;
//! steps as float seconds or durations; the tenant from `X-Scope-OrgID`.

use axum::http::{HeaderMap, Method};

use tovlog_logql::ast::Expr;

use super::error::ApiError;
use crate::config::duration;
use crate::query::Direction;

/// The single tenant of an installation without auth, as in Loki.
pub const DEFAULT_TENANT: &str = "fake";

/// All form values of a request, in order (keys may repeat, e.g. `match[]`).
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Collect from the query string and a form body.
    pub fn collect(
        method: &Method,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Params {
        let mut pairs: Vec<(String, String)> = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let is_form = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        if *method == Method::POST && is_form && !body.is_empty() {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        Params(pairs)
    }

    /// First non-empty value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The tenant of a request: `X-Scope-OrgID` when auth is enabled (401 without it), else `fake`.
/// A multi-tenant header `a|b` is not supported for queries yet and is rejected clearly.
pub fn tenant(headers: &HeaderMap, auth_enabled: bool) -> Result<String, ApiError> {
    if !auth_enabled {
        return Ok(DEFAULT_TENANT.to_string());
    }
    let id = headers
        .get("x-scope-orgid")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(ApiError::NoOrgId)?;
    if id.len() > 150 || id.contains(['/', '\\']) || id == "." || id == ".." || id.contains('|') {
        return Err(ApiError::BadRequest(format!(
            "tenant ID {id:?} is not supported"
        )));
    }
    Ok(id.to_string())
}

/// Now, in ns.
pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Loki's timestamp rule: a value with `.` is float seconds (ms precision); an integer of at most
/// 10 digits is seconds, a longer one ns; anything else RFC3339(Nano). Empty → `default`.
pub fn parse_time(value: Option<&str>, default: i64, name: &str) -> Result<i64, ApiError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(default);
    };
    if v.contains('.') {
        if let Ok(f) = v.parse::<f64>() {
            if f.is_finite() {
                let secs = f.trunc();
                let ms = ((f - secs) * 1000.0).round();
                return Ok((secs as i64)
                    .saturating_mul(1_000_000_000)
                    .saturating_add((ms as i64) * 1_000_000));
            }
        }
    }
    if let Ok(n) = v.parse::<i64>() {
        let digits = v.trim_start_matches('-').len();
        return Ok(if digits <= 10 {
            n.saturating_mul(1_000_000_000)
        } else {
            n
        });
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "invalid {name} parameter: cannot parse {v:?} to a valid timestamp"
            ))
        })
}

/// Loki's step rule: float seconds, else a Prometheus duration (`15000ms`, `5m`, `1m0s`).
/// Returns ns.
pub fn parse_step(value: &str) -> Result<i64, ApiError> {
    let v = value.trim();
    if let Ok(f) = v.parse::<f64>() {
        let ns = f * 1e9;
        if !ns.is_finite() || ns.abs() > i64::MAX as f64 {
            return Err(ApiError::BadRequest(format!(
                "cannot parse {v:?} to a valid duration"
            )));
        }
        return Ok(ns as i64);
    }
    duration::parse(v)
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "invalid step parameter: cannot parse {v:?} to a valid duration"
            ))
        })
}

/// Loki's default step for a range: `max(1s, floor((end - start) / 250))` in whole seconds.
pub fn default_step_ns(start_ns: i64, end_ns: i64) -> i64 {
    let secs = ((end_ns - start_ns) as f64 / 1e9 / 250.0).floor().max(1.0);
    (secs as i64) * 1_000_000_000
}

/// Most points a range may be cut into by `step` (Loki's limit).
pub const MAX_POINTS: i64 = 11_000;

/// Loki's answer to too many points on `query_range` and the Drilldown endpoints.
pub const TOO_MANY_POINTS: &str = "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)";

/// The form's `step` for `[start_ns, end_ns]`: as given, or Loki's default for the range.
/// Refused when it is ≤ 0, or when it cuts the range into more than [`MAX_POINTS`] points
/// (`too_many` is the endpoint's own message for that).
pub fn range_step(p: &Params, start_ns: i64, end_ns: i64, too_many: &str) -> Result<i64, ApiError> {
    let step_ns = match p.get("step") {
        Some(s) => parse_step(s)?,
        None => default_step_ns(start_ns, end_ns),
    };
    if step_ns <= 0 {
        return Err(ApiError::BadRequest(
            "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
        ));
    }
    if (end_ns - start_ns) / step_ns > MAX_POINTS {
        return Err(ApiError::BadRequest(too_many.into()));
    }
    Ok(step_ns)
}

/// `direction`: `backward` (default) or `forward`, any case.
pub fn parse_direction(p: &Params) -> Result<Direction, ApiError> {
    match p.get("direction").map(|d| d.to_ascii_lowercase()) {
        None => Ok(Direction::Backward),
        Some(d) if d == "backward" => Ok(Direction::Backward),
        Some(d) if d == "forward" => Ok(Direction::Forward),
        Some(d) => Err(ApiError::BadRequest(format!(
            "invalid direction '{d}': use forward or backward"
        ))),
    }
}

/// `limit`: a positive integer, default 100.
pub fn parse_limit(p: &Params) -> Result<u32, ApiError> {
    match p.get("limit") {
        None => Ok(100),
        Some(v) => {
            let n: i64 = v.trim().parse().map_err(|_| {
                ApiError::BadRequest(format!(
                    "invalid limit parameter: cannot parse {v:?} to an integer"
                ))
            })?;
            if n <= 0 {
                return Err(ApiError::BadRequest(
                    "limit must be a positive value".into(),
                ));
            }
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        }
    }
}

/// `query`, required, parsed as LogQL.
pub fn parse_query(p: &Params) -> Result<(String, Expr), ApiError> {
    let q = p
        .get("query")
        .ok_or_else(|| ApiError::BadRequest("query parameter is required".into()))?;
    let expr = tovlog_logql::parse(q).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok((q.to_string(), expr))
}

/// The parameters of a `query_range` request.
#[derive(Debug)]
pub struct RangeParams {
    /// The LogQL text.
    pub query: String,
    /// It, parsed.
    pub expr: Expr,
    /// `start`, ns (default: an hour before `end`).
    pub start_ns: i64,
    /// `end`, ns (default: now).
    pub end_ns: i64,
    /// `step`, ns (default: Loki's for the range).
    pub step_ns: i64,
    /// `limit`.
    pub limit: u32,
    /// `direction`.
    pub direction: Direction,
}

/// A `query_range` request's parameters with Loki's defaults, rules and messages (the
/// tenant's limits are checked by the caller).
pub fn range_params(p: &Params, now_ns: i64) -> Result<RangeParams, ApiError> {
    const HOUR_NS: i64 = 3_600_000_000_000;
    let (query, expr) = parse_query(p)?;
    let end_ns = parse_time(p.get("end"), now_ns, "end")?;
    let start_ns = parse_time(p.get("start"), end_ns.saturating_sub(HOUR_NS), "start")?;
    if end_ns < start_ns {
        return Err(ApiError::BadRequest(
            "end timestamp must not be before or equal to start time".into(),
        ));
    }
    let step_ns = range_step(p, start_ns, end_ns, TOO_MANY_POINTS)?;
    Ok(RangeParams {
        query,
        expr,
        start_ns,
        end_ns,
        step_ns,
        limit: parse_limit(p)?,
        direction: parse_direction(p)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_follow_loki_rules() -> Result<(), ApiError> {
        assert_eq!(
            parse_time(Some("1763596800000000000"), 0, "start")?,
            1_763_596_800_000_000_000
        );
        assert_eq!(
            parse_time(Some("1763596800"), 0, "start")?,
            1_763_596_800_000_000_000
        );
        assert_eq!(parse_time(Some("4"), 0, "time")?, 4_000_000_000);
        assert_eq!(
            parse_time(Some("4000000000"), 0, "time")?,
            4_000_000_000_000_000_000
        );
        assert_eq!(
            parse_time(Some("1763596800.5"), 0, "start")?,
            1_763_596_800_500_000_000
        );
        assert_eq!(
            parse_time(Some("2025-11-20T01:00:00Z"), 0, "time")?,
            1_763_600_400_000_000_000
        );
        assert_eq!(
            parse_time(Some("2025-11-20T00:00:00.000Z"), 0, "start")?,
            1_763_596_800_000_000_000
        );
        assert_eq!(parse_time(None, 42, "end")?, 42);
        assert!(parse_time(Some("yesterday"), 0, "start").is_err());
        Ok(())
    }

    #[test]
    fn steps_accept_seconds_and_durations() -> Result<(), ApiError> {
        assert_eq!(parse_step("300")?, 300_000_000_000);
        assert_eq!(parse_step("450.5")?, 450_500_000_000);
        assert_eq!(parse_step("15000ms")?, 15_000_000_000);
        assert_eq!(parse_step("1m0s")?, 60_000_000_000);
        assert!(parse_step("soon").is_err());
        assert_eq!(default_step_ns(0, 7_200_000_000_000), 28_000_000_000);
        assert_eq!(default_step_ns(0, 1_000_000_000), 1_000_000_000);
        Ok(())
    }

    #[test]
    fn tenant_rules() {
        let mut h = HeaderMap::new();
        assert!(matches!(tenant(&h, true), Err(ApiError::NoOrgId)));
        assert_eq!(tenant(&h, false).ok().as_deref(), Some("fake"));
        h.insert(
            "x-scope-orgid",
            axum::http::HeaderValue::from_static("team-a"),
        );
        assert_eq!(tenant(&h, true).ok().as_deref(), Some("team-a"));
        h.insert(
            "x-scope-orgid",
            axum::http::HeaderValue::from_static("../x"),
        );
        assert!(tenant(&h, true).is_err());
    }
}
