//! The counting rules, as a pure function of (what the tables hold, the batch's edits) → (the rows
//! to write): no Kafka, no Postgres, so every rule is a unit test.
//!
//! The store reads the rows this batch touches inside its transaction ([`Tally::new`]), feeds the
//! batch's edits in topic order ([`Tally::apply`]) and writes [`Tally::into_changes`] in the same
//! transaction, together with the next offsets.
//!
//! **Deduplication.** The events topic delivers every committed version at least once
//! (docs/EVENTS.md): a republished copy, a record read again after a restart. Each document's row
//! keeps the highest version counted (`last_version`); an edit whose version is not above it is a
//! duplicate and changes nothing. Versions of a document arrive in increasing order once copies are
//! dropped, so this mark is all the state deduplication needs.

use std::collections::BTreeMap;

use crate::record::Edit;

/// Milliseconds in a minute: the bucket of the per-minute counters.
const MINUTE_MS: i64 = 60_000;

/// A document's row of `analytics_documents`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentTotals {
    /// Versions counted, each once.
    pub ops: u64,
    pub chars_inserted: u64,
    pub chars_deleted: u64,
    /// The first version counted: 1, unless the topic's retention had already dropped the start.
    pub first_version: u64,
    /// The highest version counted: the deduplication mark.
    pub last_version: u64,
    /// Earliest and latest record timestamp counted (ms since the epoch).
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    /// Versions never seen between two counted ones (records lost to the reader): 0 normally.
    pub versions_missed: u64,
}

/// What a batch adds to one (document, author) row of `analytics_document_authors`, or to one
/// (document, minute, author) row of `analytics_minutes` (where the times are not used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Increment {
    pub ops: u64,
    pub chars_inserted: u64,
    pub chars_deleted: u64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

impl Increment {
    fn of(edit: &Edit) -> Self {
        Self {
            ops: 1,
            chars_inserted: edit.inserted,
            chars_deleted: edit.deleted,
            first_seen_ms: edit.at_ms,
            last_seen_ms: edit.at_ms,
        }
    }

    fn add(&mut self, edit: &Edit) {
        self.ops += 1;
        self.chars_inserted += edit.inserted;
        self.chars_deleted += edit.deleted;
        self.first_seen_ms = self.first_seen_ms.min(edit.at_ms);
        self.last_seen_ms = self.last_seen_ms.max(edit.at_ms);
    }
}

/// An author's run of edits on one document (a row of `analytics_edit_runs`): consecutive edits
/// less than the run gap apart (5 minutes by default) belong to one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EditRun {
    /// The timestamp of its first edit; with (doc, author), the row's key. Never changes.
    pub started_ms: i64,
    /// The latest timestamp of its edits.
    pub last_edit_ms: i64,
    pub ops: u64,
    pub chars_inserted: u64,
    pub chars_deleted: u64,
    pub first_version: u64,
    pub last_version: u64,
}

impl EditRun {
    fn start(edit: &Edit) -> Self {
        Self {
            started_ms: edit.at_ms,
            last_edit_ms: edit.at_ms,
            ops: 1,
            chars_inserted: edit.inserted,
            chars_deleted: edit.deleted,
            first_version: edit.version,
            last_version: edit.version,
        }
    }
}

/// What became of one edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Counted.
    Counted,
    /// Counted, after a jump over this many versions never seen (a loss the reader cannot repair:
    /// logged and counted, docs/EVENTS.md "Ordering per document").
    CountedAfterGap(u64),
    /// A version already counted: nothing changed.
    Duplicate,
}

/// The rows a batch writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// New values of the documents' rows (replace what is stored).
    pub documents: BTreeMap<String, DocumentTotals>,
    /// Increments of (document, author) rows (added to what is stored).
    pub authors: BTreeMap<(String, String), Increment>,
    /// Increments of (document, minute start in ms, author) rows.
    pub minutes: BTreeMap<(String, i64, String), Increment>,
    /// New values of the runs this batch started or extended, by (document, author, started_ms).
    pub runs: BTreeMap<(String, String, i64), EditRun>,
}

/// One batch being counted.
#[derive(Debug)]
pub struct Tally {
    run_gap_ms: i64,
    /// Every document the batch names that has a row, as read in the transaction; then updated.
    documents: BTreeMap<String, DocumentTotals>,
    /// The latest run of each (document, author) of the batch that has one; then updated.
    latest_runs: BTreeMap<(String, String), EditRun>,
    changes: Changes,
}

impl Tally {
    /// Starts a batch from the stored rows of its documents and the stored latest run of each of
    /// its (document, author) pairs. `run_gap_ms`: an edit this long or longer after its author's
    /// previous edit on the document starts a new run.
    pub fn new(
        run_gap_ms: i64,
        documents: impl IntoIterator<Item = (String, DocumentTotals)>,
        latest_runs: impl IntoIterator<Item = ((String, String), EditRun)>,
    ) -> Self {
        Self {
            run_gap_ms,
            documents: documents.into_iter().collect(),
            latest_runs: latest_runs.into_iter().collect(),
            changes: Changes::default(),
        }
    }

