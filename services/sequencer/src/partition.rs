//! The partition loop: the one writer of every document in a partition.
//!
//! Take a batch of submitted ops → run each through its document's state machine → commit all the
//! resulting events and rejections in one store transaction together with the input offset, under
//! this owner's epoch → publish. Nothing is published (so nothing is acknowledged) before the commit.
//! Written once against the bus and store traits: the single-process mode and the distributed mode run
//! exactly this code.
//!
//! What one op may cost the partition is bounded: an op whose base is older than its document's
//! window needs history from the store; it is held (with every later op of its document, which must
//! wait behind it) and decided over the next rounds, one page of history per round, while the ops
//! of every other document are decided and committed as usual.
//!
//! A delete of a document (a submission with `delete_document`) is decided like an op, in the
//! document's order, and committed as a tombstone in the batch's `deletions`: the store purges the
//! document after the batch's events of it, so an op of the document after the delete waits for the
//! next round's commit. A delete is also never committed while a late op that arrived before it is
//! still held: the stored offset stays at a held op, and everything after that offset is decided
//! again by the next owner; an op again is deduplicated, but a delete again would purge what was
//! written after it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tandem_bus::{BusError, EventPublisher, OpConsumer, PartitionId, Published, SubmissionRecord};
use tandem_protocol::records::{CommittedEvent, SequencedRecord, Submission};
use tandem_protocol::DocId;
use tandem_store::{CommitBatch, EventStore, StoreError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::document::{Decision, DocumentState, Fetched, Limits, LoadError};
use crate::op_trace::{self, CommitSpans, Outgoing};

mod snapshots;
use snapshots::SnapshotWrites;

/// How a partition owner batches, caches and snapshots.
#[derive(Debug, Clone)]
pub struct PartitionConfig {
    pub limits: Limits,
    /// Most ops committed in one transaction.
    pub max_batch: usize,
    /// Write a snapshot every this many versions of a document (0: never).
    pub snapshot_every: u64,
    /// Documents kept in memory; the least recently used beyond this are dropped (and reloaded from the
    /// store when they get an op again).
    pub cached_documents: usize,
    /// What the cached documents may hold in memory, in characters (about bytes): their texts, their
    /// history windows (the ops' inserted text and a fixed cost per op) and their client records
    /// ([`DocumentState::memory_chars`]); past it the least recently used documents are dropped,
    /// whatever their count.
    pub cached_chars: usize,
    /// Snapshot writes in flight at once, over the partition; never more than one per document. A
    /// snapshot due while they are busy is skipped (and taken after a later commit of the document),
    /// not queued.
    pub snapshot_writes: usize,
}

impl Default for PartitionConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_batch: 4096,
            snapshot_every: 1000,
            cached_documents: 10_000,
            cached_chars: 200_000_000,
            snapshot_writes: 4,
        }
    }
}

/// Why a partition owner stopped.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// Another owner took the partition over; this one must not write again.
    #[error("partition {partition} was taken over by another owner")]
    Fenced { partition: PartitionId },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("store failed: {0}")]
    Store(StoreError),
    #[error("bus failed: {0}")]
    Bus(#[from] BusError),
}

impl PartitionError {
    /// Whether the loop ended because this member no longer owns the partition, rather than failed:
    /// another owner fenced it, or the op log revoked it (its consumer answers `Closed` at once, and
    /// the revocation itself may reach the service a moment later, as after a broker restart's
    /// rebalance). Neither is a reason to end the process: the group hands the partition out again.
    pub fn is_lost_ownership(&self) -> bool {
        matches!(self, Self::Fenced { .. } | Self::Bus(BusError::Closed))
    }
}

impl From<StoreError> for PartitionError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Fenced { partition, .. } => {
                metrics::counter!("tandem_sequencer_fenced_total").increment(1);
                PartitionError::Fenced { partition }
            }
            other => PartitionError::Store(other),
        }
    }
}

struct CachedDocument {
    state: DocumentState,
    last_used: u64,
}

