//! One file per API area; this module assembles them into the router.

mod delete;
mod drilldown;
mod labels;
mod otlp;
mod patterns;
mod push;
mod query;
mod rules;
mod status;
mod tail;

use axum::{
    routing::{get, post},
    Router,
};

use super::AppState;

/// Every route of the HTTP API.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/loki/api/v1/query_range",
            get(query::query_range).post(query::query_range),
        )
        .route(
            "/loki/api/v1/query",
            get(query::query_instant).post(query::query_instant),
        )
        .route(
            "/api/prom/query",
            get(query::legacy_query).post(query::legacy_query),
        )
        .route(
            "/loki/api/v1/labels",
            get(labels::labels).post(labels::labels),
        )
        .route(
            "/loki/api/v1/label",
            get(labels::labels).post(labels::labels),
        )
        .route(
            "/loki/api/v1/label/{name}/values",
            get(labels::label_values).post(labels::label_values),
        )
        .route(
            "/loki/api/v1/series",
            get(labels::series).post(labels::series),
        )
        .route("/api/prom/label", get(labels::labels))
        .route("/api/prom/label/{name}/values", get(labels::label_values))
        .route("/api/prom/series", get(labels::series).post(labels::series))
        .route(
            "/loki/api/v1/index/stats",
            get(labels::index_stats).post(labels::index_stats),
        )
        .route(
            "/loki/api/v1/index/volume",
            get(labels::volume).post(labels::volume),
        )
        .route(
            "/loki/api/v1/index/volume_range",
            get(labels::volume_range).post(labels::volume_range),
        )
        .route(
            "/loki/api/v1/format_query",
            get(status::format_query).post(status::format_query),
        )
        .route(
            "/loki/api/v1/patterns",
            get(patterns::patterns).post(patterns::patterns),
        )
        .route("/loki/api/v1/status/buildinfo", get(status::buildinfo))
        .route(
            "/loki/api/v1/detected_fields",
            get(drilldown::detected_fields).post(drilldown::detected_fields),
        )
        .route(
            "/loki/api/v1/detected_field/{name}/values",
            get(drilldown::detected_field_values).post(drilldown::detected_field_values),
        )
        .route(
            "/loki/api/v1/detected_labels",
            get(drilldown::detected_labels).post(drilldown::detected_labels),
        )
        .route(
            "/loki/api/v1/drilldown-limits",
            get(drilldown::drilldown_limits),
        )
        .route("/ready", get(status::ready))
        .route("/flush", post(status::flush).get(status::flush))
        .route("/metrics", get(status::metrics))
        .route("/loki/api/v1/tail", get(tail::tail))
        .route("/api/prom/tail", get(tail::legacy_tail))
        .route("/config", get(status::config))
        .route("/loki/api/v1/rules", get(rules::list_all))
        .route(
            "/loki/api/v1/rules/{namespace}",
            get(rules::list_namespace)
                .post(rules::create_group)
                .delete(rules::delete_namespace),
        )
        .route(
            "/loki/api/v1/rules/{namespace}/{group}",
            get(rules::get_group).delete(rules::delete_group),
        )
        .route("/api/prom/rules", get(rules::list_all))
        .route(
            "/api/prom/rules/{namespace}",
            get(rules::list_namespace)
                .post(rules::create_group)
                .delete(rules::delete_namespace),
        )
        .route(
            "/api/prom/rules/{namespace}/{group}",
            get(rules::get_group).delete(rules::delete_group),
        )
        .route(
            "/prometheus/api/v1/rules",
            get(rules::prometheus_rules).post(rules::prometheus_rules),
        )
        .route("/prometheus/api/v1/alerts", get(rules::prometheus_alerts))
        .route(
            "/api/prom/api/v1/rules",
            get(rules::prometheus_rules).post(rules::prometheus_rules),
        )
        .route("/api/prom/api/v1/alerts", get(rules::prometheus_alerts))
}

/// The log deletion API (Loki registers it only when `compactor.retention_enabled`).
pub fn delete_router() -> Router<AppState> {
    Router::new()
        .route(
            "/loki/api/v1/delete",
            post(delete::create)
                .put(delete::create)
                .get(delete::list)
                .delete(delete::cancel),
        )
        .route(
            "/loki/api/v1/cache/generation_numbers",
            get(delete::generation_numbers),
        )
}

/// The push routes (Loki push, legacy push, OTLP logs), behind `cors` when it is configured
/// (`server.cors_allowed_origins`) so a browser front end may post to them directly.
pub fn push_router(cors: Option<std::sync::Arc<super::cors::CorsPolicy>>) -> Router<AppState> {
    let routes = Router::new()
        .route("/loki/api/v1/push", post(push::push))
        .route("/api/prom/push", post(push::push))
        .route("/otlp/v1/logs", post(otlp::logs));
    match cors {
        Some(cors) => routes.layer(axum::middleware::from_fn_with_state(
            cors,
            super::cors::middleware,
        )),
        None => routes,
    }
}
