//! Presence between gateways on Kafka: topic `tandem.presence` (docs/ARCHITECTURE.md says why Kafka).
//!
//! Every gateway writes the presences of its connections and reads every partition without a
//! consumer group (each needs all of it, like `tandem.events`), never committing an offset. Records
//! are keyed by document id into [`partition_of`]'s partition, so one document's records stay in
//! order. The producer trades durability for latency: acks=1, no idempotence, `linger.ms` 0; a
//! record lost to a broker failover is re-announced by the next heartbeat anyway.
//!
//! [`partition_of`]: crate::partition_of

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tandem_protocol::presence::PresenceRecord;
use tracing::{debug, info, warn};

use super::admin::topic_partitions;
use super::{millis, subscriber::blocking, unavailable, KafkaConfig};
use crate::presence::{PresenceBus, PresenceStream};
use crate::{partition_of, BusError};

/// Creates the presence topic when it is missing: [`KafkaConfig::partitions`] partitions, the
/// configured replication factor, and a short retention ([`KafkaConfig::presence_retention`], also
/// its segment time, so old records really go). An existing topic is left as it is.
pub async fn ensure_presence_topic(config: &KafkaConfig) -> Result<(), BusError> {
    let admin: AdminClient<DefaultClientContext> =
        config.client_config().create().map_err(|e| unavailable("creating the kafka admin client", &e))?;
    let partitions = i32::try_from(config.partitions)
        .map_err(|_| BusError::Unavailable(format!("{} partitions is too many", config.partitions)))?;
    let retention = millis(config.presence_retention);
    let topic =
        NewTopic::new(&config.presence_topic, partitions, TopicReplication::Fixed(config.replication_factor))
            .set("retention.ms", &retention)
            .set("segment.ms", &retention)
            .set("cleanup.policy", "delete");
    let options = AdminOptions::new().request_timeout(Some(config.request_timeout));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .map_err(|e| unavailable("creating the presence topic", &e))?;
    for result in results {
        match result {
            Ok(topic) => info!(%topic, partitions, "created topic"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => debug!(%topic, "topic exists"),
            Err((topic, code)) => {
                return Err(BusError::Unavailable(format!("creating topic {topic}: {code}")))
            }
        }
    }
    // Until every partition has a leader, a reader cannot look up where to start and would start
    // at an end resolved later, missing the first announcements (the next heartbeat would bring them).
    let admin = Arc::new(admin);
    let deadline = Instant::now() + config.request_timeout;
    loop {
        match topic_partitions(&admin, &config.presence_topic, config).await? {
            Some((n, led)) if n == config.partitions as usize && led == n => return Ok(()),
            Some((n, _)) if n != config.partitions as usize && n > 0 => {
                return Err(BusError::Unavailable(format!(
                    "topic {} has {n} partitions, the configuration says {}",
                    config.presence_topic, config.partitions
                )));
            }
            _ if Instant::now() >= deadline => {
                return Err(BusError::Unavailable(format!(
                    "topic {} did not get a leader for each partition in time",
                    config.presence_topic
                )));
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The presence channel on Kafka. Cheap to clone (one librdkafka producer shared).
#[derive(Clone)]
pub struct KafkaPresenceBus {
    producer: FutureProducer,
    config: KafkaConfig,
}

impl KafkaPresenceBus {
    /// Connects lazily: creating the producer does not wait for a broker.
    pub fn new(config: &KafkaConfig) -> Result<Self, BusError> {
        let mut producer_config = config.client_config();
        producer_config
            // One replica's word is enough: a lost record is re-announced by the next heartbeat,
            // and waiting for every replica would only add to the latency people see.
            .set("acks", "1")
            .set("enable.idempotence", "false")
            .set("linger.ms", millis(config.linger))
            .set("message.timeout.ms", millis(config.delivery_timeout));
        let producer = producer_config
            .create()
            .map_err(|e| unavailable("creating the kafka producer for presence", &e))?;
        Ok(Self { producer, config: config.clone() })
    }
}

impl PresenceBus for KafkaPresenceBus {
    fn publish(&self, record: PresenceRecord) {
        let payload = tandem_proto::presence::encode_presence(&record);
        let partition = partition_of(&record.doc, self.config.partitions) as i32;
        let message = FutureRecord::to(&self.config.presence_topic)
            .key(record.doc.as_str())
            .partition(partition)
            .payload(&payload);
        match self.producer.send_result(message) {
            Ok(delivery) => {
                // Awaited only to count failures; the record goes out whether or not anyone waits.
                tokio::spawn(async move {
                    if !matches!(delivery.await, Ok(Ok(_))) {
                        metrics::counter!("tandem_bus_presence_dropped_total").increment(1);
                    }
                });
            }
            Err((e, _)) => {
                metrics::counter!("tandem_bus_presence_dropped_total").increment(1);
                debug!(error = %e, "presence record not queued");
            }
        }
    }

    /// Opens a consumer of every partition, each from its first record no older than `replay` (or
    /// its end when there is none). If the broker cannot be asked for those offsets now, the reader
    /// starts at the end: what it misses comes with the next heartbeats.
    fn subscribe(&self, replay: Duration) -> Box<dyn PresenceStream> {
        match open(&self.config, replay) {
            Ok(consumer) => Box::new(KafkaPresenceStream { consumer }),
            Err(e) => {
                warn!(error = %e, "cannot read the presence topic; presence stays local to this gateway");
                Box::new(ClosedPresence)
            }
        }
    }
}

/// Readers opened by this process, to name each one's (never joined) group.
static READERS: AtomicU64 = AtomicU64::new(0);

fn open(config: &KafkaConfig, replay: Duration) -> Result<StreamConsumer, BusError> {
    let mut client_config = config.consumer_config();
    client_config.set("auto.offset.reset", "latest");
    // A manual assignment needs a group id; this one is never joined nor committed to.
    let reader = READERS.fetch_add(1, Ordering::Relaxed);
    client_config.set("group.id", format!("{}-presence-{}-{reader}", config.client_id, std::process::id()));
    let consumer: StreamConsumer =
        client_config.create().map_err(|e| unavailable("creating the presence consumer", &e))?;
    let topic = config.presence_topic.as_str();
    let since = SystemTime::now().checked_sub(replay).unwrap_or(UNIX_EPOCH);
    let since_ms = since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let mut wanted = TopicPartitionList::new();
    for partition in 0..config.partitions as i32 {
        wanted
            .add_partition_offset(topic, partition, Offset::Offset(since_ms))
            .map_err(|e| unavailable("building the presence assignment", &e))?;
    }
    let starts = blocking(|| consumer.offsets_for_times(wanted, config.request_timeout));
    let assignment = match starts {
        Ok(starts) => starts,
        Err(e) => {
            warn!(error = %e, "cannot look up recent presence offsets; reading from the end");
            let mut ends = TopicPartitionList::new();
            for partition in 0..config.partitions as i32 {
                ends.add_partition_offset(topic, partition, Offset::End)
                    .map_err(|e| unavailable("building the presence assignment", &e))?;
            }
            ends
        }
    };
    consumer.assign(&assignment).map_err(|e| unavailable("assigning the presence partitions", &e))?;
    Ok(consumer)
}

struct KafkaPresenceStream {
    consumer: StreamConsumer,
}

#[async_trait]
impl PresenceStream for KafkaPresenceStream {
    /// Never `None`: the reader outlives broker outages (librdkafka reconnects).
    async fn next(&mut self) -> Option<PresenceRecord> {
        loop {
            match self.consumer.recv().await {
                Ok(message) => match message.payload().map(tandem_proto::presence::decode_presence) {
                    Some(Ok(record)) => return Some(record),
                    Some(Err(e)) => skipped(message.partition(), message.offset(), &e.to_string()),
                    None => skipped(message.partition(), message.offset(), "no value"),
                },
                Err(e) => debug!(error = %e, "presence reader"),
            }
        }
    }
}

/// A record that is not a `tandem.v1.PresenceRecord` this build can use: skipped and counted.
fn skipped(partition: i32, offset: i64, reason: &str) {
    metrics::counter!("tandem_bus_presence_skipped_total").increment(1);
    warn!(partition, offset, reason, "skipped a presence record this build cannot read");
}

/// The stream of a bus whose consumer could not be created: ended at once.
struct ClosedPresence;

#[async_trait]
impl PresenceStream for ClosedPresence {
    async fn next(&mut self) -> Option<PresenceRecord> {
        None
    }
}