/// The ops of one document waiting for a later round, in arrival order, behind the first one.
struct Held {
    records: VecDeque<SubmissionRecord>,
    /// What the first one waits for.
    wait: Wait,
}

/// Why an op is decided in a later round instead of now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// A late op: it needs the events `after < v <= up_to` (one page) from the store.
    History { after: u64, up_to: u64 },
    /// Nothing to read: an op after a delete of its document in this round (the store purges the
    /// document after the batch's events, so the op's event must go in a later commit), or a delete
    /// that waits for a late op that arrived before it (see [`PartitionOwner::decide_record`]).
    NextRound,
}

/// What the state machine decided about the ops of one round, ready to commit.
#[derive(Default)]
struct Decided {
    commit: CommitBatch,
    records: Vec<SequencedRecord>,
    /// The decided ops whose traces are sampled: their index among `records`, and their `decide`
    /// span's context (see crate::op_trace).
    traced: Vec<(usize, tandem_telemetry::propagation::Context)>,
    duplicates: u64,
    rejected: u64,
    /// The documents deleted in this round: their later ops wait for the next one.
    deleted: HashSet<DocId>,
}

impl Decided {
    fn push(&mut self, sub: &Submission, decision: Decision) {
        match decision {
            Decision::Commit(event) => {
                self.commit.events.push(event.clone());
                self.records.push(SequencedRecord::Committed(event));
            }
            Decision::Duplicate { version } => {
                self.duplicates += 1;
                self.records.push(SequencedRecord::Reacknowledged {
                    doc: sub.doc.clone(),
                    client: sub.client.clone(),
                    seq: sub.seq,
                    version,
                });
            }
            Decision::Reject { rejection, new } => {
                self.rejected += 1;
                debug!(doc = %sub.doc, client = %sub.client, seq = sub.seq, code = %rejection.code, "op rejected");
                if new {
                    self.commit.rejections.push(rejection.clone());
                }
                self.records.push(SequencedRecord::Rejected(rejection));
            }
            Decision::Delete(deleted) => {
                let (doc, last_version) = (&deleted.doc, deleted.last_version);
                info!(%doc, last_version, author = %deleted.author, "document deleted");
                self.deleted.insert(deleted.doc.clone());
                self.commit.deletions.push(deleted.clone());
                self.records.push(SequencedRecord::Deleted(deleted));
            }
            Decision::NeedHistory { .. } | Decision::NeedOutcome | Decision::NeedClient => {
                unreachable!("decide() resolves every request for data but history")
            }
        }
    }
}

/// Owns one partition until the input ends, the owner is fenced, or `shutdown` fires (after
/// finishing the batch in hand).
///
/// Fenced while the group still assigns the partition here, the owner claims it again: the fence
/// came from a claim that arrived late, from a member the partition had just been revoked from
/// (the soak saw one after a broker restart, with Postgres slow: the rebalance gave the partition
/// back within a second, the old member's claim landed after the new owner's, and the partition
/// had no owner for 100 s until the next rebalance). A member whose partition was revoked learns
/// it within the grace and stops; the epoch check keeps every commit safe meanwhile.
pub async fn run_partition(
    mut consumer: impl OpConsumer,
    store: Arc<dyn EventStore>,
    publisher: Arc<dyn EventPublisher>,
    config: PartitionConfig,
    shutdown: CancellationToken,
) -> Result<(), PartitionError> {
    let partition = consumer.partition();
    let mut grace = RECLAIM_GRACE_FIRST;
    let mut reclaim = false;
    loop {
        let owned =
            own_partition(&mut consumer, &store, &publisher, config.clone(), &shutdown, reclaim).await;
        match owned {
            Err(PartitionError::Fenced { .. }) if !shutdown.is_cancelled() => {
                if consumer.revoked_within(grace).await {
                    return owned;
                }
                warn!(partition, grace = ?grace, "fenced, but the group still assigns the partition here: claiming it again");
                metrics::counter!("tandem_sequencer_reclaims_total").increment(1);
                // Doubling: two members that both believe they own it (the group's view and a
                // late revocation disagreeing) cannot fence each other in a tight loop.
                grace = (grace * 2).min(RECLAIM_GRACE_MAX);
                reclaim = true;
            }
            other => return other,
        }
    }
}

