//! The bus on Kafka (rdkafka), for the distributed mode.
//!
//! - [`KafkaOpSubmitter`]: the sequencer ingress appends each [`Submission`] to `tandem.ops`, keyed by
//!   document id, into the partition [`partition_of`] names, and answers only once the broker has it
//!   (acks=all). The trace context of the submission (the current span's, through
//!   `tandem_telemetry::propagation`) goes along in the record's `traceparent` header.
//! - [`KafkaOpLog`]: the sequencers form one consumer group on `tandem.ops`, so each partition has
//!   one owner at a time. Rebalances reach the owner as [`Assignment`] messages over a channel; each
//!   assigned partition comes with its own [`KafkaPartitionConsumer`] (one task per partition), which
//!   the owner first seeks ([`OpConsumer::seek`](crate::OpConsumer::seek)) to the offset it stored in Postgres.
//!   Offsets are never committed to Kafka: the store is their only home, written in the same
//!   transaction as the events they produced.
//! - [`KafkaEventPublisher`]: the owner publishes committed records to `tandem.events`, keyed by
//!   document id, into the partition [`partition_of`] names, with the `traceparent` header of a
//!   traced op's `publish` span.
//! - [`KafkaEventSubscriber`]: every gateway reads every partition of `tandem.events` without a
//!   group, from the end at subscribe time; gaps become [`Delivery::Lagged`](crate::Delivery).
//! - [`KafkaPresenceBus`]: gateways announce presence on `tandem.presence` (acks=1, best effort)
//!   and read every partition of it without a group, from a little before the end.
//!
//! Record values are the protobuf messages of `proto/tandem/v1/records.proto` (`Submission` on
//! `tandem.ops`, `SequencedRecord` on `tandem.events`), encoded and validated by tandem-proto: the
//! schema is public API, read by analytics consumers with any protobuf library.
//!
//! Partitions are always chosen here with [`partition_of`], never by librdkafka's partitioner, so
//! the in-process and the Kafka bus put a document in the same partition, and nothing else depends
//! on librdkafka's hash. Both producers are idempotent (acks=all, sequence numbers per partition):
//! a retried produce is written once and never overtakes a later one, so a document's records stay
//! in order with several requests in flight. Tandem still deduplicates on its own, because a
//! producer's idempotence ends with the producer: the sequencer drops resubmitted ops by
//! (client, seq), and gateways drop records by version.
//!
//! [`Submission`]: tandem_protocol::records::Submission
//! [`partition_of`]: crate::partition_of

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

use crate::BusError;

mod admin;
#[cfg(feature = "cli")]
mod args;
mod op_log;
mod presence;
mod producer;
mod subscriber;
mod trace;

pub use admin::ensure_topics;
#[cfg(feature = "cli")]
pub use args::KafkaArgs;
pub use op_log::{Assignment, KafkaOpLog, KafkaPartitionConsumer};
pub use presence::{ensure_presence_topic, KafkaPresenceBus};
pub use producer::{KafkaEventPublisher, KafkaOpSubmitter};
pub use subscriber::KafkaEventSubscriber;

