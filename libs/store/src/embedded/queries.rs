//! The store's operations as blocking functions on a connection, one transaction each.
//!
//! Every statement is prepared once per connection (`prepare_cached`), and a batch inserts all its
//! rows through the same prepared statements inside one transaction, so a large group commit costs
//! one fsync and no SQL compilation.

use std::collections::BTreeMap;

use rusqlite::{ffi, params, Connection, OptionalExtension, TransactionBehavior};
use tandem_ot::Operation;
use tandem_protocol::records::{CommittedEvent, Outcome, Rejection};
use tandem_protocol::{ClientId, DocId, ErrorCode};

use crate::{ClientRecord, CommitBatch, PartitionClaim, PartitionId, Snapshot, StoreError, StoredDocument};

const INSERT_EVENT: &str = "INSERT INTO events (doc, version, client, seq, op) VALUES (?1, ?2, ?3, ?4, ?5)";
const INSERT_REJECTION: &str = "INSERT INTO rejections (doc, client, seq, code, message, at_version) \
                                VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const EVENT_VERSION_OF_SEQ: &str = "SELECT version FROM events WHERE doc = ?1 AND client = ?2 AND seq = ?3";
const REJECTION_OF_SEQ: &str =
    "SELECT code, message FROM rejections WHERE doc = ?1 AND client = ?2 AND seq = ?3";
const PARTITION_EPOCH: &str = r#"SELECT epoch FROM partitions WHERE "partition" = ?1"#;
const SELECT_EVENTS: &str = "SELECT version, client, seq, op FROM events \
                             WHERE doc = ?1 AND version > ?2 AND version <= ?3 ORDER BY version LIMIT ?4";

/// Bumps the partition's epoch (creating the row at epoch 1) and returns it with the stored offset.
pub(super) fn claim_partition(
    conn: &mut Connection,
    partition: PartitionId,
) -> Result<PartitionClaim, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (epoch, next_offset): (i64, Option<i64>) = tx
        .prepare_cached(
            r#"INSERT INTO partitions ("partition", epoch, next_offset) VALUES (?1, 1, NULL)
               ON CONFLICT ("partition") DO UPDATE SET epoch = epoch + 1
               RETURNING epoch, next_offset"#,
        )?
        .query_row([partition], |row| Ok((row.get(0)?, row.get(1)?)))?;
    tx.commit()?;
    let epoch = stored_u64(epoch, || format!("epoch of partition {partition}"))?;
    tracing::info!(partition, epoch, "partition claimed");
    Ok(PartitionClaim { epoch, next_offset })
}

