//! The sequencers' consumer group on the ops topic: who owns which partition, and one consumer per
//! owned partition.
//!
//! librdkafka reports rebalances through callbacks that run inside a poll of the group consumer.
//! A callback must return quickly, so [`OpLogContext`] only does two non-blocking things there:
//! on assignment it splits each new partition's queue off the main one (this must happen before
//! librdkafka starts fetching, or the partition's first records land on the main queue) and hands
//! it over as an [`Assignment::Assigned`]; on revocation it drops the partition's revoke switch and
//! sends [`Assignment::Revoked`]. Both go over an unbounded channel to the driver task, which
//! keeps polling the group consumer (so callbacks fire and the group sees a live member) and
//! forwards them to the sequencer over a bounded channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::{millis, trace, unavailable, GroupProtocol, KafkaConfig};
use crate::{BusError, OpConsumer, PartitionId, SubmissionRecord};

type GroupConsumer = StreamConsumer<OpLogContext>;

/// A change in which partitions of the op log this sequencer owns, in the order the group decided
/// them.
pub enum Assignment {
    /// This member now owns `partition`. Read the partition's stored offset from the event store,
    /// [`seek`](KafkaPartitionConsumer::seek) there, and run the partition's task with `consumer`.
    Assigned { partition: PartitionId, consumer: KafkaPartitionConsumer },
    /// This member no longer owns `partition`. Its consumer already answers `Err(Closed)`; this
    /// message is for bookkeeping. Another member may own it now: the epoch check in the store is
    /// what stops this member's last commit, not this message.
    Revoked { partition: PartitionId },
}

impl std::fmt::Debug for Assignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Assignment::Assigned { partition, .. } => write!(f, "Assigned({partition})"),
            Assignment::Revoked { partition } => write!(f, "Revoked({partition})"),
        }
    }
}

/// Membership of the sequencers' consumer group. Dropping it stops the driver and closes every
/// partition consumer it handed out (they answer `Err(Closed)`); the member leaves the group once
/// the last of them is dropped too.
pub struct KafkaOpLog {
    context: Arc<OpLogContext>,
    driver: JoinHandle<()>,
}

impl KafkaOpLog {
    /// Joins the group `config.group_id` on the ops topic. Assignments arrive on the returned
    /// receiver; keep reading it, since the driver waits for room before it polls again.
    ///
    /// Starts without waiting for the broker; the first assignment comes after the group's join
    /// round (a few hundred milliseconds, or up to a session timeout when a dead member's place is
    /// still held).
    pub fn join(config: &KafkaConfig) -> Result<(Self, mpsc::Receiver<Assignment>), BusError> {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let context = OpLogContext {
            topic: config.ops_topic.clone(),
            consumer: OnceLock::new(),
            owned: Mutex::new(HashMap::new()),
            events: events_tx,
            seek_timeout: config.request_timeout,
        };
        let mut client_config = config.consumer_config();
        client_config
            .set("group.id", &config.group_id)
            // A partition whose owner never stored an offset (or whose stored offset is gone)
            // is read from its first record: nothing in it has been sequenced yet.
            .set("auto.offset.reset", "earliest");
        match config.group_protocol {
            GroupProtocol::Classic => {
                client_config
                    .set("group.protocol", "classic")
                    .set("session.timeout.ms", millis(config.session_timeout))
                    .set("heartbeat.interval.ms", millis(config.heartbeat_interval))
                    // librdkafka refuses a poll interval under the session timeout.
                    .set("max.poll.interval.ms", millis(config.rebalance_timeout.max(config.session_timeout)))
                    // Cooperative: a member joining or leaving moves only the partitions that
                    // change hands; the eager protocol would revoke every partition of every
                    // member, and each owner would reload its documents from the store.
                    .set("partition.assignment.strategy", "cooperative-sticky");
            }
            // The coordinator assigns (incrementally, like cooperative-sticky) and owns the session
            // timeout and heartbeat interval: librdkafka refuses the classic settings here.
            GroupProtocol::Consumer => {
                client_config.set("group.protocol", "consumer");
            }
        }
        let consumer: Arc<GroupConsumer> = Arc::new(
            client_config
                .create_with_context(context)
                .map_err(|e| unavailable("creating the op log consumer", &e))?,
        );
        let context = Arc::clone(consumer.context());
        context.consumer.set(Arc::downgrade(&consumer)).expect("the context was created just above");
        consumer
            .subscribe(&[config.ops_topic.as_str()])
            .map_err(|e| unavailable("subscribing to the op log", &e))?;
        let (assignments_tx, assignments_rx) = mpsc::channel(1024);
        let driver = tokio::spawn(drive(config.session_timeout, consumer, events_rx, assignments_tx));
        info!(group = %config.group_id, topic = %config.ops_topic, protocol = %config.group_protocol, "joined the op log group");
        Ok((Self { context, driver }, assignments_rx))
    }

