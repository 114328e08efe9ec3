//! The analytics tables on a real Postgres (a database of the test's own): a batch committed
//! again, or by several members at the same moment, is counted once; offsets are stored with it;
//! a tombstone purges its document's rows in every table, once, whoever commits it.

use std::collections::BTreeMap;

use tandem_analytics::record::{Edit, Position, Record, Tombstone};
use tandem_analytics::store::{is_conflict, AnalyticsStore, Batch, Summary};
use tandem_integration_tests::cluster::TestDatabase;

const TOPIC: &str = "test.events";
const GAP: i64 = 300_000;
const T0: i64 = 1_704_067_200_000;

/// Edits of `doc` at offsets equal to their versions (no deletion compares them here).
fn edits(doc: &str, versions: std::ops::RangeInclusive<u64>) -> Vec<Record> {
    versions.map(|v| Record::Edit(edit(doc, v, "author", v as i64))).collect()
}

fn edit(doc: &str, version: u64, author: &str, offset: i64) -> Edit {
    Edit {
        doc: doc.to_owned(),
        version,
        author: format!("{author}-{}", version % 3),
        user: format!("user-{}", version % 2),
        inserted: version,
        deleted: version % 2,
        at_ms: T0 + version as i64 * 1_000,
        position: Position { partition: 0, offset },
    }
}

fn batch(records: Vec<Record>, partition: i32, next_offset: i64) -> Batch {
    Batch { records, next_offsets: BTreeMap::from([(partition, next_offset)]) }
}

