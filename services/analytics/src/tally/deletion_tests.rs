//! Unit tests of the deletion rules (`deletion.rs`): each rule on its own, the two cases the topic
//! leaves ambiguous pinned as documented, and a seeded randomized run of whole topics (edits,
//! deletions, takeover republishes) read in random batches with random re-reads, against the truth.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::tests::{edit, GAP, T0};
use super::*;
use crate::record::{Position, Record, Tombstone};

fn at(offset: i64) -> Position {
    Position { partition: 0, offset }
}

fn edit_at(doc: &str, version: u64, author: &str, offset: i64) -> Edit {
    Edit { position: at(offset), ..edit(doc, version, author, 1, 0, T0 + offset * 1_000) }
}

fn tombstone(doc: &str, last_version: u64, offset: i64) -> Tombstone {
    Tombstone {
        doc: doc.into(),
        last_version,
        author: "root".into(),
        at_ms: T0 + offset * 1_000,
        position: at(offset),
    }
}

fn totals(last_version: u64) -> DocumentTotals {
    DocumentTotals {
        ops: last_version,
        chars_inserted: last_version,
        chars_deleted: 0,
        first_version: 1,
        last_version,
        first_seen_ms: T0,
        last_seen_ms: T0,
        versions_missed: 0,
    }
}

fn mark(last_version: u64, offset: i64) -> DeletionMark {
    DeletionMark { position: at(offset), last_version, author: "root".into(), deleted_ms: T0 }
}

#[test]
fn a_tombstone_purges_the_document_in_the_store_and_in_the_batch_and_the_new_history_counts_from_1() {
    let run = EditRun {
        started_ms: T0,
        last_edit_ms: T0,
        ops: 3,
        chars_inserted: 3,
        chars_deleted: 0,
        first_version: 1,
        last_version: 3,
    };
    let mut tally = Tally::new(
        GAP,
        [("d".to_owned(), totals(3)), ("e".to_owned(), totals(7))],
        [(("d".to_owned(), "old".to_owned()), run)],
        [],
    );
    assert_eq!(tally.apply(&edit_at("d", 4, "old", 10)), Applied::Counted);
    assert_eq!(tally.apply(&edit_at("e", 8, "other", 11)), Applied::Counted);
    assert_eq!(tally.delete(&tombstone("d", 4, 12)), Deleted::Purged);
    assert_eq!(tally.apply(&edit_at("d", 1, "new", 13)), Applied::Counted);
    assert_eq!(tally.apply(&edit_at("d", 2, "new", 14)), Applied::Counted);
    let changes = tally.into_changes();
    assert_eq!(changes.purged, ["d".to_owned()].into());
    // The watermark follows the document's records past the tombstone.
    assert_eq!(changes.deletions["d"], DeletionMark { deleted_ms: T0 + 12_000, ..mark(4, 14) });
    let d = changes.documents["d"];
    assert_eq!((d.ops, d.first_version, d.last_version, d.versions_missed), (2, 1, 2, 0));
    // Nothing of the old history is left to write: not its author, minutes or run.
    let authors: Vec<&(String, String)> = changes.authors.keys().collect();
    assert_eq!(authors, [&("d".to_owned(), "new".to_owned()), &("e".to_owned(), "other".to_owned())]);
    assert!(changes
        .minutes
        .keys()
        .chain(changes.user_minutes.keys())
        .all(|(_, _, who)| !who.ends_with("old")));
    let runs: Vec<(&str, &str, u64)> =
        changes.runs.iter().map(|((doc, a, _), r)| (doc.as_str(), a.as_str(), r.ops)).collect();
    assert_eq!(runs, [("d", "new", 2), ("e", "other", 1)], "the new author's run starts afresh");
    // The other document is untouched.
    assert_eq!(changes.documents["e"].ops, 8);
}

