//! Deleted documents: a tombstone (`deleted` record, docs/EVENTS.md) purges every row of its
//! document, and leaves a purge mark in `analytics_deletions` so that nothing of the purged history
//! is counted again. The difficulty: after a deletion the document's versions start again at 1, so
//! (doc, version) no longer tells a copy of an old version from a new one. The mark holds the
//! purged history's last version L, and a watermark: the position of the last record of the
//! document applied since the tombstone (the tombstone's own, at first). With `counted` the highest
//! version counted since the purge (0 if none), the rules for a record of a deleted document:
//!
//! 0. at or before the watermark: *read again* (a restart from a lower stored offset, another
//!    member's stale batch); applied already, skipped. Otherwise the watermark moves to it.
//!
//! **A tombstone** with last version T:
//! 1. T = L and T ≠ `counted`: a *copy* of the applied tombstone published again (a sequencer's
//!    takeover republishes it; a stale sequencer's copy lands late). Skipped: a new deletion ends the
//!    history being counted, so its last version is `counted` (every version of a history is on the
//!    topic before its tombstone);
//! 2. otherwise: purge the document's rows; the mark becomes (T, this position).
//!
//! **An edit** of version v:
//! 1. v ≤ `counted`: a duplicate, as always;
//! 2. `counted` + 1 < v ≤ L: a late copy of a version of the purged history (the new history's next
//!    version is `counted` + 1, and new histories have no gaps); skipped;
//! 3. otherwise counted, as the new history's next version.
//!
//! Rule 0 makes every record *read again* change nothing, whatever the order of batches (a record
//! beyond the watermark is read for the first time, after every record before it): the tables hold
//! what one pass over the topic gives. The other rules handle copies *published again* (a new
//! offset). What they cannot tell apart, with nothing more on the topic, is a late copy of the
//! purged history's version `counted` + 1 from the new history's own (edit rule 3 counts it, and
//! the real one is then a duplicate), and a late tombstone copy arriving when the new history has
//! reached exactly L (tombstone rule 2 purges the new history's counts). Both need a sequencer's
//! publish to land after its partition was taken over and the tombstone republished, and the
//! coincidence of versions. docs/ANALYTICS.md, "Deleted documents".

use super::Tally;
use crate::record::{Edit, Position, Tombstone};

/// The last tombstone applied to a document, and how far its records are applied since (a row of
/// `analytics_deletions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionMark {
    /// The watermark: where the last record of the document applied since the tombstone is on the
    /// topic (the tombstone's own position, until another follows).
    pub position: Position,
    /// The tombstone's last version: the versions the purged history had.
    pub last_version: u64,
    /// The user who deleted the document.
    pub author: String,
    /// The tombstone's record timestamp (ms since the epoch).
    pub deleted_ms: i64,
}

/// What became of one tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The document's rows are purged and the mark set.
    Purged,
    /// The tombstone was applied already (read again): nothing changed.
    ReadAgain,
    /// A copy of the tombstone applied already, published again: nothing changed.
    Copy,
}

impl Tally {
    /// Applies a tombstone, in topic order among the batch's records.
    pub fn delete(&mut self, tombstone: &Tombstone) -> Deleted {
        let doc = &tombstone.doc;
        if self.read_again(doc, tombstone.position) {
            return Deleted::ReadAgain;
        }
        let counted = self.documents.get(doc).map_or(0, |t| t.last_version);
        if let Some(mark) = self.deletions.get(doc) {
            if tombstone.last_version == mark.last_version && tombstone.last_version != counted {
                self.advance(doc, tombstone.position);
                return Deleted::Copy;
            }
        }
        // Everything of the document: what is stored (the store deletes it first) and what this
        // batch counted before the tombstone.
        self.documents.remove(doc);
        self.latest_runs.retain(|(d, _), _| d != doc);
        let changes = &mut self.changes;
        changes.documents.remove(doc);
        changes.authors.retain(|(d, _), _| d != doc);
        changes.minutes.retain(|(d, _, _), _| d != doc);
        changes.user_minutes.retain(|(d, _, _), _| d != doc);
        changes.runs.retain(|(d, _, _), _| d != doc);
        changes.purged.insert(doc.clone());
        let mark = DeletionMark {
            position: tombstone.position,
            last_version: tombstone.last_version,
            author: tombstone.author.clone(),
            deleted_ms: tombstone.at_ms,
        };
        self.deletions.insert(doc.clone(), mark.clone());
        changes.deletions.insert(doc.clone(), mark);
        Deleted::Purged
    }

    /// Whether the record of `doc` at `position` was applied already: at or before the watermark
    /// of a deleted document (rule 0). Positions of different partitions do not compare (a
    /// document's records are all in one partition; a mark from another is from a topic with
    /// another partition count, and says nothing).
    pub(super) fn read_again(&self, doc: &str, position: Position) -> bool {
        self.deletions.get(doc).is_some_and(|mark| {
            position.partition == mark.position.partition && position.offset <= mark.position.offset
        })
    }

    /// Moves the watermark of a deleted document to `position`, a record applied now.
    pub(super) fn advance(&mut self, doc: &str, position: Position) {
        if let Some(mark) = self.deletions.get_mut(doc) {
            mark.position = position;
            self.changes.deletions.insert(doc.to_owned(), mark.clone());
        }
    }

    /// Whether `edit`, beyond the watermark, is a late copy of a version of the purged history
    /// (edit rule 2; never a duplicate of the `counted` versions).
    pub(super) fn of_deleted_history(&self, edit: &Edit, counted: u64) -> bool {
        self.deletions
            .get(&edit.doc)
            .is_some_and(|mark| edit.version > counted + 1 && edit.version <= mark.last_version)
    }
}
