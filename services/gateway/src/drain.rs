//! Draining on shutdown, so that a rolling update loses no client's work and surprises no one.
//!
//! When the gateway is told to stop it first *drains*: `/readyz` answers 503 (the load balancer
//! stops sending it new clients), new WebSocket upgrades are refused with 503, and the clients
//! already connected keep being served — acks, other clients' ops — for the grace period, so the
//! ops they have in flight complete here. When the grace ends (or sooner, once no client is left)
//! every connection is closed with 1012 (service restart): a client reconnects, through the load
//! balancer or its next gateway URL, with `open … since` and resends what was not acknowledged.
//! Then the HTTP server stops and [`crate::run`] returns.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;
use tracing::info;

/// The drain state every connection and probe looks at.
pub(crate) struct Drain {
    /// The gateway's stop signal: draining starts when it fires.
    shutdown: CancellationToken,
    /// Cancelled when the grace ends: connections close with 1012, the server stops.
    closing: CancellationToken,
    /// One token per open WebSocket connection, so the drain can end as soon as none is left.
    connections: TaskTracker,
}

impl Drain {
    pub fn new(shutdown: CancellationToken) -> Self {
        Self { shutdown, closing: CancellationToken::new(), connections: TaskTracker::new() }
    }

    /// Whether the gateway is shutting down (new clients go elsewhere).
    pub fn is_draining(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Fires when connections must close.
    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    /// Held by a connection for its whole life.
    pub fn connection(&self) -> TaskTrackerToken {
        self.connections.token()
    }

    /// Waits for the stop signal, then drains: not ready at once, closing after `grace` or as soon
    /// as no connection is left, whichever comes first.
    pub async fn run(&self, grace: Duration) {
        self.shutdown.cancelled().await;
        metrics::gauge!("tandem_gateway_draining").set(1.0);
        let open = self.connections.len();
        info!(open, grace_seconds = grace.as_secs_f64(), "draining: not ready, no new connections");
        self.connections.close();
        if tokio::time::timeout(grace, self.connections.wait()).await.is_ok() {
            info!("drained: no connection left");
        } else {
            info!(open = self.connections.len(), "drain grace over: closing connections with 1012");
        }
        self.closing.cancel();
    }

    /// After closing: waits until every connection has finished its close handshake (they run in
    /// tasks of their own, which the HTTP server does not wait for), at most `limit`.
    pub async fn closed(&self, limit: Duration) {
        if tokio::time::timeout(limit, self.connections.wait()).await.is_err() {
            tracing::warn!(open = self.connections.len(), "connections still closing; leaving them");
        }
    }
}
