//! Opening connections and the schema migrations.
//!
//! The schema version is SQLite's `PRAGMA user_version`: the number of migrations applied. Each
//! migration runs once, in order, in the same transaction as the version bump, so a crash during
//! an upgrade leaves the previous schema intact. A file with a version newer than this build knows
//! is refused rather than misread.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::{SqliteOptions, BUSY_TIMEOUT};
use crate::StoreError;

/// Every migration, in order; the schema version is how many of them a database has applied.
///
/// The tables mirror the Postgres schema: the primary and unique keys are what enforce linear
/// history and exactly-once effect, and the store reports their violations as conflicts. Tables
/// are `STRICT`, so a value of the wrong type can never be stored; the event and rejection tables
/// are `WITHOUT ROWID`, clustered on their key, so reading a document's history is one range scan.
const MIGRATIONS: &[&str] = &[
    // 1: the event log, the remembered rejections, the snapshot cache and partition ownership.
    r#"
    CREATE TABLE events (
        doc     TEXT    NOT NULL,
        version INTEGER NOT NULL,
        client  TEXT    NOT NULL,
        seq     INTEGER NOT NULL,
        op      TEXT    NOT NULL,
        PRIMARY KEY (doc, version),
        UNIQUE (doc, client, seq)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE rejections (
        doc        TEXT    NOT NULL,
        client     TEXT    NOT NULL,
        seq        INTEGER NOT NULL,
        code       TEXT    NOT NULL,
        message    TEXT    NOT NULL,
        at_version INTEGER NOT NULL,
        PRIMARY KEY (doc, client, seq)
    ) STRICT, WITHOUT ROWID;

    CREATE INDEX rejections_by_version ON rejections (doc, at_version);

    CREATE TABLE snapshots (
        doc     TEXT    NOT NULL,
        version INTEGER NOT NULL,
        text    TEXT    NOT NULL,
        clients TEXT    NOT NULL,
        PRIMARY KEY (doc, version)
    ) STRICT;

    CREATE TABLE partitions (
        "partition" INTEGER PRIMARY KEY,
        epoch       INTEGER NOT NULL,
        next_offset INTEGER
    ) STRICT;
    "#,
    // 2: the transactional outbox. Each partition numbers its commits (`last_commit`) and remembers
    // up to which one they were published; each event and rejection records the partition and
    // commit that stored it. Rows from before this migration have neither (NULL) and count as
    // published: they were written by an owner that published them or let gateways repair them.
    r#"
    ALTER TABLE partitions ADD COLUMN last_commit INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE partitions ADD COLUMN published_through INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE events ADD COLUMN "partition" INTEGER;
    ALTER TABLE events ADD COLUMN commit_seq INTEGER;
    ALTER TABLE rejections ADD COLUMN "partition" INTEGER;
    ALTER TABLE rejections ADD COLUMN commit_seq INTEGER;
    CREATE INDEX events_by_commit ON events ("partition", commit_seq);
    CREATE INDEX rejections_by_commit ON rejections ("partition", commit_seq);
    "#,
    // 3: the history (issue 12). Each event records its author and when it was committed (ms since
    // the Unix epoch); rows from before have '' and 0, "unknown". Checkpoints name versions. A
    // deleted document leaves a tombstone under the commit that deleted it, for the outbox; keyed
    // by that commit, not by the document, since a document id may be used again and deleted again,
    // and `ordinal` (the deletion's place in its batch) lets one batch delete a document twice.
    r#"
    ALTER TABLE events ADD COLUMN author TEXT NOT NULL DEFAULT '';
    ALTER TABLE events ADD COLUMN committed_at INTEGER NOT NULL DEFAULT 0;

    CREATE TABLE checkpoints (
        doc        TEXT    NOT NULL,
        name       TEXT    NOT NULL,
        version    INTEGER NOT NULL,
        author     TEXT    NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (doc, name)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE tombstones (
        "partition"  INTEGER NOT NULL,
        commit_seq   INTEGER NOT NULL,
        ordinal      INTEGER NOT NULL,
        doc          TEXT    NOT NULL,
        last_version INTEGER NOT NULL,
        author       TEXT    NOT NULL,
        deleted_at   INTEGER NOT NULL,
        PRIMARY KEY ("partition", commit_seq, ordinal)
    ) STRICT, WITHOUT ROWID;
    "#,
];

/// The schema version this build writes and reads.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Opens the writer connection: creates the file, switches it to WAL and sets the durability level.
pub(super) fn open_writer(path: &Path, options: SqliteOptions) -> Result<Connection, StoreError> {
    let conn = open(path, OpenFlags::SQLITE_OPEN_CREATE)?;
    // WAL lets readers proceed while the writer commits, and makes a commit one sequential append.
    // The mode is stored in the file, so readers opened afterwards use it too.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "{} cannot use write-ahead logging (journal mode is {mode})",
            path.display()
        )));
    }
    let synchronous = if options.synchronous_full { "FULL" } else { "NORMAL" };
    conn.pragma_update(None, "synchronous", synchronous)?;
    Ok(conn)
}

/// Opens a reader connection. `query_only` makes a bug that writes through it fail loudly instead
/// of competing with the writer for the lock.
pub(super) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = open(path, OpenFlags::empty())?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

fn open(path: &Path, extra: OpenFlags) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | extra;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Room for every statement the store prepares, so none is ever compiled twice.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Applies the migrations the database has not applied yet.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    // IMMEDIATE takes the write lock first, so two processes opening a new folder at once cannot
    // both apply the same migration.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {current}, newer than this build's {SCHEMA_VERSION}; \
             open it with a newer Tandem"
        )));
    }
    let applied = usize::try_from(current)
        .map_err(|_| StoreError::Corrupt(format!("the database has schema version {current}")))?;
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(migration)?;
        tracing::info!(version = index + 1, "event store schema migrated");
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}
