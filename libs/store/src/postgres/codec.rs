//! What crosses between Rust values and Postgres rows: number conversions, decoding of stored
//! values, and the mapping of driver and pool errors to [`StoreError`].
//!
//! The value encodings and the conflict messages are the embedded store's, from one home
//! ([`crate::codec`], [`crate::commit_rules`]); this module adds reading them from Postgres rows.

use tandem_protocol::records::CommittedEvent;
use tandem_protocol::DocId;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use crate::{Snapshot, StoreError};

/// A column of `row`; a value of another type or a NULL where none belongs is `Corrupt`, since
/// every statement of the store names its columns and their types.
pub(super) fn column<'a, T: FromSql<'a>>(row: &'a Row, index: usize, what: &str) -> Result<T, StoreError> {
    row.try_get(index).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(super) use crate::codec::{
    clamp_to_sql, seq_from_sql, seq_to_sql, stored_client, stored_code, stored_u64, version_to_sql,
};
pub(super) use crate::commit_rules::{seq_conflict, version_conflict};

/// An event row of `doc`: `version, client, seq, op, author`.
pub(super) fn decode_event(doc: &DocId, row: &Row) -> Result<CommittedEvent, StoreError> {
    crate::codec::decode_event(
        doc,
        column(row, 0, "event version")?,
        column(row, 1, "event client")?,
        column(row, 2, "event seq")?,
        column(row, 3, "event op")?,
        column(row, 4, "event author")?,
    )
}

/// A snapshot row of `doc`: `version, text, clients::text`. The text is read as bytes (`bytea`
/// keeps NUL characters, which `text` cannot hold).
pub(super) fn decode_snapshot(doc: &DocId, row: &Row) -> Result<Snapshot, StoreError> {
    let version: i64 = column(row, 0, "snapshot version")?;
    let text: Vec<u8> = column(row, 1, "snapshot text")?;
    let text = String::from_utf8(text)
        .map_err(|e| StoreError::Corrupt(format!("text of snapshot {version} of document {doc}: {e}")))?;
    crate::codec::decode_snapshot(doc, version, text, column(row, 2, "snapshot clients")?)
}

/// Maps a driver error that the caller did not handle itself, with `doing` (a verb phrase) saying
/// what failed.
///
/// - Data the database refuses to hold (SQLSTATE class 22) and key or check violations (class 23)
///   are `Conflict`: nothing was written and retrying the same data cannot succeed.
/// - Damaged pages or indexes (XX001, XX002) are `Corrupt`.
/// - Everything else is `Unavailable`: a closed connection, I/O, a server shutting down, a
///   serialization failure or deadlock, a full disk; a missing table (the schema was never
///   migrated) too, with a hint, since the operator can fix it without a new build.
pub(super) fn pg_error(err: tokio_postgres::Error, doing: &str) -> StoreError {
    let Some(db) = err.as_db_error() else {
        // The driver's message is often only the kind ("error connecting to server"): the cause
        // (refused, timed out, reset) is in the source chain.
        let mut message = format!("{doing}: {err}");
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !message.contains(&cause_text) {
                message.push_str(": ");
                message.push_str(&cause_text);
            }
            source = cause.source();
        }
        return StoreError::Unavailable(message);
    };
    let code = db.code();
    let detail = db.detail().map(|d| format!(" ({d})")).unwrap_or_default();
    let message = format!("{doing}: {} [{}]{detail}", db.message(), code.code());
    if code == &SqlState::DATA_CORRUPTED || code == &SqlState::INDEX_CORRUPTED {
        StoreError::Corrupt(message)
    } else if code.code().starts_with("22") || code.code().starts_with("23") {
        StoreError::Conflict(message)
    } else if code == &SqlState::UNDEFINED_TABLE {
        StoreError::Unavailable(format!("{message}; has PostgresStore::migrate run on this database?"))
    } else {
        StoreError::Unavailable(message)
    }
}

/// The name of the unique constraint `err` violates, if it is a unique violation (23505).
pub(super) fn unique_violation(err: &tokio_postgres::Error) -> Option<&str> {
    let db = err.as_db_error()?;
    (db.code() == &SqlState::UNIQUE_VIOLATION).then(|| db.constraint().unwrap_or(""))
}

/// Maps a failure to get a pooled connection: the server cannot be reached, or every connection
/// stayed busy past the wait timeout. Both may pass, so both are `Unavailable`.
pub(super) fn pool_error(err: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    match err {
        PoolError::Backend(e) => pg_error(e, "cannot connect to postgres"),
        PoolError::Timeout(kind) => {
            StoreError::Unavailable(format!("no postgres connection available in time ({kind:?})"))
        }
        other => StoreError::Unavailable(format!("postgres connection pool: {other}")),
    }
}
