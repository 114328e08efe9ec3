//! The embedded store: the contract suite, and what only a store on disk can promise (reopening,
//! several connections on one file, concurrent use, damaged data reported instead of panicking).

use std::sync::Arc;

use tandem_ot::Operation;
use tandem_protocol::records::{CommittedEvent, Outcome, Rejection};
use tandem_protocol::{ClientId, DocId, ErrorCode};
use tandem_store::embedded::{SqliteOptions, SqliteStore, Tuning, DATABASE_FILE};
use tandem_store::{contract, CommitBatch, EventStore, Snapshot, StoreError};

/// Tests trade power-loss durability for speed; one test checks the default below.
const FAST: SqliteOptions = SqliteOptions { synchronous_full: false };

fn doc(name: &str) -> DocId {
    DocId::parse(name).unwrap()
}

fn client(name: &str) -> ClientId {
    ClientId::parse(name).unwrap()
}

fn events(doc: &DocId, client: &ClientId, versions: std::ops::RangeInclusive<u64>) -> Vec<CommittedEvent> {
    versions
        .map(|version| {
            let mut op = Operation::new();
            op.retain(version as usize - 1).insert("a");
            CommittedEvent {
                author: String::new(),
                doc: doc.clone(),
                version,
                client: client.clone(),
                seq: version,
                op,
            }
        })
        .collect()
}

#[tokio::test]
async fn contract_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), FAST).unwrap();
    contract::run_all(Arc::new(store)).await;
}

/// The suite again with the recent tier of keys folded after nearly every commit, so every read
/// and check meets keys in both tiers.
#[tokio::test]
async fn contract_suite_folding_after_every_few_events() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        SqliteStore::open_tuned(dir.path(), FAST, Tuning { fold_after: 3, ..Tuning::default() }).unwrap();
    contract::run_all(Arc::new(store)).await;
}

/// The suite with every fold made of steps of one document each, so commits and reads land while
/// a fold is half done: some documents' keys already in the main tier, others still recent.
#[tokio::test]
async fn contract_suite_folding_one_document_per_step() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = Tuning { fold_after: 3, fold_step: 1, ..Tuning::default() };
    let store = SqliteStore::open_tuned(dir.path(), FAST, tuning).unwrap();
    contract::run_all(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_suite_with_full_synchronous_on_a_multi_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("nested/data"), SqliteOptions::default()).unwrap();
    assert!(dir.path().join("nested/data").join(DATABASE_FILE).is_file());
    contract::run_all(Arc::new(store)).await;
}

#[tokio::test]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let (d, c) = (doc("durable"), client("c1"));
    let history = events(&d, &c, 1..=3);
    let rejection = Rejection {
        doc: d.clone(),
        client: c.clone(),
        seq: 4,
        code: ErrorCode::InvalidOp,
        message: "retain past the end".into(),
        at_version: 3,
    };
    let snapshot = Snapshot { doc: d.clone(), version: 2, text: "aa".into(), clients: Default::default() };
    let epoch = {
        let store = SqliteStore::open(dir.path(), FAST).unwrap();
        let epoch = store.claim_partition(0).await.unwrap().epoch;
        let batch = CommitBatch {
            deletions: Vec::new(),
            partition: 0,
            epoch,
            next_offset: Some(17),
            events: history.clone(),
            rejections: vec![rejection.clone()],
            published_through: None,
            expected_commit: None,
        };
        store.commit(&batch).await.unwrap();
        store.write_snapshot(&snapshot).await.unwrap();
        epoch
    };

    let store = SqliteStore::open(dir.path(), FAST).unwrap();
    assert_eq!(store.latest_version(&d).await.unwrap(), 3);
    assert_eq!(store.read_events(&d, 0, u64::MAX, 100).await.unwrap(), history);
    let loaded = store.load_document(&d).await.unwrap();
    assert_eq!(loaded.snapshot, Some(snapshot));
    assert_eq!(loaded.events, history[2..]);
    assert_eq!(loaded.rejections, [rejection]);
    assert_eq!(
        store.find_outcome(&d, &c, 4).await.unwrap(),
        Some(Outcome::Rejected { code: ErrorCode::InvalidOp, message: "retain past the end".into() })
    );
    let claim = store.claim_partition(0).await.unwrap();
    assert_eq!(claim.epoch, epoch + 1, "epochs continue after a restart");
    assert_eq!(claim.next_offset, Some(17));
}

