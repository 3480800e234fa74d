//! `GET /loki/api/v1/tail` (and the legacy `/api/prom/tail`): live tail over a websocket.
//!
//! Parameters are checked before the upgrade (bad ones get a plain 400, as in Loki); what
//! Loki checks after it (limits, the per-tenant tail limit, the recent-entries query) closes
//! the socket with code 1011 and the reason. A session first sends the newest `limit`
//! entries since `start` (oldest first, through the query engine), then what the write path
//! delivers (see [`crate::tail`]). Three tasks per tail:
//!
//! ```text
//!  reader  ── client frames (pongs, close) ──► "client gone"
//!  session ── inbox ─► Live (pipeline, delay_for) ─► bounded frame queue ─┐
//!  writer  ◄──────────────────────────────────────────────────────────────┘ + pings, close
//! ```

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::{
        ws::{
            close_code, rejection::WebSocketUpgradeRejection, CloseFrame, Message, WebSocket,
            WebSocketUpgrade,
        },
        RawQuery, State,
    },
    http::{HeaderMap, Method},
    response::{IntoResponse, Response},
};
use futures::{
    stream::{SplitSink, SplitStream},
    SinkExt, StreamExt,
};
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
    time::Instant,
};
use tovlog_logql::{ast::Expr, pipeline::Pipeline};
use tovlog_storage::Matcher;

use super::query::{categorize, check_limits};
use crate::server::params::parse_limit;
use crate::{
    query::{convert_matchers, Direction, QueryRequest},
    server::{
        error::ApiError,
        params::{self, Params},
        AppState,
    },
    tail::{
        frame::{self, Format},
        Live, TailEntry, TailRegistry, MAX_FRAME_BYTES, MAX_FRAME_ENTRIES, MAX_QUEUED_FRAMES,
    },
};

/// Loki's largest `delay_for`, seconds.
const MAX_DELAY_FOR: i64 = 5;
/// How often the writer pings (Loki's `wsPingPeriod`).
const PING_PERIOD: Duration = Duration::from_secs(1);
/// How long one round of live entries may wait for room in the frame queue before the rest
/// of the round is dropped: a client that keeps up absorbs bursts, a stalled one costs this.
const LIVE_GRACE: Duration = Duration::from_millis(100);
/// The same for the recent entries a tail starts with (bounded by `limit`).
const HISTORY_GRACE: Duration = Duration::from_secs(2);
/// How long a close frame, or the client's reply to it, may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest close reason a close frame carries (RFC 6455: 125 bytes of payload).
const MAX_CLOSE_REASON: usize = 123;
const HOUR_NS: i64 = 3_600_000_000_000;

/// A checked tail request.
struct TailRequest {
    tenant: String,
    expr: Expr,
    query: String,
    matchers: Vec<Matcher>,
    pipeline: Pipeline,
    limit: u32,
    start_ns: i64,
    delay_ns: i64,
    format: Format,
    categorize: bool,
}

/// `GET /loki/api/v1/tail`.
pub async fn tail(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    upgrade(state, &headers, raw.as_deref(), ws, false)
}

/// `GET /api/prom/tail` (legacy frame shape).
pub async fn legacy_tail(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    upgrade(state, &headers, raw.as_deref(), ws, true)
}

fn upgrade(
    state: AppState,
    headers: &HeaderMap,
    raw: Option<&str>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    legacy: bool,
) -> Response {
    let req = match parse_request(&state, headers, raw, legacy) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    ws.on_upgrade(move |socket| session(socket, state, req))
}

