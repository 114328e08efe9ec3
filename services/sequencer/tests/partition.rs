//! The partition loop over the in-process bus and the real embedded store: ops are committed before
//! they are published, snapshots are written every N versions, and an owner whose partition was
//! claimed by another stops without writing.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU32, Ordering};
use tandem_bus::in_process::{in_process, InProcessConfig};
use tandem_bus::{Delivery, EventStream, EventSubscriber, OpSubmitter};
use tandem_ot::Operation;

use async_trait::async_trait;
use tandem_bus::PartitionId;
use tandem_protocol::records::{CommittedEvent, Outcome, SequencedRecord, Submission};
use tandem_protocol::{ClientId, DocId};
use tandem_sequencer::{run_partition, Limits, PartitionConfig, PartitionError};
use tandem_store::embedded::{SqliteOptions, SqliteStore};
use tandem_store::intercept::{Call, Intercept, Intercepted};
use tandem_store::{
    ClientRecord, CommitBatch, EventStore, PartitionClaim, Snapshot, StoreError, StoredDocument,
    UnpublishedCommit,
};
use tokio_util::sync::CancellationToken;

fn append(doc: &DocId, seq: u64) -> Submission {
    // Each op appends one character to a text of seq - 1 characters.
    let op = Operation::from_patch(seq as usize - 1, seq as usize - 1, 0, "x").unwrap();
    Submission {
        author: String::new(),
        delete_document: false,
        doc: doc.clone(),
        client: ClientId::parse("writer").unwrap(),
        seq,
        base: seq - 1,
        op,
    }
}

fn store(dir: &tempfile::TempDir) -> Arc<dyn EventStore> {
    Arc::new(SqliteStore::open(dir.path(), SqliteOptions { synchronous_full: false }).unwrap())
}

#[tokio::test]
async fn published_records_are_committed_and_snapshots_bound_loading() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let (submitter, mut consumers, publisher, subscriber) = in_process(&InProcessConfig::default());
    let mut records = subscriber.subscribe();
    let shutdown = CancellationToken::new();
    let config = PartitionConfig { snapshot_every: 10, ..PartitionConfig::default() };
    let owner = tokio::spawn(run_partition(
        consumers.remove(0),
        store.clone(),
        Arc::new(publisher),
        config,
        shutdown.clone(),
    ));

    let doc = DocId::parse("snap").unwrap();
    for seq in 1..=25 {
        submitter.submit(append(&doc, seq)).await.unwrap();
    }
    for expected in 1..=25u64 {
        let Some(Delivery::Record { record, .. }) = records.next().await else {
            panic!("record stream ended")
        };
        let SequencedRecord::Committed(event) = &*record else { panic!("unexpected {record:?}") };
        assert_eq!(event.version, expected);
        // Published only after the commit: the store already has it.
        assert!(store.latest_version(&doc).await.unwrap() >= expected);
    }
    // Snapshots are written off the hot path; give them a moment.
    let mut loaded = store.load_document(&doc).await.unwrap();
    for _ in 0..50 {
        if loaded.snapshot.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        loaded = store.load_document(&doc).await.unwrap();
    }
    // Snapshots are taken at the end of a batch once 10 versions have passed since the last one.
    let snapshot = loaded.snapshot.expect("a snapshot was written");
    assert!(snapshot.version >= 10, "snapshot at {}", snapshot.version);
    assert_eq!(snapshot.text.chars().count() as u64, snapshot.version);
    let after: Vec<u64> = loaded.events.iter().map(|e| e.version).collect();
    assert_eq!(after, (snapshot.version + 1..=25).collect::<Vec<_>>(), "loading reads only what follows");

    shutdown.cancel();
    owner.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_owner_fenced_by_a_new_claim_stops_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let (submitter, mut consumers, publisher, _subscriber) = in_process(&InProcessConfig::default());
    let owner = tokio::spawn(run_partition(
        consumers.remove(0),
        store.clone(),
        Arc::new(publisher),
        PartitionConfig::default(),
        CancellationToken::new(),
    ));
    let doc = DocId::parse("fenced").unwrap();
    submitter.submit(append(&doc, 1)).await.unwrap();
    for _ in 0..100 {
        if store.latest_version(&doc).await.unwrap() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.latest_version(&doc).await.unwrap(), 1);

    // Another owner takes the partition over; the old one's next commit must fail and write nothing.
    store.claim_partition(0).await.unwrap();
    submitter.submit(append(&doc, 2)).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), owner).await.expect("the owner stops").unwrap();
    assert!(matches!(result, Err(PartitionError::Fenced { partition: 0 })), "{result:?}");
    assert_eq!(store.latest_version(&doc).await.unwrap(), 1);
}

/// A publisher that loses everything: the commit happened, the records never reached anyone.
/// The in-process bus's consumer in a group that still assigns the partition to this member:
/// asked after a fence, it answers "not revoked" (after the grace, like a Kafka consumer whose
/// revocation does not come).
struct StillAssigned(tandem_bus::in_process::InProcessConsumer);

#[async_trait]
impl tandem_bus::OpConsumer for StillAssigned {
    fn partition(&self) -> PartitionId {
        self.0.partition()
    }

    async fn next_batch(
        &mut self,
        max: usize,
    ) -> Result<Vec<tandem_bus::SubmissionRecord>, tandem_bus::BusError> {
        self.0.next_batch(max).await
    }

    async fn seek(&mut self, next_offset: i64) -> Result<(), tandem_bus::BusError> {
        self.0.seek(next_offset).await
    }