#[tokio::test]
async fn two_stores_on_one_folder_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let first = SqliteStore::open(dir.path(), FAST).unwrap();
    let second = SqliteStore::open(dir.path(), FAST).unwrap();
    let (d, c) = (doc("shared"), client("c1"));

    let epoch = first.claim_partition(3).await.unwrap().epoch;
    let batch = CommitBatch {
        deletions: Vec::new(),
        partition: 3,
        epoch,
        next_offset: None,
        events: events(&d, &c, 1..=2),
        rejections: vec![],
        published_through: None,
        expected_commit: None,
    };
    first.commit(&batch).await.unwrap();
    assert_eq!(second.latest_version(&d).await.unwrap(), 2);
    assert_eq!(second.read_events(&d, 0, 10, 10).await.unwrap(), batch.events);

    // The second store claims the partition: the first is fenced although it holds its own
    // connection to the file.
    let newer = second.claim_partition(3).await.unwrap().epoch;
    let next = CommitBatch { events: events(&d, &c, 3..=3), ..batch.clone() };
    assert!(matches!(first.commit(&next).await, Err(StoreError::Fenced { current, .. }) if current == newer));

    // A plain SQLite connection (another process, a backup tool) reads the same rows.
    let raw = rusqlite::Connection::open(first.path()).unwrap();
    let count: i64 =
        raw.query_row("SELECT COUNT(*) FROM events WHERE doc = 'shared'", [], |r| r.get(0)).unwrap();
    assert_eq!(count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_and_readers_do_not_fail() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path(), FAST).unwrap());
    const WRITERS: u32 = 6;
    const BATCHES: u64 = 40;
    const PER_BATCH: u64 = 5;

    let mut tasks = tokio::task::JoinSet::new();
    for partition in 0..WRITERS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let epoch = store.claim_partition(partition).await.unwrap().epoch;
            let (a, b, c) = (doc(&format!("p{partition}/a")), doc(&format!("p{partition}/b")), client("w"));
            for i in 0..BATCHES {
                let versions = i * PER_BATCH + 1..=(i + 1) * PER_BATCH;
                let mut batch_events = events(&a, &c, versions.clone());
                batch_events.extend(events(&b, &c, versions));
                let batch = CommitBatch {
                    deletions: Vec::new(),
                    partition,
                    epoch,
                    next_offset: Some(i as i64 + 1),
                    events: batch_events,
                    rejections: vec![],
                    published_through: None,
                    expected_commit: None,
                };
                store.commit(&batch).await.unwrap();
            }
        });
    }
    for reader in 0..4u32 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let d = doc(&format!("p{}/a", reader % WRITERS));
            let mut seen = 0;
            while seen < BATCHES * PER_BATCH {
                let latest = store.latest_version(&d).await.unwrap();
                assert!(latest >= seen, "versions went back from {seen} to {latest}");
                let read = store.read_events(&d, 0, latest, usize::MAX).await.unwrap();
                assert_eq!(read.len() as u64, latest, "a reader saw a gap or a partial batch");
                let loaded = store.load_document(&d).await.unwrap();
                assert!(loaded.events.len() as u64 >= latest);
                assert_eq!(loaded.events.len() as u64 % PER_BATCH, 0, "a reader saw a partial batch");
                seen = latest;
                tokio::task::yield_now().await;
            }
        });
    }
    // A failed writer would leave readers waiting for versions that never come: bound the wait.
    tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while let Some(result) = tasks.join_next().await {
            result.unwrap();
        }
    })
    .await
    .expect("writers and readers finish");
    for partition in 0..WRITERS {
        let d = doc(&format!("p{partition}/b"));
        assert_eq!(store.latest_version(&d).await.unwrap(), BATCHES * PER_BATCH);
        assert_eq!(store.claim_partition(partition).await.unwrap().next_offset, Some(BATCHES as i64));
    }
}

