//! The Postgres store against a real server: the contract suite, and what only a shared database
//! can show (migrations run by several starters, two stores fencing each other, group commit of a
//! large batch, races between partitions, damaged rows).
//!
//! The server is `TANDEM_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/postgres`, as
//! `deploy/postgres.sh` sets it up); every test creates its own database with a random name and
//! drops it when it ends, passed or failed. An unreachable server fails the tests: `make test`
//! starts one first, so a skip would only hide a broken setup.
#![cfg(feature = "postgres")]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tandem_ot::Operation;
use tandem_protocol::records::{CommittedEvent, DocumentDeleted, Rejection};
use tandem_protocol::{ClientId, DocId, ErrorCode};
use tandem_store::postgres::{PostgresConfig, PostgresStore};
use tandem_store::{contract, Checkpoint, CommitBatch, EventStore, Snapshot, StoreError};
use tokio_postgres::NoTls;

const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How many migrations this build has (`migrations/postgres/`).
const MIGRATIONS: usize = 3;

/// A database of its own for one test, dropped when the guard is (also while unwinding a failure).
struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    async fn create() -> Self {
        let admin_url = std::env::var("TANDEM_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_SERVER.to_owned());
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        let name = format!("tandem_test_{:016x}", hasher.finish());
        let admin = admin_client(&admin_url).await.unwrap_or_else(|e| {
            panic!(
                "cannot reach PostgreSQL at {admin_url}: {}\n\
                 start it with deploy/postgres.sh (make test does), or set TANDEM_TEST_POSTGRES to a \
                 server where this user may create databases",
                with_causes(&*e)
            )
        });
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create the test database");
        let url = with_database(&admin_url, &name);
        Self { admin_url, name, url }
    }

    fn config(&self) -> PostgresConfig {
        PostgresConfig::new(&self.url)
    }

    /// A store on the database, migrated.
    async fn store(&self) -> PostgresStore {
        let store = PostgresStore::connect(self.config()).await.expect("connect to the test database");
        store.migrate().await.expect("migrate the test database");
        store
    }

    /// A plain connection to the test database, for what the store does not offer.
    async fn raw(&self) -> tokio_postgres::Client {
        admin_client(&self.url).await.expect("connect to the test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop cannot await, and may run inside the test's runtime: a thread with its own runtime
        // does the work. FORCE ends the connections the test's stores still hold.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let admin = admin_client(&admin_url).await?;
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

async fn admin_client(url: &str) -> Result<tokio_postgres::Client, Box<dyn std::error::Error + Send + Sync>> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("test connection ended: {e}");
        }
    });
    Ok(client)
}

/// An error with its causes, which the driver's own message leaves out ("error connecting to server").
fn with_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// `url` with its database replaced by `name` (URLs only, which is what the variable holds).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

fn doc(name: &str) -> DocId {
    DocId::parse(name).unwrap()
}

fn client(name: &str) -> ClientId {
    ClientId::parse(name).unwrap()
}

/// Versions `versions` of `doc` by `client`, seq = version.
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

#[test]
fn with_database_replaces_only_the_database() {
    assert_eq!(with_database("postgres://u@h:5432/postgres", "t"), "postgres://u@h:5432/t");
    assert_eq!(with_database("postgres://u@h:5432", "t"), "postgres://u@h:5432/t");
    assert_eq!(with_database("postgresql://h/db?sslmode=disable", "t"), "postgresql://h/t?sslmode=disable");
}

