//! The checks of the contract suite, one function per promise of [`EventStore`]. Each takes the
//! store and the run's [`Namespace`], and panics (with a message naming what broke) on failure.

use std::collections::BTreeMap;

use tandem_ot::Operation;
use tandem_protocol::records::{CommittedEvent, Outcome, Rejection};
use tandem_protocol::{DocId, ErrorCode};

use super::{
    all_events, batch, claim, client, committed, event, expect_conflict, history, outbox, rejected,
    rejection, unpublished, Namespace,
};
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

/// `last_outcome` answers a client's highest seq over its events and rejections, with that seq's
/// outcome, and `None` for a client that never wrote the document.
pub async fn last_outcome_answers(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("last-outcome");
    let (kim, leo, max) = (client("kim"), client("leo"), client("max"));
    let p = ns.partition(30);
    let epoch = claim(store, p).await;
    let refused = Rejection { message: "seq 9 skips ahead".into(), ..rejection(&doc, &kim, 9, 2) };
    let events = vec![event(&doc, 1, &kim, 1), event(&doc, 2, &kim, 2), event(&doc, 3, &leo, 4)];
    store.commit(&batch(p, epoch, events, vec![refused.clone()])).await.unwrap();
    store.commit(&batch(p, epoch, vec![], vec![rejection(&doc, &leo, 2, 3)])).await.unwrap();

    assert_eq!(
        store.last_outcome(&doc, &kim).await.unwrap(),
        Some(ClientRecord {
            seq: 9,
            outcome: Outcome::Rejected { code: refused.code, message: refused.message.clone() }
        })
    );
    assert_eq!(
        store.last_outcome(&doc, &leo).await.unwrap(),
        Some(ClientRecord { seq: 4, outcome: Outcome::Committed { version: 3 } })
    );
    assert_eq!(store.last_outcome(&doc, &max).await.unwrap(), None);
    assert_eq!(store.last_outcome(&ns.doc("last-outcome-other"), &kim).await.unwrap(), None);
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
        CommittedEvent {
            author: "rösa 👩\u{200D}💻 \"quoted\"".to_owned(),
            doc: doc.clone(),
            version: 1,
            client: rosa.clone(),
            seq: 1,
            op,
        },
        CommittedEvent {
            author: String::new(),
            doc: doc.clone(),
            version: 2,
            client: rosa.clone(),
            seq: 2,
            op: edit,
        },
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

/// U+0000 is a character like any other to a document: it round-trips in ops and in snapshot
/// text, although C strings (and Postgres `text` values) cannot hold it.
pub async fn nul_characters_round_trip(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("nul");
    let tess = client("tess");
    let p = ns.partition(14);
    let epoch = claim(store, p).await;
    let text = "a\u{0}b\u{0}\u{0}";
    let mut op = Operation::new();
    op.insert(text);
    let events = vec![CommittedEvent {
        author: String::new(),
        doc: doc.clone(),
        version: 1,
        client: tess.clone(),
        seq: 1,
        op,
    }];
    store.commit(&batch(p, epoch, events.clone(), vec![])).await.unwrap();
    let snapshot = Snapshot { doc: doc.clone(), version: 1, text: text.to_owned(), clients: BTreeMap::new() };
    store.write_snapshot(&snapshot).await.unwrap();
    assert_eq!(all_events(store, &doc).await, events);
    assert_eq!(store.load_document(&doc).await.unwrap().snapshot, Some(snapshot));
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

/// A commit that stores records takes the partition's next number, one more than the last; a
/// batch without records (an epoch check, an offset) takes none and answers the current one. Each
/// partition counts on its own, and the count goes on across claims.
pub async fn commit_numbers_count_commits_per_partition(store: &dyn EventStore, ns: &Namespace) {
    let (doc, other) = (ns.doc("numbers"), ns.doc("numbers-other"));
    let uma = client("uma");
    let (p, q) = (ns.partition(15), ns.partition(16));
    let claimed = store.claim_partition(p).await.unwrap();
    assert_eq!((claimed.last_commit, claimed.published_through), (0, 0), "a new partition has no commits");
    let epoch = claimed.epoch;
    let events = history(&doc, &uma, 4);

    assert_eq!(store.commit(&batch(p, epoch, vec![], vec![])).await.unwrap(), 0, "an epoch check");
    assert_eq!(store.commit(&batch(p, epoch, events[..2].to_vec(), vec![])).await.unwrap(), 1);
    assert_eq!(store.commit(&batch(p, epoch, vec![], vec![rejection(&doc, &uma, 99, 2)])).await.unwrap(), 2);
    let only_offset = CommitBatch { next_offset: Some(3), ..batch(p, epoch, vec![], vec![]) };
    assert_eq!(store.commit(&only_offset).await.unwrap(), 2, "a batch without records takes no number");
    assert_eq!(store.commit(&batch(p, epoch, vec![], vec![])).await.unwrap(), 2);

    // Another partition counts from its own start.
    let q_epoch = claim(store, q).await;
    assert_eq!(store.commit(&batch(q, q_epoch, history(&other, &uma, 1), vec![])).await.unwrap(), 1);
    assert_eq!(store.commit(&batch(p, epoch, events[2..3].to_vec(), vec![])).await.unwrap(), 3);

    // A new owner goes on from the last number; the old owner's fenced commit takes none.
    let next = store.claim_partition(p).await.unwrap();
    assert_eq!((next.last_commit, next.next_offset), (3, Some(3)));
    assert!(matches!(
        store.commit(&batch(p, epoch, events[3..].to_vec(), vec![])).await,
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(store.commit(&batch(p, next.epoch, events[3..].to_vec(), vec![])).await.unwrap(), 4);
    assert_eq!(store.claim_partition(q).await.unwrap().last_commit, 1);
    assert_eq!(store.claim_partition(p).await.unwrap().last_commit, 4);
}

/// The outbox holds exactly the records (events and rejections) of the commits after
/// `published_through` (and after the caller's cursor), one entry per commit in commit order; in a
/// commit, by document, then in document order: version v, the rejections at v (by client, then
/// seq as a `u64`), version v + 1.
pub async fn unpublished_returns_commits_after_published_through(store: &dyn EventStore, ns: &Namespace) {
    let (a, b) = (ns.doc("outbox-a"), ns.doc("outbox-b"));
    let (x, y) = (client("xavier"), client("yara"));
    let p = ns.partition(17);
    let epoch = claim(store, p).await;
    assert_eq!(outbox(store, p, 0).await, [], "nothing committed, nothing to publish");

    let (a1, a2, a3) = (event(&a, 1, &x, 1), event(&a, 2, &y, 1), event(&a, 3, &x, 3));
    let (b1, b2) = (event(&b, 1, &x, 10), event(&b, 2, &y, 10));
    let (ra1, rb0) = (rejection(&a, &y, 2, 1), rejection(&b, &x, 2, 0));
    let (ra2, ra3_max, ra3_7) =
        (rejection(&a, &x, 2, 2), rejection(&a, &y, u64::MAX, 3), rejection(&a, &y, 7, 3));
    // The batches list their records in an order the outbox does not keep.
    let first = store
        .commit(&batch(p, epoch, vec![b1.clone(), a1.clone(), a2.clone()], vec![ra1.clone(), rb0.clone()]))
        .await
        .unwrap();
    let second = store
        .commit(&batch(p, epoch, vec![a3.clone()], vec![ra3_max.clone(), ra3_7.clone(), ra2.clone()]))
        .await
        .unwrap();
    let third = store.commit(&batch(p, epoch, vec![b2.clone()], vec![])).await.unwrap();
    assert!(first < second && second < third);

    let c1 = unpublished(
        first,
        vec![committed(&a1), rejected(&ra1), committed(&a2), rejected(&rb0), committed(&b1)],
    );
    let c2 = unpublished(second, vec![rejected(&ra2), committed(&a3), rejected(&ra3_7), rejected(&ra3_max)]);
    let c3 = unpublished(third, vec![committed(&b2)]);
    assert_eq!(outbox(store, p, 0).await, [c1.clone(), c2.clone(), c3.clone()]);
    // The cursor skips commits without marking them.
    assert_eq!(outbox(store, p, first).await, [c2.clone(), c3.clone()]);
    assert_eq!(outbox(store, p, third).await, []);
    assert_eq!(outbox(store, p, u64::MAX).await, []);
    assert_eq!(store.unpublished(p, 0, 0).await.unwrap(), [], "a limit of 0 reads nothing");
    // Marking published hides what it covers, whatever the cursor.
    store.mark_published(p, epoch, first).await.unwrap();
    assert_eq!(outbox(store, p, 0).await, [c2, c3.clone()]);
    store.mark_published(p, epoch, third).await.unwrap();
    assert_eq!(outbox(store, p, 0).await, []);
    // Other partitions, claimed or not, have their own outbox.
    assert_eq!(outbox(store, ns.partition(24), 0).await, []);
    assert_eq!(outbox(store, ns.partition(200), 0).await, []);
    // The log itself is unaffected.
    assert_eq!(all_events(store, &a).await, [a1, a2, a3]);
}

/// A page holds whole commits only: as many as fit in the limit, or the first alone when it is
/// larger; paging with the cursor reads every commit once.
pub async fn unpublished_pages_by_whole_commits(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("outbox-pages");
    let vera = client("vera");
    let p = ns.partition(18);
    let epoch = claim(store, p).await;
    let events = history(&doc, &vera, 11);
    let mut numbers = Vec::new();
    let mut expected = Vec::new();
    // Commits of 3, 1, 2 and 5 records.
    for range in [0..3, 3..4, 4..6, 6..11] {
        let slice = events[range].to_vec();
        let number = store.commit(&batch(p, epoch, slice.clone(), vec![])).await.unwrap();
        numbers.push(number);
        expected.push(unpublished(number, slice.iter().map(committed).collect()));
    }
    let page = |after: u64, limit: usize| async move { store.unpublished(p, after, limit).await.unwrap() };
    assert_eq!(page(0, 4).await, expected[..2]);
    assert_eq!(page(0, 5).await, expected[..2], "commit 3 does not fit whole");
    assert_eq!(page(0, 6).await, expected[..3]);
    assert_eq!(page(0, 3).await, expected[..1]);
    assert_eq!(page(0, 1).await, expected[..1], "a first commit larger than the limit comes whole");
    assert_eq!(page(numbers[1], 2).await, expected[2..3]);
    assert_eq!(page(numbers[2], 2).await, expected[3..], "five records for a limit of two");
    assert_eq!(page(0, usize::MAX).await, expected);

    let mut read = Vec::new();
    let mut cursor = 0;
    loop {
        let next = page(cursor, 2).await;
        let Some(last) = next.last() else { break };
        assert!(next.iter().map(|c| c.records.len()).sum::<usize>() <= 2 || next.len() == 1);
        cursor = last.commit;
        read.extend(next);
    }
    assert_eq!(read, expected);
}

/// A batch's `published_through` raises the partition's mark in the same transaction (never lowers
/// it); it cannot cover the batch itself or any commit that does not exist yet.
pub async fn published_through_rides_on_the_next_commit(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("outbox-ride");
    let wes = client("wes");
    let p = ns.partition(19);
    let epoch = claim(store, p).await;
    let events = history(&doc, &wes, 5);
    let first = store.commit(&batch(p, epoch, events[..1].to_vec(), vec![])).await.unwrap();
    let second = store.commit(&batch(p, epoch, events[1..2].to_vec(), vec![])).await.unwrap();
    let carrying =
        CommitBatch { published_through: Some(second), ..batch(p, epoch, events[2..3].to_vec(), vec![]) };
    let third = store.commit(&carrying).await.unwrap();
    let c3 = unpublished(third, vec![committed(&events[2])]);
    assert_eq!(outbox(store, p, 0).await, std::slice::from_ref(&c3));

    // A lower mark, alone in a batch, changes nothing and takes no number.
    let lower = CommitBatch { published_through: Some(first), ..batch(p, epoch, vec![], vec![]) };
    assert!(!lower.is_empty());
    assert_eq!(store.commit(&lower).await.unwrap(), third);
    assert_eq!(outbox(store, p, 0).await, std::slice::from_ref(&c3));

    // A batch cannot mark itself published (it was not published before it was committed), nor a
    // commit that does not exist: a conflict that writes nothing and takes no number.
    let itself = CommitBatch {
        published_through: Some(third + 1),
        next_offset: Some(9),
        ..batch(p, epoch, events[3..4].to_vec(), vec![])
    };
    expect_conflict(store.commit(&itself).await, "commit");
    let beyond = CommitBatch { published_through: Some(u64::MAX), ..batch(p, epoch, vec![], vec![]) };
    expect_conflict(store.commit(&beyond).await, "commit");
    assert_eq!(store.latest_version(&doc).await.unwrap(), 3);
    assert_eq!(outbox(store, p, 0).await, std::slice::from_ref(&c3));

    // A fenced batch's mark is not applied.
    let newer = store.claim_partition(p).await.unwrap();
    assert_eq!((newer.last_commit, newer.published_through, newer.next_offset), (third, second, None));
    let stale = CommitBatch { published_through: Some(third), ..batch(p, epoch, vec![], vec![]) };
    assert!(matches!(store.commit(&stale).await, Err(StoreError::Fenced { .. })));
    assert_eq!(outbox(store, p, 0).await, [c3]);

    // The new owner's next commit carries the mark for the republished commit.
    let carrying = CommitBatch {
        published_through: Some(third),
        ..batch(p, newer.epoch, events[3..4].to_vec(), vec![])
    };
    let fourth = store.commit(&carrying).await.unwrap();
    assert_eq!(fourth, third + 1);
    assert_eq!(outbox(store, p, 0).await, [unpublished(fourth, vec![committed(&events[3])])]);
    let claimed = store.claim_partition(p).await.unwrap();
    assert_eq!((claimed.last_commit, claimed.published_through), (fourth, third));
}

/// `mark_published` raises the mark when the epoch is current; a stale (or never valid) epoch is
/// fenced and changes nothing; a commit that does not exist is a conflict.
pub async fn mark_published_is_fenced(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("outbox-mark");
    let xena = client("xena");
    let p = ns.partition(20);
    let older = claim(store, p).await;
    let events = history(&doc, &xena, 2);
    let first = store.commit(&batch(p, older, events[..1].to_vec(), vec![])).await.unwrap();
    let second = store.commit(&batch(p, older, events[1..].to_vec(), vec![])).await.unwrap();
    let c2 = unpublished(second, vec![committed(&events[1])]);

    store.mark_published(p, older, first).await.unwrap();
    assert_eq!(outbox(store, p, 0).await, std::slice::from_ref(&c2));
    store.mark_published(p, older, 0).await.unwrap();
    assert_eq!(outbox(store, p, 0).await, std::slice::from_ref(&c2), "the mark is never lowered");
    expect_conflict(store.mark_published(p, older, second + 1).await, "commit");
    assert_eq!(outbox(store, p, 0).await, std::slice::from_ref(&c2));

    let newer = store.claim_partition(p).await.unwrap();
    assert_eq!((newer.last_commit, newer.published_through), (second, first));
    match store.mark_published(p, older, second).await {
        Err(StoreError::Fenced { partition, epoch, current }) => {
            assert_eq!((partition, epoch, current), (p, older, newer.epoch))
        }
        other => panic!("a stale owner's mark must be fenced, got {other:?}"),
    }
    assert!(matches!(store.mark_published(p, newer.epoch + 1, second).await, Err(StoreError::Fenced { .. })));
    assert_eq!(outbox(store, p, 0).await, [c2], "a fenced mark changed nothing");
    match store.mark_published(ns.partition(21), 0, 0).await {
        Err(StoreError::Fenced { epoch: 0, current: 0, .. }) => {}
        other => panic!("marking an unclaimed partition must be fenced, got {other:?}"),
    }

    store.mark_published(p, newer.epoch, second).await.unwrap();
    assert_eq!(outbox(store, p, 0).await, []);
    let claimed = store.claim_partition(p).await.unwrap();
    assert_eq!((claimed.last_commit, claimed.published_through), (second, second));
}

/// A new owner's claim reports where the outbox stands, and the outbox holds exactly what the
/// previous owner committed after its last mark.
pub async fn new_owner_sees_unpublished_records(store: &dyn EventStore, ns: &Namespace) {
    let (doc, other) = (ns.doc("outbox-handover"), ns.doc("outbox-handover-2"));
    let yuri = client("yuri");
    let p = ns.partition(22);
    let old = claim(store, p).await;
    let events = history(&doc, &yuri, 3);
    let refused = rejection(&other, &yuri, 1, 0);
    let first = store.commit(&batch(p, old, events[..1].to_vec(), vec![])).await.unwrap();
    let carrying = CommitBatch {
        published_through: Some(first),
        next_offset: Some(30),
        ..batch(p, old, events[1..2].to_vec(), vec![refused.clone()])
    };
    let second = store.commit(&carrying).await.unwrap();
    let third = store.commit(&batch(p, old, events[2..].to_vec(), vec![])).await.unwrap();

    let claim = store.claim_partition(p).await.unwrap();
    assert_eq!(
        (claim.next_offset, claim.last_commit, claim.published_through),
        (Some(30), third, first),
        "the claim reports the previous owner's outbox"
    );
    let pending = outbox(store, p, claim.published_through).await;
    assert_eq!(
        pending,
        [
            unpublished(second, vec![committed(&events[1]), rejected(&refused)]),
            unpublished(third, vec![committed(&events[2])])
        ]
    );
    assert_eq!(outbox(store, p, 0).await, pending);
    assert_eq!(pending.last().map(|c| c.commit), Some(claim.last_commit));

    // The old owner can neither commit nor mark; the new one republishes, then marks.
    let late = CommitBatch { published_through: Some(third), ..batch(p, old, vec![], vec![]) };
    assert!(matches!(store.commit(&late).await, Err(StoreError::Fenced { .. })));
    store.mark_published(p, claim.epoch, claim.last_commit).await.unwrap();
    assert_eq!(outbox(store, p, 0).await, []);
    let next = store.commit(&batch(p, claim.epoch, vec![event(&other, 1, &yuri, 2)], vec![])).await.unwrap();
    assert_eq!(next, third + 1);
}

/// A batch that fails (a conflict, or a mark beyond the last commit) takes no commit number and
/// leaves nothing in the outbox.
pub async fn failed_batch_takes_no_commit_number(store: &dyn EventStore, ns: &Namespace) {
    let (doc, other) = (ns.doc("outbox-failed"), ns.doc("outbox-failed-2"));
    let zoe = client("zoe");
    let p = ns.partition(23);
    let epoch = claim(store, p).await;
    let first = store.commit(&batch(p, epoch, history(&doc, &zoe, 1), vec![])).await.unwrap();

    let taken_version = batch(p, epoch, vec![event(&other, 1, &zoe, 1), event(&doc, 1, &zoe, 5)], vec![]);
    expect_conflict(store.commit(&taken_version).await, doc.as_str());
    let taken_seq = batch(p, epoch, vec![], vec![rejection(&other, &zoe, 2, 0), rejection(&doc, &zoe, 1, 1)]);
    expect_conflict(store.commit(&taken_seq).await, "zoe");
    let in_batch = batch(p, epoch, vec![event(&other, 1, &zoe, 3), event(&other, 1, &zoe, 4)], vec![]);
    expect_conflict(store.commit(&in_batch).await, other.as_str());

    let refused = rejection(&other, &zoe, 9, 0);
    let second = store.commit(&batch(p, epoch, vec![], vec![refused.clone()])).await.unwrap();
    assert_eq!(second, first + 1, "failed batches took commit numbers");
    assert_eq!(
        outbox(store, p, 0).await,
        [
            unpublished(first, history(&doc, &zoe, 1).iter().map(committed).collect()),
            unpublished(second, vec![rejected(&refused)])
        ]
    );
    assert_eq!(store.claim_partition(p).await.unwrap().last_commit, second);
}

/// A commit whose answer was lost is retried with the same batch: the store recognises it by the
/// commit number it expects, answers with that number and writes nothing twice; a batch expecting a
/// number the partition is not at is refused.
pub async fn retried_commit_is_recognised_by_its_number(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("retried-commit");
    let ann = client("ann");
    let p = ns.partition(24);
    let epoch = claim(store, p).await;
    let mut first = batch(p, epoch, vec![event(&doc, 1, &ann, 1)], vec![]);
    first.expected_commit = Some(1);
    assert_eq!(store.commit(&first).await.unwrap(), 1);
    // The same batch again, as after a connection lost during COMMIT.
    assert_eq!(store.commit(&first).await.unwrap(), 1, "a retry is answered with its number");
    assert_eq!(store.read_events(&doc, 0, u64::MAX, 10).await.unwrap().len(), 1, "written once");

    let mut skipping = batch(p, epoch, vec![event(&doc, 2, &ann, 2)], vec![]);
    skipping.expected_commit = Some(5);
    expect_conflict(store.commit(&skipping).await, "expects to be commit 5");
    skipping.expected_commit = Some(2);
    assert_eq!(store.commit(&skipping).await.unwrap(), 2);
    assert_eq!(store.latest_version(&doc).await.unwrap(), 2);
}
