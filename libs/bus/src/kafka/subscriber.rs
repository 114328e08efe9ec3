//! The gateways' reader of the events topic: every partition, no consumer group.
//!
//! Every gateway needs every record (any of its sockets may be on any document), so there is
//! nothing to share out and a group would only add rebalances: each stream assigns itself all
//! partitions. It starts at the end, as of the moment of `subscribe`: older records are the event
//! store's business (catch-up by version).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::runtime::{Handle, RuntimeFlavor};
use tracing::{debug, error, warn};

use super::{trace, unavailable, KafkaConfig};
use crate::{BusError, Delivery, EventStream, EventSubscriber};

/// Opens readers of the events topic for a gateway.
#[derive(Clone)]
pub struct KafkaEventSubscriber {
    config: KafkaConfig,
}

impl KafkaEventSubscriber {
    /// Each `subscribe` opens its own consumer; no broker is contacted before that.
    pub fn new(config: &KafkaConfig) -> Self {
        Self { config: config.clone() }
    }
}

impl EventSubscriber for KafkaEventSubscriber {
    /// Opens a consumer of all partitions starting at each partition's end offset, read from the
    /// broker now, so the stream sees every record published after this call returns.
    ///
    /// This blocks for one end-offset request per partition (about a millisecond each nearby); a
    /// gateway subscribes once, at start. A partition without a leader yet is asked again for up to
    /// the request timeout. If the broker cannot be asked, the stream starts at
    /// whatever end librdkafka finds later and its first delivery is `Lagged(0)`: the records
    /// published in between may be missed.
    fn subscribe(&self) -> Box<dyn EventStream> {
        match open(&self.config) {
            Ok(stream) => Box::new(stream),
            Err(e) => {
                error!(error = %e, "cannot read the events topic");
                Box::new(ClosedStream)
            }
        }
    }
}

/// Readers opened by this process, to name each one's (never joined) group.
static READERS: AtomicU64 = AtomicU64::new(0);

/// A consumer for the events topic: no group membership, never commits.
fn consumer(config: &KafkaConfig) -> Result<StreamConsumer, BusError> {
    let mut client_config = config.consumer_config();
    // Should a position fall off the log (retention), jump to the newest record: the offset gap
    // is reported as `Lagged` and the gateway repairs from the store.
    client_config.set("auto.offset.reset", "latest");
    // librdkafka only takes a manual assignment with a group id set. This group is never joined
    // (no subscribe) and never committed to, so a fresh id per reader leaves nothing behind.
    let reader = READERS.fetch_add(1, Ordering::Relaxed);
    client_config.set("group.id", format!("{}-events-{}-{reader}", config.client_id, std::process::id()));
    client_config.create().map_err(|e| unavailable("creating the events consumer", &e))
}

