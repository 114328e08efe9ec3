//! Unit tests of the counting rules without deletions (those are in `deletion_tests`).

use super::*;
use crate::record::Position;

pub(super) const GAP: i64 = 5 * MINUTE_MS;
/// 2024-01-01T00:00:00Z.
pub(super) const T0: i64 = 1_704_067_200_000;

/// An edit of `author`'s session by user `user-<author>`, at an offset no mark is after.
pub(super) fn edit(doc: &str, version: u64, author: &str, inserted: u64, deleted: u64, at_ms: i64) -> Edit {
    Edit {
        doc: doc.into(),
        version,
        author: author.into(),
        user: format!("user-{author}"),
        inserted,
        deleted,
        at_ms,
        position: Position { partition: 0, offset: i64::MAX },
    }
}

fn count(tally: &mut Tally, edits: &[Edit]) -> Vec<Applied> {
    edits.iter().map(|e| tally.apply(e)).collect()
}

#[test]
fn a_new_document_is_counted_per_document_author_and_minute() {
    let mut tally = Tally::new(GAP, [], [], []);
    let applied = count(
        &mut tally,
        &[
            edit("d", 1, "alice", 5, 0, T0 + 1_000),
            edit("d", 2, "bob", 1, 2, T0 + 61_000),
            edit("d", 3, "alice", 0, 1, T0 + 62_000),
        ],
    );
    assert_eq!(applied, vec![Applied::Counted; 3]);
    let changes = tally.into_changes();
    assert_eq!(
        changes.documents["d"],
        DocumentTotals {
            ops: 3,
            chars_inserted: 6,
            chars_deleted: 3,
            first_version: 1,
            last_version: 3,
            first_seen_ms: T0 + 1_000,
            last_seen_ms: T0 + 62_000,
            versions_missed: 0,
        }
    );
    let alice = changes.authors[&("d".to_owned(), "alice".to_owned())];
    assert_eq!((alice.ops, alice.chars_inserted, alice.chars_deleted), (2, 5, 1));
    assert_eq!((alice.first_seen_ms, alice.last_seen_ms), (T0 + 1_000, T0 + 62_000));
    // Minute 0: alice; minute 1: bob and alice.
    let minutes: Vec<(i64, &str, u64)> =
        changes.minutes.iter().map(|((_, m, a), inc)| ((m - T0) / MINUTE_MS, a.as_str(), inc.ops)).collect();
    assert_eq!(minutes, vec![(0, "alice", 1), (1, "alice", 1), (1, "bob", 1)]);
}

#[test]
fn users_are_counted_per_minute_apart_from_sessions() {
    let mut tally = Tally::new(GAP, [], [], []);
    let mut by_ann = edit("d", 1, "tab-1", 3, 0, T0 + 1_000);
    by_ann.user = "ann".into();
    // Another session of the same user in the same minute: one user row, two session rows.
    let mut again = edit("d", 2, "tab-2", 1, 1, T0 + 2_000);
    again.user = "ann".into();
    // An event committed before users were recorded.
    let mut old = edit("d", 3, "tab-3", 2, 0, T0 + 3_000);
    old.user = String::new();
    count(&mut tally, &[by_ann, again, old]);
    let changes = tally.into_changes();
    let users: Vec<(&str, u64, u64, u64)> = changes
        .user_minutes
        .iter()
        .map(|((_, m, u), inc)| {
            assert_eq!(*m, T0);
            (u.as_str(), inc.ops, inc.chars_inserted, inc.chars_deleted)
        })
        .collect();
    assert_eq!(users, vec![("", 1, 2, 0), ("ann", 2, 4, 1)]);
    assert_eq!(changes.minutes.len(), 3, "one row per session");
}