/// Writes a batch in one `IMMEDIATE` transaction: the epoch is read under the write lock, so no
/// claim can slip in between the check and the writes. Any error returns before `commit`, and
/// dropping the transaction rolls everything back.
///
/// Epoch rule: the batch's epoch must equal the partition's stored epoch, and epoch 0 is never
/// valid, so a partition must be claimed before anything is committed to it. Accepting epoch 0 on
/// a never-claimed partition would let two owners that both skipped the claim write unfenced.
pub(super) fn commit(conn: &mut Connection, batch: &CommitBatch) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: u64 = match tx
        .prepare_cached(PARTITION_EPOCH)?
        .query_row([batch.partition], |row| row.get::<_, i64>(0))
        .optional()?
    {
        Some(epoch) => stored_u64(epoch, || format!("epoch of partition {}", batch.partition))?,
        None => 0,
    };
    if batch.epoch == 0 || batch.epoch != current {
        return Err(StoreError::Fenced { partition: batch.partition, epoch: batch.epoch, current });
    }

    {
        let mut insert = tx.prepare_cached(INSERT_EVENT)?;
        let mut rejected = tx.prepare_cached(REJECTION_OF_SEQ)?;
        for e in &batch.events {
            let seq = seq_to_sql(e.seq);
            // A seq has one outcome: it cannot be committed after it was refused.
            if rejected.exists(params![e.doc.as_str(), e.client.as_str(), seq])? {
                return Err(seq_conflict(&e.doc, &e.client, e.seq, "was already rejected"));
            }
            let op = serde_json::to_string(&e.op).expect("an operation always encodes as JSON");
            let version = version_to_sql(e.version, &e.doc)?;
            insert.execute(params![e.doc.as_str(), version, e.client.as_str(), seq, op]).map_err(|err| {
                match constraint(&err) {
                    Some(ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => StoreError::Conflict(format!(
                        "version {} of document {} already exists",
                        e.version, e.doc
                    )),
                    Some(_) => seq_conflict(&e.doc, &e.client, e.seq, "already has an outcome"),
                    None => StoreError::from(err),
                }
            })?;
        }
    }
    {
        let mut insert = tx.prepare_cached(INSERT_REJECTION)?;
        let mut committed = tx.prepare_cached(EVENT_VERSION_OF_SEQ)?;
        for r in &batch.rejections {
            let seq = seq_to_sql(r.seq);
            if committed.exists(params![r.doc.as_str(), r.client.as_str(), seq])? {
                return Err(seq_conflict(&r.doc, &r.client, r.seq, "was already committed"));
            }
            let at_version = version_to_sql(r.at_version, &r.doc)?;
            let row = params![r.doc.as_str(), r.client.as_str(), seq, r.code.as_str(), r.message, at_version];
            insert.execute(row).map_err(|err| match constraint(&err) {
                Some(_) => seq_conflict(&r.doc, &r.client, r.seq, "already has an outcome"),
                None => StoreError::from(err),
            })?;
        }
    }
    if let Some(offset) = batch.next_offset {
        tx.prepare_cached(r#"UPDATE partitions SET next_offset = ?2 WHERE "partition" = ?1"#)?
            .execute(params![batch.partition, offset])?;
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn latest_version(conn: &Connection, doc: &DocId) -> Result<u64, StoreError> {
    let latest: Option<i64> = conn
        .prepare_cached("SELECT MAX(version) FROM events WHERE doc = ?1")?
        .query_row([doc.as_str()], |row| row.get(0))?;
    latest.map_or(Ok(0), |v| stored_u64(v, || format!("latest version of document {doc}")))
}

pub(super) fn read_events(
    conn: &Connection,
    doc: &DocId,
    after: u64,
    up_to: u64,
    limit: usize,
) -> Result<Vec<CommittedEvent>, StoreError> {
    if limit == 0 || up_to <= after {
        return Ok(Vec::new());
    }
    // Bounds beyond what SQLite can hold mean "to the end"; no stored version is that large.
    let (after, up_to) = (clamp_to_sql(after), clamp_to_sql(up_to));
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(SELECT_EVENTS)?;
    let rows = stmt.query_map(params![doc.as_str(), after, up_to, limit], event_columns)?;
    let mut events = Vec::new();
    for row in rows {
        events.push(decode_event(doc, row?)?);
    }
    Ok(events)
}

/// Reads the snapshot, the events and the rejections in one read transaction, so they describe
/// one consistent state even while a commit lands.
pub(super) fn load_document(conn: &mut Connection, doc: &DocId) -> Result<StoredDocument, StoreError> {
    let tx = conn.transaction()?;
    let snapshot = tx
        .prepare_cached(
            "SELECT version, text, clients FROM snapshots WHERE doc = ?1 ORDER BY version DESC LIMIT 1",
        )?
        .query_row([doc.as_str()], |row| Ok((row.get::<_, i64>(0)?, row.get(1)?, row.get::<_, String>(2)?)))
        .optional()?
        .map(|(version, text, clients)| decode_snapshot(doc, version, text, &clients))
        .transpose()?;
    let from = match &snapshot {
        Some(s) => version_to_sql(s.version, doc)?,
        None => 0,
    };

    let mut events = Vec::new();
    {
        let mut stmt = tx.prepare_cached(SELECT_EVENTS)?;
        for row in stmt.query_map(params![doc.as_str(), from, i64::MAX, i64::MAX], event_columns)? {
            events.push(decode_event(doc, row?)?);
        }
    }
    let mut rejections = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT client, seq, code, message, at_version FROM rejections \
             WHERE doc = ?1 AND at_version >= ?2 ORDER BY at_version, client, seq",
        )?;
        let rows = stmt.query_map(params![doc.as_str(), from], |row| {
            Ok((row.get::<_, String>(0)?, row.get(1)?, row.get::<_, String>(2)?, row.get(3)?, row.get(4)?))
        })?;
        for row in rows {
            let (client, seq, code, message, at_version): (String, i64, String, String, i64) = row?;
            rejections.push(Rejection {
                doc: doc.clone(),
                client: stored_client(&client, doc)?,
                seq: seq_from_sql(seq),
                code: stored_code(&code, doc)?,
                message,
                at_version: stored_u64(at_version, || format!("version of a rejection on document {doc}"))?,
            });
        }
    }
    tx.finish()?;
    Ok(StoredDocument { snapshot, events, rejections })
}

/// Stores a snapshot (replacing one of the same version) and keeps only the document's newest two:
/// the newest is the one loaded, the one before it is a fallback for manual recovery.
pub(super) fn write_snapshot(conn: &mut Connection, snapshot: &Snapshot) -> Result<(), StoreError> {
    let version = version_to_sql(snapshot.version, &snapshot.doc)?;
    let clients = serde_json::to_string(&snapshot.clients).expect("client records always encode as JSON");
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.prepare_cached(
        "INSERT INTO snapshots (doc, version, text, clients) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (doc, version) DO UPDATE SET text = excluded.text, clients = excluded.clients",
    )?
    .execute(params![snapshot.doc.as_str(), version, snapshot.text, clients])?;
    tx.prepare_cached(
        "DELETE FROM snapshots WHERE doc = ?1 AND version < \
         (SELECT version FROM snapshots WHERE doc = ?1 ORDER BY version DESC LIMIT 1 OFFSET 1)",
    )?
    .execute([snapshot.doc.as_str()])?;
    tx.commit()?;
    Ok(())
}

pub(super) fn find_outcome(
    conn: &mut Connection,
    doc: &DocId,
    client: &ClientId,
    seq: u64,
) -> Result<Option<Outcome>, StoreError> {
    let tx = conn.transaction()?;
    let key = params![doc.as_str(), client.as_str(), seq_to_sql(seq)];
    let version: Option<i64> =
        tx.prepare_cached(EVENT_VERSION_OF_SEQ)?.query_row(key, |row| row.get(0)).optional()?;
    let outcome = match version {
        Some(v) => Some(Outcome::Committed {
            version: stored_u64(v, || format!("version of seq {seq} of {client} on document {doc}"))?,
        }),
        None => tx
            .prepare_cached(REJECTION_OF_SEQ)?
            .query_row(key, |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))
            .optional()?
            .map(|(code, message)| {
                Ok::<_, StoreError>(Outcome::Rejected { code: stored_code(&code, doc)?, message })
            })
            .transpose()?,
    };
    tx.finish()?;
    Ok(outcome)
}

