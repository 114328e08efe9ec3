//! What crosses between Rust values and Postgres rows: number conversions, decoding of stored
//! values, and the mapping of driver and pool errors to [`StoreError`].
//!
//! The rules are the embedded store's: versions, epochs and offsets are checked on the way in and
//! out; `seq` is stored bit-for-bit; anything read back that this code never writes is `Corrupt`.

use std::collections::BTreeMap;

use tandem_ot::Operation;
use tandem_protocol::records::CommittedEvent;
use tandem_protocol::{ClientId, DocId, ErrorCode};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use crate::{ClientRecord, PartitionId, Snapshot, StoreError};

/// A column of `row`; a value of another type or a NULL where none belongs is `Corrupt`, since
/// every statement of the store names its columns and their types.
pub(super) fn column<'a, T: FromSql<'a>>(row: &'a Row, index: usize, what: &str) -> Result<T, StoreError> {
    row.try_get(index).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// A non-negative integer read back; a negative one was never written by this store.
pub(super) fn stored_u64(value: i64, what: impl FnOnce() -> String) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{} is negative: {value}", what())))
}

/// A version to store. Versions count commits, so one past `i64::MAX` never happens; it is refused
/// like any other version the log cannot take, and nothing is written.
pub(super) fn version_to_sql(version: u64, doc: &DocId) -> Result<i64, StoreError> {
    i64::try_from(version).map_err(|_| {
        StoreError::Conflict(format!(
            "version {version} of document {doc} is beyond the largest storable version"
        ))
    })
}

/// A read bound: beyond what a bigint holds means "to the end", as no stored version is that large.
pub(super) fn clamp_to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `seq` stored bit-for-bit: clients choose it, so every `u64` must round-trip.
pub(super) fn seq_to_sql(seq: u64) -> i64 {
    seq as i64
}

pub(super) fn seq_from_sql(seq: i64) -> u64 {
    seq as u64
}

pub(super) fn seq_conflict(doc: &DocId, client: &ClientId, seq: u64, what: &str) -> StoreError {
    StoreError::Conflict(format!("seq {seq} of client {client} on document {doc} {what}"))
}

/// Refuses to mark commits of `partition` published that it does not have yet.
pub(super) fn check_published(
    partition: PartitionId,
    through: u64,
    last_commit: u64,
) -> Result<(), StoreError> {
    if through > last_commit {
        return Err(StoreError::Conflict(format!(
            "commit {through} of partition {partition} cannot be published: its last commit is {last_commit}"
        )));
    }
    Ok(())
}

pub(super) fn version_conflict(doc: &DocId, version: u64) -> StoreError {
    StoreError::Conflict(format!("version {version} of document {doc} already exists"))
}

/// An event row of `doc`: `version, client, seq, op, author`.
pub(super) fn decode_event(doc: &DocId, row: &Row) -> Result<CommittedEvent, StoreError> {
    let version: i64 = column(row, 0, "event version")?;
    let client: &str = column(row, 1, "event client")?;
    let seq: i64 = column(row, 2, "event seq")?;
    let op: &str = column(row, 3, "event op")?;
    let author: String = column(row, 4, "event author")?;
    let op: Operation = serde_json::from_str(op).map_err(|e| {
        StoreError::Corrupt(format!("op of version {version} of document {doc} is not an operation: {e}"))
    })?;
    Ok(CommittedEvent {
        author,
        doc: doc.clone(),
        version: stored_u64(version, || format!("a version of document {doc}"))?,
        client: stored_client(client, doc)?,
        seq: seq_from_sql(seq),
        op,
    })
}

/// A snapshot row of `doc`: `version, text, clients::text`.
pub(super) fn decode_snapshot(doc: &DocId, row: &Row) -> Result<Snapshot, StoreError> {
    let version: i64 = column(row, 0, "snapshot version")?;
    let version = stored_u64(version, || format!("version of a snapshot of document {doc}"))?;
    let text: Vec<u8> = column(row, 1, "snapshot text")?;
    let text = String::from_utf8(text)
        .map_err(|e| StoreError::Corrupt(format!("text of snapshot {version} of document {doc}: {e}")))?;
    let clients: &str = column(row, 2, "snapshot clients")?;
    let clients: BTreeMap<ClientId, ClientRecord> = serde_json::from_str(clients).map_err(|e| {
        StoreError::Corrupt(format!("client records of snapshot {version} of document {doc}: {e}"))
    })?;
    Ok(Snapshot { doc: doc.clone(), version, text, clients })
}

pub(super) fn stored_client(client: &str, doc: &DocId) -> Result<ClientId, StoreError> {
    ClientId::parse(client)
        .map_err(|e| StoreError::Corrupt(format!("client id {client:?} stored for document {doc}: {e}")))
}

pub(super) fn stored_code(code: &str, doc: &DocId) -> Result<ErrorCode, StoreError> {
    ErrorCode::parse(code)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown error code {code:?} stored for document {doc}")))
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
