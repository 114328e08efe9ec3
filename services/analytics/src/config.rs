//! The command line (every flag also an environment variable), validated once at start.

use std::net::SocketAddr;

use tandem_bus::kafka::KafkaArgs;

/// The analytics consumer. Every flag can also be set with the environment variable shown.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "tandem-analytics", version, about)]
pub struct Config {
    /// The Postgres database of the analytics tables (`analytics_*`, migrated at start). The event
    /// log's database will do: nothing here reads or writes the event log's tables.
    #[arg(long, env = "TANDEM_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432/tandem")]
    pub postgres_url: String,
    /// The Kafka bus: the topic read is `<namespace>.events`.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The consumer group on the events topic; default `<namespace>-analytics`. Never the
    /// sequencers' group (`<namespace>-sequencer`): a member of it is given ops to sequence.
    #[arg(long, env = "TANDEM_ANALYTICS_GROUP")]
    pub group: Option<String>,
    /// Names this process in logs and in the broker.
    #[arg(long, env = "TANDEM_INSTANCE", default_value = "analytics")]
    pub instance: String,
    /// Where to serve HTTP: Prometheus metrics (`GET /metrics`), liveness (`GET /healthz`) and
    /// readiness (`GET /readyz`); none: not served.
    #[arg(long, env = "TANDEM_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Most records counted in one Postgres transaction.
    #[arg(long, env = "TANDEM_ANALYTICS_MAX_BATCH", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_batch: u32,
    /// An author's edit this many seconds or more after their previous edit on a document starts a
    /// new edit run (docs/ANALYTICS.md).
    #[arg(long, env = "TANDEM_ANALYTICS_RUN_GAP_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub run_gap_seconds: u32,
}

impl Config {
    /// `<namespace>.events`.
    pub fn topic(&self) -> String {
        format!("{}.events", self.kafka.kafka_namespace)
    }

    /// The consumer group, checked: never the sequencers'.
    pub fn group(&self) -> Result<String, String> {
        let namespace = &self.kafka.kafka_namespace;
        let group = self.group.clone().unwrap_or_else(|| format!("{namespace}-analytics"));
        let sequencers = format!("{namespace}-sequencer");
        if group == sequencers {
            return Err(format!(
                "--group {group} is the sequencers' consumer group: a member of it is given partitions of \
                 {namespace}.ops to sequence; choose another (default {namespace}-analytics)"
            ));
        }
        if group.is_empty() {
            return Err("--group is empty".to_owned());
        }
        Ok(group)
    }

    /// The edit-run gap in milliseconds.
    pub fn run_gap_ms(&self) -> i64 {
        i64::from(self.run_gap_seconds) * 1000
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn the_group_defaults_to_the_namespace_and_refuses_the_sequencers_group() {
        let config = Config::parse_from(["tandem-analytics", "--kafka-namespace", "prod"]);
        assert_eq!(config.group().unwrap(), "prod-analytics");
        assert_eq!(config.topic(), "prod.events");
        let config = Config::parse_from([
            "tandem-analytics",
            "--kafka-namespace",
            "prod",
            "--group",
            "prod-sequencer",
        ]);
        assert!(config.group().unwrap_err().contains("sequencers' consumer group"));
    }
}
