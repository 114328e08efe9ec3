//! The checks of deleting a document ([`CommitBatch::deletions`]): what is purged, the tombstone in
//! the outbox, the id used again, and fencing.

use std::collections::BTreeMap;

use tandem_protocol::records::{DocumentDeleted, Outcome, SequencedRecord};
use tandem_protocol::{ClientId, DocId};

use super::{
    all_events, batch, claim, client, committed, event, expect_conflict, history, outbox, rejection,
    unpublished, Namespace,
};
use crate::{Checkpoint, CommitBatch, EventStore, PartitionId, Snapshot, StoreError, StoredDocument};

fn deleted(doc: &DocId, last_version: u64) -> DocumentDeleted {
    DocumentDeleted { doc: doc.clone(), last_version, author: "admin@example.com".to_owned() }
}

fn deleting(partition: PartitionId, epoch: u64, deletions: Vec<DocumentDeleted>) -> CommitBatch {
    CommitBatch { deletions, ..batch(partition, epoch, vec![], vec![]) }
}

fn snapshot(doc: &DocId, version: u64) -> Snapshot {
    Snapshot { doc: doc.clone(), version, text: "x".repeat(version as usize), clients: BTreeMap::new() }
}

fn checkpoint(doc: &DocId, name: &str, version: u64) -> Checkpoint {
    Checkpoint {
        doc: doc.clone(),
        name: name.to_owned(),
        version,
        author: "ann".to_owned(),
        created_at_ms: 0,
    }
}

/// Everything the store holds of `doc` is gone, as for a document never written.
async fn assert_gone(store: &dyn EventStore, doc: &DocId) {
    assert_eq!(store.latest_version(doc).await.unwrap(), 0, "{doc} has versions");
    assert_eq!(all_events(store, doc).await, [], "{doc} has events");
    assert_eq!(store.read_history(doc, 0, u64::MAX, 100).await.unwrap(), [], "{doc} has history");
    let empty = StoredDocument { snapshot: None, events: vec![], rejections: vec![] };
    assert_eq!(store.load_document(doc).await.unwrap(), empty, "{doc} loads");
    assert_eq!(store.snapshot_at_or_before(doc, u64::MAX).await.unwrap(), None, "{doc} has a snapshot");
    assert_eq!(store.list_checkpoints(doc).await.unwrap(), [], "{doc} has checkpoints");
}

/// A deletion purges the document's events, rejections (so the outcomes of its clients' seqs),
/// snapshots and checkpoints, and nothing of any other document, even one whose id extends its id.
pub async fn deletion_purges_the_document(store: &dyn EventStore, ns: &Namespace) {
    let (doc, kept, longer) = (ns.doc("deleted"), ns.doc("deleted-kept"), ns.doc("deleted/longer"));
    let (ann, bob) = (client("ann"), client("bob"));
    let p = ns.partition(45);
    let epoch = claim(store, p).await;
    let mut events = history(&doc, &ann, 4);
    events.extend(history(&kept, &ann, 2));
    events.extend(history(&longer, &ann, 1));
    let refused = rejection(&doc, &bob, 1, 2);
    store.commit(&batch(p, epoch, events, vec![refused, rejection(&kept, &bob, 1, 2)])).await.unwrap();
    for (d, v) in [(&doc, 2), (&doc, 4), (&kept, 2), (&longer, 1)] {
        store.write_snapshot(&snapshot(d, v)).await.unwrap();
        store.create_checkpoint(&checkpoint(d, &format!("v{v}"), v)).await.unwrap();
    }
    let before = |d: &DocId| {
        let d = d.clone();
        async move {
            (
                all_events(store, &d).await,
                store.load_document(&d).await.unwrap(),
                store.list_checkpoints(&d).await.unwrap(),
            )
        }
    };
    let (kept_before, longer_before) = (before(&kept).await, before(&longer).await);

    store.commit(&deleting(p, epoch, vec![deleted(&doc, 4)])).await.unwrap();
    assert_gone(store, &doc).await;
    assert_eq!(store.find_outcome(&doc, &ann, 1).await.unwrap(), None, "a committed seq's outcome stayed");
    assert_eq!(store.find_outcome(&doc, &bob, 1).await.unwrap(), None, "a rejected seq's outcome stayed");
    assert_eq!(store.last_outcome(&doc, &ann).await.unwrap(), None);
    assert_eq!(store.last_outcome(&doc, &bob).await.unwrap(), None);
    assert_eq!(before(&kept).await, kept_before, "another document lost something");
    assert_eq!(before(&longer).await, longer_before, "a document whose id extends it lost something");
    assert!(matches!(store.find_outcome(&kept, &bob, 1).await.unwrap(), Some(Outcome::Rejected { .. })));
}

