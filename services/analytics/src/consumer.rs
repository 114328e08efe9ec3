//! The reader of `<namespace>.events`: a member of the analytics consumer group that counts what
//! each poll returns in one Postgres transaction.
//!
//! It runs on a thread of its own, not on the async runtime: librdkafka calls the rebalance
//! callback inside `poll`, and on an assignment the callback reads the partitions' stored offsets
//! from Postgres (blocking on the runtime's handle) and assigns the partitions *at* those offsets,
//! so no record is fetched from anywhere else. Batches are committed on this thread too, between
//! polls: a rebalance never finds a batch half written, and the offsets Postgres holds are always
//! where this member's position is, except for records of the batch in hand.
//!
//! Kafka's committed offsets are never written or read (`enable.auto.commit=false`, no commit
//! call): the analytics tables are the one record of how far the counts go.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tandem_bus::kafka::{GroupProtocol, KafkaArgs};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::record::{self, Position, Record, Skip};
use crate::store::{is_conflict, AnalyticsStore, Batch, Summary};

/// How long one poll waits for a first record: also how soon a stop is noticed while idle.
const POLL_WAIT: Duration = Duration::from_millis(200);
/// Attempts to read the stored offsets on an assignment before the process gives up (it cannot
/// read the partitions without them; a restart will try again).
const OFFSET_READS: u32 = 5;

/// What the consumer thread needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub topic: String,
    pub group: String,
    pub instance: String,
    pub kafka: KafkaArgs,
    pub max_batch: usize,
    pub run_gap_ms: i64,
}

/// What the consumer tells the rest of the process.
#[derive(Debug, Default)]
pub struct Status {
    /// Set once the topic exists and the member has subscribed.
    pub subscribed: AtomicBool,
}

/// Reads the stored offsets on assignment, and keeps the partitions this member owns.
struct Context {
    topic: String,
    store: AnalyticsStore,
    runtime: Handle,
    owned: Mutex<BTreeSet<i32>>,
    /// Why the consumer must stop: set by a callback, acted on after the poll returns.
    failure: Mutex<Option<String>>,
}

impl Context {
    fn owned(&self) -> std::sync::MutexGuard<'_, BTreeSet<i32>> {
        // Single inserts and removes: a panic while holding it leaves the set consistent.
        self.owned.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn fail(&self, why: String) {
        error!("{why}");
        *self.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(why);
    }

    fn take_failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }

    /// The stored offsets of `partitions`, asked a few times: the rebalance waits meanwhile.
    fn stored_offsets(&self, partitions: &[i32]) -> anyhow::Result<HashMap<i32, i64>> {
        let mut attempt = 1;
        loop {
            let read = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), self.store.next_offsets(&self.topic, partitions))
                    .await
            });
            match read {
                Ok(Ok(offsets)) => return Ok(offsets),
                Ok(Err(e)) if attempt < OFFSET_READS => {
                    warn!(attempt, error = %format!("{e:#}"), "reading the stored offsets")
                }
                Err(_) if attempt < OFFSET_READS => warn!(attempt, "reading the stored offsets timed out"),
                Ok(Err(e)) => return Err(e),
                Err(_) => anyhow::bail!("postgres did not answer within 5 s, {OFFSET_READS} times"),
            }
            std::thread::sleep(Duration::from_millis(500));
            attempt += 1;
        }
    }

    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let partitions: Vec<i32> =
            tpl.elements_for_topic(&self.topic).iter().map(|e| e.partition()).collect();
        let stored = match self.stored_offsets(&partitions) {
            Ok(stored) => stored,
            Err(e) => {
                return self
                    .fail(format!("cannot read the stored offsets of partitions {partitions:?}: {e:#}"));
            }
        };
        for &partition in &partitions {
            // No stored offset: the partition was never counted; read all that retention holds.
            // An offset past the partition's end (a recreated topic) is out of range, and
            // `auto.offset.reset=earliest` reads the partition from its start: deduplication makes
            // that safe, skipping would not be.
            let offset = stored.get(&partition).map_or(Offset::Beginning, |o| Offset::Offset(*o));
            if let Err(e) = tpl.set_partition_offset(&self.topic, partition, offset) {
                return self.fail(format!("cannot set the start of partition {partition}: {e}"));
            }
        }
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        if let Err(e) = result {
            return self.fail(format!("cannot take partitions {partitions:?}: {e}"));
        }
        let mut owned = self.owned();
        owned.extend(&partitions);
        metrics::gauge!("tandem_analytics_partitions_assigned").set(owned.len() as f64);
        let starts: BTreeMap<i32, Option<i64>> =
            partitions.iter().map(|p| (*p, stored.get(p).copied())).collect();
        info!(?starts, "partitions assigned, starting at the stored offsets (none: the beginning)");
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let partitions: Vec<i32> =
            tpl.elements_for_topic(&self.topic).iter().map(|e| e.partition()).collect();
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
            _ => consumer.unassign(),
        };
        if let Err(e) = result {
            warn!(error = %e, ?partitions, "unassigning revoked partitions");
        }
        let mut owned = self.owned();
        for partition in &partitions {
            owned.remove(partition);
        }
        metrics::gauge!("tandem_analytics_partitions_assigned").set(owned.len() as f64);
        info!(?partitions, "partitions revoked");
    }
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    /// Replaces rdkafka's default rebalance so an assignment starts at the offsets stored in
    /// Postgres rather than at a committed or reset offset.
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, tpl),
            other => {
                // librdkafka's advice for a failed rebalance: drop the assignment and let the
                // group start over.
                warn!(error = ?other, "rebalance failed; dropping the assignment");
                if !matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative) {
                    let _ = consumer.unassign();
                }
                self.owned().clear();
                metrics::gauge!("tandem_analytics_partitions_assigned").set(0.0);
            }
        }
    }
}

