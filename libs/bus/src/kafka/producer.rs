//! The two producing sides: ops into `tandem.ops`, committed records into `tandem.events`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::try_join_all;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::ClientConfig;
use tandem_protocol::records::Submission;
use tandem_protocol::DocId;
use tracing::error;

use super::{trace, unavailable, KafkaConfig};
use crate::{partition_of, BusError, EventPublisher, OpSubmitter, Published};

/// Appends submitted ops to the ops topic (the sequencer ingress). Cheap to clone: clones share one
/// librdkafka producer, its connections and its batches.
#[derive(Clone)]
pub struct KafkaOpSubmitter {
    producer: Producer,
    topic: String,
    partitions: u32,
}

impl KafkaOpSubmitter {
    /// Connects lazily: creating the producer does not wait for a broker.
    pub fn new(config: &KafkaConfig) -> Result<Self, BusError> {
        let producer = Producer::new(config.producer_config(), "ops")?;
        Ok(Self { producer, topic: config.ops_topic.clone(), partitions: config.partitions })
    }

    /// Asks a broker for the ops topic's metadata within `timeout`: whether ops can be appended now
    /// (readiness).
    pub async fn check_broker(&self, timeout: Duration) -> Result<(), BusError> {
        let producer = self.producer.current();
        let topic = self.topic.clone();
        // The metadata call blocks a thread for a network round trip: keep it off the runtime.
        let metadata =
            tokio::task::spawn_blocking(move || producer.client().fetch_metadata(Some(&topic), timeout))
                .await
                .map_err(|e| BusError::Unavailable(format!("metadata task failed: {e}")))?
                .map_err(|e| unavailable("reading the ops topic's metadata", &e))?;
        match metadata.topics().iter().find(|t| t.name() == self.topic) {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
            _ => Err(BusError::Unavailable(format!("the broker does not know topic {}", self.topic))),
        }
    }
}

#[async_trait]
impl OpSubmitter for KafkaOpSubmitter {
    /// Returns once the broker acknowledged the record with acks=all, or failed within
    /// `delivery_timeout`. The current span's trace context (the ingress's `ingress append` span),
    /// when there is one, goes in the record's `traceparent` header, so the partition owner can
    /// tie its work to the client's request.
    async fn submit(&self, submission: Submission) -> Result<(), BusError> {
        let payload = tandem_proto::encode_submission(&submission);
        let headers = trace::current_headers();
        let producer = self.producer.current();
        let delivery = enqueue(&producer, &self.topic, self.partitions, &submission.doc, &payload, headers);
        let result = match delivery {
            Ok(delivery) => await_delivery(delivery).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.producer.replace_if_fatal(&producer);
        }
        result
    }
}

/// Publishes committed records to the events topic (the partition owner). Cheap to clone.
#[derive(Clone)]
pub struct KafkaEventPublisher {
    producer: Producer,
    topic: String,
    partitions: u32,
}

impl KafkaEventPublisher {
    /// Connects lazily: creating the producer does not wait for a broker.
    pub fn new(config: &KafkaConfig) -> Result<Self, BusError> {
        // Idempotent: a retried request cannot land after a later one, so version 5 never goes out
        // before version 4 (which every gateway would have to repair from the store).
        let producer = Producer::new(config.producer_config(), "events")?;
        Ok(Self { producer, topic: config.events_topic.clone(), partitions: config.partitions })
    }
}

#[async_trait]
impl EventPublisher for KafkaEventPublisher {
    /// Hands every record to librdkafka in order first, then waits for all deliveries together:
    /// one batch costs about one round trip, not one per record. On error some records may have
    /// been published; the caller republishes the batch and readers drop the duplicates by version.
    /// A record's trace context goes in its `traceparent` header.
    async fn publish(&self, records: Vec<Published>) -> Result<(), BusError> {
        let producer = self.producer.current();
        let result = publish_all(&producer, &self.topic, self.partitions, &records).await;
        if result.is_err() {
            self.producer.replace_if_fatal(&producer);
        }
        result
    }
}

async fn publish_all(
    producer: &FutureProducer,
    topic: &str,
    partitions: u32,
    records: &[Published],
) -> Result<(), BusError> {
    let mut deliveries = Vec::with_capacity(records.len());
    for Published { record, traceparent } in records {
        let payload = tandem_proto::encode_record(record);
        let headers = traceparent.as_deref().and_then(trace::headers_of_traceparent);
        deliveries.push(enqueue(producer, topic, partitions, record.doc(), &payload, headers)?);
    }
    try_join_all(deliveries.into_iter().map(await_delivery)).await?;
    Ok(())
}

/// A librdkafka producer that is replaced when it fails for good. An idempotent producer can hit a
/// fatal error (its sequence numbers and the broker's disagree beyond repair, or it was fenced):
/// from then on every produce fails at once. A new producer gets a new producer id and starts
/// clean; records the old one may have written are duplicates the readers drop (by (client, seq)
/// in the sequencer, by version in gateways). Cheap to clone: clones share the current producer.
#[derive(Clone)]
struct Producer {
    current: Arc<RwLock<FutureProducer>>,
    config: Arc<ClientConfig>,
    what: &'static str,
}

impl Producer {
    /// Connects lazily: creating the producer does not wait for a broker.
    fn new(config: ClientConfig, what: &'static str) -> Result<Self, BusError> {
        let producer = config
            .create()
            .map_err(|e| unavailable(&format!("creating the kafka producer for {what}"), &e))?;
        Ok(Self { current: Arc::new(RwLock::new(producer)), config: Arc::new(config), what })
    }

    fn current(&self) -> FutureProducer {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// After a failed produce with `used`: if it has a fatal error and is still the current
    /// producer (another task may have replaced it already), put a new one in its place.
    fn replace_if_fatal(&self, used: &FutureProducer) {
        let Some((code, reason)) = used.client().fatal_error() else { return };
        let mut current = self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !std::ptr::eq(current.client().native_ptr(), used.client().native_ptr()) {
            return;
        }
        error!(producer = self.what, ?code, %reason, "the kafka producer failed for good; replacing it");
        match self.config.create() {
            Ok(fresh) => *current = fresh,
            Err(e) => error!(producer = self.what, error = %e, "cannot create a new kafka producer"),
        }
    }
}

/// Queues one record for its document's partition without waiting. Enqueueing synchronously, in
/// the caller's order, is what keeps a document's records in order within a batch.
fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    partitions: u32,
    doc: &DocId,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
) -> Result<DeliveryFuture, BusError> {
    // The partition is chosen here, not by librdkafka's partitioner, so the in-process and Kafka
    // buses agree and nothing depends on librdkafka's hash.
    let partition = partition_of(doc, partitions) as i32;
    let mut record = FutureRecord::to(topic).key(doc.as_str()).partition(partition).payload(payload);
    if let Some(headers) = headers {
        record = record.headers(headers);
    }
    producer.send_result(record).map_err(|(e, _)| unavailable("queueing a record", &e))
}

/// Waits for the broker's answer to one record.
async fn await_delivery(delivery: DeliveryFuture) -> Result<(), BusError> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(unavailable("producing a record", &e)),
        // The producer was dropped with the record still queued.
        Err(_) => Err(BusError::Closed),
    }
}
