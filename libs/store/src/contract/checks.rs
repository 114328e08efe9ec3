//! The checks of the contract suite, one function per promise of [`EventStore`]. Each takes the
//! store and the run's [`Namespace`], and panics (with a message naming what broke) on failure.

use std::collections::BTreeMap;

use tandem_ot::Operation;
use tandem_protocol::records::{CommittedEvent, Outcome, Rejection};
use tandem_protocol::{DocId, ErrorCode};

use super::{all_events, batch, claim, client, event, expect_conflict, history, rejection, Namespace};
use crate::{ClientRecord, CommitBatch, EventStore, Snapshot, StoreError, StoredDocument};

/// A document never written is at version 0 with nothing stored.
pub async fn empty_document(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("empty");
    assert_eq!(store.latest_version(&doc).await.unwrap(), 0);
    assert_eq!(all_events(store, &doc).await, []);
    let loaded = store.load_document(&doc).await.unwrap();
    assert_eq!(loaded, StoredDocument { snapshot: None, events: vec![], rejections: vec![] });
    assert_eq!(store.find_outcome(&doc, &client("nobody"), 1).await.unwrap(), None);
}

/// Committed events read back exactly, in version order, honouring `after`, `up_to` and `limit`.
pub async fn commit_and_read_back(store: &dyn EventStore, ns: &Namespace) {
    let (doc, other) = (ns.doc("read"), ns.doc("read/other"));
    let p = ns.partition(0);
    let epoch = claim(store, p).await;
    let events = history(&doc, &client("alice"), 7);
    store.commit(&batch(p, epoch, events[..3].to_vec(), vec![])).await.unwrap();
    store.commit(&batch(p, epoch, events[3..].to_vec(), vec![])).await.unwrap();

    assert_eq!(store.latest_version(&doc).await.unwrap(), 7);
    assert_eq!(all_events(store, &doc).await, events);
    assert_eq!(store.read_events(&doc, 2, 5, 100).await.unwrap(), events[2..5]);
    assert_eq!(store.read_events(&doc, 0, 7, 3).await.unwrap(), events[..3]);
    assert_eq!(store.read_events(&doc, 4, u64::MAX, 2).await.unwrap(), events[4..6]);
    assert_eq!(store.read_events(&doc, 6, 6, 10).await.unwrap(), []);
    assert_eq!(store.read_events(&doc, 5, 3, 10).await.unwrap(), []);
    assert_eq!(store.read_events(&doc, 7, u64::MAX, 10).await.unwrap(), []);
    assert_eq!(store.read_events(&doc, 0, u64::MAX, 0).await.unwrap(), []);
    // A document whose id extends another's shares nothing with it.
    assert_eq!(store.latest_version(&other).await.unwrap(), 0);
    assert_eq!(all_events(store, &other).await, []);
}

/// One batch carries events and rejections of several documents; all of them land.
pub async fn batch_of_many_documents(store: &dyn EventStore, ns: &Namespace) {
    let docs: Vec<DocId> = (0..5).map(|i| ns.doc(&format!("many-{i}"))).collect();
    let c = client("bob");
    let p = ns.partition(1);
    let epoch = claim(store, p).await;
    let events: Vec<CommittedEvent> = docs.iter().flat_map(|d| history(d, &c, 3)).collect();
    let rejections: Vec<Rejection> = docs.iter().map(|d| rejection(d, &c, 4, 3)).collect();
    store.commit(&batch(p, epoch, events.clone(), rejections.clone())).await.unwrap();
    for (i, doc) in docs.iter().enumerate() {
        assert_eq!(store.latest_version(doc).await.unwrap(), 3);
        assert_eq!(all_events(store, doc).await, events[i * 3..i * 3 + 3]);
        let loaded = store.load_document(doc).await.unwrap();
        assert_eq!(loaded.rejections, [rejections[i].clone()]);
    }
}

