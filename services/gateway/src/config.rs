//! The gateway's limits and timeouts.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::admission::Authentication;

/// Limits and timeouts of the WebSocket edge. Each has a documented error when crossed.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Who may connect: a JWT on the upgrade, or nobody asked (development).
    pub auth: Authentication,
    /// Origins besides the server's own whose pages may use a cookie session.
    pub allowed_origins: Vec<String>,
    /// Mark the session cookie `Secure` (sent over HTTPS only). Off only for plain-HTTP development.
    pub cookie_secure: bool,
    /// Connections one user may have open at once (HTTP 429 beyond). Not counted without authentication.
    pub max_connections_per_user: usize,
    /// Connections one IP address may have open at once (HTTP 429 beyond).
    pub max_connections_per_ip: usize,
    /// Sustained `op` and `open` messages per second on one connection (`rate_limited` beyond).
    pub ops_per_second: u32,
    /// How many `op` and `open` messages one connection may send at once before the rate applies.
    pub ops_burst: u32,
    /// The kernel send buffer of each client socket (`SO_SNDBUF`; 0 keeps the kernel's autotuning,
    /// up to several MiB per socket). Bounds what a client that stops reading parks in kernel memory,
    /// so the gateway's own queue limit (and `overloaded`) applies instead.
    pub socket_send_buffer: usize,
    /// Largest WebSocket message accepted; larger ones close the connection with 1009 (`too_large`).
    pub max_frame_bytes: usize,
    /// Frames waiting to be written to one client; when full the client is `overloaded` (4408).
    pub outbound_queue: usize,
    /// Bytes waiting to be written to one client; past this the client is `overloaded` too.
    pub outbound_queue_bytes: usize,
    /// Longest a write to a client may block before the client is `overloaded`.
    pub write_timeout: Duration,
    /// Documents one connection may have open at once (`too_large` beyond).
    pub max_open_documents: usize,
    /// Ops of one connection waiting to be handed to the sequencer, in order, while the connection
    /// goes on reading and writing; an op beyond is answered `unavailable` (resend later). A client
    /// keeps one op in flight per document, so this is room for that many documents edited at once.
    pub submit_queue: usize,
    /// Time from the upgrade to the `hello` frame.
    pub handshake_timeout: Duration,
    /// A connection that sends nothing for this long is closed (clients ping to stay alive).
    pub idle_timeout: Duration,
    /// Longest a catch-up after `open` may wait for room in the client's queue.
    pub catch_up_send_timeout: Duration,
    /// Commands queued per open document before live records are shed (and repaired from the store).
    pub document_queue: usize,
    /// Events read from the store per page during catch-up and gap repair.
    pub catch_up_page: usize,
    /// How many versions behind the document an `open` with `since` may be and still be answered
    /// by a replay of every version after `since`; further behind, it is answered by a `snapshot`
    /// (then `opened`). The default is the sequencer's default `max_base_lag` (10,000), and it
    /// should not be lower: a client further behind than that cannot have its unacknowledged op
    /// accepted anyway (`invalid_op`, reload), so the snapshot costs it nothing a replay would keep.
    pub catch_up_limit: u64,
    /// Rejections a document task could not take at once (its queue full) that wait for room, over
    /// the whole gateway. Past it, the rejected op's author is closed as `overloaded` (4408): it
    /// reconnects, resends the op and gets its rejection again.
    pub max_spilled_rejections: usize,
    /// Resubmissions (see `resubmit_after`) in flight at once, over the whole gateway. An op due
    /// while this many are in flight is not resubmitted this time; it stays tracked and is tried
    /// again at its next due time (each time counts as one of its `max_resubmissions`).
    pub max_resubmissions_in_flight: usize,
    /// How long the gateway waits for the record of an op it forwarded before submitting it again
    /// (doubling after each attempt); resubmission is safe, the sequencer deduplicates.
    pub resubmit_after: Duration,
    /// Resubmissions of one op before the gateway leaves it to the client.
    pub max_resubmissions: u32,
    /// On shutdown, how long connected clients keep being served (not ready, no new connections)
    /// before their connections are closed with 1012; a Kubernetes pod's grace period must be longer.
    pub drain_grace: Duration,
    /// The token of trusted services: the Documents API lets its bearer read and write every
    /// document (docs/DOCUMENTS.md). `None`: only user tokens (or nobody, without authentication).
    pub service_token: Option<ServiceToken>,
    /// Versions queued for one Documents API watcher that reads too slowly before its stream ends
    /// as `overloaded`.
    pub watch_queue: usize,
    /// How long ApplyEdit and DeleteDocument wait for the sequencer's outcome before answering
    /// `unavailable` (the caller retries with the same request id).
    pub api_wait: Duration,
    /// How long a document's task stays after the Documents API's last call or watcher on it,
    /// loaded and following the record stream, so that a caller's next edit finds the document in
    /// memory instead of loading it from the store again.
    pub api_linger: Duration,
    /// Presence limits and timing, and the channel to other gateways (see [`crate::presence`]).
    pub presence: crate::presence::PresenceConfig,
}

/// A shared secret whose `Debug` form does not show it (configurations are printed and logged).
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceToken(Arc<str>);

impl ServiceToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ServiceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceToken(<redacted>)")
    }
}

impl FromStr for ServiceToken {
    type Err = String;

    /// Refuses an empty token: it would let anyone in.
    fn from_str(token: &str) -> Result<Self, String> {
        if token.trim().is_empty() {
            return Err("the service token is empty".to_owned());
        }
        Ok(Self(token.into()))
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            auth: Authentication::Disabled,
            allowed_origins: Vec::new(),
            cookie_secure: true,
            max_connections_per_user: 100,
            max_connections_per_ip: 1000,
            ops_per_second: 1000,
            ops_burst: 2000,
            socket_send_buffer: 128 << 10,
            max_frame_bytes: 1 << 20,
            outbound_queue: 4096,
            outbound_queue_bytes: 8 << 20,
            write_timeout: Duration::from_secs(10),
            max_open_documents: 100,
            submit_queue: 64,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            catch_up_send_timeout: Duration::from_secs(10),
            document_queue: 4096,
            catch_up_page: 1000,
            catch_up_limit: 10_000,
            max_spilled_rejections: 1024,
            max_resubmissions_in_flight: 256,
            resubmit_after: Duration::from_secs(3),
            max_resubmissions: 4,
            drain_grace: Duration::from_secs(10),
            service_token: None,
            watch_queue: 1024,
            api_wait: Duration::from_secs(10),
            api_linger: Duration::from_secs(10),
            presence: crate::presence::PresenceConfig::default(),
        }
    }
}
