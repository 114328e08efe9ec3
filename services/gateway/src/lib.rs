//! The gateway: Tandem's WebSocket edge.
//!
//! It speaks the client protocol (docs/PROTOCOL.md) at `GET /v1/ws`, hands ops to the sequencer through
//! an [`OpSubmitter`], reads the sequenced record stream, and fans each committed version out to the
//! subscribers of its document (see [`hub`]). It also serves the demo editor at `/`, `/healthz` (the
//! process answers) and `/readyz` (it can do its work: see the `readiness` module), and, on the same
//! port, the Documents gRPC API with gRPC health and reflection (see [`documents`]). On shutdown it
//! drains first (see the `drain` module).
//!
//! [`run`] takes an already-bound listener, so tests bind port 0 and start the real gateway in-process.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use tandem_bus::{EventSubscriber, OpSubmitter};
use tandem_store::EventStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

mod admission;
#[cfg(feature = "cli")]
pub mod cli;
mod config;
mod connection;
mod delivery_trace;
mod demo;
pub mod documents;
mod drain;
mod error_counts;
pub mod history;
mod history_http;
pub mod hub;
mod limits;
mod outbound;
mod pending;
pub mod presence;
mod readiness;
mod record_router;
mod submit_queue;

pub use admission::{Authentication, SESSION_COOKIE, SUBPROTOCOL};
pub use config::{GatewayConfig, ServiceToken};
use drain::Drain;
use hub::Hubs;
use limits::ConnectionCounts;
use readiness::Readiness;

/// What the gateway talks to.
pub struct GatewayDeps {
    pub submitter: Arc<dyn OpSubmitter>,
    pub events: Arc<dyn EventSubscriber>,
    pub store: Arc<dyn EventStore>,
    /// More HTTP routes served on the gateway's port (the service adds `/metrics`).
    pub extra_routes: Router,
}

/// Initial read buffer of a WebSocket connection.
const READ_BUFFER: usize = 4 << 10;
/// Bytes the WebSocket buffers before writing to the socket (the connection also flushes after
/// each batch of frames).
const WRITE_BUFFER: usize = 16 << 10;

/// Shared by every connection.
pub(crate) struct GatewayState {
    pub config: GatewayConfig,
    pub hubs: Arc<Hubs>,
    pub submitter: Arc<dyn OpSubmitter>,
    pub next_conn: AtomicU64,
    pub connections: Arc<ConnectionCounts>,
    pub drain: Arc<Drain>,
    pub readiness: Readiness,
    /// The event store (as the readiness checks observe it): history reads go straight to it.
    pub store: Arc<dyn EventStore>,
    /// Where participants' selections are (see [`presence`]).
    pub presences: Arc<presence::Presences>,
}

/// Serves the gateway on `listener` until `shutdown` fires, then drains (see the `drain` module):
/// not ready and no new connections at once, every connection closed with 1012 after
/// [`GatewayConfig::drain_grace`] (or once none is left), and returns when they are closed.
pub async fn run(
    config: GatewayConfig,
    listener: TcpListener,
    deps: GatewayDeps,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    export_rare_counters();
    let (readiness, store, submitter) = Readiness::observe(deps.store, deps.submitter);
    let hubs = Hubs::new(store.clone(), submitter.clone(), config.clone());
    let send_buffer = config.socket_send_buffer;
    let drain = Arc::new(Drain::new(shutdown));
    let write_timeout = config.write_timeout;
    // Records keep flowing while the gateway drains: its clients still get their acks.
    let closing = drain.closing().clone();
    // Subscribed before serving, so the stream sees the record of every op a client can submit.
    let stream = deps.events.subscribe();
    let record_router = tokio::spawn(record_router::route_records(
        deps.events,
        stream,
        hubs.clone(),
        readiness.events.clone(),
        closing.clone(),
    ));
    let drain_task = tokio::spawn({
        let (drain, grace) = (drain.clone(), config.drain_grace);
        async move { drain.run(grace).await }
    });
    let presences = presence::Presences::start(hubs.clone(), store.clone(), &config, closing.clone());
    let state = Arc::new(GatewayState {
        config,
        hubs,
        submitter,
        next_conn: AtomicU64::new(1),
        connections: Arc::default(),
        drain: drain.clone(),
        readiness,
        store,
        presences,
    });
    info!(address = %listener.local_addr()?, "gateway listening");
    // The Documents gRPC API shares the port (HTTP/2 with prior knowledge; see `documents`).
    let (grpc, health) = documents::routes(&state).await?;
    let health_task = tokio::spawn(documents::report_health(state.clone(), health));
    let app = router(state).merge(grpc).merge(deps.extra_routes);
    // The peer address feeds the per-address connection limit.
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let listener = listener.tap_io(move |tcp| tune_socket(tcp, send_buffer));
    axum::serve(listener, app).with_graceful_shutdown(closing.cancelled_owned()).await?;
    // A close handshake takes at most one write and the linger for the client's answer.
    drain.closed(write_timeout + Duration::from_secs(2)).await;
    record_router.abort();
    drain_task.abort();
    health_task.abort();
    Ok(())
}