/// A batch with one conflicting row writes nothing at all: not its other documents' events, not its
/// rejections, not its offset.
pub async fn conflicting_batch_writes_nothing(store: &dyn EventStore, ns: &Namespace) {
    let (a, b, c, d) = (ns.doc("atomic-a"), ns.doc("atomic-b"), ns.doc("atomic-c"), ns.doc("atomic-d"));
    let carol = client("carol");
    let p = ns.partition(2);
    let epoch = claim(store, p).await;
    let first = CommitBatch { next_offset: Some(10), ..batch(p, epoch, history(&a, &carol, 1), vec![]) };
    store.commit(&first).await.unwrap();

    let mut events = history(&b, &carol, 2);
    events.extend(history(&c, &carol, 1));
    events.push(event(&a, 1, &client("dave"), 1)); // version 1 of `a` exists
    let bad = CommitBatch {
        next_offset: Some(20),
        ..batch(p, epoch, events, vec![rejection(&d, &carol, 1, 0), rejection(&a, &carol, 9, 1)])
    };
    expect_conflict(store.commit(&bad).await, a.as_str());

    for doc in [&b, &c, &d] {
        assert_eq!(store.latest_version(doc).await.unwrap(), 0, "{doc} was written");
        assert_eq!(store.load_document(doc).await.unwrap().rejections, [], "{doc} was written");
    }
    assert_eq!(store.find_outcome(&a, &carol, 9).await.unwrap(), None);
    assert_eq!(all_events(store, &a).await, history(&a, &carol, 1));
    assert_eq!(store.claim_partition(p).await.unwrap().next_offset, Some(10));
}

/// A version that exists is a conflict naming the document and version.
pub async fn duplicate_version_conflicts(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("dup-version");
    let p = ns.partition(3);
    let epoch = claim(store, p).await;
    store.commit(&batch(p, epoch, history(&doc, &client("erin"), 2), vec![])).await.unwrap();
    let again = batch(p, epoch, vec![event(&doc, 2, &client("frank"), 1)], vec![]);
    expect_conflict(store.commit(&again).await, doc.as_str());
    // The same version twice in one batch conflicts too.
    let other = ns.doc("dup-version-in-batch");
    let twice =
        batch(p, epoch, vec![event(&other, 1, &client("a"), 1), event(&other, 1, &client("b"), 1)], vec![]);
    expect_conflict(store.commit(&twice).await, other.as_str());
    assert_eq!(store.latest_version(&other).await.unwrap(), 0);
    assert_eq!(all_events(store, &doc).await, history(&doc, &client("erin"), 2));
}

/// An event whose (doc, client, seq) exists is a conflict naming the client and seq.
pub async fn duplicate_client_seq_conflicts(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("dup-seq");
    let grace = client("grace");
    let p = ns.partition(4);
    let epoch = claim(store, p).await;
    store.commit(&batch(p, epoch, vec![event(&doc, 1, &grace, 1)], vec![])).await.unwrap();
    let result = store.commit(&batch(p, epoch, vec![event(&doc, 2, &grace, 1)], vec![])).await;
    expect_conflict(result, "grace");
    assert_eq!(store.latest_version(&doc).await.unwrap(), 1);
    // The same (client, seq) on another document is a different op.
    let elsewhere = ns.doc("dup-seq-elsewhere");
    store.commit(&batch(p, epoch, vec![event(&elsewhere, 1, &grace, 1)], vec![])).await.unwrap();
}

/// A rejection whose (doc, client, seq) exists is a conflict, and nothing of its batch is written.
pub async fn duplicate_rejection_conflicts(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("dup-rejection");
    let heidi = client("heidi");
    let p = ns.partition(5);
    let epoch = claim(store, p).await;
    store.commit(&batch(p, epoch, vec![], vec![rejection(&doc, &heidi, 1, 0)])).await.unwrap();
    let again =
        batch(p, epoch, vec![event(&doc, 1, &client("ivan"), 1)], vec![rejection(&doc, &heidi, 1, 0)]);
    expect_conflict(store.commit(&again).await, "heidi");
    assert_eq!(store.latest_version(&doc).await.unwrap(), 0);
}