    /// The partitions this member owns now.
    pub fn owned(&self) -> Vec<PartitionId> {
        let mut owned: Vec<PartitionId> =
            self.context.lock_owned().keys().map(|&p| p as PartitionId).collect();
        owned.sort_unstable();
        owned
    }
}

impl Drop for KafkaOpLog {
    fn drop(&mut self) {
        self.driver.abort();
        // Ends every partition consumer; each holds the group consumer, which closes (and leaves
        // the group) when the last one is dropped.
        self.context.lock_owned().clear();
    }
}

/// Polls the group consumer so rebalance callbacks fire, and forwards assignments.
async fn drive(
    session_timeout: Duration,
    consumer: Arc<GroupConsumer>,
    mut events: mpsc::UnboundedReceiver<Assignment>,
    assignments: mpsc::Sender<Assignment>,
) {
    loop {
        tokio::select! {
            biased;
            event = events.recv() => {
                let Some(event) = event else { break };
                if assignments.send(event).await.is_err() {
                    info!("nobody reads op log assignments; the driver stops");
                    break;
                }
            }
            message = consumer.recv() => match message {
                // Cannot happen while queues are split before assignment; harmless if it does:
                // the partition's owner seeks to its stored offset and reads the record again.
                Ok(message) => warn!(
                    partition = message.partition(),
                    offset = message.offset(),
                    "op record on the group queue, dropped"
                ),
                Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::InvalidSessionTimeout) => error!(
                    session_timeout = ?session_timeout,
                    "the broker refuses this session timeout: lower its group.min.session.timeout.ms \
                     (or group.max.session.timeout.ms) to allow it, or change --kafka-session-timeout-ms; \
                     this sequencer owns no partition until then"
                ),
                Err(e) => warn!(error = %e, "op log consumer"),
            },
        }
    }
}

/// Turns rebalance callbacks into [`Assignment`]s without blocking.
struct OpLogContext {
    topic: String,
    /// The consumer this context belongs to; weak, as the consumer owns the context.
    consumer: OnceLock<Weak<GroupConsumer>>,
    /// The revoke switch of each owned partition: dropping the sender ends that partition's
    /// consumer.
    owned: Mutex<HashMap<i32, watch::Sender<()>>>,
    events: mpsc::UnboundedSender<Assignment>,
    seek_timeout: Duration,
}

impl OpLogContext {
    fn lock_owned(&self) -> std::sync::MutexGuard<'_, HashMap<i32, watch::Sender<()>>> {
        // A panic while holding this lock leaves the map consistent (single inserts and removes).
        self.owned.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn assign(&self, partition: i32) {
        // Upgrading fails only while the consumer is being dropped: nothing to hand out then.
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else { return };
        let Some(queue) = consumer.split_partition_queue(&self.topic, partition) else {
            warn!(partition, "assigned a partition that cannot be split off; ignored");
            return;
        };
        let (switch, revoked) = watch::channel(());
        if self.lock_owned().insert(partition, switch).is_some() {
            warn!(partition, "assigned a partition already owned; the old consumer is closed");
        }
        let consumer = KafkaPartitionConsumer {
            partition: partition as PartitionId,
            topic: self.topic.clone(),
            queue,
            consumer,
            revoked,
            seek_timeout: self.seek_timeout,
        };
        info!(partition, "op log partition assigned");
        let _ = self.events.send(Assignment::Assigned { partition: partition as PartitionId, consumer });
    }