#[tokio::test]
async fn contract_suite() {
    let db = TestDatabase::create().await;
    contract::run_all(Arc::new(db.store().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_suite_with_two_connections_on_a_multi_thread_runtime() {
    let db = TestDatabase::create().await;
    let store = PostgresStore::connect(PostgresConfig { pool_size: 2, ..db.config() }).await.unwrap();
    store.migrate().await.unwrap();
    contract::run_all(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_serialised() {
    let db = TestDatabase::create().await;
    let store = PostgresStore::connect(db.config()).await.unwrap();
    // Four starters at once on an empty database: the migration is applied exactly once.
    let mut starters = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let store = store.clone();
        starters.spawn(async move { store.migrate().await.unwrap() });
    }
    let mut applied = 0;
    while let Some(count) = starters.join_next().await {
        applied += count.unwrap();
    }
    assert_eq!(applied, MIGRATIONS, "each migration is applied once");
    assert_eq!(store.migrate().await.unwrap(), 0, "an up-to-date schema is left alone");
    assert_eq!(store.migrate().await.unwrap(), 0);

    let raw = db.raw().await;
    let rows: i64 = raw.query_one("SELECT count(*) FROM schema_migrations", &[]).await.unwrap().get(0);
    assert_eq!(rows, MIGRATIONS as i64);
    // The schema works after repeated migrations.
    let epoch = store.claim_partition(0).await.unwrap().epoch;
    let batch = CommitBatch {
        deletions: Vec::new(),
        partition: 0,
        epoch,
        next_offset: None,
        events: events(&doc("m"), &client("c"), 1..=2),
        rejections: vec![],
        published_through: None,
        expected_commit: None,
    };
    store.commit(&batch).await.unwrap();

    // A database migrated by a newer build is refused rather than misread.
    raw.execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'future')", &[]).await.unwrap();
    let err = store.migrate().await.unwrap_err();
    assert!(matches!(&err, StoreError::Corrupt(m) if m.contains("newer")), "{err}");
}

#[tokio::test]
async fn the_newer_claim_fences_the_older_store() {
    let db = TestDatabase::create().await;
    let (first, second) = (db.store().await, db.store().await);
    let (d, c) = (doc("shared"), client("c1"));

    let older = first.claim_partition(3).await.unwrap().epoch;
    let batch = CommitBatch {
        deletions: Vec::new(),
        partition: 3,
        epoch: older,
        next_offset: Some(5),
        events: events(&d, &c, 1..=2),
        rejections: vec![],
        published_through: None,
        expected_commit: None,
    };
    first.commit(&batch).await.unwrap();
    assert_eq!(second.read_events(&d, 0, 10, 10).await.unwrap(), batch.events);

    let claim = second.claim_partition(3).await.unwrap();
    assert_eq!(claim.next_offset, Some(5), "the new owner resumes where the old one committed");
    let stale = CommitBatch { next_offset: Some(6), events: events(&d, &c, 3..=3), ..batch.clone() };
    match first.commit(&stale).await {
        Err(StoreError::Fenced { partition: 3, epoch, current }) => {
            assert_eq!((epoch, current), (older, claim.epoch))
        }
        other => panic!("the older owner must be fenced, got {other:?}"),
    }
    assert_eq!(second.latest_version(&d).await.unwrap(), 2, "the fenced commit wrote nothing");
    second.commit(&CommitBatch { epoch: claim.epoch, ..stale }).await.unwrap();
    assert_eq!(first.latest_version(&d).await.unwrap(), 3);
    assert_eq!(first.claim_partition(3).await.unwrap().next_offset, Some(6));
}

/// 100 documents of 20 events each.
fn big_batch(round: u64, docs: &[DocId], writer: &ClientId) -> Vec<CommittedEvent> {
    docs.iter().flat_map(|d| events(d, writer, round * 20 + 1..=round * 20 + 20)).collect()
}

#[tokio::test]
async fn a_batch_of_2000_events_over_100_documents_is_one_transaction() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let docs: Vec<DocId> = (0..100).map(|i| doc(&format!("big/{i}"))).collect();
    let writer = client("writer");
    let epoch = store.claim_partition(7).await.unwrap().epoch;
    let batch = |round: u64, offset: i64| CommitBatch {
        deletions: Vec::new(),
        partition: 7,
        epoch,
        next_offset: Some(offset),
        events: big_batch(round, &docs, &writer),
        rejections: vec![],
        published_through: None,
        expected_commit: None,
    };

    let first = batch(0, 1);
    assert_eq!(first.events.len(), 2000);
    store.commit(&first).await.unwrap();
    for d in &docs {
        assert_eq!(store.latest_version(d).await.unwrap(), 20);
    }
    let raw = db.raw().await;
    let row = raw.query_one("SELECT count(*), count(DISTINCT xmin::text) FROM events", &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (2000, 1), "one transaction wrote every row");

    // One taken version anywhere in the next batch: nothing of it is written, not even its offset.
    let mut conflicting = batch(1, 2);
    conflicting.events[1999] = CommittedEvent { version: 20, ..conflicting.events[1999].clone() };
    conflicting.events[1999].seq = 10_000;
    match store.commit(&conflicting).await {
        Err(StoreError::Conflict(m)) => assert!(m.contains("big/99") && m.contains("version 20"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let count: i64 = raw.query_one("SELECT count(*) FROM events", &[]).await.unwrap().get(0);
    assert_eq!(count, 2000, "the conflicting batch wrote nothing");
    let offset: Option<i64> = raw
        .query_one(r#"SELECT next_offset FROM partitions WHERE "partition" = 7"#, &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(offset, Some(1));

    // How long a group commit of 2,000 events takes (run with --nocapture to see it).
    let mut times = Vec::new();
    for round in 1..=10 {
        let next = batch(round, round as i64 + 1);
        let started = Instant::now();
        store.commit(&next).await.unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    eprintln!(
        "commit of 2000 events over 100 documents: min {:?}, median {:?}, max {:?} (10 commits)",
        times[0], times[5], times[9]
    );
    assert_eq!(store.latest_version(&docs[42]).await.unwrap(), 220);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_partitions_racing_on_one_seq_give_it_one_outcome() {
    // Normally a document belongs to one partition; after a repartition two owners may briefly
    // write the same document. Whatever the interleaving, a seq still ends with one outcome.
    let db = TestDatabase::create().await;
    let store = Arc::new(db.store().await);
    let (left, right) =
        (store.claim_partition(1).await.unwrap().epoch, store.claim_partition(2).await.unwrap().epoch);
    let c = client("racer");
    for round in 0..40u64 {
        let d = doc(&format!("race/{round}"));
        let commit = CommitBatch {
            deletions: Vec::new(),
            partition: 1,
            epoch: left,
            next_offset: None,
            events: events(&d, &c, 1..=1),
            rejections: vec![],
            published_through: None,
            expected_commit: None,
        };
        let reject = CommitBatch {
            deletions: Vec::new(),
            partition: 2,
            epoch: right,
            next_offset: None,
            events: vec![],
            rejections: vec![Rejection {
                doc: d.clone(),
                client: c.clone(),
                seq: 1,
                code: ErrorCode::InvalidOp,
                message: "refused".into(),
                at_version: 0,
            }],
            published_through: None,
            expected_commit: None,
        };
        let (a, b) = {
            let (s1, s2) = (Arc::clone(&store), Arc::clone(&store));
            let first = tokio::spawn(async move { s1.commit(&commit).await });
            let second = tokio::spawn(async move { s2.commit(&reject).await });
            (first.await.unwrap(), second.await.unwrap())
        };
        assert!(a.is_ok() != b.is_ok(), "round {round}: exactly one outcome must win, got {a:?} and {b:?}");
        for result in [a, b] {
            if let Err(err) = result {
                assert!(matches!(&err, StoreError::Conflict(m) if m.contains("racer")), "{err}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_part_of_a_batch() {
    let db = TestDatabase::create().await;
    let store = Arc::new(db.store().await);
    const WRITERS: u32 = 3;
    const BATCHES: u64 = 30;
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
    for reader in 0..3u32 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let d = doc(&format!("p{reader}/a"));
            let mut seen = 0;
            while seen < BATCHES * PER_BATCH {
                let latest = store.latest_version(&d).await.unwrap();
                assert!(latest >= seen, "versions went back from {seen} to {latest}");
                let loaded = store.load_document(&d).await.unwrap();
                assert_eq!(loaded.events.len() as u64 % PER_BATCH, 0, "a reader saw a partial batch");
                seen = latest;
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(result) = tasks.join_next().await {
            result.unwrap();
        }
    })
    .await
    .expect("writers and readers finish");
}

#[tokio::test]
async fn damaged_rows_are_reported_as_corrupt() {
    let db = TestDatabase::create().await;
    let store = db.store().await;
    let (d, c) = (doc("damaged"), client("c1"));
    let epoch = store.claim_partition(0).await.unwrap().epoch;
    let rejection = Rejection {
        doc: d.clone(),
        client: c.clone(),
        seq: 9,
        code: ErrorCode::Forbidden,
        message: "read only".into(),
        at_version: 2,
    };
    let batch = CommitBatch {
        deletions: Vec::new(),
        partition: 0,
        epoch,
        next_offset: None,
        events: events(&d, &c, 1..=2),
        rejections: vec![rejection],
        published_through: None,
        expected_commit: None,
    };
    store.commit(&batch).await.unwrap();
    // A snapshot needs its version in the log.
    let snapshotted =
        CommitBatch { rejections: vec![], events: events(&doc("damaged-snapshot"), &c, 1..=1), ..batch };
    store.commit(&snapshotted).await.unwrap();
    let snapshot =
        Snapshot { doc: doc("damaged-snapshot"), version: 1, text: "x".into(), clients: Default::default() };
    store.write_snapshot(&snapshot).await.unwrap();

    let raw = db.raw().await;
    raw.batch_execute(
        "UPDATE events SET op = '[\"unterminated' WHERE doc = 'damaged' AND version = 2; \
         UPDATE rejections SET code = 'no_such_code' WHERE doc = 'damaged'; \
         UPDATE snapshots SET text = '\\xff'::bytea WHERE doc = 'damaged-snapshot';",
    )
    .await
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

/// A database as the build before the outbox migrated it (migration 1 only): an event and a
/// rejection of document `old`, partition 4 at epoch 3 and offset 12.
async fn write_migration_1(raw: &tokio_postgres::Client) {
    raw.batch_execute(include_str!("../migrations/postgres/0001_event_log.sql")).await.unwrap();
    raw.batch_execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, \
                                         applied_at timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO schema_migrations (version, name) VALUES (1, 'event_log'); \
         INSERT INTO partitions (\"partition\", epoch, next_offset) VALUES (4, 3, 12); \
         INSERT INTO events (doc, version, client, seq, op) VALUES ('old', 1, 'c', 1, '[\"a\"]'); \
         INSERT INTO rejections (doc, client, seq, code, message, at_version) \
             VALUES ('old', 'c', 2, 'invalid_op', 'no', 1);",
    )
    .await
    .unwrap();
}

/// A database migrated by the previous build, with data, gains the outbox: its rows count as
/// published, and commit numbers start at 1.
#[tokio::test]
async fn the_outbox_migration_keeps_earlier_rows_published() {
    let db = TestDatabase::create().await;
    write_migration_1(&db.raw().await).await;
    let store = PostgresStore::connect(db.config()).await.unwrap();
    assert_eq!(store.migrate().await.unwrap(), MIGRATIONS - 1);
    let claim = store.claim_partition(4).await.unwrap();
    assert_eq!(
        (claim.epoch, claim.next_offset, claim.last_commit, claim.published_through),
        (4, Some(12), 0, 0)
    );
    assert_eq!(store.unpublished(4, 0, 100).await.unwrap(), [], "earlier rows count as published");
    assert_eq!(store.read_events(&doc("old"), 0, 10, 10).await.unwrap().len(), 1);
    let batch = CommitBatch {
        partition: 4,
        epoch: claim.epoch,
        events: events(&doc("old"), &client("c"), 2..=2),
        ..CommitBatch::default()
    };
    let batch = CommitBatch { events: vec![CommittedEvent { seq: 3, ..batch.events[0].clone() }], ..batch };
    assert_eq!(store.commit(&batch).await.unwrap(), 1);
    let outbox = store.unpublished(4, 0, 100).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].commit, 1);
    assert_eq!(outbox[0].records.len(), 1);
}

/// Events written before authors were recorded read back with none (''), with the commit time
/// the log always kept; a migrated database deletes and names versions like a new one.
#[tokio::test]
async fn events_from_before_the_history_migration_have_no_author() {
    let db = TestDatabase::create().await;
    write_migration_1(&db.raw().await).await;
    let store = PostgresStore::connect(db.config()).await.unwrap();
    assert_eq!(store.migrate().await.unwrap(), MIGRATIONS - 1);
    let old = doc("old");
    let history = store.read_history(&old, 0, 10, 10).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].event.author, "");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!((now - 300_000..=now + 300_000).contains(&history[0].committed_at_ms), "{history:?} at {now}");

    contract::migrated_document_checkpoints_and_deletes(&store, &old, &client("c"), 4).await;
}

/// A snapshot or checkpoint write racing a deletion of its document never outlives it: the write
/// either commits first and is purged, or sees the deletion and is refused. (Without the
/// deletion lock, a write that checked the version before the deletion committed, and inserted
/// after, would survive it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_checkpoint_writes_racing_a_deletion_do_not_survive_it() {
    const ROUNDS: u64 = 60;
    let db = TestDatabase::create().await;
    let store = Arc::new(db.store().await);
    let epoch = store.claim_partition(5).await.unwrap().epoch;
    let c = client("racer");
    let mut refused = 0;
    for round in 0..ROUNDS {
        let d = doc(&format!("deleted-race/{round}"));
        let history =
            CommitBatch { partition: 5, epoch, events: events(&d, &c, 1..=3), ..CommitBatch::default() };
        store.commit(&history).await.unwrap();
        let deletion = DocumentDeleted { doc: d.clone(), last_version: 3, author: "ann".into() };
        let delete = CommitBatch { partition: 5, epoch, deletions: vec![deletion], ..CommitBatch::default() };
        let snapshot =
            Snapshot { doc: d.clone(), version: 3, text: "aaa".into(), clients: Default::default() };
        let named = Checkpoint {
            doc: d.clone(),
            name: "v3".into(),
            version: 3,
            author: "ann".into(),
            created_at_ms: 0,
        };
        let (s1, s2, s3) = (Arc::clone(&store), Arc::clone(&store), Arc::clone(&store));
        let snapshotting = tokio::spawn(async move { s1.write_snapshot(&snapshot).await });
        let naming = tokio::spawn(async move { s2.create_checkpoint(&named).await });
        let deleting = tokio::spawn(async move { s3.commit(&delete).await });
        deleting.await.unwrap().unwrap();
        for result in [snapshotting.await.unwrap().map(|_| ()), naming.await.unwrap().map(|_| ())] {
            match result {
                Ok(()) => {}
                Err(StoreError::Conflict(m)) if m.contains("latest version") => refused += 1,
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(
            store.snapshot_at_or_before(&d, u64::MAX).await.unwrap(),
            None,
            "round {round}: a snapshot survived"
        );
        assert_eq!(store.list_checkpoints(&d).await.unwrap(), [], "round {round}: a checkpoint survived");
    }
    eprintln!("{refused} of {} writes came after the deletion and were refused", 2 * ROUNDS);
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let config = PostgresConfig {
        timeout: Duration::from_secs(2),
        ..PostgresConfig::new("postgres://postgres@127.0.0.1:1/x")
    };
    let started = Instant::now();
    let err = PostgresStore::connect(config).await.unwrap_err();
    assert!(matches!(&err, StoreError::Unavailable(m) if m.contains("127.0.0.1:1")), "{err}");
    eprintln!("{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "connect gave up in time");
    let bad = PostgresStore::connect(PostgresConfig::new("mysql://nope")).await.unwrap_err();
    assert!(matches!(bad, StoreError::Unavailable(m) if m.contains("url")));
}

#[tokio::test]
async fn an_unmigrated_database_says_so() {
    let db = TestDatabase::create().await;
    let store = PostgresStore::connect(db.config()).await.unwrap();
    let err = store.latest_version(&doc("x")).await.unwrap_err();
    assert!(matches!(&err, StoreError::Unavailable(m) if m.contains("migrate")), "{err}");
}