/// A seq is either committed or rejected, never both, whichever came first.
pub async fn one_outcome_per_seq(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("one-outcome");
    let judy = client("judy");
    let p = ns.partition(6);
    let epoch = claim(store, p).await;
    store
        .commit(&batch(p, epoch, vec![event(&doc, 1, &judy, 1)], vec![rejection(&doc, &judy, 2, 1)]))
        .await
        .unwrap();
    expect_conflict(store.commit(&batch(p, epoch, vec![], vec![rejection(&doc, &judy, 1, 1)])).await, "judy");
    expect_conflict(store.commit(&batch(p, epoch, vec![event(&doc, 2, &judy, 2)], vec![])).await, "judy");
    // Both in one batch.
    let both = batch(p, epoch, vec![event(&doc, 2, &judy, 3)], vec![rejection(&doc, &judy, 3, 1)]);
    expect_conflict(store.commit(&both).await, "judy");
    assert_eq!(store.latest_version(&doc).await.unwrap(), 1);
}

/// `find_outcome` answers committed seqs with their version, rejected ones with their error, and
/// anything else with `None`.
pub async fn find_outcome_answers(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("outcome");
    let (kim, leo) = (client("kim"), client("leo"));
    let p = ns.partition(7);
    let epoch = claim(store, p).await;
    let refused = Rejection {
        code: ErrorCode::TooLarge,
        message: "op inserts 2000000 characters, more than 1000000".into(),
        ..rejection(&doc, &leo, 1, 1)
    };
    let events = vec![event(&doc, 1, &kim, 1), event(&doc, 2, &kim, 2), event(&doc, 3, &leo, 2)];
    store.commit(&batch(p, epoch, events, vec![refused.clone()])).await.unwrap();

    assert_eq!(store.find_outcome(&doc, &kim, 2).await.unwrap(), Some(Outcome::Committed { version: 2 }));
    assert_eq!(store.find_outcome(&doc, &leo, 2).await.unwrap(), Some(Outcome::Committed { version: 3 }));
    assert_eq!(
        store.find_outcome(&doc, &leo, 1).await.unwrap(),
        Some(Outcome::Rejected { code: ErrorCode::TooLarge, message: refused.message.clone() })
    );
    assert_eq!(store.find_outcome(&doc, &kim, 3).await.unwrap(), None);
    assert_eq!(store.find_outcome(&doc, &client("mallory"), 1).await.unwrap(), None);
    assert_eq!(store.find_outcome(&ns.doc("outcome-other"), &kim, 1).await.unwrap(), None);
}

/// Each claim returns a higher epoch; a commit of any other epoch is fenced and writes nothing. A
/// partition must be claimed before it is committed to: epoch 0 is never accepted.
pub async fn claim_bumps_epoch_and_fences(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("fenced");
    let nina = client("nina");
    let p = ns.partition(8);

    let unclaimed = CommitBatch { next_offset: Some(5), ..batch(p, 0, history(&doc, &nina, 1), vec![]) };
    match store.commit(&unclaimed).await {
        Err(StoreError::Fenced { partition, epoch: 0, current: 0 }) => assert_eq!(partition, p),
        other => panic!("a commit to an unclaimed partition must be fenced, got {other:?}"),
    }
    let first = store.claim_partition(p).await.unwrap();
    assert!(first.epoch >= 1, "claims start at epoch 1, got {}", first.epoch);
    assert_eq!(first.next_offset, None, "a partition never committed to has no offset");
    let second = store.claim_partition(p).await.unwrap();
    assert!(second.epoch > first.epoch, "epoch {} after {}", second.epoch, first.epoch);

    let stale =
        CommitBatch { next_offset: Some(7), ..batch(p, first.epoch, history(&doc, &nina, 1), vec![]) };
    match store.commit(&stale).await {
        Err(StoreError::Fenced { partition, epoch, current }) => {
            assert_eq!((partition, epoch, current), (p, first.epoch, second.epoch))
        }
        other => panic!("a stale owner's commit must be fenced, got {other:?}"),
    }
    let future = batch(p, second.epoch + 1, vec![], vec![rejection(&doc, &nina, 1, 0)]);
    assert!(matches!(store.commit(&future).await, Err(StoreError::Fenced { .. })));
    // An empty batch is still checked: an owner can probe whether it still owns the partition.
    assert!(matches!(
        store.commit(&batch(p, first.epoch, vec![], vec![])).await,
        Err(StoreError::Fenced { .. })
    ));
    store.commit(&batch(p, second.epoch, vec![], vec![])).await.unwrap();

    assert_eq!(store.latest_version(&doc).await.unwrap(), 0);
    assert_eq!(store.find_outcome(&doc, &nina, 1).await.unwrap(), None);
    let third = store.claim_partition(p).await.unwrap();
    assert!(third.epoch > second.epoch);
    assert_eq!(third.next_offset, None, "a fenced commit stored its offset");
    store.commit(&batch(p, third.epoch, history(&doc, &nina, 1), vec![])).await.unwrap();
    // Claims of one partition do not touch another.
    let other = store.claim_partition(ns.partition(9)).await.unwrap();
    assert_eq!(other.next_offset, None);
    store.commit(&batch(p, third.epoch, vec![], vec![])).await.unwrap();
}

