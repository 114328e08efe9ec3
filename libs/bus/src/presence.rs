//! The presence channel between gateways: where each editing session's selection is.
//!
//! Unlike the op log and the record stream, nothing here is durable or exactly once. A record is a
//! gateway saying "this session is here, with this selection" (or "left"); each gateway re-announces
//! its live presences on a heartbeat, so a lost record is repaired by the next one, and a gateway
//! that dies stops re-announcing: its presences time out everywhere. So publishing never waits and
//! never fails for the caller, and a reader that falls behind just skips what it missed.
//!
//! [`InProcessPresence`] is the single-process bus (a broadcast channel); the Kafka one is
//! [`crate::kafka::KafkaPresenceBus`] (topic `tandem.presence`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tandem_protocol::presence::PresenceRecord;
use tokio::sync::broadcast;

/// A gateway's side of the presence channel.
pub trait PresenceBus: Send + Sync + 'static {
    /// Sends a record to every gateway (this one included; readers skip their own). Best effort,
    /// never waits: a record that cannot be sent is counted and dropped, the heartbeat repairs it.
    fn publish(&self, record: PresenceRecord);

    /// A reader of the records published from now on, and, where the channel keeps them, of those
    /// published in the last `replay` (Kafka: a gateway that starts learns the presences re-announced
    /// within one heartbeat at once, instead of waiting for the next).
    fn subscribe(&self, replay: Duration) -> Box<dyn PresenceStream>;
}

/// Records of the presence channel, in publication order per document.
#[async_trait]
pub trait PresenceStream: Send + 'static {
    /// The next record; `None` when the channel has closed for good.
    async fn next(&mut self) -> Option<PresenceRecord>;
}

/// The presence channel of one process: a broadcast channel. Cheap to clone.
#[derive(Clone)]
pub struct InProcessPresence {
    records: broadcast::Sender<Arc<PresenceRecord>>,
}

impl InProcessPresence {
    /// A channel holding up to `buffer` records for a reader that is behind.
    pub fn new(buffer: usize) -> Self {
        Self { records: broadcast::channel(buffer.max(1)).0 }
    }
}

impl Default for InProcessPresence {
    fn default() -> Self {
        Self::new(4096)
    }
}

impl PresenceBus for InProcessPresence {
    fn publish(&self, record: PresenceRecord) {
        // No reader is fine: a single gateway has nobody to tell.
        let _ = self.records.send(Arc::new(record));
    }

    /// Nothing is kept, so `replay` has nothing to give.
    fn subscribe(&self, _replay: Duration) -> Box<dyn PresenceStream> {
        Box::new(InProcessPresenceStream { rx: self.records.subscribe() })
    }
}

struct InProcessPresenceStream {
    rx: broadcast::Receiver<Arc<PresenceRecord>>,
}

#[async_trait]
impl PresenceStream for InProcessPresenceStream {
    async fn next(&mut self) -> Option<PresenceRecord> {
        loop {
            match self.rx.recv().await {
                Ok(record) => return Some((*record).clone()),
                // Skipped records are repaired by the next heartbeat.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tandem_protocol::{ClientId, DocId};

    use super::*;

    fn record(connection: u64) -> PresenceRecord {
        PresenceRecord {
            doc: DocId::parse("d").unwrap(),
            client: ClientId::parse("c").unwrap(),
            user: "ann".into(),
            gateway: "g".into(),
            connection,
            sent_at_ms: 0,
            state: None,
        }
    }

    #[tokio::test]
    async fn every_reader_gets_every_record_and_a_slow_one_skips_ahead() {
        let bus = InProcessPresence::new(2);
        bus.publish(record(0)); // before any reader: nobody hears it, nothing fails
        let mut a = bus.subscribe(Duration::from_secs(5));
        let mut b = bus.subscribe(Duration::ZERO);
        for connection in 1..=2 {
            bus.publish(record(connection));
            assert_eq!(a.next().await.map(|r| r.connection), Some(connection));
        }
        bus.publish(record(3));
        assert_eq!(a.next().await.map(|r| r.connection), Some(3));
        // `b` read nothing while three records came through a buffer of two: it lost the oldest.
        assert_eq!(b.next().await.map(|r| r.connection), Some(2));
    }
}