fn parse_request(
    state: &AppState,
    headers: &HeaderMap,
    raw: Option<&str>,
    legacy: bool,
) -> Result<TailRequest, ApiError> {
    let tenant = params::tenant(headers, state.config.auth_enabled)?;
    let p = Params::collect(&Method::GET, raw, headers, &[]);
    let query = p
        .get("query")
        .ok_or_else(|| ApiError::BadRequest("query parameter is required".into()))?;
    let expr = tovlog_logql::parse(query).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let Expr::Log(log) = &expr else {
        return Err(ApiError::BadRequest(
            "only log queries can be tailed, not metric queries".into(),
        ));
    };
    let pipeline = Pipeline::new(&log.pipeline).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let matchers = convert_matchers(&log.selector)?;
    let limit = parse_limit(&p)?;
    let delay = match p.get("delay_for") {
        None => 0,
        Some(v) => v.trim().parse::<i64>().map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid delay_for parameter: cannot parse {v:?} to an integer"
            ))
        })?,
    };
    // Loki reads it as an unsigned number: a negative one is huge.
    if !(0..=MAX_DELAY_FOR).contains(&delay) {
        return Err(ApiError::BadRequest(format!(
            "delay_for can't be greater than {MAX_DELAY_FOR}"
        )));
    }
    let start_ns = params::parse_time(p.get("start"), params::now_ns() - HOUR_NS, "start")?;
    let categorize = !legacy && categorize(headers);
    Ok(TailRequest {
        tenant,
        expr,
        query: query.to_string(),
        matchers,
        pipeline,
        limit,
        start_ns,
        delay_ns: delay * 1_000_000_000,
        format: if legacy {
            Format::Legacy
        } else {
            Format::V1 { categorize }
        },
        categorize,
    })
}

/// Why a session ended.
enum End {
    /// The client closed or went away.
    Client,
    /// The server is shutting down: close 1001.
    Shutdown,
    /// A query or limit error: close 1011 with the reason.
    Error(String),
}

/// A frame for the writer, with the number of entries it carries.
struct OutFrame {
    text: String,
    entries: usize,
}

async fn session(socket: WebSocket, state: AppState, req: TailRequest) {
    let registry = Arc::clone(state.ingester.tails());
    let _running = registry.session();
    let (sink, incoming) = socket.split();
    let (frames_tx, frames_rx) = mpsc::channel::<OutFrame>(MAX_QUEUED_FRAMES);
    let (close_tx, close_rx) = oneshot::channel::<CloseFrame>();
    let (gone_tx, mut gone_rx) = oneshot::channel::<()>();
    let queued = Arc::new(AtomicUsize::new(0));
    let mut reader = tokio::spawn(read_client(incoming, gone_tx));
    let mut writer = tokio::spawn(write_client(sink, frames_rx, close_rx, Arc::clone(&queued)));
    let tenant = req.tenant.clone();
    tracing::info!(tenant = %tenant, query = %req.query, "tail started");
    let end = run(&state, &registry, req, &frames_tx, &mut gone_rx, &queued).await;
    drop(frames_tx);
    let close = match &end {
        End::Client => None,
        End::Shutdown => Some((close_code::AWAY, "server shutting down".to_string())),
        End::Error(reason) => {
            tracing::warn!(tenant = %tenant, error = %reason, "tail closed on error");
            Some((close_code::ERROR, reason.clone()))
        }
    };
    if let Some((code, reason)) = close {
        let _ = close_tx.send(CloseFrame {
            code,
            reason: truncate(reason, MAX_CLOSE_REASON).into(),
        });
    } else {
        drop(close_tx);
    }
    finish(&mut writer, CLOSE_TIMEOUT * 2).await;
    // The reader sees the client's reply to our close frame (or its own close) through.
    finish(&mut reader, CLOSE_TIMEOUT).await;
    tracing::info!(tenant = %tenant, "tail ended");
}

