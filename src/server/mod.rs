//! The HTTP server: application state, router assembly, layers and graceful shutdown.
//!
//! ```text
//!  client ──► axum router ──► routes/push   ──► ingest::Ingester ──► storage (WAL, head)
//!                         ├─► routes/otlp   ──► ingest::otlp ──► ingest::Ingester
//!                         ├─► routes/query  ──► query::QueryEngine ──► storage (scan)
//!                         ├─► routes/labels ──► storage label index
//!                         └─► routes/status (ready, metrics, buildinfo, format_query)
//! ```

pub mod auth;
mod cors;
pub mod error;
pub mod params;
pub mod replica;
mod routes;
pub mod tls;

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use axum::{extract::DefaultBodyLimit, Router};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tovlog_storage::Storage;
use tower_http::{compression::CompressionLayer, trace::TraceLayer};

use crate::{
    config::Config,
    ingest::Ingester,
    limits::{Overrides, TenantLimits},
    query::{scheduler::QueryScheduler, QueryEngine, QueryLimits},
    telemetry::Metrics,
};

/// Shared state of all handlers: cheap to clone (`Arc`s only), nothing global.
#[derive(Clone)]
pub struct AppState {
    /// The configuration the server runs with.
    pub config: Arc<Config>,
    /// Storage engine.
    pub storage: Arc<Storage>,
    /// Write path.
    pub ingester: Arc<Ingester>,
    /// Read path.
    pub engine: QueryEngine,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Alerting and recording rules.
    pub ruler: crate::ruler::Ruler,
    /// Credentials (`auth`).
    pub auth: Arc<auth::Auth>,
    /// Per-tenant limits: `limits_config` plus the runtime overrides file.
    pub overrides: Arc<Overrides>,
}

impl AppState {
    /// Open storage (replaying the WAL) and build the state.
    pub async fn open(mut config: Config) -> anyhow::Result<AppState> {
        // A configuration built in code gets its `compactor` keys applied too.
        config.apply_compactor();
        let metrics = Arc::new(Metrics::default());
        // Loaded before storage opens: a bad overrides file stops start-up, as in Loki.
        let overrides = Overrides::new(
            config.limits_config.clone(),
            &config.runtime_config,
            metrics.clone(),
        )?;
        // Compaction records which lines are flat JSON objects, which `| json` then reads
        // by searching for keys (`tovlog_logql::pipeline::line_flags`).
        // It also records per block what `| json` gives the rows, so numeric filters of
        // parsed fields skip blocks (`crate::query::fields`).
        let fields = crate::query::fields::json_field_extractor()
            .map_err(|e| anyhow::anyhow!("field statistics: {e}"))?;
        let storage = Storage::open_with_fields(
            config.storage.clone(),
            Some(Arc::new(tovlog_logql::pipeline::line_flags)),
            Some(fields),
        )
        .await?;
        // Delete queries are LogQL; retention periods come from the limits and overrides.
        storage.set_delete_compiler(crate::erase::delete_compiler());
        storage.set_retention(overrides.retention_source());
        let ingester = Arc::new(Ingester::new(
            storage.clone(),
            overrides.clone(),
            metrics.clone(),
        ));
        let limits = QueryLimits {
            max_entries_limit_per_query: config.limits_config.max_entries_limit_per_query,
            max_query_series: config.limits_config.max_query_series,
            query_timeout: config.query.timeout,
            max_memory_bytes: usize::try_from(config.query.max_memory).unwrap_or(usize::MAX),
            partitions: config.query.partitions,
        };
        let engine = QueryEngine::new(storage.clone(), limits).with_overrides(overrides.clone());
        // The ruler's engine has no admission queue: rule evaluations are the server's own
        // work on a schedule, as Loki's ruler evaluates in-process, not through its query
        // scheduler.
        let ruler =
            crate::ruler::Ruler::new(config.ruler.clone(), engine.clone(), storage.clone())?;
        let scheduler = QueryScheduler::new(
            config.query_scheduler.concurrency(),
            config.query_scheduler.max_outstanding_requests_per_tenant,
        );
        let engine = engine.with_scheduler(scheduler);
        let auth = auth::Auth::new(config.auth.clone());
        Ok(AppState {
            auth,
            config: Arc::new(config),
            storage,
            ingester,
            engine,
            metrics,
            ruler,
            overrides,
        })
    }

    /// The limits of `tenant` (defaults plus runtime overrides): ask once per request.
    pub fn limits(&self, tenant: &str) -> Arc<TenantLimits> {
        self.overrides.tenant(tenant)
    }
}