#[test]
fn a_tombstone_read_again_and_the_records_before_it_change_nothing() {
    // Stored: d deleted at offset 12 with last version 4, then versions 1 and 2 of the new history
    // at offsets 13 and 14 (the watermark).
    let mut tally = Tally::new(GAP, [("d".to_owned(), totals(2))], [], [("d".to_owned(), mark(4, 14))]);
    // A restart from a lower stored offset (or another member's stale batch) reads them again.
    assert_eq!(tally.apply(&edit_at("d", 3, "old", 8)), Applied::Duplicate);
    assert_eq!(tally.apply(&edit_at("d", 4, "old", 10)), Applied::Duplicate);
    assert_eq!(tally.delete(&tombstone("d", 4, 12)), Deleted::ReadAgain);
    assert_eq!(tally.apply(&edit_at("d", 1, "new", 13)), Applied::Duplicate);
    assert_eq!(tally.apply(&edit_at("d", 2, "new", 14)), Applied::Duplicate);
    assert_eq!(tally.apply(&edit_at("d", 3, "new", 15)), Applied::Counted);
    let changes = tally.into_changes();
    assert!(changes.purged.is_empty());
    assert_eq!(changes.deletions["d"].position, at(15), "the watermark moved");
    assert_eq!(changes.documents["d"].ops, 3);
}

#[test]
fn a_copy_of_the_tombstone_published_again_is_no_new_deletion_but_a_deletion_at_the_counted_version_is() {
    let mut tally = Tally::new(GAP, [("d".to_owned(), totals(2))], [], [("d".to_owned(), mark(4, 14))]);
    // A takeover republishes the tombstone and the new history after it, at new offsets.
    assert_eq!(tally.delete(&tombstone("d", 4, 20)), Deleted::Copy);
    assert_eq!(tally.apply(&edit_at("d", 1, "new", 21)), Applied::Duplicate);
    assert_eq!(tally.apply(&edit_at("d", 2, "new", 22)), Applied::Duplicate);
    assert!(tally.into_changes().purged.is_empty());

    // The new history deleted in turn: its last version is the one counted.
    let mut tally = Tally::new(GAP, [("d".to_owned(), totals(2))], [], [("d".to_owned(), mark(4, 14))]);
    assert_eq!(tally.delete(&tombstone("d", 2, 30)), Deleted::Purged);
    // Even with the last version of the history before: the counted version says it is new.
    let mut tally = Tally::new(GAP, [("d".to_owned(), totals(4))], [], [("d".to_owned(), mark(4, 16))]);
    assert_eq!(tally.delete(&tombstone("d", 4, 30)), Deleted::Purged);
    assert_eq!(tally.into_changes().deletions["d"].position, at(30));
}

#[test]
fn late_copies_of_the_purged_history_are_skipped_but_its_next_version_cannot_be_told_apart() {
    let mut tally = Tally::new(GAP, [("d".to_owned(), totals(2))], [], [("d".to_owned(), mark(10, 14))]);
    // Published again after the tombstone (a stale sequencer's copy landing late): versions the
    // new history cannot have next.
    assert_eq!(tally.apply(&edit_at("d", 5, "old", 20)), Applied::DeletedHistory);
    assert_eq!(tally.apply(&edit_at("d", 10, "old", 21)), Applied::DeletedHistory);
    // Version 3 is the new history's next: a late copy of the old version 3 is counted as it
    // (documented), and the real one is then a duplicate.
    assert_eq!(tally.apply(&edit_at("d", 3, "old", 22)), Applied::Counted);
    assert_eq!(tally.apply(&edit_at("d", 3, "new", 23)), Applied::Duplicate);
    // Past the purged history's last version, a jump is a loss of the new history, as always.
    assert_eq!(tally.apply(&edit_at("d", 12, "new", 24)), Applied::CountedAfterGap(8));
}

