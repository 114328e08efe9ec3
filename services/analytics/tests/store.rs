//! The analytics tables on a real Postgres (a database of the test's own): a batch committed
//! again, or by several members at the same moment, is counted once; offsets are stored with it.

use std::collections::BTreeMap;

use tandem_analytics::record::Edit;
use tandem_analytics::store::{is_conflict, AnalyticsStore, Batch, Summary};
use tandem_integration_tests::cluster::TestDatabase;

const TOPIC: &str = "test.events";
const GAP: i64 = 300_000;
const T0: i64 = 1_704_067_200_000;

fn edits(doc: &str, versions: std::ops::RangeInclusive<u64>) -> Vec<Edit> {
    versions
        .map(|v| Edit {
            doc: doc.to_owned(),
            version: v,
            author: format!("author-{}", v % 3),
            inserted: v,
            deleted: v % 2,
            at_ms: T0 + v as i64 * 1_000,
        })
        .collect()
}

fn batch(edits: Vec<Edit>, partition: i32, next_offset: i64) -> Batch {
    Batch { edits, next_offsets: BTreeMap::from([(partition, next_offset)]) }
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
    assert_eq!(store.migrate().await.unwrap(), 1);
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
    assert_eq!(commit(&store, &first).await, Summary { counted: 10, duplicates: 0, versions_missed: 0 });
    // 55 characters in (1 + … + 10), 5 out.
    assert_eq!(document(&db, "d"), "10|55|5|1|10");
    assert_eq!(commit(&store, &first).await, Summary { counted: 0, duplicates: 10, versions_missed: 0 });
    assert_eq!(document(&db, "d"), "10|55|5|1|10");
    // A later batch overlapping the first: only the new versions count.
    let second = batch(edits("d", 8..=12), 0, 15);
    assert_eq!(commit(&store, &second).await, Summary { counted: 2, duplicates: 3, versions_missed: 0 });
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