#[tokio::test]
async fn damaged_rows_are_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), FAST).unwrap();
    let (d, c) = (doc("damaged"), client("c1"));
    let epoch = store.claim_partition(0).await.unwrap().epoch;
    let batch = CommitBatch {
        deletions: Vec::new(),
        partition: 0,
        epoch,
        next_offset: None,
        events: events(&d, &c, 1..=2),
        rejections: vec![],
        published_through: None,
        expected_commit: None,
    };
    store.commit(&batch).await.unwrap();
    let rejection = Rejection {
        doc: d.clone(),
        client: c.clone(),
        seq: 9,
        code: ErrorCode::Forbidden,
        message: "read only".into(),
        at_version: 2,
    };
    store.commit(&CommitBatch { events: vec![], rejections: vec![rejection], ..batch }).await.unwrap();

    let raw = rusqlite::Connection::open(store.path()).unwrap();
    let damaged = "(SELECT id FROM doc_ids WHERE name = 'damaged')";
    raw.execute(
        &format!("UPDATE event_log SET op = '[\"unterminated' WHERE doc = {damaged} AND version = 2"),
        [],
    )
    .unwrap();
    raw.execute(&format!("UPDATE rejection_log SET code = 'no_such_code' WHERE doc = {damaged}"), [])
        .unwrap();
    raw.execute(
        "INSERT INTO snapshots (doc, version, text, clients) VALUES ('damaged-snapshot', 1, 'x', '{not json')",
        [],
    )
    .unwrap();

    assert!(
        matches!(store.read_events(&d, 0, 10, 10).await, Err(StoreError::Corrupt(m)) if m.contains("damaged"))
    );
    assert_eq!(store.read_events(&d, 0, 1, 10).await.unwrap().len(), 1, "undamaged rows still read");
    assert!(
        matches!(store.find_outcome(&d, &c, 9).await, Err(StoreError::Corrupt(m)) if m.contains("no_such_code"))
    );
    assert!(matches!(store.load_document(&doc("damaged-snapshot")).await, Err(StoreError::Corrupt(_))));
    assert!(matches!(store.unpublished(0, 0, 100).await, Err(StoreError::Corrupt(_))));
}