    fn revoke(&self, partition: i32) {
        if self.lock_owned().remove(&partition).is_none() {
            debug!(partition, "revoked a partition not owned");
        }
        info!(partition, "op log partition revoked");
        let _ = self.events.send(Assignment::Revoked { partition: partition as PartitionId });
    }
}

impl ClientContext for OpLogContext {}

impl ConsumerContext for OpLogContext {
    /// Runs before librdkafka applies the change: splitting here, before `assign`, is what keeps a
    /// new partition's records off the group queue; revoking here stops the old owner's reads
    /// before the partition is given away.
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                for element in partitions.elements_for_topic(&self.topic) {
                    self.assign(element.partition());
                }
            }
            Rebalance::Revoke(partitions) => {
                for element in partitions.elements_for_topic(&self.topic) {
                    self.revoke(element.partition());
                }
            }
            Rebalance::Error(e) => warn!(error = %e, "op log rebalance"),
        }
    }
}

/// Reads one owned partition of the op log; handed out in [`Assignment::Assigned`].
///
/// It ends when the partition is revoked, when the [`KafkaOpLog`] is dropped, or when the member
/// is thrown out of the group (a missed session timeout counts as a revocation too): `next_batch`
/// then answers `Err(BusError::Closed)`, at once if it is waiting, or at its next call, and the
/// partition task ends. Records already returned stay valid: the store's epoch check decides
/// whether their commit is still allowed. Keep the consumer until then: dropping it while the
/// partition is still owned leaves the partition unread until the next rebalance.
pub struct KafkaPartitionConsumer {
    partition: PartitionId,
    topic: String,
    queue: StreamPartitionQueue<OpLogContext>,
    consumer: Arc<GroupConsumer>,
    /// Changes (closes) when the partition is revoked.
    revoked: watch::Receiver<()>,
    seek_timeout: Duration,
}

impl KafkaPartitionConsumer {
    /// Starts reading at `offset`: the offset the store says is the next one to sequence. Without
    /// it, reading starts at the partition's first record.
    ///
    /// Right after an assignment librdkafka is still looking up the partition's start and refuses
    /// to seek; this retries until it accepts, up to the request timeout. Records fetched before
    /// the seek are discarded by librdkafka, so the next batch starts exactly at `offset`.
    /// Where to resume, given the offset the store recorded. An offset past the partition's end
    /// means the log is not the one the store knows (the topic was recreated, or a broker without
    /// durable storage restarted): seeking there would silently skip every new op below it. The
    /// owner resumes from the start of the log instead; ops it sees again are deduplicated by
    /// (client, seq), so replaying is safe, skipping is not.
    async fn resume_point(&self, offset: i64) -> Result<i64, BusError> {
        let consumer = Arc::clone(&self.consumer);
        let topic = self.topic.clone();
        let partition = self.partition as i32;
        let timeout = self.seek_timeout;
        let watermarks =
            tokio::task::spawn_blocking(move || consumer.fetch_watermarks(&topic, partition, timeout))
                .await
                .map_err(|e| BusError::Unavailable(format!("watermark task failed: {e}")))?
                .map_err(|e| unavailable(&format!("reading the end of partition {partition}"), &e))?;
        let (low, high) = watermarks;
        if offset > high {
            warn!(
                partition,
                stored = offset,
                end = high,
                "the op log ends before the offset the store resumes at: the log was recreated; \
                 replaying it from its start (resubmissions are deduplicated)"
            );
            return Ok(low);
        }
        Ok(offset)
    }

