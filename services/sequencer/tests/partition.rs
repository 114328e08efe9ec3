//! The partition loop over the in-process bus and the real embedded store: ops are committed before
//! they are published, snapshots are written every N versions, and an owner whose partition was
//! claimed by another stops without writing.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU32, Ordering};
use tandem_bus::in_process::{in_process, InProcessConfig};
use tandem_bus::{Delivery, EventSubscriber, OpSubmitter};
use tandem_ot::Operation;

use async_trait::async_trait;
use tandem_bus::PartitionId;
use tandem_protocol::records::{CommittedEvent, Outcome, SequencedRecord, Submission};
use tandem_protocol::{ClientId, DocId};
use tandem_sequencer::{run_partition, PartitionConfig, PartitionError};
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
        let Some(Delivery::Record(record)) = records.next().await else { panic!("record stream ended") };
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
    async fn publish(&self, _: Vec<SequencedRecord>) -> Result<(), tandem_bus::BusError> {
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
        let Some(Delivery::Record(record)) = delivery else { panic!("record stream ended") };
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
            let Some(Delivery::Record(record)) = records.next().await else { panic!("record stream ended") };
            assert!(matches!(&*record, SequencedRecord::Committed(e) if e.version == seq), "{record:?}");
        }
    }
    for doc in &docs {
        assert_eq!(store.latest_version(doc).await.unwrap(), 6);
    }
    shutdown.cancel();
    owner.await.unwrap().unwrap();
}

/// A store whose first `failures` claims fail as unavailable (the database restarting), and which is
/// otherwise the real embedded store.
struct ClaimFailsFirst {
    inner: Arc<dyn EventStore>,
    failures: AtomicU32,
}

#[async_trait]
impl EventStore for ClaimFailsFirst {
    async fn claim_partition(&self, partition: PartitionId) -> Result<PartitionClaim, StoreError> {
        if self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(StoreError::Unavailable("connection closed".into()));
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
        self.inner.find_outcome(doc, client, seq).await
    }
}

/// Found by the Postgres-crash cluster test: the database went down during the claim, and the
/// partition loop ended (taking the sequencer with it) instead of waiting for the database.
#[tokio::test]
async fn a_store_outage_during_the_claim_is_waited_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ClaimFailsFirst { inner: store(&dir), failures: AtomicU32::new(3) });
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
    let Some(Delivery::Record(record)) = delivery else { panic!("record stream ended") };
    assert!(matches!(&*record, SequencedRecord::Committed(event) if event.version == 1), "{record:?}");
    assert_eq!(store.failures.load(Ordering::SeqCst), 0, "the failing claims were tried");
    shutdown.cancel();
    owner.await.unwrap().unwrap();
}

/// A publisher whose first publish fails (the broker hiccups) and which delivers every later one.
struct FailsFirstPublish {
    inner: Arc<dyn tandem_bus::EventPublisher>,
    failures: AtomicU32,
}

#[async_trait]
impl tandem_bus::EventPublisher for FailsFirstPublish {
    async fn publish(&self, records: Vec<SequencedRecord>) -> Result<(), tandem_bus::BusError> {
        if self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(tandem_bus::BusError::Unavailable("the broker hiccupped".into()));
        }
        self.inner.publish(records).await
    }
}

/// A later publish that succeeds must not mark an earlier, failed one as published: the next owner
/// republishes both commits.
#[tokio::test]
async fn a_failed_publish_stays_unpublished_after_later_ones_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let (submitter, mut consumers, publisher, subscriber) = in_process(&InProcessConfig::default());
    let mut records = subscriber.subscribe();
    let publisher = FailsFirstPublish { inner: Arc::new(publisher), failures: AtomicU32::new(1) };
    let shutdown = CancellationToken::new();
    let owner = tokio::spawn(run_partition(
        consumers.remove(0),
        store.clone(),
        Arc::new(publisher),
        PartitionConfig::default(),
        shutdown.clone(),
    ));
    let doc = DocId::parse("hiccup").unwrap();
    submitter.submit(append(&doc, 1)).await.unwrap();
    for _ in 0..100 {
        if store.latest_version(&doc).await.unwrap() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.latest_version(&doc).await.unwrap(), 1, "version 1 is committed");
    // Version 1's publish failed; version 2's goes through.
    submitter.submit(append(&doc, 2)).await.unwrap();
    let Some(Delivery::Record(record)) = records.next().await else { panic!("record stream ended") };
    assert!(matches!(&*record, SequencedRecord::Committed(e) if e.version == 2), "{record:?}");
    // Past the idle mark, so an owner that raised its mark would have written it by now.
    tokio::time::sleep(Duration::from_millis(700)).await;
    shutdown.cancel();
    owner.await.unwrap().unwrap();

    let claim = store.claim_partition(0).await.unwrap();
    assert_eq!((claim.last_commit, claim.published_through), (2, 0));
    let unpublished: Vec<u64> =
        store.unpublished(0, 0, 100).await.unwrap().iter().map(|c| c.commit).collect();
    assert_eq!(unpublished, [1, 2], "the next owner republishes both");
}
