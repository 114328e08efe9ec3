//! The bus of the single-process mode: bounded channels standing in for Kafka topics.
//!
//! Ops go through one bounded queue per partition (a full queue makes `submit` wait a little, then
//! answer `Unavailable`, so backpressure reaches the client as `unavailable` instead of growing
//! memory). Records go through a broadcast channel: a subscriber that falls behind loses the oldest
//! records and is told so ([`Delivery::Lagged`]), just as a Kafka reader can miss records, and repairs
//! the gap from the event store.
//!
//! Trace context travels with each op and record as it would in Kafka's headers (docs/TRACING.md),
//! so the single process's traces have the same spans as the cluster's.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tandem_protocol::records::{SequencedRecord, Submission};
use tokio::sync::{broadcast, mpsc};

use crate::{
    partition_of, BusError, Delivery, EventPublisher, EventStream, EventSubscriber, OpConsumer, OpSubmitter,
    PartitionId, Published, SubmissionRecord,
};

/// An op in a partition queue: its offset, the op, and the submitter's trace context.
type QueuedOp = (i64, Submission, Option<String>);

/// A record in the broadcast channel, with the trace context it was published with.
type BroadcastRecord = (Arc<SequencedRecord>, Option<Arc<str>>);

/// Sizes of the in-process bus.
#[derive(Debug, Clone)]
pub struct InProcessConfig {
    pub partitions: u32,
    /// Ops waiting per partition before `submit` pushes back.
    pub op_queue: usize,
    /// Records a subscriber may fall behind before it lags.
    pub record_buffer: usize,
    /// How long `submit` waits for room in a full queue before answering `Unavailable`.
    pub submit_timeout: Duration,
}

impl Default for InProcessConfig {
    fn default() -> Self {
        Self {
            partitions: 1,
            op_queue: 65_536,
            record_buffer: 65_536,
            submit_timeout: Duration::from_secs(2),
        }
    }
}

/// Builds the in-process bus: the submitter and subscriber handles (cloneable) and one consumer per
/// partition for the sequencer to own.
pub fn in_process(
    config: &InProcessConfig,
) -> (InProcessSubmitter, Vec<InProcessConsumer>, InProcessPublisher, InProcessSubscriber) {
    let partitions = config.partitions.max(1);
    let mut senders = Vec::new();
    let mut consumers = Vec::new();
    for partition in 0..partitions {
        let (tx, rx) = mpsc::channel(config.op_queue);
        senders.push(tx);
        consumers.push(InProcessConsumer { partition, rx });
    }
    let (records, _) = broadcast::channel(config.record_buffer);
    let submitter = InProcessSubmitter {
        senders: Arc::new(senders),
        timeout: config.submit_timeout,
        offsets: Arc::new((0..partitions).map(|_| AtomicI64::new(0)).collect()),
    };
    (submitter, consumers, InProcessPublisher { records: records.clone() }, InProcessSubscriber { records })
}

/// Hands ops to the partition queues.
#[derive(Clone)]
pub struct InProcessSubmitter {
    senders: Arc<Vec<mpsc::Sender<QueuedOp>>>,
    /// Next offset per partition, assigned at submission like a broker would.
    offsets: Arc<Vec<AtomicI64>>,
    timeout: Duration,
}

#[async_trait]
impl OpSubmitter for InProcessSubmitter {
    async fn submit(&self, submission: Submission) -> Result<(), BusError> {
        let partition = partition_of(&submission.doc, self.senders.len() as u32) as usize;
        let sender = &self.senders[partition];
        let permit = match tokio::time::timeout(self.timeout, sender.reserve()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(BusError::Closed),
            Err(_) => {
                return Err(BusError::Unavailable(format!(
                    "partition {partition} has {} ops queued",
                    sender.max_capacity()
                )))
            }
        };
        // Taking the offset while holding the permit keeps offsets in queue order.
        let offset = self.offsets[partition].fetch_add(1, Ordering::Relaxed);
        // The caller's span (the gateway's `submit`), like the Kafka submitter's record header.
        permit.send((offset, submission, tandem_telemetry::propagation::current_traceparent()));
        Ok(())
    }
}

/// Reads one partition's queue.
pub struct InProcessConsumer {
    partition: PartitionId,
    rx: mpsc::Receiver<QueuedOp>,
}

#[async_trait]
impl OpConsumer for InProcessConsumer {
    fn partition(&self) -> PartitionId {
        self.partition
    }