    async fn revoked_within(&mut self, grace: Duration) -> bool {
        tokio::time::sleep(grace).await;
        false
    }
}

/// Guards run_partition's promise (services/sequencer/src/partition.rs): an owner fenced by a late
/// claim while the group still assigns it the partition claims it again and goes on sequencing,
/// including the op whose commit the fence refused; it does not leave the partition without an
/// owner until the next rebalance (seen in the fault-injection soak: 100 s).
#[tokio::test]
async fn an_owner_fenced_by_a_late_claim_while_still_assigned_claims_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let (submitter, mut consumers, publisher, _subscriber) = in_process(&InProcessConfig::default());
    let shutdown = CancellationToken::new();
    let owner = tokio::spawn(run_partition(
        StillAssigned(consumers.remove(0)),
        store.clone(),
        Arc::new(publisher),
        PartitionConfig::default(),
        shutdown.clone(),
    ));
    let doc = DocId::parse("reclaimed").unwrap();
    let until_version = |version: u64| {
        let store = store.clone();
        let doc = doc.clone();
        async move {
            for _ in 0..500 {
                if store.latest_version(&doc).await.unwrap() >= version {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("version {version} of {doc} was never committed");
        }
    };
    submitter.submit(append(&doc, 1)).await.unwrap();
    until_version(1).await;

    // A member the partition was revoked from claims it late; this owner's next commit is fenced.
    // The in-process bus does not replay what was read before (Kafka does, from the stored offset):
    // the client resends its unacknowledged op, as it would after its ack timeout.
    let late = store.claim_partition(0).await.unwrap();
    for _ in 0..10 {
        submitter.submit(append(&doc, 2)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        if store.latest_version(&doc).await.unwrap() >= 2 {
            break;
        }
    }
    until_version(2).await;
    submitter.submit(append(&doc, 3)).await.unwrap();
    until_version(3).await;
    let claim = store.claim_partition(0).await.unwrap();
    assert!(claim.epoch > late.epoch + 1, "the owner claimed the partition again after the late claim");
    assert!(!owner.is_finished(), "the owner still runs");
    shutdown.cancel();
    // Stopping after the last claim above, its shutdown may itself be fenced: either way it ends.
    let _ = tokio::time::timeout(Duration::from_secs(10), owner).await.expect("the owner stops");
}

struct LosingPublisher;

#[async_trait::async_trait]
impl tandem_bus::EventPublisher for LosingPublisher {
    async fn publish(&self, _: Vec<tandem_bus::Published>) -> Result<(), tandem_bus::BusError> {
        Err(tandem_bus::BusError::Unavailable("the broker is gone".into()))
    }
}

#[tokio::test]
async fn the_next_owner_republishes_what_was_committed_but_not_published() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let doc = DocId::parse("outbox").unwrap();

    // The first owner commits two ops, but its publishes are lost.
    let (submitter, mut consumers, _, _) = in_process(&InProcessConfig::default());
    let shutdown = CancellationToken::new();
    let first = tokio::spawn(run_partition(
        consumers.remove(0),
        store.clone(),
        Arc::new(LosingPublisher),
        PartitionConfig::default(),
        shutdown.clone(),
    ));
    for seq in 1..=2 {
        submitter.submit(append(&doc, seq)).await.unwrap();
    }
    for _ in 0..100 {
        if store.latest_version(&doc).await.unwrap() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    first.await.unwrap().unwrap();

    // The next owner publishes them before anything new.
    let (_, mut consumers, publisher, subscriber) = in_process(&InProcessConfig::default());
    let mut records = subscriber.subscribe();
    let shutdown = CancellationToken::new();
    let second = tokio::spawn(run_partition(
        consumers.remove(0),
        store.clone(),
        Arc::new(publisher),
        PartitionConfig::default(),
        shutdown.clone(),
    ));
    for expected in 1..=2u64 {
        let delivery =
            tokio::time::timeout(Duration::from_secs(5), records.next()).await.expect("republished");
        let Some(Delivery::Record { record, .. }) = delivery else { panic!("record stream ended") };
        let SequencedRecord::Committed(event) = &*record else { panic!("unexpected {record:?}") };
        assert_eq!(event.version, expected);
    }
    shutdown.cancel();
    second.await.unwrap().unwrap();
    // Marked as published on the way out: a third owner has nothing to republish.
    let claim = store.claim_partition(0).await.unwrap();
    assert_eq!((claim.last_commit, claim.published_through), (1, 1), "{claim:?}");
    assert!(store.unpublished(0, claim.published_through, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn documents_evicted_by_the_memory_budget_are_reloaded_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let (submitter, mut consumers, publisher, subscriber) = in_process(&InProcessConfig::default());
    let mut records = subscriber.subscribe();
    let shutdown = CancellationToken::new();
    // A budget of one character: every batch evicts every document it did not touch.
    let config = PartitionConfig {
        cached_chars: 1,
        cached_documents: 1,
        snapshot_every: 3,
        ..PartitionConfig::default()
    };
    let owner = tokio::spawn(run_partition(
        consumers.remove(0),
        store.clone(),
        Arc::new(publisher),
        config,
        shutdown.clone(),
    ));
    let docs: Vec<DocId> = (0..3).map(|i| DocId::parse(&format!("evicted-{i}")).unwrap()).collect();
    for seq in 1..=6 {
        for doc in &docs {
            submitter.submit(append(doc, seq)).await.unwrap();
            // One at a time, so each op is its own batch and the others get evicted in between.
            let Some(Delivery::Record { record, .. }) = records.next().await else {
                panic!("record stream ended")
            };
            assert!(matches!(&*record, SequencedRecord::Committed(e) if e.version == seq), "{record:?}");
        }
    }
    for doc in &docs {
        assert_eq!(store.latest_version(doc).await.unwrap(), 6);
    }
    shutdown.cancel();
    owner.await.unwrap().unwrap();
}

/// Takes one failure off `failures`; false once they are used up.
fn fails(failures: &AtomicU32) -> bool {
    failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

/// Hooks making the first `claims` claims, `reads` history reads and `outcomes` outcome lookups of
/// the real embedded store fail as unavailable (the database restarting).
struct FailsFirst {
    claims: AtomicU32,
    reads: AtomicU32,
    outcomes: AtomicU32,
}

impl FailsFirst {
    fn new(inner: Arc<dyn EventStore>, claims: u32, reads: u32, outcomes: u32) -> Intercepted<Self> {
        let hooks = Self {
            claims: AtomicU32::new(claims),
            reads: AtomicU32::new(reads),
            outcomes: AtomicU32::new(outcomes),
        };
        Intercepted::new(inner, hooks)
    }
}

#[async_trait]
impl Intercept for FailsFirst {
    async fn before(&self, call: Call<'_>) -> Result<(), StoreError> {
        let failures = match call {
            Call::ClaimPartition(_) => &self.claims,
            Call::ReadEvents(_) => &self.reads,
            Call::FindOutcome(_) => &self.outcomes,
            _ => return Ok(()),
        };
        if fails(failures) {
            return Err(StoreError::Unavailable("connection closed".into()));
        }
        Ok(())
    }
}

/// Found by the Postgres-crash cluster test: the database went down during the claim, and the
/// partition loop ended (taking the sequencer with it) instead of waiting for the database.
#[tokio::test]
async fn a_store_outage_during_the_claim_is_waited_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FailsFirst::new(store(&dir), 3, 0, 0));
    let (submitter, mut consumers, publisher, subscriber) = in_process(&InProcessConfig::default());
    let mut records = subscriber.subscribe();
    let shutdown = CancellationToken::new();
    let owner = tokio::spawn(run_partition(
        consumers.remove(0),
        store.clone(),
        Arc::new(publisher),
        PartitionConfig::default(),
        shutdown.clone(),
    ));
    let doc = DocId::parse("after-outage").unwrap();
    submitter.submit(append(&doc, 1)).await.unwrap();
    let delivery =
        tokio::time::timeout(Duration::from_secs(10), records.next()).await.expect("a record in time");
    let Some(Delivery::Record { record, .. }) = delivery else { panic!("record stream ended") };
    assert!(matches!(&*record, SequencedRecord::Committed(event) if event.version == 1), "{record:?}");
    assert_eq!(store.hooks().claims.load(Ordering::SeqCst), 0, "the failing claims were tried");
    shutdown.cancel();
    owner.await.unwrap().unwrap();
}

/// Found in review: one transient error reading a late op's history, or a resubmission's old
/// outcome, ended the partition (and the sequencer) although every other store call is retried.
#[tokio::test]
async fn a_store_outage_while_reading_history_or_an_outcome_is_waited_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FailsFirst::new(store(&dir), 0, 3, 3));
    let (submitter, mut consumers, publisher, subscriber) = in_process(&InProcessConfig::default());
    let mut records = subscriber.subscribe();
    let shutdown = CancellationToken::new();
    // A window of one op: a late op needs the history from the store, and so does the outcome of
    // a resubmission older than the client's last.
    let limits = Limits { history_window: 1, ..Limits::default() };
    let owner = tokio::spawn(run_partition(
        consumers.remove(0),
        store.clone(),
        Arc::new(publisher),
        PartitionConfig { limits, ..PartitionConfig::default() },
        shutdown.clone(),
    ));
    let doc = DocId::parse("late").unwrap();
    for seq in 1..=3 {
        submitter.submit(append(&doc, seq)).await.unwrap();
        let record = next_record(&mut records).await;
        assert!(matches!(&*record, SequencedRecord::Committed(e) if e.version == seq), "{record:?}");
    }
    // Another client's op on version 0: transformed against versions 1 and 2 read from the store.
    let late = Submission {
        author: String::new(),
        delete_document: false,
        doc: doc.clone(),
        client: ClientId::parse("late-writer").unwrap(),
        seq: 1,
        base: 0,
        op: Operation::from_patch(0, 0, 0, "y").unwrap(),
    };
    submitter.submit(late).await.unwrap();
    let record = next_record(&mut records).await;
    assert!(matches!(&*record, SequencedRecord::Committed(e) if e.version == 4), "{record:?}");
    assert_eq!(store.hooks().reads.load(Ordering::SeqCst), 0, "the failing reads were tried");
    // The first op again: its outcome is no longer in memory.
    submitter.submit(append(&doc, 1)).await.unwrap();
    let record = next_record(&mut records).await;
    assert!(matches!(&*record, SequencedRecord::Reacknowledged { seq: 1, version: 1, .. }), "{record:?}");
    assert_eq!(store.hooks().outcomes.load(Ordering::SeqCst), 0, "the failing lookups were tried");
    shutdown.cancel();
    owner.await.unwrap().unwrap();
    assert_eq!(store.latest_version(&doc).await.unwrap(), 4);
}

/// A publisher that delivers its first `passes` publishes, fails the next `failures` (the broker
/// hiccups, or is gone for good with `u32::MAX`), and delivers every later one.
struct FlakyPublisher {
    inner: Arc<dyn tandem_bus::EventPublisher>,
    passes: AtomicU32,
    failures: AtomicU32,
}

impl FlakyPublisher {
    fn new(inner: impl tandem_bus::EventPublisher, passes: u32, failures: u32) -> Self {
        Self { inner: Arc::new(inner), passes: AtomicU32::new(passes), failures: AtomicU32::new(failures) }
    }
}

#[async_trait]
impl tandem_bus::EventPublisher for FlakyPublisher {
    async fn publish(&self, records: Vec<tandem_bus::Published>) -> Result<(), tandem_bus::BusError> {
        if !fails(&self.passes) && fails(&self.failures) {
            return Err(tandem_bus::BusError::Unavailable("the broker hiccupped".into()));
        }
        self.inner.publish(records).await
    }
}

/// The next record of the stream, within a few seconds.
async fn next_record(records: &mut Box<dyn EventStream>) -> Arc<SequencedRecord> {
    let delivery =
        tokio::time::timeout(Duration::from_secs(10), records.next()).await.expect("a record in time");
    let Some(Delivery::Record { record, .. }) = delivery else { panic!("record stream ended") };
    record
}

/// Waits until the store has `version` of `doc`.
async fn committed(store: &dyn EventStore, doc: &DocId, version: u64) {
    for _ in 0..500 {
        if store.latest_version(doc).await.unwrap() >= version {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("version {version} of {doc} was not committed");
}

/// A failed publish is retried by the same owner, before anything committed after it: every record
/// reaches the stream in commit order, and the mark follows. (Found in review: the owner used to
/// freeze its mark after one failure, leaving a gap in `tandem.events` until the next owner.)
#[tokio::test]
async fn a_failed_publish_is_retried_in_order_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let (submitter, mut consumers, publisher, subscriber) = in_process(&InProcessConfig::default());
    let mut records = subscriber.subscribe();
    let shutdown = CancellationToken::new();
    let owner = tokio::spawn(run_partition(
        consumers.remove(0),
        store.clone(),
        Arc::new(FlakyPublisher::new(publisher, 0, 3)),
        PartitionConfig::default(),
        shutdown.clone(),
    ));
    let doc = DocId::parse("hiccup").unwrap();
    submitter.submit(append(&doc, 1)).await.unwrap();
    committed(&*store, &doc, 1).await;
    // Committed while version 1's publish is still failing: they must wait behind it.
    for seq in 2..=5 {
        submitter.submit(append(&doc, seq)).await.unwrap();
    }
    for expected in 1..=5u64 {
        let record = next_record(&mut records).await;
        assert!(matches!(&*record, SequencedRecord::Committed(e) if e.version == expected), "{record:?}");
    }
    shutdown.cancel();
    owner.await.unwrap().unwrap();

    let claim = store.claim_partition(0).await.unwrap();
    assert!(claim.last_commit >= 2, "{claim:?}");
    assert_eq!(claim.published_through, claim.last_commit, "everything is marked published");
    assert!(store.unpublished(0, claim.published_through, 100).await.unwrap().is_empty());
}

/// With the broker gone for good the publishing task retries forever; a shutdown must still end
/// the partition promptly, without raising the mark past the commit that never went out.
#[tokio::test]
async fn a_publish_failing_forever_does_not_block_shutdown_and_stays_unpublished() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let (submitter, mut consumers, publisher, subscriber) = in_process(&InProcessConfig::default());
    let mut records = subscriber.subscribe();
    let shutdown = CancellationToken::new();
    let owner = tokio::spawn(run_partition(
        consumers.remove(0),
        store.clone(),
        Arc::new(FlakyPublisher::new(publisher, 1, u32::MAX)),
        PartitionConfig::default(),
        shutdown.clone(),
    ));
    let doc = DocId::parse("gone").unwrap();
    submitter.submit(append(&doc, 1)).await.unwrap();
    let record = next_record(&mut records).await;
    assert!(matches!(&*record, SequencedRecord::Committed(e) if e.version == 1), "{record:?}");
    // Version 2's publish fails from here on; long enough for the backoff to pass a second.
    submitter.submit(append(&doc, 2)).await.unwrap();
    committed(&*store, &doc, 2).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(3), owner).await.expect("shutdown is not blocked");
    result.unwrap().unwrap();

    let claim = store.claim_partition(0).await.unwrap();
    assert_eq!((claim.last_commit, claim.published_through), (2, 1), "{claim:?}");
    let unpublished: Vec<u64> =
        store.unpublished(0, claim.published_through, 100).await.unwrap().iter().map(|c| c.commit).collect();
    assert_eq!(unpublished, [2], "the next owner republishes the failed commit");
}