/// A deletion batch takes a commit number like any batch with records, and the outbox returns the
/// tombstone (`SequencedRecord::Deleted`) under it, in document order and after everything else
/// of its document; the deleted document's records, of that commit and of unpublished earlier
/// ones, are purged (a commit left with nothing is not returned). A document without events gets
/// a tombstone too (last version 0), and one deleted twice in a batch gets two, in order.
pub async fn deletion_publishes_a_tombstone_in_order(store: &dyn EventStore, ns: &Namespace) {
    let (a, b, m, n, z) =
        (ns.doc("order-a"), ns.doc("order-b"), ns.doc("order-m"), ns.doc("order-n"), ns.doc("order-z"));
    let (x, y) = (client("xia"), client("yan"));
    let p = ns.partition(46);
    let epoch = claim(store, p).await;
    let first =
        store.commit(&batch(p, epoch, history(&m, &x, 3), vec![rejection(&m, &y, 1, 3)])).await.unwrap();

    let (a1, m4, z1) = (event(&a, 1, &x, 1), event(&m, 4, &x, 4), event(&z, 1, &x, 1));
    let mixed = CommitBatch {
        deletions: vec![deleted(&m, 4)],
        ..batch(p, epoch, vec![z1.clone(), m4, a1.clone()], vec![rejection(&m, &y, 2, 4)])
    };
    let second = store.commit(&mixed).await.unwrap();
    assert_eq!(second, first + 1, "a batch with a deletion takes the next number");
    // The store keeps the last versions the batch gives (the sequencer's): `b` deleted at 1, then
    // found empty by its second deletion.
    let only_deletions = deleting(p, epoch, vec![deleted(&n, 0), deleted(&b, 1), deleted(&b, 0)]);
    let third = store.commit(&only_deletions).await.unwrap();
    assert_eq!(third, second + 1, "a batch of deletions only takes a number");

    let tombstone = |d: &DocId, v: u64| SequencedRecord::Deleted(deleted(d, v));
    assert_eq!(
        outbox(store, p, 0).await,
        [
            unpublished(second, vec![committed(&a1), tombstone(&m, 4), committed(&z1)]),
            unpublished(third, vec![tombstone(&b, 1), tombstone(&b, 0), tombstone(&n, 0)]),
        ],
        "commit {first} held only records of the deleted document"
    );
    assert_eq!(store.unpublished(p, 0, 1).await.unwrap().len(), 1, "pages count tombstones");
    assert_eq!(store.claim_partition(p).await.unwrap().last_commit, third);
    assert_gone(store, &m).await;
    assert_eq!(all_events(store, &z).await, [z1]);
}

/// After a deletion the id starts again from version 1, with its old (client, seq)s, checkpoint
/// names and snapshot versions free. Events committed in the same batch as their document's
/// deletion are purged with it.
pub async fn deleted_document_starts_again_from_version_1(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("reborn");
    let ann = client("ann");
    let p = ns.partition(47);
    let epoch = claim(store, p).await;
    store.commit(&batch(p, epoch, history(&doc, &ann, 3), vec![])).await.unwrap();
    store.write_snapshot(&snapshot(&doc, 3)).await.unwrap();
    store.create_checkpoint(&checkpoint(&doc, "release", 3)).await.unwrap();
    store.commit(&deleting(p, epoch, vec![deleted(&doc, 3)])).await.unwrap();

    let again = history(&doc, &ann, 1);
    store.commit(&batch(p, epoch, again.clone(), vec![])).await.unwrap();
    assert_eq!(store.latest_version(&doc).await.unwrap(), 1);
    assert_eq!(all_events(store, &doc).await, again);
    assert_eq!(store.find_outcome(&doc, &ann, 1).await.unwrap(), Some(Outcome::Committed { version: 1 }));
    assert_eq!(store.find_outcome(&doc, &ann, 2).await.unwrap(), None);
    let release = store.create_checkpoint(&checkpoint(&doc, "release", 1)).await.unwrap();
    assert_eq!(release.version, 1, "the name was free again");
    store.write_snapshot(&snapshot(&doc, 1)).await.unwrap();
    assert_eq!(store.load_document(&doc).await.unwrap().snapshot, Some(snapshot(&doc, 1)));

    // Written and deleted in one batch: the deletion comes after, and purges the new events too.
    let twice = CommitBatch {
        deletions: vec![deleted(&doc, 2)],
        ..batch(p, epoch, vec![event(&doc, 2, &ann, 2)], vec![])
    };
    store.commit(&twice).await.unwrap();
    assert_gone(store, &doc).await;
    store.commit(&batch(p, epoch, vec![event(&doc, 1, &ann, 2)], vec![])).await.unwrap();
    assert_eq!(store.latest_version(&doc).await.unwrap(), 1);
}

