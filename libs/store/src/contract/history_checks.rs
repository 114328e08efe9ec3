//! The checks of what the Documents API reads from the store: authors, commit times, snapshots of
//! past versions and their retention, checkpoints.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tandem_protocol::records::{CommittedEvent, SequencedRecord};
use tandem_protocol::DocId;

use super::{all_events, batch, claim, client, event, expect_conflict, history, outbox, Namespace};
use crate::{Checkpoint, EventStore, Snapshot, SNAPSHOT_WINDOW};

/// How far a store's clock (a database server's) may be from the test's and still count as now.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970");
    i64::try_from(since.as_millis()).expect("milliseconds fit an i64")
}

/// The author of an event round-trips through every read: the events, the loaded document, the
/// outbox and the history; an empty author (ops from before authors were recorded) too.
pub async fn authors_round_trip(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("authors");
    let p = ns.partition(40);
    let epoch = claim(store, p).await;
    let authors = ["alice@example.com", "", "服务 🤖 bot \"quoted\" \\", "anonymous"];
    let events: Vec<CommittedEvent> = authors
        .iter()
        .zip(1..)
        .map(|(author, v)| CommittedEvent { author: (*author).to_owned(), ..event(&doc, v, &client("c"), v) })
        .collect();
    let number = store.commit(&batch(p, epoch, events.clone(), vec![])).await.unwrap();

    assert_eq!(all_events(store, &doc).await, events);
    assert_eq!(store.load_document(&doc).await.unwrap().events, events);
    let history: Vec<CommittedEvent> =
        store.read_history(&doc, 0, u64::MAX, 100).await.unwrap().into_iter().map(|h| h.event).collect();
    assert_eq!(history, events);
    let published = outbox(store, p, 0).await;
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].commit, number);
    assert_eq!(
        published[0].records,
        events.iter().cloned().map(SequencedRecord::Committed).collect::<Vec<_>>()
    );
}