/// One `read_events` call: the document, the range asked for, and how many events came back.
#[derive(Debug, Clone)]
struct Read {
    doc: DocId,
    after: u64,
    up_to: u64,
    limit: usize,
    returned: usize,
}

/// The real embedded store, watched: every history read, every document load, and the snapshot
/// writes in flight (which wait for `snapshot_gate` when it is closed). It forwards the calls
/// itself rather than through `tandem_store::intercept`, whose hooks do not see what a read
/// returned.
struct Instrumented {
    inner: Arc<dyn EventStore>,
    reads: std::sync::Mutex<Vec<Read>>,
    loads: AtomicU32,
    /// Each history read takes one permit for good.
    reads_allowed: tokio::sync::Semaphore,
    snapshot_gate: Arc<tokio::sync::Semaphore>,
    snapshots_in_flight: std::sync::Mutex<(usize, usize, std::collections::HashMap<DocId, usize>, usize)>,
}

impl Instrumented {
    fn new(inner: Arc<dyn EventStore>, snapshots_open: bool) -> Self {
        let permits = if snapshots_open { tokio::sync::Semaphore::MAX_PERMITS } else { 0 };
        Self {
            inner,
            reads: Default::default(),
            loads: AtomicU32::new(0),
            reads_allowed: tokio::sync::Semaphore::new(tokio::sync::Semaphore::MAX_PERMITS),
            snapshot_gate: Arc::new(tokio::sync::Semaphore::new(permits)),
            snapshots_in_flight: Default::default(),
        }
    }