#[test]
fn a_document_deleted_before_it_was_counted_gets_its_mark_and_counts_from_1_after() {
    let mut tally = Tally::new(GAP, [], [], []);
    assert_eq!(tally.delete(&tombstone("d", 7, 5)), Deleted::Purged);
    assert_eq!(tally.apply(&edit_at("d", 1, "new", 6)), Applied::Counted);
    // Within the purged history's versions, a jump is taken for a late copy.
    assert_eq!(tally.apply(&edit_at("d", 3, "old", 7)), Applied::DeletedHistory);
    let changes = tally.into_changes();
    assert_eq!(changes.deletions["d"].last_version, 7);
    assert_eq!(changes.documents["d"].ops, 1);

    // After an empty document's deletion the new history starts at 1: a later start is a loss.
    let mut tally = Tally::new(GAP, [], [], []);
    assert_eq!(tally.delete(&tombstone("d", 0, 5)), Deleted::Purged);
    assert_eq!(tally.apply(&edit_at("d", 2, "new", 6)), Applied::CountedAfterGap(1));
    // The same empty deletion published again, with nothing counted: purging nothing again is
    // harmless.
    let mut tally = Tally::new(GAP, [], [], [("d".to_owned(), mark(0, 5))]);
    assert_eq!(tally.delete(&tombstone("d", 0, 9)), Deleted::Purged);
}

/// Found by the randomized run below: a decision that depends on what is counted (is this
/// tombstone a copy? is this version the next one?) must be made once. Read again later, when the
/// new history has moved on, the same record would be judged otherwise.
#[test]
fn a_record_read_again_is_not_judged_anew_when_the_new_history_has_moved_on() {
    // d deleted with last version 9; the new history at version 5 (watermark 20).
    let mut tally = Tally::new(GAP, [("d".to_owned(), totals(5))], [], [("d".to_owned(), mark(9, 20))]);
    // A copy of the tombstone (a takeover's republish), and a late copy of the purged version 8.
    assert_eq!(tally.delete(&tombstone("d", 9, 21)), Deleted::Copy);
    assert_eq!(tally.apply(&edit_at("d", 8, "old", 22)), Applied::DeletedHistory);
    for (v, offset) in [(6, 23), (7, 24), (8, 25), (9, 26)] {
        assert_eq!(tally.apply(&edit_at("d", v, "new", offset)), Applied::Counted);
    }
    // Read again now, the new history at 9: the tombstone copy would purge it (9 = 9), the old
    // version 8 is a duplicate anyway. Applied already, both change nothing.
    assert_eq!(tally.delete(&tombstone("d", 9, 21)), Deleted::ReadAgain);
    assert_eq!(tally.apply(&edit_at("d", 8, "old", 22)), Applied::Duplicate);
    let changes = tally.into_changes();
    assert!(changes.purged.is_empty());
    assert_eq!(changes.documents["d"].ops, 9);
    assert_eq!(changes.deletions["d"].position, at(26));
}

#[test]
fn positions_of_another_partition_do_not_compare() {
    let mut tally = Tally::new(GAP, [], [], [("d".to_owned(), mark(4, 100))]);
    let mut elsewhere = edit_at("d", 1, "new", 5);
    elsewhere.position.partition = 1;
    assert_eq!(tally.apply(&elsewhere), Applied::Counted);
}

/// The rows the store would hold: what [`Changes`] are applied to, batch after batch.
#[derive(Debug, Default)]
struct Rows {
    documents: BTreeMap<String, DocumentTotals>,
    authors: BTreeMap<(String, String), (u64, u64, u64)>,
    minutes: BTreeMap<(String, String), (u64, u64, u64)>,
    users: BTreeMap<(String, String), (u64, u64, u64)>,
    runs: BTreeMap<(String, String, i64), EditRun>,
    deletions: BTreeMap<String, DeletionMark>,
}

fn add(row: &mut (u64, u64, u64), i: &Increment) {
    row.0 += i.ops;
    row.1 += i.chars_inserted;
    row.2 += i.chars_deleted;
}

