//! A connection's bounded outbound queue, shared by every document task that writes to it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The frame could not be queued: the connection is overloaded or gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected;

/// The sending side of one connection's queue, cloned into each document task the connection
/// subscribes to. The queue is bounded twice: in frames and in bytes (one client must not pin
/// thousands of megabyte-sized frames). When either bound is hit the connection is marked overloaded:
/// its task closes it with `overloaded` (4408) and the client catches up by version after
/// reconnecting, instead of the gateway buffering without bound for a client that cannot keep up.
#[derive(Clone)]
pub struct Outbound {
    tx: mpsc::Sender<Utf8Bytes>,
    overloaded: CancellationToken,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The connection task's side: frames to write, and the signals that end the connection.
pub struct Inbound {
    pub frames: mpsc::Receiver<Utf8Bytes>,
    pub overloaded: CancellationToken,
    queued_bytes: Arc<AtomicUsize>,
}

impl Inbound {
    /// Call for every frame taken off the queue once it is written.
    pub fn written(&self, frame: &Utf8Bytes) {
        self.queued_bytes.fetch_sub(frame.len(), Ordering::AcqRel);
    }
}

impl Outbound {
    /// A queue of at most `frames` frames and `max_bytes` bytes.
    pub fn new(frames: usize, max_bytes: usize) -> (Self, Inbound) {
        let (tx, rx) = mpsc::channel(frames);
        let overloaded = CancellationToken::new();
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let outbound =
            Self { tx, overloaded: overloaded.clone(), queued_bytes: queued_bytes.clone(), max_bytes };
        (outbound, Inbound { frames: rx, overloaded, queued_bytes })
    }

    /// Queues a frame without waiting; a full queue marks the connection overloaded.
    pub fn push(&self, frame: Utf8Bytes) -> Result<(), Rejected> {
        self.reserve_bytes(&frame)?;
        let len = frame.len();
        match self.tx.try_send(frame) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                if matches!(e, mpsc::error::TrySendError::Full(_)) {
                    self.overloaded.cancel();
                }
                Err(Rejected)
            }
        }
    }

    /// Marks the connection overloaded without queueing anything: it is closed with `overloaded`
    /// (4408), and the client reconnects and catches up by version.
    pub fn overload(&self) {
        self.overloaded.cancel();
    }

    /// True once the connection has ended and nothing queued will be written any more.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Queues a frame, waiting up to `timeout` for room (catch-up, which may be long, uses this).
    pub async fn push_waiting(&self, frame: Utf8Bytes, timeout: Duration) -> Result<(), Rejected> {
        self.reserve_bytes(&frame)?;
        let len = frame.len();
        let result = match tokio::time::timeout(timeout, self.tx.send(frame)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(_)) => Err(Rejected),
            Err(_) => {
                self.overloaded.cancel();
                Err(Rejected)
            }
        };
        self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
        result
    }

    fn reserve_bytes(&self, frame: &Utf8Bytes) -> Result<(), Rejected> {
        let before = self.queued_bytes.fetch_add(frame.len(), Ordering::AcqRel);
        if before + frame.len() > self.max_bytes && before > 0 {
            self.queued_bytes.fetch_sub(frame.len(), Ordering::AcqRel);
            self.overloaded.cancel();
            return Err(Rejected);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_and_byte_bounds_mark_the_connection_overloaded() {
        let (out, inbound) = Outbound::new(2, 1000);
        out.push("a".into()).unwrap();
        out.push("b".into()).unwrap();
        assert_eq!(out.push("c".into()), Err(Rejected));
        assert!(inbound.overloaded.is_cancelled());

        let (out, mut inbound) = Outbound::new(100, 10);
        out.push("123456".into()).unwrap();
        assert_eq!(out.push("123456".into()), Err(Rejected), "over 10 bytes");
        assert!(inbound.overloaded.is_cancelled());
        let frame = inbound.frames.try_recv().unwrap();
        inbound.written(&frame);
        assert_eq!(inbound.queued_bytes.load(Ordering::Acquire), 0);
    }

    #[test]
    fn one_frame_larger_than_the_byte_bound_still_goes_through_an_empty_queue() {
        let (out, _inbound) = Outbound::new(10, 4);
        out.push("a snapshot larger than the bound".into()).unwrap();
    }
}