    fn reads(&self) -> Vec<Read> {
        self.reads.lock().unwrap().clone()
    }

    /// The most snapshot writes in flight at once, over all documents and for any one document.
    fn most_snapshot_writes(&self) -> (usize, usize) {
        let guard = self.snapshots_in_flight.lock().unwrap();
        (guard.1, guard.3)
    }

    fn snapshot_writes_in_flight(&self) -> usize {
        self.snapshots_in_flight.lock().unwrap().0
    }
}

#[async_trait]
impl EventStore for Instrumented {
    async fn claim_partition(&self, partition: PartitionId) -> Result<PartitionClaim, StoreError> {
        self.inner.claim_partition(partition).await
    }
    async fn commit(&self, batch: &CommitBatch) -> Result<u64, StoreError> {
        self.inner.commit(batch).await
    }
    async fn mark_published(
        &self,
        partition: PartitionId,
        epoch: u64,
        through: u64,
    ) -> Result<(), StoreError> {
        self.inner.mark_published(partition, epoch, through).await
    }
    async fn unpublished(
        &self,
        partition: PartitionId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<UnpublishedCommit>, StoreError> {
        self.inner.unpublished(partition, after, limit).await
    }
    async fn latest_version(&self, doc: &DocId) -> Result<u64, StoreError> {
        self.inner.latest_version(doc).await
    }
    async fn read_events(
        &self,
        doc: &DocId,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<CommittedEvent>, StoreError> {
        self.reads_allowed.acquire().await.unwrap().forget();
        let events = self.inner.read_events(doc, after, up_to, limit).await?;
        let read = Read { doc: doc.clone(), after, up_to, limit, returned: events.len() };
        self.reads.lock().unwrap().push(read);
        Ok(events)
    }
    async fn load_document(&self, doc: &DocId) -> Result<StoredDocument, StoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load_document(doc).await
    }
    async fn write_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        {
            let mut guard = self.snapshots_in_flight.lock().unwrap();
            guard.0 += 1;
            guard.1 = guard.1.max(guard.0);
            let for_doc = guard.2.entry(snapshot.doc.clone()).or_default();
            *for_doc += 1;
            let for_doc = *for_doc;
            guard.3 = guard.3.max(for_doc);
        }
        let _permit = self.snapshot_gate.acquire().await.unwrap();
        let result = self.inner.write_snapshot(snapshot).await;
        let mut guard = self.snapshots_in_flight.lock().unwrap();
        guard.0 -= 1;
        *guard.2.get_mut(&snapshot.doc).unwrap() -= 1;
        result
    }
    async fn find_outcome(
        &self,
        doc: &DocId,
        client: &ClientId,
        seq: u64,
    ) -> Result<Option<Outcome>, StoreError> {
        self.inner.find_outcome(doc, client, seq).await
    }
    async fn last_outcome(&self, doc: &DocId, client: &ClientId) -> Result<Option<ClientRecord>, StoreError> {
        self.inner.last_outcome(doc, client).await
    }

