//! Ops this gateway handed to the sequencer and has not yet seen sequenced.
//!
//! A submission can be lost after the sequencer service accepted it and before it was committed (a
//! broker that loses a topic, a crash between hops). The gateway keeps each forwarded op until its
//! record (committed, re-acknowledged or rejected) comes back, and submits it again when it does not
//! come back in time. That is safe because the sequencer deduplicates by (client, seq): a second
//! copy of a committed op is only re-acknowledged. So a lost submission heals without the client.
//!
//! It is also where the gateway measures its sequencers: `tandem_gateway_ack_seconds` is the time
//! from handing an op over to its record coming back (what the author waits for its ack, but the
//! client's own hop), and `tandem_gateway_pending_ops` the ops waiting so (grows while the sequencers
//! or Kafka lag behind).

use std::collections::HashMap;
use std::time::Duration;

use metrics::{Gauge, Histogram};

use tandem_protocol::records::Submission;
use tandem_protocol::ClientId;
use tokio::time::Instant;

/// One op waiting for its record.
#[derive(Debug)]
struct Pending {
    submission: Submission,
    handed_over: Instant,
    due: Instant,
    attempts: u32,
}

/// The ops of one document waiting for their records, keyed by (client, seq).
#[derive(Debug)]
pub(crate) struct PendingOps {
    ops: HashMap<(ClientId, u64), Pending>,
    resubmit_after: Duration,
    max_attempts: u32,
    capacity: usize,
    /// Handles made once per document, not looked up in the registry per op.
    pending_gauge: Gauge,
    ack_seconds: Histogram,
}

impl PendingOps {
    pub fn new(resubmit_after: Duration, max_attempts: u32, capacity: usize) -> Self {
        Self {
            ops: HashMap::new(),
            resubmit_after,
            max_attempts,
            capacity,
            pending_gauge: metrics::gauge!("tandem_gateway_pending_ops"),
            ack_seconds: metrics::histogram!("tandem_gateway_ack_seconds"),
        }
    }

    /// Starts waiting for `submission`'s record. Beyond `capacity` ops (a client not waiting for its
    /// acks, against the protocol) nothing more is tracked: the client's own resubmission still heals.
    pub fn track(&mut self, submission: Submission, now: Instant) {
        if self.ops.len() >= self.capacity {
            return;
        }
        let key = (submission.client.clone(), submission.seq);
        let pending = Pending { submission, handed_over: now, due: now + self.resubmit_after, attempts: 0 };
        if self.ops.insert(key, pending).is_none() {
            self.pending_gauge.increment(1.0);
        }
    }

    /// The record of (client, seq) arrived: stop waiting.
    pub fn resolve(&mut self, client: &ClientId, seq: u64) {
        if self.ops.is_empty() {
            return;
        }
        if let Some(pending) = self.ops.remove(&(client.clone(), seq)) {
            self.pending_gauge.decrement(1.0);
            self.ack_seconds.record(pending.handed_over.elapsed().as_secs_f64());
        }
    }

    /// When the next resubmission is due, if any op is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        self.ops.values().map(|p| p.due).min()
    }

    /// The ops due at `now`, to submit again. Each waits twice as long before its next attempt; one
    /// that has used all its attempts is dropped (the client resubmits it after reconnecting).
    pub fn take_due(&mut self, now: Instant) -> Vec<Submission> {
        let mut due = Vec::new();
        let (max_attempts, resubmit_after, gauge) =
            (self.max_attempts, self.resubmit_after, &self.pending_gauge);
        self.ops.retain(|_, pending| {
            if pending.due > now {
                return true;
            }
            pending.attempts += 1;
            due.push(pending.submission.clone());
            pending.due = now + resubmit_after * 2u32.saturating_pow(pending.attempts);
            let keep = pending.attempts < max_attempts;
            if !keep {
                gauge.decrement(1.0);
            }
            keep
        });
        due
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

impl Drop for PendingOps {
    /// The document's task ends (nobody has it open): its ops stop waiting here.
    fn drop(&mut self) {
        self.pending_gauge.decrement(self.ops.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use tandem_ot::Operation;
    use tandem_protocol::DocId;

    use super::*;

    fn submission(seq: u64) -> Submission {
        Submission {
            author: String::new(),
            delete_document: false,
            doc: DocId::parse("d").unwrap(),
            client: ClientId::parse("c").unwrap(),
            seq,
            base: 0,
            op: Operation::new(),
        }
    }

    #[test]
    fn resubmits_until_resolved_backing_off_then_gives_up() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut pending = PendingOps::new(second, 2, 10);
        pending.track(submission(1), start);
        pending.track(submission(2), start);
        assert!(pending.take_due(start).is_empty());
        pending.resolve(&ClientId::parse("c").unwrap(), 2);
        assert_eq!(pending.next_due(), Some(start + second));
        let due = pending.take_due(start + second);
        assert_eq!(due.iter().map(|s| s.seq).collect::<Vec<_>>(), [1]);
        // The next attempt waits twice as long, and it is the last one.
        assert_eq!(pending.next_due(), Some(start + 3 * second));
        assert_eq!(pending.take_due(start + 3 * second).len(), 1);
        assert_eq!(pending.len(), 0);
    }

    #[test]
    fn tracking_is_bounded() {
        let mut pending = PendingOps::new(Duration::from_secs(1), 3, 2);
        for seq in 1..=5 {
            pending.track(submission(seq), Instant::now());
        }
        assert_eq!(pending.len(), 2);
    }
}
