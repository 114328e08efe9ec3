//! The Kafka flags every service shares (`--brokers`, `--partitions`, `--kafka-*`).

use std::time::Duration;

use super::{GroupProtocol, KafkaConfig};

/// Where the bus connects and how it trades latency for broker load. Every flag can also be set with
/// the environment variable shown; the defaults are [`KafkaConfig::default`]'s, whose fields say why.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap brokers, `host:port[,host:port…]`.
    #[arg(long, env = "TANDEM_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Partitions of the Kafka topics (fixed for the life of a cluster; the same in every service).
    #[arg(long, env = "TANDEM_PARTITIONS", default_value_t = 16)]
    pub partitions: u32,
    /// Prefix of the topics (`NAME.ops`, `NAME.events`, `NAME.presence`) and of the sequencers' group
    /// (`NAME-sequencer`): several Tandem clusters can share one Kafka cluster.
    #[arg(long, env = "TANDEM_KAFKA_NAMESPACE", default_value = "tandem")]
    pub kafka_namespace: String,
    /// Replicas of each topic the sequencers create (3 in production).
    #[arg(long, env = "TANDEM_KAFKA_REPLICATION_FACTOR", default_value_t = 1)]
    pub kafka_replication_factor: i32,
    /// `min.insync.replicas` of each topic the sequencers create (2 in production).
    #[arg(long, env = "TANDEM_KAFKA_MIN_INSYNC_REPLICAS", default_value_t = 1)]
    pub kafka_min_insync_replicas: i32,
    /// The sequencers' group protocol: `classic` or `consumer` (KIP-848).
    #[arg(long, env = "TANDEM_KAFKA_GROUP_PROTOCOL", default_value_t = KafkaConfig::default().group_protocol)]
    pub kafka_group_protocol: GroupProtocol,
    /// Classic protocol: how long a crashed sequencer keeps its partitions, in milliseconds (the
    /// broker's `group.min.session.timeout.ms` is the lower bound). With `consumer` the broker's
    /// `group.consumer.session.timeout.ms` applies instead.
    #[arg(long, env = "TANDEM_KAFKA_SESSION_TIMEOUT_MS", default_value_t = default_millis(|c| c.session_timeout))]
    pub kafka_session_timeout_ms: u64,
    /// Classic protocol: how often a member heartbeats, in milliseconds.
    #[arg(long, env = "TANDEM_KAFKA_HEARTBEAT_MS", default_value_t = default_millis(|c| c.heartbeat_interval))]
    pub kafka_heartbeat_ms: u64,
    /// Classic protocol: how long a rebalance waits for a member that has not rejoined, in
    /// milliseconds (`max.poll.interval.ms`; at least the session timeout).
    #[arg(long, env = "TANDEM_KAFKA_REBALANCE_TIMEOUT_MS", default_value_t = default_millis(|c| c.rebalance_timeout))]
    pub kafka_rebalance_timeout_ms: u64,
    /// Producer `linger.ms`: how long a record may wait to share a request with later ones.
    #[arg(long, env = "TANDEM_KAFKA_LINGER_MS", default_value_t = default_millis(|c| c.linger))]
    pub kafka_linger_ms: u64,
    /// Consumer `fetch.wait.max.ms`: how long the broker may hold a fetch that found less than
    /// `--kafka-fetch-min-bytes`. Kafka answers early when a record arrives, so this sets the idle
    /// fetch rate, not the latency.
    #[arg(long, env = "TANDEM_KAFKA_FETCH_WAIT_MS", default_value_t = default_millis(|c| c.fetch_wait))]
    pub kafka_fetch_wait_ms: u64,
    /// Consumer `fetch.min.bytes`: the broker answers a fetch once it has this much (or the wait ends).
    #[arg(long, env = "TANDEM_KAFKA_FETCH_MIN_BYTES", default_value_t = KafkaConfig::default().fetch_min_bytes)]
    pub kafka_fetch_min_bytes: u32,
}

fn default_millis(field: impl Fn(&KafkaConfig) -> Duration) -> u64 {
    field(&KafkaConfig::default()).as_millis() as u64
}

impl KafkaArgs {
    /// The configuration these flags describe, for the client named `client_id` in broker logs.
    pub fn config(&self, client_id: &str) -> KafkaConfig {
        let namespace = &self.kafka_namespace;
        KafkaConfig {
            brokers: self.brokers.clone(),
            ops_topic: format!("{namespace}.ops"),
            events_topic: format!("{namespace}.events"),
            presence_topic: format!("{namespace}.presence"),
            group_id: format!("{namespace}-sequencer"),
            partitions: self.partitions,
            replication_factor: self.kafka_replication_factor,
            min_insync_replicas: self.kafka_min_insync_replicas,
            group_protocol: self.kafka_group_protocol,
            session_timeout: Duration::from_millis(self.kafka_session_timeout_ms),
            heartbeat_interval: Duration::from_millis(self.kafka_heartbeat_ms),
            rebalance_timeout: Duration::from_millis(self.kafka_rebalance_timeout_ms),
            client_id: client_id.to_owned(),
            linger: Duration::from_millis(self.kafka_linger_ms),
            fetch_wait: Duration::from_millis(self.kafka_fetch_wait_ms),
            fetch_min_bytes: self.kafka_fetch_min_bytes,
            ..KafkaConfig::default()
        }
    }

    /// One line for the start log: the settings a latency or failover figure depends on.
    pub fn describe(&self) -> String {
        format!(
            "brokers {}, namespace {}, {} partitions, replication {} (min in sync {}), group protocol {} \
             (session {} ms, heartbeat {} ms, rebalance {} ms), linger {} ms, fetch wait {} ms, fetch min {} bytes",
            self.brokers,
            self.kafka_namespace,
            self.partitions,
            self.kafka_replication_factor,
            self.kafka_min_insync_replicas,
            self.kafka_group_protocol,
            self.kafka_session_timeout_ms,
            self.kafka_heartbeat_ms,
            self.kafka_rebalance_timeout_ms,
            self.kafka_linger_ms,
            self.kafka_fetch_wait_ms,
            self.kafka_fetch_min_bytes
        )
    }
}