impl Rows {
    fn commit(&mut self, records: &[Record]) {
        let latest: BTreeMap<(String, String), EditRun> =
            self.runs.iter().map(|((d, a, _), r)| ((d.clone(), a.clone()), *r)).collect();
        let mut tally = Tally::new(GAP, self.documents.clone(), latest, self.deletions.clone());
        for record in records {
            match record {
                Record::Edit(e) => drop(tally.apply(e)),
                Record::Tombstone(t) => drop(tally.delete(t)),
            }
        }
        let changes = tally.into_changes();
        for doc in &changes.purged {
            self.documents.remove(doc);
            self.authors.retain(|(d, _), _| d != doc);
            self.minutes.retain(|(d, _), _| d != doc);
            self.users.retain(|(d, _), _| d != doc);
            self.runs.retain(|(d, _, _), _| d != doc);
        }
        self.deletions.extend(changes.deletions);
        self.documents.extend(changes.documents);
        for ((d, a), i) in &changes.authors {
            add(self.authors.entry((d.clone(), a.clone())).or_default(), i);
        }
        for ((d, _, a), i) in &changes.minutes {
            add(self.minutes.entry((d.clone(), a.clone())).or_default(), i);
        }
        for ((d, _, u), i) in &changes.user_minutes {
            add(self.users.entry((d.clone(), u.clone())).or_default(), i);
        }
        self.runs.extend(changes.runs);
    }
}

/// What the topic of one randomized run says, and what the tables must end up holding.
struct Topic {
    records: Vec<Record>,
    /// Per document: the events of its current history (what must be counted), and the last
    /// version of its last deletion.
    current: BTreeMap<String, (Vec<Edit>, Option<u64>)>,
}

/// Appends a copy of `record` to the topic, at the next offset and with the publish time `at_ms`.
fn publish(records: &mut Vec<Record>, record: &Record, at_ms: i64) {
    let offset = records.len() as i64;
    let mut record = record.clone();
    match &mut record {
        Record::Edit(e) => (e.position, e.at_ms) = (at(offset), at_ms),
        Record::Tombstone(t) => (t.position, t.at_ms) = (at(offset), at_ms),
    }
    records.push(record);
}

/// Edits, deletions, and sequencer takeovers that republish every commit after a random point of
/// the event log *as it is then* (a purged history is no longer in it; its tombstone is).
fn topic(rng: &mut StdRng) -> Topic {
    let docs = ["a", "b", "c"];
    // The event log in commit order: (record, the document's history number it belongs to).
    let mut log: Vec<(Record, u64)> = Vec::new();
    let mut history: BTreeMap<&str, (u64, u64)> = docs.iter().map(|d| (*d, (0, 0))).collect();
    let mut records = Vec::new();
    for step in 0..rng.gen_range(50..250_i64) {
        let now = T0 + step * 7_000;
        let doc = docs[rng.gen_range(0..docs.len())];
        let (number, version) = history.get_mut(doc).unwrap();
        let roll = rng.gen_range(0..100);
        if roll < 80 {
            *version += 1;
            let author = ["s1", "s2", "s3"][rng.gen_range(0..3)];
            let mut e = edit(doc, *version, author, rng.gen_range(0..4), rng.gen_range(0..3), now);
            e.user = format!("u-{}", rng.gen_range(0..2));
            log.push((Record::Edit(e), *number));
            publish(&mut records, &log.last().unwrap().0, now);
        } else if roll < 90 {
            let t = Tombstone {
                doc: doc.into(),
                last_version: *version,
                author: "root".into(),
                at_ms: now,
                position: at(0),
            };
            log.push((Record::Tombstone(t), *number));
            (*number, *version) = (*number + 1, 0);
            publish(&mut records, &log.last().unwrap().0, now);
        } else {
            // From up to 60 commits back: several deletions of a document may lie in between.
            let from = rng.gen_range(log.len().saturating_sub(60)..=log.len());
            for (record, number) in &log[from..] {
                let alive = matches!(record, Record::Tombstone(_)) || history[record.doc()].0 == *number;
                if alive {
                    publish(&mut records, record, now);
                }
            }
        }
    }
    let mut current: BTreeMap<String, (Vec<Edit>, Option<u64>)> = BTreeMap::new();
    for (record, number) in &log {
        let entry = current.entry(record.doc().to_owned()).or_default();
        match record {
            Record::Edit(e) if history[e.doc.as_str()].0 == *number => entry.0.push(e.clone()),
            Record::Edit(_) => {}
            Record::Tombstone(t) => entry.1 = Some(t.last_version),
        }
    }
    Topic { records, current }
}