/// How long a fenced owner waits for a revocation before it claims its partition again; doubled
/// after each re-claim up to [`RECLAIM_GRACE_MAX`]. A revocation reaches the member within a
/// heartbeat (500 ms) of the rebalance.
const RECLAIM_GRACE_FIRST: Duration = Duration::from_secs(1);
const RECLAIM_GRACE_MAX: Duration = Duration::from_secs(16);

/// One ownership of the partition: claims it, republishes what the last owner left unpublished,
/// and sequences until the input ends, the owner is fenced or `shutdown` fires.
async fn own_partition(
    consumer: &mut impl OpConsumer,
    store: &Arc<dyn EventStore>,
    publisher: &Arc<dyn EventPublisher>,
    config: PartitionConfig,
    shutdown: &CancellationToken,
    reclaim: bool,
) -> Result<(), PartitionError> {
    let (store, publisher) = (store.clone(), publisher.clone());
    let partition = consumer.partition();
    // A claim is safe to repeat (each one bumps the epoch, the last one wins), so a store outage
    // during it is waited out like during any other call, instead of ending the partition.
    let claim = retry(partition, || store.claim_partition(partition)).await?;
    info!(partition, epoch = claim.epoch, next_offset = ?claim.next_offset, reclaim, "partition claimed");
    // Resume exactly after the last committed batch: nothing accepted is skipped or sequenced twice.
    // Claimed again with nothing ever committed, the consumer has read past ops that were never
    // sequenced: back to the start (offset 0, or the log's start if that is gone), deduplicated.
    if let Some(offset) = claim.next_offset.or(reclaim.then_some(0)) {
        consumer.seek(offset).await?;
    }
    let snapshots = SnapshotWrites::new(config.snapshot_writes);
    let mut owner = PartitionOwner {
        partition,
        epoch: claim.epoch,
        store,
        config,
        docs: HashMap::new(),
        tick: 0,
        published: Arc::new(AtomicU64::new(claim.published_through)),
        marked: claim.published_through,
        last_commit: claim.last_commit,
        held: HashMap::new(),
        held_order: VecDeque::new(),
        consumed: None,
        snapshots,
    };
    owner.republish(&*publisher).await?;
    // Publishing runs beside the loop, not in it: while one batch's records are on their way to the
    // broker, the next batch is sequenced and committed, and batches committed meanwhile go out
    // together. In order: one task publishes, in commit order.
    let (to_publisher, committed) = mpsc::channel(PUBLISH_QUEUE);
    // Fired once the loop has ended, not by the shutdown token: a task that stopped with the token
    // could be gone while the loop still hands it the batch in hand, which the loop takes for a panic.
    let stopping = CancellationToken::new();
    let publishing = tokio::spawn(publish_in_order(
        partition,
        committed,
        publisher,
        owner.published.clone(),
        owner.config.max_batch,
        stopping.clone(),
    ));
    let result = owner.run(consumer, &to_publisher, shutdown).await;
    // Every committed batch handed over is published before the mark is written; a publish still
    // failing gets one last try, so a dead broker cannot hold the shutdown up (the next owner
    // republishes from the mark).
    drop(to_publisher);
    stopping.cancel();
    let published = publishing.await;
    result?;
    if published.is_err() {
        return Err(BusError::Unavailable("the publishing task panicked".to_owned()).into());
    }
    if owner.published() > owner.marked {
        let _ = owner.mark_published().await;
    }
    info!(partition, "partition released");
    Ok(())
}

/// How long a partition stays idle before it records its published mark on its own.
const IDLE_MARK: Duration = Duration::from_millis(500);

/// Records republished per page when a partition is taken over.
const REPUBLISH_PAGE: usize = 1000;