fn open(config: &KafkaConfig) -> Result<KafkaEventStream, BusError> {
    let consumer = consumer(config)?;
    let topic = config.events_topic.as_str();
    let mut assignment = TopicPartitionList::new();
    let mut next_offsets = HashMap::new();
    let mut resolved = true;
    let ends = blocking(|| end_offsets(&consumer, topic, config));
    match ends {
        Ok(ends) => {
            debug!(?ends, "events reader starts at the end offsets");
            for (partition, high) in ends {
                assignment
                    .add_partition_offset(topic, partition, Offset::Offset(high))
                    .map_err(|e| unavailable("building the events assignment", &e))?;
                next_offsets.insert(partition, high);
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot read the end offsets of the events topic; starting at the end");
            resolved = false;
            for partition in 0..config.partitions as i32 {
                assignment
                    .add_partition_offset(topic, partition, Offset::End)
                    .map_err(|e| unavailable("building the events assignment", &e))?;
            }
        }
    }
    consumer.assign(&assignment).map_err(|e| unavailable("assigning the events partitions", &e))?;
    Ok(KafkaEventStream {
        consumer: Arc::new(consumer),
        next_offsets,
        pending: if resolved { None } else { Some(Delivery::Lagged(0)) },
    })
}

/// The end offset of each partition of `topic`, asked again (within `request_timeout`) while a
/// partition has no leader yet: a topic created moments ago answers `LeaderNotAvailable` or
/// `UnknownTopicOrPartition` for a while, and giving up at once would start the reader at an
/// unresolved end that may fall after the first records published.
fn end_offsets(
    consumer: &StreamConsumer,
    topic: &str,
    config: &KafkaConfig,
) -> Result<Vec<(i32, i64)>, KafkaError> {
    let deadline = std::time::Instant::now() + config.request_timeout;
    loop {
        let ends = (0..config.partitions as i32)
            .map(|p| consumer.fetch_watermarks(topic, p, config.request_timeout).map(|(_, high)| (p, high)))
            .collect::<Result<Vec<_>, KafkaError>>();
        match ends {
            Err(e) if std::time::Instant::now() < deadline => {
                debug!(error = %e, "end offsets not readable yet; asking again");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// Runs a blocking call without stalling other tasks of a multi-threaded runtime.
pub(super) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// One gateway's reader of the events topic.
struct KafkaEventStream {
    consumer: Arc<StreamConsumer>,
    /// The offset expected next in each partition: a record past it means records were skipped.
    /// Offsets of the events topic have no holes (no transactions, no compaction), so any jump is a
    /// real gap.
    next_offsets: HashMap<i32, i64>,
    /// A delivery to give before reading further: the record behind a reported gap.
    pending: Option<Delivery>,
}

#[async_trait]
impl EventStream for KafkaEventStream {
    /// Never `None`: a Kafka reader does not end; errors surface as `Lagged`.
    async fn next(&mut self) -> Option<Delivery> {
        if let Some(delivery) = self.pending.take() {
            return Some(delivery);
        }
        loop {
            let message = match self.consumer.recv().await {
                Ok(message) => message,
                Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset)) => {
                    warn!("events reader fell off the log; records were skipped");
                    return Some(Delivery::Lagged(0));
                }
                Err(e) => {
                    // Transport errors and the like: librdkafka reconnects and resumes at the same
                    // offset, so nothing is lost; a real loss shows as an offset gap.
                    warn!(error = %e, "events reader");
                    continue;
                }
            };
            let partition = message.partition();
            let offset = message.offset();
            let expected = self.next_offsets.insert(partition, offset + 1);
            let gap = match expected {
                Some(expected) if offset > expected => (offset - expected) as u64,
                _ => 0,
            };
            let delivery = match message.payload().map(tandem_proto::decode_record) {
                Some(Ok(record)) => Some(Delivery::Record {
                    record: Arc::new(record),
                    traceparent: trace::traceparent(message.headers()).map(Arc::from),
                }),
                // A record this build cannot read: a record type added by a newer sequencer (rolling
                // upgrade), or a stray producer's bytes. Nothing in it concerns this gateway's
                // documents in a form it could use, so it is skipped and counted; reporting it as
                // lag would send every open document to Postgres for each such record. (Should a
                // committed version ever be among them, the document's next record shows the
                // version gap and the hub repairs that one document from the store.)
                Some(Err(e)) => {
                    skipped(partition, offset, &e.to_string());
                    None
                }
                None => {
                    skipped(partition, offset, "no value");
                    None
                }
            };
            if gap > 0 {
                warn!(partition, offset, gap, "events reader skipped records");
                self.pending = delivery;
                return Some(Delivery::Lagged(gap));
            }
            if let Some(delivery) = delivery {
                return Some(delivery);
            }
        }
    }
}

/// Logs and counts a record of the events topic that is not a `tandem.v1.SequencedRecord` this
/// build knows (`tandem_bus_events_skipped_total`).
fn skipped(partition: i32, offset: i64, reason: &str) {
    metrics::counter!("tandem_bus_events_skipped_total").increment(1);
    warn!(partition, offset, reason, "skipped an event record this build cannot read");
}

/// The stream of a subscriber that could not open a consumer: ended at once.
struct ClosedStream;

#[async_trait]
impl EventStream for ClosedStream {
    async fn next(&mut self) -> Option<Delivery> {
        None
    }
}
