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
use tandem_store::{
    CommitBatch, EventStore, PartitionClaim, Snapshot, StoreError, StoredDocument, UnpublishedCommit,
};
use tokio_util::sync::CancellationToken;

fn append(doc: &DocId, seq: u64) -> Submission {
    // Each op appends one character to a text of seq - 1 characters.
    let op = Operation::from_patch(seq as usize - 1, seq as usize - 1, 0, "x").unwrap();
    Submission { doc: doc.clone(), client: ClientId::parse("writer").unwrap(), seq, base: seq - 1, op }
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

/// A store whose first `claims` claims, `reads` history reads and `outcomes` outcome lookups fail as
/// unavailable (the database restarting), and which is otherwise the real embedded store.
struct FailsFirst {
    inner: Arc<dyn EventStore>,
    claims: AtomicU32,
    reads: AtomicU32,
    outcomes: AtomicU32,
}

impl FailsFirst {
    fn new(inner: Arc<dyn EventStore>, claims: u32, reads: u32, outcomes: u32) -> Self {
        Self {
            inner,
            claims: AtomicU32::new(claims),
            reads: AtomicU32::new(reads),
            outcomes: AtomicU32::new(outcomes),
        }
    }
}

fn unavailable() -> StoreError {
    StoreError::Unavailable("connection closed".into())
}

#[async_trait]
impl EventStore for FailsFirst {
    async fn claim_partition(&self, partition: PartitionId) -> Result<PartitionClaim, StoreError> {
        if fails(&self.claims) {
            return Err(unavailable());
        }
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
        if fails(&self.reads) {
            return Err(unavailable());
        }
        self.inner.read_events(doc, after, up_to, limit).await
    }
    async fn load_document(&self, doc: &DocId) -> Result<StoredDocument, StoreError> {
        self.inner.load_document(doc).await
    }
    async fn write_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        self.inner.write_snapshot(snapshot).await
    }
    async fn find_outcome(
        &self,
        doc: &DocId,
        client: &ClientId,
        seq: u64,
    ) -> Result<Option<Outcome>, StoreError> {
        if fails(&self.outcomes) {
            return Err(unavailable());
        }
        self.inner.find_outcome(doc, client, seq).await
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
    assert_eq!(store.claims.load(Ordering::SeqCst), 0, "the failing claims were tried");
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
        doc: doc.clone(),
        client: ClientId::parse("late-writer").unwrap(),
        seq: 1,
        base: 0,
        op: Operation::from_patch(0, 0, 0, "y").unwrap(),
    };
    submitter.submit(late).await.unwrap();
    let record = next_record(&mut records).await;
    assert!(matches!(&*record, SequencedRecord::Committed(e) if e.version == 4), "{record:?}");
    assert_eq!(store.reads.load(Ordering::SeqCst), 0, "the failing reads were tried");
    // The first op again: its outcome is no longer in memory.
    submitter.submit(append(&doc, 1)).await.unwrap();
    let record = next_record(&mut records).await;
    assert!(matches!(&*record, SequencedRecord::Reacknowledged { seq: 1, version: 1, .. }), "{record:?}");
    assert_eq!(store.outcomes.load(Ordering::SeqCst), 0, "the failing lookups were tried");
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
