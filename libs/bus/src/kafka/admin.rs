//! Creating the bus's topics at start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use tracing::{debug, info};

use super::{millis, unavailable, KafkaConfig};
use crate::BusError;

/// Creates the ops and events topics with `config.partitions` partitions, the configured replication
/// factor, `min.insync.replicas` and retention when they are missing, then waits until the broker's
/// metadata shows both with that many partitions. An existing topic's settings are left as they are
/// (changing them is an operator's decision, with `kafka-configs`).
///
/// A topic that already exists is fine. One that exists with another partition count is an error:
/// [`partition_of`](crate::partition_of) would send documents to partitions that do not exist, or
/// leave some unread. Waiting for the metadata means a producer started right after this never
/// sees "unknown topic".
pub async fn ensure_topics(config: &KafkaConfig) -> Result<(), BusError> {
    let admin: Arc<AdminClient<DefaultClientContext>> = Arc::new(
        config.client_config().create().map_err(|e| unavailable("creating the kafka admin client", &e))?,
    );
    let partitions = i32::try_from(config.partitions)
        .map_err(|_| BusError::Unavailable(format!("{} partitions is too many", config.partitions)))?;
    let topics = [config.ops_topic.as_str(), config.events_topic.as_str()];
    let min_insync = config.min_insync_replicas.to_string();
    let retention = [millis(config.ops_retention), millis(config.events_retention)];
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .zip(&retention)
        .map(|(name, retention)| {
            NewTopic::new(name, partitions, TopicReplication::Fixed(config.replication_factor))
                .set("min.insync.replicas", &min_insync)
                .set("retention.ms", retention)
                // Offsets are positions Postgres stores (ops) and gaps readers detect (events):
                // a compacted topic would have holes in both.
                .set("cleanup.policy", "delete")
        })
        .collect();
    let options = AdminOptions::new().request_timeout(Some(config.request_timeout));
    let results = admin
        .create_topics(new_topics.iter(), &options)
        .await
        .map_err(|e| unavailable("creating topics", &e))?;
    for result in results {
        match result {
            Ok(topic) => info!(%topic, partitions, "created topic"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => debug!(%topic, "topic exists"),
            Err((topic, code)) => {
                return Err(BusError::Unavailable(format!("creating topic {topic}: {code}")));
            }
        }
    }

    // Metadata reaches every broker shortly after creation, and each partition gets its leader a
    // little later: ask until every partition has one. A reader that asked for the end offsets of
    // a partition without a leader would have to start at an unresolved end and could miss the
    // first records published after it subscribed.
    let deadline = Instant::now() + config.request_timeout;
    for topic in topics {
        loop {
            let found = topic_partitions(&admin, topic, config).await?;
            match found {
                Some((n, led)) if n == config.partitions as usize && led == n => break,
                Some((n, _)) if n != config.partitions as usize && n > 0 => {
                    return Err(BusError::Unavailable(format!(
                        "topic {topic} has {n} partitions, the configuration says {}",
                        config.partitions
                    )));
                }
                _ if Instant::now() >= deadline => {
                    return Err(BusError::Unavailable(format!(
                        "topic {topic} did not appear in the metadata with a leader for each partition"
                    )));
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    Ok(())
}

/// How many partitions the broker's metadata shows for `topic`, and how many of them have a
/// leader; `None` while it does not know the topic.
pub(super) async fn topic_partitions(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    topic: &str,
    config: &KafkaConfig,
) -> Result<Option<(usize, usize)>, BusError> {
    // The metadata call blocks a thread for a network round trip: keep it off the runtime.
    let admin = Arc::clone(admin);
    let topic_name = topic.to_owned();
    let timeout = config.request_timeout;
    let metadata =
        tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(Some(&topic_name), timeout))
            .await
            .map_err(|e| BusError::Unavailable(format!("metadata task failed: {e}")))?
            .map_err(|e| unavailable("reading topic metadata", &e))?;
    Ok(metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none()).map(|t| {
        let led = t.partitions().iter().filter(|p| p.error().is_none() && p.leader() >= 0).count();
        (t.partitions().len(), led)
    }))
}