    async fn read_history(
        &self,
        doc: &DocId,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<tandem_store::HistoryEntry>, StoreError> {
        self.inner.read_history(doc, after, up_to, limit).await
    }

    async fn snapshot_at_or_before(
        &self,
        doc: &DocId,
        version: u64,
    ) -> Result<Option<tandem_store::Snapshot>, StoreError> {
        self.inner.snapshot_at_or_before(doc, version).await
    }

    async fn create_checkpoint(
        &self,
        checkpoint: &tandem_store::Checkpoint,
    ) -> Result<tandem_store::Checkpoint, StoreError> {
        self.inner.create_checkpoint(checkpoint).await
    }

    async fn list_checkpoints(&self, doc: &DocId) -> Result<Vec<tandem_store::Checkpoint>, StoreError> {
        self.inner.list_checkpoints(doc).await
    }
}

fn submission(doc: &DocId, client: &str, seq: u64, base: u64, op: Operation) -> Submission {
    Submission {
        author: String::new(),
        delete_document: false,
        doc: doc.clone(),
        client: ClientId::parse(client).unwrap(),
        seq,
        base,
        op,
    }
}

/// Issue "one stale op stalls a partition": an op based far back on a busy document reads its
/// history a window's worth per round, never all of it inline, while the ops of other documents
/// that arrived after it are committed first; an op past the lag bound is refused with
/// `invalid_op` without reading anything.
#[tokio::test]
async fn a_stale_op_reads_its_history_in_pages_while_other_documents_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Instrumented::new(store(&dir), true));
    let (submitter, mut consumers, publisher, subscriber) = in_process(&InProcessConfig::default());
    let mut records = subscriber.subscribe();
    let shutdown = CancellationToken::new();
    let limits = Limits { history_window: 10, max_base_lag: 250, ..Limits::default() };
    let owner = tokio::spawn(run_partition(
        consumers.remove(0),
        store.clone(),
        Arc::new(publisher),
        PartitionConfig { limits, ..PartitionConfig::default() },
        shutdown.clone(),
    ));
    let busy = DocId::parse("busy").unwrap();
    for seq in 1..=300 {
        submitter.submit(append(&busy, seq)).await.unwrap();
    }
    for _ in 1..=300 {
        next_record(&mut records).await;
    }
    let other = DocId::parse("other").unwrap();
    // All submitted before the partition runs again (one thread): they reach it together.
    let ancient = submission(&busy, "ancient", 1, 10, Operation::from_patch(10, 0, 0, "z").unwrap());
    submitter.submit(ancient).await.unwrap();
    let stale = submission(&busy, "stale", 1, 60, Operation::from_patch(60, 0, 0, "y").unwrap());
    submitter.submit(stale).await.unwrap();
    for seq in 1..=5 {
        submitter.submit(append(&other, seq)).await.unwrap();
    }
    let mut order = Vec::new();
    while order.len() < 7 {
        let record = next_record(&mut records).await;
        order.push(match &*record {
            SequencedRecord::Committed(e) if e.doc == other => format!("other {}", e.version),
            SequencedRecord::Committed(e) if e.client.as_str() == "stale" => {
                assert_eq!(e.version, 301);
                assert_eq!(e.op, Operation::from_patch(300, 0, 0, "y").unwrap());
                "stale".to_owned()
            }
            SequencedRecord::Rejected(r) if r.client.as_str() == "ancient" => {
                assert_eq!(r.code, tandem_protocol::ErrorCode::InvalidOp);
                assert!(r.message.contains("reload the document"), "{}", r.message);
                "ancient".to_owned()
            }
            other => panic!("unexpected {other:?}"),
        });
    }
    let stale_at = order.iter().position(|r| r == "stale").unwrap();
    assert_eq!(stale_at, 6, "the other document's ops wait for the stale op: {order:?}");
    let reads: Vec<Read> = store.reads().into_iter().filter(|r| r.doc == busy).collect();
    assert!(
        reads.iter().all(|r| r.limit <= 10 && r.returned <= 10 && r.up_to - r.after <= 10),
        "one read brings at most a window's worth of history: {reads:?}"
    );
    assert!(reads.iter().all(|r| r.after >= 60), "nothing is read for the op past the bound: {reads:?}");
    assert_eq!(reads.iter().map(|r| r.returned).sum::<usize>(), 290 - 60, "{reads:?}");
    shutdown.cancel();
    owner.await.unwrap().unwrap();
    assert_eq!(store.latest_version(&busy).await.unwrap(), 301);
    assert_eq!(store.latest_version(&other).await.unwrap(), 5);
}