#[test]
fn a_version_counted_before_is_a_duplicate_whether_stored_or_in_the_same_batch() {
    let stored = DocumentTotals {
        ops: 10,
        chars_inserted: 10,
        chars_deleted: 0,
        first_version: 1,
        last_version: 10,
        first_seen_ms: T0,
        last_seen_ms: T0,
        versions_missed: 0,
    };
    let mut tally = Tally::new(GAP, [("d".to_owned(), stored)], [], []);
    let applied = count(
        &mut tally,
        &[
            // A republished copy of what an earlier batch counted.
            edit("d", 9, "a", 1, 0, T0 + 10),
            edit("d", 10, "a", 1, 0, T0 + 10),
            edit("d", 11, "a", 1, 0, T0 + 20),
            // A copy within the batch (a republished run right after the original).
            edit("d", 11, "a", 1, 0, T0 + 30),
            edit("d", 12, "a", 1, 0, T0 + 40),
        ],
    );
    use Applied::*;
    assert_eq!(applied, vec![Duplicate, Duplicate, Counted, Duplicate, Counted]);
    let changes = tally.into_changes();
    let totals = changes.documents["d"];
    assert_eq!((totals.ops, totals.chars_inserted, totals.last_version), (12, 12, 12));
    assert_eq!(changes.authors[&("d".to_owned(), "a".to_owned())].ops, 2);
    assert_eq!(changes.minutes.values().map(|i| i.ops).sum::<u64>(), 2);
}

#[test]
fn a_batch_of_only_duplicates_writes_nothing() {
    let stored = DocumentTotals {
        ops: 2,
        chars_inserted: 2,
        chars_deleted: 0,
        first_version: 1,
        last_version: 2,
        first_seen_ms: T0,
        last_seen_ms: T0,
        versions_missed: 0,
    };
    let mut tally = Tally::new(GAP, [("d".to_owned(), stored)], [], []);
    count(&mut tally, &[edit("d", 1, "a", 1, 0, T0), edit("d", 2, "a", 1, 0, T0)]);
    assert_eq!(tally.into_changes(), Changes::default());
}

#[test]
fn a_jump_is_counted_as_missed_versions_but_a_late_start_is_not() {
    let mut tally = Tally::new(GAP, [], [], []);
    let applied = count(&mut tally, &[edit("d", 40, "a", 1, 0, T0), edit("d", 44, "a", 1, 0, T0)]);
    assert_eq!(applied, vec![Applied::Counted, Applied::CountedAfterGap(3)]);
    let totals = tally.into_changes().documents["d"];
    assert_eq!((totals.first_version, totals.last_version, totals.ops), (40, 44, 2));
    assert_eq!(totals.versions_missed, 3);
}

#[test]
fn runs_split_at_the_gap_and_continue_a_stored_run() {
    let stored_run = EditRun {
        started_ms: T0,
        last_edit_ms: T0 + 60_000,
        ops: 4,
        chars_inserted: 4,
        chars_deleted: 0,
        first_version: 1,
        last_version: 4,
    };
    let pair = ("d".to_owned(), "a".to_owned());
    let mut tally = Tally::new(GAP, [], [(pair.clone(), stored_run)], []);
    count(
        &mut tally,
        &[
            // 4 min 59.999 s after the stored run's last edit: the same run.
            edit("d", 5, "a", 1, 0, T0 + 60_000 + GAP - 1),
            // Exactly the gap after the previous edit: a new run.
            edit("d", 6, "a", 2, 1, T0 + 60_000 + 2 * GAP - 1),
            // A clock a little behind: joins the run without moving its end back.
            edit("d", 7, "a", 1, 0, T0 + 60_000 + 2 * GAP - 500),
            // Another author's edits are their own run.
            edit("d", 8, "b", 1, 0, T0 + 60_000 + 2 * GAP),
        ],
    );
    let runs = tally.into_changes().runs;
    assert_eq!(runs.len(), 3, "{runs:?}");
    let first = runs[&("d".to_owned(), "a".to_owned(), T0)];
    assert_eq!((first.ops, first.last_version, first.last_edit_ms), (5, 5, T0 + 60_000 + GAP - 1));
    let second = runs[&("d".to_owned(), "a".to_owned(), T0 + 60_000 + 2 * GAP - 1)];
    assert_eq!(
        second,
        EditRun {
            started_ms: T0 + 60_000 + 2 * GAP - 1,
            last_edit_ms: T0 + 60_000 + 2 * GAP - 1,
            ops: 2,
            chars_inserted: 3,
            chars_deleted: 1,
            first_version: 6,
            last_version: 7,
        }
    );
    assert_eq!(runs[&("d".to_owned(), "b".to_owned(), T0 + 60_000 + 2 * GAP)].ops, 1);
}

