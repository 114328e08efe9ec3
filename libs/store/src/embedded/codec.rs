//! What crosses between Rust values and SQLite rows beyond the shared encodings of
//! [`crate::codec`]: reading the store's row shapes, key violations, and the clock the store
//! stamps rows with.

use std::time::{SystemTime, UNIX_EPOCH};

use tandem_protocol::records::CommittedEvent;
use tandem_protocol::DocId;

use crate::codec::{decode_event, decode_outbox, OutboxFields};
use crate::outbox::OutboxRow;
use crate::StoreError;

/// The outbox columns (see [`OutboxFields`]): commit_seq, kind, doc, version, client, seq, op or
/// code, message, author.
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
    decode_outbox(OutboxFields {
        commit,
        kind,
        doc: &doc,
        version,
        client: &client,
        seq,
        text: &text,
        message,
        author,
    })
}

/// An event row: version, client, seq, op, author, committed_at.
pub(super) type EventColumns = (i64, String, i64, String, String, i64);

pub(super) fn event_columns(row: &rusqlite::Row<'_>) -> rusqlite::Result<EventColumns> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?))
}

/// The event of an [`EventColumns`] row, and when it was committed.
pub(super) fn decode_event_row(
    doc: &DocId,
    (version, client, seq, op, author, committed_at): EventColumns,
) -> Result<(CommittedEvent, i64), StoreError> {
    Ok((decode_event(doc, version, &client, seq, &op, author)?, committed_at))
}

/// Whether `err` is the violation of a primary or unique key.
pub(super) fn is_key_violation(err: &rusqlite::Error) -> bool {
    matches!(err, rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::ConstraintViolation)
}

/// Now, in milliseconds since the Unix epoch, by this process's clock: the time stamped on events,
/// checkpoints and tombstones. (SQLite has no server clock; the Postgres store uses its server's.)
/// A clock before 1970 reads as 0, "unknown".
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
