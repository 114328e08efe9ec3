//! The Kafka flags every service shares (`--brokers`, `--partitions`, `--kafka-*`).

use std::time::Duration;

use super::KafkaConfig;

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
    /// Producer `linger.ms`: how long a record may wait to share a request with later ones.
    #[arg(long, env = "TANDEM_KAFKA_LINGER_MS", default_value_t = default_millis(|c| c.linger))]
    pub kafka_linger_ms: u64,
    /// Consumer `fetch.wait.max.ms`: how long the broker may hold a fetch that found less than
    /// `--kafka-fetch-min-bytes`. Brokers that do not answer early hold every fetch this long.
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
        KafkaConfig {
            brokers: self.brokers.clone(),
            partitions: self.partitions,
            client_id: client_id.to_owned(),
            linger: Duration::from_millis(self.kafka_linger_ms),
            fetch_wait: Duration::from_millis(self.kafka_fetch_wait_ms),
            fetch_min_bytes: self.kafka_fetch_min_bytes,
            ..KafkaConfig::default()
        }
    }

    /// One line for the start log: the settings a latency figure depends on.
    pub fn describe(&self) -> String {
        format!(
            "brokers {}, {} partitions, linger {} ms, fetch wait {} ms, fetch min {} bytes",
            self.brokers,
            self.partitions,
            self.kafka_linger_ms,
            self.kafka_fetch_wait_ms,
            self.kafka_fetch_min_bytes
        )
    }
}