#[test]
fn a_duplicate_does_not_extend_a_run() {
    let mut tally = Tally::new(GAP, [], [], []);
    count(&mut tally, &[edit("d", 1, "a", 1, 0, T0), edit("d", 1, "a", 1, 0, T0 + 2 * GAP)]);
    let runs = tally.into_changes().runs;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs.values().next().unwrap().last_edit_ms, T0);
}

#[test]
fn minutes_before_the_epoch_round_down() {
    let mut tally = Tally::new(GAP, [], [], []);
    tally.apply(&edit("d", 1, "a", 1, 0, -1));
    assert_eq!(tally.into_changes().minutes.keys().next().unwrap().1, -MINUTE_MS);
}

/// Replaying any prefix of a document's records again (a restart before the offsets were
/// stored, a republished run) changes nothing: counted once, whatever the split into batches.
#[test]
fn counting_is_the_same_whatever_the_batches_and_replays() {
    let edits: Vec<Edit> = (1..=50)
        .map(|v| {
            edit(
                if v % 3 == 0 { "x" } else { "y" },
                v,
                ["a", "b"][v as usize % 2],
                v % 4,
                v % 3,
                T0 + v as i64 * 7_000,
            )
        })
        .collect();
    // Per document, versions must be 1.. in order: renumber.
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    let edits: Vec<Edit> = edits
        .into_iter()
        .map(|mut e| {
            let v = next.entry(e.doc.clone()).or_insert(0);
            *v += 1;
            e.version = *v;
            e
        })
        .collect();
    let once = run_batches(&edits, &[edits.len()]);
    for split in [vec![1, 49], vec![10, 10, 30], vec![25, 25]] {
        // Each batch is preceded by a replay of everything before it.
        let mut replayed = Vec::new();
        let mut at = 0;
        let mut sizes = Vec::new();
        for size in split {
            replayed.extend_from_slice(&edits[..at]);
            replayed.extend_from_slice(&edits[at..at + size]);
            sizes.push(at + size);
            at += size;
        }
        assert_eq!(run_batches(&replayed, &sizes), once);
    }
}

/// Counts `edits` in batches of the given sizes, carrying the rows from batch to batch as the
/// store would; returns the final documents, authors and runs.
#[allow(clippy::type_complexity)]
fn run_batches(
    edits: &[Edit],
    sizes: &[usize],
) -> (
    BTreeMap<String, DocumentTotals>,
    BTreeMap<(String, String), (u64, u64, u64)>,
    BTreeMap<(String, String, i64), EditRun>,
) {
    let mut documents = BTreeMap::new();
    let mut authors: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
    let mut runs: BTreeMap<(String, String, i64), EditRun> = BTreeMap::new();
    let mut at = 0;
    for size in sizes {
        let batch = &edits[at..at + size];
        at += size;
        let latest: BTreeMap<(String, String), EditRun> = runs
            .iter()
            .map(|((d, a, _), r)| ((d.clone(), a.clone()), *r))
            .fold(BTreeMap::new(), |mut m, (k, r)| {
                m.insert(k, r); // BTreeMap order: the latest start comes last
                m
            });
        let mut tally = Tally::new(GAP, documents.clone(), latest, []);
        for e in batch {
            tally.apply(e);
        }
        let changes = tally.into_changes();
        documents.extend(changes.documents);
        for (k, inc) in changes.authors {
            let row = authors.entry(k).or_default();
            row.0 += inc.ops;
            row.1 += inc.chars_inserted;
            row.2 += inc.chars_deleted;
        }
        runs.extend(changes.runs);
    }
    (documents, authors, runs)
}