/// The default number of clients a document remembers in memory (and in its snapshots).
const REMEMBERED_CLIENTS: usize = 1_000;

/// Issue "unbounded memory": the clients a document remembers are bounded, in memory and in its
/// snapshots; a client forgotten that way and then resubmitting gets exactly what it would have
/// got before: its ack again, the same error again, or a refusal of a seq it already used; never a
/// second application, and never a store conflict that would stop the partition.
#[tokio::test]
async fn clients_beyond_the_limit_are_forgotten_and_answered_right_when_they_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let (submitter, mut consumers, publisher, subscriber) = in_process(&InProcessConfig::default());
    let mut records = subscriber.subscribe();
    let shutdown = CancellationToken::new();
    let clients = REMEMBERED_CLIENTS + 100;
    let owner = tokio::spawn(run_partition(
        consumers.remove(0),
        store.clone(),
        Arc::new(publisher),
        PartitionConfig { snapshot_every: clients as u64, ..PartitionConfig::default() },
        shutdown.clone(),
    ));
    let doc = DocId::parse("crowded").unwrap();
    let insert = |len: u64| Operation::from_patch(len as usize, len as usize, 0, "x").unwrap();
    // The first clients: one committed op, one seq that skips ahead (stored as refused), one op
    // refused for its length.
    submitter.submit(submission(&doc, "skipper", 1, 0, insert(0))).await.unwrap();
    submitter.submit(submission(&doc, "skipper", 5, 1, insert(1))).await.unwrap();
    submitter.submit(submission(&doc, "misfit", 1, 1, insert(7))).await.unwrap();
    for i in 0..clients as u64 {
        submitter.submit(submission(&doc, &format!("c{i}"), 1, 1 + i, insert(1 + i))).await.unwrap();
    }
    let mut misfit_error = None;
    for _ in 0..clients + 3 {
        match &*next_record(&mut records).await {
            SequencedRecord::Rejected(r) if r.client.as_str() == "misfit" => {
                misfit_error = Some(r.message.clone())
            }
            SequencedRecord::Rejected(r) if r.client.as_str() == "skipper" => {}
            SequencedRecord::Committed(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let version = 1 + clients as u64;
    assert_eq!(store.latest_version(&doc).await.unwrap(), version);
    let mut snapshot = None;
    for _ in 0..200 {
        snapshot = store.load_document(&doc).await.unwrap().snapshot;
        if snapshot.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let snapshot = snapshot.expect("a snapshot was written");
    assert!(
        snapshot.clients.len() <= REMEMBERED_CLIENTS,
        "the snapshot remembers {} clients",
        snapshot.clients.len()
    );

    // The oldest clients were forgotten; each comes back.
    submitter.submit(submission(&doc, "c0", 1, 1, insert(1))).await.unwrap();
    let record = next_record(&mut records).await;
    assert!(matches!(&*record, SequencedRecord::Reacknowledged { seq: 1, version: 2, .. }), "{record:?}");
    submitter.submit(submission(&doc, "misfit", 1, 1, insert(7))).await.unwrap();
    let record = next_record(&mut records).await;
    let SequencedRecord::Rejected(r) = &*record else { panic!("unexpected {record:?}") };
    assert_eq!(Some(&r.message), misfit_error.as_ref());
    // Seq 2 was skipped over by seq 5: it is used up, not applied.
    submitter.submit(submission(&doc, "skipper", 2, version, insert(version))).await.unwrap();
    let record = next_record(&mut records).await;
    assert!(matches!(&*record, SequencedRecord::Rejected(r) if r.seq == 2), "{record:?}");
    assert_eq!(store.latest_version(&doc).await.unwrap(), version);
    // And their next seqs are applied once each.
    submitter.submit(submission(&doc, "skipper", 6, version, insert(version))).await.unwrap();
    let record = next_record(&mut records).await;
    assert!(matches!(&*record, SequencedRecord::Committed(e) if e.version == version + 1), "{record:?}");
    submitter.submit(submission(&doc, "c0", 2, version + 1, insert(version + 1))).await.unwrap();
    let record = next_record(&mut records).await;
    assert!(matches!(&*record, SequencedRecord::Committed(e) if e.version == version + 2), "{record:?}");
    shutdown.cancel();
    owner.await.unwrap().unwrap();
    assert_eq!(store.latest_version(&doc).await.unwrap(), version + 2);
}

/// Issue "unbounded memory": the memory budget counts each document's history window, not only
/// its text. Two documents whose texts stay tiny but whose windows hold thousands of inserted
/// characters do not both fit a budget of 3,000 characters.
#[tokio::test]
async fn the_history_window_counts_against_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Instrumented::new(store(&dir), true));
    let (submitter, mut consumers, publisher, subscriber) = in_process(&InProcessConfig::default());
    let mut records = subscriber.subscribe();
    let shutdown = CancellationToken::new();
    let owner = tokio::spawn(run_partition(
        consumers.remove(0),
        store.clone(),
        Arc::new(publisher),
        PartitionConfig { cached_chars: 3_000, ..PartitionConfig::default() },
        shutdown.clone(),
    ));
    let docs: Vec<DocId> = (0..2).map(|i| DocId::parse(&format!("churn-{i}")).unwrap()).collect();
    let line = "y".repeat(100);
    for seq in 1..=40u64 {
        for doc in &docs {
            // Insert a hundred characters, then delete them: the text never passes 100.
            let op = if seq % 2 == 1 {
                Operation::from_patch(0, 0, 0, &line).unwrap()
            } else {
                Operation::from_patch(100, 0, 100, "").unwrap()
            };
            let sub = Submission {
                author: String::new(),
                delete_document: false,
                doc: doc.clone(),
                client: ClientId::parse("w").unwrap(),
                seq,
                base: seq - 1,
                op,
            };
            submitter.submit(sub).await.unwrap();
            let record = next_record(&mut records).await;
            assert!(matches!(&*record, SequencedRecord::Committed(e) if e.version == seq), "{record:?}");
        }
    }
    let loads = store.loads.load(Ordering::SeqCst);
    assert!(loads > 2, "2,000 characters of history each, yet both documents stayed cached ({loads} loads)");
    shutdown.cancel();
    owner.await.unwrap().unwrap();
}

/// Issue "unbounded memory": snapshot writes run beside the loop, but never more than one per
/// document and a few in all; a snapshot due while they are busy is skipped (and taken after a
/// later commit), not queued.
#[tokio::test]
async fn snapshot_writes_are_bounded_and_skipped_when_busy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Instrumented::new(store(&dir), false));
    let (submitter, mut consumers, publisher, subscriber) = in_process(&InProcessConfig::default());
    let mut records = subscriber.subscribe();
    let shutdown = CancellationToken::new();
    let owner = tokio::spawn(run_partition(
        consumers.remove(0),
        store.clone(),
        Arc::new(publisher),
        PartitionConfig { snapshot_every: 1, ..PartitionConfig::default() },
        shutdown.clone(),
    ));
    let docs: Vec<DocId> = (0..20).map(|i| DocId::parse(&format!("snapped-{i}")).unwrap()).collect();
    // The store's snapshot writes hang: every snapshot due meanwhile finds the writes busy.
    for seq in 1..=3 {
        for doc in &docs {
            submitter.submit(append(doc, seq)).await.unwrap();
            let record = next_record(&mut records).await;
            assert!(matches!(&*record, SequencedRecord::Committed(e) if e.version == seq), "{record:?}");
        }
    }
    tokio::task::yield_now().await;
    let (all, per_doc) = store.most_snapshot_writes();
    assert!(all <= 4, "{all} snapshot writes were in flight at once");
    assert!(per_doc <= 1, "{per_doc} snapshot writes of one document were in flight at once");
    store.snapshot_gate.add_permits(tokio::sync::Semaphore::MAX_PERMITS);
    for _ in 0..200 {
        if store.snapshot_writes_in_flight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.snapshot_writes_in_flight(), 0);
    // A document whose snapshot was skipped gets it after its next commit.
    let last = docs.last().unwrap();
    submitter.submit(append(last, 4)).await.unwrap();
    next_record(&mut records).await;
    let mut snapshot = None;
    for _ in 0..200 {
        snapshot = store.load_document(last).await.unwrap().snapshot;
        if snapshot.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(snapshot.expect("a snapshot after the writes were free again").version, 4);
    shutdown.cancel();
    owner.await.unwrap().unwrap();
}

