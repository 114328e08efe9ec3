//! Opening connections and applying the schema migrations (the schema itself is in `migrations`).
//!
//! The schema version is SQLite's `PRAGMA user_version`: the number of migrations applied. Each
//! migration runs once, in order, in the same transaction as the version bump, so a crash during
//! an upgrade leaves the previous schema intact. A file with a version newer than this build knows
//! is refused rather than misread.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::migrations::MIGRATIONS;
use super::{SqliteOptions, Tuning, BUSY_TIMEOUT};
use crate::StoreError;

/// The schema version this build writes and reads.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Opens the writer connection: creates the file, switches it to WAL and sets the durability level.
pub(super) fn open_writer(
    path: &Path,
    options: SqliteOptions,
    tuning: Tuning,
) -> Result<Connection, StoreError> {
    let conn = open(path, OpenFlags::SQLITE_OPEN_CREATE)?;
    // A negative cache size is in KiB. The writer re-reads the pages its commits touch: keeping
    // them cached saves the reads (and their copies) that a small cache repeats on every commit.
    conn.pragma_update(None, "cache_size", -i64::from(tuning.cache_kib))?;
    // WAL lets readers proceed while the writer commits, and makes a commit one sequential append.
    // The mode is stored in the file, so readers opened afterwards use it too.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "{} cannot use write-ahead logging (journal mode is {mode})",
            path.display()
        )));
    }
    set_synchronous(&conn, options)?;
    if tuning.checkpoint_after.is_some() {
        // The checkpointer thread copies the log back; SQLite's own checkpoint, inside a commit,
        // only when that thread falls far behind.
        conn.pragma_update(None, "wal_autocheckpoint", super::checkpointer::BACKSTOP_PAGES)?;
    }
    Ok(conn)
}

/// Opens the checkpointer thread's connection, syncing the files as the writer's does.
pub(super) fn open_checkpointer(path: &Path, options: SqliteOptions) -> Result<Connection, StoreError> {
    let conn = open(path, OpenFlags::empty())?;
    set_synchronous(&conn, options)?;
    Ok(conn)
}

fn set_synchronous(conn: &Connection, options: SqliteOptions) -> Result<(), StoreError> {
    let synchronous = if options.synchronous_full { "FULL" } else { "NORMAL" };
    conn.pragma_update(None, "synchronous", synchronous)?;
    Ok(())
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