/// Committed batches waiting for the publishing task; when it falls this far behind, the loop waits
/// (so a slow broker slows sequencing instead of piling records up in memory).
const PUBLISH_QUEUE: usize = 64;

/// The first wait before a failed publish is tried again; it doubles up to [`PUBLISH_RETRY_MAX`].
const PUBLISH_RETRY_FIRST: Duration = Duration::from_millis(50);
const PUBLISH_RETRY_MAX: Duration = Duration::from_secs(2);

/// Publishes committed records in commit order: takes the batches that are waiting (up to `budget`
/// records), publishes them as one, and then raises `published` to the last commit among them.
///
/// A failed publish is retried until it succeeds, and nothing later is published before it: a gap
/// left in `tandem.events` could not be repaired from Kafka, and the next owner would have an ever
/// longer backlog to republish. Later commits wait in the bounded queue, which slows the loop down.
/// Once `stopping` fires, a publish that fails ends the task and `published` stays below it, so the
/// next owner republishes from there.
async fn publish_in_order(
    partition: PartitionId,
    mut committed: mpsc::Receiver<(u64, Vec<Outgoing>)>,
    publisher: Arc<dyn EventPublisher>,
    published: Arc<AtomicU64>,
    budget: usize,
    stopping: CancellationToken,
) {
    while let Some((mut through, mut records)) = committed.recv().await {
        // Bounded, so one publish never asks the producer to queue more than a batch's worth.
        while records.len() < budget {
            let Ok((commit, more)) = committed.try_recv() else { break };
            through = commit;
            records.extend(more);
        }
        // Traced ops' `publish` spans last until their records are out, retries included.
        let (records, _spans) = op_trace::publish_spans(records);
        if !publish_until_done(partition, &*publisher, records, through, &stopping).await {
            return;
        }
        published.fetch_max(through, Ordering::AcqRel);
    }
}

/// Publishes `records` (the commits up to `through`), retrying with backoff; true once they are
/// published, false when a try failed after `stopping` fired. Publishing twice is harmless (gateways
/// drop versions they already have); a record that was lost is not.
async fn publish_until_done(
    partition: PartitionId,
    publisher: &dyn EventPublisher,
    records: Vec<Published>,
    through: u64,
    stopping: &CancellationToken,
) -> bool {
    let mut delay = PUBLISH_RETRY_FIRST;
    loop {
        let started = std::time::Instant::now();
        // A copy per try: the publisher takes the records, and a failed try must be repeated.
        let result = publisher.publish(records.clone()).await;
        metrics::histogram!("tandem_sequencer_publish_seconds").record(started.elapsed().as_secs_f64());
        let Err(e) = result else { return true };
        if stopping.is_cancelled() {
            warn!(partition, error = %e, through, "publish failed while stopping; the next owner republishes it");
            return false;
        }
        metrics::counter!("tandem_sequencer_publish_retries_total").increment(1);
        warn!(partition, error = %e, through, retry_in = ?delay, "publish failed after commit, retrying");
        // Woken early by a stop: one last try, then the task ends if that fails too.
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopping.cancelled() => {}
        }
        delay = (delay * 2).min(PUBLISH_RETRY_MAX);
    }
}

struct PartitionOwner {
    partition: PartitionId,
    epoch: u64,
    store: Arc<dyn EventStore>,
    config: PartitionConfig,
    docs: HashMap<DocId, CachedDocument>,
    tick: u64,
    /// Every commit up to this one has been published (raised by the publishing task).
    published: Arc<AtomicU64>,
    /// The published mark the store has; the next commit carries `published` when it is higher.
    marked: u64,
    /// The partition's last commit number: the next batch with records expects the one after it,
    /// which makes retrying a commit whose answer was lost safe.
    last_commit: u64,
    /// Documents with an op waiting for a later round (a late op being decided page by page, or an
    /// op after a delete), and the ops waiting behind it.
    held: HashMap<DocId, Held>,
    /// The documents of `held`, in the order their next page is read (one per round).
    held_order: VecDeque<DocId>,
    /// The offset after the last op consumed.
    consumed: Option<i64>,
    /// The snapshot writes in flight.
    snapshots: SnapshotWrites,
}