/// Wait for a task at most `timeout`, then abort it.
async fn finish(task: &mut JoinHandle<()>, timeout: Duration) {
    if tokio::time::timeout(timeout, &mut *task).await.is_err() {
        task.abort();
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The session proper; returns why it ended.
async fn run(
    state: &AppState,
    registry: &Arc<TailRegistry>,
    req: TailRequest,
    frames: &mpsc::Sender<OutFrame>,
    gone: &mut oneshot::Receiver<()>,
    queued: &AtomicUsize,
) -> End {
    let mut shutdown = registry.shutdown_signal();
    if *shutdown.borrow_and_update() {
        return End::Shutdown;
    }
    let now = params::now_ns();
    let tenant_limits = state.limits(&req.tenant);
    let limits = &tenant_limits.limits;
    if let Err(e) = check_limits(state, &req.tenant, &req.expr, req.limit, req.start_ns, now) {
        return End::Error(e.to_string());
    }
    // Subscribe before reading the recent entries, so nothing pushed meanwhile is missed
    // (`Live::add_history` removes what both would send).
    let subscription = match registry.subscribe(
        &req.tenant,
        req.matchers,
        limits.max_concurrent_tail_requests,
    ) {
        Ok(s) => s,
        Err(e) => return End::Error(e.to_string()),
    };
    let sub = subscription.subscriber();
    let mut live = Live::new(req.pipeline, req.categorize, req.delay_ns).shared(&req.query);
    let history = QueryRequest {
        tenant: req.tenant,
        query: req.query,
        start_ns: req.start_ns,
        end_ns: now,
        step_ns: 0,
        limit: req.limit,
        direction: Direction::Backward,
        instant: false,
        categorize_labels: req.categorize,
    };
    let result = tokio::select! {
        r = state.engine.query(history) => r,
        _ = shutdown.changed() => return End::Shutdown,
        _ = &mut *gone => return End::Client,
    };
    state.metrics.query(result.is_err());
    match result {
        Ok(body) => live.add_history(&body),
        Err(e) => return End::Error(e.to_string()),
    };
    let mut grace = HISTORY_GRACE;
    loop {
        let (batches, dropped) = sub.drain();
        live.add_dropped(dropped);
        if !batches.is_empty() {
            registry.count_dropped(live.ingest(&batches));
        }
        let ready = live.take_ready(params::now_ns());
        let mut out = FrameQueue {
            frames,
            queued,
            registry,
            format: req.format,
            shutdown: &mut shutdown,
        };
        if let Err(end) = out
            .send_ready(&mut live, ready, Instant::now() + grace)
            .await
        {
            return end;
        }
        grace = LIVE_GRACE;
        sub.set_held(live.pending_len() + queued.load(Ordering::Relaxed));
        let wake = if live.has_dropped() {
            // Report drops as soon as the queue has room.
            Some(Instant::now() + LIVE_GRACE)
        } else {
            live.next_ready_ns().map(|ns| {
                let wait = ns.saturating_sub(params::now_ns()).max(0);
                Instant::now() + Duration::from_nanos(wait as u64)
            })
        };
        tokio::select! {
            biased;
            _ = shutdown.changed() => return End::Shutdown,
            _ = &mut *gone => return End::Client,
            _ = frames.closed() => return End::Client,
            _ = sub.notified() => {}
            _ = sleep_until_opt(wake) => {}
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Puts ready entries into frames on the bounded queue, dropping what does not fit.
struct FrameQueue<'a> {
    frames: &'a mpsc::Sender<OutFrame>,
    queued: &'a AtomicUsize,
    registry: &'a TailRegistry,
    format: Format,
    shutdown: &'a mut watch::Receiver<bool>,
}

/// Entries of the next frame: at most [`MAX_FRAME_ENTRIES`], closed at [`MAX_FRAME_BYTES`].
fn frame_len(entries: &[TailEntry]) -> usize {
    let mut bytes = 0;
    for (i, e) in entries.iter().take(MAX_FRAME_ENTRIES).enumerate() {
        bytes += e.line.len();
        if bytes >= MAX_FRAME_BYTES {
            return i + 1;
        }
    }
    entries.len().min(MAX_FRAME_ENTRIES)
}

impl FrameQueue<'_> {
    /// Queue `ready` in frames. While the queue is full, wait for room until `deadline`;
    /// past it, the remaining entries are dropped (and listed in the next frame sent).
    async fn send_ready(
        &mut self,
        live: &mut Live,
        ready: Vec<TailEntry>,
        deadline: Instant,
    ) -> Result<(), End> {
        let mut stalled = false;
        let mut rest = ready.as_slice();
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(frame_len(rest));
            rest = tail;
            let permit = match self.frames.try_reserve() {
                Ok(p) => Some(p),
                Err(mpsc::error::TrySendError::Closed(())) => return Err(End::Client),
                Err(mpsc::error::TrySendError::Full(())) if stalled => None,
                Err(mpsc::error::TrySendError::Full(())) => {
                    tokio::select! {
                        r = tokio::time::timeout_at(deadline, self.frames.reserve()) => match r {
                            Ok(Ok(p)) => Some(p),
                            Ok(Err(_)) => return Err(End::Client),
                            Err(_) => {
                                stalled = true;
                                None
                            }
                        },
                        _ = self.shutdown.changed() => return Err(End::Shutdown),
                    }
                }
            };
            match permit {
                Some(p) => {
                    let dropped = live.take_dropped();
                    self.queued.fetch_add(chunk.len(), Ordering::Relaxed);
                    p.send(OutFrame {
                        text: frame::encode(chunk, &dropped, self.format),
                        entries: chunk.len(),
                    });
                }
                None => {
                    live.drop_entries(chunk);
                    self.registry.count_dropped(chunk.len() as u64);
                }
            }
        }
        if live.has_dropped() {
            if let Ok(p) = self.frames.try_reserve() {
                let dropped = live.take_dropped();
                p.send(OutFrame {
                    text: frame::encode(&[], &dropped, self.format),
                    entries: 0,
                });
            }
        }
        Ok(())
    }
}

/// Read the client's frames (tungstenite answers pings and close frames while reading);
/// signal when it closes or goes away.
async fn read_client(mut incoming: SplitStream<WebSocket>, gone: oneshot::Sender<()>) {
    let mut gone = Some(gone);
    while let Some(msg) = incoming.next().await {
        match msg {
            Ok(Message::Close(_)) => {
                if let Some(g) = gone.take() {
                    let _ = g.send(());
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "tail client read failed");
                break;
            }
        }
    }
    // Dropping the sender (if still held) also signals.
}

/// What the writer does next.
enum Flow {
    Continue,
    Stop,
}

/// Send `msg` unless a close request comes first (then send the close frame instead).
async fn send_or_close(
    sink: &mut SplitSink<WebSocket, Message>,
    msg: Message,
    close: &mut oneshot::Receiver<CloseFrame>,
) -> Flow {
    tokio::select! {
        biased;
        c = &mut *close => {
            if let Ok(frame) = c {
                send_close(sink, frame).await;
            }
            Flow::Stop
        }
        r = sink.send(msg) => if r.is_ok() { Flow::Continue } else { Flow::Stop },
    }
}

async fn send_close(sink: &mut SplitSink<WebSocket, Message>, frame: CloseFrame) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
}

/// Write queued frames and a ping every [`PING_PERIOD`]; on a close request, the close frame.
async fn write_client(
    mut sink: SplitSink<WebSocket, Message>,
    mut frames: mpsc::Receiver<OutFrame>,
    mut close: oneshot::Receiver<CloseFrame>,
    queued: Arc<AtomicUsize>,
) {
    let mut ping = tokio::time::interval_at(Instant::now() + PING_PERIOD, PING_PERIOD);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let flow = tokio::select! {
            biased;
            c = &mut close => {
                if let Ok(frame) = c {
                    send_close(&mut sink, frame).await;
                }
                Flow::Stop
            }
            f = frames.recv() => match f {
                Some(f) => {
                    let n = f.entries;
                    let flow = send_or_close(&mut sink, Message::Text(f.text.into()), &mut close).await;
                    queued.fetch_sub(n, Ordering::Relaxed);
                    flow
                }
                None => {
                    // The session ended: it sends a close request or drops the sender.
                    if let Ok(frame) = (&mut close).await {
                        send_close(&mut sink, frame).await;
                    }
                    Flow::Stop
                }
            },
            _ = ping.tick() => send_or_close(&mut sink, Message::Ping(Bytes::new()), &mut close).await,
        };
        if let Flow::Stop = flow {
            return;
        }
    }
}