/// Counters of rare events, exported at 0 from the start, so that a dashboard's `rate()` has a
/// series before the first one happens (deploy/grafana/tandem.json).
fn export_rare_counters() {
    for name in [
        "tandem_gateway_connections_refused_total",
        "tandem_gateway_resubmissions_total",
        "tandem_gateway_gap_repairs_total",
        "tandem_gateway_catch_up_snapshots_total",
        "tandem_gateway_rejections_lost_total",
        "tandem_gateway_resubmissions_deferred_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    metrics::gauge!("tandem_gateway_pending_ops").increment(0.0);
}

fn router(state: Arc<GatewayState>) -> Router {
    Router::new()
        .route("/v1/ws", get(websocket))
        // Liveness: the process answers. Whether it can serve is `/readyz`.
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness::readyz))
        .merge(demo::routes())
        .merge(admission::routes())
        .merge(history_http::routes())
        .with_state(state)
}

/// Every accepted socket: no Nagle delay (each frame is a keystroke someone waits for), and a bounded
/// kernel send buffer.
fn tune_socket(tcp: &mut tokio::net::TcpStream, send_buffer: usize) {
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(error = %e, "TCP_NODELAY not set");
    }
    if send_buffer > 0 {
        if let Err(e) = socket2::SockRef::from(&*tcp).set_send_buffer_size(send_buffer) {
            debug!(error = %e, "SO_SNDBUF not set");
        }
    }
}

/// The upgrade: authenticated and admitted (connection limits) before any frame is exchanged.
async fn websocket(
    State(state): State<Arc<GatewayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if state.drain.is_draining() {
        return admission::Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this gateway is shutting down; connect to another one".to_owned(),
        )
        .into_response();
    }
    let principal = match admission::authenticate(&state, &headers) {
        Ok(principal) => principal,
        Err(refusal) => return refusal.into_response(),
    };
    // Without authentication everyone is `anonymous`: only the address limit means anything.
    let user = matches!(state.config.auth, Authentication::Jwt(_)).then_some(principal.user.as_str());
    let slot = match state.connections.admit(
        user,
        state.config.max_connections_per_user,
        peer.ip(),
        state.config.max_connections_per_ip,
    ) {
        Ok(slot) => slot,
        Err(too_many) => {
            metrics::counter!("tandem_gateway_connections_refused_total").increment(1);
            return admission::Refusal::new(StatusCode::TOO_MANY_REQUESTS, too_many.to_string())
                .into_response();
        }
    };
    let max = state.config.max_frame_bytes;
    upgrade
        .protocols([SUBPROTOCOL])
        // tungstenite's default 128 KiB buffers per connection dominate the memory of idle connections;
        // they grow when a large frame needs it.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let draining = state.drain.connection();
            async move {
                connection::serve(socket, state, principal, slot).await;
                drop(draining);
            }
        })
        .into_response()
}

/// Responses carrying document data must never be cached (a CDN serving a stale document is a bug).
pub(crate) fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}