/// Conflicts met by [`commit`].
static CONFLICTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Commits `batch`, retrying while another transaction changed the same rows, as the consumer does.
async fn commit(store: &AnalyticsStore, batch: &Batch) -> Summary {
    loop {
        match store.commit(TOPIC, batch, GAP).await {
            Ok(summary) => return summary,
            Err(e) if is_conflict(&e) => {
                CONFLICTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => panic!("commit failed: {e:#}"),
        }
    }
}

async fn store(db: &TestDatabase) -> AnalyticsStore {
    let store = AnalyticsStore::connect(&db.url()).await.expect("connect");
    assert_eq!(store.migrate().await.unwrap(), 2);
    assert_eq!(store.migrate().await.unwrap(), 0, "migrating again changes nothing");
    store
}

fn document(db: &TestDatabase, doc: &str) -> String {
    db.query(&format!(
        "SELECT ops, chars_inserted, chars_deleted, first_version, last_version FROM analytics_documents \
         WHERE doc = '{doc}'"
    ))
    .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_committed_again_changes_nothing_but_its_offsets() {
    let db = TestDatabase::create();
    let store = store(&db).await;
    let first = batch(edits("d", 1..=10), 0, 10);
    assert_eq!(commit(&store, &first).await, Summary { counted: 10, ..Summary::default() });
    // 55 characters in (1 + … + 10), 5 out.
    assert_eq!(document(&db, "d"), "10|55|5|1|10");
    assert_eq!(commit(&store, &first).await, Summary { duplicates: 10, ..Summary::default() });
    assert_eq!(document(&db, "d"), "10|55|5|1|10");
    // A later batch overlapping the first: only the new versions count.
    let second = batch(edits("d", 8..=12), 0, 15);
    assert_eq!(commit(&store, &second).await, Summary { counted: 2, duplicates: 3, ..Summary::default() });
    assert_eq!(document(&db, "d"), "12|78|6|1|12");
    assert_eq!(store.next_offsets(TOPIC, &[0, 1]).await.unwrap(), [(0, 15)].into());
    let authors = db.query("SELECT sum(ops), sum(chars_inserted) FROM analytics_document_authors");
    assert_eq!(authors, ["12|78"]);
    let minutes = db.query("SELECT sum(ops), count(DISTINCT minute) FROM analytics_minutes");
    assert_eq!(minutes, ["12|1"], "12 edits a second apart: one minute");
    let runs =
        db.query("SELECT author, ops, first_version, last_version FROM analytics_edit_runs ORDER BY author");
    assert_eq!(runs, ["author-0|4|3|12", "author-1|4|1|10", "author-2|4|2|11"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_committing_the_same_records_at_once_count_them_once() {
    let db = TestDatabase::create();
    let store = store(&db).await;
    // Two members that both think they own partition 0 (a rebalance in progress), each with its
    // own view of the records, and several documents per batch.
    let mut tasks = Vec::new();
    for member in 0..6_u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut total = Summary::default();
            for round in 0..10_u64 {
                // Each member reads on from where its last batch began, as an owner does.
                let (from, to) = (round * 10 + 1, round * 10 + 13 + member % 3);
                let mut edits = edits("x", from..=to);
                edits.extend(self::edits("y", from..=to));
                let summary = commit(&store, &batch(edits, 0, to as i64)).await;
                total.counted += summary.counted;
                total.duplicates += summary.duplicates;
            }
            total
        }));
    }
    let mut counted = 0;
    for task in tasks {
        counted += task.await.unwrap().counted;
    }
    let conflicts = CONFLICTS.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{conflicts} commits met another member's and were retried");
    assert!(conflicts > 0, "the members never met: the test shows nothing");
    // Every version from 1 to the highest any member saw, once per document, whoever counted it.
    let highest: u64 = db.query("SELECT max(last_version) FROM analytics_documents")[0].parse().unwrap();
    assert_eq!(counted, 2 * highest, "each version of x and y counted by exactly one member");
    for doc in ["x", "y"] {
        let row = document(&db, doc);
        let (ops, rest) = row.split_once('|').unwrap();
        assert_eq!(ops.parse::<u64>().unwrap(), highest, "{doc}: {row}");
        assert!(rest.ends_with(&format!("|1|{highest}")), "{doc}: {row}");
    }
    let sums =
        db.query("SELECT sum(ops) FROM analytics_minutes UNION ALL SELECT sum(ops) FROM analytics_edit_runs");
    assert_eq!(sums, [(2 * highest).to_string(), (2 * highest).to_string()]);
}

/// Every row of `doc` in each analytics table: (table, rows).
fn rows_of(db: &TestDatabase, doc: &str) -> Vec<(&'static str, u64)> {
    [
        "analytics_documents",
        "analytics_document_authors",
        "analytics_minutes",
        "analytics_user_minutes",
        "analytics_edit_runs",
        "analytics_deletions",
    ]
    .into_iter()
    .map(|table| {
        (table, db.query(&format!("SELECT count(*) FROM {table} WHERE doc = '{doc}'"))[0].parse().unwrap())
    })
    .collect()
}

fn tombstone(doc: &str, last_version: u64, offset: i64) -> Record {
    Record::Tombstone(Tombstone {
        doc: doc.to_owned(),
        last_version,
        author: "root".to_owned(),
        at_ms: T0,
        position: Position { partition: 0, offset },
    })
}

/// One partition: `x` has versions 1 to 60 by `old-*` sessions, is deleted, then has versions 1 to
/// 50 by `new-*` sessions; `y`'s versions 1 to 110 are interleaved with them.
fn stream() -> Vec<Record> {
    let mut records = Vec::new();
    for i in 0..110_u64 {
        let offset = records.len() as i64;
        records.push(Record::Edit(edit("y", i + 1, "y", offset)));
        let offset = records.len() as i64;
        match i {
            0..60 => records.push(Record::Edit(edit("x", i + 1, "old", offset))),
            60 => records.push(tombstone("x", 60, offset)),
            _ => records.push(Record::Edit(edit("x", i - 60, "new", offset))),
        }
    }
    records
}

/// What `x` must end up as: its new history only (versions 1 to 49), nothing of the old one.
fn check_x_counted(db: &TestDatabase) {
    assert_eq!(document(db, "x"), "49|1225|25|1|49", "x: versions 1 to 49 of the new history only");
    for table in
        ["analytics_document_authors", "analytics_minutes", "analytics_user_minutes", "analytics_edit_runs"]
    {
        let sums = db.query(&format!("SELECT sum(ops), sum(chars_inserted) FROM {table} WHERE doc = 'x'"));
        assert_eq!(sums, ["49|1225"], "{table}");
    }
    let old = db.query("SELECT count(*) FROM analytics_document_authors WHERE author LIKE 'old-%'");
    assert_eq!(old, ["0"], "no row of the purged history's sessions");
    // The watermark: x's last record (the deletion was at offset 121).
    let mark =
        db.query(r#"SELECT last_version, author, "partition", through_offset FROM analytics_deletions"#);
    assert_eq!(mark, ["60|root|0|219"]);
}

/// `check_x_counted`, and `y` untouched by x's deletion.
fn check_stream_counted(db: &TestDatabase) {
    check_x_counted(db);
    assert_eq!(document(db, "y"), "110|6105|55|1|110", "y: untouched by x's deletion");
    for table in
        ["analytics_document_authors", "analytics_minutes", "analytics_user_minutes", "analytics_edit_runs"]
    {
        let sums = db.query(&format!("SELECT sum(ops), sum(chars_inserted) FROM {table} WHERE doc = 'y'"));
        assert_eq!(sums, ["110|6105"], "{table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_purges_every_table_once_and_a_replay_does_not_bring_the_history_back() {
    let db = TestDatabase::create();
    let store = store(&db).await;
    let records = stream();
    // Up to just before the tombstone: x has 60 versions in every table.
    let summary = commit(&store, &batch(records[..121].to_vec(), 0, 121)).await;
    assert_eq!(summary, Summary { counted: 121, ..Summary::default() });
    assert_eq!(
        rows_of(&db, "x").iter().map(|(_, n)| *n).filter(|n| *n > 0).count(),
        5,
        "{:?}",
        rows_of(&db, "x")
    );
    // The tombstone and the rest.
    let summary = commit(&store, &batch(records[121..].to_vec(), 0, records.len() as i64)).await;
    assert_eq!((summary.purged, summary.counted), (1, 49 + 49));
    check_stream_counted(&db);
    // The whole partition read again (stored offsets lost, another member's lower offset): the old
    // history is before the mark, the tombstone read again, the new history duplicates.
    let summary = commit(&store, &batch(records.clone(), 0, records.len() as i64)).await;
    assert_eq!(summary, Summary { duplicates: 110 + 60 + 49, tombstones_repeated: 1, ..Summary::default() });
    check_stream_counted(&db);
    // A second deletion of x, at its counted version: every row of x goes, y's stay.
    let end = records.len() as i64;
    let summary = commit(&store, &batch(vec![tombstone("x", 49, end)], 0, end + 1)).await;
    assert_eq!(summary.purged, 1);
    let x: Vec<u64> = rows_of(&db, "x").iter().map(|(_, n)| *n).collect();
    assert_eq!(x, [0, 0, 0, 0, 0, 1], "only the purge mark is left of x");
    assert_eq!(document(&db, "y"), "110|6105|55|1|110");
}

/// As `members_committing_the_same_records_at_once_count_them_once`, with a deletion in the
/// middle of the partition: members that read it at the same moment, in batches that end before,
/// at or after it, purge once, and none writes the purged rows back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_committing_a_tombstone_at_once_purge_once_and_bring_nothing_back() {
    let db = TestDatabase::create();
    let store = store(&db).await;
    // Only x: a batch that also wrote y's row would conflict on it whatever the purge does.
    let records: Vec<Record> = stream().into_iter().filter(|r| r.doc() == "x").collect();
    let records = std::sync::Arc::new(records);
    let conflicts_before = CONFLICTS.load(std::sync::atomic::Ordering::Relaxed);
    let mut tasks = Vec::new();
    for member in 0..6_usize {
        let (store, records) = (store.clone(), records.clone());
        tasks.push(tokio::spawn(async move {
            let mut at = 0;
            while at < records.len() {
                // Each member reads on from where its last batch began, as an owner does.
                let to = (at + 4 + member * 3).min(records.len());
                let next = records[to - 1].position().offset + 1;
                commit(&store, &batch(records[at..to].to_vec(), 0, next)).await;
                at += 4;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let conflicts = CONFLICTS.load(std::sync::atomic::Ordering::Relaxed) - conflicts_before;
    eprintln!("{conflicts} commits met another member's and were retried");
    assert!(conflicts > 0, "the members never met: the test shows nothing");
    check_x_counted(&db);
}
