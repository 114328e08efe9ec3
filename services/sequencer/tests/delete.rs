//! Deleting a document through its partition owner (issue 12, DESIGN.md decision 6), over the
//! in-process bus and the real embedded store: the tombstone is committed and published in the
//! document's order, the store keeps only what came after it, ops of the document after the delete
//! go in a later commit, the authors of ops travel with their events, a delete waits for a late op
//! that arrived before it and for a snapshot write of its document in flight.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tandem_bus::in_process::{in_process, InProcessConfig};
use tandem_bus::{Delivery, EventStream, EventSubscriber, OpSubmitter};
use tandem_ot::Operation;
use tandem_protocol::records::{CommittedEvent, DocumentDeleted, SequencedRecord, Submission};
use tandem_protocol::{ClientId, DocId, ErrorCode};
use tandem_sequencer::{run_partition, Limits, PartitionConfig};
use tandem_store::embedded::{SqliteOptions, SqliteStore};
use tandem_store::intercept::{Call, Intercept, Intercepted};
use tandem_store::{CommitBatch, EventStore, StoreError};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

fn op(doc: &DocId, author: &str, client: &str, seq: u64, base: u64, op: Operation) -> Submission {
    Submission {
        author: author.to_owned(),
        delete_document: false,
        doc: doc.clone(),
        client: ClientId::parse(client).unwrap(),
        seq,
        base,
        op,
    }
}

/// Appends one character to a text of `seq - 1` characters, as `writer` (author "ann").
fn append(doc: &DocId, seq: u64) -> Submission {
    let len = seq as usize - 1;
    op(doc, "ann", "writer", seq, seq - 1, Operation::from_patch(len, len, 0, "x").unwrap())
}

/// A delete as the gateway sends it: no op, seq and base 0.
fn delete(doc: &DocId, author: &str) -> Submission {
    Submission { delete_document: true, ..op(doc, author, "admin", 0, 0, Operation::new()) }
}

fn tombstone(doc: &DocId, last_version: u64, author: &str) -> SequencedRecord {
    SequencedRecord::Deleted(DocumentDeleted { doc: doc.clone(), last_version, author: author.to_owned() })
}

/// Hooks on the real embedded store: every commit recorded, snapshot writes waiting for `gate`.
struct Recorded {
    commits: Mutex<Vec<CommitBatch>>,
    gate: Semaphore,
}

impl Recorded {
    fn open(dir: &tempfile::TempDir, snapshots_open: bool) -> Arc<Intercepted<Self>> {
        let inner = SqliteStore::open(dir.path(), SqliteOptions { synchronous_full: false }).unwrap();
        let permits = if snapshots_open { Semaphore::MAX_PERMITS } else { 0 };
        let hooks = Self { commits: Mutex::default(), gate: Semaphore::new(permits) };
        Arc::new(Intercepted::new(Arc::new(inner), hooks))
    }

    fn commits(&self) -> Vec<CommitBatch> {
        self.commits.lock().unwrap().clone()
    }

    /// The committed batch that carried the deletion of `doc`.
    fn deletion_commit(&self, doc: &DocId) -> CommitBatch {
        let commits = self.commits();
        let found = commits.iter().find(|c| c.deletions.iter().any(|d| &d.doc == doc));
        found.expect("a commit deleted the document").clone()
    }
}

#[async_trait]
impl Intercept for Recorded {
    async fn before(&self, call: Call<'_>) -> Result<(), StoreError> {
        if let Call::WriteSnapshot(_) = call {
            drop(self.gate.acquire().await.expect("the gate is never closed"));
        }
        Ok(())
    }

    fn after(&self, call: Call<'_>, outcome: Result<(), &StoreError>) {
        if let (Call::Commit(batch), Ok(())) = (call, outcome) {
            self.commits.lock().unwrap().push(batch.clone());
        }
    }
}

/// A partition owner over a fresh in-process bus: its submitter, its record stream, its stop.
struct Owner {
    submitter: tandem_bus::in_process::InProcessSubmitter,
    records: Box<dyn EventStream>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), tandem_sequencer::PartitionError>>,
}

impl Owner {
    fn start(store: Arc<Intercepted<Recorded>>, config: PartitionConfig) -> Self {
        let (submitter, mut consumers, publisher, subscriber) = in_process(&InProcessConfig::default());
        let records = subscriber.subscribe();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_partition(
            consumers.remove(0),
            store,
            Arc::new(publisher),
            config,
            shutdown.clone(),
        ));
        Self { submitter, records, shutdown, task }
    }

    /// Submits them all before the owner runs again (one thread): they reach it as one batch.
    async fn submit(&self, submissions: impl IntoIterator<Item = Submission>) {
        for submission in submissions {
            self.submitter.submit(submission).await.unwrap();
        }
    }

    async fn next(&mut self) -> SequencedRecord {
        let delivery = tokio::time::timeout(Duration::from_secs(10), self.records.next())
            .await
            .expect("a record in time");
        let Some(Delivery::Record { record, .. }) = delivery else { panic!("record stream ended") };
        (*record).clone()
    }

    async fn next_n(&mut self, n: usize) -> Vec<SequencedRecord> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.next().await);
        }
        out
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn committed(record: &SequencedRecord) -> &CommittedEvent {
    match record {
        SequencedRecord::Committed(event) => event,
        other => panic!("expected a commit, got {other:?}"),
    }
}