/// `read_history` returns what `read_events` does (same bounds and limit), each event with the
/// time of its commit: the same for every event of one commit, later for a later commit, and now
/// (by the test's clock, give or take five minutes) in milliseconds since the Unix epoch.
pub async fn history_has_commit_times(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("history-times");
    let ivy = client("ivy");
    let p = ns.partition(41);
    let epoch = claim(store, p).await;
    let events = history(&doc, &ivy, 6);
    let before = now_ms();
    for slice in [&events[..3], &events[3..5], &events[5..]] {
        store.commit(&batch(p, epoch, slice.to_vec(), vec![])).await.unwrap();
        // Commits far enough apart for any clock to tell them apart.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = now_ms();

    let entries = store.read_history(&doc, 0, u64::MAX, 100).await.unwrap();
    assert_eq!(entries.iter().map(|h| h.event.clone()).collect::<Vec<_>>(), events);
    let times: Vec<i64> = entries.iter().map(|h| h.committed_at_ms).collect();
    let skew = i64::try_from(CLOCK_SKEW.as_millis()).unwrap();
    for t in &times {
        assert!(
            before - skew <= *t && *t <= after + skew,
            "commit time {t} is not now in ms since the epoch (the commits ran from {before} to {after})"
        );
    }
    assert!(times[0] == times[1] && times[1] == times[2], "one commit, one time: {times:?}");
    assert!(
        times[2] < times[3] && times[3] == times[4] && times[4] < times[5],
        "later commits, later times: {times:?}"
    );

    for (after, up_to, limit) in
        [(2, 5, 100), (0, 6, 3), (4, u64::MAX, 2), (6, 6, 10), (5, 3, 10), (0, u64::MAX, 0)]
    {
        let read: Vec<CommittedEvent> = store
            .read_history(&doc, after, up_to, limit)
            .await
            .unwrap()
            .into_iter()
            .map(|h| h.event)
            .collect();
        let expected = store.read_events(&doc, after, up_to, limit).await.unwrap();
        assert_eq!(read, expected, "read_history({after}, {up_to}, {limit}) differs from read_events");
    }
    assert_eq!(store.read_history(&ns.doc("history-none"), 0, u64::MAX, 10).await.unwrap(), []);
}

fn snapshot(doc: &DocId, version: u64) -> Snapshot {
    Snapshot { doc: doc.clone(), version, text: format!("text of {version}"), clients: BTreeMap::new() }
}

/// `snapshot_at_or_before` answers the newest kept snapshot at or before a version, and writing a
/// snapshot keeps the two newest plus the lowest of every window of [`SNAPSHOT_WINDOW`] versions.
pub async fn snapshots_of_past_versions_are_kept_per_window(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("snapshot-windows");
    let p = ns.partition(42);
    let epoch = claim(store, p).await;
    let w = SNAPSHOT_WINDOW;
    let written = [100, 5_000, w - 1, w, w + 5_000, 2 * w + 5_000, 2 * w + 5_100, 2 * w + 5_200];
    // The store does not require consecutive versions (the sequencer does), so one event per
    // snapshot stands for a long history.
    let mut versions: Vec<u64> = written.to_vec();
    versions.extend([50, 2 * w + 5_300]);
    versions.sort_unstable();
    let events: Vec<CommittedEvent> = versions.iter().map(|&v| event(&doc, v, &client("s"), v)).collect();
    store.commit(&batch(p, epoch, events, vec![])).await.unwrap();
    assert_eq!(store.snapshot_at_or_before(&doc, u64::MAX).await.unwrap(), None, "no snapshot yet");
    for v in written {
        store.write_snapshot(&snapshot(&doc, v)).await.unwrap();
    }

    let kept = &doc;
    let at = |version: u64| async move {
        store.snapshot_at_or_before(kept, version).await.unwrap().map(|s| {
            assert_eq!(s, snapshot(kept, s.version), "snapshot {} read back", s.version);
            s.version
        })
    };
    assert_eq!(at(99).await, None);
    assert_eq!(at(100).await, Some(100));
    assert_eq!(
        at(w - 1).await,
        Some(100),
        "{} and {} were neither newest nor first of their window",
        5_000,
        w - 1
    );
    assert_eq!(at(w).await, Some(w));
    assert_eq!(at(2 * w - 1).await, Some(w), "{} was neither newest nor first of its window", w + 5_000);
    assert_eq!(at(2 * w + 5_099).await, Some(2 * w + 5_000), "the first of its window");
    assert_eq!(at(2 * w + 5_150).await, Some(2 * w + 5_100), "the second newest");
    assert_eq!(at(u64::MAX).await, Some(2 * w + 5_200), "the newest");
    assert_eq!(store.load_document(&doc).await.unwrap().snapshot, Some(snapshot(&doc, 2 * w + 5_200)));

    // A lower version written later becomes its window's first; the old first goes.
    store.write_snapshot(&snapshot(&doc, 50)).await.unwrap();
    assert_eq!(at(100).await, Some(50));
    assert_eq!(at(w - 1).await, Some(50));
    assert_eq!(at(u64::MAX).await, Some(2 * w + 5_200), "the newest stays");
    assert_eq!(at(2 * w + 5_150).await, Some(2 * w + 5_100), "the second newest stays");
    assert_eq!(store.snapshot_at_or_before(&ns.doc("snapshot-none"), u64::MAX).await.unwrap(), None);
}

/// A snapshot of a version the log does not have is refused and not stored.
pub async fn snapshot_after_the_latest_version_is_refused(store: &dyn EventStore, ns: &Namespace) {
    let doc = ns.doc("snapshot-ahead");
    let p = ns.partition(43);
    let epoch = claim(store, p).await;
    store.commit(&batch(p, epoch, history(&doc, &client("a"), 2), vec![])).await.unwrap();
    store.write_snapshot(&snapshot(&doc, 2)).await.unwrap();
    expect_conflict(store.write_snapshot(&snapshot(&doc, 3)).await, "after its latest version 2");
    expect_conflict(
        store.write_snapshot(&snapshot(&ns.doc("snapshot-ahead-none"), 1)).await,
        "latest version 0",
    );
    assert_eq!(store.snapshot_at_or_before(&doc, u64::MAX).await.unwrap(), Some(snapshot(&doc, 2)));
}

fn checkpoint(doc: &DocId, name: &str, version: u64, author: &str) -> Checkpoint {
    Checkpoint {
        doc: doc.clone(),
        name: name.to_owned(),
        version,
        author: author.to_owned(),
        created_at_ms: 0,
    }
}

/// A checkpoint is created once: again with the same version it is returned as stored (the first
/// author and time); with another version it is a conflict naming both; a version after the
/// latest is a conflict. The list is by version, then name (byte-wise).
pub async fn checkpoints_are_immutable(store: &dyn EventStore, ns: &Namespace) {
    let (doc, other) = (ns.doc("checkpoints"), ns.doc("checkpoints-other"));
    let p = ns.partition(44);
    let epoch = claim(store, p).await;
    store.commit(&batch(p, epoch, history(&doc, &client("w"), 3), vec![])).await.unwrap();
    assert_eq!(store.list_checkpoints(&doc).await.unwrap(), []);

    let before = now_ms();
    let draft = store.create_checkpoint(&checkpoint(&doc, "draft", 2, "alice")).await.unwrap();
    let skew = i64::try_from(CLOCK_SKEW.as_millis()).unwrap();
    assert!(
        (before - skew..=now_ms() + skew).contains(&draft.created_at_ms),
        "creation time {} is not now ({before})",
        draft.created_at_ms
    );
    assert_eq!(
        draft,
        Checkpoint { created_at_ms: draft.created_at_ms, ..checkpoint(&doc, "draft", 2, "alice") }
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = store.create_checkpoint(&checkpoint(&doc, "draft", 2, "bob")).await.unwrap();
    assert_eq!(again, draft, "a retry returns the stored checkpoint");
    expect_conflict(
        store.create_checkpoint(&checkpoint(&doc, "draft", 3, "bob")).await,
        "names version 2, not 3",
    );
    expect_conflict(
        store.create_checkpoint(&checkpoint(&doc, "later", 4, "bob")).await,
        "latest version is 3",
    );

    let names = [("b", 1), ("a", 1), ("Z", 1), ("zero", 0), ("版本 ✓ \"final\"", 3), ("final", 3)];
    for (name, version) in names {
        store.create_checkpoint(&checkpoint(&doc, name, version, "carol")).await.unwrap();
    }
    let listed: Vec<(String, u64)> =
        store.list_checkpoints(&doc).await.unwrap().into_iter().map(|c| (c.name, c.version)).collect();
    let expected =
        [("zero", 0), ("Z", 1), ("a", 1), ("b", 1), ("draft", 2), ("final", 3), ("版本 ✓ \"final\"", 3)];
    assert_eq!(listed, expected.map(|(n, v)| (n.to_owned(), v)));
    assert_eq!(store.list_checkpoints(&doc).await.unwrap()[4], draft, "listed as created");
    // Names are per document.
    assert_eq!(store.list_checkpoints(&other).await.unwrap(), []);
    let empty = store.create_checkpoint(&checkpoint(&other, "draft", 0, "dan")).await.unwrap();
    assert_eq!((empty.version, empty.author.as_str()), (0, "dan"), "version 0 of any document exists");
}