/// A data folder as the build before the outbox wrote it (schema version 1): an event and a
/// rejection of document `old`, partition 4 at epoch 3 and offset 12.
fn write_schema_version_1(dir: &std::path::Path) {
    let raw = rusqlite::Connection::open(dir.join(DATABASE_FILE)).unwrap();
    raw.execute_batch(
        r#"
        CREATE TABLE events (doc TEXT NOT NULL, version INTEGER NOT NULL, client TEXT NOT NULL,
            seq INTEGER NOT NULL, op TEXT NOT NULL, PRIMARY KEY (doc, version), UNIQUE (doc, client, seq)
        ) STRICT, WITHOUT ROWID;
        CREATE TABLE rejections (doc TEXT NOT NULL, client TEXT NOT NULL, seq INTEGER NOT NULL,
            code TEXT NOT NULL, message TEXT NOT NULL, at_version INTEGER NOT NULL,
            PRIMARY KEY (doc, client, seq)
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX rejections_by_version ON rejections (doc, at_version);
        CREATE TABLE snapshots (doc TEXT NOT NULL, version INTEGER NOT NULL, text TEXT NOT NULL,
            clients TEXT NOT NULL, PRIMARY KEY (doc, version)) STRICT;
        CREATE TABLE partitions ("partition" INTEGER PRIMARY KEY, epoch INTEGER NOT NULL,
            next_offset INTEGER) STRICT;
        INSERT INTO partitions VALUES (4, 3, 12);
        INSERT INTO events VALUES ('old', 1, 'c', 1, '["a"]');
        INSERT INTO rejections VALUES ('old', 'c', 2, 'invalid_op', 'no', 1);
        PRAGMA user_version = 1;
        "#,
    )
    .unwrap();
}

/// A data folder written before the outbox existed (schema version 1), with data, gains it on
/// opening: its rows count as published, and commit numbers start at 1.
#[tokio::test]
async fn the_outbox_migration_keeps_earlier_rows_published() {
    let dir = tempfile::tempdir().unwrap();
    write_schema_version_1(dir.path());
    let store = SqliteStore::open(dir.path(), FAST).unwrap();
    let claim = store.claim_partition(4).await.unwrap();
    assert_eq!(
        (claim.epoch, claim.next_offset, claim.last_commit, claim.published_through),
        (4, Some(12), 0, 0)
    );
    assert_eq!(store.unpublished(4, 0, 100).await.unwrap(), [], "earlier rows count as published");
    assert_eq!(store.read_events(&doc("old"), 0, 10, 10).await.unwrap().len(), 1);
    let mut next = events(&doc("old"), &client("c"), 2..=2);
    next[0].seq = 3;
    let batch = CommitBatch { partition: 4, epoch: claim.epoch, events: next, ..CommitBatch::default() };
    assert_eq!(store.commit(&batch).await.unwrap(), 1);
    let outbox = store.unpublished(4, 0, 100).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!((outbox[0].commit, outbox[0].records.len()), (1, 1));
}

/// Events written before authors and commit times were recorded read back with neither ('' and
/// 0, "unknown"), and a migrated folder deletes and names versions like a new one.
#[tokio::test]
async fn events_from_before_the_history_migration_have_no_author_or_time() {
    let dir = tempfile::tempdir().unwrap();
    write_schema_version_1(dir.path());
    let store = SqliteStore::open(dir.path(), FAST).unwrap();
    let old = doc("old");
    let history = store.read_history(&old, 0, 10, 10).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!((history[0].event.author.as_str(), history[0].committed_at_ms), ("", 0));
    assert_eq!(store.read_events(&old, 0, 10, 10).await.unwrap()[0].author, "");

    contract::migrated_document_checkpoints_and_deletes(&store, &old, &client("c"), 4).await;
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path(), FAST).unwrap());
    let raw = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    let version: i64 = raw.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert!(version >= 1, "migrations set the schema version");
    raw.pragma_update(None, "user_version", version + 1).unwrap();
    drop(raw);
    // Reopening an up-to-date file is fine; a newer one is not misread.
    let err = SqliteStore::open(dir.path(), FAST).unwrap_err();
    assert!(matches!(&err, StoreError::Corrupt(m) if m.contains("newer")), "{err}");
}

#[test]
fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DATABASE_FILE), vec![0x5a; 8192]).unwrap();
    assert!(SqliteStore::open(dir.path(), FAST).is_err());
}

/// The checkpointer thread copies committed pages into the database file while the store is
/// open, so no commit has to (with SQLite's own checkpoint the file only changes once the log
/// passes 1,000 pages, far more than this commit writes).
#[tokio::test]
async fn the_checkpointer_copies_the_log_into_the_database_file_while_the_store_is_open() {
    let dir = tempfile::tempdir().unwrap();
    for checkpoint_after in [None, Some(1)] {
        let folder = dir.path().join(format!("{checkpoint_after:?}"));
        let tuning = Tuning { checkpoint_after, ..Tuning::default() };
        let store = SqliteStore::open_tuned(&folder, FAST, tuning).unwrap();
        let file = folder.join(DATABASE_FILE);
        let before = std::fs::metadata(&file).unwrap().len();
        let epoch = store.claim_partition(0).await.unwrap().epoch;
        let c = client("c1");
        let events: Vec<_> = (0..200).flat_map(|d| events(&doc(&format!("doc-{d}")), &c, 1..=1)).collect();
        let batch = CommitBatch {
            deletions: Vec::new(),
            partition: 0,
            epoch,
            next_offset: None,
            events,
            rejections: Vec::new(),
            published_through: None,
            expected_commit: None,
        };
        store.commit(&batch).await.unwrap();
        let grown = || std::fs::metadata(&file).unwrap().len() > before;
        // Without the checkpointer nothing may change; with it, the change may take a moment.
        let wait = if checkpoint_after.is_some() { 5_000 } else { 300 };
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(wait);
        while !grown() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        match checkpoint_after {
            None => assert!(!grown(), "without the checkpointer the pages stay in the log"),
            Some(_) => {
                assert!(grown(), "the checkpointer copied no page into {} ({before} bytes)", file.display())
            }
        }
    }
}