/// Ops, a delete and new ops in one batch: the ops before the delete commit with it, the tombstone
/// follows them on the stream, the ops after it start again at version 1 in a later commit, the store
/// keeps only those, and ops from before the delete resubmitted later (even by a new owner) are
/// refused, never re-acknowledged with a purged version.
#[tokio::test]
async fn a_delete_purges_the_document_and_it_starts_over_at_version_0() {
    let dir = tempfile::tempdir().unwrap();
    let store = Recorded::open(&dir, true);
    let config = PartitionConfig { snapshot_every: 2, ..PartitionConfig::default() };
    let mut owner = Owner::start(store.clone(), config.clone());
    let doc = DocId::parse("doomed").unwrap();
    owner.submit((1..=3).map(|seq| append(&doc, seq))).await;
    for (version, record) in (1..).zip(owner.next_n(3).await) {
        let event = committed(&record);
        assert_eq!(
            (event.version, event.author.as_str()),
            (version, "ann"),
            "the op's author is the event's"
        );
    }

    let fresh = op(&doc, "bob", "fresh", 1, 0, Operation::from_patch(0, 0, 0, "new").unwrap());
    // Seq 2 of the writer was committed as version 2 before the delete.
    let old = op(&doc, "ann", "writer", 2, 1, Operation::from_patch(1, 1, 0, "x").unwrap());
    owner.submit([append(&doc, 4), delete(&doc, "root"), fresh, old]).await;
    let records = owner.next_n(4).await;
    assert_eq!(committed(&records[0]).version, 4);
    assert_eq!(records[1], tombstone(&doc, 4, "root"), "the tombstone follows the document's last version");
    let restarted = committed(&records[2]);
    assert_eq!(
        (restarted.version, restarted.client.as_str(), restarted.author.as_str()),
        (1, "fresh", "bob")
    );
    let SequencedRecord::Rejected(refused) = &records[3] else { panic!("not refused: {:?}", records[3]) };
    assert_eq!((refused.client.as_str(), refused.seq, refused.code), ("writer", 2, ErrorCode::InvalidOp));
    assert!(refused.message.contains("skips ahead (expected 1)"), "{}", refused.message);

    // What came before the delete was committed with it; what came after went in a later commit.
    let deleting = store.hooks().deletion_commit(&doc);
    let versions: Vec<u64> = deleting.events.iter().filter(|e| e.doc == doc).map(|e| e.version).collect();
    assert_eq!(versions, [4], "the deleting commit holds the document's events before the delete only");
    assert!(deleting.next_offset > Some(4), "the delete (offset 4) is never consumed again: {deleting:?}");

    // The store has only the new history, with no snapshot of the old one.
    let stored = store.load_document(&doc).await.unwrap();
    assert_eq!(stored.snapshot, None, "a snapshot of the deleted document survived");
    let kept: Vec<(u64, &str)> = stored.events.iter().map(|e| (e.version, e.client.as_str())).collect();
    assert_eq!(kept, [(1, "fresh")], "the store keeps only what came after the delete");
    assert_eq!(stored.events[0].author, "bob");
    let writer = ClientId::parse("writer").unwrap();
    assert_eq!(store.find_outcome(&doc, &writer, 1).await.unwrap(), None, "the old outcomes are purged");
    owner.stop().await;

    // A new owner loads the document from the store: the writer's old seqs are not known either.
    let mut owner = Owner::start(store.clone(), config);
    owner.submit([append(&doc, 4), append(&doc, 3)]).await;
    for record in owner.next_n(2).await {
        let SequencedRecord::Rejected(refused) = &record else { panic!("not refused: {record:?}") };
        assert_eq!(refused.code, ErrorCode::InvalidOp, "{refused:?}");
        assert_eq!(refused.at_version, 1);
    }
    owner.stop().await;
    assert_eq!(store.latest_version(&doc).await.unwrap(), 1);
}

/// A delete of a document that was never written still commits, and publishes version 0.
#[tokio::test]
async fn a_delete_of_a_document_never_written_publishes_version_0() {
    let dir = tempfile::tempdir().unwrap();
    let store = Recorded::open(&dir, true);
    let mut owner = Owner::start(store.clone(), PartitionConfig::default());
    let doc = DocId::parse("never").unwrap();
    owner.submit([delete(&doc, "root"), delete(&doc, "root")]).await;
    // Two deletes of one document in a batch: the second goes in the next commit.
    assert_eq!(owner.next_n(2).await, [tombstone(&doc, 0, "root"), tombstone(&doc, 0, "root")]);
    let deleting: Vec<usize> = store.hooks().commits().iter().map(|c| c.deletions.len()).collect();
    assert_eq!(deleting, [1, 1], "{deleting:?}");
    owner.stop().await;
}

