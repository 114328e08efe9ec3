//! The counting rules, as a pure function of (what the tables hold, the batch's records) → (the
//! rows to write): no Kafka, no Postgres, so every rule is a unit test.
//!
//! The store reads the rows this batch touches inside its transaction ([`Tally::new`]), feeds the
//! batch's records in topic order ([`Tally::apply`] for an edit, [`Tally::delete`] for a
//! tombstone) and writes [`Tally::into_changes`] in the same transaction, together with the next
//! offsets.
//!
//! **Deduplication.** The events topic delivers every committed version at least once
//! (docs/EVENTS.md): a republished copy, a record read again after a restart. Each document's row
//! keeps the highest version counted (`last_version`); an edit whose version is not above it is a
//! duplicate and changes nothing. Versions of a document arrive in increasing order once copies are
//! dropped, so this mark is all the state deduplication needs, until a document is deleted:
//! then its versions start again at 1, and the rules of [`deletion`] decide which history a
//! record belongs to.

use std::collections::BTreeMap;

use crate::record::Edit;

mod deletion;

pub use deletion::{Deleted, DeletionMark};

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
/// row of `analytics_minutes` or `analytics_user_minutes` (where the times are not used).
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
    /// A version already counted, or a record applied already (read again): nothing changed.
    Duplicate,
    /// A late copy of a version of a history the document's deletion purged: nothing changed.
    DeletedHistory,
}

/// The rows a batch writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Documents whose stored rows (in every table but `analytics_deletions`) are deleted before
    /// anything below is written: the increments below count from nothing.
    pub purged: std::collections::BTreeSet<String>,
    /// New purge marks and watermarks (replace what is stored).
    pub deletions: BTreeMap<String, DeletionMark>,
    /// New values of the documents' rows (replace what is stored).
    pub documents: BTreeMap<String, DocumentTotals>,
    /// Increments of (document, author) rows (added to what is stored).
    pub authors: BTreeMap<(String, String), Increment>,
    /// Increments of (document, minute start in ms, author) rows.
    pub minutes: BTreeMap<(String, i64, String), Increment>,
    /// Increments of (document, minute start in ms, user) rows.
    pub user_minutes: BTreeMap<(String, i64, String), Increment>,
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
    /// The purge mark of every document the batch names that was ever deleted; then updated.
    deletions: BTreeMap<String, DeletionMark>,
    changes: Changes,
}

impl Tally {
    /// Starts a batch from the stored rows of its documents, the stored latest run of each of its
    /// (document, author) pairs and the purge marks of its documents. `run_gap_ms`: an edit this
    /// long or longer after its author's previous edit on the document starts a new run.
    pub fn new(
        run_gap_ms: i64,
        documents: impl IntoIterator<Item = (String, DocumentTotals)>,
        latest_runs: impl IntoIterator<Item = ((String, String), EditRun)>,
        deletions: impl IntoIterator<Item = (String, DeletionMark)>,
    ) -> Self {
        Self {
            run_gap_ms,
            documents: documents.into_iter().collect(),
            latest_runs: latest_runs.into_iter().collect(),
            deletions: deletions.into_iter().collect(),
            changes: Changes::default(),
        }
    }

    /// Counts one edit, unless its version was counted already or belongs to a deleted history.
    /// Records of one document must come in topic order.
    pub fn apply(&mut self, edit: &Edit) -> Applied {
        if self.read_again(&edit.doc, edit.position) {
            return Applied::Duplicate;
        }
        self.advance(&edit.doc, edit.position);
        let counted = self.documents.get(&edit.doc).map_or(0, |t| t.last_version);
        if edit.version <= counted {
            return Applied::Duplicate;
        }
        if self.of_deleted_history(edit, counted) {
            return Applied::DeletedHistory;
        }
        let applied = match self.documents.get_mut(&edit.doc) {
            None => {
                // The first version this reader sees of the document: 1, or a later one when
                // retention has dropped the start (not a loss). After a deletion nothing can have
                // dropped the new history's start, so a later one is a loss.
                let missed = if self.deletions.contains_key(&edit.doc) { edit.version - 1 } else { 0 };
                let totals = DocumentTotals {
                    ops: 1,
                    chars_inserted: edit.inserted,
                    chars_deleted: edit.deleted,
                    first_version: edit.version,
                    last_version: edit.version,
                    first_seen_ms: edit.at_ms,
                    last_seen_ms: edit.at_ms,
                    versions_missed: missed,
                };
                self.documents.insert(edit.doc.clone(), totals);
                if missed > 0 {
                    Applied::CountedAfterGap(missed)
                } else {
                    Applied::Counted
                }
            }
            Some(totals) => {
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
        for (minutes, who) in
            [(&mut self.changes.minutes, &edit.author), (&mut self.changes.user_minutes, &edit.user)]
        {
            let key = (edit.doc.clone(), minute, who.clone());
            match minutes.get_mut(&key) {
                Some(increment) => increment.add(edit),
                None => {
                    minutes.insert(key, Increment::of(edit));
                }
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
mod tests;

#[cfg(test)]
mod deletion_tests;