impl PartitionOwner {
    /// Takes batches until the input ends or `shutdown` fires (after finishing the batch in hand),
    /// and hands each committed batch's records to the publishing task.
    async fn run(
        &mut self,
        consumer: &mut impl OpConsumer,
        to_publisher: &mpsc::Sender<(u64, Vec<Outgoing>)>,
        shutdown: &CancellationToken,
    ) -> Result<(), PartitionError> {
        loop {
            let batch = if self.held.is_empty() {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return Ok(()),
                    batch = consumer.next_batch(self.config.max_batch) => match batch {
                        Ok(batch) => batch,
                        Err(BusError::Closed) => return Ok(()),
                        Err(e) => return Err(e.into()),
                    },
                    // Idle: record what was published, so the next owner does not publish it again.
                    // (Always armed: the publishing task raises `published` while this waits.)
                    _ = tokio::time::sleep(IDLE_MARK) => {
                        if self.published() > self.marked {
                            self.mark_published().await?;
                        }
                        continue;
                    }
                }
            } else {
                // A late op waits for its next page of history: take what has arrived, without
                // waiting for more.
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return Ok(()),
                    batch = consumer.next_batch(self.config.max_batch) => match batch {
                        Ok(batch) => batch,
                        Err(BusError::Closed) => return Ok(()),
                        Err(e) => return Err(e.into()),
                    },
                    _ = std::future::ready(()) => Vec::new(),
                }
            };
            let (commit, records) = self.process(batch).await?;
            if records.is_empty() {
                // Only a page of history was read: nothing to publish.
                continue;
            }
            let handed_over = tokio::select! {
                sent = to_publisher.send((commit, records)) => sent.is_ok(),
                // A broker so slow that the queue is full must not hold up a shutdown: the batch is
                // committed, and the next owner republishes it.
                _ = shutdown.cancelled() => return Ok(()),
            };
            if !handed_over {
                // The publishing task ended before the sender was dropped: it panicked. Without it
                // nothing is acknowledged any more, so the partition must stop (and be taken over).
                return Err(BusError::Unavailable("the publishing task ended".to_owned()).into());
            }
        }
    }

    /// Every commit up to this number has been published.
    fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    /// The transactional outbox: publishes what the previous owner committed but did not mark as
    /// published, before this owner sequences anything new. Gateways drop versions they already have,
    /// so publishing twice is harmless; not publishing would leave an ack unsent.
    async fn republish(&mut self, publisher: &dyn EventPublisher) -> Result<(), PartitionError> {
        loop {
            let (partition, after) = (self.partition, self.published());
            let page = retry(partition, || self.store.unpublished(partition, after, REPUBLISH_PAGE)).await?;
            let Some(last) = page.last().map(|c| c.commit) else { return Ok(()) };
            let records: Vec<Published> =
                page.into_iter().flat_map(|c| c.records).map(Published::from).collect();
            info!(partition, records = records.len(), through = last, "republishing");
            metrics::counter!("tandem_sequencer_republished_total").increment(records.len() as u64);
            publisher.publish(records).await?;
            self.published.store(last, Ordering::Release);
            self.mark_published().await?;
        }
    }

    async fn mark_published(&mut self) -> Result<(), PartitionError> {
        let (partition, epoch, through) = (self.partition, self.epoch, self.published());
        retry(partition, || self.store.mark_published(partition, epoch, through)).await?;
        self.marked = through;
        Ok(())
    }

    /// Sequences and commits one round: a page of history for the late op that waits longest (and
    /// the ops behind it, once it is decided), then the new batch. Returns the commit number and
    /// what to publish.
    async fn process(
        &mut self,
        batch: Vec<SubmissionRecord>,
    ) -> Result<(u64, Vec<Outgoing>), PartitionError> {
        self.tick += 1;
        if let Some(last) = batch.last() {
            self.consumed = Some(last.offset + 1);
        }
        let mut decided = Decided::default();
        if let Some(doc) = self.held_order.pop_front() {
            self.advance_held(doc, &mut decided).await?;
        }
        for record in &batch {
            // Behind a waiting op of its document: it waits its turn.
            if let Some(held) = self.held.get_mut(&record.submission.doc) {
                held.records.push_back(record.clone());
                continue;
            }
            if let Some(wait) = self.decide_record(record, None, &mut decided).await? {
                self.hold(record.clone(), wait);
            }
        }
        let Decided { mut commit, records, traced, duplicates, rejected, .. } = decided;
        if records.is_empty() {
            // Only a page of history was read, or every op waits behind a late one.
            return Ok((self.last_commit, Vec::new()));
        }
        commit.partition = self.partition;
        commit.epoch = self.epoch;
        // Held ops are not decided yet: the next owner must consume them again, so the stored offset
        // stays at the oldest of them (what was decided after it is deduplicated when replayed).
        let held_from = self.held.values().filter_map(|h| h.records.front()).map(|r| r.offset).min();
        commit.next_offset = held_from.or(self.consumed);
        commit.published_through = Some(self.published()).filter(|&published| published > self.marked);
        commit.expected_commit = Some(self.last_commit + 1);
        for deleted in &commit.deletions {
            self.snapshots.finish(&deleted.doc).await;
        }
        let started = std::time::Instant::now();
        let commit_spans = CommitSpans::open(traced, &records);
        let number = self.commit(&commit).await?;
        let records = commit_spans.close(records);
        metrics::histogram!("tandem_sequencer_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("tandem_sequencer_batch_ops").record(batch.len() as f64);
        metrics::counter!("tandem_sequencer_ops_total", "outcome" => "committed")
            .increment(commit.events.len() as u64);
        metrics::counter!("tandem_sequencer_ops_total", "outcome" => "duplicate").increment(duplicates);
        metrics::counter!("tandem_sequencer_ops_total", "outcome" => "rejected").increment(rejected);
        metrics::counter!("tandem_sequencer_ops_total", "outcome" => "deleted")
            .increment(commit.deletions.len() as u64);
        self.last_commit = number;
        if let Some(through) = commit.published_through {
            self.marked = through;
        }
        self.after_commit(&commit);
        Ok((number, records))
    }

    /// Holds an op that waits: it is decided over the next rounds.
    fn hold(&mut self, record: SubmissionRecord, wait: Wait) {
        let doc = record.submission.doc.clone();
        if matches!(wait, Wait::History { .. }) {
            metrics::counter!("tandem_sequencer_late_ops_total").increment(1);
        }
        self.held.insert(doc.clone(), Held { records: VecDeque::from([record]), wait });
        self.held_order.push_back(doc);
    }

    /// Reads one page of history for the late op of `doc` (if it waits for one) and decides it;
    /// then decides the ops behind it until one waits again or none is left.
    ///
    /// While more than a batch of ops waits behind late ops of the document (a stream of late ops
    /// on one document), it reads further pages in the same round, as the loop did before pages
    /// existed: what waits stays bounded, and one late op still costs at most `max_base_lag` events.
    async fn advance_held(&mut self, doc: DocId, decided: &mut Decided) -> Result<(), PartitionError> {
        let Some(mut held) = self.held.remove(&doc) else { return Ok(()) };
        loop {
            let mut page = match held.wait {
                Wait::History { after, up_to } => {
                    let limit = (up_to - after) as usize;
                    Some(retry(self.partition, || self.store.read_events(&doc, after, up_to, limit)).await?)
                }
                Wait::NextRound => None,
            };
            let mut waits = None;
            while let Some(record) = held.records.pop_front() {
                if let Some(wait) = self.decide_record(&record, page.take().as_deref(), decided).await? {
                    held.records.push_front(record);
                    waits = Some(wait);
                    break;
                }
            }
            let Some(wait) = waits else { return Ok(()) };
            held.wait = wait;
            // Only history can be read now; what waits for the next round waits.
            if wait == Wait::NextRound || held.records.len() <= self.config.max_batch {
                self.held.insert(doc.clone(), held);
                self.held_order.push_back(doc);
                return Ok(());
            }
        }
    }

    /// Decides one op (with a page of history for a late op), adding the decision to `decided`;
    /// returns what it waits for instead when it cannot be decided in this round.
    ///
    /// A delete waits while an op that arrived before it (of another document) is held: until that
    /// op is decided the stored offset stays at it, and a next owner would decide everything after
    /// it again. The first op held is never kept waiting by this rule, so the wait ends.
    async fn decide_record(
        &mut self,
        record: &SubmissionRecord,
        page: Option<&[CommittedEvent]>,
        decided: &mut Decided,
    ) -> Result<Option<Wait>, PartitionError> {
        let sub = &record.submission;
        if decided.deleted.contains(&sub.doc) {
            return Ok(Some(Wait::NextRound));
        }
        let held_before =
            || self.held.values().filter_map(|h| h.records.front()).any(|r| r.offset < record.offset);
        if sub.delete_document && held_before() {
            return Ok(Some(Wait::NextRound));
        }
        let (decision, context) = match op_trace::decide_span(record) {
            Some(span) => {
                let decision = self.decide(sub, page).instrument(span.clone()).await?;
                let context = op_trace::close_decide(span, &decision);
                (decision, Some(context))
            }
            None => (self.decide(sub, page).await?, None),
        };
        if let Decision::NeedHistory { after, up_to } = decision {
            return Ok(Some(Wait::History { after, up_to }));
        }
        if let Some(context) = context {
            decided.traced.push((decided.records.len(), context));
        }
        decided.push(sub, decision);
        Ok(None)
    }

    /// Runs the state machine, fetching from the store what it asks for, except history: a
    /// `NeedHistory` is returned, and the op is held (see [`PartitionOwner::advance_held`]).
    async fn decide(
        &mut self,
        sub: &Submission,
        page: Option<&[CommittedEvent]>,
    ) -> Result<Decision, PartitionError> {
        self.load(&sub.doc).await?;
        let limits = &self.config.limits;
        let doc = &mut self.docs.get_mut(&sub.doc).expect("loaded just above").state;
        let mut decision = doc.decide(sub, limits, page.map_or(Fetched::Nothing, Fetched::History));
        // Retried like every other store call: the op in hand cannot be skipped, so one transient
        // read error must not end the partition. Each is one indexed read.
        loop {
            decision = match decision {
                Decision::NeedClient => {
                    let record =
                        retry(self.partition, || self.store.last_outcome(&sub.doc, &sub.client)).await?;
                    // The page, if any, was not used yet: the client is looked up before history.
                    match doc.decide(sub, limits, Fetched::Client(record.as_ref())) {
                        Decision::NeedHistory { .. } if page.is_some() => {
                            doc.decide(sub, limits, page.map_or(Fetched::Nothing, Fetched::History))
                        }
                        decision => decision,
                    }
                }
                Decision::NeedOutcome => {
                    let outcome =
                        retry(self.partition, || self.store.find_outcome(&sub.doc, &sub.client, sub.seq))
                            .await?;
                    doc.decide(sub, limits, Fetched::Outcome(outcome.as_ref()))
                }
                decision => return Ok(decision),
            };
        }
    }

    async fn load(&mut self, doc: &DocId) -> Result<(), PartitionError> {
        if let Some(cached) = self.docs.get_mut(doc) {
            cached.last_used = self.tick;
            return Ok(());
        }
        let stored = retry(self.partition, || self.store.load_document(doc)).await?;
        let state = DocumentState::load(doc.clone(), stored, &self.config.limits)?;
        self.docs.insert(doc.clone(), CachedDocument { state, last_used: self.tick });
        Ok(())
    }

    /// Commits, retrying while the store is unavailable: the batch cannot be skipped (its ops are
    /// already applied in memory) and nothing after it may commit first.
    async fn commit(&mut self, batch: &CommitBatch) -> Result<u64, PartitionError> {
        if batch.is_empty() {
            // Nothing to write takes no commit number: the partition is still at its last one.
            return Ok(self.last_commit);
        }
        match retry(self.partition, || self.store.commit(batch)).await {
            Ok(number) => Ok(number),
            Err(e) => {
                // A conflict or a fence means our memory is not what the store has: forget it.
                self.docs.clear();
                Err(e.into())
            }
        }
    }

    fn after_commit(&mut self, batch: &CommitBatch) {
        let limits = &self.config.limits;
        // Everything decided so far is in the store now: windows may shrink, and clients beyond the
        // limit may be forgotten (the store answers for them).
        let touched = batch.events.iter().map(|e| &e.doc).chain(batch.rejections.iter().map(|r| &r.doc));
        for doc in touched {
            if let Some(cached) = self.docs.get_mut(doc) {
                cached.state.all_durable(limits);
            }
        }
        for event in &batch.events {
            if self.config.snapshot_every == 0 {
                break;
            }
            let Some(cached) = self.docs.get_mut(&event.doc) else { continue };
            // Bounded: one write per document, a few in all. Skipped, not queued: the snapshot stays
            // due and is taken after the document's next commit.
            if !self.snapshots.has_room_for(&event.doc) {
                continue;
            }
            if let Some(snapshot) = cached.state.snapshot_due(self.config.snapshot_every) {
                self.snapshots.start(self.store.clone(), snapshot);
            }
        }
        self.evict();
    }

    /// Drops the least recently used documents beyond the count and memory budgets. Documents
    /// used by the batch just committed are kept: they are the ones most likely to get the next op;
    /// so are documents with held ops (their late op's progress is in their state).
    fn evict(&mut self) {
        let chars: usize = self.docs.values().map(|c| c.state.memory_chars()).sum();
        if self.docs.len() <= self.config.cached_documents && chars <= self.config.cached_chars {
            return;
        }
        let mut by_age: Vec<(u64, usize, DocId)> =
            self.docs.iter().map(|(d, c)| (c.last_used, c.state.memory_chars(), d.clone())).collect();
        by_age.sort_unstable_by_key(|(used, _, _)| *used);
        let (mut count, mut chars) = (self.docs.len(), chars);
        for (used, len, doc) in by_age {
            if (count <= self.config.cached_documents && chars <= self.config.cached_chars)
                || used == self.tick
            {
                break;
            }
            if self.held.contains_key(&doc) {
                continue;
            }
            self.docs.remove(&doc);
            count -= 1;
            chars -= len;
        }
    }
}

/// Runs a store call until it succeeds or fails for a reason other than unavailability. The
/// partition cannot move past the op in hand, so waiting is the only correct choice; the backoff keeps
/// a store outage from turning into a retry storm.
async fn retry<T, F, Fut>(partition: PartitionId, mut call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut delay = Duration::from_millis(10);
    loop {
        match call().await {
            Err(StoreError::Unavailable(e)) => {
                metrics::counter!("tandem_sequencer_store_retries_total").increment(1);
                warn!(partition, error = %e, retry_in = ?delay, "store unavailable, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A revoked or fenced partition ends its loop without ending the sequencer; a store or bus
    /// failure of another kind still does (the service exits and the group moves its partitions).
    #[test]
    fn only_a_lost_ownership_is_not_a_failure() {
        assert!(PartitionError::Fenced { partition: 3 }.is_lost_ownership());
        assert!(PartitionError::Bus(BusError::Closed).is_lost_ownership());
        assert!(!PartitionError::Bus(BusError::Unavailable("broker down".into())).is_lost_ownership());
        assert!(!PartitionError::Store(StoreError::Corrupt("bad row".into())).is_lost_ownership());
    }
}