/// A member of the analytics group, not yet subscribed.
pub struct EventsConsumer {
    consumer: BaseConsumer<Context>,
    settings: Settings,
    store: AnalyticsStore,
    runtime: Handle,
}

impl EventsConsumer {
    /// Creates the consumer; it contacts no broker before [`EventsConsumer::run`].
    pub fn new(settings: Settings, store: AnalyticsStore, runtime: Handle) -> anyhow::Result<Self> {
        let context = Context {
            topic: settings.topic.clone(),
            store: store.clone(),
            runtime: runtime.clone(),
            owned: Mutex::new(BTreeSet::new()),
            failure: Mutex::new(None),
        };
        let consumer =
            consumer_config(&settings).create_with_context(context).context("create the events consumer")?;
        Ok(Self { consumer, settings, store, runtime })
    }

    /// Waits for the topic, subscribes, and counts batches until `stop`; then finishes the batch
    /// in hand and leaves the group. Returns an error only for what a restart may cure (offsets
    /// that cannot be read on an assignment).
    pub fn run(self, status: &Status, stop: &CancellationToken) -> anyhow::Result<()> {
        if !self.wait_for_topic(stop) {
            return Ok(());
        }
        self.consumer.subscribe(&[self.settings.topic.as_str()]).context("subscribe to the events topic")?;
        status.subscribed.store(true, Ordering::Relaxed);
        info!(topic = %self.settings.topic, group = %self.settings.group, "consuming");
        while !stop.is_cancelled() {
            let records = self.poll_batch();
            if let Some(why) = self.consumer.context().take_failure() {
                anyhow::bail!(why);
            }
            if records.is_empty() {
                continue;
            }
            let Some(batch) = self.batch_of(records) else { continue };
            self.commit(batch, stop);
        }
        info!("stopping: leaving the consumer group");
        self.consumer.unsubscribe();
        // Dropping the consumer closes it: the revocation runs and the member leaves the group.
        drop(self.consumer);
        Ok(())
    }