/// Where the Kafka bus connects and how it trades latency for load.
///
/// Every value has a default fit for one keystroke reaching every other editor in a few
/// milliseconds; the reasons are on each field.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port` separated by commas.
    pub brokers: String,
    /// Submitted ops, keyed by document id. Default `tandem.ops`.
    pub ops_topic: String,
    /// Committed records, keyed by document id. Default `tandem.events`.
    pub events_topic: String,
    /// Presence between gateways, keyed by document id. Default `tandem.presence`. Created by the
    /// gateways ([`ensure_presence_topic`]), with [`KafkaConfig::partitions`] partitions.
    pub presence_topic: String,
    /// Partitions of both topics. Ops and records of a document share the partition number
    /// ([`partition_of`](crate::partition_of)), and it is the unit of sequencer ownership: more
    /// partitions spread load over more sequencers, but each one costs an owner task and a
    /// fetch slot. Changing it moves documents between partitions, so it is fixed for the life of
    /// a cluster. Default 16.
    pub partitions: u32,
    /// Replicas of each topic created by [`ensure_topics`]. Default 1 (the development broker has
    /// one node); 3 in production, so acks=all means three copies.
    pub replication_factor: i32,
    /// `min.insync.replicas` of both topics: with acks=all, a produce fails instead of being
    /// acknowledged by fewer replicas than this. Default 1 (one node); 2 in production with a
    /// replication factor of 3, so an acknowledged op survives the loss of any one broker.
    pub min_insync_replicas: i32,
    /// `retention.ms` of the ops topic. An op is needed only until its partition's owner has
    /// committed it (its offset is then in Postgres); a day covers any sequencer outage that the
    /// clients' resubmission would not. Default 24 h.
    pub ops_retention: Duration,
    /// `retention.ms` of the events topic. Gateways read only new records (older ones come from
    /// Postgres), so this is for analytics consumers reading the topic from the beginning: a week
    /// to catch up after an outage. Default 7 days.
    pub events_retention: Duration,
    /// `retention.ms` (and `segment.ms`) of the presence topic. A presence record matters until the
    /// next heartbeat re-announces it (seconds); readers start near the end. A minute keeps the
    /// topic a few segments long. Default 60 s.
    pub presence_retention: Duration,
    /// The sequencers' consumer group protocol. Default [`GroupProtocol::Classic`]: see its
    /// variants and BENCHMARKS.md for the measured takeover times.
    pub group_protocol: GroupProtocol,
    /// The sequencers' consumer group on the ops topic. Default `tandem-sequencer`.
    pub group_id: String,
    /// Classic protocol: how long the group coordinator waits for a silent member before giving
    /// its partitions to another, which is most of the failover time of a crashed sequencer
    /// (measured: a SIGKILLed member's partitions reach the survivor 2.0 s after the kill with
    /// 2 s). Default 2 s, under Kafka's default minimum (`group.min.session.timeout.ms`, 6 s):
    /// brokers for Tandem lower it (deploy/kafka.sh sets 1 s, docs/ARCHITECTURE.md says why), and a
    /// broker that refuses is named in the error. librdkafka's own default (45 s) would stall a
    /// crashed owner's documents for 45 s.
    pub session_timeout: Duration,
    /// How often a member tells the coordinator it is alive, and learns of a rebalance. 500 ms:
    /// well under a third of the session timeout, and a rebalance reaches members within half a
    /// second.
    pub heartbeat_interval: Duration,
    /// Classic protocol: `max.poll.interval.ms`, which is also the group's rebalance timeout: how
    /// long the coordinator holds a rebalance open for a member that still heartbeats but has not
    /// rejoined, during which no partition that changes hands has an owner. Kafka's default,
    /// 5 minutes, is what the fault-injection soak met after a broker restart (every moved
    /// partition stalled for 300 s). The member's driver polls the group consumer all the time, so
    /// a healthy member rejoins within milliseconds; past this bound librdkafka leaves the group
    /// and joins again. Default 15 s: above the longest pause a live process shows (the soak
    /// freezes sequencers for up to 8 s), far under five minutes. At least `session_timeout`.
    pub rebalance_timeout: Duration,
    /// Names this process in broker logs and metrics, e.g. `sequencer-0`.
    pub client_id: String,
    /// `linger.ms`: how long the producer holds a record to batch it with later ones. 0: every
    /// submit is a keystroke someone waits for, so it goes out at once; under load librdkafka still
    /// batches the records that queue up while a request is in flight.
    pub linger: Duration,
    /// `fetch.wait.max.ms`: how long the broker may hold a fetch that found fewer than
    /// `fetch.min.bytes` (1: any record). Kafka answers a held fetch as soon as a record arrives,
    /// so this does not add latency; it bounds how often an idle consumer asks (each idle reader
    /// sends 1000 / this fetches a second: at 5 ms, the broker spent most of a core answering the
    /// empty fetches of a quiet cluster) and how long a newly assigned partition waits for the
    /// fetch that includes it. 100 ms.
    pub fetch_wait: Duration,
    /// `fetch.min.bytes`: a fetch is answered once this much is there (or `fetch_wait` is over).
    /// 1: any record, since a record is a keystroke someone is waiting for.
    pub fetch_min_bytes: u32,
    /// `message.timeout.ms`: how long a produce may retry before it fails. Bounded so a submit
    /// against an unreachable broker answers `unavailable` within seconds (the client resends
    /// later) instead of librdkafka's default five minutes.
    pub delivery_timeout: Duration,
    /// Deadline of admin and metadata requests (topic creation, end offsets at subscribe time).
    pub request_timeout: Duration,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".to_owned(),
            ops_topic: "tandem.ops".to_owned(),
            events_topic: "tandem.events".to_owned(),
            presence_topic: "tandem.presence".to_owned(),
            partitions: 16,
            replication_factor: 1,
            min_insync_replicas: 1,
            ops_retention: Duration::from_secs(24 * 3600),
            events_retention: Duration::from_secs(7 * 24 * 3600),
            presence_retention: Duration::from_secs(60),
            group_protocol: GroupProtocol::Classic,
            group_id: "tandem-sequencer".to_owned(),
            session_timeout: Duration::from_secs(2),
            heartbeat_interval: Duration::from_millis(500),
            rebalance_timeout: Duration::from_secs(15),
            client_id: "tandem".to_owned(),
            linger: Duration::ZERO,
            fetch_wait: Duration::from_millis(100),
            fetch_min_bytes: 1,
            delivery_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl KafkaConfig {
    /// Settings every client shares: where to connect and how.
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            // Requests are small and latency-bound: never let Nagle hold one back.
            .set("socket.nagle.disable", "true");
        config
    }

    /// A producer: acks=all, idempotent, no batching delay.
    fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config
            // The record is on every in-sync replica before the submit answers `accepted`.
            .set("acks", "all")
            // Sequence numbers per partition: the broker writes a retried request once, and
            // rejects one that would overtake an earlier request, so up to five requests may be
            // in flight without reordering a document's records (librdkafka's limit with
            // idempotence). Without it, one request in flight was the only way to keep order.
            .set("enable.idempotence", "true")
            .set("max.in.flight.requests.per.connection", "5")
            .set("linger.ms", millis(self.linger))
            .set("message.timeout.ms", millis(self.delivery_timeout));
        config
    }

    /// A consumer: fetches answered as soon as one record is there, offsets never committed.
    fn consumer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("fetch.wait.max.ms", millis(self.fetch_wait))
            .set("fetch.min.bytes", self.fetch_min_bytes.to_string())
            // Offsets live in Postgres, committed with the events they produced; a Kafka commit
            // would be a second, disagreeing truth.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // Topics are created by `ensure_topics` with the right partition count, never by a
            // consumer asking for metadata.
            .set("allow.auto.create.topics", "false");
        config
    }
}

/// How the sequencers' consumer group shares out partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupProtocol {
    /// The classic protocol with the cooperative-sticky assignor: members heartbeat to the group
    /// coordinator, a silent member is dropped after `session.timeout.ms` (a client setting), and
    /// every change is a join-and-sync round of the whole group.
    Classic,
    /// KIP-848 (`group.protocol=consumer`): the coordinator assigns partitions itself, member by
    /// member, without a group-wide round; session timeout and heartbeat interval are the
    /// broker's (`group.consumer.*`) or the group's settings, not the client's.
    Consumer,
}

impl std::str::FromStr for GroupProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "classic" => Ok(Self::Classic),
            "consumer" => Ok(Self::Consumer),
            other => Err(format!("unknown group protocol {other:?}: expected classic or consumer")),
        }
    }
}

impl std::fmt::Display for GroupProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Classic => "classic",
            Self::Consumer => "consumer",
        })
    }
}

/// A duration as librdkafka's millisecond setting.
fn millis(duration: Duration) -> String {
    duration.as_millis().to_string()
}

/// A Kafka failure as the bus reports it: the caller may retry later.
fn unavailable(what: &str, error: &KafkaError) -> BusError {
    BusError::Unavailable(format!("{what}: {error}"))
}