/// The offset is stored with the batch and returned by the next claim; a batch without an offset
/// leaves it as it was.
pub async fn offset_stored_with_commit(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("offset");
    let olga = client("olga");
    let p = ns.partition(10);
    let epoch = claim(store, p).await;
    let events = history(&doc, &olga, 3);
    let with_offset = CommitBatch { next_offset: Some(42), ..batch(p, epoch, events[..2].to_vec(), vec![]) };
    store.commit(&with_offset).await.unwrap();
    store.commit(&batch(p, epoch, events[2..].to_vec(), vec![])).await.unwrap();
    let claimed = store.claim_partition(p).await.unwrap();
    assert_eq!(claimed.next_offset, Some(42));

    // A batch that only moves the offset (its ops were all duplicates) is valid.
    let only_offset = CommitBatch { next_offset: Some(43), ..batch(p, claimed.epoch, vec![], vec![]) };
    assert!(!only_offset.is_empty());
    store.commit(&only_offset).await.unwrap();
    let big = CommitBatch { next_offset: Some(i64::MAX), ..batch(p, claimed.epoch, vec![], vec![]) };
    store.commit(&big).await.unwrap();
    assert_eq!(store.claim_partition(p).await.unwrap().next_offset, Some(i64::MAX));
}

/// Loading starts from the newest snapshot: only later events, and rejections at or after its
/// version; without a snapshot, everything.
pub async fn snapshot_bounds_loading(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("snapshot");
    let (pat, quinn) = (client("pat"), client("quinn"));
    let p = ns.partition(11);
    let epoch = claim(store, p).await;
    let events = history(&doc, &pat, 6);
    let rejections =
        vec![rejection(&doc, &quinn, 1, 2), rejection(&doc, &quinn, 2, 4), rejection(&doc, &quinn, 3, 5)];
    store.commit(&batch(p, epoch, events.clone(), rejections.clone())).await.unwrap();

    let whole = store.load_document(&doc).await.unwrap();
    assert_eq!(
        whole,
        StoredDocument { snapshot: None, events: events.clone(), rejections: rejections.clone() }
    );

    let text_at = |v: u64| (1..=v).map(|i| format!("v{i};")).collect::<String>();
    let snapshot_at = |version: u64| Snapshot {
        doc: doc.clone(),
        version,
        text: text_at(version),
        clients: BTreeMap::from([
            (pat.clone(), ClientRecord { seq: version, outcome: Outcome::Committed { version } }),
            (
                quinn.clone(),
                ClientRecord {
                    seq: 2,
                    outcome: Outcome::Rejected { code: ErrorCode::InvalidOp, message: "bad".into() },
                },
            ),
        ]),
    };
    store.write_snapshot(&snapshot_at(4)).await.unwrap();
    let loaded = store.load_document(&doc).await.unwrap();
    assert_eq!(loaded.snapshot, Some(snapshot_at(4)));
    assert_eq!(loaded.events, events[4..]);
    assert_eq!(loaded.rejections, rejections[1..]);

    // An older snapshot written later does not replace the newest.
    store.write_snapshot(&snapshot_at(2)).await.unwrap();
    assert_eq!(store.load_document(&doc).await.unwrap().snapshot, Some(snapshot_at(4)));

    store.write_snapshot(&snapshot_at(6)).await.unwrap();
    let loaded = store.load_document(&doc).await.unwrap();
    assert_eq!(loaded, StoredDocument { snapshot: Some(snapshot_at(6)), events: vec![], rejections: vec![] });
    // Snapshots are a cache: the log is still whole.
    assert_eq!(all_events(store, &doc).await, events);
    assert_eq!(store.latest_version(&doc).await.unwrap(), 6);
}