    /// Counts one edit, unless its version was counted already. Edits of one document must come
    /// in topic order.
    pub fn apply(&mut self, edit: &Edit) -> Applied {
        let applied = match self.documents.get_mut(&edit.doc) {
            None => {
                // The first version this reader sees of the document: 1, or a later one when
                // retention has dropped the start (not a loss).
                let totals = DocumentTotals {
                    ops: 1,
                    chars_inserted: edit.inserted,
                    chars_deleted: edit.deleted,
                    first_version: edit.version,
                    last_version: edit.version,
                    first_seen_ms: edit.at_ms,
                    last_seen_ms: edit.at_ms,
                    versions_missed: 0,
                };
                self.documents.insert(edit.doc.clone(), totals);
                Applied::Counted
            }
            Some(totals) => {
                if edit.version <= totals.last_version {
                    return Applied::Duplicate;
                }
                let missed = edit.version - totals.last_version - 1;
                totals.ops += 1;
                totals.chars_inserted += edit.inserted;
                totals.chars_deleted += edit.deleted;
                totals.last_version = edit.version;
                totals.first_seen_ms = totals.first_seen_ms.min(edit.at_ms);
                totals.last_seen_ms = totals.last_seen_ms.max(edit.at_ms);
                totals.versions_missed += missed;
                if missed > 0 {
                    Applied::CountedAfterGap(missed)
                } else {
                    Applied::Counted
                }
            }
        };
        let totals = self.documents[&edit.doc];
        self.changes.documents.insert(edit.doc.clone(), totals);

        let pair = (edit.doc.clone(), edit.author.clone());
        match self.changes.authors.get_mut(&pair) {
            Some(increment) => increment.add(edit),
            None => {
                self.changes.authors.insert(pair.clone(), Increment::of(edit));
            }
        }
        let minute = edit.at_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        let key = (edit.doc.clone(), minute, edit.author.clone());
        match self.changes.minutes.get_mut(&key) {
            Some(increment) => increment.add(edit),
            None => {
                self.changes.minutes.insert(key, Increment::of(edit));
            }
        }
        self.extend_run(pair, edit);
        applied
    }

    /// Adds `edit` to its author's latest run on the document, or starts a new run when the
    /// latest one's last edit is `run_gap_ms` or more before it. An edit timestamped before the
    /// run's last edit (two publishers' clocks disagree a little) joins the run without moving its
    /// end back.
    fn extend_run(&mut self, pair: (String, String), edit: &Edit) {
        let run = match self.latest_runs.get_mut(&pair) {
            Some(run) if edit.at_ms - run.last_edit_ms < self.run_gap_ms => {
                run.last_edit_ms = run.last_edit_ms.max(edit.at_ms);
                run.ops += 1;
                run.chars_inserted += edit.inserted;
                run.chars_deleted += edit.deleted;
                run.first_version = run.first_version.min(edit.version);
                run.last_version = run.last_version.max(edit.version);
                *run
            }
            _ => {
                let run = EditRun::start(edit);
                self.latest_runs.insert(pair.clone(), run);
                run
            }
        };
        let (doc, author) = pair;
        self.changes.runs.insert((doc, author, run.started_ms), run);
    }

    /// The rows to write.
    pub fn into_changes(self) -> Changes {
        self.changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAP: i64 = 5 * MINUTE_MS;
    /// 2024-01-01T00:00:00Z.
    const T0: i64 = 1_704_067_200_000;

    fn edit(doc: &str, version: u64, author: &str, inserted: u64, deleted: u64, at_ms: i64) -> Edit {
        Edit { doc: doc.into(), version, author: author.into(), inserted, deleted, at_ms }
    }

    fn count(tally: &mut Tally, edits: &[Edit]) -> Vec<Applied> {
        edits.iter().map(|e| tally.apply(e)).collect()
    }

    #[test]
    fn a_new_document_is_counted_per_document_author_and_minute() {
        let mut tally = Tally::new(GAP, [], []);
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
        let minutes: Vec<(i64, &str, u64)> = changes
            .minutes
            .iter()
            .map(|((_, m, a), inc)| ((m - T0) / MINUTE_MS, a.as_str(), inc.ops))
            .collect();
        assert_eq!(minutes, vec![(0, "alice", 1), (1, "alice", 1), (1, "bob", 1)]);
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
        let mut tally = Tally::new(GAP, [("d".to_owned(), stored)], []);
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
        let mut tally = Tally::new(GAP, [("d".to_owned(), stored)], []);
        count(&mut tally, &[edit("d", 1, "a", 1, 0, T0), edit("d", 2, "a", 1, 0, T0)]);
        assert_eq!(tally.into_changes(), Changes::default());
    }

    #[test]
    fn a_jump_is_counted_as_missed_versions_but_a_late_start_is_not() {
        let mut tally = Tally::new(GAP, [], []);
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
        let mut tally = Tally::new(GAP, [], [(pair.clone(), stored_run)]);
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
        let mut tally = Tally::new(GAP, [], []);
        count(&mut tally, &[edit("d", 1, "a", 1, 0, T0), edit("d", 1, "a", 1, 0, T0 + 2 * GAP)]);
        let runs = tally.into_changes().runs;
        assert_eq!(runs.len(), 1);
        assert_eq!(runs.values().next().unwrap().last_edit_ms, T0);
    }

    #[test]
    fn minutes_before_the_epoch_round_down() {
        let mut tally = Tally::new(GAP, [], []);
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
            let mut tally = Tally::new(GAP, documents.clone(), latest);
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
}