    async fn seek_to(&mut self, offset: i64) -> Result<(), BusError> {
        let offset = self.resume_point(offset).await?;
        let deadline = Instant::now() + self.seek_timeout;
        loop {
            if self.revoked.has_changed().is_err() {
                return Err(BusError::Closed);
            }
            let consumer = Arc::clone(&self.consumer);
            let topic = self.topic.clone();
            let partition = self.partition as i32;
            // rd_kafka_seek blocks until the fetcher has taken the new position.
            let result = tokio::task::spawn_blocking(move || {
                consumer.seek(&topic, partition, Offset::Offset(offset), Duration::from_secs(1))
            })
            .await
            .map_err(|e| BusError::Unavailable(format!("seek task failed: {e}")))?;
            match result {
                Ok(()) => {
                    debug!(partition, offset, "op log partition seeked");
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    debug!(partition, offset, error = %e, "seek refused, retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(unavailable(&format!("seeking partition {partition} to {offset}"), &e)),
            }
        }
    }

    /// Reads one record, with the trace context of its headers, into `batch`. A record that is not
    /// a valid `tandem.v1.Submission` is logged and skipped: the sequencer never sees it.
    fn take(&self, message: &BorrowedMessage<'_>, batch: &mut Vec<SubmissionRecord>) {
        let offset = message.offset();
        let Some(payload) = message.payload() else {
            warn!(partition = self.partition, offset, "op record without a value, skipped");
            return;
        };
        match tandem_proto::decode_submission(payload) {
            Ok(submission) => {
                let traceparent = trace::traceparent(message.headers());
                batch.push(SubmissionRecord { partition: self.partition, offset, submission, traceparent });
            }
            Err(e) => warn!(partition = self.partition, offset, error = %e, "op record skipped"),
        }
    }
}

#[async_trait]
impl OpConsumer for KafkaPartitionConsumer {
    fn partition(&self) -> PartitionId {
        self.partition
    }

    async fn seek(&mut self, next_offset: i64) -> Result<(), BusError> {
        self.seek_to(next_offset).await
    }

    async fn revoked_within(&mut self, grace: Duration) -> bool {
        if self.revoked.has_changed().is_err() {
            return true;
        }
        // No value is ever sent: `changed` resolves only when the switch is dropped (revocation).
        tokio::time::timeout(grace, self.revoked.changed()).await.is_ok()
    }

    /// Waits for one record, then takes whatever else is already fetched, up to `max`, without
    /// waiting. Undecodable records are skipped (and do not count as the one record).
    async fn next_batch(&mut self, max: usize) -> Result<Vec<SubmissionRecord>, BusError> {
        let max = max.max(1);
        let mut batch = Vec::with_capacity(max.min(1024));
        if self.revoked.has_changed().is_err() {
            return Err(BusError::Closed);
        }
        let mut stream = self.queue.stream();
        while batch.is_empty() {
            let message = tokio::select! {
                biased;
                // No value is ever sent: this resolves when the switch is dropped (revocation).
                _ = self.revoked.changed() => return Err(BusError::Closed),
                message = stream.next() => message,
            };
            match message {
                Some(Ok(message)) => self.take(&message, &mut batch),
                // Partition-level notices (an offset reset, a fetch error): librdkafka retries on
                // its own, so they are reported, not returned.
                Some(Err(e)) => warn!(partition = self.partition, error = %e, "op log partition"),
                None => return Err(BusError::Closed),
            }
        }
        while batch.len() < max {
            match stream.next().now_or_never() {
                Some(Some(Ok(message))) => self.take(&message, &mut batch),
                Some(Some(Err(e))) => warn!(partition = self.partition, error = %e, "op log partition"),
                Some(None) | None => break,
            }
        }
        Ok(batch)
    }
}