/// A batch with deletions is fenced like any other (a stale owner purges nothing and stores no
/// tombstone), and a retried one is recognised by its commit number (one tombstone).
pub async fn deletion_is_fenced_and_retried_by_its_number(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("deleted-fenced");
    let ann = client("ann");
    let p = ns.partition(48);
    let old = claim(store, p).await;
    let events = history(&doc, &ann, 2);
    let first = store.commit(&batch(p, old, events.clone(), vec![])).await.unwrap();
    let newer = store.claim_partition(p).await.unwrap();

    match store.commit(&deleting(p, old, vec![deleted(&doc, 2)])).await {
        Err(StoreError::Fenced { partition, epoch, current }) => {
            assert_eq!((partition, epoch, current), (p, old, newer.epoch))
        }
        other => panic!("a stale owner's deletion must be fenced, got {other:?}"),
    }
    assert_eq!(all_events(store, &doc).await, events, "a fenced deletion purged events");
    assert_eq!(outbox(store, p, 0).await, [unpublished(first, events.iter().map(committed).collect())]);

    let mut deletion = deleting(p, newer.epoch, vec![deleted(&doc, 2)]);
    deletion.expected_commit = Some(newer.last_commit + 1);
    let number = store.commit(&deletion).await.unwrap();
    assert_eq!(number, newer.last_commit + 1);
    assert_eq!(store.commit(&deletion).await.unwrap(), number, "a retry is answered with its number");
    assert_eq!(
        outbox(store, p, 0).await,
        [unpublished(number, vec![SequencedRecord::Deleted(deleted(&doc, 2))])],
        "one tombstone, and the purged commit gone"
    );
    assert_gone(store, &doc).await;
}

/// A snapshot or a checkpoint of a version the deleted document had, arriving after the
/// deletion, is refused: it would otherwise be read as part of the id's next document.
pub async fn a_late_snapshot_or_checkpoint_cannot_outlive_a_deletion(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("deleted-late");
    let p = ns.partition(49);
    let epoch = claim(store, p).await;
    store.commit(&batch(p, epoch, history(&doc, &client("ann"), 5), vec![])).await.unwrap();
    store.commit(&deleting(p, epoch, vec![deleted(&doc, 5)])).await.unwrap();
    expect_conflict(store.write_snapshot(&snapshot(&doc, 5)).await, "latest version 0");
    expect_conflict(store.create_checkpoint(&checkpoint(&doc, "late", 5)).await, "latest version is 0");
    assert_gone(store, &doc).await;
}

/// A document written before the history migration (version 1 by `client`, and a rejection of its
/// seq 2) is named and deleted like a new one: its checkpoint, events and rejection go, and the
/// tombstone is published. For the migration tests of both stores; `partition` is unclaimed.
pub async fn migrated_document_checkpoints_and_deletes(
    store: &dyn EventStore,
    old: &DocId,
    client: &ClientId,
    partition: PartitionId,
) {
    let named = Checkpoint {
        doc: old.clone(),
        name: "first".into(),
        version: 1,
        author: "ann".into(),
        created_at_ms: 0,
    };
    store.create_checkpoint(&named).await.unwrap();
    let epoch = store.claim_partition(partition).await.unwrap().epoch;
    let deletion = DocumentDeleted { doc: old.clone(), last_version: 1, author: "ann".into() };
    let batch = CommitBatch { partition, epoch, deletions: vec![deletion.clone()], ..CommitBatch::default() };
    assert_eq!(store.commit(&batch).await.unwrap(), 1);
    assert_eq!(store.latest_version(old).await.unwrap(), 0);
    assert_eq!(store.list_checkpoints(old).await.unwrap(), []);
    assert_eq!(store.find_outcome(old, client, 2).await.unwrap(), None, "the old rejection is purged");
    let outbox = store.unpublished(partition, 0, 100).await.unwrap();
    assert_eq!(outbox[0].records, [SequencedRecord::Deleted(deletion)]);
}
