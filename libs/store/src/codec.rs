//! The value encodings both stores share, so a row written by one means the same to the other
//! and both report the same errors: numbers (databases hold signed 64-bit integers), ops and
//! snapshot client records (JSON text), ids and error codes read back.
//!
//! Versions, epochs, offsets and commit numbers are checked on the way in and out: a negative
//! one read back was never written by a store, so it is [`StoreError::Corrupt`]. `seq` is chosen
//! by clients and may be any `u64`, so it is stored bit-for-bit as an `i64`, which round-trips
//! every value exactly.

use std::collections::BTreeMap;

use tandem_ot::Operation;
use tandem_protocol::records::{CommittedEvent, DocumentDeleted, Rejection, SequencedRecord};
use tandem_protocol::{ClientId, DocId, ErrorCode};

use crate::outbox::OutboxRow;
use crate::{ClientRecord, Snapshot, StoreError};

/// A non-negative integer read back from the database; a negative one was never written by us.
pub(crate) fn stored_u64(value: i64, what: impl FnOnce() -> String) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{} is negative: {value}", what())))
}

/// A version to store. Versions count commits, so one past `i64::MAX` never happens; it is
/// refused like any other version the log cannot take, and nothing is written.
pub(crate) fn version_to_sql(version: u64, doc: &DocId) -> Result<i64, StoreError> {
    i64::try_from(version).map_err(|_| {
        StoreError::Conflict(format!(
            "version {version} of document {doc} is beyond the largest storable version"
        ))
    })
}

/// A read bound: beyond what the database holds means "to the end", as no stored version is that
/// large.
pub(crate) fn clamp_to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `seq` stored bit-for-bit: clients choose it, so every `u64` must round-trip.
pub(crate) fn seq_to_sql(seq: u64) -> i64 {
    seq as i64
}

pub(crate) fn seq_from_sql(seq: i64) -> u64 {
    seq as u64
}

/// An op as it is stored: its JSON text (the wire form, so a database reader can make sense of it).
pub(crate) fn encode_op(op: &Operation) -> String {
    serde_json::to_string(op).expect("an operation always encodes as JSON")
}

/// A snapshot's client records as they are stored: JSON text.
pub(crate) fn encode_clients(clients: &BTreeMap<ClientId, ClientRecord>) -> String {
    serde_json::to_string(clients).expect("client records always encode as JSON")
}

/// An event of `doc` from its stored columns.
pub(crate) fn decode_event(
    doc: &DocId,
    version: i64,
    client: &str,
    seq: i64,
    op: &str,
    author: String,
) -> Result<CommittedEvent, StoreError> {
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

/// A rejection of `doc` from its stored columns.
pub(crate) fn decode_rejection(
    doc: &DocId,
    client: &str,
    seq: i64,
    code: &str,
    message: String,
    at_version: i64,
) -> Result<Rejection, StoreError> {
    Ok(Rejection {
        doc: doc.clone(),
        client: stored_client(client, doc)?,
        seq: seq_from_sql(seq),
        code: stored_code(code, doc)?,
        message,
        at_version: stored_u64(at_version, || format!("version of a rejection on document {doc}"))?,
    })
}

/// The columns of an outbox row, as both stores' outbox queries select them.
pub(crate) struct OutboxFields<'a> {
    pub commit: i64,
    /// 0 for an event, 1 for a rejection, 2 for a tombstone.
    pub kind: i64,
    pub doc: &'a str,
    /// The event's version, the rejection's `at_version`, the tombstone's `last_version`.
    pub version: i64,
    /// '' for a tombstone.
    pub client: &'a str,
    /// 0 for a tombstone.
    pub seq: i64,
    /// The event's op or the rejection's code; '' for a tombstone.
    pub text: &'a str,
    /// NULL but for a rejection.
    pub message: Option<String>,
    /// '' for a rejection.
    pub author: String,
}

pub(crate) fn decode_outbox(row: OutboxFields<'_>) -> Result<OutboxRow, StoreError> {
    let doc = stored_doc(row.doc)?;
    let commit = stored_u64(row.commit, || format!("commit number of a record of document {doc}"))?;
    let record = match (row.kind, row.message) {
        (0, None) => SequencedRecord::Committed(decode_event(
            &doc,
            row.version,
            row.client,
            row.seq,
            row.text,
            row.author,
        )?),
        (1, Some(message)) => SequencedRecord::Rejected(decode_rejection(
            &doc,
            row.client,
            row.seq,
            row.text,
            message,
            row.version,
        )?),
        (2, None) => SequencedRecord::Deleted(DocumentDeleted {
            last_version: stored_u64(row.version, || format!("last version of deleted document {doc}"))?,
            author: row.author,
            doc,
        }),
        (kind, _) => {
            return Err(StoreError::Corrupt(format!("outbox row of kind {kind} for document {doc}")))
        }
    };
    Ok((commit, record))
}

/// A snapshot of `doc` from its stored columns.
pub(crate) fn decode_snapshot(
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

pub(crate) fn stored_doc(doc: &str) -> Result<DocId, StoreError> {
    DocId::parse(doc).map_err(|e| StoreError::Corrupt(format!("document id {doc:?} stored: {e}")))
}

pub(crate) fn stored_client(client: &str, doc: &DocId) -> Result<ClientId, StoreError> {
    ClientId::parse(client)
        .map_err(|e| StoreError::Corrupt(format!("client id {client:?} stored for document {doc}: {e}")))
}

pub(crate) fn stored_code(code: &str, doc: &DocId) -> Result<ErrorCode, StoreError> {
    ErrorCode::parse(code)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown error code {code:?} stored for document {doc}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seq_round_trips_and_large_numbers_are_refused_or_clamped() {
        for seq in [0, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
            assert_eq!(seq_from_sql(seq_to_sql(seq)), seq);
        }
        let doc = DocId::parse("d").unwrap();
        assert_eq!(version_to_sql(7, &doc).unwrap(), 7);
        assert!(matches!(version_to_sql(u64::MAX, &doc), Err(StoreError::Conflict(_))));
        assert_eq!(clamp_to_sql(u64::MAX), i64::MAX);
        assert!(matches!(stored_u64(-1, || "x".into()), Err(StoreError::Corrupt(m)) if m.contains("x")));
    }

    #[test]
    fn stored_values_decode_or_are_corrupt() {
        let doc = DocId::parse("d").unwrap();
        let mut op = Operation::new();
        op.retain(2).insert("é");
        let event = decode_event(&doc, 3, "c", -1, &encode_op(&op), "ann".into()).unwrap();
        assert_eq!((event.version, event.seq, event.op, event.author.as_str()), (3, u64::MAX, op, "ann"));
        assert!(matches!(decode_event(&doc, 3, "c", 1, "[\"x", String::new()), Err(StoreError::Corrupt(_))));
        assert!(matches!(decode_event(&doc, -3, "c", 1, "[]", String::new()), Err(StoreError::Corrupt(_))));
        assert!(matches!(stored_code("no_such_code", &doc), Err(StoreError::Corrupt(_))));
        assert!(matches!(decode_snapshot(&doc, 1, "x".into(), "{not json"), Err(StoreError::Corrupt(_))));
        let clients = BTreeMap::new();
        assert_eq!(decode_snapshot(&doc, 1, "x".into(), &encode_clients(&clients)).unwrap().clients, clients);
    }
}