    /// Whether the topic exists (the sequencers create it); false if stopped while waiting.
    fn wait_for_topic(&self, stop: &CancellationToken) -> bool {
        let topic = self.settings.topic.as_str();
        let mut said = false;
        while !stop.is_cancelled() {
            match self.consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
                Ok(metadata) => {
                    let found = metadata
                        .topics()
                        .iter()
                        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
                    if found {
                        return true;
                    }
                    if !said {
                        info!(topic, "waiting for the events topic (the sequencers create it)");
                        said = true;
                    }
                }
                Err(e) => warn!(topic, error = %e, "reading the events topic's metadata"),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    }

    /// What one poll returns: the first record (waiting up to [`POLL_WAIT`]), then whatever is
    /// already fetched, up to `max_batch`, without waiting.
    fn poll_batch(&self) -> Vec<Read> {
        let mut records = Vec::new();
        let mut wait = POLL_WAIT;
        while records.len() < self.settings.max_batch {
            match self.consumer.poll(wait) {
                None => break,
                Some(Ok(message)) => {
                    let position = Position { partition: message.partition(), offset: message.offset() };
                    let timestamp_ms = message.timestamp().to_millis();
                    records.push(Read {
                        position,
                        record: record::decode(message.payload(), position, timestamp_ms, now_ms()),
                        timestamp_ms,
                    });
                }
                // Transport errors and the like: librdkafka retries on its own and resumes at the
                // same position.
                Some(Err(e)) => {
                    warn!(error = %e, "events consumer");
                    break;
                }
            }
            wait = Duration::ZERO;
        }
        records
    }

    /// The batch to commit from what was read: records of partitions revoked meanwhile are left
    /// to their new owner (they are not ours to count or to store offsets for).
    fn batch_of(&self, records: Vec<Read>) -> Option<PendingBatch> {
        let owned = self.consumer.context().owned().clone();
        let mut batch = PendingBatch::default();
        for read in records {
            let Position { partition, offset } = read.position;
            if !owned.contains(&partition) {
                debug!(partition, offset, "record of a revoked partition dropped");
                continue;
            }
            let next = batch.batch.next_offsets.entry(partition).or_insert(offset + 1);
            *next = (*next).max(offset + 1);
            if let Some(ms) = read.timestamp_ms {
                batch.oldest_ms = Some(batch.oldest_ms.map_or(ms, |o: i64| o.min(ms)));
            }
            match read.record {
                Ok(record) => {
                    *batch.read.entry(record.label()).or_default() += 1;
                    batch.batch.records.push(record);
                }
                Err(skip) => {
                    if skip == Skip::Malformed || skip == Skip::Unknown {
                        warn!(partition, offset, kind = skip.label(), "record skipped");
                    }
                    *batch.skipped.entry(skip).or_default() += 1;
                }
            }
        }
        (!batch.batch.next_offsets.is_empty()).then_some(batch)
    }

    /// Commits `pending`, retrying (with backoff) until it is written or the process stops; a
    /// batch not written is read again after the restart, from the stored offsets.
    fn commit(&self, pending: PendingBatch, stop: &CancellationToken) {
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        let summary = loop {
            let result = self.runtime.block_on(self.store.commit(
                &self.settings.topic,
                &pending.batch,
                self.settings.run_gap_ms,
            ));
            match result {
                Ok(summary) => break summary,
                Err(e) => {
                    metrics::counter!("tandem_analytics_commit_retries_total").increment(1);
                    if is_conflict(&e) {
                        // Another member counted some of these rows at the same moment (a
                        // partition changing hands): the retry reads what it wrote.
                        info!(error = %format!("{e:#}"), "batch conflicted with another member's; retrying");
                    } else {
                        warn!(error = %format!("{e:#}"), retry_in = ?pause, "committing a batch failed; retrying");
                    }
                }
            }
            let stopped = self.runtime.block_on(async {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => false,
                    _ = stop.cancelled() => true,
                }
            });
            if stopped {
                warn!("stopping with a batch not written; it is read again at the next start");
                return;
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        };
        record_metrics(&pending, summary, started.elapsed());
    }
}

/// One record as read, decoded.
struct Read {
    position: Position,
    record: Result<Record, Skip>,
    timestamp_ms: Option<i64>,
}

/// A batch with what its metrics need.
#[derive(Default)]
struct PendingBatch {
    batch: Batch,
    /// Records acted on, by kind (`committed`, `deleted`).
    read: BTreeMap<&'static str, u64>,
    skipped: BTreeMap<Skip, u64>,
    oldest_ms: Option<i64>,
}

fn record_metrics(pending: &PendingBatch, summary: Summary, took: Duration) {
    for (kind, n) in &pending.read {
        metrics::counter!("tandem_analytics_records_total", "kind" => *kind).increment(*n);
    }
    for (skip, n) in &pending.skipped {
        metrics::counter!("tandem_analytics_records_total", "kind" => skip.label()).increment(*n);
    }
    metrics::counter!("tandem_analytics_edits_counted_total").increment(summary.counted);
    metrics::counter!("tandem_analytics_duplicates_total").increment(summary.duplicates);
    metrics::counter!("tandem_analytics_versions_missed_total").increment(summary.versions_missed);
    metrics::counter!("tandem_analytics_deleted_history_total").increment(summary.deleted_history);
    metrics::counter!("tandem_analytics_documents_purged_total").increment(summary.purged);
    metrics::counter!("tandem_analytics_tombstones_repeated_total").increment(summary.tombstones_repeated);
    metrics::histogram!("tandem_analytics_batch_seconds").record(took.as_secs_f64());
    if let Some(oldest) = pending.oldest_ms {
        // How far behind the topic the counts are: from the oldest record's publish to its commit.
        let lag = (now_ms() - oldest).max(0) as f64 / 1000.0;
        metrics::histogram!("tandem_analytics_commit_lag_seconds").record(lag);
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The consumer's librdkafka settings, from the shared Kafka flags.
fn consumer_config(settings: &Settings) -> ClientConfig {
    let kafka = &settings.kafka;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("client.id", &settings.instance)
        .set("group.id", &settings.group)
        // Offsets live in Postgres, with the counts; a Kafka commit would be a second truth.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // The topic is the sequencers' to create, with the right partition count.
        .set("allow.auto.create.topics", "false")
        // Only for a stored offset out of range (a recreated topic): read from the start.
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", kafka.kafka_fetch_wait_ms.to_string())
        .set("fetch.min.bytes", kafka.kafka_fetch_min_bytes.to_string());
    match kafka.kafka_group_protocol {
        GroupProtocol::Classic => {
            config
                .set("group.protocol", "classic")
                .set("session.timeout.ms", kafka.kafka_session_timeout_ms.to_string())
                .set("heartbeat.interval.ms", kafka.kafka_heartbeat_ms.to_string())
                // A batch commit must end within this, or the member leaves the group (and
                // rejoins at its next poll). librdkafka refuses a value under the session timeout.
                .set(
                    "max.poll.interval.ms",
                    kafka.kafka_rebalance_timeout_ms.max(kafka.kafka_session_timeout_ms).to_string(),
                )
                // A member joining or leaving moves only the partitions that change hands.
                .set("partition.assignment.strategy", "cooperative-sticky");
        }
        GroupProtocol::Consumer => {
            config.set("group.protocol", "consumer");
        }
    }
    config
}
