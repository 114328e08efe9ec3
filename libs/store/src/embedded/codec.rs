//! What crosses between Rust values and SQLite rows: number conversions, the decoding of stored
//! values, and the clock the store stamps rows with.
//!
//! Anything read back that this code never writes (a negative version, an unknown error code, an
//! op that is not JSON) is [`StoreError::Corrupt`].

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use tandem_ot::Operation;
use tandem_protocol::records::{CommittedEvent, DocumentDeleted, Rejection, SequencedRecord};
use tandem_protocol::{ClientId, DocId, ErrorCode};

use crate::outbox::OutboxRow;
use crate::{ClientRecord, Snapshot, StoreError};

/// The outbox columns: commit_seq, kind (0 event, 1 rejection, 2 tombstone), doc, version (the
/// event's, the rejection's `at_version`, the tombstone's `last_version`), client ('' for a
/// tombstone), seq (0 for a tombstone), op or code ('' for a tombstone), message (NULL but for a
/// rejection), author ('' for a rejection).
pub(super) type OutboxColumns = (i64, i64, String, i64, String, i64, String, Option<String>, String);

pub(super) fn outbox_columns(row: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxColumns> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
    ))
}

pub(super) fn decode_outbox_row(
    (commit, kind, doc, version, client, seq, text, message, author): OutboxColumns,
) -> Result<OutboxRow, StoreError> {
    let doc =
        DocId::parse(&doc).map_err(|e| StoreError::Corrupt(format!("document id {doc:?} stored: {e}")))?;
    let commit = stored_u64(commit, || format!("commit number of a record of document {doc}"))?;
    let record = match (kind, message) {
        (0, None) => SequencedRecord::Committed(decode_event(&doc, (version, client, seq, text, author))?),
        (1, Some(message)) => SequencedRecord::Rejected(Rejection {
            client: stored_client(&client, &doc)?,
            seq: seq_from_sql(seq),
            code: stored_code(&text, &doc)?,
            message,
            at_version: stored_u64(version, || format!("version of a rejection on document {doc}"))?,
            doc,
        }),
        (2, None) => SequencedRecord::Deleted(DocumentDeleted {
            last_version: stored_u64(version, || format!("last version of deleted document {doc}"))?,
            author,
            doc,
        }),
        _ => return Err(StoreError::Corrupt(format!("outbox row of kind {kind} for document {doc}"))),
    };
    Ok((commit, record))
}

/// An event row: version, client, seq, op, author.
pub(super) type EventColumns = (i64, String, i64, String, String);

pub(super) fn event_columns(row: &rusqlite::Row<'_>) -> rusqlite::Result<EventColumns> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
}

pub(super) fn decode_event(
    doc: &DocId,
    (version, client, seq, op, author): EventColumns,
) -> Result<CommittedEvent, StoreError> {
    let op: Operation = serde_json::from_str(&op).map_err(|e| {
        StoreError::Corrupt(format!("op of version {version} of document {doc} is not an operation: {e}"))
    })?;
    Ok(CommittedEvent {
        author,
        doc: doc.clone(),
        version: stored_u64(version, || format!("a version of document {doc}"))?,
        client: stored_client(&client, doc)?,
        seq: seq_from_sql(seq),
        op,
    })
}

pub(super) fn decode_snapshot(
    doc: &DocId,
    version: i64,
    text: String,
    clients: &str,
) -> Result<Snapshot, StoreError> {
    let version = stored_u64(version, || format!("version of a snapshot of document {doc}"))?;
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

/// A non-negative integer read back from the database; a negative one was never written by us.
pub(super) fn stored_u64(value: i64, what: impl FnOnce() -> String) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{} is negative: {value}", what())))
}

/// A version to store. Versions count commits, so one past `i64::MAX` never happens; it is
/// refused like any other version the log cannot take, and nothing is written.
pub(super) fn version_to_sql(version: u64, doc: &DocId) -> Result<i64, StoreError> {
    i64::try_from(version).map_err(|_| {
        StoreError::Conflict(format!(
            "version {version} of document {doc} is beyond the largest storable version"
        ))
    })
}

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

/// The extended result code of a key violation, if `err` is one.
pub(super) fn constraint(err: &rusqlite::Error) -> Option<std::os::raw::c_int> {
    match err {
        rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
            Some(e.extended_code)
        }
        _ => None,
    }
}

/// Now, in milliseconds since the Unix epoch, by this process's clock: the time stamped on events,
/// checkpoints and tombstones. (SQLite has no server clock; the Postgres store uses its server's.)
/// A clock before 1970 reads as 0, "unknown".
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
