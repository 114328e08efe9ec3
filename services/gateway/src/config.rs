//! The gateway's limits and timeouts.

use std::time::Duration;

/// Limits and timeouts of the WebSocket edge. Each has a documented error when crossed.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
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
    /// How long the gateway waits for the record of an op it forwarded before submitting it again
    /// (doubling after each attempt); resubmission is safe, the sequencer deduplicates.
    pub resubmit_after: Duration,
    /// Resubmissions of one op before the gateway leaves it to the client.
    pub max_resubmissions: u32,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 1 << 20,
            outbound_queue: 4096,
            outbound_queue_bytes: 8 << 20,
            write_timeout: Duration::from_secs(10),
            max_open_documents: 100,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            catch_up_send_timeout: Duration::from_secs(10),
            document_queue: 4096,
            catch_up_page: 1000,
            resubmit_after: Duration::from_secs(3),
            max_resubmissions: 4,
        }
    }
}