    async fn next_batch(&mut self, max: usize) -> Result<Vec<SubmissionRecord>, BusError> {
        let mut buffer = Vec::with_capacity(max.min(1024));
        if self.rx.recv_many(&mut buffer, max.max(1)).await == 0 {
            return Err(BusError::Closed);
        }
        let partition = self.partition;
        Ok(buffer
            .into_iter()
            .map(|(offset, submission, traceparent)| SubmissionRecord {
                partition,
                offset,
                submission,
                traceparent,
            })
            .collect())
    }

    /// Nothing to do: the in-process log lives only as long as the process, so a new owner (after a
    /// restart) has no earlier records to skip or replay. Unacknowledged ops are resubmitted by
    /// their clients instead.
    async fn seek(&mut self, _next_offset: i64) -> Result<(), BusError> {
        Ok(())
    }
}

/// Publishes records to every subscriber.
#[derive(Clone)]
pub struct InProcessPublisher {
    records: broadcast::Sender<BroadcastRecord>,
}

#[async_trait]
impl EventPublisher for InProcessPublisher {
    async fn publish(&self, records: Vec<Published>) -> Result<(), BusError> {
        for Published { record, traceparent } in records {
            // No subscriber is not an error: nobody is watching, and the store has everything.
            let _ = self.records.send((Arc::new(record), traceparent.map(Arc::from)));
        }
        Ok(())
    }
}

/// Opens readers of the record stream.
#[derive(Clone)]
pub struct InProcessSubscriber {
    records: broadcast::Sender<BroadcastRecord>,
}

impl EventSubscriber for InProcessSubscriber {
    fn subscribe(&self) -> Box<dyn EventStream> {
        Box::new(InProcessStream { rx: self.records.subscribe() })
    }
}

struct InProcessStream {
    rx: broadcast::Receiver<BroadcastRecord>,
}

#[async_trait]
impl EventStream for InProcessStream {
    async fn next(&mut self) -> Option<Delivery> {
        match self.rx.recv().await {
            Ok((record, traceparent)) => Some(Delivery::Record { record, traceparent }),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Delivery::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_ot::Operation;
    use tandem_protocol::{ClientId, DocId};

    fn submission(doc: &str, seq: u64) -> Submission {
        Submission {
            author: String::new(),
            delete_document: false,
            doc: DocId::parse(doc).unwrap(),
            client: ClientId::parse("c").unwrap(),
            seq,
            base: 0,
            op: Operation::new(),
        }
    }

    #[tokio::test]
    async fn ops_reach_their_partition_in_order_with_offsets() {
        let config = InProcessConfig { partitions: 4, ..Default::default() };
        let (submitter, mut consumers, _, _) = in_process(&config);
        for seq in 1..=3 {
            submitter.submit(submission("doc-a", seq)).await.unwrap();
        }
        let p = partition_of(&DocId::parse("doc-a").unwrap(), 4) as usize;
        let batch = consumers[p].next_batch(10).await.unwrap();
        assert_eq!(
            batch.iter().map(|r| (r.offset, r.submission.seq)).collect::<Vec<_>>(),
            [(0, 1), (1, 2), (2, 3)]
        );
    }

    #[tokio::test]
    async fn full_queue_answers_unavailable() {
        let config =
            InProcessConfig { op_queue: 1, submit_timeout: Duration::from_millis(10), ..Default::default() };
        let (submitter, _consumers, _, _) = in_process(&config);
        submitter.submit(submission("d", 1)).await.unwrap();
        let err = submitter.submit(submission("d", 2)).await.unwrap_err();
        assert!(matches!(err, BusError::Unavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn lagging_subscriber_is_told() {
        let config = InProcessConfig { record_buffer: 2, ..Default::default() };
        let (_, _, publisher, subscriber) = in_process(&config);
        let mut stream = subscriber.subscribe();
        let record = |seq| SequencedRecord::Reacknowledged {
            doc: DocId::parse("d").unwrap(),
            client: ClientId::parse("c").unwrap(),
            seq,
            version: seq,
        };
        publisher.publish((1..=5).map(|seq| record(seq).into()).collect()).await.unwrap();
        assert!(matches!(stream.next().await, Some(Delivery::Lagged(3))));
        assert!(matches!(stream.next().await, Some(Delivery::Record { record: r, .. }) if *r == record(4)));
    }

    #[test]
    fn partitioning_is_stable() {
        let doc = DocId::parse("notes").unwrap();
        assert_eq!(partition_of(&doc, 16), partition_of(&doc, 16));
        assert_eq!(partition_of(&doc, 1), 0);
    }
}
