//! Whether the gateway has a record stream open.
//!
//! Without one, no `ack` and no other client's `op` reaches this gateway's clients: their ops are
//! committed, but nobody here hears of it until the stream is back (the record router resubscribes,
//! see [`crate::record_router`]).

use std::sync::Mutex;

use tokio::time::Instant;

#[derive(Debug, Default)]
pub(crate) struct EventsHealth {
    /// When the last stream ended, while no new one is open.
    ended: Mutex<Option<Instant>>,
}

impl EventsHealth {
    /// A stream is open.
    pub fn opened(&self) {
        *self.ended.lock().expect("events health lock") = None;
    }

    /// The stream ended; none is open until the next [`EventsHealth::opened`].
    pub fn ended(&self) {
        *self.ended.lock().expect("events health lock") = Some(Instant::now());
    }

    /// Ready while a stream is open. An open stream that delivers nothing is not a fault: a quiet
    /// system publishes nothing.
    pub fn check(&self) -> Result<(), String> {
        match *self.ended.lock().expect("events health lock") {
            None => Ok(()),
            Some(at) => Err(format!(
                "no record stream is open (the last one ended {:.1} s ago); resubscribing",
                at.elapsed().as_secs_f64()
            )),
        }
    }
}
