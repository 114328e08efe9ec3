//! A connection's bounded outbound queue, shared by every document task that writes to it.

use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The frame could not be queued: the connection is overloaded or gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected;

/// The sending side of one connection's queue. Cloned into each document task the connection
/// subscribes to. When the queue is full the connection is marked overloaded: its task then closes
/// it with `overloaded` (4408) and the client catches up by version after reconnecting, instead of
/// the gateway buffering without bound for a client that cannot keep up.
#[derive(Clone)]
pub struct Outbound {
    tx: mpsc::Sender<Utf8Bytes>,
    overloaded: CancellationToken,
}

impl Outbound {
    /// A queue of `capacity` frames, the receiver the connection task drains, and the overload signal
    /// it watches.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Utf8Bytes>, CancellationToken) {
        let (tx, rx) = mpsc::channel(capacity);
        let overloaded = CancellationToken::new();
        (Self { tx, overloaded: overloaded.clone() }, rx, overloaded)
    }

    /// Queues a frame without waiting; a full queue marks the connection overloaded.
    pub fn push(&self, frame: Utf8Bytes) -> Result<(), Rejected> {
        match self.tx.try_send(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overloaded.cancel();
                Err(Rejected)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Rejected),
        }
    }

    /// Queues a frame, waiting up to `timeout` for room (catch-up, which may be long, uses this).
    pub async fn push_waiting(&self, frame: Utf8Bytes, timeout: Duration) -> Result<(), Rejected> {
        match tokio::time::timeout(timeout, self.tx.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Rejected),
            Err(_) => {
                self.overloaded.cancel();
                Err(Rejected)
            }
        }
    }
}