/// An owner that stops while a late op is still reading its history leaves it to the next owner:
/// the stored offset stays at the late op (the ops decided after it are deduplicated when the next
/// owner consumes them again), so it is decided once, by someone, and never skipped.
#[tokio::test]
async fn an_owner_stopping_with_a_held_late_op_stores_the_offset_of_that_op() {
    let dir = tempfile::tempdir().unwrap();
    let mut instrumented = Instrumented::new(store(&dir), true);
    // Two pages of history, then the reads wait.
    instrumented.reads_allowed = tokio::sync::Semaphore::new(2);
    let store = Arc::new(instrumented);
    let (submitter, mut consumers, publisher, subscriber) = in_process(&InProcessConfig::default());
    let mut records = subscriber.subscribe();
    let shutdown = CancellationToken::new();
    let limits = Limits { history_window: 10, ..Limits::default() };
    let owner = tokio::spawn(run_partition(
        consumers.remove(0),
        store.clone(),
        Arc::new(publisher),
        PartitionConfig { limits, ..PartitionConfig::default() },
        shutdown.clone(),
    ));
    let busy = DocId::parse("busy").unwrap();
    for seq in 1..=300 {
        submitter.submit(append(&busy, seq)).await.unwrap();
    }
    for _ in 1..=300 {
        next_record(&mut records).await;
    }
    // Offsets 0..300 were the appends: the late op is offset 300, the other document's op 301.
    let late = submission(&busy, "late", 1, 60, Operation::from_patch(60, 0, 0, "y").unwrap());
    submitter.submit(late).await.unwrap();
    let other = DocId::parse("other").unwrap();
    submitter.submit(append(&other, 1)).await.unwrap();
    let record = next_record(&mut records).await;
    assert!(matches!(&*record, SequencedRecord::Committed(e) if e.doc == other), "{record:?}");
    shutdown.cancel();
    store.reads_allowed.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    tokio::time::timeout(Duration::from_secs(10), owner).await.expect("the owner stops").unwrap().unwrap();
    assert_eq!(store.latest_version(&busy).await.unwrap(), 300, "the late op was not decided");
    assert_eq!(store.latest_version(&other).await.unwrap(), 1);
    let claim = store.claim_partition(0).await.unwrap();
    assert_eq!(claim.next_offset, Some(300), "{claim:?}");
}

