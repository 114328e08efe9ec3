//! The two producing sides: ops into `tandem.ops`, committed records into `tandem.events`.

use async_trait::async_trait;
use futures::future::try_join_all;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tandem_proto::trace_context;
use tandem_protocol::records::{SequencedRecord, Submission};
use tandem_protocol::DocId;

use super::{trace, unavailable, KafkaConfig};
use crate::{partition_of, BusError, EventPublisher, OpSubmitter};

/// Appends submitted ops to the ops topic (the sequencer ingress). Cheap to clone: clones share one
/// librdkafka producer, its connections and its batches.
#[derive(Clone)]
pub struct KafkaOpSubmitter {
    producer: FutureProducer,
    topic: String,
    partitions: u32,
}

impl KafkaOpSubmitter {
    /// Connects lazily: creating the producer does not wait for a broker.
    pub fn new(config: &KafkaConfig) -> Result<Self, BusError> {
        let producer = config
            .producer_config()
            .create()
            .map_err(|e| unavailable("creating the kafka producer for ops", &e))?;
        Ok(Self { producer, topic: config.ops_topic.clone(), partitions: config.partitions })
    }
}

#[async_trait]
impl OpSubmitter for KafkaOpSubmitter {
    /// Returns once the broker acknowledged the record with acks=all, or failed within
    /// `delivery_timeout`. The task's trace context, when there is one, becomes the record's
    /// `traceparent` header, so the partition owner can tie its work to the client's request.
    async fn submit(&self, submission: Submission) -> Result<(), BusError> {
        let payload = tandem_proto::encode_submission(&submission);
        let headers = trace::headers(trace_context::current().as_ref());
        let delivery =
            enqueue(&self.producer, &self.topic, self.partitions, &submission.doc, &payload, headers)?;
        await_delivery(delivery).await
    }
}

/// Publishes committed records to the events topic (the partition owner). Cheap to clone.
#[derive(Clone)]
pub struct KafkaEventPublisher {
    producer: FutureProducer,
    topic: String,
    partitions: u32,
}

impl KafkaEventPublisher {
    /// Connects lazily: creating the producer does not wait for a broker.
    pub fn new(config: &KafkaConfig) -> Result<Self, BusError> {
        // Idempotent: a retried request cannot land after a later one, so version 5 never goes out
        // before version 4 (which every gateway would have to repair from the store).
        let producer = config
            .producer_config()
            .create()
            .map_err(|e| unavailable("creating the kafka producer for events", &e))?;
        Ok(Self { producer, topic: config.events_topic.clone(), partitions: config.partitions })
    }
}

#[async_trait]
impl EventPublisher for KafkaEventPublisher {
    /// Hands every record to librdkafka in order first, then waits for all deliveries together:
    /// one batch costs about one round trip, not one per record. On error some records may have
    /// been published; the caller republishes the batch and readers drop the duplicates by version.
    async fn publish(&self, records: Vec<SequencedRecord>) -> Result<(), BusError> {
        let mut deliveries = Vec::with_capacity(records.len());
        for record in &records {
            let payload = tandem_proto::encode_record(record);
            // No trace header: the owner publishes a batch of many clients' ops, which belongs
            // to no single request's trace context.
            let headers = None;
            deliveries.push(enqueue(
                &self.producer,
                &self.topic,
                self.partitions,
                record.doc(),
                &payload,
                headers,
            )?);
        }
        try_join_all(deliveries.into_iter().map(await_delivery)).await?;
        Ok(())
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