type EventColumns = (i64, String, i64, String);

fn event_columns(row: &rusqlite::Row<'_>) -> rusqlite::Result<EventColumns> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

fn decode_event(doc: &DocId, (version, client, seq, op): EventColumns) -> Result<CommittedEvent, StoreError> {
    let op: Operation = serde_json::from_str(&op).map_err(|e| {
        StoreError::Corrupt(format!("op of version {version} of document {doc} is not an operation: {e}"))
    })?;
    Ok(CommittedEvent {
        doc: doc.clone(),
        version: stored_u64(version, || format!("a version of document {doc}"))?,
        client: stored_client(&client, doc)?,
        seq: seq_from_sql(seq),
        op,
    })
}

fn decode_snapshot(doc: &DocId, version: i64, text: String, clients: &str) -> Result<Snapshot, StoreError> {
    let version = stored_u64(version, || format!("version of a snapshot of document {doc}"))?;
    let clients: BTreeMap<ClientId, ClientRecord> = serde_json::from_str(clients).map_err(|e| {
        StoreError::Corrupt(format!("client records of snapshot {version} of document {doc}: {e}"))
    })?;
    Ok(Snapshot { doc: doc.clone(), version, text, clients })
}

fn stored_client(client: &str, doc: &DocId) -> Result<ClientId, StoreError> {
    ClientId::parse(client)
        .map_err(|e| StoreError::Corrupt(format!("client id {client:?} stored for document {doc}: {e}")))
}

fn stored_code(code: &str, doc: &DocId) -> Result<ErrorCode, StoreError> {
    ErrorCode::parse(code)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown error code {code:?} stored for document {doc}")))
}

/// A non-negative integer read back from the database; a negative one was never written by us.
fn stored_u64(value: i64, what: impl FnOnce() -> String) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{} is negative: {value}", what())))
}

/// A version to store. Versions count commits, so one past `i64::MAX` never happens; it is
/// refused like any other version the log cannot take, and nothing is written.
fn version_to_sql(version: u64, doc: &DocId) -> Result<i64, StoreError> {
    i64::try_from(version).map_err(|_| {
        StoreError::Conflict(format!(
            "version {version} of document {doc} is beyond the largest storable version"
        ))
    })
}

fn clamp_to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `seq` stored bit-for-bit: clients choose it, so every `u64` must round-trip.
fn seq_to_sql(seq: u64) -> i64 {
    seq as i64
}

fn seq_from_sql(seq: i64) -> u64 {
    seq as u64
}

fn seq_conflict(doc: &DocId, client: &ClientId, seq: u64, what: &str) -> StoreError {
    StoreError::Conflict(format!("seq {seq} of client {client} on document {doc} {what}"))
}

/// The extended result code of a key violation, if `err` is one.
fn constraint(err: &rusqlite::Error) -> Option<std::os::raw::c_int> {
    match err {
        rusqlite::Error::SqliteFailure(e, _) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
            Some(e.extended_code)
        }
        _ => None,
    }
}