/// Late ops one after another on one document, with ops behind them: each waits its turn in
/// arrival order, each is decided once and right, and when more than a batch waits the owner reads
/// further pages in the same round so that what waits stays bounded.
#[tokio::test]
async fn late_ops_in_a_row_on_one_document_are_decided_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Instrumented::new(store(&dir), true));
    let (submitter, mut consumers, publisher, subscriber) = in_process(&InProcessConfig::default());
    let mut records = subscriber.subscribe();
    let shutdown = CancellationToken::new();
    let limits = Limits { history_window: 10, ..Limits::default() };
    let owner = tokio::spawn(run_partition(
        consumers.remove(0),
        store.clone(),
        Arc::new(publisher),
        PartitionConfig { limits, max_batch: 2, ..PartitionConfig::default() },
        shutdown.clone(),
    ));
    let busy = DocId::parse("busy").unwrap();
    for seq in 1..=100 {
        submitter.submit(append(&busy, seq)).await.unwrap();
    }
    for _ in 1..=100 {
        next_record(&mut records).await;
    }
    let mut expected = Vec::new();
    for i in 0..5 {
        let client = format!("late{i}");
        let late = submission(&busy, &client, 1, 50, Operation::from_patch(50, 0, 0, "y").unwrap());
        submitter.submit(late).await.unwrap();
        expected.push((client, 1));
        // Each late op is followed by an op of the writer, concurrent with everything after 100.
        let op = Operation::from_patch(100, 100, 0, "z").unwrap();
        submitter.submit(submission(&busy, "writer", 101 + i, 100, op)).await.unwrap();
        expected.push(("writer".to_owned(), 101 + i));
    }
    let mut seen = Vec::new();
    for version in 101..=110u64 {
        let record = next_record(&mut records).await;
        let SequencedRecord::Committed(e) = &*record else { panic!("unexpected {record:?}") };
        assert_eq!(e.version, version);
        seen.push((e.client.as_str().to_owned(), e.seq));
    }
    assert_eq!(seen, expected, "decided in arrival order");
    shutdown.cancel();
    owner.await.unwrap().unwrap();
    let reads = store.reads();
    assert!(reads.iter().all(|r| r.limit <= 10), "{reads:?}");
    let events = store.inner.read_events(&busy, 0, 110, 1000).await.unwrap();
    let mut text = ropey::Rope::new();
    for e in &events {
        e.op.apply_to_rope(&mut text).unwrap();
    }
    let text = text.to_string();
    assert_eq!(text.chars().filter(|&c| c == 'y').count(), 5, "{text}");
    assert_eq!(text.chars().filter(|&c| c == 'z').count(), 5, "{text}");
    assert!(text.starts_with("yyyyy"), "{text}");
}