/// The router with every route and layer.
pub fn app(state: AppState) -> Router {
    let body_limit = usize::try_from(state.config.max_request_body).unwrap_or(usize::MAX);
    let cors = cors::CorsPolicy::new(&state.config.server.cors_allowed_origins);
    let auth = state.auth.clone();
    let mut router = routes::router().merge(routes::push_router(cors));
    if state.config.storage.compaction.retention_enabled {
        router = router.merge(routes::delete_router());
    }
    router
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            replica::refuse_writes,
        ))
        // Outside the routes' own layers (CORS) and the replica's refusal of writes, inside
        // body limit and tracing: a refused request never reaches a handler.
        .layer(axum::middleware::from_fn_with_state(auth, auth::middleware))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CompressionLayer::new())
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// A server running in this process (used by `main` and by tests).
pub struct RunningServer {
    addr: SocketAddr,
    https: bool,
    scheduler: Option<Arc<QueryScheduler>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:3100` (`https://` with `server.http_tls_config`).
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The queue the API's queries are admitted through (tests watch it to order requests).
    pub fn query_scheduler(&self) -> Option<&Arc<QueryScheduler>> {
        self.scheduler.as_ref()
    }

    /// Stop accepting, finish in-flight requests, flush the head, and wait.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await?
    }

    /// Wait until the server stops by itself (signal).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?
    }
}

/// The future [`start`] and [`start_on`] return. Boxed, and made by functions that are not
/// generic, so the whole server's async code (storage, the HTTP stack, TLS) is compiled once,
/// in this crate, instead of again in every binary and test that awaits it.
pub type Starting = Pin<Box<dyn Future<Output = anyhow::Result<RunningServer>> + Send>>;

/// Open storage, bind `config.listen` and serve until `signal` resolves or `shutdown` is called;
/// then flush the head to chunks.
pub fn start(config: Config, signal: impl Future<Output = ()> + Send + 'static) -> Starting {
    start_dyn(config, None, Box::pin(signal))
}

/// As [`start`], on an already bound listener.
pub fn start_on(
    config: Config,
    listener: TcpListener,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Starting {
    start_dyn(config, Some(listener), Box::pin(signal))
}

fn start_dyn(
    config: Config,
    listener: Option<TcpListener>,
    signal: Pin<Box<dyn Future<Output = ()> + Send + 'static>>,
) -> Starting {
    Box::pin(async move {
        let listener = match listener {
            Some(listener) => listener,
            None => TcpListener::bind(config.listen).await?,
        };
        serve_boxed(config, listener, signal).await
    })
}

/// The server proper (see [`Starting`]).
async fn serve_boxed(
    config: Config,
    listener: TcpListener,
    signal: Pin<Box<dyn Future<Output = ()> + Send + 'static>>,
) -> anyhow::Result<RunningServer> {
    // Before storage opens: a certificate that cannot load stops start-up at once.
    let addr = listener.local_addr()?;
    let bound = if config.server.http_tls_config.enabled() {
        Bound::Tls(tls::TlsListener::new(
            listener,
            &config.server.http_tls_config,
        )?)
    } else {
        Bound::Plain(listener)
    };
    let https = matches!(bound, Bound::Tls(_));
    let state = AppState::open(config).await?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let storage = state.storage.clone();
    // Live tails are websockets axum no longer tracks once upgraded: they are told to close
    // (close frame 1001) when shutdown starts, and waited for before the head is flushed.
    let tails = state.ingester.tails().clone();
    let tails_signal = tails.clone();
    let ruler = state.ruler.clone();
    let reloader = state.overrides.spawn_reloader();
    let scheduler = state.engine.scheduler().cloned();
    // A read replica evaluates no rules: the writer does, and keeps their alert state.
    if !state.storage.is_read_only() {
        ruler.start().await;
    }
    let router = app(state);
    let task = tokio::spawn(async move {
        tracing::info!(%addr, https, "serving");
        let shutdown = async move {
            tokio::select! {
                _ = signal => {},
                _ = stop_rx => {},
            }
            tracing::info!("shutting down: draining requests");
            tails_signal.shutdown();
        };
        // The client address is what failed authentications are counted by.
        let service = router.into_make_service_with_connect_info::<tls::ClientAddr>();
        match bound {
            Bound::Tls(tls) => {
                axum::serve(tls, service)
                    .with_graceful_shutdown(shutdown)
                    .await?
            }
            Bound::Plain(listener) => {
                axum::serve(listener, service)
                    .with_graceful_shutdown(shutdown)
                    .await?
            }
        }
        if !tails.wait_closed(Duration::from_secs(5)).await {
            tracing::warn!("live tails did not close in time");
        }
        ruler.stop().await;
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        tracing::info!("flushing head to chunks");
        storage.shutdown().await?;
        tracing::info!("shutdown complete");
        Ok(())
    });
    Ok(RunningServer {
        addr,
        https,
        scheduler,
        stop: Some(stop_tx),
        task,
    })
}

/// The socket the API is served on.
enum Bound {
    Plain(TcpListener),
    Tls(tls::TlsListener),
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