/// Reads `topic` as consumers do: batches of random sizes, each committed with its offset; now
/// and then a restart from a lower stored offset, or another member's stale batch of records
/// already counted committed late.
fn consume(topic: &Topic, rng: &mut StdRng) -> Rows {
    let mut rows = Rows::default();
    let end = topic.records.len();
    let mut stored = 0;
    while stored < end {
        let size = rng.gen_range(1..=20);
        let batch = &topic.records[stored..(stored + size).min(end)];
        rows.commit(batch);
        stored = (stored + size).min(end);
        match rng.gen_range(0..10) {
            0 => stored = rng.gen_range(stored.saturating_sub(100)..=stored),
            1 => {
                let from = rng.gen_range(stored.saturating_sub(100)..=stored);
                let to = rng.gen_range(from..=stored);
                rows.commit(&topic.records[from..to]);
            }
            _ => {}
        }
    }
    rows
}

fn check(topic: &Topic, rows: &Rows) {
    for (doc, (events, deleted)) in &topic.current {
        assert_eq!(rows.deletions.get(doc).map(|m| m.last_version), *deleted, "{doc}: the purge mark");
        let mut authors: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
        let mut users: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
        for e in events {
            let i = Increment::of(e);
            add(authors.entry((doc.clone(), e.author.clone())).or_default(), &i);
            add(users.entry((doc.clone(), e.user.clone())).or_default(), &i);
        }
        let of_doc =
            |m: &BTreeMap<(String, String), (u64, u64, u64)>| -> BTreeMap<(String, String), (u64, u64, u64)> {
                m.iter().filter(|((d, _), _)| d == doc).map(|(k, v)| (k.clone(), *v)).collect()
            };
        assert_eq!(of_doc(&rows.authors), authors, "{doc}: per session");
        assert_eq!(of_doc(&rows.minutes), authors, "{doc}: minutes summed per session");
        assert_eq!(of_doc(&rows.users), users, "{doc}: per user");
        let mut runs: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
        for ((d, a, _), r) in rows.runs.iter().filter(|((d, _, _), _)| d == doc) {
            let row = runs.entry((d.clone(), a.clone())).or_default();
            (row.0, row.1, row.2) = (row.0 + r.ops, row.1 + r.chars_inserted, row.2 + r.chars_deleted);
        }
        assert_eq!(runs, authors, "{doc}: runs summed per session");
        match rows.documents.get(doc) {
            None => assert!(events.is_empty(), "{doc}: {} versions not counted", events.len()),
            Some(t) => {
                let ops = events.len() as u64;
                assert_eq!(
                    (t.ops, t.first_version, t.last_version, t.versions_missed),
                    (ops, 1, ops, 0),
                    "{doc}"
                );
            }
        }
    }
}

/// Whatever the batches, re-reads and takeover republishes, the tables hold each document's
/// current history counted once and nothing of a purged one.
#[test]
fn randomized_topics_with_deletions_count_the_current_histories_once() {
    let base = tandem_integration_tests::seed();
    for run in 0..1_000_u64 {
        let seed = base.wrapping_add(run);
        let mut rng = StdRng::seed_from_u64(seed);
        let topic = topic(&mut rng);
        let rows = consume(&topic, &mut rng);
        let result = std::panic::catch_unwind(|| check(&topic, &rows));
        if let Err(why) = result {
            eprintln!("failing run: replay with TANDEM_SEED={seed}");
            std::panic::resume_unwind(why);
        }
    }
}