/// Text outside ASCII (accents, CJK, right-to-left, emoji with joiners and modifiers, quotes and
/// backslashes) round-trips exactly, in ops and in snapshots.
pub async fn unicode_round_trips(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("unicode");
    let rosa = client("rosa");
    let p = ns.partition(12);
    let epoch = claim(store, p).await;
    let text = "héllo wörld 你好 שלום 👩‍👩‍👧‍👦 👍🏽 🇫🇷 e\u{301} \"quoted\" back\\slash\ttab\nline \u{FFFD}\u{10FFFF}";
    let mut op = Operation::new();
    op.insert(text);
    let mut edit = Operation::new();
    edit.retain(3).delete(4).insert("🎉\u{200D}✨").retain(text.chars().count() - 7);
    let events = vec![
        CommittedEvent { doc: doc.clone(), version: 1, client: rosa.clone(), seq: 1, op },
        CommittedEvent { doc: doc.clone(), version: 2, client: rosa.clone(), seq: 2, op: edit },
    ];
    let refused =
        Rejection { message: format!("cannot apply to «{text}»"), ..rejection(&doc, &rosa, 3, 2) };
    store.commit(&batch(p, epoch, events.clone(), vec![refused.clone()])).await.unwrap();
    let snapshot = Snapshot {
        doc: doc.clone(),
        version: 1,
        text: text.to_owned(),
        clients: BTreeMap::from([(
            rosa.clone(),
            ClientRecord { seq: 1, outcome: Outcome::Committed { version: 1 } },
        )]),
    };
    store.write_snapshot(&snapshot).await.unwrap();

    assert_eq!(all_events(store, &doc).await, events);
    let loaded = store.load_document(&doc).await.unwrap();
    assert_eq!(
        loaded,
        StoredDocument {
            snapshot: Some(snapshot),
            events: events[1..].to_vec(),
            rejections: vec![refused.clone()]
        }
    );
    assert_eq!(
        store.find_outcome(&doc, &rosa, 3).await.unwrap(),
        Some(Outcome::Rejected { code: refused.code, message: refused.message })
    );
}

/// Clients choose `seq`, so every `u64` must be stored and found again, including values beyond
/// what a signed 64-bit column holds.
pub async fn extreme_seqs_round_trip(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("extreme-seq");
    let sam = client("sam");
    let p = ns.partition(13);
    let epoch = claim(store, p).await;
    let seqs = [u64::MAX, u64::MAX - 1, 1 << 63, (1 << 63) - 1, 0];
    let events: Vec<CommittedEvent> =
        seqs[..3].iter().zip(1..).map(|(&seq, v)| event(&doc, v, &sam, seq)).collect();
    let rejections: Vec<Rejection> = seqs[3..].iter().map(|&seq| rejection(&doc, &sam, seq, 3)).collect();
    store.commit(&batch(p, epoch, events.clone(), rejections.clone())).await.unwrap();

    assert_eq!(all_events(store, &doc).await, events);
    for (e, v) in events.iter().zip(1..) {
        assert_eq!(
            store.find_outcome(&doc, &sam, e.seq).await.unwrap(),
            Some(Outcome::Committed { version: v })
        );
    }
    for r in &rejections {
        assert!(matches!(
            store.find_outcome(&doc, &sam, r.seq).await.unwrap(),
            Some(Outcome::Rejected { .. })
        ));
    }
    let mut loaded = store.load_document(&doc).await.unwrap().rejections;
    loaded.sort_by_key(|r| r.seq);
    let mut expected = rejections;
    expected.sort_by_key(|r| r.seq);
    assert_eq!(loaded, expected);
    expect_conflict(
        store.commit(&batch(p, epoch, vec![event(&doc, 4, &sam, u64::MAX)], vec![])).await,
        "sam",
    );
}