/// A delete waits for a late op that arrived before it: until that op is decided, the stored offset
/// stays at it and a next owner would consume the delete again, and a delete replayed after new ops
/// of its document would purge them. Meanwhile the document's later ops wait behind the delete.
#[tokio::test]
async fn a_delete_waits_for_a_late_op_that_arrived_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Recorded::open(&dir, true);
    let limits = Limits { history_window: 10, ..Limits::default() };
    let mut owner = Owner::start(store.clone(), PartitionConfig { limits, ..PartitionConfig::default() });
    let busy = DocId::parse("busy").unwrap();
    let victim = DocId::parse("victim").unwrap();
    // Offsets 0 to 299: the busy document; 300 to 302: the victim.
    owner.submit((1..=300).map(|seq| append(&busy, seq))).await;
    owner.submit((1..=3).map(|seq| append(&victim, seq))).await;
    owner.next_n(303).await;

    // Offset 303: an op based 290 versions back (29 pages of history, one per round); 304: the
    // delete; 305: the victim's next op, on the new document.
    let late = op(&busy, "cat", "late", 1, 10, Operation::from_patch(10, 0, 0, "y").unwrap());
    let after = op(&victim, "bob", "fresh", 1, 0, Operation::from_patch(0, 0, 0, "new").unwrap());
    owner.submit([late, delete(&victim, "root"), after]).await;
    let records = owner.next_n(3).await;
    let late = committed(&records[0]);
    assert_eq!((late.doc.as_str(), late.version, late.author.as_str()), ("busy", 301, "cat"), "{records:?}");
    assert_eq!(records[1], tombstone(&victim, 3, "root"));
    assert_eq!((committed(&records[2]).doc.as_str(), committed(&records[2]).version), ("victim", 1));
    for commit in store.hooks().commits() {
        if !commit.deletions.is_empty() {
            assert!(
                commit.next_offset > Some(304),
                "a delete committed with an offset before it: {commit:?}"
            );
        }
    }
    owner.stop().await;
}

/// A snapshot of the document being written when its delete comes: the delete waits for it, or the
/// snapshot could land after the purge and bring the deleted text back at the next load.
#[tokio::test]
async fn a_delete_waits_for_a_snapshot_write_of_its_document() {
    let dir = tempfile::tempdir().unwrap();
    let store = Recorded::open(&dir, false);
    let config = PartitionConfig { snapshot_every: 2, ..PartitionConfig::default() };
    let mut owner = Owner::start(store.clone(), config);
    let doc = DocId::parse("snapped").unwrap();
    owner.submit((1..=2).map(|seq| append(&doc, seq))).await;
    owner.next_n(2).await;
    // The snapshot of version 2 is on its way, held at the gate.
    owner.submit([delete(&doc, "root")]).await;
    let early = tokio::time::timeout(Duration::from_millis(300), owner.next()).await;
    assert!(early.is_err(), "the delete did not wait for the snapshot write: {early:?}");
    store.hooks().gate.add_permits(Semaphore::MAX_PERMITS / 2);
    assert_eq!(owner.next().await, tombstone(&doc, 2, "root"));
    let stored = store.load_document(&doc).await.unwrap();
    assert_eq!((stored.snapshot, stored.events.len()), (None, 0), "the deleted document came back");
    owner.stop().await;
}

/// A publisher that loses everything: the commit happened, the records never reached anyone.
struct LosingPublisher;

#[async_trait]
impl tandem_bus::EventPublisher for LosingPublisher {
    async fn publish(&self, _: Vec<tandem_bus::Published>) -> Result<(), tandem_bus::BusError> {
        Err(tandem_bus::BusError::Unavailable("the broker is gone".into()))
    }
}

/// The tombstone goes through the outbox like every record: committed but never published, it is
/// republished by the next owner. (The events its commit purged are gone from the outbox with the
/// rest of the document: their authors learn of the delete instead of an ack.)
#[tokio::test]
async fn the_next_owner_republishes_an_unpublished_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Recorded::open(&dir, true);
    let doc = DocId::parse("outboxed").unwrap();
    let (submitter, mut consumers, _, _) = in_process(&InProcessConfig::default());
    let shutdown = CancellationToken::new();
    let config = PartitionConfig::default();
    let first = tokio::spawn(run_partition(
        consumers.remove(0),
        store.clone(),
        Arc::new(LosingPublisher),
        config,
        shutdown.clone(),
    ));
    for submission in [append(&doc, 1), append(&doc, 2), delete(&doc, "root")] {
        submitter.submit(submission).await.unwrap();
    }
    for _ in 0..500 {
        if store.hooks().commits().iter().any(|c| !c.deletions.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    first.await.unwrap().unwrap();
    let claim = store.claim_partition(0).await.unwrap();
    let unpublished = store.unpublished(0, claim.published_through, 100).await.unwrap();
    let unpublished: Vec<SequencedRecord> = unpublished.into_iter().flat_map(|c| c.records).collect();
    assert_eq!(unpublished.last(), Some(&tombstone(&doc, 2, "root")), "{unpublished:?}");

    let mut owner = Owner::start(store.clone(), PartitionConfig::default());
    let republished = owner.next_n(unpublished.len()).await;
    assert_eq!(republished, unpublished, "republished in the outbox's order");
    owner.stop().await;
}
